//! The receiver itself: what both transports share (where each signal goes, the counters, the
//! gate that lets shutdown wait for requests in flight) and the start/shutdown lifecycle.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use pipeline_core::telemetry::ReceiverMetrics;
use pipeline_core::{
    ComponentError, ComponentId, ConsumeError, Consumer, Lifecycle, Payload, ReceiverContext,
    Signal,
};
use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tokio_util::task::task_tracker::TaskTrackerToken;
use tokio_util::task::TaskTracker;

use crate::config::{Endpoint, OtlpReceiverConfig};
use crate::grpc::GrpcServer;
use crate::http_server::HttpServer;

/// How long shutdown waits for requests in flight (and then for connections to close) before
/// abandoning them.
pub const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);

/// Why an export request was not accepted.
#[derive(Debug)]
pub(crate) enum ExportError {
    /// The body is not a valid export request: the sender must not retry it.
    Malformed(String),
    /// The pipeline refused the data.
    Refused(ConsumeError),
    /// The receiver is stopping; the sender may retry (elsewhere or later).
    ShuttingDown,
}

/// One signal's destination plus its counters for one transport.
pub(crate) struct Route {
    pub signal: Signal,
    consumer: Arc<dyn Consumer>,
    metrics: ReceiverMetrics,
}

impl Route {
    /// Pushes a validated payload downstream and counts the outcome.
    pub async fn deliver(&self, payload: Payload) -> Result<(), ExportError> {
        let items = payload.items() as u64;
        // The reference answers an empty request with success without bothering the pipeline.
        if items == 0 {
            return Ok(());
        }
        match self.consumer.consume(payload).await {
            Ok(()) => {
                self.metrics.accepted.add(items);
                Ok(())
            }
            Err(e) => {
                self.metrics.refused.add(items);
                Err(ExportError::Refused(e))
            }
        }
    }
}

/// The routes of one transport, by signal; `None` for a signal no pipeline takes from us.
pub(crate) struct Routes {
    routes: [Option<Arc<Route>>; 3],
}

impl Routes {
    fn new(ctx: &ReceiverContext, transport: &str) -> Routes {
        let route = |signal: Signal| {
            ctx.consumers.get(&signal).map(|c| {
                Arc::new(Route {
                    signal,
                    consumer: c.clone(),
                    metrics: ReceiverMetrics::new(&ctx.telemetry, &ctx.id, transport, signal),
                })
            })
        };
        Routes {
            routes: [
                route(Signal::Traces),
                route(Signal::Metrics),
                route(Signal::Logs),
            ],
        }
    }

    pub fn get(&self, signal: Signal) -> Option<&Arc<Route>> {
        let i = match signal {
            Signal::Traces => 0,
            Signal::Metrics => 1,
            Signal::Logs => 2,
        };
        self.routes[i].as_ref()
    }
}

/// Admits requests while the receiver runs and lets shutdown wait until every admitted request
/// has handed its data downstream.
#[derive(Clone, Default)]
pub(crate) struct Gate {
    tracker: TaskTracker,
}

impl Gate {
    /// A pass held for the whole request, or `None` once shutdown has begun.
    pub fn enter(&self) -> Option<TaskTrackerToken> {
        // Taking the token before looking at `closed` means shutdown either sees this request
        // in its count or the request sees the gate closed; nothing slips between the two.
        let token = self.tracker.token();
        (!self.tracker.is_closed()).then_some(token)
    }

    fn open(&self) {
        self.tracker.reopen();
    }

    fn close(&self) {
        self.tracker.close();
    }

    async fn drained(&self) {
        self.tracker.wait().await;
    }

    fn in_flight(&self) -> usize {
        self.tracker.len()
    }
}

/// Resolves `endpoint` (only now, at start) and binds the first address that works, IPv4 first
/// as the reference does for names like `localhost`.
pub(crate) async fn bind(
    endpoint: &Endpoint,
    transport: &str,
    what: &str,
) -> Result<TcpListener, ComponentError> {
    let host = match (endpoint.host.as_str(), transport) {
        ("", "tcp6") => "::",
        ("", _) => "0.0.0.0",
        (h, _) => h,
    };
    let mut addrs: Vec<SocketAddr> = tokio::net::lookup_host((host, endpoint.port))
        .await
        .map_err(|e| ComponentError::new(format!("{what}: cannot resolve {endpoint}: {e}")))?
        .filter(|a| match transport {
            "tcp4" => a.is_ipv4(),
            "tcp6" => a.is_ipv6(),
            _ => true,
        })
        .collect();
    addrs.sort_by_key(|a| a.is_ipv6());
    addrs.dedup();
    let mut last = None;
    for addr in addrs {
        match TcpListener::bind(addr).await {
            Ok(l) => return Ok(l),
            Err(e) => last = Some(format!("listen tcp {addr}: {e}")),
        }
    }
    Err(ComponentError::new(format!(
        "{what}: cannot listen on {endpoint}: {}",
        last.unwrap_or_else(|| format!("no {transport} address for {host}"))
    )))
}

struct Running {
    stop: CancellationToken,
    tasks: Vec<JoinHandle<()>>,
}

/// The `otlp` receiver: OTLP over gRPC and/or HTTP into the pipelines of each signal.
pub struct OtlpReceiver {
    id: ComponentId,
    grpc: Option<Arc<GrpcServer>>,
    http: Option<Arc<HttpServer>>,
    gate: Gate,
    running: tokio::sync::Mutex<Option<Running>>,
    addrs: Mutex<(Option<SocketAddr>, Option<SocketAddr>)>,
}

impl OtlpReceiver {
    /// Builds the receiver without binding anything.
    pub fn new(cfg: &OtlpReceiverConfig, ctx: ReceiverContext) -> Result<Self, ComponentError> {
        let gate = Gate::default();
        let grpc = cfg
            .protocols
            .grpc
            .as_ref()
            .map(|g| GrpcServer::new(&ctx.id, g, Routes::new(&ctx, "grpc"), gate.clone()))
            .transpose()?
            .map(Arc::new);
        let http = cfg
            .protocols
            .http
            .as_ref()
            .map(|h| HttpServer::new(&ctx.id, h, Routes::new(&ctx, "http"), gate.clone()))
            .transpose()?
            .map(Arc::new);
        if grpc.is_none() && http.is_none() {
            return Err(ComponentError::new(
                "must specify at least one protocol when using the OTLP receiver",
            ));
        }
        Ok(OtlpReceiver {
            id: ctx.id,
            grpc,
            http,
            gate,
            running: tokio::sync::Mutex::new(None),
            addrs: Mutex::new((None, None)),
        })
    }

    /// The address the gRPC server listens on, once started.
    pub fn grpc_addr(&self) -> Option<SocketAddr> {
        self.addrs.lock().unwrap_or_else(|e| e.into_inner()).0
    }

    /// The address the HTTP server listens on, once started.
    pub fn http_addr(&self) -> Option<SocketAddr> {
        self.addrs.lock().unwrap_or_else(|e| e.into_inner()).1
    }
}

#[async_trait]
impl Lifecycle for OtlpReceiver {
    async fn start(&self) -> Result<(), ComponentError> {
        let mut running = self.running.lock().await;
        if running.is_some() {
            return Err(ComponentError::new(format!(
                "receiver {} is already started",
                self.id
            )));
        }
        // Bind (and load certificates) for both transports before serving either, so a failure
        // leaves nothing behind.
        let grpc = match &self.grpc {
            Some(g) => Some(g.bind().await?),
            None => None,
        };
        let http = match &self.http {
            Some(h) => Some(h.bind().await?),
            None => None,
        };
        let stop = CancellationToken::new();
        let mut tasks = Vec::new();
        let mut addrs = (None, None);
        self.gate.open();
        if let (Some(server), Some(bound)) = (&self.grpc, grpc) {
            addrs.0 = Some(bound.local_addr());
            tasks.push(server.serve(bound, stop.clone())?);
        }
        if let (Some(server), Some(bound)) = (&self.http, http) {
            addrs.1 = Some(bound.local_addr());
            tasks.push(server.clone().serve(bound, stop.clone()));
        }
        *self.addrs.lock().unwrap_or_else(|e| e.into_inner()) = addrs;
        *running = Some(Running { stop, tasks });
        Ok(())
    }

    async fn shutdown(&self) -> Result<(), ComponentError> {
        let Some(run) = self.running.lock().await.take() else {
            return Ok(());
        };
        let deadline = tokio::time::Instant::now() + SHUTDOWN_GRACE;
        // Stop accepting connections, ask open ones to finish, refuse requests not yet admitted.
        run.stop.cancel();
        self.gate.close();
        if tokio::time::timeout_at(deadline, self.gate.drained())
            .await
            .is_err()
        {
            tracing::warn!(
                receiver = %self.id,
                in_flight = self.gate.in_flight(),
                "requests still in flight after {SHUTDOWN_GRACE:?}; abandoning them"
            );
        }
        for mut task in run.tasks {
            if tokio::time::timeout_at(deadline, &mut task).await.is_err() {
                task.abort();
            }
        }
        *self.addrs.lock().unwrap_or_else(|e| e.into_inner()) = (None, None);
        Ok(())
    }
}
