//! The one way a certificate is revoked: by an operator (the operator API, `attestca revoke`,
//! through [`crate::registry`]), by a renewal that supersedes its predecessor at once
//! (`revoke_predecessor_after_secs = 0`), or by housekeeping when a renewed certificate's
//! overlap has passed.
//!
//! Every path writes its audit event in the transaction that revokes, so the audit trail is
//! complete whoever revoked: there is no revocation without its audit row and no audit row for
//! a revocation that did not commit. Operators are named as they authenticated (`cert:<CN>`,
//! `token:<name>`, `cli:<user>`); the CA's own rules by a system actor ([`SystemRule`]).
//! Operator attempts are audited whether done or refused (an unknown serial, a certificate
//! already revoked); a system rule is audited when it revokes: a rule that finds nothing to
//! do (housekeeping, every minute) is not an event.
//!
//! Reasons are typed ([`RevocationReason`]) and stored by their RFC 5280 names; the revocation
//! counter that tells CRL publishers and OCSP caches to look again is moved by the database's
//! triggers (migration 0009) in the same transaction, whichever path revoked.

use attestca_core::reason::Reason;
use attestca_core::record::AuditOutcome;
use attestca_core::revocation::RevocationReason;
use attestca_core::serial::Serial;

use crate::store::{AuditEvent, RevocationOutcome, Store, StoreError};

/// The audit action of revoking one certificate.
pub const ACTION_REVOKE_CERTIFICATE: &str = "certificate.revoke";
/// The audit action of revoking every active certificate of a device.
pub const ACTION_REVOKE_DEVICE: &str = "device.revoke";

/// Who acts, as audit events name them.
#[derive(Clone, Debug)]
pub struct Actor {
    /// `cert:<CN>`, `token:<name>` or `cli:<user>` for operators; `system:<rule>` for the
    /// CA's own rules ([`SystemRule`]).
    pub id: String,
    /// The client address, when the action came over the network.
    pub peer: Option<String>,
}

impl Actor {
    /// The CA itself, acting by `rule`.
    pub fn system(rule: SystemRule) -> Self {
        Self {
            id: rule.actor_id().to_owned(),
            peer: None,
        }
    }
}

/// The CA's own revocation rules, each audited under its own actor.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SystemRule {
    /// A renewal revoked its predecessor as superseded when issued (the profile's
    /// `revoke_predecessor_after_secs = 0`).
    Renewal,
    /// Housekeeping revoked a renewed certificate as superseded once the profile's overlap
    /// (`revoke_predecessor_after_secs`) had passed.
    OverlapExpiry,
}

impl SystemRule {
    /// The actor named in audit events (`operator` column, `?operator=` filter).
    pub fn actor_id(self) -> &'static str {
        match self {
            SystemRule::Renewal => "system:renewal",
            SystemRule::OverlapExpiry => "system:overlap-expiry",
        }
    }
}

/// Revokes certificates, auditing each revocation in the transaction that makes it.
#[derive(Clone)]
pub struct Revocations {
    store: Store,
}

impl Revocations {
    pub fn new(store: Store) -> Self {
        Self { store }
    }

    /// An operator revokes one certificate (`serial`: lower-case hex, as stored). Audited as
    /// `certificate.revoke`, done or refused (`certificate.not_found`,
    /// `certificate.already_revoked`).
    pub async fn revoke_certificate(
        &self,
        actor: &Actor,
        serial: &Serial,
        reason: RevocationReason,
    ) -> Result<RevocationOutcome, StoreError> {
        let at = now();
        let mut tx = self.store.begin().await?;
        let outcome = tx.revoke_certificate(serial, reason, at).await?;
        let (audit_outcome, audit_reason) = match outcome {
            RevocationOutcome::Revoked => (AuditOutcome::Done, reason.as_str()),
            RevocationOutcome::NotFound => {
                (AuditOutcome::Refused, Reason::CertificateNotFound.as_str())
            }
            RevocationOutcome::AlreadyRevoked => (
                AuditOutcome::Refused,
                Reason::CertificateAlreadyRevoked.as_str(),
            ),
        };
        tx.record_audit(&AuditEvent {
            occurred_at: at,
            operator: actor.id.clone(),
            action: ACTION_REVOKE_CERTIFICATE.into(),
            target: serial.to_string(),
            outcome: audit_outcome,
            reason: audit_reason.into(),
            detail: String::new(),
            peer: actor.peer.clone(),
            id: 0,
        })
        .await?;
        tx.commit().await?;
        Ok(outcome)
    }

    /// An operator revokes every active certificate of a device identity; returns their
    /// serials, sorted (none: nothing was revoked, and the event says refused,
    /// `device.no_active_certificates`). Audited as `device.revoke`, the serials in the
    /// event's detail.
    pub async fn revoke_device(
        &self,
        actor: &Actor,
        device_identity: &str,
        reason: RevocationReason,
    ) -> Result<Vec<Serial>, StoreError> {
        let at = now();
        let mut tx = self.store.begin().await?;
        let serials = tx.revoke_device(device_identity, reason, at).await?;
        let (outcome, audit_reason, detail) = if serials.is_empty() {
            (
                AuditOutcome::Refused,
                Reason::DeviceNoActiveCertificates.as_str(),
                String::new(),
            )
        } else {
            (
                AuditOutcome::Done,
                reason.as_str(),
                space_separated(&serials),
            )
        };
        let event = AuditEvent {
            id: 0,
            occurred_at: at,
            operator: actor.id.clone(),
            action: ACTION_REVOKE_DEVICE.into(),
            target: device_identity.into(),
            outcome,
            reason: audit_reason.into(),
            detail,
            peer: actor.peer.clone(),
        };
        tx.record_audit(&event).await?;
        tx.commit().await?;
        Ok(serials)
    }

    /// A renewal supersedes its predecessor at once: revokes `predecessor` (reason
    /// `superseded`, at `at`) if it is still active, audited as `certificate.revoke` by
    /// `system:renewal` with `renewed by <successor>` in the detail. Returns whether it
    /// revoked (a predecessor revoked meanwhile is left as it is, and not audited again).
    pub async fn supersede_renewed(
        &self,
        predecessor: &Serial,
        successor: &Serial,
        at: i64,
    ) -> Result<bool, StoreError> {
        let reason = RevocationReason::Superseded;
        let mut tx = self.store.begin().await?;
        if tx.revoke_certificate(predecessor, reason, at).await? != RevocationOutcome::Revoked {
            // Nothing written: the transaction rolls back when dropped.
            return Ok(false);
        }
        tx.record_audit(&system_event(
            SystemRule::Renewal,
            predecessor,
            reason,
            format!("renewed by {successor}"),
            at,
        ))
        .await?;
        tx.commit().await?;
        Ok(true)
    }

    /// Housekeeping: revokes (reason `superseded`, at `now`) the active certificates of
    /// `profile` renewed at or before `renewed_before`, each audited as `certificate.revoke`
    /// by `system:overlap-expiry`. Returns the serials revoked, sorted. Idempotent, so every
    /// instance sharing the database may run it: a certificate is revoked, and audited, once.
    pub async fn expire_overlaps(
        &self,
        profile: &str,
        renewed_before: i64,
        now: i64,
    ) -> Result<Vec<Serial>, StoreError> {
        let reason = RevocationReason::Superseded;
        let mut tx = self.store.begin().await?;
        let serials = tx.revoke_superseded(profile, renewed_before, now).await?;
        for serial in &serials {
            tx.record_audit(&system_event(
                SystemRule::OverlapExpiry,
                serial,
                reason,
                format!("profile {profile}: renewed at or before {renewed_before}"),
                now,
            ))
            .await?;
        }
        tx.commit().await?;
        Ok(serials)
    }
}

fn space_separated(serials: &[Serial]) -> String {
    let texts: Vec<&str> = serials.iter().map(Serial::as_str).collect();
    texts.join(" ")
}

/// The audit event of a revocation made by one of the CA's own rules.
fn system_event(
    rule: SystemRule,
    serial: &Serial,
    reason: RevocationReason,
    detail: String,
    at: i64,
) -> AuditEvent {
    let actor = Actor::system(rule);
    AuditEvent {
        occurred_at: at,
        operator: actor.id,
        action: ACTION_REVOKE_CERTIFICATE.into(),
        target: serial.to_string(),
        outcome: AuditOutcome::Done,
        reason: reason.as_str().into(),
        detail,
        peer: actor.peer,
        id: 0,
    }
}

use attestca_core::time::unix_now as now;

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::AuditQuery;

    async fn sqlite_store(dir: &std::path::Path) -> Store {
        let url = format!("sqlite://{}", dir.join("ca.db").display());
        Store::connect(&secrecy::SecretString::from(url), 2)
            .await
            .expect("sqlite store")
    }

    fn s(text: &str) -> Serial {
        Serial::parse(text).expect("serial")
    }

    async fn insert(
        store: &Store,
        serial: &str,
        device: Option<&str>,
        predecessor: Option<&str>,
        issued_at: i64,
    ) {
        sqlx::query(
            "INSERT INTO certificates (serial, der, issuer_key_id, subject, spki_sha256, profile, \
             not_before, not_after, requester, device_identity, csr_sha256, issued_at, \
             predecessor_serial) VALUES ($1, $2, $3, 'CN=t', $2, 'default', 0, 4000000000, \
             'tls:rig', $4, $2, $5, $6)",
        )
        .bind(serial)
        .bind(serial.as_bytes().to_vec())
        .bind(vec![0xa1u8; 20])
        .bind(device)
        .bind(issued_at)
        .bind(predecessor)
        .execute(store.pool())
        .await
        .expect("insert certificate");
    }

    /// `(operator, action, target, outcome, reason, detail)` of an audit event.
    type AuditRow = (String, String, String, String, String, String);

    /// Every audit event, oldest first.
    async fn audit_trail(store: &Store) -> Vec<AuditRow> {
        let mut events = store
            .audit_page(&AuditQuery {
                limit: 100,
                ..AuditQuery::default()
            })
            .await
            .expect("audit events");
        events.reverse();
        events
            .into_iter()
            .map(|e| {
                (
                    e.operator,
                    e.action,
                    e.target,
                    e.outcome.to_string(),
                    e.reason,
                    e.detail,
                )
            })
            .collect()
    }

    fn row(
        operator: &str,
        action: &str,
        target: &str,
        outcome: &str,
        reason: &str,
        detail: &str,
    ) -> AuditRow {
        (
            operator.into(),
            action.into(),
            target.into(),
            outcome.into(),
            reason.into(),
            detail.into(),
        )
    }

    async fn stored_reason(store: &Store, serial: &str) -> (String, Option<String>) {
        let record = store
            .certificate(&s(serial))
            .await
            .expect("look-up")
            .expect("certificate");
        (record.status.to_string(), record.revocation_reason)
    }

    #[tokio::test]
    async fn every_path_revokes_and_audits_in_one_transaction() {
        let tmp = tempfile::tempdir().expect("temp dir");
        let store = sqlite_store(tmp.path()).await;
        insert(&store, "0a", Some("device-1"), None, 10).await;
        insert(&store, "0b", Some("device-1"), None, 10).await;
        insert(&store, "0c", None, None, 10).await;
        insert(&store, "0d", None, None, 10).await;
        insert(&store, "0e", None, Some("0d"), 100).await;
        let issuer = vec![0xa1u8; 20];
        let counter = store.revocation_counter(&issuer).await.expect("counter");
        let revocations = Revocations::new(store.clone());
        let operator = Actor {
            id: "cert:alice".into(),
            peer: Some("192.0.2.1".into()),
        };

        // Operator: one certificate; refusals are audited too.
        for (serial, expected) in [
            ("0a", RevocationOutcome::Revoked),
            ("0a", RevocationOutcome::AlreadyRevoked),
            ("ff", RevocationOutcome::NotFound),
        ] {
            let outcome = revocations
                .revoke_certificate(&operator, &s(serial), RevocationReason::KeyCompromise)
                .await
                .expect("revoke");
            assert_eq!(outcome, expected, "{serial}");
        }
        assert_eq!(
            stored_reason(&store, "0a").await,
            ("revoked".into(), Some("keyCompromise".into())),
            "stored by its RFC 5280 name"
        );
        let after_operator = store.revocation_counter(&issuer).await.expect("counter");
        assert!(after_operator > counter, "the CRL counter moved");

        // Operator: a device (the certificate already revoked is left out).
        let serials = revocations
            .revoke_device(
                &operator,
                "device-1",
                RevocationReason::CessationOfOperation,
            )
            .await
            .expect("revoke device");
        assert_eq!(serials, ["0b"]);
        let none = revocations
            .revoke_device(
                &operator,
                "device-1",
                RevocationReason::CessationOfOperation,
            )
            .await
            .expect("revoke device again");
        assert!(none.is_empty());

        // Renewal: audited once, when it revokes.
        assert!(
            revocations
                .supersede_renewed(&s("0c"), &s("1c"), 50)
                .await
                .expect("supersede")
        );
        assert!(
            !revocations
                .supersede_renewed(&s("0c"), &s("1c"), 51)
                .await
                .expect("supersede again")
        );
        assert_eq!(
            stored_reason(&store, "0c").await,
            ("revoked".into(), Some("superseded".into()))
        );

        // Overlap expiry: nothing before the overlap has passed, then once.
        assert!(
            revocations
                .expire_overlaps("default", 99, 120)
                .await
                .expect("expire")
                .is_empty()
        );
        assert_eq!(
            revocations
                .expire_overlaps("default", 100, 120)
                .await
                .expect("expire"),
            ["0d"]
        );
        assert!(
            revocations
                .expire_overlaps("default", 100, 180)
                .await
                .expect("expire again")
                .is_empty()
        );
        let record = store
            .certificate(&s("0d"))
            .await
            .expect("look-up")
            .expect("certificate");
        assert_eq!(
            (record.revoked_at, record.revocation_reason.as_deref()),
            (Some(120), Some("superseded"))
        );
        assert!(
            store.revocation_counter(&issuer).await.expect("counter") > after_operator,
            "the CRL counter moved"
        );

        let done = "done";
        let refused = "refused";
        assert_eq!(
            audit_trail(&store).await,
            [
                row(
                    "cert:alice",
                    "certificate.revoke",
                    "0a",
                    done,
                    "keyCompromise",
                    ""
                ),
                row(
                    "cert:alice",
                    "certificate.revoke",
                    "0a",
                    refused,
                    "certificate.already_revoked",
                    ""
                ),
                row(
                    "cert:alice",
                    "certificate.revoke",
                    "ff",
                    refused,
                    "certificate.not_found",
                    ""
                ),
                row(
                    "cert:alice",
                    "device.revoke",
                    "device-1",
                    done,
                    "cessationOfOperation",
                    "0b"
                ),
                row(
                    "cert:alice",
                    "device.revoke",
                    "device-1",
                    refused,
                    "device.no_active_certificates",
                    ""
                ),
                row(
                    "system:renewal",
                    "certificate.revoke",
                    "0c",
                    done,
                    "superseded",
                    "renewed by 1c"
                ),
                row(
                    "system:overlap-expiry",
                    "certificate.revoke",
                    "0d",
                    done,
                    "superseded",
                    "profile default: renewed at or before 100"
                ),
            ]
        );
    }
}
