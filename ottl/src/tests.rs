//! Evaluation tests over real OTLP messages.

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;

use opentelemetry_proto::tonic::common::v1::{
    any_value, AnyValue, ArrayValue, InstrumentationScope, KeyValue, KeyValueList,
};
use opentelemetry_proto::tonic::logs::v1::LogRecord;
use opentelemetry_proto::tonic::metrics::v1::{
    metric, number_data_point, Gauge, Histogram, HistogramDataPoint, Metric, NumberDataPoint, Sum,
};
use opentelemetry_proto::tonic::resource::v1::Resource;
use opentelemetry_proto::tonic::trace::v1::{span, Span, Status};

use super::*;

/// Counts allocations made by the current thread, so tests can assert that evaluation of the
/// common shapes does not allocate (tests run on several threads; the count is per thread).
struct CountingAlloc;

thread_local! {
    static ALLOCS: Cell<usize> = const { Cell::new(0) };
}

unsafe impl GlobalAlloc for CountingAlloc {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        let _ = ALLOCS.try_with(|c| c.set(c.get() + 1));
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        unsafe { System.dealloc(ptr, layout) }
    }
}

#[global_allocator]
static GLOBAL: CountingAlloc = CountingAlloc;

fn allocs() -> usize {
    ALLOCS.with(|c| c.get())
}

fn av(v: any_value::Value) -> Option<AnyValue> {
    Some(AnyValue { value: Some(v) })
}

fn kv(k: &str, v: any_value::Value) -> KeyValue {
    KeyValue {
        key: k.to_string(),
        value: av(v),
    }
}

fn s(v: &str) -> any_value::Value {
    any_value::Value::StringValue(v.to_string())
}

struct Fixture {
    resource: Resource,
    scope: InstrumentationScope,
    span: Span,
    root: Span,
}

const TRACE_ID: [u8; 16] = [
    0x5b, 0x8e, 0xff, 0xf7, 0x98, 0x03, 0x81, 0x03, 0xd2, 0x69, 0xb6, 0x33, 0x81, 0x3f, 0xc6, 0x0c,
];

fn fixture() -> Fixture {
    let mut resource_attrs: Vec<KeyValue> =
        (0..8).map(|i| kv(&format!("attr.{i}"), s("v"))).collect();
    resource_attrs.push(kv("service.instance.id", s("148f400ad3ea:297514")));
    let resource = Resource {
        attributes: resource_attrs,
        dropped_attributes_count: 2,
        entity_refs: vec![],
    };
    let scope = InstrumentationScope {
        name: "io.opentelemetry.http".into(),
        version: "1.2.3".into(),
        attributes: vec![kv("scope.attr", s("x"))],
        dropped_attributes_count: 0,
    };
    let span = Span {
        trace_id: TRACE_ID.to_vec(),
        span_id: vec![1, 2, 3, 4, 5, 6, 7, 8],
        parent_span_id: vec![8, 7, 6, 5, 4, 3, 2, 1],
        trace_state: "vendor=abc,other=xyz".into(),
        name: "GET /users".into(),
        kind: 2,
        start_time_unix_nano: 1_700_000_000_000_000_000,
        end_time_unix_nano: 1_700_000_000_750_000_000,
        attributes: vec![
            kv("http.method", s("GET")),
            kv("int", any_value::Value::IntValue(5)),
            kv("dbl", any_value::Value::DoubleValue(1.5)),
            kv("flag", any_value::Value::BoolValue(true)),
            kv("ip", s("10.1.2.3")),
            kv("csv", s("a,b,c")),
            kv(
                "list",
                any_value::Value::ArrayValue(ArrayValue {
                    values: vec![
                        AnyValue {
                            value: Some(any_value::Value::IntValue(1)),
                        },
                        AnyValue {
                            value: Some(any_value::Value::IntValue(2)),
                        },
                    ],
                }),
            ),
            kv(
                "map",
                any_value::Value::KvlistValue(KeyValueList {
                    values: vec![kv("inner", s("deep"))],
                }),
            ),
            kv("bytes", any_value::Value::BytesValue(vec![0xca, 0xfe])),
            KeyValue {
                key: "empty".into(),
                value: None,
            },
        ],
        dropped_attributes_count: 1,
        events: vec![
            span::Event {
                time_unix_nano: 1_700_000_000_100_000_000,
                name: "exception".into(),
                attributes: vec![kv("exception.type", s("IOError"))],
                dropped_attributes_count: 0,
            },
            span::Event::default(),
        ],
        dropped_events_count: 0,
        links: vec![],
        dropped_links_count: 0,
        status: Some(Status {
            message: "boom".into(),
            code: 2,
        }),
        flags: 0,
    };
    let root = Span {
        name: "root".into(),
        parent_span_id: vec![],
        ..Default::default()
    };
    Fixture {
        resource,
        scope,
        span,
        root,
    }
}

impl Fixture {
    fn cx(&self) -> EvalContext<'_> {
        EvalContext::new(Some(&self.resource), "https://schema")
            .with_scope(Some(&self.scope), "")
            .with_span(&self.span)
    }
}

#[track_caller]
fn span_eval(src: &str) -> bool {
    let f = fixture();
    let c = Condition::parse(src, ContextKind::Span).unwrap_or_else(|e| panic!("{src}: {e}"));
    c.eval(&f.cx()).unwrap_or_else(|e| panic!("{src}: {e}"))
}

#[track_caller]
fn span_err(src: &str) -> EvalError {
    let f = fixture();
    let c = Condition::parse(src, ContextKind::Span).unwrap_or_else(|e| panic!("{src}: {e}"));
    match c.eval(&f.cx()) {
        Ok(v) => panic!("{src}: expected an error, got {v}"),
        Err(e) => e,
    }
}

#[track_caller]
fn load_err(src: &str, ctx: ContextKind) -> OttlError {
    match Condition::parse(src, ctx) {
        Ok(_) => panic!("{src}: expected a load error"),
        Err(e) => e,
    }
}

#[test]
fn span_fields() {
    for c in [
        r#"name == "GET /users""#,
        r#"span.name == "GET /users""#,
        "kind == SPAN_KIND_SERVER",
        "kind == 2",
        r#"kind.string == "Server""#,
        r#"kind.deprecated_string == "SPAN_KIND_SERVER""#,
        "status.code == STATUS_CODE_ERROR",
        r#"status.message == "boom""#,
        "trace_id == TraceID(0x5b8efff798038103d269b633813fc60c)",
        r#"trace_id.string == "5b8efff798038103d269b633813fc60c""#,
        r#"span_id.string == "0102030405060708""#,
        "span_id == SpanID(0x0102030405060708)",
        "parent_span_id == 0x0807060504030201",
        r#"trace_state["vendor"] == "abc""#,
        r#"trace_state["missing"] == nil"#,
        r#"trace_state == "vendor=abc,other=xyz""#,
        "start_time_unix_nano == 1700000000000000000",
        "end_time_unix_nano - start_time_unix_nano > 500000000",
        r#"(end_time - start_time) > Duration("500ms")"#,
        r#"end_time - start_time == Duration("750ms")"#,
        r#"start_time + Duration("750ms") == end_time"#,
        "dropped_attributes_count == 1",
        "Len(events) == 2",
        "Len(links) == 0",
        r#"resource.attributes["service.instance.id"] == "148f400ad3ea:297514""#,
        "resource.dropped_attributes_count == 2",
        r#"resource.schema_url == "https://schema""#,
        r#"instrumentation_scope.name == "io.opentelemetry.http""#,
        r#"scope.version == "1.2.3""#,
        r#"instrumentation_scope.attributes["scope.attr"] == "x""#,
        r#"attributes["map"]["inner"] == "deep""#,
        r#"attributes["list"][1] == 2"#,
        r#"attributes["bytes"] == 0xcafe"#,
        r#"attributes["empty"] == nil"#,
        r#"IsMap(attributes)"#,
        r#"Len(attributes) == 10"#,
    ] {
        assert!(span_eval(c), "{c}");
    }
    assert!(!span_eval("IsRootSpan()"));
    let f = fixture();
    let c = Condition::parse("IsRootSpan()", ContextKind::Span).unwrap();
    assert!(c.eval(&EvalContext::default().with_span(&f.root)).unwrap());
}

#[test]
fn mixed_type_comparisons_are_not_errors() {
    for (c, want) in [
        (r#"attributes["int"] == 5"#, true),
        (r#"attributes["int"] == 5.0"#, true),
        (r#"attributes["int"] < 5.5"#, true),
        (r#"attributes["dbl"] > 1"#, true),
        (r#"attributes["int"] == "5""#, false),
        (r#"attributes["int"] != "5""#, true),
        (r#"attributes["int"] > "4""#, false),
        (r#""true" == true"#, false),
        (r#""true" != true"#, true),
        ("true > 0", false),
        ("true != 0", true),
        ("false < true", true),
        (r#"attributes["flag"] == true"#, true),
        (r#""abc" < "abd""#, true),
        (r#"name > "A""#, true),
        (r#"attributes["map"] == {"inner": "deep"}"#, true),
        (r#"attributes["list"] == [1, 2]"#, true),
        (r#"attributes["list"] == [1.0, 2.0]"#, false),
        (r#"attributes["list"] < [1, 3]"#, false),
        (r#""GET" <= attributes["http.method"]"#, true),
        (r#""A" < attributes["http.method"]"#, true),
        (r#""Z" > attributes["http.method"]"#, true),
        (r#""GET" != attributes["http.method"]"#, false),
        (r#"attributes["http.method"] >= "GET""#, true),
        (r#"attributes["http.method"] > "GET""#, false),
        (r#"attributes["empty"] == "x""#, false),
        (r#"attributes["empty"] != "x""#, true),
        (r#"attributes["int"] < "9""#, false),
        (r#"attributes["flag"] != "true""#, true),
    ] {
        assert_eq!(span_eval(c), want, "{c}");
    }
}

#[test]
fn nil_semantics() {
    for (c, want) in [
        (r#"attributes["missing"] == nil"#, true),
        (r#"attributes["missing"] != nil"#, false),
        (r#"attributes["http.method"] != nil"#, true),
        ("nil == nil", true),
        ("nil != nil", false),
        (r#"attributes["missing"] == "x""#, false),
        (r#"attributes["missing"] != "x""#, true),
        (r#"attributes["missing"] < 1"#, false),
        (r#"attributes["missing"]["deeper"] == nil"#, true),
        (r#"attributes["map"]["nope"] == nil"#, true),
        (r#"IsMatch(attributes["missing"], ".*")"#, false),
        (r#"String(attributes["missing"]) == nil"#, true),
        (r#"Int(attributes["missing"]) == nil"#, true),
    ] {
        assert_eq!(span_eval(c), want, "{c}");
    }
}

#[test]
fn math() {
    for (c, want) in [
        ("1 + 2 * 3 == 7", true),
        ("(1 + 2) * 3 == 9", true),
        ("10 - 2 - 3 == 5", true),
        ("7 / 2 == 3", true),
        ("-7 / 2 == -3", true),
        ("1.5 * 2.0 == 3.0", true),
        ("1.0 / 4.0 == 0.25", true),
        (r#"attributes["int"] * 2 == 10"#, true),
        (r#"attributes["int"]-1 == 4"#, true),
        (r#"attributes["dbl"] + 0.5 == 2.0"#, true),
        (
            r#"Duration("1h") - Duration("30m") == Duration("30m")"#,
            true,
        ),
        (r#"Hours(Duration("90m")) == 1.5"#, true),
    ] {
        assert_eq!(span_eval(c), want, "{c}");
    }
    assert!(span_err(r#"attributes["int"] / 0 == 1"#)
        .0
        .contains("divide by 0"));
    assert!(span_err(r#"attributes["int"] + 1.5 > 0"#)
        .0
        .contains("unsupported math"));
    assert!(span_err(r#"name + 1 > 0"#).0.contains("string"));
    assert!(span_err(r#"attributes["missing"] + 1 > 0"#)
        .0
        .contains("nil"));
    // Constant math that cannot succeed is rejected when the config loads.
    let e = load_err("1 / 0 == 1", ContextKind::Span);
    assert_eq!(e.pos.column, 3, "{e}");
    load_err("1 + 1.5 == 2.5", ContextKind::Span);
}

#[test]
fn boolean_precedence() {
    for (c, want) in [
        ("true or false and false", true),
        ("false and true or true", true),
        ("false and (true or true)", false),
        ("not true or true", true),
        ("not (true or true)", false),
        ("not false and false", false),
        (r#"not name == "x""#, true),
        (r#"name == "x" or kind == 2 and status.code == 2"#, true),
        (r#"(name == "x" or kind == 2) and status.code == 1"#, false),
    ] {
        assert_eq!(span_eval(c), want, "{c}");
    }
    let c = Condition::parse("true and not false", ContextKind::Span).unwrap();
    assert_eq!(c.constant(), Some(true));
    let c = Condition::parse("1 == 2", ContextKind::Span).unwrap();
    assert_eq!(c.constant(), Some(false));
}

#[test]
fn converters() {
    for c in [
        r#"IsMatch(name, "^GET ")"#,
        r#"IsMatch(name, "users")"#,
        r#"not IsMatch(name, "^POST")"#,
        r#"IsMatch(attributes["int"], "^5$")"#,
        r#"IsMatch(attributes["flag"], "true")"#,
        r#"IsMatch(target = name, pattern = "GET")"#,
        r#"HasPrefix(name, "GET")"#,
        r#"HasSuffix(name, "users")"#,
        r#"Concat([attributes["http.method"], attributes["int"], 1.5], "-") == "GET-5-1.5""#,
        r#"Concat([attributes["missing"]], "") == "<nil>""#,
        r#"Int("12") == 12"#,
        r#"Int("x") == nil"#,
        r#"Int(1.9) == 1"#,
        r#"Int(-1.9) == -1"#,
        r#"Int(true) == 1"#,
        r#"Double("1.5") == 1.5"#,
        r#"Double(attributes["int"]) == 5.0"#,
        r#"String(attributes["int"]) == "5""#,
        r#"String(attributes["bytes"]) == "cafe""#,
        r#"String(attributes["map"]) == "{\"inner\":\"deep\"}""#,
        r#"Len(name) == 10"#,
        r#"Len(attributes["list"]) == 2"#,
        r#"IsString(name)"#,
        r#"IsInt(attributes["int"])"#,
        r#"IsDouble(attributes["dbl"])"#,
        r#"IsBool(attributes["flag"])"#,
        r#"IsMap(attributes["map"])"#,
        r#"IsList(attributes["list"])"#,
        r#"not IsString(attributes["int"])"#,
        r#"IsEmpty(attributes["missing"])"#,
        r#"IsEmpty("")"#,
        r#"not IsEmpty(name)"#,
        r#"ContainsValue(["POST", "GET"], attributes["http.method"])"#,
        r#"ContainsValue(attributes["list"], 2)"#,
        r#"ContainsValue(attributes["list"], 2.0)"#,
        r#"not ContainsValue(attributes["list"], "2")"#,
        r#"IsInCIDR(attributes["ip"], ["192.168.0.0/16", "10.0.0.0/8"])"#,
        r#"not IsInCIDR(attributes["http.method"], ["10.0.0.0/8"])"#,
        r#"IsInCIDR(attributes["ip"], [Concat(["10.1", "0.0/16"], ".")])"#,
        r#"Split(attributes["csv"], ",")[1] == "b""#,
        r#"Len(Split(attributes["csv"], ",")) == 3"#,
        r#"Split(name, "") == ["G", "E", "T", " ", "/", "u", "s", "e", "r", "s"]"#,
        r#"Substring(name, 0, 3) == "GET""#,
        r#"Substring(name, 4, 6) == "/users""#,
        r#"Substring("héllo", 1, 2, utf8_safe = true) == "él""#,
        r#"ConvertCase(name, "upper") == "GET /USERS""#,
        r#"ConvertCase("someName", "snake") == "some_name""#,
        r#"ToLowerCase(name) == "get /users""#,
        r#"ToUpperCase(attributes["http.method"]) == "GET""#,
        r#"Trim("  x  ") == "x""#,
        r#"Trim("--x-", "-") == "x""#,
        r#"Duration("1.5s") == Duration("1500ms")"#,
        r#"Duration("1h") > Duration("59m")"#,
        r#"Time("2023-11-14 22:13:20", "%Y-%m-%d %H:%M:%S") == start_time"#,
        r#"UnixSeconds(start_time) == 1700000000"#,
        r#"UnixMilli(end_time) == 1700000000750"#,
        r#"Unix(1700000000) == start_time"#,
        r#"Year(start_time) == 2023 and Month(start_time) == 11 and Day(start_time) == 14"#,
        r#"Milliseconds(end_time - start_time) == 750"#,
        r#"Now() > start_time"#,
    ] {
        assert!(span_eval(c), "{c}");
    }
    assert!(span_err(r#"HasPrefix(attributes["int"], "5")"#)
        .0
        .contains("expected string"));
    assert!(span_err(r#"HasPrefix(attributes["missing"], "5")"#)
        .0
        .contains("nil"));
    assert!(span_err(r#"Substring(name, 5, 100) == "x""#)
        .0
        .contains("range"));
    assert!(span_err(r#"Split(attributes["csv"], ",")[7] == "x""#)
        .0
        .contains("out of range"));
    assert!(
        span_err(r#"Int(name) == nil and Len(attributes["int"]) == 1"#)
            .0
            .contains("Len")
    );
    assert!(span_err(r#"Concat(name, "")  == "x""#).0.contains("list"));
    assert!(span_err(r#"Int(name)"#).0.contains("expected a bool"));
}

#[test]
fn span_event_context_reads_its_span() {
    let f = fixture();
    let ev = &f.span.events[0];
    let cx = f.cx().with_span_event(ev);
    for c in [
        r#"name == "exception""#,
        r#"spanevent.name == "exception""#,
        r#"span.name == "GET /users""#,
        r#"attributes["exception.type"] == "IOError""#,
        r#"span.attributes["int"] == 5"#,
        r#"time_unix_nano > span.start_time_unix_nano"#,
        r#"time > span.start_time"#,
        r#"resource.attributes["attr.0"] == "v""#,
        "not IsRootSpan()",
    ] {
        let cond =
            Condition::parse(c, ContextKind::SpanEvent).unwrap_or_else(|e| panic!("{c}: {e}"));
        assert!(cond.eval(&cx).unwrap(), "{c}");
    }
}

fn metrics_fixture() -> (Metric, Metric) {
    let sum = Metric {
        name: "http.requests".into(),
        description: "requests".into(),
        unit: "1".into(),
        metadata: vec![],
        data: Some(metric::Data::Sum(Sum {
            data_points: vec![NumberDataPoint {
                attributes: vec![kv("route", s("/users"))],
                start_time_unix_nano: 1,
                time_unix_nano: 2,
                exemplars: vec![],
                flags: 0,
                value: Some(number_data_point::Value::AsInt(42)),
            }],
            aggregation_temporality: 2,
            is_monotonic: true,
        })),
    };
    let hist = Metric {
        name: "latency".into(),
        data: Some(metric::Data::Histogram(Histogram {
            data_points: vec![HistogramDataPoint {
                count: 10,
                sum: Some(12.5),
                bucket_counts: vec![3, 7],
                explicit_bounds: vec![1.0],
                ..Default::default()
            }],
            aggregation_temporality: 1,
        })),
        ..Default::default()
    };
    (sum, hist)
}

#[test]
fn metric_and_datapoint_contexts() {
    let (sum, hist) = metrics_fixture();
    let res = Resource::default();
    let base = EvalContext::new(Some(&res), "");
    let mcx = base.with_metric(&sum);
    for c in [
        r#"name == "http.requests""#,
        r#"metric.name == "http.requests""#,
        "type == METRIC_DATA_TYPE_SUM",
        "aggregation_temporality == AGGREGATION_TEMPORALITY_CUMULATIVE",
        "is_monotonic == true",
        r#"unit == "1" and description == "requests""#,
        "Len(data_points) == 1",
    ] {
        let cond = Condition::parse(c, ContextKind::Metric).unwrap_or_else(|e| panic!("{c}: {e}"));
        assert!(cond.eval(&mcx).unwrap(), "{c}");
    }
    let Some(metric::Data::Sum(sd)) = &sum.data else {
        unreachable!()
    };
    let dcx = mcx.with_data_point(DataPoint::Number(&sd.data_points[0]));
    for c in [
        "value_int == 42",
        "value_double == 0.0",
        r#"attributes["route"] == "/users""#,
        r#"metric.name == "http.requests""#,
        "metric.type == METRIC_DATA_TYPE_SUM",
        "count == nil",
        "time_unix_nano > start_time_unix_nano",
    ] {
        let cond =
            Condition::parse(c, ContextKind::DataPoint).unwrap_or_else(|e| panic!("{c}: {e}"));
        assert!(cond.eval(&dcx).unwrap(), "{c}");
    }
    let Some(metric::Data::Histogram(hd)) = &hist.data else {
        unreachable!()
    };
    let hcx = base
        .with_metric(&hist)
        .with_data_point(DataPoint::Histogram(&hd.data_points[0]));
    for c in [
        "count == 10",
        "sum == 12.5",
        "bucket_counts[1] == 7",
        "explicit_bounds[0] == 1.0",
        "value_int == nil",
        "metric.type == METRIC_DATA_TYPE_HISTOGRAM",
    ] {
        let cond =
            Condition::parse(c, ContextKind::DataPoint).unwrap_or_else(|e| panic!("{c}: {e}"));
        assert!(cond.eval(&hcx).unwrap(), "{c}");
    }
    let gauge = Metric {
        data: Some(metric::Data::Gauge(Gauge::default())),
        ..Default::default()
    };
    let cond = Condition::parse("is_monotonic == nil", ContextKind::Metric).unwrap();
    assert!(cond.eval(&base.with_metric(&gauge)).unwrap());
}

#[test]
fn log_context() {
    let log = LogRecord {
        time_unix_nano: 5,
        severity_number: 17,
        severity_text: "ERROR".into(),
        body: av(any_value::Value::KvlistValue(KeyValueList {
            values: vec![kv("msg", s("disk full"))],
        })),
        attributes: vec![kv("k", s("v"))],
        trace_id: TRACE_ID.to_vec(),
        event_name: "ev".into(),
        ..Default::default()
    };
    let text_log = LogRecord {
        body: av(s("plain text")),
        ..Default::default()
    };
    let int_log = LogRecord {
        body: av(any_value::Value::IntValue(7)),
        ..Default::default()
    };
    let res = Resource::default();
    let base = EvalContext::new(Some(&res), "");
    for (c, l) in [
        ("severity_number >= SEVERITY_NUMBER_WARN", &log),
        ("severity_number == SEVERITY_NUMBER_ERROR", &log),
        ("SEVERITY_NUMBER_ERROR2 == 18", &log),
        ("SEVERITY_NUMBER_FATAL4 == 24", &log),
        (r#"severity_text == "ERROR""#, &log),
        (r#"body["msg"] == "disk full""#, &log),
        (r#"IsMatch(body["msg"], "disk")"#, &log),
        (r#"log.attributes["k"] == "v""#, &log),
        (
            r#"trace_id.string == "5b8efff798038103d269b633813fc60c""#,
            &log,
        ),
        (r#"event_name == "ev""#, &log),
        (r#"body == "plain text""#, &text_log),
        (r#"IsMatch(body, "^plain")"#, &text_log),
        (r#"body.string == "7""#, &int_log),
        (r#"body.string == "{\"msg\":\"disk full\"}""#, &log),
        ("body == 7", &int_log),
    ] {
        let cond = Condition::parse(c, ContextKind::Log).unwrap_or_else(|e| panic!("{c}: {e}"));
        assert!(cond.eval(&base.with_log(l)).unwrap(), "{c}");
    }
}

#[test]
fn syntax_errors_are_reported_with_position() {
    for (src, col) in [
        ("True(", 6),
        (r#""foo == "foo""#, 10),
        (r#"attributes[test] == "pass""#, 12),
        ("name == ", 9),
        ("name = \"x\"", 6),
        ("(name == \"x\"", 13),
    ] {
        let e = load_err(src, ContextKind::Span);
        assert_eq!(e.kind, ErrorKind::Syntax, "{src}: {e}");
        assert_eq!(
            e.pos,
            Pos {
                line: 1,
                column: col
            },
            "{src}: {e}"
        );
    }
    let e = load_err("name == \"a\" and\n  kind ==", ContextKind::Span);
    assert_eq!(e.pos.line, 2, "{e}");
}

#[test]
fn load_errors_name_the_position() {
    let e = load_err(r#"name == "x" and Foo(name)"#, ContextKind::Span);
    assert_eq!(e.kind, ErrorKind::Compile);
    assert_eq!(e.pos.column, 17, "{e}");
    assert!(e.message.contains("unknown function \"Foo\""), "{e}");
    let e = load_err(r#"nme == "x""#, ContextKind::Span);
    assert_eq!(e.pos.column, 1);
    assert!(e.message.contains("unknown path \"nme\""), "{e}");
    let e = load_err(
        r#"kind == 1 and attributes["a"] == SPAN_KIND_SERVR"#,
        ContextKind::Span,
    );
    assert_eq!(e.pos.column, 34, "{e}");
    assert!(e.message.contains("unknown enum"), "{e}");
    let e = load_err("severity_number == SEVERITY_NUMBER_WARN", ContextKind::Span);
    assert!(e.message.contains("unknown path") || e.message.contains("unknown enum"));
    let e = load_err("IsRootSpan()", ContextKind::Resource);
    assert!(e.message.contains("not available"), "{e}");
    let e = load_err(r#"IsMatch(name, "(")"#, ContextKind::Span);
    assert_eq!(e.pos.column, 15, "{e}");
    assert!(e.message.contains("invalid regex"), "{e}");
    let e = load_err(r#"IsMatch(name, attributes["p"])"#, ContextKind::Span);
    assert!(e.message.contains("string literal"), "{e}");
    let e = load_err("IsMatch(name)", ContextKind::Span);
    assert!(e.message.contains("missing required argument"), "{e}");
    let e = load_err(r#"HasPrefix(name, "a", "b")"#, ContextKind::Span);
    assert!(e.message.contains("at most 2"), "{e}");
    let e = load_err(r#"IsMatch(name, patern = "a")"#, ContextKind::Span);
    assert!(e.message.contains("no parameter named"), "{e}");
    let e = load_err(r#"attributes[0] == "a""#, ContextKind::Span);
    assert_eq!(e.pos.column, 1, "{e}");
    assert!(e.message.contains("string key"), "{e}");
    let e = load_err(r#"kind.string["x"] == "a""#, ContextKind::Span);
    assert!(e.message.contains("cannot be indexed"), "{e}");
    let e = load_err(r#"ConvertCase(name, "title") == "x""#, ContextKind::Span);
    assert!(e.message.contains("invalid case"), "{e}");
    let e = load_err(r#"TraceID(0x01) == trace_id"#, ContextKind::Span);
    assert!(e.message.contains("16 bytes"), "{e}");
    let e = load_err(
        r#"IsInCIDR(attributes["ip"], ["10.0.0.0/40"])"#,
        ContextKind::Span,
    );
    assert!(e.message.contains("invalid CIDR"), "{e}");
    let e = load_err(
        r#"Duration("5 minutes") > Duration("1s")"#,
        ContextKind::Span,
    );
    assert!(e.message.contains("Duration"), "{e}");
    let e = load_err(r#"span.name == "x""#, ContextKind::Resource);
    assert!(e.message.contains("not available"), "{e}");
    let e = load_err(r#"Int("1")"#, ContextKind::Span);
    assert!(e.message.contains("needs a bool"), "{e}");
    let e = load_err(r#"Time("x", "%Q") == start_time"#, ContextKind::Span);
    assert!(e.message.contains("%Q"), "{e}");
    let e = load_err(
        r#"Time(name, "%Y", "Europe/Paris") == start_time"#,
        ContextKind::Span,
    );
    assert!(e.message.contains("UTC"), "{e}");
    assert!(e
        .to_string()
        .starts_with("invalid condition at line 1, column"));
}

#[test]
fn inferred_contexts() {
    use ContextKind::*;
    for (src, signal, want) in [
        (
            r#"resource.attributes["x"] == "y""#,
            Signal::Traces,
            Resource,
        ),
        (r#"scope.name == "y""#, Signal::Traces, Scope),
        (
            r#"instrumentation_scope.name == "y""#,
            Signal::Traces,
            Scope,
        ),
        (r#"span.name == "y""#, Signal::Traces, Span),
        (
            r#"resource.attributes["x"] == "y" and span.name == "y""#,
            Signal::Traces,
            Span,
        ),
        (
            r#"resource.attributes["x"] == "y" or spanevent.name == "e""#,
            Signal::Traces,
            SpanEvent,
        ),
        ("IsRootSpan()", Signal::Traces, Span),
        (
            r#"resource.attributes["a"] == "b" and IsRootSpan()"#,
            Signal::Traces,
            Span,
        ),
        (r#"metric.name == "m""#, Signal::Metrics, Metric),
        (r#"datapoint.value_int > 1"#, Signal::Metrics, DataPoint),
        (
            r#"log.severity_number < SEVERITY_NUMBER_WARN"#,
            Signal::Logs,
            Log,
        ),
        (r#"resource.attributes["a"] == "b""#, Signal::Logs, Resource),
    ] {
        let c = Condition::parse_inferred(src, signal).unwrap_or_else(|e| panic!("{src}: {e}"));
        assert_eq!(c.context(), want, "{src}");
        assert_eq!(infer_context(src, signal).unwrap(), want);
    }
    let e = Condition::parse_inferred(r#"span.name == "a" and name == "b""#, Signal::Traces)
        .unwrap_err();
    assert_eq!(e.pos.column, 22, "{e}");
    assert!(
        e.message.contains("missing context name for path \"name\""),
        "{e}"
    );
    let e = Condition::parse_inferred(r#"log.body == "a""#, Signal::Traces).unwrap_err();
    assert!(e.message.contains("not valid for Traces"), "{e}");
    let e = Condition::parse_inferred("true", Signal::Traces).unwrap_err();
    assert!(e.message.contains("unable to infer"), "{e}");

    // An inferred span condition evaluates like the legacy one.
    let f = fixture();
    let c = Condition::parse_inferred(
        r#"span.name == "GET /users" and resource.attributes["attr.1"] == "v""#,
        Signal::Traces,
    )
    .unwrap();
    assert!(c.eval(&f.cx()).unwrap());
}

#[test]
fn reads_up_to_tracks_the_deepest_path() {
    let c = Condition::parse(
        r#"resource.attributes["service.instance.id"] == "x""#,
        ContextKind::Span,
    )
    .unwrap();
    assert_eq!(c.context(), ContextKind::Span);
    assert_eq!(c.reads_up_to(), ContextKind::Resource);
    let c = Condition::parse(r#"scope.name == "x" or true"#, ContextKind::Span).unwrap();
    assert_eq!(c.reads_up_to(), ContextKind::Scope);
    let c = Condition::parse(r#"IsRootSpan()"#, ContextKind::SpanEvent).unwrap();
    assert_eq!(c.reads_up_to(), ContextKind::Span);
    let c = Condition::parse(r#"name == "x""#, ContextKind::SpanEvent).unwrap();
    assert_eq!(c.reads_up_to(), ContextKind::SpanEvent);
}

#[test]
fn missing_item_is_an_error_not_a_panic() {
    let c = Condition::parse(r#"name == "x""#, ContextKind::Span).unwrap();
    assert!(c.eval(&EvalContext::default()).is_err());
    // A missing resource reads as an empty one.
    let c = Condition::parse(r#"resource.attributes["x"] == nil"#, ContextKind::Span).unwrap();
    assert!(c.eval(&EvalContext::default()).unwrap());
}

#[test]
fn common_comparisons_do_not_allocate() {
    let f = fixture();
    let cx = f.cx();
    let conds: Vec<Condition> = [
        r#"resource.attributes["service.instance.id"] == "148f400ad3ea:297514""#,
        r#"attributes["http.method"] == "GET" and kind == SPAN_KIND_SERVER"#,
        r#"name != "x" or attributes["int"] > 3"#,
        r#"attributes["missing"] == nil"#,
        r#"IsMatch(name, "^GET")"#,
        r#"HasPrefix(name, "GET")"#,
        r#"ContainsValue(["a", "GET"], attributes["http.method"])"#,
        r#"end_time_unix_nano - start_time_unix_nano > 500000000"#,
        r#"trace_state["vendor"] == "abc""#,
        r#"trace_id == TraceID(0x5b8efff798038103d269b633813fc60c)"#,
        r#"(end_time - start_time) > Duration("500ms")"#,
    ]
    .iter()
    .map(|s| Condition::parse(s, ContextKind::Span).unwrap())
    .collect();
    for c in &conds {
        // The first regex match on a thread sets up the regex's search cache.
        let _ = c.eval(&cx);
        let before = allocs();
        let r = c.eval(&cx);
        let after = allocs();
        assert!(r.unwrap(), "{}", c.source());
        assert_eq!(after - before, 0, "{} allocated", c.source());
    }
}

/// `cargo test -p ottl --release -- --ignored --nocapture bench_resource` prints the cost of
/// the seed config's condition. Measured: 17-23 ns per evaluation (release build, 2-core VM
/// shared with other builds).
#[test]
#[ignore]
fn bench_resource_attribute_compare() {
    let f = fixture();
    let cx = f.cx();
    let c = Condition::parse(
        r#"resource.attributes["service.instance.id"] == "148f400ad3ea:297514""#,
        ContextKind::Span,
    )
    .unwrap();
    let n = 5_000_000u32;
    let start = std::time::Instant::now();
    let mut hits = 0u32;
    for _ in 0..n {
        if c.eval(std::hint::black_box(&cx)).unwrap_or(false) {
            hits += 1;
        }
    }
    let el = start.elapsed();
    assert_eq!(hits, n);
    println!(
        "resource attribute compare: {:.1} ns/eval",
        el.as_nanos() as f64 / n as f64
    );
}
