//! Trace export requests shaped like an eBPF HTTP instrumenter's output, pre-encoded as
//! ready-to-send gRPC frames so that sending costs the generator almost nothing.
//!
//! One request carries one process (resource with 9 attributes) and one scope with the spans
//! of that process; each span is a server-side HTTP request with 8 attributes. Ids, paths,
//! statuses and times vary from span to span so collectors cannot profit from repetition that
//! real traffic does not have (gzip in particular).

use std::io::Write;
use std::time::{SystemTime, UNIX_EPOCH};

use bytes::{BufMut, Bytes, BytesMut};
use flate2::write::GzEncoder;
use flate2::Compression;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::any_value::Value;
use opentelemetry_proto::tonic::common::v1::{AnyValue, InstrumentationScope, KeyValue};
use opentelemetry_proto::tonic::resource::v1::Resource;
use opentelemetry_proto::tonic::trace::v1::span::SpanKind;
use opentelemetry_proto::tonic::trace::v1::status::StatusCode;
use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, ScopeSpans, Span, Status};
use prost::Message;

/// The gRPC method every request is sent to.
pub const TRACE_EXPORT_PATH: &str = "/opentelemetry.proto.collector.trace.v1.TraceService/Export";

/// Distinct instrumented processes the generated traffic comes from.
const PROCESSES: u64 = 16;

/// (method, route template, path prefix): a prefix ending in `/` gets a numeric id appended.
const ROUTES: [(&str, &str, &str); 6] = [
    ("GET", "/orders/{id}", "/orders/"),
    ("GET", "/users/{id}", "/users/"),
    ("POST", "/checkout", "/checkout"),
    ("GET", "/healthz", "/healthz"),
    ("PUT", "/items/{id}", "/items/"),
    ("GET", "/cart", "/cart"),
];

/// splitmix64: tiny, fast and good enough to make ids and values look random.
pub(crate) fn mix(mut x: u64) -> u64 {
    x = x.wrapping_add(0x9e37_79b9_7f4a_7c15);
    x = (x ^ (x >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    x ^ (x >> 31)
}

fn kv_str(key: &str, value: String) -> KeyValue {
    KeyValue {
        key: key.to_owned(),
        value: Some(AnyValue {
            value: Some(Value::StringValue(value)),
        }),
    }
}

fn kv_int(key: &str, value: i64) -> KeyValue {
    KeyValue {
        key: key.to_owned(),
        value: Some(AnyValue {
            value: Some(Value::IntValue(value)),
        }),
    }
}

fn resource(process: u64) -> Resource {
    let host = process % 4;
    let pid = 1000 + (mix(process) % 60_000) as i64;
    let host_name = format!("node-{host}");
    Resource {
        attributes: vec![
            kv_str("service.name", format!("shop-svc-{process}")),
            kv_str("service.instance.id", format!("{host_name}:{pid}")),
            kv_str(
                "host.id",
                format!("{:016x}{:016x}", mix(host), mix(host + 100)),
            ),
            kv_str("host.name", host_name),
            kv_str("os.type", "linux".to_owned()),
            kv_str("telemetry.sdk.language", "go".to_owned()),
            kv_str(
                "telemetry.sdk.name",
                "opentelemetry-ebpf-instrumentation".to_owned(),
            ),
            kv_str("telemetry.sdk.version", "0.3.0".to_owned()),
            kv_int("process.pid", pid),
        ],
        dropped_attributes_count: 0,
        entity_refs: Vec::new(),
    }
}

/// A client in a small pod network, as node-local eBPF capture sees it.
fn ipv4(r: u64) -> String {
    format!("10.0.{}.{}", (r >> 8) & 3, (r >> 16) & 0xff)
}

fn span(seed: u64, start_ns: u64) -> Span {
    let r = mix(seed);
    let r2 = mix(r);
    let (method, route, path_prefix) = ROUTES[(r % ROUTES.len() as u64) as usize];
    let path = if path_prefix.ends_with('/') {
        format!("{path_prefix}{}", r2 % 10_000)
    } else {
        path_prefix.to_owned()
    };
    // Mostly 200s, a few client and server errors, as in real HTTP traffic.
    let status = match r2 % 50 {
        0 => 500,
        1 | 2 => 404,
        3 => 201,
        _ => 200,
    };
    let duration_ns = 50_000 + (r2 >> 20) % 20_000_000;
    let client = ipv4(r2);
    let mut trace_id = Vec::with_capacity(16);
    trace_id.extend_from_slice(&r.to_be_bytes());
    trace_id.extend_from_slice(&mix(r2).to_be_bytes());
    Span {
        trace_id,
        span_id: mix(r ^ 0x5bd1_e995).to_be_bytes().to_vec(),
        trace_state: String::new(),
        parent_span_id: Vec::new(),
        flags: 0,
        name: format!("{method} {route}"),
        kind: SpanKind::Server as i32,
        start_time_unix_nano: start_ns,
        end_time_unix_nano: start_ns + duration_ns,
        attributes: vec![
            kv_str("http.request.method", method.to_owned()),
            kv_int("http.response.status_code", status),
            kv_str("url.path", path),
            kv_str("server.address", "shop".to_owned()),
            kv_int("server.port", 8080),
            kv_str("client.address", client.clone()),
            kv_str("network.peer.address", client),
            kv_str("http.route", route.to_owned()),
        ],
        dropped_attributes_count: 0,
        events: Vec::new(),
        dropped_events_count: 0,
        links: Vec::new(),
        dropped_links_count: 0,
        status: (status >= 500).then(|| Status {
            message: String::new(),
            code: StatusCode::Error as i32,
        }),
    }
}

/// Builds request number `index` with `spans` spans whose times start near `base_ns`.
pub fn request(index: u64, spans: usize, base_ns: u64) -> ExportTraceServiceRequest {
    let process = mix(index) % PROCESSES;
    let spans = (0..spans as u64)
        .map(|j| {
            let seed = index.wrapping_mul(1_000_003).wrapping_add(j);
            span(seed, base_ns + index * 1_000_000 + j * 10_000)
        })
        .collect();
    ExportTraceServiceRequest {
        resource_spans: vec![ResourceSpans {
            resource: Some(resource(process)),
            scope_spans: vec![ScopeSpans {
                scope: Some(InstrumentationScope {
                    name: "go.opentelemetry.io/obi".to_owned(),
                    version: String::new(),
                    attributes: Vec::new(),
                    dropped_attributes_count: 0,
                }),
                spans,
                schema_url: String::new(),
            }],
            schema_url: String::new(),
        }],
    }
}

/// Wraps an encoded message in a gRPC length-prefixed frame, gzip-compressed if asked (the
/// compressed flag is then set and the request must carry `grpc-encoding: gzip`).
pub fn grpc_frame(message: &[u8], gzip: bool) -> Bytes {
    let compressed;
    let payload: &[u8] = if gzip {
        // Writing into a Vec cannot fail, so neither can the encoder.
        let mut enc = GzEncoder::new(
            Vec::with_capacity(message.len() / 4),
            Compression::default(),
        );
        enc.write_all(message).expect("gzip into a Vec");
        compressed = enc.finish().expect("gzip into a Vec");
        &compressed
    } else {
        message
    };
    let mut out = BytesMut::with_capacity(5 + payload.len());
    out.put_u8(u8::from(gzip));
    out.put_u32(payload.len() as u32);
    out.put_slice(payload);
    out.freeze()
}

fn now_ns() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0)
}

/// The requests of one load, pre-encoded: `distinct` different full requests sent in a cycle,
/// plus a shorter last one when the total is not a multiple of the request size.
pub struct RequestSet {
    frames: Vec<Bytes>,
    tail: Option<(Bytes, u64)>,
    spans_per_request: u64,
    requests: u64,
    total_spans: u64,
    /// Uncompressed protobuf bytes per span, averaged over the distinct requests.
    pub encoded_bytes_per_span: f64,
    pub gzip: bool,
}

impl RequestSet {
    pub fn build(
        total_spans: u64,
        spans_per_request: usize,
        distinct: usize,
        gzip: bool,
    ) -> RequestSet {
        let per = spans_per_request.max(1) as u64;
        let full = total_spans / per;
        let rest = total_spans % per;
        let distinct = (distinct.max(1) as u64).min(full.max(1));
        let base = now_ns();
        let mut encoded_bytes = 0usize;
        let mut encoded_spans = 0u64;
        let frames = (0..distinct)
            .map(|i| {
                let msg = request(i, per as usize, base).encode_to_vec();
                encoded_bytes += msg.len();
                encoded_spans += per;
                grpc_frame(&msg, gzip)
            })
            .collect();
        let tail = (rest > 0).then(|| {
            let msg = request(distinct, rest as usize, base).encode_to_vec();
            (grpc_frame(&msg, gzip), rest)
        });
        RequestSet {
            frames,
            tail,
            spans_per_request: per,
            requests: full + u64::from(rest > 0),
            total_spans,
            encoded_bytes_per_span: encoded_bytes as f64 / encoded_spans.max(1) as f64,
            gzip,
        }
    }

    pub fn requests(&self) -> u64 {
        self.requests
    }

    pub fn total_spans(&self) -> u64 {
        self.total_spans
    }

    /// The frame of request `i` (`i < requests()`) and its span count.
    pub fn get(&self, i: u64) -> (Bytes, u64) {
        match &self.tail {
            Some((frame, n)) if i + 1 == self.requests => (frame.clone(), *n),
            _ => {
                let idx = (i % self.frames.len() as u64) as usize;
                (self.frames[idx].clone(), self.spans_per_request)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use flate2::read::GzDecoder;
    use pipeline_core::wire::count_items;
    use pipeline_core::Signal;
    use std::collections::HashSet;
    use std::io::Read;

    #[test]
    fn span_shape_matches_the_instrumenter() {
        let req = request(7, 100, 1_700_000_000_000_000_000);
        let rs = &req.resource_spans[0];
        let attrs = &rs.resource.as_ref().unwrap().attributes;
        assert_eq!(attrs.len(), 9);
        let instance = attrs
            .iter()
            .find(|kv| kv.key == "service.instance.id")
            .unwrap();
        let Some(Value::StringValue(v)) = &instance.value.as_ref().unwrap().value else {
            panic!("service.instance.id is not a string")
        };
        let (host, pid) = v.split_once(':').unwrap();
        assert!(host.starts_with("node-"));
        assert!(pid.parse::<u32>().is_ok());
        let spans = &rs.scope_spans[0].spans;
        assert_eq!(spans.len(), 100);
        assert!(spans.iter().all(|s| s.attributes.len() == 8));
        let ids: HashSet<_> = spans.iter().map(|s| s.trace_id.clone()).collect();
        assert_eq!(ids.len(), 100);
        assert!(spans
            .iter()
            .all(|s| s.trace_id.len() == 16 && s.span_id.len() == 8));
        assert!(spans
            .iter()
            .all(|s| s.end_time_unix_nano > s.start_time_unix_nano));
    }

    #[test]
    fn encoded_size_is_near_the_reference_shape() {
        // The reference shape is ~285 bytes/span; the semantic-convention keys alone take
        // ~150 of them, so realistic values land a few percent above.
        let set = RequestSet::build(10_000, 100, 50, false);
        let b = set.encoded_bytes_per_span;
        assert!((280.0..=310.0).contains(&b), "{b} bytes per span");
    }

    #[test]
    fn frames_cover_the_total_and_decode() {
        for gzip in [false, true] {
            let set = RequestSet::build(1_050, 100, 4, gzip);
            assert_eq!(set.requests(), 11);
            let mut total = 0;
            for i in 0..set.requests() {
                let (frame, n) = set.get(i);
                assert_eq!(frame[0], u8::from(gzip));
                let len = u32::from_be_bytes([frame[1], frame[2], frame[3], frame[4]]) as usize;
                assert_eq!(len + 5, frame.len());
                let body = if gzip {
                    let mut out = Vec::new();
                    GzDecoder::new(&frame[5..]).read_to_end(&mut out).unwrap();
                    out
                } else {
                    frame[5..].to_vec()
                };
                assert_eq!(count_items(Signal::Traces, &body).unwrap() as u64, n);
                total += n;
            }
            assert_eq!(total, 1_050);
        }
    }
}
