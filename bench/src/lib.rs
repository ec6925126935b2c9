//! Benchmark tooling for Sonde: an OTLP/gRPC trace load generator ([`loadgen`]) sending
//! pre-encoded requests shaped like an eBPF HTTP instrumenter's spans ([`spans`]), a sink that
//! counts the spans it receives without decoding them ([`sink`]), and a runner comparing Sonde
//! with rotel on the same job ([`runner`]), measuring each collector's CPU time and peak memory
//! from `/proc` ([`procstat`]). Nothing here is used by the collector itself.

pub mod collector;
pub mod ebpf;
pub mod loadgen;
pub mod procstat;
pub mod runner;
pub mod sink;
pub mod spans;
