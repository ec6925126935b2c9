//! Every built-in component, by config type name. Adding a component = one line here.

use pipeline_core::Registry;

pub fn builtin() -> Registry {
    Registry {
        receivers: vec![receiver_otlp::FACTORY, receiver_otlp::NOP_FACTORY],
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
