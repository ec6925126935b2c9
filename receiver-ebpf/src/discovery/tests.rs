//! Parsing units, the engine against fake /proc and cgroup trees, and the live /proc: a real
//! Python server selected by port, by executable and arguments, and (as root) by cgroup.

use std::fs;
use std::net::{TcpListener, TcpStream};
use std::os::unix::fs::{symlink, MetadataExt};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use super::procfs::RawProcess;
use super::*;

// ---------------------------------------------------------------- parsing

#[test]
fn cgroup_v2_line() {
    let hybrid = "9:name=systemd:/\n4:memory:/process_api/x\n1:cpu:/\n0::/sonde-test/a\n";
    assert_eq!(parse_cgroup_v2(hybrid), Some("/sonde-test/a"));
    assert_eq!(parse_cgroup_v2("0::/\n"), Some("/"));
    assert_eq!(parse_cgroup_v2("4:memory:/x\n"), None);
    assert_eq!(parse_cgroup_v2(""), None);
}

#[test]
fn container_ids_from_cgroup_paths() {
    let id = "4f1c8e3d2b7a69f0e1d2c3b4a5968778695a4b3c2d1e0f9a8b7c6d5e4f3a2b1c";
    assert_eq!(id.len(), 64);
    let cases = [
        format!("/docker/{id}"),
        format!("/system.slice/docker-{id}.scope"),
        format!("/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod1.slice/cri-containerd-{id}.scope"),
        format!("/kubepods/besteffort/pod0b7f/{id}"),
        format!("/machine.slice/libpod-{id}.scope/container"),
        format!("/system.slice/crio-{id}.scope"),
    ];
    for c in &cases {
        assert_eq!(container_id_from_cgroup(c), Some(id), "{c}");
    }
    assert_eq!(
        container_id_from_cgroup("/lxc.payload.web01/init.scope"),
        Some("web01")
    );
    assert_eq!(container_id_from_cgroup("/lxc/db"), Some("db"));
    assert_eq!(
        container_id_from_cgroup("/user.slice/user-0.slice/session-3.scope"),
        None
    );
    assert_eq!(container_id_from_cgroup("/"), None);
    // 63 or 65 hex digits are not an id; upper case is not what runtimes write.
    assert_eq!(
        container_id_from_cgroup(&format!("/docker/{}", &id[1..])),
        None
    );
    assert_eq!(container_id_from_cgroup(&format!("/docker/{id}a")), None);
    assert_eq!(
        container_id_from_cgroup(&format!("/docker/{}", id.to_uppercase())),
        None
    );
}

#[test]
fn tcp_table_lines() {
    let v4 = "   0: 0100007F:1F90 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 31337 1 0000000000000000 100 0 0 10 0";
    assert_eq!(parse_tcp_listen_line(v4), Some((8080, 31337)));
    let established = "   1: 0100007F:1F90 0100007F:D2F0 01 00000000:00000000 00:00000000 00000000     0        0 4242 1 0000000000000000 20 4 30 10 -1";
    assert_eq!(parse_tcp_listen_line(established), None);
    let v6 = "   0: 00000000000000000000000000000000:0050 00000000000000000000000000000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 777 1 0000000000000000 100 0 0 10 0";
    assert_eq!(parse_tcp_listen_line(v6), Some((80, 777)));
    let header = "  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode";
    assert_eq!(parse_tcp_listen_line(header), None);
    assert_eq!(parse_tcp_listen_line("garbage"), None);
    assert_eq!(parse_tcp_listen_line(""), None);
}

#[test]
fn cgroup2_mount_point() {
    let hybrid = "31 23 0:28 / /sys/fs/cgroup rw,relatime - tmpfs tmpfs rw,mode=755\n\
                  32 31 0:29 / /sys/fs/cgroup/cpu rw,relatime - cgroup cgroup rw,cpu\n\
                  41 31 0:38 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw\n";
    assert_eq!(
        cgroup2_mount(hybrid),
        Some(PathBuf::from("/sys/fs/cgroup/unified"))
    );
    let pure = "29 23 0:26 / /sys/fs/cgroup rw,nosuid shared:4 - cgroup2 cgroup2 rw,nsdelegate\n";
    assert_eq!(cgroup2_mount(pure), Some(PathBuf::from("/sys/fs/cgroup")));
    let escaped = "29 23 0:26 / /mnt/my\\040cg rw - cgroup2 none rw\n";
    assert_eq!(cgroup2_mount(escaped), Some(PathBuf::from("/mnt/my cg")));
    assert_eq!(
        cgroup2_mount("32 31 0:29 / /x rw - cgroup cgroup rw,cpu\n"),
        None
    );
}

/// A minimal ELF64 file whose section names include `name`.
fn elf_with_section(name: &str) -> Vec<u8> {
    let strtab = format!("\0.shstrtab\0{name}\0").into_bytes();
    let shoff = 64 + strtab.len() as u64;
    let mut f = vec![0u8; 64];
    f[..4].copy_from_slice(b"\x7fELF");
    f[4] = 2; // 64-bit
    f[5] = 1; // little endian
    f[6] = 1;
    f[0x28..0x30].copy_from_slice(&shoff.to_le_bytes());
    f[0x3A..0x3C].copy_from_slice(&64u16.to_le_bytes());
    f[0x3C..0x3E].copy_from_slice(&3u16.to_le_bytes());
    f[0x3E..0x40].copy_from_slice(&1u16.to_le_bytes());
    f.extend_from_slice(&strtab);
    let section = |name_off: u32, off: u64, size: u64| {
        let mut h = vec![0u8; 64];
        h[..4].copy_from_slice(&name_off.to_le_bytes());
        h[24..32].copy_from_slice(&off.to_le_bytes());
        h[32..40].copy_from_slice(&size.to_le_bytes());
        h
    };
    f.extend(section(0, 0, 0));
    f.extend(section(1, 64, strtab.len() as u64));
    f.extend(section(11, 0, 0));
    f
}

#[test]
fn go_binaries_are_recognised_by_their_sections() {
    let dir = TempDir::new("elf");
    let go = dir.path().join("go-like");
    fs::write(&go, elf_with_section(".go.buildinfo")).expect("write");
    let other = dir.path().join("c-like");
    fs::write(&other, elf_with_section(".text")).expect("write");
    let open = |p: &Path| fs::File::open(p).expect("open");
    assert!(elf_has_go_sections(&open(&go)).expect("readable"));
    assert!(!elf_has_go_sections(&open(&other)).expect("readable"));
    // Truncated and non-ELF files are "not Go", never a panic.
    let bytes = elf_with_section(".gopclntab");
    for cut in [0, 10, 63, 64, 100, bytes.len() - 1] {
        let p = dir.path().join(format!("cut{cut}"));
        fs::write(&p, &bytes[..cut]).expect("write");
        assert!(
            !elf_has_go_sections(&open(&p)).unwrap_or(false),
            "cut at {cut}"
        );
    }
    assert!(!elf_has_go_sections(&open(Path::new("/proc/self/exe"))).expect("readable"));
    // A real Go toolchain binary, where one is installed.
    for go_bin in ["/usr/lib/go/bin/go", "/usr/local/go/bin/go"] {
        if let Ok(f) = fs::File::open(go_bin) {
            assert!(elf_has_go_sections(&f).expect("readable"), "{go_bin}");
        }
    }
}

// ---------------------------------------------------------------- fake trees

static NEXT: AtomicU32 = AtomicU32::new(0);

struct TempDir(PathBuf);

impl TempDir {
    fn new(tag: &str) -> TempDir {
        let p = std::env::temp_dir().join(format!(
            "sonde-disc-{tag}-{}-{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        ));
        fs::create_dir_all(&p).expect("temp dir");
        TempDir(p)
    }
    fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.0);
    }
}

struct FakeProc {
    dir: TempDir,
    cgroups: TempDir,
}

struct Proc<'a> {
    pid: u32,
    ppid: u32,
    start: u64,
    exe: &'a str,
    args: &'a [&'a str],
    cgroup: &'a str,
    netns: u64,
    sockets: &'a [u64],
    environ: &'a [&'a str],
}

impl Default for Proc<'_> {
    fn default() -> Self {
        Proc {
            pid: 0,
            ppid: 1,
            start: 1000,
            exe: "/usr/bin/true",
            args: &[],
            cgroup: "/",
            netns: 1,
            sockets: &[],
            environ: &[],
        }
    }
}

impl FakeProc {
    fn new() -> FakeProc {
        FakeProc {
            dir: TempDir::new("proc"),
            cgroups: TempDir::new("cgroup"),
        }
    }

    fn root(&self) -> &Path {
        self.dir.path()
    }

    fn add(&self, p: Proc<'_>) {
        let d = self.root().join(p.pid.to_string());
        let _ = fs::remove_dir_all(&d);
        fs::create_dir_all(d.join("fd")).expect("mkdir");
        fs::create_dir_all(d.join("ns")).expect("mkdir");
        fs::create_dir_all(d.join("net")).expect("mkdir");
        let comm: String = p
            .exe
            .rsplit('/')
            .next()
            .unwrap_or("x")
            .chars()
            .take(15)
            .collect();
        fs::write(
            d.join("stat"),
            format!(
                "{} ({comm}) S {} 1 1 0 -1 4194560 0 0 0 0 1 2 0 0 20 0 1 0 {} 1000 100\n",
                p.pid, p.ppid, p.start
            ),
        )
        .expect("stat");
        symlink(p.exe, d.join("exe")).expect("exe");
        let mut cmdline = Vec::new();
        for a in p.args {
            cmdline.extend_from_slice(a.as_bytes());
            cmdline.push(0);
        }
        fs::write(d.join("cmdline"), cmdline).expect("cmdline");
        fs::write(
            d.join("cgroup"),
            format!("4:memory:/elsewhere\n0::{}\n", p.cgroup),
        )
        .expect("cgroup");
        let environ: Vec<u8> = p
            .environ
            .iter()
            .flat_map(|v| v.bytes().chain(std::iter::once(0)))
            .collect();
        fs::write(d.join("environ"), environ).expect("environ");
        symlink(format!("net:[{}]", p.netns), d.join("ns/net")).expect("ns");
        for (i, inode) in p.sockets.iter().enumerate() {
            symlink(format!("socket:[{inode}]"), d.join(format!("fd/{}", i + 3))).expect("fd");
        }
        symlink("/dev/null", d.join("fd/0")).expect("fd");
        self.set_tcp(p.pid, &[]);
        self.mkcgroup(p.cgroup);
    }

    /// LISTEN sockets (port, inode) as the process sees its namespace's table.
    fn set_tcp(&self, pid: u32, listen: &[(u16, u64)]) {
        let mut t = String::from("  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode\n");
        for (i, (port, inode)) in listen.iter().enumerate() {
            t.push_str(&format!(
                "   {i}: 0100007F:{port:04X} 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 {inode} 1 0000000000000000 100 0 0 10 0\n"
            ));
        }
        let d = self.root().join(pid.to_string()).join("net");
        fs::write(d.join("tcp"), t).expect("tcp");
        fs::write(d.join("tcp6"), "  sl  local_address\n").expect("tcp6");
    }

    fn mkcgroup(&self, path: &str) -> PathBuf {
        let d = cgroup_dir(self.cgroups.path(), path);
        fs::create_dir_all(&d).expect("mkdir cgroup");
        d
    }

    fn cgroup_ino(&self, path: &str) -> u64 {
        fs::metadata(cgroup_dir(self.cgroups.path(), path))
            .expect("cgroup dir")
            .ino()
    }

    fn set_cgroup_procs(&self, path: &str, pids: &[u32]) {
        let body: String = pids.iter().map(|p| format!("{p}\n")).collect();
        fs::write(self.mkcgroup(path).join("cgroup.procs"), body).expect("cgroup.procs");
    }

    fn remove(&self, pid: u32) {
        fs::remove_dir_all(self.root().join(pid.to_string())).expect("rm");
    }

    fn discovery(&self, yaml: &str, self_pid: u32) -> Discovery {
        let cfg: DiscoveryConfig = serde_yaml::from_str(yaml).expect("config");
        pipeline_core::Validate::validate(&cfg).expect("valid");
        let sel = Selection::new(&cfg, &Shortcuts::default(), |_| None).expect("selection");
        Discovery::new(
            sel,
            DiscoveryOptions {
                proc_root: ProcRoot::new(self.root()),
                cgroup_root: Some(self.cgroups.path().to_path_buf()),
                self_pid,
            },
        )
    }
}

fn pids_of(diff: &DiscoveryDiff) -> Vec<u32> {
    let mut v: Vec<u32> = diff.selected.iter().map(|p| p.pid).collect();
    v.sort_unstable();
    v
}

#[test]
fn open_ports_selects_the_owner_of_the_listening_socket() {
    let f = FakeProc::new();
    let py = ["python3", "-m", "http.server", "8080"];
    f.add(Proc {
        pid: 100,
        exe: "/usr/bin/python3.11",
        args: &py,
        sockets: &[5001, 5002],
        environ: &["PATH=/bin", "OTEL_SERVICE_NAME=frontend"],
        ..Proc::default()
    });
    f.add(Proc {
        pid: 101,
        exe: "/usr/sbin/sshd",
        args: &["sshd"],
        sockets: &[5003],
        ..Proc::default()
    });
    // Same inode number in another network namespace, where nothing listens on 8080.
    f.add(Proc {
        pid: 102,
        exe: "/usr/bin/nc",
        netns: 2,
        sockets: &[5001],
        ..Proc::default()
    });
    f.set_tcp(100, &[(8080, 5001), (22, 5003)]);
    f.set_tcp(101, &[(8080, 5001), (22, 5003)]);
    let mut d = f.discovery("instrument:\n  - open_ports: 8000-9000\n", 1);
    let diff = d.scan_all();
    assert_eq!(pids_of(&diff), [100]);
    assert_eq!(diff.pids_add, [100]);
    assert!(diff.cgroups_add.is_empty() && diff.deny_add.is_empty());
    let p = &diff.selected[0];
    assert_eq!(p.exe_path, "/usr/bin/python3.11");
    assert_eq!(p.exe_name, "python3.11");
    assert_eq!(p.comm, "python3.11");
    assert_eq!(p.cmdline, "python3 -m http.server 8080");
    assert_eq!(p.cgroup_path.as_deref(), Some("/"));
    assert_eq!(p.cgroup_id, Some(f.cgroup_ino("/")));
    assert_eq!(p.start_time, 1000);
    assert_eq!(p.language, Language::Python);
    assert_eq!(p.service_name(), "frontend");
    let info = crate::spans::ProcessInfo::from(p);
    assert_eq!(info.sdk_language.as_str(), "python");
    assert_eq!(
        (info.pid, info.service_name.as_deref()),
        (100, Some("frontend"))
    );
    // Nothing changed: the next scan is quiet.
    assert!(d.scan_all().is_empty());
    assert_eq!(d.selected_count(), 1);
}

#[test]
fn examining_a_newly_selected_process_looks_at_its_children_too() {
    // nginx: the master listens (the hint that makes discovery look), then forks workers that
    // inherit the socket before the master's selection reaches the kernel.
    let f = FakeProc::new();
    for (pid, ppid) in [(200, 1), (201, 200), (202, 200)] {
        f.add(Proc {
            pid,
            ppid,
            exe: "/usr/sbin/nginx",
            sockets: &[7001],
            ..Proc::default()
        });
        f.set_tcp(pid, &[(8080, 7001)]);
    }
    let task = f.root().join("200/task/200");
    fs::create_dir_all(&task).expect("task dir");
    fs::write(task.join("children"), "201 202 ").expect("children");
    let mut d = f.discovery("instrument:\n  - open_ports: 8080\n", 1);
    let diff = d.examine(200);
    assert_eq!(pids_of(&diff), [200, 201, 202]);
    // Already selected: examining it again does not walk the children again.
    assert!(d.examine(200).is_empty());
}

#[test]
fn names_exclusions_and_self() {
    let f = FakeProc::new();
    for (pid, exe) in [
        (200, "/usr/bin/python3"),
        (201, "/usr/bin/python3"),
        (202, "/opt/otelcol-contrib"),
        (203, "/usr/bin/python3"),
    ] {
        let args: &[&str] = if pid == 201 {
            &["python3", "worker.py", "--internal"]
        } else {
            &["python3", "app.py"]
        };
        f.add(Proc {
            pid,
            exe,
            args,
            environ: &[
                "OTEL_RESOURCE_ATTRIBUTES=deployment.environment=prod,service.name=from-attrs",
            ],
            ..Proc::default()
        });
    }
    let yaml = "instrument:\n  - exe_path: \"*python3*\"\n    name: pyapp\n  - exe_path: \"*\"\n\
                exclude_instrument:\n  - cmd_args: \"*--internal*\"\n";
    let mut d = f.discovery(yaml, 203);
    let diff = d.scan_all();
    // 201 excluded by arguments, 202 by the default agent list, 203 is ourselves.
    assert_eq!(pids_of(&diff), [200]);
    assert_eq!(diff.selected[0].service_name(), "pyapp");
    assert!(
        diff.deny_add.is_empty(),
        "no traced cgroup: nothing to deny"
    );

    let mut d = f.discovery("instrument:\n  - exe_path: \"*\"\n", 1);
    let diff = d.scan_all();
    let p200 = diff
        .selected
        .iter()
        .find(|p| p.pid == 200)
        .expect("selected");
    assert_eq!(p200.service_name(), "from-attrs");
}

#[test]
fn hints_follow_listen_exec_exit_and_pid_reuse() {
    let f = FakeProc::new();
    f.add(Proc {
        pid: 300,
        exe: "/usr/bin/python3",
        args: &["python3", "-m", "http.server", "8123"],
        ..Proc::default()
    });
    let mut d = f.discovery("instrument:\n  - open_ports: 8123\n", 1);
    assert!(d.scan_all().is_empty(), "not listening yet");
    // The process binds and listens: the listen hint examines it at once.
    f.add(Proc {
        pid: 300,
        exe: "/usr/bin/python3",
        args: &["python3", "-m", "http.server", "8123"],
        sockets: &[9001],
        ..Proc::default()
    });
    f.set_tcp(300, &[(8123, 9001)]);
    let diff = d.examine_many(&[300, 300]);
    assert_eq!(pids_of(&diff), [300]);
    assert_eq!(diff.pids_add, [300]);
    // The pid is reused by an unrelated process that holds no socket.
    f.add(Proc {
        pid: 300,
        start: 5000,
        exe: "/bin/sleep",
        ..Proc::default()
    });
    let diff = d.examine(300);
    assert_eq!(diff.unselected, [300]);
    assert_eq!(diff.pids_remove, [300]);
    // Same pid, same server again (a new start time): reported as a fresh selection.
    f.add(Proc {
        pid: 300,
        start: 6000,
        exe: "/usr/bin/python3",
        sockets: &[9001],
        ..Proc::default()
    });
    f.set_tcp(300, &[(8123, 9001)]);
    let diff = d.examine(300);
    assert_eq!(diff.selected.len(), 1);
    assert_eq!(diff.selected[0].start_time, 6000);
    // Exit: the pid is gone from /proc.
    f.remove(300);
    let diff = d.examine(300);
    assert_eq!(diff.unselected, [300]);
    assert_eq!(diff.pids_remove, [300]);
    assert_eq!(d.selected_count(), 0);
    // An exit hint for a process we never selected changes nothing.
    assert!(d.examine(999).is_empty());
}

#[test]
fn cgroup_only_entries_select_cgroups_in_the_kernel() {
    let f = FakeProc::new();
    let sleep = |pid, cgroup, args: &'static [&'static str]| Proc {
        pid,
        exe: "/bin/sleep",
        args,
        cgroup,
        ..Proc::default()
    };
    f.add(sleep(400, "/sonde-test/a", &["sleep", "100"]));
    f.add(sleep(401, "/sonde-test/a", &["sleep", "100", "--skip-me"]));
    f.add(sleep(402, "/sonde-test/b", &["sleep", "100"]));
    f.add(sleep(403, "/other", &["sleep", "100"]));
    f.add(sleep(404, "/sonde-test/a", &["sleep", "1"]));
    f.mkcgroup("/sonde-test/a/nested");
    let yaml = "instrument:\n  - cgroup_path: \"/sonde-test/*\"\n    name: tested\n\
                exclude_instrument:\n  - cgroup_path: \"*/b\"\n  - cmd_args: \"*--skip-me*\"\n";
    let mut d = f.discovery(yaml, 404);
    let diff = d.scan_all();
    let (a, nested) = (
        f.cgroup_ino("/sonde-test/a"),
        f.cgroup_ino("/sonde-test/a/nested"),
    );
    let mut cg = diff.cgroups_add.clone();
    cg.sort_unstable();
    let mut want = vec![a, nested];
    want.sort_unstable();
    assert_eq!(
        cg, want,
        "b is excluded, /other and /sonde-test do not match"
    );
    assert_eq!(pids_of(&diff), [400]);
    assert_eq!(diff.selected[0].cgroup_id, Some(a));
    assert_eq!(diff.selected[0].service_name(), "tested");
    assert!(
        diff.pids_add.is_empty(),
        "selected through its cgroup, not its pid"
    );
    // Excluded by arguments, and ourselves: both live in a traced cgroup.
    let mut deny = diff.deny_add.clone();
    deny.sort_unstable();
    assert_eq!(deny, [401, 404]);

    // A cgroup created and filled after start-up, with no exec: the 1 s walk finds it.
    f.add(sleep(405, "/sonde-test/c", &["sleep", "5"]));
    f.set_cgroup_procs("/sonde-test/c", &[405]);
    let diff = d.tick(Instant::now());
    assert_eq!(diff.cgroups_add, [f.cgroup_ino("/sonde-test/c")]);
    assert_eq!(pids_of(&diff), [405]);
    // The directory goes away with its processes.
    f.remove(405);
    let c = f.mkcgroup("/sonde-test/c");
    fs::remove_file(c.join("cgroup.procs")).expect("rm");
    fs::remove_dir(c).expect("rmdir");
    let diff = d.tick(Instant::now() + Duration::from_secs(2));
    assert_eq!(diff.cgroups_remove.len(), 1);
    let diff = d.tick(Instant::now() + Duration::from_secs(10));
    assert_eq!(diff.unselected, [405]);
    assert!(diff.pids_remove.is_empty());
}

#[test]
fn an_exec_in_a_new_matching_cgroup_traces_it_and_checks_its_neighbours() {
    let f = FakeProc::new();
    let mut d = f.discovery(
        "instrument:\n  - container_id: \"4f1c8e3d\"\nexclude_instrument:\n  - exe_path: \"*/pause\"\n",
        1,
    );
    assert!(d.scan_all().is_empty());
    let id = "4f1c8e3d2b7a69f0e1d2c3b4a5968778695a4b3c2d1e0f9a8b7c6d5e4f3a2b1c";
    let cg = format!("/system.slice/docker-{id}.scope");
    f.add(Proc {
        pid: 500,
        exe: "/pause",
        cgroup: &cg,
        ..Proc::default()
    });
    f.add(Proc {
        pid: 501,
        exe: "/app/server",
        cgroup: &cg,
        ..Proc::default()
    });
    f.set_cgroup_procs(&cg, &[500, 501]);
    let diff = d.examine(501);
    assert_eq!(diff.cgroups_add, [f.cgroup_ino(&cg)]);
    assert_eq!(pids_of(&diff), [501]);
    assert_eq!(diff.selected[0].container_id.as_deref(), Some(id));
    assert_eq!(
        diff.deny_add,
        [500],
        "the neighbour is excluded in the same diff"
    );
    assert!(diff.pids_add.is_empty());
}

#[test]
fn tick_runs_full_scans_on_the_rescan_interval() {
    let f = FakeProc::new();
    f.add(Proc {
        pid: 600,
        exe: "/usr/bin/app",
        ..Proc::default()
    });
    let mut d = f.discovery(
        "instrument:\n  - exe_path: \"*/app\"\nrescan_interval: 5s\n",
        1,
    );
    let t0 = Instant::now();
    assert_eq!(pids_of(&d.tick(t0)), [600]);
    f.add(Proc {
        pid: 601,
        exe: "/usr/bin/app",
        ..Proc::default()
    });
    assert!(
        d.tick(t0 + Duration::from_secs(1)).is_empty(),
        "not due yet"
    );
    assert_eq!(pids_of(&d.tick(t0 + Duration::from_secs(5))), [601]);
}

#[test]
fn raw_process_reading_from_a_fake_tree() {
    let f = FakeProc::new();
    f.add(Proc {
        pid: 700,
        ppid: 42,
        exe: "/usr/bin/weird name",
        args: &["a b", "c"],
        cgroup: "/x/y",
        ..Proc::default()
    });
    // Replaced binary, comm with parentheses and spaces.
    let d = f.root().join("700");
    fs::remove_file(d.join("exe")).expect("rm");
    symlink("/srv/app (deleted)", d.join("exe")).expect("exe");
    fs::write(
        d.join("stat"),
        "700 (my (odd) app) S 42 1 1 0 -1 4194560 0 0 0 0 1 2 0 0 20 0 1 0 777 1000 100\n",
    )
    .expect("stat");
    let raw = ProcRoot::new(f.root())
        .read_process(700)
        .expect("readable")
        .expect("present");
    assert_eq!(
        raw,
        RawProcess {
            pid: 700,
            ppid: 42,
            start_time: 777,
            comm: "my (odd) app".into(),
            exe_path: "/srv/app".into(),
            cmdline: "a b c".into(),
            cgroup_path: Some("/x/y".into()),
            container_id: None,
        }
    );
    // Zombies and kernel threads are not candidates.
    fs::write(
        d.join("stat"),
        "700 (app) Z 42 1 1 0 -1 4194560 0 0 0 0 1 2 0 0 20 0 1 0 777 0 0\n",
    )
    .expect("stat");
    assert_eq!(ProcRoot::new(f.root()).read_process(700).expect("ok"), None);
    fs::write(
        d.join("stat"),
        "700 (kworker/0:1) I 2 0 0 0 -1 69238880 0 0 0 0 1 2 0 0 20 0 1 0 777 0 0\n",
    )
    .expect("stat");
    assert_eq!(ProcRoot::new(f.root()).read_process(700).expect("ok"), None);
    assert_eq!(
        ProcRoot::new(f.root()).read_process(12345).expect("ok"),
        None
    );
}

// ---------------------------------------------------------------- live /proc

fn require(what: &str, ok: bool) -> bool {
    if !ok {
        if std::env::var("SONDE_CI").as_deref() == Ok("1") {
            panic!("{what} is required when SONDE_CI=1");
        }
        eprintln!("SKIPPED: {what} is not available");
    }
    ok
}

fn python() -> Option<&'static str> {
    ["/usr/bin/python3", "python3"].into_iter().find(|p| {
        Command::new(p)
            .arg("-c")
            .arg("pass")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
    })
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("free port")
}

struct Running(Child);

impl Running {
    fn spawn(cmd: &mut Command) -> Running {
        Running(
            cmd.stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .expect("spawn"),
        )
    }
    fn pid(&self) -> u32 {
        self.0.id()
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn wait_listening(port: u16) {
    let deadline = Instant::now() + Duration::from_secs(15);
    while TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(Instant::now() < deadline, "port {port} never opened");
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn live(yaml: &str) -> Discovery {
    let cfg: DiscoveryConfig = serde_yaml::from_str(yaml).expect("config");
    pipeline_core::Validate::validate(&cfg).expect("valid");
    let sel = Selection::new(&cfg, &Shortcuts::default(), |_| None).expect("selection");
    Discovery::new(sel, DiscoveryOptions::live())
}

#[test]
fn live_python_server_selected_by_port_exe_and_args() {
    let Some(py) = python() else {
        require("python3", false);
        return;
    };
    let port = free_port();
    let server = Running::spawn(Command::new(py).args([
        "-m",
        "http.server",
        &port.to_string(),
        "--bind",
        "127.0.0.1",
    ]));
    wait_listening(port);
    let pid = server.pid();

    let mut d = live(&format!("instrument:\n  - open_ports: {port}\n"));
    let diff = d.scan_all();
    assert_eq!(pids_of(&diff), [pid], "exactly the server");
    assert_eq!(diff.pids_add, [pid]);
    let p = &diff.selected[0];
    assert!(p.exe_path.contains("python3"), "{}", p.exe_path);
    assert!(p.exe_name.starts_with("python3"), "{}", p.exe_name);
    assert!(
        p.cmdline.contains(&format!("http.server {port}")),
        "{}",
        p.cmdline
    );
    assert!(p.cgroup_path.as_deref().is_some_and(|c| c.starts_with('/')));
    assert!(p.cgroup_id.is_some_and(|id| id > 0));
    assert_eq!(p.language, Language::Python);
    assert_eq!(p.ppid, std::process::id());

    let exe_args = format!(
        "instrument:\n  - exe_path: \"*python3*\"\n    cmd_args: \"*http.server {port}*\"\n"
    );
    let mut d = live(&exe_args);
    assert_eq!(pids_of(&d.scan_all()), [pid]);

    let mut d = live(&format!(
        "{exe_args}exclude_instrument:\n  - cmd_args: \"*--bind 127.0.0.1*\"\n"
    ));
    assert!(d.scan_all().selected.is_empty(), "excluded");

    // Ourselves, even when named explicitly.
    let me = std::process::id();
    let mut d = live(&format!(
        "instrument:\n  - target_pids: [{me}, {pid}]\n  - exe_path: \"*\"\n"
    ));
    let diff = d.scan_all();
    assert!(diff.selected.iter().any(|p| p.pid == pid));
    assert!(!diff.selected.iter().any(|p| p.pid == me));

    // Exit hint.
    let mut d = live(&format!("instrument:\n  - open_ports: {port}\n"));
    assert_eq!(pids_of(&d.scan_all()), [pid]);
    drop(server);
    let diff = d.examine(pid);
    assert_eq!(diff.unselected, [pid]);
    assert_eq!(diff.pids_remove, [pid]);
}

#[test]
fn live_listen_hint_selects_a_server_once_it_listens() {
    let Some(py) = python() else {
        require("python3", false);
        return;
    };
    let port = free_port();
    let script = format!(
        "import time, http.server\ntime.sleep(0.7)\n\
         http.server.HTTPServer(('127.0.0.1', {port}), http.server.SimpleHTTPRequestHandler).serve_forever()\n"
    );
    let server = Running::spawn(Command::new(py).args(["-c", &script]));
    let pid = server.pid();
    let mut d = live(&format!("instrument:\n  - open_ports: {port}\n"));
    // Right after the exec: not listening yet.
    std::thread::sleep(Duration::from_millis(100));
    assert!(d.examine(pid).selected.is_empty());
    wait_listening(port);
    let diff = d.examine(pid);
    assert_eq!(pids_of(&diff), [pid]);
}

struct LiveCgroup(PathBuf);

impl Drop for LiveCgroup {
    fn drop(&mut self) {
        for _ in 0..50 {
            if fs::remove_dir(&self.0).is_ok() || !self.0.exists() {
                return;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

#[test]
fn live_cgroup_selection_as_root() {
    // SAFETY: geteuid has no preconditions and cannot fail.
    let root = unsafe { libc::geteuid() } == 0;
    if !require("root (cgroup test)", root) {
        return;
    }
    let mut d = live("instrument:\n  - cgroup_path: \"/sonde-disc-*\"\nexclude_instrument:\n  - cmd_args: \"sleep 31\"\n");
    let Some(cg_root) = d.cgroup_root().map(Path::to_path_buf) else {
        require("a cgroup v2 mount", false);
        return;
    };
    let name = format!("sonde-disc-{}", std::process::id());
    let dir = cg_root.join(&name);
    fs::create_dir_all(&dir).expect("mkdir cgroup");
    let _cleanup = LiveCgroup(dir.clone());
    let ino = fs::metadata(&dir).expect("cgroup").ino();

    let selected = Running::spawn(Command::new("sleep").arg("30"));
    let excluded = Running::spawn(Command::new("sleep").arg("31"));
    for p in [&selected, &excluded] {
        fs::write(dir.join("cgroup.procs"), p.pid().to_string()).expect("move into cgroup");
    }
    let diff = d.scan_all();
    assert!(diff.cgroups_add.contains(&ino), "{diff:?}");
    let p = diff
        .selected
        .iter()
        .find(|p| p.pid == selected.pid())
        .expect("the sleep in the cgroup is selected");
    assert_eq!(p.cgroup_id, Some(ino));
    assert_eq!(p.cgroup_path.as_deref(), Some(format!("/{name}").as_str()));
    assert!(!diff.pids_add.contains(&selected.pid()), "traced by cgroup");
    assert!(diff.deny_add.contains(&excluded.pid()));
    assert!(!diff.selected.iter().any(|p| p.pid == excluded.pid()));
    assert!(!diff.selected.iter().any(|p| p.pid == std::process::id()));

    // A process moved in later (no exec there) is found by the cgroup walk.
    let later = Running::spawn(Command::new("sleep").arg("32"));
    fs::write(dir.join("cgroup.procs"), later.pid().to_string()).expect("move into cgroup");
    let diff = d.scan_cgroups();
    assert_eq!(pids_of(&diff), [later.pid()]);

    drop((selected, excluded, later));
}
