//! Builds the running pipelines from a validated [`Config`] and drives their lifecycle.
//!
//! Exporters are built first (one per id and signal, shared by every pipeline naming them), then
//! each pipeline's processors from the tail back to the head, then receivers (one per id, shared
//! by every pipeline of every signal naming them). Start runs exporters -> processors ->
//! receivers; shutdown runs the other way so each stage drains into a live one.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use async_trait::async_trait;

use crate::component::{
    ComponentError, ComponentId, ConsumeError, Consumer, Exporter, ExporterContext, PipelineId,
    Processor, ProcessorContext, Receiver, ReceiverContext,
};
use crate::config::Config;
use crate::payload::{Payload, Signal};
use crate::telemetry::Telemetry;

/// Sends each payload to every consumer. Payload clones share their data; consumers that change
/// it copy on write.
pub struct Fanout {
    consumers: Vec<Arc<dyn Consumer>>,
}

impl Fanout {
    pub fn wrap(mut consumers: Vec<Arc<dyn Consumer>>) -> Arc<dyn Consumer> {
        if consumers.len() == 1 {
            consumers.remove(0)
        } else {
            Arc::new(Fanout { consumers })
        }
    }
}

#[async_trait]
impl Consumer for Fanout {
    async fn consume(&self, payload: Payload) -> Result<(), ConsumeError> {
        let n = self.consumers.len();
        let mut futs = Vec::with_capacity(n);
        let mut payload = Some(payload);
        for (i, c) in self.consumers.iter().enumerate() {
            let p = if i + 1 == n {
                payload.take()
            } else {
                payload.clone()
            };
            if let Some(p) = p {
                futs.push(c.consume(p));
            }
        }
        let mut first_err = None;
        for r in futures::future::join_all(futs).await {
            if let Err(e) = r {
                // A retryable error wins: the sender should try again.
                match (&first_err, &e) {
                    (None, _) | (Some(ConsumeError::Permanent(_)), ConsumeError::Retryable(_)) => {
                        first_err = Some(e)
                    }
                    _ => {}
                }
            }
        }
        first_err.map_or(Ok(()), Err)
    }
}

/// A pipeline's processors, head first.
type ProcessorChain = Vec<(ComponentId, Arc<dyn Processor>)>;

/// The built graph.
pub struct Service {
    receivers: Vec<(ComponentId, Arc<dyn Receiver>)>,
    processors: Vec<(PipelineId, ProcessorChain)>,
    exporters: Vec<((ComponentId, Signal), Arc<dyn Exporter>)>,
}

fn build_err(what: impl std::fmt::Display, e: ComponentError) -> ComponentError {
    ComponentError(format!("failed to build {what}: {e}"))
}

impl Service {
    /// Builds every component without starting anything.
    pub fn build(cfg: &Config, telemetry: &Telemetry) -> Result<Service, ComponentError> {
        let mut exporters: BTreeMap<(ComponentId, Signal), Arc<dyn Exporter>> = BTreeMap::new();
        for (pid, p) in &cfg.pipelines {
            for eid in &p.exporters {
                let key = (eid.clone(), pid.signal);
                if exporters.contains_key(&key) {
                    continue;
                }
                let (_, ecfg) = &cfg.exporters[eid];
                let e = ecfg
                    .build(ExporterContext {
                        id: eid.clone(),
                        signal: pid.signal,
                        telemetry: telemetry.clone(),
                    })
                    .map_err(|e| build_err(format_args!("exporter {eid:?} for {pid}"), e))?;
                exporters.insert(key, e);
            }
        }

        let mut heads: BTreeMap<PipelineId, Arc<dyn Consumer>> = BTreeMap::new();
        let mut processors = Vec::new();
        for (pid, p) in &cfg.pipelines {
            let outs: Vec<Arc<dyn Consumer>> = p
                .exporters
                .iter()
                .map(|eid| exporters[&(eid.clone(), pid.signal)].clone() as Arc<dyn Consumer>)
                .collect();
            let mut next = Fanout::wrap(outs);
            let mut built = Vec::new();
            for prid in p.processors.iter().rev() {
                let (_, pcfg) = &cfg.processors[prid];
                let proc = pcfg
                    .build(ProcessorContext {
                        id: prid.clone(),
                        pipeline: pid.clone(),
                        next: next.clone(),
                        telemetry: telemetry.clone(),
                    })
                    .map_err(|e| build_err(format_args!("processor {prid:?} in {pid}"), e))?;
                next = proc.clone() as Arc<dyn Consumer>;
                built.push((prid.clone(), proc));
            }
            built.reverse();
            processors.push((pid.clone(), built));
            heads.insert(pid.clone(), next);
        }

        let mut receivers = Vec::new();
        for (rid, (_, rcfg)) in &cfg.receivers {
            let mut per_signal: HashMap<Signal, Vec<Arc<dyn Consumer>>> = HashMap::new();
            for (pid, p) in &cfg.pipelines {
                if p.receivers.contains(rid) {
                    per_signal
                        .entry(pid.signal)
                        .or_default()
                        .push(heads[pid].clone());
                }
            }
            if per_signal.is_empty() {
                continue;
            }
            let consumers = per_signal
                .into_iter()
                .map(|(s, v)| (s, Fanout::wrap(v)))
                .collect();
            let r = rcfg
                .build(ReceiverContext {
                    id: rid.clone(),
                    consumers,
                    telemetry: telemetry.clone(),
                })
                .map_err(|e| build_err(format_args!("receiver {rid:?}"), e))?;
            receivers.push((rid.clone(), r));
        }
        Ok(Service {
            receivers,
            processors,
            exporters: exporters.into_iter().collect(),
        })
    }

    /// Starts exporters, then processors (tail first), then receivers. On failure, whatever
    /// started is shut down again.
    pub async fn start(&self) -> Result<(), ComponentError> {
        let r = self.start_inner().await;
        if r.is_err() {
            self.shutdown().await;
        }
        r
    }

    async fn start_inner(&self) -> Result<(), ComponentError> {
        for ((id, signal), e) in &self.exporters {
            tracing::debug!(exporter = %id, %signal, "starting");
            e.start()
                .await
                .map_err(|e| ComponentError(format!("exporter {id:?} failed to start: {e}")))?;
        }
        for (pid, procs) in &self.processors {
            for (id, p) in procs.iter().rev() {
                p.start().await.map_err(|e| {
                    ComponentError(format!("processor {id:?} in {pid} failed to start: {e}"))
                })?;
            }
        }
        for (id, r) in &self.receivers {
            tracing::debug!(receiver = %id, "starting");
            r.start()
                .await
                .map_err(|e| ComponentError(format!("receiver {id:?} failed to start: {e}")))?;
        }
        Ok(())
    }

    /// Receivers first (no new data), then processors head to tail (each flushes into the
    /// still-running next stage), then exporters (drain their queues).
    pub async fn shutdown(&self) {
        for (id, r) in &self.receivers {
            if let Err(e) = r.shutdown().await {
                tracing::warn!(receiver = %id, error = %e, "shutdown failed");
            }
        }
        for (pid, procs) in &self.processors {
            for (id, p) in procs {
                if let Err(e) = p.shutdown().await {
                    tracing::warn!(processor = %id, pipeline = %pid, error = %e, "shutdown failed");
                }
            }
        }
        for ((id, signal), e) in &self.exporters {
            if let Err(e) = e.shutdown().await {
                tracing::warn!(exporter = %id, %signal, error = %e, "shutdown failed");
            }
        }
    }
}
