//! Sonde's own metrics (accepted, refused, sent, failed, dropped, queue size per component),
//! rendered in the Prometheus text format on `service.telemetry.metrics`.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use http_body_util::Full;
use hyper::body::Bytes;
use hyper::{Request, Response};
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::net::TcpListener;

use crate::component::ComponentId;
use crate::payload::Signal;

#[derive(Clone, Default, Debug)]
pub struct Counter(Arc<AtomicU64>);

impl Counter {
    pub fn add(&self, n: u64) {
        self.0.fetch_add(n, Ordering::Relaxed);
    }
    pub fn get(&self) -> u64 {
        self.0.load(Ordering::Relaxed)
    }
}

#[derive(Clone, Default, Debug)]
pub struct Gauge(Arc<AtomicI64>);

impl Gauge {
    pub fn set(&self, v: i64) {
        self.0.store(v, Ordering::Relaxed);
    }
    pub fn add(&self, v: i64) {
        self.0.fetch_add(v, Ordering::Relaxed);
    }
    pub fn get(&self) -> i64 {
        self.0.load(Ordering::Relaxed)
    }
}

#[derive(Clone)]
enum Value {
    Counter(Counter),
    Gauge(Gauge),
}

type Labels = Vec<(String, String)>;

#[derive(Default)]
struct Family {
    help: String,
    series: Vec<(Labels, Value)>,
}

/// Registry of internal metrics; clones share it.
#[derive(Clone, Default)]
pub struct Telemetry {
    families: Arc<Mutex<BTreeMap<String, Family>>>,
}

impl Telemetry {
    fn register(&self, name: &str, help: &str, labels: &[(&str, &str)], make: Value) -> Value {
        let labels: Labels = labels
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        let mut fams = self.families.lock().unwrap_or_else(|e| e.into_inner());
        let fam = fams.entry(name.to_string()).or_default();
        fam.help = help.to_string();
        if let Some((_, v)) = fam.series.iter().find(|(l, _)| *l == labels) {
            return v.clone();
        }
        fam.series.push((labels, make.clone()));
        make
    }

    /// The counter `name{labels}`; asking twice returns the same counter.
    pub fn counter(&self, name: &str, help: &str, labels: &[(&str, &str)]) -> Counter {
        match self.register(name, help, labels, Value::Counter(Counter::default())) {
            Value::Counter(c) => c,
            Value::Gauge(_) => Counter::default(),
        }
    }

    pub fn gauge(&self, name: &str, help: &str, labels: &[(&str, &str)]) -> Gauge {
        match self.register(name, help, labels, Value::Gauge(Gauge::default())) {
            Value::Gauge(g) => g,
            Value::Counter(_) => Gauge::default(),
        }
    }

    /// Current value of a series, for tests and shutdown reports.
    pub fn value(&self, name: &str, labels: &[(&str, &str)]) -> Option<i64> {
        let fams = self.families.lock().unwrap_or_else(|e| e.into_inner());
        let fam = fams.get(name)?;
        fam.series
            .iter()
            .find(|(l, _)| {
                labels
                    .iter()
                    .all(|(k, v)| l.iter().any(|(lk, lv)| lk == k && lv == v))
            })
            .map(|(_, v)| match v {
                Value::Counter(c) => c.get() as i64,
                Value::Gauge(g) => g.get(),
            })
    }

    /// Prometheus text exposition format.
    pub fn render(&self) -> String {
        let fams = self.families.lock().unwrap_or_else(|e| e.into_inner());
        let mut out = String::new();
        for (name, fam) in fams.iter() {
            let kind = match fam.series.first() {
                Some((_, Value::Counter(_))) => "counter",
                _ => "gauge",
            };
            let _ = writeln!(out, "# HELP {name} {}", fam.help);
            let _ = writeln!(out, "# TYPE {name} {kind}");
            for (labels, v) in &fam.series {
                out.push_str(name);
                if !labels.is_empty() {
                    out.push('{');
                    for (i, (k, val)) in labels.iter().enumerate() {
                        if i > 0 {
                            out.push(',');
                        }
                        let esc = val.replace('\\', "\\\\").replace('"', "\\\"");
                        let _ = write!(out, "{k}=\"{esc}\"");
                    }
                    out.push('}');
                }
                let n = match v {
                    Value::Counter(c) => c.get() as i64,
                    Value::Gauge(g) => g.get(),
                };
                let _ = writeln!(out, " {n}");
            }
        }
        out
    }

    /// Serves `render()` on `GET /metrics` until the returned task is aborted.
    pub async fn serve(&self, addr: SocketAddr) -> std::io::Result<tokio::task::JoinHandle<()>> {
        let listener = TcpListener::bind(addr).await?;
        let tel = self.clone();
        Ok(tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    continue;
                };
                let tel = tel.clone();
                tokio::spawn(async move {
                    let svc =
                        hyper::service::service_fn(move |req: Request<hyper::body::Incoming>| {
                            let tel = tel.clone();
                            async move {
                                let resp = if req.uri().path() == "/metrics" {
                                    Response::builder()
                                        .header("content-type", "text/plain; version=0.0.4")
                                        .body(Full::new(Bytes::from(tel.render())))
                                } else {
                                    Response::builder()
                                        .status(404)
                                        .body(Full::new(Bytes::from_static(b"not found\n")))
                                };
                                resp.map_err(std::io::Error::other)
                            }
                        });
                    let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                        .serve_connection(TokioIo::new(stream), svc)
                        .await;
                });
            }
        }))
    }
}

/// The standard counters of a receiver for one signal and transport.
#[derive(Clone)]
pub struct ReceiverMetrics {
    pub accepted: Counter,
    pub refused: Counter,
}

impl ReceiverMetrics {
    pub fn new(t: &Telemetry, id: &ComponentId, transport: &str, signal: Signal) -> Self {
        let id = id.to_string();
        let labels = [("receiver", id.as_str()), ("transport", transport)];
        let item = signal.item_name();
        ReceiverMetrics {
            accepted: t.counter(
                &format!("otelcol_receiver_accepted_{item}"),
                "Items successfully pushed into the pipeline.",
                &labels,
            ),
            refused: t.counter(
                &format!("otelcol_receiver_refused_{item}"),
                "Items that could not be pushed into the pipeline.",
                &labels,
            ),
        }
    }
}

/// The standard counters of an exporter for one signal.
#[derive(Clone)]
pub struct ExporterMetrics {
    pub sent: Counter,
    pub send_failed: Counter,
    /// Items dropped before any send attempt because the queue was full.
    pub enqueue_failed: Counter,
    pub queue_size: Gauge,
    pub queue_capacity: Gauge,
}

impl ExporterMetrics {
    pub fn new(t: &Telemetry, id: &ComponentId, signal: Signal) -> Self {
        let id = id.to_string();
        let labels = [("exporter", id.as_str())];
        let item = signal.item_name();
        ExporterMetrics {
            sent: t.counter(
                &format!("otelcol_exporter_sent_{item}"),
                "Items successfully sent to the destination.",
                &labels,
            ),
            send_failed: t.counter(
                &format!("otelcol_exporter_send_failed_{item}"),
                "Items that failed to be sent (after retries) and were dropped.",
                &labels,
            ),
            enqueue_failed: t.counter(
                &format!("otelcol_exporter_enqueue_failed_{item}"),
                "Items dropped because the sending queue was full.",
                &labels,
            ),
            queue_size: t.gauge(
                "otelcol_exporter_queue_size",
                "Batches currently in the sending queue.",
                &[("exporter", id.as_str()), ("data_type", signal.as_str())],
            ),
            queue_capacity: t.gauge(
                "otelcol_exporter_queue_capacity",
                "Capacity of the sending queue, in batches.",
                &[("exporter", id.as_str()), ("data_type", signal.as_str())],
            ),
        }
    }
}

/// The standard counters of a processor for one pipeline.
#[derive(Clone)]
pub struct ProcessorMetrics {
    pub incoming: Counter,
    pub outgoing: Counter,
    pub dropped: Counter,
    pub refused: Counter,
}

impl ProcessorMetrics {
    pub fn new(t: &Telemetry, id: &ComponentId, pipeline: &str, signal: Signal) -> Self {
        let id = id.to_string();
        let labels = [("processor", id.as_str()), ("pipeline", pipeline)];
        let item = signal.item_name();
        ProcessorMetrics {
            incoming: t.counter(
                &format!("otelcol_processor_incoming_{item}"),
                "Items received by the processor.",
                &labels,
            ),
            outgoing: t.counter(
                &format!("otelcol_processor_outgoing_{item}"),
                "Items passed on by the processor.",
                &labels,
            ),
            dropped: t.counter(
                &format!("otelcol_processor_dropped_{item}"),
                "Items dropped by the processor (filtered or lost).",
                &labels,
            ),
            refused: t.counter(
                &format!("otelcol_processor_refused_{item}"),
                "Items the processor refused (e.g. memory limit).",
                &labels,
            ),
        }
    }
}
