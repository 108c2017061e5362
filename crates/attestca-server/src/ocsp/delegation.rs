//! The delegated OCSP responder's key and certificate: the key lives in the CA key's signer
//! backend, the certificate is issued by the issuing CA, recorded in the store before use,
//! reused across restarts, and renewed at half its lifetime.

use std::sync::{Arc, RwLock};
use std::time::SystemTime;

use attestca_core::reason::Reason;
use attestca_core::record::{CertStatus, EventOutcome};
use der::Encode;
use sha2::{Digest, Sha256};

use super::OcspError;
use super::signing::ResponderIdentity;
use crate::config::{Pkcs11SignerConfig, SignerConfig, SoftwareSignerConfig};
use crate::issuance::IssuingCa;
use crate::signer::{Signer, SignerError};
use crate::store::ledger::{Committed, Ledger, LedgerEntry};
use crate::store::{CertificateRecord, EnrollmentEvent, Store};

/// The profile name responder certificates are recorded under.
pub const RESPONDER_PROFILE: &str = "ocsp-responder";
/// The requester recorded for responder certificates (no rig asked for them).
pub const RESPONDER_REQUESTER: &str = "attestca:ocsp-responder";
/// The software responder key's file name, beside the CA key file.
pub const RESPONDER_KEY_FILE: &str = "ocsp-responder.key";
/// Appended to the CA key's PKCS#11 label to name the responder key.
pub const RESPONDER_LABEL_SUFFIX: &str = "-ocsp";

/// Where the responder key lives: beside the CA key, in the same backend.
pub fn responder_key_config(ca_key: &SignerConfig) -> SignerConfig {
    match ca_key {
        SignerConfig::Software(sw) => SignerConfig::Software(SoftwareSignerConfig {
            key_file: sw.key_file.with_file_name(RESPONDER_KEY_FILE),
            algorithm: sw.algorithm,
        }),
        SignerConfig::Pkcs11(hsm) => SignerConfig::Pkcs11(Pkcs11SignerConfig {
            key_label: format!("{}{RESPONDER_LABEL_SUFFIX}", hsm.key_label),
            ..hsm.clone()
        }),
    }
}

/// Opens the responder key, generating it (inside the token for PKCS#11, non-extractable; as
/// a mode-0600 file in software) the first time.
pub fn open_or_generate_key(config: &SignerConfig) -> Result<Arc<dyn Signer>, SignerError> {
    let opened = match crate::signer::open(config) {
        Err(SignerError::KeyNotFound(why)) => {
            tracing::info!(reason = %why, "generating the OCSP responder key");
            // Another instance sharing the key's place may have generated it meanwhile: then
            // its key is the one to open.
            crate::signer::generate(config)
                .or_else(|generating| crate::signer::open(config).map_err(|_| generating))
        }
        opened => opened,
    };
    opened.map(|signer| crate::signer::MeteredSigner::wrap(signer, "ocsp"))
}

use attestca_core::time::unix_now;

/// Whether a certificate valid from `not_before` to `not_after` is past half its lifetime.
fn renewal_due(not_before: i64, not_after: i64, now: i64) -> bool {
    now >= not_before + (not_after - not_before) / 2
}

/// The responder key, its current certificate, and how to renew it.
pub struct ResponderDelegation {
    ca: Arc<IssuingCa>,
    signer: Arc<dyn Signer>,
    spki_sha256: Vec<u8>,
    ledger: Ledger,
    validity_secs: u64,
    current: RwLock<Arc<ResponderIdentity>>,
}

impl ResponderDelegation {
    /// Reuses the newest recorded certificate of this key if it is in the first half of its
    /// life, else issues and records a new one.
    pub async fn establish(
        ca: Arc<IssuingCa>,
        signer: Arc<dyn Signer>,
        store: &Store,
        ledger: Ledger,
        validity_secs: u64,
    ) -> Result<Self, OcspError> {
        let spki_sha256 = Sha256::digest(
            signer
                .public_key()
                .to_der()
                .map_err(|e| OcspError::Internal(e.to_string()))?,
        )
        .to_vec();
        let recorded = store
            .latest_certificate_of_key(
                ca.key_identifier(),
                RESPONDER_PROFILE,
                &spki_sha256,
                unix_now(),
            )
            .await?;
        let reusable = recorded.filter(|r| !renewal_due(r.not_before, r.not_after, unix_now()));
        let identity = match reusable {
            Some(record) => {
                tracing::info!(serial = %record.serial, not_after = record.not_after, "reusing the OCSP responder certificate");
                Arc::new(ResponderIdentity::new(
                    Arc::clone(&signer),
                    &record.der,
                    record.serial,
                    record.not_before,
                    record.not_after,
                )?)
            }
            None => issue(&ca, &signer, &spki_sha256, &ledger, validity_secs).await?,
        };
        Ok(Self {
            ca,
            signer,
            spki_sha256,
            ledger,
            validity_secs,
            current: RwLock::new(identity),
        })
    }

    /// The responder key.
    pub fn signer(&self) -> Arc<dyn Signer> {
        Arc::clone(&self.signer)
    }

    /// The identity responses are signed with now.
    pub fn current(&self) -> Arc<ResponderIdentity> {
        match self.current.read() {
            Ok(c) => Arc::clone(&c),
            Err(poisoned) => Arc::clone(&poisoned.into_inner()),
        }
    }

    /// Renews the certificate if it is past half its life (or `force`); returns whether it did.
    pub async fn renew_if_due(&self, force: bool) -> Result<bool, OcspError> {
        let current = self.current();
        if !force && !renewal_due(current.not_before, current.not_after, unix_now()) {
            return Ok(false);
        }
        let renewed = issue(
            &self.ca,
            &self.signer,
            &self.spki_sha256,
            &self.ledger,
            self.validity_secs,
        )
        .await?;
        match self.current.write() {
            Ok(mut c) => *c = renewed,
            Err(poisoned) => *poisoned.into_inner() = renewed,
        }
        Ok(true)
    }
}

/// Issues a responder certificate and commits it (with an event) before it is used.
async fn issue(
    ca: &Arc<IssuingCa>,
    signer: &Arc<dyn Signer>,
    spki_sha256: &[u8],
    ledger: &Ledger,
    validity_secs: u64,
) -> Result<Arc<ResponderIdentity>, OcspError> {
    // A serial collision is a 2^-120 event; three attempts make it a non-event.
    for _ in 0..3 {
        let now = SystemTime::now();
        let (ca_for_signing, public_key) = (Arc::clone(ca), signer.public_key().clone());
        let issued = tokio::task::spawn_blocking(move || {
            ca_for_signing.issue_ocsp_responder(&public_key, validity_secs, now)
        })
        .await
        .map_err(|e| OcspError::Internal(format!("signing task: {e}")))??;
        let issued_at = crate::issuance::unix_seconds(now) as i64;
        let record = CertificateRecord {
            serial: issued.serial.clone(),
            der: issued.der.clone(),
            issuer_key_id: ca.key_identifier().to_vec(),
            subject: crate::pem::certificate_from_der(&issued.der)
                .map(|c| c.tbs_certificate().subject().to_string())
                .unwrap_or_default(),
            spki_sha256: spki_sha256.to_vec(),
            profile: RESPONDER_PROFILE.into(),
            not_before: issued.not_before as i64,
            not_after: issued.not_after as i64,
            status: CertStatus::Active,
            requester: RESPONDER_REQUESTER.into(),
            // No CSR: the certificate's own hash keeps the retry claim unique.
            csr_sha256: Sha256::digest(&issued.der).to_vec(),
            issued_at,
            sans: String::new(),
            revoked_at: None,
            revocation_reason: None,
            device_identity: None,
            predecessor_serial: None,
        };
        let event = EnrollmentEvent {
            occurred_at: issued_at,
            requester: Some(RESPONDER_REQUESTER.into()),
            operation: "ocsp-responder".into(),
            profile: RESPONDER_PROFILE.into(),
            outcome: EventOutcome::Issued,
            reason: Reason::OcspResponderIssued.as_str().into(),
            serial: Some(issued.serial.clone()),
            ..EnrollmentEvent::default()
        };
        let committed = ledger
            .commit(LedgerEntry::Issued {
                certificate: Box::new(record),
                event,
                retry_window_start: issued_at,
                nonce: None,
            })
            .await?;
        if committed == Committed::SerialCollision {
            continue;
        }
        tracing::info!(serial = %issued.serial, not_after = issued.not_after, "issued the OCSP responder certificate");
        return Ok(Arc::new(ResponderIdentity::new(
            Arc::clone(signer),
            &issued.der,
            issued.serial,
            issued.not_before as i64,
            issued.not_after as i64,
        )?));
    }
    Err(OcspError::Internal(
        "three serial collisions issuing the OCSP responder certificate".into(),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn responder_keys_live_beside_the_ca_key() {
        let software = SignerConfig::Software(SoftwareSignerConfig {
            key_file: "/var/lib/attestca/pki/issuing.key".into(),
            algorithm: crate::signer::CaKeyAlgorithm::EcdsaP256,
        });
        match responder_key_config(&software) {
            SignerConfig::Software(sw) => assert_eq!(
                sw.key_file,
                std::path::Path::new("/var/lib/attestca/pki/ocsp-responder.key")
            ),
            other => panic!("{other:?}"),
        }
        let hsm = SignerConfig::Pkcs11(Pkcs11SignerConfig {
            module: "/usr/lib/softhsm/libsofthsm2.so".into(),
            token_label: "attestca".into(),
            key_label: "attestca-issuing-ca".into(),
            algorithm: crate::signer::CaKeyAlgorithm::EcdsaP384,
            sessions: 2,
            pin: "1234".to_owned().into(),
            simulated_latency: std::time::Duration::ZERO,
        });
        match responder_key_config(&hsm) {
            SignerConfig::Pkcs11(p) => {
                assert_eq!(p.key_label, "attestca-issuing-ca-ocsp");
                assert_eq!(p.token_label, "attestca");
                assert_eq!(p.algorithm, crate::signer::CaKeyAlgorithm::EcdsaP384);
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn instances_racing_to_create_the_software_key_end_up_with_one() {
        let dir = tempfile::tempdir().expect("temp dir");
        let config = SignerConfig::Software(SoftwareSignerConfig {
            key_file: dir.path().join(RESPONDER_KEY_FILE),
            algorithm: crate::signer::CaKeyAlgorithm::EcdsaP256,
        });
        let keys: Vec<_> = std::thread::scope(|scope| {
            let racers: Vec<_> = (0..8)
                .map(|_| scope.spawn(|| open_or_generate_key(&config).expect("a key")))
                .collect();
            racers
                .into_iter()
                .map(|r| r.join().expect("thread").public_key().clone())
                .collect()
        });
        assert!(
            keys.iter().all(|k| *k == keys[0]),
            "every racer holds the key on disk"
        );
        let on_disk = open_or_generate_key(&config).expect("reopen");
        assert_eq!(*on_disk.public_key(), keys[0]);
        let leftovers = std::fs::read_dir(dir.path()).expect("dir").count();
        assert_eq!(leftovers, 1, "no temporary files left");
    }

    #[test]
    fn renewal_is_due_at_half_life() {
        assert!(!renewal_due(1000, 2000, 1499));
        assert!(renewal_due(1000, 2000, 1500));
        assert!(renewal_due(1000, 2000, 3000));
    }
}
