//! CRL state: the stored CRL of each issuer, its number, the issuer's revocation counter
//! (moved by the triggers of migration 0009 in every transaction that changes what the CRL
//! lists) and the revoked certificates a CRL lists.
//!
//! The rows are handed out as a stream of [`RevokedEntry`]: the CRL publisher encodes them as
//! they come, so a million entries never sit in memory as rows, and the store does not depend
//! on the publisher. The generator election is PostgreSQL-only (an advisory lock); SQLite
//! serves one process.

use futures::stream::BoxStream;
use futures::{StreamExt, TryStreamExt};
use sqlx::Row;

use attestca_core::crl::RevokedEntry;

use super::{Engine, Store, StoreError};

/// A stored CRL.
#[derive(Clone, Debug)]
pub struct StoredCrl {
    pub number: i64,
    /// Revoked certificates listed.
    pub entries: i64,
    /// Shared, not copied: a fleet's CRL is tens of megabytes and served on every request.
    pub der: bytes::Bytes,
    pub this_update: i64,
    pub next_update: i64,
}

/// A stored CRL without its body: what a poll needs to decide whether a new one is due.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CrlVersion {
    pub number: i64,
    pub this_update: i64,
    /// The issuer's revocation counter as read before the CRL's entries were (-1: a CRL
    /// stored before the counter existed).
    pub revocation_counter: i64,
}

impl Store {
    /// Revoked certificates of one issuer that have not been expired since before
    /// `expired_before` (older entries leave the CRL), in serial order, as a stream of rows:
    /// the caller encodes them as they come (a million entries never sit in memory as rows).
    pub fn revoked_entries(
        &self,
        issuer_key_id: &[u8],
        expired_before: i64,
    ) -> Result<BoxStream<'_, Result<RevokedEntry, StoreError>>, StoreError> {
        let rows = sqlx::query(
            "SELECT serial, revoked_at, revocation_reason FROM certificates \
             WHERE issuer_key_id = $1 AND status = 'revoked' AND not_after >= $2 ORDER BY serial",
        )
        .bind(issuer_key_id.to_vec())
        .bind(expired_before)
        .fetch(self.db()?);
        Ok(rows
            .map_err(StoreError::from)
            .and_then(|r| async move {
                Ok(RevokedEntry {
                    serial: r.try_get("serial")?,
                    revoked_at: r.try_get::<Option<i64>, _>("revoked_at")?.unwrap_or(0),
                    reason: r.try_get("revocation_reason")?,
                })
            })
            .boxed())
    }

    /// The issuer's revocation counter: moved, by triggers on `certificates` and in the same
    /// transaction, by every change to what the issuer's CRL lists (0 before the first). One
    /// primary-key lookup, whatever the number of revoked certificates.
    pub async fn revocation_counter(&self, issuer_key_id: &[u8]) -> Result<i64, StoreError> {
        let counter: Option<i64> =
            sqlx::query_scalar("SELECT counter FROM revocation_counters WHERE issuer_key_id = $1")
                .bind(issuer_key_id)
                .fetch_optional(self.db()?)
                .await?;
        Ok(counter.unwrap_or(0))
    }

    /// The stored CRL of an issuer.
    pub async fn crl(&self, issuer_key_id: &[u8]) -> Result<Option<StoredCrl>, StoreError> {
        let row = sqlx::query(
            "SELECT crl_number, entry_count, der, this_update, next_update FROM crls \
             WHERE issuer_key_id = $1",
        )
        .bind(issuer_key_id)
        .fetch_optional(self.db()?)
        .await?;
        row.map(|r| {
            Ok(StoredCrl {
                number: r.try_get("crl_number")?,
                entries: r.try_get("entry_count")?,
                der: bytes::Bytes::from(r.try_get::<Vec<u8>, _>("der")?),
                this_update: r.try_get("this_update")?,
                next_update: r.try_get("next_update")?,
            })
        })
        .transpose()
    }

    /// What an issuer's stored CRL is, without its (large) body.
    pub async fn crl_version(
        &self,
        issuer_key_id: &[u8],
    ) -> Result<Option<CrlVersion>, StoreError> {
        let row = sqlx::query(
            "SELECT crl_number, this_update, revocation_counter FROM crls WHERE issuer_key_id = $1",
        )
        .bind(issuer_key_id)
        .fetch_optional(self.db()?)
        .await?;
        row.map(|r| {
            Ok(CrlVersion {
                number: r.try_get("crl_number")?,
                this_update: r.try_get("this_update")?,
                revocation_counter: r.try_get("revocation_counter")?,
            })
        })
        .transpose()
    }

    /// Allocates the next CRL number, lets `make` build and sign the CRL, and stores it with
    /// `revocation_counter` (the issuer's [`Store::revocation_counter`], read before the
    /// entries listed) — all in one transaction. On PostgreSQL an advisory lock elects one
    /// generator among the instances: when another holds it, this returns `Ok(false)` and
    /// generates nothing.
    pub async fn replace_crl(
        &self,
        issuer_key_id: &[u8],
        entries: i64,
        revocation_counter: i64,
        make: impl FnOnce(i64) -> Result<(Vec<u8>, i64, i64), String>,
    ) -> Result<bool, StoreError> {
        let mut tx = self.begin_write().await?;
        if self.engine == Engine::Postgres {
            // The lock key: the first 8 bytes of the issuer's key identifier.
            let mut key = [0u8; 8];
            for (k, b) in key.iter_mut().zip(issuer_key_id) {
                *k = *b;
            }
            let elected: bool = sqlx::query_scalar("SELECT pg_try_advisory_xact_lock($1)")
                .bind(i64::from_be_bytes(key))
                .fetch_one(&mut *tx)
                .await?;
            if !elected {
                return Ok(false);
            }
        }
        let current: Option<(i64, i64)> = sqlx::query_as(
            "SELECT crl_number, revocation_counter FROM crls WHERE issuer_key_id = $1",
        )
        .bind(issuer_key_id)
        .fetch_optional(&mut *tx)
        .await?;
        // Another generator got the lock first with a later read of the revocations: a CRL
        // built from this (older) read would list less than the one stored. The counter only
        // grows, so a stored counter above this read's means exactly that.
        if current.is_some_and(|(_, stored)| stored > revocation_counter) {
            return Ok(false);
        }
        let number = current.map_or(0, |(number, _)| number) + 1;
        let (der, this_update, next_update) =
            make(number).map_err(|e| StoreError::Database(sqlx::Error::Protocol(e)))?;
        sqlx::query(
            "INSERT INTO crls (issuer_key_id, crl_number, der, this_update, next_update, \
             entry_count, revocation_counter) VALUES ($1, $2, $3, $4, $5, $6, $7) \
             ON CONFLICT (issuer_key_id) DO UPDATE \
             SET crl_number = excluded.crl_number, der = excluded.der, \
             entry_count = excluded.entry_count, \
             this_update = excluded.this_update, next_update = excluded.next_update, \
             revocation_counter = excluded.revocation_counter \
             WHERE crls.crl_number < excluded.crl_number",
        )
        .bind(issuer_key_id)
        .bind(number)
        .bind(&der)
        .bind(this_update)
        .bind(next_update)
        .bind(entries)
        .bind(revocation_counter)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(true)
    }
}
