//! Test helpers shared by the exporters' end-to-end tests: realistic OTLP data, certificates
//! made on the fly, and building an exporter from YAML through its factory.

use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

use pipeline_core::otlp::tonic::collector::logs::v1::ExportLogsServiceRequest;
use pipeline_core::otlp::tonic::collector::metrics::v1::ExportMetricsServiceRequest;
use pipeline_core::otlp::tonic::collector::trace::v1::ExportTraceServiceRequest;
use pipeline_core::otlp::tonic::common::v1::{any_value, AnyValue, InstrumentationScope, KeyValue};
use pipeline_core::otlp::tonic::logs::v1::{LogRecord, ResourceLogs, ScopeLogs};
use pipeline_core::otlp::tonic::metrics::v1::{
    metric, number_data_point, Gauge, Metric, NumberDataPoint, ResourceMetrics, ScopeMetrics,
};
use pipeline_core::otlp::tonic::resource::v1::Resource;
use pipeline_core::otlp::tonic::trace::v1::{ResourceSpans, ScopeSpans, Span};
use pipeline_core::{
    ComponentId, Exporter, ExporterContext, ExporterFactory, Payload, Signal, Telemetry,
};
use prost::Message;

fn kv(k: &str, v: &str) -> KeyValue {
    KeyValue {
        key: k.into(),
        value: Some(AnyValue {
            value: Some(any_value::Value::StringValue(v.into())),
        }),
    }
}

fn resource(tag: &str) -> Option<Resource> {
    Some(Resource {
        attributes: vec![
            kv("service.name", "checkout"),
            kv("service.instance.id", tag),
            kv("host.name", "node-1"),
        ],
        ..Default::default()
    })
}

fn scope() -> Option<InstrumentationScope> {
    Some(InstrumentationScope {
        name: "test".into(),
        version: "1.0".into(),
        ..Default::default()
    })
}

/// `spans` spans under one resource tagged `tag`; span names carry their index.
pub fn traces(tag: &str, spans: usize) -> ExportTraceServiceRequest {
    ExportTraceServiceRequest {
        resource_spans: vec![ResourceSpans {
            resource: resource(tag),
            scope_spans: vec![ScopeSpans {
                scope: scope(),
                spans: (0..spans)
                    .map(|i| Span {
                        trace_id: vec![7; 16],
                        span_id: (i as u64 + 1).to_be_bytes().to_vec(),
                        name: format!("{tag}-span-{i}"),
                        kind: 2,
                        start_time_unix_nano: 1_700_000_000_000_000_000 + i as u64,
                        end_time_unix_nano: 1_700_000_000_000_500_000 + i as u64,
                        attributes: vec![kv("http.method", "GET"), kv("http.route", "/cart")],
                        ..Default::default()
                    })
                    .collect(),
                ..Default::default()
            }],
            ..Default::default()
        }],
    }
}

pub fn metrics(tag: &str, points: usize) -> ExportMetricsServiceRequest {
    ExportMetricsServiceRequest {
        resource_metrics: vec![ResourceMetrics {
            resource: resource(tag),
            scope_metrics: vec![ScopeMetrics {
                scope: scope(),
                metrics: vec![Metric {
                    name: format!("{tag}.queue.depth"),
                    unit: "1".into(),
                    data: Some(metric::Data::Gauge(Gauge {
                        data_points: (0..points)
                            .map(|i| NumberDataPoint {
                                time_unix_nano: 1_700_000_000_000_000_000 + i as u64,
                                value: Some(number_data_point::Value::AsInt(i as i64)),
                                attributes: vec![kv("queue", &format!("q{i}"))],
                                ..Default::default()
                            })
                            .collect(),
                    })),
                    ..Default::default()
                }],
                ..Default::default()
            }],
            ..Default::default()
        }],
    }
}

pub fn logs(tag: &str, records: usize) -> ExportLogsServiceRequest {
    ExportLogsServiceRequest {
        resource_logs: vec![ResourceLogs {
            resource: resource(tag),
            scope_logs: vec![ScopeLogs {
                scope: scope(),
                log_records: (0..records)
                    .map(|i| LogRecord {
                        time_unix_nano: 1_700_000_000_000_000_000 + i as u64,
                        severity_number: 9,
                        severity_text: "INFO".into(),
                        body: Some(AnyValue {
                            value: Some(any_value::Value::StringValue(format!("{tag} line {i}"))),
                        }),
                        trace_id: vec![7; 16],
                        span_id: vec![1; 8],
                        ..Default::default()
                    })
                    .collect(),
                ..Default::default()
            }],
            ..Default::default()
        }],
    }
}

/// The payload a receiver would hand over: still encoded.
pub fn encoded(signal: Signal, msg: &impl Message) -> Payload {
    Payload::from_encoded(signal, msg.encode_to_vec().into()).expect("valid OTLP")
}

/// `n` items of `signal` tagged `tag`, still encoded.
pub fn sample(signal: Signal, tag: &str, n: usize) -> Payload {
    match signal {
        Signal::Traces => encoded(signal, &traces(tag, n)),
        Signal::Metrics => encoded(signal, &metrics(tag, n)),
        Signal::Logs => encoded(signal, &logs(tag, n)),
    }
}

/// `n` items of `signal` tagged `tag`, decoded (as a processor that changed them leaves them).
pub fn sample_decoded(signal: Signal, tag: &str, n: usize) -> Payload {
    match signal {
        Signal::Traces => Payload::from_traces(traces(tag, n)),
        Signal::Metrics => Payload::from_metrics(metrics(tag, n)),
        Signal::Logs => Payload::from_logs(logs(tag, n)),
    }
}

/// An exporter built from YAML exactly as the service would build it.
pub fn build(
    factory: &ExporterFactory,
    yaml: &str,
    id: &str,
    signal: Signal,
    telemetry: &Telemetry,
) -> Arc<dyn Exporter> {
    let v: serde_yaml::Value = serde_yaml::from_str(yaml).expect("test YAML");
    let cfg = (factory.parse)(&v, &format!("exporters::{id}")).expect("valid config");
    cfg.build(ExporterContext {
        id: ComponentId::parse(id).expect("valid id"),
        signal,
        telemetry: telemetry.clone(),
    })
    .expect("builds")
}

/// An exporter metric, e.g. `metric(&tel, "sent", Signal::Traces, "otlp")`.
pub fn metric(t: &Telemetry, what: &str, signal: Signal, id: &str) -> i64 {
    t.value(
        &format!("otelcol_exporter_{what}_{}", signal.item_name()),
        &[("exporter", id)],
    )
    .unwrap_or(0)
}

pub fn queue_size(t: &Telemetry, id: &str) -> i64 {
    t.value("otelcol_exporter_queue_size", &[("exporter", id)])
        .unwrap_or(0)
}

/// Polls `cond` until it holds; panics with `what` after `limit`.
pub async fn wait_for<F, Fut>(what: &str, limit: Duration, mut cond: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let start = Instant::now();
    while !cond().await {
        assert!(start.elapsed() < limit, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// A throwaway CA and a server certificate it signed for `localhost` and 127.0.0.1.
pub struct TestPki {
    pub ca_pem: String,
    pub server_cert_pem: String,
    pub server_key_pem: String,
    pub dir: std::path::PathBuf,
}

impl TestPki {
    pub fn new(tag: &str) -> TestPki {
        use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair};
        let ca_key = KeyPair::generate().expect("ca key");
        let mut ca_params = CertificateParams::new(Vec::<String>::new()).expect("ca params");
        ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        ca_params
            .distinguished_name
            .push(DnType::CommonName, "Sonde test CA");
        let ca_cert = ca_params.self_signed(&ca_key).expect("ca cert");
        let issuer = Issuer::new(ca_params, ca_key);
        let key = KeyPair::generate().expect("server key");
        let params = CertificateParams::new(vec!["localhost".to_string(), "127.0.0.1".to_string()])
            .expect("server params");
        let cert = params.signed_by(&key, &issuer).expect("server cert");
        let dir =
            std::env::temp_dir().join(format!("sonde-exporters-{tag}-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("temp dir");
        let pki = TestPki {
            ca_pem: ca_cert.pem(),
            server_cert_pem: cert.pem(),
            server_key_pem: key.serialize_pem(),
            dir,
        };
        std::fs::write(pki.ca_path(), &pki.ca_pem).expect("write ca");
        pki
    }

    pub fn ca_path(&self) -> std::path::PathBuf {
        self.dir.join("ca.pem")
    }

    /// A rustls server config presenting the server certificate, speaking `alpn`.
    pub fn server_config(&self, alpn: &[&[u8]]) -> Arc<rustls::ServerConfig> {
        let certs = rustls_pemfile::certs(&mut self.server_cert_pem.as_bytes())
            .collect::<Result<Vec<_>, _>>()
            .expect("certs");
        let key = rustls_pemfile::private_key(&mut self.server_key_pem.as_bytes())
            .expect("key")
            .expect("a key");
        let mut cfg = rustls::ServerConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .expect("versions")
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .expect("server config");
        cfg.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
        Arc::new(cfg)
    }
}

impl Drop for TestPki {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// A loopback port nothing listens on (bound then released).
pub fn free_port() -> u16 {
    let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    l.local_addr().expect("addr").port()
}
