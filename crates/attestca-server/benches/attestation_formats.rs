//! Criterion benchmarks of attestation verification: each statement format through its real
//! verifier (`attestation::x509_chain`, `device_cert`, `tpm`), and the whole gate for an attested
//! CSR. Every benchmark verifies one statement of a bundle decoded beforehand, against a trust
//! store of the one vendor concerned, at a pinned time:
//!
//! - `attestation_x509_chain_simulated_se`: the simulated secure element (`rig::secure_element`):
//!   attestation certificate ← AK certificate ← vendor CA ← vendor root, P-256.
//! - `attestation_x509_chain_yubikey_piv`: a real YubiKey's slot-9a attestation ← its f9
//!   certificate ← Yubico PIV Root CA (vectors; two RSA-2048 signatures, a P-256 key).
//! - `attestation_device_certificate_microchip`: a real ATECC608C part's device certificate
//!   from the Microchip manifest ← Signer 2A00 ← Root CA 002 (vectors, P-256).
//! - `attestation_tpm_certify_simulated`: TPM2_Certify evidence of a simulated TPM
//!   (crates/attestca-testkit/src/simulated_tpm.rs, as crates/attestca-server/tests/it/tpm_simulated.rs enrolls it): TPMS_ATTEST signed
//!   by a P-256 AK whose certificate chains to the AK-CA root.
//! - `attestation_tpm_certify_ietf_sample`: the IETF TPM2_Certify sample's statement (vectors;
//!   RSA-2048 AK) at 2024-11-01, inside its certificates' validity. Verifier only: the sample
//!   CSR's own signature is invalid, so it cannot go through the gate (crates/attestca-server/tests/it/tpm_vector.rs).
//! - `attestation_gate_simulated_se`: `AttestationGate::evidence` + `verify` on the parsed
//!   simulated-SE CSR (bundle decode, dispatch, the x509-chain verification, the metric).
//! - `microchip_manifest_verify`: `attestation::manifest::verify` of the real 10-part manifest
//!   against its pinned signer (ES256 per entry; what `attestca vendor import-manifest` checks).
//!
//! The vectors are read in place from `../shared/vectors` (relative to the crate); without them
//! their benchmarks are skipped with a note.
//!
//! Run: `cargo bench --bench attestation_formats`. Not part of the test command;
//! `cargo test --all-targets` runs each once as a smoke test.

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use criterion::{Criterion, criterion_group, criterion_main};
use der::Decode;
use x509_cert::SubjectPublicKeyInfo;
use x509_cert::request::CertReq;

use attestca::attestation::device_cert::DeviceCertificateVerifier;
use attestca::attestation::gate::AttestationGate;
use attestca::attestation::tpm::TpmCertifyVerifier;
use attestca::attestation::vendors::VendorReader;
use attestca::attestation::x509_chain::X509ChainVerifier;
use attestca::attestation::{
    AttestationFormat, EvidenceCertificate, FixedClock, StatementVerifier, Vendor,
    VendorTrustStore, VerificationBudget, VerificationContext,
};
use attestca::issuance::software_ca::SoftwareCa;
use attestca_sim::device::DeviceKey;
use attestca_sim::secure_element::SimulatedVendor;

use attestca_testkit::simulated_tpm;

/// The real vectors, read in place.
const VECTORS: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../../../shared/vectors");
/// 2026-01-01T00:00:00Z: inside the validity of the YubiKey and Microchip certificates.
const VECTORS_TIME: u64 = 1_767_225_600;
/// 2024-11-01T00:00:00Z: inside the IETF TPM sample certificates' validity (one month).
const TPM_SAMPLE_TIME: u64 = 1_730_419_200;

fn at(unix: u64) -> SystemTime {
    SystemTime::UNIX_EPOCH + Duration::from_secs(unix)
}

/// One statement to verify, its verifier, and everything the context needs.
struct Case {
    verifier: &'static dyn StatementVerifier,
    csr_key: SubjectPublicKeyInfo,
    statement: Vec<u8>,
    pool: Vec<EvidenceCertificate>,
    vendors: VendorTrustStore,
    at: SystemTime,
}

impl Case {
    /// The statement of the only type `verifier` reads in the evidence of the CSR `csr`.
    fn from_csr(
        csr: &CertReq,
        verifier: &'static dyn StatementVerifier,
        vendors: VendorTrustStore,
        at: SystemTime,
    ) -> Self {
        let evidence = attestca::attestation::bundle::from_csr(csr)
            .expect("bundle decodes")
            .expect("the CSR carries evidence");
        let statement = evidence
            .statements
            .into_iter()
            .find(|(t, _)| *t == verifier.statement_type())
            .map(|(_, s)| s)
            .expect("a statement for the verifier");
        Self {
            verifier,
            csr_key: csr.info.public_key.clone(),
            statement,
            pool: evidence.certificates,
            vendors,
            at,
        }
    }

    /// A certificate statement (x509-chain, device-certificate) for its own key.
    fn certificate(
        verifier: &'static dyn StatementVerifier,
        statement: Vec<u8>,
        pool: Vec<EvidenceCertificate>,
        vendors: VendorTrustStore,
    ) -> Self {
        let leaf = EvidenceCertificate::from_der(&statement).expect("statement certificate");
        Self {
            verifier,
            csr_key: leaf.tbs_certificate().subject_public_key_info().clone(),
            statement,
            pool,
            vendors,
            at: at(VECTORS_TIME),
        }
    }

    /// The context of one request (a fresh signature-check budget each time, as the gate
    /// makes one per request).
    fn context(&self) -> VerificationContext<'_> {
        VerificationContext {
            csr_key: &self.csr_key,
            pool: &self.pool,
            vendors: &self.vendors,
            at: self.at,
            budget: VerificationBudget::per_request(),
        }
    }

    /// Checks that the statement verifies, then benchmarks its verification as `name`.
    fn bench(&self, c: &mut Criterion, name: &str) {
        let verifier = self.verifier;
        let attested = verifier
            .verify(&self.statement, &self.context())
            .unwrap_or_else(|e| panic!("{name}: {e}"));
        assert_eq!(attested.format, verifier.format(), "{name}");
        c.bench_function(name, |b| {
            b.iter(|| {
                verifier
                    .verify(&self.statement, &self.context())
                    .expect("verifies")
            })
        });
    }
}

/// A trust store of one vendor, for one format.
fn trusting(
    roots: Vec<EvidenceCertificate>,
    format: AttestationFormat,
    reader: VendorReader,
    hardware_type: &str,
) -> VendorTrustStore {
    VendorTrustStore::new(vec![Vendor {
        name: "bench".into(),
        roots,
        formats: vec![format],
        reader,
        hardware_type: hardware_type.parse().expect("hwType OID"),
        denied_serials: Default::default(),
        allow_sha1: false,
    }])
}

fn certificate(der: &[u8]) -> EvidenceCertificate {
    EvidenceCertificate::from_der(der).expect("certificate")
}

/// The certificates of a PEM file of the vectors.
fn vector_certificates(dir: &Path, name: &str) -> Vec<EvidenceCertificate> {
    attestca::pem::read_evidence_certificates(&dir.join(name)).expect("vector certificates")
}

fn simulated_se(c: &mut Criterion, dir: &Path) {
    let vendor = SimulatedVendor::create(dir).expect("simulated vendor");
    let element = vendor.manufacture().expect("secure element");
    let (_, csr) = element
        .enroll_key("bench-device-0001", &[7u8; 32])
        .expect("attested CSR");
    let request = CertReq::from_der(&csr).expect("CSR");
    let vendors = || {
        trusting(
            vec![certificate(&vendor.root_der)],
            AttestationFormat::X509Chain,
            VendorReader::SimulatedSe,
            &attestca::attestation::ID_HW_SIMULATED_SE.to_string(),
        )
    };
    let now = SystemTime::now();
    Case::from_csr(&request, &X509ChainVerifier, vendors(), now)
        .bench(c, "attestation_x509_chain_simulated_se");

    let gate = AttestationGate::new(vendors(), Arc::new(FixedClock(now)));
    c.bench_function("attestation_gate_simulated_se", |b| {
        b.iter(|| {
            let evidence = gate
                .evidence(&request)
                .expect("evidence decodes")
                .expect("evidence");
            gate.verify(&evidence, &request.info.public_key)
                .expect("verifies")
        })
    });
}

fn simulated_tpm(c: &mut Criterion) {
    let ak_ca = SoftwareCa::self_signed("CN=Simulated TPM AK CA", 1).expect("AK CA");
    let tpm = simulated_tpm::SimulatedTpm::new(&ak_ca);
    let key = DeviceKey::generate().expect("key");
    let csr = tpm.csr(&key, "bench-tpm-0001", &[9u8; 16], false);
    let vendors = trusting(
        vec![certificate(&ak_ca.der)],
        AttestationFormat::TpmCertify,
        VendorReader::Tpm,
        "2.23.133.1.2",
    );
    let request = CertReq::from_der(&csr).expect("CSR");
    Case::from_csr(&request, &TpmCertifyVerifier, vendors, SystemTime::now())
        .bench(c, "attestation_tpm_certify_simulated");
}

fn yubikey(c: &mut Criterion, vectors: &Path) {
    let attestation =
        attestca::pem::read_certificate_ders(&vectors.join("yubico/yubikey-a-9a-attestation.pem"))
            .expect("9a attestation")
            .remove(0);
    let vendors = trusting(
        vector_certificates(vectors, "yubico/yubico-piv-root-ca-263751.pem"),
        AttestationFormat::X509Chain,
        VendorReader::YubikeyPiv,
        "1.3.6.1.4.1.41482.3",
    );
    let pool = vector_certificates(vectors, "yubico/yubikey-a-f9-device.pem");
    Case::certificate(&X509ChainVerifier, attestation, pool, vendors)
        .bench(c, "attestation_x509_chain_yubikey_piv");
}

fn microchip(c: &mut Criterion, vectors: &Path) {
    let manifest =
        std::fs::read(vectors.join("microchip/ECC608C-TNGTLSU-B.manifest.json")).expect("manifest");
    let signer =
        attestca::pem::read_certificate_ders(&vectors.join("microchip/manifest-signer-005.crt"))
            .expect("manifest signer")
            .remove(0);
    let parts = attestca::attestation::manifest::verify(&manifest, &signer).expect("manifest");
    let part = &parts[0];
    let vendors = trusting(
        vector_certificates(vectors, "microchip/crypto-authentication-root-ca-002.pem"),
        AttestationFormat::DeviceCertificate,
        VendorReader::Microchip,
        "1.3.6.1.4.1.32473.7030.5.1",
    );
    let pool = part.chain.iter().map(|der| certificate(der)).collect();
    let device = part.device_certificate.clone().expect("device certificate");
    Case::certificate(&DeviceCertificateVerifier, device, pool, vendors)
        .bench(c, "attestation_device_certificate_microchip");

    c.bench_function("microchip_manifest_verify", |b| {
        b.iter(|| attestca::attestation::manifest::verify(&manifest, &signer).expect("manifest"))
    });
}

fn ietf_tpm_sample(c: &mut Criterion, vectors: &Path) {
    let pem = std::fs::read(vectors.join("tpm/tcgAttestTpmCertify.csr.pem")).expect("sample");
    let (_, der) = pem_rfc7468::decode_vec(&pem).expect("PEM");
    let request = CertReq::from_der(&der).expect("CSR");
    let mut case = Case::from_csr(
        &request,
        &TpmCertifyVerifier,
        VendorTrustStore::default(),
        at(TPM_SAMPLE_TIME),
    );
    // The bundle carries the AK certificate and its self-signed test root: trust that root.
    let root = case
        .pool
        .iter()
        .find(|c| c.tbs_certificate().subject() == c.tbs_certificate().issuer())
        .expect("the sample root")
        .clone();
    case.vendors = trusting(
        vec![root],
        AttestationFormat::TpmCertify,
        VendorReader::Tpm,
        "2.23.133.1.2",
    );
    case.bench(c, "attestation_tpm_certify_ietf_sample");
}

fn benches(c: &mut Criterion) {
    let dir = tempfile::tempdir().expect("temp dir");
    simulated_se(c, dir.path());
    simulated_tpm(c);
    let vectors = Path::new(VECTORS);
    if vectors.is_dir() {
        yubikey(c, vectors);
        microchip(c, vectors);
        ietf_tpm_sample(c, vectors);
    } else {
        println!(
            "attestation_formats: no vectors at {VECTORS}: the YubiKey, Microchip and IETF TPM \
             benchmarks are skipped"
        );
    }
}

criterion_group!(attestation_formats, benches);
criterion_main!(attestation_formats);
