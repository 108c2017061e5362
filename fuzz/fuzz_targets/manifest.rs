#![no_main]
//! Fuzz target `manifest`: see `attestca_fuzz::manifest` (fuzz/src/lib.rs) for what it reaches.

use libfuzzer_sys::fuzz_target;

fuzz_target!(init: attestca_fuzz::init(), |data: &[u8]| attestca_fuzz::manifest(data));
