//! The trace printer (`trace_printer`, env `OTEL_EBPF_TRACE_PRINTER`): one line per span on
//! stdout, in OBI's formats.
//!
//! `text` follows OBI's line field for field, with two deliberate differences: the timestamp
//! is the span start with real nanoseconds (OBI's layout prints month, day, hour, minute and
//! second where the fraction should be), and `responseLen` of a client span is the response's
//! real size (OBI's generic tracer often reports 0 there). `contentLen`/`responseLen` are whole
//! messages as OBI counts them: start line, headers and body (a curl GET is 78 B). The path is
//! `url.path` (no query string), then `(route)`.
//!
//! Names in `[ip as name:port]`, client side first: a server span shows its peer by IP (as OBI
//! does: it resolves no names) and itself by service name; a client span shows itself by
//! service name and the destination by the `Host` header's name (OBI's choice, hence
//! `localhost` in the seed's output), else the destination's service name when that process is
//! traced too, else its IP.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::io;

use serde::Serialize;

use crate::spans::{SpanKind, SpanRecord};

/// OBI's `trace_printer` values (the receiver's config maps its setting onto these).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum PrintMode {
    #[default]
    Disabled,
    Text,
    /// Counts spans and prints the total at shutdown.
    Counter,
    Json,
    JsonIndent,
}

pub struct Printer {
    mode: PrintMode,
    printed: u64,
}

impl Printer {
    pub fn new(mode: PrintMode) -> Printer {
        Printer { mode, printed: 0 }
    }

    pub fn enabled(&self) -> bool {
        self.mode != PrintMode::Disabled
    }

    /// Spans handed to [`Printer::print`] so far.
    pub fn printed(&self) -> u64 {
        self.printed
    }

    /// Writes these spans' lines (one `write` per batch; nothing for `disabled` and `counter`).
    pub fn print(&mut self, spans: &[SpanRecord], out: &mut impl io::Write) -> io::Result<()> {
        self.printed += spans.len() as u64;
        let mut buf = String::new();
        for s in spans {
            match self.mode {
                PrintMode::Disabled | PrintMode::Counter => return Ok(()),
                PrintMode::Text => buf.push_str(&text_line(s)),
                PrintMode::Json => buf.push_str(&json_line(s, false)),
                PrintMode::JsonIndent => buf.push_str(&json_line(s, true)),
            }
            buf.push('\n');
        }
        out.write_all(buf.as_bytes())
    }

    /// At shutdown: `counter` prints its total, like OBI's.
    pub fn finish(&mut self, out: &mut impl io::Write) -> io::Result<()> {
        if self.mode == PrintMode::Counter {
            writeln!(out, "Processed {} requests", self.printed)?;
        }
        Ok(())
    }
}

/// `2025-12-09 12:28:05.412345678`, UTC.
pub fn timestamp(unix_nanos: u64) -> String {
    let (y, mo, d, h, mi, s, n) = pipeline_core::timefmt::fields(unix_nanos);
    format!("{y:04}-{mo:02}-{d:02} {h:02}:{mi:02}:{s:02}.{n:09}")
}

/// A duration as Go's `time.Duration.String` prints it: `0s`, `267.9µs`, `1.5431ms`,
/// `2.202041s`, `1m30.5s`, `2h0m0.000000001s`; the shortest form with no trailing zeros.
pub fn go_duration(ns: i64) -> String {
    let neg = ns < 0;
    let mut u = ns.unsigned_abs();
    // Built backwards, as Go does.
    let mut rev: Vec<char> = Vec::with_capacity(24);
    if u < 1_000_000_000 {
        let prec;
        rev.push('s');
        if u == 0 {
            return "0s".into();
        } else if u < 1_000 {
            prec = 0;
            rev.push('n');
        } else if u < 1_000_000 {
            prec = 3;
            rev.push('µ');
        } else {
            prec = 6;
            rev.push('m');
        }
        u = frac(&mut rev, u, prec);
        int(&mut rev, u);
    } else {
        rev.push('s');
        u = frac(&mut rev, u, 9);
        int(&mut rev, u % 60);
        u /= 60;
        if u > 0 {
            rev.push('m');
            int(&mut rev, u % 60);
            u /= 60;
            if u > 0 {
                rev.push('h');
                int(&mut rev, u);
            }
        }
    }
    if neg {
        rev.push('-');
    }
    rev.iter().rev().collect()
}

/// Pushes (reversed) the `prec` fractional digits of `v / 10^prec` without trailing zeros, and
/// the point if any digit remains; returns the integer part.
fn frac(rev: &mut Vec<char>, mut v: u64, prec: u32) -> u64 {
    let mut print = false;
    for _ in 0..prec {
        let digit = v % 10;
        print = print || digit != 0;
        if print {
            rev.push(char::from(b'0' + digit as u8));
        }
        v /= 10;
    }
    if print {
        rev.push('.');
    }
    v
}

fn int(rev: &mut Vec<char>, mut v: u64) {
    if v == 0 {
        rev.push('0');
        return;
    }
    while v > 0 {
        rev.push(char::from(b'0' + (v % 10) as u8));
        v /= 10;
    }
}

fn hex(bytes: &[u8]) -> String {
    hex::encode(bytes)
}

fn duration_ns(ns: u64) -> i64 {
    i64::try_from(ns).unwrap_or(i64::MAX)
}

/// (client side, server side) as `(ip, name, port)`.
fn endpoints(s: &SpanRecord) -> ((String, String, u16), (String, String, u16)) {
    let local = s.local_addr();
    let peer = s.peer_addr();
    let service = s.process.service_name.to_string();
    match s.kind {
        SpanKind::Server => (
            (peer.ip().to_string(), peer.ip().to_string(), peer.port()),
            (local.ip().to_string(), service, local.port()),
        ),
        SpanKind::Client => {
            let name = s
                .host_header_name()
                .map(str::to_string)
                .or_else(|| s.peer_service.as_deref().map(str::to_string))
                .unwrap_or_else(|| peer.ip().to_string());
            (
                (local.ip().to_string(), service, local.port()),
                (peer.ip().to_string(), name, peer.port()),
            )
        }
    }
}

fn type_name(kind: SpanKind) -> &'static str {
    match kind {
        SpanKind::Server => "HTTP",
        SpanKind::Client => "HTTPClient",
    }
}

/// One `text` line (no newline).
pub fn text_line(s: &SpanRecord) -> String {
    let ((pip, pname, pport), (hip, hname, hport)) = endpoints(s);
    let mut line = String::with_capacity(256);
    // Writing to a String cannot fail.
    let _ = write!(
        line,
        "{} ({}[{}]) {} {} {} {}({}) [{pip} as {pname}:{pport}]->[{hip} as {hname}:{hport}] \
         contentLen:{}B responseLen:{}B svc=[{} {}] traceparent=[00-{}-{}[{}]-{:02x}]",
        timestamp(s.start_unix_nano),
        go_duration(duration_ns(s.total_ns())),
        go_duration(duration_ns(s.processing_ns())),
        type_name(s.kind),
        s.status,
        s.exchange.method,
        s.path,
        s.route,
        s.request_wire_size(),
        s.response_wire_size(),
        s.process.service_name,
        s.process.info.sdk_language.as_str(),
        hex(&s.trace_id),
        hex(&s.span_id),
        hex(&s.parent_span_id.unwrap_or([0; 8])),
        s.trace_flags,
    );
    line
}

/// The `json` object of a span, with OBI's keys (times in µs since the epoch, as strings).
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct JsonSpan<'a> {
    #[serde(rename = "type")]
    kind_name: &'static str,
    kind: &'static str,
    method: &'a str,
    path: &'a str,
    route: &'a str,
    status: u16,
    content_length: u64,
    response_length: u64,
    peer: String,
    peer_port: String,
    peer_name: String,
    host: String,
    host_port: String,
    host_name: String,
    start_time: String,
    start: String,
    handler_start: String,
    end: String,
    duration: String,
    #[serde(rename = "durationUSec")]
    duration_usec: String,
    handler_duration: String,
    #[serde(rename = "handlerDurationUSec")]
    handler_duration_usec: String,
    #[serde(rename = "traceID")]
    trace_id: String,
    #[serde(rename = "spanID")]
    span_id: String,
    #[serde(rename = "parentSpanID")]
    parent_span_id: String,
    flags: String,
    service_name: &'a str,
    sdk_language: &'static str,
    pid: u32,
    attributes: BTreeMap<String, serde_json::Value>,
}

/// One `json` line (or indented block, for `json_indent`); no trailing newline.
pub fn json_line(s: &SpanRecord, indent: bool) -> String {
    use pipeline_core::otlp::tonic::common::v1::any_value::Value;
    let ((pip, pname, pport), (hip, hname, hport)) = endpoints(s);
    let attributes = s
        .to_otlp()
        .attributes
        .into_iter()
        .filter_map(|kv| {
            let v = match kv.value?.value? {
                Value::StringValue(v) => serde_json::Value::from(v),
                Value::IntValue(v) => serde_json::Value::from(v),
                Value::BoolValue(v) => serde_json::Value::from(v),
                Value::DoubleValue(v) => serde_json::Value::from(v),
                _ => return None,
            };
            Some((kv.key, v))
        })
        .collect();
    let total = duration_ns(s.total_ns());
    let processing = duration_ns(s.processing_ns());
    let j = JsonSpan {
        kind_name: type_name(s.kind),
        kind: match s.kind {
            SpanKind::Server => "SPAN_KIND_SERVER",
            SpanKind::Client => "SPAN_KIND_CLIENT",
        },
        method: &s.exchange.method,
        path: &s.path,
        route: &s.route,
        status: s.status,
        content_length: s.request_wire_size(),
        response_length: s.response_wire_size(),
        peer: pip,
        peer_port: pport.to_string(),
        peer_name: pname,
        host: hip,
        host_port: hport.to_string(),
        host_name: hname,
        start_time: timestamp(s.start_unix_nano),
        start: (s.start_unix_nano / 1000).to_string(),
        handler_start: (s.request_start_unix_nano / 1000).to_string(),
        end: (s.end_unix_nano / 1000).to_string(),
        duration: go_duration(total),
        duration_usec: (total / 1000).to_string(),
        handler_duration: go_duration(processing),
        handler_duration_usec: (processing / 1000).to_string(),
        trace_id: hex(&s.trace_id),
        span_id: hex(&s.span_id),
        parent_span_id: hex(&s.parent_span_id.unwrap_or([0; 8])),
        flags: s.trace_flags.to_string(),
        service_name: &s.process.service_name,
        sdk_language: s.process.info.sdk_language.as_str(),
        pid: s.process.info.pid,
        attributes,
    };
    let out = if indent {
        serde_json::to_string_pretty(&j)
    } else {
        serde_json::to_string(&j)
    };
    // Serializing plain strings and numbers cannot fail.
    out.unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use std::net::SocketAddr;
    use std::sync::Arc;

    use super::*;
    use crate::linker::ParentKind;
    use crate::model::{ConnKey, HttpExchange, Outcome, Role, Tuple};
    use crate::spans::{HostInfo, ProcessInfo, ProcessMeta, SdkLanguage};

    /// 2025-12-09 12:28:05 UTC.
    const T0: u64 = 1_765_283_285_000_000_000;

    fn meta(pid: u32, name: &str, lang: SdkLanguage) -> Arc<ProcessMeta> {
        let info = ProcessInfo {
            pid,
            exe_name: name.into(),
            sdk_language: lang,
            ..ProcessInfo::default()
        };
        Arc::new(ProcessMeta::new(info, &HostInfo::default(), "sonde"))
    }

    fn id<const N: usize>(h: &str) -> [u8; N] {
        let v = hex::decode(h).expect("hex");
        v.try_into().expect("length")
    }

    #[allow(clippy::too_many_arguments)]
    fn span(
        kind: SpanKind,
        process: Arc<ProcessMeta>,
        (local, remote): (&str, &str),
        (start, req_start, end): (u64, u64, u64),
        (req_len, resp_len): (u64, u64),
        host: Option<&str>,
        (trace, span, parent): (&str, &str, &str),
    ) -> SpanRecord {
        let local: SocketAddr = local.parse().expect("addr");
        let remote: SocketAddr = remote.parse().expect("addr");
        let parent: [u8; 8] = id(parent);
        SpanRecord {
            kind,
            trace_id: id(trace),
            span_id: id(span),
            parent_span_id: (parent != [0; 8]).then_some(parent),
            trace_flags: 1,
            parent: ParentKind::None,
            process,
            peer_service: None,
            path: "/".into(),
            route: "/".into(),
            status: 200,
            start_unix_nano: start,
            request_start_unix_nano: req_start,
            end_unix_nano: end,
            exchange: Box::new(HttpExchange {
                conn: ConnKey { pid: 1, sock_id: 1 },
                tid: 1,
                role: match kind {
                    SpanKind::Server => Role::Server,
                    SpanKind::Client => Role::Client,
                },
                tuple: Tuple { local, remote },
                seq: 0,
                method: "GET".into(),
                target: "/".into(),
                version: "HTTP/1.1".into(),
                host: host.map(Into::into),
                traceparent: None,
                user_agent: None,
                status: 200,
                request_body_size: req_len,
                response_body_size: resp_len,
                request_head_size: 0,
                response_head_size: 0,
                conn_start_ts: None,
                request_start_ts: 0,
                response_start_ts: 0,
                end_ts: 0,
                outcome: Outcome::Complete,
                comm: "envoy".into(),
            }),
        }
    }

    /// The seed's two chained proxies, with the reference's ids, addresses and durations.
    fn seed_chain() -> Vec<SpanRecord> {
        let envoy = meta(10, "envoy", SdkLanguage::Generic);
        let backend = meta(20, "backend", SdkLanguage::Go);
        let trace = "69977bee0c2964b8fe53cdd16f8a9d19";
        let at = |total: u64, processing: u64| (T0, T0 + total - processing, T0 + total);
        vec![
            span(
                SpanKind::Server,
                envoy.clone(),
                ("172.19.0.5:9000", "172.19.0.1:59030"),
                at(2_202_041, 1_524_713),
                (78, 223),
                Some("localhost:9000"),
                (trace, "856c9f700e73bf0d", "0000000000000000"),
            ),
            span(
                SpanKind::Client,
                envoy.clone(),
                ("172.19.0.5:59806", "172.19.0.4:8000"),
                at(1_389_336, 1_389_336),
                (78, 0),
                Some("localhost:9000"),
                (trace, "caa7f1ad1c68fa77", "856c9f700e73bf0d"),
            ),
            span(
                SpanKind::Server,
                envoy.clone(),
                ("[::ffff:172.19.0.4]:8000", "[::ffff:172.19.0.5]:59806"),
                at(1_543_100, 848_574),
                (78, 223),
                Some("localhost:9000"),
                (trace, "cbca9d64d3d26b40", "caa7f1ad1c68fa77"),
            ),
            span(
                SpanKind::Client,
                envoy,
                ("172.19.0.4:34256", "172.19.0.3:8080"),
                at(690_217, 690_217),
                (78, 0),
                Some("localhost:8080"),
                (trace, "5502f7760ed77b5b", "cbca9d64d3d26b40"),
            ),
            span(
                SpanKind::Server,
                backend,
                ("172.19.0.3:8080", "172.19.0.4:34256"),
                at(267_900, 238_737),
                (0, 0),
                Some("localhost:8080"),
                (trace, "ac05c7ebe26f2530", "5502f7760ed77b5b"),
            ),
        ]
    }

    /// The reference's lines (expected-output.txt), timestamp fields removed.
    const REFERENCE: [&str; 5] = [
        "(2.202041ms[1.524713ms]) HTTP 200 GET /(/) [172.19.0.1 as 172.19.0.1:59030]->[172.19.0.5 as envoy:9000] contentLen:78B responseLen:223B svc=[envoy generic] traceparent=[00-69977bee0c2964b8fe53cdd16f8a9d19-856c9f700e73bf0d[0000000000000000]-01]",
        "(1.389336ms[1.389336ms]) HTTPClient 200 GET /(/) [172.19.0.5 as envoy:59806]->[172.19.0.4 as localhost:8000] contentLen:78B responseLen:0B svc=[envoy generic] traceparent=[00-69977bee0c2964b8fe53cdd16f8a9d19-caa7f1ad1c68fa77[856c9f700e73bf0d]-01]",
        "(1.5431ms[848.574µs]) HTTP 200 GET /(/) [172.19.0.5 as 172.19.0.5:59806]->[172.19.0.4 as envoy:8000] contentLen:78B responseLen:223B svc=[envoy generic] traceparent=[00-69977bee0c2964b8fe53cdd16f8a9d19-cbca9d64d3d26b40[caa7f1ad1c68fa77]-01]",
        "(690.217µs[690.217µs]) HTTPClient 200 GET /(/) [172.19.0.4 as envoy:34256]->[172.19.0.3 as localhost:8080] contentLen:78B responseLen:0B svc=[envoy generic] traceparent=[00-69977bee0c2964b8fe53cdd16f8a9d19-5502f7760ed77b5b[cbca9d64d3d26b40]-01]",
        "(267.9µs[238.737µs]) HTTP 200 GET /(/) [172.19.0.4 as 172.19.0.4:34256]->[172.19.0.3 as backend:8080] contentLen:0B responseLen:0B svc=[backend go] traceparent=[00-69977bee0c2964b8fe53cdd16f8a9d19-ac05c7ebe26f2530[5502f7760ed77b5b]-01]",
    ];

    #[test]
    fn text_lines_match_the_reference_with_a_real_timestamp() {
        for (s, reference) in seed_chain().iter().zip(REFERENCE) {
            assert_eq!(
                text_line(s),
                format!("2025-12-09 12:28:05.000000000 {reference}")
            );
        }
    }

    #[test]
    fn timestamp_has_nine_fraction_digits() {
        assert_eq!(timestamp(T0 + 129_122_850), "2025-12-09 12:28:05.129122850");
        assert_eq!(timestamp(T0 + 7), "2025-12-09 12:28:05.000000007");
    }

    #[test]
    fn client_destination_name_falls_back_to_service_then_ip() {
        let mut s = seed_chain().remove(1);
        s.exchange.host = None;
        s.peer_service = Some("backend".into());
        assert!(
            text_line(&s).contains("->[172.19.0.4 as backend:8000]"),
            "{}",
            text_line(&s)
        );
        s.peer_service = None;
        assert!(text_line(&s).contains("->[172.19.0.4 as 172.19.0.4:8000]"));
        s.exchange.host = Some("[::1]:8000".into());
        assert!(text_line(&s).contains("->[172.19.0.4 as ::1:8000]"));
    }

    #[test]
    fn status_499_and_unsampled_flags_are_printed() {
        let mut s = seed_chain().remove(0);
        s.status = 499;
        s.trace_flags = 0;
        s.path = "/users/42".into();
        s.route = "/users/*".into();
        s.exchange.method = "POST".into();
        assert_eq!(
            text_line(&s),
            "2025-12-09 12:28:05.000000000 (2.202041ms[1.524713ms]) HTTP 499 POST /users/42(/users/*) \
             [172.19.0.1 as 172.19.0.1:59030]->[172.19.0.5 as envoy:9000] contentLen:78B responseLen:223B \
             svc=[envoy generic] traceparent=[00-69977bee0c2964b8fe53cdd16f8a9d19-856c9f700e73bf0d[0000000000000000]-00]"
        );
    }

    #[test]
    fn go_duration_matches_go() {
        for (ns, want) in [
            (0, "0s"),
            (1, "1ns"),
            (999, "999ns"),
            (1_000, "1µs"),
            (1_500, "1.5µs"),
            (267_900, "267.9µs"),
            (305_572, "305.572µs"),
            (366_650, "366.65µs"),
            (1_000_000, "1ms"),
            (1_260_901, "1.260901ms"),
            (1_543_100, "1.5431ms"),
            (999_999_999, "999.999999ms"),
            (1_000_000_000, "1s"),
            (2_202_041_000, "2.202041s"),
            (90_500_000_000, "1m30.5s"),
            (3_600_000_000_000, "1h0m0s"),
            (7_200_000_000_001, "2h0m0.000000001s"),
            (-1_500, "-1.5µs"),
            (i64::MIN, "-2562047h47m16.854775808s"),
            (i64::MAX, "2562047h47m16.854775807s"),
        ] {
            assert_eq!(go_duration(ns), want, "{ns}");
        }
    }

    #[test]
    fn json_lines_carry_obi_keys() {
        let s = &seed_chain()[1];
        let line = json_line(s, false);
        assert!(!line.contains('\n'));
        let v: serde_json::Value = serde_json::from_str(&line).expect("json");
        assert_eq!(v["type"], "HTTPClient");
        assert_eq!(v["kind"], "SPAN_KIND_CLIENT");
        assert_eq!(v["peer"], "172.19.0.5");
        assert_eq!(v["peerPort"], "59806");
        assert_eq!(v["peerName"], "envoy");
        assert_eq!(v["host"], "172.19.0.4");
        assert_eq!(v["hostPort"], "8000");
        assert_eq!(v["hostName"], "localhost");
        assert_eq!(v["duration"], "1.389336ms");
        assert_eq!(v["durationUSec"], "1389");
        assert_eq!(v["start"], (T0 / 1000).to_string());
        assert_eq!(v["traceID"], "69977bee0c2964b8fe53cdd16f8a9d19");
        assert_eq!(v["spanID"], "caa7f1ad1c68fa77");
        assert_eq!(v["parentSpanID"], "856c9f700e73bf0d");
        assert_eq!(v["serviceName"], "envoy");
        assert_eq!(v["attributes"]["url.full"], "http://localhost:9000/");
        assert_eq!(v["attributes"]["http.response.status_code"], 200);
        assert!(json_line(s, true).contains("\n  \"type\": \"HTTPClient\""));
    }

    #[test]
    fn printer_modes() {
        let spans = seed_chain();
        let mut out = Vec::new();
        let mut p = Printer::new(PrintMode::Text);
        p.print(&spans, &mut out).expect("write");
        let text = String::from_utf8(out).expect("utf8");
        assert_eq!(text.lines().count(), 5);
        assert!(text.ends_with('\n'));

        let mut out = Vec::new();
        let mut p = Printer::new(PrintMode::Json);
        p.print(&spans, &mut out).expect("write");
        assert_eq!(String::from_utf8(out).expect("utf8").lines().count(), 5);

        let mut out = Vec::new();
        let mut p = Printer::new(PrintMode::Disabled);
        assert!(!p.enabled());
        p.print(&spans, &mut out).expect("write");
        p.finish(&mut out).expect("write");
        assert!(out.is_empty());

        let mut out = Vec::new();
        let mut p = Printer::new(PrintMode::Counter);
        p.print(&spans, &mut out).expect("write");
        p.print(&spans[..2], &mut out).expect("write");
        assert!(out.is_empty());
        p.finish(&mut out).expect("write");
        assert_eq!(
            String::from_utf8(out).expect("utf8"),
            "Processed 7 requests\n"
        );
    }
}
