//! The part of an OTLP exporter that does not depend on the wire: the bounded sending queue,
//! `num_consumers` concurrent senders, retry, and a shutdown that drains for a bounded time and
//! accounts for every item it could not deliver.
//!
//! The stack, outermost first: queue (bounded, in batches) -> `num_consumers` workers (the
//! concurrency limit) -> [`Retrier`] (classifier + backoff, total cap, ends on shutdown) ->
//! per-attempt timeout -> [`Transport::send`].
//!
//! When the queue is full the batch is dropped at once, its items are counted in
//! `enqueue_failed`, and the caller gets [`ConsumeError::Retryable`] ("sending queue is full"),
//! as the reference does: a receiver directly upstream answers Unavailable / 503 so the client
//! can back off and resend. (With `sending_queue.blocking: true` the caller waits for room
//! instead.)
//!
//! Independently of the batch count, queued and in-flight data is bounded in bytes
//! (`sending_queue.max_size_mib`): past it the caller waits, so a backend slower than the input
//! makes the pipeline push back (receivers answer "unavailable") instead of filling memory.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use pipeline_core::telemetry::ExporterMetrics;
use pipeline_core::{ComponentError, ConsumeError, Consumer, Lifecycle, Payload};
use tokio::sync::{mpsc, OwnedSemaphorePermit, Semaphore};
use tokio::task::JoinSet;

use super::config::QueueConfig;
use super::retry::{Failed, GiveUp, Retrier, SendError};

/// A server's answer to a successful export: how many items it rejected anyway (OTLP partial
/// success) and why.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Accepted {
    pub rejected: u64,
    pub message: String,
}

/// The wire side of an exporter (gRPC or HTTP).
#[async_trait]
pub trait Transport: Send + Sync + 'static {
    /// A payload in the form it is sent, prepared once and reused by every retry.
    type Request: Send + Sync + 'static;

    /// Creates clients (reads certificates, sets up the lazy connection). Sends nothing and
    /// resolves no names.
    async fn start(&self) -> Result<(), ComponentError>;

    /// Turns a payload into a request. An error here is permanent for this payload.
    fn prepare(&self, payload: Payload) -> Result<Self::Request, SendError>;

    /// One attempt. The caller applies the per-attempt timeout.
    async fn send(&self, request: &Self::Request) -> Result<Accepted, SendError>;
}

struct Inner<T> {
    transport: T,
    retrier: Retrier,
    metrics: ExporterMetrics,
    /// Items that could not be delivered once shutdown began; reported in one warning.
    lost_at_shutdown: AtomicU64,
}

/// Counts a batch as failed if its send is abandoned midway (the worker was aborted at the end
/// of the drain period), so no item disappears without being counted.
struct InFlight<'a, T> {
    inner: &'a Inner<T>,
    items: u64,
    armed: bool,
}

impl<T> Drop for InFlight<'_, T> {
    fn drop(&mut self) {
        if self.armed {
            self.inner.metrics.send_failed.add(self.items);
            self.inner
                .lost_at_shutdown
                .fetch_add(self.items, Ordering::Relaxed);
        }
    }
}

impl<T: Transport> Inner<T> {
    fn shutting_down(&self) -> bool {
        self.retrier.stop.is_cancelled()
    }

    /// Sends one batch with retries and records the outcome in the exporter's metrics.
    async fn export(&self, payload: Payload) -> Result<(), Failed> {
        let items = payload.items() as u64;
        if items == 0 && payload.encoded_len() == 0 {
            return Ok(());
        }
        let mut guard = InFlight {
            inner: self,
            items,
            armed: true,
        };
        let result = match self.transport.prepare(payload) {
            Ok(req) => self.retrier.run(|| self.transport.send(&req)).await,
            Err(e) => Err(Failed {
                reason: GiveUp::Permanent,
                last: e,
                attempts: 0,
            }),
        };
        guard.armed = false;
        match result {
            Ok(accepted) => {
                let rejected = accepted.rejected.min(items);
                self.metrics.sent.add(items - rejected);
                if rejected > 0 || !accepted.message.is_empty() {
                    self.metrics.send_failed.add(rejected);
                    tracing::warn!(
                        exporter = %self.retrier.id,
                        rejected_items = rejected,
                        message = %accepted.message,
                        "Partial success response: the server rejected some items."
                    );
                }
                Ok(())
            }
            Err(failed) => {
                self.metrics.send_failed.add(items);
                if self.shutting_down() {
                    self.lost_at_shutdown.fetch_add(items, Ordering::Relaxed);
                    tracing::debug!(exporter = %self.retrier.id, items, error = %failed, "dropping data during shutdown");
                } else {
                    tracing::error!(
                        exporter = %self.retrier.id,
                        dropped_items = items,
                        error = %failed,
                        "Exporting failed. Dropping data."
                    );
                }
                Err(failed)
            }
        }
    }
}

/// An exporter over a [`Transport`]: queued (the default) or synchronous
/// (`sending_queue.enabled: false`, where `consume` returns the send's error to the caller).
pub struct QueuedExporter<T> {
    inner: Arc<Inner<T>>,
    queue: Option<Queue>,
    /// How long shutdown keeps draining before abandoning what is left.
    drain_timeout: Duration,
    started: AtomicBool,
    full_warning: RateLimit,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Refusal {
    Full,
    ShutDown,
}

impl Refusal {
    fn as_str(self) -> &'static str {
        match self {
            Refusal::Full => "sending queue is full",
            Refusal::ShutDown => "exporter is shut down",
        }
    }
}

/// Lets one "queue is full" warning through per second: under sustained overload every batch
/// is refused, and the counter, not the log, is the place to see how many.
#[derive(Default)]
struct RateLimit {
    last_secs: AtomicU64,
}

impl RateLimit {
    fn should_log(&self) -> bool {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        let last = self.last_secs.load(Ordering::Relaxed);
        now != last
            && self
                .last_secs
                .compare_exchange(last, now, Ordering::Relaxed, Ordering::Relaxed)
                .is_ok()
    }
}

/// A queued batch with its share of the byte budget, released once the batch is done with.
type Queued = (Payload, Option<OwnedSemaphorePermit>);

/// Byte budget granularity: permits are KiB so large budgets fit a semaphore's count.
const KIB: usize = 1024;

struct Queue {
    tx: mpsc::Sender<Queued>,
    rx: Arc<tokio::sync::Mutex<mpsc::Receiver<Queued>>>,
    budget: Option<Arc<Semaphore>>,
    budget_kib: u32,
    num_consumers: usize,
    blocking: bool,
    workers: Mutex<JoinSet<()>>,
}

/// How long shutdown keeps draining beyond one attempt's timeout.
const DRAIN_GRACE: Duration = Duration::from_secs(5);

impl<T: Transport> QueuedExporter<T> {
    /// The stack every OTLP exporter shares (queue, workers, retry, drain at shutdown) around
    /// `transport`, configured from the exporter's common settings.
    pub fn for_exporter(
        transport: T,
        ctx: &pipeline_core::ExporterContext,
        retry: &super::config::RetryConfig,
        timeout: Duration,
        queue: &QueueConfig,
    ) -> QueuedExporter<T> {
        let retrier = Retrier {
            cfg: retry.clone(),
            timeout,
            stop: tokio_util::sync::CancellationToken::new(),
            id: ctx.id.to_string(),
        };
        let metrics = ExporterMetrics::new(&ctx.telemetry, &ctx.id, ctx.signal);
        QueuedExporter::new(transport, retrier, queue, metrics, timeout + DRAIN_GRACE)
    }

    /// No side effects: the workers start in `start`.
    pub fn new(
        transport: T,
        retrier: Retrier,
        queue: &QueueConfig,
        metrics: ExporterMetrics,
        drain_timeout: Duration,
    ) -> QueuedExporter<T> {
        let queue = queue.enabled.then(|| {
            let (tx, rx) = mpsc::channel(queue.queue_size);
            metrics.queue_capacity.set(queue.queue_size as i64);
            let budget_kib = u32::try_from(queue.max_size_mib.saturating_mul(1024))
                .unwrap_or(u32::MAX)
                .min(Semaphore::MAX_PERMITS as u32);
            Queue {
                tx,
                rx: Arc::new(tokio::sync::Mutex::new(rx)),
                budget: (budget_kib > 0).then(|| Arc::new(Semaphore::new(budget_kib as usize))),
                budget_kib,
                num_consumers: queue.num_consumers,
                blocking: queue.blocking,
                workers: Mutex::new(JoinSet::new()),
            }
        });
        QueuedExporter {
            inner: Arc::new(Inner {
                transport,
                retrier,
                metrics,
                lost_at_shutdown: AtomicU64::new(0),
            }),
            queue,
            drain_timeout,
            started: AtomicBool::new(false),
            full_warning: RateLimit::default(),
        }
    }

    pub fn transport(&self) -> &T {
        &self.inner.transport
    }

    fn refuse(&self, items: u64, msg: &str) -> ConsumeError {
        self.inner.metrics.enqueue_failed.add(items);
        ConsumeError::Retryable(format!("{}: {msg}", self.inner.retrier.id))
    }
}

async fn worker<T: Transport>(
    inner: Arc<Inner<T>>,
    rx: Arc<tokio::sync::Mutex<mpsc::Receiver<Queued>>>,
) {
    loop {
        let next = {
            let mut rx = rx.lock().await;
            // Once shutdown begins the queue is closed: what is in it is still drained, nothing
            // new gets in, and `recv` ends with `None` when it is empty.
            tokio::select! {
                biased;
                p = rx.recv() => p,
                _ = inner.retrier.stop.cancelled() => {
                    rx.close();
                    rx.recv().await
                }
            }
        };
        let Some((payload, _budget)) = next else {
            break;
        };
        inner.metrics.queue_size.add(-1);
        let _ = inner.export(payload).await;
    }
}

#[async_trait]
impl<T: Transport> Lifecycle for QueuedExporter<T> {
    async fn start(&self) -> Result<(), ComponentError> {
        if self.started.swap(true, Ordering::SeqCst) {
            return Ok(());
        }
        self.inner.transport.start().await?;
        if let Some(q) = &self.queue {
            let mut workers = q.workers.lock().unwrap_or_else(|e| e.into_inner());
            for _ in 0..q.num_consumers {
                workers.spawn(worker(self.inner.clone(), q.rx.clone()));
            }
        }
        Ok(())
    }

    async fn shutdown(&self) -> Result<(), ComponentError> {
        self.inner.retrier.stop.cancel();
        if let Some(q) = &self.queue {
            let mut workers =
                std::mem::take(&mut *q.workers.lock().unwrap_or_else(|e| e.into_inner()));
            let drain = async { while workers.join_next().await.is_some() {} };
            if tokio::time::timeout(self.drain_timeout, drain)
                .await
                .is_err()
            {
                // Aborted sends count their own items through their in-flight guard.
                workers.abort_all();
                while workers.join_next().await.is_some() {}
            }
            let mut rx = q.rx.lock().await;
            rx.close();
            let mut left = 0u64;
            while let Ok((p, _)) = rx.try_recv() {
                self.inner.metrics.queue_size.add(-1);
                left += p.items() as u64;
            }
            if left > 0 {
                self.inner.metrics.send_failed.add(left);
                self.inner
                    .lost_at_shutdown
                    .fetch_add(left, Ordering::Relaxed);
            }
        }
        let lost = self.inner.lost_at_shutdown.swap(0, Ordering::Relaxed);
        if lost > 0 {
            tracing::warn!(
                exporter = %self.inner.retrier.id,
                lost_items = lost,
                "{lost} items could not be delivered before shutdown and were dropped \
                 (counted in otelcol_exporter_send_failed_*)"
            );
        }
        Ok(())
    }
}

#[async_trait]
impl<T: Transport> Consumer for QueuedExporter<T> {
    async fn consume(&self, payload: Payload) -> Result<(), ConsumeError> {
        let items = payload.items() as u64;
        let Some(q) = &self.queue else {
            if self.inner.shutting_down() {
                return Err(self.refuse(items, Refusal::ShutDown.as_str()));
            }
            return self.inner.export(payload).await.map_err(|f| {
                let msg = format!("{}: {f}", self.inner.retrier.id);
                match f.reason {
                    GiveUp::Permanent => ConsumeError::Permanent(msg),
                    GiveUp::Exhausted | GiveUp::Shutdown => ConsumeError::Retryable(msg),
                }
            });
        };
        if self.inner.shutting_down() {
            return Err(self.refuse(items, Refusal::ShutDown.as_str()));
        }
        let budget = match &q.budget {
            Some(sem) => {
                // Charged twice its size: sending makes a contiguous (and maybe compressed)
                // copy of the batch, which lives as long as the batch itself. A batch larger
                // than the whole budget still goes through, alone.
                let kib = (2 * payload.encoded_len())
                    .div_ceil(KIB)
                    .clamp(1, q.budget_kib as usize);
                tokio::select! {
                    p = sem.clone().acquire_many_owned(kib as u32) => p.ok(),
                    _ = self.inner.retrier.stop.cancelled() => None,
                }
                .ok_or_else(|| self.refuse(items, Refusal::ShutDown.as_str()))
                .map(Some)?
            }
            None => None,
        };
        let permit = if q.blocking {
            tokio::select! {
                p = q.tx.reserve() => p.map_err(|_| Refusal::ShutDown),
                _ = self.inner.retrier.stop.cancelled() => Err(Refusal::ShutDown),
            }
        } else {
            q.tx.try_reserve().map_err(|e| match e {
                mpsc::error::TrySendError::Full(()) => Refusal::Full,
                mpsc::error::TrySendError::Closed(()) => Refusal::ShutDown,
            })
        };
        match permit {
            Ok(permit) => {
                // Counted before the send so a worker's decrement never comes first.
                self.inner.metrics.queue_size.add(1);
                permit.send((payload, budget));
                Ok(())
            }
            Err(r) => {
                if r == Refusal::Full && self.full_warning.should_log() {
                    tracing::warn!(
                        exporter = %self.inner.retrier.id,
                        dropped_items = items,
                        "Sending queue is full; dropping data (counted in otelcol_exporter_enqueue_failed_*)."
                    );
                }
                Err(self.refuse(items, r.as_str()))
            }
        }
    }
}
