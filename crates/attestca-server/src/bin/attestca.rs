//! `attestca`: the CA server and its operator commands.

use std::io::Read;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::{Parser, Subcommand};
use secrecy::SecretString;

use attestca::config::{Config, LogFormat};
use attestca::setup;

#[derive(Parser)]
#[command(
    name = "attestca",
    version,
    about = "An issuing CA for hardware-backed device identity (EST, PKCS#11, SQL)"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the CA: EST over HTTPS, health over plain HTTP.
    Serve {
        /// Production configuration file (TOML).
        #[arg(long, conflicts_with = "dev", required_unless_present = "dev")]
        config: Option<PathBuf>,
        /// Zero-setup development run: SQLite, a software key and a dev PKI under --data-dir.
        #[arg(long)]
        dev: bool,
        /// Development data directory.
        #[arg(long, default_value = "attestca-dev", requires = "dev")]
        data_dir: PathBuf,
        /// Development EST (HTTPS) address.
        #[arg(long, requires = "dev")]
        est_addr: Option<SocketAddr>,
        /// Development plain-HTTP address.
        #[arg(long, requires = "dev")]
        http_addr: Option<SocketAddr>,
    },
    /// Create the CA: a test install (self-signed root + issuing key in the signer), or the
    /// issuing key plus a CSR for an external offline root.
    Init {
        #[arg(long)]
        config: PathBuf,
        /// Test/dev install: create a self-signed root (software key) and the issuing CA.
        #[arg(long, conflicts_with = "csr_out", required_unless_present = "csr_out")]
        test_root: bool,
        /// With --test-root: also create a TLS server certificate for these names.
        #[arg(long, value_delimiter = ',', requires = "test_root")]
        tls_names: Vec<String>,
        /// With --test-root: also create a rig CA (at rigs.trust_anchor_files[0]) and a rig
        /// certificate with this CN (rig.crt / rig.key next to the CA chain).
        #[arg(long, requires = "test_root")]
        rig_cert: Option<String>,
        /// With --test-root: also create an operator CA (at operators.trust_anchor_files[0])
        /// and an operator certificate with this CN (operator.crt / operator.key).
        #[arg(long, requires = "test_root")]
        operator_cert: Option<String>,
        /// Production: generate the issuing key in the signer and write a CSR (PEM) here.
        #[arg(long)]
        csr_out: Option<PathBuf>,
    },
    /// Install the issuing-CA certificate signed by the offline root.
    ImportCa {
        #[arg(long)]
        config: PathBuf,
        /// The signed issuing-CA certificate (PEM).
        #[arg(long)]
        cert: PathBuf,
        /// Its issuers up to the root (PEM).
        #[arg(long)]
        chain: PathBuf,
    },
    /// Hash a password (read from standard input) for a rig account's password_hash.
    HashPassword,
    /// Revoke a certificate, or every active certificate of a device, as the operator API
    /// does (audited as `cli:<user>`). Running servers publish it in the CRL and OCSP within
    /// seconds.
    Revoke {
        /// Serial number in hex (colons allowed).
        #[arg(long, required_unless_present = "device", conflicts_with = "device")]
        serial: Option<String>,
        /// A device identity: revoke all of its active certificates.
        #[arg(long)]
        device: Option<String>,
        /// RFC 5280 reason: unspecified, keyCompromise, cACompromise, affiliationChanged,
        /// superseded, cessationOfOperation, privilegeWithdrawn, aACompromise.
        #[arg(long, default_value = "unspecified")]
        reason: String,
        #[arg(long, conflicts_with = "dev", required_unless_present = "dev")]
        config: Option<PathBuf>,
        /// Use the development installation in --data-dir.
        #[arg(long)]
        dev: bool,
        #[arg(long, default_value = "attestca-dev", requires = "dev")]
        data_dir: PathBuf,
    },
    /// Vendor trust operations.
    Vendor {
        #[command(subcommand)]
        command: VendorCommand,
    },
    /// Attestation evidence, offline.
    Evidence {
        #[command(subcommand)]
        command: EvidenceCommand,
    },
    /// The issuance transparency log (docs/transparency.md).
    Log {
        #[command(subcommand)]
        command: LogCommand,
    },
    /// Check a device certificate as a relying party does (docs/relying-parties.md): it chains
    /// to the roots, is not revoked (--ocsp or --crl), is in the issuance log under a checkpoint
    /// signed by the log key, and its log entry records verified attestation evidence. One
    /// JSON line per check; exits 0 when all pass, 1 when one fails, 2 when it could not run.
    VerifyDevice(Box<VerifyDeviceArgs>),
}

#[derive(clap::Args)]
struct VerifyDeviceArgs {
    /// The device certificate (PEM or DER).
    #[arg(long)]
    cert: PathBuf,
    /// Intermediate certificates (PEM), as the device presented them. Default with --config
    /// or --dev: the CA's chain file.
    #[arg(long)]
    chain: Option<PathBuf>,
    /// The log's prefix, e.g. http://ca.example:8080/log/issuing-ca/
    #[arg(long)]
    log: String,
    /// Check revocation with OCSP: at URL, or at the certificate's authorityInfoAccess.
    #[arg(long, value_name = "URL", num_args = 0..=1, default_missing_value = "", conflicts_with = "crl")]
    ocsp: Option<String>,
    /// Check revocation with the CRL at URL, or at the certificate's cRLDistributionPoints.
    #[arg(long, value_name = "URL", num_args = 0..=1, default_missing_value = "")]
    crl: Option<String>,
    /// Trust anchors (PEM). Default with --config or --dev: the self-signed certificates of
    /// the CA's chain file.
    #[arg(long)]
    roots: Option<PathBuf>,
    /// The log's verifier key (`<origin>+<id>+<key>`, as in pki/log.vkey).
    #[arg(long, conflicts_with = "key_file")]
    key: Option<String>,
    /// A file holding the log's verifier key.
    #[arg(long)]
    key_file: Option<PathBuf>,
    /// The CA's configuration: roots, chain and log key from its files.
    #[arg(long, conflicts_with = "dev")]
    config: Option<PathBuf>,
    /// Use the development installation in --data-dir.
    #[arg(long)]
    dev: bool,
    #[arg(long, default_value = "attestca-dev", requires = "dev")]
    data_dir: PathBuf,
    /// Check as of this time (RFC 3339 UTC) instead of now.
    #[arg(long)]
    at: Option<String>,
    /// Accept a certificate whose log entry records no attestation (a profile without one).
    #[arg(long)]
    allow_unattested: bool,
    /// Require a valid cosignature on the checkpoint by this witness (its cosigner vkey,
    /// `<name>+<id>+<base64(0x04 ‖ key)>`); repeat for a quorum of all given.
    #[arg(long = "witness", value_name = "VKEY")]
    witnesses: Vec<String>,
}

#[derive(Subcommand)]
enum LogCommand {
    /// Fetch the log at --url as a monitor would and re-derive it: the checkpoint's signature,
    /// every entry re-hashed, every hash tile and the root recomputed, consistency with a
    /// checkpoint saved earlier (--since), and, with the CA's configuration, every logged
    /// certificate recorded by the CA and every recorded one logged. One JSON line per check;
    /// exits 0 when all pass, 1 when one fails.
    Verify {
        /// The log's prefix, e.g. http://ca.example:8080/log/issuing-ca/
        #[arg(long)]
        url: String,
        /// The log's verifier key (`<origin>+<id>+<key>`, as in pki/log.vkey).
        #[arg(long, conflicts_with = "key_file")]
        key: Option<String>,
        /// A file holding the verifier key.
        #[arg(long)]
        key_file: Option<PathBuf>,
        /// A checkpoint saved by an earlier run (--save): this log must extend it.
        #[arg(long)]
        since: Option<PathBuf>,
        /// Where to save the checkpoint verified now, for the next run's --since.
        #[arg(long)]
        save: Option<PathBuf>,
        /// Require a valid cosignature on the checkpoint by this witness (its cosigner vkey);
        /// repeatable.
        #[arg(long = "witness", value_name = "VKEY")]
        witnesses: Vec<String>,
        /// Refuse to fetch a log whose checkpoint claims more entries than this (every entry
        /// is fetched and held in memory, ~2.2 KB each).
        #[arg(long, default_value_t = 100_000_000)]
        max_entries: u64,
        /// The CA's configuration: compare the log with its database (and read the key from
        /// its pki/log.vkey when neither --key nor --key-file is given).
        #[arg(long, conflicts_with = "dev")]
        config: Option<PathBuf>,
        /// Use the development installation in --data-dir.
        #[arg(long)]
        dev: bool,
        #[arg(long, default_value = "attestca-dev", requires = "dev")]
        data_dir: PathBuf,
    },
}

#[derive(Subcommand)]
enum EvidenceCommand {
    /// Run the CA's attestation checks on a CSR, without a server or a database, and print a
    /// JSON verdict: each check, and the reason code the CA would refuse with. Exits 0 when
    /// every check passes, 1 when one fails, 2 when the checks could not run.
    Verify {
        /// The CSR (PEM or DER).
        #[arg(long)]
        csr: PathBuf,
        /// A directory of vendor files (`*.toml`, each the keys of one
        /// [[attestation.vendors]] entry; roots relative to the directory).
        #[arg(long, conflicts_with_all = ["config", "dev"])]
        vendors: Option<PathBuf>,
        /// A configuration file: its vendors, and the profile's CSR rules and attestation
        /// policy.
        #[arg(long, conflicts_with = "dev")]
        config: Option<PathBuf>,
        /// Use the development installation in --data-dir (its vendors and profiles).
        #[arg(long)]
        dev: bool,
        #[arg(long, default_value = "attestca-dev", requires = "dev")]
        data_dir: PathBuf,
        /// The profile to apply (with --config or --dev).
        #[arg(long, conflicts_with = "vendors")]
        profile: Option<String>,
        /// Verify as of this time (RFC 3339 UTC, e.g. 2024-11-01T00:00:00Z) instead of now.
        #[arg(long)]
        at: Option<String>,
        /// The nonce the rig was given (hex): the evidence must carry it.
        #[arg(long)]
        nonce: Option<String>,
    },
}

#[derive(Subcommand)]
enum VendorCommand {
    /// Verify a signed supply-chain manifest (Microchip format) against its pinned signer and
    /// record its parts as delivered; profiles with require_manifest accept only those.
    ImportManifest {
        /// The manifest (JSON list of flattened JWS).
        manifest: PathBuf,
        /// The manifest signer's certificate (PEM), pinned out of band.
        #[arg(long)]
        signer: PathBuf,
        /// The trust-store vendor the parts belong to.
        #[arg(long)]
        vendor: String,
        /// Configuration file.
        #[arg(long, conflicts_with = "dev", required_unless_present = "dev")]
        config: Option<PathBuf>,
        /// Use the development installation in --data-dir.
        #[arg(long)]
        dev: bool,
        #[arg(long, default_value = "attestca-dev", requires = "dev")]
        data_dir: PathBuf,
    },
}

fn init_logging(format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_env("ATTESTCA_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info,cryptoki=off,sqlx=warn"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Json => builder.json().init(),
        LogFormat::Text => builder.init(),
    }
}

#[tokio::main]
async fn main() -> ExitCode {
    match run(Cli::parse().command).await {
        Ok(code) => code,
        Err(e) => {
            eprintln!("attestca: {e:#}");
            ExitCode::FAILURE
        }
    }
}

async fn run(command: Command) -> anyhow::Result<ExitCode> {
    match command {
        Command::Serve {
            config,
            dev,
            data_dir,
            est_addr,
            http_addr,
        } => {
            let config = if dev {
                init_logging(LogFormat::Text);
                let (default_est, default_http) = setup::dev_default_addrs();
                let data_dir = std::path::absolute(&data_dir)?;
                let base = setup::dev_config(
                    &data_dir,
                    est_addr.unwrap_or(default_est),
                    http_addr.unwrap_or(default_http),
                )
                .with_env_overrides()?;
                let config = setup::ensure_dev_install(base)?;
                print_dev_banner(&config);
                config
            } else {
                let path = config.context("--config is required without --dev")?;
                let config = Config::load(&path)?;
                init_logging(config.server.log_format);
                config
            };
            attestca::app::serve(&config, shutdown_signal()).await?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Init {
            config,
            test_root,
            tls_names,
            rig_cert,
            operator_cert,
            csr_out,
        } => {
            init_logging(LogFormat::Text);
            let config = Config::load(&config)?;
            if test_root {
                setup::init_test_root(
                    &config,
                    &setup::TestInstallExtras {
                        tls_server_names: tls_names,
                        rig_certificate: rig_cert,
                        operator_certificate: operator_cert,
                    },
                )?;
                println!(
                    "created the test CA: chain in {}",
                    config.ca.chain_file.display()
                );
            } else if let Some(out) = csr_out {
                let csr = setup::init_external_root(&config)?;
                attestca::pem::write_file(
                    &out,
                    attestca::pem::encode("CERTIFICATE REQUEST", &csr).as_bytes(),
                    0o644,
                )?;
                println!(
                    "generated the issuing key in the signer; CSR for the offline root: {}\n\
                     after signing it, run: attestca import-ca --config FILE --cert issuing.crt --chain root.pem",
                    out.display()
                );
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::ImportCa {
            config,
            cert,
            chain,
        } => {
            init_logging(LogFormat::Text);
            let config = Config::load(&config)?;
            setup::import_ca(&config, &cert, &chain)?;
            println!(
                "installed the issuing CA chain at {}",
                config.ca.chain_file.display()
            );
            Ok(ExitCode::SUCCESS)
        }
        Command::Vendor {
            command:
                VendorCommand::ImportManifest {
                    manifest,
                    signer,
                    vendor,
                    config,
                    dev,
                    data_dir,
                },
        } => {
            init_logging(LogFormat::Text);
            let config = match (config, dev) {
                (Some(path), _) => Config::load(&path)?,
                (None, _) => {
                    let (est, http) = setup::dev_default_addrs();
                    setup::dev_config(&std::path::absolute(&data_dir)?, est, http)
                        .with_env_overrides()?
                }
            };
            let import = setup::import_manifest(&config, &vendor, &manifest, &signer).await?;
            println!(
                "manifest verified: {} parts, {} new, recorded for vendor {vendor}",
                import.parts, import.added
            );
            Ok(ExitCode::SUCCESS)
        }
        Command::Revoke {
            serial,
            device,
            reason,
            config,
            dev,
            data_dir,
        } => {
            init_logging(LogFormat::Text);
            let config = load_or_dev(config, dev, &data_dir)?;
            let store = attestca::store::Store::connect(
                &config.resolve_database_url()?,
                config.database.max_connections,
            )
            .await?;
            let registry = attestca::registry::Registry::new(store);
            let user = std::env::var("SUDO_USER")
                .or_else(|_| std::env::var("USER"))
                .or_else(|_| std::env::var("LOGNAME"))
                .unwrap_or_else(|_| "unknown".into());
            let actor = attestca::registry::Actor {
                id: format!("cli:{user}"),
                peer: None,
            };
            match (serial, device) {
                (Some(serial), _) => {
                    let revoked = registry.revoke(&actor, &serial, Some(&reason)).await?;
                    println!("revoked {} ({reason})", revoked.record.serial);
                }
                (None, Some(device)) => {
                    for serial in registry
                        .revoke_device(&actor, &device, Some(&reason))
                        .await?
                    {
                        println!("revoked {serial} ({reason})");
                    }
                }
                (None, None) => anyhow::bail!("give --serial or --device"),
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Evidence { command } => Ok(verify_evidence(command)),
        Command::Log { command } => verify_log(command).await,
        Command::VerifyDevice(args) => Ok(verify_device(*args).await),
        Command::HashPassword => {
            let mut password = String::new();
            std::io::stdin().read_to_string(&mut password)?;
            let password = SecretString::from(password.trim_end_matches(['\r', '\n']).to_owned());
            println!("{}", attestca::access::hash_password(&password)?);
            Ok(ExitCode::SUCCESS)
        }
    }
}

/// `attestca log verify`: one JSON line per check; 0 all pass, 1 one fails.
async fn verify_log(command: LogCommand) -> anyhow::Result<ExitCode> {
    let LogCommand::Verify {
        url,
        key,
        key_file,
        since,
        save,
        witnesses,
        max_entries,
        config,
        dev,
        data_dir,
    } = command;
    let witnesses = witness_keys(&witnesses)?;
    let config = if config.is_some() || dev {
        Some(load_or_dev(config, dev, &data_dir)?)
    } else {
        None
    };
    let key_text = match (key, key_file, &config) {
        (Some(key), _, _) => key,
        (None, Some(file), _) => std::fs::read_to_string(file)?,
        (None, None, Some(config)) => {
            std::fs::read_to_string(config.server.data_dir.join("pki").join("log.vkey"))?
        }
        (None, None, None) => {
            anyhow::bail!("give the log's verifier key: --key, --key-file or --config")
        }
    };
    let key = attestca_core::transparency::checkpoint::LogKey::from_verifier_key(&key_text)?;
    let since = since.map(std::fs::read).transpose()?;
    let store = match &config {
        Some(config) => Some(
            attestca::store::Store::connect(
                &config.resolve_database_url()?,
                config.database.max_connections,
            )
            .await?,
        ),
        None => None,
    };
    let verification = attestca::transparency::verify::verify_log(
        &url,
        &key,
        &witnesses,
        max_entries,
        since.as_deref(),
        store.as_ref(),
    )
    .await;
    for check in &verification.checks {
        println!("{}", serde_json::to_string(check)?);
    }
    if verification.ok()
        && let (Some(path), Some(note)) = (save, &verification.checkpoint)
    {
        std::fs::write(path, note)?;
    }
    Ok(if verification.ok() {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}

/// `attestca verify-device`: one JSON line per check; 0 all pass, 1 one fails, 2 could not run.
async fn verify_device(args: VerifyDeviceArgs) -> ExitCode {
    use attestca_core::relying_party::{self, DeviceQuery, RelyingPartyTrust, RevocationCheck};
    let prepared = (|| -> anyhow::Result<_> {
        let config = if args.config.is_some() || args.dev {
            Some(load_or_dev(args.config.clone(), args.dev, &args.data_dir)?)
        } else {
            None
        };
        let read_certs = |path: &std::path::Path| -> anyhow::Result<Vec<Vec<u8>>> {
            let bytes = std::fs::read(path).with_context(|| format!("{}", path.display()))?;
            relying_party::certificates_of(&bytes)
                .map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))
        };
        let ca_chain = match &config {
            Some(c) => read_certs(&c.ca.chain_file)?,
            None => Vec::new(),
        };
        let self_signed = |der: &Vec<u8>| {
            <x509_cert::Certificate as der::Decode>::from_der(der)
                .is_ok_and(|c| c.tbs_certificate().issuer() == c.tbs_certificate().subject())
        };
        let roots = match &args.roots {
            Some(path) => read_certs(path)?,
            None if config.is_some() => ca_chain
                .iter()
                .filter(|c| self_signed(c))
                .cloned()
                .collect(),
            None => anyhow::bail!("give the trust anchors: --roots, --config or --dev"),
        };
        let chain = match &args.chain {
            Some(path) => read_certs(path)?,
            None => ca_chain
                .iter()
                .filter(|c| !self_signed(c))
                .cloned()
                .collect(),
        };
        let key_text = match (&args.key, &args.key_file, &config) {
            (Some(key), _, _) => key.clone(),
            (None, Some(file), _) => {
                std::fs::read_to_string(file).with_context(|| format!("{}", file.display()))?
            }
            (None, None, Some(config)) => {
                std::fs::read_to_string(config.server.data_dir.join("pki").join("log.vkey"))?
            }
            (None, None, None) => {
                anyhow::bail!("give the log's verifier key: --key, --key-file, --config or --dev")
            }
        };
        let log_key =
            attestca_core::transparency::checkpoint::LogKey::from_verifier_key(&key_text)?;
        let certificate = read_certs(&args.cert)?
            .into_iter()
            .next()
            .context("no certificate")?;
        let now = match &args.at {
            Some(text) => attestca_core::time::parse_rfc3339(text).with_context(|| {
                format!("--at {text:?}: give an RFC 3339 UTC time like 2024-11-01T00:00:00Z")
            })? as u64,
            None => attestca_core::time::unix_now() as u64,
        };
        let nonempty = |url: &String| (!url.is_empty()).then(|| url.clone());
        let revocation = match (&args.ocsp, &args.crl) {
            (Some(url), _) => RevocationCheck::Ocsp(nonempty(url)),
            (None, Some(url)) => RevocationCheck::Crl(nonempty(url)),
            (None, None) => RevocationCheck::Skip,
        };
        let witnesses = witness_keys(&args.witnesses)?;
        Ok((
            RelyingPartyTrust {
                roots,
                log_key,
                witnesses,
            },
            certificate,
            chain,
            now,
            revocation,
        ))
    })();
    let (trust, certificate, chain, now, revocation) = match prepared {
        Ok(p) => p,
        Err(e) => {
            eprintln!("attestca: {e:#}");
            return ExitCode::from(2);
        }
    };
    let client = match attestca::transparency::client::BoundedClient::new() {
        Ok(client) => client,
        Err(e) => {
            eprintln!("attestca: {e}");
            return ExitCode::from(2);
        }
    };
    let runtime = tokio::runtime::Handle::current();
    let report = tokio::task::spawn_blocking(move || {
        let query = DeviceQuery {
            certificate: &certificate,
            chain: &chain,
            log_url: &args.log,
            revocation,
            now,
            allow_unattested: args.allow_unattested,
        };
        let mut net = attestca::transparency::client::BlockingFetch::new(client, runtime);
        relying_party::verify_device(&query, &trust, &mut net)
    })
    .await;
    let report = match report {
        Ok(r) => r,
        Err(e) => {
            eprintln!("attestca: {e}");
            return ExitCode::from(2);
        }
    };
    for check in &report.checks {
        match serde_json::to_string(check) {
            Ok(line) => println!("{line}"),
            Err(e) => {
                eprintln!("attestca: {e}");
                return ExitCode::from(2);
            }
        }
    }
    if report.ok() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}

/// Witness cosigner keys given as `--witness VKEY`.
fn witness_keys(
    keys: &[String],
) -> anyhow::Result<Vec<attestca_core::transparency::witness::WitnessKey>> {
    keys.iter()
        .map(|k| {
            attestca_core::transparency::witness::WitnessKey::from_verifier_key(k)
                .with_context(|| format!("--witness {k:?}"))
        })
        .collect()
}

/// `attestca evidence verify`: prints the verdict; 0 pass, 1 fail, 2 could not run.
fn verify_evidence(command: EvidenceCommand) -> ExitCode {
    let EvidenceCommand::Verify {
        csr,
        vendors,
        config,
        dev,
        data_dir,
        profile,
        at,
        nonce,
    } = command;
    let prepared = (|| -> anyhow::Result<(attestca::evidence::EvidenceCheck, Vec<u8>)> {
        let source = match (vendors, config, dev) {
            (Some(dir), _, _) => attestca::evidence::TrustSource::VendorDirectory(dir),
            (None, Some(path), _) => {
                attestca::evidence::TrustSource::Config(Box::new(Config::load(&path)?))
            }
            (None, None, true) => attestca::evidence::TrustSource::Config(Box::new(load_or_dev(
                None, true, &data_dir,
            )?)),
            (None, None, false) => anyhow::bail!("give --vendors DIR, --config FILE or --dev"),
        };
        let at = at
            .map(|text| {
                attestca_core::time::parse_rfc3339(&text).with_context(|| {
                    format!("--at {text:?}: give an RFC 3339 UTC time like 2024-11-01T00:00:00Z")
                })
            })
            .transpose()?;
        let nonce = nonce
            .map(|text| hex::decode(&text).with_context(|| format!("--nonce {text:?}: not hex")))
            .transpose()?;
        let bytes = std::fs::read(&csr).with_context(|| format!("{}", csr.display()))?;
        let der = match pem_rfc7468::decode_vec(&bytes) {
            Ok((_, der)) => der,
            Err(_) => bytes,
        };
        Ok((
            attestca::evidence::EvidenceCheck {
                source,
                profile,
                at,
                nonce,
            },
            der,
        ))
    })();
    let verdict = prepared.and_then(|(check, der)| Ok(check.run(&der)?));
    match verdict {
        Ok(verdict) => {
            match serde_json::to_string_pretty(&verdict) {
                Ok(json) => println!("{json}"),
                Err(e) => {
                    eprintln!("attestca: {e}");
                    return ExitCode::from(2);
                }
            }
            if verdict.verdict == attestca_core::attestation::examination::Outcome::Pass {
                ExitCode::SUCCESS
            } else {
                ExitCode::FAILURE
            }
        }
        Err(e) => {
            eprintln!("attestca: {e:#}");
            ExitCode::from(2)
        }
    }
}

/// The configuration file, or the development configuration of `data_dir`.
fn load_or_dev(
    config: Option<PathBuf>,
    dev: bool,
    data_dir: &std::path::Path,
) -> anyhow::Result<Config> {
    match (config, dev) {
        (Some(path), _) => Ok(Config::load(&path)?),
        (None, _) => {
            let (est, http) = setup::dev_default_addrs();
            Ok(
                setup::dev_config(&std::path::absolute(data_dir)?, est, http)
                    .with_env_overrides()?,
            )
        }
    }
}

fn print_dev_banner(config: &Config) {
    let layout = setup::DevLayout {
        data_dir: config.server.data_dir.clone(),
    };
    let est = config.server.est_addr;
    println!(
        "attestca development CA (SQLite + software key: NOT for production)\n\
         \x20 data directory   {data}\n\
         \x20 CA chain         {chain}\n\
         \x20 rig certificate  {rig_crt} (key {rig_key})\n\
         \x20 Basic-auth rig   {basic}\n\
         \x20 operator cert    {pki}/operator.crt (key {pki}/operator.key)\n\
         \x20 EST (HTTPS)      https://{est}/.well-known/est/\n\
         \x20 operator API     https://{est}/api/v1/\n\
         \x20 CRL (HTTP)       http://{http}/crl/{ca}.crl\n\
         \x20 health (HTTP)    http://{http}/healthz\n\
         \x20 OCSP (HTTP)      http://{http}/ocsp\n\
         enroll a device:\n\
         \x20 attestca-rig enroll --server https://{est} --trust {chain} --rig-cert {rig_crt} --rig-key {rig_key} --out device-1 --cn device-1",
        data = layout.data_dir.display(),
        chain = layout.chain().display(),
        rig_crt = layout.rig_cert().display(),
        rig_key = layout.rig_key().display(),
        basic = layout.rig_basic().display(),
        pki = layout.pki().display(),
        ca = config.ca.name,
        http = config.server.http_addr,
    );
}

async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term =
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(s) => s,
                Err(_) => {
                    let _ = ctrl_c.await;
                    return;
                }
            };
        tokio::select! {
            _ = ctrl_c => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    let _ = ctrl_c.await;
}
