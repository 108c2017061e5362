//! simplereenroll's policy (RFC 7030 §4.2.2, docs/renewal.md), decided from facts.
//!
//! Why pure: the server looks up the certificate a device presents, its renewals and its
//! evidence; whether that certificate still counts (recorded, unrevoked, unexpired or within
//! the grace, old enough, not renewed too recently), whether the CSR keeps its names, and
//! whether a new key is allowed are decisions on what was found, made here so that each
//! refusal is tested without a database. The functions are listed in the order the server
//! applies them.

use der::Encode;
use x509_cert::Certificate;
use x509_cert::ext::pkix::SubjectAltName;
use x509_cert::ext::pkix::name::{GeneralName, HardwareModuleName};

use super::{Reason, Refusal};
use crate::attestation::DeviceIdentity;
use crate::config::ProfileConfig;
use crate::csr::ValidatedCsr;

/// id-cmc-changeSubjectName (RFC 6402): asks to change the name; attestca refuses it.
pub const CHANGE_SUBJECT_NAME: der::asn1::ObjectIdentifier =
    der::asn1::ObjectIdentifier::new_unwrap("1.3.6.1.5.5.7.7.36");

/// What a profile allows of simplereenroll.
#[derive(Clone, Debug, Default)]
pub struct RenewalPolicy {
    /// The fraction of a certificate's life that must pass before it may renew (0 to 1).
    pub after_fraction: f64,
    /// How long after expiry a certificate may still renew.
    pub grace_secs: u64,
    /// The least time between two renewals of one certificate.
    pub min_interval_secs: u64,
    pub allow_rekey: bool,
    pub rekey_requires_attestation: bool,
    pub revoke_predecessor_after_secs: Option<u64>,
}

impl RenewalPolicy {
    /// The renewal keys of a `[profiles.<label>]` section.
    pub fn from_config(config: &ProfileConfig) -> Self {
        Self {
            after_fraction: config.renewal_after_fraction.clamp(0.0, 1.0),
            grace_secs: config.renewal_grace_secs,
            min_interval_secs: config.renewal_min_interval_secs,
            allow_rekey: config.allow_rekey,
            rekey_requires_attestation: config.rekey_requires_attestation,
            revoke_predecessor_after_secs: config.revoke_predecessor_after_secs,
        }
    }
}

/// The facts of the certificate being renewed, from its record.
#[derive(Clone, Copy, Debug)]
pub struct Predecessor<'a> {
    /// The profile it was issued under.
    pub profile: &'a str,
    pub revoked: bool,
    /// Unix seconds.
    pub not_before: i64,
    /// Unix seconds.
    pub not_after: i64,
}

/// The record of the certificate a device presents must exist and hold the very bytes
/// presented (issued by this CA and recorded), else `reenroll.unknown_certificate`.
pub fn recorded<R>(
    record: Option<R>,
    der_of: impl Fn(&R) -> &[u8],
    presented_der: &[u8],
) -> Result<R, Refusal> {
    record
        .filter(|r| der_of(r) == presented_der)
        .ok_or_else(|| {
            Refusal::new(
                Reason::ReenrollUnknownCertificate,
                "the client certificate is not one this CA issued and recorded",
            )
        })
}

/// A revoked certificate never renews (`reenroll.revoked`).
pub fn check_not_revoked(revoked: bool) -> Result<(), Refusal> {
    if revoked {
        return Err(Refusal::new(
            Reason::ReenrollRevoked,
            "the certificate being renewed is revoked",
        ));
    }
    Ok(())
}

/// A certificate already renewed gives way to its successor (`reenroll.superseded`); asked
/// before a device is given a nonce for a renewal.
pub fn check_not_superseded(renewed: bool) -> Result<(), Refusal> {
    if renewed {
        return Err(Refusal::new(
            Reason::ReenrollSuperseded,
            "the certificate has already been renewed: renew with its successor",
        ));
    }
    Ok(())
}

/// Whether the presented certificate may renew at `now` (Unix seconds) on profile `label`:
/// not revoked, renewed on its own profile, not expired beyond the grace, and old enough.
/// The renewal interval, which needs the latest renewal, is [`check_interval`].
pub fn check_renewable(
    policy: &RenewalPolicy,
    label: &str,
    predecessor: &Predecessor<'_>,
    now: i64,
) -> Result<(), Refusal> {
    check_not_revoked(predecessor.revoked)?;
    if predecessor.profile != label {
        return Err(Refusal::new(
            Reason::ReenrollProfileMismatch,
            format!(
                "the certificate was issued under profile {:?}; renew it there",
                predecessor.profile
            ),
        ));
    }
    let grace = i64::try_from(policy.grace_secs).unwrap_or(i64::MAX);
    if now > predecessor.not_after.saturating_add(grace) {
        return Err(Refusal::new(
            Reason::ReenrollExpired,
            "the certificate being renewed has expired",
        ));
    }
    let lifetime = (predecessor.not_after - predecessor.not_before).max(0) as f64;
    let earliest = predecessor.not_before + (lifetime * policy.after_fraction) as i64;
    if now < earliest {
        return Err(Refusal::new(
            Reason::ReenrollTooEarly,
            format!("this certificate may be renewed from Unix time {earliest} on"),
        ));
    }
    Ok(())
}

/// Not renewed within the profile's minimum interval of its issue or latest renewal
/// (`reenroll.rate_limited`, with the seconds to wait).
pub fn check_interval(
    policy: &RenewalPolicy,
    issued_at: i64,
    latest_renewal: Option<i64>,
    now: i64,
) -> Result<(), Refusal> {
    let last = latest_renewal.map_or(issued_at, |renewed| renewed.max(issued_at));
    let interval = i64::try_from(policy.min_interval_secs).unwrap_or(i64::MAX);
    let next_allowed = last.saturating_add(interval);
    if now < next_allowed {
        return Err(Refusal {
            code: Reason::ReenrollRateLimited,
            detail: format!(
                "this device renewed less than {} seconds ago",
                policy.min_interval_secs
            ),
            retry_after_secs: Some(u64::try_from(next_allowed - now).unwrap_or(0)),
        });
    }
    Ok(())
}

/// The CSR keeps the presented certificate's subject (DER-equal) and SubjectAltNames (as a
/// set, without the hardwareModuleName the CA adds itself), and does not ask to change them.
pub fn check_same_names(csr: &ValidatedCsr, previous: &Certificate) -> Result<(), Refusal> {
    if csr
        .request
        .info
        .attributes
        .iter()
        .any(|a| a.oid == CHANGE_SUBJECT_NAME)
    {
        return Err(Refusal::new(
            Reason::ReenrollChangeSubjectName,
            "ChangeSubjectName is not supported: enroll a new certificate for a new name",
        ));
    }
    let same_subject = match (
        csr.subject.to_der(),
        previous.tbs_certificate().subject().to_der(),
    ) {
        (Ok(a), Ok(b)) => a == b,
        _ => false,
    };
    if !same_subject {
        return Err(Refusal::new(
            Reason::ReenrollSubjectChanged,
            "the CSR's subject differs from the certificate being renewed",
        ));
    }
    let mut requested: Vec<Vec<u8>> = csr
        .subject_alt_names
        .iter()
        .filter(|n| !is_hardware_module_name(n))
        .filter_map(|n| n.to_der().ok())
        .collect();
    let mut current: Vec<Vec<u8>> = certificate_alt_names(previous)
        .iter()
        .filter(|n| !is_hardware_module_name(n))
        .filter_map(|n| n.to_der().ok())
        .collect();
    requested.sort();
    current.sort();
    if requested != current {
        return Err(Refusal::new(
            Reason::ReenrollSanChanged,
            "the CSR's subjectAltNames differ from the certificate being renewed",
        ));
    }
    Ok(())
}

/// A new key (`rekey`) only where the profile allows it, and with evidence where it demands it.
pub fn check_rekey(
    policy: &RenewalPolicy,
    label: &str,
    rekey: bool,
    has_evidence: bool,
) -> Result<(), Refusal> {
    if rekey && !policy.allow_rekey {
        return Err(Refusal::new(
            Reason::ReenrollRekeyNotAllowed,
            format!("profile {label:?} renews certificates only for the same key"),
        ));
    }
    if rekey && policy.rekey_requires_attestation && !has_evidence {
        return Err(Refusal::new(
            Reason::ReenrollRekeyRequiresAttestation,
            "a new key must come with attestation evidence from the same device",
        ));
    }
    Ok(())
}

/// The hardwareModuleName of a certificate, to carry over to its renewal.
pub fn hardware_identity(cert: &Certificate) -> Option<DeviceIdentity> {
    certificate_alt_names(cert).iter().find_map(|n| match n {
        GeneralName::OtherName(o) => {
            HardwareModuleName::from_other_name(o)
                .ok()
                .flatten()
                .map(|hw| DeviceIdentity {
                    hardware_type: hw.hw_type,
                    serial: hw.hw_serial_num.as_bytes().to_vec(),
                    display: hex::encode_upper(hw.hw_serial_num.as_bytes()),
                })
        }
        _ => None,
    })
}

/// The certificate's subjectAltNames (none when it has no readable extension).
fn certificate_alt_names(cert: &Certificate) -> Vec<GeneralName> {
    cert.tbs_certificate()
        .get_extension::<SubjectAltName>()
        .ok()
        .flatten()
        .map(|(_, san)| san.0)
        .unwrap_or_default()
}

fn is_hardware_module_name(name: &GeneralName) -> bool {
    matches!(name, GeneralName::OtherName(o) if HardwareModuleName::from_other_name(o).ok().flatten().is_some())
}
