//! Builds the fuzzers' seed corpora and fixtures (run by `fuzz/seed.sh`; see fuzz/README.md).
//!
//! `cargo run --example fuzz_seeds -- <vectors dir> <fuzz dir>` writes
//! - `<fuzz dir>/corpus/<target>/…`: seeds from the real vectors in ../shared/vectors (read in
//!   place, never copied into the project) and from requests the project's own tools make (rig
//!   CSRs with simulated secure-element attestation, rig OCSP requests, API bodies);
//! - `<fuzz dir>/target/seed-state/`: what the fuzz targets verify against — the vendor trust
//!   store (`vendors.json`, roots read in place), a simulated secure-element vendor, the pinned
//!   verification times, the statement scenarios and the OCSP issuer.
//!
//! Both are regenerated on every run (the simulated vendor gets new keys), so the corpora and
//! the state always match.

use attestca_testkit::hostile;

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use attestca::attestation::manifest;
use attestca::attestation::vendors::{VendorConfig, VendorReader};
use attestca::attestation::{
    AttestationFormat, ID_AA_ATTESTATION, ID_HW_SIMULATED_SE, ID_STMT_DEVICE_CERTIFICATE,
    ID_STMT_TPM_CERTIFY, ID_STMT_X509_CHAIN, bundle,
};
use attestca::est::codec;
use attestca::ocsp::request::IssuerHashes;
use attestca_sim::device::DeviceKey;
use attestca_sim::secure_element::SimulatedVendor;
use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use der::asn1::{Any, OctetString, SetOfVec};
use der::{Decode, Encode};
use x509_cert::attr::Attribute;
use x509_cert::ext::pkix::name::GeneralName;
use x509_cert::request::{CertReq, ExtensionReq};

/// 2024-11-01T00:00:00Z: inside the validity of every real vector (the IETF TPM sample's
/// certificates are valid for one month around it; the Windows Hello AIKs expired in 2025).
const PINNED_2024: u64 = 1_730_419_200;
/// 2026-01-01T00:00:00Z: the Microchip device certificates are valid from 2025-06-01.
const PINNED_2026: u64 = 1_767_225_600;

struct Out {
    corpus: PathBuf,
    state: PathBuf,
}

impl Out {
    fn seed(&self, target: &str, name: &str, bytes: &[u8]) -> Result<()> {
        let dir = self.corpus.join(target);
        std::fs::create_dir_all(&dir)?;
        std::fs::write(dir.join(name), bytes)?;
        Ok(())
    }

    fn state_file(&self, name: &str, bytes: &[u8]) -> Result<PathBuf> {
        let path = self.state.join(name);
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent)?;
        }
        std::fs::write(&path, bytes)?;
        Ok(path)
    }
}

fn pem_der(path: &Path) -> Result<Vec<u8>> {
    let text = std::fs::read(path).with_context(|| path.display().to_string())?;
    Ok(pem_rfc7468::decode_vec(&text)
        .map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?
        .1)
}

fn with_selector(selector: u8, bytes: &[u8]) -> Vec<u8> {
    let mut out = vec![selector];
    out.extend_from_slice(bytes);
    out
}

fn evidence_attribute(
    statements: &[(der::asn1::ObjectIdentifier, Vec<u8>)],
    certs: &[Vec<u8>],
) -> Result<Attribute> {
    let bundle = bundle::encode(statements, certs)?;
    Ok(Attribute {
        oid: ID_AA_ATTESTATION,
        values: SetOfVec::try_from(vec![Any::from_der(&bundle)?])?,
    })
}

/// One verifier scenario for the `attestation_statement` target: a statement with the pool,
/// CSR key and time it verifies against.
struct Scenario {
    name: &'static str,
    format: AttestationFormat,
    statement: Vec<u8>,
    pool: Vec<Vec<u8>>,
    key: Vec<u8>,
    at: u64,
}

fn spki_of_certificate(der: &[u8]) -> Result<Vec<u8>> {
    let cert = attestca::attestation::EvidenceCertificate::from_der(der)?;
    Ok(cert.tbs_certificate().subject_public_key_info().to_der()?)
}

fn main() -> Result<()> {
    let mut args = std::env::args_os().skip(1);
    let (Some(vectors), Some(fuzz)) = (args.next(), args.next()) else {
        anyhow::bail!("usage: fuzz_seeds <vectors dir> <fuzz dir>");
    };
    let vectors = PathBuf::from(vectors).canonicalize()?;
    let fuzz = PathBuf::from(fuzz);
    let out = Out {
        corpus: fuzz.join("corpus"),
        state: fuzz.join("target/seed-state"),
    };
    let _ = std::fs::remove_dir_all(&out.state);
    std::fs::create_dir_all(&out.state)?;

    // ---------------------------------------------------------------- the simulated vendor
    let sim_dir = out.state.join("sim-vendor");
    std::fs::create_dir_all(&sim_dir)?;
    let vendor = SimulatedVendor::create(&sim_dir)?;
    let device = vendor.manufacture()?;
    let nonce = [0x5eu8; 16];
    let (sim_key, sim_csr) = device.enroll_key("fuzz-device-0001", &nonce)?;
    // The simulated attestation certificate is valid for an hour from now: verify at now.
    let sim_time = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)?
        .as_secs();
    out.state_file(
        "times.txt",
        format!("{PINNED_2024}\n{sim_time}\n").as_bytes(),
    )?;

    // ---------------------------------------------------------------- the IETF TPM sample
    let tpm_original = pem_der(&vectors.join("tpm/tcgAttestTpmCertify-original.csr.pem"))?;
    let tpm_published = pem_der(&vectors.join("tpm/tcgAttestTpmCertify.csr.pem"))?;
    // The evidence is read from the published form: the original's hint is a UTF8String,
    // which the carrier decoder (IA5String hint) refuses; both CSRs are seeds.
    let tpm_request = CertReq::from_der(&tpm_published)?;
    let tpm_evidence = bundle::from_csr(&tpm_request)
        .map_err(|e| anyhow::anyhow!("{e}"))?
        .context("the TPM sample carries no evidence")?;
    let tpm_pool: Vec<Vec<u8>> = tpm_evidence
        .certificates
        .iter()
        .map(|c| c.to_der())
        .collect::<der::Result<_>>()?;
    let tpm_root = tpm_evidence
        .certificates
        .iter()
        .find(|c| c.tbs_certificate().subject() == c.tbs_certificate().issuer())
        .context("no self-signed root in the TPM sample")?
        .to_der()?;
    let tpm_root_path = out.state_file(
        "ietf-tpm-root.pem",
        attestca::pem::encode("CERTIFICATE", &tpm_root).as_bytes(),
    )?;

    // ---------------------------------------------------------------- the trust store
    let vendor_config = |name: &str, roots: Vec<PathBuf>, format, reader, hw: &str| VendorConfig {
        name: name.into(),
        roots,
        formats: vec![format],
        reader,
        hardware_type: hw.into(),
        denied_serials: Vec::new(),
        allow_sha1: false,
    };
    let vendors = vec![
        vendor_config(
            "microchip",
            vec![vectors.join("microchip/crypto-authentication-root-ca-002.pem")],
            AttestationFormat::DeviceCertificate,
            VendorReader::Microchip,
            "1.3.6.1.4.1.32473.7030.5.1",
        ),
        vendor_config(
            "yubico",
            vec![vectors.join("yubico/yubico-piv-root-ca-263751.pem")],
            AttestationFormat::X509Chain,
            VendorReader::YubikeyPiv,
            "1.3.6.1.4.1.41482.3",
        ),
        vendor_config(
            "microsoft-tpm",
            vec![vectors.join("tpm/windows-hello/microsoft-tpm-root-ca-2014.pem")],
            AttestationFormat::TpmCertify,
            VendorReader::Tpm,
            "2.23.133.1.2",
        ),
        vendor_config(
            "ietf-tpm-sample",
            vec![tpm_root_path],
            AttestationFormat::TpmCertify,
            VendorReader::Tpm,
            "2.23.133.1.2",
        ),
        vendor_config(
            "simulated-se",
            vec![sim_dir.join("vendor-root.crt")],
            AttestationFormat::X509Chain,
            VendorReader::SimulatedSe,
            &ID_HW_SIMULATED_SE.to_string(),
        ),
    ];
    out.state_file("vendors.json", &serde_json::to_vec_pretty(&vendors)?)?;

    // ---------------------------------------------------------------- the other real vectors
    let signer_der = pem_der(&vectors.join("microchip/manifest-signer-005.crt"))?;
    out.state_file("manifest-signer.der", &signer_der)?;
    let manifest_json = std::fs::read(vectors.join("microchip/ECC608C-TNGTLSU-B.manifest.json"))?;
    let parts = manifest::verify(&manifest_json, &signer_der)?;
    let microchip = parts
        .first()
        .and_then(|p| p.device_certificate.clone().map(|d| (d, p.chain.clone())))
        .context("the manifest's first part has no device certificate")?;

    let yubikey_9a = pem_der(&vectors.join("yubico/yubikey-a-9a-attestation.pem"))?;
    let yubikey_f9 = pem_der(&vectors.join("yubico/yubikey-a-f9-device.pem"))?;

    let mut hello = Vec::new();
    for name in ["intel-ptt", "nuvoton-npct6xx", "stmicro-st33htph"] {
        let path = vectors.join(format!("tpm/windows-hello/{name}.json"));
        let json: serde_json::Value = serde_json::from_slice(&std::fs::read(&path)?)?;
        let hex_field = |field: &str| -> Result<Vec<u8>> {
            Ok(hex::decode(
                json[field].as_str().context(field.to_owned())?,
            )?)
        };
        let statement = attestca::attestation::tpm::TcgAttestCertify {
            tpm_s_attest: OctetString::new(hex_field("certInfo_hex")?)?,
            signature: OctetString::new(hex_field("sig_hex")?)?,
            tpm_t_public: Some(OctetString::new(hex_field("pubArea_hex")?)?),
        }
        .to_der()?;
        let x5c = json["x5c_der_b64"]
            .as_array()
            .context("x5c_der_b64")?
            .iter()
            .map(|c| Ok(STANDARD.decode(c.as_str().context("x5c entry")?)?))
            .collect::<Result<Vec<_>>>()?;
        hello.push((name, statement, x5c));
    }

    // ---------------------------------------------------------------- statement scenarios
    let sim_evidence = bundle::from_csr(&CertReq::from_der(&sim_csr)?)
        .map_err(|e| anyhow::anyhow!("{e}"))?
        .context("the simulated CSR carries no evidence")?;
    let mut scenarios = vec![
        Scenario {
            name: "tpm-ietf-sample",
            format: AttestationFormat::TpmCertify,
            statement: tpm_evidence.statements[0].1.clone(),
            pool: tpm_pool.clone(),
            key: tpm_request.info.public_key.to_der()?,
            at: PINNED_2024,
        },
        Scenario {
            name: "yubikey-piv",
            format: AttestationFormat::X509Chain,
            statement: yubikey_9a.clone(),
            pool: vec![yubikey_f9.clone()],
            key: spki_of_certificate(&yubikey_9a)?,
            at: PINNED_2024,
        },
        Scenario {
            name: "microchip-device-certificate",
            format: AttestationFormat::DeviceCertificate,
            statement: microchip.0.clone(),
            pool: microchip.1.clone(),
            key: spki_of_certificate(&microchip.0)?,
            at: PINNED_2026,
        },
        Scenario {
            name: "simulated-se",
            format: AttestationFormat::X509Chain,
            statement: sim_evidence.statements[0].1.clone(),
            pool: sim_evidence
                .certificates
                .iter()
                .map(|c| c.to_der())
                .collect::<der::Result<_>>()?,
            key: sim_key.public_key()?.to_der()?,
            at: sim_time,
        },
    ];
    // Nobody holds the Windows Hello keys: the CSR key is the IETF sample's (a key mismatch at
    // the very end, after every decoding step).
    for (name, statement, x5c) in &hello {
        scenarios.push(Scenario {
            name,
            format: AttestationFormat::TpmCertify,
            statement: statement.clone(),
            pool: x5c.clone(),
            key: tpm_request.info.public_key.to_der()?,
            at: PINNED_2024,
        });
    }
    // How far each real statement gets (the fuzzer starts from there): the vectors whose keys
    // are the CSR key verify; the Windows Hello ones stop at the key comparison or earlier.
    let trust = attestca::attestation::VendorTrustStore::from_config(&vendors)?;
    for s in &scenarios {
        let pool = s
            .pool
            .iter()
            .map(|d| attestca::attestation::EvidenceCertificate::from_der(d))
            .collect::<der::Result<Vec<_>>>()?;
        let key = x509_cert::SubjectPublicKeyInfo::from_der(&s.key)?;
        let context = attestca::attestation::VerificationContext {
            csr_key: &key,
            pool: &pool,
            vendors: &trust,
            at: std::time::UNIX_EPOCH + std::time::Duration::from_secs(s.at),
            budget: attestca::attestation::VerificationBudget::per_request(),
        };
        let verifier = attestca::attestation::gate::all_verifiers()
            .into_iter()
            .find(|v| v.format() == s.format)
            .context("verifier")?;
        match verifier.verify(&s.statement, &context) {
            Ok(k) => println!("scenario {}: verifies ({})", s.name, k.device_key()),
            Err(e) => println!("scenario {}: {} ({})", s.name, e.code, e.detail),
        }
    }
    for (index, s) in scenarios.iter().enumerate() {
        let dir = format!("scenarios/{index:02}-{}", s.name);
        out.state_file(&format!("{dir}/format"), s.format.name().as_bytes())?;
        out.state_file(&format!("{dir}/statement.der"), &s.statement)?;
        out.state_file(&format!("{dir}/key.der"), &s.key)?;
        out.state_file(&format!("{dir}/at"), s.at.to_string().as_bytes())?;
        let mut pem = String::new();
        for der in &s.pool {
            pem.push_str(&attestca::pem::encode("CERTIFICATE", der));
        }
        out.state_file(&format!("{dir}/pool.pem"), pem.as_bytes())?;
        out.seed(
            "attestation_statement",
            &format!("{index:02}-{}", s.name),
            &with_selector(index as u8, &s.statement),
        )?;
    }

    // ---------------------------------------------------------------- CSRs
    let plain_key = DeviceKey::generate()?;
    let plain_csr = plain_key.csr("fuzz-device-0002")?;
    let names = vec![
        GeneralName::DnsName(der::asn1::Ia5String::new("device-0003.factory.example")?),
        GeneralName::IpAddress(OctetString::new([192u8, 0, 2, 7])?),
        GeneralName::UniformResourceIdentifier(der::asn1::Ia5String::new("urn:dev:ops:fuzz-0003")?),
    ];
    let san = attestca::issuance::extensions::subject_alt_name(&names, false)?;
    let san_csr = DeviceKey::generate()?.csr_with_attributes(
        "fuzz-device-0003",
        vec![Attribute::try_from(ExtensionReq(vec![san]))?],
    )?;
    // Real evidence repackaged into rig CSRs (the CSR key is a new one: the gate reaches the
    // key comparison after every check of the evidence).
    let repackaged_key = DeviceKey::generate()?;
    let yubikey_csr = repackaged_key.csr_with_attributes(
        "fuzz-yubikey",
        vec![evidence_attribute(
            &[(ID_STMT_X509_CHAIN, yubikey_9a.clone())],
            std::slice::from_ref(&yubikey_f9),
        )?],
    )?;
    let microchip_csr = repackaged_key.csr_with_attributes(
        "fuzz-microchip",
        vec![evidence_attribute(
            &[(ID_STMT_DEVICE_CERTIFICATE, microchip.0.clone())],
            &microchip.1,
        )?],
    )?;
    let mut hello_csrs = Vec::new();
    for (name, statement, x5c) in &hello {
        hello_csrs.push((
            *name,
            repackaged_key.csr_with_attributes(
                &format!("fuzz-{name}"),
                vec![evidence_attribute(
                    &[(ID_STMT_TPM_CERTIFY, statement.clone())],
                    x5c,
                )?],
            )?,
        ));
    }

    let csrs: Vec<(&str, &[u8])> = vec![
        ("rig-plain", &plain_csr),
        ("rig-san", &san_csr),
        ("rig-simulated-se", &sim_csr),
        ("ietf-tpm-original", &tpm_original),
        ("ietf-tpm-published", &tpm_published),
        ("rig-yubikey", &yubikey_csr),
        ("rig-microchip", &microchip_csr),
    ];
    for (name, der) in &csrs {
        out.seed("csr", name, der)?;
    }
    // attestation_bundle: selector bit 0 = which pinned time (0: 2024, 1: the simulated
    // vendor's), bit 7 = the rest is a bare AttestationBundle rather than a CSR.
    for (name, der) in csrs.iter().skip(2) {
        // The simulated vendor's time is the seeding time, when the Microchip parts are valid.
        let clock = u8::from(matches!(*name, "rig-simulated-se" | "rig-microchip"));
        out.seed("attestation_bundle", name, &with_selector(clock, der))?;
    }
    for (name, der) in &hello_csrs {
        out.seed(
            "attestation_bundle",
            &format!("rig-{name}"),
            &with_selector(0, der),
        )?;
    }
    out.seed(
        "attestation_bundle",
        "bare-simulated-se",
        &with_selector(
            0x81,
            &bundle::encode(
                &[(ID_STMT_X509_CHAIN, sim_evidence.statements[0].1.clone())],
                &scenarios[3].pool,
            )?,
        ),
    )?;
    // The crafted pools of the path-building bound (issue 12), so that the fuzzer starts from
    // the inputs that once made the search exponential.
    out.seed(
        "attestation_bundle",
        "hostile-looping-pool-16",
        &with_selector(1, &hostile::looping_pool_csr(&[7; 32], 16)),
    )?;
    out.seed(
        "attestation_bundle",
        "hostile-distinct-key-ladder-16",
        &with_selector(1, &hostile::distinct_key_ladder_csr(&[7; 32], 16)),
    )?;
    out.seed(
        "attestation_bundle",
        "bare-ietf-tpm",
        &with_selector(0x80, &bundle::encode(&tpm_evidence.statements, &tpm_pool)?),
    )?;

    // ---------------------------------------------------------------- EST bodies
    let flat = STANDARD.encode(&plain_csr);
    let crlf = flat
        .as_bytes()
        .chunks(64)
        .map(|c| String::from_utf8_lossy(c).into_owned())
        .collect::<Vec<_>>()
        .join("\r\n");
    out.seed(
        "est_body",
        "rig-wrapped",
        codec::encode_body(&sim_csr).as_bytes(),
    )?;
    out.seed("est_body", "flat", flat.as_bytes())?;
    out.seed("est_body", "crlf", crlf.as_bytes())?;
    out.seed(
        "est_body",
        "unpadded",
        flat.trim_end_matches('=').as_bytes(),
    )?;
    out.seed(
        "est_body",
        "pem",
        attestca::pem::encode("CERTIFICATE REQUEST", &san_csr).as_bytes(),
    )?;
    out.seed(
        "est_body",
        "ietf-tpm-pem",
        &std::fs::read(vectors.join("tpm/tcgAttestTpmCertify.csr.pem"))?,
    )?;

    // ---------------------------------------------------------------- manifests
    out.seed("manifest", "ecc608c-tngtlsu-b", &manifest_json)?;
    let entries: Vec<serde_json::Value> = serde_json::from_slice(&manifest_json)?;
    for (index, entry) in entries.iter().enumerate().take(3) {
        out.seed(
            "manifest",
            &format!("entry-{index}"),
            &serde_json::to_vec(&vec![entry])?,
        )?;
        // manifest_payload: the signed payload (JSON), which the harness signs again.
        let payload = base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(entry["payload"].as_str().context("payload")?)?;
        out.seed("manifest_payload", &format!("entry-{index}"), &payload)?;
    }
    let fuzz_signer = attestca::issuance::software_ca::SoftwareCa::self_signed(
        "CN=attestca fuzz manifest signer",
        1,
    )?;
    out.state_file("fuzz-signer.der", &fuzz_signer.der)?;
    out.state_file("fuzz-signer.pk8", &fuzz_signer.pkcs8)?;

    // ---------------------------------------------------------------- OCSP requests
    let issuer = attestca::issuance::software_ca::SoftwareCa::self_signed(
        "CN=attestca fuzz OCSP issuer",
        1,
    )?;
    out.state_file("ocsp-issuer.der", &issuer.der)?;
    let hashes = IssuerHashes::of(issuer.certificate())?;
    for (name, serial) in [
        ("serial-short", vec![0x01u8]),
        ("serial-20", vec![0x4a; 20]),
        ("serial-high-bit", vec![0x80, 0x01, 0x02]),
    ] {
        let der = attestca_rig::load::ocsp::request_der(&hashes, &serial)?;
        out.seed(
            "ocsp_request",
            &format!("post-{name}"),
            &with_selector(0, &der),
        )?;
        let mut get = String::new();
        for c in STANDARD.encode(&der).chars() {
            match c {
                '+' => get.push_str("%2B"),
                '/' => get.push_str("%2F"),
                '=' => get.push_str("%3D"),
                c => get.push(c),
            }
        }
        out.seed(
            "ocsp_request",
            &format!("get-{name}"),
            &with_selector(1, get.as_bytes()),
        )?;
        let mut url_safe = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(&der);
        url_safe.insert(10, '\n');
        out.seed(
            "ocsp_request",
            &format!("get-urlsafe-{name}"),
            &with_selector(1, url_safe.as_bytes()),
        )?;
    }
    let mut nonce_request = attestca::ocsp::asn1::OcspRequest::from_der(
        &attestca_rig::load::ocsp::request_der(&hashes, &[0x02])?,
    )?;
    nonce_request.tbs_request.request_extensions = Some(vec![x509_cert::ext::Extension {
        extn_id: der::asn1::ObjectIdentifier::new_unwrap("1.3.6.1.5.5.7.48.1.2"),
        critical: false,
        extn_value: OctetString::new(OctetString::new([0x42u8; 16])?.to_der()?)?,
    }]);
    out.seed(
        "ocsp_request",
        "post-nonce",
        &with_selector(0, &nonce_request.to_der()?),
    )?;

    // ---------------------------------------------------------------- operator API bodies
    // Selector: 0 = revocation body as application/json, 1 = revocation body without a
    // Content-Type, 2/3/4 = the query string of /certificates, /events, /audit-events.
    let api: &[(&str, u8, &str)] = &[
        ("revoke-reason", 0, r#"{"reason":"keyCompromise"}"#),
        ("revoke-empty-object", 0, "{}"),
        ("revoke-null", 0, r#"{"reason":null}"#),
        (
            "revoke-unknown-field",
            0,
            r#"{"reason":"superseded","x":1}"#,
        ),
        (
            "revoke-escaped",
            0,
            "{\"reason\":\"cessation\\u004ffOperation\"}",
        ),
        ("revoke-no-type", 1, r#"{"reason":"affiliationChanged"}"#),
        (
            "certificates",
            2,
            "device_identity=simulated-se%3A0011223344556677&status=active&profile=default&limit=50&cursor=abc",
        ),
        (
            "events",
            3,
            "requester=tls%3Arig-a&operation=simpleenroll&outcome=refused&reason=attestation.malformed&serial=01%3Aab%3ACD&since=2026-11-18T11:06:40Z&until=1795000000&limit=10",
        ),
        (
            "audit-events",
            4,
            "operator=alice&action=certificate.revoke&target=0a1b&since=0&until=2026-12-31T23:59:59Z&cursor=x",
        ),
    ];
    for (name, selector, text) in api {
        out.seed("api_json", name, &with_selector(*selector, text.as_bytes()))?;
    }

    let mut summary = String::new();
    for entry in std::fs::read_dir(&out.corpus)? {
        let entry = entry?;
        let n = std::fs::read_dir(entry.path())?.count();
        let _ = writeln!(
            summary,
            "  {}: {n} seeds",
            entry.file_name().to_string_lossy()
        );
    }
    print!("seed corpora in {}:\n{summary}", out.corpus.display());
    Ok(())
}
