//! Revocation: the one service through which certificates are revoked, each revocation audited
//! in the transaction that makes it ([`service`]), and its publication: CRLs, built from the
//! certificate store and signed through the CA's signer (the OCSP responder is
//! [`crate::ocsp`]).

pub mod crl;
pub mod root_crl;
pub mod service;

pub use service::{Actor, Revocations, SystemRule};
