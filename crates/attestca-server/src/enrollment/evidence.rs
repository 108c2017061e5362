//! The attestation part of the enrollment decision: verify the evidence, then apply the
//! profile's policy — vendor and format, key origin, deny-list, manifest, clones, and last the
//! nonce, which is spent only when everything else has passed.
//!
//! The policy itself is pure ([`attestca_core::policy::attestation`]); this file does the I/O
//! it needs (nonce, manifest and certificate look-ups, spending the nonce, the event).

use attestca_core::reason::Reason;
use sha2::{Digest, Sha256};

use super::{EnrollmentError, EnrollmentService};
use crate::attestation::bundle::Evidence;
use crate::attestation::{AttestationError, AttestedKey, FailureKind};
use crate::issuance::IssuanceProfile;
use crate::store::{EnrollmentEvent, NonceCheck};
use attestca_core::policy::attestation as policy;

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

/// Evidence that passed the gate and the profile's policy.
pub(super) struct CheckedEvidence {
    /// What the evidence attests.
    pub(super) key: AttestedKey,
    /// A stateless nonce the evidence carried: spent by committing the certificate with it
    /// (`None` when there was none, or a stored one, already spent here).
    pub(super) spent_at_commit: Option<Vec<u8>>,
}

impl CheckedEvidence {
    /// The hardware identity to certify with its record form `<vendor>:<serial>`, and the
    /// nonce to spend at commit.
    pub(super) fn into_parts(
        self,
    ) -> (
        (crate::attestation::DeviceIdentity, String),
        Option<Vec<u8>>,
    ) {
        let device_key = self.key.device_key();
        ((self.key.device, device_key), self.spent_at_commit)
    }
}

impl EnrollmentService {
    /// Verifies the evidence (if any) and applies the profile's attestation policy. Returns
    /// what the evidence attests, for the certificate and the records.
    ///
    /// The decisions are [`policy`]'s; this does the I/O around them, in their order: nonce
    /// look-ups before verification, verification on a blocking thread, then the manifest and
    /// clone look-ups the static checks ask for, and last spending the nonce.
    pub(super) async fn check_attestation(
        &self,
        profile: &IssuanceProfile,
        admitted: super::Admitted<'_>,
        csr: &super::csr::ValidatedCsr,
        evidence: Option<Evidence>,
        renewing: Option<&crate::store::CertificateRecord>,
        event: &mut EnrollmentEvent,
    ) -> Result<Option<CheckedEvidence>, EnrollmentError> {
        let super::Admitted {
            requester,
            admission,
        } = admitted;
        let rules = &profile.policy.attestation;
        policy::evidence_presence(rules, &profile.label, evidence.is_some())?;
        let Some(evidence) = evidence else {
            return Ok(None);
        };
        // Cheap before expensive: every nonce the statements claim must be live and this
        // requester's before a single signature over the requester's certificates is checked.
        // (It is spent only at the end, when everything else has passed.)
        // A stateless nonce is checked without the database; only a stored one is looked up.
        let requester_id = requester.id();
        let mut stateless = Vec::new();
        for nonce in self.gate.claimed_nonces(&evidence) {
            let state = match self
                .nonce_key
                .check(&nonce, &requester_id, event.occurred_at)
            {
                Some(state) => {
                    stateless.push(nonce);
                    state
                }
                None => self
                    .store
                    .nonce_state(&nonce, &requester_id, event.occurred_at)
                    .await
                    .map_err(|e| self.storage_failure(e))?,
            };
            policy::nonce_verdict(state, NonceCheck::Live)?;
        }
        let gate = std::sync::Arc::clone(&self.gate);
        let key = csr.public_key.clone();
        let attested = admission
            .run_blocking(move || gate.verify(&evidence, &key))
            .await
            .map_err(|e| EnrollmentError::Unavailable {
                code: Reason::AttestationUnavailable,
                detail: e.to_string(),
            })??;
        event.attestation_format = Some(attested.format.name().into());
        event.vendor = Some(attested.vendor.clone());
        event.device_identity = Some(attested.device_key());

        let on_deny_list = self
            .gate
            .vendors()
            .denies(&attested.vendor, &attested.device.display);
        let decision = policy::check_attested(
            rules,
            &profile.label,
            &attested,
            on_deny_list,
            renewing.map(|predecessor| policy::Renewing {
                device_identity: predecessor.device_identity.as_deref(),
            }),
        )?;
        let spki_sha256 = spki_hash(&csr.public_key)?;
        if decision.check_manifest {
            let listed = self
                .store
                .manifest_lists(&attested.vendor, &attested.device.display, &spki_sha256)
                .await
                .map_err(|e| self.storage_failure(e))?;
            policy::manifest_verdict(&attested, listed)?;
        }
        if decision.check_clones {
            let existing = self
                .store
                .active_certificate_for_other_key(
                    &attested.device_key(),
                    &spki_sha256,
                    event.occurred_at,
                )
                .await
                .map_err(|e| self.storage_failure(e))?;
            if let Some(serial) = &existing {
                tracing::warn!(device = %attested.device_key(), existing = %serial, rig = %requester.id(), "possible clone: device already has an active certificate for another key");
            }
            policy::clone_verdict(&attested, existing.as_deref())?;
        }
        let mut spent_at_commit = None;
        if let Some(nonce) = &attested.nonce {
            if stateless.contains(nonce) {
                // Spent by the certificate's commit (a unique index on the row it writes).
                spent_at_commit = Some(nonce.clone());
            } else {
                let check = self
                    .store
                    .consume_nonce(nonce, &requester_id, event.occurred_at)
                    .await
                    .map_err(|e| self.storage_failure(e))?;
                policy::nonce_verdict(check, NonceCheck::Consumed)?;
            }
        }
        Ok(Some(CheckedEvidence {
            key: attested,
            spent_at_commit,
        }))
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
        } else if profile.policy.authorize_rig(&requester.name).is_err() {
            return Err(EnrollmentError::NotAuthorized {
                rig: requester.name.clone(),
                profile: profile.label.clone(),
            });
        }
        if !(8..=64).contains(&length) {
            return Err(EnrollmentError::BadRequest {
                code: Reason::NonceLength,
                detail: "a nonce is 8 to 64 bytes long".into(),
            });
        }
        let unavailable = |detail: String| EnrollmentError::Unavailable {
            code: Reason::NonceUnavailable,
            detail,
        };
        let now = attestca_core::time::unix_now();
        let lifetime = self.nonce_lifetime_secs;
        let expires_at = now.saturating_add(i64::try_from(lifetime).unwrap_or(i64::MAX));
        if length >= attestca_core::nonce::MIN_STATELESS_LEN {
            // Nothing to store: the nonce says who it is for and until when.
            let nonce = self
                .nonce_key
                .mint(length, expires_at, &requester.id())
                .map_err(|e| unavailable(e.to_string()))?;
            return Ok((nonce, lifetime));
        }
        let mut nonce = vec![0u8; length];
        aws_lc_rs::rand::fill(&mut nonce)
            .map_err(|_| unavailable("the random generator failed".into()))?;
        self.store
            .insert_nonce(&nonce, &requester.id(), now, expires_at)
            .await
            .map_err(|e| self.storage_failure(e))?;
        Ok((nonce, lifetime))
    }
}

pub(super) fn spki_hash(
    spki: &x509_cert::SubjectPublicKeyInfo,
) -> Result<Vec<u8>, EnrollmentError> {
    use der::Encode;
    spki.to_der()
        .map(|d| Sha256::digest(d).to_vec())
        .map_err(|e| EnrollmentError::BadRequest {
            code: Reason::CsrMalformed,
            detail: e.to_string(),
        })
}
