//! `bench ebpf`: what Sonde's `ebpf` receiver costs the process it instruments.
//!
//! One nginx (one worker, `return 200`) is measured under `wrk` in three conditions, alternated
//! round by round so drift on the shared machine hits all of them alike: no Sonde running,
//! Sonde instrumenting nginx, and Sonde instrumenting an idle Python server instead of nginx.
//! While nginx is instrumented, a paced run at a fixed rate (our own HTTP/1.1 keep-alive
//! generator, [`paced_http`], since `wrk` cannot pace) measures the capture rate below
//! saturation. Sonde's span and loss counters come from its own metrics endpoint, its CPU time
//! and peak RSS from `/proc`.

use std::fmt::Write as _;
use std::fs::File;
use std::net::{SocketAddr, TcpStream as StdTcpStream};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::collector::{free_port, log_tail};
use crate::procstat;

/// Targets from the receiver's issue.
pub const TARGET_INSTRUMENTED_RATIO: f64 = 0.85;
pub const TARGET_NOT_SELECTED_RATIO: f64 = 0.97;
pub const TARGET_CAPTURE_SATURATED: f64 = 0.99;

#[derive(Debug, thiserror::Error)]
pub enum EbpfBenchError {
    #[error("{0}: {1}")]
    Io(String, std::io::Error),
    #[error("{0}")]
    Setup(String),
}

fn io_err(what: impl Into<String>) -> impl FnOnce(std::io::Error) -> EbpfBenchError {
    let what = what.into();
    move |e| EbpfBenchError::Io(what, e)
}

pub struct EbpfBenchConfig {
    pub sonde: PathBuf,
    pub nginx: PathBuf,
    pub wrk: PathBuf,
    pub python: PathBuf,
    /// Rounds; each round measures every condition once.
    pub runs: usize,
    /// Length of each wrk run and of each paced run.
    pub duration: Duration,
    pub wrk_threads: u32,
    pub wrk_connections: u32,
    /// Requests per second of the paced run (0 skips it).
    pub paced_rate: f64,
    pub paced_connections: usize,
    /// The receiver's `payload_size`; Sonde's default when `None`.
    pub payload_size: Option<u32>,
    pub keep_logs: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Condition {
    Baseline,
    Instrumented,
    NotSelected,
}

impl Condition {
    fn name(self) -> &'static str {
        match self {
            Condition::Baseline => "baseline (no Sonde)",
            Condition::Instrumented => "instrumented (nginx selected)",
            Condition::NotSelected => "not selected (Sonde on another process)",
        }
    }
}

/// One wrk run at saturation.
#[derive(Debug, Clone, Default)]
pub struct WrkRun {
    pub requests: u64,
    pub seconds: f64,
    pub errors: u64,
    /// Sonde's counters over the run (zero without Sonde).
    pub spans: u64,
    /// Of `spans`, those emitted only once a later request gave the receiver new events (see
    /// [`Sonde::settled`]).
    pub held: u64,
    pub lost: u64,
    pub sonde_cpu: Duration,
    /// nginx's master and worker CPU over the run: the kernel programs run in its syscalls.
    pub nginx_cpu: Duration,
}

impl WrkRun {
    pub fn rate(&self) -> f64 {
        if self.seconds > 0.0 {
            self.requests as f64 / self.seconds
        } else {
            0.0
        }
    }
}

/// One paced run with nginx instrumented.
#[derive(Debug, Clone, Default)]
pub struct PacedRun {
    pub result: PacedResult,
    pub spans: u64,
    pub held: u64,
    pub lost: u64,
    pub sonde_cpu: Duration,
}

#[derive(Debug, Default)]
pub struct Report {
    pub baseline: Vec<WrkRun>,
    pub instrumented: Vec<WrkRun>,
    pub not_selected: Vec<WrkRun>,
    pub paced: Vec<PacedRun>,
    /// Largest Sonde `VmHWM` seen in the instrumented condition.
    pub peak_rss: u64,
    pub paced_rate: f64,
    pub payload_size: Option<u32>,
    pub notes: Vec<String>,
}

/// Removes the directory on drop unless asked to keep it.
struct TempDir {
    path: PathBuf,
    keep: bool,
}

impl TempDir {
    fn new(keep: bool) -> Result<TempDir, EbpfBenchError> {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.subsec_nanos())
            .unwrap_or(0);
        let path =
            std::env::temp_dir().join(format!("bench-ebpf-{}-{nanos:x}", std::process::id()));
        std::fs::create_dir_all(&path).map_err(io_err(format!("creating {}", path.display())))?;
        Ok(TempDir { path, keep })
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        if self.keep {
            eprintln!("kept {}", self.path.display());
        } else {
            let _ = std::fs::remove_dir_all(&self.path);
        }
    }
}

/// A started process in its own process group, so that helpers it forks (nginx's worker) are
/// stopped with it. Stopped and reaped on `stop` or, at the latest, on drop.
struct Proc {
    child: Option<Child>,
    name: String,
    log: PathBuf,
}

impl Proc {
    fn spawn(name: &str, mut cmd: Command, log: PathBuf) -> Result<Proc, EbpfBenchError> {
        let out = File::create(&log).map_err(io_err(format!("creating {}", log.display())))?;
        let err = out
            .try_clone()
            .map_err(io_err(format!("opening {}", log.display())))?;
        cmd.stdin(Stdio::null()).stdout(out).stderr(err);
        cmd.process_group(0);
        // SAFETY: only async-signal-safe calls between fork and exec. A killed bench then
        // takes the process with it instead of leaving it running.
        unsafe {
            cmd.pre_exec(|| {
                libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
                Ok(())
            });
        }
        let child = cmd
            .spawn()
            .map_err(io_err(format!("starting {name} ({:?})", cmd.get_program())))?;
        Ok(Proc {
            child: Some(child),
            name: name.to_string(),
            log,
        })
    }

    fn pid(&self) -> u32 {
        self.child.as_ref().map(Child::id).unwrap_or(0)
    }

    fn exited(&mut self) -> Option<ExitStatus> {
        self.child
            .as_mut()
            .and_then(|c| c.try_wait().ok().flatten())
    }

    fn signal_group(pid: u32, sig: i32) {
        if let Ok(pid) = i32::try_from(pid) {
            if pid > 0 {
                // SAFETY: the group is the one this process created for its child.
                unsafe {
                    libc::kill(-pid, sig);
                }
            }
        }
    }

    fn exit_error(&mut self, what: &str) -> EbpfBenchError {
        let status = self
            .exited()
            .map(|s| s.to_string())
            .unwrap_or_else(|| "still running".into());
        EbpfBenchError::Setup(format!(
            "{} {what} ({status}); log {}:\n{}",
            self.name,
            self.log.display(),
            log_tail(&self.log, 3000)
        ))
    }

    /// SIGTERM to the group, up to `grace` for the leader to exit, then SIGKILL to the group.
    async fn stop(&mut self, grace: Duration) {
        let Some(mut child) = self.child.take() else {
            return;
        };
        let pid = child.id();
        Self::signal_group(pid, libc::SIGTERM);
        let deadline = Instant::now() + grace;
        while Instant::now() < deadline {
            match child.try_wait() {
                Ok(Some(_)) => break,
                Ok(None) => tokio::time::sleep(Duration::from_millis(20)).await,
                Err(_) => break,
            }
        }
        // Whatever is left of the group (a worker outliving its master) goes too.
        Self::signal_group(pid, libc::SIGKILL);
        let _ = child.wait();
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            Self::signal_group(child.id(), libc::SIGKILL);
            let _ = child.wait();
        }
    }
}

async fn wait_listening(
    p: &mut Proc,
    addr: SocketAddr,
    limit: Duration,
) -> Result<(), EbpfBenchError> {
    let start = Instant::now();
    loop {
        if p.exited().is_some() {
            return Err(p.exit_error("exited during start-up"));
        }
        if StdTcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_ok() {
            return Ok(());
        }
        if start.elapsed() > limit {
            return Err(p.exit_error(&format!("did not listen on {addr}")));
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn nginx_config(dir: &Path, port: u16) -> String {
    let d = dir.display();
    format!(
        "daemon off;\nworker_processes 1;\npid {d}/nginx.pid;\nerror_log {d}/nginx-error.log warn;\n\
         events {{ worker_connections 1024; }}\n\
         http {{\n  access_log off;\n\
         \x20 client_body_temp_path {d}/client_body;\n  proxy_temp_path {d}/proxy;\n\
         \x20 fastcgi_temp_path {d}/fastcgi;\n  uwsgi_temp_path {d}/uwsgi;\n  scgi_temp_path {d}/scgi;\n\
         \x20 server {{\n    listen 127.0.0.1:{port};\n\
         \x20   location / {{ return 200 \"hello!\"; }}\n  }}\n}}\n"
    )
}

/// The Sonde config of the issue: the `ebpf` receiver selecting whatever listens on `port`,
/// traces and metrics through `batch` to `nop`.
pub fn sonde_config(port: u16, metrics: SocketAddr, payload_size: Option<u32>) -> String {
    let payload = payload_size
        .map(|p| format!("    payload_size: {p}\n"))
        .unwrap_or_default();
    format!(
        "receivers:\n  ebpf:\n{payload}    discovery:\n      instrument:\n        - open_ports: {port}\n\
         processors:\n  batch: {{}}\n\
         exporters:\n  nop: {{}}\n\
         service:\n  telemetry: {{metrics: {{address: \"{metrics}\"}}}}\n  pipelines:\n\
         \x20   traces: {{receivers: [ebpf], processors: [batch], exporters: [nop]}}\n\
         \x20   metrics: {{receivers: [ebpf], processors: [batch], exporters: [nop]}}\n"
    )
}

/// Sum of every series of `name` in Prometheus text (all label sets).
pub fn sum_metric(text: &str, name: &str) -> Option<f64> {
    let mut found = None;
    for line in text.lines() {
        let Some(rest) = line.strip_prefix(name) else {
            continue;
        };
        let value = if rest.starts_with('{') {
            match rest.rfind('}') {
                Some(i) => &rest[i + 1..],
                None => continue,
            }
        } else if rest.starts_with(' ') {
            rest
        } else {
            continue;
        };
        if let Some(v) = value
            .split_whitespace()
            .next()
            .and_then(|v| v.parse::<f64>().ok())
        {
            *found.get_or_insert(0.0) += v;
        }
    }
    found
}

async fn scrape(addr: SocketAddr) -> Result<String, std::io::Error> {
    let fut = async {
        let mut s = TcpStream::connect(addr).await?;
        s.write_all(
            format!("GET /metrics HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n")
                .as_bytes(),
        )
        .await?;
        let mut buf = Vec::new();
        s.read_to_end(&mut buf).await?;
        Ok(String::from_utf8_lossy(&buf).into_owned())
    };
    tokio::time::timeout(Duration::from_secs(5), fut)
        .await
        .unwrap_or_else(|_| Err(std::io::Error::other("metrics request timed out")))
}

#[derive(Debug, Clone, Copy, Default)]
struct Counters {
    spans: u64,
    lost: u64,
    selected: u64,
}

async fn counters(addr: SocketAddr) -> Result<Counters, EbpfBenchError> {
    let text = scrape(addr)
        .await
        .map_err(io_err(format!("reading Sonde's metrics on {addr}")))?;
    let get = |n| sum_metric(&text, n).unwrap_or(0.0) as u64;
    Ok(Counters {
        spans: get("sonde_ebpf_spans_emitted_total"),
        lost: get("sonde_ebpf_events_lost_total"),
        selected: get("sonde_ebpf_selected_processes"),
    })
}

/// Running Sonde with its metrics address.
struct Sonde {
    proc: Proc,
    metrics: SocketAddr,
}

impl Sonde {
    async fn start(
        cfg: &EbpfBenchConfig,
        dir: &Path,
        port: u16,
        tag: &str,
    ) -> Result<Sonde, EbpfBenchError> {
        let metrics = SocketAddr::from((
            [127, 0, 0, 1],
            free_port().map_err(|e| EbpfBenchError::Setup(e.to_string()))?,
        ));
        let path = dir.join(format!("sonde-{tag}.yaml"));
        std::fs::write(&path, sonde_config(port, metrics, cfg.payload_size))
            .map_err(io_err(format!("writing {}", path.display())))?;
        let mut cmd = Command::new(&cfg.sonde);
        cmd.arg("--config").arg(&path);
        let mut proc = Proc::spawn("sonde", cmd, dir.join(format!("sonde-{tag}.log")))?;
        // Loading the kernel programs and the first discovery scan take a moment; the run only
        // starts once the target process is instrumented.
        let start = Instant::now();
        loop {
            if proc.exited().is_some() {
                return Err(proc.exit_error("exited during start-up"));
            }
            if let Ok(c) = counters(metrics).await {
                if c.selected >= 1 {
                    break;
                }
            }
            if start.elapsed() > Duration::from_secs(60) {
                return Err(proc.exit_error("selected no process within 60s"));
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        Ok(Sonde { proc, metrics })
    }

    /// Counters once the span count stops moving for a second, and how many spans only came
    /// out after one more request to `flush_via`. The receiver finishes its span batch only at
    /// the end of a drain pass that read events, so spans still held back (inside its
    /// clock-margin window) when the traffic stops stay unemitted until the next event: the
    /// extra request provides that event, and its own span stays held in turn, so it is not
    /// counted here (it lands in the next measured window, one span).
    async fn settled(
        &mut self,
        flush_via: Option<SocketAddr>,
    ) -> Result<(Counters, u64), EbpfBenchError> {
        let quiet = self.quiet_counters().await?;
        let Some(addr) = flush_via else {
            return Ok((quiet, 0));
        };
        one_request(addr).await;
        let after = self.quiet_counters().await?;
        Ok((after, after.spans.saturating_sub(quiet.spans)))
    }

    async fn quiet_counters(&mut self) -> Result<Counters, EbpfBenchError> {
        let mut last = counters(self.metrics).await?;
        let start = Instant::now();
        let mut stable = 0;
        while stable < 5 && start.elapsed() < Duration::from_secs(20) {
            tokio::time::sleep(Duration::from_millis(200)).await;
            let now = counters(self.metrics).await?;
            if now.spans == last.spans {
                stable += 1;
            } else {
                stable = 0;
            }
            last = now;
        }
        if self.proc.exited().is_some() {
            return Err(self.proc.exit_error("exited during the run"));
        }
        Ok(last)
    }

    fn cpu(&self) -> Duration {
        procstat::cpu_time(self.proc.pid()).unwrap_or_default()
    }
}

/// One `GET /` on a fresh connection; failures only mean nothing is flushed.
async fn one_request(addr: SocketAddr) {
    let fut = async {
        let mut s = TcpStream::connect(addr).await?;
        s.write_all(
            format!("GET / HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n").as_bytes(),
        )
        .await?;
        let mut buf = Vec::new();
        s.read_to_end(&mut buf).await
    };
    let _ = tokio::time::timeout(Duration::from_secs(5), fut).await;
}

/// Parses wrk's "N requests in 5.00s" line, and its error lines.
pub fn parse_wrk(out: &str) -> Option<(u64, f64, u64)> {
    let mut result = None;
    let mut errors = 0u64;
    for line in out.lines() {
        let line = line.trim();
        if let Some((n, rest)) = line.split_once(" requests in ") {
            let n: u64 = n.trim().parse().ok()?;
            let secs = rest.split(',').next()?.trim();
            result = Some((n, parse_wrk_duration(secs)?));
        } else if let Some(rest) = line.strip_prefix("Socket errors:") {
            // "connect 0, read 0, write 0, timeout 0"
            errors += rest
                .split(',')
                .filter_map(|p| p.split_whitespace().nth(1)?.parse::<u64>().ok())
                .sum::<u64>();
        } else if let Some(rest) = line.strip_prefix("Non-2xx or 3xx responses:") {
            errors += rest.trim().parse::<u64>().unwrap_or(0);
        }
    }
    result.map(|(n, s)| (n, s, errors))
}

fn parse_wrk_duration(s: &str) -> Option<f64> {
    if let Some(v) = s.strip_suffix("ms") {
        return v.parse::<f64>().ok().map(|v| v / 1e3);
    }
    if let Some(v) = s.strip_suffix("us") {
        return v.parse::<f64>().ok().map(|v| v / 1e6);
    }
    if let Some(v) = s.strip_suffix('m') {
        return v.parse::<f64>().ok().map(|v| v * 60.0);
    }
    s.strip_suffix('s')?.parse().ok()
}

/// CPU time of a process and its direct children (nginx's master and worker).
fn tree_cpu(pid: u32) -> Duration {
    let children =
        std::fs::read_to_string(format!("/proc/{pid}/task/{pid}/children")).unwrap_or_default();
    std::iter::once(pid)
        .chain(children.split_whitespace().filter_map(|c| c.parse().ok()))
        .filter_map(|p| procstat::cpu_time(p).ok())
        .sum()
}

async fn run_wrk(
    cfg: &EbpfBenchConfig,
    dir: &Path,
    port: u16,
    nginx_pid: u32,
    secs: u64,
) -> Result<WrkRun, EbpfBenchError> {
    let mut cmd = Command::new(&cfg.wrk);
    cmd.arg(format!("-t{}", cfg.wrk_threads))
        .arg(format!("-c{}", cfg.wrk_connections))
        .arg(format!("-d{secs}s"))
        .arg(format!("http://127.0.0.1:{port}/"));
    let log = dir.join("wrk.out");
    let cpu0 = tree_cpu(nginx_pid);
    let mut p = Proc::spawn("wrk", cmd, log.clone())?;
    let limit = Instant::now() + Duration::from_secs(secs + 30);
    loop {
        if let Some(status) = p.exited() {
            let out = std::fs::read_to_string(&log).unwrap_or_default();
            let Some((requests, seconds, errors)) = parse_wrk(&out) else {
                return Err(EbpfBenchError::Setup(format!(
                    "wrk ({status}) printed no result:\n{out}"
                )));
            };
            return Ok(WrkRun {
                requests,
                seconds,
                errors,
                nginx_cpu: tree_cpu(nginx_pid).saturating_sub(cpu0),
                ..WrkRun::default()
            });
        }
        if Instant::now() > limit {
            return Err(p.exit_error("did not finish"));
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Outcome of [`paced_http`].
#[derive(Debug, Clone, Default)]
pub struct PacedResult {
    /// Requests the schedule called for.
    pub scheduled: u64,
    pub sent: u64,
    /// Complete responses with status 200.
    pub ok: u64,
    /// Other statuses, connection failures and unanswered requests.
    pub errors: u64,
    pub elapsed: Duration,
    /// Requests sent more than 2 ms after their scheduled time.
    pub late: u64,
}

impl PacedResult {
    pub fn achieved_rate(&self) -> f64 {
        let s = self.elapsed.as_secs_f64();
        if s > 0.0 {
            self.ok as f64 / s
        } else {
            0.0
        }
    }
}

#[derive(Default)]
struct PacedCounters {
    sent: AtomicU64,
    ok: AtomicU64,
    errors: AtomicU64,
    late: AtomicU64,
}

/// HTTP/1.1 keep-alive load at a fixed total rate: request `k` of the run is due at
/// `start + k / rate` and goes out on connection `k % connections`, one request in flight per
/// connection (no pipelining, like wrk). A connection that falls behind sends its overdue
/// requests at once, so the total over the run follows the schedule even though tokio's timer
/// has millisecond resolution.
pub async fn paced_http(
    addr: SocketAddr,
    rate: f64,
    connections: usize,
    duration: Duration,
) -> PacedResult {
    let connections = connections.max(1);
    let scheduled = (rate * duration.as_secs_f64()).round() as u64;
    let counters = Arc::new(PacedCounters::default());
    let request: Arc<[u8]> =
        format!("GET / HTTP/1.1\r\nHost: {addr}\r\nUser-Agent: bench-paced\r\n\r\n")
            .into_bytes()
            .into();
    let start = tokio::time::Instant::now() + Duration::from_millis(20);
    let give_up = start + duration + Duration::from_secs(5);
    let mut tasks = Vec::with_capacity(connections);
    for i in 0..connections {
        let counters = counters.clone();
        let request = request.clone();
        tasks.push(tokio::spawn(async move {
            let mut conn: Option<(TcpStream, Vec<u8>)> = None;
            let mut k = i as u64;
            while k < scheduled {
                let due = start + Duration::from_secs_f64(k as f64 / rate);
                if tokio::time::Instant::now() > give_up {
                    break;
                }
                tokio::time::sleep_until(due).await;
                // tokio's timer fires up to a millisecond after the deadline by design.
                if tokio::time::Instant::now().duration_since(due) > Duration::from_millis(2) {
                    counters.late.fetch_add(1, Ordering::Relaxed);
                }
                if conn.is_none() {
                    match TcpStream::connect(addr).await {
                        Ok(s) => {
                            let _ = s.set_nodelay(true);
                            conn = Some((s, Vec::with_capacity(4096)));
                        }
                        Err(_) => {
                            counters.errors.fetch_add(1, Ordering::Relaxed);
                            k += connections as u64;
                            continue;
                        }
                    }
                }
                if let Some((s, buf)) = conn.as_mut() {
                    counters.sent.fetch_add(1, Ordering::Relaxed);
                    let exchange = async {
                        s.write_all(&request).await?;
                        read_response(s, buf).await
                    };
                    match tokio::time::timeout_at(give_up, exchange).await {
                        Ok(Ok((status, close))) => {
                            let c = if status == 200 {
                                &counters.ok
                            } else {
                                &counters.errors
                            };
                            c.fetch_add(1, Ordering::Relaxed);
                            if close {
                                conn = None;
                            }
                        }
                        Ok(Err(_)) | Err(_) => {
                            counters.errors.fetch_add(1, Ordering::Relaxed);
                            conn = None;
                        }
                    }
                }
                k += connections as u64;
            }
        }));
    }
    for t in tasks {
        let _ = t.await;
    }
    let elapsed = tokio::time::Instant::now().duration_since(start);
    let sent = counters.sent.load(Ordering::Relaxed);
    let ok = counters.ok.load(Ordering::Relaxed);
    let errors = counters.errors.load(Ordering::Relaxed);
    PacedResult {
        scheduled,
        sent,
        ok,
        // Requests the schedule called for but never answered count as errors too.
        errors: errors.max(scheduled.saturating_sub(ok)),
        elapsed,
        late: counters.late.load(Ordering::Relaxed),
    }
}

/// Reads one response (headers and a `Content-Length` body) and returns its status code and
/// whether the server closes the connection after it (nginx does every `keepalive_requests`).
/// Bytes past the response stay in `buf`.
async fn read_response(s: &mut TcpStream, buf: &mut Vec<u8>) -> std::io::Result<(u16, bool)> {
    loop {
        if let Some(f) = parse_response(buf)? {
            buf.drain(..f.len);
            return Ok((f.status, f.close));
        }
        if buf.len() > 1 << 20 {
            return Err(std::io::Error::other("response too large"));
        }
        let mut chunk = [0u8; 4096];
        let n = s.read(&mut chunk).await?;
        if n == 0 {
            return Err(std::io::ErrorKind::UnexpectedEof.into());
        }
        buf.extend_from_slice(&chunk[..n]);
    }
}

/// A parsed response head: status, total length, and whether the server closes the connection.
#[derive(Debug, PartialEq, Eq)]
struct Framed {
    status: u16,
    len: usize,
    close: bool,
}

/// `Some` once `buf` holds a complete response.
fn parse_response(buf: &[u8]) -> std::io::Result<Option<Framed>> {
    let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") else {
        return Ok(None);
    };
    let head = std::str::from_utf8(&buf[..end])
        .map_err(|_| std::io::Error::other("non-UTF-8 response head"))?;
    let mut lines = head.split("\r\n");
    let status = lines
        .next()
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|c| c.parse::<u16>().ok())
        .ok_or_else(|| std::io::Error::other("bad status line"))?;
    let mut body = 0usize;
    let mut close = false;
    for l in lines {
        if let Some((k, v)) = l.split_once(':') {
            if k.trim().eq_ignore_ascii_case("content-length") {
                body = v
                    .trim()
                    .parse()
                    .map_err(|_| std::io::Error::other("bad Content-Length"))?;
            } else if k.trim().eq_ignore_ascii_case("connection") {
                close = v.trim().eq_ignore_ascii_case("close");
            } else if k.trim().eq_ignore_ascii_case("transfer-encoding") {
                return Err(std::io::Error::other("chunked responses are not supported"));
            }
        }
    }
    let total = end + 4 + body;
    Ok((buf.len() >= total).then_some(Framed {
        status,
        len: total,
        close,
    }))
}

/// Runs the whole measurement.
pub async fn run(cfg: EbpfBenchConfig) -> Result<Report, EbpfBenchError> {
    if cfg.runs == 0 || cfg.duration.is_zero() {
        return Err(EbpfBenchError::Setup(
            "--runs and --duration must not be zero".into(),
        ));
    }
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        return Err(EbpfBenchError::Setup(
            "bench ebpf needs root (Sonde loads eBPF programs)".into(),
        ));
    }
    if !cfg.sonde.is_file() {
        return Err(EbpfBenchError::Setup(format!(
            "no Sonde binary at {} (cargo build --release -p sonde, or pass --sonde)",
            cfg.sonde.display()
        )));
    }
    let dir = TempDir::new(cfg.keep_logs)?;
    let port_err = |e: crate::collector::CollectorError| EbpfBenchError::Setup(e.to_string());

    let nginx_port = free_port().map_err(port_err)?;
    std::fs::create_dir_all(dir.path.join("logs")).map_err(io_err("creating nginx logs dir"))?;
    let conf = dir.path.join("nginx.conf");
    std::fs::write(&conf, nginx_config(&dir.path, nginx_port))
        .map_err(io_err("writing nginx.conf"))?;
    let mut cmd = Command::new(&cfg.nginx);
    cmd.arg("-p").arg(&dir.path).arg("-c").arg(&conf);
    let mut nginx = Proc::spawn("nginx", cmd, dir.path.join("nginx.log"))?;
    let nginx_addr = SocketAddr::from(([127, 0, 0, 1], nginx_port));
    wait_listening(&mut nginx, nginx_addr, Duration::from_secs(10)).await?;

    let idle_port = free_port().map_err(port_err)?;
    let mut cmd = Command::new(&cfg.python);
    cmd.args(["-m", "http.server", "--bind", "127.0.0.1", "--directory"])
        .arg(&dir.path)
        .arg(idle_port.to_string());
    let mut idle = Proc::spawn("python3 http.server", cmd, dir.path.join("python.log"))?;
    wait_listening(
        &mut idle,
        SocketAddr::from(([127, 0, 0, 1], idle_port)),
        Duration::from_secs(20),
    )
    .await?;

    let secs = cfg.duration.as_secs().max(1);
    let mut report = Report {
        paced_rate: cfg.paced_rate,
        payload_size: cfg.payload_size,
        ..Report::default()
    };
    // Warm nginx (and the page cache) up before the first measured run.
    run_wrk(&cfg, &dir.path, nginx_port, nginx.pid(), 1).await?;

    let order = [
        Condition::Baseline,
        Condition::Instrumented,
        Condition::NotSelected,
    ];
    for round in 0..cfg.runs {
        for j in 0..order.len() {
            // Rotating the order keeps any condition from always following the same one.
            let cond = order[(round + j) % order.len()];
            match cond {
                Condition::Baseline => {
                    let r = run_wrk(&cfg, &dir.path, nginx_port, nginx.pid(), secs).await?;
                    eprintln!(
                        "round {}: {}: {:.0} req/s",
                        round + 1,
                        cond.name(),
                        r.rate()
                    );
                    report.baseline.push(r);
                }
                Condition::NotSelected => {
                    let mut sonde = Sonde::start(&cfg, &dir.path, idle_port, "idle").await?;
                    let before = counters(sonde.metrics).await?;
                    let cpu0 = sonde.cpu();
                    let mut r = run_wrk(&cfg, &dir.path, nginx_port, nginx.pid(), secs).await?;
                    let (after, _) = sonde.settled(None).await?;
                    r.sonde_cpu = sonde.cpu().saturating_sub(cpu0);
                    r.spans = after.spans.saturating_sub(before.spans);
                    r.lost = after.lost.saturating_sub(before.lost);
                    sonde.proc.stop(Duration::from_secs(10)).await;
                    eprintln!(
                        "round {}: {}: {:.0} req/s, {} spans",
                        round + 1,
                        cond.name(),
                        r.rate(),
                        r.spans
                    );
                    report.not_selected.push(r);
                }
                Condition::Instrumented => {
                    let mut sonde = Sonde::start(&cfg, &dir.path, nginx_port, "nginx").await?;
                    let before = counters(sonde.metrics).await?;
                    let cpu0 = sonde.cpu();
                    let mut r = run_wrk(&cfg, &dir.path, nginx_port, nginx.pid(), secs).await?;
                    let (after, held) = sonde.settled(Some(nginx_addr)).await?;
                    let cpu1 = sonde.cpu();
                    r.held = held;
                    r.sonde_cpu = cpu1.saturating_sub(cpu0);
                    r.spans = after.spans.saturating_sub(before.spans);
                    r.lost = after.lost.saturating_sub(before.lost);
                    eprintln!(
                        "round {}: {}: {:.0} req/s, {} spans ({} only after one more request) for {} requests, {} lost",
                        round + 1,
                        cond.name(),
                        r.rate(),
                        r.spans,
                        r.held,
                        r.requests,
                        r.lost
                    );
                    report.instrumented.push(r);
                    if cfg.paced_rate > 0.0 {
                        let p = paced_http(
                            nginx_addr,
                            cfg.paced_rate,
                            cfg.paced_connections,
                            cfg.duration,
                        )
                        .await;
                        let (after2, held) = sonde.settled(Some(nginx_addr)).await?;
                        let run = PacedRun {
                            // Less the span of the flushing request that ended the wrk window.
                            spans: after2.spans.saturating_sub(after.spans).saturating_sub(1),
                            held,
                            lost: after2.lost.saturating_sub(after.lost),
                            sonde_cpu: sonde.cpu().saturating_sub(cpu1),
                            result: p,
                        };
                        eprintln!(
                            "round {}: paced {:.0} req/s: {} ok of {} scheduled, {} spans",
                            round + 1,
                            cfg.paced_rate,
                            run.result.ok,
                            run.result.scheduled,
                            run.spans
                        );
                        report.paced.push(run);
                    }
                    if let Ok(rss) = procstat::peak_rss(sonde.proc.pid()) {
                        report.peak_rss = report.peak_rss.max(rss);
                    }
                    sonde.proc.stop(Duration::from_secs(10)).await;
                }
            }
            if nginx.exited().is_some() {
                return Err(nginx.exit_error("exited during the benchmark"));
            }
        }
    }
    nginx.stop(Duration::from_secs(5)).await;
    idle.stop(Duration::from_secs(5)).await;
    let errors: u64 = report
        .baseline
        .iter()
        .chain(&report.instrumented)
        .chain(&report.not_selected)
        .map(|r| r.errors)
        .sum();
    if errors > 0 {
        report.notes.push(format!(
            "wrk reported {errors} socket errors or non-2xx responses in total"
        ));
    }
    Ok(report)
}

fn median(v: &mut [f64]) -> f64 {
    if v.is_empty() {
        return f64::NAN;
    }
    v.sort_by(f64::total_cmp);
    let n = v.len();
    if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    }
}

/// A 90 % percentile-bootstrap interval of the median of `v`: how far the reported median
/// could move with other rounds of the same machine. Fixed seed, so the same runs give the same
/// interval. Coarse with few rounds (the median of 7 values takes few distinct values).
pub fn median_interval(v: &[f64]) -> (f64, f64) {
    const RESAMPLES: usize = 2000;
    if v.len() < 2 {
        let m = median(&mut v.to_vec());
        return (m, m);
    }
    let mut state = 0x5eed_u64;
    let mut sample = vec![0.0; v.len()];
    let mut medians = Vec::with_capacity(RESAMPLES);
    for _ in 0..RESAMPLES {
        for s in sample.iter_mut() {
            state = crate::spans::mix(state);
            *s = v[(state % v.len() as u64) as usize];
        }
        medians.push(median(&mut sample));
    }
    medians.sort_by(f64::total_cmp);
    (medians[RESAMPLES * 5 / 100], medians[RESAMPLES * 95 / 100])
}

fn min_max(v: &[f64]) -> (f64, f64) {
    v.iter()
        .fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), &x| {
            (lo.min(x), hi.max(x))
        })
}

fn verdict(ok: bool) -> &'static str {
    if ok {
        "PASS"
    } else {
        "FAIL"
    }
}

impl Report {
    fn rates(runs: &[WrkRun]) -> Vec<f64> {
        runs.iter().map(WrkRun::rate).collect()
    }

    /// Ratio of the medians over all rounds.
    pub fn instrumented_ratio(&self) -> f64 {
        median(&mut Self::rates(&self.instrumented)) / median(&mut Self::rates(&self.baseline))
    }

    pub fn not_selected_ratio(&self) -> f64 {
        median(&mut Self::rates(&self.not_selected)) / median(&mut Self::rates(&self.baseline))
    }

    /// Median over rounds of (condition / baseline of the same round). Each round measures
    /// every condition within seconds of the others, so this pairs runs that saw the same
    /// machine: on a shared host whose speed drifts by tens of percent from one minute to the
    /// next, it is the steadier estimate of the two.
    pub fn paired_ratio(runs: &[WrkRun], baseline: &[WrkRun]) -> f64 {
        median(&mut Self::paired_ratios(runs, baseline))
    }

    /// Condition / baseline of each round.
    fn paired_ratios(runs: &[WrkRun], baseline: &[WrkRun]) -> Vec<f64> {
        runs.iter()
            .zip(baseline)
            .filter(|(_, b)| b.rate() > 0.0)
            .map(|(r, b)| r.rate() / b.rate())
            .collect()
    }

    pub fn instrumented_paired_ratio(&self) -> f64 {
        Self::paired_ratio(&self.instrumented, &self.baseline)
    }

    pub fn not_selected_paired_ratio(&self) -> f64 {
        Self::paired_ratio(&self.not_selected, &self.baseline)
    }

    fn capture(spans: u64, requests: u64) -> f64 {
        if requests == 0 {
            f64::NAN
        } else {
            spans as f64 / requests as f64
        }
    }

    /// Median over the instrumented runs of spans / requests completed.
    pub fn saturated_capture(&self) -> f64 {
        median(
            &mut self
                .instrumented
                .iter()
                .map(|r| Self::capture(r.spans, r.requests))
                .collect::<Vec<_>>(),
        )
    }

    pub fn paced_capture(&self) -> f64 {
        median(
            &mut self
                .paced
                .iter()
                .map(|r| Self::capture(r.spans, r.result.ok))
                .collect::<Vec<_>>(),
        )
    }

    pub fn markdown(&self) -> String {
        let mut s = String::new();
        let base = median(&mut Self::rates(&self.baseline));
        let _ = writeln!(
            s,
            "| condition | runs | median req/s | min–max req/s | ratio vs baseline | captured % (median, min–max) | spans held until a later request (median) | lost events | Sonde CPU µs/request | Sonde peak RSS MiB | nginx CPU µs/request |"
        );
        let _ = writeln!(s, "|---|---|---|---|---|---|---|---|---|---|---|");
        for (cond, runs) in [
            (Condition::Baseline, &self.baseline),
            (Condition::Instrumented, &self.instrumented),
            (Condition::NotSelected, &self.not_selected),
        ] {
            let mut rates = Self::rates(runs);
            let (lo, hi) = min_max(&rates);
            let med = median(&mut rates);
            let (captured, held, lost, cpu, rss) = match cond {
                Condition::Baseline => (
                    "-".to_string(),
                    "-".to_string(),
                    "-".to_string(),
                    "-".to_string(),
                    "-".to_string(),
                ),
                Condition::Instrumented => {
                    let caps: Vec<f64> = runs
                        .iter()
                        .map(|r| Self::capture(r.spans, r.requests) * 100.0)
                        .collect();
                    let (clo, chi) = min_max(&caps);
                    let mut cpus: Vec<f64> = runs
                        .iter()
                        .filter(|r| r.spans > 0)
                        .map(|r| r.sonde_cpu.as_secs_f64() * 1e6 / r.spans as f64)
                        .collect();
                    (
                        format!("{:.2} ({clo:.2}–{chi:.2})", median(&mut caps.clone())),
                        format!(
                            "{:.0}",
                            median(&mut runs.iter().map(|r| r.held as f64).collect::<Vec<_>>())
                        ),
                        runs.iter().map(|r| r.lost).sum::<u64>().to_string(),
                        format!("{:.2}", median(&mut cpus)),
                        format!("{:.1}", self.peak_rss as f64 / (1 << 20) as f64),
                    )
                }
                Condition::NotSelected => (
                    format!("{} spans", runs.iter().map(|r| r.spans).sum::<u64>()),
                    "-".to_string(),
                    runs.iter().map(|r| r.lost).sum::<u64>().to_string(),
                    format!(
                        "{:.0} ms total",
                        median(
                            &mut runs
                                .iter()
                                .map(|r| r.sonde_cpu.as_secs_f64() * 1e3)
                                .collect::<Vec<_>>()
                        )
                    ),
                    "-".to_string(),
                ),
            };
            let nginx = median(
                &mut runs
                    .iter()
                    .filter(|r| r.requests > 0)
                    .map(|r| r.nginx_cpu.as_secs_f64() * 1e6 / r.requests as f64)
                    .collect::<Vec<_>>(),
            );
            let ratio = if cond == Condition::Baseline {
                "1".to_string()
            } else {
                format!("{:.3}", med / base)
            };
            let _ = writeln!(
                s,
                "| {} | {} | {med:.0} | {lo:.0}–{hi:.0} | {ratio} | {captured} | {held} | {lost} | {cpu} | {rss} | {nginx:.2} |",
                cond.name(),
                runs.len()
            );
        }
        if !self.paced.is_empty() {
            let mut rates: Vec<f64> = self
                .paced
                .iter()
                .map(|p| p.result.achieved_rate())
                .collect();
            let (lo, hi) = min_max(&rates);
            let caps: Vec<f64> = self
                .paced
                .iter()
                .map(|p| Self::capture(p.spans, p.result.ok) * 100.0)
                .collect();
            let (clo, chi) = min_max(&caps);
            let mut cpus: Vec<f64> = self
                .paced
                .iter()
                .filter(|r| r.spans > 0)
                .map(|r| r.sonde_cpu.as_secs_f64() * 1e6 / r.spans as f64)
                .collect();
            let _ = writeln!(
                s,
                "| instrumented, paced {:.0} req/s | {} | {:.0} | {lo:.0}–{hi:.0} | - | {:.2} ({clo:.2}–{chi:.2}) | {:.0} | {} | {:.2} | (same process) | - |",
                self.paced_rate,
                self.paced.len(),
                median(&mut rates),
                median(&mut caps.clone()),
                median(&mut self.paced.iter().map(|p| p.held as f64).collect::<Vec<_>>()),
                self.paced.iter().map(|p| p.lost).sum::<u64>(),
                median(&mut cpus),
            );
        }
        let _ = writeln!(s);
        let (ir, ipr) = (self.instrumented_ratio(), self.instrumented_paired_ratio());
        let (nr, npr) = (self.not_selected_ratio(), self.not_selected_paired_ratio());
        let (ilo, ihi) = median_interval(&Self::paired_ratios(&self.instrumented, &self.baseline));
        let (nlo, nhi) = median_interval(&Self::paired_ratios(&self.not_selected, &self.baseline));
        let sc = self.saturated_capture();
        let _ = writeln!(s, "| check | measured | target | |");
        let _ = writeln!(s, "|---|---|---|---|");
        let mut all = true;
        let mut check = |s: &mut String, name: &str, measured: String, target: String, ok: bool| {
            all &= ok;
            let _ = writeln!(s, "| {name} | {measured} | {target} | {} |", verdict(ok));
        };
        check(
            &mut s,
            "throughput instrumented / baseline (median of per-round ratios [90 % bootstrap interval]; ratio of medians)",
            format!("{ipr:.3} [{ilo:.3}–{ihi:.3}] ({ir:.3})"),
            format!(">= {TARGET_INSTRUMENTED_RATIO}"),
            ipr >= TARGET_INSTRUMENTED_RATIO,
        );
        check(
            &mut s,
            "throughput not selected / baseline (median of per-round ratios [90 % bootstrap interval]; ratio of medians)",
            format!("{npr:.3} [{nlo:.3}–{nhi:.3}] ({nr:.3})"),
            format!(">= {TARGET_NOT_SELECTED_RATIO}"),
            npr >= TARGET_NOT_SELECTED_RATIO,
        );
        check(
            &mut s,
            "capture at saturation",
            format!("{:.2} %", sc * 100.0),
            format!(">= {:.0} %", TARGET_CAPTURE_SATURATED * 100.0),
            sc >= TARGET_CAPTURE_SATURATED,
        );
        if !self.paced.is_empty() {
            // Every paced run must capture every answered request. One span of slack: the
            // request that flushes the previous window (see `Sonde::settled`) lands in this
            // window or the next one depending on timing, which the counters cannot tell apart.
            let worst = self
                .paced
                .iter()
                .map(|p| p.result.ok.saturating_sub(p.spans))
                .max()
                .unwrap_or(0);
            let worst_rate = self
                .paced
                .iter()
                .map(|p| Self::capture(p.spans, p.result.ok))
                .fold(f64::INFINITY, f64::min);
            check(
                &mut s,
                &format!("capture at {:.0} req/s (worst run)", self.paced_rate),
                format!("{:.3} % ({worst} missing)", worst_rate * 100.0),
                "100 % (±1 span)".to_string(),
                worst <= 1,
            );
        }
        let _ = writeln!(s);
        let _ = writeln!(s, "Overall: {}", verdict(all));
        if let Some(p) = self.payload_size {
            let _ = writeln!(s, "\nreceiver payload_size: {p}");
        }
        for p in &self.paced {
            let r = &p.result;
            if r.errors > 0 || r.late > r.scheduled / 100 {
                let _ = writeln!(
                    s,
                    "\npaced run: {} scheduled, {} sent, {} ok, {} errors, {} sent >2 ms late",
                    r.scheduled, r.sent, r.ok, r.errors, r.late
                );
            }
        }
        for n in &self.notes {
            let _ = writeln!(s, "\n{n}");
        }
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paired_ratio_pairs_runs_of_the_same_round() {
        let run = |requests: u64| WrkRun {
            requests,
            seconds: 1.0,
            errors: 0,
            spans: 0,
            held: 0,
            lost: 0,
            sonde_cpu: Duration::ZERO,
            nginx_cpu: Duration::ZERO,
        };
        // The machine slows down between rounds; each round's pair stays at 0.9.
        let base = [run(100), run(200), run(50)];
        let inst = [run(90), run(180), run(45)];
        let r = Report::paired_ratio(&inst, &base);
        assert!((r - 0.9).abs() < 1e-9, "{r}");
        assert!(Report::paired_ratio(&inst, &[]).is_nan());
    }

    #[test]
    fn median_interval_brackets_the_median_and_is_repeatable() {
        let v = [0.70, 0.74, 0.68, 0.72, 0.90, 0.71, 0.69];
        let (lo, hi) = median_interval(&v);
        let m = median(&mut v.to_vec());
        assert!(lo <= m && m <= hi, "{lo} {m} {hi}");
        assert!(lo >= 0.68 && hi <= 0.90);
        assert_eq!(median_interval(&v), (lo, hi));
        assert_eq!(median_interval(&[0.5]), (0.5, 0.5));
        // No spread, no interval.
        assert_eq!(median_interval(&[0.8; 5]), (0.8, 0.8));
    }

    #[test]
    fn wrk_output_is_parsed() {
        let out = "Running 5s test @ http://127.0.0.1:8080/\n  1 threads and 16 connections\n\
                   \x20 Thread Stats   Avg      Stdev     Max   +/- Stdev\n\
                   \x20 123456 requests in 5.00s, 20.1MB read\n\
                   \x20 Socket errors: connect 0, read 2, write 0, timeout 1\n\
                   Requests/sec:  24691.20\nTransfer/sec:      4.02MB\n";
        assert_eq!(parse_wrk(out), Some((123456, 5.0, 3)));
        assert_eq!(
            parse_wrk("  10 requests in 900.00ms, 1KB read\n"),
            Some((10, 0.9, 0))
        );
        assert_eq!(parse_wrk("garbage"), None);
    }

    #[test]
    fn metrics_are_summed_over_label_sets() {
        let text = "# HELP sonde_ebpf_spans_emitted_total Spans.\n# TYPE sonde_ebpf_spans_emitted_total counter\n\
                    sonde_ebpf_spans_emitted_total{receiver=\"ebpf\"} 10\n\
                    sonde_ebpf_spans_emitted_total{receiver=\"ebpf/2\"} 5\n\
                    sonde_ebpf_spans_emitted_total_other 99\n\
                    sonde_ebpf_selected_processes 2\n";
        assert_eq!(
            sum_metric(text, "sonde_ebpf_spans_emitted_total"),
            Some(15.0)
        );
        assert_eq!(sum_metric(text, "sonde_ebpf_selected_processes"), Some(2.0));
        assert_eq!(sum_metric(text, "sonde_ebpf_events_lost_total"), None);
    }

    #[test]
    fn responses_are_framed_by_content_length() {
        let one = b"HTTP/1.1 200 OK\r\nContent-Length: 6\r\n\r\nhello!";
        let mut two = one.to_vec();
        two.extend_from_slice(
            b"HTTP/1.1 404 Not Found\r\ncontent-length: 0\r\nConnection: close\r\n\r\n",
        );
        let f = |status, len, close| Some(Framed { status, len, close });
        assert_eq!(parse_response(one).unwrap(), f(200, one.len(), false));
        assert_eq!(parse_response(&two).unwrap(), f(200, one.len(), false));
        assert_eq!(
            parse_response(&two[one.len()..]).unwrap(),
            f(404, two.len() - one.len(), true)
        );
        assert_eq!(parse_response(&one[..one.len() - 1]).unwrap(), None);
        assert!(parse_response(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n").is_err());
    }

    #[test]
    fn sonde_config_is_valid_yaml_with_the_port() {
        let m: SocketAddr = "127.0.0.1:9999".parse().unwrap();
        let v: serde_yaml::Value = serde_yaml::from_str(&sonde_config(8080, m, Some(128))).unwrap();
        let ebpf = &v["receivers"]["ebpf"];
        assert_eq!(ebpf["payload_size"].as_u64(), Some(128));
        assert_eq!(
            ebpf["discovery"]["instrument"][0]["open_ports"].as_u64(),
            Some(8080)
        );
        assert_eq!(
            v["service"]["telemetry"]["metrics"]["address"].as_str(),
            Some("127.0.0.1:9999")
        );
        let v: serde_yaml::Value = serde_yaml::from_str(&sonde_config(8080, m, None)).unwrap();
        assert!(v["receivers"]["ebpf"]["payload_size"].is_null());
    }

    #[tokio::test]
    async fn paced_generator_follows_the_schedule() {
        // A tiny HTTP server answering every request on each connection.
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move {
            while let Ok((mut s, _)) = listener.accept().await {
                tokio::spawn(async move {
                    let mut buf = Vec::new();
                    let mut chunk = [0u8; 1024];
                    loop {
                        let Ok(n) = s.read(&mut chunk).await else {
                            return;
                        };
                        if n == 0 {
                            return;
                        }
                        buf.extend_from_slice(&chunk[..n]);
                        while let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                            buf.drain(..i + 4);
                            if s.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
                                .await
                                .is_err()
                            {
                                return;
                            }
                        }
                    }
                });
            }
        });
        let r = paced_http(addr, 2000.0, 4, Duration::from_millis(500)).await;
        assert_eq!(r.scheduled, 1000);
        assert_eq!(r.ok, 1000);
        assert_eq!(r.errors, 0);
        // The last request is due at 0.5 s; the run must not finish much earlier.
        assert!(r.elapsed >= Duration::from_millis(490), "{:?}", r.elapsed);
    }
}
