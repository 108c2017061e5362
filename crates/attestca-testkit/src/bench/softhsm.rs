//! A throwaway SoftHSM token for the benchmarks that sign through the CA's PKCS#11 signer
//! (`signing_rate`, `enrollment_steps`). Included with `#[path]`; not a benchmark itself.

use std::path::Path;

use attestca::config::Pkcs11SignerConfig;
use attestca::signer::CaKeyAlgorithm;

/// Label of the token [`init_token`] creates.
const TOKEN_LABEL: &str = "bench";
/// Its user PIN.
const USER_PIN: &str = "1234";

/// The PKCS#11 module (`ATTESTCA_TEST_PKCS11_MODULE`, else SoftHSM's Debian path), or `None`
/// when there is no such file.
pub fn module() -> Option<String> {
    let module = std::env::var("ATTESTCA_TEST_PKCS11_MODULE")
        .unwrap_or_else(|_| "/usr/lib/softhsm/libsofthsm2.so".into());
    std::path::Path::new(&module).is_file().then_some(module)
}

/// Creates a SoftHSM token in `dir` with `softhsm2-util` and points `SOFTHSM2_CONF` at it.
/// Call while no other thread runs (it sets an environment variable).
pub fn init_token(dir: &Path) -> anyhow::Result<()> {
    let tokens = dir.join("tokens");
    std::fs::create_dir_all(&tokens)?;
    let conf = dir.join("softhsm2.conf");
    std::fs::write(
        &conf,
        format!(
            "directories.tokendir = {}\nobjectstore.backend = file\nlog.level = ERROR\n",
            tokens.display()
        ),
    )?;
    // SAFETY: the callers run this while no other thread runs; nothing reads the environment
    // concurrently.
    unsafe { std::env::set_var("SOFTHSM2_CONF", &conf) };
    let status = std::process::Command::new("softhsm2-util")
        .args([
            "--init-token",
            "--free",
            "--label",
            TOKEN_LABEL,
            "--so-pin",
            "12345678",
            "--pin",
            USER_PIN,
        ])
        .stdout(std::process::Stdio::null())
        .status()?;
    anyhow::ensure!(status.success(), "softhsm2-util --init-token failed");
    Ok(())
}

/// The signer configuration of a P-256 key `key_label` on that token, with `sessions`
/// sessions (`Pkcs11Signer::generate` creates the key, as `attestca init` does).
pub fn signer_config(module: &str, key_label: &str, sessions: usize) -> Pkcs11SignerConfig {
    Pkcs11SignerConfig {
        module: module.into(),
        token_label: TOKEN_LABEL.into(),
        key_label: key_label.into(),
        algorithm: CaKeyAlgorithm::EcdsaP256,
        sessions,
        pin: USER_PIN.to_owned().into(),
        simulated_latency: std::time::Duration::ZERO,
    }
}
