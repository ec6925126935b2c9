//! Which processes the receiver traces: OBI's `discovery` selectors (`open_ports`, `exe_path`,
//! `cmd_args`, `target_pids`) plus cgroup v2 and container selection, evaluated against /proc.
//!
//! The output is what the kernel filter needs: tgids to trace, cgroup ids to trace (for
//! entries that use cgroup identity only, so a new process in such a cgroup is traced from its
//! first syscall), and tgids to skip although their cgroup is traced (exclusions, Sonde
//! itself). The caller feeds exec/listen/exit hints from the kernel to [`Discovery::examine_many`]
//! and calls [`Discovery::tick`] on a timer; both answer with a [`DiscoveryDiff`].

mod config;
mod glob;
mod procfs;
#[cfg(test)]
mod tests;

use std::collections::{HashMap, HashSet};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use config::{PortSource, ProcFacts, Verdict};
use procfs::RawProcess;

pub use config::{
    DiscoveryConfig, PortSet, Selection, Selector, Shortcuts, ENV_AUTO_TARGET_EXE, ENV_OPEN_PORT,
};
pub use glob::Glob;
pub use procfs::{
    cgroup2_mount, container_id_from_cgroup, elf_has_go_sections, parse_cgroup_v2,
    parse_tcp_listen_line, Language, ProcRoot,
};

/// How often [`Discovery::tick`] re-walks the selected part of the cgroup tree: a directory
/// created and filled after start-up (no exec happens in it) is picked up this fast.
const CGROUP_RESCAN: Duration = Duration::from_secs(1);

/// A selected process, for the resource of its spans and metrics.
#[derive(Debug, Clone, PartialEq)]
pub struct DiscoveredProcess {
    pub pid: u32,
    pub ppid: u32,
    /// Clock ticks after boot (field 22 of /proc/<pid>/stat): a reused pid has another one.
    pub start_time: u64,
    /// Empty when it could not be read.
    pub exe_path: String,
    /// Last component of `exe_path` (the comm when the path is unknown).
    pub exe_name: String,
    pub comm: String,
    /// Arguments joined by single spaces.
    pub cmdline: String,
    /// cgroup v2 path, e.g. `/system.slice/nginx.service`.
    pub cgroup_path: Option<String>,
    /// What `bpf_get_current_cgroup_id()` returns for this process.
    pub cgroup_id: Option<u64>,
    pub container_id: Option<String>,
    /// From the selector's `name`, else the process's own `OTEL_SERVICE_NAME` or
    /// `OTEL_RESOURCE_ATTRIBUTES` `service.name`.
    pub service_name: Option<String>,
    pub language: Language,
}

impl DiscoveredProcess {
    /// `service.name`: configured or declared, else the executable name (as OBI does).
    pub fn service_name(&self) -> &str {
        self.service_name.as_deref().unwrap_or(&self.exe_name)
    }
}

impl From<&DiscoveredProcess> for crate::spans::ProcessInfo {
    fn from(p: &DiscoveredProcess) -> crate::spans::ProcessInfo {
        use crate::spans::SdkLanguage;
        crate::spans::ProcessInfo {
            pid: p.pid,
            exe_path: p.exe_path.clone(),
            exe_name: p.exe_name.clone(),
            cmdline: p.cmdline.clone(),
            cgroup_path: p.cgroup_path.clone(),
            container_id: p.container_id.clone(),
            service_name: p.service_name.clone(),
            sdk_language: match p.language {
                Language::Go => SdkLanguage::Go,
                Language::Python => SdkLanguage::Python,
                Language::Java => SdkLanguage::Java,
                Language::NodeJs => SdkLanguage::NodeJs,
                Language::Ruby => SdkLanguage::Ruby,
                Language::Php => SdkLanguage::Php,
                Language::DotNet => SdkLanguage::DotNet,
                Language::Generic => SdkLanguage::Generic,
            },
        }
    }
}

/// What changed since the last call. Apply the kernel fields in this order so an excluded
/// process is never traced through its cgroup: `deny_add`, `cgroups_add`, `pids_add`, then
/// `pids_remove`, `cgroups_remove`, `deny_remove`.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct DiscoveryDiff {
    /// Newly selected processes, and selected ones whose identity changed (exec, pid reuse):
    /// replace what is known about that pid.
    pub selected: Vec<DiscoveredProcess>,
    /// Pids no longer selected (exited, or no longer matching).
    pub unselected: Vec<u32>,
    /// Tgids for the kernel's pid map.
    pub pids_add: Vec<u32>,
    pub pids_remove: Vec<u32>,
    /// Cgroup ids for the kernel's cgroup map.
    pub cgroups_add: Vec<u64>,
    pub cgroups_remove: Vec<u64>,
    /// Tgids living in a traced cgroup that must not be traced (excluded, or Sonde).
    pub deny_add: Vec<u32>,
    pub deny_remove: Vec<u32>,
}

impl DiscoveryDiff {
    pub fn is_empty(&self) -> bool {
        self.selected.is_empty()
            && self.unselected.is_empty()
            && self.pids_add.is_empty()
            && self.pids_remove.is_empty()
            && self.cgroups_add.is_empty()
            && self.cgroups_remove.is_empty()
            && self.deny_add.is_empty()
            && self.deny_remove.is_empty()
    }
}

/// Where to look, and who we are.
#[derive(Debug, Clone)]
pub struct DiscoveryOptions {
    pub proc_root: ProcRoot,
    /// The cgroup v2 mount; `None` finds it in `<proc_root>/self/mountinfo`.
    pub cgroup_root: Option<PathBuf>,
    /// Never selected (denied when its cgroup is traced).
    pub self_pid: u32,
}

impl DiscoveryOptions {
    /// The real /proc, this process as self.
    pub fn live() -> DiscoveryOptions {
        DiscoveryOptions {
            proc_root: ProcRoot::default(),
            cgroup_root: None,
            self_pid: std::process::id(),
        }
    }
}

struct Tracked {
    info: DiscoveredProcess,
    /// Selected through the pid map (not covered by a traced cgroup).
    kernel_pid: bool,
}

enum Outcome {
    Gone,
    Seen {
        raw: RawProcess,
        cgroup_id: Option<u64>,
        verdict: Verdict,
    },
}

/// Socket tables are read once per network namespace per scan or hint batch.
#[derive(Default)]
struct ScanCtx {
    tables: HashMap<u64, HashMap<u64, u16>>,
}

struct LazyPorts<'a> {
    proc: &'a ProcRoot,
    wanted: &'a PortSet,
    ctx: &'a mut ScanCtx,
    pid: u32,
    ports: Option<Vec<u16>>,
}

impl PortSource for LazyPorts<'_> {
    fn listening(&mut self) -> &[u16] {
        if self.ports.is_none() {
            self.ports = Some(self.compute());
        }
        self.ports.as_deref().unwrap_or_default()
    }
}

impl LazyPorts<'_> {
    fn compute(&mut self) -> Vec<u16> {
        // The fds first: a fresh exec usually holds no socket, and reading a socket table
        // costs milliseconds (the kernel walks its whole connection hash to print it).
        let inodes = self.proc.socket_inodes(self.pid);
        if inodes.is_empty() {
            return Vec::new();
        }
        let local;
        let table = match self.proc.netns(self.pid) {
            Some(ns) => self
                .ctx
                .tables
                .entry(ns)
                .or_insert_with(|| self.proc.listen_table(self.pid, self.wanted)),
            None => {
                local = self.proc.listen_table(self.pid, self.wanted);
                &local
            }
        };
        let mut ports: Vec<u16> = inodes
            .into_iter()
            .filter_map(|inode| table.get(&inode).copied())
            .collect();
        ports.sort_unstable();
        ports.dedup();
        ports
    }
}

/// The selection state machine. Not thread-safe by itself; one task owns it.
pub struct Discovery {
    sel: Selection,
    proc: ProcRoot,
    cgroup_root: Option<PathBuf>,
    self_pid: u32,
    wanted_ports: PortSet,
    selected: HashMap<u32, Tracked>,
    denied: HashSet<u32>,
    /// Cgroups traced in the kernel: id -> path.
    cgroups: HashMap<u64, String>,
    lang_cache: HashMap<(u64, u64), Language>,
    last_full: Option<Instant>,
    last_cgroups: Option<Instant>,
}

impl Discovery {
    /// Reads the mount table when `opts.cgroup_root` is `None`; call it from the receiver's
    /// start, not from config building.
    pub fn new(sel: Selection, opts: DiscoveryOptions) -> Discovery {
        let cgroup_root = opts.cgroup_root.or_else(|| {
            std::fs::read_to_string(opts.proc_root.path().join("self/mountinfo"))
                .ok()
                .and_then(|m| cgroup2_mount(&m))
        });
        Discovery {
            wanted_ports: sel.wanted_ports(),
            sel,
            proc: opts.proc_root,
            cgroup_root,
            self_pid: opts.self_pid,
            selected: HashMap::new(),
            denied: HashSet::new(),
            cgroups: HashMap::new(),
            lang_cache: HashMap::new(),
            last_full: None,
            last_cgroups: None,
        }
    }

    pub fn selection(&self) -> &Selection {
        &self.sel
    }

    pub fn cgroup_root(&self) -> Option<&Path> {
        self.cgroup_root.as_deref()
    }

    pub fn selected_processes(&self) -> impl Iterator<Item = &DiscoveredProcess> {
        self.selected.values().map(|t| &t.info)
    }

    pub fn process(&self, pid: u32) -> Option<&DiscoveredProcess> {
        self.selected.get(&pid).map(|t| &t.info)
    }

    pub fn selected_count(&self) -> usize {
        self.selected.len()
    }

    /// Cgroup ids traced in the kernel, with their paths.
    pub fn kernel_cgroups(&self) -> impl Iterator<Item = (u64, &str)> {
        self.cgroups.iter().map(|(id, p)| (*id, p.as_str()))
    }

    /// Runs what is due: a full scan every `rescan_interval` (the first call scans at once),
    /// otherwise the cgroup walk every second when cgroup entries exist.
    pub fn tick(&mut self, now: Instant) -> DiscoveryDiff {
        let due = |last: Option<Instant>, every: Duration| {
            last.is_none_or(|t| now.saturating_duration_since(t) >= every)
        };
        if due(self.last_full, self.sel.rescan_interval) {
            let diff = self.scan_all();
            self.last_full = Some(now);
            self.last_cgroups = Some(now);
            return diff;
        }
        if self.sel.has_cgroup_only() && due(self.last_cgroups, CGROUP_RESCAN) {
            self.last_cgroups = Some(now);
            return self.scan_cgroups();
        }
        DiscoveryDiff::default()
    }

    /// Every process in /proc, and the cgroup tree.
    pub fn scan_all(&mut self) -> DiscoveryDiff {
        let mut diff = DiscoveryDiff::default();
        self.walk_cgroups(&mut diff);
        let pids = match self.proc.pids() {
            Ok(p) => p,
            Err(e) => {
                tracing::warn!(error = %e, root = %self.proc.path().display(), "cannot list processes");
                return diff;
            }
        };
        let mut ctx = ScanCtx::default();
        let present: HashSet<u32> = pids.iter().copied().collect();
        for &pid in &pids {
            let outcome = self.inspect(pid, &mut ctx);
            self.maybe_add_cgroup(&outcome, &mut diff);
            self.apply(pid, outcome, &mut diff);
        }
        let gone: Vec<u32> = self
            .selected
            .keys()
            .chain(self.denied.iter())
            .filter(|p| !present.contains(p))
            .copied()
            .collect();
        for pid in gone {
            self.apply(pid, Outcome::Gone, &mut diff);
        }
        self.last_full = Some(Instant::now());
        diff
    }

    /// The cgroup tree only, and any process in a traced cgroup not examined yet (moved in
    /// without an exec).
    pub fn scan_cgroups(&mut self) -> DiscoveryDiff {
        let mut diff = DiscoveryDiff::default();
        self.walk_cgroups(&mut diff);
        let mut pids = Vec::new();
        if let Some(root) = &self.cgroup_root {
            for path in self.cgroups.values() {
                for pid in ProcRoot::cgroup_procs(&cgroup_dir(root, path)) {
                    if !self.selected.contains_key(&pid) && !self.denied.contains(&pid) {
                        pids.push(pid);
                    }
                }
            }
        }
        self.examine_into(&pids, &mut diff);
        diff
    }

    /// One process, after an exec, listen or exit hint.
    pub fn examine(&mut self, pid: u32) -> DiscoveryDiff {
        self.examine_many(&[pid])
    }

    /// A batch of hinted pids (duplicates are fine): socket tables are read once per batch.
    pub fn examine_many(&mut self, pids: &[u32]) -> DiscoveryDiff {
        let mut diff = DiscoveryDiff::default();
        self.examine_into(pids, &mut diff);
        diff
    }

    fn examine_into(&mut self, pids: &[u32], diff: &mut DiscoveryDiff) {
        let mut ctx = ScanCtx::default();
        let mut seen: HashSet<u32> = HashSet::with_capacity(pids.len());
        let mut queue: Vec<u32> = pids.iter().rev().copied().collect();
        while let Some(pid) = queue.pop() {
            if !seen.insert(pid) {
                continue;
            }
            let was_selected = self.selected.contains_key(&pid);
            let outcome = self.inspect(pid, &mut ctx);
            // A cgroup newly traced here may hold other processes: look at them now, so
            // exclusions among them are denied in the same diff that traces the cgroup.
            if let Some(dir) = self.maybe_add_cgroup(&outcome, diff) {
                queue.extend(ProcRoot::cgroup_procs(&dir));
            }
            self.apply(pid, outcome, diff);
            if !was_selected && self.selected.contains_key(&pid) {
                // Children forked before this selection reached the kernel (which selects
                // later forks itself): nginx forks its workers right after the listen that
                // made the master visible. They share its sockets, so they usually match too.
                queue.extend(self.proc.children(pid));
            }
        }
    }

    fn inspect(&self, pid: u32, ctx: &mut ScanCtx) -> Outcome {
        let raw = match self.proc.read_process(pid) {
            Ok(Some(raw)) => raw,
            Ok(None) => return Outcome::Gone,
            Err(e) => {
                tracing::debug!(pid, error = %e, "cannot inspect process");
                return Outcome::Gone;
            }
        };
        let cgroup_id = match (&self.cgroup_root, &raw.cgroup_path) {
            (Some(root), Some(path)) => std::fs::metadata(cgroup_dir(root, path))
                .ok()
                .map(|m| m.ino()),
            _ => None,
        };
        let verdict = if pid == self.self_pid {
            Verdict::Excluded
        } else {
            let facts = ProcFacts {
                pid,
                exe_path: &raw.exe_path,
                cmdline: &raw.cmdline,
                cgroup_path: raw.cgroup_path.as_deref(),
                container_id: raw.container_id.as_deref(),
            };
            let mut ports = LazyPorts {
                proc: &self.proc,
                wanted: &self.wanted_ports,
                ctx,
                pid,
                ports: None,
            };
            self.sel.evaluate(&facts, &mut ports)
        };
        Outcome::Seen {
            raw,
            cgroup_id,
            verdict,
        }
    }

    /// Traces the process's cgroup in the kernel if a cgroup-only entry selects it and the
    /// walk has not seen it yet; returns its directory.
    fn maybe_add_cgroup(&mut self, outcome: &Outcome, diff: &mut DiscoveryDiff) -> Option<PathBuf> {
        let Outcome::Seen { raw, cgroup_id, .. } = outcome else {
            return None;
        };
        let (id, path, root) = (
            (*cgroup_id)?,
            raw.cgroup_path.as_deref()?,
            self.cgroup_root.as_ref()?,
        );
        if self.cgroups.contains_key(&id)
            || !self.sel.has_cgroup_only()
            || !self.sel.selects_cgroup(path, raw.container_id.as_deref())
        {
            return None;
        }
        self.cgroups.insert(id, path.to_string());
        diff.cgroups_add.push(id);
        Some(cgroup_dir(root, path))
    }

    fn apply(&mut self, pid: u32, outcome: Outcome, diff: &mut DiscoveryDiff) {
        let (raw, cgroup_id, verdict) = match outcome {
            Outcome::Gone => {
                self.forget(pid, diff);
                if self.denied.remove(&pid) {
                    diff.deny_remove.push(pid);
                }
                return;
            }
            Outcome::Seen {
                raw,
                cgroup_id,
                verdict,
            } => (raw, cgroup_id, verdict),
        };
        let in_traced_cgroup = cgroup_id.is_some_and(|id| self.cgroups.contains_key(&id));
        let Verdict::Selected(idx) = verdict else {
            self.forget(pid, diff);
            if in_traced_cgroup {
                if self.denied.insert(pid) {
                    diff.deny_add.push(pid);
                }
            } else if self.denied.remove(&pid) {
                diff.deny_remove.push(pid);
            }
            return;
        };
        if self.denied.remove(&pid) {
            diff.deny_remove.push(pid);
        }
        let info = self.describe(raw, cgroup_id, idx);
        let kernel_pid = !in_traced_cgroup;
        match self.selected.get_mut(&pid) {
            Some(t) => {
                if t.info != info {
                    tracing::debug!(pid, exe = %info.exe_path, "selected process changed");
                    diff.selected.push(info.clone());
                    t.info = info;
                }
                if t.kernel_pid != kernel_pid {
                    if kernel_pid {
                        diff.pids_add.push(pid);
                    } else {
                        diff.pids_remove.push(pid);
                    }
                    t.kernel_pid = kernel_pid;
                }
            }
            None => {
                tracing::debug!(pid, exe = %info.exe_path, service = info.service_name(), "process selected");
                diff.selected.push(info.clone());
                if kernel_pid {
                    diff.pids_add.push(pid);
                }
                self.selected.insert(pid, Tracked { info, kernel_pid });
            }
        }
    }

    fn forget(&mut self, pid: u32, diff: &mut DiscoveryDiff) {
        if let Some(t) = self.selected.remove(&pid) {
            tracing::debug!(pid, "process unselected");
            diff.unselected.push(pid);
            if t.kernel_pid {
                diff.pids_remove.push(pid);
            }
        }
    }

    fn describe(
        &mut self,
        raw: RawProcess,
        cgroup_id: Option<u64>,
        idx: usize,
    ) -> DiscoveredProcess {
        let exe_name = match raw.exe_path.rsplit('/').next() {
            Some(n) if !n.is_empty() => n.to_string(),
            _ => raw.comm.clone(),
        };
        let language = match self.proc.exe_identity(raw.pid) {
            Some(key) => match self.lang_cache.get(&key) {
                Some(l) => *l,
                None => {
                    let l = self.proc.language(raw.pid, &exe_name);
                    self.lang_cache.insert(key, l);
                    l
                }
            },
            None => self.proc.language(raw.pid, &exe_name),
        };
        let service_name = self
            .sel
            .instrument()
            .get(idx)
            .and_then(|s| s.name.clone())
            .or_else(|| self.proc.env_service_name(raw.pid));
        DiscoveredProcess {
            pid: raw.pid,
            ppid: raw.ppid,
            start_time: raw.start_time,
            exe_path: raw.exe_path,
            exe_name,
            comm: raw.comm,
            cmdline: raw.cmdline,
            cgroup_path: raw.cgroup_path,
            cgroup_id,
            container_id: raw.container_id,
            service_name,
            language,
        }
    }

    /// Recomputes the traced cgroups: directories matched by a cgroup-only entry, walking
    /// only below each entry's literal prefix.
    fn walk_cgroups(&mut self, diff: &mut DiscoveryDiff) {
        let Some(root) = self.cgroup_root.clone() else {
            return;
        };
        if !self.sel.has_cgroup_only() {
            return;
        }
        let mut starts: Vec<String> = self
            .sel
            .instrument()
            .iter()
            .filter(|s| s.is_cgroup_only())
            .map(|s| {
                s.cgroup_path
                    .as_ref()
                    .map(|g| g.literal_dir_prefix().to_string())
                    .unwrap_or_default()
            })
            .collect();
        starts.sort();
        starts.dedup();
        // A start below another start is visited by the walk from that one.
        let starts: Vec<&String> = starts
            .iter()
            .filter(|s| {
                !starts
                    .iter()
                    .any(|o| o != *s && (o.is_empty() || s.starts_with(&format!("{o}/"))))
            })
            .collect();
        let mut found: HashMap<u64, String> = HashMap::new();
        for start in starts {
            let rel = if start.is_empty() {
                "/".to_string()
            } else {
                start.clone()
            };
            let mut stack = vec![(cgroup_dir(&root, &rel), rel)];
            while let Some((dir, rel)) = stack.pop() {
                if self
                    .sel
                    .selects_cgroup(&rel, container_id_from_cgroup(&rel))
                {
                    if let Ok(md) = std::fs::metadata(&dir) {
                        found.insert(md.ino(), rel.clone());
                    }
                }
                let Ok(entries) = std::fs::read_dir(&dir) else {
                    continue;
                };
                for entry in entries.flatten() {
                    if !entry.file_type().is_ok_and(|t| t.is_dir()) {
                        continue;
                    }
                    let Some(name) = entry.file_name().to_str().map(str::to_string) else {
                        continue;
                    };
                    let child = if rel == "/" {
                        format!("/{name}")
                    } else {
                        format!("{rel}/{name}")
                    };
                    stack.push((entry.path(), child));
                }
            }
        }
        for (id, path) in &found {
            if !self.cgroups.contains_key(id) {
                tracing::debug!(cgroup = %path, id, "cgroup selected");
                diff.cgroups_add.push(*id);
            }
        }
        for id in self.cgroups.keys() {
            if !found.contains_key(id) {
                diff.cgroups_remove.push(*id);
            }
        }
        self.cgroups = found;
    }
}

fn cgroup_dir(root: &Path, path: &str) -> PathBuf {
    let rel = path.trim_start_matches('/');
    if rel.is_empty() {
        root.to_path_buf()
    } else {
        root.join(rel)
    }
}
