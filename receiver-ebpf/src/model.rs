//! The types the stages of the eBPF receiver hand each other: kernel events (decoded from the
//! ring buffer) -> HTTP exchanges (per connection) -> spans and metrics. Owned and plain, so
//! each stage can be tested without the others.

use std::net::SocketAddr;

pub use compact_str::CompactString;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Direction {
    Recv,
    Send,
}

/// Which end of the connection the traced process is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Role {
    Unknown,
    /// The socket came from accept: the process serves requests on it.
    Server,
    /// The socket came from connect: the process sends requests on it.
    Client,
}

/// A TCP connection as the traced process sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Tuple {
    pub local: SocketAddr,
    pub remote: SocketAddr,
}

impl Tuple {
    /// The same connection seen from the other end.
    pub fn reversed(&self) -> Tuple {
        Tuple {
            local: self.remote,
            remote: self.local,
        }
    }
}

/// Identity of a connection inside one process: the kernel's socket address is unique while the
/// socket lives; the pid keeps two processes sharing a socket apart.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ConnKey {
    pub pid: u32,
    pub sock_id: u64,
}

/// Bytes moved by one syscall on a TCP socket of a selected process.
#[derive(Debug, Clone)]
pub struct DataEvent {
    /// Boot-clock nanoseconds when the socket layer moved the bytes.
    pub ts: u64,
    pub conn: ConnKey,
    pub tid: u32,
    pub fd: i32,
    pub cgroup_id: u64,
    pub direction: Direction,
    pub role: Role,
    pub tuple: Tuple,
    /// Bytes the syscall moved (may exceed `payload.len()`: only a prefix is copied).
    pub bytes: u64,
    /// The first bytes moved, at most the configured payload size.
    pub payload: Vec<u8>,
    pub comm: String,
}

impl DataEvent {
    /// A placeholder to decode into ([`crate::event::EventView::decode_data_into`]).
    pub fn empty() -> DataEvent {
        let unspecified = SocketAddr::from(([0, 0, 0, 0], 0));
        DataEvent {
            ts: 0,
            conn: ConnKey { pid: 0, sock_id: 0 },
            tid: 0,
            fd: -1,
            cgroup_id: 0,
            direction: Direction::Recv,
            role: Role::Unknown,
            tuple: Tuple {
                local: unspecified,
                remote: unspecified,
            },
            bytes: 0,
            payload: Vec::new(),
            comm: String::new(),
        }
    }
}

#[derive(Debug, Clone)]
pub enum KernelEvent {
    Data(DataEvent),
    /// accept returned a new connection (`role` Server) or connect completed (`role` Client).
    Connection {
        ts: u64,
        conn: ConnKey,
        tid: u32,
        fd: i32,
        role: Role,
        tuple: Tuple,
    },
    Close {
        ts: u64,
        conn: ConnKey,
        fd: i32,
    },
    /// Discovery hints: re-examine this process now rather than at the next scan.
    ProcessExec {
        pid: u32,
    },
    ProcessExit {
        pid: u32,
    },
    /// A selected process forked `pid`, which the kernel selected with it.
    ProcessFork {
        pid: u32,
        parent: u32,
    },
    Listen {
        pid: u32,
    },
}

/// How an exchange ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// A full response was seen.
    Complete,
    /// The connection closed before the response (the client gave up: reported as status 499 on
    /// the server side, like the seed article's proxies).
    ClosedBeforeResponse,
    /// The connection closed in the middle of the response body.
    ClosedDuringResponse,
}

/// A request start, reported as soon as the request line and headers are seen, so the span
/// builder can link requests while they are still in flight.
#[derive(Debug, Clone)]
pub struct RequestStart {
    pub conn: ConnKey,
    pub tid: u32,
    pub role: Role,
    pub tuple: Tuple,
    /// Boot-clock ns of the first request byte (read by a server, written by a client).
    pub ts: u64,
    /// Index of this request on its connection (0 = first).
    pub seq: u64,
}

/// One request and its response on one connection.
#[derive(Debug, Clone)]
pub struct HttpExchange {
    pub conn: ConnKey,
    /// Thread that read (server) or wrote (client) the request.
    pub tid: u32,
    pub role: Role,
    pub tuple: Tuple,
    pub seq: u64,
    pub method: CompactString,
    /// The request target as sent (path and query).
    pub target: CompactString,
    /// `HTTP/1.0` or `HTTP/1.1`.
    pub version: CompactString,
    pub host: Option<CompactString>,
    pub traceparent: Option<CompactString>,
    pub user_agent: Option<CompactString>,
    /// 0 when no response was seen.
    pub status: u16,
    pub request_body_size: u64,
    pub response_body_size: u64,
    /// Start line and headers as sent, CRLFs included (as far as the capture saw them): with
    /// the body, the message's size on the wire (OBI's `contentLen`/`responseLen`). 0 when no
    /// response head was seen.
    pub request_head_size: u64,
    pub response_head_size: u64,
    /// When the connection was established, if this is its first request (for the "total"
    /// duration, which includes the wait before the request was read).
    pub conn_start_ts: Option<u64>,
    /// First request byte.
    pub request_start_ts: u64,
    /// First response byte.
    pub response_start_ts: u64,
    /// Last response byte (or the close).
    pub end_ts: u64,
    pub outcome: Outcome,
    pub comm: CompactString,
}
