//! Loading the collector YAML: several sources merged left to right, `--set` overrides,
//! environment expansion, then a pure parse and validation of every section into [`Config`].

use std::collections::BTreeMap;

use serde::Deserialize;
use serde_yaml::{Mapping, Value};

use crate::component::{
    parse_component, ComponentId, ConfigError, ExporterConfig, PipelineId, ProcessorConfig,
    ReceiverConfig, Registry, Validate,
};
use crate::payload::Signal;

/// Reads one `--config` source: a file path, `file:PATH`, `env:VAR` or inline `yaml:...`.
pub fn read_source(src: &str) -> Result<Value, ConfigError> {
    let text = if let Some(y) = src.strip_prefix("yaml:") {
        y.to_string()
    } else if let Some(var) = src.strip_prefix("env:") {
        std::env::var(var).map_err(|_| {
            ConfigError::new("config", format!("environment variable {var} is not set"))
        })?
    } else {
        let path = src.strip_prefix("file:").unwrap_or(src);
        std::fs::read_to_string(path)
            .map_err(|e| ConfigError::new("config", format!("cannot read {path}: {e}")))?
    };
    let v: Value = serde_yaml::from_str(&text)
        .map_err(|e| ConfigError::new("config", format!("{src}: invalid YAML: {e}")))?;
    Ok(if v.is_null() {
        Value::Mapping(Mapping::new())
    } else {
        v
    })
}

/// Deep merge: maps merge key by key, anything else (lists included) is replaced.
pub fn merge(base: &mut Value, over: Value) {
    match (base, over) {
        (Value::Mapping(b), Value::Mapping(o)) => {
            for (k, v) in o {
                match b.get_mut(&k) {
                    Some(bv) => merge(bv, v),
                    None => {
                        b.insert(k, v);
                    }
                }
            }
        }
        (b, o) => *b = o,
    }
}

/// Applies `a.b.c=value` (or `a::b::c=value`); the value is parsed as a YAML scalar.
pub fn apply_set(root: &mut Value, set: &str) -> Result<(), ConfigError> {
    let (key, val) = set
        .split_once('=')
        .ok_or_else(|| ConfigError::new("--set", format!("{set:?} is not key=value")))?;
    let parts: Vec<&str> = if key.contains("::") {
        key.split("::").collect()
    } else {
        key.split('.').collect()
    };
    if parts.iter().any(|p| p.is_empty()) {
        return Err(ConfigError::new(
            "--set",
            format!("{set:?} has an empty key"),
        ));
    }
    let value: Value = serde_yaml::from_str(val).unwrap_or(Value::String(val.to_string()));
    let mut over = value;
    for p in parts.iter().rev() {
        let mut m = Mapping::new();
        m.insert(Value::String(p.to_string()), over);
        over = Value::Mapping(m);
    }
    merge(root, over);
    Ok(())
}

/// Expands `${env:X}`, `${X}`, `${env:X:-default}` and `$$` in every string of the tree.
/// A string that is exactly one `${...}` takes the YAML type of its expansion.
pub fn expand_env(
    v: &mut Value,
    lookup: &dyn Fn(&str) -> Option<String>,
) -> Result<(), ConfigError> {
    match v {
        Value::String(s) => {
            if !s.contains('$') {
                return Ok(());
            }
            let whole = s.starts_with("${") && s.ends_with('}') && s.matches("${").count() == 1;
            let expanded = expand_str(s, lookup)?;
            *v = if whole {
                match serde_yaml::from_str::<Value>(&expanded) {
                    Ok(Value::Mapping(_)) | Ok(Value::Sequence(_)) | Err(_) => {
                        Value::String(expanded)
                    }
                    // Empty or `~`-like text stays a string: a blank endpoint is not "null".
                    Ok(Value::Null) => Value::String(expanded),
                    Ok(typed) => typed,
                }
            } else {
                Value::String(expanded)
            };
        }
        Value::Mapping(m) => {
            for (_, val) in m.iter_mut() {
                expand_env(val, lookup)?;
            }
        }
        Value::Sequence(s) => {
            for val in s.iter_mut() {
                expand_env(val, lookup)?;
            }
        }
        _ => {}
    }
    Ok(())
}

fn expand_str(s: &str, lookup: &dyn Fn(&str) -> Option<String>) -> Result<String, ConfigError> {
    let mut out = String::with_capacity(s.len());
    let mut rest = s;
    while let Some(i) = rest.find('$') {
        out.push_str(&rest[..i]);
        let after = &rest[i + 1..];
        if let Some(tail) = after.strip_prefix('$') {
            out.push('$');
            rest = tail;
        } else if let Some(body) = after.strip_prefix('{') {
            let end = body
                .find('}')
                .ok_or_else(|| ConfigError::new("config", format!("unterminated ${{ in {s:?}")))?;
            let inner = &body[..end];
            let spec = inner.strip_prefix("env:").unwrap_or(inner);
            let (name, default) = match spec.split_once(":-") {
                Some((n, d)) => (n, Some(d)),
                None => (spec, None),
            };
            let valid = !name.is_empty()
                && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
                && !name.starts_with(|c: char| c.is_ascii_digit());
            if !valid {
                return Err(ConfigError::new(
                    "config",
                    format!("invalid environment variable name {name:?} in {s:?}"),
                ));
            }
            match (lookup(name), default) {
                (Some(v), _) => out.push_str(&v),
                (None, Some(d)) => out.push_str(d),
                (None, None) => {
                    tracing::warn!(
                        variable = name,
                        "environment variable is not set; using \"\""
                    )
                }
            }
            rest = &body[end + 1..];
        } else {
            out.push('$');
            rest = after;
        }
    }
    out.push_str(rest);
    Ok(out)
}

/// Loads and merges sources, applies `--set`s, expands the environment.
pub fn load(sources: &[String], sets: &[String]) -> Result<Value, ConfigError> {
    let mut root = Value::Mapping(Mapping::new());
    for s in sources {
        merge(&mut root, read_source(s)?);
    }
    for s in sets {
        apply_set(&mut root, s)?;
    }
    expand_env(&mut root, &|n| std::env::var(n).ok())?;
    Ok(root)
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PipelineConfig {
    pub receivers: Vec<String>,
    pub processors: Vec<String>,
    pub exporters: Vec<String>,
}

impl Validate for PipelineConfig {}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LogsConfig {
    pub level: String,
    pub encoding: String,
    pub development: bool,
    pub output_paths: Vec<String>,
    pub error_output_paths: Vec<String>,
}

impl Default for LogsConfig {
    fn default() -> Self {
        LogsConfig {
            level: "info".into(),
            encoding: "console".into(),
            development: false,
            output_paths: vec!["stderr".into()],
            error_output_paths: vec!["stderr".into()],
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct MetricsConfig {
    /// `none` turns the endpoint off.
    pub level: String,
    /// Legacy form of the endpoint (`localhost:8888`).
    pub address: Option<String>,
    /// Newer form: `[{pull: {exporter: {prometheus: {host, port}}}}]`.
    pub readers: Vec<Value>,
}

impl Default for MetricsConfig {
    fn default() -> Self {
        MetricsConfig {
            level: "normal".into(),
            address: None,
            readers: Vec::new(),
        }
    }
}

impl MetricsConfig {
    /// Where to serve internal metrics, or `None` when disabled.
    pub fn endpoint(&self) -> Option<String> {
        if self.level == "none" {
            return None;
        }
        if let Some(a) = &self.address {
            return Some(a.clone());
        }
        for r in &self.readers {
            let prom = &r["pull"]["exporter"]["prometheus"];
            if !prom.is_null() {
                let host = prom["host"].as_str().unwrap_or("localhost");
                let port = prom["port"].as_u64().unwrap_or(8888);
                return Some(format!("{host}:{port}"));
            }
        }
        Some("localhost:8888".into())
    }
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TelemetryConfig {
    pub logs: LogsConfig,
    pub metrics: MetricsConfig,
    pub resource: BTreeMap<String, Value>,
    pub traces: Value,
}

impl Validate for TelemetryConfig {
    fn validate(&self) -> Result<(), String> {
        match self.metrics.level.as_str() {
            "none" | "basic" | "normal" | "detailed" => {}
            l => return Err(format!("unknown metrics level {l:?}")),
        }
        match self.logs.level.to_ascii_lowercase().as_str() {
            "debug" | "info" | "warn" | "error" | "trace" => Ok(()),
            l => Err(format!("unknown log level {l:?}")),
        }
    }
}

/// Parsed components of one kind: id -> (signals the type supports, parsed config).
pub type Components<C> = BTreeMap<ComponentId, (Vec<Signal>, Box<C>)>;

/// A validated configuration: every component parsed, every reference resolved.
pub struct Config {
    pub receivers: Components<dyn ReceiverConfig>,
    pub processors: Components<dyn ProcessorConfig>,
    pub exporters: Components<dyn ExporterConfig>,
    pub pipelines: BTreeMap<PipelineId, Pipeline>,
    pub telemetry: TelemetryConfig,
}

/// A pipeline with its references resolved to ids.
#[derive(Debug, Clone)]
pub struct Pipeline {
    pub receivers: Vec<ComponentId>,
    pub processors: Vec<ComponentId>,
    pub exporters: Vec<ComponentId>,
}

fn section<'a>(root: &'a Mapping, name: &str) -> Result<Option<&'a Mapping>, ConfigError> {
    match root.get(name) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Mapping(m)) => Ok(Some(m)),
        Some(_) => Err(ConfigError::new(name, "must be a map")),
    }
}

fn key_str<'a>(k: &'a Value, path: &str) -> Result<&'a str, ConfigError> {
    k.as_str()
        .ok_or_else(|| ConfigError::new(path, format!("key {k:?} is not a string")))
}

/// Parses every section of `section_name` with the factories of one kind.
fn parse_section<C: ?Sized>(
    root: &Mapping,
    section_name: &str,
    lookup: impl Fn(&str) -> Option<(Vec<Signal>, crate::component::ParseFn<C>)>,
    valid: Vec<&'static str>,
) -> Result<Components<C>, ConfigError> {
    let mut out = BTreeMap::new();
    let Some(m) = section(root, section_name)? else {
        return Ok(out);
    };
    for (k, v) in m {
        let key = key_str(k, section_name)?;
        let id = ComponentId::parse(key).map_err(|e| ConfigError::new(section_name, e))?;
        let path = format!("{section_name}::{id}");
        let Some((signals, parse)) = lookup(&id.type_name) else {
            let mut names = valid.clone();
            names.sort_unstable();
            return Err(ConfigError::new(
                section_name,
                format!(
                    "unknown type: {:?} for id: {:?} (valid values: [{}])",
                    id.type_name,
                    id.to_string(),
                    names.join(" ")
                ),
            ));
        };
        let cfg = parse(v, &path)?;
        out.insert(id, (signals, cfg));
    }
    Ok(out)
}

impl Config {
    /// Parses and validates a merged YAML tree. Pure: nothing is bound, started or resolved.
    pub fn parse(root: &Value, registry: &Registry) -> Result<Config, ConfigError> {
        let empty = Mapping::new();
        let root = match root {
            Value::Mapping(m) => m,
            Value::Null => &empty,
            _ => return Err(ConfigError::new("config", "top level must be a map")),
        };
        const TOP: [&str; 6] = [
            "receivers",
            "processors",
            "exporters",
            "connectors",
            "extensions",
            "service",
        ];
        for k in root.keys() {
            let key = key_str(k, "config")?;
            if !TOP.contains(&key) {
                return Err(ConfigError::new(
                    "config",
                    format!("'' has invalid keys: {key}"),
                ));
            }
        }
        let receivers = parse_section(
            root,
            "receivers",
            |t| registry.receiver(t).map(|f| (f.signals.to_vec(), f.parse)),
            registry.receiver_names(),
        )?;
        let processors = parse_section(
            root,
            "processors",
            |t| registry.processor(t).map(|f| (f.signals.to_vec(), f.parse)),
            registry.processor_names(),
        )?;
        let exporters = parse_section(
            root,
            "exporters",
            |t| registry.exporter(t).map(|f| (f.signals.to_vec(), f.parse)),
            registry.exporter_names(),
        )?;
        for name in ["connectors", "extensions"] {
            if let Some(m) = section(root, name)? {
                if let Some((k, _)) = m.iter().next() {
                    let key = key_str(k, name)?;
                    let id = ComponentId::parse(key).map_err(|e| ConfigError::new(name, e))?;
                    return Err(ConfigError::new(
                        name,
                        format!(
                            "unknown type: {:?} for id: {:?} (valid values: [])",
                            id.type_name,
                            id.to_string()
                        ),
                    ));
                }
            }
        }

        let service = section(root, "service")?;
        let service = service.cloned().unwrap_or_default();
        for k in service.keys() {
            let key = key_str(k, "service")?;
            if !["extensions", "pipelines", "telemetry"].contains(&key) {
                return Err(ConfigError::new(
                    "service",
                    format!("'service' has invalid keys: {key}"),
                ));
            }
        }
        if let Some(Value::Sequence(exts)) = service.get("extensions") {
            if let Some(e) = exts.first() {
                return Err(ConfigError::new(
                    "service::extensions",
                    format!("references extension {e:?} which is not configured"),
                ));
            }
        }
        let telemetry: TelemetryConfig = parse_component(
            service.get("telemetry").unwrap_or(&Value::Null),
            "service::telemetry",
        )?;

        let mut pipelines = BTreeMap::new();
        let pmap = match service.get("pipelines") {
            None | Some(Value::Null) => Mapping::new(),
            Some(Value::Mapping(m)) => m.clone(),
            Some(_) => return Err(ConfigError::new("service::pipelines", "must be a map")),
        };
        if pmap.is_empty() {
            return Err(ConfigError::new(
                "service::pipelines",
                "service must have at least one pipeline",
            ));
        }
        for (k, v) in &pmap {
            let key = key_str(k, "service::pipelines")?;
            let pid =
                PipelineId::parse(key).map_err(|e| ConfigError::new("service::pipelines", e))?;
            let path = format!("service::pipelines::{pid}");
            let pc: PipelineConfig = parse_component(v, &path)?;
            let resolve = |names: &[String],
                           kind: &str,
                           known: &dyn Fn(&ComponentId) -> Option<Vec<Signal>>|
             -> Result<Vec<ComponentId>, ConfigError> {
                let mut ids: Vec<ComponentId> = Vec::new();
                for n in names {
                    let id = ComponentId::parse(n).map_err(|e| ConfigError::new(&path, e))?;
                    let Some(signals) = known(&id) else {
                        return Err(ConfigError::new(
                            &path,
                            format!("references {kind} {n:?} which is not configured"),
                        ));
                    };
                    if !signals.contains(&pid.signal) {
                        return Err(ConfigError::new(
                            &path,
                            format!(
                                "{kind} {n:?} does not support {} (it supports: {})",
                                pid.signal,
                                signals
                                    .iter()
                                    .map(|s| s.as_str())
                                    .collect::<Vec<_>>()
                                    .join(", ")
                            ),
                        ));
                    }
                    if ids.contains(&id) {
                        return Err(ConfigError::new(
                            &path,
                            format!("references {kind} {n:?} multiple times"),
                        ));
                    }
                    ids.push(id);
                }
                Ok(ids)
            };
            let r = resolve(&pc.receivers, "receiver", &|id| {
                receivers.get(id).map(|(s, _)| s.clone())
            })?;
            let p = resolve(&pc.processors, "processor", &|id| {
                processors.get(id).map(|(s, _)| s.clone())
            })?;
            let e = resolve(&pc.exporters, "exporter", &|id| {
                exporters.get(id).map(|(s, _)| s.clone())
            })?;
            if r.is_empty() {
                return Err(ConfigError::new(&path, "must have at least one receiver"));
            }
            if e.is_empty() {
                return Err(ConfigError::new(&path, "must have at least one exporter"));
            }
            pipelines.insert(
                pid,
                Pipeline {
                    receivers: r,
                    processors: p,
                    exporters: e,
                },
            );
        }
        Ok(Config {
            receivers,
            processors,
            exporters,
            pipelines,
            telemetry,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(n: &str) -> Option<String> {
        match n {
            "HOST" => Some("example.com".into()),
            "PORT" => Some("4317".into()),
            "EMPTY" => Some(String::new()),
            _ => None,
        }
    }

    #[test]
    fn env_expansion_forms() {
        let mut v: Value = serde_yaml::from_str(
            r#"
a: ${env:HOST}:${PORT}
b: ${env:PORT}
c: ${env:MISSING:-fallback}
d: ${env:EMPTY:-fallback}
e: cost $$5
f: ${MISSING}
"#,
        )
        .unwrap();
        expand_env(&mut v, &env).unwrap();
        assert_eq!(v["a"], Value::String("example.com:4317".into()));
        assert_eq!(v["b"], Value::Number(4317.into()));
        assert_eq!(v["c"], Value::String("fallback".into()));
        assert_eq!(v["d"], Value::String(String::new()));
        assert_eq!(v["e"], Value::String("cost $5".into()));
        assert_eq!(v["f"], Value::String(String::new()));
    }

    #[test]
    fn merge_maps_and_replace_lists() {
        let mut a: Value = serde_yaml::from_str("x: {a: 1, l: [1, 2]}\ny: 1").unwrap();
        let b: Value = serde_yaml::from_str("x: {b: 2, l: [3]}").unwrap();
        merge(&mut a, b);
        assert_eq!(a["x"]["a"], Value::Number(1.into()));
        assert_eq!(a["x"]["b"], Value::Number(2.into()));
        assert_eq!(a["x"]["l"].as_sequence().unwrap().len(), 1);
        apply_set(&mut a, "x.a=hello").unwrap();
        apply_set(&mut a, "processors::batch::timeout=2s").unwrap();
        assert_eq!(a["x"]["a"], Value::String("hello".into()));
        assert_eq!(
            a["processors"]["batch"]["timeout"],
            Value::String("2s".into())
        );
    }
}
