//! The factory-rig side of attestca: an EST client, the personalisation sequence of a board
//! (simulated secure element, attested key, enrollment, checks), and the load tester that
//! measures a CA against a line's takt time.
//!
//! It depends on `attestca-core` for the encodings it shares with the CA and on
//! `attestca-sim` for the simulated devices, never on the server: a rig installs without a
//! database driver, an HSM library or an HTTP server.

pub mod client;
pub mod load;
pub mod personalisation;
#[cfg(target_os = "linux")]
pub mod tpm;
