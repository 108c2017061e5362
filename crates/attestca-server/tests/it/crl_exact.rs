//! A revocation is published on the CRL however its time stamp relates to the stored CRL's
//! thisUpdate. The revoking code stamps `revoked_at` before its transaction commits, and
//! instances' clocks differ: a revocation stamped at T-1 may commit after a CRL with
//! thisUpdate = T was built without it. Here that timing is forced in SQL against a running
//! server (SQLite, and PostgreSQL), and the served CRL must list the serial within seconds —
//! and must then stay put (no new CRL per poll when nothing changed). The OCSP responder, which
//! polls for changes stamped in the last 30 s, must likewise answer `revoked` within a few polls
//! for a revocation stamped five minutes before it committed.

use attestca_testkit as common;

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

/// Enrolls a certificate, waits until OCSP says good, then revokes it in SQL stamped five
/// minutes ago (far behind the OCSP poll's 30 s look-back: a slow clock on the revoking host,
/// a long transaction), and moves its issuance back too (the poll also re-reads what was issued
/// in the last 30 s): OCSP must say revoked within a few polls, not at the next sweep.
async fn ocsp_revocation_stamped_long_before(
    server: &ServerProcess,
    rig: &reqwest::Client,
    database_url: &str,
    chain: &std::path::Path,
    dir: &std::path::Path,
) {
    let der = enroll(
        rig,
        &format!("{}/.well-known/est/simpleenroll", server.est_url()),
        "ocsp-exact-device",
    )
    .await;
    let pem = dir.join("ocsp-exact.pem");
    write_pem(&pem, &der);
    let ocsp = OpensslOcsp::new(chain, dir, format!("http://{}/ocsp", server.http));
    ocsp.until_status(&pem, "good").await;
    sqlx::any::install_default_drivers();
    let db = sqlx::AnyPool::connect(database_url)
        .await
        .expect("connect to the CA's database");
    let five_minutes_ago = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .as_secs() as i64
        - 300;
    let revoked = sqlx::query(
        "UPDATE certificates SET status = 'revoked', revoked_at = $1, issued_at = $1 - 60, \
         revocation_reason = 'keyCompromise' WHERE serial = $2 AND status = 'active'",
    )
    .bind(five_minutes_ago)
    .bind(serial_of(&der))
    .execute(&db)
    .await
    .expect("revoke in SQL");
    assert_eq!(revoked.rows_affected(), 1);
    db.close().await;
    let took = ocsp.until_status(&pem, "revoked").await;
    eprintln!("a revocation stamped 5 minutes back reached OCSP after {took:?}");
}

#[tokio::test(flavor = "multi_thread")]
async fn sqlite_lists_a_revocation_stamped_before_the_crl() {
    let tmp = tempfile::tempdir().expect("temp dir");
    let ca = ConfiguredCa::start(
        tmp.path(),
        "[revocation]\ncrl_poll_secs = 1\nocsp_poll_secs = 1\n[profiles.default]\n",
        &[],
    )
    .await;
    let db_url = format!("sqlite://{}", ca.db);
    revocation_stamped_before_the_crl(&ca.server, &ca.rig, &db_url).await;
    let chain = ca.dir.join("pki/ca-chain.pem");
    ocsp_revocation_stamped_long_before(&ca.server, &ca.rig, &db_url, &chain, tmp.path()).await;
}

#[tokio::test(flavor = "multi_thread")]
#[cfg_attr(
    missing_postgres,
    ignore = "needs PostgreSQL (ATTESTCA_TEST_DATABASE_URL); tests/run.sh provides it"
)]
async fn postgres_lists_a_revocation_stamped_before_the_crl() {
    let admin_url = require("PostgreSQL", "ATTESTCA_TEST_DATABASE_URL");
    let tmp = tempfile::tempdir().expect("temp dir");
    let db = TestDatabase::create(&admin_url).await;
    let (cfg, data) =
        software_install(tmp.path(), &db.url, "crl_poll_secs = 1\nocsp_poll_secs = 1");
    let mut server = ServerProcess::with_config(&cfg, &[], &tmp.path().join("server.log"));
    server.wait_ready().await;
    let pki = data.join("pki");
    let rig = https_client(
        &pki.join("ca-chain.pem"),
        Some((&pki.join("rig.crt"), &pki.join("rig.key"))),
    );
    revocation_stamped_before_the_crl(&server, &rig, &db.url).await;
    ocsp_revocation_stamped_long_before(
        &server,
        &rig,
        &db.url,
        &pki.join("ca-chain.pem"),
        tmp.path(),
    )
    .await;
    server.stop();
    db.drop_database().await;
}

/// One issuer's revocation counter, as last seen.
struct Counter {
    store: attestca::store::Store,
    issuer: Vec<u8>,
    seen: i64,
}

impl Counter {
    async fn read(&self) -> i64 {
        self.store
            .revocation_counter(&self.issuer)
            .await
            .expect("counter")
    }

    async fn moved(&mut self, what: &str) {
        let now = self.read().await;
        assert!(now > self.seen, "{what}: the counter did not move ({now})");
        self.seen = now;
    }

    async fn unchanged(&self, what: &str) {
        assert_eq!(self.read().await, self.seen, "{what} moved the counter");
    }
}

/// The counter the CRL trigger reads moves with every way a certificate's revocation changes
/// (attestca's four revocation paths, and SQL by hand), for the right issuer only, and not
/// with issuance or with updates that change nothing a CRL lists.
fn serial(hex: &str) -> attestca_core::serial::Serial {
    attestca_core::serial::Serial::parse(hex).expect("serial")
}

async fn counter_follows_revocations(url: &str) {
    use attestca::revocation::{Actor, Revocations};
    use attestca::store::Store;
    use attestca_core::revocation::RevocationReason;
    let store = Store::connect(&secrecy::SecretString::from(url.to_owned()), 2)
        .await
        .expect("store");
    let (ours, theirs) = (vec![0xa1u8; 20], vec![0xb2u8; 20]);
    let insert = |serial: &'static str, issuer: &[u8], device: Option<&'static str>| {
        sqlx::query(
            "INSERT INTO certificates (serial, der, issuer_key_id, subject, spki_sha256, profile, \
             not_before, not_after, requester, device_identity, csr_sha256, issued_at, \
             predecessor_serial) VALUES ($1, $2, $3, 'CN=t', $2, 'default', 0, 4000000000, \
             'tls:rig', $4, $2, 100, NULL)",
        )
        .bind(serial)
        .bind(vec![0u8; 4])
        .bind(issuer.to_vec())
        .bind(device)
        .execute(store.pool())
    };
    let sql = |statement: &'static str| {
        let store = store.clone();
        async move {
            sqlx::query(statement)
                .execute(store.pool())
                .await
                .expect(statement);
        }
    };
    for (serial, device) in [
        ("01", None),
        ("02", None),
        ("03", Some("device-3")),
        ("04", Some("device-3")),
        ("05", None),
        ("06", None),
    ] {
        insert(serial, &ours, device).await.expect("insert");
    }
    insert("07", &theirs, None).await.expect("insert");
    let mut counter = Counter {
        store: store.clone(),
        issuer: ours,
        seen: 0,
    };
    counter.unchanged("issuance").await;

    let revocations = Revocations::new(store.clone());
    assert!(
        revocations
            .supersede_renewed(&serial("01"), &serial("99"), 1)
            .await
            .expect("supersede_renewed")
    );
    counter.moved("Revocations::supersede_renewed").await;
    let operator = Actor {
        id: "test".into(),
        peer: None,
    };
    revocations
        .revoke_certificate(&operator, &serial("02"), RevocationReason::KeyCompromise)
        .await
        .expect("revoke_certificate");
    counter.moved("Revocations::revoke_certificate").await;
    let device = revocations
        .revoke_device(&operator, "device-3", RevocationReason::KeyCompromise)
        .await
        .expect("revoke_device");
    assert_eq!(device.len(), 2);
    counter.moved("Revocations::revoke_device").await;
    sql("UPDATE certificates SET predecessor_serial = '05' WHERE serial = '06'").await;
    counter.unchanged("a renewal link").await;
    assert_eq!(
        revocations
            .expire_overlaps("default", 200, 1)
            .await
            .expect("expire_overlaps"),
        vec![serial("05")]
    );
    counter.moved("Revocations::expire_overlaps").await;
    sql("UPDATE certificates SET revocation_reason = 'cACompromise' WHERE serial = '01'").await;
    counter
        .moved("a revoked certificate's reason changed by hand")
        .await;
    sql("UPDATE certificates SET revocation_reason = 'cACompromise' WHERE serial = '01'").await;
    counter.unchanged("an update to the same value").await;
    sql(
        "UPDATE certificates SET status = 'active', revoked_at = NULL, \
         revocation_reason = NULL WHERE serial = '02'",
    )
    .await;
    counter.moved("un-revoked by hand").await;
    sql("DELETE FROM certificates WHERE serial = '01'").await;
    counter.moved("a revoked certificate deleted").await;

    let mut other = Counter {
        store: store.clone(),
        issuer: theirs,
        seen: 0,
    };
    other.unchanged("the other issuer's revocations").await;
    assert!(
        revocations
            .supersede_renewed(&serial("07"), &serial("98"), 1)
            .await
            .expect("supersede_renewed")
    );
    other.moved("a revocation by another issuer").await;
    counter.unchanged("a revocation by another issuer").await;
}

#[tokio::test]
async fn sqlite_counter_follows_revocations() {
    let tmp = tempfile::tempdir().expect("temp dir");
    counter_follows_revocations(&format!("sqlite://{}", tmp.path().join("ca.db").display())).await;
}

#[tokio::test]
#[cfg_attr(
    missing_postgres,
    ignore = "needs PostgreSQL (ATTESTCA_TEST_DATABASE_URL); tests/run.sh provides it"
)]
async fn postgres_counter_follows_revocations() {
    let admin_url = require("PostgreSQL", "ATTESTCA_TEST_DATABASE_URL");
    let db = TestDatabase::create(&admin_url).await;
    counter_follows_revocations(&db.url).await;
    db.drop_database().await;
}
