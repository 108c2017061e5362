//! The operator API under `/api/v1/`: JSON over the EST listener's TLS, for operators only.
//!
//! Handlers are thin: authenticate the operator, turn the request into a [`Registry`] call,
//! turn its answer into JSON. Every failure is a JSON error with a stable `code`, mapped to a
//! status in exactly one place ([`ApiError`]'s `IntoResponse`).

mod json;

use std::sync::Arc;

use axum::Router;
use axum::body::Body;
use axum::extract::rejection::{PathRejection, QueryRejection};
use axum::extract::{FromRequestParts, Path, Query, State};
use axum::http::request::Parts;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde::Deserialize;

use attestca_core::reason::Reason;
use attestca_core::record::{CertStatus, EventOutcome};

use crate::access::operator::{Operator, OperatorAuthError, OperatorAuthenticator};
use crate::http::ConnectionInfo;
use crate::http::body::{BodyDeadline, BodyError, Incoming};
use crate::registry::{Actor, Listing, Registry, RegistryError};
use crate::store::{AuditQuery, CertificateQuery, EventQuery};
use crate::transparency::{IssuanceLog, TransparencyError};
use attestca_core::serial::Serial;

/// Largest request body the API reads (a revocation reason is a few bytes).
const MAX_BODY_BYTES: usize = 16 * 1024;

/// Shared state of the API routes.
pub struct ApiState {
    registry: Registry,
    operators: Arc<OperatorAuthenticator>,
    /// The issuance log, when the CA keeps one (`transparency.enabled`).
    log: Option<Arc<IssuanceLog>>,
}

impl ApiState {
    pub fn new(
        registry: Registry,
        operators: Arc<OperatorAuthenticator>,
        log: Option<Arc<IssuanceLog>>,
    ) -> Self {
        Self {
            registry,
            operators,
            log,
        }
    }
}

/// The routes under `/api/v1/`.
pub fn router(state: Arc<ApiState>) -> Router {
    let v1 = Router::new()
        .route("/certificates", get(list_certificates))
        .route("/certificates/{serial}", get(get_certificate))
        .route("/certificates/{serial}/revoke", post(revoke_certificate))
        .route(
            "/certificates/{serial}/attestation",
            get(get_certificate_attestation),
        )
        .route("/devices/{device_identity}/revoke", post(revoke_device))
        .route("/events", get(list_events))
        .route("/audit-events", get(list_audit_events))
        .fallback(|| async { ApiError::RouteNotFound })
        .method_not_allowed_fallback(|| async { ApiError::MethodNotAllowed })
        .with_state(state);
    Router::new().nest("/api/v1", v1)
}

/// Everything an API request can end with other than success.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error(transparent)]
    Auth(#[from] OperatorAuthError),
    #[error(transparent)]
    Registry(#[from] RegistryError),
    #[error("{0}")]
    BadRequest(String),
    #[error("the request body must be application/json")]
    UnsupportedMediaType,
    #[error("the request body is larger than {MAX_BODY_BYTES} bytes")]
    TooLarge,
    #[error("the request body did not arrive in time")]
    BodyTimeout,
    #[error("no such API route")]
    RouteNotFound,
    #[error("method not allowed on this route")]
    MethodNotAllowed,
    #[error(
        "certificate {0} is not in the issuance log (issued before the log, or not integrated yet)"
    )]
    NotLogged(Serial),
    #[error("this CA keeps no issuance log (transparency.enabled = false)")]
    LogDisabled,
    #[error(transparent)]
    Log(#[from] TransparencyError),
}

impl ApiError {
    fn status_and_code(&self) -> (StatusCode, Reason) {
        match self {
            ApiError::Auth(OperatorAuthError::Missing) => {
                (StatusCode::UNAUTHORIZED, Reason::AuthRequired)
            }
            ApiError::Auth(OperatorAuthError::InvalidToken) => {
                (StatusCode::UNAUTHORIZED, Reason::AuthInvalidToken)
            }
            ApiError::Auth(OperatorAuthError::Forbidden(_)) => {
                (StatusCode::FORBIDDEN, Reason::AuthForbidden)
            }
            ApiError::Registry(e) => (
                match e {
                    RegistryError::InvalidRequest(_) => StatusCode::BAD_REQUEST,
                    RegistryError::CertificateNotFound(_)
                    | RegistryError::NoActiveCertificates(_) => StatusCode::NOT_FOUND,
                    RegistryError::AlreadyRevoked(_) => StatusCode::CONFLICT,
                    RegistryError::Store(_) => StatusCode::SERVICE_UNAVAILABLE,
                },
                e.code(),
            ),
            ApiError::BadRequest(_) => (StatusCode::BAD_REQUEST, Reason::RequestInvalid),
            ApiError::UnsupportedMediaType => (
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                Reason::RequestUnsupportedMediaType,
            ),
            ApiError::TooLarge => (StatusCode::PAYLOAD_TOO_LARGE, Reason::RequestTooLarge),
            ApiError::BodyTimeout => (StatusCode::REQUEST_TIMEOUT, Reason::RequestTimeout),
            ApiError::RouteNotFound => (StatusCode::NOT_FOUND, Reason::RouteNotFound),
            ApiError::MethodNotAllowed => (
                StatusCode::METHOD_NOT_ALLOWED,
                Reason::RouteMethodNotAllowed,
            ),
            ApiError::NotLogged(_) => (StatusCode::NOT_FOUND, Reason::LogNotLogged),
            ApiError::LogDisabled => (StatusCode::NOT_FOUND, Reason::LogDisabled),
            ApiError::Log(_) => (
                StatusCode::SERVICE_UNAVAILABLE,
                Reason::ServiceDatabaseUnavailable,
            ),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let (status, code) = self.status_and_code();
        if status == StatusCode::SERVICE_UNAVAILABLE {
            tracing::warn!(error = %self, "operator API request failed");
        }
        let mut response = (
            status,
            axum::Json(json::ErrorBody::new(code, self.to_string())),
        )
            .into_response();
        let headers = response.headers_mut();
        if status == StatusCode::UNAUTHORIZED {
            headers.insert(
                header::WWW_AUTHENTICATE,
                HeaderValue::from_static("Bearer realm=\"attestca operator API\""),
            );
        }
        if status == StatusCode::SERVICE_UNAVAILABLE {
            headers.insert(header::RETRY_AFTER, HeaderValue::from_static("5"));
        }
        response
    }
}

/// The operator making a request, with the client address for audit events.
pub struct AuthenticatedOperator {
    operator: Operator,
    peer: Option<String>,
}

impl AuthenticatedOperator {
    fn actor(&self) -> Actor {
        Actor {
            id: self.operator.id(),
            peer: self.peer.clone(),
        }
    }
}

impl FromRequestParts<Arc<ApiState>> for AuthenticatedOperator {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &Arc<ApiState>,
    ) -> Result<Self, Self::Rejection> {
        let connection = parts
            .extensions
            .get::<ConnectionInfo>()
            .cloned()
            .unwrap_or_default();
        let bearer = parts
            .headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| {
                let (scheme, token) = v.split_once(' ')?;
                scheme
                    .eq_ignore_ascii_case("bearer")
                    .then(|| token.trim().to_owned())
            });
        let operator = state
            .operators
            .authenticate(&connection.peer_certificate, bearer.as_deref())?;
        Ok(Self {
            operator,
            peer: connection.peer_addr.map(|a| a.to_string()),
        })
    }
}

fn query<T>(query: Result<Query<T>, QueryRejection>) -> Result<T, ApiError> {
    query
        .map(|Query(q)| q)
        .map_err(|e| ApiError::BadRequest(format!("query string: {}", e.body_text())))
}

fn path(path: Result<Path<String>, PathRejection>) -> Result<String, ApiError> {
    path.map(|Path(p)| p)
        .map_err(|e| ApiError::BadRequest(e.body_text()))
}

/// `?device_identity=&status=&profile=&limit=&cursor=`
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct CertificateParams {
    device_identity: Option<String>,
    status: Option<CertStatus>,
    profile: Option<String>,
    limit: Option<u32>,
    cursor: Option<String>,
}

async fn list_certificates(
    _operator: AuthenticatedOperator,
    State(state): State<Arc<ApiState>>,
    params: Result<Query<CertificateParams>, QueryRejection>,
) -> Result<Response, ApiError> {
    let p = query(params)?;
    let page = state
        .registry
        .certificates(
            CertificateQuery {
                device_identity: p.device_identity,
                status: p.status,
                profile: p.profile,
                ..CertificateQuery::default()
            },
            &Listing {
                cursor: p.cursor,
                limit: p.limit,
            },
        )
        .await?;
    Ok(json::page(page, |r| {
        json::Certificate::from_record(r, None)
    }))
}

async fn get_certificate(
    _operator: AuthenticatedOperator,
    State(state): State<Arc<ApiState>>,
    serial: Result<Path<String>, PathRejection>,
) -> Result<Response, ApiError> {
    let detail = state.registry.certificate(&path(serial)?).await?;
    Ok(axum::Json(json::Certificate::from_detail(detail)).into_response())
}

/// `GET /certificates/{serial}/attestation`: the certificate's log entry (its attestation
/// record) and the inclusion proof under the newest checkpoint.
async fn get_certificate_attestation(
    _operator: AuthenticatedOperator,
    State(state): State<Arc<ApiState>>,
    serial: Result<Path<String>, PathRejection>,
) -> Result<Response, ApiError> {
    let detail = state.registry.certificate(&path(serial)?).await?;
    let log = state.log.as_ref().ok_or(ApiError::LogDisabled)?;
    let serial = detail.record.serial.clone();
    let logged = log
        .logged(&serial)
        .await?
        .ok_or(ApiError::NotLogged(serial.clone()))?;
    Ok(axum::Json(json::LoggedAttestation::new(serial, log.origin(), logged)).into_response())
}

/// The body of a revocation: `{"reason": "<RFC 5280 name>"}`, or empty (`unspecified`).
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RevokeBody {
    reason: Option<String>,
}

async fn revoke_body((headers, body, deadline): Incoming) -> Result<RevokeBody, ApiError> {
    let body = crate::http::body::read_limited(body, &headers, MAX_BODY_BYTES, deadline)
        .await
        .map_err(|e| match e {
            BodyError::TooLarge { .. } => ApiError::TooLarge,
            BodyError::TimedOut => ApiError::BodyTimeout,
            BodyError::Failed(reason) => ApiError::BadRequest(format!("request body: {reason}")),
        })?;
    decode_revoke_body(&headers, &body)
}

/// A revocation request's body, read: empty, or JSON under `application/json`.
fn decode_revoke_body(headers: &HeaderMap, body: &[u8]) -> Result<RevokeBody, ApiError> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Ok(RevokeBody::default());
    }
    let json = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .is_some_and(|v| v.trim().eq_ignore_ascii_case("application/json"));
    if !json {
        return Err(ApiError::UnsupportedMediaType);
    }
    serde_json::from_slice(body).map_err(|e| ApiError::BadRequest(format!("request body: {e}")))
}

async fn revoke_certificate(
    operator: AuthenticatedOperator,
    State(state): State<Arc<ApiState>>,
    serial: Result<Path<String>, PathRejection>,
    deadline: BodyDeadline,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    let serial = path(serial)?;
    let body = revoke_body((headers, body, deadline)).await?;
    let detail = state
        .registry
        .revoke(&operator.actor(), &serial, body.reason.as_deref())
        .await?;
    Ok(axum::Json(json::Certificate::from_detail(detail)).into_response())
}

async fn revoke_device(
    operator: AuthenticatedOperator,
    State(state): State<Arc<ApiState>>,
    device_identity: Result<Path<String>, PathRejection>,
    deadline: BodyDeadline,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    let device_identity = path(device_identity)?;
    let body = revoke_body((headers, body, deadline)).await?;
    let reason = body.reason.unwrap_or_else(|| "unspecified".into());
    let serials = state
        .registry
        .revoke_device(&operator.actor(), &device_identity, Some(&reason))
        .await?;
    Ok(axum::Json(json::DeviceRevocation {
        device_identity,
        reason,
        revoked_serials: serials,
    })
    .into_response())
}

/// Entry points for the fuzz targets (fuzz/): the request decoding the handlers do, without a
/// store, an operator or a connection. Not an API.
#[doc(hidden)]
pub mod fuzzing {
    use super::*;

    /// A revocation body as `revoke_certificate` and `revoke_device` read it, with the reason
    /// checked as the registry checks it; `Ok` holds the reason.
    pub fn revoke_body(content_type: Option<&str>, body: &[u8]) -> Result<String, String> {
        let mut headers = HeaderMap::new();
        if let Some(value) = content_type.and_then(|v| HeaderValue::from_str(v).ok()) {
            headers.insert(header::CONTENT_TYPE, value);
        }
        let body = decode_revoke_body(&headers, body).map_err(|e| e.to_string())?;
        crate::registry::checked_reason(body.reason.as_deref())
            .map(|reason| reason.as_str().to_owned())
            .map_err(|_| "not a revocation reason".to_owned())
    }

    /// The query string of `/certificates` (0), `/events` (1) or `/audit-events` (2), decoded
    /// as axum's `Query` decodes it, with the time and serial filters checked.
    pub fn list_query(listing: u8, query: &str) -> Result<(), String> {
        let uri: axum::http::Uri = format!("/?{query}").parse().map_err(|_| "URI")?;
        let text = |e: QueryRejection| e.body_text();
        match listing {
            0 => {
                Query::<CertificateParams>::try_from_uri(&uri).map_err(text)?;
            }
            1 => {
                let Query(p) = Query::<EventParams>::try_from_uri(&uri).map_err(text)?;
                if let Some(serial) = p.serial.as_deref() {
                    crate::registry::normalise_serial(serial).map_err(|e| e.to_string())?;
                }
                json::parse_time("since", p.since.as_deref()).map_err(|e| e.to_string())?;
                json::parse_time("until", p.until.as_deref()).map_err(|e| e.to_string())?;
            }
            _ => {
                let Query(p) = Query::<AuditParams>::try_from_uri(&uri).map_err(text)?;
                json::parse_time("since", p.since.as_deref()).map_err(|e| e.to_string())?;
                json::parse_time("until", p.until.as_deref()).map_err(|e| e.to_string())?;
            }
        }
        Ok(())
    }
}

/// `?requester=&operation=&outcome=&reason=&device_identity=&serial=&profile=&since=&until=&limit=&cursor=`
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct EventParams {
    requester: Option<String>,
    operation: Option<String>,
    outcome: Option<EventOutcome>,
    reason: Option<String>,
    device_identity: Option<String>,
    serial: Option<String>,
    profile: Option<String>,
    since: Option<String>,
    until: Option<String>,
    limit: Option<u32>,
    cursor: Option<String>,
}

async fn list_events(
    _operator: AuthenticatedOperator,
    State(state): State<Arc<ApiState>>,
    params: Result<Query<EventParams>, QueryRejection>,
) -> Result<Response, ApiError> {
    let p = query(params)?;
    let serial = p
        .serial
        .as_deref()
        .map(crate::registry::normalise_serial)
        .transpose()?;
    let page = state
        .registry
        .events(
            EventQuery {
                requester: p.requester,
                operation: p.operation,
                outcome: p.outcome,
                reason: p.reason,
                device_identity: p.device_identity,
                serial,
                profile: p.profile,
                since: json::parse_time("since", p.since.as_deref())?,
                until: json::parse_time("until", p.until.as_deref())?,
                ..EventQuery::default()
            },
            &Listing {
                cursor: p.cursor,
                limit: p.limit,
            },
        )
        .await?;
    Ok(json::page(page, json::Event::from_stored))
}

/// `?operator=&action=&target=&since=&until=&limit=&cursor=`
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct AuditParams {
    operator: Option<String>,
    action: Option<String>,
    target: Option<String>,
    since: Option<String>,
    until: Option<String>,
    limit: Option<u32>,
    cursor: Option<String>,
}

async fn list_audit_events(
    _operator: AuthenticatedOperator,
    State(state): State<Arc<ApiState>>,
    params: Result<Query<AuditParams>, QueryRejection>,
) -> Result<Response, ApiError> {
    let p = query(params)?;
    let page = state
        .registry
        .audit_events(
            AuditQuery {
                operator: p.operator,
                action: p.action,
                target: p.target,
                since: json::parse_time("since", p.since.as_deref())?,
                until: json::parse_time("until", p.until.as_deref())?,
                ..AuditQuery::default()
            },
            &Listing {
                cursor: p.cursor,
                limit: p.limit,
            },
        )
        .await?;
    Ok(json::page(page, json::AuditRecord::from_stored))
}
