//! End-to-end tests of the exporter: OTLP requests in, exact exposition out, over real HTTP.

use std::collections::{HashMap, HashSet};
use std::io::Read as _;

use pipeline_core::otlp::tonic::common::v1::{any_value, AnyValue, InstrumentationScope, KeyValue};
use pipeline_core::otlp::tonic::metrics::v1::{
    exponential_histogram_data_point::Buckets, metric::Data, number_data_point,
    summary_data_point::ValueAtQuantile, ExponentialHistogram, ExponentialHistogramDataPoint,
    Gauge, Histogram, HistogramDataPoint, Metric, NumberDataPoint, ResourceMetrics, ScopeMetrics,
    Sum, Summary, SummaryDataPoint,
};
use pipeline_core::otlp::tonic::resource::v1::Resource;
use pipeline_core::{ComponentId, Telemetry};
use prost::Message as _;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

use super::*;

const SEC: u64 = 1_000_000_000;
const START: u64 = 1_700_000_000 * SEC;
const T1: u64 = START + 10 * SEC;
const T2: u64 = START + 20 * SEC;

/// The line the reference stack exposed for this resource (seed/production/target-info-example.txt).
const TARGET_INFO: &str = r#"default_target_info{host_id="148f400ad3ea",host_name="148f400ad3ea",instance="148f400ad3ea:297514",job="python3.13",os_type="linux",service_instance_id="148f400ad3ea:297514",service_name="python3.13",telemetry_sdk_language="python",telemetry_sdk_name="opentelemetry-ebpf-instrumentation",telemetry_sdk_version="main"} 1"#;

const COMMON: &str = r#"instance="148f400ad3ea:297514",job="python3.13",otel_scope_name="io.opentelemetry.obi",otel_scope_version="0.1.0""#;

fn s(k: &str, v: &str) -> KeyValue {
    KeyValue {
        key: k.into(),
        value: Some(AnyValue {
            value: Some(any_value::Value::StringValue(v.into())),
        }),
    }
}

fn int_attr(k: &str, v: i64) -> KeyValue {
    KeyValue {
        key: k.into(),
        value: Some(AnyValue {
            value: Some(any_value::Value::IntValue(v)),
        }),
    }
}

fn resource_attrs() -> Vec<KeyValue> {
    vec![
        s("host.id", "148f400ad3ea"),
        s("host.name", "148f400ad3ea"),
        s("os.type", "linux"),
        s("service.instance.id", "148f400ad3ea:297514"),
        s("service.name", "python3.13"),
        s("telemetry.sdk.language", "python"),
        s("telemetry.sdk.name", "opentelemetry-ebpf-instrumentation"),
        s("telemetry.sdk.version", "main"),
    ]
}

fn request_with(attrs: Vec<KeyValue>, metrics: Vec<Metric>) -> ExportMetricsServiceRequest {
    ExportMetricsServiceRequest {
        resource_metrics: vec![ResourceMetrics {
            resource: Some(Resource {
                attributes: attrs,
                ..Default::default()
            }),
            scope_metrics: vec![ScopeMetrics {
                scope: Some(InstrumentationScope {
                    name: "io.opentelemetry.obi".into(),
                    version: "0.1.0".into(),
                    ..Default::default()
                }),
                metrics,
                ..Default::default()
            }],
            ..Default::default()
        }],
    }
}

fn request(metrics: Vec<Metric>) -> ExportMetricsServiceRequest {
    request_with(resource_attrs(), metrics)
}

fn metric(name: &str, unit: &str, desc: &str, data: Data) -> Metric {
    Metric {
        name: name.into(),
        unit: unit.into(),
        description: desc.into(),
        data: Some(data),
        ..Default::default()
    }
}

fn num(
    attrs: Vec<KeyValue>,
    start: u64,
    time: u64,
    v: number_data_point::Value,
) -> NumberDataPoint {
    NumberDataPoint {
        attributes: attrs,
        start_time_unix_nano: start,
        time_unix_nano: time,
        value: Some(v),
        ..Default::default()
    }
}

fn gauge(name: &str, unit: &str, desc: &str, points: Vec<NumberDataPoint>) -> Metric {
    metric(
        name,
        unit,
        desc,
        Data::Gauge(Gauge {
            data_points: points,
        }),
    )
}

fn sum(
    name: &str,
    unit: &str,
    desc: &str,
    monotonic: bool,
    temporality: i32,
    points: Vec<NumberDataPoint>,
) -> Metric {
    metric(
        name,
        unit,
        desc,
        Data::Sum(Sum {
            data_points: points,
            aggregation_temporality: temporality,
            is_monotonic: monotonic,
        }),
    )
}

#[allow(clippy::too_many_arguments)]
fn hist(
    name: &str,
    unit: &str,
    desc: &str,
    temporality: i32,
    attrs: Vec<KeyValue>,
    start: u64,
    time: u64,
    bounds: &[f64],
    counts: &[u64],
    total: f64,
) -> Metric {
    metric(
        name,
        unit,
        desc,
        Data::Histogram(Histogram {
            data_points: vec![HistogramDataPoint {
                attributes: attrs,
                start_time_unix_nano: start,
                time_unix_nano: time,
                count: counts.iter().sum(),
                sum: Some(total),
                bucket_counts: counts.to_vec(),
                explicit_bounds: bounds.to_vec(),
                ..Default::default()
            }],
            aggregation_temporality: temporality,
        }),
    )
}

const DELTA: i32 = 1;
const CUMULATIVE: i32 = 2;

fn ctx() -> ExporterContext {
    ExporterContext {
        id: ComponentId::parse("prometheus").expect("valid id"),
        signal: Signal::Metrics,
        telemetry: Telemetry::default(),
    }
}

fn config(yaml: &str) -> Result<PrometheusConfig, pipeline_core::ConfigError> {
    let v: serde_yaml::Value = serde_yaml::from_str(yaml).expect("test yaml");
    parse_component::<PrometheusConfig>(&v, "exporters::prometheus")
}

fn exporter_with(yaml: &str, tel: &Telemetry) -> Arc<PrometheusExporter> {
    config(yaml)
        .expect("valid config")
        .build_exporter(ExporterContext {
            telemetry: tel.clone(),
            ..ctx()
        })
        .expect("builds")
}

fn exporter(yaml: &str) -> Arc<PrometheusExporter> {
    exporter_with(yaml, &Telemetry::default())
}

fn first_payload() -> ExportMetricsServiceRequest {
    use number_data_point::Value::{AsDouble, AsInt};
    request(vec![
        gauge(
            "process.memory.usage",
            "By",
            "Resident memory.",
            vec![num(vec![], 0, T1, AsInt(1_048_576))],
        ),
        gauge(
            "system.cpu.utilization",
            "1",
            "",
            vec![num(vec![s("cpu.mode", "user")], 0, T1, AsDouble(0.25))],
        ),
        sum(
            "http.server.requests",
            "{request}",
            "Requests.",
            true,
            CUMULATIVE,
            vec![
                num(vec![s("http.request.method", "POST")], START, T1, AsInt(2)),
                num(vec![s("http.request.method", "GET")], START, T1, AsInt(7)),
            ],
        ),
        sum(
            "db.client.connections.usage",
            "{connection}",
            "Open connections.",
            false,
            CUMULATIVE,
            vec![num(vec![], START, T1, AsInt(3))],
        ),
        hist(
            "http.server.request.duration",
            "s",
            "Duration of HTTP server requests.",
            CUMULATIVE,
            vec![int_attr("http.response.status_code", 200)],
            START,
            T1,
            &[0.005, 0.1, 1.0],
            &[1, 2, 3, 4],
            12.5,
        ),
        hist(
            "rpc.server.duration",
            "ms",
            "RPC duration.",
            DELTA,
            vec![],
            START,
            T1,
            &[10.0, 100.0],
            &[1, 1, 0],
            60.0,
        ),
        sum(
            "network.io.transmit",
            "By",
            "Bytes sent.",
            true,
            DELTA,
            vec![num(vec![], START, T1, AsInt(10))],
        ),
    ])
}

fn second_payload() -> ExportMetricsServiceRequest {
    request(vec![
        hist(
            "rpc.server.duration",
            "ms",
            "RPC duration.",
            DELTA,
            vec![],
            T1,
            T2,
            &[10.0, 100.0],
            &[0, 2, 1],
            300.0,
        ),
        sum(
            "network.io.transmit",
            "By",
            "Bytes sent.",
            true,
            DELTA,
            vec![num(vec![], T1, T2, number_data_point::Value::AsInt(20))],
        ),
    ])
}

const BASE: &str = "endpoint: 127.0.0.1:0\nnamespace: default\n";

fn expected_text() -> String {
    let c = COMMON;
    let d = "default_http_server_request_duration_seconds";
    let r = "default_rpc_server_duration_milliseconds";
    format!(
        "# HELP default_db_client_connections_usage Open connections.
# TYPE default_db_client_connections_usage gauge
default_db_client_connections_usage{{{c}}} 3
# HELP {d} Duration of HTTP server requests.
# TYPE {d} histogram
{d}_bucket{{http_response_status_code=\"200\",{c},le=\"0.005\"}} 1
{d}_bucket{{http_response_status_code=\"200\",{c},le=\"0.1\"}} 3
{d}_bucket{{http_response_status_code=\"200\",{c},le=\"1\"}} 6
{d}_bucket{{http_response_status_code=\"200\",{c},le=\"+Inf\"}} 10
{d}_sum{{http_response_status_code=\"200\",{c}}} 12.5
{d}_count{{http_response_status_code=\"200\",{c}}} 10
# HELP default_http_server_requests_total Requests.
# TYPE default_http_server_requests_total counter
default_http_server_requests_total{{http_request_method=\"GET\",{c}}} 7
default_http_server_requests_total{{http_request_method=\"POST\",{c}}} 2
# HELP default_network_io_transmit_bytes_total Bytes sent.
# TYPE default_network_io_transmit_bytes_total counter
default_network_io_transmit_bytes_total{{{c}}} 30
# HELP default_process_memory_usage_bytes Resident memory.
# TYPE default_process_memory_usage_bytes gauge
default_process_memory_usage_bytes{{{c}}} 1.048576e+06
# HELP {r} RPC duration.
# TYPE {r} histogram
{r}_bucket{{{c},le=\"10\"}} 1
{r}_bucket{{{c},le=\"100\"}} 4
{r}_bucket{{{c},le=\"+Inf\"}} 5
{r}_sum{{{c}}} 360
{r}_count{{{c}}} 5
# HELP default_system_cpu_utilization_ratio \n# TYPE default_system_cpu_utilization_ratio gauge
default_system_cpu_utilization_ratio{{cpu_mode=\"user\",{c}}} 0.25
# HELP default_target_info Target metadata
# TYPE default_target_info gauge
{TARGET_INFO}
"
    )
}

/// Checks `text` against the Prometheus text format rules a scraper enforces: comment and
/// sample syntax, HELP/TYPE at most once per family and before its samples, families not
/// interleaved, samples matching their family's type, no duplicate series, cumulative buckets.
fn check_exposition(text: &str) {
    fn valid_name(n: &str, colon: bool) -> bool {
        let mut cs = n.chars();
        matches!(cs.next(), Some(c) if c.is_ascii_alphabetic() || c == '_' || (colon && c == ':'))
            && cs.all(|c| c.is_ascii_alphanumeric() || c == '_' || (colon && c == ':'))
    }
    fn value(v: &str) -> f64 {
        match v {
            "+Inf" => f64::INFINITY,
            "-Inf" => f64::NEG_INFINITY,
            "NaN" => f64::NAN,
            v => v.parse().unwrap_or_else(|_| panic!("bad value {v:?}")),
        }
    }
    let mut types: HashMap<String, String> = HashMap::new();
    let mut helps: HashSet<String> = HashSet::new();
    let mut done: HashSet<String> = HashSet::new();
    let mut current = String::new();
    let mut series: HashSet<String> = HashSet::new();
    let mut buckets: HashMap<String, (f64, f64)> = HashMap::new();
    assert!(text.is_empty() || text.ends_with('\n'));
    for line in text.lines() {
        let mut enter = |fam: &str, current: &mut String| {
            if current != fam {
                assert!(!done.contains(fam), "family {fam} is interleaved:\n{text}");
                if !current.is_empty() {
                    done.insert(current.clone());
                }
                *current = fam.to_string();
            }
        };
        if let Some(rest) = line.strip_prefix('#') {
            let mut parts = rest.trim_start().splitn(3, ' ');
            let tag = parts.next().unwrap_or("");
            if tag != "HELP" && tag != "TYPE" {
                continue;
            }
            let name = parts.next().expect("name after HELP/TYPE");
            assert!(valid_name(name, true), "bad family name {name:?}");
            enter(name, &mut current);
            if tag == "HELP" {
                assert!(helps.insert(name.into()), "second HELP for {name}");
            } else {
                let t = parts.next().expect("type");
                assert!(["counter", "gauge", "histogram", "summary", "untyped"].contains(&t));
                assert!(
                    types.insert(name.into(), t.into()).is_none(),
                    "second TYPE for {name}"
                );
                assert!(
                    !series.iter().any(|k| k.split('{').next() == Some(name)),
                    "TYPE after samples of {name}"
                );
            }
            continue;
        }
        let name_end = line.find(['{', ' ']).expect("sample has a value");
        let name = &line[..name_end];
        assert!(valid_name(name, true), "bad metric name {name:?}");
        let mut rest = &line[name_end..];
        let mut labels: Vec<(String, String)> = Vec::new();
        if let Some(body) = rest.strip_prefix('{') {
            let mut b = body;
            loop {
                if let Some(after) = b.strip_prefix('}') {
                    rest = after;
                    break;
                }
                let eq = b.find('=').expect("label has =");
                let lname = &b[..eq];
                assert!(
                    valid_name(lname, false),
                    "bad label name {lname:?} in {line}"
                );
                b = b[eq + 1..].strip_prefix('"').expect("quoted label value");
                let mut val = String::new();
                let mut chars = b.char_indices();
                let end = loop {
                    let (i, c) = chars.next().expect("label value ends");
                    match c {
                        '\\' => match chars.next().map(|x| x.1) {
                            Some('\\') => val.push('\\'),
                            Some('"') => val.push('"'),
                            Some('n') => val.push('\n'),
                            other => panic!("bad escape {other:?} in {line}"),
                        },
                        '"' => break i,
                        '\n' => panic!("raw newline"),
                        c => val.push(c),
                    }
                };
                assert!(
                    !labels.iter().any(|(n, _)| n == lname),
                    "duplicate label {lname} in {line}"
                );
                labels.push((lname.to_string(), val));
                b = &b[end + 1..];
                b = b.strip_prefix(',').unwrap_or(b);
            }
        }
        let mut fields = rest
            .strip_prefix(' ')
            .expect("space before value")
            .split(' ');
        let v = value(fields.next().expect("value"));
        if let Some(ts) = fields.next() {
            ts.parse::<i64>().expect("integer timestamp");
        }
        assert!(fields.next().is_none(), "trailing fields in {line}");

        let (family, suffix) = if types.contains_key(name) {
            (name.to_string(), "")
        } else {
            ["_bucket", "_sum", "_count", "_total", "_created"]
                .iter()
                .find_map(|suf| {
                    name.strip_suffix(suf)
                        .filter(|base| types.contains_key(*base))
                        .map(|base| (base.to_string(), *suf))
                })
                .unwrap_or_else(|| panic!("sample {name} has no TYPE"))
        };
        assert_eq!(family, current, "sample {name} outside its family block");
        let get = |k: &str| labels.iter().find(|(n, _)| n == k).map(|(_, v)| v.clone());
        match types[&family].as_str() {
            "histogram" => {
                assert!(["_bucket", "_sum", "_count"].contains(&suffix), "{line}");
                if suffix == "_bucket" {
                    let le = value(&get("le").expect("bucket has le"));
                    let mut rest: Vec<_> =
                        labels.iter().filter(|(n, _)| n != "le").cloned().collect();
                    rest.sort();
                    let prev = buckets.insert(format!("{family}{rest:?}"), (le, v));
                    if let Some((ple, pv)) = prev {
                        assert!(le > ple && v >= pv, "buckets not cumulative at {line}");
                    }
                }
            }
            "summary" => assert!(
                (suffix.is_empty() && get("quantile").is_some())
                    || suffix == "_sum"
                    || suffix == "_count",
                "{line}"
            ),
            _ => assert_eq!(suffix, "", "{line}"),
        }
        labels.sort();
        assert!(
            series.insert(format!("{name}{labels:?}")),
            "duplicate series {line}"
        );
    }
}

#[test]
fn renders_exact_text_with_target_info() {
    let e = exporter(BASE);
    let now = Instant::now();
    e.inner.ingest(&first_payload(), now);
    e.inner.ingest(&second_payload(), now);
    let text = e.inner.scrape(Format::TEXT, now);
    assert_eq!(text, expected_text(), "got:\n{text}");
    check_exposition(&text);
    assert!(text.contains(&format!("\n{TARGET_INFO}\n")));
}

#[test]
fn open_metrics_names_counters_without_total_and_ends_with_eof() {
    let e = exporter(&format!("{BASE}enable_open_metrics: true\n"));
    let now = Instant::now();
    e.inner.ingest(&first_payload(), now);
    let om = Format {
        open_metrics: true,
        utf8: false,
    };
    let text = e.inner.scrape(om, now);
    let c = COMMON;
    assert!(text.contains("# HELP default_http_server_requests Requests.\n# TYPE default_http_server_requests counter\n"), "{text}");
    assert!(
        text.contains(&format!(
            "default_http_server_requests_total{{http_request_method=\"GET\",{c}}} 7.0\n"
        )),
        "{text}"
    );
    assert!(
        text.contains(&format!(
            "default_http_server_requests_created{{http_request_method=\"GET\",{c}}} 1.7e+09\n"
        )),
        "{text}"
    );
    assert!(text.contains(&format!("default_http_server_request_duration_seconds_bucket{{http_response_status_code=\"200\",{c},le=\"1.0\"}} 6\n")), "{text}");
    assert!(
        text.contains("default_target_info{host_id=\"148f400ad3ea\","),
        "{text}"
    );
    assert!(text.ends_with("} 1.0\n# EOF\n"), "{text}");
}

#[test]
fn series_expire_and_target_info_follows_them() {
    let e = exporter(&format!("{BASE}metric_expiration: 5m\n"));
    let t0 = Instant::now();
    e.inner.ingest(&first_payload(), t0);
    let later = t0 + Duration::from_secs(240);
    e.inner.ingest(
        &request(vec![gauge(
            "queue.size",
            "",
            "",
            vec![num(vec![], 0, T2, number_data_point::Value::AsInt(4))],
        )]),
        later,
    );
    let text = e.inner.scrape(Format::TEXT, t0 + Duration::from_secs(299));
    assert!(text.contains("default_process_memory_usage_bytes{"));
    let text = e.inner.scrape(Format::TEXT, t0 + Duration::from_secs(301));
    assert!(
        !text.contains("default_process_memory_usage_bytes"),
        "{text}"
    );
    assert!(
        text.contains(&format!("default_queue_size{{{COMMON}}} 4\n")),
        "{text}"
    );
    assert!(text.contains(TARGET_INFO));
    check_exposition(&text);
    let text = e
        .inner
        .scrape(Format::TEXT, later + Duration::from_secs(301));
    assert_eq!(text, "");
    assert_eq!(e.inner.counters.series.get(), 0);
}

#[test]
fn options_change_labels_names_and_timestamps() {
    let e = exporter(
        "endpoint: 127.0.0.1:0\nsend_timestamps: true\nadd_metric_suffixes: false\nconst_labels: {env: prod, shard: 2}\nresource_to_telemetry_conversion: {enabled: true}\n",
    );
    let now = Instant::now();
    let req = request_with(
        vec![
            s("service.name", "api"),
            s("service.namespace", "shop"),
            s("deployment.environment", "eu"),
        ],
        vec![sum(
            "http.server.requests",
            "{request}",
            "",
            true,
            CUMULATIVE,
            vec![num(
                vec![s("path", "/a\"b\\c\nd")],
                START,
                T1,
                number_data_point::Value::AsDouble(1.5),
            )],
        )],
    );
    e.inner.ingest(&req, now);
    let text = e.inner.scrape(Format::TEXT, now);
    let ms = T1 / 1_000_000;
    assert_eq!(
        text,
        format!(
            "# HELP http_server_requests \n# TYPE http_server_requests counter\n\
             http_server_requests{{deployment_environment=\"eu\",env=\"prod\",job=\"shop/api\",otel_scope_name=\"io.opentelemetry.obi\",otel_scope_version=\"0.1.0\",path=\"/a\\\"b\\\\c\\nd\",service_name=\"api\",service_namespace=\"shop\",shard=\"2\"}} 1.5 {ms}\n\
             # HELP target_info Target metadata\n# TYPE target_info gauge\n\
             target_info{{deployment_environment=\"eu\",job=\"shop/api\",service_name=\"api\",service_namespace=\"shop\"}} 1\n"
        )
    );
    check_exposition(&text);
}

#[test]
fn conflicting_types_stale_markers_and_unspecified_temporality_are_counted() {
    let tel = Telemetry::default();
    let e = exporter_with("endpoint: 127.0.0.1:0\nadd_metric_suffixes: false\n", &tel);
    let now = Instant::now();
    let dropped = |reason: &str| {
        tel.value(
            "sonde_exporter_prometheus_dropped_points",
            &[("exporter", "prometheus"), ("reason", reason)],
        )
    };
    use number_data_point::Value::AsInt;
    e.inner.ingest(
        &request(vec![gauge("x", "", "", vec![num(vec![], 0, T1, AsInt(1))])]),
        now,
    );
    e.inner.ingest(
        &request(vec![sum(
            "x",
            "",
            "",
            true,
            CUMULATIVE,
            vec![num(vec![], 0, T2, AsInt(5))],
        )]),
        now,
    );
    assert_eq!(dropped("type_conflict"), Some(1));
    e.inner.ingest(
        &request(vec![sum(
            "y",
            "",
            "",
            true,
            0,
            vec![num(vec![], 0, T2, AsInt(5))],
        )]),
        now,
    );
    assert_eq!(dropped("unspecified_temporality"), Some(1));
    e.inner.ingest(
        &request(vec![gauge(
            "x",
            "",
            "",
            vec![num(vec![], 0, T1 - 1, AsInt(9))],
        )]),
        now,
    );
    assert_eq!(dropped("out_of_order"), Some(1));
    let text = e.inner.scrape(Format::TEXT, now);
    assert!(text.contains("\nx{"), "{text}");
    let mut stale = num(vec![], 0, T2, AsInt(0));
    stale.flags = 1;
    stale.value = None;
    e.inner
        .ingest(&request(vec![gauge("x", "", "", vec![stale])]), now);
    assert_eq!(e.inner.scrape(Format::TEXT, now), "");
    assert_eq!(
        tel.value(
            "otelcol_exporter_sent_metric_points",
            &[("exporter", "prometheus")]
        ),
        Some(2)
    );
}

fn exp_and_summary() -> Vec<Metric> {
    let exp = metric(
        "latency",
        "s",
        "",
        Data::ExponentialHistogram(ExponentialHistogram {
            aggregation_temporality: CUMULATIVE,
            data_points: vec![ExponentialHistogramDataPoint {
                time_unix_nano: T1,
                count: 6,
                sum: Some(7.0),
                scale: 1,
                zero_count: 1,
                positive: Some(Buckets {
                    offset: 0,
                    bucket_counts: vec![2, 3],
                }),
                ..Default::default()
            }],
        }),
    );
    let summary = metric(
        "rpc.latency",
        "ms",
        "",
        Data::Summary(Summary {
            data_points: vec![SummaryDataPoint {
                time_unix_nano: T1,
                count: 4,
                sum: 10.0,
                quantile_values: vec![
                    ValueAtQuantile {
                        quantile: 0.99,
                        value: 9.0,
                    },
                    ValueAtQuantile {
                        quantile: 0.5,
                        value: 2.0,
                    },
                ],
                ..Default::default()
            }],
        }),
    );
    vec![exp, summary]
}

#[test]
fn exponential_histograms_and_summaries() {
    let tel = Telemetry::default();
    let e = exporter_with("endpoint: 127.0.0.1:0\n", &tel);
    let now = Instant::now();
    e.inner
        .ingest(&request_with(vec![], exp_and_summary()), now);
    let text = e.inner.scrape(Format::TEXT, now);
    let l = "otel_scope_name=\"io.opentelemetry.obi\",otel_scope_version=\"0.1.0\"";
    assert_eq!(
        text,
        format!(
            "# HELP latency_seconds \n# TYPE latency_seconds histogram\n\
             latency_seconds_bucket{{{l},le=\"0\"}} 1\n\
             latency_seconds_bucket{{{l},le=\"1.4142135623730951\"}} 3\n\
             latency_seconds_bucket{{{l},le=\"2\"}} 6\n\
             latency_seconds_bucket{{{l},le=\"+Inf\"}} 6\n\
             latency_seconds_sum{{{l}}} 7\n\
             latency_seconds_count{{{l}}} 6\n\
             # HELP rpc_latency_milliseconds \n# TYPE rpc_latency_milliseconds summary\n\
             rpc_latency_milliseconds{{{l},quantile=\"0.5\"}} 2\n\
             rpc_latency_milliseconds{{{l},quantile=\"0.99\"}} 9\n\
             rpc_latency_milliseconds_sum{{{l}}} 10\n\
             rpc_latency_milliseconds_count{{{l}}} 4\n"
        )
    );
    check_exposition(&text);
    assert_eq!(
        tel.value(
            "sonde_exporter_prometheus_exponential_histogram_points_converted",
            &[("exporter", "prometheus")]
        ),
        Some(1)
    );
}

#[test]
fn utf8_strategy_quotes_for_utf8_scrapers_and_escapes_for_others() {
    let e = exporter("endpoint: 127.0.0.1:0\ntranslation_strategy: NoUTF8EscapingWithSuffixes\n");
    let now = Instant::now();
    e.inner.ingest(
        &request_with(
            vec![],
            vec![gauge(
                "queue.depth",
                "{item}",
                "",
                vec![num(
                    vec![s("queue.name", "a")],
                    0,
                    T1,
                    number_data_point::Value::AsInt(3),
                )],
            )],
        ),
        now,
    );
    let utf8 = e.inner.scrape(
        Format {
            open_metrics: false,
            utf8: true,
        },
        now,
    );
    assert_eq!(
        utf8,
        "# HELP \"queue.depth\" \n# TYPE \"queue.depth\" gauge\n\
         {\"queue.depth\",otel_scope_name=\"io.opentelemetry.obi\",otel_scope_version=\"0.1.0\",\"queue.name\"=\"a\"} 3\n"
    );
    let text = e.inner.scrape(Format::TEXT, now);
    assert_eq!(
        text,
        "# HELP queue_depth \n# TYPE queue_depth gauge\n\
         queue_depth{otel_scope_name=\"io.opentelemetry.obi\",otel_scope_version=\"0.1.0\",queue_name=\"a\"} 3\n"
    );
    check_exposition(&text);
}

#[test]
fn config_defaults_and_validation() {
    let c = config("endpoint: 0.0.0.0:8889\nnamespace: default\n").expect("valid");
    assert_eq!(c.metric_expiration, Duration::from_secs(300));
    assert!(c.add_metric_suffixes);
    assert!(!c.enable_open_metrics);
    assert_eq!(c.translation_strategy, None);
    let c = config("endpoint: otel-collector:8889\nmetric_expiration: 1m\ntranslation_strategy: UnderscoreEscapingWithoutSuffixes\n").expect("valid");
    assert_eq!(c.metric_expiration, Duration::from_secs(60));
    assert_eq!(c.suffixes_and_utf8(), (false, false));
    for t in [
        "UnderscoreEscapingWithSuffixes",
        "NoUTF8EscapingWithSuffixes",
        "NoTranslation",
        "\"\"",
    ] {
        config(&format!("endpoint: :8889\ntranslation_strategy: {t}\n")).expect(t);
    }
    let err = config("endpoint: 0.0.0.0:8889\nnamespce: x\n").expect_err("unknown key");
    assert!(
        err.to_string()
            .contains("'exporters::prometheus' has invalid keys: namespce"),
        "{err}"
    );
    let err = config("endpoint: 0.0.0.0:8889\nresource_to_telemetry_conversion: {enable: true}\n")
        .expect_err("unknown key");
    assert!(
        err.to_string().contains("has invalid keys: enable"),
        "{err}"
    );
    assert!(config("endpoint: 0.0.0.0:8889\ntranslation_strategy: Fancy\n").is_err());
    assert!(config("namespace: x\n")
        .expect_err("no endpoint")
        .to_string()
        .contains("endpoint"));
    assert!(config("endpoint: localhost\n").is_err());
    assert!(config("endpoint: 0.0.0.0:8889\nconst_labels: {bad-name: x}\n").is_err());
    assert!(config("endpoint: 0.0.0.0:8889\nmetric_expiration: 0s\n").is_err());
    // The factory parses without touching the network, even for names that do not resolve.
    (FACTORY.parse)(
        &serde_yaml::from_str("endpoint: no-such-host.invalid:8889").expect("yaml"),
        "exporters::prometheus",
    )
    .expect("parse")
    .build(ctx())
    .expect("build");
}

async fn http_get(addr: SocketAddr, path: &str, headers: &str) -> (String, Vec<u8>) {
    let mut conn = tokio::net::TcpStream::connect(addr).await.expect("connect");
    let req =
        format!("GET {path} HTTP/1.1\r\nHost: localhost\r\n{headers}Connection: close\r\n\r\n");
    conn.write_all(req.as_bytes()).await.expect("send");
    let mut raw = Vec::new();
    conn.read_to_end(&mut raw).await.expect("read");
    let split = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .expect("header end");
    let head = String::from_utf8_lossy(&raw[..split]).to_string();
    (head, raw[split + 4..].to_vec())
}

#[tokio::test]
async fn scrape_over_http_then_shutdown_closes_the_port() {
    let e = exporter(&format!("{BASE}enable_open_metrics: true\n"));
    e.shutdown().await.expect("shutdown without start");
    e.start().await.expect("start");
    let addr = e.local_addr().expect("bound");
    let mut encoded = Vec::new();
    first_payload().encode(&mut encoded).expect("encode");
    let p = Payload::from_encoded(Signal::Metrics, Bytes::from(encoded)).expect("valid payload");
    e.consume(p).await.expect("consume");
    e.consume(Payload::from_metrics(second_payload()))
        .await
        .expect("consume");

    let (head, body) = http_get(addr, "/metrics", "").await;
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    assert!(
        head.to_ascii_lowercase()
            .contains("content-type: text/plain; version=0.0.4; charset=utf-8"),
        "{head}"
    );
    let body = String::from_utf8(body).expect("utf-8");
    assert_eq!(body, expected_text());

    let (head, body) = http_get(addr, "/metrics", "Accept: application/openmetrics-text;version=1.0.0;q=0.6,text/plain;version=0.0.4;q=0.3\r\nAccept-Encoding: gzip\r\n").await;
    let lower = head.to_ascii_lowercase();
    assert!(
        lower.contains("content-type: application/openmetrics-text; version=1.0.0"),
        "{head}"
    );
    assert!(lower.contains("content-encoding: gzip"), "{head}");
    let mut text = String::new();
    flate2::read::GzDecoder::new(&body[..])
        .read_to_string(&mut text)
        .expect("gzip body");
    assert!(text.ends_with("# EOF\n"), "{text}");

    let (head, _) = http_get(addr, "/", "").await;
    assert!(head.starts_with("HTTP/1.1 404"), "{head}");

    let err = exporter(&format!("endpoint: {addr}\n"))
        .start()
        .await
        .expect_err("port in use");
    assert!(err.to_string().contains(&addr.to_string()), "{err}");

    e.shutdown().await.expect("shutdown");
    assert!(
        tokio::net::TcpStream::connect(addr).await.is_err(),
        "port still open after shutdown"
    );
    assert_eq!(e.local_addr(), None);
}

#[tokio::test]
async fn undecodable_payload_is_a_permanent_error() {
    let e = exporter(BASE);
    // A traces payload handed to a metrics exporter.
    let p = Payload::from_traces(Default::default());
    let err = e.consume(p).await.expect_err("wrong signal");
    assert!(!err.is_retryable());
}

#[test]
#[should_panic(expected = "duplicate series")]
fn checker_rejects_duplicate_series() {
    check_exposition("# TYPE a gauge\na{x=\"1\"} 1\na{x=\"1\"} 2\n");
}

#[test]
#[should_panic(expected = "second TYPE")]
fn checker_rejects_a_second_type_line() {
    check_exposition("# TYPE a gauge\na 1\n# TYPE a gauge\n");
}

#[test]
#[should_panic(expected = "outside its family block")]
fn checker_rejects_interleaved_families() {
    check_exposition("# TYPE a gauge\na 1\n# TYPE b gauge\nb 1\na{x=\"1\"} 2\n");
}

/// Prometheus' own parser, where it is installed (it is on the project's machines).
#[test]
fn promtool_parses_the_output() {
    let promtool = std::path::Path::new("/usr/bin/promtool");
    if !promtool.exists() {
        eprintln!("promtool not installed; skipping");
        return;
    }
    let e = exporter(BASE);
    let now = Instant::now();
    e.inner.ingest(&first_payload(), now);
    e.inner.ingest(&second_payload(), now);
    e.inner
        .ingest(&request_with(vec![], exp_and_summary()), now);
    let odd = request_with(
        vec![s("service.name", "odd \"svc\"\n"), s("9.lives", "x")],
        vec![gauge(
            "1st.metric-name",
            "%",
            "Help with \\ and\nnewline.",
            vec![num(
                vec![s("path", "C:\\dir\n\"q\"")],
                0,
                T1,
                number_data_point::Value::AsDouble(f64::NAN),
            )],
        )],
    );
    e.inner.ingest(&odd, now);
    let text = e.inner.scrape(Format::TEXT, now);
    check_exposition(&text);
    assert!(
        text.contains(r#"default_1st_metric_name_percent{job="odd \"svc\"\n",otel_scope_name"#),
        "{text}"
    );
    assert!(text.contains(r#"default_target_info{job="odd \"svc\"\n",key_9_lives="x",service_name="odd \"svc\"\n"} 1"#), "{text}");
    let mut child = std::process::Command::new(promtool)
        .args(["check", "metrics"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("run promtool");
    use std::io::Write as _;
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(text.as_bytes())
        .expect("write");
    let out = child.wait_with_output().expect("promtool output");
    let report = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    // Exit status 3 is promtool's style lints (no help text, milliseconds instead of seconds),
    // which the reference's output gets as well; a parse error is status 1.
    assert!(
        matches!(out.status.code(), Some(0 | 3)) && !report.contains("parsing error"),
        "promtool rejected the exposition: {report}\n{text}"
    );
}

#[test]
fn open_metrics_never_repeats_a_family_name() {
    use number_data_point::Value::AsInt;
    let e = exporter("endpoint: 127.0.0.1:0\nenable_open_metrics: true\n");
    let now = Instant::now();
    // `requests_total` (counter) and `requests` (gauge) are both family `requests` in OpenMetrics.
    e.inner.ingest(
        &request_with(
            vec![],
            vec![
                sum(
                    "requests",
                    "",
                    "",
                    true,
                    CUMULATIVE,
                    vec![num(vec![], 0, T1, AsInt(5))],
                ),
                gauge("requests", "", "", vec![num(vec![], 0, T1, AsInt(2))]),
            ],
        ),
        now,
    );
    let text = e.inner.scrape(Format::TEXT, now);
    assert!(
        text.contains("# TYPE requests gauge\n")
            && text.contains("# TYPE requests_total counter\n"),
        "{text}"
    );
    let om = e.inner.scrape(
        Format {
            open_metrics: true,
            utf8: false,
        },
        now,
    );
    assert_eq!(om.matches("# TYPE requests ").count(), 1, "{om}");
    assert!(om.ends_with("# EOF\n"));
}
