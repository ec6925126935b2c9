//! `nop`: accepts everything and does nothing with it (useful for tests and benchmarks).

use std::sync::Arc;

use async_trait::async_trait;
use pipeline_core::telemetry::ExporterMetrics;
use pipeline_core::{
    parse_component, ComponentError, ConsumeError, Consumer, Exporter, ExporterConfig,
    ExporterContext, ExporterFactory, Lifecycle, Payload, Signal, Validate,
};
use serde::Deserialize;

pub const FACTORY: ExporterFactory = ExporterFactory {
    type_name: "nop",
    signals: &[Signal::Traces, Signal::Metrics, Signal::Logs],
    parse: |v, path| Ok(Box::new(parse_component::<NopConfig>(v, path)?)),
};

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NopConfig {}

impl Validate for NopConfig {}

impl ExporterConfig for NopConfig {
    fn build(&self, ctx: ExporterContext) -> Result<Arc<dyn Exporter>, ComponentError> {
        Ok(Arc::new(NopExporter {
            metrics: ExporterMetrics::new(&ctx.telemetry, &ctx.id, ctx.signal),
        }))
    }
}

pub struct NopExporter {
    metrics: ExporterMetrics,
}

#[async_trait]
impl Lifecycle for NopExporter {}

#[async_trait]
impl Consumer for NopExporter {
    async fn consume(&self, payload: Payload) -> Result<(), ConsumeError> {
        self.metrics.sent.add(payload.items() as u64);
        Ok(())
    }
}
