//! The HTTP wire: body preparation (protobuf or JSON, compressed once per batch), a pooled
//! hyper client over the shared connector, and the response classifier.

use std::io::Write as _;
use std::sync::OnceLock;
use std::time::{Duration, SystemTime};

use async_trait::async_trait;
use bytes::Bytes;
use http::header::{CONTENT_ENCODING, CONTENT_TYPE, RETRY_AFTER, USER_AGENT};
use http::{HeaderMap, HeaderValue, Method, Request, StatusCode, Uri};
use http_body_util::{BodyExt, Full, Limited};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use pipeline_core::{ComponentError, Payload, Signal};
use prost::Message;

use super::{Encoding, OtlpHttpConfig};
use crate::common::config::{Compression, TlsClientConfig};
use crate::common::queue::{Accepted, Transport};
use crate::common::retry::SendError;
use crate::common::rpc::{ExportResponse, RpcStatus};
use crate::common::tls::{client_config, Connector, TlsSetup};

/// Response bodies are only read for error messages and partial success; cap what is buffered.
const MAX_RESPONSE_BODY: usize = 64 * 1024;

const GZIP_LEVEL: u32 = 6;
const ZSTD_LEVEL: i32 = 3;

/// `Retry-After`: delay-seconds or an HTTP date (a date in the past means "now").
pub fn retry_after(value: &HeaderValue, now: SystemTime) -> Option<Duration> {
    let s = value.to_str().ok()?.trim();
    if let Ok(secs) = s.parse::<u64>() {
        return Some(Duration::from_secs(secs));
    }
    let at = httpdate::parse_http_date(s).ok()?;
    Some(at.duration_since(now).unwrap_or(Duration::ZERO))
}

/// Classifies a non-2xx response as the reference does: 429, 502, 503 and 504 are retried
/// (429 and 503 after `Retry-After` when given); everything else is permanent.
pub fn classify_response(
    status: StatusCode,
    headers: &HeaderMap,
    detail: &str,
    now: SystemTime,
) -> SendError {
    let msg = if detail.is_empty() {
        format!("HTTP {status}")
    } else {
        format!("HTTP {status}: {detail}")
    };
    match status.as_u16() {
        429 | 503 => {
            let after = headers.get(RETRY_AFTER).and_then(|v| retry_after(v, now));
            SendError::throttled(msg, after)
        }
        502 | 504 => SendError::retryable(msg),
        _ => SendError::permanent(msg),
    }
}

/// A prepared (encoded and compressed) request body.
pub struct HttpRequest {
    body: Bytes,
}

pub struct HttpTransport {
    url: Uri,
    tls: TlsClientConfig,
    timeout: Duration,
    compression: Compression,
    encoding: Encoding,
    signal: Signal,
    headers: HeaderMap,
    client: OnceLock<Client<Connector, Full<Bytes>>>,
}

impl HttpTransport {
    pub(super) fn new(
        cfg: &OtlpHttpConfig,
        url: Uri,
        user_headers: HeaderMap,
        signal: Signal,
    ) -> HttpTransport {
        let mut headers = HeaderMap::new();
        headers.insert(
            USER_AGENT,
            HeaderValue::from_static(concat!("Sonde/", env!("CARGO_PKG_VERSION"))),
        );
        headers.insert(
            CONTENT_TYPE,
            HeaderValue::from_static(match cfg.encoding {
                Encoding::Proto => "application/x-protobuf",
                Encoding::Json => "application/json",
            }),
        );
        match cfg.compression {
            Compression::Gzip => {
                headers.insert(CONTENT_ENCODING, HeaderValue::from_static("gzip"));
            }
            Compression::Zstd => {
                headers.insert(CONTENT_ENCODING, HeaderValue::from_static("zstd"));
            }
            Compression::None => {}
        }
        // Configured headers win, as in the reference.
        for (k, v) in user_headers.iter() {
            headers.insert(k.clone(), v.clone());
        }
        HttpTransport {
            url,
            tls: cfg.tls.clone(),
            timeout: cfg.timeout,
            compression: cfg.compression,
            encoding: cfg.encoding,
            signal,
            headers,
            client: OnceLock::new(),
        }
    }

    fn encode(&self, mut payload: Payload) -> Result<Vec<u8>, String> {
        match self.encoding {
            Encoding::Proto => {
                let mut out = Vec::new();
                compress_parts(self.compression, &payload.encoded_parts(), &mut out)
                    .map_err(|e| format!("compressing the request: {e}"))?;
                Ok(out)
            }
            Encoding::Json => {
                let json = match self.signal {
                    Signal::Traces => payload
                        .traces()
                        .map_err(|e| e.to_string())
                        .and_then(|t| serde_json::to_vec(&**t).map_err(|e| e.to_string())),
                    Signal::Metrics => payload
                        .metrics()
                        .map_err(|e| e.to_string())
                        .and_then(|m| serde_json::to_vec(&**m).map_err(|e| e.to_string())),
                    Signal::Logs => payload
                        .logs()
                        .map_err(|e| e.to_string())
                        .and_then(|l| serde_json::to_vec(&**l).map_err(|e| e.to_string())),
                }
                .map_err(|e| format!("encoding the request as JSON: {e}"))?;
                let mut out = Vec::new();
                compress_parts(self.compression, &[Bytes::from(json)], &mut out)
                    .map_err(|e| format!("compressing the request: {e}"))?;
                Ok(out)
            }
        }
    }

    /// Reads what a response says: the partial success of a 2xx, the message of an error.
    fn describe(&self, content_type: &str, body: &[u8]) -> (Accepted, String) {
        if body.is_empty() {
            return (Accepted::default(), String::new());
        }
        if content_type.contains("protobuf") {
            let accepted = ExportResponse::decode(body)
                .map(|r| r.accepted())
                .unwrap_or_default();
            let message = RpcStatus::decode(body)
                .map(|s| s.message)
                .unwrap_or_default();
            return (accepted, message);
        }
        if content_type.contains("json") {
            if let Ok(v) = serde_json::from_slice::<serde_json::Value>(body) {
                let accepted = json_partial_success(&v);
                let message = v
                    .get("message")
                    .and_then(|m| m.as_str())
                    .unwrap_or_default()
                    .to_string();
                return (accepted, message);
            }
        }
        let text = String::from_utf8_lossy(&body[..body.len().min(1024)]);
        (Accepted::default(), text.trim().to_string())
    }
}

/// The body, compressed as configured; parts are fed to the compressor one after the other so
/// a multi-part payload is never concatenated first.
fn compress_parts(c: Compression, parts: &[Bytes], out: &mut Vec<u8>) -> std::io::Result<()> {
    let total: usize = parts.iter().map(Bytes::len).sum();
    match c {
        Compression::None => {
            out.reserve(total);
            for p in parts {
                out.extend_from_slice(p);
            }
        }
        Compression::Gzip => {
            let mut enc = flate2::write::GzEncoder::new(out, flate2::Compression::new(GZIP_LEVEL));
            for p in parts {
                enc.write_all(p)?;
            }
            enc.finish()?;
        }
        Compression::Zstd => {
            let mut enc = zstd::stream::write::Encoder::new(out, ZSTD_LEVEL)?;
            enc.set_pledged_src_size(Some(total as u64))?;
            for p in parts {
                enc.write_all(p)?;
            }
            enc.finish()?;
        }
    }
    Ok(())
}

/// `{"partialSuccess": {"rejectedSpans": "3", "errorMessage": "..."}}`; the count's key depends
/// on the signal and int64 may be a string in OTLP/JSON.
fn json_partial_success(v: &serde_json::Value) -> Accepted {
    let Some(ps) = v.get("partialSuccess").and_then(|p| p.as_object()) else {
        return Accepted::default();
    };
    let rejected = ps
        .iter()
        .find(|(k, _)| k.starts_with("rejected"))
        .and_then(|(_, v)| v.as_u64().or_else(|| v.as_str()?.parse().ok()))
        .unwrap_or(0);
    let message = ps
        .get("errorMessage")
        .and_then(|m| m.as_str())
        .unwrap_or_default()
        .to_string();
    Accepted { rejected, message }
}

#[async_trait]
impl Transport for HttpTransport {
    type Request = HttpRequest;

    async fn start(&self) -> Result<(), ComponentError> {
        if self.client.get().is_some() {
            return Ok(());
        }
        let tls = if self.url.scheme_str() == Some("https") {
            let config = client_config(&self.tls, &[b"h2", b"http/1.1"])
                .map_err(|e| ComponentError::new(e.to_string()))?;
            Some(TlsSetup {
                config,
                server_name_override: self.tls.server_name_override().map(str::to_string),
            })
        } else {
            None
        };
        let client = Client::builder(TokioExecutor::new())
            .pool_idle_timeout(Duration::from_secs(90))
            .build(Connector::new(tls, self.timeout));
        let _ = self.client.set(client);
        Ok(())
    }

    fn prepare(&self, payload: Payload) -> Result<HttpRequest, SendError> {
        let body = self.encode(payload).map_err(SendError::permanent)?;
        Ok(HttpRequest {
            body: Bytes::from(body),
        })
    }

    async fn send(&self, request: &HttpRequest) -> Result<Accepted, SendError> {
        let Some(client) = self.client.get() else {
            return Err(SendError::retryable("exporter is not started"));
        };
        let mut req = Request::builder()
            .method(Method::POST)
            .uri(self.url.clone())
            .body(Full::new(request.body.clone()))
            .map_err(|e| SendError::permanent(format!("building the request: {e}")))?;
        *req.headers_mut() = self.headers.clone();
        // Connection failures and broken connections are worth retrying, as the reference does
        // for any error that is not an HTTP status.
        let resp = client.request(req).await.map_err(|e| {
            SendError::retryable(format!("sending to {}: {}", self.url, error_chain(&e)))
        })?;
        let (parts, body) = resp.into_parts();
        let content_type = parts
            .headers
            .get(CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_string();
        let body = match Limited::new(body, MAX_RESPONSE_BODY).collect().await {
            Ok(b) => b.to_bytes(),
            // A truncated or oversized body does not change the outcome the status gives.
            Err(_) => Bytes::new(),
        };
        let (accepted, message) = self.describe(&content_type, &body);
        if parts.status.is_success() {
            Ok(accepted)
        } else {
            Err(classify_response(
                parts.status,
                &parts.headers,
                &message,
                SystemTime::now(),
            ))
        }
    }
}

fn error_chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut s = e.to_string();
    let mut src = e.source();
    while let Some(inner) = src {
        let t = inner.to_string();
        if !s.contains(&t) {
            s.push_str(": ");
            s.push_str(&t);
        }
        src = inner.source();
    }
    s
}

#[cfg(test)]
mod tests {
    use std::io::Read as _;

    use super::*;
    use crate::common::retry::Disposition;

    #[test]
    fn retryable_statuses() {
        let h = HeaderMap::new();
        let now = SystemTime::now();
        for s in [429, 502, 503, 504] {
            let e = classify_response(StatusCode::from_u16(s).unwrap(), &h, "", now);
            assert!(e.is_retryable(), "{s}");
        }
        for s in [400, 401, 403, 404, 405, 413, 500, 501] {
            let e = classify_response(StatusCode::from_u16(s).unwrap(), &h, "x", now);
            assert_eq!(e.disposition, Disposition::Permanent, "{s}");
        }
    }

    #[test]
    fn retry_after_seconds_and_date() {
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_000_000_000);
        let mut h = HeaderMap::new();
        h.insert(RETRY_AFTER, HeaderValue::from_static("7"));
        let e = classify_response(StatusCode::TOO_MANY_REQUESTS, &h, "", now);
        assert_eq!(
            e.disposition,
            Disposition::Retry {
                after: Some(Duration::from_secs(7))
            }
        );
        let date = httpdate::fmt_http_date(now + Duration::from_secs(30));
        h.insert(RETRY_AFTER, HeaderValue::from_str(&date).unwrap());
        let e = classify_response(StatusCode::SERVICE_UNAVAILABLE, &h, "", now);
        assert_eq!(
            e.disposition,
            Disposition::Retry {
                after: Some(Duration::from_secs(30))
            }
        );
        // Ignored on 502/504, as in the reference.
        let e = classify_response(StatusCode::BAD_GATEWAY, &h, "", now);
        assert_eq!(e.disposition, Disposition::Retry { after: None });
        let past = httpdate::fmt_http_date(now - Duration::from_secs(30));
        assert_eq!(
            retry_after(&HeaderValue::from_str(&past).unwrap(), now),
            Some(Duration::ZERO)
        );
        assert_eq!(retry_after(&HeaderValue::from_static("soon"), now), None);
    }

    #[test]
    fn compression_round_trips_multi_part_bodies() {
        let parts = [Bytes::from_static(b"hello "), Bytes::from_static(b"world")];
        let mut gz = Vec::new();
        compress_parts(Compression::Gzip, &parts, &mut gz).unwrap();
        let mut back = String::new();
        flate2::read::GzDecoder::new(&gz[..])
            .read_to_string(&mut back)
            .unwrap();
        assert_eq!(back, "hello world");
        let mut zs = Vec::new();
        compress_parts(Compression::Zstd, &parts, &mut zs).unwrap();
        assert_eq!(zstd::decode_all(&zs[..]).unwrap(), b"hello world");
        let mut plain = Vec::new();
        compress_parts(Compression::None, &parts, &mut plain).unwrap();
        assert_eq!(plain, b"hello world");
    }

    #[test]
    fn json_partial_success_forms() {
        let v = serde_json::json!({"partialSuccess": {"rejectedLogRecords": "4", "errorMessage": "bad"}});
        assert_eq!(
            json_partial_success(&v),
            Accepted {
                rejected: 4,
                message: "bad".into()
            }
        );
        let v = serde_json::json!({"partialSuccess": {"rejectedDataPoints": 2}});
        assert_eq!(json_partial_success(&v).rejected, 2);
        assert_eq!(
            json_partial_success(&serde_json::json!({})),
            Accepted::default()
        );
    }
}
