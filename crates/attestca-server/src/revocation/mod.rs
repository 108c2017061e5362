//! Revocation publication: CRLs, built from the certificate store and signed through the CA's
//! signer (the OCSP responder is [`crate::ocsp`]).

pub mod crl;
pub mod root_crl;
