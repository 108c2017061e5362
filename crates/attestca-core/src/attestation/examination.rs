//! Offline examination of an attested CSR: the checks the CA makes before it signs, run
//! without a server or a database, each reported with the reason code the CA would give.
//! It answers "why was this device refused?" on the line, from the CSR file alone.
//!
//! What it cannot know offline is left out rather than guessed: whether the nonce was issued
//! to this rig and is unspent (it compares the nonce with one given), whether the device is on
//! an imported manifest, or whether it already has a certificate for another key.

use serde::Serialize;

use super::AttestedKey;
use super::gate::AttestationGate;
use super::tpm::TpmDescription;
use crate::csr;
use crate::policy::EnrollmentPolicy;
use crate::policy::attestation::check_attested;
use crate::reason::Reason;

/// The names of the checks, in the order they run (a stable interface: scripts match on
/// them).
pub mod check {
    /// The CSR decodes and its signature verifies with its own key (proof of possession).
    pub const CSR_POSSESSION: &str = "csr.possession";
    /// The CSR satisfies the profile's rules (key algorithm, subject, SANs).
    pub const CSR_PROFILE: &str = "csr.profile";
    /// The CSR carries an attestation attribute.
    pub const EVIDENCE_PRESENT: &str = "evidence.present";
    /// The attribute decodes as an AttestationBundle within the limits.
    pub const EVIDENCE_DECODE: &str = "evidence.decode";
    /// A statement verifies: signature, chain to a trusted vendor root, binding to the key.
    pub const EVIDENCE_VERIFY: &str = "evidence.verify";
    /// The evidence carries the nonce given on the command line.
    pub const EVIDENCE_NONCE: &str = "evidence.nonce";
    /// The profile's attestation policy accepts the vendor, format, key origin and device.
    pub const POLICY_ATTESTATION: &str = "policy.attestation";
}

/// One check's result.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Check {
    pub name: &'static str,
    pub ok: bool,
    /// The reason code the CA would refuse with (`null` when the check passed).
    pub reason: Option<&'static str>,
    /// Why, in words (empty when the check passed).
    #[serde(skip_serializing_if = "String::is_empty")]
    pub detail: String,
}

/// `pass` when every check passed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Outcome {
    Pass,
    Fail,
}

/// The verdict on one CSR.
#[derive(Clone, Debug, Serialize)]
pub struct Verdict {
    pub verdict: Outcome,
    /// The evidence format (`tpm-certify`, …), `unknown` when no statement verified and none
    /// was recognised, `none` when the CSR carries no evidence.
    pub format: String,
    pub vendor: Option<String>,
    /// `<vendor>:<serial>`, as certificates and events record it.
    pub device_identity: Option<String>,
    /// The TPM's manufacturer, model and version, for TPM evidence whose AK certificate says.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tpm: Option<TpmDescription>,
    /// The nonce the evidence carries (hex), checked only against one given.
    pub nonce: Option<String>,
    /// SHA-256 of the evidence (hex), as the CA records it with the enrollment event.
    pub evidence_sha256: Option<String>,
    pub checks: Vec<Check>,
}

/// What to examine a CSR against.
pub struct Examination<'a> {
    pub gate: &'a AttestationGate,
    /// A profile's enrollment policy: its CSR rules and attestation policy are applied too.
    pub profile: Option<&'a EnrollmentPolicy>,
    /// The nonce the rig was given: the evidence must carry it.
    pub nonce: Option<&'a [u8]>,
}

impl Examination<'_> {
    /// Runs every check that applies, in the CA's order. A failure of the proof of possession
    /// or a missing or undecodable bundle stops the examination (nothing after it would
    /// mean anything); a CSR-rule failure does not, so one run shows every problem.
    pub fn examine(&self, csr_der: &[u8]) -> Verdict {
        let mut verdict = Verdict {
            verdict: Outcome::Fail,
            format: "none".into(),
            vendor: None,
            device_identity: None,
            tpm: None,
            nonce: None,
            evidence_sha256: None,
            checks: Vec::new(),
        };
        self.run(csr_der, &mut verdict);
        if verdict.checks.iter().all(|c| c.ok) {
            verdict.verdict = Outcome::Pass;
        }
        verdict
    }

    fn run(&self, csr_der: &[u8], verdict: &mut Verdict) {
        let checks = &mut verdict.checks;
        let request = match csr::proof_of_possession(csr_der) {
            Ok(request) => {
                checks.push(passed(check::CSR_POSSESSION));
                request
            }
            Err(refusal) => {
                checks.push(failed(check::CSR_POSSESSION, refusal.code, refusal.detail));
                return;
            }
        };
        if let Some(profile) = self.profile {
            checks.push(match csr::validate(csr_der, profile) {
                Ok(_) => passed(check::CSR_PROFILE),
                Err(refusal) => failed(check::CSR_PROFILE, refusal.code, refusal.detail),
            });
        }
        let evidence = match self.gate.evidence(&request) {
            Ok(Some(evidence)) => {
                checks.push(passed(check::EVIDENCE_PRESENT));
                checks.push(passed(check::EVIDENCE_DECODE));
                evidence
            }
            Ok(None) => {
                checks.push(failed(
                    check::EVIDENCE_PRESENT,
                    Reason::AttestationRequired,
                    "the CSR carries no attestation attribute",
                ));
                return;
            }
            Err(e) => {
                checks.push(passed(check::EVIDENCE_PRESENT));
                checks.push(failed(check::EVIDENCE_DECODE, e.code, e.detail));
                return;
            }
        };
        verdict.evidence_sha256 = Some(hex::encode(&evidence.sha256));
        verdict.format = "unknown".into();
        let attested = match self.gate.verify(&evidence, &request.info.public_key) {
            Ok(attested) => {
                checks.push(passed(check::EVIDENCE_VERIFY));
                attested
            }
            Err(e) => {
                if let Some(format) = self.gate.recognised_format(&evidence) {
                    verdict.format = format.name().into();
                }
                verdict.nonce = self.gate.claimed_nonces(&evidence).first().map(hex::encode);
                checks.push(failed(check::EVIDENCE_VERIFY, e.code, e.detail));
                return;
            }
        };
        self.record(&attested, verdict);
        self.check_nonce(&attested, &mut verdict.checks);
        if let Some(profile) = self.profile {
            let on_deny_list = self
                .gate
                .vendors()
                .denies(&attested.vendor, &attested.device.display);
            verdict.checks.push(
                match check_attested(
                    &profile.attestation,
                    &profile.label,
                    &attested,
                    on_deny_list,
                    None,
                ) {
                    Ok(_) => passed(check::POLICY_ATTESTATION),
                    Err(refusal) => failed(check::POLICY_ATTESTATION, refusal.code, refusal.detail),
                },
            );
        }
    }

    fn record(&self, attested: &AttestedKey, verdict: &mut Verdict) {
        verdict.format = attested.format.name().into();
        verdict.vendor = Some(attested.vendor.clone());
        verdict.device_identity = Some(attested.device_key());
        verdict.tpm = attested.tpm.clone();
        verdict.nonce = attested.nonce.as_deref().map(hex::encode);
    }

    /// The nonce given must be the one the evidence carries (a format without a nonce has
    /// nothing to compare).
    fn check_nonce(&self, attested: &AttestedKey, checks: &mut Vec<Check>) {
        let (Some(expected), Some(carried)) = (self.nonce, attested.nonce.as_deref()) else {
            return;
        };
        checks.push(if expected == carried {
            passed(check::EVIDENCE_NONCE)
        } else {
            failed(
                check::EVIDENCE_NONCE,
                Reason::AttestationNonceUnknown,
                format!(
                    "the evidence carries nonce {}, not {}",
                    hex::encode(carried),
                    hex::encode(expected)
                ),
            )
        });
    }
}

fn passed(name: &'static str) -> Check {
    Check {
        name,
        ok: true,
        reason: None,
        detail: String::new(),
    }
}

fn failed(name: &'static str, reason: Reason, detail: impl Into<String>) -> Check {
    Check {
        name,
        ok: false,
        reason: Some(reason.as_str()),
        detail: detail.into(),
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use const_oid::ObjectIdentifier;
    use der::Decode;

    use super::*;
    use crate::attestation::vendors::{Vendor, VendorReader};
    use crate::attestation::{
        AttestationFormat, EvidenceCertificate, SystemClock, VendorTrustStore,
    };
    use crate::config::ProfileConfig;

    const NONCE: &[u8] = b"examination-nonce";

    /// A simulated vendor, and a gate that trusts it (or trusts nobody).
    struct Setup {
        _dir: tempfile::TempDir,
        device: attestca_sim::secure_element::SimulatedDevice,
        trusting: AttestationGate,
        trusting_nobody: AttestationGate,
    }

    fn setup() -> Setup {
        let dir = tempfile::tempdir().expect("temp dir");
        let vendor =
            attestca_sim::secure_element::SimulatedVendor::create(dir.path()).expect("vendor");
        let device = vendor.manufacture().expect("device");
        let root = EvidenceCertificate::from_der(&vendor.root_der).expect("root");
        let trusted = Vendor {
            name: "simulated".into(),
            roots: vec![root],
            formats: vec![AttestationFormat::X509Chain],
            reader: VendorReader::SimulatedSe,
            hardware_type: ObjectIdentifier::new_unwrap("1.3.6.1.4.1.32473.7030.5.1"),
            denied_serials: Default::default(),
            allow_sha1: false,
        };
        Setup {
            _dir: dir,
            device,
            trusting: AttestationGate::new(
                VendorTrustStore::new(vec![trusted]),
                Arc::new(SystemClock),
            ),
            trusting_nobody: AttestationGate::new(
                VendorTrustStore::new(vec![]),
                Arc::new(SystemClock),
            ),
        }
    }

    fn examine(
        gate: &AttestationGate,
        profile: Option<&EnrollmentPolicy>,
        nonce: Option<&[u8]>,
        csr: &[u8],
    ) -> Verdict {
        Examination {
            gate,
            profile,
            nonce,
        }
        .examine(csr)
    }

    /// `(name, ok, reason)` of every check.
    fn summary(verdict: &Verdict) -> Vec<(&'static str, bool, Option<&'static str>)> {
        verdict
            .checks
            .iter()
            .map(|c| (c.name, c.ok, c.reason))
            .collect()
    }

    fn profile(config: ProfileConfig) -> EnrollmentPolicy {
        EnrollmentPolicy::from_config("line-1", &config).expect("profile")
    }

    #[test]
    fn attested_evidence_passes_every_check() {
        let s = setup();
        let (_, csr) = s.device.enroll_key("device-1", NONCE).expect("CSR");
        let verdict = examine(
            &s.trusting,
            Some(&profile(ProfileConfig::default())),
            Some(NONCE),
            &csr,
        );
        assert_eq!(verdict.verdict, Outcome::Pass, "{verdict:#?}");
        assert_eq!(verdict.format, "x509-chain");
        assert_eq!(verdict.vendor.as_deref(), Some("simulated"));
        assert!(
            verdict
                .device_identity
                .as_deref()
                .is_some_and(|d| d.starts_with("simulated:")),
            "{verdict:?}"
        );
        assert_eq!(verdict.nonce, Some(hex::encode(NONCE)));
        assert_eq!(
            summary(&verdict),
            [
                (check::CSR_POSSESSION, true, None),
                (check::CSR_PROFILE, true, None),
                (check::EVIDENCE_PRESENT, true, None),
                (check::EVIDENCE_DECODE, true, None),
                (check::EVIDENCE_VERIFY, true, None),
                (check::EVIDENCE_NONCE, true, None),
                (check::POLICY_ATTESTATION, true, None),
            ]
        );
        let json = serde_json::to_value(&verdict).expect("JSON");
        assert_eq!(json["verdict"], "pass");
        assert_eq!(json["checks"][0]["reason"], serde_json::Value::Null);
    }

    #[test]
    fn each_failure_names_the_check_and_the_ca_reason() {
        let s = setup();
        let (_, csr) = s.device.enroll_key("device-1", NONCE).expect("CSR");
        // Another nonce than the rig was given.
        let verdict = examine(&s.trusting, None, Some(b"another nonce"), &csr);
        assert_eq!(verdict.verdict, Outcome::Fail);
        assert_eq!(
            summary(&verdict).last(),
            Some(&(
                check::EVIDENCE_NONCE,
                false,
                Some("attestation.nonce_unknown")
            ))
        );
        // A vendor nobody trusts: the format is still named.
        let verdict = examine(&s.trusting_nobody, None, None, &csr);
        assert_eq!(verdict.format, "x509-chain");
        assert_eq!(
            summary(&verdict).last(),
            Some(&(
                check::EVIDENCE_VERIFY,
                false,
                Some("attestation.untrusted_root")
            ))
        );
        // A profile that accepts another vendor only, and CNs this one does not match: both
        // are reported in one run.
        let strict = profile(ProfileConfig {
            attestation_vendors: vec!["acme".into()],
            cn_pattern: Some("line-[0-9]+".into()),
            ..ProfileConfig::default()
        });
        let verdict = examine(&s.trusting, Some(&strict), None, &csr);
        let failures: Vec<_> = summary(&verdict).into_iter().filter(|c| !c.1).collect();
        assert_eq!(
            failures,
            [
                (check::CSR_PROFILE, false, Some("csr.subject_rejected")),
                (
                    check::POLICY_ATTESTATION,
                    false,
                    Some("attestation.vendor_not_allowed")
                ),
            ]
        );
    }

    #[test]
    fn what_is_not_an_attested_csr_stops_early() {
        let s = setup();
        let verdict = examine(&s.trusting, None, None, b"not a CSR");
        assert_eq!(
            summary(&verdict),
            [(check::CSR_POSSESSION, false, Some("csr.malformed"))]
        );
        assert_eq!(verdict.format, "none");
        let key = attestca_sim::device::DeviceKey::generate().expect("key");
        let plain = key.csr("device-2").expect("CSR");
        assert_eq!(
            summary(&examine(&s.trusting, None, None, &plain)),
            [
                (check::CSR_POSSESSION, true, None),
                (check::EVIDENCE_PRESENT, false, Some("attestation.required")),
            ]
        );
        // A CSR whose signature was broken after signing.
        let (_, mut csr) = s.device.enroll_key("device-1", NONCE).expect("CSR");
        let last = csr.len() - 1;
        csr[last] ^= 1;
        assert_eq!(
            summary(&examine(&s.trusting, None, None, &csr)),
            [(check::CSR_POSSESSION, false, Some("csr.bad_signature"))]
        );
    }
}
