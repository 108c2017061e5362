//! Attestation-key challenges (TPM2_MakeCredential): issued to one rig for one EK certificate
//! and AK public area, answered once, in a conditional UPDATE so that two answers cannot both
//! succeed. The secret itself is never stored, only its SHA-256: reading the database does not
//! let anyone answer a challenge without the TPM.
//!
//! Both engines take the same SQL.

use sqlx::Row;

use super::{Store, StoreError, timed};
use attestca_core::policy::attestation::NonceCheck;

impl Store {
    /// Records a challenge.
    pub async fn insert_challenge(
        &self,
        secret_sha256: &[u8],
        requester: &str,
        binding: &[u8],
        issued_at: i64,
        expires_at: i64,
    ) -> Result<(), StoreError> {
        timed(
            "insert_challenge",
            sqlx::query(
                "INSERT INTO ak_challenges (secret_sha256, requester, binding, issued_at, \
                 expires_at) VALUES ($1, $2, $3, $4, $5)",
            )
            .bind(secret_sha256)
            .bind(requester)
            .bind(binding)
            .bind(issued_at)
            .bind(expires_at)
            .execute(self.db()?),
        )
        .await?;
        Ok(())
    }

    /// Spends the challenge whose secret hashes to `secret_sha256`, if `requester` was given it
    /// for `binding` and it is live; otherwise says why not (a challenge made for another EK
    /// or AK is [`NonceCheck::Unknown`]: the secret answers nothing here).
    pub async fn consume_challenge(
        &self,
        secret_sha256: &[u8],
        requester: &str,
        binding: &[u8],
        now: i64,
    ) -> Result<NonceCheck, StoreError> {
        let spent = timed(
            "consume_challenge",
            sqlx::query(
                "UPDATE ak_challenges SET consumed_at = $4 WHERE secret_sha256 = $1 \
                 AND requester = $2 AND binding = $3 AND consumed_at IS NULL AND expires_at >= $4",
            )
            .bind(secret_sha256)
            .bind(requester)
            .bind(binding)
            .bind(now)
            .execute(self.db()?),
        )
        .await?;
        if spent.rows_affected() == 1 {
            return Ok(NonceCheck::Consumed);
        }
        let row = sqlx::query(
            "SELECT requester, binding, expires_at, consumed_at FROM ak_challenges \
             WHERE secret_sha256 = $1",
        )
        .bind(secret_sha256)
        .fetch_optional(self.db()?)
        .await?;
        let Some(row) = row else {
            return Ok(NonceCheck::Unknown);
        };
        let bound: Vec<u8> = row.try_get("binding")?;
        if bound != binding {
            return Ok(NonceCheck::Unknown);
        }
        Ok(
            match super::nonces::single_use_state(&row, requester, now)? {
                // Spent concurrently between the two statements.
                NonceCheck::Live => NonceCheck::Reused,
                other => other,
            },
        )
    }

    /// Forgets challenges that expired before `before`.
    pub async fn purge_challenges(&self, before: i64) -> Result<u64, StoreError> {
        let done = sqlx::query("DELETE FROM ak_challenges WHERE expires_at < $1")
            .bind(before)
            .execute(self.db()?)
            .await?;
        Ok(done.rows_affected())
    }
}
