//! Wall-clock formatting without a calendar dependency (UTC only, which is all logs need).

/// (year, month, day) of a day count since 1970-01-01 (Howard Hinnant's civil_from_days).
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (if m <= 2 { y + 1 } else { y }, m, d)
}

/// Splits nanoseconds since the epoch into calendar fields:
/// (year, month, day, hour, minute, second, nanosecond).
pub fn fields(unix_nanos: u64) -> (i64, u32, u32, u32, u32, u32, u32) {
    let secs = (unix_nanos / 1_000_000_000) as i64;
    let nanos = (unix_nanos % 1_000_000_000) as u32;
    let (y, mo, d) = civil_from_days(secs.div_euclid(86_400));
    let sod = secs.rem_euclid(86_400) as u32;
    (y, mo, d, sod / 3600, sod / 60 % 60, sod % 60, nanos)
}

/// `2025-12-08 20:44:49.128844490 +0000 UTC`, the layout the Go collector's debug exporter uses.
pub fn format_go_utc(unix_nanos: u64) -> String {
    let (y, mo, d, h, mi, s, n) = fields(unix_nanos);
    format!("{y:04}-{mo:02}-{d:02} {h:02}:{mi:02}:{s:02}.{n:09} +0000 UTC")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn known_instants() {
        assert_eq!(format_go_utc(0), "1970-01-01 00:00:00.000000000 +0000 UTC");
        // 2025-12-08T20:44:49.128844490Z
        assert_eq!(
            format_go_utc(1_765_226_689_128_844_490),
            "2025-12-08 20:44:49.128844490 +0000 UTC"
        );
        assert_eq!(fields(951_782_400_000_000_000).1, 2); // 2000-02-29
        assert_eq!(fields(951_782_400_000_000_000).2, 29);
    }
}
