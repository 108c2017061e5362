//! The CA key seam: sign bytes with the issuing key, wherever it lives.
//!
//! The trait lives here, below everything that signs; its backends are
//! [`software::SoftwareSigner`] (a PKCS#8 file, for the zero-setup development run and tests)
//! and, in the server crate, the PKCS#11 signer (an HSM; SoftHSM in tests).
//! Both produce DER-encoded ECDSA signatures over the SHA-2 hash that matches the curve.

pub mod software;

use const_oid::ObjectIdentifier;
use const_oid::db::rfc5912::{ECDSA_WITH_SHA_256, ECDSA_WITH_SHA_384, SECP_256_R_1, SECP_384_R_1};
use serde::Deserialize;
use x509_cert::{AlgorithmIdentifier, SubjectPublicKeyInfo};

/// Errors from a signing backend.
#[derive(Debug, thiserror::Error)]
pub enum SignerError {
    #[error("PKCS#11: {0}")]
    Pkcs11(String),
    #[error("software key: {0}")]
    Software(String),
    #[error("the signing key was not found: {0}")]
    KeyNotFound(String),
    #[error("signer configuration: {0}")]
    Config(String),
    /// The token, its session or its library is gone (an HSM restart, a token pulled or
    /// re-initialised): recovery reopens it.
    #[error("PKCS#11 token unavailable: {0}")]
    TokenFault(String),
    /// The key found under the configured label is not the certified key: it is never used.
    #[error("{0}")]
    KeyMismatch(String),
    /// The token refused the PIN. Never retried by itself: an HSM locks the user after a few
    /// wrong PINs.
    #[error("{0}")]
    PinRefused(String),
    /// Every PKCS#11 session stayed busy for the whole wait (load, not a fault).
    #[error("no PKCS#11 session became free in time (raise signer.pkcs11.sessions)")]
    SessionsBusy,
    /// The key is known to be down: refused at once, without a round trip to the token.
    #[error("{0}")]
    Unavailable(String),
}

/// The algorithms a CA key may use.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum CaKeyAlgorithm {
    /// ECDSA on P-256 with SHA-256.
    EcdsaP256,
    /// ECDSA on P-384 with SHA-384.
    EcdsaP384,
}

impl CaKeyAlgorithm {
    /// The `AlgorithmIdentifier` of signatures made with this key (no parameters, RFC 5758).
    pub fn signature_algorithm(self) -> AlgorithmIdentifier {
        let oid = match self {
            CaKeyAlgorithm::EcdsaP256 => ECDSA_WITH_SHA_256,
            CaKeyAlgorithm::EcdsaP384 => ECDSA_WITH_SHA_384,
        };
        AlgorithmIdentifier {
            oid,
            parameters: None,
        }
    }

    /// The named curve of the key.
    pub fn curve(self) -> ObjectIdentifier {
        match self {
            CaKeyAlgorithm::EcdsaP256 => SECP_256_R_1,
            CaKeyAlgorithm::EcdsaP384 => SECP_384_R_1,
        }
    }

    /// Size in bytes of one ECDSA scalar (r or s).
    pub fn scalar_len(self) -> usize {
        match self {
            CaKeyAlgorithm::EcdsaP256 => 32,
            CaKeyAlgorithm::EcdsaP384 => 48,
        }
    }

    /// Hashes a message with the hash this algorithm signs with.
    pub fn digest(self, message: &[u8]) -> Vec<u8> {
        use sha2::Digest;
        match self {
            CaKeyAlgorithm::EcdsaP256 => sha2::Sha256::digest(message).to_vec(),
            CaKeyAlgorithm::EcdsaP384 => sha2::Sha384::digest(message).to_vec(),
        }
    }

    /// Converts a raw `r‖s` signature (what PKCS#11 `CKM_ECDSA` returns) to DER.
    pub fn raw_signature_to_der(self, raw: &[u8]) -> Result<Vec<u8>, SignerError> {
        let bad = |e: ecdsa::Error| SignerError::Pkcs11(format!("malformed ECDSA signature: {e}"));
        Ok(match self {
            CaKeyAlgorithm::EcdsaP256 => p256::ecdsa::Signature::from_slice(raw)
                .map_err(bad)?
                .to_der()
                .as_bytes()
                .to_vec(),
            CaKeyAlgorithm::EcdsaP384 => p384::ecdsa::Signature::from_slice(raw)
                .map_err(bad)?
                .to_der()
                .as_bytes()
                .to_vec(),
        })
    }

    /// Builds the `SubjectPublicKeyInfo` of an uncompressed EC point on this curve.
    pub fn spki_from_point(self, point: &[u8]) -> Result<SubjectPublicKeyInfo, SignerError> {
        let valid = match self {
            CaKeyAlgorithm::EcdsaP256 => p256::PublicKey::from_sec1_bytes(point).is_ok(),
            CaKeyAlgorithm::EcdsaP384 => p384::PublicKey::from_sec1_bytes(point).is_ok(),
        };
        if !valid {
            return Err(SignerError::Pkcs11(
                "public key is not a valid point on the configured curve".into(),
            ));
        }
        let params = der::asn1::Any::encode_from(&self.curve())
            .map_err(|e| SignerError::Config(e.to_string()))?;
        Ok(SubjectPublicKeyInfo {
            algorithm: AlgorithmIdentifier {
                oid: const_oid::db::rfc5912::ID_EC_PUBLIC_KEY,
                parameters: Some(params),
            },
            subject_public_key: der::asn1::BitString::from_bytes(point)
                .map_err(|e| SignerError::Config(e.to_string()))?,
        })
    }
}

/// A CA signing key.
///
/// Implementations are cheap to share (`Arc<dyn Signer>`) and safe to call from many threads;
/// `sign` may block briefly (an HSM round trip), so async callers run it on a blocking thread.
pub trait Signer: Send + Sync {
    /// The key's algorithm.
    fn algorithm(&self) -> CaKeyAlgorithm;
    /// The public key, as it appears in certificates.
    fn public_key(&self) -> &SubjectPublicKeyInfo;
    /// Signs `message` (hashing it first) and returns a DER `ECDSA-Sig-Value`.
    fn sign(&self, message: &[u8]) -> Result<Vec<u8>, SignerError>;
    /// A short backend name for logs and metrics: `pkcs11` or `software`.
    fn backend(&self) -> &'static str;
    /// Whether the key worked at its last use, as the backend knows without a round trip.
    fn available(&self) -> bool {
        true
    }
    /// Tries to bring a key that is down back (sessions reopened, login, the key found again
    /// and proved) with one signature, ignoring the backoff requests are held to. The health
    /// monitor calls it while the key is down.
    fn recover(&self) -> Result<(), SignerError> {
        self.sign(b"attestca signer health probe").map(|_| ())
    }
}
