//! `load factory`: open loop. N stations each start a board every takt T whether or not the
//! previous board is done (a slow CA does not slow the line's arrivals; boards then overlap),
//! and run the full personalisation sequence per board. Station starts are staggered over the
//! first takt so that arrivals are spread as on real lines. The CA latency is the client-side
//! round trip of `simpleenroll` (the nonce round trip is reported beside it); the takt verdict
//! is the share of boards whose whole sequence fit the takt, and the CA's share of the budget.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde::Serialize;

use super::report::{LatencyHistogram, Percentiles, Recorder, TimelinePoint};
use super::window::Window;
use super::{LoadError, LoadReport, Target, failure_lines};
use crate::personalisation::{
    KeygenDelay, ManufacturingLog, ManufacturingRecord, Outcome, Station, Step,
};

/// Options of a factory run.
#[derive(Clone, Debug)]
pub struct FactoryOptions {
    pub stations: usize,
    pub takt: Duration,
    pub duration: Duration,
    /// Stop starting boards after this many (over all stations).
    pub count: Option<u64>,
    pub keygen: KeygenDelay,
    /// Manufacturing log (JSON lines), appended to.
    pub log: Option<PathBuf>,
    /// How long to wait, after the last board started, for boards still in progress.
    pub drain: Duration,
}

#[derive(Default)]
struct Tally {
    steps: BTreeMap<Step, LatencyHistogram>,
    total: LatencyHistogram,
    nonce: LatencyHistogram,
    ca_share: LatencyHistogram,
    passed: u64,
    takt_met: u64,
}

/// The JSON report (interface contract 2: boards, failed, takt_met_fraction, ca_latency_ms).
#[derive(Clone, Debug, Serialize)]
pub struct FactoryReport {
    pub mode: &'static str,
    pub server: String,
    pub stations: usize,
    pub takt_seconds: f64,
    pub keygen_ms: String,
    pub duration_seconds: f64,
    /// Boards that reached an outcome (passed + failed).
    pub boards: u64,
    pub passed: u64,
    pub failed: u64,
    /// Boards started but not finished when the drain time ran out.
    pub unfinished: u64,
    pub takt_met: u64,
    /// takt_met / boards.
    pub takt_met_fraction: f64,
    /// Client-side simpleenroll round trip (the CA's work for a board).
    pub ca_latency_ms: Percentiles,
    /// Client-side nonce round trip.
    pub nonce_latency_ms: Percentiles,
    /// (nonce + enroll) as a percentage of the takt budget, per board.
    pub ca_share_of_takt_percent: Percentiles,
    /// The whole sequence per board.
    pub board_ms: Percentiles,
    pub steps_ms: BTreeMap<&'static str, Percentiles>,
    pub failures: BTreeMap<String, u64>,
    pub verdict: String,
    /// The machine's 1/5/15-minute load averages when the run started.
    pub load_average_at_start: Option<[f64; 3]>,
    /// The CA's own enrollment time over the run, from its /metrics (with --metrics).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ca_side: Option<super::server_metrics::ServerLatency>,
    pub timeline: Vec<TimelinePoint>,
}

impl LoadReport for FactoryReport {
    fn summary(&self) -> String {
        let mut out = format!(
            "factory against {}: {} stations × {:.3} s takt for {:.0} s (keygen {})\n  boards: {} ({} passed, {} failed, {} unfinished)\n  takt met by {} boards ({:.2}%)\n  per step (ms):\n",
            self.server,
            self.stations,
            self.takt_seconds,
            self.duration_seconds,
            self.keygen_ms,
            self.boards,
            self.passed,
            self.failed,
            self.unfinished,
            self.takt_met,
            self.takt_met_fraction * 100.0
        );
        for step in Step::ALL {
            if let Some(p) = self.steps_ms.get(step.as_str()) {
                out.push_str(&format!("    {:<20} {}\n", step.as_str(), p.summary()));
            }
        }
        out.push_str(&format!(
            "    {:<20} {}\n  CA latency (simpleenroll round trip, client side): {}\n{}  CA share of the takt (nonce + enroll): p50 {:.3}%  p99 {:.3}%  max {:.3}%\n{}  verdict: {}\n",
            "whole board",
            self.board_ms.summary(),
            self.ca_latency_ms.summary(),
            self.ca_side.as_ref().map(|c| c.summary()).unwrap_or_default(),
            self.ca_share_of_takt_percent.p50,
            self.ca_share_of_takt_percent.p99,
            self.ca_share_of_takt_percent.max,
            failure_lines(&self.failures),
            self.verdict
        ));
        out
    }

    fn chart_titles(&self) -> (String, String) {
        (
            format!("attestca factory line against {}", self.server),
            format!(
                "{} stations × {:.2} s takt: {} boards, {} failed, takt met {:.2}%; CA p99 {:.2} ms, p99.9 {:.2} ms",
                self.stations,
                self.takt_seconds,
                self.boards,
                self.failed,
                self.takt_met_fraction * 100.0,
                self.ca_latency_ms.p99,
                self.ca_latency_ms.p999
            ),
        )
    }

    fn latency_label(&self) -> &'static str {
        "CA latency (simpleenroll)"
    }

    fn timeline(&self) -> &[TimelinePoint] {
        &self.timeline
    }
}

/// Runs the line; progress on stderr.
pub async fn run(target: &Target, options: &FactoryOptions) -> Result<FactoryReport, LoadError> {
    if options.stations == 0 {
        return Err(LoadError::Options("--stations must be at least 1".into()));
    }
    if options.takt.is_zero() {
        return Err(LoadError::Options("--takt must be positive".into()));
    }
    let vendor = target.vendor()?;
    let log = options
        .log
        .as_deref()
        .map(ManufacturingLog::open)
        .transpose()?
        .map(Arc::new);
    eprintln!("setting up {} stations (cacerts each)…", options.stations);
    let mut stations = Vec::with_capacity(options.stations);
    for i in 0..options.stations {
        let station = Station::new(
            format!("station-{:03}", i + 1),
            target.client()?,
            vendor.clone(),
            options.keygen,
            options.takt,
        );
        stations.push(station);
    }
    let stations = futures::future::try_join_all(stations)
        .await?
        .into_iter()
        .map(Arc::new)
        .collect::<Vec<_>>();

    let window = Window::open("boards", options.duration);
    let (start, recorder) = (window.start, window.recorder.clone());
    let tally = Arc::new(Mutex::new(Tally::default()));
    let end_of_arrivals = start + options.duration;
    let started = Arc::new(std::sync::atomic::AtomicU64::new(0));
    let mut lines = tokio::task::JoinSet::new();
    let n = stations.len() as u32;
    for (i, station) in stations.into_iter().enumerate() {
        let offset = options.takt * u32::try_from(i).unwrap_or(u32::MAX) / n;
        let (recorder, tally, log, started) = (
            recorder.clone(),
            tally.clone(),
            log.clone(),
            started.clone(),
        );
        let (takt, count, drain) = (options.takt, options.count, options.drain);
        lines.spawn(async move {
            let mut boards = tokio::task::JoinSet::new();
            let mut ticker = tokio::time::interval_at((start + offset).into(), takt);
            ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
            let mut seq = 0u64;
            loop {
                ticker.tick().await;
                // Finished boards leave the set as the line runs: a shift-long run must not
                // keep every board's task until the end.
                while boards.try_join_next().is_some() {}
                if Instant::now() >= end_of_arrivals
                    || count.is_some_and(|max| {
                        started.fetch_add(1, std::sync::atomic::Ordering::Relaxed) >= max
                    })
                {
                    break;
                }
                seq += 1;
                let unit = format!("{}-{seq:06}", station.name);
                let (station, recorder, tally, log) = (
                    station.clone(),
                    recorder.clone(),
                    tally.clone(),
                    log.clone(),
                );
                boards.spawn(async move {
                    let record = station.personalise(&unit).await;
                    account(&record, &recorder, &tally);
                    if let Some(log) = log
                        && let Err(e) = log.append(&record)
                    {
                        eprintln!("attestca-rig: {e}");
                    }
                });
            }
            let deadline = tokio::time::Instant::now() + drain;
            let mut unfinished = 0u64;
            loop {
                match tokio::time::timeout_at(deadline, boards.join_next()).await {
                    Ok(Some(_)) => {}
                    Ok(None) => break,
                    Err(_) => {
                        unfinished = boards.len() as u64;
                        boards.abort_all();
                        break;
                    }
                }
            }
            unfinished
        });
    }
    let mut unfinished = 0;
    while let Some(joined) = lines.join_next().await {
        unfinished += joined.unwrap_or(0);
    }
    let figures = window.close(0).await;

    let tally = tally.lock().unwrap_or_else(|p| p.into_inner());
    let failures = figures.failures;
    let failed: u64 = failures.values().sum();
    let boards = tally.passed + failed;
    let takt_met_fraction = if boards == 0 {
        0.0
    } else {
        tally.takt_met as f64 / boards as f64
    };
    let ca_share = tally.ca_share.percentiles();
    let verdict = if boards == 0 {
        "NO DATA: no board finished".to_owned()
    } else if failed == 0 && unfinished == 0 && tally.takt_met == boards {
        format!(
            "MET: every board fit the {:.3} s takt; the CA took at most {:.3}% of it",
            options.takt.as_secs_f64(),
            ca_share.max
        )
    } else {
        format!(
            "MISSED: {:.2}% of boards fit the {:.3} s takt ({} failed, {} unfinished); CA share p99 {:.3}%",
            takt_met_fraction * 100.0,
            options.takt.as_secs_f64(),
            failed,
            unfinished,
            ca_share.p99
        )
    };
    Ok(FactoryReport {
        mode: "factory",
        server: target.server.clone(),
        stations: options.stations,
        takt_seconds: options.takt.as_secs_f64(),
        keygen_ms: options.keygen.to_string(),
        duration_seconds: figures.window_seconds,
        boards,
        passed: tally.passed,
        failed,
        unfinished,
        takt_met: tally.takt_met,
        takt_met_fraction,
        ca_latency_ms: figures.latency_ms,
        nonce_latency_ms: tally.nonce.percentiles(),
        ca_share_of_takt_percent: ca_share,
        board_ms: tally.total.percentiles(),
        steps_ms: tally
            .steps
            .iter()
            .map(|(step, h)| (step.as_str(), h.percentiles()))
            .collect(),
        failures,
        verdict,
        load_average_at_start: figures.load_average_at_start,
        ca_side: None,
        timeline: figures.timeline,
    })
}

/// Adds a finished board to the run's figures.
fn account(record: &ManufacturingRecord, recorder: &Recorder, tally: &Mutex<Tally>) {
    let mut tally = tally.lock().unwrap_or_else(|p| p.into_inner());
    for (step, took) in &record.steps_ms.order {
        tally.steps.entry(*step).or_default().record(*took);
    }
    if let Some(nonce) = record.steps_ms.get(Step::Nonce) {
        tally.nonce.record(nonce);
    }
    let total = Duration::from_secs_f64(record.total_ms / 1000.0);
    tally.total.record(total);
    // Recorded as a duration of `share` milliseconds, so that the histogram's millisecond
    // read-out is the percentage (to 0.001 %).
    let share = if record.takt_ms > 0.0 {
        record.ca_ms / record.takt_ms * 100.0
    } else {
        0.0
    };
    tally
        .ca_share
        .record(Duration::from_secs_f64(share.max(0.0) / 1000.0));
    if record.takt_met {
        tally.takt_met += 1;
    }
    match (&record.outcome, &record.failure) {
        (Outcome::Pass, _) => {
            tally.passed += 1;
            drop(tally);
            if let Some(enroll) = record.steps_ms.get(Step::Enroll) {
                recorder.success(enroll);
            }
        }
        (Outcome::Fail, failure) => {
            drop(tally);
            recorder.failure(
                failure
                    .as_ref()
                    .map(|f| f.reason())
                    .unwrap_or_else(|| "unknown".into()),
            );
        }
    }
}
