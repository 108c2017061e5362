#![no_main]
//! Fuzz target `csr`: see `attestca_fuzz::csr` (fuzz/src/lib.rs) for what it reaches.

use libfuzzer_sys::fuzz_target;

fuzz_target!(init: attestca_fuzz::init(), |data: &[u8]| attestca_fuzz::csr(data));
