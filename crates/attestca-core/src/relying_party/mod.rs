//! What a relying party checks before it trusts a device certificate: the question the cloud
//! service that onboards devices asks is "did attestca issue this certificate *after
//! attestation*, for which device, by which vendor and format, and is it still good?".
//!
//! [`verify_device`] answers with one [`DeviceCheck`] per question:
//! - `chain`: the certificate chains to the relying party's roots (rustls-webpki, client
//!   authentication usage, at the given time);
//! - `revocation`: good in a signed OCSP response, or absent from a signed, current CRL;
//! - `checkpoint`: the log's checkpoint carries the log key's signature;
//! - `inclusion`: the log's entry at the index the log names holds exactly this certificate,
//!   and an RFC 9162 inclusion proof, computed from the served tiles, reaches the checkpoint's
//!   root;
//! - `attestation`: the entry's attestation record says evidence was verified (format,
//!   vendor, device identity, evidence hash).
//!
//! Why the log and not the certificate: a certificate says what the CA signed, not why. The
//! log entry is the CA's public, append-only statement of why; a certificate that is not in
//! the log was issued outside it (see `docs/transparency.md`), and one whose entry says
//! "not attested" came from a profile that required no evidence.
//!
//! The network is the caller's ([`Fetch`]): this crate does no I/O.

mod revocation;

use std::collections::HashMap;

use der::{Decode, Encode};
use rustls_pki_types::{CertificateDer, UnixTime};
use serde::Serialize;
use x509_cert::Certificate;

use crate::serial::Serial;
use crate::transparency::checkpoint::{self, LogKey, VerifiedCheckpoint};
use crate::transparency::entry::{IssuanceEntry, leaf_hash};
use crate::transparency::tiles::{self, ProofRequest, TileKind};
use crate::transparency::witness::{self, WitnessKey};

/// The most entries a log may claim (2^40): the tree arithmetic stays far from overflow, and
/// no issuing CA comes near it.
pub const MAX_LOG_SIZE: u64 = 1 << 40;

/// The relying party's network: plain GETs and POSTs, as its HTTP client does them.
pub trait Fetch {
    /// The body of `url`; `Ok(None)` when the server answers 404 Not Found.
    fn get(&mut self, url: &str) -> Result<Option<Vec<u8>>, String>;
    /// The body of a POST of `body` to `url`.
    fn post(&mut self, url: &str, content_type: &str, body: &[u8]) -> Result<Vec<u8>, String>;
}

/// What the relying party trusts, configured out of band.
pub struct RelyingPartyTrust {
    /// Trust anchors (DER certificates): the CA's root.
    pub roots: Vec<Vec<u8>>,
    /// The log's checkpoint key (its `pki/log.vkey`).
    pub log_key: LogKey,
    /// Witnesses whose cosignature the checkpoint must carry (C2SP tlog-cosignature): a
    /// split view needs them all to lie.
    pub witnesses: Vec<WitnessKey>,
}

/// How to check revocation.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RevocationCheck {
    /// Not checked (reported as such).
    Skip,
    /// Ask an OCSP responder: this URL, or the certificate's authorityInfoAccess.
    Ocsp(Option<String>),
    /// Fetch a CRL: this URL, or the certificate's cRLDistributionPoints.
    Crl(Option<String>),
}

/// One certificate to check.
pub struct DeviceQuery<'a> {
    /// The device certificate (DER).
    pub certificate: &'a [u8],
    /// Intermediate certificates (DER), as the device presented them.
    pub chain: &'a [Vec<u8>],
    /// The log's prefix, e.g. `http://ca.example/log/issuing-ca/`.
    pub log_url: &'a str,
    pub revocation: RevocationCheck,
    /// Unix seconds to check validity at.
    pub now: u64,
    /// Accept a certificate whose log entry says no evidence was verified.
    pub allow_unattested: bool,
}

/// Which question a [`DeviceCheck`] answers.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum CheckKind {
    Chain,
    Revocation,
    Checkpoint,
    Inclusion,
    Attestation,
}

/// Why a check failed (a stable text code, as the CA's refusal reasons are).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub enum DeviceFinding {
    /// The certificate does not parse.
    #[serde(rename = "certificate.malformed")]
    Malformed,
    /// No path to the roots (unknown issuer, bad signature, expired, wrong usage).
    #[serde(rename = "chain.invalid")]
    ChainInvalid,
    #[serde(rename = "revocation.revoked")]
    Revoked,
    /// The responder does not know the certificate.
    #[serde(rename = "revocation.unknown")]
    RevocationUnknown,
    /// No answer could be had or trusted (no URL, network, bad signature, stale).
    #[serde(rename = "revocation.unavailable")]
    RevocationUnavailable,
    /// Revocation was not asked for.
    #[serde(rename = "revocation.not_checked")]
    RevocationNotChecked,
    /// The log or its checkpoint could not be fetched or verified.
    #[serde(rename = "log.checkpoint_invalid")]
    CheckpointInvalid,
    /// A required witness's cosignature is missing from the checkpoint or does not verify.
    #[serde(rename = "log.not_witnessed")]
    NotWitnessed,
    /// The log does not hold this certificate.
    #[serde(rename = "log.not_in_log")]
    NotInLog,
    /// The log names an entry past the checkpoint it serves: integrated after it was
    /// signed (a cached checkpoint, or one waiting for its cosignatures); retry.
    #[serde(rename = "log.not_yet_integrated")]
    NotYetIntegrated,
    /// The log's entry or proof does not show this certificate under the checkpoint.
    #[serde(rename = "log.inclusion_failed")]
    InclusionFailed,
    /// The entry says no evidence was verified (the profile required none).
    #[serde(rename = "attestation.not_attested")]
    NotAttested,
}

/// The attestation record of the certificate's log entry, as printed.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct LoggedAttestation {
    pub index: u64,
    pub logged_at: u64,
    pub attested: bool,
    pub operation: String,
    pub profile: String,
    pub requester: String,
    pub format: String,
    pub vendor: String,
    pub device_identity: String,
    /// Lower-case hex; empty when there was no evidence.
    pub evidence_sha256: String,
}

/// One answer.
#[derive(Clone, Debug, Serialize)]
pub struct DeviceCheck {
    pub check: CheckKind,
    pub ok: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<DeviceFinding>,
    pub detail: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub attestation: Option<LoggedAttestation>,
}

/// Every answer, in the order of [`CheckKind`].
#[derive(Clone, Debug)]
pub struct DeviceReport {
    pub checks: Vec<DeviceCheck>,
}

impl DeviceReport {
    /// Every check was made and passed: the device may be trusted.
    pub fn ok(&self) -> bool {
        const ALL: [CheckKind; 5] = [
            CheckKind::Chain,
            CheckKind::Revocation,
            CheckKind::Checkpoint,
            CheckKind::Inclusion,
            CheckKind::Attestation,
        ];
        ALL.iter()
            .all(|kind| self.checks.iter().any(|c| c.check == *kind))
            && self.checks.iter().all(|c| c.ok)
    }

    fn pass(&mut self, check: CheckKind, detail: String) {
        self.checks.push(DeviceCheck {
            check,
            ok: true,
            reason: None,
            detail,
            attestation: None,
        });
    }

    fn fail(&mut self, check: CheckKind, reason: DeviceFinding, detail: String) {
        self.checks.push(DeviceCheck {
            check,
            ok: false,
            reason: Some(reason),
            detail,
            attestation: None,
        });
    }
}

/// Checks `query` against `trust`, fetching what it needs through `net`.
pub fn verify_device(
    query: &DeviceQuery<'_>,
    trust: &RelyingPartyTrust,
    net: &mut dyn Fetch,
) -> DeviceReport {
    let mut report = DeviceReport { checks: Vec::new() };
    let certificate = match Certificate::from_der(query.certificate) {
        Ok(c) => c,
        Err(e) => {
            report.fail(
                CheckKind::Chain,
                DeviceFinding::Malformed,
                format!("the certificate does not parse: {e}"),
            );
            return report;
        }
    };
    let chain = Chain::new(query, trust);
    match chain.verify(None) {
        Ok(()) => report.pass(
            CheckKind::Chain,
            format!(
                "chains to a configured root for client authentication at {}",
                crate::time::rfc3339(query.now as i64)
            ),
        ),
        Err(e) => report.fail(CheckKind::Chain, DeviceFinding::ChainInvalid, e),
    }
    revocation::check(&mut report, query, &certificate, &chain, net);
    check_log(&mut report, query, trust, &certificate, net);
    report
}

/// The certificate, its presented intermediates and the trust anchors, as webpki takes them.
pub(crate) struct Chain<'a> {
    query: &'a DeviceQuery<'a>,
    trust: &'a RelyingPartyTrust,
}

impl<'a> Chain<'a> {
    fn new(query: &'a DeviceQuery<'a>, trust: &'a RelyingPartyTrust) -> Self {
        Self { query, trust }
    }

    /// A webpki path validation, with the CRLs (DER) given checked for the end entity.
    pub(crate) fn verify(&self, crls: Option<&[Vec<u8>]>) -> Result<(), String> {
        let end_entity_der = CertificateDer::from(self.query.certificate);
        let end_entity = webpki::EndEntityCert::try_from(&end_entity_der)
            .map_err(|e| format!("the certificate is not usable: {e:?}"))?;
        let root_ders: Vec<CertificateDer<'_>> = self
            .trust
            .roots
            .iter()
            .map(|r| CertificateDer::from(r.as_slice()))
            .collect();
        let anchors: Vec<_> = root_ders
            .iter()
            .filter_map(|r| webpki::anchor_from_trusted_cert(r).ok())
            .collect();
        if anchors.is_empty() {
            return Err("no usable trust anchor is configured".into());
        }
        let intermediates: Vec<CertificateDer<'_>> = self
            .query
            .chain
            .iter()
            .map(|c| CertificateDer::from(c.as_slice()))
            .collect();
        let parsed_crls = crls
            .unwrap_or_default()
            .iter()
            .map(|der| {
                webpki::OwnedCertRevocationList::from_der(der)
                    .map(webpki::CertRevocationList::from)
                    .map_err(|e| format!("the CRL does not parse: {e:?}"))
            })
            .collect::<Result<Vec<_>, _>>()?;
        let crl_refs: Vec<&webpki::CertRevocationList<'_>> = parsed_crls.iter().collect();
        let revocation = match crls {
            Some(_) => Some(
                webpki::RevocationOptionsBuilder::new(&crl_refs)
                    .map_err(|_| "no CRL to check against".to_owned())?
                    .with_depth(webpki::RevocationCheckDepth::EndEntity)
                    .with_status_policy(webpki::UnknownStatusPolicy::Deny)
                    .with_expiration_policy(webpki::ExpirationPolicy::Enforce)
                    .build(),
            ),
            None => None,
        };
        end_entity
            .verify_for_usage(
                webpki::ALL_VERIFICATION_ALGS,
                &anchors,
                &intermediates,
                UnixTime::since_unix_epoch(std::time::Duration::from_secs(self.query.now)),
                webpki::KeyUsage::client_auth(),
                revocation,
                None,
            )
            .map(|_| ())
            .map_err(|e| match e {
                webpki::Error::CertRevoked => "revoked".to_owned(),
                other => format!("{other:?}"),
            })
    }

    /// The issuer's certificate among the presented intermediates and the roots: the one
    /// whose subject is the certificate's issuer and whose key signed it.
    pub(crate) fn issuer_of(&self, certificate: &Certificate) -> Option<Certificate> {
        let issuer = certificate.tbs_certificate().issuer();
        self.query
            .chain
            .iter()
            .chain(self.trust.roots.iter())
            .filter_map(|der| Certificate::from_der(der).ok())
            .find(|c| {
                c.tbs_certificate().subject() == issuer
                    && crate::verify::issued_by(self.query.certificate, c)
            })
    }
}

fn base_url(url: &str) -> String {
    if url.ends_with('/') {
        url.to_owned()
    } else {
        format!("{url}/")
    }
}

/// The `checkpoint`, `inclusion` and `attestation` checks.
fn check_log(
    report: &mut DeviceReport,
    query: &DeviceQuery<'_>,
    trust: &RelyingPartyTrust,
    certificate: &Certificate,
    net: &mut dyn Fetch,
) {
    let base = base_url(query.log_url);
    let serial = Serial::of(certificate.tbs_certificate().serial_number());
    // The index first, then the checkpoint: a certificate integrated after the index was
    // looked up is then under the checkpoint.
    let index = net.get(&format!("{base}index/{serial}"));
    let checkpoint = match fetch_checkpoint(&base, trust, net) {
        Ok(c) => {
            let witnessed: Vec<&str> = trust.witnesses.iter().map(WitnessKey::name).collect();
            report.pass(
                CheckKind::Checkpoint,
                if witnessed.is_empty() {
                    format!("{} entries, signed by {}", c.size, trust.log_key.name())
                } else {
                    format!(
                        "{} entries, signed by {} and cosigned by {}",
                        c.size,
                        trust.log_key.name(),
                        witnessed.join(", ")
                    )
                },
            );
            c
        }
        Err((reason, e)) => {
            report.fail(CheckKind::Checkpoint, reason, e);
            return;
        }
    };
    let index = match index {
        Ok(Some(body)) => match std::str::from_utf8(&body)
            .ok()
            .and_then(|t| t.trim().parse::<u64>().ok())
        {
            Some(i) => i,
            None => {
                report.fail(
                    CheckKind::Inclusion,
                    DeviceFinding::InclusionFailed,
                    "the log's index answer is not a number".into(),
                );
                return;
            }
        },
        Ok(None) => {
            report.fail(
                CheckKind::Inclusion,
                DeviceFinding::NotInLog,
                format!(
                    "serial {serial} is not in the log (issued outside it, or not yet integrated)"
                ),
            );
            return;
        }
        Err(e) => {
            report.fail(
                CheckKind::Inclusion,
                DeviceFinding::InclusionFailed,
                format!("the log's index: {e}"),
            );
            return;
        }
    };
    if index >= checkpoint.size {
        report.fail(
            CheckKind::Inclusion,
            DeviceFinding::NotYetIntegrated,
            format!(
                "the log names entry {index}, past its checkpoint of {} entries: retry shortly",
                checkpoint.size
            ),
        );
        return;
    }
    match prove(&base, query.certificate, index, &checkpoint, net) {
        Ok((entry, proof_len)) => {
            report.pass(
                CheckKind::Inclusion,
                format!(
                    "entry {index} holds this certificate; its inclusion proof ({proof_len} hashes) reaches the root of the checkpoint of {} entries",
                    checkpoint.size
                ),
            );
            attestation_check(report, query, index, entry);
        }
        Err(e) => report.fail(CheckKind::Inclusion, DeviceFinding::InclusionFailed, e),
    }
}

/// The log's checkpoint, signed by its key and cosigned by every required witness.
fn fetch_checkpoint(
    base: &str,
    trust: &RelyingPartyTrust,
    net: &mut dyn Fetch,
) -> Result<VerifiedCheckpoint, (DeviceFinding, String)> {
    let invalid = |e: String| (DeviceFinding::CheckpointInvalid, e);
    let note = net
        .get(&format!("{base}checkpoint"))
        .map_err(invalid)?
        .ok_or_else(|| invalid("the log serves no checkpoint".into()))?;
    let verified = checkpoint::verify_checkpoint(&note, &trust.log_key, trust.log_key.name())
        .map_err(|e| invalid(e.to_string()))?;
    if verified.size > MAX_LOG_SIZE {
        return Err(invalid(format!(
            "the checkpoint claims {} entries, beyond any log this verifier follows",
            verified.size
        )));
    }
    let missing = witness::missing_cosigners(&note, &verified, &trust.witnesses);
    if !missing.is_empty() {
        return Err((
            DeviceFinding::NotWitnessed,
            format!("no valid cosignature by {}", missing.join(", ")),
        ));
    }
    Ok(verified)
}

/// The entry at `index`, shown under `checkpoint` by an inclusion proof from the served tiles.
fn prove(
    base: &str,
    certificate: &[u8],
    index: u64,
    checkpoint: &VerifiedCheckpoint,
    net: &mut dyn Fetch,
) -> Result<(IssuanceEntry, usize), String> {
    let bundle_path = tiles::bundle_of(index, checkpoint.size);
    let bundle = net
        .get(&format!("{base}{}", bundle_path.to_path()))?
        .ok_or_else(|| format!("{} is not served", bundle_path.to_path()))?;
    let entries = tiles::bundle_entries(&bundle).map_err(|e| e.to_string())?;
    let position = (index % tiles::TILE_WIDTH) as usize;
    let raw = *entries
        .get(position)
        .ok_or_else(|| format!("{} holds no entry {index}", bundle_path.to_path()))?;
    let entry = IssuanceEntry::decode(raw).map_err(|e| format!("entry {index}: {e}"))?;
    if entry.certificate != certificate {
        return Err(format!("entry {index} holds another certificate"));
    }
    let request = ProofRequest::Inclusion {
        index,
        size: checkpoint.size,
    };
    let mut hashes = HashMap::new();
    for path in request.tiles().map_err(|e| e.to_string())? {
        let TileKind::Hashes(level) = path.kind else {
            continue;
        };
        let data = net
            .get(&format!("{base}{}", path.to_path()))?
            .ok_or_else(|| format!("{} is not served", path.to_path()))?;
        hashes.insert((level, path.index), data);
    }
    let proof = request.prove(&hashes).map_err(|e| e.to_string())?;
    if !tiles::inclusion_holds(
        index,
        checkpoint.size,
        leaf_hash(raw),
        &proof,
        checkpoint.root,
    ) {
        return Err(format!(
            "the inclusion proof of entry {index} does not reach the checkpoint's root (tampered tiles or a forked log)"
        ));
    }
    Ok((entry, proof.len()))
}

fn attestation_check(
    report: &mut DeviceReport,
    query: &DeviceQuery<'_>,
    index: u64,
    entry: IssuanceEntry,
) {
    let a = entry.attestation;
    let logged = LoggedAttestation {
        index,
        logged_at: entry.logged_at,
        attested: a.attested,
        operation: a.operation,
        profile: a.profile,
        requester: a.requester,
        format: a.format,
        vendor: a.vendor,
        device_identity: a.device_identity,
        evidence_sha256: hex::encode(&a.evidence_sha256),
    };
    let (ok, reason, detail) = if logged.attested {
        (
            true,
            None,
            format!(
                "issued after {} evidence from {} was verified, for device {:?}",
                logged.format, logged.vendor, logged.device_identity
            ),
        )
    } else if query.allow_unattested {
        (
            true,
            None,
            format!(
                "profile {:?} required no attestation (accepted: unattested certificates allowed)",
                logged.profile
            ),
        )
    } else {
        (
            false,
            Some(DeviceFinding::NotAttested),
            format!(
                "the log records no attestation: profile {:?} required none",
                logged.profile
            ),
        )
    };
    report.checks.push(DeviceCheck {
        check: CheckKind::Attestation,
        ok,
        reason,
        detail,
        attestation: Some(logged),
    });
}

/// The DER of a PEM or DER file's certificates, in order.
pub fn certificates_of(bytes: &[u8]) -> Result<Vec<Vec<u8>>, String> {
    // The Raw profile keeps each certificate's bytes as issued: they are compared byte for
    // byte with the log's entry.
    use crate::attestation::EvidenceCertificate;
    let certificates = if bytes.starts_with(&[0x30]) {
        vec![EvidenceCertificate::from_der(bytes).map_err(|e| format!("not DER: {e}"))?]
    } else {
        EvidenceCertificate::load_pem_chain(bytes).map_err(|e| format!("not PEM: {e}"))?
    };
    if certificates.is_empty() {
        return Err("no certificate found".into());
    }
    certificates
        .iter()
        .map(|c| c.to_der().map_err(|e| e.to_string()))
        .collect()
}
