//! Whether the database answers, and failing fast while it does not.
//!
//! Without this, a database that is down costs every request the pool's connection attempts
//! and their backoff, up to the request deadline: enrollments queue behind each other, the
//! admission limit fills, and clients wait 30 s for a 503. With it, the first failure a
//! request or the monitor sees opens the circuit, and every database operation then answers
//! [`StoreError::Unavailable`] at once (a 503 with `Retry-After` at the edges) until the
//! monitor's own connection gets an answer again.
//!
//! The monitor pings over a connection of its own, not the pool: a pool saturated by load is
//! busy, not down, and must not open the circuit.

use std::future::Future;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use sqlx::any::AnyConnectOptions;
use sqlx::{AnyConnection, ConnectOptions, Connection};

use super::StoreError;
use crate::metrics::METRICS;

/// How often the monitor pings while the database answers.
const PING_WHILE_UP: Duration = Duration::from_millis(500);
/// How often it tries while the database does not.
const PING_WHILE_DOWN: Duration = Duration::from_millis(250);
/// A ping not answered within this is a failure.
const PING_TIMEOUT: Duration = Duration::from_secs(1);
/// How long after an outage pooled connections from before it are pinged before use.
const RECENT_RECOVERY: Duration = Duration::from_secs(60);

/// The circuit in front of the database.
#[derive(Debug)]
pub struct DatabaseAvailability {
    available: AtomicBool,
    /// The same, for waiters ([`DatabaseAvailability::lost`]).
    watch: tokio::sync::watch::Sender<bool>,
    down_since: Mutex<Option<Instant>>,
    /// When the database last came back: pooled connections older than that may have been
    /// cut by the outage, so they are pinged before use for a while.
    recovered_at: Mutex<Option<Instant>>,
}

impl Default for DatabaseAvailability {
    fn default() -> Self {
        METRICS
            .dependency_available
            .with_label_values(&["database"])
            .set(1);
        Self {
            available: AtomicBool::new(true),
            watch: tokio::sync::watch::Sender::new(true),
            down_since: Mutex::new(None),
            recovered_at: Mutex::new(None),
        }
    }
}

impl DatabaseAvailability {
    /// `Ok` while the database is believed to answer; the refusal otherwise.
    pub fn check(&self) -> Result<(), StoreError> {
        if self.available.load(Ordering::SeqCst) {
            return Ok(());
        }
        let down_secs = self
            .down_since
            .lock()
            .ok()
            .and_then(|d| *d)
            .map_or(0, |d| d.elapsed().as_secs());
        Err(StoreError::Unavailable { down_secs })
    }

    /// Completes when the database is found down (at once if it is): work waiting on the
    /// database races this, so that requests caught by an outage are answered when it is
    /// detected instead of when their connection attempts give up.
    pub async fn lost(&self) -> StoreError {
        let mut changes = self.watch.subscribe();
        let _ = changes.wait_for(|up| !*up).await;
        self.check()
            .err()
            .unwrap_or(StoreError::Unavailable { down_secs: 0 })
    }

    /// Whether the database is believed to answer.
    pub fn is_available(&self) -> bool {
        self.available.load(Ordering::SeqCst)
    }

    /// Whether a pooled connection of this age may predate the last outage's end (within a
    /// minute of it): such a connection is pinged before it is handed out.
    pub fn predates_recovery(&self, age: Duration) -> bool {
        self.recovered_at
            .lock()
            .ok()
            .and_then(|at| *at)
            .is_some_and(|at| at.elapsed() < RECENT_RECOVERY && age >= at.elapsed())
    }

    /// Runs `work` unless the database is down, and stops waiting for it when the database is
    /// found down meanwhile.
    pub async fn guard<T>(
        &self,
        work: impl Future<Output = Result<T, StoreError>>,
    ) -> Result<T, StoreError> {
        self.check()?;
        tokio::select! {
            done = work => done,
            lost = self.lost() => Err(lost),
        }
    }

    /// Opens the circuit when `error` says the database (not the query) failed.
    pub fn report(&self, error: &StoreError) {
        if error.is_connection_fault() {
            self.mark_down(&error.to_string());
        }
    }

    fn mark_down(&self, why: &str) {
        if self.available.swap(false, Ordering::SeqCst) {
            if let Ok(mut since) = self.down_since.lock() {
                *since = Some(Instant::now());
            }
            self.watch.send_replace(false);
            METRICS
                .dependency_available
                .with_label_values(&["database"])
                .set(0);
            tracing::error!(error = %why, "the database is unavailable; requests that need it are refused at once until it answers again");
        }
    }

    fn mark_up(&self) {
        if !self.available.swap(true, Ordering::SeqCst) {
            let down_secs = self
                .down_since
                .lock()
                .ok()
                .and_then(|mut d| d.take())
                .map_or(0.0, |d| d.elapsed().as_secs_f64());
            if let Ok(mut at) = self.recovered_at.lock() {
                *at = Some(Instant::now());
            }
            self.watch.send_replace(true);
            METRICS
                .dependency_available
                .with_label_values(&["database"])
                .set(1);
            METRICS
                .dependency_recoveries
                .with_label_values(&["database"])
                .inc();
            tracing::info!(down_secs, "the database answers again");
        }
    }

    /// Pings the database over a connection of its own until the task is dropped: every
    /// 0.5 s while it answers, every 0.25 s while it does not.
    pub async fn monitor(self: std::sync::Arc<Self>, options: AnyConnectOptions) {
        let mut connection: Option<AnyConnection> = None;
        loop {
            let outcome = tokio::time::timeout(PING_TIMEOUT, async {
                if connection.is_none() {
                    connection = Some(options.connect().await?);
                }
                match connection.as_mut() {
                    Some(c) => c.ping().await,
                    None => Ok(()),
                }
            })
            .await;
            match outcome {
                Ok(Ok(())) => self.mark_up(),
                Ok(Err(e)) => {
                    connection = None;
                    self.mark_down(&e.to_string());
                }
                Err(_) => {
                    connection = None;
                    self.mark_down("no answer to a ping within 1 s");
                }
            }
            tokio::time::sleep(if self.is_available() {
                PING_WHILE_UP
            } else {
                PING_WHILE_DOWN
            })
            .await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_connection_fault_opens_the_circuit_and_a_query_error_does_not() {
        let circuit = DatabaseAvailability::default();
        circuit.report(&StoreError::Database(sqlx::Error::RowNotFound));
        assert!(circuit.check().is_ok());
        circuit.report(&StoreError::Database(sqlx::Error::Io(
            std::io::Error::from(std::io::ErrorKind::ConnectionRefused),
        )));
        assert!(matches!(
            circuit.check(),
            Err(StoreError::Unavailable { .. })
        ));
        circuit.mark_up();
        assert!(circuit.check().is_ok());
    }
}
