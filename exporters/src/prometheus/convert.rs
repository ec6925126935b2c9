//! OTLP metrics -> named, labelled [`Update`]s. Everything that allocates per point (names,
//! label strings) happens here, before the store's lock is taken.

use std::sync::Arc;

use pipeline_core::otlp::tonic::collector::metrics::v1::ExportMetricsServiceRequest;
use pipeline_core::otlp::tonic::common::v1::{any_value, AnyValue, KeyValue};
use pipeline_core::otlp::tonic::metrics::v1::exponential_histogram_data_point::Buckets;
use pipeline_core::otlp::tonic::metrics::v1::{
    metric::Data, number_data_point, Gauge, Metric, Sum,
};

use super::naming::{escape_label_name, is_legacy_label_name, Namer, OtlpKind};
use super::render::{escape_label_value_into, write_attr_float};
use super::state::{
    ExpBuckets, ExpHist, Hist, Kind, Labels, Point, Resource, SummaryValue, Temporality, Update,
};

/// `DataPointFlags.FLAG_NO_RECORDED_VALUE`.
const NO_RECORDED_VALUE: u32 = 1;

/// Points the conversion left out, by reason.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct ConvertStats {
    /// Sums and histograms whose temporality is unspecified (the reference drops them too).
    pub unspecified_temporality: u64,
    /// Metric names with nothing usable left after sanitising.
    pub invalid_name: u64,
    /// Number points without a value.
    pub no_value: u64,
    /// Exponential histogram points exported as classic histograms.
    pub exponential_converted: u64,
}

pub struct Converter {
    pub namer: Namer,
    pub resource_to_telemetry: bool,
    /// Already validated label names.
    pub const_labels: Vec<(String, String)>,
}

/// An OTLP attribute value as the reference renders it in a label (pdata's `AsString`).
pub fn attr_string(v: &Option<AnyValue>) -> String {
    let Some(AnyValue { value: Some(v) }) = v else {
        return String::new();
    };
    match v {
        any_value::Value::StringValue(s) => s.clone(),
        any_value::Value::BoolValue(b) => b.to_string(),
        any_value::Value::IntValue(i) => i.to_string(),
        any_value::Value::DoubleValue(d) => {
            let mut s = String::new();
            write_attr_float(&mut s, *d);
            s
        }
        any_value::Value::BytesValue(b) => base64(b),
        any_value::Value::ArrayValue(_) | any_value::Value::KvlistValue(_) => {
            json(&Some(AnyValue {
                value: Some(v.clone()),
            }))
            .to_string()
        }
    }
}

fn json(v: &Option<AnyValue>) -> serde_json::Value {
    use serde_json::Value as J;
    let Some(AnyValue { value: Some(v) }) = v else {
        return J::Null;
    };
    match v {
        any_value::Value::StringValue(s) => J::String(s.clone()),
        any_value::Value::BoolValue(b) => J::Bool(*b),
        any_value::Value::IntValue(i) => J::from(*i),
        any_value::Value::DoubleValue(d) => {
            serde_json::Number::from_f64(*d).map_or(J::Null, J::Number)
        }
        any_value::Value::BytesValue(b) => J::String(base64(b)),
        any_value::Value::ArrayValue(a) => {
            J::Array(a.values.iter().map(|x| json(&Some(x.clone()))).collect())
        }
        any_value::Value::KvlistValue(kv) => J::Object(
            kv.values
                .iter()
                .map(|x| (x.key.clone(), json(&x.value)))
                .collect(),
        ),
    }
}

fn base64(bytes: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(bytes.len().div_ceil(3) * 4);
    for chunk in bytes.chunks(3) {
        let b = [
            chunk[0],
            *chunk.get(1).unwrap_or(&0),
            *chunk.get(2).unwrap_or(&0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(ALPHABET[((n >> (18 - 6 * i)) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

fn find<'a>(attrs: &'a [KeyValue], key: &str) -> Option<&'a Option<AnyValue>> {
    attrs.iter().find(|kv| kv.key == key).map(|kv| &kv.value)
}

/// `job` = `service.namespace/service.name` (or `service.name`), `instance` =
/// `service.instance.id`.
fn job_instance(attrs: &[KeyValue]) -> (Option<String>, Option<String>) {
    let job = find(attrs, "service.name").map(|name| {
        let name = attr_string(name);
        match find(attrs, "service.namespace") {
            Some(ns) => format!("{}/{name}", attr_string(ns)),
            None => name,
        }
    });
    let instance = find(attrs, "service.instance.id").map(attr_string);
    (job, instance)
}

/// Renders sorted `(name, value)` pairs; see [`Labels`].
fn render_labels(pairs: &[(String, String)], utf8: bool) -> Labels {
    let write = |pairs: &[(String, String)]| {
        let mut out = String::new();
        for (i, (n, v)) in pairs.iter().enumerate() {
            if i > 0 {
                out.push(',');
            }
            if is_legacy_label_name(n) {
                out.push_str(n);
            } else {
                out.push('"');
                escape_label_value_into(&mut out, n);
                out.push('"');
            }
            out.push_str("=\"");
            escape_label_value_into(&mut out, v);
            out.push('"');
        }
        out
    };
    let key = write(pairs);
    let escaped = if utf8 && pairs.iter().any(|(n, _)| !is_legacy_label_name(n)) {
        let mut esc: Vec<(String, String)> = pairs
            .iter()
            .map(|(n, v)| (escape_label_name(n), v.clone()))
            .collect();
        esc.sort_by(|a, b| a.0.cmp(&b.0));
        // Two names may escape to the same one; a label may appear only once.
        esc.dedup_by(|later, earlier| later.0 == earlier.0);
        Some(write(&esc))
    } else {
        None
    };
    Labels { key, escaped }
}

impl Converter {
    /// Attribute labels: resource attributes first when converting them (they win over a data
    /// point attribute of the same key, as the reference's conversion does), keys sanitised,
    /// values of keys that sanitise to the same name joined with `;` in key order; then the
    /// fixed labels in `overrides`, later ones winning. Empty values are left out: Prometheus
    /// treats an empty label as absent, and two series differing only by one would collide.
    fn labels(
        &self,
        attrs: &[KeyValue],
        resource: Option<&[KeyValue]>,
        overrides: &[(String, String)],
    ) -> Labels {
        let res = resource.unwrap_or(&[]);
        let mut named: Vec<(String, &str, String)> =
            Vec::with_capacity(attrs.len() + res.len() + overrides.len());
        let from_point = attrs
            .iter()
            .filter(|kv| !res.iter().any(|r| r.key == kv.key));
        for kv in res.iter().chain(from_point) {
            if let Some(n) = self.namer.label_name(&kv.key) {
                named.push((n, kv.key.as_str(), attr_string(&kv.value)));
            }
        }
        named.sort_by(|a, b| a.0.cmp(&b.0).then_with(|| a.1.cmp(b.1)));
        let mut pairs: Vec<(String, String)> = Vec::with_capacity(named.len() + overrides.len());
        for (n, _, v) in named {
            match pairs.last_mut() {
                Some((ln, lv)) if *ln == n => {
                    lv.push(';');
                    lv.push_str(&v);
                }
                _ => pairs.push((n, v)),
            }
        }
        for (n, v) in overrides {
            match pairs.binary_search_by(|p| p.0.as_str().cmp(n)) {
                Ok(i) => pairs[i].1.clone_from(v),
                Err(i) => pairs.insert(i, (n.clone(), v.clone())),
            }
        }
        pairs.retain(|(_, v)| !v.is_empty());
        render_labels(&pairs, self.namer.utf8())
    }

    /// Appends one update per data point of `req` to `out`.
    pub fn convert(
        &self,
        req: &ExportMetricsServiceRequest,
        out: &mut Vec<Update>,
    ) -> ConvertStats {
        let mut stats = ConvertStats::default();
        for rm in &req.resource_metrics {
            let rattrs: &[KeyValue] = rm.resource.as_ref().map_or(&[], |r| &r.attributes);
            let (job, instance) = job_instance(rattrs);
            let mut fixed: Vec<(String, String)> = Vec::with_capacity(2);
            if let Some(j) = &job {
                fixed.push(("job".into(), j.clone()));
            }
            if let Some(i) = &instance {
                fixed.push(("instance".into(), i.clone()));
            }
            let resource = Arc::new(Resource {
                key: if job.is_none() && instance.is_none() {
                    String::new()
                } else {
                    format!(
                        "{}\u{0}{}",
                        job.as_deref().unwrap_or(""),
                        instance.as_deref().unwrap_or("")
                    )
                },
                labels: self.labels(rattrs, None, &fixed),
            });
            for sm in &rm.scope_metrics {
                let mut overrides: Vec<(String, String)> = Vec::new();
                let (name, version) = match &sm.scope {
                    Some(scope) => {
                        for kv in &scope.attributes {
                            let key = format!("otel_scope_{}", kv.key);
                            if let Some(n) = self.namer.label_name(&key) {
                                overrides.push((n, attr_string(&kv.value)));
                            }
                        }
                        (scope.name.as_str(), scope.version.as_str())
                    }
                    None => ("", ""),
                };
                overrides.push(("otel_scope_name".into(), name.into()));
                overrides.push(("otel_scope_version".into(), version.into()));
                overrides.push(("otel_scope_schema_url".into(), sm.schema_url.clone()));
                overrides.extend(fixed.iter().cloned());
                overrides.extend(self.const_labels.iter().cloned());
                let scope = Scope {
                    resource: &resource,
                    resource_attrs: self.resource_to_telemetry.then_some(rattrs),
                    overrides: &overrides,
                };
                for metric in &sm.metrics {
                    self.convert_metric(metric, &scope, out, &mut stats);
                }
            }
        }
        stats
    }

    fn convert_metric(
        &self,
        metric: &Metric,
        scope: &Scope<'_>,
        out: &mut Vec<Update>,
        stats: &mut ConvertStats,
    ) {
        let Some(data) = &metric.data else { return };
        let (otlp_kind, points, temporality) = match data {
            Data::Gauge(g) => (OtlpKind::Gauge, g.data_points.len(), 2),
            Data::Sum(s) if s.is_monotonic => (
                OtlpKind::MonotonicSum,
                s.data_points.len(),
                s.aggregation_temporality,
            ),
            Data::Sum(s) => (
                OtlpKind::NonMonotonicSum,
                s.data_points.len(),
                s.aggregation_temporality,
            ),
            Data::Histogram(h) => (
                OtlpKind::Histogram,
                h.data_points.len(),
                h.aggregation_temporality,
            ),
            Data::ExponentialHistogram(h) => (
                OtlpKind::ExponentialHistogram,
                h.data_points.len(),
                h.aggregation_temporality,
            ),
            Data::Summary(s) => (OtlpKind::Summary, s.data_points.len(), 2),
        };
        let temporality = match temporality {
            1 => Temporality::Delta,
            2 => Temporality::Cumulative,
            _ => {
                stats.unspecified_temporality += points as u64;
                return;
            }
        };
        let Some(name) = self
            .namer
            .metric_name(&metric.name, &metric.unit, otlp_kind)
        else {
            stats.invalid_name += points as u64;
            return;
        };
        let family: Arc<str> = Arc::from(name);
        let help: Arc<str> = Arc::from(metric.description.as_str());
        let kind = match otlp_kind {
            OtlpKind::Gauge | OtlpKind::NonMonotonicSum => Kind::Gauge,
            OtlpKind::MonotonicSum => Kind::Counter,
            OtlpKind::Histogram | OtlpKind::ExponentialHistogram => Kind::Histogram,
            OtlpKind::Summary => Kind::Summary,
        };
        let mut push = |attrs: &[KeyValue], start, time, flags: u32, point| {
            out.push(Update {
                family: family.clone(),
                kind,
                help: help.clone(),
                labels: self.labels(attrs, scope.resource_attrs, scope.overrides),
                resource: scope.resource.clone(),
                temporality,
                start_ns: start,
                time_ns: time,
                point: if flags & NO_RECORDED_VALUE != 0 {
                    Point::Stale
                } else {
                    point
                },
            });
        };
        match data {
            Data::Gauge(Gauge { data_points, .. }) | Data::Sum(Sum { data_points, .. }) => {
                for p in data_points {
                    let v = match &p.value {
                        Some(number_data_point::Value::AsDouble(d)) => *d,
                        Some(number_data_point::Value::AsInt(i)) => *i as f64,
                        // A staleness marker needs no value.
                        None if p.flags & NO_RECORDED_VALUE != 0 => 0.0,
                        None => {
                            stats.no_value += 1;
                            continue;
                        }
                    };
                    push(
                        &p.attributes,
                        p.start_time_unix_nano,
                        p.time_unix_nano,
                        p.flags,
                        Point::Number(v),
                    );
                }
            }
            Data::Histogram(h) => {
                for p in &h.data_points {
                    let hist = Hist::from_otlp(
                        &p.explicit_bounds,
                        &p.bucket_counts,
                        p.sum.unwrap_or(0.0),
                        p.count,
                    );
                    push(
                        &p.attributes,
                        p.start_time_unix_nano,
                        p.time_unix_nano,
                        p.flags,
                        Point::Histogram(hist),
                    );
                }
            }
            Data::ExponentialHistogram(h) => {
                let side = |b: &Option<Buckets>| {
                    b.as_ref().map_or_else(ExpBuckets::default, |b| ExpBuckets {
                        offset: b.offset,
                        counts: b.bucket_counts.clone(),
                    })
                };
                for p in &h.data_points {
                    let exp = ExpHist {
                        scale: p.scale,
                        zero_count: p.zero_count,
                        zero_threshold: p.zero_threshold,
                        positive: side(&p.positive),
                        negative: side(&p.negative),
                        sum: p.sum.unwrap_or(0.0),
                        count: p.count,
                    };
                    stats.exponential_converted += 1;
                    push(
                        &p.attributes,
                        p.start_time_unix_nano,
                        p.time_unix_nano,
                        p.flags,
                        Point::Exponential(exp),
                    );
                }
            }
            Data::Summary(s) => {
                for p in &s.data_points {
                    let mut quantiles: Vec<(f64, f64)> = p
                        .quantile_values
                        .iter()
                        .map(|q| (q.quantile, q.value))
                        .collect();
                    quantiles.sort_by(|a, b| a.0.total_cmp(&b.0));
                    quantiles.dedup_by(|later, earlier| later.0 == earlier.0);
                    let summary = SummaryValue {
                        quantiles,
                        sum: p.sum,
                        count: p.count,
                    };
                    push(
                        &p.attributes,
                        p.start_time_unix_nano,
                        p.time_unix_nano,
                        p.flags,
                        Point::Summary(summary),
                    );
                }
            }
        }
    }
}

/// What every metric of one scope shares.
struct Scope<'a> {
    resource: &'a Arc<Resource>,
    /// The resource attributes, when they become labels of every series.
    resource_attrs: Option<&'a [KeyValue]>,
    /// Scope labels, job/instance and const labels, in increasing precedence.
    overrides: &'a [(String, String)],
}

#[cfg(test)]
mod tests {
    use super::*;
    use pipeline_core::otlp::tonic::common::v1::{ArrayValue, KeyValueList};

    fn kv(k: &str, v: any_value::Value) -> KeyValue {
        KeyValue {
            key: k.into(),
            value: Some(AnyValue { value: Some(v) }),
        }
    }

    fn s(k: &str, v: &str) -> KeyValue {
        kv(k, any_value::Value::StringValue(v.into()))
    }

    fn conv(r2t: bool) -> Converter {
        Converter {
            namer: Namer::new("", true, false),
            resource_to_telemetry: r2t,
            const_labels: vec![],
        }
    }

    #[test]
    fn attribute_values_render_like_pdata() {
        assert_eq!(attr_string(&None), "");
        assert_eq!(attr_string(&s("k", "v").value), "v");
        assert_eq!(
            attr_string(&kv("k", any_value::Value::IntValue(-3)).value),
            "-3"
        );
        assert_eq!(
            attr_string(&kv("k", any_value::Value::BoolValue(true)).value),
            "true"
        );
        assert_eq!(
            attr_string(&kv("k", any_value::Value::DoubleValue(1.5)).value),
            "1.5"
        );
        assert_eq!(
            attr_string(&kv("k", any_value::Value::DoubleValue(1e-7)).value),
            "1e-7"
        );
        assert_eq!(
            attr_string(&kv("k", any_value::Value::DoubleValue(1e21)).value),
            "1e+21"
        );
        assert_eq!(
            attr_string(&kv("k", any_value::Value::DoubleValue(123456789.0)).value),
            "123456789"
        );
        assert_eq!(
            attr_string(&kv("k", any_value::Value::BytesValue(b"hello".to_vec())).value),
            "aGVsbG8="
        );
        assert_eq!(base64(b"ab"), "YWI=");
        assert_eq!(base64(b"abc"), "YWJj");
        assert_eq!(base64(b""), "");
        let arr = kv(
            "k",
            any_value::Value::ArrayValue(ArrayValue {
                values: vec![
                    AnyValue {
                        value: Some(any_value::Value::StringValue("a".into())),
                    },
                    AnyValue {
                        value: Some(any_value::Value::IntValue(1)),
                    },
                ],
            }),
        );
        assert_eq!(attr_string(&arr.value), r#"["a",1]"#);
        let map = kv(
            "k",
            any_value::Value::KvlistValue(KeyValueList {
                values: vec![s("z", "1"), kv("a", any_value::Value::BoolValue(false))],
            }),
        );
        assert_eq!(attr_string(&map.value), r#"{"a":false,"z":"1"}"#);
    }

    #[test]
    fn colliding_keys_join_and_fixed_labels_win() {
        let c = conv(false);
        let l = c.labels(
            &[
                s("a.b", "1"),
                s("a_b", "2"),
                s("job", "mine"),
                s("empty", ""),
            ],
            None,
            &[
                ("job".into(), "svc".into()),
                ("otel_scope_version".into(), String::new()),
            ],
        );
        assert_eq!(l.key, r#"a_b="1;2",job="svc""#);
        assert_eq!(l.escaped, None);
    }

    #[test]
    fn resource_attributes_win_when_converted() {
        let c = conv(true);
        let l = c.labels(
            &[s("host", "point"), s("x", "1")],
            Some(&[s("host", "res")]),
            &[],
        );
        assert_eq!(l.key, r#"host="res",x="1""#);
    }

    #[test]
    fn values_are_escaped() {
        let c = conv(false);
        let l = c.labels(&[s("path", "a\"b\\c\nd")], None, &[]);
        assert_eq!(l.key, r#"path="a\"b\\c\nd""#);
    }

    #[test]
    fn utf8_names_are_quoted_with_an_escaped_twin() {
        let c = Converter {
            namer: Namer::new("", true, true),
            resource_to_telemetry: false,
            const_labels: vec![],
        };
        let l = c.labels(
            &[s("http.method", "GET"), s("http_method", "PUT")],
            None,
            &[],
        );
        assert_eq!(l.key, r#""http.method"="GET",http_method="PUT""#);
        assert_eq!(l.escaped.as_deref(), Some(r#"http_method="GET""#));
    }
}
