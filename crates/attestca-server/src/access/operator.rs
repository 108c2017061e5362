//! Who may operate the CA: operators authenticated by TLS client certificate or bearer token.
//!
//! Operators are kept apart from rigs on purpose: an operator revokes certificates, a rig only
//! enrolls. Their certificates chain to their own trust anchors (a configuration that shares
//! an anchor between rigs and operators is refused), and a rig or device certificate never
//! passes as an operator's.

use rustls_pki_types::{CertificateDer, TrustAnchor};
use secrecy::ExposeSecret;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use super::PeerCertificate;
use crate::config::{ConfigError, OperatorsConfig, operator_token_env, read_secret};

/// How an operator proved who it is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum OperatorMethod {
    ClientCertificate,
    BearerToken,
}

/// An authenticated operator.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Operator {
    /// The CN of the operator's certificate, or the token's configured name.
    pub name: String,
    pub method: OperatorMethod,
}

impl Operator {
    /// The identity recorded in audit events: `cert:<name>` or `token:<name>`.
    pub fn id(&self) -> String {
        match self.method {
            OperatorMethod::ClientCertificate => format!("cert:{}", self.name),
            OperatorMethod::BearerToken => format!("token:{}", self.name),
        }
    }
}

/// Why a request is not an operator's.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum OperatorAuthError {
    #[error(
        "operator authentication required: present an operator client certificate or a bearer token"
    )]
    Missing,
    #[error("the bearer token is not valid")]
    InvalidToken,
    #[error("{0} may not use the operator API")]
    Forbidden(&'static str),
}

/// Shortest token accepted in the clear (from a file or the environment).
const MIN_TOKEN_BYTES: usize = 16;

/// Operator trust anchors and bearer tokens.
pub struct OperatorAuthenticator {
    anchor_certificates: Vec<CertificateDer<'static>>,
    anchors: Vec<TrustAnchor<'static>>,
    /// `(name, SHA-256 of the token)`.
    tokens: Vec<(String, [u8; 32])>,
}

impl OperatorAuthenticator {
    /// Loads the anchors and tokens. `rig_anchors` are refused as operator anchors.
    pub fn from_config(
        config: &OperatorsConfig,
        rig_anchors: &[CertificateDer<'static>],
    ) -> Result<Self, ConfigError> {
        let (anchor_certificates, anchors) = super::load_trust_anchors(
            &config.trust_anchor_files,
            "operators.trust_anchor_files",
            rig_anchors,
        )?;
        let mut tokens: Vec<(String, [u8; 32])> = Vec::new();
        for token in &config.tokens {
            let hash = match &token.token_sha256 {
                Some(hex_hash) => hex::decode(hex_hash.trim())
                    .ok()
                    .and_then(|h| <[u8; 32]>::try_from(h).ok())
                    .ok_or_else(|| {
                        ConfigError::Invalid(format!(
                            "operator token {}: token_sha256 must be 64 hex digits",
                            token.name
                        ))
                    })?,
                None => {
                    let secret = read_secret(
                        &format!("bearer token of operator {}", token.name),
                        &operator_token_env(&token.name),
                        token.token_file.as_deref(),
                    )?;
                    if secret.expose_secret().len() < MIN_TOKEN_BYTES {
                        return Err(ConfigError::Invalid(format!(
                            "operator token {}: shorter than {MIN_TOKEN_BYTES} characters",
                            token.name
                        )));
                    }
                    token_sha256(secret.expose_secret())
                }
            };
            if tokens.iter().any(|(name, _)| *name == token.name) {
                return Err(ConfigError::Invalid(format!(
                    "operator token {} is defined twice",
                    token.name
                )));
            }
            tokens.push((token.name.clone(), hash));
        }
        Ok(Self {
            anchor_certificates,
            anchors,
            tokens,
        })
    }

    /// The operator trust anchors, for the TLS CertificateRequest hints.
    pub fn anchor_certificates(&self) -> &[CertificateDer<'static>] {
        &self.anchor_certificates
    }

    /// The operator's name (subject CN) if the chain leads to an operator anchor, is valid now
    /// and allows clientAuth.
    pub fn identify_certificate(&self, chain: &[CertificateDer<'_>]) -> Option<String> {
        super::verified_client_name(chain, &self.anchors)
    }

    /// Authenticates an API request: an operator certificate, else a bearer token. A rig or
    /// device certificate is refused outright, whatever token comes with it.
    pub fn authenticate(
        &self,
        peer: &PeerCertificate,
        bearer: Option<&str>,
    ) -> Result<Operator, OperatorAuthError> {
        match peer {
            PeerCertificate::Operator(name) => {
                return Ok(Operator {
                    name: name.clone(),
                    method: OperatorMethod::ClientCertificate,
                });
            }
            PeerCertificate::Rig(_) => return Err(OperatorAuthError::Forbidden("a rig")),
            PeerCertificate::Device(_) => return Err(OperatorAuthError::Forbidden("a device")),
            PeerCertificate::None | PeerCertificate::Other(_) => {}
        }
        let Some(token) = bearer else {
            return Err(OperatorAuthError::Missing);
        };
        let presented = token_sha256(token);
        // Every configured token is compared, so the time taken does not say which matched.
        let mut found = None;
        for (name, hash) in &self.tokens {
            if bool::from(hash.ct_eq(&presented)) {
                found = Some(name.clone());
            }
        }
        found
            .map(|name| Operator {
                name,
                method: OperatorMethod::BearerToken,
            })
            .ok_or(OperatorAuthError::InvalidToken)
    }
}

/// The SHA-256 of a bearer token, as configured in `token_sha256`.
pub fn token_sha256(token: &str) -> [u8; 32] {
    Sha256::digest(token.as_bytes()).into()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::OperatorTokenConfig;

    fn with_token(hash: &str) -> OperatorAuthenticator {
        OperatorAuthenticator::from_config(
            &OperatorsConfig {
                trust_anchor_files: Vec::new(),
                tokens: vec![OperatorTokenConfig {
                    name: "automation".into(),
                    token_sha256: Some(hash.into()),
                    token_file: None,
                }],
            },
            &[],
        )
        .expect("config")
    }

    #[test]
    fn bearer_token_is_checked_by_hash() {
        let auth = with_token(&hex::encode(token_sha256("correct horse battery staple")));
        let op = auth
            .authenticate(&PeerCertificate::None, Some("correct horse battery staple"))
            .expect("valid token");
        assert_eq!(op.id(), "token:automation");
        assert_eq!(
            auth.authenticate(&PeerCertificate::None, Some("wrong")),
            Err(OperatorAuthError::InvalidToken)
        );
        assert_eq!(
            auth.authenticate(&PeerCertificate::None, None),
            Err(OperatorAuthError::Missing)
        );
    }

    #[test]
    fn rigs_and_devices_are_forbidden_even_with_a_token() {
        let auth = with_token(&hex::encode(token_sha256("correct horse battery staple")));
        let token = Some("correct horse battery staple");
        assert_eq!(
            auth.authenticate(&PeerCertificate::Rig("rig-01".into()), token),
            Err(OperatorAuthError::Forbidden("a rig"))
        );
        let device = PeerCertificate::Device(super::super::DevicePeer {
            serial: attestca_core::serial::Serial::from_octets(&[1]),
            der: Vec::new(),
        });
        assert_eq!(
            auth.authenticate(&device, token),
            Err(OperatorAuthError::Forbidden("a device"))
        );
    }

    #[test]
    fn malformed_token_hash_is_a_config_error() {
        let result = OperatorAuthenticator::from_config(
            &OperatorsConfig {
                trust_anchor_files: Vec::new(),
                tokens: vec![OperatorTokenConfig {
                    name: "x".into(),
                    token_sha256: Some("abcd".into()),
                    token_file: None,
                }],
            },
            &[],
        );
        assert!(result.is_err());
    }
}
