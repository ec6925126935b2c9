//! OTLP/gRPC end to end: real tonic clients against a started receiver.

mod common;

use bytes::Bytes;
use common::*;
use opentelemetry_proto::tonic::collector::logs::v1::logs_service_client::LogsServiceClient;
use opentelemetry_proto::tonic::collector::metrics::v1::metrics_service_client::MetricsServiceClient;
use opentelemetry_proto::tonic::collector::trace::v1::trace_service_client::TraceServiceClient;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use pipeline_core::{Lifecycle, Signal};
use prost::Message;
use tonic::codec::CompressionEncoding;
use tonic::Code;

const GRPC_ONLY: &str = "protocols: {grpc: {endpoint: '127.0.0.1:0'}}";

#[tokio::test]
async fn traces_arrive_byte_for_byte_and_are_counted() {
    let h = start(GRPC_ONLY, &Signal::ALL).await;
    let mut client = TraceServiceClient::new(channel(h.grpc()).await);
    let req = traces(100);
    let resp = client.export(req.clone()).await.expect("export");
    assert_eq!(resp.into_inner().partial_success, None);

    let mut got = h.sink.take();
    assert_eq!(got.len(), 1);
    let p = &mut got[0];
    assert_eq!(p.signal(), Signal::Traces);
    assert_eq!(p.items(), 100);
    // The bytes that were sent are the bytes handed on: nothing decoded or re-encoded.
    assert!(p.is_encoded());
    assert_eq!(p.to_bytes(), Bytes::from(req.encode_to_vec()));
    assert_eq!(**p.traces().expect("decodes"), req);
    assert_eq!(h.counter("otelcol_receiver_accepted_spans", "grpc"), 100);
    assert_eq!(h.counter("otelcol_receiver_refused_spans", "grpc"), 0);
    h.receiver.shutdown().await.expect("shutdown");
}

#[tokio::test]
async fn gzip_and_zstd_requests_are_accepted() {
    let h = start(GRPC_ONLY, &Signal::ALL).await;
    let ch = channel(h.grpc()).await;
    for enc in [CompressionEncoding::Gzip, CompressionEncoding::Zstd] {
        let mut client = TraceServiceClient::new(ch.clone()).send_compressed(enc);
        let req = traces(10);
        client.export(req.clone()).await.expect("compressed export");
        let mut got = h.sink.take();
        assert_eq!(got.len(), 1, "{enc:?}");
        assert_eq!(**got[0].traces().expect("decodes"), req, "{enc:?}");
    }
    assert_eq!(h.counter("otelcol_receiver_accepted_spans", "grpc"), 20);
    h.receiver.shutdown().await.expect("shutdown");
}

#[tokio::test]
async fn metrics_and_logs_go_to_their_pipelines() {
    let h = start(GRPC_ONLY, &Signal::ALL).await;
    let ch = channel(h.grpc()).await;
    let m = metrics(7);
    MetricsServiceClient::new(ch.clone())
        .export(m.clone())
        .await
        .expect("metrics");
    let l = logs(3);
    LogsServiceClient::new(ch)
        .export(l.clone())
        .await
        .expect("logs");
    let mut got = h.sink.take();
    assert_eq!(got.len(), 2);
    assert_eq!((got[0].signal(), got[0].items()), (Signal::Metrics, 7));
    assert_eq!(**got[0].metrics().expect("metrics decode"), m);
    assert_eq!((got[1].signal(), got[1].items()), (Signal::Logs, 3));
    assert_eq!(**got[1].logs().expect("logs decode"), l);
    assert_eq!(
        h.counter("otelcol_receiver_accepted_metric_points", "grpc"),
        7
    );
    assert_eq!(
        h.counter("otelcol_receiver_accepted_log_records", "grpc"),
        3
    );
    h.receiver.shutdown().await.expect("shutdown");
}

#[tokio::test]
async fn malformed_requests_get_invalid_argument_and_the_server_keeps_serving() {
    let h = start(GRPC_ONLY, &Signal::ALL).await;
    let ch = channel(h.grpc()).await;
    let garbage: [&[u8]; 4] = [
        b"\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff",
        b"\x0a\x10short",
        b"\x0a\x05\x12\x03\x12\x01\x0f",
        b"\x07",
    ];
    for g in garbage {
        let e = grpc_raw(&ch, TRACE_EXPORT, Bytes::copy_from_slice(g))
            .await
            .expect_err("malformed");
        assert_eq!(e.code(), Code::InvalidArgument, "{g:?}: {e}");
    }
    // A pseudo-random stream of bodies: whatever they are, every call gets an answer.
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    for i in 0..200 {
        let body: Vec<u8> = (0..(i % 97))
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                x as u8
            })
            .collect();
        let r = grpc_raw(&ch, TRACE_EXPORT, Bytes::from(body)).await;
        if let Err(e) = r {
            assert_eq!(e.code(), Code::InvalidArgument, "{e}");
        }
    }
    let req = traces(2);
    TraceServiceClient::new(ch)
        .export(req.clone())
        .await
        .expect("still serving");
    assert!(h
        .sink
        .take()
        .iter_mut()
        .any(|p| p.traces().is_ok_and(|t| **t == req)));
    h.receiver.shutdown().await.expect("shutdown");
}

#[tokio::test]
async fn empty_request_succeeds_without_reaching_the_pipeline() {
    let h = start(GRPC_ONLY, &Signal::ALL).await;
    let mut client = TraceServiceClient::new(channel(h.grpc()).await);
    client
        .export(ExportTraceServiceRequest::default())
        .await
        .expect("empty export");
    assert!(h.sink.take().is_empty());
    h.receiver.shutdown().await.expect("shutdown");
}

#[tokio::test]
async fn pipeline_refusals_map_to_unavailable_and_invalid_argument() {
    let h = start(GRPC_ONLY, &Signal::ALL).await;
    let mut client = TraceServiceClient::new(channel(h.grpc()).await);
    h.sink.set_mode(RETRYABLE);
    let e = client.export(traces(5)).await.expect_err("retryable");
    assert_eq!(e.code(), Code::Unavailable);
    assert!(e.message().contains("pipeline is full"), "{e}");
    h.sink.set_mode(PERMANENT);
    let e = client.export(traces(4)).await.expect_err("permanent");
    assert_eq!(e.code(), Code::InvalidArgument);
    assert_eq!(h.counter("otelcol_receiver_refused_spans", "grpc"), 9);
    assert_eq!(h.counter("otelcol_receiver_accepted_spans", "grpc"), 0);
    h.sink.set_mode(OK);
    client.export(traces(1)).await.expect("accepted again");
    assert_eq!(h.counter("otelcol_receiver_accepted_spans", "grpc"), 1);
    h.receiver.shutdown().await.expect("shutdown");
}

#[tokio::test]
async fn signals_without_a_pipeline_and_unknown_methods_are_unimplemented() {
    let h = start(GRPC_ONLY, &[Signal::Traces]).await;
    let ch = channel(h.grpc()).await;
    let e = MetricsServiceClient::new(ch.clone())
        .export(metrics(1))
        .await
        .expect_err("no metrics pipeline");
    assert_eq!(e.code(), Code::Unimplemented);
    let e = grpc_raw(
        &ch,
        "/opentelemetry.proto.collector.trace.v1.TraceService/Nope",
        Bytes::new(),
    )
    .await
    .expect_err("unknown method");
    assert_eq!(e.code(), Code::Unimplemented);
    h.receiver.shutdown().await.expect("shutdown");
}

#[tokio::test]
async fn messages_above_max_recv_msg_size_are_refused() {
    let h = start(
        "protocols: {grpc: {endpoint: '127.0.0.1:0', max_recv_msg_size_mib: 1}}",
        &Signal::ALL,
    )
    .await;
    let ch = channel(h.grpc()).await;
    let mut big = traces(1);
    big.resource_spans[0].scope_spans[0].spans[0].name = "x".repeat(1 << 20);
    let e = TraceServiceClient::new(ch.clone())
        .export(big)
        .await
        .expect_err("too big");
    assert_eq!(e.code(), Code::ResourceExhausted, "{e}");
    TraceServiceClient::new(ch)
        .export(traces(1))
        .await
        .expect("small one still fine");
    h.receiver.shutdown().await.expect("shutdown");
}
