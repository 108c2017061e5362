//! Certificate revocation lists (RFC 5280 §5): built from the store's revoked certificates,
//! numbered monotonically in the database, signed by the issuing CA's key.
//!
//! x509-cert's CrlBuilder copies the CA certificate's own AKI instead of the CA's SKI (so a
//! CRL of a non-root issuer does not match; openssl then finds no CRL); the TBSCertList is
//! built here with AKI = the issuing CA's key identifier.

use std::time::Duration;

use der::asn1::AnyRef;
use der::asn1::OctetString;
use der::{DateTime, Decode, Encode, Header, Length};
use x509_cert::crl::{RevokedCert, TbsCertList};
use x509_cert::ext::Extension;
use x509_cert::ext::pkix::AuthorityKeyIdentifier;
use x509_cert::ext::pkix::crl::CrlNumber;
use x509_cert::serial_number::SerialNumber;
use x509_cert::time::Time;

use crate::asn1::SignedEnvelope;
use crate::issuance::{IssuanceError, IssuingCa};
use crate::revocation::reason_code;

/// One revoked certificate, as the store lists it.
#[derive(Clone, Debug)]
pub struct RevokedEntry {
    /// Lower-case hex of the serial number.
    pub serial: String,
    pub revoked_at: i64,
    pub reason: Option<String>,
}

fn time(unix: i64) -> Result<Time, IssuanceError> {
    Ok(Time::from(DateTime::from_unix_duration(
        Duration::from_secs(u64::try_from(unix).unwrap_or(0)),
    )?))
}

fn extension<T: Encode + const_oid::AssociatedOid>(value: &T) -> der::Result<Extension> {
    Ok(Extension {
        extn_id: T::OID,
        critical: false,
        extn_value: OctetString::new(value.to_der()?)?,
    })
}

/// The revokedCertificates of a CRL, DER-encoded one entry at a time.
///
/// A CRL of a million entries is tens of megabytes of DER; building a `Vec<RevokedCert>` first
/// would hold several times that in small allocations. Entries are encoded as they come (from
/// a database cursor) into one buffer, and [`build`] splices that buffer into the TBSCertList.
#[derive(Default)]
pub struct RevokedList {
    der: Vec<u8>,
    count: usize,
}

impl RevokedList {
    /// Appends one entry.
    pub fn push(&mut self, entry: &RevokedEntry) -> Result<(), IssuanceError> {
        let serial = hex::decode(&entry.serial)
            .map_err(|_| IssuanceError::CaCertificate(format!("bad serial {}", entry.serial)))?;
        let extensions = match entry.reason.as_deref().and_then(reason_code) {
            Some(reason) => Some(vec![extension(&reason)?]),
            None => None,
        };
        RevokedCert {
            serial_number: SerialNumber::<x509_cert::certificate::Rfc5280>::new(&serial)?,
            revocation_date: time(entry.revoked_at)?,
            crl_entry_extensions: extensions,
        }
        .encode_to_vec(&mut self.der)?;
        self.count += 1;
        Ok(())
    }

    /// How many entries the list holds.
    pub fn len(&self) -> usize {
        self.count
    }

    pub fn is_empty(&self) -> bool {
        self.count == 0
    }
}

impl<'a> FromIterator<&'a RevokedEntry> for Result<RevokedList, IssuanceError> {
    fn from_iter<I: IntoIterator<Item = &'a RevokedEntry>>(entries: I) -> Self {
        let mut list = RevokedList::default();
        for entry in entries {
            list.push(entry)?;
        }
        Ok(list)
    }
}

/// Builds and signs a CRL listing `revoked` for `ca`.
pub fn build(
    ca: &IssuingCa,
    number: u64,
    this_update: i64,
    next_update: i64,
    revoked: &RevokedList,
) -> Result<Vec<u8>, IssuanceError> {
    let algorithm = ca.signer().algorithm().signature_algorithm();
    let mut tbs: TbsCertList = TbsCertList {
        version: x509_cert::Version::V2,
        signature: algorithm.clone(),
        issuer: ca.certificate().tbs_certificate().subject().clone(),
        this_update: time(this_update)?,
        next_update: Some(time(next_update)?),
        revoked_certificates: None,
        crl_extensions: None,
    };
    // The fields before revokedCertificates and the extensions after it are encoded by
    // x509-cert; only the splice of the pre-encoded entries is done here.
    let head = tbs.to_der()?;
    tbs.crl_extensions = Some(vec![
        extension(&AuthorityKeyIdentifier {
            key_identifier: Some(OctetString::new(ca.key_identifier())?),
            authority_cert_issuer: None,
            authority_cert_serial_number: None,
        })?,
        extension(&CrlNumber(der::asn1::Uint::new(&number.to_be_bytes())?))?,
    ]);
    let whole = tbs.to_der()?;
    let head = AnyRef::from_der(&head)?.value();
    let whole = AnyRef::from_der(&whole)?.value();
    let extensions = whole
        .get(head.len()..)
        .ok_or_else(|| IssuanceError::CaCertificate("CRL encoding: extensions not found".into()))?;
    let mut content = Vec::with_capacity(whole.len() + revoked.der.len() + 8);
    content.extend_from_slice(head);
    if !revoked.is_empty() {
        Header::new(der::Tag::Sequence, Length::try_from(revoked.der.len())?)
            .encode_to_vec(&mut content)?;
        content.extend_from_slice(&revoked.der);
    }
    content.extend_from_slice(extensions);
    let mut tbs_der = Vec::with_capacity(content.len() + 8);
    Header::new(der::Tag::Sequence, Length::try_from(content.len())?)
        .encode_to_vec(&mut tbs_der)?;
    tbs_der.extend_from_slice(&content);
    let signature = ca.signer().sign(&tbs_der)?;
    Ok(SignedEnvelope::assemble(&tbs_der, algorithm, &signature)?)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::issuance::software_ca::SoftwareCa;

    fn entries(n: usize) -> Vec<RevokedEntry> {
        (0..n)
            .map(|i| RevokedEntry {
                serial: format!(
                    "{:032x}",
                    0x4000_0000_0000_0000_0000_0000_0000_0000u128 + i as u128
                ),
                revoked_at: 1_790_000_000 + i as i64,
                reason: [
                    None,
                    Some("keyCompromise".to_owned()),
                    Some("unspecified".to_owned()),
                ][i % 3]
                    .clone(),
            })
            .collect()
    }

    /// The spliced encoding is exactly what x509-cert encodes for the same TBSCertList.
    #[test]
    fn streamed_entries_encode_like_x509_cert() {
        let root = SoftwareCa::self_signed("CN=CRL test root", 1).expect("root");
        let ca = IssuingCa::new(
            vec![root.der.clone()],
            std::sync::Arc::new(
                crate::signer::software::SoftwareSigner::from_pkcs8(
                    crate::signer::CaKeyAlgorithm::EcdsaP256,
                    &root.pkcs8,
                )
                .expect("signer"),
            ),
        )
        .expect("ca");
        for n in [0, 1, 5] {
            let list = entries(n)
                .iter()
                .collect::<Result<RevokedList, _>>()
                .expect("entries");
            let der = build(&ca, 7, 1_790_000_000, 1_790_086_400, &list).expect("CRL");
            let crl =
                x509_cert::crl::CertificateList::<x509_cert::certificate::Rfc5280>::from_der(&der)
                    .expect("parses");
            let reencoded = crl.tbs_cert_list.to_der().expect("encode");
            let ours = AnyRef::from_der(&der).expect("outer").value();
            assert!(ours.starts_with(&reencoded), "{n} entries: TBS differs");
            assert_eq!(
                crl.tbs_cert_list
                    .revoked_certificates
                    .as_ref()
                    .map_or(0, Vec::len),
                n
            );
            let envelope = SignedEnvelope::from_der(&der).expect("envelope");
            assert!(
                crate::verify::verify(
                    root.certificate()
                        .tbs_certificate()
                        .subject_public_key_info(),
                    envelope.algorithm.oid,
                    &envelope.tbs.to_der().expect("tbs"),
                    envelope.signature.raw_bytes(),
                ),
                "{n} entries: the signature does not verify"
            );
        }
    }
}
