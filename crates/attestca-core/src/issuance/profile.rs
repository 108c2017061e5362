//! Issuance profiles: what a certificate issued under a label looks like, and who may get one.
//!
//! A `[profiles.<label>]` section configures two things that change for different reasons: the
//! registration authority's policy ([`EnrollmentPolicy`]: rigs, CSR rules, attestation,
//! renewal), which decides *whether* to issue, and the [`CertificateProfile`] (validity,
//! key usage, EKU, CRL/OCSP/caIssuers URLs), which decides *what* is issued. Both are resolved
//! from the same [`ProfileConfig`] (whose keys stay as they are); an [`IssuanceProfile`] holds
//! the pair under its label.

use const_oid::ObjectIdentifier;
use const_oid::db::rfc5280::{ID_KP_CLIENT_AUTH, ID_KP_SERVER_AUTH};
use flagset::FlagSet;
use x509_cert::SubjectPublicKeyInfo;
use x509_cert::ext::Extension;
use x509_cert::ext::pkix::KeyUsages;
use x509_cert::ext::pkix::name::GeneralName;

use super::extensions;
use crate::config::{InvalidConfig, KeyUsageName, ProfileConfig};
pub use crate::policy::{AttestationPolicy, EnrollmentPolicy, RenewalPolicy};

/// A profile resolved from configuration: validated once at start-up, used on every request.
#[derive(Clone, Debug)]
pub struct IssuanceProfile {
    pub label: String,
    /// Whether to issue: the registration authority's half.
    pub policy: EnrollmentPolicy,
    /// What is issued: the issuer's half.
    pub certificate: CertificateProfile,
}

impl IssuanceProfile {
    /// Resolves a `[profiles.<label>]` section into both halves.
    pub fn from_config(label: &str, config: &ProfileConfig) -> Result<Self, InvalidConfig> {
        Ok(Self {
            label: label.to_owned(),
            policy: EnrollmentPolicy::from_config(label, config)?,
            certificate: CertificateProfile::from_config(label, config)?,
        })
    }
}

/// What an end-entity certificate issued under a profile looks like.
#[derive(Clone, Debug)]
pub struct CertificateProfile {
    pub validity_secs: u64,
    /// Up to this many seconds are taken off each certificate's validity at random.
    pub validity_jitter_secs: u64,
    pub backdate_secs: u64,
    pub key_usage: FlagSet<KeyUsages>,
    pub extended_key_usage: Vec<ObjectIdentifier>,
    pub crl_urls: Vec<String>,
    pub ocsp_urls: Vec<String>,
    pub ca_issuers_urls: Vec<String>,
}

impl CertificateProfile {
    /// Resolves the certificate keys of a `[profiles.<label>]` section.
    pub fn from_config(label: &str, config: &ProfileConfig) -> Result<Self, InvalidConfig> {
        let invalid = |what: String| InvalidConfig(format!("profiles.{label}: {what}"));
        let mut key_usage = FlagSet::<KeyUsages>::default();
        for usage in &config.key_usage {
            key_usage |= match usage {
                KeyUsageName::DigitalSignature => KeyUsages::DigitalSignature,
                KeyUsageName::NonRepudiation => KeyUsages::NonRepudiation,
                KeyUsageName::KeyEncipherment => KeyUsages::KeyEncipherment,
                KeyUsageName::DataEncipherment => KeyUsages::DataEncipherment,
                KeyUsageName::KeyAgreement => KeyUsages::KeyAgreement,
            };
        }
        if key_usage.is_empty() {
            return Err(invalid("key_usage must name at least one usage".into()));
        }
        let extended_key_usage = config
            .extended_key_usage
            .iter()
            .map(|name| match name.as_str() {
                "client-auth" => Ok(ID_KP_CLIENT_AUTH),
                "server-auth" => Ok(ID_KP_SERVER_AUTH),
                dotted => ObjectIdentifier::new(dotted)
                    .map_err(|e| invalid(format!("extended_key_usage {dotted:?}: {e}"))),
            })
            .collect::<Result<Vec<_>, _>>()?;
        for url in config
            .crl_urls
            .iter()
            .chain(&config.ocsp_urls)
            .chain(&config.ca_issuers_urls)
        {
            if !(url.starts_with("http://") || url.starts_with("https://")) || !url.is_ascii() {
                return Err(invalid(format!("{url:?} is not an http(s) URL")));
            }
        }
        Ok(Self {
            validity_secs: u64::from(config.validity_days) * 86_400,
            validity_jitter_secs: config
                .validity_jitter_secs
                .min(u64::from(config.validity_days) * 86_400 / 2),
            backdate_secs: config.backdate_secs,
            key_usage,
            extended_key_usage,
            crl_urls: config.crl_urls.clone(),
            ocsp_urls: config.ocsp_urls.clone(),
            ca_issuers_urls: config.ca_issuers_urls.clone(),
        })
    }

    /// The extensions of an end-entity certificate issued under this profile.
    pub fn extensions(
        &self,
        subject_key: &SubjectPublicKeyInfo,
        issuer_key_id: &[u8],
        subject_alt_names: &[GeneralName],
        subject_empty: bool,
    ) -> der::Result<Vec<Extension>> {
        let mut exts = vec![
            extensions::basic_constraints(false, None)?,
            extensions::key_usage(self.key_usage)?,
        ];
        if !self.extended_key_usage.is_empty() {
            exts.push(extensions::extended_key_usage(&self.extended_key_usage)?);
        }
        exts.push(extensions::subject_key_identifier(subject_key)?);
        exts.push(extensions::authority_key_identifier(issuer_key_id)?);
        if !subject_alt_names.is_empty() {
            exts.push(extensions::subject_alt_name(
                subject_alt_names,
                subject_empty,
            )?);
        }
        if !self.crl_urls.is_empty() {
            exts.push(extensions::crl_distribution_points(&self.crl_urls)?);
        }
        if !self.ocsp_urls.is_empty() || !self.ca_issuers_urls.is_empty() {
            exts.push(extensions::authority_info_access(
                &self.ocsp_urls,
                &self.ca_issuers_urls,
            )?);
        }
        Ok(exts)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::SubjectAttribute;

    #[test]
    fn subject_attributes_must_cover_the_cn_rules() {
        let narrow = ProfileConfig {
            subject_attributes: vec![SubjectAttribute::SerialNumber, SubjectAttribute::CommonName],
            ..ProfileConfig::default()
        };
        let profile = IssuanceProfile::from_config("narrow", &narrow).expect("valid");
        assert_eq!(
            profile.policy.subject_attributes,
            vec![SubjectAttribute::CommonName, SubjectAttribute::SerialNumber]
        );
        let no_cn = ProfileConfig {
            subject_attributes: vec![SubjectAttribute::SerialNumber],
            ..ProfileConfig::default()
        };
        assert!(
            IssuanceProfile::from_config("no-cn", &no_cn).is_err(),
            "cn_required without CN in subject_attributes can never be met"
        );
        let san_only = ProfileConfig {
            subject_attributes: Vec::new(),
            cn_required: false,
            ..ProfileConfig::default()
        };
        assert!(IssuanceProfile::from_config("san-only", &san_only).is_ok());
    }

    #[test]
    fn both_halves_come_from_one_section() {
        let config = ProfileConfig {
            rigs: vec!["rig-1".into()],
            validity_days: 10,
            validity_jitter_secs: 10 * 86_400,
            attestation_required: true,
            ..ProfileConfig::default()
        };
        let profile = IssuanceProfile::from_config("both", &config).expect("valid");
        assert_eq!(profile.policy.label, "both");
        assert!(profile.policy.allows_rig("rig-1") && !profile.policy.allows_rig("rig-2"));
        assert!(profile.policy.attestation.required);
        assert_eq!(profile.certificate.validity_secs, 10 * 86_400);
        assert_eq!(
            profile.certificate.validity_jitter_secs,
            5 * 86_400,
            "jitter is capped at half the validity"
        );
        let bad_url = ProfileConfig {
            crl_urls: vec!["ftp://crl.example/ca.crl".into()],
            ..ProfileConfig::default()
        };
        assert!(CertificateProfile::from_config("bad", &bad_url).is_err());
        assert!(EnrollmentPolicy::from_config("bad", &bad_url).is_ok());
    }
}
