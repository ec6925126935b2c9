//! OTLP/JSON request bodies transcoded straight into the protobuf wire format.
//!
//! The serde support of `opentelemetry-proto` reads the JSON the JS SDK sends, but rejects other
//! valid OTLP/JSON: timestamps given as JSON numbers, enum names (`"SPAN_KIND_SERVER"`),
//! original `snake_case` field names, empty `AnyValue`s (`{}`). Instead of patching around it
//! (and then decoding into prost structs only to encode them again), a table of the OTLP messages drives a walk over the parsed JSON that writes
//! protobuf directly, following the protobuf JSON mapping the OTLP spec builds on: both
//! `lowerCamelCase` and original field names, 64-bit integers as strings or numbers, enums as
//! integers or names, `null` meaning "default", unknown fields ignored, trace and span ids in
//! hex. The output goes through the same validation as a protobuf body, and fields are written
//! in the order prost writes them, so an encoded request reads the same whichever way it came.

use std::fmt;

use pipeline_core::Signal;
use serde_json::{Map, Value};

/// Why a JSON body could not be transcoded; the message names the offending field.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JsonError {
    path: String,
    msg: String,
}

impl JsonError {
    fn new(msg: impl Into<String>) -> JsonError {
        JsonError {
            path: String::new(),
            msg: msg.into(),
        }
    }

    fn field(mut self, name: &str) -> JsonError {
        self.path = if self.path.is_empty() || self.path.starts_with('[') {
            format!("{name}{}", self.path)
        } else {
            format!("{name}.{}", self.path)
        };
        self
    }

    fn index(mut self, i: usize) -> JsonError {
        self.path = if self.path.is_empty() || self.path.starts_with('[') {
            format!("[{i}]{}", self.path)
        } else {
            format!("[{i}].{}", self.path)
        };
        self
    }
}

impl fmt::Display for JsonError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.path.is_empty() {
            f.write_str(&self.msg)
        } else {
            write!(f, "{}: {}", self.path, self.msg)
        }
    }
}

impl std::error::Error for JsonError {}

/// Transcodes an OTLP/JSON `Export*ServiceRequest` of `signal` into its protobuf encoding.
pub fn to_protobuf(signal: Signal, body: &[u8]) -> Result<Vec<u8>, JsonError> {
    let root: Value =
        serde_json::from_slice(body).map_err(|e| JsonError::new(format!("invalid JSON: {e}")))?;
    let obj = root
        .as_object()
        .ok_or_else(|| JsonError::new("the request must be a JSON object"))?;
    let msg = match signal {
        Signal::Traces => &TRACES_REQUEST,
        Signal::Metrics => &METRICS_REQUEST,
        Signal::Logs => &LOGS_REQUEST,
    };
    // Protobuf is usually well under half the size of the same data in JSON.
    let mut out = Vec::with_capacity(body.len() / 2);
    encode_message(msg, obj, &mut out)?;
    Ok(out)
}

#[derive(Clone, Copy)]
enum Ty {
    Msg(&'static Msg),
    Str,
    /// `bytes` in base64, as the protobuf JSON mapping has it.
    Bytes,
    /// Trace and span ids: `bytes`, but hex in OTLP/JSON.
    Id,
    Bool,
    Uint32,
    Sint32,
    Int64,
    Uint64,
    Fixed32,
    Fixed64,
    Sfixed64,
    Double,
    Enum(&'static [(&'static str, i32)]),
}

impl Ty {
    fn packable(self) -> bool {
        !matches!(self, Ty::Msg(_) | Ty::Str | Ty::Bytes | Ty::Id)
    }
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Card {
    /// Proto3 implicit presence: the default value is not written.
    Single,
    /// Explicit presence (`optional`, oneof members): written whenever given.
    Present,
    Repeated,
}

struct Field {
    num: u32,
    json: &'static str,
    proto: &'static str,
    ty: Ty,
    card: Card,
}

struct Msg {
    fields: &'static [Field],
}

const fn f(num: u32, json: &'static str, proto: &'static str, ty: Ty) -> Field {
    Field {
        num,
        json,
        proto,
        ty,
        card: Card::Single,
    }
}

const fn opt(num: u32, json: &'static str, proto: &'static str, ty: Ty) -> Field {
    Field {
        num,
        json,
        proto,
        ty,
        card: Card::Present,
    }
}

const fn rep(num: u32, json: &'static str, proto: &'static str, ty: Ty) -> Field {
    Field {
        num,
        json,
        proto,
        ty,
        card: Card::Repeated,
    }
}

// Tables list fields in prost's write order: by tag, a oneof at the place of its first tag.

static ANY_VALUE: Msg = Msg {
    fields: &[
        opt(1, "stringValue", "string_value", Ty::Str),
        opt(2, "boolValue", "bool_value", Ty::Bool),
        opt(3, "intValue", "int_value", Ty::Int64),
        opt(4, "doubleValue", "double_value", Ty::Double),
        opt(5, "arrayValue", "array_value", Ty::Msg(&ARRAY_VALUE)),
        opt(6, "kvlistValue", "kvlist_value", Ty::Msg(&KEY_VALUE_LIST)),
        opt(7, "bytesValue", "bytes_value", Ty::Bytes),
    ],
};
static ARRAY_VALUE: Msg = Msg {
    fields: &[rep(1, "values", "values", Ty::Msg(&ANY_VALUE))],
};
static KEY_VALUE_LIST: Msg = Msg {
    fields: &[rep(1, "values", "values", Ty::Msg(&KEY_VALUE))],
};
static KEY_VALUE: Msg = Msg {
    fields: &[
        f(1, "key", "key", Ty::Str),
        f(2, "value", "value", Ty::Msg(&ANY_VALUE)),
    ],
};
static SCOPE: Msg = Msg {
    fields: &[
        f(1, "name", "name", Ty::Str),
        f(2, "version", "version", Ty::Str),
        rep(3, "attributes", "attributes", Ty::Msg(&KEY_VALUE)),
        f(
            4,
            "droppedAttributesCount",
            "dropped_attributes_count",
            Ty::Uint32,
        ),
    ],
};
static ENTITY_REF: Msg = Msg {
    fields: &[
        f(1, "schemaUrl", "schema_url", Ty::Str),
        f(2, "type", "type", Ty::Str),
        rep(3, "idKeys", "id_keys", Ty::Str),
        rep(4, "descriptionKeys", "description_keys", Ty::Str),
    ],
};
static RESOURCE: Msg = Msg {
    fields: &[
        rep(1, "attributes", "attributes", Ty::Msg(&KEY_VALUE)),
        f(
            2,
            "droppedAttributesCount",
            "dropped_attributes_count",
            Ty::Uint32,
        ),
        rep(3, "entityRefs", "entity_refs", Ty::Msg(&ENTITY_REF)),
    ],
};

static SPAN_KIND: &[(&str, i32)] = &[
    ("SPAN_KIND_UNSPECIFIED", 0),
    ("SPAN_KIND_INTERNAL", 1),
    ("SPAN_KIND_SERVER", 2),
    ("SPAN_KIND_CLIENT", 3),
    ("SPAN_KIND_PRODUCER", 4),
    ("SPAN_KIND_CONSUMER", 5),
];
static STATUS_CODE: &[(&str, i32)] = &[
    ("STATUS_CODE_UNSET", 0),
    ("STATUS_CODE_OK", 1),
    ("STATUS_CODE_ERROR", 2),
];
static TEMPORALITY: &[(&str, i32)] = &[
    ("AGGREGATION_TEMPORALITY_UNSPECIFIED", 0),
    ("AGGREGATION_TEMPORALITY_DELTA", 1),
    ("AGGREGATION_TEMPORALITY_CUMULATIVE", 2),
];
static SEVERITY: &[(&str, i32)] = &[
    ("SEVERITY_NUMBER_UNSPECIFIED", 0),
    ("SEVERITY_NUMBER_TRACE", 1),
    ("SEVERITY_NUMBER_TRACE2", 2),
    ("SEVERITY_NUMBER_TRACE3", 3),
    ("SEVERITY_NUMBER_TRACE4", 4),
    ("SEVERITY_NUMBER_DEBUG", 5),
    ("SEVERITY_NUMBER_DEBUG2", 6),
    ("SEVERITY_NUMBER_DEBUG3", 7),
    ("SEVERITY_NUMBER_DEBUG4", 8),
    ("SEVERITY_NUMBER_INFO", 9),
    ("SEVERITY_NUMBER_INFO2", 10),
    ("SEVERITY_NUMBER_INFO3", 11),
    ("SEVERITY_NUMBER_INFO4", 12),
    ("SEVERITY_NUMBER_WARN", 13),
    ("SEVERITY_NUMBER_WARN2", 14),
    ("SEVERITY_NUMBER_WARN3", 15),
    ("SEVERITY_NUMBER_WARN4", 16),
    ("SEVERITY_NUMBER_ERROR", 17),
    ("SEVERITY_NUMBER_ERROR2", 18),
    ("SEVERITY_NUMBER_ERROR3", 19),
    ("SEVERITY_NUMBER_ERROR4", 20),
    ("SEVERITY_NUMBER_FATAL", 21),
    ("SEVERITY_NUMBER_FATAL2", 22),
    ("SEVERITY_NUMBER_FATAL3", 23),
    ("SEVERITY_NUMBER_FATAL4", 24),
];

static TRACES_REQUEST: Msg = Msg {
    fields: &[rep(
        1,
        "resourceSpans",
        "resource_spans",
        Ty::Msg(&RESOURCE_SPANS),
    )],
};
static RESOURCE_SPANS: Msg = Msg {
    fields: &[
        f(1, "resource", "resource", Ty::Msg(&RESOURCE)),
        rep(2, "scopeSpans", "scope_spans", Ty::Msg(&SCOPE_SPANS)),
        f(3, "schemaUrl", "schema_url", Ty::Str),
    ],
};
static SCOPE_SPANS: Msg = Msg {
    fields: &[
        f(1, "scope", "scope", Ty::Msg(&SCOPE)),
        rep(2, "spans", "spans", Ty::Msg(&SPAN)),
        f(3, "schemaUrl", "schema_url", Ty::Str),
    ],
};
static SPAN: Msg = Msg {
    fields: &[
        f(1, "traceId", "trace_id", Ty::Id),
        f(2, "spanId", "span_id", Ty::Id),
        f(3, "traceState", "trace_state", Ty::Str),
        f(4, "parentSpanId", "parent_span_id", Ty::Id),
        f(5, "name", "name", Ty::Str),
        f(6, "kind", "kind", Ty::Enum(SPAN_KIND)),
        f(7, "startTimeUnixNano", "start_time_unix_nano", Ty::Fixed64),
        f(8, "endTimeUnixNano", "end_time_unix_nano", Ty::Fixed64),
        rep(9, "attributes", "attributes", Ty::Msg(&KEY_VALUE)),
        f(
            10,
            "droppedAttributesCount",
            "dropped_attributes_count",
            Ty::Uint32,
        ),
        rep(11, "events", "events", Ty::Msg(&SPAN_EVENT)),
        f(12, "droppedEventsCount", "dropped_events_count", Ty::Uint32),
        rep(13, "links", "links", Ty::Msg(&SPAN_LINK)),
        f(14, "droppedLinksCount", "dropped_links_count", Ty::Uint32),
        f(15, "status", "status", Ty::Msg(&SPAN_STATUS)),
        f(16, "flags", "flags", Ty::Fixed32),
    ],
};
static SPAN_EVENT: Msg = Msg {
    fields: &[
        f(1, "timeUnixNano", "time_unix_nano", Ty::Fixed64),
        f(2, "name", "name", Ty::Str),
        rep(3, "attributes", "attributes", Ty::Msg(&KEY_VALUE)),
        f(
            4,
            "droppedAttributesCount",
            "dropped_attributes_count",
            Ty::Uint32,
        ),
    ],
};
static SPAN_LINK: Msg = Msg {
    fields: &[
        f(1, "traceId", "trace_id", Ty::Id),
        f(2, "spanId", "span_id", Ty::Id),
        f(3, "traceState", "trace_state", Ty::Str),
        rep(4, "attributes", "attributes", Ty::Msg(&KEY_VALUE)),
        f(
            5,
            "droppedAttributesCount",
            "dropped_attributes_count",
            Ty::Uint32,
        ),
        f(6, "flags", "flags", Ty::Fixed32),
    ],
};
static SPAN_STATUS: Msg = Msg {
    fields: &[
        f(2, "message", "message", Ty::Str),
        f(3, "code", "code", Ty::Enum(STATUS_CODE)),
    ],
};

static METRICS_REQUEST: Msg = Msg {
    fields: &[rep(
        1,
        "resourceMetrics",
        "resource_metrics",
        Ty::Msg(&RESOURCE_METRICS),
    )],
};
static RESOURCE_METRICS: Msg = Msg {
    fields: &[
        f(1, "resource", "resource", Ty::Msg(&RESOURCE)),
        rep(2, "scopeMetrics", "scope_metrics", Ty::Msg(&SCOPE_METRICS)),
        f(3, "schemaUrl", "schema_url", Ty::Str),
    ],
};
static SCOPE_METRICS: Msg = Msg {
    fields: &[
        f(1, "scope", "scope", Ty::Msg(&SCOPE)),
        rep(2, "metrics", "metrics", Ty::Msg(&METRIC)),
        f(3, "schemaUrl", "schema_url", Ty::Str),
    ],
};
static METRIC: Msg = Msg {
    fields: &[
        f(1, "name", "name", Ty::Str),
        f(2, "description", "description", Ty::Str),
        f(3, "unit", "unit", Ty::Str),
        opt(5, "gauge", "gauge", Ty::Msg(&GAUGE)),
        opt(7, "sum", "sum", Ty::Msg(&SUM)),
        opt(9, "histogram", "histogram", Ty::Msg(&HISTOGRAM)),
        opt(
            10,
            "exponentialHistogram",
            "exponential_histogram",
            Ty::Msg(&EXPONENTIAL_HISTOGRAM),
        ),
        opt(11, "summary", "summary", Ty::Msg(&SUMMARY)),
        rep(12, "metadata", "metadata", Ty::Msg(&KEY_VALUE)),
    ],
};
static GAUGE: Msg = Msg {
    fields: &[rep(1, "dataPoints", "data_points", Ty::Msg(&NUMBER_POINT))],
};
static SUM: Msg = Msg {
    fields: &[
        rep(1, "dataPoints", "data_points", Ty::Msg(&NUMBER_POINT)),
        f(
            2,
            "aggregationTemporality",
            "aggregation_temporality",
            Ty::Enum(TEMPORALITY),
        ),
        f(3, "isMonotonic", "is_monotonic", Ty::Bool),
    ],
};
static HISTOGRAM: Msg = Msg {
    fields: &[
        rep(1, "dataPoints", "data_points", Ty::Msg(&HISTOGRAM_POINT)),
        f(
            2,
            "aggregationTemporality",
            "aggregation_temporality",
            Ty::Enum(TEMPORALITY),
        ),
    ],
};
static EXPONENTIAL_HISTOGRAM: Msg = Msg {
    fields: &[
        rep(1, "dataPoints", "data_points", Ty::Msg(&EXPONENTIAL_POINT)),
        f(
            2,
            "aggregationTemporality",
            "aggregation_temporality",
            Ty::Enum(TEMPORALITY),
        ),
    ],
};
static SUMMARY: Msg = Msg {
    fields: &[rep(1, "dataPoints", "data_points", Ty::Msg(&SUMMARY_POINT))],
};
static NUMBER_POINT: Msg = Msg {
    fields: &[
        f(2, "startTimeUnixNano", "start_time_unix_nano", Ty::Fixed64),
        f(3, "timeUnixNano", "time_unix_nano", Ty::Fixed64),
        opt(4, "asDouble", "as_double", Ty::Double),
        opt(6, "asInt", "as_int", Ty::Sfixed64),
        rep(5, "exemplars", "exemplars", Ty::Msg(&EXEMPLAR)),
        rep(7, "attributes", "attributes", Ty::Msg(&KEY_VALUE)),
        f(8, "flags", "flags", Ty::Uint32),
    ],
};
static HISTOGRAM_POINT: Msg = Msg {
    fields: &[
        f(2, "startTimeUnixNano", "start_time_unix_nano", Ty::Fixed64),
        f(3, "timeUnixNano", "time_unix_nano", Ty::Fixed64),
        f(4, "count", "count", Ty::Fixed64),
        opt(5, "sum", "sum", Ty::Double),
        rep(6, "bucketCounts", "bucket_counts", Ty::Fixed64),
        rep(7, "explicitBounds", "explicit_bounds", Ty::Double),
        rep(8, "exemplars", "exemplars", Ty::Msg(&EXEMPLAR)),
        rep(9, "attributes", "attributes", Ty::Msg(&KEY_VALUE)),
        f(10, "flags", "flags", Ty::Uint32),
        opt(11, "min", "min", Ty::Double),
        opt(12, "max", "max", Ty::Double),
    ],
};
static EXPONENTIAL_POINT: Msg = Msg {
    fields: &[
        rep(1, "attributes", "attributes", Ty::Msg(&KEY_VALUE)),
        f(2, "startTimeUnixNano", "start_time_unix_nano", Ty::Fixed64),
        f(3, "timeUnixNano", "time_unix_nano", Ty::Fixed64),
        f(4, "count", "count", Ty::Fixed64),
        opt(5, "sum", "sum", Ty::Double),
        f(6, "scale", "scale", Ty::Sint32),
        f(7, "zeroCount", "zero_count", Ty::Fixed64),
        f(8, "positive", "positive", Ty::Msg(&BUCKETS)),
        f(9, "negative", "negative", Ty::Msg(&BUCKETS)),
        f(10, "flags", "flags", Ty::Uint32),
        rep(11, "exemplars", "exemplars", Ty::Msg(&EXEMPLAR)),
        opt(12, "min", "min", Ty::Double),
        opt(13, "max", "max", Ty::Double),
        f(14, "zeroThreshold", "zero_threshold", Ty::Double),
    ],
};
static BUCKETS: Msg = Msg {
    fields: &[
        f(1, "offset", "offset", Ty::Sint32),
        rep(2, "bucketCounts", "bucket_counts", Ty::Uint64),
    ],
};
static SUMMARY_POINT: Msg = Msg {
    fields: &[
        f(2, "startTimeUnixNano", "start_time_unix_nano", Ty::Fixed64),
        f(3, "timeUnixNano", "time_unix_nano", Ty::Fixed64),
        f(4, "count", "count", Ty::Fixed64),
        f(5, "sum", "sum", Ty::Double),
        rep(6, "quantileValues", "quantile_values", Ty::Msg(&QUANTILE)),
        rep(7, "attributes", "attributes", Ty::Msg(&KEY_VALUE)),
        f(8, "flags", "flags", Ty::Uint32),
    ],
};
static QUANTILE: Msg = Msg {
    fields: &[
        f(1, "quantile", "quantile", Ty::Double),
        f(2, "value", "value", Ty::Double),
    ],
};
static EXEMPLAR: Msg = Msg {
    fields: &[
        f(2, "timeUnixNano", "time_unix_nano", Ty::Fixed64),
        opt(3, "asDouble", "as_double", Ty::Double),
        opt(6, "asInt", "as_int", Ty::Sfixed64),
        f(4, "spanId", "span_id", Ty::Id),
        f(5, "traceId", "trace_id", Ty::Id),
        rep(
            7,
            "filteredAttributes",
            "filtered_attributes",
            Ty::Msg(&KEY_VALUE),
        ),
    ],
};

static LOGS_REQUEST: Msg = Msg {
    fields: &[rep(
        1,
        "resourceLogs",
        "resource_logs",
        Ty::Msg(&RESOURCE_LOGS),
    )],
};
static RESOURCE_LOGS: Msg = Msg {
    fields: &[
        f(1, "resource", "resource", Ty::Msg(&RESOURCE)),
        rep(2, "scopeLogs", "scope_logs", Ty::Msg(&SCOPE_LOGS)),
        f(3, "schemaUrl", "schema_url", Ty::Str),
    ],
};
static SCOPE_LOGS: Msg = Msg {
    fields: &[
        f(1, "scope", "scope", Ty::Msg(&SCOPE)),
        rep(2, "logRecords", "log_records", Ty::Msg(&LOG_RECORD)),
        f(3, "schemaUrl", "schema_url", Ty::Str),
    ],
};
static LOG_RECORD: Msg = Msg {
    fields: &[
        f(1, "timeUnixNano", "time_unix_nano", Ty::Fixed64),
        f(2, "severityNumber", "severity_number", Ty::Enum(SEVERITY)),
        f(3, "severityText", "severity_text", Ty::Str),
        f(5, "body", "body", Ty::Msg(&ANY_VALUE)),
        rep(6, "attributes", "attributes", Ty::Msg(&KEY_VALUE)),
        f(
            7,
            "droppedAttributesCount",
            "dropped_attributes_count",
            Ty::Uint32,
        ),
        f(8, "flags", "flags", Ty::Fixed32),
        f(9, "traceId", "trace_id", Ty::Id),
        f(10, "spanId", "span_id", Ty::Id),
        f(
            11,
            "observedTimeUnixNano",
            "observed_time_unix_nano",
            Ty::Fixed64,
        ),
        f(12, "eventName", "event_name", Ty::Str),
    ],
};

fn encode_message(msg: &Msg, obj: &Map<String, Value>, out: &mut Vec<u8>) -> Result<(), JsonError> {
    for field in msg.fields {
        let value = obj.get(field.json).or_else(|| {
            if field.proto == field.json {
                None
            } else {
                obj.get(field.proto)
            }
        });
        match value {
            None | Some(Value::Null) => {}
            Some(v) => encode_field(field, v, out).map_err(|e| e.field(field.json))?,
        }
    }
    Ok(())
}

fn encode_field(field: &Field, v: &Value, out: &mut Vec<u8>) -> Result<(), JsonError> {
    if field.card != Card::Repeated {
        return encode_one(field, v, out, field.card == Card::Present);
    }
    let items = v
        .as_array()
        .ok_or_else(|| JsonError::new(format!("expected an array, found {}", kind(v))))?;
    if items.is_empty() {
        return Ok(());
    }
    if field.ty.packable() {
        put_tag(out, field.num, WT_LEN);
        nested(out, |out| {
            for (i, item) in items.iter().enumerate() {
                put_scalar(field.ty, item, out).map_err(|e| e.index(i))?;
            }
            Ok(())
        })
    } else {
        for (i, item) in items.iter().enumerate() {
            encode_one(field, item, out, true).map_err(|e| e.index(i))?;
        }
        Ok(())
    }
}

/// One value of a field. `always` writes it even when it equals the default (explicit presence
/// and repeated elements).
fn encode_one(field: &Field, v: &Value, out: &mut Vec<u8>, always: bool) -> Result<(), JsonError> {
    match field.ty {
        Ty::Msg(m) => {
            let obj = v
                .as_object()
                .ok_or_else(|| JsonError::new(format!("expected an object, found {}", kind(v))))?;
            put_tag(out, field.num, WT_LEN);
            nested(out, |out| encode_message(m, obj, out))
        }
        Ty::Str => {
            let s = as_str(v)?;
            if always || !s.is_empty() {
                put_tag(out, field.num, WT_LEN);
                put_bytes(out, s.as_bytes());
            }
            Ok(())
        }
        Ty::Id => {
            let bytes = hex_decode(as_str(v)?)?;
            if always || !bytes.is_empty() {
                put_tag(out, field.num, WT_LEN);
                put_bytes(out, &bytes);
            }
            Ok(())
        }
        Ty::Bytes => {
            let bytes = base64_decode(as_str(v)?)?;
            if always || !bytes.is_empty() {
                put_tag(out, field.num, WT_LEN);
                put_bytes(out, &bytes);
            }
            Ok(())
        }
        ty => {
            // Encoding first lets one check decide "is it the default?" for every scalar type.
            let mut scratch = [0u8; 10];
            let mut buf = ScratchBuf::new(&mut scratch);
            let wt = put_scalar_into(ty, v, &mut buf)?;
            let bytes = buf.filled();
            if always || !is_default(ty, bytes) {
                put_tag(out, field.num, wt);
                out.extend_from_slice(bytes);
            }
            Ok(())
        }
    }
}

/// Proto3 leaves out a scalar equal to its default. Every encoding of a zero integer or
/// `false` is all zero bytes; doubles compare numerically, as prost does, so `-0.0` is left out
/// too.
fn is_default(ty: Ty, bytes: &[u8]) -> bool {
    match ty {
        Ty::Double => {
            let mut b = [0u8; 8];
            b.copy_from_slice(bytes);
            f64::from_le_bytes(b) == 0.0
        }
        _ => bytes.iter().all(|&b| b == 0),
    }
}

const WT_VARINT: u8 = 0;
const WT_I64: u8 = 1;
const WT_LEN: u8 = 2;
const WT_I32: u8 = 5;

/// A fixed buffer big enough for any one scalar.
struct ScratchBuf<'a> {
    buf: &'a mut [u8; 10],
    len: usize,
}

impl<'a> ScratchBuf<'a> {
    fn new(buf: &'a mut [u8; 10]) -> Self {
        ScratchBuf { buf, len: 0 }
    }
    fn push(&mut self, b: u8) {
        self.buf[self.len] = b;
        self.len += 1;
    }
    fn extend(&mut self, bytes: &[u8]) {
        self.buf[self.len..self.len + bytes.len()].copy_from_slice(bytes);
        self.len += bytes.len();
    }
    fn filled(&self) -> &[u8] {
        &self.buf[..self.len]
    }
}

fn put_scalar(ty: Ty, v: &Value, out: &mut Vec<u8>) -> Result<(), JsonError> {
    let mut scratch = [0u8; 10];
    let mut buf = ScratchBuf::new(&mut scratch);
    put_scalar_into(ty, v, &mut buf)?;
    out.extend_from_slice(buf.filled());
    Ok(())
}

/// Writes one scalar value (without tag) and returns its wire type.
fn put_scalar_into(ty: Ty, v: &Value, out: &mut ScratchBuf<'_>) -> Result<u8, JsonError> {
    let varint = |out: &mut ScratchBuf<'_>, mut n: u64| {
        while n >= 0x80 {
            out.push((n as u8) | 0x80);
            n >>= 7;
        }
        out.push(n as u8);
    };
    Ok(match ty {
        Ty::Bool => {
            let b = v.as_bool().ok_or_else(|| {
                JsonError::new(format!("expected true or false, found {}", kind(v)))
            })?;
            out.push(u8::from(b));
            WT_VARINT
        }
        Ty::Enum(names) => {
            let n = match v {
                Value::String(s) => match names.iter().find(|(name, _)| name == s) {
                    Some((_, n)) => i64::from(*n),
                    None => int_in(v, i64::from(i32::MIN), i64::from(i32::MAX))
                        .map_err(|_| JsonError::new(format!("unknown enum value {s:?}")))?,
                },
                _ => int_in(v, i64::from(i32::MIN), i64::from(i32::MAX))?,
            };
            varint(out, n as u64);
            WT_VARINT
        }
        Ty::Uint32 => {
            varint(out, uint_in(v, u64::from(u32::MAX))?);
            WT_VARINT
        }
        Ty::Sint32 => {
            let n = int_in(v, i64::from(i32::MIN), i64::from(i32::MAX))? as i32;
            varint(out, u64::from(((n << 1) ^ (n >> 31)) as u32));
            WT_VARINT
        }
        Ty::Int64 => {
            varint(out, int_in(v, i64::MIN, i64::MAX)? as u64);
            WT_VARINT
        }
        Ty::Uint64 => {
            varint(out, uint_in(v, u64::MAX)?);
            WT_VARINT
        }
        Ty::Fixed32 => {
            out.extend(&(uint_in(v, u64::from(u32::MAX))? as u32).to_le_bytes());
            WT_I32
        }
        Ty::Fixed64 => {
            out.extend(&uint_in(v, u64::MAX)?.to_le_bytes());
            WT_I64
        }
        Ty::Sfixed64 => {
            out.extend(&int_in(v, i64::MIN, i64::MAX)?.to_le_bytes());
            WT_I64
        }
        Ty::Double => {
            out.extend(&double(v)?.to_le_bytes());
            WT_I64
        }
        Ty::Msg(_) | Ty::Str | Ty::Bytes | Ty::Id => {
            return Err(JsonError::new("internal: not a scalar type"));
        }
    })
}

fn kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

fn as_str(v: &Value) -> Result<&str, JsonError> {
    v.as_str()
        .ok_or_else(|| JsonError::new(format!("expected a string, found {}", kind(v))))
}

/// An integral float (`1e3`, `5.0`) is accepted as the protobuf JSON mapping allows.
fn integral(f: f64) -> Option<f64> {
    (f.is_finite() && f.fract() == 0.0).then_some(f)
}

fn int_in(v: &Value, min: i64, max: i64) -> Result<i64, JsonError> {
    let n: Option<i128> = match v {
        Value::Number(n) => n
            .as_i64()
            .map(i128::from)
            .or_else(|| n.as_u64().map(i128::from))
            .or_else(|| n.as_f64().and_then(integral).map(|f| f as i128)),
        Value::String(s) => s.trim().parse::<i128>().ok().or_else(|| {
            s.trim()
                .parse::<f64>()
                .ok()
                .and_then(integral)
                .map(|f| f as i128)
        }),
        _ => {
            return Err(JsonError::new(format!(
                "expected an integer, found {}",
                kind(v)
            )))
        }
    };
    let n = n.ok_or_else(|| JsonError::new(format!("invalid integer {v}")))?;
    if n < i128::from(min) || n > i128::from(max) {
        return Err(JsonError::new(format!("integer {v} is out of range")));
    }
    Ok(n as i64)
}

fn uint_in(v: &Value, max: u64) -> Result<u64, JsonError> {
    let n = int_in_u(v)?;
    if n > u128::from(max) {
        return Err(JsonError::new(format!("integer {v} is out of range")));
    }
    Ok(n as u64)
}

fn int_in_u(v: &Value) -> Result<u128, JsonError> {
    let n: Option<i128> = match v {
        Value::Number(n) => n
            .as_u64()
            .map(i128::from)
            .or_else(|| n.as_i64().map(i128::from))
            .or_else(|| n.as_f64().and_then(integral).map(|f| f as i128)),
        Value::String(s) => s.trim().parse::<i128>().ok().or_else(|| {
            s.trim()
                .parse::<f64>()
                .ok()
                .and_then(integral)
                .map(|f| f as i128)
        }),
        _ => {
            return Err(JsonError::new(format!(
                "expected an integer, found {}",
                kind(v)
            )))
        }
    };
    let n = n.ok_or_else(|| JsonError::new(format!("invalid integer {v}")))?;
    u128::try_from(n).map_err(|_| JsonError::new(format!("integer {v} is negative")))
}

fn double(v: &Value) -> Result<f64, JsonError> {
    match v {
        Value::Number(n) => n
            .as_f64()
            .ok_or_else(|| JsonError::new(format!("invalid number {v}"))),
        Value::String(s) => match s.as_str() {
            "NaN" => Ok(f64::NAN),
            "Infinity" => Ok(f64::INFINITY),
            "-Infinity" => Ok(f64::NEG_INFINITY),
            other => other
                .trim()
                .parse::<f64>()
                .map_err(|_| JsonError::new(format!("invalid number {v}"))),
        },
        _ => Err(JsonError::new(format!(
            "expected a number, found {}",
            kind(v)
        ))),
    }
}

fn hex_decode(s: &str) -> Result<Vec<u8>, JsonError> {
    fn nibble(c: u8) -> Option<u8> {
        match c {
            b'0'..=b'9' => Some(c - b'0'),
            b'a'..=b'f' => Some(c - b'a' + 10),
            b'A'..=b'F' => Some(c - b'A' + 10),
            _ => None,
        }
    }
    let b = s.as_bytes();
    if !b.len().is_multiple_of(2) {
        return Err(JsonError::new(format!(
            "id {s:?} has an odd number of hex digits"
        )));
    }
    b.chunks_exact(2)
        .map(|p| match (nibble(p[0]), nibble(p[1])) {
            (Some(h), Some(l)) => Ok(h << 4 | l),
            _ => Err(JsonError::new(format!("id {s:?} is not hex"))),
        })
        .collect()
}

/// Standard or URL-safe alphabet, padding optional: what the protobuf JSON mapping accepts.
fn base64_decode(s: &str) -> Result<Vec<u8>, JsonError> {
    let bad = || JsonError::new("invalid base64 in bytes value");
    let trimmed = s.trim_end_matches('=');
    if s.len() - trimmed.len() > 2 {
        return Err(bad());
    }
    let mut out = Vec::with_capacity(trimmed.len() * 3 / 4);
    let mut acc: u32 = 0;
    let mut bits = 0u32;
    for c in trimmed.bytes() {
        let v = match c {
            b'A'..=b'Z' => c - b'A',
            b'a'..=b'z' => c - b'a' + 26,
            b'0'..=b'9' => c - b'0' + 52,
            b'+' | b'-' => 62,
            b'/' | b'_' => 63,
            _ => return Err(bad()),
        };
        acc = (acc << 6) | u32::from(v);
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push((acc >> bits) as u8);
            acc &= (1 << bits) - 1;
        }
    }
    // One leftover character carries only 6 bits: not a whole byte.
    if bits >= 6 {
        return Err(bad());
    }
    Ok(out)
}

fn put_varint(out: &mut Vec<u8>, mut n: u64) {
    while n >= 0x80 {
        out.push((n as u8) | 0x80);
        n >>= 7;
    }
    out.push(n as u8);
}

fn put_tag(out: &mut Vec<u8>, num: u32, wire_type: u8) {
    put_varint(out, (u64::from(num) << 3) | u64::from(wire_type));
}

fn put_bytes(out: &mut Vec<u8>, b: &[u8]) {
    put_varint(out, b.len() as u64);
    out.extend_from_slice(b);
}

/// Writes a length-delimited body produced by `write`. One byte is reserved for the length; the
/// body is shifted only when it turns out to need a longer length prefix (≥ 128 bytes), which
/// keeps small messages (attributes, values) free of any copy.
fn nested(
    out: &mut Vec<u8>,
    write: impl FnOnce(&mut Vec<u8>) -> Result<(), JsonError>,
) -> Result<(), JsonError> {
    let len_at = out.len();
    out.push(0);
    let start = out.len();
    write(out)?;
    let len = out.len() - start;
    if len < 0x80 {
        out[len_at] = len as u8;
        return Ok(());
    }
    let mut prefix = Vec::with_capacity(10);
    put_varint(&mut prefix, len as u64);
    let extra = prefix.len() - 1;
    out.resize(out.len() + extra, 0);
    out.copy_within(start..start + len, start + extra);
    out[len_at..len_at + prefix.len()].copy_from_slice(&prefix);
    Ok(())
}

/// The JSON form of a `google.rpc.Status` (what OTLP/HTTP returns on errors).
pub(crate) fn status_json(code: i32, message: &str) -> Vec<u8> {
    serde_json::to_vec(&serde_json::json!({ "code": code, "message": message }))
        .unwrap_or_else(|_| br#"{"code":13,"message":"failed to encode error"}"#.to_vec())
}

#[cfg(test)]
mod tests {
    use super::*;
    use opentelemetry_proto::tonic::collector::logs::v1::ExportLogsServiceRequest;
    use opentelemetry_proto::tonic::collector::metrics::v1::ExportMetricsServiceRequest;
    use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
    use opentelemetry_proto::tonic::common::v1::{
        any_value, AnyValue, ArrayValue, InstrumentationScope, KeyValue, KeyValueList,
    };
    use opentelemetry_proto::tonic::logs::v1::{LogRecord, ResourceLogs, ScopeLogs};
    use opentelemetry_proto::tonic::metrics::v1::{
        exemplar, exponential_histogram_data_point::Buckets, metric, number_data_point,
        summary_data_point, Exemplar, ExponentialHistogram, ExponentialHistogramDataPoint,
        Histogram, HistogramDataPoint, Metric, NumberDataPoint, ResourceMetrics, ScopeMetrics, Sum,
        Summary, SummaryDataPoint,
    };
    use opentelemetry_proto::tonic::resource::v1::Resource;
    use opentelemetry_proto::tonic::trace::v1::{span, ResourceSpans, ScopeSpans, Span, Status};
    use prost::Message;

    fn kv(k: &str, v: any_value::Value) -> KeyValue {
        KeyValue {
            key: k.into(),
            value: Some(AnyValue { value: Some(v) }),
        }
    }

    fn traces(json: &str) -> Result<ExportTraceServiceRequest, JsonError> {
        let pb = to_protobuf(Signal::Traces, json.as_bytes())?;
        Ok(ExportTraceServiceRequest::decode(&pb[..]).expect("transcoder output decodes"))
    }

    /// The shape the OpenTelemetry JS SDK's JSON exporter sends.
    const JS_TRACE: &str = r#"{"resourceSpans":[{"resource":{"attributes":[
        {"key":"service.name","value":{"stringValue":"web-frontend"}},
        {"key":"telemetry.sdk.language","value":{"stringValue":"webjs"}}],"droppedAttributesCount":0},
      "scopeSpans":[{"scope":{"name":"@opentelemetry/instrumentation-fetch","version":"0.52.1"},
        "spans":[{"traceId":"5B8EFFF798038103D269B633813FC60C","spanId":"eee19b7ec3c1b174",
          "parentSpanId":"eee19b7ec3c1b173","traceState":"","name":"HTTP GET","kind":3,
          "startTimeUnixNano":"1700000000123456789","endTimeUnixNano":"1700000000987654321",
          "attributes":[{"key":"http.status_code","value":{"intValue":"200"}},
            {"key":"http.url","value":{"stringValue":"https://x.test/a?b"}},
            {"key":"ratio","value":{"doubleValue":0.25}},
            {"key":"cached","value":{"boolValue":false}},
            {"key":"tags","value":{"arrayValue":{"values":[{"stringValue":"a"},{"intValue":7}]}}},
            {"key":"nested","value":{"kvlistValue":{"values":[{"key":"k","value":{"bytesValue":"AQID"}}]}}}],
          "droppedAttributesCount":0,
          "events":[{"timeUnixNano":"1700000000500000000","name":"open","attributes":[],"droppedAttributesCount":0}],
          "droppedEventsCount":0,"status":{"code":2,"message":"boom"},"links":[],"droppedLinksCount":0,
          "flags":257}]}]}]}"#;

    fn js_trace_expected() -> ExportTraceServiceRequest {
        ExportTraceServiceRequest {
            resource_spans: vec![ResourceSpans {
                resource: Some(Resource {
                    attributes: vec![
                        kv(
                            "service.name",
                            any_value::Value::StringValue("web-frontend".into()),
                        ),
                        kv(
                            "telemetry.sdk.language",
                            any_value::Value::StringValue("webjs".into()),
                        ),
                    ],
                    ..Default::default()
                }),
                scope_spans: vec![ScopeSpans {
                    scope: Some(InstrumentationScope {
                        name: "@opentelemetry/instrumentation-fetch".into(),
                        version: "0.52.1".into(),
                        ..Default::default()
                    }),
                    spans: vec![Span {
                        trace_id: vec![
                            0x5b, 0x8e, 0xff, 0xf7, 0x98, 0x03, 0x81, 0x03, 0xd2, 0x69, 0xb6, 0x33,
                            0x81, 0x3f, 0xc6, 0x0c,
                        ],
                        span_id: vec![0xee, 0xe1, 0x9b, 0x7e, 0xc3, 0xc1, 0xb1, 0x74],
                        parent_span_id: vec![0xee, 0xe1, 0x9b, 0x7e, 0xc3, 0xc1, 0xb1, 0x73],
                        name: "HTTP GET".into(),
                        kind: span::SpanKind::Client as i32,
                        start_time_unix_nano: 1_700_000_000_123_456_789,
                        end_time_unix_nano: 1_700_000_000_987_654_321,
                        attributes: vec![
                            kv("http.status_code", any_value::Value::IntValue(200)),
                            kv(
                                "http.url",
                                any_value::Value::StringValue("https://x.test/a?b".into()),
                            ),
                            kv("ratio", any_value::Value::DoubleValue(0.25)),
                            kv("cached", any_value::Value::BoolValue(false)),
                            kv(
                                "tags",
                                any_value::Value::ArrayValue(ArrayValue {
                                    values: vec![
                                        AnyValue {
                                            value: Some(any_value::Value::StringValue("a".into())),
                                        },
                                        AnyValue {
                                            value: Some(any_value::Value::IntValue(7)),
                                        },
                                    ],
                                }),
                            ),
                            kv(
                                "nested",
                                any_value::Value::KvlistValue(KeyValueList {
                                    values: vec![kv(
                                        "k",
                                        any_value::Value::BytesValue(vec![1, 2, 3]),
                                    )],
                                }),
                            ),
                        ],
                        events: vec![span::Event {
                            time_unix_nano: 1_700_000_000_500_000_000,
                            name: "open".into(),
                            ..Default::default()
                        }],
                        status: Some(Status {
                            message: "boom".into(),
                            code: 2,
                        }),
                        flags: 257,
                        ..Default::default()
                    }],
                    schema_url: String::new(),
                }],
                schema_url: String::new(),
            }],
        }
    }

    #[test]
    fn js_sdk_trace_body_round_trips_byte_for_byte() {
        let expected = js_trace_expected();
        let pb = to_protobuf(Signal::Traces, JS_TRACE.as_bytes()).expect("transcode");
        assert_eq!(
            ExportTraceServiceRequest::decode(&pb[..]).expect("decode"),
            expected
        );
        // Same field order and defaults as prost: the encodings are identical.
        assert_eq!(pb, expected.encode_to_vec());
        assert_eq!(pipeline_core::wire::count_items(Signal::Traces, &pb), Ok(1));
    }

    #[test]
    fn numbers_names_nulls_and_unknown_fields_follow_the_protobuf_json_mapping() {
        let t = traces(
            r#"{"resource_spans":[{"resource":null,"unknownField":{"x":1},
              "scope_spans":[{"spans":[{"trace_id":"00000000000000000000000000000001",
                "span_id":"0000000000000002","kind":"SPAN_KIND_SERVER",
                "start_time_unix_nano":1700000000000000000,"endTimeUnixNano":1.7e18,
                "attributes":[{"key":"empty","value":{}},{"key":"novalue"},
                  {"key":"zero","value":{"intValue":"0"}},{"key":"big","value":{"intValue":"-9223372036854775808"}},
                  {"key":"nan","value":{"doubleValue":"NaN"}}],
                "status":{"code":"STATUS_CODE_OK"},"events":null}]}]}]}"#,
        )
        .expect("transcode");
        let s = &t.resource_spans[0].scope_spans[0].spans[0];
        assert!(t.resource_spans[0].resource.is_none());
        assert_eq!(s.trace_id, [&[0u8; 15][..], &[1]].concat());
        assert_eq!(s.kind, 2);
        assert_eq!(s.start_time_unix_nano, 1_700_000_000_000_000_000);
        assert_eq!(s.end_time_unix_nano, 1_700_000_000_000_000_000);
        assert_eq!(s.status.as_ref().map(|st| st.code), Some(1));
        let attrs = &s.attributes;
        assert_eq!(attrs[0].value, Some(AnyValue { value: None }));
        assert_eq!(attrs[1].value, None);
        // A oneof member set to its default is still present.
        assert_eq!(
            attrs[2].value.as_ref().and_then(|v| v.value.clone()),
            Some(any_value::Value::IntValue(0))
        );
        assert_eq!(
            attrs[3].value.as_ref().and_then(|v| v.value.clone()),
            Some(any_value::Value::IntValue(i64::MIN))
        );
        assert!(matches!(
            attrs[4].value.as_ref().and_then(|v| v.value.clone()),
            Some(any_value::Value::DoubleValue(d)) if d.is_nan()
        ));
    }

    #[test]
    fn metrics_of_every_kind_round_trip() {
        let json = r#"{"resourceMetrics":[{"resource":{"attributes":[{"key":"host.name","value":{"stringValue":"h1"}}]},
          "scopeMetrics":[{"scope":{"name":"m"},"metrics":[
            {"name":"requests","unit":"1","sum":{"aggregationTemporality":2,"isMonotonic":true,
              "dataPoints":[{"asInt":"42","startTimeUnixNano":"1","timeUnixNano":"2",
                "attributes":[{"key":"code","value":{"intValue":"200"}}],
                "exemplars":[{"timeUnixNano":"2","asDouble":1.5,"traceId":"0102030405060708090a0b0c0d0e0f10","spanId":"0102030405060708"}]}]}},
            {"name":"temp","gauge":{"dataPoints":[{"asDouble":0,"timeUnixNano":"3"}]}},
            {"name":"latency","histogram":{"aggregationTemporality":"AGGREGATION_TEMPORALITY_DELTA",
              "dataPoints":[{"count":"6","sum":12.5,"bucketCounts":["1","2",3],"explicitBounds":[1,5.5],"min":0,"max":9}]}},
            {"name":"exp","exponentialHistogram":{"aggregationTemporality":1,
              "dataPoints":[{"count":3,"scale":-2,"zeroCount":"1","positive":{"offset":-3,"bucketCounts":["1","1"]},"negative":{}}]}},
            {"name":"sum","summary":{"dataPoints":[{"count":"2","sum":3,"quantileValues":[{"quantile":0.5,"value":1},{"quantile":1,"value":2}]}]}}
          ]}]}]}"#;
        let pb = to_protobuf(Signal::Metrics, json.as_bytes()).expect("transcode");
        let got = ExportMetricsServiceRequest::decode(&pb[..]).expect("decode");
        let metrics = vec![
            Metric {
                name: "requests".into(),
                unit: "1".into(),
                data: Some(metric::Data::Sum(Sum {
                    aggregation_temporality: 2,
                    is_monotonic: true,
                    data_points: vec![NumberDataPoint {
                        attributes: vec![kv("code", any_value::Value::IntValue(200))],
                        start_time_unix_nano: 1,
                        time_unix_nano: 2,
                        exemplars: vec![Exemplar {
                            time_unix_nano: 2,
                            value: Some(exemplar::Value::AsDouble(1.5)),
                            trace_id: (1..=16).collect(),
                            span_id: (1..=8).collect(),
                            ..Default::default()
                        }],
                        value: Some(number_data_point::Value::AsInt(42)),
                        ..Default::default()
                    }],
                })),
                ..Default::default()
            },
            Metric {
                name: "temp".into(),
                data: Some(metric::Data::Gauge(
                    opentelemetry_proto::tonic::metrics::v1::Gauge {
                        data_points: vec![NumberDataPoint {
                            time_unix_nano: 3,
                            value: Some(number_data_point::Value::AsDouble(0.0)),
                            ..Default::default()
                        }],
                    },
                )),
                ..Default::default()
            },
            Metric {
                name: "latency".into(),
                data: Some(metric::Data::Histogram(Histogram {
                    aggregation_temporality: 1,
                    data_points: vec![HistogramDataPoint {
                        count: 6,
                        sum: Some(12.5),
                        bucket_counts: vec![1, 2, 3],
                        explicit_bounds: vec![1.0, 5.5],
                        min: Some(0.0),
                        max: Some(9.0),
                        ..Default::default()
                    }],
                })),
                ..Default::default()
            },
            Metric {
                name: "exp".into(),
                data: Some(metric::Data::ExponentialHistogram(ExponentialHistogram {
                    aggregation_temporality: 1,
                    data_points: vec![ExponentialHistogramDataPoint {
                        count: 3,
                        scale: -2,
                        zero_count: 1,
                        positive: Some(Buckets {
                            offset: -3,
                            bucket_counts: vec![1, 1],
                        }),
                        negative: Some(Buckets::default()),
                        ..Default::default()
                    }],
                })),
                ..Default::default()
            },
            Metric {
                name: "sum".into(),
                data: Some(metric::Data::Summary(Summary {
                    data_points: vec![SummaryDataPoint {
                        count: 2,
                        sum: 3.0,
                        quantile_values: vec![
                            summary_data_point::ValueAtQuantile {
                                quantile: 0.5,
                                value: 1.0,
                            },
                            summary_data_point::ValueAtQuantile {
                                quantile: 1.0,
                                value: 2.0,
                            },
                        ],
                        ..Default::default()
                    }],
                })),
                ..Default::default()
            },
        ];
        let expected = ExportMetricsServiceRequest {
            resource_metrics: vec![ResourceMetrics {
                resource: Some(Resource {
                    attributes: vec![kv("host.name", any_value::Value::StringValue("h1".into()))],
                    ..Default::default()
                }),
                scope_metrics: vec![ScopeMetrics {
                    scope: Some(InstrumentationScope {
                        name: "m".into(),
                        ..Default::default()
                    }),
                    metrics,
                    schema_url: String::new(),
                }],
                schema_url: String::new(),
            }],
        };
        assert_eq!(got, expected);
        assert_eq!(pb, expected.encode_to_vec());
    }

    #[test]
    fn logs_round_trip() {
        let json = r#"{"resourceLogs":[{"scopeLogs":[{"logRecords":[{"timeUnixNano":"1700000000000000001",
            "observedTimeUnixNano":"1700000000000000002","severityNumber":"SEVERITY_NUMBER_WARN2",
            "severityText":"WARN","body":{"stringValue":"disk low"},"traceId":"0102030405060708090a0b0c0d0e0f10",
            "spanId":"0102030405060708","flags":1,"eventName":"disk"}]}]}]}"#;
        let pb = to_protobuf(Signal::Logs, json.as_bytes()).expect("transcode");
        let got = ExportLogsServiceRequest::decode(&pb[..]).expect("decode");
        let expected = ExportLogsServiceRequest {
            resource_logs: vec![ResourceLogs {
                scope_logs: vec![ScopeLogs {
                    log_records: vec![LogRecord {
                        time_unix_nano: 1_700_000_000_000_000_001,
                        observed_time_unix_nano: 1_700_000_000_000_000_002,
                        severity_number: 14,
                        severity_text: "WARN".into(),
                        body: Some(AnyValue {
                            value: Some(any_value::Value::StringValue("disk low".into())),
                        }),
                        trace_id: (1..=16).collect(),
                        span_id: (1..=8).collect(),
                        flags: 1,
                        event_name: "disk".into(),
                        ..Default::default()
                    }],
                    ..Default::default()
                }],
                ..Default::default()
            }],
        };
        assert_eq!(got, expected);
        assert_eq!(pb, expected.encode_to_vec());
    }

    #[test]
    fn long_strings_get_multi_byte_length_prefixes() {
        let long = "x".repeat(20_000);
        let json = format!(
            r#"{{"resourceLogs":[{{"scopeLogs":[{{"logRecords":[{{"body":{{"stringValue":"{long}"}}}}]}}]}}]}}"#
        );
        let pb = to_protobuf(Signal::Logs, json.as_bytes()).expect("transcode");
        let got = ExportLogsServiceRequest::decode(&pb[..]).expect("decode");
        let body = &got.resource_logs[0].scope_logs[0].log_records[0].body;
        assert_eq!(
            body.as_ref().and_then(|b| b.value.clone()),
            Some(any_value::Value::StringValue(long))
        );
    }

    #[test]
    fn errors_name_the_field() {
        let e = to_protobuf(
            Signal::Traces,
            br#"{"resourceSpans":[{"scopeSpans":[{"spans":[{},{"traceId":"zz"}]}]}]}"#,
        )
        .expect_err("bad hex");
        assert_eq!(e.path, "resourceSpans[0].scopeSpans[0].spans[1].traceId");
        for (body, want) in [
            (&b"not json"[..], "invalid JSON"),
            (b"[1]", "JSON object"),
            (br#"{"resourceSpans":{}}"#, "expected an array"),
            (
                br#"{"resourceSpans":[{"scopeSpans":[{"spans":[{"droppedAttributesCount":-1}]}]}]}"#,
                "negative",
            ),
            (
                br#"{"resourceSpans":[{"scopeSpans":[{"spans":[{"kind":"SPAN_KIND_NOPE"}]}]}]}"#,
                "unknown enum",
            ),
            (
                br#"{"resourceSpans":[{"scopeSpans":[{"spans":[{"flags":4294967296}]}]}]}"#,
                "out of range",
            ),
        ] {
            let e = to_protobuf(Signal::Traces, body).expect_err(want);
            assert!(e.to_string().contains(want), "{e}");
        }
    }

    #[test]
    fn base64_accepts_both_alphabets_and_optional_padding() {
        assert_eq!(base64_decode("AQID"), Ok(vec![1, 2, 3]));
        assert_eq!(base64_decode("AQI="), Ok(vec![1, 2]));
        assert_eq!(base64_decode("AQI"), Ok(vec![1, 2]));
        assert_eq!(base64_decode("-_8"), Ok(vec![0xfb, 0xff]));
        assert_eq!(base64_decode("+/8="), Ok(vec![0xfb, 0xff]));
        assert!(base64_decode("A").is_err());
        assert!(base64_decode("A*==").is_err());
    }

    #[test]
    fn status_json_escapes_the_message() {
        let s = status_json(3, "bad \"quote\"");
        let v: Value = serde_json::from_slice(&s).expect("json");
        assert_eq!(v["code"], 3);
        assert_eq!(v["message"], "bad \"quote\"");
    }
}
