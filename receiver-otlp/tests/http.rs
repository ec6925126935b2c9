//! OTLP/HTTP end to end: protobuf and JSON bodies, compression, errors, CORS.

mod common;

use common::*;
use http::{Method, StatusCode};
use opentelemetry_proto::tonic::collector::logs::v1::ExportLogsServiceRequest;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::any_value;
use pipeline_core::{Lifecycle, Signal};
use prost::Message;

const HTTP_ONLY: &str = "protocols: {http: {endpoint: '127.0.0.1:0'}}";
const PB: (&str, &str) = ("content-type", "application/x-protobuf");
const JSON: (&str, &str) = ("content-type", "application/json");

#[tokio::test]
async fn protobuf_traces_round_trip_exactly() {
    let h = start(HTTP_ONLY, &Signal::ALL).await;
    let req = traces(100);
    let r = post(h.http(), "/v1/traces", &[PB], req.encode_to_vec()).await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(r.headers["content-type"], "application/x-protobuf");
    assert!(r.body.is_empty(), "empty ExportTraceServiceResponse");
    let mut got = h.sink.take();
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].items(), 100);
    assert_eq!(got[0].to_bytes(), req.encode_to_vec());
    assert_eq!(**got[0].traces().expect("decode"), req);
    assert_eq!(h.counter("otelcol_receiver_accepted_spans", "http"), 100);
    h.receiver.shutdown().await.expect("shutdown");
}

#[tokio::test]
async fn compressed_bodies_are_accepted() {
    let h = start(HTTP_ONLY, &Signal::ALL).await;
    let req = traces(20);
    let pb = req.encode_to_vec();
    let bodies = [
        ("gzip", gzip(&pb)),
        ("zstd", zstd::bulk::compress(&pb, 3).expect("zstd")),
        ("deflate", zlib(&pb)),
    ];
    for (enc, body) in bodies {
        let r = post(
            h.http(),
            "/v1/traces",
            &[PB, ("content-encoding", enc)],
            body,
        )
        .await;
        assert_eq!(r.status, StatusCode::OK, "{enc}");
        let mut got = h.sink.take();
        assert_eq!(**got[0].traces().expect("decode"), req, "{enc}");
    }
    let r = post(
        h.http(),
        "/v1/traces",
        &[PB, ("content-encoding", "br")],
        pb.clone(),
    )
    .await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
    h.receiver.shutdown().await.expect("shutdown");
}

/// What the OpenTelemetry JS SDK's OTLP/HTTP JSON exporter sends (ids in hex, 64-bit times as
/// strings, enums as integers).
const JS_BODY: &str = r#"{"resourceSpans":[{"resource":{"attributes":[{"key":"service.name","value":{"stringValue":"web"}}],"droppedAttributesCount":0},"scopeSpans":[{"scope":{"name":"@opentelemetry/instrumentation-document-load","version":"0.39.0"},"spans":[{"traceId":"9f2d3c9b6f9a4f3c8e1d2b7a6c5d4e3f","spanId":"a1b2c3d4e5f60718","name":"documentLoad","kind":1,"startTimeUnixNano":"1718000000123456789","endTimeUnixNano":"1718000000623456789","attributes":[{"key":"http.response_content_length","value":{"intValue":"5120"}},{"key":"http.url","value":{"stringValue":"https://shop.example/"}}],"droppedAttributesCount":0,"events":[{"attributes":[],"name":"fetchStart","timeUnixNano":"1718000000123556789","droppedAttributesCount":0}],"droppedEventsCount":0,"status":{"code":0},"links":[],"droppedLinksCount":0}]}]}]}"#;

#[tokio::test]
async fn json_from_the_js_sdk_is_accepted_and_answered_in_json() {
    let h = start(HTTP_ONLY, &Signal::ALL).await;
    let r = post(
        h.http(),
        "/v1/traces",
        &[("content-type", "application/json; charset=utf-8")],
        JS_BODY.as_bytes().to_vec(),
    )
    .await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(r.headers["content-type"], "application/json");
    assert_eq!(&r.body[..], b"{}");
    let mut got = h.sink.take();
    assert_eq!(got[0].items(), 1);
    let t = got[0].traces().expect("decode");
    let span = &t.resource_spans[0].scope_spans[0].spans[0];
    assert_eq!(span.trace_id, hex("9f2d3c9b6f9a4f3c8e1d2b7a6c5d4e3f"));
    assert_eq!(span.span_id, hex("a1b2c3d4e5f60718"));
    assert_eq!(span.start_time_unix_nano, 1_718_000_000_123_456_789);
    assert_eq!(span.end_time_unix_nano, 1_718_000_000_623_456_789);
    assert_eq!(span.kind, 1);
    assert_eq!(
        span.attributes[0]
            .value
            .as_ref()
            .and_then(|v| v.value.clone()),
        Some(any_value::Value::IntValue(5120))
    );
    assert_eq!(span.events[0].time_unix_nano, 1_718_000_000_123_556_789);

    // A gzip-compressed JSON log export, as the Python/Go SDKs do for JSON.
    let logs_json = r#"{"resourceLogs":[{"scopeLogs":[{"logRecords":[
        {"timeUnixNano":"1718000000000000001","severityNumber":9,"body":{"stringValue":"hello"}},
        {"timeUnixNano":"1718000000000000002","severityNumber":17,"body":{"stringValue":"bye"}}]}]}]}"#;
    let r = post(
        h.http(),
        "/v1/logs",
        &[JSON, ("content-encoding", "gzip")],
        gzip(logs_json.as_bytes()),
    )
    .await;
    assert_eq!(r.status, StatusCode::OK);
    let got = h.sink.take();
    let l = ExportLogsServiceRequest::decode(got[0].to_bytes()).expect("decode");
    let recs = &l.resource_logs[0].scope_logs[0].log_records;
    assert_eq!(recs.len(), 2);
    assert_eq!(recs[1].time_unix_nano, 1_718_000_000_000_000_002);
    assert_eq!(recs[1].severity_number, 17);
    assert_eq!(
        h.counter("otelcol_receiver_accepted_log_records", "http"),
        2
    );
    h.receiver.shutdown().await.expect("shutdown");
}

fn hex(s: &str) -> Vec<u8> {
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).expect("hex"))
        .collect()
}

#[tokio::test]
async fn malformed_bodies_get_400_with_a_status_and_the_server_keeps_serving() {
    let h = start(HTTP_ONLY, &Signal::ALL).await;
    let r = post(
        h.http(),
        "/v1/traces",
        &[PB],
        b"\x0a\xff\xff\xff\xff\x0f".to_vec(),
    )
    .await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
    assert_eq!(r.headers["content-type"], "application/x-protobuf");
    let (code, msg) = rpc_status(&r.body);
    assert_eq!(code, 3);
    assert!(msg.contains("malformed traces export request"), "{msg}");

    let r = post(
        h.http(),
        "/v1/traces",
        &[JSON],
        b"{\"resourceSpans\": [".to_vec(),
    )
    .await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
    let v: serde_json::Value = serde_json::from_slice(&r.body).expect("JSON status");
    assert_eq!(v["code"], 3);

    let r = post(
        h.http(),
        "/v1/traces",
        &[JSON],
        br#"{"resourceSpans":[{"scopeSpans":[{"spans":[{"spanId":"xyz"}]}]}]}"#.to_vec(),
    )
    .await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
    let v: serde_json::Value = serde_json::from_slice(&r.body).expect("JSON status");
    assert!(
        v["message"]
            .as_str()
            .is_some_and(|m| m.contains("resourceSpans[0].scopeSpans[0].spans[0].spanId")),
        "{v}"
    );

    let r = post(
        h.http(),
        "/v1/traces",
        &[PB, ("content-encoding", "gzip")],
        b"definitely not gzip".to_vec(),
    )
    .await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
    assert!(h.sink.take().is_empty());

    let r = post(h.http(), "/v1/traces", &[PB], traces(1).encode_to_vec()).await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(h.sink.take().len(), 1);
    h.receiver.shutdown().await.expect("shutdown");
}

#[tokio::test]
async fn pipeline_refusals_map_to_503_and_400() {
    let h = start(HTTP_ONLY, &Signal::ALL).await;
    h.sink.set_mode(RETRYABLE);
    let r = post(h.http(), "/v1/traces", &[PB], traces(3).encode_to_vec()).await;
    assert_eq!(r.status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(rpc_status(&r.body).0, 14);
    h.sink.set_mode(PERMANENT);
    let r = post(h.http(), "/v1/traces", &[JSON], JS_BODY.as_bytes().to_vec()).await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
    let v: serde_json::Value = serde_json::from_slice(&r.body).expect("JSON status");
    assert_eq!(v["code"], 3);
    assert_eq!(h.counter("otelcol_receiver_refused_spans", "http"), 4);
    assert_eq!(h.counter("otelcol_receiver_accepted_spans", "http"), 0);
    h.receiver.shutdown().await.expect("shutdown");
}

#[tokio::test]
async fn wrong_method_path_and_content_type() {
    let h = start(HTTP_ONLY, &[Signal::Traces]).await;
    let r = http_request(Method::GET, h.http(), "/v1/traces", &[], Vec::new()).await;
    assert_eq!(r.status, StatusCode::METHOD_NOT_ALLOWED);
    assert_eq!(r.headers["allow"], "POST");
    let r = post(h.http(), "/v1/nothing", &[PB], Vec::new()).await;
    assert_eq!(r.status, StatusCode::NOT_FOUND);
    // No metrics pipeline takes from this receiver: the path is not served, as in the reference.
    let r = post(h.http(), "/v1/metrics", &[PB], metrics(1).encode_to_vec()).await;
    assert_eq!(r.status, StatusCode::NOT_FOUND);
    let r = post(
        h.http(),
        "/v1/traces",
        &[("content-type", "text/plain")],
        Vec::new(),
    )
    .await;
    assert_eq!(r.status, StatusCode::UNSUPPORTED_MEDIA_TYPE);
    let r = post(h.http(), "/v1/traces", &[], Vec::new()).await;
    assert_eq!(r.status, StatusCode::UNSUPPORTED_MEDIA_TYPE);
    // An empty protobuf body is a valid, empty request.
    let r = post(h.http(), "/v1/traces", &[PB], Vec::new()).await;
    assert_eq!(r.status, StatusCode::OK);
    h.receiver.shutdown().await.expect("shutdown");
}

#[tokio::test]
async fn bodies_over_the_limit_are_refused_before_and_after_decompression() {
    let h = start(
        "protocols: {http: {endpoint: '127.0.0.1:0', max_request_body_size: 100000}}",
        &Signal::ALL,
    )
    .await;
    let mut big = traces(1);
    big.resource_spans[0].scope_spans[0].spans[0].name = "y".repeat(200_000);
    let pb = big.encode_to_vec();
    let r = post(h.http(), "/v1/traces", &[PB], pb.clone()).await;
    assert_eq!(r.status, StatusCode::PAYLOAD_TOO_LARGE);
    // Compresses to a few hundred bytes, expands past the limit.
    let small = gzip(&pb);
    assert!(small.len() < 100_000);
    let r = post(
        h.http(),
        "/v1/traces",
        &[PB, ("content-encoding", "gzip")],
        small,
    )
    .await;
    assert_eq!(r.status, StatusCode::PAYLOAD_TOO_LARGE);
    assert!(h.sink.take().is_empty());
    h.receiver.shutdown().await.expect("shutdown");
}

#[tokio::test]
async fn custom_paths_response_headers_and_cors() {
    let h = start(
        r#"
protocols:
  http:
    endpoint: 127.0.0.1:0
    traces_url_path: ingest/traces
    response_headers: {x-served-by: sonde}
    cors:
      allowed_origins: ["https://*.shop.example"]
      max_age: 600
"#,
        &Signal::ALL,
    )
    .await;
    let r = post(h.http(), "/v1/traces", &[PB], Vec::new()).await;
    assert_eq!(r.status, StatusCode::NOT_FOUND);
    let origin = ("origin", "https://www.shop.example");
    let r = post(
        h.http(),
        "/ingest/traces",
        &[PB, origin],
        traces(1).encode_to_vec(),
    )
    .await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(r.headers["x-served-by"], "sonde");
    assert_eq!(
        r.headers["access-control-allow-origin"],
        "https://www.shop.example"
    );

    let r = http_request(
        Method::OPTIONS,
        h.http(),
        "/ingest/traces",
        &[
            origin,
            ("access-control-request-method", "POST"),
            ("access-control-request-headers", "content-type"),
        ],
        Vec::new(),
    )
    .await;
    assert_eq!(r.status, StatusCode::NO_CONTENT);
    assert_eq!(
        r.headers["access-control-allow-origin"],
        "https://www.shop.example"
    );
    assert_eq!(r.headers["access-control-allow-methods"], "POST");
    assert_eq!(r.headers["access-control-max-age"], "600");

    let r = post(
        h.http(),
        "/ingest/traces",
        &[PB, ("origin", "https://evil.example")],
        Vec::new(),
    )
    .await;
    assert!(!r.headers.contains_key("access-control-allow-origin"));
    h.receiver.shutdown().await.expect("shutdown");
}

#[tokio::test]
async fn both_transports_share_pipelines_but_count_separately() {
    let h = start(BOTH, &Signal::ALL).await;
    let r = post(h.http(), "/v1/traces", &[PB], traces(2).encode_to_vec()).await;
    assert_eq!(r.status, StatusCode::OK);
    let mut client =
        opentelemetry_proto::tonic::collector::trace::v1::trace_service_client::TraceServiceClient::new(
            channel(h.grpc()).await,
        );
    client
        .export(ExportTraceServiceRequest::default())
        .await
        .expect("empty");
    client.export(traces(3)).await.expect("grpc");
    assert_eq!(h.sink.take().len(), 2);
    assert_eq!(h.counter("otelcol_receiver_accepted_spans", "http"), 2);
    assert_eq!(h.counter("otelcol_receiver_accepted_spans", "grpc"), 3);
    h.receiver.shutdown().await.expect("shutdown");
}
