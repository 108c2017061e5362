//! The OCSP benchmarks' CA (`ocsp_cache`, `ocsp_lookup`): a development install (SQLite,
//! software key) whose `certificates` table gets N rows of the issuing CA inserted directly
//! (random 16-byte serials, valid for a year; the responder reads serial, status and dates
//! only, so the DER column holds a placeholder), and requests for them. Included with
//! `#[path]`; not a benchmark itself.

use std::sync::Arc;
use std::time::Duration;

use attestca::ocsp::OcspResponder;
use attestca::ocsp::request::IssuerHashes;

/// How many certificates get a pre-built request (the benchmarks cycle through them).
const REQUESTS: usize = 1000;

/// The value of the environment variable `name`, else `default`.
pub fn env_usize(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// A free loopback address.
pub fn free_addr() -> std::net::SocketAddr {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("port")
}

fn random_serial() -> Vec<u8> {
    let mut serial = [0u8; 16];
    aws_lc_rs::rand::fill(&mut serial).expect("random");
    serial[0] = (serial[0] & 0x7f) | 0x01;
    serial.to_vec()
}

/// Inserts `count` certificate rows of the issuer `issuer_key_id`; returns their serials.
async fn insert_certificates(
    store: &attestca::store::Store,
    issuer_key_id: &[u8],
    count: usize,
) -> anyhow::Result<Vec<Vec<u8>>> {
    let now = attestca_core::time::unix_now();
    let mut serials = Vec::with_capacity(count);
    let mut tx = store.pool().begin().await?;
    for i in 0..count {
        let serial = random_serial();
        sqlx::query(
            "INSERT INTO certificates (serial, der, issuer_key_id, subject, spki_sha256, profile, \
             not_before, not_after, requester, csr_sha256, issued_at) \
             VALUES ($1, $2, $3, $4, $5, 'bench', $6, $7, 'bench', $8, $9)",
        )
        .bind(hex::encode(&serial))
        .bind(vec![0u8])
        .bind(issuer_key_id)
        .bind(format!("CN=bench-{i}"))
        .bind(random_serial())
        .bind(now - 3600)
        .bind(now + 365 * 86_400)
        .bind(random_serial())
        .bind(now - 3600)
        .execute(&mut *tx)
        .await?;
        serials.push(serial);
    }
    tx.commit().await?;
    Ok(serials)
}

/// A development CA with certificates to answer for.
pub struct Install {
    /// The data directory, removed on drop.
    pub _dir: tempfile::TempDir,
    pub config: attestca::config::Config,
    /// DER OCSPRequests (one SHA-1 CertID, no nonce) for up to 1,000 of the certificates.
    pub requests: Arc<Vec<Vec<u8>>>,
}

/// Installs the development CA in a temporary directory and inserts `certs` certificate rows.
pub async fn install(certs: usize) -> anyhow::Result<Install> {
    let dir = tempfile::tempdir()?;
    let config = attestca::setup::dev_config(dir.path(), free_addr(), free_addr());
    let mut config = attestca::setup::ensure_dev_install(config)?;
    // Pre-signing only: no poll will find anything new.
    config.revocation.ocsp_poll_secs = 3600;

    let chain = attestca::pem::read_certificates(&config.ca.chain_file)?;
    let issuer = IssuerHashes::of(&chain[0])?;
    let key_id = attestca::issuance::extensions::certificate_key_identifier(&chain[0]);
    let store = attestca::store::Store::connect(
        &config.resolve_database_url()?,
        config.database.max_connections,
    )
    .await?;
    eprintln!("inserting {certs} certificate rows…");
    let serials = insert_certificates(&store, &key_id, certs).await?;
    let requests = serials[..serials.len().min(REQUESTS)]
        .iter()
        .map(|s| attestca_rig::load::ocsp::request_der(&issuer, s))
        .collect::<anyhow::Result<Vec<_>>>()?;
    Ok(Install {
        _dir: dir,
        config,
        requests: Arc::new(requests),
    })
}

/// Starts `responder`'s refresher and returns once every certificate has its pre-signed
/// response; abort the handle to stop the refresher.
pub async fn warm_up(responder: &Arc<OcspResponder>) -> tokio::task::JoinHandle<()> {
    let refresher = tokio::spawn(Arc::clone(responder).run(Duration::from_secs(3600)));
    while !responder.is_warm() {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    refresher
}
