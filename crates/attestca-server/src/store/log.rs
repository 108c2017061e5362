//! The issuance log's storage (docs/transparency.md): entries pending integration, the tree's
//! tiles and entry bundles, where each certificate landed, and the signed checkpoints.
//!
//! Integration is one transaction: read the tree's size and right edge and the pending
//! entries, let the caller compute the new tiles and sign the checkpoint, store all of it and
//! delete exactly the pending rows integrated. On PostgreSQL an advisory lock makes it one
//! instance at a time; the others find the lock taken and integrate nothing.

use std::collections::HashMap;

use attestca_core::transparency::tiles::{TileKind, TilePath};
use sqlx::Row;

use super::ledger::{placeholders, statement_chunks};
use super::{Engine, Store, StoreError};

/// `log_tiles.level` of entry bundles (hash tiles use their level, 0..=63).
const ENTRIES_LEVEL: i32 = -1;

/// The advisory lock key of the integrator.
const INTEGRATOR_LOCK: i64 = 0x6174_7465_7374_6c67; // "attestlg"

/// An entry waiting for integration.
#[derive(Clone, Debug)]
pub struct PendingEntry {
    pub id: i64,
    pub serial: String,
    pub entry: Vec<u8>,
}

/// What integration reads: the tree as stored, and the entries to append.
#[derive(Debug)]
pub struct LogState {
    pub size: u64,
    pub root: Option<[u8; 32]>,
    /// The hash tiles the append needs (`tiles::edge_tiles`), by (level, index).
    pub edge: HashMap<(u8, u64), Vec<u8>>,
    /// The rightmost entry bundle when partial.
    pub partial_bundle: Option<Vec<u8>>,
    pub pending: Vec<PendingEntry>,
}

/// What integration writes.
#[derive(Debug)]
pub struct LogUpdate {
    pub size: u64,
    pub root: [u8; 32],
    pub note: Vec<u8>,
    pub tiles: Vec<(TilePath, Vec<u8>)>,
}

fn level_of(kind: TileKind) -> i32 {
    match kind {
        TileKind::Hashes(level) => i32::from(level),
        TileKind::Entries => ENTRIES_LEVEL,
    }
}

impl Store {
    /// Integrates up to `limit` pending entries (see the module documentation). `build` gets
    /// the state (with no pending entries when there are none and a checkpoint exists, it is
    /// not called) and returns what to store. Returns the new size, or `None` when another
    /// instance integrates or there was nothing to do.
    pub async fn integrate_log(
        &self,
        limit: i64,
        edge_of: impl Fn(u64) -> Vec<(u8, u64)>,
        build: impl FnOnce(&LogState) -> Result<LogUpdate, String>,
    ) -> Result<Option<u64>, StoreError> {
        let mut tx = self.begin_write().await?;
        if self.engine == Engine::Postgres {
            let elected: bool = sqlx::query_scalar("SELECT pg_try_advisory_xact_lock($1)")
                .bind(INTEGRATOR_LOCK)
                .fetch_one(&mut *tx)
                .await?;
            if !elected {
                return Ok(None);
            }
        }
        let latest: Option<(i64, Vec<u8>)> =
            sqlx::query_as("SELECT size, root FROM log_checkpoints ORDER BY size DESC LIMIT 1")
                .fetch_optional(&mut *tx)
                .await?;
        let pending: Vec<PendingEntry> =
            sqlx::query("SELECT id, serial, entry FROM log_pending ORDER BY id LIMIT $1")
                .bind(limit)
                .fetch_all(&mut *tx)
                .await?
                .iter()
                .map(|r| {
                    Ok(PendingEntry {
                        id: r.try_get("id")?,
                        serial: r.try_get("serial")?,
                        entry: r.try_get("entry")?,
                    })
                })
                .collect::<Result<_, sqlx::Error>>()?;
        if pending.is_empty() && latest.is_some() {
            return Ok(None);
        }
        let size = latest.as_ref().map_or(0, |(s, _)| *s as u64);
        let mut edge = HashMap::new();
        for (level, index) in edge_of(size) {
            if let Some(data) = tile(&mut tx, i32::from(level), index).await? {
                edge.insert((level, index), data);
            }
        }
        let partial_bundle = if size.is_multiple_of(256) {
            None
        } else {
            tile(&mut tx, ENTRIES_LEVEL, size / 256).await?
        };
        let state = LogState {
            size,
            root: latest.and_then(|(_, root)| root.try_into().ok()),
            edge,
            partial_bundle,
            pending,
        };
        let update = build(&state).map_err(StoreError::Commit)?;
        for (path, data) in &update.tiles {
            sqlx::query(
                "INSERT INTO log_tiles (level, idx, width, data) VALUES ($1, $2, $3, $4) \
                 ON CONFLICT (level, idx) DO UPDATE SET width = excluded.width, data = excluded.data",
            )
            .bind(level_of(path.kind))
            .bind(path.index as i64)
            .bind(i32::from(path.width))
            .bind(data.as_slice())
            .execute(&mut *tx)
            .await?;
        }
        let numbered: Vec<(i64, &PendingEntry)> = state
            .pending
            .iter()
            .enumerate()
            .map(|(k, entry)| ((state.size + k as u64) as i64, entry))
            .collect();
        for chunk in statement_chunks(&numbered) {
            // The texts hold only placeholders: every value is bound.
            let insert = format!(
                "INSERT INTO log_leaves (idx, serial) VALUES {}",
                placeholders(chunk.len(), 2, 1)
            );
            let mut query = sqlx::query(sqlx::AssertSqlSafe(insert));
            for (index, entry) in chunk {
                query = query.bind(*index).bind(&entry.serial);
            }
            query.execute(&mut *tx).await?;
            let ids = (1..=chunk.len())
                .map(|k| format!("${k}"))
                .collect::<Vec<_>>()
                .join(", ");
            let delete = format!("DELETE FROM log_pending WHERE id IN ({ids})");
            let mut query = sqlx::query(sqlx::AssertSqlSafe(delete));
            for (_, entry) in chunk {
                query = query.bind(entry.id);
            }
            query.execute(&mut *tx).await?;
        }
        sqlx::query(
            "INSERT INTO log_checkpoints (size, root, note, created_at) VALUES ($1, $2, $3, $4) \
             ON CONFLICT (size) DO NOTHING",
        )
        .bind(update.size as i64)
        .bind(update.root.to_vec())
        .bind(update.note.as_slice())
        .bind(attestca_core::time::unix_now())
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(Some(update.size))
    }

    /// The newest signed checkpoint (the note's bytes).
    pub async fn log_checkpoint(&self) -> Result<Option<Vec<u8>>, StoreError> {
        Ok(
            sqlx::query_scalar("SELECT note FROM log_checkpoints ORDER BY size DESC LIMIT 1")
                .fetch_optional(self.db()?)
                .await?,
        )
    }

    /// Replaces the note `old` of the checkpoint of `size` with `note` (the same checkpoint
    /// with witness cosignatures appended); nothing when another writer changed it since.
    pub async fn log_cosign_checkpoint(
        &self,
        size: u64,
        old: &[u8],
        note: &[u8],
    ) -> Result<(), StoreError> {
        sqlx::query("UPDATE log_checkpoints SET note = $1 WHERE size = $2 AND note = $3")
            .bind(note)
            .bind(size as i64)
            .bind(old)
            .execute(self.db()?)
            .await?;
        Ok(())
    }

    /// The newest `limit` checkpoints (note, Unix time signed), newest first.
    pub async fn log_recent_checkpoints(
        &self,
        limit: i64,
    ) -> Result<Vec<(Vec<u8>, i64)>, StoreError> {
        Ok(sqlx::query_as(
            "SELECT note, created_at FROM log_checkpoints ORDER BY size DESC LIMIT $1",
        )
        .bind(limit)
        .fetch_all(self.db()?)
        .await?)
    }

    /// A tile or entry bundle as stored (its widest data), with its width.
    pub async fn log_tile(
        &self,
        kind: TileKind,
        index: u64,
    ) -> Result<Option<Vec<u8>>, StoreError> {
        Ok(
            sqlx::query_scalar("SELECT data FROM log_tiles WHERE level = $1 AND idx = $2")
                .bind(level_of(kind))
                .bind(index as i64)
                .fetch_optional(self.db()?)
                .await?,
        )
    }

    /// Where a certificate is in the log, once integrated.
    pub async fn log_index_of(&self, serial: &str) -> Result<Option<u64>, StoreError> {
        let index: Option<i64> = sqlx::query_scalar("SELECT idx FROM log_leaves WHERE serial = $1")
            .bind(serial)
            .fetch_optional(self.db()?)
            .await?;
        Ok(index.map(|i| i as u64))
    }

    /// Entries not yet integrated (the metric, and the integrator's backlog test).
    pub async fn log_pending_count(&self) -> Result<i64, StoreError> {
        Ok(sqlx::query_scalar("SELECT count(*) FROM log_pending")
            .fetch_one(self.db()?)
            .await?)
    }
}

/// What `attestca log verify` compares the log with: every certificate serial the CA
/// recorded, those issued at or after `since`, and those pending integration.
pub struct RecordedSerials {
    pub all: std::collections::BTreeSet<String>,
    pub since: Vec<String>,
    pub pending: std::collections::BTreeSet<String>,
}

impl Store {
    pub async fn log_cross_check(&self, since: i64) -> Result<RecordedSerials, StoreError> {
        let rows: Vec<(String, i64)> = sqlx::query_as("SELECT serial, issued_at FROM certificates")
            .fetch_all(self.db()?)
            .await?;
        let pending: Vec<String> = sqlx::query_scalar("SELECT serial FROM log_pending")
            .fetch_all(self.db()?)
            .await?;
        Ok(RecordedSerials {
            since: rows
                .iter()
                .filter(|(_, at)| *at >= since)
                .map(|(s, _)| s.clone())
                .collect(),
            all: rows.into_iter().map(|(s, _)| s).collect(),
            pending: pending.into_iter().collect(),
        })
    }
}

async fn tile(
    tx: &mut sqlx::Transaction<'static, sqlx::Any>,
    level: i32,
    index: u64,
) -> Result<Option<Vec<u8>>, StoreError> {
    Ok(
        sqlx::query_scalar("SELECT data FROM log_tiles WHERE level = $1 AND idx = $2")
            .bind(level)
            .bind(index as i64)
            .fetch_optional(&mut **tx)
            .await?,
    )
}
