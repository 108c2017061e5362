//! The operator API's JSON documents, and the RFC 3339 times they carry.

use axum::response::{IntoResponse, Response};
use serde::Serialize;

use attestca_core::reason::Reason;
use attestca_core::record::{AuditOutcome, CertStatus, EventOutcome};
use attestca_core::serial::Serial;

use super::ApiError;
use crate::registry::{CertificateDetail, Page};
use crate::store::{AuditEvent, CertificateRecord, EnrollmentEvent};

/// `{"error": {"code": "...", "message": "..."}}`
#[derive(Serialize)]
pub struct ErrorBody {
    error: ErrorDetail,
}

#[derive(Serialize)]
struct ErrorDetail {
    code: &'static str,
    message: String,
}

impl ErrorBody {
    pub fn new(code: Reason, message: String) -> Self {
        Self {
            error: ErrorDetail {
                code: code.as_str(),
                message,
            },
        }
    }
}

/// `GET /certificates/{serial}/attestation`: the certificate's log entry and its inclusion
/// proof, enough to check offline with the log's verifier key (docs/relying-parties.md).
#[derive(Serialize)]
pub struct LoggedAttestation {
    serial: Serial,
    /// The checkpoint origin (the log's name).
    log: String,
    index: u64,
    tree_size: u64,
    /// The tree's root at `tree_size`, base64 (as in the checkpoint).
    root: String,
    /// The signed checkpoint note the proof is against.
    checkpoint: String,
    /// RFC 9162 §2.1.3 inclusion proof, base64 hashes, leaf to root.
    inclusion_proof: Vec<String>,
    /// The entry's bytes (docs/transparency.md), base64; its leaf hash is SHA-256(0x00 ‖ entry).
    entry: String,
    attestation: LoggedRecord,
}

#[derive(Serialize)]
struct LoggedRecord {
    attested: bool,
    operation: String,
    profile: String,
    requester: String,
    format: String,
    vendor: String,
    device_identity: String,
    /// Lower-case hex; empty when there was no evidence.
    evidence_sha256: String,
    logged_at: String,
}

impl LoggedAttestation {
    pub fn new(
        serial: Serial,
        origin: &str,
        logged: crate::transparency::LoggedCertificate,
    ) -> Self {
        use base64::Engine;
        let b64 = |bytes: &[u8]| base64::engine::general_purpose::STANDARD.encode(bytes);
        let a = logged.entry.attestation;
        Self {
            serial,
            log: origin.to_owned(),
            index: logged.index,
            tree_size: logged.tree_size,
            root: b64(&logged.root),
            checkpoint: logged.checkpoint,
            inclusion_proof: logged.inclusion_proof.iter().map(|h| b64(h)).collect(),
            entry: b64(&logged.entry_bytes),
            attestation: LoggedRecord {
                attested: a.attested,
                operation: a.operation,
                profile: a.profile,
                requester: a.requester,
                format: a.format,
                vendor: a.vendor,
                device_identity: a.device_identity,
                evidence_sha256: hex::encode(&a.evidence_sha256),
                logged_at: rfc3339(logged.entry.logged_at as i64),
            },
        }
    }
}

/// `{"items": [...], "next_cursor": "..." | null}`
#[derive(Serialize)]
struct PageBody<T> {
    items: Vec<T>,
    next_cursor: Option<String>,
}

/// A page as JSON, each item converted by `convert`.
pub fn page<T, J: Serialize>(page: Page<T>, convert: impl Fn(T) -> J) -> Response {
    axum::Json(PageBody {
        items: page.items.into_iter().map(convert).collect(),
        next_cursor: page.next_cursor,
    })
    .into_response()
}

/// A certificate as operators see it.
#[derive(Serialize)]
pub struct Certificate {
    serial: Serial,
    status: CertStatus,
    subject: String,
    subject_alt_names: String,
    profile: String,
    device_identity: Option<String>,
    not_before: String,
    not_after: String,
    issued_at: String,
    requester: String,
    revoked_at: Option<String>,
    revocation_reason: Option<String>,
    predecessor_serial: Option<Serial>,
    /// Only on single-certificate answers.
    #[serde(skip_serializing_if = "Option::is_none")]
    successor_serials: Option<Vec<Serial>>,
    issuer_key_id: String,
    spki_sha256: String,
    csr_sha256: String,
    certificate_pem: String,
}

impl Certificate {
    pub fn from_record(r: CertificateRecord, successors: Option<Vec<Serial>>) -> Self {
        Self {
            certificate_pem: crate::pem::encode("CERTIFICATE", &r.der),
            status: r.status,
            subject: r.subject,
            subject_alt_names: r.sans,
            profile: r.profile,
            device_identity: r.device_identity,
            not_before: rfc3339(r.not_before),
            not_after: rfc3339(r.not_after),
            issued_at: rfc3339(r.issued_at),
            requester: r.requester,
            revoked_at: r.revoked_at.map(rfc3339),
            revocation_reason: r.revocation_reason,
            predecessor_serial: r.predecessor_serial,
            successor_serials: successors,
            issuer_key_id: hex::encode(&r.issuer_key_id),
            spki_sha256: hex::encode(&r.spki_sha256),
            csr_sha256: hex::encode(&r.csr_sha256),
            serial: r.serial,
        }
    }

    pub fn from_detail(detail: CertificateDetail) -> Self {
        Self::from_record(detail.record, Some(detail.successors))
    }
}

/// The answer to a device revocation.
#[derive(Serialize)]
pub struct DeviceRevocation {
    pub device_identity: String,
    pub reason: String,
    pub revoked_serials: Vec<Serial>,
}

/// An enrollment event.
#[derive(Serialize)]
pub struct Event {
    id: i64,
    occurred_at: String,
    requester: Option<String>,
    operation: String,
    profile: String,
    outcome: EventOutcome,
    reason: String,
    detail: String,
    serial: Option<Serial>,
    predecessor_serial: Option<Serial>,
    device_identity: Option<String>,
    vendor: Option<String>,
    attestation_format: Option<String>,
    csr_sha256: Option<String>,
    evidence_sha256: Option<String>,
    peer: Option<String>,
}

impl Event {
    pub fn from_stored((id, e): (i64, EnrollmentEvent)) -> Self {
        Self {
            id,
            occurred_at: rfc3339(e.occurred_at),
            requester: e.requester,
            operation: e.operation,
            profile: e.profile,
            outcome: e.outcome,
            reason: e.reason,
            detail: e.detail,
            serial: e.serial,
            predecessor_serial: e.predecessor_serial,
            device_identity: e.device_identity,
            vendor: e.vendor,
            attestation_format: e.attestation_format,
            csr_sha256: e.csr_sha256.map(hex::encode),
            evidence_sha256: e.evidence_sha256.map(hex::encode),
            peer: e.peer,
        }
    }
}

/// An operator action.
#[derive(Serialize)]
pub struct AuditRecord {
    id: i64,
    occurred_at: String,
    operator: String,
    action: String,
    target: String,
    outcome: AuditOutcome,
    reason: String,
    detail: String,
    peer: Option<String>,
}

impl AuditRecord {
    pub fn from_stored(e: AuditEvent) -> Self {
        Self {
            id: e.id,
            occurred_at: rfc3339(e.occurred_at),
            operator: e.operator,
            action: e.action,
            target: e.target,
            outcome: e.outcome,
            reason: e.reason,
            detail: e.detail,
            peer: e.peer,
        }
    }
}

/// Unix seconds as RFC 3339 UTC (`2026-11-24T06:45:11Z`).
pub fn rfc3339(unix: i64) -> String {
    attestca_core::time::rfc3339(unix)
}

/// A time filter: Unix seconds, or RFC 3339 in UTC (`YYYY-MM-DDTHH:MM:SSZ`).
pub fn parse_time(name: &str, value: Option<&str>) -> Result<Option<i64>, ApiError> {
    let Some(text) = value else {
        return Ok(None);
    };
    if let Ok(unix) = text.parse::<i64>() {
        return Ok(Some(unix));
    }
    attestca_core::time::parse_rfc3339(text)
        .map(Some)
        .ok_or_else(|| {
            ApiError::BadRequest(format!(
                "{name}={text:?}: give Unix seconds or an RFC 3339 UTC time like 2026-11-24T06:45:00Z"
            ))
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_round_trip() {
        assert_eq!(rfc3339(0), "1970-01-01T00:00:00Z");
        assert_eq!(rfc3339(1_795_000_000), "2026-11-18T11:06:40Z");
        assert_eq!(
            parse_time("since", Some("2026-11-18T11:06:40Z")).unwrap(),
            Some(1_795_000_000)
        );
        assert_eq!(
            parse_time("since", Some("1795000000")).unwrap(),
            Some(1_795_000_000)
        );
        assert_eq!(parse_time("since", None).unwrap(), None);
    }

    #[test]
    fn bad_times_are_refused() {
        for text in [
            "yesterday",
            "2026-13-01T00:00:00Z",
            "2026-11-24 06:45:00Z",
            "2026-11-24T06:45:00+01:00",
            "",
        ] {
            assert!(parse_time("since", Some(text)).is_err(), "{text}");
        }
    }
}
