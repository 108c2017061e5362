//! The plain-HTTP listener's routes: health, readiness, metrics, the CRLs and OCSP. Relying
//! parties fetch CRLs and OCSP responses over plain HTTP: both are signed, and RFC 5280 and
//! RFC 6960 name HTTP.

use std::sync::Arc;
use std::time::{Duration, UNIX_EPOCH};

use axum::Router;
use axum::body::Body;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};

use super::health::HealthSources;
use crate::http::body::{BodyDeadline, BodyError, read_limited};
use crate::ocsp::{OcspError, OcspReply, OcspResponder};
use crate::revocation::crl::CrlPublisher;
use crate::revocation::root_crl::CrlFile;
use crate::transparency::IssuanceLog;
use attestca_core::reason::Reason;
use attestca_core::serial::Serial;
use attestca_core::transparency::tiles::TilePath;

/// Largest OCSP request body read; a larger one is answered `malformedRequest`.
pub const MAX_OCSP_REQUEST_BYTES: usize = 16 * 1024;

const OCSP_REQUEST: &str = "application/ocsp-request";
const OCSP_RESPONSE: &str = "application/ocsp-response";

struct PlainState {
    crl: Arc<CrlPublisher>,
    crl_file: String,
    /// The root's CRL file and the name it is served under.
    root_crl: Option<(String, CrlFile)>,
}

/// `/healthz`, `/readyz`, `/metrics`, `/crl/<ca-name>.crl`, `/crl/<root-crl-name>.crl` when configured, with a
/// responder `POST /ocsp` and `GET /ocsp/<request>`, and with the issuance log
/// `/log/<ca-name>/checkpoint` and `/log/<ca-name>/tile/…` (C2SP tlog-tiles).
pub fn router(
    crl: Arc<CrlPublisher>,
    config: &crate::config::CaConfig,
    ocsp: Option<Arc<OcspResponder>>,
    log: Option<Arc<IssuanceLog>>,
    health: Arc<HealthSources>,
) -> Router {
    let router = Router::new()
        .route("/healthz", get(|| async { (StatusCode::OK, "ok\n") }))
        .route("/readyz", get(readyz).with_state(Arc::clone(&health)))
        .route("/metrics", get(metrics).with_state(health))
        .route("/crl/{file}", get(crl_file))
        .with_state(Arc::new(PlainState {
            crl,
            crl_file: format!("{}.crl", config.name),
            root_crl: config.root_crl_file.as_ref().map(|path| {
                (
                    format!("{}.crl", config.root_crl_name),
                    CrlFile::new(path.clone()),
                )
            }),
        }));
    let router = match ocsp {
        Some(responder) => router.merge(
            Router::new()
                .route("/ocsp", post(ocsp_post))
                .route("/ocsp/{*request}", get(ocsp_get))
                .with_state(responder),
        ),
        None => router,
    };
    match log {
        Some(log) => router.merge(
            Router::new()
                .route("/log/{name}/checkpoint", get(log_checkpoint))
                .route("/log/{name}/tile/{*path}", get(log_tile))
                .route("/log/{name}/index/{serial}", get(log_index))
                .with_state(log)
                // C2SP tlog-tiles: entry bundles SHOULD be compressed (gzip when the client
                // accepts it; a certificate's DER and its record compress by about half).
                .layer(tower_http::compression::CompressionLayer::new()),
        ),
        None => router,
    }
}

/// `GET /log/<ca-name>/checkpoint`: the newest signed checkpoint (C2SP tlog-tiles: mutable,
/// cached for a second at most).
async fn log_checkpoint(State(log): State<Arc<IssuanceLog>>, Path(name): Path<String>) -> Response {
    if name != log.name() {
        return log_not_found(Reason::LogNoSuchLog, "this CA keeps no log of that name");
    }
    let Some(_permit) = log.public_read() else {
        return log_busy();
    };
    match log.checkpoint().await {
        Ok(Some(note)) => (
            StatusCode::OK,
            [
                (header::CONTENT_TYPE, "text/plain; charset=utf-8"),
                (header::CACHE_CONTROL, "public, max-age=1"),
            ],
            note,
        )
            .into_response(),
        Ok(None) => log_not_found(Reason::LogNoCheckpoint, "no checkpoint signed yet"),
        Err(e) => log_unavailable(&e),
    }
}

/// `GET /log/<ca-name>/tile/…`: a hash tile or entry bundle, full or partial. Both are
/// immutable once served (a partial tile `.p/W` is always the same W hashes), so a CDN or a
/// static mirror may keep them forever.
async fn log_tile(
    State(log): State<Arc<IssuanceLog>>,
    Path((name, path)): Path<(String, String)>,
) -> Response {
    if name != log.name() {
        return log_not_found(Reason::LogNoSuchLog, "this CA keeps no log of that name");
    }
    let Ok(tile) = TilePath::parse(&format!("tile/{path}")) else {
        return log_not_found(Reason::LogBadPath, "not a C2SP tlog-tiles tile path");
    };
    let Some(_permit) = log.public_read() else {
        return log_busy();
    };
    match log.tile(&tile).await {
        Ok(Some(data)) => (
            StatusCode::OK,
            [
                (header::CONTENT_TYPE, "application/octet-stream"),
                (header::CACHE_CONTROL, "public, max-age=31536000, immutable"),
            ],
            data,
        )
            .into_response(),
        Ok(None) => log_not_found(Reason::LogNoTile, "no such tile (yet)"),
        Err(e) => log_unavailable(&e),
    }
}

/// `GET /log/<ca-name>/index/<serial>`: where a certificate is in the log (its leaf index,
/// decimal), so that a relying party can fetch its entry bundle and prove its inclusion from
/// the tiles. Not part of C2SP tlog-tiles and not trusted: a wrong answer fails the
/// verifier's inclusion proof. Immutable once answered; 404 `log.not_logged` until then.
async fn log_index(
    State(log): State<Arc<IssuanceLog>>,
    Path((name, serial)): Path<(String, String)>,
) -> Response {
    if name != log.name() {
        return log_not_found(Reason::LogNoSuchLog, "this CA keeps no log of that name");
    }
    let Ok(serial) = Serial::parse(&serial) else {
        return log_not_found(Reason::LogBadPath, "not a hex serial number");
    };
    let Some(_permit) = log.public_read() else {
        return log_busy();
    };
    match log.index_of(&serial).await {
        Ok(Some(index)) => (
            StatusCode::OK,
            [
                (header::CONTENT_TYPE, "text/plain; charset=utf-8"),
                (header::CACHE_CONTROL, "public, max-age=31536000, immutable"),
            ],
            format!("{index}\n"),
        )
            .into_response(),
        Ok(None) => log_not_found(
            Reason::LogNotLogged,
            "no certificate with this serial is in the log (yet)",
        ),
        Err(e) => log_unavailable(&e),
    }
}

fn log_not_found(reason: Reason, detail: &str) -> Response {
    (
        StatusCode::NOT_FOUND,
        [
            (header::CONTENT_TYPE, "text/plain; charset=utf-8"),
            (header::CACHE_CONTROL, "no-store"),
        ],
        format!("{reason}: {detail}\n"),
    )
        .into_response()
}

fn log_busy() -> Response {
    (
        StatusCode::SERVICE_UNAVAILABLE,
        [
            (header::CONTENT_TYPE, "text/plain; charset=utf-8"),
            (header::RETRY_AFTER, "1"),
            (header::CACHE_CONTROL, "no-store"),
        ],
        format!(
            "{}: as many log reads as transparency.max_concurrent_reads are in progress\n",
            Reason::OverloadLogReads
        ),
    )
        .into_response()
}

fn log_unavailable(error: &crate::transparency::TransparencyError) -> Response {
    tracing::warn!(error = %error, "transparency log read failed");
    (
        StatusCode::SERVICE_UNAVAILABLE,
        [
            (header::CONTENT_TYPE, "text/plain; charset=utf-8"),
            (header::RETRY_AFTER, "5"),
            (header::CACHE_CONTROL, "no-store"),
        ],
        format!(
            "{}: the log's storage did not answer\n",
            Reason::StorageUnavailable
        ),
    )
        .into_response()
}

/// `/readyz`: 200 when the database answers and the signer signs; 503 naming the component
/// that does not.
async fn readyz(State(health): State<Arc<HealthSources>>) -> Response {
    match health.readiness().await {
        Ok(()) => (StatusCode::OK, "ready\n").into_response(),
        Err(e) => {
            // Per probe: debug. The changes themselves (a dependency lost or back, the OCSP
            // warm-up done) are logged once where they happen.
            tracing::debug!(component = e.component, reason = %e.reason, "not ready");
            (
                StatusCode::SERVICE_UNAVAILABLE,
                [(header::RETRY_AFTER, "5")],
                format!("{}: {}\n", e.component, e.reason),
            )
                .into_response()
        }
    }
}

/// `/metrics`: the Prometheus text exposition.
async fn metrics(State(health): State<Arc<HealthSources>>) -> Response {
    health.refresh_gauges().await;
    (
        StatusCode::OK,
        [(header::CONTENT_TYPE, crate::metrics::CONTENT_TYPE)],
        crate::metrics::METRICS.encode(),
    )
        .into_response()
}

/// `POST /ocsp`: the DER request is the body. A Content-Type other than
/// `application/ocsp-request` (when one is given), or a body over 16 KiB, is a malformed
/// request; a body that does not arrive in time is answered 408 (there is no request to
/// answer).
async fn ocsp_post(
    State(responder): State<Arc<OcspResponder>>,
    deadline: BodyDeadline,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let content_type_ok = headers.get(header::CONTENT_TYPE).is_none_or(|v| {
        v.to_str()
            .ok()
            .and_then(|v| v.split(';').next())
            .is_some_and(|v| v.trim().eq_ignore_ascii_case(OCSP_REQUEST))
    });
    let result = if !content_type_ok {
        Err(OcspError::Malformed(format!(
            "Content-Type is not {OCSP_REQUEST}"
        )))
    } else {
        match read_limited(body, &headers, MAX_OCSP_REQUEST_BYTES, deadline).await {
            Ok(der) => responder.respond(&der).await,
            Err(BodyError::TimedOut) => {
                return (
                    StatusCode::REQUEST_TIMEOUT,
                    [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
                    format!("request.timeout: {}\n", BodyError::TimedOut),
                )
                    .into_response();
            }
            Err(e) => Err(OcspError::Malformed(e.to_string())),
        }
    };
    ocsp_response(result, &headers)
}

/// `GET /ocsp/<base64 of the DER request, percent-encoded>` (RFC 6960 appendix A).
async fn ocsp_get(
    State(responder): State<Arc<OcspResponder>>,
    uri: Uri,
    headers: HeaderMap,
) -> Response {
    let encoded = uri.path().strip_prefix("/ocsp/").unwrap_or_default();
    let result = match crate::ocsp::request::decode_get_path(encoded) {
        Ok(der) => responder.respond(&der).await,
        Err(e) => Err(e.into()),
    };
    ocsp_response(result, &headers)
}

/// Every OCSP answer is HTTP 200 with an `OCSPResponse` (RFC 5019 2.2.3: errors too); a
/// cacheable response carries the RFC 5019 section 6 headers.
fn ocsp_response(result: Result<OcspReply, OcspError>, request_headers: &HeaderMap) -> Response {
    let reply = match result {
        Ok(reply) => reply,
        Err(e) => {
            match e.response_status() {
                crate::ocsp::asn1::OcspResponseStatus::InternalError => {
                    tracing::warn!(error = %e, "OCSP request failed")
                }
                _ => tracing::debug!(error = %e, "OCSP request refused"),
            }
            return (
                StatusCode::OK,
                [(header::CONTENT_TYPE, OCSP_RESPONSE)],
                e.response_body(),
            )
                .into_response();
        }
    };
    match reply.freshness {
        Some(f) => signed_object(
            request_headers,
            OCSP_RESPONSE,
            reply.body,
            &Validity {
                etag: format!("\"{:016x}\"", f.etag),
                this_update: f.this_update,
                next_update: f.next_update,
                cache_directives: ", public, no-transform, must-revalidate",
            },
        ),
        None => (
            StatusCode::OK,
            [(header::CONTENT_TYPE, OCSP_RESPONSE)],
            reply.body,
        )
            .into_response(),
    }
}

/// What the caching headers of a signed object (a CRL, an OCSP response) say.
struct Validity {
    etag: String,
    /// Unix seconds: `Last-Modified`.
    this_update: i64,
    /// Unix seconds: `Expires`, and `max-age` counts down to it.
    next_update: i64,
    /// Appended to `max-age=N` in `Cache-Control`.
    cache_directives: &'static str,
}

/// A signed object with conditional-GET support: 304 when the client holds this ETag, and
/// `ETag`, `Last-Modified`, `Expires` and `Cache-Control` matching the object's validity.
fn signed_object(
    request_headers: &HeaderMap,
    content_type: &'static str,
    body: impl IntoResponse,
    validity: &Validity,
) -> Response {
    let mut response = if request_headers
        .get(header::IF_NONE_MATCH)
        .is_some_and(|v| v.as_bytes() == validity.etag.as_bytes())
    {
        StatusCode::NOT_MODIFIED.into_response()
    } else {
        (StatusCode::OK, [(header::CONTENT_TYPE, content_type)], body).into_response()
    };
    let now = attestca_core::time::unix_now();
    let max_age = (validity.next_update - now).max(0);
    let h = response.headers_mut();
    for (name, value) in [
        (header::ETAG, validity.etag.clone()),
        (header::LAST_MODIFIED, http_date(validity.this_update)),
        (header::EXPIRES, http_date(validity.next_update)),
        (
            header::CACHE_CONTROL,
            format!("max-age={max_age}{}", validity.cache_directives),
        ),
    ] {
        if let Ok(v) = HeaderValue::from_str(&value) {
            h.insert(name, v);
        }
    }
    response
}

fn http_date(unix: i64) -> String {
    httpdate::fmt_http_date(UNIX_EPOCH + Duration::from_secs(u64::try_from(unix).unwrap_or(0)))
}

async fn crl_file(
    State(state): State<Arc<PlainState>>,
    Path(file): Path<String>,
    headers: HeaderMap,
) -> Response {
    let not_found = || {
        (
            StatusCode::NOT_FOUND,
            [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
            "no such CRL\n",
        )
            .into_response()
    };
    let crl = if file == state.crl_file {
        state.crl.current()
    } else {
        match &state.root_crl {
            Some((name, source)) if *name == file => source.current(),
            _ => None,
        }
    };
    let Some(crl) = crl else {
        return not_found();
    };
    signed_object(
        &headers,
        "application/pkix-crl",
        crl.der,
        &Validity {
            etag: format!("\"{}\"", crl.number),
            this_update: crl.this_update,
            next_update: crl.next_update,
            cache_directives: "",
        },
    )
}
