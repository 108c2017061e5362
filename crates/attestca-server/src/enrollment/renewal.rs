//! simplereenroll (RFC 7030 §4.2.2): a fielded device renews, or rekeys, with the certificate
//! it already holds. The TLS layer has proven the device holds that certificate's key; this
//! decides whether the certificate still counts: issued by this CA and recorded, unrevoked,
//! unexpired (or within the profile's grace), old enough to renew, not renewed too recently;
//! the CSR keeps the subject and names; a new key is allowed and, if the profile says so,
//! attested by the same device.
//!
//! Those decisions are pure ([`attestca_core::policy::renewal`]); this file looks up the facts
//! they need (the presented certificate's record, its latest renewal) and does the rest of the
//! I/O (the retry look-up, evidence, issuing, revoking a superseded predecessor).

use std::time::SystemTime;

use attestca_core::policy::renewal as policy;
use attestca_core::reason::Reason;
use attestca_core::record::CertStatus;
use der::Decode;
use x509_cert::Certificate;

use super::{
    Admission, Admitted, Approved, EnrollRequest, Enrolled, EnrollmentError, EnrollmentService,
    OPERATION_REENROLL, csr,
};
use crate::access::{AuthError, AuthMethod, DevicePeer, PeerCertificate, Requester};
use crate::issuance::IssuanceProfile;
use crate::store::{CertificateRecord, EnrollmentEvent};

fn bad(code: Reason, detail: impl Into<String>) -> EnrollmentError {
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
            name: device.serial.to_string(),
            method: AuthMethod::Device,
        };
        event.requester = Some(requester.id());
        event.predecessor_serial = Some(device.serial.clone());
        self.spend_budget(&requester)?;
        let predecessor = self.recorded_device_certificate(device).await?;
        event.device_identity = predecessor.device_identity.clone();
        self.check_renewable(profile, &predecessor, event.occurred_at)
            .await?;

        let csr = csr::validate(&request.csr_der, &profile.policy)?;
        let previous = Certificate::from_der(&predecessor.der)
            .map_err(|e| bad(Reason::ReenrollPredecessor, e.to_string()))?;
        policy::check_same_names(&csr, &previous)?;
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
        let rules = &profile.policy.renewal;
        policy::check_rekey(rules, &profile.label, rekey, evidence.is_some())?;
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
        let (device, nonce) = match attested {
            Some(checked) => {
                let (device, nonce) = checked.into_parts();
                (Some(device), nonce)
            }
            None => (
                policy::hardware_identity(&previous).zip(predecessor.device_identity.clone()),
                None,
            ),
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
                    nonce,
                },
                now,
                event,
            )
            .await?;
        if !enrolled.retried && rules.revoke_predecessor_after_secs == Some(0) {
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
        let record = self
            .store
            .certificate(&device.serial)
            .await
            .map_err(|e| self.storage_failure(e))?;
        Ok(policy::recorded(
            record,
            |r: &CertificateRecord| &r.der,
            &device.der,
        )?)
    }

    /// Whether a device may still renew with the certificate it presents, before it is given a
    /// nonce for that renewal: recorded, not revoked, not already superseded by a renewal.
    pub(super) async fn check_device_may_renew(
        &self,
        device: &DevicePeer,
    ) -> Result<(), EnrollmentError> {
        let record = self.recorded_device_certificate(device).await?;
        policy::check_not_revoked(record.status == CertStatus::Revoked)?;
        let renewed = self
            .store
            .latest_renewal_of(&record.serial)
            .await
            .map_err(|e| self.storage_failure(e))?
            .is_some();
        Ok(policy::check_not_superseded(renewed)?)
    }

    /// Whether the presented certificate may renew now under `profile`.
    async fn check_renewable(
        &self,
        profile: &IssuanceProfile,
        predecessor: &CertificateRecord,
        now: i64,
    ) -> Result<(), EnrollmentError> {
        let rules = &profile.policy.renewal;
        policy::check_renewable(
            rules,
            &profile.label,
            &policy::Predecessor {
                profile: &predecessor.profile,
                revoked: predecessor.status == CertStatus::Revoked,
                not_before: predecessor.not_before,
                not_after: predecessor.not_after,
            },
            now,
        )?;
        let latest_renewal = self
            .store
            .latest_renewal_of(&predecessor.serial)
            .await
            .map_err(|e| self.storage_failure(e))?;
        Ok(policy::check_interval(
            rules,
            predecessor.issued_at,
            latest_renewal,
            now,
        )?)
    }
}
