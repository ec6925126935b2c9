//! Loads and attaches Sonde's kernel programs (compiled by build.rs from ../probes and embedded
//! here), fills the selection maps, reads the counters, and drains the ring buffer on a timer.
//!
//! The kernel side submits events without waking the reader (a wake-up per event cost more
//! than everything else together), so an [`EventSource`] thread drains every few milliseconds,
//! and on demand with [`EventSource::drain_now`].

use std::collections::HashSet;
use std::error::Error as StdError;
use std::fmt::Write as _;
use std::io;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc;
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::Duration;

use aya::maps::{Array, HashMap, MapData, MapError, PerCpuArray, RingBuf};
use aya::programs::{BtfTracePoint, ProgramError, TracePoint};
use aya::{Btf, Ebpf, EbpfError, EbpfLoader};
use thiserror::Error;

use crate::event::{abi, DecodeError, EventView, RawConfig};
use crate::model::KernelEvent;

/// Which kernel hooks carry the capture (the same events either way).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum KernelHooks {
    /// The socket layer's tracepoints where the kernel has them (Linux >= 6.3), else syscalls.
    #[default]
    Auto,
    /// BTF tracepoints `sock_send_length`/`sock_recv_length`/`inet_sock_set_state`: processes
    /// that are not selected pay nothing on syscalls other than socket reads and writes.
    Socket,
    /// Syscall exit tracepoints (any kernel >= 5.15 with BTF): every syscall of every task goes
    /// through the kernel's tracepoint path while they are attached.
    Syscalls,
}

impl KernelHooks {
    pub fn as_str(self) -> &'static str {
        match self {
            KernelHooks::Auto => "auto",
            KernelHooks::Socket => "socket",
            KernelHooks::Syscalls => "syscalls",
        }
    }
}

impl std::str::FromStr for KernelHooks {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "auto" => Ok(KernelHooks::Auto),
            "socket" => Ok(KernelHooks::Socket),
            "syscalls" => Ok(KernelHooks::Syscalls),
            other => Err(format!(
                "unknown kernel_hooks {other:?}: expected auto, socket or syscalls"
            )),
        }
    }
}

/// One compiled object and the programs to attach from it: regular tracepoints (program,
/// category, name) and BTF tracepoints (program, tracepoint).
struct HookSet {
    hooks: KernelHooks,
    object: &'static [u8],
    tracepoints: &'static [(&'static str, &'static str, &'static str)],
    btf_tracepoints: &'static [(&'static str, &'static str)],
}

const SCHED_TRACEPOINTS: [(&str, &str, &str); 2] = [
    ("sonde_process_exec", "sched", "sched_process_exec"),
    ("sonde_process_exit", "sched", "sched_process_exit"),
];

static SOCKET_HOOKS: HookSet = HookSet {
    hooks: KernelHooks::Socket,
    object: aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/sonde.bpf.o")),
    tracepoints: &SCHED_TRACEPOINTS,
    btf_tracepoints: &[
        ("sonde_sock_send", "sock_send_length"),
        ("sonde_sock_recv", "sock_recv_length"),
        ("sonde_sock_state", "inet_sock_set_state"),
        ("sonde_process_fork", "sched_process_fork"),
    ],
};

static SYSCALL_HOOKS: HookSet = HookSet {
    hooks: KernelHooks::Syscalls,
    object: aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/sonde_syscalls.bpf.o")),
    tracepoints: &[
        ("sonde_exit_read", "syscalls", "sys_exit_read"),
        ("sonde_exit_write", "syscalls", "sys_exit_write"),
        ("sonde_exit_readv", "syscalls", "sys_exit_readv"),
        ("sonde_exit_writev", "syscalls", "sys_exit_writev"),
        ("sonde_exit_sendto", "syscalls", "sys_exit_sendto"),
        ("sonde_exit_recvfrom", "syscalls", "sys_exit_recvfrom"),
        ("sonde_exit_sendmsg", "syscalls", "sys_exit_sendmsg"),
        ("sonde_exit_recvmsg", "syscalls", "sys_exit_recvmsg"),
        ("sonde_exit_sendfile64", "syscalls", "sys_exit_sendfile64"),
        ("sonde_exit_accept", "syscalls", "sys_exit_accept"),
        ("sonde_exit_accept4", "syscalls", "sys_exit_accept4"),
        ("sonde_exit_connect", "syscalls", "sys_exit_connect"),
        ("sonde_exit_close", "syscalls", "sys_exit_close"),
        ("sonde_exit_listen", "syscalls", "sys_exit_listen"),
        SCHED_TRACEPOINTS[0],
        SCHED_TRACEPOINTS[1],
    ],
    btf_tracepoints: &[
        ("sonde_process_fork", "sched_process_fork"),
        ("sonde_sock_state", "inet_sock_set_state"),
    ],
};

const MAP_EVENTS: &str = "sonde_events";
const MAP_PIDS: &str = "sonde_pids";
const MAP_DENY: &str = "sonde_deny";
const MAP_CGROUPS: &str = "sonde_cgroups";
const MAP_COUNTERS: &str = "sonde_counters";
const MAP_CONFIG: &str = "sonde_config";

/// Largest payload prefix the kernel programs can copy per event.
pub const MAX_PAYLOAD_SIZE: u32 = abi::SONDE_MAX_PAYLOAD;
pub const DEFAULT_PAYLOAD_SIZE: u32 = 256;
pub const DEFAULT_RING_BUFFER_BYTES: u32 = 16 << 20;
pub const DEFAULT_DRAIN_INTERVAL: Duration = Duration::from_millis(5);
/// Records handed over per drain pass before the handler's `batch_done`; bounds the latency of
/// a batch when producers outrun the reader.
const MAX_RECORDS_PER_PASS: usize = 65_536;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProbeOptions {
    /// Bytes of each read/written buffer copied into the event, at most [`MAX_PAYLOAD_SIZE`].
    pub payload_size: u32,
    /// Ring buffer size; rounded up to a power of two of at least one page.
    pub ring_buffer_bytes: u32,
    /// Never traced, whatever the selection says.
    pub self_pid: u32,
    /// The kernel hooks to capture with.
    pub hooks: KernelHooks,
}

impl Default for ProbeOptions {
    fn default() -> Self {
        ProbeOptions {
            payload_size: DEFAULT_PAYLOAD_SIZE,
            ring_buffer_bytes: DEFAULT_RING_BUFFER_BYTES,
            self_pid: std::process::id(),
            hooks: KernelHooks::Auto,
        }
    }
}

#[derive(Debug, Error)]
pub enum ProbeError {
    #[error(
        "loading eBPF programs needs root, or the capabilities CAP_BPF and CAP_PERFMON \
         (CAP_SYS_ADMIN on kernels before 5.8): {0}"
    )]
    Permission(String),
    #[error("invalid probe option: {0}")]
    Options(String),
    #[error(
        "tracefs is not mounted and mounting it at /sys/kernel/tracing failed ({0}); mount it \
         with `mount -t tracefs tracefs /sys/kernel/tracing`"
    )]
    Tracefs(io::Error),
    #[error("loading the eBPF object: {0}")]
    Object(String),
    #[error("program {program} was rejected: {error}\nverifier log:\n{verifier_log}")]
    Verifier {
        program: &'static str,
        error: String,
        verifier_log: String,
    },
    #[error("program {program}: {error}")]
    Program {
        program: &'static str,
        error: String,
    },
    #[error("attaching {program} to tracepoint {category}/{name}: {error}")]
    Attach {
        program: &'static str,
        category: &'static str,
        name: &'static str,
        error: String,
    },
    #[error("map {map}: {error}")]
    Map { map: &'static str, error: String },
    #[error("the ring buffer is already drained by another event source")]
    RingBufferTaken,
    #[error("starting the drain thread: {0}")]
    Thread(io::Error),
}

/// Kernel-side counters, summed over CPUs (see `enum sonde_counter` in sonde_event.h).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Counters {
    /// Events submitted to the ring buffer.
    pub events: u64,
    /// Events dropped because the ring buffer was full.
    pub lost: u64,
    /// Socket data calls of selected processes.
    pub filtered_in: u64,
    /// Of those, on a socket that is not a process's TCP socket (unix, UDP, kernel sockets).
    pub not_socket: u64,
    /// Failed kernel/user memory reads (events dropped or sent without payload).
    pub read_errors: u64,
}

/// The loaded and attached programs. Dropping it detaches them.
pub struct Probes {
    // Owns the programs and their links; the maps below were taken out of it.
    _ebpf: Ebpf,
    pids: Mutex<PidSelection>,
    /// Pids never traced through their cgroup (exclusions inside a selected cgroup).
    deny: Mutex<PidSelection>,
    cgroups: Mutex<CgroupSelection>,
    counters: PerCpuArray<MapData, u64>,
    events: Option<RingBuf<MapData>>,
    options: ProbeOptions,
}

impl std::fmt::Debug for Probes {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Probes")
            .field("options", &self.options)
            .finish_non_exhaustive()
    }
}

impl Probes {
    /// Loads the programs with `options`, attaches every one of them, and returns with an empty
    /// selection (nothing traced but the discovery hints).
    pub fn load(options: ProbeOptions) -> Result<Probes, ProbeError> {
        if options.payload_size > MAX_PAYLOAD_SIZE {
            return Err(ProbeError::Options(format!(
                "payload_size {} exceeds the kernel programs' maximum of {MAX_PAYLOAD_SIZE}",
                options.payload_size
            )));
        }
        let ring_bytes = ring_buffer_size(options.ring_buffer_bytes)?;
        check_privileges()?;
        raise_memlock_limit();
        ensure_tracefs()?;

        let (mut ebpf, hooks) = match options.hooks {
            KernelHooks::Socket => load_set(&SOCKET_HOOKS, &options, ring_bytes)?,
            KernelHooks::Syscalls => load_set(&SYSCALL_HOOKS, &options, ring_bytes)?,
            KernelHooks::Auto => {
                load_set(&SOCKET_HOOKS, &options, ring_bytes).or_else(|socket| {
                    tracing::warn!(
                        error = %socket,
                        "the socket layer's tracepoints cannot be used (they need Linux >= 6.3); \
                         capturing with syscall tracepoints, which slow every syscall of the \
                         machine a little"
                    );
                    load_set(&SYSCALL_HOOKS, &options, ring_bytes)
                })?
            }
        };

        let pids = PidSelection {
            bits: Array::try_from(take_map(&mut ebpf, MAP_PIDS)?).map_err(map_error(MAP_PIDS))?,
            map: MAP_PIDS,
            selected: HashSet::new(),
        };
        let deny = PidSelection {
            bits: Array::try_from(take_map(&mut ebpf, MAP_DENY)?).map_err(map_error(MAP_DENY))?,
            map: MAP_DENY,
            selected: HashSet::new(),
        };
        let cgroups = CgroupSelection {
            ids: HashMap::try_from(take_map(&mut ebpf, MAP_CGROUPS)?)
                .map_err(map_error(MAP_CGROUPS))?,
            config: Array::try_from(take_map(&mut ebpf, MAP_CONFIG)?)
                .map_err(map_error(MAP_CONFIG))?,
            selected: HashSet::new(),
        };
        let counters = PerCpuArray::try_from(take_map(&mut ebpf, MAP_COUNTERS)?)
            .map_err(map_error(MAP_COUNTERS))?;
        let events =
            RingBuf::try_from(take_map(&mut ebpf, MAP_EVENTS)?).map_err(map_error(MAP_EVENTS))?;

        Ok(Probes {
            _ebpf: ebpf,
            pids: Mutex::new(pids),
            deny: Mutex::new(deny),
            cgroups: Mutex::new(cgroups),
            counters,
            events: Some(events),
            options: ProbeOptions {
                ring_buffer_bytes: ring_bytes,
                hooks,
                ..options
            },
        })
    }

    /// The options in effect (the ring buffer size after rounding, the hooks chosen).
    pub fn options(&self) -> ProbeOptions {
        self.options
    }

    /// Traces the process with this tgid. Selecting Sonde itself is ignored.
    pub fn select_pid(&self, pid: u32) -> Result<(), ProbeError> {
        if pid == self.options.self_pid {
            tracing::debug!(pid, "not selecting Sonde's own process");
            return Ok(());
        }
        lock(&self.pids).set(pid, true)
    }

    /// Stops tracing the tgid (no error if it was not selected).
    pub fn unselect_pid(&self, pid: u32) -> Result<(), ProbeError> {
        lock(&self.pids).set(pid, false)
    }

    /// Never traces this tgid through a selected cgroup (`exclude_instrument` inside a traced
    /// container); `false` lifts that.
    pub fn deny_pid(&self, pid: u32, deny: bool) -> Result<(), ProbeError> {
        lock(&self.deny).set(pid, deny)
    }

    /// Traces every process in the cgroup v2 with this id (the inode number of its directory).
    pub fn select_cgroup(&self, cgroup_id: u64) -> Result<(), ProbeError> {
        lock(&self.cgroups).set(cgroup_id, true)
    }

    pub fn unselect_cgroup(&self, cgroup_id: u64) -> Result<(), ProbeError> {
        lock(&self.cgroups).set(cgroup_id, false)
    }

    /// Whether the kernel's pid bitmap selects `pid` now (it may, without [`Probes::select_pid`]:
    /// a selected process's forked children are selected by the kernel programs).
    pub fn kernel_selects_pid(&self, pid: u32) -> bool {
        let pids = lock(&self.pids);
        pids.bits
            .get(&(pid / 64), 0)
            .is_ok_and(|w| (w >> (pid % 64)) & 1 == 1)
    }

    /// The tgids selected through [`Probes::select_pid`].
    pub fn selected_pids(&self) -> Vec<u32> {
        let mut v: Vec<u32> = lock(&self.pids).selected.iter().copied().collect();
        v.sort_unstable();
        v
    }

    /// The selected cgroup ids.
    pub fn selected_cgroups(&self) -> Vec<u64> {
        let mut v: Vec<u64> = lock(&self.cgroups).selected.iter().copied().collect();
        v.sort_unstable();
        v
    }

    pub fn counters(&self) -> Result<Counters, ProbeError> {
        let read = |index: u32| -> Result<u64, ProbeError> {
            let values = self
                .counters
                .get(&index, 0)
                .map_err(map_error(MAP_COUNTERS))?;
            Ok(values.iter().fold(0u64, |acc, v| acc.wrapping_add(*v)))
        };
        Ok(Counters {
            events: read(abi::SONDE_CNT_EVENTS)?,
            lost: read(abi::SONDE_CNT_LOST)?,
            filtered_in: read(abi::SONDE_CNT_FILTERED_IN)?,
            not_socket: read(abi::SONDE_CNT_NOT_SOCKET)?,
            read_errors: read(abi::SONDE_CNT_READ_ERRORS)?,
        })
    }

    /// Starts the thread that drains the ring buffer every `interval` and hands each decoded
    /// event to `handler`. Only one event source per `Probes`.
    pub fn spawn_event_source<H: EventHandler>(
        &mut self,
        interval: Duration,
        handler: H,
    ) -> Result<EventSource, ProbeError> {
        self.spawn_raw_event_source(interval, Decoding(handler))
    }

    /// Like [`Probes::spawn_event_source`], but hands over each record in place, before any
    /// allocation: for a consumer that only needs some events, or that copies what it keeps.
    pub fn spawn_raw_event_source<H: RawEventHandler>(
        &mut self,
        interval: Duration,
        handler: H,
    ) -> Result<EventSource, ProbeError> {
        let ring = self.events.take().ok_or(ProbeError::RingBufferTaken)?;
        EventSource::spawn(ring, interval, handler)
    }
}

/// A pid bitmap (`sonde_pids` or `sonde_deny`, see sonde_event.h) and what userspace put in
/// it. Userspace writes it under the mutex; the kernel programs also set bits (forks of
/// selected processes) and clear them (exits), so a word's read-modify-write here can race
/// with them: a lost bit is restored by discovery's next look at that pid.
struct PidSelection {
    bits: Array<MapData, u64>,
    map: &'static str,
    selected: HashSet<u32>,
}

impl PidSelection {
    /// Always writes the bit: the kernel sets bits itself (a selected process's forked
    /// children) and clears them (process exit), so the `selected` set is not the truth.
    fn set(&mut self, pid: u32, on: bool) -> Result<(), ProbeError> {
        let word = pid / 64;
        if word >= abi::SONDE_PID_BITMAP_WORDS {
            return Err(ProbeError::Options(format!(
                "pid {pid} is beyond the largest pid Linux allows"
            )));
        }
        let bit = 1u64 << (pid % 64);
        let old = self.bits.get(&word, 0).map_err(map_error(self.map))?;
        let new = if on { old | bit } else { old & !bit };
        if new != old {
            self.bits.set(word, new, 0).map_err(map_error(self.map))?;
        }
        if on {
            self.selected.insert(pid);
        } else {
            self.selected.remove(&pid);
        }
        Ok(())
    }
}

/// The cgroup id set and the count that lets the programs skip the cgroup check while it is
/// empty.
struct CgroupSelection {
    ids: HashMap<MapData, u64, u8>,
    config: Array<MapData, RawConfig>,
    selected: HashSet<u64>,
}

impl CgroupSelection {
    fn set(&mut self, id: u64, on: bool) -> Result<(), ProbeError> {
        if self.selected.contains(&id) == on {
            return Ok(());
        }
        // The id goes in before the count opens the check, and the count drops before the id
        // goes out, so the programs never look at a half-updated selection.
        if on {
            self.ids.insert(id, 1, 0).map_err(map_error(MAP_CGROUPS))?;
            self.selected.insert(id);
            self.write_count()
        } else {
            self.selected.remove(&id);
            self.write_count()?;
            ignore_missing(self.ids.remove(&id)).map_err(map_error(MAP_CGROUPS))
        }
    }

    fn write_count(&mut self) -> Result<(), ProbeError> {
        let config = RawConfig {
            cgroups_selected: u32::try_from(self.selected.len()).unwrap_or(u32::MAX),
            _pad: 0,
        };
        self.config.set(0, config, 0).map_err(map_error(MAP_CONFIG))
    }
}

/// Receives the events of each drain pass, on the drain thread.
pub trait EventHandler: Send + 'static {
    fn event(&mut self, event: KernelEvent);
    /// Called after every drain pass, also when it read nothing, so time-based work (spans
    /// held back for linking) still happens once traffic stops.
    fn batch_done(&mut self) {}
}

impl<F> EventHandler for F
where
    F: FnMut(KernelEvent) + Send + 'static,
{
    fn event(&mut self, event: KernelEvent) {
        self(event)
    }
}

/// Receives each ring-buffer record in place, on the drain thread.
pub trait RawEventHandler: Send + 'static {
    /// An error counts the record as bad ([`DrainStats::bad_records`]).
    fn record(&mut self, record: &EventView<'_>) -> Result<(), DecodeError>;
    fn batch_done(&mut self) {}
}

/// Decodes each record into a [`KernelEvent`] for an [`EventHandler`].
struct Decoding<H>(H);

impl<H: EventHandler> RawEventHandler for Decoding<H> {
    fn record(&mut self, record: &EventView<'_>) -> Result<(), DecodeError> {
        self.0.event(record.to_kernel_event()?);
        Ok(())
    }

    fn batch_done(&mut self) {
        self.0.batch_done();
    }
}

/// An [`EventHandler`] that forwards each drain pass as one batch on a bounded tokio channel.
/// When the consumer falls behind the drain thread waits, the ring buffer fills, and the kernel
/// counts what it cannot store as lost: back-pressure ends in a counter, never in memory growth.
pub struct ChannelHandler {
    tx: tokio::sync::mpsc::Sender<Vec<KernelEvent>>,
    batch: Vec<KernelEvent>,
    max_batch: usize,
}

/// A [`ChannelHandler`] and its receiver: at most `capacity` batches of at most `max_batch`
/// events in flight.
pub fn channel(
    capacity: usize,
    max_batch: usize,
) -> (
    ChannelHandler,
    tokio::sync::mpsc::Receiver<Vec<KernelEvent>>,
) {
    let (tx, rx) = tokio::sync::mpsc::channel(capacity.max(1));
    (
        ChannelHandler {
            tx,
            batch: Vec::new(),
            max_batch: max_batch.max(1),
        },
        rx,
    )
}

impl ChannelHandler {
    fn flush(&mut self) {
        if self.batch.is_empty() {
            return;
        }
        let batch = std::mem::take(&mut self.batch);
        // The drain thread is not a runtime thread, so blocking here is allowed; a closed
        // receiver means the receiver is shutting down and the events have nowhere to go.
        let _ = self.tx.blocking_send(batch);
    }
}

impl EventHandler for ChannelHandler {
    fn event(&mut self, event: KernelEvent) {
        self.batch.push(event);
        if self.batch.len() >= self.max_batch {
            self.flush();
        }
    }

    fn batch_done(&mut self) {
        self.flush();
    }
}

/// Userspace side of the event flow.
#[derive(Debug, Default)]
struct DrainCounters {
    records: AtomicU64,
    bad_records: AtomicU64,
    passes: AtomicU64,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct DrainStats {
    /// Records read from the ring buffer.
    pub records: u64,
    /// Records that did not decode (skipped).
    pub bad_records: u64,
    /// Drain passes run.
    pub passes: u64,
}

enum Control {
    Drain(mpsc::SyncSender<()>),
    Stop,
}

/// The drain thread. Dropping it (or [`EventSource::stop`]) drains once more and joins.
pub struct EventSource {
    control: mpsc::Sender<Control>,
    thread: Option<JoinHandle<()>>,
    counters: Arc<DrainCounters>,
}

impl std::fmt::Debug for EventSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EventSource")
            .field("stats", &self.stats())
            .finish_non_exhaustive()
    }
}

impl EventSource {
    fn spawn<H: RawEventHandler>(
        mut ring: RingBuf<MapData>,
        interval: Duration,
        mut handler: H,
    ) -> Result<EventSource, ProbeError> {
        let (control, rx) = mpsc::channel();
        let counters = Arc::new(DrainCounters::default());
        let thread_counters = Arc::clone(&counters);
        let thread = std::thread::Builder::new()
            .name("sonde-ebpf-drain".to_owned())
            .spawn(move || {
                let counters = thread_counters;
                loop {
                    let (ack, stop) = match rx.recv_timeout(interval) {
                        Ok(Control::Drain(ack)) => (Some(ack), false),
                        Err(mpsc::RecvTimeoutError::Timeout) => (None, false),
                        Ok(Control::Stop) | Err(mpsc::RecvTimeoutError::Disconnected) => {
                            (None, true)
                        }
                    };
                    drain(&mut ring, &mut handler, &counters);
                    if let Some(ack) = ack {
                        let _ = ack.send(());
                    }
                    if stop {
                        return;
                    }
                }
            })
            .map_err(ProbeError::Thread)?;
        Ok(EventSource {
            control,
            thread: Some(thread),
            counters,
        })
    }

    /// Drains the ring buffer now and returns once every event submitted before the call has
    /// been handed to the handler. False if the drain thread is gone.
    pub fn drain_now(&self) -> bool {
        let (tx, rx) = mpsc::sync_channel(1);
        if self.control.send(Control::Drain(tx)).is_err() {
            return false;
        }
        rx.recv().is_ok()
    }

    pub fn stats(&self) -> DrainStats {
        DrainStats {
            records: self.counters.records.load(Ordering::Relaxed),
            bad_records: self.counters.bad_records.load(Ordering::Relaxed),
            passes: self.counters.passes.load(Ordering::Relaxed),
        }
    }

    /// Drains what is left and stops the thread.
    pub fn stop(mut self) {
        self.shutdown();
    }

    fn shutdown(&mut self) {
        let _ = self.control.send(Control::Stop);
        if let Some(thread) = self.thread.take() {
            if thread.join().is_err() {
                tracing::error!("the eBPF drain thread panicked");
            }
        }
    }
}

impl Drop for EventSource {
    fn drop(&mut self) {
        self.shutdown();
    }
}

fn drain<H: RawEventHandler>(
    ring: &mut RingBuf<MapData>,
    handler: &mut H,
    counters: &DrainCounters,
) {
    loop {
        let mut handed = 0usize;
        let mut bad = 0u64;
        while handed < MAX_RECORDS_PER_PASS {
            // The record's space goes back to the producers when `item` drops, right after.
            let Some(item) = ring.next() else { break };
            handed += 1;
            match EventView::parse(&item).and_then(|view| handler.record(&view)) {
                Ok(()) => {}
                Err(e) => {
                    bad += 1;
                    if counters.bad_records.load(Ordering::Relaxed) + bad <= 10 {
                        tracing::warn!(error = %e, "skipping a malformed eBPF event record");
                    }
                }
            }
        }
        counters.records.fetch_add(handed as u64, Ordering::Relaxed);
        counters.bad_records.fetch_add(bad, Ordering::Relaxed);
        counters.passes.fetch_add(1, Ordering::Relaxed);
        handler.batch_done();
        if handed < MAX_RECORDS_PER_PASS {
            return;
        }
    }
}

/// CLOCK_REALTIME - CLOCK_BOOTTIME in nanoseconds: add it to an event's `ts_boot_ns` for Unix
/// time. Sampled a few times, keeping the reading with the tightest bracket.
pub fn boot_to_unix_offset_ns() -> i64 {
    let mut best: Option<(i128, i128)> = None;
    for _ in 0..5 {
        let b1 = clock_ns(libc::CLOCK_BOOTTIME);
        let r = clock_ns(libc::CLOCK_REALTIME);
        let b2 = clock_ns(libc::CLOCK_BOOTTIME);
        let gap = b2 - b1;
        let offset = r - (b1 + b2) / 2;
        if best.is_none_or(|(g, _)| gap < g) {
            best = Some((gap, offset));
        }
    }
    best.map_or(0, |(_, offset)| offset as i64)
}

fn clock_ns(clock: libc::clockid_t) -> i128 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: ts is a valid, writable timespec; both clocks exist on every Linux we run on,
    // and on failure ts stays zero.
    unsafe { libc::clock_gettime(clock, &mut ts) };
    i128::from(ts.tv_sec) * 1_000_000_000 + i128::from(ts.tv_nsec)
}

fn ring_buffer_size(requested: u32) -> Result<u32, ProbeError> {
    // SAFETY: sysconf has no preconditions.
    let page = u32::try_from(unsafe { libc::sysconf(libc::_SC_PAGESIZE) })
        .ok()
        .filter(|p| *p > 0)
        .unwrap_or(4096);
    requested
        .max(page)
        .checked_next_power_of_two()
        .ok_or_else(|| {
            ProbeError::Options(format!(
                "ring_buffer_bytes {requested} is too large (at most 2 GiB)"
            ))
        })
}

const CAP_SYS_ADMIN: u32 = 21;
const CAP_PERFMON: u32 = 38;
const CAP_BPF: u32 = 39;

/// Fails early with a clear message instead of an EPERM deep inside the loader.
fn check_privileges() -> Result<(), ProbeError> {
    let Ok(status) = std::fs::read_to_string("/proc/self/status") else {
        // Cannot tell; let the load itself fail if it must.
        return Ok(());
    };
    let Some(caps) = status
        .lines()
        .find_map(|l| l.strip_prefix("CapEff:"))
        .and_then(|hex| u64::from_str_radix(hex.trim(), 16).ok())
    else {
        return Ok(());
    };
    let has = |cap: u32| caps & (1u64 << cap) != 0;
    if has(CAP_SYS_ADMIN) || (has(CAP_BPF) && has(CAP_PERFMON)) {
        return Ok(());
    }
    // SAFETY: geteuid has no preconditions.
    let euid = unsafe { libc::geteuid() };
    Err(ProbeError::Permission(format!(
        "running as uid {euid} with effective capabilities {caps:#x}"
    )))
}

/// Kernels before 5.11 charge BPF maps against RLIMIT_MEMLOCK; later ones ignore it.
fn raise_memlock_limit() {
    let unlimited = libc::rlimit {
        rlim_cur: libc::RLIM_INFINITY,
        rlim_max: libc::RLIM_INFINITY,
    };
    // SAFETY: a valid rlimit pointer; failure only matters on old kernels, where the load then
    // reports it.
    unsafe { libc::setrlimit(libc::RLIMIT_MEMLOCK, &unlimited) };
}

/// aya finds tracepoint ids in tracefs, which some systems do not mount.
fn ensure_tracefs() -> Result<(), ProbeError> {
    let mounted = |p: &str| Path::new(p).join("events").is_dir();
    if mounted("/sys/kernel/tracing") || mounted("/sys/kernel/debug/tracing") {
        return Ok(());
    }
    let target = c"/sys/kernel/tracing";
    let fstype = c"tracefs";
    // SAFETY: NUL-terminated strings and no data argument.
    let rc = unsafe {
        libc::mount(
            fstype.as_ptr(),
            target.as_ptr(),
            fstype.as_ptr(),
            0,
            std::ptr::null(),
        )
    };
    if rc != 0 {
        return Err(ProbeError::Tracefs(io::Error::last_os_error()));
    }
    tracing::info!("mounted tracefs at /sys/kernel/tracing");
    Ok(())
}

/// A program of the object, as the type it is attached as.
fn program_of<'a, T>(ebpf: &'a mut Ebpf, program: &'static str) -> Result<&'a mut T, ProbeError>
where
    &'a mut T: TryFrom<&'a mut aya::programs::Program, Error = ProgramError>,
{
    ebpf.program_mut(program)
        .ok_or_else(|| ProbeError::Program {
            program,
            error: "missing from the object".to_owned(),
        })?
        .try_into()
        .map_err(|e: ProgramError| ProbeError::Program {
            program,
            error: error_chain(&e),
        })
}

/// Loads one object and attaches all of its programs; dropping the result detaches them.
fn load_set(
    set: &HookSet,
    options: &ProbeOptions,
    ring_bytes: u32,
) -> Result<(Ebpf, KernelHooks), ProbeError> {
    let mut ebpf = EbpfLoader::new()
        .override_global("payload_size", &options.payload_size, true)
        .override_global("self_tgid", &options.self_pid, true)
        .map_max_entries(MAP_EVENTS, ring_bytes)
        .load(set.object)
        .map_err(|e| object_error(&e))?;
    for &(program, category, name) in set.tracepoints {
        let prog: &mut TracePoint = program_of(&mut ebpf, program)?;
        prog.load().map_err(|e| program_load_error(program, e))?;
        prog.attach(category, name)
            .map_err(|e| ProbeError::Attach {
                program,
                category,
                name,
                error: error_chain(&e),
            })?;
    }
    let btf = Btf::from_sys_fs().map_err(|e| ProbeError::Program {
        program: set.btf_tracepoints[0].0,
        error: format!("reading the kernel's BTF (/sys/kernel/btf/vmlinux): {e}"),
    })?;
    for &(program, name) in set.btf_tracepoints {
        let prog: &mut BtfTracePoint = program_of(&mut ebpf, program)?;
        prog.load(name, &btf)
            .map_err(|e| program_load_error(program, e))?;
        prog.attach().map_err(|e| ProbeError::Attach {
            program,
            category: "btf",
            name,
            error: error_chain(&e),
        })?;
    }
    Ok((ebpf, set.hooks))
}

fn take_map(ebpf: &mut Ebpf, name: &'static str) -> Result<aya::maps::Map, ProbeError> {
    ebpf.take_map(name).ok_or_else(|| ProbeError::Map {
        map: name,
        error: "missing from the object".to_owned(),
    })
}

fn map_error(map: &'static str) -> impl Fn(MapError) -> ProbeError {
    move |e| ProbeError::Map {
        map,
        error: error_chain(&e),
    }
}

fn ignore_missing(result: Result<(), MapError>) -> Result<(), MapError> {
    match result {
        Err(MapError::SyscallError(aya::sys::SyscallError { io_error, .. }))
            if io_error.raw_os_error() == Some(libc::ENOENT) =>
        {
            Ok(())
        }
        Err(MapError::KeyNotFound) => Ok(()),
        other => other,
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // A panic while holding the lock cannot leave a map handle inconsistent.
    m.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

fn is_permission(e: &io::Error) -> bool {
    matches!(e.raw_os_error(), Some(libc::EPERM) | Some(libc::EACCES))
}

fn object_error(e: &EbpfError) -> ProbeError {
    let mut source: Option<&(dyn StdError + 'static)> = Some(e);
    while let Some(err) = source {
        if let Some(io) = err.downcast_ref::<io::Error>() {
            if is_permission(io) {
                return ProbeError::Permission(error_chain(e));
            }
        }
        source = err.source();
    }
    ProbeError::Object(error_chain(e))
}

fn program_load_error(program: &'static str, e: ProgramError) -> ProbeError {
    match e {
        ProgramError::LoadError {
            io_error,
            verifier_log,
        } => {
            if is_permission(&io_error) && verifier_log.to_string().trim().is_empty() {
                return ProbeError::Permission(format!("loading {program}: {io_error}"));
            }
            ProbeError::Verifier {
                program,
                error: io_error.to_string(),
                verifier_log: verifier_log.to_string(),
            }
        }
        other => ProbeError::Program {
            program,
            error: error_chain(&other),
        },
    }
}

/// "outer: inner: innermost": aya's top-level messages alone often omit the cause.
fn error_chain(e: &dyn StdError) -> String {
    let mut out = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        let msg = s.to_string();
        if !out.contains(&msg) {
            let _ = write!(out, ": {msg}");
        }
        source = s.source();
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ring_buffer_sizes_round_up_to_a_power_of_two_page_multiple() {
        assert_eq!(ring_buffer_size(16 << 20).ok(), Some(16 << 20));
        assert_eq!(ring_buffer_size(10_000_000).ok(), Some(16 << 20));
        assert_eq!(ring_buffer_size(0).ok(), Some(4096));
        assert_eq!(ring_buffer_size(1).ok(), Some(4096));
        assert!(matches!(
            ring_buffer_size(u32::MAX),
            Err(ProbeError::Options(_))
        ));
    }

    #[test]
    fn oversized_payload_is_refused_before_anything_is_loaded() {
        let err = Probes::load(ProbeOptions {
            payload_size: MAX_PAYLOAD_SIZE + 1,
            ..ProbeOptions::default()
        })
        .expect_err("must refuse");
        assert!(matches!(err, ProbeError::Options(_)), "{err}");
    }

    #[test]
    fn handles_can_be_shared_across_threads() {
        fn shareable<T: Send + Sync>() {}
        shareable::<Probes>();
        shareable::<EventSource>();
        fn sendable<T: Send>() {}
        sendable::<ChannelHandler>();
    }

    #[test]
    fn unprivileged_load_is_a_clear_error() {
        // SAFETY: geteuid has no preconditions.
        if unsafe { libc::geteuid() } == 0 {
            eprintln!("running as root: the unprivileged error path is not exercised");
            return;
        }
        let err = Probes::load(ProbeOptions::default()).expect_err("needs privileges");
        assert!(matches!(err, ProbeError::Permission(_)), "{err}");
        assert!(err.to_string().contains("CAP_BPF"), "{err}");
    }

    #[test]
    fn boot_offset_matches_the_clocks() {
        let offset = boot_to_unix_offset_ns();
        let boot = clock_ns(libc::CLOCK_BOOTTIME);
        let unix = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos() as i128)
            .unwrap_or(0);
        let diff = (boot + i128::from(offset) - unix).abs();
        assert!(diff < 50_000_000, "offset off by {diff} ns");
    }

    #[test]
    fn each_embedded_object_has_every_program_of_its_hook_set() {
        for set in [&SOCKET_HOOKS, &SYSCALL_HOOKS] {
            let names = set
                .tracepoints
                .iter()
                .map(|t| t.0)
                .chain(set.btf_tracepoints.iter().map(|t| t.0));
            for name in names {
                // The symbol names are in the ELF string table of the embedded object.
                assert!(
                    set.object.windows(name.len()).any(|w| w == name.as_bytes()),
                    "{name} missing from the {} object",
                    set.hooks.as_str()
                );
            }
        }
    }

    #[test]
    fn kernel_hooks_parse() {
        for h in [
            KernelHooks::Auto,
            KernelHooks::Socket,
            KernelHooks::Syscalls,
        ] {
            assert_eq!(h.as_str().parse::<KernelHooks>(), Ok(h));
        }
        assert!("kprobes".parse::<KernelHooks>().is_err());
    }

    #[test]
    fn channel_handler_batches_per_pass_and_caps_batch_size() {
        let (mut h, mut rx) = channel(8, 2);
        for pid in 0..3 {
            h.event(KernelEvent::ProcessExec { pid });
        }
        h.batch_done();
        let sizes: Vec<usize> =
            std::iter::from_fn(|| rx.try_recv().ok().map(|b| b.len())).collect();
        assert_eq!(sizes, vec![2, 1]);
    }

    #[test]
    fn missing_keys_are_not_errors_on_unselect() {
        let enoent = MapError::SyscallError(aya::sys::SyscallError {
            call: "bpf_map_delete_elem",
            io_error: io::Error::from_raw_os_error(libc::ENOENT),
        });
        assert!(ignore_missing(Err(enoent)).is_ok());
        let eperm = MapError::SyscallError(aya::sys::SyscallError {
            call: "bpf_map_delete_elem",
            io_error: io::Error::from_raw_os_error(libc::EPERM),
        });
        assert!(ignore_missing(Err(eperm)).is_err());
    }
}
