//! `memory_limiter`: refuses data with a retryable error while the process is above its soft
//! limit (`limit - spike_limit`), so receivers answer "unavailable" and senders back off instead
//! of the collector growing until it is killed. Memory is the process's resident set, sampled
//! every `check_interval` by a background task; the hot path reads one atomic flag.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use pipeline_core::telemetry::ProcessorMetrics;
use pipeline_core::{
    parse_component, ComponentError, ConsumeError, Consumer, Lifecycle, Payload, Processor,
    ProcessorConfig, ProcessorContext, ProcessorFactory, Signal, Validate,
};
use serde::Deserialize;
use tokio::task::JoinHandle;

pub const FACTORY: ProcessorFactory = ProcessorFactory {
    type_name: "memory_limiter",
    signals: &[Signal::Traces, Signal::Metrics, Signal::Logs],
    parse: |v, path| Ok(Box::new(parse_component::<MemoryLimiterConfig>(v, path)?)),
};

const MIB: u64 = 1024 * 1024;

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct MemoryLimiterConfig {
    #[serde(with = "pipeline_core::duration")]
    pub check_interval: Duration,
    pub limit_mib: u64,
    pub spike_limit_mib: u64,
    pub limit_percentage: u64,
    pub spike_limit_percentage: u64,
}

impl Default for MemoryLimiterConfig {
    fn default() -> Self {
        MemoryLimiterConfig {
            check_interval: Duration::ZERO,
            limit_mib: 0,
            spike_limit_mib: 0,
            limit_percentage: 0,
            spike_limit_percentage: 0,
        }
    }
}

impl Validate for MemoryLimiterConfig {
    fn validate(&self) -> Result<(), String> {
        if self.check_interval.is_zero() {
            return Err("'check_interval' must be greater than zero".into());
        }
        if self.limit_mib == 0 && self.limit_percentage == 0 {
            return Err("'limit_mib' or 'limit_percentage' must be greater than zero".into());
        }
        if self.limit_mib > 0 && self.spike_limit_mib >= self.limit_mib {
            return Err("'spike_limit_mib' must be smaller than 'limit_mib'".into());
        }
        if self.limit_percentage > 100 || self.spike_limit_percentage > 100 {
            return Err(
                "'limit_percentage' and 'spike_limit_percentage' must be at most 100".into(),
            );
        }
        if self.limit_percentage > 0 && self.spike_limit_percentage >= self.limit_percentage {
            return Err("'spike_limit_percentage' must be smaller than 'limit_percentage'".into());
        }
        Ok(())
    }
}

impl MemoryLimiterConfig {
    /// (hard limit, soft limit) in bytes. Percentages apply to the machine's total memory.
    fn limits(&self, total_memory: u64) -> (u64, u64) {
        let (limit, spike) = if self.limit_mib > 0 {
            let spike = if self.spike_limit_mib > 0 {
                self.spike_limit_mib
            } else {
                self.limit_mib / 5
            };
            (self.limit_mib * MIB, spike * MIB)
        } else {
            (
                total_memory / 100 * self.limit_percentage,
                total_memory / 100 * self.spike_limit_percentage,
            )
        };
        (limit, limit.saturating_sub(spike))
    }
}

impl ProcessorConfig for MemoryLimiterConfig {
    fn build(&self, ctx: ProcessorContext) -> Result<Arc<dyn Processor>, ComponentError> {
        let total = if self.limit_mib == 0 {
            total_memory_bytes().ok_or_else(|| {
                ComponentError::new("cannot read total memory for limit_percentage")
            })?
        } else {
            0
        };
        let (hard, soft) = self.limits(total);
        Ok(Arc::new(MemoryLimiter {
            shared: Arc::new(Shared {
                refusing: AtomicBool::new(false),
                last_rss: AtomicU64::new(0),
                soft,
                hard,
            }),
            interval: self.check_interval,
            next: ctx.next,
            metrics: ProcessorMetrics::new(
                &ctx.telemetry,
                &ctx.id,
                &ctx.pipeline.to_string(),
                ctx.pipeline.signal,
            ),
            task: Mutex::new(None),
            sampler: rss_bytes,
        }))
    }
}

struct Shared {
    refusing: AtomicBool,
    last_rss: AtomicU64,
    soft: u64,
    hard: u64,
}

impl Shared {
    fn check(&self, rss: u64) {
        self.last_rss.store(rss, Ordering::Relaxed);
        let was = self.refusing.load(Ordering::Relaxed);
        let now = rss > self.soft;
        if now != was {
            self.refusing.store(now, Ordering::Relaxed);
            if now {
                tracing::warn!(
                    rss_mib = rss / MIB,
                    soft_limit_mib = self.soft / MIB,
                    hard_limit_mib = self.hard / MIB,
                    "memory usage above the soft limit; refusing data"
                );
            } else {
                tracing::info!(
                    rss_mib = rss / MIB,
                    "memory usage back below the soft limit"
                );
            }
        }
    }
}

pub struct MemoryLimiter {
    shared: Arc<Shared>,
    interval: Duration,
    next: Arc<dyn Consumer>,
    metrics: ProcessorMetrics,
    task: Mutex<Option<JoinHandle<()>>>,
    sampler: fn() -> Option<u64>,
}

#[async_trait]
impl Consumer for MemoryLimiter {
    async fn consume(&self, payload: Payload) -> Result<(), ConsumeError> {
        let n = payload.items() as u64;
        if self.shared.refusing.load(Ordering::Relaxed) {
            self.metrics.refused.add(n);
            return Err(ConsumeError::Retryable(
                "data refused due to high memory usage".into(),
            ));
        }
        self.metrics.incoming.add(n);
        self.metrics.outgoing.add(n);
        self.next.consume(payload).await
    }
}

#[async_trait]
impl Lifecycle for MemoryLimiter {
    async fn start(&self) -> Result<(), ComponentError> {
        let shared = self.shared.clone();
        let interval = self.interval;
        let sampler = self.sampler;
        if let Some(rss) = sampler() {
            shared.check(rss);
        }
        let task = tokio::spawn(async move {
            let mut tick = tokio::time::interval(interval);
            loop {
                tick.tick().await;
                if let Some(rss) = sampler() {
                    shared.check(rss);
                }
            }
        });
        *self.task.lock().unwrap_or_else(|e| e.into_inner()) = Some(task);
        Ok(())
    }

    async fn shutdown(&self) -> Result<(), ComponentError> {
        if let Some(t) = self.task.lock().unwrap_or_else(|e| e.into_inner()).take() {
            t.abort();
        }
        Ok(())
    }
}

fn rss_bytes() -> Option<u64> {
    let statm = std::fs::read_to_string("/proc/self/statm").ok()?;
    let pages: u64 = statm.split_whitespace().nth(1)?.parse().ok()?;
    // SAFETY: sysconf has no preconditions.
    let page = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    Some(pages * u64::try_from(page).ok()?)
}

fn total_memory_bytes() -> Option<u64> {
    // A cgroup limit, when set, is what the process can really use.
    for p in [
        "/sys/fs/cgroup/memory.max",
        "/sys/fs/cgroup/memory/memory.limit_in_bytes",
    ] {
        if let Ok(s) = std::fs::read_to_string(p) {
            if let Ok(v) = s.trim().parse::<u64>() {
                if v < (1 << 60) {
                    return Some(v);
                }
            }
        }
    }
    let meminfo = std::fs::read_to_string("/proc/meminfo").ok()?;
    let line = meminfo.lines().find(|l| l.starts_with("MemTotal:"))?;
    let kb: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb * 1024)
}

#[cfg(test)]
mod tests {
    use super::*;
    use pipeline_core::{ComponentId, PipelineId, Telemetry};

    struct Count(AtomicU64);

    #[async_trait]
    impl Consumer for Count {
        async fn consume(&self, p: Payload) -> Result<(), ConsumeError> {
            self.0.fetch_add(p.items() as u64, Ordering::Relaxed);
            Ok(())
        }
    }

    #[test]
    fn validation_and_limits() {
        let parse = |s: &str| (FACTORY.parse)(&serde_yaml::from_str(s).unwrap(), "p");
        assert!(parse("limit_mib: 100").is_err(), "check_interval required");
        assert!(parse("check_interval: 1s").is_err(), "a limit is required");
        assert!(parse("check_interval: 1s\nlimit_mib: 100\nspike_limit_mib: 100").is_err());
        assert!(parse("check_interval: 1s\nlimit_mib: 100").is_ok());
        let c = MemoryLimiterConfig {
            check_interval: Duration::from_secs(1),
            limit_mib: 100,
            ..Default::default()
        };
        assert_eq!(c.limits(0), (100 * MIB, 80 * MIB));
        let c = MemoryLimiterConfig {
            check_interval: Duration::from_secs(1),
            limit_percentage: 50,
            spike_limit_percentage: 10,
            ..Default::default()
        };
        assert_eq!(c.limits(1000 * MIB), (500 * MIB, 400 * MIB));
    }

    #[tokio::test]
    async fn refuses_above_soft_limit_with_retryable_error() {
        let cfg = MemoryLimiterConfig {
            check_interval: Duration::from_millis(10),
            limit_mib: 100,
            ..Default::default()
        };
        let sink = Arc::new(Count(AtomicU64::new(0)));
        let p = cfg
            .build(ProcessorContext {
                id: ComponentId::parse("memory_limiter").unwrap(),
                pipeline: PipelineId::parse("traces").unwrap(),
                next: sink.clone(),
                telemetry: Telemetry::default(),
            })
            .unwrap();
        // Drive the limiter directly with chosen readings rather than the real RSS.
        let ml = MemoryLimiter {
            shared: Arc::new(Shared {
                refusing: AtomicBool::new(false),
                last_rss: AtomicU64::new(0),
                soft: 80 * MIB,
                hard: 100 * MIB,
            }),
            interval: Duration::from_millis(10),
            next: sink.clone(),
            metrics: ProcessorMetrics::new(
                &Telemetry::default(),
                &ComponentId::parse("memory_limiter").unwrap(),
                "traces",
                Signal::Traces,
            ),
            task: Mutex::new(None),
            sampler: || Some(90 * MIB),
        };
        ml.start().await.unwrap();
        let e = ml
            .consume(Payload::empty(Signal::Traces))
            .await
            .unwrap_err();
        assert!(e.is_retryable());
        ml.shared.check(10 * MIB);
        ml.shutdown().await.unwrap();
        ml.consume(Payload::empty(Signal::Traces)).await.unwrap();
        p.shutdown().await.unwrap();
    }
}
