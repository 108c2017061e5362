//! The OCSP responder of `attestca serve --dev` against the real `openssl ocsp` client, curl
//! and pkilint: good, revoked through the CLI (within 5 s), unknown; nonce echoed or absent;
//! SHA-1 and SHA-256 CertIDs; two certificates in one request; GET; malformed and
//! unauthorized requests; the RFC 5019 caching headers; the delegated responder certificate.

use attestca_testkit as common;

use std::path::Path;
use std::time::{SystemTime, UNIX_EPOCH};

use common::*;
use der::Decode;

/// The BasicOCSPResponse of a successful response, read with the project's RFC 6960 types.
fn basic_of(response_der: &[u8]) -> attestca::ocsp::asn1::BasicOcspResponse {
    use attestca::ocsp::asn1::{BasicOcspResponse, OcspResponse};
    let response = OcspResponse::from_der(response_der).expect("OCSPResponse");
    let bytes = response.response_bytes.expect("responseBytes");
    BasicOcspResponse::from_der(bytes.response.as_bytes()).expect("basic")
}

/// thisUpdate and nextUpdate of the first SingleResponse.
fn validity_of(response_der: &[u8]) -> (i64, i64) {
    let basic = basic_of(response_der);
    let tbs = der::Encode::to_der(&basic.tbs_response_data).expect("tbs");
    let data = attestca::ocsp::asn1::ResponseData::from_der(&tbs).expect("ResponseData");
    let single = &data.responses[0];
    let seconds = |t: der::asn1::GeneralizedTime| t.to_unix_duration().as_secs() as i64;
    (
        seconds(single.this_update),
        seconds(single.next_update.expect("nextUpdate")),
    )
}

fn header_time(headers: &str, name: &str) -> i64 {
    let value = header(headers, name);
    httpdate::parse_http_date(&value)
        .unwrap_or_else(|e| panic!("{name}: {value}: {e}"))
        .duration_since(UNIX_EPOCH)
        .expect("after 1970")
        .as_secs() as i64
}

fn header(headers: &str, name: &str) -> String {
    headers
        .lines()
        .find_map(|l| {
            let (n, v) = l.split_once(':')?;
            n.eq_ignore_ascii_case(name).then(|| v.trim().to_owned())
        })
        .unwrap_or_else(|| panic!("no {name} header in {headers}"))
}

/// `curl` with `args`; returns (response headers, body path).
fn curl(dir: &Path, name: &str, args: &[&str]) -> (String, std::path::PathBuf) {
    let (headers, body) = (
        dir.join(format!("{name}.h")),
        dir.join(format!("{name}.der")),
    );
    let mut all = vec![
        "-sS",
        "--max-time",
        "10",
        "-D",
        headers.to_str().expect("path"),
        "-o",
        body.to_str().expect("path"),
    ];
    all.extend_from_slice(args);
    let (ok, out) = run("curl", &all, &[]);
    assert!(ok, "curl {args:?}: {out}");
    (std::fs::read_to_string(&headers).expect("headers"), body)
}

/// `openssl ocsp ARGS FLAG FILE`, which must succeed (FLAG: `-respout` or `-reqout`).
fn query_saving(ocsp: &OpensslOcsp, args: &[&str], flag: &str, file: &Path) {
    let mut all = args.to_vec();
    all.extend([flag, file.to_str().expect("path")]);
    let (ok, text) = ocsp.query(&all);
    assert!(ok, "openssl ocsp {all:?}: {text}");
}

/// `openssl ocsp -respin FILE ARGS`.
fn respin(path: &Path, args: &[&str]) -> (bool, String) {
    let mut all = vec!["ocsp", "-respin", path.to_str().expect("path")];
    all.extend_from_slice(args);
    run("openssl", &all, &[])
}

/// The response as `openssl ocsp -resp_text` prints it (not verified).
fn print_response(path: &Path) -> String {
    respin(path, &["-resp_text", "-noverify"]).1
}

#[tokio::test(flavor = "multi_thread")]
#[cfg_attr(
    missing_pkilint,
    ignore = "needs pkilint (ATTESTCA_TEST_PKILINT); tests/run.sh provides it"
)]
async fn openssl_ocsp_against_the_dev_server() {
    let tmp = tempfile::tempdir().expect("temp dir");
    let (dir, work) = (tmp.path().join("data"), tmp.path());
    let mut server = ServerProcess::dev(&dir, &work.join("server.log"));
    server.wait_ready().await;
    let pki = dir.join("pki");
    let chain = pki.join("ca-chain.pem");
    let rig = https_client(&chain, Some((&pki.join("rig.crt"), &pki.join("rig.key"))));
    let enroll_url = format!("{}/.well-known/est/lab/simpleenroll", server.est_url());
    let url = format!("http://{}/ocsp", server.http);
    let ocsp = OpensslOcsp::new(&chain, work, url.clone());

    let mut leaves = Vec::new();
    for cn in ["ocsp-leaf-1", "ocsp-leaf-2"] {
        let der = enroll(&rig, &enroll_url, cn).await;
        let pem = work.join(format!("{cn}.pem"));
        write_pem(&pem, &der);
        leaves.push((pem, serial_of(&der)));
    }
    let (leaf1, leaf2) = (&leaves[0].0, &leaves[1].0);
    let leaf1_arg = leaf1.to_str().expect("path");

    // Issued certificates point at this responder (AIA).
    let (ok, aia) = run(
        "openssl",
        &[
            "x509",
            "-in",
            leaf1_arg,
            "-noout",
            "-ext",
            "authorityInfoAccess",
        ],
        &[],
    );
    assert!(ok && aia.contains(&format!("OCSP - URI:{url}")), "{aia}");

    // Good: without nonce (pre-signed or signed on the first miss), SHA-1 and SHA-256.
    assert_eq!(ocsp.status(leaf1, &["-no_nonce"]), "good");
    assert_eq!(ocsp.status(leaf1, &["-no_nonce", "-sha256"]), "good");
    let (ok, text) = ocsp.query(&["-sha256", "-cert", leaf1_arg, "-no_nonce", "-resp_text"]);
    assert!(ok && text.contains("Hash Algorithm: sha256"), "{text}");

    // With a nonce (openssl sends one by default and warns when it is not echoed).
    let (ok, text) = ocsp.query(&["-cert", leaf1_arg, "-resp_text"]);
    assert!(ok && text.contains("Response verify OK"), "{text}");
    assert!(text.contains(&format!("{leaf1_arg}: good")), "{text}");
    assert!(text.contains("OCSP Nonce"), "{text}");
    assert!(!text.contains("WARNING"), "nonce not echoed: {text}");
    // The delegated responder certificate rides in the response.
    assert!(
        text.contains("OCSP Signing") && text.contains("OCSP No Check"),
        "{text}"
    );

    // Two certificates in one request, and a serial never issued.
    let (ok, text) = ocsp.query(&[
        "-cert",
        leaf1_arg,
        "-cert",
        leaf2.to_str().expect("path"),
        "-serial",
        "0x1234567890abcdef",
    ]);
    assert!(ok && text.contains("Response verify OK"), "{text}");
    assert!(text.contains(&format!("{leaf1_arg}: good")), "{text}");
    assert!(
        text.contains(&format!("{}: good", leaf2.display())),
        "{text}"
    );
    assert!(text.contains("0x1234567890abcdef: unknown"), "{text}");
    let (ok, text) = ocsp.query(&["-serial", "0x42", "-no_nonce"]);
    assert!(ok && text.contains("0x42: unknown"), "{text}");

    // A CertID naming another issuer: unauthorized (RFC 5019 2.2.3).
    let (_, text) = run(
        "openssl",
        &[
            "ocsp",
            "-issuer",
            pki.join("rig-ca.crt").to_str().expect("path"),
            "-serial",
            "0x01",
            "-url",
            &url,
            "-no_nonce",
        ],
        &[],
    );
    assert!(text.contains("unauthorized"), "{text}");

    // Revoked through the CLI (which only writes the database): answered within 5 s.
    revoke_with_cli(
        &["--dev", "--data-dir", dir.to_str().expect("path")],
        &leaves[0].1,
        "keyCompromise",
    );
    let took = ocsp.until_status(leaf1, "revoked").await;
    eprintln!("revocation visible over OCSP after {took:?}");
    let (ok, text) = ocsp.query(&["-sha256", "-cert", leaf1_arg]);
    assert!(
        ok && text.contains(&format!("{leaf1_arg}: revoked")),
        "{text}"
    );
    assert!(text.contains("Reason: keyCompromise"), "{text}");
    assert_eq!(ocsp.status(leaf2, &["-no_nonce"]), "good");

    // pkilint finds nothing at WARNING in good, revoked and unknown responses.
    let good_der = work.join("good.der");
    let revoked_der = work.join("revoked.der");
    let unknown_der = work.join("unknown.der");
    for (cert, out) in [(leaf2, &good_der), (leaf1, &revoked_der)] {
        query_saving(
            &ocsp,
            &["-cert", cert.to_str().expect("path")],
            "-respout",
            out,
        );
    }
    query_saving(&ocsp, &["-serial", "0x99"], "-respout", &unknown_der);
    for der in [&good_der, &revoked_der, &unknown_der] {
        let (clean, findings) = lint_ocsp_response(der);
        assert!(clean, "pkilint on {}: {findings}", der.display());
    }

    // GET with the request base64-encoded in the path; the RFC 5019 caching headers.
    let request_der = work.join("request.der");
    let leaf2_arg = leaf2.to_str().expect("path");
    query_saving(
        &ocsp,
        &["-cert", leaf2_arg, "-no_nonce"],
        "-reqout",
        &request_der,
    );
    let request = std::fs::read(&request_der).expect("request");
    use base64::Engine;
    let standard = base64::engine::general_purpose::STANDARD.encode(&request);
    let percent = standard
        .replace('+', "%2B")
        .replace('/', "%2F")
        .replace('=', "%3D");
    let url_safe = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(&request);
    let mut etag = String::new();
    for (i, encoded) in [&percent, &url_safe, &standard].iter().enumerate() {
        let (headers, body) = curl(work, &format!("get{i}"), &[&format!("{url}/{encoded}")]);
        assert!(headers.starts_with("HTTP/1.1 200"), "{headers}");
        assert_eq!(
            header(&headers, "content-type"),
            "application/ocsp-response"
        );
        let (ok, text) = respin(
            &body,
            &[
                "-issuer",
                ocsp.issuer.to_str().expect("path"),
                "-CAfile",
                chain.to_str().expect("path"),
                "-cert",
                leaf2.to_str().expect("path"),
            ],
        );
        assert!(ok && text.contains("Response verify OK"), "{text}");
        assert!(text.contains(": good"), "{text}");
        let (this_update, next_update) = validity_of(&std::fs::read(&body).expect("body"));
        let cache_control = header(&headers, "cache-control");
        let max_age: i64 = cache_control
            .strip_prefix("max-age=")
            .and_then(|r| r.split(',').next())
            .and_then(|n| n.parse().ok())
            .unwrap_or_else(|| panic!("{cache_control}"));
        assert!(
            cache_control.ends_with("public, no-transform, must-revalidate"),
            "{cache_control}"
        );
        assert_eq!(header_time(&headers, "last-modified"), this_update);
        assert_eq!(header_time(&headers, "expires"), next_update);
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .expect("now")
            .as_secs() as i64;
        assert!(
            (now + max_age - next_update).abs() <= 2,
            "max-age {max_age} does not count down to nextUpdate {next_update}"
        );
        etag = header(&headers, "etag");
    }
    // The same ETag back: 304.
    let (headers, _) = curl(
        work,
        "conditional",
        &[
            "-H",
            &format!("If-None-Match: {etag}"),
            &format!("{url}/{url_safe}"),
        ],
    );
    assert!(headers.starts_with("HTTP/1.1 304"), "{headers}");

    // A nonce response carries no caching headers.
    let nonce_request = work.join("nonce-request.der");
    query_saving(&ocsp, &["-cert", leaf2_arg], "-reqout", &nonce_request);
    let (headers, body) = curl(
        work,
        "nonce",
        &[
            "-H",
            "Content-Type: application/ocsp-request",
            "--data-binary",
            &format!("@{}", nonce_request.display()),
            &url,
        ],
    );
    assert!(headers.starts_with("HTTP/1.1 200"), "{headers}");
    assert!(print_response(&body).contains("OCSP Nonce"));
    assert!(
        !headers.to_ascii_lowercase().contains("cache-control"),
        "{headers}"
    );

    // Malformed requests: HTTP 200 with the unsigned malformedRequest response.
    let garbage = work.join("garbage.bin");
    std::fs::write(&garbage, b"this is not an OCSP request").expect("write");
    let big = work.join("big.bin");
    std::fs::write(&big, vec![0x30u8; 40_000]).expect("write");
    let garbage_arg = format!("@{}", garbage.display());
    let request_arg = format!("@{}", request_der.display());
    let big_arg = format!("@{}", big.display());
    let malformed: Vec<(&str, Vec<&str>)> = vec![
        (
            "garbage",
            vec![
                "-H",
                "Content-Type: application/ocsp-request",
                "--data-binary",
                &garbage_arg,
            ],
        ),
        (
            "empty",
            vec![
                "-H",
                "Content-Type: application/ocsp-request",
                "--data-binary",
                "",
            ],
        ),
        (
            "wrong content type",
            vec![
                "-H",
                "Content-Type: text/plain",
                "--data-binary",
                &request_arg,
            ],
        ),
        (
            "too large",
            vec![
                "-H",
                "Content-Type: application/ocsp-request",
                "--data-binary",
                &big_arg,
            ],
        ),
    ];
    for (i, (what, mut args)) in malformed.into_iter().enumerate() {
        args.push(&url);
        let (headers, body) = curl(work, &format!("malformed{i}"), &args);
        assert!(headers.starts_with("HTTP/1.1 200"), "{what}: {headers}");
        assert_eq!(
            std::fs::read(&body).expect("body"),
            [0x30, 0x03, 0x0a, 0x01, 0x01],
            "{what}"
        );
        assert!(
            print_response(&body).contains("malformedrequest"),
            "{what}: openssl does not read malformedRequest"
        );
    }
    let (headers, body) = curl(work, "malformed-get", &[&format!("{url}/not%base64!")]);
    assert!(headers.starts_with("HTTP/1.1 200"), "{headers}");
    assert_eq!(
        std::fs::read(&body).expect("body"),
        [0x30, 0x03, 0x0a, 0x01, 0x01]
    );

    // The responder certificate: recorded in the store, its key a 0600 file beside the CA's.
    let responder_key = pki.join("ocsp-responder.key");
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&responder_key)
            .expect("responder key")
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
    }
    let db = sqlx::SqlitePool::connect(&format!("sqlite://{}", dir.join("attestca.db").display()))
        .await
        .expect("db");
    let recorded: i64 = sqlx::query_scalar(
        "SELECT COUNT(*) FROM certificates WHERE profile = 'ocsp-responder' AND status = 'active'",
    )
    .fetch_one(&db)
    .await
    .expect("count");
    assert_eq!(recorded, 1, "one responder certificate recorded");
    db.close().await;

    // A restart reuses the key and the recorded certificate, and answers at once.
    server.stop();
    let mut server = ServerProcess::dev(&dir, &work.join("server2.log"));
    server.wait_ready().await;
    let ocsp = OpensslOcsp::new(&chain, work, format!("http://{}/ocsp", server.http));
    assert_eq!(ocsp.status(leaf1, &["-no_nonce"]), "revoked");
    assert_eq!(ocsp.status(leaf2, &[]), "good");
    let db = sqlx::SqlitePool::connect(&format!("sqlite://{}", dir.join("attestca.db").display()))
        .await
        .expect("db");
    let recorded: i64 =
        sqlx::query_scalar("SELECT COUNT(*) FROM certificates WHERE profile = 'ocsp-responder'")
            .fetch_one(&db)
            .await
            .expect("count");
    assert_eq!(recorded, 1, "the restart reused the responder certificate");
    let responder: String = sqlx::query_scalar(
        "SELECT serial FROM certificates WHERE profile = 'ocsp-responder' AND status = 'active'",
    )
    .fetch_one(&db)
    .await
    .expect("responder serial");
    db.close().await;

    // Revoking the responder certificate: a new one signs every response within seconds.
    let cached = work.join("cached.der");
    query_saving(
        &ocsp,
        &["-cert", leaf2_arg, "-no_nonce"],
        "-respout",
        &cached,
    );
    assert_eq!(responder_serial_of(&cached), responder);
    revoke_with_cli(
        &["--dev", "--data-dir", dir.to_str().expect("path")],
        &responder,
        "keyCompromise",
    );
    let started = std::time::Instant::now();
    loop {
        query_saving(
            &ocsp,
            &["-cert", leaf2_arg, "-no_nonce"],
            "-respout",
            &cached,
        );
        if responder_serial_of(&cached) != responder {
            break;
        }
        assert!(
            started.elapsed().as_secs() < 10,
            "responses still signed by the revoked responder certificate"
        );
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    }
    assert_eq!(ocsp.status(leaf2, &["-no_nonce"]), "good");
    assert_eq!(ocsp.status(leaf1, &["-no_nonce"]), "revoked");
}

/// Serial (hex) of the responder certificate carried in a DER response.
fn responder_serial_of(response: &Path) -> String {
    let basic = basic_of(&std::fs::read(response).expect("response"));
    let certificate = der::Encode::to_der(&basic.certs.expect("certs")[0]).expect("certificate");
    serial_of(&certificate)
}

/// Beyond `ocsp_live_signing_concurrency` live signings at once, requests are answered
/// `tryLater`; pre-signed answers are not limited.
#[tokio::test(flavor = "multi_thread")]
async fn live_signing_beyond_its_limit_answers_try_later() {
    let tmp = tempfile::tempdir().expect("temp dir");
    let dir = tmp.path().join("data");
    let (est, http) = addresses();
    let mut server = ServerProcess::spawn(
        &[
            "serve",
            "--dev",
            "--data-dir",
            dir.to_str().expect("path"),
            "--est-addr",
            &est.to_string(),
            "--http-addr",
            &http.to_string(),
        ],
        &[(
            "ATTESTCA_REVOCATION__OCSP_LIVE_SIGNING_CONCURRENCY",
            "1".to_owned(),
        )],
        &tmp.path().join("server.log"),
        est,
        http,
    );
    server.wait_ready().await;
    let url = format!("http://{http}/ocsp");
    let ocsp = OpensslOcsp::new(&dir.join("pki/ca-chain.pem"), tmp.path(), url.clone());
    // A nonce request: always signed live.
    let request = tmp.path().join("nonce-request.der");
    query_saving(&ocsp, &["-serial", "0x4242"], "-reqout", &request);
    let body = std::fs::read(&request).expect("request");
    let client = reqwest::Client::new();
    let posts = (0..200).map(|_| {
        client
            .post(&url)
            .header("Content-Type", "application/ocsp-request")
            .body(body.clone())
            .send()
    });
    let (mut signed, mut try_later) = (0, 0);
    for response in futures::future::join_all(posts).await {
        let response = response.expect("post");
        assert_eq!(response.status(), 200);
        let bytes = response.bytes().await.expect("body");
        if bytes.as_ref() == [0x30, 0x03, 0x0a, 0x01, 0x03] {
            try_later += 1;
        } else {
            assert!(bytes.len() > 5, "an unexpected error status: {bytes:02x?}");
            signed += 1;
        }
    }
    eprintln!("signed {signed}, tryLater {try_later}");
    assert!(signed > 0, "no request was signed");
    assert!(
        try_later > 0,
        "200 concurrent live signings never hit a limit of 1"
    );
}
