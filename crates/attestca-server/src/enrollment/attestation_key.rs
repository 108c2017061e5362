//! Attestation-key certification, the I/O half: the CA as a TPM attestation CA (the rules are
//! in [`attestca_core::policy::attestation_key`], the challenge crypto in
//! [`attestca_core::attestation::tpm::credential`]; docs/attestation.md has the wire).
//!
//! Two requests from an authenticated rig: a challenge for an EK certificate and an AK public
//! area (TPM2_MakeCredential to the EK over the AK's name, recorded as the SHA-256 of the
//! secret, bound to the rig, the EK and the AK, expiring), then the AK certificate for the
//! secret the TPM recovered (spent once, in one conditional UPDATE). The certificate is
//! committed with its event before it is returned, like every certificate the CA issues.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::SystemTime;

use sha2::{Digest, Sha256};

use attestca_core::attestation::DeviceIdentity;
use attestca_core::attestation::EvidenceCertificate;
use attestca_core::attestation::tpm::credential;
use attestca_core::policy::attestation_key::{self as policy, Endorsement, PROFILE};
use attestca_core::reason::Reason;
use attestca_core::record::{CertStatus, EventOutcome};
use attestca_core::serial::Serial;

use super::{EnrollRequest, Enrolled, EnrollmentError, EnrollmentService, unix_seconds};
use crate::store::ledger::{Committed, LedgerEntry};
use crate::store::{CertificateRecord, EnrollmentEvent};

/// The event operation of attestation-key certification.
pub const OPERATION: &str = "attestation-key";

/// The evidence format events and log entries record for an AK certificate: an EK
/// certificate chained to a vendor root, and TPM2_ActivateCredential for the AK. The evidence
/// hash is SHA-256 of the EK certificate.
pub const EVIDENCE_FORMAT: &str = "tpm-credential-activation";
/// hwType of the TPM in the hardwareModuleName of AK certificates (TCG: a TPM 2.0).
const TPM_HARDWARE_TYPE: const_oid::ObjectIdentifier =
    const_oid::ObjectIdentifier::new_unwrap("2.23.133.1.2");
/// Size of a challenge secret (the EK's name algorithm's digest size).
const SECRET_BYTES: usize = 32;

/// `[attestation_keys]`, resolved: the CA certifies attestation keys.
#[derive(Clone, Debug)]
pub struct AttestationKeyAuthority {
    /// PEM files of the TPM vendors' EK roots (and intermediates), read at each challenge so
    /// that an operator adds a vendor without a restart.
    pub ek_root_files: Vec<PathBuf>,
    pub challenge_lifetime_secs: u64,
    pub validity_secs: u64,
    pub allow_reissue: bool,
}

/// What the rig sends: the EK certificate and the AK public area (and, in the second
/// request, the secret).
#[derive(Debug)]
pub struct AttestationKeyRequest {
    pub request: EnrollRequest,
    pub endorsement_der: Vec<u8>,
    pub ak_public_area: Vec<u8>,
}

/// A credential challenge, as TPM2_ActivateCredential takes it.
#[derive(Clone, Debug)]
pub struct Challenge {
    pub credential_blob: Vec<u8>,
    pub encrypted_secret: Vec<u8>,
    pub expires_in: u64,
}

impl EnrollmentService {
    fn attestation_keys(&self) -> Result<&AttestationKeyAuthority, EnrollmentError> {
        self.attestation_keys
            .as_ref()
            .ok_or_else(|| EnrollmentError::NotFound {
                code: Reason::AkDisabled,
                detail: "this CA does not certify TPM attestation keys".into(),
            })
    }

    /// The EK roots, read now: each configured file, and the certificate files (`*.pem`,
    /// `*.crt`) of each configured directory (other files there, such as a local CA's keys,
    /// are skipped).
    fn endorsement_roots(&self, authority: &AttestationKeyAuthority) -> Vec<EvidenceCertificate> {
        let mut roots = Vec::new();
        for path in &authority.ek_root_files {
            if path.is_dir() {
                let mut files: Vec<PathBuf> = std::fs::read_dir(path)
                    .map(|entries| entries.flatten().map(|e| e.path()).collect())
                    .unwrap_or_default();
                files.sort();
                for file in files {
                    if file.extension().is_some_and(|e| e == "pem" || e == "crt")
                        && let Ok(found) = attestca_core::pem::read_evidence_certificates(&file)
                    {
                        roots.extend(found);
                    }
                }
                continue;
            }
            match attestca_core::pem::read_evidence_certificates(path) {
                Ok(found) => roots.extend(found),
                // A vendor's file that is missing is a configuration problem, not the rig's:
                // the other vendors still count.
                Err(e) if path.exists() => {
                    tracing::warn!(path = %path.display(), error = %e, "EK root file unreadable")
                }
                Err(_) => tracing::debug!(path = %path.display(), "no EK root file here"),
            }
        }
        roots
    }

    /// Checks who asks, the EK certificate and the AK public area.
    async fn checked(
        &self,
        ak: &AttestationKeyRequest,
        event: &mut EnrollmentEvent,
        now: SystemTime,
    ) -> Result<
        (
            crate::access::Requester,
            Endorsement,
            attestca_core::attestation::tpm::PublicArea,
        ),
        EnrollmentError,
    > {
        let authority = self.attestation_keys()?;
        let requester = self
            .rigs
            .authenticate(&ak.request.credentials)
            .await
            .map_err(EnrollmentError::Unauthenticated)?;
        event.requester = Some(requester.id());
        self.spend_budget(&requester)?;
        let roots = self.endorsement_roots(authority);
        let endorsement = policy::check_endorsement(&ak.endorsement_der, &roots, now)?;
        event.device_identity = Some(tpm_identity(&endorsement));
        let public = policy::check_attestation_key(&ak.ak_public_area)?;
        Ok((requester, endorsement, public))
    }

    /// The first request: a credential challenge for this EK and AK.
    pub async fn attestation_key_challenge(
        &self,
        ak: &AttestationKeyRequest,
    ) -> Result<Challenge, EnrollmentError> {
        self.decide_recorded(OPERATION, &ak.request, async |now, event, _admission| {
            event.profile = PROFILE.into();
            let (requester, endorsement, public) = self.checked(ak, event, now).await?;
            let authority = self.attestation_keys()?;
            let mut secret = [0u8; SECRET_BYTES];
            aws_lc_rs::rand::fill(&mut secret).map_err(|_| EnrollmentError::Unavailable {
                code: Reason::NonceUnavailable,
                detail: "the random generator failed".into(),
            })?;
            let made = credential::make_credential(
                endorsement
                    .certificate
                    .tbs_certificate()
                    .subject_public_key_info(),
                &public.name,
                &secret,
            )
            .map_err(|e| EnrollmentError::BadRequest {
                code: Reason::AkEndorsementMalformed,
                detail: e.to_string(),
            })?;
            let issued_at = unix_seconds(now) as i64;
            let expires_at = issued_at + authority.challenge_lifetime_secs as i64;
            self.store
                .insert_challenge(
                    &Sha256::digest(secret),
                    &requester.id(),
                    &policy::challenge_binding(&ak.endorsement_der, &ak.ak_public_area),
                    issued_at,
                    expires_at,
                )
                .await
                .map_err(|e| self.storage_failure(e))?;
            Ok(Challenge {
                credential_blob: made.credential_blob,
                encrypted_secret: made.encrypted_secret,
                expires_in: authority.challenge_lifetime_secs,
            })
        })
        .await
    }

    /// The second request: the AK certificate, for the secret the TPM recovered.
    pub async fn attestation_key_certificate(
        &self,
        ak: &AttestationKeyRequest,
        secret: &[u8],
    ) -> Result<Enrolled, EnrollmentError> {
        self.decide_recorded(OPERATION, &ak.request, async |now, event, admission| {
            event.profile = PROFILE.into();
            let (requester, endorsement, public) = self.checked(ak, event, now).await?;
            let authority = self.attestation_keys()?.clone();
            let device_identity = tpm_identity(&endorsement);
            let existing = self
                .store
                .active_certificate_of_device(&device_identity, PROFILE)
                .await
                .map_err(|e| self.storage_failure(e))?;
            policy::reissue_verdict(existing.as_ref().map(Serial::as_str), authority.allow_reissue)?;
            let binding = policy::challenge_binding(&ak.endorsement_der, &ak.ak_public_area);
            let found = self
                .store
                .consume_challenge(
                    &Sha256::digest(secret),
                    &requester.id(),
                    &binding,
                    unix_seconds(now) as i64,
                )
                .await
                .map_err(|e| self.storage_failure(e))?;
            policy::challenge_verdict(found)?;
            // The evidence behind this certificate, as the event and the issuance log record
            // it: the EK certificate chained to a TPM vendor's root, and the credential the
            // TPM activated for this AK.
            event.attestation_format = Some(EVIDENCE_FORMAT.into());
            event.vendor = endorsement.tpm.as_ref().map(|t| t.manufacturer.clone());
            event.evidence_sha256 = Some(Sha256::digest(&ak.endorsement_der).to_vec());

            let tpm = DeviceIdentity {
                hardware_type: TPM_HARDWARE_TYPE,
                serial: endorsement.display.as_bytes().to_vec(),
                display: endorsement.display.clone(),
            };
            let ca = Arc::clone(&self.ca);
            let (key, description) = (public.public_key.clone(), endorsement.tpm.clone());
            let issued = admission
                .run_blocking(move || {
                    ca.issue_attestation_key(
                        &key,
                        description.as_ref(),
                        &tpm,
                        authority.validity_secs,
                        now,
                    )
                })
                .await
                .map_err(|e| EnrollmentError::Unavailable {
                    code: Reason::SignerUnavailable,
                    detail: e.to_string(),
                })?
                .map_err(EnrollmentError::issuance)?;
            event.outcome = EventOutcome::Issued;
            event.reason = Reason::EnrollIssued.as_str().into();
            event.serial = Some(issued.serial.clone());
            let record = CertificateRecord {
                serial: issued.serial.clone(),
                der: issued.der.clone(),
                issuer_key_id: self.issuer_key_id.clone(),
                subject: String::new(),
                sans: format!("hardwareModuleName:{}", endorsement.display),
                spki_sha256: Sha256::digest(
                    der::Encode::to_der(&public.public_key).unwrap_or_default(),
                )
                .to_vec(),
                profile: PROFILE.into(),
                not_before: issued.not_before as i64,
                not_after: issued.not_after as i64,
                status: CertStatus::Active,
                revoked_at: None,
                revocation_reason: None,
                requester: requester.id(),
                device_identity: Some(device_identity),
                // The binding keeps the retry claim unique per EK and AK.
                csr_sha256: binding,
                issued_at: event.occurred_at,
                predecessor_serial: None,
            };
            let committed = self
                .ledger
                .commit(LedgerEntry::Issued {
                    certificate: Box::new(record),
                    event: event.clone(),
                    retry_window_start: event.occurred_at,
                    nonce: None,
                })
                .await
                .map_err(|e| self.storage_failure(e))?;
            match committed {
                Committed::Stored => {
                    crate::metrics::METRICS
                        .certificates_issued
                        .with_label_values(&[PROFILE])
                        .inc();
                    tracing::info!(serial = %issued.serial, rig = %requester.id(), tpm = %endorsement.display, "attestation-key certificate issued");
                    Ok(Enrolled {
                        certificate_der: issued.der,
                        serial: issued.serial,
                        retried: false,
                    })
                }
                // The challenge was spent above: a second commit for it cannot happen, and a
                // colliding random serial is astronomically rare. Nothing was stored.
                Committed::AlreadyIssued { .. }
                | Committed::SerialCollision
                | Committed::NonceReused => {
                    Err(EnrollmentError::Unavailable {
                        code: Reason::IssuanceSerialCollision,
                        detail: "the certificate could not be recorded; ask for a new challenge"
                            .into(),
                    })
                }
            }
        })
        .await
    }
}

/// The device identity of a TPM, as events and AK certificates record it.
fn tpm_identity(endorsement: &Endorsement) -> String {
    format!("tpm:{}", endorsement.display)
}
