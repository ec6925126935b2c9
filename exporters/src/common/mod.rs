//! Pieces shared by the `otlp` (gRPC) and `otlphttp` exporters: their common config blocks,
//! client TLS and the connector, retry (classification, backoff, loop), and the sending queue.

pub mod config;
pub mod queue;
pub mod retry;
pub mod rpc;
pub mod tls;

#[cfg(test)]
pub(crate) mod testutil;
