//! The EST listener's rustls configuration: TLS 1.2 and 1.3, client certificates requested
//! but optional (cacerts stays anonymous; rigs authenticate by certificate or Basic).

use std::sync::Arc;

use rustls::RootCertStore;
use rustls::server::WebPkiClientVerifier;
use rustls_pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};

use crate::config::{Config, ConfigError};

/// Builds the server configuration. `client_anchors` are the CA certificates a client
/// certificate may chain to (rig anchors now; device and operator anchors later); which role a
/// certificate has is decided afterwards, by the access layer.
pub fn server_config(
    config: &Config,
    client_anchors: &[CertificateDer<'static>],
) -> Result<rustls::ServerConfig, ConfigError> {
    let invalid = |what: String| ConfigError::Invalid(format!("tls: {what}"));
    let chain: Vec<CertificateDer<'static>> =
        crate::pem::read_certificate_ders(&config.tls.certificate_file)
            .map_err(|e| invalid(e.to_string()))?
            .into_iter()
            .map(CertificateDer::from)
            .collect();
    let key =
        crate::pem::read_private_key(&config.tls.key_file).map_err(|e| invalid(e.to_string()))?;
    let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key));

    let mut roots = RootCertStore::empty();
    for anchor in client_anchors {
        roots
            .add(anchor.clone())
            .map_err(|e| invalid(format!("client trust anchor: {e}")))?;
    }
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let builder = rustls::ServerConfig::builder_with_provider(provider.clone())
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
        .map_err(|e| invalid(e.to_string()))?;
    let builder = if roots.is_empty() {
        builder.with_no_client_auth()
    } else {
        let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider)
            .allow_unauthenticated()
            .build()
            .map_err(|e| invalid(e.to_string()))?;
        builder.with_client_cert_verifier(verifier)
    };
    let mut server = builder
        .with_single_cert(chain, key)
        .map_err(|e| invalid(format!("server certificate and key: {e}")))?;
    server.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(server)
}
