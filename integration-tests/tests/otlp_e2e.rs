//! End to end with real peers: the OpenTelemetry Python SDK (OTLP/gRPC and OTLP/HTTP) and
//! `rotel-agent` sending into Sonde, Sonde exporting into rotel and into a capturing sink.
//! Counts must match exactly and span content must arrive unchanged.

use std::collections::HashMap;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use integration_tests::otlp::to_json;
use integration_tests::*;

const SPANS: usize = 60;

fn sonde_config(grpc: u16, http: u16, export_to: u16, metrics: u16, compression: &str) -> String {
    format!(
        r#"
receivers:
  otlp:
    protocols:
      grpc:
        endpoint: 127.0.0.1:{grpc}
      http:
        endpoint: 127.0.0.1:{http}
processors:
  batch:
    timeout: 50ms
exporters:
  otlp:
    endpoint: 127.0.0.1:{export_to}
    compression: {compression}
    tls:
      insecure: true
service:
  telemetry:
    metrics:
      address: 127.0.0.1:{metrics}
  pipelines:
    traces:
      receivers: [otlp]
      processors: [batch]
      exporters: [otlp]
"#
    )
}

fn start_sonde(dir: &Path, yaml: &str, wait_port: u16) -> Proc {
    let cfg = write_config(dir, "sonde.yaml", yaml);
    let p = Proc::spawn(
        "sonde",
        Command::new(bin("sonde"))
            .arg("--config")
            .arg(cfg)
            .stderr(log_file(dir, "sonde.log")),
    );
    wait_for_port(wait_port, Duration::from_secs(20));
    p
}

fn start_rotel(dir: &Path, grpc: u16, http: u16, export_to: u16) -> Proc {
    let p = Proc::spawn(
        "rotel-agent",
        Command::new(rotel_agent())
            .stdout(log_file(dir, "rotel.out"))
            .stderr(log_file(dir, "rotel.err"))
            .arg("start")
            .arg("--otlp-grpc-endpoint")
            .arg(format!("127.0.0.1:{grpc}"))
            .arg("--otlp-http-endpoint")
            .arg(format!("127.0.0.1:{http}"))
            .arg("--exporter")
            .arg("otlp")
            .arg("--otlp-exporter-endpoint")
            .arg(format!("http://127.0.0.1:{export_to}"))
            .arg("--batch-timeout")
            .arg("50ms")
            .arg("--pid-file")
            .arg(dir.join("rotel.pid"))
            .arg("--log-file")
            .arg(dir.join("rotel.log")),
    );
    wait_for_port(grpc, Duration::from_secs(20));
    p
}

/// Runs the Python sender; returns the spans it reports as sent, by span id.
fn python_send(
    protocol: &str,
    endpoint: &str,
    service: &str,
) -> HashMap<String, serde_json::Value> {
    let script = workspace_root().join("integration-tests/py/send_spans.py");
    let out = Command::new("python3")
        .arg(script)
        .args([
            "--protocol",
            protocol,
            "--endpoint",
            endpoint,
            "--service",
            service,
        ])
        .args(["--spans", &SPANS.to_string()])
        .output()
        .expect("python3");
    assert!(
        out.status.success(),
        "python sender failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let sent: HashMap<String, serde_json::Value> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| {
            let v: serde_json::Value = serde_json::from_str(l).expect("json line");
            (v["span_id"].as_str().unwrap().to_string(), v)
        })
        .collect();
    assert_eq!(sent.len(), SPANS, "python reports every span as exported");
    sent
}

/// Every sent span arrived exactly once, with the same ids, name, times and attributes.
fn assert_arrived(cap: &Capture, sent: &HashMap<String, serde_json::Value>, service: &str) {
    let reqs = cap.requests.lock().unwrap();
    let mut seen = 0;
    for rs in reqs.iter().flat_map(|r| &r.resource_spans) {
        let res = rs.resource.clone().unwrap_or_default();
        let svc = res
            .attributes
            .iter()
            .find(|kv| kv.key == "service.name")
            .map(|kv| to_json(&kv.value));
        if svc != Some(serde_json::json!(service)) {
            continue;
        }
        for ss in &rs.scope_spans {
            assert_eq!(ss.scope.as_ref().unwrap().name, "sonde.it");
            for s in &ss.spans {
                let id = hex::encode(&s.span_id);
                let want = sent
                    .get(&id)
                    .unwrap_or_else(|| panic!("unexpected span {id}"));
                assert_eq!(hex::encode(&s.trace_id), want["trace_id"].as_str().unwrap());
                assert_eq!(s.name, want["name"].as_str().unwrap());
                assert_eq!(s.start_time_unix_nano, want["start"].as_u64().unwrap());
                assert_eq!(s.end_time_unix_nano, want["end"].as_u64().unwrap());
                assert_eq!(s.kind, 2);
                let attrs: serde_json::Map<String, serde_json::Value> = s
                    .attributes
                    .iter()
                    .map(|kv| (kv.key.clone(), to_json(&kv.value)))
                    .collect();
                assert_eq!(
                    serde_json::Value::Object(attrs),
                    want["attributes"],
                    "span {id}"
                );
                seen += 1;
            }
        }
    }
    assert_eq!(seen, sent.len(), "each span exactly once for {service}");
}

#[test]
fn python_sdk_grpc_and_http_into_sonde() {
    let dir = temp_dir("py");
    let (grpc, http, sink, metrics) = (free_port(), free_port(), free_port(), free_port());
    let server = CaptureServer::start(sink);
    let _sonde = start_sonde(&dir, &sonde_config(grpc, http, sink, metrics, "gzip"), grpc);
    wait_for_port(http, Duration::from_secs(10));

    let via_grpc = python_send("grpc", &format!("127.0.0.1:{grpc}"), "py-grpc");
    let via_http = python_send(
        "http",
        &format!("http://127.0.0.1:{http}/v1/traces"),
        "py-http",
    );
    assert!(
        wait_until(Duration::from_secs(20), || server.capture.span_count()
            >= 2 * SPANS),
        "arrived {} of {}",
        server.capture.span_count(),
        2 * SPANS
    );
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(server.capture.span_count(), 2 * SPANS);
    assert_arrived(&server.capture, &via_grpc, "py-grpc");
    assert_arrived(&server.capture, &via_http, "py-http");

    let page = http_get(metrics, "/metrics").expect("internal metrics");
    let accepted = |t: &str| {
        metric_value(
            &page,
            &format!("otelcol_receiver_accepted_spans{{receiver=\"otlp\",transport=\"{t}\"}}"),
        )
    };
    assert_eq!(accepted("grpc"), Some(SPANS as f64), "{page}");
    assert_eq!(accepted("http"), Some(SPANS as f64), "{page}");
    assert_eq!(
        metric_value(&page, "otelcol_exporter_sent_spans{exporter=\"otlp\"}"),
        Some((2 * SPANS) as f64),
        "{page}"
    );
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn sonde_exports_into_rotel() {
    let dir = temp_dir("to-rotel");
    let (grpc, http, metrics) = (free_port(), free_port(), free_port());
    let (rotel_grpc, rotel_http, sink) = (free_port(), free_port(), free_port());
    let server = CaptureServer::start(sink);
    let _rotel = start_rotel(&dir, rotel_grpc, rotel_http, sink);
    let _sonde = start_sonde(
        &dir,
        &sonde_config(grpc, http, rotel_grpc, metrics, "none"),
        grpc,
    );

    let sent = python_send("grpc", &format!("127.0.0.1:{grpc}"), "py-via-rotel");
    assert!(
        wait_until(Duration::from_secs(20), || server.capture.span_count()
            >= SPANS),
        "arrived {} of {SPANS}",
        server.capture.span_count()
    );
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(server.capture.span_count(), SPANS);
    assert_arrived(&server.capture, &sent, "py-via-rotel");
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn rotel_exports_into_sonde() {
    let dir = temp_dir("from-rotel");
    let (grpc, http, metrics) = (free_port(), free_port(), free_port());
    let (rotel_grpc, rotel_http, sink) = (free_port(), free_port(), free_port());
    let server = CaptureServer::start(sink);
    let _sonde = start_sonde(&dir, &sonde_config(grpc, http, sink, metrics, "gzip"), grpc);
    let _rotel = start_rotel(&dir, rotel_grpc, rotel_http, grpc);

    let sent = python_send("grpc", &format!("127.0.0.1:{rotel_grpc}"), "py-from-rotel");
    assert!(
        wait_until(Duration::from_secs(20), || server.capture.span_count()
            >= SPANS),
        "arrived {} of {SPANS}",
        server.capture.span_count()
    );
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(server.capture.span_count(), SPANS);
    assert_arrived(&server.capture, &sent, "py-from-rotel");
    let _ = std::fs::remove_dir_all(dir);
}
