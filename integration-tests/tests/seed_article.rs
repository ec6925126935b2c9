//! The seed article's production setup, run on loopback from the seed files themselves
//! (`shared/seed/production/otel-collector-config*.yml`), with only the endpoints overridden by
//! `--set`: two Python SDK processes stand in for OBI's instrumented servers (same service,
//! different `service.instance.id`, one of them the article's `148f400ad3ea:297514`), a
//! capturing OTLP/gRPC sink stands in for Jaeger, and the Prometheus endpoint is read directly.
//!
//! The filtered config documents the reference filter semantics the article got backwards: its
//! `filter/host_id` condition `resource.attributes["service.instance.id"] == "148f400ad3ea:297514"`
//! DROPS that instance's spans (the author expected to keep only them), and because the processor
//! lists only `traces.span` conditions it lets every metric through in the metrics pipeline.

use std::collections::{BTreeMap, HashSet};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use integration_tests::otlp::to_json;
use integration_tests::*;
use serde_json::Value;

/// The instance the article's filter names (server01's PID 297514 in container 148f400ad3ea).
const FILTERED_INSTANCE: &str = "148f400ad3ea:297514";
/// Another instrumented process of the same program (server02's PID in its own container).
const OTHER_INSTANCE: &str = "7c1a9e02b4f1:310288";
/// OBI names the service after the executable.
const SERVICE: &str = "python3.13";
const SPANS: usize = 30;
const RECORDINGS: usize = 20;

fn seed_config(name: &str) -> PathBuf {
    let p = shared_dir().join("seed/production").join(name);
    assert!(p.exists(), "{} is missing", p.display());
    p
}

struct Ports {
    http: u16,
    jaeger: u16,
    prom: u16,
    telemetry: u16,
}

impl Ports {
    fn new() -> Ports {
        Ports {
            http: free_port(),
            jaeger: free_port(),
            prom: free_port(),
            telemetry: free_port(),
        }
    }

    /// The seed's endpoints are container host names; the ids contain `/` and the values `.`,
    /// hence the `::` key form. Internal metrics move off the default :8888 so parallel tests
    /// (and anything else on the machine) do not collide.
    fn overrides(&self) -> Vec<String> {
        vec![
            format!(
                "receivers::otlp::protocols::http::endpoint=127.0.0.1:{}",
                self.http
            ),
            format!("exporters::otlp/jaeger::endpoint=127.0.0.1:{}", self.jaeger),
            format!("exporters::prometheus::endpoint=127.0.0.1:{}", self.prom),
            format!(
                "service::telemetry::metrics::address=127.0.0.1:{}",
                self.telemetry
            ),
        ]
    }
}

/// Starts Sonde on a seed config with the loopback overrides; its log goes to `dir/sonde.log`.
fn start_sonde(config: &Path, ports: &Ports, dir: &Path) -> Proc {
    let log = dir.join("sonde.log");
    let mut cmd = Command::new(bin("sonde"));
    cmd.arg("--config").arg(config);
    for s in ports.overrides() {
        cmd.arg("--set").arg(s);
    }
    cmd.stdout(Stdio::null())
        .stderr(Stdio::from(std::fs::File::create(&log).expect("sonde log")));
    let mut p = Proc::spawn("sonde", &mut cmd);
    wait_listening(&mut p, &[ports.http, ports.prom, ports.telemetry], &log);
    p
}

/// Runs one instrumented "server" (Python SDK, OTLP/HTTP like OBI in the article) with the
/// resource the article's target_info shows; returns what the SDK reports as exported.
fn run_instance(http: u16, instance: &str) -> Value {
    let (host, _pid) = instance.split_once(':').expect("host:pid");
    let script = workspace_root().join("integration-tests/py/send_signals.py");
    let out = Command::new("python3")
        .arg(script)
        .args(["--protocol", "http"])
        .args(["--endpoint", &format!("http://127.0.0.1:{http}")])
        .args(["--service", SERVICE, "--instance", instance])
        .args(["--attr", &format!("host.id={host}")])
        .args(["--attr", &format!("host.name={host}")])
        .args(["--attr", "os.type=linux"])
        .args(["--spans", &SPANS.to_string()])
        .args(["--metrics", &RECORDINGS.to_string()])
        .output()
        .expect("python3");
    assert!(
        out.status.success(),
        "python sender for {instance} failed (it must get success even when its data is \
         filtered): {}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let v: Value = serde_json::from_slice(&out.stdout).expect("sender prints one JSON object");
    assert_eq!(v["spans"].as_array().map(Vec::len), Some(SPANS), "{v}");
    v
}

fn span_ids(sent: &Value) -> HashSet<String> {
    sent["spans"]
        .as_array()
        .expect("spans")
        .iter()
        .filter_map(|s| s["span_id"].as_str().map(str::to_string))
        .collect()
}

/// Span ids that reached the sink, by the `service.instance.id` of their resource.
fn arrived_by_instance(cap: &Capture) -> BTreeMap<String, Vec<String>> {
    let mut out: BTreeMap<String, Vec<String>> = BTreeMap::new();
    let reqs = cap.requests.lock().unwrap();
    for rs in reqs.iter().flat_map(|r| &r.resource_spans) {
        let instance = rs
            .resource
            .as_ref()
            .and_then(|r| {
                r.attributes
                    .iter()
                    .find(|kv| kv.key == "service.instance.id")
            })
            .map(|kv| to_json(&kv.value))
            .and_then(|v| v.as_str().map(str::to_string))
            .unwrap_or_default();
        let ids = out.entry(instance).or_default();
        for ss in &rs.scope_spans {
            ids.extend(ss.spans.iter().map(|s| hex::encode(&s.span_id)));
        }
    }
    out
}

/// One sample of a Prometheus text page: name, labels, value.
struct Sample {
    name: String,
    labels: BTreeMap<String, String>,
    value: f64,
}

fn parse_page(page: &str) -> Vec<Sample> {
    let mut out = Vec::new();
    for line in page
        .lines()
        .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
    {
        let (series, value) = match line.rsplit_once(' ') {
            Some(x) => x,
            None => continue,
        };
        let Ok(value) = value.parse::<f64>() else {
            continue;
        };
        let (name, rest) = match series.split_once('{') {
            Some((n, r)) => (n, r.strip_suffix('}').unwrap_or(r)),
            None => (series, ""),
        };
        let mut labels = BTreeMap::new();
        let mut chars = rest.chars().peekable();
        loop {
            let key: String = chars.by_ref().take_while(|c| *c != '=').collect();
            if key.is_empty() {
                break;
            }
            if chars.next() != Some('"') {
                break;
            }
            let mut val = String::new();
            while let Some(c) = chars.next() {
                match c {
                    '\\' => match chars.next() {
                        Some('n') => val.push('\n'),
                        Some(other) => val.push(other),
                        None => break,
                    },
                    '"' => break,
                    c => val.push(c),
                }
            }
            labels.insert(key.trim_start_matches(',').to_string(), val);
            if chars.peek() == Some(&',') {
                chars.next();
            }
        }
        out.push(Sample {
            name: name.to_string(),
            labels,
            value,
        });
    }
    out
}

/// Sum over the samples named `name` whose labels include every pair of `with`.
fn total(samples: &[Sample], name: &str, with: &[(&str, &str)]) -> Option<f64> {
    let matching: Vec<f64> = samples
        .iter()
        .filter(|s| s.name == name)
        .filter(|s| {
            with.iter()
                .all(|(k, v)| s.labels.get(*k).map(String::as_str) == Some(v))
        })
        .map(|s| s.value)
        .collect();
    (!matching.is_empty()).then(|| matching.iter().sum())
}

/// The metrics both instances sent are on the Prometheus endpoint, unfiltered: counts, the
/// counter, and a target_info shaped like the article's.
fn assert_metrics_exported(prom: u16, sent: &[&Value]) {
    let want = |instance: &str| -> Vec<(String, f64)> {
        let m = &sent
            .iter()
            .find(|s| s["instance"] == instance)
            .expect("sender")["metrics"];
        vec![
            (
                "default_http_server_request_duration_seconds_count".into(),
                RECORDINGS as f64,
            ),
            (
                "default_sonde_it_processed_total".into(),
                m["counter_total"].as_f64().expect("counter_total"),
            ),
            (
                "default_sonde_it_active".into(),
                m["updown"].as_f64().expect("updown"),
            ),
            ("default_target_info".into(), 1.0),
        ]
    };
    let mut page = String::new();
    let complete = wait_until(Duration::from_secs(15), || {
        page = http_get(prom, "/metrics").unwrap_or_default();
        let samples = parse_page(&page);
        [FILTERED_INSTANCE, OTHER_INSTANCE].iter().all(|inst| {
            want(inst).iter().all(|(name, v)| {
                total(&samples, name, &[("instance", inst), ("job", SERVICE)]) == Some(*v)
            })
        })
    });
    assert!(
        complete,
        "metrics of both instances must pass the filter:\n{page}"
    );

    // target_info of the article's instance carries the same labels the article shows, apart
    // from the telemetry_sdk_* ones (OBI vs the Python SDK).
    let example =
        std::fs::read_to_string(shared_dir().join("seed/production/target-info-example.txt"))
            .expect("target-info-example.txt");
    let reference = parse_page(&example);
    let reference = reference
        .iter()
        .find(|s| s.name == "default_target_info")
        .expect("example has default_target_info");
    let samples = parse_page(&page);
    let ours = samples
        .iter()
        .find(|s| {
            s.name == "default_target_info"
                && s.labels.get("instance").map(String::as_str) == Some(FILTERED_INSTANCE)
        })
        .expect("target_info of the filtered instance");
    for (k, v) in reference
        .labels
        .iter()
        .filter(|(k, _)| !k.starts_with("telemetry_sdk_"))
    {
        assert_eq!(ours.labels.get(k), Some(v), "target_info label {k}: {page}");
    }
}

fn internal(telemetry: u16, series: &str) -> Option<f64> {
    metric_value(&http_get(telemetry, "/metrics")?, series)
}

#[test]
fn filtered_seed_config_drops_the_named_instance_and_keeps_metrics() {
    let dir = temp_dir("seed-filtered");
    let ports = Ports::new();
    let jaeger = CaptureServer::start(ports.jaeger);
    let _sonde = start_sonde(
        &seed_config("otel-collector-config.filtered.yml"),
        &ports,
        &dir,
    );

    // The filtered instance goes first: by the time the other one's spans have all arrived,
    // anything of the first that was going to get through would have arrived too.
    let filtered = run_instance(ports.http, FILTERED_INSTANCE);
    let kept = run_instance(ports.http, OTHER_INSTANCE);
    let want_kept = span_ids(&kept);

    assert!(
        wait_until(Duration::from_secs(20), || {
            arrived_by_instance(&jaeger.capture)
                .get(OTHER_INSTANCE)
                .is_some_and(|ids| ids.len() >= SPANS)
        }),
        "spans of {OTHER_INSTANCE} did not reach the Jaeger stand-in: {:?}\n{}",
        arrived_by_instance(&jaeger.capture),
        std::fs::read_to_string(dir.join("sonde.log")).unwrap_or_default()
    );
    std::thread::sleep(Duration::from_millis(500));
    let arrived = arrived_by_instance(&jaeger.capture);
    assert_eq!(
        arrived.keys().map(String::as_str).collect::<Vec<_>>(),
        vec![OTHER_INSTANCE],
        "the condition `service.instance.id == \"{FILTERED_INSTANCE}\"` DROPS that instance \
         (reference filter semantics); only {OTHER_INSTANCE} may reach Jaeger"
    );
    let got: HashSet<String> = arrived[OTHER_INSTANCE].iter().cloned().collect();
    assert_eq!(
        arrived[OTHER_INSTANCE].len(),
        SPANS,
        "each span exactly once"
    );
    assert_eq!(got, want_kept);
    assert!(span_ids(&filtered).is_disjoint(&got));

    // The processor's own accounting agrees: the spans of one instance were dropped in the
    // traces pipeline, and nothing was dropped in the metrics pipeline.
    let t = ports.telemetry;
    assert_eq!(
        internal(
            t,
            r#"otelcol_processor_dropped_spans{processor="filter/host_id",pipeline="traces"}"#
        ),
        Some(SPANS as f64)
    );
    assert_eq!(
        internal(
            t,
            r#"otelcol_processor_outgoing_spans{processor="filter/host_id",pipeline="traces"}"#
        ),
        Some(SPANS as f64)
    );
    assert_eq!(
        internal(t, r#"otelcol_exporter_sent_spans{exporter="otlp/jaeger"}"#),
        Some(SPANS as f64)
    );

    assert_metrics_exported(ports.prom, &[&filtered, &kept]);
    let dropped_points = internal(
        t,
        r#"otelcol_processor_dropped_metric_points{processor="filter/host_id",pipeline="metrics"}"#,
    );
    assert!(
        matches!(dropped_points, None | Some(0.0)),
        "a filter with only traces conditions dropped metric points: {dropped_points:?}"
    );
    let (incoming, outgoing) = (
        internal(
            t,
            r#"otelcol_processor_incoming_metric_points{processor="filter/host_id",pipeline="metrics"}"#,
        ),
        internal(
            t,
            r#"otelcol_processor_outgoing_metric_points{processor="filter/host_id",pipeline="metrics"}"#,
        ),
    );
    assert!(incoming.is_some_and(|n| n > 0.0), "{incoming:?}");
    assert_eq!(incoming, outgoing);
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn unfiltered_seed_config_validates_and_forwards_every_span() {
    let unfiltered = seed_config("otel-collector-config.yml");
    for config in [
        &unfiltered,
        &seed_config("otel-collector-config.filtered.yml"),
    ] {
        // As shipped: the container host names are not resolved by validation.
        let out = Command::new(bin("sonde"))
            .arg("validate")
            .arg("--config")
            .arg(config)
            .output()
            .expect("sonde validate");
        assert!(
            out.status.success(),
            "sonde validate --config {}: {}",
            config.display(),
            String::from_utf8_lossy(&out.stderr)
        );
    }

    let dir = temp_dir("seed-unfiltered");
    let ports = Ports::new();
    let jaeger = CaptureServer::start(ports.jaeger);
    let _sonde = start_sonde(&unfiltered, &ports, &dir);

    let a = run_instance(ports.http, FILTERED_INSTANCE);
    let b = run_instance(ports.http, OTHER_INSTANCE);
    assert!(
        wait_until(Duration::from_secs(20), || jaeger.capture.span_count()
            >= 2 * SPANS),
        "arrived {} of {}\n{}",
        jaeger.capture.span_count(),
        2 * SPANS,
        std::fs::read_to_string(dir.join("sonde.log")).unwrap_or_default()
    );
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(jaeger.capture.span_count(), 2 * SPANS);
    let arrived = arrived_by_instance(&jaeger.capture);
    for (instance, sent) in [(FILTERED_INSTANCE, &a), (OTHER_INSTANCE, &b)] {
        let got: HashSet<String> = arrived
            .get(instance)
            .map(|ids| ids.iter().cloned().collect())
            .unwrap_or_default();
        assert_eq!(got, span_ids(sent), "{instance}");
    }
    assert_metrics_exported(ports.prom, &[&a, &b]);
    let _ = std::fs::remove_dir_all(dir);
}
