//! The memory limit and usage of the process's cgroup, v2 (`memory.max`, `memory.current`) or
//! v1 (`memory.limit_in_bytes`, `memory.usage_in_bytes`).

/// Bytes, or None when the cgroup sets no limit or none can be found.
pub fn memory_limit() -> Option<u64> {
    memory_file("memory.max", "memory.limit_in_bytes")
}

/// Bytes the cgroup's processes use, or None when it cannot be read.
pub fn memory_usage() -> Option<u64> {
    memory_file("memory.current", "memory.usage_in_bytes")
}

/// `/proc/PID/cgroup` (`self` for this process): two processes with the same text are in the
/// same cgroups.
pub fn membership(pid: &str) -> Option<String> {
    std::fs::read_to_string(format!("/proc/{pid}/cgroup")).ok()
}

fn memory_file(v2: &str, v1: &str) -> Option<u64> {
    let cg = membership("self")?;
    let mut paths = Vec::new();
    for line in cg.lines() {
        let mut f = line.splitn(3, ':');
        let (_, controllers, path) = (f.next()?, f.next()?, f.next()?);
        let path = path.trim_end_matches('/');
        if controllers.is_empty() {
            paths.push(format!("/sys/fs/cgroup{path}/{v2}"));
        } else if controllers.split(',').any(|c| c == "memory") {
            paths.push(format!("/sys/fs/cgroup/memory{path}/{v1}"));
            // Inside a container the cgroup's own directory is often the mount's root.
            paths.push(format!("/sys/fs/cgroup/memory/{v1}"));
        }
    }
    paths.iter().find_map(|p| {
        let v: u64 = std::fs::read_to_string(p).ok()?.trim().parse().ok()?;
        // v1 writes "no limit" as a huge page-aligned number; v2 writes "max", which fails to parse.
        (v < 1 << 60).then_some(v)
    })
}
