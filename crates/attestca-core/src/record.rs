//! The vocabulary of the records the CA keeps: a certificate's status, an enrollment event's
//! outcome, an audited action's outcome. A leaf, like [`crate::revocation`]: storage, the
//! registration authority, the OCSP responder and the operator API speak it without
//! depending on each other.
//!
//! The strings are the contract: they are what the database stores, the operator API returns
//! and filters on, and `docs/operator-api.md` lists. Each enum maps to them in one table, so a
//! misspelt status is a compile error rather than a row no query matches.

use std::fmt;
use std::str::FromStr;

/// A stored value that is not one of the vocabulary's words (a database written by something
/// else, or an operator's filter).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{value:?} is not {kind} ({accepted})")]
pub struct UnknownWord {
    /// Which vocabulary was asked.
    pub kind: &'static str,
    /// What was given (truncated to 64 characters).
    pub value: String,
    /// The accepted words, comma-separated.
    pub accepted: &'static str,
}

macro_rules! vocabulary {
    ($(#[$meta:meta])* $name:ident, $kind:literal, { $($(#[$vmeta:meta])* $variant:ident => $text:literal),+ $(,)? }) => {
        $(#[$meta])*
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
        pub enum $name {
            $($(#[$vmeta])* $variant),+
        }

        impl $name {
            /// Every word, in declaration order.
            pub const ALL: &'static [$name] = &[$($name::$variant),+];

            /// The word, as stored and as the operator API spells it.
            pub fn as_str(self) -> &'static str {
                match self {
                    $($name::$variant => $text),+
                }
            }
        }

        impl FromStr for $name {
            type Err = UnknownWord;

            fn from_str(text: &str) -> Result<Self, UnknownWord> {
                match text {
                    $($text => Ok($name::$variant),)+
                    _ => Err(UnknownWord {
                        kind: $kind,
                        value: text.chars().take(64).collect(),
                        accepted: concat!($($text, ", "),+).trim_end_matches(", "),
                    }),
                }
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(self.as_str())
            }
        }

        impl serde::Serialize for $name {
            fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
                serializer.serialize_str(self.as_str())
            }
        }

        impl<'de> serde::Deserialize<'de> for $name {
            fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
                let text = <std::borrow::Cow<'de, str>>::deserialize(deserializer)?;
                text.parse().map_err(serde::de::Error::custom)
            }
        }
    };
}

vocabulary!(
    /// Whether a certificate is still good. Expiry is not a status: it is read off `not_after`.
    CertStatus, "a certificate status", {
        Active => "active",
        Revoked => "revoked",
    }
);

/// A certificate is active until it is revoked.
impl Default for CertStatus {
    fn default() -> Self {
        CertStatus::Active
    }
}

vocabulary!(
    /// How an enrollment or renewal attempt ended.
    EventOutcome, "an enrollment outcome", {
        /// A certificate was issued (and committed with this event).
        Issued => "issued",
        /// The same CSR came again within the retry window, and the certificate issued for it
        /// was sent again (no second certificate).
        Retried => "retried",
        /// The request was refused for a reason of its own (policy, CSR, attestation).
        Refused => "refused",
        /// The CA could not decide: a dependency (database, HSM, clock) failed.
        Failed => "failed",
    }
);

/// An event is `failed` until it is decided: one recorded before that (the client went away,
/// the server stopped) is one the CA could not decide.
impl Default for EventOutcome {
    fn default() -> Self {
        EventOutcome::Failed
    }
}

vocabulary!(
    /// How an audited action (an operator's, or one of the CA's own rules) ended.
    AuditOutcome, "an audit outcome", {
        Done => "done",
        Refused => "refused",
    }
);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_word_round_trips() {
        for status in CertStatus::ALL {
            assert_eq!(status.as_str().parse::<CertStatus>(), Ok(*status));
        }
        for outcome in EventOutcome::ALL {
            assert_eq!(outcome.to_string().parse::<EventOutcome>(), Ok(*outcome));
        }
        for outcome in AuditOutcome::ALL {
            assert_eq!(outcome.as_str().parse::<AuditOutcome>(), Ok(*outcome));
        }
    }

    #[test]
    fn an_unknown_word_says_what_is_accepted() {
        let err = "Issued".parse::<EventOutcome>().unwrap_err();
        assert_eq!(
            err.to_string(),
            "\"Issued\" is not an enrollment outcome (issued, retried, refused, failed)"
        );
        assert!("expired".parse::<CertStatus>().is_err());
        let long = "x".repeat(1000);
        assert_eq!(long.parse::<AuditOutcome>().unwrap_err().value.len(), 64);
    }

    #[test]
    fn words_serialise_as_their_strings() {
        assert_eq!(
            serde_json::to_string(&CertStatus::Revoked).unwrap(),
            "\"revoked\""
        );
        assert_eq!(
            serde_json::from_str::<EventOutcome>("\"retried\"").unwrap(),
            EventOutcome::Retried
        );
        let err = serde_json::from_str::<CertStatus>("\"expired\"").unwrap_err();
        assert!(err.to_string().contains("(active, revoked)"), "{err}");
    }
}
