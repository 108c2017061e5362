#![no_main]
//! Fuzz target `attestation_bundle`: see `attestca_fuzz::attestation_bundle` (fuzz/src/lib.rs) for what it reaches.

use libfuzzer_sys::fuzz_target;

fuzz_target!(init: attestca_fuzz::init(), |data: &[u8]| attestca_fuzz::attestation_bundle(data));
