#![no_main]
//! Fuzz target `attestation_statement`: see `attestca_fuzz::attestation_statement` (fuzz/src/lib.rs) for what it reaches.

use libfuzzer_sys::fuzz_target;

fuzz_target!(init: attestca_fuzz::init(), |data: &[u8]| attestca_fuzz::attestation_statement(data));
