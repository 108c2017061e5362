//! Reading OCSP requests: the DER of a POST body or the encoded request of a GET path, the
//! CertIDs it asks about, its nonce, and whether a CertID names the CA this responder serves.

use base64::Engine;
use const_oid::ObjectIdentifier;
use const_oid::db::rfc5912::{ID_SHA_1, ID_SHA_256};
use const_oid::db::rfc6960::ID_PKIX_OCSP_NONCE;
use der::asn1::{Any, Int, Null, OctetString};
use der::{Decode, Encode};
use x509_cert::AlgorithmIdentifier;
use x509_cert::Certificate;
use x509_cert::ext::Extension;

use super::OcspError;
use super::asn1::{CertId, OcspRequest};
use crate::config::OcspNoncePolicy;
/// The response cache's key for a CertID's serial (defined with the rest of the serial vocabulary).
pub use crate::serial::SerialKey;

/// Most certificates one request may ask about.
pub const MAX_CERTIFICATES_PER_REQUEST: usize = 32;

/// RFC 8954: a nonce is 1 to 32 octets.
const MAX_NONCE_OCTETS: usize = 32;

/// The CertID hash algorithms answered: SHA-1 (RFC 5019's, OpenSSL's default) and SHA-256.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum CertIdHash {
    Sha1,
    Sha256,
}

impl CertIdHash {
    /// Every supported algorithm.
    pub const ALL: [CertIdHash; 2] = [CertIdHash::Sha1, CertIdHash::Sha256];

    fn from_oid(oid: ObjectIdentifier) -> Option<Self> {
        match oid {
            ID_SHA_1 => Some(CertIdHash::Sha1),
            ID_SHA_256 => Some(CertIdHash::Sha256),
            _ => None,
        }
    }

    fn oid(self) -> ObjectIdentifier {
        match self {
            CertIdHash::Sha1 => ID_SHA_1,
            CertIdHash::Sha256 => ID_SHA_256,
        }
    }

    /// Hashes `data`.
    pub fn digest(self, data: &[u8]) -> Vec<u8> {
        let algorithm = match self {
            CertIdHash::Sha1 => &aws_lc_rs::digest::SHA1_FOR_LEGACY_USE_ONLY,
            CertIdHash::Sha256 => &aws_lc_rs::digest::SHA256,
        };
        aws_lc_rs::digest::digest(algorithm, data).as_ref().to_vec()
    }
}

/// A request, checked.
#[derive(Clone, Debug)]
pub struct ParsedRequest {
    /// The CertIDs in request order, as sent (echoed in the response).
    pub cert_ids: Vec<CertId>,
    /// The nonce extension to echo, when the request has one and the policy is `echo`.
    pub nonce: Option<Extension>,
}

/// Decodes and checks an `OCSPRequest`.
pub fn parse(der: &[u8], nonce_policy: OcspNoncePolicy) -> Result<ParsedRequest, OcspError> {
    if der.is_empty() {
        return Err(OcspError::Malformed("empty request".into()));
    }
    let request = OcspRequest::from_der(der)
        .map_err(|e| OcspError::Malformed(format!("not a DER OCSPRequest: {e}")))?;
    let tbs = request.tbs_request;
    if tbs.version != super::asn1::OCSP_V1 {
        return Err(OcspError::Malformed(format!(
            "unsupported version {}",
            tbs.version
        )));
    }
    match tbs.request_list.len() {
        0 => return Err(OcspError::Malformed("no certificate asked about".into())),
        n if n > MAX_CERTIFICATES_PER_REQUEST => {
            return Err(OcspError::Malformed(format!(
                "{n} certificates in one request (at most {MAX_CERTIFICATES_PER_REQUEST})"
            )));
        }
        _ => {}
    }
    let nonce = match nonce_policy {
        OcspNoncePolicy::Ignore => None,
        OcspNoncePolicy::Echo => tbs
            .request_extensions
            .into_iter()
            .flatten()
            .find(|e| e.extn_id == ID_PKIX_OCSP_NONCE)
            .map(checked_nonce)
            .transpose()?,
    };
    Ok(ParsedRequest {
        cert_ids: tbs.request_list.into_iter().map(|r| r.req_cert).collect(),
        nonce,
    })
}

/// RFC 8954: the nonce is an OCTET STRING of 1 to 32 octets inside extnValue (older clients
/// put the octets there directly; both are accepted, and the extension is echoed as sent).
fn checked_nonce(extension: Extension) -> Result<Extension, OcspError> {
    let value = extension.extn_value.as_bytes();
    let octets = OctetString::from_der(value)
        .map(|o| o.as_bytes().len())
        .unwrap_or(value.len());
    if octets == 0 || octets > MAX_NONCE_OCTETS {
        return Err(OcspError::Malformed(format!(
            "nonce of {octets} octets (RFC 8954: 1 to {MAX_NONCE_OCTETS})"
        )));
    }
    Ok(extension)
}

/// Decodes the request of `GET /ocsp/<request>`: the path segment(s) after `/ocsp/`, still
/// percent-encoded, holding base64 of the DER (RFC 6960 appendix A). Standard and URL-safe
/// alphabets are accepted, with or without padding.
pub fn decode_get_path(encoded: &str) -> Result<Vec<u8>, OcspError> {
    let bad = |what: &str| OcspError::Malformed(format!("GET request: {what}"));
    let mut text = Vec::with_capacity(encoded.len());
    let mut bytes = encoded.bytes();
    while let Some(b) = bytes.next() {
        match b {
            b'%' => {
                let hi = bytes.next().and_then(|c| (c as char).to_digit(16));
                let lo = bytes.next().and_then(|c| (c as char).to_digit(16));
                match (hi, lo) {
                    (Some(hi), Some(lo)) => text.push((hi * 16 + lo) as u8),
                    _ => return Err(bad("bad percent-encoding")),
                }
            }
            other => text.push(other),
        }
    }
    // The URL-safe alphabet, and line breaks some encoders leave in.
    text.retain(|b| !matches!(b, b'\r' | b'\n' | b' '));
    for b in &mut text {
        match *b {
            b'-' => *b = b'+',
            b'_' => *b = b'/',
            _ => {}
        }
    }
    while text.last() == Some(&b'=') {
        text.pop();
    }
    if text.is_empty() {
        return Err(bad("empty"));
    }
    base64::engine::general_purpose::STANDARD_NO_PAD
        .decode(&text)
        .map_err(|e| bad(&format!("not base64: {e}")))
}

/// The issuing CA as CertIDs name it: its name and key hashed with each supported algorithm.
#[derive(Clone, Debug)]
pub struct IssuerHashes {
    hashes: Vec<(CertIdHash, Vec<u8>, Vec<u8>)>,
}

/// What a CertID names.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RequestedCertificate {
    pub hash: CertIdHash,
    /// `None` for a serial longer than any this CA issues (it is then unknown).
    pub serial: Option<SerialKey>,
}

impl IssuerHashes {
    /// The hashes of `issuer`'s subject (DER) and subjectPublicKey bits.
    pub fn of(issuer: &Certificate) -> Result<Self, der::Error> {
        let tbs = issuer.tbs_certificate();
        let name = tbs.subject().to_der()?;
        let key = tbs.subject_public_key_info().subject_public_key.raw_bytes();
        Ok(Self {
            hashes: CertIdHash::ALL
                .iter()
                .map(|h| (*h, h.digest(&name), h.digest(key)))
                .collect(),
        })
    }

    /// Checks that `cert_id` names this issuer with a supported hash.
    pub fn identify(&self, cert_id: &CertId) -> Result<RequestedCertificate, OcspError> {
        let hash = CertIdHash::from_oid(cert_id.hash_algorithm.oid).ok_or_else(|| {
            OcspError::Malformed(format!(
                "CertID hash algorithm {} is not supported (SHA-1 or SHA-256)",
                cert_id.hash_algorithm.oid
            ))
        })?;
        let ours = self.hashes.iter().any(|(h, name, key)| {
            *h == hash
                && cert_id.issuer_name_hash.as_bytes() == name.as_slice()
                && cert_id.issuer_key_hash.as_bytes() == key.as_slice()
        });
        if !ours {
            return Err(OcspError::Unauthorized);
        }
        Ok(RequestedCertificate {
            hash,
            serial: SerialKey::new(cert_id.serial_number.as_bytes()),
        })
    }

    /// The CertID of one of this issuer's serials, as pre-signed responses carry it (the hash
    /// algorithm with NULL parameters, as OpenSSL sends it).
    pub fn cert_id(&self, hash: CertIdHash, serial: &SerialKey) -> Result<CertId, OcspError> {
        let (_, name, key) = self
            .hashes
            .iter()
            .find(|(h, _, _)| *h == hash)
            .ok_or_else(|| OcspError::Internal("issuer hash missing".into()))?;
        let encoding = |e: der::Error| OcspError::Internal(format!("CertID: {e}"));
        Ok(CertId {
            hash_algorithm: AlgorithmIdentifier {
                oid: hash.oid(),
                parameters: Some(Any::from(Null)),
            },
            issuer_name_hash: OctetString::new(name.clone()).map_err(encoding)?,
            issuer_key_hash: OctetString::new(key.clone()).map_err(encoding)?,
            serial_number: Int::new(serial.as_bytes()).map_err(encoding)?,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::super::asn1::{Request, TbsRequest};
    use super::*;

    fn issuer() -> (crate::issuance::software_ca::SoftwareCa, IssuerHashes) {
        let ca =
            crate::issuance::software_ca::SoftwareCa::self_signed("CN=Test CA", 1).expect("CA");
        let hashes = IssuerHashes::of(ca.certificate()).expect("hashes");
        (ca, hashes)
    }

    fn request(cert_ids: Vec<CertId>, extensions: Option<Vec<Extension>>) -> Vec<u8> {
        OcspRequest {
            tbs_request: TbsRequest {
                version: 0,
                requestor_name: None,
                request_list: cert_ids
                    .into_iter()
                    .map(|req_cert| Request {
                        req_cert,
                        single_request_extensions: None,
                    })
                    .collect(),
                request_extensions: extensions,
            },
            optional_signature: None,
        }
        .to_der()
        .expect("encode")
    }

    /// A CertID of this test's issuer for serial 9.
    fn cert_id_of_serial_9(hash: CertIdHash) -> CertId {
        let (_, hashes) = issuer();
        hashes
            .cert_id(hash, &SerialKey::new(&[9]).expect("key"))
            .expect("id")
    }

    fn malformed<T>(result: Result<T, OcspError>) -> bool {
        matches!(result, Err(OcspError::Malformed(_)))
    }

    fn nonce(octets: usize) -> Extension {
        Extension {
            extn_id: ID_PKIX_OCSP_NONCE,
            critical: false,
            extn_value: OctetString::new(
                OctetString::new(vec![0x5a; octets])
                    .expect("nonce")
                    .to_der()
                    .expect("der"),
            )
            .expect("value"),
        }
    }

    #[test]
    fn garbage_empty_and_truncated_requests_are_malformed() {
        let good = request(vec![cert_id_of_serial_9(CertIdHash::Sha1)], None);
        for bad in [
            Vec::new(),
            b"not DER at all".to_vec(),
            good[..good.len() - 1].to_vec(),
            [good.clone(), vec![0]].concat(),
            request(Vec::new(), None),
        ] {
            assert!(malformed(parse(&bad, OcspNoncePolicy::Echo)), "{bad:02x?}");
        }
        assert_eq!(
            parse(&good, OcspNoncePolicy::Echo)
                .expect("valid")
                .cert_ids
                .len(),
            1
        );
    }

    #[test]
    fn too_many_certificates_are_malformed() {
        let id = cert_id_of_serial_9(CertIdHash::Sha1);
        let many = request(vec![id; MAX_CERTIFICATES_PER_REQUEST + 1], None);
        assert!(malformed(parse(&many, OcspNoncePolicy::Echo)));
    }

    #[test]
    fn nonce_is_echoed_checked_or_ignored_by_policy() {
        let id = cert_id_of_serial_9(CertIdHash::Sha256);
        let with = request(vec![id.clone()], Some(vec![nonce(16)]));
        let parsed = parse(&with, OcspNoncePolicy::Echo).expect("parse");
        assert_eq!(parsed.nonce, Some(nonce(16)));
        assert!(
            parse(&with, OcspNoncePolicy::Ignore)
                .expect("parse")
                .nonce
                .is_none()
        );
        for octets in [0, 33] {
            let bad = request(vec![id.clone()], Some(vec![nonce(octets)]));
            assert!(malformed(parse(&bad, OcspNoncePolicy::Echo)));
            assert!(parse(&bad, OcspNoncePolicy::Ignore).is_ok());
        }
    }

    #[test]
    fn cert_ids_are_matched_against_the_issuer() {
        let (ca, hashes) = issuer();
        let serial = SerialKey::new(&[0x40; 16]).expect("key");
        for hash in CertIdHash::ALL {
            let id = hashes.cert_id(hash, &serial).expect("id");
            assert_eq!(
                hashes.identify(&id).expect("ours"),
                RequestedCertificate {
                    hash,
                    serial: Some(serial)
                }
            );
        }
        // Hashes computed independently of cert_id(): SHA-1 of the name DER and key bits.
        let tbs = ca.certificate().tbs_certificate();
        let name_sha1 = CertIdHash::Sha1.digest(&tbs.subject().to_der().expect("name"));
        let id = hashes.cert_id(CertIdHash::Sha1, &serial).expect("id");
        assert_eq!(id.issuer_name_hash.as_bytes(), name_sha1.as_slice());

        let (_, other) = issuer();
        let foreign = other.cert_id(CertIdHash::Sha1, &serial).expect("id");
        assert!(matches!(
            hashes.identify(&foreign),
            Err(OcspError::Unauthorized)
        ));

        let mut md5 = hashes.cert_id(CertIdHash::Sha1, &serial).expect("id");
        md5.hash_algorithm.oid = ObjectIdentifier::new_unwrap("1.2.840.113549.2.5");
        assert!(malformed(hashes.identify(&md5)));

        let mut long = hashes.cert_id(CertIdHash::Sha1, &serial).expect("id");
        long.serial_number = Int::new(&[0x11; 30]).expect("long serial");
        assert_eq!(hashes.identify(&long).expect("ours").serial, None);
    }

    #[test]
    fn get_paths_decode_in_every_base64_flavour() {
        let der = vec![0xfb, 0xef, 0xbe, 0x3e, 0xff, 0xf0, 0x30];
        let standard = base64::engine::general_purpose::STANDARD.encode(&der);
        assert!(standard.contains('+') && standard.contains('/'));
        let url_safe = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(&der);
        let percent = standard
            .replace('+', "%2B")
            .replace('/', "%2F")
            .replace('=', "%3D");
        for encoded in [&standard, &url_safe, &percent] {
            assert_eq!(decode_get_path(encoded).expect(encoded), der, "{encoded}");
        }
        for bad in ["", "%", "%zz", "!!!!", "===="] {
            assert!(malformed(decode_get_path(bad)), "{bad}");
        }
    }
}
