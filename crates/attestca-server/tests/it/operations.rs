//! Operating the CA, against the real server binary: `/metrics` passes `promtool check metrics`
//! and its counters move with enrollments, refusals and OCSP; `/readyz`; overload answers 503 +
//! Retry-After while `/healthz` keeps answering, and the server recovers; per-rig budgets
//! answer 429; silent clients are cut off; SIGTERM during a stream of enrollments loses no
//! record and exits 0 within the grace period.

use attestca_testkit as common;

use std::collections::HashMap;
use std::io::Read;
use std::net::TcpStream;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::*;

/// The dev server with environment overrides, on fresh ports.
async fn dev_server(tmp: &Path, envs: &[(&str, String)]) -> ServerProcess {
    let (est, http) = addresses();
    let data = tmp.join("data");
    let mut server = ServerProcess::spawn(
        &[
            "serve",
            "--dev",
            "--data-dir",
            &data.display().to_string(),
            "--est-addr",
            &est.to_string(),
            "--http-addr",
            &http.to_string(),
        ],
        envs,
        &tmp.join("server.log"),
        est,
        http,
    );
    server.wait_ready().await;
    server
}

fn rig_client(tmp: &Path) -> reqwest::Client {
    let pki = tmp.join("data/pki");
    https_client(
        &pki.join("ca-chain.pem"),
        Some((&pki.join("rig.crt"), &pki.join("rig.key"))),
    )
}

fn sample(samples: &HashMap<String, f64>, key: &str) -> f64 {
    samples.get(key).copied().unwrap_or(0.0)
}

#[tokio::test(flavor = "multi_thread")]
#[cfg_attr(
    missing_promtool,
    ignore = "needs promtool (ATTESTCA_TEST_PROMTOOL); tests/run.sh provides it"
)]
async fn metrics_move_and_pass_promtool() {
    let tmp = tempfile::tempdir().expect("temp dir");
    let server = dev_server(tmp.path(), &[]).await;
    let rig = rig_client(tmp.path());
    let (_, before) = scrape(&server).await;

    // Three issued (lab), one refused (attestation required on the default profile).
    let mut issued = Vec::new();
    for i in 0..3 {
        let url = format!("{}/.well-known/est/lab/simpleenroll", server.est_url());
        issued.push(enroll(&rig, &url, &format!("metrics-{i}")).await);
    }
    let refused = rig
        .post(format!("{}/.well-known/est/simpleenroll", server.est_url()))
        .header("Content-Type", "application/pkcs10")
        .body(body(&csr("metrics-refused")))
        .send()
        .await
        .expect("enroll");
    assert_eq!(refused.status(), 403);
    // OCSP: one answer about an issued certificate.
    let pem = tmp.path().join("metrics-0.pem");
    write_pem(&pem, &issued[0]);
    let ocsp = OpensslOcsp::new(
        &tmp.path().join("data/pki/ca-chain.pem"),
        tmp.path(),
        format!("http://{}/ocsp", server.http),
    );
    assert_eq!(ocsp.status(&pem, &["-no_nonce"]), "good");
    let ready = reqwest::get(format!("http://{}/readyz", server.http))
        .await
        .expect("readyz");
    assert_eq!(ready.status(), 200, "{}", server.log_text());
    // Request ids: made when absent, kept when the client sends one.
    assert!(ready.headers().get("x-request-id").is_some());
    let traced = reqwest::Client::new()
        .get(format!("http://{}/healthz", server.http))
        .header("x-request-id", "rig-7-board-42")
        .send()
        .await
        .expect("healthz");
    assert_eq!(traced.headers()["x-request-id"], "rig-7-board-42");

    let (text, after) = scrape(&server).await;
    let delta = |key: &str| sample(&after, key) - sample(&before, key);
    assert_eq!(
        delta(
            "attestca_enrollments_total{operation=\"simpleenroll\",outcome=\"issued\",profile=\"lab\"}"
        ),
        3.0,
        "{text}"
    );
    assert_eq!(
        delta("attestca_certificates_issued_total{profile=\"lab\"}"),
        3.0
    );
    assert_eq!(
        delta(
            "attestca_enrollment_refusals_total{operation=\"simpleenroll\",reason=\"attestation.required\"}"
        ),
        1.0,
        "{text}"
    );
    assert_eq!(
        delta(
            "attestca_http_requests_total{listener=\"est\",method=\"POST\",route=\"/.well-known/est/{label}/simpleenroll\",status=\"200\"}"
        ),
        3.0,
        "{text}"
    );
    assert!(
        delta("attestca_ocsp_responses_total{source=\"cache\",status=\"successful\"}")
            + delta("attestca_ocsp_responses_total{source=\"live\",status=\"successful\"}")
            >= 1.0,
        "{text}"
    );
    assert!(delta("attestca_tls_handshakes_total{result=\"ok\"}") >= 1.0);
    assert!(
        delta("attestca_signer_operations_total{backend=\"software\",key=\"ca\",result=\"ok\"}")
            >= 3.0
    );
    assert!(delta("attestca_enrollment_duration_seconds_count{operation=\"simpleenroll\"}") >= 4.0);
    assert_eq!(
        sample(&after, "attestca_component_ready{component=\"signer\"}"),
        1.0
    );
    assert!(sample(&after, "attestca_crl_number{ca=\"issuing-ca\"}") >= 1.0);
    assert!(
        sample(
            &after,
            "attestca_ca_certificate_not_after_timestamp_seconds{ca=\"issuing-ca\"}"
        ) > 1.7e9
    );
    assert!(text.contains("attestca_build_info{version=\""));
    // No serial, device identity or address leaks into a label.
    for serial in issued.iter().map(|der| serial_of(der)) {
        assert!(!text.contains(&serial), "a serial in the metrics");
    }

    // promtool accepts the exposition.
    let promtool = require("promtool", "ATTESTCA_TEST_PROMTOOL");
    let file = tmp.path().join("metrics.txt");
    std::fs::write(&file, &text).expect("write");
    let out = std::process::Command::new("sh")
        .arg("-c")
        .arg(format!("{promtool} check metrics < {}", file.display()))
        .output()
        .expect("promtool");
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        out.status.success() && said.trim().is_empty(),
        "promtool: {said}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn overload_sheds_and_recovers() {
    let tmp = tempfile::tempdir().expect("temp dir");
    let server = dev_server(
        tmp.path(),
        &[
            ("ATTESTCA_SERVER__MAX_CONCURRENT_ENROLLMENTS", "1".into()),
            ("ATTESTCA_LIMITS__RIG_REQUESTS_PER_MINUTE", "0".into()),
        ],
    )
    .await;
    let rig = rig_client(tmp.path());
    let url = format!("{}/.well-known/est/lab/simpleenroll", server.est_url());
    let csrs: Vec<Vec<u8>> = (0..96).map(|i| csr(&format!("storm-{i}"))).collect();
    let health = {
        let url = format!("http://{}/healthz", server.http);
        tokio::spawn(async move {
            let mut answered = 0;
            for _ in 0..20 {
                if let Ok(r) = reqwest::get(&url).await
                    && r.status() == 200
                {
                    answered += 1;
                }
                tokio::time::sleep(Duration::from_millis(25)).await;
            }
            answered
        })
    };
    let mut storm = Vec::new();
    for der in csrs {
        let (rig, url) = (rig.clone(), url.clone());
        storm.push(tokio::spawn(async move {
            let response = rig
                .post(&url)
                .header("Content-Type", "application/pkcs10")
                .body(body(&der))
                .send()
                .await
                .expect("enroll");
            let retry_after = response.headers().get("retry-after").cloned();
            (response.status().as_u16(), retry_after)
        }));
    }
    let mut by_status: HashMap<u16, usize> = HashMap::new();
    for task in storm {
        let (status, retry_after) = task.await.expect("task");
        if status == 503 {
            assert!(retry_after.is_some(), "503 without Retry-After");
        }
        *by_status.entry(status).or_default() += 1;
    }
    assert_eq!(
        by_status
            .keys()
            .filter(|s| **s != 200 && **s != 503)
            .count(),
        0,
        "only 200 and 503 expected: {by_status:?}"
    );
    assert!(
        by_status.get(&503).copied().unwrap_or(0) > 0,
        "no load shed with one admission slot: {by_status:?}"
    );
    assert!(
        by_status.get(&200).copied().unwrap_or(0) > 0,
        "{by_status:?}"
    );
    assert_eq!(
        health.await.expect("health"),
        20,
        "/healthz stopped answering"
    );
    // Recovered without a restart.
    enroll(&rig, &url, "after-the-storm").await;
    let (_, samples) = scrape(&server).await;
    assert!(
        sample(
            &samples,
            "attestca_overload_refusals_total{limit=\"enrollment_concurrency\"}"
        ) >= 1.0
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn per_rig_budget_answers_429() {
    let tmp = tempfile::tempdir().expect("temp dir");
    let server = dev_server(
        tmp.path(),
        &[
            ("ATTESTCA_LIMITS__RIG_REQUESTS_PER_MINUTE", "6".into()),
            ("ATTESTCA_LIMITS__RIG_BURST", "2".into()),
        ],
    )
    .await;
    let rig = rig_client(tmp.path());
    let url = format!("{}/.well-known/est/nonce", server.est_url());
    let mut statuses = Vec::new();
    for _ in 0..3 {
        let r = rig.post(&url).send().await.expect("nonce");
        statuses.push((r.status().as_u16(), r.headers().get("retry-after").cloned()));
    }
    assert_eq!(statuses[0].0, 200);
    assert_eq!(statuses[1].0, 200);
    assert_eq!(statuses[2].0, 429, "{statuses:?}");
    let retry: u64 = statuses[2]
        .1
        .as_ref()
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse().ok())
        .expect("Retry-After seconds");
    assert!((1..=10).contains(&retry), "Retry-After {retry}");
    // Another rig (Basic account) has its own budget.
    let basic = std::fs::read_to_string(tmp.path().join("data/pki/rig-basic.txt")).expect("basic");
    let (user, password) = basic.trim().split_once(':').expect("user:password");
    let anonymous = https_client(&tmp.path().join("data/pki/ca-chain.pem"), None);
    let r = anonymous
        .post(&url)
        .basic_auth(user, Some(password))
        .send()
        .await
        .expect("nonce");
    assert_eq!(r.status(), 200);
}

/// Reads until the peer closes; returns how long that took (or panics after `limit`).
fn closed_within(mut stream: impl Read, limit: Duration) -> Duration {
    let started = Instant::now();
    let mut buf = [0u8; 64];
    loop {
        match stream.read(&mut buf) {
            Ok(0) | Err(_) => return started.elapsed(),
            Ok(_) => {}
        }
        assert!(
            started.elapsed() < limit,
            "connection still open after {limit:?}"
        );
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn silent_clients_are_cut_off() {
    let tmp = tempfile::tempdir().expect("temp dir");
    let server = dev_server(
        tmp.path(),
        &[
            ("ATTESTCA_SERVER__HEADER_READ_TIMEOUT_SECS", "2".into()),
            ("ATTESTCA_SERVER__TLS_HANDSHAKE_TIMEOUT_SECS", "2".into()),
        ],
    )
    .await;
    let limit = Duration::from_secs(6);
    // Plain HTTP: connect and send nothing.
    let plain = TcpStream::connect(server.http).expect("connect");
    plain.set_read_timeout(Some(limit)).expect("timeout");
    let took = closed_within(&plain, limit);
    assert!(
        took >= Duration::from_millis(1500),
        "closed too early: {took:?}"
    );
    // HTTPS: connect and never start the handshake.
    let tls = TcpStream::connect(server.est).expect("connect");
    tls.set_read_timeout(Some(limit)).expect("timeout");
    closed_within(&tls, limit);
    // HTTPS: complete the handshake, then send nothing.
    let config = attestca_rig::client::tls_config(&tmp.path().join("data/pki/ca-chain.pem"), None)
        .expect("TLS config");
    let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
    let tcp = tokio::net::TcpStream::connect(server.est)
        .await
        .expect("connect");
    let name = rustls_pki_types::ServerName::try_from("127.0.0.1").expect("name");
    let mut stream = connector.connect(name, tcp).await.expect("handshake");
    let started = Instant::now();
    let mut buf = [0u8; 64];
    let read =
        tokio::time::timeout(limit, tokio::io::AsyncReadExt::read(&mut stream, &mut buf)).await;
    assert!(
        matches!(read, Ok(Ok(0)) | Ok(Err(_))),
        "a silent TLS client was not cut off: {read:?}"
    );
    assert!(started.elapsed() >= Duration::from_millis(1500));
    // The server still serves.
    let ok = reqwest::get(format!("http://{}/healthz", server.http))
        .await
        .expect("healthz");
    assert_eq!(ok.status(), 200);
}

#[tokio::test(flavor = "multi_thread")]
async fn sigterm_drains_without_losing_a_record() {
    let tmp = tempfile::tempdir().expect("temp dir");
    let mut server = dev_server(
        tmp.path(),
        &[("ATTESTCA_SERVER__SHUTDOWN_GRACE_SECS", "10".into())],
    )
    .await;
    let rig = rig_client(tmp.path());
    let url = format!("{}/.well-known/est/lab/simpleenroll", server.est_url());
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let mut workers = Vec::new();
    for w in 0..8 {
        let (rig, url, stop) = (rig.clone(), url.clone(), Arc::clone(&stop));
        workers.push(tokio::spawn(async move {
            let mut received = Vec::new();
            let mut i = 0;
            while !stop.load(std::sync::atomic::Ordering::SeqCst) {
                i += 1;
                let request = rig
                    .post(&url)
                    .header("Content-Type", "application/pkcs10")
                    .body(body(&csr(&format!("drain-{w}-{i}"))))
                    .send()
                    .await;
                let Ok(response) = request else {
                    tokio::time::sleep(Duration::from_millis(20)).await;
                    continue;
                };
                if response.status() == 200
                    && let Ok(bytes) = response.bytes().await
                {
                    received.push(serial_of(&certificate_from_response(&bytes)));
                }
            }
            received
        }));
    }
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let started = Instant::now();
    let status = server.terminate_and_wait(Duration::from_secs(20));
    let took = started.elapsed();
    stop.store(true, std::sync::atomic::Ordering::SeqCst);
    let mut serials = Vec::new();
    for w in workers {
        serials.extend(w.await.expect("worker"));
    }
    assert!(
        status.is_some_and(|s| s.success()),
        "exit status {status:?}:\n{}",
        server.log_text()
    );
    assert!(took < Duration::from_secs(12), "took {took:?} to stop");
    assert!(
        serials.len() >= 8,
        "too few enrollments before the signal: {}",
        serials.len()
    );
    // Every certificate a client received has its row.
    let db = sqlx::SqlitePool::connect(&format!(
        "sqlite://{}",
        tmp.path().join("data/attestca.db").display()
    ))
    .await
    .expect("db");
    for serial in &serials {
        let found: Option<String> =
            sqlx::query_scalar("SELECT serial FROM certificates WHERE serial = $1")
                .bind(serial)
                .fetch_optional(&db)
                .await
                .expect("query");
        assert!(
            found.is_some(),
            "certificate {serial} was returned without its row"
        );
    }
    db.close().await;
    assert!(
        server.log_text().contains("shutting down"),
        "{}",
        server.log_text()
    );
}

/// The serial (openssl's upper-case hex) of the certificate the EST listener serves.
fn served_serial(server: &ServerProcess) -> String {
    let out = std::process::Command::new("sh")
        .arg("-c")
        .arg(format!(
            "openssl s_client -connect {} </dev/null 2>/dev/null | openssl x509 -noout -serial",
            server.est
        ))
        .output()
        .expect("openssl");
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

#[tokio::test(flavor = "multi_thread")]
async fn sighup_reloads_the_tls_certificate() {
    let tmp = tempfile::tempdir().expect("temp dir");
    let server = dev_server(tmp.path(), &[]).await;
    let pki = tmp.path().join("data/pki");
    let before = served_serial(&server);
    assert!(before.starts_with("serial="), "{before}");
    let chain = attestca::pem::read_certificate_ders(&pki.join("ca-chain.pem")).expect("chain");
    let root = tmp.path().join("root.pem");
    write_pem(&root, chain.last().expect("root"));
    let (new_key, new_csr, new_crt) = (
        tmp.path().join("new.key"),
        tmp.path().join("new.csr"),
        tmp.path().join("new.crt"),
    );
    let p = |path: &Path| path.display().to_string();
    let (ok, out) = run(
        "openssl",
        &[
            "req",
            "-new",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
            "-nodes",
            "-keyout",
            &p(&new_key),
            "-subj",
            "/CN=localhost",
            "-addext",
            "subjectAltName=IP:127.0.0.1,DNS:localhost",
            "-out",
            &p(&new_csr),
        ],
        &[],
    );
    assert!(ok, "{out}");
    let (ok, out) = run(
        "openssl",
        &[
            "x509",
            "-req",
            "-in",
            &p(&new_csr),
            "-CA",
            &p(&root),
            "-CAkey",
            &p(&pki.join("root-ca.key")),
            "-days",
            "2",
            "-copy_extensions",
            "copy",
            "-out",
            &p(&new_crt),
        ],
        &[],
    );
    assert!(ok, "{out}");
    // A broken certificate file: the current one stays in service.
    std::fs::write(pki.join("tls-server.crt"), "not a certificate").expect("write");
    server.signal("HUP");
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(
        served_serial(&server),
        before,
        "a broken file replaced the certificate"
    );
    assert!(
        server.log_text().contains("not reloaded"),
        "{}",
        server.log_text()
    );
    // The renewed certificate is served after SIGHUP, without a restart.
    std::fs::copy(&new_crt, pki.join("tls-server.crt")).expect("copy");
    std::fs::copy(&new_key, pki.join("tls-server.key")).expect("copy");
    server.signal("HUP");
    let (ok, want) = run(
        "openssl",
        &["x509", "-in", &p(&new_crt), "-noout", "-serial"],
        &[],
    );
    assert!(ok, "{want}");
    let deadline = Instant::now() + Duration::from_secs(5);
    while served_serial(&server) != want.trim() {
        assert!(
            Instant::now() < deadline,
            "the renewed certificate is not served"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}
