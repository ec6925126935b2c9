//! The comparison: Sonde and rotel doing the same job (OTLP/gRPC receiver -> batch -> OTLP/gRPC
//! exporter to the counting sink), alternated run by run so that both see the same machine
//! noise, with and without gzip. The load generator and the sink live in this process; only
//! the collector's own CPU time and memory are measured.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::collector::{ChildGuard, CollectorError, Compression, Kind, LaunchSpec};
use crate::loadgen::{self, LoadConfig, LoadReport};
use crate::procstat;
use crate::sink::{Sink, WaitOutcome};
use crate::spans::RequestSet;

/// Targets Sonde is held to, as ratios of its median to rotel's.
pub const CPU_RATIO_TARGET_NONE: f64 = 0.5;
pub const CPU_RATIO_TARGET_GZIP: f64 = 0.8;
pub const RSS_RATIO_TARGET: f64 = 1.0;

fn cpu_target(c: Compression) -> Option<f64> {
    match c {
        Compression::None => Some(CPU_RATIO_TARGET_NONE),
        Compression::Gzip => Some(CPU_RATIO_TARGET_GZIP),
        Compression::GzipOut => None,
    }
}

#[derive(Debug, thiserror::Error)]
pub enum SetupError {
    #[error(transparent)]
    Collector(#[from] CollectorError),
    #[error("cannot start the sink: {0}")]
    Sink(std::io::Error),
    #[error("cannot create {0}: {1}")]
    Dir(PathBuf, std::io::Error),
    #[error(transparent)]
    Load(#[from] loadgen::LoadError),
    #[error(transparent)]
    Proc(#[from] procstat::ProcError),
    #[error("{kind} ({compression}) warm-up: {problem}; log {log}")]
    Warmup {
        kind: Kind,
        compression: Compression,
        problem: String,
        log: PathBuf,
    },
}

#[derive(Debug, Clone)]
pub struct RunConfig {
    /// Collector binaries, in the order the first round runs them.
    pub collectors: Vec<(Kind, PathBuf)>,
    pub compressions: Vec<Compression>,
    pub runs: usize,
    pub spans: u64,
    pub warmup_spans: u64,
    pub spans_per_request: usize,
    pub concurrency: usize,
    pub connections: usize,
    /// Spans per second for the measured load; `None` is as fast as the collector takes them.
    pub rate: Option<f64>,
    /// A run ends when no span reached the sink for this long.
    pub stall_timeout: Duration,
    pub keep_logs: bool,
}

/// One measured run of one collector.
#[derive(Debug, Clone)]
pub struct RunResult {
    pub kind: Kind,
    pub compression: Compression,
    pub round: usize,
    pub load: LoadReport,
    pub delivered: u64,
    pub cpu: Duration,
    /// CPU time of this process (load generator + sink) over the same interval: what the
    /// collector competed with for the two cores.
    pub harness_cpu: Duration,
    /// From the first request sent to the last span arriving at the sink.
    pub wall: Duration,
    pub peak_rss: u64,
    /// Bytes the collector sent to the sink (gRPC message bodies, compressed if it compressed).
    pub wire_bytes: u64,
    /// Messages the collector sent to the sink, and how many of them were gzip-compressed.
    pub export_frames: u64,
    pub export_compressed_frames: u64,
    /// What makes the run incomplete: spans not acknowledged or not delivered.
    pub problems: Vec<String>,
    /// What the reader should know but does not invalidate the count, e.g. a collector that
    /// compressed its exports when told not to.
    pub notes: Vec<String>,
}

impl RunResult {
    pub fn cpu_us_per_span(&self) -> f64 {
        self.cpu.as_secs_f64() * 1e6 / self.delivered.max(1) as f64
    }

    pub fn wire_bytes_per_span(&self) -> f64 {
        self.wire_bytes as f64 / self.delivered.max(1) as f64
    }

    pub fn spans_per_second(&self) -> f64 {
        self.delivered as f64 / self.wall.as_secs_f64().max(1e-9)
    }

    /// Every requested span was acknowledged and arrived exactly once.
    pub fn complete(&self) -> bool {
        self.problems.is_empty()
    }
}

fn delivery_problems(load: &LoadReport, delivered: u64, wait: WaitOutcome) -> Vec<String> {
    let mut p = Vec::new();
    if load.acked_spans != load.requested_spans {
        p.push(format!(
            "{} of {} spans acknowledged ({} failed, {} unsent{})",
            load.acked_spans,
            load.requested_spans,
            load.failed_spans,
            load.unsent_spans,
            load.first_error
                .as_ref()
                .map(|e| format!("; first error: {e}"))
                .unwrap_or_default()
        ));
    }
    if delivered != load.requested_spans {
        p.push(format!(
            "{delivered} of {} spans delivered to the sink",
            load.requested_spans
        ));
    }
    match wait {
        WaitOutcome::Reached => {}
        WaitOutcome::Stalled => p.push("delivery stalled".to_owned()),
        WaitOutcome::Deadline => p.push("delivery deadline passed".to_owned()),
    }
    p
}

fn mib(bytes: u64) -> f64 {
    bytes as f64 / (1024.0 * 1024.0)
}

pub fn median(values: &mut [f64]) -> Option<f64> {
    if values.is_empty() {
        return None;
    }
    values.sort_by(f64::total_cmp);
    let n = values.len();
    Some(if n % 2 == 1 {
        values[n / 2]
    } else {
        (values[n / 2 - 1] + values[n / 2]) / 2.0
    })
}

struct Bench {
    cfg: RunConfig,
    dir: PathBuf,
    sets: BTreeMap<Compression, (Arc<RequestSet>, Arc<RequestSet>)>,
}

impl Bench {
    fn load_config(
        &self,
        endpoint: SocketAddr,
        max_duration: Duration,
        rate: Option<f64>,
    ) -> LoadConfig {
        LoadConfig {
            endpoint: endpoint.to_string(),
            concurrency: self.cfg.concurrency,
            connections: self.cfg.connections,
            rate,
            request_timeout: Duration::from_secs(30),
            max_duration,
        }
    }

    async fn run_once(
        &self,
        kind: Kind,
        binary: &Path,
        compression: Compression,
        round: usize,
    ) -> Result<RunResult, SetupError> {
        let (warmup, main) = self.sets[&compression].clone();
        let dir = self.dir.join(format!("r{round}-{kind}-{compression}"));
        std::fs::create_dir_all(&dir).map_err(|e| SetupError::Dir(dir.clone(), e))?;
        let sink = Sink::start(
            "127.0.0.1:0"
                .parse()
                .map_err(|_| SetupError::Sink(std::io::Error::other("bad sink address")))?,
        )
        .await
        .map_err(SetupError::Sink)?;
        let listen: SocketAddr = SocketAddr::from(([127, 0, 0, 1], crate::collector::free_port()?));
        let spec = LaunchSpec {
            kind,
            binary: binary.to_path_buf(),
            listen,
            sink: sink.local_addr(),
            compression,
            dir,
        };
        // Started from the runner's main thread (see ChildGuard and PR_SET_PDEATHSIG).
        let mut guard = spec.start(Duration::from_secs(20))?;
        let result = self
            .measure(&spec, &mut guard, &sink, warmup, main, round)
            .await;
        let status = guard.stop(Duration::from_secs(5));
        let _ = sink.shutdown().await;
        let mut result = result?;
        if let Some(status) = status.filter(|s| s.code().is_some_and(|c| c != 0)) {
            result
                .notes
                .push(format!("{kind} exited with {status} when stopped"));
        }
        Ok(result)
    }

    async fn measure(
        &self,
        spec: &LaunchSpec,
        guard: &mut ChildGuard,
        sink: &Sink,
        warmup: Arc<RequestSet>,
        main: Arc<RequestSet>,
        round: usize,
    ) -> Result<RunResult, SetupError> {
        let pid = guard.pid().ok_or_else(|| {
            CollectorError::Spawn(spec.binary.clone(), std::io::Error::other("no pid"))
        })?;
        let warmup_cfg = self.load_config(spec.listen, Duration::from_secs(60), None);
        let channels = loadgen::connect(&warmup_cfg).await?;
        let warm = loadgen::run(&warmup_cfg, channels.clone(), warmup.clone()).await;
        let warm_wait = sink
            .wait_for(
                warm.acked_spans,
                self.cfg.stall_timeout,
                Instant::now() + Duration::from_secs(60),
            )
            .await;
        let warm_problems = delivery_problems(&warm, sink.stats().spans(), warm_wait);
        if !warm_problems.is_empty() {
            return Err(SetupError::Warmup {
                kind: spec.kind,
                compression: spec.compression,
                problem: warm_problems.join("; "),
                log: spec.log_path(),
            });
        }
        let base = sink.stats().spans();
        let base_frames = sink.stats().frames();
        let base_compressed = sink.stats().compressed_frames();
        let base_wire = sink.stats().wire_bytes();

        // Generous: a collector ten times slower than rotel still finishes.
        let paced_secs = self.cfg.rate.map_or(0.0, |r| main.total_spans() as f64 / r);
        let max_duration = Duration::from_secs(120 + main.total_spans() / 20_000)
            + Duration::from_secs_f64(paced_secs.min(86_400.0));
        let cfg = self.load_config(spec.listen, max_duration, self.cfg.rate);
        let cpu_before = procstat::cpu_time(pid)?;
        let harness_before = procstat::cpu_time(std::process::id())?;
        let start = Instant::now();
        let load = loadgen::run(&cfg, channels, main.clone()).await;
        let wait = sink
            .wait_for(
                base + load.acked_spans,
                self.cfg.stall_timeout,
                start + max_duration,
            )
            .await;
        let last = sink.stats().last_arrival();
        let mut problems = Vec::new();
        let mut notes = Vec::new();
        if let Some(status) = guard.try_wait() {
            problems.push(format!("{} exited during the run ({status})", spec.kind));
        }
        let harness_cpu = procstat::cpu_time(std::process::id())?.saturating_sub(harness_before);
        let (cpu, peak_rss) = match (procstat::cpu_time(pid), procstat::peak_rss(pid)) {
            (Ok(after), Ok(rss)) => (after.saturating_sub(cpu_before), rss),
            _ => (Duration::ZERO, 0),
        };
        let delivered = sink.stats().spans().saturating_sub(base);
        problems.extend(delivery_problems(&load, delivered, wait));
        let frames = sink.stats().frames() - base_frames;
        let compressed = sink.stats().compressed_frames() - base_compressed;
        // A collector that ignores the compression setting is not doing the same job.
        if spec.compression.outbound_gzip() && compressed < frames {
            notes.push(format!(
                "only {compressed} of {frames} messages to the sink were compressed"
            ));
        } else if !spec.compression.outbound_gzip() && compressed > 0 {
            notes.push(format!(
                "{compressed} of {frames} messages to the sink were compressed"
            ));
        }
        if sink.stats().rejected() > 0 {
            problems.push(format!(
                "sink rejected {} requests",
                sink.stats().rejected()
            ));
        }
        Ok(RunResult {
            kind: spec.kind,
            compression: spec.compression,
            round,
            load,
            delivered,
            cpu,
            harness_cpu,
            wall: last.saturating_duration_since(start),
            peak_rss,
            wire_bytes: sink.stats().wire_bytes() - base_wire,
            export_frames: frames,
            export_compressed_frames: compressed,
            problems,
            notes,
        })
    }
}

/// The temp directory for configs and collector logs: removed when dropped (also when the run
/// is interrupted) unless it holds something to look at.
struct RunDir {
    path: PathBuf,
    keep: bool,
}

impl RunDir {
    fn create(keep: bool) -> Result<RunDir, SetupError> {
        let path = std::env::temp_dir().join(format!(
            "sonde-bench-{}-{}",
            std::process::id(),
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_millis())
                .unwrap_or(0)
        ));
        std::fs::create_dir_all(&path).map_err(|e| SetupError::Dir(path.clone(), e))?;
        Ok(RunDir { path, keep })
    }
}

impl Drop for RunDir {
    fn drop(&mut self) {
        if self.keep {
            eprintln!("configs and logs kept in {}", self.path.display());
        } else {
            let _ = std::fs::remove_dir_all(&self.path);
        }
    }
}

fn loadavg() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_else(|_| "?".to_owned())
}

/// Runs the whole matrix and returns every run's result. Progress goes to stderr.
pub async fn run(cfg: RunConfig) -> Result<Report, SetupError> {
    let mut run_dir = RunDir::create(cfg.keep_logs)?;
    let dir = run_dir.path.clone();
    let mut sets = BTreeMap::new();
    for &c in &cfg.compressions {
        let gzip = c.inbound_gzip();
        let warm = RequestSet::build(cfg.warmup_spans, cfg.spans_per_request, 64, gzip);
        let main = RequestSet::build(cfg.spans, cfg.spans_per_request, 512, gzip);
        eprintln!(
            "requests ({c}): {} of {} spans, {:.0} protobuf bytes/span",
            main.requests(),
            cfg.spans_per_request,
            main.encoded_bytes_per_span
        );
        sets.insert(c, (Arc::new(warm), Arc::new(main)));
    }
    let bench = Bench {
        cfg: cfg.clone(),
        dir: dir.clone(),
        sets,
    };
    let load_before = loadavg();
    let mut results = Vec::new();
    for round in 0..cfg.runs {
        for &compression in &cfg.compressions {
            let mut order = cfg.collectors.clone();
            if round % 2 == 1 {
                order.reverse();
            }
            for (kind, binary) in &order {
                let r = bench.run_once(*kind, binary, compression, round).await;
                let r = match r {
                    Ok(r) => r,
                    Err(e) => {
                        run_dir.keep = true;
                        return Err(e);
                    }
                };
                eprintln!(
                    "[round {}/{}] {kind:5} {compression:4}: delivered {}/{} in {:.2}s (acked in {:.2}s), {:.2} µs CPU/span, {:.0} spans/s, peak RSS {:.1} MiB, {:.0} B/span to sink, harness {:.2} µs CPU/span{}{}",
                    round + 1,
                    cfg.runs,
                    r.delivered,
                    r.load.requested_spans,
                    r.wall.as_secs_f64(),
                    r.load.elapsed.as_secs_f64(),
                    r.cpu_us_per_span(),
                    r.spans_per_second(),
                    mib(r.peak_rss),
                    r.wire_bytes_per_span(),
                    r.harness_cpu.as_secs_f64() * 1e6 / r.delivered.max(1) as f64,
                    if r.complete() {
                        String::new()
                    } else {
                        format!("  INCOMPLETE: {}", r.problems.join("; "))
                    },
                    if r.notes.is_empty() {
                        String::new()
                    } else {
                        format!("  NOTE: {}", r.notes.join("; "))
                    }
                );
                results.push(r);
            }
        }
    }
    if !results.iter().all(RunResult::complete) {
        run_dir.keep = true;
    }
    drop(run_dir);
    Ok(Report {
        cfg,
        results,
        load_before,
        load_after: loadavg(),
    })
}

/// Everything measured, and its rendering as markdown.
pub struct Report {
    pub cfg: RunConfig,
    pub results: Vec<RunResult>,
    pub load_before: String,
    pub load_after: String,
}

/// Medians of one (collector, compression) cell.
#[derive(Debug, Clone, Copy)]
pub struct Summary {
    pub runs: usize,
    pub complete: usize,
    pub cpu_us: f64,
    pub cpu_us_min: f64,
    pub cpu_us_max: f64,
    pub spans_per_s: f64,
    pub rss_mib: f64,
    pub wire_bytes_per_span: f64,
    /// Share of the messages to the sink that were gzip-compressed, over all runs.
    pub export_gzip_share: f64,
}

fn pass(ok: bool) -> &'static str {
    if ok {
        "PASS"
    } else {
        "FAIL"
    }
}

impl Report {
    pub fn summary(&self, kind: Kind, compression: Compression) -> Option<Summary> {
        let runs: Vec<&RunResult> = self
            .results
            .iter()
            .filter(|r| r.kind == kind && r.compression == compression)
            .collect();
        let mut cpu: Vec<f64> = runs.iter().map(|r| r.cpu_us_per_span()).collect();
        let mut rate: Vec<f64> = runs.iter().map(|r| r.spans_per_second()).collect();
        let mut rss: Vec<f64> = runs.iter().map(|r| mib(r.peak_rss)).collect();
        let mut wire: Vec<f64> = runs.iter().map(|r| r.wire_bytes_per_span()).collect();
        Some(Summary {
            runs: runs.len(),
            complete: runs.iter().filter(|r| r.complete()).count(),
            cpu_us: median(&mut cpu)?,
            cpu_us_min: cpu.first().copied()?,
            cpu_us_max: cpu.last().copied()?,
            spans_per_s: median(&mut rate)?,
            rss_mib: median(&mut rss)?,
            wire_bytes_per_span: median(&mut wire)?,
            export_gzip_share: runs.iter().map(|r| r.export_compressed_frames).sum::<u64>() as f64
                / runs.iter().map(|r| r.export_frames).sum::<u64>().max(1) as f64,
        })
    }

    /// Incomplete runs one by one, and notes once per (collector, compression).
    fn footnotes(&self, out: &mut String) {
        let incomplete: Vec<&RunResult> = self.results.iter().filter(|r| !r.complete()).collect();
        if !incomplete.is_empty() {
            out.push_str("\nIncomplete runs:\n");
            for r in incomplete {
                let _ = writeln!(
                    out,
                    "- round {} {} {}: {}",
                    r.round + 1,
                    r.kind,
                    r.compression,
                    r.problems.join("; ")
                );
            }
        }
        let mut notes: BTreeMap<(Kind, Compression), (usize, &str)> = BTreeMap::new();
        for r in &self.results {
            if let Some(first) = r.notes.first() {
                notes.entry((r.kind, r.compression)).or_insert((0, first)).0 += 1;
            }
        }
        if !notes.is_empty() {
            out.push_str("\nNotes:\n");
            for ((kind, c), (runs, note)) in notes {
                let _ = writeln!(out, "- {kind} {c}, {runs} run(s): {note}");
            }
        }
    }

    pub fn markdown(&self) -> String {
        let mut out = String::new();
        let cfg = &self.cfg;
        let _ = writeln!(
            out,
            "OTLP/gRPC -> batch ({} spans / {} ms) -> OTLP/gRPC, {} spans per run {} ({} per request, {} in flight over {} connections), {} runs per cell, median shown; load average before {} / after {}.\n",
            crate::collector::BATCH_SIZE,
            crate::collector::BATCH_TIMEOUT_MS,
            cfg.spans,
            cfg.rate.map_or("at full speed".to_owned(), |r| format!("paced at {r:.0} spans/s")),
            cfg.spans_per_request,
            cfg.concurrency,
            cfg.connections,
            cfg.runs,
            self.load_before,
            self.load_after
        );
        out.push_str("| collector | compression | runs complete | CPU µs/span | CPU µs/span min–max | spans/s delivered | peak RSS MiB | bytes/span to sink | export gzip |\n");
        out.push_str("|---|---|---|---|---|---|---|---|---|\n");
        for &c in &cfg.compressions {
            for (kind, _) in &cfg.collectors {
                if let Some(s) = self.summary(*kind, c) {
                    let _ = writeln!(
                        out,
                        "| {kind} | {c} | {}/{} | {:.2} | {:.2}–{:.2} | {:.0} | {:.1} | {:.0} | {} |",
                        s.complete,
                        s.runs,
                        s.cpu_us,
                        s.cpu_us_min,
                        s.cpu_us_max,
                        s.spans_per_s,
                        s.rss_mib,
                        s.wire_bytes_per_span,
                        match s.export_gzip_share {
                            x if x >= 1.0 => "yes".to_owned(),
                            x if x <= 0.0 => "no".to_owned(),
                            x => format!("{:.0}%", x * 100.0),
                        }
                    );
                }
            }
        }
        out.push('\n');
        let both = [Kind::Sonde, Kind::Rotel]
            .iter()
            .all(|k| cfg.collectors.iter().any(|(c, _)| c == k));
        if !both {
            out.push_str("Only one collector was measured: no Sonde/rotel ratios.\n");
            self.footnotes(&mut out);
            return out;
        }
        out.push_str("| compression | CPU/span sonde/rotel | target | | peak RSS sonde/rotel | target | | every span delivered |\n");
        out.push_str("|---|---|---|---|---|---|---|---|\n");
        let mut overall = true;
        for &c in &cfg.compressions {
            let (Some(s), Some(r)) = (self.summary(Kind::Sonde, c), self.summary(Kind::Rotel, c))
            else {
                continue;
            };
            let cpu_ratio = s.cpu_us / r.cpu_us;
            let rss_ratio = s.rss_mib / r.rss_mib;
            let delivered = s.complete == s.runs && r.complete == r.runs;
            let rss_ok = rss_ratio <= RSS_RATIO_TARGET;
            // gzip-out has no target of its own: it is there to compare equal work with
            // rotel's `none`, which compresses its exports anyway.
            let (target, cpu_verdict) = match cpu_target(c) {
                Some(t) => {
                    let ok = cpu_ratio <= t;
                    overall &= ok && rss_ok && delivered;
                    (format!("<= {t}"), pass(ok))
                }
                None => ("-".to_owned(), "info"),
            };
            let _ = writeln!(
                out,
                "| {c} | {cpu_ratio:.2} | {target} | {cpu_verdict} | {rss_ratio:.2} | <= {RSS_RATIO_TARGET} | {} | {} |",
                pass(rss_ok),
                pass(delivered)
            );
        }
        let _ = writeln!(out, "\nOverall: {}", pass(overall));
        self.footnotes(&mut out);
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn medians() {
        assert_eq!(median(&mut []), None);
        assert_eq!(median(&mut [3.0, 1.0, 2.0]), Some(2.0));
        assert_eq!(median(&mut [4.0, 1.0, 3.0, 2.0]), Some(2.5));
    }

    fn result(
        kind: Kind,
        compression: Compression,
        cpu_ms: u64,
        rss_mib: u64,
        delivered: u64,
    ) -> RunResult {
        let load = LoadReport {
            requested_spans: 1000,
            acked_spans: 1000,
            ..LoadReport::default()
        };
        let problems = delivery_problems(&load, delivered, WaitOutcome::Reached);
        RunResult {
            kind,
            compression,
            round: 0,
            load,
            delivered,
            cpu: Duration::from_millis(cpu_ms),
            harness_cpu: Duration::ZERO,
            wall: Duration::from_millis(100),
            peak_rss: rss_mib << 20,
            wire_bytes: delivered * 300,
            export_frames: 1,
            export_compressed_frames: u64::from(compression.outbound_gzip()),
            problems,
            notes: Vec::new(),
        }
    }

    fn report(results: Vec<RunResult>, collectors: Vec<Kind>) -> Report {
        Report {
            cfg: RunConfig {
                collectors: collectors
                    .into_iter()
                    .map(|k| (k, PathBuf::new()))
                    .collect(),
                compressions: vec![Compression::None, Compression::Gzip, Compression::GzipOut],
                runs: 1,
                spans: 1000,
                warmup_spans: 0,
                spans_per_request: 100,
                concurrency: 1,
                connections: 1,
                rate: None,
                stall_timeout: Duration::from_secs(1),
                keep_logs: false,
            },
            results,
            load_before: "0".into(),
            load_after: "0".into(),
        }
    }

    #[test]
    fn ratios_and_verdicts() {
        let rep = report(
            vec![
                result(Kind::Sonde, Compression::None, 2, 30, 1000),
                result(Kind::Rotel, Compression::None, 4, 60, 1000),
                result(Kind::Sonde, Compression::Gzip, 4, 70, 1000),
                result(Kind::Rotel, Compression::Gzip, 4, 60, 999),
                result(Kind::Sonde, Compression::GzipOut, 3, 30, 1000),
                result(Kind::Rotel, Compression::GzipOut, 4, 60, 1000),
            ],
            vec![Kind::Sonde, Kind::Rotel],
        );
        let s = rep.summary(Kind::Sonde, Compression::None).unwrap();
        assert!((s.cpu_us - 2.0).abs() < 1e-9, "{}", s.cpu_us);
        assert!((s.spans_per_s - 10_000.0).abs() < 1e-6);
        let md = rep.markdown();
        assert!(
            md.contains("| none | 0.50 | <= 0.5 | PASS | 0.50 | <= 1 | PASS | PASS |"),
            "{md}"
        );
        assert!(
            md.contains("| gzip | 1.00 | <= 0.8 | FAIL | 1.17 | <= 1 | FAIL | FAIL |"),
            "{md}"
        );
        assert!(
            md.contains("| gzip-out | 0.75 | - | info | 0.50 | <= 1 | PASS | PASS |"),
            "{md}"
        );
        assert!(md.contains("Overall: FAIL"));
        assert!(md.contains("999 of 1000 spans delivered"));
        assert!(
            md.contains("| rotel | gzip | 0/1 | 4.00 | 4.00–4.00 | 9990 | 60.0 | 300 | yes |"),
            "{md}"
        );
    }

    #[test]
    fn one_collector_gives_no_ratios() {
        let mut r = result(Kind::Rotel, Compression::None, 4, 60, 1000);
        r.export_compressed_frames = 1;
        r.notes
            .push("1 of 1 messages to the sink were compressed".into());
        let rep = report(vec![r], vec![Kind::Rotel]);
        let md = rep.markdown();
        assert!(md.contains("| 300 | yes |"), "{md}");
        assert!(
            md.contains("- rotel none, 1 run(s): 1 of 1 messages to the sink were compressed"),
            "{md}"
        );
        assert!(md.contains("| rotel | none | 1/1 | 4.00 |"), "{md}");
        assert!(md.contains("no Sonde/rotel ratios"));
    }
}
