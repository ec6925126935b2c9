//! The `otlp` receiver in front of a consumer that only counts: measures what receiving costs
//! on its own. Run it, point a load generator at it (`bench loadgen --endpoint 127.0.0.1:14317`)
//! and read its CPU time; it prints the counts every second and exits on Ctrl-C.
//!
//! `cargo run --release -p receiver-otlp --example count_sink [grpc-endpoint] [http-endpoint]`

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use pipeline_core::{
    parse_component, ComponentId, ConsumeError, Consumer, Lifecycle, Payload, ReceiverContext,
    Signal, Telemetry,
};
use receiver_otlp::{OtlpReceiver, OtlpReceiverConfig};

#[derive(Default)]
struct Count {
    items: AtomicU64,
    requests: AtomicU64,
}

#[async_trait]
impl Consumer for Count {
    async fn consume(&self, payload: Payload) -> Result<(), ConsumeError> {
        self.items
            .fetch_add(payload.items() as u64, Ordering::Relaxed);
        self.requests.fetch_add(1, Ordering::Relaxed);
        Ok(())
    }
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let grpc = args.next().unwrap_or_else(|| "127.0.0.1:14317".into());
    let http = args.next().unwrap_or_else(|| "127.0.0.1:14318".into());
    let yaml = format!("protocols: {{grpc: {{endpoint: '{grpc}'}}, http: {{endpoint: '{http}'}}}}");
    let cfg: OtlpReceiverConfig =
        parse_component(&serde_yaml::from_str(&yaml)?, "receivers::otlp")?;
    let count = Arc::new(Count::default());
    let consumers: HashMap<Signal, Arc<dyn Consumer>> = Signal::ALL
        .iter()
        .map(|s| (*s, count.clone() as Arc<dyn Consumer>))
        .collect();
    let receiver = OtlpReceiver::new(
        &cfg,
        ReceiverContext {
            id: ComponentId::parse("otlp")?,
            consumers,
            telemetry: Telemetry::default(),
        },
    )?;
    receiver.start().await?;
    println!("listening: grpc {grpc}, http {http}");
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    let mut last = u64::MAX;
    loop {
        tokio::select! {
            _ = tokio::signal::ctrl_c() => break,
            _ = tick.tick() => {
                let n = count.items.load(Ordering::Relaxed);
                if n != last {
                    println!("items={n} requests={}", count.requests.load(Ordering::Relaxed));
                    last = n;
                }
            }
        }
    }
    receiver.shutdown().await?;
    Ok(())
}
