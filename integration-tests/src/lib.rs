//! Helpers for the integration tests: locate and start the real `sonde` binary and real peers
//! on loopback, a capturing OTLP sink, and internal-metrics scraping. Every process a test
//! starts is killed when its guard drops.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use opentelemetry_proto::tonic::collector::trace::v1::trace_service_server::{
    TraceService, TraceServiceServer,
};
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTraceServiceRequest, ExportTraceServiceResponse,
};

/// The workspace's target directory for the current profile (where `sonde` and `bench` are).
pub fn bin_dir() -> PathBuf {
    let exe = std::env::current_exe().expect("current_exe");
    // target/<profile>/deps/<test binary>
    exe.parent()
        .and_then(Path::parent)
        .expect("test binary lives in target/<profile>/deps")
        .to_path_buf()
}

pub fn bin(name: &str) -> PathBuf {
    let p = bin_dir().join(name);
    assert!(
        p.exists(),
        "{} is missing: run `cargo build --workspace --bins` first",
        p.display()
    );
    p
}

pub fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("workspace root")
        .to_path_buf()
}

/// `shared/` sits beside the checkout in CI and on developer machines.
pub fn shared_dir() -> PathBuf {
    let candidates = [
        workspace_root().join("../shared"),
        PathBuf::from("/work/shared"),
    ];
    candidates
        .iter()
        .find(|p| p.join("seed").exists())
        .cloned()
        .expect("../shared/seed not found beside the checkout")
}

/// A loopback port nothing listens on now, never the same twice in one test process: the kernel
/// may hand the port just released to the next bind, and two ports of one test must differ.
pub fn free_port() -> u16 {
    static GIVEN: std::sync::Mutex<Vec<u16>> = std::sync::Mutex::new(Vec::new());
    let mut given = GIVEN.lock().unwrap_or_else(|p| p.into_inner());
    for _ in 0..1000 {
        let port = TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .map(|a| a.port())
            .expect("free port");
        if !given.contains(&port) {
            given.push(port);
            return port;
        }
    }
    panic!("no unused loopback port in 1000 tries");
}

/// A child process killed (and reaped) on drop.
pub struct Proc {
    pub child: Child,
    pub name: String,
}

impl Proc {
    /// Starts `cmd` in its own process group, so dropping the guard also ends the workers it
    /// forks (nginx, haproxy).
    pub fn spawn(name: &str, cmd: &mut Command) -> Proc {
        use std::os::unix::process::CommandExt;
        let child = cmd
            .stdin(Stdio::null())
            .process_group(0)
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {name}: {e}"));
        Proc {
            child,
            name: name.to_string(),
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Sends SIGTERM and waits (bounded) for a graceful exit; returns the exit status.
    pub fn terminate(&mut self, within: Duration) -> Option<std::process::ExitStatus> {
        // SAFETY: kill(2) on our own child's pid.
        unsafe {
            libc::kill(self.child.id() as i32, libc::SIGTERM);
        }
        let deadline = Instant::now() + within;
        while Instant::now() < deadline {
            if let Ok(Some(st)) = self.child.try_wait() {
                return Some(st);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        None
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        // SAFETY: kill(2) on the process group this guard created.
        unsafe {
            libc::kill(-(self.child.id() as i32), libc::SIGKILL);
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub fn wait_for_port(port: u16, within: Duration) {
    let deadline = Instant::now() + within;
    while Instant::now() < deadline {
        if TcpStream::connect(("127.0.0.1", port)).is_ok() {
            return;
        }
        std::thread::sleep(Duration::from_millis(25));
    }
    panic!("nothing listens on 127.0.0.1:{port} after {within:?}");
}

/// Waits until every port listens, failing at once (with Sonde's log) if the process exits:
/// a start-up error must not look like a slow start.
pub fn wait_listening(p: &mut Proc, ports: &[u16], log: &Path) {
    let up = wait_until(Duration::from_secs(20), || {
        if let Ok(Some(status)) = p.child.try_wait() {
            panic!(
                "{} exited during start-up ({status}):\n{}",
                p.name,
                std::fs::read_to_string(log).unwrap_or_default()
            );
        }
        ports
            .iter()
            .all(|port| std::net::TcpStream::connect(("127.0.0.1", *port)).is_ok())
    });
    assert!(
        up,
        "{} does not listen on all of {ports:?}:\n{}",
        p.name,
        std::fs::read_to_string(log).unwrap_or_default()
    );
}

/// Polls `f` until it returns true or `within` passes.
pub fn wait_until(within: Duration, mut f: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + within;
    while Instant::now() < deadline {
        if f() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    f()
}

/// Plain HTTP/1.0 GET on loopback; returns the body.
pub fn http_get(port: u16, path: &str) -> Option<String> {
    let mut s = TcpStream::connect(("127.0.0.1", port)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    write!(s, "GET {path} HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n").ok()?;
    let mut out = String::new();
    s.read_to_string(&mut out).ok()?;
    out.split_once("\r\n\r\n").map(|(_, b)| b.to_string())
}

/// The value of one series in a Prometheus text page (`name{a="b"}` matched by prefix).
pub fn metric_value(page: &str, series_prefix: &str) -> Option<f64> {
    page.lines()
        .filter(|l| !l.starts_with('#'))
        .find(|l| l.starts_with(series_prefix))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
}

pub fn write_config(dir: &Path, name: &str, yaml: &str) -> PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, yaml).expect("write config");
    p
}

/// A file in `dir` for a child's output, so test logs stay readable; kept with the temp dir.
pub fn log_file(dir: &Path, name: &str) -> std::fs::File {
    std::fs::File::create(dir.join(name)).expect("log file")
}

pub fn temp_dir(tag: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("sonde-it-{tag}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).expect("temp dir");
    d
}

/// An OTLP/gRPC trace sink that keeps every request it receives, fully decoded.
#[derive(Clone, Default)]
pub struct Capture {
    pub requests: Arc<Mutex<Vec<ExportTraceServiceRequest>>>,
}

impl Capture {
    pub fn span_count(&self) -> usize {
        self.requests
            .lock()
            .unwrap()
            .iter()
            .flat_map(|r| &r.resource_spans)
            .flat_map(|r| &r.scope_spans)
            .map(|s| s.spans.len())
            .sum()
    }
}

#[tonic::async_trait]
impl TraceService for Capture {
    async fn export(
        &self,
        req: tonic::Request<ExportTraceServiceRequest>,
    ) -> Result<tonic::Response<ExportTraceServiceResponse>, tonic::Status> {
        self.requests.lock().unwrap().push(req.into_inner());
        Ok(tonic::Response::new(ExportTraceServiceResponse::default()))
    }
}

/// Runs a capture sink on `port` in a background runtime until the returned guard drops.
pub struct CaptureServer {
    pub capture: Capture,
    shutdown: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl CaptureServer {
    pub fn start(port: u16) -> CaptureServer {
        let capture = Capture::default();
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let svc = capture.clone();
        let thread = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(1)
                .enable_all()
                .build()
                .expect("runtime");
            rt.block_on(async move {
                let addr = format!("127.0.0.1:{port}").parse().expect("addr");
                let _ = tonic::transport::Server::builder()
                    .add_service(
                        TraceServiceServer::new(svc)
                            .accept_compressed(tonic::codec::CompressionEncoding::Gzip)
                            .accept_compressed(tonic::codec::CompressionEncoding::Zstd)
                            .max_decoding_message_size(64 << 20),
                    )
                    .serve_with_shutdown(addr, async {
                        let _ = rx.await;
                    })
                    .await;
            });
        });
        wait_for_port(port, Duration::from_secs(10));
        CaptureServer {
            capture,
            shutdown: Some(tx),
            thread: Some(thread),
        }
    }
}

impl Drop for CaptureServer {
    fn drop(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Path of `rotel-agent` installed by `pip install rotel`.
pub fn rotel_agent() -> PathBuf {
    let out = Command::new("python3")
        .args([
            "-c",
            "import rotel,os;print(os.path.join(os.path.dirname(rotel.__file__),'rotel-agent'))",
        ])
        .output()
        .expect("python3");
    let p = PathBuf::from(String::from_utf8_lossy(&out.stdout).trim());
    assert!(
        p.exists(),
        "rotel-agent not found (pip install rotel): {}",
        p.display()
    );
    p
}

pub mod otlp {
    //! Building and sending OTLP traces from the tests.
    use opentelemetry_proto::tonic::collector::trace::v1::trace_service_client::TraceServiceClient;
    use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
    use opentelemetry_proto::tonic::common::v1::{any_value, AnyValue, KeyValue};
    use opentelemetry_proto::tonic::resource::v1::Resource;
    use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, ScopeSpans, Span};

    pub fn kv(k: &str, v: any_value::Value) -> KeyValue {
        KeyValue {
            key: k.to_string(),
            value: Some(AnyValue { value: Some(v) }),
        }
    }

    /// A request of `spans` spans whose ids encode (`batch`, index), so arrivals can be checked.
    pub fn request(batch: u32, spans: u32) -> ExportTraceServiceRequest {
        use any_value::Value::*;
        ExportTraceServiceRequest {
            resource_spans: vec![ResourceSpans {
                resource: Some(Resource {
                    attributes: vec![
                        kv("service.name", StringValue("it-load".into())),
                        kv("service.instance.id", StringValue("host:42".into())),
                    ],
                    ..Default::default()
                }),
                scope_spans: vec![ScopeSpans {
                    spans: (0..spans)
                        .map(|i| {
                            let mut trace_id = vec![0u8; 16];
                            trace_id[..4].copy_from_slice(&batch.to_be_bytes());
                            trace_id[4..8].copy_from_slice(&i.to_be_bytes());
                            trace_id[15] = 1;
                            let mut span_id = vec![0u8; 8];
                            span_id[..4].copy_from_slice(&batch.to_be_bytes());
                            span_id[4..].copy_from_slice(&i.to_be_bytes());
                            span_id[0] |= 0x80;
                            Span {
                                trace_id,
                                span_id,
                                name: format!("GET /item/{i}"),
                                kind: 2,
                                start_time_unix_nano: 1_700_000_000_000_000_000 + u64::from(i),
                                end_time_unix_nano: 1_700_000_000_001_000_000 + u64::from(i),
                                attributes: vec![
                                    kv("http.request.method", StringValue("GET".into())),
                                    kv("http.response.status_code", IntValue(200)),
                                ],
                                ..Default::default()
                            }
                        })
                        .collect(),
                    ..Default::default()
                }],
                ..Default::default()
            }],
        }
    }

    /// Sends `requests` requests of `spans` spans each; returns how many spans were acknowledged.
    pub async fn send(port: u16, requests: u32, spans: u32) -> u64 {
        let mut client = match TraceServiceClient::connect(format!("http://127.0.0.1:{port}")).await
        {
            Ok(c) => c,
            Err(_) => return 0,
        };
        let mut acked = 0;
        for b in 0..requests {
            if client.export(request(b, spans)).await.is_ok() {
                acked += u64::from(spans);
            }
        }
        acked
    }

    pub fn send_blocking(port: u16, requests: u32, spans: u32) -> u64 {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime")
            .block_on(send(port, requests, spans))
    }

    /// JSON form of an attribute value, to compare with what the Python SDK printed.
    pub fn to_json(v: &Option<AnyValue>) -> serde_json::Value {
        use any_value::Value::*;
        match v.as_ref().and_then(|v| v.value.as_ref()) {
            Some(StringValue(s)) => serde_json::json!(s),
            Some(BoolValue(b)) => serde_json::json!(b),
            Some(IntValue(i)) => serde_json::json!(i),
            Some(DoubleValue(d)) => serde_json::json!(d),
            Some(ArrayValue(a)) => serde_json::Value::Array(
                a.values.iter().map(|x| to_json(&Some(x.clone()))).collect(),
            ),
            Some(BytesValue(b)) => serde_json::json!(hex::encode(b)),
            Some(KvlistValue(kv)) => serde_json::Value::Object(
                kv.values
                    .iter()
                    .map(|x| (x.key.clone(), to_json(&x.value)))
                    .collect(),
            ),
            None => serde_json::Value::Null,
        }
    }
}
