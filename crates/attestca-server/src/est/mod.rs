//! The EST wire protocol: routes, request decoding and response encoding.
//!
//! Handlers are thin: they turn HTTP into an [`EnrollRequest`], call the registration
//! authority, and turn its answer into EST's media types. Refusals are mapped to status codes
//! in exactly one place, [`refusal_response`].

pub use attestca_core::est_codec as codec;

use std::sync::Arc;

mod attestation_key;

use attestca_core::reason::Reason;
use axum::Router;
use axum::body::Body;
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use base64::Engine;
use secrecy::SecretString;

use crate::access::PresentedCredentials;
use crate::enrollment::{EnrollRequest, EnrollmentError, EnrollmentService, RefusalKind};
use crate::http::body::{BodyDeadline, BodyError, Incoming};
use crate::http::{ConnectionInfo, RequestDeadline};
use crate::issuance::IssuanceProfile;

/// EST operation names; a profile label may not be one of them.
pub const OPERATIONS: &[&str] = &[
    "cacerts",
    "simpleenroll",
    "simplereenroll",
    "csrattrs",
    "serverkeygen",
    "fullcmc",
    "nonce",
];

const PKCS7_CERTS_ONLY: &str = "application/pkcs7-mime; smime-type=certs-only";
const PKCS7: &str = "application/pkcs7-mime";
const CSRATTRS: &str = "application/csrattrs";
const REALM: &str = "Basic realm=\"attestca EST\", charset=\"UTF-8\"";

/// Shared state of the EST routes.
pub struct EstState {
    enrollment: Arc<EnrollmentService>,
    max_request_bytes: usize,
    /// The cacerts response body, encoded once.
    cacerts: Bytes,
}

impl EstState {
    /// Prepares the state; fails if the CA chain cannot be encoded.
    pub fn new(
        enrollment: Arc<EnrollmentService>,
        max_request_bytes: usize,
    ) -> Result<Self, der::Error> {
        let der = codec::certs_only(enrollment.ca().chain_der())?;
        Ok(Self {
            max_request_bytes,
            cacerts: Bytes::from(codec::encode_body(&der)),
            enrollment,
        })
    }
}

/// The EST routes under `/.well-known/est/`, with and without a label.
pub fn router(state: Arc<EstState>) -> Router {
    Router::new()
        .route("/.well-known/est/cacerts", get(cacerts))
        .route("/.well-known/est/{label}/cacerts", get(cacerts))
        .route("/.well-known/est/csrattrs", get(csrattrs))
        .route("/.well-known/est/{label}/csrattrs", get(csrattrs))
        .route("/.well-known/est/nonce", get(nonce).post(nonce))
        .route("/.well-known/est/{label}/nonce", get(nonce).post(nonce))
        .route("/.well-known/est/simplereenroll", post(simplereenroll))
        .route(
            "/.well-known/est/{label}/simplereenroll",
            post(simplereenroll),
        )
        .route("/.well-known/est/simpleenroll", post(simpleenroll))
        .route("/.well-known/est/{label}/simpleenroll", post(simpleenroll))
        .route(
            "/attestation-key/v1/challenge",
            post(attestation_key::exchange::<false>),
        )
        .route(
            "/attestation-key/v1/certificate",
            post(attestation_key::exchange::<true>),
        )
        .fallback(not_found)
        .with_state(state)
}

fn text(status: StatusCode, message: impl Into<String>) -> Response {
    let mut body = message.into();
    body.push('\n');
    (
        status,
        [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
        body,
    )
        .into_response()
}

fn base64_response(content_type: &'static str, body: impl Into<Bytes>) -> Response {
    (
        StatusCode::OK,
        [
            (header::CONTENT_TYPE, content_type),
            // Deprecated by RFC 8951 but still expected by deployed clients.
            (
                header::HeaderName::from_static("content-transfer-encoding"),
                "base64",
            ),
        ],
        body.into(),
    )
        .into_response()
}

async fn not_found() -> Response {
    text(StatusCode::NOT_FOUND, "no such EST resource")
}

fn unknown_label(label: &str) -> Response {
    text(
        StatusCode::NOT_FOUND,
        format!("profile.unknown: no issuance profile is labelled {label:?}"),
    )
}

/// The label of a labelled EST path, or `None`.
type Label = Option<Path<String>>;

async fn cacerts(State(state): State<Arc<EstState>>, label: Label) -> Response {
    if let Some(Path(label)) = label
        && state.enrollment.profile(Some(&label)).is_none()
    {
        return unknown_label(&label);
    }
    base64_response(PKCS7, state.cacerts.clone())
}

async fn csrattrs(State(state): State<Arc<EstState>>, label: Label) -> Response {
    let label = label.map(|Path(l)| l);
    match state.enrollment.profile(label.as_deref()) {
        Some(profile) => csrattrs_for(profile),
        None => unknown_label(label.as_deref().unwrap_or(crate::config::DEFAULT_PROFILE)),
    }
}

/// CSR attributes the profile asks for, as its registration-authority policy states them
/// ([`attestca_core::policy::EnrollmentPolicy::csr_attributes`]: the attestation OID when
/// evidence is required; with exactly one EC curve, that curve as an id-ecPublicKey attribute,
/// RFC 8951 §4, and its hash).
fn csrattrs_for(profile: &IssuanceProfile) -> Response {
    match profile.policy.csr_attributes() {
        Ok(der) => base64_response(CSRATTRS, codec::encode_body(&der)),
        Err(e) => text(
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("csrattrs encoding: {e}"),
        ),
    }
}

/// The two CSR-carrying operations.
#[derive(Clone, Copy)]
enum CsrOperation {
    Enroll,
    Reenroll,
}

/// What a CSR-carrying request brings besides the state.
struct CsrRequestParts {
    label: Label,
    connection: Option<axum::Extension<ConnectionInfo>>,
    /// When the request deadline ends the request: the registration authority stops before.
    deadline: Option<axum::Extension<RequestDeadline>>,
    incoming: Incoming,
}

async fn simpleenroll(
    State(state): State<Arc<EstState>>,
    label: Label,
    connection: Option<axum::Extension<ConnectionInfo>>,
    deadline: Option<axum::Extension<RequestDeadline>>,
    body_deadline: BodyDeadline,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let parts = CsrRequestParts {
        label,
        connection,
        deadline,
        incoming: (headers, body, body_deadline),
    };
    csr_operation(CsrOperation::Enroll, state, parts).await
}

async fn simplereenroll(
    State(state): State<Arc<EstState>>,
    label: Label,
    connection: Option<axum::Extension<ConnectionInfo>>,
    deadline: Option<axum::Extension<RequestDeadline>>,
    body_deadline: BodyDeadline,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let parts = CsrRequestParts {
        label,
        connection,
        deadline,
        incoming: (headers, body, body_deadline),
    };
    csr_operation(CsrOperation::Reenroll, state, parts).await
}

async fn csr_operation(
    operation: CsrOperation,
    state: Arc<EstState>,
    parts: CsrRequestParts,
) -> Response {
    let CsrRequestParts {
        label,
        connection,
        deadline,
        incoming,
    } = parts;
    let label = label.map(|Path(l)| l);
    let (csr_der, credentials, peer) =
        match read_csr(&state, label.as_deref(), connection, incoming).await {
            Ok(parts) => parts,
            Err(response) => return response,
        };
    let request = EnrollRequest {
        label,
        credentials,
        csr_der,
        peer,
        deadline: deadline.map(|d| d.0.0),
    };
    certificate_response(match operation {
        CsrOperation::Enroll => state.enrollment.enroll(request).await,
        CsrOperation::Reenroll => state.enrollment.reenroll(request).await,
    })
}

/// The answer to an enrollment: the certificate as certs-only CMS, or the refusal.
fn certificate_response(result: Result<crate::enrollment::Enrolled, EnrollmentError>) -> Response {
    match result {
        Ok(enrolled) => match codec::certs_only(&[enrolled.certificate_der]) {
            Ok(der) => base64_response(PKCS7_CERTS_ONLY, codec::encode_body(&der)),
            Err(e) => text(StatusCode::INTERNAL_SERVER_ERROR, format!("encoding: {e}")),
        },
        Err(refusal) => refusal_response(&refusal),
    }
}

/// Checks the label and media type, reads and decodes the CSR, and gathers the credentials;
/// a refusal here is answered (and recorded) at once.
async fn read_csr(
    state: &EstState,
    label: Option<&str>,
    connection: Option<axum::Extension<ConnectionInfo>>,
    (headers, body, deadline): Incoming,
) -> Result<(Vec<u8>, PresentedCredentials, Option<String>), Response> {
    if let Some(l) = label
        && state.enrollment.profile(Some(l)).is_none()
    {
        return Err(unknown_label(l));
    }
    let connection = connection.map(|c| c.0).unwrap_or_default();
    let credentials = PresentedCredentials {
        peer_certificate: connection.peer_certificate,
        basic: basic_credentials(&headers),
    };
    let peer = connection.peer_addr.map(|a| a.to_string());
    let decoded = if !is_content_type(&headers, "application/pkcs10") {
        Err((
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            Reason::RequestContentType,
            "this operation takes Content-Type: application/pkcs10 (base64 of a DER CSR)"
                .to_owned(),
        ))
    } else {
        match read_limited(body, &headers, state.max_request_bytes, deadline).await {
            Err(refusal) => Err(refusal),
            Ok(body) => codec::decode_body(&body)
                .map_err(|reason| (StatusCode::BAD_REQUEST, Reason::RequestEncoding, reason)),
        }
    };
    match decoded {
        Ok(der) => Ok((der, credentials, peer)),
        Err((status, code, detail)) => {
            state
                .enrollment
                .record_undecodable(label, &credentials, peer, code, &detail)
                .await;
            Err(text(status, format!("{code}: {detail}")))
        }
    }
}

const FRESHNESS_JSON: &str = "application/est-attestation-freshness+json";
/// Nonce length when the request does not ask for one.
const DEFAULT_NONCE_LEN: usize = 32;

/// The optional body of a nonce request (draft-ietf-lamps-attestation-freshness).
#[derive(serde::Deserialize)]
struct NonceRequest {
    len: Option<usize>,
    #[serde(rename = "reqTypeInfo")]
    #[allow(dead_code)]
    req_type_info: Option<serde_json::Value>,
}

async fn nonce(
    State(state): State<Arc<EstState>>,
    label: Label,
    connection: Option<axum::Extension<ConnectionInfo>>,
    deadline: BodyDeadline,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let label = label.map(|Path(l)| l);
    issue_nonce(
        state,
        label,
        connection.map(|c| c.0),
        (headers, body, deadline),
    )
    .await
}

async fn issue_nonce(
    state: Arc<EstState>,
    label: Option<String>,
    connection: Option<ConnectionInfo>,
    (headers, body, deadline): Incoming,
) -> Response {
    let body = match read_limited(body, &headers, 4096, deadline).await {
        Ok(b) => b,
        Err((status, code, detail)) => return text(status, format!("{code}: {detail}")),
    };
    let requested = if body.iter().all(u8::is_ascii_whitespace) {
        None
    } else {
        match serde_json::from_slice::<NonceRequest>(&body) {
            Ok(r) => r.len,
            Err(e) => {
                return text(
                    StatusCode::BAD_REQUEST,
                    format!("nonce.request: not a freshness request: {e}"),
                );
            }
        }
    };
    let connection = connection.unwrap_or_default();
    let credentials = PresentedCredentials {
        peer_certificate: connection.peer_certificate,
        basic: basic_credentials(&headers),
    };
    match state
        .enrollment
        .issue_nonce(
            label.as_deref(),
            &credentials,
            requested.unwrap_or(DEFAULT_NONCE_LEN),
        )
        .await
    {
        Ok((nonce, expiry)) => {
            let body = serde_json::json!({
                "nonce": base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(nonce),
                "expiry": expiry,
            });
            (
                StatusCode::OK,
                [(header::CONTENT_TYPE, FRESHNESS_JSON)],
                body.to_string(),
            )
                .into_response()
        }
        Err(refusal) => refusal_response(&refusal),
    }
}

/// Maps a registration-authority refusal to HTTP, once for all EST operations.
pub fn refusal_response(refusal: &EnrollmentError) -> Response {
    let status = match refusal.kind() {
        RefusalKind::NotFound => StatusCode::NOT_FOUND,
        RefusalKind::Unauthenticated => StatusCode::UNAUTHORIZED,
        RefusalKind::Forbidden => StatusCode::FORBIDDEN,
        RefusalKind::BadRequest => StatusCode::BAD_REQUEST,
        RefusalKind::Unavailable => StatusCode::SERVICE_UNAVAILABLE,
        RefusalKind::TooManyRequests => StatusCode::TOO_MANY_REQUESTS,
    };
    let mut response = text(status, format!("{}: {refusal}", refusal.reason_code()));
    let headers = response.headers_mut();
    match status {
        StatusCode::UNAUTHORIZED => {
            headers.insert(header::WWW_AUTHENTICATE, HeaderValue::from_static(REALM));
        }
        StatusCode::SERVICE_UNAVAILABLE => {
            headers.insert(header::RETRY_AFTER, HeaderValue::from_static("5"));
        }
        StatusCode::TOO_MANY_REQUESTS => {
            if let EnrollmentError::TooManyRequests {
                retry_after_secs, ..
            } = refusal
                && let Ok(value) = HeaderValue::from_str(&retry_after_secs.max(&1).to_string())
            {
                headers.insert(header::RETRY_AFTER, value);
            }
        }
        _ => {}
    }
    response
}

/// A refusal decided by the wire layer: status, reason code, explanation.
type WireRefusal = (StatusCode, Reason, String);

/// Reads a request body of at most `limit` bytes before the request's body deadline; 413
/// above it, 408 when it stalls (see [`crate::http::body`]).
async fn read_limited(
    body: Body,
    headers: &HeaderMap,
    limit: usize,
    deadline: BodyDeadline,
) -> Result<Bytes, WireRefusal> {
    crate::http::body::read_limited(body, headers, limit, deadline)
        .await
        .map_err(|e| {
            let (status, code) = match &e {
                BodyError::TooLarge { .. } => {
                    (StatusCode::PAYLOAD_TOO_LARGE, Reason::RequestTooLarge)
                }
                BodyError::TimedOut => (StatusCode::REQUEST_TIMEOUT, Reason::RequestTimeout),
                BodyError::Failed(_) => (StatusCode::BAD_REQUEST, Reason::RequestBody),
            };
            (status, code, e.to_string())
        })
}

fn is_content_type(headers: &HeaderMap, expected: &str) -> bool {
    headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .is_some_and(|v| v.trim().eq_ignore_ascii_case(expected))
}

/// `Authorization: Basic` credentials, if present and well-formed. A malformed header is
/// treated as wrong credentials by the caller (it yields a user no account has).
fn basic_credentials(headers: &HeaderMap) -> Option<(String, SecretString)> {
    let value = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, encoded) = value.split_once(' ')?;
    if !scheme.eq_ignore_ascii_case("basic") {
        return None;
    }
    let decoded = base64::engine::general_purpose::STANDARD
        .decode(encoded.trim())
        .ok()
        .and_then(|d| String::from_utf8(d).ok())
        .unwrap_or_default();
    match decoded.split_once(':') {
        Some((user, password)) => Some((user.to_owned(), SecretString::from(password.to_owned()))),
        None => Some((String::new(), SecretString::from(String::new()))),
    }
}
