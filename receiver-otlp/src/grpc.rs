//! OTLP/gRPC: `opentelemetry.proto.collector.{trace,metrics,logs}.v1.*Service/Export`.
//!
//! The request message is never decoded: a pass-through codec hands tonic's (decompressed)
//! message buffer over as `Bytes` without copying, and `Payload::from_encoded` checks and counts
//! it by walking the protobuf framing. The response, an `Export*ServiceResponse` without
//! `partial_success`, encodes to zero bytes.

use std::convert::Infallible;
use std::marker::PhantomData;
use std::net::SocketAddr;
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::{Buf, Bytes};
use pipeline_core::{ComponentError, ComponentId, ConsumeError, Payload, Signal};
use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tonic::body::Body;
use tonic::codec::{Codec, CompressionEncoding, DecodeBuf, Decoder, EncodeBuf, Encoder};
use tonic::codegen::BoxFuture;
use tonic::server::NamedService;
use tonic::transport::server::TcpIncoming;
use tonic::transport::ServerTlsConfig;
use tonic::Status;

use crate::config::{Endpoint, GrpcConfig};
use crate::receiver::{bind, ExportError, Gate, Route, Routes};
use crate::tls;

/// HTTP/2 flow-control windows. h2's 64 KiB default stalls every export of a few hundred
/// spans on a window update; these let typical requests arrive in one go.
const STREAM_WINDOW: u32 = 1 << 20;
const CONNECTION_WINDOW: u32 = 4 << 20;

/// The gRPC side of one receiver, built but not yet listening.
pub(crate) struct GrpcServer {
    id: ComponentId,
    cfg: GrpcConfig,
    endpoint: Endpoint,
    routes: Routes,
    gate: Gate,
}

/// A bound listener plus what serving needs that could only be loaded at start.
pub(crate) struct Bound {
    listener: TcpListener,
    addr: SocketAddr,
    tls: Option<ServerTlsConfig>,
}

impl Bound {
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }
}

impl GrpcServer {
    pub fn new(
        id: &ComponentId,
        cfg: &GrpcConfig,
        routes: Routes,
        gate: Gate,
    ) -> Result<GrpcServer, ComponentError> {
        let endpoint = Endpoint::parse(&cfg.endpoint).map_err(ComponentError::new)?;
        Ok(GrpcServer {
            id: id.clone(),
            cfg: cfg.clone(),
            endpoint,
            routes,
            gate,
        })
    }

    pub async fn bind(&self) -> Result<Bound, ComponentError> {
        let what = format!("receiver {} (gRPC)", self.id);
        let tls = match &self.cfg.tls {
            Some(t) => Some(
                tls::tonic_config(t).map_err(|e| ComponentError::new(format!("{what}: {e}")))?,
            ),
            None => None,
        };
        let listener = bind(&self.endpoint, &self.cfg.transport, &what).await?;
        let addr = listener
            .local_addr()
            .map_err(|e| ComponentError::new(format!("{what}: {e}")))?;
        Ok(Bound {
            listener,
            addr,
            tls,
        })
    }

    pub fn serve(
        &self,
        bound: Bound,
        stop: CancellationToken,
    ) -> Result<JoinHandle<()>, ComponentError> {
        self.warn_ignored_options();
        let mut builder = tonic::transport::Server::builder()
            .initial_stream_window_size(STREAM_WINDOW)
            .initial_connection_window_size(CONNECTION_WINDOW)
            .max_concurrent_streams(
                (self.cfg.max_concurrent_streams > 0).then_some(self.cfg.max_concurrent_streams),
            );
        if let Some(sp) = self
            .cfg
            .keepalive
            .as_ref()
            .and_then(|k| k.server_parameters.as_ref())
        {
            builder = builder
                .http2_keepalive_interval(sp.time.map(|d| d.0).filter(|d| !d.is_zero()))
                .http2_keepalive_timeout(sp.timeout.map(|d| d.0).filter(|d| !d.is_zero()));
            if let Some(age) = sp.max_connection_age.filter(|d| !d.0.is_zero()) {
                builder = builder.max_connection_age(age.0);
            }
            if let Some(grace) = sp.max_connection_age_grace.filter(|d| !d.0.is_zero()) {
                builder = builder.max_connection_age_grace(grace.0);
            }
        }
        if let Some(t) = bound.tls {
            builder = builder.tls_config(t).map_err(|e| {
                ComponentError::new(format!("receiver {} (gRPC): tls: {e}", self.id))
            })?;
        }
        let max_msg = self.cfg.max_recv_msg_size();
        let router = builder
            .add_optional_service(self.service::<TraceService>(max_msg))
            .add_optional_service(self.service::<MetricsService>(max_msg))
            .add_optional_service(self.service::<LogsService>(max_msg));
        let incoming = TcpIncoming::from(bound.listener).with_nodelay(Some(true));
        let id = self.id.clone();
        tracing::info!(receiver = %id, endpoint = %bound.addr, "Starting GRPC server");
        Ok(tokio::spawn(async move {
            if let Err(e) = router
                .serve_with_incoming_shutdown(incoming, stop.cancelled_owned())
                .await
            {
                tracing::error!(receiver = %id, error = %e, "gRPC server stopped");
            }
        }))
    }

    fn service<S: OtlpService>(&self, max_msg: usize) -> Option<ExportService<S>> {
        self.routes.get(S::SIGNAL).map(|route| ExportService {
            shared: Arc::new(Shared {
                route: route.clone(),
                gate: self.gate.clone(),
                max_msg,
            }),
            _service: PhantomData,
        })
    }

    fn warn_ignored_options(&self) {
        let c = &self.cfg;
        let mut ignored = Vec::new();
        if c.read_buffer_size.is_some() {
            ignored.push("read_buffer_size");
        }
        if c.write_buffer_size.is_some() {
            ignored.push("write_buffer_size");
        }
        if c.include_metadata {
            ignored.push("include_metadata");
        }
        if let Some(k) = &c.keepalive {
            if k.enforcement_policy.is_some() {
                ignored.push("keepalive::enforcement_policy");
            }
            if k.server_parameters
                .as_ref()
                .is_some_and(|p| p.max_connection_idle.is_some())
            {
                ignored.push("keepalive::server_parameters::max_connection_idle");
            }
        }
        if !ignored.is_empty() {
            tracing::warn!(
                receiver = %self.id,
                options = %ignored.join(", "),
                "gRPC options accepted for compatibility have no effect in Sonde"
            );
        }
    }
}

/// Names one OTLP gRPC service.
pub(crate) trait OtlpService: Send + Sync + 'static {
    const NAME: &'static str;
    const EXPORT_PATH: &'static str;
    const SIGNAL: Signal;
}

pub(crate) enum TraceService {}
pub(crate) enum MetricsService {}
pub(crate) enum LogsService {}

impl OtlpService for TraceService {
    const NAME: &'static str = "opentelemetry.proto.collector.trace.v1.TraceService";
    const EXPORT_PATH: &'static str = "/opentelemetry.proto.collector.trace.v1.TraceService/Export";
    const SIGNAL: Signal = Signal::Traces;
}

impl OtlpService for MetricsService {
    const NAME: &'static str = "opentelemetry.proto.collector.metrics.v1.MetricsService";
    const EXPORT_PATH: &'static str =
        "/opentelemetry.proto.collector.metrics.v1.MetricsService/Export";
    const SIGNAL: Signal = Signal::Metrics;
}

impl OtlpService for LogsService {
    const NAME: &'static str = "opentelemetry.proto.collector.logs.v1.LogsService";
    const EXPORT_PATH: &'static str = "/opentelemetry.proto.collector.logs.v1.LogsService/Export";
    const SIGNAL: Signal = Signal::Logs;
}

struct Shared {
    route: Arc<Route>,
    gate: Gate,
    max_msg: usize,
}

/// One OTLP service: routes `Export` calls to its signal's pipeline.
struct ExportService<S> {
    shared: Arc<Shared>,
    _service: PhantomData<fn() -> S>,
}

impl<S> Clone for ExportService<S> {
    fn clone(&self) -> Self {
        ExportService {
            shared: self.shared.clone(),
            _service: PhantomData,
        }
    }
}

impl<S: OtlpService> NamedService for ExportService<S> {
    const NAME: &'static str = S::NAME;
}

impl<S: OtlpService> tower::Service<http::Request<Body>> for ExportService<S> {
    type Response = http::Response<Body>;
    type Error = Infallible;
    type Future = BoxFuture<Self::Response, Self::Error>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: http::Request<Body>) -> Self::Future {
        let shared = self.shared.clone();
        Box::pin(async move {
            if req.uri().path() != S::EXPORT_PATH {
                return Ok(
                    Status::unimplemented(format!("unknown method {}", req.uri().path()))
                        .into_http(),
                );
            }
            // Admitted before the body is read, so shutdown waits for the whole request.
            let Some(_pass) = shared.gate.enter() else {
                return Ok(Status::unavailable("the receiver is shutting down").into_http());
            };
            let mut grpc = tonic::server::Grpc::new(RawCodec)
                .accept_compressed(CompressionEncoding::Gzip)
                .accept_compressed(CompressionEncoding::Zstd)
                .max_decoding_message_size(shared.max_msg)
                .max_encoding_message_size(usize::MAX);
            let mut resp = grpc.unary(Export(shared.clone()), req).await;
            // tonic reports an oversized message as OutOfRange, which OTLP senders retry
            // forever; the reference answers ResourceExhausted, which they drop. The handler
            // itself never produces OutOfRange.
            if resp.headers().get("grpc-status").is_some_and(|s| s == "11") {
                resp.headers_mut()
                    .insert("grpc-status", http::HeaderValue::from_static("8"));
            }
            Ok(resp)
        })
    }
}

/// The unary handler behind an `ExportService`.
struct Export(Arc<Shared>);

impl tower::Service<tonic::Request<Bytes>> for Export {
    type Response = tonic::Response<()>;
    type Error = Status;
    type Future = BoxFuture<Self::Response, Self::Error>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: tonic::Request<Bytes>) -> Self::Future {
        let shared = self.0.clone();
        Box::pin(async move {
            let route = &shared.route;
            let payload = Payload::from_encoded(route.signal, req.into_inner()).map_err(|e| {
                Status::invalid_argument(format!("malformed {} export request: {e}", route.signal))
            })?;
            route.deliver(payload).await.map_err(status)?;
            Ok(tonic::Response::new(()))
        })
    }
}

/// The reference's mapping (`GetStatusFromError`): retryable -> Unavailable, permanent ->
/// InvalidArgument.
fn status(e: ExportError) -> Status {
    match e {
        ExportError::Malformed(m) => Status::invalid_argument(m),
        ExportError::Refused(ConsumeError::Retryable(m)) => Status::unavailable(m),
        ExportError::Refused(ConsumeError::Permanent(m)) => Status::invalid_argument(m),
        ExportError::ShuttingDown => Status::unavailable("the receiver is shutting down"),
    }
}

/// Hands the request message over as `Bytes` and writes the (empty) response.
#[derive(Clone, Copy, Default)]
pub(crate) struct RawCodec;

impl Codec for RawCodec {
    type Encode = ();
    type Decode = Bytes;
    type Encoder = RawCodec;
    type Decoder = RawCodec;

    fn encoder(&mut self) -> RawCodec {
        *self
    }

    fn decoder(&mut self) -> RawCodec {
        *self
    }
}

impl Encoder for RawCodec {
    type Item = ();
    type Error = Status;

    fn encode(&mut self, _item: (), _dst: &mut EncodeBuf<'_>) -> Result<(), Status> {
        Ok(())
    }
}

impl Decoder for RawCodec {
    type Item = Bytes;
    type Error = Status;

    fn decode(&mut self, src: &mut DecodeBuf<'_>) -> Result<Option<Bytes>, Status> {
        // tonic's buffer is a BytesMut holding exactly this message: this splits it off.
        let len = src.remaining();
        Ok(Some(src.copy_to_bytes(len)))
    }
}
