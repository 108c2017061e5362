//! The measured window every mode shares: the clock, the recorder, live progress, and the
//! client's CPU time and the machine's load while it runs; closed into [`RunFigures`].

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde::Serialize;

use super::progress::Progress;
use super::report::{ClientLoad, Percentiles, Recorder, TimelinePoint, process_cpu_time};
use super::server_metrics::load_average;

/// The figures of a measured window (flattened into each mode's JSON report).
#[derive(Clone, Debug, Serialize)]
pub struct RunFigures {
    pub completed: u64,
    pub failed: u64,
    /// Successful operations per second of the window.
    pub per_second: f64,
    /// Client-side latency of successful operations.
    pub latency_ms: Percentiles,
    pub failures: BTreeMap<String, u64>,
    pub window_seconds: f64,
    pub client: ClientLoad,
    /// The machine's 1/5/15-minute load averages when the window opened.
    pub load_average_at_start: Option<[f64; 3]>,
    /// CPU of the accounted processes over the window (`--account`), per operation.
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub processes: BTreeMap<String, super::accounting::ProcessCpu>,
    /// The whole machine over the window.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub machine: Option<super::accounting::MachineCpu>,
    pub timeline: Vec<TimelinePoint>,
}

impl RunFigures {
    /// `N <what> (R/s), F failed; p50 … ms, p99 … ms, p99.9 … ms`
    pub fn headline(&self, what: &str) -> String {
        format!(
            "{} {what} ({:.1}/s), {} failed; p50 {:.2} ms, p99 {:.2} ms, p99.9 {:.2} ms",
            self.completed,
            self.per_second,
            self.failed,
            self.latency_ms.p50,
            self.latency_ms.p99,
            self.latency_ms.p999
        )
    }
}

/// An open measured window.
pub struct Window {
    pub start: Instant,
    pub deadline: Instant,
    pub recorder: Arc<Recorder>,
    progress: Progress,
    cpu_before: Duration,
    load_average: Option<[f64; 3]>,
    accounted: super::accounting::Reading,
}

impl Window {
    /// Opens the window now; progress reports `what`.
    pub fn open(what: &'static str, duration: Duration) -> Self {
        let load_average = load_average();
        let accounted = super::accounting::read();
        let cpu_before = process_cpu_time();
        let start = Instant::now();
        let recorder = Arc::new(Recorder::new(start));
        Self {
            start,
            deadline: start + duration,
            progress: Progress::start(what, duration, recorder.clone()),
            recorder,
            cpu_before,
            load_average,
            accounted,
        }
    }

    /// Closes the window once the work is done; `starved` counts operations the client had to
    /// prepare inside it.
    pub async fn close(self, starved: u64) -> RunFigures {
        let window = self.start.elapsed();
        let cpu = process_cpu_time().saturating_sub(self.cpu_before);
        let completed = self.recorder.latency().count;
        let (processes, machine) = super::accounting::since(&self.accounted, completed);
        self.progress.finish().await;
        let latency = self.recorder.latency();
        let failures = self.recorder.failures();
        RunFigures {
            completed: latency.count,
            failed: failures.values().sum(),
            per_second: latency.count as f64 / window.as_secs_f64().max(1e-9),
            latency_ms: latency,
            failures,
            window_seconds: window.as_secs_f64(),
            client: ClientLoad::assess(cpu, window, starved),
            load_average_at_start: self.load_average,
            processes,
            machine,
            timeline: self.recorder.timeline(),
        }
    }
}
