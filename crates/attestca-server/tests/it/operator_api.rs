//! The operator API against real servers over real TLS: who may use it (operator certificate
//! or bearer token; rigs, devices and anonymous clients refused), certificate look-ups and
//! listings, event listings with filters and pagination, revocation by serial and by device
//! with audit events naming the operator, and JSON errors with stable codes. The same
//! revocation through `attestca revoke` is audited as `cli:<user>`; every revocation reaches
//! the CRL within seconds.

use attestca_testkit as common;

use std::time::{Duration, Instant};

use common::*;
use serde_json::Value;

/// `GET`/`POST` with a client; returns status, the JSON body and the response headers.
async fn call(
    client: &reqwest::Client,
    method: reqwest::Method,
    url: &str,
    token: Option<&str>,
    json: Option<Value>,
) -> (u16, Value, reqwest::header::HeaderMap) {
    let mut request = client.request(method, url);
    if let Some(token) = token {
        request = request.bearer_auth(token);
    }
    if let Some(json) = json {
        request = request
            .header("content-type", "application/json")
            .body(json.to_string());
    }
    let response = request.send().await.expect("request");
    let status = response.status().as_u16();
    let headers = response.headers().clone();
    let content_type = headers
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    let text = response.text().await.expect("body");
    assert!(
        content_type.starts_with("application/json"),
        "{url}: {status} with content type {content_type:?}: {text}"
    );
    let body = serde_json::from_str(&text).unwrap_or_else(|e| panic!("{url}: {e}: {text}"));
    (status, body, headers)
}

fn error_code(body: &Value) -> &str {
    body["error"]["code"].as_str().unwrap_or("<no code>")
}

/// Waits until the served CRL lists `serial`.
async fn until_in_crl(server: &ServerProcess, serial: &str) {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let listed = served_crl(server).await.1.iter().any(|s| s == serial);
        if listed {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{serial} not in the CRL within 5 s"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn operator_api_on_the_dev_server() {
    use reqwest::Method;
    let tmp = tempfile::tempdir().expect("temp dir");
    let data = tmp.path().join("data");
    let mut server = ServerProcess::dev(&data, &tmp.path().join("server.log"));
    server.wait_ready().await;
    let pki = data.join("pki");
    let chain = pki.join("ca-chain.pem");
    let api = |path: &str| format!("{}/api/v1{path}", server.est_url());

    // Interface contract: serve --dev writes an operator certificate and key (key 0600).
    use std::os::unix::fs::PermissionsExt;
    let key_mode = std::fs::metadata(pki.join("operator.key"))
        .expect("operator.key")
        .permissions()
        .mode();
    assert_eq!(key_mode & 0o777, 0o600, "operator.key must be private");
    let operator = client_as(&chain, &pki, "operator");
    let rig = client_as(&chain, &pki, "rig");
    let anonymous = https_client(&chain, None);

    // Two attested devices, and a second certificate for the first one's device.
    let d1 = rig_enroll(&server, &data, &tmp.path().join("d1"), "device-1");
    let d2 = rig_enroll(&server, &data, &tmp.path().join("d2"), "device-2");
    let device = client_as(&chain, &tmp.path().join("d1"), "device");

    // Authorization: anonymous 401 (with a Bearer challenge), rig and device 403, operator 200.
    let url = api(&format!("/certificates/{d1}"));
    let (status, body, headers) = call(&anonymous, Method::GET, &url, None, None).await;
    assert_eq!((status, error_code(&body)), (401, "auth.required"));
    assert!(
        headers
            .get("www-authenticate")
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.starts_with("Bearer")),
        "401 without a Bearer challenge: {headers:?}"
    );
    let (status, body, _) = call(&anonymous, Method::GET, &url, Some("not-a-token"), None).await;
    assert_eq!((status, error_code(&body)), (401, "auth.invalid_token"));
    let (status, body, _) = call(&rig, Method::GET, &url, None, None).await;
    assert_eq!(
        (status, error_code(&body)),
        (403, "auth.forbidden"),
        "{body}"
    );
    let (status, body, _) = call(&device, Method::GET, &url, None, None).await;
    assert_eq!(
        (status, error_code(&body)),
        (403, "auth.forbidden"),
        "{body}"
    );
    let revoke_url = api(&format!("/certificates/{d1}/revoke"));
    let (status, _, _) = call(&rig, Method::POST, &revoke_url, None, None).await;
    assert_eq!(status, 403, "a rig must not revoke");

    // A certificate by serial: status, device identity, validity, predecessor/successors.
    let (status, cert, _) = call(&operator, Method::GET, &url, None, None).await;
    assert_eq!(status, 200, "{cert}");
    assert_eq!(cert["serial"], d1.as_str());
    assert_eq!(cert["status"], "active");
    assert_eq!(cert["profile"], "default");
    assert_eq!(cert["requester"], "tls:rig-dev-01");
    let identity = cert["device_identity"]
        .as_str()
        .expect("an attested certificate names its device")
        .to_owned();
    assert!(cert["not_after"].as_str().unwrap_or("").ends_with('Z'));
    assert!(cert["predecessor_serial"].is_null());
    assert_eq!(cert["successor_serials"], serde_json::json!([]));
    assert!(
        cert["certificate_pem"]
            .as_str()
            .unwrap_or("")
            .starts_with("-----BEGIN CERTIFICATE-----")
    );
    // Colons and upper case are accepted.
    let colon_serial = d1
        .to_uppercase()
        .as_bytes()
        .chunks(2)
        .map(|c| String::from_utf8_lossy(c).into_owned())
        .collect::<Vec<_>>()
        .join(":");
    let (status, same, _) = call(
        &operator,
        Method::GET,
        &api(&format!("/certificates/{colon_serial}")),
        None,
        None,
    )
    .await;
    assert_eq!((status, &same["serial"]), (200, &cert["serial"]));

    // Errors are JSON with stable codes.
    for (path, method, want_status, want_code) in [
        (
            "/certificates/00ff",
            Method::GET,
            404,
            "certificate.not_found",
        ),
        ("/certificates/not-hex", Method::GET, 400, "request.invalid"),
        ("/certificates?limit=0", Method::GET, 400, "request.invalid"),
        (
            "/certificates?status=gone",
            Method::GET,
            400,
            "request.invalid",
        ),
        (
            "/certificates?colour=red",
            Method::GET,
            400,
            "request.invalid",
        ),
        (
            "/events?since=yesterday",
            Method::GET,
            400,
            "request.invalid",
        ),
        ("/events?cursor=abc", Method::GET, 400, "request.invalid"),
        ("/nothing-here", Method::GET, 404, "route.not_found"),
        (
            "/certificates",
            Method::DELETE,
            405,
            "route.method_not_allowed",
        ),
    ] {
        let (status, body, _) = call(&operator, method, &api(path), None, None).await;
        assert_eq!(
            (status, error_code(&body)),
            (want_status, want_code),
            "{path}: {body}"
        );
    }

    // Certificates by device identity.
    let by_device = api(&format!(
        "/certificates?device_identity={}",
        urlencode(&identity)
    ));
    let (status, page, _) = call(&operator, Method::GET, &by_device, None, None).await;
    assert_eq!(status, 200, "{page}");
    let serials: Vec<&str> = page["items"]
        .as_array()
        .expect("items")
        .iter()
        .filter_map(|c| c["serial"].as_str())
        .collect();
    assert_eq!(serials, vec![d1.as_str()], "only device-1's certificate");

    // Events: filters and pagination (newest first, cursor to the next page).
    let (status, page1, _) = call(
        &operator,
        Method::GET,
        &api("/events?outcome=issued&operation=simpleenroll&limit=1"),
        None,
        None,
    )
    .await;
    assert_eq!(status, 200, "{page1}");
    assert_eq!(page1["items"].as_array().map(Vec::len), Some(1));
    assert_eq!(page1["items"][0]["serial"], d2.as_str(), "newest first");
    let cursor = page1["next_cursor"].as_str().expect("a next cursor");
    let (_, page2, _) = call(
        &operator,
        Method::GET,
        &api(&format!(
            "/events?outcome=issued&operation=simpleenroll&limit=1&cursor={cursor}"
        )),
        None,
        None,
    )
    .await;
    assert_eq!(page2["items"][0]["serial"], d1.as_str());
    assert!(page2["items"][0]["id"].as_i64() < page1["items"][0]["id"].as_i64());
    let (_, by_serial, _) = call(
        &operator,
        Method::GET,
        &api(&format!("/events?serial={d1}")),
        None,
        None,
    )
    .await;
    assert!(
        by_serial["items"]
            .as_array()
            .expect("items")
            .iter()
            .all(|e| e["serial"] == d1.as_str()),
        "{by_serial}"
    );
    let (_, future, _) = call(
        &operator,
        Method::GET,
        &api("/events?since=2100-01-01T00:00:00Z"),
        None,
        None,
    )
    .await;
    assert_eq!(future["items"], serde_json::json!([]));

    // Revoke by serial with a reason; again is a conflict; the CRL lists it within 5 s.
    let (status, body, _) = call(
        &operator,
        Method::POST,
        &api(&format!("/certificates/{d2}/revoke")),
        None,
        Some(serde_json::json!({"reason": "keyCompromise"})),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["status"], "revoked");
    assert_eq!(body["revocation_reason"], "keyCompromise");
    until_in_crl(&server, &d2).await;
    // ... and OCSP answers revoked within 5 s (interface contract 3).
    let ocsp = OpensslOcsp::new(&chain, tmp.path(), format!("http://{}/ocsp", server.http));
    ocsp.until_status(&tmp.path().join("d2/device.crt"), "revoked")
        .await;
    let (status, body, _) = call(
        &operator,
        Method::POST,
        &api(&format!("/certificates/{d2}/revoke")),
        None,
        None,
    )
    .await;
    assert_eq!(
        (status, error_code(&body)),
        (409, "certificate.already_revoked")
    );
    let (status, body, _) = call(
        &operator,
        Method::POST,
        &api(&format!("/certificates/{d1}/revoke")),
        None,
        Some(serde_json::json!({"reason": "removeFromCRL"})),
    )
    .await;
    assert_eq!((status, error_code(&body)), (400, "request.invalid"));
    let response = operator
        .post(api(&format!("/certificates/{d1}/revoke")))
        .header("content-type", "text/plain")
        .body("keyCompromise")
        .send()
        .await
        .expect("post");
    assert_eq!(response.status(), 415);

    // Revoke everything of a device.
    let device_url = api(&format!("/devices/{}/revoke", urlencode(&identity)));
    let (status, body, _) = call(
        &operator,
        Method::POST,
        &device_url,
        None,
        Some(serde_json::json!({"reason": "cessationOfOperation"})),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["revoked_serials"], serde_json::json!([d1]));
    until_in_crl(&server, &d1).await;
    let (status, body, _) = call(&operator, Method::POST, &device_url, None, None).await;
    assert_eq!(
        (status, error_code(&body)),
        (404, "device.no_active_certificates")
    );
    // A revoked device certificate no longer renews (the RA checks the store).
    let (_, cert, _) = call(&operator, Method::GET, &url, None, None).await;
    assert_eq!(cert["status"], "revoked");
    assert_eq!(cert["revocation_reason"], "cessationOfOperation");

    // `attestca revoke` goes through the same code, audited as cli:<user>.
    let d3 = rig_enroll(&server, &data, &tmp.path().join("d3"), "device-3");
    let (ok, out) = run(
        env!("CARGO_BIN_EXE_attestca"),
        &[
            "revoke",
            "--dev",
            "--data-dir",
            &data.display().to_string(),
            "--serial",
            &d3,
            "--reason",
            "keyCompromise",
        ],
        &[("USER", "alice".into())],
    );
    assert!(ok, "attestca revoke: {out}");
    until_in_crl(&server, &d3).await;
    let (ok, out) = run(
        env!("CARGO_BIN_EXE_attestca"),
        &[
            "revoke",
            "--dev",
            "--data-dir",
            &data.display().to_string(),
            "--serial",
            &d3,
        ],
        &[("USER", "alice".into())],
    );
    assert!(!ok, "revoking twice must fail: {out}");
    assert!(out.contains("already revoked"), "{out}");

    // The audit trail names each operator and outcome, newest first.
    let (status, audit, _) = call(&operator, Method::GET, &api("/audit-events"), None, None).await;
    assert_eq!(status, 200, "{audit}");
    let rows: Vec<(String, String, String, String)> = audit["items"]
        .as_array()
        .expect("items")
        .iter()
        .map(|e| {
            let field = |k: &str| e[k].as_str().unwrap_or_default().to_owned();
            (
                field("operator"),
                field("action"),
                field("target"),
                field("outcome"),
            )
        })
        .collect();
    let op = "cert:operator-dev-01".to_owned();
    let expected = vec![
        (
            "cli:alice".into(),
            "certificate.revoke".into(),
            d3.clone(),
            "refused".into(),
        ),
        (
            "cli:alice".into(),
            "certificate.revoke".into(),
            d3.clone(),
            "done".into(),
        ),
        (
            op.clone(),
            "device.revoke".into(),
            identity.clone(),
            "refused".into(),
        ),
        (
            op.clone(),
            "device.revoke".into(),
            identity.clone(),
            "done".into(),
        ),
        (
            op.clone(),
            "certificate.revoke".into(),
            d2.clone(),
            "refused".into(),
        ),
        (
            op.clone(),
            "certificate.revoke".into(),
            d2.clone(),
            "done".into(),
        ),
    ];
    assert_eq!(rows, expected, "audit trail: {audit}");
    assert_eq!(audit["items"][3]["detail"], d1.as_str());
    assert!(
        audit["items"][5]["peer"]
            .as_str()
            .is_some_and(|p| p.starts_with("127.0.0.1:"))
    );
    let (_, only_cli, _) = call(
        &operator,
        Method::GET,
        &api("/audit-events?operator=cli:alice&limit=1"),
        None,
        None,
    )
    .await;
    assert_eq!(only_cli["items"].as_array().map(Vec::len), Some(1));
    assert!(only_cli["next_cursor"].is_string());
}

/// Bearer tokens on PostgreSQL: a token from the environment works and is named in audit
/// events; a wrong token is refused; a rig certificate is refused even with the right token.
#[tokio::test(flavor = "multi_thread")]
#[cfg_attr(
    missing_postgres,
    ignore = "needs PostgreSQL (ATTESTCA_TEST_DATABASE_URL); tests/run.sh provides it"
)]
async fn bearer_token_on_postgres() {
    use reqwest::Method;
    let admin_url = require("PostgreSQL", "ATTESTCA_TEST_DATABASE_URL");
    let db = TestDatabase::create(&admin_url).await;
    let tmp = tempfile::tempdir().expect("temp dir");
    let token = "0123456789abcdef-automation-token";
    let envs = [("ATTESTCA_OPERATOR_TOKEN_AUTOMATION", token.to_owned())];
    let ca = ConfiguredCa::start(
        tmp.path(),
        &format!(
            "[database]\nurl = \"{}\"\n[[operators.tokens]]\nname = \"automation\"\n\
             [profiles.default]\n",
            db.url
        ),
        &envs,
    )
    .await;
    let (status, body) = ca.post("/simpleenroll", &csr("token-device")).await;
    assert_eq!(status, 200, "{body}");
    let serial = serial_of(&certificate_from_response(body.as_bytes()));
    let pki = ca.dir.join("pki");
    let client = https_client(&pki.join("ca-chain.pem"), None);
    let api = |path: &str| format!("{}/api/v1{path}", ca.server.est_url());

    let url = api(&format!("/certificates/{serial}"));
    let (status, body, _) = call(&client, Method::GET, &url, Some("wrong-token"), None).await;
    assert_eq!((status, error_code(&body)), (401, "auth.invalid_token"));
    let (status, body, _) = call(&ca.rig, Method::GET, &url, Some(token), None).await;
    assert_eq!((status, error_code(&body)), (403, "auth.forbidden"));
    let (status, body, _) = call(&client, Method::GET, &url, Some(token), None).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["requester"], "tls:rig-a");

    let (status, body, _) = call(
        &client,
        Method::POST,
        &api(&format!("/certificates/{serial}/revoke")),
        Some(token),
        Some(serde_json::json!({"reason": "superseded"})),
    )
    .await;
    assert_eq!(
        (status, &body["status"]),
        (200, &serde_json::json!("revoked"))
    );

    // The audit event is in PostgreSQL, written with the revocation.
    let pool = db.pool().await;
    let (operator, action, outcome, reason): (String, String, String, String) = sqlx::query_as(
        "SELECT operator, action, outcome, reason FROM audit_events WHERE target = $1",
    )
    .bind(&serial)
    .fetch_one(&pool)
    .await
    .expect("audit row");
    assert_eq!(
        (
            operator.as_str(),
            action.as_str(),
            outcome.as_str(),
            reason.as_str()
        ),
        (
            "token:automation",
            "certificate.revoke",
            "done",
            "superseded"
        )
    );
    let status: String = sqlx::query_scalar("SELECT status FROM certificates WHERE serial = $1")
        .bind(&serial)
        .fetch_one(&pool)
        .await
        .expect("certificate row");
    assert_eq!(status, "revoked");
    pool.close().await;
    drop(ca);
    db.drop_database().await;
}
