//! Storage of certificates and enrollment events, in PostgreSQL or SQLite, through one schema.
//!
//! Queries are written once in the SQL both engines accept (`$n` parameters, `ON CONFLICT`,
//! `RETURNING`) and run through sqlx's `Any` driver; the schema is one migration set per engine
//! under `migrations/`, applied at start-up. Writes that must be durable before a certificate
//! leaves the CA go through the batching [`ledger::Ledger`].

pub mod availability;
pub mod ledger;

use std::str::FromStr;

use secrecy::{ExposeSecret, SecretString};
use sqlx::any::{AnyConnectOptions, AnyPoolOptions};
use sqlx::{AnyPool, Row};

/// Errors from the database.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("database: {0}")]
    Database(#[from] sqlx::Error),
    #[error("database migration: {0}")]
    Migration(#[from] sqlx::migrate::MigrateError),
    #[error("database URL must start with postgres:// or sqlite:// (got {0:?})")]
    UnsupportedUrl(String),
    #[error("the database writer has stopped")]
    WriterGone,
    /// A batched commit failed (the ledger's writer reports it as text: one failure answers
    /// every request in the batch).
    #[error("database commit failed: {0}")]
    Commit(String),
    /// The circuit is open: the database did not answer, and is not asked until it does.
    #[error("the database has been unavailable for {down_secs} s")]
    Unavailable { down_secs: u64 },
}

impl StoreError {
    /// Whether this says the database (its connection, its server) failed, rather than the
    /// query: such errors open the circuit (see [`availability`]).
    pub fn is_connection_fault(&self) -> bool {
        match self {
            StoreError::Unavailable { .. } => true,
            StoreError::Database(e) => match e {
                sqlx::Error::Io(_)
                | sqlx::Error::Tls(_)
                | sqlx::Error::PoolClosed
                | sqlx::Error::WorkerCrashed => true,
                // Class 08 (connection exception); 57P01-57P03: the server is shutting down,
                // crashed, or not accepting connections yet.
                // Not PoolTimedOut: a pool busy under load is not a database that is down (the
                // monitor tells those apart).
                sqlx::Error::Database(db) => db.code().is_some_and(|code| {
                    code.starts_with("08") || matches!(&*code, "57P01" | "57P02" | "57P03")
                }),
                _ => false,
            },
            _ => false,
        }
    }
}

/// An exclusive lock among the instances sharing the database, held until dropped
/// ([`Store::exclusive`]).
pub struct ExclusiveLock {
    _held: Option<sqlx::Transaction<'static, sqlx::Any>>,
}

/// Which engine is behind the pool.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Engine {
    Postgres,
    Sqlite,
}

impl Engine {
    /// Short name for logs.
    pub fn name(self) -> &'static str {
        match self {
            Engine::Postgres => "postgresql",
            Engine::Sqlite => "sqlite",
        }
    }
}

/// A certificate as stored.
#[derive(Clone, Debug, Default)]
pub struct CertificateRecord {
    pub serial: String,
    pub der: Vec<u8>,
    pub issuer_key_id: Vec<u8>,
    pub subject: String,
    pub sans: String,
    pub spki_sha256: Vec<u8>,
    pub profile: String,
    pub not_before: i64,
    pub not_after: i64,
    pub status: String,
    pub revoked_at: Option<i64>,
    pub revocation_reason: Option<String>,
    pub requester: String,
    pub device_identity: Option<String>,
    pub csr_sha256: Vec<u8>,
    pub issued_at: i64,
    /// The certificate this one renewed, if any.
    pub predecessor_serial: Option<String>,
}

/// One enrollment attempt, as stored.
#[derive(Clone, Debug, Default)]
pub struct EnrollmentEvent {
    pub occurred_at: i64,
    pub requester: Option<String>,
    pub operation: String,
    pub profile: String,
    pub outcome: String,
    pub reason: String,
    pub detail: String,
    pub serial: Option<String>,
    pub csr_sha256: Option<Vec<u8>>,
    pub peer: Option<String>,
    /// The certificate renewed by this event (simplereenroll).
    pub predecessor_serial: Option<String>,
    /// SHA-256 of the attestation bundle, when the CSR carried one.
    pub evidence_sha256: Option<Vec<u8>>,
    pub attestation_format: Option<String>,
    pub vendor: Option<String>,
    pub device_identity: Option<String>,
}

/// What consuming (or looking at) a nonce found: the registration authority's policy decides
/// on it ([`attestca_core::policy::attestation::nonce_verdict`]).
pub use attestca_core::policy::attestation::NonceCheck;

/// A stored CRL.
#[derive(Clone, Debug)]
pub struct StoredCrl {
    pub number: i64,
    /// Revoked certificates listed.
    pub entries: i64,
    /// Shared, not copied: a fleet's CRL is tens of megabytes and served on every request.
    pub der: bytes::Bytes,
    pub this_update: i64,
    pub next_update: i64,
}

/// A stored CRL without its body: what a poll needs to decide whether a new one is due.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CrlVersion {
    pub number: i64,
    pub this_update: i64,
    /// The issuer's revocation counter as read before the CRL's entries were (-1: a CRL
    /// stored before the counter existed).
    pub revocation_counter: i64,
}

/// Which certificates to list, newest first.
#[derive(Clone, Debug, Default)]
pub struct CertificateQuery {
    pub device_identity: Option<String>,
    /// `active` or `revoked`.
    pub status: Option<String>,
    pub profile: Option<String>,
    /// Continue after this `(issued_at, serial)` (keyset pagination).
    pub before: Option<(i64, String)>,
    pub limit: i64,
}

/// Which enrollment events to list, newest first.
#[derive(Clone, Debug, Default)]
pub struct EventQuery {
    pub requester: Option<String>,
    pub operation: Option<String>,
    pub outcome: Option<String>,
    pub reason: Option<String>,
    pub device_identity: Option<String>,
    pub serial: Option<String>,
    pub profile: Option<String>,
    /// Unix seconds, inclusive.
    pub since: Option<i64>,
    /// Unix seconds, exclusive.
    pub until: Option<i64>,
    /// Continue below this event id.
    pub before_id: Option<i64>,
    pub limit: i64,
}

/// Which audit events to list, newest first.
#[derive(Clone, Debug, Default)]
pub struct AuditQuery {
    pub operator: Option<String>,
    pub action: Option<String>,
    pub target: Option<String>,
    pub since: Option<i64>,
    pub until: Option<i64>,
    pub before_id: Option<i64>,
    pub limit: i64,
}

/// One operator action, as stored.
#[derive(Clone, Debug, Default)]
pub struct AuditEvent {
    /// Assigned by the database; ignored when recording.
    pub id: i64,
    pub occurred_at: i64,
    pub operator: String,
    pub action: String,
    pub target: String,
    /// `done` or `refused`.
    pub outcome: String,
    pub reason: String,
    pub detail: String,
    pub peer: Option<String>,
}

/// What an audited revocation of one certificate found.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RevocationOutcome {
    Revoked,
    NotFound,
    AlreadyRevoked,
}

impl RevocationOutcome {
    fn audit_outcome(self) -> &'static str {
        match self {
            RevocationOutcome::Revoked => "done",
            _ => "refused",
        }
    }

    fn audit_reason(self) -> &'static str {
        match self {
            RevocationOutcome::Revoked => "",
            RevocationOutcome::NotFound => "certificate.not_found",
            RevocationOutcome::AlreadyRevoked => "certificate.already_revoked",
        }
    }
}

/// What the OCSP responder needs to know of a certificate.
#[derive(Clone, Debug)]
pub struct CertificateStatus {
    pub serial: String,
    pub issuer_key_id: Vec<u8>,
    pub status: String,
    pub revoked_at: Option<i64>,
    pub revocation_reason: Option<String>,
    pub not_after: i64,
}

/// One part of a verified supply-chain manifest.
#[derive(Clone, Debug)]
pub struct ManifestRecord {
    pub unique_id: String,
    pub part_number: String,
    pub key_sha256s: Vec<Vec<u8>>,
}

/// The database: a connection pool and the engine behind it.
#[derive(Clone)]
pub struct Store {
    pool: AnyPool,
    engine: Engine,
    availability: std::sync::Arc<availability::DatabaseAvailability>,
    /// For the availability monitor's own connection.
    options: AnyConnectOptions,
}

/// The columns of `enrollment_events`, in [`event_from_row`] order.
macro_rules! event_columns {
    () => {
        "id, occurred_at, requester, operation, profile, outcome, reason, detail, serial, \
         csr_sha256, peer, evidence_sha256, attestation_format, vendor, device_identity, \
         predecessor_serial"
    };
}

/// The columns of `certificates`, in [`certificate_from_row`] order, as a literal so that
/// queries stay `&'static str` (sqlx refuses runtime-built SQL).
macro_rules! certificate_columns {
    () => {
        "serial, der, issuer_key_id, subject, sans, spki_sha256, profile, not_before, not_after, \
         status, revoked_at, revocation_reason, requester, device_identity, csr_sha256, issued_at, \
         predecessor_serial"
    };
}

/// The columns of `certificates` in [`status_from_row`], as a literal (see above).
macro_rules! status_columns {
    () => {
        "serial, issuer_key_id, status, revoked_at, revocation_reason, not_after"
    };
}

/// The default longest wait for a pooled connection (`database.acquire_timeout_ms`).
pub const DEFAULT_ACQUIRE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(5);

/// A pooled connection idle at least this long is pinged before it is handed out.
const IDLE_CONNECTION_CHECK_AFTER: std::time::Duration = std::time::Duration::from_secs(10);

impl Store {
    /// Connects, creating an SQLite file if needed, and applies pending migrations.
    pub async fn connect(url: &SecretString, max_connections: u32) -> Result<Self, StoreError> {
        Self::connect_with(url, max_connections, DEFAULT_ACQUIRE_TIMEOUT).await
    }

    /// [`Store::connect_with`], trying again with backoff (1 s doubling to 10 s) for up to
    /// `wait` while the database does not answer, and logging each attempt: at start-up
    /// the database may be restarting, or starting beside the CA.
    pub async fn connect_waiting(
        url: &SecretString,
        max_connections: u32,
        acquire_timeout: std::time::Duration,
        wait: std::time::Duration,
    ) -> Result<Self, StoreError> {
        let started = std::time::Instant::now();
        let mut backoff = std::time::Duration::from_secs(1);
        let mut attempt = 1u32;
        loop {
            match Self::connect_with(url, max_connections, acquire_timeout).await {
                Err(e) if e.is_connection_fault() && started.elapsed() + backoff <= wait => {
                    tracing::warn!(
                        attempt,
                        error = %e,
                        retry_in_secs = backoff.as_secs(),
                        waited_secs = started.elapsed().as_secs(),
                        gives_up_after_secs = wait.as_secs(),
                        "waiting for the database"
                    );
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(std::time::Duration::from_secs(10));
                    attempt += 1;
                }
                Err(e) if e.is_connection_fault() && attempt > 1 => {
                    tracing::error!(attempts = attempt, waited_secs = started.elapsed().as_secs(), error = %e, "the database did not answer in time (database.startup_wait_secs); giving up");
                    return Err(e);
                }
                done => return done,
            }
        }
    }

    /// [`Store::connect`] with the longest wait for a pooled connection
    /// (`database.acquire_timeout_ms`).
    pub async fn connect_with(
        url: &SecretString,
        max_connections: u32,
        acquire_timeout: std::time::Duration,
    ) -> Result<Self, StoreError> {
        sqlx::any::install_default_drivers();
        let raw = url.expose_secret();
        let (engine, url) = if raw.starts_with("postgres://") || raw.starts_with("postgresql://") {
            (Engine::Postgres, raw.to_owned())
        } else if let Some(path) = raw.strip_prefix("sqlite://") {
            if let Some(dir) = std::path::Path::new(path.split('?').next().unwrap_or(path)).parent()
            {
                let _ = std::fs::create_dir_all(dir);
            }
            let sep = if raw.contains('?') { '&' } else { '?' };
            let url = if raw.contains("mode=") {
                raw.to_owned()
            } else {
                format!("{raw}{sep}mode=rwc")
            };
            (Engine::Sqlite, url)
        } else {
            let scheme = raw.split("://").next().unwrap_or("").to_owned();
            return Err(StoreError::UnsupportedUrl(scheme));
        };
        let options = AnyConnectOptions::from_str(&url)?;
        // One direct connection first: a database that does not answer fails here with what
        // went wrong (refused, unknown host, authentication), not the pool's "timed out".
        sqlx::Connection::close(sqlx::ConnectOptions::connect(&options).await?).await?;
        let availability = std::sync::Arc::new(availability::DatabaseAvailability::default());
        let circuit = std::sync::Arc::clone(&availability);
        let pool = AnyPoolOptions::new()
            .max_connections(match engine {
                Engine::Postgres => max_connections.max(2),
                // SQLite has one writer at a time; a few readers suffice.
                Engine::Sqlite => max_connections.clamp(2, 8),
            })
            // sqlx pings every connection it hands out by default: a round trip before every
            // query, which under load was ~10 % of the CA's CPU and doubled the database
            // round trips of an enrollment. A connection that just did a query is alive; one
            // idle for a while (a database restart, a NAT timeout) is still checked first.
            // After an outage, connections from before it are checked too.
            .test_before_acquire(false)
            .before_acquire(move |connection, meta| {
                let check = meta.idle_for >= IDLE_CONNECTION_CHECK_AFTER
                    || circuit.predates_recovery(meta.age);
                Box::pin(async move {
                    if check {
                        sqlx::Connection::ping(connection).await?;
                    }
                    Ok(true)
                })
            })
            // Waiting longer for a connection only delays the 503 of a database that is down.
            .acquire_timeout(acquire_timeout)
            .connect_with(options.clone())
            .await?;
        if engine == Engine::Sqlite {
            // WAL lets readers proceed while the writer commits; synchronous stays FULL (the
            // default) so that a commit is on disk before a certificate is returned.
            sqlx::query("PRAGMA journal_mode=WAL")
                .execute(&pool)
                .await?;
        }
        let store = Self {
            pool,
            engine,
            availability,
            options,
        };
        store.migrate().await?;
        Ok(store)
    }

    async fn migrate(&self) -> Result<(), StoreError> {
        match self.engine {
            Engine::Postgres => {
                sqlx::migrate!("../../migrations/postgres")
                    .run(self.db()?)
                    .await?
            }
            Engine::Sqlite => {
                sqlx::migrate!("../../migrations/sqlite")
                    .run(self.db()?)
                    .await?
            }
        }
        Ok(())
    }

    /// The engine behind this store.
    pub fn engine(&self) -> Engine {
        self.engine
    }

    /// The pool, for the ledger and for tests.
    pub fn pool(&self) -> &AnyPool {
        &self.pool
    }

    /// The pool, unless the database is known to be down: then the refusal, at once.
    pub(crate) fn db(&self) -> Result<&AnyPool, StoreError> {
        self.availability.check()?;
        Ok(&self.pool)
    }

    /// The circuit in front of the database.
    pub fn availability(&self) -> &std::sync::Arc<availability::DatabaseAvailability> {
        &self.availability
    }

    /// Runs the availability monitor (until the task is dropped).
    pub async fn monitor_availability(&self) {
        std::sync::Arc::clone(&self.availability)
            .monitor(self.options.clone())
            .await
    }

    /// Opens the circuit if `error` says the database failed (callers that see a store
    /// error report it, so that the requests after them fail fast).
    pub fn report(&self, error: &StoreError) {
        self.availability.report(error);
    }

    /// Holds an exclusive lock named `name` among every instance sharing this PostgreSQL
    /// database (an advisory lock inside a transaction: released when the guard is dropped,
    /// also on an error path, or when the process dies). Used where two instances starting at
    /// once must not both create something that must exist once (the OCSP responder key and
    /// certificate). SQLite serves one process: the guard holds nothing.
    pub async fn exclusive(&self, name: &str) -> Result<ExclusiveLock, StoreError> {
        if self.engine != Engine::Postgres {
            return Ok(ExclusiveLock { _held: None });
        }
        use sha2::Digest;
        let digest = sha2::Sha256::digest(format!("attestca:{name}"));
        let mut key = [0u8; 8];
        key.copy_from_slice(&digest[..8]);
        let mut tx = self.db()?.begin().await?;
        sqlx::query("SELECT pg_advisory_xact_lock($1)")
            .bind(i64::from_be_bytes(key))
            .execute(&mut *tx)
            .await?;
        Ok(ExclusiveLock { _held: Some(tx) })
    }

    /// A cheap round trip, for readiness checks.
    pub async fn ping(&self) -> Result<(), StoreError> {
        timed("ping", sqlx::query("SELECT 1").execute(self.db()?)).await?;
        Ok(())
    }

    /// The certificate issued to `requester` on `profile` for the CSR with this hash since
    /// `since`, if any.
    pub async fn find_recent_issue(
        &self,
        requester: &str,
        profile: &str,
        csr_sha256: &[u8],
        since: i64,
    ) -> Result<Option<CertificateRecord>, StoreError> {
        let row = timed(
            "find_recent_issue",
            sqlx::query(concat!(
                "SELECT ",
                certificate_columns!(),
                " FROM certificates WHERE serial = (SELECT serial FROM issued_requests \
             WHERE requester = $1 AND profile = $2 AND csr_sha256 = $3 AND issued_at >= $4)"
            ))
            .bind(requester)
            .bind(profile)
            .bind(csr_sha256)
            .bind(since)
            .fetch_optional(self.db()?),
        )
        .await?;
        row.map(|r| certificate_from_row(&r)).transpose()
    }

    /// The certificate with this serial (lower-case hex).
    pub async fn certificate(&self, serial: &str) -> Result<Option<CertificateRecord>, StoreError> {
        let row = timed(
            "certificate_by_serial",
            sqlx::query(concat!(
                "SELECT ",
                certificate_columns!(),
                " FROM certificates WHERE serial = $1"
            ))
            .bind(serial)
            .fetch_optional(self.db()?),
        )
        .await?;
        row.map(|r| certificate_from_row(&r)).transpose()
    }

    /// Enrollment events, newest first.
    pub async fn recent_events(&self, limit: i64) -> Result<Vec<EnrollmentEvent>, StoreError> {
        let rows = sqlx::query(concat!(
            "SELECT ",
            event_columns!(),
            " FROM enrollment_events ORDER BY id DESC LIMIT $1"
        ))
        .bind(limit)
        .fetch_all(self.db()?)
        .await?;
        rows.iter()
            .map(|r| event_from_row(r).map(|(_, e)| e))
            .collect()
    }

    /// Records a freshly issued nonce.
    pub async fn insert_nonce(
        &self,
        nonce: &[u8],
        requester: &str,
        issued_at: i64,
        expires_at: i64,
    ) -> Result<(), StoreError> {
        timed(
            "insert_nonce",
            sqlx::query(
                "INSERT INTO nonces (nonce, requester, issued_at, expires_at) VALUES ($1, $2, $3, $4)",
            )
            .bind(nonce)
            .bind(requester)
            .bind(issued_at)
            .bind(expires_at)
            .execute(self.db()?),
        )
        .await?;
        Ok(())
    }

    /// Spends a nonce for `requester` in one conditional UPDATE (so concurrent uses cannot both
    /// succeed), and says why not when it cannot be spent.
    pub async fn consume_nonce(
        &self,
        nonce: &[u8],
        requester: &str,
        now: i64,
    ) -> Result<NonceCheck, StoreError> {
        let spent = timed(
            "consume_nonce",
            sqlx::query(
                "UPDATE nonces SET consumed_at = $3 WHERE nonce = $1 AND requester = $2 \
                 AND consumed_at IS NULL AND expires_at >= $3",
            )
            .bind(nonce)
            .bind(requester)
            .bind(now)
            .execute(self.db()?),
        )
        .await?;
        if spent.rows_affected() == 1 {
            return Ok(NonceCheck::Consumed);
        }
        Ok(match self.nonce_state(nonce, requester, now).await? {
            // Spent concurrently between the two statements.
            NonceCheck::Live => NonceCheck::Reused,
            other => other,
        })
    }

    /// What a nonce is for `requester` at `now`, without spending it: the registration authority
    /// looks before it verifies the evidence that carries it, and spends it only at the end.
    pub async fn nonce_state(
        &self,
        nonce: &[u8],
        requester: &str,
        now: i64,
    ) -> Result<NonceCheck, StoreError> {
        let row = timed(
            "nonce_state",
            sqlx::query("SELECT requester, expires_at, consumed_at FROM nonces WHERE nonce = $1")
                .bind(nonce)
                .fetch_optional(self.db()?),
        )
        .await?;
        let Some(row) = row else {
            return Ok(NonceCheck::Unknown);
        };
        let owner: String = row.try_get("requester")?;
        let expires_at: i64 = row.try_get("expires_at")?;
        let consumed_at: Option<i64> = row.try_get("consumed_at")?;
        Ok(if owner != requester {
            NonceCheck::Foreign
        } else if consumed_at.is_some() {
            NonceCheck::Reused
        } else if expires_at < now {
            NonceCheck::Expired
        } else {
            NonceCheck::Live
        })
    }

    /// Stores the parts of a verified manifest (all or nothing); returns how many were new.
    pub async fn insert_manifest(
        &self,
        vendor: &str,
        parts: &[ManifestRecord],
        manifest_sha256: &[u8],
        imported_at: i64,
    ) -> Result<u64, StoreError> {
        let mut tx = self.db()?.begin().await?;
        let mut added = 0;
        for part in parts {
            let inserted = sqlx::query(
                "INSERT INTO manifest_parts (vendor, unique_id, part_number, manifest_sha256, imported_at) \
                 VALUES ($1, $2, $3, $4, $5) ON CONFLICT (vendor, unique_id) DO NOTHING",
            )
            .bind(vendor)
            .bind(&part.unique_id)
            .bind(&part.part_number)
            .bind(manifest_sha256)
            .bind(imported_at)
            .execute(&mut *tx)
            .await?;
            added += inserted.rows_affected();
            for key in &part.key_sha256s {
                sqlx::query(
                    "INSERT INTO manifest_keys (vendor, unique_id, spki_sha256) VALUES ($1, $2, $3) \
                     ON CONFLICT (vendor, unique_id, spki_sha256) DO NOTHING",
                )
                .bind(vendor)
                .bind(&part.unique_id)
                .bind(key)
                .execute(&mut *tx)
                .await?;
            }
        }
        tx.commit().await?;
        Ok(added)
    }

    /// Whether a manifest lists this device of this vendor with this key.
    pub async fn manifest_lists(
        &self,
        vendor: &str,
        unique_id: &str,
        spki_sha256: &[u8],
    ) -> Result<bool, StoreError> {
        let found: Option<i64> = sqlx::query_scalar(
            "SELECT 1 FROM manifest_keys WHERE vendor = $1 AND unique_id = $2 AND spki_sha256 = $3",
        )
        .bind(vendor)
        .bind(unique_id)
        .bind(spki_sha256)
        .fetch_optional(self.db()?)
        .await?;
        Ok(found.is_some())
    }

    /// An active, unexpired certificate of this device for a different key, if any: the sign
    /// of a cloned identity.
    pub async fn active_certificate_for_other_key(
        &self,
        device_identity: &str,
        spki_sha256: &[u8],
        now: i64,
    ) -> Result<Option<String>, StoreError> {
        Ok(sqlx::query_scalar(
            "SELECT serial FROM certificates WHERE device_identity = $1 AND status = 'active' \
             AND not_after > $3 AND spki_sha256 <> $2 LIMIT 1",
        )
        .bind(device_identity)
        .bind(spki_sha256)
        .bind(now)
        .fetch_optional(self.db()?)
        .await?)
    }

    /// Nonces issued, not spent, and not expired at `now`.
    pub async fn outstanding_nonces(&self, now: i64) -> Result<i64, StoreError> {
        Ok(sqlx::query_scalar(
            "SELECT COUNT(*) FROM nonces WHERE expires_at >= $1 AND consumed_at IS NULL",
        )
        .bind(now)
        .fetch_one(self.db()?)
        .await?)
    }

    /// Forgets nonces that expired before `before`.
    pub async fn purge_nonces(&self, before: i64) -> Result<u64, StoreError> {
        let done = sqlx::query("DELETE FROM nonces WHERE expires_at < $1")
            .bind(before)
            .execute(self.db()?)
            .await?;
        Ok(done.rows_affected())
    }

    /// Forgets retry claims older than `before` (Unix seconds): past the retry window they no
    /// longer decide anything, and the table would otherwise grow with every enrollment.
    pub async fn purge_retry_claims(&self, before: i64) -> Result<u64, StoreError> {
        let done = sqlx::query("DELETE FROM issued_requests WHERE issued_at < $1")
            .bind(before)
            .execute(self.db()?)
            .await?;
        Ok(done.rows_affected())
    }

    /// When the newest renewal of `serial` was issued, if it was renewed.
    pub async fn latest_renewal_of(&self, serial: &str) -> Result<Option<i64>, StoreError> {
        Ok(sqlx::query_scalar(
            "SELECT MAX(issued_at) FROM certificates WHERE predecessor_serial = $1",
        )
        .bind(serial)
        .fetch_one(self.db()?)
        .await?)
    }

    /// Revokes (reason `superseded`) the active certificates of `profile` that were renewed
    /// before `renewed_before`. Idempotent, so every instance may run it.
    pub async fn revoke_superseded(
        &self,
        profile: &str,
        renewed_before: i64,
        now: i64,
    ) -> Result<u64, StoreError> {
        let done = sqlx::query(
            "UPDATE certificates SET status = 'revoked', revoked_at = $3, \
             revocation_reason = 'superseded' \
             WHERE status = 'active' AND profile = $1 AND serial IN \
             (SELECT predecessor_serial FROM certificates \
              WHERE predecessor_serial IS NOT NULL AND issued_at <= $2)",
        )
        .bind(profile)
        .bind(renewed_before)
        .bind(now)
        .execute(self.db()?)
        .await?;
        Ok(done.rows_affected())
    }

    /// Revoked certificates of one issuer that have not been expired since before
    /// `expired_before` (older entries leave the CRL), encoded for the CRL as the rows stream
    /// in (a million entries never sit in memory as rows).
    pub async fn revoked_entries(
        &self,
        issuer_key_id: &[u8],
        expired_before: i64,
    ) -> Result<crate::revocation::crl::RevokedList, StoreError> {
        use futures::TryStreamExt;
        let mut rows = sqlx::query(
            "SELECT serial, revoked_at, revocation_reason FROM certificates \
             WHERE issuer_key_id = $1 AND status = 'revoked' AND not_after >= $2 ORDER BY serial",
        )
        .bind(issuer_key_id)
        .bind(expired_before)
        .fetch(self.db()?);
        let mut list = crate::revocation::crl::RevokedList::default();
        while let Some(r) = rows.try_next().await? {
            list.push(&crate::revocation::crl::RevokedEntry {
                serial: r.try_get("serial")?,
                revoked_at: r.try_get::<Option<i64>, _>("revoked_at")?.unwrap_or(0),
                reason: r.try_get("revocation_reason")?,
            })
            .map_err(|e| StoreError::Database(sqlx::Error::Protocol(e.to_string())))?;
        }
        Ok(list)
    }

    /// The issuer's revocation counter: moved, by triggers on `certificates` and in the same
    /// transaction, by every change to what the issuer's CRL lists (0 before the first). One
    /// primary-key lookup, whatever the number of revoked certificates.
    pub async fn revocation_counter(&self, issuer_key_id: &[u8]) -> Result<i64, StoreError> {
        let counter: Option<i64> =
            sqlx::query_scalar("SELECT counter FROM revocation_counters WHERE issuer_key_id = $1")
                .bind(issuer_key_id)
                .fetch_optional(self.db()?)
                .await?;
        Ok(counter.unwrap_or(0))
    }

    /// The stored CRL of an issuer.
    pub async fn crl(&self, issuer_key_id: &[u8]) -> Result<Option<StoredCrl>, StoreError> {
        let row = sqlx::query(
            "SELECT crl_number, entry_count, der, this_update, next_update FROM crls \
             WHERE issuer_key_id = $1",
        )
        .bind(issuer_key_id)
        .fetch_optional(self.db()?)
        .await?;
        row.map(|r| {
            Ok(StoredCrl {
                number: r.try_get("crl_number")?,
                entries: r.try_get("entry_count")?,
                der: bytes::Bytes::from(r.try_get::<Vec<u8>, _>("der")?),
                this_update: r.try_get("this_update")?,
                next_update: r.try_get("next_update")?,
            })
        })
        .transpose()
    }

    /// What an issuer's stored CRL is, without its (large) body.
    pub async fn crl_version(
        &self,
        issuer_key_id: &[u8],
    ) -> Result<Option<CrlVersion>, StoreError> {
        let row = sqlx::query(
            "SELECT crl_number, this_update, revocation_counter FROM crls WHERE issuer_key_id = $1",
        )
        .bind(issuer_key_id)
        .fetch_optional(self.db()?)
        .await?;
        row.map(|r| {
            Ok(CrlVersion {
                number: r.try_get("crl_number")?,
                this_update: r.try_get("this_update")?,
                revocation_counter: r.try_get("revocation_counter")?,
            })
        })
        .transpose()
    }

    /// Allocates the next CRL number, lets `make` build and sign the CRL, and stores it with
    /// `revocation_counter` (the issuer's [`Store::revocation_counter`], read before the
    /// entries listed) — all in one transaction. On PostgreSQL an advisory lock elects one
    /// generator among the instances: when another holds it, this returns `Ok(false)` and
    /// generates nothing.
    pub async fn replace_crl(
        &self,
        issuer_key_id: &[u8],
        entries: i64,
        revocation_counter: i64,
        make: impl FnOnce(i64) -> Result<(Vec<u8>, i64, i64), String>,
    ) -> Result<bool, StoreError> {
        let mut tx = self.db()?.begin().await?;
        if self.engine == Engine::Postgres {
            // The lock key: the first 8 bytes of the issuer's key identifier.
            let mut key = [0u8; 8];
            for (k, b) in key.iter_mut().zip(issuer_key_id) {
                *k = *b;
            }
            let elected: bool = sqlx::query_scalar("SELECT pg_try_advisory_xact_lock($1)")
                .bind(i64::from_be_bytes(key))
                .fetch_one(&mut *tx)
                .await?;
            if !elected {
                return Ok(false);
            }
        }
        let current: Option<(i64, i64)> = sqlx::query_as(
            "SELECT crl_number, revocation_counter FROM crls WHERE issuer_key_id = $1",
        )
        .bind(issuer_key_id)
        .fetch_optional(&mut *tx)
        .await?;
        // Another generator got the lock first with a later read of the revocations: a CRL
        // built from this (older) read would list less than the one stored. The counter only
        // grows, so a stored counter above this read's means exactly that.
        if current.is_some_and(|(_, stored)| stored > revocation_counter) {
            return Ok(false);
        }
        let number = current.map_or(0, |(number, _)| number) + 1;
        let (der, this_update, next_update) =
            make(number).map_err(|e| StoreError::Database(sqlx::Error::Protocol(e)))?;
        sqlx::query(
            "INSERT INTO crls (issuer_key_id, crl_number, der, this_update, next_update, \
             entry_count, revocation_counter) VALUES ($1, $2, $3, $4, $5, $6, $7) \
             ON CONFLICT (issuer_key_id) DO UPDATE \
             SET crl_number = excluded.crl_number, der = excluded.der, \
             entry_count = excluded.entry_count, \
             this_update = excluded.this_update, next_update = excluded.next_update, \
             revocation_counter = excluded.revocation_counter \
             WHERE crls.crl_number < excluded.crl_number",
        )
        .bind(issuer_key_id)
        .bind(number)
        .bind(&der)
        .bind(this_update)
        .bind(next_update)
        .bind(entries)
        .bind(revocation_counter)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(true)
    }

    /// Marks a certificate revoked. Returns false if no active certificate has that serial.
    pub async fn revoke(&self, serial: &str, reason: &str, at: i64) -> Result<bool, StoreError> {
        let done = sqlx::query(
            "UPDATE certificates SET status = 'revoked', revoked_at = $2, revocation_reason = $3 \
             WHERE serial = $1 AND status = 'active'",
        )
        .bind(serial)
        .bind(at)
        .bind(reason)
        .execute(self.db()?)
        .await?;
        Ok(done.rows_affected() == 1)
    }

    /// A page of certificates, newest first, filtered as `query` says.
    pub async fn certificates_page(
        &self,
        query: &CertificateQuery,
    ) -> Result<Vec<CertificateRecord>, StoreError> {
        let (before_at, before_serial) = query.before.clone().unwrap_or((i64::MAX, String::new()));
        // Two statements so that the by-device listing (the common one) uses its index.
        let statement = match &query.device_identity {
            Some(_) => concat!(
                "SELECT ",
                certificate_columns!(),
                " FROM certificates WHERE device_identity = $1 \
                 AND ($2 = '' OR status = $2) AND ($3 = '' OR profile = $3) \
                 AND (issued_at < $4 OR (issued_at = $4 AND $5 <> '' AND serial < $5)) \
                 ORDER BY issued_at DESC, serial DESC LIMIT $6"
            ),
            None => concat!(
                "SELECT ",
                certificate_columns!(),
                " FROM certificates WHERE $1 = '' \
                 AND ($2 = '' OR status = $2) AND ($3 = '' OR profile = $3) \
                 AND (issued_at < $4 OR (issued_at = $4 AND $5 <> '' AND serial < $5)) \
                 ORDER BY issued_at DESC, serial DESC LIMIT $6"
            ),
        };
        let rows = sqlx::query(statement)
            .bind(query.device_identity.clone().unwrap_or_default())
            .bind(query.status.clone().unwrap_or_default())
            .bind(query.profile.clone().unwrap_or_default())
            .bind(before_at)
            .bind(before_serial)
            .bind(query.limit)
            .fetch_all(self.db()?)
            .await?;
        rows.iter().map(certificate_from_row).collect()
    }

    /// The serials of the certificates that renewed `serial`, oldest first.
    pub async fn successors(&self, serial: &str) -> Result<Vec<String>, StoreError> {
        Ok(sqlx::query_scalar(
            "SELECT serial FROM certificates WHERE predecessor_serial = $1 ORDER BY issued_at",
        )
        .bind(serial)
        .fetch_all(self.db()?)
        .await?)
    }

    /// A page of enrollment events, newest first, with their ids.
    pub async fn events_page(
        &self,
        query: &EventQuery,
    ) -> Result<Vec<(i64, EnrollmentEvent)>, StoreError> {
        let rows = sqlx::query(concat!(
            "SELECT ",
            event_columns!(),
            " FROM enrollment_events WHERE id < $1 \
             AND ($2 = '' OR requester = $2) AND ($3 = '' OR operation = $3) \
             AND ($4 = '' OR outcome = $4) AND ($5 = '' OR reason = $5) \
             AND ($6 = '' OR device_identity = $6) AND ($7 = '' OR serial = $7) \
             AND ($8 = '' OR profile = $8) AND occurred_at >= $9 AND occurred_at < $10 \
             ORDER BY id DESC LIMIT $11"
        ))
        .bind(query.before_id.unwrap_or(i64::MAX))
        .bind(query.requester.clone().unwrap_or_default())
        .bind(query.operation.clone().unwrap_or_default())
        .bind(query.outcome.clone().unwrap_or_default())
        .bind(query.reason.clone().unwrap_or_default())
        .bind(query.device_identity.clone().unwrap_or_default())
        .bind(query.serial.clone().unwrap_or_default())
        .bind(query.profile.clone().unwrap_or_default())
        .bind(query.since.unwrap_or(i64::MIN))
        .bind(query.until.unwrap_or(i64::MAX))
        .bind(query.limit)
        .fetch_all(self.db()?)
        .await?;
        rows.iter().map(event_from_row).collect()
    }

    /// A page of audit events, newest first.
    pub async fn audit_page(&self, query: &AuditQuery) -> Result<Vec<AuditEvent>, StoreError> {
        let rows = sqlx::query(
            "SELECT id, occurred_at, operator, action, target, outcome, reason, detail, peer \
             FROM audit_events WHERE id < $1 AND ($2 = '' OR operator = $2) \
             AND ($3 = '' OR action = $3) AND ($4 = '' OR target = $4) \
             AND occurred_at >= $5 AND occurred_at < $6 ORDER BY id DESC LIMIT $7",
        )
        .bind(query.before_id.unwrap_or(i64::MAX))
        .bind(query.operator.clone().unwrap_or_default())
        .bind(query.action.clone().unwrap_or_default())
        .bind(query.target.clone().unwrap_or_default())
        .bind(query.since.unwrap_or(i64::MIN))
        .bind(query.until.unwrap_or(i64::MAX))
        .bind(query.limit)
        .fetch_all(self.db()?)
        .await?;
        rows.iter()
            .map(|r| {
                Ok(AuditEvent {
                    id: r.try_get("id")?,
                    occurred_at: r.try_get("occurred_at")?,
                    operator: r.try_get("operator")?,
                    action: r.try_get("action")?,
                    target: r.try_get("target")?,
                    outcome: r.try_get("outcome")?,
                    reason: r.try_get("reason")?,
                    detail: r.try_get("detail")?,
                    peer: r.try_get("peer")?,
                })
            })
            .collect()
    }

    /// Revokes one certificate and records the audit event in the same transaction, whether
    /// the revocation happened or was refused (no such certificate, already revoked).
    pub async fn revoke_audited(
        &self,
        serial: &str,
        reason: &str,
        audit: &AuditEvent,
    ) -> Result<RevocationOutcome, StoreError> {
        let mut tx = self.db()?.begin().await?;
        let done = sqlx::query(
            "UPDATE certificates SET status = 'revoked', revoked_at = $2, revocation_reason = $3 \
             WHERE serial = $1 AND status = 'active'",
        )
        .bind(serial)
        .bind(audit.occurred_at)
        .bind(reason)
        .execute(&mut *tx)
        .await?;
        let outcome = if done.rows_affected() == 1 {
            RevocationOutcome::Revoked
        } else {
            let status: Option<String> =
                sqlx::query_scalar("SELECT status FROM certificates WHERE serial = $1")
                    .bind(serial)
                    .fetch_optional(&mut *tx)
                    .await?;
            match status {
                None => RevocationOutcome::NotFound,
                Some(_) => RevocationOutcome::AlreadyRevoked,
            }
        };
        let recorded = AuditEvent {
            outcome: outcome.audit_outcome().into(),
            reason: match outcome {
                RevocationOutcome::Revoked => reason.to_owned(),
                other => other.audit_reason().to_owned(),
            },
            ..audit.clone()
        };
        insert_audit(&mut tx, &recorded).await?;
        tx.commit().await?;
        Ok(outcome)
    }

    /// Revokes every active certificate of a device identity and records the audit event in
    /// the same transaction; returns the serials revoked (none: the event says refused).
    pub async fn revoke_device_audited(
        &self,
        device_identity: &str,
        reason: &str,
        audit: &AuditEvent,
    ) -> Result<Vec<String>, StoreError> {
        let mut tx = self.db()?.begin().await?;
        let mut serials: Vec<String> = sqlx::query_scalar(
            "UPDATE certificates SET status = 'revoked', revoked_at = $2, revocation_reason = $3 \
             WHERE device_identity = $1 AND status = 'active' RETURNING serial",
        )
        .bind(device_identity)
        .bind(audit.occurred_at)
        .bind(reason)
        .fetch_all(&mut *tx)
        .await?;
        serials.sort();
        let recorded = if serials.is_empty() {
            AuditEvent {
                outcome: "refused".into(),
                reason: "device.no_active_certificates".into(),
                ..audit.clone()
            }
        } else {
            AuditEvent {
                outcome: "done".into(),
                reason: reason.to_owned(),
                detail: serials.join(" "),
                ..audit.clone()
            }
        };
        insert_audit(&mut tx, &recorded).await?;
        tx.commit().await?;
        Ok(serials)
    }

    /// The OCSP facts of the certificate with this serial (lower-case hex).
    pub async fn certificate_status(
        &self,
        serial: &str,
    ) -> Result<Option<CertificateStatus>, StoreError> {
        let found = self
            .statuses(
                sqlx::query(concat!(
                    "SELECT ",
                    status_columns!(),
                    " FROM certificates WHERE serial = $1"
                ))
                .bind(serial),
            )
            .await?;
        Ok(found.into_iter().next())
    }

    /// Up to `limit` certificates of one issuer still valid at `valid_at`, in serial order
    /// after `after` (keyset paging over the primary key).
    pub async fn certificate_statuses_page(
        &self,
        issuer_key_id: &[u8],
        valid_at: i64,
        after: &str,
        limit: i64,
    ) -> Result<Vec<CertificateStatus>, StoreError> {
        self.statuses(
            sqlx::query(concat!(
                "SELECT ",
                status_columns!(),
                " FROM certificates WHERE serial > $3 AND issuer_key_id = $1 AND not_after > $2 \
                 ORDER BY serial LIMIT $4"
            ))
            .bind(issuer_key_id)
            .bind(valid_at)
            .bind(after)
            .bind(limit),
        )
        .await
    }

    /// Certificates of one issuer issued, or revoked, at or after `since`.
    pub async fn certificate_status_changes(
        &self,
        issuer_key_id: &[u8],
        since: i64,
    ) -> Result<Vec<CertificateStatus>, StoreError> {
        self.statuses(
            sqlx::query(concat!(
                "SELECT ",
                status_columns!(),
                " FROM certificates WHERE issuer_key_id = $1 AND issued_at >= $2 UNION SELECT ",
                status_columns!(),
                " FROM certificates WHERE issuer_key_id = $1 AND status = 'revoked' \
                 AND revoked_at >= $2"
            ))
            .bind(issuer_key_id)
            .bind(since),
        )
        .await
    }

    /// Revoked certificates of one issuer still valid at `valid_at` (the set a CRL lists).
    pub async fn revoked_statuses(
        &self,
        issuer_key_id: &[u8],
        valid_at: i64,
    ) -> Result<Vec<CertificateStatus>, StoreError> {
        self.statuses(
            sqlx::query(concat!(
                "SELECT ",
                status_columns!(),
                " FROM certificates WHERE issuer_key_id = $1 AND status = 'revoked' \
                 AND not_after > $2"
            ))
            .bind(issuer_key_id)
            .bind(valid_at),
        )
        .await
    }

    async fn statuses<'q>(
        &self,
        query: sqlx::query::Query<'q, sqlx::Any, sqlx::any::AnyArguments>,
    ) -> Result<Vec<CertificateStatus>, StoreError> {
        let rows = query.fetch_all(self.db()?).await?;
        rows.iter().map(status_from_row).collect()
    }

    /// The newest active certificate of `profile` for the key with this SPKI hash, issued by
    /// this issuer and still valid at `valid_at`.
    pub async fn latest_certificate_of_key(
        &self,
        issuer_key_id: &[u8],
        profile: &str,
        spki_sha256: &[u8],
        valid_at: i64,
    ) -> Result<Option<CertificateRecord>, StoreError> {
        let query = sqlx::query(concat!(
            "SELECT ",
            certificate_columns!(),
            " FROM certificates WHERE spki_sha256 = $3 AND issuer_key_id = $1 AND profile = $2 \
             AND status = 'active' AND not_after > $4 ORDER BY not_after DESC LIMIT 1"
        ));
        let row = query
            .bind(issuer_key_id)
            .bind(profile)
            .bind(spki_sha256)
            .bind(valid_at)
            .fetch_optional(self.db()?)
            .await?;
        row.map(|r| certificate_from_row(&r)).transpose()
    }
}

fn status_from_row(r: &sqlx::any::AnyRow) -> Result<CertificateStatus, StoreError> {
    Ok(CertificateStatus {
        serial: r.try_get("serial")?,
        issuer_key_id: r.try_get("issuer_key_id")?,
        status: r.try_get("status")?,
        revoked_at: r.try_get("revoked_at")?,
        revocation_reason: r.try_get("revocation_reason")?,
        not_after: r.try_get("not_after")?,
    })
}

/// Awaits a database operation, observing its time in `attestca_db_query_duration_seconds`.
async fn timed<T>(operation: &'static str, work: impl std::future::Future<Output = T>) -> T {
    let started = std::time::Instant::now();
    let result = work.await;
    crate::metrics::METRICS
        .db_query_duration
        .with_label_values(&[operation])
        .observe(started.elapsed().as_secs_f64());
    result
}

fn certificate_from_row(r: &sqlx::any::AnyRow) -> Result<CertificateRecord, StoreError> {
    Ok(CertificateRecord {
        serial: r.try_get("serial")?,
        der: r.try_get("der")?,
        issuer_key_id: r.try_get("issuer_key_id")?,
        subject: r.try_get("subject")?,
        sans: r.try_get("sans")?,
        spki_sha256: r.try_get("spki_sha256")?,
        profile: r.try_get("profile")?,
        not_before: r.try_get("not_before")?,
        not_after: r.try_get("not_after")?,
        status: r.try_get("status")?,
        revoked_at: r.try_get("revoked_at")?,
        revocation_reason: r.try_get("revocation_reason")?,
        requester: r.try_get("requester")?,
        device_identity: r.try_get("device_identity")?,
        csr_sha256: r.try_get("csr_sha256")?,
        issued_at: r.try_get("issued_at")?,
        predecessor_serial: r.try_get("predecessor_serial")?,
    })
}

fn event_from_row(r: &sqlx::any::AnyRow) -> Result<(i64, EnrollmentEvent), StoreError> {
    Ok((
        r.try_get("id")?,
        EnrollmentEvent {
            occurred_at: r.try_get("occurred_at")?,
            requester: r.try_get("requester")?,
            operation: r.try_get("operation")?,
            profile: r.try_get("profile")?,
            outcome: r.try_get("outcome")?,
            reason: r.try_get("reason")?,
            detail: r.try_get("detail")?,
            serial: r.try_get("serial")?,
            csr_sha256: r.try_get("csr_sha256")?,
            peer: r.try_get("peer")?,
            evidence_sha256: r.try_get("evidence_sha256")?,
            attestation_format: r.try_get("attestation_format")?,
            vendor: r.try_get("vendor")?,
            device_identity: r.try_get("device_identity")?,
            predecessor_serial: r.try_get("predecessor_serial")?,
        },
    ))
}

async fn insert_audit(
    tx: &mut sqlx::Transaction<'_, sqlx::Any>,
    event: &AuditEvent,
) -> Result<(), StoreError> {
    sqlx::query(
        "INSERT INTO audit_events (occurred_at, operator, action, target, outcome, reason, \
         detail, peer) VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
    )
    .bind(event.occurred_at)
    .bind(&event.operator)
    .bind(&event.action)
    .bind(&event.target)
    .bind(&event.outcome)
    .bind(&event.reason)
    .bind(&event.detail)
    .bind(&event.peer)
    .execute(&mut **tx)
    .await?;
    Ok(())
}
