//! Faults a plant network and an HSM actually have, against a running CA and real
//! components: the SoftHSM token going away and coming back (and an impostor token in its
//! place), a PostgreSQL server of the test's own stopped for 15 s under load, and `kill -9` of
//! the CA under load, repeated. Each is bounded in time.

use attestca_testkit as common;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use common::*;

const PIN: &str = "2468";
const TOKEN: &str = "attestca-faults";
const KEY_LABEL: &str = "attestca-issuing-ca";

/// One request of a load run, as the client saw it.
#[derive(Debug, Clone)]
struct Outcome {
    /// `enroll` or `nonce`.
    kind: &'static str,
    started: Instant,
    took: Duration,
    /// 0: no HTTP answer (connection refused or reset).
    status: u16,
    retry_after: bool,
    text: String,
    serial: Option<String>,
}

impl Outcome {
    fn ended(&self) -> Instant {
        self.started + self.took
    }
}

/// One request: an enrollment of a fresh key, or (every fourth) a freshness nonce.
async fn one_request(client: &reqwest::Client, est: &str, name: &str, nonce: bool) -> Outcome {
    let started = Instant::now();
    let kind = if nonce { "nonce" } else { "enroll" };
    let sent = if nonce {
        client
            .get(format!("{est}/.well-known/est/nonce"))
            .send()
            .await
    } else {
        client
            .post(format!("{est}/.well-known/est/simpleenroll"))
            .header("Content-Type", "application/pkcs10")
            .body(body(&csr(name)))
            .send()
            .await
    };
    let mut outcome = Outcome {
        kind,
        started,
        took: Duration::ZERO,
        status: 0,
        retry_after: false,
        text: String::new(),
        serial: None,
    };
    if let Ok(response) = sent {
        outcome.status = response.status().as_u16();
        outcome.retry_after = response.headers().contains_key("retry-after");
        match response.bytes().await {
            Ok(bytes) => {
                if outcome.status == 200 && !nonce {
                    outcome.serial = Some(serial_of(&certificate_from_response(&bytes)));
                } else {
                    outcome.text = String::from_utf8_lossy(&bytes).into_owned();
                }
            }
            // The answer was cut off: no certificate was received.
            Err(e) => {
                outcome.status = 0;
                outcome.text = e.to_string();
            }
        }
    }
    outcome.took = started.elapsed();
    outcome
}

/// `tasks` clients requesting in a loop until `stop`; a fresh connection per client.
fn start_load(
    make_client: impl Fn() -> reqwest::Client,
    est: String,
    tasks: usize,
    stop: Arc<AtomicBool>,
    tag: &'static str,
) -> Vec<tokio::task::JoinHandle<Vec<Outcome>>> {
    (0..tasks)
        .map(|task| {
            let client = make_client();
            let (est, stop) = (est.clone(), Arc::clone(&stop));
            tokio::spawn(async move {
                let mut outcomes = Vec::new();
                let mut i = 0usize;
                while !stop.load(Ordering::SeqCst) {
                    let name = format!("{tag}-{task}-{i}");
                    outcomes.push(one_request(&client, &est, &name, i % 4 == 3).await);
                    i += 1;
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
                outcomes
            })
        })
        .collect()
}

async fn collect(tasks: Vec<tokio::task::JoinHandle<Vec<Outcome>>>) -> Vec<Outcome> {
    let mut all = Vec::new();
    for task in tasks {
        all.extend(task.await.expect("load task"));
    }
    all.sort_by_key(|o| o.started);
    all
}

/// Every certificate a client received has its row and its `issued` event.
async fn assert_recorded(database_url: &str, serials: &[String]) {
    let pool = sqlx::PgPool::connect(database_url).await.expect("connect");
    for serial in serials {
        let row: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM certificates WHERE serial = $1")
            .bind(serial)
            .fetch_one(&pool)
            .await
            .expect("count");
        assert_eq!(row, 1, "certificate {serial} was received but has no row");
        let events: i64 = sqlx::query_scalar(
            "SELECT COUNT(*) FROM enrollment_events WHERE serial = $1 AND outcome = 'issued'",
        )
        .bind(serial)
        .fetch_one(&pool)
        .await
        .expect("count");
        assert_eq!(
            events, 1,
            "certificate {serial} was received but has no event"
        );
    }
    pool.close().await;
}

/// A PostgreSQL + SoftHSM install in `dir`; returns the configuration path, the data
/// directory and the environment the CA runs with.
fn softhsm_install(
    dir: &Path,
    database_url: &str,
    module: &str,
    token: &SoftHsmToken,
    revocation: &str,
) -> (String, PathBuf, Vec<(&'static str, String)>) {
    let (cfg, data) = write_shared_database_config(
        dir,
        database_url,
        &format!(
            "backend = \"pkcs11\"\nmodule = \"{module}\"\ntoken_label = \"{TOKEN}\"\n\
             key_label = \"{KEY_LABEL}\"\nsessions = 4"
        ),
        revocation,
    );
    let env = vec![
        ("SOFTHSM2_CONF", token.conf.display().to_string()),
        ("ATTESTCA_SIGNER_PIN", PIN.to_owned()),
    ];
    init_test_install(&cfg, &env);
    (cfg, data, env)
}

/// Enrolls until one succeeds; returns how long it took and the serial. Every refusal on the
/// way must be a quick 503 with Retry-After.
async fn until_enrolled(
    client: &reqwest::Client,
    est: &str,
    limit: Duration,
) -> (Duration, String) {
    let started = Instant::now();
    let mut i = 0;
    loop {
        let outcome = one_request(client, est, &format!("back-{i}"), false).await;
        if let Some(serial) = outcome.serial {
            return (started.elapsed(), serial);
        }
        assert_refused_fast(&outcome, "signer.unavailable");
        assert!(
            started.elapsed() < limit,
            "no enrollment succeeded within {limit:?}; last answer {outcome:?}"
        );
        i += 1;
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// A refusal a client can act on: 503, Retry-After, the reason code, within a second.
fn assert_refused_fast(outcome: &Outcome, code: &str) {
    assert_eq!(outcome.status, 503, "{outcome:?}");
    assert!(outcome.retry_after, "no Retry-After: {outcome:?}");
    assert!(
        outcome.text.starts_with(code),
        "expected {code}: {outcome:?}"
    );
    assert!(
        outcome.took < Duration::from_secs(1),
        "a refusal took {:?}: {outcome:?}",
        outcome.took
    );
}

/// Replaces the token directory of `token` by `with`, keeping the original at `kept`.
fn swap_token_directory(token: &SoftHsmToken, with: Option<&Path>, kept: &Path) {
    let tokens = token.conf.parent().expect("token dir").join("tokens");
    std::fs::rename(&tokens, kept).expect("move the token away");
    if let Some(other) = with {
        std::fs::rename(other, &tokens).expect("move the other token in");
    }
}

fn restore_token_directory(token: &SoftHsmToken, kept: &Path, set_aside: Option<&Path>) {
    let tokens = token.conf.parent().expect("token dir").join("tokens");
    if let Some(aside) = set_aside {
        std::fs::rename(&tokens, aside).expect("move the other token out");
    }
    std::fs::rename(kept, &tokens).expect("move the token back");
}

#[tokio::test(flavor = "multi_thread")]
#[cfg_attr(
    any(missing_postgres, missing_softhsm),
    ignore = "needs PostgreSQL (ATTESTCA_TEST_DATABASE_URL) and SoftHSM (ATTESTCA_TEST_PKCS11_MODULE); tests/run.sh provides it"
)]
async fn a_token_that_goes_away_comes_back_without_a_restart_and_an_impostor_is_never_used() {
    let admin_url = require("PostgreSQL", "ATTESTCA_TEST_DATABASE_URL");
    let module = require("SoftHSM", "ATTESTCA_TEST_PKCS11_MODULE");
    let tmp = tempfile::tempdir().expect("temp dir");
    let token = SoftHsmToken::create(&tmp.path().join("softhsm"), TOKEN, PIN);
    let db = TestDatabase::create(&admin_url).await;
    let (cfg, data, env) = softhsm_install(
        tmp.path(),
        &db.url,
        &module,
        &token,
        "ocsp_poll_secs = 1\ncrl_poll_secs = 1",
    );
    let mut server = ServerProcess::with_config(&cfg, &env, &tmp.path().join("server.log"));
    server.wait_readyz(Duration::from_secs(60)).await;
    let rig = rig_client(&data);
    let est = server.est_url();
    let mut received = vec![until_enrolled(&rig, &est, Duration::from_secs(5)).await.1];

    // 1. The token directory disappears (as a network HSM restarting, or a token pulled).
    let kept = tmp.path().join("tokens.kept");
    swap_token_directory(&token, None, &kept);
    let outage = Instant::now();
    while outage.elapsed() < Duration::from_secs(3) {
        let outcome = one_request(&rig, &est, "during-outage", false).await;
        assert_refused_fast(&outcome, "signer.unavailable");
        tokio::time::sleep(Duration::from_millis(150)).await;
    }
    let (status, text) = server.readyz().await;
    assert_eq!(status, 503, "{text}");
    assert!(text.starts_with("signer:"), "{text}");
    restore_token_directory(&token, &kept, None);
    let (back_after, serial) = until_enrolled(&rig, &est, Duration::from_secs(5)).await;
    received.push(serial);
    eprintln!("token back: enrollments succeed again after {back_after:?}");
    server.wait_readyz(Duration::from_secs(5)).await;

    // 2. A token with the same label holding another key under the same key label (a token
    //    re-initialised, a wrong HSM partition): the CA must not sign with it.
    let impostor = SoftHsmToken::create(&tmp.path().join("impostor"), TOKEN, PIN);
    let (ok, out) = run(
        "pkcs11-tool",
        &[
            "--module",
            &module,
            "--token-label",
            TOKEN,
            "--login",
            "--pin",
            PIN,
            "--keypairgen",
            "--key-type",
            "EC:prime256v1",
            "--label",
            KEY_LABEL,
        ],
        &[("SOFTHSM2_CONF", impostor.conf.display().to_string())],
    );
    assert!(ok, "impostor key: {out}");
    let impostor_tokens = tmp.path().join("impostor/tokens");
    swap_token_directory(&token, Some(&impostor_tokens), &kept);
    let swapped = Instant::now();
    while swapped.elapsed() < Duration::from_secs(4) {
        let outcome = one_request(&rig, &est, "impostor", false).await;
        assert_refused_fast(&outcome, "signer.unavailable");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert!(
        server
            .log_text()
            .contains("is not the configured key; it will not be used"),
        "the impostor key was not reported:\n{}",
        server.log_text()
    );
    restore_token_directory(&token, &kept, Some(&impostor_tokens));
    let (back_after, serial) = until_enrolled(&rig, &est, Duration::from_secs(5)).await;
    received.push(serial);
    eprintln!("original token back: enrollments succeed again after {back_after:?}");
    server.wait_readyz(Duration::from_secs(5)).await;

    // Both recoveries are on /metrics; no certificate was signed by another key.
    let (_, metrics) = scrape(&server).await;
    assert!(
        metrics
            .get("attestca_dependency_recoveries_total{dependency=\"ca_key\"}")
            .copied()
            .unwrap_or(0.0)
            >= 2.0,
        "recoveries: {metrics:?}"
    );
    assert_eq!(
        metrics.get("attestca_dependency_available{dependency=\"ca_key\"}"),
        Some(&1.0)
    );
    let pool = db.pool().await;
    let ders: Vec<Vec<u8>> = sqlx::query_scalar("SELECT der FROM certificates")
        .fetch_all(&pool)
        .await
        .expect("certificates");
    pool.close().await;
    assert!(ders.len() >= received.len());
    let chain = data.join("pki/ca-chain.pem");
    for (i, der) in ders.iter().enumerate() {
        let pem = tmp.path().join(format!("issued-{i}.pem"));
        write_pem(&pem, der);
        let (ok, out) = openssl_verify(&chain, &pem);
        assert!(ok, "certificate {i} does not verify under the CA: {out}");
    }
    assert_recorded(&db.url, &received).await;
    drop(server);
    db.drop_database().await;
}

#[tokio::test(flavor = "multi_thread")]
#[cfg_attr(
    missing_postgres_server,
    ignore = "needs PostgreSQL server binaries (ATTESTCA_TEST_PG_BIN); tests/run.sh provides it"
)]
async fn a_database_stopped_for_15_s_under_load_costs_only_fast_503s() {
    let pg = ThrowawayPostgres::start();
    let tmp = tempfile::tempdir().expect("temp dir");
    let (cfg, data) = software_install(tmp.path(), &pg.url(), "");
    let mut server = ServerProcess::with_config(&cfg, &[], &tmp.path().join("server.log"));
    server.wait_readyz(Duration::from_secs(60)).await;
    // A certificate whose OCSP response is pre-signed before the outage.
    let known = tmp.path().join("known.pem");
    let der = enroll(
        &rig_client(&data),
        &format!("{}/.well-known/est/simpleenroll", server.est_url()),
        "known-before-the-outage",
    )
    .await;
    write_pem(&known, &der);
    let ocsp = OpensslOcsp::new(
        &data.join("pki/ca-chain.pem"),
        tmp.path(),
        format!("http://{}/ocsp", server.http),
    );
    ocsp.until_status(&known, "good").await;
    let stop = Arc::new(AtomicBool::new(false));
    let load = start_load(
        || rig_client(&data),
        server.est_url(),
        6,
        Arc::clone(&stop),
        "db",
    );
    tokio::time::sleep(Duration::from_secs(2)).await;
    pg.stop();
    let stopped = Instant::now();
    tokio::time::sleep(Duration::from_secs(2)).await;
    let (status, text) = server.readyz().await;
    assert_eq!(status, 503, "{text}");
    assert!(text.starts_with("database:"), "{text}");
    // Relying parties keep their answers: the pre-signed response needs no database.
    assert_eq!(ocsp.status(&known, &["-no_nonce"]), "good");
    tokio::time::sleep(Duration::from_secs(13)).await;
    let restarting = Instant::now();
    pg.start_again();
    let restarted = Instant::now();
    tokio::time::sleep(Duration::from_secs(5)).await;
    stop.store(true, Ordering::SeqCst);
    let outcomes = collect(load).await;

    let before: Vec<_> = outcomes.iter().filter(|o| o.ended() < stopped).collect();
    let during: Vec<_> = outcomes
        .iter()
        .filter(|o| o.started >= stopped && o.ended() <= restarting)
        .collect();
    let after: Vec<_> = outcomes
        .iter()
        .filter(|o| o.started >= restarted + Duration::from_secs(2))
        .collect();
    eprintln!(
        "{} requests: {} before the outage, {} during, {} from 2 s after the restart",
        outcomes.len(),
        before.len(),
        during.len(),
        after.len()
    );
    assert!(before.iter().any(|o| o.status == 200), "no load before");
    for o in &outcomes {
        assert!(
            o.status == 200 || o.status == 503,
            "only certificates and 503s, never a 500 or a cut connection: {o:?}"
        );
    }
    assert!(during.len() > 20, "too little load during the outage");
    for o in &during {
        assert_refused_fast(o, "storage.unavailable");
    }
    let first_success = outcomes
        .iter()
        .filter(|o| o.started >= restarted && o.status == 200 && o.kind == "enroll")
        .map(Outcome::ended)
        .min()
        .expect("an enrollment succeeded after the restart");
    let resumed_after = first_success.duration_since(restarted);
    eprintln!("enrollments resumed {resumed_after:?} after the database was back");
    assert!(resumed_after < Duration::from_secs(2), "{resumed_after:?}");
    assert!(!after.is_empty());
    for o in &after {
        assert_eq!(o.status, 200, "after the recovery: {o:?}");
    }
    let serials: Vec<String> = outcomes.iter().filter_map(|o| o.serial.clone()).collect();
    assert_recorded(&pg.url(), &serials).await;
    let (_, metrics) = scrape(&server).await;
    assert!(
        metrics
            .get("attestca_dependency_recoveries_total{dependency=\"database\"}")
            .copied()
            .unwrap_or(0.0)
            >= 1.0,
        "{metrics:?}"
    );
    server.wait_readyz(Duration::from_secs(5)).await;
}

#[tokio::test(flavor = "multi_thread")]
#[cfg_attr(
    any(missing_postgres, missing_softhsm),
    ignore = "needs PostgreSQL (ATTESTCA_TEST_DATABASE_URL) and SoftHSM (ATTESTCA_TEST_PKCS11_MODULE); tests/run.sh provides it"
)]
async fn kill_9_under_load_loses_no_certificate_and_needs_no_repair() {
    let admin_url = require("PostgreSQL", "ATTESTCA_TEST_DATABASE_URL");
    let module = require("SoftHSM", "ATTESTCA_TEST_PKCS11_MODULE");
    let tmp = tempfile::tempdir().expect("temp dir");
    let token = SoftHsmToken::create(&tmp.path().join("softhsm"), TOKEN, PIN);
    let db = TestDatabase::create(&admin_url).await;
    let (cfg, data, env) = softhsm_install(tmp.path(), &db.url, &module, &token, "");
    let mut received = Vec::new();
    for trial in 0..5u64 {
        let mut server =
            ServerProcess::with_config(&cfg, &env, &tmp.path().join(format!("server-{trial}.log")));
        // A restart on the same database and token needs no repair; ready means the OCSP
        // responses of every certificate issued so far are pre-signed.
        server.wait_readyz(Duration::from_secs(60)).await;
        let (_, metrics) = scrape(&server).await;
        let cached = metrics
            .get("attestca_ocsp_cached_responses")
            .copied()
            .unwrap_or(0.0);
        assert!(
            cached >= received.len() as f64,
            "ready with {cached} OCSP responses pre-signed for {} certificates",
            received.len()
        );
        let stop = Arc::new(AtomicBool::new(false));
        let load = start_load(
            || rig_client(&data),
            server.est_url(),
            8,
            Arc::clone(&stop),
            "kill",
        );
        tokio::time::sleep(Duration::from_millis(700 + 150 * trial)).await;
        server.stop();
        stop.store(true, Ordering::SeqCst);
        let outcomes = collect(load).await;
        let serials: Vec<String> = outcomes.iter().filter_map(|o| o.serial.clone()).collect();
        assert!(!serials.is_empty(), "trial {trial}: no certificate issued");
        assert_recorded(&db.url, &serials).await;
        eprintln!(
            "trial {trial}: {} certificates received, all recorded",
            serials.len()
        );
        received.extend(serials);
    }
    let mut unique = received.clone();
    unique.sort();
    unique.dedup();
    assert_eq!(unique.len(), received.len(), "a serial was received twice");
    let mut server = ServerProcess::with_config(&cfg, &env, &tmp.path().join("server-last.log"));
    server.wait_readyz(Duration::from_secs(60)).await;
    drop(server);
    db.drop_database().await;
}

#[tokio::test(flavor = "multi_thread")]
#[cfg_attr(
    missing_postgres_server,
    ignore = "needs PostgreSQL server binaries (ATTESTCA_TEST_PG_BIN); tests/run.sh provides it"
)]
async fn a_ca_started_before_its_database_waits_for_it_and_says_so() {
    let pg = ThrowawayPostgres::start();
    let tmp = tempfile::tempdir().expect("temp dir");
    let (cfg, _) = software_install(tmp.path(), &pg.url(), "");
    pg.stop();
    // Stopped while it waits: it exits at once, cleanly.
    let mut waiting = ServerProcess::with_config(&cfg, &[], &tmp.path().join("stopped.log"));
    let started = Instant::now();
    while !waiting.log_text().contains("waiting for the database") {
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "{}",
            waiting.log_text()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let status = waiting
        .terminate_and_wait(Duration::from_secs(3))
        .expect("SIGTERM ends the wait for the database");
    assert!(status.success(), "{status}: {}", waiting.log_text());

    let mut server = ServerProcess::with_config(&cfg, &[], &tmp.path().join("server.log"));
    let started = Instant::now();
    loop {
        let log = server.log_text();
        if log.contains("waiting for the database") {
            assert!(
                log.contains("gives_up_after_secs") && log.contains("retry_in_secs"),
                "the log must say for how long it retries:\n{log}"
            );
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "no 'waiting for the database' line:\n{log}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // Nothing answers before the CA can serve (clients take /healthz as "EST is served").
    let (status, _) = server.readyz().await;
    assert_eq!(
        status, 0,
        "a listener answered before the database was there"
    );
    pg.start_again();
    server.wait_readyz(Duration::from_secs(30)).await;
    let rig = rig_client(&tmp.path().join("data"));
    let (_, serial) = until_enrolled(&rig, &server.est_url(), Duration::from_secs(5)).await;
    assert_recorded(&pg.url(), &[serial]).await;
}
