//! CPU cost of the eBPF receiver's userspace hot path per HTTP request, without the kernel:
//! synthetic ring-buffer records shaped like nginx serving `wrk` (16 keep-alive connections,
//! one read and one writev per request) go through the same [`HotPath`] the receiver's drain
//! thread runs, in passes of 1,000 records, spans encoded to OTLP as for a traces pipeline.
//!
//! `cargo run --release -p receiver-ebpf --example hot_path [requests] [runs]` prints the
//! median ns per request over the runs. Used to iterate on the hot path; the end-to-end cost
//! is measured by `bench ebpf`.

use std::net::Ipv4Addr;
use std::time::Instant;

use receiver_ebpf::event::{abi, EventView, RawHeader, RawTuple};
use receiver_ebpf::hot::HotPath;
use receiver_ebpf::printer::{PrintMode, Printer};
use receiver_ebpf::spans::{HostInfo, ProcessInfo, Tracer, TracerConfig};

const CONNS: u64 = 16;
const PASS: u64 = 1000;
/// Linking lags the newest event by this much, as in the receiver (margin + half a drain).
const LAG_NS: u64 = 12_500_000;

const REQUEST: &[u8] = b"GET / HTTP/1.1\r\nHost: 127.0.0.1:18080\r\n\r\n";
const RESPONSE: &[u8] =
    b"HTTP/1.1 200 OK\r\nServer: nginx/1.22.1\r\nDate: Sat, 05 Dec 2026 21:00:00 GMT\r\n\
Content-Type: text/plain\r\nContent-Length: 6\r\nConnection: keep-alive\r\n\r\nhello!";

fn header(kind: u8, conn: u64, ts: u64) -> RawHeader {
    let mapped = |ip: Ipv4Addr| {
        let mut a = [0u8; 16];
        a[10] = 0xff;
        a[11] = 0xff;
        a[12..].copy_from_slice(&ip.octets());
        a
    };
    let mut comm = [0u8; 16];
    comm[..5].copy_from_slice(b"nginx");
    RawHeader {
        ts_boot_ns: ts,
        cgroup_id: 1,
        sock_id: 0xffff_8880_0000_0000 + conn * 0x1000,
        ret: 0,
        pid: 100,
        tid: 100,
        fd: 10 + conn as i32,
        payload_len: 0,
        kind,
        direction: abi::SONDE_DIR_NONE,
        role: abi::SONDE_ROLE_SERVER,
        syscall: abi::SONDE_SYS_NONE,
        _pad: 0,
        tuple: RawTuple {
            saddr: mapped(Ipv4Addr::LOCALHOST),
            daddr: mapped(Ipv4Addr::LOCALHOST),
            sport: 18080,
            dport: 40000 + conn as u16,
            _pad: 0,
        },
        comm,
    }
}

fn data(conn: u64, ts: u64, dir: u8, sys: u8, payload: &[u8]) -> RawHeader {
    let mut h = header(abi::SONDE_EV_DATA, conn, ts);
    h.direction = dir;
    h.syscall = sys;
    h.ret = payload.len() as i64;
    h.payload_len = payload.len() as u32;
    h
}

/// One run: returns (ns per request, spans emitted).
fn run(requests: u64) -> (f64, usize) {
    let mut tracer = Tracer::new(TracerConfig {
        host: HostInfo {
            id: "0123456789abcdef0123456789abcdef".into(),
            name: "bench".into(),
        },
        ..TracerConfig::default()
    });
    tracer.set_clock_offset(1_700_000_000_000_000_000);
    tracer.upsert_process(ProcessInfo {
        pid: 100,
        exe_path: "/usr/sbin/nginx".into(),
        exe_name: "nginx".into(),
        cmdline: "nginx: worker process".into(),
        ..ProcessInfo::default()
    });
    let mut hot = HotPath::new(tracer, Printer::new(PrintMode::Disabled));
    let mut ts = 1_000_000_000_000u64;
    for c in 0..CONNS {
        let h = header(abi::SONDE_EV_ACCEPT, c, ts);
        let _ = hot.record(&EventView {
            header: h,
            payload: &[],
        });
    }
    let mut spans = 0;
    let mut in_pass = 0;
    let start = Instant::now();
    for i in 0..requests {
        let c = i % CONNS;
        ts += 4_000;
        let h = data(c, ts, abi::SONDE_DIR_RECV, abi::SONDE_SYS_RECVFROM, REQUEST);
        hot.record(&EventView {
            header: h,
            payload: REQUEST,
        })
        .expect("request record");
        ts += 4_000;
        let h = data(c, ts, abi::SONDE_DIR_SEND, abi::SONDE_SYS_WRITEV, RESPONSE);
        hot.record(&EventView {
            header: h,
            payload: RESPONSE,
        })
        .expect("response record");
        in_pass += 2;
        if in_pass >= PASS {
            in_pass = 0;
            let f = hot.flush(ts.saturating_sub(LAG_NS), true);
            spans += f.spans;
            drop(f.traces);
        }
    }
    let f = hot.flush(ts + LAG_NS * 10, true);
    spans += f.spans;
    let ns = start.elapsed().as_nanos() as f64 / requests as f64;
    (ns, spans)
}

fn main() {
    let mut args = std::env::args().skip(1);
    let requests: u64 = args.next().and_then(|a| a.parse().ok()).unwrap_or(500_000);
    let runs: usize = args.next().and_then(|a| a.parse().ok()).unwrap_or(5);
    let _ = run(requests / 10);
    let mut results = Vec::new();
    for r in 0..runs {
        let (ns, spans) = run(requests);
        println!(
            "run {}: {ns:.0} ns/request, {spans} spans for {requests} requests",
            r + 1
        );
        results.push(ns);
    }
    results.sort_by(f64::total_cmp);
    println!(
        "median: {:.0} ns/request over {runs} runs",
        results[results.len() / 2]
    );
}
