//! The gate: decodes the evidence in a CSR and dispatches each statement to its verifier.

use std::sync::Arc;

use x509_cert::SubjectPublicKeyInfo;
use x509_cert::request::CertReq;

use super::bundle::{self, Evidence};
use super::{
    AttestationError, AttestedKey, Clock, StatementVerifier, VendorTrustStore, VerificationBudget,
    VerificationContext,
};
use crate::reason::Reason;

/// Verifiers for every statement type attestca understands.
pub fn all_verifiers() -> Vec<Box<dyn StatementVerifier>> {
    vec![
        Box::new(super::x509_chain::X509ChainVerifier),
        Box::new(super::device_cert::DeviceCertificateVerifier),
        Box::new(super::tpm::TpmCertifyVerifier),
    ]
}

/// Told the outcome of every verification the gate makes: the server counts them
/// (`attestca_attestation_verifications_total`); the core keeps no metrics of its own.
pub trait VerificationObserver: Send + Sync {
    /// One verification: its format, the vendor (`unknown` until a statement verifies), `pass`
    /// or `fail`, and the reason code (`ok` on a pass).
    fn verified(&self, format: &str, vendor: &str, result: &str, reason: &str);
}

/// The attestation gate: vendor trust store, verifiers and the verification clock.
pub struct AttestationGate {
    verifiers: Vec<Box<dyn StatementVerifier>>,
    vendors: VendorTrustStore,
    clock: Arc<dyn Clock>,
    observer: Option<Arc<dyn VerificationObserver>>,
}

impl AttestationGate {
    /// A gate over `vendors` with every verifier, verifying at `clock`'s time.
    pub fn new(vendors: VendorTrustStore, clock: Arc<dyn Clock>) -> Self {
        Self {
            verifiers: all_verifiers(),
            vendors,
            clock,
            observer: None,
        }
    }

    /// Reports every verification's outcome to `observer`.
    pub fn observed_by(mut self, observer: Arc<dyn VerificationObserver>) -> Self {
        self.observer = Some(observer);
        self
    }

    /// The trust store.
    pub fn vendors(&self) -> &VendorTrustStore {
        &self.vendors
    }

    fn count(&self, format: &str, vendor: &str, result: &str, reason: &str) {
        if let Some(observer) = &self.observer {
            observer.verified(format, vendor, result, reason);
        }
    }

    /// Decodes the evidence a CSR carries, if any (malformed carriers are errors).
    pub fn evidence(&self, request: &CertReq) -> Result<Option<Evidence>, AttestationError> {
        bundle::from_csr(request)
    }

    /// The nonces the evidence's statements claim, unverified and without repeats.
    pub fn claimed_nonces(&self, evidence: &Evidence) -> Vec<Vec<u8>> {
        let mut nonces: Vec<Vec<u8>> = Vec::new();
        for (statement_type, statement) in &evidence.statements {
            let claimed = self
                .verifiers
                .iter()
                .find(|v| v.statement_type() == *statement_type)
                .and_then(|v| v.claimed_nonce(statement));
            if let Some(nonce) = claimed
                && !nonces.contains(&nonce)
            {
                nonces.push(nonce);
            }
        }
        nonces
    }

    /// The format of the first statement a verifier here understands, if any.
    pub fn recognised_format(&self, evidence: &Evidence) -> Option<super::AttestationFormat> {
        evidence.statements.iter().find_map(|(statement_type, _)| {
            self.verifiers
                .iter()
                .find(|v| v.statement_type() == *statement_type)
                .map(|v| v.format())
        })
    }

    /// Verifies the evidence for `csr_key`: the first statement that verifies wins; if none
    /// does, the first failure is reported (a bundle may carry statements for other verifiers,
    /// e.g. platform evidence next to key evidence).
    pub fn verify(
        &self,
        evidence: &Evidence,
        csr_key: &SubjectPublicKeyInfo,
    ) -> Result<AttestedKey, AttestationError> {
        let context = VerificationContext {
            csr_key,
            pool: &evidence.certificates,
            budget: VerificationBudget::per_request(),
            vendors: &self.vendors,
            at: self.clock.now(),
        };
        let mut first_failure: Option<(&'static str, AttestationError)> = None;
        for (statement_type, statement) in &evidence.statements {
            let Some(verifier) = self
                .verifiers
                .iter()
                .find(|v| v.statement_type() == *statement_type)
            else {
                first_failure.get_or_insert_with(|| {
                    (
                        "unknown",
                        AttestationError::malformed(
                            Reason::AttestationUnknownStatementType,
                            format!("attestation statement type {statement_type} is not supported"),
                        ),
                    )
                });
                continue;
            };
            match verifier.verify(statement, &context) {
                Ok(attested) => {
                    self.count(attested.format.name(), &attested.vendor, "pass", "ok");
                    return Ok(attested);
                }
                // The budget spent, every further try fails the same way: say so, once.
                Err(e) if context.budget.exhausted() => {
                    let e = if e.code == super::TOO_COMPLEX {
                        e
                    } else {
                        super::too_complex(format!(
                            "verifying the evidence would take more than {} signature checks",
                            context.budget.checks_made()
                        ))
                    };
                    first_failure = Some((verifier.format().name(), e));
                    break;
                }
                Err(e) => {
                    first_failure.get_or_insert((verifier.format().name(), e));
                }
            }
        }
        let (format, error) = first_failure.unwrap_or_else(|| {
            (
                "unknown",
                AttestationError::malformed(
                    Reason::AttestationMalformed,
                    "no attestation statement",
                ),
            )
        });
        // The vendor is not known until a statement verifies: failures are counted by format.
        self.count(format, "unknown", "fail", error.code.as_str());
        Err(error)
    }
}
