//! OTLP/HTTP: `POST` of an `Export*ServiceRequest` in protobuf (`application/x-protobuf`) or
//! JSON (`application/json`) to one path per signal, optionally gzip/zstd/zlib compressed.
//!
//! Answers follow the reference: 200 with an empty `Export*ServiceResponse` in the request's
//! encoding; a `google.rpc.Status` in that encoding for 400 (malformed or permanently refused)
//! and 503 (retryable, or shutting down); plain text for 404, 405 and 415. Bodies larger than
//! `max_request_body_size` (as sent or after decompression) get 413.

use std::convert::Infallible;
use std::io::Read;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::{Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use pipeline_core::{ComponentError, ComponentId, ConsumeError, Payload};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpListener;
use tokio::task::{JoinHandle, JoinSet};
use tokio_rustls::TlsAcceptor;
use tokio_util::sync::CancellationToken;

use crate::config::{CorsConfig, Endpoint, HttpConfig};
use crate::json;
use crate::receiver::{bind, ExportError, Gate, Route, Routes};
use crate::tls;

/// The reference's `confighttp` default.
const DEFAULT_READ_HEADER_TIMEOUT: Duration = Duration::from_secs(60);
const TLS_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// Bodies above this are decompressed / transcoded on the blocking pool so a big request does
/// not stall the other connections served by the same worker thread.
const OFFLOAD_ABOVE: usize = 1 << 20;

const PROTOBUF: &str = "application/x-protobuf";
const JSON: &str = "application/json";

/// `google.rpc.Code` values used in error bodies.
const CODE_INVALID_ARGUMENT: i32 = 3;
const CODE_INTERNAL: i32 = 13;
const CODE_UNAVAILABLE: i32 = 14;

type Body = Full<Bytes>;

/// The HTTP side of one receiver, built but not yet listening.
pub(crate) struct HttpServer {
    id: ComponentId,
    cfg: HttpConfig,
    endpoint: Endpoint,
    shared: Arc<Shared>,
}

pub(crate) struct Bound {
    listener: TcpListener,
    addr: SocketAddr,
    tls: Option<TlsAcceptor>,
}

impl Bound {
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }
}

struct Shared {
    paths: [(String, Option<Arc<Route>>); 3],
    gate: Gate,
    max_body: usize,
    /// Allowed `Content-Encoding`s by config name; `None` = every supported one.
    encodings: Option<Vec<String>>,
    cors: Option<Cors>,
    response_headers: Vec<(HeaderName, HeaderValue)>,
    read_timeout: Option<Duration>,
}

impl HttpServer {
    pub fn new(
        id: &ComponentId,
        cfg: &HttpConfig,
        routes: Routes,
        gate: Gate,
    ) -> Result<HttpServer, ComponentError> {
        let endpoint = Endpoint::parse(&cfg.endpoint).map_err(ComponentError::new)?;
        let [t, m, l] = cfg.paths();
        let mut response_headers = Vec::new();
        for (k, v) in &cfg.response_headers {
            let name = HeaderName::from_bytes(k.as_bytes())
                .map_err(|_| ComponentError::new(format!("invalid response header name {k:?}")))?;
            let value = HeaderValue::from_str(v).map_err(|_| {
                ComponentError::new(format!("invalid value for response header {k:?}"))
            })?;
            response_headers.push((name, value));
        }
        let shared = Shared {
            paths: [
                (t, routes.get(pipeline_core::Signal::Traces).cloned()),
                (m, routes.get(pipeline_core::Signal::Metrics).cloned()),
                (l, routes.get(pipeline_core::Signal::Logs).cloned()),
            ],
            gate,
            max_body: cfg.max_request_body_size(),
            encodings: cfg.compression_algorithms.clone(),
            cors: cfg.cors.as_ref().and_then(Cors::new),
            response_headers,
            read_timeout: cfg.read_timeout.map(|d| d.0).filter(|d| !d.is_zero()),
        };
        Ok(HttpServer {
            id: id.clone(),
            cfg: cfg.clone(),
            endpoint,
            shared: Arc::new(shared),
        })
    }

    pub async fn bind(&self) -> Result<Bound, ComponentError> {
        let what = format!("receiver {} (HTTP)", self.id);
        let tls = match &self.cfg.tls {
            Some(t) => Some(TlsAcceptor::from(
                tls::rustls_config(t).map_err(|e| ComponentError::new(format!("{what}: {e}")))?,
            )),
            None => None,
        };
        let listener = bind(&self.endpoint, "tcp", &what).await?;
        let addr = listener
            .local_addr()
            .map_err(|e| ComponentError::new(format!("{what}: {e}")))?;
        Ok(Bound {
            listener,
            addr,
            tls,
        })
    }

    pub fn serve(self: Arc<Self>, bound: Bound, stop: CancellationToken) -> JoinHandle<()> {
        self.warn_ignored_options();
        let mut builder = auto::Builder::new(TokioExecutor::new());
        let header_timeout = self
            .cfg
            .read_header_timeout
            .map(|d| d.0)
            .unwrap_or(DEFAULT_READ_HEADER_TIMEOUT);
        builder
            .http1()
            .timer(TokioTimer::new())
            .header_read_timeout((!header_timeout.is_zero()).then_some(header_timeout));
        builder.http2().timer(TokioTimer::new());
        tracing::info!(receiver = %self.id, endpoint = %bound.addr, "Starting HTTP server");
        tokio::spawn(accept_loop(
            self.id.clone(),
            bound,
            builder,
            self.shared.clone(),
            stop,
        ))
    }

    fn warn_ignored_options(&self) {
        let mut ignored = Vec::new();
        if self.cfg.include_metadata {
            ignored.push("include_metadata");
        }
        if self.cfg.write_timeout.is_some() {
            ignored.push("write_timeout");
        }
        if self.cfg.idle_timeout.is_some() {
            ignored.push("idle_timeout");
        }
        if !ignored.is_empty() {
            tracing::warn!(
                receiver = %self.id,
                options = %ignored.join(", "),
                "HTTP options accepted for compatibility have no effect in Sonde"
            );
        }
    }
}

async fn accept_loop(
    id: ComponentId,
    bound: Bound,
    builder: auto::Builder<TokioExecutor>,
    shared: Arc<Shared>,
    stop: CancellationToken,
) {
    let Bound { listener, tls, .. } = bound;
    let mut conns = JoinSet::new();
    loop {
        tokio::select! {
            _ = stop.cancelled() => break,
            Some(_) = conns.join_next(), if !conns.is_empty() => {}
            accepted = listener.accept() => match accepted {
                Ok((tcp, _peer)) => {
                    // Small responses must not wait for Nagle.
                    let _ = tcp.set_nodelay(true);
                    let (builder, shared, stop, tls) =
                        (builder.clone(), shared.clone(), stop.clone(), tls.clone());
                    conns.spawn(async move {
                        match tls {
                            None => serve_connection(tcp, builder, shared, stop).await,
                            Some(acceptor) => {
                                match tokio::time::timeout(TLS_HANDSHAKE_TIMEOUT, acceptor.accept(tcp)).await {
                                    Ok(Ok(stream)) => serve_connection(stream, builder, shared, stop).await,
                                    Ok(Err(e)) => tracing::debug!(error = %e, "TLS handshake failed"),
                                    Err(_) => tracing::debug!("TLS handshake timed out"),
                                }
                            }
                        }
                    });
                }
                Err(e) => {
                    // Typically out of file descriptors: back off instead of spinning.
                    tracing::warn!(receiver = %id, error = %e, "accepting an HTTP connection failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            }
        }
    }
    drop(listener);
    // Connections were told to finish their current request and close; the receiver's
    // shutdown bounds this wait by aborting the task (which aborts them).
    while conns.join_next().await.is_some() {}
}

async fn serve_connection<I>(
    io: I,
    builder: auto::Builder<TokioExecutor>,
    shared: Arc<Shared>,
    stop: CancellationToken,
) where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let svc = hyper::service::service_fn(move |req| {
        let shared = shared.clone();
        async move { Ok::<_, Infallible>(handle(&shared, req).await) }
    });
    let conn = builder.serve_connection(TokioIo::new(io), svc);
    tokio::pin!(conn);
    tokio::select! {
        r = conn.as_mut() => {
            if let Err(e) = r {
                tracing::debug!(error = %e, "HTTP connection ended with an error");
            }
        }
        _ = stop.cancelled() => {
            conn.as_mut().graceful_shutdown();
            let _ = conn.await;
        }
    }
}

async fn handle(shared: &Shared, req: Request<Incoming>) -> Response<Body> {
    let origin = req.headers().get(header::ORIGIN).cloned();
    let mut resp = dispatch(shared, req).await;
    if let (Some(cors), Some(origin)) = (&shared.cors, origin) {
        cors.decorate(&origin, &mut resp);
    }
    for (k, v) in &shared.response_headers {
        resp.headers_mut().insert(k.clone(), v.clone());
    }
    resp
}

async fn dispatch(shared: &Shared, req: Request<Incoming>) -> Response<Body> {
    if req.method() == Method::OPTIONS
        && req
            .headers()
            .contains_key(header::ACCESS_CONTROL_REQUEST_METHOD)
    {
        if let Some(cors) = &shared.cors {
            return cors.preflight(req.headers());
        }
    }
    let path = req.uri().path();
    let Some(route) = shared
        .paths
        .iter()
        .find(|(p, _)| p == path)
        .and_then(|(_, r)| r.clone())
    else {
        return text(StatusCode::NOT_FOUND, "404 page not found\n");
    };
    if req.method() != Method::POST {
        let mut resp = text(
            StatusCode::METHOD_NOT_ALLOWED,
            "405 method not allowed, supported: [POST]",
        );
        resp.headers_mut()
            .insert(header::ALLOW, HeaderValue::from_static("POST"));
        return resp;
    }
    let Some(format) = Format::of(req.headers()) else {
        return text(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "415 unsupported media type, supported: [application/json, application/x-protobuf]",
        );
    };
    let Some(_pass) = shared.gate.enter() else {
        return error(format, &ExportError::ShuttingDown);
    };
    match export(shared, &route, format, req).await {
        Ok(()) => {
            let body = match format {
                Format::Protobuf => Bytes::new(),
                Format::Json => Bytes::from_static(b"{}"),
            };
            respond(StatusCode::OK, format.content_type(), body)
        }
        Err(Failure::Export(e)) => error(format, &e),
        Err(Failure::Http(status, msg)) => {
            let code = if status.is_server_error() {
                CODE_INTERNAL
            } else {
                CODE_INVALID_ARGUMENT
            };
            status_response(format, status, code, &msg)
        }
    }
}

enum Failure {
    Export(ExportError),
    /// A transport-level problem with its own status (413, 408, ...).
    Http(StatusCode, String),
}

impl From<ExportError> for Failure {
    fn from(e: ExportError) -> Self {
        Failure::Export(e)
    }
}

async fn export(
    shared: &Shared,
    route: &Route,
    format: Format,
    req: Request<Incoming>,
) -> Result<(), Failure> {
    let encoding = Encoding::of(req.headers(), shared.encodings.as_deref())
        .map_err(|m| Failure::Http(StatusCode::BAD_REQUEST, m))?;
    let declared = req
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    let limit = shared.max_body;
    if declared.is_some_and(|n| n > limit as u64) {
        return Err(too_large(limit));
    }
    let hint = declared.map_or(0, |n| usize::try_from(n).unwrap_or(usize::MAX));
    let read = read_body(req.into_body(), limit, hint);
    let body = match shared.read_timeout {
        Some(t) => tokio::time::timeout(t, read).await.map_err(|_| {
            Failure::Http(
                StatusCode::REQUEST_TIMEOUT,
                "timed out reading the request body".into(),
            )
        })??,
        None => read.await?,
    };
    let signal = route.signal;
    let heavy =
        (encoding != Encoding::Identity || format == Format::Json) && body.len() > OFFLOAD_ABOVE;
    let work = move || -> Result<Payload, Failure> {
        let raw = match encoding {
            Encoding::Identity => body,
            enc => Bytes::from(enc.decompress(&body, limit)?),
        };
        let pb = match format {
            Format::Protobuf => raw,
            Format::Json => Bytes::from(json::to_protobuf(signal, &raw).map_err(|e| {
                ExportError::Malformed(format!("malformed {signal} export request: {e}"))
            })?),
        };
        Payload::from_encoded(signal, pb).map_err(|e| {
            Failure::Export(ExportError::Malformed(format!(
                "malformed {signal} export request: {e}"
            )))
        })
    };
    let payload = if heavy {
        tokio::task::spawn_blocking(work).await.map_err(|e| {
            Failure::Http(
                StatusCode::INTERNAL_SERVER_ERROR,
                format!("decoding failed: {e}"),
            )
        })??
    } else {
        work()?
    };
    route.deliver(payload).await?;
    Ok(())
}

fn too_large(limit: usize) -> Failure {
    Failure::Http(
        StatusCode::PAYLOAD_TOO_LARGE,
        format!("request body exceeds the limit of {limit} bytes"),
    )
}

/// Reads the whole body, refusing more than `limit` bytes. A body sent as one chunk is kept as
/// is; several chunks are gathered into one buffer sized from `Content-Length`.
async fn read_body(mut body: Incoming, limit: usize, hint: usize) -> Result<Bytes, Failure> {
    let mut first: Option<Bytes> = None;
    let mut buf = BytesMut::new();
    let mut total = 0usize;
    while let Some(frame) = body.frame().await {
        let frame = frame.map_err(|e| {
            Failure::Http(
                StatusCode::BAD_REQUEST,
                format!("failed to read the request body: {e}"),
            )
        })?;
        let Ok(data) = frame.into_data() else {
            continue;
        };
        total = total.saturating_add(data.len());
        if total > limit {
            return Err(too_large(limit));
        }
        match first.take() {
            None if buf.is_empty() => first = Some(data),
            None => buf.extend_from_slice(&data),
            Some(f) => {
                buf.reserve(hint.min(limit).max(f.len() + data.len()));
                buf.extend_from_slice(&f);
                buf.extend_from_slice(&data);
            }
        }
    }
    Ok(first.unwrap_or_else(|| buf.freeze()))
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Format {
    Protobuf,
    Json,
}

impl Format {
    /// From `Content-Type`, ignoring parameters (`; charset=utf-8`) and case.
    fn of(h: &HeaderMap) -> Option<Format> {
        let v = h.get(header::CONTENT_TYPE)?.to_str().ok()?;
        let mime = v.split(';').next().unwrap_or("").trim();
        if mime.eq_ignore_ascii_case(PROTOBUF) {
            Some(Format::Protobuf)
        } else if mime.eq_ignore_ascii_case(JSON) {
            Some(Format::Json)
        } else {
            None
        }
    }

    fn content_type(self) -> &'static str {
        match self {
            Format::Protobuf => PROTOBUF,
            Format::Json => JSON,
        }
    }
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Encoding {
    Identity,
    Gzip,
    Zstd,
    Zlib,
}

impl Encoding {
    fn of(h: &HeaderMap, allowed: Option<&[String]>) -> Result<Encoding, String> {
        let raw = match h.get(header::CONTENT_ENCODING) {
            None => "",
            Some(v) => v
                .to_str()
                .map_err(|_| "unsupported Content-Encoding".to_string())?
                .trim(),
        };
        let lower = raw.to_ascii_lowercase();
        let (enc, name) = match lower.as_str() {
            "" | "identity" => (Encoding::Identity, ""),
            "gzip" | "x-gzip" => (Encoding::Gzip, "gzip"),
            "zstd" => (Encoding::Zstd, "zstd"),
            "deflate" => (Encoding::Zlib, "deflate"),
            "zlib" => (Encoding::Zlib, "zlib"),
            _ => return Err(format!("unsupported Content-Encoding: {raw}")),
        };
        match allowed {
            Some(list) if !list.iter().any(|a| a == name) => {
                Err(format!("unsupported Content-Encoding: {raw}"))
            }
            _ => Ok(enc),
        }
    }

    fn decompress(self, data: &[u8], limit: usize) -> Result<Vec<u8>, Failure> {
        let hint = data.len().saturating_mul(4).min(limit);
        let bad = |e: std::io::Error| {
            Failure::Export(ExportError::Malformed(format!(
                "failed to decompress the {self:?} request body: {e}"
            )))
        };
        let read_limited = |mut r: Box<dyn Read + '_>| -> Result<Vec<u8>, Failure> {
            let mut out = Vec::with_capacity(hint);
            (&mut r)
                .take(limit as u64 + 1)
                .read_to_end(&mut out)
                .map_err(bad)?;
            if out.len() > limit {
                return Err(too_large(limit));
            }
            Ok(out)
        };
        match self {
            Encoding::Identity => Ok(data.to_vec()),
            Encoding::Gzip => read_limited(Box::new(flate2::read::MultiGzDecoder::new(data))),
            Encoding::Zlib => read_limited(Box::new(flate2::read::ZlibDecoder::new(data))),
            Encoding::Zstd => read_limited(Box::new(
                zstd::stream::read::Decoder::with_buffer(data).map_err(bad)?,
            )),
        }
    }
}

fn respond(status: StatusCode, content_type: &'static str, body: Bytes) -> Response<Body> {
    let mut resp = Response::new(Full::new(body));
    *resp.status_mut() = status;
    resp.headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    resp
}

fn text(status: StatusCode, msg: &'static str) -> Response<Body> {
    respond(status, "text/plain", Bytes::from_static(msg.as_bytes()))
}

/// The reference's mapping: permanent -> 400 / InvalidArgument, retryable -> 503 / Unavailable.
fn error(format: Format, e: &ExportError) -> Response<Body> {
    match e {
        ExportError::Malformed(m) => {
            status_response(format, StatusCode::BAD_REQUEST, CODE_INVALID_ARGUMENT, m)
        }
        ExportError::Refused(ConsumeError::Permanent(m)) => {
            status_response(format, StatusCode::BAD_REQUEST, CODE_INVALID_ARGUMENT, m)
        }
        ExportError::Refused(ConsumeError::Retryable(m)) => {
            status_response(format, StatusCode::SERVICE_UNAVAILABLE, CODE_UNAVAILABLE, m)
        }
        ExportError::ShuttingDown => status_response(
            format,
            StatusCode::SERVICE_UNAVAILABLE,
            CODE_UNAVAILABLE,
            "the receiver is shutting down",
        ),
    }
}

fn status_response(format: Format, status: StatusCode, code: i32, msg: &str) -> Response<Body> {
    let body = match format {
        Format::Protobuf => status_protobuf(code, msg),
        Format::Json => json::status_json(code, msg),
    };
    respond(status, format.content_type(), Bytes::from(body))
}

/// `google.rpc.Status{code, message}` in protobuf.
fn status_protobuf(code: i32, msg: &str) -> Vec<u8> {
    fn varint(out: &mut Vec<u8>, mut n: u64) {
        while n >= 0x80 {
            out.push((n as u8) | 0x80);
            n >>= 7;
        }
        out.push(n as u8);
    }
    let mut out = Vec::with_capacity(msg.len() + 8);
    if code != 0 {
        out.push(0x08);
        varint(&mut out, code as u64);
    }
    if !msg.is_empty() {
        out.push(0x12);
        varint(&mut out, msg.len() as u64);
        out.extend_from_slice(msg.as_bytes());
    }
    out
}

/// Cross-origin rules for browser senders, as the reference's `cors` block means them.
struct Cors {
    any_origin: bool,
    /// (prefix, suffix) of each pattern; an exact origin has no `*` and so an empty suffix
    /// with `exact` set.
    origins: Vec<(String, String, bool)>,
    any_header: bool,
    headers: Vec<String>,
    max_age: u32,
}

/// Request headers a browser may send without them being configured.
const DEFAULT_ALLOWED_HEADERS: [&str; 7] = [
    "accept",
    "accept-language",
    "content-language",
    "content-type",
    "content-encoding",
    "origin",
    "x-requested-with",
];

impl Cors {
    fn new(cfg: &CorsConfig) -> Option<Cors> {
        if cfg.allowed_origins.is_empty() {
            return None;
        }
        let mut origins = Vec::new();
        let mut any_origin = false;
        for o in &cfg.allowed_origins {
            let o = o.to_ascii_lowercase();
            if o == "*" {
                any_origin = true;
            } else if let Some((p, s)) = o.split_once('*') {
                origins.push((p.to_string(), s.to_string(), false));
            } else {
                origins.push((o, String::new(), true));
            }
        }
        let headers: Vec<String> = cfg
            .allowed_headers
            .iter()
            .map(|h| h.trim().to_ascii_lowercase())
            .collect();
        Some(Cors {
            any_origin,
            origins,
            any_header: headers.iter().any(|h| h == "*"),
            headers,
            max_age: cfg.max_age,
        })
    }

    fn allows_origin(&self, origin: &str) -> bool {
        if self.any_origin {
            return true;
        }
        let origin = origin.to_ascii_lowercase();
        self.origins.iter().any(|(p, s, exact)| {
            if *exact {
                origin == *p
            } else {
                origin.len() >= p.len() + s.len()
                    && origin.starts_with(p.as_str())
                    && origin.ends_with(s.as_str())
            }
        })
    }

    fn allows_header(&self, h: &str) -> bool {
        let h = h.trim().to_ascii_lowercase();
        self.any_header
            || DEFAULT_ALLOWED_HEADERS.contains(&h.as_str())
            || self.headers.contains(&h)
    }

    fn preflight(&self, h: &HeaderMap) -> Response<Body> {
        let mut resp = Response::new(Full::new(Bytes::new()));
        *resp.status_mut() = StatusCode::NO_CONTENT;
        let headers = resp.headers_mut();
        headers.insert(
            header::VARY,
            HeaderValue::from_static(
                "Origin, Access-Control-Request-Method, Access-Control-Request-Headers",
            ),
        );
        let origin = h.get(header::ORIGIN).and_then(|o| o.to_str().ok());
        let method_ok = h
            .get(header::ACCESS_CONTROL_REQUEST_METHOD)
            .is_some_and(|m| m.as_bytes().eq_ignore_ascii_case(b"POST"));
        let requested = h
            .get(header::ACCESS_CONTROL_REQUEST_HEADERS)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("");
        let headers_ok = requested
            .split(',')
            .filter(|x| !x.trim().is_empty())
            .all(|x| self.allows_header(x));
        let Some(origin) = origin.filter(|o| self.allows_origin(o)) else {
            return resp;
        };
        if !method_ok || !headers_ok {
            return resp;
        }
        let Ok(origin) = HeaderValue::from_str(origin) else {
            return resp;
        };
        headers.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, origin);
        headers.insert(
            header::ACCESS_CONTROL_ALLOW_CREDENTIALS,
            HeaderValue::from_static("true"),
        );
        headers.insert(
            header::ACCESS_CONTROL_ALLOW_METHODS,
            HeaderValue::from_static("POST"),
        );
        if !requested.trim().is_empty() {
            if let Ok(v) = HeaderValue::from_str(requested) {
                headers.insert(header::ACCESS_CONTROL_ALLOW_HEADERS, v);
            }
        }
        if self.max_age > 0 {
            headers.insert(
                header::ACCESS_CONTROL_MAX_AGE,
                HeaderValue::from(self.max_age),
            );
        }
        resp
    }

    /// Lets the browser read an actual (non-preflight) response from an allowed origin.
    fn decorate(&self, origin: &HeaderValue, resp: &mut Response<Body>) {
        let allowed = origin.to_str().is_ok_and(|o| self.allows_origin(o));
        let h = resp.headers_mut();
        h.append(header::VARY, HeaderValue::from_static("Origin"));
        if allowed && !h.contains_key(header::ACCESS_CONTROL_ALLOW_ORIGIN) {
            h.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, origin.clone());
            h.insert(
                header::ACCESS_CONTROL_ALLOW_CREDENTIALS,
                HeaderValue::from_static("true"),
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.insert(
                HeaderName::from_bytes(k.as_bytes()).expect("name"),
                HeaderValue::from_str(v).expect("value"),
            );
        }
        h
    }

    #[test]
    fn content_types_ignore_parameters_and_case() {
        let f = |ct: &str| Format::of(&headers(&[("content-type", ct)]));
        assert_eq!(f("application/x-protobuf"), Some(Format::Protobuf));
        assert_eq!(f("Application/JSON; charset=utf-8"), Some(Format::Json));
        assert_eq!(f("text/plain"), None);
        assert_eq!(Format::of(&HeaderMap::new()), None);
    }

    #[test]
    fn content_encodings_respect_the_allow_list() {
        let e = |ce: &str, allowed: Option<&[String]>| {
            Encoding::of(&headers(&[("content-encoding", ce)]), allowed)
        };
        assert_eq!(e("GZIP", None), Ok(Encoding::Gzip));
        assert_eq!(e("deflate", None), Ok(Encoding::Zlib));
        assert!(e("br", None).is_err());
        let only_gzip = vec!["gzip".to_string()];
        assert_eq!(e("gzip", Some(&only_gzip)), Ok(Encoding::Gzip));
        assert!(e("zstd", Some(&only_gzip)).is_err());
        // Uncompressed bodies are refused too unless "" is listed, as in the reference.
        assert!(Encoding::of(&HeaderMap::new(), Some(&only_gzip)).is_err());
    }

    #[test]
    fn decompression_is_bounded() {
        use std::io::Write;
        let data = vec![7u8; 100_000];
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        gz.write_all(&data).expect("gzip");
        let gz = gz.finish().expect("gzip");
        assert_eq!(
            Encoding::Gzip
                .decompress(&gz, 100_000)
                .ok()
                .map(|v| v.len()),
            Some(100_000)
        );
        assert!(matches!(
            Encoding::Gzip.decompress(&gz, 99_999),
            Err(Failure::Http(StatusCode::PAYLOAD_TOO_LARGE, _))
        ));
        let z = zstd::bulk::compress(&data, 1).expect("zstd");
        assert_eq!(
            Encoding::Zstd.decompress(&z, 1 << 20).ok().map(|v| v.len()),
            Some(100_000)
        );
        assert!(matches!(
            Encoding::Gzip.decompress(b"not gzip", 1 << 20),
            Err(Failure::Export(ExportError::Malformed(_)))
        ));
    }

    #[test]
    fn status_protobuf_matches_the_google_rpc_layout() {
        assert_eq!(
            status_protobuf(3, "bad"),
            vec![0x08, 3, 0x12, 3, b'b', b'a', b'd']
        );
        assert_eq!(status_protobuf(0, ""), Vec::<u8>::new());
    }

    #[test]
    fn cors_origins_and_preflight() {
        let cors = Cors::new(&CorsConfig {
            allowed_origins: vec!["https://*.test.com".into(), "https://test.com".into()],
            allowed_headers: vec!["X-Custom".into()],
            max_age: 7200,
        })
        .expect("cors on");
        assert!(cors.allows_origin("https://www.test.com"));
        assert!(cors.allows_origin("https://test.com"));
        assert!(!cors.allows_origin("https://wwwtest.com"));
        assert!(!cors.allows_origin("http://test.com"));

        let ok = cors.preflight(&headers(&[
            ("origin", "https://app.test.com"),
            ("access-control-request-method", "POST"),
            ("access-control-request-headers", "content-type, x-custom"),
        ]));
        assert_eq!(ok.status(), StatusCode::NO_CONTENT);
        let h = ok.headers();
        assert_eq!(
            h[header::ACCESS_CONTROL_ALLOW_ORIGIN],
            "https://app.test.com"
        );
        assert_eq!(h[header::ACCESS_CONTROL_MAX_AGE], "7200");

        let denied = cors.preflight(&headers(&[
            ("origin", "https://evil.example"),
            ("access-control-request-method", "POST"),
        ]));
        assert!(!denied
            .headers()
            .contains_key(header::ACCESS_CONTROL_ALLOW_ORIGIN));
        let bad_header = cors.preflight(&headers(&[
            ("origin", "https://test.com"),
            ("access-control-request-method", "POST"),
            ("access-control-request-headers", "x-other"),
        ]));
        assert!(!bad_header
            .headers()
            .contains_key(header::ACCESS_CONTROL_ALLOW_ORIGIN));
        assert!(Cors::new(&CorsConfig::default()).is_none());
    }
}
