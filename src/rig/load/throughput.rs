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

use super::progress::Progress;
use super::report::{ClientLoad, Percentiles, Recorder, TimelinePoint, process_cpu_time};
use super::{LoadError, Target, failure_lines};
use crate::rig::client::EstClient;
use crate::rig::personalisation::{Failure, Step};
use crate::rig::secure_element::{KeyClaims, SimulatedVendor};

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

/// The JSON report (interface contract 1: completed, failed, per_second, latency_ms).
#[derive(Clone, Debug, Serialize)]
pub struct ThroughputReport {
    pub mode: &'static str,
    pub server: String,
    pub concurrency: usize,
    pub completed: u64,
    pub failed: u64,
    /// Successful enrollments per second of the measured window.
    pub per_second: f64,
    /// Client-side simpleenroll round trip of successful enrollments.
    pub latency_ms: Percentiles,
    pub failures: std::collections::BTreeMap<String, u64>,
    pub window_seconds: f64,
    pub prepared: usize,
    pub preparation_seconds: f64,
    pub prepared_in_window: u64,
    pub client: ClientLoad,
    /// The machine's 1/5/15-minute load averages when the run started.
    pub load_average_at_start: Option<[f64; 3]>,
    /// The CA's own enrollment time over the run, from its /metrics (with --metrics).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ca_side: Option<super::server_metrics::ServerLatency>,
    pub timeline: Vec<TimelinePoint>,
}

impl ThroughputReport {
    pub fn summary(&self) -> String {
        format!(
            "throughput against {}: {} rigs, {:.1} s window\n  attested enrollments: {} completed, {} failed, {:.1} per second\n  latency (simpleenroll round trip, client side): {}\n{}{}  client: {}\n",
            self.server,
            self.concurrency,
            self.window_seconds,
            self.completed,
            self.failed,
            self.per_second,
            self.latency_ms.summary(),
            self.ca_side
                .as_ref()
                .map(|c| c.summary())
                .unwrap_or_default(),
            failure_lines(&self.failures),
            self.client.note
        )
    }
}

/// One prepared attested CSR: nonce fetched, element manufactured, key generated and attested.
pub async fn prepare_one(est: &EstClient, vendor: &SimulatedVendor) -> anyhow::Result<Vec<u8>> {
    let nonce = est.nonce().await?;
    let element = vendor.manufacture()?;
    let key = crate::rig::device::DeviceKey::generate()?;
    let attestation = element.attest(&key.public_key()?, &nonce, KeyClaims::default())?;
    let cn = format!("load-{}", hex::encode(&element.serial));
    key.csr_with_attributes(&cn, vec![element.evidence_attribute(&attestation)?])
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
            let mut out = Vec::with_capacity(per_rig);
            for _ in 0..per_rig {
                out.push(prepare_one(&rig, &vendor).await?);
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

    // The measured window.
    let load_average_at_start = super::server_metrics::load_average();
    let cpu_before = process_cpu_time();
    let start = Instant::now();
    let recorder = Arc::new(Recorder::new(start));
    let progress = Progress::start("enrollments", options.duration, recorder.clone());
    let deadline = start + options.duration;
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
                let csr = match queue.pop() {
                    Some(csr) => csr,
                    None => {
                        starved.fetch_add(1, Ordering::Relaxed);
                        match prepare_one(&rig, &vendor).await {
                            Ok(csr) => csr,
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
    let window = start.elapsed();
    let cpu = process_cpu_time().saturating_sub(cpu_before);
    progress.finish().await;

    let latency = recorder.latency();
    let failures = recorder.failures();
    let failed = failures.values().sum();
    let prepared_in_window = starved.load(Ordering::Relaxed);
    Ok(ThroughputReport {
        mode: "throughput",
        server: target.server.clone(),
        concurrency: options.concurrency,
        completed: latency.count,
        failed,
        per_second: latency.count as f64 / window.as_secs_f64().max(1e-9),
        latency_ms: latency,
        failures,
        window_seconds: window.as_secs_f64(),
        prepared: stock,
        preparation_seconds: preparation.as_secs_f64(),
        prepared_in_window,
        client: ClientLoad::assess(cpu, window, prepared_in_window),
        load_average_at_start,
        ca_side: None,
        timeline: recorder.timeline(),
    })
}
