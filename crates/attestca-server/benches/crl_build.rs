//! CRL generation at fleet scale: how long a CRL of 100,000 and 1,000,000 entries takes.
//!
//! Method, two measurements:
//! 1. **Build + sign in memory.** N synthetic entries (16-byte serials, one in three with a
//!    keyCompromise reason, as a CRL of a large fleet would look) are encoded one at a time into
//!    a `RevokedList` and spliced into a TBSCertList, which is signed with a software P-256 key
//!    (one signature: the size of the CRL changes only the host-side SHA-256, so a PKCS#11
//!    signer adds one HSM round trip, not a per-entry cost). Reported: encode, build + sign,
//!    DER size, entries per second.
//! 2. **From PostgreSQL, end to end**, when a database is given (`ATTESTCA_BENCH_DATABASE_URL`,
//!    else `ATTESTCA_TEST_DATABASE_URL`: an admin URL; a throwaway database is created and
//!    dropped): N revoked certificate rows are inserted with `generate_series`, then
//!    `CrlPublisher::refresh` is timed — the streamed query, encoding, signing, and storing the
//!    CRL in its row — exactly what a server does after a revocation.
//!
//! Run: `cargo bench --bench crl_build` (env `ATTESTCA_BENCH_CRL_SIZES`, default
//! `100000,1000000`). Under `cargo test --all-targets` (no `--bench`) it is a 1,000-entry
//! smoke run that checks the CRL parses and lists every entry.

use std::sync::Arc;
use std::time::Instant;

use attestca::issuance::IssuingCa;

use attestca_testkit::bench::crl as synthetic_crl;

fn in_memory(ca: &IssuingCa, n: u64, check: bool) -> anyhow::Result<()> {
    let start = Instant::now();
    let list = synthetic_crl::revoked_list(n)?;
    let encoded = start.elapsed();
    let der = synthetic_crl::sign(ca, &list)?;
    let total = start.elapsed();
    println!(
        "in memory   {n:>9} entries: encode {:>7.3} s, build+sign {:>7.3} s total, {:>6.1} MB, {:>10.0} entries/s",
        encoded.as_secs_f64(),
        total.as_secs_f64(),
        der.len() as f64 / 1e6,
        n as f64 / total.as_secs_f64()
    );
    if check {
        assert_eq!(
            synthetic_crl::listed(&der),
            n as usize,
            "every entry is listed"
        );
    }
    Ok(())
}

async fn from_postgres(
    admin_url: &str,
    ca: Arc<IssuingCa>,
    n: u64,
    check: bool,
) -> anyhow::Result<()> {
    let name = format!("attestca_crl_bench_{}", std::process::id());
    let admin = sqlx::PgPool::connect(admin_url).await?;
    sqlx::query(sqlx::AssertSqlSafe(format!(
        "DROP DATABASE IF EXISTS {name}"
    )))
    .execute(&admin)
    .await?;
    sqlx::query(sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}")))
        .execute(&admin)
        .await?;
    let base = admin_url.rsplit_once('/').map_or(admin_url, |(b, _)| b);
    let url = format!("{base}/{name}");
    let result = async {
        let store =
            attestca::store::Store::connect(&secrecy::SecretString::from(url.clone()), 4).await?;
        let pool = sqlx::PgPool::connect(&url).await?;
        let start = Instant::now();
        sqlx::query(
            "INSERT INTO certificates (serial, der, issuer_key_id, subject, spki_sha256, profile, \
             not_before, not_after, status, revoked_at, revocation_reason, requester, csr_sha256, \
             issued_at) \
             SELECT '40' || lpad(to_hex(g), 30, '0'), '\\x00'::bytea, $1, 'CN=bench', '\\x00'::bytea, \
             'default', 0, 4102444800, 'revoked', 1790000000 + g % 86400, \
             CASE WHEN g % 3 = 0 THEN 'keyCompromise' END, 'bench', '\\x00'::bytea, 0 \
             FROM generate_series(1, $2) g",
        )
        .bind(ca.key_identifier())
        .bind(n as i64)
        .execute(&pool)
        .await?;
        sqlx::query("ANALYZE certificates").execute(&pool).await?;
        let inserted = start.elapsed();
        let publisher =
            attestca::revocation::crl::CrlPublisher::new(Arc::clone(&ca), store, 86_400, 86_400);
        let start = Instant::now();
        publisher.refresh().await?;
        let refreshed = start.elapsed();
        let crl = publisher.current().expect("a CRL");
        println!(
            "PostgreSQL  {n:>9} entries: refresh (query + encode + sign + store) {:>7.3} s, {:>6.1} MB \
             ({:.1} s to insert the rows)",
            refreshed.as_secs_f64(),
            crl.der.len() as f64 / 1e6,
            inserted.as_secs_f64()
        );
        if check {
            assert_eq!(synthetic_crl::listed(&crl.der), n as usize, "every revoked row is listed");
        }
        pool.close().await;
        anyhow::Ok(())
    }
    .await;
    sqlx::query(sqlx::AssertSqlSafe(format!(
        "DROP DATABASE IF EXISTS {name} WITH (FORCE)"
    )))
    .execute(&admin)
    .await?;
    result
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let benchmarking = std::env::args().any(|a| a == "--bench");
    let sizes = synthetic_crl::sizes(benchmarking);
    let ca = synthetic_crl::test_ca()?;
    println!("CRL build benchmark (P-256 software key; one signature per CRL)");
    for &n in &sizes {
        in_memory(&ca, n, !benchmarking)?;
    }
    let database = std::env::var("ATTESTCA_BENCH_DATABASE_URL")
        .or_else(|_| std::env::var("ATTESTCA_TEST_DATABASE_URL"))
        .ok()
        .filter(|u| !u.is_empty());
    match database {
        Some(url) => {
            for &n in &sizes {
                from_postgres(&url, Arc::clone(&ca), n, !benchmarking).await?;
            }
        }
        None => println!("(no ATTESTCA_BENCH_DATABASE_URL: the PostgreSQL measurement is skipped)"),
    }
    Ok(())
}
