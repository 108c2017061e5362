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
use x509_cert::ext::pkix::crl::CrlNumber;
use x509_cert::ext::pkix::{AuthorityKeyIdentifier, CrlReason};
use x509_cert::serial_number::SerialNumber;
use x509_cert::time::Time;

use crate::asn1::SignedEnvelope;
use crate::issuance::{IssuanceError, IssuingCa};

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

/// The CRLReason of an RFC 5280 reason name as the store records it; `None` for
/// `unspecified` (and unknown names), which CRL entries and OCSP responses leave out.
pub fn reason_code(name: &str) -> Option<CrlReason> {
    Some(match name {
        "keyCompromise" => CrlReason::KeyCompromise,
        "cACompromise" => CrlReason::CaCompromise,
        "affiliationChanged" => CrlReason::AffiliationChanged,
        "superseded" => CrlReason::Superseded,
        "cessationOfOperation" => CrlReason::CessationOfOperation,
        "certificateHold" => CrlReason::CertificateHold,
        "privilegeWithdrawn" => CrlReason::PrivilegeWithdrawn,
        "aACompromise" => CrlReason::AaCompromise,
        // RFC 5280 5.3.1: unspecified should be expressed by leaving the extension out.
        _ => return None,
    })
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

/// How long an instance that lost the generator election waits for the elected one's CRL.
const ELECTED_GENERATOR_WAIT: Duration = Duration::from_secs(2);

/// Keeps the issuing CA's CRL current and serves it from memory.
///
/// Every `poll` it asks the store whether the issuer's revocation counter moved since the
/// stored CRL was built, or the CRL is past half its validity; if so it generates the next one
/// (one generator at a time, elected through the database; the others wait for the elected
/// one's CRL). Every instance serves the latest stored CRL, so a revocation made through any
/// instance is published by all within a poll (plus the time to sign the CRL).
///
/// The counter, not time, decides: it is moved by database triggers in the transaction that
/// revokes (whatever code or operator does it), and read here *before* the entries the CRL
/// lists. So every revocation it counts was committed before the entries were read, and is
/// listed; every revocation committed after that read moves the counter away from the value
/// stored with the CRL, and the next poll generates again. Comparing revocation times with
/// thisUpdate instead missed a revocation stamped before a CRL's thisUpdate (the stamp is
/// taken before the commit; another instance's clock may be behind) but committed after the
/// CRL's entries were read.
pub struct CrlPublisher {
    ca: std::sync::Arc<IssuingCa>,
    store: crate::store::Store,
    validity_secs: i64,
    expired_grace_secs: i64,
    current: std::sync::RwLock<Option<crate::store::StoredCrl>>,
}

impl CrlPublisher {
    pub fn new(
        ca: std::sync::Arc<IssuingCa>,
        store: crate::store::Store,
        validity_secs: u64,
        expired_grace_secs: u64,
    ) -> Self {
        Self {
            ca,
            store,
            validity_secs: i64::try_from(validity_secs).unwrap_or(86_400).max(60),
            expired_grace_secs: i64::try_from(expired_grace_secs).unwrap_or(0),
            current: std::sync::RwLock::new(None),
        }
    }

    /// The CRL being served.
    pub fn current(&self) -> Option<crate::store::StoredCrl> {
        self.current.read().ok().and_then(|c| c.clone())
    }

    /// Generates a CRL if one is due, then loads the latest stored one.
    pub async fn refresh(&self) -> Result<(), crate::store::StoreError> {
        let key_id = self.ca.key_identifier().to_vec();
        let now = crate::issuance::unix_seconds(std::time::SystemTime::now()) as i64;
        // Two primary-key lookups: polls are cheap at any number of revoked certificates.
        let stored = self.store.crl_version(&key_id).await?;
        // Read before the entries (see the type's documentation for why that order is exact).
        let counter = self.store.revocation_counter(&key_id).await?;
        let due = match stored {
            None => true,
            Some(version) => {
                version.revocation_counter != counter
                    || now >= version.this_update + self.validity_secs / 2
            }
        };
        if due {
            let revoked = self
                .store
                .revoked_entries(&key_id, now - self.expired_grace_secs)
                .await?;
            let count = revoked.len();
            let ca = std::sync::Arc::clone(&self.ca);
            let validity = self.validity_secs;
            let generated = self
                .store
                .replace_crl(&key_id, count as i64, counter, move |number| {
                    let der = build(&ca, number as u64, now, now + validity, &revoked)
                        .map_err(|e| e.to_string())?;
                    Ok((der, now, now + validity))
                })
                .await?;
            if generated {
                tracing::info!(entries = count, "CRL generated");
            } else {
                self.await_elected_generator(&key_id, stored.map(|v| v.number))
                    .await?;
            }
        }
        // The body is loaded only when the number moved: polls are cheap at any CRL size.
        let stored = match (due, stored) {
            (false, Some(version)) => Some(version.number),
            _ => self.store.crl_version(&key_id).await?.map(|v| v.number),
        };
        if stored.is_some() && stored != self.current().map(|c| c.number) {
            let latest = self.store.crl(&key_id).await?;
            if let Ok(mut current) = self.current.write() {
                *current = latest;
            }
        }
        Ok(())
    }

    /// Another instance won the election and is generating the CRL: waits (at most
    /// [`ELECTED_GENERATOR_WAIT`]) until a CRL numbered after `before` is stored, so that this
    /// instance serves it now rather than a poll later.
    async fn await_elected_generator(
        &self,
        key_id: &[u8],
        before: Option<i64>,
    ) -> Result<(), crate::store::StoreError> {
        let deadline = tokio::time::Instant::now() + ELECTED_GENERATOR_WAIT;
        while self.store.crl_version(key_id).await?.map(|v| v.number) == before
            && tokio::time::Instant::now() < deadline
        {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        Ok(())
    }

    /// Refreshes every `poll` until the task is dropped.
    pub async fn run(self: std::sync::Arc<Self>, poll: std::time::Duration) {
        loop {
            // During a database outage (logged once, by the circuit) the CRL served stays.
            if self.store.availability().is_available()
                && let Err(e) = self.refresh().await
            {
                tracing::warn!(error = %e, "CRL refresh failed");
            }
            tokio::time::sleep(poll).await;
        }
    }
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
