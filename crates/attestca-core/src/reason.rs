//! Every reason code attestca answers with or records, as one enum.
//!
//! Why an enum: the reason codes (`csr.bad_signature`, `attestation.nonce_reused`,
//! `reenroll.too_early`, `request.too_large`, `certificate.not_found`, ...) are an interface
//! contract. Clients and operators match on them in responses (`<code>: <detail>` on EST,
//! `{"error": {"code": ...}}` on the operator API), in the `reason` column of enrollment
//! events and in metric labels, and the documentation lists them in tables (docs/est-profile.md,
//! docs/attestation.md, docs/renewal.md, docs/operator-api.md, openapi/attestca.yaml). As string
//! literals scattered over the verifiers, the policy, the registration authority and the wire,
//! a typo was a silently new code. Here each code is a variant: the error types of every layer
//! carry a [`Reason`], a misspelt variant does not compile, and the string is produced in one
//! place ([`Reason::as_str`]) only where a response, an event or a metric is written.
//!
//! This module is a leaf: it depends on nothing else in the crate, so every layer (core rules,
//! server, tests) can name codes without pulling in what produces them. It says nothing about
//! HTTP statuses; those stay with the layer that answers (the same code can be answered
//! differently by EST and the operator API, e.g. `request.too_large`).
//!
//! Variant names are the code in CamelCase (`csr.key_too_small` → `CsrKeyTooSmall`), checked
//! by a test, so a variant's name tells its string without looking it up.

use std::fmt;

/// Defines [`Reason`] from one table: variant, string. `ALL`, `as_str` and `parse` are
/// generated from the same rows, so they cannot disagree.
macro_rules! reasons {
    ($( $(#[$doc:meta])* $variant:ident = $code:literal, )*) => {
        /// A documented reason code. [`Reason::as_str`] is the stable string.
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub enum Reason {
            $( $(#[$doc])* #[doc = concat!("`", $code, "`")] $variant, )*
        }

        impl Reason {
            /// Every code, in table order.
            pub const ALL: &'static [Reason] = &[$( Reason::$variant, )*];

            /// The stable string: sent on the wire, recorded in events, used as a metric label.
            pub const fn as_str(self) -> &'static str {
                match self {
                    $( Reason::$variant => $code, )*
                }
            }
        }
    };
}

reasons! {
    // Authentication and authorisation (EST and the operator API).
    /// EST: no rig certificate and no Basic credentials (401).
    AuthMissing = "auth.missing",
    /// EST: wrong Basic credentials (401).
    AuthInvalid = "auth.invalid",
    /// EST: the rig is not in the profile's `rigs` (403).
    AuthNotAllowedOnProfile = "auth.not_allowed_on_profile",
    /// Operator API: no operator credentials (401).
    AuthRequired = "auth.required",
    /// Operator API: a bearer token that is not configured (401).
    AuthInvalidToken = "auth.invalid_token",
    /// Operator API: a rig or device certificate (403).
    AuthForbidden = "auth.forbidden",

    /// No profile has the requested label (404).
    ProfileUnknown = "profile.unknown",

    // The wire: what was sent, before any rule looks at it.
    /// EST: not `application/pkcs10` (415).
    RequestContentType = "request.content_type",
    /// EST: the body is not base64 (400).
    RequestEncoding = "request.encoding",
    /// The body is over the limit (413).
    RequestTooLarge = "request.too_large",
    /// The body did not arrive before its deadline (408).
    RequestTimeout = "request.timeout",
    /// Event only: the client went away before the request was decided.
    RequestAbandoned = "request.abandoned",
    /// EST: the body could not be read (400).
    RequestBody = "request.body",
    /// Operator API: a malformed serial, reason, time, cursor, limit or parameter (400).
    RequestInvalid = "request.invalid",
    /// Operator API: a non-empty body that is not JSON (415).
    RequestUnsupportedMediaType = "request.unsupported_media_type",

    // The CSR rules (crate::csr), all 400.
    CsrMalformed = "csr.malformed",
    CsrBadSignature = "csr.bad_signature",
    CsrSignatureAlgorithmNotAllowed = "csr.signature_algorithm_not_allowed",
    CsrKeyAlgorithmNotAllowed = "csr.key_algorithm_not_allowed",
    CsrKeyTooSmall = "csr.key_too_small",
    CsrKeyTooLarge = "csr.key_too_large",
    CsrKeyEncoding = "csr.key_encoding",
    CsrSubjectAttributeNotAllowed = "csr.subject_attribute_not_allowed",
    CsrSubjectEncoding = "csr.subject_encoding",
    CsrSubjectCnMissing = "csr.subject_cn_missing",
    CsrSubjectRejected = "csr.subject_rejected",
    CsrSanTypeNotAllowed = "csr.san_type_not_allowed",
    CsrSanMalformed = "csr.san_malformed",
    CsrSanTooMany = "csr.san_too_many",
    CsrNoIdentity = "csr.no_identity",

    // Attestation: the evidence verifiers (crate::attestation) and the profile's policy.
    AttestationRequired = "attestation.required",
    AttestationMalformed = "attestation.malformed",
    AttestationMultipleAttributes = "attestation.multiple_attributes",
    AttestationUnknownStatementType = "attestation.unknown_statement_type",
    AttestationUntrustedRoot = "attestation.untrusted_root",
    AttestationChainInvalid = "attestation.chain_invalid",
    AttestationExpired = "attestation.expired",
    AttestationSignatureInvalid = "attestation.signature_invalid",
    AttestationAkNotAllowed = "attestation.ak_not_allowed",
    AttestationTpmNameMismatch = "attestation.tpm_name_mismatch",
    AttestationWeakHash = "attestation.weak_hash",
    AttestationTpmKeyAttributes = "attestation.tpm_key_attributes",
    AttestationKeyMismatch = "attestation.key_mismatch",
    AttestationDeviceMismatch = "attestation.device_mismatch",
    AttestationDeviceIdentity = "attestation.device_identity",
    AttestationFormatNotAllowed = "attestation.format_not_allowed",
    AttestationVendorNotAllowed = "attestation.vendor_not_allowed",
    AttestationKeyNotGeneratedOnDevice = "attestation.key_not_generated_on_device",
    AttestationKeyExportable = "attestation.key_exportable",
    AttestationDeviceDenied = "attestation.device_denied",
    AttestationNotInManifest = "attestation.not_in_manifest",
    AttestationCloneSuspected = "attestation.clone_suspected",
    AttestationTooComplex = "attestation.too_complex",
    AttestationNonceUnknown = "attestation.nonce_unknown",
    AttestationNonceForeign = "attestation.nonce_foreign",
    AttestationNonceReused = "attestation.nonce_reused",
    AttestationNonceExpired = "attestation.nonce_expired",
    /// The verification could not be run (its worker failed; 503).
    AttestationUnavailable = "attestation.unavailable",

    // Attestation-key certification (the CA as a TPM attestation CA).
    /// This CA does not certify attestation keys (404).
    AkDisabled = "ak.disabled",
    /// The request is not the attestation-key JSON, or a field is not base64 (400).
    AkRequest = "ak.request",
    /// The EK certificate does not decode, or its key is not RSA 2048 (400).
    AkEndorsementMalformed = "ak.endorsement_malformed",
    /// The EK certificate is not under a trusted TPM vendor's EK root (403).
    AkEndorsementUntrusted = "ak.endorsement_untrusted",
    /// The AK public area does not parse, or its name algorithm is not SHA-256 (400).
    AkPublicMalformed = "ak.public_malformed",
    /// The AK is not a restricted signing key bound to its TPM (403).
    AkAttributes = "ak.attributes",
    /// The secret answers no challenge made for this EK and AK (403).
    AkCredentialWrong = "ak.credential_wrong",
    /// The challenge was made for another rig (403).
    AkCredentialForeign = "ak.credential_foreign",
    /// The challenge was already answered (403).
    AkCredentialReused = "ak.credential_reused",
    /// The challenge expired (403).
    AkCredentialExpired = "ak.credential_expired",
    /// The TPM already has an attestation-key certificate and the policy allows one (403).
    AkAlreadyCertified = "ak.already_certified",

    // The nonce endpoint.
    /// A nonce request asked for fewer than 8 or more than 64 bytes (400).
    NonceLength = "nonce.length",
    /// A nonce request body is not the freshness JSON (400).
    NonceRequest = "nonce.request",
    /// The random generator failed (503).
    NonceUnavailable = "nonce.unavailable",

    // Renewal (simplereenroll).
    ReenrollUnknownCertificate = "reenroll.unknown_certificate",
    ReenrollRevoked = "reenroll.revoked",
    ReenrollSuperseded = "reenroll.superseded",
    ReenrollProfileMismatch = "reenroll.profile_mismatch",
    ReenrollExpired = "reenroll.expired",
    ReenrollTooEarly = "reenroll.too_early",
    ReenrollRateLimited = "reenroll.rate_limited",
    ReenrollChangeSubjectName = "reenroll.change_subject_name",
    ReenrollSubjectChanged = "reenroll.subject_changed",
    ReenrollSanChanged = "reenroll.san_changed",
    ReenrollRekeyNotAllowed = "reenroll.rekey_not_allowed",
    ReenrollRekeyRequiresAttestation = "reenroll.rekey_requires_attestation",
    ReenrollDeviceMismatch = "reenroll.device_mismatch",
    /// The recorded predecessor certificate does not decode (400).
    ReenrollPredecessor = "reenroll.predecessor",

    // Enrollment outcomes.
    /// The certificate issued for this CSR has been revoked (403).
    EnrollRetryRevoked = "enroll.retry_revoked",
    /// Event only: a certificate was issued.
    EnrollIssued = "enroll.issued",
    /// Event only: an earlier certificate for the same CSR was returned again.
    EnrollRetry = "enroll.retry",

    // Capacity.
    /// Too many enrollments in progress (503).
    OverloadEnrollments = "overload.enrollments",
    /// As many password checks as the CA runs at once are in progress (503).
    OverloadAuthentication = "overload.authentication",
    /// A rig is over its request budget (429).
    OverloadRigRate = "overload.rig_rate",
    /// A device certificate is over its request budget (429).
    OverloadDeviceRate = "overload.device_rate",
    /// As many public issuance-log reads as `transparency.max_concurrent_reads` are in
    /// progress (503).
    OverloadLogReads = "overload.log_reads",

    // The service and its dependencies (503).
    ServiceTimeout = "service.timeout",
    ServiceShuttingDown = "service.shutting_down",
    /// Operator API: the database did not answer.
    ServiceDatabaseUnavailable = "service.database_unavailable",
    StorageUnavailable = "storage.unavailable",
    SignerUnavailable = "signer.unavailable",

    // The operator API's resources.
    CertificateNotFound = "certificate.not_found",
    CertificateAlreadyRevoked = "certificate.already_revoked",
    DeviceNoActiveCertificates = "device.no_active_certificates",
    RouteNotFound = "route.not_found",
    RouteMethodNotAllowed = "route.method_not_allowed",

    /// Every freshly drawn serial number was taken (503).
    IssuanceSerialCollision = "issuance.serial_collision",

    // The issuance log (docs/transparency.md), on its plain-HTTP paths and the operator API.
    /// The log path names a log this CA does not keep (404).
    LogNoSuchLog = "log.no_such_log",
    /// Not a C2SP tlog-tiles tile path (404).
    LogBadPath = "log.bad_path",
    /// No such tile or entry bundle yet (404).
    LogNoTile = "log.no_tile",
    /// No checkpoint has been signed yet (404).
    LogNoCheckpoint = "log.no_checkpoint",
    /// The certificate is not in the log: issued before it, or not integrated yet (404).
    LogNotLogged = "log.not_logged",
    /// This CA keeps no issuance log (`transparency.enabled = false`) (404).
    LogDisabled = "log.disabled",

    // Other event reasons.
    /// Event only: the CA issued its own OCSP responder certificate.
    OcspResponderIssued = "ocsp.responder_issued",
}

impl Reason {
    /// The code with this exact string, if there is one.
    pub fn parse(code: &str) -> Option<Reason> {
        Reason::ALL.iter().copied().find(|r| r.as_str() == code)
    }

    /// The part before the dot (`csr`, `attestation`, `reenroll`, ...): which layer or
    /// resource the code is about.
    pub fn namespace(self) -> &'static str {
        match self.as_str().split_once('.') {
            Some((namespace, _)) => namespace,
            None => self.as_str(),
        }
    }
}

impl fmt::Display for Reason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl AsRef<str> for Reason {
    fn as_ref(&self) -> &str {
        self.as_str()
    }
}

#[cfg(test)]
pub(crate) mod tests;
