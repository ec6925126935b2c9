//! The `ebpf` receiver: HTTP spans and metrics from selected Linux processes, captured by the
//! socket layer's BTF tracepoints (the bytes each read/write/send/recv syscall moved on a
//! socket), with no change to the processes. Kernel programs live in `probes/`;
//! this crate loads them (`loader`, `event`), selects processes (`discovery`), pairs requests
//! and responses (`http`), links and builds spans and metrics (`linker`, `spans`, `metrics`),
//! prints them (`printer`) and wraps it all as a pipeline component (`receiver`).

pub mod config;
pub mod discovery;
pub mod event;
pub mod hot;
pub mod http;
pub mod linker;
pub mod loader;
pub mod metrics;
pub mod model;
pub mod otlp_encode;
pub mod printer;
pub mod receiver;
pub mod spans;

pub use receiver::FACTORY;
