//! The receiver's per-event work without its threads and channels: ring-buffer record ->
//! HTTP tracking -> span linking, and at the end of each drain pass spans -> printer, metrics
//! and one encoded OTLP payload. The receiver's drain thread runs it; `examples/hot_path.rs`
//! measures it on synthetic traffic.
//!
//! Data records, nearly all of the traffic, are decoded into one reused slot, so decoding
//! allocates nothing per event.

use std::io::Write as _;

use pipeline_core::Payload;

use crate::event::{abi, DecodeError, EventView};
use crate::http::{HttpConfig, HttpTracker};
use crate::metrics::{HttpMetrics, MetricsConfig};
use crate::model::{DataEvent, KernelEvent};
use crate::otlp_encode::TraceEncoder;
use crate::printer::Printer;
use crate::spans::{SpanRecord, Tracer};

/// What a record was, as far as the caller's bookkeeping goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Seen {
    /// Bytes on a connection of process `pid`.
    Data { pid: u32 },
    /// A discovery hint about `pid`: it exec'd, exited, or was forked by a selected process
    /// (and is selected in the kernel already: discovery describes or unselects it).
    Hint { pid: u32 },
    /// `pid` started listening on a TCP socket.
    Listen { pid: u32 },
    /// A connection opened or closed.
    Other,
}

/// What one end-of-pass flush produced.
#[derive(Default)]
pub struct Flushed {
    /// Spans completed and linked in this pass.
    pub spans: usize,
    /// Those spans as one OTLP payload, when asked for.
    pub traces: Option<Payload>,
}

pub struct HotPath {
    pub http: HttpTracker,
    pub tracer: Tracer,
    pub metrics: HttpMetrics,
    pub printer: Printer,
    encoder: TraceEncoder,
    /// Always `KernelEvent::Data`: the reused decode target.
    slot: KernelEvent,
    /// Span buffers handed back after use, so their capacity is reused.
    spans: Vec<SpanRecord>,
}

impl HotPath {
    pub fn new(tracer: Tracer, printer: Printer) -> HotPath {
        HotPath {
            http: HttpTracker::new(HttpConfig::default()),
            tracer,
            metrics: HttpMetrics::new(MetricsConfig::default()),
            printer,
            encoder: TraceEncoder::default(),
            slot: KernelEvent::Data(DataEvent::empty()),
            spans: Vec::new(),
        }
    }

    /// Decodes one ring-buffer record and feeds it to the HTTP tracker.
    pub fn record(&mut self, view: &EventView<'_>) -> Result<Seen, DecodeError> {
        let tracer = &mut self.tracer;
        if view.header.kind == abi::SONDE_EV_DATA {
            if let KernelEvent::Data(d) = &mut self.slot {
                view.decode_data_into(d)?;
            }
            self.http.on_event(&self.slot, &mut |o| tracer.push(o));
            return Ok(Seen::Data {
                pid: view.header.pid,
            });
        }
        let ev = view.to_kernel_event()?;
        match ev {
            KernelEvent::ProcessExit { pid } => {
                // Its sockets were closed by the kernel, without close syscalls.
                self.http.on_event(&ev, &mut |o| tracer.push(o));
                Ok(Seen::Hint { pid })
            }
            KernelEvent::Listen { pid } => Ok(Seen::Listen { pid }),
            KernelEvent::ProcessExec { pid } | KernelEvent::ProcessFork { pid, .. } => {
                Ok(Seen::Hint { pid })
            }
            _ => {
                self.http.on_event(&ev, &mut |o| tracer.push(o));
                Ok(Seen::Other)
            }
        }
    }

    /// Closes connections idle since before `now_boot_ns` minus the tracker's timeout.
    pub fn expire(&mut self, now_boot_ns: u64) {
        let tracer = &mut self.tracer;
        self.http.expire(now_boot_ns, &mut |o| tracer.push(o));
    }

    /// End of a drain pass: releases the spans linked up to `link_until_boot_ns`, prints them,
    /// records their metrics and, when `encode` is set, encodes them into one payload.
    pub fn flush(&mut self, link_until_boot_ns: u64, encode: bool) -> Flushed {
        self.tracer.advance(link_until_boot_ns);
        let mut spans = std::mem::take(&mut self.spans);
        self.tracer.take_spans_into(&mut spans);
        if spans.is_empty() {
            self.spans = spans;
            return Flushed::default();
        }
        if self.printer.enabled() {
            let stdout = std::io::stdout();
            let mut lock = stdout.lock();
            let _ = self.printer.print(&spans, &mut lock);
            let _ = lock.flush();
        }
        self.metrics.record_all(&spans);
        let out = Flushed {
            spans: spans.len(),
            traces: encode.then(|| self.encoder.payload(&spans)),
        };
        spans.clear();
        self.spans = spans;
        out
    }
}
