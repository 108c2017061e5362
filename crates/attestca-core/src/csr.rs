//! CSR checks: decoding, proof of possession, key and name policy.
//!
//! The signature is verified over the CSR's own `certificationRequestInfo` bytes (not a
//! re-encoding), with aws-lc, which verifies ECDSA about three times faster than a pure-Rust
//! implementation; verification is the largest CPU cost of an enrollment.
//!
//! Everything the CA copies from a CSR into a certificate is checked for content, not only for
//! type: the subject's structure (single-valued RDNs, each attribute once, only the profile's
//! attributes), each value's string type, alphabet, characters and RFC 5280 upper bound, and
//! each subjectAltName's syntax ([`names`]). The rules and bounds are listed in
//! docs/est-profile.md ("CSR requirements").

mod names;

use const_oid::ObjectIdentifier;
use const_oid::db::rfc4519::{
    COMMON_NAME, COUNTRY_NAME, LOCALITY_NAME, ORGANIZATION_NAME, ORGANIZATIONAL_UNIT_NAME,
    SERIAL_NUMBER, ST,
};
use const_oid::db::rfc5912::{
    ID_EC_PUBLIC_KEY, ID_EXTENSION_REQ, RSA_ENCRYPTION, SECP_256_R_1, SECP_384_R_1,
};
use der::asn1::Any;
use der::asn1::ObjectIdentifier as Oid;
use der::{Decode, Encode, Tag, Tagged};
use x509_cert::SubjectPublicKeyInfo;
use x509_cert::ext::Extension;
use x509_cert::ext::pkix::SubjectAltName;
use x509_cert::ext::pkix::name::GeneralName;
use x509_cert::name::Name;
use x509_cert::request::{CertReq, Version};

use crate::asn1::{RsaPublicKey, SignedEnvelope};
use crate::config::{DeviceKeyAlgorithm, SanType, SubjectAttribute};
use crate::policy::EnrollmentPolicy;
use crate::reason::Reason;
use crate::verify::{self, PublicKeyKind};

/// A CSR whose signature verified and whose content the profile allows.
#[derive(Clone, Debug)]
pub struct ValidatedCsr {
    pub subject: Name,
    pub public_key: SubjectPublicKeyInfo,
    pub key_algorithm: DeviceKeyAlgorithm,
    pub subject_alt_names: Vec<GeneralName>,
    /// The decoded request, for later checks (attributes such as attestation evidence).
    pub request: CertReq,
}

/// Why a CSR is refused: a documented reason code (`csr.bad_signature`, …) and a detail for
/// the requester. The registration authority answers it as a bad request.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{detail}")]
pub struct CsrRefusal {
    pub code: Reason,
    pub detail: String,
}

impl CsrRefusal {
    /// The documented reason code.
    pub fn reason_code(&self) -> Reason {
        self.code
    }
}

fn bad(code: Reason, detail: impl Into<String>) -> CsrRefusal {
    CsrRefusal {
        code,
        detail: detail.into(),
    }
}

/// Decodes `der`, verifies its signature and applies the profile's CSR rules.
pub fn validate(der: &[u8], profile: &EnrollmentPolicy) -> Result<ValidatedCsr, CsrRefusal> {
    let (request, info_der) = decode(der)?;
    let public_key = request.info.public_key.clone();
    let key_algorithm = check_key(&public_key, profile)?;
    verify_signature(&request, &public_key, key_algorithm, &info_der)?;
    check_subject(&request.info.subject, profile)?;
    let subject_alt_names = requested_alt_names(&request, profile)?;
    if request.info.subject.is_empty() && subject_alt_names.is_empty() {
        return Err(bad(
            Reason::CsrNoIdentity,
            "the CSR names nobody: give a subject or a subjectAltName",
        ));
    }
    Ok(ValidatedCsr {
        subject: request.info.subject.clone(),
        public_key,
        key_algorithm,
        subject_alt_names,
        request,
    })
}

/// Decodes `der` and verifies its self-signature with the key it carries (any key attestca
/// handles), without a profile's rules: the proof of possession alone, for offline
/// examination of a request.
pub fn proof_of_possession(der: &[u8]) -> Result<CertReq, CsrRefusal> {
    let (request, info_der) = decode(der)?;
    let public_key = &request.info.public_key;
    let key_algorithm = match verify::key_kind(public_key) {
        Some(PublicKeyKind::P256) => DeviceKeyAlgorithm::P256,
        Some(PublicKeyKind::P384) => DeviceKeyAlgorithm::P384,
        Some(PublicKeyKind::Rsa) => DeviceKeyAlgorithm::Rsa,
        None => {
            return Err(bad(
                Reason::CsrKeyAlgorithmNotAllowed,
                "the key is not P-256, P-384 or RSA",
            ));
        }
    };
    verify_signature(&request, public_key, key_algorithm, &info_der)?;
    Ok(request)
}

/// The request and the DER of its certificationRequestInfo as signed.
fn decode(der: &[u8]) -> Result<(CertReq, Vec<u8>), CsrRefusal> {
    let malformed = |e: der::Error| {
        bad(
            Reason::CsrMalformed,
            format!("not a DER PKCS#10 request: {e}"),
        )
    };
    let envelope = SignedEnvelope::from_der(der).map_err(malformed)?;
    let request = CertReq::from_der(der).map_err(malformed)?;
    if request.info.version != Version::V1 {
        return Err(bad(Reason::CsrMalformed, "CSR version must be v1 (0)"));
    }
    let info_der = envelope
        .tbs
        .to_der()
        .map_err(|e| bad(Reason::CsrMalformed, e.to_string()))?;
    Ok((request, info_der))
}

fn curve_of(spki: &SubjectPublicKeyInfo) -> Option<ObjectIdentifier> {
    spki.algorithm
        .parameters
        .as_ref()
        .and_then(|p| p.decode_as::<Oid>().ok())
}

fn check_key(
    spki: &SubjectPublicKeyInfo,
    profile: &EnrollmentPolicy,
) -> Result<DeviceKeyAlgorithm, CsrRefusal> {
    let algorithm = match spki.algorithm.oid {
        ID_EC_PUBLIC_KEY => match curve_of(spki) {
            Some(SECP_256_R_1) => DeviceKeyAlgorithm::P256,
            Some(SECP_384_R_1) => DeviceKeyAlgorithm::P384,
            other => {
                return Err(bad(
                    Reason::CsrKeyAlgorithmNotAllowed,
                    format!("EC curve {other:?} is not accepted (P-256 and P-384 are)"),
                ));
            }
        },
        RSA_ENCRYPTION => {
            let key = RsaPublicKey::from_der(spki.subject_public_key.raw_bytes())
                .map_err(|e| bad(Reason::CsrMalformed, format!("RSA public key: {e}")))?;
            let bits = key.modulus_bits();
            if bits < profile.min_rsa_bits {
                return Err(bad(
                    Reason::CsrKeyTooSmall,
                    format!(
                        "RSA key of {bits} bits; at least {} required",
                        profile.min_rsa_bits
                    ),
                ));
            }
            if bits > 8192 {
                return Err(bad(
                    Reason::CsrKeyTooLarge,
                    format!("RSA key of {bits} bits; at most 8192"),
                ));
            }
            DeviceKeyAlgorithm::Rsa
        }
        other => {
            return Err(bad(
                Reason::CsrKeyAlgorithmNotAllowed,
                format!("public key algorithm {other} is not accepted"),
            ));
        }
    };
    if !profile.key_algorithms.contains(&algorithm) {
        return Err(bad(
            Reason::CsrKeyAlgorithmNotAllowed,
            format!(
                "{algorithm:?} keys are not accepted on profile {:?} (allowed: {:?})",
                profile.label, profile.key_algorithms
            ),
        ));
    }
    check_ec_point(spki, algorithm)?;
    Ok(algorithm)
}

/// An EC public key must be an uncompressed point (`04 || X || Y`) on its curve.
///
/// Compressed (`02`/`03`) and hybrid (`06`/`07`) points and the point at infinity (`00`) are
/// refused rather than normalised: the CA compares keys as DER (the attestation gate's
/// `same_key`, renewal's rekey test) and records `spki_sha256`, so one key must have one
/// encoding; RFC 5480 makes only the uncompressed form mandatory for relying parties, and the
/// certificate would carry an encoding the device did not sign. docs/est-profile.md says more.
fn check_ec_point(
    spki: &SubjectPublicKeyInfo,
    algorithm: DeviceKeyAlgorithm,
) -> Result<(), CsrRefusal> {
    let coordinate = match algorithm {
        DeviceKeyAlgorithm::P256 => 32,
        DeviceKeyAlgorithm::P384 => 48,
        DeviceKeyAlgorithm::Rsa => return Ok(()),
    };
    let point = spki.subject_public_key.as_bytes().ok_or_else(|| {
        bad(
            Reason::CsrKeyEncoding,
            "the public key BIT STRING has unused bits",
        )
    })?;
    let form = match point.first() {
        Some(0x04) if point.len() == 1 + 2 * coordinate => None,
        Some(0x02 | 0x03) => Some("a compressed EC point"),
        Some(0x06 | 0x07) => Some("a hybrid EC point"),
        Some(0x00) => Some("the point at infinity"),
        _ => Some("not an EC point of the curve's size"),
    };
    if let Some(form) = form {
        return Err(bad(
            Reason::CsrKeyEncoding,
            format!(
                "the public key is {form}; send the uncompressed form (04 || X || Y, RFC 5480)"
            ),
        ));
    }
    let on_curve = match algorithm {
        DeviceKeyAlgorithm::P256 => p256::PublicKey::from_sec1_bytes(point).is_ok(),
        DeviceKeyAlgorithm::P384 => p384::PublicKey::from_sec1_bytes(point).is_ok(),
        DeviceKeyAlgorithm::Rsa => true,
    };
    if !on_curve {
        return Err(bad(
            Reason::CsrKeyEncoding,
            "the public key is not a point on its curve",
        ));
    }
    Ok(())
}

fn verify_signature(
    request: &CertReq,
    spki: &SubjectPublicKeyInfo,
    key: DeviceKeyAlgorithm,
    info_der: &[u8],
) -> Result<(), CsrRefusal> {
    let kind = match key {
        DeviceKeyAlgorithm::P256 => PublicKeyKind::P256,
        DeviceKeyAlgorithm::P384 => PublicKeyKind::P384,
        DeviceKeyAlgorithm::Rsa => PublicKeyKind::Rsa,
    };
    if verify::algorithm(kind, request.algorithm.oid).is_none() {
        return Err(bad(
            Reason::CsrSignatureAlgorithmNotAllowed,
            format!(
                "signature algorithm {} does not fit a {key:?} key or is not accepted",
                request.algorithm.oid
            ),
        ));
    }
    let signature = request
        .signature
        .as_bytes()
        .ok_or_else(|| bad(Reason::CsrMalformed, "signature BIT STRING has unused bits"))?;
    if !verify::verify(spki, request.algorithm.oid, info_der, signature) {
        return Err(bad(
            Reason::CsrBadSignature,
            "the CSR signature does not verify with its public key (no proof of possession)",
        ));
    }
    Ok(())
}

/// How a subject attribute's value is written.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum ValueSyntax {
    /// DirectoryString: UTF8String or PrintableString (RFC 5280 4.1.2.4 allows no other for new
    /// certificates).
    Directory,
    /// PrintableString only.
    Printable,
    /// A country code: a PrintableString of two upper-case letters (ISO 3166 alpha-2).
    Country,
}

/// What the CA accepts of one subject attribute.
struct AttributeRule {
    attribute: SubjectAttribute,
    oid: ObjectIdentifier,
    syntax: ValueSyntax,
    /// The RFC 5280 Appendix A upper bound, in characters.
    max_chars: usize,
}

/// The subject attributes attestca knows, with their syntax and RFC 5280 upper bounds.
const SUBJECT_RULES: [AttributeRule; 7] = [
    AttributeRule {
        attribute: SubjectAttribute::CommonName,
        oid: COMMON_NAME,
        syntax: ValueSyntax::Directory,
        max_chars: 64, // ub-common-name
    },
    AttributeRule {
        attribute: SubjectAttribute::Organization,
        oid: ORGANIZATION_NAME,
        syntax: ValueSyntax::Directory,
        max_chars: 64, // ub-organization-name
    },
    AttributeRule {
        attribute: SubjectAttribute::OrganizationalUnit,
        oid: ORGANIZATIONAL_UNIT_NAME,
        syntax: ValueSyntax::Directory,
        max_chars: 64, // ub-organizational-unit-name
    },
    AttributeRule {
        attribute: SubjectAttribute::Country,
        oid: COUNTRY_NAME,
        syntax: ValueSyntax::Country,
        max_chars: 2, // SIZE (2)
    },
    AttributeRule {
        attribute: SubjectAttribute::Locality,
        oid: LOCALITY_NAME,
        syntax: ValueSyntax::Directory,
        max_chars: 128, // ub-locality-name
    },
    AttributeRule {
        attribute: SubjectAttribute::StateOrProvince,
        oid: ST,
        syntax: ValueSyntax::Directory,
        max_chars: 128, // ub-state-name
    },
    AttributeRule {
        attribute: SubjectAttribute::SerialNumber,
        oid: SERIAL_NUMBER,
        syntax: ValueSyntax::Printable,
        max_chars: 64, // ub-serial-number
    },
];

/// The most RDNs a subject may have: one per known attribute, since none may repeat.
pub const MAX_SUBJECT_RDNS: usize = SUBJECT_RULES.len();

/// The most subjectAltNames a CSR may request.
pub const MAX_SUBJECT_ALT_NAMES: usize = 32;

/// Up to 64 characters of `text`, escaped, for an explanation (never the raw bytes).
fn shown(text: &str) -> String {
    let mut out: String = text.chars().take(64).flat_map(char::escape_debug).collect();
    if text.chars().nth(64).is_some() {
        out.push('…');
    }
    format!("\"{out}\"")
}

fn check_subject(subject: &Name, profile: &EnrollmentPolicy) -> Result<(), CsrRefusal> {
    if subject.len() > MAX_SUBJECT_RDNS {
        return Err(bad(
            Reason::CsrSubjectRejected,
            format!(
                "the subject has {} RDNs; at most {MAX_SUBJECT_RDNS}",
                subject.len()
            ),
        ));
    }
    let mut seen: Vec<SubjectAttribute> = Vec::with_capacity(MAX_SUBJECT_RDNS);
    let mut common_name = None;
    for rdn in subject.iter_rdn() {
        let mut members = rdn.iter();
        let (Some(atv), None) = (members.next(), members.next()) else {
            return Err(bad(
                Reason::CsrSubjectRejected,
                "every RDN must hold exactly one attribute (no multi-valued RDNs)",
            ));
        };
        let Some(rule) = SUBJECT_RULES.iter().find(|r| r.oid == atv.oid) else {
            return Err(bad(
                Reason::CsrSubjectAttributeNotAllowed,
                format!(
                    "subject attribute {} is not accepted (CN, O, OU, C, L, ST, serialNumber are)",
                    atv.oid
                ),
            ));
        };
        let name = rule.attribute.short_name();
        if !profile.subject_attributes.contains(&rule.attribute) {
            return Err(bad(
                Reason::CsrSubjectAttributeNotAllowed,
                format!(
                    "subject attribute {name} is not accepted on profile {:?}",
                    profile.label
                ),
            ));
        }
        if seen.contains(&rule.attribute) {
            return Err(bad(
                Reason::CsrSubjectRejected,
                format!("the subject has more than one {name}"),
            ));
        }
        seen.push(rule.attribute);
        let value = attribute_value(rule, &atv.value)?;
        if rule.attribute == SubjectAttribute::CommonName {
            common_name = Some(value.to_owned());
        }
    }
    match (&common_name, profile.cn_required) {
        (None, true) => Err(bad(
            Reason::CsrSubjectCnMissing,
            format!("profile {:?} requires a subject CN", profile.label),
        )),
        (Some(cn), _) => match &profile.cn_pattern {
            Some(pattern) if !pattern.is_match(cn) => Err(bad(
                Reason::CsrSubjectRejected,
                format!(
                    "CN {} does not match the pattern of profile {:?}",
                    shown(cn),
                    profile.label
                ),
            )),
            _ => Ok(()),
        },
        (None, false) => Ok(()),
    }
}

/// The text of a subject attribute value, if its string type, alphabet, characters and length
/// are acceptable for `rule`.
fn attribute_value<'a>(rule: &AttributeRule, value: &'a Any) -> Result<&'a str, CsrRefusal> {
    let name = rule.attribute.short_name();
    let encoding = |detail: String| bad(Reason::CsrSubjectEncoding, detail);
    let tag = value.tag();
    let type_ok = match rule.syntax {
        ValueSyntax::Directory => matches!(tag, Tag::Utf8String | Tag::PrintableString),
        ValueSyntax::Printable | ValueSyntax::Country => tag == Tag::PrintableString,
    };
    if !type_ok {
        return Err(encoding(format!(
            "subject {name} is a {tag}; RFC 5280 wants {}",
            match rule.syntax {
                ValueSyntax::Directory => "a UTF8String or a PrintableString",
                ValueSyntax::Printable | ValueSyntax::Country => "a PrintableString",
            }
        )));
    }
    let text = std::str::from_utf8(value.value())
        .map_err(|_| encoding(format!("subject {name} is not valid UTF-8")))?;
    if let Some(character) = names::first_forbidden(text) {
        return Err(encoding(format!("subject {name} contains {character}")));
    }
    if tag == Tag::PrintableString
        && let Some(c) = text.chars().find(|c| !names::is_printable_char(*c))
    {
        return Err(encoding(format!(
            "subject {name} contains U+{:04X}, outside the PrintableString alphabet \
             (A-Z a-z 0-9 space ' ( ) + , - . / : = ?); use a UTF8String",
            u32::from(c)
        )));
    }
    let length = text.chars().count();
    if length == 0 || length > rule.max_chars {
        return Err(encoding(format!(
            "subject {name} has {length} characters; 1 to {} allowed (RFC 5280)",
            rule.max_chars
        )));
    }
    if text.starts_with(char::is_whitespace) || text.ends_with(char::is_whitespace) {
        return Err(encoding(format!(
            "subject {name} starts or ends with white space"
        )));
    }
    if rule.syntax == ValueSyntax::Country
        && !(length == 2 && text.chars().all(|c| c.is_ascii_uppercase()))
    {
        return Err(encoding(format!(
            "subject C {} is not a two-letter upper-case country code",
            shown(text)
        )));
    }
    Ok(text)
}

fn requested_alt_names(
    request: &CertReq,
    profile: &EnrollmentPolicy,
) -> Result<Vec<GeneralName>, CsrRefusal> {
    let mut names = Vec::new();
    let mut seen_request = false;
    for attribute in request.info.attributes.iter() {
        if attribute.oid != ID_EXTENSION_REQ {
            continue;
        }
        if seen_request || attribute.values.len() != 1 {
            return Err(bad(Reason::CsrMalformed, "more than one extensionRequest"));
        }
        seen_request = true;
        let Some(value) = attribute.values.iter().next() else {
            continue;
        };
        let extensions: Vec<Extension> = value
            .decode_as()
            .map_err(|e| bad(Reason::CsrMalformed, format!("extensionRequest: {e}")))?;
        let mut seen_san = false;
        for ext in extensions {
            if ext.extn_id != const_oid::db::rfc5280::ID_CE_SUBJECT_ALT_NAME {
                // The CA, not the requester, decides key usage and every other extension.
                continue;
            }
            if seen_san {
                return Err(bad(
                    Reason::CsrMalformed,
                    "more than one subjectAltName requested",
                ));
            }
            seen_san = true;
            let san = SubjectAltName::from_der(ext.extn_value.as_bytes())
                .map_err(|e| bad(Reason::CsrMalformed, format!("subjectAltName: {e}")))?;
            if san.0.is_empty() {
                return Err(bad(
                    Reason::CsrSanMalformed,
                    "the subjectAltName is empty (RFC 5280: SIZE (1..MAX))",
                ));
            }
            if san.0.len() > MAX_SUBJECT_ALT_NAMES {
                return Err(bad(
                    Reason::CsrSanTooMany,
                    format!(
                        "{} subjectAltNames requested; at most {MAX_SUBJECT_ALT_NAMES}",
                        san.0.len()
                    ),
                ));
            }
            for name in san.0 {
                check_alt_name(&name, profile)?;
                if names.contains(&name) {
                    return Err(bad(
                        Reason::CsrSanMalformed,
                        "the same subjectAltName is requested twice",
                    ));
                }
                names.push(name);
            }
        }
    }
    Ok(names)
}

fn check_alt_name(name: &GeneralName, profile: &EnrollmentPolicy) -> Result<(), CsrRefusal> {
    let (kind, text, ok) = match name {
        GeneralName::DnsName(d) => (SanType::Dns, d.as_str(), names::is_dns_name(d.as_str())),
        GeneralName::IpAddress(ip) => (SanType::Ip, "", matches!(ip.as_bytes().len(), 4 | 16)),
        GeneralName::UniformResourceIdentifier(u) => {
            (SanType::Uri, u.as_str(), names::is_uri(u.as_str()))
        }
        GeneralName::Rfc822Name(m) => (SanType::Email, m.as_str(), names::is_mailbox(m.as_str())),
        other => {
            return Err(bad(
                Reason::CsrSanTypeNotAllowed,
                format!(
                    "subjectAltName type {:?} is not accepted",
                    std::mem::discriminant(other)
                ),
            ));
        }
    };
    if !profile.san_types.contains(&kind) {
        return Err(bad(
            Reason::CsrSanTypeNotAllowed,
            format!(
                "{kind:?} subjectAltNames are not accepted on profile {:?}",
                profile.label
            ),
        ));
    }
    if !ok {
        let rule = match kind {
            SanType::Dns => "a DNS name in preferred syntax with at least two labels",
            SanType::Ip => "4 or 16 octets",
            SanType::Uri => "an absolute URI (RFC 3986) whose host, if any, is a FQDN or IP",
            SanType::Email => "a mailbox local@domain (dot-atom local part, DNS-name domain)",
        };
        return Err(bad(
            Reason::CsrSanMalformed,
            match kind {
                SanType::Ip => format!("malformed {kind:?} subjectAltName: want {rule}"),
                _ => format!(
                    "malformed {kind:?} subjectAltName {}: want {rule}",
                    shown(text)
                ),
            },
        ));
    }
    Ok(())
}

/// A human-readable list of alternative names, for the certificates table.
pub fn describe_alt_names(names: &[GeneralName]) -> String {
    names
        .iter()
        .map(|n| match n {
            GeneralName::DnsName(d) => format!("DNS:{}", d.as_str()),
            GeneralName::Rfc822Name(m) => format!("email:{}", m.as_str()),
            GeneralName::UniformResourceIdentifier(u) => format!("URI:{}", u.as_str()),
            GeneralName::IpAddress(ip) => match ip.as_bytes().len() {
                4 | 16 => {
                    let b = ip.as_bytes();
                    let addr: std::net::IpAddr = if b.len() == 4 {
                        std::net::Ipv4Addr::new(b[0], b[1], b[2], b[3]).into()
                    } else {
                        let mut a = [0u8; 16];
                        a.copy_from_slice(b);
                        std::net::Ipv6Addr::from(a).into()
                    };
                    format!("IP:{addr}")
                }
                _ => "IP:?".into(),
            },
            GeneralName::OtherName(other) => {
                match x509_cert::ext::pkix::name::HardwareModuleName::from_other_name(other) {
                    Ok(Some(hw)) => format!(
                        "hardwareModuleName:{}:{}",
                        hw.hw_type,
                        hex::encode_upper(hw.hw_serial_num.as_bytes())
                    ),
                    _ => format!("otherName:{}", other.type_id),
                }
            }
            _ => "other".into(),
        })
        .collect::<Vec<_>>()
        .join(", ")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::ProfileConfig;

    fn profile(edit: impl FnOnce(&mut ProfileConfig)) -> EnrollmentPolicy {
        let mut config = ProfileConfig::default();
        edit(&mut config);
        EnrollmentPolicy::from_config("test", &config).expect("valid profile")
    }

    /// A DER CSR made by the openssl command line (an implementation this project did not write).
    fn openssl_csr(key: &[&str], subject: &str, extra: &[&str]) -> Vec<u8> {
        let dir = tempfile::tempdir().expect("temp dir");
        let out = dir.path().join("csr.der");
        let key_out = dir.path().join("key.pem");
        let mut args = vec!["req", "-new", "-nodes", "-outform", "DER"];
        if !subject.is_empty() {
            args.extend_from_slice(&["-subj", subject]);
        }
        args.extend_from_slice(key);
        args.extend_from_slice(extra);
        let (out_s, key_s) = (out.display().to_string(), key_out.display().to_string());
        args.extend_from_slice(&["-out", &out_s, "-keyout", &key_s]);
        let status = std::process::Command::new("openssl")
            .args(&args)
            .output()
            .expect("run openssl");
        assert!(
            status.status.success(),
            "{}",
            String::from_utf8_lossy(&status.stderr)
        );
        std::fs::read(out).expect("csr")
    }

    const P256: &[&str] = &["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256"];

    fn code(result: Result<ValidatedCsr, CsrRefusal>) -> &'static str {
        match result {
            Ok(_) => "ok",
            Err(e) => e.reason_code().as_str(),
        }
    }

    #[test]
    fn accepts_a_p256_csr_and_keeps_its_names() {
        let der = openssl_csr(
            P256,
            "/CN=dev-1/O=Example",
            &["-addext", "subjectAltName=DNS:dev-1.example,IP:10.0.0.7"],
        );
        let csr = validate(&der, &profile(|_| {})).expect("valid");
        assert_eq!(csr.key_algorithm, DeviceKeyAlgorithm::P256);
        assert_eq!(
            describe_alt_names(&csr.subject_alt_names),
            "DNS:dev-1.example, IP:10.0.0.7"
        );
    }

    #[test]
    fn refuses_a_tampered_signature() {
        let mut der = openssl_csr(P256, "/CN=dev-1", &[]);
        let last = der.len() - 1;
        der[last] ^= 0x55;
        let result = code(validate(&der, &profile(|_| {})));
        assert!(
            result == "csr.bad_signature" || result == "csr.malformed",
            "{result}"
        );
        // Changing the signed content (the CN) breaks the signature while the DER stays valid.
        let mut der = openssl_csr(P256, "/CN=dev-1", &[]);
        let at = der
            .windows(5)
            .position(|w| w == b"dev-1")
            .expect("CN bytes");
        der[at + 4] = b'2';
        assert_eq!(code(validate(&der, &profile(|_| {}))), "csr.bad_signature");
    }

    #[test]
    fn applies_the_key_allow_list() {
        let p384 = openssl_csr(
            &["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-384"],
            "/CN=d",
            &[],
        );
        assert_eq!(code(validate(&p384, &profile(|_| {}))), "ok");
        assert_eq!(
            code(validate(
                &p384,
                &profile(|p| p.key_algorithms = vec![DeviceKeyAlgorithm::P256])
            )),
            "csr.key_algorithm_not_allowed"
        );
        let rsa2048 = openssl_csr(&["-newkey", "rsa:2048"], "/CN=d", &[]);
        assert_eq!(code(validate(&rsa2048, &profile(|_| {}))), "ok");
        let rsa1024 = openssl_csr(&["-newkey", "rsa:1024"], "/CN=d", &[]);
        assert_eq!(
            code(validate(&rsa1024, &profile(|_| {}))),
            "csr.key_too_small"
        );
        let secp256k1 = openssl_csr(
            &["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:secp256k1"],
            "/CN=d",
            &[],
        );
        assert_eq!(
            code(validate(&secp256k1, &profile(|_| {}))),
            "csr.key_algorithm_not_allowed"
        );
    }

    #[test]
    fn applies_the_subject_and_alt_name_rules() {
        let strict = profile(|p| p.cn_pattern = Some("SN-[0-9]{4}".into()));
        assert_eq!(
            code(validate(&openssl_csr(P256, "/CN=SN-0042", &[]), &strict)),
            "ok"
        );
        assert_eq!(
            code(validate(&openssl_csr(P256, "/CN=SN-0042x", &[]), &strict)),
            "csr.subject_rejected"
        );
        assert_eq!(
            code(validate(&openssl_csr(P256, "/O=NoCN", &[]), &strict)),
            "csr.subject_cn_missing"
        );
        assert_eq!(
            code(validate(
                &openssl_csr(P256, "/CN=SN-0001/L=Somewhere/ST=Region", &[]),
                &strict
            )),
            "ok"
        );
        assert_eq!(
            code(validate(
                &openssl_csr(P256, "/CN=SN-0001/street=Main St", &[]),
                &strict
            )),
            "csr.subject_attribute_not_allowed"
        );
        let email = openssl_csr(
            P256,
            "/CN=d",
            &["-addext", "subjectAltName=email:a@example.com"],
        );
        assert_eq!(
            code(validate(&email, &profile(|_| {}))),
            "csr.san_type_not_allowed"
        );
        for bad in ["DNS:-bad-.example", "DNS:single-label", "DNS:a..example"] {
            let der = openssl_csr(
                P256,
                "/CN=d",
                &["-addext", &format!("subjectAltName={bad}")],
            );
            assert_eq!(
                code(validate(&der, &profile(|_| {}))),
                "csr.san_malformed",
                "{bad}"
            );
        }
    }

    #[test]
    fn refuses_garbage() {
        assert_eq!(
            code(validate(b"\x30\x03\x02\x01\x00", &profile(|_| {}))),
            "csr.malformed"
        );
        assert_eq!(code(validate(&[], &profile(|_| {}))), "csr.malformed");
    }

    /// A CSR from this project's own encoder with any subject (RFC 4514 text; `#hex` gives a
    /// value of any string type and content) and subjectAltNames: the bad cases openssl will
    /// not make.
    fn crafted_csr(subject: &str, alt_names: &[GeneralName]) -> Vec<u8> {
        let subject = subject.parse().expect("subject");
        attestca_sim::device::DeviceKey::generate()
            .and_then(|key| key.csr_with_alt_names(subject, alt_names))
            .expect("CSR")
    }

    fn dns(name: &str) -> GeneralName {
        GeneralName::DnsName(der::asn1::Ia5String::new(name).expect("IA5"))
    }

    /// `#` and the hex of a DER string of `tag` holding `bytes`, for [`crafted_csr`].
    fn hex_value(tag: Tag, bytes: &[u8]) -> String {
        let any = Any::new(tag, bytes).expect("value");
        format!("#{}", hex::encode(any.to_der().expect("DER")))
    }

    fn every_san_type() -> EnrollmentPolicy {
        profile(|p| p.san_types = vec![SanType::Dns, SanType::Ip, SanType::Uri, SanType::Email])
    }

    #[test]
    fn refuses_strings_outside_their_alphabet_or_type() {
        let p = profile(|_| {});
        let printable = |text: &[u8]| hex_value(Tag::PrintableString, text);
        let utf8 = |text: &[u8]| hex_value(Tag::Utf8String, text);
        for (subject, why) in [
            (
                format!("CN={}", printable(b"dev*1")),
                "* is not PrintableString",
            ),
            (
                format!("CN={}", printable(b"dev@example")),
                "@ is not PrintableString",
            ),
            (
                format!("CN={}", printable(b"dev_1")),
                "_ is not PrintableString",
            ),
            (
                format!("CN={}", printable("dév".as_bytes())),
                "non-ASCII PrintableString",
            ),
            (format!("CN={}", utf8(b"dev\xff1")), "invalid UTF-8"),
            (format!("CN={}", utf8(b"dev\xc0\xae")), "overlong UTF-8"),
            (
                format!("CN={}", hex_value(Tag::Ia5String, b"dev")),
                "IA5String CN",
            ),
            (
                format!("CN={}", hex_value(Tag::BmpString, b"\0d")),
                "BMPString CN",
            ),
            (
                format!("CN=d,serialNumber={}", utf8(b"42")),
                "UTF8String serialNumber",
            ),
            (format!("CN=d,C={}", utf8(b"DE")), "UTF8String country"),
            (format!("CN=d,C={}", printable(b"de")), "lower-case country"),
            (
                format!("CN=d,C={}", printable(b"DEU")),
                "three-letter country",
            ),
            (format!("CN={}", utf8(b"")), "empty CN"),
        ] {
            assert_eq!(
                code(validate(&crafted_csr(&subject, &[]), &p)),
                "csr.subject_encoding",
                "{why}"
            );
        }
        // openssl's default string mask writes a non-ASCII locality as a T61String.
        let dir = tempfile::tempdir().expect("temp dir");
        let config = dir.path().join("openssl.cnf");
        std::fs::write(
            &config,
            "string_mask = default\n[req]\ndistinguished_name = dn\n[dn]\n",
        )
        .expect("config");
        let config = config.display().to_string();
        let t61 = openssl_csr(P256, "/CN=d/L=Zürich", &["-utf8", "-config", &config]);
        assert_eq!(code(validate(&t61, &p)), "csr.subject_encoding");
    }

    #[test]
    fn refuses_control_and_invisible_characters_in_the_subject() {
        let p = profile(|_| {});
        for bytes in [
            "dev\u{0}1",
            "dev\r\n1",
            "dev\t1",
            "dev\u{7f}",
            "dev\u{85}1",
            "dev\u{202e}1",
            "dev\u{2066}1",
            "dev\u{200b}1",
            "dev\u{feff}",
            "dev\u{fdd0}",
            "dev\u{e000}",
            " dev",
            "dev ",
        ] {
            let subject = format!("CN={}", hex_value(Tag::Utf8String, bytes.as_bytes()));
            assert_eq!(
                code(validate(&crafted_csr(&subject, &[]), &p)),
                "csr.subject_encoding",
                "{bytes:?}"
            );
        }
        let nul = format!("CN=d,O={}", hex_value(Tag::PrintableString, b"Acme\0"));
        assert_eq!(
            code(validate(&crafted_csr(&nul, &[]), &p)),
            "csr.subject_encoding"
        );
        // The same refusals for CSRs openssl made.
        for subject in ["/CN=dev\r\n1", "/CN=d/O=Acme\nLtd", "/CN=dev\u{202e}1"] {
            let der = openssl_csr(P256, subject, &["-utf8"]);
            assert_eq!(
                code(validate(&der, &p)),
                "csr.subject_encoding",
                "{subject:?}"
            );
        }
    }

    #[test]
    fn applies_the_rfc_5280_upper_bounds() {
        let p = profile(|_| {});
        for (attribute, bound) in [
            ("CN", 64),
            ("O", 64),
            ("OU", 64),
            ("L", 128),
            ("ST", 128),
            ("serialNumber", 64),
        ] {
            let cn = if attribute == "CN" { "" } else { "CN=d," };
            let at = |n: usize| format!("{cn}{attribute}={}", "A".repeat(n));
            assert_eq!(
                code(validate(&crafted_csr(&at(bound), &[]), &p)),
                "ok",
                "{attribute} of {bound}"
            );
            assert_eq!(
                code(validate(&crafted_csr(&at(bound + 1), &[]), &p)),
                "csr.subject_encoding",
                "{attribute} of {}",
                bound + 1
            );
        }
        // Characters, not bytes: 64 two-byte characters are a valid CN.
        let wide = format!(
            "CN={}",
            hex_value(Tag::Utf8String, "é".repeat(64).as_bytes())
        );
        assert_eq!(code(validate(&crafted_csr(&wide, &[]), &p)), "ok");
        let wider = format!(
            "CN={}",
            hex_value(Tag::Utf8String, "é".repeat(65).as_bytes())
        );
        assert_eq!(
            code(validate(&crafted_csr(&wider, &[]), &p)),
            "csr.subject_encoding"
        );
    }

    #[test]
    fn applies_the_subject_structure_rules() {
        let p = profile(|_| {});
        let multi = openssl_csr(P256, "/CN=d+O=Acme", &["-multivalue-rdn"]);
        assert_eq!(code(validate(&multi, &p)), "csr.subject_rejected");
        let two_ou = openssl_csr(P256, "/CN=d/OU=a/OU=b", &[]);
        assert_eq!(code(validate(&two_ou, &p)), "csr.subject_rejected");
        let two_cn = openssl_csr(P256, "/CN=a/CN=b", &[]);
        assert_eq!(code(validate(&two_cn, &p)), "csr.subject_rejected");
        let every = "/CN=d/O=Acme/OU=Line 2/C=DE/L=Berlin/ST=Berlin/serialNumber=42";
        assert_eq!(code(validate(&openssl_csr(P256, every, &[]), &p)), "ok");
        // Only the profile's attributes.
        let narrow = profile(|p| {
            p.subject_attributes =
                vec![SubjectAttribute::CommonName, SubjectAttribute::SerialNumber]
        });
        assert_eq!(
            code(validate(
                &openssl_csr(P256, "/CN=d/serialNumber=42", &[]),
                &narrow
            )),
            "ok"
        );
        for subject in ["/CN=d/O=Acme", "/CN=d/C=DE", "/CN=d/L=Berlin"] {
            assert_eq!(
                code(validate(&openssl_csr(P256, subject, &[]), &narrow)),
                "csr.subject_attribute_not_allowed",
                "{subject}"
            );
        }
        for subject in [
            "/CN=d/title=Boss",
            "/CN=d/DC=example",
            "/CN=d/emailAddress=a@b.example",
        ] {
            assert_eq!(
                code(validate(&openssl_csr(P256, subject, &[]), &p)),
                "csr.subject_attribute_not_allowed",
                "{subject}"
            );
        }
    }

    #[test]
    fn refuses_malformed_alt_names() {
        let p = every_san_type();
        for name in [
            "dev\0.example",
            "dev\r\n.example",
            "dev 1.example",
            "dev.example\0",
            "*.example.com",
            "10.0.0.7",
        ] {
            assert_eq!(
                code(validate(&crafted_csr("CN=d", &[dns(name)]), &p)),
                "csr.san_malformed",
                "{name:?}"
            );
        }
        for san in [
            "email:not-an-address",
            "email:a@localhost",
            "email:a b@example.com",
            "URI:no-scheme",
            "URI:/relative/path",
            "URI:http://a.example/a b",
            "URI:https://localhost/",
            "URI:http://user:pw@a.example/",
            "DNS:dev 1.example",
            "DNS:dev_1.example",
        ] {
            let der = openssl_csr(
                P256,
                "/CN=d",
                &["-addext", &format!("subjectAltName={san}")],
            );
            assert_eq!(code(validate(&der, &p)), "csr.san_malformed", "{san}");
        }
        let mailbox = |m: &str| GeneralName::Rfc822Name(der::asn1::Ia5String::new(m).expect("IA5"));
        let uri = |u: &str| {
            GeneralName::UniformResourceIdentifier(der::asn1::Ia5String::new(u).expect("IA5"))
        };
        for name in [
            mailbox("a\0@example.com"),
            mailbox("a@example.com\r\n"),
            uri("https://a.example/\0"),
            uri("https://a.example/\r\nX-Injected: 1"),
        ] {
            assert_eq!(
                code(validate(
                    &crafted_csr("CN=d", std::slice::from_ref(&name)),
                    &p
                )),
                "csr.san_malformed",
                "{name:?}"
            );
        }
        // Bounds on the list: not empty, no repeats, at most MAX_SUBJECT_ALT_NAMES.
        assert_eq!(
            code(validate(&crafted_csr("CN=d", &[]), &p)),
            "ok",
            "no extensionRequest at all is fine"
        );
        let empty = {
            let key = attestca_sim::device::DeviceKey::generate().expect("key");
            let subject: Name = "CN=d".parse().expect("name");
            let request = attestca_sim::device::alt_names_request(&[]).expect("empty SAN");
            key.csr_for(subject, vec![request]).expect("CSR")
        };
        assert_eq!(code(validate(&empty, &p)), "csr.san_malformed");
        let twice = [dns("a.example"), dns("a.example")];
        assert_eq!(
            code(validate(&crafted_csr("CN=d", &twice), &p)),
            "csr.san_malformed"
        );
        let names = |n: usize| -> Vec<GeneralName> {
            (0..n).map(|i| dns(&format!("d{i}.example"))).collect()
        };
        assert_eq!(
            code(validate(
                &crafted_csr("CN=d", &names(MAX_SUBJECT_ALT_NAMES)),
                &p
            )),
            "ok"
        );
        assert_eq!(
            code(validate(
                &crafted_csr("CN=d", &names(MAX_SUBJECT_ALT_NAMES + 1)),
                &p
            )),
            "csr.san_too_many"
        );
    }

    #[test]
    fn accepts_the_widest_valid_names() {
        let dir = tempfile::tempdir().expect("temp dir");
        let config = dir.path().join("openssl.cnf");
        // PrintableString where the value allows it, UTF8String otherwise; every attribute
        // at its upper bound. openssl's configuration reads ' as a quote unless escaped.
        let cn = format!("{:x<64}", "Device (1) +2, a-b./c:d=e?'f ").replace('\'', "\\'");
        let (o, st) = ("Ä".repeat(64), "é".repeat(128));
        let ou = format!("{:u<64}", "Línea 2 — Ωμέγα 中文 😀 ");
        let l = format!("{:ü<128}", "Zürich ");
        let serial = "S".repeat(64);
        let san = "DNS:dev-1.example.com, DNS:xn--bcher-kva.example, IP:10.0.0.7, \
                   IP:2001:db8::7, URI:https://dev-1.example.com:8443/id/42?x=1, \
                   URI:urn:uuid:f81d4fae-7dec-11d0-a765-00a0c91e6bf6, \
                   email:first.last+tag@mail.example";
        std::fs::write(
            &config,
            format!(
                "[req]\nstring_mask = MASK:0x2002\nutf8 = yes\nprompt = no\n\
                 distinguished_name = dn\nreq_extensions = ext\n[dn]\n\
                 CN = {cn}\nO = {o}\nOU = {ou}\nC = DE\nL = {l}\nST = {st}\n\
                 serialNumber = {serial}\n[ext]\nsubjectAltName = {san}\n",
            ),
        )
        .expect("config");
        let config = config.display().to_string();
        let der = openssl_csr(P256, "", &["-config", &config]);
        let csr = validate(&der, &every_san_type()).expect("the widest names are accepted");
        assert_eq!(csr.subject.len(), 7);
        assert_eq!(csr.subject_alt_names.len(), 7);
        let tags: Vec<Tag> = csr.subject.iter().map(|atv| atv.value.tag()).collect();
        assert!(tags.contains(&Tag::PrintableString) && tags.contains(&Tag::Utf8String));
    }

    #[test]
    fn refuses_ec_points_that_are_not_uncompressed() {
        let p = profile(|_| {});
        let dir = tempfile::tempdir().expect("temp dir");
        for (curve, form) in [
            ("prime256v1", "compressed"),
            ("prime256v1", "hybrid"),
            ("secp384r1", "compressed"),
        ] {
            let plain = dir.path().join(format!("{curve}.pem"));
            let converted = dir.path().join(format!("{curve}-{form}.pem"));
            let run = |args: &[&str]| {
                let out = std::process::Command::new("openssl")
                    .args(args)
                    .output()
                    .expect("run openssl");
                assert!(
                    out.status.success(),
                    "{}",
                    String::from_utf8_lossy(&out.stderr)
                );
            };
            let (plain_s, converted_s) =
                (plain.display().to_string(), converted.display().to_string());
            run(&[
                "ecparam", "-name", curve, "-genkey", "-noout", "-out", &plain_s,
            ]);
            run(&[
                "ec",
                "-in",
                &plain_s,
                "-conv_form",
                form,
                "-out",
                &converted_s,
            ]);
            let der = openssl_csr(&["-key", &converted_s], "/CN=d", &[]);
            assert_eq!(
                code(validate(&der, &p)),
                "csr.key_encoding",
                "{curve} {form}"
            );
            let der = openssl_csr(&["-key", &plain_s], "/CN=d", &[]);
            assert_eq!(code(validate(&der, &p)), "ok", "{curve} uncompressed");
        }
        // The point at infinity, a point off the curve, a short point: made here, signed by a
        // real key (the key check comes before the signature check).
        let key = attestca_sim::device::DeviceKey::generate().expect("key");
        let good = key.public_key().expect("SPKI");
        let point = good.subject_public_key.raw_bytes().to_vec();
        let mut off_curve = point.clone();
        if let Some(last) = off_curve.last_mut() {
            *last ^= 1;
        }
        for bytes in [vec![0u8], off_curve, point[..64].to_vec()] {
            let spki = SubjectPublicKeyInfo {
                algorithm: good.algorithm.clone(),
                subject_public_key: der::asn1::BitString::from_bytes(&bytes).expect("bits"),
            };
            let info = x509_cert::request::CertReqInfo {
                version: Version::V1,
                subject: "CN=d".parse().expect("name"),
                public_key: spki,
                attributes: Default::default(),
            }
            .to_der()
            .expect("info");
            let signature = key.sign(&info);
            let der = SignedEnvelope::assemble(
                &info,
                crate::signer::CaKeyAlgorithm::EcdsaP256.signature_algorithm(),
                &signature,
            )
            .expect("CSR");
            assert_eq!(code(validate(&der, &p)), "csr.key_encoding", "{bytes:02x?}");
        }
    }

    /// A CSR for `spki` whose signature is `signature` under `algorithm`, signed or not:
    /// for the checks that come before the signature's.
    fn assembled_csr(
        subject: &str,
        spki: SubjectPublicKeyInfo,
        algorithm: spki::AlgorithmIdentifierOwned,
        signature: &[u8],
    ) -> Vec<u8> {
        let info = x509_cert::request::CertReqInfo {
            version: Version::V1,
            subject: subject.parse().expect("name"),
            public_key: spki,
            attributes: Default::default(),
        }
        .to_der()
        .expect("info");
        SignedEnvelope::assemble(&info, algorithm, signature).expect("CSR")
    }

    #[test]
    fn refuses_a_signature_algorithm_that_does_not_fit_the_key() {
        let key = attestca_sim::device::DeviceKey::generate().expect("key");
        let spki = key.public_key().expect("SPKI");
        let rsa_signature = spki::AlgorithmIdentifierOwned {
            oid: const_oid::db::rfc5912::SHA_256_WITH_RSA_ENCRYPTION,
            parameters: Some(Any::null()),
        };
        let der = assembled_csr("CN=d", spki, rsa_signature, &[0x30, 0x00]);
        assert_eq!(
            code(validate(&der, &profile(|_| {}))),
            "csr.signature_algorithm_not_allowed"
        );
    }

    #[test]
    fn refuses_an_rsa_key_over_8192_bits() {
        // The size is checked before the signature: a made-up 8200-bit modulus is enough.
        let mut modulus = vec![0x00, 0x80];
        modulus.extend(std::iter::repeat_n(0x01, 1024));
        let mut rsa = vec![0x30, 0x82, 0x04, 0x0B, 0x02, 0x82, 0x04, 0x02];
        rsa.extend(&modulus);
        rsa.extend([0x02, 0x03, 0x01, 0x00, 0x01]);
        let spki = SubjectPublicKeyInfo {
            algorithm: spki::AlgorithmIdentifierOwned {
                oid: RSA_ENCRYPTION,
                parameters: Some(Any::null()),
            },
            subject_public_key: der::asn1::BitString::from_bytes(&rsa).expect("bits"),
        };
        let algorithm = spki::AlgorithmIdentifierOwned {
            oid: const_oid::db::rfc5912::SHA_256_WITH_RSA_ENCRYPTION,
            parameters: Some(Any::null()),
        };
        let der = assembled_csr("CN=d", spki, algorithm, &[0u8; 16]);
        let rsa_profile = profile(|p| p.key_algorithms = vec![DeviceKeyAlgorithm::Rsa]);
        assert_eq!(code(validate(&der, &rsa_profile)), "csr.key_too_large");
    }

    #[test]
    fn refuses_a_csr_that_names_nobody() {
        let key = attestca_sim::device::DeviceKey::generate().expect("key");
        let der = key
            .csr_with_alt_names(Name::default(), &[])
            .expect("anonymous CSR");
        let no_cn_needed = profile(|p| p.cn_required = false);
        assert_eq!(code(validate(&der, &no_cn_needed)), "csr.no_identity");
    }

    #[test]
    fn every_csr_reason_code_is_documented() {
        let docs = include_str!("../../../docs/est-profile.md");
        let source = include_str!("csr.rs");
        let code_part = source.split("#[cfg(test)]").next().unwrap_or(source);
        let csr_codes: Vec<Reason> = Reason::ALL
            .iter()
            .copied()
            .filter(|r| r.namespace() == "csr")
            .collect();
        assert_eq!(csr_codes.len(), 15, "{csr_codes:?}");
        for code in csr_codes {
            assert!(
                code_part.contains(&format!("Reason::{code:?}")),
                "{code} is not produced by csr.rs"
            );
            assert!(
                docs.contains(&format!("`{code}`")),
                "{code} is not in docs/est-profile.md"
            );
        }
    }
}
