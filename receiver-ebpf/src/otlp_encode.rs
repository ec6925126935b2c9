//! Spans straight to OTLP protobuf bytes, for `Payload::from_own_encoding`: building and dropping
//! prost messages costs about as much per span as everything else this receiver does per
//! request, and the pipeline forwards bytes as they are. The attributes come from the same
//! walk as [`SpanRecord::to_otlp`]; a test checks that both forms decode to the same message.

use std::sync::Arc;

use bytes::Bytes;
use pipeline_core::otlp::tonic::common::v1::{any_value, KeyValue};
use pipeline_core::otlp::tonic::resource::v1::Resource;
use pipeline_core::{Payload, Signal};

use crate::spans::{scope, AttrSink, ProcessMeta, SpanKind, SpanRecord};

const LEN: u8 = 2;
const VARINT: u8 = 0;
const I64: u8 = 1;
const I32: u8 = 5;

#[inline(always)]
fn put_varint(buf: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        buf.push((v as u8) | 0x80);
        v >>= 7;
    }
    buf.push(v as u8);
}

#[inline(always)]
fn varint_len(v: u64) -> usize {
    // ceil(bits / 7) without a division: (bits * 9 + 64) / 64 for bits in 1..=64.
    let bits = 64 - (v | 1).leading_zeros() as usize;
    (bits * 9 + 64) >> 6
}

#[inline(always)]
fn put_tag(buf: &mut Vec<u8>, field: u32, wire_type: u8) {
    put_varint(buf, u64::from(field) << 3 | u64::from(wire_type));
}

#[inline(always)]
fn put_bytes(buf: &mut Vec<u8>, field: u32, data: &[u8]) {
    put_tag(buf, field, LEN);
    put_varint(buf, data.len() as u64);
    buf.extend_from_slice(data);
}

/// Length of a LEN field's tag (for fields 1-15) + length prefix + contents.
#[inline(always)]
fn len_field(contents: usize) -> usize {
    1 + varint_len(contents as u64) + contents
}

/// A `KeyValue` (as field `field` of its parent) whose `AnyValue` is `value_len` bytes, written
/// by `value`.
#[inline(always)]
fn put_kv(
    buf: &mut Vec<u8>,
    field: u32,
    key: &str,
    value_len: usize,
    value: impl FnOnce(&mut Vec<u8>),
) {
    let kv_len = len_field(key.len()) + len_field(value_len);
    put_tag(buf, field, LEN);
    put_varint(buf, kv_len as u64);
    put_bytes(buf, 1, key.as_bytes());
    put_tag(buf, 2, LEN);
    put_varint(buf, value_len as u64);
    value(buf);
}

#[inline(always)]
fn put_kv_str(buf: &mut Vec<u8>, field: u32, key: &str, v: &str) {
    put_kv(buf, field, key, len_field(v.len()), |b| {
        put_bytes(b, 1, v.as_bytes())
    });
}

#[inline(always)]
fn put_kv_int(buf: &mut Vec<u8>, field: u32, key: &str, v: i64) {
    put_kv(buf, field, key, 1 + varint_len(v as u64), |b| {
        put_tag(b, 3, VARINT);
        put_varint(b, v as u64);
    });
}

/// Writes the length of the field contents that follow a two-byte placeholder at `buf[at..]`
/// into the placeholder, moving the contents when the length needs other than two bytes.
fn fix_length(buf: &mut Vec<u8>, at: usize, tmp: &mut Vec<u8>) {
    let len = buf.len() - at - 2;
    if (128..16_384).contains(&len) {
        buf[at] = (len as u8) | 0x80;
        buf[at + 1] = (len >> 7) as u8;
    } else {
        tmp.clear();
        put_varint(tmp, len as u64);
        buf.splice(at..at + 2, tmp.iter().copied());
    }
}

/// Any `KeyValue` with a scalar value (what resources here carry).
fn put_key_value(buf: &mut Vec<u8>, field: u32, kv: &KeyValue) {
    use any_value::Value;
    match kv.value.as_ref().and_then(|v| v.value.as_ref()) {
        Some(Value::StringValue(s)) => put_kv_str(buf, field, &kv.key, s),
        Some(Value::IntValue(i)) => put_kv_int(buf, field, &kv.key, *i),
        Some(Value::BoolValue(v)) => put_kv(buf, field, &kv.key, 2, |b| {
            put_tag(b, 2, VARINT);
            b.push(u8::from(*v));
        }),
        Some(Value::DoubleValue(d)) => put_kv(buf, field, &kv.key, 9, |b| {
            put_tag(b, 4, I64);
            b.extend_from_slice(&d.to_le_bytes());
        }),
        // Not made here; an empty AnyValue keeps the key.
        _ => put_kv(buf, field, &kv.key, 0, |_| {}),
    }
}

/// An encoded `Resource` message (its contents, without tag or length).
pub(crate) fn encode_resource(r: &Resource) -> Vec<u8> {
    let mut buf = Vec::with_capacity(512);
    for kv in &r.attributes {
        put_key_value(&mut buf, 1, kv);
    }
    buf
}

fn encode_scope() -> Vec<u8> {
    let s = scope();
    let mut buf = Vec::with_capacity(64);
    put_bytes(&mut buf, 1, s.name.as_bytes());
    put_bytes(&mut buf, 2, s.version.as_bytes());
    buf
}

struct WireAttrs<'a>(&'a mut Vec<u8>);

impl AttrSink for WireAttrs<'_> {
    #[inline(always)]
    fn str(&mut self, key: &'static str, value: &str) {
        put_kv_str(self.0, 9, key, value);
    }
    #[inline(always)]
    fn int(&mut self, key: &'static str, value: i64) {
        put_kv_int(self.0, 9, key, value);
    }
}

/// Encodes batches of spans, reusing its buffers.
pub struct TraceEncoder {
    scope: Vec<u8>,
    /// A span's length prefix when it is not two bytes long.
    len_prefix: Vec<u8>,
    spans: Vec<u8>,
    scratch: String,
}

impl Default for TraceEncoder {
    fn default() -> Self {
        TraceEncoder {
            scope: encode_scope(),
            len_prefix: Vec::with_capacity(8),
            spans: Vec::with_capacity(64 * 1024),
            scratch: String::with_capacity(128),
        }
    }
}

impl TraceEncoder {
    /// The spans as an encoded `ExportTraceServiceRequest`: one `ResourceSpans` per process in
    /// first-seen order, as [`to_otlp`] groups them.
    pub fn encode(&mut self, spans: &[SpanRecord]) -> Vec<u8> {
        let mut out = Vec::with_capacity(spans.len() * 512);
        let mut processes: Vec<&Arc<ProcessMeta>> = Vec::new();
        for s in spans {
            if !processes.iter().any(|p| Arc::ptr_eq(p, &s.process)) {
                processes.push(&s.process);
            }
        }
        for process in processes {
            self.spans.clear();
            for s in spans.iter().filter(|s| Arc::ptr_eq(&s.process, process)) {
                self.encode_span(s);
            }
            let resource = &process.resource_encoded;
            let scope_spans = len_field(self.scope.len()) + self.spans.len();
            let resource_spans = len_field(resource.len()) + len_field(scope_spans);
            put_tag(&mut out, 1, LEN);
            put_varint(&mut out, resource_spans as u64);
            put_bytes(&mut out, 1, resource);
            put_tag(&mut out, 2, LEN);
            put_varint(&mut out, scope_spans as u64);
            put_bytes(&mut out, 1, &self.scope);
            out.extend_from_slice(&self.spans);
        }
        out
    }

    /// The spans as a traces payload.
    pub fn payload(&mut self, spans: &[SpanRecord]) -> Payload {
        let bytes = Bytes::from(self.encode(spans));
        Payload::from_own_encoding(Signal::Traces, bytes, spans.len())
    }

    /// Appends `s` to `self.spans` as field 2 (`spans`) of a `ScopeSpans`. The span is written
    /// in place after a two-byte length (what spans of 128 B to 16 KiB need), fixed up after.
    fn encode_span(&mut self, s: &SpanRecord) {
        let at = self.spans.len();
        self.spans.extend_from_slice(&[(2 << 3) | LEN, 0, 0]);
        Self::encode_span_fields(&mut self.spans, &mut self.scratch, s);
        fix_length(&mut self.spans, at + 1, &mut self.len_prefix);
    }

    fn encode_span_fields(buf: &mut Vec<u8>, scratch: &mut String, s: &SpanRecord) {
        put_bytes(buf, 1, &s.trace_id);
        put_bytes(buf, 2, &s.span_id);
        if let Some(p) = &s.parent_span_id {
            put_bytes(buf, 4, p);
        }
        put_tag(buf, 16, I32);
        buf.extend_from_slice(&s.otlp_flags().to_le_bytes());
        let method = s.name_method();
        put_tag(buf, 5, LEN);
        put_varint(buf, (method.len() + 1 + s.route.len()) as u64);
        buf.extend_from_slice(method.as_bytes());
        buf.push(b' ');
        buf.extend_from_slice(s.route.as_bytes());
        put_tag(buf, 6, VARINT);
        put_varint(
            buf,
            match s.kind {
                SpanKind::Server => 2,
                SpanKind::Client => 3,
            },
        );
        put_tag(buf, 7, I64);
        buf.extend_from_slice(&s.start_unix_nano.to_le_bytes());
        put_tag(buf, 8, I64);
        buf.extend_from_slice(&s.end_unix_nano.to_le_bytes());
        s.visit_attributes(scratch, &mut WireAttrs(buf));
        if s.error_kind().is_some() {
            // Status { code: STATUS_CODE_ERROR (2) }
            put_tag(buf, 15, LEN);
            put_varint(buf, 2);
            put_tag(buf, 3, VARINT);
            put_varint(buf, 2);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{ConnKey, HttpExchange, Outcome, RequestStart, Role, Tuple};
    use crate::spans::{to_otlp, HostInfo, ProcessInfo, SdkLanguage, Tracer, TracerConfig};

    const MS: u64 = 1_000_000;

    fn exchange(pid: u32, role: Role, sock: u64, start: u64) -> HttpExchange {
        HttpExchange {
            conn: ConnKey { pid, sock_id: sock },
            tid: pid,
            role,
            tuple: Tuple {
                local: "[::ffff:10.0.0.1]:8000".parse().expect("addr"),
                remote: "10.0.0.2:41000".parse().expect("addr"),
            },
            seq: 0,
            method: "GET".into(),
            target: "/items/123?x=1".into(),
            version: "HTTP/1.1".into(),
            host: None,
            traceparent: None,
            user_agent: None,
            status: 200,
            request_body_size: 0,
            response_body_size: 1 << 40,
            request_head_size: 0,
            response_head_size: 0,
            conn_start_ts: Some(start - MS),
            request_start_ts: start,
            response_start_ts: start + MS,
            end_ts: start + 2 * MS,
            outcome: Outcome::Complete,
            comm: "srv".into(),
        }
    }

    /// A mix of everything the attribute walk branches on, from three processes interleaved.
    fn spans() -> Vec<SpanRecord> {
        let mut t = Tracer::with_seed(
            TracerConfig {
                host: HostInfo {
                    id: "h".into(),
                    name: "n".into(),
                },
                ..TracerConfig::default()
            },
            3,
        );
        t.set_clock_offset(1_700_000_000_000_000_000);
        t.upsert_process(ProcessInfo {
            pid: 1,
            exe_path: "/usr/bin/srv".into(),
            exe_name: "srv".into(),
            cmdline: "srv --port 8000".into(),
            cgroup_path: Some("/a/b".into()),
            container_id: Some("abc123".into()),
            service_name: None,
            sdk_language: SdkLanguage::Rust,
        });
        let mut list = Vec::new();
        let mut e = exchange(1, Role::Server, 1, 10 * MS);
        e.traceparent = Some("00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01".into());
        e.user_agent = Some("curl/8".into());
        list.push(e);
        let mut e = exchange(2, Role::Client, 2, 11 * MS);
        e.host = Some("api:9000".into());
        e.status = 503;
        e.method = "BREW".into();
        list.push(e);
        let mut e = exchange(1, Role::Server, 3, 12 * MS);
        e.status = 0;
        e.outcome = Outcome::ClosedBeforeResponse;
        e.version = "HTTP/1.0".into();
        list.push(e);
        let mut e = exchange(3, Role::Client, 4, 13 * MS);
        e.outcome = Outcome::ClosedDuringResponse;
        e.target = "http://example.com/x".into();
        list.push(e);
        let mut e = exchange(2, Role::Server, 5, 14 * MS);
        e.status = 500;
        list.push(e);
        for e in list {
            t.request_start(&RequestStart {
                conn: e.conn,
                tid: e.tid,
                role: e.role,
                tuple: e.tuple,
                ts: e.request_start_ts,
                seq: 0,
            });
            t.exchange(e);
        }
        t.advance(10_000 * MS);
        t.take_spans()
    }

    #[test]
    fn encoded_bytes_decode_to_the_message_form() {
        let spans = spans();
        assert_eq!(spans.len(), 5);
        let want = to_otlp(&spans);
        assert_eq!(want.resource_spans.len(), 3);
        let mut enc = TraceEncoder::default();
        let mut payload = enc.payload(&spans);
        assert!(payload.is_encoded());
        assert_eq!(payload.items(), 5);
        let got = payload.traces().expect("decodes");
        assert_eq!(**got, want);
        // Buffers are reused, not accumulated.
        let mut again = enc.payload(&spans[1..]);
        assert_eq!(**again.traces().expect("decodes"), to_otlp(&spans[1..]));
        assert!(enc.encode(&[]).is_empty());
    }

    #[test]
    fn varint_lengths() {
        let mut values = vec![0u64, u64::MAX];
        for bit in 0..64 {
            values.extend([(1u64 << bit) - 1, 1 << bit, (1 << bit) + 1]);
        }
        for v in values {
            let mut b = Vec::new();
            put_varint(&mut b, v);
            assert_eq!(b.len(), varint_len(v), "{v}");
        }
    }

    #[test]
    fn length_placeholders_are_fixed_up_for_any_length() {
        let mut tmp = Vec::new();
        for len in [0usize, 1, 127, 128, 300, 16_383, 16_384, 70_000, 3_000_000] {
            let contents: Vec<u8> = (0..len).map(|i| i as u8).collect();
            let mut buf = vec![7u8, 0, 0];
            buf.extend_from_slice(&contents);
            fix_length(&mut buf, 1, &mut tmp);
            let mut want = vec![7u8];
            put_varint(&mut want, len as u64);
            want.extend_from_slice(&contents);
            assert_eq!(buf, want, "{len}");
        }
    }
}
