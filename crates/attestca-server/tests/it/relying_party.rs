//! `attestca verify-device` as a relying party runs it, against a real `serve --dev` over real
//! HTTP: a good attested device passes every check; a revoked one fails revocation (OCSP and
//! CRL); one signed with the CA's key outside the CA (the compromised-host case) chains but is
//! not in the log; a `lab` certificate is in the log with a record that says it was not
//! attested; a wrong chain or root fails the chain; a tampered tile or a lying index fails the
//! inclusion proof. The operator API's `/certificates/{serial}/attestation` is checked with an
//! RFC 9162 verifier written here, and the Python example of docs/relying-parties.md is run.

use attestca_testkit as common;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use common::*;
use sha2::{Digest, Sha256};

struct Fixture {
    server: ServerProcess,
    tmp: tempfile::TempDir,
    data: PathBuf,
}

impl Fixture {
    fn log_url(&self) -> String {
        format!("http://{}/log/issuing-ca/", self.server.http)
    }

    fn ocsp_url(&self) -> String {
        format!("http://{}/ocsp", self.server.http)
    }

    fn crl_url(&self) -> String {
        format!("http://{}/crl/issuing-ca.crl", self.server.http)
    }

    /// `attestca verify-device` with the dev installation's roots and log key, plus `extra`:
    /// (exit status, the JSON lines by check name).
    fn verify(
        &self,
        cert: &Path,
        extra: &[&str],
    ) -> (Option<i32>, serde_json::Map<String, serde_json::Value>) {
        let log_url = self.log_url();
        let cert = cert.display().to_string();
        let data = self.data.display().to_string();
        let mut args = vec![
            "verify-device",
            "--cert",
            &cert,
            "--log",
            &log_url,
            "--dev",
            "--data-dir",
            &data,
        ];
        args.extend_from_slice(extra);
        let out = std::process::Command::new(attestca_bin())
            .args(&args)
            .output()
            .expect("attestca verify-device");
        let stdout = String::from_utf8_lossy(&out.stdout);
        let mut checks = serde_json::Map::new();
        for line in stdout.lines() {
            let value: serde_json::Value = serde_json::from_str(line)
                .unwrap_or_else(|e| panic!("not a JSON line ({e}): {line}"));
            let name = value["check"].as_str().expect("check name").to_owned();
            checks.insert(name, value);
        }
        assert!(
            out.status.code() == Some(2) || !checks.is_empty(),
            "no checks printed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        (out.status.code(), checks)
    }

    fn db(&self) -> PathBuf {
        self.data.join("attestca.db")
    }

    /// Waits until nothing is pending integration.
    async fn integrated(&self) {
        let db = sqlx::SqlitePool::connect(&format!("sqlite://{}", self.db().display()))
            .await
            .expect("sqlite");
        wait_log_integrated(&db, Duration::from_secs(3)).await;
    }
}

fn ok(checks: &serde_json::Map<String, serde_json::Value>, check: &str) -> bool {
    checks[check]["ok"] == serde_json::Value::Bool(true)
}

fn reason(checks: &serde_json::Map<String, serde_json::Value>, check: &str) -> String {
    checks[check]["reason"]
        .as_str()
        .unwrap_or_default()
        .to_owned()
}

async fn fixture() -> (Fixture, PathBuf, PathBuf) {
    let tmp = tempfile::tempdir().expect("temp dir");
    let data = tmp.path().join("data");
    let mut server = ServerProcess::dev(&data, &tmp.path().join("server.log"));
    server.wait_ready().await;
    let fixture = Fixture { server, tmp, data };
    // An attested device, enrolled by the rig with the simulated secure element.
    let device = fixture.tmp.path().join("device");
    rig_enroll(&fixture.server, &fixture.data, &device, "rp-device-1");
    // A `lab` certificate: any CSR, no evidence.
    let pki = fixture.data.join("pki");
    let rig = https_client(
        &pki.join("ca-chain.pem"),
        Some((&pki.join("rig.crt"), &pki.join("rig.key"))),
    );
    let lab_der = enroll(
        &rig,
        &format!(
            "{}/.well-known/est/lab/simpleenroll",
            fixture.server.est_url()
        ),
        "rp-lab-1",
    )
    .await;
    let lab = fixture.tmp.path().join("lab.crt");
    write_pem(&lab, &lab_der);
    fixture.integrated().await;
    (fixture, device.join("device.crt"), lab)
}

/// Good, unattested, revoked (OCSP and CRL), wrong chain, wrong root.
#[tokio::test(flavor = "multi_thread")]
async fn verify_device_tells_good_unattested_revoked_and_wrong_chain_apart() {
    let (f, device, lab) = fixture().await;
    let ocsp = f.ocsp_url();
    let crl = f.crl_url();

    // Good: every check passes, and the record names the evidence.
    let (code, checks) = f.verify(&device, &["--ocsp", &ocsp]);
    assert_eq!(code, Some(0), "{checks:?}");
    for check in [
        "chain",
        "revocation",
        "checkpoint",
        "inclusion",
        "attestation",
    ] {
        assert!(ok(&checks, check), "{check}: {checks:?}");
    }
    let record = &checks["attestation"]["attestation"];
    assert_eq!(record["attested"], true);
    assert_eq!(record["format"], "x509-chain");
    assert_eq!(record["vendor"], "simulated-se");
    assert_eq!(record["profile"], "default");
    assert_eq!(record["operation"], "simpleenroll");
    assert!(
        record["device_identity"]
            .as_str()
            .is_some_and(|d| d.starts_with("simulated-se:")),
        "{record}"
    );
    assert_eq!(record["evidence_sha256"].as_str().map(str::len), Some(64));
    let (code, checks) = f.verify(&device, &["--crl", &crl]);
    assert_eq!(code, Some(0), "{checks:?}");
    assert!(ok(&checks, "revocation"), "{checks:?}");
    // Without --ocsp/--crl the revocation line says it was not checked.
    let (code, checks) = f.verify(&device, &[]);
    assert_eq!(code, Some(0), "{checks:?}");
    assert_eq!(reason(&checks, "revocation"), "revocation.not_checked");

    // Unattested: in the log, and the record says so; accepted only when asked.
    let (code, checks) = f.verify(&lab, &["--ocsp", &ocsp]);
    assert_eq!(code, Some(1), "{checks:?}");
    assert!(
        ok(&checks, "chain") && ok(&checks, "inclusion"),
        "{checks:?}"
    );
    assert_eq!(reason(&checks, "attestation"), "attestation.not_attested");
    assert_eq!(checks["attestation"]["attestation"]["attested"], false);
    assert_eq!(checks["attestation"]["attestation"]["profile"], "lab");
    let (code, _) = f.verify(&lab, &["--allow-unattested"]);
    assert_eq!(code, Some(0));

    // Wrong chain: another CA's root as the trust anchor, or its certificate as the chain.
    let other = f.tmp.path().join("other-root");
    let (made, out) = run(
        "openssl",
        &[
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
            "-nodes",
            "-subj",
            "/CN=attestca Dev Issuing CA",
            "-days",
            "30",
            "-keyout",
            &format!("{}.key", other.display()),
            "-out",
            &format!("{}.pem", other.display()),
        ],
        &[],
    );
    assert!(made, "openssl req: {out}");
    let other_pem = format!("{}.pem", other.display());
    let (code, checks) = f.verify(&device, &["--roots", &other_pem]);
    assert_eq!(code, Some(1));
    assert_eq!(reason(&checks, "chain"), "chain.invalid", "{checks:?}");
    assert!(
        ok(&checks, "inclusion"),
        "the log still holds it: {checks:?}"
    );
    let (code, checks) = f.verify(&device, &["--chain", &other_pem]);
    assert_eq!(code, Some(1));
    assert_eq!(reason(&checks, "chain"), "chain.invalid", "{checks:?}");

    // Revoked: OCSP and the CRL both say so.
    let serial = serial_of(&attestca::pem::read_certificate_ders(&device).expect("device.crt")[0]);
    revoke_with_cli(
        &["--dev", "--data-dir", &f.data.display().to_string()],
        &serial,
        "keyCompromise",
    );
    let (code, checks) = f.verify(&device, &["--ocsp", &ocsp]);
    assert_eq!(code, Some(1));
    assert_eq!(
        reason(&checks, "revocation"),
        "revocation.revoked",
        "{checks:?}"
    );
    assert!(ok(&checks, "attestation"), "{checks:?}");
    let started = Instant::now();
    loop {
        let (code, checks) = f.verify(&device, &["--crl", &crl]);
        if reason(&checks, "revocation") == "revocation.revoked" {
            assert_eq!(code, Some(1));
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "the CRL never listed the revoked certificate: {checks:?}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// A certificate signed with the CA's own key outside the CA (what a compromised CA host or an
/// insider could do): it chains, but the log does not hold it. A lying index and a tampered
/// tile fail the inclusion proof.
#[tokio::test(flavor = "multi_thread")]
async fn verify_device_finds_certificates_outside_the_log_and_a_lying_log() {
    let (f, device, lab) = fixture().await;
    let pki = f.data.join("pki");
    let dir = f.tmp.path();
    let chain = attestca::pem::read_certificate_ders(&pki.join("ca-chain.pem")).expect("chain");
    let issuer = dir.join("issuing-ca.pem");
    write_pem(&issuer, &chain[0]);
    let ext = dir.join("ext.cnf");
    std::fs::write(
        &ext,
        "basicConstraints=critical,CA:FALSE\nkeyUsage=critical,digitalSignature\nextendedKeyUsage=clientAuth\n",
    )
    .expect("ext");
    let p = |name: &str| dir.join(name).display().to_string();
    let (made, out) = run(
        "openssl",
        &[
            "req",
            "-new",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
            "-nodes",
            "-subj",
            "/CN=rogue-device",
            "-keyout",
            &p("rogue.key"),
            "-out",
            &p("rogue.csr"),
        ],
        &[],
    );
    assert!(made, "openssl req: {out}");
    let (made, out) = run(
        "openssl",
        &[
            "x509",
            "-req",
            "-in",
            &p("rogue.csr"),
            "-CA",
            &issuer.display().to_string(),
            "-CAkey",
            &pki.join("issuing-ca.key").display().to_string(),
            "-set_serial",
            "0x01aabbccddeeff00112233445566778899aabbcc",
            "-days",
            "30",
            "-extfile",
            &ext.display().to_string(),
            "-out",
            &p("rogue.crt"),
        ],
        &[],
    );
    assert!(made, "openssl x509: {out}");
    let (code, checks) = f.verify(&dir.join("rogue.crt"), &[]);
    assert_eq!(code, Some(1), "{checks:?}");
    assert!(ok(&checks, "chain"), "signed by the CA's key: {checks:?}");
    assert!(ok(&checks, "checkpoint"), "{checks:?}");
    assert_eq!(reason(&checks, "inclusion"), "log.not_in_log", "{checks:?}");
    assert!(!checks.contains_key("attestation"), "{checks:?}");

    let db = sqlx::SqlitePool::connect(&format!("sqlite://{}", f.db().display()))
        .await
        .expect("sqlite");
    // A lying index: the device's serial pointed at the lab certificate's entry.
    let serial_of_file =
        |path: &Path| serial_of(&attestca::pem::read_certificate_ders(path).expect("cert")[0]);
    let (device_serial, lab_serial) = (serial_of_file(&device), serial_of_file(&lab));
    let lab_index: i64 = sqlx::query_scalar("SELECT idx FROM log_leaves WHERE serial = ?")
        .bind(&lab_serial)
        .fetch_one(&db)
        .await
        .expect("lab index");
    let device_index: i64 = sqlx::query_scalar("SELECT idx FROM log_leaves WHERE serial = ?")
        .bind(&device_serial)
        .fetch_one(&db)
        .await
        .expect("device index");
    let set_index = |serial: String, index: i64| {
        let db = db.clone();
        async move {
            sqlx::query("UPDATE log_leaves SET idx = ? WHERE serial = ?")
                .bind(index)
                .bind(serial)
                .execute(&db)
                .await
                .expect("update");
        }
    };
    set_index(device_serial.clone(), -1).await;
    set_index(lab_serial.clone(), device_index).await;
    set_index(device_serial.clone(), lab_index).await;
    let (code, checks) = f.verify(&device, &[]);
    assert_eq!(code, Some(1));
    assert_eq!(
        reason(&checks, "inclusion"),
        "log.inclusion_failed",
        "{checks:?}"
    );
    assert!(
        checks["inclusion"]["detail"]
            .as_str()
            .is_some_and(|d| d.contains("another certificate")),
        "{checks:?}"
    );
    set_index(lab_serial, -2).await;
    set_index(device_serial, device_index).await;
    let (code, checks) = f.verify(&device, &[]);
    assert_eq!(code, Some(0), "restored: {checks:?}");

    // A tampered level-0 tile: the proof no longer reaches the signed root.
    let tile: Vec<u8> =
        sqlx::query_scalar("SELECT data FROM log_tiles WHERE level = 0 AND idx = 0")
            .fetch_one(&db)
            .await
            .expect("tile");
    let mut tampered = tile.clone();
    for byte in tampered.iter_mut() {
        *byte ^= 0x55;
    }
    sqlx::query("UPDATE log_tiles SET data = ? WHERE level = 0 AND idx = 0")
        .bind(&tampered)
        .execute(&db)
        .await
        .expect("tamper");
    let (code, checks) = f.verify(&device, &[]);
    assert_eq!(code, Some(1));
    assert_eq!(
        reason(&checks, "inclusion"),
        "log.inclusion_failed",
        "{checks:?}"
    );
}

/// RFC 9162 §2.1.3.2, written here from the RFC.
fn verify_inclusion(
    index: u64,
    size: u64,
    leaf: [u8; 32],
    proof: &[[u8; 32]],
    root: [u8; 32],
) -> bool {
    if index >= size {
        return false;
    }
    let (mut f_n, mut s_n) = (index, size - 1);
    let mut r = leaf;
    for p in proof {
        if s_n == 0 {
            return false;
        }
        let mut h = Sha256::new();
        h.update([1u8]);
        if f_n & 1 == 1 || f_n == s_n {
            h.update(p);
            h.update(r);
            r = h.finalize().into();
            if f_n & 1 == 0 {
                while f_n & 1 == 0 && f_n != 0 {
                    f_n >>= 1;
                    s_n >>= 1;
                }
            }
        } else {
            h.update(r);
            h.update(p);
            r = h.finalize().into();
        }
        f_n >>= 1;
        s_n >>= 1;
    }
    s_n == 0 && r == root
}

/// The operator API's attestation answer: the record, and an inclusion proof that verifies
/// under the checkpoint it carries; 404 `log.not_logged` for a certificate outside the log is
/// covered by the public index (`log.not_logged`) and `certificate.not_found` here.
#[tokio::test(flavor = "multi_thread")]
async fn operator_api_attestation_proves_inclusion_and_the_python_example_agrees() {
    let (f, device, _lab) = fixture().await;
    let pki = f.data.join("pki");
    let operator = https_client(
        &pki.join("ca-chain.pem"),
        Some((&pki.join("operator.crt"), &pki.join("operator.key"))),
    );
    let serial = serial_of(&attestca::pem::read_certificate_ders(&device).expect("cert")[0]);
    let url = format!(
        "{}/api/v1/certificates/{serial}/attestation",
        f.server.est_url()
    );
    let response = operator.get(&url).send().await.expect("attestation");
    assert_eq!(response.status(), 200);
    let body: serde_json::Value =
        serde_json::from_slice(&response.bytes().await.expect("body")).expect("json");
    let b64 = |v: &serde_json::Value| {
        STANDARD
            .decode(v.as_str().expect("base64"))
            .expect("base64")
    };
    let entry = b64(&body["entry"]);
    let mut leaf = Sha256::new();
    leaf.update([0u8]);
    leaf.update(&entry);
    let leaf: [u8; 32] = leaf.finalize().into();
    let proof: Vec<[u8; 32]> = body["inclusion_proof"]
        .as_array()
        .expect("proof")
        .iter()
        .map(|h| b64(h).try_into().expect("32 octets"))
        .collect();
    let root: [u8; 32] = b64(&body["root"]).try_into().expect("root");
    let (index, size) = (
        body["index"].as_u64().expect("index"),
        body["tree_size"].as_u64().expect("size"),
    );
    assert!(verify_inclusion(index, size, leaf, &proof, root), "{body}");
    let mut wrong = leaf;
    wrong[0] ^= 1;
    assert!(!verify_inclusion(index, size, wrong, &proof, root));
    let checkpoint = body["checkpoint"].as_str().expect("checkpoint");
    assert!(
        checkpoint.starts_with(&format!(
            "issuing-ca\n{size}\n{}\n",
            body["root"].as_str().expect("root")
        )),
        "{checkpoint}"
    );
    assert_eq!(body["attestation"]["attested"], true);
    assert_eq!(body["attestation"]["vendor"], "simulated-se");
    // The entry holds the certificate (docs/transparency.md: version, time, certificate).
    let der = attestca::pem::read_certificate_ders(&device).expect("cert")[0].clone();
    let len = usize::from(u16::from_be_bytes([entry[9], entry[10]]));
    assert_eq!(entry[11..11 + len], der[..]);

    let missing = operator
        .get(format!(
            "{}/api/v1/certificates/01ff/attestation",
            f.server.est_url()
        ))
        .send()
        .await
        .expect("missing");
    assert_eq!(missing.status(), 404);
    let missing: serde_json::Value =
        serde_json::from_slice(&missing.bytes().await.expect("body")).expect("json");
    assert_eq!(missing["error"]["code"], "certificate.not_found");
    let anonymous = https_client(&pki.join("ca-chain.pem"), None)
        .get(&url)
        .send()
        .await
        .expect("anonymous");
    assert_eq!(anonymous.status(), 401);

    // The Python example of docs/relying-parties.md, run as written.
    let pkilint = require("pkilint", "ATTESTCA_TEST_PKILINT");
    let python = Path::new(&pkilint)
        .parent()
        .expect("venv bin")
        .join("python");
    let doc = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../../docs/relying-parties.md"),
    )
    .expect("docs/relying-parties.md");
    let script = doc
        .split("```python\n")
        .nth(1)
        .and_then(|rest| rest.split("\n```").next())
        .expect("a python block");
    let script_path = f.tmp.path().join("verify_device.py");
    std::fs::write(&script_path, script).expect("script");
    let run_example = || {
        run(
            &python.display().to_string(),
            &[
                &script_path.display().to_string(),
                &device.display().to_string(),
                &pki.join("ca-chain.pem").display().to_string(),
                &f.log_url(),
                &pki.join("log.vkey").display().to_string(),
                &f.ocsp_url(),
            ],
            &[],
        )
    };
    let (ran, out) = run_example();
    assert!(ran, "the Python example fails on a good device:\n{out}");
    for check in [
        "chain",
        "revocation",
        "checkpoint",
        "inclusion",
        "attestation",
    ] {
        assert!(
            out.contains(&format!("\"check\": \"{check}\", \"ok\": true")),
            "{check}:\n{out}"
        );
    }
    assert!(
        out.contains(body["attestation"]["device_identity"].as_str().expect("id")),
        "{out}"
    );
    // And it refuses the lab certificate's neighbour: a tampered tile.
    let db = sqlx::SqlitePool::connect(&format!("sqlite://{}", f.db().display()))
        .await
        .expect("sqlite");
    sqlx::query("UPDATE log_tiles SET data = zeroblob(length(data)) WHERE level = 0 AND idx = 0")
        .execute(&db)
        .await
        .expect("tamper");
    let (ran, out) = run_example();
    assert!(!ran, "the Python example accepts a tampered log:\n{out}");
    assert!(
        out.contains("\"check\": \"inclusion\", \"ok\": false"),
        "{out}"
    );
}
