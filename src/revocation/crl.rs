//! Certificate revocation lists (RFC 5280 §5): built from the store's revoked certificates,
//! numbered monotonically in the database, signed by the issuing CA's key.
//!
//! x509-cert's CrlBuilder copies the CA certificate's own AKI instead of the CA's SKI (so a
//! CRL of a non-root issuer does not match; openssl then finds no CRL); the TBSCertList is
//! built here with AKI = the issuing CA's key identifier.

use std::time::Duration;

use der::asn1::OctetString;
use der::{DateTime, Encode};
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

/// Builds and signs a CRL of `entries` for `ca`.
pub fn build(
    ca: &IssuingCa,
    number: u64,
    this_update: i64,
    next_update: i64,
    entries: &[RevokedEntry],
) -> Result<Vec<u8>, IssuanceError> {
    let algorithm = ca.signer().algorithm().signature_algorithm();
    let revoked = entries
        .iter()
        .map(|e| {
            let serial = hex::decode(&e.serial)
                .map_err(|_| IssuanceError::CaCertificate(format!("bad serial {}", e.serial)))?;
            let extensions = match e.reason.as_deref().and_then(reason_code) {
                Some(reason) => Some(vec![extension(&reason)?]),
                None => None,
            };
            Ok(RevokedCert {
                serial_number: SerialNumber::<x509_cert::certificate::Rfc5280>::new(&serial)?,
                revocation_date: time(e.revoked_at)?,
                crl_entry_extensions: extensions,
            })
        })
        .collect::<Result<Vec<_>, IssuanceError>>()?;
    let tbs: TbsCertList = TbsCertList {
        version: x509_cert::Version::V2,
        signature: algorithm.clone(),
        issuer: ca.certificate().tbs_certificate().subject().clone(),
        this_update: time(this_update)?,
        next_update: Some(time(next_update)?),
        revoked_certificates: if revoked.is_empty() {
            None
        } else {
            Some(revoked)
        },
        crl_extensions: Some(vec![
            extension(&AuthorityKeyIdentifier {
                key_identifier: Some(OctetString::new(ca.key_identifier())?),
                authority_cert_issuer: None,
                authority_cert_serial_number: None,
            })?,
            extension(&CrlNumber(der::asn1::Uint::new(&number.to_be_bytes())?))?,
        ]),
    };
    let tbs_der = tbs.to_der()?;
    let signature = ca.signer().sign(&tbs_der)?;
    Ok(SignedEnvelope::assemble(&tbs_der, algorithm, &signature)?)
}

/// Keeps the issuing CA's CRL current and serves it from memory.
///
/// Every `poll` it asks the store whether a revocation happened since the stored CRL, or the
/// CRL is past half its validity; if so it generates the next one (one generator at a time,
/// elected through the database). Every instance serves the latest stored CRL, so a
/// revocation made through any instance is published by all within a poll or two.
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
        let stored = self.store.crl(&key_id).await?;
        let latest_revocation = self.store.latest_revocation(&key_id).await?;
        let due = match &stored {
            None => true,
            Some(crl) => {
                latest_revocation.is_some_and(|r| r >= crl.this_update)
                    || now >= crl.this_update + self.validity_secs / 2
            }
        };
        if due {
            let entries = self
                .store
                .revoked_entries(&key_id, now - self.expired_grace_secs)
                .await?;
            let count = entries.len();
            let ca = std::sync::Arc::clone(&self.ca);
            let validity = self.validity_secs;
            let generated = self
                .store
                .replace_crl(&key_id, move |number| {
                    let der = build(&ca, number as u64, now, now + validity, &entries)
                        .map_err(|e| e.to_string())?;
                    Ok((der, now, now + validity))
                })
                .await?;
            if generated {
                tracing::info!(entries = count, "CRL generated");
            }
        }
        let latest = self.store.crl(&key_id).await?;
        if let Ok(mut current) = self.current.write() {
            *current = latest;
        }
        Ok(())
    }

    /// Refreshes every `poll` until the task is dropped.
    pub async fn run(self: std::sync::Arc<Self>, poll: std::time::Duration) {
        loop {
            if let Err(e) = self.refresh().await {
                tracing::warn!(error = %e, "CRL refresh failed");
            }
            tokio::time::sleep(poll).await;
        }
    }
}
