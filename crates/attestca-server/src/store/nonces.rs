//! Stored attestation nonces (those too short to be stateless, see [`attestca_core::nonce`]):
//! issued to one requester, spent once, in a conditional UPDATE so that two concurrent uses
//! cannot both succeed; expired ones are kept a while (a late use is reported as expired) and
//! then purged. Also the shared secret stateless nonces are minted with.
//!
//! Both engines take the same SQL.

use sqlx::Row;

use super::{Store, StoreError, timed};

/// What consuming (or looking at) a nonce found: the registration authority's policy decides
/// on it ([`attestca_core::policy::attestation::nonce_verdict`]).
pub use attestca_core::policy::attestation::NonceCheck;

impl Store {
    /// The secret stateless nonces are minted with ([`attestca_core::nonce`]): created by the
    /// first instance to start on this database (`candidate`, 32 random bytes), read by every
    /// other, so that a nonce one instance issued verifies on all of them.
    pub async fn nonce_secret(&self, candidate: &[u8], now: i64) -> Result<Vec<u8>, StoreError> {
        sqlx::query(
            "INSERT INTO nonce_keys (id, secret, created_at) VALUES (1, $1, $2) \
             ON CONFLICT (id) DO NOTHING",
        )
        .bind(candidate)
        .bind(now)
        .execute(self.db()?)
        .await?;
        Ok(
            sqlx::query_scalar("SELECT secret FROM nonce_keys WHERE id = 1")
                .fetch_one(self.db()?)
                .await?,
        )
    }

    /// Records a freshly issued nonce.
    pub async fn insert_nonce(
        &self,
        nonce: &[u8],
        requester: &str,
        issued_at: i64,
        expires_at: i64,
    ) -> Result<(), StoreError> {
        timed(
            "insert_nonce",
            sqlx::query(
                "INSERT INTO nonces (nonce, requester, issued_at, expires_at) VALUES ($1, $2, $3, $4)",
            )
            .bind(nonce)
            .bind(requester)
            .bind(issued_at)
            .bind(expires_at)
            .execute(self.db()?),
        )
        .await?;
        Ok(())
    }

    /// Spends a nonce for `requester` in one conditional UPDATE (so concurrent uses cannot both
    /// succeed), and says why not when it cannot be spent.
    pub async fn consume_nonce(
        &self,
        nonce: &[u8],
        requester: &str,
        now: i64,
    ) -> Result<NonceCheck, StoreError> {
        let spent = timed(
            "consume_nonce",
            sqlx::query(
                "UPDATE nonces SET consumed_at = $3 WHERE nonce = $1 AND requester = $2 \
                 AND consumed_at IS NULL AND expires_at >= $3",
            )
            .bind(nonce)
            .bind(requester)
            .bind(now)
            .execute(self.db()?),
        )
        .await?;
        if spent.rows_affected() == 1 {
            return Ok(NonceCheck::Consumed);
        }
        Ok(match self.nonce_state(nonce, requester, now).await? {
            // Spent concurrently between the two statements.
            NonceCheck::Live => NonceCheck::Reused,
            other => other,
        })
    }

    /// What a nonce is for `requester` at `now`, without spending it: the registration authority
    /// looks before it verifies the evidence that carries it, and spends it only at the end.
    pub async fn nonce_state(
        &self,
        nonce: &[u8],
        requester: &str,
        now: i64,
    ) -> Result<NonceCheck, StoreError> {
        let row = timed(
            "nonce_state",
            sqlx::query("SELECT requester, expires_at, consumed_at FROM nonces WHERE nonce = $1")
                .bind(nonce)
                .fetch_optional(self.db()?),
        )
        .await?;
        let Some(row) = row else {
            return Ok(NonceCheck::Unknown);
        };
        single_use_state(&row, requester, now)
    }

    /// Nonces issued, not spent, and not expired at `now`.
    pub async fn outstanding_nonces(&self, now: i64) -> Result<i64, StoreError> {
        Ok(sqlx::query_scalar(
            "SELECT COUNT(*) FROM nonces WHERE expires_at >= $1 AND consumed_at IS NULL",
        )
        .bind(now)
        .fetch_one(self.db()?)
        .await?)
    }

    /// Forgets nonces that expired before `before`.
    pub async fn purge_nonces(&self, before: i64) -> Result<u64, StoreError> {
        let done = sqlx::query("DELETE FROM nonces WHERE expires_at < $1")
            .bind(before)
            .execute(self.db()?)
            .await?;
        Ok(done.rows_affected())
    }
}

/// What a single-use row (a nonce, a challenge: `requester`, `expires_at`, `consumed_at`) is
/// for `requester` at `now`.
pub(super) fn single_use_state(
    row: &sqlx::any::AnyRow,
    requester: &str,
    now: i64,
) -> Result<NonceCheck, StoreError> {
    let owner: String = row.try_get("requester")?;
    let expires_at: i64 = row.try_get("expires_at")?;
    let consumed_at: Option<i64> = row.try_get("consumed_at")?;
    Ok(if owner != requester {
        NonceCheck::Foreign
    } else if consumed_at.is_some() {
        NonceCheck::Reused
    } else if expires_at < now {
        NonceCheck::Expired
    } else {
        NonceCheck::Live
    })
}
