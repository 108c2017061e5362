//! `openapi/attestca.yaml` against the server: the routes the code declares
//! (`.route("PATH", get(…).post(…))` in the EST, operator API and plain-HTTP routers) and the
//! spec's paths and methods are the same set; the spec is valid OpenAPI
//! (`openapi-spec-validator`); and on a real `serve --dev` over real TLS, every spec path and
//! method, sent to the listener its `servers` names with concrete parameter values, is really
//! served (not the EST fallback 404, the API's `route.not_found`, the plain listener's empty
//! 404, or a 405), answers a status the spec documents, with a documented Content-Type.

use attestca_testkit as common;

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use common::*;
use serde_json::Value;

const SPEC: &str = "openapi/attestca.yaml";
/// The router sources; the operator API's routes are nested under its `.nest("PREFIX", …)`.
const ROUTERS: &[&str] = &[
    "crates/attestca-server/src/est/mod.rs",
    "crates/attestca-server/src/api/mod.rs",
    "crates/attestca-server/src/server/plain.rs",
];
const HTTP_METHODS: &[&str] = &[
    "get", "put", "post", "delete", "options", "head", "patch", "trace",
];

fn repo_file(relative: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../..")
        .join(relative)
}

fn read(relative: &str) -> String {
    std::fs::read_to_string(repo_file(relative)).unwrap_or_else(|e| panic!("read {relative}: {e}"))
}

// ---------------------------------------------------------------- routes in the code

/// The text between the `(` at `open` and its matching `)`, skipping string literals.
fn call_arguments(text: &str, open: usize) -> &str {
    let bytes = text.as_bytes();
    assert_eq!(bytes[open], b'(');
    let (mut depth, mut i, mut in_string) = (0usize, open, false);
    while i < bytes.len() {
        match (in_string, bytes[i]) {
            (true, b'\\') => i += 1,
            (true, b'"') => in_string = false,
            (true, _) => {}
            (false, b'"') => in_string = true,
            (false, b'(') => depth += 1,
            (false, b')') => {
                depth -= 1;
                if depth == 0 {
                    return &text[open + 1..i];
                }
            }
            _ => {}
        }
        i += 1;
    }
    panic!("unbalanced parentheses after offset {open}");
}

/// `METHOD PATH` for every `.route("PATH", <method router>)` in `source`, under the prefix of
/// its `.nest("PREFIX", …)` if it has one; axum's `{*name}` wildcard becomes `{name}`.
fn declared_routes(source: &str) -> BTreeSet<String> {
    // Comments may mention routes; only code counts.
    let code: String = source
        .lines()
        .filter(|l| !l.trim_start().starts_with("//"))
        .map(|l| format!("{l}\n"))
        .collect();
    let literal = regex::Regex::new(r#"^\s*"([^"]+)"\s*,"#).unwrap();
    let nest = regex::Regex::new(r#"\.nest\(\s*"([^"]+)""#).unwrap();
    let method = regex::Regex::new(
        r"(?:^|[^A-Za-z0-9_:])(get|put|post|delete|options|head|patch|trace)\s*\(",
    )
    .unwrap();
    let prefixes: Vec<&str> = nest
        .captures_iter(&code)
        .map(|c| c.get(1).unwrap().as_str())
        .collect();
    assert!(
        prefixes.len() <= 1,
        "more than one .nest() in one router file: {prefixes:?} (teach this test which routes each covers)"
    );
    let prefix = prefixes.first().copied().unwrap_or("");
    let mut routes = BTreeSet::new();
    for (at, _) in code.match_indices(".route(") {
        let arguments = call_arguments(&code, at + ".route".len());
        let path = literal
            .captures(arguments)
            .unwrap_or_else(|| panic!("a .route( without a path literal: {arguments}"))
            .get(1)
            .unwrap()
            .as_str();
        let path = format!("{prefix}{}", path.replace("{*", "{"));
        let handlers = &arguments[arguments.find(',').unwrap() + 1..];
        let methods: Vec<&str> = method
            .captures_iter(handlers)
            .map(|c| c.get(1).unwrap().as_str())
            .collect();
        assert!(
            !methods.is_empty(),
            "no method router in .route({path:?}, {handlers})"
        );
        for m in methods {
            routes.insert(format!("{} {path}", m.to_ascii_uppercase()));
        }
    }
    routes
}

#[test]
fn route_parser_reads_what_axum_reads() {
    let source = r#"
        // .route("/commented-out", get(nothing))
        let v1 = Router::new()
            .route("/a", get(a))
            .route(
                "/b/{id}",
                get(|| async { (StatusCode::OK, "ok(\n") }).post(b),
            )
            .route("/files/{*rest}", get(rest).with_state(Arc::clone(&state)));
        Router::new().nest("/v9", v1)
    "#;
    let want: BTreeSet<String> = [
        "GET /v9/a",
        "GET /v9/b/{id}",
        "POST /v9/b/{id}",
        "GET /v9/files/{rest}",
    ]
    .into_iter()
    .map(String::from)
    .collect();
    assert_eq!(declared_routes(source), want);
}

/// The `.rs` files under `dir` (relative to the repository), recursively.
fn rust_files(dir: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut pending = vec![repo_file(dir)];
    while let Some(d) = pending.pop() {
        for entry in std::fs::read_dir(&d).unwrap_or_else(|e| panic!("{}: {e}", d.display())) {
            let path = entry.expect("directory entry").path();
            if path.is_dir() {
                pending.push(path);
            } else if path.extension().is_some_and(|e| e == "rs") {
                let relative = path
                    .strip_prefix(repo_file(""))
                    .expect("under the repository");
                out.push(relative.display().to_string());
            }
        }
    }
    out
}

/// Every route the three routers declare. A router elsewhere in a crate's src/ would escape this test,
/// so there is none: any other file declaring a route or nesting a router fails it.
fn code_routes() -> BTreeSet<String> {
    for file in rust_files("crates") {
        if ROUTERS.contains(&file.as_str()) || !file.contains("/src/") {
            continue;
        }
        let code: String = read(&file)
            .lines()
            .filter(|l| !l.trim_start().starts_with("//"))
            .collect();
        for marker in [".route(", ".nest(", ".route_service(", ".nest_service("] {
            assert!(
                !code.contains(marker),
                "{file} declares routes ({marker}): add it to ROUTERS in this test"
            );
        }
    }
    let mut all = BTreeSet::new();
    for file in ROUTERS {
        let routes = declared_routes(&read(file));
        assert!(!routes.is_empty(), "no .route( found in {file}");
        all.extend(routes);
    }
    all
}

// ---------------------------------------------------------------- the spec

fn spec() -> Value {
    serde_yaml_ng::from_str(&read(SPEC)).unwrap_or_else(|e| panic!("{SPEC} is not YAML: {e}"))
}

/// Follows `$ref: '#/…'` (repeatedly) within the spec.
fn resolve<'a>(spec: &'a Value, value: &'a Value) -> &'a Value {
    let mut value = value;
    while let Some(reference) = value.get("$ref").and_then(Value::as_str) {
        let pointer = reference
            .strip_prefix('#')
            .unwrap_or_else(|| panic!("external $ref {reference}"));
        value = spec
            .pointer(pointer)
            .unwrap_or_else(|| panic!("dangling $ref {reference}"));
    }
    value
}

/// One operation of the spec.
struct Operation<'a> {
    method: String,
    path: String,
    /// The one server URL this operation is served on.
    server: String,
    responses: &'a serde_json::Map<String, Value>,
}

fn operations(spec: &Value) -> Vec<Operation<'_>> {
    let single_server = |servers: Option<&Value>| -> Option<String> {
        let servers = servers?.as_array()?;
        match servers.as_slice() {
            [one] => one["url"].as_str().map(str::to_owned),
            _ => None,
        }
    };
    let mut out = Vec::new();
    let paths = spec["paths"].as_object().expect("paths");
    for (path, item) in paths {
        let item = resolve(spec, item);
        for (key, operation) in item.as_object().expect("path item") {
            if !HTTP_METHODS.contains(&key.as_str()) {
                continue;
            }
            let server = single_server(operation.get("servers"))
                .or_else(|| single_server(item.get("servers")))
                .or_else(|| single_server(spec.get("servers")))
                .unwrap_or_else(|| {
                    panic!(
                        "{} {path}: no single server (set the path's `servers` to the listener that serves it)",
                        key.to_ascii_uppercase()
                    )
                });
            out.push(Operation {
                method: key.to_ascii_uppercase(),
                path: path.clone(),
                server,
                responses: operation["responses"]
                    .as_object()
                    .unwrap_or_else(|| panic!("{key} {path}: no responses")),
            });
        }
    }
    out
}

#[test]
fn spec_paths_are_exactly_the_declared_routes() {
    let spec = spec();
    let in_spec: BTreeSet<String> = operations(&spec)
        .iter()
        .map(|o| format!("{} {}", o.method, o.path))
        .collect();
    let in_code = code_routes();
    // The parser found the routers' routes, not a subset of them.
    for known in [
        "GET /healthz",
        "GET /ocsp/{request}",
        "POST /.well-known/est/{label}/simpleenroll",
        "POST /api/v1/certificates/{serial}/revoke",
    ] {
        assert!(in_code.contains(known), "{known} not found in {ROUTERS:?}");
    }
    let undocumented: Vec<_> = in_code.difference(&in_spec).collect();
    let not_served: Vec<_> = in_spec.difference(&in_code).collect();
    assert!(
        undocumented.is_empty() && not_served.is_empty(),
        "{SPEC} and the routers differ:\n  served but not in the spec: {undocumented:#?}\n  in the spec but not served: {not_served:#?}"
    );
}

/// The `enum` of a schema property, or of a query parameter of `GET path`.
fn spec_enum(spec: &Value, pointer: &str) -> Vec<String> {
    let node = spec
        .pointer(pointer)
        .unwrap_or_else(|| panic!("{SPEC} has no {pointer}"));
    node["enum"]
        .as_array()
        .unwrap_or_else(|| panic!("{SPEC} {pointer} has no enum"))
        .iter()
        .map(|v| v.as_str().expect("string enum").to_owned())
        .collect()
}

fn query_parameter_enum(spec: &Value, path: &str, name: &str) -> Vec<String> {
    let escaped = path.replace('~', "~0").replace('/', "~1");
    let parameters = spec
        .pointer(&format!("/paths/{escaped}/get/parameters"))
        .and_then(Value::as_array)
        .unwrap_or_else(|| panic!("{SPEC}: GET {path} has no parameters"));
    let parameter = parameters
        .iter()
        .find(|p| p["name"] == name)
        .unwrap_or_else(|| panic!("{SPEC}: GET {path} has no parameter {name}"));
    spec_enum(parameter, "/schema")
}

fn words<T: Copy + ToString>(all: &[T]) -> Vec<String> {
    all.iter().map(ToString::to_string).collect()
}

/// The statuses and outcomes the spec lists are the CA's vocabulary
/// (`attestca_core::record`), in both the answers and the filters.
#[test]
fn spec_vocabulary_is_the_record_vocabulary() {
    use attestca_core::record::{AuditOutcome, CertStatus, EventOutcome};
    let spec = spec();
    let statuses = words(CertStatus::ALL);
    let outcomes = words(EventOutcome::ALL);
    let in_spec = [
        (
            "Certificate.status",
            spec_enum(&spec, "/components/schemas/Certificate/properties/status"),
            &statuses,
        ),
        (
            "GET /api/v1/certificates?status",
            query_parameter_enum(&spec, "/api/v1/certificates", "status"),
            &statuses,
        ),
        (
            "Event.outcome",
            spec_enum(&spec, "/components/schemas/Event/properties/outcome"),
            &outcomes,
        ),
        (
            "GET /api/v1/events?outcome",
            query_parameter_enum(&spec, "/api/v1/events", "outcome"),
            &outcomes,
        ),
        (
            "AuditEvent.outcome",
            spec_enum(&spec, "/components/schemas/AuditEvent/properties/outcome"),
            &words(AuditOutcome::ALL),
        ),
    ];
    for (place, documented, vocabulary) in &in_spec {
        assert_eq!(documented, *vocabulary, "{SPEC} {place}");
    }
}

// ---------------------------------------------------------------- openapi-spec-validator

#[test]
#[cfg_attr(
    missing_openapi_validator,
    ignore = "needs openapi-spec-validator (ATTESTCA_TEST_OPENAPI_SPEC_VALIDATOR); tests/run.sh provides it"
)]
fn spec_is_valid_openapi() {
    let validator = require(
        "openapi-spec-validator",
        "ATTESTCA_TEST_OPENAPI_SPEC_VALIDATOR",
    );
    let (ok, out) = run(&validator, &[&repo_file(SPEC).display().to_string()], &[]);
    assert!(ok, "openapi-spec-validator {SPEC}:\n{out}");
    // The validator really validates: a response without its required description fails.
    let tmp = tempfile::tempdir().expect("temp dir");
    let broken = tmp.path().join("broken.yaml");
    let text = read(SPEC).replacen("          description: The process is running.\n", "", 1);
    assert_ne!(
        text,
        read(SPEC),
        "the spec changed: pick another line to break"
    );
    std::fs::write(&broken, text).expect("write broken spec");
    let (ok, out) = run(&validator, &[&broken.display().to_string()], &[]);
    assert!(!ok, "openapi-spec-validator accepted a broken spec:\n{out}");
}

// ---------------------------------------------------------------- every route is served

/// Does the served Content-Type match a documented media type (same type/subtype, and every
/// parameter the spec names present with the same value)?
fn media_type_matches(served: &str, documented: &str) -> bool {
    fn split(media: &str) -> (String, Vec<(String, String)>) {
        let mut parts = media.split(';');
        let essence = parts.next().unwrap_or_default().trim().to_ascii_lowercase();
        let params = parts
            .filter_map(|p| p.split_once('='))
            .map(|(k, v)| {
                (
                    k.trim().to_ascii_lowercase(),
                    v.trim().trim_matches('"').to_ascii_lowercase(),
                )
            })
            .collect();
        (essence, params)
    }
    let (served_essence, served_params) = split(served);
    let (essence, params) = split(documented);
    served_essence == essence && params.iter().all(|p| served_params.contains(p))
}

/// The outer status of a DER OCSPResponse (0 = successful).
fn ocsp_response_status(der: &[u8]) -> Option<u8> {
    if der.first() != Some(&0x30) {
        return None;
    }
    let length = *der.get(1)?;
    let at = if length & 0x80 == 0 {
        2
    } else {
        2 + usize::from(length & 0x7f)
    };
    match der.get(at..at + 3)? {
        [0x0a, 0x01, status] => Some(*status),
        _ => None,
    }
}

/// What a request answered.
struct Answer {
    status: u16,
    content_type: String,
    body: Vec<u8>,
}

impl Answer {
    fn text(&self) -> String {
        String::from_utf8_lossy(&self.body[..self.body.len().min(300)]).into_owned()
    }

    /// The answer of a router to a path or method it does not serve.
    fn is_no_such_route(&self) -> bool {
        let text = self.text();
        self.status == 405
            || (self.status == 404
                && (self.body.is_empty()
                    || text.contains("no such EST resource")
                    || text.contains("route.not_found")))
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn every_spec_route_is_served() {
    let spec = spec();
    let tmp = tempfile::tempdir().expect("temp dir");
    let data = tmp.path().join("data");
    let mut server = ServerProcess::dev(&data, &tmp.path().join("server.log"));
    server.wait_ready().await;
    let pki = data.join("pki");
    let chain = pki.join("ca-chain.pem");
    let operator = client_as(&chain, &pki, "operator");
    let rig = client_as(&chain, &pki, "rig");
    let plain = reqwest::Client::new();
    let anonymous = https_client(&chain, None);

    // Data for the parameters: two attested devices, one device identity, an OCSP request.
    let s1 = rig_enroll(&server, &data, &tmp.path().join("d1"), "routes-1");
    let s2 = rig_enroll(&server, &data, &tmp.path().join("d2"), "routes-2");
    let device = client_as(&chain, &tmp.path().join("d1"), "device");
    let detail: Value = serde_json::from_str(
        &operator
            .get(format!("{}/api/v1/certificates/{s2}", server.est_url()))
            .send()
            .await
            .expect("look up the second certificate")
            .text()
            .await
            .expect("body"),
    )
    .expect("certificate JSON");
    let device_identity = detail["device_identity"]
        .as_str()
        .unwrap_or_else(|| panic!("no device identity: {detail}"))
        .to_owned();
    let issuer = tmp.path().join("issuing-ca.pem");
    write_pem(
        &issuer,
        &attestca::pem::read_certificate_ders(&chain).expect("chain")[0],
    );
    let ocsp_request = tmp.path().join("ocsp-request.der");
    let (ok, out) = run(
        "openssl",
        &[
            "ocsp",
            "-issuer",
            &issuer.display().to_string(),
            "-cert",
            &tmp.path().join("d1/device.crt").display().to_string(),
            "-no_nonce",
            "-reqout",
            &ocsp_request.display().to_string(),
        ],
        &[],
    );
    assert!(ok, "openssl ocsp -reqout: {out}");
    let ocsp_der = std::fs::read(&ocsp_request).expect("OCSP request");
    // The log's routes answer for s1 once it is integrated (within a second).
    let integrated = std::time::Instant::now();
    while reqwest::get(format!("http://{}/log/issuing-ca/index/{s1}", server.http))
        .await
        .expect("log index")
        .status()
        != 200
    {
        assert!(
            integrated.elapsed() < std::time::Duration::from_secs(3),
            "{s1} never reached the log"
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    let ocsp_get = {
        use base64::Engine;
        urlencode(&base64::engine::general_purpose::STANDARD.encode(&ocsp_der))
    };
    let values: BTreeMap<&str, String> = [
        ("serial", s1.clone()),
        ("label", "lab".to_owned()),
        ("file", "issuing-ca.crl".to_owned()),
        ("request", ocsp_get),
        ("device_identity", urlencode(&device_identity)),
        ("name", "issuing-ca".to_owned()),
        ("path", "0/000.p/1".to_owned()),
    ]
    .into_iter()
    .collect();

    let mut failures = Vec::new();
    let mut table = Vec::new();
    let ops = operations(&spec);
    assert!(ops.len() >= 20, "only {} operations in {SPEC}", ops.len());
    for op in &ops {
        let mut path = op.path.clone();
        for (name, value) in &values {
            path = path.replace(&format!("{{{name}}}"), value);
        }
        assert!(!path.contains('{'), "no value for a parameter of {path}");
        let base = match op.server.as_str() {
            "https://127.0.0.1:8443" => server.est_url(),
            "http://127.0.0.1:8080" => format!("http://{}", server.http),
            other => panic!("{} {}: unknown server {other}", op.method, op.path),
        };
        let url = format!("{base}{path}");
        // Who asks, and with what body: the request each route was made for.
        let (client, content_type, body): (&reqwest::Client, Option<&str>, Vec<u8>) =
            match (op.method.as_str(), op.path.as_str()) {
                (_, p) if p.starts_with("/api/v1/devices/") => (
                    &operator,
                    Some("application/json"),
                    br#"{"reason":"cessationOfOperation"}"#.to_vec(),
                ),
                (_, p) if p.starts_with("/api/v1/") && p.ends_with("/revoke") => (
                    &operator,
                    Some("application/json"),
                    br#"{"reason":"keyCompromise"}"#.to_vec(),
                ),
                (_, p) if p.starts_with("/api/v1/") => (&operator, None, Vec::new()),
                ("POST", p) if p.ends_with("/simplereenroll") => (
                    &device,
                    Some("application/pkcs10"),
                    body(&csr("routes-1")).into_bytes(),
                ),
                ("POST", p) if p.ends_with("/simpleenroll") => (
                    &rig,
                    Some("application/pkcs10"),
                    body(&csr("routes-3")).into_bytes(),
                ),
                // Answered (400 ak.endorsement_malformed): a real exchange needs a TPM
                // (tests/it/tpm_swtpm.rs).
                ("POST", p) if p.starts_with("/attestation-key/") => (
                    &rig,
                    Some("application/json"),
                    br#"{"ek_certificate":"AA==","ak_public":"AA==","secret":"AA=="}"#.to_vec(),
                ),
                ("POST", p) if p.ends_with("/nonce") => (
                    &rig,
                    Some("application/est-attestation-freshness+json"),
                    br#"{"len":16}"#.to_vec(),
                ),
                (_, p) if p.starts_with("/.well-known/est/") => (&rig, None, Vec::new()),
                ("POST", "/ocsp") => (&plain, Some("application/ocsp-request"), ocsp_der.clone()),
                // Health, metrics, CRL: anonymous (a TLS client where the spec says HTTPS).
                _ if base.starts_with("https:") => (&anonymous, None, Vec::new()),
                _ => (&plain, None, Vec::new()),
            };
        let method = reqwest::Method::from_bytes(op.method.as_bytes()).expect("method");
        let mut request = client.request(method, &url);
        if let Some(content_type) = content_type {
            request = request.header("content-type", content_type).body(body);
        }
        let response = match request.send().await {
            Ok(r) => r,
            Err(e) => {
                failures.push(format!("{} {url}: {e}", op.method));
                continue;
            }
        };
        let answer = Answer {
            status: response.status().as_u16(),
            content_type: response
                .headers()
                .get("content-type")
                .and_then(|v| v.to_str().ok())
                .unwrap_or_default()
                .to_owned(),
            body: response.bytes().await.expect("body").to_vec(),
        };
        let name = format!("{} {}", op.method, op.path);
        table.push(format!(
            "{name} -> {} {} {:?}",
            answer.status,
            answer.content_type,
            answer.text().lines().next().unwrap_or_default()
        ));
        if answer.is_no_such_route() {
            failures.push(format!(
                "{name}: not served at {url}: {} {:?}",
                answer.status,
                answer.text()
            ));
            continue;
        }
        let Some(documented) = op.responses.get(&answer.status.to_string()) else {
            failures.push(format!(
                "{name}: status {} is not documented ({:?}): {:?}",
                answer.status,
                op.responses.keys().collect::<Vec<_>>(),
                answer.text()
            ));
            continue;
        };
        if let Some(content) = resolve(&spec, documented)
            .get("content")
            .and_then(Value::as_object)
            && !content
                .keys()
                .any(|m| media_type_matches(&answer.content_type, m))
        {
            failures.push(format!(
                "{name}: {} with Content-Type {:?}, documented: {:?}",
                answer.status,
                answer.content_type,
                content.keys().collect::<Vec<_>>()
            ));
        }
        // These requests were built to succeed; a refusal means a wrong parameter value.
        let expected_success = !op.path.ends_with("/simplereenroll")
            && op.path != "/.well-known/est/simpleenroll"
            && !op.path.starts_with("/attestation-key/");
        if expected_success && !(200..300).contains(&answer.status) {
            failures.push(format!(
                "{name}: {} {:?} (expected success for {url})",
                answer.status,
                answer.text()
            ));
        }
        if op.path.starts_with("/ocsp") && ocsp_response_status(&answer.body) != Some(0) {
            failures.push(format!(
                "{name}: not a successful OCSPResponse: {:02x?}",
                &answer.body[..answer.body.len().min(16)]
            ));
        }
    }
    eprintln!("{}", table.join("\n"));
    assert!(
        failures.is_empty(),
        "{} of {} operations failed:\n{}\n\nall answers:\n{}\n\nserver log tail:\n{}",
        failures.len(),
        ops.len(),
        failures.join("\n"),
        table.join("\n"),
        server
            .log_text()
            .lines()
            .rev()
            .take(30)
            .collect::<Vec<_>>()
            .into_iter()
            .rev()
            .collect::<Vec<_>>()
            .join("\n")
    );
}
