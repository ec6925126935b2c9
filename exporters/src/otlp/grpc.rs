//! The gRPC wire: a tonic client whose codec writes the payload's protobuf parts as the request
//! message unchanged, and the classifier that decides which failures are worth retrying.

use std::error::Error as _;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use async_trait::async_trait;
use bytes::{BufMut, Bytes};
use http::uri::PathAndQuery;
use pipeline_core::{ComponentError, Payload, Signal};
use prost::Message;
use tonic::client::Grpc;
use tonic::codec::{Codec, CompressionEncoding, DecodeBuf, Decoder, EncodeBuf, Encoder};
use tonic::metadata::MetadataMap;
use tonic::transport::{Channel, Endpoint};
use tonic::{Code, Status};

use super::{GrpcTarget, KeepaliveConfig, OtlpGrpcConfig};
use crate::common::config::{Compression, TlsClientConfig};
use crate::common::queue::{Accepted, Transport};
use crate::common::retry::SendError;
use crate::common::rpc::{retry_info_delay, ExportResponse};
use crate::common::tls::{client_config, Connector, TlsSetup};

/// An export request as already-encoded protobuf parts; their concatenation is the message.
/// Cloning (once per attempt) shares the parts.
#[derive(Clone, Debug)]
pub struct RawRequest {
    parts: Arc<[Bytes]>,
    len: usize,
}

impl RawRequest {
    pub fn new(parts: Vec<Bytes>) -> RawRequest {
        let len = parts.iter().map(Bytes::len).sum();
        RawRequest {
            parts: parts.into(),
            len,
        }
    }
}

/// Encodes [`RawRequest`] by copying its parts into tonic's buffer, and decodes only the
/// `partial_success` of the response.
#[derive(Clone, Copy, Default)]
struct RawCodec;

struct RawEncoder;
struct ResponseDecoder;

impl Codec for RawCodec {
    type Encode = RawRequest;
    type Decode = ExportResponse;
    type Encoder = RawEncoder;
    type Decoder = ResponseDecoder;

    fn encoder(&mut self) -> RawEncoder {
        RawEncoder
    }
    fn decoder(&mut self) -> ResponseDecoder {
        ResponseDecoder
    }
}

impl Encoder for RawEncoder {
    type Item = RawRequest;
    type Error = Status;

    fn encode(&mut self, item: RawRequest, dst: &mut EncodeBuf<'_>) -> Result<(), Status> {
        dst.reserve(item.len);
        for p in item.parts.iter() {
            dst.put_slice(p);
        }
        Ok(())
    }
}

impl Decoder for ResponseDecoder {
    type Item = ExportResponse;
    type Error = Status;

    fn decode(&mut self, src: &mut DecodeBuf<'_>) -> Result<Option<ExportResponse>, Status> {
        ExportResponse::decode(src)
            .map(Some)
            .map_err(|e| Status::internal(format!("cannot decode the export response: {e}")))
    }
}

fn export_path(signal: Signal) -> PathAndQuery {
    PathAndQuery::from_static(match signal {
        Signal::Traces => "/opentelemetry.proto.collector.trace.v1.TraceService/Export",
        Signal::Metrics => "/opentelemetry.proto.collector.metrics.v1.MetricsService/Export",
        Signal::Logs => "/opentelemetry.proto.collector.logs.v1.LogsService/Export",
    })
}

/// Decides what a failed call means, following the reference (and the OTLP spec):
/// Cancelled, DeadlineExceeded, Aborted, OutOfRange, Unavailable and DataLoss are retried;
/// ResourceExhausted only when the server attached `google.rpc.RetryInfo`, whose delay is then
/// honoured. tonic reports a failed connection as Unavailable; other client-side transport
/// failures (connection reset, closed mid-request) surface as Unknown *with a source error*,
/// which a server-sent Unknown never has, and are retried too.
pub fn classify_status(status: &Status) -> SendError {
    let msg = format!(
        "rpc error: code = {:?} desc = {}",
        status.code(),
        status.message()
    );
    let retry_info = retry_info_delay(status.details());
    match status.code() {
        Code::Cancelled
        | Code::DeadlineExceeded
        | Code::Aborted
        | Code::OutOfRange
        | Code::Unavailable
        | Code::DataLoss => SendError::throttled(msg, retry_info),
        Code::ResourceExhausted => match retry_info {
            Some(after) => SendError::throttled(msg, Some(after)),
            None => SendError::permanent(msg),
        },
        Code::Unknown if status.source().is_some() => SendError::retryable(msg),
        _ => SendError::permanent(msg),
    }
}

/// The gRPC side of the `otlp` exporter.
pub struct GrpcTransport {
    target: GrpcTarget,
    tls: TlsClientConfig,
    authority: Option<String>,
    keepalive: Option<KeepaliveConfig>,
    timeout: Duration,
    compression: Compression,
    metadata: MetadataMap,
    path: PathAndQuery,
    /// Created at start; cloned per request, all clones share one HTTP/2 connection.
    client: OnceLock<Grpc<Channel>>,
}

impl GrpcTransport {
    pub(super) fn new(
        cfg: &OtlpGrpcConfig,
        target: GrpcTarget,
        headers: http::HeaderMap,
        signal: Signal,
    ) -> GrpcTransport {
        GrpcTransport {
            target,
            tls: cfg.tls.clone(),
            authority: cfg.authority.clone().filter(|a| !a.is_empty()),
            keepalive: cfg.keepalive.clone(),
            timeout: cfg.timeout,
            compression: cfg.compression,
            metadata: MetadataMap::from_headers(headers),
            path: export_path(signal),
            client: OnceLock::new(),
        }
    }

    fn channel(&self) -> Result<Channel, String> {
        let tls = if self.target.tls {
            let config = client_config(&self.tls, &[b"h2"]).map_err(|e| e.to_string())?;
            Some(TlsSetup {
                config,
                server_name_override: self.tls.server_name_override().map(str::to_string),
            })
        } else {
            None
        };
        // tonic only ever sees `http://`: TLS is the connector's job, so tonic must not try
        // its own. The origin keeps `:scheme` and `:authority` right for the server.
        let scheme = if self.target.tls { "https" } else { "http" };
        let origin = format!(
            "{scheme}://{}",
            self.authority.as_deref().unwrap_or(&self.target.authority)
        );
        let origin = origin
            .parse()
            .map_err(|e| format!("invalid origin {origin:?}: {e}"))?;
        let mut endpoint = Endpoint::from_shared(format!("http://{}", self.target.authority))
            .map_err(|e| format!("invalid endpoint {:?}: {e}", self.target.authority))?
            .origin(origin)
            .user_agent(concat!("Sonde/", env!("CARGO_PKG_VERSION")))
            .map_err(|e| e.to_string())?;
        if let Some(k) = self.keepalive.as_ref().filter(|k| !k.time.is_zero()) {
            endpoint = endpoint
                .http2_keep_alive_interval(k.time)
                .keep_alive_timeout(k.timeout)
                .keep_alive_while_idle(k.permit_without_stream);
        }
        Ok(endpoint.connect_with_connector_lazy(Connector::new(tls, self.timeout)))
    }
}

#[async_trait]
impl Transport for GrpcTransport {
    type Request = RawRequest;

    async fn start(&self) -> Result<(), ComponentError> {
        if self.client.get().is_some() {
            return Ok(());
        }
        let channel = self.channel().map_err(ComponentError::new)?;
        let mut grpc = Grpc::new(channel)
            .accept_compressed(CompressionEncoding::Gzip)
            .accept_compressed(CompressionEncoding::Zstd);
        grpc = match self.compression {
            Compression::Gzip => grpc.send_compressed(CompressionEncoding::Gzip),
            Compression::Zstd => grpc.send_compressed(CompressionEncoding::Zstd),
            Compression::None => grpc,
        };
        let _ = self.client.set(grpc);
        Ok(())
    }

    fn prepare(&self, payload: Payload) -> Result<RawRequest, SendError> {
        Ok(RawRequest::new(payload.encoded_parts()))
    }

    async fn send(&self, request: &RawRequest) -> Result<Accepted, SendError> {
        let Some(client) = self.client.get() else {
            return Err(SendError::retryable("exporter is not started"));
        };
        let mut grpc = client.clone();
        grpc.ready()
            .await
            .map_err(|e| SendError::retryable(format!("connection not ready: {e}")))?;
        let mut req = tonic::Request::new(request.clone());
        *req.metadata_mut() = self.metadata.clone();
        req.set_timeout(self.timeout);
        match grpc.unary(req, self.path.clone(), RawCodec).await {
            Ok(resp) => Ok(resp.into_inner().accepted()),
            Err(status) => Err(classify_status(&status)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::common::retry::Disposition;
    use crate::common::rpc::{ProtoAny, ProtoDuration, RetryInfo, RpcStatus, RETRY_INFO_TYPE};

    fn with_retry_info(code: Code, delay: Option<Duration>) -> Status {
        let info = RetryInfo {
            retry_delay: delay.map(|d| ProtoDuration {
                seconds: d.as_secs() as i64,
                nanos: d.subsec_nanos() as i32,
            }),
        };
        let details = RpcStatus {
            code: code as i32,
            message: "x".into(),
            details: vec![ProtoAny {
                type_url: RETRY_INFO_TYPE.into(),
                value: info.encode_to_vec(),
            }],
        };
        Status::with_details(code, "x", Bytes::from(details.encode_to_vec()))
    }

    #[test]
    fn retryable_codes() {
        for code in [
            Code::Cancelled,
            Code::DeadlineExceeded,
            Code::Aborted,
            Code::OutOfRange,
            Code::Unavailable,
            Code::DataLoss,
        ] {
            let e = classify_status(&Status::new(code, "x"));
            assert_eq!(
                e.disposition,
                Disposition::Retry { after: None },
                "{code:?}"
            );
        }
    }

    #[test]
    fn permanent_codes() {
        for code in [
            Code::InvalidArgument,
            Code::NotFound,
            Code::AlreadyExists,
            Code::PermissionDenied,
            Code::FailedPrecondition,
            Code::Unimplemented,
            Code::Internal,
            Code::Unauthenticated,
            Code::Unknown,
            Code::ResourceExhausted,
        ] {
            let e = classify_status(&Status::new(code, "x"));
            assert_eq!(e.disposition, Disposition::Permanent, "{code:?}");
        }
    }

    #[test]
    fn resource_exhausted_with_retry_info_is_retried_after_its_delay() {
        let e = classify_status(&with_retry_info(
            Code::ResourceExhausted,
            Some(Duration::from_secs(3)),
        ));
        assert_eq!(
            e.disposition,
            Disposition::Retry {
                after: Some(Duration::from_secs(3))
            }
        );
        let e = classify_status(&with_retry_info(
            Code::Unavailable,
            Some(Duration::from_millis(250)),
        ));
        assert_eq!(
            e.disposition,
            Disposition::Retry {
                after: Some(Duration::from_millis(250))
            }
        );
    }

    #[test]
    fn local_transport_failures_are_retried() {
        let io = std::io::Error::new(std::io::ErrorKind::ConnectionReset, "connection reset");
        let s = Status::from_error(Box::new(io));
        assert_eq!(s.code(), Code::Unknown);
        assert!(classify_status(&s).is_retryable());
    }
}
