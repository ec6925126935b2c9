//! `debug`: writes what it receives to Sonde's log, as the collector's debug exporter does.
//! `basic` logs counts only (no decoding); `normal` one line per item; `detailed` everything.

use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use async_trait::async_trait;
use pipeline_core::otlp::tonic::common::v1::{any_value, AnyValue, KeyValue};
use pipeline_core::otlp::tonic::metrics::v1::metric::Data;
use pipeline_core::telemetry::ExporterMetrics;
use pipeline_core::timefmt::format_go_utc;
use pipeline_core::{
    parse_component, ComponentError, ConsumeError, Consumer, Exporter, ExporterConfig,
    ExporterContext, ExporterFactory, Lifecycle, Payload, Signal, Validate,
};
use serde::Deserialize;

pub const FACTORY: ExporterFactory = ExporterFactory {
    type_name: "debug",
    signals: &[Signal::Traces, Signal::Metrics, Signal::Logs],
    parse: |v, path| Ok(Box::new(parse_component::<DebugConfig>(v, path)?)),
};

#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq, Default)]
#[serde(rename_all = "lowercase")]
pub enum Verbosity {
    #[default]
    Basic,
    Normal,
    Detailed,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DebugConfig {
    pub verbosity: Verbosity,
    /// Payloads logged in full before sampling starts.
    pub sampling_initial: u64,
    /// After the initial ones, one payload in this many is logged.
    pub sampling_thereafter: u64,
    pub use_internal_logger: bool,
}

impl Default for DebugConfig {
    fn default() -> Self {
        DebugConfig {
            verbosity: Verbosity::Basic,
            sampling_initial: 2,
            sampling_thereafter: 1,
            use_internal_logger: true,
        }
    }
}

impl Validate for DebugConfig {
    fn validate(&self) -> Result<(), String> {
        if self.sampling_thereafter == 0 {
            return Err("sampling_thereafter must be at least 1".into());
        }
        Ok(())
    }
}

impl ExporterConfig for DebugConfig {
    fn build(&self, ctx: ExporterContext) -> Result<Arc<dyn Exporter>, ComponentError> {
        Ok(Arc::new(DebugExporter {
            cfg: self.clone(),
            id: ctx.id.to_string(),
            metrics: ExporterMetrics::new(&ctx.telemetry, &ctx.id, ctx.signal),
            seen: AtomicU64::new(0),
        }))
    }
}

pub struct DebugExporter {
    cfg: DebugConfig,
    id: String,
    metrics: ExporterMetrics,
    seen: AtomicU64,
}

#[async_trait]
impl Lifecycle for DebugExporter {}

#[async_trait]
impl Consumer for DebugExporter {
    async fn consume(&self, mut payload: Payload) -> Result<(), ConsumeError> {
        let n = payload.items() as u64;
        let seen = self.seen.fetch_add(1, Ordering::Relaxed);
        let sampled = seen < self.cfg.sampling_initial
            || (seen - self.cfg.sampling_initial).is_multiple_of(self.cfg.sampling_thereafter);
        let signal = payload.signal();
        if self.cfg.verbosity == Verbosity::Basic || !sampled {
            tracing::info!(exporter = %self.id, data_type = %signal, items = n, "{}", signal_title(signal));
        } else {
            let text = match render(&mut payload, self.cfg.verbosity) {
                Ok(t) => t,
                Err(e) => {
                    self.metrics.send_failed.add(n);
                    return Err(ConsumeError::Permanent(e));
                }
            };
            tracing::info!(exporter = %self.id, data_type = %signal, items = n, "{}\n{text}", signal_title(signal));
        }
        self.metrics.sent.add(n);
        Ok(())
    }
}

fn signal_title(s: Signal) -> &'static str {
    match s {
        Signal::Traces => "Traces",
        Signal::Metrics => "Metrics",
        Signal::Logs => "Logs",
    }
}

pub fn any_value_text(v: &Option<AnyValue>) -> String {
    let Some(AnyValue { value: Some(v) }) = v else {
        return "Empty()".into();
    };
    match v {
        any_value::Value::StringValue(s) => format!("Str({s})"),
        any_value::Value::BoolValue(b) => format!("Bool({b})"),
        any_value::Value::IntValue(i) => format!("Int({i})"),
        any_value::Value::DoubleValue(d) => format!("Double({d})"),
        any_value::Value::BytesValue(b) => format!("Bytes({})", hex::encode(b)),
        any_value::Value::ArrayValue(a) => format!(
            "Slice([{}])",
            a.values
                .iter()
                .map(|x| any_value_text(&Some(x.clone())))
                .collect::<Vec<_>>()
                .join(", ")
        ),
        any_value::Value::KvlistValue(kv) => format!(
            "Map({{{}}})",
            kv.values
                .iter()
                .map(|x| format!("{}: {}", x.key, any_value_text(&x.value)))
                .collect::<Vec<_>>()
                .join(", ")
        ),
    }
}

fn attrs(out: &mut String, title: &str, kvs: &[KeyValue]) {
    if kvs.is_empty() {
        return;
    }
    let _ = writeln!(out, "{title}:");
    for kv in kvs {
        let _ = writeln!(out, "     -> {}: {}", kv.key, any_value_text(&kv.value));
    }
}

fn flat_attrs(kvs: &[KeyValue]) -> String {
    kvs.iter()
        .map(|kv| format!("{}={}", kv.key, any_value_text(&kv.value)))
        .collect::<Vec<_>>()
        .join(" ")
}

const SPAN_KINDS: [&str; 6] = [
    "Unspecified",
    "Internal",
    "Server",
    "Client",
    "Producer",
    "Consumer",
];
const STATUS: [&str; 3] = ["Unset", "Ok", "Error"];

fn render(payload: &mut Payload, v: Verbosity) -> Result<String, String> {
    let mut out = String::new();
    match payload.signal() {
        Signal::Traces => {
            let t = payload.traces().map_err(|e| e.to_string())?;
            for (ri, rs) in t.resource_spans.iter().enumerate() {
                let rattrs = rs
                    .resource
                    .as_ref()
                    .map(|r| &r.attributes[..])
                    .unwrap_or(&[]);
                if v == Verbosity::Detailed {
                    let _ = writeln!(out, "ResourceSpans #{ri}");
                    let _ = writeln!(out, "Resource SchemaURL: {}", rs.schema_url);
                    attrs(&mut out, "Resource attributes", rattrs);
                }
                for (si, ss) in rs.scope_spans.iter().enumerate() {
                    let scope = ss.scope.clone().unwrap_or_default();
                    if v == Verbosity::Detailed {
                        let _ = writeln!(out, "ScopeSpans #{si}");
                        let _ = writeln!(out, "ScopeSpans SchemaURL: {}", ss.schema_url);
                        let _ =
                            writeln!(out, "InstrumentationScope {} {}", scope.name, scope.version);
                    }
                    for (i, s) in ss.spans.iter().enumerate() {
                        if v == Verbosity::Normal {
                            let _ = writeln!(
                                out,
                                "{} {} {} {}",
                                s.name,
                                hex::encode(&s.trace_id),
                                hex::encode(&s.span_id),
                                flat_attrs(&s.attributes)
                            );
                            continue;
                        }
                        let kind = SPAN_KINDS.get(s.kind as usize).copied().unwrap_or("?");
                        let status = s.status.clone().unwrap_or_default();
                        let code = STATUS.get(status.code as usize).copied().unwrap_or("?");
                        let _ = writeln!(out, "Span #{i}");
                        let _ = writeln!(out, "    Trace ID       : {}", hex::encode(&s.trace_id));
                        let _ = writeln!(
                            out,
                            "    Parent ID      : {}",
                            hex::encode(&s.parent_span_id)
                        );
                        let _ = writeln!(out, "    ID             : {}", hex::encode(&s.span_id));
                        let _ = writeln!(out, "    Name           : {}", s.name);
                        let _ = writeln!(out, "    Kind           : {kind}");
                        let _ = writeln!(
                            out,
                            "    Start time     : {}",
                            format_go_utc(s.start_time_unix_nano)
                        );
                        let _ = writeln!(
                            out,
                            "    End time       : {}",
                            format_go_utc(s.end_time_unix_nano)
                        );
                        let _ = writeln!(out, "    Status code    : {code}");
                        let _ = writeln!(out, "    Status message : {}", status.message);
                        attrs(&mut out, "Attributes", &s.attributes);
                    }
                }
            }
        }
        Signal::Metrics => {
            let m = payload.metrics().map_err(|e| e.to_string())?;
            for (ri, rm) in m.resource_metrics.iter().enumerate() {
                let rattrs = rm
                    .resource
                    .as_ref()
                    .map(|r| &r.attributes[..])
                    .unwrap_or(&[]);
                if v == Verbosity::Detailed {
                    let _ = writeln!(out, "ResourceMetrics #{ri}");
                    attrs(&mut out, "Resource attributes", rattrs);
                }
                for sm in &rm.scope_metrics {
                    for (i, metric) in sm.metrics.iter().enumerate() {
                        let (kind, points) = match &metric.data {
                            Some(Data::Gauge(g)) => ("Gauge", g.data_points.len()),
                            Some(Data::Sum(s)) => ("Sum", s.data_points.len()),
                            Some(Data::Histogram(h)) => ("Histogram", h.data_points.len()),
                            Some(Data::ExponentialHistogram(h)) => {
                                ("ExponentialHistogram", h.data_points.len())
                            }
                            Some(Data::Summary(s)) => ("Summary", s.data_points.len()),
                            None => ("Empty", 0),
                        };
                        if v == Verbosity::Normal {
                            let _ = writeln!(out, "{} {kind} points={points}", metric.name);
                        } else {
                            let _ = writeln!(out, "Metric #{i}");
                            let _ = writeln!(out, "     -> Name: {}", metric.name);
                            let _ = writeln!(out, "     -> Description: {}", metric.description);
                            let _ = writeln!(out, "     -> Unit: {}", metric.unit);
                            let _ = writeln!(out, "     -> DataType: {kind}");
                            let _ = writeln!(out, "     -> DataPoints: {points}");
                        }
                    }
                }
            }
        }
        Signal::Logs => {
            let l = payload.logs().map_err(|e| e.to_string())?;
            for rl in &l.resource_logs {
                for sl in &rl.scope_logs {
                    for (i, r) in sl.log_records.iter().enumerate() {
                        if v == Verbosity::Normal {
                            let _ = writeln!(
                                out,
                                "{} {}",
                                any_value_text(&r.body),
                                flat_attrs(&r.attributes)
                            );
                        } else {
                            let _ = writeln!(out, "LogRecord #{i}");
                            let _ = writeln!(out, "Timestamp: {}", format_go_utc(r.time_unix_nano));
                            let _ = writeln!(out, "SeverityText: {}", r.severity_text);
                            let _ = writeln!(out, "SeverityNumber: {}", r.severity_number);
                            let _ = writeln!(out, "Body: {}", any_value_text(&r.body));
                            attrs(&mut out, "Attributes", &r.attributes);
                            let _ = writeln!(out, "Trace ID: {}", hex::encode(&r.trace_id));
                            let _ = writeln!(out, "Span ID: {}", hex::encode(&r.span_id));
                        }
                    }
                }
            }
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use pipeline_core::otlp::tonic::collector::trace::v1::ExportTraceServiceRequest;
    use pipeline_core::otlp::tonic::trace::v1::{ResourceSpans, ScopeSpans, Span};

    #[test]
    fn detailed_lists_span_fields() {
        let mut p = Payload::from_traces(ExportTraceServiceRequest {
            resource_spans: vec![ResourceSpans {
                scope_spans: vec![ScopeSpans {
                    spans: vec![Span {
                        name: "GET /".into(),
                        trace_id: vec![1; 16],
                        span_id: vec![2; 8],
                        kind: 2,
                        attributes: vec![KeyValue {
                            key: "http.request.method".into(),
                            value: Some(AnyValue {
                                value: Some(any_value::Value::StringValue("GET".into())),
                            }),
                        }],
                        ..Default::default()
                    }],
                    ..Default::default()
                }],
                ..Default::default()
            }],
        });
        let text = render(&mut p, Verbosity::Detailed).unwrap();
        assert!(text.contains("    Name           : GET /"), "{text}");
        assert!(text.contains("    Kind           : Server"));
        assert!(text.contains("-> http.request.method: Str(GET)"));
        let text = render(&mut p, Verbosity::Normal).unwrap();
        assert!(text.starts_with("GET / 0101"), "{text}");
    }
}
