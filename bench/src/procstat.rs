//! CPU time and peak memory of a process, read from Linux `/proc`.

use std::time::Duration;

#[derive(Debug, thiserror::Error)]
pub enum ProcError {
    #[error("cannot read {0}: {1}")]
    Read(String, std::io::Error),
    #[error("unexpected format of {0}")]
    Format(String),
}

/// User + system CPU time of all threads of the process, from `/proc/<pid>/stat`.
pub fn cpu_time(pid: u32) -> Result<Duration, ProcError> {
    let path = format!("/proc/{pid}/stat");
    let text = std::fs::read_to_string(&path).map_err(|e| ProcError::Read(path.clone(), e))?;
    let ticks = parse_stat_cpu_ticks(&text).ok_or(ProcError::Format(path))?;
    Ok(Duration::from_secs_f64(
        ticks as f64 / clock_ticks_per_second(),
    ))
}

/// Peak resident set size (`VmHWM`) in bytes, from `/proc/<pid>/status`.
pub fn peak_rss(pid: u32) -> Result<u64, ProcError> {
    let path = format!("/proc/{pid}/status");
    let text = std::fs::read_to_string(&path).map_err(|e| ProcError::Read(path.clone(), e))?;
    parse_status_kib(&text, "VmHWM")
        .map(|k| k * 1024)
        .ok_or(ProcError::Format(path))
}

fn clock_ticks_per_second() -> f64 {
    // SAFETY: sysconf has no preconditions.
    let t = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    if t > 0 {
        t as f64
    } else {
        100.0
    }
}

/// utime + stime (fields 14 and 15). The command name (field 2) may contain spaces and
/// parentheses, so fields are counted from the last `)`.
fn parse_stat_cpu_ticks(stat: &str) -> Option<u64> {
    let rest = &stat[stat.rfind(')')? + 1..];
    let mut fields = rest.split_whitespace();
    // `rest` starts at field 3 (state); utime is field 14.
    let utime: u64 = fields.nth(11)?.parse().ok()?;
    let stime: u64 = fields.next()?.parse().ok()?;
    Some(utime + stime)
}

fn parse_status_kib(status: &str, key: &str) -> Option<u64> {
    status.lines().find_map(|line| {
        let value = line.strip_prefix(key)?.strip_prefix(':')?;
        value.trim().strip_suffix("kB")?.trim().parse().ok()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stat_fields_are_counted_after_the_command_name() {
        let stat = "4242 (rotel (agent) x) S 1 4242 4242 0 -1 4194560 1234 0 0 0 \
                    250 75 0 0 20 0 9 0 123456 1000000 2000 18446744073709551615";
        assert_eq!(parse_stat_cpu_ticks(stat), Some(325));
        assert_eq!(parse_stat_cpu_ticks("garbage"), None);
        assert_eq!(parse_stat_cpu_ticks("1 (x) S 1 2"), None);
    }

    #[test]
    fn status_values_in_kib() {
        let status = "Name:\tsonde\nVmPeak:\t  999 kB\nVmHWM:\t   61440 kB\nVmRSS:\t 50000 kB\n";
        assert_eq!(parse_status_kib(status, "VmHWM"), Some(61440));
        assert_eq!(parse_status_kib(status, "VmSwap"), None);
    }

    #[test]
    fn reads_this_process() {
        let pid = std::process::id();
        // Burn a little CPU so the counter is not necessarily zero; it must at least parse.
        let mut x = 0u64;
        for i in 0..2_000_000u64 {
            x = x.wrapping_mul(31).wrapping_add(i);
        }
        assert!(x != 1);
        assert!(cpu_time(pid).is_ok());
        assert!(peak_rss(pid).unwrap() > 1 << 20);
        assert!(cpu_time(u32::MAX).is_err());
    }
}
