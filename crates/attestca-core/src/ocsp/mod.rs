//! OCSP encodings (RFC 6960): the ASN.1 types, request parsing and response signing. The
//! responder that answers from a cache lives in the server.

pub mod asn1;
pub mod request;
pub mod signing;

/// Errors decoding an OCSP request or building a response.
#[derive(Debug, thiserror::Error)]
pub enum OcspError {
    #[error("malformed request: {0}")]
    Malformed(String),
    #[error("the request names an issuer this responder does not answer for")]
    Unauthorized,
    #[error(transparent)]
    Signer(#[from] crate::signer::SignerError),
    #[error("{0}")]
    Internal(String),
}
