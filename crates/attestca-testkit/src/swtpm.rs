//! A real TPM 2.0 for the tests: swtpm (libtpms), manufactured by `swtpm_setup` with an RSA
//! endorsement key whose certificate is issued by a local CA the test owns (it plays the TPM
//! vendor's EK root), listening on free ports, stopped when dropped.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::{free_port, require, run};

/// A running swtpm.
pub struct Swtpm {
    child: Child,
    pub port: u16,
    /// The local CA's directory: `issuercert.pem` and `swtpm-localca-rootca-cert.pem`.
    pub ca_dir: PathBuf,
}

impl Swtpm {
    /// Manufactures a TPM under `dir` (state and local CA) and starts it.
    pub fn start(dir: &Path) -> Self {
        let swtpm = require("swtpm", "ATTESTCA_TEST_SWTPM");
        let state = dir.join("tpm-state");
        let ca_dir = dir.join("tpm-vendor-ca");
        std::fs::create_dir_all(&state).expect("TPM state dir");
        std::fs::create_dir_all(&ca_dir).expect("TPM CA dir");
        let localca = dir.join("swtpm-localca.conf");
        std::fs::write(
            &localca,
            format!(
                "statedir = {ca}\nsigningkey = {ca}/signkey.pem\nissuercert = {ca}/issuercert.pem\n\
                 certserial = {ca}/certserial\n",
                ca = ca_dir.display()
            ),
        )
        .expect("localca config");
        let setup = dir.join("swtpm_setup.conf");
        std::fs::write(
            &setup,
            format!(
                "create_certs_tool = /usr/bin/swtpm_localca\ncreate_certs_tool_config = {}\n\
                 create_certs_tool_options = /etc/swtpm-localca.options\nactive_pcr_banks = sha256\n",
                localca.display()
            ),
        )
        .expect("swtpm_setup config");
        let (ok, out) = run(
            "swtpm_setup",
            &[
                "--tpm2",
                "--tpmstate",
                &state.display().to_string(),
                "--create-ek-cert",
                "--config",
                &setup.display().to_string(),
                "--overwrite",
            ],
            &[],
        );
        assert!(ok, "swtpm_setup failed: {out}");
        // The swtpm TCTI finds the control channel at the next port.
        let (port, ctrl) = loop {
            let port = free_port();
            if port < u16::MAX && std::net::TcpListener::bind(("127.0.0.1", port + 1)).is_ok() {
                break (port, port + 1);
            }
        };
        let child = Command::new(swtpm)
            .args([
                "socket",
                "--tpm2",
                "--tpmstate",
                &format!("dir={}", state.display()),
                "--server",
                &format!("type=tcp,port={port},bindaddr=127.0.0.1"),
                "--ctrl",
                &format!("type=tcp,port={ctrl},bindaddr=127.0.0.1"),
                "--flags",
                "not-need-init,startup-clear",
            ])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start swtpm");
        let deadline = Instant::now() + Duration::from_secs(10);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(Instant::now() < deadline, "swtpm did not listen on {port}");
            std::thread::sleep(Duration::from_millis(50));
        }
        Self {
            child,
            port,
            ca_dir,
        }
    }

    /// The tpm2-tss TCTI of this TPM.
    pub fn tcti(&self) -> String {
        format!("swtpm:host=127.0.0.1,port={}", self.port)
    }

    /// The EK root and intermediate a CA must trust for this TPM.
    pub fn ek_roots(&self) -> Vec<PathBuf> {
        vec![
            self.ca_dir.join("issuercert.pem"),
            self.ca_dir.join("swtpm-localca-rootca-cert.pem"),
        ]
    }
}

impl Drop for Swtpm {
    fn drop(&mut self) {
        self.child.kill().ok();
        self.child.wait().ok();
    }
}
