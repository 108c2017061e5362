//! Health as operators and orchestrators see it: liveness, readiness (the database answers and
//! the signer signs), and the gauges refreshed when Prometheus scrapes.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::issuance::IssuingCa;
use crate::metrics::METRICS;
use crate::ocsp::OcspResponder;
use crate::revocation::crl::CrlPublisher;
use crate::store::Store;

/// How long a readiness verdict is reused: probes stay cheap (no HSM round trip per probe).
const READINESS_TTL: Duration = Duration::from_secs(1);

/// A component that is not ready, and why.
#[derive(Clone, Debug)]
pub struct NotReady {
    /// `database` or `signer`.
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
            last_readiness: Mutex::new(None),
        }
    }

    /// Whether the CA can serve enrollments now: the database answers a query and the signer
    /// produces a signature. Checked at most once a second.
    pub async fn readiness(&self) -> Result<(), NotReady> {
        if let Ok(last) = self.last_readiness.lock()
            && let Some((at, verdict)) = last.as_ref()
            && at.elapsed() < READINESS_TTL
        {
            return verdict.clone();
        }
        let verdict = self.check().await;
        for component in ["database", "signer"] {
            let ready = match &verdict {
                Err(e) if e.component == component => 0,
                // A failing database hides the signer's state: the signer is checked after.
                Err(e) if e.component == "database" && component == "signer" => 0,
                _ => 1,
            };
            METRICS
                .component_ready
                .with_label_values(&[component])
                .set(ready);
        }
        if let Ok(mut last) = self.last_readiness.lock() {
            *last = Some((Instant::now(), verdict.clone()));
        }
        verdict
    }

    async fn check(&self) -> Result<(), NotReady> {
        tokio::time::timeout(Duration::from_secs(5), self.store.ping())
            .await
            .map_err(|_| "no answer within 5 s".to_owned())
            .and_then(|r| r.map_err(|e| e.to_string()))
            .map_err(|reason| NotReady {
                component: "database",
                reason,
            })?;
        let ca = Arc::clone(&self.ca);
        let signed = tokio::time::timeout(
            Duration::from_secs(5),
            tokio::task::spawn_blocking(move || ca.signer().sign(b"attestca readiness probe")),
        )
        .await;
        match signed {
            Ok(Ok(Ok(_))) => Ok(()),
            Ok(Ok(Err(e))) => Err(e.to_string()),
            Ok(Err(e)) => Err(format!("signing task: {e}")),
            Err(_) => Err("no signature within 5 s".into()),
        }
        .map_err(|reason| NotReady {
            component: "signer",
            reason,
        })
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
        let now = crate::issuance::unix_seconds(std::time::SystemTime::now()) as i64;
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
