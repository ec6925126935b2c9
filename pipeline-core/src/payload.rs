//! The unit of data that flows between components.
//!
//! A [`Payload`] carries one signal's data either as OTLP protobuf bytes (an encoded
//! `Export{Traces,Metrics,Logs}ServiceRequest`, possibly several of them back to back) or as the
//! decoded prost message. Receivers hand over the bytes they were sent; only a component that reads
//! or changes fields pays for decoding. Because the three export requests consist of a single
//! repeated field, concatenating two encodings is itself a valid encoding of the merged request,
//! which is what lets the batch processor merge without decoding.

use std::sync::Arc;

use bytes::{Bytes, BytesMut};
use opentelemetry_proto::tonic::collector::logs::v1::ExportLogsServiceRequest;
use opentelemetry_proto::tonic::collector::metrics::v1::ExportMetricsServiceRequest;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use prost::Message;

use crate::wire::{self, WireError};

/// The three OTLP signals.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Signal {
    Traces,
    Metrics,
    Logs,
}

impl Signal {
    pub const ALL: [Signal; 3] = [Signal::Traces, Signal::Metrics, Signal::Logs];

    pub fn as_str(self) -> &'static str {
        match self {
            Signal::Traces => "traces",
            Signal::Metrics => "metrics",
            Signal::Logs => "logs",
        }
    }

    /// Name of the counted item, as used in internal metric names (`accepted_spans`).
    pub fn item_name(self) -> &'static str {
        match self {
            Signal::Traces => "spans",
            Signal::Metrics => "metric_points",
            Signal::Logs => "log_records",
        }
    }

    pub fn parse(s: &str) -> Option<Signal> {
        match s {
            "traces" => Some(Signal::Traces),
            "metrics" => Some(Signal::Metrics),
            "logs" => Some(Signal::Logs),
            _ => None,
        }
    }
}

impl std::fmt::Display for Signal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Decoded form of a payload. `Arc` so fan-out shares one copy; a mutating consumer calls
/// `Arc::make_mut`, which copies only when another consumer still holds it.
#[derive(Debug, Clone)]
pub enum Decoded {
    Traces(Arc<ExportTraceServiceRequest>),
    Metrics(Arc<ExportMetricsServiceRequest>),
    Logs(Arc<ExportLogsServiceRequest>),
}

#[derive(Debug, Clone)]
enum Repr {
    /// Encoded export requests; their concatenation is the encoding of the whole payload.
    Encoded(Vec<Bytes>),
    Decoded(Decoded),
}

/// One signal's data plus its item count (spans, data points or log records).
#[derive(Debug, Clone)]
pub struct Payload {
    signal: Signal,
    items: usize,
    repr: Repr,
}

impl Payload {
    /// Wraps received protobuf bytes after checking their structure and counting items.
    /// Malformed input is rejected here, at the edge, so nothing downstream sees it.
    pub fn from_encoded(signal: Signal, bytes: Bytes) -> Result<Payload, WireError> {
        let items = wire::count_items(signal, &bytes)?;
        Ok(Payload {
            signal,
            items,
            repr: Repr::Encoded(vec![bytes]),
        })
    }

    /// Wraps bytes a component encoded itself, with their item count. Skips the structural
    /// check received bytes get (checked in debug builds): the producer vouches for them.
    pub fn from_own_encoding(signal: Signal, bytes: Bytes, items: usize) -> Payload {
        debug_assert_eq!(wire::count_items(signal, &bytes), Ok(items));
        Payload {
            signal,
            items,
            repr: Repr::Encoded(vec![bytes]),
        }
    }

    pub fn from_traces(req: ExportTraceServiceRequest) -> Payload {
        let items = req
            .resource_spans
            .iter()
            .flat_map(|r| &r.scope_spans)
            .map(|s| s.spans.len())
            .sum();
        Payload {
            signal: Signal::Traces,
            items,
            repr: Repr::Decoded(Decoded::Traces(Arc::new(req))),
        }
    }

    pub fn from_metrics(req: ExportMetricsServiceRequest) -> Payload {
        let items = wire::count_metric_points(&req);
        Payload {
            signal: Signal::Metrics,
            items,
            repr: Repr::Decoded(Decoded::Metrics(Arc::new(req))),
        }
    }

    pub fn from_logs(req: ExportLogsServiceRequest) -> Payload {
        let items = req
            .resource_logs
            .iter()
            .flat_map(|r| &r.scope_logs)
            .map(|s| s.log_records.len())
            .sum();
        Payload {
            signal: Signal::Logs,
            items,
            repr: Repr::Decoded(Decoded::Logs(Arc::new(req))),
        }
    }

    pub fn from_decoded(d: Decoded) -> Payload {
        match d {
            Decoded::Traces(t) => Payload::from_traces(Arc::unwrap_or_clone(t)),
            Decoded::Metrics(m) => Payload::from_metrics(Arc::unwrap_or_clone(m)),
            Decoded::Logs(l) => Payload::from_logs(Arc::unwrap_or_clone(l)),
        }
    }

    pub fn signal(&self) -> Signal {
        self.signal
    }

    /// Spans, metric data points or log records in this payload.
    pub fn items(&self) -> usize {
        self.items
    }

    pub fn is_encoded(&self) -> bool {
        matches!(self.repr, Repr::Encoded(_))
    }

    /// Encoded size in bytes (computed for decoded payloads).
    pub fn encoded_len(&self) -> usize {
        match &self.repr {
            Repr::Encoded(parts) => parts.iter().map(|p| p.len()).sum(),
            Repr::Decoded(Decoded::Traces(t)) => t.encoded_len(),
            Repr::Decoded(Decoded::Metrics(m)) => m.encoded_len(),
            Repr::Decoded(Decoded::Logs(l)) => l.encoded_len(),
        }
    }

    /// The encoded parts, without copying when the payload is still encoded.
    pub fn encoded_parts(&self) -> Vec<Bytes> {
        match &self.repr {
            Repr::Encoded(parts) => parts.clone(),
            Repr::Decoded(d) => vec![encode_decoded(d)],
        }
    }

    /// Appends the protobuf encoding of the whole payload to `buf`.
    pub fn encode_into(&self, buf: &mut BytesMut) {
        match &self.repr {
            Repr::Encoded(parts) => {
                buf.reserve(parts.iter().map(|p| p.len()).sum());
                for p in parts {
                    buf.extend_from_slice(p);
                }
            }
            Repr::Decoded(d) => {
                let r = match d {
                    Decoded::Traces(t) => t.encode(buf),
                    Decoded::Metrics(m) => m.encode(buf),
                    Decoded::Logs(l) => l.encode(buf),
                };
                // BytesMut grows on demand, so encoding cannot run out of space.
                debug_assert!(r.is_ok());
            }
        }
    }

    /// The whole payload as one contiguous protobuf buffer.
    pub fn to_bytes(&self) -> Bytes {
        match &self.repr {
            Repr::Encoded(parts) if parts.len() == 1 => parts[0].clone(),
            _ => {
                let mut buf = BytesMut::with_capacity(self.encoded_len());
                self.encode_into(&mut buf);
                buf.freeze()
            }
        }
    }

    /// Decodes (once) and returns the decoded form; the payload keeps it for later readers.
    pub fn decode(&mut self) -> Result<&mut Decoded, prost::DecodeError> {
        if let Repr::Encoded(parts) = &self.repr {
            let d = decode_parts(self.signal, parts)?;
            self.repr = Repr::Decoded(d);
        }
        match &mut self.repr {
            Repr::Decoded(d) => Ok(d),
            Repr::Encoded(_) => unreachable!("decoded just above"),
        }
    }

    /// Decoded traces, for readers. Errors if this is not a traces payload.
    pub fn traces(&mut self) -> Result<&mut Arc<ExportTraceServiceRequest>, PayloadError> {
        match self.decode()? {
            Decoded::Traces(t) => Ok(t),
            _ => Err(PayloadError::WrongSignal(Signal::Traces)),
        }
    }

    pub fn metrics(&mut self) -> Result<&mut Arc<ExportMetricsServiceRequest>, PayloadError> {
        match self.decode()? {
            Decoded::Metrics(m) => Ok(m),
            _ => Err(PayloadError::WrongSignal(Signal::Metrics)),
        }
    }

    pub fn logs(&mut self) -> Result<&mut Arc<ExportLogsServiceRequest>, PayloadError> {
        match self.decode()? {
            Decoded::Logs(l) => Ok(l),
            _ => Err(PayloadError::WrongSignal(Signal::Logs)),
        }
    }

    /// Call after changing the decoded data in place, so the item count follows.
    pub fn recount(&mut self) {
        if let Repr::Decoded(d) = &self.repr {
            self.items = match d {
                Decoded::Traces(t) => t
                    .resource_spans
                    .iter()
                    .flat_map(|r| &r.scope_spans)
                    .map(|s| s.spans.len())
                    .sum(),
                Decoded::Metrics(m) => wire::count_metric_points(m),
                Decoded::Logs(l) => l
                    .resource_logs
                    .iter()
                    .flat_map(|r| &r.scope_logs)
                    .map(|s| s.log_records.len())
                    .sum(),
            };
        }
    }

    /// Merges `other` (same signal) into `self`. Encoded payloads merge by concatenation.
    pub fn append(&mut self, other: Payload) {
        debug_assert_eq!(self.signal, other.signal);
        self.items += other.items;
        let other_parts = match other.repr {
            Repr::Encoded(p) => p,
            Repr::Decoded(d) => vec![encode_decoded(&d)],
        };
        match &mut self.repr {
            Repr::Encoded(parts) => parts.extend(other_parts),
            Repr::Decoded(d) => {
                let mut parts = vec![encode_decoded(d)];
                parts.extend(other_parts);
                self.repr = Repr::Encoded(parts);
            }
        }
    }

    /// An empty payload of `signal`.
    pub fn empty(signal: Signal) -> Payload {
        Payload {
            signal,
            items: 0,
            repr: Repr::Encoded(Vec::new()),
        }
    }

    /// Splits off a payload holding at most `max_items` items from the front of `self`.
    /// Works on the encoding: resource and scope headers are repeated, items are never decoded.
    pub fn split_front(&mut self, max_items: usize) -> Payload {
        if self.items <= max_items {
            return std::mem::replace(self, Payload::empty(self.signal));
        }
        let whole = self.to_bytes();
        // The bytes were validated when the payload was built (or produced by prost).
        let (front, rest, n) = match wire::split(self.signal, &whole, max_items) {
            Ok(v) => v,
            Err(_) => return std::mem::replace(self, Payload::empty(self.signal)),
        };
        let total = self.items;
        self.items = total - n;
        self.repr = Repr::Encoded(vec![rest]);
        Payload {
            signal: self.signal,
            items: n,
            repr: Repr::Encoded(vec![front]),
        }
    }
}

fn encode_decoded(d: &Decoded) -> Bytes {
    match d {
        Decoded::Traces(t) => Bytes::from(t.encode_to_vec()),
        Decoded::Metrics(m) => Bytes::from(m.encode_to_vec()),
        Decoded::Logs(l) => Bytes::from(l.encode_to_vec()),
    }
}

fn decode_parts(signal: Signal, parts: &[Bytes]) -> Result<Decoded, prost::DecodeError> {
    let joined;
    let buf: &[u8] = if parts.len() == 1 {
        &parts[0]
    } else {
        joined = parts.concat();
        &joined
    };
    Ok(match signal {
        Signal::Traces => Decoded::Traces(Arc::new(ExportTraceServiceRequest::decode(buf)?)),
        Signal::Metrics => Decoded::Metrics(Arc::new(ExportMetricsServiceRequest::decode(buf)?)),
        Signal::Logs => Decoded::Logs(Arc::new(ExportLogsServiceRequest::decode(buf)?)),
    })
}

#[derive(Debug, thiserror::Error)]
pub enum PayloadError {
    #[error("payload does not decode: {0}")]
    Decode(#[from] prost::DecodeError),
    #[error("payload is not {0}")]
    WrongSignal(Signal),
}
