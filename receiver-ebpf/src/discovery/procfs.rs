//! Reading what selection needs from a /proc tree (the real one, or a fake one in tests):
//! process identity, cgroup v2 path and container id, listening TCP sockets, and a language
//! guess from the executable.

use std::collections::HashMap;
use std::fs::{self, File};
use std::io::{self, BufRead, BufReader, Read};
use std::os::unix::fs::{FileExt, MetadataExt};
use std::path::{Path, PathBuf};

use super::config::PortSet;

/// Flag in /proc/<pid>/stat marking kernel threads: never candidates.
const PF_KTHREAD: u64 = 0x0020_0000;
/// Bounds on what one process may make us read: a hostile process controls its environment
/// and command line, and any binary can claim absurd ELF header counts.
const MAX_CMDLINE: u64 = 64 * 1024;
const MAX_ENVIRON: u64 = 256 * 1024;
const MAX_SECTIONS: usize = 8192;
const MAX_SHSTRTAB: u64 = 1 << 20;

/// The root of a /proc tree.
#[derive(Debug, Clone)]
pub struct ProcRoot {
    root: PathBuf,
}

impl Default for ProcRoot {
    fn default() -> ProcRoot {
        ProcRoot::new("/proc")
    }
}

/// One process as read from /proc, before selection.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct RawProcess {
    pub pid: u32,
    pub ppid: u32,
    /// Clock ticks after boot: with the pid, tells a reused pid from the old process.
    pub start_time: u64,
    pub comm: String,
    /// Empty when the link cannot be read (another user's process without privileges).
    pub exe_path: String,
    /// Arguments joined by single spaces.
    pub cmdline: String,
    pub cgroup_path: Option<String>,
    pub container_id: Option<String>,
}

impl ProcRoot {
    pub fn new(root: impl Into<PathBuf>) -> ProcRoot {
        ProcRoot { root: root.into() }
    }

    pub fn path(&self) -> &Path {
        &self.root
    }

    fn pid_path(&self, pid: u32, leaf: &str) -> PathBuf {
        let mut p = self.root.join(pid.to_string());
        p.push(leaf);
        p
    }

    /// Process ids (thread group leaders) present now.
    pub(crate) fn pids(&self) -> io::Result<Vec<u32>> {
        let mut out = Vec::new();
        for entry in fs::read_dir(&self.root)? {
            let Ok(entry) = entry else { continue };
            if let Some(pid) = entry
                .file_name()
                .to_str()
                .and_then(|s| s.parse::<u32>().ok())
            {
                out.push(pid);
            }
        }
        Ok(out)
    }

    /// `Ok(None)` when the process is gone, a zombie, or a kernel thread.
    pub(crate) fn read_process(&self, pid: u32) -> io::Result<Option<RawProcess>> {
        let stat = match fs::read_to_string(self.pid_path(pid, "stat")) {
            Ok(s) => s,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(e),
        };
        let Some(st) = parse_stat(&stat) else {
            return Ok(None);
        };
        if matches!(st.state, 'Z' | 'X' | 'x') || st.flags & PF_KTHREAD != 0 {
            return Ok(None);
        }
        let exe_path = match fs::read_link(self.pid_path(pid, "exe")) {
            Ok(p) => {
                let s = p.to_string_lossy();
                // A replaced binary still runs; users select it by its old path.
                s.strip_suffix(" (deleted)").unwrap_or(&s).to_string()
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(_) => String::new(),
        };
        let cmdline = read_bounded(&self.pid_path(pid, "cmdline"), MAX_CMDLINE)
            .map(|b| join_nul_separated(&b))
            .unwrap_or_default();
        let cgroup_path = fs::read_to_string(self.pid_path(pid, "cgroup"))
            .ok()
            .and_then(|c| parse_cgroup_v2(&c).map(str::to_string));
        let container_id = cgroup_path
            .as_deref()
            .and_then(container_id_from_cgroup)
            .map(str::to_string);
        Ok(Some(RawProcess {
            pid,
            ppid: st.ppid,
            start_time: st.start_time,
            comm: st.comm.to_string(),
            exe_path,
            cmdline,
            cgroup_path,
            container_id,
        }))
    }

    /// The network namespace inode, to read each namespace's socket tables once.
    pub(crate) fn netns(&self, pid: u32) -> Option<u64> {
        let link = fs::read_link(self.pid_path(pid, "ns/net")).ok()?;
        let s = link.to_str()?;
        s.strip_prefix("net:[")?.strip_suffix(']')?.parse().ok()
    }

    /// LISTEN sockets on a wanted port in the network namespace of `pid`: inode -> port.
    pub(crate) fn listen_table(&self, pid: u32, wanted: &PortSet) -> HashMap<u64, u16> {
        let mut out = HashMap::new();
        for name in ["net/tcp", "net/tcp6"] {
            let Ok(f) = File::open(self.pid_path(pid, name)) else {
                continue;
            };
            for line in BufReader::new(f).lines().skip(1) {
                let Ok(line) = line else { break };
                if let Some((port, inode)) = parse_tcp_listen_line(&line) {
                    if wanted.contains(port) {
                        out.insert(inode, port);
                    }
                }
            }
        }
        out
    }

    /// Inodes of the sockets a process holds open.
    pub(crate) fn socket_inodes(&self, pid: u32) -> Vec<u64> {
        let Ok(dir) = fs::read_dir(self.pid_path(pid, "fd")) else {
            return Vec::new();
        };
        let mut out = Vec::new();
        for entry in dir.flatten() {
            if let Ok(target) = fs::read_link(entry.path()) {
                if let Some(inode) = target.to_str().and_then(parse_socket_link) {
                    out.push(inode);
                }
            }
        }
        out
    }

    /// `service.name` the process declares for itself through the OpenTelemetry variables.
    pub(crate) fn env_service_name(&self, pid: u32) -> Option<String> {
        let env = read_bounded(&self.pid_path(pid, "environ"), MAX_ENVIRON).ok()?;
        service_name_from_environ(&env)
    }

    /// (device, inode) of the executable: the key of the language cache.
    pub(crate) fn exe_identity(&self, pid: u32) -> Option<(u64, u64)> {
        let md = fs::metadata(self.pid_path(pid, "exe")).ok()?;
        Some((md.dev(), md.ino()))
    }

    pub(crate) fn language(&self, pid: u32, exe_name: &str) -> Language {
        if let Some(l) = Language::from_exe_name(exe_name) {
            return l;
        }
        // Through /proc/<pid>/exe: works for deleted binaries and other mount namespaces.
        match File::open(self.pid_path(pid, "exe")) {
            Ok(f) if elf_has_go_sections(&f).unwrap_or(false) => Language::Go,
            _ => Language::Generic,
        }
    }

    /// Pids in a cgroup v2 directory.
    /// The direct children of a process (`/proc/<pid>/task/<tid>/children` of each thread;
    /// empty when the kernel lacks CONFIG_PROC_CHILDREN).
    pub(crate) fn children(&self, pid: u32) -> Vec<u32> {
        let Ok(tasks) = fs::read_dir(self.pid_path(pid, "task")) else {
            return Vec::new();
        };
        let mut out = Vec::new();
        for task in tasks.flatten() {
            if let Ok(s) = fs::read_to_string(task.path().join("children")) {
                out.extend(
                    s.split_ascii_whitespace()
                        .filter_map(|p| p.parse::<u32>().ok()),
                );
            }
        }
        out
    }

    pub(crate) fn cgroup_procs(dir: &Path) -> Vec<u32> {
        fs::read_to_string(dir.join("cgroup.procs"))
            .map(|s| s.lines().filter_map(|l| l.trim().parse().ok()).collect())
            .unwrap_or_default()
    }
}

/// `telemetry.sdk.language` of an instrumented process, as OBI reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Language {
    Go,
    Python,
    Java,
    NodeJs,
    Ruby,
    Php,
    DotNet,
    Generic,
}

impl Language {
    pub fn as_str(self) -> &'static str {
        match self {
            Language::Go => "go",
            Language::Python => "python",
            Language::Java => "java",
            Language::NodeJs => "nodejs",
            Language::Ruby => "ruby",
            Language::Php => "php",
            Language::DotNet => "dotnet",
            Language::Generic => "generic",
        }
    }

    /// Interpreters and VMs are known by name; compiled languages need a look inside.
    fn from_exe_name(name: &str) -> Option<Language> {
        let l = if name.starts_with("python") {
            Language::Python
        } else if name == "java" {
            Language::Java
        } else if name == "node" || name == "nodejs" {
            Language::NodeJs
        } else if name.starts_with("ruby") {
            Language::Ruby
        } else if name.starts_with("php") {
            Language::Php
        } else if name == "dotnet" {
            Language::DotNet
        } else {
            return None;
        };
        Some(l)
    }
}

impl std::fmt::Display for Language {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

struct Stat<'a> {
    comm: &'a str,
    state: char,
    ppid: u32,
    flags: u64,
    start_time: u64,
}

/// `pid (comm) state ppid ...`: comm may hold spaces and parentheses, so fields are counted
/// from the last `)`.
fn parse_stat(s: &str) -> Option<Stat<'_>> {
    let open = s.find('(')?;
    let close = s.rfind(')')?;
    let comm = s.get(open + 1..close)?;
    let mut f = s.get(close + 1..)?.split_ascii_whitespace();
    let state = f.next()?.chars().next()?;
    let ppid = f.next()?.parse().ok()?;
    // Fields 5..=8 (pgrp, session, tty_nr, tpgid), then 9 flags.
    let flags = f.nth(4)?.parse().ok()?;
    // Field 22 starttime: 12 fields after flags.
    let start_time = f.nth(12)?.parse().ok()?;
    Some(Stat {
        comm,
        state,
        ppid,
        flags,
        start_time,
    })
}

fn read_bounded(path: &Path, max: u64) -> io::Result<Vec<u8>> {
    let mut buf = Vec::new();
    File::open(path)?.take(max).read_to_end(&mut buf)?;
    Ok(buf)
}

fn join_nul_separated(b: &[u8]) -> String {
    let trimmed = b.strip_suffix(&[0]).unwrap_or(b);
    String::from_utf8_lossy(trimmed).replace('\0', " ")
}

/// The unified hierarchy's line `0::/path` of /proc/<pid>/cgroup.
pub fn parse_cgroup_v2(content: &str) -> Option<&str> {
    content
        .lines()
        .find_map(|l| l.strip_prefix("0::"))
        .map(str::trim_end)
        .filter(|p| p.starts_with('/'))
}

/// The container a cgroup path belongs to: a 64-hex id anywhere in a segment (docker,
/// containerd, cri-o, podman: `/docker/<id>`, `docker-<id>.scope`, `cri-containerd-<id>.scope`,
/// `crio-<id>.scope`, `libpod-<id>.scope`, kubepods paths), or an LXC container's name
/// (`lxc.payload.<name>`, `/lxc/<name>`). The innermost segment wins.
pub fn container_id_from_cgroup(path: &str) -> Option<&str> {
    let segs: Vec<&str> = path.split('/').filter(|s| !s.is_empty()).collect();
    for (i, seg) in segs.iter().enumerate().rev() {
        if let Some(id) = find_hex64(seg) {
            return Some(id);
        }
        if let Some(name) = seg.strip_prefix("lxc.payload.") {
            if !name.is_empty() {
                return Some(name);
            }
        }
        if i > 0 && segs[i - 1] == "lxc" {
            return Some(seg);
        }
    }
    None
}

/// A run of exactly 64 lowercase hex digits.
fn find_hex64(s: &str) -> Option<&str> {
    let b = s.as_bytes();
    let mut start = None;
    for i in 0..=b.len() {
        let hex = i < b.len() && matches!(b[i], b'0'..=b'9' | b'a'..=b'f');
        match (hex, start) {
            (true, None) => start = Some(i),
            (false, Some(st)) => {
                if i - st == 64 {
                    return s.get(st..i);
                }
                start = None;
            }
            _ => {}
        }
    }
    None
}

/// Where the cgroup v2 hierarchy is mounted, from /proc/self/mountinfo (hybrid systems mount
/// it at /sys/fs/cgroup/unified, pure v2 systems at /sys/fs/cgroup).
pub fn cgroup2_mount(mountinfo: &str) -> Option<PathBuf> {
    mountinfo.lines().find_map(|line| {
        let fields: Vec<&str> = line.split(' ').collect();
        let sep = fields.iter().position(|f| *f == "-")?;
        if fields.get(sep + 1) != Some(&"cgroup2") {
            return None;
        }
        fields.get(4).map(|m| PathBuf::from(unescape_mount(m)))
    })
}

/// mountinfo escapes space, tab, newline and backslash as octal (`\040`).
fn unescape_mount(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\'
            && i + 4 <= b.len()
            && b[i + 1..i + 4].iter().all(|d| (b'0'..=b'7').contains(d))
        {
            let v = b[i + 1..i + 4]
                .iter()
                .fold(0u32, |acc, d| acc * 8 + u32::from(d - b'0'));
            if let Ok(v) = u8::try_from(v) {
                out.push(v);
                i += 4;
                continue;
            }
        }
        out.push(b[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// A LISTEN socket from a /proc/net/tcp{,6} line: (local port, inode).
pub fn parse_tcp_listen_line(line: &str) -> Option<(u16, u64)> {
    let mut f = line.split_ascii_whitespace();
    let _slot = f.next()?;
    let local = f.next()?;
    let _remote = f.next()?;
    if f.next()? != "0A" {
        return None;
    }
    // tx:rx queue, tr:when, retrnsmt, uid, timeout, then inode.
    let inode: u64 = f.nth(5)?.parse().ok()?;
    let (_, port) = local.rsplit_once(':')?;
    let port = u16::from_str_radix(port, 16).ok()?;
    (inode != 0).then_some((port, inode))
}

/// `socket:[12345]` -> 12345.
fn parse_socket_link(s: &str) -> Option<u64> {
    s.strip_prefix("socket:[")?.strip_suffix(']')?.parse().ok()
}

/// `OTEL_SERVICE_NAME`, else `service.name` in `OTEL_RESOURCE_ATTRIBUTES`.
fn service_name_from_environ(env: &[u8]) -> Option<String> {
    let mut from_attrs = None;
    for var in env.split(|b| *b == 0) {
        if let Some(v) = var.strip_prefix(b"OTEL_SERVICE_NAME=") {
            let v = String::from_utf8_lossy(v).trim().to_string();
            if !v.is_empty() {
                return Some(v);
            }
        } else if let Some(v) = var.strip_prefix(b"OTEL_RESOURCE_ATTRIBUTES=") {
            let v = String::from_utf8_lossy(v);
            from_attrs = v.split(',').find_map(|kv| {
                let (k, v) = kv.split_once('=')?;
                (k.trim() == "service.name" && !v.trim().is_empty()).then(|| v.trim().to_string())
            });
        }
    }
    from_attrs
}

/// Whether an ELF file has the sections every Go binary carries (`.go.buildinfo` since Go
/// 1.13, `.gopclntab` always, both kept by `-ldflags=-s -w`). Reads only the headers and the
/// section name table.
pub fn elf_has_go_sections(f: &File) -> io::Result<bool> {
    let mut ident = [0u8; 64];
    let n = read_at_most(f, &mut ident, 0)?;
    if n < 16 || &ident[..4] != b"\x7fELF" {
        return Ok(false);
    }
    let is64 = match ident[4] {
        1 => false,
        2 => true,
        _ => return Ok(false),
    };
    let le = match ident[5] {
        1 => true,
        2 => false,
        _ => return Ok(false),
    };
    if n < if is64 { 64 } else { 52 } {
        return Ok(false);
    }
    let rd = Reader { le };
    let (shoff, shentsize, mut shnum, mut shstrndx) = if is64 {
        (
            rd.u64(&ident[0x28..]),
            rd.u16(&ident[0x3A..]) as u64,
            rd.u16(&ident[0x3C..]) as u64,
            rd.u16(&ident[0x3E..]) as u64,
        )
    } else {
        (
            u64::from(rd.u32(&ident[0x20..])),
            rd.u16(&ident[0x2E..]) as u64,
            rd.u16(&ident[0x30..]) as u64,
            rd.u16(&ident[0x32..]) as u64,
        )
    };
    let min_ent = if is64 { 64 } else { 40 };
    if shoff == 0 || shentsize < min_ent || shentsize > 256 {
        return Ok(false);
    }
    let section = |idx: u64| -> io::Result<Vec<u8>> {
        let mut h = vec![0u8; shentsize as usize];
        let off = idx
            .checked_mul(shentsize)
            .and_then(|o| o.checked_add(shoff))
            .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidData, "section offset"))?;
        f.read_exact_at(&mut h, off)?;
        Ok(h)
    };
    // Extended numbering: the real counts live in section 0.
    if shnum == 0 || shstrndx == 0xffff {
        let s0 = section(0)?;
        if shnum == 0 {
            shnum = if is64 {
                rd.u64(&s0[32..])
            } else {
                u64::from(rd.u32(&s0[20..]))
            };
        }
        if shstrndx == 0xffff {
            shstrndx = u64::from(rd.u32(&s0[if is64 { 40 } else { 24 }..]));
        }
    }
    if shnum as usize > MAX_SECTIONS || shstrndx >= shnum {
        return Ok(false);
    }
    let mut table = vec![0u8; (shnum * shentsize) as usize];
    f.read_exact_at(&mut table, shoff)?;
    let hdr = |i: u64| &table[(i * shentsize) as usize..((i + 1) * shentsize) as usize];
    let (name_of, off_of, size_of) = if is64 {
        (0usize, 24usize, 32usize)
    } else {
        (0, 16, 20)
    };
    let field = |h: &[u8], at: usize| {
        if is64 {
            rd.u64(&h[at..])
        } else {
            u64::from(rd.u32(&h[at..]))
        }
    };
    let strtab_hdr = hdr(shstrndx);
    let (str_off, str_size) = (field(strtab_hdr, off_of), field(strtab_hdr, size_of));
    if str_size > MAX_SHSTRTAB {
        return Ok(false);
    }
    let mut strtab = vec![0u8; str_size as usize];
    f.read_exact_at(&mut strtab, str_off)?;
    for i in 0..shnum {
        let name_at = rd.u32(&hdr(i)[name_of..]) as usize;
        let Some(rest) = strtab.get(name_at..) else {
            continue;
        };
        let name = rest.split(|b| *b == 0).next().unwrap_or_default();
        if name == b".go.buildinfo" || name == b".gopclntab" {
            return Ok(true);
        }
    }
    Ok(false)
}

fn read_at_most(f: &File, buf: &mut [u8], off: u64) -> io::Result<usize> {
    let mut n = 0;
    while n < buf.len() {
        match f.read_at(&mut buf[n..], off + n as u64) {
            Ok(0) => break,
            Ok(k) => n += k,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(n)
}

#[derive(Clone, Copy)]
struct Reader {
    le: bool,
}

impl Reader {
    fn u16(self, b: &[u8]) -> u16 {
        let a = [b[0], b[1]];
        if self.le {
            u16::from_le_bytes(a)
        } else {
            u16::from_be_bytes(a)
        }
    }
    fn u32(self, b: &[u8]) -> u32 {
        let a = [b[0], b[1], b[2], b[3]];
        if self.le {
            u32::from_le_bytes(a)
        } else {
            u32::from_be_bytes(a)
        }
    }
    fn u64(self, b: &[u8]) -> u64 {
        let mut a = [0u8; 8];
        a.copy_from_slice(&b[..8]);
        if self.le {
            u64::from_le_bytes(a)
        } else {
            u64::from_be_bytes(a)
        }
    }
}
