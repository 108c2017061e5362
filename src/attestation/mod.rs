//! The attestation gate: evidence in the CSR proves that a trusted secure element or TPM
//! generated the key; the gate verifies it against configured vendor roots before anything is
//! signed.
//!
//! The carrier is the CSR attribute id-aa-attestation (draft-ietf-lamps-csr-attestation,
//! [`bundle`]). Each statement type has a [`StatementVerifier`]; every verifier builds a path
//! to a vendor root ([`chain`]) at the time of an injectable [`Clock`], checks that the
//! attested key is the CSR's key, and reports an [`AttestedKey`]: who made it, which device,
//! which nonce. Policy (nonces, manifests, clones, deny-lists) is applied by the enrollment
//! layer on top of that report.

pub mod bundle;
pub mod chain;
pub mod device_cert;
pub mod gate;
pub mod manifest;
pub mod tpm;
pub mod vendors;
pub mod x509_chain;

use std::fmt;
use std::time::SystemTime;

use const_oid::ObjectIdentifier;
use x509_cert::SubjectPublicKeyInfo;

pub use vendors::{Vendor, VendorTrustStore};

/// A certificate from evidence or a vendor trust store, decoded without normalisation.
///
/// x509-cert's default (RFC 5280) profile re-encodes what it decodes — a GeneralizedTime before
/// 2050 becomes a UTCTime — so a signature checked over the re-encoding fails for certificates
/// their issuers encoded otherwise (Microchip's "Crypto Authentication Signer 2A00" is one).
/// The `Raw` profile keeps every field as issued, so its DER is the signed DER.
pub type EvidenceCertificate =
    x509_cert::certificate::CertificateInner<x509_cert::certificate::Raw>;

/// The project's OID arc. `2.25.<UUID>` (X.667) would need no registration, but its 128-bit arc
/// cannot be represented by const-oid/x509-cert (arcs are 32-bit), which would make certificates
/// carrying such extensions undecodable; const-oid also refuses the example arc 2.999. Until
/// attestca has an IANA Private Enterprise Number, its OIDs live under RFC 5612's enterprise
/// number for documentation (32473), sub-arc 7030; they will move then.
pub const ATTESTCA_ARC: &str = "1.3.6.1.4.1.32473.7030";

/// Statement type: an X.509 attestation-certificate chain; the statement is the attestation
/// certificate (DER), the rest of the chain travels in the bundle's `certs`.
pub const ID_STMT_X509_CHAIN: ObjectIdentifier =
    ObjectIdentifier::new_unwrap("1.3.6.1.4.1.32473.7030.1");
/// Statement type: a pre-provisioned vendor device certificate (DER) for the CSR's key.
pub const ID_STMT_DEVICE_CERTIFICATE: ObjectIdentifier =
    ObjectIdentifier::new_unwrap("1.3.6.1.4.1.32473.7030.2");
/// Extension of the simulated secure element's attestation certificates.
pub const ID_EXT_SIMULATED_SE: ObjectIdentifier =
    ObjectIdentifier::new_unwrap("1.3.6.1.4.1.32473.7030.3");
/// hwType of the simulated secure element in hardwareModuleName.
pub const ID_HW_SIMULATED_SE: ObjectIdentifier =
    ObjectIdentifier::new_unwrap("1.3.6.1.4.1.32473.7030.4");
/// Statement type tcg-attest-tpm-certify (TCG).
pub const ID_STMT_TPM_CERTIFY: ObjectIdentifier = ObjectIdentifier::new_unwrap("2.23.133.20.1");
/// The CSR attribute carrying the evidence (id-aa-attestation).
pub const ID_AA_ATTESTATION: ObjectIdentifier =
    ObjectIdentifier::new_unwrap("1.2.840.113549.1.9.16.2.59");

/// The evidence formats attestca verifies.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum AttestationFormat {
    /// Attestation certificate ← per-device attestation key ← vendor CA ← vendor root.
    X509Chain,
    /// A vendor-issued device certificate for the very key in the CSR.
    DeviceCertificate,
    /// TPM 2.0 TPM2_Certify.
    TpmCertify,
}

impl AttestationFormat {
    /// Name used in configuration, events and metrics.
    pub fn name(self) -> &'static str {
        match self {
            AttestationFormat::X509Chain => "x509-chain",
            AttestationFormat::DeviceCertificate => "device-certificate",
            AttestationFormat::TpmCertify => "tpm-certify",
        }
    }
}

/// A hardware identity: hwType and serial, as in hardwareModuleName (RFC 4108).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DeviceIdentity {
    pub hardware_type: ObjectIdentifier,
    /// The serial as the vendor states it (bytes of hwSerialNum).
    pub serial: Vec<u8>,
    /// The serial as an operator reads it (e.g. Microchip `0123F2408EA1FCF201`).
    pub display: String,
}

/// What a verified statement establishes.
#[derive(Clone, Debug)]
pub struct AttestedKey {
    pub format: AttestationFormat,
    /// The vendor (trust-store entry) whose root the evidence chains to.
    pub vendor: String,
    pub device: DeviceIdentity,
    /// The freshness nonce the evidence carries, if the format has one.
    pub nonce: Option<Vec<u8>>,
    /// Whether the key was generated inside the device, where the format says.
    pub generated_on_device: Option<bool>,
    /// Whether the key can leave the device, where the format says.
    pub exportable: Option<bool>,
}

impl AttestedKey {
    /// The identity recorded with certificates and events: `<vendor>:<serial>`.
    pub fn device_key(&self) -> String {
        format!("{}:{}", self.vendor, self.device.display)
    }
}

/// The time evidence is verified at.
pub trait Clock: Send + Sync {
    fn now(&self) -> SystemTime;
}

/// The system clock.
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> SystemTime {
        SystemTime::now()
    }
}

/// A fixed time, for replaying recorded evidence in tests.
pub struct FixedClock(pub SystemTime);

impl Clock for FixedClock {
    fn now(&self) -> SystemTime {
        self.0
    }
}

/// Everything a verifier may look at.
pub struct VerificationContext<'a> {
    /// The CSR's public key: the attested key must equal it.
    pub csr_key: &'a SubjectPublicKeyInfo,
    /// The bundle's certificate pool (unordered, shared by all statements).
    pub pool: &'a [EvidenceCertificate],
    pub vendors: &'a VendorTrustStore,
    /// Verification time.
    pub at: SystemTime,
}

/// Verifies one statement type.
pub trait StatementVerifier: Send + Sync {
    /// The statement type OID this verifier handles.
    fn statement_type(&self) -> ObjectIdentifier;
    /// The format it implements.
    fn format(&self) -> AttestationFormat;
    /// Verifies the statement (its DER `stmt` value, tag included) and says what it attests.
    fn verify(
        &self,
        statement: &[u8],
        context: &VerificationContext<'_>,
    ) -> Result<AttestedKey, AttestationError>;
}

/// Whether a failure is malformed input (400) or evidence that fails trust or policy (403).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FailureKind {
    Malformed,
    Refused,
}

/// An attestation failure with its stable reason code.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AttestationError {
    pub code: &'static str,
    pub kind: FailureKind,
    pub detail: String,
}

impl AttestationError {
    /// Malformed evidence (400).
    pub fn malformed(code: &'static str, detail: impl Into<String>) -> Self {
        Self {
            code,
            kind: FailureKind::Malformed,
            detail: detail.into(),
        }
    }

    /// Evidence that verifies poorly or fails policy (403).
    pub fn refused(code: &'static str, detail: impl Into<String>) -> Self {
        Self {
            code,
            kind: FailureKind::Refused,
            detail: detail.into(),
        }
    }
}

impl fmt::Display for AttestationError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.detail)
    }
}

impl std::error::Error for AttestationError {}

/// Whether two public keys are the same key (DER-equal SubjectPublicKeyInfo).
pub fn same_key(a: &SubjectPublicKeyInfo, b: &SubjectPublicKeyInfo) -> bool {
    use der::Encode;
    match (a.to_der(), b.to_der()) {
        (Ok(x), Ok(y)) => x == y,
        _ => false,
    }
}
