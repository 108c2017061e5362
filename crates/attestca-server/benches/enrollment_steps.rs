//! Criterion micro-benchmarks of single enrollment steps, in process: attested-CSR decode +
//! signature verification (`enrollment::csr::validate` under the default profile), certificate
//! build + sign with the software key and with a SoftHSM key through the CA's PKCS#11 signer
//! (one session: a fresh token in a temporary directory made with `softhsm2-util`, a P-256 key
//! generated in it as `attestca init` does), and certs-only PKCS#7 encoding of the issued
//! certificate.
//!
//! Run: `cargo bench --bench enrollment_steps` (env ATTESTCA_TEST_PKCS11_MODULE, default
//! /usr/lib/softhsm/libsofthsm2.so; the SoftHSM benchmark is skipped with a note without it).
//! Not part of the test command; `cargo test --all-targets` runs each once as a smoke test.

use criterion::{Criterion, criterion_group, criterion_main};
use der::Decode;

use attestca::config::ProfileConfig;
use attestca::issuance::build::{CertificateSpec, random_serial};
use attestca::issuance::profile::IssuanceProfile;
use attestca::signer::CaKeyAlgorithm;
use attestca::signer::pkcs11::Pkcs11Signer;
use attestca::signer::software::{SoftwareSigner, generate_pkcs8};
use attestca_sim::secure_element::SimulatedVendor;

use attestca_testkit::bench::softhsm;

fn benches(c: &mut Criterion) {
    let dir = tempfile::tempdir().expect("temp dir");
    // Before anything else: the token set-up points SOFTHSM2_CONF at it.
    let hsm = softhsm::module().map(|module| {
        let tokens = dir.path().join("softhsm");
        softhsm::init_token(&tokens).expect("SoftHSM token");
        Pkcs11Signer::generate(&softhsm::signer_config(&module, "bench-ca", 1)).expect("HSM key")
    });
    let vendor = SimulatedVendor::create(dir.path()).expect("simulated vendor");
    let element = vendor.manufacture().expect("secure element");
    let (key, csr) = element
        .enroll_key("bench-device-0001", &[7u8; 32])
        .expect("attested CSR");
    let profile =
        IssuanceProfile::from_config("default", &ProfileConfig::default()).expect("profile");
    c.bench_function("csr_decode_and_verify_attested", |b| {
        b.iter(|| attestca::enrollment::csr::validate(&csr, &profile.policy).expect("valid CSR"))
    });

    let pkcs8 = generate_pkcs8(CaKeyAlgorithm::EcdsaP256).expect("key");
    let signer = SoftwareSigner::from_pkcs8(CaKeyAlgorithm::EcdsaP256, &pkcs8).expect("signer");
    let name = attestca::issuance::software_ca::name("CN=bench").expect("name");
    let spec = CertificateSpec {
        serial: random_serial(),
        issuer: name.clone(),
        subject: name,
        public_key: key.public_key().expect("spki"),
        not_before: 1_790_000_000,
        not_after: 1_821_536_000,
        extensions: Vec::new(),
    };
    c.bench_function("certificate_build_and_sign_software", |b| {
        b.iter(|| spec.sign(&signer).expect("signed"))
    });

    if let Some(hsm) = &hsm {
        c.bench_function("certificate_build_and_sign_softhsm", |b| {
            b.iter(|| spec.sign(hsm).expect("signed"))
        });
    } else {
        println!("certificate_build_and_sign_softhsm SKIPPED: no PKCS#11 module");
    }

    let issued = spec.sign(&signer).expect("signed").der;
    x509_cert::Certificate::from_der(&issued).expect("certificate");
    c.bench_function("pkcs7_certs_only_one_certificate", |b| {
        b.iter(|| attestca::est::codec::certs_only(std::slice::from_ref(&issued)).expect("p7"))
    });
}

criterion_group!(enrollment_steps, benches);
criterion_main!(enrollment_steps);
