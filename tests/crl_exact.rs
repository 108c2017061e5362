//! A revocation is published on the CRL however its time stamp relates to the stored CRL's
//! thisUpdate. The revoking code stamps `revoked_at` before its transaction commits, and
//! instances' clocks differ: a revocation stamped at T-1 may commit after a CRL with
//! thisUpdate = T was built without it. Here that timing is forced in SQL against a running
//! server (SQLite, and PostgreSQL), and the served CRL must list the serial within seconds —
//! and must then stay put (no new CRL per poll when nothing changed).

mod common;

use std::time::{Duration, Instant};

use common::*;

/// The served CRL, once the server serves one.
async fn until_served(server: &ServerProcess) -> (u64, Vec<String>) {
    let deadline = Instant::now() + Duration::from_secs(10);
    let url = format!("http://{}/crl/issuing-ca.crl", server.http);
    loop {
        let response = reqwest::get(&url).await.expect("GET CRL");
        if response.status() == 200 {
            return crl_facts(&response.bytes().await.expect("body"));
        }
        assert!(Instant::now() < deadline, "no CRL served");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Enrolls a certificate; once a CRL is served, revokes it in SQL with `revoked_at` one
/// second before that CRL's thisUpdate (stamped before the CRL was built, committed after);
/// asserts the served CRL lists it within a few polls and is not regenerated after that.
async fn revocation_stamped_before_the_crl(
    server: &ServerProcess,
    rig: &reqwest::Client,
    database_url: &str,
) {
    sqlx::any::install_default_drivers();
    let db = sqlx::AnyPool::connect(database_url)
        .await
        .expect("connect to the CA's database");
    let serial = serial_of(
        &enroll(
            rig,
            &format!("{}/.well-known/est/simpleenroll", server.est_url()),
            "crl-exact-device",
        )
        .await,
    );
    let (number, listed) = until_served(server).await;
    assert!(!listed.contains(&serial));
    let this_update: i64 = sqlx::query_scalar("SELECT this_update FROM crls WHERE crl_number = $1")
        .bind(i64::try_from(number).expect("CRL number"))
        .fetch_one(&db)
        .await
        .expect("the served CRL is the stored one");
    let revoked = sqlx::query(
        "UPDATE certificates SET status = 'revoked', revoked_at = $1, \
         revocation_reason = 'keyCompromise' WHERE serial = $2 AND status = 'active'",
    )
    .bind(this_update - 1)
    .bind(&serial)
    .execute(&db)
    .await
    .expect("revoke in SQL");
    assert_eq!(revoked.rows_affected(), 1);
    db.close().await;

    // crl_poll_secs = 1: a few polls.
    let started = Instant::now();
    let published = loop {
        let (now_number, listed) = served_crl(server).await;
        if listed.contains(&serial) {
            break now_number;
        }
        assert!(
            started.elapsed() < Duration::from_secs(6),
            "revocation stamped at thisUpdate-1 ({}) and committed after CRL {number} was \
             built: still not listed after {:?} (CRL being served: number {now_number}, \
             entries {listed:?})",
            this_update - 1,
            started.elapsed()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert!(published > number);
    eprintln!(
        "revocation stamped at thisUpdate-1 listed by CRL {published} after {:?}",
        started.elapsed()
    );

    // Exact, not eager: with nothing revoked since, polls generate no new CRL.
    tokio::time::sleep(Duration::from_millis(3500)).await;
    let (later, listed) = served_crl(server).await;
    assert!(listed.contains(&serial));
    assert_eq!(
        later, published,
        "a new CRL was generated although nothing changed"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn sqlite_lists_a_revocation_stamped_before_the_crl() {
    let tmp = tempfile::tempdir().expect("temp dir");
    let ca = ConfiguredCa::start(
        tmp.path(),
        "[revocation]\ncrl_poll_secs = 1\n[profiles.default]\n",
        &[],
    )
    .await;
    revocation_stamped_before_the_crl(&ca.server, &ca.rig, &format!("sqlite://{}", ca.db)).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn postgres_lists_a_revocation_stamped_before_the_crl() {
    let Some(admin_url) = require("PostgreSQL", "ATTESTCA_TEST_DATABASE_URL") else {
        return;
    };
    let tmp = tempfile::tempdir().expect("temp dir");
    let db = TestDatabase::create(&admin_url).await;
    let (cfg, data) = write_shared_database_config(
        tmp.path(),
        &db.url,
        "backend = \"software\"\nkey_file = \"pki/issuing.key\"",
        "crl_poll_secs = 1",
    );
    init_test_install(&cfg, &[]);
    let mut server = ServerProcess::with_config(&cfg, &[], &tmp.path().join("server.log"));
    server.wait_ready().await;
    let pki = data.join("pki");
    let rig = https_client(
        &pki.join("ca-chain.pem"),
        Some((&pki.join("rig.crt"), &pki.join("rig.key"))),
    );
    revocation_stamped_before_the_crl(&server, &rig, &db.url).await;
    server.stop();
    db.drop_database().await;
}
