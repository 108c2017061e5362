//! The EST listener's rustls configuration: TLS 1.2 and 1.3, client certificates requested
//! but optional (cacerts stays anonymous; rigs authenticate by certificate or Basic).

use std::sync::Arc;

use rustls_pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};

use crate::config::{Config, ConfigError};

/// A client-certificate verifier that proves possession only.
///
/// The handshake signature shows the client holds the key of the certificate it presents;
/// whether that certificate is trusted — a rig's, chaining to the rig anchors, or a device's,
/// issued by this CA, known to the database, unrevoked, and unexpired or within the profile's
/// grace — is decided by the access and enrollment layers, which can answer 401/403 with a
/// reason instead of a bare TLS alert. Certificates are requested but optional, so cacerts
/// stays anonymous.
#[derive(Debug)]
struct PossessionVerifier {
    hints: Vec<rustls::DistinguishedName>,
    provider: Arc<rustls::crypto::CryptoProvider>,
}

impl rustls::server::danger::ClientCertVerifier for PossessionVerifier {
    fn offer_client_auth(&self) -> bool {
        true
    }

    fn client_auth_mandatory(&self) -> bool {
        false
    }

    fn root_hint_subjects(&self) -> &[rustls::DistinguishedName] {
        &self.hints
    }

    fn verify_client_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _now: rustls_pki_types::UnixTime,
    ) -> Result<rustls::server::danger::ClientCertVerified, rustls::Error> {
        Ok(rustls::server::danger::ClientCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.provider
            .signature_verification_algorithms
            .supported_schemes()
    }
}

/// The server certificate and key, re-read from their files on request (SIGHUP), so that a
/// renewed TLS certificate is served without a restart. Handshakes in progress keep the one
/// they started with.
#[derive(Debug)]
pub struct ServerCertificate {
    certificate_file: std::path::PathBuf,
    key_file: std::path::PathBuf,
    provider: Arc<rustls::crypto::CryptoProvider>,
    current: std::sync::RwLock<Arc<rustls::sign::CertifiedKey>>,
}

impl ServerCertificate {
    fn load(
        certificate_file: &std::path::Path,
        key_file: &std::path::Path,
        provider: &rustls::crypto::CryptoProvider,
    ) -> Result<Arc<rustls::sign::CertifiedKey>, ConfigError> {
        let invalid = |what: String| ConfigError::Invalid(format!("tls: {what}"));
        let chain: Vec<CertificateDer<'static>> =
            crate::pem::read_certificate_ders(certificate_file)
                .map_err(|e| invalid(e.to_string()))?
                .into_iter()
                .map(CertificateDer::from)
                .collect();
        let key = crate::pem::read_private_key(key_file).map_err(|e| invalid(e.to_string()))?;
        let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key));
        let certified = rustls::sign::CertifiedKey::from_der(chain, key, provider)
            .map_err(|e| invalid(format!("server certificate and key: {e}")))?;
        Ok(Arc::new(certified))
    }

    /// Re-reads the files; on error the current certificate stays in service.
    pub fn reload(&self) -> Result<(), ConfigError> {
        let fresh = Self::load(&self.certificate_file, &self.key_file, &self.provider)?;
        if let Ok(mut current) = self.current.write() {
            *current = fresh;
        }
        Ok(())
    }
}

impl rustls::server::ResolvesServerCert for ServerCertificate {
    fn resolve(
        &self,
        _client_hello: rustls::server::ClientHello<'_>,
    ) -> Option<Arc<rustls::sign::CertifiedKey>> {
        self.current.read().ok().map(|c| Arc::clone(&c))
    }
}

/// Builds the server configuration and its reloadable certificate. `client_ca_subjects` (DER
/// Names) are advertised in the CertificateRequest: the rig anchors, the operator anchors and
/// the CA itself (for device renewal).
pub fn server_config(
    config: &Config,
    client_ca_subjects: Vec<Vec<u8>>,
) -> Result<(rustls::ServerConfig, Arc<ServerCertificate>), ConfigError> {
    let invalid = |what: String| ConfigError::Invalid(format!("tls: {what}"));
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let certificate = Arc::new(ServerCertificate {
        current: std::sync::RwLock::new(ServerCertificate::load(
            &config.tls.certificate_file,
            &config.tls.key_file,
            &provider,
        )?),
        certificate_file: config.tls.certificate_file.clone(),
        key_file: config.tls.key_file.clone(),
        provider: Arc::clone(&provider),
    });
    let verifier = Arc::new(PossessionVerifier {
        hints: client_ca_subjects
            .into_iter()
            .map(rustls::DistinguishedName::from)
            .collect(),
        provider: Arc::clone(&provider),
    });
    let builder = rustls::ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
        .map_err(|e| invalid(e.to_string()))?
        .with_client_cert_verifier(verifier);
    let mut server = builder.with_cert_resolver(Arc::clone(&certificate) as _);
    server.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok((server, certificate))
}
