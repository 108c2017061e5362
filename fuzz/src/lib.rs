//! What the fuzz targets share: the fixtures `fuzz/seed.sh` writes under
//! `fuzz/target/seed-state` (vendor trust store, pinned times, statement scenarios, the
//! manifest signer, the OCSP issuer), loaded once per process, and the harness of each target.
//!
//! The harnesses are here rather than in the target files so that a finding can be replayed
//! with the same code (`cargo fuzz run <target> <file>`), and every harness fails loudly when
//! its fixtures are missing instead of fuzzing nothing.

use std::path::PathBuf;
use std::sync::{Arc, LazyLock};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use attestca::attestation::gate::{AttestationGate, all_verifiers};
use attestca::attestation::vendors::VendorConfig;
use attestca::attestation::{
    EvidenceCertificate, FixedClock, StatementVerifier, VendorTrustStore, VerificationBudget,
    VerificationContext, bundle,
};
use attestca::config::{OcspNoncePolicy, ProfileConfig, SanType};
use attestca::issuance::IssuanceProfile;
use der::Decode;
use x509_cert::SubjectPublicKeyInfo;
use x509_cert::request::CertReq;

/// Where `fuzz/seed.sh` put the fixtures (`ATTESTCA_FUZZ_STATE` overrides).
fn state_dir() -> PathBuf {
    let dir = std::env::var_os("ATTESTCA_FUZZ_STATE")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("target/seed-state"));
    assert!(
        dir.join("vendors.json").is_file(),
        "fuzz fixtures missing in {}: run fuzz/seed.sh first",
        dir.display()
    );
    dir
}

fn read(name: &str) -> Vec<u8> {
    let path = state_dir().join(name);
    std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

fn unix(secs: u64) -> SystemTime {
    UNIX_EPOCH + Duration::from_secs(secs)
}

/// The vendor trust store: Microchip, Yubico, Microsoft TPM and the IETF TPM sample's roots
/// (read in place from ../shared/vectors) and the simulated secure element's.
static VENDORS: LazyLock<VendorTrustStore> = LazyLock::new(|| {
    let configs: Vec<VendorConfig> =
        serde_json::from_slice(&read("vendors.json")).expect("vendors.json");
    VendorTrustStore::from_config(&configs).expect("vendor trust store")
});

/// The pinned verification times: 2024-11-01 (real vectors), the simulated vendor's.
static TIMES: LazyLock<Vec<u64>> = LazyLock::new(|| {
    String::from_utf8(read("times.txt"))
        .expect("times.txt")
        .lines()
        .map(|l| l.trim().parse().expect("times.txt: Unix seconds"))
        .collect()
});

/// One gate per pinned time.
static GATES: LazyLock<Vec<AttestationGate>> = LazyLock::new(|| {
    TIMES
        .iter()
        .map(|t| AttestationGate::new(VENDORS.clone(), Arc::new(FixedClock(unix(*t)))))
        .collect()
});

/// A statement verifier with the pool, CSR key and time its real statement verifies against.
pub struct Scenario {
    pub name: String,
    verifier: Box<dyn StatementVerifier>,
    pool: Vec<EvidenceCertificate>,
    key: SubjectPublicKeyInfo,
    at: SystemTime,
}

static SCENARIOS: LazyLock<Vec<Scenario>> = LazyLock::new(|| {
    let root = state_dir().join("scenarios");
    let mut dirs: Vec<PathBuf> = std::fs::read_dir(&root)
        .expect("scenarios")
        .map(|e| e.expect("scenario").path())
        .collect();
    dirs.sort();
    let scenarios: Vec<Scenario> = dirs
        .iter()
        .map(|dir| {
            let file = |name: &str| std::fs::read(dir.join(name)).expect("scenario file");
            let format = String::from_utf8(file("format")).expect("format");
            let verifier = all_verifiers()
                .into_iter()
                .find(|v| v.format().name() == format)
                .expect("a verifier for the scenario's format");
            let at: u64 = String::from_utf8(file("at"))
                .expect("at")
                .trim()
                .parse()
                .expect("at");
            Scenario {
                name: dir.file_name().unwrap_or_default().to_string_lossy().into(),
                verifier,
                pool: attestca::pem::read_evidence_certificates(&dir.join("pool.pem"))
                    .expect("pool.pem"),
                key: SubjectPublicKeyInfo::from_der(&file("key.der")).expect("key.der"),
                at: unix(at),
            }
        })
        .collect();
    assert!(
        !scenarios.is_empty(),
        "no statement scenarios in {}",
        root.display()
    );
    scenarios
});

/// Two issuance profiles: the default one, and a strict one (P-256 only, CN pattern, every
/// SAN type) so that each branch of the name policy is reachable.
static PROFILES: LazyLock<Vec<IssuanceProfile>> = LazyLock::new(|| {
    let strict = ProfileConfig {
        key_algorithms: vec![attestca::config::DeviceKeyAlgorithm::P256],
        cn_pattern: Some("fuzz-[a-z]+-[0-9]{4}".into()),
        san_types: vec![SanType::Dns, SanType::Ip, SanType::Uri, SanType::Email],
        attestation_required: true,
        ..ProfileConfig::default()
    };
    vec![
        IssuanceProfile::from_config("fuzz", &ProfileConfig::default()).expect("default profile"),
        IssuanceProfile::from_config("fuzz-strict", &strict).expect("strict profile"),
    ]
});

static MANIFEST_SIGNER: LazyLock<Vec<u8>> = LazyLock::new(|| read("manifest-signer.der"));

/// A manifest signer the harness holds the key of (certificate DER, protected header, key), so
/// that `manifest_payload` can sign whatever payload the fuzzer makes.
static FUZZ_SIGNER: LazyLock<(Vec<u8>, String, aws_lc_rs::signature::EcdsaKeyPair)> =
    LazyLock::new(|| {
        use base64::Engine;
        use base64::engine::general_purpose::URL_SAFE_NO_PAD;
        use sha2::Digest;
        let der = read("fuzz-signer.der");
        let cert = attestca::attestation::EvidenceCertificate::from_der(&der).expect("signer");
        let ski = cert
            .tbs_certificate()
            .get_extension::<x509_cert::ext::pkix::SubjectKeyIdentifier>()
            .expect("SKI")
            .expect("SKI")
            .1;
        let header = serde_json::json!({
            "alg": "ES256",
            "kid": URL_SAFE_NO_PAD.encode(ski.0.as_bytes()),
            "x5t#S256": URL_SAFE_NO_PAD.encode(sha2::Sha256::digest(&der)),
        });
        let key = aws_lc_rs::signature::EcdsaKeyPair::from_pkcs8(
            &aws_lc_rs::signature::ECDSA_P256_SHA256_FIXED_SIGNING,
            &read("fuzz-signer.pk8"),
        )
        .expect("signer key");
        (der, URL_SAFE_NO_PAD.encode(header.to_string()), key)
    });

static OCSP_ISSUER: LazyLock<attestca::ocsp::request::IssuerHashes> = LazyLock::new(|| {
    let cert = x509_cert::Certificate::from_der(&read("ocsp-issuer.der")).expect("issuer");
    attestca::ocsp::request::IssuerHashes::of(&cert).expect("issuer hashes")
});

/// Loads every fixture now (the targets call it from libFuzzer's init, so that a missing
/// fixture stops the run before the first input).
pub fn init() {
    LazyLock::force(&VENDORS);
    LazyLock::force(&GATES);
    LazyLock::force(&SCENARIOS);
    LazyLock::force(&PROFILES);
    LazyLock::force(&MANIFEST_SIGNER);
    LazyLock::force(&FUZZ_SIGNER);
    LazyLock::force(&OCSP_ISSUER);
}

// ---------------------------------------------------------------------------------------------
// Harnesses

/// `est_body`: the EST body decoder (base64 with whitespace anywhere, optional PEM armour), and
/// the round trips decode(encode(x)) == x for the decoded bytes and for the input itself.
pub fn est_body(data: &[u8]) {
    use attestca::est::codec::{decode_body, encode_body};
    if let Ok(der) = decode_body(data) {
        assert_eq!(
            decode_body(encode_body(&der).as_bytes()).as_deref(),
            Ok(der.as_slice()),
            "decode(encode(decode(x))) != decode(x)"
        );
    }
    if !data.is_empty() {
        assert_eq!(
            decode_body(encode_body(data).as_bytes()).as_deref(),
            Ok(data),
            "decode(encode(x)) != x"
        );
    }
}

/// `csr`: CSR decoding, proof of possession and the name/key policy of both profiles; a CSR
/// that passes also has its evidence carrier decoded and its SANs described (as events do).
pub fn csr(data: &[u8]) {
    for profile in PROFILES.iter() {
        if let Ok(validated) = attestca::enrollment::csr::validate(data, &profile.policy) {
            let _ = attestca::enrollment::csr::describe_alt_names(&validated.subject_alt_names);
            let _ = bundle::from_csr(&validated.request);
        }
    }
}

/// `attestation_bundle`: the first byte selects the pinned time (bit 0) and whether the rest
/// is a CSR (bit 7 clear: decoded, its evidence found and verified for its own key) or a bare
/// AttestationBundle (bit 7 set: decoded and verified for the simulated device's key).
pub fn attestation_bundle(data: &[u8]) {
    let Some((&selector, rest)) = data.split_first() else {
        return;
    };
    let gate = &GATES[usize::from(selector & 1) % GATES.len()];
    if selector & 0x80 == 0 {
        let Ok(request) = CertReq::from_der(rest) else {
            return;
        };
        if let Ok(Some(evidence)) = gate.evidence(&request) {
            let _ = gate.verify(&evidence, &request.info.public_key);
        }
    } else if let Ok(evidence) = bundle::decode(rest) {
        let key = &SCENARIOS[usize::from(selector & 0x7f) % SCENARIOS.len()].key;
        let _ = gate.verify(&evidence, key);
    }
}

/// `attestation_statement`: the first byte selects a scenario (verifier, pool, CSR key, time);
/// the rest is the statement given straight to that verifier (x509-chain, device-certificate,
/// tpm-certify with its TPMS_ATTEST / TPMT_PUBLIC decoding).
pub fn attestation_statement(data: &[u8]) {
    let Some((&selector, statement)) = data.split_first() else {
        return;
    };
    let scenario = &SCENARIOS[usize::from(selector) % SCENARIOS.len()];
    let context = VerificationContext {
        csr_key: &scenario.key,
        pool: &scenario.pool,
        vendors: &VENDORS,
        at: scenario.at,
        budget: VerificationBudget::per_request(),
    };
    let _ = scenario.verifier.verify(statement, &context);
}

/// `manifest`: a supply-chain manifest (JSON array of flattened JWS) verified against the real
/// Microchip Manifest Signer 005.
pub fn manifest(data: &[u8]) {
    let _ = attestca::attestation::manifest::verify(data, &MANIFEST_SIGNER);
}

/// `manifest_payload`: the input is the payload of a manifest entry, signed by the harness
/// (the signature is checked before the payload is read, so mutated real entries never get
/// there): uniqueId, partNumber, the JWKs and their x5c certificates.
pub fn manifest_payload(data: &[u8]) {
    use base64::Engine;
    use base64::engine::general_purpose::URL_SAFE_NO_PAD;
    let (signer_der, protected, key) = &*FUZZ_SIGNER;
    let payload = URL_SAFE_NO_PAD.encode(data);
    let signing_input = format!("{protected}.{payload}");
    let signature = key
        .sign(
            &aws_lc_rs::rand::SystemRandom::new(),
            signing_input.as_bytes(),
        )
        .expect("sign");
    let entry = serde_json::json!([{
        "protected": protected,
        "payload": payload,
        "signature": URL_SAFE_NO_PAD.encode(signature.as_ref()),
    }]);
    let _ = attestca::attestation::manifest::verify(entry.to_string().as_bytes(), signer_der);
}

/// `ocsp_request`: first byte 0 (even) = a POST body (DER), 1 (odd) = the path of a GET
/// (percent-encoded base64, RFC 6960 appendix A); decoded under both nonce policies, and each
/// CertID matched against the issuer as the responder does.
pub fn ocsp_request(data: &[u8]) {
    use attestca::ocsp::request::{decode_get_path, parse};
    let Some((&selector, rest)) = data.split_first() else {
        return;
    };
    let der = if selector & 1 == 0 {
        rest.to_vec()
    } else {
        let Ok(path) = std::str::from_utf8(rest) else {
            return;
        };
        match decode_get_path(path) {
            Ok(der) => der,
            Err(_) => return,
        }
    };
    for policy in [OcspNoncePolicy::Echo, OcspNoncePolicy::Ignore] {
        if let Ok(request) = parse(&der, policy) {
            for cert_id in &request.cert_ids {
                let _ = OCSP_ISSUER.identify(cert_id);
            }
        }
    }
}

/// `api_json`: the operator API's request decoding. First byte: 0 = a revocation body sent as
/// application/json, 1 = the same without a Content-Type, 2/3/4 = the query string of
/// /certificates, /events, /audit-events.
pub fn api_json(data: &[u8]) {
    use attestca::api::fuzzing;
    let Some((&selector, rest)) = data.split_first() else {
        return;
    };
    match selector % 5 {
        0 => {
            let _ = fuzzing::revoke_body(Some("application/json"), rest);
        }
        1 => {
            let _ = fuzzing::revoke_body(None, rest);
        }
        listing => {
            if let Ok(query) = std::str::from_utf8(rest) {
                let _ = fuzzing::list_query(listing - 2, query);
            }
        }
    }
}
