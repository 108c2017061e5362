//! OCSP with the CA key in SoftHSM and two instances sharing one PostgreSQL: the responder key
//! is generated inside the token (sensitive, never extractable) and found by label by the
//! second instance and after a restart; one responder certificate serves both; a revocation
//! through the CLI is answered by both instances within 5 s.

use attestca_testkit as common;

use common::*;

const PIN: &str = "5678";
const TOKEN: &str = "attestca-ocsp";
const KEY_LABEL: &str = "attestca-issuing-ca";

#[tokio::test(flavor = "multi_thread")]
#[cfg_attr(
    any(missing_postgres, missing_softhsm, missing_pkilint),
    ignore = "needs PostgreSQL (ATTESTCA_TEST_DATABASE_URL) and SoftHSM (ATTESTCA_TEST_PKCS11_MODULE) and pkilint (ATTESTCA_TEST_PKILINT); tests/run.sh provides it"
)]
async fn ocsp_on_postgres_and_softhsm_with_two_instances() {
    let admin_url = require("PostgreSQL", "ATTESTCA_TEST_DATABASE_URL");
    let module = require("SoftHSM", "ATTESTCA_TEST_PKCS11_MODULE");
    let tmp = tempfile::tempdir().expect("temp dir");
    let token = SoftHsmToken::create(&tmp.path().join("softhsm"), TOKEN, PIN);
    let db = TestDatabase::create(&admin_url).await;
    let (cfg, data) = write_shared_database_config(
        tmp.path(),
        &db.url,
        &format!(
            "backend = \"pkcs11\"\nmodule = \"{module}\"\ntoken_label = \"{TOKEN}\"\n\
             key_label = \"{KEY_LABEL}\"\nsessions = 2"
        ),
        "ocsp_poll_secs = 1",
    );
    let env = vec![
        ("SOFTHSM2_CONF", token.conf.display().to_string()),
        ("ATTESTCA_SIGNER_PIN", PIN.to_owned()),
    ];
    init_test_install(&cfg, &env);
    let spawn = |i: usize| {
        ServerProcess::with_config(&cfg, &env, &tmp.path().join(format!("server{i}.log")))
    };
    // One after the other: the first start generates the responder key in the token.
    let mut servers = Vec::new();
    for i in 0..2 {
        let mut server = spawn(i);
        server.wait_ready().await;
        servers.push(server);
    }

    // The responder key is in the token, next to the CA key, and cannot leave it.
    let objects = token.private_keys(&module);
    let responder_label = format!("label:      {KEY_LABEL}-ocsp");
    assert_eq!(
        objects.matches(&responder_label).count(),
        1,
        "one responder key: {objects}"
    );
    let responder_block = objects
        .split("Private Key Object")
        .find(|block| block.contains(&responder_label))
        .expect("responder key object");
    assert!(
        responder_block.contains("sensitive") && responder_block.contains("never extractable"),
        "{responder_block}"
    );
    assert!(
        !std::fs::exists(data.join("pki/ocsp-responder.key")).expect("stat"),
        "no software responder key with PKCS#11"
    );

    // Both instances use the one recorded responder certificate (same key, found by label).
    let pool = db.pool().await;
    let responder_rows: i64 =
        sqlx::query_scalar("SELECT COUNT(*) FROM certificates WHERE profile = 'ocsp-responder'")
            .fetch_one(&pool)
            .await
            .expect("count");
    assert_eq!(responder_rows, 1);

    let chain = data.join("pki/ca-chain.pem");
    let rig = https_client(
        &chain,
        Some((&data.join("pki/rig.crt"), &data.join("pki/rig.key"))),
    );
    let mut leaves = Vec::new();
    for (i, server) in servers.iter().enumerate() {
        let url = format!("{}/.well-known/est/simpleenroll", server.est_url());
        let der = enroll(&rig, &url, &format!("hsm-ocsp-{i}")).await;
        let pem = tmp.path().join(format!("leaf{i}.pem"));
        write_pem(&pem, &der);
        leaves.push((pem, serial_of(&der)));
    }
    let clients: Vec<OpensslOcsp> = servers
        .iter()
        .map(|s| OpensslOcsp::new(&chain, tmp.path(), format!("http://{}/ocsp", s.http)))
        .collect();
    // Each instance answers for the certificate the other issued (within a poll).
    for client in &clients {
        for (pem, _) in &leaves {
            client.until_status(pem, "good").await;
            assert_eq!(client.status(pem, &[]), "good", "with a nonce");
        }
    }

    // Revoked through the CLI: both instances answer revoked within 5 s.
    revoke_with_cli(&["--config", &cfg], &leaves[0].1, "cessationOfOperation");
    for client in &clients {
        let took = client.until_status(&leaves[0].0, "revoked").await;
        eprintln!("{}: revoked after {took:?}", client.url);
        let (ok, text) = client.query(&["-sha256", "-cert", leaves[0].0.to_str().expect("path")]);
        assert!(
            ok && text.contains("Reason: cessationOfOperation"),
            "{text}"
        );
        assert_eq!(client.status(&leaves[1].0, &["-no_nonce"]), "good");
    }
    let revoked_der = tmp.path().join("revoked.der");
    let (ok, text) = clients[1].query(&[
        "-cert",
        leaves[0].0.to_str().expect("path"),
        "-respout",
        revoked_der.to_str().expect("path"),
    ]);
    assert!(ok, "{text}");
    let (clean, findings) = lint_ocsp_response(&revoked_der);
    assert!(clean, "pkilint: {findings}");

    // A restart finds the responder key in the token by label: no second key, same answers.
    servers[0].stop();
    let mut restarted = spawn(2);
    restarted.wait_ready().await;
    let client = OpensslOcsp::new(
        &chain,
        tmp.path(),
        format!("http://{}/ocsp", restarted.http),
    );
    assert_eq!(client.status(&leaves[0].0, &["-no_nonce"]), "revoked");
    assert_eq!(client.status(&leaves[1].0, &[]), "good");
    assert_eq!(
        token
            .private_keys(&module)
            .matches(&responder_label)
            .count(),
        1,
        "the restart generated another responder key"
    );
    drop(restarted);
    servers.clear();
    pool.close().await;
    db.drop_database().await;
}
