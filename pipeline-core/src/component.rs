//! Component traits, the context each kind is built with, and the factories the registry holds.
//!
//! A factory's `parse` is pure: it lays the user's YAML over the component's defaults and checks
//! it. The parsed config's `build` creates the component without side effects (no sockets, no
//! threads); all I/O starts in `start`. This is what lets `sonde validate` run the full build path.

use std::collections::HashMap;
use std::fmt;
use std::sync::Arc;

use async_trait::async_trait;
use serde::de::DeserializeOwned;

use crate::payload::{Payload, Signal};
use crate::telemetry::Telemetry;

/// `type[/name]`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ComponentId {
    pub type_name: String,
    pub name: Option<String>,
}

impl ComponentId {
    pub fn parse(s: &str) -> Result<ComponentId, String> {
        let (t, n) = match s.split_once('/') {
            Some((t, n)) => (t, Some(n)),
            None => (s, None),
        };
        let valid_type = {
            let mut chars = t.chars();
            matches!(chars.next(), Some(c) if c.is_ascii_alphabetic())
                && t.len() <= 63
                && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
        };
        if !valid_type {
            return Err(format!(
                "invalid component id {s:?}: type must match ^[a-zA-Z][0-9a-zA-Z_]{{0,62}}$"
            ));
        }
        if let Some(n) = n {
            if n.is_empty() || n.chars().any(|c| c.is_whitespace() || c.is_control()) {
                return Err(format!(
                    "invalid component id {s:?}: name may not be empty or contain whitespace"
                ));
            }
        }
        Ok(ComponentId {
            type_name: t.to_string(),
            name: n.map(str::to_string),
        })
    }
}

impl fmt::Display for ComponentId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.name {
            Some(n) => write!(f, "{}/{}", self.type_name, n),
            None => f.write_str(&self.type_name),
        }
    }
}

/// `traces|metrics|logs[/name]`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct PipelineId {
    pub signal: Signal,
    pub name: Option<String>,
}

impl PipelineId {
    pub fn parse(s: &str) -> Result<PipelineId, String> {
        let (t, n) = match s.split_once('/') {
            Some((t, n)) => (t, Some(n)),
            None => (s, None),
        };
        let signal = Signal::parse(t).ok_or_else(|| {
            format!("pipeline {s:?}: unknown signal {t:?} (valid values: [traces metrics logs])")
        })?;
        if matches!(n, Some(n) if n.is_empty()) {
            return Err(format!("pipeline {s:?}: name may not be empty"));
        }
        Ok(PipelineId {
            signal,
            name: n.map(str::to_string),
        })
    }
}

impl fmt::Display for PipelineId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.name {
            Some(n) => write!(f, "{}/{}", self.signal, n),
            None => write!(f, "{}", self.signal),
        }
    }
}

/// Why a consumer refused data. Receivers map `Retryable` to gRPC Unavailable / HTTP 503 so the
/// sender backs off and retries, and `Permanent` to InvalidArgument / HTTP 400.
#[derive(Debug, Clone, thiserror::Error)]
pub enum ConsumeError {
    #[error("{0}")]
    Retryable(String),
    #[error("{0}")]
    Permanent(String),
}

impl ConsumeError {
    pub fn is_retryable(&self) -> bool {
        matches!(self, ConsumeError::Retryable(_))
    }
}

/// Anything data can be pushed into: a processor, an exporter, or a fan-out of them.
///
/// Payloads are cheap to clone (shared bytes or `Arc`ed messages); a consumer that changes data
/// goes through `Arc::make_mut`, so a copy is made only when another consumer still shares it.
#[async_trait]
pub trait Consumer: Send + Sync {
    async fn consume(&self, payload: Payload) -> Result<(), ConsumeError>;
}

#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct ComponentError(pub String);

impl ComponentError {
    pub fn new(msg: impl fmt::Display) -> ComponentError {
        ComponentError(msg.to_string())
    }
}

/// Start/stop shared by every component. `shutdown` must be safe to call without `start`.
#[async_trait]
pub trait Lifecycle: Send + Sync {
    async fn start(&self) -> Result<(), ComponentError> {
        Ok(())
    }
    async fn shutdown(&self) -> Result<(), ComponentError> {
        Ok(())
    }
}

pub trait Receiver: Lifecycle {}
pub trait Processor: Lifecycle + Consumer {}
pub trait Exporter: Lifecycle + Consumer {}

impl<T: Lifecycle> Receiver for T {}
impl<T: Lifecycle + Consumer> Processor for T {}
impl<T: Lifecycle + Consumer> Exporter for T {}

/// What a receiver may touch: where to send each signal it produces.
pub struct ReceiverContext {
    pub id: ComponentId,
    pub consumers: HashMap<Signal, Arc<dyn Consumer>>,
    pub telemetry: Telemetry,
}

pub struct ProcessorContext {
    pub id: ComponentId,
    pub pipeline: PipelineId,
    pub next: Arc<dyn Consumer>,
    pub telemetry: Telemetry,
}

pub struct ExporterContext {
    pub id: ComponentId,
    pub signal: Signal,
    pub telemetry: Telemetry,
}

#[derive(Debug, Clone, thiserror::Error)]
#[error("{path}: {msg}")]
pub struct ConfigError {
    pub path: String,
    pub msg: String,
}

impl ConfigError {
    pub fn new(path: impl Into<String>, msg: impl fmt::Display) -> ConfigError {
        ConfigError {
            path: path.into(),
            msg: msg.to_string(),
        }
    }
}

pub trait ReceiverConfig: Send + Sync {
    fn build(&self, ctx: ReceiverContext) -> Result<Arc<dyn Receiver>, ComponentError>;
}

pub trait ProcessorConfig: Send + Sync {
    fn build(&self, ctx: ProcessorContext) -> Result<Arc<dyn Processor>, ComponentError>;
}

pub trait ExporterConfig: Send + Sync {
    fn build(&self, ctx: ExporterContext) -> Result<Arc<dyn Exporter>, ComponentError>;
}

/// Parses a component's YAML (`path` names it in errors, e.g. `exporters::otlp/jaeger`).
pub type ParseFn<C> = fn(&serde_yaml::Value, &str) -> Result<Box<C>, ConfigError>;

pub struct ReceiverFactory {
    pub type_name: &'static str,
    pub signals: &'static [Signal],
    pub parse: ParseFn<dyn ReceiverConfig>,
}

pub struct ProcessorFactory {
    pub type_name: &'static str,
    pub signals: &'static [Signal],
    pub parse: ParseFn<dyn ProcessorConfig>,
}

pub struct ExporterFactory {
    pub type_name: &'static str,
    pub signals: &'static [Signal],
    pub parse: ParseFn<dyn ExporterConfig>,
}

/// Checks that go beyond what serde's types express (ranges, exclusive options).
pub trait Validate {
    fn validate(&self) -> Result<(), String> {
        Ok(())
    }
}

/// Lays `value` over `T::default()`: every struct field is `#[serde(default)]` and
/// `deny_unknown_fields`, so a misspelled key is an error naming its path.
pub fn parse_component<T>(value: &serde_yaml::Value, path: &str) -> Result<T, ConfigError>
where
    T: DeserializeOwned + Default + Validate,
{
    let cfg: T = if value.is_null() {
        T::default()
    } else {
        serde_path_to_error::deserialize(value.clone()).map_err(|e| {
            let inner = e.inner().to_string();
            let at = e.path().to_string().replace('.', "::");
            let at = if at == "." { String::new() } else { at };
            if let Some(rest) = inner.strip_prefix("unknown field `") {
                let key = rest.split('`').next().unwrap_or(rest);
                let parent = at
                    .rsplit_once("::")
                    .map(|(p, _)| p.to_string())
                    .unwrap_or_default();
                let full = if parent.is_empty() {
                    path.to_string()
                } else {
                    format!("{path}::{parent}")
                };
                ConfigError::new(path, format!("'{full}' has invalid keys: {key}"))
            } else if at.is_empty() {
                ConfigError::new(path, inner)
            } else {
                ConfigError::new(format!("{path}::{at}"), inner)
            }
        })?
    };
    cfg.validate().map_err(|m| ConfigError::new(path, m))?;
    Ok(cfg)
}

/// The built-in components, by type name.
#[derive(Default)]
pub struct Registry {
    pub receivers: Vec<ReceiverFactory>,
    pub processors: Vec<ProcessorFactory>,
    pub exporters: Vec<ExporterFactory>,
    /// Aliases (`otlp_grpc` -> `otlp`), resolved before lookup.
    pub aliases: Vec<(&'static str, &'static str)>,
}

impl Registry {
    fn canonical<'a>(&self, t: &'a str) -> &'a str {
        self.aliases
            .iter()
            .find(|(a, _)| *a == t)
            .map(|(_, c)| *c)
            .unwrap_or(t)
    }
    pub fn receiver(&self, t: &str) -> Option<&ReceiverFactory> {
        let t = self.canonical(t);
        self.receivers.iter().find(|f| f.type_name == t)
    }
    pub fn processor(&self, t: &str) -> Option<&ProcessorFactory> {
        let t = self.canonical(t);
        self.processors.iter().find(|f| f.type_name == t)
    }
    pub fn exporter(&self, t: &str) -> Option<&ExporterFactory> {
        let t = self.canonical(t);
        self.exporters.iter().find(|f| f.type_name == t)
    }
    pub fn receiver_names(&self) -> Vec<&'static str> {
        self.receivers.iter().map(|f| f.type_name).collect()
    }
    pub fn processor_names(&self) -> Vec<&'static str> {
        self.processors.iter().map(|f| f.type_name).collect()
    }
    pub fn exporter_names(&self) -> Vec<&'static str> {
        let mut v: Vec<_> = self.exporters.iter().map(|f| f.type_name).collect();
        v.extend(
            self.aliases
                .iter()
                .filter(|(_, c)| self.exporters.iter().any(|f| f.type_name == *c))
                .map(|(a, _)| *a),
        );
        v
    }
}
