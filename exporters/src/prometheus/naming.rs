//! OTLP metric and attribute names -> Prometheus metric and label names, following the
//! reference collector (its `otlptranslator` package): invalid characters become `_`, the unit
//! becomes a word suffix, monotonic sums get `_total`, gauges with unit `1` get `_ratio`.
//!
//! With a UTF-8 translation strategy names are kept as they are; whether they are then quoted
//! or escaped to underscores is decided per scrape (see `render`).

use serde::Deserialize;

/// The reference collector's `translation_strategy` values.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
pub enum TranslationStrategy {
    UnderscoreEscapingWithSuffixes,
    UnderscoreEscapingWithoutSuffixes,
    #[serde(rename = "NoUTF8EscapingWithSuffixes")]
    NoUtf8EscapingWithSuffixes,
    NoTranslation,
}

impl TranslationStrategy {
    pub fn adds_suffixes(self) -> bool {
        matches!(
            self,
            TranslationStrategy::UnderscoreEscapingWithSuffixes
                | TranslationStrategy::NoUtf8EscapingWithSuffixes
        )
    }

    pub fn allows_utf8(self) -> bool {
        matches!(
            self,
            TranslationStrategy::NoUtf8EscapingWithSuffixes | TranslationStrategy::NoTranslation
        )
    }
}

/// What the OTLP metric is, as far as naming cares (a non-monotonic sum is exported as a gauge
/// but does not get `_ratio`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OtlpKind {
    Gauge,
    MonotonicSum,
    NonMonotonicSum,
    Histogram,
    ExponentialHistogram,
    Summary,
}

/// Builds metric and label names for one exporter configuration.
#[derive(Debug, Clone)]
pub struct Namer {
    /// Already cleaned (or raw, in UTF-8 mode).
    namespace: String,
    suffixes: bool,
    utf8: bool,
}

fn is_metric_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || c == ':'
}

/// `[a-zA-Z_:][a-zA-Z0-9_:]*`
pub fn is_legacy_metric_name(s: &str) -> bool {
    let mut chars = s.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_alphabetic() || c == '_' || c == ':')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':')
}

/// `[a-zA-Z_][a-zA-Z0-9_]*`
pub fn is_legacy_label_name(s: &str) -> bool {
    let mut chars = s.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

/// Prometheus' underscore escaping of a UTF-8 metric name for a scraper that does not accept
/// UTF-8 names: each invalid character becomes `_`, a leading digit gets a `_` in front.
pub fn escape_metric_name(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 1);
    if s.starts_with(|c: char| c.is_ascii_digit()) {
        out.push('_');
    }
    out.extend(s.chars().map(|c| {
        if c.is_ascii_alphanumeric() || c == '_' || c == ':' {
            c
        } else {
            '_'
        }
    }));
    out
}

pub fn escape_label_name(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 1);
    if s.starts_with(|c: char| c.is_ascii_digit()) {
        out.push('_');
    }
    out.extend(s.chars().map(|c| {
        if c.is_ascii_alphanumeric() || c == '_' {
            c
        } else {
            '_'
        }
    }));
    out
}

/// Splits on anything that is not `[a-zA-Z0-9:]`, so runs of separators (underscores included)
/// collapse, as the OTel-to-Prometheus specification asks.
fn tokens(s: &str) -> Vec<&str> {
    s.split(|c: char| !is_metric_char(c))
        .filter(|t| !t.is_empty())
        .collect()
}

fn unit_word(unit: &str) -> &str {
    match unit {
        "d" => "days",
        "h" => "hours",
        "min" => "minutes",
        "s" => "seconds",
        "ms" => "milliseconds",
        "us" => "microseconds",
        "ns" => "nanoseconds",
        "By" => "bytes",
        "KiBy" => "kibibytes",
        "MiBy" => "mebibytes",
        "GiBy" => "gibibytes",
        "TiBy" => "tibibytes",
        "KBy" => "kilobytes",
        "MBy" => "megabytes",
        "GBy" => "gigabytes",
        "TBy" => "terabytes",
        "m" => "meters",
        "V" => "volts",
        "A" => "amperes",
        "J" => "joules",
        "W" => "watts",
        "g" => "grams",
        "Cel" => "celsius",
        "Hz" => "hertz",
        "1" => "",
        "%" => "percent",
        other => other,
    }
}

fn per_unit_word(unit: &str) -> &str {
    match unit {
        "s" => "second",
        "m" => "minute",
        "h" => "hour",
        "d" => "day",
        "w" => "week",
        "mo" => "month",
        "y" => "year",
        other => other,
    }
}

/// The main and `per_` unit words, before character clean-up. Annotations (`{request}`) give
/// nothing.
fn unit_suffixes(unit: &str) -> (String, String) {
    let (main, per) = match unit.split_once('/') {
        Some((m, p)) => (m, Some(p)),
        None => (unit, None),
    };
    let main = main.trim();
    let main_word = if !main.is_empty() && !main.contains(['{', '}']) {
        unit_word(main).to_string()
    } else {
        String::new()
    };
    let per_word = match per.map(str::trim) {
        Some(p) if !p.is_empty() && !p.contains(['{', '}']) => {
            let w = per_unit_word(p);
            if w.is_empty() {
                String::new()
            } else {
                format!("per_{w}")
            }
        }
        _ => String::new(),
    };
    (main_word, per_word)
}

/// Invalid characters to `_`, runs of `_` collapsed, no leading `_`.
fn clean_unit(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        let c = if is_metric_char(c) { c } else { '_' };
        if c == '_' && (out.is_empty() || out.ends_with('_')) {
            continue;
        }
        out.push(c);
    }
    out
}

fn trim_suffix_and_delimiter(name: &mut String, suffix: &str) {
    if name.ends_with(suffix) && name.len() > suffix.len() + 1 {
        name.truncate(name.len() - suffix.len() - 1);
    }
}

impl Namer {
    pub fn new(namespace: &str, suffixes: bool, utf8: bool) -> Namer {
        let namespace = if utf8 {
            namespace.to_string()
        } else {
            tokens_with_underscores(namespace).join("_")
        };
        Namer {
            namespace,
            suffixes,
            utf8,
        }
    }

    pub fn utf8(&self) -> bool {
        self.utf8
    }

    /// `<namespace>_target_info`.
    pub fn target_info(&self) -> String {
        if self.namespace.is_empty() {
            "target_info".to_string()
        } else {
            format!("{}_target_info", self.namespace)
        }
    }

    /// The Prometheus family name, or `None` when nothing usable is left of the name.
    pub fn metric_name(&self, name: &str, unit: &str, kind: OtlpKind) -> Option<String> {
        let out = if self.utf8 {
            self.utf8_metric_name(name, unit, kind)
        } else if self.suffixes {
            self.normalized_metric_name(name, unit, kind)
        } else {
            self.plain_metric_name(name)
        };
        if out.is_empty() || out.chars().all(|c| c == '_') {
            None
        } else {
            Some(out)
        }
    }

    fn normalized_metric_name(&self, name: &str, unit: &str, kind: OtlpKind) -> String {
        let mut toks: Vec<String> = tokens(name).into_iter().map(str::to_string).collect();
        let (main, per) = unit_suffixes(unit);
        let mut main = clean_unit(&main);
        let mut per = clean_unit(&per);
        if toks.contains(&main) {
            main.clear();
        }
        if per == "per_" {
            per.clear();
        } else {
            if per.ends_with('_') {
                per.pop();
            }
            if toks.contains(&per) {
                per.clear();
            }
        }
        if !per.is_empty() && main.ends_with('_') {
            main.pop();
        }
        if !main.is_empty() {
            toks.push(main);
        }
        if !per.is_empty() {
            toks.push(per);
        }
        if kind == OtlpKind::MonotonicSum {
            toks.retain(|t| t != "total");
            toks.push("total".into());
        }
        if unit == "1" && kind == OtlpKind::Gauge {
            toks.retain(|t| t != "ratio");
            toks.push("ratio".into());
        }
        if !self.namespace.is_empty() {
            toks.insert(0, self.namespace.clone());
        }
        let joined = toks.join("_");
        if joined.starts_with(|c: char| c.is_ascii_digit()) {
            format!("_{joined}")
        } else {
            joined
        }
    }

    fn plain_metric_name(&self, name: &str) -> String {
        let base = tokens_with_underscores(name).join("_");
        if !self.namespace.is_empty() {
            format!("{}_{base}", self.namespace)
        } else if base.starts_with(|c: char| c.is_ascii_digit()) {
            format!("_{base}")
        } else {
            base
        }
    }

    fn utf8_metric_name(&self, name: &str, unit: &str, kind: OtlpKind) -> String {
        let mut out = if self.namespace.is_empty() {
            name.to_string()
        } else {
            format!("{}_{name}", self.namespace)
        };
        if !self.suffixes {
            return out;
        }
        // Suffixes are stripped and re-added innermost-first: unit, per-unit, _total, _ratio.
        let ratio = unit == "1" && kind == OtlpKind::Gauge;
        if ratio {
            trim_suffix_and_delimiter(&mut out, "ratio");
        }
        let total = kind == OtlpKind::MonotonicSum;
        if total {
            trim_suffix_and_delimiter(&mut out, "total");
        }
        let (main, per) = unit_suffixes(unit);
        if !per.is_empty() {
            trim_suffix_and_delimiter(&mut out, &per);
        }
        if !main.is_empty() && !out.ends_with(&main) {
            out.push('_');
            out.push_str(&main);
        }
        if !per.is_empty() {
            out.push('_');
            out.push_str(&per);
        }
        if total {
            out.push_str("_total");
        }
        if ratio {
            out.push_str("_ratio");
        }
        out
    }

    /// The label name for an attribute key, or `None` if nothing usable is left.
    pub fn label_name(&self, key: &str) -> Option<String> {
        if key.is_empty() {
            return None;
        }
        if self.utf8 {
            return Some(key.to_string());
        }
        let mut out: String = key
            .chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() || c == '_' {
                    c
                } else {
                    '_'
                }
            })
            .collect();
        if out.starts_with(|c: char| c.is_ascii_digit()) {
            out.insert_str(0, "key_");
        } else if out.starts_with('_') && !out.starts_with("__") {
            out.insert_str(0, "key");
        }
        if out.chars().all(|c| c == '_') {
            None
        } else {
            Some(out)
        }
    }
}

/// Splits on anything not `[a-zA-Z0-9_:]`; underscores are kept inside tokens.
fn tokens_with_underscores(s: &str) -> Vec<&str> {
    s.split(|c: char| !(is_metric_char(c) || c == '_'))
        .filter(|t| !t.is_empty())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn n(ns: &str) -> Namer {
        Namer::new(ns, true, false)
    }

    #[test]
    fn suffixes_follow_the_reference() {
        let cases: &[(&str, &str, OtlpKind, &str)] = &[
            (
                "http.server.request.duration",
                "s",
                OtlpKind::Histogram,
                "http_server_request_duration_seconds",
            ),
            (
                "http.server.request.body.size",
                "By",
                OtlpKind::Histogram,
                "http_server_request_body_size_bytes",
            ),
            (
                "process.cpu.time",
                "s",
                OtlpKind::MonotonicSum,
                "process_cpu_time_seconds_total",
            ),
            (
                "requests",
                "{request}",
                OtlpKind::MonotonicSum,
                "requests_total",
            ),
            (
                "requests.total",
                "1",
                OtlpKind::MonotonicSum,
                "requests_total",
            ),
            (
                "cpu.utilization",
                "1",
                OtlpKind::Gauge,
                "cpu_utilization_ratio",
            ),
            (
                "cpu.utilization",
                "1",
                OtlpKind::NonMonotonicSum,
                "cpu_utilization",
            ),
            ("net.io", "By/s", OtlpKind::Gauge, "net_io_bytes_per_second"),
            ("events", "1/s", OtlpKind::Gauge, "events_per_second"),
            (
                "queue.latency",
                "ms",
                OtlpKind::Gauge,
                "queue_latency_milliseconds",
            ),
            (
                "memory.limit",
                "MiBy",
                OtlpKind::Gauge,
                "memory_limit_mebibytes",
            ),
            ("temp", "Cel", OtlpKind::Gauge, "temp_celsius"),
            ("disk.usage", "%", OtlpKind::Gauge, "disk_usage_percent"),
            ("odd", "{packets}/s", OtlpKind::Gauge, "odd_per_second"),
            ("weird", "bit", OtlpKind::Gauge, "weird_bit"),
            ("duration.seconds", "s", OtlpKind::Gauge, "duration_seconds"),
            ("foo__bar--baz", "", OtlpKind::Gauge, "foo_bar_baz"),
            ("2xx.count", "", OtlpKind::Gauge, "_2xx_count"),
            ("rpc:server", "", OtlpKind::Gauge, "rpc:server"),
        ];
        for (name, unit, kind, want) in cases {
            assert_eq!(
                n("").metric_name(name, unit, *kind).as_deref(),
                Some(*want),
                "{name} [{unit}]"
            );
        }
        assert_eq!(
            n("default")
                .metric_name("http.server.request.duration", "s", OtlpKind::Histogram)
                .as_deref(),
            Some("default_http_server_request_duration_seconds")
        );
        assert_eq!(n("").metric_name("...", "", OtlpKind::Gauge), None);
    }

    #[test]
    fn without_suffixes_only_characters_change() {
        let nm = Namer::new("", false, false);
        assert_eq!(
            nm.metric_name("http.server.request.duration", "s", OtlpKind::Histogram)
                .as_deref(),
            Some("http_server_request_duration")
        );
        assert_eq!(
            nm.metric_name("calls", "1", OtlpKind::MonotonicSum)
                .as_deref(),
            Some("calls")
        );
        assert_eq!(
            nm.metric_name("a__b", "", OtlpKind::Gauge).as_deref(),
            Some("a__b")
        );
        assert_eq!(
            nm.metric_name("9lives", "", OtlpKind::Gauge).as_deref(),
            Some("_9lives")
        );
        let nm = Namer::new("my-ns", false, false);
        assert_eq!(
            nm.metric_name("x.y", "", OtlpKind::Gauge).as_deref(),
            Some("my_ns_x_y")
        );
        assert_eq!(nm.target_info(), "my_ns_target_info");
    }

    #[test]
    fn utf8_names_keep_their_characters() {
        let nm = Namer::new("", true, true);
        assert_eq!(
            nm.metric_name("http.server.request.duration", "s", OtlpKind::Histogram)
                .as_deref(),
            Some("http.server.request.duration_seconds")
        );
        assert_eq!(
            nm.metric_name("requests.total", "", OtlpKind::MonotonicSum)
                .as_deref(),
            Some("requests_total")
        );
        assert_eq!(
            nm.metric_name("net.io", "By/s", OtlpKind::Gauge).as_deref(),
            Some("net.io_bytes_per_second")
        );
        assert_eq!(nm.label_name("http.method").as_deref(), Some("http.method"));
        let nm = Namer::new("", false, true);
        assert_eq!(
            nm.metric_name("a.b", "s", OtlpKind::MonotonicSum)
                .as_deref(),
            Some("a.b")
        );
    }

    #[test]
    fn label_names_are_sanitised() {
        let nm = n("");
        assert_eq!(
            nm.label_name("service.instance.id").as_deref(),
            Some("service_instance_id")
        );
        assert_eq!(nm.label_name("0day").as_deref(), Some("key_0day"));
        assert_eq!(nm.label_name("_private").as_deref(), Some("key_private"));
        assert_eq!(
            nm.label_name("__reserved__").as_deref(),
            Some("__reserved__")
        );
        assert_eq!(nm.label_name("héllo").as_deref(), Some("h_llo"));
        assert_eq!(nm.label_name("..."), None);
        assert_eq!(nm.label_name(""), None);
    }

    #[test]
    fn escaping_for_legacy_scrapers() {
        assert_eq!(
            escape_metric_name("http.server.duration"),
            "http_server_duration"
        );
        assert_eq!(escape_metric_name("1abc"), "_1abc");
        assert_eq!(escape_label_name("a.b:c"), "a_b_c");
        assert!(is_legacy_metric_name("a:b_c9"));
        assert!(!is_legacy_metric_name("9a"));
        assert!(!is_legacy_label_name("a:b"));
    }
}
