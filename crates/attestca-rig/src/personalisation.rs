//! The personalisation of one board, as a factory rig runs it: power-on → nonce → secure-element
//! keygen → attestation → CSR → enroll → import → proof of possession → end-of-line check, with
//! a manufacturing log record (one JSON line per board) of what happened and how long each
//! step took against the station's takt budget.
//!
//! The secure element is the software simulation of [`crate::rig::secure_element`]; its key
//! generation delay is drawn from a configurable range to stand in for a real chip's.

use std::fmt;
use std::io::Write as _;
use std::path::Path;
use std::str::FromStr;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use der::Decode;
use serde::Serialize;
use x509_cert::Certificate;

use crate::client::EstClient;
use attestca_sim::device::DeviceKey;
use attestca_sim::secure_element::{KeyClaims, SimulatedDevice, SimulatedVendor};

/// What can go wrong on a station, outside a board's own steps.
#[derive(Debug, thiserror::Error)]
pub enum PersonalisationError {
    #[error("keygen delay {0:?}: expected MS or MIN..MAX in milliseconds (e.g. 50..500)")]
    KeygenDelay(String),
    #[error("the station could not fetch the CA certificates (cacerts): {0}")]
    Cacerts(String),
    #[error("the manufacturing log {path}: {source}")]
    Log {
        path: String,
        source: std::io::Error,
    },
}

/// The steps of a board's personalisation, in order.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Step {
    /// The board arrives and its secure element answers (the simulation manufactures one).
    PowerOn,
    /// A fresh nonce from the CA for the attestation.
    Nonce,
    /// The secure element generates the device key (with the simulated chip delay).
    Keygen,
    /// The secure element attests the key, bound to the nonce.
    Attestation,
    /// The rig builds the CSR carrying the evidence.
    Csr,
    /// EST simpleenroll.
    Enroll,
    /// The certificate is parsed and checked to carry the device key, then stored on the board.
    Import,
    /// The device signs a random challenge; the rig verifies it with the certificate's key.
    ProofOfPossession,
    /// The certificate chains to cacerts; its serial is recorded.
    EndOfLine,
}

impl Step {
    pub const ALL: [Step; 9] = [
        Step::PowerOn,
        Step::Nonce,
        Step::Keygen,
        Step::Attestation,
        Step::Csr,
        Step::Enroll,
        Step::Import,
        Step::ProofOfPossession,
        Step::EndOfLine,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Step::PowerOn => "power_on",
            Step::Nonce => "nonce",
            Step::Keygen => "keygen",
            Step::Attestation => "attestation",
            Step::Csr => "csr",
            Step::Enroll => "enroll",
            Step::Import => "import",
            Step::ProofOfPossession => "proof_of_possession",
            Step::EndOfLine => "end_of_line",
        }
    }

    /// Whether the step is a round trip to the CA.
    pub fn is_ca(self) -> bool {
        matches!(self, Step::Nonce | Step::Enroll)
    }
}

impl fmt::Display for Step {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The simulated secure element's key-generation time: uniform in `min..=max` milliseconds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct KeygenDelay {
    pub min_ms: u64,
    pub max_ms: u64,
}

impl KeygenDelay {
    /// A draw from the range.
    pub fn sample(&self) -> Duration {
        let span = self.max_ms - self.min_ms;
        let extra = if span == 0 {
            0
        } else {
            let mut bytes = [0u8; 8];
            // A failing generator only makes the delay the minimum.
            let _ = aws_lc_rs::rand::fill(&mut bytes);
            u64::from_le_bytes(bytes) % (span + 1)
        };
        Duration::from_millis(self.min_ms + extra)
    }
}

impl FromStr for KeygenDelay {
    type Err = PersonalisationError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bad = || PersonalisationError::KeygenDelay(s.to_owned());
        let parse = |v: &str| v.trim().parse::<u64>().map_err(|_| bad());
        let (min_ms, max_ms) = match s.split_once("..") {
            Some((a, b)) => (parse(a)?, parse(b.trim_start_matches('='))?),
            None => {
                let v = parse(s)?;
                (v, v)
            }
        };
        if min_ms > max_ms || max_ms > 600_000 {
            return Err(bad());
        }
        Ok(Self { min_ms, max_ms })
    }
}

impl fmt::Display for KeygenDelay {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}..{} ms", self.min_ms, self.max_ms)
    }
}

/// How long each step took, in milliseconds (absent: not reached).
#[derive(Clone, Debug, Default, Serialize)]
pub struct StepTimes {
    #[serde(flatten)]
    pub ms: std::collections::BTreeMap<&'static str, f64>,
    #[serde(skip)]
    pub order: Vec<(Step, Duration)>,
}

impl StepTimes {
    fn record(&mut self, step: Step, took: Duration) {
        self.ms.insert(step.as_str(), millis(took));
        self.order.push((step, took));
    }

    /// Time of one step, if it ran.
    pub fn get(&self, step: Step) -> Option<Duration> {
        self.order.iter().find(|(s, _)| *s == step).map(|(_, d)| *d)
    }

    /// Time spent waiting for the CA (nonce and enroll round trips).
    pub fn ca(&self) -> Duration {
        self.order
            .iter()
            .filter(|(s, _)| s.is_ca())
            .map(|(_, d)| *d)
            .sum()
    }
}

/// Milliseconds as a float, rounded to microseconds.
pub fn millis(d: Duration) -> f64 {
    (d.as_micros() as f64) / 1000.0
}

/// Pass or fail.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Outcome {
    Pass,
    Fail,
}

/// Why a board failed.
#[derive(Clone, Debug, Serialize)]
pub struct Failure {
    pub step: Step,
    /// The HTTP status, when the CA answered with an error.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub http_status: Option<u16>,
    pub message: String,
}

impl Failure {
    pub fn new(step: Step, error: impl fmt::Display) -> Self {
        let message = format!("{error:#}");
        Self {
            step,
            http_status: http_status_in(&message),
            message,
        }
    }

    /// A short key to count failures by: the step and the HTTP status or the first words.
    pub fn reason(&self) -> String {
        match self.http_status {
            Some(status) => format!("{}: HTTP {status}", self.step),
            None => {
                let short: String = self.message.chars().take(60).collect();
                format!("{}: {short}", self.step)
            }
        }
    }
}

/// The `NNN` of an "HTTP NNN" in an error message.
fn http_status_in(message: &str) -> Option<u16> {
    let at = message.find("HTTP ")?;
    message.get(at + 5..at + 8)?.parse().ok()
}

/// One manufacturing log record (a JSON line per board).
#[derive(Clone, Debug, Serialize)]
pub struct ManufacturingRecord {
    /// Seconds since the Unix epoch when the board started.
    pub started_unix: f64,
    pub station: String,
    pub unit_serial: String,
    /// The secure element's serial (hex), once powered on.
    pub se_id: Option<String>,
    /// The issued certificate's serial (hex), once enrolled.
    pub certificate_serial: Option<String>,
    pub steps_ms: StepTimes,
    pub total_ms: f64,
    /// The part of `total_ms` spent waiting for the CA (nonce + enroll).
    pub ca_ms: f64,
    pub takt_ms: f64,
    pub takt_met: bool,
    pub outcome: Outcome,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub failure: Option<Failure>,
}

impl ManufacturingRecord {
    /// The record as one JSON line.
    pub fn to_json_line(&self) -> String {
        // Serialising plain data cannot fail; an empty object keeps the log line-oriented.
        serde_json::to_string(self).unwrap_or_else(|_| "{}".into())
    }

    /// A human table of the steps against the takt budget.
    pub fn table(&self) -> String {
        let mut out = String::new();
        let takt = self.takt_ms.max(f64::MIN_POSITIVE);
        out.push_str(&format!(
            "board {} (secure element {}) on {}\n",
            self.unit_serial,
            self.se_id.as_deref().unwrap_or("-"),
            self.station
        ));
        out.push_str(&format!("  {:<20} {:>10} {:>8}\n", "step", "ms", "% takt"));
        for (step, took) in &self.steps_ms.order {
            let ms = millis(*took);
            out.push_str(&format!(
                "  {:<20} {:>10.3} {:>7.1}%{}\n",
                step.as_str(),
                ms,
                100.0 * ms / takt,
                if step.is_ca() { "  (CA)" } else { "" }
            ));
        }
        out.push_str(&format!(
            "  {:<20} {:>10.3} {:>7.1}%  of a {:.0} ms takt: {}\n",
            "total",
            self.total_ms,
            100.0 * self.total_ms / takt,
            self.takt_ms,
            if self.takt_met { "MET" } else { "MISSED" }
        ));
        out.push_str(&format!(
            "  {:<20} {:>10.3} {:>7.1}%\n",
            "of which CA",
            self.ca_ms,
            100.0 * self.ca_ms / takt
        ));
        match (&self.outcome, &self.failure) {
            (Outcome::Pass, _) => out.push_str(&format!(
                "  outcome: PASS, certificate serial {}\n",
                self.certificate_serial.as_deref().unwrap_or("-")
            )),
            (Outcome::Fail, Some(f)) => {
                out.push_str(&format!("  outcome: FAIL at {}: {}\n", f.step, f.message))
            }
            (Outcome::Fail, None) => out.push_str("  outcome: FAIL\n"),
        }
        out
    }
}

/// Appends manufacturing records to a JSON-lines file.
pub struct ManufacturingLog {
    path: String,
    file: std::sync::Mutex<std::io::BufWriter<std::fs::File>>,
}

impl ManufacturingLog {
    pub fn open(path: &Path) -> Result<Self, PersonalisationError> {
        let file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
            .map_err(|source| PersonalisationError::Log {
                path: path.display().to_string(),
                source,
            })?;
        Ok(Self {
            path: path.display().to_string(),
            file: std::sync::Mutex::new(std::io::BufWriter::new(file)),
        })
    }

    pub fn append(&self, record: &ManufacturingRecord) -> Result<(), PersonalisationError> {
        let mut file = self.file.lock().unwrap_or_else(|p| p.into_inner());
        writeln!(file, "{}", record.to_json_line())
            .and_then(|()| file.flush())
            .map_err(|source| PersonalisationError::Log {
                path: self.path.clone(),
                source,
            })
    }
}

/// A personalisation station: its connection to the CA, the secure-element vendor, the CA
/// certificates for the end-of-line check, and its budget.
pub struct Station {
    pub name: String,
    est: EstClient,
    vendor: Arc<SimulatedVendor>,
    cacerts: Vec<Vec<u8>>,
    keygen: KeygenDelay,
    takt: Duration,
}

impl Station {
    /// Sets a station up: fetches cacerts once (a line does it at shift start).
    pub async fn new(
        name: String,
        est: EstClient,
        vendor: Arc<SimulatedVendor>,
        keygen: KeygenDelay,
        takt: Duration,
    ) -> Result<Self, PersonalisationError> {
        let cacerts = est
            .cacerts()
            .await
            .map_err(|e| PersonalisationError::Cacerts(format!("{e:#}")))?;
        Ok(Self {
            name,
            est,
            vendor,
            cacerts,
            keygen,
            takt,
        })
    }

    pub fn takt(&self) -> Duration {
        self.takt
    }

    /// Personalises one board; always returns its record, passed or failed.
    pub async fn personalise(&self, unit_serial: &str) -> ManufacturingRecord {
        let started_unix = SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .map(|d| d.as_secs_f64())
            .unwrap_or(0.0);
        let start = Instant::now();
        let mut board = Board {
            steps: StepTimes::default(),
            se_id: None,
            certificate_serial: None,
        };
        let failure = self.run_steps(unit_serial, &mut board).await.err();
        let total = start.elapsed();
        ManufacturingRecord {
            started_unix,
            station: self.name.clone(),
            unit_serial: unit_serial.to_owned(),
            se_id: board.se_id,
            certificate_serial: board.certificate_serial,
            ca_ms: millis(board.steps.ca()),
            steps_ms: board.steps,
            total_ms: millis(total),
            takt_ms: millis(self.takt),
            takt_met: failure.is_none() && total <= self.takt,
            outcome: if failure.is_none() {
                Outcome::Pass
            } else {
                Outcome::Fail
            },
            failure,
        }
    }

    async fn run_steps(&self, unit_serial: &str, board: &mut Board) -> Result<(), Failure> {
        let element: SimulatedDevice = board
            .step(Step::PowerOn, async { self.vendor.manufacture() })
            .await?;
        board.se_id = Some(hex::encode(&element.serial));
        let nonce = board.step(Step::Nonce, self.est.nonce()).await?;
        let keygen_delay = self.keygen.sample();
        let key = board
            .step(Step::Keygen, async {
                tokio::time::sleep(keygen_delay).await;
                DeviceKey::generate()
            })
            .await?;
        let attestation = board
            .step(Step::Attestation, async {
                let attestation =
                    element.attest(&key.public_key()?, &nonce, KeyClaims::default())?;
                element.evidence_attribute(&attestation)
            })
            .await?;
        let csr = board
            .step(Step::Csr, async {
                key.csr_with_attributes(unit_serial, vec![attestation])
            })
            .await?;
        let issued = board
            .step(Step::Enroll, self.est.simpleenroll(&csr))
            .await?;
        let certificate = board
            .step(Step::Import, async { import(&issued, &key) })
            .await?;
        board
            .step(Step::ProofOfPossession, async {
                proof_of_possession(&key, &certificate)
            })
            .await?;
        let serial = board
            .step(Step::EndOfLine, async {
                chains_to(&issued, &self.cacerts)?;
                Ok(hex::encode(
                    certificate.tbs_certificate().serial_number().as_bytes(),
                ))
            })
            .await?;
        board.certificate_serial = Some(serial);
        Ok(())
    }
}

struct Board {
    steps: StepTimes,
    se_id: Option<String>,
    certificate_serial: Option<String>,
}

impl Board {
    /// Runs and times one step; an error becomes the board's failure at that step.
    async fn step<T>(
        &mut self,
        step: Step,
        work: impl Future<Output = anyhow::Result<T>>,
    ) -> Result<T, Failure> {
        let start = Instant::now();
        let result = work.await;
        self.steps.record(step, start.elapsed());
        result.map_err(|e| Failure::new(step, e))
    }
}

/// The import check: the certificate parses and certifies the device's own key.
fn import(issued: &[u8], key: &DeviceKey) -> anyhow::Result<Certificate> {
    let certificate = Certificate::from_der(issued)?;
    if certificate.tbs_certificate().subject_public_key_info() != &key.public_key()? {
        anyhow::bail!("the issued certificate does not carry the device's key");
    }
    Ok(certificate)
}

/// Challenge-response: the device signs 32 random bytes, the rig verifies with the key in the
/// issued certificate.
pub fn proof_of_possession(key: &DeviceKey, certificate: &Certificate) -> anyhow::Result<()> {
    let mut challenge = [0u8; 32];
    aws_lc_rs::rand::fill(&mut challenge)
        .map_err(|_| anyhow::anyhow!("random generator failed"))?;
    let signature = key.sign(&challenge);
    if !attestca_core::verify::verify(
        certificate.tbs_certificate().subject_public_key_info(),
        const_oid::db::rfc5912::ECDSA_WITH_SHA_256,
        &challenge,
        &signature,
    ) {
        anyhow::bail!("the device's answer does not verify with the certificate's key");
    }
    Ok(())
}

/// The end-of-line check: the certificate chains through the cacerts certificates (a CMS
/// `SET OF`, so in no particular order) to a self-signed root among them.
pub fn chains_to(certificate: &[u8], pool: &[Vec<u8>]) -> anyhow::Result<()> {
    let parsed = pool
        .iter()
        .map(|d| Certificate::from_der(d))
        .collect::<Result<Vec<_>, _>>()?;
    let mut child = certificate.to_vec();
    for _ in 0..=pool.len() {
        let Some(i) = parsed
            .iter()
            .position(|p| attestca_core::verify::issued_by(&child, p))
        else {
            anyhow::bail!("the certificate does not chain to the CA certificates from cacerts");
        };
        if pool[i] == child {
            return Ok(()); // reached a self-signed root
        }
        child = pool[i].clone();
    }
    anyhow::bail!("the cacerts chain loops")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keygen_delay_parses_ranges_and_single_values() {
        assert_eq!(
            "50..500".parse::<KeygenDelay>().ok(),
            Some(KeygenDelay {
                min_ms: 50,
                max_ms: 500
            })
        );
        assert_eq!(
            "7".parse::<KeygenDelay>().ok(),
            Some(KeygenDelay {
                min_ms: 7,
                max_ms: 7
            })
        );
        assert!("500..50".parse::<KeygenDelay>().is_err());
        assert!("fast".parse::<KeygenDelay>().is_err());
        let d = KeygenDelay {
            min_ms: 10,
            max_ms: 20,
        };
        for _ in 0..100 {
            let s = d.sample();
            assert!(s >= Duration::from_millis(10) && s <= Duration::from_millis(20));
        }
    }

    #[test]
    fn failure_reasons_group_by_step_and_status() {
        let f = Failure::new(
            Step::Enroll,
            "simpleenroll: HTTP 503 Service Unavailable: busy",
        );
        assert_eq!(f.http_status, Some(503));
        assert_eq!(f.reason(), "enroll: HTTP 503");
        let f = Failure::new(Step::Nonce, "connection refused");
        assert_eq!(f.reason(), "nonce: connection refused");
    }
}
