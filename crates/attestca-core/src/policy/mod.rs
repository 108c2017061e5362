//! The registration authority's policy: who may enroll on a profile and what their requests
//! must satisfy, as pure functions of plain inputs.
//!
//! Why a module of its own: a profile used to be one struct that mixed two concerns, *whether*
//! to issue (rigs, CSR rules, attestation and renewal policy) and *what* is issued (validity,
//! extensions, URLs). The first is the registration authority's, the second the issuer's
//! ([`crate::issuance::CertificateProfile`]). Keeping the decisions here, apart from the
//! server's store and network, lets every refusal the policy can produce be unit-tested in
//! milliseconds, and lets the server do only the I/O around them: it looks things up (the
//! predecessor's record, the manifest, other certificates of a device, the nonce) and hands
//! the facts to these functions, which answer with a decision or a [`Refusal`] carrying a
//! documented reason code.
//!
//! - [`EnrollmentPolicy`]: a profile's RA half, resolved from the same
//!   [`ProfileConfig`] as its certificate half; it also answers `csrattrs`
//!   ([`EnrollmentPolicy::csr_attributes`]).
//! - [`attestation`]: what a profile demands of verified evidence.
//! - [`renewal`]: whether a presented certificate may renew, and with which CSR.
//! - The CSR rules themselves are [`crate::csr::validate`].

pub mod attestation;
pub mod attestation_key;
pub mod renewal;

use const_oid::db::rfc5912::{
    ECDSA_WITH_SHA_256, ECDSA_WITH_SHA_384, ID_EC_PUBLIC_KEY, SECP_256_R_1, SECP_384_R_1,
};
use der::Encode;
use regex::Regex;
use x509_cert::attr::Attribute;

use crate::config::{DeviceKeyAlgorithm, InvalidConfig, ProfileConfig, SanType, SubjectAttribute};
pub use crate::reason::Reason;

pub use attestation::AttestationPolicy;
pub use renewal::RenewalPolicy;

/// The registration authority's half of a profile: who may enroll, which CSRs are accepted,
/// what attestation and renewal demand. Validated once at start-up, used on every request.
#[derive(Clone, Debug)]
pub struct EnrollmentPolicy {
    /// The profile label, named in refusals.
    pub label: String,
    pub key_algorithms: Vec<DeviceKeyAlgorithm>,
    pub min_rsa_bits: usize,
    pub cn_required: bool,
    pub cn_pattern: Option<Regex>,
    /// Subject attributes a CSR may carry (sorted, without repeats).
    pub subject_attributes: Vec<SubjectAttribute>,
    pub san_types: Vec<SanType>,
    /// Rig names allowed on this profile; `None` means every authenticated rig.
    pub allowed_rigs: Option<Vec<String>>,
    pub attestation: AttestationPolicy,
    pub renewal: RenewalPolicy,
}

impl EnrollmentPolicy {
    /// Resolves the RA half of a `[profiles.<label>]` section.
    pub fn from_config(label: &str, config: &ProfileConfig) -> Result<Self, InvalidConfig> {
        let invalid = |what: String| InvalidConfig(format!("profiles.{label}: {what}"));
        let cn_pattern = config
            .cn_pattern
            .as_deref()
            .map(|p| Regex::new(&format!("^(?:{p})$")))
            .transpose()
            .map_err(|e| invalid(format!("cn_pattern: {e}")))?;
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
            key_algorithms: config.key_algorithms.clone(),
            min_rsa_bits: config.min_rsa_bits,
            cn_required: config.cn_required,
            cn_pattern,
            subject_attributes,
            san_types: config.san_types.clone(),
            allowed_rigs,
            attestation: AttestationPolicy::from_config(config),
            renewal: RenewalPolicy::from_config(config),
        })
    }

    /// Whether the named rig may enroll on this profile.
    pub fn allows_rig(&self, rig: &str) -> bool {
        match &self.allowed_rigs {
            None => true,
            Some(names) => names.iter().any(|n| n == rig),
        }
    }

    /// The rig may enroll on this profile, or `auth.not_allowed_on_profile`.
    pub fn authorize_rig(&self, rig: &str) -> Result<(), Refusal> {
        if self.allows_rig(rig) {
            return Ok(());
        }
        Err(Refusal::new(
            Reason::AuthNotAllowedOnProfile,
            format!(
                "rig {rig:?} is not allowed to enroll on profile {:?}",
                self.label
            ),
        ))
    }

    /// The DER `CsrAttrs` (RFC 7030 4.5.2) this profile asks clients for: the bare
    /// attestation OID when evidence is required (est-wire.md, csrattrs), and, when the profile
    /// accepts exactly one EC curve, that curve (as an id-ecPublicKey attribute) and its hash
    /// (as the signature algorithm OID).
    pub fn csr_attributes(&self) -> Result<Vec<u8>, der::Error> {
        let wanted = match self.key_algorithms.as_slice() {
            [DeviceKeyAlgorithm::P256] => Some((SECP_256_R_1, ECDSA_WITH_SHA_256)),
            [DeviceKeyAlgorithm::P384] => Some((SECP_384_R_1, ECDSA_WITH_SHA_384)),
            _ => None,
        };
        let mut elements = Vec::new();
        if self.attestation.required {
            elements.push(crate::attestation::ID_AA_ATTESTATION.to_der()?);
        }
        if let Some((curve, hash)) = wanted {
            let attribute = Attribute {
                oid: ID_EC_PUBLIC_KEY,
                values: der::asn1::SetOfVec::try_from(vec![der::asn1::Any::encode_from(&curve)?])?,
            };
            elements.push(attribute.to_der()?);
            elements.push(hash.to_der()?);
        }
        crate::est_codec::csr_attrs(&elements)
    }
}

/// How the wire answers a refusal; the server maps each to an HTTP status in one place.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RefusalClass {
    /// The request itself is wrong (400).
    BadRequest,
    /// The request is well-formed but the policy says no (403).
    Forbidden,
    /// Come back later (429 with Retry-After).
    TooManyRequests,
}

/// The reason codes the registration authority's pure policy produces, in documentation
/// order (the CSR rules produce the `csr.*` codes, [`crate::csr::CsrRefusal`]). The codes
/// themselves are [`Reason`]s; this list is the policy's subset of them, for tests that check
/// each has a case and for [`class`].
pub const POLICY_REASONS: [Reason; 35] = [
    Reason::AuthNotAllowedOnProfile,
    Reason::AttestationRequired,
    Reason::AttestationVendorNotAllowed,
    Reason::AttestationFormatNotAllowed,
    Reason::AttestationKeyNotGeneratedOnDevice,
    Reason::AttestationKeyExportable,
    Reason::AttestationDeviceDenied,
    Reason::AttestationNotInManifest,
    Reason::AttestationCloneSuspected,
    Reason::AttestationNonceUnknown,
    Reason::AttestationNonceForeign,
    Reason::AttestationNonceExpired,
    Reason::AttestationNonceReused,
    Reason::ReenrollUnknownCertificate,
    Reason::ReenrollRevoked,
    Reason::ReenrollSuperseded,
    Reason::ReenrollProfileMismatch,
    Reason::ReenrollExpired,
    Reason::ReenrollTooEarly,
    Reason::ReenrollRateLimited,
    Reason::ReenrollChangeSubjectName,
    Reason::ReenrollSubjectChanged,
    Reason::ReenrollSanChanged,
    Reason::ReenrollRekeyNotAllowed,
    Reason::ReenrollRekeyRequiresAttestation,
    Reason::ReenrollDeviceMismatch,
    Reason::AkEndorsementMalformed,
    Reason::AkEndorsementUntrusted,
    Reason::AkPublicMalformed,
    Reason::AkAttributes,
    Reason::AkCredentialWrong,
    Reason::AkCredentialForeign,
    Reason::AkCredentialExpired,
    Reason::AkCredentialReused,
    Reason::AkAlreadyCertified,
];

/// How the wire answers a policy's reason code (the statuses documented beside it): the
/// changed-name renewal codes are bad requests, the renewal rate limit says when to come back,
/// every other policy "no" is forbidden.
pub fn class(code: Reason) -> RefusalClass {
    match code {
        Reason::ReenrollChangeSubjectName
        | Reason::ReenrollSubjectChanged
        | Reason::ReenrollSanChanged
        | Reason::AkEndorsementMalformed
        | Reason::AkPublicMalformed => RefusalClass::BadRequest,
        Reason::ReenrollRateLimited => RefusalClass::TooManyRequests,
        _ => RefusalClass::Forbidden,
    }
}

/// A policy's "no": the documented reason code, a human-readable detail, and for
/// [`RefusalClass::TooManyRequests`] when to come back.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{code}: {detail}")]
pub struct Refusal {
    pub code: Reason,
    pub detail: String,
    /// Seconds until the request may succeed (Retry-After), for rate limits.
    pub retry_after_secs: Option<u64>,
}

impl Refusal {
    /// A refusal without a retry time.
    pub fn new(code: Reason, detail: impl Into<String>) -> Self {
        Self {
            code,
            detail: detail.into(),
            retry_after_secs: None,
        }
    }

    /// How the wire answers it.
    pub fn class(&self) -> RefusalClass {
        class(self.code)
    }
}

#[cfg(test)]
mod tests;
