//! The durable write path: certificates and enrollment events committed in batches.
//!
//! Every request hands its records to the ledger and waits for the commit. A writer takes
//! whatever has queued up (up to `batch_max`) and commits it in one transaction, so under load
//! many enrollments share one commit (one fsync) instead of paying for their own; when the CA
//! is idle a batch is a single record and nothing waits for a timer.
//!
//! Several writers run at once on PostgreSQL (`database.writers`): a batch is a round trip per
//! statement plus the commit's fsync, and one writer alone left the CA's cores idle while
//! enrollments queued behind it (docs/performance.md). Writers take batches in turn from one
//! queue; each sorts its batch by (requester, CSR) so that two transactions claiming the same
//! pair lock in the same order, and a batch the database still aborts as a deadlock or
//! serialization failure is written again once. SQLite has one writer at a time anyway.
//!
//! The writer is also where "issue once" is decided: the `issued_requests` primary key makes a
//! second certificate for the same rig and CSR within the retry window impossible, even across
//! writers and across instances sharing one PostgreSQL.

use std::sync::Arc;

use attestca_core::reason::Reason;
use attestca_core::record::EventOutcome;
use attestca_core::serial::Serial;
use sqlx::Any;
use sqlx::Transaction;
use tokio::sync::{Mutex, mpsc, oneshot};

use super::{CertificateRecord, Engine, EnrollmentEvent, Store, StoreError};

/// What to commit.
#[derive(Debug)]
pub enum LedgerEntry {
    /// A certificate about to be returned, with its event. `retry_window_start` is the oldest
    /// `issued_at` of an earlier issuance for the same rig and CSR that counts as "already
    /// issued".
    Issued {
        certificate: Box<CertificateRecord>,
        event: EnrollmentEvent,
        retry_window_start: i64,
        /// The stateless nonce the evidence carried ([`attestca_core::nonce`]): recorded on
        /// the certificate row under a unique index, which is what makes it single use.
        nonce: Option<Vec<u8>>,
    },
    /// An event without a certificate (a refusal, a retry, a failure).
    Event(EnrollmentEvent),
}

/// What the commit decided.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Committed {
    /// Everything in the entry is durably stored.
    Stored,
    /// The same rig already got a certificate for this CSR within the window: the new
    /// certificate was NOT stored (and must not be returned); the event was stored as a retry.
    AlreadyIssued { serial: Serial },
    /// The random serial already exists (astronomically rare): nothing was stored; issue again.
    SerialCollision,
    /// Another certificate was committed with the same stateless nonce (on this instance or
    /// another), for another CSR: nothing was stored; the request is refused.
    NonceReused,
}

struct Job {
    entry: LedgerEntry,
    /// The transparency log entry of an issued certificate (when the log is on).
    log_entry: Option<Vec<u8>>,
    /// The failure as text, and whether it was the database's (connection, server) rather
    /// than the batch's.
    reply: oneshot::Sender<Result<Committed, (String, bool)>>,
}

/// Handle to the writer task.
#[derive(Clone)]
pub struct Ledger {
    sender: mpsc::Sender<Job>,
    log_issuance: bool,
}

impl Ledger {
    /// Starts `writers` writer tasks (at least one) sharing one queue. With `log_issuance`,
    /// every issued certificate's transparency log entry is written in its commit
    /// (`log_pending`, docs/transparency.md).
    pub fn start(store: Store, batch_max: usize, writers: usize, log_issuance: bool) -> Self {
        let batch_max = batch_max.max(1);
        let writers = writers.max(1);
        let (sender, receiver) = mpsc::channel(batch_max * 4 * writers);
        let queue = Arc::new(Mutex::new(receiver));
        for _ in 0..writers {
            tokio::spawn(run_writer(store.clone(), Arc::clone(&queue), batch_max));
        }
        Self {
            sender,
            log_issuance,
        }
    }

    /// Commits an entry and waits until it is durable.
    pub async fn commit(&self, entry: LedgerEntry) -> Result<Committed, StoreError> {
        let log_entry = match entry.issued() {
            Some(issued) if self.log_issuance => Some(log_entry(issued.c, issued.event)?),
            _ => None,
        };
        let (reply, answer) = oneshot::channel();
        self.sender
            .send(Job {
                entry,
                log_entry,
                reply,
            })
            .await
            .map_err(|_| StoreError::WriterGone)?;
        match answer.await {
            Ok(Ok(c)) => Ok(c),
            Ok(Err((_, true))) => Err(StoreError::Unavailable { down_secs: 0 }),
            Ok(Err((message, false))) => Err(StoreError::Commit(message)),
            Err(_) => Err(StoreError::WriterGone),
        }
    }
}

/// Takes the next batch: waits for one job, then whatever else has queued, up to `batch_max`.
/// `None` when every sender is gone.
async fn next_batch(queue: &Mutex<mpsc::Receiver<Job>>, batch_max: usize) -> Option<Vec<Job>> {
    let mut receiver = queue.lock().await;
    let first = receiver.recv().await?;
    let mut jobs = Vec::with_capacity(batch_max);
    jobs.push(first);
    while jobs.len() < batch_max {
        match receiver.try_recv() {
            Ok(job) => jobs.push(job),
            Err(_) => break,
        }
    }
    Some(jobs)
}

async fn run_writer(store: Store, queue: Arc<Mutex<mpsc::Receiver<Job>>>, batch_max: usize) {
    while let Some(mut jobs) = next_batch(&queue, batch_max).await {
        // One lock order for every writer: claims of the same (requester, CSR) in two batches
        // cannot wait on each other in a cycle.
        jobs.sort_by(|a, b| a.entry.claim().cmp(&b.entry.claim()));
        let started = std::time::Instant::now();
        let mut written = write_batch(&store, &jobs).await;
        if written.as_ref().is_err_and(is_transient) {
            written = write_batch(&store, &jobs).await;
        }
        crate::metrics::METRICS
            .db_query_duration
            .with_label_values(&["ledger_commit"])
            .observe(started.elapsed().as_secs_f64());
        match written {
            Ok(outcomes) => {
                for (job, outcome) in jobs.into_iter().zip(outcomes) {
                    let _ = job.reply.send(Ok(outcome));
                }
            }
            Err(e) => {
                tracing::error!(error = %e, records = jobs.len(), "database commit failed");
                store.report(&e);
                let failure = (e.to_string(), e.is_connection_fault());
                for job in jobs {
                    let _ = job.reply.send(Err(failure.clone()));
                }
            }
        }
    }
}

/// A failure the database asks the client to retry: deadlock detected, serialization failure.
fn is_transient(e: &StoreError) -> bool {
    matches!(e, StoreError::Database(e) if e
        .as_database_error()
        .and_then(|d| d.code())
        .is_some_and(|code| code == "40P01" || code == "40001"))
}

impl LedgerEntry {
    /// The `issued_requests` row this entry claims, if any (the order writers lock in).
    fn claim(&self) -> Option<(&str, &str, &[u8])> {
        self.issued().map(|issued| issued.claim())
    }

    fn issued(&self) -> Option<Issued<'_>> {
        match self {
            LedgerEntry::Issued {
                certificate,
                event,
                retry_window_start,
                nonce,
            } => Some(Issued {
                c: certificate,
                event,
                retry_window_start: *retry_window_start,
                nonce: nonce.as_deref(),
                log_entry: None,
            }),
            LedgerEntry::Event(_) => None,
        }
    }
}

async fn write_batch(store: &Store, jobs: &[Job]) -> Result<Vec<Committed>, StoreError> {
    let mut tx = store.db()?.begin().await?;
    let mut outcomes = vec![Committed::Stored; jobs.len()];
    let events: Vec<&EnrollmentEvent> = jobs
        .iter()
        .filter_map(|job| match &job.entry {
            LedgerEntry::Event(event) => Some(event),
            LedgerEntry::Issued { .. } => None,
        })
        .collect();
    insert_events(&mut tx, &events).await?;
    let issued: Vec<(usize, Issued<'_>)> = jobs
        .iter()
        .enumerate()
        .filter_map(|(i, job)| {
            job.entry.issued().map(|issued| {
                let log_entry = job.log_entry.as_deref();
                (
                    i,
                    Issued {
                        log_entry,
                        ..issued
                    },
                )
            })
        })
        .collect();
    match store.engine() {
        Engine::Postgres => write_issued_postgres(&mut tx, &issued, &mut outcomes).await?,
        Engine::Sqlite => {
            for (i, entry) in &issued {
                outcomes[*i] = write_issued(&mut tx, entry).await?;
            }
        }
    }
    tx.commit().await?;
    Ok(outcomes)
}

/// Statements hold at most this many rows, and their sizes are powers of two: a batch of any
/// size is a handful of statements, and each connection prepares at most a few shapes of each.
const ROWS_PER_STATEMENT_MAX: usize = 64;

/// Splits `rows` into chunks of power-of-two sizes, largest first.
pub(super) fn statement_chunks<T>(mut rows: &[T]) -> impl Iterator<Item = &[T]> {
    std::iter::from_fn(move || {
        if rows.is_empty() {
            return None;
        }
        let size = ROWS_PER_STATEMENT_MAX.min(1 << rows.len().ilog2());
        let (chunk, rest) = rows.split_at(size);
        rows = rest;
        Some(chunk)
    })
}

/// `($first, …), (…)`: `rows` rows of `columns` placeholders, numbered from `first`.
pub(super) fn placeholders(rows: usize, columns: usize, first: usize) -> String {
    let mut text = String::with_capacity(rows * columns * 5);
    for row in 0..rows {
        text.push_str(if row == 0 { "(" } else { ", (" });
        for column in 0..columns {
            if column > 0 {
                text.push_str(", ");
            }
            text.push_str(&format!("${}", first + row * columns + column));
        }
        text.push(')');
    }
    text
}

/// [`write_issued`] for many certificates in one statement on PostgreSQL: the certificate
/// inserts, the claims and the events of up to [`ROWS_PER_STATEMENT_MAX`] enrollments are one
/// round trip and one executor run (data-modifying CTEs; SQLite has none). Under load a batch's
/// time was mostly per-statement work, each statement waiting for a core shared with the
/// database. What the statement cannot settle — a certificate not stored (serial or nonce
/// taken) or a claim held by an earlier issue — goes through the same per-entry steps as on
/// SQLite, in the same transaction. Same outcomes, same rows.
///
/// The batch is sorted by claim; a second entry for the same claim (a rig's retry racing its
/// first request) is written after the statement, so one statement never claims a key twice.
async fn write_issued_postgres(
    tx: &mut Transaction<'static, Any>,
    issued: &[(usize, Issued<'_>)],
    outcomes: &mut [Committed],
) -> Result<(), sqlx::Error> {
    let (first, repeats): (Vec<_>, Vec<_>) = issued
        .iter()
        .enumerate()
        .partition(|(k, (_, entry))| *k == 0 || issued[k - 1].1.claim() != entry.claim());
    let first: Vec<&(usize, Issued<'_>)> = first.into_iter().map(|(_, e)| e).collect();
    for chunk in statement_chunks(&first) {
        let settled = insert_issued_rows(tx, chunk).await?;
        for ((i, entry), (stored, claimed)) in chunk.iter().map(|e| (e.0, &e.1)).zip(settled) {
            outcomes[i] = if !stored {
                not_stored(tx, entry).await?
            } else if claimed {
                Committed::Stored
            } else {
                keep_the_earlier_issue(tx, entry.c, entry.event).await?
            };
        }
    }
    for (_, (i, entry)) in repeats {
        outcomes[*i] = write_issued(tx, entry).await?;
    }
    Ok(())
}

/// One multi-row statement: inserts the certificates (those whose serial and nonce are free),
/// claims their (requester, profile, CSR) unless an issue within its retry window holds the
/// claim, and records the events of those claimed. Returns (stored, claimed) per row.
async fn insert_issued_rows(
    tx: &mut Transaction<'static, Any>,
    rows: &[&(usize, Issued<'_>)],
) -> Result<Vec<(bool, bool)>, sqlx::Error> {
    use sqlx::Row;
    const COLUMNS: usize = 33;
    let sql = format!(
        "WITH input (n, serial, der, issuer_key_id, subject, sans, spki_sha256, profile, \
           not_before, not_after, requester, device_identity, csr_sha256, issued_at, \
           predecessor_serial, nonce, window_start, e_occurred_at, e_requester, e_operation, \
           e_profile, e_outcome, e_reason, e_detail, e_serial, e_csr_sha256, e_peer, \
           e_evidence_sha256, e_attestation_format, e_vendor, e_device_identity, \
           e_predecessor_serial, log_entry) AS (VALUES {}), \
         cert AS ( \
           INSERT INTO certificates (serial, der, issuer_key_id, subject, sans, spki_sha256, \
             profile, not_before, not_after, status, requester, device_identity, csr_sha256, \
             issued_at, predecessor_serial, nonce) \
           SELECT serial, der, issuer_key_id, subject, sans, spki_sha256, profile, not_before, \
             not_after, 'active', requester, device_identity, csr_sha256, issued_at, \
             predecessor_serial, nonce FROM input ORDER BY n \
           ON CONFLICT DO NOTHING \
           RETURNING serial, requester, profile, csr_sha256, issued_at), \
         claim AS ( \
           INSERT INTO issued_requests (requester, profile, csr_sha256, serial, issued_at) \
           SELECT requester, profile, csr_sha256, serial, issued_at FROM cert \
           ON CONFLICT (requester, profile, csr_sha256) DO UPDATE \
           SET serial = excluded.serial, issued_at = excluded.issued_at \
           WHERE issued_requests.issued_at < \
             (SELECT window_start FROM input WHERE input.serial = excluded.serial) \
           RETURNING serial), \
         event AS ( \
           INSERT INTO enrollment_events (occurred_at, requester, operation, profile, outcome, \
             reason, detail, serial, csr_sha256, peer, evidence_sha256, attestation_format, \
             vendor, device_identity, predecessor_serial) \
           SELECT e_occurred_at, e_requester, e_operation, e_profile, e_outcome, e_reason, \
             e_detail, e_serial, e_csr_sha256, e_peer, e_evidence_sha256, \
             e_attestation_format, e_vendor, e_device_identity, e_predecessor_serial \
           FROM input JOIN claim USING (serial) ORDER BY n), \
         logged AS ( \
           INSERT INTO log_pending (serial, entry) \
           SELECT serial, log_entry FROM input JOIN claim USING (serial) \
           WHERE log_entry IS NOT NULL ORDER BY n) \
         SELECT n, EXISTS (SELECT 1 FROM cert WHERE cert.serial = input.serial) AS stored, \
           EXISTS (SELECT 1 FROM claim WHERE claim.serial = input.serial) AS claimed \
         FROM input ORDER BY n",
        placeholders(rows.len(), COLUMNS, 1)
    );
    // The text holds only placeholders: every value is bound.
    let mut query = sqlx::query(sqlx::AssertSqlSafe(sql));
    for (n, (_, entry)) in rows.iter().copied().enumerate() {
        query = bind_certificate(query.bind(n as i64), entry.c)
            .bind(entry.nonce)
            .bind(entry.retry_window_start);
        query = bind_event(query, entry.event).bind(entry.log_entry);
    }
    let settled = query.fetch_all(&mut **tx).await?;
    settled
        .iter()
        .map(|row| Ok((row.try_get("stored")?, row.try_get("claimed")?)))
        .collect()
}

async fn write_issued(
    tx: &mut Transaction<'static, Any>,
    issued: &Issued<'_>,
) -> Result<Committed, sqlx::Error> {
    let &Issued {
        c,
        event,
        retry_window_start,
        nonce,
        ..
    } = issued;
    let inserted = sqlx::query(
        "INSERT INTO certificates (serial, der, issuer_key_id, subject, sans, spki_sha256, \
         profile, not_before, not_after, status, requester, device_identity, csr_sha256, issued_at, \
         predecessor_serial, nonce) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, 'active', $10, $11, $12, $13, $14, $15) \
         ON CONFLICT DO NOTHING",
    );
    let inserted = bind_certificate(inserted, c)
        .bind(nonce)
        .execute(&mut **tx)
        .await?;
    if inserted.rows_affected() == 0 {
        return not_stored(tx, issued).await;
    }
    let claimed = sqlx::query(
        "INSERT INTO issued_requests (requester, profile, csr_sha256, serial, issued_at) \
         VALUES ($1, $2, $3, $4, $5) \
         ON CONFLICT (requester, profile, csr_sha256) DO UPDATE \
         SET serial = excluded.serial, issued_at = excluded.issued_at \
         WHERE issued_requests.issued_at < $6",
    )
    .bind(&c.requester)
    .bind(&c.profile)
    .bind(&c.csr_sha256)
    .bind(c.serial.as_str())
    .bind(c.issued_at)
    .bind(retry_window_start)
    .execute(&mut **tx)
    .await?;
    if claimed.rows_affected() == 1 {
        insert_event(tx, event).await?;
        if let Some(log_entry) = issued.log_entry {
            sqlx::query("INSERT INTO log_pending (serial, entry) VALUES ($1, $2)")
                .bind(c.serial.as_str())
                .bind(log_entry)
                .execute(&mut **tx)
                .await?;
        }
        return Ok(Committed::Stored);
    }
    keep_the_earlier_issue(tx, c, event).await
}

/// The transparency log entry of a certificate the ledger commits: the certificate and the
/// attestation record its event carries (docs/transparency.md).
fn log_entry(c: &CertificateRecord, e: &EnrollmentEvent) -> Result<Vec<u8>, StoreError> {
    use attestca_core::transparency::entry::{AttestationRecord, IssuanceEntry};
    let entry = IssuanceEntry {
        logged_at: u64::try_from(c.issued_at).unwrap_or(0),
        certificate: c.der.clone(),
        attestation: AttestationRecord {
            attested: e.attestation_format.is_some(),
            operation: e.operation.clone(),
            profile: c.profile.clone(),
            requester: c.requester.clone(),
            format: e.attestation_format.clone().unwrap_or_default(),
            vendor: e.vendor.clone().unwrap_or_default(),
            device_identity: c
                .device_identity
                .clone()
                .or_else(|| e.device_identity.clone())
                .unwrap_or_default(),
            evidence_sha256: e.evidence_sha256.clone().unwrap_or_default(),
        },
    };
    Ok(entry.encode()?)
}

/// A certificate with its event, as the writers commit it.
struct Issued<'a> {
    c: &'a CertificateRecord,
    event: &'a EnrollmentEvent,
    retry_window_start: i64,
    nonce: Option<&'a [u8]>,
    log_entry: Option<&'a [u8]>,
}

impl<'a> Issued<'a> {
    /// The `issued_requests` key: (requester, profile, CSR hash).
    fn claim(&self) -> (&'a str, &'a str, &'a [u8]) {
        (
            self.c.requester.as_str(),
            self.c.profile.as_str(),
            self.c.csr_sha256.as_slice(),
        )
    }
}

/// The certificate insert did nothing: either its serial exists (issue again), or its nonce was
/// spent — by a concurrent request for the same CSR (then that one's certificate is this
/// request's answer, as for any retry) or by another CSR (refused).
async fn not_stored(
    tx: &mut Transaction<'static, Any>,
    issued: &Issued<'_>,
) -> Result<Committed, sqlx::Error> {
    let &Issued {
        c,
        event,
        retry_window_start,
        ..
    } = issued;
    let serial_taken: Option<i32> =
        sqlx::query_scalar("SELECT 1 FROM certificates WHERE serial = $1")
            .bind(c.serial.as_str())
            .fetch_optional(&mut **tx)
            .await?;
    if serial_taken.is_some() {
        return Ok(Committed::SerialCollision);
    }
    let same_request: Option<i32> = sqlx::query_scalar(
        "SELECT 1 FROM issued_requests \
         WHERE requester = $1 AND profile = $2 AND csr_sha256 = $3 AND issued_at >= $4",
    )
    .bind(&c.requester)
    .bind(&c.profile)
    .bind(&c.csr_sha256)
    .bind(retry_window_start)
    .fetch_optional(&mut **tx)
    .await?;
    if same_request.is_some() {
        return keep_the_earlier_issue(tx, c, event).await;
    }
    Ok(Committed::NonceReused)
}

/// Someone (a concurrent request, another instance) issued for this CSR first: keep theirs,
/// drop the certificate just inserted, and record the event as a retry.
async fn keep_the_earlier_issue(
    tx: &mut Transaction<'static, Any>,
    c: &CertificateRecord,
    event: &EnrollmentEvent,
) -> Result<Committed, sqlx::Error> {
    sqlx::query("DELETE FROM certificates WHERE serial = $1")
        .bind(c.serial.as_str())
        .execute(&mut **tx)
        .await?;
    let serial: String = sqlx::query_scalar(
        "SELECT serial FROM issued_requests \
         WHERE requester = $1 AND profile = $2 AND csr_sha256 = $3",
    )
    .bind(&c.requester)
    .bind(&c.profile)
    .bind(&c.csr_sha256)
    .fetch_one(&mut **tx)
    .await?;
    let mut retried = event.clone();
    retried.outcome = EventOutcome::Retried;
    retried.reason = Reason::EnrollRetry.as_str().into();
    let serial = Serial::from_stored(serial);
    retried.serial = Some(serial.clone());
    insert_event(tx, &retried).await?;
    Ok(Committed::AlreadyIssued { serial })
}

const EVENT_COLUMNS: &str = "occurred_at, requester, operation, profile, outcome, reason, \
    detail, serial, csr_sha256, peer, evidence_sha256, attestation_format, vendor, \
    device_identity, predecessor_serial";

async fn insert_event(
    tx: &mut Transaction<'static, Any>,
    e: &EnrollmentEvent,
) -> Result<(), sqlx::Error> {
    insert_events(tx, &[e]).await
}

/// Events in multi-row inserts (one per [`statement_chunks`] chunk).
async fn insert_events(
    tx: &mut Transaction<'static, Any>,
    events: &[&EnrollmentEvent],
) -> Result<(), sqlx::Error> {
    for chunk in statement_chunks(events) {
        let sql = format!(
            "INSERT INTO enrollment_events ({EVENT_COLUMNS}) VALUES {}",
            placeholders(chunk.len(), 15, 1)
        );
        // The text holds only placeholders: every value is bound.
        let mut query = sqlx::query(sqlx::AssertSqlSafe(sql));
        for e in chunk {
            query = bind_event(query, e);
        }
        query.execute(&mut **tx).await?;
    }
    Ok(())
}

type AnyQuery<'q> = sqlx::query::Query<'q, Any, sqlx::any::AnyArguments>;

/// Binds a certificate row's 14 columns, in the order of every certificate insert here.
fn bind_certificate<'q>(query: AnyQuery<'q>, c: &'q CertificateRecord) -> AnyQuery<'q> {
    query
        .bind(c.serial.as_str())
        .bind(&c.der)
        .bind(&c.issuer_key_id)
        .bind(&c.subject)
        .bind(&c.sans)
        .bind(&c.spki_sha256)
        .bind(&c.profile)
        .bind(c.not_before)
        .bind(c.not_after)
        .bind(&c.requester)
        .bind(&c.device_identity)
        .bind(&c.csr_sha256)
        .bind(c.issued_at)
        .bind(c.predecessor_serial.as_ref().map(Serial::as_str))
}

/// Binds an enrollment event's 15 columns, in the order of every event insert here.
fn bind_event<'q>(query: AnyQuery<'q>, e: &'q EnrollmentEvent) -> AnyQuery<'q> {
    query
        .bind(e.occurred_at)
        .bind(&e.requester)
        .bind(&e.operation)
        .bind(&e.profile)
        .bind(e.outcome.as_str())
        .bind(&e.reason)
        .bind(&e.detail)
        .bind(e.serial.as_ref().map(Serial::as_str))
        .bind(&e.csr_sha256)
        .bind(&e.peer)
        .bind(&e.evidence_sha256)
        .bind(&e.attestation_format)
        .bind(&e.vendor)
        .bind(&e.device_identity)
        .bind(e.predecessor_serial.as_ref().map(Serial::as_str))
}
