//! The log entry: a certificate and the attestation record behind it, in an encoding anyone can
//! re-implement from `docs/transparency.md` (TLS presentation language, RFC 8446 §3).
//!
//! ```text
//! struct {
//!     uint8  version;                       /* 1 */
//!     uint64 logged_at;                     /* Unix seconds: the certificate row's issued_at */
//!     opaque certificate<1..2^16-1>;        /* DER */
//!     AttestationRecord attestation;
//! } IssuanceEntry;
//!
//! struct {
//!     uint8  attested;                      /* 1: evidence was verified; 0: none was required */
//!     opaque operation<1..2^8-1>;           /* "simpleenroll", "simplereenroll", ... */
//!     opaque profile<0..2^8-1>;
//!     opaque requester<0..2^8-1>;           /* "tls:rig-01", "basic:line-3", "system:…" */
//!     opaque format<0..2^8-1>;              /* "x509-chain", "tpm", ... ("" when not attested) */
//!     opaque vendor<0..2^8-1>;
//!     opaque device_identity<0..2^16-1>;
//!     opaque evidence_sha256<0..2^8-1>;     /* 32 octets, or none */
//! } AttestationRecord;
//! ```
//!
//! Why a binary encoding and not JSON: the leaf hash is over these exact bytes, and a
//! length-prefixed layout has one encoding per value, which a second implementation (the
//! Python example in `docs/relying-parties.md`) reproduces without a canonicalisation rule.
//! The whole entry must fit an entry bundle's uint16 length prefix (C2SP tlog-tiles).

use sha2::{Digest, Sha256};

/// The current [`IssuanceEntry`] version.
pub const ENTRY_VERSION: u8 = 1;

/// The largest entry an entry bundle can carry (its uint16 length prefix).
pub const MAX_ENTRY_LEN: usize = u16::MAX as usize;

/// What the log says about how a certificate came to be issued.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct AttestationRecord {
    /// Evidence was verified before issuance (false: the profile required none).
    pub attested: bool,
    /// The EST operation or the internal one (`simpleenroll`, `simplereenroll`,
    /// `ocsp-responder`, `attestation-key`).
    pub operation: String,
    pub profile: String,
    pub requester: String,
    /// The evidence format (`x509-chain`, `tpm`, ...); empty when not attested.
    pub format: String,
    pub vendor: String,
    pub device_identity: String,
    /// SHA-256 of the evidence as received; empty when there was none.
    pub evidence_sha256: Vec<u8>,
}

/// One log entry: the issued certificate and its attestation record.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct IssuanceEntry {
    pub logged_at: u64,
    pub certificate: Vec<u8>,
    pub attestation: AttestationRecord,
}

/// An entry that cannot be encoded (a field over its length limit) or decoded.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum EntryError {
    #[error("log entry field {field} is {len} octets, over its limit of {max}")]
    TooLong {
        field: &'static str,
        len: usize,
        max: usize,
    },
    #[error("log entry version {0} is not known")]
    UnknownVersion(u8),
    #[error("log entry is truncated at {0}")]
    Truncated(&'static str),
    #[error("log entry field {0} is not UTF-8")]
    NotUtf8(&'static str),
    #[error("log entry has {0} trailing octets")]
    Trailing(usize),
    #[error("log entry field {0} is empty")]
    Empty(&'static str),
}

impl IssuanceEntry {
    /// The entry's bytes, as the log stores and hashes them.
    pub fn encode(&self) -> Result<Vec<u8>, EntryError> {
        let a = &self.attestation;
        let mut out = Vec::with_capacity(self.certificate.len() + 256);
        out.push(ENTRY_VERSION);
        out.extend_from_slice(&self.logged_at.to_be_bytes());
        put(&mut out, "certificate", &self.certificate, 2, true)?;
        out.push(u8::from(a.attested));
        put(&mut out, "operation", a.operation.as_bytes(), 1, true)?;
        put(&mut out, "profile", a.profile.as_bytes(), 1, false)?;
        put(&mut out, "requester", a.requester.as_bytes(), 1, false)?;
        put(&mut out, "format", a.format.as_bytes(), 1, false)?;
        put(&mut out, "vendor", a.vendor.as_bytes(), 1, false)?;
        put(
            &mut out,
            "device_identity",
            a.device_identity.as_bytes(),
            2,
            false,
        )?;
        put(&mut out, "evidence_sha256", &a.evidence_sha256, 1, false)?;
        if out.len() > MAX_ENTRY_LEN {
            return Err(EntryError::TooLong {
                field: "entry",
                len: out.len(),
                max: MAX_ENTRY_LEN,
            });
        }
        Ok(out)
    }

    /// Parses an entry's bytes; every length is checked against what is left.
    pub fn decode(bytes: &[u8]) -> Result<Self, EntryError> {
        let mut r = Reader(bytes);
        let version = r.take(1, "version")?[0];
        if version != ENTRY_VERSION {
            return Err(EntryError::UnknownVersion(version));
        }
        let logged_at = u64::from_be_bytes(
            r.take(8, "logged_at")?
                .try_into()
                .map_err(|_| EntryError::Truncated("logged_at"))?,
        );
        let certificate = r.vector(2, "certificate")?.to_vec();
        if certificate.is_empty() {
            return Err(EntryError::Empty("certificate"));
        }
        let attested = r.take(1, "attested")?[0] == 1;
        let attestation = AttestationRecord {
            attested,
            operation: r.text(1, "operation")?,
            profile: r.text(1, "profile")?,
            requester: r.text(1, "requester")?,
            format: r.text(1, "format")?,
            vendor: r.text(1, "vendor")?,
            device_identity: r.text(2, "device_identity")?,
            evidence_sha256: r.vector(1, "evidence_sha256")?.to_vec(),
        };
        if !r.0.is_empty() {
            return Err(EntryError::Trailing(r.0.len()));
        }
        Ok(Self {
            logged_at,
            certificate,
            attestation,
        })
    }
}

/// RFC 6962 §2.1 leaf hash: SHA-256(0x00 ‖ entry).
pub fn leaf_hash(entry: &[u8]) -> [u8; 32] {
    let mut h = Sha256::new();
    h.update([0u8]);
    h.update(entry);
    h.finalize().into()
}

fn put(
    out: &mut Vec<u8>,
    field: &'static str,
    value: &[u8],
    prefix: usize,
    required: bool,
) -> Result<(), EntryError> {
    let max = if prefix == 1 { 0xff } else { 0xffff };
    if value.len() > max {
        return Err(EntryError::TooLong {
            field,
            len: value.len(),
            max,
        });
    }
    if required && value.is_empty() {
        return Err(EntryError::Empty(field));
    }
    if prefix == 1 {
        out.push(value.len() as u8);
    } else {
        out.extend_from_slice(&(value.len() as u16).to_be_bytes());
    }
    out.extend_from_slice(value);
    Ok(())
}

struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize, field: &'static str) -> Result<&'a [u8], EntryError> {
        if self.0.len() < n {
            return Err(EntryError::Truncated(field));
        }
        let (head, rest) = self.0.split_at(n);
        self.0 = rest;
        Ok(head)
    }

    fn vector(&mut self, prefix: usize, field: &'static str) -> Result<&'a [u8], EntryError> {
        let len = self
            .take(prefix, field)?
            .iter()
            .fold(0usize, |acc, b| (acc << 8) | usize::from(*b));
        self.take(len, field)
    }

    fn text(&mut self, prefix: usize, field: &'static str) -> Result<String, EntryError> {
        let bytes = self.vector(prefix, field)?;
        String::from_utf8(bytes.to_vec()).map_err(|_| EntryError::NotUtf8(field))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> IssuanceEntry {
        IssuanceEntry {
            logged_at: 1_796_000_000,
            certificate: vec![0x30, 0x03, 0x02, 0x01, 0x01],
            attestation: AttestationRecord {
                attested: true,
                operation: "simpleenroll".into(),
                profile: "default".into(),
                requester: "tls:rig-01".into(),
                format: "x509-chain".into(),
                vendor: "microchip".into(),
                device_identity: "microchip:0123EE".into(),
                evidence_sha256: vec![0xab; 32],
            },
        }
    }

    #[test]
    fn an_entry_encodes_as_the_documented_bytes_and_round_trips() {
        let entry = sample();
        let bytes = entry.encode().expect("encode");
        // Written out by hand from docs/transparency.md, field by field.
        let mut expected = vec![1];
        expected.extend_from_slice(&1_796_000_000u64.to_be_bytes());
        expected.extend_from_slice(&[0, 5, 0x30, 0x03, 0x02, 0x01, 0x01]);
        expected.push(1);
        for text in [
            "simpleenroll",
            "default",
            "tls:rig-01",
            "x509-chain",
            "microchip",
        ] {
            expected.push(text.len() as u8);
            expected.extend_from_slice(text.as_bytes());
        }
        expected.extend_from_slice(&[0, 16]);
        expected.extend_from_slice(b"microchip:0123EE");
        expected.push(32);
        expected.extend_from_slice(&[0xab; 32]);
        assert_eq!(bytes, expected);
        assert_eq!(IssuanceEntry::decode(&bytes).expect("decode"), entry);
    }

    #[test]
    fn the_leaf_hash_is_rfc_6962s() {
        // RFC 6962 leaf hash of the empty entry: SHA-256 of the single octet 0x00.
        assert_eq!(
            hex::encode(leaf_hash(b"")),
            "6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d"
        );
    }

    #[test]
    fn every_truncation_and_every_trailing_octet_is_an_error_not_a_panic() {
        let bytes = sample().encode().expect("encode");
        for cut in 0..bytes.len() {
            assert!(
                IssuanceEntry::decode(&bytes[..cut]).is_err(),
                "cut at {cut}"
            );
        }
        let mut longer = bytes.clone();
        longer.push(0);
        assert_eq!(IssuanceEntry::decode(&longer), Err(EntryError::Trailing(1)));
        let mut wrong = bytes;
        wrong[0] = 2;
        assert_eq!(
            IssuanceEntry::decode(&wrong),
            Err(EntryError::UnknownVersion(2))
        );
    }

    #[test]
    fn fields_over_their_limits_are_refused() {
        let mut entry = sample();
        entry.attestation.vendor = "v".repeat(256);
        assert!(matches!(
            entry.encode(),
            Err(EntryError::TooLong {
                field: "vendor",
                ..
            })
        ));
        let mut entry = sample();
        entry.certificate = vec![0; MAX_ENTRY_LEN];
        assert!(matches!(entry.encode(), Err(EntryError::TooLong { .. })));
    }
}
