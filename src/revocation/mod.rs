//! Revocation publication: CRLs now (OCSP follows), built from the certificate store and
//! signed through the CA's signer.

pub mod crl;
pub mod root_crl;
