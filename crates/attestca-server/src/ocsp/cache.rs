//! Pre-signed responses: one per unexpired certificate of the issuing CA, signed ahead of
//! time and served from memory; the refresher keeps them in step with the store (a poll for
//! what was issued or revoked since the last one) and re-signs them before they age.

use std::collections::HashMap;
use std::sync::RwLock;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use attestca_core::record::CertStatus;

use super::request::{CertIdHash, SerialKey};
use super::signing::{self, CertState, SignedResponse, SingleAnswer};
use super::{OcspError, OcspResponder, unix_now};
use crate::store::StatusRecord;

/// Certificates read from the store and signed per step of a sweep.
const SWEEP_BATCH: i64 = 512;
/// A poll re-reads this much before its last look: revocations stamped by a slightly slow
/// clock, or committed just after the previous poll read, are still found.
const POLL_OVERLAP_SECS: i64 = 30;
/// How soon a failed sweep is tried again.
const SWEEP_RETRY: Duration = Duration::from_secs(2);

/// The pre-signed answers about one certificate.
#[derive(Clone, Debug)]
pub struct CachedCertificate {
    pub state: CertState,
    pub not_after: i64,
    /// The response to a SHA-1 CertID (RFC 5019's, and what OpenSSL sends).
    pub sha1: SignedResponse,
    /// The response to a SHA-256 CertID, signed the first time one is asked for.
    pub sha256: Option<Box<SignedResponse>>,
}

/// What the cache knows of a serial.
#[derive(Clone, Debug)]
pub enum Lookup {
    /// A pre-signed response for that CertID hash.
    Hit(SignedResponse),
    /// The status, but no response for that hash yet.
    Known(CertState),
    Miss,
}

/// Serial → pre-signed responses. Readers take a read lock for a hash lookup and clone two
/// reference-counted buffers.
#[derive(Default)]
pub struct ResponseCache {
    entries: RwLock<HashMap<SerialKey, CachedCertificate>>,
}

impl ResponseCache {
    fn read(&self) -> std::sync::RwLockReadGuard<'_, HashMap<SerialKey, CachedCertificate>> {
        self.entries.read().unwrap_or_else(|p| p.into_inner())
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, HashMap<SerialKey, CachedCertificate>> {
        self.entries.write().unwrap_or_else(|p| p.into_inner())
    }

    /// The response for `serial` under `hash`, or what is known about it.
    pub fn lookup(&self, serial: &SerialKey, hash: CertIdHash) -> Lookup {
        let entries = self.read();
        let Some(entry) = entries.get(serial) else {
            return Lookup::Miss;
        };
        match hash {
            CertIdHash::Sha1 => Lookup::Hit(entry.sha1.clone()),
            CertIdHash::Sha256 => match &entry.sha256 {
                Some(response) => Lookup::Hit((**response).clone()),
                None => Lookup::Known(entry.state),
            },
        }
    }

    /// The known status of `serial`, and when the store was read for its response.
    pub fn state(&self, serial: &SerialKey) -> Option<(CertState, i64)> {
        self.read()
            .get(serial)
            .map(|e| (e.state, e.sha1.this_update))
    }

    /// Number of certificates with a pre-signed response.
    pub fn len(&self) -> usize {
        self.read().len()
    }

    /// The soonest nextUpdate (Unix seconds) among the pre-signed SHA-1 responses, for the
    /// metrics: when it comes near, the refresher is not keeping up. A scan: called per scrape.
    pub fn earliest_next_update(&self) -> Option<i64> {
        self.read().values().map(|e| e.sha1.next_update).min()
    }

    /// Whether the cache is empty.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Stores entries whose status was read at their `this_update`, each unless the entry
    /// there was read later (a concurrent poll may have seen a newer status).
    pub fn store(&self, signed: Vec<(SerialKey, CachedCertificate)>) {
        let mut entries = self.write();
        for (serial, entry) in signed {
            match entries.get(&serial) {
                Some(current) if current.sha1.this_update > entry.sha1.this_update => {}
                _ => {
                    entries.insert(serial, entry);
                }
            }
        }
    }

    /// Stores an entry made on a cache miss, unless the refresher got there first.
    pub fn store_if_absent(&self, serial: SerialKey, entry: CachedCertificate) {
        self.write().entry(serial).or_insert(entry);
    }

    /// Adds the SHA-256 response, if the entry still says `state`.
    pub fn add_sha256(&self, serial: &SerialKey, state: CertState, response: SignedResponse) {
        if let Some(entry) = self.write().get_mut(serial)
            && entry.state == state
            && entry.sha1.this_update <= response.this_update
        {
            entry.sha256 = Some(Box::new(response));
        }
    }

    /// Whether a certificate read from the store needs a (new) response: not cached, status
    /// changed, or its response was produced from a read at or before `due_before`.
    fn needs_signing(&self, serial: &SerialKey, state: CertState, due_before: i64) -> bool {
        match self.read().get(serial) {
            None => true,
            Some(e) => e.state != state || e.sha1.this_update <= due_before,
        }
    }

    /// Drops the certificates that expired before `now`.
    fn remove_expired(&self, now: i64) -> usize {
        let mut entries = self.write();
        let before = entries.len();
        entries.retain(|_, e| e.not_after > now);
        before - entries.len()
    }
}

/// A row of the store, keyed and judged.
pub(super) struct Candidate {
    serial: SerialKey,
    state: CertState,
    not_after: i64,
}

/// The longest a new certificate's pre-signed response waits for a pause in enrollments.
pub const DEFER_MAX_SECS: i64 = 60;
/// The most new certificates waiting for a pause; more are signed at once.
pub const DEFER_MAX_COUNT: usize = 100_000;
/// The most waiting responses signed in one pause: the rest wait for the next poll, so that
/// the first pause after a long burst is not a second of signing that the next board waits
/// behind (≈ 2,000 signatures is ≈ 0.2 s of one core with SoftHSM).
pub const DEFER_SLICE: usize = 2_000;

/// New certificates waiting for their pre-signed "good" response, with when their status was
/// read, oldest first.
#[derive(Default)]
pub(super) struct Deferred {
    batches: Vec<(i64, Vec<Candidate>)>,
    count: usize,
}

impl Deferred {
    fn add(&mut self, candidates: Vec<Candidate>, observed_at: i64) {
        if !candidates.is_empty() {
            self.count += candidates.len();
            self.batches.push((observed_at, candidates));
        }
    }

    /// Whether to sign now: something waits, and enrollments pause or it waited long enough.
    fn is_due(&self, enrollments_idle: bool, now: i64) -> bool {
        !self.batches.is_empty() && (enrollments_idle || self.overdue(now))
    }

    /// The oldest waited [`DEFER_MAX_SECS`], or [`DEFER_MAX_COUNT`] wait.
    fn overdue(&self, now: i64) -> bool {
        self.batches
            .first()
            .is_some_and(|(oldest, _)| now - oldest >= DEFER_MAX_SECS)
            || self.count >= DEFER_MAX_COUNT
    }

    /// The oldest waiting certificates: everything when enrollments are not pausing (the
    /// wait or the queue reached its bound), else at most [`DEFER_SLICE`].
    fn take(&mut self, enrollments_idle: bool, now: i64) -> Vec<(i64, Vec<Candidate>)> {
        if self.overdue(now) || !enrollments_idle || self.count <= DEFER_SLICE {
            self.count = 0;
            return std::mem::take(&mut self.batches);
        }
        let mut taken = Vec::new();
        let mut left = DEFER_SLICE;
        while left > 0 && !self.batches.is_empty() {
            let (observed_at, batch) = &mut self.batches[0];
            if batch.len() <= left {
                let (observed_at, batch) = self.batches.remove(0);
                left -= batch.len();
                taken.push((observed_at, batch));
            } else {
                let part: Vec<Candidate> = batch.drain(..left).collect();
                taken.push((*observed_at, part));
                left = 0;
            }
        }
        self.count -= DEFER_SLICE - left;
        taken
    }
}

impl OcspResponder {
    fn candidates(&self, rows: &[StatusRecord], now: i64, due_before: i64) -> Vec<Candidate> {
        rows.iter()
            .filter(|r| r.not_after > now && r.issuer_key_id == self.issuer_key_id)
            .filter_map(|r| {
                let serial = r.serial.key()?;
                let state =
                    CertState::from_store(r.status, r.revoked_at, r.revocation_reason.as_deref());
                self.cache
                    .needs_signing(&serial, state, due_before)
                    .then_some(Candidate {
                        serial,
                        state,
                        not_after: r.not_after,
                    })
            })
            .collect()
    }

    /// Signs SHA-1 responses for `candidates` (status read at `observed_at`) on blocking
    /// threads, split over the signing workers, and stores them.
    async fn presign(
        &self,
        candidates: Vec<Candidate>,
        observed_at: i64,
    ) -> Result<usize, OcspError> {
        if candidates.is_empty() {
            return Ok(0);
        }
        let count = candidates.len();
        // Until the first sweep is done every core signs (requests for certificates not
        // pre-signed yet cost a live signature each); after it, half of them.
        let workers = if self.is_warm() {
            (self.cores / 2).max(1)
        } else {
            self.cores
        };
        let chunk = count.div_ceil(workers);
        let mut tasks = Vec::new();
        let mut rest = candidates;
        while !rest.is_empty() {
            let part: Vec<Candidate> = rest.drain(..chunk.min(rest.len())).collect();
            let identity = self.delegation.current();
            let issuer = self.issuer.clone();
            let validity = self.validity_secs;
            tasks.push(tokio::task::spawn_blocking(move || {
                part.into_iter()
                    .map(|c| {
                        let answer = SingleAnswer {
                            cert_id: issuer.cert_id(CertIdHash::Sha1, &c.serial)?,
                            state: c.state,
                        };
                        let sha1 =
                            signing::sign(&identity, &[answer], observed_at, validity, None)?;
                        Ok((
                            c.serial,
                            CachedCertificate {
                                state: c.state,
                                not_after: c.not_after,
                                sha1,
                                sha256: None,
                            },
                        ))
                    })
                    .collect::<Result<Vec<_>, OcspError>>()
            }));
        }
        for task in tasks {
            let signed = task
                .await
                .map_err(|e| OcspError::Internal(format!("signing task: {e}")))??;
            self.cache.store(signed);
        }
        Ok(count)
    }

    /// Walks every unexpired certificate of the CA in the store, in batches, signing what is
    /// missing, changed, or older than `refresh_age_secs`; then drops expired entries.
    pub(super) async fn sweep(&self, refresh_age_secs: i64) -> Result<usize, OcspError> {
        let mut after = None;
        let mut signed = 0;
        loop {
            let observed_at = unix_now();
            let rows = self
                .store
                .certificate_statuses_page(
                    &self.issuer_key_id,
                    observed_at,
                    after.as_ref(),
                    SWEEP_BATCH,
                )
                .await?;
            let Some(last) = rows.last() else { break };
            after = Some(last.clone());
            let candidates = self.candidates(&rows, observed_at, observed_at - refresh_age_secs);
            signed += self.presign(candidates, observed_at).await?;
            if (rows.len() as i64) < SWEEP_BATCH {
                break;
            }
        }
        let expired = self.cache.remove_expired(unix_now());
        if expired > 0 {
            tracing::debug!(expired, "expired certificates left the OCSP cache");
        }
        Ok(signed)
    }

    /// Signs responses for what was issued or revoked since `since`; returns how many.
    /// Renews the responder certificate at once if it is among the revoked.
    ///
    /// `revocations_seen` is the issuer's revocation counter at the last successful poll. When
    /// it moved, every revoked unexpired certificate is compared too, not only those stamped
    /// since `since`: a revocation stamped long before it committed (a slow clock on the
    /// revoking host, a long transaction, a back-dated change in SQL) is found by the next poll
    /// instead of the next sweep. The counter is read before the rows, so whatever it counts is
    /// among them, and whatever commits later moves it again (the CRL generator relies on the
    /// same order; see `revocation::crl`).
    pub(super) async fn poll_changes(
        &self,
        since: i64,
        revocations_seen: &mut Option<i64>,
    ) -> Result<usize, OcspError> {
        let counter = self.store.revocation_counter(&self.issuer_key_id).await?;
        let observed_at = unix_now();
        let mut rows = self
            .store
            .certificate_status_changes(&self.issuer_key_id, since)
            .await?;
        if *revocations_seen != Some(counter) {
            rows.extend(
                self.store
                    .revoked_statuses(&self.issuer_key_id, observed_at)
                    .await?,
            );
            rows.sort_by(|a, b| a.serial.cmp(&b.serial));
            rows.dedup_by(|a, b| a.serial == b.serial);
        }
        let responder = self.delegation.current();
        if rows
            .iter()
            .any(|r| r.serial == responder.serial && r.status == CertStatus::Revoked)
        {
            tracing::warn!(serial = %responder.serial, "the OCSP responder certificate was revoked: renewing it and re-signing every response");
            self.delegation.renew_if_due(true).await?;
            self.resign_everything.store(true, Ordering::SeqCst);
            self.sweep_now.notify_one();
        }
        // Only status changes and new certificates: ageing is the sweep's business. Status
        // changes are signed now; a new certificate's "good" waits for a pause in enrollments.
        let (new, changed): (Vec<Candidate>, Vec<Candidate>) = self
            .candidates(&rows, observed_at, i64::MIN)
            .into_iter()
            .partition(|c| c.state == CertState::Good && self.cache.state(&c.serial).is_none());
        let mut signed = self.presign(changed, observed_at).await?;
        signed += self.presign_new(new, observed_at).await?;
        *revocations_seen = Some(counter);
        Ok(signed)
    }

    /// Pre-signs new certificates' "good" responses when no enrollment is in progress
    /// ([`DEFER_SLICE`] per poll), or all of them when the oldest has waited
    /// [`DEFER_MAX_SECS`] or [`DEFER_MAX_COUNT`] are waiting.
    ///
    /// Why: a pre-signed response costs a signature, as much as the certificate itself, and
    /// signing it while enrollments queue takes that core from them (9 % of the CA's CPU per
    /// enrollment, docs/performance.md). Nobody asks about a certificate in the second it is
    /// issued; if someone does, it is signed live for them, bounded by
    /// `revocation.ocsp_live_signing_concurrency` (tryLater beyond), so a burst of queries for
    /// new serials cannot become a signing storm either.
    async fn presign_new(&self, new: Vec<Candidate>, observed_at: i64) -> Result<usize, OcspError> {
        let due = {
            let mut deferred = self
                .deferred
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            deferred.add(new, observed_at);
            let (idle, now) = (self.enrollments.is_idle(), unix_now());
            if !deferred.is_due(idle, now) {
                return Ok(0);
            }
            deferred.take(idle, now)
        };
        let mut signed = 0;
        for (observed_at, candidates) in due {
            // Signed live (or revoked and re-signed) meanwhile: the cache has it already.
            let candidates: Vec<Candidate> = candidates
                .into_iter()
                .filter(|c| self.cache.state(&c.serial).is_none())
                .collect();
            // Signed as read then: a later status (a revocation since) wins in the cache.
            signed += self.presign(candidates, observed_at).await?;
        }
        Ok(signed)
    }

    /// The refresher: a sweep at start-up (warming the cache in batches while requests are
    /// already answered) and then every `sweep_interval`, and a poll every `poll`.
    pub async fn run(self: std::sync::Arc<Self>, poll: Duration) {
        let sweeper = {
            let responder = std::sync::Arc::clone(&self);
            async move { responder.run_sweeps().await }
        };
        let poller = async move { self.run_polls(poll).await };
        tokio::join!(sweeper, poller);
    }

    fn sweep_interval(&self) -> Duration {
        Duration::from_secs(u64::try_from(self.validity_secs / 8).unwrap_or(0).max(5))
    }

    async fn run_sweeps(&self) {
        let interval = self.sweep_interval();
        // Re-signed when at least this old, so that with one sweep per interval no response
        // is served past half its validity.
        let refresh_age = (self.validity_secs / 2 - interval.as_secs() as i64).max(1);
        loop {
            let started = Instant::now();
            let age = if self.resign_everything.swap(false, Ordering::SeqCst) {
                i64::MIN / 2
            } else {
                refresh_age
            };
            let swept = self.sweep(age).await;
            let swept_ok = swept.is_ok();
            match swept {
                Ok(signed) => {
                    self.warm.store(true, Ordering::SeqCst);
                    if signed > 0 {
                        tracing::info!(
                            signed,
                            cached = self.cache.len(),
                            elapsed_ms = started.elapsed().as_millis() as u64,
                            "OCSP responses pre-signed"
                        );
                    }
                }
                Err(e) => tracing::warn!(error = %e, "OCSP sweep failed"),
            }
            // Renewal first, so that the next sweep signs with the new certificate.
            let renewed = self.delegation.renew_if_due(false).await;
            if let Err(e) = &renewed {
                tracing::warn!(error = %e, "OCSP responder certificate renewal failed");
            }
            // A sweep or renewal that failed (the key or the database down) is tried again
            // soon, not an interval later: responses must not age while they recover.
            let next = if swept_ok && renewed.is_ok() {
                interval
            } else {
                interval.min(SWEEP_RETRY)
            };
            tokio::select! {
                _ = tokio::time::sleep(next) => {}
                _ = self.sweep_now.notified() => {}
            }
        }
    }

    async fn run_polls(&self, poll: Duration) {
        let mut since = unix_now() - POLL_OVERLAP_SECS;
        let mut revocations_seen = None;
        loop {
            tokio::time::sleep(poll).await;
            if !self.store.availability().is_available() {
                // The outage is logged once, by the circuit; `since` stays, so nothing is
                // missed when the database is back.
                continue;
            }
            let started = unix_now();
            match self.poll_changes(since, &mut revocations_seen).await {
                Ok(signed) => {
                    since = started - POLL_OVERLAP_SECS;
                    // Every cached status is now known to be current as of this poll's read.
                    self.confirmed_at.store(started, Ordering::SeqCst);
                    if signed > 0 {
                        tracing::debug!(
                            signed,
                            "OCSP responses signed for new or revoked certificates"
                        );
                    }
                }
                Err(e) => tracing::warn!(error = %e, "OCSP poll failed"),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::request::IssuerHashes;
    use super::*;

    fn entry(state: CertState, observed_at: i64, not_after: i64) -> CachedCertificate {
        use crate::issuance::software_ca::{SoftwareCa, name, new_key};
        use crate::signer::Signer as _;
        let ca = SoftwareCa::self_signed("CN=Cache Test CA", 1).expect("CA");
        let (key, _) = new_key().expect("key");
        let der = ca
            .issue(
                name("CN=Responder").expect("name"),
                key.public_key(),
                86_400,
                Vec::new(),
            )
            .expect("responder certificate");
        let identity = signing::ResponderIdentity::new(
            std::sync::Arc::new(key),
            &der,
            attestca_core::serial::Serial::from_octets(&[1]),
            0,
            i64::MAX / 2,
        )
        .expect("identity");
        let issuer = IssuerHashes::of(ca.certificate()).expect("hashes");
        let answer = SingleAnswer {
            cert_id: issuer
                .cert_id(CertIdHash::Sha1, &SerialKey::new(&[7]).expect("serial"))
                .expect("id"),
            state,
        };
        CachedCertificate {
            state,
            not_after,
            sha1: signing::sign(&identity, &[answer], observed_at, 3600, None).expect("sign"),
            sha256: None,
        }
    }

    #[test]
    fn new_certificates_wait_for_a_pause_a_minute_or_a_full_queue() {
        let new = |n: u8| {
            (0..n)
                .map(|i| Candidate {
                    serial: SerialKey::new(&[i + 1]).expect("serial"),
                    state: CertState::Good,
                    not_after: i64::MAX,
                })
                .collect::<Vec<_>>()
        };
        let mut deferred = Deferred::default();
        assert!(!deferred.is_due(true, 0), "nothing waits");
        deferred.add(new(3), 100);
        assert!(!deferred.is_due(false, 100), "enrollments in progress");
        assert!(deferred.is_due(true, 100), "a pause");
        assert!(!deferred.is_due(false, 100 + DEFER_MAX_SECS - 1));
        assert!(
            deferred.is_due(false, 100 + DEFER_MAX_SECS),
            "waited long enough"
        );
        deferred.add(new(2), 130);
        let taken = deferred.take(true, 130);
        assert_eq!(
            taken
                .iter()
                .map(|(at, c)| (*at, c.len()))
                .collect::<Vec<_>>(),
            [(100, 3), (130, 2)],
            "each batch keeps when its status was read"
        );
        assert!(!deferred.is_due(true, 1_000), "taken");

        // After a long burst, a pause signs a slice, oldest first; an overdue queue, all.
        let many = |n: usize| {
            (0..n)
                .map(|i| Candidate {
                    serial: SerialKey::new(&(i as u32 + 1).to_be_bytes()).expect("serial"),
                    state: CertState::Good,
                    not_after: i64::MAX,
                })
                .collect::<Vec<_>>()
        };
        deferred.add(many(1_500), 300);
        deferred.add(many(1_500), 301);
        let slice = deferred.take(true, 302);
        assert_eq!(
            slice
                .iter()
                .map(|(at, c)| (*at, c.len()))
                .collect::<Vec<_>>(),
            [(300, 1_500), (301, DEFER_SLICE - 1_500)]
        );
        assert_eq!(deferred.count, 3_000 - DEFER_SLICE);
        let rest = deferred.take(true, 301 + DEFER_MAX_SECS);
        assert_eq!(
            rest.iter().map(|(_, c)| c.len()).sum::<usize>(),
            3_000 - DEFER_SLICE
        );
        assert_eq!(deferred.count, 0);

        deferred.count = DEFER_MAX_COUNT - 1;
        deferred.add(new(1), 200);
        assert!(deferred.is_due(false, 200), "a full queue");
    }

    #[test]
    fn a_later_observation_wins_and_an_earlier_one_is_dropped() {
        let cache = ResponseCache::default();
        let serial = SerialKey::new(&[7]).expect("serial");
        let revoked = CertState::Revoked {
            at: 150,
            reason: None,
        };
        cache.store(vec![(serial, entry(revoked, 200, 10_000))]);
        // A sweep that read the store before the revocation must not undo it.
        cache.store(vec![(serial, entry(CertState::Good, 100, 10_000))]);
        assert_eq!(cache.state(&serial), Some((revoked, 200)));
        // Nor may a response signed on a cache miss.
        cache.store_if_absent(serial, entry(CertState::Good, 300, 10_000));
        assert_eq!(cache.state(&serial), Some((revoked, 200)));
        assert!(!cache.needs_signing(&serial, revoked, 199));
        assert!(cache.needs_signing(&serial, revoked, 200), "due");
        assert!(cache.needs_signing(&serial, CertState::Good, 0), "changed");
    }

    #[test]
    fn sha256_responses_join_a_matching_entry_and_expired_entries_leave() {
        let cache = ResponseCache::default();
        let serial = SerialKey::new(&[7]).expect("serial");
        assert!(matches!(
            cache.lookup(&serial, CertIdHash::Sha1),
            Lookup::Miss
        ));
        cache.store(vec![(serial, entry(CertState::Good, 100, 1_000))]);
        assert!(matches!(
            cache.lookup(&serial, CertIdHash::Sha1),
            Lookup::Hit(_)
        ));
        assert!(matches!(
            cache.lookup(&serial, CertIdHash::Sha256),
            Lookup::Known(CertState::Good)
        ));
        let stale = CertState::Revoked {
            at: 1,
            reason: None,
        };
        cache.add_sha256(&serial, stale, entry(stale, 100, 1_000).sha1);
        assert!(matches!(
            cache.lookup(&serial, CertIdHash::Sha256),
            Lookup::Known(_)
        ));
        cache.add_sha256(
            &serial,
            CertState::Good,
            entry(CertState::Good, 101, 1_000).sha1,
        );
        assert!(matches!(
            cache.lookup(&serial, CertIdHash::Sha256),
            Lookup::Hit(_)
        ));
        assert_eq!(cache.remove_expired(999), 0);
        assert_eq!(cache.remove_expired(1_000), 1);
        assert!(cache.is_empty());
    }
}
