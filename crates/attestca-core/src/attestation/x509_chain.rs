//! Format 1, X.509 attestation-certificate chains: attestation certificate for the CSR key ←
//! per-device attestation-key certificate ← vendor CA ← vendor root, with a per-vendor reader
//! for what the attestation certificate says about the key.

use super::EvidenceCertificate;
use const_oid::ObjectIdentifier;
use der::asn1::{Int, OctetString, Utf8StringRef};
use der::{Decode, Enumerated, Sequence};

use super::chain::{self, PathOptions};
use super::vendors::{Vendor, VendorReader};
use super::{
    AttestationError, AttestationFormat, AttestedKey, DeviceIdentity, ID_EXT_SIMULATED_SE,
    ID_STMT_X509_CHAIN, StatementVerifier, VerificationContext,
};
use crate::reason::Reason;

/// YubiKey PIV attestation extension: the device serial (INTEGER).
const YUBICO_SERIAL: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.3.6.1.4.1.41482.3.7");
/// subject serialNumber attribute.
const SERIAL_NUMBER: ObjectIdentifier = ObjectIdentifier::new_unwrap("2.5.4.5");

/// How the simulated secure element's key came to be.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Enumerated)]
#[repr(u8)]
pub enum KeyOrigin {
    Generated = 1,
    Imported = 2,
}

/// The simulated secure element's attestation extension.
///
/// ```asn1
/// SimulatedSeKeyAttestation ::= SEQUENCE {
///    version INTEGER, nonce OCTET STRING (SIZE (8..64)), deviceSerial OCTET STRING,
///    keyOrigin ENUMERATED { generated(1), imported(2) }, exportable BOOLEAN,
///    firmware UTF8String OPTIONAL }
/// ```
#[derive(Clone, Debug, Sequence)]
pub struct SimulatedSeKeyAttestation<'a> {
    pub version: Int,
    pub nonce: OctetString,
    pub device_serial: OctetString,
    pub key_origin: KeyOrigin,
    pub exportable: bool,
    #[asn1(optional = "true")]
    pub firmware: Option<Utf8StringRef<'a>>,
}

/// The X.509-chain verifier.
pub struct X509ChainVerifier;

fn extension_value(cert: &EvidenceCertificate, oid: ObjectIdentifier) -> Option<&[u8]> {
    cert.tbs_certificate()
        .extensions()?
        .iter()
        .find(|e| e.extn_id == oid)
        .map(|e| e.extn_value.as_bytes())
}

impl StatementVerifier for X509ChainVerifier {
    fn statement_type(&self) -> ObjectIdentifier {
        ID_STMT_X509_CHAIN
    }

    fn format(&self) -> AttestationFormat {
        AttestationFormat::X509Chain
    }

    fn claimed_nonce(&self, statement: &[u8]) -> Option<Vec<u8>> {
        // Only the simulated secure element's statements carry one; YubiKey PIV's have none.
        let attestation = EvidenceCertificate::from_der(statement).ok()?;
        let value = extension_value(&attestation, ID_EXT_SIMULATED_SE)?;
        let ext = SimulatedSeKeyAttestation::from_der(value).ok()?;
        Some(ext.nonce.as_bytes().to_vec())
    }

    fn verify(
        &self,
        statement: &[u8],
        context: &VerificationContext<'_>,
    ) -> Result<AttestedKey, AttestationError> {
        let attestation = EvidenceCertificate::from_der(statement).map_err(|e| {
            AttestationError::malformed(
                Reason::AttestationMalformed,
                format!("the x509-chain statement is not a certificate: {e}"),
            )
        })?;
        verify_attestation_certificate(&attestation, context)
    }
}

/// Verifies an attestation certificate (and the pool) against the vendors that use format 1.
pub fn verify_attestation_certificate(
    attestation: &EvidenceCertificate,
    context: &VerificationContext<'_>,
) -> Result<AttestedKey, AttestationError> {
    if !super::same_key(
        attestation.tbs_certificate().subject_public_key_info(),
        context.csr_key,
    ) {
        return Err(AttestationError::refused(
            Reason::AttestationKeyMismatch,
            "the attestation certificate is for another key than the CSR's",
        ));
    }
    let mut last = AttestationError::refused(
        Reason::AttestationUntrustedRoot,
        "the attestation chain does not reach a trusted vendor root",
    );
    for vendor in context.vendors.for_format(AttestationFormat::X509Chain) {
        let options = PathOptions {
            tolerate_missing_basic_constraints_above_leaf: vendor.reader
                == VendorReader::YubikeyPiv,
        };
        match chain::build(
            attestation,
            context.pool,
            &vendor.roots,
            context.at,
            options,
            &context.budget,
        ) {
            Ok(path) => return read(vendor, &path.certificates),
            Err(e) => last = e,
        }
    }
    Err(last)
}

fn read(vendor: &Vendor, path: &[EvidenceCertificate]) -> Result<AttestedKey, AttestationError> {
    let attestation = &path[0];
    match vendor.reader {
        VendorReader::SimulatedSe => read_simulated_se(vendor, attestation, path.get(1)),
        VendorReader::YubikeyPiv => read_yubikey(vendor, attestation),
        other => Err(AttestationError::refused(
            Reason::AttestationFormatNotAllowed,
            format!(
                "vendor {} ({other:?}) does not issue x509-chain evidence",
                vendor.name
            ),
        )),
    }
}

fn read_simulated_se(
    vendor: &Vendor,
    attestation: &EvidenceCertificate,
    attestation_key: Option<&EvidenceCertificate>,
) -> Result<AttestedKey, AttestationError> {
    let value = extension_value(attestation, ID_EXT_SIMULATED_SE).ok_or_else(|| {
        AttestationError::malformed(
            Reason::AttestationMalformed,
            "the attestation certificate lacks the SimulatedSeKeyAttestation extension",
        )
    })?;
    let ext = SimulatedSeKeyAttestation::from_der(value).map_err(|e| {
        AttestationError::malformed(
            Reason::AttestationMalformed,
            format!("SimulatedSeKeyAttestation: {e}"),
        )
    })?;
    let nonce = ext.nonce.as_bytes().to_vec();
    if !(8..=64).contains(&nonce.len()) {
        return Err(AttestationError::malformed(
            Reason::AttestationMalformed,
            "the attested nonce must be 8 to 64 bytes",
        ));
    }
    let serial = ext.device_serial.as_bytes().to_vec();
    let display = hex::encode_upper(&serial);
    // The attestation key certificate names the device it lives in; the statement must be
    // about that same device.
    let ak_serial = attestation_key
        .and_then(|ak| {
            ak.tbs_certificate()
                .subject()
                .by_oid::<der::asn1::PrintableStringRef<'_>>(SERIAL_NUMBER)
                .ok()
                .flatten()
        })
        .map(|s| s.as_str().to_ascii_uppercase());
    if ak_serial.as_deref() != Some(display.as_str()) {
        return Err(AttestationError::refused(
            Reason::AttestationDeviceMismatch,
            "the attestation key certificate belongs to another device than the statement names",
        ));
    }
    Ok(AttestedKey {
        format: AttestationFormat::X509Chain,
        vendor: vendor.name.clone(),
        device: DeviceIdentity {
            hardware_type: vendor.hardware_type,
            serial,
            display,
        },
        nonce: Some(nonce),
        generated_on_device: Some(ext.key_origin == KeyOrigin::Generated),
        exportable: Some(ext.exportable),
        tpm: None,
    })
}

fn read_yubikey(
    vendor: &Vendor,
    attestation: &EvidenceCertificate,
) -> Result<AttestedKey, AttestationError> {
    let value = extension_value(attestation, YUBICO_SERIAL).ok_or_else(|| {
        AttestationError::malformed(
            Reason::AttestationMalformed,
            "the YubiKey attestation certificate lacks the serial extension (41482.3.7)",
        )
    })?;
    let serial = der::asn1::Uint::from_der(value).map_err(|e| {
        AttestationError::malformed(Reason::AttestationMalformed, format!("YubiKey serial: {e}"))
    })?;
    let bytes = serial.as_bytes().to_vec();
    // YubiKey serials are 32-bit; the display form is the decimal number, which must name
    // exactly one serial (a longer INTEGER would wrap and display like another device).
    if bytes.len() > 8 {
        return Err(AttestationError::malformed(
            Reason::AttestationMalformed,
            format!("YubiKey serial of {} bytes (at most 8)", bytes.len()),
        ));
    }
    let number = bytes.iter().fold(0u64, |n, b| (n << 8) | u64::from(*b));
    Ok(AttestedKey {
        format: AttestationFormat::X509Chain,
        vendor: vendor.name.clone(),
        device: DeviceIdentity {
            hardware_type: vendor.hardware_type,
            serial: bytes,
            display: number.to_string(),
        },
        // PIV attestation has no nonce; it exists only for keys generated on the YubiKey,
        // which PIV never lets out.
        nonce: None,
        generated_on_device: Some(true),
        exportable: Some(false),
        tpm: None,
    })
}

#[cfg(test)]
mod tests {
    use std::path::PathBuf;
    use std::time::SystemTime;

    use super::*;
    use crate::attestation::VerificationBudget;
    use crate::attestation::vendors::VendorTrustStore;

    /// The shared vectors directory; `None` (skip) outside CI when it is missing.
    fn vectors() -> Option<PathBuf> {
        let dir = std::env::var_os("ATTESTCA_VECTORS_DIR")
            .map(PathBuf::from)
            .unwrap_or_else(|| {
                PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../../shared/vectors")
            });
        if dir.is_dir() {
            return Some(dir);
        }
        if std::env::var_os("CI").is_some()
            || std::env::var_os("ATTESTCA_TEST_REQUIRE_ALL").is_some()
        {
            panic!("test vectors missing at {}", dir.display());
        }
        eprintln!("SKIPPED: no test vectors at {}", dir.display());
        None
    }

    fn load(dir: &std::path::Path, name: &str) -> EvidenceCertificate {
        crate::pem::read_evidence_certificates(&dir.join(name))
            .expect("vector")
            .remove(0)
    }

    fn yubico(root: EvidenceCertificate) -> VendorTrustStore {
        VendorTrustStore::new(vec![Vendor {
            name: "yubico".into(),
            roots: vec![root],
            formats: vec![AttestationFormat::X509Chain],
            reader: VendorReader::YubikeyPiv,
            hardware_type: ObjectIdentifier::new_unwrap("1.3.6.1.4.1.41482.3"),
            denied_serials: Default::default(),
            allow_sha1: false,
        }])
    }

    #[test]
    fn a_real_yubikey_attestation_verifies_and_an_impostor_f9_does_not() {
        let Some(dir) = vectors() else { return };
        let root = load(&dir, "yubico/yubico-piv-root-ca-263751.pem");
        let f9 = load(&dir, "yubico/yubikey-a-f9-device.pem");
        let attestation = load(&dir, "yubico/yubikey-a-9a-attestation.pem");
        let key = attestation
            .tbs_certificate()
            .subject_public_key_info()
            .clone();
        let vendors = yubico(root);
        let pool = vec![f9.clone()];
        let context = VerificationContext {
            csr_key: &key,
            pool: &pool,
            vendors: &vendors,
            at: SystemTime::now(),
            budget: VerificationBudget::per_request(),
        };
        let attested =
            verify_attestation_certificate(&attestation, &context).expect("genuine pair");
        assert_eq!(attested.vendor, "yubico");
        assert!(
            attested.device.display.chars().all(|c| c.is_ascii_digit()),
            "{}",
            attested.device.display
        );
        assert_eq!(attested.nonce, None);

        // An f9 certificate with the same name but another key (made here) does not chain.
        let impostor_ca =
            crate::issuance::software_ca::SoftwareCa::self_signed("CN=Impostor Root", 1)
                .expect("ca");
        let (impostor_key, _) = crate::issuance::software_ca::new_key().expect("key");
        let impostor = impostor_ca
            .issue(
                f9.tbs_certificate().subject().clone(),
                crate::signer::Signer::public_key(&impostor_key),
                86_400,
                vec![],
            )
            .expect("impostor f9");
        let pool = vec![EvidenceCertificate::from_der(&impostor).expect("der")];
        let context = VerificationContext {
            pool: &pool,
            ..context
        };
        let refused = verify_attestation_certificate(&attestation, &context).expect_err("impostor");
        assert_eq!(refused.code, Reason::AttestationUntrustedRoot);

        // The genuine pair against another vendor root fails too.
        let other_root = load(&dir, "microchip/crypto-authentication-root-ca-002.pem");
        let vendors = yubico(other_root);
        let pool = vec![f9];
        let context = VerificationContext {
            pool: &pool,
            vendors: &vendors,
            ..context
        };
        assert_eq!(
            verify_attestation_certificate(&attestation, &context)
                .expect_err("wrong root")
                .code,
            Reason::AttestationUntrustedRoot
        );
    }

    /// The display form is the decimal serial: an INTEGER longer than a YubiKey's would wrap and
    /// name another device, so it is refused rather than folded.
    #[test]
    fn an_overlong_yubikey_serial_is_malformed() {
        use der::Encode;
        let ca =
            crate::issuance::software_ca::SoftwareCa::self_signed("CN=Serials", 1).expect("ca");
        let (key, _) = crate::issuance::software_ca::new_key().expect("key");
        let certificate_with_serial = |serial: &[u8]| {
            let value = der::asn1::Uint::new(serial)
                .expect("uint")
                .to_der()
                .expect("der");
            let der = ca
                .issue(
                    crate::issuance::software_ca::name("CN=Attestation").expect("name"),
                    crate::signer::Signer::public_key(&key),
                    3600,
                    vec![x509_cert::ext::Extension {
                        extn_id: YUBICO_SERIAL,
                        critical: false,
                        extn_value: OctetString::new(value).expect("octets"),
                    }],
                )
                .expect("certificate");
            EvidenceCertificate::from_der(&der).expect("decode")
        };
        let vendor = Vendor {
            name: "yubico".into(),
            roots: vec![],
            formats: vec![AttestationFormat::X509Chain],
            reader: VendorReader::YubikeyPiv,
            hardware_type: ObjectIdentifier::new_unwrap("1.3.6.1.4.1.41482.3"),
            denied_serials: Default::default(),
            allow_sha1: false,
        };
        let attested = read_yubikey(&vendor, &certificate_with_serial(&[0x01, 0x02, 0x03, 0x04]))
            .expect("4 bytes");
        assert_eq!(attested.device.display, "16909060");
        let mut long = vec![0x01; 17];
        long[16] = 0x04;
        assert_eq!(
            read_yubikey(&vendor, &certificate_with_serial(&long))
                .expect_err("17 bytes")
                .code,
            Reason::AttestationMalformed
        );
    }
}
