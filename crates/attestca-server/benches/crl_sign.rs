//! Criterion benchmark of CRL generation at fleet scale, in memory: N revoked entries
//! (16-byte serials, one in three with a keyCompromise reason) are DER-encoded one at a time
//! into a `RevokedList`, spliced into a TBSCertList and signed with a software P-256 key —
//! `crl_build`'s in-memory measurement, with criterion's statistics. One signature per CRL
//! whatever its size, so a PKCS#11 signer adds one HSM round trip, not a per-entry cost.
//!
//! Run: `cargo bench --bench crl_sign` (100,000 and 1,000,000 entries; env
//! `ATTESTCA_BENCH_CRL_SIZES` to change them). A 1,000,000-entry CRL takes about 0.7 s, so the
//! group takes 10 samples of one iteration each (flat sampling) over 8 s per size. Under
//! `cargo test --all-targets` (criterion's test mode, no `--bench`) it builds one 1,000-entry
//! CRL and checks that it parses.

use std::time::Duration;

use criterion::{
    BenchmarkId, Criterion, SamplingMode, Throughput, criterion_group, criterion_main,
};

use attestca_testkit::bench::crl as synthetic_crl;

fn benches(c: &mut Criterion) {
    let benchmarking = std::env::args().any(|a| a == "--bench");
    let ca = synthetic_crl::test_ca().expect("CA");
    let mut group = c.benchmark_group("crl_build_and_sign");
    group
        .sample_size(10)
        .sampling_mode(SamplingMode::Flat)
        .measurement_time(Duration::from_secs(8));
    for n in synthetic_crl::sizes(benchmarking) {
        let sign = || {
            let list = synthetic_crl::revoked_list(n).expect("entries");
            synthetic_crl::sign(&ca, &list).expect("CRL")
        };
        if !benchmarking {
            assert_eq!(
                synthetic_crl::listed(&sign()),
                n as usize,
                "every entry is listed"
            );
        }
        group.throughput(Throughput::Elements(n));
        group.bench_function(BenchmarkId::from_parameter(n), |b| b.iter(sign));
    }
    group.finish();
}

criterion_group!(crl_sign, benches);
criterion_main!(crl_sign);
