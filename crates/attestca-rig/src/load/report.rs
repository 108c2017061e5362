//! What a load run measures: latency histograms (HdrHistogram, microsecond resolution), a
//! per-second timeline, failures by reason, and the client's own CPU time.

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use serde::Serialize;

/// Latencies from 1 µs to 10 minutes at three significant figures.
#[derive(Clone)]
pub struct LatencyHistogram(Histogram<u64>);

impl Default for LatencyHistogram {
    fn default() -> Self {
        Self::new()
    }
}

impl LatencyHistogram {
    pub fn new() -> Self {
        // The bounds are constants within what HdrHistogram accepts.
        Self(
            Histogram::new_with_bounds(1, 600_000_000, 3).unwrap_or_else(|_| {
                Histogram::new(3)
                    .unwrap_or_else(|_| unreachable!("3 significant figures are valid"))
            }),
        )
    }

    pub fn record(&mut self, latency: Duration) {
        let micros = u64::try_from(latency.as_micros()).unwrap_or(u64::MAX);
        self.0.saturating_record(micros.max(1));
    }

    pub fn len(&self) -> u64 {
        self.0.len()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    fn quantile_ms(&self, q: f64) -> f64 {
        if self.0.is_empty() {
            0.0
        } else {
            self.0.value_at_quantile(q) as f64 / 1000.0
        }
    }

    pub fn percentiles(&self) -> Percentiles {
        let empty = self.0.is_empty();
        Percentiles {
            count: self.0.len(),
            mean: if empty { 0.0 } else { self.0.mean() / 1000.0 },
            p50: self.quantile_ms(0.50),
            p90: self.quantile_ms(0.90),
            p99: self.quantile_ms(0.99),
            p999: self.quantile_ms(0.999),
            max: if empty {
                0.0
            } else {
                self.0.max() as f64 / 1000.0
            },
        }
    }
}

/// Latency percentiles in milliseconds.
#[derive(Clone, Copy, Debug, Default, Serialize)]
pub struct Percentiles {
    pub count: u64,
    pub mean: f64,
    pub p50: f64,
    pub p90: f64,
    pub p99: f64,
    pub p999: f64,
    pub max: f64,
}

impl Percentiles {
    /// `p50 1.2 / p90 … / max … ms`
    pub fn summary(&self) -> String {
        format!(
            "p50 {:.2}  p90 {:.2}  p99 {:.2}  p99.9 {:.2}  max {:.2} ms",
            self.p50, self.p90, self.p99, self.p999, self.max
        )
    }
}

/// One second of a run.
#[derive(Clone, Debug, Serialize)]
pub struct TimelinePoint {
    /// Seconds since the start of the measured window (the end of this second).
    pub second: u64,
    pub completed: u64,
    pub failed: u64,
    pub p50_ms: f64,
    pub p99_ms: f64,
    pub max_ms: f64,
}

#[derive(Default)]
struct Bucket {
    completed: u64,
    failed: u64,
    latency: LatencyHistogram,
}

#[derive(Default)]
struct Tally {
    latency: LatencyHistogram,
    seconds: Vec<Bucket>,
    failures: BTreeMap<String, u64>,
    completed: u64,
    failed: u64,
}

/// Collects the outcome of every operation of a run (shared by the workers).
pub struct Recorder {
    start: Instant,
    tally: Mutex<Tally>,
}

/// A snapshot for the progress line.
#[derive(Clone, Copy, Debug, Default)]
pub struct Snapshot {
    pub elapsed: Duration,
    pub completed: u64,
    pub failed: u64,
    /// Completions in the last full second.
    pub last_second: u64,
    pub p99_ms: f64,
}

impl Recorder {
    pub fn new(start: Instant) -> Self {
        Self {
            start,
            tally: Mutex::new(Tally::default()),
        }
    }

    pub fn start(&self) -> Instant {
        self.start
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Tally> {
        self.tally.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn bucket<'a>(&self, tally: &'a mut Tally) -> &'a mut Bucket {
        let second = usize::try_from(self.start.elapsed().as_secs()).unwrap_or(usize::MAX);
        if tally.seconds.len() <= second {
            tally.seconds.resize_with(second + 1, Bucket::default);
        }
        &mut tally.seconds[second]
    }

    /// A success with its latency.
    pub fn success(&self, latency: Duration) {
        let mut tally = self.lock();
        tally.completed += 1;
        tally.latency.record(latency);
        let bucket = self.bucket(&mut tally);
        bucket.completed += 1;
        bucket.latency.record(latency);
    }

    /// A failure, counted under `reason`.
    pub fn failure(&self, reason: String) {
        let mut tally = self.lock();
        tally.failed += 1;
        *tally.failures.entry(reason).or_default() += 1;
        self.bucket(&mut tally).failed += 1;
    }

    pub fn completed(&self) -> u64 {
        self.lock().completed
    }

    pub fn snapshot(&self) -> Snapshot {
        let elapsed = self.start.elapsed();
        let tally = self.lock();
        let current = usize::try_from(elapsed.as_secs()).unwrap_or(usize::MAX);
        let last_second = current
            .checked_sub(1)
            .and_then(|i| tally.seconds.get(i))
            .map(|b| b.completed)
            .unwrap_or(0);
        Snapshot {
            elapsed,
            completed: tally.completed,
            failed: tally.failed,
            last_second,
            p99_ms: tally.latency.percentiles().p99,
        }
    }

    pub fn latency(&self) -> Percentiles {
        self.lock().latency.percentiles()
    }

    pub fn failures(&self) -> BTreeMap<String, u64> {
        self.lock().failures.clone()
    }

    pub fn timeline(&self) -> Vec<TimelinePoint> {
        self.lock()
            .seconds
            .iter()
            .enumerate()
            .map(|(i, b)| {
                let p = b.latency.percentiles();
                TimelinePoint {
                    second: i as u64 + 1,
                    completed: b.completed,
                    failed: b.failed,
                    p50_ms: p.p50,
                    p99_ms: p.p99,
                    max_ms: p.max,
                }
            })
            .collect()
    }
}

/// CPU time (user + system) this process has used; zero where `getrusage` does not exist (the
/// report then shows no client CPU).
#[cfg(unix)]
pub fn process_cpu_time() -> Duration {
    // SAFETY: getrusage writes into the zeroed struct we own; RUSAGE_SELF is always valid.
    let usage = unsafe {
        let mut usage: libc::rusage = std::mem::zeroed();
        if libc::getrusage(libc::RUSAGE_SELF, &mut usage) != 0 {
            return Duration::ZERO;
        }
        usage
    };
    let tv = |t: libc::timeval| {
        Duration::from_secs(u64::try_from(t.tv_sec).unwrap_or(0))
            + Duration::from_micros(u64::try_from(t.tv_usec).unwrap_or(0))
    };
    tv(usage.ru_utime) + tv(usage.ru_stime)
}

/// CPU time this process has used: not measured on this platform.
#[cfg(not(unix))]
pub fn process_cpu_time() -> Duration {
    Duration::ZERO
}

/// How much of the machine the load generator itself used during the measured window.
#[derive(Clone, Debug, Serialize)]
pub struct ClientLoad {
    pub cpu_seconds: f64,
    pub wall_seconds: f64,
    pub cores: usize,
    /// cpu_seconds / (wall_seconds × cores): the load generator's share of the machine.
    pub cpu_share: f64,
    /// Whether the client, not the CA, may have limited the run.
    pub client_bound: bool,
    pub note: String,
}

impl ClientLoad {
    /// `starved`: operations that had to be prepared inside the window.
    pub fn assess(cpu: Duration, wall: Duration, starved: u64) -> Self {
        let cores = std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(1);
        let wall_seconds = wall.as_secs_f64().max(1e-9);
        let cpu_share = cpu.as_secs_f64() / (wall_seconds * cores as f64);
        let (client_bound, note) = if starved > 0 {
            (
                true,
                format!(
                    "the client ran out of prepared requests and prepared {starved} inside the window: the client was (partly) the bottleneck; raise --prepare"
                ),
            )
        } else if cpu_share > 0.5 {
            (
                true,
                format!(
                    "the load generator used {:.0}% of the machine's CPU: on a shared machine the client is a bottleneck",
                    cpu_share * 100.0
                ),
            )
        } else {
            (
                false,
                format!(
                    "the load generator used {:.0}% of the machine's CPU; the CA set the pace",
                    cpu_share * 100.0
                ),
            )
        };
        Self {
            cpu_seconds: cpu.as_secs_f64(),
            wall_seconds,
            cores,
            cpu_share,
            client_bound,
            note,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_are_ordered_and_in_milliseconds() {
        let mut h = LatencyHistogram::new();
        for ms in 1..=1000u64 {
            h.record(Duration::from_millis(ms));
        }
        let p = h.percentiles();
        assert_eq!(p.count, 1000);
        assert!((p.p50 - 500.0).abs() < 2.0, "{p:?}");
        assert!(p.p50 <= p.p90 && p.p90 <= p.p99 && p.p99 <= p.p999 && p.p999 <= p.max);
        assert!((p.max - 1000.0).abs() < 2.0, "{p:?}");
        assert_eq!(LatencyHistogram::new().percentiles().max, 0.0);
    }

    #[test]
    fn recorder_counts_and_buckets() {
        let r = Recorder::new(Instant::now());
        r.success(Duration::from_millis(3));
        r.success(Duration::from_millis(5));
        r.failure("enroll: HTTP 503".into());
        let s = r.snapshot();
        assert_eq!((s.completed, s.failed), (2, 1));
        assert_eq!(r.failures().get("enroll: HTTP 503"), Some(&1));
        let t = r.timeline();
        assert_eq!(t.len(), 1);
        assert_eq!((t[0].completed, t[0].failed), (2, 1));
    }
}
