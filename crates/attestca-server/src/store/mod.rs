//! Storage of certificates and enrollment events, in PostgreSQL or SQLite, through one schema.
//!
//! Queries are written once in the SQL both engines accept (`$n` parameters, `ON CONFLICT`,
//! `RETURNING`) and run through sqlx's `Any` driver; the schema is one migration set per engine
//! under `migrations/`, applied at start-up. Writes that must be durable before a certificate
//! leaves the CA go through the batching [`ledger::Ledger`].
//!
//! The queries live beside the aggregate they read and write, one file each, with whatever
//! differs between the engines next to the method that needs it: [`certificates`] (issued
//! certificates, retry claims, revocation writes), [`events`] (enrollment events), [`nonces`],
//! [`manifests`] (supply-chain manifests), [`crl`] (stored CRLs and the revocation counter) and
//! [`audit`] (operator and system actions). This file holds what they share: the pool, the
//! connection and migrations, the timing of queries, the error type, and the
//! [`StoreTransaction`] through which writes of several aggregates commit together (a
//! revocation and its audit event). The store knows rows, not the layers above it: it hands
//! out revoked certificates as [`attestca_core::crl::RevokedEntry`] rows, and the CRL
//! publisher builds the list.

pub mod audit;
pub mod availability;
pub mod certificates;
pub mod challenges;
pub mod crl;
pub mod events;
pub mod ledger;
pub mod log;
pub mod manifests;
pub mod nonces;

use std::str::FromStr;

use secrecy::{ExposeSecret, SecretString};
use sqlx::AnyPool;
use sqlx::any::{AnyConnectOptions, AnyPoolOptions};

pub use audit::{AuditEvent, AuditQuery};
pub use certificates::{CertificateQuery, CertificateRecord, RevocationOutcome, StatusRecord};
pub use crl::{CrlVersion, StoredCrl};
pub use events::{EnrollmentEvent, EventQuery};
pub use manifests::ManifestRecord;
pub use nonces::NonceCheck;

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
    /// A certificate whose transparency log entry cannot be encoded (a field over its
    /// limit): it is not committed, since nothing is issued without its entry.
    #[error("transparency log entry: {0}")]
    LogEntry(#[from] attestca_core::transparency::entry::EntryError),
    /// The circuit is open: the database did not answer, and is not asked until it does.
    #[error("the database has been unavailable for {down_secs} s")]
    Unavailable { down_secs: u64 },
    /// A text column holds a word the CA's vocabulary does not have (a row written by
    /// something other than this CA).
    #[error("database column {column}: {source}")]
    UnknownWord {
        column: &'static str,
        source: attestca_core::record::UnknownWord,
    },
}

/// Reads a serial column (written by the CA as lower-case hex).
fn serial(
    row: &sqlx::any::AnyRow,
    column: &'static str,
) -> Result<attestca_core::serial::Serial, StoreError> {
    use sqlx::Row;
    Ok(attestca_core::serial::Serial::from_stored(
        row.try_get(column)?,
    ))
}

/// Reads a nullable serial column.
fn optional_serial(
    row: &sqlx::any::AnyRow,
    column: &'static str,
) -> Result<Option<attestca_core::serial::Serial>, StoreError> {
    use sqlx::Row;
    Ok(row
        .try_get::<Option<String>, _>(column)?
        .map(attestca_core::serial::Serial::from_stored))
}

/// Reads a text column as one of the vocabulary's words ([`attestca_core::record`]).
fn word<T>(row: &sqlx::any::AnyRow, column: &'static str) -> Result<T, StoreError>
where
    T: FromStr<Err = attestca_core::record::UnknownWord>,
{
    use sqlx::Row;
    let text: String = row.try_get(column)?;
    text.parse()
        .map_err(|source| StoreError::UnknownWord { column, source })
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

/// The database: a connection pool and the engine behind it.
#[derive(Clone)]
pub struct Store {
    pool: AnyPool,
    engine: Engine,
    availability: std::sync::Arc<availability::DatabaseAvailability>,
    /// For the availability monitor's own connection.
    options: AnyConnectOptions,
}

/// A transaction spanning aggregates: writes that must commit together (a revocation and its
/// audit event) are made through it, by the methods each aggregate's file adds to it. Dropped
/// without [`StoreTransaction::commit`], it rolls back.
pub struct StoreTransaction {
    tx: sqlx::Transaction<'static, sqlx::Any>,
}

impl StoreTransaction {
    /// Commits every write made through this transaction.
    pub async fn commit(self) -> Result<(), StoreError> {
        self.tx.commit().await?;
        Ok(())
    }
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

    /// A transaction that reads and then writes. On SQLite it begins `IMMEDIATE`: it takes
    /// the write lock first (waiting out the busy timeout) rather than reading a snapshot that
    /// another writer's commit makes stale before it writes (SQLITE_BUSY_SNAPSHOT, "database
    /// is locked", at once and without waiting). PostgreSQL needs nothing of the kind.
    pub(crate) async fn begin_write(
        &self,
    ) -> Result<sqlx::Transaction<'static, sqlx::Any>, StoreError> {
        let pool = self.db()?;
        Ok(match self.engine {
            Engine::Postgres => pool.begin().await?,
            _ => pool.begin_with("BEGIN IMMEDIATE").await?,
        })
    }

    /// Opens a transaction (see [`StoreTransaction`]).
    pub async fn begin(&self) -> Result<StoreTransaction, StoreError> {
        Ok(StoreTransaction {
            tx: self.db()?.begin().await?,
        })
    }

    /// A cheap round trip, for readiness checks.
    pub async fn ping(&self) -> Result<(), StoreError> {
        timed("ping", sqlx::query("SELECT 1").execute(self.db()?)).await?;
        Ok(())
    }
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
