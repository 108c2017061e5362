//! Two attestca instances sharing one PostgreSQL, as behind a load balancer: the same CSR
//! posted concurrently to both produces exactly one certificate, which every response carries.

use attestca_testkit as common;

use common::*;

/// Two instances of one install on a fresh database, with `extra` configuration appended.
struct TwoInstances {
    _tmp: tempfile::TempDir,
    data: std::path::PathBuf,
    db: TestDatabase,
    servers: Vec<ServerProcess>,
}

async fn two_instances(extra: &str) -> TwoInstances {
    let admin_url = require("PostgreSQL", "ATTESTCA_TEST_DATABASE_URL");
    let tmp = tempfile::tempdir().expect("temp dir");
    let data = tmp.path().join("data");
    let db = TestDatabase::create(&admin_url).await;
    let config = tmp.path().join("attestca.toml");
    std::fs::write(
        &config,
        format!(
            r#"
[server]
data_dir = "{data}"
[tls]
certificate_file = "tls/server.crt"
key_file = "tls/server.key"
[database]
url = "{url}"
[signer]
backend = "software"
key_file = "pki/issuing.key"
[ca]
chain_file = "pki/ca-chain.pem"
[rigs]
trust_anchor_files = ["pki/rig-ca.crt"]
{extra}
"#,
            data = data.display(),
            url = db.url,
        ),
    )
    .expect("config");
    let cfg = config.display().to_string();
    init_test_install(&cfg, &[]);

    let mut servers = Vec::new();
    for i in 0..2 {
        let (est, http) = addresses();
        let mut server = ServerProcess::spawn(
            &["serve", "--config", &cfg],
            &[
                ("ATTESTCA_SERVER__EST_ADDR", est.to_string()),
                ("ATTESTCA_SERVER__HTTP_ADDR", http.to_string()),
            ],
            &tmp.path().join(format!("server{i}.log")),
            est,
            http,
        );
        server.wait_ready().await;
        servers.push(server);
    }
    TwoInstances {
        _tmp: tmp,
        data,
        db,
        servers,
    }
}

#[tokio::test(flavor = "multi_thread")]
#[cfg_attr(
    missing_postgres,
    ignore = "needs PostgreSQL (ATTESTCA_TEST_DATABASE_URL); tests/run.sh provides it"
)]
async fn two_instances_on_one_database_issue_once() {
    let TwoInstances {
        _tmp,
        data,
        db,
        servers,
    } = two_instances("[profiles.default]").await;

    let pki = data.join("pki");
    let chain = pki.join("ca-chain.pem");
    let shared = body(&csr("shared-device"));
    let mut posts = Vec::new();
    for round in 0..6 {
        let server = &servers[round % 2];
        // A client per request: separate connections, as separate rig processes would use.
        let client = https_client(&chain, Some((&pki.join("rig.crt"), &pki.join("rig.key"))));
        posts.push(
            client
                .post(format!("{}/.well-known/est/simpleenroll", server.est_url()))
                .header("Content-Type", "application/pkcs10")
                .body(shared.clone())
                .send(),
        );
    }
    let mut certificates = Vec::new();
    for response in futures::future::join_all(posts).await {
        let response = response.expect("post");
        assert_eq!(response.status(), 200);
        certificates.push(certificate_from_response(
            &response.bytes().await.expect("body"),
        ));
    }
    certificates.dedup();
    assert_eq!(
        certificates.len(),
        1,
        "both instances must return the one certificate"
    );

    let pool = db.pool().await;
    // Device certificates and their events only (not the OCSP responder's).
    let rows: i64 =
        sqlx::query_scalar("SELECT COUNT(*) FROM certificates WHERE profile <> 'ocsp-responder'")
            .fetch_one(&pool)
            .await
            .expect("count");
    assert_eq!(rows, 1, "one certificate row for one CSR");
    let events: Vec<String> = sqlx::query_scalar(
        "SELECT outcome FROM enrollment_events WHERE operation <> 'ocsp-responder' ORDER BY id",
    )
    .fetch_all(&pool)
    .await
    .expect("events");
    assert_eq!(
        events.iter().filter(|o| *o == "issued").count(),
        1,
        "{events:?}"
    );
    assert_eq!(
        events.iter().filter(|o| *o == "retried").count(),
        5,
        "{events:?}"
    );
    pool.close().await;
    drop(servers);
    db.drop_database().await;
}

/// A stateless nonce (`attestca_core::nonce`) minted by one instance is good on the other (they
/// share the key through the database), and buys exactly one certificate across both: eight
/// CSRs for eight devices, all carrying one nonce, posted at once to the two instances, give one
/// certificate and seven refusals (403 `attestation.nonce_reused`) — and no second certificate
/// row. The same CSR posted again is a retry, answered with the one certificate.
#[tokio::test(flavor = "multi_thread")]
#[cfg_attr(
    missing_postgres,
    ignore = "needs PostgreSQL (ATTESTCA_TEST_DATABASE_URL); tests/run.sh provides it"
)]
async fn a_nonce_is_single_use_across_instances() {
    let vendor_root = tempfile::tempdir().expect("vendor dir");
    let vendor = attestca_sim::secure_element::SimulatedVendor::create(vendor_root.path())
        .expect("simulated vendor");
    let TwoInstances {
        _tmp,
        data,
        db,
        servers,
    } = two_instances(&format!(
        r#"
[[attestation.vendors]]
name = "simulated-se"
roots = ["{root}"]
formats = ["x509-chain"]
reader = "simulated-se"
hardware_type = "{hw}"
[profiles.default]
attestation_required = true
key_algorithms = ["p256"]
"#,
        root = vendor_root.path().join("vendor-root.crt").display(),
        hw = attestca::attestation::ID_HW_SIMULATED_SE,
    ))
    .await;
    let pki = data.join("pki");
    let rig = || {
        https_client(
            &pki.join("ca-chain.pem"),
            Some((&pki.join("rig.crt"), &pki.join("rig.key"))),
        )
    };
    let nonce = nonce_via(
        &rig(),
        &format!("{}/.well-known/est/nonce", servers[0].est_url()),
    )
    .await;
    assert_eq!(nonce.len(), 32, "the default nonce is stateless");
    let mut csrs = Vec::new();
    for i in 0..8 {
        // Eight devices (one device with eight keys would be refused as a clone instead).
        let device = vendor.manufacture().expect("device");
        let (_, csr) = device
            .enroll_key(&format!("nonce-race-{i}"), &nonce)
            .expect("attested CSR");
        csrs.push(csr);
    }
    let post = |i: usize, csr: &[u8]| {
        rig()
            .post(format!(
                "{}/.well-known/est/simpleenroll",
                servers[i % 2].est_url()
            ))
            .header("Content-Type", "application/pkcs10")
            .body(body(csr))
            .send()
    };
    let responses =
        futures::future::join_all(csrs.iter().enumerate().map(|(i, csr)| post(i, csr))).await;
    let mut issued = Vec::new();
    let mut refused = 0;
    for (i, response) in responses.into_iter().enumerate() {
        let response = response.expect("post");
        let status = response.status().as_u16();
        let text = response.text().await.expect("body");
        match status {
            200 => issued.push(i),
            403 => {
                assert!(text.starts_with("attestation.nonce_reused"), "{text}");
                refused += 1;
            }
            other => panic!(
                "unexpected {other}: {text}\n{}\n{}",
                servers[0].log_text(),
                servers[1].log_text()
            ),
        }
    }
    assert_eq!(issued.len(), 1, "one nonce, one certificate");
    assert_eq!(refused, 7);

    // The winning CSR again, on the other instance: the same certificate, as a retry.
    let winner = issued[0];
    let again = post(winner + 1, &csrs[winner]).await.expect("post");
    assert_eq!(again.status(), 200);

    let pool = db.pool().await;
    let rows: i64 = sqlx::query_scalar(
        "SELECT COUNT(*) FROM certificates WHERE profile <> 'ocsp-responder' AND nonce = $1",
    )
    .bind(&nonce)
    .fetch_one(&pool)
    .await
    .expect("count");
    assert_eq!(rows, 1, "one certificate row carries the nonce");
    let reasons: Vec<String> = sqlx::query_scalar(
        "SELECT reason FROM enrollment_events WHERE operation = 'simpleenroll' ORDER BY id",
    )
    .fetch_all(&pool)
    .await
    .expect("events");
    assert_eq!(
        reasons
            .iter()
            .filter(|r| *r == "attestation.nonce_reused")
            .count(),
        7,
        "{reasons:?}"
    );
    pool.close().await;
    drop(servers);
    db.drop_database().await;
}

/// Two instances on one database keep one issuance log: certificates issued through both are
/// integrated by whichever holds the integrator lock, both serve the same checkpoint, and
/// `attestca log verify` finds every certificate of the database in the log and nothing else.
#[tokio::test(flavor = "multi_thread")]
#[cfg_attr(
    missing_postgres,
    ignore = "needs PostgreSQL (ATTESTCA_TEST_DATABASE_URL); tests/run.sh provides it"
)]
async fn two_instances_keep_one_consistent_log() {
    let TwoInstances {
        _tmp,
        data,
        db,
        servers,
    } = two_instances("[transparency]\nenabled = true\n[profiles.default]").await;
    let pki = data.join("pki");
    let rig = https_client(
        &pki.join("ca-chain.pem"),
        Some((&pki.join("rig.crt"), &pki.join("rig.key"))),
    );
    let posts = (0..24).map(|i| {
        let url = format!("{}/.well-known/est/simpleenroll", servers[i % 2].est_url());
        let rig = rig.clone();
        async move { enroll(&rig, &url, &format!("logged-{i}")).await }
    });
    futures::future::join_all(posts).await;

    let pool = db.pool().await;
    let started = std::time::Instant::now();
    loop {
        let pending: i64 = sqlx::query_scalar("SELECT count(*) FROM log_pending")
            .fetch_one(&pool)
            .await
            .expect("pending");
        if pending == 0 {
            break;
        }
        assert!(
            started.elapsed() < std::time::Duration::from_secs(3),
            "never integrated"
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    let certificates: i64 = sqlx::query_scalar("SELECT count(*) FROM certificates")
        .fetch_one(&pool)
        .await
        .expect("count");
    let checkpoints: Vec<String> = futures::future::join_all(servers.iter().map(|s| async move {
        reqwest::get(format!("http://{}/log/issuing-ca/checkpoint", s.http))
            .await
            .expect("checkpoint")
            .text()
            .await
            .expect("note")
    }))
    .await;
    assert_eq!(checkpoints[0], checkpoints[1], "one log, one checkpoint");
    assert!(
        checkpoints[0].starts_with(&format!("issuing-ca\n{certificates}\n")),
        "{} certificates, checkpoint:\n{}",
        certificates,
        checkpoints[0]
    );
    let config = data.parent().expect("tmp").join("attestca.toml");
    let (ok, out) = run(
        &attestca_bin(),
        &[
            "log",
            "verify",
            "--url",
            &format!("http://{}/log/issuing-ca/", servers[1].http),
            "--config",
            &config.display().to_string(),
        ],
        &[],
    );
    assert!(ok, "{out}");
    pool.close().await;
    drop(servers);
    db.drop_database().await;
}
