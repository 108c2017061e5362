//! Issuance profiles: what a certificate issued under a label looks like.

use const_oid::ObjectIdentifier;
use const_oid::db::rfc5280::{ID_KP_CLIENT_AUTH, ID_KP_SERVER_AUTH};
use flagset::FlagSet;
use regex::Regex;
use x509_cert::SubjectPublicKeyInfo;
use x509_cert::ext::Extension;
use x509_cert::ext::pkix::KeyUsages;
use x509_cert::ext::pkix::name::GeneralName;

use super::extensions;
use crate::config::{
    DeviceKeyAlgorithm, InvalidConfig, KeyUsageName, ProfileConfig, SanType, SubjectAttribute,
};

/// A profile resolved from configuration: validated once at start-up, used on every request.
#[derive(Clone, Debug)]
pub struct IssuanceProfile {
    pub label: String,
    pub validity_secs: u64,
    /// Up to this many seconds are taken off each certificate's validity at random.
    pub validity_jitter_secs: u64,
    pub backdate_secs: u64,
    pub key_algorithms: Vec<DeviceKeyAlgorithm>,
    pub min_rsa_bits: usize,
    pub cn_required: bool,
    pub cn_pattern: Option<Regex>,
    /// Subject attributes a CSR may carry (sorted, without repeats).
    pub subject_attributes: Vec<SubjectAttribute>,
    pub san_types: Vec<SanType>,
    pub key_usage: FlagSet<KeyUsages>,
    pub extended_key_usage: Vec<ObjectIdentifier>,
    pub crl_urls: Vec<String>,
    pub ocsp_urls: Vec<String>,
    pub ca_issuers_urls: Vec<String>,
    /// Rig names allowed on this profile; `None` means every authenticated rig.
    pub allowed_rigs: Option<Vec<String>>,
    pub attestation: AttestationPolicy,
    pub renewal: RenewalPolicy,
}

/// What a profile allows of simplereenroll.
#[derive(Clone, Debug, Default)]
pub struct RenewalPolicy {
    pub after_fraction: f64,
    pub grace_secs: u64,
    pub min_interval_secs: u64,
    pub allow_rekey: bool,
    pub rekey_requires_attestation: bool,
    pub revoke_predecessor_after_secs: Option<u64>,
}

/// What a profile demands of key attestation.
#[derive(Clone, Debug, Default)]
pub struct AttestationPolicy {
    pub required: bool,
    /// Accepted vendors; empty = all configured.
    pub vendors: Vec<String>,
    /// Accepted formats; empty = all.
    pub formats: Vec<crate::attestation::AttestationFormat>,
    pub require_generated_on_device: bool,
    pub require_non_exportable: bool,
    pub require_manifest: bool,
    pub allow_reprovision: bool,
}

impl IssuanceProfile {
    /// Resolves a `[profiles.<label>]` section.
    pub fn from_config(label: &str, config: &ProfileConfig) -> Result<Self, InvalidConfig> {
        let invalid = |what: String| InvalidConfig(format!("profiles.{label}: {what}"));
        let cn_pattern = config
            .cn_pattern
            .as_deref()
            .map(|p| Regex::new(&format!("^(?:{p})$")))
            .transpose()
            .map_err(|e| invalid(format!("cn_pattern: {e}")))?;
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
        let mut subject_attributes = config.subject_attributes.clone();
        subject_attributes.sort_unstable();
        subject_attributes.dedup();
        if !subject_attributes.contains(&SubjectAttribute::CommonName)
            && (config.cn_required || config.cn_pattern.is_some())
        {
            return Err(invalid(
                "subject_attributes must include \"CN\" when cn_required or cn_pattern is set"
                    .into(),
            ));
        }
        if config.key_algorithms.is_empty() {
            return Err(invalid("key_algorithms is empty".into()));
        }
        if config.min_rsa_bits < 2048 {
            return Err(invalid("min_rsa_bits below 2048 is not allowed".into()));
        }
        let allowed_rigs = if config.rigs.iter().any(|r| r == "*") {
            None
        } else {
            Some(config.rigs.clone())
        };
        Ok(Self {
            label: label.to_owned(),
            validity_secs: u64::from(config.validity_days) * 86_400,
            validity_jitter_secs: config
                .validity_jitter_secs
                .min(u64::from(config.validity_days) * 86_400 / 2),
            backdate_secs: config.backdate_secs,
            key_algorithms: config.key_algorithms.clone(),
            min_rsa_bits: config.min_rsa_bits,
            cn_required: config.cn_required,
            cn_pattern,
            subject_attributes,
            san_types: config.san_types.clone(),
            key_usage,
            extended_key_usage,
            crl_urls: config.crl_urls.clone(),
            ocsp_urls: config.ocsp_urls.clone(),
            ca_issuers_urls: config.ca_issuers_urls.clone(),
            allowed_rigs,
            attestation: AttestationPolicy {
                required: config.attestation_required,
                vendors: config.attestation_vendors.clone(),
                formats: config.attestation_formats.clone(),
                require_generated_on_device: config.require_generated_on_device,
                require_non_exportable: config.require_non_exportable,
                require_manifest: config.require_manifest,
                allow_reprovision: config.allow_reprovision,
            },
            renewal: RenewalPolicy {
                after_fraction: config.renewal_after_fraction.clamp(0.0, 1.0),
                grace_secs: config.renewal_grace_secs,
                min_interval_secs: config.renewal_min_interval_secs,
                allow_rekey: config.allow_rekey,
                rekey_requires_attestation: config.rekey_requires_attestation,
                revoke_predecessor_after_secs: config.revoke_predecessor_after_secs,
            },
        })
    }

    /// Whether the named rig may enroll on this profile.
    pub fn allows_rig(&self, rig: &str) -> bool {
        match &self.allowed_rigs {
            None => true,
            Some(names) => names.iter().any(|n| n == rig),
        }
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

    #[test]
    fn subject_attributes_must_cover_the_cn_rules() {
        let narrow = ProfileConfig {
            subject_attributes: vec![SubjectAttribute::SerialNumber, SubjectAttribute::CommonName],
            ..ProfileConfig::default()
        };
        let profile = IssuanceProfile::from_config("narrow", &narrow).expect("valid");
        assert_eq!(
            profile.subject_attributes,
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
}
