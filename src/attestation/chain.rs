//! Certification paths for evidence: from a statement's certificate through the bundle's pool
//! to a vendor root, at the verification clock's time.
//!
//! webpki is built for TLS end entities (it refuses CA certificates as leaves and has no
//! clock-free mode for recorded evidence), so attestation paths are checked here: signature of
//! each link (aws-lc), issuer/subject names, validity at the given time, basicConstraints CA
//! and pathLenConstraint on every intermediate (with an opt-in tolerance for vendors whose old
//! attestation keys lack basicConstraints). As in RFC 5280 path validation, a configured root
//! is a trust anchor taken as given: its own extensions are not checked (AK-CA roots are often
//! X.509 v1 certificates without any, like the IETF TPM sample's).

use std::time::SystemTime;

use super::EvidenceCertificate;
use der::Encode;
use x509_cert::ext::pkix::BasicConstraints;

use super::AttestationError;

/// Longest path accepted (leaf + intermediates + root).
const MAX_DEPTH: usize = 6;

/// How strict to be about issuing certificates.
#[derive(Clone, Copy, Debug, Default)]
pub struct PathOptions {
    /// Accept an issuing certificate without basicConstraints directly above the leaf
    /// (YubiKey PIV slot-f9 certificates made before 2019).
    pub tolerate_missing_basic_constraints_above_leaf: bool,
}

/// A verified path, leaf first, ending in the root that anchored it.
#[derive(Clone, Debug)]
pub struct VerifiedPath {
    pub certificates: Vec<EvidenceCertificate>,
    /// Index into the `roots` slice given to [`build`].
    pub root_index: usize,
}

fn der_of(c: &EvidenceCertificate) -> Vec<u8> {
    c.to_der().unwrap_or_default()
}

/// Certificates a vendor root has been verified to have signed.
///
/// Every device of a vendor brings the same intermediate under the vendor's root (its
/// attestation CA, Microchip's signer, Yubico's intermediate), so without a memory every
/// enrollment re-verifies the same signature: one of the four P-256 verifications of an
/// attested enrollment was always the same one. A signature check is a pure function of the
/// issuer's public key and the certificate's bytes, so a hit on the hash of both is the same
/// answer. Only links from a configured root are remembered, and only successes; validity,
/// names and constraints are still checked on every path, and the per-device links below are
/// verified every time. A vendor whose device certificates hang directly off its root (some
/// TPM AK CAs) fills it with one-off entries: it is emptied when full, which costs one
/// re-verification per shared link.
struct VerifiedLinks {
    seen: std::sync::Mutex<std::collections::HashSet<[u8; 32]>>,
}

/// How many verified links are remembered before the memory is emptied.
const VERIFIED_LINKS_CAPACITY: usize = 4096;

static VERIFIED_LINKS: std::sync::LazyLock<VerifiedLinks> =
    std::sync::LazyLock::new(|| VerifiedLinks {
        seen: std::sync::Mutex::new(std::collections::HashSet::new()),
    });

impl VerifiedLinks {
    fn key(issuer: &EvidenceCertificate, child_der: &[u8]) -> Option<[u8; 32]> {
        use sha2::{Digest, Sha256};
        let spki = issuer
            .tbs_certificate()
            .subject_public_key_info()
            .to_der()
            .ok()?;
        let mut hash = Sha256::new();
        hash.update((spki.len() as u64).to_be_bytes());
        hash.update(&spki);
        hash.update(child_der);
        Some(hash.finalize().into())
    }

    fn contains(&self, key: &[u8; 32]) -> bool {
        self.seen.lock().is_ok_and(|seen| seen.contains(key))
    }

    fn insert(&self, key: [u8; 32]) {
        if let Ok(mut seen) = self.seen.lock() {
            if seen.len() >= VERIFIED_LINKS_CAPACITY {
                seen.clear();
            }
            seen.insert(key);
        }
    }
}

/// Whether `cert` is valid at `at`.
pub fn valid_at(cert: &EvidenceCertificate, at: SystemTime) -> bool {
    let validity = cert.tbs_certificate().validity();
    validity.not_before.to_system_time() <= at && at <= validity.not_after.to_system_time()
}

fn issues(issuer: &EvidenceCertificate, child: &EvidenceCertificate) -> bool {
    issuer.tbs_certificate().subject() == child.tbs_certificate().issuer()
        && crate::verify::issued_by(&der_of(child), issuer)
}

/// [`issues`] for a configured root, remembered in [`VERIFIED_LINKS`].
fn root_issues(root: &EvidenceCertificate, child: &EvidenceCertificate) -> bool {
    if root.tbs_certificate().subject() != child.tbs_certificate().issuer() {
        return false;
    }
    let child_der = der_of(child);
    let Some(key) = VerifiedLinks::key(root, &child_der) else {
        return false;
    };
    if VERIFIED_LINKS.contains(&key) {
        return true;
    }
    let verified = crate::verify::issued_by(&child_der, root);
    if verified {
        VERIFIED_LINKS.insert(key);
    }
    verified
}

/// Checks that `cert`, at `depth` above the leaf (1 = directly above), may issue.
fn may_issue(
    cert: &EvidenceCertificate,
    depth: usize,
    options: PathOptions,
) -> Result<(), AttestationError> {
    let constraints = cert
        .tbs_certificate()
        .get_extension::<BasicConstraints>()
        .map_err(|e| {
            AttestationError::malformed("attestation.malformed", format!("basicConstraints: {e}"))
        })?;
    match constraints {
        Some((_, bc)) if bc.ca => {
            // pathLen counts the intermediates below this certificate, excluding the leaf.
            if let Some(limit) = bc.path_len_constraint
                && depth - 1 > usize::from(limit)
            {
                return Err(AttestationError::refused(
                    "attestation.chain_invalid",
                    format!("{} exceeds its pathLenConstraint", subject(cert)),
                ));
            }
            Ok(())
        }
        None if depth == 1 && options.tolerate_missing_basic_constraints_above_leaf => Ok(()),
        _ => Err(AttestationError::refused(
            "attestation.chain_invalid",
            format!(
                "{} is not a CA certificate but issues one in the path",
                subject(cert)
            ),
        )),
    }
}

/// The subject of a certificate, for messages.
pub fn subject(cert: &EvidenceCertificate) -> String {
    cert.tbs_certificate().subject().to_string()
}

/// Builds and checks a path from `leaf` through `pool` to one of `roots`, all valid at `at`.
pub fn build(
    leaf: &EvidenceCertificate,
    pool: &[EvidenceCertificate],
    roots: &[EvidenceCertificate],
    at: SystemTime,
    options: PathOptions,
) -> Result<VerifiedPath, AttestationError> {
    let mut path = vec![leaf.clone()];
    let mut last_error = AttestationError::refused(
        "attestation.untrusted_root",
        format!("{} does not chain to a trusted vendor root", subject(leaf)),
    );
    if let Some(found) = extend(&mut path, pool, roots, at, options, &mut last_error) {
        return Ok(found);
    }
    Err(last_error)
}

fn extend(
    path: &mut Vec<EvidenceCertificate>,
    pool: &[EvidenceCertificate],
    roots: &[EvidenceCertificate],
    at: SystemTime,
    options: PathOptions,
    last_error: &mut AttestationError,
) -> Option<VerifiedPath> {
    let current = path.last()?.clone();
    if !valid_at(&current, at) {
        *last_error = AttestationError::refused(
            "attestation.expired",
            format!(
                "{} is not valid at the verification time",
                subject(&current)
            ),
        );
        return None;
    }
    let depth = path.len();
    // A root anchors the path when it issued the current certificate, or is the certificate.
    for (i, root) in roots.iter().enumerate() {
        let is_root = root == &current;
        if is_root || root_issues(root, &current) {
            if !valid_at(root, at) {
                *last_error = AttestationError::refused(
                    "attestation.expired",
                    format!(
                        "vendor root {} is not valid at the verification time",
                        subject(root)
                    ),
                );
                continue;
            }
            if !is_root {
                path.push(root.clone());
            }
            return Some(VerifiedPath {
                certificates: path.clone(),
                root_index: i,
            });
        }
    }
    if depth >= MAX_DEPTH {
        return None;
    }
    for candidate in pool {
        // A self-signed certificate the evidence brings along is a root nobody configured: it
        // cannot lead to a trusted one, so it is not an intermediate (and not a chain error).
        let self_signed =
            candidate.tbs_certificate().subject() == candidate.tbs_certificate().issuer();
        if self_signed || path.iter().any(|p| p == candidate) || !issues(candidate, &current) {
            continue;
        }
        if let Err(e) = may_issue(candidate, depth, options) {
            *last_error = e;
            continue;
        }
        path.push(candidate.clone());
        if let Some(found) = extend(path, pool, roots, at, options, last_error) {
            return Some(found);
        }
        path.pop();
    }
    None
}

#[cfg(test)]
mod tests {
    use der::Decode;
    use x509_cert::ext::pkix::KeyUsages;

    use super::*;
    use crate::issuance::extensions as ext;
    use crate::issuance::software_ca::{SoftwareCa, name, new_key};
    use crate::signer::Signer;

    fn cert(der: &[u8]) -> EvidenceCertificate {
        EvidenceCertificate::from_der(der).expect("certificate")
    }

    /// root → issuer (with or without basicConstraints) → leaf.
    fn path_with(
        issuer_is_marked_ca: bool,
    ) -> (
        EvidenceCertificate,
        EvidenceCertificate,
        EvidenceCertificate,
    ) {
        let root = SoftwareCa::self_signed("CN=Test Vendor Root", 1).expect("root");
        let (issuer_key, issuer_pkcs8) = new_key().expect("key");
        let extensions = if issuer_is_marked_ca {
            vec![ext::basic_constraints(true, Some(0)).expect("bc")]
        } else {
            Vec::new() // like pre-2019 YubiKey f9 certificates
        };
        let issuer_der = root
            .issue(
                name("CN=Attestation Key").expect("name"),
                issuer_key.public_key(),
                86_400,
                extensions,
            )
            .expect("issuer");
        let issuer = SoftwareCa::from_certificate_and_key(issuer_der.clone(), issuer_pkcs8)
            .expect("issuer ca");
        let (leaf_key, _) = new_key().expect("key");
        let leaf = issuer
            .issue(
                name("CN=Attested Key").expect("name"),
                leaf_key.public_key(),
                3600,
                vec![ext::key_usage(KeyUsages::DigitalSignature.into()).expect("ku")],
            )
            .expect("leaf");
        (cert(&root.der), cert(&issuer_der), cert(&leaf))
    }

    #[test]
    fn an_issuer_without_basic_constraints_is_refused_unless_tolerated() {
        let now = SystemTime::now();
        let (root, issuer, leaf) = path_with(false);
        let strict = build(
            &leaf,
            std::slice::from_ref(&issuer),
            std::slice::from_ref(&root),
            now,
            PathOptions::default(),
        );
        assert_eq!(
            strict.expect_err("strict").code,
            "attestation.chain_invalid"
        );
        let tolerant = PathOptions {
            tolerate_missing_basic_constraints_above_leaf: true,
        };
        let path = build(&leaf, &[issuer], &[root], now, tolerant)
            .expect("tolerated directly above the leaf");
        assert_eq!(path.certificates.len(), 3);
    }

    #[test]
    fn a_remembered_root_link_does_not_vouch_for_a_tampered_intermediate() {
        let now = SystemTime::now();
        let (root, issuer, leaf) = path_with(true);
        for _ in 0..2 {
            build(
                &leaf,
                std::slice::from_ref(&issuer),
                std::slice::from_ref(&root),
                now,
                PathOptions::default(),
            )
            .expect("the genuine path, verified and then remembered");
        }
        // The intermediate with one bit of its signature flipped: same names, same key, so it
        // still issued the leaf, but the root's signature over it no longer holds.
        let mut der = der_of(&issuer);
        let last = der.len() - 1;
        der[last] ^= 0x01;
        let tampered = cert(&der);
        assert_eq!(
            build(
                &leaf,
                std::slice::from_ref(&tampered),
                std::slice::from_ref(&root),
                now,
                PathOptions::default()
            )
            .expect_err("a bad signature")
            .code,
            "attestation.untrusted_root"
        );
    }

    #[test]
    fn a_marked_ca_chains_and_time_and_roots_are_checked() {
        let now = SystemTime::now();
        let (root, issuer, leaf) = path_with(true);
        let path = build(
            &leaf,
            std::slice::from_ref(&issuer),
            std::slice::from_ref(&root),
            now,
            PathOptions::default(),
        )
        .expect("path");
        assert_eq!(path.root_index, 0);
        let later = now + std::time::Duration::from_secs(2 * 86_400);
        assert_eq!(
            build(
                &leaf,
                std::slice::from_ref(&issuer),
                std::slice::from_ref(&root),
                later,
                PathOptions::default()
            )
            .expect_err("expired")
            .code,
            "attestation.expired"
        );
        let (other_root, _, _) = path_with(true);
        assert_eq!(
            build(
                &leaf,
                std::slice::from_ref(&issuer),
                &[other_root],
                now,
                PathOptions::default()
            )
            .expect_err("untrusted")
            .code,
            "attestation.untrusted_root"
        );
        assert_eq!(
            build(&leaf, &[], &[root], now, PathOptions::default())
                .expect_err("no intermediate")
                .code,
            "attestation.untrusted_root"
        );
    }
}
