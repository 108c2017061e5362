//! Issued certificates: look-ups for enrollment, renewal and the operator API, the OCSP
//! responder's status queries, retry claims (`issued_requests`), and the revocation writes.
//!
//! Certificates are inserted by the [`super::ledger::Ledger`]. Revocations are written only
//! inside a [`StoreTransaction`], so that `crate::revocation::service::Revocations` records the
//! audit event in the same transaction; each UPDATE moves the issuer's revocation counter
//! through the triggers of migration 0009. The reason is stored by its RFC 5280 name
//! ([`RevocationReason::as_str`]).
//!
//! Both engines take the same SQL (`RETURNING` included: SQLite has it since 3.35).

use sqlx::Row;

use attestca_core::record::CertStatus;
use attestca_core::revocation::RevocationReason;
use attestca_core::serial::Serial;

use super::{Store, StoreError, StoreTransaction, optional_serial, serial, timed, word};

/// A certificate as stored.
#[derive(Clone, Debug)]
pub struct CertificateRecord {
    pub serial: Serial,
    pub der: Vec<u8>,
    pub issuer_key_id: Vec<u8>,
    pub subject: String,
    pub sans: String,
    pub spki_sha256: Vec<u8>,
    pub profile: String,
    pub not_before: i64,
    pub not_after: i64,
    pub status: CertStatus,
    pub revoked_at: Option<i64>,
    pub revocation_reason: Option<String>,
    pub requester: String,
    pub device_identity: Option<String>,
    pub csr_sha256: Vec<u8>,
    pub issued_at: i64,
    /// The certificate this one renewed, if any.
    pub predecessor_serial: Option<Serial>,
}

/// Which certificates to list, newest first.
#[derive(Clone, Debug, Default)]
pub struct CertificateQuery {
    pub device_identity: Option<String>,
    pub status: Option<CertStatus>,
    pub profile: Option<String>,
    /// Continue after this `(issued_at, serial)` (keyset pagination).
    pub before: Option<(i64, Serial)>,
    pub limit: i64,
}

/// What the OCSP responder needs to know of a certificate.
#[derive(Clone, Debug)]
pub struct StatusRecord {
    pub serial: Serial,
    pub issuer_key_id: Vec<u8>,
    pub status: CertStatus,
    pub revoked_at: Option<i64>,
    pub revocation_reason: Option<String>,
    pub not_after: i64,
    pub issued_at: i64,
}

/// The columns of `certificates`, in [`certificate_from_row`] order, as a literal so that
/// queries stay `&'static str` (sqlx refuses runtime-built SQL).
macro_rules! certificate_columns {
    () => {
        "serial, der, issuer_key_id, subject, sans, spki_sha256, profile, not_before, not_after, \
         status, revoked_at, revocation_reason, requester, device_identity, csr_sha256, issued_at, \
         predecessor_serial"
    };
}

/// The columns of `certificates` in [`status_from_row`], as a literal (see above).
macro_rules! status_columns {
    () => {
        "serial, issuer_key_id, status, revoked_at, revocation_reason, not_after, issued_at"
    };
}

impl Store {
    /// The certificate issued to `requester` on `profile` for the CSR with this hash since
    /// `since`, if any.
    pub async fn find_recent_issue(
        &self,
        requester: &str,
        profile: &str,
        csr_sha256: &[u8],
        since: i64,
    ) -> Result<Option<CertificateRecord>, StoreError> {
        let row = timed(
            "find_recent_issue",
            sqlx::query(concat!(
                "SELECT ",
                certificate_columns!(),
                " FROM certificates WHERE serial = (SELECT serial FROM issued_requests \
             WHERE requester = $1 AND profile = $2 AND csr_sha256 = $3 AND issued_at >= $4)"
            ))
            .bind(requester)
            .bind(profile)
            .bind(csr_sha256)
            .bind(since)
            .fetch_optional(self.db()?),
        )
        .await?;
        row.map(|r| certificate_from_row(&r)).transpose()
    }

    /// The certificate with this serial (lower-case hex).
    pub async fn certificate(
        &self,
        serial: &Serial,
    ) -> Result<Option<CertificateRecord>, StoreError> {
        let row = timed(
            "certificate_by_serial",
            sqlx::query(concat!(
                "SELECT ",
                certificate_columns!(),
                " FROM certificates WHERE serial = $1"
            ))
            .bind(serial.as_str())
            .fetch_optional(self.db()?),
        )
        .await?;
        row.map(|r| certificate_from_row(&r)).transpose()
    }

    /// An active, unexpired certificate of this device for a different key, if any: the sign
    /// of a cloned identity.
    pub async fn active_certificate_for_other_key(
        &self,
        device_identity: &str,
        spki_sha256: &[u8],
        now: i64,
    ) -> Result<Option<String>, StoreError> {
        Ok(sqlx::query_scalar(
            "SELECT serial FROM certificates WHERE device_identity = $1 AND status = 'active' \
             AND not_after > $3 AND spki_sha256 <> $2 LIMIT 1",
        )
        .bind(device_identity)
        .bind(spki_sha256)
        .bind(now)
        .fetch_optional(self.db()?)
        .await?)
    }

    /// The serial of an active certificate of this device on `profile`, if any.
    pub async fn active_certificate_of_device(
        &self,
        device_identity: &str,
        profile: &str,
    ) -> Result<Option<Serial>, StoreError> {
        let found: Option<String> = sqlx::query_scalar(
            "SELECT serial FROM certificates WHERE device_identity = $1 AND profile = $2 \
             AND status = 'active' LIMIT 1",
        )
        .bind(device_identity)
        .bind(profile)
        .fetch_optional(self.db()?)
        .await?;
        Ok(found.map(Serial::from_stored))
    }

    /// Forgets retry claims older than `before` (Unix seconds): past the retry window they no
    /// longer decide anything, and the table would otherwise grow with every enrollment.
    pub async fn purge_retry_claims(&self, before: i64) -> Result<u64, StoreError> {
        let done = sqlx::query("DELETE FROM issued_requests WHERE issued_at < $1")
            .bind(before)
            .execute(self.db()?)
            .await?;
        Ok(done.rows_affected())
    }

    /// When the newest renewal of `serial` was issued, if it was renewed.
    pub async fn latest_renewal_of(&self, serial: &Serial) -> Result<Option<i64>, StoreError> {
        Ok(sqlx::query_scalar(
            "SELECT MAX(issued_at) FROM certificates WHERE predecessor_serial = $1",
        )
        .bind(serial.as_str())
        .fetch_one(self.db()?)
        .await?)
    }

    /// A page of certificates, newest first, filtered as `query` says.
    pub async fn certificates_page(
        &self,
        query: &CertificateQuery,
    ) -> Result<Vec<CertificateRecord>, StoreError> {
        let (before_at, before_serial) = query
            .before
            .as_ref()
            .map_or((i64::MAX, ""), |(at, serial)| (*at, serial.as_str()));
        // Two statements so that the by-device listing (the common one) uses its index.
        let statement = match &query.device_identity {
            Some(_) => concat!(
                "SELECT ",
                certificate_columns!(),
                " FROM certificates WHERE device_identity = $1 \
                 AND ($2 = '' OR status = $2) AND ($3 = '' OR profile = $3) \
                 AND (issued_at < $4 OR (issued_at = $4 AND $5 <> '' AND serial < $5)) \
                 ORDER BY issued_at DESC, serial DESC LIMIT $6"
            ),
            None => concat!(
                "SELECT ",
                certificate_columns!(),
                " FROM certificates WHERE $1 = '' \
                 AND ($2 = '' OR status = $2) AND ($3 = '' OR profile = $3) \
                 AND (issued_at < $4 OR (issued_at = $4 AND $5 <> '' AND serial < $5)) \
                 ORDER BY issued_at DESC, serial DESC LIMIT $6"
            ),
        };
        let rows = sqlx::query(statement)
            .bind(query.device_identity.clone().unwrap_or_default())
            .bind(query.status.map(CertStatus::as_str).unwrap_or_default())
            .bind(query.profile.clone().unwrap_or_default())
            .bind(before_at)
            .bind(before_serial)
            .bind(query.limit)
            .fetch_all(self.db()?)
            .await?;
        rows.iter().map(certificate_from_row).collect()
    }

    /// The serials of the certificates that renewed `serial`, oldest first.
    pub async fn successors(&self, serial: &Serial) -> Result<Vec<Serial>, StoreError> {
        let found: Vec<String> = sqlx::query_scalar(
            "SELECT serial FROM certificates WHERE predecessor_serial = $1 ORDER BY issued_at",
        )
        .bind(serial.as_str())
        .fetch_all(self.db()?)
        .await?;
        Ok(found.into_iter().map(Serial::from_stored).collect())
    }

    /// The OCSP facts of the certificate with this serial (lower-case hex).
    pub async fn certificate_status(
        &self,
        serial: &Serial,
    ) -> Result<Option<StatusRecord>, StoreError> {
        let found = self
            .statuses(
                sqlx::query(concat!(
                    "SELECT ",
                    status_columns!(),
                    " FROM certificates WHERE serial = $1"
                ))
                .bind(serial.as_str()),
            )
            .await?;
        Ok(found.into_iter().next())
    }

    /// Up to `limit` certificates of one issuer still valid at `valid_at`, in (issued_at,
    /// serial) order after `after` (keyset paging over `certificates_issued`, so a page reads
    /// only this issuer's rows; `None` starts at the beginning).
    pub async fn certificate_statuses_page(
        &self,
        issuer_key_id: &[u8],
        valid_at: i64,
        after: Option<&StatusRecord>,
        limit: i64,
    ) -> Result<Vec<StatusRecord>, StoreError> {
        let (issued_at, serial) =
            after.map_or((i64::MIN, ""), |a| (a.issued_at, a.serial.as_str()));
        self.statuses(
            sqlx::query(concat!(
                "SELECT ",
                status_columns!(),
                " FROM certificates WHERE issuer_key_id = $1 AND (issued_at, serial) > ($3, $4) \
                 AND not_after > $2 ORDER BY issued_at, serial LIMIT $5"
            ))
            .bind(issuer_key_id)
            .bind(valid_at)
            .bind(issued_at)
            .bind(serial)
            .bind(limit),
        )
        .await
    }

    /// Certificates of one issuer issued, or revoked, at or after `since`.
    pub async fn certificate_status_changes(
        &self,
        issuer_key_id: &[u8],
        since: i64,
    ) -> Result<Vec<StatusRecord>, StoreError> {
        self.statuses(
            sqlx::query(concat!(
                "SELECT ",
                status_columns!(),
                " FROM certificates WHERE issuer_key_id = $1 AND issued_at >= $2 UNION SELECT ",
                status_columns!(),
                " FROM certificates WHERE issuer_key_id = $1 AND status = 'revoked' \
                 AND revoked_at >= $2"
            ))
            .bind(issuer_key_id)
            .bind(since),
        )
        .await
    }

    /// Revoked certificates of one issuer still valid at `valid_at` (the set a CRL lists).
    pub async fn revoked_statuses(
        &self,
        issuer_key_id: &[u8],
        valid_at: i64,
    ) -> Result<Vec<StatusRecord>, StoreError> {
        self.statuses(
            sqlx::query(concat!(
                "SELECT ",
                status_columns!(),
                " FROM certificates WHERE issuer_key_id = $1 AND status = 'revoked' \
                 AND not_after > $2"
            ))
            .bind(issuer_key_id)
            .bind(valid_at),
        )
        .await
    }

    async fn statuses<'q>(
        &self,
        query: sqlx::query::Query<'q, sqlx::Any, sqlx::any::AnyArguments>,
    ) -> Result<Vec<StatusRecord>, StoreError> {
        let rows = query.fetch_all(self.db()?).await?;
        rows.iter().map(status_from_row).collect()
    }

    /// The newest active certificate of `profile` for the key with this SPKI hash, issued by
    /// this issuer and still valid at `valid_at`.
    pub async fn latest_certificate_of_key(
        &self,
        issuer_key_id: &[u8],
        profile: &str,
        spki_sha256: &[u8],
        valid_at: i64,
    ) -> Result<Option<CertificateRecord>, StoreError> {
        let query = sqlx::query(concat!(
            "SELECT ",
            certificate_columns!(),
            " FROM certificates WHERE spki_sha256 = $3 AND issuer_key_id = $1 AND profile = $2 \
             AND status = 'active' AND not_after > $4 ORDER BY not_after DESC LIMIT 1"
        ));
        let row = query
            .bind(issuer_key_id)
            .bind(profile)
            .bind(spki_sha256)
            .bind(valid_at)
            .fetch_optional(self.db()?)
            .await?;
        row.map(|r| certificate_from_row(&r)).transpose()
    }
}

fn certificate_from_row(r: &sqlx::any::AnyRow) -> Result<CertificateRecord, StoreError> {
    Ok(CertificateRecord {
        serial: serial(r, "serial")?,
        der: r.try_get("der")?,
        issuer_key_id: r.try_get("issuer_key_id")?,
        subject: r.try_get("subject")?,
        sans: r.try_get("sans")?,
        spki_sha256: r.try_get("spki_sha256")?,
        profile: r.try_get("profile")?,
        not_before: r.try_get("not_before")?,
        not_after: r.try_get("not_after")?,
        status: word(r, "status")?,
        revoked_at: r.try_get("revoked_at")?,
        revocation_reason: r.try_get("revocation_reason")?,
        requester: r.try_get("requester")?,
        device_identity: r.try_get("device_identity")?,
        csr_sha256: r.try_get("csr_sha256")?,
        issued_at: r.try_get("issued_at")?,
        predecessor_serial: optional_serial(r, "predecessor_serial")?,
    })
}

fn status_from_row(r: &sqlx::any::AnyRow) -> Result<StatusRecord, StoreError> {
    Ok(StatusRecord {
        serial: serial(r, "serial")?,
        issuer_key_id: r.try_get("issuer_key_id")?,
        status: word(r, "status")?,
        revoked_at: r.try_get("revoked_at")?,
        revocation_reason: r.try_get("revocation_reason")?,
        not_after: r.try_get("not_after")?,
        issued_at: r.try_get("issued_at")?,
    })
}

/// What revoking one certificate by serial found.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RevocationOutcome {
    Revoked,
    NotFound,
    AlreadyRevoked,
}

/// Revocation writes: made only inside a transaction, for the audit event that goes with them.
impl StoreTransaction {
    /// Revokes the certificate with this serial if it is active; otherwise says why not.
    pub async fn revoke_certificate(
        &mut self,
        serial: &Serial,
        reason: RevocationReason,
        at: i64,
    ) -> Result<RevocationOutcome, StoreError> {
        let done = sqlx::query(
            "UPDATE certificates SET status = 'revoked', revoked_at = $2, revocation_reason = $3 \
             WHERE serial = $1 AND status = 'active'",
        )
        .bind(serial.as_str())
        .bind(at)
        .bind(reason.as_str())
        .execute(&mut *self.tx)
        .await?;
        if done.rows_affected() == 1 {
            return Ok(RevocationOutcome::Revoked);
        }
        let status: Option<String> =
            sqlx::query_scalar("SELECT status FROM certificates WHERE serial = $1")
                .bind(serial.as_str())
                .fetch_optional(&mut *self.tx)
                .await?;
        Ok(match status {
            None => RevocationOutcome::NotFound,
            Some(_) => RevocationOutcome::AlreadyRevoked,
        })
    }

    /// Revokes every active certificate of a device identity; returns their serials, sorted.
    pub async fn revoke_device(
        &mut self,
        device_identity: &str,
        reason: RevocationReason,
        at: i64,
    ) -> Result<Vec<Serial>, StoreError> {
        let mut serials: Vec<String> = sqlx::query_scalar(
            "UPDATE certificates SET status = 'revoked', revoked_at = $2, revocation_reason = $3 \
             WHERE device_identity = $1 AND status = 'active' RETURNING serial",
        )
        .bind(device_identity)
        .bind(at)
        .bind(reason.as_str())
        .fetch_all(&mut *self.tx)
        .await?;
        serials.sort();
        Ok(serials.into_iter().map(Serial::from_stored).collect())
    }

    /// Revokes (reason `superseded`) the active certificates of `profile` that were renewed
    /// at or before `renewed_before`; returns their serials, sorted. Idempotent, so every
    /// instance may run it: a certificate another instance revoked meanwhile is no longer
    /// active, and is not returned here.
    pub async fn revoke_superseded(
        &mut self,
        profile: &str,
        renewed_before: i64,
        at: i64,
    ) -> Result<Vec<Serial>, StoreError> {
        let mut serials: Vec<String> = sqlx::query_scalar(
            "UPDATE certificates SET status = 'revoked', revoked_at = $3, \
             revocation_reason = $4 \
             WHERE status = 'active' AND profile = $1 AND serial IN \
             (SELECT predecessor_serial FROM certificates \
              WHERE predecessor_serial IS NOT NULL AND issued_at <= $2) RETURNING serial",
        )
        .bind(profile)
        .bind(renewed_before)
        .bind(at)
        .bind(RevocationReason::Superseded.as_str())
        .fetch_all(&mut *self.tx)
        .await?;
        serials.sort();
        Ok(serials.into_iter().map(Serial::from_stored).collect())
    }
}
