//! TPM2_MakeCredential in software: the challenge an attestation CA sends a TPM to prove that
//! an attestation key lives in the same TPM as an endorsement key (TPM 2.0 Library, Part 1,
//! "Credential Protection"; Part 3, TPM2_MakeCredential / TPM2_ActivateCredential).
//!
//! The CA encrypts a secret so that only the TPM holding the EK's private key can recover it,
//! and only while the key named `object_name` is loaded beside it: the seed is encrypted to
//! the EK, the secret is encrypted and MACed under keys derived from the seed and the AK's
//! name. A rig that returns the secret has proved both keys are in that TPM.
//!
//! Only RSA endorsement keys with the TCG default template (RSA 2048, nameAlg SHA-256,
//! AES-128-CFB — TCG EK Credential Profile, template L-1) are supported: every TPM 2.0 has one
//! and its certificate is the one manufacturers provision.

use aws_lc_rs::cipher::{AES_128, EncryptingKey, EncryptionContext, UnboundCipherKey};
use aws_lc_rs::hmac;
use aws_lc_rs::iv::FixedLength;
use aws_lc_rs::rsa::{OAEP_SHA256_MGF1SHA256, OaepPublicEncryptingKey, PublicEncryptingKey};
use der::Encode;
use x509_cert::SubjectPublicKeyInfo;

/// The digest size of the EK's nameAlg (SHA-256): the seed's size and the HMAC key's.
const SEED_BYTES: usize = 32;
/// AES-128 for the EK template's symmetric parameters.
const SYMMETRIC_KEY_BITS: u32 = 128;

/// Why a credential could not be made.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum CredentialError {
    #[error("the endorsement key is not an RSA key this CA can encrypt to: {0}")]
    EndorsementKey(String),
    #[error("the credential must be 1 to 32 bytes (got {0})")]
    CredentialSize(usize),
    #[error("the object name must be a SHA-256 TPM name (34 bytes, 000b…)")]
    ObjectName,
    #[error("the random generator or a cipher failed")]
    Crypto,
}

/// The two halves of a credential challenge, as TPM2_ActivateCredential takes them.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MadeCredential {
    /// TPM2B_ID_OBJECT's buffer: TPM2B_DIGEST(integrityHMAC) ‖ encIdentity.
    pub credential_blob: Vec<u8>,
    /// TPM2B_ENCRYPTED_SECRET's buffer: the seed, RSA-OAEP encrypted to the EK.
    pub encrypted_secret: Vec<u8>,
}

/// Makes a credential: `credential` protected for the TPM holding `endorsement_key` (the EK
/// certificate's key), to be released only to the object named `object_name` (the AK's
/// name, nameAlg ‖ H(TPMT_PUBLIC)).
pub fn make_credential(
    endorsement_key: &SubjectPublicKeyInfo,
    object_name: &[u8],
    credential: &[u8],
) -> Result<MadeCredential, CredentialError> {
    let mut seed = [0u8; SEED_BYTES];
    aws_lc_rs::rand::fill(&mut seed).map_err(|_| CredentialError::Crypto)?;
    make_credential_with_seed(endorsement_key, object_name, credential, &seed)
}

/// [`make_credential`] with a given seed (the deterministic part, for tests).
fn make_credential_with_seed(
    endorsement_key: &SubjectPublicKeyInfo,
    object_name: &[u8],
    credential: &[u8],
    seed: &[u8; SEED_BYTES],
) -> Result<MadeCredential, CredentialError> {
    if credential.is_empty() || credential.len() > SEED_BYTES {
        return Err(CredentialError::CredentialSize(credential.len()));
    }
    if object_name.len() != 2 + SEED_BYTES || object_name[..2] != [0x00, 0x0b] {
        return Err(CredentialError::ObjectName);
    }
    let encrypted_secret = encrypt_seed(endorsement_key, seed)?;

    // encIdentity = AES-128-CFB(KDFa(seed, "STORAGE", name), IV 0, TPM2B(credential)).
    let symmetric = kdf_a(seed, b"STORAGE", object_name, &[], SYMMETRIC_KEY_BITS);
    let mut enc_identity = tpm2b(credential);
    let key = UnboundCipherKey::new(&AES_128, &symmetric).map_err(|_| CredentialError::Crypto)?;
    EncryptingKey::cfb128(key)
        .and_then(|key| {
            key.less_safe_encrypt(
                &mut enc_identity,
                EncryptionContext::Iv128(FixedLength::from([0u8; 16])),
            )
        })
        .map_err(|_| CredentialError::Crypto)?;

    // integrityHMAC = HMAC(KDFa(seed, "INTEGRITY"), encIdentity ‖ name).
    let integrity_key = kdf_a(seed, b"INTEGRITY", &[], &[], 8 * SEED_BYTES as u32);
    let mut mac = hmac::Context::with_key(&hmac::Key::new(hmac::HMAC_SHA256, &integrity_key));
    mac.update(&enc_identity);
    mac.update(object_name);
    let integrity = mac.sign();

    let mut credential_blob = tpm2b(integrity.as_ref());
    credential_blob.extend(enc_identity);
    Ok(MadeCredential {
        credential_blob,
        encrypted_secret,
    })
}

/// RSA-OAEP (SHA-256) of the seed to the EK, with the label "IDENTITY" (NUL included), as
/// TPM2_ActivateCredential decrypts it.
fn encrypt_seed(
    endorsement_key: &SubjectPublicKeyInfo,
    seed: &[u8],
) -> Result<Vec<u8>, CredentialError> {
    let der = endorsement_key
        .to_der()
        .map_err(|e| CredentialError::EndorsementKey(e.to_string()))?;
    let key = PublicEncryptingKey::from_der(&der)
        .map_err(|e| CredentialError::EndorsementKey(e.to_string()))?;
    let key = OaepPublicEncryptingKey::new(key)
        .map_err(|_| CredentialError::EndorsementKey("OAEP".into()))?;
    let mut out = vec![0u8; key.ciphertext_size()];
    let written = key
        .encrypt(&OAEP_SHA256_MGF1SHA256, seed, &mut out, Some(b"IDENTITY\0"))
        .map_err(|_| CredentialError::Crypto)?
        .len();
    out.truncate(written);
    Ok(out)
}

/// KDFa with SHA-256 (TPM 2.0 Library, Part 1, 11.4.10.2): SP 800-108 counter mode over
/// HMAC, `label` followed by a NUL.
fn kdf_a(key: &[u8], label: &[u8], context_u: &[u8], context_v: &[u8], bits: u32) -> Vec<u8> {
    let key = hmac::Key::new(hmac::HMAC_SHA256, key);
    let bytes = bits.div_ceil(8) as usize;
    let mut out = Vec::with_capacity(bytes + SEED_BYTES);
    let mut counter: u32 = 0;
    while out.len() < bytes {
        counter += 1;
        let mut mac = hmac::Context::with_key(&key);
        mac.update(&counter.to_be_bytes());
        mac.update(label);
        mac.update(&[0]);
        mac.update(context_u);
        mac.update(context_v);
        mac.update(&bits.to_be_bytes());
        out.extend_from_slice(mac.sign().as_ref());
    }
    out.truncate(bytes);
    out
}

/// A TPM2B: big-endian u16 size, then the bytes (at most 64 KiB here by construction).
fn tpm2b(bytes: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(2 + bytes.len());
    out.extend((bytes.len() as u16).to_be_bytes());
    out.extend_from_slice(bytes);
    out
}

#[cfg(test)]
mod tests {
    use aws_lc_rs::cipher::{DecryptingKey, DecryptionContext};
    use aws_lc_rs::encoding::AsDer;
    use aws_lc_rs::rsa::{KeySize, OaepPrivateDecryptingKey, PrivateDecryptingKey};
    use der::Decode;

    use super::*;

    fn endorsement_key() -> (PrivateDecryptingKey, SubjectPublicKeyInfo) {
        let private = PrivateDecryptingKey::generate(KeySize::Rsa2048).expect("RSA key");
        let der = private.public_key().as_der().expect("SPKI");
        let spki = SubjectPublicKeyInfo::from_der(der.as_ref()).expect("SPKI");
        (private, spki)
    }

    fn name(byte: u8) -> Vec<u8> {
        let mut name = vec![0x00, 0x0b];
        name.extend([byte; 32]);
        name
    }

    /// What TPM2_ActivateCredential does with the EK's private key: the credential, or
    /// `None` when the integrity check fails.
    fn activate(
        ek: &PrivateDecryptingKey,
        object_name: &[u8],
        made: &MadeCredential,
    ) -> Option<Vec<u8>> {
        let oaep = OaepPrivateDecryptingKey::new(ek.clone()).expect("OAEP");
        let mut seed = vec![0u8; made.encrypted_secret.len()];
        let seed = oaep
            .decrypt(
                &OAEP_SHA256_MGF1SHA256,
                &made.encrypted_secret,
                &mut seed,
                Some(b"IDENTITY\0"),
            )
            .ok()?
            .to_vec();
        let size = usize::from(u16::from_be_bytes([
            made.credential_blob[0],
            made.credential_blob[1],
        ]));
        let (integrity, enc_identity) = made.credential_blob[2..].split_at(size);
        let key = kdf_a(&seed, b"INTEGRITY", &[], &[], 256);
        let mut mac = hmac::Context::with_key(&hmac::Key::new(hmac::HMAC_SHA256, &key));
        mac.update(enc_identity);
        mac.update(object_name);
        if mac.sign().as_ref() != integrity {
            return None;
        }
        let symmetric = kdf_a(&seed, b"STORAGE", object_name, &[], 128);
        let key = UnboundCipherKey::new(&AES_128, &symmetric).expect("key");
        let mut plain = enc_identity.to_vec();
        DecryptingKey::cfb128(key)
            .expect("cfb")
            .decrypt(
                &mut plain,
                DecryptionContext::Iv128(FixedLength::from([0u8; 16])),
            )
            .expect("decrypt");
        let size = usize::from(u16::from_be_bytes([plain[0], plain[1]]));
        Some(plain[2..2 + size].to_vec())
    }

    #[test]
    fn only_the_named_object_in_the_ek_tpm_recovers_the_credential() {
        let (ek, spki) = endorsement_key();
        let made = make_credential(&spki, &name(1), b"attestca challenge").expect("made");
        assert_eq!(made.encrypted_secret.len(), 256);
        assert_eq!(
            activate(&ek, &name(1), &made).as_deref(),
            Some(&b"attestca challenge"[..])
        );
        // Another AK's name fails the integrity check, as the TPM's does.
        assert_eq!(activate(&ek, &name(2), &made), None);
        // Another TPM's EK cannot recover the seed.
        let (other, _) = endorsement_key();
        assert_eq!(activate(&other, &name(1), &made), None);
        // Each challenge is fresh.
        let again = make_credential(&spki, &name(1), b"attestca challenge").expect("made");
        assert_ne!(again, made);
    }

    #[test]
    fn kdf_a_agrees_with_an_independent_implementation() {
        // Python's hmac/hashlib, counter mode as Part 1 11.4.10.2 writes it.
        assert_eq!(
            hex::encode(kdf_a(b"key", b"STORAGE", b"u", b"v", 384)),
            "fc3d2e8e86cfe1b9176c331f00433b3f32e06606788dc75ba8bbbf671532abe0\
             80efbf54a146cc42723a977544c4d5ee"
        );
        assert_eq!(
            hex::encode(kdf_a(b"key", b"INTEGRITY", &[], &[], 256)),
            "7cd6cf5ba3f4cc43bd54ef8ae30539c32832e6f0a87452dcb7fd605128b30ec5"
        );
    }

    #[test]
    fn bad_inputs_are_refused() {
        let (_, spki) = endorsement_key();
        assert_eq!(
            make_credential(&spki, &name(1), &[]),
            Err(CredentialError::CredentialSize(0))
        );
        assert_eq!(
            make_credential(&spki, &name(1), &[0; 33]),
            Err(CredentialError::CredentialSize(33))
        );
        assert_eq!(
            make_credential(&spki, &[0x00, 0x04, 1, 2], b"x"),
            Err(CredentialError::ObjectName)
        );
        let p256 = attestca_sim::device::DeviceKey::generate()
            .expect("key")
            .public_key()
            .expect("SPKI")
            .to_der()
            .expect("DER");
        let p256 = SubjectPublicKeyInfo::from_der(&p256).expect("SPKI");
        assert!(matches!(
            make_credential(&p256, &name(1), b"x"),
            Err(CredentialError::EndorsementKey(_))
        ));
    }
}
