//! The IETF TPM2_Certify sample CSRs (../shared/vectors/tpm) through the running CA.
//!
//! `tcgAttestTpmCertify-original.csr.pem` is the sample as its authors signed it: with its AK
//! root trusted, its nonce (00ff55aa) issued to the rig and the verification clock pinned
//! inside its certificates' validity, it enrolls end to end, and the certificate names the TPM
//! in hardwareModuleName. `tcgAttestTpmCertify.csr.pem` is the same request published later
//! with one byte edited after signing: it is refused for its CSR signature before any trust
//! decision (openssl agrees), and its nonce is not spent.

use attestca_testkit as common;

use std::path::Path;

use common::*;
use der::{Decode, Encode};
use x509_cert::request::CertReq;

/// 2024-11-01T00:00:00Z, inside the sample certificates' validity.
const PINNED: u64 = 1_730_419_200;
/// The sample's TPMS_ATTEST extraData.
const SAMPLE_NONCE: [u8; 4] = [0x00, 0xff, 0x55, 0xaa];

/// The sample as its authors signed it.
const ORIGINAL: &str = "tpm/tcgAttestTpmCertify-original.csr.pem";
/// The same request, edited after signing.
const EDITED: &str = "tpm/tcgAttestTpmCertify.csr.pem";

fn sample_csr(vectors: &Path, file: &str) -> Vec<u8> {
    let pem = std::fs::read_to_string(vectors.join(file)).expect("sample");
    pem_rfc7468::decode_vec(pem.trim().as_bytes())
        .expect("PEM")
        .1
}

/// Writes the sample bundle's self-signed root (the AK-CA test root) as PEM.
fn write_sample_root(csr: &[u8], out: &Path) {
    let request = CertReq::from_der(csr).expect("CSR");
    let evidence = attestca::attestation::bundle::from_csr(&request)
        .expect("bundle")
        .expect("evidence");
    let root = evidence
        .certificates
        .iter()
        .find(|c| c.tbs_certificate().subject() == c.tbs_certificate().issuer())
        .expect("a self-signed root in the bundle");
    attestca::pem::write_certificates(out, &[&root.to_der().expect("der")]).expect("write root");
}

fn config(with_vendor: bool) -> String {
    let vendor = if with_vendor {
        "[[attestation.vendors]]\nname = \"tpm-test\"\nroots = [\"tpm-root.pem\"]\n\
         formats = [\"tpm-certify\"]\nreader = \"tpm\"\nhardware_type = \"2.23.133.1.2\"\n"
    } else {
        ""
    };
    format!(
        "[attestation]\nverification_time = {PINNED}\n{vendor}\n\
         [profiles.default]\nattestation_required = true\ncn_pattern = \"test-key[0-9]+\"\n\
         key_algorithms = [\"rsa\", \"p256\"]\n"
    )
}

/// The sample's nonce, issued to the rig the tests enroll as.
const NONCE_OF_RIG_A: &str = "INSERT INTO nonces (nonce, requester, issued_at, expires_at) \
     VALUES ($1, 'tls:rig-a', 0, 9999999999)";
/// The sample's nonce, issued to another rig.
const NONCE_OF_RIG_B: &str = "INSERT INTO nonces (nonce, requester, issued_at, expires_at) \
     VALUES ($1, 'tls:rig-b', 0, 9999999999)";

/// A CA for one of the samples: `file`'s CSR, its AK root trusted or not, and the sample's
/// nonce recorded by `nonce` (the sample fixes the nonce, so the test records it directly).
async fn ca_for(
    tmp: &Path,
    file: &str,
    trust_root: bool,
    nonce: &'static str,
) -> (ConfiguredCa, Vec<u8>) {
    let csr = sample_csr(&vectors(), file);
    std::fs::create_dir_all(tmp.join("ca")).expect("dir");
    if trust_root {
        write_sample_root(&csr, &tmp.join("ca/tpm-root.pem"));
    }
    let ca = ConfiguredCa::start(tmp, &config(trust_root), &[]).await;
    ca.sql(nonce, &SAMPLE_NONCE).await;
    (ca, csr)
}

#[tokio::test(flavor = "multi_thread")]
#[cfg_attr(
    missing_vectors,
    ignore = "needs the shared attestation vectors (ATTESTCA_VECTORS_DIR); tests/run.sh provides it"
)]
async fn the_edited_ietf_tpm_sample_is_refused_for_its_csr_signature_with_root_and_nonce_configured()
 {
    let tmp = tempfile::tempdir().expect("temp dir");
    let (ca, csr) = ca_for(tmp.path(), EDITED, true, NONCE_OF_RIG_A).await;
    let (status, text) = ca.post("/simpleenroll", &csr).await;
    assert_eq!(status, 400, "{text}");
    assert!(text.starts_with("csr.bad_signature"), "{text}");
    // openssl agrees that the CSR's self-signature is invalid.
    let der = tmp.path().join("sample.der");
    std::fs::write(&der, &csr).expect("write");
    let (ok, out) = run(
        "openssl",
        &[
            "req",
            "-inform",
            "DER",
            "-in",
            &der.display().to_string(),
            "-verify",
            "-noout",
        ],
        &[],
    );
    assert!(
        !ok || out.contains("verify failure"),
        "openssl now accepts the sample: {out}"
    );
    // The nonce was not spent by a refused request.
    let db = sqlx::SqlitePool::connect(&format!("sqlite://{}?mode=ro", ca.db))
        .await
        .expect("db");
    let spent: Option<i64> = sqlx::query_scalar("SELECT consumed_at FROM nonces WHERE nonce = $1")
        .bind(&SAMPLE_NONCE[..])
        .fetch_one(&db)
        .await
        .expect("nonce row");
    assert_eq!(spent, None);
    db.close().await;
}

#[tokio::test(flavor = "multi_thread")]
#[cfg_attr(
    missing_vectors,
    ignore = "needs the shared attestation vectors (ATTESTCA_VECTORS_DIR); tests/run.sh provides it"
)]
async fn without_the_ak_root_the_tpm_sample_is_refused_for_its_root() {
    let tmp = tempfile::tempdir().expect("temp dir");
    let (ca, csr) = ca_for(tmp.path(), ORIGINAL, false, NONCE_OF_RIG_A).await;
    let (status, text) = ca.post("/simpleenroll", &csr).await;
    assert_eq!(status, 403, "{text}");
    assert!(text.starts_with("attestation.untrusted_root"), "{text}");
}

#[tokio::test(flavor = "multi_thread")]
#[cfg_attr(
    missing_vectors,
    ignore = "needs the shared attestation vectors (ATTESTCA_VECTORS_DIR); tests/run.sh provides it"
)]
async fn the_ietf_tpm_sample_as_signed_enrolls_end_to_end() {
    let tmp = tempfile::tempdir().expect("temp dir");
    // A nonce the CA issued to another rig is not this rig's.
    let (ca, csr) = ca_for(tmp.path(), ORIGINAL, true, NONCE_OF_RIG_B).await;
    let (status, text) = ca.post("/simpleenroll", &csr).await;
    assert_eq!(status, 403, "{text}");
    assert!(text.starts_with("attestation.nonce_foreign"), "{text}");

    // Issued to this rig: the sample enrolls.
    ca.sql(
        "UPDATE nonces SET requester = 'tls:rig-a' WHERE nonce = $1",
        &SAMPLE_NONCE,
    )
    .await;
    let (status, text) = ca.post("/simpleenroll", &csr).await;
    assert_eq!(status, 200, "{text}");
    let certificate_der = certificate_from_response(text.as_bytes());
    let certificate = x509_cert::Certificate::from_der(&certificate_der).expect("certificate");
    let request = CertReq::from_der(&csr).expect("CSR");
    assert_eq!(
        certificate.tbs_certificate().subject_public_key_info(),
        &request.info.public_key,
        "the certificate certifies the TPM-resident key"
    );
    // hardwareModuleName: the vendor's hwType and the AK certificate's serial.
    let (hardware_type, serial) =
        hardware_module_name(&certificate_der).expect("hardwareModuleName");
    assert_eq!(hardware_type, "2.23.133.1.2");
    assert_eq!(
        hex::encode_upper(serial),
        "7D7E2873BBB82946F2CFAD55B5037983603640C4"
    );

    // The nonce is spent: the same evidence with a new CSR would be refused, and the same
    // CSR again is a retry of the same certificate.
    let (status, again) = ca.post("/simpleenroll", &csr).await;
    assert_eq!(status, 200, "{again}");
    assert_eq!(certificate_from_response(again.as_bytes()), certificate_der);
    let db = sqlx::SqlitePool::connect(&format!("sqlite://{}?mode=ro", ca.db))
        .await
        .expect("db");
    let spent: Option<i64> = sqlx::query_scalar("SELECT consumed_at FROM nonces WHERE nonce = $1")
        .bind(&SAMPLE_NONCE[..])
        .fetch_one(&db)
        .await
        .expect("nonce row");
    assert!(spent.is_some(), "the nonce is spent");
    let (format, vendor): (String, String) = sqlx::query_as(
        "SELECT attestation_format, vendor FROM enrollment_events \
         WHERE outcome = 'issued' AND operation = 'simpleenroll'",
    )
    .fetch_one(&db)
    .await
    .expect("issued event");
    assert_eq!(
        (format.as_str(), vendor.as_str()),
        ("tpm-certify", "tpm-test")
    );
    db.close().await;
}

/// `attestca evidence verify` on the samples: `(exit code, JSON verdict or stderr)`.
fn evidence_verify(args: &[&str]) -> (Option<i32>, String) {
    let out = std::process::Command::new(attestca_bin())
        .args(["evidence", "verify"])
        .args(args)
        .output()
        .expect("run attestca");
    let text = if out.stdout.is_empty() {
        String::from_utf8_lossy(&out.stderr).into_owned()
    } else {
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    (out.status.code(), text)
}

/// `(name, ok, reason)` of the verdict's checks.
fn checks(verdict: &serde_json::Value) -> Vec<(String, bool, Option<String>)> {
    verdict["checks"]
        .as_array()
        .expect("checks")
        .iter()
        .map(|c| {
            (
                c["name"].as_str().expect("name").to_owned(),
                c["ok"].as_bool().expect("ok"),
                c["reason"].as_str().map(str::to_owned),
            )
        })
        .collect()
}

#[test]
#[cfg_attr(
    missing_vectors,
    ignore = "needs the shared attestation vectors (ATTESTCA_VECTORS_DIR); tests/run.sh provides it"
)]
fn evidence_verify_explains_the_samples_offline() {
    let vectors = vectors();
    let tmp = tempfile::tempdir().expect("temp dir");
    let vendors = tmp.path().join("vendors");
    std::fs::create_dir_all(&vendors).expect("dir");
    let original = sample_csr(&vectors, ORIGINAL);
    write_sample_root(&original, &vendors.join("tpm-root.pem"));
    std::fs::write(
        vendors.join("tpm-test.toml"),
        "name = \"tpm-test\"\nroots = [\"tpm-root.pem\"]\nformats = [\"tpm-certify\"]\n\
         reader = \"tpm\"\nhardware_type = \"2.23.133.1.2\"\n",
    )
    .expect("vendor file");
    let vendor_dir = vendors.display().to_string();
    let original_pem = vectors.join(ORIGINAL).display().to_string();

    // The sample as signed, at a time inside its certificates' validity, with its nonce.
    let pinned = |nonce: &str| {
        let (code, out) = evidence_verify(&[
            "--csr",
            &original_pem,
            "--vendors",
            &vendor_dir,
            "--at",
            "2024-11-01T00:00:00Z",
            "--nonce",
            nonce,
        ]);
        let verdict: serde_json::Value = serde_json::from_str(&out).expect("JSON verdict");
        (code, out, verdict)
    };
    let (code, out, verdict) = pinned("00ff55aa");
    assert_eq!(code, Some(0), "{out}");
    assert_eq!(verdict["verdict"], "pass");
    assert_eq!(verdict["format"], "tpm-certify");
    assert_eq!(verdict["vendor"], "tpm-test");
    assert_eq!(verdict["nonce"], "00ff55aa");
    assert_eq!(
        verdict["device_identity"],
        "tpm-test:test-rootCA/7D7E2873BBB82946F2CFAD55B5037983603640C4"
    );
    assert!(checks(&verdict).iter().all(|c| c.1), "{out}");

    // Another nonce than the rig was given; and now, when the AK certificate has expired.
    let (code, out, verdict) = pinned("00ff55ab");
    assert_eq!(code, Some(1), "{out}");
    assert_eq!(
        checks(&verdict).last(),
        Some(&(
            "evidence.nonce".to_owned(),
            false,
            Some("attestation.nonce_unknown".to_owned())
        ))
    );
    let (code, out) = evidence_verify(&["--csr", &original_pem, "--vendors", &vendor_dir]);
    assert_eq!(code, Some(1), "{out}");
    let verdict: serde_json::Value = serde_json::from_str(&out).expect("JSON verdict");
    assert_eq!(verdict["verdict"], "fail");
    assert_eq!(verdict["format"], "tpm-certify");
    assert_eq!(
        checks(&verdict).last(),
        Some(&(
            "evidence.verify".to_owned(),
            false,
            Some("attestation.expired".to_owned())
        ))
    );

    // The hand-edited sample: no proof of possession, nothing further is checked.
    let (code, out) = evidence_verify(&[
        "--csr",
        &vectors.join(EDITED).display().to_string(),
        "--vendors",
        &vendor_dir,
        "--at",
        "2024-11-01T00:00:00Z",
    ]);
    assert_eq!(code, Some(1), "{out}");
    let verdict: serde_json::Value = serde_json::from_str(&out).expect("JSON verdict");
    assert_eq!(
        checks(&verdict),
        [(
            "csr.possession".to_owned(),
            false,
            Some("csr.bad_signature".to_owned())
        )]
    );

    // Checks that cannot run are not a verdict: exit 2 and a message.
    for bad in [
        vec!["--csr", &original_pem],
        vec![
            "--csr",
            &original_pem,
            "--vendors",
            &vendor_dir,
            "--at",
            "yesterday",
        ],
        vec![
            "--csr",
            &original_pem,
            "--vendors",
            &vendor_dir,
            "--nonce",
            "xyz",
        ],
        vec!["--csr", "/nonexistent.csr", "--vendors", &vendor_dir],
    ] {
        let (code, out) = evidence_verify(&bad);
        assert_eq!(code, Some(2), "{bad:?}: {out}");
        assert!(out.starts_with("attestca: "), "{bad:?}: {out}");
    }
}
