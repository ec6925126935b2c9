//! `otlp` (alias `otlp_grpc`): sends traces, metrics and logs to an OTLP/gRPC server.
//!
//! Payloads that are still encoded go out as they came in: their protobuf parts are written
//! straight into the gRPC message, never decoded. One lazily connected HTTP/2 channel per
//! exporter (per signal) carries every request; names are resolved when it first connects.

mod grpc;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use pipeline_core::{
    parse_component, ComponentError, Exporter, ExporterConfig, ExporterContext, ExporterFactory,
    Signal, Validate,
};
use serde::Deserialize;

use crate::common::config::{header_map, Compression, QueueConfig, RetryConfig, TlsClientConfig};
use crate::common::queue::QueuedExporter;

pub use grpc::{classify_status, GrpcTransport};

pub const OTLP_FACTORY: ExporterFactory = ExporterFactory {
    type_name: "otlp",
    signals: &[Signal::Traces, Signal::Metrics, Signal::Logs],
    parse: |v, path| Ok(Box::new(parse_component::<OtlpGrpcConfig>(v, path)?)),
};

#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct OtlpGrpcConfig {
    /// `host:port`; an `https://` prefix turns TLS on, `http://` turns it off.
    pub endpoint: String,
    pub tls: TlsClientConfig,
    pub headers: BTreeMap<String, String>,
    pub compression: Compression,
    /// Deadline of each attempt.
    #[serde(with = "pipeline_core::duration")]
    pub timeout: Duration,
    pub retry_on_failure: RetryConfig,
    pub sending_queue: QueueConfig,
    pub keepalive: Option<KeepaliveConfig>,
    /// Overrides the `:authority` sent with each request (not the address dialled).
    pub authority: Option<String>,
}

impl Default for OtlpGrpcConfig {
    fn default() -> Self {
        OtlpGrpcConfig {
            endpoint: String::new(),
            tls: TlsClientConfig::default(),
            headers: BTreeMap::new(),
            compression: Compression::Gzip,
            timeout: Duration::from_secs(5),
            retry_on_failure: RetryConfig::default(),
            sending_queue: QueueConfig::default(),
            keepalive: None,
            authority: None,
        }
    }
}

/// `keepalive`: HTTP/2 pings that detect a dead connection before a send has to time out.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct KeepaliveConfig {
    /// Ping after this long without activity; zero disables pings.
    #[serde(with = "pipeline_core::duration")]
    pub time: Duration,
    /// Close the connection when a ping is not answered within this.
    #[serde(with = "pipeline_core::duration")]
    pub timeout: Duration,
    /// Ping even when no request is in flight.
    pub permit_without_stream: bool,
}

impl Default for KeepaliveConfig {
    fn default() -> Self {
        KeepaliveConfig {
            time: Duration::ZERO,
            timeout: Duration::from_secs(20),
            permit_without_stream: false,
        }
    }
}

/// Where and how to dial, derived from `endpoint` and `tls` without resolving anything.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GrpcTarget {
    /// `host:port` (IPv6 hosts in brackets).
    pub authority: String,
    pub tls: bool,
}

/// Reads `endpoint` the way the reference does: `http://` and `https://` choose plain text or
/// TLS and are stripped, so is grpc-go's `dns:///` prefix; otherwise TLS is on unless
/// `tls.insecure`. A missing port is 443, as grpc-go's resolver assumes.
pub fn parse_endpoint(endpoint: &str, insecure: bool) -> Result<GrpcTarget, String> {
    let e = endpoint.trim();
    if e.is_empty() {
        return Err("requires a non-empty \"endpoint\"".into());
    }
    let (rest, tls) = if let Some(r) = e.strip_prefix("https://") {
        (r, true)
    } else if let Some(r) = e.strip_prefix("http://") {
        (r, false)
    } else if let Some(r) = e.strip_prefix("dns://") {
        // dns://[resolver]/host:port: the resolver authority is not used.
        let r = r.split_once('/').map_or(r, |(_, target)| target);
        (r, !insecure)
    } else if e.contains("://") || e.starts_with("unix:") {
        return Err(format!(
            "endpoint {e:?}: only host:port, http:// or https:// endpoints are supported"
        ));
    } else {
        (e, !insecure)
    };
    let rest = rest.strip_suffix('/').unwrap_or(rest);
    let authority: http::uri::Authority = rest
        .parse()
        .map_err(|_| format!("endpoint {e:?} is not a valid host:port"))?;
    if authority.host().is_empty() || authority.as_str().contains('@') {
        return Err(format!("endpoint {e:?} is not a valid host:port"));
    }
    let port = authority.port_u16().unwrap_or(443);
    Ok(GrpcTarget {
        authority: format!("{}:{port}", authority.host()),
        tls,
    })
}

impl Validate for OtlpGrpcConfig {
    fn validate(&self) -> Result<(), String> {
        parse_endpoint(&self.endpoint, self.tls.insecure)?;
        self.tls.validate()?;
        self.retry_on_failure.validate()?;
        self.sending_queue.validate()?;
        header_map(&self.headers)?;
        if self.timeout.is_zero() {
            return Err("timeout must be positive".into());
        }
        if let Some(a) = self.authority.as_deref().filter(|a| !a.is_empty()) {
            a.parse::<http::uri::Authority>()
                .map_err(|_| format!("authority {a:?} is not a valid host[:port]"))?;
        }
        Ok(())
    }
}

impl ExporterConfig for OtlpGrpcConfig {
    fn build(&self, ctx: ExporterContext) -> Result<Arc<dyn Exporter>, ComponentError> {
        self.validate().map_err(ComponentError::new)?;
        let target =
            parse_endpoint(&self.endpoint, self.tls.insecure).map_err(ComponentError::new)?;
        let headers = header_map(&self.headers).map_err(ComponentError::new)?;
        let transport = GrpcTransport::new(self, target, headers, ctx.signal);
        Ok(Arc::new(QueuedExporter::for_exporter(
            transport,
            &ctx,
            &self.retry_on_failure,
            self.timeout,
            &self.sending_queue,
        )))
    }
}

#[cfg(test)]
mod tests;

#[cfg(test)]
mod config_tests {
    use super::*;

    fn parse(yaml: &str) -> Result<OtlpGrpcConfig, String> {
        let v: serde_yaml::Value = serde_yaml::from_str(yaml).unwrap();
        parse_component::<OtlpGrpcConfig>(&v, "exporters::otlp").map_err(|e| e.to_string())
    }

    #[test]
    fn defaults_match_the_reference() {
        let c = parse("endpoint: jaeger:4317").unwrap();
        assert_eq!(c.timeout, Duration::from_secs(5));
        assert_eq!(c.compression, Compression::Gzip);
        assert!(c.retry_on_failure.enabled);
        assert_eq!(c.retry_on_failure.initial_interval, Duration::from_secs(5));
        assert_eq!(c.retry_on_failure.max_interval, Duration::from_secs(30));
        assert_eq!(
            c.retry_on_failure.max_elapsed_time,
            Duration::from_secs(300)
        );
        assert_eq!(c.retry_on_failure.multiplier, 1.5);
        assert_eq!(c.retry_on_failure.randomization_factor, 0.5);
        assert!(c.sending_queue.enabled);
        assert_eq!(c.sending_queue.num_consumers, 10);
        assert_eq!(c.sending_queue.queue_size, 1000);
    }

    #[test]
    fn seed_config_parses_and_builds_without_resolving() {
        let c = parse("endpoint: jaeger:4317\ntls:\n  insecure: true").unwrap();
        let tel = pipeline_core::Telemetry::default();
        let e = c.build(ExporterContext {
            id: pipeline_core::ComponentId::parse("otlp/jaeger").unwrap(),
            signal: Signal::Traces,
            telemetry: tel.clone(),
        });
        assert!(e.is_ok());
        assert_eq!(
            tel.value(
                "otelcol_exporter_queue_capacity",
                &[("exporter", "otlp/jaeger")]
            ),
            Some(1000)
        );
    }

    #[test]
    fn unknown_keys_are_rejected_with_their_path() {
        let e = parse("endpoint: a:1\nretry_on_failure:\n  enabled: true\n  bogus: 1").unwrap_err();
        assert!(
            e.contains("'exporters::otlp::retry_on_failure' has invalid keys: bogus"),
            "{e}"
        );
        let e = parse("endpoint: a:1\nendpont: b").unwrap_err();
        assert!(e.contains("has invalid keys: endpont"), "{e}");
    }

    #[test]
    fn clear_errors() {
        assert!(parse("{}").unwrap_err().contains("non-empty \"endpoint\""));
        assert!(parse("endpoint: a:1\ncompression: snappy")
            .unwrap_err()
            .contains("not supported by Sonde"));
        assert!(
            parse("endpoint: a:1\nsending_queue:\n  storage: file_storage")
                .unwrap_err()
                .contains("not supported")
        );
        assert!(parse("endpoint: a:1\nheaders:\n  \"bad key\": x").is_err());
    }

    #[test]
    fn endpoint_forms() {
        let t = parse_endpoint("jaeger:4317", true).unwrap();
        assert_eq!((t.authority.as_str(), t.tls), ("jaeger:4317", false));
        let t = parse_endpoint("jaeger:4317", false).unwrap();
        assert!(t.tls);
        let t = parse_endpoint("https://collector:4317", true).unwrap();
        assert_eq!((t.authority.as_str(), t.tls), ("collector:4317", true));
        let t = parse_endpoint("http://collector:4317/", false).unwrap();
        assert_eq!((t.authority.as_str(), t.tls), ("collector:4317", false));
        let t = parse_endpoint("dns:///collector:4317", true).unwrap();
        assert_eq!(t.authority, "collector:4317");
        let t = parse_endpoint("[::1]:4317", true).unwrap();
        assert_eq!(t.authority, "[::1]:4317");
        assert_eq!(
            parse_endpoint("collector", true).unwrap().authority,
            "collector:443"
        );
        assert!(parse_endpoint("unix:///tmp/s", true).is_err());
        assert!(parse_endpoint("ftp://x:1", true).is_err());
        assert!(parse_endpoint("a b:1", true).is_err());
    }

    #[test]
    fn humantime_and_go_durations() {
        let c = parse("endpoint: a:1\ntimeout: 1m30s\nretry_on_failure:\n  max_elapsed_time: 0")
            .unwrap();
        assert_eq!(c.timeout, Duration::from_secs(90));
        assert_eq!(c.retry_on_failure.max_elapsed_time, Duration::ZERO);
    }
}
