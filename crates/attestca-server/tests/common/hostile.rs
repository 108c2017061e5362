//! Hostile evidence: what a requester with valid rig credentials can put in a CSR to make the
//! CA work. Shared by tests/hostile_input.rs, benches/adversarial_inputs.rs and the fuzzers' seed
//! builder examples/fuzz_seeds.rs (each includes it with `#[path]`).
//!
//! The path-building pool: certificates under two names that issue each other ("CN=Loop A"
//! issued by "CN=Loop B" and the reverse), all for one key and signed by it, under an
//! attestation certificate issued by "CN=Loop A". Every pool certificate names a possible issuer
//! of every other, so a depth-first search without bounds tries on the order of n⁴ paths, each
//! link a signature check; none reaches a trusted root. The attestation certificate carries the
//! simulated secure element's statement with a nonce of the caller's choosing, so the request
//! gets past the nonce check when the nonce is live.

use attestca::attestation::x509_chain::{KeyOrigin, SimulatedSeKeyAttestation};
use attestca::attestation::{ID_AA_ATTESTATION, ID_EXT_SIMULATED_SE, ID_STMT_X509_CHAIN, bundle};
use attestca::issuance::extensions as ext;
use attestca::issuance::software_ca::{SoftwareCa, name, new_key};
use attestca::signer::Signer;
use attestca_sim::device::DeviceKey;
use der::asn1::{Any, Int, OctetString, SetOfVec};
use der::{Decode, Encode};
use x509_cert::attr::Attribute;
use x509_cert::ext::Extension;
use x509_cert::ext::pkix::KeyUsages;

/// The attestation certificate and the pool of `pool_size` loop certificates (DER).
pub fn looping_pool(key: &DeviceKey, nonce: &[u8], pool_size: usize) -> (Vec<u8>, Vec<Vec<u8>>) {
    let seed = SoftwareCa::self_signed("CN=Loop Seed", 1).expect("seed CA");
    let (loop_key, loop_pkcs8) = new_key().expect("loop key");
    let loop_spki = loop_key.public_key().clone();
    // Two CAs with the same key, one named A and one named B.
    let named = |subject: &str| {
        let der = seed
            .issue_ca(subject, &loop_spki, 1, None)
            .expect("loop CA certificate");
        SoftwareCa::from_certificate_and_key(der, loop_pkcs8.clone()).expect("loop CA")
    };
    let (loop_a, loop_b) = (named("CN=Loop A"), named("CN=Loop B"));
    let pool = (0..pool_size)
        .map(|i| {
            // Even: "Loop A" issued by "Loop B"; odd: the reverse. Random serials make each
            // certificate distinct.
            let (issuer, subject) = if i.is_multiple_of(2) {
                (&loop_b, "CN=Loop A")
            } else {
                (&loop_a, "CN=Loop B")
            };
            issuer
                .issue_ca(subject, &loop_spki, 1, None)
                .expect("pool certificate")
        })
        .collect();
    let attestation = loop_a
        .issue(
            name("CN=Hostile key attestation").expect("name"),
            &key.public_key().expect("device key"),
            3600,
            vec![
                ext::basic_constraints(false, None).expect("bc"),
                ext::key_usage(KeyUsages::DigitalSignature.into()).expect("ku"),
                simulated_se_statement(nonce),
            ],
        )
        .expect("attestation certificate");
    (attestation, pool)
}

/// The simulated secure element's attestation extension, claiming `nonce`.
fn simulated_se_statement(nonce: &[u8]) -> Extension {
    let statement = SimulatedSeKeyAttestation {
        version: Int::new(&[1]).expect("int"),
        nonce: OctetString::new(nonce).expect("nonce"),
        device_serial: OctetString::new(vec![0x10; 8]).expect("serial"),
        key_origin: KeyOrigin::Generated,
        exportable: false,
        firmware: None,
    };
    Extension {
        extn_id: ID_EXT_SIMULATED_SE,
        critical: false,
        extn_value: OctetString::new(statement.to_der().expect("statement")).expect("value"),
    }
}

/// The CSR attribute carrying an x509-chain statement and its pool.
pub fn evidence_attribute(statement: &[u8], pool: &[Vec<u8>]) -> Attribute {
    let evidence =
        bundle::encode(&[(ID_STMT_X509_CHAIN, statement.to_vec())], pool).expect("bundle");
    Attribute {
        oid: ID_AA_ATTESTATION,
        values: SetOfVec::try_from(vec![Any::from_der(&evidence).expect("any")]).expect("set"),
    }
}

/// A CSR (DER) for a new key whose evidence is a looping pool of `pool_size` certificates.
pub fn looping_pool_csr(nonce: &[u8], pool_size: usize) -> Vec<u8> {
    let key = DeviceKey::generate().expect("device key");
    let (attestation, pool) = looping_pool(&key, nonce, pool_size);
    key.csr_with_attributes(
        "hostile-pool",
        vec![evidence_attribute(&attestation, &pool)],
    )
    .expect("csr")
}

/// The attestation certificate and a ladder of `pool_size` certificates with distinct P-384
/// keys: certificate i is named "Loop A" (even i) or "Loop B" (odd), issued by the other name,
/// and signed by the key of certificate i + 1; the attestation certificate is signed by the key
/// of certificate 0. Every link the search finds is genuine, so it keeps descending and every
/// candidate costs a P-384 signature check (the most expensive the gate accepts besides
/// RSA-8192): the case that spends the whole per-request budget.
pub fn distinct_key_ladder(
    key: &DeviceKey,
    nonce: &[u8],
    pool_size: usize,
) -> (Vec<u8>, Vec<Vec<u8>>) {
    use attestca::issuance::build::{CertificateSpec, random_serial};
    use attestca::signer::CaKeyAlgorithm;
    use attestca::signer::software::{SoftwareSigner, generate_pkcs8};
    let keys: Vec<SoftwareSigner> = (0..=pool_size)
        .map(|_| {
            let pkcs8 = generate_pkcs8(CaKeyAlgorithm::EcdsaP384).expect("P-384 key");
            SoftwareSigner::from_pkcs8(CaKeyAlgorithm::EcdsaP384, &pkcs8).expect("signer")
        })
        .collect();
    let loop_name = |i: usize| {
        name(if i.is_multiple_of(2) {
            "CN=Loop A"
        } else {
            "CN=Loop B"
        })
    };
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .as_secs();
    let spec = |subject, issuer, public_key: &SoftwareSigner, ca| CertificateSpec {
        serial: random_serial(),
        issuer,
        subject,
        public_key: public_key.public_key().clone(),
        not_before: now - 3600,
        not_after: now + 86_400,
        extensions: if ca {
            vec![ext::basic_constraints(true, None).expect("bc")]
        } else {
            Vec::new()
        },
    };
    let pool = (0..pool_size)
        .map(|i| {
            spec(
                loop_name(i).expect("name"),
                loop_name(i + 1).expect("name"),
                &keys[i],
                true,
            )
            .sign(&keys[i + 1])
            .expect("ladder certificate")
            .der
        })
        .collect();
    let mut attestation = spec(
        name("CN=Hostile key attestation").expect("name"),
        loop_name(0).expect("name"),
        &keys[0],
        false,
    );
    attestation.public_key = key.public_key().expect("device key");
    attestation.extensions = vec![simulated_se_statement(nonce)];
    let attestation = attestation.sign(&keys[0]).expect("attestation").der;
    (attestation, pool)
}

/// A CSR (DER) for a new key whose evidence is a distinct-key ladder of `pool_size`
/// certificates.
pub fn distinct_key_ladder_csr(nonce: &[u8], pool_size: usize) -> Vec<u8> {
    let key = DeviceKey::generate().expect("device key");
    let (attestation, pool) = distinct_key_ladder(&key, nonce, pool_size);
    key.csr_with_attributes(
        "hostile-ladder",
        vec![evidence_attribute(&attestation, &pool)],
    )
    .expect("csr")
}
