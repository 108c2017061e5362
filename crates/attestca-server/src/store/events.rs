//! Enrollment events: one row per enrollment or renewal attempt, issued or refused. They are
//! written by the [`super::ledger::Ledger`] (with the certificate they issued, in one commit)
//! and read here, for the operator API's listings.
//!
//! Both engines take the same SQL.

use sqlx::Row;

use attestca_core::record::EventOutcome;
use attestca_core::serial::Serial;

use super::{Store, StoreError, optional_serial, word};

/// One enrollment attempt, as stored.
#[derive(Clone, Debug, Default)]
pub struct EnrollmentEvent {
    pub occurred_at: i64,
    pub requester: Option<String>,
    pub operation: String,
    pub profile: String,
    pub outcome: EventOutcome,
    pub reason: String,
    pub detail: String,
    pub serial: Option<Serial>,
    pub csr_sha256: Option<Vec<u8>>,
    pub peer: Option<String>,
    /// The certificate renewed by this event (simplereenroll).
    pub predecessor_serial: Option<Serial>,
    /// SHA-256 of the attestation bundle, when the CSR carried one.
    pub evidence_sha256: Option<Vec<u8>>,
    pub attestation_format: Option<String>,
    pub vendor: Option<String>,
    pub device_identity: Option<String>,
}

/// Which enrollment events to list, newest first.
#[derive(Clone, Debug, Default)]
pub struct EventQuery {
    pub requester: Option<String>,
    pub operation: Option<String>,
    pub outcome: Option<EventOutcome>,
    pub reason: Option<String>,
    pub device_identity: Option<String>,
    pub serial: Option<Serial>,
    pub profile: Option<String>,
    /// Unix seconds, inclusive.
    pub since: Option<i64>,
    /// Unix seconds, exclusive.
    pub until: Option<i64>,
    /// Continue below this event id.
    pub before_id: Option<i64>,
    pub limit: i64,
}

/// The columns of `enrollment_events`, in [`event_from_row`] order.
macro_rules! event_columns {
    () => {
        "id, occurred_at, requester, operation, profile, outcome, reason, detail, serial, \
         csr_sha256, peer, evidence_sha256, attestation_format, vendor, device_identity, \
         predecessor_serial"
    };
}

impl Store {
    /// Enrollment events, newest first.
    pub async fn recent_events(&self, limit: i64) -> Result<Vec<EnrollmentEvent>, StoreError> {
        let rows = sqlx::query(concat!(
            "SELECT ",
            event_columns!(),
            " FROM enrollment_events ORDER BY id DESC LIMIT $1"
        ))
        .bind(limit)
        .fetch_all(self.db()?)
        .await?;
        rows.iter()
            .map(|r| event_from_row(r).map(|(_, e)| e))
            .collect()
    }

    /// A page of enrollment events, newest first, with their ids.
    pub async fn events_page(
        &self,
        query: &EventQuery,
    ) -> Result<Vec<(i64, EnrollmentEvent)>, StoreError> {
        let rows = sqlx::query(concat!(
            "SELECT ",
            event_columns!(),
            " FROM enrollment_events WHERE id < $1 \
             AND ($2 = '' OR requester = $2) AND ($3 = '' OR operation = $3) \
             AND ($4 = '' OR outcome = $4) AND ($5 = '' OR reason = $5) \
             AND ($6 = '' OR device_identity = $6) AND ($7 = '' OR serial = $7) \
             AND ($8 = '' OR profile = $8) AND occurred_at >= $9 AND occurred_at < $10 \
             ORDER BY id DESC LIMIT $11"
        ))
        .bind(query.before_id.unwrap_or(i64::MAX))
        .bind(query.requester.clone().unwrap_or_default())
        .bind(query.operation.clone().unwrap_or_default())
        .bind(query.outcome.map(EventOutcome::as_str).unwrap_or_default())
        .bind(query.reason.clone().unwrap_or_default())
        .bind(query.device_identity.clone().unwrap_or_default())
        .bind(
            query
                .serial
                .as_ref()
                .map(Serial::as_str)
                .unwrap_or_default(),
        )
        .bind(query.profile.clone().unwrap_or_default())
        .bind(query.since.unwrap_or(i64::MIN))
        .bind(query.until.unwrap_or(i64::MAX))
        .bind(query.limit)
        .fetch_all(self.db()?)
        .await?;
        rows.iter().map(event_from_row).collect()
    }
}

fn event_from_row(r: &sqlx::any::AnyRow) -> Result<(i64, EnrollmentEvent), StoreError> {
    Ok((
        r.try_get("id")?,
        EnrollmentEvent {
            occurred_at: r.try_get("occurred_at")?,
            requester: r.try_get("requester")?,
            operation: r.try_get("operation")?,
            profile: r.try_get("profile")?,
            outcome: word(r, "outcome")?,
            reason: r.try_get("reason")?,
            detail: r.try_get("detail")?,
            serial: optional_serial(r, "serial")?,
            csr_sha256: r.try_get("csr_sha256")?,
            peer: r.try_get("peer")?,
            evidence_sha256: r.try_get("evidence_sha256")?,
            attestation_format: r.try_get("attestation_format")?,
            vendor: r.try_get("vendor")?,
            device_identity: r.try_get("device_identity")?,
            predecessor_serial: optional_serial(r, "predecessor_serial")?,
        },
    ))
}
