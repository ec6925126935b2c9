//! Faults against the real binary: the backend down for 10 s under load, a sending queue that
//! overflows, malformed payloads, and graceful shutdown. Nothing accepted may be lost silently.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use integration_tests::*;

fn config(grpc: u16, http: u16, sink: u16, metrics: u16, queue: &str) -> String {
    format!(
        r#"
receivers:
  otlp:
    protocols:
      grpc: {{endpoint: "127.0.0.1:{grpc}"}}
      http: {{endpoint: "127.0.0.1:{http}"}}
processors:
  batch:
    send_batch_size: 500
    timeout: 50ms
exporters:
  otlp:
    endpoint: 127.0.0.1:{sink}
    tls: {{insecure: true}}
    timeout: 2s
    retry_on_failure:
      enabled: true
      initial_interval: 100ms
      max_interval: 1s
      max_elapsed_time: 120s
    sending_queue: {queue}
service:
  telemetry:
    metrics: {{address: "127.0.0.1:{metrics}"}}
  pipelines:
    traces:
      receivers: [otlp]
      processors: [batch]
      exporters: [otlp]
"#
    )
}

fn start(dir: &Path, yaml: &str, port: u16) -> Proc {
    let cfg = write_config(dir, "sonde.yaml", yaml);
    let p = Proc::spawn(
        "sonde",
        Command::new(bin("sonde"))
            .arg("--config")
            .arg(cfg)
            .stderr(log_file(dir, "sonde.log")),
    );
    wait_for_port(port, Duration::from_secs(20));
    p
}

fn metric(port: u16, series: &str) -> f64 {
    http_get(port, "/metrics")
        .and_then(|p| metric_value(&p, series))
        .unwrap_or(0.0)
}

#[test]
fn backend_down_ten_seconds_then_every_accepted_span_arrives() {
    let dir = temp_dir("down");
    let (grpc, http, sink, metrics) = (free_port(), free_port(), free_port(), free_port());
    let _sonde = start(
        &dir,
        &config(
            grpc,
            http,
            sink,
            metrics,
            "{enabled: true, num_consumers: 4, queue_size: 1000}",
        ),
        grpc,
    );
    // 200 requests x 100 spans while nothing listens on the sink port.
    let started = std::time::Instant::now();
    let acked = otlp::send_blocking(grpc, 200, 100);
    assert_eq!(
        acked, 20_000,
        "sonde accepted everything while the backend was down"
    );
    let remaining = Duration::from_secs(10).saturating_sub(started.elapsed());
    std::thread::sleep(remaining);
    assert_eq!(
        metric(metrics, "otelcol_exporter_sent_spans{exporter=\"otlp\"}"),
        0.0
    );

    let server = CaptureServer::start(sink);
    assert!(
        wait_until(Duration::from_secs(30), || server.capture.span_count()
            >= 20_000),
        "arrived {} of 20000",
        server.capture.span_count()
    );
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(server.capture.span_count(), 20_000, "no duplicates either");
    assert_eq!(
        metric(metrics, "otelcol_exporter_sent_spans{exporter=\"otlp\"}"),
        20_000.0
    );
    assert_eq!(
        metric(
            metrics,
            "otelcol_exporter_enqueue_failed_spans{exporter=\"otlp\"}"
        ),
        0.0
    );
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn queue_overflow_is_counted_exactly() {
    let dir = temp_dir("overflow");
    let (grpc, http, sink, metrics) = (free_port(), free_port(), free_port(), free_port());
    let _sonde = start(
        &dir,
        &config(
            grpc,
            http,
            sink,
            metrics,
            "{enabled: true, num_consumers: 1, queue_size: 3}",
        ),
        grpc,
    );
    let acked = otlp::send_blocking(grpc, 100, 100);
    // Let the batch processor hand everything to the exporter.
    std::thread::sleep(Duration::from_secs(1));
    let server = CaptureServer::start(sink);
    let dropped = || {
        metric(
            metrics,
            "otelcol_exporter_enqueue_failed_spans{exporter=\"otlp\"}",
        ) as usize
    };
    assert!(
        wait_until(Duration::from_secs(30), || {
            server.capture.span_count() + dropped() >= acked as usize
        }),
        "arrived {} + dropped {} != accepted {acked}",
        server.capture.span_count(),
        dropped()
    );
    std::thread::sleep(Duration::from_millis(500));
    let arrived = server.capture.span_count();
    assert!(dropped() > 0, "the queue of 3 batches must overflow");
    assert_eq!(arrived + dropped(), acked as usize);
    assert_eq!(
        metric(metrics, "otelcol_exporter_sent_spans{exporter=\"otlp\"}") as usize,
        arrived
    );
    let _ = std::fs::remove_dir_all(dir);
}

fn post(port: u16, path: &str, content_type: &str, body: &[u8]) -> String {
    let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    write!(
        s,
        "POST {path} HTTP/1.1\r\nHost: x\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    )
    .unwrap();
    s.write_all(body).unwrap();
    let mut out = String::new();
    let _ = s.read_to_string(&mut out);
    out
}

#[test]
fn malformed_payloads_never_crash_the_receiver() {
    let dir = temp_dir("malformed");
    let (grpc, http, sink, metrics) = (free_port(), free_port(), free_port(), free_port());
    let server = CaptureServer::start(sink);
    let mut sonde = start(
        &dir,
        &config(grpc, http, sink, metrics, "{enabled: true}"),
        grpc,
    );
    wait_for_port(http, Duration::from_secs(10));
    let garbage: [&[u8]; 4] = [
        b"\x0a\xff\xff\xff\xff\x0f",
        b"\x0b\x0c",
        b"hello",
        &[0xff; 64],
    ];
    for g in garbage {
        let r = post(http, "/v1/traces", "application/x-protobuf", g);
        assert!(r.starts_with("HTTP/1.1 400"), "{r}");
    }
    for j in [
        "{",
        "{\"resourceSpans\": 5}",
        "[]",
        "{\"resourceSpans\":[{\"scopeSpans\":[{\"spans\":[{\"traceId\":\"zz\"}]}]}]}",
    ] {
        let r = post(http, "/v1/traces", "application/json", j.as_bytes());
        assert!(r.starts_with("HTTP/1.1 400"), "{j}: {r}");
    }
    // Garbage over gRPC too, through a raw h2 client would need more code; a zero-span request
    // and a valid one prove the gRPC side still serves.
    assert_eq!(otlp::send_blocking(grpc, 1, 10), 10);
    let ok = post(
        http,
        "/v1/traces",
        "application/json",
        br#"{"resourceSpans":[{"resource":{"attributes":[{"key":"service.name","value":{"stringValue":"j"}}]},"scopeSpans":[{"spans":[{"traceId":"5b8efff798038103d269b633813fc60c","spanId":"eee19b7ec3c1b174","name":"json","kind":2,"startTimeUnixNano":"1544712660000000000","endTimeUnixNano":"1544712661000000000"}]}]}]}"#,
    );
    assert!(ok.starts_with("HTTP/1.1 200"), "{ok}");
    assert!(wait_until(Duration::from_secs(10), || server
        .capture
        .span_count()
        == 11));
    assert!(
        sonde.child.try_wait().unwrap().is_none(),
        "sonde is still running"
    );
    let st = sonde
        .terminate(Duration::from_secs(15))
        .expect("graceful exit");
    assert!(st.success(), "{st:?}");
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn sigterm_drains_in_flight_data() {
    let dir = temp_dir("drain");
    let (grpc, http, sink, metrics) = (free_port(), free_port(), free_port(), free_port());
    let server = CaptureServer::start(sink);
    // A long batch timeout: the data sits in the batch processor until shutdown flushes it.
    let yaml = config(grpc, http, sink, metrics, "{enabled: true}")
        .replace("timeout: 50ms", "timeout: 60s")
        .replace("send_batch_size: 500", "send_batch_size: 100000");
    let mut sonde = start(&dir, &yaml, grpc);
    assert_eq!(otlp::send_blocking(grpc, 10, 100), 1000);
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(server.capture.span_count(), 0, "still batched");
    let st = sonde
        .terminate(Duration::from_secs(20))
        .expect("graceful exit");
    assert!(st.success());
    assert_eq!(
        server.capture.span_count(),
        1000,
        "shutdown flushed the batch"
    );
    let _ = std::fs::remove_dir_all(dir);
}
