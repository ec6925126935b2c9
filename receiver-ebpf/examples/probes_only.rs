//! The kernel side alone: loads the probes, selects the pids given on the command line and
//! drains the ring buffer counting records, for as many seconds as asked. Separates what the
//! kernel programs cost a traced server from what Sonde's userspace costs (needs root).
//!
//! `probes_only <seconds> <pid>...`

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use receiver_ebpf::event::{DecodeError, EventView};
use receiver_ebpf::loader::{ProbeOptions, Probes, RawEventHandler};

struct Count(Arc<AtomicU64>);

impl RawEventHandler for Count {
    fn record(&mut self, _record: &EventView<'_>) -> Result<(), DecodeError> {
        self.0.fetch_add(1, Ordering::Relaxed);
        Ok(())
    }
}

fn main() {
    let mut args = std::env::args().skip(1);
    let secs: u64 = args.next().and_then(|a| a.parse().ok()).unwrap_or(10);
    let mut probes = Probes::load(ProbeOptions::default()).expect("load the probes");
    for pid in args {
        let pid: u32 = pid.parse().expect("a pid");
        probes.select_pid(pid).expect("select");
    }
    let n = Arc::new(AtomicU64::new(0));
    let source = probes
        .spawn_raw_event_source(Duration::from_millis(5), Count(n.clone()))
        .expect("drain");
    std::thread::sleep(Duration::from_secs(secs));
    source.stop();
    let c = probes.counters().expect("counters");
    println!(
        "records {} kernel events {} lost {}",
        n.load(Ordering::Relaxed),
        c.events,
        c.lost
    );
}
