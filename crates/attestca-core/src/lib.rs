//! attestca's core: the formats and pure rules of an issuing CA for hardware-backed device
//! identity, with no HTTP, no database and no network.
//!
//! Everything here is a function of its inputs (plus the clock and, for signing, the
//! [`signer::Signer`] seam), so the server, the factory-rig client and the tests share one
//! implementation of each format:
//!
//! - [`asn1`], [`verify`], [`pem`]: X.509 envelopes, signature checks, PEM files;
//! - [`csr`]: the CSR rules a profile imposes (the registration authority's static checks);
//! - [`policy`]: the rest of the registration authority's policy (rigs, attestation, renewal,
//!   csrattrs) as pure functions of the facts the server looks up;
//! - [`attestation`]: the evidence verifiers (X.509 chains, TPM2_Certify, manifests) and the
//!   gate that picks one;
//! - [`issuance`]: profiles (policy and certificate halves) and building/signing certificates;
//! - [`nonce`]: stateless freshness nonces (minted and checked without the database);
//! - [`crl`], [`ocsp`], [`est_codec`]: the revocation and EST encodings;
//! - [`signer`]: the key seam every signature goes through, and the software key;
//! - [`transparency`]: the issuance log's entries, tiles and checkpoints;
//! - [`config`]: the configuration fragments the core interprets;
//! - [`reason`]: every documented reason code, as one enum;
//! - [`revocation`], [`record`], [`serial`], [`time`]: shared vocabulary (revocation reasons,
//!   certificate statuses and event outcomes, serial numbers, the clock).

pub mod asn1;
pub mod attestation;
pub mod config;
pub mod crl;
pub mod csr;
pub mod est_codec;
pub mod issuance;
pub mod nonce;
pub mod ocsp;
pub mod pem;
pub mod policy;
pub mod reason;
pub mod record;
pub mod relying_party;
pub mod revocation;
pub mod serial;
pub mod signer;
pub mod time;
pub mod transparency;
pub mod verify;
