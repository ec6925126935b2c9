//! The OTLP/gRPC load generator. Requests are pre-encoded (and pre-compressed) gRPC frames
//! sent as raw HTTP/2 requests over tonic channels, so the generator spends its CPU on
//! networking only and leaves the cores to the collector under test.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use http::header::{HeaderValue, CONTENT_TYPE, TE};
use http_body_util::{BodyExt, Full};
use tokio::task::JoinSet;
use tonic::body::Body;
use tonic::transport::{Channel, Endpoint};
use tower::ServiceExt;

use crate::spans::{RequestSet, TRACE_EXPORT_PATH};

#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    #[error("invalid endpoint {0:?}: {1}")]
    Endpoint(String, String),
    #[error("cannot connect to {0}: {1}")]
    Connect(String, String),
}

#[derive(Debug, Clone)]
pub struct LoadConfig {
    /// `host:port` or `http://host:port`.
    pub endpoint: String,
    /// Requests in flight at once, over all connections.
    pub concurrency: usize,
    /// HTTP/2 connections the requests are spread over.
    pub connections: usize,
    /// Spans per second to pace at; `None` sends as fast as the target acknowledges.
    pub rate: Option<f64>,
    /// Time allowed for one request before it counts as failed.
    pub request_timeout: Duration,
    /// Stop sending after this long, whatever is left.
    pub max_duration: Duration,
}

#[derive(Debug, Clone, Default)]
pub struct LoadReport {
    pub requested_spans: u64,
    /// Spans in requests the target acknowledged with gRPC status OK.
    pub acked_spans: u64,
    /// Spans in requests that failed (transport error, non-OK status, timeout).
    pub failed_spans: u64,
    pub acked_requests: u64,
    pub failed_requests: u64,
    /// Requests resent after an Unavailable answer.
    pub retries: u64,
    /// Spans never sent because the time limit was hit.
    pub unsent_spans: u64,
    pub elapsed: Duration,
    pub first_error: Option<String>,
}

impl LoadReport {
    pub fn acked_per_second(&self) -> f64 {
        self.acked_spans as f64 / self.elapsed.as_secs_f64().max(1e-9)
    }
}

fn endpoint_uri(endpoint: &str) -> String {
    if endpoint.contains("://") {
        endpoint.to_owned()
    } else {
        format!("http://{endpoint}")
    }
}

/// Opens the connections eagerly so connection set-up is not part of the measured load.
pub async fn connect(cfg: &LoadConfig) -> Result<Vec<Channel>, LoadError> {
    let uri = endpoint_uri(&cfg.endpoint);
    let endpoint = Endpoint::from_shared(uri.clone())
        .map_err(|e| LoadError::Endpoint(cfg.endpoint.clone(), e.to_string()))?
        .tcp_nodelay(true)
        .connect_timeout(Duration::from_secs(5));
    let mut channels = Vec::new();
    for _ in 0..cfg.connections.max(1) {
        let ch = endpoint
            .connect()
            .await
            .map_err(|e| LoadError::Connect(uri.clone(), format!("{e:?}")))?;
        channels.push(ch);
    }
    Ok(channels)
}

fn grpc_status(headers: &http::HeaderMap) -> Option<Result<(), String>> {
    let status = headers.get("grpc-status")?;
    if status.as_bytes() == b"0" {
        return Some(Ok(()));
    }
    let message = headers
        .get("grpc-message")
        .map(|m| String::from_utf8_lossy(m.as_bytes()).into_owned())
        .unwrap_or_default();
    Some(Err(format!(
        "grpc-status {} {}",
        String::from_utf8_lossy(status.as_bytes()),
        message
    )))
}

async fn send_one(
    channel: Channel,
    uri: &http::Uri,
    frame: bytes::Bytes,
    gzip: bool,
) -> Result<(), String> {
    let mut req = http::Request::new(Body::new(Full::new(frame)));
    *req.method_mut() = http::Method::POST;
    *req.uri_mut() = uri.clone();
    let h = req.headers_mut();
    h.insert(CONTENT_TYPE, HeaderValue::from_static("application/grpc"));
    h.insert(TE, HeaderValue::from_static("trailers"));
    h.insert("grpc-accept-encoding", HeaderValue::from_static("gzip"));
    if gzip {
        h.insert("grpc-encoding", HeaderValue::from_static("gzip"));
    }
    let resp = channel
        .oneshot(req)
        .await
        .map_err(|e| format!("transport: {e:?}"))?;
    let (parts, body) = resp.into_parts();
    if parts.status != http::StatusCode::OK {
        return Err(format!("HTTP status {}", parts.status));
    }
    // A trailers-only response carries the status in the headers.
    if let Some(r) = grpc_status(&parts.headers) {
        return r;
    }
    let collected = body
        .collect()
        .await
        .map_err(|e| format!("response body: {e}"))?;
    match collected.trailers().and_then(grpc_status) {
        Some(r) => r,
        None => Err("response without grpc-status".to_owned()),
    }
}

/// gRPC status 14: the server asks the client to back off and resend.
fn is_unavailable(e: &str) -> bool {
    e.starts_with("grpc-status 14 ")
}

struct Shared {
    next: AtomicU64,
    retries: AtomicU64,
    acked_spans: AtomicU64,
    failed_spans: AtomicU64,
    acked_requests: AtomicU64,
    failed_requests: AtomicU64,
    first_error: Mutex<Option<String>>,
}

/// Sends every request of `set` over `channels` and reports what was acknowledged.
pub async fn run(cfg: &LoadConfig, channels: Vec<Channel>, set: Arc<RequestSet>) -> LoadReport {
    let shared = Arc::new(Shared {
        next: AtomicU64::new(0),
        retries: AtomicU64::new(0),
        acked_spans: AtomicU64::new(0),
        failed_spans: AtomicU64::new(0),
        acked_requests: AtomicU64::new(0),
        failed_requests: AtomicU64::new(0),
        first_error: Mutex::new(None),
    });
    let uri: http::Uri =
        match format!("{}{}", endpoint_uri(&cfg.endpoint), TRACE_EXPORT_PATH).parse() {
            Ok(u) => u,
            Err(e) => {
                return LoadReport {
                    requested_spans: set.total_spans(),
                    unsent_spans: set.total_spans(),
                    first_error: Some(format!("invalid endpoint {:?}: {e}", cfg.endpoint)),
                    ..LoadReport::default()
                }
            }
        };
    // Request i is due at start + i * interval, which keeps the mean rate exact without a
    // token bucket shared between workers.
    let interval = cfg.rate.filter(|r| r.is_finite() && *r > 0.0).map(|rate| {
        let per_request = set.total_spans() as f64 / set.requests().max(1) as f64;
        Duration::from_secs_f64(per_request / rate)
    });
    if channels.is_empty() {
        return LoadReport {
            requested_spans: set.total_spans(),
            unsent_spans: set.total_spans(),
            first_error: Some("no connection to send on".to_owned()),
            ..LoadReport::default()
        };
    }
    let start = Instant::now();
    let deadline = start + cfg.max_duration;
    let mut workers = JoinSet::new();
    for w in 0..cfg.concurrency.max(1) {
        let channel = channels[w % channels.len()].clone();
        let shared = shared.clone();
        let set = set.clone();
        let uri = uri.clone();
        let timeout = cfg.request_timeout;
        workers.spawn(async move {
            loop {
                let i = shared.next.fetch_add(1, Ordering::Relaxed);
                if i >= set.requests() || Instant::now() >= deadline {
                    break;
                }
                if let Some(interval) = interval {
                    let due = start + interval.mul_f64(i as f64);
                    if due >= deadline {
                        break;
                    }
                    tokio::time::sleep_until(due.into()).await;
                }
                let (frame, spans) = set.get(i);
                // Like the OpenTelemetry SDKs, resend on Unavailable (a collector pushing back)
                // after a growing pause, until the run's deadline.
                let mut pause = Duration::from_millis(5);
                let result = loop {
                    let r = match tokio::time::timeout(
                        timeout,
                        send_one(channel.clone(), &uri, frame.clone(), set.gzip),
                    )
                    .await
                    {
                        Ok(r) => r,
                        Err(_) => Err(format!("no answer within {timeout:?}")),
                    };
                    match r {
                        Err(e) if is_unavailable(&e) && Instant::now() + pause < deadline => {
                            shared.retries.fetch_add(1, Ordering::Relaxed);
                            tokio::time::sleep(pause).await;
                            pause = (pause * 2).min(Duration::from_millis(500));
                        }
                        r => break r,
                    }
                };
                match result {
                    Ok(()) => {
                        shared.acked_spans.fetch_add(spans, Ordering::Relaxed);
                        shared.acked_requests.fetch_add(1, Ordering::Relaxed);
                    }
                    Err(e) => {
                        shared.failed_spans.fetch_add(spans, Ordering::Relaxed);
                        shared.failed_requests.fetch_add(1, Ordering::Relaxed);
                        if let Ok(mut first) = shared.first_error.lock() {
                            first.get_or_insert(e);
                        }
                    }
                }
            }
        });
    }
    while workers.join_next().await.is_some() {}
    let elapsed = start.elapsed();
    let acked_spans = shared.acked_spans.load(Ordering::Relaxed);
    let failed_spans = shared.failed_spans.load(Ordering::Relaxed);
    let first_error = shared.first_error.lock().ok().and_then(|mut e| e.take());
    LoadReport {
        requested_spans: set.total_spans(),
        acked_spans,
        failed_spans,
        acked_requests: shared.acked_requests.load(Ordering::Relaxed),
        failed_requests: shared.failed_requests.load(Ordering::Relaxed),
        retries: shared.retries.load(Ordering::Relaxed),
        unsent_spans: set.total_spans().saturating_sub(acked_spans + failed_spans),
        elapsed,
        first_error,
    }
}
