//! Response header names over HTTP/1.1 as field clients spell them.
//!
//! HTTP says header names are case-insensitive; deployed EST clients do not care. libest
//! (Cisco's C client) compares `Content-Type` and `Content-Length` with `memcmp` and
//! `WWW-Authenticate` with `strncmp`, byte for byte, while hyper writes names in lower case.
//! Two hyper settings together give every name its conventional spelling:
//!
//! - `title_case_headers(true)` on the HTTP/1 connection builder writes `Content-Type`,
//!   `Content-Length`, `Content-Transfer-Encoding`, `Retry-After`, `X-Request-Id`...;
//! - title case makes `Www-Authenticate` of `www-authenticate` (and `Etag` of `etag`), so the
//!   names title case gets wrong are given their spelling through hyper's header-case
//!   extension: hyper records the names of a request as received when `preserve_header_case`
//!   is on, and uses such a record when it finds one on a response (documented for
//!   forwarding cases "in a proxy-like fashion"; the record's type is private). [`learn`] has
//!   hyper record a request that spells those names, once per listener; every response
//!   carries a copy ([`ConventionalCase::apply`]). Names the record does not hold fall back
//!   to title case.
//!
//! HTTP/2 carries names in lower case by definition and ignores both.

use std::convert::Infallible;
use std::time::Duration;

use axum::body::Bytes;
use axum::http::Extensions;
use hyper_util::rt::TokioIo;
use tokio::io::AsyncWriteExt;

/// Header names we send whose conventional spelling is not their title case.
const NOT_TITLE_CASE: &[&str] = &["WWW-Authenticate", "ETag"];

/// hyper's record of how [`NOT_TITLE_CASE`] names are spelled, for every response.
#[derive(Clone, Default)]
pub struct ConventionalCase(Extensions);

impl ConventionalCase {
    /// Gives the response's header names their conventional spelling on HTTP/1.1.
    pub fn apply<B>(&self, response: &mut axum::http::Response<B>) {
        response.extensions_mut().extend(self.0.clone());
    }
}

/// Has hyper parse, in memory, a request whose headers spell [`NOT_TITLE_CASE`], and keeps
/// the record it makes. Should that ever fail, names are written in title case.
pub async fn learn() -> ConventionalCase {
    match tokio::time::timeout(Duration::from_secs(5), record()).await {
        Ok(Ok(extensions)) => ConventionalCase(extensions),
        Ok(Err(reason)) => {
            tracing::warn!(%reason, "header names will be written in title case only");
            ConventionalCase::default()
        }
        Err(_) => {
            tracing::warn!("header names will be written in title case only (timed out)");
            ConventionalCase::default()
        }
    }
}

async fn record() -> Result<Extensions, String> {
    let (mut client, server) = tokio::io::duplex(4096);
    let mut head = String::from("GET / HTTP/1.1\r\nHost: localhost\r\n");
    for name in NOT_TITLE_CASE {
        head.push_str(name);
        head.push_str(": x\r\n");
    }
    head.push_str("\r\n");
    client
        .write_all(head.as_bytes())
        .await
        .map_err(|e| e.to_string())?;
    let (sender, received) = tokio::sync::oneshot::channel();
    let sender = std::sync::Mutex::new(Some(sender));
    let service =
        hyper::service::service_fn(move |request: hyper::Request<hyper::body::Incoming>| {
            if let Some(sender) = sender.lock().ok().and_then(|mut s| s.take()) {
                let _ = sender.send(request.extensions().clone());
            }
            async {
                Ok::<_, Infallible>(hyper::Response::new(http_body_util::Empty::<Bytes>::new()))
            }
        });
    let connection = hyper::server::conn::http1::Builder::new()
        .preserve_header_case(true)
        .serve_connection(TokioIo::new(server), service);
    tokio::select! {
        extensions = received => extensions.map_err(|e| e.to_string()),
        ended = connection => Err(format!("the connection ended first: {ended:?}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The bytes hyper writes for a response with these headers, over HTTP/1.1, as the
    /// listeners configure it.
    async fn written(headers: &[(&'static str, &'static str)]) -> String {
        let case = learn().await;
        let (mut client, server) = tokio::io::duplex(64 * 1024);
        let headers = headers.to_vec();
        let service =
            hyper::service::service_fn(move |_: hyper::Request<hyper::body::Incoming>| {
                let mut response =
                    hyper::Response::new(http_body_util::Full::new(Bytes::from_static(b"body")));
                for (name, value) in &headers {
                    response.headers_mut().insert(
                        axum::http::HeaderName::from_static(name),
                        axum::http::HeaderValue::from_static(value),
                    );
                }
                case.apply(&mut response);
                async { Ok::<_, Infallible>(response) }
            });
        let connection = hyper::server::conn::http1::Builder::new()
            .title_case_headers(true)
            .serve_connection(TokioIo::new(server), service);
        let task = tokio::spawn(connection);
        client
            .write_all(b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            .await
            .expect("write");
        let mut out = Vec::new();
        tokio::io::AsyncReadExt::read_to_end(&mut client, &mut out)
            .await
            .expect("read");
        let _ = task.await;
        String::from_utf8(out).expect("ASCII")
    }

    #[tokio::test]
    async fn names_are_spelled_conventionally() {
        let text = written(&[
            ("www-authenticate", "Basic realm=\"x\""),
            ("content-type", "text/plain"),
            ("content-transfer-encoding", "base64"),
            ("retry-after", "5"),
            ("x-request-id", "abc"),
            ("etag", "\"1\""),
        ])
        .await;
        for name in [
            "WWW-Authenticate",
            "Content-Type",
            "Content-Transfer-Encoding",
            "Retry-After",
            "Content-Length",
            "X-Request-Id",
            "ETag",
        ] {
            assert!(text.contains(&format!("\r\n{name}: ")), "{name} in {text}");
        }
        assert!(!text.contains("Www-Authenticate"), "{text}");
    }
}
