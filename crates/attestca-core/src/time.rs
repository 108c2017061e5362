//! Unix time in whole seconds, as certificates, the store and the OCSP responses count it.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// Seconds since the Unix epoch (0 for times before it).
pub fn unix_seconds(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH)
        .unwrap_or(Duration::ZERO)
        .as_secs()
}

/// The current Unix time, signed as the store keeps it.
pub fn unix_now() -> i64 {
    i64::try_from(unix_seconds(SystemTime::now())).unwrap_or(i64::MAX)
}
