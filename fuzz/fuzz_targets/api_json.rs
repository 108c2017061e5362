#![no_main]
//! Fuzz target `api_json`: see `attestca_fuzz::api_json` (fuzz/src/lib.rs) for what it reaches.

use libfuzzer_sys::fuzz_target;

fuzz_target!(init: attestca_fuzz::init(), |data: &[u8]| attestca_fuzz::api_json(data));
