//! Audit events: who did what to which certificate or device, done or refused. Written only
//! inside a [`StoreTransaction`], with the change they describe (see
//! `crate::revocation::service`), so there is no revocation without its audit row and no
//! audit row for a revocation that did not commit.
//!
//! Both engines take the same SQL.

use sqlx::Row;

use attestca_core::record::AuditOutcome;

use super::{Store, StoreError, StoreTransaction, word};

/// Which audit events to list, newest first.
#[derive(Clone, Debug, Default)]
pub struct AuditQuery {
    pub operator: Option<String>,
    pub action: Option<String>,
    pub target: Option<String>,
    pub since: Option<i64>,
    pub until: Option<i64>,
    pub before_id: Option<i64>,
    pub limit: i64,
}

/// One audited action (of an operator, or of the CA's own rules), as stored.
#[derive(Clone, Debug)]
pub struct AuditEvent {
    /// Assigned by the database; ignored when recording.
    pub id: i64,
    pub occurred_at: i64,
    pub operator: String,
    pub action: String,
    pub target: String,
    pub outcome: AuditOutcome,
    pub reason: String,
    pub detail: String,
    pub peer: Option<String>,
}

impl Store {
    /// A page of audit events, newest first.
    pub async fn audit_page(&self, query: &AuditQuery) -> Result<Vec<AuditEvent>, StoreError> {
        let rows = sqlx::query(
            "SELECT id, occurred_at, operator, action, target, outcome, reason, detail, peer \
             FROM audit_events WHERE id < $1 AND ($2 = '' OR operator = $2) \
             AND ($3 = '' OR action = $3) AND ($4 = '' OR target = $4) \
             AND occurred_at >= $5 AND occurred_at < $6 ORDER BY id DESC LIMIT $7",
        )
        .bind(query.before_id.unwrap_or(i64::MAX))
        .bind(query.operator.clone().unwrap_or_default())
        .bind(query.action.clone().unwrap_or_default())
        .bind(query.target.clone().unwrap_or_default())
        .bind(query.since.unwrap_or(i64::MIN))
        .bind(query.until.unwrap_or(i64::MAX))
        .bind(query.limit)
        .fetch_all(self.db()?)
        .await?;
        rows.iter()
            .map(|r| {
                Ok(AuditEvent {
                    id: r.try_get("id")?,
                    occurred_at: r.try_get("occurred_at")?,
                    operator: r.try_get("operator")?,
                    action: r.try_get("action")?,
                    target: r.try_get("target")?,
                    outcome: word(r, "outcome")?,
                    reason: r.try_get("reason")?,
                    detail: r.try_get("detail")?,
                    peer: r.try_get("peer")?,
                })
            })
            .collect()
    }
}

/// Audit events are written only with the change they record.
impl StoreTransaction {
    /// Records an audit event (its `id` is assigned by the database).
    pub async fn record_audit(&mut self, event: &AuditEvent) -> Result<(), StoreError> {
        sqlx::query(
            "INSERT INTO audit_events (occurred_at, operator, action, target, outcome, reason, \
             detail, peer) VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
        )
        .bind(event.occurred_at)
        .bind(&event.operator)
        .bind(&event.action)
        .bind(&event.target)
        .bind(event.outcome.as_str())
        .bind(&event.reason)
        .bind(&event.detail)
        .bind(&event.peer)
        .execute(&mut *self.tx)
        .await?;
        Ok(())
    }
}
