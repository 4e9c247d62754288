//! Memory limits as operators write them: `pss:600MiB`, `rss:1GiB`, `uss:70%` (of the cgroup's
//! memory limit), or a bare size (PSS: forked workers share most of their pages); `cgroup:90%`
//! (bare `cgroup`: 100%), a budget on the usage of the process's cgroup, shared by every process
//! in it; and the signal sent when one is crossed.
use crate::units::{parse_fraction, parse_size};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub enum Metric {
    Rss = 1,
    Pss = 2,
    Uss = 3,
    Live = 4,
    /// The usage of the process's cgroup (memory.current, memory.usage_in_bytes).
    Cgroup = 5,
}

impl Metric {
    pub fn name(self) -> &'static str {
        match self {
            Metric::Rss => "rss",
            Metric::Pss => "pss",
            Metric::Uss => "uss",
            Metric::Live => "live",
            Metric::Cgroup => "cgroup",
        }
    }

    pub fn from_code(code: u64) -> Option<Metric> {
        [Metric::Rss, Metric::Pss, Metric::Uss, Metric::Live, Metric::Cgroup].into_iter().find(|m| *m as u64 == code)
    }
}

#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Bound {
    Bytes(u64),
    /// A fraction of the memory limit of the process's cgroup.
    OfCgroup(f64),
}

#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Limit {
    pub metric: Metric,
    pub bound: Bound,
}

pub fn parse_limit(s: &str) -> Option<Limit> {
    if s.trim() == "cgroup" {
        return Some(Limit { metric: Metric::Cgroup, bound: Bound::OfCgroup(1.0) });
    }
    let (metric, bound) = match s.split_once(':') {
        Some((m, b)) => (
            match m.trim() {
                "rss" => Metric::Rss,
                "pss" => Metric::Pss,
                "uss" => Metric::Uss,
                "live" => Metric::Live,
                "cgroup" => Metric::Cgroup,
                _ => return None,
            },
            b,
        ),
        None => (Metric::Pss, s),
    };
    let bound = if bound.trim().ends_with('%') {
        Bound::OfCgroup(parse_fraction(bound).filter(|f| *f > 0.0)?)
    } else {
        Bound::Bytes(parse_size(bound).filter(|b| *b > 0)?)
    };
    Some(Limit { metric, bound })
}

const SIGNALS: [(&str, libc::c_int); 7] = [
    ("TERM", libc::SIGTERM),
    ("INT", libc::SIGINT),
    ("HUP", libc::SIGHUP),
    ("QUIT", libc::SIGQUIT),
    ("USR1", libc::SIGUSR1),
    ("USR2", libc::SIGUSR2),
    ("KILL", libc::SIGKILL),
];

/// `TERM`, `SIGTERM` or `15`.
pub fn parse_signal(s: &str) -> Option<libc::c_int> {
    let s = s.trim();
    let name = s.strip_prefix("SIG").unwrap_or(s);
    SIGNALS.iter().find(|(n, _)| *n == name).map(|(_, v)| *v).or_else(|| s.parse().ok().filter(|n| SIGNALS.iter().any(|(_, v)| v == n)))
}

pub fn signal_name(sig: libc::c_int) -> &'static str {
    SIGNALS.iter().find(|(_, v)| *v == sig).map_or("?", |(n, _)| n)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn limits() {
        assert_eq!(parse_limit("rss:1GiB"), Some(Limit { metric: Metric::Rss, bound: Bound::Bytes(1 << 30) }));
        assert_eq!(parse_limit("600M"), Some(Limit { metric: Metric::Pss, bound: Bound::Bytes(600 << 20) }));
        assert_eq!(parse_limit("uss:70%"), Some(Limit { metric: Metric::Uss, bound: Bound::OfCgroup(0.7) }));
        assert_eq!(parse_limit("cgroup:90%"), Some(Limit { metric: Metric::Cgroup, bound: Bound::OfCgroup(0.9) }));
        assert_eq!(parse_limit("cgroup"), Some(Limit { metric: Metric::Cgroup, bound: Bound::OfCgroup(1.0) }));
        assert_eq!(parse_limit("vsz:1G"), None);
        assert_eq!(parse_limit("rss:0"), None);
        assert_eq!(parse_limit("rss:150%"), None);
    }

    #[test]
    fn signals() {
        assert_eq!(parse_signal("TERM"), Some(libc::SIGTERM));
        assert_eq!(parse_signal("SIGUSR1"), Some(libc::SIGUSR1));
        assert_eq!(parse_signal("15"), Some(libc::SIGTERM));
        assert_eq!(parse_signal("TERMINATE"), None);
        assert_eq!(signal_name(libc::SIGHUP), "HUP");
    }
}
