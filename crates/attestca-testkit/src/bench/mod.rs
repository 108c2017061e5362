//! Fixtures the benchmarks share: a fleet's CRL entries, an OCSP cache of a given size, a
//! throwaway SoftHSM token.

pub mod crl;
pub mod ocsp;
pub mod softhsm;
