//! attestca: an issuing certificate authority for hardware-backed device identity.
//!
//! The crate is layered along the path a request takes (see `docs/architecture.md`):
//!
//! 1. [`est`], [`api`] and [`server`]: the wire — HTTP, TLS, EST encodings, the operator
//!    API's JSON. Never builds certificates.
//! 2. [`access`], [`enrollment`] and [`registry`]: who may enroll or operate, the
//!    registration-authority decision (profile, CSR checks, retries), and operators' audited
//!    look-ups and revocations. Never touches HTTP types.
//! 3. [`issuance`]: turns an approved request into a signed certificate under a profile.
//! 4. [`signer`]: the CA key, in a PKCS#11 token or (for development) a software key file.
//! 5. [`store`]: certificates and enrollment events in PostgreSQL or SQLite.
//!
//! [`revocation`] (CRLs) and [`ocsp`] (the OCSP responder) publish certificate status from the
//! store, signed through the signer.
//!
//! [`config`], [`setup`] and [`rig`] sit beside the layers: configuration, CA set-up, and the
//! factory-rig client; [`activity`] is the enrollment admission limit, which background work
//! reads to yield to enrollments.

pub use attestca_core::{asn1, attestation, issuance, pem, reason, verify};

pub mod access;
pub mod activity;
pub mod api;
pub mod app;
pub mod config;
pub mod enrollment;
pub mod est;
pub mod evidence;
pub mod http;
pub mod metrics;
pub mod ocsp;
pub mod registry;
pub mod revocation;
pub mod server;
pub mod setup;
pub mod signer;
pub mod store;
pub mod transparency;
