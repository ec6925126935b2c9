//! Spans from HTTP exchanges: the per-process resource, the span record the printer and the
//! metrics read, and its OTLP form.
//!
//! [`Tracer`] is the stage's entry point: it takes request starts and exchanges in event order
//! (plus process information from discovery), links them into traces with
//! [`crate::linker::Linker`], and hands back [`SpanRecord`]s with wall-clock times, ready for
//! [`to_otlp`], the printer and the metrics.

use std::collections::HashMap;
use std::fmt::Write as _;
use std::net::SocketAddr;
use std::sync::Arc;

use pipeline_core::otlp::tonic::collector::trace::v1::ExportTraceServiceRequest;
use pipeline_core::otlp::tonic::common::v1::{any_value, AnyValue, InstrumentationScope, KeyValue};
use pipeline_core::otlp::tonic::resource::v1::Resource;
use pipeline_core::otlp::tonic::trace::v1::{
    span, status, ResourceSpans, ScopeSpans, Span, Status,
};

use crate::http::{FastHash, HttpOutput};
use crate::linker::{Linker, LinkerConfig, LinkerStats, ParentKind, SpanId, TraceId};
use crate::model::{CompactString, ConnKey, HttpExchange, Outcome, RequestStart, Role};

/// The instrumentation scope of every span and metric this receiver makes.
pub const SCOPE_NAME: &str = "sonde.receiver.ebpf";
pub const SCOPE_VERSION: &str = env!("CARGO_PKG_VERSION");
/// Default `telemetry.sdk.name`. OBI reports `opentelemetry-ebpf-instrumentation`; naming the
/// real producer keeps data from both tools apart, and [`TracerConfig::sdk_name`] lets a user
/// whose queries filter on OBI's value set it.
pub const DEFAULT_SDK_NAME: &str = "sonde";

/// `telemetry.sdk.language` of an instrumented process, as OBI guesses it from the executable;
/// `generic` when nothing is known.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum SdkLanguage {
    #[default]
    Generic,
    Go,
    Python,
    Java,
    NodeJs,
    Ruby,
    DotNet,
    Rust,
    Cpp,
    Php,
}

impl SdkLanguage {
    pub fn as_str(self) -> &'static str {
        match self {
            SdkLanguage::Generic => "generic",
            SdkLanguage::Go => "go",
            SdkLanguage::Python => "python",
            SdkLanguage::Java => "java",
            SdkLanguage::NodeJs => "nodejs",
            SdkLanguage::Ruby => "ruby",
            SdkLanguage::DotNet => "dotnet",
            SdkLanguage::Rust => "rust",
            SdkLanguage::Cpp => "cpp",
            SdkLanguage::Php => "php",
        }
    }
}

/// What discovery knows about an instrumented process.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ProcessInfo {
    pub pid: u32,
    pub exe_path: String,
    pub exe_name: String,
    /// The command line, arguments separated by spaces.
    pub cmdline: String,
    /// The process's cgroup v2 path (`/system.slice/nginx.service`).
    pub cgroup_path: Option<String>,
    pub container_id: Option<String>,
    /// A configured service name; the executable name when `None`.
    pub service_name: Option<String>,
    pub sdk_language: SdkLanguage,
}

/// The machine, for `host.*` and `service.instance.id`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct HostInfo {
    pub id: String,
    pub name: String,
}

impl HostInfo {
    /// Reads the machine id (`/etc/machine-id`, else D-Bus's copy, else this boot's id) and
    /// the host name. Blocking file reads: call it once, at start.
    pub fn detect() -> HostInfo {
        let read = |p: &str| {
            std::fs::read_to_string(p)
                .ok()
                .map(|s| s.trim().to_string())
                .filter(|s| !s.is_empty())
        };
        let id = read("/etc/machine-id")
            .or_else(|| read("/var/lib/dbus/machine-id"))
            .or_else(|| read("/proc/sys/kernel/random/boot_id"))
            .unwrap_or_default();
        let name = read("/proc/sys/kernel/hostname").unwrap_or_default();
        HostInfo { id, name }
    }
}

/// A process's identity as spans and metrics carry it, built once per process.
#[derive(Debug)]
pub struct ProcessMeta {
    pub info: ProcessInfo,
    pub service_name: Arc<str>,
    pub resource: Resource,
    /// `resource` as protobuf, for [`crate::otlp_encode::TraceEncoder`].
    pub resource_encoded: Vec<u8>,
    /// Made up from the kernel's `comm` because discovery had not described the process.
    pub provisional: bool,
}

impl ProcessMeta {
    pub fn new(info: ProcessInfo, host: &HostInfo, sdk_name: &str) -> ProcessMeta {
        let service_name: Arc<str> = match info.service_name.as_deref() {
            Some(s) if !s.is_empty() => s.into(),
            _ if !info.exe_name.is_empty() => info.exe_name.as_str().into(),
            _ => "unknown_service".into(),
        };
        let mut attrs = vec![
            kv_str("service.name", &*service_name),
            kv_str("service.instance.id", format!("{}:{}", host.id, info.pid)),
            kv_str("host.id", &host.id),
            kv_str("host.name", &host.name),
            kv_str("os.type", "linux"),
            kv_str("telemetry.sdk.language", info.sdk_language.as_str()),
            kv_str("telemetry.sdk.name", sdk_name),
            kv_str("telemetry.sdk.version", SCOPE_VERSION),
            kv_int("process.pid", i64::from(info.pid)),
        ];
        for (key, value) in [
            ("process.executable.name", Some(&info.exe_name)),
            ("process.executable.path", Some(&info.exe_path)),
            ("process.command_line", Some(&info.cmdline)),
            ("container.id", info.container_id.as_ref()),
            ("process.linux.cgroup", info.cgroup_path.as_ref()),
        ] {
            if let Some(v) = value.filter(|v| !v.is_empty()) {
                attrs.push(kv_str(key, v));
            }
        }
        let resource = Resource {
            attributes: attrs,
            ..Default::default()
        };
        ProcessMeta {
            info,
            service_name,
            resource_encoded: crate::otlp_encode::encode_resource(&resource),
            resource,
            provisional: false,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum SpanKind {
    Server,
    Client,
}

/// One finished span: the exchange, its place in the trace, and what the printer, the metrics
/// and OTLP need, with times on the wall clock (ns since the epoch).
#[derive(Debug, Clone)]
pub struct SpanRecord {
    pub kind: SpanKind,
    pub trace_id: TraceId,
    pub span_id: SpanId,
    pub parent_span_id: Option<SpanId>,
    pub trace_flags: u8,
    pub parent: ParentKind,
    pub process: Arc<ProcessMeta>,
    /// Service name of the traced process at the other end of the connection.
    pub peer_service: Option<Arc<str>>,
    /// `url.path`: the request target without query or fragment.
    pub path: CompactString,
    /// Low-cardinality form of the path ([`route`]).
    pub route: CompactString,
    /// The status to report: the response's, or 499 for a server request whose client closed
    /// the connection before any response (0 for a client request that got none).
    pub status: u16,
    /// Span start: the "total" start (connection accepted, for a connection's first request).
    pub start_unix_nano: u64,
    /// When the request's first byte was read (server) or written (client).
    pub request_start_unix_nano: u64,
    pub end_unix_nano: u64,
    pub exchange: Box<HttpExchange>,
}

impl SpanRecord {
    pub fn total_ns(&self) -> u64 {
        self.end_unix_nano.saturating_sub(self.start_unix_nano)
    }

    /// From the request's first byte to the end: the total minus time spent queued.
    pub fn processing_ns(&self) -> u64 {
        self.end_unix_nano
            .saturating_sub(self.request_start_unix_nano)
    }

    /// The request's size on the wire: head and body (OBI's `contentLen`).
    pub fn request_wire_size(&self) -> u64 {
        self.exchange
            .request_head_size
            .saturating_add(self.exchange.request_body_size)
    }

    /// The response's size on the wire: head and body (OBI's `responseLen`; 0 without one).
    pub fn response_wire_size(&self) -> u64 {
        self.exchange
            .response_head_size
            .saturating_add(self.exchange.response_body_size)
    }

    /// `METHOD route`, or `HTTP route` for a method outside the standard set.
    pub fn name(&self) -> String {
        format!("{} {}", self.name_method(), self.route)
    }

    /// Why the span is an error (`error.type`), or `None`: server 5xx; client 4xx/5xx or a
    /// response never or only partly received. A server request its client gave up on (499) is
    /// the client's doing, so not an error of the server (as nginx and OBI treat 499).
    pub fn error_type(&self) -> Option<String> {
        self.error_kind().map(|e| e.to_string())
    }

    pub(crate) fn error_kind(&self) -> Option<ErrorKind> {
        match self.kind {
            SpanKind::Server => (self.status >= 500).then_some(ErrorKind::Status(self.status)),
            SpanKind::Client => match self.exchange.outcome {
                Outcome::ClosedBeforeResponse if self.status == 0 => {
                    Some(ErrorKind::ClosedBeforeResponse)
                }
                Outcome::ClosedDuringResponse => Some(ErrorKind::ClosedDuringResponse),
                _ => (self.status >= 400).then_some(ErrorKind::Status(self.status)),
            },
        }
    }

    /// The address of the other end, IPv4-mapped addresses shown as IPv4.
    pub fn peer_addr(&self) -> SocketAddr {
        canonical(self.exchange.tuple.remote)
    }

    pub fn local_addr(&self) -> SocketAddr {
        canonical(self.exchange.tuple.local)
    }

    /// The host part of the `Host` header, if one was sent.
    pub fn host_header_name(&self) -> Option<&str> {
        self.exchange
            .host
            .as_deref()
            .map(host_without_port)
            .filter(|h| !h.is_empty())
    }

    /// `url.full` of a client request: the absolute target as sent, or `http://` + the `Host`
    /// header (else the server's address) + the target.
    pub fn url_full(&self) -> String {
        let mut out = String::new();
        self.write_url_full(&mut out);
        out
    }

    fn write_url_full(&self, out: &mut String) {
        let target = self.exchange.target.as_str();
        if is_absolute_form(target) {
            out.push_str(target);
            return;
        }
        let target = if target.starts_with('/') { target } else { "/" };
        out.push_str("http://");
        match self.exchange.host.as_deref().map(str::trim) {
            Some(h) if !h.is_empty() => out.push_str(h),
            // Writing to a String cannot fail.
            _ => drop(write!(out, "{}", self.peer_addr())),
        }
        out.push_str(target);
    }

    /// The method for the span name: `HTTP` stands for methods outside the standard set.
    pub(crate) fn name_method(&self) -> &str {
        match normalize_method(&self.exchange.method) {
            OTHER_METHOD => "HTTP",
            m => m,
        }
    }

    /// OTLP span flags: the trace flags, and whether the parent is in another process.
    pub(crate) fn otlp_flags(&self) -> u32 {
        let remote = matches!(self.parent, ParentKind::Peer | ParentKind::Header);
        u32::from(self.trace_flags)
            | SPAN_FLAGS_HAS_IS_REMOTE
            | if remote { SPAN_FLAGS_IS_REMOTE } else { 0 }
    }

    /// Walks the span's attributes in order; the one definition both OTLP forms use.
    /// `scratch` holds formatted values (addresses, URLs) without allocating per span.
    pub(crate) fn visit_attributes(&self, scratch: &mut String, sink: &mut impl AttrSink) {
        let ex = &self.exchange;
        let peer = self.peer_addr();
        let local = self.local_addr();
        let method = normalize_method(&ex.method);
        sink.str("http.request.method", method);
        if method == OTHER_METHOD {
            sink.str("http.request.method_original", &ex.method);
        }
        if self.status != 0 {
            sink.int("http.response.status_code", i64::from(self.status));
        }
        sink.str("url.path", &self.path);
        sink.str("http.route", &self.route);
        let ip = |scratch: &mut String, a: SocketAddr| {
            scratch.clear();
            push_ip(scratch, a.ip());
        };
        // Whether `scratch` holds the peer's address already (formatted once per span).
        let mut peer_in_scratch = false;
        match self.kind {
            SpanKind::Server => {
                match self.host_header_name() {
                    Some(h) => sink.str("server.address", h),
                    None => {
                        ip(scratch, local);
                        sink.str("server.address", scratch);
                    }
                }
                sink.int("server.port", i64::from(local.port()));
                ip(scratch, peer);
                peer_in_scratch = true;
                sink.str("client.address", scratch);
            }
            SpanKind::Client => {
                scratch.clear();
                self.write_url_full(scratch);
                sink.str("url.full", scratch);
                match self.host_header_name() {
                    Some(h) => sink.str("server.address", h),
                    None => {
                        ip(scratch, peer);
                        peer_in_scratch = true;
                        sink.str("server.address", scratch);
                    }
                }
                sink.int("server.port", i64::from(peer.port()));
            }
        }
        if !peer_in_scratch {
            ip(scratch, peer);
        }
        sink.str("network.peer.address", scratch);
        sink.int("network.peer.port", i64::from(peer.port()));
        if let Some(v) = ex.version.strip_prefix("HTTP/") {
            sink.str("network.protocol.version", v);
        }
        sink.int(
            "http.request.body.size",
            i64::try_from(ex.request_body_size).unwrap_or(i64::MAX),
        );
        sink.int(
            "http.response.body.size",
            i64::try_from(ex.response_body_size).unwrap_or(i64::MAX),
        );
        if let Some(ua) = ex.user_agent.as_deref().filter(|u| !u.is_empty()) {
            sink.str("user_agent.original", ua);
        }
        if let Some(e) = self.error_kind() {
            scratch.clear();
            // Writing to a String cannot fail.
            let _ = write!(scratch, "{e}");
            sink.str("error.type", scratch);
        }
    }

    /// The OTLP span (see [`TraceEncoder`] for the fast path straight to protobuf).
    pub fn to_otlp(&self) -> Span {
        let mut attrs = KvSink(Vec::with_capacity(16));
        self.visit_attributes(&mut String::new(), &mut attrs);
        let status = self.error_kind().map(|_| Status {
            message: String::new(),
            code: status::StatusCode::Error as i32,
        });
        Span {
            trace_id: self.trace_id.to_vec(),
            span_id: self.span_id.to_vec(),
            trace_state: String::new(),
            parent_span_id: self.parent_span_id.map(|p| p.to_vec()).unwrap_or_default(),
            flags: self.otlp_flags(),
            name: format!("{} {}", self.name_method(), self.route),
            kind: match self.kind {
                SpanKind::Server => span::SpanKind::Server as i32,
                SpanKind::Client => span::SpanKind::Client as i32,
            },
            start_time_unix_nano: self.start_unix_nano,
            end_time_unix_nano: self.end_unix_nano,
            attributes: attrs.0,
            status,
            ..Default::default()
        }
    }
}

/// Why a span is an error.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ErrorKind {
    Status(u16),
    ClosedBeforeResponse,
    ClosedDuringResponse,
}

impl std::fmt::Display for ErrorKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ErrorKind::Status(s) => write!(f, "{s}"),
            ErrorKind::ClosedBeforeResponse => f.write_str("closed_before_response"),
            ErrorKind::ClosedDuringResponse => f.write_str("closed_during_response"),
        }
    }
}

/// Receives a span's attributes.
pub(crate) trait AttrSink {
    fn str(&mut self, key: &'static str, value: &str);
    fn int(&mut self, key: &'static str, value: i64);
}

struct KvSink(Vec<KeyValue>);

impl AttrSink for KvSink {
    fn str(&mut self, key: &'static str, value: &str) {
        self.0.push(kv_str(key, value));
    }
    fn int(&mut self, key: &'static str, value: i64) {
        self.0.push(kv_int(key, value));
    }
}

/// OTLP span flags: whether the parent is known to be in another process, and whether it is.
const SPAN_FLAGS_HAS_IS_REMOTE: u32 = 0x100;
const SPAN_FLAGS_IS_REMOTE: u32 = 0x200;

/// One export request for these spans, one `ResourceSpans` per process, in first-seen order.
pub fn to_otlp(spans: &[SpanRecord]) -> ExportTraceServiceRequest {
    let mut groups: Vec<(&Arc<ProcessMeta>, Vec<Span>)> = Vec::new();
    for s in spans {
        match groups.iter_mut().find(|(p, _)| Arc::ptr_eq(p, &s.process)) {
            Some((_, list)) => list.push(s.to_otlp()),
            None => groups.push((&s.process, vec![s.to_otlp()])),
        }
    }
    ExportTraceServiceRequest {
        resource_spans: groups
            .into_iter()
            .map(|(p, spans)| ResourceSpans {
                resource: Some(p.resource.clone()),
                scope_spans: vec![ScopeSpans {
                    scope: Some(scope()),
                    spans,
                    schema_url: String::new(),
                }],
                schema_url: String::new(),
            })
            .collect(),
    }
}

pub(crate) fn scope() -> InstrumentationScope {
    InstrumentationScope {
        name: SCOPE_NAME.into(),
        version: SCOPE_VERSION.into(),
        ..Default::default()
    }
}

pub(crate) fn kv_str(key: &str, value: impl Into<String>) -> KeyValue {
    KeyValue {
        key: key.into(),
        value: Some(AnyValue {
            value: Some(any_value::Value::StringValue(value.into())),
        }),
    }
}

pub(crate) fn kv_int(key: &str, value: i64) -> KeyValue {
    KeyValue {
        key: key.into(),
        value: Some(AnyValue {
            value: Some(any_value::Value::IntValue(value)),
        }),
    }
}

pub(crate) fn kv_bool(key: &str, value: bool) -> KeyValue {
    KeyValue {
        key: key.into(),
        value: Some(AnyValue {
            value: Some(any_value::Value::BoolValue(value)),
        }),
    }
}

pub const OTHER_METHOD: &str = "_OTHER";

/// The method as `http.request.method` carries it: one of the standard methods, else
/// `_OTHER`, so garbage or custom methods cannot blow up metric cardinality.
pub fn normalize_method(method: &str) -> &str {
    match method {
        "GET" | "HEAD" | "POST" | "PUT" | "DELETE" | "CONNECT" | "OPTIONS" | "TRACE" | "PATCH"
        | "QUERY" => method,
        _ => OTHER_METHOD,
    }
}

fn canonical(a: SocketAddr) -> SocketAddr {
    SocketAddr::new(a.ip().to_canonical(), a.port())
}

fn is_absolute_form(target: &str) -> bool {
    let t = target.as_bytes();
    let starts = |p: &str| t.len() >= p.len() && t[..p.len()].eq_ignore_ascii_case(p.as_bytes());
    starts("http://") || starts("https://")
}

/// `url.path` of a request target: origin-form without query or fragment; the path of an
/// absolute-form target (proxies); `*` as is; `/` when empty.
pub fn url_path(target: &str) -> &str {
    let mut t = target;
    if is_absolute_form(t) {
        let after_scheme = t.find("://").map_or(t, |i| &t[i + 3..]);
        t = after_scheme.find('/').map_or("/", |i| &after_scheme[i..]);
    }
    let end = t.find(['?', '#']).unwrap_or(t.len());
    let t = &t[..end];
    if t.is_empty() {
        "/"
    } else {
        t
    }
}

/// `example.com:8080` -> `example.com`; `[::1]:80` -> `::1`.
fn host_without_port(host: &str) -> &str {
    let h = host.trim();
    if let Some(rest) = h.strip_prefix('[') {
        return rest.split(']').next().unwrap_or(rest);
    }
    match h.rsplit_once(':') {
        Some((name, port)) if port.bytes().all(|b| b.is_ascii_digit()) => name,
        _ => h,
    }
}

/// The low-cardinality route of a path, like OBI's heuristic route decorator: the path with
/// every segment that looks like an identifier replaced by `*`. A segment is an identifier when
/// it is a number (or number-like: digits with `-_.:,`), a hex string of 8+ digits with at least
/// one decimal digit (hashes, object ids, UUIDs), a 16+ character token mixing letters and
/// digits (ULIDs, API keys), or longer than 64 bytes.
pub fn route(path: &str) -> CompactString {
    if path == "*" {
        return "*".into();
    }
    let mut out = CompactString::with_capacity(path.len());
    for (i, seg) in path.split('/').enumerate() {
        if i > 0 {
            out.push('/');
        }
        if looks_like_id(seg) {
            out.push('*');
        } else {
            out.push_str(seg);
        }
    }
    if out.is_empty() {
        out.push('/');
    }
    out
}

fn looks_like_id(seg: &str) -> bool {
    let b = seg.as_bytes();
    if b.is_empty() {
        return false;
    }
    if b.len() > 64 {
        return true;
    }
    let digits = b.iter().filter(|c| c.is_ascii_digit()).count();
    if digits == 0 {
        return false;
    }
    let numberish = b
        .iter()
        .all(|c| c.is_ascii_digit() || matches!(c, b'-' | b'_' | b'.' | b':' | b','));
    if numberish {
        return true;
    }
    let hex_digits = b.iter().filter(|c| c.is_ascii_hexdigit()).count();
    let hexish = b.iter().all(|c| c.is_ascii_hexdigit() || *c == b'-');
    if hexish && hex_digits >= 8 {
        return true;
    }
    let tokenish = b
        .iter()
        .all(|c| c.is_ascii_alphanumeric() || matches!(c, b'-' | b'_'));
    let letters = b.iter().filter(|c| c.is_ascii_alphabetic()).count();
    tokenish && b.len() >= 16 && letters > 0
}

/// Boot-clock nanoseconds now: the clock the kernel events are stamped with.
pub fn boot_time_ns() -> u64 {
    clock_ns(libc::CLOCK_BOOTTIME)
}

/// Wall clock minus boot clock, to turn event timestamps into wall-clock time. Re-read it
/// now and then: the wall clock can be stepped.
pub fn boot_to_wall_offset_ns() -> i64 {
    let before = clock_ns(libc::CLOCK_BOOTTIME);
    let wall = clock_ns(libc::CLOCK_REALTIME);
    let after = clock_ns(libc::CLOCK_BOOTTIME);
    let boot = before / 2 + after / 2;
    wall as i64 - boot as i64
}

fn clock_ns(clock: libc::clockid_t) -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid, writable timespec; both clocks exist on every Linux this
    // receiver can run on (BOOTTIME since 2.6.39), so the call cannot fail.
    unsafe {
        libc::clock_gettime(clock, &mut ts);
    }
    (ts.tv_sec as u64)
        .saturating_mul(1_000_000_000)
        .saturating_add(ts.tv_nsec as u64)
}

fn to_wall(boot_ns: u64, offset: i64) -> u64 {
    boot_ns.saturating_add_signed(offset)
}

#[derive(Debug, Clone)]
pub struct TracerConfig {
    pub host: HostInfo,
    /// `telemetry.sdk.name` on every resource ([`DEFAULT_SDK_NAME`]).
    pub sdk_name: String,
    pub linker: LinkerConfig,
}

impl Default for TracerConfig {
    fn default() -> Self {
        TracerConfig {
            host: HostInfo::default(),
            sdk_name: DEFAULT_SDK_NAME.into(),
            linker: LinkerConfig::default(),
        }
    }
}

/// Request starts and exchanges in, linked [`SpanRecord`]s out.
pub struct Tracer {
    linker: Linker,
    processes: HashMap<u32, Arc<ProcessMeta>, FastHash>,
    host: HostInfo,
    sdk_name: String,
    clock_offset_ns: i64,
}

impl Tracer {
    pub fn new(config: TracerConfig) -> Tracer {
        Tracer::with_linker(config.host, config.sdk_name, Linker::new(config.linker))
    }

    /// Deterministic ids, for tests.
    pub fn with_seed(config: TracerConfig, seed: u64) -> Tracer {
        Tracer::with_linker(
            config.host,
            config.sdk_name,
            Linker::with_seed(config.linker, seed),
        )
    }

    fn with_linker(host: HostInfo, sdk_name: String, linker: Linker) -> Tracer {
        Tracer {
            linker,
            processes: HashMap::default(),
            host,
            sdk_name,
            clock_offset_ns: 0,
        }
    }

    /// Describes (or re-describes) an instrumented process; spans already built keep the old
    /// description.
    pub fn upsert_process(&mut self, info: ProcessInfo) {
        let meta = ProcessMeta::new(info, &self.host, &self.sdk_name);
        self.processes.insert(meta.info.pid, Arc::new(meta));
    }

    /// The process exited: spans still in flight keep its description.
    pub fn remove_process(&mut self, pid: u32) {
        self.processes.remove(&pid);
    }

    pub fn process(&self, pid: u32) -> Option<&Arc<ProcessMeta>> {
        self.processes.get(&pid)
    }

    /// Wall clock minus boot clock ([`boot_to_wall_offset_ns`]), applied to spans emitted from
    /// now on.
    pub fn set_clock_offset(&mut self, offset_ns: i64) {
        self.clock_offset_ns = offset_ns;
    }

    pub fn request_start(&mut self, rs: &RequestStart) {
        self.linker.request_start(rs);
    }

    pub fn exchange(&mut self, ex: impl Into<Box<HttpExchange>>) {
        self.linker.exchange(ex);
    }

    /// See [`Linker::abandon`].
    pub fn abandon(&mut self, conn: ConnKey, seq: u64) {
        self.linker.abandon(conn, seq);
    }

    /// One output of the HTTP tracker, in the order it produced them.
    pub fn push(&mut self, out: HttpOutput) {
        match out {
            HttpOutput::Start(rs) => self.request_start(&rs),
            HttpOutput::Done(ex) => self.exchange(ex),
            HttpOutput::Abandoned { conn, seq } => self.abandon(conn, seq),
        }
    }

    /// See [`Linker::advance`]: call after each drain with [`boot_time_ns`] taken before it.
    pub fn advance(&mut self, now_boot_ns: u64) {
        self.linker.advance(now_boot_ns);
    }

    pub fn stats(&self) -> &LinkerStats {
        self.linker.stats()
    }

    pub fn tracked(&self) -> usize {
        self.linker.tracked()
    }

    /// The spans completed and linked since the last call.
    pub fn take_spans(&mut self) -> Vec<SpanRecord> {
        let mut out = Vec::new();
        self.take_spans_into(&mut out);
        out
    }

    /// Appends the spans completed and linked since the last call to `out`.
    pub fn take_spans_into(&mut self, out: &mut Vec<SpanRecord>) {
        let off = self.clock_offset_ns;
        let processes = &mut self.processes;
        let (host, sdk_name) = (&self.host, self.sdk_name.as_str());
        let ready = self.linker.drain_ready();
        out.reserve(ready.len());
        for l in ready {
            let ex = l.exchange;
            let process = process_for(processes, host, sdk_name, ex.conn.pid, &ex.comm);
            let peer_service = l
                .peer_pid
                .and_then(|p| processes.get(&p))
                .map(|p| p.service_name.clone());
            let kind = match ex.role {
                Role::Client => SpanKind::Client,
                _ => SpanKind::Server,
            };
            let status = if kind == SpanKind::Server
                && ex.status == 0
                && ex.outcome == Outcome::ClosedBeforeResponse
            {
                499
            } else {
                ex.status
            };
            let start_boot = match (kind, ex.conn_start_ts) {
                (SpanKind::Server, Some(c)) if c <= ex.request_start_ts => c,
                _ => ex.request_start_ts,
            };
            let path = CompactString::from(url_path(&ex.target));
            let route = route(&path);
            out.push(SpanRecord {
                kind,
                trace_id: l.trace_id,
                span_id: l.span_id,
                parent_span_id: l.parent_span_id,
                trace_flags: l.trace_flags,
                parent: l.parent,
                process,
                peer_service,
                path,
                route,
                status,
                start_unix_nano: to_wall(start_boot, off),
                request_start_unix_nano: to_wall(ex.request_start_ts, off),
                end_unix_nano: to_wall(ex.end_ts.max(ex.request_start_ts), off),
                exchange: ex,
            });
        }
    }
}

/// Appends an address as `Display` writes it; IPv4, nearly all of the traffic, without the
/// formatting machinery.
pub(crate) fn push_ip(out: &mut String, ip: std::net::IpAddr) {
    match ip {
        std::net::IpAddr::V4(v4) => {
            for (i, o) in v4.octets().into_iter().enumerate() {
                if i > 0 {
                    out.push('.');
                }
                if o >= 100 {
                    out.push(char::from(b'0' + o / 100));
                }
                if o >= 10 {
                    out.push(char::from(b'0' + o / 10 % 10));
                }
                out.push(char::from(b'0' + o % 10));
            }
        }
        // Writing to a String cannot fail.
        std::net::IpAddr::V6(v6) => drop(write!(out, "{v6}")),
    }
}

/// The process's description, or a provisional one from the kernel's `comm` (kept until
/// discovery describes the process).
fn process_for(
    processes: &mut HashMap<u32, Arc<ProcessMeta>, FastHash>,
    host: &HostInfo,
    sdk_name: &str,
    pid: u32,
    comm: &str,
) -> Arc<ProcessMeta> {
    if let Some(p) = processes.get(&pid) {
        return p.clone();
    }
    let info = ProcessInfo {
        pid,
        exe_name: comm.to_string(),
        ..ProcessInfo::default()
    };
    let mut meta = ProcessMeta::new(info, host, sdk_name);
    meta.provisional = true;
    let meta = Arc::new(meta);
    processes.insert(pid, meta.clone());
    meta
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::Tuple;
    use pipeline_core::otlp::tonic::common::v1::any_value::Value;

    const MS: u64 = 1_000_000;
    /// Boot clock 1000 s after boot is 2025-12-09 12:28:05 on the wall clock.
    const OFFSET: i64 = 1_765_283_285_000_000_000 - 1_000_000_000_000;

    #[test]
    fn ip_formatting_matches_display() {
        for ip in [
            "0.0.0.0",
            "127.0.0.1",
            "10.20.30.40",
            "255.255.255.255",
            "192.168.100.9",
            "::1",
            "::ffff:10.0.0.1",
            "fe80::1:2",
        ] {
            let ip: std::net::IpAddr = ip.parse().expect("ip");
            let mut s = String::new();
            push_ip(&mut s, ip);
            assert_eq!(s, ip.to_string());
        }
    }

    #[test]
    fn routes_wildcard_id_like_segments() {
        for (path, want) in [
            ("/", "/"),
            ("", "/"),
            ("*", "*"),
            ("/users/123", "/users/*"),
            ("/users/42/", "/users/*/"),
            ("/users/123/orders/9f8e7d6c5b4a", "/users/*/orders/*"),
            ("/api/v1/items", "/api/v1/items"),
            ("/static/app.css", "/static/app.css"),
            ("/files/deadbeef", "/files/deadbeef"),
            ("/o/550e8400-e29b-41d4-a716-446655440000", "/o/*"),
            ("/o/507f1f77bcf86cd799439011/x", "/o/*/x"),
            ("/reports/2024-01-02", "/reports/*"),
            ("/t/01HZX3K9Q2W8E7R6T5Y4U3I2O1", "/t/*"),
            ("/v2.1/status", "/v2.1/status"),
            ("/a.txt", "/a.txt"),
            ("/missing", "/missing"),
        ] {
            assert_eq!(route(path), want, "{path}");
        }
        assert_eq!(route(&format!("/x/{}", "a".repeat(65))), "/x/*");
    }

    #[test]
    fn url_paths() {
        assert_eq!(url_path("/a?b=c"), "/a");
        assert_eq!(url_path("/a#frag"), "/a");
        assert_eq!(url_path("http://example.com/x/y?z=1"), "/x/y");
        assert_eq!(url_path("HTTP://example.com"), "/");
        assert_eq!(url_path(""), "/");
        assert_eq!(url_path("?q"), "/");
        assert_eq!(url_path("*"), "*");
        assert_eq!(host_without_port("example.com:8080"), "example.com");
        assert_eq!(host_without_port("example.com"), "example.com");
        assert_eq!(host_without_port("[::1]:80"), "::1");
        assert_eq!(host_without_port(" localhost "), "localhost");
    }

    #[test]
    fn methods_outside_the_standard_set_are_other() {
        assert_eq!(normalize_method("GET"), "GET");
        assert_eq!(normalize_method("get"), "_OTHER");
        assert_eq!(normalize_method("PROPFIND"), "_OTHER");
    }

    fn host() -> HostInfo {
        HostInfo {
            id: "0123abcd".into(),
            name: "box".into(),
        }
    }

    fn tracer() -> Tracer {
        let mut t = Tracer::with_seed(
            TracerConfig {
                host: host(),
                ..TracerConfig::default()
            },
            42,
        );
        t.set_clock_offset(OFFSET);
        t
    }

    fn exchange(pid: u32, role: Role, local: &str, remote: &str, sock: u64) -> HttpExchange {
        HttpExchange {
            conn: ConnKey { pid, sock_id: sock },
            tid: pid,
            role,
            tuple: Tuple {
                local: local.parse().expect("addr"),
                remote: remote.parse().expect("addr"),
            },
            seq: 0,
            method: "GET".into(),
            target: "/users/42?full=1".into(),
            version: "HTTP/1.1".into(),
            host: Some("api.local:8000".into()),
            traceparent: None,
            user_agent: Some("curl/8.5.0".into()),
            status: 200,
            request_body_size: 0,
            response_body_size: 321,
            request_head_size: 0,
            response_head_size: 0,
            conn_start_ts: None,
            request_start_ts: 1_000_000 * MS,
            response_start_ts: 1_000_003 * MS,
            end_ts: 1_000_004 * MS,
            outcome: Outcome::Complete,
            comm: "python3".into(),
        }
    }

    fn attr<'a>(s: &'a Span, key: &str) -> Option<&'a Value> {
        s.attributes
            .iter()
            .find(|kv| kv.key == key)
            .and_then(|kv| kv.value.as_ref())
            .and_then(|v| v.value.as_ref())
    }

    fn res_attr<'a>(r: &'a Resource, key: &str) -> Option<&'a Value> {
        r.attributes
            .iter()
            .find(|kv| kv.key == key)
            .and_then(|kv| kv.value.as_ref())
            .and_then(|v| v.value.as_ref())
    }

    fn s(v: &str) -> Option<Value> {
        Some(Value::StringValue(v.into()))
    }

    fn i(v: i64) -> Option<Value> {
        Some(Value::IntValue(v))
    }

    #[test]
    fn server_span_from_an_exchange() {
        let mut t = tracer();
        t.upsert_process(ProcessInfo {
            pid: 7,
            exe_path: "/usr/bin/python3.13".into(),
            exe_name: "python3.13".into(),
            cmdline: "python3 -m http.server 8000".into(),
            cgroup_path: Some("/system.slice/web.service".into()),
            container_id: None,
            service_name: Some("web".into()),
            sdk_language: SdkLanguage::Python,
        });
        let mut ex = exchange(
            7,
            Role::Server,
            "127.0.0.1:8000",
            "[::ffff:127.0.0.1]:40000",
            1,
        );
        // The connection was accepted 2 ms before its first request byte was read.
        ex.conn_start_ts = Some(999_998 * MS);
        t.exchange(ex);
        t.advance(1_000_200 * MS);
        let spans = t.take_spans();
        assert_eq!(spans.len(), 1);
        let rec = &spans[0];
        assert_eq!(rec.kind, SpanKind::Server);
        assert_eq!(rec.path, "/users/42");
        assert_eq!(rec.route, "/users/*");
        assert_eq!(rec.name(), "GET /users/*");
        assert_eq!(rec.total_ns(), 6 * MS);
        assert_eq!(rec.processing_ns(), 4 * MS);
        assert_eq!(rec.start_unix_nano, 1_765_283_285_000_000_000 - 2 * MS);

        let span = rec.to_otlp();
        assert_eq!(span.kind, span::SpanKind::Server as i32);
        assert_eq!(span.name, "GET /users/*");
        assert_eq!(span.start_time_unix_nano, rec.start_unix_nano);
        assert_eq!(span.end_time_unix_nano, 1_765_283_285_000_000_000 + 4 * MS);
        assert_eq!(span.parent_span_id, Vec::<u8>::new());
        assert_eq!(span.flags, 0x101, "sampled, parent known local (none)");
        assert_eq!(span.status, None, "UNSET");
        assert_eq!(attr(&span, "http.request.method").cloned(), s("GET"));
        assert_eq!(attr(&span, "http.response.status_code").cloned(), i(200));
        assert_eq!(attr(&span, "url.path").cloned(), s("/users/42"));
        assert_eq!(attr(&span, "http.route").cloned(), s("/users/*"));
        assert_eq!(attr(&span, "server.address").cloned(), s("api.local"));
        assert_eq!(attr(&span, "server.port").cloned(), i(8000));
        assert_eq!(attr(&span, "client.address").cloned(), s("127.0.0.1"));
        assert_eq!(attr(&span, "network.peer.address").cloned(), s("127.0.0.1"));
        assert_eq!(attr(&span, "network.peer.port").cloned(), i(40000));
        assert_eq!(attr(&span, "network.protocol.version").cloned(), s("1.1"));
        assert_eq!(attr(&span, "http.request.body.size").cloned(), i(0));
        assert_eq!(attr(&span, "http.response.body.size").cloned(), i(321));
        assert_eq!(attr(&span, "user_agent.original").cloned(), s("curl/8.5.0"));
        assert_eq!(attr(&span, "url.full"), None, "client spans only");

        let req = to_otlp(&spans);
        assert_eq!(req.resource_spans.len(), 1);
        let r = req.resource_spans[0].resource.as_ref().expect("resource");
        for (k, v) in [
            ("service.name", s("web")),
            ("service.instance.id", s("0123abcd:7")),
            ("host.id", s("0123abcd")),
            ("host.name", s("box")),
            ("os.type", s("linux")),
            ("telemetry.sdk.language", s("python")),
            ("telemetry.sdk.name", s("sonde")),
            ("telemetry.sdk.version", s(SCOPE_VERSION)),
            ("process.pid", i(7)),
            ("process.executable.name", s("python3.13")),
            ("process.executable.path", s("/usr/bin/python3.13")),
            ("process.command_line", s("python3 -m http.server 8000")),
            ("process.linux.cgroup", s("/system.slice/web.service")),
        ] {
            assert_eq!(res_attr(r, k).cloned(), v, "{k}");
        }
        assert_eq!(res_attr(r, "container.id"), None);
        let scope = req.resource_spans[0].scope_spans[0]
            .scope
            .as_ref()
            .expect("scope");
        assert_eq!(scope.name, SCOPE_NAME);
    }

    #[test]
    fn client_span_attributes_and_errors() {
        let mut t = tracer();
        let mut ex = exchange(8, Role::Client, "10.0.0.1:50000", "10.0.0.2:8000", 1);
        ex.status = 404;
        ex.conn_start_ts = Some(999_000 * MS);
        t.exchange(ex);
        let spans = t.take_spans();
        let rec = &spans[0];
        assert_eq!(
            rec.total_ns(),
            rec.processing_ns(),
            "client spans start at the request"
        );
        assert!(rec.process.provisional);
        assert_eq!(&*rec.process.service_name, "python3");
        let span = rec.to_otlp();
        assert_eq!(span.kind, span::SpanKind::Client as i32);
        assert_eq!(
            attr(&span, "url.full").cloned(),
            s("http://api.local:8000/users/42?full=1")
        );
        assert_eq!(attr(&span, "server.address").cloned(), s("api.local"));
        assert_eq!(attr(&span, "server.port").cloned(), i(8000));
        assert_eq!(attr(&span, "client.address"), None);
        assert_eq!(attr(&span, "error.type").cloned(), s("404"));
        assert_eq!(
            span.status.map(|s| s.code),
            Some(status::StatusCode::Error as i32)
        );

        // No Host header: the server's address stands in.
        let mut ex = exchange(8, Role::Client, "10.0.0.1:50001", "[::1]:8000", 2);
        ex.host = None;
        ex.target = "/x".into();
        t.exchange(ex);
        let span = t.take_spans()[0].to_otlp();
        assert_eq!(attr(&span, "url.full").cloned(), s("http://[::1]:8000/x"));
        assert_eq!(attr(&span, "server.address").cloned(), s("::1"));
        assert_eq!(span.status, None);
    }

    #[test]
    fn connections_closed_before_the_response() {
        let mut t = tracer();
        let mut ex = exchange(9, Role::Server, "127.0.0.1:8000", "127.0.0.1:40000", 1);
        ex.status = 0;
        ex.outcome = Outcome::ClosedBeforeResponse;
        t.exchange(ex);
        let mut ex = exchange(9, Role::Client, "127.0.0.1:50000", "10.1.1.1:80", 2);
        ex.status = 0;
        ex.outcome = Outcome::ClosedBeforeResponse;
        t.exchange(ex);
        t.advance(1_000_500 * MS);
        let spans = t.take_spans();
        let server = spans
            .iter()
            .find(|s| s.kind == SpanKind::Server)
            .expect("server");
        let client = spans
            .iter()
            .find(|s| s.kind == SpanKind::Client)
            .expect("client");
        assert_eq!(server.status, 499);
        let o = server.to_otlp();
        assert_eq!(attr(&o, "http.response.status_code").cloned(), i(499));
        assert_eq!(o.status, None, "the client gave up: not the server's error");
        assert_eq!(client.status, 0);
        let o = client.to_otlp();
        assert_eq!(attr(&o, "http.response.status_code"), None);
        assert_eq!(attr(&o, "error.type").cloned(), s("closed_before_response"));
        assert_eq!(
            o.status.map(|s| s.code),
            Some(status::StatusCode::Error as i32)
        );

        let mut rec = server.clone();
        rec.status = 503;
        assert_eq!(rec.error_type().as_deref(), Some("503"));
        rec.status = 404;
        assert_eq!(rec.error_type(), None, "4xx is the client's error");
    }

    #[test]
    fn unknown_methods_name_the_span_http() {
        let mut t = tracer();
        let mut ex = exchange(8, Role::Client, "10.0.0.1:50000", "10.0.0.2:8000", 1);
        ex.method = "PROPFIND".into();
        t.exchange(ex);
        let rec = &t.take_spans()[0];
        assert_eq!(rec.name(), "HTTP /users/*");
        let span = rec.to_otlp();
        assert_eq!(attr(&span, "http.request.method").cloned(), s("_OTHER"));
        assert_eq!(
            attr(&span, "http.request.method_original").cloned(),
            s("PROPFIND")
        );
    }

    /// The seed's chain through the whole stage: starts and exchanges in a racy order in, the
    /// text printer's five lines out, one trace, the parent chain as the integration test
    /// reads it.
    #[test]
    fn seed_chain_prints_one_trace() {
        let mut t = tracer();
        for (pid, name, lang) in [
            (100, "haproxy", SdkLanguage::Generic),
            (200, "haproxy", SdkLanguage::Generic),
            (300, "backend", SdkLanguage::Go),
        ] {
            t.upsert_process(ProcessInfo {
                pid,
                exe_name: name.into(),
                sdk_language: lang,
                ..ProcessInfo::default()
            });
        }
        let mk =
            |pid: u32, role: Role, local: &str, remote: &str, sock: u64, start: u64, end: u64| {
                let mut ex = exchange(pid, role, local, remote, sock);
                ex.target = "/".into();
                ex.host = Some("127.0.0.1:9000".into());
                ex.request_start_ts = start;
                ex.response_start_ts = end - 10_000;
                ex.end_ts = end;
                ex
            };
        let reqs = [
            mk(
                100,
                Role::Server,
                "127.0.0.1:9000",
                "127.0.0.1:50000",
                1,
                1_000_000 * MS,
                1_000_006 * MS,
            ),
            mk(
                100,
                Role::Client,
                "127.0.0.1:50001",
                "127.0.0.1:8000",
                2,
                1_000_001 * MS,
                1_000_005 * MS,
            ),
            mk(
                200,
                Role::Server,
                "127.0.0.1:8000",
                "127.0.0.1:50001",
                3,
                1_000_001 * MS + 5000,
                1_000_005 * MS - 5000,
            ),
            mk(
                200,
                Role::Client,
                "127.0.0.1:50002",
                "127.0.0.1:8080",
                4,
                1_000_002 * MS,
                1_000_004 * MS,
            ),
            mk(
                300,
                Role::Server,
                "127.0.0.1:8080",
                "127.0.0.1:50002",
                5,
                1_000_002 * MS + 5000,
                1_000_004 * MS - 5000,
            ),
        ];
        let start = |i: usize| RequestStart {
            conn: reqs[i].conn,
            tid: reqs[i].tid,
            role: reqs[i].role,
            tuple: reqs[i].tuple,
            ts: reqs[i].request_start_ts,
            seq: 0,
        };
        // Each server's read is reported before the write that sent it.
        for i in [0, 2, 1, 4, 3] {
            t.push(HttpOutput::Start(start(i)));
        }
        for i in [4, 3, 2, 1, 0] {
            t.push(HttpOutput::Done(Box::new(reqs[i].clone())));
        }
        t.advance(1_000_006 * MS);
        assert!(t.take_spans().is_empty(), "the root waits for its grace");
        t.advance(1_000_200 * MS);
        let spans = t.take_spans();
        let lines: Vec<String> = spans.iter().map(crate::printer::text_line).collect();
        assert_eq!(lines.len(), 5, "{lines:#?}");
        struct L {
            kind: String,
            port: u16,
            trace: String,
            span: String,
            parent: String,
        }
        let parsed: Vec<L> = lines
            .iter()
            .map(|l| {
                let host = &l[l.find("]->[").expect("arrow") + 4..];
                let host = &host[..host.find(']').expect("]")];
                let tp = &l[l.find("traceparent=[00-").expect("tp") + 16..];
                L {
                    kind: l.split_whitespace().nth(3).expect("kind").into(),
                    port: host
                        .rsplit(':')
                        .next()
                        .and_then(|p| p.parse().ok())
                        .expect("port"),
                    trace: tp[..32].into(),
                    span: tp[33..49].into(),
                    parent: tp[50..66].into(),
                }
            })
            .collect();
        assert!(
            parsed.iter().all(|l| l.trace == parsed[0].trace),
            "{lines:#?}"
        );
        let mut cur = parsed
            .iter()
            .find(|l| l.parent == "0000000000000000")
            .expect("root");
        assert_eq!((cur.kind.as_str(), cur.port), ("HTTP", 9000));
        for (kind, port) in [
            ("HTTPClient", 8000),
            ("HTTP", 8000),
            ("HTTPClient", 8080),
            ("HTTP", 8080),
        ] {
            cur = parsed.iter().find(|l| l.parent == cur.span).expect("child");
            assert_eq!((cur.kind.as_str(), cur.port), (kind, port), "{lines:#?}");
        }
        assert!(
            lines[4].contains(
                "HTTP 200 GET /(/) [127.0.0.1 as 127.0.0.1:50002]->[127.0.0.1 as backend:8080] \
             contentLen:0B responseLen:321B svc=[backend go]"
            ),
            "{lines:#?}"
        );
        assert!(lines[1].contains(
            "HTTPClient 200 GET /(/) [127.0.0.1 as haproxy:50001]->[127.0.0.1 as 127.0.0.1:8000]"
        ), "{lines:#?}");

        // Over OTLP: one ResourceSpans per process, peers marked remote.
        let req = to_otlp(&spans);
        assert_eq!(req.resource_spans.len(), 3);
        let otlp: Vec<&Span> = req
            .resource_spans
            .iter()
            .flat_map(|r| &r.scope_spans)
            .flat_map(|s| &s.spans)
            .collect();
        assert_eq!(otlp.len(), 5);
        let backend = otlp
            .iter()
            .find(|s| {
                attr(s, "server.port").cloned() == i(8080)
                    && s.kind == span::SpanKind::Server as i32
            })
            .expect("backend span");
        assert_eq!(backend.flags, 0x301, "parent in another process");
    }

    #[test]
    fn clock_helpers_agree_with_the_wall_clock() {
        let wall = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .expect("after 1970")
            .as_nanos() as i64;
        let est = boot_time_ns() as i64 + boot_to_wall_offset_ns();
        assert!((wall - est).abs() < 50 * MS as i64, "{wall} vs {est}");
    }
}
