//! Durations and timestamps as OTTL (i.e. Go) writes and reads them. Times are UTC
//! nanoseconds since the epoch; no time-zone database is involved.

const NS_PER_US: i64 = 1_000;
const NS_PER_MS: i64 = 1_000_000;
const NS_PER_S: i64 = 1_000_000_000;
const NS_PER_M: i64 = 60 * NS_PER_S;
const NS_PER_H: i64 = 60 * NS_PER_M;

/// Parses a Go duration (`1h30m`, `1.5s`, `-250ms`, `10µs`, `0`).
pub fn parse_duration(s: &str) -> Result<i64, String> {
    let err = || format!("invalid duration {s:?}");
    let (neg, mut rest) = match s.as_bytes().first() {
        Some(b'-') => (true, &s[1..]),
        Some(b'+') => (false, &s[1..]),
        _ => (false, s),
    };
    if rest == "0" {
        return Ok(0);
    }
    if rest.is_empty() {
        return Err(err());
    }
    let mut total: i128 = 0;
    while !rest.is_empty() {
        let int_len = rest.bytes().take_while(u8::is_ascii_digit).count();
        let (int_part, after) = rest.split_at(int_len);
        let (frac_part, after) = match after.strip_prefix('.') {
            Some(a) => {
                let n = a.bytes().take_while(u8::is_ascii_digit).count();
                a.split_at(n)
            }
            None => ("", after),
        };
        if int_part.is_empty() && frac_part.is_empty() {
            return Err(err());
        }
        let unit_len = after
            .char_indices()
            .find(|(_, c)| c.is_ascii_digit() || *c == '.')
            .map_or(after.len(), |(i, _)| i);
        let (unit, after) = after.split_at(unit_len);
        let scale: i64 = match unit {
            "ns" => 1,
            "us" | "µs" | "μs" => NS_PER_US,
            "ms" => NS_PER_MS,
            "s" => NS_PER_S,
            "m" => NS_PER_M,
            "h" => NS_PER_H,
            "" => return Err(format!("missing unit in duration {s:?}")),
            u => return Err(format!("unknown unit {u:?} in duration {s:?}")),
        };
        let whole: i128 = if int_part.is_empty() {
            0
        } else {
            int_part.parse::<i128>().map_err(|_| err())?
        };
        total += whole * scale as i128;
        if !frac_part.is_empty() {
            let digits = &frac_part[..frac_part.len().min(18)];
            let frac: i128 = digits.parse::<i128>().map_err(|_| err())?;
            total += frac * scale as i128 / 10i128.pow(digits.len() as u32);
        }
        if total > i64::MAX as i128 {
            return Err(err());
        }
        rest = after;
    }
    let total = total as i64;
    Ok(if neg { -total } else { total })
}

/// Go's `Duration.String()`: `1h2m3.5s`, `1.5ms`, `0s`.
pub fn format_duration(d: i64) -> String {
    if d == 0 {
        return "0s".to_string();
    }
    let neg = d < 0;
    let u = d.unsigned_abs();
    let mut out = String::new();
    if neg {
        out.push('-');
    }
    let frac = |v: u64, div: u64| -> String {
        let whole = v / div;
        let rem = v % div;
        if rem == 0 {
            whole.to_string()
        } else {
            let width = div.ilog10() as usize;
            let digits = format!("{rem:0width$}");
            format!("{whole}.{}", digits.trim_end_matches('0'))
        }
    };
    if u < NS_PER_S as u64 {
        let (div, unit) = if u < NS_PER_US as u64 {
            (1, "ns")
        } else if u < NS_PER_MS as u64 {
            (NS_PER_US as u64, "µs")
        } else {
            (NS_PER_MS as u64, "ms")
        };
        out.push_str(&frac(u, div));
        out.push_str(unit);
        return out;
    }
    let h = u / NS_PER_H as u64;
    let m = (u % NS_PER_H as u64) / NS_PER_M as u64;
    let s = u % NS_PER_M as u64;
    if h > 0 {
        out.push_str(&format!("{h}h"));
    }
    if h > 0 || m > 0 {
        out.push_str(&format!("{m}m"));
    }
    out.push_str(&frac(s, NS_PER_S as u64));
    out.push('s');
    out
}

/// Days since 1970-01-01 -> (year, month 1-12, day 1-31). Proleptic Gregorian.
pub fn civil_from_days(z: i64) -> (i64, u32, u32) {
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

/// (year, month, day) -> days since 1970-01-01.
pub fn days_from_civil(y: i64, m: u32, d: u32) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y.rem_euclid(400);
    let m = m as i64;
    let doy = (153 * (if m > 2 { m - 3 } else { m + 9 }) + 2) / 5 + d as i64 - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// Broken-down UTC time.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Civil {
    pub year: i64,
    pub month: u32,
    pub day: u32,
    pub hour: u32,
    pub minute: u32,
    pub second: u32,
    pub nanos: u32,
    /// 0 = Sunday.
    pub weekday: u32,
}

pub fn to_civil(t: i64) -> Civil {
    let days = t.div_euclid(NS_PER_S * 86_400);
    let rem = t.rem_euclid(NS_PER_S * 86_400);
    let (year, month, day) = civil_from_days(days);
    let secs = rem / NS_PER_S;
    Civil {
        year,
        month,
        day,
        hour: (secs / 3600) as u32,
        minute: ((secs % 3600) / 60) as u32,
        second: (secs % 60) as u32,
        nanos: (rem % NS_PER_S) as u32,
        weekday: (days + 4).rem_euclid(7) as u32,
    }
}

/// RFC 3339 with nanoseconds, trailing zeros trimmed (Go's `time.RFC3339Nano`), UTC.
pub fn format_rfc3339(t: i64) -> String {
    let c = to_civil(t);
    let mut s = format!(
        "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}",
        c.year, c.month, c.day, c.hour, c.minute, c.second
    );
    if c.nanos > 0 {
        let f = format!("{:09}", c.nanos);
        s.push('.');
        s.push_str(f.trim_end_matches('0'));
    }
    s.push('Z');
    s
}

const MONTHS: [&str; 12] = [
    "January",
    "February",
    "March",
    "April",
    "May",
    "June",
    "July",
    "August",
    "September",
    "October",
    "November",
    "December",
];
const DAYS: [&str; 7] = [
    "Sunday",
    "Monday",
    "Tuesday",
    "Wednesday",
    "Thursday",
    "Friday",
    "Saturday",
];

/// Checks a `Time()` format at load so a typo is a config error, not a per-item one.
pub fn check_format(format: &str) -> Result<(), String> {
    let mut chars = format.chars();
    while let Some(c) = chars.next() {
        if c == '%' {
            match chars.next() {
                Some(
                    'Y' | 'y' | 'm' | 'd' | 'e' | 'H' | 'I' | 'p' | 'M' | 'S' | 'L' | 'f' | 's'
                    | 'z' | 'Z' | 'b' | 'h' | 'B' | 'a' | 'A' | 'j' | 'F' | 'T' | 'n' | 't' | '%',
                ) => {}
                Some(o) => return Err(format!("unsupported directive %{o} in time format")),
                None => return Err("time format ends with %".to_string()),
            }
        }
    }
    Ok(())
}

struct Scan<'a> {
    s: &'a str,
}

impl<'a> Scan<'a> {
    fn num(&mut self, max_digits: usize) -> Result<i64, String> {
        let n = self
            .s
            .bytes()
            .take(max_digits)
            .take_while(u8::is_ascii_digit)
            .count();
        if n == 0 {
            return Err(format!("expected a number at {:?}", self.s));
        }
        let (d, rest) = self.s.split_at(n);
        self.s = rest;
        d.parse().map_err(|_| format!("bad number {d:?}"))
    }

    fn lit(&mut self, c: char) -> Result<(), String> {
        match self.s.strip_prefix(c) {
            Some(r) => {
                self.s = r;
                Ok(())
            }
            None => Err(format!("expected {c:?} at {:?}", self.s)),
        }
    }

    /// Index of the name in `names` matched (full or three-letter abbreviation), case-insensitive.
    fn name(&mut self, names: &[&str]) -> Result<usize, String> {
        for (i, n) in names.iter().enumerate() {
            for cand in [*n, &n[..3]] {
                if self.s.len() >= cand.len()
                    && self.s.is_char_boundary(cand.len())
                    && self.s[..cand.len()].eq_ignore_ascii_case(cand)
                {
                    self.s = &self.s[cand.len()..];
                    return Ok(i);
                }
            }
        }
        Err(format!("expected a month or day name at {:?}", self.s))
    }
}

/// Parses `s` with a strptime-style `format` (the directives `Time()` documents), as UTC unless
/// the text carries an offset.
pub fn parse_time(s: &str, format: &str) -> Result<i64, String> {
    let mut sc = Scan { s };
    let (mut year, mut month, mut day) = (1970i64, 1u32, 1u32);
    let (mut hour, mut minute, mut second, mut nanos) = (0u32, 0u32, 0u32, 0i64);
    let mut pm: Option<bool> = None;
    let mut offset_s: i64 = 0;
    let mut yday: Option<i64> = None;
    let mut epoch: Option<i64> = None;
    let mut fmt = format.chars();
    while let Some(c) = fmt.next() {
        if c != '%' {
            if c.is_whitespace() {
                sc.s = sc.s.trim_start();
                continue;
            }
            sc.lit(c)?;
            continue;
        }
        match fmt.next() {
            Some('Y') => year = sc.num(4)?,
            Some('y') => {
                let y = sc.num(2)?;
                year = if y >= 69 { 1900 + y } else { 2000 + y };
            }
            Some('m') => month = sc.num(2)? as u32,
            Some('d') => day = sc.num(2)? as u32,
            Some('e') => {
                sc.s = sc.s.trim_start();
                day = sc.num(2)? as u32;
            }
            Some('H') => hour = sc.num(2)? as u32,
            Some('I') => hour = sc.num(2)? as u32,
            Some('p') => {
                let up = sc.s.get(..2).map(|p| p.to_ascii_uppercase());
                pm = match up.as_deref() {
                    Some("AM") => Some(false),
                    Some("PM") => Some(true),
                    _ => return Err(format!("expected AM or PM at {:?}", sc.s)),
                };
                sc.s = &sc.s[2..];
            }
            Some('M') => minute = sc.num(2)? as u32,
            Some('S') => second = sc.num(2)? as u32,
            Some('L') => nanos = sc.num(3)? * NS_PER_MS,
            Some('f') => {
                let before = sc.s.len();
                let v = sc.num(9)?;
                let n = (before - sc.s.len()) as u32;
                nanos = v * 10i64.pow(9 - n);
            }
            Some('s') => epoch = Some(sc.num(19)?),
            Some('j') => yday = Some(sc.num(3)?),
            Some('z') => {
                if let Some(r) = sc.s.strip_prefix('Z') {
                    sc.s = r;
                } else {
                    let sign = match sc.s.as_bytes().first() {
                        Some(b'+') => 1,
                        Some(b'-') => -1,
                        _ => return Err(format!("expected an offset at {:?}", sc.s)),
                    };
                    sc.s = &sc.s[1..];
                    let hh = sc.num(2)?;
                    if sc.s.starts_with(':') {
                        sc.s = &sc.s[1..];
                    }
                    let mm = sc.num(2)?;
                    offset_s = sign * (hh * 3600 + mm * 60);
                }
            }
            Some('Z') => {
                let n = sc.s.bytes().take_while(|b| b.is_ascii_alphabetic()).count();
                let zone = &sc.s[..n];
                if !matches!(zone, "UTC" | "GMT" | "Z") {
                    return Err(format!("time zone {zone:?} is not supported (only UTC)"));
                }
                sc.s = &sc.s[n..];
            }
            Some('b' | 'h') => month = sc.name(&MONTHS)? as u32 + 1,
            Some('B') => month = sc.name(&MONTHS)? as u32 + 1,
            Some('a' | 'A') => {
                sc.name(&DAYS)?;
            }
            Some('F') => {
                year = sc.num(4)?;
                sc.lit('-')?;
                month = sc.num(2)? as u32;
                sc.lit('-')?;
                day = sc.num(2)? as u32;
            }
            Some('T') => {
                hour = sc.num(2)? as u32;
                sc.lit(':')?;
                minute = sc.num(2)? as u32;
                sc.lit(':')?;
                second = sc.num(2)? as u32;
            }
            Some('n' | 't') => sc.s = sc.s.trim_start(),
            Some('%') => sc.lit('%')?,
            Some(o) => return Err(format!("unsupported directive %{o}")),
            None => return Err("time format ends with %".to_string()),
        }
    }
    if !sc.s.is_empty() {
        return Err(format!("extra text {:?} after time", sc.s));
    }
    if let Some(e) = epoch {
        return e
            .checked_mul(NS_PER_S)
            .ok_or_else(|| "timestamp out of range".to_string());
    }
    match pm {
        Some(true) if hour < 12 => hour += 12,
        Some(false) if hour == 12 => hour = 0,
        _ => {}
    }
    if !(1..=12).contains(&month)
        || !(1..=31).contains(&day)
        || hour > 23
        || minute > 59
        || second > 60
    {
        return Err(format!("time {s:?} is out of range"));
    }
    let days = match yday {
        Some(j) => days_from_civil(year, 1, 1) + j - 1,
        None => days_from_civil(year, month, day),
    };
    let secs = days * 86_400 + hour as i64 * 3600 + minute as i64 * 60 + second as i64 - offset_s;
    secs.checked_mul(NS_PER_S)
        .and_then(|n| n.checked_add(nanos))
        .ok_or_else(|| "timestamp out of range".to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_round_trip() {
        assert_eq!(parse_duration("1.5s").unwrap(), 1_500_000_000);
        assert_eq!(parse_duration("500ms").unwrap(), 500_000_000);
        assert_eq!(parse_duration("1h30m").unwrap(), 90 * NS_PER_M);
        assert_eq!(parse_duration("-2us").unwrap(), -2_000);
        assert_eq!(parse_duration("3µs").unwrap(), 3_000);
        assert_eq!(parse_duration("7ns").unwrap(), 7);
        assert_eq!(parse_duration("0").unwrap(), 0);
        assert_eq!(parse_duration(".5m").unwrap(), 30 * NS_PER_S);
        for bad in ["", "5", "1d", "s", "1.s.", "--1s"] {
            assert!(parse_duration(bad).is_err(), "{bad}");
        }
        assert_eq!(format_duration(1_500_000_000), "1.5s");
        assert_eq!(format_duration(90 * NS_PER_M + 1), "1h30m0.000000001s");
        assert_eq!(format_duration(1_500), "1.5µs");
        assert_eq!(format_duration(-2 * NS_PER_MS), "-2ms");
        assert_eq!(format_duration(0), "0s");
    }

    #[test]
    fn civil_dates() {
        assert_eq!(civil_from_days(0), (1970, 1, 1));
        assert_eq!(days_from_civil(2024, 2, 29), 19_782);
        assert_eq!(civil_from_days(19_782), (2024, 2, 29));
        assert_eq!(civil_from_days(-1), (1969, 12, 31));
        assert_eq!(to_civil(0).weekday, 4);
        assert_eq!(
            format_rfc3339(1_700_000_000_123_000_000),
            "2023-11-14T22:13:20.123Z"
        );
    }

    #[test]
    fn strptime_subset() {
        assert_eq!(
            parse_time("2023-11-14 22:13:20", "%Y-%m-%d %H:%M:%S").unwrap(),
            1_700_000_000 * NS_PER_S
        );
        assert_eq!(
            parse_time("14/Nov/2023:11:13:20 PM +0100", "%d/%b/%Y:%I:%M:%S %p %z").unwrap(),
            1_700_000_000 * NS_PER_S
        );
        assert_eq!(
            parse_time("2023-11-14T22:13:20.5Z", "%Y-%m-%dT%H:%M:%S.%f%z").unwrap(),
            1_700_000_000 * NS_PER_S + 500_000_000
        );
        assert!(parse_time("2023-13-01", "%Y-%m-%d").is_err());
        assert!(parse_time("2023-01-01x", "%Y-%m-%d").is_err());
        assert!(check_format("%Y %Q").is_err());
    }
}
