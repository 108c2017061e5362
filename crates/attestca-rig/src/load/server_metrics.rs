//! The CA's own view of a run: its `attestca_enrollment_duration_seconds` histogram (checks,
//! attestation, signing and the durable commit, without TLS and HTTP) read from `/metrics`
//! before and after the run. Prometheus buckets are coarse, so each percentile is reported as
//! the upper bound of the bucket it falls in.

use serde::Serialize;

use super::LoadError;

const HISTOGRAM: &str = "attestca_enrollment_duration_seconds";

/// Cumulative bucket counts (`le` in seconds, count) and the sum, for one operation.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct EnrollmentHistogram {
    pub buckets: Vec<(f64, u64)>,
    pub sum_seconds: f64,
    pub count: u64,
}

/// Parses the histogram of `operation` from Prometheus text exposition.
pub fn parse(text: &str, operation: &str) -> EnrollmentHistogram {
    let label = format!("operation=\"{operation}\"");
    let mut out = EnrollmentHistogram::default();
    for line in text
        .lines()
        .filter(|l| l.starts_with(HISTOGRAM) && l.contains(&label))
    {
        let Some((series, value)) = line.rsplit_once(' ') else {
            continue;
        };
        let Ok(value) = value.trim().parse::<f64>() else {
            continue;
        };
        if series.starts_with(&format!("{HISTOGRAM}_bucket")) {
            let le = series
                .split("le=\"")
                .nth(1)
                .and_then(|rest| rest.split('"').next())
                .map(|le| {
                    if le == "+Inf" {
                        f64::INFINITY
                    } else {
                        le.parse().unwrap_or(f64::NAN)
                    }
                });
            if let Some(le) = le.filter(|le| !le.is_nan()) {
                out.buckets.push((le, value as u64));
            }
        } else if series.starts_with(&format!("{HISTOGRAM}_sum")) {
            out.sum_seconds = value;
        } else if series.starts_with(&format!("{HISTOGRAM}_count")) {
            out.count = value as u64;
        }
    }
    out.buckets.sort_by(|a, b| a.0.total_cmp(&b.0));
    out
}

/// Server-side enrollment time during the run, in milliseconds (bucket upper bounds).
#[derive(Clone, Debug, Serialize)]
pub struct ServerLatency {
    pub source: String,
    pub count: u64,
    pub mean: f64,
    pub p50_at_most: f64,
    pub p90_at_most: f64,
    pub p99_at_most: f64,
    pub p999_at_most: f64,
}

impl ServerLatency {
    /// What happened between two readings.
    pub fn between(
        source: &str,
        before: &EnrollmentHistogram,
        after: &EnrollmentHistogram,
    ) -> Self {
        let count = after.count.saturating_sub(before.count);
        let deltas: Vec<(f64, u64)> = after
            .buckets
            .iter()
            .map(|(le, n)| {
                let old = before
                    .buckets
                    .iter()
                    .find(|(l, _)| l == le)
                    .map(|(_, n)| *n)
                    .unwrap_or(0);
                (*le, n.saturating_sub(old))
            })
            .collect();
        let at_most = |q: f64| -> f64 {
            let rank = (q * count as f64).ceil() as u64;
            deltas
                .iter()
                .find(|(_, n)| *n >= rank.max(1))
                .map(|(le, _)| le * 1000.0)
                .unwrap_or(f64::INFINITY)
        };
        let mean = if count == 0 {
            0.0
        } else {
            (after.sum_seconds - before.sum_seconds) * 1000.0 / count as f64
        };
        Self {
            source: format!("{HISTOGRAM}{{operation=\"simpleenroll\"}} at {source}"),
            count,
            mean,
            p50_at_most: at_most(0.50),
            p90_at_most: at_most(0.90),
            p99_at_most: at_most(0.99),
            p999_at_most: at_most(0.999),
        }
    }

    pub fn summary(&self) -> String {
        format!(
            "  CA-side (server /metrics, bucket bounds): {} enrollments, mean {:.2} ms, p50 ≤ {} ms, p90 ≤ {} ms, p99 ≤ {} ms, p99.9 ≤ {} ms\n",
            self.count,
            self.mean,
            self.p50_at_most,
            self.p90_at_most,
            self.p99_at_most,
            self.p999_at_most
        )
    }
}

/// Reads the server's histogram from `url` (the plain listener's `/metrics`).
pub async fn read(url: &str) -> Result<EnrollmentHistogram, LoadError> {
    let fail = |e: String| LoadError::Setup {
        server: url.to_owned(),
        message: e,
    };
    let response = reqwest::get(url).await.map_err(|e| fail(e.to_string()))?;
    if !response.status().is_success() {
        return Err(fail(format!("HTTP {}", response.status())));
    }
    let text = response.text().await.map_err(|e| fail(e.to_string()))?;
    Ok(parse(&text, "simpleenroll"))
}

/// The 1-, 5- and 15-minute load averages of the machine (Linux), for the report.
pub fn load_average() -> Option<[f64; 3]> {
    let text = std::fs::read_to_string("/proc/loadavg").ok()?;
    let mut it = text.split_whitespace().map(|v| v.parse::<f64>().ok());
    Some([it.next()??, it.next()??, it.next()??])
}

#[cfg(test)]
mod tests {
    use super::*;

    const BEFORE: &str = "attestca_enrollment_duration_seconds_bucket{operation=\"simpleenroll\",le=\"0.005\"} 10\n\
attestca_enrollment_duration_seconds_bucket{operation=\"simpleenroll\",le=\"0.01\"} 10\n\
attestca_enrollment_duration_seconds_bucket{operation=\"simpleenroll\",le=\"+Inf\"} 10\n\
attestca_enrollment_duration_seconds_sum{operation=\"simpleenroll\"} 0.03\n\
attestca_enrollment_duration_seconds_count{operation=\"simpleenroll\"} 10\n\
attestca_enrollment_duration_seconds_count{operation=\"simplereenroll\"} 99\n";

    #[test]
    fn deltas_give_bucket_bounded_percentiles() {
        let before = parse(BEFORE, "simpleenroll");
        assert_eq!(before.count, 10);
        assert_eq!(before.buckets.len(), 3);
        let after = parse(
            &BEFORE
                .replace("\"0.005\"} 10", "\"0.005\"} 108")
                .replace("\"0.01\"} 10", "\"0.01\"} 110")
                .replace("\"+Inf\"} 10", "\"+Inf\"} 110")
                .replace("} 0.03", "} 0.33")
                .replace("simpleenroll\"} 10\n", "simpleenroll\"} 110\n"),
            "simpleenroll",
        );
        let l = ServerLatency::between("x", &before, &after);
        assert_eq!(l.count, 100);
        assert!((l.mean - 3.0).abs() < 1e-9, "{l:?}");
        assert_eq!(l.p50_at_most, 5.0);
        assert_eq!(l.p99_at_most, 10.0);
    }
}
