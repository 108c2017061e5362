//! The attestation gate end to end over real TLS, against a CA configured with the simulated
//! secure-element vendor: the happy path, and every negative case of attestation.md — each
//! refused with its status and reason code, and without a certificate row.

use attestca_testkit as common;

use std::path::{Path, PathBuf};

use attestca::attestation::x509_chain::KeyOrigin;
use attestca::attestation::{ID_AA_ATTESTATION, ID_STMT_X509_CHAIN, bundle};
use attestca_sim::device::DeviceKey;
use attestca_sim::secure_element::{KeyClaims, SimulatedDevice, SimulatedVendor};
use base64::Engine;
use common::*;
use der::Decode;
use der::asn1::{Any, SetOfVec};
use x509_cert::attr::Attribute;

const BASIC_PASSWORD: &str = "rig-b password";
const DENIED_SERIAL: [u8; 8] = [0xde, 0, 0, 0, 0, 0, 0, 1];

struct Ca {
    server: ServerProcess,
    dir: PathBuf,
    rig_a: reqwest::Client,
    rig_b: reqwest::Client,
    vendor: SimulatedVendor,
    db: String,
}

impl Ca {
    fn url(&self, path: &str) -> String {
        format!("{}/.well-known/est{path}", self.server.est_url())
    }

    /// A nonce issued to rig A (client certificate) or rig B (Basic).
    async fn nonce(&self, rig_b: bool) -> Vec<u8> {
        let request = if rig_b {
            self.rig_b
                .get(self.url("/nonce"))
                .basic_auth("rig-b", Some(BASIC_PASSWORD))
        } else {
            self.rig_a.get(self.url("/nonce"))
        };
        let response = request.send().await.expect("nonce");
        assert_eq!(response.status(), 200);
        assert_eq!(
            response.headers()["content-type"],
            "application/est-attestation-freshness+json"
        );
        let json: serde_json::Value =
            serde_json::from_slice(&response.bytes().await.expect("body")).expect("JSON");
        assert_eq!(json["expiry"], 300);
        base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(json["nonce"].as_str().expect("nonce field"))
            .expect("base64url")
    }

    /// Posts a CSR as rig A to `path`; returns status and body.
    async fn post(&self, path: &str, csr: &[u8]) -> (u16, String) {
        let response = self
            .rig_a
            .post(self.url(path))
            .header("Content-Type", "application/pkcs10")
            .body(body(csr))
            .send()
            .await
            .expect("post");
        let status = response.status().as_u16();
        (status, response.text().await.expect("body"))
    }

    async fn certificates_named(&self, cn: &str) -> i64 {
        let db = sqlx::SqlitePool::connect(&format!("sqlite://{}?mode=ro", self.db))
            .await
            .expect("db");
        let n = sqlx::query_scalar("SELECT COUNT(*) FROM certificates WHERE subject = $1")
            .bind(format!("CN={cn}"))
            .fetch_one(&db)
            .await
            .expect("count");
        db.close().await;
        n
    }

    /// Asserts a refusal with `status` and `code`, and that no certificate exists for `cn`.
    async fn expect_refused(&self, path: &str, cn: &str, csr: &[u8], status: u16, code: &str) {
        let (got, text) = self.post(path, csr).await;
        assert_eq!(got, status, "{cn}: {text}");
        assert!(text.starts_with(code), "{cn}: expected {code}, got {text}");
        assert_eq!(
            self.certificates_named(cn).await,
            0,
            "{cn}: a refused request left a certificate"
        );
    }
}

fn evidence_attribute(
    statements: &[(der::asn1::ObjectIdentifier, Vec<u8>)],
    certs: &[Vec<u8>],
) -> Attribute {
    let bundle = bundle::encode(statements, certs).expect("bundle");
    Attribute {
        oid: ID_AA_ATTESTATION,
        values: SetOfVec::try_from(vec![Any::from_der(&bundle).expect("any")]).expect("set"),
    }
}

fn chain_of(device: &SimulatedDevice) -> Vec<Vec<u8>> {
    vec![
        device.attestation_key_certificate().to_vec(),
        device.vendor_ca_certificate().to_vec(),
    ]
}

/// An attested CSR: `device` attests `attested`'s key with `nonce` and `claims`; the CSR is for
/// `csr_key`'s key (the same key unless a test wants a mismatch).
fn attested_csr(
    device: &SimulatedDevice,
    cn: &str,
    nonce: &[u8],
    claims: KeyClaims,
    attested: &DeviceKey,
    csr_key: &DeviceKey,
) -> Vec<u8> {
    let attestation = device
        .attest(&attested.public_key().expect("key"), nonce, claims)
        .expect("attest");
    let attribute = evidence_attribute(&[(ID_STMT_X509_CHAIN, attestation)], &chain_of(device));
    csr_key
        .csr_with_attributes(cn, vec![attribute])
        .expect("csr")
}

fn good_csr(device: &SimulatedDevice, cn: &str, nonce: &[u8]) -> (DeviceKey, Vec<u8>) {
    let key = DeviceKey::generate().expect("key");
    let csr = attested_csr(device, cn, nonce, KeyClaims::default(), &key, &key);
    (key, csr)
}

async fn start(tmp: &Path) -> Ca {
    let vendor_dir = tmp.join("ca/vendor");
    std::fs::create_dir_all(&vendor_dir).expect("dir");
    let vendor = SimulatedVendor::create(&vendor_dir).expect("simulated vendor");
    let extra = format!(
        r#"
[[rigs.accounts]]
name = "rig-b"
[attestation]
[[attestation.vendors]]
name = "simulated-se"
roots = ["vendor/vendor-root.crt"]
formats = ["x509-chain"]
reader = "simulated-se"
hardware_type = "{hw}"
denied_serials = ["{denied}"]
[profiles.default]
attestation_required = true
key_algorithms = ["p256"]
[profiles.manifest]
attestation_required = true
require_manifest = true
[profiles.reprovision]
attestation_required = true
allow_reprovision = true
[profiles.tpm-only]
attestation_required = true
attestation_formats = ["tpm-certify"]
"#,
        hw = attestca::attestation::ID_HW_SIMULATED_SE,
        denied = hex::encode_upper(DENIED_SERIAL),
    );
    let configured = ConfiguredCa::start(
        tmp,
        &extra,
        &[("ATTESTCA_RIG_PASSWORD_RIG_B", BASIC_PASSWORD.to_owned())],
    )
    .await;
    let chain = configured.dir.join("pki/ca-chain.pem");
    Ca {
        rig_a: configured.rig.clone(),
        rig_b: https_client(&chain, None),
        db: configured.db.clone(),
        server: configured.server,
        dir: configured.dir,
        vendor,
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn attestation_gate_accepts_genuine_evidence_and_refuses_the_rest() {
    let tmp = tempfile::tempdir().expect("temp dir");
    let ca = start(tmp.path()).await;

    // csrattrs asks for the evidence and the curve.
    let attrs = ca
        .rig_a
        .get(ca.url("/csrattrs"))
        .send()
        .await
        .expect("csrattrs")
        .bytes()
        .await
        .expect("body");
    let attrs = attestca::est::codec::decode_body(&attrs).expect("base64");
    let (ok, parsed) = {
        std::fs::write(tmp.path().join("attrs.der"), &attrs).expect("write");
        run(
            "openssl",
            &[
                "asn1parse",
                "-inform",
                "DER",
                "-in",
                &tmp.path().join("attrs.der").display().to_string(),
            ],
            &[],
        )
    };
    assert!(
        ok && parsed.contains("1.2.840.113549.1.9.16.2.59") && parsed.contains("prime256v1"),
        "{parsed}"
    );

    // Genuine evidence: a certificate naming the device, recorded with its identity.
    let device = ca.vendor.manufacture().expect("device");
    let (_, csr) = good_csr(&device, "genuine-1", &ca.nonce(false).await);
    let (status, text) = ca.post("/simpleenroll", &csr).await;
    assert_eq!(status, 200, "{text}\n{}", ca.server.log_text());
    let cert = certificate_from_response(text.as_bytes());
    assert_hardware_module_name(tmp.path(), &cert);
    let db = sqlx::SqlitePool::connect(&format!("sqlite://{}?mode=ro", ca.db))
        .await
        .expect("db");
    let identity: Option<String> = sqlx::query_scalar(
        "SELECT device_identity FROM certificates WHERE subject = 'CN=genuine-1'",
    )
    .fetch_one(&db)
    .await
    .expect("row");
    assert_eq!(
        identity,
        Some(format!(
            "simulated-se:{}",
            hex::encode_upper(&device.serial)
        ))
    );
    let event: (Option<Vec<u8>>, Option<String>, Option<String>) = sqlx::query_as(
        "SELECT evidence_sha256, attestation_format, vendor FROM enrollment_events WHERE outcome = 'issued' AND device_identity = $1",
    )
    .bind(&identity)
    .fetch_one(&db)
    .await
    .expect("event");
    assert_eq!(
        event.0.map(|h| h.len()),
        Some(32),
        "the event keeps a SHA-256 of the evidence"
    );
    assert_eq!(event.1.as_deref(), Some("x509-chain"));
    assert_eq!(event.2.as_deref(), Some("simulated-se"));
    db.close().await;

    // Wrong root: a vendor nobody configured.
    let rogue_dir = tmp.path().join("rogue");
    std::fs::create_dir_all(&rogue_dir).expect("dir");
    let rogue = SimulatedVendor::create(&rogue_dir)
        .expect("rogue vendor")
        .manufacture()
        .expect("device");
    let (_, csr) = good_csr(&rogue, "rogue-1", &ca.nonce(false).await);
    ca.expect_refused(
        "/simpleenroll",
        "rogue-1",
        &csr,
        403,
        "attestation.untrusted_root",
    )
    .await;

    // The attested key is not the CSR's key.
    let (attested, other) = (
        DeviceKey::generate().expect("key"),
        DeviceKey::generate().expect("key"),
    );
    let csr = attested_csr(
        &device,
        "mismatch-1",
        &ca.nonce(false).await,
        KeyClaims::default(),
        &attested,
        &other,
    );
    ca.expect_refused(
        "/simpleenroll",
        "mismatch-1",
        &csr,
        403,
        "attestation.key_mismatch",
    )
    .await;

    // Nonces: unknown, another rig's, reused, expired.
    let (_, csr) = good_csr(
        &ca.vendor.manufacture().expect("device"),
        "nonce-unknown",
        &[7u8; 32],
    );
    ca.expect_refused(
        "/simpleenroll",
        "nonce-unknown",
        &csr,
        403,
        "attestation.nonce_unknown",
    )
    .await;
    let (_, csr) = good_csr(
        &ca.vendor.manufacture().expect("device"),
        "nonce-foreign",
        &ca.nonce(true).await,
    );
    ca.expect_refused(
        "/simpleenroll",
        "nonce-foreign",
        &csr,
        403,
        "attestation.nonce_foreign",
    )
    .await;
    let shared = ca.nonce(false).await;
    let (_, first) = good_csr(
        &ca.vendor.manufacture().expect("device"),
        "nonce-first",
        &shared,
    );
    assert_eq!(ca.post("/simpleenroll", &first).await.0, 200);
    let (_, second) = good_csr(
        &ca.vendor.manufacture().expect("device"),
        "nonce-reused",
        &shared,
    );
    ca.expect_refused(
        "/simpleenroll",
        "nonce-reused",
        &second,
        403,
        "attestation.nonce_reused",
    )
    .await;
    let stale = [9u8; 16];
    {
        let db = sqlx::SqlitePool::connect(&format!("sqlite://{}", ca.db))
            .await
            .expect("db");
        sqlx::query("INSERT INTO nonces (nonce, requester, issued_at, expires_at) VALUES ($1, 'tls:rig-a', 1, 2)")
            .bind(&stale[..])
            .execute(&db)
            .await
            .expect("stale nonce");
        db.close().await;
    }
    let (_, csr) = good_csr(
        &ca.vendor.manufacture().expect("device"),
        "nonce-stale",
        &stale,
    );
    ca.expect_refused(
        "/simpleenroll",
        "nonce-stale",
        &csr,
        403,
        "attestation.nonce_expired",
    )
    .await;

    // What the evidence says about the key.
    let key = DeviceKey::generate().expect("key");
    let imported = KeyClaims {
        origin: KeyOrigin::Imported,
        exportable: false,
    };
    let csr = attested_csr(
        &ca.vendor.manufacture().expect("device"),
        "imported-1",
        &ca.nonce(false).await,
        imported,
        &key,
        &key,
    );
    ca.expect_refused(
        "/simpleenroll",
        "imported-1",
        &csr,
        403,
        "attestation.key_not_generated_on_device",
    )
    .await;
    let key = DeviceKey::generate().expect("key");
    let exportable = KeyClaims {
        origin: KeyOrigin::Generated,
        exportable: true,
    };
    let csr = attested_csr(
        &ca.vendor.manufacture().expect("device"),
        "exportable-1",
        &ca.nonce(false).await,
        exportable,
        &key,
        &key,
    );
    ca.expect_refused(
        "/simpleenroll",
        "exportable-1",
        &csr,
        403,
        "attestation.key_exportable",
    )
    .await;

    // Broken attestation keys: expired, and not a CA.
    let expiring = ca
        .vendor
        .manufacture_with_serial(&[1, 2, 3, 4, 5, 6, 7, 8], 1)
        .expect("device");
    tokio::time::sleep(std::time::Duration::from_secs(2)).await;
    let (_, csr) = good_csr(&expiring, "expired-ak", &ca.nonce(false).await);
    ca.expect_refused(
        "/simpleenroll",
        "expired-ak",
        &csr,
        403,
        "attestation.expired",
    )
    .await;
    let not_ca = ca
        .vendor
        .manufacture_custom(&[2; 8], 86_400, false)
        .expect("device");
    let (_, csr) = good_csr(&not_ca, "ak-not-ca", &ca.nonce(false).await);
    ca.expect_refused(
        "/simpleenroll",
        "ak-not-ca",
        &csr,
        403,
        "attestation.chain_invalid",
    )
    .await;

    // Malformed carriers: two attributes, a truncated bundle, an unknown statement type.
    let key = DeviceKey::generate().expect("key");
    let nonce = ca.nonce(false).await;
    let attestation = device
        .attest(
            &key.public_key().expect("key"),
            &nonce,
            KeyClaims::default(),
        )
        .expect("attest");
    let attribute = evidence_attribute(
        &[(ID_STMT_X509_CHAIN, attestation.clone())],
        &chain_of(&device),
    );
    let csr = key
        .csr_with_attributes(
            "two-attributes",
            vec![attribute.clone(), {
                let mut second = attribute.clone();
                second.values = SetOfVec::try_from(vec![
                    Any::new(der::Tag::Null, Vec::<u8>::new()).expect("null"),
                ])
                .expect("set");
                second
            }],
        )
        .expect("csr");
    ca.expect_refused(
        "/simpleenroll",
        "two-attributes",
        &csr,
        400,
        "attestation.multiple_attributes",
    )
    .await;
    let whole = bundle::encode(
        &[(ID_STMT_X509_CHAIN, attestation.clone())],
        &chain_of(&device),
    )
    .expect("bundle");
    let truncated = Attribute {
        oid: ID_AA_ATTESTATION,
        values: SetOfVec::try_from(vec![
            Any::new(der::Tag::OctetString, whole[..whole.len() / 2].to_vec()).expect("any"),
        ])
        .expect("set"),
    };
    let csr = key
        .csr_with_attributes("truncated-bundle", vec![truncated])
        .expect("csr");
    ca.expect_refused(
        "/simpleenroll",
        "truncated-bundle",
        &csr,
        400,
        "attestation.malformed",
    )
    .await;
    let unknown = evidence_attribute(
        &[(
            der::asn1::ObjectIdentifier::new_unwrap("1.3.6.1.4.1.32473.7030.99"),
            attestation.clone(),
        )],
        &chain_of(&device),
    );
    let csr = key
        .csr_with_attributes("unknown-type", vec![unknown])
        .expect("csr");
    ca.expect_refused(
        "/simpleenroll",
        "unknown-type",
        &csr,
        400,
        "attestation.unknown_statement_type",
    )
    .await;

    // Policy: a format the profile does not accept, a deny-listed device, no manifest entry.
    let (_, csr) = good_csr(
        &ca.vendor.manufacture().expect("device"),
        "wrong-format",
        &ca.nonce(false).await,
    );
    ca.expect_refused(
        "/tpm-only/simpleenroll",
        "wrong-format",
        &csr,
        403,
        "attestation.format_not_allowed",
    )
    .await;
    let denied = ca
        .vendor
        .manufacture_with_serial(&DENIED_SERIAL, 86_400)
        .expect("device");
    let (_, csr) = good_csr(&denied, "denied-1", &ca.nonce(false).await);
    ca.expect_refused(
        "/simpleenroll",
        "denied-1",
        &csr,
        403,
        "attestation.device_denied",
    )
    .await;
    let listed = ca.vendor.manufacture().expect("device");
    let (listed_key, csr) = good_csr(&listed, "unlisted-1", &ca.nonce(false).await);
    ca.expect_refused(
        "/manifest/simpleenroll",
        "unlisted-1",
        &csr,
        403,
        "attestation.not_in_manifest",
    )
    .await;
    // Once the part is on a manifest (as an import would record it), the same device enrolls.
    {
        use sha2::Digest;
        let spki = der::Encode::to_der(&listed_key.public_key().expect("key")).expect("der");
        let db = sqlx::SqlitePool::connect(&format!("sqlite://{}", ca.db))
            .await
            .expect("db");
        sqlx::query("INSERT INTO manifest_keys (vendor, unique_id, spki_sha256) VALUES ('simulated-se', $1, $2)")
            .bind(hex::encode_upper(&listed.serial))
            .bind(sha2::Sha256::digest(&spki).to_vec())
            .execute(&db)
            .await
            .expect("manifest row");
        db.close().await;
    }
    let attestation = listed
        .attest(
            &listed_key.public_key().expect("key"),
            &ca.nonce(false).await,
            KeyClaims::default(),
        )
        .expect("attest");
    let csr = listed_key
        .csr_with_attributes(
            "listed-1",
            vec![evidence_attribute(
                &[(ID_STMT_X509_CHAIN, attestation)],
                &chain_of(&listed),
            )],
        )
        .expect("csr");
    let (status, text) = ca.post("/manifest/simpleenroll", &csr).await;
    assert_eq!(status, 200, "{text}");

    // Clones: the same device serial with a second key.
    let original = ca
        .vendor
        .manufacture_with_serial(&[0xc1; 8], 86_400)
        .expect("device");
    let (_, csr) = good_csr(&original, "clone-original", &ca.nonce(false).await);
    assert_eq!(ca.post("/simpleenroll", &csr).await.0, 200);
    let clone = ca
        .vendor
        .manufacture_with_serial(&[0xc1; 8], 86_400)
        .expect("device");
    let (_, csr) = good_csr(&clone, "clone-copy", &ca.nonce(false).await);
    ca.expect_refused(
        "/simpleenroll",
        "clone-copy",
        &csr,
        403,
        "attestation.clone_suspected",
    )
    .await;
    let (_, csr) = good_csr(&clone, "clone-reprovisioned", &ca.nonce(false).await);
    assert_eq!(
        ca.post("/reprovision/simpleenroll", &csr).await.0,
        200,
        "a profile that allows re-provisioning accepts it"
    );

    // Nonces are for authenticated rigs only.
    let anonymous = ca.rig_b.get(ca.url("/nonce")).send().await.expect("nonce");
    assert_eq!(anonymous.status(), 401);
    let _ = &ca.dir;
}

#[tokio::test(flavor = "multi_thread")]
async fn two_enrollments_racing_on_one_nonce_one_wins() {
    let tmp = tempfile::tempdir().expect("temp dir");
    let ca = start(tmp.path()).await;
    for round in 0..5 {
        let nonce = ca.nonce(false).await;
        let (_, a) = good_csr(
            &ca.vendor.manufacture().expect("device"),
            &format!("race-{round}-a"),
            &nonce,
        );
        let (_, b) = good_csr(
            &ca.vendor.manufacture().expect("device"),
            &format!("race-{round}-b"),
            &nonce,
        );
        let (ra, rb) = tokio::join!(ca.post("/simpleenroll", &a), ca.post("/simpleenroll", &b));
        let mut statuses = [ra.0, rb.0];
        statuses.sort();
        assert_eq!(statuses, [200, 403], "round {round}: {ra:?} {rb:?}");
        let loser = if ra.0 == 403 { &ra.1 } else { &rb.1 };
        assert!(loser.starts_with("attestation.nonce_reused"), "{loser}");
    }
}
