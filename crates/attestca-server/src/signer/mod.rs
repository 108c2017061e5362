//! The CA key in the server: the PKCS#11 backend, opening the configured key, and the metered
//! wrapper every key is used through.
//!
//! The [`Signer`] trait, [`CaKeyAlgorithm`] and the software backend live in
//! `attestca_core::signer`, below everything that signs.

pub mod pkcs11;

use std::sync::Arc;

pub use attestca_core::signer::{CaKeyAlgorithm, Signer, SignerError, software};

use x509_cert::SubjectPublicKeyInfo;

use crate::config::SignerConfig;

/// Opens the configured signing key. The key must already exist (see `attestca init`).
pub fn open(config: &SignerConfig) -> Result<Arc<dyn Signer>, SignerError> {
    match config {
        SignerConfig::Software(sw) => Ok(Arc::new(software::SoftwareSigner::open(sw)?)),
        SignerConfig::Pkcs11(hsm) => Ok(Arc::new(pkcs11::Pkcs11Signer::open(hsm)?)),
    }
}

/// Generates a new signing key in the configured backend (inside the token for PKCS#11) and
/// opens it. Refuses to replace an existing key.
pub fn generate(config: &SignerConfig) -> Result<Arc<dyn Signer>, SignerError> {
    match config {
        SignerConfig::Software(sw) => Ok(Arc::new(software::SoftwareSigner::generate(sw)?)),
        SignerConfig::Pkcs11(hsm) => Ok(Arc::new(pkcs11::Pkcs11Signer::generate(hsm)?)),
    }
}

/// A signer that counts and times every signature (`attestca_signer_*` metrics) and reports
/// the key's availability (`attestca_dependency_available{dependency="ca_key"|"ocsp_key"}`,
/// and a recovery in `attestca_dependency_recoveries_total`).
pub struct MeteredSigner {
    inner: Arc<dyn Signer>,
    /// Which key this is in the metrics: `ca` or `ocsp`.
    key: &'static str,
    /// `ca_key` or `ocsp_key`.
    dependency: &'static str,
    /// Whether the last operation found the key down.
    down: std::sync::atomic::AtomicBool,
}

impl MeteredSigner {
    /// Wraps `inner`, labelled as `key` in the metrics.
    pub fn wrap(inner: Arc<dyn Signer>, key: &'static str) -> Arc<dyn Signer> {
        let dependency = match key {
            "ocsp" => "ocsp_key",
            _ => "ca_key",
        };
        crate::metrics::METRICS
            .dependency_available
            .with_label_values(&[dependency])
            .set(1);
        Arc::new(Self {
            inner,
            key,
            dependency,
            down: std::sync::atomic::AtomicBool::new(false),
        })
    }

    /// Keeps the availability gauge and the recovery counter in step with an outcome.
    fn observe<T>(&self, result: &Result<T, SignerError>) {
        use std::sync::atomic::Ordering;
        let metrics = &crate::metrics::METRICS;
        let up = result.is_ok() || self.inner.available();
        metrics
            .dependency_available
            .with_label_values(&[self.dependency])
            .set(i64::from(up));
        let was_down = self.down.swap(!up, Ordering::SeqCst);
        if up && was_down {
            metrics
                .dependency_recoveries
                .with_label_values(&[self.dependency])
                .inc();
        }
    }
}

impl Signer for MeteredSigner {
    fn algorithm(&self) -> CaKeyAlgorithm {
        self.inner.algorithm()
    }

    fn public_key(&self) -> &SubjectPublicKeyInfo {
        self.inner.public_key()
    }

    fn sign(&self, message: &[u8]) -> Result<Vec<u8>, SignerError> {
        let metrics = &crate::metrics::METRICS;
        let started = std::time::Instant::now();
        let result = self.inner.sign(message);
        let backend = self.inner.backend();
        metrics
            .signer_duration
            .with_label_values(&[backend, self.key])
            .observe(started.elapsed().as_secs_f64());
        metrics
            .signer_operations
            .with_label_values(&[
                backend,
                self.key,
                if result.is_ok() { "ok" } else { "error" },
            ])
            .inc();
        self.observe(&result);
        result
    }

    fn backend(&self) -> &'static str {
        self.inner.backend()
    }

    fn available(&self) -> bool {
        self.inner.available()
    }

    fn recover(&self) -> Result<(), SignerError> {
        let result = self.inner.recover();
        self.observe(&result);
        result
    }
}
