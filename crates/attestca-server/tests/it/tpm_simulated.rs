//! The TPM2_Certify path end to end through the running CA, with evidence made here the way a
//! TPM makes it (crates/attestca-testkit/src/simulated_tpm.rs): TPMT_PUBLIC of a fixed, sensitive-origin
//! signing key; TPMS_ATTEST (TPM_ST_ATTEST_CERTIFY) over its name with the server's nonce as
//! extraData, signed by an attestation key whose certificate (EKU tcg-kp-AIKCertificate) chains
//! to the configured AK-CA root. (The IETF sample cannot go end to end: its CSR signature is
//! invalid, see crates/attestca-server/tests/it/tpm_vector.rs.)

use attestca_testkit as common;
use attestca_testkit::simulated_tpm;

use attestca::issuance::software_ca::SoftwareCa;
use attestca_sim::device::DeviceKey;
use common::*;
use simulated_tpm::SimulatedTpm;

#[tokio::test(flavor = "multi_thread")]
async fn tpm2_certify_evidence_enrolls_end_to_end() {
    let tmp = tempfile::tempdir().expect("temp dir");
    std::fs::create_dir_all(tmp.path().join("ca")).expect("dir");
    let ak_ca = SoftwareCa::self_signed("CN=Simulated TPM AK CA", 1).expect("AK CA");
    attestca::pem::write_certificates(&tmp.path().join("ca/ak-root.pem"), &[&ak_ca.der])
        .expect("root");
    let ca = ConfiguredCa::start(
        tmp.path(),
        "[[attestation.vendors]]\nname = \"tpm\"\nroots = [\"ak-root.pem\"]\nformats = [\"tpm-certify\"]\n\
         reader = \"tpm\"\nhardware_type = \"2.23.133.1.2\"\n\
         [profiles.default]\nattestation_required = true\nattestation_formats = [\"tpm-certify\"]\n",
        &[],
    )
    .await;
    let est = attestca_rig::client::EstClient::new(
        &ca.server.est_url(),
        None,
        attestca_rig::client::tls_config(
            &ca.dir.join("pki/ca-chain.pem"),
            Some((&ca.dir.join("pki/rig.crt"), &ca.dir.join("pki/rig.key"))),
        )
        .expect("tls"),
        None,
    )
    .expect("client");
    let tpm = SimulatedTpm::new(&ak_ca);

    let key = DeviceKey::generate().expect("key");
    let nonce = est.nonce().await.expect("nonce");
    let (status, text) = ca
        .post(
            "/simpleenroll",
            &tpm.csr(&key, "tpm-device-1", &nonce, false),
        )
        .await;
    assert_eq!(status, 200, "{text}\n{}", ca.server.log_text());
    let cert = certificate_from_response(text.as_bytes());
    assert_hardware_module_name(tmp.path(), &cert);

    // One byte of the evidence changed (the CSR is still validly signed): refused.
    let key = DeviceKey::generate().expect("key");
    let nonce = est.nonce().await.expect("nonce");
    let (status, text) = ca
        .post(
            "/simpleenroll",
            &tpm.csr(&key, "tpm-tampered", &nonce, true),
        )
        .await;
    assert_eq!(status, 403, "{text}");
    assert!(text.starts_with("attestation.signature_invalid"), "{text}");

    // Another key of the same TPM is a second identity for one device: refused as a clone.
    let key = DeviceKey::generate().expect("key");
    let nonce = est.nonce().await.expect("nonce");
    let csr = tpm.csr(&key, "tpm-second-key", &nonce, false);
    let (status, text) = ca.post("/simpleenroll", &csr).await;
    assert_eq!(status, 403, "{text}");
    assert!(text.starts_with("attestation.clone_suspected"), "{text}");

    // Another TPM's evidence with a nonce the CA never issued.
    let other = SimulatedTpm::new(&ak_ca);
    let key = DeviceKey::generate().expect("key");
    let csr = other.csr(&key, "tpm-replayed", &[5u8; 16], false);
    let (status, text) = ca.post("/simpleenroll", &csr).await;
    assert_eq!(status, 403, "{text}");
    assert!(text.starts_with("attestation.nonce_unknown"), "{text}");
}
