//! `prometheus`: serves the metrics it receives on a scrape endpoint (`GET /metrics`), as the
//! reference collector's Prometheus exporter does.
//!
//! Each series keeps its latest value (delta sums and histograms are accumulated into
//! cumulative ones) until it is not updated for `metric_expiration`. Names and labels follow the
//! reference translation; one `<namespace>_target_info` gauge per resource carries the resource
//! attributes. Scrapes get Prometheus text 0.0.4, or OpenMetrics 1.0 when `enable_open_metrics`
//! is set and the scraper asks for it.
//!
//! Where Sonde differs from the reference:
//! - Exponential histograms are exported as classic histograms whose buckets are the exact
//!   exponential bucket boundaries (the reference exposes native histograms, which only the
//!   protobuf exposition can carry; that format is not served). Each converted point is
//!   counted in `sonde_exporter_prometheus_exponential_histogram_points_converted`.
//! - Non-monotonic delta sums are accumulated into a gauge (the reference drops them).
//! - Labels with empty values are left out (Prometheus treats them as absent anyway), so
//!   `otel_scope_version=""` is not written.
//! - `target_info` keeps `service_name`/`service_instance_id` labels, as the reference releases
//!   this deployment was built against did.
//! - Exemplars are not exposed; TLS on the scrape endpoint is not supported.

mod convert;
mod naming;
mod render;
mod state;

#[cfg(test)]
mod tests;

use std::collections::{BTreeMap, HashSet};
use std::convert::Infallible;
use std::io::Write as _;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::{TokioExecutor, TokioIo};
use pipeline_core::otlp::tonic::collector::metrics::v1::ExportMetricsServiceRequest;
use pipeline_core::telemetry::{Counter, ExporterMetrics, Gauge};
use pipeline_core::{
    parse_component, ComponentError, ConsumeError, Consumer, Exporter, ExporterConfig,
    ExporterContext, ExporterFactory, Lifecycle, Payload, Signal, Validate,
};
use serde::{Deserialize, Deserializer};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use convert::{ConvertStats, Converter};
use naming::{is_legacy_label_name, Namer};
use render::{render, Format, RenderOptions};
use state::{DropReason, Outcome, Store};

pub use naming::TranslationStrategy;

pub const FACTORY: ExporterFactory = ExporterFactory {
    type_name: "prometheus",
    signals: &[Signal::Metrics],
    parse: |v, path| Ok(Box::new(parse_component::<PrometheusConfig>(v, path)?)),
};

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ResourceToTelemetryConfig {
    pub enabled: bool,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PrometheusConfig {
    /// `host:port` to serve on; bound at start.
    pub endpoint: String,
    pub namespace: String,
    /// Added to every series (not to `target_info`).
    #[serde(deserialize_with = "scalar_map")]
    pub const_labels: BTreeMap<String, String>,
    pub send_timestamps: bool,
    #[serde(with = "pipeline_core::duration")]
    pub metric_expiration: Duration,
    pub resource_to_telemetry_conversion: ResourceToTelemetryConfig,
    pub enable_open_metrics: bool,
    /// Ignored when `translation_strategy` is set.
    pub add_metric_suffixes: bool,
    #[serde(deserialize_with = "optional_strategy")]
    pub translation_strategy: Option<TranslationStrategy>,
}

impl Default for PrometheusConfig {
    fn default() -> Self {
        PrometheusConfig {
            endpoint: String::new(),
            namespace: String::new(),
            const_labels: BTreeMap::new(),
            send_timestamps: false,
            metric_expiration: Duration::from_secs(300),
            resource_to_telemetry_conversion: ResourceToTelemetryConfig::default(),
            enable_open_metrics: false,
            add_metric_suffixes: true,
            translation_strategy: None,
        }
    }
}

/// Label values may be written as YAML numbers or booleans (`version: 2`).
fn scalar_map<'de, D: Deserializer<'de>>(d: D) -> Result<BTreeMap<String, String>, D::Error> {
    let raw = Option::<BTreeMap<String, serde_yaml::Value>>::deserialize(d)?.unwrap_or_default();
    raw.into_iter()
        .map(|(k, v)| {
            let s = match v {
                serde_yaml::Value::String(s) => s,
                serde_yaml::Value::Bool(b) => b.to_string(),
                serde_yaml::Value::Number(n) => n.to_string(),
                serde_yaml::Value::Null => String::new(),
                _ => {
                    return Err(serde::de::Error::custom(format!(
                        "const_labels: value of {k:?} must be a string"
                    )))
                }
            };
            Ok((k, s))
        })
        .collect()
}

/// An empty string (e.g. from an unset environment variable) means "not set", as in the
/// reference.
fn optional_strategy<'de, D: Deserializer<'de>>(
    d: D,
) -> Result<Option<TranslationStrategy>, D::Error> {
    match Option::<String>::deserialize(d)?.as_deref() {
        None | Some("") => Ok(None),
        Some(s) => {
            TranslationStrategy::deserialize(serde::de::value::StrDeserializer::<D::Error>::new(s))
                .map(Some)
        }
    }
}

impl PrometheusConfig {
    fn suffixes_and_utf8(&self) -> (bool, bool) {
        match self.translation_strategy {
            Some(t) => (t.adds_suffixes(), t.allows_utf8()),
            None => (self.add_metric_suffixes, false),
        }
    }

    /// The exporter itself (rather than the trait object), for callers that want its bound
    /// address or a direct scrape.
    pub fn build_exporter(
        &self,
        ctx: ExporterContext,
    ) -> Result<Arc<PrometheusExporter>, ComponentError> {
        let (suffixes, utf8) = self.suffixes_and_utf8();
        let namer = Namer::new(&self.namespace, suffixes, utf8);
        let target_info = namer.target_info();
        let id = ctx.id.to_string();
        let t = &ctx.telemetry;
        let dropped = |reason: &str| {
            t.counter(
                "sonde_exporter_prometheus_dropped_points",
                "Metric points the Prometheus exporter did not store, by reason.",
                &[("exporter", id.as_str()), ("reason", reason)],
            )
        };
        let counters = Counters {
            exporter: ExporterMetrics::new(t, &ctx.id, ctx.signal),
            type_conflict: dropped("type_conflict"),
            out_of_order: dropped("out_of_order"),
            misaligned_delta: dropped("misaligned_delta"),
            unspecified_temporality: dropped("unspecified_temporality"),
            invalid_name: dropped("invalid_name"),
            no_value: dropped("no_value"),
            exponential_converted: t.counter(
                "sonde_exporter_prometheus_exponential_histogram_points_converted",
                "Exponential histogram points exported as classic histograms.",
                &[("exporter", id.as_str())],
            ),
            series: t.gauge(
                "sonde_exporter_prometheus_series",
                "Series currently held by the Prometheus exporter.",
                &[("exporter", id.as_str())],
            ),
        };
        Ok(Arc::new(PrometheusExporter {
            endpoint: self.endpoint.clone(),
            inner: Arc::new(Inner {
                converter: Converter {
                    namer,
                    resource_to_telemetry: self.resource_to_telemetry_conversion.enabled,
                    const_labels: self
                        .const_labels
                        .iter()
                        .map(|(k, v)| (k.clone(), v.clone()))
                        .collect(),
                },
                store: Mutex::new(Store::new(Instant::now())),
                ttl: self.metric_expiration,
                send_timestamps: self.send_timestamps,
                open_metrics: self.enable_open_metrics,
                utf8_names: utf8,
                target_info,
                counters,
                id,
                conflicts_warned: Mutex::new(HashSet::new()),
                conversion_logged: AtomicBool::new(false),
            }),
            server: tokio::sync::Mutex::new(None),
            local_addr: Mutex::new(None),
        }))
    }
}

/// `host:port` with a numeric port; the host is not resolved here.
fn split_endpoint(endpoint: &str) -> Option<(&str, u16)> {
    let (host, port) = endpoint.rsplit_once(':')?;
    let port = port.parse().ok()?;
    Some((host, port))
}

impl Validate for PrometheusConfig {
    fn validate(&self) -> Result<(), String> {
        if self.endpoint.is_empty() {
            return Err("endpoint must be set (e.g. 0.0.0.0:8889)".into());
        }
        if split_endpoint(&self.endpoint).is_none() {
            return Err(format!("endpoint {:?} is not host:port", self.endpoint));
        }
        if self.metric_expiration.is_zero() {
            return Err("metric_expiration must be greater than 0".into());
        }
        let (_, utf8) = self.suffixes_and_utf8();
        for name in self.const_labels.keys() {
            let ok = if utf8 {
                !name.is_empty()
            } else {
                is_legacy_label_name(name)
            };
            if !ok {
                return Err(format!("const_labels: {name:?} is not a valid label name"));
            }
        }
        Ok(())
    }
}

impl ExporterConfig for PrometheusConfig {
    fn build(&self, ctx: ExporterContext) -> Result<Arc<dyn Exporter>, ComponentError> {
        Ok(self.build_exporter(ctx)?)
    }
}

struct Counters {
    exporter: ExporterMetrics,
    type_conflict: Counter,
    out_of_order: Counter,
    misaligned_delta: Counter,
    unspecified_temporality: Counter,
    invalid_name: Counter,
    no_value: Counter,
    exponential_converted: Counter,
    series: Gauge,
}

/// What the consumer and the scrape handler share.
struct Inner {
    id: String,
    converter: Converter,
    store: Mutex<Store>,
    ttl: Duration,
    send_timestamps: bool,
    open_metrics: bool,
    utf8_names: bool,
    target_info: String,
    counters: Counters,
    conflicts_warned: Mutex<HashSet<Arc<str>>>,
    conversion_logged: AtomicBool,
}

impl Inner {
    /// Converts outside the lock, then applies the prepared updates under it.
    fn ingest(&self, req: &ExportMetricsServiceRequest, now: Instant) {
        let mut updates = Vec::new();
        let stats = self.converter.convert(req, &mut updates);
        let mut stored = 0u64;
        let mut out_of_order = 0u64;
        let mut misaligned = 0u64;
        let mut conflicts: Vec<Arc<str>> = Vec::new();
        {
            let mut store = self.store.lock().unwrap_or_else(PoisonError::into_inner);
            for u in updates {
                let family = u.family.clone();
                match store.apply(u, now) {
                    Outcome::Stored | Outcome::Removed => stored += 1,
                    Outcome::Dropped(DropReason::OutOfOrder) => out_of_order += 1,
                    Outcome::Dropped(DropReason::MisalignedDelta) => misaligned += 1,
                    Outcome::Dropped(DropReason::TypeConflict) => conflicts.push(family),
                }
            }
            if store.sweep_due(now, self.ttl) {
                store.sweep(now, self.ttl);
            }
            self.counters.series.set(store.series_count() as i64);
        }
        let c = &self.counters;
        c.exporter.sent.add(stored);
        c.out_of_order.add(out_of_order);
        c.misaligned_delta.add(misaligned);
        c.type_conflict.add(conflicts.len() as u64);
        self.note(stats, &conflicts);
    }

    fn note(&self, stats: ConvertStats, conflicts: &[Arc<str>]) {
        let c = &self.counters;
        c.unspecified_temporality.add(stats.unspecified_temporality);
        c.invalid_name.add(stats.invalid_name);
        c.no_value.add(stats.no_value);
        c.exponential_converted.add(stats.exponential_converted);
        if stats.exponential_converted > 0 && !self.conversion_logged.swap(true, Ordering::Relaxed)
        {
            tracing::info!(
                exporter = %self.id,
                "exponential histograms are exported as classic histograms with their exact bucket boundaries (native histograms are not served)"
            );
        }
        if !conflicts.is_empty() {
            let mut warned = self
                .conflicts_warned
                .lock()
                .unwrap_or_else(PoisonError::into_inner);
            for name in conflicts {
                if warned.insert(name.clone()) {
                    tracing::warn!(
                        exporter = %self.id,
                        metric = %name,
                        "metric arrives with another type than the one already exported under this name; its points are dropped"
                    );
                }
            }
        }
    }

    fn scrape(&self, format: Format, now: Instant) -> String {
        let mut store = self.store.lock().unwrap_or_else(PoisonError::into_inner);
        store.sweep(now, self.ttl);
        self.counters.series.set(store.series_count() as i64);
        render(
            &store,
            &RenderOptions {
                format,
                send_timestamps: self.send_timestamps,
                target_info: &self.target_info,
                utf8_names: self.utf8_names,
            },
        )
    }

    fn respond(&self, req: &Request<Incoming>) -> Response<Full<Bytes>> {
        if req.uri().path() != "/metrics" {
            let mut resp = Response::new(Full::new(Bytes::from_static(b"404 page not found\n")));
            *resp.status_mut() = StatusCode::NOT_FOUND;
            return resp;
        }
        let header = |name| req.headers().get(name).and_then(|v| v.to_str().ok());
        let format = Format::negotiate(
            header(http::header::ACCEPT),
            self.open_metrics,
            self.utf8_names,
        );
        let text = self.scrape(format, Instant::now());
        let (body, gzipped) = if accepts_gzip(header(http::header::ACCEPT_ENCODING)) {
            let mut enc = flate2::write::GzEncoder::new(
                Vec::with_capacity(text.len() / 4),
                flate2::Compression::fast(),
            );
            match enc.write_all(text.as_bytes()).and_then(|()| enc.finish()) {
                Ok(z) => (Bytes::from(z), true),
                Err(_) => (Bytes::from(text), false),
            }
        } else {
            (Bytes::from(text), false)
        };
        let mut resp = Response::new(Full::new(body));
        let h = resp.headers_mut();
        h.insert(
            http::header::CONTENT_TYPE,
            http::HeaderValue::from_static(format.content_type()),
        );
        if gzipped {
            h.insert(
                http::header::CONTENT_ENCODING,
                http::HeaderValue::from_static("gzip"),
            );
        }
        resp
    }
}

fn accepts_gzip(accept_encoding: Option<&str>) -> bool {
    accept_encoding.is_some_and(|v| {
        v.split(',').any(|part| {
            let mut it = part.split(';').map(str::trim);
            let coding = it.next().unwrap_or("");
            let q = it
                .find_map(|p| p.strip_prefix("q="))
                .map_or(1.0, |q| q.trim().parse::<f32>().unwrap_or(0.0));
            coding.eq_ignore_ascii_case("gzip") && q > 0.0
        })
    })
}

struct Server {
    token: CancellationToken,
    task: tokio::task::JoinHandle<()>,
}

pub struct PrometheusExporter {
    endpoint: String,
    inner: Arc<Inner>,
    server: tokio::sync::Mutex<Option<Server>>,
    local_addr: Mutex<Option<SocketAddr>>,
}

impl PrometheusExporter {
    /// The address the scrape endpoint is bound to, once started.
    pub fn local_addr(&self) -> Option<SocketAddr> {
        *self
            .local_addr
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    /// The text exposition a plain scrape would get now.
    pub fn render_text(&self) -> String {
        self.inner.scrape(Format::TEXT, Instant::now())
    }
}

async fn serve(listener: TcpListener, inner: Arc<Inner>, token: CancellationToken) {
    loop {
        let stream = tokio::select! {
            () = token.cancelled() => return,
            r = listener.accept() => match r {
                Ok((stream, _)) => stream,
                Err(e) => {
                    // Usually out of file descriptors; pausing keeps this from spinning.
                    tracing::debug!(exporter = %inner.id, error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        let inner = inner.clone();
        let token = token.clone();
        tokio::spawn(async move {
            let svc = hyper::service::service_fn(move |req: Request<Incoming>| {
                let resp = inner.respond(&req);
                async move { Ok::<_, Infallible>(resp) }
            });
            let builder = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
            let conn = builder.serve_connection(TokioIo::new(stream), svc);
            tokio::select! {
                _ = conn => {}
                () = token.cancelled() => {}
            }
        });
    }
}

#[async_trait]
impl Lifecycle for PrometheusExporter {
    async fn start(&self) -> Result<(), ComponentError> {
        let mut server = self.server.lock().await;
        if server.is_some() {
            return Err(ComponentError::new(format!(
                "prometheus exporter {}: already started",
                self.inner.id
            )));
        }
        // ":8889" means every interface, as in Go.
        let addr = if self.endpoint.starts_with(':') {
            format!("0.0.0.0{}", self.endpoint)
        } else {
            self.endpoint.clone()
        };
        let listener = TcpListener::bind(addr.as_str()).await.map_err(|e| {
            ComponentError::new(format!(
                "prometheus exporter {}: cannot listen on {}: {e}",
                self.inner.id, self.endpoint
            ))
        })?;
        let local = listener.local_addr().ok();
        *self
            .local_addr
            .lock()
            .unwrap_or_else(PoisonError::into_inner) = local;
        let token = CancellationToken::new();
        let task = tokio::spawn(serve(listener, self.inner.clone(), token.clone()));
        *server = Some(Server { token, task });
        tracing::info!(
            exporter = %self.inner.id,
            address = %local.map_or_else(|| self.endpoint.clone(), |a| a.to_string()),
            "serving metrics for Prometheus on /metrics"
        );
        Ok(())
    }

    async fn shutdown(&self) -> Result<(), ComponentError> {
        let Some(server) = self.server.lock().await.take() else {
            return Ok(());
        };
        server.token.cancel();
        // The accept loop ends at its next poll; the listener closes with it.
        let _ = server.task.await;
        *self
            .local_addr
            .lock()
            .unwrap_or_else(PoisonError::into_inner) = None;
        Ok(())
    }
}

#[async_trait]
impl Consumer for PrometheusExporter {
    async fn consume(&self, mut payload: Payload) -> Result<(), ConsumeError> {
        let items = payload.items() as u64;
        let req = match payload.metrics() {
            Ok(req) => req.clone(),
            Err(e) => {
                self.inner.counters.exporter.send_failed.add(items);
                return Err(ConsumeError::Permanent(format!(
                    "prometheus exporter {}: {e}",
                    self.inner.id
                )));
            }
        };
        self.inner.ingest(&req, Instant::now());
        Ok(())
    }
}
