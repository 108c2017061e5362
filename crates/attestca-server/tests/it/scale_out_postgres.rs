//! Two attestca instances sharing one PostgreSQL, as behind a load balancer: the same CSR
//! posted concurrently to both produces exactly one certificate, which every response carries.

use attestca_testkit as common;

use common::*;

#[tokio::test(flavor = "multi_thread")]
#[cfg_attr(
    missing_postgres,
    ignore = "needs PostgreSQL (ATTESTCA_TEST_DATABASE_URL); tests/run.sh provides it"
)]
async fn two_instances_on_one_database_issue_once() {
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
[profiles.default]
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
