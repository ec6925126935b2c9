//! End-to-end: the `otlp` exporter against a real OTLP/gRPC server (tonic, the generated
//! collector services) on loopback.

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use opentelemetry_proto::tonic::collector::logs::v1::logs_service_server::{
    LogsService, LogsServiceServer,
};
use opentelemetry_proto::tonic::collector::logs::v1::{
    ExportLogsServiceRequest, ExportLogsServiceResponse,
};
use opentelemetry_proto::tonic::collector::metrics::v1::metrics_service_server::{
    MetricsService, MetricsServiceServer,
};
use opentelemetry_proto::tonic::collector::metrics::v1::{
    ExportMetricsServiceRequest, ExportMetricsServiceResponse,
};
use opentelemetry_proto::tonic::collector::trace::v1::trace_service_server::{
    TraceService, TraceServiceServer,
};
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTracePartialSuccess, ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use pipeline_core::{ConsumeError, Signal, Telemetry};
use prost::Message;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tonic::codec::CompressionEncoding;
use tonic::metadata::MetadataMap;
use tonic::transport::{Identity, Server, ServerTlsConfig};
use tonic::{Code, Request, Response, Status};

use super::OTLP_FACTORY;
use crate::common::rpc::{ProtoAny, ProtoDuration, RetryInfo, RpcStatus, RETRY_INFO_TYPE};
use crate::common::testutil::{
    build, metric, queue_size, sample, sample_decoded, wait_for, TestPki,
};

const WAIT: Duration = Duration::from_secs(20);

#[derive(Clone)]
enum Reply {
    Fail(Code, Option<Duration>),
    Partial(i64),
}

#[derive(Default)]
struct State {
    traces: Mutex<Vec<ExportTraceServiceRequest>>,
    metrics: Mutex<Vec<ExportMetricsServiceRequest>>,
    logs: Mutex<Vec<ExportLogsServiceRequest>>,
    metadata: Mutex<Vec<MetadataMap>>,
    calls: AtomicUsize,
    script: Mutex<VecDeque<Reply>>,
    /// When set, every call waits for a permit before answering.
    hold: Mutex<Option<Arc<Semaphore>>>,
}

impl State {
    fn script(&self, replies: &[Reply]) {
        self.script.lock().unwrap().extend(replies.iter().cloned());
    }

    fn calls(&self) -> usize {
        self.calls.load(Ordering::SeqCst)
    }

    /// What the server decoded for `signal`, re-encoded, and forgotten.
    fn received(&self, signal: Signal) -> Vec<Vec<u8>> {
        match signal {
            Signal::Traces => self
                .traces
                .lock()
                .unwrap()
                .drain(..)
                .map(|r| r.encode_to_vec())
                .collect(),
            Signal::Metrics => self
                .metrics
                .lock()
                .unwrap()
                .drain(..)
                .map(|r| r.encode_to_vec())
                .collect(),
            Signal::Logs => self
                .logs
                .lock()
                .unwrap()
                .drain(..)
                .map(|r| r.encode_to_vec())
                .collect(),
        }
    }

    fn spans(&self) -> usize {
        self.traces
            .lock()
            .unwrap()
            .iter()
            .flat_map(|r| &r.resource_spans)
            .flat_map(|r| &r.scope_spans)
            .map(|s| s.spans.len())
            .sum()
    }

    /// Records the call; `Err` when the script says to fail it, else the partial rejection.
    async fn answer(&self, md: &MetadataMap) -> Result<i64, Status> {
        self.calls.fetch_add(1, Ordering::SeqCst);
        self.metadata.lock().unwrap().push(md.clone());
        let hold = self.hold.lock().unwrap().clone();
        if let Some(sem) = hold {
            if let Ok(p) = sem.acquire().await {
                p.forget();
            }
        }
        let reply = self.script.lock().unwrap().pop_front();
        match reply {
            Some(Reply::Fail(code, retry)) => {
                let details = retry.map(|d| {
                    let info = RetryInfo {
                        retry_delay: Some(ProtoDuration {
                            seconds: d.as_secs() as i64,
                            nanos: d.subsec_nanos() as i32,
                        }),
                    };
                    RpcStatus {
                        code: code as i32,
                        message: "scripted".into(),
                        details: vec![ProtoAny {
                            type_url: RETRY_INFO_TYPE.into(),
                            value: info.encode_to_vec(),
                        }],
                    }
                    .encode_to_vec()
                });
                Err(match details {
                    Some(d) => Status::with_details(code, "scripted", d.into()),
                    None => Status::new(code, "scripted"),
                })
            }
            Some(Reply::Partial(n)) => Ok(n),
            None => Ok(0),
        }
    }
}

#[derive(Clone)]
struct Mock(Arc<State>);

#[tonic::async_trait]
impl TraceService for Mock {
    async fn export(
        &self,
        req: Request<ExportTraceServiceRequest>,
    ) -> Result<Response<ExportTraceServiceResponse>, Status> {
        let rejected = self.0.answer(req.metadata()).await?;
        self.0.traces.lock().unwrap().push(req.into_inner());
        Ok(Response::new(ExportTraceServiceResponse {
            partial_success: (rejected > 0).then(|| ExportTracePartialSuccess {
                rejected_spans: rejected,
                error_message: "some spans were too old".into(),
            }),
        }))
    }
}

#[tonic::async_trait]
impl MetricsService for Mock {
    async fn export(
        &self,
        req: Request<ExportMetricsServiceRequest>,
    ) -> Result<Response<ExportMetricsServiceResponse>, Status> {
        self.0.answer(req.metadata()).await?;
        self.0.metrics.lock().unwrap().push(req.into_inner());
        Ok(Response::new(ExportMetricsServiceResponse::default()))
    }
}

#[tonic::async_trait]
impl LogsService for Mock {
    async fn export(
        &self,
        req: Request<ExportLogsServiceRequest>,
    ) -> Result<Response<ExportLogsServiceResponse>, Status> {
        self.0.answer(req.metadata()).await?;
        self.0.logs.lock().unwrap().push(req.into_inner());
        Ok(Response::new(ExportLogsServiceResponse::default()))
    }
}

struct Collector {
    state: Arc<State>,
    addr: SocketAddr,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Collector {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn collector_on(addr: &str, pki: Option<&TestPki>) -> Collector {
    let listener = TcpListener::bind(addr).await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    let state = Arc::new(State::default());
    let m = Mock(state.clone());
    let mut server = Server::builder();
    if let Some(pki) = pki {
        server = server
            .tls_config(ServerTlsConfig::new().identity(Identity::from_pem(
                &pki.server_cert_pem,
                &pki.server_key_pem,
            )))
            .expect("server tls");
    }
    let router = server
        .add_service(
            TraceServiceServer::new(m.clone())
                .accept_compressed(CompressionEncoding::Gzip)
                .accept_compressed(CompressionEncoding::Zstd),
        )
        .add_service(
            MetricsServiceServer::new(m.clone())
                .accept_compressed(CompressionEncoding::Gzip)
                .accept_compressed(CompressionEncoding::Zstd),
        )
        .add_service(
            LogsServiceServer::new(m)
                .accept_compressed(CompressionEncoding::Gzip)
                .accept_compressed(CompressionEncoding::Zstd),
        );
    let incoming = tokio_stream::wrappers::TcpListenerStream::new(listener);
    let task = tokio::spawn(async move {
        let _ = router.serve_with_incoming(incoming).await;
    });
    Collector { state, addr, task }
}

async fn collector() -> Collector {
    collector_on("127.0.0.1:0", None).await
}

/// Fast retries so tests finish quickly.
fn yaml(endpoint: &str, extra: &str) -> String {
    format!(
        "endpoint: {endpoint}\ntls:\n  insecure: true\nretry_on_failure:\n  initial_interval: 10ms\n  max_interval: 50ms\n  max_elapsed_time: 10s\n{extra}"
    )
}

#[tokio::test]
async fn content_round_trips_for_every_signal_and_compression() {
    let c = collector().await;
    for compression in ["none", "gzip", "zstd"] {
        for signal in Signal::ALL {
            let tel = Telemetry::default();
            let id = format!("otlp/{compression}");
            let e = build(
                &OTLP_FACTORY,
                &yaml(
                    &c.addr.to_string(),
                    &format!("compression: {compression}\nheaders:\n  x-tenant: acme\n"),
                ),
                &id,
                signal,
                &tel,
            );
            e.start().await.unwrap();
            // Two encoded parts (as the batch processor merges them) and a decoded payload.
            let mut merged = sample(signal, "a", 3);
            merged.append(sample(signal, "b", 2));
            let decoded = sample_decoded(signal, "c", 4);
            let want = [merged.to_bytes().to_vec(), decoded.to_bytes().to_vec()];
            e.consume(merged).await.unwrap();
            e.consume(decoded).await.unwrap();
            wait_for("delivery", WAIT, || async {
                metric(&tel, "sent", signal, &id) == 9
            })
            .await;
            e.shutdown().await.unwrap();
            assert_eq!(metric(&tel, "send_failed", signal, &id), 0);

            // The server decoded exactly what was sent.
            let mut got = c.state.received(signal);
            got.sort();
            let mut want = want.to_vec();
            want.sort();
            assert_eq!(got, want, "{signal} {compression}");

            for m in c.state.metadata.lock().unwrap().drain(..) {
                assert_eq!(m.get("x-tenant").unwrap(), "acme");
                let enc = m
                    .get("grpc-encoding")
                    .map(|v| v.to_str().unwrap().to_string());
                match compression {
                    "none" => assert_eq!(enc, None),
                    other => assert_eq!(enc.as_deref(), Some(other)),
                }
                let ua = m.get("user-agent").unwrap().to_str().unwrap().to_string();
                assert!(ua.starts_with("Sonde/"), "{ua}");
            }
        }
    }
}

#[tokio::test]
async fn unavailable_twice_then_ok_delivers_once() {
    let c = collector().await;
    c.state.script(&[
        Reply::Fail(Code::Unavailable, None),
        Reply::Fail(Code::Unavailable, None),
    ]);
    let tel = Telemetry::default();
    let e = build(
        &OTLP_FACTORY,
        &yaml(&c.addr.to_string(), ""),
        "otlp",
        Signal::Traces,
        &tel,
    );
    e.start().await.unwrap();
    e.consume(sample(Signal::Traces, "a", 5)).await.unwrap();
    wait_for("delivery", WAIT, || async {
        metric(&tel, "sent", Signal::Traces, "otlp") == 5
    })
    .await;
    e.shutdown().await.unwrap();
    assert_eq!(c.state.calls(), 3);
    assert_eq!(c.state.spans(), 5);
    assert_eq!(metric(&tel, "send_failed", Signal::Traces, "otlp"), 0);
}

#[tokio::test]
async fn resource_exhausted_is_retried_only_with_retry_info() {
    let c = collector().await;
    c.state.script(&[
        Reply::Fail(Code::ResourceExhausted, Some(Duration::from_millis(300))),
        Reply::Fail(Code::ResourceExhausted, None),
    ]);
    let tel = Telemetry::default();
    let e = build(
        &OTLP_FACTORY,
        &yaml(&c.addr.to_string(), "sending_queue:\n  enabled: false\n"),
        "otlp",
        Signal::Traces,
        &tel,
    );
    e.start().await.unwrap();
    // First call: RetryInfo(300ms) -> retried after at least that long. Second: no RetryInfo
    // -> permanent, so the batch is dropped and the caller told.
    let t0 = Instant::now();
    let r = e.consume(sample(Signal::Traces, "a", 4)).await;
    assert!(matches!(r, Err(ConsumeError::Permanent(_))), "{r:?}");
    assert!(t0.elapsed() >= Duration::from_millis(300));
    assert_eq!(c.state.calls(), 2);
    assert_eq!(metric(&tel, "send_failed", Signal::Traces, "otlp"), 4);
    e.shutdown().await.unwrap();
}

#[tokio::test]
async fn permanent_error_is_not_retried_and_is_counted() {
    let c = collector().await;
    c.state.script(&[Reply::Fail(Code::InvalidArgument, None)]);
    let tel = Telemetry::default();
    let e = build(
        &OTLP_FACTORY,
        &yaml(&c.addr.to_string(), ""),
        "otlp",
        Signal::Logs,
        &tel,
    );
    e.start().await.unwrap();
    e.consume(sample(Signal::Logs, "a", 6)).await.unwrap();
    wait_for("the failure to be counted", WAIT, || async {
        metric(&tel, "send_failed", Signal::Logs, "otlp") == 6
    })
    .await;
    // Give a wrongly scheduled retry the time to happen.
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(c.state.calls(), 1);
    assert_eq!(metric(&tel, "sent", Signal::Logs, "otlp"), 0);
    e.shutdown().await.unwrap();
}

#[tokio::test]
async fn partial_success_counts_rejected_items_as_failed() {
    let c = collector().await;
    c.state.script(&[Reply::Partial(2)]);
    let tel = Telemetry::default();
    let e = build(
        &OTLP_FACTORY,
        &yaml(&c.addr.to_string(), "sending_queue:\n  enabled: false\n"),
        "otlp",
        Signal::Traces,
        &tel,
    );
    e.start().await.unwrap();
    e.consume(sample(Signal::Traces, "a", 5)).await.unwrap();
    assert_eq!(metric(&tel, "sent", Signal::Traces, "otlp"), 3);
    assert_eq!(metric(&tel, "send_failed", Signal::Traces, "otlp"), 2);
    e.shutdown().await.unwrap();
}

#[tokio::test]
async fn server_down_then_up_receives_everything() {
    let port = testutil_free_port();
    let tel = Telemetry::default();
    let e = build(
        &OTLP_FACTORY,
        &yaml(&format!("127.0.0.1:{port}"), ""),
        "otlp",
        Signal::Traces,
        &tel,
    );
    e.start().await.unwrap();
    for i in 0..20 {
        e.consume(sample(Signal::Traces, &format!("t{i}"), 10))
            .await
            .unwrap();
    }
    // Connection refused for a while: nothing may be dropped meanwhile.
    tokio::time::sleep(Duration::from_millis(400)).await;
    assert_eq!(metric(&tel, "send_failed", Signal::Traces, "otlp"), 0);
    assert_eq!(metric(&tel, "sent", Signal::Traces, "otlp"), 0);
    let c = collector_on(&format!("127.0.0.1:{port}"), None).await;
    wait_for("everything to arrive", WAIT, || async {
        c.state.spans() == 200
    })
    .await;
    wait_for("the sent counter", WAIT, || async {
        metric(&tel, "sent", Signal::Traces, "otlp") == 200
    })
    .await;
    e.shutdown().await.unwrap();
    assert_eq!(metric(&tel, "send_failed", Signal::Traces, "otlp"), 0);
    assert_eq!(queue_size(&tel, "otlp"), 0);
}

fn testutil_free_port() -> u16 {
    crate::common::testutil::free_port()
}

#[tokio::test]
async fn queue_overflow_counts_exactly_the_dropped_items() {
    let c = collector().await;
    let gate = Arc::new(Semaphore::new(0));
    *c.state.hold.lock().unwrap() = Some(gate.clone());
    let tel = Telemetry::default();
    let e = build(
        &OTLP_FACTORY,
        &yaml(
            &c.addr.to_string(),
            "sending_queue:\n  num_consumers: 1\n  queue_size: 2\n",
        ),
        "otlp",
        Signal::Traces,
        &tel,
    );
    e.start().await.unwrap();
    // One batch in flight (held by the server), two waiting in the queue...
    e.consume(sample(Signal::Traces, "a", 1)).await.unwrap();
    wait_for("the first send", WAIT, || async { c.state.calls() == 1 }).await;
    e.consume(sample(Signal::Traces, "b", 2)).await.unwrap();
    e.consume(sample(Signal::Traces, "c", 3)).await.unwrap();
    assert_eq!(queue_size(&tel, "otlp"), 2);
    // ...so these two are refused at once.
    let r = e.consume(sample(Signal::Traces, "d", 4)).await;
    assert!(
        matches!(r, Err(ConsumeError::Retryable(ref m)) if m.contains("sending queue is full")),
        "{r:?}"
    );
    let r = e.consume(sample(Signal::Traces, "e", 5)).await;
    assert!(r.is_err());
    assert_eq!(metric(&tel, "enqueue_failed", Signal::Traces, "otlp"), 9);
    assert_eq!(queue_size(&tel, "otlp"), 2);
    gate.add_permits(100);
    wait_for("the queued batches", WAIT, || async {
        c.state.spans() == 6
    })
    .await;
    wait_for("the sent counter", WAIT, || async {
        metric(&tel, "sent", Signal::Traces, "otlp") == 6
    })
    .await;
    e.shutdown().await.unwrap();
    assert_eq!(queue_size(&tel, "otlp"), 0);
    assert_eq!(metric(&tel, "send_failed", Signal::Traces, "otlp"), 0);
}

#[tokio::test]
async fn byte_budget_makes_callers_wait_instead_of_buffering() {
    let c = collector().await;
    let gate = Arc::new(Semaphore::new(0));
    *c.state.hold.lock().unwrap() = Some(gate.clone());
    let tel = Telemetry::default();
    let e = build(
        &OTLP_FACTORY,
        &yaml(
            &c.addr.to_string(),
            "sending_queue:\n  num_consumers: 1\n  queue_size: 100\n  max_size_mib: 1\n",
        ),
        "otlp",
        Signal::Traces,
        &tel,
    );
    e.start().await.unwrap();
    // Batches of roughly 200 KiB, charged twice: two fit the 1 MiB budget, the third waits.
    let mut spans = 1000;
    while sample(Signal::Traces, "x", spans).encoded_len() < 200 * 1024 {
        spans *= 2;
    }
    e.consume(sample(Signal::Traces, "a", spans)).await.unwrap();
    wait_for("the first send", WAIT, || async { c.state.calls() == 1 }).await;
    e.consume(sample(Signal::Traces, "b", spans)).await.unwrap();
    let third = e.consume(sample(Signal::Traces, "c", spans));
    tokio::pin!(third);
    assert!(
        tokio::time::timeout(Duration::from_millis(300), &mut third)
            .await
            .is_err(),
        "the third batch must wait for budget"
    );
    assert_eq!(metric(&tel, "enqueue_failed", Signal::Traces, "otlp"), 0);
    gate.add_permits(100);
    third.await.unwrap();
    wait_for("every batch", WAIT, || async {
        c.state.spans() == 3 * spans
    })
    .await;
    e.shutdown().await.unwrap();
}

#[tokio::test]
async fn shutdown_reports_undeliverable_items_and_returns_promptly() {
    let port = testutil_free_port();
    let tel = Telemetry::default();
    // Long retry intervals: shutdown must not wait them out.
    let e = build(
        &OTLP_FACTORY,
        &format!(
            "endpoint: 127.0.0.1:{port}\ntls:\n  insecure: true\nsending_queue:\n  num_consumers: 2\n"
        ),
        "otlp",
        Signal::Metrics,
        &tel,
    );
    e.start().await.unwrap();
    for i in 0..5 {
        e.consume(sample(Signal::Metrics, &format!("m{i}"), 3))
            .await
            .unwrap();
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    let t0 = Instant::now();
    e.shutdown().await.unwrap();
    assert!(t0.elapsed() < Duration::from_secs(8), "{:?}", t0.elapsed());
    assert_eq!(metric(&tel, "send_failed", Signal::Metrics, "otlp"), 15);
    assert_eq!(metric(&tel, "sent", Signal::Metrics, "otlp"), 0);
    assert_eq!(queue_size(&tel, "otlp"), 0);
    // After shutdown nothing is accepted, and the refusal is counted.
    let r = e.consume(sample(Signal::Metrics, "late", 2)).await;
    assert!(r.is_err());
    assert_eq!(metric(&tel, "enqueue_failed", Signal::Metrics, "otlp"), 2);
}

#[tokio::test]
async fn shutdown_gives_up_after_the_drain_period_and_counts_the_rest() {
    let c = collector().await;
    // The server never answers: each batch costs one full `timeout` per attempt.
    *c.state.hold.lock().unwrap() = Some(Arc::new(Semaphore::new(0)));
    let tel = Telemetry::default();
    let e = build(
        &OTLP_FACTORY,
        &yaml(
            &c.addr.to_string(),
            "timeout: 1s\nsending_queue:\n  num_consumers: 1\n",
        ),
        "otlp",
        Signal::Traces,
        &tel,
    );
    e.start().await.unwrap();
    for i in 0..10 {
        e.consume(sample(Signal::Traces, &format!("t{i}"), 1))
            .await
            .unwrap();
    }
    wait_for("the first send", WAIT, || async { c.state.calls() >= 1 }).await;
    // Draining 10 batches one by one would take 10s; the drain period is timeout + 5s.
    let t0 = Instant::now();
    e.shutdown().await.unwrap();
    let took = t0.elapsed();
    assert!(
        took >= Duration::from_secs(5) && took < Duration::from_secs(9),
        "{took:?}"
    );
    assert_eq!(metric(&tel, "send_failed", Signal::Traces, "otlp"), 10);
    assert_eq!(metric(&tel, "sent", Signal::Traces, "otlp"), 0);
    assert_eq!(queue_size(&tel, "otlp"), 0);
}

#[tokio::test]
async fn attempt_timeout_applies() {
    let c = collector().await;
    *c.state.hold.lock().unwrap() = Some(Arc::new(Semaphore::new(0)));
    let tel = Telemetry::default();
    let e = build(
        &OTLP_FACTORY,
        &format!(
            "endpoint: {}\ntls:\n  insecure: true\ntimeout: 200ms\nretry_on_failure:\n  enabled: false\nsending_queue:\n  enabled: false\n",
            c.addr
        ),
        "otlp",
        Signal::Traces,
        &tel,
    );
    e.start().await.unwrap();
    let t0 = Instant::now();
    let r = e.consume(sample(Signal::Traces, "a", 2)).await;
    assert!(matches!(r, Err(ConsumeError::Retryable(_))), "{r:?}");
    assert!(t0.elapsed() < Duration::from_secs(3));
    assert_eq!(metric(&tel, "send_failed", Signal::Traces, "otlp"), 2);
    e.shutdown().await.unwrap();
}

#[tokio::test]
async fn tls_with_a_private_ca() {
    let pki = TestPki::new("grpc-tls");
    let c = collector_on("127.0.0.1:0", Some(&pki)).await;
    let port = c.addr.port();
    let tel = Telemetry::default();
    // TLS is on by default; the CA file makes the server's certificate trusted.
    let e = build(
        &OTLP_FACTORY,
        &format!(
            "endpoint: localhost:{port}\ntls:\n  ca_file: {}\nsending_queue:\n  enabled: false\n",
            pki.ca_path().display()
        ),
        "otlp/tls",
        Signal::Traces,
        &tel,
    );
    e.start().await.unwrap();
    e.consume(sample(Signal::Traces, "a", 3)).await.unwrap();
    assert_eq!(c.state.spans(), 3);
    e.shutdown().await.unwrap();

    // `https://` + IP address, verified against the IP SAN.
    let e = build(
        &OTLP_FACTORY,
        &format!(
            "endpoint: https://127.0.0.1:{port}\ntls:\n  ca_pem: |\n{}\nsending_queue:\n  enabled: false\n",
            pki.ca_pem.lines().map(|l| format!("    {l}")).collect::<Vec<_>>().join("\n")
        ),
        "otlp/tls-ip",
        Signal::Traces,
        &tel,
    );
    e.start().await.unwrap();
    e.consume(sample(Signal::Traces, "b", 1)).await.unwrap();
    assert_eq!(c.state.spans(), 4);
    e.shutdown().await.unwrap();

    // Without the CA the handshake fails (and a wrong name would too); skip-verify gets through.
    let e = build(
        &OTLP_FACTORY,
        &format!(
            "endpoint: localhost:{port}\ntls:\n  ca_file: {}\n  server_name_override: other.example\nretry_on_failure:\n  enabled: false\nsending_queue:\n  enabled: false\n",
            pki.ca_path().display()
        ),
        "otlp/badname",
        Signal::Traces,
        &tel,
    );
    e.start().await.unwrap();
    let r = e.consume(sample(Signal::Traces, "c", 1)).await;
    let msg = format!("{r:?}");
    assert!(
        r.is_err() && msg.to_lowercase().contains("certificate"),
        "{msg}"
    );
    e.shutdown().await.unwrap();

    let e = build(
        &OTLP_FACTORY,
        &format!(
            "endpoint: localhost:{port}\ntls:\n  insecure_skip_verify: true\nsending_queue:\n  enabled: false\n"
        ),
        "otlp/skip",
        Signal::Traces,
        &tel,
    );
    e.start().await.unwrap();
    e.consume(sample(Signal::Traces, "d", 2)).await.unwrap();
    assert_eq!(c.state.spans(), 6);
    e.shutdown().await.unwrap();

    // A plain-text client against the TLS server fails rather than hanging.
    let e = build(
        &OTLP_FACTORY,
        &format!(
            "endpoint: localhost:{port}\ntls:\n  insecure: true\ntimeout: 2s\nretry_on_failure:\n  enabled: false\nsending_queue:\n  enabled: false\n"
        ),
        "otlp/plain",
        Signal::Traces,
        &tel,
    );
    e.start().await.unwrap();
    assert!(e.consume(sample(Signal::Traces, "e", 1)).await.is_err());
    e.shutdown().await.unwrap();
}

#[tokio::test]
async fn missing_ca_file_fails_at_start_not_at_build() {
    let tel = Telemetry::default();
    let e = build(
        &OTLP_FACTORY,
        "endpoint: jaeger:4317\ntls:\n  ca_file: /nonexistent/ca.pem\n",
        "otlp",
        Signal::Traces,
        &tel,
    );
    let err = e.start().await.unwrap_err().to_string();
    assert!(err.contains("/nonexistent/ca.pem"), "{err}");
    e.shutdown().await.unwrap();
}

#[tokio::test]
async fn shutdown_without_start_is_safe() {
    let tel = Telemetry::default();
    let e = build(
        &OTLP_FACTORY,
        "endpoint: jaeger:4317\ntls:\n  insecure: true\n",
        "otlp",
        Signal::Logs,
        &tel,
    );
    e.shutdown().await.unwrap();
}

/// The seed deployment's exporter block: `validate`'s path (parse, check, build the graph) must
/// succeed although `jaeger` does not resolve here.
#[test]
fn seed_config_builds_a_graph_without_resolving_names() {
    use pipeline_core::{
        ComponentError, Lifecycle, Receiver, ReceiverConfig, ReceiverContext, ReceiverFactory,
        Registry, Service,
    };

    struct Idle;
    impl Lifecycle for Idle {}
    struct IdleConfig;
    impl ReceiverConfig for IdleConfig {
        fn build(&self, _: ReceiverContext) -> Result<Arc<dyn Receiver>, ComponentError> {
            Ok(Arc::new(Idle))
        }
    }
    let registry = Registry {
        receivers: vec![ReceiverFactory {
            type_name: "otlp",
            signals: &[Signal::Traces, Signal::Metrics, Signal::Logs],
            parse: |_, _| Ok(Box::new(IdleConfig)),
        }],
        exporters: vec![OTLP_FACTORY, crate::otlphttp::OTLPHTTP_FACTORY],
        aliases: vec![("otlp_grpc", "otlp"), ("otlp_http", "otlphttp")],
        ..Default::default()
    };
    let yaml = r#"
receivers:
  otlp:
    protocols:
      http:
        endpoint: otel-collector:4318
exporters:
  otlp/jaeger:
    endpoint: jaeger:4317
    tls:
      insecure: true
  otlp_http/vendor:
    endpoint: https://ingest.vendor.invalid
    headers:
      api-key: secret
service:
  pipelines:
    traces:
      receivers: [otlp]
      exporters: [otlp/jaeger, otlp_http/vendor]
"#;
    let root: serde_yaml::Value = serde_yaml::from_str(yaml).unwrap();
    let cfg = pipeline_core::Config::parse(&root, &registry).unwrap();
    assert!(Service::build(&cfg, &Telemetry::default()).is_ok());
}

#[tokio::test]
async fn blocking_queue_waits_for_room_instead_of_dropping() {
    let c = collector().await;
    let gate = Arc::new(Semaphore::new(0));
    *c.state.hold.lock().unwrap() = Some(gate.clone());
    let tel = Telemetry::default();
    let e = build(
        &OTLP_FACTORY,
        &yaml(
            &c.addr.to_string(),
            "sending_queue:\n  num_consumers: 1\n  queue_size: 1\n  blocking: true\n",
        ),
        "otlp",
        Signal::Traces,
        &tel,
    );
    e.start().await.unwrap();
    e.consume(sample(Signal::Traces, "a", 1)).await.unwrap();
    wait_for("the first send", WAIT, || async { c.state.calls() == 1 }).await;
    e.consume(sample(Signal::Traces, "b", 1)).await.unwrap();
    let e2 = e.clone();
    let third = tokio::spawn(async move { e2.consume(sample(Signal::Traces, "c", 1)).await });
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(
        !third.is_finished(),
        "a full blocking queue must hold the caller"
    );
    gate.add_permits(100);
    third.await.unwrap().unwrap();
    wait_for("all three", WAIT, || async { c.state.spans() == 3 }).await;
    e.shutdown().await.unwrap();
    assert_eq!(metric(&tel, "enqueue_failed", Signal::Traces, "otlp"), 0);
}
