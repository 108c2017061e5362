//! HTTP as field clients speak it, against the real server over real sockets:
//! - a raw HTTP/1.1 client (rustls over a TCP socket on the EST listener, a bare TCP socket on
//!   the plain listener) reads the exact header-name bytes of every EST response — cacerts,
//!   csrattrs, simpleenroll and simplereenroll 200, 401 with `WWW-Authenticate`, 429 with
//!   `Retry-After`, 413, 415, 408 — and of the plain listener's: conventional spelling
//!   (`Content-Type`, `WWW-Authenticate`, `ETag`), never lower case (libest compares bytes);
//! - curl over HTTP/2 (ALPN h2 on the EST listener, prior knowledge on the plain one) and over
//!   HTTP/1.1 posting a 2 MB body reads the refusal (413 for EST and the operator API, an OCSP
//!   `malformedRequest` for `/ocsp`) instead of a stream error;
//! - a stalled body gets 408 `request.timeout` before the request deadline's 503, on EST (with
//!   the enrollment event saying `request.timeout`), the operator API and OCSP.

use attestca_testkit as common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use attestca_sim::device::DeviceKey;
use common::*;

/// Every response header name the listeners send, spelled as it must appear on the wire.
const SPELLINGS: &[&str] = &[
    "Content-Type",
    "Content-Length",
    "Content-Transfer-Encoding",
    "WWW-Authenticate",
    "Retry-After",
    "X-Request-Id",
    "Date",
    "Connection",
    "ETag",
    "Last-Modified",
    "Expires",
    "Cache-Control",
];

/// A response as read off the socket.
struct RawResponse {
    status: u16,
    /// Status line and header lines, CRLF-separated, without the blank line.
    head: String,
    body: Vec<u8>,
}

impl RawResponse {
    /// The header names, as sent.
    fn names(&self) -> Vec<&str> {
        self.head
            .split("\r\n")
            .skip(1)
            .filter_map(|line| line.split_once(':').map(|(name, _)| name))
            .collect()
    }

    /// Asserts that every header name is spelled as in [`SPELLINGS`], that `required` are
    /// present, and that none is in lower case.
    fn assert_spelled(&self, what: &str, status: u16, required: &[&str]) {
        assert_eq!(self.status, status, "{what}: {}", self.head);
        for name in self.names() {
            assert!(
                SPELLINGS.contains(&name),
                "{what}: header name {name:?} is not spelled conventionally:\n{}",
                self.head
            );
        }
        for name in required {
            assert!(
                self.head.contains(&format!("\r\n{name}: ")),
                "{what}: no {name:?} header:\n{}",
                self.head
            );
            let lower = name.to_ascii_lowercase();
            assert!(
                !self.head.contains(&format!("\r\n{lower}: ")),
                "{what}: {lower:?} in lower case:\n{}",
                self.head
            );
        }
    }

    fn body_text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

/// Reads one response: the head up to the blank line, then `Content-Length` bytes.
fn read_response(stream: &mut impl Read) -> RawResponse {
    let mut buffer = Vec::new();
    let mut chunk = [0u8; 8192];
    let head_end = loop {
        if let Some(at) = buffer.windows(4).position(|w| w == b"\r\n\r\n") {
            break at;
        }
        let n = stream.read(&mut chunk).expect("read the response head");
        assert!(
            n > 0,
            "connection closed before the head ended: {:?}",
            String::from_utf8_lossy(&buffer)
        );
        buffer.extend_from_slice(&chunk[..n]);
    };
    let head = String::from_utf8(buffer[..head_end].to_vec()).expect("an ASCII head");
    let status = head
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("no status in {head:?}"));
    // Found case-insensitively: reading the body must not depend on what is being tested.
    let length: usize = head
        .split("\r\n")
        .filter_map(|line| line.split_once(':'))
        .find(|(name, _)| name.eq_ignore_ascii_case("content-length"))
        .map(|(_, value)| value.trim().parse().expect("a Content-Length number"))
        .unwrap_or_else(|| panic!("no Content-Length (libest needs it): {head}"));
    let mut body = buffer[head_end + 4..].to_vec();
    while body.len() < length {
        let n = stream.read(&mut chunk).expect("read the response body");
        assert!(n > 0, "connection closed inside the body");
        body.extend_from_slice(&chunk[..n]);
    }
    body.truncate(length);
    RawResponse { status, head, body }
}

/// An HTTP/1.1 request with `Connection: close`; `Content-Length` is the body's unless given.
fn request(method: &str, path: &str, headers: &[(&str, String)], body: &[u8]) -> Vec<u8> {
    let mut head = format!("{method} {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n");
    for (name, value) in headers {
        head.push_str(&format!("{name}: {value}\r\n"));
    }
    if !headers
        .iter()
        .any(|(name, _)| name.eq_ignore_ascii_case("content-length"))
        && (method == "POST" || !body.is_empty())
    {
        head.push_str(&format!("Content-Length: {}\r\n", body.len()));
    }
    head.push_str("\r\n");
    let mut bytes = head.into_bytes();
    bytes.extend_from_slice(body);
    bytes
}

/// The dev server's EST listener, spoken to over rustls on a plain TCP socket.
struct EstSocket {
    est: std::net::SocketAddr,
    chain: PathBuf,
    pki: PathBuf,
}

/// The dev server with `envs`, ready, and its EST listener as a socket.
async fn dev_server(tmp: &Path, envs: &[(&str, String)]) -> (ServerProcess, EstSocket) {
    let data = tmp.join("data");
    let mut server = ServerProcess::dev_with(&data, &tmp.join("server.log"), envs);
    server.wait_ready().await;
    let pki = data.join("pki");
    let est = EstSocket {
        est: server.est,
        chain: pki.join("ca-chain.pem"),
        pki,
    };
    (server, est)
}

impl EstSocket {
    /// The dev install's `NAME.crt` and `NAME.key` (`rig`, `operator`).
    fn identity(&self, name: &str) -> (PathBuf, PathBuf) {
        (
            self.pki.join(format!("{name}.crt")),
            self.pki.join(format!("{name}.key")),
        )
    }

    /// A TLS connection (HTTP/1.1: no ALPN) presenting `identity` (certificate, key) if any.
    fn connect(
        &self,
        identity: Option<(&Path, &Path)>,
    ) -> rustls::StreamOwned<rustls::ClientConnection, TcpStream> {
        let config =
            attestca_rig::client::tls_config(&self.chain, identity).expect("TLS client config");
        let name = rustls::pki_types::ServerName::try_from("127.0.0.1").expect("server name");
        let connection = rustls::ClientConnection::new(Arc::new(config), name).expect("TLS client");
        let tcp = TcpStream::connect(self.est).expect("connect to the EST listener");
        tcp.set_read_timeout(Some(Duration::from_secs(30)))
            .expect("read timeout");
        rustls::StreamOwned::new(connection, tcp)
    }

    /// Sends `bytes` on a new connection and reads the response.
    fn exchange(&self, identity: Option<(&Path, &Path)>, bytes: &[u8]) -> RawResponse {
        let mut stream = self.connect(identity);
        stream.write_all(bytes).expect("send the request");
        stream.flush().expect("flush");
        read_response(&mut stream)
    }
}

/// A connection to the plain-HTTP listener.
fn plain_connect(http: std::net::SocketAddr) -> TcpStream {
    let stream = TcpStream::connect(http).expect("connect to the plain listener");
    stream
        .set_read_timeout(Some(Duration::from_secs(30)))
        .expect("read timeout");
    stream
}

/// Sends `bytes` to the plain-HTTP listener and reads the response.
fn plain_exchange(http: std::net::SocketAddr, bytes: &[u8]) -> RawResponse {
    let mut stream = plain_connect(http);
    stream.write_all(bytes).expect("send the request");
    read_response(&mut stream)
}

fn pkcs10(body: &[u8]) -> Vec<u8> {
    request(
        "POST",
        "/.well-known/est/lab/simpleenroll",
        &[("Content-Type", "application/pkcs10".into())],
        body,
    )
}

/// Sends the head and the first `sent` bytes of a body declared `declared` bytes long, then
/// nothing; returns the response and how long it took.
fn stall(
    stream: &mut (impl Read + Write),
    path: &str,
    content_type: &str,
    (declared, sent): (usize, usize),
) -> (RawResponse, Duration) {
    let bytes = request(
        "POST",
        path,
        &[
            ("Content-Type", content_type.into()),
            ("Content-Length", declared.to_string()),
        ],
        &vec![b'A'; sent],
    );
    let started = Instant::now();
    stream
        .write_all(&bytes)
        .expect("send the head and part of the body");
    stream.flush().expect("flush");
    let response = read_response(stream);
    (response, started.elapsed())
}

#[tokio::test(flavor = "multi_thread")]
async fn every_est_response_spells_header_names_conventionally() {
    let tmp = tempfile::tempdir().expect("temp dir");
    // A device may renew once a minute (so the second renewal is a 429 with Retry-After);
    // a 3 s request deadline (so the stalled body's 408 comes after 2 s).
    let (mut server, est) = dev_server(
        tmp.path(),
        &[
            ("ATTESTCA_LIMITS__DEVICE_REQUESTS_PER_MINUTE", "1".into()),
            ("ATTESTCA_LIMITS__DEVICE_BURST", "1".into()),
            ("ATTESTCA_SERVER__REQUEST_TIMEOUT_SECS", "3".into()),
        ],
    )
    .await;
    let (rig_crt, rig_key) = est.identity("rig");
    let rig = Some((rig_crt.as_path(), rig_key.as_path()));
    let base64_200 = [
        "Content-Type",
        "Content-Transfer-Encoding",
        "Content-Length",
    ];

    // cacerts and csrattrs, anonymous.
    for path in [
        "/.well-known/est/cacerts",
        "/.well-known/est/csrattrs",
        "/.well-known/est/lab/cacerts",
    ] {
        let response = est.exchange(None, &request("GET", path, &[], b""));
        response.assert_spelled(path, 200, &base64_200);
        attestca::est::codec::decode_body(&response.body).expect("a base64 body");
    }

    // simpleenroll 200 with the rig certificate.
    let key = DeviceKey::generate().expect("key");
    let response = est.exchange(
        rig,
        &pkcs10(body(&key.csr("wire-1").expect("csr")).as_bytes()),
    );
    response.assert_spelled("simpleenroll", 200, &base64_200);
    assert!(
        response
            .head
            .contains("\r\nContent-Type: application/pkcs7-mime; smime-type=certs-only\r\n"),
        "{}",
        response.head
    );
    let certificate = certificate_from_response(&response.body);

    // simplereenroll 200 over mutual TLS with the device certificate; the second renewal
    // within the minute is over the device's budget: 429 with Retry-After.
    let (device_crt, device_key) = (tmp.path().join("device.crt"), tmp.path().join("device.key"));
    write_pem(&device_crt, &certificate);
    attestca::pem::write_private_key(&device_key, &key.pkcs8).expect("device key");
    let device = Some((device_crt.as_path(), device_key.as_path()));
    let reenroll = |cn: &str| {
        request(
            "POST",
            "/.well-known/est/lab/simplereenroll",
            &[("Content-Type", "application/pkcs10".into())],
            body(&key.csr(cn).expect("csr")).as_bytes(),
        )
    };
    let response = est.exchange(device, &reenroll("wire-1"));
    response.assert_spelled("simplereenroll", 200, &base64_200);
    certificate_from_response(&response.body);
    let response = est.exchange(device, &reenroll("wire-1"));
    response.assert_spelled("simplereenroll over budget", 429, &["Retry-After"]);

    // 401 without credentials, with the challenge libest picks its scheme from.
    let response = est.exchange(None, &pkcs10(body(&csr("wire-anonymous")).as_bytes()));
    response.assert_spelled(
        "anonymous simpleenroll",
        401,
        &["WWW-Authenticate", "Content-Type", "Content-Length"],
    );
    assert!(
        response
            .head
            .contains("\r\nWWW-Authenticate: Basic realm=\"attestca EST\""),
        "{}",
        response.head
    );

    // 413: a body over the 64 KiB limit, sent whole.
    let response = est.exchange(rig, &pkcs10(&vec![b'A'; 100 * 1024]));
    response.assert_spelled(
        "oversized simpleenroll",
        413,
        &["Content-Type", "Content-Length"],
    );
    assert!(response.body_text().starts_with("request.too_large"));

    // 413 at once, without a 100 Continue, to a client that waits for one before sending.
    let response = est.exchange(
        rig,
        &request(
            "POST",
            "/.well-known/est/lab/simpleenroll",
            &[
                ("Content-Type", "application/pkcs10".into()),
                ("Content-Length", (100 * 1024).to_string()),
                ("Expect", "100-continue".into()),
            ],
            b"",
        ),
    );
    response.assert_spelled(
        "simpleenroll waiting for 100 Continue",
        413,
        &["Content-Type", "Content-Length"],
    );

    // 415: not application/pkcs10.
    let response = est.exchange(
        rig,
        &request(
            "POST",
            "/.well-known/est/lab/simpleenroll",
            &[("Content-Type", "text/plain".into())],
            body(&csr("wire-415")).as_bytes(),
        ),
    );
    response.assert_spelled(
        "text/plain simpleenroll",
        415,
        &["Content-Type", "Content-Length"],
    );
    assert!(response.body_text().starts_with("request.content_type"));

    // 408: the body stops after 100 of 4096 bytes.
    let mut stream = est.connect(rig);
    let (response, took) = stall(
        &mut stream,
        "/.well-known/est/lab/simpleenroll",
        "application/pkcs10",
        (4096, 100),
    );
    response.assert_spelled(
        "stalled simpleenroll",
        408,
        &["Content-Type", "Content-Length"],
    );
    assert!(
        response.body_text().starts_with("request.timeout"),
        "{}",
        response.body_text()
    );
    assert!(took < Duration::from_secs(3), "408 after {took:?}");

    // The operator API's JSON errors (401 with a Bearer challenge).
    let response = est.exchange(None, &request("GET", "/api/v1/certificates", &[], b""));
    response.assert_spelled(
        "anonymous operator API",
        401,
        &["WWW-Authenticate", "Content-Type", "Content-Length"],
    );

    // The plain listener: health, a CRL with its caching headers, OCSP.
    let response = plain_exchange(server.http, &request("GET", "/healthz", &[], b""));
    response.assert_spelled(
        "healthz",
        200,
        &["Content-Type", "Content-Length", "X-Request-Id"],
    );
    let response = plain_exchange(
        server.http,
        &request("GET", "/crl/issuing-ca.crl", &[], b""),
    );
    response.assert_spelled(
        "CRL",
        200,
        &[
            "Content-Type",
            "Content-Length",
            "ETag",
            "Last-Modified",
            "Expires",
            "Cache-Control",
        ],
    );
    let response = plain_exchange(
        server.http,
        &request(
            "POST",
            "/ocsp",
            &[("Content-Type", "application/ocsp-request".into())],
            b"not DER",
        ),
    );
    response.assert_spelled("OCSP", 200, &["Content-Type", "Content-Length"]);
    server.stop();
}

/// `curl ARGS -o OUT -w '%{http_code} %{http_version}'`: that line and the body.
fn curl(args: &[&str], out: &Path) -> (String, Vec<u8>) {
    let out_arg = out.display().to_string();
    let mut all = vec!["-sS", "-o", &out_arg, "-w", "%{http_code} %{http_version}"];
    all.extend_from_slice(args);
    let (ok, said) = run("curl", &all, &[]);
    let body = std::fs::read(out).unwrap_or_default();
    assert!(ok, "curl {args:?}: {said}");
    (said.trim().to_owned(), body)
}

#[tokio::test(flavor = "multi_thread")]
async fn oversized_bodies_get_their_refusal_over_http2_and_http1() {
    require_program("curl");
    let (_, features) = run("curl", &["-V"], &[]);
    assert!(
        features.contains("HTTP2"),
        "this curl cannot speak HTTP/2: {features}"
    );
    let tmp = tempfile::tempdir().expect("temp dir");
    let (mut server, est) = dev_server(tmp.path(), &[]).await;
    let p = |name: &str| est.pki.join(name).display().to_string();
    let big = tmp.path().join("2mb.body");
    std::fs::write(&big, vec![b'A'; 2_000_000]).expect("write the body");
    let big = format!("@{}", big.display());
    let out = tmp.path().join("out");
    let chain = p("ca-chain.pem");

    // EST: 413 over HTTP/2 (ALPN) and over HTTP/1.1.
    let enroll = format!("{}/.well-known/est/lab/simpleenroll", server.est_url());
    for (version, expected) in [("--http2", "413 2"), ("--http1.1", "413 1.1")] {
        let (said, body) = curl(
            &[
                version,
                "--cacert",
                &chain,
                "--cert",
                &p("rig.crt"),
                "--key",
                &p("rig.key"),
                "-H",
                "Content-Type: application/pkcs10",
                "--data-binary",
                &big,
                &enroll,
            ],
            &out,
        );
        assert_eq!(said, expected, "simpleenroll {version}");
        assert!(
            String::from_utf8_lossy(&body).starts_with("request.too_large"),
            "{}",
            String::from_utf8_lossy(&body)
        );
    }

    // The operator API: 413 with its JSON error over HTTP/2.
    let revoke = format!("{}/api/v1/certificates/01/revoke", server.est_url());
    let (said, body) = curl(
        &[
            "--http2",
            "--cacert",
            &chain,
            "--cert",
            &p("operator.crt"),
            "--key",
            &p("operator.key"),
            "-H",
            "Content-Type: application/json",
            "--data-binary",
            &big,
            &revoke,
        ],
        &out,
    );
    assert_eq!(said, "413 2", "operator API");
    let error: serde_json::Value = serde_json::from_slice(&body).expect("a JSON error");
    assert_eq!(error["error"]["code"], "request.too_large");

    // OCSP over HTTP/2 without TLS (prior knowledge): the OCSP refusal, malformedRequest.
    let (said, body) = curl(
        &[
            "--http2-prior-knowledge",
            "-H",
            "Content-Type: application/ocsp-request",
            "--data-binary",
            &big,
            &format!("http://{}/ocsp", server.http),
        ],
        &out,
    );
    assert_eq!(said, "200 2", "OCSP");
    assert_eq!(body, [0x30, 0x03, 0x0a, 0x01, 0x01], "malformedRequest");

    // The server still answers.
    let healthz = reqwest::get(format!("http://{}/healthz", server.http))
        .await
        .expect("healthz");
    assert_eq!(healthz.status(), 200);
    server.stop();
}

#[tokio::test(flavor = "multi_thread")]
async fn a_stalled_body_gets_408_and_the_event_says_so() {
    let tmp = tempfile::tempdir().expect("temp dir");
    // No body deadline configured: it is derived from the 3 s request deadline (2 s).
    let (mut server, est) = dev_server(
        tmp.path(),
        &[("ATTESTCA_SERVER__REQUEST_TIMEOUT_SECS", "3".into())],
    )
    .await;
    let (rig_crt, rig_key) = est.identity("rig");
    let (operator_crt, operator_key) = est.identity("operator");

    // EST: 408 request.timeout, well before the request deadline.
    let mut stream = est.connect(Some((&rig_crt, &rig_key)));
    let (response, took) = stall(
        &mut stream,
        "/.well-known/est/lab/simpleenroll",
        "application/pkcs10",
        (4096, 100),
    );
    assert_eq!(
        response.status,
        408,
        "{}\n{}",
        response.head,
        response.body_text()
    );
    assert!(
        response.body_text().starts_with("request.timeout: "),
        "{}",
        response.body_text()
    );
    assert!(
        took >= Duration::from_millis(1500) && took < Duration::from_secs(3),
        "408 after {took:?}"
    );

    // The event recorded for it says the same.
    let operator = https_client(&est.chain, Some((&operator_crt, &operator_key)));
    let events = operator
        .get(format!(
            "{}/api/v1/events?outcome=refused&operation=simpleenroll",
            server.est_url()
        ))
        .send()
        .await
        .expect("events")
        .text()
        .await
        .expect("body");
    let events: serde_json::Value = serde_json::from_str(&events).expect("JSON");
    let items = events["items"].as_array().expect("items");
    assert_eq!(items.len(), 1, "{events}");
    assert_eq!(items[0]["reason"], "request.timeout", "{events}");
    assert_eq!(items[0]["profile"], "lab", "{events}");

    // The operator API: 408 with its JSON error.
    let mut stream = est.connect(Some((&operator_crt, &operator_key)));
    let (response, took) = stall(
        &mut stream,
        "/api/v1/certificates/01/revoke",
        "application/json",
        (1000, 10),
    );
    assert_eq!(response.status, 408, "{}", response.head);
    let error: serde_json::Value = serde_json::from_slice(&response.body).expect("JSON");
    assert_eq!(error["error"]["code"], "request.timeout");
    assert!(took < Duration::from_secs(3), "408 after {took:?}");

    // OCSP on the plain listener: 408 too.
    let mut stream = plain_connect(server.http);
    let (response, took) = stall(&mut stream, "/ocsp", "application/ocsp-request", (1000, 10));
    assert_eq!(response.status, 408, "{}", response.head);
    assert!(response.body_text().starts_with("request.timeout: "));
    assert!(took < Duration::from_secs(3), "408 after {took:?}");

    // None of them reached the request deadline.
    let metrics = reqwest::get(format!("http://{}/metrics", server.http))
        .await
        .expect("metrics")
        .text()
        .await
        .expect("body");
    let timed_out = metrics
        .lines()
        .find_map(|l| {
            l.strip_prefix("attestca_overload_refusals_total{limit=\"request_timeout\"} ")
        })
        .map_or(0.0, |v| v.parse::<f64>().expect("a number"));
    assert_eq!(timed_out, 0.0, "{metrics}");
    server.stop();
}
