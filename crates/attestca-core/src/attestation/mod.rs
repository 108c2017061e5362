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
pub mod examination;
pub mod gate;
pub mod manifest;
pub mod tpm;
pub mod vendors;
pub mod x509_chain;

use std::time::SystemTime;

use const_oid::ObjectIdentifier;
use x509_cert::SubjectPublicKeyInfo;

use crate::reason::Reason;
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
    /// The TPM's manufacturer, model and firmware version, as its AK certificate states them
    /// (TPM formats only, when the certificate has them).
    pub tpm: Option<tpm::TpmDescription>,
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
    /// What this request's evidence may still cost: one budget for every statement, vendor
    /// and path tried. A context is made per request, never reused.
    pub budget: VerificationBudget,
}

/// Signature verifications one request's evidence may make the gate do.
///
/// Why a budget: every signature check over attacker-supplied bytes costs 20–300 µs of CPU,
/// and the checks a bundle can ask for multiply: path building tries every pool certificate
/// whose subject matches an issuer name, for every vendor, and a TPM statement is tried against
/// every pool key. A bundle of a few dozen certificates under two names that issue each other,
/// all signed by one key, once made the search do about n⁴ checks (a 19 KB CSR: more than 30 s).
/// Genuine evidence needs two to five checks (root links are remembered across requests); the
/// budget is several times that, so nothing genuine comes near it, and the worst request costs
/// a bounded, measured multiple of a normal one (docs/performance.md, `adversarial_inputs`).
pub const SIGNATURE_CHECKS_PER_REQUEST: u32 = 16;

/// Most certificates an evidence bundle may carry. Real bundles carry one to four (a vendor
/// intermediate, an attestation-key certificate, a TPM AK chain).
pub const MAX_POOL_CERTIFICATES: usize = 16;

/// Most statements an evidence bundle may carry (key evidence, perhaps platform evidence).
pub const MAX_STATEMENTS: usize = 4;

/// The allowance of signature checks of one request, and the links it has already checked.
///
/// Signature validity is a pure function of the signer's key and the signed bytes, so a link
/// checked once (for one vendor, one statement, one path) is never checked again in the same
/// request; only checks that really run are counted.
#[derive(Debug)]
pub struct VerificationBudget {
    checks_left: std::cell::Cell<u32>,
    checks_made: std::cell::Cell<u32>,
    /// Set when a check was asked for past the budget.
    exhausted: std::cell::Cell<bool>,
    links: std::cell::RefCell<CheckedLinks>,
}

/// (SHA-256 of the signer's SubjectPublicKeyInfo, SHA-256 of the signed object) → valid.
type CheckedLinks = std::collections::HashMap<([u8; 32], [u8; 32]), bool>;

impl VerificationBudget {
    /// A budget of `checks` signature verifications.
    pub fn new(checks: u32) -> Self {
        Self {
            checks_left: std::cell::Cell::new(checks),
            checks_made: std::cell::Cell::new(0),
            exhausted: std::cell::Cell::new(false),
            links: Default::default(),
        }
    }

    /// The budget of one request: [`SIGNATURE_CHECKS_PER_REQUEST`].
    pub fn per_request() -> Self {
        Self::new(SIGNATURE_CHECKS_PER_REQUEST)
    }

    /// How many signature checks have run so far.
    pub fn checks_made(&self) -> u32 {
        self.checks_made.get()
    }

    /// Whether a check was asked for past the budget: whatever a verifier then reports, the
    /// request asked for more work than genuine evidence needs (the gate reports that).
    pub fn exhausted(&self) -> bool {
        self.exhausted.get()
    }

    /// Runs one signature check, or refuses when the budget is spent.
    pub fn check<T>(&self, verify: impl FnOnce() -> T) -> Result<T, AttestationError> {
        let left = self.checks_left.get();
        if left == 0 {
            self.exhausted.set(true);
            return Err(too_complex(format!(
                "verifying the evidence would take more than {} signature checks",
                self.checks_made.get()
            )));
        }
        self.checks_left.set(left - 1);
        self.checks_made.set(self.checks_made.get() + 1);
        Ok(verify())
    }

    /// [`VerificationBudget::check`], remembered by signer key and signed object for the rest
    /// of the request.
    pub fn check_link(
        &self,
        signer_spki: [u8; 32],
        signed: [u8; 32],
        verify: impl FnOnce() -> bool,
    ) -> Result<bool, AttestationError> {
        if let Some(known) = self.links.borrow().get(&(signer_spki, signed)) {
            return Ok(*known);
        }
        let valid = self.check(verify)?;
        self.links.borrow_mut().insert((signer_spki, signed), valid);
        Ok(valid)
    }
}

/// The reason code of evidence that asks for more work than any genuine evidence needs.
pub const TOO_COMPLEX: Reason = Reason::AttestationTooComplex;

/// Evidence that asks for more work than any genuine evidence needs (400).
pub fn too_complex(detail: impl Into<String>) -> AttestationError {
    AttestationError::malformed(TOO_COMPLEX, detail)
}

/// Verifies one statement type.
pub trait StatementVerifier: Send + Sync {
    /// The statement type OID this verifier handles.
    fn statement_type(&self) -> ObjectIdentifier;
    /// The format it implements.
    fn format(&self) -> AttestationFormat;
    /// The freshness nonce the statement claims, read without verifying anything (`None` when
    /// the format has no nonce or the statement does not decode). The registration authority
    /// checks that it is live and the requester's before it lets the statement be verified, so
    /// that nobody without a fresh nonce of their own can make the CA check signatures over
    /// certificates they chose.
    fn claimed_nonce(&self, _statement: &[u8]) -> Option<Vec<u8>> {
        None
    }

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

/// An attestation failure with its documented reason code (an `attestation.*` [`Reason`]).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{detail}")]
pub struct AttestationError {
    pub code: Reason,
    pub kind: FailureKind,
    pub detail: String,
}

impl AttestationError {
    /// Malformed evidence (400).
    pub fn malformed(code: Reason, detail: impl Into<String>) -> Self {
        Self {
            code,
            kind: FailureKind::Malformed,
            detail: detail.into(),
        }
    }

    /// Evidence that verifies poorly or fails policy (403).
    pub fn refused(code: Reason, detail: impl Into<String>) -> Self {
        Self {
            code,
            kind: FailureKind::Refused,
            detail: detail.into(),
        }
    }
}

/// Whether two public keys are the same key (DER-equal SubjectPublicKeyInfo).
pub fn same_key(a: &SubjectPublicKeyInfo, b: &SubjectPublicKeyInfo) -> bool {
    use der::Encode;
    match (a.to_der(), b.to_der()) {
        (Ok(x), Ok(y)) => x == y,
        _ => false,
    }
}
