//! The IETF TPM2_Certify sample CSR (../shared/vectors) through the running CA.
//!
//! The sample's TPM evidence is genuine and verifies (crates/attestca-core/src/attestation/tpm.rs tests it at the
//! pinned time with its nonce and root), but the CSR's own self-signature does not: openssl
//! (`openssl req -verify`), Python's cryptography (`is_signature_valid`) and attestca all reject
//! it, although PROVENANCE.md says it verifies. A CA must not sign without proof of possession,
//! so the sample is refused with csr.bad_signature before any trust decision — with its root
//! and nonce configured or not. These tests pin that behaviour; when a re-signed sample exists,
//! the first test should expect 200.

use attestca_testkit as common;

use std::path::Path;

use common::*;
use der::{Decode, Encode};
use x509_cert::request::CertReq;

/// 2024-11-01T00:00:00Z, inside the sample certificates' validity.
const PINNED: u64 = 1_730_419_200;
/// The sample's TPMS_ATTEST extraData.
const SAMPLE_NONCE: [u8; 4] = [0x00, 0xff, 0x55, 0xaa];

fn sample_csr(vectors: &Path) -> Vec<u8> {
    let pem =
        std::fs::read_to_string(vectors.join("tpm/tcgAttestTpmCertify.csr.pem")).expect("sample");
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
         [profiles.default]\nattestation_required = true\ncn_pattern = \"test-key[0-9]+\"\n"
    )
}

#[tokio::test(flavor = "multi_thread")]
#[cfg_attr(
    missing_vectors,
    ignore = "needs the shared attestation vectors (ATTESTCA_VECTORS_DIR); tests/run.sh provides it"
)]
async fn the_ietf_tpm_sample_is_refused_for_its_invalid_csr_signature_with_root_and_nonce_configured()
 {
    let vectors = vectors();
    let csr = sample_csr(&vectors);
    let tmp = tempfile::tempdir().expect("temp dir");
    std::fs::create_dir_all(tmp.path().join("ca")).expect("dir");
    write_sample_root(&csr, &tmp.path().join("ca/tpm-root.pem"));
    let ca = ConfiguredCa::start(tmp.path(), &config(true), &[]).await;

    // The CA issued that nonce to rig A (the sample fixes it, so the test records it directly).
    ca.sql(
        "INSERT INTO nonces (nonce, requester, issued_at, expires_at) VALUES ($1, 'tls:rig-a', 0, 9999999999)",
        &SAMPLE_NONCE,
    )
    .await;
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
async fn without_the_ak_root_the_tpm_sample_is_refused_too() {
    let vectors = vectors();
    let csr = sample_csr(&vectors);
    let tmp = tempfile::tempdir().expect("temp dir");
    let ca = ConfiguredCa::start(tmp.path(), &config(false), &[]).await;
    ca.sql(
        "INSERT INTO nonces (nonce, requester, issued_at, expires_at) VALUES ($1, 'tls:rig-a', 0, 9999999999)",
        &SAMPLE_NONCE,
    )
    .await;
    let (status, text) = ca.post("/simpleenroll", &csr).await;
    assert_eq!(status, 400, "{text}");
    assert!(text.starts_with("csr.bad_signature"), "{text}");
}
