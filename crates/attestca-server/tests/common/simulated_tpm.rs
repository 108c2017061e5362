//! A simulated TPM making TPM2_Certify evidence the way a TPM makes it: TPMT_PUBLIC of a fixed,
//! sensitive-origin P-256 signing key; TPMS_ATTEST (TPM_ST_ATTEST_CERTIFY) over its name with
//! the server's nonce as extraData, signed by an attestation key (AK) whose certificate (EKU
//! tcg-kp-AIKCertificate) is issued by a given AK-CA. Shared by tests/tpm_simulated.rs and
//! benches/attestation_formats.rs (each includes it with `#[path]`).

use attestca::attestation::tpm::TcgAttestCertify;
use attestca::attestation::{ID_AA_ATTESTATION, ID_STMT_TPM_CERTIFY, bundle};
use attestca::issuance::extensions as ext;
use attestca::issuance::software_ca::{SoftwareCa, name, new_key};
use attestca::signer::Signer;
use attestca_sim::device::DeviceKey;
use der::asn1::{Any, ObjectIdentifier, OctetString, SetOfVec};
use der::{Decode, Encode};
use sha2::{Digest, Sha256};
use x509_cert::attr::Attribute;

const TCG_KP_AIK_CERTIFICATE: ObjectIdentifier = ObjectIdentifier::new_unwrap("2.23.133.8.3");

fn tpm2b(data: &[u8]) -> Vec<u8> {
    let mut out = (data.len() as u16).to_be_bytes().to_vec();
    out.extend_from_slice(data);
    out
}

/// TPMT_PUBLIC of an ECC P-256 signing key: fixedTPM | fixedParent | sensitiveDataOrigin |
/// userWithAuth | sign.
fn tpmt_public(key: &DeviceKey) -> Vec<u8> {
    let spki = key.public_key().expect("key");
    let point = spki.subject_public_key.raw_bytes();
    let (x, y) = (&point[1..33], &point[33..65]);
    let attributes: u32 = (1 << 1) | (1 << 4) | (1 << 5) | (1 << 6) | (1 << 18);
    let mut out = Vec::new();
    out.extend_from_slice(&0x0023u16.to_be_bytes()); // TPM_ALG_ECC
    out.extend_from_slice(&0x000bu16.to_be_bytes()); // nameAlg SHA-256
    out.extend_from_slice(&attributes.to_be_bytes());
    out.extend_from_slice(&tpm2b(&[])); // authPolicy
    out.extend_from_slice(&0x0010u16.to_be_bytes()); // symmetric: NULL
    out.extend_from_slice(&0x0010u16.to_be_bytes()); // scheme: NULL
    out.extend_from_slice(&0x0003u16.to_be_bytes()); // curve: NIST P-256
    out.extend_from_slice(&0x0010u16.to_be_bytes()); // kdf: NULL
    out.extend_from_slice(&tpm2b(x));
    out.extend_from_slice(&tpm2b(y));
    out
}

/// TPMS_ATTEST for TPM2_Certify of the object named by `public`.
fn tpms_attest(public: &[u8], nonce: &[u8]) -> Vec<u8> {
    let mut name = 0x000bu16.to_be_bytes().to_vec();
    name.extend_from_slice(&Sha256::digest(public));
    let mut out = Vec::new();
    out.extend_from_slice(&0xff54_4347u32.to_be_bytes()); // TPM_GENERATED_VALUE
    out.extend_from_slice(&0x8017u16.to_be_bytes()); // TPM_ST_ATTEST_CERTIFY
    out.extend_from_slice(&tpm2b(&[0x00, 0x0b, 0xaa, 0xbb])); // qualifiedSigner
    out.extend_from_slice(&tpm2b(nonce)); // extraData
    out.extend_from_slice(&[0u8; 17]); // clockInfo
    out.extend_from_slice(&[0u8; 8]); // firmwareVersion
    out.extend_from_slice(&tpm2b(&name)); // attested.certify.name
    out.extend_from_slice(&tpm2b(&name)); // attested.certify.qualifiedName
    out
}

/// A TPM with one attestation key.
pub struct SimulatedTpm {
    ak: attestca::signer::software::SoftwareSigner,
    ak_certificate: Vec<u8>,
}

impl SimulatedTpm {
    /// A TPM whose AK certificate `ak_ca` issues.
    pub fn new(ak_ca: &SoftwareCa) -> Self {
        let (ak, _) = new_key().expect("AK");
        let ak_certificate = ak_ca
            .issue(
                name("CN=Simulated TPM AK,serialNumber=TPM-0001").expect("name"),
                ak.public_key(),
                86_400,
                vec![
                    ext::basic_constraints(false, None).expect("bc"),
                    ext::extended_key_usage(&[TCG_KP_AIK_CERTIFICATE]).expect("eku"),
                ],
            )
            .expect("AK certificate");
        Self { ak, ak_certificate }
    }

    /// A CSR for `key` carrying TPM2_Certify evidence with `nonce`; `tamper` flips one byte of
    /// TPMS_ATTEST after signing, in its firmwareVersion (the CSR itself stays validly signed,
    /// and the claimed nonce unchanged, so the refusal is the signature's).
    pub fn csr(&self, key: &DeviceKey, cn: &str, nonce: &[u8], tamper: bool) -> Vec<u8> {
        let public = tpmt_public(key);
        let mut attest = tpms_attest(&public, nonce);
        let signature = self.ak.sign(&attest).expect("AK signature");
        if tamper {
            // firmwareVersion: the 8 bytes before the two 36-byte names at the end.
            let at = attest.len() - 76;
            attest[at] ^= 0x01;
        }
        let statement = TcgAttestCertify {
            tpm_s_attest: OctetString::new(attest).expect("attest"),
            signature: OctetString::new(signature).expect("signature"),
            tpm_t_public: Some(OctetString::new(public).expect("public")),
        }
        .to_der()
        .expect("statement");
        let evidence = bundle::encode(
            &[(ID_STMT_TPM_CERTIFY, statement)],
            std::slice::from_ref(&self.ak_certificate),
        )
        .expect("bundle");
        let attribute = Attribute {
            oid: ID_AA_ATTESTATION,
            values: SetOfVec::try_from(vec![Any::from_der(&evidence).expect("any")]).expect("set"),
        };
        key.csr_with_attributes(cn, vec![attribute]).expect("csr")
    }
}
