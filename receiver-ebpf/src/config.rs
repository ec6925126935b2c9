//! The `ebpf` receiver's configuration, as users write it under `receivers: ebpf:`.

use std::time::Duration;

use serde::Deserialize;

use pipeline_core::Validate;

use crate::discovery::{DiscoveryConfig, PortSet};
use crate::loader::KernelHooks;

/// What to print for each span, as OBI's `trace_printer` (env `OTEL_EBPF_TRACE_PRINTER`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum TracePrinter {
    #[default]
    Disabled,
    Text,
    Counter,
    Json,
    JsonIndent,
}

impl TracePrinter {
    pub fn parse(s: &str) -> Option<TracePrinter> {
        Some(match s.trim().to_ascii_lowercase().as_str() {
            "" | "disabled" => TracePrinter::Disabled,
            "text" => TracePrinter::Text,
            "counter" => TracePrinter::Counter,
            "json" => TracePrinter::Json,
            "json_indent" => TracePrinter::JsonIndent,
            _ => return None,
        })
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct EbpfConfig {
    /// Shortcut for one `discovery.instrument` entry with these ports (OBI's `open_port`);
    /// `OTEL_EBPF_OPEN_PORT` adds one too.
    #[serde(alias = "open_port")]
    pub open_ports: Option<PortSet>,
    /// Which processes to instrument (OBI-compatible selectors plus `cgroup_path` and
    /// `container_id`).
    pub discovery: DiscoveryConfig,
    pub trace_printer: Option<TracePrinter>,
    /// Bytes of each read/write copied from the kernel: enough for the request line and headers.
    pub payload_size: u32,
    pub ring_buffer_size_kib: u32,
    /// `auto` (default): the socket layer's tracepoints where the kernel has them (Linux >= 6.3),
    /// else syscall tracepoints; `socket` or `syscalls` to force one.
    pub kernel_hooks: KernelHooks,
    /// How often the ring buffer is drained (events are submitted without wake-ups).
    #[serde(with = "pipeline_core::duration")]
    pub drain_interval: Duration,
    /// How often request metrics are exported.
    #[serde(with = "pipeline_core::duration")]
    pub metrics_interval: Duration,
}

impl Default for EbpfConfig {
    fn default() -> Self {
        EbpfConfig {
            open_ports: None,
            discovery: DiscoveryConfig::default(),
            trace_printer: None,
            payload_size: 512,
            ring_buffer_size_kib: 16 * 1024,
            kernel_hooks: KernelHooks::Auto,
            drain_interval: Duration::from_millis(5),
            metrics_interval: Duration::from_secs(5),
        }
    }
}

impl Validate for EbpfConfig {
    fn validate(&self) -> Result<(), String> {
        if !(64..=1024).contains(&self.payload_size) {
            return Err(format!(
                "payload_size must be between 64 and 1024 bytes, got {}",
                self.payload_size
            ));
        }
        if !self.ring_buffer_size_kib.is_power_of_two() || self.ring_buffer_size_kib < 4 {
            return Err(format!(
                "ring_buffer_size_kib must be a power of two of at least 4, got {}",
                self.ring_buffer_size_kib
            ));
        }
        if self.drain_interval.is_zero() || self.metrics_interval.is_zero() {
            return Err("drain_interval and metrics_interval must be positive".into());
        }
        self.discovery.validate()
    }
}
