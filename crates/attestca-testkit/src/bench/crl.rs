//! The synthetic CRL of the CRL benchmarks (`crl_build`, `crl_sign`): a software P-256 CA and
//! N revoked entries as a large fleet's CRL would list them. Included with `#[path]`; not a
//! benchmark itself.

use std::sync::Arc;

use attestca::issuance::IssuingCa;
use attestca::issuance::software_ca::SoftwareCa;
use attestca::revocation::crl::{RevokedEntry, RevokedList, build};
use attestca::signer::CaKeyAlgorithm;
use attestca::signer::software::SoftwareSigner;

/// thisUpdate of the benchmark CRLs (Unix seconds); nextUpdate is a day later.
const THIS_UPDATE: i64 = 1_790_000_000;

/// The CRL sizes: `ATTESTCA_BENCH_CRL_SIZES` (comma-separated), else 100,000 and 1,000,000
/// under `cargo bench` and 1,000 in the smoke run of `cargo test --all-targets`.
pub fn sizes(benchmarking: bool) -> Vec<u64> {
    match std::env::var("ATTESTCA_BENCH_CRL_SIZES") {
        Ok(list) => list
            .split(',')
            .filter_map(|s| s.trim().parse().ok())
            .collect(),
        Err(_) if benchmarking => vec![100_000, 1_000_000],
        Err(_) => vec![1_000],
    }
}

/// Entry `i`: a 16-byte serial, revoked within one day, one in three for keyCompromise.
pub fn entry(i: u64) -> RevokedEntry {
    RevokedEntry {
        serial: format!("{:032x}", (0x40u128 << 120) + u128::from(i)),
        revoked_at: THIS_UPDATE + (i % 86_400) as i64,
        reason: i.is_multiple_of(3).then(|| "keyCompromise".to_owned()),
    }
}

/// The first `n` entries, DER-encoded one at a time as the CRL publisher does.
pub fn revoked_list(n: u64) -> anyhow::Result<RevokedList> {
    let mut list = RevokedList::default();
    for i in 0..n {
        list.push(&entry(i))?;
    }
    Ok(list)
}

/// CRL number 1 of `ca` listing `list`, signed (`revocation::crl::build`).
pub fn sign(ca: &IssuingCa, list: &RevokedList) -> anyhow::Result<Vec<u8>> {
    Ok(build(ca, 1, THIS_UPDATE, THIS_UPDATE + 86_400, list)?)
}

/// How many entries the CRL `der` lists (it must parse).
pub fn listed(der: &[u8]) -> usize {
    use der::Decode;
    x509_cert::crl::CertificateList::<x509_cert::certificate::Rfc5280>::from_der(der)
        .expect("the CRL parses")
        .tbs_cert_list
        .revoked_certificates
        .map_or(0, |r| r.len())
}

/// A self-signed software P-256 CA to sign the CRLs.
pub fn test_ca() -> anyhow::Result<Arc<IssuingCa>> {
    let root = SoftwareCa::self_signed("CN=attestca CRL bench,O=attestca", 1)?;
    let signer = SoftwareSigner::from_pkcs8(CaKeyAlgorithm::EcdsaP256, &root.pkcs8)?;
    Ok(Arc::new(IssuingCa::new(vec![root.der], Arc::new(signer))?))
}
