//! The `ebpf` receiver against real servers on loopback: Python's http.server, the seed's
//! haproxy (mode tcp) chain in front of the Go backend, cgroup selection, a process started
//! after Sonde, and loss accounting. These load real eBPF programs, so they need root; outside
//! root they skip with a message, and with SONDE_CI=1 a skip is a failure.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use integration_tests::*;

fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions.
    unsafe { libc::geteuid() == 0 }
}

/// Returns false (after saying so) when the test cannot run here; panics in CI.
fn can_load_ebpf(test: &str) -> bool {
    if is_root() {
        return true;
    }
    assert!(
        std::env::var("SONDE_CI").as_deref() != Ok("1"),
        "{test}: eBPF tests must run as root in CI"
    );
    eprintln!("SKIPPED {test}: loading eBPF programs needs root");
    false
}

fn ebpf_config(receiver: &str, sink: u16, metrics: u16) -> String {
    format!(
        r#"
receivers:
  ebpf:
{receiver}
processors:
  batch:
    timeout: 50ms
exporters:
  otlp:
    endpoint: 127.0.0.1:{sink}
    tls: {{insecure: true}}
service:
  telemetry:
    metrics: {{address: "127.0.0.1:{metrics}"}}
  pipelines:
    traces:
      receivers: [ebpf]
      processors: [batch]
      exporters: [otlp]
"#
    )
}

struct Sonde {
    // Held so the process is killed when the test ends.
    _proc: Proc,
    metrics: u16,
    stdout: PathBuf,
}

fn start_sonde(dir: &Path, yaml: &str, metrics: u16, env: &[(&str, &str)]) -> Sonde {
    let cfg = write_config(dir, "sonde.yaml", yaml);
    let stdout = dir.join("sonde.out");
    let mut cmd = Command::new(bin("sonde"));
    cmd.arg("--config")
        .arg(cfg)
        .stdout(log_file(dir, "sonde.out"))
        .stderr(log_file(dir, "sonde.log"));
    for (k, v) in env {
        cmd.env(k, v);
    }
    let proc = Proc::spawn("sonde", &mut cmd);
    wait_for_port(metrics, Duration::from_secs(30));
    Sonde {
        _proc: proc,
        metrics,
        stdout,
    }
}

impl Sonde {
    fn metric(&self, series: &str) -> f64 {
        http_get(self.metrics, "/metrics")
            .and_then(|p| metric_value(&p, series))
            .unwrap_or(0.0)
    }

    /// Waits until discovery has selected at least `n` processes.
    fn wait_selected(&self, n: usize) {
        assert!(
            wait_until(Duration::from_secs(10), || {
                self.metric("sonde_ebpf_selected_processes") >= n as f64
            }),
            "sonde did not select {n} process(es)"
        );
    }

    fn printed(&self) -> Vec<String> {
        std::fs::read_to_string(&self.stdout)
            .unwrap_or_default()
            .lines()
            .map(str::to_string)
            .collect()
    }
}

fn start_python(dir: &Path, port: u16) -> Proc {
    let script = workspace_root().join("integration-tests/py/http11_server.py");
    let p = Proc::spawn(
        "python http.server",
        Command::new("python3")
            .arg(script)
            .arg(port.to_string())
            .arg(dir)
            .stdout(log_file(dir, &format!("py-{port}.out")))
            .stderr(log_file(dir, &format!("py-{port}.err"))),
    );
    wait_for_port(port, Duration::from_secs(10));
    p
}

/// Runs curl; returns (stdout, seconds it took as curl measured it).
fn curl(args: &[&str]) -> (String, f64) {
    let mut cmd = Command::new("curl");
    cmd.args(["-s", "-S", "-w", "%{http_code} %{time_total}\\n"]);
    for a in args {
        // Each URL's body is discarded on its own (one -o per URL).
        if a.starts_with("http://") {
            cmd.args(["-o", "/dev/null"]);
        }
        cmd.arg(a);
    }
    let out = cmd.output().expect("curl");
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    let secs = text
        .lines()
        .filter_map(|l| l.split_whitespace().nth(1))
        .filter_map(|t| t.parse::<f64>().ok())
        .fold(0.0, f64::max);
    (text, secs)
}

fn attr<'a>(
    s: &'a opentelemetry_proto::tonic::trace::v1::Span,
    key: &str,
) -> Option<&'a opentelemetry_proto::tonic::common::v1::any_value::Value> {
    s.attributes
        .iter()
        .find(|kv| kv.key == key)
        .and_then(|kv| kv.value.as_ref())
        .and_then(|v| v.value.as_ref())
}

fn attr_str(s: &opentelemetry_proto::tonic::trace::v1::Span, key: &str) -> String {
    use opentelemetry_proto::tonic::common::v1::any_value::Value;
    match attr(s, key) {
        Some(Value::StringValue(v)) => v.clone(),
        Some(Value::IntValue(i)) => i.to_string(),
        _ => String::new(),
    }
}

fn attr_int(s: &opentelemetry_proto::tonic::trace::v1::Span, key: &str) -> i64 {
    use opentelemetry_proto::tonic::common::v1::any_value::Value;
    match attr(s, key) {
        Some(Value::IntValue(i)) => *i,
        _ => -1,
    }
}

fn server_spans(cap: &Capture) -> Vec<opentelemetry_proto::tonic::trace::v1::Span> {
    cap.requests
        .lock()
        .unwrap()
        .iter()
        .flat_map(|r| &r.resource_spans)
        .flat_map(|r| &r.scope_spans)
        .flat_map(|s| &s.spans)
        .filter(|s| s.kind == 2)
        .cloned()
        .collect()
}

#[test]
fn python_http_server_twenty_requests() {
    python_http_server_twenty_requests_with("auto");
}

/// The same with the fallback for kernels without the socket layer's tracepoints.
#[test]
fn python_http_server_twenty_requests_with_syscall_hooks() {
    python_http_server_twenty_requests_with("syscalls");
}

fn python_http_server_twenty_requests_with(hooks: &str) {
    if !can_load_ebpf(&format!("python_http_server_twenty_requests ({hooks})")) {
        return;
    }
    let dir = temp_dir("ebpf-py");
    let body = "hello from sonde\n".repeat(10);
    std::fs::write(dir.join("a.txt"), &body).unwrap();
    let (port, sink, metrics) = (free_port(), free_port(), free_port());
    let server = CaptureServer::start(sink);
    let _py = start_python(&dir, port);
    let sonde = start_sonde(
        &dir,
        &ebpf_config(
            &format!(
                "    kernel_hooks: {hooks}\n    discovery:\n      instrument:\n        - open_ports: {port}"
            ),
            sink,
            metrics,
        ),
        metrics,
        &[],
    );
    sonde.wait_selected(1);

    let base = format!("http://127.0.0.1:{port}");
    let a = format!("{base}/a.txt");
    let missing = format!("{base}/missing");
    let mut slowest: f64 = 0.0;
    // 8 requests on one keep-alive connection: 6 x 200, 2 x 404.
    let urls = [&a, &a, &missing, &a, &a, &missing, &a, &a];
    let (out, t) = curl(&urls.iter().map(|s| s.as_str()).collect::<Vec<_>>());
    assert_eq!(out.lines().count(), 8, "{out}");
    slowest = slowest.max(t);
    // 5 GETs, each on its own connection.
    for _ in 0..5 {
        let (_, t) = curl(&["-H", "Connection: close", &a]);
        slowest = slowest.max(t);
    }
    // 3 HEADs.
    for _ in 0..3 {
        let (_, t) = curl(&["-I", &a]);
        slowest = slowest.max(t);
    }
    // 4 POSTs with a 1000-byte body.
    let payload = "x".repeat(1000);
    for _ in 0..4 {
        let (_, t) = curl(&[
            "-X",
            "POST",
            "--data-binary",
            &payload,
            &format!("{base}/upload"),
        ]);
        slowest = slowest.max(t);
    }

    assert!(
        wait_until(Duration::from_secs(15), || server_spans(&server.capture)
            .len()
            >= 20),
        "got {} server spans of 20; sonde printed: {:?}",
        server_spans(&server.capture).len(),
        sonde.printed()
    );
    std::thread::sleep(Duration::from_millis(500));
    let spans = server_spans(&server.capture);
    assert_eq!(spans.len(), 20, "exactly one span per request");

    let mut by_kind: HashMap<(String, String, i64), usize> = HashMap::new();
    for s in &spans {
        let method = attr_str(s, "http.request.method");
        let path = attr_str(s, "url.path");
        let status = attr_int(s, "http.response.status_code");
        *by_kind
            .entry((method.clone(), path.clone(), status))
            .or_default() += 1;
        assert_eq!(s.name, format!("{method} {}", attr_str(s, "http.route")));
        assert_eq!(attr_str(s, "client.address"), "127.0.0.1");
        assert_eq!(attr_str(s, "network.peer.address"), "127.0.0.1");
        assert!(attr_int(s, "network.peer.port") > 0);
        assert_eq!(attr_int(s, "server.port"), i64::from(port));
        let secs = (s.end_time_unix_nano - s.start_time_unix_nano) as f64 / 1e9;
        assert!(
            secs > 0.0 && secs <= slowest,
            "span {secs}s vs slowest curl {slowest}s"
        );
        match (method.as_str(), status) {
            ("GET", 200) => assert_eq!(attr_int(s, "http.response.body.size"), body.len() as i64),
            ("HEAD", 200) => assert_eq!(attr_int(s, "http.response.body.size"), 0),
            ("POST", 201) => {
                assert_eq!(attr_int(s, "http.request.body.size"), 1000);
                assert_eq!(
                    attr_int(s, "http.response.body.size"),
                    "got 1000 bytes\n".len() as i64
                );
            }
            ("GET", 404) => assert!(attr_int(s, "http.response.body.size") > 0),
            other => panic!("unexpected span {other:?}"),
        }
    }
    assert_eq!(
        by_kind[&("GET".into(), "/a.txt".into(), 200)],
        11,
        "{by_kind:?}"
    );
    assert_eq!(
        by_kind[&("GET".into(), "/missing".into(), 404)],
        2,
        "{by_kind:?}"
    );
    assert_eq!(
        by_kind[&("HEAD".into(), "/a.txt".into(), 200)],
        3,
        "{by_kind:?}"
    );
    assert_eq!(
        by_kind[&("POST".into(), "/upload".into(), 201)],
        4,
        "{by_kind:?}"
    );
    let _ = std::fs::remove_dir_all(dir);
}

fn haproxy_cfg(dir: &Path, name: &str, listen: u16, to: u16) -> PathBuf {
    write_config(
        dir,
        name,
        &format!(
            "global\n  maxconn 256\ndefaults\n  mode tcp\n  timeout connect 2s\n  timeout client 10s\n  timeout server 10s\n\
             frontend f\n  bind 127.0.0.1:{listen}\n  default_backend b\nbackend b\n  server s1 127.0.0.1:{to}\n"
        ),
    )
}

/// Builds the seed's Go backend with Debian's golang-go (no modules needed).
fn build_backend(dir: &Path) -> PathBuf {
    let src = shared_dir().join("seed/tcp-proxy/backend.go");
    let out = dir.join("backend");
    let status = Command::new("go")
        .arg("build")
        .arg("-o")
        .arg(&out)
        .arg(&src)
        .env("GOCACHE", dir.join("gocache"))
        .env("GOPATH", dir.join("gopath"))
        .env("GO111MODULE", "off")
        .status()
        .expect("go build (apt-get install golang-go)");
    assert!(status.success(), "go build failed");
    out
}

struct Line {
    kind: String,
    port: u16,
    trace: String,
    span: String,
    parent: String,
}

/// Parses a text-printer line: `... HTTP|HTTPClient ... ->[ip as name:port] ... traceparent=[00-T-S[P]-01]`.
fn parse_line(l: &str) -> Option<Line> {
    let kind = l.split_whitespace().nth(3)?.to_string();
    let arrow = l.find("]->[")?;
    let host = &l[arrow + 4..];
    let host = &host[..host.find(']')?];
    let port = host.rsplit(':').next()?.parse().ok()?;
    let tp = &l[l.find("traceparent=[00-")? + 16..];
    let mut it = tp.splitn(2, '-');
    let trace = it.next()?.to_string();
    let rest = it.next()?;
    let span = rest[..16].to_string();
    let parent = rest[17..33].to_string();
    Some(Line {
        kind,
        port,
        trace,
        span,
        parent,
    })
}

#[test]
fn seed_tcp_proxy_chain_is_one_trace() {
    if !can_load_ebpf("seed_tcp_proxy_chain_is_one_trace") {
        return;
    }
    let dir = temp_dir("ebpf-chain");
    let backend = build_backend(&dir);
    let (sink, metrics) = (free_port(), free_port());
    let server = CaptureServer::start(sink);
    let _go = Proc::spawn(
        "go backend",
        Command::new(&backend)
            .current_dir(&dir)
            .stdout(log_file(&dir, "backend.out"))
            .stderr(log_file(&dir, "backend.err")),
    );
    wait_for_port(8080, Duration::from_secs(10));
    let h8000 = haproxy_cfg(&dir, "h8000.cfg", 8000, 8080);
    let h9000 = haproxy_cfg(&dir, "h9000.cfg", 9000, 8000);
    let haproxy = |cfg: &Path, name: &str| {
        Proc::spawn(
            name,
            Command::new("haproxy")
                .arg("-db")
                .arg("-f")
                .arg(cfg)
                .stdout(log_file(&dir, &format!("{name}.out")))
                .stderr(log_file(&dir, &format!("{name}.err"))),
        )
    };
    let _p8000 = haproxy(&h8000, "haproxy-8000");
    let _p9000 = haproxy(&h9000, "haproxy-9000");
    wait_for_port(8000, Duration::from_secs(10));
    wait_for_port(9000, Duration::from_secs(10));

    let sonde = start_sonde(
        &dir,
        &ebpf_config("    trace_printer: text", sink, metrics),
        metrics,
        &[("OTEL_EBPF_OPEN_PORT", "8000-9000")],
    );
    sonde.wait_selected(3);
    let (out, _) = curl(&["http://127.0.0.1:9000/"]);
    assert!(out.starts_with("200"), "{out}");

    assert!(
        wait_until(Duration::from_secs(10), || sonde
            .printed()
            .iter()
            .filter(|l| l.contains("traceparent="))
            .count()
            >= 5),
        "printed: {:#?}",
        sonde.printed()
    );
    std::thread::sleep(Duration::from_millis(300));
    let printed = sonde.printed();
    eprintln!("text printer output:\n{}", printed.join("\n"));
    let lines: Vec<Line> = printed.iter().filter_map(|l| parse_line(l)).collect();
    assert_eq!(lines.len(), 5, "{printed:#?}");
    let trace = &lines[0].trace;
    assert!(
        lines.iter().all(|l| &l.trace == trace),
        "one trace: {printed:#?}"
    );
    let root = lines
        .iter()
        .find(|l| l.parent == "0000000000000000")
        .expect("a root span");
    assert_eq!(
        (root.kind.as_str(), root.port),
        ("HTTP", 9000),
        "{printed:#?}"
    );
    // Walk the chain: server(9000) -> client(->8000) -> server(8000) -> client(->8080) -> server(8080).
    let want = [
        ("HTTPClient", 8000),
        ("HTTP", 8000),
        ("HTTPClient", 8080),
        ("HTTP", 8080),
    ];
    let mut cur = root;
    for (kind, port) in want {
        let child = lines
            .iter()
            .find(|l| l.parent == cur.span)
            .unwrap_or_else(|| panic!("no child of {} in {printed:#?}", cur.span));
        assert_eq!(child.kind, kind, "{printed:#?}");
        // A client line's "->[peer]" is the destination; a server line's "->[host]" is itself.
        assert_eq!(child.port, port, "{printed:#?}");
        cur = child;
    }
    // The same five spans went out over OTLP too.
    assert!(wait_until(Duration::from_secs(10), || {
        let reqs = server.capture.requests.lock().unwrap();
        reqs.iter()
            .flat_map(|r| &r.resource_spans)
            .flat_map(|r| &r.scope_spans)
            .map(|s| s.spans.len())
            .sum::<usize>()
            >= 5
    }));
    let _ = std::fs::remove_dir_all(dir);
}

/// A cgroup v2 directory for the test, removed (after its processes are gone) on drop.
struct Cgroup(PathBuf);

impl Cgroup {
    fn new(name: &str) -> Cgroup {
        let root = ["/sys/fs/cgroup/unified", "/sys/fs/cgroup"]
            .iter()
            .map(PathBuf::from)
            .find(|p| {
                p.join("cgroup.procs").exists() && p.join("cgroup.controllers").exists()
                    || p.join("cgroup.procs").exists() && p.ends_with("unified")
            })
            .expect("a cgroup v2 mount");
        let p = root.join(name);
        std::fs::create_dir_all(&p).expect("mkdir cgroup");
        Cgroup(p)
    }
    fn add(&self, pid: u32) {
        std::fs::write(self.0.join("cgroup.procs"), pid.to_string()).expect("move into cgroup");
    }
}

impl Drop for Cgroup {
    fn drop(&mut self) {
        for _ in 0..50 {
            if std::fs::remove_dir(&self.0).is_ok() {
                return;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

#[test]
fn cgroup_selection_is_enforced_in_the_kernel() {
    if !can_load_ebpf("cgroup_selection_is_enforced_in_the_kernel") {
        return;
    }
    let dir = temp_dir("ebpf-cgroup");
    std::fs::write(dir.join("a.txt"), "abc\n").unwrap();
    let tag = format!("sonde-it-{}", std::process::id());
    let groups: Vec<Cgroup> = ["a", "b", "c"]
        .iter()
        .map(|n| Cgroup::new(&format!("{tag}-{n}")))
        .collect();
    let ports = [free_port(), free_port(), free_port()];
    let mut servers = Vec::new();
    for (g, port) in groups.iter().zip(ports) {
        let p = start_python(&dir, port);
        g.add(p.pid());
        servers.push(p);
    }
    let (sink, metrics) = (free_port(), free_port());
    let server = CaptureServer::start(sink);
    let sonde = start_sonde(
        &dir,
        &ebpf_config(
            &format!("    discovery:\n      instrument:\n        - cgroup_path: \"/{tag}-b\""),
            sink,
            metrics,
        ),
        metrics,
        &[],
    );
    sonde.wait_selected(1);
    // Unselected servers a and c: the kernel filter lets nothing through.
    let before = sonde.metric("sonde_ebpf_kernel_selected_syscalls_total");
    for _ in 0..10 {
        curl(&[&format!("http://127.0.0.1:{}/a.txt", ports[0])]);
        curl(&[&format!("http://127.0.0.1:{}/a.txt", ports[2])]);
    }
    std::thread::sleep(Duration::from_millis(300));
    let after = sonde.metric("sonde_ebpf_kernel_selected_syscalls_total");
    assert_eq!(
        before, after,
        "traffic of unselected cgroups reached the capture path"
    );
    for _ in 0..5 {
        curl(&[&format!("http://127.0.0.1:{}/a.txt", ports[1])]);
    }
    assert!(wait_until(Duration::from_secs(10), || server_spans(
        &server.capture
    )
    .len()
        >= 5));
    std::thread::sleep(Duration::from_millis(300));
    let spans = server_spans(&server.capture);
    assert_eq!(spans.len(), 5);
    assert!(spans
        .iter()
        .all(|s| attr_int(s, "server.port") == i64::from(ports[1])));
    assert!(sonde.metric("sonde_ebpf_kernel_selected_syscalls_total") > after);
    drop(servers);
    drop(sonde);
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn process_started_after_sonde_is_captured_from_its_first_requests() {
    if !can_load_ebpf("process_started_after_sonde_is_captured_from_its_first_requests") {
        return;
    }
    late_server_is_captured_from_its_first_requests("ebpf-late", "/a.txt", |dir, port| {
        std::fs::write(dir.join("a.txt"), "abc\n").unwrap();
        start_python(dir, port)
    });
}

/// Starts Sonde selecting a free port, then the server `start` makes on it; 10 requests sent
/// from the moment the port accepts connections (100 ms apart) must give at least 8 spans.
fn late_server_is_captured_from_its_first_requests(
    tag: &str,
    path: &str,
    start: impl FnOnce(&Path, u16) -> Proc,
) {
    let dir = temp_dir(tag);
    let (port, sink, metrics) = (free_port(), free_port(), free_port());
    let server = CaptureServer::start(sink);
    let sonde = start_sonde(
        &dir,
        &ebpf_config(
            &format!("    discovery:\n      instrument:\n        - open_ports: {port}"),
            sink,
            metrics,
        ),
        metrics,
        &[],
    );
    std::thread::sleep(Duration::from_millis(500));
    let started = Instant::now();
    let _server_process = start(&dir, port);
    for _ in 0..10 {
        curl(&[&format!("http://127.0.0.1:{port}{path}")]);
        std::thread::sleep(Duration::from_millis(100));
    }
    let elapsed = started.elapsed();
    wait_until(Duration::from_secs(10), || {
        server_spans(&server.capture).len() >= 8
    });
    std::thread::sleep(Duration::from_millis(300));
    let n = server_spans(&server.capture).len();
    assert!(
        n >= 8,
        "only {n} of the first 10 requests captured (sent over {elapsed:?}); log: {:?}",
        sonde.printed()
    );
    let _ = std::fs::remove_dir_all(dir);
}

fn start_nginx(dir: &Path, port: u16) -> Proc {
    start_nginx_workers(dir, port, 1)
}

fn start_nginx_workers(dir: &Path, port: u16, workers: u32) -> Proc {
    let conf = write_config(
        dir,
        "nginx.conf",
        &format!(
            "worker_processes {workers};\ndaemon off;\npid {d}/nginx.pid;\nerror_log {d}/nginx-error.log;\n\
             events {{ worker_connections 1024; }}\n\
             http {{\n  access_log {d}/access.log;\n  client_body_temp_path {d}/body;\n  proxy_temp_path {d}/proxy;\n  \
             fastcgi_temp_path {d}/fastcgi;\n  uwsgi_temp_path {d}/uwsgi;\n  scgi_temp_path {d}/scgi;\n  \
             server {{ listen 127.0.0.1:{port}; location / {{ return 200 \"hello!\"; }} }}\n}}\n",
            d = dir.display()
        ),
    );
    let p = Proc::spawn(
        "nginx",
        Command::new("nginx")
            .arg("-p")
            .arg(dir)
            .arg("-c")
            .arg(conf)
            .stdout(log_file(dir, "nginx.out"))
            .stderr(log_file(dir, "nginx.err")),
    );
    wait_for_port(port, Duration::from_secs(10));
    p
}

/// A pre-forking server: nginx's master listens, then forks its workers, which serve every
/// request. The workers must be traced from the start although they never exec or listen: the
/// kernel selects a selected process's forks, and discovery looks at the children of a process
/// it newly selects (forks that raced ahead of the master's selection).
#[test]
fn preforking_server_started_after_sonde_is_captured_from_its_first_requests() {
    if !can_load_ebpf("preforking_server_started_after_sonde_is_captured_from_its_first_requests") {
        return;
    }
    // Without the fork handling the workers were found by the next full scan, seconds later,
    // and none of these requests was captured.
    late_server_is_captured_from_its_first_requests("ebpf-prefork", "/prefork", |dir, port| {
        start_nginx_workers(dir, port, 2)
    });
}

#[test]
fn overload_loses_nothing_silently() {
    if !can_load_ebpf("overload_loses_nothing_silently") {
        return;
    }
    let dir = temp_dir("ebpf-loss");
    let (port, sink, metrics) = (free_port(), free_port(), free_port());
    let _server = CaptureServer::start(sink);
    let _nginx = start_nginx(&dir, port);
    // A ring buffer far too small for the load: events must be lost, and counted.
    let sonde = start_sonde(
        &dir,
        &ebpf_config(
            &format!(
                "    ring_buffer_size_kib: 64\n    discovery:\n      instrument:\n        - open_ports: {port}"
            ),
            sink,
            metrics,
        ),
        metrics,
        &[],
    );
    sonde.wait_selected(1);
    let out = Command::new("wrk")
        .args(["-t1", "-c16", "-d2s", &format!("http://127.0.0.1:{port}/")])
        .output()
        .expect("wrk (apt-get install wrk)");
    assert!(out.status.success());
    std::thread::sleep(Duration::from_secs(2));
    let requests = std::fs::read_to_string(dir.join("access.log"))
        .unwrap_or_default()
        .lines()
        .count() as f64;
    let spans = sonde.metric("sonde_ebpf_spans_emitted_total");
    let lost = sonde.metric("sonde_ebpf_events_lost_total");
    assert!(requests > 1000.0, "wrk made only {requests} requests");
    assert!(spans <= requests, "{spans} spans for {requests} requests");
    assert!(
        spans + lost >= requests,
        "unaccounted requests: {requests} requests, {spans} spans, {lost} events lost"
    );
    // What the loss cost in HTTP terms is counted too.
    let text = http_get(sonde.metrics, "/metrics").unwrap_or_default();
    for series in [
        "sonde_ebpf_http_requests_dropped_total",
        "sonde_ebpf_http_parse_errors_total",
        "sonde_ebpf_bad_records_total",
    ] {
        assert!(text.contains(series), "{series} missing from:\n{text}");
    }
    let _ = std::fs::remove_dir_all(dir);
}
