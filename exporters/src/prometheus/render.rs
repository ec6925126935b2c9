//! The exposition: Prometheus text format 0.0.4 (or its UTF-8 variant, version 1.0.0) and
//! OpenMetrics 1.0, written the way Go's client library writes them (number formatting, label
//! order, `le`/`quantile` last), families sorted by name, series by label set.

use std::collections::{BTreeMap, HashSet};
use std::fmt::Write as _;

use super::naming::{escape_metric_name, is_legacy_metric_name};
use super::state::{Family, Hist, Kind, Labels, Resource, Store, Value};

/// What the scraper gets, chosen from its `Accept` header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Format {
    pub open_metrics: bool,
    /// The scraper accepts UTF-8 names (`escaping=allow-utf-8`); only matters with a UTF-8
    /// translation strategy, otherwise every name is already a legacy one.
    pub utf8: bool,
}

impl Format {
    pub const TEXT: Format = Format {
        open_metrics: false,
        utf8: false,
    };

    pub fn content_type(self) -> &'static str {
        match (self.open_metrics, self.utf8) {
            (false, false) => "text/plain; version=0.0.4; charset=utf-8",
            (false, true) => "text/plain; version=1.0.0; charset=utf-8; escaping=allow-utf-8",
            (true, false) => "application/openmetrics-text; version=1.0.0; charset=utf-8",
            (true, true) => {
                "application/openmetrics-text; version=1.0.0; charset=utf-8; escaping=allow-utf-8"
            }
        }
    }

    /// Picks the format the way Go's `expfmt.Negotiate` does: media ranges by descending
    /// quality, the first one we can produce wins; protobuf is not offered, so a scraper
    /// asking for it first falls through to its next choice. No usable range: text.
    pub fn negotiate(accept: Option<&str>, open_metrics_enabled: bool, utf8_names: bool) -> Format {
        let Some(accept) = accept else {
            return Format::TEXT;
        };
        let mut ranges: Vec<(f32, usize, &str, bool)> = Vec::new();
        for (i, range) in accept.split(',').enumerate() {
            let mut parts = range.split(';').map(str::trim);
            let media = parts.next().unwrap_or("").to_ascii_lowercase();
            let mut q = 1.0f32;
            let mut utf8 = false;
            for p in parts {
                if let Some((k, v)) = p.split_once('=') {
                    match k.trim() {
                        "q" => q = v.trim().parse().unwrap_or(0.0),
                        "escaping" => utf8 = v.trim() == "allow-utf-8",
                        _ => {}
                    }
                }
            }
            let kind = match media.as_str() {
                "application/openmetrics-text" if open_metrics_enabled => "om",
                "text/plain" => "text",
                "text/*" | "*/*" => "any",
                _ => continue,
            };
            if q > 0.0 {
                ranges.push((q, i, kind, utf8));
            }
        }
        ranges.sort_by(|a, b| b.0.total_cmp(&a.0).then(a.1.cmp(&b.1)));
        match ranges.first() {
            Some((_, _, "om", utf8)) => Format {
                open_metrics: true,
                utf8: *utf8 && utf8_names,
            },
            Some((_, _, "text", utf8)) => Format {
                open_metrics: false,
                utf8: *utf8 && utf8_names,
            },
            _ => Format::TEXT,
        }
    }
}

/// Escapes a label value (or a quoted name): `\`, `"` and newline.
pub fn escape_label_value_into(out: &mut String, v: &str) {
    for c in v.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
}

fn escape_help_into(out: &mut String, v: &str, quote: bool) {
    for c in v.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '"' if quote => out.push_str("\\\""),
            c => out.push(c),
        }
    }
}

/// Splits Rust's shortest round-trip `{:e}` form into mantissa and exponent.
fn shortest_exp(v: f64) -> (String, i32) {
    let s = format!("{v:e}");
    match s.split_once('e') {
        Some((m, e)) => (m.to_string(), e.parse().unwrap_or(0)),
        None => (s, 0),
    }
}

/// Go's `strconv.FormatFloat(v, 'g', -1, 64)`, as the Prometheus client writes sample values:
/// shortest digits, exponent form (`1e+06`) from 1e6 up and below 1e-4.
pub fn write_go_float(out: &mut String, v: f64) {
    if v.is_nan() {
        out.push_str("NaN");
    } else if v == f64::INFINITY {
        out.push_str("+Inf");
    } else if v == f64::NEG_INFINITY {
        out.push_str("-Inf");
    } else if v == 0.0 {
        // Go's client writes both zeros as "0".
        out.push('0');
    } else {
        let (mant, exp) = shortest_exp(v);
        if !(-4..6).contains(&exp) {
            let sign = if exp < 0 { '-' } else { '+' };
            let _ = write!(out, "{mant}e{sign}{:02}", exp.unsigned_abs());
        } else {
            let _ = write!(out, "{v}");
        }
    }
}

/// OpenMetrics floats: as Go, but an integral value keeps a `.0`.
fn write_om_float(out: &mut String, v: f64) {
    let start = out.len();
    write_go_float(out, v);
    let written = &out[start..];
    if v.is_finite() && !written.contains(['.', 'e']) {
        out.push_str(".0");
    }
}

/// How pdata renders a double attribute (JSON-like): exponent form only below 1e-6 or from
/// 1e21, without zero padding.
pub fn write_attr_float(out: &mut String, v: f64) {
    if v.is_nan() {
        out.push_str("NaN");
    } else if v.is_infinite() {
        out.push_str(if v > 0.0 { "+Inf" } else { "-Inf" });
    } else if v != 0.0 && (v.abs() < 1e-6 || v.abs() >= 1e21) {
        let (mant, exp) = shortest_exp(v);
        let sign = if exp < 0 { "-" } else { "+" };
        let _ = write!(out, "{mant}e{sign}{}", exp.unsigned_abs());
    } else {
        let _ = write!(out, "{v}");
    }
}

/// Per-render settings.
pub struct RenderOptions<'a> {
    pub format: Format,
    pub send_timestamps: bool,
    /// `<namespace>_target_info`.
    pub target_info: &'a str,
    /// The translation strategy keeps UTF-8 names (so label sets may need escaping).
    pub utf8_names: bool,
}

enum Entry<'a> {
    Metrics(&'a Family),
    TargetInfo(Vec<&'a Labels>),
}

struct Writer<'a> {
    out: String,
    opts: &'a RenderOptions<'a>,
}

#[derive(Clone, Copy)]
enum Num {
    F(f64),
    U(u64),
}

impl Writer<'_> {
    fn name_needs_quotes(&self, name: &str) -> bool {
        self.opts.format.utf8 && !is_legacy_metric_name(name)
    }

    fn meta(&mut self, name: &str, help: &str, kind: &str) {
        let om = self.opts.format.open_metrics;
        let quoted = self.name_needs_quotes(name);
        for (tag, text) in [("HELP", help), ("TYPE", kind)] {
            let _ = write!(self.out, "# {tag} ");
            if quoted {
                self.out.push('"');
                escape_label_value_into(&mut self.out, name);
                self.out.push('"');
            } else {
                self.out.push_str(name);
            }
            self.out.push(' ');
            if tag == "HELP" {
                escape_help_into(&mut self.out, text, om);
            } else {
                self.out.push_str(text);
            }
            self.out.push('\n');
        }
    }

    fn num(&mut self, v: Num) {
        match (v, self.opts.format.open_metrics) {
            (Num::F(f), false) => write_go_float(&mut self.out, f),
            (Num::U(u), false) => write_go_float(&mut self.out, u as f64),
            (Num::F(f), true) => write_om_float(&mut self.out, f),
            (Num::U(u), true) => {
                let _ = write!(self.out, "{u}");
            }
        }
    }

    /// One sample line; `extra` is `le` or `quantile`, written after the sorted labels as the
    /// Go client does.
    fn sample(
        &mut self,
        name: &str,
        suffix: &str,
        labels: &str,
        extra: Option<(&str, f64)>,
        v: Num,
        ts_ns: Option<u64>,
    ) {
        let full_len = name.len() + suffix.len();
        let quoted = self.opts.format.utf8 && {
            let mut full = String::with_capacity(full_len);
            full.push_str(name);
            full.push_str(suffix);
            !is_legacy_metric_name(&full)
        };
        let mut sep = false;
        if quoted {
            self.out.push_str("{\"");
            escape_label_value_into(&mut self.out, name);
            escape_label_value_into(&mut self.out, suffix);
            self.out.push('"');
            sep = true;
        } else {
            self.out.push_str(name);
            self.out.push_str(suffix);
            if !labels.is_empty() || extra.is_some() {
                self.out.push('{');
            }
        }
        if !labels.is_empty() {
            if sep {
                self.out.push(',');
            }
            self.out.push_str(labels);
            sep = true;
        }
        if let Some((k, x)) = extra {
            if sep {
                self.out.push(',');
            }
            let _ = write!(self.out, "{k}=\"");
            if self.opts.format.open_metrics {
                write_om_float(&mut self.out, x);
            } else {
                write_go_float(&mut self.out, x);
            }
            self.out.push('"');
        }
        if quoted || !labels.is_empty() || extra.is_some() {
            self.out.push('}');
        }
        self.out.push(' ');
        self.num(v);
        if let Some(ts) = ts_ns.filter(|_| self.opts.send_timestamps) {
            if self.opts.format.open_metrics {
                let _ = write!(self.out, " {}", ts / 1_000_000_000);
                let ms = (ts % 1_000_000_000) / 1_000_000;
                if ms != 0 {
                    let _ = write!(self.out, ".{ms:03}");
                }
            } else {
                let _ = write!(self.out, " {}", ts / 1_000_000);
            }
        }
        self.out.push('\n');
    }

    /// OpenMetrics `_created`: when the cumulative value started, in seconds.
    fn created(&mut self, name: &str, labels: &str, start_ns: u64) {
        if self.opts.format.open_metrics && start_ns >= 1_000_000_000 {
            self.sample(
                name,
                "_created",
                labels,
                None,
                Num::F(start_ns as f64 / 1e9),
                None,
            );
        }
    }

    fn histogram(&mut self, name: &str, labels: &str, h: &Hist, start_ns: u64, ts: u64) {
        let mut cumulative = 0u64;
        for (b, c) in h.bounds.iter().zip(&h.counts) {
            cumulative = cumulative.saturating_add(*c);
            self.sample(
                name,
                "_bucket",
                labels,
                Some(("le", *b)),
                Num::U(cumulative),
                Some(ts),
            );
        }
        self.sample(
            name,
            "_bucket",
            labels,
            Some(("le", f64::INFINITY)),
            Num::U(h.count),
            Some(ts),
        );
        self.sample(name, "_sum", labels, None, Num::F(h.sum), Some(ts));
        self.sample(name, "_count", labels, None, Num::U(h.count), Some(ts));
        self.created(name, labels, start_ns);
    }
}

/// Renders every live series plus one `target_info` per resource (by job and instance).
pub fn render(store: &Store, opts: &RenderOptions<'_>) -> String {
    let utf8 = opts.format.utf8;
    let display = |name: &str| -> String {
        if utf8 || is_legacy_metric_name(name) {
            name.to_string()
        } else {
            escape_metric_name(name)
        }
    };

    // The resource seen most recently wins when several share a job and instance.
    let mut resources: BTreeMap<&str, (&Resource, std::time::Instant)> = BTreeMap::new();
    for fam in store.families.values() {
        for s in fam.series.values() {
            if s.resource.key.is_empty() {
                continue;
            }
            match resources.get(s.resource.key.as_str()) {
                Some((_, seen)) if *seen >= s.updated => {}
                _ => {
                    resources.insert(&s.resource.key, (&s.resource, s.updated));
                }
            }
        }
    }

    let mut entries: Vec<(String, Entry<'_>)> = store
        .families
        .iter()
        .map(|(name, fam)| {
            let mut shown = display(name);
            // OpenMetrics names a counter family without `_total` (its samples carry it), so
            // that is the name it sorts, groups and clashes under.
            if opts.format.open_metrics && fam.kind == Kind::Counter {
                if let Some(base) = shown.strip_suffix("_total").filter(|b| !b.is_empty()) {
                    shown = base.to_string();
                }
            }
            (shown, Entry::Metrics(fam))
        })
        .collect();
    let target_name = display(opts.target_info);
    // A user metric that happens to be called target_info keeps the name.
    if !resources.is_empty() && !entries.iter().any(|(n, _)| *n == target_name) {
        let mut labels: Vec<&Labels> = resources.values().map(|(r, _)| &r.labels).collect();
        labels.sort_by(|a, b| a.get(utf8).cmp(b.get(utf8)));
        labels.dedup_by(|a, b| a.get(utf8) == b.get(utf8));
        entries.push((target_name, Entry::TargetInfo(labels)));
    }
    entries.sort_by(|a, b| a.0.cmp(&b.0));

    let mut w = Writer {
        out: String::with_capacity(256 * store.series_count().max(4)),
        opts,
    };
    let mut i = 0;
    while i < entries.len() {
        let name = entries[i].0.clone();
        let group_end = entries[i..]
            .iter()
            .position(|(n, _)| *n != name)
            .map_or(entries.len(), |p| i + p);
        match &entries[i].1 {
            Entry::TargetInfo(labels) => {
                w.meta(&name, "Target metadata", "gauge");
                for l in labels {
                    w.sample(&name, "", l.get(utf8), None, Num::F(1.0), None);
                }
            }
            Entry::Metrics(first) => {
                let kind = first.kind;
                let counter_suffix = if opts.format.open_metrics && kind == Kind::Counter {
                    "_total"
                } else {
                    ""
                };
                w.meta(&name, &first.help, kind.as_str());
                // Distinct names can escape to the same one, and with UTF-8 names so can
                // label sets; only then is a series checked against the ones already written.
                let mut seen: Option<HashSet<&str>> =
                    (group_end - i > 1 || (opts.utf8_names && !utf8)).then(HashSet::new);
                for (_, entry) in &entries[i..group_end] {
                    let Entry::Metrics(fam) = entry else { continue };
                    if fam.kind != kind {
                        continue;
                    }
                    for (key, s) in &fam.series {
                        let labels = match (&s.escaped, utf8) {
                            (Some(e), false) => e.as_str(),
                            _ => key.as_str(),
                        };
                        if let Some(seen) = seen.as_mut() {
                            if !seen.insert(labels) {
                                continue;
                            }
                        }
                        let ts = Some(s.time_ns);
                        match &s.value {
                            Value::Number(v) => {
                                w.sample(&name, counter_suffix, labels, None, Num::F(*v), ts);
                                if kind == Kind::Counter {
                                    w.created(&name, labels, s.start_ns);
                                }
                            }
                            Value::Histogram(h) | Value::Exponential(_, h) => {
                                w.histogram(&name, labels, h, s.start_ns, s.time_ns);
                            }
                            Value::Summary(sv) => {
                                for (q, v) in &sv.quantiles {
                                    w.sample(
                                        &name,
                                        "",
                                        labels,
                                        Some(("quantile", *q)),
                                        Num::F(*v),
                                        ts,
                                    );
                                }
                                w.sample(&name, "_sum", labels, None, Num::F(sv.sum), ts);
                                w.sample(&name, "_count", labels, None, Num::U(sv.count), ts);
                                w.created(&name, labels, s.start_ns);
                            }
                        }
                    }
                }
            }
        }
        i = group_end;
    }
    if opts.format.open_metrics {
        w.out.push_str("# EOF\n");
    }
    w.out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn g(v: f64) -> String {
        let mut s = String::new();
        write_go_float(&mut s, v);
        s
    }

    #[test]
    fn floats_are_formatted_like_go() {
        assert_eq!(g(0.0), "0");
        assert_eq!(g(1.0), "1");
        assert_eq!(g(-2.5), "-2.5");
        assert_eq!(g(0.005), "0.005");
        assert_eq!(g(0.0001), "0.0001");
        assert_eq!(g(0.00001), "1e-05");
        assert_eq!(g(123456.0), "123456");
        assert_eq!(g(1e6), "1e+06");
        assert_eq!(g(1234567.0), "1.234567e+06");
        assert_eq!(g(1.5e300), "1.5e+300");
        assert_eq!(g(f64::INFINITY), "+Inf");
        assert_eq!(g(f64::NEG_INFINITY), "-Inf");
        assert_eq!(g(f64::NAN), "NaN");
        let mut s = String::new();
        write_om_float(&mut s, 1.0);
        s.push(' ');
        write_om_float(&mut s, 0.25);
        s.push(' ');
        write_om_float(&mut s, 1e6);
        assert_eq!(s, "1.0 0.25 1e+06");
    }

    #[test]
    fn negotiation_prefers_quality_then_order() {
        assert_eq!(Format::negotiate(None, true, false), Format::TEXT);
        let prom3 = "application/openmetrics-text;version=1.0.0;escaping=allow-utf-8;q=0.6,application/openmetrics-text;version=0.0.1;q=0.5,text/plain;version=1.0.0;escaping=allow-utf-8;q=0.4,text/plain;version=0.0.4;q=0.3,*/*;q=0.2";
        assert_eq!(Format::negotiate(Some(prom3), false, false), Format::TEXT);
        assert_eq!(
            Format::negotiate(Some(prom3), false, true),
            Format {
                open_metrics: false,
                utf8: true
            }
        );
        assert_eq!(
            Format::negotiate(Some(prom3), true, false),
            Format {
                open_metrics: true,
                utf8: false
            }
        );
        assert_eq!(
            Format::negotiate(Some(prom3), true, true),
            Format {
                open_metrics: true,
                utf8: true
            }
        );
        let proto_first = "application/vnd.google.protobuf;proto=io.prometheus.client.MetricFamily;encoding=delimited;q=0.9,text/plain;version=0.0.4;q=0.3";
        assert_eq!(
            Format::negotiate(Some(proto_first), true, false),
            Format::TEXT
        );
        assert_eq!(
            Format::negotiate(Some("application/json"), true, false),
            Format::TEXT
        );
    }
}
