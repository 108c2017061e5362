//! The registration authority: decides whether a request gets a certificate, and records why.
//!
//! Order of checks for `simpleenroll`: profile exists (404) → requester authenticated (401) →
//! rig allowed on the profile (403) → CSR decodes, proves possession and fits the profile
//! (400) → retry of an earlier request (same certificate back) → issue → commit → return.
//! Every outcome, including refusals, becomes an enrollment event.

pub use attestca_core::csr;
pub mod attestation_key;
mod evidence;
mod renewal;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::SystemTime;

use der::Encode;
use sha2::{Digest, Sha256};

use attestca_core::reason::Reason;
use attestca_core::record::{CertStatus, EventOutcome};
use attestca_core::serial::Serial;

use crate::access::{AuthError, PresentedCredentials, Requester, RigAuthenticator};
use crate::issuance::{IssuanceError, IssuanceProfile, IssuingCa, LeafRequest, unix_seconds};
use crate::store::ledger::{Committed, Ledger, LedgerEntry};
use crate::store::{CertificateRecord, EnrollmentEvent, Store, StoreError};

/// Why an enrollment did not produce a certificate. Each variant has a stable reason code.
#[derive(Debug, thiserror::Error)]
pub enum EnrollmentError {
    #[error("no issuance profile is labelled {0:?}")]
    UnknownProfile(String),
    /// What was asked for does not exist here (a service this CA does not offer).
    #[error("{detail}")]
    NotFound { code: Reason, detail: String },
    #[error("{0}")]
    Unauthenticated(AuthError),
    #[error("rig {rig:?} is not allowed to enroll on profile {profile:?}")]
    NotAuthorized { rig: String, profile: String },
    #[error("{detail}")]
    BadRequest { code: Reason, detail: String },
    #[error("{detail}")]
    Forbidden { code: Reason, detail: String },
    #[error("the CA cannot complete this request now: {detail}")]
    Unavailable { code: Reason, detail: String },
    #[error("{detail}")]
    TooManyRequests {
        code: Reason,
        detail: String,
        retry_after_secs: u64,
    },
}

impl From<attestca_core::policy::Refusal> for EnrollmentError {
    fn from(refusal: attestca_core::policy::Refusal) -> Self {
        use attestca_core::policy::RefusalClass;
        let code = refusal.code;
        let class = refusal.class();
        let detail = refusal.detail;
        match class {
            RefusalClass::BadRequest => EnrollmentError::BadRequest { code, detail },
            RefusalClass::Forbidden => EnrollmentError::Forbidden { code, detail },
            RefusalClass::TooManyRequests => EnrollmentError::TooManyRequests {
                code,
                detail,
                retry_after_secs: refusal.retry_after_secs.unwrap_or(1),
            },
        }
    }
}

impl From<csr::CsrRefusal> for EnrollmentError {
    fn from(refusal: csr::CsrRefusal) -> Self {
        EnrollmentError::BadRequest {
            code: refusal.code,
            detail: refusal.detail,
        }
    }
}

/// The class of a refusal, for the wire layer to map to a status code.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RefusalKind {
    NotFound,
    Unauthenticated,
    Forbidden,
    BadRequest,
    Unavailable,
    TooManyRequests,
}

impl EnrollmentError {
    /// A stable, documented reason code (`csr.bad_signature`, `auth.missing`, ...).
    pub fn reason_code(&self) -> Reason {
        match self {
            EnrollmentError::UnknownProfile(_) => Reason::ProfileUnknown,
            EnrollmentError::NotFound { code, .. } => *code,
            EnrollmentError::Unauthenticated(AuthError::Missing) => Reason::AuthMissing,
            EnrollmentError::Unauthenticated(AuthError::Invalid) => Reason::AuthInvalid,
            EnrollmentError::Unauthenticated(AuthError::Busy) => Reason::OverloadAuthentication,
            EnrollmentError::NotAuthorized { .. } => Reason::AuthNotAllowedOnProfile,
            EnrollmentError::BadRequest { code, .. }
            | EnrollmentError::Forbidden { code, .. }
            | EnrollmentError::Unavailable { code, .. }
            | EnrollmentError::TooManyRequests { code, .. } => *code,
        }
    }

    /// How the wire layer should answer.
    pub fn kind(&self) -> RefusalKind {
        match self {
            EnrollmentError::UnknownProfile(_) | EnrollmentError::NotFound { .. } => {
                RefusalKind::NotFound
            }
            EnrollmentError::Unauthenticated(AuthError::Busy) => RefusalKind::Unavailable,
            EnrollmentError::Unauthenticated(_) => RefusalKind::Unauthenticated,
            EnrollmentError::NotAuthorized { .. } | EnrollmentError::Forbidden { .. } => {
                RefusalKind::Forbidden
            }
            EnrollmentError::BadRequest { .. } => RefusalKind::BadRequest,
            EnrollmentError::Unavailable { .. } => RefusalKind::Unavailable,
            EnrollmentError::TooManyRequests { .. } => RefusalKind::TooManyRequests,
        }
    }

    fn storage(e: StoreError) -> Self {
        match e {
            // Known down: logged once, when the circuit opened, not per request.
            StoreError::Unavailable { down_secs } => EnrollmentError::Unavailable {
                code: Reason::StorageUnavailable,
                detail: format!(
                    "the certificate store has been unavailable for {down_secs} s; retry later"
                ),
            },
            e => {
                tracing::error!(error = %e, "storage failure during enrollment");
                EnrollmentError::Unavailable {
                    code: Reason::StorageUnavailable,
                    detail: "the certificate store is unavailable; retry later".into(),
                }
            }
        }
    }

    fn issuance(e: IssuanceError) -> Self {
        tracing::error!(error = %e, "issuance failure");
        EnrollmentError::Unavailable {
            code: Reason::SignerUnavailable,
            detail: "the CA could not sign; retry later".into(),
        }
    }
}

/// One `simpleenroll` or `simplereenroll` request, as the wire layer hands it over.
#[derive(Debug)]
pub struct EnrollRequest {
    /// The EST label; `None` for the default profile.
    pub label: Option<String>,
    pub credentials: PresentedCredentials,
    pub csr_der: Vec<u8>,
    /// Client address, for the event.
    pub peer: Option<String>,
    /// When the wire gives up on this request. The decision stops a little before, so that the
    /// client gets the registration authority's answer (503 `service.timeout`) and the event
    /// records it; `None`: no deadline.
    pub deadline: Option<std::time::Instant>,
}

/// A successful enrollment.
#[derive(Debug, Clone)]
pub struct Enrolled {
    pub certificate_der: Vec<u8>,
    pub serial: Serial,
    /// True when this is the certificate issued earlier for the same CSR and rig.
    pub retried: bool,
}

/// The registration authority and everything it needs.
pub struct EnrollmentService {
    profiles: HashMap<String, IssuanceProfile>,
    ca: Arc<IssuingCa>,
    store: Store,
    /// Revokes a renewal's predecessor when the profile supersedes it at once (audited).
    revocations: crate::revocation::Revocations,
    ledger: Ledger,
    rigs: Arc<RigAuthenticator>,
    gate: Arc<crate::attestation::gate::AttestationGate>,
    retry_window_secs: i64,
    nonce_lifetime_secs: u64,
    /// Mints and checks stateless nonces (shared by the instances on one database).
    nonce_key: attestca_core::nonce::NonceKey,
    issuer_key_id: Vec<u8>,
    /// Admission control: one permit per enrollment or renewal in progress.
    admission: crate::activity::EnrollmentLoad,
    budgets: Arc<crate::access::rate::RequestBudgets>,
    /// Set when the CA certifies TPM attestation keys.
    attestation_keys: Option<attestation_key::AttestationKeyAuthority>,
}

/// Everything the registration authority is built from.
pub struct EnrollmentParts {
    pub profiles: HashMap<String, IssuanceProfile>,
    pub ca: Arc<IssuingCa>,
    pub store: Store,
    pub ledger: Ledger,
    pub rigs: Arc<RigAuthenticator>,
    pub gate: Arc<crate::attestation::gate::AttestationGate>,
    pub retry_window_secs: u64,
    pub nonce_lifetime_secs: u64,
    /// The key stateless nonces are minted with ([`crate::store::Store::nonce_secret`]).
    pub nonce_key: attestca_core::nonce::NonceKey,
    /// Enrollments and renewals in progress at once; more get 503 + Retry-After.
    pub load: crate::activity::EnrollmentLoad,
    /// Per-rig and per-device request budgets; over budget gets 429 + Retry-After.
    pub budgets: Arc<crate::access::rate::RequestBudgets>,
    /// `[attestation_keys]`, when enabled.
    pub attestation_keys: Option<attestation_key::AttestationKeyAuthority>,
}

/// How long before the wire's deadline the decision gives up, leaving time to record the event
/// and answer.
const DEADLINE_MARGIN: std::time::Duration = std::time::Duration::from_millis(250);

/// An admitted request's permit, shared with the blocking work the request starts.
///
/// Why shared: CPU-heavy steps (evidence verification, signing) run on blocking threads, which
/// a deadline cannot stop. If the permit went back when the request's future was dropped, a
/// request cut off by its deadline would free its slot while its work still ran, and
/// `server.max_concurrent_enrollments` would no longer cap the CPU spent on enrollments. The
/// permit is returned when the request *and* its blocking work have ended.
#[derive(Clone)]
struct Admission {
    /// Held, never read: the permit goes back when the last clone is dropped.
    _permit: Arc<tokio::sync::OwnedSemaphorePermit>,
}

impl Admission {
    /// Runs `work` on a blocking thread, holding the permit until it ends.
    async fn run_blocking<T: Send + 'static>(
        &self,
        work: impl FnOnce() -> T + Send + 'static,
    ) -> Result<T, tokio::task::JoinError> {
        let held = self.clone();
        tokio::task::spawn_blocking(move || {
            let _held = held;
            work()
        })
        .await
    }
}

/// Who asks, admitted: what the steps that verify on blocking threads need besides the request.
#[derive(Clone, Copy)]
struct Admitted<'r> {
    requester: &'r Requester,
    admission: &'r Admission,
}

/// The event of a request in progress. If the request is abandoned before it is decided (the
/// client went away and the server dropped the request), the event is still recorded, as
/// `failed` with reason `request.abandoned`, from a background task.
struct PendingEvent {
    event: Option<EnrollmentEvent>,
    ledger: Ledger,
}

impl PendingEvent {
    fn new(event: EnrollmentEvent, ledger: &Ledger) -> Self {
        Self {
            event: Some(event),
            ledger: ledger.clone(),
        }
    }

    fn get(&mut self) -> &mut EnrollmentEvent {
        self.event.get_or_insert_with(Default::default)
    }

    /// The event, decided: no longer recorded on drop.
    fn decided(mut self) -> EnrollmentEvent {
        self.event.take().unwrap_or_default()
    }
}

impl Drop for PendingEvent {
    fn drop(&mut self) {
        let Some(mut event) = self.event.take() else {
            return;
        };
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return;
        };
        event.outcome = EventOutcome::Failed;
        event.reason = Reason::RequestAbandoned.as_str().into();
        event.detail = "the client went away before the request was decided".into();
        crate::metrics::METRICS
            .enrollment_refusals
            .with_label_values(&[event.operation.as_str(), Reason::RequestAbandoned.as_str()])
            .inc();
        let ledger = self.ledger.clone();
        runtime.spawn(async move {
            if let Err(e) = ledger.commit(LedgerEntry::Event(event)).await {
                tracing::error!(error = %e, "could not record an abandoned enrollment");
            }
        });
    }
}

const OPERATION_ENROLL: &str = "simpleenroll";
const OPERATION_REENROLL: &str = "simplereenroll";

/// Runs `decision` until `deadline` (less [`DEADLINE_MARGIN`]); past it, 503 `service.timeout`.
async fn within_deadline<T>(
    deadline: Option<std::time::Instant>,
    decision: impl std::future::Future<Output = Result<T, EnrollmentError>>,
) -> Result<T, EnrollmentError> {
    let Some(deadline) = deadline else {
        return decision.await;
    };
    let stop = deadline
        .checked_sub(DEADLINE_MARGIN)
        .unwrap_or(deadline)
        .max(std::time::Instant::now());
    tokio::time::timeout_at(stop.into(), decision)
        .await
        .unwrap_or_else(|_| {
            crate::metrics::METRICS
                .overload_refusals
                .with_label_values(&["request_timeout"])
                .inc();
            Err(EnrollmentError::Unavailable {
                code: Reason::ServiceTimeout,
                detail: "the request could not be decided in time".into(),
            })
        })
}

/// A revoked certificate is never handed out again, not even to the requester it was issued to.
fn refuse_if_revoked(earlier: &CertificateRecord) -> Result<(), EnrollmentError> {
    if earlier.status == CertStatus::Revoked {
        return Err(EnrollmentError::Forbidden {
            code: Reason::EnrollRetryRevoked,
            detail: format!(
                "the certificate issued for this CSR (serial {}) has been revoked; a revoked \
                 certificate is never sent again: make a new key and CSR",
                earlier.serial
            ),
        });
    }
    Ok(())
}

/// The event of a request, filled in as the decision proceeds.
fn new_event(
    operation: &str,
    label: Option<&str>,
    peer: Option<String>,
    now: SystemTime,
) -> EnrollmentEvent {
    EnrollmentEvent {
        occurred_at: unix_seconds(now) as i64,
        operation: operation.into(),
        profile: label.unwrap_or(crate::config::DEFAULT_PROFILE).to_owned(),
        peer,
        ..Default::default()
    }
}

/// A request that passed every check, ready to issue.
struct Approved<'a> {
    csr: &'a csr::ValidatedCsr,
    /// The hardware identity to certify (from evidence, or carried over by a renewal) and its
    /// record form `<vendor>:<serial>`.
    device: Option<(crate::attestation::DeviceIdentity, String)>,
    csr_sha256: Vec<u8>,
    /// The certificate being renewed (simplereenroll).
    predecessor_serial: Option<Serial>,
    /// A stateless nonce, spent by committing the certificate.
    nonce: Option<Vec<u8>>,
}

impl EnrollmentService {
    /// Assembles the service.
    pub fn new(parts: EnrollmentParts) -> Self {
        let issuer_key_id = parts.ca.key_identifier().to_vec();
        Self {
            profiles: parts.profiles,
            ca: parts.ca,
            revocations: crate::revocation::Revocations::new(parts.store.clone()),
            store: parts.store,
            ledger: parts.ledger,
            rigs: parts.rigs,
            gate: parts.gate,
            retry_window_secs: i64::try_from(parts.retry_window_secs).unwrap_or(i64::MAX),
            nonce_lifetime_secs: parts.nonce_lifetime_secs,
            nonce_key: parts.nonce_key,
            issuer_key_id,
            admission: parts.load,
            budgets: parts.budgets,
            attestation_keys: parts.attestation_keys,
        }
    }

    /// The profile for a label (`None` = default), if configured.
    pub fn profile(&self, label: Option<&str>) -> Option<&IssuanceProfile> {
        self.profiles
            .get(label.unwrap_or(crate::config::DEFAULT_PROFILE))
    }

    /// The issuing CA.
    pub fn ca(&self) -> &IssuingCa {
        &self.ca
    }

    /// Records a request the wire layer refused before it could be decoded (wrong media type,
    /// oversized or unreadable body), so that every attempt leaves an event.
    pub async fn record_undecodable(
        &self,
        label: Option<&str>,
        credentials: &PresentedCredentials,
        peer: Option<String>,
        code: Reason,
        detail: &str,
    ) {
        let requester = match &credentials.peer_certificate {
            crate::access::PeerCertificate::Rig(name) => Some(
                Requester {
                    name: name.clone(),
                    method: crate::access::AuthMethod::ClientCertificate,
                }
                .id(),
            ),
            _ => None,
        };
        let event = EnrollmentEvent {
            occurred_at: unix_seconds(SystemTime::now()) as i64,
            requester,
            operation: OPERATION_ENROLL.into(),
            profile: label.unwrap_or(crate::config::DEFAULT_PROFILE).to_owned(),
            outcome: EventOutcome::Refused,
            reason: code.as_str().into(),
            detail: detail.to_owned(),
            peer,
            ..Default::default()
        };
        self.count(&event, SystemTime::now());
        match self.ledger.commit(LedgerEntry::Event(event)).await {
            Ok(_) => {}
            // The outage itself is logged once, by the circuit.
            Err(StoreError::Unavailable { .. }) => {
                tracing::debug!("a refusal during a database outage is not recorded")
            }
            Err(e) => tracing::error!(error = %e, "could not record a refused enrollment"),
        }
    }

    /// Handles `simpleenroll`: decides, issues, commits, and records the event.
    pub async fn enroll(&self, request: EnrollRequest) -> Result<Enrolled, EnrollmentError> {
        self.decide_recorded(OPERATION_ENROLL, &request, async |now, event, admission| {
            self.decide_and_issue(&request, now, event, admission).await
        })
        .await
    }

    /// What every enrollment operation goes through around its decision: admission, the
    /// deadline, and the event — recorded for a refusal, or (by [`PendingEvent`]) for a
    /// request abandoned before it was decided.
    async fn decide_recorded<T>(
        &self,
        operation: &'static str,
        request: &EnrollRequest,
        decide: impl AsyncFnOnce(
            SystemTime,
            &mut EnrollmentEvent,
            &Admission,
        ) -> Result<T, EnrollmentError>,
    ) -> Result<T, EnrollmentError> {
        let now = SystemTime::now();
        let mut pending = PendingEvent::new(
            new_event(
                operation,
                request.label.as_deref(),
                request.peer.clone(),
                now,
            ),
            &self.ledger,
        );
        // A database known to be down is answered at once, before admission (its slots
        // would fill with requests that cannot finish); one found down meanwhile ends the
        // wait of every request in flight.
        let result = self
            .while_database_answers(async {
                let admission = self.admit()?;
                within_deadline(request.deadline, decide(now, pending.get(), &admission)).await
            })
            .await;
        self.record_refusal(pending.decided(), &result, now).await;
        result
    }

    /// Runs `work` unless the database is known to be down (then 503 at once, before
    /// admission: its slots would fill with requests that cannot finish), and ends the wait
    /// when the database is found down meanwhile, instead of when the work's connection
    /// attempts give up.
    async fn while_database_answers<T>(
        &self,
        work: impl std::future::Future<Output = Result<T, EnrollmentError>>,
    ) -> Result<T, EnrollmentError> {
        self.store
            .availability()
            .guard(async { Ok(work.await) })
            .await
            .map_err(EnrollmentError::storage)?
    }

    /// The refusal for a store failure, which is reported to the store's circuit first (a
    /// failed connection makes the requests after this one fail fast).
    fn storage_failure(&self, e: StoreError) -> EnrollmentError {
        self.store.report(&e);
        EnrollmentError::storage(e)
    }

    /// A permit to do enrollment work, or 503 when the CA is at its configured concurrency.
    fn admit(&self) -> Result<Admission, EnrollmentError> {
        self.admission
            .try_admit()
            .map(|permit| Admission {
                _permit: Arc::new(permit),
            })
            .map_err(|_| {
                crate::metrics::METRICS
                    .overload_refusals
                    .with_label_values(&["enrollment_concurrency"])
                    .inc();
                EnrollmentError::Unavailable {
                    code: Reason::OverloadEnrollments,
                    detail: "too many enrollments in progress".into(),
                }
            })
    }

    /// Spends one request of the requester's budget, or says when to come back (429).
    pub(crate) fn spend_budget(&self, requester: &Requester) -> Result<(), EnrollmentError> {
        self.budgets.spend(requester).map_err(|over| {
            let secs = over.retry_after.as_secs_f64().ceil() as u64;
            EnrollmentError::TooManyRequests {
                code: if over.limit == "device_rate" {
                    Reason::OverloadDeviceRate
                } else {
                    Reason::OverloadRigRate
                },
                detail: format!(
                    "{} is over its request budget; retry in {} s",
                    requester.id(),
                    secs.max(1)
                ),
                retry_after_secs: secs.max(1),
            }
        })
    }

    /// Forgets idle request budgets (housekeeping).
    pub fn purge_budgets(&self) {
        self.budgets.purge();
    }

    /// Counts the decision in the metrics and records the event of a refused request (an
    /// issued certificate's event is committed with the certificate).
    async fn record_refusal<T>(
        &self,
        mut event: EnrollmentEvent,
        result: &Result<T, EnrollmentError>,
        started: SystemTime,
    ) {
        if let Err(refusal) = result {
            event.outcome = match refusal.kind() {
                RefusalKind::Unavailable => EventOutcome::Failed,
                _ => EventOutcome::Refused,
            };
            event.reason = refusal.reason_code().as_str().into();
            event.detail = refusal.to_string();
        }
        self.count(&event, started);
        if result.is_ok() {
            return;
        }
        match self.ledger.commit(LedgerEntry::Event(event)).await {
            Ok(_) => {}
            // The outage itself is logged once, by the circuit.
            Err(StoreError::Unavailable { .. }) => {
                tracing::debug!("a refusal during a database outage is not recorded")
            }
            Err(e) => tracing::error!(error = %e, "could not record a refused enrollment"),
        }
    }

    /// Counts one decision: `attestca_enrollments_total`, refusal reasons, CA-side latency.
    /// The profile label is bounded to configured profiles (a request names any label).
    fn count(&self, event: &EnrollmentEvent, started: SystemTime) {
        let metrics = &crate::metrics::METRICS;
        let profile = if self.profiles.contains_key(&event.profile) {
            event.profile.as_str()
        } else {
            "unknown"
        };
        metrics
            .enrollments
            .with_label_values(&[profile, &event.operation, event.outcome.as_str()])
            .inc();
        if matches!(event.outcome, EventOutcome::Refused | EventOutcome::Failed) {
            metrics
                .enrollment_refusals
                .with_label_values(&[&event.operation, &event.reason])
                .inc();
        }
        if let Ok(elapsed) = started.elapsed() {
            metrics
                .enrollment_duration
                .with_label_values(&[&event.operation])
                .observe(elapsed.as_secs_f64());
        }
    }

    async fn decide_and_issue(
        &self,
        request: &EnrollRequest,
        now: SystemTime,
        event: &mut EnrollmentEvent,
        admission: &Admission,
    ) -> Result<Enrolled, EnrollmentError> {
        let profile = self
            .profile(request.label.as_deref())
            .ok_or_else(|| EnrollmentError::UnknownProfile(event.profile.clone()))?;
        let requester = self
            .rigs
            .authenticate(&request.credentials)
            .await
            .map_err(EnrollmentError::Unauthenticated)?;
        event.requester = Some(requester.id());
        self.spend_budget(&requester)?;
        if profile.policy.authorize_rig(&requester.name).is_err() {
            return Err(EnrollmentError::NotAuthorized {
                rig: requester.name.clone(),
                profile: profile.label.clone(),
            });
        }
        let csr_sha256 = Sha256::digest(&request.csr_der).to_vec();
        event.csr_sha256 = Some(csr_sha256.clone());
        let csr = csr::validate(&request.csr_der, &profile.policy)?;
        let evidence = self.gate.evidence(&csr.request)?;
        event.evidence_sha256 = evidence.as_ref().map(|e| e.sha256.clone());

        if let Some(earlier) = self
            .earlier_issue(&requester, profile, &csr_sha256, event)
            .await?
        {
            return Ok(earlier);
        }
        let checked = self
            .check_attestation(
                profile,
                Admitted {
                    requester: &requester,
                    admission,
                },
                &csr,
                evidence,
                None,
                event,
            )
            .await?;
        let (device, nonce) = match checked {
            Some(checked) => {
                let (device, nonce) = checked.into_parts();
                (Some(device), nonce)
            }
            None => (None, None),
        };
        self.issue(
            profile,
            &requester,
            admission,
            Approved {
                csr: &csr,
                device,
                csr_sha256,
                predecessor_serial: None,
                nonce,
            },
            now,
            event,
        )
        .await
    }

    /// The certificate already issued to `requester` on this profile for this CSR within the
    /// retry window, re-sent (and recorded as a retry), if there is one.
    ///
    /// A retry never crosses a policy boundary: it matches the profile too, so a CSR issued on
    /// one profile and posted to another is a new request there, decided by that profile's
    /// rules. And a revoked certificate is never sent again (403 `enroll.retry_revoked`).
    async fn earlier_issue(
        &self,
        requester: &Requester,
        profile: &IssuanceProfile,
        csr_sha256: &[u8],
        event: &mut EnrollmentEvent,
    ) -> Result<Option<Enrolled>, EnrollmentError> {
        let window_start = event.occurred_at - self.retry_window_secs;
        match self
            .store
            .find_recent_issue(&requester.id(), &profile.label, csr_sha256, window_start)
            .await
            .map_err(|e| self.storage_failure(e))?
        {
            Some(earlier) => self.resend(earlier, event).await.map(Some),
            None => Ok(None),
        }
    }

    /// Sends an earlier certificate again, recorded as a retry, unless it has been revoked.
    async fn resend(
        &self,
        earlier: CertificateRecord,
        event: &mut EnrollmentEvent,
    ) -> Result<Enrolled, EnrollmentError> {
        event.serial = Some(earlier.serial.clone());
        refuse_if_revoked(&earlier)?;
        event.outcome = EventOutcome::Retried;
        event.reason = Reason::EnrollRetry.as_str().into();
        self.ledger
            .commit(LedgerEntry::Event(event.clone()))
            .await
            .map_err(|e| self.storage_failure(e))?;
        Ok(Enrolled {
            certificate_der: earlier.der,
            serial: earlier.serial,
            retried: true,
        })
    }

    async fn issue(
        &self,
        profile: &IssuanceProfile,
        requester: &Requester,
        admission: &Admission,
        approved: Approved<'_>,
        now: SystemTime,
        event: &mut EnrollmentEvent,
    ) -> Result<Enrolled, EnrollmentError> {
        let Approved {
            csr,
            device,
            csr_sha256,
            predecessor_serial,
            nonce,
        } = approved;
        let window_start = event.occurred_at - self.retry_window_secs;
        let (device, device_key) = device.unzip();
        // Issuance adds the hardwareModuleName after the requested names.
        let leaf = LeafRequest {
            subject: csr.subject.clone(),
            public_key: csr.public_key.clone(),
            subject_alt_names: csr.subject_alt_names.clone(),
            device,
        };
        let issued_alt_names = leaf
            .issued_alt_names()
            .map_err(|e| EnrollmentError::issuance(e.into()))?;
        let spki_der = csr
            .public_key
            .to_der()
            .map_err(|e| EnrollmentError::issuance(e.into()))?;
        // A serial collision is a 2^-120 event; three attempts make it a non-event.
        for _ in 0..3 {
            let ca = Arc::clone(&self.ca);
            let (p, l) = (profile.certificate.clone(), leaf.clone());
            let issued = admission
                .run_blocking(move || ca.issue(&p, &l, now))
                .await
                .map_err(|e| EnrollmentError::Unavailable {
                    code: Reason::SignerUnavailable,
                    detail: e.to_string(),
                })?
                .map_err(EnrollmentError::issuance)?;
            event.outcome = EventOutcome::Issued;
            event.reason = Reason::EnrollIssued.as_str().into();
            event.serial = Some(issued.serial.clone());
            let record = CertificateRecord {
                serial: issued.serial.clone(),
                der: issued.der.clone(),
                issuer_key_id: self.issuer_key_id.clone(),
                subject: csr.subject.to_string(),
                sans: csr::describe_alt_names(&issued_alt_names),
                spki_sha256: Sha256::digest(&spki_der).to_vec(),
                profile: profile.label.clone(),
                not_before: issued.not_before as i64,
                not_after: issued.not_after as i64,
                status: CertStatus::Active,
                revoked_at: None,
                revocation_reason: None,
                requester: requester.id(),
                device_identity: device_key.clone(),
                csr_sha256: csr_sha256.clone(),
                issued_at: event.occurred_at,
                predecessor_serial: predecessor_serial.clone(),
            };
            let committed = self
                .ledger
                .commit(LedgerEntry::Issued {
                    certificate: Box::new(record),
                    event: event.clone(),
                    retry_window_start: window_start,
                    nonce: nonce.clone(),
                })
                .await
                .map_err(|e| self.storage_failure(e))?;
            match committed {
                Committed::Stored => {
                    crate::metrics::METRICS
                        .certificates_issued
                        .with_label_values(&[profile.label.as_str()])
                        .inc();
                    tracing::info!(serial = %issued.serial, rig = %requester.id(), profile = %profile.label, "issued");
                    return Ok(Enrolled {
                        certificate_der: issued.der,
                        serial: issued.serial,
                        retried: false,
                    });
                }
                Committed::AlreadyIssued { serial } => {
                    let earlier = self
                        .store
                        .certificate(&serial)
                        .await
                        .map_err(|e| self.storage_failure(e))?
                        .ok_or_else(|| self.storage_failure(StoreError::WriterGone))?;
                    event.serial = Some(serial.clone());
                    refuse_if_revoked(&earlier)?;
                    return Ok(Enrolled {
                        certificate_der: earlier.der,
                        serial,
                        retried: true,
                    });
                }
                Committed::SerialCollision => continue,
                Committed::NonceReused => {
                    // Nothing was stored; the refusal is recorded as such.
                    event.serial = None;
                    return Err(EnrollmentError::Forbidden {
                        code: Reason::AttestationNonceReused,
                        detail: "the evidence's nonce has already been used".into(),
                    });
                }
            }
        }
        Err(EnrollmentError::Unavailable {
            code: Reason::IssuanceSerialCollision,
            detail: "could not allocate a unique serial number".into(),
        })
    }
}
