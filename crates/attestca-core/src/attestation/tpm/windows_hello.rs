//! Real TPM2_Certify output: three Windows Hello key attestations (Intel PTT, Nuvoton NPCT6xx,
//! STMicro ST33) from `../shared/vectors/tpm/windows-hello`, repackaged as the CSR-attestation
//! TcgAttestCertify statement, verified against Microsoft's TPM root at a time inside the AIK
//! certificates' validity. Their AIKs sign with RSASSA-SHA1, so they verify only for a vendor
//! that allows SHA-1.

use std::time::{Duration, SystemTime};

use base64::Engine;
use der::asn1::OctetString;
use der::{Decode, Encode};
use sha2::{Digest, Sha256};
use x509_cert::SubjectPublicKeyInfo;

use super::tests::vectors_dir;
use super::*;
use crate::attestation::vendors::VendorReader;
use crate::attestation::{FailureKind, VendorTrustStore, VerificationBudget};

const DIR: &str = "tpm/windows-hello";
const ROOT: &str = "tpm/windows-hello/microsoft-tpm-root-ca-2014.pem";

/// One statement of the vectors, and what its JSON says about it.
struct Statement {
    name: &'static str,
    /// TcgAttestCertify DER.
    statement: Vec<u8>,
    /// [AIK certificate, Microsoft per-vendor AIK CA].
    pool: Vec<EvidenceCertificate>,
    /// The key of pubArea, as a CSR would carry it.
    key: SubjectPublicKeyInfo,
    /// extraData = SHA-1(authData ‖ SHA-256(clientDataJSON)), as WebAuthn computes it.
    extra_data: Vec<u8>,
    /// `2.23.133.2.3=…,2.23.133.2.2=…,2.23.133.2.1=…` (separated by `,` or `+`).
    aik_san: String,
}

fn hex_field(json: &serde_json::Value, field: &str) -> Vec<u8> {
    hex::decode(json[field].as_str().expect(field)).expect(field)
}

fn load(name: &'static str) -> Option<Statement> {
    let file = format!("{DIR}/{name}.json");
    let dir = vectors_dir(&file)?;
    let json: serde_json::Value =
        serde_json::from_slice(&std::fs::read(dir.join(&file)).expect("read")).expect("JSON");
    let base64 = base64::engine::general_purpose::STANDARD;
    let pool = json["x5c_der_b64"]
        .as_array()
        .expect("x5c")
        .iter()
        .map(|c| {
            let der = base64.decode(c.as_str().expect("base64")).expect("base64");
            EvidenceCertificate::from_der(&der).expect("certificate")
        })
        .collect();
    let public = hex_field(&json, "pubArea_hex");
    let key = TpmtPublic::parse(&public)
        .expect("pubArea")
        .key
        .to_spki()
        .expect("SPKI");
    let client_data = base64
        .decode(json["clientDataJSON_b64"].as_str().expect("clientDataJSON"))
        .expect("base64");
    let mut signed = hex_field(&json, "authData_hex");
    signed.extend(Sha256::digest(&client_data));
    let extra_data =
        aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA1_FOR_LEGACY_USE_ONLY, &signed)
            .as_ref()
            .to_vec();
    let statement = TcgAttestCertify {
        tpm_s_attest: OctetString::new(hex_field(&json, "certInfo_hex")).expect("octets"),
        signature: OctetString::new(hex_field(&json, "sig_hex")).expect("octets"),
        tpm_t_public: Some(OctetString::new(public).expect("octets")),
    }
    .to_der()
    .expect("encode");
    Some(Statement {
        name,
        statement,
        pool,
        key,
        extra_data,
        aik_san: json["aik_san"][0].as_str().expect("aik_san").to_owned(),
    })
}

fn all() -> Vec<Statement> {
    ["intel-ptt", "nuvoton-npct6xx", "stmicro-st33htph"]
        .into_iter()
        .filter_map(load)
        .collect()
}

fn microsoft_root() -> Option<EvidenceCertificate> {
    let dir = vectors_dir(ROOT)?;
    let pem = std::fs::read(dir.join(ROOT)).expect("read");
    let (_, der) = pem_rfc7468::decode_vec(&pem).expect("PEM");
    Some(EvidenceCertificate::from_der(&der).expect("certificate"))
}

fn microsoft(root: &EvidenceCertificate, allow_sha1: bool) -> VendorTrustStore {
    VendorTrustStore::new(vec![Vendor {
        name: "microsoft-tpm".into(),
        roots: vec![root.clone()],
        formats: vec![AttestationFormat::TpmCertify],
        reader: VendorReader::Tpm,
        hardware_type: ObjectIdentifier::new_unwrap("2.23.133.1.2"),
        denied_serials: Default::default(),
        allow_sha1,
    }])
}

/// A day into the AIK certificate's validity (the AIKs expired in 2025).
fn inside_validity(s: &Statement) -> SystemTime {
    let not_before = s.pool[0]
        .tbs_certificate()
        .validity()
        .not_before
        .to_unix_duration();
    SystemTime::UNIX_EPOCH + not_before + Duration::from_secs(86_400)
}

fn verify(
    s: &Statement,
    key: &SubjectPublicKeyInfo,
    vendors: &VendorTrustStore,
    at: SystemTime,
) -> Result<AttestedKey, AttestationError> {
    let context = VerificationContext {
        csr_key: key,
        pool: &s.pool,
        vendors,
        at,
        budget: VerificationBudget::per_request(),
    };
    TpmCertifyVerifier.verify(&s.statement, &context)
}

fn refused_with(result: Result<AttestedKey, AttestationError>, code: Reason, name: &str) {
    let error = result.expect_err(name);
    assert_eq!(error.code, code, "{name}: {error}");
    assert_eq!(error.kind, FailureKind::Refused, "{name}: {error}");
}

/// What `aik_san` says, by attribute OID.
fn san_attribute(san: &str, oid: &str) -> String {
    san.split([',', '+'])
        .find_map(|part| part.strip_prefix(&format!("{oid}=")))
        .unwrap_or_else(|| panic!("{oid} in {san}"))
        .to_owned()
}

#[test]
fn three_real_tpms_certify_their_keys() {
    let (Some(root), statements) = (microsoft_root(), all()) else {
        return;
    };
    assert_eq!(statements.len(), 3);
    let vendors = microsoft(&root, true);
    for s in &statements {
        let attested = verify(s, &s.key, &vendors, inside_validity(s))
            .unwrap_or_else(|e| panic!("{}: {e}", s.name));
        assert_eq!(attested.format, AttestationFormat::TpmCertify, "{}", s.name);
        assert_eq!(attested.vendor, "microsoft-tpm");
        assert_eq!(
            attested.nonce.as_deref(),
            Some(&s.extra_data[..]),
            "{}",
            s.name
        );
        assert_eq!(attested.generated_on_device, Some(true), "{}", s.name);
        assert_eq!(attested.exportable, Some(false), "{}", s.name);
        // The TPM is named by its AIK certificate: issuer CN / serial.
        assert!(
            attested.device.display.contains("-KEYID-"),
            "{}: {}",
            s.name,
            attested.device.display
        );
        let tpm = attested
            .tpm
            .unwrap_or_else(|| panic!("{}: no TPM description", s.name));
        assert_eq!(tpm.manufacturer, san_attribute(&s.aik_san, "2.23.133.2.1"));
        assert_eq!(tpm.model, san_attribute(&s.aik_san, "2.23.133.2.2"));
        assert_eq!(tpm.version, san_attribute(&s.aik_san, "2.23.133.2.3"));
    }
    let codes: Vec<Option<String>> = statements
        .iter()
        .map(|s| TpmDescription::of_certificate(&s.pool[0]).and_then(|t| t.manufacturer_code()))
        .collect();
    assert_eq!(
        codes,
        [Some("INTC".into()), Some("NTC".into()), Some("STM".into())]
    );
}

#[test]
fn sha1_counts_only_where_the_vendor_allows_it() {
    let (Some(root), statements) = (microsoft_root(), all()) else {
        return;
    };
    let strict = microsoft(&root, false);
    for s in &statements {
        refused_with(
            verify(s, &s.key, &strict, inside_validity(s)),
            Reason::AttestationWeakHash,
            s.name,
        );
    }
}

#[test]
fn a_csr_with_another_key_is_a_key_mismatch() {
    let (Some(root), statements) = (microsoft_root(), all()) else {
        return;
    };
    let vendors = microsoft(&root, true);
    for (i, s) in statements.iter().enumerate() {
        // Another TPM's key, and a key the test makes.
        let other = &statements[(i + 1) % statements.len()].key;
        refused_with(
            verify(s, other, &vendors, inside_validity(s)),
            Reason::AttestationKeyMismatch,
            s.name,
        );
        let made = attestca_sim::device::DeviceKey::generate().expect("key");
        let made = made.public_key().expect("SPKI").to_der().expect("DER");
        let made = SubjectPublicKeyInfo::from_der(&made).expect("SPKI");
        refused_with(
            verify(s, &made, &vendors, inside_validity(s)),
            Reason::AttestationKeyMismatch,
            s.name,
        );
    }
}

#[test]
fn an_expired_aik_or_another_vendor_root_is_refused() {
    let (Some(root), statements) = (microsoft_root(), all()) else {
        return;
    };
    let vendors = microsoft(&root, true);
    const OTHER: &str = "yubico/yubico-piv-root-ca-263751.pem";
    let Some(dir) = vectors_dir(OTHER) else {
        return;
    };
    let (_, der) =
        pem_rfc7468::decode_vec(&std::fs::read(dir.join(OTHER)).expect("read")).expect("PEM");
    let other_root = EvidenceCertificate::from_der(&der).expect("certificate");
    // 2026-01-01: every AIK certificate has expired.
    let later = SystemTime::UNIX_EPOCH + Duration::from_secs(1_767_225_600);
    for s in &statements {
        refused_with(
            verify(s, &s.key, &vendors, later),
            Reason::AttestationExpired,
            s.name,
        );
        // Another vendor's root (Yubico's PIV root) anchors nothing here.
        refused_with(
            verify(s, &s.key, &microsoft(&other_root, true), inside_validity(s)),
            Reason::AttestationUntrustedRoot,
            s.name,
        );
    }
}

#[test]
fn a_changed_certinfo_fails_the_signature() {
    let (Some(root), statements) = (microsoft_root(), all()) else {
        return;
    };
    let vendors = microsoft(&root, true);
    for s in statements {
        let stmt = TcgAttestCertify::from_der(&s.statement).expect("statement");
        let mut attest = stmt.tpm_s_attest.as_bytes().to_vec();
        let last = attest.len() - 1;
        attest[last] ^= 1;
        let changed = Statement {
            statement: TcgAttestCertify {
                tpm_s_attest: OctetString::new(attest).expect("octets"),
                ..stmt
            }
            .to_der()
            .expect("encode"),
            ..s
        };
        refused_with(
            verify(&changed, &changed.key, &vendors, inside_validity(&changed)),
            Reason::AttestationSignatureInvalid,
            changed.name,
        );
    }
}
