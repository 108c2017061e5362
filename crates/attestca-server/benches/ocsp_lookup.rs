//! Criterion benchmark of one OCSP answer from the pre-signed cache, in process:
//! `OcspResponder::respond` on a DER request (one SHA-1 CertID, no nonce) for a certificate whose
//! response was pre-signed — request parse, issuer check, cache lookup by serial, copy of the
//! stored body. No signing and no database query on this path.
//!
//! Set-up (shared with `ocsp_cache`): a development CA (SQLite, software key) with N certificate
//! rows inserted directly, assembled as `attestca serve` does, and its OCSP refresher run until
//! every row has a pre-signed response; the benchmark then cycles through requests for 1,000 of
//! those certificates, one answer per iteration on this thread (the future completes without
//! waiting on a cache hit, so a minimal executor drives it).
//!
//! Run: `cargo bench --bench ocsp_lookup` (100,000 certificates, about 10 s of warm-up first;
//! env `ATTESTCA_BENCH_CERTS` to change). Under `cargo test --all-targets` (criterion's test
//! mode, no `--bench`) it warms 300 certificates and answers once.

use criterion::{Criterion, criterion_group, criterion_main};

use attestca_testkit::bench::ocsp as setup;

fn benches(c: &mut Criterion) {
    let benchmarking = std::env::args().any(|a| a == "--bench");
    let certs = setup::env_usize(
        "ATTESTCA_BENCH_CERTS",
        if benchmarking { 100_000 } else { 300 },
    );
    let runtime = tokio::runtime::Runtime::new().expect("runtime");
    let (install, _assembled, responder, refresher) = runtime.block_on(async {
        let install = setup::install(certs).await.expect("development CA");
        let assembled = attestca::app::assemble(&install.config)
            .await
            .expect("assembled CA");
        let responder = assembled.ocsp.clone().expect("OCSP is enabled");
        let refresher = setup::warm_up(&responder).await;
        (install, assembled, responder, refresher)
    });
    assert_eq!(
        responder.cached(),
        certs + 1,
        "certificates + the responder"
    );
    let requests = &install.requests;
    for request in requests.iter() {
        let reply = futures::executor::block_on(responder.respond(request)).expect("answer");
        assert!(reply.freshness.is_some(), "answered from the cache");
    }

    let mut next = 0;
    c.bench_function("ocsp_cache_lookup", |b| {
        b.iter(|| {
            next = (next + 1) % requests.len();
            futures::executor::block_on(responder.respond(&requests[next])).expect("answer")
        })
    });
    refresher.abort();
}

criterion_group!(ocsp_lookup, benches);
criterion_main!(ocsp_lookup);
