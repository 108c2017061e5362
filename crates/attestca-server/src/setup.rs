//! CA set-up: the test/dev PKI, a CSR for an external root, importing the signed issuing-CA
//! certificate, and the zero-setup development configuration.

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::sync::Arc;

use const_oid::db::rfc5280::{ID_KP_CLIENT_AUTH, ID_KP_SERVER_AUTH};
use der::asn1::{Ia5String, SetOfVec};
use der::{Decode, Encode};
use secrecy::SecretString;
use x509_cert::Certificate;
use x509_cert::ext::pkix::name::GeneralName;
use x509_cert::request::{CertReq, CertReqInfo, Version};

use crate::asn1::SignedEnvelope;
use crate::config::{
    CaConfig, Config, DatabaseConfig, ProfileConfig, RigAccountConfig, RigsConfig, ServerConfig,
    SignerBackend, SignerSection, TlsConfig,
};
use crate::issuance::software_ca::{self, SoftwareCa};
use crate::signer::CaKeyAlgorithm;

/// Set-up failures.
#[derive(Debug, thiserror::Error)]
pub enum SetupError {
    #[error(transparent)]
    Config(#[from] crate::config::ConfigError),
    #[error(transparent)]
    Signer(#[from] crate::signer::SignerError),
    #[error(transparent)]
    Issuance(#[from] crate::issuance::IssuanceError),
    #[error(transparent)]
    Pem(#[from] crate::pem::PemError),
    #[error("encoding: {0}")]
    Encoding(#[from] der::Error),
    #[error("{0}")]
    Refused(String),
}

/// What `attestca init --test-root` should also create for a complete test installation.
#[derive(Clone, Debug, Default)]
pub struct TestInstallExtras {
    /// DNS names and IP addresses for a TLS server certificate at `tls.*_file`.
    pub tls_server_names: Vec<String>,
    /// Create a rig CA at `rigs.trust_anchor_files[0]` and a rig certificate with this CN
    /// (written as `<dir>/rig.crt` and `<dir>/rig.key` next to the CA chain file).
    pub rig_certificate: Option<String>,
    /// Create an operator CA at `operators.trust_anchor_files[0]` and an operator certificate
    /// with this CN (`<dir>/operator.crt`, `<dir>/operator.key`).
    pub operator_certificate: Option<String>,
}

/// Creates a test installation: a self-signed root (software key), the issuing key in the
/// configured signer (inside the HSM with PKCS#11), the issuing CA certificate, and the chain.
pub fn init_test_root(config: &Config, extras: &TestInstallExtras) -> Result<(), SetupError> {
    if config.ca.chain_file.exists() {
        return Err(SetupError::Refused(format!(
            "{} exists: this CA is already initialised",
            config.ca.chain_file.display()
        )));
    }
    let root = SoftwareCa::self_signed(&config.ca.root_subject, 20)?;
    crate::pem::write_private_key(&config.ca.root_key_file, &root.pkcs8)?;
    let issuing_key = crate::signer::generate(&config.resolve_signer()?)?;
    let issuing_der = root.issue_ca(&config.ca.subject, issuing_key.public_key(), 10, Some(0))?;
    crate::pem::write_certificates(&config.ca.chain_file, &[&issuing_der, &root.der])?;
    if !extras.tls_server_names.is_empty() && !config.tls.certificate_file.exists() {
        let names = extras
            .tls_server_names
            .iter()
            .map(|n| match IpAddr::from_str(n) {
                Ok(ip) => Ok(GeneralName::from(ip)),
                Err(_) => Ok(GeneralName::DnsName(Ia5String::new(n)?)),
            })
            .collect::<Result<Vec<_>, der::Error>>()?;
        let (der, key) =
            root.issue_end_entity(&extras.tls_server_names[0], ID_KP_SERVER_AUTH, names, 2)?;
        crate::pem::write_certificates(&config.tls.certificate_file, &[&der])?;
        crate::pem::write_private_key(&config.tls.key_file, &key)?;
    }
    let dir = config.ca.chain_file.parent().unwrap_or(Path::new("."));
    if let Some(cn) = &extras.rig_certificate {
        let anchor = config.rigs.trust_anchor_files.first().ok_or_else(|| {
            SetupError::Refused("a rig certificate needs rigs.trust_anchor_files".into())
        })?;
        create_client_identity(anchor, "CN=attestca Test Rig CA,O=attestca", cn, dir, "rig")?;
    }
    if let Some(cn) = &extras.operator_certificate {
        create_operator_identity(config, cn)?;
    }
    refresh_test_root_crl(config)?;
    Ok(())
}

/// Validity of a test root's CRL; it is re-signed at half of that by the dev server.
const TEST_ROOT_CRL_SECS: i64 = 30 * 86_400;

/// Whether `config` is a development install whose test root signs its own CRL: a root CRL
/// file is configured and the root's key is on disk (a production root's key never is).
pub fn has_test_root(config: &Config) -> bool {
    config.ca.root_crl_file.is_some() && config.ca.root_key_file.exists()
}

/// Signs a (normally empty) CRL for a test root with its software key and writes it to
/// `ca.root_crl_file`, when that is set and the file is missing or past half its validity.
/// A production root is offline: its ceremony writes that file instead.
pub fn refresh_test_root_crl(config: &Config) -> Result<(), SetupError> {
    let Some(path) = &config.ca.root_crl_file else {
        return Ok(());
    };
    let now = attestca_core::time::unix_now();
    if let Ok(crl) = crate::revocation::root_crl::read(path)
        && now < crl.this_update + TEST_ROOT_CRL_SECS / 2
    {
        return Ok(());
    }
    if !config.ca.root_key_file.exists() {
        return Ok(());
    }
    let chain = crate::pem::read_certificate_ders(&config.ca.chain_file)?;
    let root_der = chain
        .last()
        .ok_or_else(|| SetupError::Refused("the CA chain is empty".into()))?
        .clone();
    let pkcs8 = crate::pem::read_private_key(&config.ca.root_key_file)?;
    let signer =
        crate::signer::software::SoftwareSigner::from_pkcs8(CaKeyAlgorithm::EcdsaP256, &pkcs8)?;
    let root = crate::issuance::IssuingCa::new(vec![root_der], Arc::new(signer))?;
    // The number only has to grow: the signing time does.
    let der = crate::revocation::crl::build(
        &root,
        now as u64,
        now,
        now + TEST_ROOT_CRL_SECS,
        &Default::default(),
    )?;
    crate::pem::write_file(path, &der, 0o644)?;
    Ok(())
}

/// Creates the operator CA at `operators.trust_anchor_files[0]` and an operator certificate
/// with CN `cn` beside the CA chain (`operator.crt`, `operator.key`).
fn create_operator_identity(config: &Config, cn: &str) -> Result<(), SetupError> {
    let anchor = config.operators.trust_anchor_files.first().ok_or_else(|| {
        SetupError::Refused("an operator certificate needs operators.trust_anchor_files".into())
    })?;
    let dir = config.ca.chain_file.parent().unwrap_or(Path::new("."));
    create_client_identity(
        anchor,
        "CN=attestca Test Operator CA,O=attestca",
        cn,
        dir,
        "operator",
    )
}

/// A self-signed client CA written to `anchor` (its key beside it) and a TLS client
/// certificate with CN `cn` issued by it, as `<dir>/<stem>.crt` and `<dir>/<stem>.key`.
fn create_client_identity(
    anchor: &Path,
    ca_subject: &str,
    cn: &str,
    dir: &Path,
    stem: &str,
) -> Result<(), SetupError> {
    let ca = SoftwareCa::self_signed(ca_subject, 20)?;
    crate::pem::write_certificates(anchor, &[&ca.der])?;
    crate::pem::write_private_key(&anchor.with_extension("key"), &ca.pkcs8)?;
    let (der, key) = ca.issue_end_entity(cn, ID_KP_CLIENT_AUTH, Vec::new(), 5)?;
    crate::pem::write_certificates(&dir.join(format!("{stem}.crt")), &[&der])?;
    crate::pem::write_private_key(&dir.join(format!("{stem}.key")), &key)?;
    Ok(())
}

/// Production set-up, step 1: generates the issuing key in the configured signer and returns
/// a PKCS#10 CSR (DER) for the offline root to sign.
pub fn init_external_root(config: &Config) -> Result<Vec<u8>, SetupError> {
    if config.ca.chain_file.exists() {
        return Err(SetupError::Refused(format!(
            "{} exists: this CA is already initialised",
            config.ca.chain_file.display()
        )));
    }
    let key = crate::signer::generate(&config.resolve_signer()?)?;
    let info = CertReqInfo {
        version: Version::V1,
        subject: software_ca::name(&config.ca.subject)?,
        public_key: key.public_key().clone(),
        attributes: SetOfVec::new(),
    };
    let info_der = info.to_der()?;
    let signature = key.sign(&info_der)?;
    let der =
        SignedEnvelope::assemble(&info_der, key.algorithm().signature_algorithm(), &signature)?;
    CertReq::from_der(&der)?;
    Ok(der)
}

/// Production set-up, step 2: installs the issuing-CA certificate signed by the offline root,
/// after checking that it certifies the key in the signer and chains to the given issuers.
pub fn import_ca(config: &Config, certificate: &Path, chain: &Path) -> Result<(), SetupError> {
    let signer = crate::signer::open(&config.resolve_signer()?)?;
    let issuing = crate::pem::read_certificate_ders(certificate)?;
    let first = issuing
        .first()
        .ok_or_else(|| SetupError::Refused("no certificate given".into()))?
        .clone();
    let parents = crate::pem::read_certificate_ders(chain)?;
    let mut all = vec![first.clone()];
    all.extend(parents.into_iter().filter(|p| *p != first));
    // Checks the key match; a mismatch is the usual mistake (wrong CSR signed).
    crate::issuance::IssuingCa::new(all.clone(), Arc::clone(&signer))?;
    verify_chain(&all)?;
    let refs: Vec<&[u8]> = all.iter().map(Vec::as_slice).collect();
    crate::pem::write_certificates(&config.ca.chain_file, &refs)?;
    Ok(())
}

/// Checks that each certificate is signed by the next and the last is self-signed.
fn verify_chain(chain: &[Vec<u8>]) -> Result<(), SetupError> {
    for (i, der) in chain.iter().enumerate() {
        let issuer_der = chain.get(i + 1).unwrap_or(der);
        let issuer = Certificate::from_der(issuer_der)?;
        if !crate::verify::issued_by(der, &issuer) {
            return Err(SetupError::Refused(format!(
                "certificate {} of the chain is not signed by certificate {}",
                i + 1,
                (i + 2).min(chain.len())
            )));
        }
    }
    Ok(())
}

/// Paths of the development installation under a data directory.
pub struct DevLayout {
    pub data_dir: PathBuf,
}

impl DevLayout {
    pub fn pki(&self) -> PathBuf {
        self.data_dir.join("pki")
    }
    pub fn chain(&self) -> PathBuf {
        self.pki().join("ca-chain.pem")
    }
    pub fn rig_cert(&self) -> PathBuf {
        self.pki().join("rig.crt")
    }
    pub fn rig_key(&self) -> PathBuf {
        self.pki().join("rig.key")
    }
    pub fn rig_basic(&self) -> PathBuf {
        self.pki().join("rig-basic.txt")
    }
    pub fn rig_ca(&self) -> PathBuf {
        self.pki().join("rig-ca.crt")
    }
    /// The simulated secure-element vendor `attestca-rig --vendor` uses.
    pub fn vendor(&self) -> PathBuf {
        self.data_dir.join("vendor")
    }
}

/// The development configuration: SQLite and a software key under `data_dir`, one default
/// profile open to every authenticated rig.
pub fn dev_config(data_dir: &Path, est_addr: SocketAddr, http_addr: SocketAddr) -> Config {
    let layout = DevLayout {
        data_dir: data_dir.to_owned(),
    };
    // The default profile signs only keys the (simulated) secure element attests; `lab` is
    // open to any CSR so that generic EST clients can be tried against a dev server.
    let mut profiles = BTreeMap::new();
    profiles.insert(
        crate::config::DEFAULT_PROFILE.to_owned(),
        ProfileConfig {
            attestation_required: true,
            rekey_requires_attestation: true,
            key_algorithms: vec![crate::config::DeviceKeyAlgorithm::P256],
            crl_urls: vec![format!("http://{http_addr}/crl/issuing-ca.crl")],
            ocsp_urls: vec![format!("http://{http_addr}/ocsp")],
            ..ProfileConfig::default()
        },
    );
    profiles.insert(
        "lab".to_owned(),
        ProfileConfig {
            crl_urls: vec![format!("http://{http_addr}/crl/issuing-ca.crl")],
            ocsp_urls: vec![format!("http://{http_addr}/ocsp")],
            ..ProfileConfig::default()
        },
    );
    let vendor = attestca_sim::secure_element::VendorFiles {
        dir: layout.vendor(),
    };
    Config {
        server: ServerConfig {
            est_addr,
            http_addr,
            data_dir: data_dir.to_owned(),
            ..ServerConfig::default()
        },
        tls: TlsConfig {
            certificate_file: layout.pki().join("tls-server.crt"),
            key_file: layout.pki().join("tls-server.key"),
        },
        database: DatabaseConfig {
            url: format!("sqlite://{}", data_dir.join("attestca.db").display()),
            ..DatabaseConfig::default()
        },
        signer: SignerSection {
            backend: SignerBackend::Software,
            algorithm: CaKeyAlgorithm::EcdsaP256,
            key_file: Some(layout.pki().join("issuing-ca.key")),
            module: None,
            token_label: None,
            key_label: None,
            sessions: 1,
            pin_file: None,
            simulated_latency_ms: 0,
        },
        ca: CaConfig {
            chain_file: layout.chain(),
            name: "issuing-ca".into(),
            subject: "CN=attestca Dev Issuing CA,O=attestca development".into(),
            root_subject: "CN=attestca Dev Root CA,O=attestca development".into(),
            root_key_file: layout.pki().join("root-ca.key"),
            previous_certificate_files: Vec::new(),
            root_crl_file: Some(layout.pki().join("root-ca.crl")),
            root_crl_name: "root-ca".into(),
        },
        rigs: RigsConfig {
            trust_anchor_files: vec![layout.rig_ca()],
            accounts: Vec::new(),
        },
        limits: Default::default(),
        operators: crate::config::OperatorsConfig {
            trust_anchor_files: vec![layout.pki().join("operator-ca.crt")],
            tokens: Vec::new(),
        },
        revocation: Default::default(),
        transparency: Default::default(),
        attestation: crate::config::AttestationConfig {
            vendors: vec![
                crate::attestation::vendors::VendorConfig {
                    name: "simulated-se".into(),
                    roots: vec![vendor.root()],
                    formats: vec![crate::attestation::AttestationFormat::X509Chain],
                    reader: crate::attestation::vendors::VendorReader::SimulatedSe,
                    hardware_type: crate::attestation::ID_HW_SIMULATED_SE.to_string(),
                    denied_serials: Vec::new(),
                    allow_sha1: false,
                },
                // TPM2_Certify by attestation keys this CA certified itself.
                crate::attestation::vendors::VendorConfig {
                    name: DEV_TPM_VENDOR.into(),
                    roots: vec![layout.chain()],
                    formats: vec![crate::attestation::AttestationFormat::TpmCertify],
                    reader: crate::attestation::vendors::VendorReader::Tpm,
                    hardware_type: "2.23.133.1.2".into(),
                    denied_serials: Vec::new(),
                    allow_sha1: false,
                },
            ],
            ..Default::default()
        },
        // The CA certifies TPM attestation keys, trusting the EK roots dropped into
        // DIR/tpm-ek-roots/ and a local swtpm's CA (swtpm_setup --create-ek-cert); a dev rig
        // makes a new AK at each run, so reissue is allowed.
        attestation_keys: crate::config::AttestationKeysConfig {
            enabled: true,
            ek_root_files: vec![
                data_dir.join(DEV_EK_ROOTS),
                PathBuf::from(SWTPM_LOCALCA_DIR),
            ],
            allow_reissue: true,
            ..Default::default()
        },
        profiles,
    }
}

/// The vendor `serve --dev` trusts for TPM2_Certify by attestation keys it certified.
pub const DEV_TPM_VENDOR: &str = "attestca-tpm";
/// Under the development data directory: PEM files of TPM vendors' EK roots.
pub const DEV_EK_ROOTS: &str = "tpm-ek-roots";
/// Where swtpm_setup's default local CA keeps its certificates (Debian swtpm-tools).
pub const SWTPM_LOCALCA_DIR: &str = "/var/lib/swtpm-localca";

/// Creates the development PKI on first start (and reuses it after), and the Basic-auth rig
/// account; returns the configuration with that account added.
pub fn ensure_dev_install(mut config: Config) -> Result<Config, SetupError> {
    let layout = DevLayout {
        data_dir: config.server.data_dir.clone(),
    };
    std::fs::create_dir_all(layout.pki()).map_err(|e| {
        SetupError::Refused(format!("cannot create {}: {e}", layout.pki().display()))
    })?;
    if !config.ca.chain_file.exists() {
        init_test_root(
            &config,
            &TestInstallExtras {
                tls_server_names: vec!["localhost".into(), "127.0.0.1".into(), "::1".into()],
                rig_certificate: Some("rig-dev-01".into()),
                operator_certificate: None,
            },
        )?;
        tracing::info!(dir = %layout.pki().display(), "created the development PKI");
    }
    if !layout.pki().join("operator.crt").exists() {
        create_operator_identity(&config, "operator-dev-01")?;
    }
    refresh_test_root_crl(&config)?;
    if !layout.vendor().join("vendor-root.crt").exists() {
        attestca_sim::secure_element::SimulatedVendor::create(&layout.vendor())
            .map_err(|e| SetupError::Refused(format!("creating the simulated vendor: {e:#}")))?;
        tracing::info!(dir = %layout.vendor().display(), "created the simulated secure-element vendor");
    }
    let basic = layout.rig_basic();
    if !basic.exists() {
        let mut password = [0u8; 18];
        aws_lc_rs::rand::fill(&mut password)
            .map_err(|_| SetupError::Refused("the system random generator failed".into()))?;
        let line = format!("rig-basic:{}\n", hex::encode(password));
        crate::pem::write_file(&basic, line.as_bytes(), 0o600)?;
    }
    let text = std::fs::read_to_string(&basic)
        .map_err(|e| SetupError::Refused(format!("{}: {e}", basic.display())))?;
    let (user, password) = text.trim().split_once(':').ok_or_else(|| {
        SetupError::Refused(format!("{} must hold user:password", basic.display()))
    })?;
    config.rigs.accounts.push(RigAccountConfig {
        name: user.to_owned(),
        password_hash: Some(crate::access::hash_password(&SecretString::from(
            password.to_owned(),
        ))?),
        password_file: None,
    });
    Ok(config)
}

/// Default development listener addresses.
pub fn dev_default_addrs() -> (SocketAddr, SocketAddr) {
    (
        SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), 8443),
        SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), 8080),
    )
}

/// What a manifest import did.
#[derive(Debug)]
pub struct ManifestImport {
    /// Parts in the manifest.
    pub parts: usize,
    /// Parts not known before.
    pub added: u64,
}

/// Verifies a supply-chain manifest against its pinned signer certificate and records its
/// parts (all or nothing) as delivered parts of `vendor`, a vendor of the trust store.
pub async fn import_manifest(
    config: &Config,
    vendor: &str,
    manifest: &Path,
    signer: &Path,
) -> Result<ManifestImport, SetupError> {
    use sha2::{Digest, Sha256};
    if !config.attestation.vendors.iter().any(|v| v.name == vendor) {
        return Err(SetupError::Refused(format!(
            "vendor {vendor:?} is not in [[attestation.vendors]]; trust the vendor first"
        )));
    }
    let signer_der = crate::pem::read_certificate_ders(signer)?
        .into_iter()
        .next()
        .ok_or_else(|| SetupError::Refused(format!("{}: no certificate", signer.display())))?;
    let json = std::fs::read(manifest)
        .map_err(|e| SetupError::Refused(format!("{}: {e}", manifest.display())))?;
    let parts = crate::attestation::manifest::verify(&json, &signer_der)
        .map_err(|e| SetupError::Refused(format!("{}: {e}", manifest.display())))?;
    let records = parts
        .iter()
        .map(|p| {
            let key_sha256s = p
                .public_keys
                .iter()
                .map(|k| k.to_der().map(|d| Sha256::digest(d).to_vec()))
                .collect::<Result<Vec<_>, _>>()?;
            Ok(crate::store::ManifestRecord {
                // Device identities display Microchip serials in upper-case hex.
                unique_id: p.unique_id.to_ascii_uppercase(),
                part_number: p.part_number.clone(),
                key_sha256s,
            })
        })
        .collect::<Result<Vec<_>, der::Error>>()?;
    let store = crate::store::Store::connect(
        &config.resolve_database_url()?,
        config.database.max_connections,
    )
    .await
    .map_err(|e| SetupError::Refused(e.to_string()))?;
    let added = store
        .insert_manifest(
            vendor,
            &records,
            &Sha256::digest(&json),
            attestca_core::time::unix_now(),
        )
        .await
        .map_err(|e| SetupError::Refused(e.to_string()))?;
    Ok(ManifestImport {
        parts: records.len(),
        added,
    })
}
