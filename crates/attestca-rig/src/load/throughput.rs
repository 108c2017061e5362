//! `load throughput`: closed loop. C rigs, each on its own keep-alive connection, send attested
//! enrollments back to back for the duration (or until a count). Every enrollment needs a fresh
//! nonce, a freshly "manufactured" secure element and a CSR: those are prepared *before* the
//! measured window, so that the window measures the CA; if the stock runs out, the rest are
//! prepared inside the window and the report says the client was the bottleneck. The latency
//! is the client-side round trip of `simpleenroll` (TLS on a warm connection, HTTP, the CA's
//! verification, signing and database write).

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use serde::Serialize;

use super::report::TimelinePoint;
use super::window::{RunFigures, Window};
use super::{LoadError, LoadReport, Target, failure_lines};
use crate::client::EstClient;
use crate::personalisation::{Failure, Step};
use attestca_sim::secure_element::{KeyClaims, SimulatedVendor};

/// Options of a throughput run.
#[derive(Clone, Debug)]
pub struct ThroughputOptions {
    pub concurrency: usize,
    pub duration: Duration,
    /// Stop after this many enrollments (successes and failures).
    pub count: Option<u64>,
    /// Enrollments to prepare before the window; default from the duration and count.
    pub prepare: Option<usize>,
}

impl ThroughputOptions {
    /// The default stock: enough for ~1,500 enrollments/s (capped: nonces expire after
    /// five minutes on a default server), or the count.
    fn stock(&self) -> usize {
        if let Some(n) = self.prepare {
            return n;
        }
        let by_time = (self.duration.as_secs_f64() * 1500.0).ceil() as usize;
        let wanted = match self.count {
            Some(c) => usize::try_from(c).unwrap_or(usize::MAX).min(by_time.max(1)),
            None => by_time,
        };
        wanted.clamp(self.concurrency * 4, 200_000)
    }
}

/// The JSON report (interface contract 1: completed, failed, per_second, latency_ms — the
/// latency being the client-side simpleenroll round trip of successful enrollments).
#[derive(Clone, Debug, Serialize)]
pub struct ThroughputReport {
    pub mode: &'static str,
    pub server: String,
    pub concurrency: usize,
    #[serde(flatten)]
    pub figures: RunFigures,
    pub prepared: usize,
    pub preparation_seconds: f64,
    pub prepared_in_window: u64,
    /// The CA's own enrollment time over the run, from its /metrics (with --metrics).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ca_side: Option<super::server_metrics::ServerLatency>,
}

impl LoadReport for ThroughputReport {
    fn summary(&self) -> String {
        let f = &self.figures;
        format!(
            "throughput against {}: {} rigs, {:.1} s window\n  attested enrollments: {} completed, {} failed, {:.1} per second\n  latency (simpleenroll round trip, client side): {}\n{}{}  client: {}\n",
            self.server,
            self.concurrency,
            f.window_seconds,
            f.completed,
            f.failed,
            f.per_second,
            f.latency_ms.summary(),
            self.ca_side
                .as_ref()
                .map(|c| c.summary())
                .unwrap_or_default(),
            failure_lines(&f.failures),
            f.client.note
        )
    }

    fn chart_titles(&self) -> (String, String) {
        (
            format!(
                "attestca throughput: attested enrollments against {}",
                self.server
            ),
            format!(
                "{} rigs, {:.1} s: {}",
                self.concurrency,
                self.figures.window_seconds,
                self.figures.headline("enrollments")
            ),
        )
    }

    fn latency_label(&self) -> &'static str {
        "simpleenroll latency"
    }

    fn timeline(&self) -> &[TimelinePoint] {
        &self.figures.timeline
    }
}

/// One prepared attested CSR (nonce fetched, element manufactured, key generated and
/// attested) and the moment its nonce stops being accepted.
struct PreparedCsr {
    csr: Vec<u8>,
    usable_until: Option<Instant>,
}

impl PreparedCsr {
    fn is_usable(&self, now: Instant) -> bool {
        self.usable_until.is_none_or(|until| now < until)
    }
}

/// Margin before a nonce's expiry after which a prepared CSR is no longer sent: the request
/// must reach the CA's nonce check before the nonce expires.
const NONCE_MARGIN: Duration = Duration::from_secs(5);

async fn prepare_one(est: &EstClient, vendor: &SimulatedVendor) -> anyhow::Result<PreparedCsr> {
    let asked = Instant::now();
    let (nonce, lifetime) = est.nonce_with_lifetime().await?;
    let element = vendor.manufacture()?;
    let key = attestca_sim::device::DeviceKey::generate()?;
    let attestation = element.attest(&key.public_key()?, &nonce, KeyClaims::default())?;
    let cn = format!("load-{}", hex::encode(&element.serial));
    Ok(PreparedCsr {
        csr: key.csr_with_attributes(&cn, vec![element.evidence_attribute(&attestation)?])?,
        usable_until: lifetime.map(|secs| {
            (asked + Duration::from_secs(secs))
                .checked_sub(NONCE_MARGIN)
                .unwrap_or(asked)
        }),
    })
}

/// Runs the load; progress on stderr.
pub async fn run(
    target: &Target,
    options: &ThroughputOptions,
) -> Result<ThroughputReport, LoadError> {
    if options.concurrency == 0 {
        return Err(LoadError::Options(
            "--concurrency must be at least 1".into(),
        ));
    }
    let vendor = target.vendor()?;
    let rigs = (0..options.concurrency)
        .map(|_| target.client().map(Arc::new))
        .collect::<Result<Vec<_>, _>>()?;

    // Preparation, outside the window: each rig prepares its share over its own connection.
    let stock = options.stock();
    eprintln!(
        "preparing {stock} attested CSRs (nonce, simulated secure element, key, attestation) on {} connections…",
        rigs.len()
    );
    let prep_start = Instant::now();
    let per_rig = stock.div_ceil(rigs.len());
    let mut preparing = tokio::task::JoinSet::new();
    for rig in &rigs {
        let (rig, vendor) = (rig.clone(), vendor.clone());
        preparing.spawn(async move {
            let mut out = std::collections::VecDeque::with_capacity(per_rig);
            for _ in 0..per_rig {
                out.push_back(prepare_one(&rig, &vendor).await?);
            }
            anyhow::Ok(out)
        });
    }
    let mut queues = Vec::with_capacity(rigs.len());
    while let Some(joined) = preparing.join_next().await {
        let prepared = joined
            .map_err(|e| LoadError::Unreachable(e.to_string()))?
            .map_err(|e| LoadError::Unreachable(format!("{}: {e:#}", target.server)))?;
        queues.push(prepared);
    }
    let preparation = prep_start.elapsed();
    eprintln!(
        "prepared in {:.1} s; measuring for {:.0} s with {} rigs",
        preparation.as_secs_f64(),
        options.duration.as_secs_f64(),
        rigs.len()
    );
    // The oldest prepared nonce expires first; a window running past it prepares inside the
    // window (counted, and reported as the client being the bottleneck) instead of sending
    // CSRs the CA must refuse as expired.
    let window_end = Instant::now() + options.duration;
    if let Some(first_expiry) = queues
        .iter()
        .filter_map(|q| q.front().and_then(|p| p.usable_until))
        .min()
        && first_expiry < window_end
    {
        eprintln!(
            "note: the server's nonces expire {:.0} s into the window; CSRs prepared before it are used oldest first and then prepared inside the window",
            first_expiry
                .saturating_duration_since(Instant::now())
                .as_secs_f64()
        );
    }

    // The measured window.
    let window = Window::open("enrollments", options.duration);
    let (recorder, deadline) = (window.recorder.clone(), window.deadline);
    let started = Arc::new(AtomicU64::new(0));
    let starved = Arc::new(AtomicU64::new(0));
    let mut workers = tokio::task::JoinSet::new();
    for (rig, mut queue) in rigs.into_iter().zip(queues) {
        let (recorder, started, starved, vendor) = (
            recorder.clone(),
            started.clone(),
            starved.clone(),
            vendor.clone(),
        );
        let count = options.count;
        workers.spawn(async move {
            while Instant::now() < deadline {
                if count.is_some_and(|max| started.fetch_add(1, Ordering::Relaxed) >= max) {
                    break;
                }
                let now = Instant::now();
                while queue.front().is_some_and(|p| !p.is_usable(now)) {
                    queue.pop_front();
                }
                let csr = match queue.pop_front() {
                    Some(prepared) => prepared.csr,
                    None => {
                        starved.fetch_add(1, Ordering::Relaxed);
                        match prepare_one(&rig, &vendor).await {
                            Ok(prepared) => prepared.csr,
                            Err(e) => {
                                recorder.failure(Failure::new(Step::Nonce, e).reason());
                                continue;
                            }
                        }
                    }
                };
                let sent = Instant::now();
                match rig.simpleenroll(&csr).await {
                    Ok(_) => recorder.success(sent.elapsed()),
                    Err(e) => recorder.failure(Failure::new(Step::Enroll, e).reason()),
                }
            }
        });
    }
    while workers.join_next().await.is_some() {}
    let prepared_in_window = starved.load(Ordering::Relaxed);
    Ok(ThroughputReport {
        mode: "throughput",
        server: target.server.clone(),
        concurrency: options.concurrency,
        figures: window.close(prepared_in_window).await,
        prepared: stock,
        preparation_seconds: preparation.as_secs_f64(),
        prepared_in_window,
        ca_side: None,
    })
}
