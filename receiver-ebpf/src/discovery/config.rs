//! The `discovery:` section of the receiver's YAML, the OBI shortcuts (`open_ports`,
//! `OTEL_EBPF_OPEN_PORT`, `OTEL_EBPF_AUTO_TARGET_EXE`) and the rules that decide whether one
//! process is selected.

use std::fmt;
use std::time::Duration;

use serde::de::{self, Deserializer, SeqAccess, Visitor};
use serde::Deserialize;

use super::glob::Glob;

/// Environment variable with OBI's port syntax; it replaces the top-level `open_ports`.
pub const ENV_OPEN_PORT: &str = "OTEL_EBPF_OPEN_PORT";
/// Environment variable with a glob on the executable path; it replaces the top-level
/// executable shortcut.
pub const ENV_AUTO_TARGET_EXE: &str = "OTEL_EBPF_AUTO_TARGET_EXE";

/// Ports and port ranges: `80`, `"80,443,8000-9000"`, or a YAML list of either.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct PortSet {
    /// Inclusive ranges, sorted and merged.
    ranges: Vec<(u16, u16)>,
}

impl PortSet {
    /// Parses OBI's syntax: comma-separated ports and `lo-hi` ranges, spaces allowed.
    pub fn parse(s: &str) -> Result<PortSet, String> {
        let mut set = PortSet::default();
        set.add_str(s)?;
        Ok(set)
    }

    fn add_str(&mut self, s: &str) -> Result<(), String> {
        if s.trim().is_empty() {
            return Err("empty port list".into());
        }
        for part in s.split(',') {
            let part = part.trim();
            if part.is_empty() {
                return Err(format!("empty entry in port list {s:?}"));
            }
            match part.split_once('-') {
                Some((lo, hi)) => {
                    let (lo, hi) = (parse_port(lo.trim(), part)?, parse_port(hi.trim(), part)?);
                    if lo > hi {
                        return Err(format!("invalid range {part:?}"));
                    }
                    self.ranges.push((lo, hi));
                }
                None => {
                    let p = parse_port(part, part)?;
                    self.ranges.push((p, p));
                }
            }
        }
        self.normalize();
        Ok(())
    }

    fn add_int(&mut self, v: i128) -> Result<(), String> {
        let p = u16::try_from(v)
            .ok()
            .filter(|p| *p != 0)
            .ok_or_else(|| format!("port {v} is out of range 1-65535"))?;
        self.ranges.push((p, p));
        self.normalize();
        Ok(())
    }

    fn normalize(&mut self) {
        self.ranges.sort_unstable();
        let mut merged: Vec<(u16, u16)> = Vec::with_capacity(self.ranges.len());
        for &(lo, hi) in &self.ranges {
            match merged.last_mut() {
                Some(last) if u32::from(lo) <= u32::from(last.1) + 1 => last.1 = last.1.max(hi),
                _ => merged.push((lo, hi)),
            }
        }
        self.ranges = merged;
    }

    pub fn contains(&self, port: u16) -> bool {
        // Few ranges in practice; a linear scan beats anything cleverer.
        self.ranges.iter().any(|&(lo, hi)| lo <= port && port <= hi)
    }

    pub fn is_empty(&self) -> bool {
        self.ranges.is_empty()
    }

    pub fn ranges(&self) -> &[(u16, u16)] {
        &self.ranges
    }

    fn extend(&mut self, other: &PortSet) {
        self.ranges.extend_from_slice(&other.ranges);
        self.normalize();
    }
}

fn parse_port(s: &str, part: &str) -> Result<u16, String> {
    match s.parse::<u32>() {
        Ok(p) if (1..=65535).contains(&p) => Ok(p as u16),
        Ok(p) => Err(format!("port {p} is out of range 1-65535")),
        Err(_) if s.is_empty() => Err(format!("invalid range {part:?}")),
        Err(_) => Err(format!("invalid port {s:?}")),
    }
}

impl fmt::Display for PortSet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, (lo, hi)) in self.ranges.iter().enumerate() {
            if i > 0 {
                f.write_str(",")?;
            }
            if lo == hi {
                write!(f, "{lo}")?;
            } else {
                write!(f, "{lo}-{hi}")?;
            }
        }
        Ok(())
    }
}

impl<'de> Deserialize<'de> for PortSet {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<PortSet, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = PortSet;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a port, a list like \"80,443,8000-9000\", or a list of those")
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<PortSet, E> {
                let mut s = PortSet::default();
                s.add_int(i128::from(v)).map_err(E::custom)?;
                Ok(s)
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<PortSet, E> {
                let mut s = PortSet::default();
                s.add_int(i128::from(v)).map_err(E::custom)?;
                Ok(s)
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<PortSet, E> {
                PortSet::parse(v).map_err(E::custom)
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<PortSet, A::Error> {
                let mut s = PortSet::default();
                while let Some(item) = seq.next_element::<PortSet>()? {
                    s.extend(&item);
                }
                if s.is_empty() {
                    return Err(de::Error::custom("empty port list"));
                }
                Ok(s)
            }
        }
        d.deserialize_any(V)
    }
}

/// One `instrument` / `exclude_instrument` entry: every criterion given must match.
#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct Selector {
    /// `service.name` for the processes this entry selects (instrument entries only).
    pub name: Option<String>,
    /// The process listens on one of these TCP ports.
    pub open_ports: Option<PortSet>,
    /// Glob on the executable's path.
    pub exe_path: Option<Glob>,
    /// Glob on the command line, arguments joined by single spaces.
    pub cmd_args: Option<Glob>,
    /// These exact processes (not their children).
    pub target_pids: Option<Vec<u32>>,
    /// Glob on the cgroup v2 path (as in `/proc/<pid>/cgroup`, e.g. `/system.slice/x.service`).
    pub cgroup_path: Option<Glob>,
    /// Container id found in the cgroup path: the full id or a prefix of it.
    pub container_id: Option<String>,
}

impl Selector {
    /// The selector uses only cgroup identity, so the kernel can select by cgroup id: new
    /// processes in a matching cgroup are traced from their first syscall, before any scan.
    pub fn is_cgroup_only(&self) -> bool {
        (self.cgroup_path.is_some() || self.container_id.is_some())
            && self.open_ports.is_none()
            && self.exe_path.is_none()
            && self.cmd_args.is_none()
            && self.target_pids.is_none()
    }

    fn has_criteria(&self) -> bool {
        self.open_ports.is_some()
            || self.exe_path.is_some()
            || self.cmd_args.is_some()
            || self.target_pids.is_some()
            || self.cgroup_path.is_some()
            || self.container_id.is_some()
    }

    fn validate(&self, path: &str, allow_name: bool) -> Result<(), String> {
        if !self.has_criteria() {
            return Err(format!(
                "{path}: no criteria (set open_ports, exe_path, cmd_args, target_pids, \
                 cgroup_path or container_id)"
            ));
        }
        if let Some(pids) = &self.target_pids {
            if pids.is_empty() {
                return Err(format!("{path}::target_pids: empty list"));
            }
            if pids.contains(&0) {
                return Err(format!("{path}::target_pids: 0 is not a process id"));
            }
        }
        if let Some(id) = &self.container_id {
            if id.is_empty() || id.chars().any(|c| c.is_whitespace() || c == '/') {
                return Err(format!("{path}::container_id: invalid container id {id:?}"));
            }
        }
        if let Some(name) = &self.name {
            if !allow_name {
                return Err(format!(
                    "{path}::name: only instrument entries name services"
                ));
            }
            if name.trim().is_empty() {
                return Err(format!("{path}::name: empty service name"));
            }
        }
        Ok(())
    }

    /// Matches every criterion except `open_ports` (which needs the socket tables).
    pub(crate) fn matches_static(&self, p: &ProcFacts<'_>) -> bool {
        if let Some(pids) = &self.target_pids {
            if !pids.contains(&p.pid) {
                return false;
            }
        }
        if let Some(g) = &self.exe_path {
            if !g.is_match(p.exe_path) {
                return false;
            }
        }
        if let Some(g) = &self.cmd_args {
            if !g.is_match(p.cmdline) {
                return false;
            }
        }
        if !self.matches_cgroup(p.cgroup_path, p.container_id) {
            return false;
        }
        true
    }

    /// The cgroup criteria alone, also used on cgroup directories during the tree walk.
    pub(crate) fn matches_cgroup(
        &self,
        cgroup_path: Option<&str>,
        container: Option<&str>,
    ) -> bool {
        if let Some(g) = &self.cgroup_path {
            if !cgroup_path.is_some_and(|c| g.is_match(c)) {
                return false;
            }
        }
        if let Some(want) = &self.container_id {
            if !container.is_some_and(|c| c.starts_with(want.as_str())) {
                return false;
            }
        }
        true
    }

    /// Matches a process; `ports` is asked only when the static criteria pass and the
    /// selector has `open_ports`, so the fd walk happens only for real candidates.
    pub(crate) fn matches(&self, p: &ProcFacts<'_>, ports: &mut dyn PortSource) -> bool {
        if !self.matches_static(p) {
            return false;
        }
        match &self.open_ports {
            Some(set) => ports.listening().iter().any(|port| set.contains(*port)),
            None => true,
        }
    }
}

/// What selection looks at, borrowed from a process inspection.
pub(crate) struct ProcFacts<'a> {
    pub pid: u32,
    pub exe_path: &'a str,
    pub cmdline: &'a str,
    pub cgroup_path: Option<&'a str>,
    pub container_id: Option<&'a str>,
}

/// The TCP ports a process listens on, computed on first use.
pub(crate) trait PortSource {
    fn listening(&mut self) -> &[u16];
}

fn default_exclude() -> Vec<Selector> {
    // OBI's default list, plus Sonde itself (any copy of it, not only this process).
    let g = "{*sonde,*beyla,*alloy,*obi,*otelcol,*otelcol-contrib,*otelcol-contrib[!/]*}";
    match Glob::new(g) {
        Ok(glob) => vec![Selector {
            exe_path: Some(glob),
            ..Selector::default()
        }],
        Err(_) => Vec::new(),
    }
}

fn default_rescan() -> Duration {
    Duration::from_secs(5)
}

/// `discovery:` in the receiver's configuration.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DiscoveryConfig {
    /// A process matching any entry (and no exclusion) is instrumented.
    pub instrument: Vec<Selector>,
    pub exclude_instrument: Vec<Selector>,
    /// Observability agents never worth instrumenting; `[]` allows them.
    pub default_exclude_instrument: Vec<Selector>,
    /// Full /proc rescan period: a safety net behind the exec/listen/exit hints.
    #[serde(with = "pipeline_core::duration")]
    pub rescan_interval: Duration,
}

impl Default for DiscoveryConfig {
    fn default() -> DiscoveryConfig {
        DiscoveryConfig {
            instrument: Vec::new(),
            exclude_instrument: Vec::new(),
            default_exclude_instrument: default_exclude(),
            rescan_interval: default_rescan(),
        }
    }
}

impl pipeline_core::Validate for DiscoveryConfig {
    /// Errors name the path below the receiver, e.g. `discovery::instrument[0]::target_pids`.
    fn validate(&self) -> Result<(), String> {
        for (i, s) in self.instrument.iter().enumerate() {
            s.validate(&format!("discovery::instrument[{i}]"), true)?;
        }
        for (i, s) in self.exclude_instrument.iter().enumerate() {
            s.validate(&format!("discovery::exclude_instrument[{i}]"), false)?;
        }
        for (i, s) in self.default_exclude_instrument.iter().enumerate() {
            s.validate(
                &format!("discovery::default_exclude_instrument[{i}]"),
                false,
            )?;
        }
        if self.rescan_interval < Duration::from_millis(100) {
            return Err("discovery::rescan_interval: must be at least 100ms".into());
        }
        Ok(())
    }
}

/// OBI's single-service shortcuts, outside `discovery:` (the receiver's top-level
/// `open_ports`, and an executable glob). The environment variables replace them.
#[derive(Debug, Clone, Default)]
pub struct Shortcuts {
    pub open_ports: Option<PortSet>,
    pub exe_path: Option<Glob>,
}

/// The effective rules: configured entries plus the shortcut entry.
#[derive(Debug, Clone)]
pub struct Selection {
    pub(crate) instrument: Vec<Selector>,
    pub(crate) exclude: Vec<Selector>,
    pub(crate) rescan_interval: Duration,
}

impl Selection {
    /// `env` looks a variable up (`|k| std::env::var(k).ok()` in production). The shortcut
    /// entry (ports and executable together, both must match, as in OBI) is appended to
    /// `instrument` when either is set.
    pub fn new(
        cfg: &DiscoveryConfig,
        shortcuts: &Shortcuts,
        env: impl Fn(&str) -> Option<String>,
    ) -> Result<Selection, String> {
        let mut open_ports = shortcuts.open_ports.clone();
        if let Some(v) = env(ENV_OPEN_PORT).filter(|v| !v.trim().is_empty()) {
            open_ports = Some(PortSet::parse(&v).map_err(|e| format!("{ENV_OPEN_PORT}: {e}"))?);
        }
        let mut exe_path = shortcuts.exe_path.clone();
        if let Some(v) = env(ENV_AUTO_TARGET_EXE).filter(|v| !v.trim().is_empty()) {
            exe_path = Some(Glob::new(&v).map_err(|e| format!("{ENV_AUTO_TARGET_EXE}: {e}"))?);
        }
        let mut instrument = cfg.instrument.clone();
        if open_ports.is_some() || exe_path.is_some() {
            instrument.push(Selector {
                open_ports,
                exe_path,
                ..Selector::default()
            });
        }
        let mut exclude = cfg.exclude_instrument.clone();
        exclude.extend(cfg.default_exclude_instrument.iter().cloned());
        Ok(Selection {
            instrument,
            exclude,
            rescan_interval: cfg.rescan_interval,
        })
    }

    /// Nothing would ever be selected: the receiver should refuse to start.
    pub fn is_empty(&self) -> bool {
        self.instrument.is_empty()
    }

    pub fn instrument(&self) -> &[Selector] {
        &self.instrument
    }

    /// Every port any rule asks about: listening sockets on other ports are not looked up.
    pub(crate) fn wanted_ports(&self) -> PortSet {
        let mut all = PortSet::default();
        for s in self.instrument.iter().chain(&self.exclude) {
            if let Some(p) = &s.open_ports {
                all.extend(p);
            }
        }
        all
    }

    pub(crate) fn has_cgroup_only(&self) -> bool {
        self.instrument.iter().any(Selector::is_cgroup_only)
    }

    /// Whether a cgroup directory is selected in the kernel as a whole: a cgroup-only
    /// instrument entry matches it and no cgroup-only exclusion does.
    pub(crate) fn selects_cgroup(&self, path: &str, container: Option<&str>) -> bool {
        self.instrument
            .iter()
            .any(|s| s.is_cgroup_only() && s.matches_cgroup(Some(path), container))
            && !self
                .exclude
                .iter()
                .any(|s| s.is_cgroup_only() && s.matches_cgroup(Some(path), container))
    }

    /// The verdict for one process (`self` handling is the caller's).
    pub(crate) fn evaluate(&self, p: &ProcFacts<'_>, ports: &mut dyn PortSource) -> Verdict {
        let Some(idx) = self.instrument.iter().position(|s| s.matches(p, ports)) else {
            return Verdict::NotSelected;
        };
        if self.exclude.iter().any(|s| s.matches(p, ports)) {
            return Verdict::Excluded;
        }
        Verdict::Selected(idx)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Verdict {
    NotSelected,
    /// Matched an instrument entry but also an exclusion (or it is Sonde itself).
    Excluded,
    /// Index of the first instrument entry that matched (its `name` applies).
    Selected(usize),
}

#[cfg(test)]
mod tests {
    use super::*;
    use pipeline_core::Validate;

    fn parse_cfg(yaml: &str) -> Result<DiscoveryConfig, String> {
        #[derive(Deserialize, Default)]
        #[serde(deny_unknown_fields, default)]
        struct Outer {
            discovery: DiscoveryConfig,
        }
        impl Validate for Outer {
            fn validate(&self) -> Result<(), String> {
                self.discovery.validate()
            }
        }
        let v: serde_yaml::Value = serde_yaml::from_str(yaml).map_err(|e| e.to_string())?;
        pipeline_core::parse_component::<Outer>(&v, "receivers::ebpf")
            .map(|o| o.discovery)
            .map_err(|e| e.to_string())
    }

    struct Fixed(Vec<u16>, usize);
    impl PortSource for Fixed {
        fn listening(&mut self) -> &[u16] {
            self.1 += 1;
            &self.0
        }
    }

    fn facts<'a>(pid: u32, exe: &'a str, cmd: &'a str, cg: Option<&'a str>) -> ProcFacts<'a> {
        ProcFacts {
            pid,
            exe_path: exe,
            cmdline: cmd,
            cgroup_path: cg,
            container_id: None,
        }
    }

    #[test]
    fn port_lists_and_ranges() {
        let s = PortSet::parse("8080, 8000-9000,80,443").expect("valid");
        assert_eq!(s.ranges(), &[(80, 80), (443, 443), (8000, 9000)]);
        assert!(s.contains(8500) && s.contains(80) && !s.contains(81) && !s.contains(9001));
        assert_eq!(s.to_string(), "80,443,8000-9000");
        assert_eq!(
            PortSet::parse("1-3,4,6").expect("valid").ranges(),
            &[(1, 4), (6, 6)]
        );
        assert_eq!(
            PortSet::parse("9000-8000").unwrap_err(),
            "invalid range \"9000-8000\""
        );
        assert!(PortSet::parse("0").is_err());
        assert!(PortSet::parse("70000").is_err());
        assert!(PortSet::parse("80,,81").is_err());
        assert!(PortSet::parse("http").is_err());
        assert!(PortSet::parse("80-").is_err());
        assert!(PortSet::parse("").is_err());
    }

    #[test]
    fn yaml_forms_of_open_ports() {
        let c = parse_cfg(
            "discovery:\n  instrument:\n    - open_ports: 8080\n    - open_ports: \"80,8000-8001\"\n    - open_ports: [80, \"90-91\"]\n",
        )
        .expect("valid");
        let sets: Vec<String> = c
            .instrument
            .iter()
            .map(|s| {
                s.open_ports
                    .as_ref()
                    .map(|p| p.to_string())
                    .unwrap_or_default()
            })
            .collect();
        assert_eq!(sets, ["8080", "80,8000-8001", "80,90-91"]);
    }

    #[test]
    fn errors_name_the_path() {
        let e =
            parse_cfg("discovery:\n  instrument:\n    - open_ports: \"9000-8000\"\n").unwrap_err();
        assert_eq!(
            e,
            "receivers::ebpf::discovery::instrument[0]::open_ports: invalid range \"9000-8000\""
        );
        let e = parse_cfg("discovery:\n  instrument:\n    - exe_path: \"[abc\"\n").unwrap_err();
        assert!(
            e.starts_with("receivers::ebpf::discovery::instrument[0]::exe_path: glob"),
            "{e}"
        );
        let e = parse_cfg("discovery:\n  instrument:\n    - exe_pat: x\n").unwrap_err();
        assert!(e.contains("exe_pat"), "{e}");
        let e = parse_cfg("discovery:\n  instrument:\n    - {}\n").unwrap_err();
        assert!(
            e.starts_with("receivers::ebpf: discovery::instrument[0]: no criteria"),
            "{e}"
        );
        let e =
            parse_cfg("discovery:\n  exclude_instrument:\n    - target_pids: []\n").unwrap_err();
        assert_eq!(
            e,
            "receivers::ebpf: discovery::exclude_instrument[0]::target_pids: empty list"
        );
        let e = parse_cfg("discovery:\n  exclude_instrument:\n    - {exe_path: x, name: y}\n")
            .unwrap_err();
        assert!(e.contains("exclude_instrument[0]::name"), "{e}");
        let e = parse_cfg("discovery:\n  rescan_interval: 1ms\n").unwrap_err();
        assert!(e.contains("rescan_interval"), "{e}");
    }

    #[test]
    fn defaults_exclude_agents_and_can_be_cleared() {
        let c = parse_cfg("discovery:\n  instrument:\n    - exe_path: \"*\"\n").expect("valid");
        let sel = Selection::new(&c, &Shortcuts::default(), |_| None).expect("valid");
        let mut none = Fixed(vec![], 0);
        let p = facts(
            10,
            "/usr/local/bin/otelcol-contrib",
            "otelcol-contrib",
            None,
        );
        assert_eq!(sel.evaluate(&p, &mut none), Verdict::Excluded);
        let p = facts(10, "/opt/sonde/bin/sonde", "sonde", None);
        assert_eq!(sel.evaluate(&p, &mut none), Verdict::Excluded);
        let p = facts(10, "/usr/sbin/nginx", "nginx", None);
        assert_eq!(sel.evaluate(&p, &mut none), Verdict::Selected(0));

        let c = parse_cfg(
            "discovery:\n  instrument:\n    - exe_path: \"*\"\n  default_exclude_instrument: []\n",
        )
        .expect("valid");
        let sel = Selection::new(&c, &Shortcuts::default(), |_| None).expect("valid");
        let p = facts(
            10,
            "/usr/local/bin/otelcol-contrib",
            "otelcol-contrib",
            None,
        );
        assert_eq!(sel.evaluate(&p, &mut none), Verdict::Selected(0));
    }

    #[test]
    fn all_criteria_of_an_entry_must_match_and_ports_are_lazy() {
        let c = parse_cfg(
            "discovery:\n  instrument:\n    - exe_path: \"*python3*\"\n      cmd_args: \"*http.server*\"\n      open_ports: 8000-8100\n      name: web\n    - target_pids: [42]\n  exclude_instrument:\n    - cmd_args: \"*--internal*\"\n",
        )
        .expect("valid");
        let sel = Selection::new(&c, &Shortcuts::default(), |_| None).expect("valid");
        let py = "/usr/bin/python3.11";
        let mut ports = Fixed(vec![8005], 0);
        let p = facts(7, py, "python3 -m http.server 8005", None);
        assert_eq!(sel.evaluate(&p, &mut ports), Verdict::Selected(0));
        let mut other_port = Fixed(vec![22], 0);
        assert_eq!(sel.evaluate(&p, &mut other_port), Verdict::NotSelected);
        // A process failing the static criteria never has its sockets looked up.
        let mut untouched = Fixed(vec![8005], 0);
        let p = facts(7, "/usr/bin/ruby", "ruby -run -e httpd", None);
        assert_eq!(sel.evaluate(&p, &mut untouched), Verdict::NotSelected);
        assert_eq!(untouched.1, 0);
        let p = facts(42, "/usr/bin/ruby", "ruby x", None);
        assert_eq!(sel.evaluate(&p, &mut untouched), Verdict::Selected(1));
        let p = facts(42, "/usr/bin/ruby", "ruby x --internal", None);
        assert_eq!(sel.evaluate(&p, &mut untouched), Verdict::Excluded);
    }

    #[test]
    fn cgroup_and_container_criteria() {
        let c = parse_cfg(
            "discovery:\n  instrument:\n    - cgroup_path: \"/sonde-test/*\"\n    - container_id: abc123\n  exclude_instrument:\n    - cgroup_path: \"*/skip\"\n",
        )
        .expect("valid");
        let sel = Selection::new(&c, &Shortcuts::default(), |_| None).expect("valid");
        assert!(sel.instrument.iter().all(Selector::is_cgroup_only));
        assert!(sel.selects_cgroup("/sonde-test/a", None));
        assert!(!sel.selects_cgroup("/sonde-test/skip", None));
        assert!(!sel.selects_cgroup("/other", None));
        assert!(sel.selects_cgroup("/docker/abc1234567", Some("abc1234567")));
        assert!(!sel.selects_cgroup("/docker/abd", Some("abd")));
        let mut none = Fixed(vec![], 0);
        let mut p = facts(3, "/bin/sleep", "sleep 100", Some("/sonde-test/x"));
        assert_eq!(sel.evaluate(&p, &mut none), Verdict::Selected(0));
        p.cgroup_path = None;
        assert_eq!(sel.evaluate(&p, &mut none), Verdict::NotSelected);
    }

    #[test]
    fn shortcuts_and_environment() {
        let cfg = DiscoveryConfig::default();
        let sel = Selection::new(&cfg, &Shortcuts::default(), |_| None).expect("valid");
        assert!(sel.is_empty());

        let short = Shortcuts {
            open_ports: Some(PortSet::parse("80").expect("valid")),
            exe_path: None,
        };
        let env = |k: &str| (k == ENV_OPEN_PORT).then(|| "8000-9000,8080".to_string());
        let sel = Selection::new(&cfg, &short, env).expect("valid");
        assert_eq!(sel.instrument.len(), 1);
        let ports = sel.instrument[0].open_ports.as_ref().expect("ports");
        assert_eq!(ports.to_string(), "8000-9000");
        assert!(!ports.contains(80), "the variable replaces the shortcut");
        assert!(!sel.wanted_ports().is_empty());

        let env = |k: &str| (k == ENV_AUTO_TARGET_EXE).then(|| "*/nginx".to_string());
        let sel = Selection::new(&cfg, &short, env).expect("valid");
        let entry = &sel.instrument[0];
        assert!(entry.open_ports.is_some() && entry.exe_path.is_some());

        let env = |k: &str| (k == ENV_OPEN_PORT).then(|| "9000-8000".to_string());
        let e = Selection::new(&cfg, &short, env).unwrap_err();
        assert_eq!(e, "OTEL_EBPF_OPEN_PORT: invalid range \"9000-8000\"");
    }
}
