//! End to end with a real Prometheus server: the OpenTelemetry Python SDK sends metrics over
//! OTLP/HTTP into Sonde (`otlp` receiver -> `prometheus` exporter), Prometheus scrapes Sonde
//! every second, and the test reads the result back through Prometheus' query API. What
//! Prometheus stored must match what the SDK recorded: names after translation, histogram
//! buckets/sum/count, counter and gauge values, `target_info` and the scrape's `up`.

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use integration_tests::*;
use serde_json::Value;

/// Histogram recordings the Python SDK makes (spread over 4 attribute sets).
const RECORDINGS: usize = 40;
const NS: &str = "default";

fn sonde_config(http: u16, prom: u16, telemetry: u16) -> String {
    format!(
        r#"
receivers:
  otlp:
    protocols:
      http:
        endpoint: 127.0.0.1:{http}
exporters:
  prometheus:
    endpoint: 127.0.0.1:{prom}
    namespace: {NS}
service:
  telemetry:
    metrics:
      address: 127.0.0.1:{telemetry}
  pipelines:
    metrics:
      receivers: [otlp]
      exporters: [prometheus]
"#
    )
}

/// `honor_labels` keeps the `job`/`instance` the exporter derives from the resource instead of
/// renaming them to `exported_*`, which is how the collector's exporter is meant to be scraped.
fn prometheus_config(target: u16) -> String {
    format!(
        r#"
global:
  scrape_interval: 1s
  evaluation_interval: 1s
scrape_configs:
  - job_name: sonde
    honor_labels: true
    static_configs:
      - targets: ['127.0.0.1:{target}']
"#
    )
}

fn start_prometheus(dir: &Path, config: &Path, port: u16) -> Proc {
    let log = dir.join("prometheus.log");
    let mut p = Proc::spawn(
        "prometheus",
        Command::new("prometheus")
            .arg(format!("--config.file={}", config.display()))
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.join("tsdb").display()
            ))
            .arg(format!("--web.listen-address=127.0.0.1:{port}"))
            .arg("--log.level=warn")
            .stdout(Stdio::null())
            .stderr(Stdio::from(
                std::fs::File::create(&log).expect("prometheus log"),
            )),
    );
    wait_listening(&mut p, &[port], &log);
    p
}

fn percent_encode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// An instant query through Prometheus' HTTP API; `None` until it answers with success.
fn query(port: u16, promql: &str) -> Option<Vec<Value>> {
    let body = http_get(
        port,
        &format!("/api/v1/query?query={}", percent_encode(promql)),
    )?;
    let v: Value = serde_json::from_str(&body).ok()?;
    if v["status"] != "success" {
        return None;
    }
    v["data"]["result"].as_array().cloned()
}

/// The single sample's value of an instant vector with exactly one series.
fn single_value(port: u16, promql: &str) -> Option<f64> {
    match query(port, promql)?.as_slice() {
        [one] => one["value"][1].as_str()?.parse().ok(),
        _ => None,
    }
}

/// Polls until `promql` yields exactly one series, and returns its value.
fn wait_value(port: u16, promql: &str) -> f64 {
    let mut got = None;
    wait_until(Duration::from_secs(20), || {
        got = single_value(port, promql);
        got.is_some()
    });
    got.unwrap_or_else(|| {
        panic!(
            "Prometheus has no single series for {promql}: {:?}",
            query(port, promql)
        )
    })
}

fn run_sender(http: u16, service: &str, instance: &str) -> Value {
    let script = workspace_root().join("integration-tests/py/send_signals.py");
    let out = Command::new("python3")
        .arg(script)
        .args(["--protocol", "http"])
        .args(["--endpoint", &format!("http://127.0.0.1:{http}")])
        .args(["--service", service, "--instance", instance])
        .args(["--metrics", &RECORDINGS.to_string()])
        .output()
        .expect("python3");
    assert!(
        out.status.success(),
        "python sender failed: {}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("sender prints one JSON object")
}

#[test]
fn python_metrics_through_sonde_scraped_by_prometheus() {
    let dir = temp_dir("prometheus");
    let (http, prom_exporter, telemetry, prom_server) =
        (free_port(), free_port(), free_port(), free_port());

    let cfg = write_config(
        &dir,
        "sonde.yaml",
        &sonde_config(http, prom_exporter, telemetry),
    );
    let sonde_log = dir.join("sonde.log");
    let mut sonde = Proc::spawn(
        "sonde",
        Command::new(bin("sonde"))
            .arg("--config")
            .arg(cfg)
            .stdout(Stdio::null())
            .stderr(Stdio::from(
                std::fs::File::create(&sonde_log).expect("sonde log"),
            )),
    );
    wait_listening(&mut sonde, &[http, prom_exporter, telemetry], &sonde_log);

    let prom_cfg = write_config(&dir, "prometheus.yml", &prometheus_config(prom_exporter));
    let _prometheus = start_prometheus(&dir, &prom_cfg, prom_server);

    let (service, instance) = ("checkout", "10.0.0.7:8123");
    let sent = run_sender(http, service, instance);
    let metrics = &sent["metrics"];
    assert_eq!(sent["failures"], 0, "{sent}");

    // The exposition itself must satisfy Prometheus' own linter.
    let page = http_get(prom_exporter, "/metrics").expect("scrape page");
    let mut lint = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("promtool");
    {
        use std::io::Write;
        lint.stdin
            .take()
            .expect("stdin")
            .write_all(page.as_bytes())
            .expect("feed promtool");
    }
    let lint = lint.wait_with_output().expect("promtool output");
    assert!(
        lint.status.success(),
        "promtool check metrics: {}{}\n{page}",
        String::from_utf8_lossy(&lint.stdout),
        String::from_utf8_lossy(&lint.stderr)
    );

    // Wait for a scrape that saw every recording; the target must be healthy.
    let hist = format!("{NS}_http_server_request_duration_seconds");
    assert!(
        wait_until(Duration::from_secs(30), || {
            single_value(prom_server, &format!("sum({hist}_count)")) == Some(RECORDINGS as f64)
        }),
        "Prometheus never saw {RECORDINGS} recordings: {:?}\nexporter page:\n{}",
        query(prom_server, &format!("{hist}_count")),
        http_get(prom_exporter, "/metrics").unwrap_or_default()
    );
    assert_eq!(wait_value(prom_server, r#"up{job="sonde"}"#), 1.0);

    // Histogram: one series per attribute set, with the recorded count, sum and buckets.
    let series = metrics["histogram"].as_array().expect("histogram series");
    assert_eq!(series.len(), 4);
    let all_count = query(prom_server, &format!("{hist}_count")).expect("count series");
    assert_eq!(all_count.len(), series.len(), "{all_count:?}");
    let boundaries: Vec<f64> = metrics["boundaries"]
        .as_array()
        .expect("boundaries")
        .iter()
        .filter_map(Value::as_f64)
        .collect();
    for s in series {
        let method = s["method"].as_str().expect("method");
        let status = s["status"].as_i64().expect("status");
        let values: Vec<f64> = s["values"]
            .as_array()
            .expect("values")
            .iter()
            .filter_map(Value::as_f64)
            .collect();
        let sel = format!(
            r#"http_request_method="{method}",http_response_status_code="{status}",job="{service}",instance="{instance}",otel_scope_name="sonde.it.signals""#
        );
        assert_eq!(
            wait_value(prom_server, &format!("{hist}_count{{{sel}}}")),
            values.len() as f64,
            "{sel}"
        );
        let sum = wait_value(prom_server, &format!("{hist}_sum{{{sel}}}"));
        let want_sum: f64 = values.iter().sum();
        assert!(
            (sum - want_sum).abs() < 1e-9,
            "{sel}: sum {sum} != {want_sum}"
        );

        let buckets = query(prom_server, &format!("{hist}_bucket{{{sel}}}")).expect("buckets");
        // Every explicit boundary plus +Inf.
        assert_eq!(buckets.len(), boundaries.len() + 1, "{sel}: {buckets:?}");
        for b in &buckets {
            let le = b["metric"]["le"].as_str().expect("le label");
            let got: f64 = b["value"][1]
                .as_str()
                .and_then(|v| v.parse().ok())
                .expect("bucket value");
            let bound: f64 = if le == "+Inf" {
                f64::INFINITY
            } else {
                le.parse().expect("numeric le")
            };
            let want = values.iter().filter(|v| **v <= bound).count() as f64;
            assert_eq!(got, want, "{sel} le={le}");
        }
    }
    // Buckets are usable as a histogram: the median of all recordings lies in a real bucket.
    let p50 = wait_value(
        prom_server,
        &format!("histogram_quantile(0.5, sum by (le) ({hist}_bucket))"),
    );
    assert!(p50 > 0.0 && p50 <= 0.25, "p50 = {p50}");

    // Monotonic counter -> `_total`; up-down counter and gauge -> gauges.
    let who = format!(r#"job="{service}",instance="{instance}""#);
    assert_eq!(
        wait_value(
            prom_server,
            &format!("{NS}_sonde_it_processed_total{{{who}}}")
        ),
        metrics["counter_total"].as_f64().expect("counter_total")
    );
    assert_eq!(
        wait_value(prom_server, &format!("{NS}_sonde_it_active{{{who}}}")),
        metrics["updown"].as_f64().expect("updown")
    );
    assert_eq!(
        wait_value(
            prom_server,
            &format!("{NS}_sonde_it_memory_usage_bytes{{{who}}}")
        ),
        metrics["gauge"].as_f64().expect("gauge")
    );
    // The TYPE lines reached Prometheus' metadata as well.
    for (name, kind) in [
        (format!("{NS}_sonde_it_processed_total"), "counter"),
        (format!("{NS}_sonde_it_active"), "gauge"),
        (hist.clone(), "histogram"),
    ] {
        let mut seen = Value::Null;
        assert!(
            wait_until(Duration::from_secs(10), || {
                seen = http_get(prom_server, &format!("/api/v1/metadata?metric={name}"))
                    .and_then(|b| serde_json::from_str::<Value>(&b).ok())
                    .unwrap_or(Value::Null);
                seen["data"][&name][0]["type"] == kind
            }),
            "metadata of {name} is not {kind}: {seen}"
        );
    }

    // One target_info per resource, carrying the resource attributes.
    let info = query(prom_server, &format!("{NS}_target_info")).expect("target_info");
    assert_eq!(info.len(), 1, "{info:?}");
    let labels = &info[0]["metric"];
    assert_eq!(labels["job"], service, "{labels}");
    assert_eq!(labels["instance"], instance, "{labels}");
    assert_eq!(labels["service_name"], service, "{labels}");
    assert_eq!(labels["service_instance_id"], instance, "{labels}");
    assert_eq!(labels["telemetry_sdk_language"], "python", "{labels}");
    assert_eq!(info[0]["value"][1], "1", "{info:?}");

    let _ = std::fs::remove_dir_all(dir);
}
