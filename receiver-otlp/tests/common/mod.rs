//! Shared helpers for the end-to-end tests: a controllable consumer, a receiver started on free
//! loopback ports, and raw gRPC / HTTP clients.

#![allow(dead_code)]

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, AtomicU8, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use bytes::{Buf, BufMut, Bytes};
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use opentelemetry_proto::tonic::collector::logs::v1::ExportLogsServiceRequest;
use opentelemetry_proto::tonic::collector::metrics::v1::ExportMetricsServiceRequest;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::{any_value, AnyValue, InstrumentationScope, KeyValue};
use opentelemetry_proto::tonic::logs::v1::{LogRecord, ResourceLogs, ScopeLogs};
use opentelemetry_proto::tonic::metrics::v1::{
    metric, number_data_point, Gauge, Metric, NumberDataPoint, ResourceMetrics, ScopeMetrics,
};
use opentelemetry_proto::tonic::resource::v1::Resource;
use opentelemetry_proto::tonic::trace::v1::{span, ResourceSpans, ScopeSpans, Span, Status};
use pipeline_core::{
    parse_component, ComponentId, ConsumeError, Consumer, Lifecycle, Payload, ReceiverContext,
    Signal, Telemetry,
};
use receiver_otlp::{OtlpReceiver, OtlpReceiverConfig};
use tokio::sync::Notify;
use tonic::codec::{Codec, DecodeBuf, Decoder, EncodeBuf, Encoder};

pub const OK: u8 = 0;
pub const RETRYABLE: u8 = 1;
pub const PERMANENT: u8 = 2;

/// Collects what it is given, or refuses it as told.
#[derive(Default)]
pub struct TestConsumer {
    pub payloads: Mutex<Vec<Payload>>,
    pub mode: AtomicU8,
    /// Milliseconds each consume call waits before answering.
    pub delay_ms: AtomicU64,
    /// Signalled when a consume call begins.
    pub entered: Notify,
}

#[async_trait]
impl Consumer for TestConsumer {
    async fn consume(&self, payload: Payload) -> Result<(), ConsumeError> {
        self.entered.notify_one();
        let delay = self.delay_ms.load(Ordering::SeqCst);
        if delay > 0 {
            tokio::time::sleep(Duration::from_millis(delay)).await;
        }
        match self.mode.load(Ordering::SeqCst) {
            RETRYABLE => Err(ConsumeError::Retryable("pipeline is full".into())),
            PERMANENT => Err(ConsumeError::Permanent("pipeline rejects this".into())),
            _ => {
                self.payloads
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .push(payload);
                Ok(())
            }
        }
    }
}

impl TestConsumer {
    pub fn take(&self) -> Vec<Payload> {
        std::mem::take(&mut *self.payloads.lock().unwrap_or_else(|e| e.into_inner()))
    }
    pub fn set_mode(&self, m: u8) {
        self.mode.store(m, Ordering::SeqCst);
    }
}

pub struct Harness {
    pub receiver: OtlpReceiver,
    pub sink: Arc<TestConsumer>,
    pub telemetry: Telemetry,
}

impl Harness {
    pub fn grpc(&self) -> SocketAddr {
        self.receiver.grpc_addr().expect("gRPC started")
    }
    pub fn http(&self) -> SocketAddr {
        self.receiver.http_addr().expect("HTTP started")
    }
    pub fn counter(&self, name: &str, transport: &str) -> i64 {
        self.telemetry
            .value(name, &[("receiver", "otlp"), ("transport", transport)])
            .unwrap_or(0)
    }
}

pub fn config(yaml: &str) -> OtlpReceiverConfig {
    let v: serde_yaml::Value = serde_yaml::from_str(yaml).expect("test yaml");
    parse_component::<OtlpReceiverConfig>(&v, "receivers::otlp").expect("valid config")
}

pub fn build(yaml: &str, signals: &[Signal]) -> Harness {
    let sink = Arc::new(TestConsumer::default());
    let telemetry = Telemetry::default();
    let consumers: HashMap<Signal, Arc<dyn Consumer>> = signals
        .iter()
        .map(|s| (*s, sink.clone() as Arc<dyn Consumer>))
        .collect();
    let receiver = OtlpReceiver::new(
        &config(yaml),
        ReceiverContext {
            id: ComponentId::parse("otlp").expect("id"),
            consumers,
            telemetry: telemetry.clone(),
        },
    )
    .expect("build");
    Harness {
        receiver,
        sink,
        telemetry,
    }
}

pub const BOTH: &str =
    "protocols: {grpc: {endpoint: '127.0.0.1:0'}, http: {endpoint: '127.0.0.1:0'}}";

pub async fn start(yaml: &str, signals: &[Signal]) -> Harness {
    let h = build(yaml, signals);
    h.receiver.start().await.expect("start");
    h
}

fn kv(k: &str, v: any_value::Value) -> KeyValue {
    KeyValue {
        key: k.into(),
        value: Some(AnyValue { value: Some(v) }),
    }
}

/// `n` spans with distinct ids, times and a spread of attribute types.
pub fn traces(n: usize) -> ExportTraceServiceRequest {
    let spans = (0..n)
        .map(|i| Span {
            trace_id: (0..16)
                .map(|b| (b as u8).wrapping_mul(17) ^ i as u8)
                .collect(),
            span_id: (0..8).map(|b| (b as u8).wrapping_add(i as u8)).collect(),
            parent_span_id: if i == 0 { Vec::new() } else { vec![9; 8] },
            name: format!("GET /items/{i}"),
            kind: span::SpanKind::Server as i32,
            start_time_unix_nano: 1_700_000_000_000_000_000 + i as u64,
            end_time_unix_nano: 1_700_000_000_250_000_000 + i as u64,
            attributes: vec![
                kv("http.method", any_value::Value::StringValue("GET".into())),
                kv(
                    "http.status_code",
                    any_value::Value::IntValue(200 + i as i64),
                ),
                kv("sampled", any_value::Value::BoolValue(i % 2 == 0)),
                kv("ratio", any_value::Value::DoubleValue(i as f64 / 3.0)),
                kv("raw", any_value::Value::BytesValue(vec![0, 255, i as u8])),
            ],
            status: Some(Status {
                message: String::new(),
                code: 1,
            }),
            flags: 0x301,
            ..Default::default()
        })
        .collect();
    ExportTraceServiceRequest {
        resource_spans: vec![ResourceSpans {
            resource: Some(Resource {
                attributes: vec![
                    kv(
                        "service.name",
                        any_value::Value::StringValue("checkout".into()),
                    ),
                    kv(
                        "service.instance.id",
                        any_value::Value::StringValue("c-1".into()),
                    ),
                ],
                ..Default::default()
            }),
            scope_spans: vec![ScopeSpans {
                scope: Some(InstrumentationScope {
                    name: "test".into(),
                    version: "1.0".into(),
                    ..Default::default()
                }),
                spans,
                schema_url: "https://opentelemetry.io/schemas/1.24.0".into(),
            }],
            schema_url: String::new(),
        }],
    }
}

pub fn metrics(points: usize) -> ExportMetricsServiceRequest {
    ExportMetricsServiceRequest {
        resource_metrics: vec![ResourceMetrics {
            scope_metrics: vec![ScopeMetrics {
                metrics: vec![Metric {
                    name: "queue.depth".into(),
                    unit: "1".into(),
                    data: Some(metric::Data::Gauge(Gauge {
                        data_points: (0..points)
                            .map(|i| NumberDataPoint {
                                time_unix_nano: 1_700_000_000_000_000_000 + i as u64,
                                value: Some(number_data_point::Value::AsInt(i as i64 - 3)),
                                attributes: vec![kv("q", any_value::Value::IntValue(i as i64))],
                                ..Default::default()
                            })
                            .collect(),
                    })),
                    ..Default::default()
                }],
                ..Default::default()
            }],
            ..Default::default()
        }],
    }
}

pub fn logs(records: usize) -> ExportLogsServiceRequest {
    ExportLogsServiceRequest {
        resource_logs: vec![ResourceLogs {
            scope_logs: vec![ScopeLogs {
                log_records: (0..records)
                    .map(|i| LogRecord {
                        time_unix_nano: 1_700_000_000_000_000_000 + i as u64,
                        severity_number: 9,
                        severity_text: "INFO".into(),
                        body: Some(AnyValue {
                            value: Some(any_value::Value::StringValue(format!("line {i}"))),
                        }),
                        trace_id: vec![7; 16],
                        span_id: vec![8; 8],
                        ..Default::default()
                    })
                    .collect(),
                ..Default::default()
            }],
            ..Default::default()
        }],
    }
}

pub const TRACE_EXPORT: &str = "/opentelemetry.proto.collector.trace.v1.TraceService/Export";

/// Sends pre-encoded bytes as the request message and ignores the response message.
#[derive(Clone, Copy, Default)]
pub struct RawClientCodec;

impl Codec for RawClientCodec {
    type Encode = Bytes;
    type Decode = Bytes;
    type Encoder = RawClientCodec;
    type Decoder = RawClientCodec;
    fn encoder(&mut self) -> Self {
        *self
    }
    fn decoder(&mut self) -> Self {
        *self
    }
}

impl Encoder for RawClientCodec {
    type Item = Bytes;
    type Error = tonic::Status;
    fn encode(&mut self, item: Bytes, dst: &mut EncodeBuf<'_>) -> Result<(), tonic::Status> {
        dst.put_slice(&item);
        Ok(())
    }
}

impl Decoder for RawClientCodec {
    type Item = Bytes;
    type Error = tonic::Status;
    fn decode(&mut self, src: &mut DecodeBuf<'_>) -> Result<Option<Bytes>, tonic::Status> {
        let n = src.remaining();
        Ok(Some(src.copy_to_bytes(n)))
    }
}

pub async fn channel(addr: SocketAddr) -> tonic::transport::Channel {
    tonic::transport::Endpoint::from_shared(format!("http://{addr}"))
        .expect("uri")
        .connect()
        .await
        .expect("connect")
}

/// One unary call with a raw body on `path`.
pub async fn grpc_raw(
    ch: &tonic::transport::Channel,
    path: &'static str,
    body: Bytes,
) -> Result<Bytes, tonic::Status> {
    let mut grpc = tonic::client::Grpc::new(ch.clone());
    grpc.ready()
        .await
        .map_err(|e| tonic::Status::unknown(e.to_string()))?;
    grpc.unary(
        tonic::Request::new(body),
        http::uri::PathAndQuery::from_static(path),
        RawClientCodec,
    )
    .await
    .map(|r| r.into_inner())
}

pub struct HttpReply {
    pub status: http::StatusCode,
    pub headers: http::HeaderMap,
    pub body: Bytes,
}

pub async fn http_request(
    method: http::Method,
    addr: SocketAddr,
    path: &str,
    headers: &[(&str, &str)],
    body: Vec<u8>,
) -> HttpReply {
    let client = Client::builder(TokioExecutor::new()).build_http::<Full<Bytes>>();
    let mut req = http::Request::builder()
        .method(method)
        .uri(format!("http://{addr}{path}"));
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    let req = req.body(Full::new(Bytes::from(body))).expect("request");
    let resp = client.request(req).await.expect("HTTP round trip");
    let status = resp.status();
    let headers = resp.headers().clone();
    let body = resp
        .into_body()
        .collect()
        .await
        .expect("response body")
        .to_bytes();
    HttpReply {
        status,
        headers,
        body,
    }
}

pub async fn post(
    addr: SocketAddr,
    path: &str,
    headers: &[(&str, &str)],
    body: Vec<u8>,
) -> HttpReply {
    http_request(http::Method::POST, addr, path, headers, body).await
}

pub fn gzip(data: &[u8]) -> Vec<u8> {
    use std::io::Write;
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    e.write_all(data).expect("gzip");
    e.finish().expect("gzip")
}

pub fn zlib(data: &[u8]) -> Vec<u8> {
    use std::io::Write;
    let mut e = flate2::write::ZlibEncoder::new(Vec::new(), flate2::Compression::fast());
    e.write_all(data).expect("zlib");
    e.finish().expect("zlib")
}

/// A decoded `google.rpc.Status` (code, message) from an error body.
pub fn rpc_status(body: &[u8]) -> (i32, String) {
    #[derive(Clone, PartialEq, prost::Message)]
    struct RpcStatus {
        #[prost(int32, tag = "1")]
        code: i32,
        #[prost(string, tag = "2")]
        message: String,
    }
    let s = <RpcStatus as prost::Message>::decode(body).expect("google.rpc.Status");
    (s.code, s.message)
}
