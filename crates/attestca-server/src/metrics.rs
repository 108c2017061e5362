//! Prometheus metrics: one registry for the process, every metric the CA exports, and the
//! text exposition served at `/metrics`.
//!
//! Conventions: the `attestca_` prefix, `_total` for counters, `_seconds` and base units,
//! timestamps as `_timestamp_seconds`. Label values are bounded sets (routes, profiles, reason
//! codes, vendors, backends) — never a serial, a device identity or an address — so the series
//! count does not grow with the fleet. Every metric is listed in `docs/operations.md`.

use std::sync::LazyLock;

use prometheus::{
    Encoder, Gauge, GaugeVec, HistogramOpts, HistogramVec, IntCounterVec, IntGauge, IntGaugeVec,
    Opts, Registry, TextEncoder,
};

/// Latency buckets fine enough to see a few milliseconds, up to the slowest sane request.
const LATENCY_BUCKETS: &[f64] = &[
    0.0005, 0.001, 0.002, 0.003, 0.005, 0.0075, 0.01, 0.015, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
    5.0, 10.0,
];

/// Every metric the CA exports.
pub struct Metrics {
    registry: Registry,
    /// `attestca_http_requests_total{listener, route, method, status}`
    pub http_requests: IntCounterVec,
    /// `attestca_http_request_duration_seconds{listener, route}`
    pub http_request_duration: HistogramVec,
    /// `attestca_enrollments_total{profile, operation, outcome}` (outcome: issued, retried,
    /// refused, failed)
    pub enrollments: IntCounterVec,
    /// `attestca_enrollment_refusals_total{operation, reason}` (reason: the stable reason code)
    pub enrollment_refusals: IntCounterVec,
    /// `attestca_enrollment_duration_seconds{operation}`: CA-side time of one enrollment
    pub enrollment_duration: HistogramVec,
    /// `attestca_certificates_issued_total{profile}`
    pub certificates_issued: IntCounterVec,
    /// `attestca_attestation_verifications_total{format, vendor, result, reason}`
    pub attestation_verifications: IntCounterVec,
    /// `attestca_signer_operations_total{backend, key, result}` (key: ca, ocsp)
    pub signer_operations: IntCounterVec,
    /// `attestca_signer_duration_seconds{backend, key}`
    pub signer_duration: HistogramVec,
    /// `attestca_signer_sessions{backend}`: size of the PKCS#11 session pool
    pub signer_sessions: IntGaugeVec,
    /// `attestca_signer_sessions_in_use{backend}`
    pub signer_sessions_in_use: IntGaugeVec,
    /// `attestca_db_query_duration_seconds{operation}`
    pub db_query_duration: HistogramVec,
    /// `attestca_db_connections{state}` (state: idle, in_use)
    pub db_connections: IntGaugeVec,
    /// `attestca_db_max_connections`
    pub db_max_connections: IntGauge,
    /// `attestca_ocsp_responses_total{status, source}` (status: the OCSP response status —
    /// successful, malformed_request, try_later, unauthorized, internal_error; source: cache,
    /// live, error)
    pub ocsp_responses: IntCounterVec,
    /// `attestca_ocsp_cached_responses`
    pub ocsp_cached_responses: IntGauge,
    /// `attestca_log_size`: entries in the issuance log's newest checkpoint
    pub log_size: IntGauge,
    /// `attestca_log_pending_entries`: committed certificates not yet integrated into the log
    pub log_pending: IntGauge,
    /// `attestca_log_checkpoint_timestamp_seconds`: when this instance last signed a
    /// checkpoint (the alert on a stale checkpoint compares it with pending entries)
    pub log_checkpoint_timestamp: Gauge,
    /// `attestca_log_cosignature_requests_total{witness, outcome}`: checkpoints sent to a
    /// witness, by outcome (`cosigned`, `refused`, `unreachable`)
    pub log_cosignature_requests: IntCounterVec,
    /// `attestca_ocsp_next_update_earliest_timestamp_seconds`: the soonest nextUpdate among
    /// cached responses (an alert fires when it comes near: the refresher is stuck)
    pub ocsp_earliest_next_update: Gauge,
    /// `attestca_crl_entries{ca}`
    pub crl_entries: IntGaugeVec,
    /// `attestca_crl_number{ca}`
    pub crl_number: IntGaugeVec,
    /// `attestca_crl_this_update_timestamp_seconds{ca}`
    pub crl_this_update: GaugeVec,
    /// `attestca_crl_next_update_timestamp_seconds{ca}`
    pub crl_next_update: GaugeVec,
    /// `attestca_crl_age_seconds{ca}`: seconds since the served CRL was generated (at scrape)
    pub crl_age: GaugeVec,
    /// `attestca_nonces_outstanding`: issued, unspent, unexpired attestation nonces
    pub nonces_outstanding: IntGauge,
    /// `attestca_overload_refusals_total{limit}` (limit: enrollment_concurrency,
    /// rig_rate, device_rate, ocsp_live_signing, request_timeout, password_checks)
    pub overload_refusals: IntCounterVec,
    /// `attestca_tls_handshakes_total{result}` (result: ok, failed, timeout)
    pub tls_handshakes: IntCounterVec,
    /// `attestca_ca_certificate_not_after_timestamp_seconds{ca}`
    pub ca_not_after: GaugeVec,
    /// `attestca_component_ready{component}`: 1 when the last readiness check of the
    /// component (database, signer, ocsp, process) passed; process is 0 while draining
    pub component_ready: IntGaugeVec,
    /// `attestca_build_info{version}` = 1
    pub build_info: IntGaugeVec,
    /// `attestca_dependency_available{dependency}` (dependency: database, ca_key, ocsp_key):
    /// 1 while the dependency works, 0 while the CA refuses work that needs it
    pub dependency_available: IntGaugeVec,
    /// `attestca_dependency_recoveries_total{dependency}`: times a dependency came back after
    /// being unavailable, without a restart
    pub dependency_recoveries: IntCounterVec,
}

fn counter(registry: &Registry, name: &str, help: &str, labels: &[&str]) -> IntCounterVec {
    let metric = IntCounterVec::new(Opts::new(name, help), labels).expect("valid metric");
    registry
        .register(Box::new(metric.clone()))
        .expect("metric registered once");
    metric
}

fn histogram(registry: &Registry, name: &str, help: &str, labels: &[&str]) -> HistogramVec {
    let metric = HistogramVec::new(
        HistogramOpts::new(name, help).buckets(LATENCY_BUCKETS.to_vec()),
        labels,
    )
    .expect("valid metric");
    registry
        .register(Box::new(metric.clone()))
        .expect("metric registered once");
    metric
}

fn int_gauges(registry: &Registry, name: &str, help: &str, labels: &[&str]) -> IntGaugeVec {
    let metric = IntGaugeVec::new(Opts::new(name, help), labels).expect("valid metric");
    registry
        .register(Box::new(metric.clone()))
        .expect("metric registered once");
    metric
}

fn gauges(registry: &Registry, name: &str, help: &str, labels: &[&str]) -> GaugeVec {
    let metric = GaugeVec::new(Opts::new(name, help), labels).expect("valid metric");
    registry
        .register(Box::new(metric.clone()))
        .expect("metric registered once");
    metric
}

fn int_gauge(registry: &Registry, name: &str, help: &str) -> IntGauge {
    let metric = IntGauge::new(name, help).expect("valid metric");
    registry
        .register(Box::new(metric.clone()))
        .expect("metric registered once");
    metric
}

impl Metrics {
    // The names and labels below are constants: registration cannot fail at run time, which
    // the unit test proves by building the set.
    fn new() -> Self {
        let r = Registry::new();
        let metrics = Self {
            http_requests: counter(
                &r,
                "attestca_http_requests_total",
                "HTTP requests answered, by listener, route template, method and status code.",
                &["listener", "route", "method", "status"],
            ),
            http_request_duration: histogram(
                &r,
                "attestca_http_request_duration_seconds",
                "Time from request to response head, by listener and route template.",
                &["listener", "route"],
            ),
            enrollments: counter(
                &r,
                "attestca_enrollments_total",
                "Enrollment decisions by profile, operation (simpleenroll, simplereenroll) and outcome (issued, retried, refused, failed).",
                &["profile", "operation", "outcome"],
            ),
            enrollment_refusals: counter(
                &r,
                "attestca_enrollment_refusals_total",
                "Refused or failed enrollments by operation and reason code.",
                &["operation", "reason"],
            ),
            enrollment_duration: histogram(
                &r,
                "attestca_enrollment_duration_seconds",
                "CA-side time of one enrollment: checks, attestation, signing and the durable commit.",
                &["operation"],
            ),
            certificates_issued: counter(
                &r,
                "attestca_certificates_issued_total",
                "Certificates issued (and durably recorded), by profile.",
                &["profile"],
            ),
            attestation_verifications: counter(
                &r,
                "attestca_attestation_verifications_total",
                "Attestation evidence checks by format, vendor, result (pass, fail) and reason code.",
                &["format", "vendor", "result", "reason"],
            ),
            signer_operations: counter(
                &r,
                "attestca_signer_operations_total",
                "Signatures requested from the signer, by backend (pkcs11, software), key (ca, ocsp) and result (ok, error).",
                &["backend", "key", "result"],
            ),
            signer_duration: histogram(
                &r,
                "attestca_signer_duration_seconds",
                "Time of one signature, including waiting for a PKCS#11 session.",
                &["backend", "key"],
            ),
            signer_sessions: int_gauges(
                &r,
                "attestca_signer_sessions",
                "PKCS#11 sessions in the signer's pool.",
                &["backend"],
            ),
            signer_sessions_in_use: int_gauges(
                &r,
                "attestca_signer_sessions_in_use",
                "PKCS#11 sessions busy signing.",
                &["backend"],
            ),
            db_query_duration: histogram(
                &r,
                "attestca_db_query_duration_seconds",
                "Time of database operations, by operation.",
                &["operation"],
            ),
            db_connections: int_gauges(
                &r,
                "attestca_db_connections",
                "Database pool connections by state (idle, in_use).",
                &["state"],
            ),
            db_max_connections: int_gauge(
                &r,
                "attestca_db_max_connections",
                "Configured size of the database pool.",
            ),
            ocsp_responses: counter(
                &r,
                "attestca_ocsp_responses_total",
                "OCSP responses by response status (successful, malformed_request, try_later, unauthorized, internal_error) and source (cache, live, error).",
                &["status", "source"],
            ),
            ocsp_cached_responses: int_gauge(
                &r,
                "attestca_ocsp_cached_responses",
                "Pre-signed OCSP responses held in memory.",
            ),
            log_cosignature_requests: counter(
                &r,
                "attestca_log_cosignature_requests_total",
                "Checkpoints sent to a witness for cosigning, by witness and outcome (cosigned, refused, unreachable).",
                &["witness", "outcome"],
            ),
            log_size: int_gauge(
                &r,
                "attestca_log_size",
                "Entries in the issuance log's newest checkpoint signed by this instance.",
            ),
            log_pending: int_gauge(
                &r,
                "attestca_log_pending_entries",
                "Committed certificates whose log entries are not yet integrated into the tree.",
            ),
            log_checkpoint_timestamp: {
                let g = Gauge::new(
                    "attestca_log_checkpoint_timestamp_seconds",
                    "When this instance last signed an issuance-log checkpoint (Unix time).",
                )
                .expect("valid metric");
                r.register(Box::new(g.clone()))
                    .expect("metric registered once");
                g
            },
            ocsp_earliest_next_update: {
                let g = Gauge::new(
                    "attestca_ocsp_next_update_earliest_timestamp_seconds",
                    "The soonest nextUpdate among cached OCSP responses (Unix time).",
                )
                .expect("valid metric");
                r.register(Box::new(g.clone()))
                    .expect("metric registered once");
                g
            },
            crl_entries: int_gauges(
                &r,
                "attestca_crl_entries",
                "Entries in the CRL being served.",
                &["ca"],
            ),
            crl_number: int_gauges(
                &r,
                "attestca_crl_number",
                "CRL number of the CRL being served.",
                &["ca"],
            ),
            crl_this_update: gauges(
                &r,
                "attestca_crl_this_update_timestamp_seconds",
                "thisUpdate of the CRL being served (Unix time).",
                &["ca"],
            ),
            crl_next_update: gauges(
                &r,
                "attestca_crl_next_update_timestamp_seconds",
                "nextUpdate of the CRL being served (Unix time).",
                &["ca"],
            ),
            crl_age: gauges(
                &r,
                "attestca_crl_age_seconds",
                "Seconds since the CRL being served was generated.",
                &["ca"],
            ),
            nonces_outstanding: int_gauge(
                &r,
                "attestca_nonces_outstanding",
                "Attestation nonces issued, not yet spent and not expired.",
            ),
            overload_refusals: counter(
                &r,
                "attestca_overload_refusals_total",
                "Requests refused by overload protection, by the limit that refused them.",
                &["limit"],
            ),
            tls_handshakes: counter(
                &r,
                "attestca_tls_handshakes_total",
                "TLS handshakes on the EST listener by result (ok, failed, timeout).",
                &["result"],
            ),
            ca_not_after: gauges(
                &r,
                "attestca_ca_certificate_not_after_timestamp_seconds",
                "notAfter of the issuing CA certificate (Unix time).",
                &["ca"],
            ),
            component_ready: int_gauges(
                &r,
                "attestca_component_ready",
                "1 when the last readiness check of a component (database, signer) passed.",
                &["component"],
            ),
            build_info: int_gauges(
                &r,
                "attestca_build_info",
                "Always 1; the version is a label.",
                &["version"],
            ),
            dependency_available: int_gauges(
                &r,
                "attestca_dependency_available",
                "1 while a dependency (database, ca_key, ocsp_key) works; 0 while work that needs it is refused at once.",
                &["dependency"],
            ),
            dependency_recoveries: counter(
                &r,
                "attestca_dependency_recoveries_total",
                "Times a dependency (database, ca_key, ocsp_key) came back after being unavailable, without a restart.",
                &["dependency"],
            ),
            registry: r,
        };
        metrics
            .build_info
            .with_label_values(&[env!("CARGO_PKG_VERSION")])
            .set(1);
        metrics
    }

    /// The text exposition of every metric.
    pub fn encode(&self) -> String {
        let mut buffer = Vec::new();
        if let Err(e) = TextEncoder::new().encode(&self.registry.gather(), &mut buffer) {
            tracing::warn!(error = %e, "metrics encoding failed");
        }
        String::from_utf8(buffer).unwrap_or_default()
    }
}

/// The process's metrics.
pub static METRICS: LazyLock<Metrics> = LazyLock::new(Metrics::new);

/// The text exposition content type.
pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// Counts the attestation gate's verifications in
/// `attestca_attestation_verifications_total`.
pub struct AttestationCounter;

impl attestca_core::attestation::gate::VerificationObserver for AttestationCounter {
    fn verified(&self, format: &str, vendor: &str, result: &str, reason: &str) {
        METRICS
            .attestation_verifications
            .with_label_values(&[format, vendor, result, reason])
            .inc();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_metric_registers_and_encodes() {
        let m = &*METRICS;
        m.http_requests
            .with_label_values(&["est", "/.well-known/est/simpleenroll", "POST", "200"])
            .inc();
        let text = m.encode();
        assert!(text.contains("attestca_build_info{version=\""));
        assert!(text.contains("attestca_http_requests_total{"));
        for line in text.lines().filter(|l| l.starts_with("# TYPE ")) {
            let name = line.split_whitespace().nth(2).unwrap_or_default();
            assert!(name.starts_with("attestca_"), "{name}");
        }
    }
}
