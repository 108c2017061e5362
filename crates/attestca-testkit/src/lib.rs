//! What attestca's integration tests and benchmarks share: real server processes, a SoftHSM
//! token, a fresh PostgreSQL database (or a throwaway server of its own), and the external
//! verifiers (openssl, pkcs11-tool, pkilint).
//!
//! Not published: it exists so that the one integration-test binary (`crates/attestca-server/
//! tests/it`), the benchmarks and the fuzz seed builder use one copy of each helper.

pub mod bench;
pub mod hostile;
pub mod simulated_tpm;
pub mod swtpm;

use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// The value of `var`, naming an outside component (PostgreSQL, SoftHSM, pkilint, …).
///
/// A test that needs a component is marked `#[cfg_attr(missing_<name>, ignore = "…")]` (see the
/// server crate's `build.rs`), so it is ignored, with the reason, when the component was not
/// configured at build time. Reaching this without it is therefore a failure, never a silent
/// pass.
pub fn require(component: &str, var: &str) -> String {
    match std::env::var(var) {
        Ok(v) if !v.is_empty() => v,
        _ => missing(component, &format!("set {var}; tests/run.sh does")),
    }
}

/// A component the test cannot find: always a failure (see [`require`]).
fn missing(component: &str, remedy: &str) -> ! {
    panic!("{component} is required ({remedy})");
}

/// The server binary (`attestca`) of this build.
pub fn attestca_bin() -> String {
    binary("attestca")
}

/// The factory-rig binary (`attestca-rig`) of this build.
pub fn rig_bin() -> String {
    binary("attestca-rig")
}

/// The path of binary `name` beside the running test executable (`target/<profile>/`), checked
/// to be newer than every source file it was built from: a test must never run an old binary.
///
/// Cargo builds the binaries of the package whose integration tests run (and `tests/run.sh`
/// builds them all first), but only its own are guaranteed fresh; the others are checked here,
/// against the sources cargo lists for the binary in `<name>.d` (so a change to a test-only
/// file, which the binary is not built from, does not count).
fn binary(name: &str) -> String {
    let exe = std::env::current_exe().expect("the test executable's path");
    let profile_dir = exe
        .parent()
        .and_then(Path::parent)
        .expect("tests run from target/<profile>/deps");
    let path = profile_dir.join(format!("{name}{}", std::env::consts::EXE_SUFFIX));
    let rebuild = "run `cargo build --bins` (tests/run.sh does)";
    let built = std::fs::metadata(&path)
        .and_then(|m| m.modified())
        .unwrap_or_else(|_| panic!("{} is not built: {rebuild}", path.display()));
    let dep_info = profile_dir.join(format!("{name}.d"));
    let sources = std::fs::read_to_string(&dep_info)
        .unwrap_or_else(|e| panic!("{}: {e}: {rebuild}", dep_info.display()));
    for source in dep_info_sources(&sources) {
        let modified = std::fs::metadata(&source).and_then(|m| m.modified());
        if modified.map_or(true, |m| m > built) {
            panic!("{} is older than {source}: {rebuild}", path.display());
        }
    }
    path.display().to_string()
}

/// The source files of a Makefile-style dep-info file (`target: dep dep …`, spaces in paths
/// escaped with a backslash).
fn dep_info_sources(text: &str) -> Vec<String> {
    let Some(line) = text.lines().next() else {
        return Vec::new();
    };
    let deps = line.split_once(": ").map(|(_, d)| d).unwrap_or_default();
    let mut out = Vec::new();
    let mut current = String::new();
    let mut chars = deps.chars();
    while let Some(c) = chars.next() {
        match c {
            '\\' => current.extend(chars.next()),
            ' ' => out.extend((!current.is_empty()).then(|| std::mem::take(&mut current))),
            _ => current.push(c),
        }
    }
    out.extend((!current.is_empty()).then_some(current));
    out
}

/// The workspace root (the repository checkout).
pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// A port that was free a moment ago.
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("bind an ephemeral port")
}

/// An attestca process, killed when dropped.
pub struct ServerProcess {
    child: Child,
    pub log: PathBuf,
    pub est: SocketAddr,
    pub http: SocketAddr,
}

impl ServerProcess {
    pub fn spawn(
        args: &[&str],
        envs: &[(&str, String)],
        log: &Path,
        est: SocketAddr,
        http: SocketAddr,
    ) -> Self {
        let file = std::fs::File::create(log).expect("create server log");
        let mut command = Command::new(attestca_bin());
        command
            .args(args)
            .stdout(file.try_clone().expect("clone log handle"))
            .stderr(file);
        for (k, v) in envs {
            command.env(k, v);
        }
        let child = command.spawn().expect("start attestca");
        Self {
            child,
            log: log.to_owned(),
            est,
            http,
        }
    }

    /// `attestca serve --dev` on fresh loopback ports, with its data in `data_dir`.
    pub fn dev(data_dir: &Path, log: &Path) -> Self {
        Self::dev_with(data_dir, log, &[])
    }

    /// [`ServerProcess::dev`] with configuration overrides in the environment.
    pub fn dev_with(data_dir: &Path, log: &Path, envs: &[(&str, String)]) -> Self {
        let (est, http) = addresses();
        Self::spawn(
            &[
                "serve",
                "--dev",
                "--data-dir",
                &data_dir.display().to_string(),
                "--est-addr",
                &est.to_string(),
                "--http-addr",
                &http.to_string(),
            ],
            envs,
            log,
            est,
            http,
        )
    }

    /// Waits for /healthz; panics with the log if the server dies or never answers.
    pub async fn wait_ready(&mut self) {
        let deadline = Instant::now() + Duration::from_secs(60);
        let url = format!("http://{}/healthz", self.http);
        loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                panic!(
                    "attestca exited ({status}) during start-up:\n{}",
                    self.log_text()
                );
            }
            if let Ok(r) = reqwest::get(&url).await
                && r.status() == 200
            {
                return;
            }
            if Instant::now() > deadline {
                panic!("attestca did not become ready:\n{}", self.log_text());
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    pub fn est_url(&self) -> String {
        format!("https://{}", self.est)
    }

    /// The server's process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// CPU time (user + system) the server process has used so far, from /proc.
    pub fn cpu_seconds(&self) -> f64 {
        let stat = std::fs::read_to_string(format!("/proc/{}/stat", self.pid()))
            .expect("read /proc/PID/stat");
        // Fields after the parenthesised command name; utime and stime are fields 14 and 15.
        let after_name = &stat[stat.rfind(')').expect("stat format") + 2..];
        let fields: Vec<&str> = after_name.split(' ').collect();
        let ticks: u64 =
            fields[11].parse::<u64>().expect("utime") + fields[12].parse::<u64>().expect("stime");
        // SAFETY: sysconf has no preconditions.
        let per_second = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
        ticks as f64 / per_second as f64
    }

    /// Sends a signal (`HUP`, `TERM`, ...) to the server.
    pub fn signal(&self, name: &str) {
        let pid = self.child.id().to_string();
        let _ = Command::new("kill")
            .args([format!("-{name}").as_str(), &pid])
            .status();
    }

    /// Sends SIGTERM and waits up to `limit` for the exit; `None` if it did not exit.
    pub fn terminate_and_wait(&mut self, limit: Duration) -> Option<std::process::ExitStatus> {
        let pid = self.child.id().to_string();
        let _ = Command::new("kill").args(["-TERM", &pid]).status();
        let deadline = Instant::now() + limit;
        while Instant::now() < deadline {
            if let Ok(Some(status)) = self.child.try_wait() {
                return Some(status);
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        None
    }

    /// The exit status if the process has exited, without waiting.
    pub fn exited(&mut self) -> Option<std::process::ExitStatus> {
        self.child.try_wait().ok().flatten()
    }

    /// Waits up to `limit` for the process to exit by itself (no signal sent); `None` if it
    /// is still running then. Does not block the runtime.
    pub async fn exit_within(&mut self, limit: Duration) -> Option<std::process::ExitStatus> {
        let deadline = Instant::now() + limit;
        loop {
            if let Some(status) = self.exited() {
                return Some(status);
            }
            if Instant::now() >= deadline {
                return None;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    pub fn stop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for ServerProcess {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Two loopback addresses on free ports.
pub fn addresses() -> (SocketAddr, SocketAddr) {
    (
        SocketAddr::from(([127, 0, 0, 1], free_port())),
        SocketAddr::from(([127, 0, 0, 1], free_port())),
    )
}

/// Runs a command, returning (success, stdout+stderr).
pub fn run(program: &str, args: &[&str], envs: &[(&str, String)]) -> (bool, String) {
    let mut command = Command::new(program);
    command.args(args).stdin(Stdio::null());
    for (k, v) in envs {
        command.env(k, v);
    }
    match command.output() {
        Ok(out) => (
            out.status.success(),
            format!(
                "{}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            ),
        ),
        Err(e) => (false, format!("cannot run {program}: {e}")),
    }
}

/// A SoftHSM token in its own directory.
pub struct SoftHsmToken {
    pub conf: PathBuf,
    pub label: String,
    pub pin: String,
}

impl SoftHsmToken {
    pub fn create(dir: &Path, label: &str, pin: &str) -> Self {
        let tokens = dir.join("tokens");
        std::fs::create_dir_all(&tokens).expect("token directory");
        let conf = dir.join("softhsm2.conf");
        std::fs::write(
            &conf,
            format!(
                "directories.tokendir = {}\nobjectstore.backend = file\nlog.level = ERROR\n",
                tokens.display()
            ),
        )
        .expect("softhsm2.conf");
        let (ok, out) = run(
            "softhsm2-util",
            &[
                "--init-token",
                "--free",
                "--label",
                label,
                "--so-pin",
                "12345678",
                "--pin",
                pin,
            ],
            &[("SOFTHSM2_CONF", conf.display().to_string())],
        );
        assert!(ok, "softhsm2-util --init-token failed: {out}");
        Self {
            conf,
            label: label.to_owned(),
            pin: pin.to_owned(),
        }
    }
}

/// A database of its own on the PostgreSQL server, dropped at the end.
pub struct TestDatabase {
    admin_url: String,
    pub name: String,
    pub url: String,
}

impl TestDatabase {
    pub async fn create(admin_url: &str) -> Self {
        let mut suffix = [0u8; 6];
        aws_lc_rs::rand::fill(&mut suffix).expect("random");
        let name = format!("attestca_test_{}", hex::encode(suffix));
        let admin = sqlx::PgPool::connect(admin_url)
            .await
            .expect("connect to the admin database");
        sqlx::query(sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}")))
            .execute(&admin)
            .await
            .expect("create test database");
        admin.close().await;
        let base = admin_url
            .rsplit_once('/')
            .map(|(b, _)| b)
            .unwrap_or(admin_url);
        Self {
            admin_url: admin_url.to_owned(),
            url: format!("{base}/{name}"),
            name,
        }
    }

    pub async fn pool(&self) -> sqlx::PgPool {
        sqlx::PgPool::connect(&self.url)
            .await
            .expect("connect to the test database")
    }

    pub async fn drop_database(self) {
        if let Ok(admin) = sqlx::PgPool::connect(&self.admin_url).await {
            let _ = sqlx::query(sqlx::AssertSqlSafe(format!(
                "DROP DATABASE IF EXISTS {} WITH (FORCE)",
                self.name
            )))
            .execute(&admin)
            .await;
        }
    }
}

/// `openssl verify -CAfile chain cert`.
pub fn openssl_verify(chain: &Path, cert_pem: &Path) -> (bool, String) {
    run(
        "openssl",
        &[
            "verify",
            "-CAfile",
            &chain.display().to_string(),
            &cert_pem.display().to_string(),
        ],
        &[],
    )
}

/// Writes DER certificates as PEM.
pub fn write_pem(path: &Path, der: &[u8]) {
    attestca::pem::write_certificates(path, &[der]).expect("write PEM");
}

/// An HTTPS client for raw status-code checks.
pub fn https_client(chain: &Path, identity: Option<(&Path, &Path)>) -> reqwest::Client {
    let tls = attestca_rig::client::tls_config(chain, identity).expect("TLS client config");
    reqwest::Client::builder()
        .tls_backend_preconfigured(tls)
        .build()
        .expect("HTTP client")
}

/// An HTTPS client trusting `chain` that presents `dir/NAME.crt` with `dir/NAME.key`
/// (`pki`, `operator`; `pki`, `rig`; a device's `--out` directory, `device`).
pub fn client_as(chain: &Path, dir: &Path, name: &str) -> reqwest::Client {
    https_client(
        chain,
        Some((
            &dir.join(format!("{name}.crt")),
            &dir.join(format!("{name}.key")),
        )),
    )
}

/// A CSR (DER) for a fresh P-256 key with subject CN=`cn`.
pub fn csr(cn: &str) -> Vec<u8> {
    attestca_sim::device::DeviceKey::generate()
        .and_then(|k| k.csr(cn))
        .expect("make a CSR")
}

/// Base64 of DER, wrapped, as an EST body.
pub fn body(der: &[u8]) -> String {
    attestca::est::codec::encode_body(der)
}

/// The issued certificate from a simpleenroll response body.
pub fn certificate_from_response(body: &[u8]) -> Vec<u8> {
    let der = attestca::est::codec::decode_body(body).expect("base64 response");
    let mut certs = attestca_rig::client::certificates_from_pkcs7(&der).expect("certs-only PKCS#7");
    assert_eq!(
        certs.len(),
        1,
        "an enrollment response carries exactly one certificate"
    );
    certs.remove(0)
}

/// Serial (lower-case hex) of a DER certificate.
pub fn serial_of(der: &[u8]) -> String {
    use der::Decode;
    let cert = x509_cert::Certificate::from_der(der).expect("certificate");
    hex::encode(cert.tbs_certificate().serial_number().as_bytes())
}

/// `attestca init --config CFG --test-root` with a TLS certificate for 127.0.0.1 and the rig
/// certificate `rig-a`.
pub fn init_test_install(config: &str, envs: &[(&str, String)]) {
    let (ok, out) = run(
        &attestca_bin(),
        &[
            "init",
            "--config",
            config,
            "--test-root",
            "--tls-names",
            "127.0.0.1",
            "--rig-cert",
            "rig-a",
        ],
        envs,
    );
    assert!(ok, "attestca init: {out}");
}

/// A CA started from a configuration file: SQLite, a software key, a test root, a rig CA with
/// the rig certificate `rig-a`, and `extra` TOML appended (vendors, profiles...).
pub struct ConfiguredCa {
    pub server: ServerProcess,
    pub dir: std::path::PathBuf,
    pub rig: reqwest::Client,
    pub db: String,
}

impl ConfiguredCa {
    pub async fn start(tmp: &Path, extra: &str, envs: &[(&str, String)]) -> Self {
        let dir = tmp.join("ca");
        std::fs::create_dir_all(&dir).expect("dir");
        let (est, http) = addresses();
        let config = tmp.join("attestca.toml");
        std::fs::write(
            &config,
            format!(
                "[server]\nest_addr = \"{est}\"\nhttp_addr = \"{http}\"\ndata_dir = \"{}\"\n\
                 [tls]\ncertificate_file = \"pki/tls.crt\"\nkey_file = \"pki/tls.key\"\n\
                 [signer]\nbackend = \"software\"\nkey_file = \"pki/issuing.key\"\n\
                 [ca]\nchain_file = \"pki/ca-chain.pem\"\n\
                 [rigs]\ntrust_anchor_files = [\"pki/rig-ca.crt\"]\n{extra}\n",
                dir.display()
            ),
        )
        .expect("config");
        let cfg = config.display().to_string();
        init_test_install(&cfg, envs);
        let mut server = ServerProcess::spawn(
            &["serve", "--config", &cfg],
            envs,
            &tmp.join("server.log"),
            est,
            http,
        );
        server.wait_ready().await;
        let pki = dir.join("pki");
        Self {
            rig: https_client(
                &pki.join("ca-chain.pem"),
                Some((&pki.join("rig.crt"), &pki.join("rig.key"))),
            ),
            db: dir.join("attestca.db").display().to_string(),
            server,
            dir,
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}/.well-known/est{path}", self.server.est_url())
    }

    /// Posts a DER CSR as rig A; returns status and body.
    pub async fn post(&self, path: &str, csr: &[u8]) -> (u16, String) {
        let response = self
            .rig
            .post(self.url(path))
            .header("Content-Type", "application/pkcs10")
            .body(body(csr))
            .send()
            .await
            .expect("post");
        let status = response.status().as_u16();
        (status, response.text().await.expect("body"))
    }

    /// Runs one SQL statement against the CA's SQLite database.
    pub async fn sql(&self, statement: &'static str, bytes: &[u8]) {
        let db = sqlx::SqlitePool::connect(&format!("sqlite://{}", self.db))
            .await
            .expect("db");
        sqlx::query(statement)
            .bind(bytes)
            .execute(&db)
            .await
            .expect("sql");
        db.close().await;
    }
}

/// The shared test vectors directory (`ATTESTCA_VECTORS_DIR`, else `../shared/vectors` beside
/// the checkout). Tests that read it are ignored when it is missing (see [`require`]).
pub fn vectors() -> PathBuf {
    let dir = std::env::var_os("ATTESTCA_VECTORS_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../../../shared/vectors"));
    assert!(dir.is_dir(), "test vectors missing at {}", dir.display());
    dir
}

/// Asserts, with openssl, that a DER certificate names a device in a hardwareModuleName
/// SubjectAltName (RFC 4108).
pub fn assert_hardware_module_name(dir: &Path, der: &[u8]) {
    let pem = dir.join(format!("hw-{}.pem", serial_of(der)));
    write_pem(&pem, der);
    let (ok, san) = run(
        "openssl",
        &[
            "x509",
            "-in",
            &pem.display().to_string(),
            "-noout",
            "-ext",
            "subjectAltName",
        ],
        &[],
    );
    assert!(
        ok && san.contains("othername: 1.3.6.1.5.5.7.8.4"),
        "no hardwareModuleName: {san}"
    );
}

/// The hardwareModuleName of a DER certificate's SubjectAltName (RFC 4108): hwType (dotted)
/// and hwSerialNum, or `None` when it has none.
pub fn hardware_module_name(der: &[u8]) -> Option<(String, Vec<u8>)> {
    use der::{Decode, Encode};
    use x509_cert::ext::pkix::SubjectAltName;
    use x509_cert::ext::pkix::name::{GeneralName, HardwareModuleName};
    let cert = x509_cert::Certificate::from_der(der).expect("certificate");
    let (_, names) = cert
        .tbs_certificate()
        .get_extension::<SubjectAltName>()
        .expect("subjectAltName")?;
    names.0.iter().find_map(|name| {
        let GeneralName::OtherName(other) = name else {
            return None;
        };
        if other.type_id.to_string() != "1.3.6.1.5.5.7.8.4" {
            return None;
        }
        let module = HardwareModuleName::from_der(&other.value.to_der().ok()?).ok()?;
        Some((
            module.hw_type.to_string(),
            module.hw_serial_num.as_bytes().to_vec(),
        ))
    })
}

/// The CRL number and listed serials (lower-case hex) of a DER CRL.
pub fn crl_facts(der: &[u8]) -> (u64, Vec<String>) {
    let crl: x509_cert::crl::CertificateList = der::Decode::from_der(der).expect("CRL");
    let number = crl
        .tbs_cert_list
        .crl_extensions
        .iter()
        .flatten()
        .find(|e| e.extn_id == const_oid::db::rfc5280::ID_CE_CRL_NUMBER)
        .and_then(|e| <der::asn1::Uint as der::Decode>::from_der(e.extn_value.as_bytes()).ok())
        .map(|n| {
            n.as_bytes()
                .iter()
                .fold(0u64, |a, b| (a << 8) | u64::from(*b))
        })
        .expect("CRL number");
    let serials = crl
        .tbs_cert_list
        .revoked_certificates
        .iter()
        .flatten()
        .map(|r| hex::encode(r.serial_number.as_bytes()))
        .collect();
    (number, serials)
}

/// Scrapes `/metrics`: the text and the samples by `name{labels}`.
pub async fn scrape(server: &ServerProcess) -> (String, std::collections::HashMap<String, f64>) {
    let text = reqwest::get(format!("http://{}/metrics", server.http))
        .await
        .expect("metrics")
        .text()
        .await
        .expect("body");
    let samples = text
        .lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
        .filter_map(|l| {
            let (key, value) = l.rsplit_once(' ')?;
            Some((key.to_owned(), value.parse().ok()?))
        })
        .collect();
    (text, samples)
}

/// The CRL number and listed serials of the issuing CA's CRL a server serves.
pub async fn served_crl(server: &ServerProcess) -> (u64, Vec<String>) {
    let bytes = reqwest::get(format!("http://{}/crl/issuing-ca.crl", server.http))
        .await
        .expect("CRL")
        .bytes()
        .await
        .expect("body");
    crl_facts(&bytes)
}

/// Enrolls a fresh P-256 key with CN=`cn` as the rig of `client` at `url`
/// (`…/simpleenroll`); returns the certificate's DER.
pub async fn enroll(client: &reqwest::Client, url: &str, cn: &str) -> Vec<u8> {
    let response = client
        .post(url)
        .header("Content-Type", "application/pkcs10")
        .body(body(&csr(cn)))
        .send()
        .await
        .expect("simpleenroll");
    assert_eq!(response.status(), 200, "enrolling {cn}");
    certificate_from_response(&response.bytes().await.expect("body"))
}

/// The real `openssl ocsp` client against one responder, with the issuing CA and the chain.
pub struct OpensslOcsp {
    pub issuer: PathBuf,
    pub chain: PathBuf,
    pub url: String,
}

impl OpensslOcsp {
    /// Writes the issuing CA (the chain's first certificate) next to the chain.
    pub fn new(chain: &Path, dir: &Path, url: String) -> Self {
        let ders = attestca::pem::read_certificate_ders(chain).expect("CA chain");
        let issuer = dir.join("issuing-ca.pem");
        write_pem(&issuer, &ders[0]);
        Self {
            issuer,
            chain: chain.to_owned(),
            url,
        }
    }

    /// `openssl ocsp -issuer … -url … -CAfile … ARGS`: (exit status, output).
    pub fn query(&self, args: &[&str]) -> (bool, String) {
        let mut all = vec![
            "ocsp".to_owned(),
            "-issuer".to_owned(),
            self.issuer.display().to_string(),
            "-url".to_owned(),
            self.url.clone(),
            "-CAfile".to_owned(),
            self.chain.display().to_string(),
        ];
        all.extend(args.iter().map(|a| a.to_string()));
        let refs: Vec<&str> = all.iter().map(String::as_str).collect();
        run("openssl", &refs, &[])
    }

    /// The status line `openssl ocsp` prints for `cert_pem` (good / revoked / unknown), after
    /// checking that the response verified.
    pub fn status(&self, cert_pem: &Path, extra: &[&str]) -> String {
        let cert = cert_pem.display().to_string();
        let mut args = extra.to_vec();
        args.extend(["-cert", cert.as_str()]);
        let (ok, out) = self.query(&args);
        assert!(
            ok && out.contains("Response verify OK"),
            "openssl ocsp: {out}"
        );
        let prefix = format!("{cert}: ");
        out.lines()
            .find_map(|l| l.strip_prefix(&prefix))
            .unwrap_or_else(|| panic!("no status for {cert}: {out}"))
            .trim()
            .to_owned()
    }

    /// Polls until `cert_pem` reads `want` (pre-signed path, no nonce); panics after 5 s.
    pub async fn until_status(&self, cert_pem: &Path, want: &str) -> Duration {
        let started = Instant::now();
        loop {
            let status = self.status(cert_pem, &["-no_nonce"]);
            if status == want {
                return started.elapsed();
            }
            assert!(
                started.elapsed() < Duration::from_secs(5),
                "{} still {status} after 5 s at {}",
                cert_pem.display(),
                self.url
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
}

/// A freshness nonce from `url` (an EST `nonce` resource) for whoever `client` authenticates as.
pub async fn nonce_via(client: &reqwest::Client, url: &str) -> Vec<u8> {
    use base64::Engine;
    let response = client.get(url).send().await.expect("nonce");
    assert_eq!(response.status(), 200);
    let json: serde_json::Value =
        serde_json::from_slice(&response.bytes().await.expect("body")).expect("json");
    base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(json["nonce"].as_str().expect("nonce"))
        .expect("b64")
}

/// `attestca revoke` with these arguments (`--config F` or `--dev --data-dir D`).
pub fn revoke_with_cli(config_args: &[&str], serial: &str, reason: &str) {
    let mut args = vec!["revoke", "--serial", serial, "--reason", reason];
    args.extend_from_slice(config_args);
    let (ok, out) = run(&attestca_bin(), &args, &[]);
    assert!(ok, "attestca revoke: {out}");
}

/// pkilint's `lint_ocsp_response` at WARNING on a DER response (the test needs pkilint: see
/// [`require`]).
pub fn lint_ocsp_response(response_der: &Path) -> (bool, String) {
    let pkilint = require("pkilint", "ATTESTCA_TEST_PKILINT");
    let tool = Path::new(&pkilint)
        .parent()
        .expect("pkilint directory")
        .join("lint_ocsp_response");
    run(
        &tool.display().to_string(),
        &["lint", "-s", "WARNING", &response_der.display().to_string()],
        &[],
    )
}

/// pkilint's `lint_pkix_cert` at WARNING on a certificate file (PEM or DER) (the test needs
/// pkilint: see [`require`]).
pub fn lint_certificate(certificate: &Path) -> (bool, String) {
    let pkilint = require("pkilint", "ATTESTCA_TEST_PKILINT");
    run(
        &pkilint,
        &["lint", "-s", "WARNING", &certificate.display().to_string()],
        &[],
    )
}

/// The Python of pkilint's venv, which has `cryptography` (a pkilint dependency; the test
/// needs pkilint: see [`require`]).
pub fn python_with_cryptography() -> String {
    let pkilint = require("pkilint", "ATTESTCA_TEST_PKILINT");
    let python = Path::new(&pkilint)
        .parent()
        .expect("pkilint directory")
        .join("python")
        .display()
        .to_string();
    let (ok, out) = run(&python, &["-c", "import cryptography"], &[]);
    assert!(ok, "{python} cannot import cryptography: {out}");
    python
}

/// Writes `dir/attestca.toml` for instances sharing the PostgreSQL database `database_url`,
/// with their data in `dir/data`, the given `[signer]` and `[revocation]` bodies, and a
/// default profile; returns the configuration's path and the data directory.
pub fn write_shared_database_config(
    dir: &Path,
    database_url: &str,
    signer: &str,
    revocation: &str,
) -> (String, PathBuf) {
    let (path, data) = (dir.join("attestca.toml"), dir.join("data"));
    std::fs::write(
        &path,
        format!(
            "[server]\ndata_dir = \"{}\"\n[tls]\ncertificate_file = \"tls/server.crt\"\nkey_file = \"tls/server.key\"\n\
             [database]\nurl = \"{database_url}\"\n[signer]\n{signer}\n\
             [ca]\nchain_file = \"pki/ca-chain.pem\"\n[rigs]\ntrust_anchor_files = [\"pki/rig-ca.crt\"]\n\
             [revocation]\n{revocation}\n[profiles.default]\n",
            data.display(),
        ),
    )
    .expect("config");
    (path.display().to_string(), data)
}

/// [`write_shared_database_config`] with the software CA key, then `attestca init` (test
/// root, rig `rig-a`): the configuration's path and the data directory.
pub fn software_install(dir: &Path, database_url: &str, revocation: &str) -> (String, PathBuf) {
    let (cfg, data) = write_shared_database_config(
        dir,
        database_url,
        "backend = \"software\"\nkey_file = \"pki/issuing.key\"",
        revocation,
    );
    init_test_install(&cfg, &[]);
    (cfg, data)
}

/// An EST client authenticated as the rig of the install in `data` (its `pki/`).
pub fn rig_client(data: &Path) -> reqwest::Client {
    let pki = data.join("pki");
    https_client(
        &pki.join("ca-chain.pem"),
        Some((&pki.join("rig.crt"), &pki.join("rig.key"))),
    )
}

impl ServerProcess {
    /// `attestca serve --config CONFIG` on fresh loopback ports (set through the environment,
    /// so that several instances share one file), logging to `log`.
    pub fn with_config(config: &str, envs: &[(&str, String)], log: &Path) -> Self {
        let (est, http) = addresses();
        let mut all = envs.to_vec();
        all.push(("ATTESTCA_SERVER__EST_ADDR", est.to_string()));
        all.push(("ATTESTCA_SERVER__HTTP_ADDR", http.to_string()));
        Self::spawn(&["serve", "--config", config], &all, log, est, http)
    }
}

impl SoftHsmToken {
    /// `pkcs11-tool --list-objects --type privkey` of this token, logged in.
    pub fn private_keys(&self, module: &str) -> String {
        let (ok, objects) = run(
            "pkcs11-tool",
            &[
                "--module",
                module,
                "--token-label",
                &self.label,
                "--login",
                "--pin",
                &self.pin,
                "--list-objects",
                "--type",
                "privkey",
            ],
            &[("SOFTHSM2_CONF", self.conf.display().to_string())],
        );
        assert!(ok, "pkcs11-tool: {objects}");
        objects
    }
}

/// Enrolls through the rig binary with the dev data directory's simulated secure element
/// (`attestca-rig enroll` as the dev rig, into `out`); returns the serial.
pub fn rig_enroll(server: &ServerProcess, data: &Path, out: &Path, cn: &str) -> String {
    let pki = data.join("pki");
    let (ok, log) = run(
        &rig_bin(),
        &[
            "enroll",
            "--server",
            &server.est_url(),
            "--trust",
            &pki.join("ca-chain.pem").display().to_string(),
            "--rig-cert",
            &pki.join("rig.crt").display().to_string(),
            "--rig-key",
            &pki.join("rig.key").display().to_string(),
            "--out",
            &out.display().to_string(),
            "--cn",
            cn,
        ],
        &[],
    );
    assert!(ok, "attestca-rig enroll: {log}");
    let der = attestca::pem::read_certificate_ders(&out.join("device.crt")).expect("device.crt");
    serial_of(&der[0])
}

/// Percent-encodes a path segment or query value.
pub fn urlencode(text: &str) -> String {
    text.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// The path of `program` found on PATH; a failure when it is missing, like [`require`].
pub fn require_program(program: &str) -> String {
    let found = std::env::var_os("PATH").and_then(|path| {
        std::env::split_paths(&path)
            .map(|dir| dir.join(program))
            .find(|candidate| candidate.is_file())
    });
    match found {
        Some(path) => path.display().to_string(),
        None => missing(program, "put it on PATH; tests/run.sh installs it"),
    }
}

impl ServerProcess {
    /// Waits until `/readyz` answers 200 (the database answers, the keys sign, the OCSP
    /// responses are pre-signed); panics with the log after `limit`.
    pub async fn wait_readyz(&mut self, limit: Duration) {
        let deadline = Instant::now() + limit;
        let url = format!("http://{}/readyz", self.http);
        loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                panic!("attestca exited ({status}):\n{}", self.log_text());
            }
            if let Ok(r) = reqwest::get(&url).await
                && r.status() == 200
            {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "attestca not ready within {limit:?}:\n{}",
                self.log_text()
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// `/readyz`: status and body.
    pub async fn readyz(&self) -> (u16, String) {
        match reqwest::get(format!("http://{}/readyz", self.http)).await {
            Ok(r) => (r.status().as_u16(), r.text().await.unwrap_or_default()),
            Err(e) => (0, e.to_string()),
        }
    }
}

/// A PostgreSQL server of the test's own, in a temporary directory, which the test may stop
/// and start again (the shared server must not be stopped). Needs the server binaries
/// (`ATTESTCA_TEST_PG_BIN`, set by tests/run.sh); as root it runs them as `postgres`.
pub struct ThrowawayPostgres {
    bin: PathBuf,
    dir: PathBuf,
    pub port: u16,
}

impl ThrowawayPostgres {
    /// initdb and start (the test needs `ATTESTCA_TEST_PG_BIN`: see [`require`]).
    pub fn start() -> Self {
        let bin = PathBuf::from(require(
            "PostgreSQL server binaries",
            "ATTESTCA_TEST_PG_BIN",
        ));
        let mut suffix = [0u8; 6];
        aws_lc_rs::rand::fill(&mut suffix).expect("random");
        // Under /tmp: the postgres user must reach it and the socket path must stay short.
        let dir = PathBuf::from(format!("/tmp/attestca-pg-{}", hex::encode(suffix)));
        std::fs::create_dir_all(&dir).expect("PostgreSQL directory");
        if Self::as_root() {
            let (ok, out) = run("chown", &["postgres:", &dir.display().to_string()], &[]);
            assert!(ok, "chown postgres: {out}");
        }
        let pg = Self {
            bin,
            dir,
            port: free_port(),
        };
        let data = pg.dir.join("data").display().to_string();
        let (ok, out) = pg.run_as_owner(
            "initdb",
            &[
                "-D",
                &data,
                "-U",
                "postgres",
                "-A",
                "trust",
                "--no-sync",
                "-E",
                "UTF8",
            ],
        );
        assert!(ok, "initdb: {out}");
        pg.start_again();
        pg
    }

    fn as_root() -> bool {
        // SAFETY: geteuid has no preconditions.
        unsafe { libc::geteuid() == 0 }
    }

    fn run_as_owner(&self, tool: &str, args: &[&str]) -> (bool, String) {
        let program = self.bin.join(tool).display().to_string();
        if Self::as_root() {
            let mut all = vec!["-u", "postgres", "--", program.as_str()];
            all.extend_from_slice(args);
            run("runuser", &all, &[])
        } else {
            run(&program, args, &[])
        }
    }

    /// The admin URL (trust authentication).
    pub fn url(&self) -> String {
        format!("postgres://postgres@127.0.0.1:{}/postgres", self.port)
    }

    /// Starts the server (again) and waits until it accepts connections.
    pub fn start_again(&self) {
        let options = format!(
            "-p {} -k {} -c listen_addresses=127.0.0.1 -c fsync=off",
            self.port,
            self.dir.display()
        );
        let (ok, out) = self.run_as_owner(
            "pg_ctl",
            &[
                "-D",
                &self.dir.join("data").display().to_string(),
                "-l",
                &self.dir.join("pg.log").display().to_string(),
                "-o",
                &options,
                "-w",
                "start",
            ],
        );
        assert!(ok, "pg_ctl start: {out}");
    }

    /// Stops the server (fast shutdown: sessions are terminated, as in a restart).
    pub fn stop(&self) {
        let (ok, out) = self.run_as_owner(
            "pg_ctl",
            &[
                "-D",
                &self.dir.join("data").display().to_string(),
                "-m",
                "fast",
                "-w",
                "stop",
            ],
        );
        assert!(ok, "pg_ctl stop: {out}");
    }
}

impl Drop for ThrowawayPostgres {
    fn drop(&mut self) {
        let data = self.dir.join("data").display().to_string();
        let _ = self.run_as_owner("pg_ctl", &["-D", &data, "-m", "immediate", "stop"]);
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Waits until the issuance log of the dev SQLite database `db` has nothing pending
/// integration; fails after `limit`.
pub async fn wait_log_integrated(db: &sqlx::SqlitePool, limit: Duration) {
    let started = std::time::Instant::now();
    loop {
        let pending: i64 = sqlx::query_scalar("SELECT count(*) FROM log_pending")
            .fetch_one(db)
            .await
            .expect("pending");
        if pending == 0 {
            return;
        }
        assert!(started.elapsed() < limit, "never integrated");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The issuance log's entry for `certificate` (DER), read over `server`'s plain-HTTP log
/// `/log/issuing-ca/` (the default `ca.name`; docs/transparency.md) as a monitor reads it:
/// waits up to 5 s until `index/<serial>` answers, then decodes every entry bundle of the
/// newest checkpoint and asserts that exactly one entry is for the certificate's serial, at
/// that index, and holds the certificate itself.
pub async fn logged_entry(
    server: &ServerProcess,
    certificate: &[u8],
) -> attestca_core::transparency::entry::IssuanceEntry {
    use attestca_core::transparency::entry::IssuanceEntry;
    use attestca_core::transparency::tiles::{TILE_WIDTH, bundle_entries, bundles_of};
    let serial = serial_of(certificate);
    let client = reqwest::Client::new();
    let get = async |path: &str| {
        let url = format!("http://{}/log/issuing-ca/{path}", server.http);
        let response = client.get(&url).send().await.expect("log request");
        let status = response.status().as_u16();
        (status, response.bytes().await.expect("log body").to_vec())
    };
    let started = Instant::now();
    let index: u64 = loop {
        let (status, body) = get(&format!("index/{serial}")).await;
        let text = String::from_utf8_lossy(&body).into_owned();
        if status == 200 {
            break text.trim().parse().expect("a decimal leaf index");
        }
        assert!(
            status == 404 && started.elapsed() < Duration::from_secs(5),
            "{serial} not logged within 5 s: HTTP {status} {text}\n{}",
            server.log_text()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let (status, note) = get("checkpoint").await;
    assert_eq!(status, 200, "checkpoint");
    let size: u64 = String::from_utf8_lossy(&note)
        .lines()
        .nth(1)
        .and_then(|line| line.parse().ok())
        .expect("the checkpoint's size line");
    let mut found = Vec::new();
    for bundle in bundles_of(size) {
        let (status, data) = get(&bundle.to_path()).await;
        assert_eq!(status, 200, "{}", bundle.to_path());
        for (i, bytes) in bundle_entries(&data)
            .expect("bundle")
            .into_iter()
            .enumerate()
        {
            let entry = IssuanceEntry::decode(bytes).expect("entry");
            if serial_of(&entry.certificate) == serial {
                found.push((bundle.index * TILE_WIDTH + i as u64, entry));
            }
        }
    }
    let at: Vec<u64> = found.iter().map(|(i, _)| *i).collect();
    assert_eq!(at, [index], "the log's entries for {serial}");
    let (_, entry) = found.remove(0);
    assert_eq!(entry.certificate, certificate, "the logged certificate");
    entry
}
