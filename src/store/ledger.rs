//! The durable write path: certificates and enrollment events committed in batches.
//!
//! Every request hands its records to one writer task and waits for the commit. The writer
//! takes whatever has queued up (up to `batch_max`) and commits it in one transaction, so under
//! load many enrollments share one commit (one fsync) instead of paying for their own; when the
//! CA is idle a batch is a single record and nothing waits for a timer.
//!
//! The writer is also where "issue once" is decided: the `issued_requests` primary key makes a
//! second certificate for the same rig and CSR within the retry window impossible, even across
//! instances sharing one PostgreSQL.

use sqlx::Any;
use sqlx::Transaction;
use tokio::sync::{mpsc, oneshot};

use super::{CertificateRecord, EnrollmentEvent, Store, StoreError};

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
    AlreadyIssued { serial: String },
    /// The random serial already exists (astronomically rare): nothing was stored; issue again.
    SerialCollision,
}

struct Job {
    entry: LedgerEntry,
    reply: oneshot::Sender<Result<Committed, String>>,
}

/// Handle to the writer task.
#[derive(Clone)]
pub struct Ledger {
    sender: mpsc::Sender<Job>,
}

impl Ledger {
    /// Starts the writer task.
    pub fn start(store: Store, batch_max: usize) -> Self {
        let batch_max = batch_max.max(1);
        let (sender, receiver) = mpsc::channel(batch_max * 4);
        tokio::spawn(run_writer(store, receiver, batch_max));
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
            Ok(Err(message)) => Err(StoreError::Database(sqlx::Error::Protocol(message))),
            Err(_) => Err(StoreError::WriterGone),
        }
    }
}

async fn run_writer(store: Store, mut receiver: mpsc::Receiver<Job>, batch_max: usize) {
    let mut jobs = Vec::with_capacity(batch_max);
    while let Some(first) = receiver.recv().await {
        jobs.push(first);
        while jobs.len() < batch_max {
            match receiver.try_recv() {
                Ok(job) => jobs.push(job),
                Err(_) => break,
            }
        }
        let started = std::time::Instant::now();
        let written = write_batch(&store, &jobs).await;
        crate::metrics::METRICS
            .db_query_duration
            .with_label_values(&["ledger_commit"])
            .observe(started.elapsed().as_secs_f64());
        match written {
            Ok(outcomes) => {
                for (job, outcome) in jobs.drain(..).zip(outcomes) {
                    let _ = job.reply.send(Ok(outcome));
                }
            }
            Err(e) => {
                tracing::error!(error = %e, records = jobs.len(), "database commit failed");
                let message = e.to_string();
                for job in jobs.drain(..) {
                    let _ = job.reply.send(Err(message.clone()));
                }
            }
        }
    }
}

async fn write_batch(store: &Store, jobs: &[Job]) -> Result<Vec<Committed>, sqlx::Error> {
    let mut tx = store.pool().begin().await?;
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
            } => write_issued(&mut tx, certificate, event, *retry_window_start).await?,
        };
        outcomes.push(outcome);
    }
    tx.commit().await?;
    Ok(outcomes)
}

async fn write_issued(
    tx: &mut Transaction<'static, Any>,
    c: &CertificateRecord,
    event: &EnrollmentEvent,
    retry_window_start: i64,
) -> Result<Committed, sqlx::Error> {
    let inserted = sqlx::query(
        "INSERT INTO certificates (serial, der, issuer_key_id, subject, sans, spki_sha256, \
         profile, not_before, not_after, status, requester, device_identity, csr_sha256, issued_at, \
         predecessor_serial) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, 'active', $10, $11, $12, $13, $14) \
         ON CONFLICT (serial) DO NOTHING",
    )
    .bind(&c.serial)
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
    .bind(&c.predecessor_serial)
    .execute(&mut **tx)
    .await?;
    if inserted.rows_affected() == 0 {
        return Ok(Committed::SerialCollision);
    }
    let claimed = sqlx::query(
        "INSERT INTO issued_requests (requester, csr_sha256, serial, issued_at) \
         VALUES ($1, $2, $3, $4) \
         ON CONFLICT (requester, csr_sha256) DO UPDATE \
         SET serial = excluded.serial, issued_at = excluded.issued_at \
         WHERE issued_requests.issued_at < $5",
    )
    .bind(&c.requester)
    .bind(&c.csr_sha256)
    .bind(&c.serial)
    .bind(c.issued_at)
    .bind(retry_window_start)
    .execute(&mut **tx)
    .await?;
    if claimed.rows_affected() == 1 {
        insert_event(tx, event).await?;
        return Ok(Committed::Stored);
    }
    // Someone (a concurrent request, another instance) issued for this CSR first: keep theirs.
    sqlx::query("DELETE FROM certificates WHERE serial = $1")
        .bind(&c.serial)
        .execute(&mut **tx)
        .await?;
    let serial: String = sqlx::query_scalar(
        "SELECT serial FROM issued_requests WHERE requester = $1 AND csr_sha256 = $2",
    )
    .bind(&c.requester)
    .bind(&c.csr_sha256)
    .fetch_one(&mut **tx)
    .await?;
    let mut retried = event.clone();
    retried.outcome = "retried".into();
    retried.reason = "enroll.retry".into();
    retried.serial = Some(serial.clone());
    insert_event(tx, &retried).await?;
    Ok(Committed::AlreadyIssued { serial })
}

async fn insert_event(
    tx: &mut Transaction<'static, Any>,
    e: &EnrollmentEvent,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "INSERT INTO enrollment_events (occurred_at, requester, operation, profile, outcome, \
         reason, detail, serial, csr_sha256, peer, evidence_sha256, attestation_format, vendor, \
         device_identity, predecessor_serial) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15)",
    )
    .bind(e.occurred_at)
    .bind(&e.requester)
    .bind(&e.operation)
    .bind(&e.profile)
    .bind(&e.outcome)
    .bind(&e.reason)
    .bind(&e.detail)
    .bind(&e.serial)
    .bind(&e.csr_sha256)
    .bind(&e.peer)
    .bind(&e.evidence_sha256)
    .bind(&e.attestation_format)
    .bind(&e.vendor)
    .bind(&e.device_identity)
    .bind(&e.predecessor_serial)
    .execute(&mut **tx)
    .await?;
    Ok(())
}
