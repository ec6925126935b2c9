//! Behaviour of the tracker on hand-built event sequences.

use super::*;
use std::net::SocketAddr;

const CONN: ConnKey = ConnKey {
    pid: 42,
    sock_id: 0xffff_8880_1234_5600,
};

fn tuple() -> Tuple {
    Tuple {
        local: SocketAddr::from(([127, 0, 0, 1], 8080)),
        remote: SocketAddr::from(([127, 0, 0, 1], 50000)),
    }
}

/// Drives a tracker with a clock that advances 1000 ns per event.
struct Sim {
    t: HttpTracker,
    ts: u64,
    out: Vec<HttpOutput>,
    /// Payload bytes the "kernel" copies per syscall.
    cap: usize,
}

impl Sim {
    fn new() -> Self {
        Sim::with(HttpConfig::default())
    }

    fn with(cfg: HttpConfig) -> Self {
        Sim {
            t: HttpTracker::new(cfg),
            ts: 1_000_000,
            out: Vec::new(),
            cap: 1024,
        }
    }

    fn tick(&mut self) -> u64 {
        self.ts += 1000;
        self.ts
    }

    fn ev(&mut self, ev: KernelEvent) {
        let out = &mut self.out;
        self.t.on_event(&ev, &mut |o| out.push(o));
    }

    fn connect(&mut self, conn: ConnKey, role: Role) -> u64 {
        let ts = self.tick();
        self.ev(KernelEvent::Connection {
            ts,
            conn,
            tid: 7,
            fd: 5,
            role,
            tuple: tuple(),
        });
        ts
    }

    fn data(&mut self, conn: ConnKey, direction: Direction, role: Role, bytes: &[u8]) -> u64 {
        let n = bytes.len().min(self.cap);
        self.raw(conn, direction, role, bytes.len() as u64, &bytes[..n])
    }

    fn raw(
        &mut self,
        conn: ConnKey,
        direction: Direction,
        role: Role,
        bytes: u64,
        payload: &[u8],
    ) -> u64 {
        let ts = self.tick();
        self.ev(KernelEvent::Data(DataEvent {
            ts,
            conn,
            tid: if direction == Direction::Recv { 11 } else { 12 },
            fd: 5,
            cgroup_id: 1,
            direction,
            role,
            tuple: tuple(),
            bytes,
            payload: payload.to_vec(),
            comm: "server".into(),
        }));
        ts
    }

    fn recv(&mut self, b: &[u8]) -> u64 {
        self.data(CONN, Direction::Recv, Role::Server, b)
    }

    fn send(&mut self, b: &[u8]) -> u64 {
        self.data(CONN, Direction::Send, Role::Server, b)
    }

    /// `n` bytes moved, none of them copied (sendfile, or a failed copy).
    fn send_unseen(&mut self, n: u64) -> u64 {
        self.raw(CONN, Direction::Send, Role::Server, n, &[])
    }

    fn close(&mut self, conn: ConnKey) -> u64 {
        let ts = self.tick();
        self.ev(KernelEvent::Close { ts, conn, fd: 5 });
        ts
    }

    fn starts(&self) -> Vec<RequestStart> {
        self.out
            .iter()
            .filter_map(|o| match o {
                HttpOutput::Start(s) => Some(s.clone()),
                _ => None,
            })
            .collect()
    }

    fn dones(&self) -> Vec<HttpExchange> {
        self.out
            .iter()
            .filter_map(|o| match o {
                HttpOutput::Done(x) => Some((**x).clone()),
                _ => None,
            })
            .collect()
    }

    fn abandoned(&self) -> Vec<u64> {
        self.out
            .iter()
            .filter_map(|o| match o {
                HttpOutput::Abandoned { seq, .. } => Some(*seq),
                _ => None,
            })
            .collect()
    }

    fn summary(&self) -> Vec<(String, String, u16, u64, u64, Outcome)> {
        self.dones()
            .into_iter()
            .map(|x| {
                (
                    x.method.into(),
                    x.target.into(),
                    x.status,
                    x.request_body_size,
                    x.response_body_size,
                    x.outcome,
                )
            })
            .collect()
    }
}

fn row(
    m: &str,
    t: &str,
    status: u16,
    req: u64,
    resp: u64,
    o: Outcome,
) -> (String, String, u16, u64, u64, Outcome) {
    (m.into(), t.into(), status, req, resp, o)
}

const OK5: &[u8] = b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello";

#[test]
fn head_sizes_count_start_line_headers_and_blank_line() {
    let mut s = Sim::new();
    s.connect(CONN, Role::Server);
    // curl's request through the seed's proxies: 78 bytes, as OBI prints it.
    let curl =
        b"GET / HTTP/1.1\r\nHost: localhost:9000\r\nUser-Agent: curl/7.88.1\r\nAccept: */*\r\n\r\n";
    assert_eq!(curl.len(), 78);
    s.recv(curl);
    s.send(OK5);
    // A head split over three syscalls, and a response head split from its body.
    let post = b"POST /a HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\n\r\n";
    s.recv(&post[..10]);
    s.recv(&post[10..30]);
    s.recv(&post[30..]);
    s.recv(b"abc");
    let head = b"HTTP/1.1 201 Created\r\nContent-Length: 2\r\n\r\n";
    s.send(head);
    s.send(b"ok");
    let d = s.dones();
    assert_eq!(d.len(), 2);
    let ok5_head = (OK5.len() - 5) as u64;
    assert_eq!((d[0].request_head_size, d[0].request_body_size), (78, 0));
    assert_eq!(
        (d[0].response_head_size, d[0].response_body_size),
        (ok5_head, 5)
    );
    assert_eq!(
        (d[1].request_head_size, d[1].request_body_size),
        (post.len() as u64, 3)
    );
    assert_eq!(
        (d[1].response_head_size, d[1].response_body_size),
        (head.len() as u64, 2)
    );
}

#[test]
fn keep_alive_server_exchanges_with_all_fields() {
    let mut s = Sim::new();
    let conn_ts = s.connect(CONN, Role::Server);
    let r1 = s.recv(
        b"GET /users/1?x=y HTTP/1.1\r\nHost: api.local:8080\r\nUser-Agent: curl/8.5\r\n\
traceparent: 00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01\r\n\r\n",
    );
    assert_eq!(
        s.starts().len(),
        1,
        "start reported as soon as the head is seen"
    );
    assert!(s.dones().is_empty());
    let s1 = s.send(OK5);
    let r2 = s.recv(b"POST /items HTTP/1.1\r\nHost: api.local\r\nContent-Length: 3\r\n\r\nabc");
    let s2a = s.send(b"HTTP/1.1 201 Created\r\nContent-Length: 10\r\n\r\n");
    let s2b = s.send(b"0123456789");

    let starts = s.starts();
    assert_eq!(starts.len(), 2);
    assert_eq!((starts[0].seq, starts[0].ts, starts[0].tid), (0, r1, 11));
    assert_eq!(starts[0].role, Role::Server);
    assert_eq!((starts[1].seq, starts[1].ts), (1, r2));

    let d = s.dones();
    assert_eq!(d.len(), 2);
    let x = &d[0];
    assert_eq!(
        (x.method.as_str(), x.target.as_str(), x.version.as_str()),
        ("GET", "/users/1?x=y", "HTTP/1.1")
    );
    assert_eq!(x.host.as_deref(), Some("api.local:8080"));
    assert_eq!(x.user_agent.as_deref(), Some("curl/8.5"));
    assert_eq!(
        x.traceparent.as_deref(),
        Some("00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01")
    );
    assert_eq!(
        (x.status, x.request_body_size, x.response_body_size),
        (200, 0, 5)
    );
    assert_eq!(
        (
            x.conn_start_ts,
            x.request_start_ts,
            x.response_start_ts,
            x.end_ts
        ),
        (Some(conn_ts), r1, s1, s1)
    );
    assert_eq!(
        (x.outcome, x.role, x.tid, x.seq),
        (Outcome::Complete, Role::Server, 11, 0)
    );
    assert_eq!(x.comm, "server");
    assert_eq!(x.conn, CONN);
    let y = &d[1];
    assert_eq!(
        (
            y.method.as_str(),
            y.status,
            y.request_body_size,
            y.response_body_size
        ),
        ("POST", 201, 3, 10)
    );
    assert_eq!(
        (
            y.conn_start_ts,
            y.request_start_ts,
            y.response_start_ts,
            y.end_ts
        ),
        (None, r2, s2a, s2b)
    );
    assert_eq!(y.seq, 1);

    // Start comes before Done for each request.
    let order: Vec<String> = s
        .out
        .iter()
        .map(|o| match o {
            HttpOutput::Start(x) => format!("S{}", x.seq),
            HttpOutput::Done(x) => format!("D{}", x.seq),
            HttpOutput::Abandoned { seq, .. } => format!("A{seq}"),
        })
        .collect();
    assert_eq!(order, ["S0", "D0", "S1", "D1"]);
    s.close(CONN);
    assert_eq!(s.dones().len(), 2, "nothing pending at the close");
    assert_eq!(s.t.connections(), 0);
    assert_eq!(s.t.stats().exchanges, 2);
}

#[test]
fn client_side_requests_on_send() {
    let mut s = Sim::new();
    s.connect(CONN, Role::Client);
    let w = s.data(
        CONN,
        Direction::Send,
        Role::Client,
        b"GET /backend HTTP/1.1\r\nHost: b:8080\r\n\r\n",
    );
    let r = s.data(
        CONN,
        Direction::Recv,
        Role::Client,
        b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n",
    );
    let d = s.dones();
    assert_eq!(d.len(), 1);
    assert_eq!((d[0].role, d[0].status, d[0].tid), (Role::Client, 404, 12));
    assert_eq!((d[0].request_start_ts, d[0].end_ts), (w, r));
}

#[test]
fn unknown_role_decided_by_the_request_direction() {
    // Server-like: the request is received.
    let mut s = Sim::new();
    s.connect(CONN, Role::Unknown);
    s.data(
        CONN,
        Direction::Recv,
        Role::Unknown,
        b"GET /in HTTP/1.1\r\n\r\n",
    );
    s.data(CONN, Direction::Send, Role::Unknown, OK5);
    let d = s.dones();
    assert_eq!(
        (d.len(), d[0].role, d[0].target.as_str()),
        (1, Role::Server, "/in")
    );

    // Client-like: the request is sent.
    let mut s = Sim::new();
    s.connect(CONN, Role::Unknown);
    s.data(
        CONN,
        Direction::Send,
        Role::Unknown,
        b"GET /out HTTP/1.1\r\n\r\n",
    );
    s.data(CONN, Direction::Recv, Role::Unknown, OK5);
    let d = s.dones();
    assert_eq!(
        (d.len(), d[0].role, d[0].target.as_str()),
        (1, Role::Client, "/out")
    );
    assert_eq!(s.starts()[0].role, Role::Client);
}

#[test]
fn pipelined_requests_in_one_read() {
    let mut s = Sim::new();
    s.connect(CONN, Role::Server);
    let r = s.recv(b"GET /a HTTP/1.1\r\n\r\nGET /b HTTP/1.1\r\n\r\nPOST /c HTTP/1.1\r\nContent-Length: 2\r\n\r\nhiGET /d HTTP/1.1\r\n\r\n");
    assert_eq!(s.starts().len(), 4);
    assert!(s.starts().iter().all(|x| x.ts == r));
    // Responses: two in one write, the third split in the middle of its body, the fourth chunked.
    s.send(b"HTTP/1.1 200 OK\r\nContent-Length: 1\r\n\r\naHTTP/1.1 404 Not Found\r\nContent-Length: 2\r\n\r\nbb");
    s.send(b"HTTP/1.1 201 Created\r\nContent-Length: 4\r\n\r\ncc");
    s.send(b"ccHTTP/1.1 500 Oops\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n");
    assert_eq!(
        s.summary(),
        vec![
            row("GET", "/a", 200, 0, 1, Outcome::Complete),
            row("GET", "/b", 404, 0, 2, Outcome::Complete),
            row("POST", "/c", 201, 2, 4, Outcome::Complete),
            row("GET", "/d", 500, 0, 13, Outcome::Complete),
        ]
    );
}

#[test]
fn heads_split_across_single_byte_syscalls() {
    let req = b"GET /split/path HTTP/1.1\r\nHost: h\r\nUser-Agent: ua\r\n\r\n";
    let resp = b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\n\r\nabc";
    let mut s = Sim::new();
    s.connect(CONN, Role::Server);
    let first = s.recv(&req[..1]);
    for b in &req[1..req.len() - 1] {
        s.recv(std::slice::from_ref(b));
        assert!(s.starts().is_empty(), "head not over yet");
    }
    s.recv(&req[req.len() - 1..]);
    assert_eq!(s.starts().len(), 1);
    assert_eq!(s.starts()[0].ts, first, "start time is the first byte's");
    let resp_first = s.send(&resp[..1]);
    let mut last = 0;
    for b in &resp[1..] {
        last = s.send(std::slice::from_ref(b));
    }
    let d = s.dones();
    assert_eq!(d.len(), 1);
    assert_eq!(
        (
            d[0].target.as_str(),
            d[0].host.as_deref(),
            d[0].user_agent.as_deref()
        ),
        ("/split/path", Some("h"), Some("ua"))
    );
    assert_eq!((d[0].status, d[0].response_body_size), (200, 3));
    assert_eq!((d[0].response_start_ts, d[0].end_ts), (resp_first, last));
}

#[test]
fn every_split_point_of_a_keep_alive_stream() {
    let reqs: &[u8] = b"POST /p HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n5;x=y\r\nhello\r\n0\r\nT: 1\r\n\r\nGET /q HTTP/1.1\r\n\r\n";
    let resps: &[u8] = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nok\r\n0\r\n\r\nHTTP/1.1 304 Not Modified\r\nContent-Length: 99\r\n\r\n";
    for i in 0..=reqs.len() {
        for j in [0, 1, 17, 40, 50, 60, resps.len()] {
            let mut s = Sim::new();
            s.connect(CONN, Role::Server);
            let (a, b) = reqs.split_at(i);
            let (c, d) = resps.split_at(j.min(resps.len()));
            for part in [a, b] {
                if !part.is_empty() {
                    s.recv(part);
                }
            }
            for part in [c, d] {
                if !part.is_empty() {
                    s.send(part);
                }
            }
            assert_eq!(
                s.summary(),
                vec![
                    row("POST", "/p", 200, 25, 12, Outcome::Complete),
                    row("GET", "/q", 304, 0, 0, Outcome::Complete),
                ],
                "split at {i}/{j}"
            );
        }
    }
}

#[test]
fn content_length_body_across_many_reads() {
    let mut s = Sim::new();
    s.connect(CONN, Role::Server);
    s.recv(b"PUT /blob HTTP/1.1\r\nContent-Length: 10000\r\n\r\n");
    for _ in 0..10 {
        s.recv(&[b'x'; 1000]);
    }
    // A request that follows the body is still seen.
    s.send(OK5);
    s.recv(b"GET /after HTTP/1.1\r\n\r\n");
    s.send(OK5);
    assert_eq!(
        s.summary(),
        vec![
            row("PUT", "/blob", 200, 10000, 5, Outcome::Complete),
            row("GET", "/after", 200, 0, 5, Outcome::Complete),
        ]
    );
}

#[test]
fn bodies_past_the_captured_prefix_are_counted_by_length() {
    let mut s = Sim::new();
    s.cap = 64;
    s.connect(CONN, Role::Server);
    s.recv(b"GET /file HTTP/1.1\r\n\r\n");
    // The head fits the prefix, the body does not; then sendfile moves the rest unseen.
    let mut resp = b"HTTP/1.1 200 OK\r\nContent-Length: 5000\r\n\r\n".to_vec();
    resp.extend(std::iter::repeat_n(b'z', 1000));
    s.send(&resp);
    s.send_unseen(3000);
    let end = s.send_unseen(1000);
    let d = s.dones();
    assert_eq!(d.len(), 1);
    assert_eq!((d[0].response_body_size, d[0].end_ts), (5000, end));
    // Pairing stayed exact: the next exchange is reported too.
    s.recv(b"GET /next HTTP/1.1\r\n\r\n");
    s.send(OK5);
    assert_eq!(s.dones().len(), 2);
    assert_eq!(s.t.stats().desyncs, 0);
}

#[test]
fn chunked_response_with_trailers_and_extensions() {
    let mut s = Sim::new();
    s.connect(CONN, Role::Server);
    s.recv(b"GET /stream HTTP/1.1\r\n\r\n");
    s.send(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nTrailer: X-Sum\r\n\r\n");
    s.send(b"4;name=v\r\nWiki\r\n");
    s.send(b"5\r\npedia\r\n");
    assert!(s.dones().is_empty());
    s.send(b"0\r\nX-Sum: 9\r\n");
    assert!(s.dones().is_empty(), "trailers not over");
    let end = s.send(b"\r\n");
    let d = s.dones();
    assert_eq!(d.len(), 1);
    assert_eq!((d[0].response_body_size, d[0].end_ts), (41, end));
}

#[test]
fn chunked_framing_lost_past_the_prefix_falls_back_to_counting() {
    let mut s = Sim::new();
    s.cap = 80;
    s.connect(CONN, Role::Server);
    s.recv(b"GET /big HTTP/1.1\r\n\r\n");
    // One write: head, a 300-byte chunk and the last chunk; only 80 bytes are copied.
    let mut resp = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n12c\r\n".to_vec();
    resp.extend(std::iter::repeat_n(b'd', 300));
    resp.extend(b"\r\n0\r\n\r\n");
    let total = resp.len() as u64;
    let last = s.send(&resp);
    assert!(
        s.dones().is_empty(),
        "end unknown: wait for the next message or the close"
    );
    let head_len = 47;
    s.recv(b"GET /next HTTP/1.1\r\n\r\n");
    let d = s.dones();
    assert_eq!(d.len(), 1);
    assert_eq!(
        (d[0].status, d[0].response_body_size, d[0].end_ts),
        (200, total - head_len, last)
    );
    // The next exchange pairs normally.
    s.send(OK5);
    assert_eq!(
        s.summary()[1],
        row("GET", "/next", 200, 0, 5, Outcome::Complete)
    );
}

#[test]
fn http10_response_ends_at_the_close() {
    let mut s = Sim::new();
    s.connect(CONN, Role::Server);
    s.recv(b"GET /old HTTP/1.0\r\n\r\n");
    s.send(b"HTTP/1.0 200 OK\r\nContent-Type: text/plain\r\n\r\nsome");
    let last = s.send(b" more bytes");
    assert!(s.dones().is_empty());
    s.close(CONN);
    let d = s.dones();
    assert_eq!(d.len(), 1);
    assert_eq!(
        (d[0].version.as_str(), d[0].status, d[0].response_body_size),
        ("HTTP/1.0", 200, 15)
    );
    assert_eq!((d[0].outcome, d[0].end_ts), (Outcome::Complete, last));
}

#[test]
fn head_response_has_no_body() {
    let mut s = Sim::new();
    s.connect(CONN, Role::Server);
    s.recv(b"HEAD /h HTTP/1.1\r\n\r\nGET /g HTTP/1.1\r\n\r\n");
    s.send(b"HTTP/1.1 200 OK\r\nContent-Length: 1234\r\n\r\n");
    s.send(OK5);
    assert_eq!(
        s.summary(),
        vec![
            row("HEAD", "/h", 200, 0, 0, Outcome::Complete),
            row("GET", "/g", 200, 0, 5, Outcome::Complete),
        ]
    );
}

#[test]
fn expect_100_continue() {
    let mut s = Sim::new();
    s.connect(CONN, Role::Server);
    let r = s.recv(b"POST /upload HTTP/1.1\r\nExpect: 100-continue\r\nContent-Length: 6\r\n\r\n");
    s.send(b"HTTP/1.1 100 Continue\r\n\r\n");
    assert!(
        s.dones().is_empty(),
        "an interim response does not end the exchange"
    );
    s.recv(b"abcdef");
    let final_start = s.send(b"HTTP/1.1 201 Created\r\nContent-Length: 2\r\n\r\nok");
    let d = s.dones();
    assert_eq!(d.len(), 1);
    assert_eq!(
        (d[0].status, d[0].request_body_size, d[0].response_body_size),
        (201, 6, 2)
    );
    assert_eq!(
        (d[0].request_start_ts, d[0].response_start_ts),
        (r, final_start)
    );
    // 100 and the final response in one write, and a 103 before a 200.
    s.recv(b"POST /u2 HTTP/1.1\r\nExpect: 100-continue\r\nContent-Length: 1\r\n\r\nz");
    s.send(b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 103 Early Hints\r\nLink: </s.css>\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n");
    assert_eq!(
        s.summary()[1],
        row("POST", "/u2", 200, 1, 0, Outcome::Complete)
    );
}

#[test]
fn no_body_statuses() {
    let mut s = Sim::new();
    s.connect(CONN, Role::Server);
    s.recv(b"DELETE /x HTTP/1.1\r\n\r\nGET /y HTTP/1.1\r\n\r\nGET /z HTTP/1.1\r\n\r\n");
    s.send(b"HTTP/1.1 204 No Content\r\n\r\n");
    s.send(b"HTTP/1.1 304 Not Modified\r\nContent-Length: 50\r\n\r\n");
    s.send(OK5);
    assert_eq!(
        s.summary(),
        vec![
            row("DELETE", "/x", 204, 0, 0, Outcome::Complete),
            row("GET", "/y", 304, 0, 0, Outcome::Complete),
            row("GET", "/z", 200, 0, 5, Outcome::Complete),
        ]
    );
}

#[test]
fn closed_before_the_response_is_reported_with_status_0() {
    let mut s = Sim::new();
    s.connect(CONN, Role::Server);
    let r = s.recv(b"GET /slow HTTP/1.1\r\nHost: h\r\n\r\n");
    let c = s.close(CONN);
    let d = s.dones();
    assert_eq!(d.len(), 1);
    assert_eq!(
        (d[0].status, d[0].outcome),
        (0, Outcome::ClosedBeforeResponse)
    );
    assert_eq!(
        (d[0].request_start_ts, d[0].response_start_ts, d[0].end_ts),
        (r, c, c)
    );
}

#[test]
fn closed_in_the_middle_of_the_request() {
    let mut s = Sim::new();
    s.connect(CONN, Role::Server);
    // Head not over.
    s.recv(b"GET /partial HTTP/1.1\r\nHost: h\r\nUser-Ag");
    assert!(s.starts().is_empty());
    s.close(CONN);
    assert_eq!(
        s.starts().len(),
        1,
        "the cut request is reported at the close"
    );
    assert_eq!(
        s.summary(),
        vec![row(
            "GET",
            "/partial",
            0,
            0,
            0,
            Outcome::ClosedBeforeResponse
        )]
    );
    assert_eq!(s.dones()[0].host.as_deref(), Some("h"));

    // Body not over.
    let mut s = Sim::new();
    s.connect(CONN, Role::Server);
    s.recv(b"POST /p HTTP/1.1\r\nContent-Length: 100\r\n\r\n0123456789");
    s.close(CONN);
    assert_eq!(
        s.summary(),
        vec![row("POST", "/p", 0, 10, 0, Outcome::ClosedBeforeResponse)]
    );
}

#[test]
fn closed_in_the_middle_of_the_response() {
    let mut s = Sim::new();
    s.connect(CONN, Role::Server);
    s.recv(b"GET /a HTTP/1.1\r\n\r\nGET /b HTTP/1.1\r\n\r\n");
    let rs = s.send(b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n0123456789");
    let c = s.close(CONN);
    let d = s.dones();
    assert_eq!(
        s.summary(),
        vec![
            row("GET", "/a", 200, 0, 10, Outcome::ClosedDuringResponse),
            row("GET", "/b", 0, 0, 0, Outcome::ClosedBeforeResponse),
        ]
    );
    assert_eq!((d[0].response_start_ts, d[0].end_ts), (rs, c));

    // Cut inside the response head: the status is kept if it was seen.
    let mut s = Sim::new();
    s.connect(CONN, Role::Server);
    s.recv(b"GET /a HTTP/1.1\r\n\r\n");
    s.send(b"HTTP/1.1 502 Bad Gateway\r\nServ");
    s.close(CONN);
    assert_eq!(
        s.summary(),
        vec![row("GET", "/a", 502, 0, 0, Outcome::ClosedDuringResponse)]
    );
}

#[test]
fn non_http_connections_are_ignored_quietly() {
    let inputs: &[&[u8]] = &[
        b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03", // TLS ClientHello
        b"*1\r\n$4\r\nPING\r\n",                         // Redis RESP
        b"GET mykey\r\n",                                // Redis inline, looks like a method
        b"\x00\x00\x00\x10\x00\x00\x00\x00\x01\x02",     // binary
        b"SSH-2.0-OpenSSH_9.6\r\n",
    ];
    for input in inputs {
        let mut s = Sim::new();
        s.connect(CONN, Role::Server);
        s.recv(input);
        // Whatever comes later, even HTTP-looking bytes, is not parsed.
        s.send(OK5);
        s.recv(b"GET / HTTP/1.1\r\n\r\n");
        s.send(OK5);
        s.close(CONN);
        assert!(s.out.is_empty(), "{input:?}: {:?}", s.out);
        let st = s.t.stats();
        assert_eq!(st.non_http_connections, 1, "{input:?}");
        assert_eq!(st.parse_errors, 0, "no noise: {input:?}");
    }
    // A server-speaks-first protocol on a server socket.
    let mut s = Sim::new();
    s.connect(CONN, Role::Server);
    s.send(b"220 mail.example.com ESMTP\r\n");
    s.recv(b"EHLO x\r\n");
    assert!(s.out.is_empty());
    assert_eq!(s.t.stats().non_http_connections, 1);
}

#[test]
fn truncated_request_head_is_reported_with_what_was_seen() {
    let mut s = Sim::new();
    s.cap = 34;
    s.connect(CONN, Role::Server);
    let mut req = b"POST /api/v1/things?query=abc HTTP/1.1\r\nHost: h\r\nCookie: ".to_vec();
    req.extend(std::iter::repeat_n(b'c', 500));
    req.extend(b"\r\nContent-Length: 4\r\n\r\nbody");
    s.recv(&req);
    assert_eq!(s.starts().len(), 1, "reported without waiting for the rest");
    s.cap = 1024;
    s.send(OK5);
    let d = s.dones();
    assert_eq!(d.len(), 1);
    assert_eq!(
        (
            d[0].method.as_str(),
            d[0].target.as_str(),
            d[0].version.as_str()
        ),
        ("POST", "/api/v1/things?query=abc", "")
    );
    assert_eq!(d[0].host, None, "the Host line was cut");
    assert_eq!(d[0].status, 200);
    // The length past the prefix is counted as body: an over-estimate by the unseen headers.
    assert_eq!(d[0].request_body_size, req.len() as u64 - 34);
    // The next request is paired again.
    s.recv(b"GET /next HTTP/1.1\r\n\r\n");
    s.send(OK5);
    assert_eq!(
        s.summary()[1],
        row("GET", "/next", 200, 0, 5, Outcome::Complete)
    );
    assert_eq!(s.t.stats().truncated_heads, 1);
}

#[test]
fn truncated_response_head_ends_at_the_next_request() {
    let mut s = Sim::new();
    s.cap = 30;
    s.connect(CONN, Role::Server);
    s.recv(b"GET /a HTTP/1.1\r\n\r\n");
    let mut resp =
        b"HTTP/1.1 503 Service Unavailable\r\nServer: x\r\nContent-Length: 3\r\n\r\n".to_vec();
    let head = resp.len() as u64;
    resp.extend(b"abc");
    let last = s.send(&resp);
    assert!(s.dones().is_empty());
    s.recv(b"GET /b HTTP/1.1\r\n\r\n");
    let d = s.dones();
    assert_eq!(d.len(), 1);
    assert_eq!((d[0].status, d[0].end_ts), (503, last));
    assert_eq!(d[0].response_body_size, head + 3 - 30);
    // A syscall starting with the next response also ends one of unknown length.
    s.send(&resp);
    s.send(OK5);
    assert_eq!(s.summary()[1].2, 503);
    s.recv(b"GET /c HTTP/1.1\r\n\r\n");
    s.send(OK5);
    // OK5 is cut too (43 bytes): its end is the close.
    s.close(CONN);
    assert_eq!(
        s.summary()[2],
        row("GET", "/c", 200, 0, 13, Outcome::Complete)
    );
}

#[test]
fn unknown_length_response_settles_after_silence() {
    let mut s = Sim::with(HttpConfig {
        unknown_length_settle_ns: 1_000_000,
        ..HttpConfig::default()
    });
    s.cap = 20;
    s.connect(CONN, Role::Server);
    s.recv(b"GET /a HTTP/1.1\r\n\r\n");
    let last = s.send(b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n");
    let mut out = Vec::new();
    s.t.expire(last + 500_000, &mut |o| out.push(o));
    assert!(out.is_empty(), "not quiet long enough");
    s.t.expire(last + 2_000_000, &mut |o| out.push(o));
    assert_eq!(out.len(), 1);
    let HttpOutput::Done(x) = &out[0] else {
        panic!("{out:?}")
    };
    assert_eq!(
        (x.status, x.end_ts, x.outcome),
        (200, last, Outcome::Complete)
    );
}

#[test]
fn pipelined_requests_past_the_prefix_are_not_mispaired() {
    let mut s = Sim::new();
    s.cap = 40;
    s.connect(CONN, Role::Server);
    // Four pipelined requests in one read; only the first is inside the prefix.
    let batch = b"GET /1 HTTP/1.1\r\n\r\nGET /2 HTTP/1.1\r\n\r\nGET /3 HTTP/1.1\r\n\r\nGET /4 HTTP/1.1\r\n\r\n";
    s.recv(batch);
    assert_eq!(s.starts().len(), 2, "/1 and /2 are inside the 40 bytes");
    s.recv(b"GET /5 HTTP/1.1\r\n\r\n");
    for status in [201u16, 202, 203, 204, 205] {
        s.send(format!("HTTP/1.1 {status} X\r\nContent-Length: 0\r\n\r\n").as_bytes());
    }
    // /5 came after unseen requests: its response cannot be told apart, so it is not reported.
    assert_eq!(
        s.summary(),
        vec![
            row("GET", "/1", 201, 0, 0, Outcome::Complete),
            row("GET", "/2", 202, 0, 0, Outcome::Complete)
        ]
    );
    // Once everything asked was answered, pairing resumes.
    s.recv(b"GET /6 HTTP/1.1\r\n\r\n");
    s.send(OK5);
    assert_eq!(
        s.summary()[2],
        row("GET", "/6", 200, 0, 5, Outcome::Complete)
    );
    let st = s.t.stats();
    assert_eq!(st.desyncs, 1);
    // /3 (its start line cut to "GE", paired but unreportable) and /5.
    assert_eq!(st.requests_dropped, 2);
    // The responses to /4 and /5.
    assert_eq!(st.orphan_responses, 2);
}

#[test]
fn pipelined_responses_past_the_prefix_are_not_mispaired() {
    let ok0: &[u8] = b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n";
    let mut both = ok0.to_vec();
    both.extend(b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n");

    // The second response is wholly past the prefix.
    let mut s = Sim::new();
    s.connect(CONN, Role::Server);
    s.recv(b"GET /1 HTTP/1.1\r\n\r\nGET /2 HTTP/1.1\r\n\r\nGET /3 HTTP/1.1\r\n\r\n");
    s.cap = ok0.len();
    s.send(&both);
    s.send(b"HTTP/1.1 500 Oops\r\nContent-Length: 0\r\n\r\n");
    assert_eq!(
        s.summary(),
        vec![row("GET", "/1", 200, 0, 0, Outcome::Complete)]
    );
    assert_eq!(s.abandoned(), vec![1, 2]);
    s.recv(b"GET /4 HTTP/1.1\r\n\r\n");
    s.send(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok");
    assert_eq!(
        s.summary()[1],
        row("GET", "/4", 200, 0, 2, Outcome::Complete)
    );

    // Its status line is visible but its head is cut: it keeps its pair, the rest do not.
    let mut s = Sim::new();
    s.connect(CONN, Role::Server);
    s.recv(b"GET /1 HTTP/1.1\r\n\r\nGET /2 HTTP/1.1\r\n\r\nGET /3 HTTP/1.1\r\n\r\n");
    s.cap = ok0.len() + 12;
    s.send(&both);
    s.send(b"HTTP/1.1 500 Oops\r\nContent-Length: 0\r\n\r\n");
    assert_eq!(
        s.summary(),
        vec![
            row("GET", "/1", 200, 0, 0, Outcome::Complete),
            row("GET", "/2", 404, 0, 33, Outcome::Complete)
        ]
    );
    assert_eq!(s.abandoned(), vec![2]);
}

#[test]
fn joined_mid_way_waits_for_a_message_start() {
    let mut s = Sim::new();
    // No connection event: the tracker starts in the middle of a response body.
    s.data(CONN, Direction::Send, Role::Server, b"...end of some body");
    s.data(
        CONN,
        Direction::Recv,
        Role::Server,
        b"GET /next HTTP/1.1\r\n\r\n",
    );
    s.data(CONN, Direction::Send, Role::Server, OK5);
    let d = s.dones();
    assert_eq!(d.len(), 1);
    assert_eq!((d[0].target.as_str(), d[0].conn_start_ts), ("/next", None));
    assert_eq!(s.t.stats().non_http_connections, 0);
}

#[test]
fn joined_mid_way_on_a_non_http_connection_gives_up() {
    let mut s = Sim::new();
    for _ in 0..100 {
        s.data(
            CONN,
            Direction::Recv,
            Role::Unknown,
            b"\x17\x03\x03\x00\x20encrypted",
        );
    }
    assert_eq!(s.t.stats().non_http_connections, 1);
    assert!(s.out.is_empty());
}

#[test]
fn upgrade_stops_parsing() {
    let mut s = Sim::new();
    s.connect(CONN, Role::Server);
    s.recv(b"GET /ws HTTP/1.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n");
    s.send(b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n\r\n\x81\x05hello");
    s.recv(b"\x81\x85\x00\x00\x00\x00hello");
    s.send(b"GET / HTTP/1.1\r\n\r\n");
    s.close(CONN);
    assert_eq!(
        s.summary(),
        vec![row("GET", "/ws", 101, 0, 0, Outcome::Complete)]
    );
    assert_eq!(s.t.stats().upgraded_connections, 1);
    assert_eq!(s.t.stats().parse_errors, 0);
}

#[test]
fn early_response_pairs_with_an_unfinished_request_head() {
    let mut s = Sim::new();
    s.connect(CONN, Role::Server);
    s.recv(b"GET /huge HTTP/1.1\r\nX-Big: aaaa");
    s.send(b"HTTP/1.1 431 Request Header Fields Too Large\r\nContent-Length: 0\r\nConnection: close\r\n\r\n");
    s.close(CONN);
    assert_eq!(
        s.summary(),
        vec![row("GET", "/huge", 431, 0, 0, Outcome::Complete)]
    );
}

#[test]
fn expire_abandons_pending_requests_and_frees_connections() {
    let mut s = Sim::with(HttpConfig {
        idle_timeout_ns: 10_000_000,
        ..HttpConfig::default()
    });
    s.connect(CONN, Role::Server);
    let last = s.recv(b"GET /never HTTP/1.1\r\n\r\n");
    let other = ConnKey {
        pid: 42,
        sock_id: 1,
    };
    s.connect(other, Role::Server);
    let mut out = Vec::new();
    s.t.expire(last + 5_000_000, &mut |o| out.push(o));
    assert!(out.is_empty());
    assert_eq!(s.t.connections(), 2);
    s.t.expire(last + 20_000_000, &mut |o| out.push(o));
    assert_eq!(s.t.connections(), 0);
    assert!(
        matches!(
            out.as_slice(),
            [HttpOutput::Abandoned { conn: CONN, seq: 0 }]
        ),
        "{out:?}"
    );
    assert_eq!(s.t.stats().expired_connections, 2);
}

#[test]
fn connection_cap_evicts_the_least_recently_active() {
    let mut s = Sim::with(HttpConfig {
        max_connections: 8,
        ..HttpConfig::default()
    });
    for i in 0..100u64 {
        let k = ConnKey { pid: 1, sock_id: i };
        s.connect(k, Role::Server);
        s.data(k, Direction::Recv, Role::Server, b"GET / HTTP/1.1\r\n\r\n");
        assert!(s.t.connections() <= 8);
    }
    let st = s.t.stats();
    assert_eq!(st.evicted_connections, 92);
    assert_eq!(s.abandoned().len(), 92);
    // The most recent connection survived and still pairs.
    let k = ConnKey {
        pid: 1,
        sock_id: 99,
    };
    s.data(k, Direction::Send, Role::Server, OK5);
    assert_eq!(s.dones().len(), 1);
}

#[test]
fn process_exit_closes_its_connections() {
    let mut s = Sim::new();
    s.connect(CONN, Role::Server);
    s.recv(b"GET /x HTTP/1.1\r\n\r\n");
    let other = ConnKey { pid: 7, sock_id: 9 };
    s.connect(other, Role::Server);
    s.ev(KernelEvent::ProcessExit { pid: 42 });
    assert_eq!(
        s.summary(),
        vec![row("GET", "/x", 0, 0, 0, Outcome::ClosedBeforeResponse)]
    );
    assert_eq!(s.t.connections(), 1);
}

#[test]
fn reused_socket_ends_the_previous_connection() {
    let mut s = Sim::new();
    s.connect(CONN, Role::Server);
    s.recv(b"GET /old HTTP/1.1\r\n\r\n");
    // Close lost; the same socket address comes back as a new connection.
    let t2 = s.connect(CONN, Role::Server);
    s.recv(b"GET /new HTTP/1.1\r\n\r\n");
    s.send(OK5);
    let d = s.dones();
    assert_eq!(d.len(), 2);
    assert_eq!(
        (d[0].target.as_str(), d[0].outcome),
        ("/old", Outcome::ClosedBeforeResponse)
    );
    assert_eq!(
        (d[1].target.as_str(), d[1].seq, d[1].conn_start_ts),
        ("/new", 0, Some(t2))
    );
}

#[test]
fn garbage_between_messages_is_a_parse_error_then_recovers() {
    let mut s = Sim::new();
    s.connect(CONN, Role::Server);
    s.recv(b"GET /a HTTP/1.1\r\n\r\n");
    s.send(OK5);
    // An unknown method: the server answers it, and that answer pairs with nothing.
    s.recv(b"BREW /pot HTTP/1.1\r\n\r\n");
    s.send(b"HTTP/1.1 501 Not Implemented\r\nContent-Length: 0\r\n\r\n");
    s.recv(b"GET /b HTTP/1.1\r\n\r\n");
    s.send(OK5);
    let targets: Vec<String> = s.dones().into_iter().map(|x| x.target.into()).collect();
    assert_eq!(targets, ["/a", "/b"]);
    let st = s.t.stats();
    assert_eq!(
        (
            st.parse_errors,
            st.orphan_responses,
            st.non_http_connections
        ),
        (1, 1, 0)
    );

    // Unanswered junk: the next request might be answered late, so it is not reported; the
    // one after is.
    s.recv(b"\x00\x01junk");
    s.recv(b"GET /c HTTP/1.1\r\n\r\n");
    s.send(OK5);
    s.recv(b"GET /d HTTP/1.1\r\n\r\n");
    s.send(OK5);
    let targets: Vec<String> = s.dones().into_iter().map(|x| x.target.into()).collect();
    assert_eq!(targets, ["/a", "/b", "/d"]);
}

#[test]
fn stray_line_ends_after_a_body_are_skipped() {
    let mut s = Sim::new();
    s.connect(CONN, Role::Server);
    s.recv(b"POST /a HTTP/1.1\r\nContent-Length: 2\r\n\r\nhi\r\n");
    s.send(OK5);
    s.recv(b"\r\nGET /b HTTP/1.1\r\n\r\n");
    s.send(OK5);
    assert_eq!(s.summary().len(), 2);
    assert_eq!(s.t.stats().parse_errors, 0);
}

#[test]
fn pipelining_deeper_than_tracked_is_dropped_not_mispaired() {
    let mut s = Sim::with(HttpConfig {
        max_pipelined: 2,
        ..HttpConfig::default()
    });
    s.connect(CONN, Role::Server);
    s.recv(b"GET /1 HTTP/1.1\r\n\r\nGET /2 HTTP/1.1\r\n\r\nGET /3 HTTP/1.1\r\n\r\n");
    for _ in 0..3 {
        s.send(OK5);
    }
    let targets: Vec<String> = s.dones().into_iter().map(|x| x.target.into()).collect();
    assert_eq!(targets, ["/1", "/2"]);
    s.recv(b"GET /4 HTTP/1.1\r\n\r\n");
    s.send(OK5);
    assert_eq!(s.dones().len(), 3);
}

#[test]
fn head_longer_than_the_limit_is_cut() {
    let mut s = Sim::with(HttpConfig {
        max_head_bytes: 256,
        ..HttpConfig::default()
    });
    let long = "v".repeat(200);
    s.connect(CONN, Role::Server);
    s.recv(format!("GET /a HTTP/1.1\r\nX-1: {long}\r\n").as_bytes());
    s.recv(format!("X-2: {long}\r\n\r\n").as_bytes());
    assert_eq!(s.starts().len(), 1);
    s.send(OK5);
    assert_eq!(s.summary()[0].2, 200);
    // A response head without body, too long, in one syscall: the rest of it is not an error.
    s.recv(b"GET /b HTTP/1.1\r\n\r\n");
    s.send(format!("HTTP/1.1 204 No Content\r\nX-1: {long}\r\nX-2: {long}\r\n\r\n").as_bytes());
    s.recv(b"GET /c HTTP/1.1\r\n\r\n");
    s.send(OK5);
    let statuses: Vec<u16> = s.dones().iter().map(|x| x.status).collect();
    assert_eq!(statuses, [200, 204, 200]);
    let st = s.t.stats();
    assert_eq!((st.truncated_heads, st.parse_errors), (2, 0));
}
