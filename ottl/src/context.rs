//! Evaluation contexts and the paths each one exposes. A path is resolved once, at load, to a
//! [`Field`]; reading it is then a `match` and a field access on the prost message.

use std::borrow::Cow;
use std::fmt;

use opentelemetry_proto::tonic::common::v1::{InstrumentationScope, KeyValue};
use opentelemetry_proto::tonic::logs::v1::LogRecord;
use opentelemetry_proto::tonic::metrics::v1::number_data_point;
use opentelemetry_proto::tonic::metrics::v1::{
    metric, ExponentialHistogramDataPoint, HistogramDataPoint, Metric, NumberDataPoint,
    SummaryDataPoint,
};
use opentelemetry_proto::tonic::resource::v1::Resource;
use opentelemetry_proto::tonic::trace::v1::{span, Span};

use crate::error::EvalError;
use crate::value::{ListValue, MapValue, Value};

/// What a condition is evaluated against: the item whose fate it decides, with access to the
/// levels above it (resource and scope, and the span of a span event or the metric of a data
/// point).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum ContextKind {
    Resource,
    Scope,
    Span,
    SpanEvent,
    Metric,
    DataPoint,
    Log,
}

impl ContextKind {
    pub const ALL: [ContextKind; 7] = [
        ContextKind::Resource,
        ContextKind::Scope,
        ContextKind::Span,
        ContextKind::SpanEvent,
        ContextKind::Metric,
        ContextKind::DataPoint,
        ContextKind::Log,
    ];

    /// The path prefix naming this context (`span.name`).
    pub fn name(self) -> &'static str {
        match self {
            ContextKind::Resource => "resource",
            ContextKind::Scope => "scope",
            ContextKind::Span => "span",
            ContextKind::SpanEvent => "spanevent",
            ContextKind::Metric => "metric",
            ContextKind::DataPoint => "datapoint",
            ContextKind::Log => "log",
        }
    }

    /// Accepts the prefixes users write, including the legacy `instrumentation_scope`.
    pub fn from_name(s: &str) -> Option<ContextKind> {
        Some(match s {
            "resource" => ContextKind::Resource,
            "scope" | "instrumentation_scope" => ContextKind::Scope,
            "span" => ContextKind::Span,
            "spanevent" => ContextKind::SpanEvent,
            "metric" => ContextKind::Metric,
            "datapoint" => ContextKind::DataPoint,
            "log" => ContextKind::Log,
            _ => return None,
        })
    }

    /// This context and the ones above it, whose paths a condition in this context may read.
    pub fn visible(self) -> &'static [ContextKind] {
        use ContextKind::*;
        match self {
            Resource => &[Resource],
            Scope => &[Resource, Scope],
            Span => &[Resource, Scope, Span],
            SpanEvent => &[Resource, Scope, Span, SpanEvent],
            Metric => &[Resource, Scope, Metric],
            DataPoint => &[Resource, Scope, Metric, DataPoint],
            Log => &[Resource, Scope, Log],
        }
    }

    /// How deep in the OTLP tree the context sits (resource = 0); deeper contexts win when a
    /// condition's context is inferred from its paths.
    pub fn depth(self) -> u8 {
        match self {
            ContextKind::Resource => 0,
            ContextKind::Scope => 1,
            ContextKind::Span | ContextKind::Metric | ContextKind::Log => 2,
            ContextKind::SpanEvent | ContextKind::DataPoint => 3,
        }
    }
}

impl fmt::Display for ContextKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// One data point of any metric type.
#[derive(Debug, Clone, Copy)]
pub enum DataPoint<'a> {
    Number(&'a NumberDataPoint),
    Histogram(&'a HistogramDataPoint),
    ExponentialHistogram(&'a ExponentialHistogramDataPoint),
    Summary(&'a SummaryDataPoint),
}

/// The telemetry a condition reads. Fill the levels the condition's context needs (see
/// [`ContextKind::visible`]); a missing resource or scope reads as empty, a missing item is an
/// evaluation error.
#[derive(Debug, Clone, Copy, Default)]
pub struct EvalContext<'a> {
    pub resource: Option<&'a Resource>,
    pub resource_schema_url: &'a str,
    pub scope: Option<&'a InstrumentationScope>,
    pub scope_schema_url: &'a str,
    pub span: Option<&'a Span>,
    pub span_event: Option<&'a span::Event>,
    pub metric: Option<&'a Metric>,
    pub data_point: Option<DataPoint<'a>>,
    pub log: Option<&'a LogRecord>,
}

impl<'a> EvalContext<'a> {
    pub fn new(resource: Option<&'a Resource>, resource_schema_url: &'a str) -> Self {
        EvalContext {
            resource,
            resource_schema_url,
            ..Default::default()
        }
    }

    pub fn with_scope(self, scope: Option<&'a InstrumentationScope>, schema_url: &'a str) -> Self {
        EvalContext {
            scope,
            scope_schema_url: schema_url,
            ..self
        }
    }

    pub fn with_span(self, span: &'a Span) -> Self {
        EvalContext {
            span: Some(span),
            ..self
        }
    }

    pub fn with_span_event(self, event: &'a span::Event) -> Self {
        EvalContext {
            span_event: Some(event),
            ..self
        }
    }

    pub fn with_metric(self, metric: &'a Metric) -> Self {
        EvalContext {
            metric: Some(metric),
            ..self
        }
    }

    pub fn with_data_point(self, dp: DataPoint<'a>) -> Self {
        EvalContext {
            data_point: Some(dp),
            ..self
        }
    }

    pub fn with_log(self, log: &'a LogRecord) -> Self {
        EvalContext {
            log: Some(log),
            ..self
        }
    }

    pub(crate) fn span(&self) -> Result<&'a Span, EvalError> {
        self.span
            .ok_or_else(|| EvalError::new("span path evaluated without a span"))
    }

    fn event(&self) -> Result<&'a span::Event, EvalError> {
        self.span_event
            .ok_or_else(|| EvalError::new("span event path evaluated without a span event"))
    }

    fn metric(&self) -> Result<&'a Metric, EvalError> {
        self.metric
            .ok_or_else(|| EvalError::new("metric path evaluated without a metric"))
    }

    fn dp(&self) -> Result<DataPoint<'a>, EvalError> {
        self.data_point
            .ok_or_else(|| EvalError::new("data point path evaluated without a data point"))
    }

    fn log(&self) -> Result<&'a LogRecord, EvalError> {
        self.log
            .ok_or_else(|| EvalError::new("log path evaluated without a log record"))
    }
}

/// A resolved path (without its trailing `[...]` keys).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Field {
    ResourceAttrs,
    ResourceDropped,
    ResourceSchemaUrl,
    ScopeName,
    ScopeVersion,
    ScopeAttrs,
    ScopeDropped,
    ScopeSchemaUrl,
    SpanTraceId,
    SpanTraceIdStr,
    SpanId,
    SpanIdStr,
    SpanParentId,
    SpanParentIdStr,
    SpanTraceState,
    SpanFlags,
    SpanName,
    SpanKind,
    SpanKindStr,
    SpanKindDeprecatedStr,
    SpanStartUnix,
    SpanEndUnix,
    SpanStart,
    SpanEnd,
    SpanAttrs,
    SpanDropped,
    SpanEvents,
    SpanDroppedEvents,
    SpanLinks,
    SpanDroppedLinks,
    SpanStatusCode,
    SpanStatusMessage,
    EventName,
    EventTimeUnix,
    EventTime,
    EventAttrs,
    EventDropped,
    MetricName,
    MetricDescription,
    MetricUnit,
    MetricType,
    MetricAggTemporality,
    MetricIsMonotonic,
    MetricDataPoints,
    MetricMetadata,
    DpAttrs,
    DpStartUnix,
    DpTimeUnix,
    DpStart,
    DpTime,
    DpValueInt,
    DpValueDouble,
    DpFlags,
    DpExemplars,
    DpCount,
    DpSum,
    DpBucketCounts,
    DpExplicitBounds,
    DpScale,
    DpZeroCount,
    DpQuantileValues,
    LogTimeUnix,
    LogObservedUnix,
    LogTime,
    LogObserved,
    LogSeverityNumber,
    LogSeverityText,
    LogBody,
    LogBodyString,
    LogAttrs,
    LogDropped,
    LogFlags,
    LogTraceId,
    LogTraceIdStr,
    LogSpanId,
    LogSpanIdStr,
    LogEventName,
}

/// `(path after the context prefix, field, whether [..] keys may follow)`.
type FieldTable = &'static [(&'static str, Field, bool)];

pub(crate) fn fields(kind: ContextKind) -> FieldTable {
    use Field::*;
    match kind {
        ContextKind::Resource => &[
            ("attributes", ResourceAttrs, true),
            ("dropped_attributes_count", ResourceDropped, false),
            ("schema_url", ResourceSchemaUrl, false),
        ],
        ContextKind::Scope => &[
            ("name", ScopeName, false),
            ("version", ScopeVersion, false),
            ("attributes", ScopeAttrs, true),
            ("dropped_attributes_count", ScopeDropped, false),
            ("schema_url", ScopeSchemaUrl, false),
        ],
        ContextKind::Span => &[
            ("trace_id", SpanTraceId, false),
            ("trace_id.string", SpanTraceIdStr, false),
            ("span_id", SpanId, false),
            ("span_id.string", SpanIdStr, false),
            ("parent_span_id", SpanParentId, false),
            ("parent_span_id.string", SpanParentIdStr, false),
            ("trace_state", SpanTraceState, true),
            ("flags", SpanFlags, false),
            ("name", SpanName, false),
            ("kind", SpanKind, false),
            ("kind.string", SpanKindStr, false),
            ("kind.deprecated_string", SpanKindDeprecatedStr, false),
            ("start_time_unix_nano", SpanStartUnix, false),
            ("end_time_unix_nano", SpanEndUnix, false),
            ("start_time", SpanStart, false),
            ("end_time", SpanEnd, false),
            ("attributes", SpanAttrs, true),
            ("dropped_attributes_count", SpanDropped, false),
            ("events", SpanEvents, false),
            ("dropped_events_count", SpanDroppedEvents, false),
            ("links", SpanLinks, false),
            ("dropped_links_count", SpanDroppedLinks, false),
            ("status.code", SpanStatusCode, false),
            ("status.message", SpanStatusMessage, false),
        ],
        ContextKind::SpanEvent => &[
            ("name", EventName, false),
            ("time_unix_nano", EventTimeUnix, false),
            ("time", EventTime, false),
            ("attributes", EventAttrs, true),
            ("dropped_attributes_count", EventDropped, false),
        ],
        ContextKind::Metric => &[
            ("name", MetricName, false),
            ("description", MetricDescription, false),
            ("unit", MetricUnit, false),
            ("type", MetricType, false),
            ("aggregation_temporality", MetricAggTemporality, false),
            ("is_monotonic", MetricIsMonotonic, false),
            ("data_points", MetricDataPoints, false),
            ("metadata", MetricMetadata, true),
        ],
        ContextKind::DataPoint => &[
            ("attributes", DpAttrs, true),
            ("start_time_unix_nano", DpStartUnix, false),
            ("time_unix_nano", DpTimeUnix, false),
            ("start_time", DpStart, false),
            ("time", DpTime, false),
            ("value_int", DpValueInt, false),
            ("value_double", DpValueDouble, false),
            ("flags", DpFlags, false),
            ("exemplars", DpExemplars, false),
            ("count", DpCount, false),
            ("sum", DpSum, false),
            ("bucket_counts", DpBucketCounts, true),
            ("explicit_bounds", DpExplicitBounds, true),
            ("scale", DpScale, false),
            ("zero_count", DpZeroCount, false),
            ("quantile_values", DpQuantileValues, false),
        ],
        ContextKind::Log => &[
            ("time_unix_nano", LogTimeUnix, false),
            ("observed_time_unix_nano", LogObservedUnix, false),
            ("time", LogTime, false),
            ("observed_time", LogObserved, false),
            ("severity_number", LogSeverityNumber, false),
            ("severity_text", LogSeverityText, false),
            ("body", LogBody, true),
            ("body.string", LogBodyString, false),
            ("attributes", LogAttrs, true),
            ("dropped_attributes_count", LogDropped, false),
            ("flags", LogFlags, false),
            ("trace_id", LogTraceId, false),
            ("trace_id.string", LogTraceIdStr, false),
            ("span_id", LogSpanId, false),
            ("span_id.string", LogSpanIdStr, false),
            ("event_name", LogEventName, false),
        ],
    }
}

fn int(v: u64) -> Value<'static> {
    // Timestamps and counters fit in i64 for any realistic data; saturate instead of wrapping.
    Value::Int(i64::try_from(v).unwrap_or(i64::MAX))
}

fn time(v: u64) -> Value<'static> {
    Value::Time(i64::try_from(v).unwrap_or(i64::MAX))
}

fn bytes(b: &[u8]) -> Value<'_> {
    Value::Bytes(Cow::Borrowed(b))
}

fn hex_str(b: &[u8]) -> Value<'static> {
    Value::Str(Cow::Owned(hex::encode(b)))
}

fn span_kind_string(kind: i32) -> &'static str {
    match kind {
        0 => "Unspecified",
        1 => "Internal",
        2 => "Server",
        3 => "Client",
        4 => "Producer",
        5 => "Consumer",
        _ => "",
    }
}

fn span_kind_enum_name(kind: i32) -> &'static str {
    match kind {
        0 => "SPAN_KIND_UNSPECIFIED",
        1 => "SPAN_KIND_INTERNAL",
        2 => "SPAN_KIND_SERVER",
        3 => "SPAN_KIND_CLIENT",
        4 => "SPAN_KIND_PRODUCER",
        5 => "SPAN_KIND_CONSUMER",
        _ => "",
    }
}

impl Field {
    /// The attribute list behind an attributes-like field, for the allocation-free
    /// `attributes["key"]` lookup.
    pub(crate) fn attrs<'a>(
        self,
        cx: &EvalContext<'a>,
    ) -> Result<Option<&'a [KeyValue]>, EvalError> {
        Ok(Some(match self {
            Field::ResourceAttrs => cx.resource.map_or(&[][..], |r| &r.attributes),
            Field::ScopeAttrs => cx.scope.map_or(&[][..], |s| &s.attributes),
            Field::SpanAttrs => &cx.span()?.attributes,
            Field::EventAttrs => &cx.event()?.attributes,
            Field::MetricMetadata => &cx.metric()?.metadata,
            Field::DpAttrs => match cx.dp()? {
                DataPoint::Number(d) => &d.attributes,
                DataPoint::Histogram(d) => &d.attributes,
                DataPoint::ExponentialHistogram(d) => &d.attributes,
                DataPoint::Summary(d) => &d.attributes,
            },
            Field::LogAttrs => &cx.log()?.attributes,
            _ => return Ok(None),
        }))
    }

    pub(crate) fn get<'a>(self, cx: &EvalContext<'a>) -> Result<Value<'a>, EvalError> {
        use Field::*;
        if let Some(a) = self.attrs(cx)? {
            return Ok(Value::Map(MapValue::Attrs(a)));
        }
        Ok(match self {
            ResourceDropped => int(cx.resource.map_or(0, |r| r.dropped_attributes_count) as u64),
            ResourceSchemaUrl => Value::str(cx.resource_schema_url),
            ScopeName => Value::str(cx.scope.map_or("", |s| &s.name)),
            ScopeVersion => Value::str(cx.scope.map_or("", |s| &s.version)),
            ScopeDropped => int(cx.scope.map_or(0, |s| s.dropped_attributes_count) as u64),
            ScopeSchemaUrl => Value::str(cx.scope_schema_url),
            SpanTraceId => bytes(&cx.span()?.trace_id),
            SpanTraceIdStr => hex_str(&cx.span()?.trace_id),
            SpanId => bytes(&cx.span()?.span_id),
            SpanIdStr => hex_str(&cx.span()?.span_id),
            SpanParentId => bytes(&cx.span()?.parent_span_id),
            SpanParentIdStr => hex_str(&cx.span()?.parent_span_id),
            SpanTraceState => Value::str(&cx.span()?.trace_state),
            SpanFlags => int(cx.span()?.flags as u64),
            SpanName => Value::str(&cx.span()?.name),
            SpanKind => Value::Int(cx.span()?.kind as i64),
            SpanKindStr => Value::str(span_kind_string(cx.span()?.kind)),
            SpanKindDeprecatedStr => Value::str(span_kind_enum_name(cx.span()?.kind)),
            SpanStartUnix => int(cx.span()?.start_time_unix_nano),
            SpanEndUnix => int(cx.span()?.end_time_unix_nano),
            SpanStart => time(cx.span()?.start_time_unix_nano),
            SpanEnd => time(cx.span()?.end_time_unix_nano),
            SpanDropped => int(cx.span()?.dropped_attributes_count as u64),
            SpanEvents => Value::List(ListValue::Opaque {
                len: cx.span()?.events.len(),
                what: "span events",
            }),
            SpanDroppedEvents => int(cx.span()?.dropped_events_count as u64),
            SpanLinks => Value::List(ListValue::Opaque {
                len: cx.span()?.links.len(),
                what: "span links",
            }),
            SpanDroppedLinks => int(cx.span()?.dropped_links_count as u64),
            SpanStatusCode => Value::Int(cx.span()?.status.as_ref().map_or(0, |s| s.code) as i64),
            SpanStatusMessage => Value::str(
                cx.span()?
                    .status
                    .as_ref()
                    .map_or("", |s| s.message.as_str()),
            ),
            EventName => Value::str(&cx.event()?.name),
            EventTimeUnix => int(cx.event()?.time_unix_nano),
            EventTime => time(cx.event()?.time_unix_nano),
            EventDropped => int(cx.event()?.dropped_attributes_count as u64),
            MetricName => Value::str(&cx.metric()?.name),
            MetricDescription => Value::str(&cx.metric()?.description),
            MetricUnit => Value::str(&cx.metric()?.unit),
            MetricType => Value::Int(match &cx.metric()?.data {
                None => 0,
                Some(metric::Data::Gauge(_)) => 1,
                Some(metric::Data::Sum(_)) => 2,
                Some(metric::Data::Histogram(_)) => 3,
                Some(metric::Data::ExponentialHistogram(_)) => 4,
                Some(metric::Data::Summary(_)) => 5,
            }),
            MetricAggTemporality => match &cx.metric()?.data {
                Some(metric::Data::Sum(s)) => Value::Int(s.aggregation_temporality as i64),
                Some(metric::Data::Histogram(h)) => Value::Int(h.aggregation_temporality as i64),
                Some(metric::Data::ExponentialHistogram(h)) => {
                    Value::Int(h.aggregation_temporality as i64)
                }
                _ => Value::Nil,
            },
            MetricIsMonotonic => match &cx.metric()?.data {
                Some(metric::Data::Sum(s)) => Value::Bool(s.is_monotonic),
                _ => Value::Nil,
            },
            MetricDataPoints => Value::List(ListValue::Opaque {
                len: data_point_count(cx.metric()?),
                what: "data points",
            }),
            DpStartUnix | DpStart | DpTimeUnix | DpTime => {
                let (start, t) = match cx.dp()? {
                    DataPoint::Number(d) => (d.start_time_unix_nano, d.time_unix_nano),
                    DataPoint::Histogram(d) => (d.start_time_unix_nano, d.time_unix_nano),
                    DataPoint::ExponentialHistogram(d) => {
                        (d.start_time_unix_nano, d.time_unix_nano)
                    }
                    DataPoint::Summary(d) => (d.start_time_unix_nano, d.time_unix_nano),
                };
                match self {
                    DpStartUnix => int(start),
                    DpStart => time(start),
                    DpTimeUnix => int(t),
                    _ => time(t),
                }
            }
            // Like the reference: the "other" representation of a number point reads as 0.
            DpValueInt => match cx.dp()? {
                DataPoint::Number(d) => Value::Int(match d.value {
                    Some(number_data_point::Value::AsInt(i)) => i,
                    _ => 0,
                }),
                _ => Value::Nil,
            },
            DpValueDouble => match cx.dp()? {
                DataPoint::Number(d) => Value::Double(match d.value {
                    Some(number_data_point::Value::AsDouble(v)) => v,
                    _ => 0.0,
                }),
                _ => Value::Nil,
            },
            DpFlags => int(match cx.dp()? {
                DataPoint::Number(d) => d.flags,
                DataPoint::Histogram(d) => d.flags,
                DataPoint::ExponentialHistogram(d) => d.flags,
                DataPoint::Summary(d) => d.flags,
            } as u64),
            DpExemplars => Value::List(ListValue::Opaque {
                len: match cx.dp()? {
                    DataPoint::Number(d) => d.exemplars.len(),
                    DataPoint::Histogram(d) => d.exemplars.len(),
                    DataPoint::ExponentialHistogram(d) => d.exemplars.len(),
                    DataPoint::Summary(_) => 0,
                },
                what: "exemplars",
            }),
            DpCount => match cx.dp()? {
                DataPoint::Number(_) => Value::Nil,
                DataPoint::Histogram(d) => int(d.count),
                DataPoint::ExponentialHistogram(d) => int(d.count),
                DataPoint::Summary(d) => int(d.count),
            },
            DpSum => match cx.dp()? {
                DataPoint::Number(_) => Value::Nil,
                DataPoint::Histogram(d) => Value::Double(d.sum.unwrap_or(0.0)),
                DataPoint::ExponentialHistogram(d) => Value::Double(d.sum.unwrap_or(0.0)),
                DataPoint::Summary(d) => Value::Double(d.sum),
            },
            DpBucketCounts => match cx.dp()? {
                DataPoint::Histogram(d) => Value::List(ListValue::U64(&d.bucket_counts)),
                _ => Value::Nil,
            },
            DpExplicitBounds => match cx.dp()? {
                DataPoint::Histogram(d) => Value::List(ListValue::F64(&d.explicit_bounds)),
                _ => Value::Nil,
            },
            DpScale => match cx.dp()? {
                DataPoint::ExponentialHistogram(d) => Value::Int(d.scale as i64),
                _ => Value::Nil,
            },
            DpZeroCount => match cx.dp()? {
                DataPoint::ExponentialHistogram(d) => int(d.zero_count),
                _ => Value::Nil,
            },
            DpQuantileValues => match cx.dp()? {
                DataPoint::Summary(d) => Value::List(ListValue::Opaque {
                    len: d.quantile_values.len(),
                    what: "quantile values",
                }),
                _ => Value::Nil,
            },
            LogTimeUnix => int(cx.log()?.time_unix_nano),
            LogObservedUnix => int(cx.log()?.observed_time_unix_nano),
            LogTime => time(cx.log()?.time_unix_nano),
            LogObserved => time(cx.log()?.observed_time_unix_nano),
            LogSeverityNumber => Value::Int(cx.log()?.severity_number as i64),
            LogSeverityText => Value::str(&cx.log()?.severity_text),
            LogBody => Value::from_opt_any(cx.log()?.body.as_ref()),
            LogBodyString => match Value::from_opt_any(cx.log()?.body.as_ref()).into_text() {
                Some(s) => Value::Str(s),
                None => Value::str(""),
            },
            LogDropped => int(cx.log()?.dropped_attributes_count as u64),
            LogFlags => int(cx.log()?.flags as u64),
            LogTraceId => bytes(&cx.log()?.trace_id),
            LogTraceIdStr => hex_str(&cx.log()?.trace_id),
            LogSpanId => bytes(&cx.log()?.span_id),
            LogSpanIdStr => hex_str(&cx.log()?.span_id),
            LogEventName => Value::str(&cx.log()?.event_name),
            ResourceAttrs | ScopeAttrs | SpanAttrs | EventAttrs | MetricMetadata | DpAttrs
            | LogAttrs => unreachable!("attribute fields are answered by attrs()"),
        })
    }
}

fn data_point_count(m: &Metric) -> usize {
    match &m.data {
        None => 0,
        Some(metric::Data::Gauge(g)) => g.data_points.len(),
        Some(metric::Data::Sum(s)) => s.data_points.len(),
        Some(metric::Data::Histogram(h)) => h.data_points.len(),
        Some(metric::Data::ExponentialHistogram(h)) => h.data_points.len(),
        Some(metric::Data::Summary(s)) => s.data_points.len(),
    }
}

/// The value of `key` in a W3C `tracestate` (`k1=v1,k2=v2`).
pub(crate) fn trace_state_get<'a>(state: &'a str, key: &str) -> Option<&'a str> {
    state.split(',').find_map(|member| {
        let (k, v) = member.trim().split_once('=')?;
        (k == key).then_some(v)
    })
}
