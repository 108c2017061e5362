//! Witness cosignatures (C2SP tlog-witness, tlog-cosignature): the log asks each configured
//! witness to cosign its new checkpoint, proving with a consistency proof that the checkpoint
//! extends the last one the witness cosigned; the witness's `cosignature/v1` lines are
//! appended to the served checkpoint.
//!
//! Why: a log key alone can sign two different trees for two audiences (a split view). A
//! relying party that also requires a witness's cosignature knows the witness saw this tree
//! and that it extends everything the witness saw before.
//!
//! This module is the encoding: the `add-checkpoint` request body, the witness's verifier key
//! and the check of the cosignature lines it answers. The HTTP exchange is the server's.

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use sha2::{Digest, Sha256};

/// A witness as the log is configured with it: its name and Ed25519 cosigner key.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WitnessKey {
    name: String,
    public_key: [u8; 32],
}

/// A witness key or cosignature that cannot be used.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum WitnessError {
    #[error("witness verifier key: {0}")]
    BadKey(String),
    #[error("cosignature line: {0}")]
    BadLine(String),
    #[error("the cosignature does not verify over this checkpoint")]
    BadSignature,
}

/// The signature type of a cosignature/v1 key in a vkey and in its key id.
const COSIGNATURE_V1: u8 = 0x04;

impl WitnessKey {
    /// Parses a C2SP vkey of signature type 0x04: `<name>+<8 hex key id>+<base64(0x04 ‖ key)>`.
    pub fn from_verifier_key(text: &str) -> Result<Self, WitnessError> {
        let bad = |why: &str| WitnessError::BadKey(why.to_owned());
        let mut parts = text.trim().splitn(3, '+');
        let (Some(name), Some(id), Some(key)) = (parts.next(), parts.next(), parts.next()) else {
            return Err(bad("not <name>+<id>+<key>"));
        };
        if name.is_empty() || name.contains(char::is_whitespace) {
            return Err(bad("the name is empty or has spaces"));
        }
        let key = STANDARD
            .decode(key)
            .map_err(|_| bad("the key is not base64"))?;
        if key.first() != Some(&COSIGNATURE_V1) {
            return Err(bad("not a cosignature/v1 (0x04) key"));
        }
        let public_key: [u8; 32] = key[1..]
            .try_into()
            .map_err(|_| bad("not a 32-octet Ed25519 key"))?;
        let witness = Self {
            name: name.to_owned(),
            public_key,
        };
        if id != format!("{:08x}", witness.key_id()) {
            return Err(bad("the key id does not match the key"));
        }
        Ok(witness)
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// SHA-256(name ‖ "\n" ‖ 0x04 ‖ key)[:4], big-endian.
    pub fn key_id(&self) -> u32 {
        let mut h = Sha256::new();
        h.update(self.name.as_bytes());
        h.update(b"\n");
        h.update([COSIGNATURE_V1]);
        h.update(self.public_key);
        let digest = h.finalize();
        u32::from_be_bytes([digest[0], digest[1], digest[2], digest[3]])
    }

    /// The vkey of this witness.
    pub fn verifier_key(&self) -> String {
        let mut key = vec![COSIGNATURE_V1];
        key.extend_from_slice(&self.public_key);
        format!(
            "{}+{:08x}+{}",
            self.name,
            self.key_id(),
            STANDARD.encode(key)
        )
    }

    /// Verifies one signature line (`— <name> <base64>`) as this witness's cosignature of the
    /// checkpoint body `text`; returns its timestamp. Lines by other keys are
    /// `Err(BadLine)`.
    pub fn verify_line(&self, line: &str, text: &[u8]) -> Result<u64, WitnessError> {
        let bad = |why: &str| WitnessError::BadLine(why.to_owned());
        let rest = line
            .strip_prefix("\u{2014} ")
            .ok_or_else(|| bad("does not start with an em dash"))?;
        let (name, signature) = rest
            .trim_end_matches('\n')
            .rsplit_once(' ')
            .ok_or_else(|| bad("no signature"))?;
        if name != self.name {
            return Err(bad("another signer"));
        }
        let signature = STANDARD
            .decode(signature)
            .map_err(|_| bad("the signature is not base64"))?;
        if signature.len() != 4 + 8 + 64 {
            return Err(bad("not a timestamped Ed25519 signature"));
        }
        if signature[..4] != self.key_id().to_be_bytes() {
            return Err(bad("another key id"));
        }
        let mut timestamp = [0u8; 8];
        timestamp.copy_from_slice(&signature[4..12]);
        let timestamp = u64::from_be_bytes(timestamp);
        aws_lc_rs::signature::UnparsedPublicKey::new(
            &aws_lc_rs::signature::ED25519,
            self.public_key,
        )
        .verify(&cosigned_message(timestamp, text), &signature[12..])
        .map_err(|_| WitnessError::BadSignature)?;
        Ok(timestamp)
    }
}

/// The names of the `witnesses` none of whose cosignatures on the checkpoint `note`
/// (verified as `checkpoint`) verifies.
pub fn missing_cosigners<'a>(
    note: &[u8],
    checkpoint: &super::checkpoint::VerifiedCheckpoint,
    witnesses: &'a [WitnessKey],
) -> Vec<&'a str> {
    let text = note_text(note).unwrap_or_default();
    witnesses
        .iter()
        .filter(|w| {
            !checkpoint
                .other_signatures
                .iter()
                .any(|line| w.verify_line(line, text).is_ok())
        })
        .map(WitnessKey::name)
        .collect()
}

/// What a cosignature/v1 signs: `cosignature/v1\ntime <t>\n` and the checkpoint body.
pub fn cosigned_message(timestamp: u64, text: &[u8]) -> Vec<u8> {
    let mut message = format!("cosignature/v1\ntime {timestamp}\n").into_bytes();
    message.extend_from_slice(text);
    message
}

/// The body of `POST <witness>/add-checkpoint`: `old <size>`, the consistency proof's hashes
/// (base64, one per line), an empty line, and the signed checkpoint note.
pub fn add_checkpoint_body(old_size: u64, proof: &[[u8; 32]], note: &[u8]) -> Vec<u8> {
    let mut body = format!("old {old_size}\n").into_bytes();
    for hash in proof {
        body.extend_from_slice(STANDARD.encode(hash).as_bytes());
        body.push(b'\n');
    }
    body.push(b'\n');
    body.extend_from_slice(note);
    body
}

/// The note's body (what the log and the witnesses sign): everything before the blank line
/// that ends it, with its final newline.
pub fn note_text(note: &[u8]) -> Option<&[u8]> {
    // The last blank line, as signed-note parses a note.
    note.windows(2)
        .rposition(|w| w == b"\n\n")
        .map(|end| &note[..=end])
}

#[cfg(test)]
mod tests {
    use super::*;
    use aws_lc_rs::signature::{Ed25519KeyPair, KeyPair};

    #[test]
    fn a_cosignature_line_verifies_and_a_changed_one_does_not() {
        let pair = Ed25519KeyPair::generate().expect("key");
        let mut key = vec![COSIGNATURE_V1];
        key.extend_from_slice(pair.public_key().as_ref());
        let witness = WitnessKey {
            name: "witness.example/w1".into(),
            public_key: pair.public_key().as_ref().try_into().expect("32"),
        };
        // The key id, from C2SP tlog-cosignature's definition.
        let mut h = Sha256::new();
        h.update(b"witness.example/w1\n");
        h.update(&key);
        assert_eq!(witness.key_id().to_be_bytes(), h.finalize()[..4]);
        let vkey = witness.verifier_key();
        assert_eq!(WitnessKey::from_verifier_key(&vkey), Ok(witness.clone()));
        assert!(WitnessKey::from_verifier_key(&vkey.replacen("+", "+0", 1)).is_err());

        let text = b"issuing-ca\n5\nAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=\n";
        let t = 1_796_665_723u64;
        let message = b"cosignature/v1\ntime 1796665723\n"
            .iter()
            .chain(text)
            .copied();
        let signature = pair.sign(&message.collect::<Vec<u8>>());
        let mut raw = witness.key_id().to_be_bytes().to_vec();
        raw.extend_from_slice(&t.to_be_bytes());
        raw.extend_from_slice(signature.as_ref());
        let line = format!("\u{2014} witness.example/w1 {}\n", STANDARD.encode(&raw));
        assert_eq!(witness.verify_line(&line, text), Ok(t));
        assert_eq!(
            witness.verify_line(&line, b"issuing-ca\n6\nAAAA\n"),
            Err(WitnessError::BadSignature)
        );
        assert!(
            witness
                .verify_line(&line.replace("w1", "w2"), text)
                .is_err()
        );

        let body = add_checkpoint_body(3, &[[1; 32]], b"note\n");
        assert_eq!(
            String::from_utf8(body).expect("utf-8"),
            format!("old 3\n{}\n\nnote\n", STANDARD.encode([1u8; 32]))
        );
        assert_eq!(
            note_text("a\n1\nr\n\n\u{2014} s x\n".as_bytes()),
            Some(b"a\n1\nr\n".as_slice())
        );
    }
}
