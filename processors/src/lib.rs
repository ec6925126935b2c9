//! Processors: components that sit inside one pipeline, between its receivers and exporters.
//! Each module is one component, named by its config type, and exposes a `FACTORY` that the
//! `sonde` binary registers.

pub mod batch;
pub mod filter;
pub mod memory_limiter;
