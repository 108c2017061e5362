//! Device keys and CSRs, as a rig makes them for a board.

use std::str::FromStr;

use der::asn1::SetOfVec;
use der::{Decode, Encode};
use p256::ecdsa::{DerSignature, SigningKey};
use p256::pkcs8::DecodePrivateKey;
use signature::Signer as _;
use x509_cert::AlgorithmIdentifier;
use x509_cert::name::Name;
use x509_cert::request::{CertReq, CertReqInfo, Version};

use attestca_core::asn1::SignedEnvelope;
use attestca_core::signer::CaKeyAlgorithm;

/// A P-256 device key with its PKCS#8 encoding.
pub struct DeviceKey {
    pub pkcs8: Vec<u8>,
    signing: SigningKey,
}

impl DeviceKey {
    /// Generates a new P-256 key.
    pub fn generate() -> anyhow::Result<Self> {
        let pkcs8 = attestca_core::signer::software::generate_pkcs8(CaKeyAlgorithm::EcdsaP256)?;
        Self::from_pkcs8(&pkcs8)
    }

    /// Loads a P-256 PKCS#8 key.
    pub fn from_pkcs8(pkcs8: &[u8]) -> anyhow::Result<Self> {
        let signing = SigningKey::from_pkcs8_der(pkcs8)
            .map_err(|e| anyhow::anyhow!("not a P-256 PKCS#8 key: {e}"))?;
        Ok(Self {
            pkcs8: pkcs8.to_vec(),
            signing,
        })
    }

    /// An ECDSA-with-SHA-256 signature (DER) over `message`, as the device answers a
    /// proof-of-possession challenge.
    pub fn sign(&self, message: &[u8]) -> Vec<u8> {
        let signature: DerSignature = self.signing.sign(message);
        signature.as_bytes().to_vec()
    }

    /// The public key as a SubjectPublicKeyInfo.
    pub fn public_key(&self) -> anyhow::Result<x509_cert::SubjectPublicKeyInfo> {
        Ok(CaKeyAlgorithm::EcdsaP256
            .spki_from_point(self.signing.verifying_key().to_sec1_point(false).as_bytes())?)
    }

    /// A PKCS#10 CSR (DER) for this key with subject `CN=<cn>`, signed ecdsa-with-SHA256.
    pub fn csr(&self, cn: &str) -> anyhow::Result<Vec<u8>> {
        self.csr_with_attributes(cn, Vec::new())
    }

    /// A CSR carrying request attributes (e.g. attestation evidence).
    pub fn csr_with_attributes(
        &self,
        cn: &str,
        attributes: Vec<x509_cert::attr::Attribute>,
    ) -> anyhow::Result<Vec<u8>> {
        let subject = Name::from_str(&format!("CN={}", escape_rdn(cn)))
            .map_err(|e| anyhow::anyhow!("CN {cn:?}: {e}"))?;
        self.csr_for(subject, attributes)
    }

    /// A CSR that keeps a certificate's subject and subjectAltNames (for renewal), without
    /// the hardwareModuleName the CA adds itself.
    pub fn renewal_csr(
        &self,
        certificate: &x509_cert::Certificate,
        mut attributes: Vec<x509_cert::attr::Attribute>,
    ) -> anyhow::Result<Vec<u8>> {
        use x509_cert::ext::pkix::SubjectAltName;
        use x509_cert::ext::pkix::name::{GeneralName, HardwareModuleName};
        let tbs = certificate.tbs_certificate();
        if let Some((_, san)) = tbs.get_extension::<SubjectAltName>()? {
            let names: Vec<GeneralName> = san
                .0
                .into_iter()
                .filter(|n| !matches!(n, GeneralName::OtherName(o) if HardwareModuleName::from_other_name(o).ok().flatten().is_some()))
                .collect();
            if !names.is_empty() {
                attributes.push(alt_names_request(&names)?);
            }
        }
        self.csr_for(tbs.subject().clone(), attributes)
    }

    /// A CSR for this key with any subject and these subjectAltNames (none: no
    /// `extensionRequest`), as given: the tests use it to send names a careful client would
    /// not.
    pub fn csr_with_alt_names(
        &self,
        subject: Name,
        alt_names: &[x509_cert::ext::pkix::name::GeneralName],
    ) -> anyhow::Result<Vec<u8>> {
        let attributes = if alt_names.is_empty() {
            Vec::new()
        } else {
            vec![alt_names_request(alt_names)?]
        };
        self.csr_for(subject, attributes)
    }

    /// A CSR for this key with any subject and request attributes, as given.
    pub fn csr_for(
        &self,
        subject: Name,
        attributes: Vec<x509_cert::attr::Attribute>,
    ) -> anyhow::Result<Vec<u8>> {
        let info = CertReqInfo {
            version: Version::V1,
            subject,
            public_key: self.public_key()?,
            attributes: SetOfVec::try_from(attributes)?,
        };
        let info_der = info.to_der()?;
        let signature: DerSignature = self.signing.sign(&info_der);
        let algorithm: AlgorithmIdentifier = CaKeyAlgorithm::EcdsaP256.signature_algorithm();
        let der = SignedEnvelope::assemble(&info_der, algorithm, signature.as_bytes())?;
        CertReq::from_der(&der)?;
        Ok(der)
    }
}

/// The `extensionRequest` attribute asking for these subjectAltNames.
pub fn alt_names_request(
    names: &[x509_cert::ext::pkix::name::GeneralName],
) -> anyhow::Result<x509_cert::attr::Attribute> {
    let ext = attestca_core::issuance::extensions::subject_alt_name(names, false)?;
    Ok(x509_cert::attr::Attribute::try_from(
        x509_cert::request::ExtensionReq(vec![ext]),
    )?)
}

fn escape_rdn(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    for (i, c) in value.chars().enumerate() {
        if matches!(c, ',' | '+' | '"' | '\\' | '<' | '>' | ';' | '=')
            || (i == 0 && (c == '#' || c == ' '))
        {
            out.push('\\');
        }
        out.push(c);
    }
    out
}
