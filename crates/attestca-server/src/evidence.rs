//! `attestca evidence verify`: the attestation checks of the CA, offline, for operators on the
//! line. The checks themselves are the core's ([`attestca_core::attestation::examination`]);
//! this module only finds what to check against — the vendors and a profile of a
//! configuration file, or a directory of vendor files — and the time to verify at.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, UNIX_EPOCH};

use attestca_core::attestation::examination::{Examination, Verdict};
use attestca_core::attestation::gate::AttestationGate;
use attestca_core::attestation::vendors::VendorConfig;
use attestca_core::attestation::{Clock, FixedClock, SystemClock, VendorTrustStore};
use attestca_core::policy::EnrollmentPolicy;
use figment::Figment;
use figment::providers::{Format, Toml};

use crate::config::{Config, ConfigError};

/// Where the trust store (and a profile) come from.
pub enum TrustSource {
    /// A configuration file, or the development configuration: its vendors and the profile
    /// named by [`EvidenceCheck::profile`].
    Config(Box<Config>),
    /// A directory of `*.toml` files, each one vendor with the keys of an
    /// `[[attestation.vendors]]` entry (`roots` relative to the directory). No profile.
    VendorDirectory(PathBuf),
}

/// One `attestca evidence verify` run.
pub struct EvidenceCheck {
    pub source: TrustSource,
    /// The profile whose CSR rules and attestation policy apply (with a configuration).
    pub profile: Option<String>,
    /// Unix seconds to verify at (certificates' validity); now when absent.
    pub at: Option<i64>,
    pub nonce: Option<Vec<u8>>,
}

/// Why the check could not run (not a verdict on the CSR).
#[derive(Debug, thiserror::Error)]
pub enum EvidenceCheckError {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error("vendor file {path}: {reason}")]
    VendorFile { path: PathBuf, reason: String },
    #[error("no profile {0:?} in the configuration")]
    UnknownProfile(String),
}

impl EvidenceCheck {
    /// Examines a CSR's DER.
    pub fn run(&self, csr_der: &[u8]) -> Result<Verdict, EvidenceCheckError> {
        let (vendors, profile) = match &self.source {
            TrustSource::Config(config) => {
                let vendors = VendorTrustStore::from_config(&config.attestation.vendors)
                    .map_err(ConfigError::from)?;
                let label = self
                    .profile
                    .as_deref()
                    .unwrap_or(crate::config::DEFAULT_PROFILE);
                let profile = config
                    .profiles
                    .get(label)
                    .ok_or_else(|| EvidenceCheckError::UnknownProfile(label.to_owned()))?;
                let policy =
                    EnrollmentPolicy::from_config(label, profile).map_err(ConfigError::from)?;
                (vendors, Some(policy))
            }
            TrustSource::VendorDirectory(dir) => (vendor_directory(dir)?, None),
        };
        let clock: Arc<dyn Clock> = match self.at {
            Some(at) => Arc::new(FixedClock(
                UNIX_EPOCH + Duration::from_secs(u64::try_from(at).unwrap_or(0)),
            )),
            None => Arc::new(SystemClock),
        };
        let gate = AttestationGate::new(vendors, clock);
        Ok(Examination {
            gate: &gate,
            profile: profile.as_ref(),
            nonce: self.nonce.as_deref(),
        }
        .examine(csr_der))
    }
}

/// The vendors of a directory of vendor files, in file-name order.
fn vendor_directory(dir: &Path) -> Result<VendorTrustStore, EvidenceCheckError> {
    let unreadable = |path: &Path, reason: String| EvidenceCheckError::VendorFile {
        path: path.to_owned(),
        reason,
    };
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .map_err(|e| unreadable(dir, e.to_string()))?
        .filter_map(|entry| entry.ok().map(|e| e.path()))
        .filter(|path| path.extension().is_some_and(|e| e == "toml"))
        .collect();
    files.sort();
    if files.is_empty() {
        return Err(unreadable(dir, "no *.toml vendor files".into()));
    }
    let mut vendors = Vec::new();
    for path in files {
        let mut vendor: VendorConfig = Figment::from(Toml::file_exact(&path))
            .extract()
            .map_err(|e| unreadable(&path, e.to_string()))?;
        for root in &mut vendor.roots {
            if root.is_relative() {
                *root = dir.join(&*root);
            }
        }
        vendors.push(vendor);
    }
    VendorTrustStore::from_config(&vendors).map_err(|e| EvidenceCheckError::Config(e.into()))
}
