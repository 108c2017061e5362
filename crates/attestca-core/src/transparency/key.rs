//! The checkpoint key seam: an Ed25519 key that signs checkpoint notes, wherever it lives.
//!
//! Backends: [`SoftwareCheckpointKey`] (a PKCS#8 file, for the zero-setup development run and
//! tests) here, and the PKCS#11 key in the server crate.

use std::path::Path;

use aws_lc_rs::signature::{Ed25519KeyPair, KeyPair};

use crate::signer::SignerError;

/// Signs checkpoint notes with the log's Ed25519 key.
pub trait CheckpointSigner: Send + Sync {
    /// The raw 32-octet Ed25519 public key.
    fn public_key(&self) -> [u8; 32];
    /// The 64-octet Ed25519 signature of `message`.
    fn sign(&self, message: &[u8]) -> Result<Vec<u8>, SignerError>;
}

/// An Ed25519 key in a PKCS#8 file.
pub struct SoftwareCheckpointKey {
    pair: Ed25519KeyPair,
}

impl SoftwareCheckpointKey {
    /// Loads the key at `path`, or creates it (mode 0600) when there is none.
    pub fn load_or_create(path: &Path) -> Result<Self, SignerError> {
        let fail = |what: &str, e: &dyn std::fmt::Display| {
            SignerError::Software(format!("checkpoint key {}: {what}: {e}", path.display()))
        };
        let der = match std::fs::read(path) {
            Ok(der) => der,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                let document =
                    Ed25519KeyPair::generate_pkcs8(&aws_lc_rs::rand::SystemRandom::new())
                        .map_err(|e| fail("generate", &e))?;
                if let Some(dir) = path.parent() {
                    std::fs::create_dir_all(dir).map_err(|e| fail("create directory", &e))?;
                }
                write_private(path, document.as_ref()).map_err(|e| fail("write", &e))?;
                document.as_ref().to_vec()
            }
            Err(e) => return Err(fail("read", &e)),
        };
        let pair = Ed25519KeyPair::from_pkcs8(&der).map_err(|e| fail("parse", &e))?;
        Ok(Self { pair })
    }
}

#[cfg(unix)]
fn write_private(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)?;
    file.write_all(bytes)?;
    file.sync_all()
}

#[cfg(not(unix))]
fn write_private(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    std::fs::write(path, bytes)
}

impl CheckpointSigner for SoftwareCheckpointKey {
    fn public_key(&self) -> [u8; 32] {
        let mut key = [0u8; 32];
        key.copy_from_slice(self.pair.public_key().as_ref());
        key
    }

    fn sign(&self, message: &[u8]) -> Result<Vec<u8>, SignerError> {
        Ok(self.pair.sign(message).as_ref().to_vec())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_created_key_is_loaded_again_and_signs_verifiable_checkpoints() {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("log").join("checkpoint.key");
        let key = SoftwareCheckpointKey::load_or_create(&path).expect("create");
        let again = SoftwareCheckpointKey::load_or_create(&path).expect("load");
        assert_eq!(key.public_key(), again.public_key());
        let log_key = super::super::checkpoint::LogKey::new("ca", key.public_key()).expect("name");
        let text = super::super::checkpoint::checkpoint_text("ca", 1, &[1; 32]).expect("text");
        let note = super::super::checkpoint::signed_checkpoint(
            &text,
            &log_key,
            &again.sign(&text).expect("sign"),
        )
        .expect("note");
        super::super::checkpoint::verify_checkpoint(&note, &log_key, "ca").expect("verifies");
    }
}
