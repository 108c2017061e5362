//! Configuration: a TOML file, every key overridable from `ATTESTCA_<SECTION>__<KEY>` variables,
//! secrets only from the environment or files.
//!
//! Secrets (token PIN, database password, Basic-auth passwords) are deliberately absent from
//! [`Config`]: they are read by [`Config::resolve_signer`] and friends into [`SecretString`]s,
//! whose `Debug` output is redacted, so they cannot end up in a log line by accident.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use figment::Figment;
use figment::providers::{Env, Format, Serialized, Toml};
use secrecy::SecretString;
use serde::{Deserialize, Serialize};

pub use attestca_core::config::{
    DeviceKeyAlgorithm, InvalidConfig, KeyUsageName, OcspNoncePolicy, ProfileConfig, SanType,
    SoftwareSignerConfig, SubjectAttribute,
};

use attestca_core::signer::CaKeyAlgorithm;

/// Errors loading or checking the configuration.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("configuration: {0}")]
    Parse(String),
    #[error("configuration: {0}")]
    Invalid(String),
    #[error("secret {what}: {reason}")]
    Secret { what: String, reason: String },
}

impl From<InvalidConfig> for ConfigError {
    fn from(e: InvalidConfig) -> Self {
        ConfigError::Invalid(e.0)
    }
}

/// The whole configuration file.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    #[serde(default)]
    pub server: ServerConfig,
    pub tls: TlsConfig,
    #[serde(default)]
    pub database: DatabaseConfig,
    pub signer: SignerSection,
    pub ca: CaConfig,
    #[serde(default)]
    pub rigs: RigsConfig,
    #[serde(default)]
    pub operators: OperatorsConfig,
    #[serde(default)]
    pub limits: LimitsConfig,
    #[serde(default)]
    pub attestation: AttestationConfig,
    #[serde(default)]
    pub attestation_keys: AttestationKeysConfig,
    #[serde(default)]
    pub revocation: RevocationConfig,
    #[serde(default)]
    pub transparency: TransparencyConfig,
    pub profiles: BTreeMap<String, ProfileConfig>,
}

/// `[transparency]`: the issuance log (docs/transparency.md).
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TransparencyConfig {
    /// Every issued certificate gets a log entry in its commit, and the log is served at
    /// `/log/<ca.name>/` on the plain-HTTP listener.
    pub enabled: bool,
    /// Appended to `ca.name` to form the log's origin (the checkpoint's first line, and the
    /// name of its key), e.g. `".ca.example.com/log"`.
    pub origin_suffix: String,
    /// How often pending entries are integrated into the tree and a checkpoint signed.
    pub integrate_interval_ms: u64,
    /// The checkpoint key's label on the PKCS#11 token (default `attestca-log-<ca.name>`);
    /// with the software backend the key is `<data_dir>/pki/log-checkpoint.key`.
    pub key_label: Option<String>,
    /// Witnesses asked to cosign every new checkpoint (C2SP tlog-witness); their
    /// cosignatures are served with the checkpoint.
    pub witnesses: Vec<WitnessConfig>,
    /// Database reads for the public log routes (`checkpoint`, tiles, `index/`) at once,
    /// per instance; beyond, `503 overload.log_reads` (put a CDN or a mirror in front).
    pub max_concurrent_reads: usize,
}

/// `[[transparency.witnesses]]`: one witness.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WitnessConfig {
    /// The witness's submission prefix: the log POSTs to `<url>/add-checkpoint`.
    pub url: String,
    /// Its cosigner verifier key, `<name>+<key id>+<base64(0x04 ‖ Ed25519 key)>`.
    pub key: String,
}

impl TransparencyConfig {
    pub fn key_label_for(&self, ca_name: &str) -> String {
        self.key_label
            .clone()
            .unwrap_or_else(|| format!("attestca-log-{ca_name}"))
    }
}

impl Default for TransparencyConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            origin_suffix: String::new(),
            integrate_interval_ms: 500,
            key_label: None,
            witnesses: Vec::new(),
            max_concurrent_reads: 8,
        }
    }
}

/// `[revocation]`: CRL publication and the OCSP responder.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RevocationConfig {
    /// nextUpdate − thisUpdate of each CRL; a new one is made at half that age at the latest.
    pub crl_validity_secs: u64,
    /// How often each instance looks for new revocations (and a newer stored CRL).
    pub crl_poll_secs: u64,
    /// Revoked certificates leave the CRL this long after they expire.
    pub crl_expired_grace_secs: u64,
    /// Serve OCSP (`POST /ocsp`, `GET /ocsp/<request>`) on the plain-HTTP listener.
    pub ocsp_enabled: bool,
    /// nextUpdate − thisUpdate of each OCSP response; pre-signed responses are re-signed by
    /// the time they are half that old.
    pub ocsp_validity_secs: u64,
    /// Validity of the delegated OCSP responder certificate; renewed at half of it. At least
    /// twice `ocsp_validity_secs`.
    pub ocsp_responder_validity_secs: u64,
    /// A request's nonce: `echo` (a live-signed response carrying it) or `ignore` (the
    /// pre-signed response, without nonce).
    pub ocsp_nonce: OcspNoncePolicy,
    /// OCSP responses signed at once on request (nonces, new or unknown serials, several
    /// certificates in one request); beyond it requests are answered `tryLater`.
    pub ocsp_live_signing_concurrency: usize,
    /// How often each instance looks for certificates issued or revoked since its last look.
    pub ocsp_poll_secs: u64,
}

impl Default for RevocationConfig {
    fn default() -> Self {
        Self {
            crl_validity_secs: 86_400,
            crl_poll_secs: 2,
            crl_expired_grace_secs: 86_400,
            ocsp_enabled: true,
            ocsp_validity_secs: 14_400,
            ocsp_responder_validity_secs: 86_400,
            ocsp_nonce: OcspNoncePolicy::Echo,
            ocsp_live_signing_concurrency: 32,
            ocsp_poll_secs: 2,
        }
    }
}

/// `[attestation]`: freshness nonces and the vendor trust store.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AttestationConfig {
    /// A nonce from `/.well-known/est/nonce` expires after this many seconds.
    pub nonce_lifetime_secs: u64,
    /// Verify evidence as of this Unix time instead of now. Only for replaying recorded
    /// evidence in tests; never set it in production.
    pub verification_time: Option<u64>,
    /// Trusted vendors (`[[attestation.vendors]]`).
    pub vendors: Vec<crate::attestation::vendors::VendorConfig>,
}

impl Default for AttestationConfig {
    fn default() -> Self {
        Self {
            nonce_lifetime_secs: 300,
            verification_time: None,
            vendors: Vec::new(),
        }
    }
}

/// `[attestation_keys]`: the CA as a TPM attestation CA (docs/attestation.md, "attestca as
/// the attestation CA for TPM keys").
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AttestationKeysConfig {
    /// Certify attestation keys (`/attestation-key/v1/…` on the EST listener).
    pub enabled: bool,
    /// PEM files of the TPM vendors' EK roots and intermediates; re-read at each challenge.
    pub ek_root_files: Vec<PathBuf>,
    /// A credential challenge must be answered within this many seconds.
    pub challenge_lifetime_secs: u64,
    /// Validity of an attestation-key certificate (never beyond the issuing CA's).
    pub validity_secs: u64,
    /// Issue another AK certificate to a TPM that has an active one.
    pub allow_reissue: bool,
}

impl Default for AttestationKeysConfig {
    fn default() -> Self {
        Self {
            enabled: false,
            ek_root_files: Vec::new(),
            challenge_lifetime_secs: 300,
            validity_secs: 10 * 365 * 86_400,
            allow_reissue: false,
        }
    }
}

/// `[server]`: listeners and limits.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ServerConfig {
    /// HTTPS listener for EST (and, later, the operator API).
    pub est_addr: SocketAddr,
    /// Plain-HTTP listener for health, and later OCSP, CRLs and metrics.
    pub http_addr: SocketAddr,
    /// Directory for state; relative paths elsewhere in the file are resolved against it.
    pub data_dir: PathBuf,
    /// Largest accepted request body, in bytes (413 above it).
    pub max_request_bytes: usize,
    /// A TLS handshake that takes longer is cut off.
    pub tls_handshake_timeout_secs: u64,
    /// `text` or `json` log lines.
    pub log_format: LogFormat,
    /// Enrollments and renewals in progress at once; more are answered 503 with Retry-After
    /// instead of queueing without bound (a renewal storm must not take the CA down).
    pub max_concurrent_enrollments: usize,
    /// A connection whose client sends nothing (no request bytes after the TCP or TLS
    /// handshake) within this time, or whose request headers take longer, is closed.
    pub header_read_timeout_secs: u64,
    /// A request not answered within this time gets 503 with Retry-After.
    pub request_timeout_secs: u64,
    /// A request body not complete this long after the request arrived gets 408
    /// (`request.timeout`, recorded as an enrollment event on EST). Must be shorter than
    /// `request_timeout_secs`, so that a stalled body gets its own answer and not the request
    /// deadline's 503; unset, two thirds of it.
    pub body_read_timeout_secs: Option<u64>,
    /// On SIGTERM/SIGINT: stop accepting, then give requests in flight this long to finish
    /// (and their database writes to commit) before exiting.
    pub shutdown_grace_secs: u64,
}

impl Default for ServerConfig {
    fn default() -> Self {
        Self {
            est_addr: "0.0.0.0:8443".parse().expect("literal address"),
            http_addr: "0.0.0.0:8080".parse().expect("literal address"),
            data_dir: PathBuf::from("/var/lib/attestca"),
            max_request_bytes: 64 * 1024,
            tls_handshake_timeout_secs: 10,
            log_format: LogFormat::Text,
            max_concurrent_enrollments: 256,
            header_read_timeout_secs: 10,
            request_timeout_secs: 30,
            body_read_timeout_secs: None,
            shutdown_grace_secs: 20,
        }
    }
}

impl ServerConfig {
    /// `request_timeout_secs` (at least one second).
    pub fn request_timeout(&self) -> Duration {
        Duration::from_secs(self.request_timeout_secs.max(1))
    }

    /// `body_read_timeout_secs`, or two thirds of the request timeout when unset; always
    /// shorter than [`ServerConfig::request_timeout`] (checked when the configuration loads).
    pub fn body_read_timeout(&self) -> Duration {
        match self.body_read_timeout_secs {
            Some(secs) => Duration::from_secs(secs),
            None => self.request_timeout() * 2 / 3,
        }
    }
}

/// Log line format.
#[derive(Clone, Copy, Debug, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    Text,
    Json,
}

/// `[tls]`: the EST listener's server certificate.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TlsConfig {
    /// PEM chain: server certificate first, then intermediates.
    pub certificate_file: PathBuf,
    /// PEM PKCS#8 private key of the server certificate.
    pub key_file: PathBuf,
}

/// `[database]`.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DatabaseConfig {
    /// `postgres://user@host/db` or `sqlite://path`. Empty: SQLite in the data directory.
    pub url: String,
    /// File holding the database password (alternative: `ATTESTCA_DATABASE_PASSWORD`).
    pub password_file: Option<PathBuf>,
    /// Connection pool size.
    pub max_connections: u32,
    /// Most records committed in one transaction by a writer.
    pub write_batch_max: usize,
    /// Writers committing batches at once (PostgreSQL; SQLite always has one).
    pub writers: usize,
    /// A rig re-posting the same CSR within this many seconds gets the certificate already issued.
    pub retry_window_secs: u64,
    /// Longest wait for a pooled connection before the request is refused (503
    /// `storage.unavailable`); a database that is down is detected sooner than this by the
    /// availability monitor, and requests are then refused at once.
    pub acquire_timeout_ms: u64,
    /// At start-up, how long to keep trying a database that does not answer (logging each
    /// attempt) before giving up; 0: try once.
    pub startup_wait_secs: u64,
}

impl DatabaseConfig {
    /// `acquire_timeout_ms` (at least 100 ms).
    pub fn acquire_timeout(&self) -> Duration {
        Duration::from_millis(self.acquire_timeout_ms.max(100))
    }
}

impl Default for DatabaseConfig {
    fn default() -> Self {
        Self {
            url: String::new(),
            password_file: None,
            max_connections: 16,
            write_batch_max: 256,
            writers: 4,
            retry_window_secs: 600,
            acquire_timeout_ms: 5000,
            startup_wait_secs: 300,
        }
    }
}

/// `[signer]`: where the issuing CA key lives.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SignerSection {
    /// `pkcs11` (production) or `software` (development only).
    pub backend: SignerBackend,
    /// `ecdsa-p256` or `ecdsa-p384`.
    #[serde(default = "default_algorithm")]
    pub algorithm: CaKeyAlgorithm,
    /// Software backend: PKCS#8 PEM key file (mode 0600).
    #[serde(default)]
    pub key_file: Option<PathBuf>,
    /// PKCS#11 backend: path of the module (e.g. /usr/lib/softhsm/libsofthsm2.so).
    #[serde(default)]
    pub module: Option<PathBuf>,
    /// PKCS#11 backend: label of the token.
    #[serde(default)]
    pub token_label: Option<String>,
    /// PKCS#11 backend: label (and id) of the key pair.
    #[serde(default)]
    pub key_label: Option<String>,
    /// PKCS#11 backend: sessions kept open for signing.
    #[serde(default = "default_sessions")]
    pub sessions: usize,
    /// PKCS#11 backend: file holding the user PIN (alternative: `ATTESTCA_SIGNER_PIN`).
    #[serde(default)]
    pub pin_file: Option<PathBuf>,
    /// PKCS#11 backend, for benchmarks: hold each session this many milliseconds longer per
    /// signature, as a network HSM's round trip would (0: off). Shows how many sessions a
    /// slow HSM needs (docs/performance.md); never set in production.
    #[serde(default)]
    pub simulated_latency_ms: u64,
}

fn default_algorithm() -> CaKeyAlgorithm {
    CaKeyAlgorithm::EcdsaP256
}

fn default_sessions() -> usize {
    4
}

/// Signer backends.
#[derive(Clone, Copy, Debug, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum SignerBackend {
    Software,
    Pkcs11,
}

/// A resolved signer configuration, secrets included.
#[derive(Clone, Debug)]
pub enum SignerConfig {
    Software(SoftwareSignerConfig),
    Pkcs11(Pkcs11SignerConfig),
}

/// The PKCS#11 backend.
#[derive(Clone, Debug)]
pub struct Pkcs11SignerConfig {
    pub module: PathBuf,
    pub token_label: String,
    pub key_label: String,
    pub algorithm: CaKeyAlgorithm,
    pub sessions: usize,
    pub pin: SecretString,
    /// `signer.simulated_latency_ms`: added to every signature (benchmarks only).
    pub simulated_latency: std::time::Duration,
}

/// `[ca]`: the issuing CA's certificates.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CaConfig {
    /// PEM: the issuing CA certificate first, then its issuers up to the root.
    pub chain_file: PathBuf,
    /// Name of the CA in published URLs: the CRL is served at `/crl/<name>.crl`.
    #[serde(default = "default_ca_name")]
    pub name: String,
    /// Subject of the issuing CA, used by `attestca init`.
    #[serde(default = "default_issuing_subject")]
    pub subject: String,
    /// Subject of the self-signed root made by `attestca init --test-root`.
    #[serde(default = "default_root_subject")]
    pub root_subject: String,
    /// Software key of that test root (test installs only; a production root stays offline).
    #[serde(default = "default_root_key")]
    pub root_key_file: PathBuf,
    /// Earlier issuing-CA certificates (PEM) after a CA rollover: devices holding certificates
    /// they issued may still renew (onto the current CA).
    #[serde(default)]
    pub previous_certificate_files: Vec<PathBuf>,
    /// The root's current CRL (DER or PEM), served at `/crl/<root_crl_name>.crl` so that
    /// relying parties can check the whole chain (`openssl verify -crl_check_all`). The file is
    /// re-read when it changes: the offline root's ceremony replaces it. Test installs write
    /// one (`pki/root-ca.crl`), signed with their root key.
    #[serde(default)]
    pub root_crl_file: Option<PathBuf>,
    /// The file name (without `.crl`) under which the root CRL is served.
    #[serde(default = "default_root_crl_name")]
    pub root_crl_name: String,
}

fn default_root_crl_name() -> String {
    "root-ca".into()
}

fn default_ca_name() -> String {
    "issuing-ca".into()
}

fn default_issuing_subject() -> String {
    "CN=attestca Issuing CA,O=attestca".into()
}
fn default_root_subject() -> String {
    "CN=attestca Test Root CA,O=attestca".into()
}
fn default_root_key() -> PathBuf {
    PathBuf::from("pki/root.key")
}

/// `[rigs]`: who may enroll devices.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RigsConfig {
    /// PEM CA certificates: a TLS client certificate chaining to one of them identifies a rig,
    /// named by its subject CN.
    pub trust_anchor_files: Vec<PathBuf>,
    /// Rig accounts for HTTP Basic authentication.
    pub accounts: Vec<RigAccountConfig>,
}

/// `[limits]`: per-requester request budgets (token buckets), so that one misbehaving rig or
/// device cannot take the CA's capacity from the others. A request over budget gets `429`
/// with `Retry-After`. 0 turns a budget off.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LimitsConfig {
    /// Requests (enrollments and nonces) per minute each rig may make, sustained.
    pub rig_requests_per_minute: u32,
    /// Requests a rig may make in a burst above that rate.
    pub rig_burst: u32,
    /// Requests (renewals and nonces) per minute each device certificate may make, sustained.
    pub device_requests_per_minute: u32,
    /// Requests a device may make in a burst above that rate.
    pub device_burst: u32,
}

impl Default for LimitsConfig {
    fn default() -> Self {
        Self {
            // Rigs are the operator's own machines, and one rig may run many stations: no
            // budget unless configured. Devices are many and in the field: a small one.
            rig_requests_per_minute: 0,
            rig_burst: 0,
            device_requests_per_minute: 30,
            device_burst: 10,
        }
    }
}

/// `[operators]`: who may use the operator API (`/api/v1/`).
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct OperatorsConfig {
    /// PEM CA certificates: a TLS client certificate chaining to one of them (with the
    /// clientAuth purpose) identifies an operator, named by its subject CN.
    pub trust_anchor_files: Vec<PathBuf>,
    /// Bearer tokens, for automation that cannot hold a client certificate.
    pub tokens: Vec<OperatorTokenConfig>,
}

/// One operator bearer token.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OperatorTokenConfig {
    /// Names the operator in audit events (`token:<name>`).
    pub name: String,
    /// Lower-case hex SHA-256 of the token (`attestca hash-token` prints one). Not a secret by
    /// itself: the token is compared by its hash, in constant time.
    #[serde(default)]
    pub token_sha256: Option<String>,
    /// A file holding the token (alternative: `ATTESTCA_OPERATOR_TOKEN_<NAME>`).
    #[serde(default)]
    pub token_file: Option<PathBuf>,
}

/// One Basic-auth rig account.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RigAccountConfig {
    pub name: String,
    /// An Argon2 PHC string (`attestca hash-password` makes one). Not a secret by itself.
    #[serde(default)]
    pub password_hash: Option<String>,
    /// A file holding the password (alternative: `ATTESTCA_RIG_PASSWORD_<NAME>`).
    #[serde(default)]
    pub password_file: Option<PathBuf>,
}

/// The profile label served on unlabelled EST paths.
pub const DEFAULT_PROFILE: &str = "default";

impl Config {
    /// Loads a TOML file, then applies `ATTESTCA_<SECTION>__<KEY>` environment overrides.
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let config: Config = Figment::from(Toml::file_exact(path))
            .merge(env_overrides())
            .extract()
            .map_err(|e| ConfigError::Parse(format!("{}: {e}", path.display())))?;
        config.checked()
    }

    /// Applies environment overrides to a configuration built in code (the development run).
    pub fn with_env_overrides(self) -> Result<Self, ConfigError> {
        let config: Config = Figment::from(Serialized::defaults(self))
            .merge(env_overrides())
            .extract()
            .map_err(|e| ConfigError::Parse(e.to_string()))?;
        config.checked()
    }

    fn checked(mut self) -> Result<Self, ConfigError> {
        if !self.profiles.contains_key(DEFAULT_PROFILE) {
            return Err(ConfigError::Invalid(format!(
                "a [profiles.{DEFAULT_PROFILE}] section is required: it serves unlabelled EST paths"
            )));
        }
        for (label, profile) in &self.profiles {
            if label.is_empty()
                || !label
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_' || c == '.')
            {
                return Err(ConfigError::Invalid(format!(
                    "profile label {label:?} is not usable as an EST path segment"
                )));
            }
            if let Some(pattern) = &profile.cn_pattern {
                regex::Regex::new(pattern).map_err(|e| {
                    ConfigError::Invalid(format!("profiles.{label}.cn_pattern: {e}"))
                })?;
            }
            if profile.validity_days == 0 {
                return Err(ConfigError::Invalid(format!(
                    "profiles.{label}.validity_days must be positive"
                )));
            }
        }
        if let Some(body) = self.server.body_read_timeout_secs
            && (body == 0 || body >= self.server.request_timeout_secs.max(1))
        {
            return Err(ConfigError::Invalid(format!(
                "server.body_read_timeout_secs ({body}) must be positive and shorter than \
                 server.request_timeout_secs ({}): a stalled body gets 408 before the request \
                 deadline's 503",
                self.server.request_timeout_secs
            )));
        }
        if self.ca.root_crl_file.is_some() && self.ca.root_crl_name == self.ca.name {
            return Err(ConfigError::Invalid(
                "ca.root_crl_name must differ from ca.name: both are served under /crl/".into(),
            ));
        }
        let revocation = &self.revocation;
        if revocation.ocsp_validity_secs < 60 {
            return Err(ConfigError::Invalid(
                "revocation.ocsp_validity_secs must be at least 60".into(),
            ));
        }
        if revocation.ocsp_responder_validity_secs < 2 * revocation.ocsp_validity_secs {
            return Err(ConfigError::Invalid(
                "revocation.ocsp_responder_validity_secs must be at least twice \
                 revocation.ocsp_validity_secs (responses never outlive the responder certificate)"
                    .into(),
            ));
        }
        if revocation.ocsp_live_signing_concurrency == 0 {
            return Err(ConfigError::Invalid(
                "revocation.ocsp_live_signing_concurrency must be positive".into(),
            ));
        }
        if self.database.url.is_empty() {
            self.database.url = format!(
                "sqlite://{}",
                self.server.data_dir.join("attestca.db").display()
            );
        }
        let dir = self.server.data_dir.clone();
        let resolve = |p: &mut PathBuf| {
            if p.is_relative() {
                *p = dir.join(&*p);
            }
        };
        resolve(&mut self.tls.certificate_file);
        resolve(&mut self.tls.key_file);
        resolve(&mut self.ca.chain_file);
        resolve(&mut self.ca.root_key_file);
        self.ca
            .previous_certificate_files
            .iter_mut()
            .for_each(resolve);
        for vendor in &mut self.attestation.vendors {
            vendor.roots.iter_mut().for_each(resolve);
        }
        self.attestation_keys
            .ek_root_files
            .iter_mut()
            .for_each(resolve);
        self.rigs.trust_anchor_files.iter_mut().for_each(resolve);
        self.operators
            .trust_anchor_files
            .iter_mut()
            .for_each(resolve);
        for token in &mut self.operators.tokens {
            if let Some(p) = token.token_file.as_mut() {
                resolve(p);
            }
        }
        if let Some(p) = self.ca.root_crl_file.as_mut() {
            resolve(p);
        }
        for account in &mut self.rigs.accounts {
            if let Some(p) = account.password_file.as_mut() {
                resolve(p);
            }
        }
        for p in [
            self.signer.key_file.as_mut(),
            self.signer.pin_file.as_mut(),
            self.database.password_file.as_mut(),
        ]
        .into_iter()
        .flatten()
        {
            resolve(p);
        }
        Ok(self)
    }

    /// The signer configuration with its PIN resolved.
    pub fn resolve_signer(&self) -> Result<SignerConfig, ConfigError> {
        let s = &self.signer;
        let missing = |key: &str| {
            ConfigError::Invalid(format!(
                "signer.{key} is required for the {:?} backend",
                s.backend
            ))
        };
        match s.backend {
            SignerBackend::Software => Ok(SignerConfig::Software(SoftwareSignerConfig {
                key_file: s.key_file.clone().ok_or_else(|| missing("key_file"))?,
                algorithm: s.algorithm,
            })),
            SignerBackend::Pkcs11 => Ok(SignerConfig::Pkcs11(Pkcs11SignerConfig {
                module: s.module.clone().ok_or_else(|| missing("module"))?,
                token_label: s
                    .token_label
                    .clone()
                    .ok_or_else(|| missing("token_label"))?,
                key_label: s.key_label.clone().ok_or_else(|| missing("key_label"))?,
                algorithm: s.algorithm,
                sessions: s.sessions,
                pin: read_secret("token PIN", "ATTESTCA_SIGNER_PIN", s.pin_file.as_deref())?,
                simulated_latency: std::time::Duration::from_millis(s.simulated_latency_ms),
            })),
        }
    }

    /// The database URL with the password (from the environment or a file) filled in.
    pub fn resolve_database_url(&self) -> Result<SecretString, ConfigError> {
        let url = &self.database.url;
        let password = match read_secret(
            "database password",
            "ATTESTCA_DATABASE_PASSWORD",
            self.database.password_file.as_deref(),
        ) {
            Ok(p) => Some(p),
            Err(ConfigError::Secret { reason, .. }) if reason == NOT_PROVIDED => None,
            Err(e) => return Err(e),
        };
        let Some(password) = password else {
            return Ok(SecretString::from(url.clone()));
        };
        use secrecy::ExposeSecret;
        let (scheme, rest) = url.split_once("://").ok_or_else(|| {
            ConfigError::Invalid("database.url must look like scheme://...".into())
        })?;
        let (userinfo, host) = rest.split_once('@').ok_or_else(|| {
            ConfigError::Invalid(
                "database.url needs a user (postgres://user@host/db) when a password is given"
                    .into(),
            )
        })?;
        let user = userinfo.split(':').next().unwrap_or(userinfo);
        let encoded: String = password
            .expose_secret()
            .bytes()
            .map(|b| {
                if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
                    (b as char).to_string()
                } else {
                    format!("%{b:02X}")
                }
            })
            .collect();
        Ok(SecretString::from(format!(
            "{scheme}://{user}:{encoded}@{host}"
        )))
    }
}

const NOT_PROVIDED: &str = "not provided";

/// Reads a secret from an environment variable or, failing that, a file (trailing newline
/// trimmed).
pub fn read_secret(
    what: &str,
    env: &str,
    file: Option<&Path>,
) -> Result<SecretString, ConfigError> {
    if let Ok(value) = std::env::var(env) {
        return Ok(SecretString::from(value));
    }
    if let Some(path) = file {
        let text = std::fs::read_to_string(path).map_err(|e| ConfigError::Secret {
            what: what.into(),
            reason: format!("{}: {e}", path.display()),
        })?;
        return Ok(SecretString::from(
            text.trim_end_matches(['\r', '\n']).to_owned(),
        ));
    }
    Err(ConfigError::Secret {
        what: what.into(),
        reason: NOT_PROVIDED.into(),
    })
}

/// The environment variable that may carry a rig account's password.
pub fn rig_password_env(name: &str) -> String {
    format!("ATTESTCA_RIG_PASSWORD_{}", env_suffix(name))
}

/// The environment variable that may carry an operator's bearer token.
pub fn operator_token_env(name: &str) -> String {
    format!("ATTESTCA_OPERATOR_TOKEN_{}", env_suffix(name))
}

/// A name as an environment variable suffix: upper case, other characters as `_`.
fn env_suffix(name: &str) -> String {
    name.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() {
                c.to_ascii_uppercase()
            } else {
                '_'
            }
        })
        .collect()
}

fn env_overrides() -> Env {
    // Only double-underscore keys are configuration; ATTESTCA_SIGNER_PIN and other secrets are
    // read separately and never become part of `Config`.
    Env::prefixed("ATTESTCA_")
        .filter(|key| key.as_str().contains("__"))
        .split("__")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dev() -> Config {
        let addr: SocketAddr = "127.0.0.1:0".parse().expect("address");
        crate::setup::dev_config(Path::new("/tmp/attestca-config-test"), addr, addr)
    }

    #[test]
    fn ocsp_settings_are_checked() {
        let config = dev().checked().expect("the dev configuration is valid");
        assert!(config.revocation.ocsp_enabled);
        assert_eq!(config.revocation.ocsp_nonce, OcspNoncePolicy::Echo);
        for broken in [
            |r: &mut RevocationConfig| r.ocsp_validity_secs = 59,
            |r: &mut RevocationConfig| {
                r.ocsp_responder_validity_secs = 2 * r.ocsp_validity_secs - 1
            },
            |r: &mut RevocationConfig| r.ocsp_live_signing_concurrency = 0,
        ] {
            let mut config = dev();
            broken(&mut config.revocation);
            assert!(matches!(config.checked(), Err(ConfigError::Invalid(_))));
        }
    }

    #[test]
    fn the_body_deadline_comes_before_the_request_deadline() {
        let config = dev().checked().expect("valid");
        assert_eq!(config.server.body_read_timeout(), Duration::from_secs(20));
        assert!(config.server.body_read_timeout() < config.server.request_timeout());
        let mut short = dev();
        short.server.request_timeout_secs = 1;
        let derived = short.server.body_read_timeout();
        assert!(derived > Duration::from_millis(600) && derived < Duration::from_secs(1));
        for (body, request) in [(0, 30), (30, 30), (31, 30), (1, 1)] {
            let mut config = dev();
            config.server.body_read_timeout_secs = Some(body);
            config.server.request_timeout_secs = request;
            assert!(
                matches!(config.checked(), Err(ConfigError::Invalid(_))),
                "body {body} s, request {request} s"
            );
        }
        let mut config = dev();
        config.server.body_read_timeout_secs = Some(2);
        config.server.request_timeout_secs = 3;
        let config = config.checked().expect("valid");
        assert_eq!(config.server.body_read_timeout(), Duration::from_secs(2));
    }

    #[test]
    fn ocsp_nonce_policy_reads_from_toml() {
        let revocation: RevocationConfig =
            Figment::from(Toml::string("ocsp_nonce = \"ignore\"\nocsp_poll_secs = 1"))
                .extract()
                .expect("parse");
        assert_eq!(revocation.ocsp_nonce, OcspNoncePolicy::Ignore);
        assert_eq!(revocation.ocsp_poll_secs, 1);
        assert_eq!(
            revocation.ocsp_validity_secs, 14_400,
            "defaults fill the rest"
        );
        assert!(
            Figment::from(Toml::string("ocsp_nonce = \"sometimes\""))
                .extract::<RevocationConfig>()
                .is_err()
        );
    }

    #[test]
    fn subject_attributes_read_from_toml() {
        let profile: ProfileConfig = Figment::from(Toml::string(
            "subject_attributes = [\"CN\", \"serialNumber\"]",
        ))
        .extract()
        .expect("parse");
        assert_eq!(
            profile.subject_attributes,
            vec![SubjectAttribute::CommonName, SubjectAttribute::SerialNumber]
        );
        assert_eq!(
            ProfileConfig::default().subject_attributes,
            SubjectAttribute::ALL.to_vec(),
            "the default keeps every attribute accepted before the key existed"
        );
        assert!(
            Figment::from(Toml::string("subject_attributes = [\"street\"]"))
                .extract::<ProfileConfig>()
                .is_err(),
            "an attribute attestca does not know is a configuration error"
        );
    }
}
