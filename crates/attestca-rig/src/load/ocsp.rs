//! `load ocsp`: OCSP requests for a mix of good, revoked and unknown serials. Before the window
//! the run enrolls the good and to-be-revoked devices through the rig, revokes the latter over
//! the operator API (operator certificate), waits until the responder reports them revoked,
//! and draws random serials the CA never issued. In the window, C clients on keep-alive
//! connections POST single-serial requests round-robin over the mix; every response is
//! decoded and its status compared with the expected one (a mismatch is a failure).

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use der::{Decode, Encode};
use serde::Serialize;
use x509_cert::Certificate;

use super::report::TimelinePoint;
use super::window::{RunFigures, Window};
use super::{LoadError, LoadReport, Target, failure_lines};
use attestca_core::ocsp::asn1::{
    BasicOcspResponse, CertStatus, OcspRequest, OcspResponse, OcspResponseStatus, Request,
    ResponseData, TbsRequest,
};
use attestca_core::ocsp::request::{CertIdHash, IssuerHashes, SerialKey};

/// Options of an OCSP run.
#[derive(Clone, Debug)]
pub struct OcspOptions {
    /// The responder, e.g. http://127.0.0.1:8080/ocsp
    pub url: String,
    pub good: usize,
    pub revoked: usize,
    pub unknown: usize,
    pub concurrency: usize,
    pub duration: Duration,
    pub count: Option<u64>,
    /// Operator identity for the revocations (PEM certificate and PKCS#8 key).
    pub operator_cert: PathBuf,
    pub operator_key: PathBuf,
}

/// The status a serial should get.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Expected {
    Good,
    Revoked,
    Unknown,
}

impl Expected {
    fn as_str(self) -> &'static str {
        match self {
            Expected::Good => "good",
            Expected::Revoked => "revoked",
            Expected::Unknown => "unknown",
        }
    }
}

/// The JSON report; the latency is the POST round trip on a warm connection, response decoded.
#[derive(Clone, Debug, Serialize)]
pub struct OcspReport {
    pub mode: &'static str,
    pub url: String,
    pub concurrency: usize,
    pub serials: BTreeMap<&'static str, usize>,
    #[serde(flatten)]
    pub figures: RunFigures,
    pub setup_seconds: f64,
}

impl LoadReport for OcspReport {
    fn summary(&self) -> String {
        let f = &self.figures;
        format!(
            "OCSP against {}: {} clients, {:.1} s, serials {:?}\n  responses: {} as expected, {} failed, {:.1} per second\n  latency (POST round trip, client side): {}\n{}  client: {}\n",
            self.url,
            self.concurrency,
            f.window_seconds,
            self.serials,
            f.completed,
            f.failed,
            f.per_second,
            f.latency_ms.summary(),
            failure_lines(&f.failures),
            f.client.note
        )
    }

    fn chart_titles(&self) -> (String, String) {
        (
            format!("attestca OCSP at {}", self.url),
            format!(
                "{} clients: {}",
                self.concurrency,
                self.figures.headline("responses")
            ),
        )
    }

    fn latency_label(&self) -> &'static str {
        "OCSP latency"
    }

    fn timeline(&self) -> &[TimelinePoint] {
        &self.figures.timeline
    }
}

/// A single-serial OCSP request (SHA-1 CertID, as most clients send; no nonce, so that the
/// pre-signed response can answer).
pub fn request_der(issuer: &IssuerHashes, serial: &[u8]) -> anyhow::Result<Vec<u8>> {
    let serial = SerialKey::new(serial).ok_or_else(|| anyhow::anyhow!("unusable serial"))?;
    let req_cert = issuer
        .cert_id(CertIdHash::Sha1, &serial)
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    Ok(OcspRequest {
        tbs_request: TbsRequest {
            version: 0,
            requestor_name: None,
            request_list: vec![Request {
                req_cert,
                single_request_extensions: None,
            }],
            request_extensions: None,
        },
        optional_signature: None,
    }
    .to_der()?)
}

/// The status in a single-response OCSP response.
pub fn response_status(der: &[u8]) -> anyhow::Result<Expected> {
    let response = OcspResponse::from_der(der)?;
    if response.response_status != OcspResponseStatus::Successful {
        anyhow::bail!("responseStatus {:?}", response.response_status);
    }
    let bytes = response
        .response_bytes
        .ok_or_else(|| anyhow::anyhow!("no responseBytes"))?;
    let basic = BasicOcspResponse::from_der(bytes.response.as_bytes())?;
    let data: ResponseData = basic.tbs_response_data.decode_as()?;
    match data.responses.first().map(|r| &r.cert_status) {
        Some(CertStatus::Good(_)) => Ok(Expected::Good),
        Some(CertStatus::Revoked(_)) => Ok(Expected::Revoked),
        Some(CertStatus::Unknown(_)) => Ok(Expected::Unknown),
        None => anyhow::bail!("no SingleResponse"),
    }
}

async fn query(http: &reqwest::Client, url: &str, body: &[u8]) -> anyhow::Result<Expected> {
    let response = http
        .post(url)
        .header("Content-Type", "application/ocsp-request")
        .body(body.to_vec())
        .send()
        .await?;
    let status = response.status();
    let body = response.bytes().await?;
    if !status.is_success() {
        anyhow::bail!("HTTP {status}");
    }
    response_status(&body)
}

/// Revokes `serial` over the operator API.
async fn revoke(operator: &reqwest::Client, server: &str, serial: &str) -> anyhow::Result<()> {
    let response = operator
        .post(format!(
            "{}/api/v1/certificates/{serial}/revoke",
            server.trim_end_matches('/')
        ))
        .header("Content-Type", "application/json")
        .body(r#"{"reason":"keyCompromise"}"#)
        .send()
        .await?;
    let status = response.status();
    if !status.is_success() {
        anyhow::bail!(
            "revoking {serial}: HTTP {status}: {}",
            response.text().await.unwrap_or_default()
        );
    }
    Ok(())
}

/// Runs the load; progress on stderr.
pub async fn run(target: &Target, options: &OcspOptions) -> Result<OcspReport, LoadError> {
    if options.concurrency == 0 || options.good + options.revoked + options.unknown == 0 {
        return Err(LoadError::Options(
            "--concurrency and at least one of --good/--revoked/--unknown must be positive".into(),
        ));
    }
    let setup_err = |e: anyhow::Error| LoadError::Setup {
        server: target.server.clone(),
        message: format!("{e:#}"),
    };
    let setup_start = Instant::now();
    eprintln!(
        "enrolling {} devices, revoking {} of them…",
        options.good + options.revoked,
        options.revoked
    );
    let fleet = super::fleet::enroll(target, options.good + options.revoked, 16).await?;
    let cacerts = target.client()?.cacerts().await.map_err(setup_err)?;
    let issuer = fleet
        .first()
        .and_then(|d| {
            cacerts
                .iter()
                .filter_map(|c| Certificate::from_der(c).ok())
                .find(|c| attestca_core::verify::issued_by(&d.certificate_der, c))
        })
        .or_else(|| {
            cacerts
                .iter()
                .filter_map(|c| Certificate::from_der(c).ok())
                .find(|c| c.tbs_certificate().subject() != c.tbs_certificate().issuer())
        })
        .ok_or_else(|| setup_err(anyhow::anyhow!("no issuing CA certificate in cacerts")))?;
    let hashes = IssuerHashes::of(&issuer).map_err(|e| setup_err(e.into()))?;
    let operator = reqwest::Client::builder()
        .tls_backend_preconfigured(
            crate::client::tls_config(
                &target.trust,
                Some((&options.operator_cert, &options.operator_key)),
            )
            .map_err(setup_err)?,
        )
        .build()
        .map_err(|e| setup_err(e.into()))?;
    let mut mix: Vec<(Expected, Vec<u8>)> = Vec::new();
    for (i, device) in fleet.iter().enumerate() {
        let serial = device
            .certificate
            .tbs_certificate()
            .serial_number()
            .as_bytes();
        let expected = if i < options.revoked {
            revoke(&operator, &target.server, &hex::encode(serial))
                .await
                .map_err(setup_err)?;
            Expected::Revoked
        } else {
            Expected::Good
        };
        mix.push((expected, request_der(&hashes, serial).map_err(setup_err)?));
    }
    for _ in 0..options.unknown {
        let mut serial = [0u8; 16];
        aws_lc_rs::rand::fill(&mut serial)
            .map_err(|_| setup_err(anyhow::anyhow!("random generator failed")))?;
        serial[0] = (serial[0] & 0x7f) | 0x40;
        mix.push((
            Expected::Unknown,
            request_der(&hashes, &serial).map_err(setup_err)?,
        ));
    }
    // The responder follows revocations within seconds: wait until it answers as expected.
    let http = reqwest::Client::new();
    let settle = Instant::now() + Duration::from_secs(60);
    for (expected, body) in &mix {
        loop {
            let got = query(&http, &options.url, body).await.map_err(setup_err)?;
            if got == *expected {
                break;
            }
            if Instant::now() > settle {
                return Err(setup_err(anyhow::anyhow!(
                    "the responder still answers {} for a serial expected {} after 60 s",
                    got.as_str(),
                    expected.as_str()
                )));
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
    let setup = setup_start.elapsed();
    // Interleave so that every worker sees the mix.
    mix.sort_by_key(|(e, b)| {
        (
            aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, b).as_ref()[0],
            *e,
        )
    });
    let mix = Arc::new(mix);

    let window = Window::open("OCSP responses", options.duration);
    let deadline = window.deadline;
    let next = Arc::new(AtomicU64::new(0));
    let mut workers = tokio::task::JoinSet::new();
    for _ in 0..options.concurrency {
        let (recorder, next, mix, url) = (
            window.recorder.clone(),
            next.clone(),
            mix.clone(),
            options.url.clone(),
        );
        let count = options.count;
        let http = reqwest::Client::new();
        workers.spawn(async move {
            while Instant::now() < deadline {
                let n = next.fetch_add(1, Ordering::Relaxed);
                if count.is_some_and(|max| n >= max) {
                    break;
                }
                let (expected, body) = &mix[(n % mix.len() as u64) as usize];
                let sent = Instant::now();
                match query(&http, &url, body).await {
                    Ok(got) if got == *expected => recorder.success(sent.elapsed()),
                    Ok(got) => recorder.failure(format!(
                        "ocsp: expected {}, got {}",
                        expected.as_str(),
                        got.as_str()
                    )),
                    Err(e) => {
                        let short: String = format!("{e:#}").chars().take(60).collect();
                        recorder.failure(format!("ocsp: {short}"))
                    }
                }
            }
        });
    }
    while workers.join_next().await.is_some() {}
    Ok(OcspReport {
        mode: "ocsp",
        url: options.url.clone(),
        concurrency: options.concurrency,
        serials: BTreeMap::from([
            ("good", options.good),
            ("revoked", options.revoked),
            ("unknown", options.unknown),
        ]),
        figures: window.close(0).await,
        setup_seconds: setup.as_secs_f64(),
    })
}
