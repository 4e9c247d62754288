//! The memory limit of the process's cgroup, v2 (`memory.max`) or v1 (`memory.limit_in_bytes`).

/// Bytes, or None when the cgroup sets no limit or none can be found.
pub fn memory_limit() -> Option<u64> {
    let cg = std::fs::read_to_string("/proc/self/cgroup").ok()?;
    let mut paths = Vec::new();
    for line in cg.lines() {
        let mut f = line.splitn(3, ':');
        let (_, controllers, path) = (f.next()?, f.next()?, f.next()?);
        let path = path.trim_end_matches('/');
        if controllers.is_empty() {
            paths.push(format!("/sys/fs/cgroup{path}/memory.max"));
        } else if controllers.split(',').any(|c| c == "memory") {
            paths.push(format!("/sys/fs/cgroup/memory{path}/memory.limit_in_bytes"));
            // Inside a container the cgroup's own directory is often the mount's root.
            paths.push("/sys/fs/cgroup/memory/memory.limit_in_bytes".to_string());
        }
    }
    paths.iter().find_map(|p| {
        let v: u64 = std::fs::read_to_string(p).ok()?.trim().parse().ok()?;
        // v1 writes "no limit" as a huge page-aligned number; v2 writes "max", which fails to parse.
        (v < 1 << 60).then_some(v)
    })
}
