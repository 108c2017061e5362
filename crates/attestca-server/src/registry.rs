//! The CA's records as operators see them: certificates, enrollment and audit events, and
//! revocations.
//!
//! Both the operator API and `attestca revoke` come through here, so a revocation request is
//! checked and normalised the same way whoever makes it; the revocation itself, and its audit
//! event in the same transaction, is made by [`Revocations`], the one path every revocation
//! (operator, renewal, overlap expiry) takes.

use attestca_core::reason::Reason;
use attestca_core::revocation::RevocationReason;
use attestca_core::serial::Serial;

pub use crate::revocation::service::Actor;
use crate::revocation::service::Revocations;
use crate::store::{
    AuditEvent, AuditQuery, CertificateQuery, CertificateRecord, EnrollmentEvent, EventQuery,
    RevocationOutcome, Store, StoreError,
};

/// Page size when none is asked for, and the largest accepted.
pub const DEFAULT_PAGE: u32 = 100;
pub const MAX_PAGE: u32 = 1000;

/// Why an operator request was not carried out. Each has a stable code for API clients.
#[derive(Debug, thiserror::Error)]
pub enum RegistryError {
    #[error("{0}")]
    InvalidRequest(String),
    #[error("no certificate has serial {0}")]
    CertificateNotFound(Serial),
    #[error("certificate {0} is already revoked")]
    AlreadyRevoked(Serial),
    #[error("device {0} has no active certificate")]
    NoActiveCertificates(String),
    #[error("the database is unavailable: {0}")]
    Store(#[from] StoreError),
}

impl RegistryError {
    /// The stable code API clients match on.
    pub fn code(&self) -> Reason {
        match self {
            RegistryError::InvalidRequest(_) => Reason::RequestInvalid,
            RegistryError::CertificateNotFound(_) => Reason::CertificateNotFound,
            RegistryError::AlreadyRevoked(_) => Reason::CertificateAlreadyRevoked,
            RegistryError::NoActiveCertificates(_) => Reason::DeviceNoActiveCertificates,
            RegistryError::Store(_) => Reason::ServiceDatabaseUnavailable,
        }
    }
}

/// Where a listing starts and how long it is.
#[derive(Clone, Debug, Default)]
pub struct Listing {
    /// The `next_cursor` of the previous page.
    pub cursor: Option<String>,
    pub limit: Option<u32>,
}

/// One page of a listing; `next_cursor` is set when more may follow.
#[derive(Clone, Debug)]
pub struct Page<T> {
    pub items: Vec<T>,
    pub next_cursor: Option<String>,
}

/// A certificate with the certificates that renewed it.
#[derive(Clone, Debug)]
pub struct CertificateDetail {
    pub record: CertificateRecord,
    pub successors: Vec<Serial>,
}

/// Operator access to the store.
#[derive(Clone)]
pub struct Registry {
    store: Store,
    revocations: Revocations,
}

impl Registry {
    pub fn new(store: Store) -> Self {
        Self {
            revocations: Revocations::new(store.clone()),
            store,
        }
    }

    /// Runs a store operation unless the database is known to be down, and stops waiting for
    /// it when the database is found down meanwhile (503 at once, not at the pool's timeout).
    async fn answered<T>(
        &self,
        operation: impl std::future::Future<Output = Result<T, StoreError>>,
    ) -> Result<T, StoreError> {
        self.store.availability().guard(operation).await
    }

    /// One certificate by serial (hex, any case, colons allowed).
    pub async fn certificate(&self, serial: &str) -> Result<CertificateDetail, RegistryError> {
        self.detail(normalise_serial(serial)?).await
    }

    async fn detail(&self, serial: Serial) -> Result<CertificateDetail, RegistryError> {
        let record = self
            .answered(self.store.certificate(&serial))
            .await?
            .ok_or_else(|| RegistryError::CertificateNotFound(serial.clone()))?;
        let successors = self.answered(self.store.successors(&serial)).await?;
        Ok(CertificateDetail { record, successors })
    }

    /// Certificates, newest first. `filter`'s own pagination fields are ignored.
    pub async fn certificates(
        &self,
        filter: CertificateQuery,
        listing: &Listing,
    ) -> Result<Page<CertificateRecord>, RegistryError> {
        let limit = page_size(listing)?;
        let before = match &listing.cursor {
            None => None,
            Some(cursor) => Some(
                cursor
                    .split_once('.')
                    .and_then(|(at, serial)| {
                        Some((at.parse::<i64>().ok()?, Serial::parse(serial).ok()?))
                    })
                    .ok_or_else(|| bad_cursor(cursor))?,
            ),
        };
        let items = self
            .answered(self.store.certificates_page(&CertificateQuery {
                before,
                limit: i64::from(limit),
                ..filter
            }))
            .await?;
        let next_cursor =
            full_page(&items, limit).map(|last| format!("{}.{}", last.issued_at, last.serial));
        Ok(Page { items, next_cursor })
    }

    /// Enrollment events, newest first, with their ids.
    pub async fn events(
        &self,
        filter: EventQuery,
        listing: &Listing,
    ) -> Result<Page<(i64, EnrollmentEvent)>, RegistryError> {
        let limit = page_size(listing)?;
        let items = self
            .answered(self.store.events_page(&EventQuery {
                before_id: id_cursor(listing)?,
                limit: i64::from(limit),
                ..filter
            }))
            .await?;
        let next_cursor = full_page(&items, limit).map(|(id, _)| id.to_string());
        Ok(Page { items, next_cursor })
    }

    /// Operator actions, newest first.
    pub async fn audit_events(
        &self,
        filter: AuditQuery,
        listing: &Listing,
    ) -> Result<Page<AuditEvent>, RegistryError> {
        let limit = page_size(listing)?;
        let items = self
            .answered(self.store.audit_page(&AuditQuery {
                before_id: id_cursor(listing)?,
                limit: i64::from(limit),
                ..filter
            }))
            .await?;
        let next_cursor = full_page(&items, limit).map(|e| e.id.to_string());
        Ok(Page { items, next_cursor })
    }

    /// Revokes one certificate. Refusals (unknown serial, already revoked) are audited too.
    pub async fn revoke(
        &self,
        actor: &Actor,
        serial: &str,
        reason: Option<&str>,
    ) -> Result<CertificateDetail, RegistryError> {
        let reason = checked_reason(reason)?;
        let serial = normalise_serial(serial)?;
        match self
            .answered(self.revocations.revoke_certificate(actor, &serial, reason))
            .await?
        {
            RevocationOutcome::Revoked => {
                tracing::info!(operator = %actor.id, serial = %serial, reason = %reason, "certificate revoked");
                self.detail(serial).await
            }
            RevocationOutcome::NotFound => Err(RegistryError::CertificateNotFound(serial)),
            RevocationOutcome::AlreadyRevoked => Err(RegistryError::AlreadyRevoked(serial)),
        }
    }

    /// Revokes every active certificate of a device identity; returns their serials.
    pub async fn revoke_device(
        &self,
        actor: &Actor,
        device_identity: &str,
        reason: Option<&str>,
    ) -> Result<Vec<Serial>, RegistryError> {
        let reason = checked_reason(reason)?;
        if device_identity.is_empty() {
            return Err(RegistryError::InvalidRequest(
                "the device identity is empty".into(),
            ));
        }
        let serials = self
            .answered(
                self.revocations
                    .revoke_device(actor, device_identity, reason),
            )
            .await?;
        if serials.is_empty() {
            return Err(RegistryError::NoActiveCertificates(
                device_identity.to_owned(),
            ));
        }
        tracing::info!(operator = %actor.id, device = %device_identity, revoked = serials.len(), reason = %reason, "device revoked");
        Ok(serials)
    }
}

/// The RFC 5280 reason an operator asked for (`unspecified` when none), if operators may
/// revoke for it (see [`RevocationReason::OPERATOR`]).
pub fn checked_reason(reason: Option<&str>) -> Result<RevocationReason, RegistryError> {
    let name = reason.unwrap_or("unspecified");
    RevocationReason::from_name(name)
        .filter(|r| RevocationReason::OPERATOR.contains(r))
        .ok_or_else(|| {
            let accepted: Vec<&str> = RevocationReason::OPERATOR
                .iter()
                .map(|r| r.as_str())
                .collect();
            RegistryError::InvalidRequest(format!(
                "{name:?} is not an RFC 5280 revocation reason ({})",
                accepted.join(", ")
            ))
        })
}

/// An operator's serial (hex, any case, colons allowed), as the store keys it.
pub fn normalise_serial(serial: &str) -> Result<Serial, RegistryError> {
    Serial::parse(serial).map_err(|e| RegistryError::InvalidRequest(e.to_string()))
}

fn page_size(listing: &Listing) -> Result<u32, RegistryError> {
    match listing.limit {
        None => Ok(DEFAULT_PAGE),
        Some(n) if (1..=MAX_PAGE).contains(&n) => Ok(n),
        Some(n) => Err(RegistryError::InvalidRequest(format!(
            "limit must be between 1 and {MAX_PAGE} (got {n})"
        ))),
    }
}

fn id_cursor(listing: &Listing) -> Result<Option<i64>, RegistryError> {
    listing
        .cursor
        .as_deref()
        .map(|c| c.parse::<i64>().map_err(|_| bad_cursor(c)))
        .transpose()
}

fn bad_cursor(cursor: &str) -> RegistryError {
    RegistryError::InvalidRequest(format!("cursor {cursor:?} is not one this API returned"))
}

/// The last item, when the page is full (so another may follow).
fn full_page<T>(items: &[T], limit: u32) -> Option<&T> {
    if items.len() == limit as usize {
        items.last()
    } else {
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn serials_are_normalised_and_checked() {
        assert_eq!(normalise_serial("4A:0b:FF").unwrap(), "4a0bff");
        assert!(normalise_serial("").is_err());
        assert!(normalise_serial("xyz").is_err());
        assert!(normalise_serial(&"a".repeat(41)).is_err());
    }

    #[test]
    fn reasons_are_rfc5280_names() {
        assert_eq!(checked_reason(None).unwrap(), RevocationReason::Unspecified);
        assert_eq!(
            checked_reason(Some("keyCompromise")).unwrap(),
            RevocationReason::KeyCompromise
        );
        assert_eq!(
            checked_reason(Some("superseded")).unwrap().as_str(),
            "superseded"
        );
        assert!(checked_reason(Some("removeFromCRL")).is_err());
        assert!(checked_reason(Some("certificateHold")).is_err());
        assert!(checked_reason(Some("KEYCOMPROMISE")).is_err());
    }

    #[test]
    fn page_sizes_are_bounded() {
        let listing = |limit| Listing {
            cursor: None,
            limit,
        };
        assert_eq!(page_size(&listing(None)).unwrap(), DEFAULT_PAGE);
        assert_eq!(page_size(&listing(Some(1))).unwrap(), 1);
        assert!(page_size(&listing(Some(0))).is_err());
        assert!(page_size(&listing(Some(MAX_PAGE + 1))).is_err());
    }
}
