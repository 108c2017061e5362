//! Revocation vocabulary: the RFC 5280 CRLReason names the CA records, and their codes in
//! CRL entries and OCSP responses. A leaf: storage, the CRL builder, the OCSP signer and the
//! revocation service all speak it without depending on each other.

use x509_cert::ext::pkix::CrlReason;

/// Why a certificate was revoked, by its RFC 5280 name (the spelling stored in the database,
/// accepted by the operator API and `attestca revoke`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum RevocationReason {
    Unspecified,
    KeyCompromise,
    CaCompromise,
    AffiliationChanged,
    Superseded,
    CessationOfOperation,
    CertificateHold,
    PrivilegeWithdrawn,
    AaCompromise,
}

impl RevocationReason {
    /// The reasons an operator may revoke for. `removeFromCRL` is not a reason to revoke, and
    /// `certificateHold` is left out: a hold cannot be released here.
    pub const OPERATOR: [RevocationReason; 8] = [
        RevocationReason::Unspecified,
        RevocationReason::KeyCompromise,
        RevocationReason::CaCompromise,
        RevocationReason::AffiliationChanged,
        RevocationReason::Superseded,
        RevocationReason::CessationOfOperation,
        RevocationReason::PrivilegeWithdrawn,
        RevocationReason::AaCompromise,
    ];

    /// The RFC 5280 name, as stored and as the operator API takes it.
    pub fn as_str(self) -> &'static str {
        match self {
            RevocationReason::Unspecified => "unspecified",
            RevocationReason::KeyCompromise => "keyCompromise",
            RevocationReason::CaCompromise => "cACompromise",
            RevocationReason::AffiliationChanged => "affiliationChanged",
            RevocationReason::Superseded => "superseded",
            RevocationReason::CessationOfOperation => "cessationOfOperation",
            RevocationReason::CertificateHold => "certificateHold",
            RevocationReason::PrivilegeWithdrawn => "privilegeWithdrawn",
            RevocationReason::AaCompromise => "aACompromise",
        }
    }

    /// The reason named `name` (exact RFC 5280 spelling).
    pub fn from_name(name: &str) -> Option<Self> {
        [RevocationReason::CertificateHold]
            .into_iter()
            .chain(RevocationReason::OPERATOR)
            .find(|r| r.as_str() == name)
    }

    /// The CRLReason written into CRL entries and OCSP responses; `None` for `unspecified`,
    /// which RFC 5280 §5.3.1 says to express by leaving the extension out.
    pub fn crl_reason(self) -> Option<CrlReason> {
        Some(match self {
            RevocationReason::Unspecified => return None,
            RevocationReason::KeyCompromise => CrlReason::KeyCompromise,
            RevocationReason::CaCompromise => CrlReason::CaCompromise,
            RevocationReason::AffiliationChanged => CrlReason::AffiliationChanged,
            RevocationReason::Superseded => CrlReason::Superseded,
            RevocationReason::CessationOfOperation => CrlReason::CessationOfOperation,
            RevocationReason::CertificateHold => CrlReason::CertificateHold,
            RevocationReason::PrivilegeWithdrawn => CrlReason::PrivilegeWithdrawn,
            RevocationReason::AaCompromise => CrlReason::AaCompromise,
        })
    }
}

impl std::fmt::Display for RevocationReason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The CRLReason of a reason name as the store records it; `None` for `unspecified` and for
/// names that are not RFC 5280 reasons (both leave the extension out).
pub fn reason_code(name: &str) -> Option<CrlReason> {
    RevocationReason::from_name(name).and_then(RevocationReason::crl_reason)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip_and_unspecified_has_no_code() {
        for reason in RevocationReason::OPERATOR {
            assert_eq!(RevocationReason::from_name(reason.as_str()), Some(reason));
        }
        assert_eq!(reason_code("unspecified"), None);
        assert_eq!(reason_code("superseded"), Some(CrlReason::Superseded));
        assert_eq!(reason_code("removeFromCRL"), None);
        assert_eq!(
            reason_code("KeyCompromise"),
            None,
            "names are case-sensitive"
        );
    }
}
