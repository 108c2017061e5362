//! The composition root: every layer assembled from a [`Config`] ([`assemble`]), and the
//! process's life ([`serve`]): wait for the database, open the listeners, start the background
//! jobs, and drain on shutdown.
//!
//! It is the only module that knows all the others; nothing imports it but the binary (and the
//! benchmarks that run a CA in process). [`jobs`] holds the background jobs it starts.

pub mod jobs;

use std::collections::HashMap;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;

use crate::access::RigAuthenticator;
use crate::config::Config;
use crate::enrollment::EnrollmentService;
use crate::est::EstState;
use crate::issuance::{IssuanceProfile, IssuingCa};
use crate::server::{connections, health, layers, plain, tls};
use crate::store::Store;
use crate::store::ledger::Ledger;

/// Start-up failures.
#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    #[error(transparent)]
    Config(#[from] crate::config::ConfigError),
    #[error(transparent)]
    Store(#[from] crate::store::StoreError),
    #[error(transparent)]
    Signer(#[from] crate::signer::SignerError),
    #[error(transparent)]
    Issuance(#[from] crate::issuance::IssuanceError),
    #[error("CA certificates: {0}")]
    Pem(#[from] crate::pem::PemError),
    #[error("{what} {addr}: {source}")]
    Bind {
        what: &'static str,
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("encoding: {0}")]
    Encoding(#[from] der::Error),
    #[error(transparent)]
    Ocsp(#[from] crate::ocsp::OcspError),
    #[error("transparency log: {0}")]
    Transparency(#[from] crate::transparency::TransparencyError),
    #[error("the random generator failed")]
    Random,
}

/// A CA assembled from configuration, ready to serve.
pub struct Assembled {
    pub ca: Arc<IssuingCa>,
    pub crl: Arc<crate::revocation::crl::CrlPublisher>,
    /// `None` when `revocation.ocsp_enabled` is off.
    pub ocsp: Option<Arc<crate::ocsp::OcspResponder>>,
    pub enrollment: Arc<EnrollmentService>,
    pub operators: Arc<crate::access::operator::OperatorAuthenticator>,
    pub rigs: Arc<RigAuthenticator>,
    pub store: Store,
    pub tls: Arc<rustls::ServerConfig>,
    /// The TLS server certificate, reloadable (SIGHUP).
    pub tls_certificate: Arc<tls::ServerCertificate>,
    /// `None` when `transparency.enabled` is off.
    pub log: Option<Arc<crate::transparency::IssuanceLog>>,
}

/// Opens the signer, the store and the CA certificates, and assembles the services.
pub async fn assemble(config: &Config) -> Result<Assembled, ServerError> {
    let signer_config = config.resolve_signer()?;
    let signer = crate::signer::MeteredSigner::wrap(crate::signer::open(&signer_config)?, "ca");
    let chain = crate::pem::read_certificate_ders(&config.ca.chain_file).map_err(|e| {
        crate::config::ConfigError::Invalid(format!(
            "{e} (create the CA with `attestca init` first)"
        ))
    })?;
    let ca = Arc::new(IssuingCa::new(chain, signer)?);
    let store = Store::connect_waiting(
        &config.resolve_database_url()?,
        config.database.max_connections,
        config.database.acquire_timeout(),
        Duration::from_secs(config.database.startup_wait_secs),
    )
    .await?;
    tracing::info!(engine = store.engine().name(), "database ready");
    let writers = match store.engine() {
        crate::store::Engine::Postgres => config.database.writers,
        crate::store::Engine::Sqlite => 1,
    };
    let ledger = Ledger::start(
        store.clone(),
        config.database.write_batch_max,
        writers,
        config.transparency.enabled,
    );
    // Devices of the current issuing CA, and of earlier ones after a rollover, may renew.
    let mut device_issuers = vec![ca.certificate().clone()];
    for path in &config.ca.previous_certificate_files {
        device_issuers.extend(crate::pem::read_certificates(path)?);
    }
    let rigs = RigAuthenticator::from_config(&config.rigs)?;
    let operators = Arc::new(crate::access::operator::OperatorAuthenticator::from_config(
        &config.operators,
        rigs.anchor_certificates(),
    )?);
    let rigs = Arc::new(
        rigs.with_device_issuers(device_issuers)
            .with_operators(Arc::clone(&operators)),
    );
    let profiles = config
        .profiles
        .iter()
        .map(|(label, p)| Ok((label.clone(), IssuanceProfile::from_config(label, p)?)))
        .collect::<Result<HashMap<_, _>, crate::config::ConfigError>>()?;
    let vendors = crate::attestation::VendorTrustStore::from_config(&config.attestation.vendors)
        .map_err(crate::config::ConfigError::from)?;
    let clock: Arc<dyn crate::attestation::Clock> = match config.attestation.verification_time {
        Some(t) => {
            tracing::warn!(
                unix_time = t,
                "attestation evidence is verified at a fixed time (attestation.verification_time): for tests only"
            );
            Arc::new(crate::attestation::FixedClock(
                std::time::UNIX_EPOCH + Duration::from_secs(t),
            ))
        }
        None => Arc::new(crate::attestation::SystemClock),
    };
    let gate = Arc::new(
        crate::attestation::gate::AttestationGate::new(vendors, clock)
            .observed_by(Arc::new(crate::metrics::AttestationCounter)),
    );
    let crl = Arc::new(crate::revocation::crl::CrlPublisher::new(
        Arc::clone(&ca),
        store.clone(),
        config.revocation.crl_validity_secs,
        config.revocation.crl_expired_grace_secs,
    ));
    let load = crate::activity::EnrollmentLoad::new(config.server.max_concurrent_enrollments);
    let ocsp = if config.revocation.ocsp_enabled {
        Some(
            crate::ocsp::OcspResponder::start(
                Arc::clone(&ca),
                &signer_config,
                store.clone(),
                ledger.clone(),
                &config.revocation,
                load.clone(),
            )
            .await?,
        )
    } else {
        None
    };
    let nonce_key = {
        let mut candidate = [0u8; 32];
        aws_lc_rs::rand::fill(&mut candidate).map_err(|_| ServerError::Random)?;
        let secret = store
            .nonce_secret(&candidate, attestca_core::time::unix_now())
            .await?;
        attestca_core::nonce::NonceKey::new(&secret)
    };
    let enrollment = Arc::new(EnrollmentService::new(crate::enrollment::EnrollmentParts {
        profiles,
        ca: Arc::clone(&ca),
        store: store.clone(),
        ledger,
        rigs: Arc::clone(&rigs),
        gate,
        retry_window_secs: config.database.retry_window_secs,
        nonce_lifetime_secs: config.attestation.nonce_lifetime_secs,
        nonce_key,
        load: load.clone(),
        budgets: Arc::new(crate::access::rate::RequestBudgets::from_config(
            &config.limits,
        )),
        attestation_keys: config.attestation_keys.enabled.then(|| {
            crate::enrollment::attestation_key::AttestationKeyAuthority {
                ek_root_files: config.attestation_keys.ek_root_files.clone(),
                challenge_lifetime_secs: config.attestation_keys.challenge_lifetime_secs,
                validity_secs: config.attestation_keys.validity_secs,
                allow_reissue: config.attestation_keys.allow_reissue,
            }
        }),
    }));
    let (tls, tls_certificate) = tls::server_config(config, rigs.client_ca_subjects())?;
    let tls = Arc::new(tls);
    let log = if config.transparency.enabled {
        // The checkpoint key in the CA key's backend, under its own label: on the token
        // (created there once, under a lock, when two instances start together), or a
        // software key file beside the CA's.
        let key: Arc<dyn attestca_core::transparency::key::CheckpointSigner> = match config
            .resolve_signer()?
        {
            crate::config::SignerConfig::Pkcs11(pkcs11) => {
                let _creating = store.exclusive("transparency-key").await?;
                let label = config.transparency.key_label_for(&config.ca.name);
                let opened = tokio::task::spawn_blocking(move || {
                    crate::signer::pkcs11::Pkcs11CheckpointKey::open_or_generate(&pkcs11, &label)
                })
                .await
                .map_err(|e| crate::signer::SignerError::Pkcs11(e.to_string()))?;
                Arc::new(opened?)
            }
            crate::config::SignerConfig::Software(_) => Arc::new(
                attestca_core::transparency::key::SoftwareCheckpointKey::load_or_create(
                    &config
                        .server
                        .data_dir
                        .join("pki")
                        .join("log-checkpoint.key"),
                )?,
            ),
        };
        let log = crate::transparency::IssuanceLog::new(
            store.clone(),
            &config.ca.name,
            &config.transparency,
            key,
        )?;
        // What a relying party or a witness configures to verify checkpoints.
        let vkey = config.server.data_dir.join("pki").join("log.vkey");
        if let Err(e) = std::fs::write(&vkey, format!("{}\n", log.verifier_key())) {
            tracing::warn!(error = %e, path = %vkey.display(), "could not write the log's verifier key");
        }
        tracing::info!(origin = log.origin(), verifier_key = %log.verifier_key(), "transparency log");
        Some(Arc::new(log))
    } else {
        None
    };
    Ok(Assembled {
        ca,
        crl,
        ocsp,
        enrollment,
        operators,
        rigs,
        store,
        tls,
        tls_certificate,
        log,
    })
}

/// Runs both listeners until `shutdown` completes, then drains: stops accepting, lets the
/// requests in flight finish (their certificates' records are committed before they answer)
/// within `server.shutdown_grace_secs`, and returns.
pub async fn serve(
    config: &Config,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), ServerError> {
    let until_stopped = |mut rx: tokio::sync::watch::Receiver<bool>| async move {
        let _ = rx.wait_for(|stop| *stop).await;
    };
    let header_read_timeout = Duration::from_secs(config.server.header_read_timeout_secs.max(1));
    // A stop requested while the CA waits for its database ends the wait. The listeners open
    // only once the CA is assembled: clients take an answer on /healthz to mean "EST is
    // served", so the log is where the wait shows.
    let mut shutdown = std::pin::pin!(shutdown);
    let assembled = tokio::select! {
        assembled = assemble(config) => assembled?,
        () = &mut shutdown => {
            tracing::info!("stopped during start-up");
            return Ok(());
        }
    };
    let est_listener = bind("EST (HTTPS) listener", config.server.est_addr).await?;
    let http_listener = bind("plain-HTTP listener", config.server.http_addr).await?;
    let deadlines = layers::Deadlines {
        request: config.server.request_timeout(),
        body: config.server.body_read_timeout(),
    };
    let (cut_off, cutoff) = layers::Cutoff::new();
    let est_app = layers::apply(
        crate::est::router(Arc::new(EstState::new(
            Arc::clone(&assembled.enrollment),
            config.server.max_request_bytes,
        )?))
        .merge(crate::api::router(Arc::new(crate::api::ApiState::new(
            crate::registry::Registry::new(assembled.store.clone()),
            Arc::clone(&assembled.operators),
            assembled.log.clone(),
        )))),
        "est",
        deadlines,
        cutoff.clone(),
    );
    // The first CRL exists before the listeners open, so a relying party never sees a 404.
    if let Err(e) = assembled.crl.refresh().await {
        tracing::warn!(error = %e, "initial CRL generation failed");
    }
    let health = Arc::new(health::HealthSources::new(
        assembled.store.clone(),
        Arc::clone(&assembled.ca),
        Arc::clone(&assembled.crl),
        config.ca.name.clone(),
        assembled.ocsp.clone(),
    ));
    let http_app = layers::apply(
        plain::router(
            Arc::clone(&assembled.crl),
            &config.ca,
            assembled.ocsp.clone(),
            assembled.log.clone(),
            Arc::clone(&health),
        ),
        "http",
        deadlines,
        cutoff,
    );
    let jobs = jobs::Jobs::start(&assembled, config);
    tracing::info!(est = %config.server.est_addr, http = %config.server.http_addr, "attestca serving");

    let (stop_est, est_stopped) = tokio::sync::watch::channel(false);
    let (stop_http, http_stopped) = tokio::sync::watch::channel(false);
    let mut http = tokio::spawn(connections::serve(
        http_listener,
        http_app,
        connections::ListenerSettings {
            name: "http",
            tls: None,
            handshake_timeout: Duration::ZERO,
            header_read_timeout,
        },
        until_stopped(http_stopped),
    ));
    let mut est = tokio::spawn(connections::serve(
        est_listener,
        est_app,
        connections::ListenerSettings {
            name: "est",
            tls: Some((
                tokio_rustls::TlsAcceptor::from(assembled.tls),
                assembled.rigs,
            )),
            handshake_timeout: Duration::from_secs(config.server.tls_handshake_timeout_secs.max(1)),
            header_read_timeout,
        },
        until_stopped(est_stopped),
    ));
    shutdown.await;
    let grace = Duration::from_secs(config.server.shutdown_grace_secs);
    // Draining: readiness says so at once, and the EST listener stops accepting while its
    // requests finish. The plain-HTTP listener (health, metrics, CRL, OCSP) stays up through
    // the grace period, so that orchestrators see "draining" rather than a closed port.
    health.start_draining();
    tracing::info!(
        grace_secs = grace.as_secs(),
        "shutting down: readiness reports draining; no new EST connections; requests in flight finish"
    );
    let _ = stop_est.send(true);
    if tokio::time::timeout(grace, &mut est).await.is_ok() {
        tracing::info!("all EST requests finished");
    } else {
        // What still runs is answered 503 service.shutting_down, then its connection closes.
        tracing::warn!(
            "requests still running at the end of the grace period are answered 503 service.shutting_down"
        );
        let _ = cut_off.send(true);
        if tokio::time::timeout(FLUSH_AFTER_CUTOFF, &mut est)
            .await
            .is_err()
        {
            est.abort();
        }
    }
    let _ = stop_http.send(true);
    if tokio::time::timeout(FLUSH_AFTER_CUTOFF, &mut http)
        .await
        .is_err()
    {
        let _ = cut_off.send(true);
        if tokio::time::timeout(FLUSH_AFTER_CUTOFF, &mut http)
            .await
            .is_err()
        {
            http.abort();
        }
    }
    jobs.stop();
    Ok(())
}

/// After the cut-off, how long the 503s have to reach their clients before the process ends.
const FLUSH_AFTER_CUTOFF: Duration = Duration::from_secs(2);

async fn bind(what: &'static str, addr: SocketAddr) -> Result<TcpListener, ServerError> {
    TcpListener::bind(addr)
        .await
        .map_err(|source| ServerError::Bind { what, addr, source })
}
