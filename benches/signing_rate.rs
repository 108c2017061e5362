//! Signing rate of the CA key: SoftHSM through PKCS#11 (the production path) and the software
//! key, so that enrollment throughput can be read as a share of the crypto work per enrollment
//! (docs/performance.md).
//!
//! Method: a fresh SoftHSM token in a temporary directory, a P-256 key generated inside it
//! (`Pkcs11Signer::generate`, as `attestca init` does), then T threads sign a 300-byte message
//! (a TBSCertificate's size) as fast as they can for S seconds through the signer's session
//! pool of T sessions — host-side SHA-256 and CKM_ECDSA, DER conversion included, exactly the
//! call the CA makes. The same for the software signer.
//!
//! Run: `cargo bench --bench signing_rate` (env ATTESTCA_BENCH_SECONDS, default 3;
//! ATTESTCA_TEST_PKCS11_MODULE, default /usr/lib/softhsm/libsofthsm2.so). Under
//! `cargo test --all-targets` it is a 0.2-second smoke run.

use std::sync::Arc;
use std::time::{Duration, Instant};

use attestca::config::Pkcs11SignerConfig;
use attestca::signer::{CaKeyAlgorithm, Signer};

fn rate(signer: Arc<dyn Signer>, threads: usize, seconds: Duration) -> anyhow::Result<f64> {
    let message = vec![0x5au8; 300];
    let start = Instant::now();
    let handles: Vec<_> = (0..threads)
        .map(|_| {
            let (signer, message) = (signer.clone(), message.clone());
            std::thread::spawn(move || -> anyhow::Result<u64> {
                let mut n = 0;
                while start.elapsed() < seconds {
                    signer.sign(&message)?;
                    n += 1;
                }
                Ok(n)
            })
        })
        .collect();
    let mut total = 0;
    for h in handles {
        total += h
            .join()
            .map_err(|_| anyhow::anyhow!("signing thread panicked"))??;
    }
    Ok(total as f64 / start.elapsed().as_secs_f64())
}

fn main() -> anyhow::Result<()> {
    let benchmarking = std::env::args().any(|a| a == "--bench");
    let seconds = Duration::from_secs_f64(if benchmarking {
        std::env::var("ATTESTCA_BENCH_SECONDS")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(3.0)
    } else {
        0.2
    });

    let pkcs8 = attestca::signer::software::generate_pkcs8(CaKeyAlgorithm::EcdsaP256)?;
    let software: Arc<dyn Signer> = Arc::new(
        attestca::signer::software::SoftwareSigner::from_pkcs8(CaKeyAlgorithm::EcdsaP256, &pkcs8)?,
    );
    for threads in [1, 2] {
        println!(
            "signing_rate backend=software threads={threads} seconds={:.1} signatures_per_s={:.0}",
            seconds.as_secs_f64(),
            rate(software.clone(), threads, seconds)?
        );
    }

    let module = std::env::var("ATTESTCA_TEST_PKCS11_MODULE")
        .unwrap_or_else(|_| "/usr/lib/softhsm/libsofthsm2.so".into());
    if !std::path::Path::new(&module).is_file() {
        println!("signing_rate SKIPPED pkcs11: no module at {module}");
        return Ok(());
    }
    let dir = tempfile::tempdir()?;
    let tokens = dir.path().join("tokens");
    std::fs::create_dir_all(&tokens)?;
    let conf = dir.path().join("softhsm2.conf");
    std::fs::write(
        &conf,
        format!(
            "directories.tokendir = {}\nobjectstore.backend = file\nlog.level = ERROR\n",
            tokens.display()
        ),
    )?;
    // SAFETY: single-threaded here; no other thread reads the environment yet.
    unsafe { std::env::set_var("SOFTHSM2_CONF", &conf) };
    let status = std::process::Command::new("softhsm2-util")
        .args([
            "--init-token",
            "--free",
            "--label",
            "bench",
            "--so-pin",
            "12345678",
            "--pin",
            "1234",
        ])
        .stdout(std::process::Stdio::null())
        .status()?;
    anyhow::ensure!(status.success(), "softhsm2-util --init-token failed");
    for threads in [1, 2] {
        let config = Pkcs11SignerConfig {
            module: module.clone().into(),
            token_label: "bench".into(),
            key_label: format!("bench-{threads}"),
            algorithm: CaKeyAlgorithm::EcdsaP256,
            sessions: threads,
            pin: "1234".to_owned().into(),
        };
        let signer: Arc<dyn Signer> =
            Arc::new(attestca::signer::pkcs11::Pkcs11Signer::generate(&config)?);
        println!(
            "signing_rate backend=softhsm threads={threads} sessions={threads} seconds={:.1} signatures_per_s={:.0}",
            seconds.as_secs_f64(),
            rate(signer, threads, seconds)?
        );
    }
    Ok(())
}
