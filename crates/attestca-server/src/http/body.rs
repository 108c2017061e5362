//! Reading request bodies on the wire: bounded in size, bounded in time, and refused in a way
//! every client can read, over HTTP/1.1 and HTTP/2.
//!
//! - **Time.** Every request carries a [`BodyDeadline`], set by the request layer when the
//!   request arrives: `server.body_read_timeout_secs` after its start, which configuration
//!   keeps below `server.request_timeout_secs`. A stalled body therefore always ends in the
//!   reader's own refusal (`request.timeout`, 408, recorded by the caller) and never in the
//!   request deadline's 503.
//! - **Size.** A body over its limit is refused. An HTTP/2 client that is still sending when
//!   the refusal arrives and is then reset (RST_STREAM) may report a stream error instead of
//!   the status (curl does, whatever the reset code), so the rest of an oversized body is
//!   read and discarded, up to [`DRAIN_LIMIT`] bytes and within the body deadline, before the
//!   refusal is answered: the client finishes its upload and reads the 413. A body declared
//!   (Content-Length) larger than that is refused at once without reading, and so is one
//!   over the limit whose client waits for `100 Continue` (it has sent nothing yet). Over
//!   HTTP/1.1 the drain keeps the connection from being reset under a client still sending.
//!
//! Status codes are not decided here: callers map [`BodyError`] (EST in
//! `est::refusal_response`'s module, the operator API in its `ApiError`, OCSP in `plain`).

use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use axum::http::{HeaderMap, header};
use http_body_util::BodyExt;
use tokio::time::Instant;

/// Oversized bodies up to this size (declared or sent) are read and discarded before the
/// refusal is answered; larger declared bodies are refused without reading. Reading costs
/// bandwidth, not memory, and ends at the body deadline in any case.
pub const DRAIN_LIMIT: usize = 4 << 20;

/// Used only by a route mounted without the request layer (which always sets the deadline).
const FALLBACK_BODY_TIMEOUT: Duration = Duration::from_secs(20);

/// The instant by which a request's body must have arrived.
#[derive(Clone, Copy, Debug)]
pub struct BodyDeadline(pub Instant);

impl BodyDeadline {
    /// The deadline of a request that starts now.
    pub fn after(timeout: Duration) -> Self {
        Self(Instant::now() + timeout)
    }
}

impl<S: Send + Sync> FromRequestParts<S> for BodyDeadline {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Self::Rejection> {
        Ok(parts
            .extensions
            .get::<BodyDeadline>()
            .copied()
            .unwrap_or_else(|| BodyDeadline::after(FALLBACK_BODY_TIMEOUT)))
    }
}

/// A request's headers and body, with the instant by which the body must have arrived.
pub type Incoming = (HeaderMap, Body, BodyDeadline);

/// Why a body was not read.
#[derive(Debug, thiserror::Error)]
pub enum BodyError {
    #[error("request bodies are limited to {limit} bytes")]
    TooLarge { limit: usize },
    #[error("the request body did not arrive in time")]
    TimedOut,
    #[error("{0}")]
    Failed(String),
}

/// Reads a body of at most `limit` bytes before `deadline`.
pub async fn read_limited(
    body: Body,
    headers: &HeaderMap,
    limit: usize,
    deadline: BodyDeadline,
) -> Result<Bytes, BodyError> {
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<usize>().ok());
    // A client waiting for `100 Continue` has sent nothing yet: no need to drain. (hyper
    // sends the 100 only once the body is read.)
    let waits_to_send = headers
        .get(header::EXPECT)
        .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"100-continue"));
    if declared.is_some_and(|n| n > DRAIN_LIMIT || (waits_to_send && n > limit)) {
        return Err(BodyError::TooLarge { limit });
    }
    let mut body = body;
    let mut collected = Vec::new();
    let mut seen = 0usize;
    loop {
        let frame = match tokio::time::timeout_at(deadline.0, body.frame()).await {
            // Already over the limit: that is the more useful answer.
            Err(_) if seen > limit => return Err(BodyError::TooLarge { limit }),
            Err(_) => return Err(BodyError::TimedOut),
            Ok(None) => break,
            Ok(Some(Err(e))) => return Err(BodyError::Failed(e.to_string())),
            Ok(Some(Ok(frame))) => frame,
        };
        if let Ok(data) = frame.into_data() {
            seen = seen.saturating_add(data.len());
            if seen <= limit {
                collected.extend_from_slice(&data);
            } else if !collected.is_empty() {
                // Over the limit: keep reading, but keep nothing.
                collected = Vec::new();
            }
            if seen > DRAIN_LIMIT {
                break;
            }
        }
    }
    if seen > limit {
        return Err(BodyError::TooLarge { limit });
    }
    Ok(Bytes::from(collected))
}
