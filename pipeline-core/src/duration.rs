//! Durations written the way the reference collector (Go) reads them: `5s`, `1m30s`, `1.5s`,
//! `300ms`, `0`, or a bare integer meaning nanoseconds. humantime alone rejects fractions and
//! integers, both of which appear in existing collector configs.

use std::time::Duration;

use serde::de::{self, Deserializer, Visitor};

/// Parses a Go `time.ParseDuration` string. Negative durations are rejected: no Sonde option
/// gives them a meaning.
pub fn parse(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    if s == "0" {
        return Ok(Duration::ZERO);
    }
    if s.is_empty() {
        return Err("empty duration".into());
    }
    if s.starts_with('-') {
        return Err(format!("duration {s:?} is negative"));
    }
    let mut rest = s.strip_prefix('+').unwrap_or(s);
    let mut total_ns: f64 = 0.0;
    while !rest.is_empty() {
        let num_len = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .unwrap_or(rest.len());
        let (num, tail) = rest.split_at(num_len);
        if num.is_empty() || num == "." {
            return Err(format!("invalid duration {s:?}"));
        }
        let value: f64 = num.parse().map_err(|_| format!("invalid duration {s:?}"))?;
        let unit_len = tail
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(tail.len());
        let (unit, tail) = tail.split_at(unit_len);
        let scale = match unit {
            "ns" => 1.0,
            "us" | "µs" | "μs" => 1e3,
            "ms" => 1e6,
            "s" => 1e9,
            "m" => 60e9,
            "h" => 3600e9,
            "" => return Err(format!("missing unit in duration {s:?}")),
            u => return Err(format!("unknown unit {u:?} in duration {s:?}")),
        };
        total_ns += value * scale;
        rest = tail;
    }
    if total_ns > u64::MAX as f64 {
        return Err(format!("duration {s:?} is too large"));
    }
    Ok(Duration::from_nanos(total_ns.round() as u64))
}

/// For `#[serde(with = "pipeline_core::duration")]`.
pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
    struct V;
    impl Visitor<'_> for V {
        type Value = Duration;
        fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
            f.write_str("a duration such as \"5s\" or \"300ms\"")
        }
        fn visit_str<E: de::Error>(self, v: &str) -> Result<Duration, E> {
            parse(v).map_err(E::custom)
        }
        fn visit_u64<E: de::Error>(self, v: u64) -> Result<Duration, E> {
            Ok(Duration::from_nanos(v))
        }
        fn visit_i64<E: de::Error>(self, v: i64) -> Result<Duration, E> {
            u64::try_from(v)
                .map(Duration::from_nanos)
                .map_err(|_| E::custom(format!("duration {v} is negative")))
        }
    }
    d.deserialize_any(V)
}

/// A [`Duration`] field read with [`parse`], for configs that keep it optional.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct GoDuration(pub Duration);

impl GoDuration {
    pub fn parse(s: &str) -> Result<Duration, String> {
        parse(s)
    }
}

impl<'de> serde::Deserialize<'de> for GoDuration {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        deserialize(d).map(GoDuration)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn go_forms() {
        assert_eq!(parse("5s"), Ok(Duration::from_secs(5)));
        assert_eq!(parse("0"), Ok(Duration::ZERO));
        assert_eq!(parse("1m30s"), Ok(Duration::from_secs(90)));
        assert_eq!(parse("1.5s"), Ok(Duration::from_millis(1500)));
        assert_eq!(parse("300ms"), Ok(Duration::from_millis(300)));
        assert_eq!(parse("2h"), Ok(Duration::from_secs(7200)));
        assert_eq!(parse("10us"), Ok(Duration::from_micros(10)));
        assert!(parse("5").is_err());
        assert!(parse("5x").is_err());
        assert!(parse("-1s").is_err());
        assert!(parse("").is_err());
        assert!(parse("s").is_err());
    }

    #[test]
    fn yaml_integer_is_nanoseconds() {
        #[derive(serde::Deserialize)]
        struct T {
            #[serde(with = "super")]
            d: Duration,
        }
        let t: T = serde_yaml::from_str("d: 1000").unwrap();
        assert_eq!(t.d, Duration::from_micros(1));
        let t: T = serde_yaml::from_str("d: 2s").unwrap();
        assert_eq!(t.d, Duration::from_secs(2));
    }
}
