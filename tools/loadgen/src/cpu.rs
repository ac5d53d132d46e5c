//! CPU time of the processes under test, from `/proc`: a server, several
//! replicas, PostgreSQL's process tree, or threads of this process. On a
//! shared machine CPU per request drifts far less than throughput.

/// CPU time (user + system) of a server, from /proc, in seconds; ticks are
/// taken as 1/100 s (CLK_TCK on Linux).
#[derive(Clone, Debug)]
pub enum CpuMeter {
    /// A whole process (threads that exited included).
    Process(u32),
    /// The threads of this process whose name starts with the prefix.
    OwnThreads(&'static str),
    /// Several whole processes (replicas), summed.
    Processes(Vec<u32>),
    /// A process and its children, those that exited and were waited for
    /// included (PostgreSQL's postmaster and its backends).
    Tree(u32),
}

impl CpuMeter {
    pub fn seconds(&self) -> Option<f64> {
        let ticks = match self {
            CpuMeter::Process(pid) => stat_ticks(&format!("/proc/{pid}/stat"))?,
            CpuMeter::OwnThreads(prefix) => {
                let mut total = 0;
                for entry in std::fs::read_dir("/proc/self/task").ok()?.flatten() {
                    let dir = entry.path();
                    let comm = std::fs::read_to_string(dir.join("comm")).unwrap_or_default();
                    if comm.starts_with(prefix) {
                        total += stat_ticks(&dir.join("stat").to_string_lossy()).unwrap_or(0);
                    }
                }
                total
            }
            CpuMeter::Processes(pids) => pids
                .iter()
                .map(|pid| stat_ticks(&format!("/proc/{pid}/stat")))
                .sum::<Option<u64>>()?,
            CpuMeter::Tree(pid) => tree_ticks(*pid)?,
        };
        Some(ticks as f64 / 100.0)
    }
}

/// The fields of `/proc/PID/stat` after the command name (which may
/// contain spaces): index 0 is field 3 (state), 1 the parent pid, 11 and 12
/// utime and stime, 13 and 14 the waited-for children's.
fn stat_fields(path: &str) -> Option<Vec<u64>> {
    let text = std::fs::read_to_string(path).ok()?;
    let rest = &text[text.rfind(')')? + 1..];
    Some(
        rest.split_whitespace()
            .map(|f| f.parse::<u64>().unwrap_or(0))
            .collect(),
    )
}

fn stat_ticks(path: &str) -> Option<u64> {
    let fields = stat_fields(path)?;
    Some(fields.get(11)? + fields.get(12)?)
}

fn tree_ticks(root: u32) -> Option<u64> {
    let own = stat_fields(&format!("/proc/{root}/stat"))?;
    let mut total = own.get(11)? + own.get(12)? + own.get(13)? + own.get(14)?;
    for entry in std::fs::read_dir("/proc").ok()?.flatten() {
        let name = entry.file_name();
        let Some(pid) = name.to_str().and_then(|n| n.parse::<u32>().ok()) else {
            continue;
        };
        if let Some(fields) = stat_fields(&format!("/proc/{pid}/stat"))
            && fields.get(1) == Some(&u64::from(root))
        {
            total += fields.get(11).unwrap_or(&0) + fields.get(12).unwrap_or(&0);
        }
    }
    Some(total)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_tree_counts_at_least_its_root() {
        let me = std::process::id();
        // Burn a little CPU so the counters are not all zero.
        let mut x = 0u64;
        for i in 0..20_000_000u64 {
            x = x.wrapping_mul(31).wrapping_add(i);
        }
        assert_ne!(x, 1);
        let own = CpuMeter::Process(me).seconds().expect("own /proc stat");
        let tree = CpuMeter::Tree(me).seconds().expect("own process tree");
        let both = CpuMeter::Processes(vec![me, me]).seconds().expect("twice");
        assert!(tree >= own, "tree {tree} < process {own}");
        assert!((both - 2.0 * own).abs() < 0.05, "{both} vs 2 x {own}");
        assert_eq!(CpuMeter::Tree(u32::MAX).seconds(), None);
    }
}
