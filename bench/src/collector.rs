//! Starting the collectors under test with equivalent settings, and making sure every process
//! started is stopped and reaped, whatever happens to the runner.

use std::fmt;
use std::fs::File;
use std::io::{Read, Seek, SeekFrom};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

/// Batch settings both collectors run with: the reference collector's batch defaults.
pub const BATCH_SIZE: u32 = 8192;
pub const BATCH_TIMEOUT_MS: u32 = 200;

#[derive(Debug, thiserror::Error)]
pub enum CollectorError {
    #[error("cannot write {0}: {1}")]
    Write(PathBuf, std::io::Error),
    #[error("cannot start {0}: {1}")]
    Spawn(PathBuf, std::io::Error),
    #[error("no free loopback port: {0}")]
    Port(std::io::Error),
    #[error("{name} exited during start-up ({status}); log {log}:\n{tail}")]
    Exited {
        name: String,
        status: ExitStatus,
        log: PathBuf,
        tail: String,
    },
    #[error("{name} did not listen on {addr} within {secs}s; log {log}:\n{tail}")]
    NotListening {
        name: String,
        addr: SocketAddr,
        secs: u64,
        log: PathBuf,
        tail: String,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Kind {
    Sonde,
    Rotel,
}

impl fmt::Display for Kind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Kind::Sonde => "sonde",
            Kind::Rotel => "rotel",
        })
    }
}

/// Which hops are gzip-compressed: generator -> collector, collector -> sink.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Compression {
    /// Neither.
    None,
    /// Both.
    Gzip,
    /// Only the collector's exports: what rotel does when told `none` (see the README).
    GzipOut,
}

impl Compression {
    pub fn inbound_gzip(self) -> bool {
        self == Compression::Gzip
    }

    pub fn outbound_gzip(self) -> bool {
        self != Compression::None
    }

    /// The exporter's `compression` setting.
    pub fn exporter_setting(self) -> &'static str {
        if self.outbound_gzip() {
            "gzip"
        } else {
            "none"
        }
    }
}

impl fmt::Display for Compression {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Compression::None => "none",
            Compression::Gzip => "gzip",
            Compression::GzipOut => "gzip-out",
        })
    }
}

/// A free TCP port on 127.0.0.1. The port is released before the collector binds it, so
/// another process could take it in between; on a loopback bench that race is harmless and a
/// collector that fails to bind shows up as a start-up error.
pub fn free_port() -> Result<u16, CollectorError> {
    let l = TcpListener::bind("127.0.0.1:0").map_err(CollectorError::Port)?;
    Ok(l.local_addr().map_err(CollectorError::Port)?.port())
}

/// The Sonde (OpenTelemetry Collector) config for OTLP/gRPC in -> batch -> OTLP/gRPC out.
pub fn sonde_config(listen: SocketAddr, sink: SocketAddr, compression: Compression) -> String {
    format!(
        "receivers:\n  otlp:\n    protocols:\n      grpc:\n        endpoint: \"{listen}\"\n\
         processors:\n  batch:\n    send_batch_size: {BATCH_SIZE}\n    timeout: {BATCH_TIMEOUT_MS}ms\n\
         exporters:\n  otlp:\n    endpoint: \"{sink}\"\n    tls:\n      insecure: true\n    compression: {}\n\
         service:\n  pipelines:\n    traces:\n      receivers: [otlp]\n      processors: [batch]\n      exporters: [otlp]\n\
         \x20 telemetry:\n    metrics:\n      level: none\n",
        compression.exporter_setting()
    )
}

/// How to launch one collector for one measured run.
pub struct LaunchSpec {
    pub kind: Kind,
    pub binary: PathBuf,
    pub listen: SocketAddr,
    pub sink: SocketAddr,
    pub compression: Compression,
    /// Directory for this run's config, logs and pid file.
    pub dir: PathBuf,
}

impl LaunchSpec {
    pub fn log_path(&self) -> PathBuf {
        self.dir.join(format!("{}.log", self.kind))
    }

    /// The command line; writes the config file it refers to.
    fn command(&self) -> Result<Command, CollectorError> {
        let mut cmd = Command::new(&self.binary);
        match self.kind {
            Kind::Sonde => {
                let path = self.dir.join("sonde.yaml");
                std::fs::write(
                    &path,
                    sonde_config(self.listen, self.sink, self.compression),
                )
                .map_err(|e| CollectorError::Write(path.clone(), e))?;
                cmd.arg("--config").arg(path);
            }
            Kind::Rotel => {
                // rotel always opens an OTLP/HTTP receiver too; give it a free port of its own.
                let http_port = free_port()?;
                cmd.arg("start")
                    .arg("--otlp-grpc-endpoint")
                    .arg(self.listen.to_string())
                    .arg("--otlp-http-endpoint")
                    .arg(format!("127.0.0.1:{http_port}"))
                    .arg("--otlp-receiver-metrics-disabled")
                    .arg("--otlp-receiver-logs-disabled")
                    .args(["--exporter", "otlp", "--otlp-exporter-protocol", "grpc"])
                    .arg("--otlp-exporter-endpoint")
                    .arg(format!("http://{}", self.sink))
                    .arg("--otlp-exporter-compression")
                    .arg(self.compression.exporter_setting())
                    .arg("--batch-max-size")
                    .arg(BATCH_SIZE.to_string())
                    .arg("--batch-timeout")
                    .arg(format!("{BATCH_TIMEOUT_MS}ms"))
                    .arg("--pid-file")
                    .arg(self.dir.join("rotel.pid"))
                    .arg("--log-file")
                    .arg(self.dir.join("rotel-agent.log"));
                // Settings in the environment would silently change what is measured.
                for (key, _) in std::env::vars_os() {
                    if key.to_string_lossy().starts_with("ROTEL_") {
                        cmd.env_remove(key);
                    }
                }
            }
        }
        Ok(cmd)
    }

    /// Starts the collector and waits (bounded) until its gRPC port accepts connections.
    pub fn start(&self, ready_timeout: Duration) -> Result<ChildGuard, CollectorError> {
        let log_path = self.log_path();
        let log =
            File::create(&log_path).map_err(|e| CollectorError::Write(log_path.clone(), e))?;
        let log2 = log
            .try_clone()
            .map_err(|e| CollectorError::Write(log_path.clone(), e))?;
        let mut cmd = self.command()?;
        cmd.stdin(Stdio::null()).stdout(log).stderr(log2);
        // SAFETY: only async-signal-safe calls between fork and exec. The collector gets
        // SIGKILL if the runner thread that started it dies, so a killed runner leaves no
        // collector behind (normal exits and Ctrl-C go through ChildGuard instead).
        unsafe {
            cmd.pre_exec(|| {
                libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
                Ok(())
            });
        }
        let child = cmd
            .spawn()
            .map_err(|e| CollectorError::Spawn(self.binary.clone(), e))?;
        let mut guard = ChildGuard {
            child: Some(child),
            name: self.kind.to_string(),
        };
        let started = Instant::now();
        loop {
            if let Some(status) = guard.try_wait() {
                return Err(CollectorError::Exited {
                    name: guard.name.clone(),
                    status,
                    log: log_path.clone(),
                    tail: log_tail(&log_path, 4000),
                });
            }
            if TcpStream::connect_timeout(&self.listen, Duration::from_millis(200)).is_ok() {
                return Ok(guard);
            }
            if started.elapsed() >= ready_timeout {
                return Err(CollectorError::NotListening {
                    name: guard.name.clone(),
                    addr: self.listen,
                    secs: ready_timeout.as_secs(),
                    log: log_path.clone(),
                    tail: log_tail(&log_path, 4000),
                });
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

/// The last `max` bytes of a log file, for error messages.
pub fn log_tail(path: &Path, max: u64) -> String {
    let Ok(mut f) = File::open(path) else {
        return String::new();
    };
    let len = f.metadata().map(|m| m.len()).unwrap_or(0);
    let _ = f.seek(SeekFrom::Start(len.saturating_sub(max)));
    let mut buf = Vec::new();
    let _ = f.read_to_end(&mut buf);
    String::from_utf8_lossy(&buf).into_owned()
}

/// Owns a started process: stopping it (SIGTERM, then SIGKILL after a grace period) and
/// reaping it happens on `stop` or, at the latest, on drop.
pub struct ChildGuard {
    child: Option<Child>,
    name: String,
}

impl ChildGuard {
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// The exit status if the process has already exited (it is then reaped).
    pub fn try_wait(&mut self) -> Option<ExitStatus> {
        self.child
            .as_mut()
            .and_then(|c| c.try_wait().ok().flatten())
    }

    /// SIGTERM, wait up to `grace`, then SIGKILL; always reaps. Returns the exit status.
    pub fn stop(&mut self, grace: Duration) -> Option<ExitStatus> {
        let mut child = self.child.take()?;
        if let Ok(Some(status)) = child.try_wait() {
            return Some(status);
        }
        if let Ok(pid) = i32::try_from(child.id()) {
            // SAFETY: the pid is our own unreaped child, so it cannot have been reused.
            unsafe {
                libc::kill(pid, libc::SIGTERM);
            }
        }
        let deadline = Instant::now() + grace;
        while Instant::now() < deadline {
            match child.try_wait() {
                Ok(Some(status)) => return Some(status),
                Ok(None) => std::thread::sleep(Duration::from_millis(20)),
                Err(_) => break,
            }
        }
        let _ = child.kill();
        child.wait().ok()
    }
}

impl Drop for ChildGuard {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sonde_config_is_the_documented_pipeline() {
        let listen: SocketAddr = "127.0.0.1:4000".parse().unwrap();
        let sink: SocketAddr = "127.0.0.1:5000".parse().unwrap();
        let text = sonde_config(listen, sink, Compression::Gzip);
        let cfg: serde_yaml::Value = serde_yaml::from_str(&text).unwrap();
        let at = |path: &[&str]| path.iter().fold(&cfg, |v, k| &v[*k]).clone();
        assert_eq!(
            at(&["receivers", "otlp", "protocols", "grpc", "endpoint"]),
            "127.0.0.1:4000"
        );
        assert_eq!(at(&["exporters", "otlp", "endpoint"]), "127.0.0.1:5000");
        assert_eq!(at(&["exporters", "otlp", "compression"]), "gzip");
        assert_eq!(at(&["exporters", "otlp", "tls", "insecure"]), true);
        assert_eq!(at(&["processors", "batch", "send_batch_size"]), 8192);
        assert_eq!(at(&["processors", "batch", "timeout"]), "200ms");
        assert_eq!(at(&["service", "telemetry", "metrics", "level"]), "none");
        let pipeline = at(&["service", "pipelines", "traces"]);
        assert_eq!(pipeline["receivers"][0], "otlp");
        assert_eq!(pipeline["processors"][0], "batch");
        assert_eq!(pipeline["exporters"][0], "otlp");
        let none = sonde_config(listen, sink, Compression::None);
        assert!(none.contains("compression: none"));
        let out_only = sonde_config(listen, sink, Compression::GzipOut);
        assert!(out_only.contains("compression: gzip"));
    }

    #[test]
    fn guard_stops_and_reaps() {
        let child = Command::new("sleep").arg("30").spawn().unwrap();
        let pid = child.id();
        let mut guard = ChildGuard {
            child: Some(child),
            name: "sleep".into(),
        };
        assert!(guard.try_wait().is_none());
        let status = guard.stop(Duration::from_secs(2)).unwrap();
        assert!(!status.success());
        assert!(!Path::new(&format!("/proc/{pid}")).exists());

        let child = Command::new("sleep").arg("30").spawn().unwrap();
        let pid = child.id();
        drop(ChildGuard {
            child: Some(child),
            name: "sleep".into(),
        });
        assert!(!Path::new(&format!("/proc/{pid}")).exists());
    }

    #[test]
    fn start_reports_an_early_exit_with_the_log() {
        let dir = std::env::temp_dir().join(format!("bench-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let spec = LaunchSpec {
            kind: Kind::Sonde,
            binary: PathBuf::from("/bin/sh"),
            listen: format!("127.0.0.1:{}", free_port().unwrap())
                .parse()
                .unwrap(),
            sink: "127.0.0.1:1".parse().unwrap(),
            compression: Compression::None,
            dir: dir.clone(),
        };
        // `sh --config FILE` fails at once and says why on stderr.
        let err = spec.start(Duration::from_secs(5)).err().unwrap();
        assert!(matches!(err, CollectorError::Exited { .. }), "{err}");
        assert!(dir.join("sonde.yaml").exists());
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
