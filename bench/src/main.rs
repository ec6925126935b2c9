use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context};
use bench::collector::{Compression, Kind};
use bench::loadgen::{self, LoadConfig};
use bench::runner::{self, RunConfig};
use bench::sink::{self, Sink};
use bench::spans::RequestSet;
use clap::{Parser, Subcommand, ValueEnum};

#[derive(Parser)]
#[command(
    name = "bench",
    about = "OTLP/gRPC load generator, span-counting sink and Sonde-vs-rotel runner"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Send trace export requests to an OTLP/gRPC endpoint and report what was acknowledged.
    /// Exits 0 when every span was acknowledged, 2 when some were not, 1 on a setup error.
    Loadgen(LoadgenArgs),
    /// Receive OTLP/gRPC traces and count the spans.
    Sink(SinkArgs),
    /// Measure Sonde and rotel on the same job, alternating, and print a markdown table.
    Run(RunArgs),
    /// Measure what the `ebpf` receiver costs nginx under wrk (baseline, instrumented, not
    /// selected, alternating) and how many requests it captures; needs root. Exits non-zero
    /// only on setup errors.
    Ebpf(EbpfArgs),
}

#[derive(clap::Args)]
struct EbpfArgs {
    /// Sonde binary [default: `sonde` next to this binary, else target/release/sonde].
    #[arg(long)]
    sonde: Option<PathBuf>,
    #[arg(long, default_value = "nginx")]
    nginx: PathBuf,
    #[arg(long, default_value = "wrk")]
    wrk: PathBuf,
    /// Python for the idle `http.server` the not-selected condition instruments instead.
    #[arg(long, default_value = "python3")]
    python: PathBuf,
    /// Rounds; each measures every condition once.
    #[arg(long, default_value_t = 5)]
    runs: usize,
    /// Seconds of each wrk run and each paced run.
    #[arg(long, default_value_t = 5)]
    duration: u64,
    #[arg(long, default_value_t = 1)]
    wrk_threads: u32,
    #[arg(long, default_value_t = 16)]
    wrk_connections: u32,
    /// Requests per second of the paced run with nginx instrumented (0: no paced run).
    #[arg(long, default_value_t = 20_000.0)]
    rate: f64,
    /// Keep-alive connections of the paced run.
    #[arg(long, default_value_t = 16)]
    paced_connections: usize,
    /// The receiver's `payload_size` [default: Sonde's].
    #[arg(long)]
    payload_size: Option<u32>,
    /// Keep the temp directory with configs and logs.
    #[arg(long)]
    keep_logs: bool,
}

#[derive(clap::Args)]
struct LoadgenArgs {
    /// Target `host:port` (or `http://host:port`).
    #[arg(long, default_value = "127.0.0.1:4317")]
    endpoint: String,
    /// Total spans to send.
    #[arg(long, default_value_t = 1_000_000)]
    spans: u64,
    #[arg(long, default_value_t = 100)]
    spans_per_request: usize,
    /// Requests in flight at once.
    #[arg(long, default_value_t = 16)]
    concurrency: usize,
    /// HTTP/2 connections to spread the requests over.
    #[arg(long, default_value_t = 4)]
    connections: usize,
    /// Spans per second; full speed when not given.
    #[arg(long)]
    rate: Option<f64>,
    /// gzip every request (pre-compressed, `grpc-encoding: gzip`).
    #[arg(long)]
    gzip: bool,
    /// Seconds before a request without an answer counts as failed.
    #[arg(long, default_value_t = 30)]
    timeout: u64,
    /// Stop sending after this many seconds.
    #[arg(long, default_value_t = 3600)]
    max_duration: u64,
}

#[derive(clap::Args)]
struct SinkArgs {
    /// Address to receive OTLP/gRPC on.
    #[arg(long, default_value = "127.0.0.1:4317")]
    listen: SocketAddr,
    /// Optional TCP port that answers every connection with one line of counters:
    /// `spans=N requests=N frames=N compressed_frames=N wire_bytes=N rejected=N idle_ms=N`.
    #[arg(long)]
    control: Option<SocketAddr>,
    /// Print the counters every this many seconds when they changed (0: only at exit).
    #[arg(long, default_value_t = 1)]
    report_every: u64,
}

#[derive(Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Which {
    Sonde,
    Rotel,
}

#[derive(Clone, Copy, PartialEq, Eq, ValueEnum)]
enum CompressionArg {
    /// Nothing compressed.
    None,
    /// Generator -> collector and collector -> sink gzip-compressed.
    Gzip,
    /// Only collector -> sink compressed (what rotel does when told `none`).
    GzipOut,
}

#[derive(clap::Args)]
struct RunArgs {
    /// Sonde binary [default: `sonde` next to this binary, else target/release/sonde].
    #[arg(long)]
    sonde: Option<PathBuf>,
    /// rotel-agent binary [default: the one of the `rotel` Python package].
    #[arg(long)]
    rotel: Option<PathBuf>,
    /// Measure only these collectors (e.g. `--only rotel` while Sonde is not built).
    #[arg(long, value_delimiter = ',')]
    only: Vec<Which>,
    /// Compression modes to measure: none, gzip, gzip-out (exports only).
    #[arg(long, value_delimiter = ',', default_value = "none,gzip")]
    compression: Vec<CompressionArg>,
    /// Runs per (collector, compression).
    #[arg(long, default_value_t = 5)]
    runs: usize,
    /// Spans per measured run.
    #[arg(long, default_value_t = 2_000_000)]
    spans: u64,
    /// Spans sent (and delivered) before each measured run, not counted.
    #[arg(long, default_value_t = 50_000)]
    warmup_spans: u64,
    #[arg(long, default_value_t = 100)]
    spans_per_request: usize,
    /// Requests in flight at once.
    #[arg(long, default_value_t = 16)]
    concurrency: usize,
    /// HTTP/2 connections from the generator to the collector.
    #[arg(long, default_value_t = 4)]
    connections: usize,
    /// Spans per second for the measured load; full speed when not given.
    #[arg(long)]
    rate: Option<f64>,
    /// Seconds without any span reaching the sink after which a run is ended as stalled.
    #[arg(long, default_value_t = 20)]
    stall_timeout: u64,
    /// Keep the temp directory with configs and collector logs.
    #[arg(long)]
    keep_logs: bool,
}

/// Ctrl-C or SIGTERM.
async fn interrupted() {
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term => {}
    }
}

fn default_sonde() -> PathBuf {
    let beside = std::env::current_exe()
        .ok()
        .and_then(|p| p.parent().map(|d| d.join("sonde")))
        .filter(|p| p.is_file());
    beside.unwrap_or_else(|| {
        PathBuf::from(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../target/release/sonde"
        ))
    })
}

fn default_rotel() -> anyhow::Result<PathBuf> {
    let out = std::process::Command::new("python3")
        .args([
            "-c",
            "import rotel,os;print(os.path.dirname(rotel.__file__))",
        ])
        .output()
        .context("running python3 to locate the rotel package (or pass --rotel)")?;
    if !out.status.success() {
        bail!(
            "the rotel Python package is not installed (`pip install rotel`, or pass --rotel): {}",
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(PathBuf::from(String::from_utf8_lossy(&out.stdout).trim()).join("rotel-agent"))
}

async fn loadgen_cmd(a: LoadgenArgs) -> anyhow::Result<ExitCode> {
    let set = RequestSet::build(a.spans, a.spans_per_request, 512, a.gzip);
    eprintln!(
        "{} requests of up to {} spans, {:.0} protobuf bytes/span{}",
        set.requests(),
        a.spans_per_request,
        set.encoded_bytes_per_span,
        if a.gzip { ", gzip" } else { "" }
    );
    let cfg = LoadConfig {
        endpoint: a.endpoint,
        concurrency: a.concurrency,
        connections: a.connections,
        rate: a.rate,
        request_timeout: Duration::from_secs(a.timeout),
        max_duration: Duration::from_secs(a.max_duration),
    };
    let channels = loadgen::connect(&cfg).await?;
    let r = loadgen::run(&cfg, channels, Arc::new(set)).await;
    println!(
        "sent {} spans in {:.2}s: acknowledged {} ({:.0} spans/s), failed {}, unsent {}, resent after Unavailable {}",
        r.requested_spans,
        r.elapsed.as_secs_f64(),
        r.acked_spans,
        r.acked_per_second(),
        r.failed_spans,
        r.unsent_spans,
        r.retries
    );
    if let Some(e) = &r.first_error {
        println!("first error: {e}");
    }
    Ok(if r.acked_spans == r.requested_spans {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(2)
    })
}

async fn sink_cmd(a: SinkArgs) -> anyhow::Result<ExitCode> {
    let sink = Sink::start(a.listen)
        .await
        .with_context(|| format!("binding {}", a.listen))?;
    eprintln!("sink listening on {}", sink.local_addr());
    if let Some(addr) = a.control {
        let listener = tokio::net::TcpListener::bind(addr)
            .await
            .with_context(|| format!("binding control port {addr}"))?;
        eprintln!("control port on {}", listener.local_addr()?);
        tokio::spawn(sink::serve_control(listener, sink.stats().clone()));
    }
    let stats = sink.stats().clone();
    let print = move || println!("{}", stats.line());
    if a.report_every > 0 {
        let stats = sink.stats().clone();
        let print = print.clone();
        tokio::spawn(async move {
            let mut last = u64::MAX;
            let mut tick = tokio::time::interval(Duration::from_secs(a.report_every));
            loop {
                tick.tick().await;
                let n = stats.requests() + stats.rejected();
                // Only print when something arrived since the last line.
                if n != last {
                    last = n;
                    print();
                }
            }
        });
    }
    interrupted().await;
    print();
    sink.shutdown().await?;
    Ok(ExitCode::SUCCESS)
}

async fn run_cmd(a: RunArgs) -> anyhow::Result<ExitCode> {
    let want = |w: Which| a.only.is_empty() || a.only.contains(&w);
    let mut collectors = Vec::new();
    if want(Which::Sonde) {
        let path = a.sonde.clone().unwrap_or_else(default_sonde);
        if !path.is_file() {
            bail!(
                "no Sonde binary at {} (build it with `cargo build --release -p sonde`, pass --sonde, or measure rotel alone with --only rotel)",
                path.display()
            );
        }
        collectors.push((Kind::Sonde, path));
    }
    if want(Which::Rotel) {
        let path = match a.rotel.clone() {
            Some(p) => p,
            None => default_rotel()?,
        };
        if !path.is_file() {
            bail!("no rotel-agent binary at {}", path.display());
        }
        collectors.push((Kind::Rotel, path));
    }
    if a.runs == 0 || a.spans == 0 || a.compression.is_empty() {
        bail!("--runs, --spans and --compression must not be zero or empty");
    }
    let mut compressions: Vec<Compression> = Vec::new();
    for c in &a.compression {
        let c = match c {
            CompressionArg::None => Compression::None,
            CompressionArg::Gzip => Compression::Gzip,
            CompressionArg::GzipOut => Compression::GzipOut,
        };
        if !compressions.contains(&c) {
            compressions.push(c);
        }
    }
    let cfg = RunConfig {
        collectors,
        compressions,
        runs: a.runs,
        spans: a.spans,
        warmup_spans: a.warmup_spans,
        spans_per_request: a.spans_per_request,
        concurrency: a.concurrency,
        connections: a.connections,
        rate: a.rate,
        stall_timeout: Duration::from_secs(a.stall_timeout),
        keep_logs: a.keep_logs,
    };
    let report = runner::run(cfg).await?;
    println!("{}", report.markdown());
    Ok(ExitCode::SUCCESS)
}

async fn ebpf_cmd(a: EbpfArgs) -> anyhow::Result<ExitCode> {
    let cfg = bench::ebpf::EbpfBenchConfig {
        sonde: a.sonde.unwrap_or_else(default_sonde),
        nginx: a.nginx,
        wrk: a.wrk,
        python: a.python,
        runs: a.runs,
        duration: Duration::from_secs(a.duration),
        wrk_threads: a.wrk_threads,
        wrk_connections: a.wrk_connections,
        paced_rate: a.rate,
        paced_connections: a.paced_connections,
        payload_size: a.payload_size,
        keep_logs: a.keep_logs,
    };
    let report = bench::ebpf::run(cfg).await?;
    println!("{}", report.markdown());
    Ok(ExitCode::SUCCESS)
}

/// Runs `work` unless a signal comes first; dropping `work` then stops and reaps every process
/// it started (the runner spawns them from this, the main, thread).
async fn until_interrupted(
    work: impl std::future::Future<Output = anyhow::Result<ExitCode>>,
) -> anyhow::Result<ExitCode> {
    tokio::select! {
        r = work => r,
        _ = interrupted() => {
            eprintln!("interrupted");
            Ok(ExitCode::from(130))
        }
    }
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> ExitCode {
    let result = match Cli::parse().command {
        Command::Loadgen(a) => until_interrupted(loadgen_cmd(a)).await,
        // The sink handles signals itself: they are how it is told to print and stop.
        Command::Sink(a) => sink_cmd(a).await,
        Command::Run(a) => until_interrupted(run_cmd(a)).await,
        Command::Ebpf(a) => until_interrupted(ebpf_cmd(a)).await,
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}
