//! The configuration schema fragments the core interprets: issuance profiles, OCSP nonce
//! handling and the software key. The server's configuration file embeds them unchanged (its
//! `[profiles.<label>]` sections are [`ProfileConfig`]s); loading, environment overrides and
//! secrets stay in the server.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use crate::signer::CaKeyAlgorithm;

/// A configuration value the core cannot use; the server reports it as an invalid
/// configuration.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct InvalidConfig(pub String);

/// `[profiles.<label>]`: an issuance profile; the label `default` serves unlabelled EST paths.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ProfileConfig {
    /// Validity of issued certificates.
    pub validity_days: u32,
    /// notBefore is set this many seconds in the past, for devices with slightly slow clocks.
    pub backdate_secs: u64,
    /// Device key algorithms accepted in CSRs: `p256`, `p384`, `rsa`.
    pub key_algorithms: Vec<DeviceKeyAlgorithm>,
    /// Smallest RSA modulus accepted.
    pub min_rsa_bits: usize,
    /// Subject CN is required.
    pub cn_required: bool,
    /// A regular expression the whole CN must match.
    pub cn_pattern: Option<String>,
    /// Subject attributes copied from the CSR: `CN`, `O`, `OU`, `C`, `L`, `ST`, `serialNumber`.
    /// Others are refused (`csr.subject_attribute_not_allowed`). Default: all of them.
    pub subject_attributes: Vec<SubjectAttribute>,
    /// SubjectAltName types copied from the CSR: `dns`, `ip`, `uri`, `email`. Others are refused.
    pub san_types: Vec<SanType>,
    /// keyUsage bits of issued certificates.
    pub key_usage: Vec<KeyUsageName>,
    /// extendedKeyUsage: `client-auth`, `server-auth`, or dotted OIDs.
    pub extended_key_usage: Vec<String>,
    /// CRL distribution point URLs written into certificates.
    pub crl_urls: Vec<String>,
    /// OCSP responder URLs written into the AIA extension.
    pub ocsp_urls: Vec<String>,
    /// CA-issuers URLs written into the AIA extension.
    pub ca_issuers_urls: Vec<String>,
    /// Rig names allowed to enroll on this profile; `*` allows every authenticated rig.
    pub rigs: Vec<String>,
    /// Refuse CSRs without verified key attestation.
    pub attestation_required: bool,
    /// Vendors (trust-store names) accepted; empty = every configured vendor.
    pub attestation_vendors: Vec<String>,
    /// Evidence formats accepted; empty = every format.
    pub attestation_formats: Vec<crate::attestation::AttestationFormat>,
    /// Refuse keys the evidence says were imported rather than generated on the device.
    pub require_generated_on_device: bool,
    /// Refuse keys the evidence says can leave the device.
    pub require_non_exportable: bool,
    /// Refuse devices that are not on an imported supply-chain manifest.
    pub require_manifest: bool,
    /// Allow a device that already has an active certificate to enroll a different key
    /// (otherwise refused as a possible clone).
    pub allow_reprovision: bool,
    /// simplereenroll: the fraction of a certificate's lifetime that must have passed before
    /// it may be renewed (0.0 = any time, 0.66 = the last third).
    pub renewal_after_fraction: f64,
    /// simplereenroll: a certificate expired for at most this many seconds may still renew.
    pub renewal_grace_secs: u64,
    /// simplereenroll: a certificate younger than this many seconds may not renew (per-device
    /// rate limit; answered 429 with Retry-After).
    pub renewal_min_interval_secs: u64,
    /// simplereenroll: allow a new key (rekey); otherwise only renewal of the same key.
    pub allow_rekey: bool,
    /// simplereenroll: a new key must come with attestation naming the same device.
    pub rekey_requires_attestation: bool,
    /// simplereenroll: revoke the predecessor (reason superseded) this many seconds after its
    /// renewal; unset keeps it until it expires.
    pub revoke_predecessor_after_secs: Option<u64>,
    /// Shorten each certificate's validity by a random amount up to this many seconds, so that
    /// devices enrolled together do not all come back for renewal together.
    pub validity_jitter_secs: u64,
}

impl Default for ProfileConfig {
    fn default() -> Self {
        Self {
            validity_days: 365,
            backdate_secs: 60,
            key_algorithms: vec![
                DeviceKeyAlgorithm::P256,
                DeviceKeyAlgorithm::P384,
                DeviceKeyAlgorithm::Rsa,
            ],
            min_rsa_bits: 2048,
            cn_required: true,
            cn_pattern: None,
            subject_attributes: SubjectAttribute::ALL.to_vec(),
            san_types: vec![SanType::Dns, SanType::Ip, SanType::Uri],
            key_usage: vec![KeyUsageName::DigitalSignature],
            extended_key_usage: vec!["client-auth".into()],
            crl_urls: Vec::new(),
            ocsp_urls: Vec::new(),
            ca_issuers_urls: Vec::new(),
            rigs: vec!["*".into()],
            attestation_required: false,
            attestation_vendors: Vec::new(),
            attestation_formats: Vec::new(),
            require_generated_on_device: true,
            require_non_exportable: true,
            require_manifest: false,
            allow_reprovision: false,
            renewal_after_fraction: 0.0,
            renewal_grace_secs: 0,
            renewal_min_interval_secs: 0,
            allow_rekey: true,
            rekey_requires_attestation: false,
            revoke_predecessor_after_secs: None,
            validity_jitter_secs: 0,
        }
    }
}

/// Device key algorithms.
#[derive(Clone, Copy, Debug, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum DeviceKeyAlgorithm {
    P256,
    P384,
    Rsa,
}

/// Subject attribute types a profile may accept, by their RFC 4514 short names.
#[derive(Clone, Copy, Debug, Serialize, Deserialize, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum SubjectAttribute {
    #[serde(rename = "CN")]
    CommonName,
    #[serde(rename = "O")]
    Organization,
    #[serde(rename = "OU")]
    OrganizationalUnit,
    #[serde(rename = "C")]
    Country,
    #[serde(rename = "L")]
    Locality,
    #[serde(rename = "ST")]
    StateOrProvince,
    #[serde(rename = "serialNumber")]
    SerialNumber,
}

impl SubjectAttribute {
    /// Every attribute attestca knows; the default of `subject_attributes`.
    pub const ALL: [SubjectAttribute; 7] = [
        SubjectAttribute::CommonName,
        SubjectAttribute::Organization,
        SubjectAttribute::OrganizationalUnit,
        SubjectAttribute::Country,
        SubjectAttribute::Locality,
        SubjectAttribute::StateOrProvince,
        SubjectAttribute::SerialNumber,
    ];

    /// The RFC 4514 short name, as written in the configuration.
    pub fn short_name(self) -> &'static str {
        match self {
            SubjectAttribute::CommonName => "CN",
            SubjectAttribute::Organization => "O",
            SubjectAttribute::OrganizationalUnit => "OU",
            SubjectAttribute::Country => "C",
            SubjectAttribute::Locality => "L",
            SubjectAttribute::StateOrProvince => "ST",
            SubjectAttribute::SerialNumber => "serialNumber",
        }
    }
}

/// SubjectAltName types a profile may accept.
#[derive(Clone, Copy, Debug, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum SanType {
    Dns,
    Ip,
    Uri,
    Email,
}

/// keyUsage bits.
#[derive(Clone, Copy, Debug, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "kebab-case")]
pub enum KeyUsageName {
    DigitalSignature,
    NonRepudiation,
    KeyEncipherment,
    DataEncipherment,
    KeyAgreement,
}

/// What the OCSP responder does with a request's nonce.
#[derive(Clone, Copy, Debug, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum OcspNoncePolicy {
    /// Sign a response that carries the nonce (RFC 8954).
    Echo,
    /// Answer from the pre-signed responses, without the nonce.
    Ignore,
}

/// The software key backend.
#[derive(Clone, Debug)]
pub struct SoftwareSignerConfig {
    pub key_file: PathBuf,
    pub algorithm: CaKeyAlgorithm,
}
