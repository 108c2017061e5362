//! The plain-HTTP listener's routes: health and the CRLs (OCSP and metrics join later).
//! Relying parties fetch CRLs over plain HTTP: the CRL is signed, and RFC 5280 names HTTP.

use std::sync::Arc;
use std::time::{Duration, UNIX_EPOCH};

use axum::Router;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;

use crate::revocation::crl::CrlPublisher;
use crate::revocation::root_crl::CrlFile;

struct PlainState {
    crl: Arc<CrlPublisher>,
    crl_file: String,
    /// The root's CRL file and the name it is served under.
    root_crl: Option<(String, CrlFile)>,
}

/// `/healthz`, `/crl/<ca-name>.crl` and, when configured, `/crl/<root-crl-name>.crl`.
pub fn router(crl: Arc<CrlPublisher>, config: &crate::config::CaConfig) -> Router {
    Router::new()
        .route("/healthz", get(|| async { (StatusCode::OK, "ok\n") }))
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
        }))
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
    let etag = format!("\"{}\"", crl.number);
    let now = crate::issuance::unix_seconds(std::time::SystemTime::now()) as i64;
    let max_age = (crl.next_update - now).max(0);
    let last_modified = httpdate::fmt_http_date(
        UNIX_EPOCH + Duration::from_secs(u64::try_from(crl.this_update).unwrap_or(0)),
    );
    let mut response = if headers
        .get(header::IF_NONE_MATCH)
        .is_some_and(|v| v.as_bytes() == etag.as_bytes())
    {
        StatusCode::NOT_MODIFIED.into_response()
    } else {
        (
            StatusCode::OK,
            [(header::CONTENT_TYPE, "application/pkix-crl")],
            crl.der,
        )
            .into_response()
    };
    let h = response.headers_mut();
    for (name, value) in [
        (header::ETAG, etag),
        (header::LAST_MODIFIED, last_modified),
        (header::CACHE_CONTROL, format!("max-age={max_age}")),
    ] {
        if let Ok(v) = HeaderValue::from_str(&value) {
            h.insert(name, v);
        }
    }
    response
}
