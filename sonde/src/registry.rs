//! Every built-in component, by config type name. Adding a component = one line here.

use pipeline_core::Registry;

pub fn builtin() -> Registry {
    Registry {
        receivers: vec![
            receiver_otlp::FACTORY,
            receiver_otlp::NOP_FACTORY,
            receiver_ebpf::FACTORY,
        ],
        processors: vec![
            processors::batch::FACTORY,
            processors::memory_limiter::FACTORY,
            processors::filter::FACTORY,
        ],
        exporters: vec![
            exporters::debug::FACTORY,
            exporters::nop::FACTORY,
            exporters::prometheus::FACTORY,
            exporters::otlp::OTLP_FACTORY,
            exporters::otlphttp::OTLPHTTP_FACTORY,
        ],
        aliases: vec![("otlp_grpc", "otlp"), ("otlp_http", "otlphttp")],
    }
}

#[cfg(test)]
mod tests {
    //! The same lifecycle test for every registered component: shutdown without start, then
    //! build again, start, consume, shutdown.

    use std::sync::Arc;

    use pipeline_core::otlp::tonic::collector::trace::v1::ExportTraceServiceRequest;
    use pipeline_core::{
        ComponentId, ConsumeError, Consumer, ExporterContext, Payload, PipelineId,
        ProcessorContext, ReceiverContext, Signal, Telemetry,
    };

    use super::builtin;

    struct Sink;

    #[async_trait::async_trait]
    impl Consumer for Sink {
        async fn consume(&self, _: Payload) -> Result<(), ConsumeError> {
            Ok(())
        }
    }

    /// A minimal config per type: loopback port 0 for anything that listens, an unreachable
    /// backend with a short timeout and no retries for anything that sends.
    fn config_for(type_name: &str) -> serde_yaml::Value {
        let yaml = match type_name {
            "otlp_receiver" => {
                "protocols: {grpc: {endpoint: '127.0.0.1:0'}, http: {endpoint: '127.0.0.1:0'}}"
            }
            "memory_limiter" => "check_interval: 1s\nlimit_mib: 4096",
            "otlp" | "otlphttp" => {
                "endpoint: 'http://127.0.0.1:1'\ntls: {insecure: true}\ntimeout: 200ms\nretry_on_failure: {enabled: false}"
            }
            "prometheus" => "endpoint: '127.0.0.1:0'",
            "ebpf" => "open_ports: 1",
            _ => "{}",
        };
        serde_yaml::from_str(yaml).expect("test yaml")
    }

    fn is_root() -> bool {
        std::fs::read_to_string("/proc/self/status")
            .ok()
            .and_then(|s| {
                s.lines()
                    .find(|l| l.starts_with("Uid:"))
                    .map(|l| l.split_whitespace().nth(2) == Some("0"))
            })
            .unwrap_or(false)
    }

    fn payload(signal: Signal) -> Payload {
        match signal {
            Signal::Traces => Payload::from_traces(ExportTraceServiceRequest::default()),
            Signal::Metrics => Payload::from_metrics(Default::default()),
            Signal::Logs => Payload::from_logs(Default::default()),
        }
    }

    #[tokio::test]
    async fn every_component_survives_the_standard_lifecycle() {
        let reg = builtin();
        let tel = Telemetry::default();
        for f in &reg.receivers {
            let key = if f.type_name == "otlp" {
                "otlp_receiver"
            } else {
                f.type_name
            };
            let cfg = (f.parse)(&config_for(key), "receivers").expect(f.type_name);
            let ctx = || ReceiverContext {
                id: ComponentId::parse(f.type_name).unwrap(),
                consumers: f
                    .signals
                    .iter()
                    .map(|s| (*s, Arc::new(Sink) as Arc<dyn Consumer>))
                    .collect(),
                telemetry: tel.clone(),
            };
            let r = cfg.build(ctx()).expect(f.type_name);
            r.shutdown().await.expect("shutdown without start");
            if f.type_name == "ebpf" && !is_root() {
                assert!(
                    std::env::var("SONDE_CI").as_deref() != Ok("1"),
                    "the ebpf receiver must be started in CI (root)"
                );
                eprintln!("SKIPPED starting the ebpf receiver: loading eBPF programs needs root");
                continue;
            }
            let r = cfg.build(ctx()).expect(f.type_name);
            r.start().await.expect(f.type_name);
            r.shutdown().await.expect(f.type_name);
        }
        for f in &reg.processors {
            let cfg = (f.parse)(&config_for(f.type_name), "processors").expect(f.type_name);
            for &signal in f.signals {
                let ctx = || ProcessorContext {
                    id: ComponentId::parse(f.type_name).unwrap(),
                    pipeline: PipelineId { signal, name: None },
                    next: Arc::new(Sink),
                    telemetry: tel.clone(),
                };
                let p = cfg.build(ctx()).expect(f.type_name);
                p.shutdown().await.expect("shutdown without start");
                let p = cfg.build(ctx()).expect(f.type_name);
                p.start().await.expect(f.type_name);
                p.consume(payload(signal)).await.expect(f.type_name);
                p.shutdown().await.expect(f.type_name);
            }
        }
        for f in &reg.exporters {
            let cfg = (f.parse)(&config_for(f.type_name), "exporters").expect(f.type_name);
            for &signal in f.signals {
                let ctx = || ExporterContext {
                    id: ComponentId::parse(f.type_name).unwrap(),
                    signal,
                    telemetry: tel.clone(),
                };
                let e = cfg.build(ctx()).expect(f.type_name);
                e.shutdown().await.expect("shutdown without start");
                let e = cfg.build(ctx()).expect(f.type_name);
                e.start().await.expect(f.type_name);
                // An unreachable backend may refuse; what matters is no panic and a clean stop.
                let _ = e.consume(payload(signal)).await;
                e.shutdown().await.expect(f.type_name);
            }
        }
    }
}
