//! Verified supply-chain manifests: which devices (and keys) a vendor says it made. A
//! manifest is stored all or nothing, and re-importing one changes nothing.
//!
//! Both engines take the same SQL (`ON CONFLICT ... DO NOTHING`).

use super::{Store, StoreError};

/// One part of a verified supply-chain manifest.
#[derive(Clone, Debug)]
pub struct ManifestRecord {
    pub unique_id: String,
    pub part_number: String,
    pub key_sha256s: Vec<Vec<u8>>,
}

impl Store {
    /// Stores the parts of a verified manifest (all or nothing); returns how many were new.
    pub async fn insert_manifest(
        &self,
        vendor: &str,
        parts: &[ManifestRecord],
        manifest_sha256: &[u8],
        imported_at: i64,
    ) -> Result<u64, StoreError> {
        let mut tx = self.db()?.begin().await?;
        let mut added = 0;
        for part in parts {
            let inserted = sqlx::query(
                "INSERT INTO manifest_parts (vendor, unique_id, part_number, manifest_sha256, imported_at) \
                 VALUES ($1, $2, $3, $4, $5) ON CONFLICT (vendor, unique_id) DO NOTHING",
            )
            .bind(vendor)
            .bind(&part.unique_id)
            .bind(&part.part_number)
            .bind(manifest_sha256)
            .bind(imported_at)
            .execute(&mut *tx)
            .await?;
            added += inserted.rows_affected();
            for key in &part.key_sha256s {
                sqlx::query(
                    "INSERT INTO manifest_keys (vendor, unique_id, spki_sha256) VALUES ($1, $2, $3) \
                     ON CONFLICT (vendor, unique_id, spki_sha256) DO NOTHING",
                )
                .bind(vendor)
                .bind(&part.unique_id)
                .bind(key)
                .execute(&mut *tx)
                .await?;
            }
        }
        tx.commit().await?;
        Ok(added)
    }

    /// Whether a manifest lists this device of this vendor with this key.
    pub async fn manifest_lists(
        &self,
        vendor: &str,
        unique_id: &str,
        spki_sha256: &[u8],
    ) -> Result<bool, StoreError> {
        let found: Option<i64> = sqlx::query_scalar(
            "SELECT 1 FROM manifest_keys WHERE vendor = $1 AND unique_id = $2 AND spki_sha256 = $3",
        )
        .bind(vendor)
        .bind(unique_id)
        .bind(spki_sha256)
        .fetch_optional(self.db()?)
        .await?;
        Ok(found.is_some())
    }
}
