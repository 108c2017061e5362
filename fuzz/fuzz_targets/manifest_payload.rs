#![no_main]
//! Fuzz target `manifest_payload`: see `attestca_fuzz::manifest_payload` (fuzz/src/lib.rs) for what it reaches.

use libfuzzer_sys::fuzz_target;

fuzz_target!(init: attestca_fuzz::init(), |data: &[u8]| attestca_fuzz::manifest_payload(data));
