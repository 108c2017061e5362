//! OCSP from the pre-signed cache: warm-up, answers per second in process and over HTTP.
//!
//! Method: a development CA (SQLite, software key) whose `certificates` table gets N rows of
//! the issuing CA inserted directly (random 16-byte serials, valid for a year; the responder
//! reads serial, status and dates only, so the DER column holds a placeholder). Then, in this
//! process:
//! 1. warm-up: the CA is assembled as `attestca serve` does and the OCSP refresher pre-signs a
//!    response for every row; reported: seconds, responses signed per second, and resident
//!    memory per cached certificate (growth of VmRSS over the warm-up divided by N).
//! 2. lookup: `OcspResponder::respond` on 1,000 pre-built DER requests (one SHA-1 CertID, no
//!    nonce: parse, issuer check, cache lookup, body) from T tasks for S seconds; reported:
//!    answers per second.
//! 3. HTTP: the plain-HTTP router on loopback; C keep-alive clients (one reqwest client, a
//!    connection each) POST /ocsp in a loop for S seconds; reported: responses per second and
//!    latency percentiles. Clients and server share the machine's cores, so this is a floor.
//!
//! Run: `cargo bench --bench ocsp_cache` (env ATTESTCA_BENCH_CERTS, ATTESTCA_BENCH_CLIENTS,
//! ATTESTCA_BENCH_SECS). Under `cargo test --all-targets` it is a 300-certificate smoke run.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use attestca_testkit::bench::ocsp as setup;

use setup::{env_usize, free_addr};

fn resident_bytes() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("VmRSS:"))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        })
        .map_or(0, |kb| kb * 1024)
}

fn percentile(sorted: &[Duration], p: f64) -> f64 {
    sorted
        .get(((sorted.len() as f64 * p) as usize).min(sorted.len().saturating_sub(1)))
        .map_or(0.0, |d| d.as_secs_f64() * 1000.0)
}

/// A successful OCSPResponse is longer than the five bytes of an error status.
fn successful(body: &[u8]) -> bool {
    body.len() > 5
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let benchmarking = std::env::args().any(|a| a == "--bench");
    let certs = env_usize(
        "ATTESTCA_BENCH_CERTS",
        if benchmarking { 100_000 } else { 300 },
    );
    let clients = env_usize("ATTESTCA_BENCH_CLIENTS", 32);
    let secs = env_usize("ATTESTCA_BENCH_SECS", if benchmarking { 10 } else { 1 }) as u64;
    let setup::Install {
        _dir,
        config,
        requests: bodies,
    } = setup::install(certs).await?;

    // 1. Warm-up.
    let assembled = attestca::app::assemble(&config).await?;
    let responder = assembled
        .ocsp
        .clone()
        .ok_or_else(|| anyhow::anyhow!("OCSP is disabled"))?;
    let rss_before = resident_bytes();
    let started = Instant::now();
    let refresher = setup::warm_up(&responder).await;
    let warm = started.elapsed();
    let cached = responder.cached();
    let per_entry = resident_bytes().saturating_sub(rss_before) as f64 / cached.max(1) as f64;
    println!(
        "ocsp_cache warmup certificates={cached} seconds={:.2} signed_per_s={:.0} rss_bytes_per_certificate={per_entry:.0}",
        warm.as_secs_f64(),
        cached as f64 / warm.as_secs_f64()
    );
    anyhow::ensure!(
        cached == certs + 1,
        "{cached} cached of {certs} + the responder"
    );

    // 2. In-process lookups.
    let tasks = std::thread::available_parallelism().map_or(2, |n| n.get());
    let deadline = Instant::now() + Duration::from_secs(secs);
    let (answered, errors) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
    let mut workers = Vec::new();
    for t in 0..tasks {
        let (responder, bodies) = (Arc::clone(&responder), Arc::clone(&bodies));
        let (answered, errors) = (Arc::clone(&answered), Arc::clone(&errors));
        workers.push(tokio::spawn(async move {
            let mut i = t;
            while Instant::now() < deadline {
                for _ in 0..256 {
                    match responder.respond(&bodies[i % bodies.len()]).await {
                        Ok(reply) if reply.freshness.is_some() => {
                            answered.fetch_add(1, Ordering::Relaxed)
                        }
                        _ => errors.fetch_add(1, Ordering::Relaxed),
                    };
                    i += 1;
                }
                tokio::task::yield_now().await;
            }
        }));
    }
    for w in workers {
        w.await?;
    }
    let answered = answered.load(Ordering::Relaxed);
    println!(
        "ocsp_cache lookup tasks={tasks} seconds={secs} answers={answered} answers_per_s={:.0} errors={}",
        answered as f64 / secs as f64,
        errors.load(Ordering::Relaxed)
    );
    anyhow::ensure!(errors.load(Ordering::Relaxed) == 0, "lookups failed");

    // 3. HTTP: the plain-HTTP router, C keep-alive clients.
    let addr = free_addr();
    let listener = tokio::net::TcpListener::bind(addr).await?;
    let app = attestca::server::plain::router(
        Arc::clone(&assembled.crl),
        &config.ca,
        Some(Arc::clone(&responder)),
        None,
        Arc::new(attestca::server::health::HealthSources::new(
            assembled.store.clone(),
            Arc::clone(&assembled.ca),
            Arc::clone(&assembled.crl),
            config.ca.name.clone(),
            Some(Arc::clone(&responder)),
        )),
    );
    let server = tokio::spawn(async move { axum::serve(listener, app).await });
    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(clients)
        .build()?;
    let url = format!("http://{addr}/ocsp");
    let deadline = Instant::now() + Duration::from_secs(secs);
    let mut workers = Vec::new();
    for c in 0..clients {
        let (client, url, bodies) = (client.clone(), url.clone(), Arc::clone(&bodies));
        workers.push(tokio::spawn(async move {
            let (mut latencies, mut failed) = (Vec::new(), 0u64);
            let mut i = c;
            while Instant::now() < deadline {
                let t = Instant::now();
                let ok = match client
                    .post(&url)
                    .header("Content-Type", "application/ocsp-request")
                    .body(bodies[i % bodies.len()].clone())
                    .send()
                    .await
                {
                    Ok(r) if r.status() == 200 => {
                        r.bytes().await.map(|b| successful(&b)).unwrap_or(false)
                    }
                    _ => false,
                };
                if ok {
                    latencies.push(t.elapsed());
                } else {
                    failed += 1;
                }
                i += clients;
            }
            (latencies, failed)
        }));
    }
    let (mut latencies, mut failed) = (Vec::new(), 0);
    for w in workers {
        let (l, f) = w.await?;
        latencies.extend(l);
        failed += f;
    }
    latencies.sort();
    println!(
        "ocsp_cache http clients={clients} seconds={secs} responses={} responses_per_s={:.0} failed={failed} latency_ms p50={:.2} p99={:.2} max={:.2}",
        latencies.len(),
        latencies.len() as f64 / secs as f64,
        percentile(&latencies, 0.50),
        percentile(&latencies, 0.99),
        latencies.last().map_or(0.0, |d| d.as_secs_f64() * 1000.0),
    );
    server.abort();
    refresher.abort();
    anyhow::ensure!(failed == 0 && !latencies.is_empty(), "HTTP requests failed");
    Ok(())
}
