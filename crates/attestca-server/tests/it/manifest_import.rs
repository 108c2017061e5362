//! `attestca vendor import-manifest` with the real Microchip manifest: every entry's signature
//! is checked against the pinned signer; the parts land in the database, keyed as device
//! identities display them; a part withheld from the manifest is not listed; one changed byte
//! rejects the whole file; an unknown vendor is refused.

use attestca_testkit as common;

use std::path::Path;

use common::*;
use der::{Decode, Encode};
use secrecy::SecretString;
use sha2::Digest;

fn config(tmp: &Path, vectors: &Path) -> std::path::PathBuf {
    let path = tmp.join("attestca.toml");
    std::fs::write(
        &path,
        format!(
            "[server]\ndata_dir = \"{dir}\"\n[tls]\ncertificate_file = \"tls.crt\"\nkey_file = \"tls.key\"\n\
             [signer]\nbackend = \"software\"\nkey_file = \"ca.key\"\n[ca]\nchain_file = \"chain.pem\"\n\
             [[attestation.vendors]]\nname = \"microchip\"\nroots = [\"{root}\"]\n\
             formats = [\"device-certificate\"]\nreader = \"microchip\"\nhardware_type = \"1.3.6.1.4.1.32473.7030.5.1\"\n\
             [profiles.default]\nattestation_required = true\nrequire_manifest = true\n",
            dir = tmp.display(),
            root = vectors.join("microchip/crypto-authentication-root-ca-002.pem").display(),
        ),
    )
    .expect("config");
    path
}

fn import(config: &Path, manifest: &Path, signer: &Path, vendor: &str) -> (bool, String) {
    run(
        env!("CARGO_BIN_EXE_attestca"),
        &[
            "vendor",
            "import-manifest",
            &manifest.display().to_string(),
            "--signer",
            &signer.display().to_string(),
            "--vendor",
            vendor,
            "--config",
            &config.display().to_string(),
        ],
        &[],
    )
}

/// SHA-256 of the device certificate's SubjectPublicKeyInfo, from manifest entry `index`.
fn device_key_hash(entries: &[serde_json::Value], index: usize) -> (String, Vec<u8>) {
    use base64::Engine;
    let payload = entries[index]["payload"].as_str().expect("payload");
    let payload: serde_json::Value = serde_json::from_slice(
        &base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(payload)
            .expect("b64url"),
    )
    .expect("json");
    let x5c = payload["publicKeySet"]["keys"][0]["x5c"][0]
        .as_str()
        .expect("x5c");
    let der = base64::engine::general_purpose::STANDARD
        .decode(x5c)
        .expect("b64");
    let cert = x509_cert::Certificate::from_der(&der).expect("device certificate");
    let spki = cert
        .tbs_certificate()
        .subject_public_key_info()
        .to_der()
        .expect("spki");
    (
        payload["uniqueId"]
            .as_str()
            .expect("uniqueId")
            .to_ascii_uppercase(),
        sha2::Sha256::digest(spki).to_vec(),
    )
}

#[tokio::test(flavor = "multi_thread")]
#[cfg_attr(
    missing_vectors,
    ignore = "needs the shared attestation vectors (ATTESTCA_VECTORS_DIR); tests/run.sh provides it"
)]
async fn the_real_microchip_manifest_imports_and_tampering_is_refused() {
    let vectors = vectors();
    let tmp = tempfile::tempdir().expect("temp dir");
    let config = config(tmp.path(), &vectors);
    let signer = vectors.join("microchip/manifest-signer-005.crt");
    let original =
        std::fs::read(vectors.join("microchip/ECC608C-TNGTLSU-B.manifest.json")).expect("manifest");
    let entries: Vec<serde_json::Value> = serde_json::from_slice(&original).expect("json");
    assert_eq!(entries.len(), 10);

    // Deliver nine of the ten parts (entries are signed one by one, so a subset stays valid).
    let delivered = tmp.path().join("delivered.json");
    std::fs::write(&delivered, serde_json::to_vec(&entries[..9]).expect("json")).expect("write");
    let (ok, out) = import(&config, &delivered, &signer, "microchip");
    assert!(ok, "{out}");
    assert!(out.contains("9 parts, 9 new"), "{out}");
    let (ok, out) = import(&config, &delivered, &signer, "microchip");
    assert!(
        ok && out.contains("9 parts, 0 new"),
        "importing again adds nothing: {out}"
    );

    let store = attestca::store::Store::connect(
        &SecretString::from(format!(
            "sqlite://{}",
            tmp.path().join("attestca.db").display()
        )),
        2,
    )
    .await
    .expect("store");
    let (first_id, first_key) = device_key_hash(&entries, 0);
    assert_eq!(first_id, "0123F2408EA1FCF201");
    assert!(
        store
            .manifest_lists("microchip", &first_id, &first_key)
            .await
            .expect("lookup")
    );
    let (withheld_id, withheld_key) = device_key_hash(&entries, 9);
    assert!(
        !store
            .manifest_lists("microchip", &withheld_id, &withheld_key)
            .await
            .expect("lookup"),
        "a part that was not delivered is not listed"
    );
    assert!(
        !store
            .manifest_lists("microchip", &first_id, &withheld_key)
            .await
            .expect("lookup"),
        "a listed part with another key is not listed"
    );

    // One changed character in one payload rejects the whole manifest: nothing of it is stored.
    let mut tampered = entries.clone();
    let payload = tampered[9]["payload"].as_str().expect("payload").to_owned();
    let flipped = if payload.ends_with('A') { "B" } else { "A" };
    tampered[9]["payload"] =
        serde_json::Value::String(format!("{}{flipped}", &payload[..payload.len() - 1]));
    let tampered_path = tmp.path().join("tampered.json");
    std::fs::write(&tampered_path, serde_json::to_vec(&tampered).expect("json")).expect("write");
    let (ok, out) = import(&config, &tampered_path, &signer, "microchip");
    assert!(!ok, "a tampered manifest was accepted: {out}");
    assert!(
        !store
            .manifest_lists("microchip", &withheld_id, &withheld_key)
            .await
            .expect("lookup")
    );

    // The wrong signer, and a vendor the trust store does not know.
    let (ok, _) = import(
        &config,
        &delivered,
        &vectors.join("microchip/crypto-authentication-root-ca-002.pem"),
        "microchip",
    );
    assert!(!ok, "a manifest verified against the wrong signer");
    let (ok, out) = import(&config, &delivered, &signer, "nobody");
    assert!(
        !ok && out.contains("not in [[attestation.vendors]]"),
        "{out}"
    );
}
