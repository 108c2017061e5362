//! `attestca-rig`: the factory-rig side — fetch the CA chain, make device keys and CSRs, enroll.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{Context, bail};
use clap::{Args, Parser, Subcommand};
use der::Decode;
use secrecy::SecretString;
use x509_cert::Certificate;

use attestca_rig::client::{EstClient, tls_config};
use attestca_rig::load::{self, Target, factory, ocsp, renew, throughput};
use attestca_rig::personalisation::{KeygenDelay, ManufacturingLog, Outcome, Station, chains_to};
use attestca_sim::device::DeviceKey;
use attestca_sim::secure_element::{
    KeyClaims, SimulatedDevice as SimulatedSecureElement, SimulatedVendor,
};

#[derive(Parser)]
#[command(
    name = "attestca-rig",
    version,
    about = "Factory-rig EST client for attestca"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Args)]
struct Server {
    /// EST server, e.g. https://127.0.0.1:8443
    #[arg(long)]
    server: String,
    /// PEM file of the CA chain that anchors the server's TLS certificate.
    #[arg(long)]
    trust: PathBuf,
    /// EST label (issuance profile); omit for the default profile.
    #[arg(long)]
    label: Option<String>,
}

#[derive(Args)]
struct RigAuth {
    /// Rig client certificate (PEM).
    #[arg(long, requires = "rig_key")]
    rig_cert: Option<PathBuf>,
    /// Rig client key (PEM PKCS#8).
    #[arg(long, requires = "rig_cert")]
    rig_key: Option<PathBuf>,
    /// File holding `user:password` of a Basic-auth rig account.
    #[arg(long, conflicts_with = "rig_cert")]
    basic_file: Option<PathBuf>,
}

#[derive(Subcommand)]
enum Command {
    /// Fetch the CA chain and write it as PEM.
    Cacerts {
        #[command(flatten)]
        server: Server,
        #[arg(long)]
        out: PathBuf,
    },
    /// Generate a P-256 device key and a CSR: OUT/device.key (PEM PKCS#8), OUT/device.csr (DER).
    /// With --vendor, the key is made by a simulated secure element and the CSR carries its
    /// attestation, bound to a nonce fetched from the server with the rig's credentials.
    Csr {
        #[arg(long)]
        out: PathBuf,
        #[arg(long)]
        cn: String,
        /// Simulated secure-element vendor directory (serve --dev writes DIR/vendor).
        #[arg(long, requires_all = ["server", "trust"])]
        vendor: Option<PathBuf>,
        /// EST server (for the nonce).
        #[arg(long)]
        server: Option<String>,
        /// PEM CA chain anchoring the server's TLS certificate.
        #[arg(long)]
        trust: Option<PathBuf>,
        /// EST label.
        #[arg(long)]
        label: Option<String>,
        #[command(flatten)]
        auth: RigAuth,
    },
    /// Renew a device certificate over mutual TLS (simplereenroll), with the same key or, with
    /// --rekey, a new one. Writes OUT/device.crt (and OUT/device.key when rekeying).
    Reenroll(Reenroll),
    /// Enroll a new device: key, CSR, simpleenroll, and a check that the certificate chains to
    /// cacerts. Writes OUT/device.key and OUT/device.crt.
    Enroll {
        #[command(flatten)]
        server: Server,
        #[command(flatten)]
        auth: RigAuth,
        #[arg(long)]
        out: PathBuf,
        #[arg(long)]
        cn: String,
        /// Simulated secure-element vendor directory: enroll an attested key. Without it, the
        /// vendor of a `serve --dev` data directory is used when --trust is that directory's
        /// pki/ca-chain.pem.
        #[arg(long, conflicts_with = "no_attestation")]
        vendor: Option<PathBuf>,
        /// Send a plain CSR without attestation evidence.
        #[arg(long)]
        no_attestation: bool,
        /// Enroll a key created inside this TPM (a tpm2-tss TCTI: `swtpm:host=127.0.0.1,port=2321`,
        /// `device:/dev/tpmrm0`): the CA certifies the TPM's attestation key from its EK
        /// certificate first, then the key certified by it.
        #[arg(long, conflicts_with_all = ["vendor", "no_attestation"])]
        tpm: Option<String>,
    },
    /// Personalise one board as a factory station does: power-on, nonce, secure-element keygen,
    /// attestation, CSR, enroll, import, proof of possession, end-of-line check; prints the
    /// step timings against the takt budget and appends a manufacturing log record (--log).
    Personalise(Personalise),
    /// Load tests against a running CA.
    Load {
        #[command(subcommand)]
        mode: LoadMode,
    },
    /// Create a simulated secure-element vendor in OUT (vendor-root.crt is the root a CA
    /// configures under [[attestation.vendors]] with reader = "simulated-se"): what `serve --dev`
    /// does for its own data directory, for a CA installed with a configuration file.
    Vendor {
        #[arg(long)]
        out: PathBuf,
    },
}

/// `personalise` arguments.
#[derive(Args)]
struct Personalise {
    #[command(flatten)]
    connection: LoadConnection,
    /// The board's unit serial (also the certificate's CN); default: a random one.
    #[arg(long)]
    unit_serial: Option<String>,
    /// Simulated secure-element key generation time in ms: MS or MIN..MAX (uniform).
    #[arg(long, default_value = "50..500")]
    keygen_ms: KeygenDelay,
    /// The station's takt budget in seconds.
    #[arg(long, default_value_t = 2.0)]
    takt: f64,
    /// Manufacturing log: the board's record is appended as one JSON line.
    #[arg(long)]
    log: Option<PathBuf>,
}

/// Where a station or load run connects, and as which rig.
#[derive(Args)]
struct LoadConnection {
    #[command(flatten)]
    server: Server,
    /// Rig client certificate (PEM).
    #[arg(long)]
    rig_cert: PathBuf,
    /// Rig client key (PEM PKCS#8).
    #[arg(long)]
    rig_key: PathBuf,
    /// Simulated secure-element vendor directory; default: the `vendor` directory of the
    /// `serve --dev` data directory that --trust belongs to.
    #[arg(long)]
    vendor: Option<PathBuf>,
}

impl LoadConnection {
    fn target(&self) -> anyhow::Result<Target> {
        let vendor = match &self.vendor {
            Some(v) => v.clone(),
            None => dev_vendor_next_to(&self.server.trust)
                .context("give --vendor (the simulated secure-element vendor directory)")?,
        };
        Ok(Target {
            server: self.server.server.clone(),
            label: self.server.label.clone(),
            trust: self.server.trust.clone(),
            rig_cert: self.rig_cert.clone(),
            rig_key: self.rig_key.clone(),
            vendor,
        })
    }
}

/// Where a load run writes its results.
#[derive(Args)]
struct LoadOutput {
    /// Write the JSON report here.
    #[arg(long)]
    json: Option<PathBuf>,
    /// Write an SVG chart of throughput and latency over time here.
    #[arg(long)]
    svg: Option<PathBuf>,
    /// The CA's /metrics URL (plain listener, e.g. http://127.0.0.1:8080/metrics): also report
    /// the CA-side enrollment time over the run from its histogram.
    #[arg(long)]
    metrics: Option<String>,
    /// Also report the CPU these processes use over the measured window, per operation:
    /// `NAME=PID[,PID…]` or `NAME=comm:COMMAND` (e.g. `ca=4242`, `postgres=comm:postgres`);
    /// repeatable. The whole machine's busy share is always reported (Linux).
    #[arg(long = "account", value_name = "NAME=PIDS")]
    accounts: Vec<load::accounting::Account>,
}

/// Reads the CA's enrollment histogram when --metrics is given.
async fn ca_metrics(
    output: &LoadOutput,
) -> anyhow::Result<Option<load::server_metrics::EnrollmentHistogram>> {
    Ok(match &output.metrics {
        Some(url) => Some(load::server_metrics::read(url).await?),
        None => None,
    })
}

/// The CA-side figures between two readings.
async fn ca_side(
    output: &LoadOutput,
    before: Option<load::server_metrics::EnrollmentHistogram>,
) -> anyhow::Result<Option<load::server_metrics::ServerLatency>> {
    Ok(match (&output.metrics, before, ca_metrics(output).await?) {
        (Some(url), Some(before), Some(after)) => Some(
            load::server_metrics::ServerLatency::between(url, &before, &after),
        ),
        _ => None,
    })
}

#[derive(Subcommand)]
enum LoadMode {
    /// Closed loop: C rigs on keep-alive connections enroll attested keys back to back.
    Throughput {
        #[command(flatten)]
        connection: LoadConnection,
        #[command(flatten)]
        output: LoadOutput,
        /// Concurrent rigs (each its own keep-alive connection).
        #[arg(long, default_value_t = 16)]
        concurrency: usize,
        /// Length of the measured window in seconds.
        #[arg(long, default_value_t = 10.0)]
        duration: f64,
        /// Stop after this many enrollments.
        #[arg(long)]
        count: Option<u64>,
        /// Attested CSRs to prepare before the window (default: 1,500 per second of --duration,
        /// or --count).
        #[arg(long)]
        prepare: Option<usize>,
    },
    /// Open loop: N stations each start a board every takt and run the whole personalisation.
    Factory {
        #[command(flatten)]
        connection: LoadConnection,
        #[command(flatten)]
        output: LoadOutput,
        /// Stations (lines) running at once.
        #[arg(long, default_value_t = 10)]
        stations: usize,
        /// Seconds between boards on a station (the takt budget of each board).
        #[arg(long, default_value_t = 2.0)]
        takt: f64,
        /// Seconds during which boards arrive.
        #[arg(long, default_value_t = 30.0)]
        duration: f64,
        /// Stop after this many boards (over all stations).
        #[arg(long)]
        count: Option<u64>,
        /// Simulated secure-element key generation time in ms: MS or MIN..MAX (uniform).
        #[arg(long, default_value = "50..500")]
        keygen_ms: KeygenDelay,
        /// Manufacturing log (JSON lines), appended to.
        #[arg(long)]
        log: Option<PathBuf>,
        /// Seconds to wait for boards still in progress after the last arrival.
        #[arg(long, default_value_t = 30.0)]
        drain: f64,
    },
    /// A renewal storm: M enrolled devices all renew over mutual TLS, C in flight, honouring
    /// 503/429 Retry-After.
    Renew {
        #[command(flatten)]
        connection: LoadConnection,
        #[command(flatten)]
        output: LoadOutput,
        /// Devices enrolled before the storm, then renewed.
        #[arg(long, default_value_t = 200)]
        devices: usize,
        /// Renewals in flight at once.
        #[arg(long, default_value_t = 32)]
        concurrency: usize,
        /// Seconds after which refused devices stop retrying (and count as failed).
        #[arg(long, default_value_t = 60.0)]
        duration: f64,
        /// Retries per device after a 503/429.
        #[arg(long, default_value_t = 5)]
        retries: u32,
    },
    /// OCSP requests for a mix of good, revoked (via the operator API) and unknown serials.
    Ocsp {
        #[command(flatten)]
        connection: LoadConnection,
        #[command(flatten)]
        output: LoadOutput,
        /// The OCSP responder, e.g. http://127.0.0.1:8080/ocsp
        #[arg(long)]
        ocsp_url: String,
        /// Operator certificate for the revocations; default: operator.crt next to --trust.
        #[arg(long)]
        operator_cert: Option<PathBuf>,
        /// Operator key; default: operator.key next to --trust.
        #[arg(long)]
        operator_key: Option<PathBuf>,
        #[arg(long, default_value_t = 50)]
        good: usize,
        #[arg(long, default_value_t = 10)]
        revoked: usize,
        #[arg(long, default_value_t = 10)]
        unknown: usize,
        /// Concurrent clients (keep-alive connections).
        #[arg(long, default_value_t = 32)]
        concurrency: usize,
        #[arg(long, default_value_t = 10.0)]
        duration: f64,
        /// Stop after this many requests.
        #[arg(long)]
        count: Option<u64>,
    },
}

/// `reenroll` arguments.
#[derive(Args)]
struct Reenroll {
    /// EST server, e.g. https://127.0.0.1:8443
    #[arg(long)]
    server: String,
    /// PEM CA chain anchoring the server's TLS certificate.
    #[arg(long)]
    trust: PathBuf,
    /// EST label.
    #[arg(long)]
    label: Option<String>,
    /// The device certificate being renewed (PEM); it authenticates the request over TLS.
    #[arg(long)]
    cert: PathBuf,
    /// Its private key (PEM PKCS#8).
    #[arg(long)]
    key: PathBuf,
    /// Where to write the new device.crt (and device.key with --rekey).
    #[arg(long)]
    out: PathBuf,
    /// Move to a new key.
    #[arg(long)]
    rekey: bool,
    /// Attest the new key with the device's simulated secure element (saved next to --cert).
    #[arg(long, requires = "rekey")]
    vendor: Option<PathBuf>,
}

#[tokio::main]
async fn main() -> ExitCode {
    match run(Cli::parse()).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("attestca-rig: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn client(server: &Server, auth: Option<&RigAuth>) -> anyhow::Result<EstClient> {
    let identity = auth.and_then(|a| a.rig_cert.as_deref().zip(a.rig_key.as_deref()));
    let tls = tls_config(&server.trust, identity)?;
    let basic = match auth.and_then(|a| a.basic_file.as_deref()) {
        Some(path) => {
            let text = std::fs::read_to_string(path)
                .with_context(|| format!("reading {}", path.display()))?;
            let (user, password) = text
                .trim()
                .split_once(':')
                .context("the Basic credentials file must hold user:password")?;
            Some((user.to_owned(), SecretString::from(password.to_owned())))
        }
        None => None,
    };
    EstClient::new(&server.server, server.label.as_deref(), tls, basic)
}

/// Makes the device key and CSR — attested by a simulated secure element when a vendor and an
/// EST client (for the nonce) are given — and writes OUT/device.key and OUT/device.csr.
/// `enroll --tpm`: the key stays in the TPM; the certificates and the CSR are written to `out`.
#[cfg(target_os = "linux")]
async fn enroll_with_tpm(
    server: &Server,
    auth: &RigAuth,
    out: &Path,
    cn: &str,
    tcti: &str,
) -> anyhow::Result<()> {
    std::fs::create_dir_all(out).with_context(|| format!("creating {}", out.display()))?;
    let est = client(server, Some(auth))?;
    let chain = est.cacerts().await.context("fetching cacerts")?;
    let mut tpm = attestca_rig::tpm::Tpm::open(tcti)?;
    let enrolled = attestca_rig::tpm::enroll(&mut tpm, &est, cn).await?;
    chains_to(&enrolled.certificate, &chain)?;
    attestca_core::pem::write_certificates(&out.join("device.crt"), &[&enrolled.certificate])?;
    attestca_core::pem::write_certificates(
        &out.join("attestation-key.crt"),
        &[&enrolled.attestation_key_certificate],
    )?;
    attestca_core::pem::write_file(&out.join("device.csr"), &enrolled.csr, 0o644)?;
    let cert = Certificate::from_der(&enrolled.certificate)?;
    println!(
        "enrolled {cn} (key in the TPM at {tcti}): serial {} written to {}",
        hex::encode(cert.tbs_certificate().serial_number().as_bytes()),
        out.join("device.crt").display()
    );
    Ok(())
}

#[cfg(not(target_os = "linux"))]
async fn enroll_with_tpm(
    _server: &Server,
    _auth: &RigAuth,
    _out: &Path,
    _cn: &str,
    _tcti: &str,
) -> anyhow::Result<()> {
    bail!("TPM mode needs the TCG software stack (tpm2-tss), which this build links on Linux only")
}

async fn write_key_and_csr(
    out: &Path,
    cn: &str,
    attested: Option<(&Path, &EstClient)>,
) -> anyhow::Result<(DeviceKey, Vec<u8>)> {
    std::fs::create_dir_all(out).with_context(|| format!("creating {}", out.display()))?;
    let (key, csr) = match attested {
        None => {
            let key = DeviceKey::generate()?;
            let csr = key.csr(cn)?;
            (key, csr)
        }
        Some((vendor_dir, est)) => {
            let vendor = SimulatedVendor::load(vendor_dir).with_context(|| {
                format!("loading the simulated vendor from {}", vendor_dir.display())
            })?;
            let nonce = est.nonce().await?;
            let device = vendor.manufacture()?;
            // Kept with the device's files so that the same element can attest a rekey.
            device.save(out)?;
            device.enroll_key(cn, &nonce)?
        }
    };
    attestca_core::pem::write_private_key(&out.join("device.key"), &key.pkcs8)?;
    attestca_core::pem::write_file(&out.join("device.csr"), &csr, 0o644)?;
    Ok((key, csr))
}

async fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Command::Cacerts { server, out } => {
            let chain = client(&server, None)?.cacerts().await?;
            let refs: Vec<&[u8]> = chain.iter().map(Vec::as_slice).collect();
            attestca_core::pem::write_certificates(&out, &refs)?;
            println!(
                "{} CA certificates written to {}",
                chain.len(),
                out.display()
            );
        }
        Command::Reenroll(args) => reenroll(args).await?,
        Command::Personalise(args) => personalise(args).await?,
        Command::Load { mode } => run_load(mode).await?,
        Command::Vendor { out } => {
            if out.join("vendor-root.crt").exists() {
                anyhow::bail!("{} already holds a vendor", out.display());
            }
            std::fs::create_dir_all(&out).with_context(|| format!("creating {}", out.display()))?;
            SimulatedVendor::create(&out).context("creating the simulated vendor")?;
            println!("{}", out.join("vendor-root.crt").display());
        }
        Command::Csr {
            out,
            cn,
            vendor,
            server,
            trust,
            label,
            auth,
        } => {
            let est = match (&vendor, server, trust) {
                (Some(_), Some(server), Some(trust)) => Some(client(
                    &Server {
                        server,
                        trust,
                        label,
                    },
                    Some(&auth),
                )?),
                _ => None,
            };
            let attested = vendor.as_deref().zip(est.as_ref());
            write_key_and_csr(&out, &cn, attested).await?;
            println!("wrote {0}/device.key and {0}/device.csr", out.display());
        }
        Command::Enroll {
            server,
            auth,
            out,
            cn,
            vendor,
            no_attestation,
            tpm,
        } => {
            if auth.rig_cert.is_none() && auth.basic_file.is_none() {
                bail!("give --rig-cert/--rig-key or --basic-file");
            }
            if let Some(tcti) = tpm {
                return enroll_with_tpm(&server, &auth, &out, &cn, &tcti).await;
            }
            let vendor = if no_attestation {
                None
            } else {
                vendor.or_else(|| dev_vendor_next_to(&server.trust))
            };
            let est = client(&server, Some(&auth))?;
            let chain = est.cacerts().await.context("fetching cacerts")?;
            let attested = vendor.as_deref().map(|v| (v, &est));
            let (_key, csr) = write_key_and_csr(&out, &cn, attested).await?;
            let certificate = est.simpleenroll(&csr).await?;
            chains_to(&certificate, &chain)?;
            attestca_core::pem::write_certificates(&out.join("device.crt"), &[&certificate])?;
            let cert = Certificate::from_der(&certificate)?;
            println!(
                "enrolled {cn}: serial {} written to {}",
                hex::encode(cert.tbs_certificate().serial_number().as_bytes()),
                out.join("device.crt").display()
            );
        }
    }
    Ok(())
}

async fn reenroll(args: Reenroll) -> anyhow::Result<()> {
    let tls = tls_config(&args.trust, Some((&args.cert, &args.key)))?;
    let est = EstClient::new(&args.server, args.label.as_deref(), tls, None)?;
    let chain = est.cacerts().await.context("fetching cacerts")?;
    let current_der = attestca_core::pem::read_certificate_ders(&args.cert)?
        .into_iter()
        .next()
        .context("--cert holds no certificate")?;
    let current = Certificate::from_der(&current_der)?;
    std::fs::create_dir_all(&args.out)
        .with_context(|| format!("creating {}", args.out.display()))?;
    let device_dir = args.cert.parent().unwrap_or(Path::new("."));
    let (key, attributes) = if args.rekey {
        let key = DeviceKey::generate()?;
        let attributes = match &args.vendor {
            Some(_) => {
                let element = SimulatedSecureElement::load(device_dir).with_context(|| {
                    format!(
                        "loading the device's simulated secure element from {}",
                        device_dir.display()
                    )
                })?;
                let nonce = est.nonce().await?;
                let attestation =
                    element.attest(&key.public_key()?, &nonce, KeyClaims::default())?;
                SimulatedSecureElement::copy_files(device_dir, &args.out)?;
                vec![element.evidence_attribute(&attestation)?]
            }
            None => Vec::new(),
        };
        (key, attributes)
    } else {
        let pkcs8 = attestca_core::pem::read_private_key(&args.key)?;
        // The device keeps its secure element across renewals.
        if SimulatedSecureElement::load(device_dir).is_ok() {
            SimulatedSecureElement::copy_files(device_dir, &args.out)?;
        }
        (DeviceKey::from_pkcs8(&pkcs8)?, Vec::new())
    };
    let csr = key.renewal_csr(&current, attributes)?;
    let certificate = est.simplereenroll(&csr).await?;
    chains_to(&certificate, &chain)?;
    attestca_core::pem::write_certificates(&args.out.join("device.crt"), &[&certificate])?;
    if args.rekey {
        attestca_core::pem::write_private_key(&args.out.join("device.key"), &key.pkcs8)?;
    }
    let cert = Certificate::from_der(&certificate)?;
    println!(
        "renewed: serial {} written to {}",
        hex::encode(cert.tbs_certificate().serial_number().as_bytes()),
        args.out.join("device.crt").display()
    );
    Ok(())
}

/// `DIR/vendor` when `trust` is a `serve --dev` data directory's `DIR/pki/ca-chain.pem`.
fn dev_vendor_next_to(trust: &Path) -> Option<PathBuf> {
    let vendor = trust.parent()?.parent()?.join("vendor");
    vendor.join("vendor-root.crt").is_file().then(|| {
        eprintln!(
            "attestca-rig: using the simulated secure element in {} (--no-attestation for a plain CSR)",
            vendor.display()
        );
        vendor
    })
}

/// Seconds as a Duration, refusing negative, non-finite and absurd values.
fn seconds(flag: &str, value: f64) -> anyhow::Result<std::time::Duration> {
    if !(value > 0.0 && value <= 86_400.0) {
        bail!("--{flag} must be a number of seconds between 0 and 86400, not {value}");
    }
    Ok(std::time::Duration::from_secs_f64(value))
}

async fn personalise(args: Personalise) -> anyhow::Result<()> {
    let target = args.connection.target()?;
    let station = Station::new(
        "station-1".into(),
        target.client()?,
        target.vendor()?,
        args.keygen_ms,
        seconds("takt", args.takt)?,
    )
    .await?;
    let unit = match args.unit_serial {
        Some(u) => u,
        None => {
            let mut bytes = [0u8; 6];
            aws_lc_rs::rand::fill(&mut bytes)
                .map_err(|_| anyhow::anyhow!("random generator failed"))?;
            format!("unit-{}", hex::encode(bytes))
        }
    };
    let record = station.personalise(&unit).await;
    if let Some(path) = &args.log {
        ManufacturingLog::open(path)?.append(&record)?;
    }
    print!("{}", record.table());
    if record.outcome == Outcome::Fail {
        bail!("board {unit} failed");
    }
    Ok(())
}

async fn run_load(mode: LoadMode) -> anyhow::Result<()> {
    let output = match &mode {
        LoadMode::Throughput { output, .. }
        | LoadMode::Factory { output, .. }
        | LoadMode::Renew { output, .. }
        | LoadMode::Ocsp { output, .. } => output,
    };
    load::accounting::set(output.accounts.clone());
    match mode {
        LoadMode::Throughput {
            connection,
            output,
            concurrency,
            duration,
            count,
            prepare,
        } => {
            let target = connection.target()?;
            let options = throughput::ThroughputOptions {
                concurrency,
                duration: seconds("duration", duration)?,
                count,
                prepare,
            };
            let before = ca_metrics(&output).await?;
            let mut report = throughput::run(&target, &options).await?;
            report.ca_side = ca_side(&output, before).await?;
            load::publish(&report, output.json.as_deref(), output.svg.as_deref())?;
        }
        LoadMode::Factory {
            connection,
            output,
            stations,
            takt,
            duration,
            count,
            keygen_ms,
            log,
            drain,
        } => {
            let target = connection.target()?;
            let options = factory::FactoryOptions {
                stations,
                takt: seconds("takt", takt)?,
                duration: seconds("duration", duration)?,
                count,
                keygen: keygen_ms,
                log,
                drain: seconds("drain", drain)?,
            };
            let before = ca_metrics(&output).await?;
            let mut report = factory::run(&target, &options).await?;
            report.ca_side = ca_side(&output, before).await?;
            load::publish(&report, output.json.as_deref(), output.svg.as_deref())?;
        }
        LoadMode::Renew {
            connection,
            output,
            devices,
            concurrency,
            duration,
            retries,
        } => {
            let target = connection.target()?;
            let options = renew::RenewOptions {
                devices,
                concurrency,
                duration: seconds("duration", duration)?,
                max_retries: retries,
            };
            let report = renew::run(&target, &options).await?;
            load::publish(&report, output.json.as_deref(), output.svg.as_deref())?;
        }
        LoadMode::Ocsp {
            connection,
            output,
            ocsp_url,
            operator_cert,
            operator_key,
            good,
            revoked,
            unknown,
            concurrency,
            duration,
            count,
        } => {
            let target = connection.target()?;
            let next_to_trust = |name: &str| {
                target
                    .trust
                    .parent()
                    .map(|d| d.join(name))
                    .filter(|p| p.is_file())
                    .with_context(|| format!("give --{}", name.replace('.', "-")))
            };
            let options = ocsp::OcspOptions {
                url: ocsp_url,
                good,
                revoked,
                unknown,
                concurrency,
                duration: seconds("duration", duration)?,
                count,
                operator_cert: match operator_cert {
                    Some(p) => p,
                    None => next_to_trust("operator.crt")?,
                },
                operator_key: match operator_key {
                    Some(p) => p,
                    None => next_to_trust("operator.key")?,
                },
            };
            let report = ocsp::run(&target, &options).await?;
            load::publish(&report, output.json.as_deref(), output.svg.as_deref())?;
        }
    }
    Ok(())
}
