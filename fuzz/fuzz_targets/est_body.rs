#![no_main]
//! Fuzz target `est_body`: see `attestca_fuzz::est_body` (fuzz/src/lib.rs) for what it reaches.

use libfuzzer_sys::fuzz_target;

fuzz_target!(init: attestca_fuzz::init(), |data: &[u8]| attestca_fuzz::est_body(data));
