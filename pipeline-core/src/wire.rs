//! Just enough of the protobuf wire format to check, count and split OTLP export requests
//! without decoding them. Every length is bounds-checked, so arbitrary bytes give an error,
//! never a panic.

use bytes::{BufMut, Bytes, BytesMut};
use opentelemetry_proto::tonic::collector::metrics::v1::ExportMetricsServiceRequest;
use opentelemetry_proto::tonic::metrics::v1::metric::Data;

use crate::payload::Signal;

#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
pub enum WireError {
    #[error("truncated varint at byte {0}")]
    Varint(usize),
    #[error("field length runs past the end of the message at byte {0}")]
    Length(usize),
    #[error("unsupported wire type {1} at byte {0}")]
    WireType(usize, u8),
    #[error("field number 0 at byte {0}")]
    FieldZero(usize),
    #[error("field {1} has the wrong wire type at byte {0}")]
    WrongType(usize, u32),
}

/// One field of a message: number, wire type, the value (for LEN fields: the contents) and the
/// whole field including its tag.
pub struct Field<'a> {
    pub number: u32,
    pub wire_type: u8,
    pub value: &'a [u8],
    pub raw: &'a [u8],
    pub offset: usize,
}

pub struct Fields<'a> {
    buf: &'a [u8],
    pos: usize,
    base: usize,
}

pub fn fields(buf: &[u8], base: usize) -> Fields<'_> {
    Fields { buf, pos: 0, base }
}

#[inline]
fn read_varint(buf: &[u8], pos: &mut usize, base: usize) -> Result<u64, WireError> {
    // Most tags and short lengths fit in one byte.
    if let Some(&b) = buf.get(*pos) {
        if b < 0x80 {
            *pos += 1;
            return Ok(u64::from(b));
        }
    }
    let mut v: u64 = 0;
    for i in 0..10 {
        let b = *buf.get(*pos).ok_or(WireError::Varint(base + *pos))?;
        *pos += 1;
        v |= u64::from(b & 0x7f) << (7 * i);
        if b < 0x80 {
            return Ok(v);
        }
    }
    Err(WireError::Varint(base + *pos))
}

impl<'a> Iterator for Fields<'a> {
    type Item = Result<Field<'a>, WireError>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.pos >= self.buf.len() {
            return None;
        }
        let start = self.pos;
        let r = (|| {
            let tag = read_varint(self.buf, &mut self.pos, self.base)?;
            let number = (tag >> 3) as u32;
            let wire_type = (tag & 7) as u8;
            if number == 0 {
                return Err(WireError::FieldZero(self.base + start));
            }
            let value_start;
            let value_end;
            match wire_type {
                0 => {
                    value_start = self.pos;
                    read_varint(self.buf, &mut self.pos, self.base)?;
                    value_end = self.pos;
                }
                1 | 5 => {
                    let n = if wire_type == 1 { 8 } else { 4 };
                    value_start = self.pos;
                    value_end = self.pos + n;
                    if value_end > self.buf.len() {
                        return Err(WireError::Length(self.base + start));
                    }
                    self.pos = value_end;
                }
                2 => {
                    let len = read_varint(self.buf, &mut self.pos, self.base)?;
                    value_start = self.pos;
                    value_end = usize::try_from(len)
                        .ok()
                        .and_then(|l| value_start.checked_add(l))
                        .filter(|&e| e <= self.buf.len())
                        .ok_or(WireError::Length(self.base + start))?;
                    self.pos = value_end;
                }
                w => return Err(WireError::WireType(self.base + start, w)),
            }
            Ok(Field {
                number,
                wire_type,
                value: &self.buf[value_start..value_end],
                raw: &self.buf[start..value_end],
                offset: self.base + start,
            })
        })();
        if r.is_err() {
            // Stop after the first error: the rest of the buffer cannot be framed.
            self.pos = self.buf.len();
        }
        Some(r)
    }
}

/// Checks that every field of `buf` is well framed, without looking inside LEN fields.
fn check_flat(buf: &[u8], base: usize) -> Result<(), WireError> {
    for f in fields(buf, base) {
        f?;
    }
    Ok(())
}

fn expect_len(f: &Field<'_>) -> Result<(), WireError> {
    if f.wire_type == 2 {
        Ok(())
    } else {
        Err(WireError::WrongType(f.offset, f.number))
    }
}

/// Field numbers of the metric data oneof (gauge, sum, histogram, exponential histogram, summary).
const METRIC_DATA_FIELDS: [u32; 5] = [5, 7, 9, 10, 11];

/// Items in one level-3 element: a span or log record is one item; a metric counts its points.
fn leaf_items(signal: Signal, leaf: &[u8], base: usize) -> Result<usize, WireError> {
    match signal {
        Signal::Traces | Signal::Logs => {
            check_flat(leaf, base)?;
            Ok(1)
        }
        Signal::Metrics => {
            let mut n = 0;
            for f in fields(leaf, base) {
                let f = f?;
                if METRIC_DATA_FIELDS.contains(&f.number) {
                    expect_len(&f)?;
                    for dp in fields(f.value, f.offset) {
                        let dp = dp?;
                        if dp.number == 1 {
                            expect_len(&dp)?;
                            check_flat(dp.value, dp.offset)?;
                            n += 1;
                        }
                    }
                }
            }
            Ok(n)
        }
    }
}

fn scope_items(signal: Signal, scope: &[u8], base: usize) -> Result<usize, WireError> {
    let mut n = 0;
    for f in fields(scope, base) {
        let f = f?;
        if f.number == 2 {
            expect_len(&f)?;
            n += leaf_items(signal, f.value, f.offset)?;
        }
    }
    Ok(n)
}

fn resource_items(signal: Signal, res: &[u8], base: usize) -> Result<usize, WireError> {
    let mut n = 0;
    for f in fields(res, base) {
        let f = f?;
        if f.number == 2 {
            expect_len(&f)?;
            n += scope_items(signal, f.value, f.offset)?;
        }
    }
    Ok(n)
}

/// Validates the framing of an encoded export request down to the items and counts them
/// (spans, metric data points, log records).
pub fn count_items(signal: Signal, buf: &[u8]) -> Result<usize, WireError> {
    let mut n = 0;
    for f in fields(buf, 0) {
        let f = f?;
        if f.number == 1 {
            expect_len(&f)?;
            n += resource_items(signal, f.value, f.offset)?;
        }
    }
    Ok(n)
}

pub fn count_metric_points(req: &ExportMetricsServiceRequest) -> usize {
    req.resource_metrics
        .iter()
        .flat_map(|r| &r.scope_metrics)
        .flat_map(|s| &s.metrics)
        .map(|m| match &m.data {
            Some(Data::Gauge(g)) => g.data_points.len(),
            Some(Data::Sum(s)) => s.data_points.len(),
            Some(Data::Histogram(h)) => h.data_points.len(),
            Some(Data::ExponentialHistogram(h)) => h.data_points.len(),
            Some(Data::Summary(s)) => s.data_points.len(),
            None => 0,
        })
        .sum()
}

fn put_len_field(out: &mut BytesMut, number: u32, value: &[u8]) {
    put_varint(out, (u64::from(number) << 3) | 2);
    put_varint(out, value.len() as u64);
    out.put_slice(value);
}

fn put_varint(out: &mut BytesMut, mut v: u64) {
    while v >= 0x80 {
        out.put_u8((v as u8) | 0x80);
        v >>= 7;
    }
    out.put_u8(v as u8);
}

/// A container (resource or scope) being split in two: header fields go to both halves.
struct Halves {
    front: BytesMut,
    rest: BytesMut,
    front_children: usize,
    rest_children: usize,
}

impl Halves {
    fn new() -> Halves {
        Halves {
            front: BytesMut::new(),
            rest: BytesMut::new(),
            front_children: 0,
            rest_children: 0,
        }
    }
    fn header(&mut self, raw: &[u8]) {
        self.front.extend_from_slice(raw);
        self.rest.extend_from_slice(raw);
    }
}

/// Splits an encoded request so the front holds at most `max_items` items (at least one leaf, so
/// a split always makes progress). Returns `(front, rest, items in front)`.
pub fn split(
    signal: Signal,
    buf: &[u8],
    max_items: usize,
) -> Result<(Bytes, Bytes, usize), WireError> {
    let mut front = BytesMut::new();
    let mut rest = BytesMut::new();
    let mut taken = 0usize;
    for r in fields(buf, 0) {
        let r = r?;
        if r.number != 1 || taken >= max_items {
            rest.extend_from_slice(r.raw);
            continue;
        }
        let n = resource_items(signal, r.value, r.offset)?;
        if taken + n <= max_items {
            front.extend_from_slice(r.raw);
            taken += n;
            continue;
        }
        let mut res = Halves::new();
        for s in fields(r.value, r.offset) {
            let s = s?;
            if s.number != 2 {
                res.header(s.raw);
                continue;
            }
            if taken >= max_items {
                res.rest.extend_from_slice(s.raw);
                res.rest_children += 1;
                continue;
            }
            let n = scope_items(signal, s.value, s.offset)?;
            if taken + n <= max_items {
                res.front.extend_from_slice(s.raw);
                res.front_children += 1;
                taken += n;
                continue;
            }
            let mut scope = Halves::new();
            for leaf in fields(s.value, s.offset) {
                let leaf = leaf?;
                if leaf.number != 2 {
                    scope.header(leaf.raw);
                    continue;
                }
                let n = leaf_items(signal, leaf.value, leaf.offset)?;
                if taken + n <= max_items || taken == 0 {
                    scope.front.extend_from_slice(leaf.raw);
                    scope.front_children += 1;
                    taken += n;
                } else {
                    scope.rest.extend_from_slice(leaf.raw);
                    scope.rest_children += 1;
                }
            }
            if scope.front_children > 0 {
                put_len_field(&mut res.front, 2, &scope.front);
                res.front_children += 1;
            }
            if scope.rest_children > 0 {
                put_len_field(&mut res.rest, 2, &scope.rest);
                res.rest_children += 1;
            }
        }
        if res.front_children > 0 {
            put_len_field(&mut front, 1, &res.front);
        }
        if res.rest_children > 0 {
            put_len_field(&mut rest, 1, &res.rest);
        }
    }
    Ok((front.freeze(), rest.freeze(), taken))
}

#[cfg(test)]
mod tests {
    use super::*;
    use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
    use opentelemetry_proto::tonic::resource::v1::Resource;
    use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, ScopeSpans, Span};
    use prost::Message;

    fn req(resources: usize, scopes: usize, spans: usize) -> ExportTraceServiceRequest {
        ExportTraceServiceRequest {
            resource_spans: (0..resources)
                .map(|r| ResourceSpans {
                    resource: Some(Resource {
                        dropped_attributes_count: r as u32,
                        ..Default::default()
                    }),
                    scope_spans: (0..scopes)
                        .map(|_| ScopeSpans {
                            spans: (0..spans)
                                .map(|i| Span {
                                    name: format!("s{i}"),
                                    ..Default::default()
                                })
                                .collect(),
                            ..Default::default()
                        })
                        .collect(),
                    schema_url: "u".into(),
                })
                .collect(),
        }
    }

    #[test]
    fn counts_and_concatenation_merges() {
        let a = req(2, 3, 4).encode_to_vec();
        let b = req(1, 1, 5).encode_to_vec();
        assert_eq!(count_items(Signal::Traces, &a).unwrap(), 24);
        let joined = [a.clone(), b.clone()].concat();
        assert_eq!(count_items(Signal::Traces, &joined).unwrap(), 29);
        let merged = ExportTraceServiceRequest::decode(joined.as_slice()).unwrap();
        assert_eq!(merged.resource_spans.len(), 3);
    }

    #[test]
    fn split_keeps_every_span_once() {
        let whole = req(3, 2, 5);
        let buf = whole.encode_to_vec();
        let mut rest = Bytes::from(buf);
        let mut names = Vec::new();
        let mut chunks = 0;
        while !rest.is_empty() {
            let (front, r, n) = split(Signal::Traces, &rest, 7).unwrap();
            assert!(n <= 7 && n > 0);
            let f = ExportTraceServiceRequest::decode(front.as_ref()).unwrap();
            for rs in &f.resource_spans {
                assert_eq!(rs.schema_url, "u");
                for ss in &rs.scope_spans {
                    names.extend(ss.spans.iter().map(|s| s.name.clone()));
                }
            }
            assert_eq!(count_items(Signal::Traces, &front).unwrap(), n);
            rest = r;
            chunks += 1;
        }
        assert_eq!(names.len(), 30);
        assert_eq!(chunks, 5);
    }

    #[test]
    fn garbage_is_an_error_not_a_panic() {
        let samples: [&[u8]; 5] = [
            &[0x0a, 0xff, 0xff, 0xff, 0xff, 0x0f],
            &[0x0a, 0x05, 0x12, 0x10],
            &[0x08],
            &[0x0b],
            &[0x00, 0x01],
        ];
        for s in samples {
            assert!(count_items(Signal::Traces, s).is_err(), "{s:?}");
        }
        // Deterministic pseudo-random bytes: must never panic.
        let mut x: u32 = 12345;
        for len in 0..2000 {
            let v: Vec<u8> = (0..len % 97)
                .map(|_| {
                    x = x.wrapping_mul(1_103_515_245).wrapping_add(12345);
                    (x >> 16) as u8
                })
                .collect();
            for s in Signal::ALL {
                let _ = count_items(s, &v);
                let _ = split(s, &v, 3);
            }
        }
    }
}
