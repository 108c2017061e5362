//! CRLs with two instances sharing one PostgreSQL: both serve the same, latest CRL; a
//! revocation made through either is listed by both within seconds; a burst of revocations
//! is coalesced into fewer CRLs than revocations; CRL numbers only grow, across restarts too.

use attestca_testkit as common;

use std::time::{Duration, Instant};

use common::*;

/// Waits until both instances serve a CRL listing every serial in `serials`.
async fn until_listed(servers: &[ServerProcess], serials: &[String]) -> u64 {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let a = served_crl(&servers[0]).await;
        let b = served_crl(&servers[1]).await;
        if a.0 == b.0 && serials.iter().all(|s| a.1.contains(s) && b.1.contains(s)) {
            return a.0;
        }
        assert!(
            Instant::now() < deadline,
            "revocations not published by both instances: {a:?} {b:?}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[tokio::test(flavor = "multi_thread")]
#[cfg_attr(
    missing_postgres,
    ignore = "needs PostgreSQL (ATTESTCA_TEST_DATABASE_URL); tests/run.sh provides it"
)]
async fn two_instances_publish_the_same_growing_crl() {
    let admin_url = require("PostgreSQL", "ATTESTCA_TEST_DATABASE_URL");
    let tmp = tempfile::tempdir().expect("temp dir");
    let db = TestDatabase::create(&admin_url).await;
    let (cfg, data) = software_install(tmp.path(), &db.url, "crl_poll_secs = 1");
    let spawn = |i: usize| {
        ServerProcess::with_config(&cfg, &[], &tmp.path().join(format!("server{i}.log")))
    };
    let mut servers = vec![spawn(0), spawn(1)];
    for s in &mut servers {
        s.wait_ready().await;
    }
    let pki = data.join("pki");
    let rig = https_client(
        &pki.join("ca-chain.pem"),
        Some((&pki.join("rig.crt"), &pki.join("rig.key"))),
    );
    let mut serials = Vec::new();
    for i in 0..6 {
        let response = rig
            .post(format!(
                "{}/.well-known/est/simpleenroll",
                servers[i % 2].est_url()
            ))
            .header("Content-Type", "application/pkcs10")
            .body(body(&csr(&format!("crl-device-{i}"))))
            .send()
            .await
            .expect("enroll");
        assert_eq!(response.status(), 200);
        serials.push(serial_of(&certificate_from_response(
            &response.bytes().await.expect("body"),
        )));
    }
    let revoke = |serial: &str| {
        let (ok, out) = run(
            env!("CARGO_BIN_EXE_attestca"),
            &[
                "revoke",
                "--config",
                &cfg,
                "--serial",
                serial,
                "--reason",
                "keyCompromise",
            ],
            &[],
        );
        assert!(ok, "{out}");
    };

    let (first, listed) = served_crl(&servers[0]).await;
    assert!(listed.is_empty());
    revoke(&serials[0]);
    let after_one = until_listed(&servers, &serials[..1]).await;
    assert!(after_one > first);

    // A burst of five revocations: all listed, with fewer new CRLs than revocations.
    for s in &serials[1..] {
        revoke(s);
    }
    let after_burst = until_listed(&servers, &serials).await;
    assert!(after_burst > after_one);
    assert!(
        after_burst - after_one < 5,
        "five revocations made {} CRLs",
        after_burst - after_one
    );

    // A restart does not lower the number; the next revocation raises it.
    servers[0].stop();
    let mut restarted = spawn(2);
    restarted.wait_ready().await;
    servers[0] = restarted;
    let (number, _) = served_crl(&servers[0]).await;
    assert!(
        number >= after_burst,
        "the CRL number went back after a restart"
    );
    db.drop_database().await;
}
