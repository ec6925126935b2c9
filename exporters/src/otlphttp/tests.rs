//! End-to-end: the `otlphttp` exporter against a real HTTP server (hyper, HTTP/1.1 and, over
//! TLS, HTTP/2) on loopback.

use std::collections::VecDeque;
use std::io::Read as _;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{HeaderMap, Response};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo};
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTracePartialSuccess, ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use pipeline_core::{ConsumeError, Signal, Telemetry};
use prost::Message;
use tokio::net::TcpListener;

use super::OTLPHTTP_FACTORY;
use crate::common::testutil::{
    self, build, free_port, metric, sample, sample_decoded, wait_for, TestPki,
};

const WAIT: Duration = Duration::from_secs(20);

#[derive(Clone)]
enum Reply {
    Status(u16, Option<&'static str>),
    Partial(i64),
}

struct Recorded {
    path: String,
    version: http::Version,
    headers: HeaderMap,
    /// Decompressed.
    body: Vec<u8>,
}

#[derive(Default)]
struct State {
    requests: Mutex<Vec<Recorded>>,
    calls: AtomicUsize,
    script: Mutex<VecDeque<Reply>>,
}

impl State {
    fn calls(&self) -> usize {
        self.calls.load(Ordering::SeqCst)
    }

    fn script(&self, replies: &[Reply]) {
        self.script.lock().unwrap().extend(replies.iter().cloned());
    }

    fn delivered(&self) -> usize {
        self.requests.lock().unwrap().len()
    }

    async fn handle(&self, req: http::Request<Incoming>) -> Response<Full<Bytes>> {
        self.calls.fetch_add(1, Ordering::SeqCst);
        let (parts, body) = req.into_parts();
        let raw = body
            .collect()
            .await
            .map(|b| b.to_bytes())
            .unwrap_or_default();
        let body = match parts
            .headers
            .get("content-encoding")
            .map(|v| v.to_str().unwrap_or_default())
        {
            Some("gzip") => {
                let mut out = Vec::new();
                flate2::read::GzDecoder::new(&raw[..])
                    .read_to_end(&mut out)
                    .expect("valid gzip");
                out
            }
            Some("zstd") => zstd::decode_all(&raw[..]).expect("valid zstd"),
            _ => raw.to_vec(),
        };
        let reply = self.script.lock().unwrap().pop_front();
        let rejected = match reply {
            Some(Reply::Status(code, retry_after)) => {
                let mut b = Response::builder()
                    .status(code)
                    .header("content-type", "text/plain");
                if let Some(ra) = retry_after {
                    b = b.header("retry-after", ra);
                }
                return b
                    .body(Full::new(Bytes::from_static(b"scripted failure")))
                    .unwrap();
            }
            Some(Reply::Partial(n)) => n,
            None => 0,
        };
        self.requests.lock().unwrap().push(Recorded {
            path: parts.uri.path().to_string(),
            version: parts.version,
            headers: parts.headers,
            body,
        });
        let resp = ExportTraceServiceResponse {
            partial_success: (rejected > 0).then(|| ExportTracePartialSuccess {
                rejected_spans: rejected,
                error_message: "rejected by test".into(),
            }),
        };
        Response::builder()
            .header("content-type", "application/x-protobuf")
            .body(Full::new(Bytes::from(resp.encode_to_vec())))
            .unwrap()
    }
}

struct Server {
    state: Arc<State>,
    addr: SocketAddr,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Server {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn server_on(addr: &str, pki: Option<&TestPki>) -> Server {
    let listener = TcpListener::bind(addr).await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    let state = Arc::new(State::default());
    let st = state.clone();
    let acceptor =
        pki.map(|p| tokio_rustls::TlsAcceptor::from(p.server_config(&[b"h2", b"http/1.1"])));
    let task = tokio::spawn(async move {
        let mut conns = tokio::task::JoinSet::new();
        loop {
            let Ok((tcp, _)) = listener.accept().await else {
                continue;
            };
            let st = st.clone();
            let acceptor = acceptor.clone();
            conns.spawn(async move {
                let svc = hyper::service::service_fn(move |req| {
                    let st = st.clone();
                    async move { Ok::<_, std::convert::Infallible>(st.handle(req).await) }
                });
                let builder = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
                match acceptor {
                    Some(a) => {
                        if let Ok(tls) = a.accept(tcp).await {
                            let _ = builder.serve_connection(TokioIo::new(tls), svc).await;
                        }
                    }
                    None => {
                        let _ = builder.serve_connection(TokioIo::new(tcp), svc).await;
                    }
                }
            });
        }
    });
    Server { state, addr, task }
}

async fn server() -> Server {
    server_on("127.0.0.1:0", None).await
}

fn yaml(endpoint: &str, extra: &str) -> String {
    format!(
        "endpoint: {endpoint}\nretry_on_failure:\n  initial_interval: 10ms\n  max_interval: 50ms\n  max_elapsed_time: 10s\n{extra}"
    )
}

#[tokio::test]
async fn protobuf_bodies_round_trip_byte_for_byte() {
    let s = server().await;
    let base = format!("http://{}", s.addr);
    for compression in ["none", "gzip", "zstd"] {
        for signal in Signal::ALL {
            let tel = Telemetry::default();
            let id = format!("otlphttp/{compression}");
            let e = build(
                &OTLPHTTP_FACTORY,
                &yaml(
                    &base,
                    &format!(
                        "compression: {compression}\nheaders:\n  Authorization: Bearer t0ken\n"
                    ),
                ),
                &id,
                signal,
                &tel,
            );
            e.start().await.unwrap();
            let mut merged = sample(signal, "a", 2);
            merged.append(sample(signal, "b", 3));
            let want = merged.to_bytes();
            e.consume(merged).await.unwrap();
            wait_for("delivery", WAIT, || async {
                metric(&tel, "sent", signal, &id) == 5
            })
            .await;
            e.shutdown().await.unwrap();
            let r = s.state.requests.lock().unwrap().pop().expect("a request");
            assert_eq!(r.path, format!("/v1/{signal}"));
            assert_eq!(r.body, want.to_vec(), "{signal} {compression}");
            assert_eq!(r.headers["content-type"], "application/x-protobuf");
            assert_eq!(r.headers["authorization"], "Bearer t0ken");
            assert!(r.headers["user-agent"]
                .to_str()
                .unwrap()
                .starts_with("Sonde/"));
            match compression {
                "none" => assert!(r.headers.get("content-encoding").is_none()),
                c => assert_eq!(r.headers["content-encoding"], c),
            }
        }
    }
}

#[tokio::test]
async fn json_encoding_sends_otlp_json() {
    let s = server().await;
    let tel = Telemetry::default();
    let e = build(
        &OTLPHTTP_FACTORY,
        &yaml(
            &format!("http://{}", s.addr),
            "encoding: json\nsending_queue:\n  enabled: false\n",
        ),
        "otlphttp",
        Signal::Traces,
        &tel,
    );
    e.start().await.unwrap();
    e.consume(sample(Signal::Traces, "a", 3)).await.unwrap();
    e.consume(sample_decoded(Signal::Traces, "b", 1))
        .await
        .unwrap();
    e.shutdown().await.unwrap();
    let reqs = s.state.requests.lock().unwrap();
    assert_eq!(reqs.len(), 2);
    assert_eq!(reqs[0].headers["content-type"], "application/json");
    let text = String::from_utf8(reqs[0].body.clone()).unwrap();
    // OTLP/JSON: camelCase keys, hex ids.
    assert!(text.contains("\"resourceSpans\""), "{text}");
    assert!(text.contains(&hex::encode([7u8; 16])), "{text}");
    let back: ExportTraceServiceRequest = serde_json::from_str(&text).unwrap();
    assert_eq!(back, testutil::traces("a", 3));
    assert_eq!(metric(&tel, "sent", Signal::Traces, "otlphttp"), 4);
}

#[tokio::test]
async fn per_signal_endpoint_overrides_the_base() {
    let s = server().await;
    let tel = Telemetry::default();
    let e = build(
        &OTLPHTTP_FACTORY,
        &yaml(
            "http://does-not-resolve.invalid:4318",
            &format!(
                "logs_endpoint: http://{}/custom/logs\nsending_queue:\n  enabled: false\n",
                s.addr
            ),
        ),
        "otlphttp",
        Signal::Logs,
        &tel,
    );
    e.start().await.unwrap();
    e.consume(sample(Signal::Logs, "a", 2)).await.unwrap();
    e.shutdown().await.unwrap();
    assert_eq!(s.state.requests.lock().unwrap()[0].path, "/custom/logs");
}

#[tokio::test]
async fn unavailable_twice_then_ok_delivers_once() {
    let s = server().await;
    s.state
        .script(&[Reply::Status(503, None), Reply::Status(502, None)]);
    let tel = Telemetry::default();
    let e = build(
        &OTLPHTTP_FACTORY,
        &yaml(&format!("http://{}", s.addr), ""),
        "otlphttp",
        Signal::Metrics,
        &tel,
    );
    e.start().await.unwrap();
    e.consume(sample(Signal::Metrics, "a", 4)).await.unwrap();
    wait_for("delivery", WAIT, || async {
        metric(&tel, "sent", Signal::Metrics, "otlphttp") == 4
    })
    .await;
    e.shutdown().await.unwrap();
    assert_eq!(s.state.calls(), 3);
    assert_eq!(s.state.delivered(), 1);
    assert_eq!(metric(&tel, "send_failed", Signal::Metrics, "otlphttp"), 0);
}

#[tokio::test]
async fn retry_after_is_honoured() {
    let s = server().await;
    s.state.script(&[Reply::Status(429, Some("1"))]);
    let tel = Telemetry::default();
    let e = build(
        &OTLPHTTP_FACTORY,
        &yaml(
            &format!("http://{}", s.addr),
            "sending_queue:\n  enabled: false\n",
        ),
        "otlphttp",
        Signal::Traces,
        &tel,
    );
    e.start().await.unwrap();
    let t0 = Instant::now();
    e.consume(sample(Signal::Traces, "a", 1)).await.unwrap();
    assert!(t0.elapsed() >= Duration::from_secs(1), "{:?}", t0.elapsed());
    assert_eq!(s.state.calls(), 2);
    e.shutdown().await.unwrap();
}

#[tokio::test]
async fn permanent_error_is_not_retried_and_is_counted() {
    let s = server().await;
    s.state.script(&[Reply::Status(400, None)]);
    let tel = Telemetry::default();
    let e = build(
        &OTLPHTTP_FACTORY,
        &yaml(
            &format!("http://{}", s.addr),
            "sending_queue:\n  enabled: false\n",
        ),
        "otlphttp",
        Signal::Logs,
        &tel,
    );
    e.start().await.unwrap();
    let r = e.consume(sample(Signal::Logs, "a", 3)).await;
    match r {
        Err(ConsumeError::Permanent(m)) => {
            assert!(m.contains("400") && m.contains("scripted failure"), "{m}")
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(s.state.calls(), 1);
    assert_eq!(metric(&tel, "send_failed", Signal::Logs, "otlphttp"), 3);
    e.shutdown().await.unwrap();
}

#[tokio::test]
async fn partial_success_counts_rejected_items_as_failed() {
    let s = server().await;
    s.state.script(&[Reply::Partial(1)]);
    let tel = Telemetry::default();
    let e = build(
        &OTLPHTTP_FACTORY,
        &yaml(
            &format!("http://{}", s.addr),
            "sending_queue:\n  enabled: false\n",
        ),
        "otlphttp",
        Signal::Traces,
        &tel,
    );
    e.start().await.unwrap();
    e.consume(sample(Signal::Traces, "a", 4)).await.unwrap();
    assert_eq!(metric(&tel, "sent", Signal::Traces, "otlphttp"), 3);
    assert_eq!(metric(&tel, "send_failed", Signal::Traces, "otlphttp"), 1);
    e.shutdown().await.unwrap();
}

#[tokio::test]
async fn server_down_then_up_receives_everything() {
    let port = free_port();
    let tel = Telemetry::default();
    let e = build(
        &OTLPHTTP_FACTORY,
        &yaml(&format!("http://127.0.0.1:{port}"), ""),
        "otlphttp",
        Signal::Logs,
        &tel,
    );
    e.start().await.unwrap();
    for i in 0..15 {
        e.consume(sample(Signal::Logs, &format!("l{i}"), 2))
            .await
            .unwrap();
    }
    tokio::time::sleep(Duration::from_millis(400)).await;
    assert_eq!(metric(&tel, "send_failed", Signal::Logs, "otlphttp"), 0);
    let s = server_on(&format!("127.0.0.1:{port}"), None).await;
    wait_for("everything to arrive", WAIT, || async {
        metric(&tel, "sent", Signal::Logs, "otlphttp") == 30
    })
    .await;
    e.shutdown().await.unwrap();
    assert_eq!(s.state.delivered(), 15);
    assert_eq!(metric(&tel, "send_failed", Signal::Logs, "otlphttp"), 0);
}

#[tokio::test]
async fn https_with_a_private_ca_negotiates_http2() {
    let pki = TestPki::new("http-tls");
    let s = server_on("127.0.0.1:0", Some(&pki)).await;
    let port = s.addr.port();
    let tel = Telemetry::default();
    let e = build(
        &OTLPHTTP_FACTORY,
        &yaml(
            &format!("https://localhost:{port}"),
            &format!(
                "tls:\n  ca_file: {}\nsending_queue:\n  enabled: false\n",
                pki.ca_path().display()
            ),
        ),
        "otlphttp",
        Signal::Traces,
        &tel,
    );
    e.start().await.unwrap();
    e.consume(sample(Signal::Traces, "a", 2)).await.unwrap();
    e.consume(sample(Signal::Traces, "b", 2)).await.unwrap();
    e.shutdown().await.unwrap();
    {
        let reqs = s.state.requests.lock().unwrap();
        assert_eq!(reqs.len(), 2);
        assert_eq!(reqs[0].version, http::Version::HTTP_2);
    }

    // The system roots do not trust the test CA.
    let e = build(
        &OTLPHTTP_FACTORY,
        &format!(
            "endpoint: https://localhost:{port}\nretry_on_failure:\n  enabled: false\nsending_queue:\n  enabled: false\n"
        ),
        "otlphttp/untrusted",
        Signal::Traces,
        &tel,
    );
    match e.start().await {
        // No system store on this machine: a clear start-up error.
        Err(err) => assert!(err.to_string().contains("CA"), "{err}"),
        Ok(()) => {
            let r = e.consume(sample(Signal::Traces, "c", 1)).await;
            let msg = format!("{r:?}");
            assert!(msg.to_lowercase().contains("certificate"), "{msg}");
        }
    }
    e.shutdown().await.unwrap();

    let e = build(
        &OTLPHTTP_FACTORY,
        &format!(
            "endpoint: https://127.0.0.1:{port}\ntls:\n  insecure_skip_verify: true\nsending_queue:\n  enabled: false\n"
        ),
        "otlphttp/skip",
        Signal::Traces,
        &tel,
    );
    e.start().await.unwrap();
    e.consume(sample(Signal::Traces, "d", 1)).await.unwrap();
    e.shutdown().await.unwrap();
    assert_eq!(s.state.delivered(), 3);
}

#[tokio::test]
async fn connection_refused_is_retried_not_dropped() {
    let port = free_port();
    let tel = Telemetry::default();
    let e = build(
        &OTLPHTTP_FACTORY,
        &format!(
            "endpoint: http://127.0.0.1:{port}\nretry_on_failure:\n  initial_interval: 10ms\n  max_interval: 20ms\n  max_elapsed_time: 300ms\nsending_queue:\n  enabled: false\n"
        ),
        "otlphttp",
        Signal::Traces,
        &tel,
    );
    e.start().await.unwrap();
    let r = e.consume(sample(Signal::Traces, "a", 2)).await;
    match r {
        Err(ConsumeError::Retryable(m)) => {
            assert!(
                m.contains("no more retries left") && m.contains("attempts"),
                "{m}"
            )
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(metric(&tel, "send_failed", Signal::Traces, "otlphttp"), 2);
    e.shutdown().await.unwrap();
}
