//! The background jobs a serving CA runs beside its listeners: the CRL publisher and OCSP
//! refresher loops, the database and key monitors, housekeeping, the TLS certificate reload on
//! SIGHUP, and — for a development install only — re-signing the test root's CRL.
//!
//! [`Jobs::start`] spawns them all from an assembled CA; [`Jobs::stop`] ends them once the
//! listeners have drained.

use std::sync::Arc;
use std::time::Duration;

use tokio::task::JoinHandle;

use super::Assembled;
use crate::config::Config;
use crate::enrollment::EnrollmentService;
use crate::server::{health, tls};
use crate::store::Store;

/// The running background jobs.
pub struct Jobs {
    tasks: Vec<JoinHandle<()>>,
}

impl Jobs {
    /// Spawns every job for `assembled` under `config`.
    pub fn start(assembled: &Assembled, config: &Config) -> Self {
        let mut tasks = vec![tokio::spawn(
            Arc::clone(&assembled.crl)
                .run(Duration::from_secs(config.revocation.crl_poll_secs.max(1))),
        )];
        if let Some(ocsp) = &assembled.ocsp {
            tasks.push(tokio::spawn(
                Arc::clone(ocsp).run(Duration::from_secs(config.revocation.ocsp_poll_secs.max(1))),
            ));
        }
        if let Some(log) = &assembled.log {
            tasks.push(tokio::spawn(Arc::clone(log).run()));
        }
        tasks.push(tokio::spawn({
            let store = assembled.store.clone();
            async move { store.monitor_availability().await }
        }));
        let mut keys = vec![Arc::clone(assembled.ca.signer())];
        keys.extend(assembled.ocsp.as_ref().map(|ocsp| ocsp.signer()));
        tasks.push(tokio::spawn(health::watch_keys(keys)));
        let supersede: Vec<(String, u64)> = config
            .profiles
            .iter()
            .filter_map(|(label, p)| {
                p.revoke_predecessor_after_secs
                    .filter(|n| *n > 0)
                    .map(|n| (label.clone(), n))
            })
            .collect();
        tasks.push(tokio::spawn(housekeeping(
            assembled.store.clone(),
            Arc::clone(&assembled.enrollment),
            config.database.retry_window_secs,
            supersede,
        )));
        tasks.push(tokio::spawn(reload_on_hangup(Arc::clone(
            &assembled.tls_certificate,
        ))));
        // A production root is offline and its ceremony writes the root's CRL: only a
        // development install, whose test root key is on disk, re-signs it.
        if crate::setup::has_test_root(config) {
            tasks.push(tokio::spawn(test_root_crl(config.clone())));
        }
        Self { tasks }
    }

    /// Ends every job.
    pub fn stop(self) {
        for task in self.tasks {
            task.abort();
        }
    }
}

/// Every minute: drops retry claims older than the retry window and long-expired nonces,
/// revokes renewed certificates whose profile's overlap has passed, forgets idle request
/// budgets. All idempotent, so every
/// instance sharing a database may run it.
async fn housekeeping(
    store: Store,
    enrollment: Arc<EnrollmentService>,
    window_secs: u64,
    supersede: Vec<(String, u64)>,
) {
    let revocations = crate::revocation::Revocations::new(store.clone());
    let mut tick = tokio::time::interval(Duration::from_secs(60));
    loop {
        tick.tick().await;
        enrollment.purge_budgets();
        let now = crate::issuance::unix_seconds(std::time::SystemTime::now());
        let before = i64::try_from(now.saturating_sub(window_secs)).unwrap_or(0);
        match store.purge_retry_claims(before).await {
            Ok(0) => {}
            Ok(n) => tracing::debug!(purged = n, "expired retry claims removed"),
            Err(e) => tracing::warn!(error = %e, "could not purge expired retry claims"),
        }
        // Expired nonces are kept a while so that a late use is reported as expired.
        if let Err(e) = store.purge_nonces(before - 3600).await {
            tracing::warn!(error = %e, "could not purge expired nonces");
        }
        if let Err(e) = store.purge_challenges(before - 3600).await {
            tracing::warn!(error = %e, "could not purge expired attestation-key challenges");
        }
        let now = i64::try_from(now).unwrap_or(i64::MAX);
        for (profile, overlap) in &supersede {
            // Audited as system:overlap-expiry, in the transaction that revokes.
            let renewed_before = now.saturating_sub(i64::try_from(*overlap).unwrap_or(i64::MAX));
            match revocations
                .expire_overlaps(profile, renewed_before, now)
                .await
            {
                Ok(serials) if serials.is_empty() => {}
                Ok(serials) => {
                    tracing::info!(profile = %profile, revoked = serials.len(), "superseded certificates revoked")
                }
                Err(e) => tracing::warn!(error = %e, "could not revoke superseded certificates"),
            }
        }
    }
}

/// On SIGHUP, re-reads the TLS server certificate and key (a renewed certificate is served
/// without a restart; a broken file leaves the current one in service).
async fn reload_on_hangup(certificate: Arc<tls::ServerCertificate>) {
    #[cfg(unix)]
    {
        let Ok(mut hangups) =
            tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup())
        else {
            return;
        };
        while hangups.recv().await.is_some() {
            match certificate.reload() {
                Ok(()) => tracing::info!("SIGHUP: TLS server certificate reloaded"),
                Err(e) => {
                    tracing::error!(error = %e, "SIGHUP: TLS server certificate not reloaded; the previous one stays in service")
                }
            }
        }
    }
    #[cfg(not(unix))]
    std::future::pending::<()>().await;
}

/// A development install: keeps the test root's CRL current (re-signed at half its validity).
async fn test_root_crl(config: Config) {
    let mut tick = tokio::time::interval(Duration::from_secs(60));
    loop {
        tick.tick().await;
        if let Err(e) = crate::setup::refresh_test_root_crl(&config) {
            tracing::warn!(error = %e, "could not re-sign the test root's CRL");
        }
    }
}
