//! The offline root's CRL: served as the root's ceremony leaves it in a file, re-read when the
//! file changes, so that relying parties can check the whole chain.

use std::path::{Path, PathBuf};
use std::sync::RwLock;
use std::time::SystemTime;

use der::Decode;
use x509_cert::crl::CertificateList;
use x509_cert::ext::pkix::crl::CrlNumber;

use crate::store::StoredCrl;

/// Why a CRL file could not be served.
#[derive(Debug, thiserror::Error)]
pub enum RootCrlError {
    #[error("{path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path}: not a CRL (DER or PEM X509 CRL): {reason}")]
    Parse { path: PathBuf, reason: String },
}

/// Reads and parses a CRL file (DER, or PEM `X509 CRL`).
pub fn read(path: &Path) -> Result<StoredCrl, RootCrlError> {
    let bytes = std::fs::read(path).map_err(|source| RootCrlError::Read {
        path: path.to_owned(),
        source,
    })?;
    let bad = |reason: String| RootCrlError::Parse {
        path: path.to_owned(),
        reason,
    };
    let der = if bytes.starts_with(b"-----BEGIN") {
        let (label, der) = pem_rfc7468::decode_vec(&bytes).map_err(|e| bad(e.to_string()))?;
        if label != "X509 CRL" {
            return Err(bad(format!("PEM label {label:?}")));
        }
        der
    } else {
        bytes
    };
    let crl = CertificateList::<x509_cert::certificate::Rfc5280>::from_der(&der)
        .map_err(|e| bad(e.to_string()))?;
    let tbs = &crl.tbs_cert_list;
    let unix = |t: &x509_cert::time::Time| crate::issuance::unix_seconds(t.to_system_time()) as i64;
    let number = tbs
        .crl_extensions
        .iter()
        .flatten()
        .find(|e| e.extn_id == const_oid::db::rfc5280::ID_CE_CRL_NUMBER)
        .and_then(|e| CrlNumber::from_der(e.extn_value.as_bytes()).ok())
        .and_then(|n| {
            let bytes = n.0.as_bytes();
            (bytes.len() <= 8).then(|| bytes.iter().fold(0i64, |acc, b| (acc << 8) | i64::from(*b)))
        })
        .unwrap_or(0);
    Ok(StoredCrl {
        number,
        entries: tbs
            .revoked_certificates
            .as_ref()
            .map_or(0, |r| r.len() as i64),
        this_update: unix(&tbs.this_update),
        next_update: tbs.next_update.as_ref().map(unix).unwrap_or(i64::MAX),
        der: der.into(),
    })
}

/// A CRL file, re-read when its modification time changes.
pub struct CrlFile {
    path: PathBuf,
    cached: RwLock<Option<(SystemTime, StoredCrl)>>,
}

impl CrlFile {
    pub fn new(path: PathBuf) -> Self {
        Self {
            path,
            cached: RwLock::new(None),
        }
    }

    /// The CRL as the file holds it now; the last good one if the file is being replaced.
    pub fn current(&self) -> Option<StoredCrl> {
        let modified = std::fs::metadata(&self.path)
            .and_then(|m| m.modified())
            .ok();
        if let (Some(modified), Ok(cached)) = (modified, self.cached.read())
            && let Some((seen, crl)) = cached.as_ref()
            && *seen == modified
        {
            return Some(crl.clone());
        }
        match (modified, read(&self.path)) {
            (Some(modified), Ok(crl)) => {
                if let Ok(mut cached) = self.cached.write() {
                    *cached = Some((modified, crl.clone()));
                }
                Some(crl)
            }
            (_, Err(e)) => {
                tracing::warn!(error = %e, "root CRL unavailable; serving the last one read");
                self.cached
                    .read()
                    .ok()
                    .and_then(|c| c.as_ref().map(|(_, crl)| crl.clone()))
            }
            (None, Ok(crl)) => Some(crl),
        }
    }
}
