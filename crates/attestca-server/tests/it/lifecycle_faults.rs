//! The process life cycle under faults, against real server processes over real TLS:
//!
//! - SIGTERM under load drains: `/readyz` says `process: draining` at once while `/healthz`
//!   keeps answering, the EST listener stops accepting, the requests in flight (one whose body
//!   is still arriving slowly, over HTTP/1.1 and over HTTP/2) finish with their records, no
//!   request is answered anything but 200 or a clean 503, and the process exits 0.
//! - A request still running at the end of the grace period is answered 503
//!   `service.shutting_down` with Retry-After (not a connection reset), and the process exits 0.
//! - Two instances started at the same moment on one PostgreSQL and one SoftHSM token create
//!   one OCSP responder key and one responder certificate between them, issue distinct serials,
//!   and each answers the other's revocations (OCSP and CRL) within 2 s.

use attestca_testkit as common;

use std::convert::Infallible;
use std::path::Path;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use bytes::Bytes;
use common::*;
use tokio::sync::mpsc::{UnboundedSender, unbounded_channel};
use tokio::task::JoinHandle;

/// A request body the test feeds by hand: each chunk put on the channel goes out at once; the
/// body ends when the sender is dropped.
struct FedBody(tokio::sync::mpsc::UnboundedReceiver<Bytes>);

impl hyper::body::Body for FedBody {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<hyper::body::Frame<Bytes>, Infallible>>> {
        self.0
            .poll_recv(cx)
            .map(|chunk| chunk.map(|c| Ok(hyper::body::Frame::data(c))))
    }
}

#[derive(Clone, Copy, Debug, PartialEq)]
enum Protocol {
    Http1,
    Http2,
}

/// A client authenticated as the dev rig, with connections of its own, speaking `protocol`
/// (chosen by ALPN). Every request is bounded by a 20 s client timeout.
fn rig_client(data: &Path, protocol: Protocol) -> reqwest::Client {
    let pki = data.join("pki");
    let mut tls = attestca_rig::client::tls_config(
        &pki.join("ca-chain.pem"),
        Some((&pki.join("rig.crt"), &pki.join("rig.key"))),
    )
    .expect("TLS client config");
    tls.alpn_protocols = match protocol {
        Protocol::Http1 => vec![b"http/1.1".to_vec()],
        Protocol::Http2 => vec![b"h2".to_vec()],
    };
    reqwest::Client::builder()
        .tls_backend_preconfigured(tls)
        .timeout(Duration::from_secs(20))
        .build()
        .expect("HTTP client")
}

/// What the server answered, read in full.
#[derive(Debug)]
struct Answer {
    status: u16,
    version: reqwest::Version,
    retry_after: Option<String>,
    body: Bytes,
}

impl Answer {
    async fn read(response: reqwest::Response) -> Result<Self, String> {
        let status = response.status().as_u16();
        let version = response.version();
        let retry_after = response
            .headers()
            .get("retry-after")
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        let body = response
            .bytes()
            .await
            .map_err(|e| format!("{status} but the body did not arrive: {e:?}"))?;
        Ok(Self {
            status,
            version,
            retry_after,
            body,
        })
    }

    fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    /// A refusal a client can act on: 503 with Retry-After and a `service.` reason code.
    fn is_clean_503(&self) -> bool {
        self.status == 503 && self.retry_after.is_some() && self.text().starts_with("service.")
    }
}

/// Starts posting an EST simpleenroll body for a fresh key with CN=`cn` to `url`, split into
/// `pieces` chunks that the caller sends (in order) through the returned sender.
fn post_fed(
    client: &reqwest::Client,
    url: &str,
    cn: &str,
    pieces: usize,
) -> (
    UnboundedSender<Bytes>,
    Vec<Bytes>,
    JoinHandle<Result<Answer, String>>,
) {
    let text = Bytes::from(body(&csr(cn)));
    let size = text.len().div_ceil(pieces);
    let chunks = (0..text.len())
        .step_by(size)
        .map(|at| text.slice(at..(at + size).min(text.len())))
        .collect();
    let (feed, fed) = unbounded_channel();
    let request = client
        .post(url)
        .header("Content-Type", "application/pkcs10")
        .body(reqwest::Body::wrap(FedBody(fed)))
        .send();
    let pending = tokio::spawn(async move {
        match request.await {
            Ok(response) => Answer::read(response).await,
            Err(e) => Err(format!("no response: {e:?}")),
        }
    });
    (feed, chunks, pending)
}

/// `GET http://<plain listener><path>`: status and body.
async fn plain_get(server: &ServerProcess, path: &str) -> (u16, String) {
    let response = reqwest::Client::new()
        .get(format!("http://{}{path}", server.http))
        .timeout(Duration::from_secs(5))
        .send()
        .await
        .unwrap_or_else(|e| panic!("GET {path} on the plain-HTTP listener: {e:?}"));
    let status = response.status().as_u16();
    (status, response.text().await.expect("body"))
}

/// Waits until `/readyz` answers 200 (database, keys, warm OCSP cache) and returns how long
/// it took; `Err` with the log if the process exits first; panics with the last answer and
/// the log after `limit`.
async fn until_ready(server: &mut ServerProcess, limit: Duration) -> Result<Duration, String> {
    let started = Instant::now();
    let client = reqwest::Client::new();
    let url = format!("http://{}/readyz", server.http);
    loop {
        if let Some(status) = server.exited() {
            return Err(format!(
                "attestca exited ({status}) during start-up:\n{}",
                server.log_text()
            ));
        }
        let last = match client
            .get(&url)
            .timeout(Duration::from_secs(2))
            .send()
            .await
        {
            Ok(r) if r.status() == 200 => return Ok(started.elapsed()),
            Ok(r) => format!("{}: {}", r.status(), r.text().await.unwrap_or_default()),
            Err(e) => format!("{e:?}"),
        };
        assert!(
            started.elapsed() < limit,
            "/readyz not 200 within {limit:?} (last: {last}):\n{}",
            server.log_text()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The dev server (SQLite, software keys) with this shutdown grace period, ready.
async fn dev_server(tmp: &Path, grace_secs: u64) -> ServerProcess {
    let mut server = ServerProcess::dev_with(
        &tmp.join("data"),
        &tmp.join("server.log"),
        &[(
            "ATTESTCA_SERVER__SHUTDOWN_GRACE_SECS",
            grace_secs.to_string(),
        )],
    );
    server.wait_ready().await;
    if let Err(log) = until_ready(&mut server, Duration::from_secs(20)).await {
        panic!("{log}");
    }
    server
}

#[tokio::test(flavor = "multi_thread")]
async fn sigterm_under_load_finishes_in_flight_requests_reports_draining_and_exits_0() {
    const GRACE: Duration = Duration::from_secs(10);
    const WORKERS: usize = 6;
    const PIECES: usize = 7;
    const PAUSE: Duration = Duration::from_millis(300);
    let tmp = tempfile::tempdir().expect("temp dir");
    let data = tmp.path().join("data");
    let mut server = dev_server(tmp.path(), GRACE.as_secs()).await;
    let url = format!("{}/.well-known/est/lab/simpleenroll", server.est_url());

    // Load: clients posting enrollments back to back, each on its own connection, half of
    // them over HTTP/2. Every outcome is kept.
    let stop = Arc::new(AtomicBool::new(false));
    let mut workers = Vec::new();
    for w in 0..WORKERS {
        let protocol = if w % 2 == 0 {
            Protocol::Http1
        } else {
            Protocol::Http2
        };
        let (client, url, stop) = (rig_client(&data, protocol), url.clone(), Arc::clone(&stop));
        workers.push(tokio::spawn(async move {
            let mut outcomes = Vec::new();
            let mut i = 0;
            while !stop.load(Ordering::SeqCst) {
                i += 1;
                let sent = client
                    .post(&url)
                    .header("Content-Type", "application/pkcs10")
                    .body(body(&csr(&format!("load-{w}-{i}"))))
                    .send()
                    .await;
                match sent {
                    Ok(response) => outcomes.push((Instant::now(), Answer::read(response).await)),
                    Err(e) => {
                        outcomes.push((Instant::now(), Err(format!("{e:?}"))));
                        tokio::time::sleep(Duration::from_millis(20)).await;
                    }
                }
            }
            (protocol, outcomes)
        }));
    }
    tokio::time::sleep(Duration::from_millis(1000)).await;

    // Two enrollments whose bodies arrive slowly (a chunk every 300 ms for ~2 s), one per
    // protocol; SIGTERM arrives while they are still being sent.
    let mut slow = Vec::new();
    for protocol in [Protocol::Http1, Protocol::Http2] {
        let (feed, chunks, pending) = post_fed(
            &rig_client(&data, protocol),
            &url,
            &format!("slow-{protocol:?}"),
            PIECES,
        );
        let feeder = tokio::spawn(async move {
            let last = chunks.len() - 1;
            for (i, chunk) in chunks.into_iter().enumerate() {
                feed.send(chunk).expect("the request is still sending");
                if i < last {
                    tokio::time::sleep(PAUSE).await;
                }
            }
            // The sender drops here: the body ends.
            Instant::now()
        });
        slow.push((protocol, feeder, pending));
    }
    tokio::time::sleep(PAUSE * 2 + PAUSE / 2).await;
    for (protocol, _, pending) in &slow {
        assert!(
            !pending.is_finished(),
            "the slow {protocol:?} request finished before the signal: {pending:?}"
        );
    }
    // Taken before `kill` runs: the server may act on the signal before `kill` returns.
    let signalled = Instant::now();
    server.signal("TERM");

    // Readiness says draining at once; liveness still answers; the EST port is closed.
    let draining_after = loop {
        let (status, text) = plain_get(&server, "/readyz").await;
        if status == 503 {
            assert!(text.starts_with("process: draining"), "/readyz: {text}");
            break signalled.elapsed();
        }
        assert_eq!(status, 200, "/readyz before draining: {text}");
        assert!(
            signalled.elapsed() < Duration::from_secs(1),
            "/readyz still {status} 1 s after SIGTERM: {text}"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    };
    let (status, text) = plain_get(&server, "/healthz").await;
    assert_eq!(status, 200, "/healthz while draining: {text}");
    let refused_after = loop {
        match tokio::net::TcpStream::connect(server.est).await {
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionRefused => {
                break signalled.elapsed();
            }
            _ => {
                assert!(
                    signalled.elapsed() < Duration::from_secs(1),
                    "the EST listener still accepts connections 1 s after SIGTERM"
                );
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        }
    };
    // All of the above happened while the slow requests were still in flight.
    for (protocol, _, pending) in &slow {
        assert!(
            !pending.is_finished(),
            "the slow {protocol:?} request was over before the drain was observed"
        );
    }
    // Readiness stays "draining" while they finish.
    let (status, text) = plain_get(&server, "/readyz").await;
    assert_eq!((status, text.starts_with("process: draining")), (503, true));

    // The slow requests complete with a certificate, their last chunk sent after the signal.
    let mut serials = Vec::new();
    for (protocol, feeder, pending) in slow {
        let last_chunk = feeder.await.expect("feeder");
        assert!(
            last_chunk > signalled,
            "the signal came after the whole body"
        );
        let answer = tokio::time::timeout(Duration::from_secs(10), pending)
            .await
            .expect("the slow request was answered within 10 s")
            .expect("task")
            .unwrap_or_else(|e| panic!("slow {protocol:?} request: {e}"));
        assert_eq!(
            answer.status,
            200,
            "slow {protocol:?} request: {}",
            answer.text()
        );
        let expected_version = match protocol {
            Protocol::Http1 => reqwest::Version::HTTP_11,
            Protocol::Http2 => reqwest::Version::HTTP_2,
        };
        assert_eq!(answer.version, expected_version);
        serials.push(serial_of(&certificate_from_response(&answer.body)));
    }

    // The process exits 0, well within the grace period (nothing was left running).
    let status = server.exit_within(GRACE + Duration::from_secs(5)).await;
    let exited_after = signalled.elapsed();
    stop.store(true, Ordering::SeqCst);
    assert!(
        status.is_some_and(|s| s.success()),
        "exit status {status:?} {exited_after:?} after SIGTERM:\n{}",
        server.log_text()
    );
    assert!(
        exited_after < GRACE + Duration::from_secs(3),
        "exited {exited_after:?} after SIGTERM"
    );

    // Every answer was 200 with a certificate, or a clean 503; never a 500. A request may go
    // unanswered only after the signal: refused connections once the EST port is closed, or
    // (HTTP/1.1) a request sent on a kept-alive connection just as the server closed it idle.
    let (mut ok, mut refused, mut unanswered) = (0, 0, 0);
    for worker in workers {
        let (protocol, outcomes) = tokio::time::timeout(Duration::from_secs(25), worker)
            .await
            .expect("load worker stopped")
            .expect("load worker");
        for (at, outcome) in outcomes {
            match outcome {
                Ok(answer) if answer.status == 200 => {
                    ok += 1;
                    serials.push(serial_of(&certificate_from_response(&answer.body)));
                }
                Ok(answer) => {
                    assert!(
                        answer.is_clean_503(),
                        "{protocol:?}: answered {} {:?}: {}",
                        answer.status,
                        answer.retry_after,
                        answer.text()
                    );
                    refused += 1;
                }
                Err(e) => {
                    assert!(
                        at > signalled,
                        "{protocol:?}: a request failed {:?} before SIGTERM: {e}",
                        signalled - at
                    );
                    unanswered += 1;
                }
            }
        }
    }
    assert!(ok >= WORKERS, "too few enrollments under load: {ok}");

    // Every certificate a client received has its row.
    let db = sqlx::SqlitePool::connect(&format!("sqlite://{}", data.join("attestca.db").display()))
        .await
        .expect("db");
    for serial in &serials {
        let found: Option<String> =
            sqlx::query_scalar("SELECT serial FROM certificates WHERE serial = $1")
                .bind(serial)
                .fetch_optional(&db)
                .await
                .expect("query");
        assert!(found.is_some(), "{serial} was returned without its row");
    }
    // ... and no certificate was issued whose answer was lost in the drain.
    let rows: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM certificates WHERE profile = 'lab'")
        .fetch_one(&db)
        .await
        .expect("count");
    assert_eq!(
        rows,
        serials.len() as i64,
        "certificates issued vs received by their clients"
    );
    db.close().await;
    eprintln!(
        "draining seen after {draining_after:?}, EST port closed after {refused_after:?}, \
         exit 0 after {exited_after:?}; load: {ok} enrolled, {refused} refused 503, \
         {unanswered} without an answer after the signal"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn request_outliving_the_grace_period_is_answered_503_shutting_down_and_exit_is_0() {
    const GRACE: Duration = Duration::from_secs(1);
    /// After the cut-off, the server gives the 503s this long to reach their clients.
    const FLUSH: Duration = Duration::from_secs(2);
    let tmp = tempfile::tempdir().expect("temp dir");
    let data = tmp.path().join("data");
    let mut server = dev_server(tmp.path(), GRACE.as_secs()).await;
    let url = format!("{}/.well-known/est/lab/simpleenroll", server.est_url());

    // One enrollment per protocol sends the first part of its body, then stalls (for longer
    // than the grace period, less than the 20 s body read timeout: until the server is gone).
    let mut stalled = Vec::new();
    for protocol in [Protocol::Http1, Protocol::Http2] {
        let (feed, chunks, pending) = post_fed(
            &rig_client(&data, protocol),
            &url,
            &format!("stalled-{protocol:?}"),
            4,
        );
        feed.send(chunks[0].clone())
            .expect("the request is sending");
        stalled.push((protocol, feed, pending));
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    for (protocol, _, pending) in &stalled {
        assert!(
            !pending.is_finished(),
            "the stalled {protocol:?} request was answered before the signal: {pending:?}"
        );
    }
    // Taken before `kill` runs: the server may act on the signal before `kill` returns.
    let signalled = Instant::now();
    server.signal("TERM");

    // At the end of the grace period each is answered 503 service.shutting_down with
    // Retry-After, over its own protocol: an answer, not a reset.
    let mut feeds = Vec::new();
    for (protocol, feed, pending) in stalled {
        let answer = tokio::time::timeout(GRACE + FLUSH + Duration::from_secs(3), pending)
            .await
            .unwrap_or_else(|_| panic!("the stalled {protocol:?} request was never answered"))
            .expect("task")
            .unwrap_or_else(|e| panic!("stalled {protocol:?} request: {e}"));
        let answered_after = signalled.elapsed();
        assert_eq!(
            (answer.status, answer.retry_after.is_some()),
            (503, true),
            "stalled {protocol:?} request: {answer:?}"
        );
        assert!(
            answer.text().starts_with("service.shutting_down"),
            "{protocol:?}: {}",
            answer.text()
        );
        let expected_version = match protocol {
            Protocol::Http1 => reqwest::Version::HTTP_11,
            Protocol::Http2 => reqwest::Version::HTTP_2,
        };
        assert_eq!(answer.version, expected_version);
        assert!(
            answered_after >= GRACE - Duration::from_millis(100) && answered_after < GRACE + FLUSH,
            "{protocol:?}: answered {answered_after:?} after SIGTERM (grace {GRACE:?})"
        );
        eprintln!("{protocol:?}: 503 service.shutting_down {answered_after:?} after SIGTERM");
        // Still stalled: the body is never finished.
        feeds.push(feed);
    }
    let status = server
        .exit_within(GRACE + FLUSH + Duration::from_secs(3))
        .await;
    let exited_after = signalled.elapsed();
    assert!(
        status.is_some_and(|s| s.success()),
        "exit status {status:?} {exited_after:?} after SIGTERM:\n{}",
        server.log_text()
    );
    eprintln!("exit 0 after {exited_after:?}");
    drop(feeds);
    assert!(
        server
            .log_text()
            .contains("answered 503 service.shutting_down"),
        "{}",
        server.log_text()
    );
}

const PIN: &str = "5678";
const TOKEN: &str = "attestca-lifecycle";
const KEY_LABEL: &str = "attestca-issuing-ca";
const OPERATOR_TOKEN: &str = "lifecycle-operator-token-0123456789";

/// Polls `observer`'s OCSP responder (pre-signed answers, no nonce) and CRL until both report
/// `serial` revoked; returns how long after `since` each did. Panics after 5 s.
async fn until_revoked(
    observer: &ServerProcess,
    ocsp: &OpensslOcsp,
    pem: &Path,
    serial: &str,
    since: Instant,
) -> (Duration, Duration) {
    let (mut in_ocsp, mut in_crl) = (None, None);
    loop {
        if in_ocsp.is_none() && ocsp.status(pem, &["-no_nonce"]) == "revoked" {
            in_ocsp = Some(since.elapsed());
        }
        if in_crl.is_none() && served_crl(observer).await.1.iter().any(|s| s == serial) {
            in_crl = Some(since.elapsed());
        }
        if let (Some(o), Some(c)) = (in_ocsp, in_crl) {
            return (o, c);
        }
        assert!(
            since.elapsed() < Duration::from_secs(5),
            "{serial} not revoked at {} after 5 s (OCSP {in_ocsp:?}, CRL {in_crl:?})",
            observer.http
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// One round: a fresh database and token, `attestca init`, two instances spawned at once.
async fn simultaneous_start_round(round: usize, admin_url: &str, module: &str, root: &Path) {
    let tmp = root.join(format!("round{round}"));
    std::fs::create_dir_all(&tmp).expect("round dir");
    let token = SoftHsmToken::create(&tmp.join("softhsm"), TOKEN, PIN);
    let db = TestDatabase::create(admin_url).await;
    let (cfg, data) = write_shared_database_config(
        &tmp,
        &db.url,
        &format!(
            "backend = \"pkcs11\"\nmodule = \"{module}\"\ntoken_label = \"{TOKEN}\"\n\
             key_label = \"{KEY_LABEL}\"\nsessions = 2"
        ),
        "crl_poll_secs = 1\nocsp_poll_secs = 1",
    );
    let mut text = std::fs::read_to_string(&cfg).expect("config");
    text.push_str("[[operators.tokens]]\nname = \"lifecycle\"\n");
    std::fs::write(&cfg, text).expect("config");
    let env = vec![
        ("SOFTHSM2_CONF", token.conf.display().to_string()),
        ("ATTESTCA_SIGNER_PIN", PIN.to_owned()),
        (
            "ATTESTCA_OPERATOR_TOKEN_LIFECYCLE",
            OPERATOR_TOKEN.to_owned(),
        ),
    ];
    init_test_install(&cfg, &env);

    // Both at the same moment: no wait between the spawns.
    let started = Instant::now();
    let mut servers =
        [0, 1].map(|i| ServerProcess::with_config(&cfg, &env, &tmp.join(format!("server{i}.log"))));
    let [a, b] = &mut servers;
    let limit = Duration::from_secs(30);
    let (ready_a, ready_b) = tokio::join!(until_ready(a, limit), until_ready(b, limit));
    // SoftHSM's file store can hide the token for a moment from a process that initialises
    // the library while another process writes to the token (here: the other instance
    // generating the responder key; reproduced without attestca with two pkcs11-tool
    // processes). The signer waits for the token at start-up; an instance that still fails to
    // start fails the test.
    if let Some(log) = [ready_a, ready_b].into_iter().find_map(Result::err) {
        panic!("round {round}: {log}");
    }
    let both_ready = started.elapsed();

    // One responder key and one log checkpoint key in the token (next to the CA key), one
    // responder certificate: two instances starting at once create each key once.
    let objects = token.private_keys(module);
    let responder_label = format!("label:      {KEY_LABEL}-ocsp");
    assert_eq!(
        (
            objects.matches(&responder_label).count(),
            objects.matches("label:      attestca-log-").count(),
            objects.matches("Private Key Object").count()
        ),
        (1, 1, 3),
        "round {round}: one responder key, one log key and the CA key expected:\n{objects}"
    );
    let pool = db.pool().await;
    let responder_rows: i64 =
        sqlx::query_scalar("SELECT COUNT(*) FROM certificates WHERE profile = 'ocsp-responder'")
            .fetch_one(&pool)
            .await
            .expect("count");
    assert_eq!(responder_rows, 1, "round {round}: responder certificates");
    let logs: Vec<String> = servers.iter().map(ServerProcess::log_text).collect();
    let issued = logs
        .iter()
        .filter(|l| l.contains("issued the OCSP responder certificate"))
        .count();
    let reused = logs
        .iter()
        .filter(|l| l.contains("reusing the OCSP responder certificate"))
        .count();
    assert_eq!(
        (issued, reused),
        (1, 1),
        "round {round}: one instance issues the responder certificate, the other reuses it:\n{}",
        logs.join("\n----\n")
    );

    // Enrollments through both at once: distinct serials, one row each.
    const N: usize = 10;
    let chain = data.join("pki/ca-chain.pem");
    let rig = https_client(
        &chain,
        Some((&data.join("pki/rig.crt"), &data.join("pki/rig.key"))),
    );
    let enrollments = (0..N).map(|i| {
        let url = format!("{}/.well-known/est/simpleenroll", servers[i % 2].est_url());
        let rig = rig.clone();
        async move { enroll(&rig, &url, &format!("round{round}-device-{i}")).await }
    });
    let leaves = tokio::time::timeout(
        Duration::from_secs(20),
        futures::future::join_all(enrollments),
    )
    .await
    .expect("enrollments answered within 20 s");
    let serials: Vec<String> = leaves.iter().map(|der| serial_of(der)).collect();
    let distinct: std::collections::HashSet<&String> = serials.iter().collect();
    assert_eq!(
        distinct.len(),
        N,
        "round {round}: a serial twice: {serials:?}"
    );
    let (rows, distinct_rows): (i64, i64) = sqlx::query_as(
        "SELECT COUNT(*), COUNT(DISTINCT serial) FROM certificates WHERE profile <> 'ocsp-responder'",
    )
    .fetch_one(&pool)
    .await
    .expect("count");
    assert_eq!((rows, distinct_rows), (N as i64, N as i64), "round {round}");
    for serial in &serials {
        let found: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM certificates WHERE serial = $1")
            .bind(serial)
            .fetch_one(&pool)
            .await
            .expect("query");
        assert_eq!(found, 1, "round {round}: rows for {serial}");
    }

    // Revoked through A's operator API, then through B's: each is answered revoked by the
    // OTHER instance's OCSP responder and CRL within 2 s.
    let operator = https_client(&chain, None);
    let mut seen = Vec::new();
    for (by, observer, leaf) in [(0usize, 1usize, 0usize), (1, 0, 1)] {
        let pem = tmp.join(format!("leaf{leaf}.pem"));
        write_pem(&pem, &leaves[leaf]);
        let ocsp = OpensslOcsp::new(
            &chain,
            &tmp,
            format!("http://{}/ocsp", servers[observer].http),
        );
        assert_eq!(ocsp.status(&pem, &["-no_nonce"]), "good", "round {round}");
        let response = operator
            .post(format!(
                "{}/api/v1/certificates/{}/revoke",
                servers[by].est_url(),
                serials[leaf]
            ))
            .bearer_auth(OPERATOR_TOKEN)
            .header("content-type", "application/json")
            .body(serde_json::json!({"reason": "keyCompromise"}).to_string())
            .timeout(Duration::from_secs(10))
            .send()
            .await
            .expect("revoke");
        let status = response.status();
        let text = response.text().await.expect("body");
        assert_eq!(
            status, 200,
            "round {round}: revoke through instance {by}: {text}"
        );
        let revoked_at = Instant::now();
        let (in_ocsp, in_crl) =
            until_revoked(&servers[observer], &ocsp, &pem, &serials[leaf], revoked_at).await;
        assert!(
            in_ocsp < Duration::from_secs(2) && in_crl < Duration::from_secs(2),
            "round {round}: revoked through {by}, seen by {observer} after {in_ocsp:?} (OCSP) \
             and {in_crl:?} (CRL); CRL and OCSP log lines:\n{}",
            servers
                .iter()
                .enumerate()
                .flat_map(|(i, s)| {
                    s.log_text()
                        .lines()
                        .filter(|l| l.contains("CRL") || l.contains("OCSP") || l.contains("revok"))
                        .map(|l| format!("[{i}] {l}"))
                        .collect::<Vec<_>>()
                })
                .collect::<Vec<_>>()
                .join("\n")
        );
        seen.push((by, observer, in_ocsp, in_crl));
    }
    eprintln!(
        "round {round}: both ready after {both_ready:?}; revocations seen by the other \
         instance (by, seen at, OCSP, CRL): {seen:?}"
    );
    drop(servers);
    pool.close().await;
    db.drop_database().await;
}

#[tokio::test(flavor = "multi_thread")]
#[cfg_attr(
    any(missing_postgres, missing_softhsm),
    ignore = "needs PostgreSQL (ATTESTCA_TEST_DATABASE_URL) and SoftHSM (ATTESTCA_TEST_PKCS11_MODULE); tests/run.sh provides it"
)]
async fn two_instances_started_at_once_share_one_responder_and_see_each_others_revocations() {
    let admin_url = require("PostgreSQL", "ATTESTCA_TEST_DATABASE_URL");
    let module = require("SoftHSM", "ATTESTCA_TEST_PKCS11_MODULE");
    let tmp = tempfile::tempdir().expect("temp dir");
    // The race is timing-dependent: three rounds, each on a fresh database and token.
    for round in 0..3 {
        simultaneous_start_round(round, &admin_url, &module, tmp.path()).await;
    }
}
