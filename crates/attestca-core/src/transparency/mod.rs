//! Issuance transparency: every certificate the CA issues, with the attestation record behind
//! it, in an append-only Merkle log served as C2SP tlog-tiles with signed-note checkpoints.
//!
//! Why: the attestation gate stops a certificate for a key no secure element attested, but only
//! a log lets the brand owner, an auditor or a relying party *check* that afterwards, and find a
//! certificate issued outside the gate (a compromised CA host, a wrong profile, an insider).
//! `docs/transparency.md` specifies the entry encoding and the leaf hash byte for byte.
//!
//! - [`entry`]: the log entry (certificate + [`entry::AttestationRecord`]) and its leaf hash;
//! - [`tiles`]: tile paths, entry bundles, and integrating leaves into the stored tree edge;
//! - [`checkpoint`]: checkpoint bodies and their Ed25519 signed notes;
//! - [`key`]: the checkpoint key seam and its software backend;
//! - [`witness`]: asking witnesses to cosign checkpoints (C2SP tlog-witness);
//! - [`audit`]: re-deriving a served log from its entries (what `attestca log verify` runs).

pub mod audit;
pub mod checkpoint;
pub mod entry;
pub mod key;
pub mod tiles;
pub mod witness;
