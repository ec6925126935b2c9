//! The `nop` receiver: accepts no data and produces none. Useful to keep a pipeline valid
//! while its real sources are switched off, as in the reference collector.

use std::sync::Arc;

use pipeline_core::{
    parse_component, ComponentError, ConfigError, Lifecycle, Receiver, ReceiverConfig,
    ReceiverContext, ReceiverFactory, Signal, Validate,
};
use serde::Deserialize;

pub const NOP_FACTORY: ReceiverFactory = ReceiverFactory {
    type_name: "nop",
    signals: &Signal::ALL,
    parse,
};

/// `nop` takes no settings.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct NopReceiverConfig {}

impl Validate for NopReceiverConfig {}

fn parse(v: &serde_yaml::Value, path: &str) -> Result<Box<dyn ReceiverConfig>, ConfigError> {
    Ok(Box::new(parse_component::<NopReceiverConfig>(v, path)?))
}

impl ReceiverConfig for NopReceiverConfig {
    fn build(&self, _ctx: ReceiverContext) -> Result<Arc<dyn Receiver>, ComponentError> {
        Ok(Arc::new(NopReceiver))
    }
}

/// Starts and stops without doing anything.
pub struct NopReceiver;

impl Lifecycle for NopReceiver {}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    #[tokio::test]
    async fn parses_builds_starts_and_stops() {
        let cfg = (NOP_FACTORY.parse)(&serde_yaml::Value::Null, "receivers::nop").expect("null");
        let r = cfg
            .build(ReceiverContext {
                id: pipeline_core::ComponentId::parse("nop").expect("id"),
                consumers: HashMap::new(),
                telemetry: pipeline_core::Telemetry::default(),
            })
            .expect("build");
        r.shutdown().await.expect("shutdown before start");
        r.start().await.expect("start");
        r.shutdown().await.expect("shutdown");
        let v: serde_yaml::Value = serde_yaml::from_str("{x: 1}").expect("yaml");
        let e = (NOP_FACTORY.parse)(&v, "receivers::nop")
            .err()
            .expect("unknown key");
        assert!(e.to_string().contains("has invalid keys: x"), "{e}");
    }
}
