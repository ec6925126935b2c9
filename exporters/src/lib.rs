//! Exporters: the last stage of a pipeline, sending data out of Sonde (OTLP gRPC/HTTP, a
//! Prometheus scrape endpoint, the log). Each module is one component, named by its config type,
//! and exposes a `FACTORY` that the `sonde` binary registers.

pub mod common;
pub mod debug;
pub mod nop;
pub mod otlp;
pub mod otlphttp;
pub mod prometheus;
