//! What Sonde's kernel programs cost a process they do NOT select, per syscall: a hooked one
//! (`write` to /dev/null) and one no program hooks (`getppid`), timed in a tight loop without
//! the probes, with them loaded (selecting nobody), and without them again. Best of 7 passes
//! each, so a noisy host inflates nothing but the spread. Needs root.
//!
//! `cargo run --release -p receiver-ebpf --example syscall_cost [calls per pass]`

use std::time::{Duration, Instant};

use receiver_ebpf::loader::{ProbeOptions, Probes};

fn best_ns(calls: u32, f: impl Fn()) -> f64 {
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

fn measure(calls: u32, fd: i32) -> (f64, f64) {
    let byte = [b'x'];
    let write = best_ns(calls, || {
        // SAFETY: writes one byte from a live buffer to an fd this program opened.
        unsafe { libc::write(fd, byte.as_ptr().cast(), 1) };
    });
    // SAFETY: getppid has no arguments and cannot fail.
    let getppid = best_ns(calls, || unsafe {
        libc::getppid();
    });
    (write, getppid)
}

fn main() {
    let calls: u32 = std::env::args()
        .nth(1)
        .and_then(|a| a.parse().ok())
        .unwrap_or(1_000_000);
    let null = std::fs::OpenOptions::new()
        .write(true)
        .open("/dev/null")
        .expect("open /dev/null");
    let fd = std::os::fd::AsRawFd::as_raw_fd(&null);
    let before = measure(calls, fd);
    let probes = Probes::load(ProbeOptions::default()).expect("load the probes (root?)");
    std::thread::sleep(Duration::from_millis(200));
    let with = measure(calls, fd);
    drop(probes);
    std::thread::sleep(Duration::from_millis(200));
    let after = measure(calls, fd);
    println!("| condition | write(2) to /dev/null ns | getppid(2) ns |");
    println!("|---|---|---|");
    for (name, (w, g)) in [
        ("no probes", before),
        ("probes loaded, process not selected", with),
        ("no probes again", after),
    ] {
        println!("| {name} | {w:.0} | {g:.0} |");
    }
    let base = |i: usize| {
        let pick = |m: (f64, f64)| if i == 0 { m.0 } else { m.1 };
        pick(before).min(pick(after))
    };
    println!(
        "added per call: write {:+.0} ns (a hooked syscall), getppid {:+.0} ns (not hooked)",
        with.0 - base(0),
        with.1 - base(1)
    );
}
