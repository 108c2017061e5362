//! A CA key held in a PKCS#8 file: for the zero-setup development run, never for production.

use std::path::Path;

use aws_lc_rs::rand::SystemRandom;
use aws_lc_rs::signature::{
    ECDSA_P256_SHA256_ASN1_SIGNING, ECDSA_P384_SHA384_ASN1_SIGNING, EcdsaKeyPair,
    EcdsaSigningAlgorithm, KeyPair,
};
use x509_cert::SubjectPublicKeyInfo;

use super::{CaKeyAlgorithm, Signer, SignerError};
use crate::config::SoftwareSignerConfig;

/// A software ECDSA key loaded from a PKCS#8 PEM file (mode 0600).
pub struct SoftwareSigner {
    algorithm: CaKeyAlgorithm,
    key: EcdsaKeyPair,
    spki: SubjectPublicKeyInfo,
    rng: SystemRandom,
}

fn signing_algorithm(algorithm: CaKeyAlgorithm) -> &'static EcdsaSigningAlgorithm {
    match algorithm {
        CaKeyAlgorithm::EcdsaP256 => &ECDSA_P256_SHA256_ASN1_SIGNING,
        CaKeyAlgorithm::EcdsaP384 => &ECDSA_P384_SHA384_ASN1_SIGNING,
    }
}

/// Generates a new PKCS#8 (DER) ECDSA key in software.
pub fn generate_pkcs8(algorithm: CaKeyAlgorithm) -> Result<Vec<u8>, SignerError> {
    let rng = SystemRandom::new();
    let doc = EcdsaKeyPair::generate_pkcs8(signing_algorithm(algorithm), &rng)
        .map_err(|_| SignerError::Software("key generation failed".into()))?;
    Ok(doc.as_ref().to_vec())
}

impl SoftwareSigner {
    /// Loads a key from PKCS#8 DER.
    pub fn from_pkcs8(algorithm: CaKeyAlgorithm, pkcs8: &[u8]) -> Result<Self, SignerError> {
        let key = EcdsaKeyPair::from_pkcs8(signing_algorithm(algorithm), pkcs8).map_err(|e| {
            SignerError::Software(format!(
                "not a PKCS#8 {algorithm:?} key (check signer.algorithm): {e}"
            ))
        })?;
        let spki = algorithm.spki_from_point(key.public_key().as_ref())?;
        Ok(Self {
            algorithm,
            key,
            spki,
            rng: SystemRandom::new(),
        })
    }

    /// Opens the configured key file.
    pub fn open(config: &SoftwareSignerConfig) -> Result<Self, SignerError> {
        check_permissions(&config.key_file)?;
        let der = crate::pem::read_private_key(&config.key_file)
            .map_err(|e| SignerError::KeyNotFound(e.to_string()))?;
        let signer = Self::from_pkcs8(config.algorithm, &der)?;
        tracing::warn!(
            key_file = %config.key_file.display(),
            "the CA key is a software key file: fine for development and tests, NOT for production (use signer.backend = \"pkcs11\")"
        );
        Ok(signer)
    }

    /// Generates a key, writes it to the configured file (mode 0600) and opens it.
    pub fn generate(config: &SoftwareSignerConfig) -> Result<Self, SignerError> {
        if config.key_file.exists() {
            return Err(SignerError::Config(format!(
                "{} already exists; refusing to replace a CA key",
                config.key_file.display()
            )));
        }
        let der = generate_pkcs8(config.algorithm)?;
        crate::pem::create_private_key(&config.key_file, &der)
            .map_err(|e| SignerError::Software(e.to_string()))?;
        Self::from_pkcs8(config.algorithm, &der)
    }
}

/// Refuses a key file that group or others may read (Unix). Elsewhere only its presence is
/// checked: the CA runs on Unix; the software key elsewhere is a development convenience.
fn check_permissions(path: &Path) -> Result<(), SignerError> {
    let meta = std::fs::metadata(path)
        .map_err(|e| SignerError::KeyNotFound(format!("{}: {e}", path.display())))?;
    #[cfg(unix)]
    let shared = std::os::unix::fs::PermissionsExt::mode(&meta.permissions()) & 0o077 != 0;
    #[cfg(not(unix))]
    let shared = {
        let _ = meta;
        false
    };
    if shared {
        return Err(SignerError::Config(format!(
            "{} is readable by group or others; run chmod 600 on it",
            path.display()
        )));
    }
    Ok(())
}

impl Signer for SoftwareSigner {
    fn algorithm(&self) -> CaKeyAlgorithm {
        self.algorithm
    }

    fn public_key(&self) -> &SubjectPublicKeyInfo {
        &self.spki
    }

    fn sign(&self, message: &[u8]) -> Result<Vec<u8>, SignerError> {
        self.key
            .sign(&self.rng, message)
            .map(|sig| sig.as_ref().to_vec())
            .map_err(|_| SignerError::Software("signing failed".into()))
    }

    fn backend(&self) -> &'static str {
        "software"
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signs_with_both_ca_curves_and_the_signature_verifies() {
        for algorithm in [CaKeyAlgorithm::EcdsaP256, CaKeyAlgorithm::EcdsaP384] {
            let pkcs8 = generate_pkcs8(algorithm).expect("generate");
            let signer = SoftwareSigner::from_pkcs8(algorithm, &pkcs8).expect("load");
            let message = b"to be signed";
            let signature = signer.sign(message).expect("sign");
            let oid = algorithm.signature_algorithm().oid;
            assert!(crate::verify::verify(
                signer.public_key(),
                oid,
                message,
                &signature
            ));
            assert!(!crate::verify::verify(
                signer.public_key(),
                oid,
                b"something else",
                &signature
            ));
        }
    }

    #[test]
    fn refuses_a_key_of_the_other_curve() {
        let p384 = generate_pkcs8(CaKeyAlgorithm::EcdsaP384).expect("generate");
        assert!(SoftwareSigner::from_pkcs8(CaKeyAlgorithm::EcdsaP256, &p384).is_err());
    }

    #[test]
    fn refuses_a_key_file_others_can_read() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().expect("temp dir");
        let config = SoftwareSignerConfig {
            key_file: dir.path().join("ca.key"),
            algorithm: CaKeyAlgorithm::EcdsaP256,
        };
        SoftwareSigner::generate(&config).expect("generate");
        assert!(SoftwareSigner::open(&config).is_ok());
        std::fs::set_permissions(&config.key_file, std::fs::Permissions::from_mode(0o644))
            .expect("chmod");
        assert!(matches!(
            SoftwareSigner::open(&config),
            Err(SignerError::Config(_))
        ));
        assert!(
            SoftwareSigner::generate(&config).is_err(),
            "never replaces an existing key"
        );
    }
}
