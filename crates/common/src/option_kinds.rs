//! The kinds of value a `MEMTRIM_` variable takes: how each is read and how its range is said.
//! Reading allocates nothing for the kinds the allocator's first call reads (flags and choices).
use crate::limit::{Limit, parse_limit, parse_signal};
use crate::units::{parse_bool, parse_duration_ms, parse_fraction, parse_size};

/// A kind of value: `read` parses it (None: not a value of this kind), `range` says which
/// values it takes, for `memtrim config` and for the warning about a bad value.
pub trait Kind {
    type Out;
    fn read(&self, value: &str) -> Option<Self::Out>;
    fn range(&self) -> String;
}

/// `1/0`, `true/false`, `yes/no`, `on/off` in any case; empty is 0.
pub struct Flag;

impl Kind for Flag {
    type Out = bool;
    fn read(&self, value: &str) -> Option<bool> {
        parse_bool(value)
    }
    fn range(&self) -> String {
        "1/0, true/false, yes/no, on/off (any case; empty: 0)".into()
    }
}

/// One of a fixed set of words.
pub struct Choice<T: 'static>(pub &'static [(&'static str, T)]);

impl<T: Copy> Kind for Choice<T> {
    type Out = T;
    fn read(&self, value: &str) -> Option<T> {
        self.0.iter().find(|(word, _)| *word == value.trim()).map(|(_, v)| *v)
    }
    fn range(&self) -> String {
        let words: Vec<&str> = self.0.iter().map(|(w, _)| *w).collect();
        words.join(", ")
    }
}

/// Milliseconds from `250ms`, `2s`, `5m`, within [min, max]; with `zero`, 0 is taken too and
/// means what `zero` says (off, the first allocation...).
pub struct Millis {
    pub min: u64,
    pub max: u64,
    pub zero: Option<&'static str>,
}

impl Kind for Millis {
    type Out = u64;
    fn read(&self, value: &str) -> Option<u64> {
        parse_duration_ms(value).filter(|ms| (self.zero.is_some() && *ms == 0) || (self.min..=self.max).contains(ms))
    }
    fn range(&self) -> String {
        let span = format!("a duration from {} to {}", say_ms(self.min), say_ms(self.max));
        match self.zero {
            Some(means) => format!("0 ({means}) or {span}"),
            None => span,
        }
    }
}

/// Empty (none), or milliseconds up to `max`, 0 included.
pub struct OptionalMillis {
    pub max: u64,
}

impl Kind for OptionalMillis {
    type Out = Option<u64>;
    fn read(&self, value: &str) -> Option<Option<u64>> {
        match value.trim() {
            "" => Some(None),
            v => parse_duration_ms(v).filter(|ms| *ms <= self.max).map(Some),
        }
    }
    fn range(&self) -> String {
        format!("empty, or a duration from 0 to {}", say_ms(self.max))
    }
}

/// Bytes from `123`, `64K`, `1.5G`, `2GiB`.
pub struct Size;

impl Kind for Size {
    type Out = u64;
    fn read(&self, value: &str) -> Option<u64> {
        parse_size(value)
    }
    fn range(&self) -> String {
        "a size (8M, 64MiB, 2GiB)".into()
    }
}

/// Empty (none), or a size above zero.
pub struct OptionalSize;

impl Kind for OptionalSize {
    type Out = Option<u64>;
    fn read(&self, value: &str) -> Option<Option<u64>> {
        match value.trim() {
            "" => Some(None),
            v => parse_size(v).filter(|b| *b > 0).map(Some),
        }
    }
    fn range(&self) -> String {
        "empty, or a size above 0 (2GiB)".into()
    }
}

/// `off` (none), or a fraction in [0, 1] written `0.5` or `50%`.
pub struct FractionOrOff;

impl Kind for FractionOrOff {
    type Out = Option<f64>;
    fn read(&self, value: &str) -> Option<Option<f64>> {
        match value.trim() {
            "off" => Some(None),
            v => parse_fraction(v).map(Some),
        }
    }
    fn range(&self) -> String {
        "off, or a fraction from 0 to 1 (0.5, 50%)".into()
    }
}

/// A whole number within [min, max].
pub struct Count {
    pub min: u64,
    pub max: u64,
}

impl Kind for Count {
    type Out = u64;
    fn read(&self, value: &str) -> Option<u64> {
        value.trim().parse().ok().filter(|n| (self.min..=self.max).contains(n))
    }
    fn range(&self) -> String {
        format!("a count from {} to {}", self.min, self.max)
    }
}

/// An absolute directory; surrounding spaces and a trailing slash are dropped.
pub struct AbsoluteDir;

impl Kind for AbsoluteDir {
    type Out = String;
    fn read(&self, value: &str) -> Option<String> {
        let value = value.trim();
        value.starts_with('/').then(|| value.trim_end_matches('/').to_string())
    }
    fn range(&self) -> String {
        "an absolute directory".into()
    }
}

/// A comma list of names; empty entries are dropped.
pub struct Names;

impl Kind for Names {
    type Out = Vec<String>;
    fn read(&self, value: &str) -> Option<Vec<String>> {
        Some(value.split(',').map(str::trim).filter(|s| !s.is_empty()).map(String::from).collect())
    }
    fn range(&self) -> String {
        "a comma list of process names".into()
    }
}

/// Empty (none), or a memory limit (crate::limit).
pub struct LimitSpec;

impl Kind for LimitSpec {
    type Out = Option<Limit>;
    fn read(&self, value: &str) -> Option<Option<Limit>> {
        match value.trim() {
            "" => Some(None),
            v => parse_limit(v).map(Some),
        }
    }
    fn range(&self) -> String {
        "empty, or a limit: pss|rss|uss|live:SIZE or :PERCENT of the cgroup limit (pss:600MiB, live:1G, uss:70%; a bare SIZE or PERCENT is pss), or cgroup:PERCENT or cgroup:SIZE, a budget on the cgroup's usage shared by its processes (cgroup alone: 100%)".into()
    }
}

/// A signal by name (TERM) or number.
pub struct Signal;

impl Kind for Signal {
    type Out = libc::c_int;
    fn read(&self, value: &str) -> Option<libc::c_int> {
        parse_signal(value)
    }
    fn range(&self) -> String {
        "a signal: TERM, INT, HUP, QUIT, USR1, USR2, KILL".into()
    }
}

/// Milliseconds as an operator writes them: 10ms, 5s, 1h.
fn say_ms(ms: u64) -> String {
    match ms {
        0 => "0".into(),
        _ if ms.is_multiple_of(3_600_000) => format!("{}h", ms / 3_600_000),
        _ if ms.is_multiple_of(1000) => format!("{}s", ms / 1000),
        _ => format!("{ms}ms"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges_say_the_bounds_that_reading_enforces() {
        let m = Millis { min: 10, max: 3_600_000, zero: Some("off") };
        assert_eq!(m.range(), "0 (off) or a duration from 10ms to 1h");
        assert_eq!(Millis { min: 10, max: 1000, zero: None }.read("0"), None);
        assert_eq!((m.read("0"), m.read("9ms"), m.read("10ms"), m.read("1h"), m.read("61m")), (Some(0), None, Some(10), Some(3_600_000), None));
        let c = Count { min: 1, max: 1000 };
        assert_eq!((c.read("0"), c.read(" 7 "), c.read("1001"), c.range().as_str()), (None, Some(7), None, "a count from 1 to 1000"));
        assert_eq!(OptionalMillis { max: 1000 }.range(), "empty, or a duration from 0 to 1s");
    }

    #[test]
    fn choices_and_optional_values() {
        let k = Choice(&[("a", 1), ("b", 2)]);
        assert_eq!((k.read(" b "), k.read("c"), k.range().as_str()), (Some(2), None, "a, b"));
        assert_eq!((OptionalSize.read(""), OptionalSize.read("0"), OptionalSize.read("1K")), (Some(None), None, Some(Some(1024))));
        assert_eq!((FractionOrOff.read("off"), FractionOrOff.read("50%"), FractionOrOff.read("2")), (Some(None), Some(Some(0.5)), None));
        assert_eq!((AbsoluteDir.read("/x//"), AbsoluteDir.read("x")), (Some("/x".to_string()), None));
        assert_eq!((AbsoluteDir.read(" /dev/shm "), AbsoluteDir.read("/dev/shm/ ")), (Some("/dev/shm".to_string()), Some("/dev/shm".to_string())));
        assert_eq!((Flag.read(" YES "), Flag.read(""), Flag.read("2")), (Some(true), Some(false), None));
    }
}
