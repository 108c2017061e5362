//! Hostile requests against a real server, as an attacker with valid rig credentials (or a
//! fielded device) would send them: bounded work for path-building pools, cheap checks before
//! expensive ones, retries that never cross a profile or hand back a revoked certificate, no
//! nonce for a revoked or superseded device, and the request deadline recorded as an event.

use attestca_testkit as common;
use attestca_testkit::hostile;

use std::path::Path;
use std::time::{Duration, Instant};

use attestca_sim::device::DeviceKey;
use attestca_sim::secure_element::SimulatedVendor;
use common::*;

fn vendor_config(hw_type: impl std::fmt::Display) -> String {
    format!(
        "[[attestation.vendors]]\nname = \"simulated-se\"\nroots = [\"vendor/vendor-root.crt\"]\n\
         formats = [\"x509-chain\"]\nreader = \"simulated-se\"\nhardware_type = \"{hw_type}\"\n"
    )
}

/// A CA whose default profile requires attestation and whose `lab` profile does not.
async fn start(tmp: &Path) -> (ConfiguredCa, SimulatedVendor) {
    let vendor_dir = tmp.join("ca/vendor");
    std::fs::create_dir_all(&vendor_dir).expect("dir");
    let vendor = SimulatedVendor::create(&vendor_dir).expect("simulated vendor");
    let extra = format!(
        "{}[profiles.default]\nattestation_required = true\nkey_algorithms = [\"p256\"]\n\
         [profiles.lab]\n",
        vendor_config(attestca::attestation::ID_HW_SIMULATED_SE)
    );
    (ConfiguredCa::start(tmp, &extra, &[]).await, vendor)
}

/// The sum of a counter's series on the server's /metrics.
async fn counter_total(server: &ServerProcess, name: &str) -> f64 {
    let (_, samples) = scrape(server).await;
    samples
        .iter()
        .filter(|(key, _)| key.starts_with(name))
        .map(|(_, value)| value)
        .sum()
}

/// The newest enrollment event of `profile`: (outcome, reason, serial).
async fn last_event(ca: &ConfiguredCa, profile: &str) -> (String, String, Option<String>) {
    let db = sqlx::SqlitePool::connect(&format!("sqlite://{}?mode=ro", ca.db))
        .await
        .expect("db");
    let row: (String, String, Option<String>) = sqlx::query_as(
        "SELECT outcome, reason, serial FROM enrollment_events \
         WHERE profile = $1 AND operation = 'simpleenroll' ORDER BY id DESC LIMIT 1",
    )
    .bind(profile)
    .fetch_one(&db)
    .await
    .expect("event");
    db.close().await;
    row
}

fn assert_refused(status: u16, text: &str, expected_status: u16, code: &str) {
    assert_eq!(status, expected_status, "{text}");
    assert!(text.starts_with(code), "expected {code}, got {text}");
}

#[tokio::test(flavor = "multi_thread")]
async fn path_building_pools_are_answered_fast_and_cost_bounded_cpu() {
    let tmp = tempfile::tempdir().expect("temp dir");
    let (ca, _vendor) = start(tmp.path()).await;

    // 64 certificates under two mutually-issuing names (the old search: n⁴ signature checks,
    // minutes of CPU): refused before any is checked.
    let started = Instant::now();
    let (status, text) = ca
        .post("/simpleenroll", &hostile::looping_pool_csr(&[7; 32], 64))
        .await;
    assert_refused(status, &text, 400, "attestation.too_complex");
    assert!(
        started.elapsed() < Duration::from_secs(1),
        "{:?}",
        started.elapsed()
    );

    // The largest pool accepted, with a nonce this CA never issued: refused on the nonce,
    // before a single signature over the pool is checked.
    let verifications = "attestca_attestation_verifications_total";
    let before = counter_total(&ca.server, verifications).await;
    let (status, text) = ca
        .post("/simpleenroll", &hostile::looping_pool_csr(&[7; 32], 16))
        .await;
    assert_refused(status, &text, 403, "attestation.nonce_unknown");
    assert_eq!(
        counter_total(&ca.server, verifications).await,
        before,
        "the evidence was verified although its nonce is unknown"
    );

    // The same pool with a live nonce of this rig: searched, within the budget, and refused.
    let nonce = nonce_via(&ca.rig, &ca.url("/nonce")).await;
    let csr = hostile::looping_pool_csr(&nonce, 16);
    let cpu_before = ca.server.cpu_seconds();
    let started = Instant::now();
    let (status, text) = ca.post("/simpleenroll", &csr).await;
    let wall = started.elapsed();
    let cpu_at_response = ca.server.cpu_seconds();
    assert!(
        (status == 403 && text.starts_with("attestation.untrusted_root"))
            || (status == 400 && text.starts_with("attestation.too_complex")),
        "{status} {text}"
    );
    assert!(wall < Duration::from_secs(1), "{wall:?}");
    assert!(
        counter_total(&ca.server, verifications).await > before,
        "with a live nonce the evidence is verified"
    );
    // A debug build; the release build's figures are in docs/performance.md.
    assert!(
        cpu_at_response - cpu_before < 0.5,
        "the request cost {:.3} s of CPU",
        cpu_at_response - cpu_before
    );
    // Nothing goes on burning CPU after the answer (background jobs cost milliseconds).
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let after = ca.server.cpu_seconds() - cpu_at_response;
    assert!(
        after < 0.15,
        "the server kept working: {after:.3} s of CPU after the response"
    );
    assert_eq!(
        last_event(&ca, "default").await.1,
        text.split(':').next().unwrap_or_default()
    );

    // Distinct P-384 keys whose every link verifies: the search keeps finding links until the
    // request's budget of signature checks is spent, and says so.
    let nonce = nonce_via(&ca.rig, &ca.url("/nonce")).await;
    let csr = hostile::distinct_key_ladder_csr(&nonce, 16);
    let started = Instant::now();
    let (status, text) = ca.post("/simpleenroll", &csr).await;
    assert_refused(status, &text, 400, "attestation.too_complex");
    assert!(
        started.elapsed() < Duration::from_secs(1),
        "{:?}",
        started.elapsed()
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn retries_never_cross_a_profile_or_return_a_revoked_certificate() {
    let tmp = tempfile::tempdir().expect("temp dir");
    let (ca, _vendor) = start(tmp.path()).await;
    let config = tmp.path().join("attestca.toml").display().to_string();

    // A plain CSR issued on `lab`, then posted to the attestation-required default profile:
    // a new request there, refused for want of evidence, never answered with the lab
    // certificate.
    let csr = DeviceKey::generate()
        .expect("key")
        .csr("retry-across")
        .expect("csr");
    let (status, text) = ca.post("/lab/simpleenroll", &csr).await;
    assert_eq!(status, 200, "{text}");
    let lab_certificate = certificate_from_response(text.as_bytes());
    let (status, text) = ca.post("/simpleenroll", &csr).await;
    assert_refused(status, &text, 403, "attestation.required");
    let (outcome, reason, _) = last_event(&ca, "default").await;
    assert_eq!(
        (outcome.as_str(), reason.as_str()),
        ("refused", "attestation.required")
    );

    // On its own profile it is a retry: the same certificate.
    let (status, text) = ca.post("/lab/simpleenroll", &csr).await;
    assert_eq!(status, 200, "{text}");
    assert_eq!(certificate_from_response(text.as_bytes()), lab_certificate);
    let serial = serial_of(&lab_certificate);
    assert_eq!(
        last_event(&ca, "lab").await,
        (
            "retried".into(),
            "enroll.retry".into(),
            Some(serial.clone())
        )
    );

    // Revoked, it is never sent again, not even within the retry window.
    revoke_with_cli(&["--config", &config], &serial, "keyCompromise");
    let (status, text) = ca.post("/lab/simpleenroll", &csr).await;
    assert_refused(status, &text, 403, "enroll.retry_revoked");
    assert_eq!(
        last_event(&ca, "lab").await,
        (
            "refused".into(),
            "enroll.retry_revoked".into(),
            Some(serial)
        )
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_revoked_or_superseded_device_gets_no_nonce() {
    let tmp = tempfile::tempdir().expect("temp dir");
    let (ca, _vendor) = start(tmp.path()).await;
    let config = tmp.path().join("attestca.toml").display().to_string();
    let chain = ca.dir.join("pki/ca-chain.pem");
    let device_client = |name: &str, cert: &[u8], key: &DeviceKey| {
        let (cert_path, key_path) = (
            tmp.path().join(format!("{name}.crt")),
            tmp.path().join(format!("{name}.key")),
        );
        write_pem(&cert_path, cert);
        attestca::pem::write_private_key(&key_path, &key.pkcs8).expect("key");
        https_client(&chain, Some((&cert_path, &key_path)))
    };
    let nonce_status = |client: reqwest::Client| {
        let url = ca.url("/lab/nonce");
        async move {
            let response = client.get(url).send().await.expect("nonce");
            let status = response.status().as_u16();
            (status, response.text().await.expect("body"))
        }
    };

    let key = DeviceKey::generate().expect("key");
    let (status, text) = ca
        .post("/lab/simpleenroll", &key.csr("nonce-device").expect("csr"))
        .await;
    assert_eq!(status, 200, "{text}");
    let first = certificate_from_response(text.as_bytes());
    let first_client = device_client("first", &first, &key);
    assert_eq!(nonce_status(first_client.clone()).await.0, 200);

    // Renewed: the old certificate is superseded and gets no nonce; the new one does.
    let renewal = key
        .renewal_csr(
            &der::Decode::from_der(&first).expect("certificate"),
            Vec::new(),
        )
        .expect("renewal csr");
    let response = first_client
        .post(ca.url("/lab/simplereenroll"))
        .header("Content-Type", "application/pkcs10")
        .body(body(&renewal))
        .send()
        .await
        .expect("simplereenroll");
    assert_eq!(response.status(), 200);
    let second = certificate_from_response(&response.bytes().await.expect("body"));
    let (status, text) = nonce_status(first_client).await;
    assert_refused(status, &text, 403, "reenroll.superseded");
    let second_client = device_client("second", &second, &key);
    assert_eq!(nonce_status(second_client.clone()).await.0, 200);

    // Revoked: no nonce.
    revoke_with_cli(&["--config", &config], &serial_of(&second), "keyCompromise");
    let (status, text) = nonce_status(second_client).await;
    assert_refused(status, &text, 403, "reenroll.revoked");
}

/// A request that cannot be decided before the request deadline gets 503 `service.timeout`
/// from the registration authority, and its event records that. The database is made to stall
/// for real: the test holds an exclusive lock on the nonces table.
#[tokio::test(flavor = "multi_thread")]
#[cfg_attr(
    missing_postgres,
    ignore = "needs PostgreSQL (ATTESTCA_TEST_DATABASE_URL); tests/run.sh provides it"
)]
async fn a_request_cut_off_by_the_deadline_is_answered_and_recorded() {
    let admin_url = require("PostgreSQL", "ATTESTCA_TEST_DATABASE_URL");
    let tmp = tempfile::tempdir().expect("temp dir");
    let data = tmp.path().join("data");
    let vendor_dir = data.join("vendor");
    std::fs::create_dir_all(&vendor_dir).expect("dir");
    let vendor = SimulatedVendor::create(&vendor_dir).expect("simulated vendor");
    let db = TestDatabase::create(&admin_url).await;
    let config = tmp.path().join("attestca.toml");
    std::fs::write(
        &config,
        format!(
            "[server]\ndata_dir = \"{data}\"\nrequest_timeout_secs = 2\n\
             [tls]\ncertificate_file = \"tls/server.crt\"\nkey_file = \"tls/server.key\"\n\
             [database]\nurl = \"{url}\"\n\
             [signer]\nbackend = \"software\"\nkey_file = \"pki/issuing.key\"\n\
             [ca]\nchain_file = \"pki/ca-chain.pem\"\n[rigs]\ntrust_anchor_files = [\"pki/rig-ca.crt\"]\n\
             {vendors}[profiles.default]\nattestation_required = true\n",
            data = data.display(),
            url = db.url,
            vendors = vendor_config(attestca::attestation::ID_HW_SIMULATED_SE),
        ),
    )
    .expect("config");
    let cfg = config.display().to_string();
    init_test_install(&cfg, &[]);
    let mut server = ServerProcess::with_config(&cfg, &[], &tmp.path().join("server.log"));
    server.wait_ready().await;
    let pki = data.join("pki");
    let rig = https_client(
        &pki.join("ca-chain.pem"),
        Some((&pki.join("rig.crt"), &pki.join("rig.key"))),
    );
    let url = |op: &str| format!("{}/.well-known/est/{op}", server.est_url());
    let nonce = nonce_via(&rig, &url("nonce")).await;
    let (_, csr) = vendor
        .manufacture()
        .expect("device")
        .enroll_key("deadline-device", &nonce)
        .expect("csr");
    let post = || {
        rig.post(url("simpleenroll"))
            .header("Content-Type", "application/pkcs10")
            .body(body(&csr))
            .send()
    };

    let pool = db.pool().await;
    let mut stall = pool.begin().await.expect("begin");
    // The request's first database statement is the retry look-up (the nonce is stateless
    // and checked without the database): it waits on this lock until the deadline.
    sqlx::query("LOCK TABLE issued_requests IN ACCESS EXCLUSIVE MODE")
        .execute(&mut *stall)
        .await
        .expect("lock");
    let started = Instant::now();
    let response = post().await.expect("post");
    let waited = started.elapsed();
    let status = response.status().as_u16();
    let text = response.text().await.expect("body");
    assert_refused(status, &text, 503, "service.timeout");
    assert!(
        waited >= Duration::from_millis(1500) && waited < Duration::from_secs(3),
        "{waited:?}"
    );
    // Cut off, the request does no more work: the server's CPU stays flat while the lock is
    // still held (background jobs cost milliseconds).
    let cpu_at_response = server.cpu_seconds();
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let after = server.cpu_seconds() - cpu_at_response;
    assert!(
        after < 0.15,
        "the server kept working: {after:.3} s of CPU after the response"
    );
    stall.rollback().await.expect("release the lock");

    let (outcome, reason): (String, String) = sqlx::query_as(
        "SELECT outcome, reason FROM enrollment_events WHERE operation = 'simpleenroll' \
         ORDER BY id DESC LIMIT 1",
    )
    .fetch_one(&pool)
    .await
    .expect("event");
    assert_eq!(
        (outcome.as_str(), reason.as_str()),
        ("failed", "service.timeout")
    );

    // The nonce was not spent by the request that timed out: the retry is issued.
    let response = post().await.expect("post");
    assert_eq!(response.status(), 200, "{}", server.log_text());
    pool.close().await;
    drop(server);
    db.drop_database().await;
}

/// Anyone may present Basic credentials, and a wrong password costs an Argon2id verification:
/// a flood of them on the nonce resource (which has no enrollment admission limit) is answered
/// 503 `overload.authentication` beyond one check per core, instead of using every core.
#[tokio::test(flavor = "multi_thread")]
async fn a_flood_of_wrong_passwords_is_shed_not_queued() {
    let tmp = tempfile::tempdir().expect("temp dir");
    let (ca, _vendor) = start(tmp.path()).await;
    let anonymous = https_client(&ca.dir.join("pki/ca-chain.pem"), None);
    let attempts = (0..24).map(|i| {
        anonymous
            .get(ca.url("/nonce"))
            .basic_auth(format!("nobody-{i}"), Some("wrong"))
            .send()
    });
    let mut statuses = std::collections::BTreeMap::new();
    for response in futures::future::join_all(attempts).await {
        let response = response.expect("nonce request");
        let status = response.status().as_u16();
        let retry_after = response.headers().contains_key("retry-after");
        let text = response.text().await.expect("body");
        match status {
            401 => assert!(text.starts_with("auth.invalid"), "{text}"),
            503 => {
                assert!(text.starts_with("overload.authentication"), "{text}");
                assert!(retry_after, "503 without Retry-After");
            }
            other => panic!("{other}: {text}"),
        }
        *statuses.entry(status).or_insert(0) += 1;
    }
    assert!(statuses.contains_key(&401), "{statuses:?}");
    assert!(statuses.contains_key(&503), "{statuses:?}");
    let (_, samples) = scrape(&ca.server).await;
    assert!(
        samples
            .get("attestca_overload_refusals_total{limit=\"password_checks\"}")
            .is_some_and(|n| *n > 0.0),
        "the refusals are counted"
    );
}
