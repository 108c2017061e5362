//! `attestca-rig load`: load modes against a running CA — `throughput` (closed loop, as fast as
//! the CA accepts attested enrollments) and `factory` (open loop, stations starting a board
//! every takt). Each produces a JSON report, a human summary and, on request, an SVG chart.

pub mod accounting;
pub mod factory;
pub mod fleet;
pub mod ocsp;
pub mod progress;
pub mod renew;
pub mod report;
pub mod server_metrics;
pub mod svg;
pub mod throughput;
pub mod window;

use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::client::{EstClient, tls_config};
use crate::personalisation::PersonalisationError;
use attestca_sim::secure_element::SimulatedVendor;

/// Why a load run could not run (failures of single operations are counted, not errors).
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    #[error("invalid option: {0}")]
    Options(String),
    #[error("connecting to {server}: {message}")]
    Setup { server: String, message: String },
    #[error("loading the simulated secure-element vendor from {path}: {message}")]
    Vendor { path: String, message: String },
    #[error("writing {path}: {source}")]
    Write {
        path: String,
        source: std::io::Error,
    },
    #[error(transparent)]
    Station(#[from] PersonalisationError),
    #[error("the run could not start: {0}")]
    Unreachable(String),
}

/// The CA a run targets and the rig identity it uses (the run touches nothing else).
#[derive(Clone, Debug)]
pub struct Target {
    pub server: String,
    pub label: Option<String>,
    pub trust: PathBuf,
    pub rig_cert: PathBuf,
    pub rig_key: PathBuf,
    pub vendor: PathBuf,
}

impl Target {
    /// A new EST client (its own keep-alive connection pool) with the rig's identity.
    pub fn client(&self) -> Result<EstClient, LoadError> {
        let setup = |e: anyhow::Error| LoadError::Setup {
            server: self.server.clone(),
            message: format!("{e:#}"),
        };
        let tls = tls_config(&self.trust, Some((&self.rig_cert, &self.rig_key))).map_err(setup)?;
        EstClient::new(&self.server, self.label.as_deref(), tls, None).map_err(setup)
    }

    pub fn vendor(&self) -> Result<Arc<SimulatedVendor>, LoadError> {
        SimulatedVendor::load(&self.vendor)
            .map(Arc::new)
            .map_err(|e| LoadError::Vendor {
                path: self.vendor.display().to_string(),
                message: format!("{e:#}"),
            })
    }
}

/// Writes a report or chart file.
pub fn write_file(path: &Path, contents: &[u8]) -> Result<(), LoadError> {
    std::fs::write(path, contents).map_err(|source| LoadError::Write {
        path: path.display().to_string(),
        source,
    })
}

/// Writes `report` as pretty JSON.
pub fn write_json<T: serde::Serialize>(path: &Path, report: &T) -> Result<(), LoadError> {
    let json = serde_json::to_vec_pretty(report).map_err(|e| LoadError::Write {
        path: path.display().to_string(),
        source: std::io::Error::other(e),
    })?;
    write_file(path, &json)
}

/// Failures by reason as indented lines, or "none".
pub fn failure_lines(failures: &std::collections::BTreeMap<String, u64>) -> String {
    if failures.is_empty() {
        return "  failures: none\n".into();
    }
    let mut out = String::from("  failures by reason:\n");
    for (reason, n) in failures {
        out.push_str(&format!("    {n:>8}  {reason}\n"));
    }
    out
}

/// What every mode's report offers for printing and charting.
pub trait LoadReport: serde::Serialize {
    /// The human summary.
    fn summary(&self) -> String;
    /// The chart's title and subtitle.
    fn chart_titles(&self) -> (String, String);
    /// What the chart's latency is.
    fn latency_label(&self) -> &'static str;
    fn timeline(&self) -> &[report::TimelinePoint];
}

/// Prints the summary and writes the JSON report and the SVG chart when asked.
pub fn publish(
    report: &impl LoadReport,
    json: Option<&Path>,
    svg: Option<&Path>,
) -> Result<(), LoadError> {
    print!("{}", report.summary());
    if let Some(path) = json {
        write_json(path, report)?;
        println!("JSON report: {}", path.display());
    }
    if let Some(path) = svg {
        let (title, subtitle) = report.chart_titles();
        let chart = svg::chart(&title, &subtitle, report.latency_label(), report.timeline());
        write_file(path, chart.as_bytes())?;
        println!("SVG chart: {}", path.display());
    }
    Ok(())
}
