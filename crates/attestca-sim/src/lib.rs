//! A simulated device for attestca: a software device key that builds CSRs, and a simulated
//! secure-element vendor whose devices attest their keys the way a real secure element does
//! (an X.509 attestation chain to a vendor root, in the CSR).
//!
//! `attestca serve --dev` trusts such a vendor, the factory-rig client enrolls its devices,
//! and the tests and benchmarks use it wherever they need attested keys without hardware. It is
//! never used to make a decision in the CA.

pub mod device;
pub mod secure_element;
