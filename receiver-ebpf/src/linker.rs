//! Trace context for spans made from kernel events: which request is whose parent and which
//! trace each belongs to, decided from request starts and completed exchanges as they arrive.
//!
//! Three links, as OBI makes them: an incoming W3C `traceparent` header; a client request
//! written by a thread while a server request read by that thread is in flight (its child); and
//! the two ends of one connection on this host (the client request is the server request's
//! parent). Everything linked gets the trace id of its root.
//!
//! The input is racy: the ring buffer can deliver a server's read of a request before the
//! client's write that sent it, and children complete before their parents. So requests are
//! tracked from their start; a server request waits up to `link_grace` (on the event clock)
//! for the client end of its connection before it is taken as a root, and a completed span is
//! held until its trace is decided — in practice until the root's exchange arrives — or at most
//! `max_hold`, after which its chain is cut where it is still undecided (counted as forced).
//! Memory is bounded by `max_tracked` requests; past it requests go out unlinked (counted).

use std::collections::{HashMap, VecDeque};
use std::hash::{BuildHasher, BuildHasherDefault, Hasher};
use std::net::SocketAddr;

use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};

use crate::model::{ConnKey, HttpExchange, RequestStart, Role, Tuple};

pub type TraceId = [u8; 16];
pub type SpanId = [u8; 8];

/// W3C's only defined trace flag. Spans without an incoming context are recorded, so sampled.
pub const FLAG_SAMPLED: u8 = 0x01;

/// Parent chains are a few hops long; the bound only guards against corrupt input.
const MAX_DEPTH: usize = 64;
/// How often (event clock) indices are pruned and abandoned requests expired.
const SWEEP_INTERVAL_NS: u64 = 1_000_000_000;

#[derive(Debug, Clone)]
pub struct LinkerConfig {
    /// How long (boot-clock ns, on the watermark) a server request without a known parent waits
    /// for the client end of its connection to be reported before it is taken as a root. The
    /// client's start precedes the server's in time and differs in delivery order only by the
    /// ring buffer's cross-CPU reordering, so a few drain intervals are enough.
    pub link_grace_ns: u64,
    /// Longest a completed span is held while its trace is undecided.
    pub max_hold_ns: u64,
    /// A request whose exchange never arrives (lost events) is forgotten after this.
    pub max_request_age_ns: u64,
    /// The two ends of a connection are matched only if their request starts are this close.
    pub peer_window_ns: u64,
    /// Most requests tracked at once.
    pub max_tracked: usize,
}

impl Default for LinkerConfig {
    fn default() -> Self {
        LinkerConfig {
            link_grace_ns: 25_000_000,
            max_hold_ns: 2_000_000_000,
            max_request_age_ns: 600_000_000_000,
            peer_window_ns: 10_000_000_000,
            max_tracked: 65_536,
        }
    }
}

/// How a span's parent was found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ParentKind {
    /// A root span.
    None,
    /// The server request its thread was handling (same process).
    Thread,
    /// The client end of the same connection (another traced process on this host).
    Peer,
    /// An incoming `traceparent` header.
    Header,
}

/// A completed exchange with its place in a trace.
#[derive(Debug, Clone)]
pub struct LinkedExchange {
    pub exchange: Box<HttpExchange>,
    pub trace_id: TraceId,
    pub span_id: SpanId,
    /// `None` for a root span.
    pub parent_span_id: Option<SpanId>,
    pub trace_flags: u8,
    pub parent: ParentKind,
    /// The traced process at the other end of the connection, when both ends are traced.
    pub peer_pid: Option<u32>,
}

/// Counters for internal telemetry; every span that left without its full context is counted.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LinkerStats {
    pub spans_emitted: u64,
    pub linked_thread: u64,
    pub linked_peer: u64,
    pub linked_header: u64,
    /// Chains cut because a span waited `max_hold` (or memory ran short) before its root decided.
    pub forced: u64,
    /// Requests whose exchange never arrived within `max_request_age`.
    pub expired: u64,
    /// Requests the HTTP tracker gave up on (their children are released without them).
    pub abandoned: u64,
    /// Exchanges emitted unlinked because `max_tracked` requests were already tracked.
    pub untracked: u64,
    pub traceparent_invalid: u64,
    /// Valid headers that arrived after the span's trace had already been decided (forced).
    pub traceparent_ignored: u64,
    pub unknown_role: u64,
    pub duplicate_starts: u64,
}

/// A parsed W3C trace context (`traceparent` header).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TraceContext {
    pub trace_id: TraceId,
    pub span_id: SpanId,
    pub flags: u8,
}

/// Parses a `traceparent` header value; `None` when it is not a valid W3C trace context.
pub fn parse_traceparent(value: &str) -> Option<TraceContext> {
    let v = value.trim().as_bytes();
    // version(2) - trace-id(32) - parent-id(16) - flags(2)
    if v.len() < 55 || v[2] != b'-' || v[35] != b'-' || v[52] != b'-' {
        return None;
    }
    let version = hex_byte(&v[0..2])?;
    // Version ff is forbidden; version 00 has exactly four fields; later versions may add
    // fields after a dash.
    if version == 0xff || (version == 0 && v.len() != 55) || (v.len() > 55 && v[55] != b'-') {
        return None;
    }
    let mut trace_id = [0u8; 16];
    for (i, b) in trace_id.iter_mut().enumerate() {
        *b = hex_byte(&v[3 + 2 * i..5 + 2 * i])?;
    }
    let mut span_id = [0u8; 8];
    for (i, b) in span_id.iter_mut().enumerate() {
        *b = hex_byte(&v[36 + 2 * i..38 + 2 * i])?;
    }
    let flags = hex_byte(&v[53..55])?;
    if trace_id == [0; 16] || span_id == [0; 8] {
        return None;
    }
    Some(TraceContext {
        trace_id,
        span_id,
        flags,
    })
}

/// Lowercase hex only, as W3C requires.
fn hex_byte(two: &[u8]) -> Option<u8> {
    fn nibble(c: u8) -> Option<u8> {
        match c {
            b'0'..=b'9' => Some(c - b'0'),
            b'a'..=b'f' => Some(c - b'a' + 10),
            _ => None,
        }
    }
    Some(nibble(two[0])? << 4 | nibble(two[1])?)
}

/// Multiply-rotate hashing for keys this module makes itself (node ids, kernel socket ids,
/// pid/tid): much cheaper than SipHash on the per-request path, and not attacker-controlled.
/// Connection tuples, which remote peers partly choose, keep the default hasher.
#[derive(Default, Clone, Copy)]
struct FastHasher(u64);

impl FastHasher {
    fn add(&mut self, w: u64) {
        self.0 = (self.0.rotate_left(5) ^ w).wrapping_mul(0x51_7c_c1_b7_27_22_0a_95);
    }
}

impl Hasher for FastHasher {
    fn write(&mut self, bytes: &[u8]) {
        for chunk in bytes.chunks(8) {
            let mut b = [0u8; 8];
            b[..chunk.len()].copy_from_slice(chunk);
            self.add(u64::from_le_bytes(b));
        }
    }
    fn write_u8(&mut self, i: u8) {
        self.add(u64::from(i));
    }
    fn write_u16(&mut self, i: u16) {
        self.add(u64::from(i));
    }
    fn write_u32(&mut self, i: u32) {
        self.add(u64::from(i));
    }
    fn write_u64(&mut self, i: u64) {
        self.add(i);
    }
    fn write_usize(&mut self, i: usize) {
        self.add(i as u64);
    }
    fn finish(&self) -> u64 {
        self.0
    }
}

type FastMap<K, V> = HashMap<K, V, BuildHasherDefault<FastHasher>>;

/// The fast hasher with a random start, for keys remote peers partly choose (connection
/// tuples): colliding keys cannot be prepared in advance, and a connection costs a peer far
/// more than its key costs here.
#[derive(Clone, Copy)]
struct SeededState(u64);

impl BuildHasher for SeededState {
    type Hasher = FastHasher;
    fn build_hasher(&self) -> FastHasher {
        FastHasher(self.0)
    }
}

/// Generation in the high half, slot index in the low half: an id outlives its node safely.
type NodeId = u64;

/// The tracked requests: slots reused through a free list, so the per-request path neither
/// hashes nor rehashes.
#[derive(Default)]
struct Slab {
    slots: Vec<(u32, Option<Node>)>,
    free: Vec<u32>,
    len: usize,
}

impl Slab {
    fn insert(&mut self, node: Node) -> NodeId {
        self.len += 1;
        match self.free.pop() {
            Some(i) => {
                let slot = &mut self.slots[i as usize];
                slot.1 = Some(node);
                (u64::from(slot.0) << 32) | u64::from(i)
            }
            None => {
                let i = self.slots.len() as u32;
                self.slots.push((0, Some(node)));
                u64::from(i)
            }
        }
    }

    fn split(id: NodeId) -> (u32, usize) {
        ((id >> 32) as u32, (id & 0xffff_ffff) as usize)
    }

    fn get(&self, id: &NodeId) -> Option<&Node> {
        let (generation, i) = Slab::split(*id);
        match self.slots.get(i) {
            Some((g, Some(n))) if *g == generation => Some(n),
            _ => None,
        }
    }

    fn get_mut(&mut self, id: &NodeId) -> Option<&mut Node> {
        let (generation, i) = Slab::split(*id);
        match self.slots.get_mut(i) {
            Some((g, Some(n))) if *g == generation => Some(n),
            _ => None,
        }
    }

    fn contains_key(&self, id: &NodeId) -> bool {
        self.get(id).is_some()
    }

    fn remove(&mut self, id: &NodeId) -> Option<Node> {
        let (generation, i) = Slab::split(*id);
        let slot = self.slots.get_mut(i)?;
        if slot.0 != generation || slot.1.is_none() {
            return None;
        }
        let node = slot.1.take();
        slot.0 = slot.0.wrapping_add(1);
        self.free.push(i as u32);
        self.len -= 1;
        node
    }

    fn len(&self) -> usize {
        self.len
    }

    fn iter(&self) -> impl Iterator<Item = (NodeId, &Node)> {
        self.slots
            .iter()
            .enumerate()
            .filter_map(|(i, (g, n))| n.as_ref().map(|n| ((u64::from(*g) << 32) | i as u64, n)))
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Parent {
    /// Not decided yet: a server request that a client may still claim or a header may name.
    Pending,
    Root,
    Node(NodeId),
    /// The parent is no longer tracked (emitted, or remote) but its trace is known.
    Known(TraceId, u8),
}

#[derive(Debug)]
struct Node {
    pid: u32,
    tid: u32,
    role: Role,
    start_ts: u64,
    created_wm: u64,
    span_id: SpanId,
    parent: Parent,
    parent_span: Option<SpanId>,
    parent_kind: ParentKind,
    parent_final: bool,
    trace: Option<(TraceId, u8)>,
    exchange: Option<Box<HttpExchange>>,
    emitted: bool,
    children: Vec<NodeId>,
    peer_pid: Option<u32>,
    /// Linked to the other end of its connection.
    matched: bool,
    /// A server request whose wait for a client parent is over.
    grace_over: bool,
    /// A server request listed as in flight on its thread.
    in_thread: bool,
}

/// IPv4-mapped IPv6 addresses (dual-stack listeners) are the same endpoint as their IPv4 form.
fn canonical(a: SocketAddr) -> SocketAddr {
    SocketAddr::new(a.ip().to_canonical(), a.port())
}

fn peer_key(role: Role, tuple: &Tuple) -> Tuple {
    let (client, server) = match role {
        Role::Server => (tuple.remote, tuple.local),
        _ => (tuple.local, tuple.remote),
    };
    Tuple {
        local: canonical(client),
        remote: canonical(server),
    }
}

pub struct Linker {
    config: LinkerConfig,
    rng: SmallRng,
    /// Highest boot-clock time known to be delivered (events seen, or `advance`).
    wm: u64,
    next_sweep: u64,
    nodes: Slab,
    /// Requests started and not yet completed, by connection and index on it.
    by_req: FastMap<(ConnKey, u64), NodeId>,
    /// Server requests in flight per (pid, tid).
    threads: FastMap<(u32, u32), Vec<NodeId>>,
    /// Client requests not yet claimed by the server end, by connection.
    open_clients: HashMap<Tuple, Vec<NodeId>, SeededState>,
    /// Server requests still waiting for the client end, by connection.
    open_servers: HashMap<Tuple, Vec<NodeId>, SeededState>,
    grace_q: VecDeque<(u64, NodeId)>,
    hold_q: VecDeque<(u64, NodeId)>,
    /// Emitted client requests kept briefly so a late server end can still find its parent.
    tomb_q: VecDeque<(u64, NodeId)>,
    ready: Vec<LinkedExchange>,
    last_pressure: Option<u64>,
    stats: LinkerStats,
}

impl Linker {
    pub fn new(config: LinkerConfig) -> Linker {
        Linker::with_rng(config, SmallRng::from_os_rng())
    }

    /// Deterministic ids, for tests.
    pub fn with_seed(config: LinkerConfig, seed: u64) -> Linker {
        Linker::with_rng(config, SmallRng::seed_from_u64(seed))
    }

    fn with_rng(config: LinkerConfig, mut rng: SmallRng) -> Linker {
        let seed = SeededState(rng.random());
        Linker {
            config,
            rng,
            wm: 0,
            next_sweep: 0,
            nodes: Slab::default(),
            by_req: FastMap::default(),
            threads: FastMap::default(),
            open_clients: HashMap::with_hasher(seed),
            open_servers: HashMap::with_hasher(seed),
            grace_q: VecDeque::new(),
            hold_q: VecDeque::new(),
            tomb_q: VecDeque::new(),
            ready: Vec::new(),
            last_pressure: None,
            stats: LinkerStats::default(),
        }
    }

    pub fn stats(&self) -> &LinkerStats {
        &self.stats
    }

    /// Requests currently tracked (in flight, or complete and waiting for their trace).
    pub fn tracked(&self) -> usize {
        self.nodes.len()
    }

    /// The spans whose trace context is decided, in the order they were decided.
    pub fn take_ready(&mut self) -> Vec<LinkedExchange> {
        std::mem::take(&mut self.ready)
    }

    /// Like [`Linker::take_ready`], keeping the buffer's capacity for the next pass.
    pub fn drain_ready(&mut self) -> std::vec::Drain<'_, LinkedExchange> {
        self.ready.drain(..)
    }

    /// A request's headers were seen (event order).
    pub fn request_start(&mut self, rs: &RequestStart) {
        self.wm = self.wm.max(rs.ts);
        if rs.role == Role::Unknown {
            self.stats.unknown_role += 1;
            return;
        }
        if self.by_req.contains_key(&(rs.conn, rs.seq)) {
            // The tracker starts each (conn, seq) once; a second start means the first request
            // is dead (e.g. its socket was reused) and will get no exchange.
            self.stats.duplicate_starts += 1;
            self.abandon(rs.conn, rs.seq);
        }
        if !self.make_room() {
            // Its exchange will go out unlinked when it arrives (counted there).
            return;
        }
        let id = self.create(rs.conn.pid, rs.tid, rs.role, &rs.tuple, rs.ts, true);
        self.by_req.insert((rs.conn, rs.seq), id);
    }

    /// A request/response pair completed (event order).
    pub fn exchange(&mut self, ex: impl Into<Box<HttpExchange>>) {
        let ex: Box<HttpExchange> = ex.into();
        self.wm = self.wm.max(ex.end_ts);
        if ex.role == Role::Unknown {
            self.stats.unknown_role += 1;
            return;
        }
        let known = self
            .by_req
            .remove(&(ex.conn, ex.seq))
            .filter(|id| self.nodes.contains_key(id));
        let id = match known {
            Some(id) => id,
            None => {
                if !self.make_room() {
                    self.stats.untracked += 1;
                    self.emit_unlinked(ex);
                    return;
                }
                // No start was seen (or it was forgotten): link from the exchange alone.
                self.create(
                    ex.conn.pid,
                    ex.tid,
                    ex.role,
                    &ex.tuple,
                    ex.request_start_ts,
                    false,
                )
            }
        };
        self.leave_thread(id);
        if ex.role == Role::Server {
            if let Some(tp) = ex.traceparent.as_deref() {
                match parse_traceparent(tp) {
                    Some(ctx) => self.apply_header(id, ctx),
                    None => self.stats.traceparent_invalid += 1,
                }
            }
            if let Some(n) = self.nodes.get(&id) {
                if !n.parent_final && (n.matched || n.grace_over) {
                    self.finalize(id);
                }
            }
        }
        if let Some(n) = self.nodes.get_mut(&id) {
            n.exchange = Some(ex);
        }
        self.try_emit_from(id);
        if self.nodes.get(&id).is_some_and(|n| !n.emitted) {
            self.hold_q
                .push_back((self.wm + self.config.max_hold_ns, id));
        }
    }

    /// A started request will get no exchange (the HTTP tracker gave up on it): forget it now
    /// rather than at `max_request_age`, so the spans it parents need not wait for it.
    pub fn abandon(&mut self, conn: ConnKey, seq: u64) {
        let Some(id) = self.by_req.remove(&(conn, seq)) else {
            return;
        };
        if self
            .nodes
            .get(&id)
            .is_some_and(|n| n.exchange.is_none() && !n.emitted)
        {
            self.stats.abandoned += 1;
            self.remove(id);
        }
    }

    /// Tells the linker that every event stamped before `now_boot_ns` (boot clock) has been
    /// delivered: decides roots whose grace is over, releases spans held too long, expires
    /// abandoned requests. Call it after each drain that emptied the ring buffer, with the boot
    /// time read *before* that drain started; after a drain that stopped early (a bounded
    /// batch), pass nothing newer than the last event read, or a server request could be taken
    /// for a root while its client's start is still queued.
    pub fn advance(&mut self, now_boot_ns: u64) {
        self.wm = self.wm.max(now_boot_ns);
        while let Some(&(deadline, id)) = self.grace_q.front() {
            if deadline > self.wm {
                break;
            }
            self.grace_q.pop_front();
            let Some(n) = self.nodes.get_mut(&id) else {
                continue;
            };
            if n.parent_final {
                continue;
            }
            n.grace_over = true;
            if n.exchange.is_some() {
                self.finalize(id);
                self.try_emit_from(id);
            }
        }
        while let Some(&(deadline, id)) = self.hold_q.front() {
            if deadline > self.wm {
                break;
            }
            self.hold_q.pop_front();
            if self
                .nodes
                .get(&id)
                .is_some_and(|n| !n.emitted && n.exchange.is_some())
            {
                self.force(id);
            }
        }
        while let Some(&(deadline, id)) = self.tomb_q.front() {
            if deadline > self.wm {
                break;
            }
            self.tomb_q.pop_front();
            if self.nodes.get(&id).is_some_and(|n| n.emitted) {
                self.remove(id);
            }
        }
        if self.wm >= self.next_sweep {
            self.sweep();
            self.next_sweep = self.wm + SWEEP_INTERVAL_NS;
        }
    }

    fn new_span_id(&mut self) -> SpanId {
        loop {
            // Whole words: filling a byte array from the generator is several times slower.
            let id: SpanId = self.rng.random::<u64>().to_le_bytes();
            if id != [0; 8] {
                return id;
            }
        }
    }

    fn new_trace_id(&mut self) -> TraceId {
        loop {
            let id: TraceId = self.rng.random::<u128>().to_le_bytes();
            if id != [0; 16] {
                return id;
            }
        }
    }

    /// Starts tracking a request and links it as far as what is known now allows.
    fn create(
        &mut self,
        pid: u32,
        tid: u32,
        role: Role,
        tuple: &Tuple,
        start_ts: u64,
        in_flight: bool,
    ) -> NodeId {
        let span_id = self.new_span_id();
        let key = peer_key(role, tuple);
        let id = self.nodes.insert(Node {
            pid,
            tid,
            role,
            start_ts,
            created_wm: self.wm,
            span_id,
            parent: Parent::Pending,
            parent_span: None,
            parent_kind: ParentKind::None,
            parent_final: false,
            trace: None,
            exchange: None,
            emitted: false,
            children: Vec::new(),
            peer_pid: None,
            matched: false,
            grace_over: false,
            in_thread: false,
        });
        match role {
            Role::Client => {
                // A client's parent is decided now: the thread's server request, if any, was
                // reported before this write (same thread, so in order).
                let attached = match self.thread_parent(pid, tid, start_ts) {
                    Some(server) => self.attach(id, server, ParentKind::Thread),
                    None => false,
                };
                if !attached {
                    let trace = self.new_trace_id();
                    if let Some(n) = self.nodes.get_mut(&id) {
                        n.parent = Parent::Root;
                        n.trace = Some((trace, FLAG_SAMPLED));
                    }
                }
                if let Some(n) = self.nodes.get_mut(&id) {
                    n.parent_final = true;
                }
                match self.take_open(true, &key, start_ts) {
                    Some(server) => self.link_peer(id, server),
                    None => self.open_clients.entry(key).or_default().push(id),
                }
            }
            _ => {
                if in_flight {
                    self.threads.entry((pid, tid)).or_default().push(id);
                    if let Some(n) = self.nodes.get_mut(&id) {
                        n.in_thread = true;
                    }
                }
                match self.take_open(false, &key, start_ts) {
                    Some(client) => self.link_peer(client, id),
                    None => {
                        self.open_servers.entry(key).or_default().push(id);
                        self.grace_q
                            .push_back((self.wm + self.config.link_grace_ns, id));
                    }
                }
            }
        }
        id
    }

    /// The latest server request in flight on this thread that started before `ts`.
    fn thread_parent(&mut self, pid: u32, tid: u32, ts: u64) -> Option<NodeId> {
        let list = self.threads.get_mut(&(pid, tid))?;
        let nodes = &self.nodes;
        list.retain(|id| nodes.get(id).is_some_and(|n| n.in_thread));
        list.iter()
            .filter_map(|id| nodes.get(id).map(|n| (n.start_ts, *id)))
            .filter(|(start, _)| *start <= ts)
            .max()
            .map(|(_, id)| id)
    }

    fn leave_thread(&mut self, id: NodeId) {
        let Some(n) = self.nodes.get_mut(&id) else {
            return;
        };
        if !n.in_thread {
            return;
        }
        n.in_thread = false;
        let key = (n.pid, n.tid);
        // An emptied list stays for the thread's next request (no allocation per request);
        // `sweep` drops the ones still empty.
        if let Some(list) = self.threads.get_mut(&key) {
            list.retain(|x| *x != id);
        }
    }

    /// Takes the unmatched request of the other end of this connection that started closest to
    /// `start_ts` (keep-alive connections carry several; each end's n-th request pairs up).
    fn take_open(&mut self, want_server: bool, key: &Tuple, start_ts: u64) -> Option<NodeId> {
        let index = if want_server {
            &mut self.open_servers
        } else {
            &mut self.open_clients
        };
        let list = index.get_mut(key)?;
        let nodes = &self.nodes;
        let eligible = |n: &Node| !n.matched && if want_server { !n.parent_final } else { true };
        list.retain(|id| nodes.get(id).is_some_and(eligible));
        let window = self.config.peer_window_ns;
        let best = list
            .iter()
            .enumerate()
            .filter_map(|(i, id)| {
                let d = nodes.get(id)?.start_ts.abs_diff(start_ts);
                (d <= window).then_some((d, i))
            })
            .min()
            .map(|(_, i)| i);
        // Emptied lists stay for the connection's next request; `sweep` drops the ones still
        // empty.
        best.map(|i| list.swap_remove(i))
    }

    /// Makes `parent` the parent of `child` unless that would close a loop.
    fn attach(&mut self, child: NodeId, parent: NodeId, kind: ParentKind) -> bool {
        if self.is_self_or_ancestor(child, parent) {
            return false;
        }
        let Some(p) = self.nodes.get_mut(&parent) else {
            return false;
        };
        let (span, emitted, trace) = (p.span_id, p.emitted, p.trace);
        if !emitted {
            p.children.push(child);
        }
        let Some(c) = self.nodes.get_mut(&child) else {
            return false;
        };
        c.parent_span = Some(span);
        c.parent_kind = kind;
        c.parent = match (emitted, trace) {
            (true, Some((t, f))) => Parent::Known(t, f),
            _ => Parent::Node(parent),
        };
        true
    }

    /// Whether `ancestor` is `node` or is reached walking up from `node`.
    fn is_self_or_ancestor(&self, ancestor: NodeId, node: NodeId) -> bool {
        let mut cur = node;
        for _ in 0..MAX_DEPTH {
            if cur == ancestor {
                return true;
            }
            match self.nodes.get(&cur).map(|n| n.parent) {
                Some(Parent::Node(p)) => cur = p,
                _ => return false,
            }
        }
        false
    }

    /// The client request `client` is the server request `server` at the other end.
    fn link_peer(&mut self, client: NodeId, server: NodeId) {
        if !self.attach(server, client, ParentKind::Peer) {
            // Only a loop refuses a link; both stay unmatched roots-to-be.
            return;
        }
        let (cpid, spid) = match (self.nodes.get(&client), self.nodes.get(&server)) {
            (Some(c), Some(s)) => (c.pid, s.pid),
            _ => return,
        };
        let client_emitted = if let Some(c) = self.nodes.get_mut(&client) {
            c.matched = true;
            c.peer_pid = Some(spid);
            c.emitted
        } else {
            false
        };
        if let Some(s) = self.nodes.get_mut(&server) {
            s.matched = true;
            s.peer_pid = Some(cpid);
        }
        if client_emitted {
            // The tombstone did its job.
            self.remove(client);
        }
        // A server whose exchange came first was only waiting for this.
        if self
            .nodes
            .get(&server)
            .is_some_and(|s| s.exchange.is_some() && !s.parent_final)
        {
            self.finalize(server);
            self.try_emit_from(server);
        }
    }

    fn apply_header(&mut self, id: NodeId, ctx: TraceContext) {
        let Some(n) = self.nodes.get(&id) else {
            return;
        };
        if n.parent_final {
            // Its trace was decided (forced out) before the header was seen.
            self.stats.traceparent_ignored += 1;
            return;
        }
        // An explicit context wins over a connection match: it is what the instrumented peer
        // itself reports.
        if let Parent::Node(p) = n.parent {
            if let Some(pn) = self.nodes.get_mut(&p) {
                pn.children.retain(|c| *c != id);
            }
        }
        if let Some(n) = self.nodes.get_mut(&id) {
            n.parent = Parent::Known(ctx.trace_id, ctx.flags);
            n.parent_span = Some(ctx.span_id);
            n.parent_kind = ParentKind::Header;
            n.parent_final = true;
            n.trace = Some((ctx.trace_id, ctx.flags));
        }
    }

    /// Decides a request's parent with what is known now: a root if nothing claimed it.
    fn finalize(&mut self, id: NodeId) {
        let Some(n) = self.nodes.get(&id) else {
            return;
        };
        let needs_trace = match n.parent {
            Parent::Pending | Parent::Root => true,
            // Defensive: a parent forgotten without handing down its trace starts a new one.
            Parent::Node(p) => !self.nodes.contains_key(&p),
            Parent::Known(..) => false,
        };
        let fresh = needs_trace.then(|| self.new_trace_id());
        let Some(n) = self.nodes.get_mut(&id) else {
            return;
        };
        n.parent_final = true;
        if n.parent == Parent::Pending {
            n.parent = Parent::Root;
        }
        if let Some(t) = fresh {
            n.trace = Some((t, FLAG_SAMPLED));
        }
    }

    fn resolve(&self, id: NodeId) -> Option<(TraceId, u8)> {
        let mut cur = id;
        for _ in 0..MAX_DEPTH {
            let n = self.nodes.get(&cur)?;
            if let Some(t) = n.trace {
                return Some(t);
            }
            if !n.parent_final {
                return None;
            }
            match n.parent {
                Parent::Known(t, f) => return Some((t, f)),
                Parent::Node(p) => cur = p,
                Parent::Root | Parent::Pending => return None,
            }
        }
        None
    }

    /// The first request up the chain from `id` whose parent is not decided.
    fn first_undecided(&self, id: NodeId) -> Option<NodeId> {
        let mut cur = id;
        for _ in 0..MAX_DEPTH {
            let n = self.nodes.get(&cur)?;
            if n.trace.is_some() {
                return None;
            }
            if !n.parent_final {
                return Some(cur);
            }
            match n.parent {
                Parent::Known(..) => return None,
                Parent::Node(p) if self.nodes.contains_key(&p) => cur = p,
                _ => return Some(cur),
            }
        }
        Some(cur)
    }

    /// Emits every completed request from `id` down whose trace is now decided.
    fn try_emit_from(&mut self, id: NodeId) {
        if self.resolve(id).is_none() {
            return;
        }
        let mut stack = vec![id];
        while let Some(cur) = stack.pop() {
            let Some(trace) = self.resolve(cur) else {
                continue;
            };
            let Some(n) = self.nodes.get_mut(&cur) else {
                continue;
            };
            n.trace = Some(trace);
            stack.extend(n.children.iter().copied());
            if !n.emitted && n.exchange.is_some() {
                self.emit(cur);
            }
        }
    }

    fn emit(&mut self, id: NodeId) {
        let Some(n) = self.nodes.get_mut(&id) else {
            return;
        };
        let (Some((trace_id, trace_flags)), Some(exchange)) = (n.trace, n.exchange.take()) else {
            return;
        };
        n.emitted = true;
        let tombstone = n.role == Role::Client && !n.matched;
        let children = std::mem::take(&mut n.children);
        let linked = LinkedExchange {
            exchange,
            trace_id,
            span_id: n.span_id,
            parent_span_id: n.parent_span,
            trace_flags,
            parent: n.parent_kind,
            peer_pid: n.peer_pid,
        };
        match linked.parent {
            ParentKind::None => {}
            ParentKind::Thread => self.stats.linked_thread += 1,
            ParentKind::Peer => self.stats.linked_peer += 1,
            ParentKind::Header => self.stats.linked_header += 1,
        }
        self.stats.spans_emitted += 1;
        self.ready.push(linked);
        // The caller walks the children; they only need the trace handed down.
        self.hand_down(&children, id, (trace_id, trace_flags));
        if tombstone {
            self.tomb_q
                .push_back((self.wm + self.config.link_grace_ns, id));
        } else {
            self.nodes.remove(&id);
        }
    }

    /// `parent` is going away: its children keep its trace.
    fn hand_down(&mut self, children: &[NodeId], parent: NodeId, trace: (TraceId, u8)) {
        for c in children {
            if let Some(cn) = self.nodes.get_mut(c) {
                if cn.parent == Parent::Node(parent) {
                    cn.parent = Parent::Known(trace.0, trace.1);
                }
            }
        }
    }

    /// Forgets a request that will not be emitted (abandoned, or an expired tombstone); its
    /// children keep its trace, decided now if need be, and are released.
    fn remove(&mut self, id: NodeId) {
        if !self.nodes.contains_key(&id) {
            return;
        }
        self.leave_thread(id);
        let has_children = self.nodes.get(&id).is_some_and(|n| !n.children.is_empty());
        let trace = if has_children {
            while let Some(x) = self.first_undecided(id) {
                self.finalize(x);
            }
            self.resolve(id)
        } else {
            None
        };
        let Some(n) = self.nodes.remove(&id) else {
            return;
        };
        if let Some(t) = trace {
            self.hand_down(&n.children, id, t);
            for c in n.children {
                self.try_emit_from(c);
            }
        }
    }

    /// Decides the undecided links above a span held too long, then emits what that releases.
    fn force(&mut self, id: NodeId) {
        let mut decided = Vec::new();
        while let Some(x) = self.first_undecided(id) {
            self.finalize(x);
            decided.push(x);
        }
        if !decided.is_empty() {
            self.stats.forced += 1;
        }
        for x in decided.into_iter().rev() {
            self.try_emit_from(x);
        }
        self.try_emit_from(id);
    }

    fn emit_unlinked(&mut self, exchange: Box<HttpExchange>) {
        let trace_id = self.new_trace_id();
        let span_id = self.new_span_id();
        self.ready.push(LinkedExchange {
            exchange,
            trace_id,
            span_id,
            parent_span_id: None,
            trace_flags: FLAG_SAMPLED,
            parent: ParentKind::None,
            peer_pid: None,
        });
        self.stats.spans_emitted += 1;
    }

    /// Whether one more request can be tracked; at the limit, held spans are released first.
    fn make_room(&mut self) -> bool {
        if self.nodes.len() < self.config.max_tracked {
            return true;
        }
        // The pass is a scan of everything tracked: at most once per 10 ms of event time, so a
        // table full of long requests does not make every new request pay for it.
        if self.last_pressure.is_some_and(|t| self.wm < t + 10_000_000) {
            return false;
        }
        self.last_pressure = Some(self.wm);
        let held: Vec<NodeId> = self
            .nodes
            .iter()
            .filter(|(_, n)| n.exchange.is_some() && !n.emitted)
            .map(|(id, _)| id)
            .collect();
        for id in held {
            if self.nodes.contains_key(&id) {
                self.force(id);
            }
        }
        let tombs: Vec<NodeId> = self
            .nodes
            .iter()
            .filter(|(_, n)| n.emitted)
            .map(|(id, _)| id)
            .collect();
        for id in tombs {
            self.remove(id);
        }
        self.nodes.len() < self.config.max_tracked
    }

    /// Expires requests whose exchange never came and prunes stale index entries.
    fn sweep(&mut self) {
        let max_age = self.config.max_request_age_ns;
        let wm = self.wm;
        let stale: Vec<NodeId> = self
            .nodes
            .iter()
            .filter(|(_, n)| {
                n.exchange.is_none() && !n.emitted && n.created_wm.saturating_add(max_age) <= wm
            })
            .map(|(id, _)| id)
            .collect();
        for id in stale {
            self.stats.expired += 1;
            self.remove(id);
        }
        let nodes = &self.nodes;
        self.by_req.retain(|_, id| nodes.contains_key(id));
        self.threads.retain(|_, list| {
            list.retain(|id| nodes.get(id).is_some_and(|n| n.in_thread));
            !list.is_empty()
        });
        self.open_clients.retain(|_, list| {
            list.retain(|id| nodes.get(id).is_some_and(|n| !n.matched));
            !list.is_empty()
        });
        self.open_servers.retain(|_, list| {
            list.retain(|id| nodes.get(id).is_some_and(|n| !n.matched && !n.parent_final));
            !list.is_empty()
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::Outcome;

    const MS: u64 = 1_000_000;

    fn addr(s: &str) -> SocketAddr {
        s.parse().expect("test address")
    }

    /// One request as both the start event and the exchange describe it.
    #[derive(Clone)]
    struct Req {
        pid: u32,
        tid: u32,
        sock: u64,
        role: Role,
        local: &'static str,
        remote: &'static str,
        seq: u64,
        start: u64,
        end: u64,
        traceparent: Option<&'static str>,
    }

    impl Req {
        fn conn(&self) -> ConnKey {
            ConnKey {
                pid: self.pid,
                sock_id: self.sock,
            }
        }
        fn tuple(&self) -> Tuple {
            Tuple {
                local: addr(self.local),
                remote: addr(self.remote),
            }
        }
        fn start_event(&self) -> RequestStart {
            RequestStart {
                conn: self.conn(),
                tid: self.tid,
                role: self.role,
                tuple: self.tuple(),
                ts: self.start,
                seq: self.seq,
            }
        }
        fn exchange(&self) -> HttpExchange {
            HttpExchange {
                conn: self.conn(),
                tid: self.tid,
                role: self.role,
                tuple: self.tuple(),
                seq: self.seq,
                method: "GET".into(),
                target: "/".into(),
                version: "HTTP/1.1".into(),
                host: Some("localhost:9000".into()),
                traceparent: self.traceparent.map(Into::into),
                user_agent: None,
                status: 200,
                request_body_size: 0,
                response_body_size: 12,
                request_head_size: 0,
                response_head_size: 0,
                conn_start_ts: None,
                request_start_ts: self.start,
                response_start_ts: self.end - 1000,
                end_ts: self.end,
                outcome: Outcome::Complete,
                comm: "test".into(),
            }
        }
    }

    fn req(
        pid: u32,
        role: Role,
        (local, remote): (&'static str, &'static str),
        sock: u64,
        start: u64,
        end: u64,
    ) -> Req {
        Req {
            pid,
            tid: pid + 1,
            sock,
            role,
            local,
            remote,
            seq: 0,
            start,
            end,
            traceparent: None,
        }
    }

    #[derive(Clone, Copy, Debug)]
    enum Ev {
        Start(usize),
        Done(usize),
    }

    /// curl -> proxy :9000 (pid 100) -> proxy :8000 (pid 200) -> backend :8080 (pid 300),
    /// single-threaded TCP proxies forwarding from the thread that read the request.
    /// Index: 0 server(9000), 1 client(->8000), 2 server(8000), 3 client(->8080), 4 server(8080).
    fn chain() -> Vec<Req> {
        vec![
            req(
                100,
                Role::Server,
                ("127.0.0.1:9000", "127.0.0.1:50000"),
                1,
                1000 * MS,
                1006 * MS,
            ),
            req(
                100,
                Role::Client,
                ("127.0.0.1:50001", "127.0.0.1:8000"),
                2,
                1001 * MS,
                1005 * MS,
            ),
            // The server end reads a hair after the client's write, on another CPU.
            req(
                200,
                Role::Server,
                ("127.0.0.1:8000", "127.0.0.1:50001"),
                3,
                1001 * MS + 20_000,
                1005 * MS - 50_000,
            ),
            req(
                200,
                Role::Client,
                ("127.0.0.1:50002", "127.0.0.1:8080"),
                4,
                1002 * MS,
                1004 * MS,
            ),
            req(
                300,
                Role::Server,
                ("[::ffff:127.0.0.1]:8080", "[::ffff:127.0.0.1]:50002"),
                5,
                1002 * MS + 20_000,
                1004 * MS - 50_000,
            ),
        ]
    }

    fn feed(l: &mut Linker, reqs: &[Req], order: &[Ev]) {
        for ev in order {
            match *ev {
                Ev::Start(i) => l.request_start(&reqs[i].start_event()),
                Ev::Done(i) => l.exchange(reqs[i].exchange()),
            }
        }
    }

    /// Every interleaving of the per-thread event sequences (each thread's own events stay in
    /// order, which the kernel guarantees; across processes anything goes).
    fn interleavings(seqs: &[Vec<Ev>]) -> Vec<Vec<Ev>> {
        fn rec(seqs: &[Vec<Ev>], pos: &mut Vec<usize>, cur: &mut Vec<Ev>, out: &mut Vec<Vec<Ev>>) {
            let mut done = true;
            for i in 0..seqs.len() {
                if pos[i] < seqs[i].len() {
                    done = false;
                    cur.push(seqs[i][pos[i]]);
                    pos[i] += 1;
                    rec(seqs, pos, cur, out);
                    pos[i] -= 1;
                    cur.pop();
                }
            }
            if done {
                out.push(cur.clone());
            }
        }
        let mut out = Vec::new();
        rec(seqs, &mut vec![0; seqs.len()], &mut Vec::new(), &mut out);
        out
    }

    fn assert_chain(spans: &[LinkedExchange], reqs: &[Req], ctx: &str) {
        assert_eq!(spans.len(), 5, "{ctx}");
        let by_req = |i: usize| {
            spans
                .iter()
                .find(|s| s.exchange.conn == reqs[i].conn())
                .unwrap_or_else(|| panic!("span {i} missing: {ctx}"))
        };
        let trace = by_req(0).trace_id;
        assert!(
            spans.iter().all(|s| s.trace_id == trace),
            "one trace: {ctx}"
        );
        assert_eq!(by_req(0).parent_span_id, None, "{ctx}");
        assert_eq!(by_req(0).parent, ParentKind::None, "{ctx}");
        let kinds = [
            ParentKind::Thread,
            ParentKind::Peer,
            ParentKind::Thread,
            ParentKind::Peer,
        ];
        for i in 1..5 {
            assert_eq!(
                by_req(i).parent_span_id,
                Some(by_req(i - 1).span_id),
                "span {i}'s parent: {ctx}"
            );
            assert_eq!(by_req(i).parent, kinds[i - 1], "{ctx}");
        }
        assert_eq!(by_req(1).peer_pid, Some(200), "{ctx}");
        assert_eq!(by_req(2).peer_pid, Some(100), "{ctx}");
        assert_eq!(by_req(4).peer_pid, Some(200), "{ctx}");
        let mut ids: Vec<SpanId> = spans.iter().map(|s| s.span_id).collect();
        ids.sort();
        ids.dedup();
        assert_eq!(ids.len(), 5, "distinct span ids: {ctx}");
    }

    #[test]
    fn two_proxy_chain_is_one_trace_in_every_delivery_order() {
        let reqs = chain();
        let threads = vec![
            vec![Ev::Start(0), Ev::Start(1), Ev::Done(1), Ev::Done(0)],
            vec![Ev::Start(2), Ev::Start(3), Ev::Done(3), Ev::Done(2)],
            vec![Ev::Start(4), Ev::Done(4)],
        ];
        let orders = interleavings(&threads);
        assert_eq!(orders.len(), 3150);
        for (n, order) in orders.iter().enumerate() {
            let mut l = Linker::with_seed(LinkerConfig::default(), n as u64);
            feed(&mut l, &reqs, order);
            // Nothing leaves before the root's grace is over: its trace is not decided.
            let grace = LinkerConfig::default().link_grace_ns;
            assert!(l.take_ready().is_empty(), "{order:?}");
            l.advance(1000 * MS + grace - 1);
            assert!(l.take_ready().is_empty(), "{order:?}");
            l.advance(1006 * MS + grace);
            let spans = l.take_ready();
            assert_chain(&spans, &reqs, &format!("{order:?}"));
            assert_eq!(l.stats().forced, 0);
            assert_eq!(l.stats().linked_peer, 2);
            assert_eq!(l.stats().linked_thread, 2);
            // Only the tombstone-free state remains once the grace queues drain.
            l.advance(1000 * MS + 2_000 * MS);
            assert_eq!(l.tracked(), 0, "{order:?}");
        }
    }

    #[test]
    fn chain_without_request_starts_links_from_exchanges() {
        // If the start events were lost, the exchanges alone (in completion order) still link.
        let reqs = chain();
        let mut l = Linker::with_seed(LinkerConfig::default(), 1);
        // Starts of the proxies' server sides were seen, nothing else.
        feed(
            &mut l,
            &reqs,
            &[
                Ev::Start(0),
                Ev::Start(2),
                Ev::Done(4),
                Ev::Done(3),
                Ev::Done(2),
                Ev::Done(1),
                Ev::Done(0),
            ],
        );
        l.advance(1200 * MS);
        assert_chain(&l.take_ready(), &reqs, "exchanges only");
    }

    #[test]
    fn incoming_traceparent_is_honoured_and_inherited() {
        let mut server = req(
            100,
            Role::Server,
            ("127.0.0.1:8000", "10.0.0.9:40000"),
            1,
            10 * MS,
            20 * MS,
        );
        server.traceparent = Some("00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01");
        let client = req(
            100,
            Role::Client,
            ("127.0.0.1:50001", "10.0.0.7:80"),
            2,
            11 * MS,
            19 * MS,
        );
        let mut l = Linker::with_seed(LinkerConfig::default(), 7);
        l.request_start(&server.start_event());
        l.request_start(&client.start_event());
        l.exchange(client.exchange());
        assert!(l.take_ready().is_empty(), "the child waits for the header");
        l.exchange(server.exchange());
        // Decided by the header: no grace wait.
        let spans = l.take_ready();
        assert_eq!(spans.len(), 2);
        let tid: TraceId = [
            0x0a, 0xf7, 0x65, 0x19, 0x16, 0xcd, 0x43, 0xdd, 0x84, 0x48, 0xeb, 0x21, 0x1c, 0x80,
            0x31, 0x9c,
        ];
        let s = spans
            .iter()
            .find(|s| s.exchange.role == Role::Server)
            .expect("server");
        let c = spans
            .iter()
            .find(|s| s.exchange.role == Role::Client)
            .expect("client");
        assert_eq!(s.trace_id, tid);
        assert_eq!(
            s.parent_span_id,
            Some([0xb7, 0xad, 0x6b, 0x71, 0x69, 0x20, 0x33, 0x31])
        );
        assert_eq!(s.parent, ParentKind::Header);
        assert_eq!(c.trace_id, tid);
        assert_eq!(c.parent_span_id, Some(s.span_id));
        assert_eq!(l.stats().linked_header, 1);
    }

    #[test]
    fn unsampled_header_flags_are_kept() {
        let mut server = req(
            100,
            Role::Server,
            ("127.0.0.1:8000", "10.0.0.9:40000"),
            1,
            10 * MS,
            20 * MS,
        );
        server.traceparent = Some("00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-00");
        let mut l = Linker::with_seed(LinkerConfig::default(), 7);
        l.exchange(server.exchange());
        assert_eq!(l.take_ready()[0].trace_flags, 0);
    }

    #[test]
    fn invalid_traceparent_is_counted_and_ignored() {
        let mut server = req(
            100,
            Role::Server,
            ("127.0.0.1:8000", "10.0.0.9:40000"),
            1,
            10 * MS,
            20 * MS,
        );
        server.traceparent = Some("00-0AF7651916CD43DD8448EB211C80319C-b7ad6b7169203331-01");
        let mut l = Linker::with_seed(LinkerConfig::default(), 7);
        l.request_start(&server.start_event());
        l.exchange(server.exchange());
        l.advance(200 * MS);
        let spans = l.take_ready();
        assert_eq!(spans.len(), 1);
        assert_eq!(spans[0].parent_span_id, None);
        assert_eq!(l.stats().traceparent_invalid, 1);
    }

    #[test]
    fn client_without_server_in_flight_is_a_root_at_once() {
        let client = req(
            100,
            Role::Client,
            ("127.0.0.1:50001", "10.0.0.7:80"),
            2,
            11 * MS,
            19 * MS,
        );
        let mut l = Linker::with_seed(LinkerConfig::default(), 3);
        l.request_start(&client.start_event());
        l.exchange(client.exchange());
        let spans = l.take_ready();
        assert_eq!(spans.len(), 1);
        assert_eq!(spans[0].parent, ParentKind::None);
        assert_eq!(spans[0].parent_span_id, None);
    }

    #[test]
    fn server_root_waits_for_the_grace_only() {
        let server = req(
            100,
            Role::Server,
            ("127.0.0.1:8000", "127.0.0.1:40000"),
            1,
            10 * MS,
            12 * MS,
        );
        let mut l = Linker::with_seed(LinkerConfig::default(), 3);
        l.request_start(&server.start_event());
        l.exchange(server.exchange());
        // The grace counts from when the request was seen.
        let grace = LinkerConfig::default().link_grace_ns;
        l.advance(10 * MS + grace - 1);
        assert!(l.take_ready().is_empty());
        l.advance(10 * MS + grace);
        assert_eq!(l.take_ready().len(), 1);
        assert_eq!(l.tracked(), 0);
    }

    #[test]
    fn client_sent_after_the_server_request_finished_is_not_its_child() {
        let server = req(
            100,
            Role::Server,
            ("127.0.0.1:8000", "10.0.0.9:40000"),
            1,
            10 * MS,
            12 * MS,
        );
        let client = req(
            100,
            Role::Client,
            ("127.0.0.1:50001", "10.0.0.7:80"),
            2,
            13 * MS,
            19 * MS,
        );
        let mut l = Linker::with_seed(LinkerConfig::default(), 3);
        l.request_start(&server.start_event());
        l.exchange(server.exchange());
        l.request_start(&client.start_event());
        l.exchange(client.exchange());
        l.advance(500 * MS);
        let spans = l.take_ready();
        assert_eq!(spans.len(), 2);
        assert!(spans.iter().all(|s| s.parent_span_id.is_none()));
        assert_ne!(spans[0].trace_id, spans[1].trace_id);
    }

    #[test]
    fn keep_alive_requests_pair_with_their_own_counterparts() {
        // Two requests on one connection between two traced processes, both ends seen; the
        // second server read is reported before the second client write.
        let mut c1 = req(
            100,
            Role::Client,
            ("127.0.0.1:50001", "127.0.0.1:8000"),
            2,
            10 * MS,
            12 * MS,
        );
        let mut s1 = req(
            200,
            Role::Server,
            ("127.0.0.1:8000", "127.0.0.1:50001"),
            3,
            10 * MS + 10_000,
            12 * MS - 10_000,
        );
        let mut c2 = c1.clone();
        c2.seq = 1;
        c2.start = 30 * MS;
        c2.end = 33 * MS;
        let mut s2 = s1.clone();
        s2.seq = 1;
        s2.start = 30 * MS + 10_000;
        s2.end = 33 * MS - 10_000;
        c1.seq = 0;
        s1.seq = 0;
        let mut l = Linker::with_seed(LinkerConfig::default(), 5);
        l.request_start(&c1.start_event());
        l.request_start(&s1.start_event());
        l.exchange(s1.exchange());
        l.exchange(c1.exchange());
        l.request_start(&s2.start_event());
        l.request_start(&c2.start_event());
        l.exchange(s2.exchange());
        l.exchange(c2.exchange());
        let spans = l.take_ready();
        assert_eq!(spans.len(), 4);
        let find = |r: &Req| {
            spans
                .iter()
                .find(|s| s.exchange.conn == r.conn() && s.exchange.seq == r.seq)
                .expect("span")
        };
        assert_eq!(find(&s1).parent_span_id, Some(find(&c1).span_id));
        assert_eq!(find(&s2).parent_span_id, Some(find(&c2).span_id));
        assert_eq!(find(&s1).trace_id, find(&c1).trace_id);
        assert_eq!(find(&s2).trace_id, find(&c2).trace_id);
        assert_ne!(find(&s1).trace_id, find(&s2).trace_id);
    }

    #[test]
    fn late_server_end_finds_an_emitted_client() {
        // A root client completes and is emitted before the server end's start is delivered.
        let client = req(
            100,
            Role::Client,
            ("127.0.0.1:50001", "127.0.0.1:8000"),
            2,
            10 * MS,
            12 * MS,
        );
        let server = req(
            200,
            Role::Server,
            ("127.0.0.1:8000", "127.0.0.1:50001"),
            3,
            10 * MS + 10_000,
            12 * MS - 10_000,
        );
        let mut l = Linker::with_seed(LinkerConfig::default(), 5);
        l.request_start(&client.start_event());
        l.exchange(client.exchange());
        let c = l.take_ready();
        assert_eq!(c.len(), 1);
        l.request_start(&server.start_event());
        l.exchange(server.exchange());
        let s = l.take_ready();
        assert_eq!(s.len(), 1, "linked at once, no grace needed");
        assert_eq!(s[0].trace_id, c[0].trace_id);
        assert_eq!(s[0].parent_span_id, Some(c[0].span_id));
        assert_eq!(s[0].parent, ParentKind::Peer);
        l.advance(1_000 * MS);
        assert_eq!(l.tracked(), 0);
    }

    #[test]
    fn children_of_a_long_request_are_released_after_max_hold() {
        let server = req(
            100,
            Role::Server,
            ("127.0.0.1:8000", "10.0.0.9:40000"),
            1,
            10 * MS,
            5_000 * MS,
        );
        let client = req(
            100,
            Role::Client,
            ("127.0.0.1:50001", "10.0.0.7:80"),
            2,
            11 * MS,
            19 * MS,
        );
        let mut l = Linker::with_seed(LinkerConfig::default(), 9);
        l.request_start(&server.start_event());
        l.request_start(&client.start_event());
        l.exchange(client.exchange());
        l.advance(19 * MS + 1_999 * MS);
        assert!(l.take_ready().is_empty());
        l.advance(19 * MS + 2_000 * MS);
        let early = l.take_ready();
        assert_eq!(early.len(), 1);
        assert_eq!(l.stats().forced, 1);
        l.exchange(server.exchange());
        let late = l.take_ready();
        assert_eq!(
            late.len(),
            1,
            "the root's trace was decided when its child left"
        );
        assert_eq!(late[0].trace_id, early[0].trace_id);
        assert_eq!(early[0].parent_span_id, Some(late[0].span_id));
    }

    #[test]
    fn header_after_a_forced_decision_is_counted() {
        let mut server = req(
            100,
            Role::Server,
            ("127.0.0.1:8000", "10.0.0.9:40000"),
            1,
            10 * MS,
            5_000 * MS,
        );
        server.traceparent = Some("00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01");
        let client = req(
            100,
            Role::Client,
            ("127.0.0.1:50001", "10.0.0.7:80"),
            2,
            11 * MS,
            19 * MS,
        );
        let mut l = Linker::with_seed(LinkerConfig::default(), 9);
        l.request_start(&server.start_event());
        l.request_start(&client.start_event());
        l.exchange(client.exchange());
        l.advance(3_000 * MS);
        let early = l.take_ready();
        l.exchange(server.exchange());
        let late = l.take_ready();
        assert_eq!(
            late[0].trace_id, early[0].trace_id,
            "one trace, even if the header differs"
        );
        assert_eq!(l.stats().traceparent_ignored, 1);
    }

    #[test]
    fn abandoned_requests_expire_and_release_their_children() {
        let config = LinkerConfig {
            max_request_age_ns: 10_000 * MS,
            max_hold_ns: 60_000 * MS,
            ..LinkerConfig::default()
        };
        let server = req(
            100,
            Role::Server,
            ("127.0.0.1:8000", "10.0.0.9:40000"),
            1,
            10 * MS,
            20 * MS,
        );
        let client = req(
            100,
            Role::Client,
            ("127.0.0.1:50001", "10.0.0.7:80"),
            2,
            11 * MS,
            19 * MS,
        );
        let mut l = Linker::with_seed(config, 9);
        l.request_start(&server.start_event());
        l.request_start(&client.start_event());
        l.exchange(client.exchange());
        // The server's exchange is lost.
        l.advance(5_000 * MS);
        assert!(l.take_ready().is_empty());
        l.advance(12_000 * MS);
        let spans = l.take_ready();
        assert_eq!(spans.len(), 1);
        assert!(
            spans[0].parent_span_id.is_some(),
            "keeps pointing at the lost parent"
        );
        assert_eq!(l.stats().expired, 1);
        // The client stays findable for a late server end for one grace, then goes.
        l.advance(12_200 * MS);
        assert_eq!(l.tracked(), 0);
    }

    #[test]
    fn abandoned_parent_releases_its_children_at_once() {
        let server = req(
            100,
            Role::Server,
            ("127.0.0.1:8000", "10.0.0.9:40000"),
            1,
            10 * MS,
            20 * MS,
        );
        let client = req(
            100,
            Role::Client,
            ("127.0.0.1:50001", "10.0.0.7:80"),
            2,
            11 * MS,
            19 * MS,
        );
        let mut l = Linker::with_seed(LinkerConfig::default(), 9);
        l.request_start(&server.start_event());
        l.request_start(&client.start_event());
        l.exchange(client.exchange());
        assert!(l.take_ready().is_empty());
        l.abandon(server.conn(), server.seq);
        let spans = l.take_ready();
        assert_eq!(spans.len(), 1);
        assert_eq!(spans[0].parent, ParentKind::Thread);
        assert_eq!(l.stats().abandoned, 1);
        // Unknown or already completed requests are ignored.
        l.abandon(server.conn(), server.seq);
        l.abandon(client.conn(), 5);
        assert_eq!(l.stats().abandoned, 1);
    }

    #[test]
    fn over_capacity_exchanges_go_out_unlinked_and_counted() {
        let config = LinkerConfig {
            max_tracked: 2,
            ..LinkerConfig::default()
        };
        let mut l = Linker::with_seed(config, 1);
        let reqs: Vec<Req> = (0..4)
            .map(|i| {
                req(
                    100,
                    Role::Server,
                    ("127.0.0.1:8000", "10.0.0.9:40000"),
                    i,
                    10 * MS,
                    20 * MS,
                )
            })
            .collect();
        for r in &reqs {
            l.request_start(&r.start_event());
        }
        assert_eq!(l.tracked(), 2);
        // The two tracked requests are still in flight, so nothing can be released for these.
        for r in reqs.iter().rev() {
            l.exchange(r.exchange());
        }
        l.advance(1_000 * MS);
        assert_eq!(l.take_ready().len(), 4);
        assert_eq!(l.stats().untracked, 2);
        assert_eq!(l.stats().spans_emitted, 4);
        assert_eq!(l.stats().forced, 0);
    }

    #[test]
    fn at_capacity_held_spans_are_released_to_make_room() {
        let config = LinkerConfig {
            max_tracked: 2,
            ..LinkerConfig::default()
        };
        let mut l = Linker::with_seed(config, 1);
        let reqs: Vec<Req> = (0..3)
            .map(|i| {
                req(
                    100,
                    Role::Server,
                    ("127.0.0.1:8000", "10.0.0.9:40000"),
                    i,
                    10 * MS,
                    20 * MS,
                )
            })
            .collect();
        l.request_start(&reqs[0].start_event());
        l.request_start(&reqs[1].start_event());
        l.exchange(reqs[0].exchange());
        l.exchange(reqs[1].exchange());
        assert!(l.take_ready().is_empty(), "waiting for their grace");
        l.request_start(&reqs[2].start_event());
        assert_eq!(
            l.take_ready().len(),
            2,
            "released early to track the new one"
        );
        assert_eq!(l.stats().forced, 2);
        assert_eq!(l.tracked(), 1);
    }

    #[test]
    fn unknown_role_and_duplicates_are_counted() {
        let mut r = req(
            100,
            Role::Server,
            ("127.0.0.1:8000", "10.0.0.9:40000"),
            1,
            10 * MS,
            20 * MS,
        );
        let mut l = Linker::with_seed(LinkerConfig::default(), 1);
        l.request_start(&r.start_event());
        l.request_start(&r.start_event());
        assert_eq!(l.stats().duplicate_starts, 1);
        assert_eq!(l.tracked(), 1, "the second start replaces the first");
        r.role = Role::Unknown;
        r.sock = 2;
        l.request_start(&r.start_event());
        l.exchange(r.exchange());
        assert_eq!(l.stats().unknown_role, 2);
    }

    #[test]
    fn traceparent_parsing() {
        let ok = parse_traceparent("00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01")
            .expect("valid");
        assert_eq!(ok.flags, 1);
        assert_eq!(ok.span_id, [0xb7, 0xad, 0x6b, 0x71, 0x69, 0x20, 0x33, 0x31]);
        // A later version may carry more fields.
        assert!(
            parse_traceparent("01-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01-xyz")
                .is_some()
        );
        for bad in [
            "",
            "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01-",
            "ff-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",
            "00-00000000000000000000000000000000-b7ad6b7169203331-01",
            "00-0af7651916cd43dd8448eb211c80319c-0000000000000000-01",
            "00-0af7651916cd43dd8448eb211c80319c-b7ad6b716920333g-01",
            "00_0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",
            "01-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01x",
            "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-0",
            "é0-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",
        ] {
            assert!(parse_traceparent(bad).is_none(), "{bad}");
        }
    }
}
