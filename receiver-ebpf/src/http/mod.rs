//! HTTP/1.x request/response pairing, per connection, from the syscall events of the traced
//! processes.
//!
//! Input: [`KernelEvent`]s in ring-buffer order. Output: a [`RequestStart`] as soon as a
//! request's head is seen (so spans can be linked while requests are in flight) and an
//! [`HttpExchange`] when its response is over or the connection ends.
//!
//! The kernel copies only a prefix of what each syscall moved, so this works on prefixes:
//! bytes past the prefix (a "gap") are accounted by length only, and bodies are skipped by
//! length, never read, except for chunked framing while it is visible. When a gap hides where
//! a message ends, the message's length falls back to counting bytes until the next message
//! start at the beginning of a syscall (or the close). When a gap may hide whole messages, the
//! order-based pairing of requests and responses is no longer certain: new requests are then
//! left unreported (and counted) until the connection is quiescent again, rather than pair a
//! request with another request's response.
//!
//! What the exchange fields mean here:
//! - `request_start_ts`: the syscall that carried the request's first byte;
//!   `response_start_ts`: the first byte of the final (non-1xx) response, or the close when
//!   there was none; `end_ts`: the syscall that completed the response body; for a body that
//!   ends at the close (or whose end was unknown) the last syscall that carried some of it.
//! - Body sizes are bytes on the wire after the head (chunk framing included); past a cut head
//!   they include the unseen rest of the head.
//! - `version` is empty, and `host`/`traceparent`/`user_agent` are `None`, when the capture
//!   prefix cut the head before them.
//! - `Outcome::ClosedBeforeResponse` has status 0; `ClosedDuringResponse` keeps the status when
//!   the status line was seen.

mod parse;

#[cfg(test)]
mod fuzz;
#[cfg(test)]
mod tests;

use std::collections::{HashMap, VecDeque};
use std::hash::{BuildHasherDefault, Hasher};
use std::mem;

use crate::model::{
    CompactString, ConnKey, DataEvent, Direction, HttpExchange, KernelEvent, Outcome, RequestStart,
    Role, Tuple,
};
use parse::{
    classify, classify_prefix, find_head_end, parse_head, parse_head_end, skip_crlf, Chunk, Class,
    Head, Kind, LineScan,
};

const SEC: u64 = 1_000_000_000;

/// A gap at a message boundary shorter than this is taken for stray line ends, not a hidden
/// message (the shortest request, `GET / HTTP/1.1` and a blank line, is 18 bytes).
const MIN_MESSAGE: u64 = 16;

/// A connection whose start was not seen may be joined in the middle of a body: this many
/// syscalls that do not start a message are allowed before calling it non-HTTP.
const MIDSTREAM_TOLERANCE: u8 = 32;

/// After this many requests left unreported in a row, quiescence alone restores pairing: the
/// count of responses owed can be wrong when responses were hidden too.
const MAX_DESYNC_REQUESTS: u32 = 16;

/// Room for a start line and the framing headers, whatever the configuration says.
const MIN_HEAD_BYTES: usize = 256;

/// Head buffers that grew past this are freed after use rather than kept per connection.
const HEAD_KEEP: usize = 2048;

/// Limits and timeouts of the tracker.
#[derive(Debug, Clone)]
pub struct HttpConfig {
    /// Connections tracked at once; past this the least recently active are evicted.
    pub max_connections: usize,
    /// Requests awaiting their response on one connection (pipelining depth).
    pub max_pipelined: usize,
    /// A head (start line + headers) longer than this is treated as cut.
    pub max_head_bytes: usize,
    /// Header lines read per head; past this the framing is treated as unknown.
    pub max_headers: usize,
    /// A connection with no event for this long is forgotten by [`HttpTracker::expire`].
    pub idle_timeout_ns: u64,
    /// A response of unknown length (its head was cut) is taken as complete after this long
    /// without a byte, rather than waiting for the next request or the close.
    pub unknown_length_settle_ns: u64,
}

impl Default for HttpConfig {
    fn default() -> Self {
        HttpConfig {
            max_connections: 65_536,
            max_pipelined: 64,
            max_head_bytes: 16 * 1024,
            max_headers: 128,
            idle_timeout_ns: 300 * SEC,
            unknown_length_settle_ns: 2 * SEC,
        }
    }
}

/// What the tracker reports. For one `(conn, seq)` a `Start` always comes first, then exactly
/// one `Done` or `Abandoned` (once the connection ends at the latest). A reused socket (or a
/// connection tracked again after expiry) starts again at seq 0, only after all the previous
/// ones have ended.
// Outputs are handed over one at a time, never stored in bulk here: boxing the exchange would
// only add an allocation per exchange.
#[derive(Debug, Clone)]
pub enum HttpOutput {
    Start(RequestStart),
    /// Boxed: exchanges are handed on through the linker to the span, moved many times.
    Done(Box<HttpExchange>),
    /// A started request that will get no `Done`: its connection was expired or evicted, or
    /// its response can no longer be told apart from others (bytes past the captured prefix).
    Abandoned {
        conn: ConnKey,
        seq: u64,
    },
}

/// Counters for internal telemetry; all cumulative.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct HttpStats {
    pub data_events: u64,
    /// Connections ever tracked.
    pub connections: u64,
    /// Connections whose first bytes were not HTTP/1.x (TLS, Redis, ...): ignored since.
    pub non_http_connections: u64,
    /// Connections switched to another protocol (101, CONNECT tunnel): ignored since.
    pub upgraded_connections: u64,
    pub expired_connections: u64,
    /// Connections dropped to stay within `max_connections`.
    pub evicted_connections: u64,
    /// `Done` outputs.
    pub exchanges: u64,
    /// Requests seen that got no `Done`: abandoned, or never reported because their pairing
    /// was uncertain or their start line was unreadable.
    pub requests_dropped: u64,
    /// Responses with no request to pair with (e.g. the connection was joined mid-way).
    pub orphan_responses: u64,
    /// Bytes that should have started a message on an HTTP connection but did not.
    pub parse_errors: u64,
    /// Heads cut by the capture prefix (or longer than `max_head_bytes`).
    pub truncated_heads: u64,
    /// Times a connection's pairing became uncertain.
    pub desyncs: u64,
}

/// Pairs HTTP/1.x requests and responses on every connection it is shown.
pub struct HttpTracker {
    cfg: HttpConfig,
    conns: HashMap<ConnKey, Conn, FastHash>,
    /// Tracked connections per pid, so a process exit only scans when it matters.
    pids: HashMap<u32, u32, FastHash>,
    stats: HttpStats,
    scratch: Vec<(u64, ConnKey)>,
}

impl Default for HttpTracker {
    fn default() -> Self {
        HttpTracker::new(HttpConfig::default())
    }
}

impl HttpTracker {
    /// Limits below what the parser needs to make progress are raised to it.
    pub fn new(mut cfg: HttpConfig) -> Self {
        cfg.max_connections = cfg.max_connections.max(1);
        cfg.max_pipelined = cfg.max_pipelined.max(1);
        cfg.max_head_bytes = cfg.max_head_bytes.max(MIN_HEAD_BYTES);
        HttpTracker {
            cfg,
            conns: HashMap::default(),
            pids: HashMap::default(),
            stats: HttpStats::default(),
            scratch: Vec::new(),
        }
    }

    /// Feeds one kernel event. Events of one connection must come in the order they happened.
    pub fn on_event(&mut self, ev: &KernelEvent, out: &mut impl FnMut(HttpOutput)) {
        let out: &mut dyn FnMut(HttpOutput) = out;
        match ev {
            KernelEvent::Data(d) => self.on_data(d, out),
            KernelEvent::Connection {
                ts,
                conn,
                role,
                tuple,
                ..
            } => {
                // Same socket again: its close was not seen.
                if let Some(old) = self.remove(conn) {
                    let at = old.link.last_ts;
                    self.finish(old, End::Closed(at), out);
                }
                let c = Conn::new(*conn, *role, *tuple, *ts, true);
                self.insert(c, *ts, out);
            }
            KernelEvent::Close { ts, conn, .. } => {
                if let Some(c) = self.remove(conn) {
                    self.finish(c, End::Closed(*ts), out);
                }
            }
            // The kernel closes an exiting process's sockets without a close syscall.
            KernelEvent::ProcessExit { pid } => self.process_exit(*pid, out),
            KernelEvent::ProcessExec { .. }
            | KernelEvent::Listen { .. }
            | KernelEvent::ProcessFork { .. } => {}
        }
    }

    /// Forgets connections idle for `idle_timeout_ns` (their pending requests are reported
    /// `Abandoned`, or `Done` when only a close was missing) and settles responses of unknown
    /// length that went quiet. `now_ts` is boot-clock ns like event timestamps. Cost is linear
    /// in the connections tracked: call it about once a second.
    pub fn expire(&mut self, now_ts: u64, out: &mut impl FnMut(HttpOutput)) {
        self.expire_dyn(now_ts, out);
    }

    /// Ends every connection as if expired (e.g. at shutdown).
    pub fn clear(&mut self, out: &mut impl FnMut(HttpOutput)) {
        let out: &mut dyn FnMut(HttpOutput) = out;
        let keys: Vec<ConnKey> = self.conns.keys().copied().collect();
        for k in keys {
            if let Some(c) = self.remove(&k) {
                self.finish(c, End::Gone, out);
            }
        }
    }

    pub fn stats(&self) -> HttpStats {
        self.stats
    }

    /// Connections tracked now.
    pub fn connections(&self) -> usize {
        self.conns.len()
    }

    fn on_data(&mut self, d: &DataEvent, out: &mut dyn FnMut(HttpOutput)) {
        self.stats.data_events += 1;
        if let Some(c) = self.conns.get_mut(&d.conn) {
            let mut cx = Cx {
                cfg: &self.cfg,
                stats: &mut self.stats,
                out,
            };
            c.on_data(d, &mut cx);
            return;
        }
        let c = Conn::new(d.conn, d.role, d.tuple, d.ts, false);
        self.insert(c, d.ts, out);
        if let Some(c) = self.conns.get_mut(&d.conn) {
            let mut cx = Cx {
                cfg: &self.cfg,
                stats: &mut self.stats,
                out,
            };
            c.on_data(d, &mut cx);
        }
    }

    fn expire_dyn(&mut self, now: u64, out: &mut dyn FnMut(HttpOutput)) {
        let mut idle = mem::take(&mut self.scratch);
        idle.clear();
        {
            let mut cx = Cx {
                cfg: &self.cfg,
                stats: &mut self.stats,
                out: &mut *out,
            };
            for (k, c) in self.conns.iter_mut() {
                if now.saturating_sub(c.link.last_ts) > cx.cfg.idle_timeout_ns {
                    idle.push((c.link.last_ts, *k));
                } else {
                    c.settle(now, &mut cx);
                }
            }
        }
        for &(_, k) in &idle {
            if let Some(c) = self.remove(&k) {
                self.stats.expired_connections += 1;
                self.finish(c, End::Gone, out);
            }
        }
        self.scratch = idle;
    }

    fn insert(&mut self, c: Conn, now: u64, out: &mut dyn FnMut(HttpOutput)) {
        if self.conns.len() >= self.cfg.max_connections {
            self.make_room(now, out);
        }
        *self.pids.entry(c.link.key.pid).or_insert(0) += 1;
        self.stats.connections += 1;
        self.conns.insert(c.link.key, c);
    }

    /// Drops what is idle past the timeout, then, if still full, the least recently active
    /// eighth at once so the scan is paid once per many insertions.
    fn make_room(&mut self, now: u64, out: &mut dyn FnMut(HttpOutput)) {
        self.expire_dyn(now, out);
        let cap = self.cfg.max_connections;
        if self.conns.len() < cap {
            return;
        }
        let mut victims = mem::take(&mut self.scratch);
        victims.clear();
        victims.extend(self.conns.iter().map(|(k, c)| (c.link.last_ts, *k)));
        let n = (cap / 8).clamp(1, victims.len());
        victims.select_nth_unstable_by_key(n - 1, |v| v.0);
        for &(_, k) in &victims[..n] {
            if let Some(c) = self.remove(&k) {
                self.stats.evicted_connections += 1;
                self.finish(c, End::Gone, out);
            }
        }
        self.scratch = victims;
    }

    fn remove(&mut self, key: &ConnKey) -> Option<Conn> {
        let c = self.conns.remove(key)?;
        if let Some(n) = self.pids.get_mut(&key.pid) {
            *n -= 1;
            if *n == 0 {
                self.pids.remove(&key.pid);
            }
        }
        Some(c)
    }

    fn finish(&mut self, mut c: Conn, end: End, out: &mut dyn FnMut(HttpOutput)) {
        let mut cx = Cx {
            cfg: &self.cfg,
            stats: &mut self.stats,
            out,
        };
        c.finish(end, &mut cx);
    }

    fn process_exit(&mut self, pid: u32, out: &mut dyn FnMut(HttpOutput)) {
        if !self.pids.contains_key(&pid) {
            return;
        }
        let keys: Vec<ConnKey> = self
            .conns
            .keys()
            .filter(|k| k.pid == pid)
            .copied()
            .collect();
        for k in keys {
            if let Some(c) = self.remove(&k) {
                let at = c.link.last_ts;
                self.finish(c, End::Closed(at), out);
            }
        }
    }
}

/// Hash for connection keys: they come from the kernel, not from peers, so no DoS-resistant
/// hash is needed; the finalizer spreads the aligned socket addresses.
#[derive(Default)]
pub struct ConnHasher(u64);

/// Hasher for maps keyed by kernel-provided ids (pids, socket addresses).
pub type FastHash = BuildHasherDefault<ConnHasher>;

impl Hasher for ConnHasher {
    fn finish(&self) -> u64 {
        let mut x = self.0;
        x ^= x >> 33;
        x = x.wrapping_mul(0xff51_afd7_ed55_8ccd);
        x ^= x >> 33;
        x
    }

    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.mix(u64::from(b));
        }
    }

    fn write_u32(&mut self, n: u32) {
        self.mix(u64::from(n));
    }

    fn write_u64(&mut self, n: u64) {
        self.mix(n);
    }
}

impl ConnHasher {
    fn mix(&mut self, v: u64) {
        self.0 = (self.0.rotate_left(5) ^ v).wrapping_mul(0x517c_c1b7_2722_0a95);
    }
}

/// What every per-connection step may touch besides the connection.
struct Cx<'a> {
    cfg: &'a HttpConfig,
    stats: &'a mut HttpStats,
    out: &'a mut dyn FnMut(HttpOutput),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum End {
    /// The socket was closed (or its process exited) at this time.
    Closed(u64),
    /// Tracking stopped (idle, evicted): what happened next is unknown.
    Gone,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Side {
    Req,
    Resp,
}

/// Where one direction of a connection is in its stream of messages.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// At a message boundary.
    Idle,
    /// Inside a head; its bytes so far are in `DirParser::head` (unless all in one event).
    Head,
    /// Inside a body of known remaining length.
    Body(u64),
    Chunked(Chunk),
    /// A body that ends at the close (a response without length).
    UntilClose,
    /// A body whose end is unknown (its head or framing was cut): it ends where a syscall
    /// starts with a new message, or at the close.
    UnknownLength,
    /// Lost: ignore bytes until a syscall starts with a new message.
    Resync,
}

fn in_message(s: State) -> bool {
    !matches!(s, State::Idle | State::Resync)
}

struct DirParser {
    state: State,
    head: Vec<u8>,
    scan: LineScan,
    /// Request: the seq of the request being read. Response: the seq of the request it
    /// answers (`None` for a response to nothing we track).
    msg_seq: Option<u64>,
    msg_start_ts: u64,
    msg_tid: u32,
    /// Last event that carried bytes of the current message.
    msg_last_ts: u64,
    /// Last event in this direction before the current message started.
    before_msg_ts: u64,
    /// Body bytes of the current message.
    body: u64,
    /// Head bytes of the current message (start line, headers, final CRLF) as captured.
    head_len: u64,
    /// Last event in this direction.
    last_ts: u64,
    /// The head began while lost, on a syscall too short to tell: if it does not parse it
    /// was body bytes, not an error.
    tentative: bool,
}

impl DirParser {
    fn new(state: State) -> Self {
        DirParser {
            state,
            head: Vec::new(),
            scan: LineScan::Content,
            msg_seq: None,
            msg_start_ts: 0,
            msg_tid: 0,
            msg_last_ts: 0,
            before_msg_ts: 0,
            body: 0,
            head_len: 0,
            last_ts: 0,
            tentative: false,
        }
    }

    fn begin(&mut self, d: &DataEvent) {
        self.state = State::Head;
        self.head.clear();
        // The first byte is not a line end (boundaries skip them), so the start line has content.
        self.scan = LineScan::Content;
        self.msg_seq = None;
        self.msg_start_ts = d.ts;
        self.msg_tid = d.tid;
        self.before_msg_ts = self.last_ts;
        self.body = 0;
        self.head_len = 0;
        self.tentative = false;
    }
}

/// A request waiting for (the end of) its response.
struct Pending {
    seq: u64,
    /// A Start was emitted (method and target were readable).
    report: bool,
    tid: u32,
    ts: u64,
    method: CompactString,
    target: CompactString,
    version: CompactString,
    host: Option<CompactString>,
    traceparent: Option<CompactString>,
    user_agent: Option<CompactString>,
    is_head: bool,
    is_connect: bool,
    req_body: u64,
    req_head: u64,
    resp_head: u64,
    status: u16,
    response_start_ts: u64,
}

struct Conn {
    recv: DirParser,
    send: DirParser,
    link: Link,
}

/// Everything about a connection except its two parsers (kept apart so both can be borrowed
/// with it).
struct Link {
    key: ConnKey,
    role: Role,
    tuple: Tuple,
    comm: CompactString,
    /// Which direction carries requests; `None` until known (role Unknown and no message yet).
    req_dir: Option<Direction>,
    /// False once the connection is known not to (or no longer to) carry HTTP/1.x.
    http: bool,
    /// A message start was parsed: later garbage is a parse error, not a verdict.
    confirmed: bool,
    /// The connection event was seen, so the first bytes seen are the first bytes sent.
    saw_start: bool,
    conn_start_ts: Option<u64>,
    misses: u8,
    next_seq: u64,
    queue: VecDeque<Pending>,
    /// Responses pair with `queue` in order; false while that may be wrong.
    sync: bool,
    /// Responses still expected for requests that were hidden or not queued while out of sync.
    owed: u32,
    desync_requests: u32,
    last_ts: u64,
}

fn opposite(d: Direction) -> Direction {
    match d {
        Direction::Recv => Direction::Send,
        Direction::Send => Direction::Recv,
    }
}

fn request_direction(role: Role) -> Option<Direction> {
    match role {
        Role::Server => Some(Direction::Recv),
        Role::Client => Some(Direction::Send),
        Role::Unknown => None,
    }
}

fn text(b: &[u8]) -> CompactString {
    match std::str::from_utf8(b) {
        Ok(s) => CompactString::from(s),
        Err(_) => CompactString::from_utf8_lossy(b),
    }
}

fn abandon(key: ConnKey, e: Pending, cx: &mut Cx) {
    cx.stats.requests_dropped += 1;
    if e.report {
        (cx.out)(HttpOutput::Abandoned {
            conn: key,
            seq: e.seq,
        });
    }
}

impl Conn {
    fn new(key: ConnKey, role: Role, tuple: Tuple, ts: u64, saw_start: bool) -> Self {
        // Joined mid-way: wait for a syscall that starts a message, and do not trust pairing
        // until everything sent before has been answered.
        let initial = if saw_start {
            State::Idle
        } else {
            State::Resync
        };
        Conn {
            recv: DirParser::new(initial),
            send: DirParser::new(initial),
            link: Link {
                key,
                role,
                tuple,
                comm: CompactString::default(),
                req_dir: request_direction(role),
                http: true,
                confirmed: false,
                saw_start,
                conn_start_ts: saw_start.then_some(ts),
                misses: 0,
                next_seq: 0,
                queue: VecDeque::new(),
                sync: saw_start,
                owed: 0,
                desync_requests: 0,
                last_ts: ts,
            },
        }
    }

    /// The parser of `dir`, the parser of the other direction, and the rest.
    fn split(&mut self, dir: Direction) -> (&mut DirParser, &mut DirParser, &mut Link) {
        match dir {
            Direction::Recv => (&mut self.recv, &mut self.send, &mut self.link),
            Direction::Send => (&mut self.send, &mut self.recv, &mut self.link),
        }
    }

    fn on_data(&mut self, d: &DataEvent, cx: &mut Cx) {
        let link = &mut self.link;
        link.last_ts = link.last_ts.max(d.ts);
        if !link.http || d.bytes == 0 {
            return;
        }
        if link.comm.is_empty() {
            link.comm = CompactString::from(d.comm.as_str());
        }
        if link.role == Role::Unknown && d.role != Role::Unknown {
            link.role = d.role;
            if link.req_dir.is_none() {
                link.req_dir = request_direction(d.role);
            }
        }
        let (p, other, link) = self.split(d.direction);
        link.feed(p, other, d, cx);
        if !self.link.http {
            self.release(cx);
        }
    }

    /// The connection no longer carries HTTP: report what is pending and free its buffers.
    fn release(&mut self, cx: &mut Cx) {
        let key = self.link.key;
        for e in self.link.queue.drain(..) {
            abandon(key, e, cx);
        }
        self.link.queue = VecDeque::new();
        self.recv.head = Vec::new();
        self.send.head = Vec::new();
    }

    fn settle(&mut self, now: u64, cx: &mut Cx) {
        let Some(rd) = self.link.req_dir else { return };
        if !self.link.http {
            return;
        }
        let (_, resp, link) = self.split(rd);
        if resp.state == State::UnknownLength
            && now.saturating_sub(resp.msg_last_ts) > cx.cfg.unknown_length_settle_ns
        {
            let at = resp.msg_last_ts;
            link.response_done(resp, at, cx);
            resp.state = State::Resync;
        }
    }

    fn finish(&mut self, end: End, cx: &mut Cx) {
        let Some(rd) = self.link.req_dir else { return };
        if !self.link.http {
            return;
        }
        let (req, resp, link) = self.split(rd);
        if matches!(end, End::Closed(_)) && req.state == State::Head {
            // Closed while the request head was arriving: report what was received.
            let buf = mem::take(&mut req.head);
            if let Some(h) = parse_head(&buf, cx.cfg.max_headers).filter(|h| h.is(Kind::Request)) {
                cx.stats.truncated_heads += 1;
                link.request_head(req, resp, &h, false, cx);
            }
            req.head = buf;
        }
        if resp.state == State::Head {
            // Closed while the response head was arriving: the response had started.
            if let Some(f) = link.queue.front_mut() {
                resp.msg_seq = Some(f.seq);
                f.response_start_ts = resp.msg_start_ts;
                if let Some(h) =
                    parse_head(&resp.head, cx.cfg.max_headers).filter(|h| h.is(Kind::Response))
                {
                    f.status = h.status;
                }
            }
        }
        let answering = in_message(resp.state) && resp.msg_seq.is_some();
        let open_ended = matches!(resp.state, State::UntilClose | State::UnknownLength);
        let key = link.key;
        let mut first = true;
        while let Some(mut e) = link.queue.pop_front() {
            let this = first && answering && resp.msg_seq == Some(e.seq);
            first = false;
            match end {
                End::Closed(ts) if this => {
                    let (outcome, end_ts) = if open_ended {
                        (Outcome::Complete, resp.msg_last_ts)
                    } else {
                        (Outcome::ClosedDuringResponse, ts)
                    };
                    link.emit_done(e, resp.body, end_ts, outcome, cx);
                }
                End::Closed(ts) => {
                    e.status = 0;
                    e.response_start_ts = ts;
                    link.emit_done(e, 0, ts, Outcome::ClosedBeforeResponse, cx);
                }
                End::Gone if this && open_ended => {
                    link.emit_done(e, resp.body, resp.msg_last_ts, Outcome::Complete, cx);
                }
                End::Gone => abandon(key, e, cx),
            }
        }
    }
}

impl Link {
    fn side(&self, dir: Direction) -> Option<Side> {
        self.req_dir
            .map(|rd| if rd == dir { Side::Req } else { Side::Resp })
    }

    /// Which message kinds may start in `dir`: (requests, responses).
    fn expects(&self, dir: Direction) -> (bool, bool) {
        match self.req_dir {
            None => (true, true),
            Some(rd) => (rd == dir, rd != dir),
        }
    }

    fn classify(&self, b: &[u8], dir: Direction) -> Class {
        let (req, resp) = self.expects(dir);
        classify(b, req, resp)
    }

    /// One data event in direction `d.direction`, whose parser is `p`.
    fn feed(&mut self, p: &mut DirParser, other: &mut DirParser, d: &DataEvent, cx: &mut Cx) {
        let dir = d.direction;
        let n = d
            .payload
            .len()
            .min(usize::try_from(d.bytes).unwrap_or(usize::MAX));
        let vis = &d.payload[..n];
        let gap = d.bytes - n as u64;

        // Where the end of a message is unknown, a syscall that starts with a new message
        // ends it. Only syscall starts are looked at: bodies are never searched.
        let mut tentative = false;
        if matches!(p.state, State::UnknownLength | State::Resync) {
            let at = skip_crlf(vis, 0);
            if at < vis.len() {
                match self.classify(&vis[at..], dir) {
                    Class::Request | Class::Response => {
                        if p.state == State::UnknownLength {
                            let ts = p.msg_last_ts;
                            self.end_message(p, dir, ts, cx);
                        }
                        p.state = State::Idle;
                    }
                    // A whole syscall that is only the beginning of a start line: a message
                    // written in small pieces, or a body tail. Try it as a head.
                    Class::NeedMore if p.state == State::Resync && gap == 0 => {
                        p.state = State::Idle;
                        tentative = true;
                    }
                    Class::No | Class::NeedMore => {
                        if p.state == State::Resync && !self.confirmed && !self.miss(cx) {
                            return;
                        }
                    }
                }
            }
        }

        let mut pos = 0;
        while pos < vis.len() && self.http {
            match p.state {
                State::Idle => {
                    pos = skip_crlf(vis, pos);
                    if pos == vis.len() {
                        break;
                    }
                    // The start line itself is checked by the head parser.
                    let (req, resp) = self.expects(dir);
                    if classify_prefix(&vis[pos..], req, resp) == Class::No {
                        self.garbage(p, other, dir, cx);
                        pos = vis.len();
                    } else {
                        p.begin(d);
                        p.tentative = mem::take(&mut tentative);
                    }
                }
                State::Head => pos = self.head_bytes(p, other, d, vis, pos, cx),
                State::Body(rem) => {
                    let n = rem.min((vis.len() - pos) as u64);
                    self.add_body(p, dir, n);
                    pos += n as usize;
                    if n == rem {
                        self.end_message(p, dir, d.ts, cx);
                    } else {
                        p.state = State::Body(rem - n);
                    }
                }
                State::Chunked(mut c) => match c.run(&vis[pos..]) {
                    Ok((used, done)) => {
                        self.add_body(p, dir, used as u64);
                        pos += used;
                        if done {
                            self.end_message(p, dir, d.ts, cx);
                        } else {
                            p.state = State::Chunked(c);
                        }
                    }
                    Err(_) => {
                        cx.stats.parse_errors += 1;
                        p.state = State::UnknownLength;
                        self.add_body(p, dir, (vis.len() - pos) as u64);
                        pos = vis.len();
                        self.lose_sync_in(p, other, dir, 0, cx);
                    }
                },
                State::UntilClose | State::UnknownLength => {
                    self.add_body(p, dir, (vis.len() - pos) as u64);
                    pos = vis.len();
                }
                State::Resync => pos = vis.len(),
            }
        }
        if gap > 0 && self.http {
            self.gap(p, other, d, gap, cx);
        }
        p.last_ts = d.ts;
        if in_message(p.state) {
            p.msg_last_ts = d.ts;
        }
    }

    /// Head bytes from `pos` on; returns where the head (or this event) ends.
    fn head_bytes(
        &mut self,
        p: &mut DirParser,
        other: &mut DirParser,
        d: &DataEvent,
        vis: &[u8],
        pos: usize,
        cx: &mut Cx,
    ) -> usize {
        let rest = &vis[pos..];
        let limit = cx.cfg.max_head_bytes;
        if p.head.is_empty() {
            // The common case: the whole head in this syscall, parsed in place in one pass.
            match parse_head_end(rest, cx.cfg.max_headers) {
                Some((h, Some(end))) if end <= limit => {
                    p.head_len = end as u64;
                    self.head_parsed(p, other, d, Some(h), true, cx);
                    return pos + end;
                }
                // Not a start line: no need to wait for the end of the head to say so.
                None => {
                    self.head_parsed(p, other, d, None, true, cx);
                    return vis.len();
                }
                Some(_) => {}
            }
        }
        let end = find_head_end(&mut p.scan, rest);
        let take = end.unwrap_or(rest.len());
        if p.head.len() + take > limit {
            // Too long to keep: cut it here, as if the capture had stopped.
            let room = limit.saturating_sub(p.head.len()).min(take);
            p.head.extend_from_slice(&rest[..room]);
            p.head_len = p.head.len() as u64;
            self.cut_head(p, other, d, cx);
            return pos + room;
        }
        match end {
            Some(_) if p.head.is_empty() => {
                p.head_len = take as u64;
                self.head_done(p, other, d, &rest[..take], true, cx);
            }
            Some(_) => {
                p.head.extend_from_slice(&rest[..take]);
                p.head_len = p.head.len() as u64;
                self.head_from_buffer(p, other, d, true, cx);
            }
            None => p.head.extend_from_slice(rest),
        }
        pos + take
    }

    fn head_from_buffer(
        &mut self,
        p: &mut DirParser,
        other: &mut DirParser,
        d: &DataEvent,
        complete: bool,
        cx: &mut Cx,
    ) {
        let buf = mem::take(&mut p.head);
        self.head_done(p, other, d, &buf, complete, cx);
        p.head = buf;
        p.head.clear();
        if p.head.capacity() > HEAD_KEEP {
            p.head = Vec::new();
        }
    }

    /// A head is over (`complete`) or cut. Always moves `p` out of `State::Head`.
    fn head_done(
        &mut self,
        p: &mut DirParser,
        other: &mut DirParser,
        d: &DataEvent,
        head: &[u8],
        complete: bool,
        cx: &mut Cx,
    ) {
        let parsed = parse_head(head, cx.cfg.max_headers);
        self.head_parsed(p, other, d, parsed, complete, cx);
    }

    fn head_parsed(
        &mut self,
        p: &mut DirParser,
        other: &mut DirParser,
        d: &DataEvent,
        parsed: Option<Head>,
        complete: bool,
        cx: &mut Cx,
    ) {
        p.state = State::Idle;
        let dir = d.direction;
        let is_req = parsed.as_ref().is_some_and(|h| h.is(Kind::Request));
        let fits = parsed.is_some() && self.req_dir.is_none_or(|rd| (rd == dir) == is_req);
        let Some(h) = parsed.filter(|_| fits) else {
            if p.tentative {
                p.state = State::Resync;
            } else {
                self.garbage(p, other, dir, cx);
            }
            return;
        };
        if self.req_dir.is_none() {
            let rd = if is_req { dir } else { opposite(dir) };
            self.req_dir = Some(rd);
            self.role = if rd == Direction::Recv {
                Role::Server
            } else {
                Role::Client
            };
        }
        if h.method_complete || h.status != 0 {
            self.confirmed = true;
        }
        if !complete {
            cx.stats.truncated_heads += 1;
        }
        if is_req {
            self.request_head(p, other, &h, complete, cx);
        } else {
            self.response_head(p, other, &h, complete, d.ts, cx);
        }
    }

    fn request_head(
        &mut self,
        p: &mut DirParser,
        resp: &mut DirParser,
        h: &Head,
        complete: bool,
        cx: &mut Cx,
    ) {
        // Without pipelining a new request means the previous response is over: the only end
        // a response of unknown length gets short of the close.
        if resp.state == State::UnknownLength {
            let at = resp.msg_last_ts;
            self.response_done(resp, at, cx);
            resp.state = State::Resync;
        }
        if !self.sync && self.quiescent(resp, p.before_msg_ts) {
            self.sync = true;
            self.owed = 0;
            self.desync_requests = 0;
        }
        let seq = self.next_seq;
        self.next_seq += 1;
        p.msg_seq = Some(seq);
        p.body = 0;
        if self.sync && self.queue.len() < cx.cfg.max_pipelined {
            // A start line cut before the target says too little to report; it still pairs.
            let report = h.method_complete && !h.target.is_empty();
            if report {
                (cx.out)(HttpOutput::Start(RequestStart {
                    conn: self.key,
                    tid: p.msg_tid,
                    role: self.role,
                    tuple: self.tuple,
                    ts: p.msg_start_ts,
                    seq,
                }));
            }
            self.queue.push_back(Pending {
                seq,
                report,
                tid: p.msg_tid,
                ts: p.msg_start_ts,
                method: text(h.method),
                target: text(h.target),
                version: text(h.version),
                host: h.host.map(text),
                traceparent: h.traceparent.map(text),
                user_agent: h.user_agent.map(text),
                is_head: h.method == b"HEAD",
                is_connect: h.method == b"CONNECT",
                req_body: 0,
                req_head: p.head_len,
                resp_head: 0,
                status: 0,
                response_start_ts: 0,
            });
        } else {
            if self.sync {
                // Deeper pipelining than tracked: its responses cannot be placed.
                self.lose_sync(Side::Req, resp, 0, cx);
            }
            self.owed = self.owed.saturating_add(1);
            self.desync_requests = self.desync_requests.saturating_add(1);
            cx.stats.requests_dropped += 1;
        }
        p.state = if !complete || h.other_te || h.bad_length {
            State::UnknownLength
        } else if h.chunked {
            State::Chunked(Chunk::START)
        } else {
            match h.content_length {
                Some(n) if n > 0 => State::Body(n),
                _ => State::Idle,
            }
        };
        if p.state == State::Idle {
            p.msg_seq = None;
        }
    }

    /// Everything asked has been answered, as far as can be seen: pairing can restart.
    fn quiescent(&self, resp: &DirParser, before_request: u64) -> bool {
        self.queue.is_empty()
            && !in_message(resp.state)
            && resp.last_ts >= before_request
            && (self.owed == 0 || self.desync_requests >= MAX_DESYNC_REQUESTS)
    }

    fn response_head(
        &mut self,
        p: &mut DirParser,
        req: &mut DirParser,
        h: &Head,
        complete: bool,
        ts: u64,
        cx: &mut Cx,
    ) {
        if self.queue.is_empty() && self.sync && req.state == State::Head {
            // Answered before the request head was over (408, 431, ...): pair with what came.
            let buf = mem::take(&mut req.head);
            if let Some(rh) = parse_head(&buf, cx.cfg.max_headers).filter(|h| h.is(Kind::Request)) {
                cx.stats.truncated_heads += 1;
                self.request_head(req, p, &rh, false, cx);
            }
            req.head = buf;
            req.head.clear();
        }
        let status = h.status;
        let front = self.queue.front_mut();
        p.msg_seq = front.as_ref().map(|f| f.seq);
        let (is_head, is_connect) = front
            .as_ref()
            .map_or((false, false), |f| (f.is_head, f.is_connect));
        if (100..200).contains(&status) && status != 101 {
            // Interim (100 Continue, 103 Early Hints): the final response follows, possibly
            // in the same syscall, so a cut interim head may hide it.
            p.msg_seq = None;
            if complete {
                p.state = State::Idle;
            } else {
                p.state = State::Resync;
                self.lose_sync(Side::Resp, p, 0, cx);
            }
            return;
        }
        if let Some(f) = front {
            f.status = status;
            f.response_start_ts = p.msg_start_ts;
            f.resp_head = p.head_len;
        }
        p.body = 0;
        if status == 101 || (is_connect && (200..300).contains(&status)) {
            // The connection now carries another protocol.
            self.response_done(p, ts, cx);
            self.http = false;
            cx.stats.upgraded_connections += 1;
            return;
        }
        p.state = if is_head || status == 204 || status == 304 {
            State::Idle
        } else if !complete || h.bad_length {
            State::UnknownLength
        } else if h.chunked {
            State::Chunked(Chunk::START)
        } else if h.other_te {
            State::UntilClose
        } else {
            match h.content_length {
                Some(0) => State::Idle,
                Some(n) => State::Body(n),
                None => State::UntilClose,
            }
        };
        if p.state == State::Idle {
            self.response_done(p, ts, cx);
        }
    }

    fn end_message(&mut self, p: &mut DirParser, dir: Direction, ts: u64, cx: &mut Cx) {
        match self.side(dir) {
            Some(Side::Resp) => self.response_done(p, ts, cx),
            _ => {
                p.state = State::Idle;
                p.msg_seq = None;
            }
        }
    }

    fn response_done(&mut self, p: &mut DirParser, ts: u64, cx: &mut Cx) {
        p.state = State::Idle;
        let seq = p.msg_seq.take();
        match (seq, self.queue.front()) {
            (Some(s), Some(f)) if f.seq == s => {
                if let Some(e) = self.queue.pop_front() {
                    let body = p.body;
                    self.emit_done(e, body, ts, Outcome::Complete, cx);
                }
            }
            _ => {
                cx.stats.orphan_responses += 1;
                if !self.sync {
                    self.owed = self.owed.saturating_sub(1);
                }
            }
        }
    }

    fn emit_done(
        &mut self,
        e: Pending,
        resp_body: u64,
        end_ts: u64,
        outcome: Outcome,
        cx: &mut Cx,
    ) {
        if !e.report {
            cx.stats.requests_dropped += 1;
            return;
        }
        cx.stats.exchanges += 1;
        (cx.out)(HttpOutput::Done(Box::new(HttpExchange {
            conn: self.key,
            tid: e.tid,
            role: self.role,
            tuple: self.tuple,
            seq: e.seq,
            method: e.method,
            target: e.target,
            version: e.version,
            host: e.host,
            traceparent: e.traceparent,
            user_agent: e.user_agent,
            status: e.status,
            request_body_size: e.req_body,
            response_body_size: resp_body,
            request_head_size: e.req_head,
            response_head_size: e.resp_head,
            conn_start_ts: if e.seq == 0 { self.conn_start_ts } else { None },
            request_start_ts: e.ts,
            response_start_ts: if e.response_start_ts == 0 {
                end_ts
            } else {
                e.response_start_ts
            },
            end_ts,
            outcome,
            comm: self.comm.clone(),
        })));
    }

    fn add_body(&mut self, p: &mut DirParser, dir: Direction, n: u64) {
        p.body = p.body.saturating_add(n);
        if self.side(dir) == Some(Side::Req) {
            if let (Some(seq), Some(back)) = (p.msg_seq, self.queue.back_mut()) {
                if back.seq == seq {
                    back.req_body = back.req_body.saturating_add(n);
                }
            }
        }
    }

    /// Bytes past the captured prefix.
    fn gap(
        &mut self,
        p: &mut DirParser,
        other: &mut DirParser,
        d: &DataEvent,
        gap: u64,
        cx: &mut Cx,
    ) {
        let dir = d.direction;
        match p.state {
            State::Idle => {
                if gap >= MIN_MESSAGE {
                    // A whole message start went by unseen.
                    p.state = State::Resync;
                    self.lose_sync_in(p, other, dir, 1, cx);
                }
            }
            State::Head => {
                if self.cut_head(p, other, d, cx) {
                    self.add_body(p, dir, gap);
                }
            }
            State::Body(rem) if gap < rem => {
                self.add_body(p, dir, gap);
                p.state = State::Body(rem - gap);
            }
            State::Body(rem) => {
                self.add_body(p, dir, rem);
                self.end_message(p, dir, d.ts, cx);
                if gap - rem >= MIN_MESSAGE {
                    p.state = State::Resync;
                    self.lose_sync_in(p, other, dir, 1, cx);
                }
            }
            State::Chunked(Chunk::Data(rem)) if gap <= rem => {
                self.add_body(p, dir, gap);
                p.state = State::Chunked(Chunk::Data(rem - gap));
            }
            State::Chunked(_) => {
                self.add_body(p, dir, gap);
                p.state = State::UnknownLength;
                self.lose_sync_in(p, other, dir, 0, cx);
            }
            State::UntilClose | State::UnknownLength => self.add_body(p, dir, gap),
            State::Resync => {}
        }
    }

    /// The head in `p.head` will not be seen whole: what follows it, and maybe further
    /// messages, are out of sight. Returns whether the bytes that follow are its body.
    fn cut_head(
        &mut self,
        p: &mut DirParser,
        other: &mut DirParser,
        d: &DataEvent,
        cx: &mut Cx,
    ) -> bool {
        self.head_from_buffer(p, other, d, false, cx);
        let body_follows = match p.state {
            State::UnknownLength => true,
            // Over already (a response without body): what follows is the rest of its head.
            State::Idle => {
                p.state = State::Resync;
                false
            }
            // Not a head after all, and already handled as such.
            _ => return false,
        };
        if self.http {
            self.lose_sync_in(p, other, d.direction, 0, cx);
        }
        body_follows
    }

    /// Bytes that should start a message do not.
    fn garbage(&mut self, p: &mut DirParser, other: &mut DirParser, dir: Direction, cx: &mut Cx) {
        p.state = State::Resync;
        p.msg_seq = None;
        if !self.confirmed {
            self.miss(cx);
            return;
        }
        cx.stats.parse_errors += 1;
        self.lose_sync_in(p, other, dir, 0, cx);
    }

    /// Not (yet) HTTP. Returns false when the connection is given up as non-HTTP.
    fn miss(&mut self, cx: &mut Cx) -> bool {
        if self.saw_start || self.misses >= MIDSTREAM_TOLERANCE {
            self.http = false;
            cx.stats.non_http_connections += 1;
            false
        } else {
            self.misses += 1;
            true
        }
    }

    fn lose_sync_in(
        &mut self,
        p: &DirParser,
        other: &DirParser,
        dir: Direction,
        hidden: u32,
        cx: &mut Cx,
    ) {
        match self.side(dir) {
            Some(Side::Resp) => self.lose_sync(Side::Resp, p, hidden, cx),
            _ => self.lose_sync(Side::Req, other, hidden, cx),
        }
    }

    /// Messages may have gone by unseen on `side` (`hidden` of them for sure): stop trusting
    /// order-based pairing until the connection is quiescent. `resp` is the response parser.
    fn lose_sync(&mut self, side: Side, resp: &DirParser, hidden: u32, cx: &mut Cx) {
        if self.sync {
            self.sync = false;
            self.desync_requests = 0;
            cx.stats.desyncs += 1;
        }
        if side == Side::Req {
            self.owed = self.owed.saturating_add(hidden);
            return;
        }
        // Responses may be missing: only the request being answered now keeps its pair. The
        // responses of the others, except the hidden ones, are still to come.
        let keep = usize::from(
            in_message(resp.state)
                && resp.msg_seq.is_some()
                && resp.msg_seq == self.queue.front().map(|f| f.seq),
        );
        let dropped = u32::try_from(self.queue.len().saturating_sub(keep)).unwrap_or(u32::MAX);
        self.owed = self.owed.saturating_add(dropped.saturating_sub(hidden));
        let key = self.key;
        for e in self.queue.drain(keep..) {
            abandon(key, e, cx);
        }
    }
}
