//! Checkpoints: C2SP tlog-checkpoint bodies in C2SP signed notes, signed by the log's Ed25519
//! key (signature type 0x01).
//!
//! Why Ed25519 and not the CA's ECDSA: C2SP tlog-tiles asks a log that talks to the public
//! witness network for at least one Ed25519 signature, witnesses verify exactly that, and
//! PKCS#11 tokens (SoftHSM included) hold Ed25519 keys (`CKM_EDDSA`). The key is the log's own,
//! under its own label, never the CA's.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use sha2::{Digest, Sha256};
use signed_note::{Note, Signature, StandardVerifier, VerifierList};
use tlog_tiles::{Checkpoint, Hash};

/// The signed-note signature type of Ed25519.
const ED25519: u8 = 0x01;

/// The log's public key as a signed-note verifier knows it: a key name and an Ed25519 key.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LogKey {
    name: String,
    public_key: [u8; 32],
}

/// A checkpoint that could not be made or does not verify.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum CheckpointError {
    #[error("the log key name {0:?} is not a signed-note key name (non-empty, no spaces or '+')")]
    BadKeyName(String),
    #[error("the verifier key is malformed: {0}")]
    BadVerifierKey(String),
    #[error("the checkpoint is malformed: {0}")]
    Malformed(String),
    #[error("the checkpoint is not signed by the log key {0}")]
    NotSigned(String),
    #[error("the checkpoint is for log {found:?}, not {expected:?}")]
    WrongOrigin { expected: String, found: String },
    #[error("the log key's signature is {0} octets, not 64")]
    BadSignature(usize),
}

impl LogKey {
    pub fn new(name: &str, public_key: [u8; 32]) -> Result<Self, CheckpointError> {
        if name.is_empty() || name.chars().any(|c| c.is_whitespace() || c == '+') {
            return Err(CheckpointError::BadKeyName(name.to_owned()));
        }
        Ok(Self {
            name: name.to_owned(),
            public_key,
        })
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn public_key(&self) -> &[u8; 32] {
        &self.public_key
    }

    /// SHA-256(key name ‖ 0x0A ‖ 0x01 ‖ public key)[:4] (C2SP signed-note).
    pub fn key_id(&self) -> u32 {
        let mut h = Sha256::new();
        h.update(self.name.as_bytes());
        h.update([b'\n', ED25519]);
        h.update(self.public_key);
        let digest = h.finalize();
        u32::from_be_bytes([digest[0], digest[1], digest[2], digest[3]])
    }

    /// The verifier key in the signed-note text form: `<name>+<key id hex>+<base64(0x01 ‖ key)>`
    /// — what a witness or a relying party configures.
    pub fn verifier_key(&self) -> String {
        let mut key = vec![ED25519];
        key.extend_from_slice(&self.public_key);
        format!(
            "{}+{:08x}+{}",
            self.name,
            self.key_id(),
            STANDARD.encode(key)
        )
    }

    /// Parses [`LogKey::verifier_key`]'s form (checking its key id).
    pub fn from_verifier_key(text: &str) -> Result<Self, CheckpointError> {
        let bad = |why: &str| CheckpointError::BadVerifierKey(why.to_owned());
        let mut parts = text.trim().splitn(3, '+');
        let (Some(name), Some(id), Some(key)) = (parts.next(), parts.next(), parts.next()) else {
            return Err(bad("not name+id+key"));
        };
        let key = STANDARD.decode(key).map_err(|_| bad("key is not base64"))?;
        let Some((&ED25519, public_key)) = key.split_first() else {
            return Err(bad("not an Ed25519 key (type 0x01)"));
        };
        let public_key: [u8; 32] = public_key
            .try_into()
            .map_err(|_| bad("an Ed25519 key is 32 octets"))?;
        let log_key = Self::new(name, public_key)?;
        if u32::from_str_radix(id, 16).ok() != Some(log_key.key_id()) || id.len() != 8 {
            return Err(bad("the key id does not match the key"));
        }
        Ok(log_key)
    }
}

/// The checkpoint body (C2SP tlog-checkpoint): origin, size, base64 root, each on a line.
pub fn checkpoint_text(
    origin: &str,
    size: u64,
    root: &[u8; 32],
) -> Result<Vec<u8>, CheckpointError> {
    if origin.contains('\n') {
        return Err(CheckpointError::Malformed("origin has a newline".into()));
    }
    Checkpoint::new(origin, size, Hash(*root), "")
        .map(|c| c.to_bytes())
        .map_err(|e| CheckpointError::Malformed(e.to_string()))
}

/// The signed note of a checkpoint body, given the log key's Ed25519 signature over `text`
/// (made by the signer backend that holds the key).
pub fn signed_checkpoint(
    text: &[u8],
    key: &LogKey,
    signature: &[u8],
) -> Result<Vec<u8>, CheckpointError> {
    if signature.len() != 64 {
        return Err(CheckpointError::BadSignature(signature.len()));
    }
    let line = Signature::new(key.name.clone(), key.key_id(), signature.to_vec())
        .map_err(|e| CheckpointError::Malformed(e.to_string()))?;
    let note = Note::new(text, &[line]).map_err(|e| CheckpointError::Malformed(e.to_string()))?;
    Ok(note.to_bytes())
}

/// A checkpoint whose log signature verified.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct VerifiedCheckpoint {
    pub origin: String,
    pub size: u64,
    pub root: [u8; 32],
    /// The note's other signature lines (witness cosignatures), not verified here.
    pub other_signatures: Vec<String>,
}

/// Verifies a signed checkpoint: the log key's signature, then the body, then the origin.
pub fn verify_checkpoint(
    note: &[u8],
    key: &LogKey,
    origin: &str,
) -> Result<VerifiedCheckpoint, CheckpointError> {
    let parsed = Note::from_bytes(note).map_err(|e| CheckpointError::Malformed(e.to_string()))?;
    let verifier = StandardVerifier::new(&key.verifier_key())
        .map_err(|e| CheckpointError::BadVerifierKey(e.to_string()))?;
    let (_, others) = parsed
        .verify(&VerifierList::new(vec![Box::new(verifier)]))
        .map_err(|_| CheckpointError::NotSigned(key.name.clone()))?;
    let body = Checkpoint::from_bytes(parsed.text())
        .map_err(|e| CheckpointError::Malformed(e.to_string()))?;
    if body.origin() != origin {
        return Err(CheckpointError::WrongOrigin {
            expected: origin.to_owned(),
            found: body.origin().to_owned(),
        });
    }
    Ok(VerifiedCheckpoint {
        origin: body.origin().to_owned(),
        size: body.size(),
        root: body.hash().0,
        other_signatures: others
            .iter()
            .map(|s| String::from_utf8_lossy(&s.to_bytes()).trim_end().to_owned())
            .collect(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use aws_lc_rs::signature::{Ed25519KeyPair, KeyPair};

    fn key_pair() -> (Ed25519KeyPair, LogKey) {
        let pair = Ed25519KeyPair::generate().expect("key");
        let public: [u8; 32] = pair.public_key().as_ref().try_into().expect("32 octets");
        (
            pair,
            LogKey::new("issuing-ca.log.example", public).expect("name"),
        )
    }

    #[test]
    fn a_signed_checkpoint_verifies_and_a_changed_one_does_not() {
        let (pair, key) = key_pair();
        let text = checkpoint_text("issuing-ca", 70_000, &[7; 32]).expect("text");
        assert_eq!(
            String::from_utf8(text.clone()).expect("utf-8"),
            format!("issuing-ca\n70000\n{}\n", STANDARD.encode([7u8; 32]))
        );
        let note = signed_checkpoint(&text, &key, pair.sign(&text).as_ref()).expect("note");
        let verified = verify_checkpoint(&note, &key, "issuing-ca").expect("verifies");
        assert_eq!((verified.size, verified.root), (70_000, [7; 32]));

        let forged = String::from_utf8(note.clone())
            .expect("utf-8")
            .replace("70000", "70001");
        assert_eq!(
            verify_checkpoint(forged.as_bytes(), &key, "issuing-ca"),
            Err(CheckpointError::NotSigned(key.name().to_owned()))
        );
        assert!(matches!(
            verify_checkpoint(&note, &key, "other-ca"),
            Err(CheckpointError::WrongOrigin { .. })
        ));
        let (_, stranger) = key_pair();
        assert!(verify_checkpoint(&note, &stranger, "issuing-ca").is_err());
    }

    #[test]
    fn the_verifier_key_round_trips_and_its_id_is_the_specs() {
        let (_, key) = key_pair();
        let text = key.verifier_key();
        assert_eq!(LogKey::from_verifier_key(&text), Ok(key.clone()));
        // The key id, recomputed from C2SP signed-note's definition.
        let mut h = Sha256::new();
        h.update(b"issuing-ca.log.example\n\x01");
        h.update(key.public_key());
        assert_eq!(
            format!("{:08x}", key.key_id()),
            hex::encode(&h.finalize()[..4])
        );
        let wrong_id = text.replacen(&format!("{:08x}", key.key_id()), "00000000", 1);
        assert!(LogKey::from_verifier_key(&wrong_id).is_err());
        assert!(LogKey::new("has space", [0; 32]).is_err());
    }
}
