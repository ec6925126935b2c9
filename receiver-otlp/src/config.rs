//! The receiver's YAML, laid over the reference collector's defaults.
//!
//! A protocol is on only when its key is present (`grpc:` with no value means "on, with
//! defaults"), exactly like the reference's optional sub-configs. Nothing here resolves host
//! names or touches the file system: endpoints are split into host and port, and resolved only
//! when the receiver starts.

use std::collections::BTreeMap;
use std::fmt;

pub use pipeline_core::duration::GoDuration;
use pipeline_core::Validate;
use serde::de::Deserializer;
use serde::Deserialize;

pub const DEFAULT_GRPC_ENDPOINT: &str = "localhost:4317";
pub const DEFAULT_HTTP_ENDPOINT: &str = "localhost:4318";
/// gRPC's own default message limit, which the reference keeps when the option is 0.
pub const DEFAULT_MAX_RECV_MSG_SIZE_MIB: u64 = 4;
/// The reference's `confighttp` default; Sonde applies it to the body both as sent and after
/// decompression, so a small compressed body cannot expand without bound.
pub const DEFAULT_MAX_REQUEST_BODY_SIZE: u64 = 20 << 20;
/// Above this a single message could not be addressed on 32-bit targets anyway.
const MAX_RECV_MSG_SIZE_MIB_LIMIT: u64 = 2048;

/// Content encodings the HTTP side can decode. `""` stands for an uncompressed body.
pub const SUPPORTED_COMPRESSION: [&str; 5] = ["", "gzip", "zstd", "zlib", "deflate"];

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct OtlpReceiverConfig {
    pub protocols: Protocols,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Protocols {
    #[serde(deserialize_with = "present")]
    pub grpc: Option<GrpcConfig>,
    #[serde(deserialize_with = "present")]
    pub http: Option<HttpConfig>,
}

/// Only called when the key is present, so a present-but-empty key turns the protocol on.
fn present<'de, D, T>(d: D) -> Result<Option<T>, D::Error>
where
    D: Deserializer<'de>,
    T: Deserialize<'de> + Default,
{
    Ok(Some(Option::<T>::deserialize(d)?.unwrap_or_default()))
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct GrpcConfig {
    pub endpoint: String,
    /// `tcp`, `tcp4` or `tcp6`; `unix` sockets are not supported.
    pub transport: String,
    pub tls: Option<TlsServerConfig>,
    /// 0 keeps the default (4 MiB), as in the reference.
    pub max_recv_msg_size_mib: u64,
    /// 0 = no limit.
    pub max_concurrent_streams: u32,
    /// Accepted for compatibility; HTTP/2 flow control sizes Sonde's buffers.
    pub read_buffer_size: Option<u64>,
    /// Accepted for compatibility; see `read_buffer_size`.
    pub write_buffer_size: Option<u64>,
    pub keepalive: Option<KeepaliveConfig>,
    /// Accepted for compatibility; Sonde does not carry client metadata with the data.
    pub include_metadata: bool,
    /// Rejected by validation: Sonde has no authenticator extensions.
    pub auth: Option<serde_yaml::Value>,
}

impl Default for GrpcConfig {
    fn default() -> Self {
        GrpcConfig {
            endpoint: DEFAULT_GRPC_ENDPOINT.to_string(),
            transport: "tcp".to_string(),
            tls: None,
            max_recv_msg_size_mib: DEFAULT_MAX_RECV_MSG_SIZE_MIB,
            max_concurrent_streams: 0,
            read_buffer_size: None,
            write_buffer_size: None,
            keepalive: None,
            include_metadata: false,
            auth: None,
        }
    }
}

impl GrpcConfig {
    pub fn max_recv_msg_size(&self) -> usize {
        let mib = if self.max_recv_msg_size_mib == 0 {
            DEFAULT_MAX_RECV_MSG_SIZE_MIB
        } else {
            self.max_recv_msg_size_mib.min(MAX_RECV_MSG_SIZE_MIB_LIMIT)
        };
        usize::try_from(mib << 20).unwrap_or(usize::MAX)
    }
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct KeepaliveConfig {
    pub server_parameters: Option<KeepaliveServerParameters>,
    /// Accepted for compatibility; HTTP/2 in Sonde does not police client pings.
    pub enforcement_policy: Option<KeepaliveEnforcementPolicy>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct KeepaliveServerParameters {
    /// Accepted for compatibility; not enforced.
    pub max_connection_idle: Option<GoDuration>,
    pub max_connection_age: Option<GoDuration>,
    pub max_connection_age_grace: Option<GoDuration>,
    /// Interval of server pings on an idle connection.
    pub time: Option<GoDuration>,
    /// How long to wait for a ping's answer before closing the connection.
    pub timeout: Option<GoDuration>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct KeepaliveEnforcementPolicy {
    pub min_time: Option<GoDuration>,
    pub permit_without_stream: bool,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct HttpConfig {
    pub endpoint: String,
    pub traces_url_path: String,
    pub metrics_url_path: String,
    pub logs_url_path: String,
    pub tls: Option<TlsServerConfig>,
    pub cors: Option<CorsConfig>,
    /// Bytes; 0 keeps the default (20 MiB).
    pub max_request_body_size: u64,
    /// Accepted for compatibility; Sonde does not carry client metadata with the data.
    pub include_metadata: bool,
    /// Added to every response.
    pub response_headers: BTreeMap<String, String>,
    /// Content encodings accepted on requests; unset = all supported ones.
    pub compression_algorithms: Option<Vec<String>>,
    pub read_header_timeout: Option<GoDuration>,
    /// Upper bound on receiving a request body.
    pub read_timeout: Option<GoDuration>,
    /// Upper bound on handling one request once its headers are read.
    pub write_timeout: Option<GoDuration>,
    /// Accepted for compatibility; idle keep-alive connections are not timed out.
    pub idle_timeout: Option<GoDuration>,
    /// Rejected by validation: Sonde has no authenticator extensions.
    pub auth: Option<serde_yaml::Value>,
}

impl Default for HttpConfig {
    fn default() -> Self {
        HttpConfig {
            endpoint: DEFAULT_HTTP_ENDPOINT.to_string(),
            traces_url_path: "/v1/traces".to_string(),
            metrics_url_path: "/v1/metrics".to_string(),
            logs_url_path: "/v1/logs".to_string(),
            tls: None,
            cors: None,
            max_request_body_size: 0,
            include_metadata: false,
            response_headers: BTreeMap::new(),
            compression_algorithms: None,
            read_header_timeout: None,
            read_timeout: None,
            write_timeout: None,
            idle_timeout: None,
            auth: None,
        }
    }
}

impl HttpConfig {
    pub fn max_request_body_size(&self) -> usize {
        let n = if self.max_request_body_size == 0 {
            DEFAULT_MAX_REQUEST_BODY_SIZE
        } else {
            self.max_request_body_size
        };
        usize::try_from(n).unwrap_or(usize::MAX)
    }

    /// The three signal paths as served (a missing leading `/` is added, as the reference does).
    pub fn paths(&self) -> [String; 3] {
        [
            &self.traces_url_path,
            &self.metrics_url_path,
            &self.logs_url_path,
        ]
        .map(|p| sanitize_path(p))
    }
}

fn sanitize_path(p: &str) -> String {
    if p.starts_with('/') {
        p.to_string()
    } else {
        format!("/{p}")
    }
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct CorsConfig {
    /// Exact origins, `*`, or patterns with one `*` (`https://*.example.com`).
    pub allowed_origins: Vec<String>,
    /// Request headers allowed beyond the CORS-safelisted ones; `*` allows any.
    pub allowed_headers: Vec<String>,
    /// Seconds a browser may cache a preflight answer; 0 leaves it to the browser.
    pub max_age: u32,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TlsServerConfig {
    pub cert_file: Option<String>,
    pub key_file: Option<String>,
    pub cert_pem: Option<String>,
    pub key_pem: Option<String>,
    /// When set, clients must present a certificate signed by one of these CAs.
    pub client_ca_file: Option<String>,
}

impl TlsServerConfig {
    fn check(&self) -> Result<(), String> {
        let cert = self.cert_file.is_some() || self.cert_pem.is_some();
        let key = self.key_file.is_some() || self.key_pem.is_some();
        if self.cert_file.is_some() && self.cert_pem.is_some() {
            return Err("set only one of cert_file and cert_pem".into());
        }
        if self.key_file.is_some() && self.key_pem.is_some() {
            return Err("set only one of key_file and key_pem".into());
        }
        if !cert || !key {
            return Err(
                "a server certificate and its key are required (cert_file and key_file)".into(),
            );
        }
        Ok(())
    }
}

/// Where a server listens: a host (name or IP, possibly empty for "every interface") and a port.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Endpoint {
    pub host: String,
    pub port: u16,
}

impl Endpoint {
    /// Splits `host:port` / `[v6]:port` / `:port` without resolving anything.
    pub fn parse(s: &str) -> Result<Endpoint, String> {
        if s.contains("://") {
            return Err(format!(
                "endpoint {s:?} must be host:port, without a scheme (e.g. \"0.0.0.0:4317\")"
            ));
        }
        let (host, port) = if let Some(rest) = s.strip_prefix('[') {
            let (h, after) = rest
                .split_once(']')
                .ok_or_else(|| format!("endpoint {s:?}: missing ']' after an IPv6 address"))?;
            let p = after
                .strip_prefix(':')
                .ok_or_else(|| format!("endpoint {s:?}: missing port"))?;
            (h, p)
        } else {
            let (h, p) = s
                .rsplit_once(':')
                .ok_or_else(|| format!("endpoint {s:?}: missing port (expected host:port)"))?;
            if h.contains(':') {
                return Err(format!(
                    "endpoint {s:?}: too many colons (write IPv6 addresses as [addr]:port)"
                ));
            }
            (h, p)
        };
        let port = port
            .parse::<u16>()
            .map_err(|_| format!("endpoint {s:?}: invalid port {port:?}"))?;
        if host.chars().any(|c| c.is_whitespace() || c == '/') {
            return Err(format!("endpoint {s:?}: invalid host {host:?}"));
        }
        Ok(Endpoint {
            host: host.to_string(),
            port,
        })
    }
}

impl fmt::Display for Endpoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.host.contains(':') {
            write!(f, "[{}]:{}", self.host, self.port)
        } else {
            write!(f, "{}:{}", self.host, self.port)
        }
    }
}

impl Validate for OtlpReceiverConfig {
    fn validate(&self) -> Result<(), String> {
        let p = &self.protocols;
        if p.grpc.is_none() && p.http.is_none() {
            return Err("must specify at least one protocol when using the OTLP receiver".into());
        }
        if let Some(g) = &p.grpc {
            validate_grpc(g).map_err(|e| format!("protocols::grpc::{e}"))?;
        }
        if let Some(h) = &p.http {
            validate_http(h).map_err(|e| format!("protocols::http::{e}"))?;
        }
        Ok(())
    }
}

fn validate_grpc(g: &GrpcConfig) -> Result<(), String> {
    Endpoint::parse(&g.endpoint).map_err(|e| format!("endpoint: {e}"))?;
    match g.transport.as_str() {
        "tcp" | "tcp4" | "tcp6" => {}
        "unix" => return Err("transport: unix sockets are not supported yet; use tcp".into()),
        t => {
            return Err(format!(
                "transport: unknown transport {t:?} (valid values: [tcp tcp4 tcp6])"
            ))
        }
    }
    if g.max_recv_msg_size_mib > MAX_RECV_MSG_SIZE_MIB_LIMIT {
        return Err(format!(
            "max_recv_msg_size_mib: {} is above the supported maximum of {MAX_RECV_MSG_SIZE_MIB_LIMIT}",
            g.max_recv_msg_size_mib
        ));
    }
    if g.auth.is_some() {
        return Err("auth: authenticator extensions are not supported by Sonde".into());
    }
    if let Some(t) = &g.tls {
        t.check().map_err(|e| format!("tls: {e}"))?;
    }
    Ok(())
}

fn validate_http(h: &HttpConfig) -> Result<(), String> {
    Endpoint::parse(&h.endpoint).map_err(|e| format!("endpoint: {e}"))?;
    let paths = h.paths();
    let names = ["traces_url_path", "metrics_url_path", "logs_url_path"];
    for (i, p) in paths.iter().enumerate() {
        if p.parse::<http::uri::PathAndQuery>().is_err() || p.contains(['?', '#']) {
            return Err(format!("{}: invalid URL path {p:?}", names[i]));
        }
        for j in 0..i {
            if paths[j] == *p {
                return Err(format!(
                    "{}: {p:?} is already used by {}",
                    names[i], names[j]
                ));
            }
        }
    }
    if h.auth.is_some() {
        return Err("auth: authenticator extensions are not supported by Sonde".into());
    }
    if let Some(t) = &h.tls {
        t.check().map_err(|e| format!("tls: {e}"))?;
    }
    if let Some(algos) = &h.compression_algorithms {
        for a in algos {
            if !SUPPORTED_COMPRESSION.contains(&a.as_str()) {
                return Err(format!(
                    "compression_algorithms: {a:?} is not supported (supported: \"\", gzip, zstd, zlib, deflate)"
                ));
            }
        }
    }
    for (k, v) in &h.response_headers {
        http::HeaderName::from_bytes(k.as_bytes())
            .map_err(|_| format!("response_headers: invalid header name {k:?}"))?;
        http::HeaderValue::from_str(v)
            .map_err(|_| format!("response_headers: invalid value for {k:?}"))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use pipeline_core::parse_component;
    use std::time::Duration;

    fn parse(yaml: &str) -> Result<OtlpReceiverConfig, pipeline_core::ConfigError> {
        let v: serde_yaml::Value = serde_yaml::from_str(yaml).expect("test yaml");
        parse_component::<OtlpReceiverConfig>(&v, "receivers::otlp")
    }

    #[test]
    fn no_protocol_is_an_error_naming_the_receiver() {
        for y in ["", "protocols:", "protocols: {}"] {
            let e = parse(y).expect_err(y);
            assert_eq!(e.path, "receivers::otlp");
            assert!(e.msg.contains("must specify at least one protocol"), "{e}");
        }
    }

    #[test]
    fn present_but_empty_protocol_is_enabled_with_defaults() {
        let c = parse("protocols:\n  grpc:\n").expect("grpc null");
        let g = c.protocols.grpc.expect("grpc on");
        assert_eq!(g.endpoint, "localhost:4317");
        assert_eq!(g.max_recv_msg_size(), 4 << 20);
        assert!(c.protocols.http.is_none());

        let c = parse("protocols:\n  http: {}\n").expect("http empty map");
        let h = c.protocols.http.expect("http on");
        assert_eq!(h.endpoint, "localhost:4318");
        assert_eq!(h.paths(), ["/v1/traces", "/v1/metrics", "/v1/logs"]);
        assert_eq!(h.max_request_body_size(), 20 << 20);
        assert!(c.protocols.grpc.is_none());
    }

    #[test]
    fn reference_sample_config_parses() {
        let c = parse(
            r#"
protocols:
  grpc:
    endpoint: otel-collector:4317
    max_recv_msg_size_mib: 32
    max_concurrent_streams: 16
    read_buffer_size: 1024
    write_buffer_size: 1024
    include_metadata: true
    keepalive:
      server_parameters:
        max_connection_idle: 11s
        max_connection_age: 12s
        max_connection_age_grace: 13s
        time: 30s
        timeout: 5s
      enforcement_policy:
        min_time: 10s
        permit_without_stream: true
  http:
    endpoint: "0.0.0.0:4318"
    cors:
      allowed_origins: ["https://*.test.com", "https://test.com"]
      max_age: 7200
    traces_url_path: traces
    metrics_url_path: /v2/metrics
    logs_url_path: log/ingest
    response_headers: {X-Served-By: sonde}
"#,
        )
        .expect("sample");
        let g = c.protocols.grpc.expect("grpc");
        assert_eq!(g.endpoint, "otel-collector:4317");
        assert_eq!(g.max_recv_msg_size(), 32 << 20);
        let sp = g
            .keepalive
            .and_then(|k| k.server_parameters)
            .expect("params");
        assert_eq!(
            sp.max_connection_age,
            Some(GoDuration(Duration::from_secs(12)))
        );
        let h = c.protocols.http.expect("http");
        assert_eq!(h.paths(), ["/traces", "/v2/metrics", "/log/ingest"]);
        assert_eq!(h.cors.expect("cors").max_age, 7200);
    }

    #[test]
    fn unknown_keys_are_rejected_with_their_path() {
        let e = parse("protocols:\n  grpc:\n    endpont: x:1\n").expect_err("typo");
        assert!(
            e.to_string()
                .contains("'receivers::otlp::protocols::grpc' has invalid keys: endpont"),
            "{e}"
        );
        let e = parse("protocols:\n  thrift: {}\n").expect_err("unknown protocol");
        assert!(e.to_string().contains("has invalid keys: thrift"), "{e}");
    }

    #[test]
    fn bad_values_are_rejected() {
        let cases = [
            (
                "protocols: {grpc: {endpoint: \"localhost\"}}",
                "missing port",
            ),
            (
                "protocols: {grpc: {endpoint: \"http://0.0.0.0:4317\"}}",
                "without a scheme",
            ),
            (
                "protocols: {http: {endpoint: \"host:99999\"}}",
                "invalid port",
            ),
            (
                "protocols: {grpc: {transport: unix}}",
                "unix sockets are not supported",
            ),
            (
                "protocols: {grpc: {auth: {authenticator: basic}}}",
                "authenticator",
            ),
            ("protocols: {http: {tls: {cert_file: a.pem}}}", "tls"),
            (
                "protocols: {http: {compression_algorithms: [snappy]}}",
                "snappy",
            ),
            (
                "protocols: {http: {traces_url_path: /x, logs_url_path: x}}",
                "already used",
            ),
            ("protocols: {http: {read_timeout: 5 parsecs}}", "duration"),
        ];
        for (y, want) in cases {
            let e = parse(y).expect_err(y);
            assert!(e.to_string().contains(want), "{y}: {e}");
        }
    }

    #[test]
    fn endpoints_split_without_resolving() {
        assert_eq!(
            Endpoint::parse("otel-collector:4318"),
            Ok(Endpoint {
                host: "otel-collector".into(),
                port: 4318
            })
        );
        assert_eq!(
            Endpoint::parse(":4317"),
            Ok(Endpoint {
                host: String::new(),
                port: 4317
            })
        );
        let v6 = Endpoint::parse("[::1]:4317").expect("v6");
        assert_eq!(v6.host, "::1");
        assert_eq!(v6.to_string(), "[::1]:4317");
        assert!(Endpoint::parse("::1:4317").is_err());
    }

    #[test]
    fn go_durations() {
        assert_eq!(GoDuration::parse("1m30s"), Ok(Duration::from_secs(90)));
        assert_eq!(GoDuration::parse("1.5s"), Ok(Duration::from_millis(1500)));
        assert_eq!(GoDuration::parse("250ms"), Ok(Duration::from_millis(250)));
        assert_eq!(GoDuration::parse("0"), Ok(Duration::ZERO));
        assert!(GoDuration::parse("5").is_err());
        assert!(GoDuration::parse("-1s").is_err());
    }
}
