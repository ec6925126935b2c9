//! `batch`: groups payloads until `send_batch_size` items or `timeout`, counted in items (spans,
//! data points, log records), not requests. Encoded payloads merge by concatenation and split on
//! the wire format, so batching never decodes.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use pipeline_core::telemetry::ProcessorMetrics;
use pipeline_core::{
    parse_component, ComponentError, ConsumeError, Consumer, Lifecycle, Payload, Processor,
    ProcessorConfig, ProcessorContext, ProcessorFactory, Signal, Validate,
};
use serde::Deserialize;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

pub const FACTORY: ProcessorFactory = ProcessorFactory {
    type_name: "batch",
    signals: &[Signal::Traces, Signal::Metrics, Signal::Logs],
    parse: |v, path| Ok(Box::new(parse_component::<BatchConfig>(v, path)?)),
};

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct BatchConfig {
    /// Items that trigger a send.
    pub send_batch_size: usize,
    /// Upper bound on items per send; 0 = no bound.
    pub send_batch_max_size: usize,
    #[serde(with = "pipeline_core::duration")]
    pub timeout: Duration,
    /// Accepted for compatibility; batching by request metadata is not supported.
    pub metadata_keys: Vec<String>,
    pub metadata_cardinality_limit: u32,
}

impl Default for BatchConfig {
    fn default() -> Self {
        BatchConfig {
            send_batch_size: 8192,
            send_batch_max_size: 0,
            timeout: Duration::from_millis(200),
            metadata_keys: Vec::new(),
            metadata_cardinality_limit: 1000,
        }
    }
}

impl Validate for BatchConfig {
    fn validate(&self) -> Result<(), String> {
        if self.send_batch_max_size > 0 && self.send_batch_max_size < self.send_batch_size {
            return Err(
                "send_batch_max_size must be greater or equal to send_batch_size".to_string(),
            );
        }
        if !self.metadata_keys.is_empty() {
            return Err("metadata_keys is not supported by Sonde's batch processor".to_string());
        }
        Ok(())
    }
}

/// Payloads waiting for the batch loop. Small: the loop drains it continuously, and a full
/// queue makes the receiver wait, which is the back-pressure we want.
const QUEUE_DEPTH: usize = 64;

/// How long a sender may wait for room before it is told to retry later. Short stalls are
/// absorbed; a pipeline that stays saturated answers "unavailable" rather than buffering.
const SATURATED_AFTER: Duration = Duration::from_secs(1);

impl ProcessorConfig for BatchConfig {
    fn build(&self, ctx: ProcessorContext) -> Result<Arc<dyn Processor>, ComponentError> {
        let metrics = ProcessorMetrics::new(
            &ctx.telemetry,
            &ctx.id,
            &ctx.pipeline.to_string(),
            ctx.pipeline.signal,
        );
        Ok(Arc::new(BatchProcessor {
            cfg: self.clone(),
            signal: ctx.pipeline.signal,
            next: ctx.next,
            metrics,
            state: Mutex::new(State::Idle),
        }))
    }
}

enum State {
    Idle,
    Running {
        tx: mpsc::Sender<Payload>,
        task: JoinHandle<()>,
    },
    Stopped,
}

pub struct BatchProcessor {
    cfg: BatchConfig,
    signal: Signal,
    next: Arc<dyn Consumer>,
    metrics: ProcessorMetrics,
    state: Mutex<State>,
}

impl BatchProcessor {
    fn sender(&self) -> Option<mpsc::Sender<Payload>> {
        match &*self.state.lock().unwrap_or_else(|e| e.into_inner()) {
            State::Running { tx, .. } => Some(tx.clone()),
            _ => None,
        }
    }
}

#[async_trait]
impl Consumer for BatchProcessor {
    async fn consume(&self, payload: Payload) -> Result<(), ConsumeError> {
        let n = payload.items() as u64;
        let Some(tx) = self.sender() else {
            self.metrics.refused.add(n);
            return Err(ConsumeError::Retryable(
                "batch processor is not running".to_string(),
            ));
        };
        match tx.send_timeout(payload, SATURATED_AFTER).await {
            Ok(()) => {
                self.metrics.incoming.add(n);
                Ok(())
            }
            Err(mpsc::error::SendTimeoutError::Timeout(_)) => {
                self.metrics.refused.add(n);
                Err(ConsumeError::Retryable(
                    "pipeline is saturated; retry later".to_string(),
                ))
            }
            Err(mpsc::error::SendTimeoutError::Closed(_)) => {
                self.metrics.refused.add(n);
                Err(ConsumeError::Retryable(
                    "batch processor is shutting down".to_string(),
                ))
            }
        }
    }
}

#[async_trait]
impl Lifecycle for BatchProcessor {
    async fn start(&self) -> Result<(), ComponentError> {
        let mut st = self.state.lock().unwrap_or_else(|e| e.into_inner());
        if !matches!(*st, State::Idle) {
            return Ok(());
        }
        let (tx, rx) = mpsc::channel(QUEUE_DEPTH);
        let batcher = Batcher {
            cfg: self.cfg.clone(),
            signal: self.signal,
            next: self.next.clone(),
            metrics: self.metrics.clone(),
        };
        let task = tokio::spawn(batcher.run(rx));
        *st = State::Running { tx, task };
        Ok(())
    }

    /// Closes the input and waits until everything buffered has been handed downstream.
    async fn shutdown(&self) -> Result<(), ComponentError> {
        let prev = std::mem::replace(
            &mut *self.state.lock().unwrap_or_else(|e| e.into_inner()),
            State::Stopped,
        );
        if let State::Running { tx, task } = prev {
            drop(tx);
            task.await
                .map_err(|e| ComponentError::new(format!("batch loop failed: {e}")))?;
        }
        Ok(())
    }
}

struct Batcher {
    cfg: BatchConfig,
    signal: Signal,
    next: Arc<dyn Consumer>,
    metrics: ProcessorMetrics,
}

impl Batcher {
    async fn run(self, mut rx: mpsc::Receiver<Payload>) {
        let mut pending = Payload::empty(self.signal);
        let mut deadline: Option<tokio::time::Instant> = None;
        loop {
            let msg = match deadline {
                Some(d) => tokio::select! {
                    m = rx.recv() => Some(m),
                    _ = tokio::time::sleep_until(d) => None,
                },
                None => Some(rx.recv().await),
            };
            match msg {
                Some(Some(p)) => {
                    if pending.items() == 0 {
                        deadline = Some(tokio::time::Instant::now() + self.cfg.timeout);
                    }
                    pending.append(p);
                    // Sending inline stops intake while a send is pending, which propagates
                    // back-pressure instead of buffering without bound.
                    while pending.items() >= self.cfg.send_batch_size {
                        self.send_some(&mut pending).await;
                    }
                    if pending.items() == 0 {
                        deadline = None;
                    }
                }
                Some(None) => {
                    while pending.items() > 0 {
                        self.send_some(&mut pending).await;
                    }
                    return;
                }
                None => {
                    while pending.items() > 0 {
                        self.send_some(&mut pending).await;
                    }
                    deadline = None;
                }
            }
        }
    }

    /// Sends one batch from the front of `pending` (at most `send_batch_max_size` items).
    async fn send_some(&self, pending: &mut Payload) {
        let batch = if self.cfg.send_batch_max_size > 0 {
            pending.split_front(self.cfg.send_batch_max_size)
        } else {
            std::mem::replace(pending, Payload::empty(self.signal))
        };
        let n = batch.items() as u64;
        if n == 0 {
            return;
        }
        match self.next.consume(batch).await {
            Ok(()) => self.metrics.outgoing.add(n),
            Err(e) => {
                // Exporters count what they drop; this is the only place the batch could
                // report it, as its senders were already answered.
                self.metrics.dropped.add(n);
                tracing::warn!(items = n, error = %e, "batch processor: downstream refused a batch");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use pipeline_core::otlp::tonic::collector::trace::v1::ExportTraceServiceRequest;
    use pipeline_core::otlp::tonic::trace::v1::{ResourceSpans, ScopeSpans, Span};
    use pipeline_core::{ComponentId, PipelineId, Telemetry};
    use prost::Message;

    #[derive(Default)]
    struct Collect(Mutex<Vec<usize>>);

    #[async_trait]
    impl Consumer for Collect {
        async fn consume(&self, p: Payload) -> Result<(), ConsumeError> {
            self.0.lock().unwrap().push(p.items());
            Ok(())
        }
    }

    fn payload(spans: usize) -> Payload {
        let req = ExportTraceServiceRequest {
            resource_spans: vec![ResourceSpans {
                scope_spans: vec![ScopeSpans {
                    spans: (0..spans)
                        .map(|i| Span {
                            name: format!("s{i}"),
                            ..Default::default()
                        })
                        .collect(),
                    ..Default::default()
                }],
                ..Default::default()
            }],
        };
        Payload::from_encoded(Signal::Traces, req.encode_to_vec().into()).unwrap()
    }

    fn build(cfg: BatchConfig, next: Arc<Collect>) -> Arc<dyn Processor> {
        cfg.build(ProcessorContext {
            id: ComponentId::parse("batch").unwrap(),
            pipeline: PipelineId::parse("traces").unwrap(),
            next,
            telemetry: Telemetry::default(),
        })
        .unwrap()
    }

    #[tokio::test]
    async fn batches_by_size_and_caps_at_max() {
        let sink = Arc::new(Collect::default());
        let p = build(
            BatchConfig {
                send_batch_size: 250,
                send_batch_max_size: 300,
                timeout: Duration::from_secs(60),
                ..Default::default()
            },
            sink.clone(),
        );
        p.start().await.unwrap();
        for _ in 0..7 {
            p.consume(payload(100)).await.unwrap();
        }
        p.shutdown().await.unwrap();
        let sizes = sink.0.lock().unwrap().clone();
        assert_eq!(sizes.iter().sum::<usize>(), 700);
        assert!(sizes.iter().all(|&s| s <= 300), "{sizes:?}");
        assert_eq!(sizes[0], 300);
    }

    #[tokio::test]
    async fn flushes_on_timeout() {
        let sink = Arc::new(Collect::default());
        let p = build(
            BatchConfig {
                timeout: Duration::from_millis(20),
                ..Default::default()
            },
            sink.clone(),
        );
        p.start().await.unwrap();
        p.consume(payload(3)).await.unwrap();
        tokio::time::sleep(Duration::from_millis(200)).await;
        assert_eq!(sink.0.lock().unwrap().clone(), vec![3]);
        p.shutdown().await.unwrap();
    }

    #[tokio::test]
    async fn lifecycle_without_start_and_refusal_after_shutdown() {
        let sink = Arc::new(Collect::default());
        let p = build(BatchConfig::default(), sink);
        p.shutdown().await.unwrap();
        let e = p.consume(payload(1)).await.unwrap_err();
        assert!(e.is_retryable());
    }

    #[test]
    fn config_validation() {
        let v: serde_yaml::Value =
            serde_yaml::from_str("send_batch_size: 10\nsend_batch_max_size: 5").unwrap();
        assert!((FACTORY.parse)(&v, "processors::batch").is_err());
        let v: serde_yaml::Value = serde_yaml::from_str("send_batch_sise: 10").unwrap();
        let e = (FACTORY.parse)(&v, "processors::batch").err().unwrap();
        assert!(
            e.to_string().contains("has invalid keys: send_batch_sise"),
            "{e}"
        );
    }
}
