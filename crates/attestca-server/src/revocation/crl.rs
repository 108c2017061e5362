//! The CRL publisher: keeps the issuing CA's CRL current in the database and serves it from
//! memory. The CRL itself is built by `attestca_core::crl`, from the revoked certificates the
//! store hands out as rows: the store does not know the CRL's encoding.

use std::time::Duration;

pub use attestca_core::crl::{RevokedEntry, RevokedList, build};
pub use attestca_core::revocation::reason_code;

use crate::issuance::IssuingCa;

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
        let now = attestca_core::time::unix_now();
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
            let revoked = self.revoked_list(&key_id, now).await?;
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

    /// The entries of the next CRL, encoded as the store's rows stream in (a million entries
    /// never sit in memory as rows).
    async fn revoked_list(
        &self,
        key_id: &[u8],
        now: i64,
    ) -> Result<RevokedList, crate::store::StoreError> {
        use futures::TryStreamExt;
        let mut rows = self
            .store
            .revoked_entries(key_id, now - self.expired_grace_secs)?;
        let mut list = RevokedList::default();
        while let Some(entry) = rows.try_next().await? {
            list.push(&entry).map_err(|e| {
                crate::store::StoreError::Database(sqlx::Error::Protocol(e.to_string()))
            })?;
        }
        Ok(list)
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
