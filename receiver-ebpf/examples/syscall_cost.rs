//! What Sonde's kernel programs cost a process they do NOT select: a syscall that moves no
//! socket data (`write` to /dev/null, `getppid`) and a pair of socket calls (a one-byte `write`
//! then `read` on a TCP loopback connection, both ends in this process), timed in a tight loop
//! without the probes, with them loaded (selecting nobody), and without them again. Best of 7
//! passes each, so a noisy host inflates nothing but the spread. Needs root.
//!
//! `cargo run --release -p receiver-ebpf --example syscall_cost [calls per pass] [auto|socket|syscalls]`

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::os::fd::AsRawFd;
use std::time::{Duration, Instant};

use receiver_ebpf::loader::{KernelHooks, ProbeOptions, Probes};

fn best_ns(calls: u32, mut f: impl FnMut()) -> f64 {
    (0..7)
        .map(|_| {
            let t = Instant::now();
            for _ in 0..calls {
                f();
            }
            t.elapsed().as_nanos() as f64 / f64::from(calls)
        })
        .fold(f64::INFINITY, f64::min)
}

struct Fds {
    null: i32,
    client: TcpStream,
    server: TcpStream,
}

/// (write to /dev/null, getppid, TCP write+read pair), ns per call.
fn measure(calls: u32, fds: &mut Fds) -> (f64, f64, f64) {
    let byte = [b'x'];
    let null = fds.null;
    let write = best_ns(calls, || {
        // SAFETY: writes one byte from a live buffer to an fd this program opened.
        unsafe { libc::write(null, byte.as_ptr().cast(), 1) };
    });
    // SAFETY: getppid has no arguments and cannot fail.
    let getppid = best_ns(calls, || unsafe {
        libc::getppid();
    });
    let mut buf = [0u8; 1];
    let pairs = calls / 4;
    let tcp = best_ns(pairs.max(1), || {
        fds.client.write_all(&byte).expect("tcp write");
        fds.server.read_exact(&mut buf).expect("tcp read");
    });
    (write, getppid, tcp)
}

fn main() {
    let calls: u32 = std::env::args()
        .nth(1)
        .and_then(|a| a.parse().ok())
        .unwrap_or(1_000_000);
    let hooks: KernelHooks = std::env::args()
        .nth(2)
        .map(|h| h.parse().unwrap_or_else(|e: String| panic!("{e}")))
        .unwrap_or_default();
    let null = std::fs::OpenOptions::new()
        .write(true)
        .open("/dev/null")
        .expect("open /dev/null");
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind loopback");
    let client = TcpStream::connect(listener.local_addr().expect("addr")).expect("connect");
    let (server, _) = listener.accept().expect("accept");
    client.set_nodelay(true).expect("nodelay");
    let mut fds = Fds {
        null: null.as_raw_fd(),
        client,
        server,
    };
    let before = measure(calls, &mut fds);
    let probes = Probes::load(ProbeOptions {
        hooks,
        ..ProbeOptions::default()
    })
    .expect("load the probes (root?)");
    println!("kernel hooks: {}", probes.options().hooks.as_str());
    std::thread::sleep(Duration::from_millis(200));
    let with = measure(calls, &mut fds);
    drop(probes);
    std::thread::sleep(Duration::from_millis(200));
    let after = measure(calls, &mut fds);
    println!("| condition | write(2) to /dev/null ns | getppid(2) ns | TCP write+read pair ns |");
    println!("|---|---|---|---|");
    for (name, (w, g, t)) in [
        ("no probes", before),
        ("probes loaded, process not selected", with),
        ("no probes again", after),
    ] {
        println!("| {name} | {w:.0} | {g:.0} | {t:.0} |");
    }
    let base = |pick: fn((f64, f64, f64)) -> f64| pick(before).min(pick(after));
    println!(
        "added per call: write to /dev/null {:+.0} ns, getppid {:+.0} ns, TCP write+read {:+.0} ns \
         per pair",
        with.0 - base(|m| m.0),
        with.1 - base(|m| m.1),
        with.2 - base(|m| m.2)
    );
}
