//! Health as operators and orchestrators see it: liveness, readiness (the database answers,
//! the keys sign, the OCSP responses are pre-signed, and the process is not draining), the
//! monitor that brings a key back by itself, and the gauges refreshed when Prometheus scrapes.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::issuance::IssuingCa;
use crate::metrics::METRICS;
use crate::ocsp::OcspResponder;
use crate::revocation::crl::CrlPublisher;
use crate::signer::Signer;
use crate::store::Store;

/// How long a readiness verdict is reused: probes stay cheap (no HSM round trip per probe).
const READINESS_TTL: Duration = Duration::from_secs(1);
/// How often the key monitor looks at the keys, and tries to bring back one that is down.
const KEY_MONITOR_INTERVAL: Duration = Duration::from_secs(1);

/// The components readiness reports on, in the order they are checked.
const COMPONENTS: [&str; 4] = ["database", "signer", "ocsp", "process"];

/// A component that is not ready, and why.
#[derive(Clone, Debug)]
pub struct NotReady {
    /// `database`, `signer`, `ocsp` (responses not pre-signed yet) or `process` (draining).
    pub component: &'static str,
    pub reason: String,
}

/// What `/readyz` and `/metrics` look at.
pub struct HealthSources {
    pub store: Store,
    pub ca: Arc<IssuingCa>,
    pub crl: Arc<CrlPublisher>,
    pub ca_name: String,
    pub ocsp: Option<Arc<OcspResponder>>,
    draining: AtomicBool,
    last_readiness: Mutex<Option<(Instant, Result<(), NotReady>)>>,
}

impl HealthSources {
    pub fn new(
        store: Store,
        ca: Arc<IssuingCa>,
        crl: Arc<CrlPublisher>,
        ca_name: String,
        ocsp: Option<Arc<OcspResponder>>,
    ) -> Self {
        Self {
            store,
            ca,
            crl,
            ca_name,
            ocsp,
            draining: AtomicBool::new(false),
            last_readiness: Mutex::new(None),
        }
    }

    /// From now on readiness says "draining" (the process is stopping: a load balancer
    /// should send new work elsewhere while the requests in flight finish).
    pub fn start_draining(&self) {
        self.draining.store(true, Ordering::SeqCst);
        METRICS
            .component_ready
            .with_label_values(&["process"])
            .set(0);
    }

    /// Whether the CA can serve enrollments now: not draining, the database answers a query,
    /// the keys sign, and the OCSP responder has pre-signed its responses. Checked at most
    /// once a second (draining is seen at once).
    pub async fn readiness(&self) -> Result<(), NotReady> {
        if self.draining.load(Ordering::SeqCst) {
            return Err(NotReady {
                component: "process",
                reason: "draining: the process is stopping; requests in flight are finishing"
                    .into(),
            });
        }
        if let Ok(last) = self.last_readiness.lock()
            && let Some((at, verdict)) = last.as_ref()
            && at.elapsed() < READINESS_TTL
        {
            return verdict.clone();
        }
        let verdict = self.check().await;
        // A component after the failing one was not checked: it is reported not ready.
        let failed_at = verdict
            .as_ref()
            .err()
            .and_then(|e| COMPONENTS.iter().position(|c| *c == e.component));
        for (i, component) in COMPONENTS.iter().enumerate() {
            let ready = failed_at.is_none_or(|f| i < f);
            METRICS
                .component_ready
                .with_label_values(&[component])
                .set(i64::from(ready));
        }
        if let Ok(mut last) = self.last_readiness.lock() {
            *last = Some((Instant::now(), verdict.clone()));
        }
        verdict
    }

    async fn check(&self) -> Result<(), NotReady> {
        let not_ready = |component| move |reason| NotReady { component, reason };
        tokio::time::timeout(Duration::from_secs(5), self.store.ping())
            .await
            .map_err(|_| "no answer within 5 s".to_owned())
            .and_then(|r| r.map_err(|e| e.to_string()))
            .map_err(not_ready("database"))?;
        probe_signature(Arc::clone(self.ca.signer()))
            .await
            .map_err(not_ready("signer"))?;
        if let Some(ocsp) = &self.ocsp {
            probe_signature(ocsp.signer())
                .await
                .map_err(|e| format!("OCSP responder key: {e}"))
                .map_err(not_ready("signer"))?;
            if !ocsp.is_warm() {
                return Err(NotReady {
                    component: "ocsp",
                    reason: format!("pre-signing OCSP responses ({} so far)", ocsp.cached()),
                });
            }
        }
        Ok(())
    }

    /// Sets the gauges that are read, not counted: pool occupancy, CRL, OCSP cache, nonces,
    /// CA expiry.
    pub async fn refresh_gauges(&self) {
        let pool = self.store.pool();
        let (size, idle) = (i64::from(pool.size()), pool.num_idle() as i64);
        METRICS
            .db_connections
            .with_label_values(&["idle"])
            .set(idle);
        METRICS
            .db_connections
            .with_label_values(&["in_use"])
            .set((size - idle).max(0));
        METRICS
            .db_max_connections
            .set(i64::from(pool.options().get_max_connections()));
        let now = attestca_core::time::unix_now();
        let ca = [self.ca_name.as_str()];
        if let Some(crl) = self.crl.current() {
            METRICS.crl_entries.with_label_values(&ca).set(crl.entries);
            METRICS.crl_number.with_label_values(&ca).set(crl.number);
            METRICS
                .crl_this_update
                .with_label_values(&ca)
                .set(crl.this_update as f64);
            METRICS
                .crl_next_update
                .with_label_values(&ca)
                .set(crl.next_update as f64);
            METRICS
                .crl_age
                .with_label_values(&ca)
                .set((now - crl.this_update).max(0) as f64);
        }
        METRICS
            .ca_not_after
            .with_label_values(&ca)
            .set(self.ca.not_after() as f64);
        if let Some(ocsp) = &self.ocsp {
            METRICS.ocsp_cached_responses.set(ocsp.cached() as i64);
            if let Some(earliest) = ocsp.earliest_next_update() {
                METRICS.ocsp_earliest_next_update.set(earliest as f64);
            }
        }
        match self.store.outstanding_nonces(now).await {
            Ok(n) => METRICS.nonces_outstanding.set(n),
            Err(e) => tracing::debug!(error = %e, "could not count outstanding nonces"),
        }
    }
}

/// One signature with `signer`, within 5 s.
async fn probe_signature(signer: Arc<dyn Signer>) -> Result<(), String> {
    let signed = tokio::time::timeout(
        Duration::from_secs(5),
        tokio::task::spawn_blocking(move || signer.sign(b"attestca readiness probe")),
    )
    .await;
    match signed {
        Ok(Ok(Ok(_))) => Ok(()),
        Ok(Ok(Err(e))) => Err(e.to_string()),
        Ok(Err(e)) => Err(format!("signing task: {e}")),
        Err(_) => Err("no signature within 5 s".into()),
    }
}

/// Every second, tries to bring back a key that is down (the CA key and the OCSP responder
/// key): without it a key would come back only when a request happens to try it after its
/// backoff. Runs until the task is dropped.
pub async fn watch_keys(keys: Vec<Arc<dyn Signer>>) {
    let mut tick = tokio::time::interval(KEY_MONITOR_INTERVAL);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        for key in &keys {
            if key.available() {
                continue;
            }
            let key = Arc::clone(key);
            match tokio::task::spawn_blocking(move || key.recover()).await {
                Ok(Ok(())) => {}
                Ok(Err(e)) => tracing::debug!(error = %e, "the key is still unavailable"),
                Err(e) => tracing::warn!(error = %e, "key recovery task failed"),
            }
        }
    }
}
