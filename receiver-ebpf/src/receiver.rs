//! The `ebpf` receiver component: loads the probes, runs discovery, and turns kernel events into
//! spans, metrics and printer lines.
//!
//! Threads: the probes' drain thread runs the hot path (decode -> HTTP tracking -> span linking)
//! and hands finished payloads to a bounded channel; a discovery thread owns /proc scanning and
//! the kernel selection maps; a tokio task forwards payloads into the pipeline. Nothing blocks
//! the drain thread: a full channel drops the payload and counts it.

use std::collections::HashSet;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc as std_mpsc, Arc, Mutex};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use pipeline_core::telemetry::{Counter, Gauge, ReceiverMetrics};
use pipeline_core::{
    parse_component, ComponentError, ComponentId, ConfigError, Consumer, Lifecycle, Payload,
    Receiver, ReceiverConfig, ReceiverContext, ReceiverFactory, Signal, Telemetry,
};
use tokio::sync::mpsc;

use crate::config::{EbpfConfig, TracePrinter};
use crate::discovery::{Discovery, DiscoveryDiff, DiscoveryOptions, Selection, Shortcuts};
use crate::event::{DecodeError, EventView};
use crate::hot::{HotPath, Seen};
use crate::http::{FastHash, HttpStats};
use crate::loader::{EventSource, ProbeOptions, Probes, RawEventHandler};
use crate::printer::{PrintMode, Printer};
use crate::spans::{self, HostInfo, ProcessInfo, Tracer, TracerConfig};

/// OBI's environment variable for the printer.
pub const ENV_TRACE_PRINTER: &str = "OTEL_EBPF_TRACE_PRINTER";

pub const FACTORY: ReceiverFactory = ReceiverFactory {
    type_name: "ebpf",
    signals: &[Signal::Traces, Signal::Metrics],
    parse: parse_config,
};

fn parse_config(v: &serde_yaml::Value, path: &str) -> Result<Box<dyn ReceiverConfig>, ConfigError> {
    let cfg: EbpfConfig = parse_component(v, path)?;
    let env = |k: &str| std::env::var(k).ok();
    let printer = match env(ENV_TRACE_PRINTER) {
        Some(v) => TracePrinter::parse(&v).ok_or_else(|| {
            ConfigError::new(
                path,
                format!("{ENV_TRACE_PRINTER}={v:?}: expected disabled, text, counter, json or json_indent"),
            )
        })?,
        None => cfg.trace_printer.unwrap_or_default(),
    };
    let shortcuts = Shortcuts {
        open_ports: cfg.open_ports.clone(),
        exe_path: None,
    };
    let selection =
        Selection::new(&cfg.discovery, &shortcuts, env).map_err(|e| ConfigError::new(path, e))?;
    if selection.is_empty() {
        return Err(ConfigError::new(
            path,
            "nothing to instrument: set open_ports, discovery.instrument or OTEL_EBPF_OPEN_PORT",
        ));
    }
    Ok(Box::new(Parsed {
        cfg,
        selection,
        printer,
    }))
}

struct Parsed {
    cfg: EbpfConfig,
    selection: Selection,
    printer: TracePrinter,
}

impl ReceiverConfig for Parsed {
    fn build(&self, ctx: ReceiverContext) -> Result<Arc<dyn Receiver>, ComponentError> {
        let t = &ctx.telemetry;
        let id = ctx.id.to_string();
        let l = [("receiver", id.as_str())];
        let stats = Stats {
            selected: t.gauge(
                "sonde_ebpf_selected_processes",
                "Processes the eBPF receiver instruments.",
                &l,
            ),
            kernel_selected: t.counter(
                "sonde_ebpf_kernel_selected_syscalls_total",
                "Socket data calls (read, write, send, recv... on sockets) of selected processes seen by the kernel programs.",
                &l,
            ),
            kernel_events: t.counter(
                "sonde_ebpf_events_total",
                "Events the kernel programs submitted to the ring buffer.",
                &l,
            ),
            lost: t.counter(
                "sonde_ebpf_events_lost_total",
                "Events dropped in the kernel because the ring buffer was full.",
                &l,
            ),
            read: t.counter(
                "sonde_ebpf_events_read_total",
                "Events read from the ring buffer.",
                &l,
            ),
            non_http: t.counter(
                "sonde_ebpf_non_http_connections_total",
                "Connections of selected processes that did not carry HTTP/1.x (ignored).",
                &l,
            ),
            parse_errors: t.counter(
                "sonde_ebpf_http_parse_errors_total",
                "Bytes on HTTP connections that should have started a message and did not.",
                &l,
            ),
            requests_dropped: t.counter(
                "sonde_ebpf_http_requests_dropped_total",
                "Requests seen that became no span (connection expired or evicted, pairing \
                 uncertain, start line unreadable).",
                &l,
            ),
            bad_records: t.counter(
                "sonde_ebpf_bad_records_total",
                "Ring buffer records that did not decode (skipped).",
                &l,
            ),
            spans: t.counter(
                "sonde_ebpf_spans_emitted_total",
                "Spans built from captured requests.",
                &l,
            ),
            dropped: t.counter(
                "sonde_ebpf_payloads_dropped_items_total",
                "Spans or points dropped because the pipeline was not keeping up.",
                &l,
            ),
        };
        Ok(Arc::new(EbpfReceiver {
            id: ctx.id.clone(),
            cfg: self.cfg.clone(),
            selection: self.selection.clone(),
            printer: self.printer,
            traces: ctx.consumers.get(&Signal::Traces).cloned(),
            metrics: ctx.consumers.get(&Signal::Metrics).cloned(),
            telemetry: ctx.telemetry.clone(),
            stats,
            running: Mutex::new(None),
        }))
    }
}

#[derive(Clone)]
struct Stats {
    selected: Gauge,
    kernel_selected: Counter,
    kernel_events: Counter,
    lost: Counter,
    read: Counter,
    non_http: Counter,
    parse_errors: Counter,
    requests_dropped: Counter,
    bad_records: Counter,
    spans: Counter,
    dropped: Counter,
}

pub struct EbpfReceiver {
    id: ComponentId,
    cfg: EbpfConfig,
    selection: Selection,
    printer: TracePrinter,
    traces: Option<Arc<dyn Consumer>>,
    metrics: Option<Arc<dyn Consumer>>,
    telemetry: Telemetry,
    stats: Stats,
    running: Mutex<Option<Running>>,
}

struct Running {
    source: EventSource,
    stop: Arc<AtomicBool>,
    discovery: std::thread::JoinHandle<()>,
    forwarders: Vec<tokio::task::JoinHandle<()>>,
}

fn print_mode(p: TracePrinter) -> PrintMode {
    match p {
        TracePrinter::Disabled => PrintMode::Disabled,
        TracePrinter::Text => PrintMode::Text,
        TracePrinter::Counter => PrintMode::Counter,
        TracePrinter::Json => PrintMode::Json,
        TracePrinter::JsonIndent => PrintMode::JsonIndent,
    }
}

/// Forwards payloads from the drain thread into the pipeline.
fn forwarder(
    id: String,
    consumer: Arc<dyn Consumer>,
    mut rx: mpsc::Receiver<Payload>,
    metrics: ReceiverMetrics,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        while let Some(p) = rx.recv().await {
            let n = p.items() as u64;
            match consumer.consume(p).await {
                Ok(()) => metrics.accepted.add(n),
                Err(e) => {
                    metrics.refused.add(n);
                    tracing::warn!(receiver = %id, items = n, error = %e, "pipeline refused data");
                }
            }
        }
    })
}

#[async_trait]
impl Lifecycle for EbpfReceiver {
    async fn start(&self) -> Result<(), ComponentError> {
        let mut probes = Probes::load(ProbeOptions {
            payload_size: self.cfg.payload_size,
            ring_buffer_bytes: self.cfg.ring_buffer_size_kib.saturating_mul(1024),
            self_pid: std::process::id(),
            hooks: self.cfg.kernel_hooks,
        })
        .map_err(|e| ComponentError::new(format!("receiver {}: {e}", self.id)))?;
        tracing::info!(
            receiver = %self.id,
            kernel_hooks = probes.options().hooks.as_str(),
            "eBPF programs attached"
        );

        let mut forwarders = Vec::new();
        let mut channel = |signal: Signal, consumer: &Option<Arc<dyn Consumer>>| {
            consumer.as_ref().map(|c| {
                let (tx, rx) = mpsc::channel(64);
                let m = ReceiverMetrics::new(&self.telemetry, &self.id, "ebpf", signal);
                forwarders.push(forwarder(self.id.to_string(), c.clone(), rx, m));
                tx
            })
        };
        let traces_tx = channel(Signal::Traces, &self.traces);
        let metrics_tx = channel(Signal::Metrics, &self.metrics);

        let (hint_tx, hint_rx) = std_mpsc::channel::<Hint>();
        let (proc_tx, proc_rx) = std_mpsc::channel::<ProcessUpdate>();
        let mut tracer = Tracer::new(TracerConfig {
            host: HostInfo::detect(),
            ..TracerConfig::default()
        });
        tracer.set_clock_offset(spans::boot_to_wall_offset_ns());
        let handler = Handler {
            hot: HotPath::new(tracer, Printer::new(print_mode(self.printer))),
            traces_tx,
            metrics_tx,
            hint_tx: hint_tx.clone(),
            proc_rx,
            known: HashSet::default(),
            hinted: HashSet::default(),
            stats: self.stats.clone(),
            metrics_every: self.cfg.metrics_interval,
            last_metrics: Instant::now(),
            last_expire: Instant::now(),
            last_flush: Instant::now(),
            http_seen: HttpStats::default(),
        };
        let source = probes
            .spawn_raw_event_source(self.cfg.drain_interval, handler)
            .map_err(|e| ComponentError::new(format!("receiver {}: {e}", self.id)))?;
        let probes = Arc::new(probes);

        let stop = Arc::new(AtomicBool::new(false));
        let discovery = Discovery::new(self.selection.clone(), DiscoveryOptions::live());
        let worker = DiscoveryWorker {
            discovery,
            probes,
            hints: hint_rx,
            rechecks: Vec::new(),
            updates: proc_tx,
            stop: stop.clone(),
            stats: self.stats.clone(),
            last_counters: Default::default(),
        };
        let discovery = std::thread::Builder::new()
            .name("sonde-discovery".into())
            .spawn(move || worker.run())
            .map_err(|e| ComponentError::new(format!("cannot start discovery: {e}")))?;
        *self.running.lock().unwrap_or_else(|e| e.into_inner()) = Some(Running {
            source,
            stop,
            discovery,
            forwarders,
        });
        Ok(())
    }

    async fn shutdown(&self) -> Result<(), ComponentError> {
        let running = self
            .running
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take();
        if let Some(r) = running {
            r.stop.store(true, Ordering::Relaxed);
            // Stopping the source drains what is left and drops the handler (and its senders),
            // which ends the forwarders once they have handed everything on.
            tokio::task::spawn_blocking(move || {
                r.source.stop();
                let _ = r.discovery.join();
            })
            .await
            .map_err(|e| ComponentError::new(format!("stopping the eBPF receiver: {e}")))?;
            for f in r.forwarders {
                let _ = f.await;
            }
        }
        Ok(())
    }
}

enum ProcessUpdate {
    Selected(Box<ProcessInfo>),
    Unselected(u32),
}

/// The hot path, on the drain thread.
struct Handler {
    hot: HotPath,
    traces_tx: Option<mpsc::Sender<Payload>>,
    metrics_tx: Option<mpsc::Sender<Payload>>,
    hint_tx: std_mpsc::Sender<Hint>,
    proc_rx: std_mpsc::Receiver<ProcessUpdate>,
    /// Pids discovery has described.
    known: HashSet<u32, FastHash>,
    /// Pids seen in events before discovery described them (traced through a cgroup).
    hinted: HashSet<u32, FastHash>,
    stats: Stats,
    metrics_every: Duration,
    last_metrics: Instant,
    /// Idle connections are expired about once a second, not on every pass.
    last_expire: Instant,
    /// When spans were last linked, built and sent (see [`SPAN_FLUSH_INTERVAL`]).
    last_flush: Instant,
    /// The tracker's counters as last mirrored into internal telemetry.
    http_seen: HttpStats,
}

/// How far behind the wall clock the linker's clock is kept (see `batch_done`).
const LINK_CLOCK_MARGIN_NS: u64 = 10_000_000;

/// Spans are linked, built and handed to the pipeline at most this often, not after every
/// drain pass: each hand-over wakes the pipeline's threads, and on a busy machine those
/// wake-ups cost more than the spans themselves (measured with nginx under wrk on 2 cores:
/// Sonde's CPU per request fell by a quarter at saturation and by half at 15k req/s). Spans wait
/// at most this long longer; the pipeline's batch processor holds them for longer anyway.
const SPAN_FLUSH_INTERVAL: Duration = Duration::from_millis(50);

impl Handler {
    fn send(&self, tx: &Option<mpsc::Sender<Payload>>, p: Payload) {
        if let Some(tx) = tx {
            let n = p.items() as u64;
            if tx.try_send(p).is_err() {
                self.stats.dropped.add(n);
            }
        }
    }

    fn apply_process_updates(&mut self) {
        while let Ok(u) = self.proc_rx.try_recv() {
            match u {
                ProcessUpdate::Selected(info) => {
                    self.known.insert(info.pid);
                    self.hinted.remove(&info.pid);
                    self.hot.tracer.upsert_process(*info);
                }
                ProcessUpdate::Unselected(pid) => {
                    self.known.remove(&pid);
                    self.hot.tracer.remove_process(pid);
                    self.hot.metrics.remove_process(pid);
                }
            }
        }
    }
}

impl RawEventHandler for Handler {
    fn record(&mut self, record: &EventView<'_>) -> Result<(), DecodeError> {
        self.stats.read.add(1);
        let seen = self
            .hot
            .record(record)
            .inspect_err(|_| self.stats.bad_records.add(1))?;
        match seen {
            Seen::Hint { pid } => {
                let _ = self.hint_tx.send(Hint { pid, listen: false });
            }
            Seen::Listen { pid } => {
                let _ = self.hint_tx.send(Hint { pid, listen: true });
            }
            Seen::Data { pid } => {
                if !self.known.contains(&pid) && self.hinted.insert(pid) {
                    let _ = self.hint_tx.send(Hint { pid, listen: false });
                }
            }
            Seen::Other => {}
        }
        Ok(())
    }

    fn batch_done(&mut self) {
        self.apply_process_updates();
        let now = spans::boot_time_ns();
        if self.last_expire.elapsed() >= Duration::from_secs(1) {
            self.last_expire = Instant::now();
            self.hot.expire(now);
        }
        if self.last_flush.elapsed() >= SPAN_FLUSH_INTERVAL {
            self.last_flush = Instant::now();
            // Events stamped shortly before `now` may still sit in the ring buffer (the drain
            // pass is bounded); the linker's grace period covers this margin.
            let flushed = self.hot.flush(
                now.saturating_sub(LINK_CLOCK_MARGIN_NS),
                self.traces_tx.is_some(),
            );
            if flushed.spans > 0 {
                self.stats.spans.add(flushed.spans as u64);
            }
            if let Some(p) = flushed.traces {
                self.send(&self.traces_tx, p);
            }
        }
        let now_http = self.hot.http.stats();
        let seen = std::mem::replace(&mut self.http_seen, now_http);
        let delta = |now: u64, then: u64| now.saturating_sub(then);
        self.stats.non_http.add(delta(
            now_http.non_http_connections,
            seen.non_http_connections,
        ));
        self.stats
            .parse_errors
            .add(delta(now_http.parse_errors, seen.parse_errors));
        self.stats
            .requests_dropped
            .add(delta(now_http.requests_dropped, seen.requests_dropped));
        if self.last_metrics.elapsed() >= self.metrics_every {
            self.last_metrics = Instant::now();
            if self.metrics_tx.is_some() {
                let now_unix = std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map_or(0, |d| d.as_nanos() as u64);
                if let Some(req) = self.hot.metrics.export(now_unix) {
                    let p = Payload::from_metrics(req);
                    self.send(&self.metrics_tx, p);
                }
            }
        }
    }
}

/// A process to examine now, from a kernel event.
#[derive(Debug, Clone, Copy)]
struct Hint {
    pid: u32,
    /// It started listening. With the socket-layer hooks the hint comes from the socket's move to
    /// TCP_LISTEN, just before the kernel makes the socket visible in /proc/net/tcp: a process
    /// examined that early may not show the port yet, so one that is not selected is examined
    /// once more [`LISTEN_RECHECK_AFTER`] later.
    listen: bool,
}

const LISTEN_RECHECK_AFTER: Duration = Duration::from_millis(50);

/// Owns /proc scanning and the kernel's selection maps, off the hot path.
struct DiscoveryWorker {
    discovery: Discovery,
    probes: Arc<Probes>,
    hints: std_mpsc::Receiver<Hint>,
    /// Listening processes not selected when examined, to look at once more (see [`Hint`]).
    rechecks: Vec<(Instant, u32)>,
    updates: std_mpsc::Sender<ProcessUpdate>,
    stop: Arc<AtomicBool>,
    stats: Stats,
    last_counters: crate::loader::Counters,
}

impl DiscoveryWorker {
    fn run(mut self) {
        while !self.stop.load(Ordering::Relaxed) {
            let now = Instant::now();
            let wait = self
                .rechecks
                .iter()
                .map(|(at, _)| at.saturating_duration_since(now))
                .min()
                .unwrap_or(Duration::from_millis(100))
                .min(Duration::from_millis(100));
            let mut hints = Vec::new();
            if let Ok(h) = self.hints.recv_timeout(wait) {
                hints.push(h);
                while let Ok(h) = self.hints.try_recv() {
                    hints.push(h);
                }
            }
            let now = Instant::now();
            let mut pids: Vec<u32> = hints.iter().map(|h| h.pid).collect();
            self.rechecks.retain(|&(at, pid)| {
                let due = at <= now;
                if due {
                    pids.push(pid);
                }
                !due
            });
            if !pids.is_empty() {
                pids.sort_unstable();
                pids.dedup();
                let diff = self.discovery.examine_many(&pids);
                self.apply(diff);
                self.unselect_forks_not_selected(&pids);
                for h in hints.iter().filter(|h| h.listen) {
                    // Bounded: a storm of listening processes costs one more look each at most.
                    if self.discovery.process(h.pid).is_none() && self.rechecks.len() < 1024 {
                        self.rechecks.push((now + LISTEN_RECHECK_AFTER, h.pid));
                    }
                }
            }
            let diff = self.discovery.tick(Instant::now());
            self.apply(diff);
            self.stats
                .selected
                .set(self.discovery.selected_count() as i64);
            self.poll_counters();
        }
    }

    /// The kernel selects a selected process's forked children by itself; one that discovery
    /// does not select (it exec'd something else, or an exclusion matches) is unselected here.
    fn unselect_forks_not_selected(&self, hinted: &[u32]) {
        for &pid in hinted {
            if self.discovery.process(pid).is_none() && self.probes.kernel_selects_pid(pid) {
                tracing::debug!(
                    pid,
                    "unselecting a forked process discovery does not select"
                );
                let _ = self.probes.unselect_pid(pid);
            }
        }
    }

    fn apply(&mut self, diff: DiscoveryDiff) {
        if diff.is_empty() {
            return;
        }
        // In the order that never lets an excluded process be traced through its cgroup.
        for pid in &diff.deny_add {
            if let Err(e) = self.probes.deny_pid(*pid, true) {
                tracing::warn!(pid, error = %e, "cannot exclude process from its traced cgroup");
            }
        }
        for id in &diff.cgroups_add {
            if let Err(e) = self.probes.select_cgroup(*id) {
                tracing::warn!(cgroup_id = id, error = %e, "cannot select cgroup");
            }
        }
        for pid in &diff.pids_add {
            if let Err(e) = self.probes.select_pid(*pid) {
                tracing::warn!(pid, error = %e, "cannot select process");
            }
        }
        for pid in &diff.pids_remove {
            let _ = self.probes.unselect_pid(*pid);
        }
        for id in &diff.cgroups_remove {
            let _ = self.probes.unselect_cgroup(*id);
        }
        for pid in &diff.deny_remove {
            let _ = self.probes.deny_pid(*pid, false);
        }
        for p in &diff.selected {
            tracing::info!(
                pid = p.pid,
                cmd = %p.exe_path,
                service = %p.service_name(),
                cgroup = p.cgroup_path.as_deref().unwrap_or(""),
                "instrumenting process"
            );
            let _ = self
                .updates
                .send(ProcessUpdate::Selected(Box::new(ProcessInfo::from(p))));
        }
        for pid in &diff.unselected {
            let _ = self.updates.send(ProcessUpdate::Unselected(*pid));
        }
    }

    fn poll_counters(&mut self) {
        let Ok(c) = self.probes.counters() else {
            return;
        };
        let prev = self.last_counters;
        self.stats
            .kernel_selected
            .add(c.filtered_in.saturating_sub(prev.filtered_in));
        self.stats
            .kernel_events
            .add(c.events.saturating_sub(prev.events));
        self.stats.lost.add(c.lost.saturating_sub(prev.lost));
        self.last_counters = c;
    }
}
