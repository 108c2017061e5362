//! `/attestation-key/v1/challenge` and `/attestation-key/v1/certificate`: the wire of
//! attestation-key certification (docs/attestation.md), beside EST on the same listener and
//! with the same rig authentication. Thin: JSON in, JSON out, refusals as EST answers them.

use std::sync::Arc;

use axum::body::Body;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use serde::Deserialize;

use super::{EstState, basic_credentials, is_content_type, read_limited, refusal_response, text};
use crate::access::PresentedCredentials;
use crate::enrollment::EnrollRequest;
use crate::enrollment::attestation_key::AttestationKeyRequest;
use crate::http::body::{BodyDeadline, Incoming};
use crate::http::{ConnectionInfo, RequestDeadline};
use attestca_core::reason::Reason;

/// The body of both requests (`secret` only in the second).
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct AttestationKeyBody {
    ek_certificate: String,
    ak_public: String,
    #[serde(default)]
    secret: Option<String>,
}

/// Both requests: `CERTIFICATE` false for the challenge, true for the certificate.
pub(super) async fn exchange<const CERTIFICATE: bool>(
    State(state): State<Arc<EstState>>,
    connection: Option<axum::Extension<ConnectionInfo>>,
    deadline: Option<axum::Extension<RequestDeadline>>,
    body_deadline: BodyDeadline,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let (request, secret) =
        match read(&state, connection, deadline, (headers, body, body_deadline)).await {
            Ok(parts) => parts,
            Err(response) => return response,
        };
    if !CERTIFICATE {
        return match state.enrollment.attestation_key_challenge(&request).await {
            Ok(challenge) => json(serde_json::json!({
                "credential_blob": STANDARD.encode(challenge.credential_blob),
                "encrypted_secret": STANDARD.encode(challenge.encrypted_secret),
                "expires_in": challenge.expires_in,
            })),
            Err(refusal) => refusal_response(&refusal),
        };
    }
    let Some(secret) = secret else {
        return bad_request("the certificate request carries the recovered secret (\"secret\")");
    };
    match state
        .enrollment
        .attestation_key_certificate(&request, &secret)
        .await
    {
        Ok(issued) => json(serde_json::json!({
            "certificate": STANDARD.encode(&issued.certificate_der),
            "chain": state
                .enrollment
                .ca()
                .chain_der()
                .iter()
                .map(|c| STANDARD.encode(c))
                .collect::<Vec<_>>(),
        })),
        Err(refusal) => refusal_response(&refusal),
    }
}

/// The request, decoded, and the secret when it carries one.
async fn read(
    state: &EstState,
    connection: Option<axum::Extension<ConnectionInfo>>,
    deadline: Option<axum::Extension<RequestDeadline>>,
    (headers, body, body_deadline): Incoming,
) -> Result<(AttestationKeyRequest, Option<Vec<u8>>), Response> {
    if !is_content_type(&headers, "application/json") {
        return Err(text(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            format!(
                "{}: this operation takes Content-Type: application/json",
                Reason::RequestContentType
            ),
        ));
    }
    let body = read_limited(body, &headers, state.max_request_bytes, body_deadline)
        .await
        .map_err(|(status, code, detail)| text(status, format!("{code}: {detail}")))?;
    let parsed: AttestationKeyBody = serde_json::from_slice(&body)
        .map_err(|e| bad_request(&format!("not the attestation-key JSON: {e}")))?;
    let decoded = (|| {
        Ok::<_, String>((
            base64_field("ek_certificate", &parsed.ek_certificate)?,
            base64_field("ak_public", &parsed.ak_public)?,
            parsed
                .secret
                .as_deref()
                .map(|s| base64_field("secret", s))
                .transpose()?,
        ))
    })();
    let (endorsement_der, ak_public_area, secret) = decoded.map_err(|e| bad_request(&e))?;
    let connection = connection.map(|c| c.0).unwrap_or_default();
    let request = EnrollRequest {
        label: None,
        credentials: PresentedCredentials {
            peer_certificate: connection.peer_certificate,
            basic: basic_credentials(&headers),
        },
        csr_der: Vec::new(),
        peer: connection.peer_addr.map(|a| a.to_string()),
        deadline: deadline.map(|d| d.0.0),
    };
    Ok((
        AttestationKeyRequest {
            request,
            endorsement_der,
            ak_public_area,
        },
        secret,
    ))
}

fn base64_field(field: &str, value: &str) -> Result<Vec<u8>, String> {
    STANDARD
        .decode(value)
        .map_err(|e| format!("{field} is not base64: {e}"))
}

fn bad_request(detail: &str) -> Response {
    text(
        StatusCode::BAD_REQUEST,
        format!("{}: {detail}", Reason::AkRequest),
    )
}

fn json(value: serde_json::Value) -> Response {
    (
        StatusCode::OK,
        [(header::CONTENT_TYPE, "application/json")],
        value.to_string(),
    )
        .into_response()
}
