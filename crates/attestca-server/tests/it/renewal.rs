//! simplereenroll over mutual TLS: renewal and rekey, the predecessor chain, and every
//! refusal the issue lists — each with its status and reason and without a new certificate.

use attestca_testkit as common;

use std::path::{Path, PathBuf};

use attestca_sim::device::DeviceKey;
use attestca_sim::secure_element::{KeyClaims, SimulatedDevice, SimulatedVendor};
use common::*;
use der::Decode;
use sqlx::Row;

struct Fleet {
    ca: ConfiguredCa,
    tmp: PathBuf,
    vendor: SimulatedVendor,
}

/// A device: its certificate and key on disk, and a TLS client presenting them.
struct Device {
    cert: Vec<u8>,
    key: DeviceKey,
    client: reqwest::Client,
}

impl Fleet {
    async fn start(tmp: &Path) -> Self {
        let vendor_dir = tmp.join("ca/vendor");
        std::fs::create_dir_all(&vendor_dir).expect("dir");
        let vendor = SimulatedVendor::create(&vendor_dir).expect("vendor");
        let extra = format!(
            "[[attestation.vendors]]\nname = \"simulated-se\"\nroots = [\"vendor/vendor-root.crt\"]\n\
             formats = [\"x509-chain\"]\nreader = \"simulated-se\"\nhardware_type = \"{hw}\"\n\
             [profiles.default]\n\
             [profiles.strict]\nrenewal_after_fraction = 0.5\n\
             [profiles.limited]\nrenewal_min_interval_secs = 3600\n\
             [profiles.supersede]\nrevoke_predecessor_after_secs = 0\n\
             [profiles.attested]\nattestation_required = true\nrekey_requires_attestation = true\n",
            hw = attestca::attestation::ID_HW_SIMULATED_SE,
        );
        let ca = ConfiguredCa::start(tmp, &extra, &[]).await;
        Self {
            ca,
            tmp: tmp.to_owned(),
            vendor,
        }
    }

    fn chain(&self) -> PathBuf {
        self.ca.dir.join("pki/ca-chain.pem")
    }

    /// A TLS client presenting `cert` (DER) with `key`.
    fn client_for(&self, name: &str, cert: &[u8], key: &DeviceKey) -> reqwest::Client {
        let (cert_path, key_path) = (
            self.tmp.join(format!("{name}.crt")),
            self.tmp.join(format!("{name}.key")),
        );
        write_pem(&cert_path, cert);
        attestca::pem::write_private_key(&key_path, &key.pkcs8).expect("key");
        https_client(&self.chain(), Some((&cert_path, &key_path)))
    }

    /// Enrolls a plain device on `profile` through the rig.
    async fn enroll(&self, profile: &str, cn: &str) -> Device {
        let key = DeviceKey::generate().expect("key");
        let (status, text) = self
            .ca
            .post(
                &format!("/{profile}/simpleenroll"),
                &key.csr(cn).expect("csr"),
            )
            .await;
        assert_eq!(status, 200, "{text}");
        let cert = certificate_from_response(text.as_bytes());
        let client = self.client_for(cn, &cert, &key);
        Device { cert, key, client }
    }

    /// Enrolls an attested device on the `attested` profile through the rig.
    async fn enroll_attested(&self, cn: &str) -> (Device, SimulatedDevice) {
        let element = self.vendor.manufacture().expect("element");
        let nonce = self.rig_nonce().await;
        let (key, csr) = element.enroll_key(cn, &nonce).expect("csr");
        let (status, text) = self.ca.post("/attested/simpleenroll", &csr).await;
        assert_eq!(status, 200, "{text}");
        let cert = certificate_from_response(text.as_bytes());
        let client = self.client_for(cn, &cert, &key);
        (Device { cert, key, client }, element)
    }

    async fn rig_nonce(&self) -> Vec<u8> {
        nonce_via(&self.ca.rig, &self.ca.url("/attested/nonce")).await
    }

    async fn reenroll(
        &self,
        client: &reqwest::Client,
        profile: &str,
        csr: &[u8],
    ) -> (u16, String, Option<String>) {
        let response = client
            .post(self.ca.url(&format!("/{profile}/simplereenroll")))
            .header("Content-Type", "application/pkcs10")
            .body(body(csr))
            .send()
            .await
            .expect("simplereenroll");
        let status = response.status().as_u16();
        let retry_after = response
            .headers()
            .get("retry-after")
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        (status, response.text().await.expect("body"), retry_after)
    }

    async fn certificate_count(&self) -> i64 {
        let db = sqlx::SqlitePool::connect(&format!("sqlite://{}?mode=ro", self.ca.db))
            .await
            .expect("db");
        let n = sqlx::query_scalar("SELECT COUNT(*) FROM certificates")
            .fetch_one(&db)
            .await
            .expect("count");
        db.close().await;
        n
    }

    /// Asserts a refusal: status, reason prefix, and no new certificate.
    async fn refused(
        &self,
        client: &reqwest::Client,
        profile: &str,
        csr: &[u8],
        status: u16,
        code: &str,
    ) {
        let before = self.certificate_count().await;
        let (got, text, _) = self.reenroll(client, profile, csr).await;
        assert_eq!(got, status, "{code}: {text}");
        assert!(text.starts_with(code), "expected {code}, got {text}");
        assert_eq!(
            self.certificate_count().await,
            before,
            "{code}: a refusal created a certificate"
        );
    }
}

fn cert_of(der: &[u8]) -> x509_cert::Certificate {
    x509_cert::Certificate::from_der(der).expect("certificate")
}

#[tokio::test(flavor = "multi_thread")]
async fn renewal_rekey_and_every_refusal() {
    let tmp = tempfile::tempdir().expect("temp dir");
    let fleet = Fleet::start(tmp.path()).await;

    // Renewal with the same key: a new certificate that names its predecessor.
    let device = fleet.enroll("default", "fleet-1").await;
    let csr = device
        .key
        .renewal_csr(&cert_of(&device.cert), Vec::new())
        .expect("csr");
    let (status, text, _) = fleet.reenroll(&device.client, "default", &csr).await;
    assert_eq!(status, 200, "{text}");
    let renewed = certificate_from_response(text.as_bytes());
    assert_ne!(serial_of(&renewed), serial_of(&device.cert));
    let pem = tmp.path().join("renewed.pem");
    write_pem(&pem, &renewed);
    let (ok, out) = openssl_verify(&fleet.chain(), &pem);
    assert!(ok, "{out}");
    let db = sqlx::SqlitePool::connect(&format!("sqlite://{}?mode=ro", fleet.ca.db))
        .await
        .expect("db");
    let row = sqlx::query("SELECT predecessor_serial FROM certificates WHERE serial = $1")
        .bind(serial_of(&renewed))
        .fetch_one(&db)
        .await
        .expect("row");
    assert_eq!(
        row.get::<Option<String>, _>("predecessor_serial"),
        Some(serial_of(&device.cert))
    );
    let event = sqlx::query(
        "SELECT operation, requester, predecessor_serial FROM enrollment_events WHERE serial = $1 AND outcome = 'issued'",
    )
    .bind(serial_of(&renewed))
    .fetch_one(&db)
    .await
    .expect("event");
    assert_eq!(event.get::<String, _>("operation"), "simplereenroll");
    assert_eq!(
        event.get::<Option<String>, _>("requester"),
        Some(format!("device:{}", serial_of(&device.cert)))
    );
    assert_eq!(
        event.get::<Option<String>, _>("predecessor_serial"),
        Some(serial_of(&device.cert))
    );
    db.close().await;
    // The same request again is a retry: the same certificate.
    let (status, text, _) = fleet.reenroll(&device.client, "default", &csr).await;
    assert_eq!(status, 200);
    assert_eq!(certificate_from_response(text.as_bytes()), renewed);
    // Logged once (the retry appended nothing), as a renewal by the device.
    let logged = logged_entry(&fleet.ca.server, &renewed).await.attestation;
    assert_eq!(logged.operation, "simplereenroll");
    assert_eq!(
        logged.requester,
        format!("device:{}", serial_of(&device.cert))
    );

    // Rekey: a new key for the same names.
    let new_key = DeviceKey::generate().expect("key");
    let csr = new_key
        .renewal_csr(&cert_of(&device.cert), Vec::new())
        .expect("csr");
    let (status, text, _) = fleet.reenroll(&device.client, "default", &csr).await;
    assert_eq!(status, 200, "{text}");
    let rekeyed_der = certificate_from_response(text.as_bytes());
    let rekeyed = cert_of(&rekeyed_der);
    assert!(attestca::attestation::same_key(
        rekeyed.tbs_certificate().subject_public_key_info(),
        &new_key.public_key().expect("key")
    ));
    let logged = logged_entry(&fleet.ca.server, &rekeyed_der).await;
    assert_eq!(logged.attestation.operation, "simplereenroll");

    // No client certificate; a certificate from another CA; the rig's own certificate.
    let anonymous = https_client(&fleet.chain(), None);
    let csr = device
        .key
        .renewal_csr(&cert_of(&device.cert), Vec::new())
        .expect("csr");
    fleet
        .refused(&anonymous, "default", &csr, 401, "auth.missing")
        .await;
    let stranger_ca =
        attestca::issuance::software_ca::SoftwareCa::self_signed("CN=Stranger CA", 1).expect("ca");
    let (stranger_der, stranger_pkcs8) = stranger_ca
        .issue_end_entity(
            "fleet-1",
            const_oid::db::rfc5280::ID_KP_CLIENT_AUTH,
            Vec::new(),
            1,
        )
        .expect("stranger");
    let stranger_key = DeviceKey::from_pkcs8(&stranger_pkcs8).expect("key");
    let stranger = fleet.client_for("stranger", &stranger_der, &stranger_key);
    let csr = stranger_key
        .renewal_csr(&cert_of(&stranger_der), Vec::new())
        .expect("csr");
    fleet
        .refused(&stranger, "default", &csr, 401, "auth.missing")
        .await;
    fleet
        .refused(&fleet.ca.rig, "default", &csr, 401, "auth.missing")
        .await;

    // Subject and SAN changes; ChangeSubjectName-free CSRs only.
    let other_subject = device.key.csr("fleet-1-renamed").expect("csr");
    fleet
        .refused(
            &device.client,
            "default",
            &other_subject,
            400,
            "reenroll.subject_changed",
        )
        .await;

    // A SAN change: a device enrolled with DNS names (openssl-made key and CSRs) asks for others.
    let key_pem = tmp.path().join("named.key");
    let named_csr = tmp.path().join("named.der");
    let (ok, out) = run(
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
            "/CN=fleet-named",
            "-addext",
            "subjectAltName=DNS:a.fleet.example",
            "-keyout",
            &key_pem.display().to_string(),
            "-outform",
            "DER",
            "-out",
            &named_csr.display().to_string(),
        ],
        &[],
    );
    assert!(ok, "{out}");
    let (status, text) = fleet
        .ca
        .post(
            "/default/simpleenroll",
            &std::fs::read(&named_csr).expect("csr"),
        )
        .await;
    assert_eq!(status, 200, "{text}");
    let named_cert = certificate_from_response(text.as_bytes());
    let named_key = DeviceKey::from_pkcs8(&attestca::pem::read_private_key(&key_pem).expect("key"))
        .expect("key");
    let named = fleet.client_for("named", &named_cert, &named_key);
    let renamed_csr = tmp.path().join("renamed.der");
    let (ok, out) = run(
        "openssl",
        &[
            "req",
            "-new",
            "-key",
            &key_pem.display().to_string(),
            "-subj",
            "/CN=fleet-named",
            "-addext",
            "subjectAltName=DNS:b.fleet.example",
            "-outform",
            "DER",
            "-out",
            &renamed_csr.display().to_string(),
        ],
        &[],
    );
    assert!(ok, "{out}");
    fleet
        .refused(
            &named,
            "default",
            &std::fs::read(&renamed_csr).expect("csr"),
            400,
            "reenroll.san_changed",
        )
        .await;
    let same = named_key
        .renewal_csr(&cert_of(&named_cert), Vec::new())
        .expect("csr");
    assert_eq!(
        fleet.reenroll(&named, "default", &same).await.0,
        200,
        "the same names renew"
    );

    // ChangeSubjectName (RFC 6402 id-cmc-changeSubjectName as a CSR attribute) is refused.
    let change = x509_cert::attr::Attribute {
        oid: der::asn1::ObjectIdentifier::new_unwrap("1.3.6.1.5.5.7.7.36"),
        values: der::asn1::SetOfVec::try_from(vec![
            der::asn1::Any::from_der(&[0x30, 0x00]).expect("empty SEQUENCE"),
        ])
        .expect("set"),
    };
    let csr = device
        .key
        .renewal_csr(&cert_of(&device.cert), vec![change])
        .expect("csr");
    fleet
        .refused(
            &device.client,
            "default",
            &csr,
            400,
            "reenroll.change_subject_name",
        )
        .await;

    // Revoked and expired certificates.
    let revoked = fleet.enroll("default", "fleet-revoked").await;
    let (ok, out) = run(
        env!("CARGO_BIN_EXE_attestca"),
        &[
            "revoke",
            "--config",
            &fleet.tmp.join("attestca.toml").display().to_string(),
            "--serial",
            &serial_of(&revoked.cert),
            "--reason",
            "keyCompromise",
        ],
        &[],
    );
    assert!(ok, "attestca revoke: {out}");
    let csr = revoked
        .key
        .renewal_csr(&cert_of(&revoked.cert), Vec::new())
        .expect("csr");
    fleet
        .refused(&revoked.client, "default", &csr, 403, "reenroll.revoked")
        .await;
    let expired = fleet.enroll("default", "fleet-expired").await;
    {
        let db = sqlx::SqlitePool::connect(&format!("sqlite://{}", fleet.ca.db))
            .await
            .expect("db");
        sqlx::query("UPDATE certificates SET not_after = 1000 WHERE serial = $1")
            .bind(serial_of(&expired.cert))
            .execute(&db)
            .await
            .expect("expire");
        db.close().await;
    }
    let csr = expired
        .key
        .renewal_csr(&cert_of(&expired.cert), Vec::new())
        .expect("csr");
    fleet
        .refused(&expired.client, "default", &csr, 403, "reenroll.expired")
        .await;

    // Too early in the certificate's life; renewed too recently (429 with Retry-After).
    let young = fleet.enroll("strict", "fleet-young").await;
    let csr = young
        .key
        .renewal_csr(&cert_of(&young.cert), Vec::new())
        .expect("csr");
    fleet
        .refused(&young.client, "strict", &csr, 403, "reenroll.too_early")
        .await;
    let busy = fleet.enroll("limited", "fleet-busy").await;
    let csr = busy
        .key
        .renewal_csr(&cert_of(&busy.cert), Vec::new())
        .expect("csr");
    let before = fleet.certificate_count().await;
    let (status, text, retry_after) = fleet.reenroll(&busy.client, "limited", &csr).await;
    assert_eq!(status, 429, "{text}");
    assert!(text.starts_with("reenroll.rate_limited"), "{text}");
    assert!(
        retry_after
            .and_then(|v| v.parse::<u64>().ok())
            .is_some_and(|s| s > 3000),
        "Retry-After"
    );
    assert_eq!(fleet.certificate_count().await, before);
    // Renewing under another profile than the certificate's.
    fleet
        .refused(
            &busy.client,
            "default",
            &csr,
            403,
            "reenroll.profile_mismatch",
        )
        .await;

    // The predecessor is revoked as superseded when the profile says so.
    let old = fleet.enroll("supersede", "fleet-supersede").await;
    let csr = old
        .key
        .renewal_csr(&cert_of(&old.cert), Vec::new())
        .expect("csr");
    assert_eq!(fleet.reenroll(&old.client, "supersede", &csr).await.0, 200);
    let db = sqlx::SqlitePool::connect(&format!("sqlite://{}?mode=ro", fleet.ca.db))
        .await
        .expect("db");
    let (status, reason): (String, Option<String>) =
        sqlx::query_as("SELECT status, revocation_reason FROM certificates WHERE serial = $1")
            .bind(serial_of(&old.cert))
            .fetch_one(&db)
            .await
            .expect("row");
    assert_eq!(
        (status.as_str(), reason.as_deref()),
        ("revoked", Some("superseded"))
    );
    // ... and audited, in the same transaction, as the CA's own.
    let audit: Vec<(String, String, String, String)> = sqlx::query_as(
        "SELECT operator, action, outcome, reason FROM audit_events WHERE target = $1",
    )
    .bind(serial_of(&old.cert))
    .fetch_all(&db)
    .await
    .expect("audit");
    assert_eq!(
        audit,
        [(
            "system:renewal".to_owned(),
            "certificate.revoke".to_owned(),
            "done".to_owned(),
            "superseded".to_owned()
        )]
    );
    db.close().await;

    // Attested devices: rekey needs evidence from the same device.
    let (attested, element) = fleet.enroll_attested("fleet-attested").await;
    let new_key = DeviceKey::generate().expect("key");
    let plain = new_key
        .renewal_csr(&cert_of(&attested.cert), Vec::new())
        .expect("csr");
    fleet
        .refused(
            &attested.client,
            "attested",
            &plain,
            403,
            "reenroll.rekey_requires_attestation",
        )
        .await;
    let other_element = fleet.vendor.manufacture().expect("element");
    let nonce = nonce_via(&attested.client, &fleet.ca.url("/attested/nonce")).await;
    let evidence = other_element
        .attest(
            &new_key.public_key().expect("key"),
            &nonce,
            KeyClaims::default(),
        )
        .expect("attest");
    let csr = new_key
        .renewal_csr(
            &cert_of(&attested.cert),
            vec![other_element.evidence_attribute(&evidence).expect("attr")],
        )
        .expect("csr");
    fleet
        .refused(
            &attested.client,
            "attested",
            &csr,
            403,
            "reenroll.device_mismatch",
        )
        .await;
    let nonce = nonce_via(&attested.client, &fleet.ca.url("/attested/nonce")).await;
    let evidence = element
        .attest(
            &new_key.public_key().expect("key"),
            &nonce,
            KeyClaims::default(),
        )
        .expect("attest");
    let csr = new_key
        .renewal_csr(
            &cert_of(&attested.cert),
            vec![element.evidence_attribute(&evidence).expect("attr")],
        )
        .expect("csr");
    let (status, text, _) = fleet.reenroll(&attested.client, "attested", &csr).await;
    assert_eq!(status, 200, "{text}");
    let rekeyed = certificate_from_response(text.as_bytes());
    assert_hardware_module_name(tmp.path(), &rekeyed);
}

/// A renewal storm beyond the admission limit is answered 503 with Retry-After, not queued;
/// the CA keeps answering and serves the rest.
#[tokio::test(flavor = "multi_thread")]
async fn a_renewal_storm_beyond_the_admission_limit_gets_503_with_retry_after() {
    let tmp = tempfile::tempdir().expect("temp dir");
    let ca = ConfiguredCa::start(
        tmp.path(),
        "[profiles.default]\n",
        &[(
            "ATTESTCA_SERVER__MAX_CONCURRENT_ENROLLMENTS",
            "1".to_owned(),
        )],
    )
    .await;
    let chain = ca.dir.join("pki/ca-chain.pem");
    // Enroll a small fleet (one at a time, within the limit).
    let mut fleet = Vec::new();
    for i in 0..24 {
        let key = DeviceKey::generate().expect("key");
        let (status, text) = ca
            .post(
                "/simpleenroll",
                &key.csr(&format!("storm-{i}")).expect("csr"),
            )
            .await;
        assert_eq!(status, 200, "{text}");
        let cert = certificate_from_response(text.as_bytes());
        let (cert_path, key_path) = (
            tmp.path().join(format!("s{i}.crt")),
            tmp.path().join(format!("s{i}.key")),
        );
        write_pem(&cert_path, &cert);
        attestca::pem::write_private_key(&key_path, &key.pkcs8).expect("key");
        let client = https_client(&chain, Some((&cert_path, &key_path)));
        let csr = key.renewal_csr(&cert_of(&cert), Vec::new()).expect("csr");
        fleet.push((client, csr));
    }
    // Everyone renews at once; with one admission permit, some are told to come back.
    let mut refused = None;
    for _ in 0..3 {
        let storm = fleet.iter().map(|(client, csr)| {
            client
                .post(ca.url("/simplereenroll"))
                .header("Content-Type", "application/pkcs10")
                .body(body(csr))
                .send()
        });
        let mut ok = 0;
        for response in futures::future::join_all(storm).await {
            let response = response.expect("response");
            match response.status().as_u16() {
                200 => ok += 1,
                503 => {
                    let retry_after = response.headers().get("retry-after").cloned();
                    let text = response.text().await.expect("body");
                    assert!(text.starts_with("overload.enrollments"), "{text}");
                    refused = retry_after;
                }
                other => panic!("unexpected status {other}"),
            }
        }
        assert!(ok >= 1, "the CA must keep serving during a storm");
        if refused.is_some() {
            break;
        }
    }
    assert!(
        refused.is_some(),
        "no request was refused with Retry-After under a limit of 1"
    );
    let health = reqwest::get(format!("http://{}/healthz", ca.server.http))
        .await
        .expect("healthz");
    assert_eq!(health.status(), 200);
}
