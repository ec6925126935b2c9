//! The `otlp` receiver: OTLP over gRPC (tonic) and HTTP (hyper; protobuf or JSON) into the
//! pipelines of each signal, plus the `nop` receiver.
//!
//! Received protobuf is handed downstream as the bytes that arrived (checked and counted by
//! `pipeline_core::Payload::from_encoded`, never decoded here); OTLP/JSON is transcoded to the
//! same protobuf form. The crate's boundary is the [`pipeline_core::Consumer`] of each signal:
//! what happens to the data after that is the pipeline's business, and its verdict
//! (`Retryable` / `Permanent`) is turned into the gRPC status or HTTP code the sender expects.

pub mod config;
mod grpc;
mod http_server;
pub mod json;
mod nop;
mod receiver;
mod tls;

use std::sync::Arc;

use pipeline_core::{
    parse_component, ComponentError, ConfigError, Receiver, ReceiverConfig, ReceiverContext,
    ReceiverFactory, Signal,
};

pub use config::OtlpReceiverConfig;
pub use nop::{NopReceiver, NopReceiverConfig, NOP_FACTORY};
pub use receiver::{OtlpReceiver, SHUTDOWN_GRACE};

pub const FACTORY: ReceiverFactory = ReceiverFactory {
    type_name: "otlp",
    signals: &Signal::ALL,
    parse,
};

fn parse(v: &serde_yaml::Value, path: &str) -> Result<Box<dyn ReceiverConfig>, ConfigError> {
    Ok(Box::new(parse_component::<OtlpReceiverConfig>(v, path)?))
}

impl ReceiverConfig for OtlpReceiverConfig {
    fn build(&self, ctx: ReceiverContext) -> Result<Arc<dyn Receiver>, ComponentError> {
        Ok(Arc::new(OtlpReceiver::new(self, ctx)?))
    }
}
