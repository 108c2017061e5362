//! A small EST client (RFC 7030) over rustls, for rigs and tests.

use std::path::Path;
use std::sync::Arc;

use anyhow::{Context, anyhow, bail};
use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use der::{Decode, Encode};
use rustls::RootCertStore;
use rustls_pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use secrecy::{ExposeSecret, SecretString};

use attestca_core::est_codec as codec;

/// How a rig authenticates.
pub enum RigCredentials {
    None,
    ClientCertificate {
        chain_pem: Vec<u8>,
        key_pem: Vec<u8>,
    },
    Basic {
        user: String,
        password: SecretString,
    },
}

/// A TLS client configuration trusting `trust_pem` and presenting an optional client identity.
pub fn tls_config(
    trust_pem: &Path,
    identity: Option<(&Path, &Path)>,
) -> anyhow::Result<rustls::ClientConfig> {
    let identity = match identity {
        None => None,
        Some((cert, key)) => Some((
            attestca_core::pem::read_certificate_ders(cert)?,
            attestca_core::pem::read_private_key(key)?,
        )),
    };
    tls_config_with_identity(trust_pem, identity)
}

/// A TLS client configuration trusting `trust_pem` and presenting an optional client identity
/// given as DER certificates and a PKCS#8 key (a device renewing with what it holds).
pub fn tls_config_with_identity(
    trust_pem: &Path,
    identity: Option<(Vec<Vec<u8>>, Vec<u8>)>,
) -> anyhow::Result<rustls::ClientConfig> {
    let mut roots = RootCertStore::empty();
    for der in attestca_core::pem::read_certificate_ders(trust_pem)? {
        roots.add(CertificateDer::from(der))?;
    }
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let builder = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_root_certificates(roots);
    Ok(match identity {
        None => builder.with_no_client_auth(),
        Some((chain, key)) => {
            let chain = chain.into_iter().map(CertificateDer::from).collect();
            let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key));
            builder.with_client_auth_cert(chain, key)?
        }
    })
}

/// An EST server, optionally under a label.
pub struct EstClient {
    http: reqwest::Client,
    /// `https://host:port`, for the routes beside EST.
    server: String,
    base: String,
    basic: Option<(String, SecretString)>,
}

impl EstClient {
    /// `server` is `https://host:port`; `label` selects a profile.
    pub fn new(
        server: &str,
        label: Option<&str>,
        tls: rustls::ClientConfig,
        basic: Option<(String, SecretString)>,
    ) -> anyhow::Result<Self> {
        let http = reqwest::Client::builder()
            .tls_backend_preconfigured(tls)
            .timeout(std::time::Duration::from_secs(30))
            .build()?;
        let base = match label {
            Some(l) => format!("{}/.well-known/est/{l}", server.trim_end_matches('/')),
            None => format!("{}/.well-known/est", server.trim_end_matches('/')),
        };
        Ok(Self {
            http,
            server: server.trim_end_matches('/').to_owned(),
            base,
            basic,
        })
    }

    /// `GET cacerts`: the CA chain as DER certificates.
    pub async fn cacerts(&self) -> anyhow::Result<Vec<Vec<u8>>> {
        let response = self
            .http
            .get(format!("{}/cacerts", self.base))
            .send()
            .await?;
        let status = response.status();
        let body = response.bytes().await?;
        if !status.is_success() {
            bail!(
                "cacerts: HTTP {status}: {}",
                String::from_utf8_lossy(&body).trim()
            );
        }
        certificates_from_pkcs7(&codec::decode_body(&body).map_err(|e| anyhow!("cacerts: {e}"))?)
    }

    /// `GET nonce` (draft-ietf-lamps-attestation-freshness): a fresh nonce for evidence.
    pub async fn nonce(&self) -> anyhow::Result<Vec<u8>> {
        Ok(self.nonce_with_lifetime().await?.0)
    }

    /// A fresh nonce and how long the server says it stays valid (its `expiry`, in seconds;
    /// `None` when the server does not say).
    pub async fn nonce_with_lifetime(&self) -> anyhow::Result<(Vec<u8>, Option<u64>)> {
        use base64::Engine;
        let mut request = self.http.get(format!("{}/nonce", self.base));
        if let Some((user, password)) = &self.basic {
            request = request.basic_auth(user, Some(password.expose_secret()));
        }
        let response = request.send().await.context("nonce")?;
        let status = response.status();
        let body = response.bytes().await?;
        if !status.is_success() {
            bail!(
                "nonce: HTTP {status}: {}",
                String::from_utf8_lossy(&body).trim()
            );
        }
        let json: serde_json::Value = serde_json::from_slice(&body).context("nonce: not JSON")?;
        let encoded = json["nonce"]
            .as_str()
            .context("nonce: no \"nonce\" field")?;
        let nonce = base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(encoded)
            .context("nonce: not base64url")?;
        Ok((nonce, json["expiry"].as_u64()))
    }

    /// `POST /attestation-key/v1/challenge`: a TPM2_MakeCredential challenge for this EK
    /// certificate and AK public area: `(credential_blob, encrypted_secret)`.
    pub async fn attestation_key_challenge(
        &self,
        endorsement_der: &[u8],
        ak_public_area: &[u8],
    ) -> anyhow::Result<(Vec<u8>, Vec<u8>)> {
        let answer = self
            .attestation_key_operation(
                "challenge",
                serde_json::json!({
                    "ek_certificate": STANDARD.encode(endorsement_der),
                    "ak_public": STANDARD.encode(ak_public_area),
                }),
            )
            .await?;
        Ok((
            base64_field(&answer, "credential_blob")?,
            base64_field(&answer, "encrypted_secret")?,
        ))
    }

    /// `POST /attestation-key/v1/certificate`: the AK certificate (DER) and its chain, for the
    /// secret TPM2_ActivateCredential recovered.
    pub async fn attestation_key_certificate(
        &self,
        endorsement_der: &[u8],
        ak_public_area: &[u8],
        secret: &[u8],
    ) -> anyhow::Result<(Vec<u8>, Vec<Vec<u8>>)> {
        let answer = self
            .attestation_key_operation(
                "certificate",
                serde_json::json!({
                    "ek_certificate": STANDARD.encode(endorsement_der),
                    "ak_public": STANDARD.encode(ak_public_area),
                    "secret": STANDARD.encode(secret),
                }),
            )
            .await?;
        let chain = answer["chain"]
            .as_array()
            .context("attestation-key certificate: no \"chain\"")?
            .iter()
            .map(|c| {
                STANDARD
                    .decode(c.as_str().unwrap_or_default())
                    .context("attestation-key certificate: chain is not base64")
            })
            .collect::<anyhow::Result<Vec<_>>>()?;
        Ok((base64_field(&answer, "certificate")?, chain))
    }

    async fn attestation_key_operation(
        &self,
        step: &str,
        body: serde_json::Value,
    ) -> anyhow::Result<serde_json::Value> {
        let operation = format!("attestation-key/{step}");
        let mut request = self
            .http
            .post(format!("{}/attestation-key/v1/{step}", self.server))
            .header("Content-Type", "application/json")
            .body(body.to_string());
        if let Some((user, password)) = &self.basic {
            request = request.basic_auth(user, Some(password.expose_secret()));
        }
        let response = request.send().await.context(operation.clone())?;
        let status = response.status();
        let body = response.bytes().await?;
        if !status.is_success() {
            return Err(Refused {
                operation,
                status: status.as_u16(),
                retry_after: None,
                message: format!("HTTP {status}: {}", String::from_utf8_lossy(&body).trim()),
            }
            .into());
        }
        serde_json::from_slice(&body).with_context(|| format!("{operation}: not JSON"))
    }

    /// `POST simpleenroll`: returns the issued certificate (DER).
    pub async fn simpleenroll(&self, csr_der: &[u8]) -> anyhow::Result<Vec<u8>> {
        self.enroll_operation("simpleenroll", csr_der).await
    }

    /// `POST simplereenroll` (authenticated by the TLS client certificate being renewed).
    pub async fn simplereenroll(&self, csr_der: &[u8]) -> anyhow::Result<Vec<u8>> {
        self.enroll_operation("simplereenroll", csr_der).await
    }

    async fn enroll_operation(&self, operation: &str, csr_der: &[u8]) -> anyhow::Result<Vec<u8>> {
        let mut request = self
            .http
            .post(format!("{}/{operation}", self.base))
            .header("Content-Type", "application/pkcs10")
            .body(codec::encode_body(csr_der));
        if let Some((user, password)) = &self.basic {
            request = request.basic_auth(user, Some(password.expose_secret()));
        }
        let response = request.send().await.context(operation.to_owned())?;
        let status = response.status();
        let retry_after = response
            .headers()
            .get(reqwest::header::RETRY_AFTER)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.trim().parse::<u64>().ok())
            .map(std::time::Duration::from_secs);
        let body = response.bytes().await?;
        if !status.is_success() {
            return Err(Refused {
                operation: operation.to_owned(),
                status: status.as_u16(),
                retry_after,
                message: format!("HTTP {status}: {}", String::from_utf8_lossy(&body).trim()),
            }
            .into());
        }
        let certs = certificates_from_pkcs7(
            &codec::decode_body(&body).map_err(|e| anyhow!("{operation}: {e}"))?,
        )?;
        match certs.as_slice() {
            [one] => Ok(one.clone()),
            _ => bail!("{operation}: expected one certificate, got {}", certs.len()),
        }
    }
}

/// An EST operation the server answered with an error status (in the `anyhow::Error` of
/// [`EstClient::simpleenroll`] and [`EstClient::simplereenroll`]; downcast to read it).
#[derive(Debug, thiserror::Error)]
#[error("{operation}: {message}")]
pub struct Refused {
    pub operation: String,
    pub status: u16,
    /// The server's Retry-After, in seconds form.
    pub retry_after: Option<std::time::Duration>,
    pub message: String,
}

/// The certificates of a certs-only CMS SignedData.
pub fn certificates_from_pkcs7(der: &[u8]) -> anyhow::Result<Vec<Vec<u8>>> {
    use cms::cert::CertificateChoices;
    use cms::signed_data::SignedData;
    let info = cms::content_info::ContentInfo::from_der(der).context("not a CMS ContentInfo")?;
    let signed: SignedData = info.content.decode_as().context("not a SignedData")?;
    let mut out = Vec::new();
    for choice in signed
        .certificates
        .map(|c| c.0.into_vec())
        .unwrap_or_default()
    {
        if let CertificateChoices::Certificate(cert) = choice {
            out.push(cert.to_der()?);
        }
    }
    Ok(out)
}

/// A base64 string field of a JSON answer.
fn base64_field(answer: &serde_json::Value, field: &str) -> anyhow::Result<Vec<u8>> {
    STANDARD
        .decode(
            answer[field]
                .as_str()
                .with_context(|| format!("no \"{field}\" in the answer"))?,
        )
        .with_context(|| format!("\"{field}\" is not base64"))
}
