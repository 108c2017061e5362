//! Encoding and signing one certificate: the TBS, the serial, the validity, the signature.

use std::time::Duration;

use der::{DateTime, Encode};
use x509_cert::ext::Extension;
use x509_cert::name::Name;
use x509_cert::serial_number::SerialNumber;
use x509_cert::time::{Time, Validity};
use x509_cert::{SubjectPublicKeyInfo, Version};

use super::IssuanceError;
use crate::asn1::{SignedEnvelope, TbsCertificateFields};
use crate::serial::Serial;
use crate::signer::Signer;

/// Everything that goes into a certificate apart from the signature algorithm.
#[derive(Clone, Debug)]
pub struct CertificateSpec {
    pub serial: Vec<u8>,
    pub issuer: Name,
    pub subject: Name,
    pub public_key: SubjectPublicKeyInfo,
    /// Unix seconds.
    pub not_before: u64,
    /// Unix seconds.
    pub not_after: u64,
    pub extensions: Vec<Extension>,
}

/// A freshly signed certificate and the facts the store records about it.
#[derive(Clone, Debug)]
pub struct IssuedCertificate {
    pub der: Vec<u8>,
    pub serial: Serial,
    pub not_before: u64,
    pub not_after: u64,
}

/// Seconds per step of the time prefix of [`serial_at`].
const SERIAL_TIME_STEP_SECS: u64 = 16;

/// The serial of a certificate issued at `now` (Unix seconds): 20 positive octets,
/// `0x01 ‖ (now / 16) as u32 big-endian ‖ 15 random octets` (120 bits from the system's
/// CSPRNG; RFC 5280 allows 20 octets, the CA/Browser Forum asks for at least 64 random bits).
///
/// Why the time prefix: the serial is the primary key of `certificates` and a key of the
/// enrollment events, and a B-tree fed random keys touches a random leaf page per insert. Once
/// the indexes outgrow memory that is a page read and, after every checkpoint, a full-page
/// image in the WAL per insert. With the prefix, the serials of the last few seconds share a
/// few hot pages (docs/performance.md, "stored certificates"). The prefix says roughly when
/// the certificate was issued, which `notBefore` says anyway; the random part keeps serials
/// unpredictable.
pub fn serial_at(now: u64) -> Vec<u8> {
    let mut bytes = [0u8; 20];
    bytes[0] = 0x01;
    // Truncation only after the year 4000: the prefix then wraps, uniqueness is the random part's.
    bytes[1..5].copy_from_slice(&((now / SERIAL_TIME_STEP_SECS) as u32).to_be_bytes());
    // aws-lc's DRBG only fails if the OS entropy source is gone, which nothing can recover from.
    aws_lc_rs::rand::fill(&mut bytes[5..]).expect("the system random generator failed");
    bytes.to_vec()
}

/// A random positive serial of 16 bytes (at least 120 bits of entropy), as RFC 5280 and the
/// CA/Browser Forum ask: unpredictable, positive, at most 20 octets. For CA certificates, which
/// are few; issued certificates get [`serial_at`].
pub fn random_serial() -> Vec<u8> {
    let mut bytes = [0u8; 16];
    // aws-lc's DRBG only fails if the OS entropy source is gone, which nothing can recover from.
    aws_lc_rs::rand::fill(&mut bytes).expect("the system random generator failed");
    bytes[0] &= 0x7f;
    if bytes[0] == 0 {
        // Keep the encoding at 16 octets: a leading zero octet would be stripped by DER.
        bytes[0] = 0x40;
    }
    bytes.to_vec()
}

/// X.509 time from Unix seconds: UTCTime through 2049, GeneralizedTime after (RFC 5280 4.1.2.5).
pub fn x509_time(unix: u64) -> Result<Time, der::Error> {
    Ok(Time::from(DateTime::from_unix_duration(
        Duration::from_secs(unix),
    )?))
}

impl CertificateSpec {
    /// Encodes the TBS, signs it with `signer` and returns the certificate.
    pub fn sign(&self, signer: &dyn Signer) -> Result<IssuedCertificate, IssuanceError> {
        let algorithm = signer.algorithm().signature_algorithm();
        let tbs = TbsCertificateFields {
            version: Version::V3,
            serial_number: SerialNumber::new(&self.serial)?,
            signature: algorithm.clone(),
            issuer: self.issuer.clone(),
            validity: Validity::new(x509_time(self.not_before)?, x509_time(self.not_after)?),
            subject: self.subject.clone(),
            subject_public_key_info: self.public_key.clone(),
            extensions: if self.extensions.is_empty() {
                None
            } else {
                Some(self.extensions.clone())
            },
        };
        let tbs_der = tbs.to_der()?;
        let signature = signer.sign(&tbs_der)?;
        let der = SignedEnvelope::assemble(&tbs_der, algorithm, &signature)?;
        Ok(IssuedCertificate {
            der,
            serial: Serial::from_octets(&self.serial),
            not_before: self.not_before,
            not_after: self.not_after,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn serials_are_positive_twenty_octets_ordered_by_time_and_unpredictable() {
        let now = 1_796_000_000;
        let (a, b) = (serial_at(now), serial_at(now));
        assert_eq!(
            (a.len(), a[0]),
            (20, 0x01),
            "20 octets, positive, no leading zero"
        );
        assert_eq!(a[..5], b[..5], "one time step, one prefix");
        assert_ne!(a[5..], b[5..], "the random part differs");
        let later = serial_at(now + SERIAL_TIME_STEP_SECS);
        assert!(
            later > a && later > b,
            "later steps sort after earlier ones"
        );
        // The encoding the certificate carries is the same 20 octets.
        let encoded: SerialNumber = SerialNumber::new(&a).expect("serial");
        assert_eq!(encoded.as_bytes(), a.as_slice());
    }
}
