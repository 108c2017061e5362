//! TPM devices end to end on a real TPM implementation (swtpm, manufactured by swtpm_setup
//! with an EK certificate under a local CA the test owns): the rig's TPM mode against
//! `serve --dev` (EK certificate → credential activation → AK certificate from attestca →
//! TPM2_Certify of a device key → device certificate naming the TPM), and every refusal of
//! attestation-key certification against a configured CA.

use attestca_testkit as common;

use std::path::Path;
use std::process::Command;

use attestca_rig::client::{EstClient, Refused, tls_config};
use attestca_rig::tpm::Tpm;
use common::swtpm::Swtpm;
use common::*;

/// `attestca-rig enroll --tpm` against `serve --dev` in `data_dir`; `(success, output)`.
fn rig_enroll(server: &ServerProcess, data_dir: &Path, out: &Path, tpm: &Swtpm) -> (bool, String) {
    let pki = data_dir.join("pki");
    let output = Command::new(rig_bin())
        .args(["enroll", "--server", &server.est_url(), "--trust"])
        .arg(pki.join("ca-chain.pem"))
        .arg("--rig-cert")
        .arg(pki.join("rig.crt"))
        .arg("--rig-key")
        .arg(pki.join("rig.key"))
        .arg("--out")
        .arg(out)
        .args(["--cn", "tpm-device-1", "--tpm", &tpm.tcti()])
        .output()
        .expect("run attestca-rig");
    (
        output.status.success(),
        format!(
            "{}{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        ),
    )
}

fn read_pem(path: &Path) -> Vec<u8> {
    attestca::pem::read_certificate_ders(path)
        .expect("PEM certificate")
        .remove(0)
}

#[tokio::test(flavor = "multi_thread")]
#[cfg_attr(
    missing_swtpm,
    ignore = "needs swtpm and swtpm_setup (ATTESTCA_TEST_SWTPM); tests/run.sh provides them"
)]
async fn the_whole_line_runs_on_a_real_tpm_against_the_dev_server() {
    let tmp = tempfile::tempdir().expect("temp dir");
    let tpm = Swtpm::start(&tmp.path().join("tpm"));
    let data_dir = tmp.path().join("dev");
    // `serve --dev` trusts the EK roots dropped here (the TPM vendor's; swtpm's local CA).
    let ek_roots = data_dir.join("tpm-ek-roots");
    std::fs::create_dir_all(&ek_roots).expect("dir");
    for root in tpm.ek_roots() {
        std::fs::copy(&root, ek_roots.join(root.file_name().expect("name"))).expect("copy");
    }
    let mut server = ServerProcess::dev(&data_dir, &tmp.path().join("server.log"));
    server.wait_ready().await;

    let out = tmp.path().join("device-1");
    let (ok, output) = rig_enroll(&server, &data_dir, &out, &tpm);
    assert!(ok, "{output}");
    let device = read_pem(&out.join("device.crt"));
    let ak = read_pem(&out.join("attestation-key.crt"));

    // The device certificate names the TPM as the AK certificate does: by its EK certificate.
    let (hw_type, serial) = hardware_module_name(&device).expect("hardwareModuleName");
    assert_eq!(hw_type, "2.23.133.1.2");
    let named = String::from_utf8(serial).expect("text");
    assert!(named.starts_with("swtpm-localca/"), "{named}");
    assert_eq!(
        hardware_module_name(&ak),
        Some(("2.23.133.1.2".to_owned(), named.clone().into_bytes()))
    );
    // openssl agrees: the device certificate chains to the dev CA, the AK certificate is an
    // attestation-key certificate with the TPM's manufacturer, model and version.
    let chain = data_dir.join("pki/ca-chain.pem").display().to_string();
    let (verified, text) = run(
        "openssl",
        &[
            "verify",
            "-CAfile",
            &chain,
            &out.join("device.crt").display().to_string(),
        ],
        &[],
    );
    assert!(verified, "{text}");
    let (_, text) = run(
        "openssl",
        &[
            "x509",
            "-in",
            &out.join("attestation-key.crt").display().to_string(),
            "-noout",
            "-ext",
            "extendedKeyUsage,subjectAltName",
        ],
        &[],
    );
    assert!(text.contains("2.23.133.8.3"), "{text}");
    assert!(
        text.contains("2.23.133.2.1=id:00001014") && text.contains("2.23.133.2.2=swtpm"),
        "{text}"
    );

    // The operator's offline check agrees with the CA about the CSR the TPM signed.
    let verdict = Command::new(attestca_bin())
        .args(["evidence", "verify", "--dev", "--data-dir"])
        .arg(&data_dir)
        .arg("--csr")
        .arg(out.join("device.csr"))
        .output()
        .expect("run attestca evidence verify");
    let text = String::from_utf8_lossy(&verdict.stdout);
    assert!(verdict.status.success(), "{text}");
    let verdict: serde_json::Value = serde_json::from_str(&text).expect("JSON verdict");
    assert_eq!(verdict["format"], "tpm-certify");
    assert_eq!(verdict["vendor"], "attestca-tpm");
    assert_eq!(
        verdict["device_identity"],
        format!("attestca-tpm:{named}").as_str()
    );
    assert_eq!(verdict["tpm"]["model"], "swtpm");

    // The key never left the TPM: the rig wrote no key file. A second device key on the same
    // TPM gets a new AK certificate (the dev CA allows another AK) naming the same TPM, so the
    // CA sees one device asking for a second key: refused as a clone suspect, as for any
    // device whose profile does not allow reprovisioning.
    assert!(!out.join("device.key").exists());
    let (ok, output) = rig_enroll(&server, &data_dir, &tmp.path().join("device-2"), &tpm);
    assert!(!ok);
    assert!(
        output.contains("attestation.clone_suspected") && output.contains(&named),
        "{output}"
    );

    // Without the TPM vendor's EK root, the CA refuses to certify the AK.
    for root in std::fs::read_dir(&ek_roots).expect("dir").flatten() {
        std::fs::remove_file(root.path()).expect("remove");
    }
    let (ok, output) = rig_enroll(&server, &data_dir, &tmp.path().join("device-3"), &tpm);
    assert!(!ok);
    assert!(output.contains("ak.endorsement_untrusted"), "{output}");
}

/// A configured CA certifying attestation keys of TPMs under `ek_roots`.
async fn attestation_key_ca(
    tmp: &Path,
    ek_roots: &[std::path::PathBuf],
    challenge_lifetime_secs: u64,
    allow_reissue: bool,
) -> ConfiguredCa {
    let roots: Vec<String> = ek_roots
        .iter()
        .map(|p| format!("{:?}", p.display().to_string()))
        .collect();
    ConfiguredCa::start(
        tmp,
        &format!(
            "[attestation_keys]\nenabled = true\nek_root_files = [{}]\n\
             challenge_lifetime_secs = {challenge_lifetime_secs}\nallow_reissue = {allow_reissue}\n\
             [profiles.default]\n",
            roots.join(", ")
        ),
        &[],
    )
    .await
}

fn est_client(ca: &ConfiguredCa) -> EstClient {
    let pki = ca.dir.join("pki");
    let tls = tls_config(
        &pki.join("ca-chain.pem"),
        Some((&pki.join("rig.crt"), &pki.join("rig.key"))),
    )
    .expect("TLS");
    EstClient::new(&ca.server.est_url(), None, tls, None).expect("client")
}

/// The reason code of a refused attestation-key request.
fn refused(result: anyhow::Result<impl std::fmt::Debug>) -> String {
    let error = result.expect_err("must be refused");
    let refused = error.downcast_ref::<Refused>().expect("an HTTP refusal");
    let code = refused
        .message
        .split_once(": ")
        .map(|(_, rest)| rest.split(':').next().unwrap_or_default().to_owned())
        .unwrap_or_default();
    format!("{} {code}", refused.status)
}

#[tokio::test(flavor = "multi_thread")]
#[cfg_attr(
    missing_swtpm,
    ignore = "needs swtpm and swtpm_setup (ATTESTCA_TEST_SWTPM); tests/run.sh provides them"
)]
async fn attestation_key_refusals_on_a_real_tpm() {
    let tmp = tempfile::tempdir().expect("temp dir");
    let swtpm = Swtpm::start(&tmp.path().join("tpm"));
    let ca = attestation_key_ca(&tmp.path().join("a"), &swtpm.ek_roots(), 2, true).await;
    let est = est_client(&ca);
    let mut tpm = Tpm::open(&swtpm.tcti()).expect("TPM");
    let ek = tpm.endorsement_certificate().expect("EK certificate");
    let ak = tpm.create_attestation_key().expect("AK");

    // An AK that is not a restricted signing key: a device key's public area.
    let key = tpm.create_device_key().expect("device key");
    assert_eq!(
        refused(est.attestation_key_challenge(&ek, &key.public_area).await),
        "403 ak.attributes"
    );
    key.flush(&mut tpm);

    // A wrong secret.
    let (blob, secret) = est
        .attestation_key_challenge(&ek, &ak)
        .await
        .expect("challenge");
    assert_eq!(
        refused(est.attestation_key_certificate(&ek, &ak, &[7u8; 32]).await),
        "403 ak.credential_wrong"
    );
    // The TPM's answer is right; answered twice, it is a replay.
    let recovered = tpm.activate_credential(&blob, &secret).expect("activate");
    let (certificate, chain) = est
        .attestation_key_certificate(&ek, &ak, &recovered)
        .await
        .expect("AK certificate");
    assert!(!certificate.is_empty() && !chain.is_empty());
    assert_eq!(
        refused(est.attestation_key_certificate(&ek, &ak, &recovered).await),
        "403 ak.credential_reused"
    );
    // The AK certificate is logged once, as an attestation-key certificate of this TPM.
    let logged = logged_entry(&ca.server, &certificate).await.attestation;
    assert_eq!(
        (logged.operation.as_str(), logged.profile.as_str()),
        ("attestation-key", "attestation-key")
    );
    // Issued after credential activation for an EK that chains to a vendor root: attested,
    // with the EK certificate's hash as the evidence hash.
    assert!(logged.attested);
    assert_eq!(logged.format, "tpm-credential-activation");
    assert_eq!(logged.evidence_sha256.len(), 32);
    let (_, tpm_name) = hardware_module_name(&certificate).expect("hardwareModuleName");
    assert_eq!(
        logged.device_identity.into_bytes(),
        [b"tpm:".as_slice(), &tpm_name].concat()
    );
    // A secret recovered for this AK does not certify another AK of the same TPM.
    let other_ak = tpm.create_attestation_key().expect("AK");
    assert_eq!(
        refused(
            est.attestation_key_certificate(&ek, &other_ak, &recovered)
                .await
        ),
        "403 ak.credential_wrong"
    );
    // A challenge answered after it expired.
    let (blob, secret) = est
        .attestation_key_challenge(&ek, &other_ak)
        .await
        .expect("challenge");
    let recovered = tpm.activate_credential(&blob, &secret).expect("activate");
    tokio::time::sleep(std::time::Duration::from_secs(3)).await;
    assert_eq!(
        refused(
            est.attestation_key_certificate(&ek, &other_ak, &recovered)
                .await
        ),
        "403 ak.credential_expired"
    );
    // Garbage instead of an EK certificate.
    assert_eq!(
        refused(est.attestation_key_challenge(b"not an EK", &other_ak).await),
        "400 ak.endorsement_malformed"
    );
    drop(tpm);

    // A CA that gives one AK certificate per TPM, and trusts another vendor only.
    let ca = attestation_key_ca(&tmp.path().join("b"), &swtpm.ek_roots(), 300, false).await;
    let est = est_client(&ca);
    let mut tpm = Tpm::open(&swtpm.tcti()).expect("TPM");
    let ak = tpm.create_attestation_key().expect("AK");
    let (blob, secret) = est
        .attestation_key_challenge(&ek, &ak)
        .await
        .expect("challenge");
    let recovered = tpm.activate_credential(&blob, &secret).expect("activate");
    est.attestation_key_certificate(&ek, &ak, &recovered)
        .await
        .expect("the first AK certificate");
    let second = tpm.create_attestation_key().expect("AK");
    let (blob, secret) = est
        .attestation_key_challenge(&ek, &second)
        .await
        .expect("challenge");
    let recovered = tpm.activate_credential(&blob, &secret).expect("activate");
    assert_eq!(
        refused(
            est.attestation_key_certificate(&ek, &second, &recovered)
                .await
        ),
        "403 ak.already_certified"
    );
    drop(tpm);
    let stranger = Swtpm::start(&tmp.path().join("other-vendor"));
    let mut tpm = Tpm::open(&stranger.tcti()).expect("TPM");
    let foreign_ek = tpm.endorsement_certificate().expect("EK certificate");
    let ak = tpm.create_attestation_key().expect("AK");
    assert_eq!(
        refused(est.attestation_key_challenge(&foreign_ek, &ak).await),
        "403 ak.endorsement_untrusted"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn attestation_key_requests_are_checked_on_the_wire() {
    let tmp = tempfile::tempdir().expect("temp dir");
    // A CA that does not certify attestation keys says so.
    let plain = ConfiguredCa::start(&tmp.path().join("plain"), "[profiles.default]\n", &[]).await;
    let post = |ca: &ConfiguredCa, content_type: &str, body: &str| {
        let request = ca
            .rig
            .post(format!(
                "{}/attestation-key/v1/challenge",
                ca.server.est_url()
            ))
            .header("content-type", content_type)
            .body(body.to_owned());
        async move {
            let response = request.send().await.expect("send");
            let status = response.status().as_u16();
            (status, response.text().await.expect("body"))
        }
    };
    let well_formed = r#"{"ek_certificate":"AA==","ak_public":"AA=="}"#;
    let (status, text) = post(&plain, "application/json", well_formed).await;
    assert_eq!(
        (status, text.split(':').next()),
        (404, Some("ak.disabled")),
        "{text}"
    );

    let ca = attestation_key_ca(&tmp.path().join("ak"), &[], 300, false).await;
    for (content_type, body, expected) in [
        (
            "application/pkcs10",
            well_formed,
            (415, "request.content_type"),
        ),
        ("application/json", "{", (400, "ak.request")),
        (
            "application/json",
            r#"{"ek_certificate":"AA=="}"#,
            (400, "ak.request"),
        ),
        (
            "application/json",
            r#"{"ek_certificate":"AA==","ak_public":"AA==","extra":1}"#,
            (400, "ak.request"),
        ),
        (
            "application/json",
            r#"{"ek_certificate":"!!","ak_public":"AA=="}"#,
            (400, "ak.request"),
        ),
        (
            "application/json",
            well_formed,
            (400, "ak.endorsement_malformed"),
        ),
    ] {
        let (status, text) = post(&ca, content_type, body).await;
        assert_eq!(
            (status, text.split(':').next().unwrap_or_default()),
            expected,
            "{body}: {text}"
        );
    }
    // Anonymous: the rig must authenticate.
    let anonymous = https_client(&ca.dir.join("pki/ca-chain.pem"), None);
    let response = anonymous
        .post(format!(
            "{}/attestation-key/v1/challenge",
            ca.server.est_url()
        ))
        .header("content-type", "application/json")
        .body(well_formed)
        .send()
        .await
        .expect("send");
    assert_eq!(response.status().as_u16(), 401);
    // Refusals are events, like enrollment's.
    let db = sqlx::SqlitePool::connect(&format!("sqlite://{}?mode=ro", ca.db))
        .await
        .expect("db");
    let reasons: Vec<String> = sqlx::query_scalar(
        "SELECT reason FROM enrollment_events WHERE operation = 'attestation-key' ORDER BY id",
    )
    .fetch_all(&db)
    .await
    .expect("events");
    assert!(
        reasons.iter().any(|r| r == "ak.endorsement_malformed")
            && reasons.iter().any(|r| r == "auth.missing"),
        "{reasons:?}"
    );
}
