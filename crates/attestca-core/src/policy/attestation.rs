//! What a profile demands of key attestation, decided from facts.
//!
//! Why pure: the server's attestation step interleaves store look-ups (nonce state, manifest,
//! other certificates of the device) with policy. The policy half lives here and sees only
//! what the look-ups found, so that each refusal is tested without a database. The order of
//! the checks is the order the server applies them in, and is part of the behaviour: cheap
//! and static checks first ([`evidence_presence`], [`check_attested`]), then the look-ups the
//! returned [`AttestationDecision`] asks for ([`manifest_verdict`], [`clone_verdict`]), and
//! last the nonce, spent only when everything else has passed ([`nonce_verdict`]).

use super::{Reason, Refusal};
use crate::attestation::{AttestationFormat, AttestedKey};
use crate::config::ProfileConfig;

/// What a profile demands of key attestation.
#[derive(Clone, Debug, Default)]
pub struct AttestationPolicy {
    pub required: bool,
    /// Accepted vendors; empty = all configured.
    pub vendors: Vec<String>,
    /// Accepted formats; empty = all.
    pub formats: Vec<AttestationFormat>,
    pub require_generated_on_device: bool,
    pub require_non_exportable: bool,
    pub require_manifest: bool,
    pub allow_reprovision: bool,
}

impl AttestationPolicy {
    /// The attestation keys of a `[profiles.<label>]` section.
    pub fn from_config(config: &ProfileConfig) -> Self {
        Self {
            required: config.attestation_required,
            vendors: config.attestation_vendors.clone(),
            formats: config.attestation_formats.clone(),
            require_generated_on_device: config.require_generated_on_device,
            require_non_exportable: config.require_non_exportable,
            require_manifest: config.require_manifest,
            allow_reprovision: config.allow_reprovision,
        }
    }
}

/// What the static checks leave to the look-ups, in the order the server does them.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AttestationDecision {
    /// The device with this key must be on an imported manifest ([`manifest_verdict`]).
    pub check_manifest: bool,
    /// The device must have no active certificate for another key ([`clone_verdict`]):
    /// a first enrollment on a profile that does not allow reprovisioning.
    pub check_clones: bool,
}

/// What a nonce look-up found.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum NonceCheck {
    /// It was live and issued to this requester; it is now spent.
    Consumed,
    /// It is live and issued to this requester (a look, which spends nothing).
    Live,
    /// This CA never issued it.
    Unknown,
    /// It was issued to another requester (and is left untouched).
    Foreign,
    /// It was already spent.
    Reused,
    /// It expired before use.
    Expired,
}

/// A CSR without evidence is acceptable only where the profile does not require it.
/// `Ok(true)`: evidence is there, verify it; `Ok(false)`: none, and none needed.
pub fn evidence_presence(
    policy: &AttestationPolicy,
    label: &str,
    has_evidence: bool,
) -> Result<bool, Refusal> {
    if !has_evidence && policy.required {
        return Err(Refusal::new(
            Reason::AttestationRequired,
            format!(
                "profile {label:?} requires key attestation evidence in the CSR (attribute 1.2.840.113549.1.9.16.2.59)"
            ),
        ));
    }
    Ok(has_evidence)
}

/// The device record of the certificate being renewed, for a rekey's evidence.
#[derive(Clone, Copy, Debug)]
pub struct Renewing<'a> {
    /// `<vendor>:<serial>` recorded with the certificate being renewed, if it had one.
    pub device_identity: Option<&'a str>,
}

/// Applies the profile's policy to verified evidence: vendor and format, key origin and
/// exportability, the vendor's deny-list (`on_deny_list`, from the trust store), and for a
/// renewal, the same device as the certificate being renewed.
pub fn check_attested(
    policy: &AttestationPolicy,
    label: &str,
    attested: &AttestedKey,
    on_deny_list: bool,
    renewing: Option<Renewing<'_>>,
) -> Result<AttestationDecision, Refusal> {
    if !policy.vendors.is_empty() && !policy.vendors.contains(&attested.vendor) {
        return Err(Refusal::new(
            Reason::AttestationVendorNotAllowed,
            format!(
                "vendor {} is not accepted on profile {label:?}",
                attested.vendor
            ),
        ));
    }
    if !policy.formats.is_empty() && !policy.formats.contains(&attested.format) {
        return Err(Refusal::new(
            Reason::AttestationFormatNotAllowed,
            format!(
                "{} evidence is not accepted on profile {label:?}",
                attested.format.name()
            ),
        ));
    }
    if policy.require_generated_on_device && attested.generated_on_device == Some(false) {
        return Err(Refusal::new(
            Reason::AttestationKeyNotGeneratedOnDevice,
            "the evidence says the key was imported into the device, not generated there",
        ));
    }
    if policy.require_non_exportable && attested.exportable == Some(true) {
        return Err(Refusal::new(
            Reason::AttestationKeyExportable,
            "the evidence says the key can leave the device",
        ));
    }
    if on_deny_list {
        return Err(Refusal::new(
            Reason::AttestationDeviceDenied,
            format!("device {} is on the deny-list", attested.device_key()),
        ));
    }
    if let Some(predecessor) = renewing {
        // A new key for a fielded device must come from the same device.
        if predecessor.device_identity != Some(attested.device_key().as_str()) {
            return Err(Refusal::new(
                Reason::ReenrollDeviceMismatch,
                format!(
                    "the evidence names device {} but the certificate being renewed belongs to {}",
                    attested.device_key(),
                    predecessor.device_identity.unwrap_or("no attested device")
                ),
            ));
        }
    }
    Ok(AttestationDecision {
        check_manifest: policy.require_manifest,
        check_clones: !policy.allow_reprovision && renewing.is_none(),
    })
}

/// The manifest look-up's answer: `listed` is whether an imported supply-chain manifest lists
/// the device with this key.
pub fn manifest_verdict(attested: &AttestedKey, listed: bool) -> Result<(), Refusal> {
    if listed {
        return Ok(());
    }
    Err(Refusal::new(
        Reason::AttestationNotInManifest,
        format!(
            "device {} with this key is on no imported supply-chain manifest",
            attested.device_key()
        ),
    ))
}

/// The clone look-up's answer: the serial of an active certificate the device already has for
/// another key, if any.
pub fn clone_verdict(attested: &AttestedKey, existing_serial: Option<&str>) -> Result<(), Refusal> {
    match existing_serial {
        None => Ok(()),
        Some(serial) => Err(Refusal::new(
            Reason::AttestationCloneSuspected,
            format!(
                "device {} already has an active certificate (serial {serial}) for another key",
                attested.device_key()
            ),
        )),
    }
}

/// Refuses unless a nonce is in the `expected` state ([`NonceCheck::Live`] before
/// verification, [`NonceCheck::Consumed`] after).
pub fn nonce_verdict(found: NonceCheck, expected: NonceCheck) -> Result<(), Refusal> {
    match found {
        found if found == expected => Ok(()),
        NonceCheck::Unknown => Err(Refusal::new(
            Reason::AttestationNonceUnknown,
            "the evidence's nonce was not issued by this CA",
        )),
        NonceCheck::Foreign => Err(Refusal::new(
            Reason::AttestationNonceForeign,
            "the evidence's nonce was issued to another rig",
        )),
        NonceCheck::Expired => Err(Refusal::new(
            Reason::AttestationNonceExpired,
            "the evidence's nonce has expired",
        )),
        NonceCheck::Reused | NonceCheck::Live | NonceCheck::Consumed => Err(Refusal::new(
            Reason::AttestationNonceReused,
            "the evidence's nonce has already been used",
        )),
    }
}
