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
#[derive(Debug, PartialEq, Eq)]
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
    /// The failure as text, and whether it was the database's (connection, server) rather
    /// than the batch's.
    reply: oneshot::Sender<Result<Committed, (String, bool)>>,
}

/// Handle to the writer task.
#[derive(Clone)]
pub struct Ledger {
    sender: mpsc::Sender<Job>,
}

impl Ledger {
    /// Starts `writers` writer tasks (at least one) sharing one queue.
    pub fn start(store: Store, batch_max: usize, writers: usize) -> Self {
        let batch_max = batch_max.max(1);
        let writers = writers.max(1);
        let (sender, receiver) = mpsc::channel(batch_max * 4 * writers);
        let queue = Arc::new(Mutex::new(receiver));
        for _ in 0..writers {
            tokio::spawn(run_writer(store.clone(), Arc::clone(&queue), batch_max));
        }
        Self { sender }
    }

    /// Commits an entry and waits until it is durable.
    pub async fn commit(&self, entry: LedgerEntry) -> Result<Committed, StoreError> {
        let (reply, answer) = oneshot::channel();
        self.sender
            .send(Job { entry, reply })
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
        match self {
            LedgerEntry::Issued { certificate, .. } => Some((
                certificate.requester.as_str(),
                certificate.profile.as_str(),
                certificate.csr_sha256.as_slice(),
            )),
            LedgerEntry::Event(_) => None,
        }
    }
}

async fn write_batch(store: &Store, jobs: &[Job]) -> Result<Vec<Committed>, StoreError> {
    let mut tx = store.db()?.begin().await?;
    let mut outcomes = Vec::with_capacity(jobs.len());
    for job in jobs {
        let outcome = match &job.entry {
            LedgerEntry::Event(event) => {
                insert_event(&mut tx, event).await?;
                Committed::Stored
            }
            LedgerEntry::Issued {
                certificate,
                event,
                retry_window_start,
                nonce,
            } => {
                let issued = Issued {
                    c: certificate,
                    event,
                    retry_window_start: *retry_window_start,
                    nonce: nonce.as_deref(),
                };
                match store.engine() {
                    Engine::Postgres => write_issued_postgres(&mut tx, issued).await?,
                    Engine::Sqlite => write_issued(&mut tx, issued).await?,
                }
            }
        };
        outcomes.push(outcome);
    }
    tx.commit().await?;
    Ok(outcomes)
}

/// [`write_issued`] in one statement on PostgreSQL: the certificate insert, the claim and the
/// event are one round trip instead of three (data-modifying CTEs; SQLite has none). Under load
/// a batch's time was mostly these round trips, each waiting for a core shared with the
/// database. Same outcomes, same rows.
async fn write_issued_postgres(
    tx: &mut Transaction<'static, Any>,
    issued: Issued<'_>,
) -> Result<Committed, sqlx::Error> {
    let Issued {
        c,
        event,
        retry_window_start,
        nonce,
    } = issued;
    use sqlx::Row;
    let query = sqlx::query(
        "WITH cert AS ( \
           INSERT INTO certificates (serial, der, issuer_key_id, subject, sans, spki_sha256, \
             profile, not_before, not_after, status, requester, device_identity, csr_sha256, \
             issued_at, predecessor_serial, nonce) \
           VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, 'active', $10, $11, $12, $13, $14, $31) \
           ON CONFLICT DO NOTHING RETURNING serial), \
         claim AS ( \
           INSERT INTO issued_requests (requester, profile, csr_sha256, serial, issued_at) \
           SELECT $10, $7, $12, serial, $13 FROM cert \
           ON CONFLICT (requester, profile, csr_sha256) DO UPDATE \
           SET serial = excluded.serial, issued_at = excluded.issued_at \
           WHERE issued_requests.issued_at < $15 RETURNING serial), \
         event AS ( \
           INSERT INTO enrollment_events (occurred_at, requester, operation, profile, outcome, \
             reason, detail, serial, csr_sha256, peer, evidence_sha256, attestation_format, \
             vendor, device_identity, predecessor_serial) \
           SELECT $16, $17, $18, $19, $20, $21, $22, $23, $24, $25, $26, $27, $28, $29, $30 \
           FROM claim) \
         SELECT (SELECT count(*) FROM cert) AS stored, (SELECT count(*) FROM claim) AS claimed",
    );
    let row = bind_event(bind_certificate(query, c).bind(retry_window_start), event)
        .bind(nonce)
        .fetch_one(&mut **tx)
        .await?;
    let stored: i64 = row.try_get("stored")?;
    let claimed: i64 = row.try_get("claimed")?;
    if stored == 0 {
        return not_stored(tx, c, event, retry_window_start).await;
    }
    if claimed == 1 {
        return Ok(Committed::Stored);
    }
    keep_the_earlier_issue(tx, c, event).await
}

async fn write_issued(
    tx: &mut Transaction<'static, Any>,
    issued: Issued<'_>,
) -> Result<Committed, sqlx::Error> {
    let Issued {
        c,
        event,
        retry_window_start,
        nonce,
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
        return not_stored(tx, c, event, retry_window_start).await;
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
        return Ok(Committed::Stored);
    }
    keep_the_earlier_issue(tx, c, event).await
}

/// A certificate with its event, as the writers commit it.
struct Issued<'a> {
    c: &'a CertificateRecord,
    event: &'a EnrollmentEvent,
    retry_window_start: i64,
    nonce: Option<&'a [u8]>,
}

/// The certificate insert did nothing: either its serial exists (issue again), or its nonce was
/// spent — by a concurrent request for the same CSR (then that one's certificate is this
/// request's answer, as for any retry) or by another CSR (refused).
async fn not_stored(
    tx: &mut Transaction<'static, Any>,
    c: &CertificateRecord,
    event: &EnrollmentEvent,
    retry_window_start: i64,
) -> Result<Committed, sqlx::Error> {
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

async fn insert_event(
    tx: &mut Transaction<'static, Any>,
    e: &EnrollmentEvent,
) -> Result<(), sqlx::Error> {
    let query = sqlx::query(
        "INSERT INTO enrollment_events (occurred_at, requester, operation, profile, outcome, \
         reason, detail, serial, csr_sha256, peer, evidence_sha256, attestation_format, vendor, \
         device_identity, predecessor_serial) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15)",
    );
    bind_event(query, e).execute(&mut **tx).await?;
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
