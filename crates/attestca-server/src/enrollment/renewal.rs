//! simplereenroll (RFC 7030 §4.2.2): a fielded device renews, or rekeys, with the certificate
//! it already holds. The TLS layer has proven the device holds that certificate's key; this
//! decides whether the certificate still counts: issued by this CA and recorded, unrevoked,
//! unexpired (or within the profile's grace), old enough to renew, not renewed too recently;
//! the CSR keeps the subject and names; a new key is allowed and, if the profile says so,
//! attested by the same device.

use std::time::SystemTime;

use der::{Decode, Encode};
use x509_cert::Certificate;
use x509_cert::ext::pkix::SubjectAltName;
use x509_cert::ext::pkix::name::{GeneralName, HardwareModuleName};

use super::{
    Admission, Admitted, Approved, EnrollRequest, Enrolled, EnrollmentError, EnrollmentService,
    OPERATION_REENROLL, csr,
};
use crate::access::{AuthError, AuthMethod, DevicePeer, PeerCertificate, Requester};
use crate::attestation::DeviceIdentity;
use crate::issuance::IssuanceProfile;
use crate::store::{CertificateRecord, EnrollmentEvent};

/// id-cmc-changeSubjectName (RFC 6402): asks to change the name; attestca refuses it.
const CHANGE_SUBJECT_NAME: der::asn1::ObjectIdentifier =
    der::asn1::ObjectIdentifier::new_unwrap("1.3.6.1.5.5.7.7.36");

fn forbidden(code: &'static str, detail: impl Into<String>) -> EnrollmentError {
    EnrollmentError::Forbidden {
        code,
        detail: detail.into(),
    }
}

fn bad(code: &'static str, detail: impl Into<String>) -> EnrollmentError {
    EnrollmentError::BadRequest {
        code,
        detail: detail.into(),
    }
}

impl EnrollmentService {
    /// Handles `simplereenroll`.
    pub async fn reenroll(&self, request: EnrollRequest) -> Result<Enrolled, EnrollmentError> {
        self.decide_recorded(
            OPERATION_REENROLL,
            &request,
            async |now, event, admission| {
                self.decide_renewal(&request, now, event, admission).await
            },
        )
        .await
    }

    async fn decide_renewal(
        &self,
        request: &EnrollRequest,
        now: SystemTime,
        event: &mut EnrollmentEvent,
        admission: &Admission,
    ) -> Result<Enrolled, EnrollmentError> {
        let profile = self
            .profile(request.label.as_deref())
            .ok_or_else(|| EnrollmentError::UnknownProfile(event.profile.clone()))?;
        let PeerCertificate::Device(device) = &request.credentials.peer_certificate else {
            return Err(EnrollmentError::Unauthenticated(AuthError::Missing));
        };
        let requester = Requester {
            name: device.serial.clone(),
            method: AuthMethod::Device,
        };
        event.requester = Some(requester.id());
        event.predecessor_serial = Some(device.serial.clone());
        self.spend_budget(&requester)?;
        let predecessor = self.recorded_device_certificate(device).await?;
        event.device_identity = predecessor.device_identity.clone();
        self.check_renewable(profile, &predecessor, event.occurred_at)
            .await?;

        let csr = csr::validate(&request.csr_der, profile)?;
        let previous = Certificate::from_der(&predecessor.der)
            .map_err(|e| bad("reenroll.predecessor", e.to_string()))?;
        check_same_names(&csr, &previous)?;
        let evidence = self.gate.evidence(&csr.request)?;
        event.evidence_sha256 = evidence.as_ref().map(|e| e.sha256.clone());

        let csr_sha256 = {
            use sha2::Digest;
            sha2::Sha256::digest(&request.csr_der).to_vec()
        };
        event.csr_sha256 = Some(csr_sha256.clone());
        if let Some(earlier) = self
            .earlier_issue(&requester, profile, &csr_sha256, event)
            .await?
        {
            return Ok(earlier);
        }

        let rekey = !crate::attestation::same_key(
            &csr.public_key,
            previous.tbs_certificate().subject_public_key_info(),
        );
        let policy = &profile.renewal;
        if rekey && !policy.allow_rekey {
            return Err(forbidden(
                "reenroll.rekey_not_allowed",
                format!(
                    "profile {:?} renews certificates only for the same key",
                    profile.label
                ),
            ));
        }
        if rekey && policy.rekey_requires_attestation && evidence.is_none() {
            return Err(forbidden(
                "reenroll.rekey_requires_attestation",
                "a new key must come with attestation evidence from the same device",
            ));
        }
        let attested = match evidence {
            Some(evidence) => {
                self.check_attestation(
                    profile,
                    Admitted {
                        requester: &requester,
                        admission,
                    },
                    &csr,
                    Some(evidence),
                    Some(&predecessor),
                    event,
                )
                .await?
            }
            None => None,
        };
        let device = match attested {
            Some(a) => {
                let key = a.device_key();
                Some((a.device, key))
            }
            None => hardware_identity(&previous).zip(predecessor.device_identity.clone()),
        };
        let enrolled = self
            .issue(
                profile,
                &requester,
                admission,
                Approved {
                    csr: &csr,
                    device,
                    csr_sha256,
                    predecessor_serial: Some(predecessor.serial.clone()),
                },
                now,
                event,
            )
            .await?;
        if !enrolled.retried && policy.revoke_predecessor_after_secs == Some(0) {
            // Audited as system:renewal, in the transaction that revokes.
            self.revocations
                .supersede_renewed(&predecessor.serial, &enrolled.serial, event.occurred_at)
                .await
                .map_err(|e| self.storage_failure(e))?;
        }
        Ok(enrolled)
    }

    /// The record of the certificate a device presents: issued by this CA and recorded, with
    /// the very bytes presented.
    async fn recorded_device_certificate(
        &self,
        device: &DevicePeer,
    ) -> Result<CertificateRecord, EnrollmentError> {
        self.store
            .certificate(&device.serial)
            .await
            .map_err(|e| self.storage_failure(e))?
            .filter(|record| record.der == device.der)
            .ok_or_else(|| {
                forbidden(
                    "reenroll.unknown_certificate",
                    "the client certificate is not one this CA issued and recorded",
                )
            })
    }

    /// Whether a device may still renew with the certificate it presents, before it is given a
    /// nonce for that renewal: recorded, not revoked, not already superseded by a renewal.
    pub(super) async fn check_device_may_renew(
        &self,
        device: &DevicePeer,
    ) -> Result<(), EnrollmentError> {
        let record = self.recorded_device_certificate(device).await?;
        if record.status == "revoked" {
            return Err(forbidden(
                "reenroll.revoked",
                "the certificate being renewed is revoked",
            ));
        }
        if self
            .store
            .latest_renewal_of(&record.serial)
            .await
            .map_err(|e| self.storage_failure(e))?
            .is_some()
        {
            return Err(forbidden(
                "reenroll.superseded",
                "the certificate has already been renewed: renew with its successor",
            ));
        }
        Ok(())
    }

    /// Whether the presented certificate may renew now under `profile`.
    async fn check_renewable(
        &self,
        profile: &IssuanceProfile,
        predecessor: &CertificateRecord,
        now: i64,
    ) -> Result<(), EnrollmentError> {
        let policy = &profile.renewal;
        if predecessor.status == "revoked" {
            return Err(forbidden(
                "reenroll.revoked",
                "the certificate being renewed is revoked",
            ));
        }
        if predecessor.profile != profile.label {
            return Err(forbidden(
                "reenroll.profile_mismatch",
                format!(
                    "the certificate was issued under profile {:?}; renew it there",
                    predecessor.profile
                ),
            ));
        }
        if now > predecessor.not_after + policy.grace_secs as i64 {
            return Err(forbidden(
                "reenroll.expired",
                "the certificate being renewed has expired",
            ));
        }
        let lifetime = (predecessor.not_after - predecessor.not_before).max(0) as f64;
        let earliest = predecessor.not_before + (lifetime * policy.after_fraction) as i64;
        if now < earliest {
            return Err(forbidden(
                "reenroll.too_early",
                format!("this certificate may be renewed from Unix time {earliest} on"),
            ));
        }
        let last = self
            .store
            .latest_renewal_of(&predecessor.serial)
            .await
            .map_err(|e| self.storage_failure(e))?
            .into_iter()
            .chain([predecessor.issued_at])
            .max()
            .unwrap_or(predecessor.issued_at);
        let next_allowed = last + policy.min_interval_secs as i64;
        if now < next_allowed {
            return Err(EnrollmentError::TooManyRequests {
                code: "reenroll.rate_limited",
                detail: format!(
                    "this device renewed less than {} seconds ago",
                    policy.min_interval_secs
                ),
                retry_after_secs: (next_allowed - now) as u64,
            });
        }
        Ok(())
    }
}

/// The CSR keeps the presented certificate's subject (DER-equal) and SubjectAltNames (as a
/// set, without the hardwareModuleName the CA adds itself).
fn check_same_names(
    csr: &csr::ValidatedCsr,
    previous: &Certificate,
) -> Result<(), EnrollmentError> {
    if csr
        .request
        .info
        .attributes
        .iter()
        .any(|a| a.oid == CHANGE_SUBJECT_NAME)
    {
        return Err(bad(
            "reenroll.change_subject_name",
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
        return Err(bad(
            "reenroll.subject_changed",
            "the CSR's subject differs from the certificate being renewed",
        ));
    }
    let mut requested: Vec<Vec<u8>> = csr
        .subject_alt_names
        .iter()
        .filter(|n| !is_hardware_module_name(n))
        .filter_map(|n| n.to_der().ok())
        .collect();
    let mut current: Vec<Vec<u8>> = previous
        .tbs_certificate()
        .get_extension::<SubjectAltName>()
        .ok()
        .flatten()
        .map(|(_, san)| san.0)
        .unwrap_or_default()
        .iter()
        .filter(|n| !is_hardware_module_name(n))
        .filter_map(|n| n.to_der().ok())
        .collect();
    requested.sort();
    current.sort();
    if requested != current {
        return Err(bad(
            "reenroll.san_changed",
            "the CSR's subjectAltNames differ from the certificate being renewed",
        ));
    }
    Ok(())
}

fn is_hardware_module_name(name: &GeneralName) -> bool {
    matches!(name, GeneralName::OtherName(o) if HardwareModuleName::from_other_name(o).ok().flatten().is_some())
}

/// The hardwareModuleName of a certificate, to carry over to its renewal.
fn hardware_identity(cert: &Certificate) -> Option<DeviceIdentity> {
    let (_, san) = cert
        .tbs_certificate()
        .get_extension::<SubjectAltName>()
        .ok()??;
    san.0.iter().find_map(|n| match n {
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
