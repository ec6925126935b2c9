//! `otlphttp` (alias `otlp_http`): sends traces, metrics and logs to an OTLP/HTTP server,
//! `POST <endpoint>/v1/{traces,metrics,logs}` (or the per-signal URL), protobuf or JSON.
//!
//! Protobuf bodies are the payload's encoded parts as they are, compressed once per batch and
//! reused by every retry.

mod client;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use http::Uri;
use pipeline_core::{
    parse_component, ComponentError, Exporter, ExporterConfig, ExporterContext, ExporterFactory,
    Signal, Validate,
};
use serde::Deserialize;

use crate::common::config::{header_map, Compression, QueueConfig, RetryConfig, TlsClientConfig};
use crate::common::queue::QueuedExporter;

pub use client::{classify_response, retry_after, HttpTransport};

pub const OTLPHTTP_FACTORY: ExporterFactory = ExporterFactory {
    type_name: "otlphttp",
    signals: &[Signal::Traces, Signal::Metrics, Signal::Logs],
    parse: |v, path| Ok(Box::new(parse_component::<OtlpHttpConfig>(v, path)?)),
};

/// `encoding`: the body format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Encoding {
    #[default]
    Proto,
    Json,
}

#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct OtlpHttpConfig {
    /// Base URL; `/v1/traces`, `/v1/metrics` or `/v1/logs` is appended.
    pub endpoint: String,
    /// Full URLs that replace `endpoint` for one signal.
    pub traces_endpoint: String,
    pub metrics_endpoint: String,
    pub logs_endpoint: String,
    /// Used only for `https://` URLs.
    pub tls: TlsClientConfig,
    pub headers: BTreeMap<String, String>,
    pub compression: Compression,
    pub encoding: Encoding,
    /// Deadline of each attempt.
    #[serde(with = "pipeline_core::duration")]
    pub timeout: Duration,
    pub retry_on_failure: RetryConfig,
    pub sending_queue: QueueConfig,
}

impl Default for OtlpHttpConfig {
    fn default() -> Self {
        OtlpHttpConfig {
            endpoint: String::new(),
            traces_endpoint: String::new(),
            metrics_endpoint: String::new(),
            logs_endpoint: String::new(),
            tls: TlsClientConfig::default(),
            headers: BTreeMap::new(),
            compression: Compression::Gzip,
            encoding: Encoding::Proto,
            timeout: Duration::from_secs(30),
            retry_on_failure: RetryConfig::default(),
            sending_queue: QueueConfig::default(),
        }
    }
}

fn parse_url(key: &str, url: &str) -> Result<Uri, String> {
    let uri: Uri = url
        .trim()
        .parse()
        .map_err(|e| format!("{key} {url:?} is not a valid URL: {e}"))?;
    match uri.scheme_str() {
        Some("http") | Some("https") => {}
        _ => return Err(format!("{key} {url:?} must start with http:// or https://")),
    }
    if uri.host().is_none_or(str::is_empty) {
        return Err(format!("{key} {url:?} has no host"));
    }
    Ok(uri)
}

impl OtlpHttpConfig {
    fn signal_endpoint(&self, signal: Signal) -> (&'static str, &str) {
        match signal {
            Signal::Traces => ("traces_endpoint", &self.traces_endpoint),
            Signal::Metrics => ("metrics_endpoint", &self.metrics_endpoint),
            Signal::Logs => ("logs_endpoint", &self.logs_endpoint),
        }
    }

    /// The URL one signal is posted to: its own `*_endpoint`, else `endpoint` + `/v1/<signal>`.
    pub fn signal_url(&self, signal: Signal) -> Result<Uri, String> {
        let (key, own) = self.signal_endpoint(signal);
        if !own.trim().is_empty() {
            return parse_url(key, own);
        }
        let base = self.endpoint.trim();
        if base.is_empty() {
            return Err(format!(
                "either \"endpoint\" or \"{key}\" must be specified to export {signal}"
            ));
        }
        parse_url("endpoint", base)?;
        let url = format!("{}/v1/{}", base.trim_end_matches('/'), signal.as_str());
        parse_url("endpoint", &url)
    }
}

impl Validate for OtlpHttpConfig {
    fn validate(&self) -> Result<(), String> {
        let any = !self.endpoint.trim().is_empty()
            || Signal::ALL
                .iter()
                .any(|s| !self.signal_endpoint(*s).1.trim().is_empty());
        if !any {
            return Err("at least one endpoint must be specified".into());
        }
        if !self.endpoint.trim().is_empty() {
            parse_url("endpoint", &self.endpoint)?;
        }
        for s in Signal::ALL {
            let (key, own) = self.signal_endpoint(s);
            if !own.trim().is_empty() {
                parse_url(key, own)?;
            }
        }
        self.tls.validate()?;
        self.retry_on_failure.validate()?;
        self.sending_queue.validate()?;
        header_map(&self.headers)?;
        if self.timeout.is_zero() {
            return Err("timeout must be positive".into());
        }
        Ok(())
    }
}

impl ExporterConfig for OtlpHttpConfig {
    fn build(&self, ctx: ExporterContext) -> Result<Arc<dyn Exporter>, ComponentError> {
        self.validate().map_err(ComponentError::new)?;
        let url = self.signal_url(ctx.signal).map_err(ComponentError::new)?;
        let headers = header_map(&self.headers).map_err(ComponentError::new)?;
        let transport = HttpTransport::new(self, url, headers, ctx.signal);
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

    fn parse(yaml: &str) -> Result<OtlpHttpConfig, String> {
        let v: serde_yaml::Value = serde_yaml::from_str(yaml).unwrap();
        parse_component::<OtlpHttpConfig>(&v, "exporters::otlphttp").map_err(|e| e.to_string())
    }

    #[test]
    fn defaults_match_the_reference() {
        let c = parse("endpoint: http://collector:4318").unwrap();
        assert_eq!(c.timeout, Duration::from_secs(30));
        assert_eq!(c.compression, Compression::Gzip);
        assert_eq!(c.encoding, Encoding::Proto);
        assert_eq!(c.sending_queue.queue_size, 1000);
        assert!(c.retry_on_failure.enabled);
    }

    #[test]
    fn signal_urls() {
        let c = parse("endpoint: http://collector:4318").unwrap();
        assert_eq!(
            c.signal_url(Signal::Traces).unwrap(),
            "http://collector:4318/v1/traces"
        );
        let c = parse(
            "endpoint: https://vendor.example/otlp/\nlogs_endpoint: https://logs.example/ingest",
        )
        .unwrap();
        assert_eq!(
            c.signal_url(Signal::Metrics).unwrap(),
            "https://vendor.example/otlp/v1/metrics"
        );
        assert_eq!(
            c.signal_url(Signal::Logs).unwrap(),
            "https://logs.example/ingest"
        );
        let c = parse("traces_endpoint: http://t:4318/v1/traces").unwrap();
        assert!(c.signal_url(Signal::Traces).is_ok());
        let e = c.signal_url(Signal::Metrics).unwrap_err();
        assert!(e.contains("metrics_endpoint"), "{e}");
    }

    #[test]
    fn clear_errors() {
        assert!(parse("{}")
            .unwrap_err()
            .contains("at least one endpoint must be specified"));
        assert!(parse("endpoint: collector:4318")
            .unwrap_err()
            .contains("must start with http:// or https://"));
        assert!(parse("endpoint: http://c:4318\nencoding: xml").is_err());
        assert!(parse("endpoint: http://c:4318\ncompression: snappy")
            .unwrap_err()
            .contains("not supported by Sonde"));
        let e = parse("endpoint: http://c:4318\ntls:\n  insecure_skip_verfy: true").unwrap_err();
        assert!(
            e.contains("'exporters::otlphttp::tls' has invalid keys: insecure_skip_verfy"),
            "{e}"
        );
    }

    #[test]
    fn build_does_not_resolve() {
        let c = parse("endpoint: http://does-not-resolve.invalid:4318\nencoding: json").unwrap();
        let e = c.build(ExporterContext {
            id: pipeline_core::ComponentId::parse("otlphttp").unwrap(),
            signal: Signal::Logs,
            telemetry: pipeline_core::Telemetry::default(),
        });
        assert!(e.is_ok());
    }
}
