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

use attestca::signer::{CaKeyAlgorithm, Signer};

use attestca_testkit::bench::softhsm;

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

    let Some(module) = softhsm::module() else {
        println!("signing_rate SKIPPED pkcs11: no PKCS#11 module (ATTESTCA_TEST_PKCS11_MODULE)");
        return Ok(());
    };
    let dir = tempfile::tempdir()?;
    softhsm::init_token(dir.path())?;
    for threads in [1, 2] {
        let config = softhsm::signer_config(&module, &format!("bench-{threads}"), threads);
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
