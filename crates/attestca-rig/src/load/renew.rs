//! `load renew`: a renewal storm. M fielded devices (enrolled before the window) all renew at
//! once over mutual TLS with the certificate they hold (`simplereenroll`, same key), at most C
//! in flight, each on its own fresh connection as separate devices would be. A `503` or `429`
//! with `Retry-After` is honoured: the device waits that long and tries again (counted). The
//! latency is the round trip of the successful attempt, TLS handshake included.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use serde::Serialize;

use super::report::TimelinePoint;
use super::window::{RunFigures, Window};
use super::{LoadError, LoadReport, Target, failure_lines};
use crate::client::{EstClient, Refused, tls_config_with_identity};
use crate::personalisation::{Failure, Step};

/// Options of a renewal storm.
#[derive(Clone, Debug)]
pub struct RenewOptions {
    pub devices: usize,
    pub concurrency: usize,
    /// No retry starts after this; devices still refused then count as failed.
    pub duration: Duration,
    /// Attempts per device after the first.
    pub max_retries: u32,
}

/// The JSON report; the latency is the successful simplereenroll round trip, new TLS
/// connection included.
#[derive(Clone, Debug, Serialize)]
pub struct RenewReport {
    pub mode: &'static str,
    pub server: String,
    pub devices: usize,
    pub concurrency: usize,
    #[serde(flatten)]
    pub figures: RunFigures,
    /// Refusals (503/429) that were waited out and retried.
    pub retried: u64,
    pub setup_seconds: f64,
}

impl LoadReport for RenewReport {
    fn summary(&self) -> String {
        let f = &self.figures;
        format!(
            "renewal storm against {}: {} devices, {} in flight, {:.1} s\n  renewals: {} completed, {} failed, {} refusals waited out (Retry-After), {:.1} per second\n  latency (simplereenroll with a new TLS connection, client side): {}\n{}  client: {}\n",
            self.server,
            self.devices,
            self.concurrency,
            f.window_seconds,
            f.completed,
            f.failed,
            self.retried,
            f.per_second,
            f.latency_ms.summary(),
            failure_lines(&f.failures),
            f.client.note
        )
    }

    fn chart_titles(&self) -> (String, String) {
        (
            format!("attestca renewal storm against {}", self.server),
            format!(
                "{} devices, {} in flight, {} retried: {}",
                self.devices,
                self.concurrency,
                self.retried,
                self.figures.headline("renewals")
            ),
        )
    }

    fn latency_label(&self) -> &'static str {
        "simplereenroll latency"
    }

    fn timeline(&self) -> &[TimelinePoint] {
        &self.figures.timeline
    }
}

/// Runs the storm; progress on stderr.
pub async fn run(target: &Target, options: &RenewOptions) -> Result<RenewReport, LoadError> {
    if options.devices == 0 || options.concurrency == 0 {
        return Err(LoadError::Options(
            "--devices and --concurrency must be at least 1".into(),
        ));
    }
    eprintln!("enrolling {} devices for the storm…", options.devices);
    let setup_start = Instant::now();
    let fleet = super::fleet::enroll(target, options.devices, 16).await?;
    let setup = setup_start.elapsed();

    let window = Window::open("renewals", options.duration);
    let deadline = window.deadline;
    let retried = Arc::new(AtomicU64::new(0));
    let gate = Arc::new(tokio::sync::Semaphore::new(options.concurrency));
    let mut storm = tokio::task::JoinSet::new();
    for device in fleet {
        let (target, recorder, retried, gate) = (
            target.clone(),
            window.recorder.clone(),
            retried.clone(),
            gate.clone(),
        );
        let max_retries = options.max_retries;
        storm.spawn(async move {
            let outcome = async {
                let csr = device.key.renewal_csr(&device.certificate, Vec::new())?;
                let mut attempt = 0;
                loop {
                    let permit = gate.clone().acquire_owned().await?;
                    let sent = Instant::now();
                    let tls = tls_config_with_identity(
                        &target.trust,
                        Some((
                            vec![device.certificate_der.clone()],
                            device.key.pkcs8.clone(),
                        )),
                    )?;
                    let est = EstClient::new(&target.server, target.label.as_deref(), tls, None)?;
                    let result = est.simplereenroll(&csr).await;
                    drop(permit);
                    match result {
                        Ok(_) => return anyhow::Ok(sent.elapsed()),
                        Err(e) => {
                            let wait = e
                                .downcast_ref::<Refused>()
                                .filter(|r| matches!(r.status, 429 | 503))
                                .map(|r| r.retry_after.unwrap_or(Duration::from_secs(1)));
                            match wait {
                                Some(wait)
                                    if attempt < max_retries
                                        && Instant::now() + wait < deadline =>
                                {
                                    attempt += 1;
                                    retried.fetch_add(1, Ordering::Relaxed);
                                    tokio::time::sleep(wait).await;
                                }
                                _ => return Err(e),
                            }
                        }
                    }
                }
            }
            .await;
            match outcome {
                Ok(latency) => recorder.success(latency),
                Err(e) => recorder.failure(Failure::new(Step::Enroll, e).reason()),
            }
        });
    }
    while storm.join_next().await.is_some() {}
    Ok(RenewReport {
        mode: "renew",
        server: target.server.clone(),
        devices: options.devices,
        concurrency: options.concurrency,
        figures: window.close(0).await,
        retried: retried.load(Ordering::Relaxed),
        setup_seconds: setup.as_secs_f64(),
    })
}
