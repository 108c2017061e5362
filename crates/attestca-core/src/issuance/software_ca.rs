//! Small CAs with software keys, for what is not the issuing CA: test roots, rig CAs, and the
//! simulated secure-element vendor. Never used for device certificates.

use std::path::Path;
use std::str::FromStr;

use const_oid::ObjectIdentifier;
use der::Decode;
use x509_cert::ext::Extension;
use x509_cert::ext::pkix::KeyUsages;
use x509_cert::ext::pkix::name::GeneralName;
use x509_cert::name::Name;
use x509_cert::{Certificate, SubjectPublicKeyInfo};

use super::build::random_serial;
use super::extensions as ext;
use super::{CertificateSpec, IssuanceError, unix_seconds};
use crate::signer::software::{SoftwareSigner, generate_pkcs8};
use crate::signer::{CaKeyAlgorithm, Signer};

/// Seconds in a (non-leap) year.
pub const YEAR: u64 = 365 * 86_400;

/// A CA certificate with its software key.
pub struct SoftwareCa {
    pub signer: SoftwareSigner,
    pub pkcs8: Vec<u8>,
    pub der: Vec<u8>,
    certificate: Certificate,
}

/// Parses an RFC 4514 string such as `CN=Example,O=Org`.
pub fn name(dn: &str) -> Result<Name, IssuanceError> {
    Name::from_str(dn)
        .map_err(|e| IssuanceError::CaCertificate(format!("{dn:?} is not a valid name: {e}")))
}

fn now() -> u64 {
    unix_seconds(std::time::SystemTime::now())
}

/// A new P-256 software key.
pub fn new_key() -> Result<(SoftwareSigner, Vec<u8>), IssuanceError> {
    let pkcs8 = generate_pkcs8(CaKeyAlgorithm::EcdsaP256)?;
    Ok((
        SoftwareSigner::from_pkcs8(CaKeyAlgorithm::EcdsaP256, &pkcs8)?,
        pkcs8,
    ))
}

impl SoftwareCa {
    fn from_parts(
        signer: SoftwareSigner,
        pkcs8: Vec<u8>,
        der: Vec<u8>,
    ) -> Result<Self, IssuanceError> {
        let certificate = Certificate::from_der(&der)?;
        Ok(Self {
            signer,
            pkcs8,
            der,
            certificate,
        })
    }

    /// A self-signed CA (keyCertSign + cRLSign) with a new P-256 key.
    pub fn self_signed(subject: &str, years: u64) -> Result<Self, IssuanceError> {
        let (signer, pkcs8) = new_key()?;
        let subject = name(subject)?;
        let spki = signer.public_key().clone();
        let now = now();
        let der = CertificateSpec {
            serial: random_serial(),
            issuer: subject.clone(),
            subject,
            public_key: spki.clone(),
            not_before: now - 3600,
            not_after: now + years * YEAR,
            extensions: vec![
                ext::basic_constraints(true, None)?,
                ext::key_usage(KeyUsages::KeyCertSign | KeyUsages::CRLSign)?,
                ext::subject_key_identifier(&spki)?,
            ],
        }
        .sign(&signer)?
        .der;
        Self::from_parts(signer, pkcs8, der)
    }

    /// A CA from its certificate and PKCS#8 key (DER).
    pub fn from_certificate_and_key(der: Vec<u8>, pkcs8: Vec<u8>) -> Result<Self, IssuanceError> {
        let signer = SoftwareSigner::from_pkcs8(CaKeyAlgorithm::EcdsaP256, &pkcs8)?;
        Self::from_parts(signer, pkcs8, der)
    }

    /// Loads a CA certificate (PEM) and its PKCS#8 key (PEM).
    pub fn load(certificate: &Path, key: &Path) -> Result<Self, IssuanceError> {
        let der = crate::pem::read_certificate_ders(certificate)
            .map_err(|e| IssuanceError::CaCertificate(e.to_string()))?
            .into_iter()
            .next()
            .ok_or_else(|| IssuanceError::CaCertificate("no certificate".into()))?;
        let pkcs8 = crate::pem::read_private_key(key)
            .map_err(|e| IssuanceError::CaCertificate(e.to_string()))?;
        let signer = SoftwareSigner::from_pkcs8(CaKeyAlgorithm::EcdsaP256, &pkcs8)?;
        Self::from_parts(signer, pkcs8, der)
    }

    /// The CA certificate.
    pub fn certificate(&self) -> &Certificate {
        &self.certificate
    }

    /// Issues a certificate for `public_key` valid from an hour ago for `validity_secs` (never
    /// beyond this CA), with `extensions` plus SKI and AKI.
    pub fn issue(
        &self,
        subject: Name,
        public_key: &SubjectPublicKeyInfo,
        validity_secs: u64,
        mut extensions: Vec<Extension>,
    ) -> Result<Vec<u8>, IssuanceError> {
        let tbs = self.certificate.tbs_certificate();
        let now = now();
        extensions.push(ext::subject_key_identifier(public_key)?);
        extensions.push(ext::authority_key_identifier(
            &ext::certificate_key_identifier(&self.certificate),
        )?);
        Ok(CertificateSpec {
            serial: random_serial(),
            issuer: tbs.subject().clone(),
            subject,
            public_key: public_key.clone(),
            not_before: now - 3600,
            not_after: (now + validity_secs)
                .min(unix_seconds(tbs.validity().not_after.to_system_time())),
            extensions,
        }
        .sign(&self.signer)?
        .der)
    }

    /// Issues a subordinate CA certificate for `public_key`.
    pub fn issue_ca(
        &self,
        subject: &str,
        public_key: &SubjectPublicKeyInfo,
        years: u64,
        path_len: Option<u8>,
    ) -> Result<Vec<u8>, IssuanceError> {
        self.issue(
            name(subject)?,
            public_key,
            years * YEAR,
            vec![
                ext::basic_constraints(true, path_len)?,
                ext::key_usage(KeyUsages::KeyCertSign | KeyUsages::CRLSign)?,
            ],
        )
    }

    /// Issues an end-entity certificate for a new P-256 key; returns (certificate, PKCS#8).
    pub fn issue_end_entity(
        &self,
        cn: &str,
        purpose: ObjectIdentifier,
        alt_names: Vec<GeneralName>,
        years: u64,
    ) -> Result<(Vec<u8>, Vec<u8>), IssuanceError> {
        let (key, pkcs8) = new_key()?;
        let mut extensions = vec![
            ext::basic_constraints(false, None)?,
            ext::key_usage(KeyUsages::DigitalSignature.into())?,
            ext::extended_key_usage(&[purpose])?,
        ];
        if !alt_names.is_empty() {
            extensions.push(ext::subject_alt_name(&alt_names, false)?);
        }
        let der = self.issue(
            name(&format!("CN={cn}"))?,
            key.public_key(),
            years * YEAR,
            extensions,
        )?;
        Ok((der, pkcs8))
    }
}
