//! The example production configuration (`deploy/attestca.example.toml`) end to end with a
//! real PostgreSQL and a real SoftHSM token: `attestca init`, `attestca serve --config`, EST
//! over TLS with both rig authentication modes, the refusals, the database rows and events,
//! and the CA key's presence in the token only.

use attestca_testkit as common;

use std::path::Path;

use common::*;
use sqlx::Row;

const PIN: &str = "4321";
const TOKEN: &str = "attestca-test";
const BASIC_PASSWORD: &str = "line-1 s3cret";
const OPERATOR_TOKEN: &str = "automation-token-0123456789";

#[tokio::test(flavor = "multi_thread")]
#[cfg_attr(
    any(missing_postgres, missing_softhsm),
    ignore = "needs PostgreSQL (ATTESTCA_TEST_DATABASE_URL) and SoftHSM (ATTESTCA_TEST_PKCS11_MODULE); tests/run.sh provides it"
)]
async fn example_production_config_on_postgres_and_softhsm() {
    let admin_url = require("PostgreSQL", "ATTESTCA_TEST_DATABASE_URL");
    let module = require("SoftHSM", "ATTESTCA_TEST_PKCS11_MODULE");
    let tmp = tempfile::tempdir().expect("temp dir");
    let data = tmp.path().join("data");
    let token = SoftHsmToken::create(&tmp.path().join("softhsm"), TOKEN, PIN);
    let db = TestDatabase::create(&admin_url).await;
    let (est, http) = addresses();
    let example = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../deploy/attestca.example.toml");
    let config = example.display().to_string();
    let env = vec![
        ("SOFTHSM2_CONF", token.conf.display().to_string()),
        ("ATTESTCA_SIGNER_PIN", PIN.to_owned()),
        ("ATTESTCA_SERVER__DATA_DIR", data.display().to_string()),
        ("ATTESTCA_SERVER__EST_ADDR", est.to_string()),
        ("ATTESTCA_SERVER__HTTP_ADDR", http.to_string()),
        ("ATTESTCA_SERVER__LOG_FORMAT", "text".to_owned()),
        ("ATTESTCA_DATABASE__URL", db.url.clone()),
        ("ATTESTCA_SIGNER__MODULE", module.clone()),
        ("ATTESTCA_SIGNER__TOKEN_LABEL", TOKEN.to_owned()),
        ("ATTESTCA_TRANSPARENCY__ENABLED", "true".to_owned()),
        (
            "ATTESTCA_RIG_PASSWORD_LINE_1_BASIC",
            BASIC_PASSWORD.to_owned(),
        ),
        (
            "ATTESTCA_OPERATOR_TOKEN_AUTOMATION",
            OPERATOR_TOKEN.to_owned(),
        ),
    ];

    // A test install: root in software, issuing key generated inside the token.
    let (ok, out) = run(
        env!("CARGO_BIN_EXE_attestca"),
        &[
            "init",
            "--config",
            &config,
            "--test-root",
            "--tls-names",
            "localhost,127.0.0.1",
            "--rig-cert",
            "rig-line-1",
            "--operator-cert",
            "operator-1",
        ],
        &env,
    );
    assert!(ok, "attestca init failed: {out}");
    let chain = data.join("pki/ca-chain.pem");
    let (rig_crt, rig_key) = (data.join("pki/rig.crt"), data.join("pki/rig.key"));

    let mut server = ServerProcess::spawn(
        &["serve", "--config", &config],
        &env,
        &tmp.path().join("server.log"),
        est,
        http,
    );
    server.wait_ready().await;
    let base = server.est_url();
    let url = |path: &str| format!("{base}/.well-known/est{path}");
    let rig = https_client(&chain, Some((&rig_crt, &rig_key)));
    let anonymous = https_client(&chain, None);

    // cacerts: anonymous, the two CA certificates.
    let cacerts = anonymous
        .get(url("/cacerts"))
        .send()
        .await
        .expect("cacerts");
    assert_eq!(cacerts.status(), 200);
    let body = cacerts.bytes().await.expect("body");
    let der = attestca::est::codec::decode_body(&body).expect("base64");
    assert_eq!(
        attestca_rig::client::certificates_from_pkcs7(&der)
            .expect("pkcs7")
            .len(),
        2
    );

    // simpleenroll with the rig's client certificate.
    let csr_der = csr("device-0001");
    let response = rig
        .post(url("/simpleenroll"))
        .header("Content-Type", "application/pkcs10")
        .body(body_of(&csr_der))
        .send()
        .await
        .expect("simpleenroll");
    assert_eq!(response.status(), 200, "{}", server.log_text());
    assert_eq!(
        response.headers()["content-type"],
        "application/pkcs7-mime; smime-type=certs-only"
    );
    let cert = certificate_from_response(&response.bytes().await.expect("body"));
    let serial = serial_of(&cert);
    let pem = tmp.path().join("device-0001.pem");
    write_pem(&pem, &cert);
    let (verified, out) = openssl_verify(&chain, &pem);
    assert!(verified, "openssl verify: {out}");

    // Ready (PostgreSQL answers, the token signs), and the metrics show the PKCS#11 signer.
    let ready = reqwest::get(format!("http://{http}/readyz"))
        .await
        .expect("readyz");
    assert_eq!(ready.status(), 200, "{}", server.log_text());
    let metrics = reqwest::get(format!("http://{http}/metrics"))
        .await
        .expect("metrics")
        .text()
        .await
        .expect("body");
    for expected in [
        "attestca_signer_operations_total{backend=\"pkcs11\",key=\"ca\",result=\"ok\"}",
        "attestca_signer_sessions{backend=\"pkcs11\"}",
        "attestca_component_ready{component=\"database\"} 1",
        "attestca_db_connections{state=\"idle\"}",
    ] {
        assert!(metrics.contains(expected), "{expected} missing:\n{metrics}");
    }

    // The example configuration's operators: the operator certificate and the token both see
    // the certificate through the operator API; the rig does not.
    let operator = https_client(
        &chain,
        Some((
            &data.join("pki/operator.crt"),
            &data.join("pki/operator.key"),
        )),
    );
    let api = format!("{base}/api/v1/certificates/{serial}");
    for (who, request, want) in [
        ("operator certificate", operator.get(&api), 200),
        (
            "bearer token",
            anonymous.get(&api).bearer_auth(OPERATOR_TOKEN),
            200,
        ),
        ("rig", rig.get(&api), 403),
        ("anonymous", anonymous.get(&api), 401),
    ] {
        let response = request.send().await.expect("operator API");
        assert_eq!(response.status(), want, "{who}");
    }

    // The row and its event are in PostgreSQL.
    let pool = db.pool().await;
    let row = sqlx::query(
        "SELECT der, requester, profile, status, subject FROM certificates WHERE serial = $1",
    )
    .bind(&serial)
    .fetch_one(&pool)
    .await
    .expect("certificate row");
    assert_eq!(row.get::<Vec<u8>, _>("der"), cert);
    assert_eq!(row.get::<String, _>("requester"), "tls:rig-line-1");
    assert_eq!(row.get::<String, _>("profile"), "default");
    assert_eq!(row.get::<String, _>("status"), "active");
    assert_eq!(row.get::<String, _>("subject"), "CN=device-0001");
    let outcome: String =
        sqlx::query_scalar("SELECT outcome FROM enrollment_events WHERE serial = $1")
            .bind(&serial)
            .fetch_one(&pool)
            .await
            .expect("event row");
    assert_eq!(outcome, "issued");

    // The same CSR again is a retry: same certificate, no second row, a "retried" event.
    let again = rig
        .post(url("/simpleenroll"))
        .header("Content-Type", "application/pkcs10")
        .body(body_of(&csr_der))
        .send()
        .await
        .expect("retry");
    assert_eq!(again.status(), 200);
    assert_eq!(
        certificate_from_response(&again.bytes().await.expect("body")),
        cert
    );
    let rows: i64 =
        sqlx::query_scalar("SELECT COUNT(*) FROM certificates WHERE subject = 'CN=device-0001'")
            .fetch_one(&pool)
            .await
            .expect("count");
    assert_eq!(rows, 1);
    let outcomes: Vec<String> =
        sqlx::query_scalar("SELECT outcome FROM enrollment_events WHERE serial = $1 ORDER BY id")
            .bind(&serial)
            .fetch_all(&pool)
            .await
            .expect("events");
    assert_eq!(outcomes, ["issued", "retried"]);

    // simpleenroll with Basic credentials.
    let basic = anonymous
        .post(url("/simpleenroll"))
        .basic_auth("line-1-basic", Some(BASIC_PASSWORD))
        .header("Content-Type", "application/pkcs10")
        .body(body_of(&csr("device-0002")))
        .send()
        .await
        .expect("basic enroll");
    assert_eq!(basic.status(), 200);
    let basic_cert = certificate_from_response(&basic.bytes().await.expect("body"));
    let requester: String =
        sqlx::query_scalar("SELECT requester FROM certificates WHERE serial = $1")
            .bind(serial_of(&basic_cert))
            .fetch_one(&pool)
            .await
            .expect("row");
    assert_eq!(requester, "basic:line-1-basic");

    // Refusals: status, a text/plain reason with its code, and no certificate row.
    let before: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM certificates")
        .fetch_one(&pool)
        .await
        .expect("count");
    let mut tampered = csr("device-tampered");
    let last = tampered.len() - 1;
    tampered[last] ^= 0x01;
    let pkcs10 = "application/pkcs10";
    let refusals: Vec<Refusal> = vec![
        Refusal::new(
            "no credentials",
            &anonymous,
            "/simpleenroll",
            pkcs10,
            body_of(&csr("d-x")),
            401,
            "auth.missing",
        ),
        Refusal::new(
            "wrong password",
            &anonymous,
            "/simpleenroll",
            pkcs10,
            body_of(&csr("d-x")),
            401,
            "auth.invalid",
        )
        .basic("line-1-basic", "not the password"),
        Refusal::new(
            "rig not allowed on line-2",
            &rig,
            "/line-2/simpleenroll",
            pkcs10,
            body_of(&csr("L2-0000ABCD")),
            403,
            "auth.not_allowed_on_profile",
        ),
        Refusal::new(
            "garbage CSR",
            &rig,
            "/simpleenroll",
            pkcs10,
            body_of(b"not a CSR at all"),
            400,
            "csr.malformed",
        ),
        Refusal::new(
            "CN not matching the profile pattern",
            &rig,
            "/simpleenroll",
            pkcs10,
            body_of(&csr("bad name!")),
            400,
            "csr.subject_rejected",
        ),
        Refusal::new(
            "bad CSR signature",
            &rig,
            "/simpleenroll",
            pkcs10,
            body_of(&tampered),
            400,
            "csr.",
        ),
        Refusal::new(
            "oversized body",
            &rig,
            "/simpleenroll",
            pkcs10,
            "A".repeat(200_000),
            413,
            "request.too_large",
        ),
        Refusal::new(
            "wrong content type",
            &rig,
            "/simpleenroll",
            "text/plain",
            body_of(&csr("d-x")),
            415,
            "request.content_type",
        ),
        Refusal::new(
            "unknown label",
            &rig,
            "/no-such-line/simpleenroll",
            pkcs10,
            body_of(&csr("d-x")),
            404,
            "profile.unknown",
        ),
    ];
    for refusal in refusals {
        let mut request = refusal
            .client
            .post(url(refusal.path))
            .header("Content-Type", refusal.content_type)
            .body(refusal.body);
        if let Some((user, password)) = refusal.basic {
            request = request.basic_auth(user, Some(password));
        }
        let response = request.send().await.expect(refusal.what);
        let what = refusal.what;
        assert_eq!(response.status(), refusal.status, "{what}");
        let headers = response.headers().clone();
        assert!(
            headers["content-type"]
                .to_str()
                .unwrap_or("")
                .starts_with("text/plain"),
            "{what}: text/plain"
        );
        if refusal.status == 401 {
            assert!(
                headers["www-authenticate"]
                    .to_str()
                    .unwrap_or("")
                    .starts_with("Basic realm="),
                "{what}: Basic challenge"
            );
        }
        let text = response.text().await.expect("error body");
        assert!(text.starts_with(refusal.code), "{what}: {text}");
    }
    let after: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM certificates")
        .fetch_one(&pool)
        .await
        .expect("count");
    assert_eq!(before, after, "refusals must not create certificates");
    let refused: Vec<String> = sqlx::query_scalar(
        "SELECT reason FROM enrollment_events WHERE outcome = 'refused' ORDER BY id",
    )
    .fetch_all(&pool)
    .await
    .expect("refusal events");
    for code in [
        "auth.missing",
        "auth.invalid",
        "auth.not_allowed_on_profile",
        "csr.malformed",
        "csr.subject_rejected",
        "request.too_large",
        "request.content_type",
    ] {
        assert!(
            refused.iter().any(|r| r == code),
            "no refused event with {code}: {refused:?}"
        );
    }

    // The CA key lives in the token: sensitive, never extractable, and no key file on disk is it.
    let objects = token.private_keys(&module);
    assert!(objects.contains("attestca-issuing-ca"), "{objects}");
    assert!(
        objects.contains("sensitive") && objects.contains("never extractable"),
        "{objects}"
    );
    let issuing_spki = public_key_of_cert(&chain);
    for entry in walk(&data) {
        if entry.extension().is_some_and(|e| e == "key") {
            let (ok, spki) = run(
                "openssl",
                &["pkey", "-in", &entry.display().to_string(), "-pubout"],
                &[],
            );
            assert!(ok, "{spki}");
            assert_ne!(
                spki,
                issuing_spki,
                "{} holds the issuing CA key",
                entry.display()
            );
        }
    }

    // The transparency log's checkpoint key is in the token too (Ed25519, under its own label,
    // not on disk), and the log as served verifies against the database.
    assert!(objects.contains("attestca-log-issuing-ca"), "{objects}");
    assert!(!data.join("pki/log-checkpoint.key").exists());
    let log_url = format!("http://{http}/log/issuing-ca/");
    let saved = tmp.path().join("checkpoint");
    let verify = |extra: &[&str]| {
        let mut args = vec!["log", "verify", "--url", &log_url, "--config", &config];
        args.extend(extra);
        run(env!("CARGO_BIN_EXE_attestca"), &args, &env)
    };
    let saved_arg = saved.display().to_string();
    let integrated = std::time::Instant::now();
    loop {
        let (ok, out) = verify(&["--save", &saved_arg]);
        if ok {
            break;
        }
        assert!(
            integrated.elapsed() < std::time::Duration::from_secs(3),
            "log verify:\n{out}\n{}",
            server.log_text()
        );
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    }

    // A restart finds the key in the token again by label.
    server.stop();
    let mut server = ServerProcess::spawn(
        &["serve", "--config", &config],
        &env,
        &tmp.path().join("server2.log"),
        est,
        http,
    );
    server.wait_ready().await;
    let rig = https_client(&chain, Some((&rig_crt, &rig_key)));
    let after_restart = rig
        .post(url("/simpleenroll"))
        .header("Content-Type", "application/pkcs10")
        .body(body_of(&csr("device-0003")))
        .send()
        .await
        .expect("enroll after restart");
    assert_eq!(after_restart.status(), 200, "{}", server.log_text());
    // The same checkpoint key after the restart: the grown log verifies and extends the one
    // saved before it.
    tokio::time::sleep(std::time::Duration::from_millis(1500)).await;
    let (ok, out) = verify(&["--since", &saved_arg]);
    assert!(
        ok && out.contains("\"check\":\"consistency\",\"ok\":true"),
        "{out}"
    );
    // A relying party with the production files (roots and chain from ca.chain_file, the
    // log key from pki/log.vkey): the certificate chains, is not on the CRL, and is in the log
    // with a record saying its profile required no evidence.
    let device = tmp.path().join("device-0003.crt");
    write_pem(
        &device,
        &certificate_from_response(&after_restart.bytes().await.expect("body")),
    );
    let crl_url = format!("http://{http}/crl/issuing-ca.crl");
    let (ok, out) = run(
        env!("CARGO_BIN_EXE_attestca"),
        &[
            "verify-device",
            "--cert",
            &device.display().to_string(),
            "--log",
            &log_url,
            "--config",
            &config,
            "--crl",
            &crl_url,
            "--allow-unattested",
        ],
        &env,
    );
    assert!(ok, "verify-device on production files:\n{out}");
    for check in [
        "chain",
        "revocation",
        "checkpoint",
        "inclusion",
        "attestation",
    ] {
        assert!(
            out.contains(&format!("\"check\":\"{check}\",\"ok\":true")),
            "{check}: {out}"
        );
    }
    drop(server);
    pool.close().await;
    db.drop_database().await;
}

/// One request the CA must refuse, and how.
struct Refusal<'a> {
    what: &'static str,
    client: &'a reqwest::Client,
    basic: Option<(&'static str, &'static str)>,
    path: &'static str,
    content_type: &'static str,
    body: String,
    status: u16,
    /// Prefix of the reason code the body must start with.
    code: &'static str,
}

impl<'a> Refusal<'a> {
    fn new(
        what: &'static str,
        client: &'a reqwest::Client,
        path: &'static str,
        content_type: &'static str,
        body: String,
        status: u16,
        code: &'static str,
    ) -> Self {
        Self {
            what,
            client,
            basic: None,
            path,
            content_type,
            body,
            status,
            code,
        }
    }

    fn basic(mut self, user: &'static str, password: &'static str) -> Self {
        self.basic = Some((user, password));
        self
    }
}

fn body_of(der: &[u8]) -> String {
    body(der)
}

fn public_key_of_cert(chain: &Path) -> String {
    let (ok, out) = run(
        "openssl",
        &[
            "x509",
            "-in",
            &chain.display().to_string(),
            "-noout",
            "-pubkey",
        ],
        &[],
    );
    assert!(ok, "{out}");
    out
}

fn walk(dir: &Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let path = entry.path();
        if path.is_dir() {
            out.extend(walk(&path));
        } else {
            out.push(path);
        }
    }
    out
}
