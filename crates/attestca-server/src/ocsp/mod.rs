//! The OCSP responder (RFC 6960, RFC 5019 profile): answers about the issuing CA's
//! certificates from pre-signed responses, signed by a delegated responder certificate.
//!
//! - [`asn1`]: the RFC 6960 structures.
//! - [`request`]: decoding requests, matching CertIDs to the issuing CA.
//! - [`signing`]: building and signing responses.
//! - [`delegation`]: the responder key (in the CA key's backend) and its certificate.
//! - [`cache`]: the pre-signed responses and the refresher that keeps them current.
//!
//! The hot path — one certificate, no nonce, a known serial — is a hash lookup and a clone of
//! the stored bytes: no signing, no database. Everything else (nonces, several certificates,
//! a serial not cached yet, a serial never issued) is signed live, bounded by a semaphore.

pub mod cache;
pub mod delegation;

pub use attestca_core::ocsp::{asn1, request, signing};

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};

use bytes::Bytes;
use tokio::sync::{Notify, Semaphore};

use asn1::{CertId, OcspResponseStatus};
use cache::{CachedCertificate, Lookup, ResponseCache};
use delegation::ResponderDelegation;
use request::{CertIdHash, IssuerHashes, ParsedRequest, RequestedCertificate, SerialKey};
use signing::{CertState, SignedResponse, SingleAnswer};

use crate::config::{OcspNoncePolicy, RevocationConfig, SignerConfig};
use crate::issuance::IssuingCa;
use crate::store::Store;
use crate::store::ledger::Ledger;

/// Why a request got no successful response. [`OcspError::response_status`] is the one place
/// that turns these into OCSP response statuses.
#[derive(Debug, thiserror::Error)]
pub enum OcspError {
    #[error("malformed request: {0}")]
    Malformed(String),
    #[error("the request names an issuer this responder does not answer for")]
    Unauthorized,
    #[error("live signing is at capacity (revocation.ocsp_live_signing_concurrency)")]
    TryLater,
    #[error(transparent)]
    Store(#[from] crate::store::StoreError),
    #[error(transparent)]
    Signer(#[from] crate::signer::SignerError),
    #[error(transparent)]
    Issuance(#[from] crate::issuance::IssuanceError),
    #[error("{0}")]
    Internal(String),
}

impl From<attestca_core::ocsp::OcspError> for OcspError {
    fn from(e: attestca_core::ocsp::OcspError) -> Self {
        use attestca_core::ocsp::OcspError as Wire;
        match e {
            Wire::Malformed(m) => OcspError::Malformed(m),
            Wire::Unauthorized => OcspError::Unauthorized,
            Wire::Signer(e) => OcspError::Signer(e),
            Wire::Internal(m) => OcspError::Internal(m),
        }
    }
}

impl OcspError {
    /// The OCSP response status this error is answered with.
    pub fn response_status(&self) -> OcspResponseStatus {
        match self {
            OcspError::Malformed(_) => OcspResponseStatus::MalformedRequest,
            OcspError::Unauthorized => OcspResponseStatus::Unauthorized,
            // A database or key known to be down: the client may retry, as after overload.
            OcspError::TryLater
            | OcspError::Store(crate::store::StoreError::Unavailable { .. })
            | OcspError::Signer(crate::signer::SignerError::Unavailable(_)) => {
                OcspResponseStatus::TryLater
            }
            OcspError::Store(_)
            | OcspError::Signer(_)
            | OcspError::Issuance(_)
            | OcspError::Internal(_) => OcspResponseStatus::InternalError,
        }
    }

    /// The (unsigned) `OCSPResponse` that answers this error.
    pub fn response_body(&self) -> Bytes {
        signing::error_response(self.response_status())
    }
}

/// How long a response may be cached, for the HTTP caching headers (RFC 5019 6.2).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Freshness {
    /// Unix seconds.
    pub this_update: i64,
    /// Unix seconds.
    pub next_update: i64,
    /// A hash of the response.
    pub etag: u64,
}

/// A successful answer: the DER of the `OCSPResponse`, and its freshness when it may be
/// cached (not for a response echoing a nonce).
#[derive(Clone, Debug)]
pub struct OcspReply {
    pub body: Bytes,
    pub freshness: Option<Freshness>,
}

impl OcspReply {
    fn of(response: &SignedResponse, cacheable: bool) -> Self {
        Self {
            body: response.body(),
            freshness: cacheable.then_some(Freshness {
                this_update: response.this_update,
                next_update: response.next_update,
                etag: response.etag,
            }),
        }
    }
}

pub(crate) use attestca_core::time::unix_now;

/// A status, when it was known, and (read from the store) the certificate's expiry.
struct KnownState {
    state: CertState,
    /// Unix seconds.
    known_at: i64,
    stored_not_after: Option<i64>,
}

/// The responder of one issuing CA.
pub struct OcspResponder {
    issuer: IssuerHashes,
    issuer_key_id: Vec<u8>,
    delegation: ResponderDelegation,
    cache: ResponseCache,
    store: Store,
    live_signing: Semaphore,
    nonce_policy: OcspNoncePolicy,
    validity_secs: i64,
    cores: usize,
    warm: AtomicBool,
    /// When the last successful poll read the store: the cached statuses are current as of
    /// then (Unix seconds).
    confirmed_at: AtomicI64,
    resign_everything: AtomicBool,
    sweep_now: Notify,
    /// Enrollments in progress: new certificates' responses are pre-signed when there are
    /// none (see [`cache`]).
    enrollments: crate::activity::EnrollmentLoad,
    /// New certificates whose "good" response waits for a pause in enrollments.
    deferred: std::sync::Mutex<cache::Deferred>,
}

impl OcspResponder {
    /// Opens (or generates) the responder key beside the CA key, and reuses or issues the
    /// responder certificate. The cache starts empty: [`OcspResponder::run`] fills it.
    pub async fn start(
        ca: Arc<IssuingCa>,
        ca_key: &SignerConfig,
        store: Store,
        ledger: Ledger,
        config: &RevocationConfig,
        enrollments: crate::activity::EnrollmentLoad,
    ) -> Result<Arc<Self>, OcspError> {
        // Two instances starting at once would each generate a key (PKCS#11 has no "create
        // unless it exists") and issue a certificate: one at a time, the second finds the
        // first's.
        let _one_at_a_time = store.exclusive("ocsp-responder").await?;
        let key_config = delegation::responder_key_config(ca_key);
        let signer =
            tokio::task::spawn_blocking(move || delegation::open_or_generate_key(&key_config))
                .await
                .map_err(|e| OcspError::Internal(format!("opening the responder key: {e}")))??;
        let issuer = IssuerHashes::of(ca.certificate())
            .map_err(|e| OcspError::Internal(format!("issuer hashes: {e}")))?;
        let issuer_key_id = ca.key_identifier().to_vec();
        let delegation = ResponderDelegation::establish(
            ca,
            signer,
            &store,
            ledger,
            config.ocsp_responder_validity_secs,
        )
        .await?;
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
        Ok(Arc::new(Self {
            issuer,
            issuer_key_id,
            delegation,
            cache: ResponseCache::default(),
            store,
            live_signing: Semaphore::new(config.ocsp_live_signing_concurrency.max(1)),
            nonce_policy: config.ocsp_nonce,
            validity_secs: i64::try_from(config.ocsp_validity_secs).unwrap_or(14_400),
            cores,
            warm: AtomicBool::new(false),
            confirmed_at: AtomicI64::new(0),
            resign_everything: AtomicBool::new(false),
            sweep_now: Notify::new(),
            enrollments,
            deferred: std::sync::Mutex::default(),
        }))
    }

    /// Whether the first sweep has completed (every certificate has a pre-signed response).
    pub fn is_warm(&self) -> bool {
        self.warm.load(Ordering::SeqCst)
    }

    /// The responder's key, for the health monitor.
    pub fn signer(&self) -> Arc<dyn crate::signer::Signer> {
        self.delegation.signer()
    }

    /// Number of certificates with a pre-signed response.
    pub fn cached(&self) -> usize {
        self.cache.len()
    }

    /// The soonest nextUpdate among pre-signed responses (Unix seconds).
    pub fn earliest_next_update(&self) -> Option<i64> {
        self.cache.earliest_next_update()
    }

    /// Answers the DER of an `OCSPRequest`, counted in `attestca_ocsp_responses_total`.
    pub async fn respond(&self, der: &[u8]) -> Result<OcspReply, OcspError> {
        let (result, source) = self.answer(der).await;
        let status = match &result {
            Ok(_) => "successful",
            Err(e) => match e.response_status() {
                OcspResponseStatus::MalformedRequest => "malformed_request",
                OcspResponseStatus::TryLater => "try_later",
                OcspResponseStatus::Unauthorized => "unauthorized",
                _ => "internal_error",
            },
        };
        crate::metrics::METRICS
            .ocsp_responses
            .with_label_values(&[status, if result.is_ok() { source } else { "error" }])
            .inc();
        result
    }

    /// The answer, and whether it came from the cache or was signed live.
    async fn answer(&self, der: &[u8]) -> (Result<OcspReply, OcspError>, &'static str) {
        match self.cached_answer(der) {
            Ok(Some(reply)) => (Ok(reply), "cache"),
            Ok(None) => (self.live_answer(der).await, "live"),
            Err(e) => (Err(e), "error"),
        }
    }

    /// The pre-signed answer to a one-certificate request without nonce, if there is one.
    fn cached_answer(&self, der: &[u8]) -> Result<Option<OcspReply>, OcspError> {
        let request = request::parse(der, self.nonce_policy)?;
        let asked = request
            .cert_ids
            .iter()
            .map(|id| self.issuer.identify(id))
            .collect::<Result<Vec<_>, _>>()?;
        if let ([one], None) = (asked.as_slice(), &request.nonce)
            && let Some(serial) = one.serial
            && let Lookup::Hit(response) = self.cache.lookup(&serial, one.hash)
        {
            return Ok(Some(OcspReply::of(&response, true)));
        }
        Ok(None)
    }

    /// Signs an answer now (bounded by the live-signing semaphore).
    async fn live_answer(&self, der: &[u8]) -> Result<OcspReply, OcspError> {
        let request = request::parse(der, self.nonce_policy)?;
        let asked = request
            .cert_ids
            .iter()
            .map(|id| self.issuer.identify(id))
            .collect::<Result<Vec<_>, _>>()?;
        let _permit = self.live_signing.try_acquire().map_err(|_| {
            crate::metrics::METRICS
                .overload_refusals
                .with_label_values(&["ocsp_live_signing"])
                .inc();
            OcspError::TryLater
        })?;
        match (
            asked.as_slice(),
            request.cert_ids.as_slice(),
            &request.nonce,
        ) {
            ([one], [cert_id], None) => self.respond_one_live(one, cert_id).await,
            _ => self.respond_many_live(&request, &asked).await,
        }
    }

    /// What is known of a serial: the cache's status (current as of the last poll or its own
    /// read, whichever is later), else the store's, read now (with its expiry, to cache it).
    async fn state_of(&self, serial: &SerialKey) -> Result<KnownState, OcspError> {
        let now = unix_now();
        if let Some((state, read_at)) = self.cache.state(serial) {
            let confirmed = self.confirmed_at.load(Ordering::SeqCst).max(read_at);
            return Ok(KnownState {
                state,
                known_at: confirmed.min(now),
                stored_not_after: None,
            });
        }
        let (state, stored_not_after) = match self
            .store
            .certificate_status(&serial.serial())
            .await?
        {
            Some(row) if row.issuer_key_id == self.issuer_key_id => (
                CertState::from_store(row.status, row.revoked_at, row.revocation_reason.as_deref()),
                Some(row.not_after),
            ),
            _ => (CertState::Unknown, None),
        };
        Ok(KnownState {
            state,
            known_at: now,
            stored_not_after,
        })
    }

    async fn sign(
        &self,
        answers: Vec<SingleAnswer>,
        observed_at: i64,
        nonce: Option<x509_cert::ext::Extension>,
    ) -> Result<SignedResponse, OcspError> {
        let identity = self.delegation.current();
        let validity = self.validity_secs;
        tokio::task::spawn_blocking(move || {
            signing::sign(&identity, &answers, observed_at, validity, nonce.as_ref())
        })
        .await
        .map_err(|e| OcspError::Internal(format!("signing task: {e}")))?
        .map_err(OcspError::from)
    }

    /// One certificate, no nonce, not pre-signed: signed now, and kept when it is one of ours.
    async fn respond_one_live(
        &self,
        asked: &RequestedCertificate,
        cert_id: &CertId,
    ) -> Result<OcspReply, OcspError> {
        let Some(serial) = asked.serial else {
            let answer = SingleAnswer {
                cert_id: cert_id.clone(),
                state: CertState::Unknown,
            };
            return Ok(OcspReply::of(
                &self.sign(vec![answer], unix_now(), None).await?,
                true,
            ));
        };
        let KnownState {
            state,
            known_at: observed_at,
            stored_not_after,
        } = self.state_of(&serial).await?;
        // Ours: signed with the CertID as pre-signed responses carry it, so that it can be
        // served to every client asking about this serial.
        let cert_id = match state {
            CertState::Unknown => cert_id.clone(),
            _ => self.issuer.cert_id(asked.hash, &serial)?,
        };
        let response = self
            .sign(vec![SingleAnswer { cert_id, state }], observed_at, None)
            .await?;
        match (asked.hash, stored_not_after) {
            (CertIdHash::Sha1, Some(not_after)) if not_after > observed_at => {
                self.cache.store_if_absent(
                    serial,
                    CachedCertificate {
                        state,
                        not_after,
                        sha1: response.clone(),
                        sha256: None,
                    },
                );
            }
            (CertIdHash::Sha256, None) if state != CertState::Unknown => {
                self.cache.add_sha256(&serial, state, response.clone());
            }
            _ => {}
        }
        Ok(OcspReply::of(&response, true))
    }

    /// Several certificates, or a nonce to echo: one response signed now.
    async fn respond_many_live(
        &self,
        request: &ParsedRequest,
        asked: &[RequestedCertificate],
    ) -> Result<OcspReply, OcspError> {
        // thisUpdate: when the least recently confirmed of these statuses was known.
        let mut observed_at = unix_now();
        let mut answers = Vec::with_capacity(asked.len());
        for (cert_id, one) in request.cert_ids.iter().zip(asked) {
            let state = match one.serial {
                Some(serial) => {
                    let known = self.state_of(&serial).await?;
                    observed_at = observed_at.min(known.known_at);
                    known.state
                }
                None => CertState::Unknown,
            };
            answers.push(SingleAnswer {
                cert_id: cert_id.clone(),
                state,
            });
        }
        let response = self
            .sign(answers, observed_at, request.nonce.clone())
            .await?;
        Ok(OcspReply::of(&response, request.nonce.is_none()))
    }
}
