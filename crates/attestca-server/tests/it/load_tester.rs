//! The factory-line simulator and load tester, end to end: `attestca serve --dev` (real TLS,
//! SQLite) and the built `attestca-rig` binary running `personalise`, `load throughput` and
//! `load factory` with the interface-contract flags (issue 7). Short runs: a smoke test of each
//! mode, not a measurement.

use attestca_testkit as common;

use std::path::{Path, PathBuf};
use std::process::Command;

use common::ServerProcess;
use serde_json::Value;
use sqlx::Row;

struct Dev {
    server: ServerProcess,
    data: PathBuf,
}

impl Dev {
    async fn start(tmp: &Path) -> Self {
        Self::start_with(tmp, &[]).await
    }

    async fn start_with(tmp: &Path, envs: &[(&str, String)]) -> Self {
        let data = tmp.join("data");
        let mut server = ServerProcess::dev_with(&data, &tmp.join("server.log"), envs);
        server.wait_ready().await;
        Self { server, data }
    }

    /// The connection flags of the interface contract.
    fn connection(&self) -> Vec<String> {
        let pki = self.data.join("pki");
        [
            "--server".to_owned(),
            self.server.est_url(),
            "--trust".into(),
            pki.join("ca-chain.pem").display().to_string(),
            "--rig-cert".into(),
            pki.join("rig.crt").display().to_string(),
            "--rig-key".into(),
            pki.join("rig.key").display().to_string(),
            "--vendor".into(),
            self.data.join("vendor").display().to_string(),
        ]
        .into()
    }

    /// Serials of the device certificates in the dev server's SQLite database.
    async fn stored_serials(&self) -> Vec<String> {
        let db = sqlx::SqlitePool::connect(&format!(
            "sqlite://{}?mode=ro",
            self.data.join("attestca.db").display()
        ))
        .await
        .expect("open the SQLite file");
        let rows = sqlx::query("SELECT serial FROM certificates WHERE profile <> 'ocsp-responder'")
            .fetch_all(&db)
            .await
            .expect("certificate rows");
        rows.iter().map(|r| r.get::<String, _>("serial")).collect()
    }
}

/// Runs attestca-rig; returns (success, stdout, stderr).
fn rig(args: &[String]) -> (bool, String, String) {
    let out = Command::new(common::rig_bin())
        .args(args)
        .output()
        .expect("run attestca-rig");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// `command…`, then the connection flags, then `rest…`.
fn args(command: &[&str], connection: &[String], rest: &[&str]) -> Vec<String> {
    let mut out: Vec<String> = command.iter().map(|s| (*s).to_owned()).collect();
    out.extend(connection.iter().cloned());
    out.extend(rest.iter().map(|s| (*s).to_owned()));
    out
}

fn read_json(path: &Path) -> Value {
    serde_json::from_slice(&std::fs::read(path).expect("JSON report written"))
        .expect("the report is JSON")
}

/// `p50 <= p99 <= p999 <= max`, all numbers, p50 > 0.
fn assert_percentiles(p: &Value, what: &str) {
    let get = |k: &str| {
        p[k].as_f64()
            .unwrap_or_else(|| panic!("{what}.{k} is not a number: {p}"))
    };
    let (p50, p99, p999, max) = (get("p50"), get("p99"), get("p999"), get("max"));
    assert!(
        0.0 < p50 && p50 <= p99 && p99 <= p999 && p999 <= max,
        "{what}: {p}"
    );
}

/// The chart is one well-formed SVG document with bars and latency lines.
fn assert_svg(path: &Path) {
    let text = std::fs::read_to_string(path).expect("SVG written");
    assert!(text.starts_with("<svg"), "{}", &text[..text.len().min(200)]);
    let doc = roxmltree::Document::parse(&text).expect("the SVG is well-formed XML");
    assert_eq!(doc.root_element().tag_name().name(), "svg");
    let bars = doc
        .descendants()
        .filter(|n| n.tag_name().name() == "rect" && n.children().any(|c| c.has_tag_name("title")))
        .count();
    assert!(bars > 0, "no throughput bars in {}", path.display());
    let points = doc
        .descendants()
        .filter(|n| n.tag_name().name() == "polyline")
        .filter_map(|n| n.attribute("points"))
        .map(|p| p.split_whitespace().count())
        .max()
        .unwrap_or(0);
    assert!(points > 0, "no latency data in {}", path.display());
}

#[tokio::test]
async fn personalise_runs_one_board_and_logs_it() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let dev = Dev::start(tmp.path()).await;
    let log = tmp.path().join("manufacturing.jsonl");
    let connection = dev.connection();
    let (ok, stdout, stderr) = rig(&args(
        &["personalise"],
        &connection,
        &[
            "--keygen-ms",
            "5..20",
            "--takt",
            "2",
            "--unit-serial",
            "unit-0001",
            "--log",
            &log.display().to_string(),
        ],
    ));
    assert!(ok, "personalise failed:\n{stdout}\n{stderr}");
    for step in [
        "power_on",
        "nonce",
        "keygen",
        "attestation",
        "csr",
        "enroll",
        "import",
        "proof_of_possession",
        "end_of_line",
        "takt",
        "PASS",
    ] {
        assert!(stdout.contains(step), "no {step} in:\n{stdout}");
    }

    let text = std::fs::read_to_string(&log).expect("manufacturing log written");
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 1, "one JSON line per board: {text}");
    let record: Value = serde_json::from_str(lines[0]).expect("the record is JSON");
    assert_eq!(record["unit_serial"], "unit-0001");
    assert_eq!(record["outcome"], "pass");
    assert!(
        record["se_id"].as_str().is_some_and(|s| s.len() == 16),
        "{record}"
    );
    let serial = record["certificate_serial"]
        .as_str()
        .expect("certificate serial recorded")
        .to_owned();
    let steps = record["steps_ms"].as_object().expect("per-step times");
    assert_eq!(steps.len(), 9, "{record}");
    assert!(
        steps["keygen"].as_f64().is_some_and(|ms| ms >= 5.0),
        "{record}"
    );
    assert!(record["total_ms"].as_f64().is_some_and(|t| t > 0.0));
    assert_eq!(record["takt_ms"], 2000.0);
    assert!(record["takt_met"].is_boolean());
    assert_eq!(
        dev.stored_serials().await,
        vec![serial],
        "the CA stored the certificate"
    );
}

#[tokio::test]
async fn load_modes_write_contract_reports_and_charts() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let dev = Dev::start(tmp.path()).await;
    let connection = dev.connection();
    let path = |name: &str| tmp.path().join(name).display().to_string();

    // Contract 1: throughput (with the CA's and the machine's CPU over the window).
    let ca = format!("ca={}", dev.server.pid());
    let (ok, stdout, stderr) = rig(&args(
        &["load", "throughput"],
        &connection,
        &[
            "--concurrency",
            "4",
            "--duration",
            "3",
            "--prepare",
            "800",
            "--json",
            &path("throughput.json"),
            "--svg",
            &path("throughput.svg"),
            "--account",
            &ca,
            "--account",
            "nothing=comm:no-such-command",
        ],
    ));
    assert!(ok, "load throughput failed:\n{stdout}\n{stderr}");
    assert!(stdout.contains("per second"), "no summary:\n{stdout}");
    assert!(
        stderr.contains("enrollments:"),
        "no progress lines:\n{stderr}"
    );
    let report = read_json(tmp.path().join("throughput.json").as_path());
    let completed = report["completed"].as_u64().expect("completed: int");
    assert!(completed > 0, "{report}");
    assert_eq!(report["failed"].as_u64(), Some(0), "{report}");
    let per_second = report["per_second"].as_f64().expect("per_second: float");
    assert!(per_second > 0.0, "{report}");
    assert_percentiles(&report["latency_ms"], "latency_ms");
    let ca_ms = report["processes"]["ca"]["ms_per_operation"]
        .as_f64()
        .expect("processes.ca.ms_per_operation");
    assert!(ca_ms > 0.0 && ca_ms < 1000.0, "{report}");
    assert_eq!(
        report["processes"]["nothing"]["cpu_seconds"].as_f64(),
        Some(0.0),
        "{report}"
    );
    let busy = report["machine"]["busy_share"]
        .as_f64()
        .expect("machine.busy_share");
    assert!(busy > 0.0 && busy <= 1.0, "{report}");
    assert_svg(&tmp.path().join("throughput.svg"));

    // Contract 2: factory.
    let log = path("factory.jsonl");
    let metrics = format!("http://{}/metrics", dev.server.http);
    let (ok, stdout, stderr) = rig(&args(
        &["load", "factory"],
        &connection,
        &[
            "--stations",
            "4",
            "--takt",
            "1",
            "--duration",
            "4",
            "--keygen-ms",
            "20..200",
            "--log",
            &log,
            "--metrics",
            &metrics,
            "--json",
            &path("factory.json"),
            "--svg",
            &path("factory.svg"),
        ],
    ));
    assert!(ok, "load factory failed:\n{stdout}\n{stderr}");
    assert!(stdout.contains("verdict:"), "no takt verdict:\n{stdout}");
    let report = read_json(tmp.path().join("factory.json").as_path());
    let boards = report["boards"].as_u64().expect("boards: int");
    assert!(boards >= 4, "{report}");
    assert_eq!(report["failed"].as_u64(), Some(0), "{report}");
    let fraction = report["takt_met_fraction"]
        .as_f64()
        .expect("takt_met_fraction: float");
    assert!((0.0..=1.0).contains(&fraction), "{report}");
    assert_percentiles(&report["ca_latency_ms"], "ca_latency_ms");
    for step in [
        "nonce",
        "keygen",
        "enroll",
        "proof_of_possession",
        "end_of_line",
    ] {
        assert_percentiles(&report["steps_ms"][step], step);
    }
    assert_svg(&tmp.path().join("factory.svg"));
    // --metrics: the CA's own histogram saw every board's enrollment.
    assert_eq!(
        report["ca_side"]["count"].as_u64(),
        Some(boards),
        "{report}"
    );
    assert!(
        report["ca_side"]["p99_at_most"].as_f64().is_some(),
        "{report}"
    );

    // Every enrollment is a certificate in the CA's database, and every board's is logged.
    let stored = dev.stored_serials().await;
    assert!(
        stored.len() as u64 >= completed + boards,
        "{} stored < {completed} + {boards}",
        stored.len()
    );
    let logged: Vec<Value> = std::fs::read_to_string(&log)
        .expect("manufacturing log")
        .lines()
        .map(|l| serde_json::from_str(l).expect("JSON line"))
        .collect();
    assert_eq!(logged.len() as u64, boards);
    for record in &logged {
        let serial = record["certificate_serial"].as_str().expect("serial");
        assert!(stored.iter().any(|s| s == serial), "{serial} not stored");
    }
}

#[tokio::test]
async fn unreachable_server_is_a_clear_error() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let data = tmp.path().join("data");
    // A dev PKI to point at, with no server behind the address.
    let mut server = ServerProcess::dev(&data, &tmp.path().join("server.log"));
    server.wait_ready().await;
    server.stop();
    let dev = Dev { server, data };
    let (ok, stdout, stderr) = rig(&args(
        &["load", "throughput"],
        &dev.connection(),
        &["--concurrency", "2", "--duration", "1"],
    ));
    assert!(!ok, "succeeded against nothing:\n{stdout}");
    assert!(
        stderr.contains("attestca-rig:") && stderr.contains(&dev.server.est_url()),
        "{stderr}"
    );
}

#[tokio::test]
async fn renew_and_ocsp_modes_smoke() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let dev = Dev::start(tmp.path()).await;
    let connection = dev.connection();
    let path = |name: &str| tmp.path().join(name).display().to_string();

    let (ok, stdout, stderr) = rig(&args(
        &["load", "renew"],
        &connection,
        &[
            "--devices",
            "12",
            "--concurrency",
            "4",
            "--duration",
            "20",
            "--json",
            &path("renew.json"),
            "--svg",
            &path("renew.svg"),
        ],
    ));
    assert!(ok, "load renew failed:\n{stdout}\n{stderr}");
    let report = read_json(tmp.path().join("renew.json").as_path());
    assert_eq!(report["completed"].as_u64(), Some(12), "{report}");
    assert_eq!(report["failed"].as_u64(), Some(0), "{report}");
    assert_percentiles(&report["latency_ms"], "latency_ms");
    assert_svg(&tmp.path().join("renew.svg"));
    // 12 enrolled + 12 renewed.
    assert!(dev.stored_serials().await.len() >= 24);

    let ocsp_url = format!("http://{}/ocsp", dev.server.http);
    let (ok, stdout, stderr) = rig(&args(
        &["load", "ocsp"],
        &connection,
        &[
            "--ocsp-url",
            &ocsp_url,
            "--good",
            "4",
            "--revoked",
            "2",
            "--unknown",
            "2",
            "--concurrency",
            "4",
            "--duration",
            "2",
            "--json",
            &path("ocsp.json"),
            "--svg",
            &path("ocsp.svg"),
        ],
    ));
    assert!(ok, "load ocsp failed:\n{stdout}\n{stderr}");
    let report = read_json(tmp.path().join("ocsp.json").as_path());
    assert!(
        report["completed"].as_u64().is_some_and(|n| n > 0),
        "{report}"
    );
    assert_eq!(
        report["failed"].as_u64(),
        Some(0),
        "statuses as expected: {report}"
    );
    assert_percentiles(&report["latency_ms"], "latency_ms");
    assert_svg(&tmp.path().join("ocsp.svg"));
}

/// `attestca-rig vendor --out DIR` makes the simulated vendor a configured CA trusts (what
/// `benches/load/pg-softhsm.sh` uses), and refuses to overwrite one.
#[test]
fn vendor_command_creates_a_simulated_vendor_once() {
    let tmp = tempfile::tempdir().expect("temp dir");
    let out = tmp.path().join("vendor");
    let create = [
        "vendor".to_owned(),
        "--out".into(),
        out.display().to_string(),
    ];
    let (ok, stdout, stderr) = rig(&create);
    assert!(ok, "vendor failed: {stderr}");
    assert_eq!(
        stdout.trim(),
        out.join("vendor-root.crt").display().to_string()
    );
    let root = std::fs::read_to_string(out.join("vendor-root.crt")).expect("root PEM");
    assert!(root.starts_with("-----BEGIN CERTIFICATE-----"), "{root}");
    let loaded =
        attestca_sim::secure_element::SimulatedVendor::load(&out).expect("the vendor loads again");
    loaded.manufacture().expect("and manufactures a device");

    let (again, _, stderr) = rig(&create);
    assert!(!again, "a second vendor over the first must be refused");
    assert!(stderr.contains("already holds a vendor"), "{stderr}");
}

/// A throughput window longer than the server's nonce lifetime: the prepared stock is used
/// oldest first and dropped as it ages, enrollments are then prepared inside the window, and
/// no CSR with an expired nonce is sent (a run used to end in `attestation.nonce_expired`
/// refusals that were the client's fault, not the CA's).
#[tokio::test]
async fn throughput_outlasting_the_nonce_lifetime_sends_no_expired_nonce() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let dev = Dev::start_with(
        tmp.path(),
        &[("ATTESTCA_ATTESTATION__NONCE_LIFETIME_SECS", "7".to_owned())],
    )
    .await;
    let json = tmp.path().join("throughput.json");
    let (ok, stdout, stderr) = rig(&args(
        &["load", "throughput"],
        &dev.connection(),
        &[
            "--concurrency",
            "2",
            "--duration",
            "8",
            "--prepare",
            "5000",
            "--json",
            &json.display().to_string(),
        ],
    ));
    assert!(ok, "load throughput failed:\n{stdout}\n{stderr}");
    assert!(stderr.contains("nonces expire"), "no note:\n{stderr}");
    let report = read_json(&json);
    assert_eq!(report["failed"].as_u64(), Some(0), "{report}");
    assert!(report["completed"].as_u64().unwrap_or(0) > 0, "{report}");
    assert!(
        report["prepared_in_window"].as_u64().unwrap_or(0) > 0,
        "the stock outlived its nonces, so some CSRs must have been prepared in the window: {report}"
    );
}
