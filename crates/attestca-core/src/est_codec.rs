//! EST encodings (RFC 7030 as amended by RFC 8951): tolerant base64 in, wrapped base64 out,
//! certs-only CMS, and the CSR attributes structure.

use base64::Engine;
use base64::alphabet;
use base64::engine::{DecodePaddingMode, GeneralPurpose, GeneralPurposeConfig};
use der::{Decode, Encode};
use x509_cert::Certificate;

/// Standard base64 that accepts input with or without padding.
const LENIENT: GeneralPurpose = GeneralPurpose::new(
    &alphabet::STANDARD,
    GeneralPurposeConfig::new().with_decode_padding_mode(DecodePaddingMode::Indifferent),
);

/// Decodes an EST request body: base64 with any whitespace (CR, LF, space, tab) anywhere.
/// A PEM-armoured body is tolerated too; clients disagree about the format and being lenient
/// costs nothing here.
pub fn decode_body(body: &[u8]) -> Result<Vec<u8>, String> {
    let text = std::str::from_utf8(body).map_err(|_| "body is not base64 text".to_owned())?;
    let text = if text.trim_start().starts_with("-----BEGIN") {
        text.lines()
            .filter(|l| !l.trim_start().starts_with("-----"))
            .collect::<String>()
    } else {
        text.to_owned()
    };
    let compact: String = text.chars().filter(|c| !c.is_ascii_whitespace()).collect();
    if compact.is_empty() {
        return Err("body is empty".into());
    }
    LENIENT
        .decode(compact.as_bytes())
        .map_err(|e| format!("body is not valid base64: {e}"))
}

/// Encodes DER as base64 in 64-character lines ending in LF. (CRLF is also allowed by RFC 8951,
/// but GNU `base64 -d`, the baseline client in est-wire.md, rejects the CR.)
pub fn encode_body(der: &[u8]) -> String {
    let flat = base64::engine::general_purpose::STANDARD.encode(der);
    let mut out = String::with_capacity(flat.len() + flat.len() / 32 + 2);
    for chunk in flat.as_bytes().chunks(64) {
        // base64 output is ASCII, so every chunk boundary is a char boundary.
        out.push_str(std::str::from_utf8(chunk).unwrap_or_default());
        out.push('\n');
    }
    out
}

/// A certs-only CMS SignedData (the "degenerate PKCS#7") holding `ders`, as DER.
pub fn certs_only(ders: &[Vec<u8>]) -> Result<Vec<u8>, der::Error> {
    let certs = ders
        .iter()
        .map(|d| Certificate::from_der(d))
        .collect::<Result<Vec<_>, _>>()?;
    cms::content_info::ContentInfo::try_from(certs)?.to_der()
}

/// Encodes `CsrAttrs ::= SEQUENCE OF AttrOrOID` from already-encoded elements.
pub fn csr_attrs(elements: &[Vec<u8>]) -> Result<Vec<u8>, der::Error> {
    let anys = elements
        .iter()
        .map(|e| der::asn1::Any::from_der(e))
        .collect::<Result<Vec<_>, _>>()?;
    anys.to_der()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decodes_base64_in_every_layout_clients_send() {
        let der: Vec<u8> = (0u8..=200).collect();
        let flat = base64::engine::general_purpose::STANDARD.encode(&der);
        let crlf = flat
            .as_bytes()
            .chunks(64)
            .map(|c| std::str::from_utf8(c).unwrap_or_default())
            .collect::<Vec<_>>()
            .join("\r\n");
        let spaced = format!(" \t{}\n\n", flat.replace('A', "A "));
        let unpadded = flat.trim_end_matches('=').to_owned();
        let pem = format!(
            "-----BEGIN CERTIFICATE REQUEST-----\n{crlf}\n-----END CERTIFICATE REQUEST-----\n"
        );
        for (name, body) in [
            ("flat", flat),
            ("crlf", crlf),
            ("spaced", spaced),
            ("unpadded", unpadded),
            ("pem", pem),
        ] {
            assert_eq!(
                decode_body(body.as_bytes()).as_deref(),
                Ok(der.as_slice()),
                "{name}"
            );
        }
    }

    #[test]
    fn refuses_non_base64_and_empty_bodies() {
        assert!(decode_body(b"not base64 at all!!").is_err());
        assert!(decode_body(b" \r\n").is_err());
        assert!(decode_body(&[0xff, 0xfe]).is_err());
    }

    #[test]
    fn encodes_64_character_lines() {
        let der = vec![7u8; 200];
        let text = encode_body(&der);
        let lines: Vec<&str> = text.lines().collect();
        assert!(lines[..lines.len() - 1].iter().all(|l| l.len() == 64));
        assert!(text.ends_with('\n') && !text.contains('\r'));
        assert_eq!(decode_body(text.as_bytes()), Ok(der));
    }
}
