//! PEM reading and writing for certificates and keys (files an operator handles).

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};

use der::{Decode, Encode};
use x509_cert::Certificate;

/// Errors reading or writing PEM files.
#[derive(Debug, thiserror::Error)]
pub enum PemError {
    #[error("{path}: {source}")]
    Io {
        path: String,
        source: std::io::Error,
    },
    #[error("{path}: not valid PEM/DER: {reason}")]
    Malformed { path: String, reason: String },
    #[error("{path}: holds no {label}")]
    Empty { path: String, label: &'static str },
}

fn io_err(path: &Path) -> impl FnOnce(std::io::Error) -> PemError + '_ {
    move |source| PemError::Io {
        path: path.display().to_string(),
        source,
    }
}

/// Encodes DER as PEM with the given label.
pub fn encode(label: &str, der: &[u8]) -> String {
    pem_rfc7468::encode_string(label, pem_rfc7468::LineEnding::LF, der)
        .unwrap_or_else(|_| String::new())
}

/// Reads every `CERTIFICATE` block of a PEM file, in order.
pub fn read_certificates(path: &Path) -> Result<Vec<Certificate>, PemError> {
    let text = fs::read(path).map_err(io_err(path))?;
    let certs = Certificate::load_pem_chain(&text).map_err(|e| PemError::Malformed {
        path: path.display().to_string(),
        reason: e.to_string(),
    })?;
    if certs.is_empty() {
        return Err(PemError::Empty {
            path: path.display().to_string(),
            label: "certificate",
        });
    }
    Ok(certs)
}

/// Reads every `CERTIFICATE` block of a PEM file as issued, without normalisation (for
/// evidence and vendor roots, whose signatures are checked over their exact bytes).
pub fn read_evidence_certificates(
    path: &Path,
) -> Result<Vec<crate::attestation::EvidenceCertificate>, PemError> {
    let text = fs::read(path).map_err(io_err(path))?;
    let certs = crate::attestation::EvidenceCertificate::load_pem_chain(&text).map_err(|e| {
        PemError::Malformed {
            path: path.display().to_string(),
            reason: e.to_string(),
        }
    })?;
    if certs.is_empty() {
        return Err(PemError::Empty {
            path: path.display().to_string(),
            label: "certificate",
        });
    }
    Ok(certs)
}

/// Reads the DER of every `CERTIFICATE` block of a PEM file.
pub fn read_certificate_ders(path: &Path) -> Result<Vec<Vec<u8>>, PemError> {
    read_certificates(path)?
        .iter()
        .map(|c| {
            c.to_der().map_err(|e| PemError::Malformed {
                path: path.display().to_string(),
                reason: e.to_string(),
            })
        })
        .collect()
}

/// Reads a PKCS#8 `PRIVATE KEY` PEM file and returns its DER.
pub fn read_private_key(path: &Path) -> Result<Vec<u8>, PemError> {
    let text = fs::read_to_string(path).map_err(io_err(path))?;
    let (label, der) =
        pem_rfc7468::decode_vec(text.trim().as_bytes()).map_err(|e| PemError::Malformed {
            path: path.display().to_string(),
            reason: e.to_string(),
        })?;
    if label != "PRIVATE KEY" {
        return Err(PemError::Malformed {
            path: path.display().to_string(),
            reason: format!("expected a PKCS#8 PRIVATE KEY block, found {label}"),
        });
    }
    Ok(der)
}

/// Writes certificates as concatenated PEM.
pub fn write_certificates(path: &Path, ders: &[&[u8]]) -> Result<(), PemError> {
    let mut text = String::new();
    for der in ders {
        text.push_str(&encode("CERTIFICATE", der));
    }
    write_file(path, text.as_bytes(), 0o644)
}

/// Writes a PKCS#8 private key as PEM, readable by the owner only.
pub fn write_private_key(path: &Path, pkcs8_der: &[u8]) -> Result<(), PemError> {
    write_file(path, encode("PRIVATE KEY", pkcs8_der).as_bytes(), 0o600)
}

/// Creates a PKCS#8 private key file (PEM, owner-only) that must not exist yet: of processes
/// racing to create it, one wins and the others get an `AlreadyExists` error.
pub fn create_private_key(path: &Path, pkcs8_der: &[u8]) -> Result<(), PemError> {
    let tmp = write_temporary(path, encode("PRIVATE KEY", pkcs8_der).as_bytes(), 0o600)?;
    // A hard link, unlike a rename, never replaces an existing file.
    let linked = fs::hard_link(&tmp, path).map_err(io_err(path));
    let _ = fs::remove_file(&tmp);
    linked
}

/// Writes a file atomically (temporary file + rename) with the given permissions.
pub fn write_file(path: &Path, contents: &[u8], mode: u32) -> Result<(), PemError> {
    let tmp = write_temporary(path, contents, mode)?;
    fs::rename(&tmp, path).map_err(io_err(path))?;
    Ok(())
}

/// Writes `contents` to a new temporary file next to `path`, synced to disk.
fn write_temporary(path: &Path, contents: &[u8], mode: u32) -> Result<PathBuf, PemError> {
    if let Some(dir) = path.parent() {
        fs::create_dir_all(dir).map_err(io_err(dir))?;
    }
    // A name of its own, so that concurrent writers (processes or threads) never share it.
    static WRITES: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let tmp = path.with_extension(format!(
        "tmp-write-{}-{}",
        std::process::id(),
        WRITES.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
    ));
    let mut options = fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    // The mode is Unix's; elsewhere (a rig on a Windows factory PC) the directory's ACLs apply.
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, mode);
    #[cfg(not(unix))]
    let _ = mode;
    let mut file = options.open(&tmp).map_err(io_err(&tmp))?;
    file.write_all(contents).map_err(io_err(&tmp))?;
    file.sync_all().map_err(io_err(&tmp))?;
    Ok(tmp)
}

/// Decodes one DER certificate.
pub fn certificate_from_der(der: &[u8]) -> der::Result<Certificate> {
    Certificate::from_der(der)
}
