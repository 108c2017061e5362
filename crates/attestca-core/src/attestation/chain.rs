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
//!
//! The pool is chosen by the requester, so the search is bounded by construction, as mature
//! path builders bound theirs (Go's crypto/x509, RFC 4158):
//! - the pool holds at most [`MAX_POOL_CERTIFICATES`] certificates;
//! - a candidate is skipped when a certificate with the same subject and key is already in the
//!   path (a loop in all but name), so certificates under two names that issue each other
//!   cannot make paths longer than two;
//! - candidates whose subject key identifier matches the child's authority key identifier are
//!   tried first;
//! - a certificate found to lead nowhere at some depth is not tried again at that depth or
//!   deeper (deeper only adds constraints), so each certificate is expanded at most once per
//!   depth: the search is polynomial in the pool size;
//! - every signature check is memoised for the request and counted against its
//!   [`VerificationBudget`](super::VerificationBudget); past the budget the request is refused
//!   with `attestation.too_complex`.

use std::time::SystemTime;

use der::Encode;
use sha2::{Digest, Sha256};
use x509_cert::ext::pkix::{AuthorityKeyIdentifier, BasicConstraints, SubjectKeyIdentifier};

use super::{
    AttestationError, EvidenceCertificate, MAX_POOL_CERTIFICATES, VerificationBudget, too_complex,
};
use crate::reason::Reason;

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
    fn key(issuer_spki: &[u8], child_der: &[u8]) -> [u8; 32] {
        let mut hash = Sha256::new();
        hash.update((issuer_spki.len() as u64).to_be_bytes());
        hash.update(issuer_spki);
        hash.update(child_der);
        hash.finalize().into()
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
            AttestationError::malformed(
                Reason::AttestationMalformed,
                format!("basicConstraints: {e}"),
            )
        })?;
    match constraints {
        Some((_, bc)) if bc.ca => {
            // pathLen counts the intermediates below this certificate, excluding the leaf.
            if let Some(limit) = bc.path_len_constraint
                && depth - 1 > usize::from(limit)
            {
                return Err(AttestationError::refused(
                    Reason::AttestationChainInvalid,
                    format!("{} exceeds its pathLenConstraint", subject(cert)),
                ));
            }
            Ok(())
        }
        None if depth == 1 && options.tolerate_missing_basic_constraints_above_leaf => Ok(()),
        _ => Err(AttestationError::refused(
            Reason::AttestationChainInvalid,
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

/// SHA-256 of a certificate's SubjectPublicKeyInfo DER (a key's identity in memo keys).
pub fn spki_sha256(cert: &EvidenceCertificate) -> [u8; 32] {
    let spki = cert
        .tbs_certificate()
        .subject_public_key_info()
        .to_der()
        .unwrap_or_default();
    Sha256::digest(spki).into()
}

/// A certificate of the search, with what the search compares computed once.
struct Node<'c> {
    cert: &'c EvidenceCertificate,
    /// The certificate as it was signed (the `Raw` profile re-encodes nothing).
    der: Vec<u8>,
    der_sha256: [u8; 32],
    spki_sha256: [u8; 32],
    self_signed: bool,
    key_identifier: Option<Vec<u8>>,
    authority_key_identifier: Option<Vec<u8>>,
}

impl<'c> Node<'c> {
    fn new(cert: &'c EvidenceCertificate) -> Self {
        let tbs = cert.tbs_certificate();
        let der = cert.to_der().unwrap_or_default();
        Self {
            der_sha256: Sha256::digest(&der).into(),
            spki_sha256: spki_sha256(cert),
            der,
            self_signed: tbs.subject() == tbs.issuer(),
            key_identifier: tbs
                .get_extension::<SubjectKeyIdentifier>()
                .ok()
                .flatten()
                .map(|(_, ski)| ski.0.as_bytes().to_vec()),
            authority_key_identifier: tbs
                .get_extension::<AuthorityKeyIdentifier>()
                .ok()
                .flatten()
                .and_then(|(_, aki)| aki.key_identifier.map(|k| k.as_bytes().to_vec())),
            cert,
        }
    }

    /// Same subject and same key: the same CA as far as a path is concerned.
    fn same_ca(&self, other: &Node<'_>) -> bool {
        self.spki_sha256 == other.spki_sha256
            && self.cert.tbs_certificate().subject() == other.cert.tbs_certificate().subject()
    }

    /// 0 when this certificate's key identifier is the one `child` names as its authority's,
    /// 1 when either is absent, 2 when they differ: the order candidates are tried in.
    fn key_id_rank(&self, child: &Node<'_>) -> u8 {
        match (&self.key_identifier, &child.authority_key_identifier) {
            (Some(ski), Some(aki)) if ski == aki => 0,
            (Some(_), Some(_)) => 2,
            _ => 1,
        }
    }
}

/// One path search: the leaf and pool as nodes, the roots, and what failed at which depth.
struct Search<'c, 'b> {
    /// The leaf at 0, then the pool without self-signed certificates and copies of the leaf.
    nodes: Vec<Node<'c>>,
    /// Configured roots, taken as they are: only a root named as an issuer costs any encoding
    /// or hashing (see [`Search::root_issued`]), so a vendor's other roots cost nothing.
    roots: &'c [EvidenceCertificate],
    at: SystemTime,
    options: PathOptions,
    budget: &'b VerificationBudget,
    /// `dead_from[i]`: the shallowest depth at which node i was found to lead to no root.
    dead_from: Vec<usize>,
    last_error: AttestationError,
}

/// Builds and checks a path from `leaf` through `pool` to one of `roots`, all valid at `at`,
/// spending signature checks from `budget`.
pub fn build(
    leaf: &EvidenceCertificate,
    pool: &[EvidenceCertificate],
    roots: &[EvidenceCertificate],
    at: SystemTime,
    options: PathOptions,
    budget: &VerificationBudget,
) -> Result<VerifiedPath, AttestationError> {
    if pool.len() > MAX_POOL_CERTIFICATES {
        return Err(too_complex(format!(
            "the evidence brings {} certificates; at most {MAX_POOL_CERTIFICATES} are accepted",
            pool.len()
        )));
    }
    let leaf = Node::new(leaf);
    let mut nodes = vec![];
    for cert in pool {
        let node = Node::new(cert);
        // A self-signed certificate the evidence brings along is a root nobody configured: it
        // cannot lead to a trusted one, so it is not an intermediate (and not a chain error).
        if !node.self_signed && node.der_sha256 != leaf.der_sha256 {
            nodes.push(node);
        }
    }
    nodes.insert(0, leaf);
    let mut search = Search {
        dead_from: vec![usize::MAX; nodes.len()],
        last_error: AttestationError::refused(
            Reason::AttestationUntrustedRoot,
            format!(
                "{} does not chain to a trusted vendor root",
                subject(nodes[0].cert)
            ),
        ),
        nodes,
        roots,
        at,
        options,
        budget,
    };
    let mut path = vec![0];
    match search.extend(&mut path)? {
        Some(found) => Ok(found),
        None => Err(search.last_error),
    }
}

impl Search<'_, '_> {
    /// Extends `path` (node indices, leaf first) to a root. `Ok(None)`: no path from here;
    /// `Err`: the request's budget is spent.
    fn extend(&mut self, path: &mut Vec<usize>) -> Result<Option<VerifiedPath>, AttestationError> {
        let Some(&current) = path.last() else {
            return Ok(None);
        };
        let cert = self.nodes[current].cert;
        if !valid_at(cert, self.at) {
            self.last_error = AttestationError::refused(
                Reason::AttestationExpired,
                format!("{} is not valid at the verification time", subject(cert)),
            );
            return Ok(None);
        }
        let depth = path.len();
        // A root anchors the path when it issued the current certificate, or is the certificate.
        for (i, root) in self.roots.iter().enumerate() {
            let is_root = root == cert;
            if !is_root && !self.root_issued(root, current)? {
                continue;
            }
            if !valid_at(root, self.at) {
                self.last_error = AttestationError::refused(
                    Reason::AttestationExpired,
                    format!(
                        "vendor root {} is not valid at the verification time",
                        subject(root)
                    ),
                );
                continue;
            }
            let mut certificates: Vec<EvidenceCertificate> =
                path.iter().map(|&n| self.nodes[n].cert.clone()).collect();
            if !is_root {
                certificates.push(root.clone());
            }
            return Ok(Some(VerifiedPath {
                certificates,
                root_index: i,
            }));
        }
        if depth >= MAX_DEPTH {
            return Ok(None);
        }
        for candidate in self.candidates(path, depth) {
            if !self.issued(candidate, current)? {
                continue;
            }
            if let Err(e) = may_issue(self.nodes[candidate].cert, depth, self.options) {
                self.last_error = e;
                continue;
            }
            path.push(candidate);
            let found = self.extend(path)?;
            path.pop();
            if found.is_some() {
                return Ok(found);
            }
            let dead = &mut self.dead_from[candidate];
            *dead = (*dead).min(depth + 1);
        }
        Ok(None)
    }

    /// Pool certificates that may issue the last certificate of `path` at `depth + 1`: named
    /// as its issuer, not already in the path under the same subject and key, not already
    /// found to lead nowhere at that depth; key-identifier matches first.
    fn candidates(&self, path: &[usize], depth: usize) -> Vec<usize> {
        let child = &self.nodes[path[depth - 1]];
        let issuer = child.cert.tbs_certificate().issuer();
        let mut found: Vec<usize> = (1..self.nodes.len())
            .filter(|&n| {
                let node = &self.nodes[n];
                self.dead_from[n] > depth + 1
                    && node.cert.tbs_certificate().subject() == issuer
                    && !path.iter().any(|&p| self.nodes[p].same_ca(node))
            })
            .collect();
        found.sort_by_key(|&n| self.nodes[n].key_id_rank(child));
        found
    }

    /// Whether pool node `issuer` signed node `child` (names already match).
    fn issued(&self, issuer: usize, child: usize) -> Result<bool, AttestationError> {
        let (issuer, child) = (&self.nodes[issuer], &self.nodes[child]);
        self.budget
            .check_link(issuer.spki_sha256, child.der_sha256, || {
                crate::verify::issued_by(&child.der, issuer.cert)
            })
    }

    /// Whether `root` signed node `child`; successes are remembered across requests
    /// ([`VERIFIED_LINKS`]) and cost no budget the second time.
    fn root_issued(
        &self,
        root: &EvidenceCertificate,
        child: usize,
    ) -> Result<bool, AttestationError> {
        let child = &self.nodes[child];
        if root.tbs_certificate().subject() != child.cert.tbs_certificate().issuer() {
            return Ok(false);
        }
        let spki = root
            .tbs_certificate()
            .subject_public_key_info()
            .to_der()
            .unwrap_or_default();
        let key = VerifiedLinks::key(&spki, &child.der);
        if VERIFIED_LINKS.contains(&key) {
            return Ok(true);
        }
        let verified =
            self.budget
                .check_link(Sha256::digest(&spki).into(), child.der_sha256, || {
                    crate::verify::issued_by(&child.der, root)
                })?;
        if verified {
            VERIFIED_LINKS.insert(key);
        }
        Ok(verified)
    }
}

#[cfg(test)]
mod tests {
    use der::Decode;
    use x509_cert::ext::pkix::KeyUsages;

    use super::*;
    use crate::issuance::extensions as ext;
    use crate::issuance::software_ca::{SoftwareCa, name, new_key};
    use crate::signer::Signer;

    /// [`build`] with a fresh request budget.
    fn build_fresh(
        leaf: &EvidenceCertificate,
        pool: &[EvidenceCertificate],
        roots: &[EvidenceCertificate],
        at: SystemTime,
        options: PathOptions,
    ) -> Result<VerifiedPath, AttestationError> {
        build(
            leaf,
            pool,
            roots,
            at,
            options,
            &VerificationBudget::per_request(),
        )
    }

    fn der_of(c: &EvidenceCertificate) -> Vec<u8> {
        c.to_der().expect("encode")
    }

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
        let strict = build_fresh(
            &leaf,
            std::slice::from_ref(&issuer),
            std::slice::from_ref(&root),
            now,
            PathOptions::default(),
        );
        assert_eq!(
            strict.expect_err("strict").code,
            Reason::AttestationChainInvalid
        );
        let tolerant = PathOptions {
            tolerate_missing_basic_constraints_above_leaf: true,
        };
        let path = build_fresh(&leaf, &[issuer], &[root], now, tolerant)
            .expect("tolerated directly above the leaf");
        assert_eq!(path.certificates.len(), 3);
    }

    #[test]
    fn a_remembered_root_link_does_not_vouch_for_a_tampered_intermediate() {
        let now = SystemTime::now();
        let (root, issuer, leaf) = path_with(true);
        for _ in 0..2 {
            build_fresh(
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
            build_fresh(
                &leaf,
                std::slice::from_ref(&tampered),
                std::slice::from_ref(&root),
                now,
                PathOptions::default()
            )
            .expect_err("a bad signature")
            .code,
            Reason::AttestationUntrustedRoot
        );
    }

    #[test]
    fn a_marked_ca_chains_and_time_and_roots_are_checked() {
        let now = SystemTime::now();
        let (root, issuer, leaf) = path_with(true);
        let path = build_fresh(
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
            build_fresh(
                &leaf,
                std::slice::from_ref(&issuer),
                std::slice::from_ref(&root),
                later,
                PathOptions::default()
            )
            .expect_err("expired")
            .code,
            Reason::AttestationExpired
        );
        let (other_root, _, _) = path_with(true);
        assert_eq!(
            build_fresh(
                &leaf,
                std::slice::from_ref(&issuer),
                &[other_root],
                now,
                PathOptions::default()
            )
            .expect_err("untrusted")
            .code,
            Reason::AttestationUntrustedRoot
        );
        assert_eq!(
            build_fresh(&leaf, &[], &[root], now, PathOptions::default())
                .expect_err("no intermediate")
                .code,
            Reason::AttestationUntrustedRoot
        );
    }

    /// Certificates under two names that issue each other, all for and signed by one key, and
    /// a leaf under one of the names: the pool that made the unbounded search do n⁴ checks.
    fn looping_pool(n: usize) -> (EvidenceCertificate, Vec<EvidenceCertificate>) {
        let seed = SoftwareCa::self_signed("CN=Loop Seed", 1).expect("seed");
        let (key, pkcs8) = new_key().expect("key");
        let named = |subject: &str| {
            let der = seed
                .issue_ca(subject, key.public_key(), 1, None)
                .expect("loop CA");
            SoftwareCa::from_certificate_and_key(der, pkcs8.clone()).expect("loop CA")
        };
        let (a, b) = (named("CN=Loop A"), named("CN=Loop B"));
        let pool = (0..n)
            .map(|i| {
                let (issuer, subject) = if i.is_multiple_of(2) {
                    (&b, "CN=Loop A")
                } else {
                    (&a, "CN=Loop B")
                };
                cert(
                    &issuer
                        .issue_ca(subject, key.public_key(), 1, None)
                        .expect("pool"),
                )
            })
            .collect();
        let (leaf_key, _) = new_key().expect("key");
        let leaf = a
            .issue(
                name("CN=Leaf").expect("name"),
                leaf_key.public_key(),
                3600,
                vec![],
            )
            .expect("leaf");
        (cert(&leaf), pool)
    }

    #[test]
    fn a_looping_pool_is_searched_with_few_signature_checks() {
        let (root, _, _) = path_with(true);
        let (leaf, pool) = looping_pool(MAX_POOL_CERTIFICATES);
        let budget = VerificationBudget::per_request();
        let refused = build(
            &leaf,
            &pool,
            std::slice::from_ref(&root),
            SystemTime::now(),
            PathOptions::default(),
            &budget,
        )
        .expect_err("no path to the root");
        assert_eq!(refused.code, Reason::AttestationUntrustedRoot);
        // One check per (signer key, certificate) link, and a certificate whose subject and key
        // are already in the path is no candidate: the leaf and the certificates under one name.
        assert!(
            budget.checks_made() <= MAX_POOL_CERTIFICATES as u32 / 2 + 1,
            "{} checks",
            budget.checks_made()
        );
    }

    #[test]
    fn past_the_pool_cap_or_the_budget_the_evidence_is_too_complex() {
        let (root, issuer, leaf) = path_with(true);
        let (_, pool) = looping_pool(MAX_POOL_CERTIFICATES + 1);
        assert_eq!(
            build_fresh(
                &leaf,
                &pool,
                std::slice::from_ref(&root),
                SystemTime::now(),
                PathOptions::default()
            )
            .expect_err("too many certificates")
            .code,
            crate::attestation::TOO_COMPLEX
        );
        // A genuine two-link path needs two checks: with one, the request is refused, and
        // says why.
        let budget = VerificationBudget::new(1);
        let refused = build(
            &leaf,
            std::slice::from_ref(&issuer),
            std::slice::from_ref(&root),
            SystemTime::now(),
            PathOptions::default(),
            &budget,
        )
        .expect_err("over budget");
        assert_eq!(refused.code, crate::attestation::TOO_COMPLEX);
        assert!(budget.exhausted());
    }
}
