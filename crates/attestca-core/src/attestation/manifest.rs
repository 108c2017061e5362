//! Supply-chain manifests: Microchip-style signed lists of the parts delivered to a factory.
//!
//! A manifest is a JSON array of flattened JWS objects, one per part:
//! `{"payload": b64url, "protected": b64url, "header": {"uniqueId": …}, "signature": b64url}`.
//! The protected header names the signer (`alg` ES256, `kid` = base64url of the signer
//! certificate's subjectKeyIdentifier, `x5t#S256` = base64url of SHA-256 of its DER); the
//! payload is `{uniqueId, partNumber, publicKeySet: {keys: [JWK…]}}` where the key with an
//! `x5c` carries the part's device certificate and its issuer.
//!
//! Importing a manifest gives the CA an allow-list of the parts actually delivered, so a
//! manifest is accepted whole or not at all: one bad entry means the file cannot be trusted.

use super::EvidenceCertificate;
use aws_lc_rs::signature::{ECDSA_P256_SHA256_FIXED, ParsedPublicKey};
use base64::Engine;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use der::Decode;
use serde::Deserialize;
use sha2::{Digest, Sha256};
use x509_cert::SubjectPublicKeyInfo;
use x509_cert::ext::pkix::SubjectKeyIdentifier;

use crate::verify::{PublicKeyKind, key_kind};

/// One part listed in a verified manifest.
#[derive(Clone, Debug)]
pub struct ManifestPart {
    /// The part's serial, lower-case hex as in the payload (`0123f2408ea1fcf201`).
    pub unique_id: String,
    /// The orderable part number (`ATECC608C-TNGTLSU-B`).
    pub part_number: String,
    /// Every public key of the part: the JWKs of `publicKeySet` and the device certificate's
    /// key, each once.
    pub public_keys: Vec<SubjectPublicKeyInfo>,
    /// The device certificate (`x5c[0]`, DER), when the manifest carries one.
    pub device_certificate: Option<Vec<u8>>,
    /// The certificates above it (`x5c[1..]`, DER), for path building.
    pub chain: Vec<Vec<u8>>,
}

/// Why a manifest was rejected. Entry indexes count from 0, in file order.
#[derive(Debug, thiserror::Error)]
pub enum ManifestError {
    #[error("the manifest is not a JSON array of JWS objects: {0}")]
    NotJson(serde_json::Error),
    #[error("the manifest lists no parts")]
    Empty,
    #[error("the manifest signer certificate is unusable: {0}")]
    Signer(String),
    #[error("manifest entry {index}: {detail}")]
    Malformed { index: usize, detail: String },
    #[error("manifest entry {index}: alg {alg:?} is not ES256")]
    Algorithm { index: usize, alg: String },
    #[error("manifest entry {index}: kid {kid:?} is not the signer certificate's key identifier")]
    KeyId { index: usize, kid: String },
    #[error("manifest entry {index}: x5t#S256 is not the signer certificate's thumbprint")]
    Thumbprint { index: usize },
    #[error("manifest entry {index}: the signature does not verify with the signer's key")]
    Signature { index: usize },
    #[error("manifest entry {index}: part {unique_id} is listed twice")]
    Duplicate { index: usize, unique_id: String },
}

/// A flattened JWS (RFC 7515 §7.2.2) as it appears in the manifest array.
#[derive(Deserialize)]
struct FlattenedJws {
    payload: String,
    protected: String,
    signature: String,
    /// The unprotected header; Microchip repeats the uniqueId there for indexing.
    #[serde(default)]
    header: Option<UnprotectedHeader>,
}

#[derive(Deserialize)]
struct UnprotectedHeader {
    #[serde(rename = "uniqueId")]
    unique_id: Option<String>,
}

#[derive(Deserialize)]
struct ProtectedHeader {
    alg: String,
    kid: String,
    #[serde(rename = "x5t#S256")]
    x5t_s256: Option<String>,
    /// RFC 7515 §4.1.11: extensions the recipient must understand; attestca knows none.
    crit: Option<serde_json::Value>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Payload {
    unique_id: String,
    part_number: String,
    public_key_set: KeySet,
}

#[derive(Deserialize)]
struct KeySet {
    keys: Vec<Jwk>,
}

#[derive(Deserialize)]
struct Jwk {
    kty: String,
    crv: Option<String>,
    x: Option<String>,
    y: Option<String>,
    /// Standard (not URL-safe) base64 DER, device certificate first (RFC 7517 §4.7).
    x5c: Option<Vec<String>>,
}

/// The signer certificate, reduced to what each entry is checked against.
struct Signer {
    key: ParsedPublicKey,
    kid: String,
    thumbprint: String,
}

/// Verifies every entry of `manifest_json` against the signer certificate and returns the
/// parts, or the first reason the manifest cannot be trusted.
pub fn verify(
    manifest_json: &[u8],
    signer_certificate_der: &[u8],
) -> Result<Vec<ManifestPart>, ManifestError> {
    let signer = signer(signer_certificate_der)?;
    let entries: Vec<serde_json::Value> =
        serde_json::from_slice(manifest_json).map_err(ManifestError::NotJson)?;
    if entries.is_empty() {
        return Err(ManifestError::Empty);
    }
    let mut parts: Vec<ManifestPart> = Vec::with_capacity(entries.len());
    for (index, entry) in entries.into_iter().enumerate() {
        let part = verify_entry(index, entry, &signer)?;
        if parts.iter().any(|p| p.unique_id == part.unique_id) {
            // Two entries for one part would make the allow-list ambiguous about its keys.
            return Err(ManifestError::Duplicate {
                index,
                unique_id: part.unique_id,
            });
        }
        parts.push(part);
    }
    Ok(parts)
}

/// Extracts the P-256 key, the expected `kid` and the expected `x5t#S256` of the signer.
fn signer(der: &[u8]) -> Result<Signer, ManifestError> {
    let bad = |what: String| ManifestError::Signer(what);
    let cert =
        EvidenceCertificate::from_der(der).map_err(|e| bad(format!("not a certificate: {e}")))?;
    let spki = cert.tbs_certificate().subject_public_key_info();
    if key_kind(spki) != Some(PublicKeyKind::P256) {
        return Err(bad("its key is not P-256 (ES256)".into()));
    }
    let key = ParsedPublicKey::new(
        &ECDSA_P256_SHA256_FIXED,
        spki.subject_public_key.raw_bytes(),
    )
    .map_err(|e| bad(format!("its public key: {e}")))?;
    let ski = cert
        .tbs_certificate()
        .get_extension::<SubjectKeyIdentifier>()
        .map_err(|e| bad(format!("subjectKeyIdentifier: {e}")))?
        .ok_or_else(|| bad("it has no subjectKeyIdentifier, which the kid must name".into()))?
        .1;
    Ok(Signer {
        key,
        kid: URL_SAFE_NO_PAD.encode(ski.0.as_bytes()),
        thumbprint: URL_SAFE_NO_PAD.encode(Sha256::digest(der)),
    })
}

/// Checks one entry's header and signature, then reads its payload.
fn verify_entry(
    index: usize,
    entry: serde_json::Value,
    signer: &Signer,
) -> Result<ManifestPart, ManifestError> {
    let malformed = |detail: String| ManifestError::Malformed { index, detail };
    let jws: FlattenedJws = serde_json::from_value(entry)
        .map_err(|e| malformed(format!("not a flattened JWS: {e}")))?;
    check_protected_header(index, &jws.protected, signer)?;
    // The signature covers the encoded text exactly as transmitted, so it is checked before
    // anything in the payload is decoded or believed.
    let signature = URL_SAFE_NO_PAD
        .decode(&jws.signature)
        .map_err(|e| malformed(format!("signature is not base64url: {e}")))?;
    let signing_input = format!("{}.{}", jws.protected, jws.payload);
    signer
        .key
        .verify_sig(signing_input.as_bytes(), &signature)
        .map_err(|_| ManifestError::Signature { index })?;
    let payload: Payload =
        decode_json(&jws.payload).map_err(|e| malformed(format!("payload: {e}")))?;
    if let Some(listed) = jws.header.and_then(|h| h.unique_id) {
        // The unprotected copy is what tools index by; it must not disagree with the signed one.
        if !listed.eq_ignore_ascii_case(&payload.unique_id) {
            return Err(malformed(format!(
                "header uniqueId {listed} differs from the signed uniqueId {}",
                payload.unique_id
            )));
        }
    }
    part(payload).map_err(malformed)
}

/// Requires ES256, the signer's `kid`, its thumbprint when stated, and no critical extensions.
fn check_protected_header(
    index: usize,
    protected: &str,
    signer: &Signer,
) -> Result<(), ManifestError> {
    let header: ProtectedHeader = decode_json(protected).map_err(|e| ManifestError::Malformed {
        index,
        detail: format!("protected header: {e}"),
    })?;
    if header.alg != "ES256" {
        return Err(ManifestError::Algorithm {
            index,
            alg: header.alg,
        });
    }
    if header.kid != signer.kid {
        return Err(ManifestError::KeyId {
            index,
            kid: header.kid,
        });
    }
    if header
        .x5t_s256
        .is_some_and(|thumbprint| thumbprint != signer.thumbprint)
    {
        return Err(ManifestError::Thumbprint { index });
    }
    if header.crit.is_some() {
        return Err(ManifestError::Malformed {
            index,
            detail: "the protected header lists critical extensions attestca does not know".into(),
        });
    }
    Ok(())
}

/// Decodes a base64url (unpadded) JSON document.
fn decode_json<T: serde::de::DeserializeOwned>(encoded: &str) -> Result<T, String> {
    let bytes = URL_SAFE_NO_PAD
        .decode(encoded)
        .map_err(|e| format!("not base64url: {e}"))?;
    serde_json::from_slice(&bytes).map_err(|e| e.to_string())
}

/// Turns a verified payload into a part: its keys, its device certificate and chain.
fn part(payload: Payload) -> Result<ManifestPart, String> {
    let unique_id = payload.unique_id.to_ascii_lowercase();
    if unique_id.is_empty() || hex::decode(&unique_id).is_err() {
        return Err(format!("uniqueId {:?} is not hex", payload.unique_id));
    }
    let mut public_keys: Vec<SubjectPublicKeyInfo> = Vec::new();
    let mut device_certificate = None;
    let mut chain = Vec::new();
    for (k, jwk) in payload.public_key_set.keys.iter().enumerate() {
        let stated = jwk_key(jwk).map_err(|e| format!("key {k}: {e}"))?;
        let certified = match &jwk.x5c {
            Some(_) if device_certificate.is_some() => {
                return Err(format!("key {k}: a second device certificate (x5c)"));
            }
            Some(x5c) => Some(certificates(x5c).map_err(|e| format!("key {k}: {e}"))?),
            None => None,
        };
        match (stated, certified) {
            (None, None) => return Err(format!("key {k}: neither x/y nor x5c")),
            (Some(stated), None) => add_key(&mut public_keys, stated),
            (stated, Some(x5c)) => {
                // RFC 7517 §4.7: the first certificate's key must be the JWK's own key.
                if stated.is_some_and(|s| !super::same_key(&s, &x5c.device_key)) {
                    return Err(format!(
                        "key {k}: x/y is not the key of its x5c certificate"
                    ));
                }
                add_key(&mut public_keys, x5c.device_key);
                device_certificate = Some(x5c.device);
                chain = x5c.chain;
            }
        }
    }
    if public_keys.is_empty() {
        return Err("publicKeySet lists no keys".into());
    }
    Ok(ManifestPart {
        unique_id,
        part_number: payload.part_number,
        public_keys,
        device_certificate,
        chain,
    })
}

fn add_key(keys: &mut Vec<SubjectPublicKeyInfo>, key: SubjectPublicKeyInfo) {
    if !keys.iter().any(|k| super::same_key(k, &key)) {
        keys.push(key);
    }
}

/// DER of a P-256 SubjectPublicKeyInfo up to the uncompressed point: SEQUENCE { SEQUENCE {
/// id-ecPublicKey, prime256v1 }, BIT STRING (66 bytes: no unused bits, then 0x04 ‖ x ‖ y) }.
/// Built byte for byte so that it is DER-equal to the same key in a certificate.
const P256_SPKI_PREFIX: [u8; 26] = [
    0x30, 0x59, 0x30, 0x13, 0x06, 0x07, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x02, 0x01, 0x06, 0x08, 0x2a,
    0x86, 0x48, 0xce, 0x3d, 0x03, 0x01, 0x07, 0x03, 0x42, 0x00,
];

/// The JWK's key as a SubjectPublicKeyInfo, `None` when it states no coordinates (x5c only).
fn jwk_key(jwk: &Jwk) -> Result<Option<SubjectPublicKeyInfo>, String> {
    let (Some(x), Some(y)) = (&jwk.x, &jwk.y) else {
        return match (&jwk.x, &jwk.y) {
            (None, None) => Ok(None),
            _ => Err("only one of x and y".into()),
        };
    };
    if jwk.kty != "EC" || jwk.crv.as_deref() != Some("P-256") {
        return Err(format!(
            "kty {:?} crv {:?} is not EC P-256",
            jwk.kty, jwk.crv
        ));
    }
    let coordinate = |c: &str| match URL_SAFE_NO_PAD.decode(c) {
        Ok(bytes) if bytes.len() == 32 => Ok(bytes),
        _ => Err("a coordinate is not 32 bytes of base64url".to_string()),
    };
    let mut point = vec![0x04];
    point.extend(coordinate(x)?);
    point.extend(coordinate(y)?);
    // Refuse points off the curve now rather than let a later comparison or use trip on them.
    ParsedPublicKey::new(&ECDSA_P256_SHA256_FIXED, &point)
        .map_err(|_| "the point is not on P-256".to_string())?;
    let mut der = P256_SPKI_PREFIX.to_vec();
    der.extend(point);
    SubjectPublicKeyInfo::from_der(&der)
        .map(Some)
        .map_err(|e| e.to_string())
}

/// A part's `x5c`, decoded.
struct X5c {
    device: Vec<u8>,
    chain: Vec<Vec<u8>>,
    device_key: SubjectPublicKeyInfo,
}

/// Decodes `x5c` (standard base64 DER, device certificate first) and the device's key.
fn certificates(x5c: &[String]) -> Result<X5c, String> {
    let mut ders = Vec::with_capacity(x5c.len());
    let mut device_key = None;
    for (i, b64) in x5c.iter().enumerate() {
        let der = STANDARD
            .decode(b64)
            .map_err(|e| format!("x5c[{i}] is not base64: {e}"))?;
        let cert = EvidenceCertificate::from_der(&der)
            .map_err(|e| format!("x5c[{i}] is not a certificate: {e}"))?;
        device_key.get_or_insert_with(|| cert.tbs_certificate().subject_public_key_info().clone());
        ders.push(der);
    }
    let device_key = device_key.ok_or("x5c is empty")?;
    let device = ders.remove(0);
    Ok(X5c {
        device,
        chain: ders,
        device_key,
    })
}

#[cfg(test)]
pub(crate) mod tests {
    use std::path::{Path, PathBuf};

    use super::*;

    /// The Microchip vectors directory, or `None` (with a notice) outside CI when it is absent.
    pub(crate) fn microchip_vectors() -> Option<PathBuf> {
        let base = std::env::var_os("ATTESTCA_VECTORS_DIR")
            .map(PathBuf::from)
            .unwrap_or_else(|| {
                Path::new(env!("CARGO_MANIFEST_DIR")).join("../../../shared/vectors")
            });
        let dir = base.join("microchip");
        if dir.is_dir() {
            return Some(dir);
        }
        if std::env::var_os("CI").is_some()
            || std::env::var_os("ATTESTCA_TEST_REQUIRE_ALL").is_some()
        {
            panic!(
                "the Microchip test vectors are required: {} is missing",
                dir.display()
            );
        }
        eprintln!(
            "SKIPPED: {} is missing (set ATTESTCA_VECTORS_DIR)",
            dir.display()
        );
        None
    }

    pub(crate) const MANIFEST: &str = "ECC608C-TNGTLSU-B.manifest.json";
    pub(crate) const SIGNER: &str = "manifest-signer-005.crt";
    pub(crate) const ROOT: &str = "crypto-authentication-root-ca-002.pem";

    /// The DER of the (single) certificate in a PEM file of the vectors.
    pub(crate) fn certificate_der(dir: &Path, name: &str) -> Vec<u8> {
        crate::pem::read_certificate_ders(&dir.join(name))
            .expect("read a vector certificate")
            .remove(0)
    }

    /// The real manifest, verified with its real signer.
    pub(crate) fn real_parts(dir: &Path) -> Vec<ManifestPart> {
        let manifest = std::fs::read(dir.join(MANIFEST)).expect("read the manifest");
        verify(&manifest, &certificate_der(dir, SIGNER)).expect("the real manifest verifies")
    }

    fn manifest_entries(dir: &Path) -> Vec<serde_json::Value> {
        serde_json::from_slice(&std::fs::read(dir.join(MANIFEST)).unwrap()).unwrap()
    }

    fn verify_entries(
        entries: &[serde_json::Value],
        signer: &[u8],
    ) -> Result<Vec<ManifestPart>, ManifestError> {
        verify(&serde_json::to_vec(entries).unwrap(), signer)
    }

    #[test]
    fn real_manifest_verifies_with_its_signer() {
        let Some(dir) = microchip_vectors() else {
            return;
        };
        let parts = real_parts(&dir);
        assert_eq!(parts.len(), 10);
        assert_eq!(parts[0].unique_id, "0123f2408ea1fcf201");
        for part in &parts {
            assert_eq!(part.part_number, "ATECC608C-TNGTLSU-B");
            let device = part
                .device_certificate
                .as_ref()
                .expect("a device certificate");
            let cert = EvidenceCertificate::from_der(device).unwrap();
            // The JWK of slot 0 and the device certificate hold the same key: five keys, not six.
            assert_eq!(part.public_keys.len(), 5);
            assert!(super::super::same_key(
                &part.public_keys[0],
                cert.tbs_certificate().subject_public_key_info()
            ));
            assert_eq!(part.chain.len(), 1);
        }
    }

    #[test]
    fn one_changed_payload_character_rejects_the_manifest() {
        let Some(dir) = microchip_vectors() else {
            return;
        };
        let mut entries = manifest_entries(&dir);
        let payload = entries[3]["payload"].as_str().unwrap().to_string();
        let mut chars: Vec<char> = payload.chars().collect();
        chars[40] = if chars[40] == 'A' { 'B' } else { 'A' };
        entries[3]["payload"] = chars.into_iter().collect::<String>().into();
        let err = verify_entries(&entries, &certificate_der(&dir, SIGNER)).unwrap_err();
        assert!(
            matches!(err, ManifestError::Signature { index: 3 }),
            "{err}"
        );
        assert!(err.to_string().contains("entry 3"), "{err}");
    }

    #[test]
    fn another_certificate_as_signer_rejects_the_manifest() {
        let Some(dir) = microchip_vectors() else {
            return;
        };
        let manifest = std::fs::read(dir.join(MANIFEST)).unwrap();
        let err = verify(&manifest, &certificate_der(&dir, ROOT)).unwrap_err();
        assert!(
            matches!(err, ManifestError::KeyId { index: 0, .. }),
            "{err}"
        );
        // A part's device certificate has an SKI too, and still does not sign manifests.
        let device = real_parts(&dir).remove(0).device_certificate.unwrap();
        assert!(verify(&manifest, &device).is_err());
    }

    #[test]
    fn a_right_kid_with_a_wrong_key_fails_the_signature() {
        let Some(dir) = microchip_vectors() else {
            return;
        };
        let mut entries = manifest_entries(&dir);
        // Swap two entries' signatures: headers stay valid, signatures no longer match.
        let first = entries[0]["signature"].clone();
        entries[0]["signature"] = entries[1]["signature"].clone();
        entries[1]["signature"] = first;
        let err = verify_entries(&entries, &certificate_der(&dir, SIGNER)).unwrap_err();
        assert!(
            matches!(err, ManifestError::Signature { index: 0 }),
            "{err}"
        );
    }

    #[test]
    fn header_tampering_is_rejected() {
        let Some(dir) = microchip_vectors() else {
            return;
        };
        let signer = certificate_der(&dir, SIGNER);
        let reencode = |json: &str| URL_SAFE_NO_PAD.encode(json);
        let cases = [
            (
                r#"{"alg":"ES384","kid":"TCnpnzYB8M3CO776ByPJ2yX3KYo"}"#,
                "is not ES256",
            ),
            (
                r#"{"alg":"ES256","kid":"TCnpnzYB8M3CO776ByPJ2yX3KYo","x5t#S256":"AAAA"}"#,
                "thumbprint",
            ),
            (r#"{"alg":"ES256"}"#, "protected header"),
            (
                r#"{"alg":"ES256","kid":"TCnpnzYB8M3CO776ByPJ2yX3KYo","crit":["b64"]}"#,
                "critical",
            ),
        ];
        for (header, expected) in cases {
            let mut entries = manifest_entries(&dir);
            entries[9]["protected"] = reencode(header).into();
            let err = verify_entries(&entries, &signer).unwrap_err();
            let message = err.to_string();
            assert!(
                message.contains("entry 9") && message.contains(expected),
                "{message}"
            );
        }
        // The unsigned uniqueId copy must agree with the signed one.
        let mut entries = manifest_entries(&dir);
        entries[2]["header"]["uniqueId"] = "0123f2408ea1fcf201".into();
        let err = verify_entries(&entries, &signer).unwrap_err();
        assert!(
            matches!(err, ManifestError::Malformed { index: 2, .. }),
            "{err}"
        );
    }

    #[test]
    fn a_part_listed_twice_is_rejected() {
        let Some(dir) = microchip_vectors() else {
            return;
        };
        let mut entries = manifest_entries(&dir);
        entries.push(entries[0].clone());
        let err = verify_entries(&entries, &certificate_der(&dir, SIGNER)).unwrap_err();
        assert!(
            matches!(err, ManifestError::Duplicate { index: 10, .. }),
            "{err}"
        );
    }

    #[test]
    fn malformed_manifests_are_errors_not_panics() {
        let Some(dir) = microchip_vectors() else {
            return;
        };
        let signer = certificate_der(&dir, SIGNER);
        let inputs: [&[u8]; 9] = [
            b"",
            b"not json",
            b"{}",
            b"[]",
            b"[1]",
            b"[{}]",
            br#"[{"payload":"e30","protected":"e30"}]"#,
            br#"[{"payload":"!!","protected":"!!","signature":"!!","header":{}}]"#,
            br#"[{"payload":"e30","protected":"eyJhbGciOiJFUzI1NiJ9","signature":"","header":7}]"#,
        ];
        for input in inputs {
            assert!(
                verify(input, &signer).is_err(),
                "{:?}",
                String::from_utf8_lossy(input)
            );
        }
        // Missing fields of a real entry, one at a time.
        for field in ["payload", "protected", "signature"] {
            let mut entries = manifest_entries(&dir);
            entries[5].as_object_mut().unwrap().remove(field);
            let err = verify_entries(&entries, &signer).unwrap_err();
            assert!(err.to_string().contains("entry 5"), "{err}");
        }
        // Truncations of the real file.
        let manifest = std::fs::read(dir.join(MANIFEST)).unwrap();
        for cut in [1, 100, manifest.len() / 2, manifest.len() - 3] {
            assert!(verify(&manifest[..cut], &signer).is_err());
        }
        // A signer that is not a certificate.
        assert!(matches!(
            verify(&manifest, b"\x30\x03\x02\x01\x00"),
            Err(ManifestError::Signer(_))
        ));
    }

    #[test]
    fn a_jwk_must_hold_the_key_of_its_certificate() {
        let Some(dir) = microchip_vectors() else {
            return;
        };
        let entries = manifest_entries(&dir);
        let mut payload: serde_json::Value =
            decode_json(entries[0]["payload"].as_str().unwrap()).unwrap();
        assert!(part(serde_json::from_value(payload.clone()).unwrap()).is_ok());
        let keys = &mut payload["publicKeySet"]["keys"];
        keys[0]["x"] = keys[1]["x"].clone();
        keys[0]["y"] = keys[1]["y"].clone();
        let err = part(serde_json::from_value(payload).unwrap()).unwrap_err();
        assert!(err.contains("key 0") && err.contains("x5c"), "{err}");
    }

    #[test]
    fn jwk_keys_are_validated() {
        let jwk = |x: Option<&str>, y: Option<&str>, crv: &str| Jwk {
            kty: "EC".into(),
            crv: Some(crv.into()),
            x: x.map(Into::into),
            y: y.map(Into::into),
            x5c: None,
        };
        let x = "2epNuFqLlrbMIg_2P9W9u-oWZJ_qgpbiOGLNCWOsVFw";
        let y = "V9uW9gWQCyAu8uxQOFQ4AFDaxrtqbvUuvmJ5LF1Fn00";
        assert!(jwk_key(&jwk(Some(x), Some(y), "P-256")).unwrap().is_some());
        assert!(jwk_key(&jwk(None, None, "P-256")).unwrap().is_none());
        assert!(jwk_key(&jwk(Some(x), None, "P-256")).is_err());
        assert!(jwk_key(&jwk(Some(x), Some(y), "P-384")).is_err());
        assert!(
            jwk_key(&jwk(Some(x), Some(x), "P-256")).is_err(),
            "off the curve"
        );
        assert!(jwk_key(&jwk(Some("AAAA"), Some(y), "P-256")).is_err());
    }
}
