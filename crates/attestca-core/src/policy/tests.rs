//! Unit tests of the registration authority's pure policy.
//!
//! Every reason code the policy can produce is produced by [`refusal_cases`], and
//! [`every_documented_code_is_accounted_for`] reads the reason-code tables of docs/ and checks
//! that each documented code is either produced here, produced by the CSR rules' own tests,
//! produced by the evidence verifiers, or listed with the reason it cannot be (I/O, the wire).
//! No database, no token, no network: certificates come from a software CA.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::SystemTime;

use der::Decode;
use x509_cert::Certificate;
use x509_cert::ext::pkix::SubjectAltName;
use x509_cert::ext::pkix::name::GeneralName;

use super::attestation::{
    AttestationDecision, NonceCheck, Renewing, check_attested, clone_verdict, evidence_presence,
    manifest_verdict, nonce_verdict,
};
use super::attestation_key::{self, fixtures as ak_fixtures};
use super::renewal::{self, Predecessor, RenewalPolicy};
use super::*;
use crate::attestation::{AttestationFormat, AttestedKey, DeviceIdentity};
use crate::config::ProfileConfig;
use crate::csr::ValidatedCsr;
use crate::issuance::software_ca::SoftwareCa;
use crate::issuance::{CertificateProfile, IssuingCa, LeafRequest};

fn policy(edit: impl FnOnce(&mut ProfileConfig)) -> EnrollmentPolicy {
    let mut config = ProfileConfig::default();
    edit(&mut config);
    EnrollmentPolicy::from_config("lab", &config).expect("valid profile")
}

fn device() -> DeviceIdentity {
    DeviceIdentity {
        hardware_type: const_oid::ObjectIdentifier::new_unwrap("1.3.6.1.4.1.32473.7030.1"),
        serial: vec![0x01, 0x23, 0xF2],
        display: "0123F2".into(),
    }
}

fn attested() -> AttestedKey {
    AttestedKey {
        format: AttestationFormat::X509Chain,
        vendor: "acme".into(),
        device: device(),
        nonce: None,
        generated_on_device: Some(true),
        exportable: Some(false),
        tpm: None,
    }
}

fn code_of<T: std::fmt::Debug>(result: Result<T, Refusal>) -> Option<Reason> {
    result.err().map(|r| r.code)
}

/// A software issuing CA and a device key's CSR, for the renewal rules that look at names.
struct Fixture {
    ca: IssuingCa,
    device_key: attestca_sim::device::DeviceKey,
}

impl Fixture {
    fn new() -> Self {
        let root = SoftwareCa::self_signed("CN=Policy Test CA", 1).expect("CA");
        let der = root.der.clone();
        let ca = IssuingCa::new(vec![der], Arc::new(root.signer)).expect("issuing CA");
        Self {
            ca,
            device_key: attestca_sim::device::DeviceKey::generate().expect("device key"),
        }
    }

    fn csr(&self, der: &[u8]) -> ValidatedCsr {
        let lenient = policy(|p| p.cn_required = false);
        crate::csr::validate(der, &lenient).expect("valid CSR")
    }

    fn csr_named(&self, subject: &str, names: &[GeneralName]) -> ValidatedCsr {
        let der = self
            .device_key
            .csr_with_alt_names(subject.parse().expect("name"), names)
            .expect("CSR");
        self.csr(&der)
    }

    /// The certificate a CSR would get, with `device` certified as hardwareModuleName.
    fn issue(&self, csr: &ValidatedCsr, device: Option<DeviceIdentity>) -> Certificate {
        let profile = CertificateProfile::from_config("lab", &ProfileConfig::default())
            .expect("certificate profile");
        let leaf = LeafRequest {
            subject: csr.subject.clone(),
            public_key: csr.public_key.clone(),
            subject_alt_names: csr.subject_alt_names.clone(),
            device,
        };
        let issued = self
            .ca
            .issue(&profile, &leaf, SystemTime::now())
            .expect("issued");
        Certificate::from_der(&issued.der).expect("certificate")
    }
}

fn dns(name: &str) -> GeneralName {
    GeneralName::DnsName(der::asn1::Ia5String::new(name).expect("DNS name"))
}

fn alt_names(cert: &Certificate) -> Vec<GeneralName> {
    cert.tbs_certificate()
        .get_extension::<SubjectAltName>()
        .expect("extension decodes")
        .map(|(_, san)| san.0)
        .unwrap_or_default()
}

const NOW: i64 = 1_800_000_000;
const DAY: i64 = 86_400;

/// A certificate valid for 100 days, 80 of them gone.
fn predecessor(profile: &str) -> Predecessor<'_> {
    Predecessor {
        profile,
        revoked: false,
        not_before: NOW - 80 * DAY,
        not_after: NOW + 20 * DAY,
    }
}

fn renewal_policy(edit: impl FnOnce(&mut ProfileConfig)) -> RenewalPolicy {
    policy(edit).renewal
}

/// One case per refusal the policy can produce: the code expected, and what the policy said.
fn refusal_cases() -> Vec<(Reason, Option<Reason>)> {
    let lab = policy(|_| {});
    let required = policy(|p| p.attestation_required = true);
    let strict = policy(|p| {
        p.attestation_vendors = vec!["acme".into()];
        p.attestation_formats = vec![AttestationFormat::X509Chain];
        p.require_generated_on_device = true;
        p.require_non_exportable = true;
    });
    let with = |edit: fn(&mut AttestedKey)| {
        let mut key = attested();
        edit(&mut key);
        key
    };
    let rigs = policy(|p| p.rigs = vec!["rig-1".into()]);
    let renew = renewal_policy(|p| {
        p.renewal_after_fraction = 0.5;
        p.renewal_grace_secs = 3_600;
        p.renewal_min_interval_secs = 3_600;
        p.allow_rekey = true;
        p.rekey_requires_attestation = true;
    });
    let same_key_only = renewal_policy(|p| p.allow_rekey = false);

    let fixture = Fixture::new();
    let original = fixture.csr_named("CN=dev-1", &[dns("dev-1.example")]);
    let previous = fixture.issue(&original, Some(device()));
    let renamed = fixture.csr_named("CN=dev-2", &[dns("dev-1.example")]);
    let renamed_san = fixture.csr_named("CN=dev-1", &[dns("dev-2.example")]);
    let change_subject = {
        let attribute = Attribute {
            oid: renewal::CHANGE_SUBJECT_NAME,
            values: der::asn1::SetOfVec::try_from(vec![
                der::asn1::Any::encode_from(&der::asn1::Null).expect("NULL"),
            ])
            .expect("set"),
        };
        let der = fixture
            .device_key
            .csr_for("CN=dev-1".parse().expect("name"), vec![attribute])
            .expect("CSR");
        fixture.csr(&der)
    };
    let revoked = Predecessor {
        revoked: true,
        ..predecessor("lab")
    };
    let long_expired = Predecessor {
        not_before: NOW - 200 * DAY,
        not_after: NOW - 2 * 3_600,
        ..predecessor("lab")
    };
    let young = Predecessor {
        not_before: NOW - 10 * DAY,
        not_after: NOW + 90 * DAY,
        ..predecessor("lab")
    };

    vec![
        (
            Reason::AuthNotAllowedOnProfile,
            code_of(rigs.authorize_rig("rig-2")),
        ),
        (
            Reason::AttestationRequired,
            code_of(evidence_presence(&required.attestation, "lab", false)),
        ),
        (
            Reason::AttestationVendorNotAllowed,
            code_of(check_attested(
                &strict.attestation,
                "lab",
                &with(|k| k.vendor = "other".into()),
                false,
                None,
            )),
        ),
        (
            Reason::AttestationFormatNotAllowed,
            code_of(check_attested(
                &strict.attestation,
                "lab",
                &with(|k| k.format = AttestationFormat::TpmCertify),
                false,
                None,
            )),
        ),
        (
            Reason::AttestationKeyNotGeneratedOnDevice,
            code_of(check_attested(
                &strict.attestation,
                "lab",
                &with(|k| k.generated_on_device = Some(false)),
                false,
                None,
            )),
        ),
        (
            Reason::AttestationKeyExportable,
            code_of(check_attested(
                &strict.attestation,
                "lab",
                &with(|k| k.exportable = Some(true)),
                false,
                None,
            )),
        ),
        (
            Reason::AttestationDeviceDenied,
            code_of(check_attested(
                &lab.attestation,
                "lab",
                &attested(),
                true,
                None,
            )),
        ),
        (
            Reason::ReenrollDeviceMismatch,
            code_of(check_attested(
                &lab.attestation,
                "lab",
                &attested(),
                false,
                Some(Renewing {
                    device_identity: Some("acme:FFFF"),
                }),
            )),
        ),
        (
            Reason::AttestationNotInManifest,
            code_of(manifest_verdict(&attested(), false)),
        ),
        (
            Reason::AttestationCloneSuspected,
            code_of(clone_verdict(&attested(), Some("0A1B"))),
        ),
        (
            Reason::AttestationNonceUnknown,
            code_of(nonce_verdict(NonceCheck::Unknown, NonceCheck::Live)),
        ),
        (
            Reason::AttestationNonceForeign,
            code_of(nonce_verdict(NonceCheck::Foreign, NonceCheck::Live)),
        ),
        (
            Reason::AttestationNonceExpired,
            code_of(nonce_verdict(NonceCheck::Expired, NonceCheck::Consumed)),
        ),
        (
            Reason::AttestationNonceReused,
            code_of(nonce_verdict(NonceCheck::Reused, NonceCheck::Consumed)),
        ),
        (
            Reason::ReenrollUnknownCertificate,
            code_of(renewal::recorded(
                Some(vec![1u8, 2, 3]),
                |r: &Vec<u8>| r.as_slice(),
                &[1, 2, 4],
            )),
        ),
        (
            Reason::ReenrollRevoked,
            code_of(renewal::check_renewable(&renew, "lab", &revoked, NOW)),
        ),
        (
            Reason::ReenrollSuperseded,
            code_of(renewal::check_not_superseded(true)),
        ),
        (
            Reason::ReenrollProfileMismatch,
            code_of(renewal::check_renewable(
                &renew,
                "lab",
                &predecessor("other"),
                NOW,
            )),
        ),
        (
            Reason::ReenrollExpired,
            code_of(renewal::check_renewable(&renew, "lab", &long_expired, NOW)),
        ),
        (
            Reason::ReenrollTooEarly,
            code_of(renewal::check_renewable(&renew, "lab", &young, NOW)),
        ),
        (
            Reason::ReenrollRateLimited,
            code_of(renewal::check_interval(
                &renew,
                NOW - DAY,
                Some(NOW - 60),
                NOW,
            )),
        ),
        (
            Reason::ReenrollChangeSubjectName,
            code_of(renewal::check_same_names(&change_subject, &previous)),
        ),
        (
            Reason::ReenrollSubjectChanged,
            code_of(renewal::check_same_names(&renamed, &previous)),
        ),
        (
            Reason::ReenrollSanChanged,
            code_of(renewal::check_same_names(&renamed_san, &previous)),
        ),
        (
            Reason::ReenrollRekeyNotAllowed,
            code_of(renewal::check_rekey(&same_key_only, "lab", true, true)),
        ),
        (
            Reason::ReenrollRekeyRequiresAttestation,
            code_of(renewal::check_rekey(&renew, "lab", true, false)),
        ),
        (
            Reason::AkEndorsementMalformed,
            code_of(attestation_key::check_endorsement(
                b"not DER",
                &[],
                SystemTime::now(),
            )),
        ),
        (
            Reason::AkEndorsementUntrusted,
            code_of(attestation_key::check_endorsement(
                &ak_fixtures::endorsement().1,
                &[],
                SystemTime::now(),
            )),
        ),
        (
            Reason::AkPublicMalformed,
            code_of(attestation_key::check_attestation_key(&[0x00, 0x01])),
        ),
        (
            Reason::AkAttributes,
            code_of(attestation_key::check_attestation_key(
                &ak_fixtures::rsa_public_area(ak_fixtures::AK_ATTRIBUTES & !(1 << 16)),
            )),
        ),
        (
            Reason::AkCredentialWrong,
            code_of(attestation_key::challenge_verdict(NonceCheck::Unknown)),
        ),
        (
            Reason::AkCredentialForeign,
            code_of(attestation_key::challenge_verdict(NonceCheck::Foreign)),
        ),
        (
            Reason::AkCredentialExpired,
            code_of(attestation_key::challenge_verdict(NonceCheck::Expired)),
        ),
        (
            Reason::AkCredentialReused,
            code_of(attestation_key::challenge_verdict(NonceCheck::Reused)),
        ),
        (
            Reason::AkAlreadyCertified,
            code_of(attestation_key::reissue_verdict(Some("0a"), false)),
        ),
    ]
}

#[test]
fn every_refusal_case_gives_its_code() {
    let cases = refusal_cases();
    for (expected, got) in &cases {
        assert_eq!(got, &Some(*expected), "case for {expected}");
    }
    let produced: BTreeSet<Reason> = cases.iter().filter_map(|(_, got)| *got).collect();
    let all: BTreeSet<Reason> = POLICY_REASONS.into_iter().collect();
    assert_eq!(produced, all, "every policy reason code has a case");
}

#[test]
fn reason_codes_keep_their_strings_and_statuses() {
    let strings: BTreeSet<&str> = POLICY_REASONS.iter().map(|c| c.as_str()).collect();
    assert_eq!(
        strings.len(),
        POLICY_REASONS.len(),
        "no two codes share a string"
    );
    let bad_requests: Vec<&str> = POLICY_REASONS
        .iter()
        .filter(|c| class(**c) == RefusalClass::BadRequest)
        .map(|c| c.as_str())
        .collect();
    assert_eq!(
        bad_requests,
        [
            "reenroll.change_subject_name",
            "reenroll.subject_changed",
            "reenroll.san_changed",
            "ak.endorsement_malformed",
            "ak.public_malformed"
        ]
    );
    assert_eq!(
        class(Reason::ReenrollRateLimited),
        RefusalClass::TooManyRequests
    );
    assert_eq!(
        class(Reason::AuthNotAllowedOnProfile),
        RefusalClass::Forbidden
    );
}

#[test]
fn rigs_star_admits_everyone_and_a_list_only_its_names() {
    let everyone = policy(|p| p.rigs = vec!["*".into()]);
    assert!(everyone.authorize_rig("anyone").is_ok());
    let listed = policy(|p| p.rigs = vec!["rig-1".into(), "rig-2".into()]);
    assert!(listed.authorize_rig("rig-2").is_ok());
    let refusal = listed.authorize_rig("rig-3").expect_err("not listed");
    assert_eq!(
        refusal.detail,
        "rig \"rig-3\" is not allowed to enroll on profile \"lab\""
    );
    let nobody = policy(|p| p.rigs = Vec::new());
    assert!(!nobody.allows_rig("rig-1"));
}

#[test]
fn evidence_is_optional_unless_required() {
    let optional = policy(|_| {});
    assert_eq!(
        evidence_presence(&optional.attestation, "lab", false),
        Ok(false)
    );
    assert_eq!(
        evidence_presence(&optional.attestation, "lab", true),
        Ok(true)
    );
    let required = policy(|p| p.attestation_required = true);
    assert_eq!(
        evidence_presence(&required.attestation, "lab", true),
        Ok(true)
    );
}

#[test]
fn unstated_key_origin_passes_and_checks_run_in_documented_order() {
    let strict = policy(|p| {
        p.attestation_vendors = vec!["acme".into()];
        p.attestation_formats = vec![AttestationFormat::X509Chain];
        p.require_generated_on_device = true;
        p.require_non_exportable = true;
    });
    // A format that does not say where the key came from is not refused for it.
    let silent = AttestedKey {
        generated_on_device: None,
        exportable: None,
        ..attested()
    };
    assert!(check_attested(&strict.attestation, "lab", &silent, false, None).is_ok());
    // Everything wrong at once: the vendor is reported first.
    let everything_wrong = AttestedKey {
        vendor: "other".into(),
        format: AttestationFormat::TpmCertify,
        generated_on_device: Some(false),
        exportable: Some(true),
        ..attested()
    };
    assert_eq!(
        code_of(check_attested(
            &strict.attestation,
            "lab",
            &everything_wrong,
            true,
            Some(Renewing {
                device_identity: None
            }),
        )),
        Some(Reason::AttestationVendorNotAllowed)
    );
    // The deny-list comes before the renewal's device check.
    assert_eq!(
        code_of(check_attested(
            &strict.attestation,
            "lab",
            &attested(),
            true,
            Some(Renewing {
                device_identity: None
            }),
        )),
        Some(Reason::AttestationDeviceDenied)
    );
}

#[test]
fn the_decision_names_the_look_ups_still_needed() {
    let first = policy(|p| p.require_manifest = true);
    assert_eq!(
        check_attested(&first.attestation, "lab", &attested(), false, None),
        Ok(AttestationDecision {
            check_manifest: true,
            check_clones: true,
        })
    );
    // A device renewing its own certificate is no clone; reprovisioning turns clone checks off.
    let same_device = Renewing {
        device_identity: Some("acme:0123F2"),
    };
    assert_eq!(
        check_attested(
            &first.attestation,
            "lab",
            &attested(),
            false,
            Some(same_device)
        ),
        Ok(AttestationDecision {
            check_manifest: true,
            check_clones: false,
        })
    );
    let reprovision = policy(|p| p.allow_reprovision = true);
    assert_eq!(
        check_attested(&reprovision.attestation, "lab", &attested(), false, None),
        Ok(AttestationDecision {
            check_manifest: false,
            check_clones: false,
        })
    );
    assert!(manifest_verdict(&attested(), true).is_ok());
    assert!(clone_verdict(&attested(), None).is_ok());
    let clone = clone_verdict(&attested(), Some("0A1B")).expect_err("clone");
    assert!(clone.detail.contains("acme:0123F2") && clone.detail.contains("0A1B"));
}

#[test]
fn a_renewal_without_an_attested_predecessor_mismatches_any_device() {
    let lab = policy(|_| {});
    let refusal = check_attested(
        &lab.attestation,
        "lab",
        &attested(),
        false,
        Some(Renewing {
            device_identity: None,
        }),
    )
    .expect_err("no device on record");
    assert_eq!(refusal.code, Reason::ReenrollDeviceMismatch);
    assert!(refusal.detail.ends_with("belongs to no attested device"));
}

#[test]
fn nonces_pass_only_in_the_expected_state() {
    assert!(nonce_verdict(NonceCheck::Live, NonceCheck::Live).is_ok());
    assert!(nonce_verdict(NonceCheck::Consumed, NonceCheck::Consumed).is_ok());
    // A nonce live after the spend, or consumed by a look, is reported as reused.
    assert_eq!(
        code_of(nonce_verdict(NonceCheck::Live, NonceCheck::Consumed)),
        Some(Reason::AttestationNonceReused)
    );
    assert_eq!(
        code_of(nonce_verdict(NonceCheck::Consumed, NonceCheck::Live)),
        Some(Reason::AttestationNonceReused)
    );
}

#[test]
fn renewal_window_edges() {
    let rules = renewal_policy(|p| {
        p.renewal_after_fraction = 0.5;
        p.renewal_grace_secs = 3_600;
    });
    let cert = Predecessor {
        profile: "lab",
        revoked: false,
        not_before: NOW - 50 * DAY,
        not_after: NOW + 50 * DAY,
    };
    // Exactly half its life gone: renewable; a second earlier: too early.
    assert!(renewal::check_renewable(&rules, "lab", &cert, NOW).is_ok());
    let refusal = renewal::check_renewable(&rules, "lab", &cert, NOW - 1).expect_err("early");
    assert_eq!(refusal.code, Reason::ReenrollTooEarly);
    assert_eq!(
        refusal.detail,
        format!("this certificate may be renewed from Unix time {NOW} on")
    );
    // Within the grace after expiry: renewable; past it: expired.
    let expiry = cert.not_after;
    assert!(renewal::check_renewable(&rules, "lab", &cert, expiry + 3_600).is_ok());
    assert_eq!(
        code_of(renewal::check_renewable(
            &rules,
            "lab",
            &cert,
            expiry + 3_601
        )),
        Some(Reason::ReenrollExpired)
    );
    // Revocation is reported before everything else.
    let revoked_elsewhere = Predecessor {
        revoked: true,
        profile: "other",
        ..cert
    };
    assert_eq!(
        code_of(renewal::check_renewable(
            &rules,
            "lab",
            &revoked_elsewhere,
            NOW
        )),
        Some(Reason::ReenrollRevoked)
    );
    // The fraction is clamped to [0, 1].
    assert_eq!(
        renewal_policy(|p| p.renewal_after_fraction = 7.0).after_fraction,
        1.0
    );
    assert_eq!(
        renewal_policy(|p| p.renewal_after_fraction = -1.0).after_fraction,
        0.0
    );
}

#[test]
fn the_renewal_interval_counts_from_the_latest_renewal_or_issue() {
    let rules = renewal_policy(|p| p.renewal_min_interval_secs = 600);
    assert!(renewal::check_interval(&rules, NOW - 600, None, NOW).is_ok());
    let refusal = renewal::check_interval(&rules, NOW - 100, None, NOW).expect_err("too soon");
    assert_eq!(refusal.code, Reason::ReenrollRateLimited);
    assert_eq!(refusal.retry_after_secs, Some(500));
    assert_eq!(
        refusal.detail,
        "this device renewed less than 600 seconds ago"
    );
    // A renewal older than the issue (clock skew) does not shorten the wait.
    let refusal =
        renewal::check_interval(&rules, NOW - 60, Some(NOW - 6_000), NOW).expect_err("issue");
    assert_eq!(refusal.retry_after_secs, Some(540));
    let refusal =
        renewal::check_interval(&rules, NOW - 6_000, Some(NOW - 300), NOW).expect_err("renewal");
    assert_eq!(refusal.retry_after_secs, Some(300));
}

#[test]
fn a_recorded_certificate_must_be_the_one_presented() {
    assert_eq!(
        renewal::recorded(Some(vec![1u8, 2]), |r: &Vec<u8>| r.as_slice(), &[1, 2]),
        Ok(vec![1, 2])
    );
    assert_eq!(
        code_of(renewal::recorded(None, |r: &Vec<u8>| r.as_slice(), &[1, 2])),
        Some(Reason::ReenrollUnknownCertificate)
    );
    assert!(renewal::check_not_revoked(false).is_ok());
    assert_eq!(
        code_of(renewal::check_not_revoked(true)),
        Some(Reason::ReenrollRevoked)
    );
    assert!(renewal::check_not_superseded(false).is_ok());
}

#[test]
fn rekey_rules() {
    let open = renewal_policy(|p| {
        p.allow_rekey = true;
        p.rekey_requires_attestation = false;
    });
    assert!(renewal::check_rekey(&open, "lab", true, false).is_ok());
    let closed = renewal_policy(|p| p.allow_rekey = false);
    // The same key renews whatever the rekey rules say.
    assert!(renewal::check_rekey(&closed, "lab", false, false).is_ok());
    let attested_only = renewal_policy(|p| {
        p.allow_rekey = true;
        p.rekey_requires_attestation = true;
    });
    assert!(renewal::check_rekey(&attested_only, "lab", true, true).is_ok());
}

#[test]
fn a_renewal_csr_keeps_the_names_and_the_hardware_name_carries_over() {
    let fixture = Fixture::new();
    let names = [dns("dev-1.example"), dns("dev-1.local")];
    let original = fixture.csr_named("CN=dev-1", &names);
    let previous = fixture.issue(&original, Some(device()));
    // The same names in another order, without the hardwareModuleName the CA added: accepted.
    let reordered = fixture.csr_named("CN=dev-1", &[names[1].clone(), names[0].clone()]);
    assert!(renewal::check_same_names(&reordered, &previous).is_ok());
    assert_eq!(renewal::hardware_identity(&previous), Some(device()));
    let plain = fixture.issue(&original, None);
    assert_eq!(renewal::hardware_identity(&plain), None);
}

#[test]
fn issuance_adds_the_hardware_module_name_after_the_requested_names() {
    let fixture = Fixture::new();
    let requested = [dns("dev-1.example"), dns("dev-1.local")];
    let csr = fixture.csr_named("CN=dev-1", &requested);
    let hardware =
        crate::issuance::extensions::hardware_module_name(&device()).expect("hardware name");
    let with_device = fixture.issue(&csr, Some(device()));
    let expected: Vec<GeneralName> = requested
        .iter()
        .cloned()
        .chain([hardware.clone()])
        .collect();
    assert_eq!(alt_names(&with_device), expected);
    let without = fixture.issue(&csr, None);
    assert_eq!(alt_names(&without), requested.to_vec());
    // A device alone (a subject-only CSR) still gets its subjectAltName extension.
    let bare = fixture.csr_named("CN=dev-1", &[]);
    assert_eq!(
        alt_names(&fixture.issue(&bare, Some(device()))),
        vec![hardware]
    );
    assert!(alt_names(&fixture.issue(&bare, None)).is_empty());
    let leaf = LeafRequest {
        subject: csr.subject,
        public_key: csr.public_key,
        subject_alt_names: csr.subject_alt_names,
        device: Some(device()),
    };
    assert_eq!(leaf.issued_alt_names().expect("names"), expected);
}

#[test]
fn csr_attributes_are_the_bytes_est_serves() {
    // SEQUENCE { id-aa-attestation, SEQUENCE { id-ecPublicKey, SET { secp256r1 } },
    //            ecdsa-with-SHA256 }, as RFC 7030 4.5.2 and RFC 8951 4 spell it.
    let p256_attested = policy(|p| {
        p.key_algorithms = vec![DeviceKeyAlgorithm::P256];
        p.attestation_required = true;
    });
    assert_eq!(
        hex::encode(p256_attested.csr_attributes().expect("csrattrs")),
        "302e060b2a864886f70d010910023b\
         301506072a8648ce3d0201310a06082a8648ce3d030107\
         06082a8648ce3d040302"
    );
    let p384 = policy(|p| p.key_algorithms = vec![DeviceKeyAlgorithm::P384]);
    assert_eq!(
        hex::encode(p384.csr_attributes().expect("csrattrs")),
        "301e301206072a8648ce3d0201310706052b8104002206082a8648ce3d040303"
    );
    // More than one curve: nothing to ask for but evidence, if required.
    let both = policy(|p| {
        p.key_algorithms = vec![DeviceKeyAlgorithm::P256, DeviceKeyAlgorithm::P384];
    });
    assert_eq!(
        hex::encode(both.csr_attributes().expect("csrattrs")),
        "3000"
    );
    let both_attested = EnrollmentPolicy {
        attestation: AttestationPolicy {
            required: true,
            ..both.attestation.clone()
        },
        ..both
    };
    assert_eq!(
        hex::encode(both_attested.csr_attributes().expect("csrattrs")),
        "300d060b2a864886f70d010910023b"
    );
}

/// Documented codes the policy above does not produce, and why.
const NOT_POLICY: &[(&str, &str)] = &[
    ("profile.unknown", "the server's profile look-up by label"),
    (
        "auth.missing",
        "authentication (server access layer: TLS and Basic credentials)",
    ),
    (
        "auth.invalid",
        "authentication (server access layer: password hashes in the store)",
    ),
    (
        "enroll.retry_revoked",
        "the retry path: the store's earlier-issue look-up",
    ),
    (
        "nonce.length",
        "the nonce endpoint's request validation (server)",
    ),
    ("nonce.request", "the nonce endpoint's JSON decoding (wire)"),
    ("request.content_type", "the wire: media type"),
    ("request.encoding", "the wire: base64 body"),
    ("request.too_large", "the wire: body limit"),
    ("request.timeout", "the wire: body read deadline"),
    ("request.body", "the wire: the body could not be read"),
    (
        "ak.disabled",
        "the server: attestation-key certification is configured off",
    ),
    ("ak.request", "the wire: the attestation-key JSON"),
    (
        "nonce.unavailable",
        "I/O: the random generator behind the nonce endpoint",
    ),
    ("attestation.unavailable", "I/O: the verification worker"),
    (
        "reenroll.predecessor",
        "I/O: the stored predecessor does not decode",
    ),
    (
        "issuance.serial_collision",
        "issuance: no unique serial number could be drawn",
    ),
    (
        "request.abandoned",
        "I/O: the client went away (event only)",
    ),
    (
        "overload.enrollments",
        "I/O: admission control (concurrency)",
    ),
    ("overload.authentication", "I/O: password-check concurrency"),
    ("service.timeout", "I/O: the request deadline"),
    ("service.shutting_down", "I/O: shutdown grace"),
    ("storage.unavailable", "I/O: the database"),
    ("signer.unavailable", "I/O: the CA key"),
];

/// Documented codes the evidence verifiers (crate::attestation) produce: trust and format, not
/// profile policy. Each must be a code of those verifiers' sources.
const VERIFIER: &[&str] = &[
    "attestation.malformed",
    "attestation.multiple_attributes",
    "attestation.unknown_statement_type",
    "attestation.untrusted_root",
    "attestation.chain_invalid",
    "attestation.expired",
    "attestation.signature_invalid",
    "attestation.ak_not_allowed",
    "attestation.tpm_name_mismatch",
    "attestation.tpm_key_attributes",
    "attestation.weak_hash",
    "attestation.key_mismatch",
    "attestation.device_mismatch",
    "attestation.device_identity",
    "attestation.too_complex",
];

/// The reason codes in the docs' tables (and renewal.md's `reenroll.*`, some of which are named
/// in its prose), parsed as [`crate::reason`]'s tests parse them.
fn documented_codes() -> BTreeSet<String> {
    use crate::reason::tests::{backticked_codes, table_codes};
    let est = include_str!("../../../../docs/est-profile.md");
    let attestation = include_str!("../../../../docs/attestation.md");
    let renewal = include_str!("../../../../docs/renewal.md");
    let mut codes = BTreeSet::new();
    for doc in [est, attestation, renewal] {
        codes.extend(table_codes(doc));
    }
    codes.extend(
        backticked_codes(renewal)
            .into_iter()
            .filter(|c| c.starts_with("reenroll.")),
    );
    codes
}

#[test]
fn every_documented_code_is_accounted_for() {
    let documented = documented_codes();
    assert!(documented.len() > 60, "tables not found: {documented:?}");

    // The policy's codes: produced by the cases above, all documented.
    let produced: BTreeSet<String> = refusal_cases()
        .into_iter()
        .filter_map(|(_, got)| got.map(|c| c.as_str().to_owned()))
        .collect();
    for code in &produced {
        assert!(
            documented.contains(code),
            "{code} is produced but not documented"
        );
    }

    // The CSR rules' codes: each asserted by a test of crate::csr.
    let csr_source = include_str!("../csr.rs");
    let (csr_code, csr_tests) = csr_source
        .split_once("#[cfg(test)]")
        .expect("csr.rs has tests");
    let verifier_sources = [
        include_str!("../attestation/mod.rs"),
        include_str!("../attestation/bundle.rs"),
        include_str!("../attestation/chain.rs"),
        include_str!("../attestation/device_cert.rs"),
        include_str!("../attestation/gate.rs"),
        include_str!("../attestation/tpm.rs"),
        include_str!("../attestation/x509_chain.rs"),
        include_str!("../attestation/vendors.rs"),
        include_str!("../attestation/manifest.rs"),
    ]
    .concat();

    let mut unaccounted = Vec::new();
    for code in &documented {
        let quoted = format!("\"{code}\"");
        // Sources name codes by variant (`Reason::CsrMalformed`), tests by string.
        let variant = Reason::parse(code).map(|r| format!("Reason::{r:?}"));
        let produced_by = |source: &str| variant.as_ref().is_some_and(|v| source.contains(v));
        let accounted = if produced.contains(code) {
            true
        } else if code.starts_with("csr.") {
            assert!(produced_by(csr_code), "{code} is not a code of csr.rs");
            assert!(
                csr_tests.contains(&quoted),
                "no csr.rs test produces {code}"
            );
            true
        } else if VERIFIER.contains(&code.as_str()) {
            assert!(
                produced_by(&verifier_sources),
                "{code} is not a code of the evidence verifiers"
            );
            true
        } else {
            NOT_POLICY.iter().any(|(c, _)| c == code)
        };
        if !accounted {
            unaccounted.push(code.clone());
        }
    }
    assert!(
        unaccounted.is_empty(),
        "documented codes neither produced by a test nor listed with a reason: {unaccounted:?}"
    );
    // And the lists name only documented codes (no stale entries).
    for code in NOT_POLICY
        .iter()
        .map(|(c, _)| *c)
        .chain(VERIFIER.iter().copied())
    {
        assert!(
            documented.contains(code),
            "{code} is listed but not documented"
        );
    }
}
