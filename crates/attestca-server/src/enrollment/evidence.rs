//! The attestation part of the enrollment decision: verify the evidence, then apply the
//! profile's policy — vendor and format, key origin, deny-list, manifest, clones, and last the
//! nonce, which is spent only when everything else has passed.

use sha2::{Digest, Sha256};

use super::{EnrollmentError, EnrollmentService};
use crate::attestation::bundle::Evidence;
use crate::attestation::{AttestationError, AttestedKey, FailureKind};
use crate::issuance::IssuanceProfile;
use crate::store::{EnrollmentEvent, NonceCheck};

impl From<AttestationError> for EnrollmentError {
    fn from(e: AttestationError) -> Self {
        match e.kind {
            FailureKind::Malformed => EnrollmentError::BadRequest {
                code: e.code,
                detail: e.detail,
            },
            FailureKind::Refused => EnrollmentError::Forbidden {
                code: e.code,
                detail: e.detail,
            },
        }
    }
}

fn refuse(code: &'static str, detail: impl Into<String>) -> EnrollmentError {
    EnrollmentError::Forbidden {
        code,
        detail: detail.into(),
    }
}

impl EnrollmentService {
    /// Verifies the evidence (if any) and applies the profile's attestation policy. Returns
    /// what the evidence attests, for the certificate and the records.
    pub(super) async fn check_attestation(
        &self,
        profile: &IssuanceProfile,
        admitted: super::Admitted<'_>,
        csr: &super::csr::ValidatedCsr,
        evidence: Option<Evidence>,
        renewing: Option<&crate::store::CertificateRecord>,
        event: &mut EnrollmentEvent,
    ) -> Result<Option<AttestedKey>, EnrollmentError> {
        let super::Admitted {
            requester,
            admission,
        } = admitted;
        let policy = &profile.attestation;
        let Some(evidence) = evidence else {
            if policy.required {
                return Err(refuse(
                    "attestation.required",
                    format!(
                        "profile {:?} requires key attestation evidence in the CSR (attribute 1.2.840.113549.1.9.16.2.59)",
                        profile.label
                    ),
                ));
            }
            return Ok(None);
        };
        // Cheap before expensive: every nonce the statements claim must be live and this
        // requester's before a single signature over the requester's certificates is checked.
        // (It is spent only at the end, when everything else has passed.)
        for nonce in self.gate.claimed_nonces(&evidence) {
            let state = self
                .store
                .nonce_state(&nonce, &requester.id(), event.occurred_at)
                .await
                .map_err(|e| self.storage_failure(e))?;
            refuse_unless(state, NonceCheck::Live)?;
        }
        let gate = std::sync::Arc::clone(&self.gate);
        let key = csr.public_key.clone();
        let attested = admission
            .run_blocking(move || gate.verify(&evidence, &key))
            .await
            .map_err(|e| EnrollmentError::Unavailable {
                code: "attestation.unavailable",
                detail: e.to_string(),
            })??;
        event.attestation_format = Some(attested.format.name().into());
        event.vendor = Some(attested.vendor.clone());
        event.device_identity = Some(attested.device_key());

        if !policy.vendors.is_empty() && !policy.vendors.contains(&attested.vendor) {
            return Err(refuse(
                "attestation.vendor_not_allowed",
                format!(
                    "vendor {} is not accepted on profile {:?}",
                    attested.vendor, profile.label
                ),
            ));
        }
        if !policy.formats.is_empty() && !policy.formats.contains(&attested.format) {
            return Err(refuse(
                "attestation.format_not_allowed",
                format!(
                    "{} evidence is not accepted on profile {:?}",
                    attested.format.name(),
                    profile.label
                ),
            ));
        }
        if policy.require_generated_on_device && attested.generated_on_device == Some(false) {
            return Err(refuse(
                "attestation.key_not_generated_on_device",
                "the evidence says the key was imported into the device, not generated there",
            ));
        }
        if policy.require_non_exportable && attested.exportable == Some(true) {
            return Err(refuse(
                "attestation.key_exportable",
                "the evidence says the key can leave the device",
            ));
        }
        let vendor = self
            .gate
            .vendors()
            .all()
            .iter()
            .find(|v| v.name == attested.vendor);
        if vendor.is_some_and(|v| v.denies(&attested.device.display)) {
            return Err(refuse(
                "attestation.device_denied",
                format!("device {} is on the deny-list", attested.device_key()),
            ));
        }
        if let Some(predecessor) = renewing {
            // A new key for a fielded device must come from the same device.
            if predecessor.device_identity.as_deref() != Some(attested.device_key().as_str()) {
                return Err(refuse(
                    "reenroll.device_mismatch",
                    format!(
                        "the evidence names device {} but the certificate being renewed belongs to {}",
                        attested.device_key(),
                        predecessor
                            .device_identity
                            .as_deref()
                            .unwrap_or("no attested device")
                    ),
                ));
            }
        }
        let spki_sha256 = spki_hash(&csr.public_key)?;
        if policy.require_manifest
            && !self
                .store
                .manifest_lists(&attested.vendor, &attested.device.display, &spki_sha256)
                .await
                .map_err(|e| self.storage_failure(e))?
        {
            return Err(refuse(
                "attestation.not_in_manifest",
                format!(
                    "device {} with this key is on no imported supply-chain manifest",
                    attested.device_key()
                ),
            ));
        }
        if !policy.allow_reprovision
            && renewing.is_none()
            && let Some(serial) = self
                .store
                .active_certificate_for_other_key(
                    &attested.device_key(),
                    &spki_sha256,
                    event.occurred_at,
                )
                .await
                .map_err(|e| self.storage_failure(e))?
        {
            tracing::warn!(device = %attested.device_key(), existing = %serial, rig = %requester.id(), "possible clone: device already has an active certificate for another key");
            return Err(refuse(
                "attestation.clone_suspected",
                format!(
                    "device {} already has an active certificate (serial {serial}) for another key",
                    attested.device_key()
                ),
            ));
        }
        if let Some(nonce) = &attested.nonce {
            let check = self
                .store
                .consume_nonce(nonce, &requester.id(), event.occurred_at)
                .await
                .map_err(|e| self.storage_failure(e))?;
            refuse_unless(check, NonceCheck::Consumed)?;
        }
        Ok(Some(attested))
    }

    /// Issues a freshness nonce to an authenticated rig (draft-ietf-lamps-attestation-freshness).
    pub async fn issue_nonce(
        &self,
        label: Option<&str>,
        credentials: &crate::access::PresentedCredentials,
        length: usize,
    ) -> Result<(Vec<u8>, u64), EnrollmentError> {
        self.while_database_answers(self.issue_nonce_now(label, credentials, length))
            .await
    }

    async fn issue_nonce_now(
        &self,
        label: Option<&str>,
        credentials: &crate::access::PresentedCredentials,
        length: usize,
    ) -> Result<(Vec<u8>, u64), EnrollmentError> {
        let profile = self.profile(label).ok_or_else(|| {
            EnrollmentError::UnknownProfile(label.unwrap_or("default").to_owned())
        })?;
        let requester = self
            .rigs
            .authenticate_rig_or_device(credentials)
            .await
            .map_err(EnrollmentError::Unauthenticated)?;
        self.spend_budget(&requester)?;
        if let crate::access::PeerCertificate::Device(device) = &credentials.peer_certificate {
            self.check_device_may_renew(device).await?;
        } else if !profile.allows_rig(&requester.name) {
            return Err(EnrollmentError::NotAuthorized {
                rig: requester.name.clone(),
                profile: profile.label.clone(),
            });
        }
        if !(8..=64).contains(&length) {
            return Err(EnrollmentError::BadRequest {
                code: "nonce.length",
                detail: "a nonce is 8 to 64 bytes long".into(),
            });
        }
        let mut nonce = vec![0u8; length];
        aws_lc_rs::rand::fill(&mut nonce).map_err(|_| EnrollmentError::Unavailable {
            code: "nonce.unavailable",
            detail: "the random generator failed".into(),
        })?;
        let now = crate::issuance::unix_seconds(std::time::SystemTime::now()) as i64;
        let lifetime = self.nonce_lifetime_secs;
        self.store
            .insert_nonce(&nonce, &requester.id(), now, now + lifetime as i64)
            .await
            .map_err(|e| self.storage_failure(e))?;
        Ok((nonce, lifetime))
    }
}

/// Refuses unless a nonce is in the `expected` state (live before verification, consumed after).
fn refuse_unless(found: NonceCheck, expected: NonceCheck) -> Result<(), EnrollmentError> {
    match found {
        found if found == expected => Ok(()),
        NonceCheck::Unknown => Err(refuse(
            "attestation.nonce_unknown",
            "the evidence's nonce was not issued by this CA",
        )),
        NonceCheck::Foreign => Err(refuse(
            "attestation.nonce_foreign",
            "the evidence's nonce was issued to another rig",
        )),
        NonceCheck::Expired => Err(refuse(
            "attestation.nonce_expired",
            "the evidence's nonce has expired",
        )),
        NonceCheck::Reused | NonceCheck::Live | NonceCheck::Consumed => Err(refuse(
            "attestation.nonce_reused",
            "the evidence's nonce has already been used",
        )),
    }
}

pub(super) fn spki_hash(
    spki: &x509_cert::SubjectPublicKeyInfo,
) -> Result<Vec<u8>, EnrollmentError> {
    use der::Encode;
    spki.to_der()
        .map(|d| Sha256::digest(d).to_vec())
        .map_err(|e| EnrollmentError::BadRequest {
            code: "csr.malformed",
            detail: e.to_string(),
        })
}
