//! Stateless freshness nonces: the CA can tell a nonce it issued, to whom and until when, from
//! the nonce alone.
//!
//! Why: a stored nonce costs the database three statements per enrollment (the row written
//! when the rig asks for it, read before the evidence is verified, and spent with an UPDATE
//! in its own transaction) — a fifth of PostgreSQL's work per attested enrollment
//! (docs/performance.md). A stateless nonce carries its expiry and two truncated
//! HMAC-SHA-256 tags under a key the instances share through the database:
//!
//! ```text
//! version (1) ‖ expires_at (4, big-endian Unix seconds) ‖ random (L − 21) ‖ issuer tag (8) ‖ owner tag (8)
//! issuer tag = HMAC(k, "attestca nonce issuer" ‖ version ‖ expires_at ‖ random)[..8]
//! owner tag  = HMAC(k, "attestca nonce owner" ‖ version ‖ expires_at ‖ random ‖ issuer tag
//!                       ‖ requester)[..8]
//! ```
//!
//! Two tags, not one, so that the refusals stay what they were with stored nonces: a nonce
//! whose issuer tag does not verify is not this CA's (`attestation.nonce_unknown`), one whose
//! owner tag does not is another rig's (`attestation.nonce_foreign`). Like a stored nonce, it
//! is bound to the requester and not to the profile it was asked under: rigs ask for a nonce
//! once and spend it on whichever profile the board needs, and the profile's own policy
//! decides the rest.
//! Forging either tag is a 2^-64 guess per request, and requests are budgeted per rig.
//!
//! What the nonce cannot carry is whether it has been used. Single use is enforced where the
//! certificate is committed: the certificate row records the nonce under a unique index, so a
//! second certificate for the same nonce cannot be committed, on any instance sharing the
//! database. Nonces shorter than [`MIN_STATELESS_LEN`] (a rig may ask for 8 to 64 bytes) are
//! stored as before; [`NonceKey::check`] answers `None` for anything it did not mint, and the
//! server then looks the nonce up in its table.

use aws_lc_rs::hmac;

use crate::policy::attestation::NonceCheck;

/// The shortest nonce minted statelessly: the 21 bytes of version, expiry and tags plus 8
/// random bytes.
pub const MIN_STATELESS_LEN: usize = 29;

const VERSION: u8 = 0xa1;
const TAG_LEN: usize = 8;
const FIXED_LEN: usize = 1 + 4 + 2 * TAG_LEN;

/// The key stateless nonces are minted and checked with, shared by every instance on one
/// database.
#[derive(Clone)]
pub struct NonceKey {
    key: hmac::Key,
}

impl std::fmt::Debug for NonceKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("NonceKey(..)")
    }
}

/// Why a nonce could not be minted.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum NonceError {
    #[error("a stateless nonce is {MIN_STATELESS_LEN} to 64 bytes long")]
    Length,
    #[error("the expiry does not fit a stateless nonce")]
    Expiry,
    #[error("the random generator failed")]
    Random,
}

impl NonceKey {
    /// A key from the shared secret (32 random bytes, kept by the store).
    pub fn new(secret: &[u8]) -> Self {
        Self {
            key: hmac::Key::new(hmac::HMAC_SHA256, secret),
        }
    }

    /// Mints a nonce of `length` bytes for `requester`, valid until `expires_at`.
    pub fn mint(
        &self,
        length: usize,
        expires_at: i64,
        requester: &str,
    ) -> Result<Vec<u8>, NonceError> {
        if !(MIN_STATELESS_LEN..=64).contains(&length) {
            return Err(NonceError::Length);
        }
        let expires = u32::try_from(expires_at).map_err(|_| NonceError::Expiry)?;
        let mut nonce = Vec::with_capacity(length);
        nonce.push(VERSION);
        nonce.extend_from_slice(&expires.to_be_bytes());
        let mut random = vec![0u8; length - FIXED_LEN];
        aws_lc_rs::rand::fill(&mut random).map_err(|_| NonceError::Random)?;
        nonce.extend_from_slice(&random);
        let issuer = self.issuer_tag(&nonce);
        nonce.extend_from_slice(&issuer);
        let owner = self.owner_tag(&nonce, requester);
        nonce.extend_from_slice(&owner);
        Ok(nonce)
    }

    /// What `nonce` is for `requester` at `now`: `None` if this key did not mint it (look it
    /// up among the stored nonces), else [`NonceCheck::Live`], [`NonceCheck::Foreign`] or
    /// [`NonceCheck::Expired`]. Whether it was used is for the certificate's commit to find
    /// out.
    pub fn check(&self, nonce: &[u8], requester: &str, now: i64) -> Option<NonceCheck> {
        if !(MIN_STATELESS_LEN..=64).contains(&nonce.len()) || nonce[0] != VERSION {
            return None;
        }
        let (signed, owner) = nonce.split_at(nonce.len() - TAG_LEN);
        let (body, issuer) = signed.split_at(signed.len() - TAG_LEN);
        if !tags_equal(&self.issuer_tag(body), issuer) {
            return None;
        }
        if !tags_equal(&self.owner_tag(signed, requester), owner) {
            return Some(NonceCheck::Foreign);
        }
        let expires_at = u32::from_be_bytes([body[1], body[2], body[3], body[4]]);
        Some(if i64::from(expires_at) < now {
            NonceCheck::Expired
        } else {
            NonceCheck::Live
        })
    }

    fn issuer_tag(&self, body: &[u8]) -> [u8; TAG_LEN] {
        let mut mac = hmac::Context::with_key(&self.key);
        mac.update(b"attestca nonce issuer");
        mac.update(body);
        truncate(mac.sign())
    }

    fn owner_tag(&self, signed: &[u8], requester: &str) -> [u8; TAG_LEN] {
        let mut mac = hmac::Context::with_key(&self.key);
        mac.update(b"attestca nonce owner");
        mac.update(signed);
        mac.update(requester.as_bytes());
        truncate(mac.sign())
    }
}

fn truncate(tag: hmac::Tag) -> [u8; TAG_LEN] {
    let mut out = [0u8; TAG_LEN];
    out.copy_from_slice(&tag.as_ref()[..TAG_LEN]);
    out
}

/// Compares tags in time independent of where they differ.
fn tags_equal(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key() -> NonceKey {
        NonceKey::new(&[7u8; 32])
    }

    #[test]
    fn a_minted_nonce_is_live_for_its_owner_until_it_expires() {
        let nonce = key().mint(32, 1_000, "tls:rig-a").unwrap();
        assert_eq!(nonce.len(), 32);
        assert_eq!(
            key().check(&nonce, "tls:rig-a", 1_000),
            Some(NonceCheck::Live)
        );
        assert_eq!(
            key().check(&nonce, "tls:rig-a", 1_001),
            Some(NonceCheck::Expired)
        );
    }

    #[test]
    fn another_requester_finds_it_foreign() {
        let nonce = key().mint(29, 1_000, "tls:rig-a").unwrap();
        assert_eq!(
            key().check(&nonce, "tls:rig-b", 10),
            Some(NonceCheck::Foreign)
        );
    }

    #[test]
    fn anything_else_is_not_ours_and_goes_to_the_store() {
        let nonce = key().mint(64, 1_000, "tls:rig-a").unwrap();
        // Another key, any flipped bit of the signed part, short or foreign-format nonces.
        assert_eq!(
            NonceKey::new(&[8u8; 32]).check(&nonce, "tls:rig-a", 10),
            None
        );
        for i in 0..nonce.len() - TAG_LEN {
            let mut edited = nonce.clone();
            edited[i] ^= 0x01;
            assert_eq!(key().check(&edited, "tls:rig-a", 10), None, "byte {i}");
        }
        assert_eq!(key().check(&[0, 0xff, 0x55, 0xaa], "x", 10), None);
        assert_eq!(key().check(&nonce[..28], "x", 10), None);
        // A flipped bit of the owner tag: ours, but not this rig's.
        let mut owner = nonce;
        owner[63] ^= 0x80;
        assert_eq!(
            key().check(&owner, "tls:rig-a", 10),
            Some(NonceCheck::Foreign)
        );
    }

    #[test]
    fn lengths_and_expiries_outside_the_format_are_refused() {
        assert_eq!(key().mint(28, 1, "r"), Err(NonceError::Length));
        assert_eq!(key().mint(65, 1, "r"), Err(NonceError::Length));
        assert_eq!(key().mint(32, -1, "r"), Err(NonceError::Expiry));
        assert_eq!(key().mint(32, 1 << 40, "r"), Err(NonceError::Expiry));
    }

    #[test]
    fn two_nonces_differ() {
        let a = key().mint(29, 1_000, "r").unwrap();
        let b = key().mint(29, 1_000, "r").unwrap();
        assert_ne!(a, b);
    }
}
