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

/// Unix seconds as RFC 3339 UTC (`2026-11-24T06:45:11Z`); times before 1970 print as the
/// epoch, times past 9999 as its last second.
pub fn rfc3339(unix: i64) -> String {
    match der::DateTime::from_unix_duration(Duration::from_secs(u64::try_from(unix).unwrap_or(0))) {
        Ok(t) => format!(
            "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}Z",
            t.year(),
            t.month(),
            t.day(),
            t.hour(),
            t.minutes(),
            t.seconds()
        ),
        Err(_) => "9999-12-31T23:59:59Z".into(),
    }
}

/// Parses an RFC 3339 time in UTC, to the second (`YYYY-MM-DDTHH:MM:SSZ`, `T` and `Z` in
/// either case), as Unix seconds; `None` for anything else.
pub fn parse_rfc3339(text: &str) -> Option<i64> {
    let b = text.as_bytes();
    if b.len() != 20
        || b[4] != b'-'
        || b[7] != b'-'
        || !matches!(b[10], b'T' | b't')
        || b[13] != b':'
        || b[16] != b':'
        || !matches!(b[19], b'Z' | b'z')
    {
        return None;
    }
    let field = |range: std::ops::Range<usize>| -> Option<u16> {
        text.get(range)
            .filter(|s| s.bytes().all(|c| c.is_ascii_digit()))
            .and_then(|s| s.parse().ok())
    };
    let small = |range| field(range).and_then(|v| u8::try_from(v).ok());
    let time = der::DateTime::new(
        field(0..4)?,
        small(5..7)?,
        small(8..10)?,
        small(11..13)?,
        small(14..16)?,
        small(17..19)?,
    )
    .ok()?;
    i64::try_from(time.unix_duration().as_secs()).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc3339_round_trips() {
        assert_eq!(rfc3339(0), "1970-01-01T00:00:00Z");
        assert_eq!(rfc3339(1_795_000_000), "2026-11-18T11:06:40Z");
        assert_eq!(parse_rfc3339("2026-11-18T11:06:40Z"), Some(1_795_000_000));
        assert_eq!(parse_rfc3339("2026-11-18t11:06:40z"), Some(1_795_000_000));
        for bad in [
            "",
            "2026-11-18 11:06:40Z",
            "2026-11-18T11:06:40+01:00",
            "2026-13-18T11:06:40Z",
            "2026-02-30T11:06:40Z",
            "2026-11-18T11:06:4xZ",
            "+026-11-18T11:06:40Z",
        ] {
            assert_eq!(parse_rfc3339(bad), None, "{bad}");
        }
    }
}
