//! The kernel's view of a process's memory for `memtrim report`: every mapping of
//! /proc/PID/smaps with its RSS, PSS and swap, and the process's VmRSS.

#[derive(Clone, Debug, Default)]
pub struct Mapping {
    pub start: u64,
    pub end: u64,
    pub perms: String,
    /// Empty for an anonymous mapping; `[heap]`, `[stack]`, `[anon:NAME]`, a file path...
    pub path: String,
    pub rss: u64,
    pub pss: u64,
    pub swap: u64,
    /// MADV_FREE'd pages still counted in Rss until the kernel takes them.
    pub lazy_free: u64,
}

impl Mapping {
    pub fn len(&self) -> u64 {
        self.end - self.start
    }

    pub fn anonymous(&self) -> bool {
        self.path.is_empty() || self.path.starts_with("[anon:")
    }

    pub fn private(&self) -> bool {
        self.perms.as_bytes().get(3) == Some(&b'p')
    }

    pub fn no_access(&self) -> bool {
        self.perms.starts_with("---")
    }
}

pub fn read(pid: u32) -> Result<Vec<Mapping>, String> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/smaps")).map_err(|e| format!("cannot read /proc/{pid}/smaps: {e}"))?;
    Ok(parse(&text))
}

pub fn parse(text: &str) -> Vec<Mapping> {
    let mut v: Vec<Mapping> = Vec::new();
    for line in text.lines() {
        let mut words = line.split_whitespace();
        let Some(first) = words.next() else { continue };
        if let Some((a, b)) = first.split_once('-').filter(|(a, _)| !a.is_empty() && a.bytes().all(|c| c.is_ascii_hexdigit())) {
            let (Ok(start), Ok(end)) = (u64::from_str_radix(a, 16), u64::from_str_radix(b, 16)) else { continue };
            let perms = words.next().unwrap_or("").to_string();
            // offset, device, inode, then the path (which may hold spaces).
            let mut rest = line;
            for _ in 0..5 {
                rest = rest.trim_start();
                rest = rest.find(char::is_whitespace).map_or("", |i| &rest[i..]);
            }
            v.push(Mapping { start, end, perms, path: rest.trim().to_string(), ..Default::default() });
            continue;
        }
        let Some(m) = v.last_mut() else { continue };
        let kb = || words.clone().next().and_then(|w| w.parse::<u64>().ok()).unwrap_or(0) << 10;
        match first {
            "Rss:" => m.rss = kb(),
            "Pss:" => m.pss = kb(),
            "Swap:" => m.swap = kb(),
            "LazyFree:" => m.lazy_free = kb(),
            _ => {}
        }
    }
    v
}

/// VmRSS of /proc/PID/status, bytes.
pub fn vm_rss(pid: u32) -> Option<u64> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = s.lines().find(|l| l.starts_with("VmRSS:"))?;
    line.split_whitespace().nth(1)?.parse::<u64>().ok().map(|k| k << 10)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_entries() {
        let text = "\
55d0-55e0 r-xp 00003000 fe:00 247749                     /usr/bin/my prog
Size:                 80 kB
Rss:                  12 kB
Pss:                   6 kB
Swap:                  4 kB
VmFlags: rd mr mw me
7f00-7f10 rw-p 00000000 00:00 0 
Rss:                   8 kB
";
        let v = parse(text);
        assert_eq!(v.len(), 2);
        assert_eq!((v[0].start, v[0].end, v[0].path.as_str()), (0x55d0, 0x55e0, "/usr/bin/my prog"));
        assert_eq!((v[0].rss, v[0].pss, v[0].swap), (12 << 10, 6 << 10, 4 << 10));
        assert!(v[1].anonymous() && v[1].private());
        assert_eq!(v[1].rss, 8 << 10);
    }
}
