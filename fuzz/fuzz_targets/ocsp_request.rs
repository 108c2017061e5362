#![no_main]
//! Fuzz target `ocsp_request`: see `attestca_fuzz::ocsp_request` (fuzz/src/lib.rs) for what it reaches.

use libfuzzer_sys::fuzz_target;

fuzz_target!(init: attestca_fuzz::init(), |data: &[u8]| attestca_fuzz::ocsp_request(data));
