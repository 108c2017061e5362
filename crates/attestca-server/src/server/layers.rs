//! What every request goes through on both listeners: a request id (taken from `X-Request-Id`
//! or made), a log span carrying it, the request deadline (and, inside it, the deadline of
//! the request's body), and the request metrics.

use std::time::{Duration, Instant};

use attestca_core::reason::Reason;
use axum::Router;
use axum::extract::{MatchedPath, Request};
use axum::http::{HeaderName, HeaderValue, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use tower_http::request_id::{MakeRequestUuid, PropagateRequestIdLayer, SetRequestIdLayer};

const REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

/// How long a request may take, and how long of that its body may take to arrive.
#[derive(Clone, Copy, Debug)]
pub struct Deadlines {
    /// `server.request_timeout_secs`: the answer is 503 `service.timeout` after it.
    pub request: Duration,
    /// `server.body_read_timeout_secs`, shorter: body readers answer 408 `request.timeout`
    /// after it (see [`super::body`]), before the request deadline can fire.
    pub body: Duration,
}

/// The end of the shutdown grace period: requests still running then are answered 503
/// `service.shutting_down` (not cut off with a bare connection close).
#[derive(Clone, Debug)]
pub struct Cutoff(tokio::sync::watch::Receiver<bool>);

impl Cutoff {
    /// A cut-off and the switch that triggers it.
    pub fn new() -> (tokio::sync::watch::Sender<bool>, Self) {
        let (switch, cutoff) = tokio::sync::watch::channel(false);
        (switch, Self(cutoff))
    }

    /// Completes when the cut-off is reached (never, if its switch is dropped unused).
    async fn reached(mut self) {
        if self.0.wait_for(|cut| *cut).await.is_err() {
            std::future::pending::<()>().await;
        }
    }
}

/// Wraps `router`'s routes with the deadlines, the shutdown cut-off and the metrics
/// (labelled `listener`), and the whole router with request ids and the log span.
pub fn apply(
    router: Router,
    listener: &'static str,
    deadlines: Deadlines,
    cutoff: Cutoff,
) -> Router {
    router
        .route_layer(axum::middleware::from_fn(move |request, next| {
            observe(listener, deadlines, cutoff.clone(), request, next)
        }))
        .layer(
            tower_http::trace::TraceLayer::new_for_http()
                // A 5xx here is usually a refusal the CA chose (overload, a dependency known to
                // be down, draining), logged where it was decided: at ERROR per request it was
                // noise that hid the one line that matters.
                .on_failure(
                    tower_http::trace::DefaultOnFailure::new().level(tracing::Level::DEBUG),
                )
                .make_span_with(|request: &Request| {
                let id = request
                    .headers()
                    .get(&REQUEST_ID)
                    .and_then(|v| v.to_str().ok())
                    .unwrap_or_default();
                tracing::info_span!("request", method = %request.method(), path = %request.uri().path(), request_id = %id)
            }),
        )
        .layer(PropagateRequestIdLayer::new(REQUEST_ID))
        .layer(SetRequestIdLayer::new(REQUEST_ID, MakeRequestUuid))
}

/// Runs the request under the deadline, with its body's deadline attached, and records
/// `attestca_http_requests_total` and `attestca_http_request_duration_seconds` by route
/// template (never the raw path: paths carry serials and labels).
async fn observe(
    listener: &'static str,
    deadlines: Deadlines,
    cutoff: Cutoff,
    mut request: Request,
    next: Next,
) -> Response {
    let timeout = deadlines.request;
    request
        .extensions_mut()
        .insert(crate::http::body::BodyDeadline::after(deadlines.body));
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map(|p| p.as_str().to_owned())
        .unwrap_or_else(|| "unmatched".into());
    let method = request.method().as_str().to_owned();
    let started = Instant::now();
    request
        .extensions_mut()
        .insert(crate::http::RequestDeadline(started + timeout));
    let response = tokio::select! {
        answered = tokio::time::timeout(timeout, next.run(request)) => match answered {
            Ok(response) => response,
            Err(_) => {
                crate::metrics::METRICS
                    .overload_refusals
                    .with_label_values(&["request_timeout"])
                    .inc();
                refusal(
                    &route,
                    Reason::ServiceTimeout,
                    format!("the request was not answered within {} s", timeout.as_secs()),
                )
            }
        },
        () = cutoff.reached() => refusal(
            &route,
            Reason::ServiceShuttingDown,
            "the CA is shutting down and the request did not finish within the grace period; retry"
                .into(),
        ),
    };
    let metrics = &crate::metrics::METRICS;
    metrics
        .http_request_duration
        .with_label_values(&[listener, &route])
        .observe(started.elapsed().as_secs_f64());
    metrics
        .http_requests
        .with_label_values(&[listener, &route, &method, response.status().as_str()])
        .inc();
    response
}

/// 503 with Retry-After and a reason code: JSON under the operator API, text elsewhere.
fn refusal(route: &str, code: Reason, message: String) -> Response {
    let mut response = if route.starts_with("/api/") {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            axum::Json(serde_json::json!({
                "error": {"code": code.as_str(), "message": message}
            })),
        )
            .into_response()
    } else {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
            format!("{code}: {message}\n"),
        )
            .into_response()
    };
    response
        .headers_mut()
        .insert(header::RETRY_AFTER, HeaderValue::from_static("5"));
    response
}
