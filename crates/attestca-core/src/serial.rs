//! Certificate serial numbers, as the CA names them.
//!
//! A [`Serial`] is the lower-case hex of a serial number's content octets: the key of the
//! `certificates` table, the `{serial}` of the operator API and the text logs and events
//! carry. Operators may type it with colons and in upper case (as `openssl x509 -serial`
//! and browsers show it); [`Serial::parse`] is the one place that normalises. A
//! [`SerialKey`] is the same serial as inline octets, for the OCSP response cache.

use std::fmt;

use x509_cert::serial_number::SerialNumber;

/// The most hex digits an operator's serial may have: 20 octets, RFC 5280's limit.
pub const MAX_HEX_DIGITS: usize = 40;

/// A serial number as lower-case hex of its content octets, without separators.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Serial(String);

/// A serial that is not hex, is empty, or is longer than any serial a CA may issue.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{0:?} is not a hex serial number")]
pub struct InvalidSerial(pub String);

impl Serial {
    /// The serial of these content octets (as DER carries them).
    pub fn from_octets(octets: &[u8]) -> Self {
        Serial(hex::encode(octets))
    }

    /// The serial of a certificate's `serialNumber`.
    pub fn of(serial: &SerialNumber) -> Self {
        Self::from_octets(serial.as_bytes())
    }

    /// Parses a serial as an operator types it: hex digits in either case, optionally
    /// separated by colons, at most [`MAX_HEX_DIGITS`] digits.
    pub fn parse(text: &str) -> Result<Self, InvalidSerial> {
        let hex: String = text
            .chars()
            .filter(|c| *c != ':')
            .take(MAX_HEX_DIGITS + 1)
            .map(|c| c.to_ascii_lowercase())
            .collect();
        if hex.is_empty()
            || hex.len() > MAX_HEX_DIGITS
            || !hex.chars().all(|c| c.is_ascii_hexdigit())
        {
            return Err(InvalidSerial(text.chars().take(64).collect()));
        }
        Ok(Serial(hex))
    }

    /// A serial as the store wrote it (lower-case hex, from [`Serial::as_str`]): not checked
    /// again, so that a row is always readable.
    pub fn from_stored(hex: String) -> Self {
        Serial(hex)
    }

    /// The lower-case hex.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The lower-case hex, owned.
    pub fn into_string(self) -> String {
        self.0
    }

    /// The content octets; `None` for an odd number of digits (a serial typed by hand that no
    /// certificate can have).
    pub fn to_octets(&self) -> Option<Vec<u8>> {
        hex::decode(&self.0).ok()
    }

    /// The same serial as a response-cache key.
    pub fn key(&self) -> Option<SerialKey> {
        SerialKey::new(&self.to_octets()?)
    }
}

impl fmt::Display for Serial {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl AsRef<str> for Serial {
    fn as_ref(&self) -> &str {
        &self.0
    }
}

impl PartialEq<str> for Serial {
    fn eq(&self, other: &str) -> bool {
        self.0 == other
    }
}

impl PartialEq<&str> for Serial {
    fn eq(&self, other: &&str) -> bool {
        self.0 == *other
    }
}

impl serde::Serialize for Serial {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&self.0)
    }
}

/// A serial number's content octets, stored inline (a serial has at most 20 octets, plus a
/// leading zero for a positive value): the key of the response cache.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct SerialKey {
    len: u8,
    octets: [u8; 21],
}

impl SerialKey {
    /// The key of a serial's content octets; `None` if longer than any serial attestca issues.
    pub fn new(octets: &[u8]) -> Option<Self> {
        let mut key = SerialKey {
            len: u8::try_from(octets.len()).ok()?,
            octets: [0; 21],
        };
        key.octets.get_mut(..octets.len())?.copy_from_slice(octets);
        Some(key)
    }

    /// The content octets.
    pub fn as_bytes(&self) -> &[u8] {
        &self.octets[..usize::from(self.len)]
    }

    /// Lower-case hex, as the store keys certificates.
    pub fn to_hex(&self) -> String {
        hex::encode(self.as_bytes())
    }

    /// The serial this key holds.
    pub fn serial(&self) -> Serial {
        Serial::from_octets(self.as_bytes())
    }
}

impl fmt::Debug for SerialKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SerialKey({})", self.to_hex())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn operators_may_type_colons_and_capitals() {
        assert_eq!(Serial::parse("4A:0b:FF").unwrap().as_str(), "4a0bff");
        assert_eq!(
            Serial::parse("4a0bff").unwrap(),
            Serial::from_octets(&[0x4a, 0x0b, 0xff])
        );
    }

    #[test]
    fn what_is_not_a_serial_is_refused() {
        for bad in [
            "",
            ":",
            "xyz",
            "0x12",
            "12 34",
            &"a".repeat(41),
            &"ab".repeat(10_000),
        ] {
            let err = Serial::parse(bad).unwrap_err();
            assert!(err.0.len() <= 64, "{bad:?}");
        }
        assert!(Serial::parse(&"a".repeat(40)).is_ok());
    }

    #[test]
    fn a_serial_and_its_key_agree() {
        let serial = Serial::parse("00ff10").unwrap();
        let key = serial.key().unwrap();
        assert_eq!(key.as_bytes(), [0, 0xff, 0x10]);
        assert_eq!(key.serial(), serial);
        assert!(Serial::parse("abc").unwrap().key().is_none());
        assert!(SerialKey::new(&[1; 22]).is_none());
    }
}
