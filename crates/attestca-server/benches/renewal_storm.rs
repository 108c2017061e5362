//! Renewal storm: how fast the CA renews a fleet that renews all at once.
//!
//! Method: an attestca server (development configuration: SQLite, software CA key) runs
//! in-process on loopback. N devices are enrolled on the `lab` profile, each gets its own
//! mutual-TLS client (its certificate and key), then all N renew at once with at most C in
//! flight; every renewal is a fresh TLS connection, as separate devices would make. Reported:
//! renewals per second over the storm, latency percentiles, and refusals (503 when the
//! admission limit is reached). Client and server share the machine's cores, so the figure is
//! a floor for a dedicated CA host.
//!
//! Run: `cargo bench --bench renewal_storm` (env ATTESTCA_BENCH_DEVICES, ATTESTCA_BENCH_CONCURRENCY).
//! Under `cargo test --all-targets` (no `--bench` argument) it is a 20-device smoke run.

use std::sync::Arc;
use std::time::{Duration, Instant};

use attestca_sim::device::DeviceKey;

fn env_usize(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("port")
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let benchmarking = std::env::args().any(|a| a == "--bench");
    let devices = env_usize(
        "ATTESTCA_BENCH_DEVICES",
        if benchmarking { 2000 } else { 20 },
    );
    let concurrency = env_usize("ATTESTCA_BENCH_CONCURRENCY", 32);
    let tmp = tempfile::tempdir()?;
    let (est, http) = (
        std::net::SocketAddr::from(([127, 0, 0, 1], free_port())),
        std::net::SocketAddr::from(([127, 0, 0, 1], free_port())),
    );
    let config = attestca::setup::dev_config(tmp.path(), est, http);
    let config = attestca::setup::ensure_dev_install(config)?;
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server_config = config.clone();
    let server = tokio::spawn(async move {
        attestca::app::serve(&server_config, async {
            let _ = stopped.await;
        })
        .await
    });
    let pki = tmp.path().join("pki");
    let chain = pki.join("ca-chain.pem");
    let base = format!("https://{est}/.well-known/est/lab");
    let rig_tls = attestca_rig::client::tls_config(
        &chain,
        Some((&pki.join("rig.crt"), &pki.join("rig.key"))),
    )?;
    let rig = reqwest::Client::builder()
        .tls_backend_preconfigured(rig_tls)
        .build()?;
    for _ in 0..100 {
        if reqwest::get(format!("http://{http}/healthz")).await.is_ok() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    eprintln!("enrolling {devices} devices…");
    let mut fleet = Vec::with_capacity(devices);
    for i in 0..devices {
        let key = DeviceKey::generate()?;
        let body = attestca::est::codec::encode_body(&key.csr(&format!("storm-{i}"))?);
        let response = rig
            .post(format!("{base}/simpleenroll"))
            .header("Content-Type", "application/pkcs10")
            .body(body)
            .send()
            .await?;
        anyhow::ensure!(
            response.status() == 200,
            "enrollment failed: {}",
            response.status()
        );
        let cert_der = attestca_rig::client::certificates_from_pkcs7(
            &attestca::est::codec::decode_body(&response.bytes().await?)
                .map_err(anyhow::Error::msg)?,
        )?
        .remove(0);
        let (cert_path, key_path) = (
            tmp.path().join(format!("d{i}.crt")),
            tmp.path().join(format!("d{i}.key")),
        );
        attestca::pem::write_certificates(&cert_path, &[&cert_der])?;
        attestca::pem::write_private_key(&key_path, &key.pkcs8)?;
        let tls = attestca_rig::client::tls_config(&chain, Some((&cert_path, &key_path)))?;
        // One connection per renewal, as separate devices would make.
        let client = reqwest::Client::builder()
            .tls_backend_preconfigured(tls)
            .pool_max_idle_per_host(0)
            .build()?;
        let certificate = <x509_cert::Certificate as der::Decode>::from_der(&cert_der)?;
        let csr = attestca::est::codec::encode_body(&key.renewal_csr(&certificate, Vec::new())?);
        fleet.push((client, csr));
    }

    eprintln!("renewal storm: {devices} devices, {concurrency} in flight…");
    let limiter = Arc::new(tokio::sync::Semaphore::new(concurrency));
    let started = Instant::now();
    let mut tasks = Vec::with_capacity(devices);
    for (client, csr) in fleet {
        let limiter = Arc::clone(&limiter);
        let url = format!("{base}/simplereenroll");
        tasks.push(tokio::spawn(async move {
            let _permit = limiter.acquire().await.expect("semaphore");
            let t = Instant::now();
            let status = client
                .post(url)
                .header("Content-Type", "application/pkcs10")
                .body(csr)
                .send()
                .await
                .map(|r| r.status().as_u16())
                .unwrap_or(0);
            (status, t.elapsed())
        }));
    }
    let mut latencies = Vec::with_capacity(devices);
    let (mut ok, mut refused, mut failed) = (0, 0, 0);
    for task in tasks {
        let (status, elapsed) = task.await?;
        match status {
            200 => {
                ok += 1;
                latencies.push(elapsed);
            }
            503 => refused += 1,
            _ => failed += 1,
        }
    }
    let wall = started.elapsed();
    latencies.sort();
    let pct = |p: f64| {
        latencies
            .get(((latencies.len() as f64 * p) as usize).min(latencies.len().saturating_sub(1)))
            .map(|d| d.as_secs_f64() * 1000.0)
            .unwrap_or(0.0)
    };
    println!(
        "renewal_storm devices={devices} concurrency={concurrency} renewed={ok} refused_503={refused} failed={failed} \
         wall_s={:.2} renewals_per_s={:.0} latency_ms p50={:.1} p99={:.1} max={:.1}",
        wall.as_secs_f64(),
        ok as f64 / wall.as_secs_f64(),
        pct(0.50),
        pct(0.99),
        latencies
            .last()
            .map(|d| d.as_secs_f64() * 1000.0)
            .unwrap_or(0.0),
    );
    let _ = stop.send(());
    let _ = server.await;
    anyhow::ensure!(failed == 0 && ok + refused == devices, "renewals failed");
    Ok(())
}
