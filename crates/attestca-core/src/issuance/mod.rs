//! Certificate issuance: turns an approved request into a signed certificate under a profile.
//!
//! This layer decides nothing about *whether* to issue (that is [`crate::policy`] and the
//! server's registration authority); it
//! decides *what* is issued: serial, validity, extensions, and the signature through the
//! [`Signer`] seam.

pub mod build;
pub mod extensions;
pub mod profile;
pub mod software_ca;

use std::sync::Arc;
use std::time::SystemTime;

use der::Encode;
use x509_cert::Certificate;
use x509_cert::SubjectPublicKeyInfo;
use x509_cert::ext::pkix::name::GeneralName;
use x509_cert::name::Name;

pub use build::{CertificateSpec, IssuedCertificate};
pub use profile::{CertificateProfile, IssuanceProfile};

use crate::attestation::DeviceIdentity;
use crate::signer::{Signer, SignerError};

/// Errors while issuing.
#[derive(Debug, thiserror::Error)]
pub enum IssuanceError {
    #[error("the CA key could not sign: {0}")]
    Signer(#[from] SignerError),
    #[error("encoding the certificate failed: {0}")]
    Encoding(#[from] der::Error),
    #[error("the issuing CA certificate does not match the signing key")]
    KeyMismatch,
    #[error("issuing CA: {0}")]
    CaCertificate(String),
}

/// What the registration authority approved: the subject, its key and its names.
#[derive(Clone, Debug)]
pub struct LeafRequest {
    pub subject: Name,
    pub public_key: SubjectPublicKeyInfo,
    /// The names the CSR asked for.
    pub subject_alt_names: Vec<GeneralName>,
    /// The attested hardware the key lives in (from evidence, or carried over by a renewal):
    /// certified as a hardwareModuleName (RFC 4108) after the requested names.
    pub device: Option<DeviceIdentity>,
}

impl LeafRequest {
    /// The subjectAltNames the certificate carries: the requested names, then the
    /// hardwareModuleName of [`LeafRequest::device`] if there is one.
    pub fn issued_alt_names(&self) -> der::Result<Vec<GeneralName>> {
        let mut names = self.subject_alt_names.clone();
        if let Some(device) = &self.device {
            names.push(extensions::hardware_module_name(device)?);
        }
        Ok(names)
    }
}

/// The issuing CA: its certificate, its chain and its signing key.
pub struct IssuingCa {
    certificate: Certificate,
    chain_der: Vec<Vec<u8>>,
    key_identifier: Vec<u8>,
    not_after: u64,
    signer: Arc<dyn Signer>,
}

impl IssuingCa {
    /// Binds a CA certificate chain (issuing CA first) to its signing key, checking they match.
    pub fn new(chain_der: Vec<Vec<u8>>, signer: Arc<dyn Signer>) -> Result<Self, IssuanceError> {
        let first = chain_der
            .first()
            .ok_or_else(|| IssuanceError::CaCertificate("the CA chain is empty".into()))?;
        let certificate = crate::pem::certificate_from_der(first)?;
        if certificate.tbs_certificate().subject_public_key_info() != signer.public_key() {
            return Err(IssuanceError::KeyMismatch);
        }
        let key_identifier = extensions::certificate_key_identifier(&certificate);
        let not_after = unix_seconds(
            certificate
                .tbs_certificate()
                .validity()
                .not_after
                .to_system_time(),
        );
        Ok(Self {
            certificate,
            chain_der,
            key_identifier,
            not_after,
            signer,
        })
    }

    /// The issuing CA certificate.
    pub fn certificate(&self) -> &Certificate {
        &self.certificate
    }

    /// The chain as DER, issuing CA first.
    pub fn chain_der(&self) -> &[Vec<u8>] {
        &self.chain_der
    }

    /// The key identifier issued certificates carry in their AKI.
    pub fn key_identifier(&self) -> &[u8] {
        &self.key_identifier
    }

    /// notAfter of the issuing CA certificate (Unix seconds).
    pub fn not_after(&self) -> u64 {
        self.not_after
    }

    /// The signing key.
    pub fn signer(&self) -> &Arc<dyn Signer> {
        &self.signer
    }

    /// Issues an end-entity certificate under `profile`, valid from `now`.
    pub fn issue(
        &self,
        profile: &CertificateProfile,
        request: &LeafRequest,
        now: SystemTime,
    ) -> Result<IssuedCertificate, IssuanceError> {
        let now = unix_seconds(now);
        let not_before = now.saturating_sub(profile.backdate_secs);
        let jitter = if profile.validity_jitter_secs == 0 {
            0
        } else {
            let mut bytes = [0u8; 8];
            aws_lc_rs::rand::fill(&mut bytes)
                .map_err(|_| IssuanceError::CaCertificate("random generator failed".into()))?;
            u64::from_be_bytes(bytes) % (profile.validity_jitter_secs + 1)
        };
        // A certificate never outlives its issuer (RFC 5280 path validation would reject it).
        let not_after = (now + profile.validity_secs - jitter).min(self.not_after);
        let extensions = profile.extensions(
            &request.public_key,
            &self.key_identifier,
            &request.issued_alt_names()?,
            request.subject.is_empty(),
        )?;
        let spec = CertificateSpec {
            serial: build::serial_at(now),
            issuer: self.certificate.tbs_certificate().subject().clone(),
            subject: request.subject.clone(),
            public_key: request.public_key.clone(),
            not_before,
            not_after,
            extensions,
        };
        spec.sign(self.signer.as_ref())
    }

    /// Issues the delegated OCSP responder certificate for `public_key` (RFC 6960 4.2.2.2):
    /// EKU id-kp-OCSPSigning, id-pkix-ocsp-nocheck, digitalSignature, valid from a minute
    /// before `now` for `validity_secs`, named after the CA (`<CA CN> OCSP Responder`).
    pub fn issue_ocsp_responder(
        &self,
        public_key: &SubjectPublicKeyInfo,
        validity_secs: u64,
        now: SystemTime,
    ) -> Result<IssuedCertificate, IssuanceError> {
        self.issue_purpose(
            self.ocsp_responder_name()?,
            public_key,
            const_oid::db::rfc5280::ID_KP_OCSP_SIGNING,
            vec![extensions::ocsp_no_check()?],
            (validity_secs, now),
        )
    }

    /// Issues a TPM attestation-key certificate (TCG "TPM 2.0 Keys for Device Identity and
    /// Attestation"): empty subject; a critical subjectAltName with the TPM's manufacturer,
    /// model and version (when known) and a hardwareModuleName naming the TPM (`tpm`);
    /// EKU tcg-kp-AIKCertificate (2.23.133.8.3), keyUsage digitalSignature, not a CA.
    pub fn issue_attestation_key(
        &self,
        public_key: &SubjectPublicKeyInfo,
        description: Option<&crate::attestation::tpm::TpmDescription>,
        tpm: &DeviceIdentity,
        validity_secs: u64,
        now: SystemTime,
    ) -> Result<IssuedCertificate, IssuanceError> {
        let mut names = Vec::new();
        if let Some(description) = description {
            names.push(extensions::tpm_directory_name(description)?);
        }
        names.push(extensions::hardware_module_name(tpm)?);
        self.issue_purpose(
            Name::default(),
            public_key,
            const_oid::ObjectIdentifier::new_unwrap("2.23.133.8.3"),
            vec![extensions::subject_alt_name(&names, true)?],
            (validity_secs, now),
        )
    }

    /// An end-entity certificate of the CA's own making (not from a CSR): digitalSignature,
    /// one extended key usage, `extra` extensions, SKI and AKI; valid from a minute before
    /// `now` for `validity_secs`, never beyond the CA.
    fn issue_purpose(
        &self,
        subject: Name,
        public_key: &SubjectPublicKeyInfo,
        purpose: const_oid::ObjectIdentifier,
        extra: Vec<x509_cert::ext::Extension>,
        (validity_secs, now): (u64, SystemTime),
    ) -> Result<IssuedCertificate, IssuanceError> {
        use x509_cert::ext::pkix::KeyUsages;
        let now = unix_seconds(now);
        let mut all = vec![
            extensions::basic_constraints(false, None)?,
            extensions::key_usage(KeyUsages::DigitalSignature.into())?,
            extensions::extended_key_usage(&[purpose])?,
        ];
        all.extend(extra);
        all.push(extensions::subject_key_identifier(public_key)?);
        all.push(extensions::authority_key_identifier(&self.key_identifier)?);
        CertificateSpec {
            serial: build::serial_at(now),
            issuer: self.certificate.tbs_certificate().subject().clone(),
            subject,
            public_key: public_key.clone(),
            not_before: now.saturating_sub(60),
            not_after: (now + validity_secs).min(self.not_after),
            extensions: all,
        }
        .sign(self.signer.as_ref())
    }

    /// The CA's subject with ` OCSP Responder` appended to its common name (or a CN added).
    fn ocsp_responder_name(&self) -> Result<Name, IssuanceError> {
        use x509_cert::attr::AttributeTypeAndValue;
        use x509_cert::name::{RdnSequence, RelativeDistinguishedName};
        const CN: const_oid::ObjectIdentifier = const_oid::db::rfc4519::CN;
        let subject = self.certificate.tbs_certificate().subject();
        let cn = |text: &str| -> Result<RelativeDistinguishedName, IssuanceError> {
            let mut rdn = RelativeDistinguishedName::default();
            rdn.insert(AttributeTypeAndValue {
                oid: CN,
                value: der::asn1::Any::encode_from(&der::asn1::Utf8StringRef::new(text)?)?,
            })?;
            Ok(rdn)
        };
        let mut rdns = RdnSequence::default();
        let mut named = false;
        for rdn in subject.iter_rdn() {
            match rdn.iter().find(|atv| atv.oid == CN) {
                Some(_) if !named => {
                    let ca_cn = subject
                        .common_name()?
                        .map(|c| c.value().into_owned())
                        .unwrap_or_default();
                    rdns.push(cn(&format!("{ca_cn} OCSP Responder"))?);
                    named = true;
                }
                _ => rdns.push(rdn.clone()),
            }
        }
        if !named {
            rdns.push(cn("OCSP Responder")?);
        }
        Ok(Name::hazmat_from_rdn_sequence(rdns))
    }

    /// DER of the issuing CA certificate.
    pub fn certificate_der(&self) -> Result<Vec<u8>, IssuanceError> {
        Ok(self.certificate.to_der()?)
    }
}

pub use crate::time::unix_seconds;
