//! The collector core: the data model ([`Payload`]), the component traits and their factories,
//! the YAML config (merge, env expansion, pure validation), the pipeline graph and its lifecycle,
//! and Sonde's internal telemetry. Components themselves live in the `receiver-*`, `processors`
//! and `exporters` crates; this crate knows none of them.

pub mod component;
pub mod config;
pub mod duration;
pub mod graph;
pub mod payload;
pub mod telemetry;
pub mod timefmt;
pub mod wire;

pub use component::{
    parse_component, ComponentError, ComponentId, ConfigError, ConsumeError, Consumer, Exporter,
    ExporterConfig, ExporterContext, ExporterFactory, Lifecycle, PipelineId, Processor,
    ProcessorConfig, ProcessorContext, ProcessorFactory, Receiver, ReceiverConfig, ReceiverContext,
    ReceiverFactory, Registry, Validate,
};
pub use config::Config;
pub use graph::Service;
pub use payload::{Decoded, Payload, Signal};
pub use telemetry::Telemetry;

/// Re-exported so every component uses the same OTLP types.
pub use opentelemetry_proto as otlp;
