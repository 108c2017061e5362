//! The worst requests known, next to a normal one: what one request can cost the CA's CPU in
//! process, from the request body to the decision (and for the normal request, the signature).
//!
//! - `normal_attested_enrollment`: the body of a simulated secure element's attested CSR
//!   decoded, the CSR verified, the evidence decoded and verified (x509 chain to the vendor
//!   root), and the certificate built and signed with a software P-256 key. A real enrollment
//!   also costs TLS, HTTP and the database, so this is the smaller side of every ratio.
//! - `looping_pool_16`: the largest accepted pool of certificates under two names that issue
//!   each other, all for one key (before the bound: n⁴ signature checks).
//! - `looping_pool_64`: the same with 64 certificates, refused before any check.
//! - `distinct_key_ladder_16`: 16 certificates with distinct P-384 keys whose every link
//!   verifies, so the search spends the whole budget of signature checks.
//! - `tpm_signer_search_16`: a TPM2_Certify statement with 16 pool certificates of distinct
//!   P-384 keys, none of which signed it: each is tried once.
//! - `deep_nesting_statement`: a statement of 10,000 nested SEQUENCEs (about as deep as the body
//!   limit allows).
//! - `maximal_body_csr`: a CSR of nearly 64 KiB (a large unknown attribute), base64 in the body.
//!
//! Run: `cargo bench --bench adversarial_inputs`; figures and the ratio to the normal request
//! in docs/performance.md. `cargo test --all-targets` runs each once as a smoke test.

use std::sync::Arc;

use criterion::{Criterion, criterion_group, criterion_main};
use der::Decode;
use der::asn1::{Any, OctetString, SetOfVec};

use attestca::attestation::gate::AttestationGate;
use attestca::attestation::vendors::VendorReader;
use attestca::attestation::{
    AttestationFormat, EvidenceCertificate, ID_STMT_TPM_CERTIFY, SystemClock, Vendor,
    VendorTrustStore, bundle,
};
use attestca::config::ProfileConfig;
use attestca::issuance::build::{CertificateSpec, random_serial};
use attestca::issuance::profile::IssuanceProfile;
use attestca::issuance::software_ca::{SoftwareCa, name};
use attestca::reason::Reason;
use attestca::signer::CaKeyAlgorithm;
use attestca::signer::software::{SoftwareSigner, generate_pkcs8};
use attestca_sim::device::DeviceKey;
use attestca_sim::secure_element::SimulatedVendor;
use x509_cert::attr::Attribute;
use x509_cert::request::CertReq;

use attestca_testkit::hostile;
use attestca_testkit::simulated_tpm;

/// The decision's CPU work for one request body: decode, CSR checks, evidence verification.
/// Returns the verification result's reason code ("ok" when it verifies).
fn decide(body: &[u8], profile: &IssuanceProfile, gate: &AttestationGate) -> &'static str {
    let Ok(der) = attestca::est::codec::decode_body(body) else {
        return Reason::RequestEncoding.as_str();
    };
    let csr = match attestca::enrollment::csr::validate(&der, &profile.policy) {
        Ok(csr) => csr,
        Err(e) => return e.reason_code().as_str(),
    };
    match gate.evidence(&csr.request) {
        Ok(Some(evidence)) => match gate.verify(&evidence, &csr.public_key) {
            Ok(_) => "ok",
            Err(e) => e.code.as_str(),
        },
        Ok(None) => Reason::AttestationRequired.as_str(),
        Err(e) => e.code.as_str(),
    }
}

fn body(der: &[u8]) -> Vec<u8> {
    attestca::est::codec::encode_body(der).into_bytes()
}

/// A CSR for a new key carrying `attribute`.
fn csr_with(cn: &str, attribute: Attribute) -> Vec<u8> {
    DeviceKey::generate()
        .expect("key")
        .csr_with_attributes(cn, vec![attribute])
        .expect("csr")
}

/// A TPM2_Certify statement genuinely made by a simulated TPM, with a pool of `n` certificates
/// of distinct P-384 keys (none the AK's).
fn tpm_signer_search(n: usize) -> Vec<u8> {
    let ak_ca = SoftwareCa::self_signed("CN=Bench TPM AK CA", 1).expect("AK CA");
    let tpm = simulated_tpm::SimulatedTpm::new(&ak_ca);
    let genuine = tpm.csr(&DeviceKey::generate().expect("key"), "tpm", &[7; 32], false);
    let request = CertReq::from_der(&genuine).expect("CSR");
    let evidence = bundle::from_csr(&request)
        .expect("bundle")
        .expect("evidence");
    let signer = SoftwareCa::self_signed("CN=Bench Stranger", 1).expect("CA");
    let pool: Vec<Vec<u8>> = (0..n)
        .map(|_| {
            let pkcs8 = generate_pkcs8(CaKeyAlgorithm::EcdsaP384).expect("key");
            let key = SoftwareSigner::from_pkcs8(CaKeyAlgorithm::EcdsaP384, &pkcs8).expect("key");
            signer
                .issue(
                    name("CN=Not the AK").expect("name"),
                    attestca::signer::Signer::public_key(&key),
                    86_400,
                    Vec::new(),
                )
                .expect("certificate")
        })
        .collect();
    let evidence = bundle::encode(&evidence.statements, &pool).expect("bundle");
    csr_with("tpm-search", attribute(&evidence))
}

fn attribute(evidence: &[u8]) -> Attribute {
    Attribute {
        oid: attestca::attestation::ID_AA_ATTESTATION,
        values: SetOfVec::try_from(vec![Any::from_der(evidence).expect("any")]).expect("set"),
    }
}

/// A bundle whose one TPM statement is `depth` nested SEQUENCEs.
fn deep_nesting(depth: usize) -> Vec<u8> {
    let mut inner: Vec<u8> = vec![0x30, 0x00];
    for _ in 0..depth {
        let mut outer = vec![0x30];
        let len = inner.len();
        match len {
            0..=0x7f => outer.push(len as u8),
            0x80..=0xff => outer.extend([0x81, len as u8]),
            _ => outer.extend([0x82, (len >> 8) as u8, len as u8]),
        }
        outer.extend(inner);
        inner = outer;
    }
    let evidence = bundle::encode(&[(ID_STMT_TPM_CERTIFY, inner)], &[]).expect("bundle");
    csr_with("deep", attribute(&evidence))
}

/// A CSR of about 63 KiB base64: an unknown attribute with a large OCTET STRING.
fn maximal_body() -> Vec<u8> {
    let filler = Attribute {
        oid: "1.3.6.1.4.1.32473.7030.99".parse().expect("oid"),
        values: SetOfVec::try_from(vec![
            Any::encode_from(&OctetString::new(vec![0x5a; 46_000]).expect("octets")).expect("any"),
        ])
        .expect("set"),
    };
    csr_with("maximal", filler)
}

fn benches(c: &mut Criterion) {
    let dir = tempfile::tempdir().expect("temp dir");
    let vendor = SimulatedVendor::create(dir.path()).expect("simulated vendor");
    let vendors = VendorTrustStore::new(vec![Vendor {
        name: "simulated-se".into(),
        roots: vec![EvidenceCertificate::from_der(&vendor.root_der).expect("root")],
        formats: vec![AttestationFormat::X509Chain, AttestationFormat::TpmCertify],
        reader: VendorReader::SimulatedSe,
        hardware_type: attestca::attestation::ID_HW_SIMULATED_SE,
        denied_serials: Default::default(),
        allow_sha1: false,
    }]);
    let gate = AttestationGate::new(vendors, Arc::new(SystemClock));
    let profile =
        IssuanceProfile::from_config("default", &ProfileConfig::default()).expect("profile");

    // The normal request, to the signature.
    let element = vendor.manufacture().expect("secure element");
    let (key, csr) = element
        .enroll_key("bench-device-0001", &[7; 32])
        .expect("CSR");
    let normal = body(&csr);
    assert_eq!(decide(&normal, &profile, &gate), "ok");
    let ca_key = SoftwareSigner::from_pkcs8(
        CaKeyAlgorithm::EcdsaP256,
        &generate_pkcs8(CaKeyAlgorithm::EcdsaP256).expect("key"),
    )
    .expect("CA key");
    let subject = name("CN=bench-device-0001").expect("name");
    c.bench_function("normal_attested_enrollment", |b| {
        b.iter(|| {
            assert_eq!(decide(&normal, &profile, &gate), "ok");
            CertificateSpec {
                serial: random_serial(),
                issuer: subject.clone(),
                subject: subject.clone(),
                public_key: key.public_key().expect("spki"),
                not_before: 1_790_000_000,
                not_after: 1_821_536_000,
                extensions: Vec::new(),
            }
            .sign(&ca_key)
            .expect("signed")
        })
    });

    let cases: Vec<(&str, Vec<u8>, &[&str])> = vec![
        (
            "looping_pool_16",
            body(&hostile::looping_pool_csr(&[7; 32], 16)),
            &["attestation.untrusted_root"],
        ),
        (
            "looping_pool_64",
            body(&hostile::looping_pool_csr(&[7; 32], 64)),
            &["attestation.too_complex"],
        ),
        (
            "distinct_key_ladder_16",
            body(&hostile::distinct_key_ladder_csr(&[7; 32], 16)),
            &["attestation.too_complex"],
        ),
        (
            "tpm_signer_search_16",
            body(&tpm_signer_search(16)),
            &["attestation.signature_invalid"],
        ),
        (
            "deep_nesting_statement",
            body(&deep_nesting(10_000)),
            &["attestation.malformed"],
        ),
        (
            "maximal_body_csr",
            body(&maximal_body()),
            &["attestation.required"],
        ),
    ];
    for (label, request, expected) in &cases {
        let got = decide(request, &profile, &gate);
        assert!(expected.contains(&got), "{label}: {got}");
        assert!(
            request.len() <= 64 * 1024,
            "{label}: {} bytes",
            request.len()
        );
        c.bench_function(label, |b| b.iter(|| decide(request, &profile, &gate)));
    }
}

criterion_group!(adversarial_inputs, benches);
criterion_main!(adversarial_inputs);
