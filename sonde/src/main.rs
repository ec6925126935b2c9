//! The `sonde` binary: the collector's command line (`--config`, `--set`, `validate`,
//! `components`, `print-config`) over pipeline-core, with every built-in component registered.

mod registry;

use std::net::ToSocketAddrs;
use std::process::ExitCode;

use anyhow::{anyhow, Context, Result};
use clap::{Parser, Subcommand};
use pipeline_core::{Config, Service, Signal, Telemetry};

/// The configuration `sonde` runs when no `--config` is given.
const DEFAULT_CONFIG: &str = include_str!("../../configs/default.yaml");

#[derive(Parser)]
#[command(
    name = "sonde",
    version,
    about = "A drop-in OpenTelemetry Collector with a built-in eBPF receiver"
)]
struct Cli {
    /// Config source: a file path, `file:PATH`, `env:VAR` or `yaml:INLINE`. Repeatable; merged
    /// left to right (maps merge, lists are replaced).
    #[arg(long = "config", global = true)]
    config: Vec<String>,
    /// Override one value, e.g. `--set processors.batch.timeout=2s`. Applied after all configs.
    #[arg(long = "set", global = true)]
    set: Vec<String>,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand)]
enum Command {
    /// Parse and check the configuration and build the pipelines without starting anything.
    Validate,
    /// List the built-in components.
    Components,
    /// Print the configuration after merging, `--set` and environment expansion.
    PrintConfig,
}

fn sources(cli: &Cli) -> Vec<String> {
    if cli.config.is_empty() {
        vec![format!("yaml:{DEFAULT_CONFIG}")]
    } else {
        cli.config.clone()
    }
}

fn load(cli: &Cli) -> Result<(serde_yaml::Value, Config)> {
    let raw = pipeline_core::config::load(&sources(cli), &cli.set)?;
    let cfg = Config::parse(&raw, &registry::builtin())?;
    Ok((raw, cfg))
}

fn init_logging(level: &str, json: bool) {
    let filter = tracing_subscriber::EnvFilter::try_from_env("SONDE_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(level.to_ascii_lowercase()));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    let _ = if json {
        builder.json().try_init()
    } else {
        builder.try_init()
    };
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("Error: {e:#}");
            ExitCode::from(1)
        }
    }
}

fn run(cli: Cli) -> Result<()> {
    match cli.command {
        Some(Command::Validate) => {
            let (_, cfg) = load(&cli)?;
            // Building is side-effect free, so validation covers everything but binding.
            Service::build(&cfg, &Telemetry::default())?;
            Ok(())
        }
        Some(Command::Components) => {
            print!("{}", components());
            Ok(())
        }
        Some(Command::PrintConfig) => {
            let (raw, _) = load(&cli)?;
            print!("{}", serde_yaml::to_string(&raw)?);
            Ok(())
        }
        None => {
            let rt = tokio::runtime::Builder::new_multi_thread()
                .enable_all()
                .build()
                .context("cannot start the async runtime")?;
            rt.block_on(serve(cli))
        }
    }
}

fn components() -> String {
    let reg = registry::builtin();
    let signals = |s: &[Signal]| s.iter().map(|s| s.as_str()).collect::<Vec<_>>().join(", ");
    let mut out = format!(
        "buildinfo:\n  command: sonde\n  version: {}\n",
        env!("CARGO_PKG_VERSION")
    );
    out.push_str("receivers:\n");
    for f in &reg.receivers {
        out.push_str(&format!(
            "  - name: {}\n    signals: [{}]\n",
            f.type_name,
            signals(f.signals)
        ));
    }
    out.push_str("processors:\n");
    for f in &reg.processors {
        out.push_str(&format!(
            "  - name: {}\n    signals: [{}]\n",
            f.type_name,
            signals(f.signals)
        ));
    }
    out.push_str("exporters:\n");
    for f in &reg.exporters {
        out.push_str(&format!(
            "  - name: {}\n    signals: [{}]\n",
            f.type_name,
            signals(f.signals)
        ));
    }
    for (alias, canonical) in &reg.aliases {
        out.push_str(&format!("  - name: {alias}\n    alias_of: {canonical}\n"));
    }
    out.push_str("connectors: []\nextensions: []\n");
    out
}

enum Stop {
    Terminate,
    Reload,
}

async fn wait_for_signal() -> Result<Stop> {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    let mut hup = signal(SignalKind::hangup())?;
    Ok(tokio::select! {
        _ = term.recv() => Stop::Terminate,
        _ = int.recv() => Stop::Terminate,
        _ = hup.recv() => Stop::Reload,
    })
}

async fn serve(cli: Cli) -> Result<()> {
    let (_, mut cfg) = load(&cli)?;
    init_logging(
        &cfg.telemetry.logs.level,
        cfg.telemetry.logs.encoding == "json",
    );
    let telemetry = Telemetry::default();
    let mut metrics_server = None;
    if let Some(ep) = cfg.telemetry.metrics.endpoint() {
        let addr = ep
            .to_socket_addrs()
            .with_context(|| format!("service::telemetry::metrics: cannot resolve {ep}"))?
            .next()
            .ok_or_else(|| anyhow!("service::telemetry::metrics: {ep} resolves to nothing"))?;
        metrics_server = Some(
            telemetry
                .serve(addr)
                .await
                .with_context(|| format!("cannot serve internal metrics on {ep}"))?,
        );
        tracing::info!(endpoint = %ep, "internal metrics served");
    }
    loop {
        let service = Service::build(&cfg, &telemetry)?;
        service.start().await?;
        tracing::info!(
            pipelines = cfg.pipelines.len(),
            "Everything is ready. Begin running and processing data."
        );
        let stop = wait_for_signal().await?;
        tracing::info!("shutting down pipelines");
        service.shutdown().await;
        match stop {
            Stop::Terminate => break,
            Stop::Reload => {
                tracing::info!("SIGHUP: reloading the configuration");
                match load(&cli) {
                    Ok((_, new)) => cfg = new,
                    Err(e) => {
                        tracing::error!(error = %e, "reload failed; keeping the previous configuration")
                    }
                }
            }
        }
    }
    if let Some(s) = metrics_server {
        s.abort();
    }
    tracing::info!("shutdown complete");
    Ok(())
}
