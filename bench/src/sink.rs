//! An OTLP/gRPC trace receiver that only counts spans. Messages are never decoded: the span
//! count comes from walking the protobuf framing (`pipeline_core::wire::count_items`), so the
//! sink stays cheap next to the collector being measured. The gRPC frames are parsed here
//! rather than by tonic so the sink can report what the collector put on the wire: how many
//! bytes, and whether each message really was compressed. gzip is accepted.

use std::convert::Infallible;
use std::io::Read;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use bytes::Bytes;
use flate2::read::GzDecoder;
use http::header::{HeaderValue, CONTENT_TYPE};
use http_body_util::{BodyExt, Full, Limited};
use pipeline_core::wire::count_items;
use pipeline_core::Signal;
use tokio::io::AsyncWriteExt;
use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use tokio_stream::wrappers::TcpListenerStream;
use tonic::body::Body;
use tonic::codegen::BoxFuture;
use tonic::server::NamedService;
use tonic::Status;

use crate::spans::TRACE_EXPORT_PATH;

/// Largest request body the sink accepts, and largest message after decompression.
const MAX_MESSAGE: usize = 256 << 20;

/// Counters shared between the sink's request handlers and whoever watches them.
#[derive(Debug)]
pub struct SinkStats {
    spans: AtomicU64,
    requests: AtomicU64,
    frames: AtomicU64,
    compressed_frames: AtomicU64,
    wire_bytes: AtomicU64,
    rejected: AtomicU64,
    started: Instant,
    /// Nanoseconds after `started` of the last accepted request.
    last_ns: AtomicU64,
}

impl SinkStats {
    fn new() -> SinkStats {
        SinkStats {
            spans: AtomicU64::new(0),
            requests: AtomicU64::new(0),
            frames: AtomicU64::new(0),
            compressed_frames: AtomicU64::new(0),
            wire_bytes: AtomicU64::new(0),
            rejected: AtomicU64::new(0),
            started: Instant::now(),
            last_ns: AtomicU64::new(0),
        }
    }

    fn record(&self, c: &Counted, wire_bytes: usize) {
        self.spans.fetch_add(c.spans, Ordering::Relaxed);
        self.frames.fetch_add(c.frames, Ordering::Relaxed);
        self.compressed_frames
            .fetch_add(c.compressed_frames, Ordering::Relaxed);
        self.wire_bytes
            .fetch_add(wire_bytes as u64, Ordering::Relaxed);
        self.requests.fetch_add(1, Ordering::Relaxed);
        let ns = self.started.elapsed().as_nanos() as u64;
        self.last_ns.fetch_max(ns, Ordering::Relaxed);
    }

    pub fn spans(&self) -> u64 {
        self.spans.load(Ordering::Relaxed)
    }

    /// Requests accepted (every span in them counted).
    pub fn requests(&self) -> u64 {
        self.requests.load(Ordering::Relaxed)
    }

    /// gRPC messages in accepted requests.
    pub fn frames(&self) -> u64 {
        self.frames.load(Ordering::Relaxed)
    }

    /// Messages that arrived with the compressed flag set.
    pub fn compressed_frames(&self) -> u64 {
        self.compressed_frames.load(Ordering::Relaxed)
    }

    /// Body bytes of accepted requests, as sent (compressed or not).
    pub fn wire_bytes(&self) -> u64 {
        self.wire_bytes.load(Ordering::Relaxed)
    }

    /// Requests refused: malformed frames or protobuf, unknown method or encoding.
    pub fn rejected(&self) -> u64 {
        self.rejected.load(Ordering::Relaxed)
    }

    /// When the last request arrived (the sink's start if none did).
    pub fn last_arrival(&self) -> Instant {
        self.started + Duration::from_nanos(self.last_ns.load(Ordering::Relaxed))
    }

    /// One line with every counter, as the control port and the `sink` command print it.
    pub fn line(&self) -> String {
        format!(
            "spans={} requests={} frames={} compressed_frames={} wire_bytes={} rejected={} idle_ms={}",
            self.spans(),
            self.requests(),
            self.frames(),
            self.compressed_frames(),
            self.wire_bytes(),
            self.rejected(),
            self.last_arrival().elapsed().as_millis()
        )
    }
}

/// What one request carried.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
struct Counted {
    spans: u64,
    frames: u64,
    compressed_frames: u64,
}

fn gunzip(data: &[u8]) -> Result<Vec<u8>, Status> {
    let mut out = Vec::with_capacity(data.len() * 4);
    GzDecoder::new(data)
        .take(MAX_MESSAGE as u64 + 1)
        .read_to_end(&mut out)
        .map_err(|e| Status::invalid_argument(format!("bad gzip message: {e}")))?;
    if out.len() > MAX_MESSAGE {
        return Err(Status::resource_exhausted("decompressed message too large"));
    }
    Ok(out)
}

/// Splits a gRPC request body into its length-prefixed messages, decompresses the ones flagged
/// as compressed (`encoding` is the request's `grpc-encoding`) and counts their spans.
fn count_body(body: &[u8], encoding: Option<&[u8]>) -> Result<Counted, Status> {
    let mut counted = Counted::default();
    let mut rest = body;
    while !rest.is_empty() {
        let Some((&[flag, l0, l1, l2, l3], tail)) = rest.split_first_chunk::<5>() else {
            return Err(Status::internal("truncated gRPC message header"));
        };
        let len = u32::from_be_bytes([l0, l1, l2, l3]) as usize;
        if len > tail.len() {
            return Err(Status::internal("truncated gRPC message"));
        }
        let (message, next) = tail.split_at(len);
        let n = match (flag, encoding) {
            (0, _) => count_items(Signal::Traces, message),
            (1, Some(b"gzip")) => {
                counted.compressed_frames += 1;
                count_items(Signal::Traces, &gunzip(message)?)
            }
            (1, _) => {
                return Err(Status::unimplemented(
                    "compressed message without a supported grpc-encoding (gzip)",
                ))
            }
            _ => return Err(Status::internal(format!("bad gRPC message flag {flag}"))),
        }
        .map_err(|e| Status::invalid_argument(format!("malformed trace request: {e}")))?;
        counted.spans += n as u64;
        counted.frames += 1;
        rest = next;
    }
    Ok(counted)
}

/// A unary response carrying an empty ExportTraceServiceResponse (it encodes to zero bytes)
/// and status OK in the trailers.
fn ok_response() -> http::Response<Body> {
    let mut trailers = http::HeaderMap::new();
    trailers.insert("grpc-status", HeaderValue::from_static("0"));
    let body = Full::new(Bytes::from_static(&[0, 0, 0, 0, 0]))
        .with_trailers(std::future::ready(Some(Ok(trailers))));
    let mut resp = http::Response::new(Body::new(body));
    resp.headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static("application/grpc"));
    resp
}

#[derive(Clone)]
struct SinkService {
    stats: Arc<SinkStats>,
}

impl NamedService for SinkService {
    const NAME: &'static str = "opentelemetry.proto.collector.trace.v1.TraceService";
}

impl SinkService {
    async fn handle(stats: &SinkStats, req: http::Request<Body>) -> Result<(), Status> {
        if req.uri().path() != TRACE_EXPORT_PATH {
            return Err(Status::unimplemented("only trace export is served"));
        }
        let (parts, body) = req.into_parts();
        let encoding = parts
            .headers
            .get("grpc-encoding")
            .map(HeaderValue::as_bytes);
        let body = Limited::new(body, MAX_MESSAGE + 5)
            .collect()
            .await
            .map_err(|e| Status::resource_exhausted(format!("request body: {e}")))?
            .to_bytes();
        let counted = count_body(&body, encoding)?;
        stats.record(&counted, body.len());
        Ok(())
    }
}

impl tower::Service<http::Request<Body>> for SinkService {
    type Response = http::Response<Body>;
    type Error = Infallible;
    type Future = BoxFuture<Self::Response, Self::Error>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: http::Request<Body>) -> Self::Future {
        let stats = self.stats.clone();
        Box::pin(async move {
            match SinkService::handle(&stats, req).await {
                Ok(()) => Ok(ok_response()),
                Err(status) => {
                    stats.rejected.fetch_add(1, Ordering::Relaxed);
                    Ok(status.into_http())
                }
            }
        })
    }
}

/// A running sink. Dropping it stops the server.
pub struct Sink {
    addr: SocketAddr,
    stats: Arc<SinkStats>,
    stop: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<Result<(), tonic::transport::Error>>>,
}

/// What waiting for the sink to reach a span count ended with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WaitOutcome {
    Reached,
    /// No span arrived for the stall timeout.
    Stalled,
    /// The overall deadline passed while spans were still arriving.
    Deadline,
}

impl Sink {
    /// Binds `addr` (port 0 picks a free port) and starts serving on the current runtime.
    pub async fn start(addr: SocketAddr) -> std::io::Result<Sink> {
        let listener = TcpListener::bind(addr).await?;
        let addr = listener.local_addr()?;
        let stats = Arc::new(SinkStats::new());
        let (stop, stopped) = oneshot::channel::<()>();
        let service = SinkService {
            stats: stats.clone(),
        };
        let task = tokio::spawn(
            tonic::transport::Server::builder()
                .tcp_nodelay(true)
                .add_service(service)
                .serve_with_incoming_shutdown(TcpListenerStream::new(listener), async {
                    let _ = stopped.await;
                }),
        );
        Ok(Sink {
            addr,
            stats,
            stop: Some(stop),
            task: Some(task),
        })
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    pub fn stats(&self) -> &Arc<SinkStats> {
        &self.stats
    }

    /// Waits until at least `target` spans arrived, no span arrived for `stall`, or `deadline`.
    pub async fn wait_for(&self, target: u64, stall: Duration, deadline: Instant) -> WaitOutcome {
        let mut last = self.stats.spans();
        let mut last_change = Instant::now();
        loop {
            let now_count = self.stats.spans();
            if now_count >= target {
                return WaitOutcome::Reached;
            }
            let now = Instant::now();
            if now_count != last {
                last = now_count;
                last_change = now;
            } else if now.duration_since(last_change) >= stall {
                return WaitOutcome::Stalled;
            }
            if now >= deadline {
                return WaitOutcome::Deadline;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }

    /// Stops accepting, lets open requests finish (bounded), and reports a server error if any.
    pub async fn shutdown(mut self) -> Result<(), tonic::transport::Error> {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        let Some(mut task) = self.task.take() else {
            return Ok(());
        };
        match tokio::time::timeout(Duration::from_secs(5), &mut task).await {
            Ok(Ok(r)) => r,
            // A panicked or cancelled server task has nothing more to report.
            Ok(Err(_)) => Ok(()),
            Err(_) => {
                task.abort();
                Ok(())
            }
        }
    }
}

impl Drop for Sink {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(task) = self.task.take() {
            task.abort();
        }
    }
}

/// Serves the counters ([`SinkStats::line`]) as one text line per connection, so a script or
/// another process can poll the sink.
pub async fn serve_control(listener: TcpListener, stats: Arc<SinkStats>) -> std::io::Result<()> {
    loop {
        let (mut conn, _) = listener.accept().await?;
        let line = format!("{}\n", stats.line());
        tokio::spawn(async move {
            // A client that hangs up early only loses its own answer.
            let _ = conn.write_all(line.as_bytes()).await;
            let _ = conn.shutdown().await;
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::loadgen::{self, LoadConfig};
    use crate::spans::{grpc_frame, request, RequestSet};
    use prost::Message;

    #[test]
    fn counts_plain_and_gzip_frames() {
        let msg = request(1, 37, 0).encode_to_vec();
        let plain = grpc_frame(&msg, false);
        let gz = grpc_frame(&msg, true);
        let both = [plain.as_ref(), gz.as_ref()].concat();
        let c = count_body(&both, Some(b"gzip")).unwrap();
        assert_eq!(
            c,
            Counted {
                spans: 74,
                frames: 2,
                compressed_frames: 1
            }
        );
        assert_eq!(count_body(&plain, None).unwrap().spans, 37);
        assert_eq!(count_body(&[], None).unwrap(), Counted::default());
    }

    #[test]
    fn refuses_what_it_cannot_count() {
        let msg = request(1, 3, 0).encode_to_vec();
        let gz = grpc_frame(&msg, true);
        assert_eq!(
            count_body(&gz, None).unwrap_err().code(),
            tonic::Code::Unimplemented
        );
        assert_eq!(
            count_body(&gz, Some(b"zstd")).unwrap_err().code(),
            tonic::Code::Unimplemented
        );
        let plain = grpc_frame(&msg, false);
        assert!(count_body(&plain[..plain.len() - 1], None).is_err());
        assert!(count_body(&plain[..3], None).is_err());
        let mut bad_flag = plain.to_vec();
        bad_flag[0] = 7;
        assert!(count_body(&bad_flag, None).is_err());
        let garbage = grpc_frame(&[0x0a, 0xff, 0xff, 0xff, 0xff, 0x0f], false);
        assert_eq!(
            count_body(&garbage, None).unwrap_err().code(),
            tonic::Code::InvalidArgument
        );
        let not_gzip = [&[1u8, 0, 0, 0, 3][..], b"abc"].concat();
        assert!(count_body(&not_gzip, Some(b"gzip")).is_err());
    }

    /// The load generator against the sink over real loopback gRPC, with and without gzip.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn loadgen_to_sink_delivers_every_span() {
        let sink = Sink::start("127.0.0.1:0".parse().unwrap()).await.unwrap();
        let cfg = LoadConfig {
            endpoint: sink.local_addr().to_string(),
            concurrency: 4,
            connections: 2,
            rate: None,
            request_timeout: Duration::from_secs(10),
            max_duration: Duration::from_secs(60),
        };
        let channels = loadgen::connect(&cfg).await.unwrap();
        let mut expected = 0;
        for gzip in [false, true] {
            let set = Arc::new(RequestSet::build(2_550, 100, 8, gzip));
            let report = loadgen::run(&cfg, channels.clone(), set).await;
            assert_eq!(report.acked_spans, 2_550, "{report:?}");
            assert_eq!(report.failed_spans + report.unsent_spans, 0);
            expected += 2_550;
        }
        let outcome = sink
            .wait_for(
                expected,
                Duration::from_secs(5),
                Instant::now() + Duration::from_secs(10),
            )
            .await;
        assert_eq!(outcome, WaitOutcome::Reached);
        let stats = sink.stats();
        assert_eq!(stats.spans(), 5_100);
        assert_eq!(stats.requests(), 52);
        assert_eq!(stats.compressed_frames(), 26);
        assert_eq!(stats.rejected(), 0);
        assert!(stats
            .line()
            .starts_with("spans=5100 requests=52 frames=52 compressed_frames=26"));
        sink.shutdown().await.unwrap();
    }

    #[tokio::test]
    async fn an_unknown_method_fails_at_the_client() {
        let sink = Sink::start("127.0.0.1:0".parse().unwrap()).await.unwrap();
        let cfg = LoadConfig {
            endpoint: format!("http://{}/wrong", sink.local_addr()),
            concurrency: 1,
            connections: 1,
            rate: None,
            request_timeout: Duration::from_secs(5),
            max_duration: Duration::from_secs(10),
        };
        let channels = loadgen::connect(&cfg).await.unwrap();
        let set = Arc::new(RequestSet::build(100, 100, 1, false));
        let report = loadgen::run(&cfg, channels, set).await;
        assert_eq!(report.acked_spans, 0);
        assert_eq!(report.failed_spans, 100);
        assert!(report.first_error.unwrap().contains("grpc-status 12"));
        assert_eq!(sink.stats().spans(), 0);
    }
}
