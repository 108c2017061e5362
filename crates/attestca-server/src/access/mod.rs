//! Who is asking: factory rigs authenticated by TLS client certificate or HTTP Basic, fielded
//! devices by the certificate this CA issued them, operators (see [`operator`]).
//!
//! The wire layer extracts what was presented ([`PresentedCredentials`]); this module decides
//! who that is ([`Requester`]). Client certificates are resolved once per TLS connection
//! ([`RigAuthenticator::identify_certificate`]), Basic credentials per request.

pub mod operator;
pub mod rate;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use argon2::Argon2;
use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use aws_lc_rs::hmac;
use rustls_pki_types::{CertificateDer, TrustAnchor, UnixTime};
use secrecy::{ExposeSecret, SecretString};
use subtle::ConstantTimeEq;

use attestca_core::serial::Serial;

use crate::config::{ConfigError, RigsConfig, read_secret, rig_password_env};

/// How a requester proved who it is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AuthMethod {
    ClientCertificate,
    Basic,
    /// A fielded device, by the certificate this CA issued it (renewal, its nonces).
    Device,
}

/// An authenticated factory rig.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Requester {
    /// The rig's name: the CN of its certificate, or its Basic account name.
    pub name: String,
    pub method: AuthMethod,
}

impl Requester {
    /// The identity recorded in events and bound to retries: `tls:<name>` or `basic:<name>`.
    pub fn id(&self) -> String {
        match self.method {
            AuthMethod::ClientCertificate => format!("tls:{}", self.name),
            AuthMethod::Basic => format!("basic:{}", self.name),
            AuthMethod::Device => format!("device:{}", self.name),
        }
    }
}

/// What the TLS handshake established about the peer.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub enum PeerCertificate {
    /// No client certificate was presented.
    #[default]
    None,
    /// A certificate chaining to the rig trust anchors: a rig with this name.
    Rig(String),
    /// A certificate chaining to the operator trust anchors: an operator with this name.
    Operator(String),
    /// A certificate this CA issued (signature by a device issuer): a fielded device. Whether
    /// it is known, valid and unrevoked is for the registration authority to decide.
    Device(DevicePeer),
    /// A certificate the TLS layer accepted but that names no rig.
    Other(String),
}

/// A device's TLS client certificate.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DevicePeer {
    pub serial: Serial,
    pub der: Vec<u8>,
}

/// Credentials presented with one request.
#[derive(Clone, Debug, Default)]
pub struct PresentedCredentials {
    pub peer_certificate: PeerCertificate,
    /// `(user, password)` from an `Authorization: Basic` header.
    pub basic: Option<(String, SecretString)>,
}

/// Authentication failures.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum AuthError {
    #[error("authentication required: present a rig client certificate or Basic credentials")]
    Missing,
    #[error("invalid credentials")]
    Invalid,
    /// As many password checks as the CA allows at once are running (each is an Argon2id
    /// verification: about 19 MiB and tens of milliseconds of CPU); try again shortly.
    #[error("too many password checks in progress")]
    Busy,
}

/// Rig trust anchors and Basic accounts.
pub struct RigAuthenticator {
    /// The CA certificates under which this CA issues device certificates (the current issuing
    /// CA, and a previous one during a rollover).
    device_issuers: Vec<x509_cert::Certificate>,
    anchor_certificates: Vec<CertificateDer<'static>>,
    anchors: Vec<TrustAnchor<'static>>,
    accounts: HashMap<String, String>,
    /// Per account, an HMAC (under a per-process key) of the last password that verified, so
    /// that a rig at line rate pays for Argon2 once, not on every board.
    verified: Mutex<HashMap<String, Vec<u8>>>,
    cache_key: hmac::Key,
    operators: Option<Arc<operator::OperatorAuthenticator>>,
    /// Permits for password checks in progress. Anyone may present Basic credentials, and a
    /// wrong password (or an unknown account) always costs a full Argon2id verification: without
    /// a bound, a flood of wrong passwords on any endpoint that authenticates (the nonce
    /// resource has no other admission limit) would use every core and 19 MiB per request.
    password_checks: Arc<tokio::sync::Semaphore>,
}

/// Password checks that may run at once: one per core. A rig whose password has verified once
/// is recognised from the cache without a check, so only first contacts and attackers queue here.
fn max_password_checks() -> usize {
    std::thread::available_parallelism().map_or(2, usize::from)
}

impl RigAuthenticator {
    /// Loads trust anchors and accounts; hashes passwords given in the clear (env or file).
    pub fn from_config(config: &RigsConfig) -> Result<Self, ConfigError> {
        let (anchor_certificates, anchors) =
            load_trust_anchors(&config.trust_anchor_files, "rigs.trust_anchor_files", &[])?;
        let mut accounts = HashMap::new();
        for account in &config.accounts {
            let hash = match &account.password_hash {
                Some(hash) => {
                    PasswordHash::new(hash).map_err(|e| {
                        ConfigError::Invalid(format!(
                            "rig account {}: password_hash: {e}",
                            account.name
                        ))
                    })?;
                    hash.clone()
                }
                None => {
                    let password = read_secret(
                        &format!("password of rig account {}", account.name),
                        &rig_password_env(&account.name),
                        account.password_file.as_deref(),
                    )?;
                    hash_password(&password)?
                }
            };
            if accounts.insert(account.name.clone(), hash).is_some() {
                return Err(ConfigError::Invalid(format!(
                    "rig account {} is defined twice",
                    account.name
                )));
            }
        }
        let mut key = [0u8; 32];
        aws_lc_rs::rand::fill(&mut key)
            .map_err(|_| ConfigError::Invalid("the system random generator failed".into()))?;
        Ok(Self {
            device_issuers: Vec::new(),
            anchor_certificates,
            anchors,
            accounts,
            verified: Mutex::new(HashMap::new()),
            cache_key: hmac::Key::new(hmac::HMAC_SHA256, &key),
            operators: None,
            password_checks: Arc::new(tokio::sync::Semaphore::new(max_password_checks())),
        })
    }

    /// Recognises certificates issued under `issuers` as device peers.
    pub fn with_device_issuers(mut self, issuers: Vec<x509_cert::Certificate>) -> Self {
        self.device_issuers = issuers;
        self
    }

    /// Also recognises operators' certificates (checked after the rig anchors).
    pub fn with_operators(mut self, operators: Arc<operator::OperatorAuthenticator>) -> Self {
        self.operators = Some(operators);
        self
    }

    /// Subjects of every CA a client certificate may come from, for the TLS CertificateRequest.
    pub fn client_ca_subjects(&self) -> Vec<Vec<u8>> {
        use der::Encode;
        let operator_anchors = self
            .operators
            .as_ref()
            .map(|o| o.anchor_certificates())
            .unwrap_or_default();
        let rigs = self
            .anchor_certificates
            .iter()
            .chain(operator_anchors)
            .filter_map(|c| crate::pem::certificate_from_der(c).ok());
        rigs.chain(self.device_issuers.iter().cloned())
            .filter_map(|c| c.tbs_certificate().subject().to_der().ok())
            .collect()
    }

    /// The rig trust anchors as certificates, for the TLS client verifier.
    pub fn anchor_certificates(&self) -> &[CertificateDer<'static>] {
        &self.anchor_certificates
    }

    /// Names the rig (or operator) a client certificate chain belongs to, if it chains to a
    /// rig (or operator) anchor, is valid now and allows clientAuth; else recognises a device.
    pub fn identify_certificate(&self, chain: &[CertificateDer<'_>]) -> PeerCertificate {
        let Some(end_entity) = chain.first() else {
            return PeerCertificate::None;
        };
        if let Some(name) = verified_client_name(chain, &self.anchors) {
            return PeerCertificate::Rig(name);
        }
        if let Some(name) = self
            .operators
            .as_ref()
            .and_then(|o| o.identify_certificate(chain))
        {
            return PeerCertificate::Operator(name);
        }
        let subject = common_name(end_entity).unwrap_or_default();
        match crate::pem::certificate_from_der(end_entity) {
            Ok(cert)
                if self.device_issuers.iter().any(|issuer| {
                    issuer.tbs_certificate().subject() == cert.tbs_certificate().issuer()
                        && crate::verify::issued_by(end_entity, issuer)
                }) =>
            {
                PeerCertificate::Device(DevicePeer {
                    serial: Serial::of(cert.tbs_certificate().serial_number()),
                    der: end_entity.to_vec(),
                })
            }
            _ => PeerCertificate::Other(subject),
        }
    }

    /// Authenticates a rig, or a device by its certificate (nonces for re-attestation).
    pub async fn authenticate_rig_or_device(
        &self,
        presented: &PresentedCredentials,
    ) -> Result<Requester, AuthError> {
        if let PeerCertificate::Device(device) = &presented.peer_certificate {
            return Ok(Requester {
                name: device.serial.to_string(),
                method: AuthMethod::Device,
            });
        }
        self.authenticate(presented).await
    }

    /// Authenticates a request: a rig certificate wins; otherwise Basic credentials.
    pub async fn authenticate(
        &self,
        presented: &PresentedCredentials,
    ) -> Result<Requester, AuthError> {
        if let PeerCertificate::Rig(name) = &presented.peer_certificate {
            return Ok(Requester {
                name: name.clone(),
                method: AuthMethod::ClientCertificate,
            });
        }
        let Some((user, password)) = &presented.basic else {
            return Err(AuthError::Missing);
        };
        let Some(hash) = self.accounts.get(user) else {
            // Spend the same effort as for a real account, so timing does not reveal names.
            self.verify_password(DUMMY_HASH.clone(), password.clone())
                .await?;
            return Err(AuthError::Invalid);
        };
        let tag = hmac::sign(&self.cache_key, password.expose_secret().as_bytes());
        if let Ok(cache) = self.verified.lock()
            && let Some(known) = cache.get(user)
            && bool::from(known.as_slice().ct_eq(tag.as_ref()))
        {
            return Ok(Requester {
                name: user.clone(),
                method: AuthMethod::Basic,
            });
        }
        if self.verify_password(hash.clone(), password.clone()).await? {
            if let Ok(mut cache) = self.verified.lock() {
                cache.insert(user.clone(), tag.as_ref().to_vec());
            }
            Ok(Requester {
                name: user.clone(),
                method: AuthMethod::Basic,
            })
        } else {
            Err(AuthError::Invalid)
        }
    }
}

impl RigAuthenticator {
    /// Verifies `password` against the PHC `hash` on a blocking thread, within the bound on
    /// concurrent password checks (`AuthError::Busy` beyond it).
    async fn verify_password(
        &self,
        hash: String,
        password: SecretString,
    ) -> Result<bool, AuthError> {
        let permit = Arc::clone(&self.password_checks)
            .try_acquire_owned()
            .map_err(|_| {
                crate::metrics::METRICS
                    .overload_refusals
                    .with_label_values(&["password_checks"])
                    .inc();
                AuthError::Busy
            })?;
        Ok(verify_blocking(hash, password, permit).await)
    }
}

/// An Argon2id hash of a random string, verified against when the account does not exist.
static DUMMY_HASH: std::sync::LazyLock<String> = std::sync::LazyLock::new(|| {
    hash_password(&SecretString::from("no such account".to_owned())).unwrap_or_default()
});

async fn verify_blocking(
    hash: String,
    password: SecretString,
    permit: tokio::sync::OwnedSemaphorePermit,
) -> bool {
    tokio::task::spawn_blocking(move || {
        // Held until the check ends, even if the request is dropped meanwhile.
        let _permit = permit;
        PasswordHash::new(&hash)
            .map(|parsed| {
                Argon2::default()
                    .verify_password(password.expose_secret().as_bytes(), &parsed)
                    .is_ok()
            })
            .unwrap_or(false)
    })
    .await
    .unwrap_or(false)
}

/// Hashes a password with Argon2id (default parameters) into a PHC string.
pub fn hash_password(password: &SecretString) -> Result<String, ConfigError> {
    let mut salt = [0u8; 16];
    aws_lc_rs::rand::fill(&mut salt)
        .map_err(|_| ConfigError::Invalid("the system random generator failed".into()))?;
    let salt = SaltString::encode_b64(&salt)
        .map_err(|e| ConfigError::Invalid(format!("password salt: {e}")))?;
    Argon2::default()
        .hash_password(password.expose_secret().as_bytes(), &salt)
        .map(|h| h.to_string())
        .map_err(|e| ConfigError::Invalid(format!("password hashing: {e}")))
}

/// Reads PEM trust anchors from `paths` (the configuration key `what`), refusing any of
/// `refused` (another population's anchors).
fn load_trust_anchors(
    paths: &[std::path::PathBuf],
    what: &str,
    refused: &[CertificateDer<'static>],
) -> Result<(Vec<CertificateDer<'static>>, Vec<TrustAnchor<'static>>), ConfigError> {
    let mut anchors = Vec::new();
    let mut certificates = Vec::new();
    for path in paths {
        for der in crate::pem::read_certificate_ders(path)
            .map_err(|e| ConfigError::Invalid(format!("{what}: {e}")))?
        {
            let cert = CertificateDer::from(der);
            if refused.contains(&cert) {
                return Err(ConfigError::Invalid(format!(
                    "{what}: {} is also a rig trust anchor; operators need a CA of their own",
                    path.display()
                )));
            }
            let anchor = webpki::anchor_from_trusted_cert(&cert).map_err(|e| {
                ConfigError::Invalid(format!(
                    "{}: not a usable trust anchor: {e:?}",
                    path.display()
                ))
            })?;
            anchors.push(anchor.to_owned());
            certificates.push(cert);
        }
    }
    Ok((certificates, anchors))
}

/// The subject CN of a client certificate chain's end entity, if the chain leads to one of
/// `anchors`, is valid now, allows clientAuth, and the CN is not empty.
fn verified_client_name(
    chain: &[CertificateDer<'_>],
    anchors: &[TrustAnchor<'_>],
) -> Option<String> {
    let end_entity = chain.first()?;
    let cert = webpki::EndEntityCert::try_from(end_entity).ok()?;
    cert.verify_for_usage(
        webpki::ALL_VERIFICATION_ALGS,
        anchors,
        &chain[1..],
        UnixTime::now(),
        webpki::KeyUsage::client_auth(),
        None,
        None,
    )
    .ok()?;
    common_name(end_entity).filter(|cn| !cn.is_empty())
}

/// The subject CN of a DER certificate, if it has one.
pub fn common_name(der: &[u8]) -> Option<String> {
    let cert = crate::pem::certificate_from_der(der).ok()?;
    let cn = cert.tbs_certificate().subject().common_name().ok()??;
    Some(cn.value().into_owned())
}
