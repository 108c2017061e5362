//! The zero-setup run: `attestca serve --dev` with SQLite and a software key — the files the
//! interface contract promises, enrollment with both rig authentication modes, the rows in the
//! embedded database, and "issue once" under concurrent retries.

use attestca_testkit as common;

use std::path::Path;

use common::*;
use sqlx::Row;

#[tokio::test(flavor = "multi_thread")]
async fn dev_run_enrolls_and_records_in_sqlite() {
    let tmp = tempfile::tempdir().expect("temp dir");
    let dir = tmp.path().join("data");
    let mut server = ServerProcess::dev(&dir, &tmp.path().join("server.log"));
    server.wait_ready().await;

    // The interface contract's files.
    let pki = dir.join("pki");
    for f in ["ca-chain.pem", "rig.crt", "rig.key", "rig-basic.txt"] {
        assert!(pki.join(f).is_file(), "{f} missing");
    }
    let chain = pki.join("ca-chain.pem");
    let chain_certs = attestca::pem::read_certificates(&chain).expect("chain");
    assert_eq!(chain_certs.len(), 2, "issuing CA then root");
    assert_eq!(
        chain_certs[0].tbs_certificate().issuer(),
        chain_certs[1].tbs_certificate().subject(),
        "the first certificate is the issuing CA, issued by the second"
    );
    let basic = std::fs::read_to_string(pki.join("rig-basic.txt")).expect("rig-basic.txt");
    let (user, password) = basic.trim().split_once(':').expect("user:password");

    // Plain CSRs go to the lab profile: the dev default requires attestation.
    let url = format!("{}/.well-known/est/lab/simpleenroll", server.est_url());
    let rig = https_client(&chain, Some((&pki.join("rig.crt"), &pki.join("rig.key"))));
    let anonymous = https_client(&chain, None);

    let mtls = rig
        .post(&url)
        .header("Content-Type", "application/pkcs10")
        .body(body(&csr("dev-device-1")))
        .send()
        .await
        .expect("mTLS enroll");
    assert_eq!(mtls.status(), 200, "{}", server.log_text());
    let mtls_cert = certificate_from_response(&mtls.bytes().await.expect("body"));

    let basic = anonymous
        .post(&url)
        .basic_auth(user, Some(password))
        .header("Content-Type", "application/pkcs10")
        .body(body(&csr("dev-device-2")))
        .send()
        .await
        .expect("Basic enroll");
    assert_eq!(basic.status(), 200, "{}", server.log_text());
    let basic_cert = certificate_from_response(&basic.bytes().await.expect("body"));

    for (name, der) in [("mtls", &mtls_cert), ("basic", &basic_cert)] {
        let pem = tmp.path().join(format!("{name}.pem"));
        write_pem(&pem, der);
        let (ok, out) = openssl_verify(&chain, &pem);
        assert!(ok, "{name}: {out}");
    }

    // Eight concurrent posts of one CSR by one rig: one certificate, the same for all.
    let shared = body(&csr("dev-device-3"));
    let posts = (0..8).map(|_| {
        rig.post(&url)
            .header("Content-Type", "application/pkcs10")
            .body(shared.clone())
            .send()
    });
    let mut serials = Vec::new();
    for response in futures::future::join_all(posts).await {
        let response = response.expect("concurrent post");
        assert_eq!(response.status(), 200);
        serials.push(serial_of(&certificate_from_response(
            &response.bytes().await.expect("body"),
        )));
    }
    serials.dedup();
    assert_eq!(
        serials.len(),
        1,
        "concurrent retries got different certificates: {serials:?}"
    );

    // The embedded database has the rows and events.
    let db = sqlx::SqlitePool::connect(&format!(
        "sqlite://{}?mode=ro",
        dir.join("attestca.db").display()
    ))
    .await
    .expect("open the SQLite file");
    // Device certificates only (the OCSP responder's own certificate is recorded too).
    let rows = sqlx::query(
        "SELECT serial, requester, der FROM certificates WHERE profile <> 'ocsp-responder' \
         ORDER BY issued_at",
    )
    .fetch_all(&db)
    .await
    .expect("rows");
    assert_eq!(rows.len(), 3, "two devices and one for the concurrent CSR");
    let requester_of = |der: &Vec<u8>| {
        rows.iter()
            .find(|r| r.get::<Vec<u8>, _>("der") == *der)
            .map(|r| r.get::<String, _>("requester"))
    };
    assert_eq!(requester_of(&mtls_cert).as_deref(), Some("tls:rig-dev-01"));
    assert_eq!(
        requester_of(&basic_cert).as_deref(),
        Some(format!("basic:{user}").as_str())
    );
    let retried: i64 = sqlx::query_scalar(
        "SELECT COUNT(*) FROM enrollment_events WHERE outcome = 'retried' AND serial = $1",
    )
    .bind(&serials[0])
    .fetch_one(&db)
    .await
    .expect("events");
    assert_eq!(
        retried, 7,
        "seven of the eight concurrent posts are recorded as retries"
    );
    db.close().await;

    // The default profile wants evidence from the simulated secure element in DIR/vendor.
    let default_url = format!("{}/.well-known/est/simpleenroll", server.est_url());
    let plain = rig
        .post(&default_url)
        .header("Content-Type", "application/pkcs10")
        .body(body(&csr("plain-on-default")))
        .send()
        .await
        .expect("plain CSR on default");
    assert_eq!(plain.status(), 403);
    assert!(
        plain
            .text()
            .await
            .expect("body")
            .starts_with("attestation.required")
    );
    let est = attestca_rig::client::EstClient::new(
        &server.est_url(),
        None,
        attestca_rig::client::tls_config(
            &chain,
            Some((&pki.join("rig.crt"), &pki.join("rig.key"))),
        )
        .expect("tls"),
        None,
    )
    .expect("EST client");
    let nonce = est.nonce().await.expect("nonce");
    let vendor =
        attestca_sim::secure_element::SimulatedVendor::load(&dir.join("vendor")).expect("vendor");
    let (_, first) = vendor
        .manufacture()
        .expect("device")
        .enroll_key("attested-1", &nonce)
        .expect("csr");
    let certificate = est.simpleenroll(&first).await.expect("attested enrollment");
    assert_hardware_module_name(tmp.path(), &certificate);
    let (_, second) = vendor
        .manufacture()
        .expect("device")
        .enroll_key("attested-2", &nonce)
        .expect("csr");
    let reused = rig
        .post(&default_url)
        .header("Content-Type", "application/pkcs10")
        .body(body(&second))
        .send()
        .await
        .expect("nonce reuse");
    assert_eq!(reused.status(), 403);
    assert!(
        reused
            .text()
            .await
            .expect("body")
            .starts_with("attestation.nonce_reused")
    );

    // The dev PKI is reused on restart.
    let before = std::fs::read(&chain).expect("chain");
    server.stop();
    let mut again = ServerProcess::dev(&dir, &tmp.path().join("server2.log"));
    again.wait_ready().await;
    assert_eq!(std::fs::read(&chain).expect("chain"), before);
    assert_secret_permissions(&pki);
}

/// Private keys and the Basic password are readable by their owner only.
fn assert_secret_permissions(pki: &Path) {
    use std::os::unix::fs::PermissionsExt;
    for entry in std::fs::read_dir(pki).expect("pki dir").flatten() {
        let path = entry.path();
        let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("");
        if name.ends_with(".key") || name == "rig-basic.txt" {
            let mode = entry.metadata().expect("metadata").permissions().mode() & 0o777;
            assert_eq!(mode, 0o600, "{name} has mode {mode:o}");
        }
    }
}
