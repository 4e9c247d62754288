//! Sizes, durations and fractions as operators write them (`512M`, `2GiB`, `250ms`, `30%`).

/// Bytes from `123`, `64K`, `64KiB`, `1.5G`, `2GiB` (K/M/G/T are binary, as in `free -h`).
pub fn parse_size(s: &str) -> Option<u64> {
    let s = s.trim();
    let split = s.find(|c: char| !(c.is_ascii_digit() || c == '.')).unwrap_or(s.len());
    let (num, unit) = s.split_at(split);
    let shift = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 0,
        "k" | "kb" | "kib" => 10,
        "m" | "mb" | "mib" => 20,
        "g" | "gb" | "gib" => 30,
        "t" | "tb" | "tib" => 40,
        _ => return None,
    };
    if num.is_empty() {
        return None;
    }
    if let Ok(n) = num.parse::<u64>() {
        return n.checked_mul(1u64 << shift);
    }
    let f: f64 = num.parse().ok()?;
    let v = f * (1u64 << shift) as f64;
    (f.is_finite() && v >= 0.0 && v < u64::MAX as f64).then_some(v as u64)
}

/// Milliseconds from `250`, `250ms`, `2s`, `1.5s`, `5m`, rounded to the nearest. A positive
/// duration that would round to 0 is None: 0 means "off" for several settings, which the
/// operator did not ask for.
pub fn parse_duration_ms(s: &str) -> Option<u64> {
    let s = s.trim();
    let split = s.find(|c: char| !(c.is_ascii_digit() || c == '.')).unwrap_or(s.len());
    let (num, unit) = s.split_at(split);
    let scale = match unit.trim() {
        "" | "ms" => 1.0,
        "s" => 1e3,
        "m" | "min" => 60e3,
        "h" => 3600e3,
        _ => return None,
    };
    let f: f64 = num.parse().ok()?;
    let v = f * scale;
    let ms = v.round();
    // zero as written, not as parsed: a positive number too small for an f64 parses as 0.0
    let zero = !num.bytes().any(|b| matches!(b, b'1'..=b'9'));
    (f.is_finite() && (0.0..1e15).contains(&v) && (ms > 0.0 || zero)).then_some(ms as u64)
}

/// A fraction in [0, 1] from `0.25` or `25%`.
pub fn parse_fraction(s: &str) -> Option<f64> {
    let s = s.trim();
    let v = match s.strip_suffix('%') {
        Some(p) => p.trim().parse::<f64>().ok()? / 100.0,
        None => s.parse::<f64>().ok()?,
    };
    (0.0..=1.0).contains(&v).then_some(v)
}

/// `1/0`, `true/false`, `yes/no`, `on/off`, in any case. Allocates nothing: the library reads
/// MEMTRIM_DISABLE with it before any allocator is chosen.
pub fn parse_bool(s: &str) -> Option<bool> {
    let s = s.trim();
    let is = |words: &[&str]| words.iter().any(|w| s.eq_ignore_ascii_case(w));
    if is(&["1", "true", "yes", "on"]) {
        Some(true)
    } else if is(&["0", "false", "no", "off", ""]) {
        Some(false)
    } else {
        None
    }
}

/// `4.0 KiB`, `112.3 MiB`: binary units, three significant figures, for people.
pub fn format_size(bytes: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = bytes as f64;
    let mut u = 0;
    while v >= 1024.0 && u + 1 < UNITS.len() {
        v /= 1024.0;
        u += 1;
    }
    if u == 0 {
        format!("{bytes} B")
    } else if v >= 100.0 {
        format!("{v:.0} {}", UNITS[u])
    } else if v >= 10.0 {
        format!("{v:.1} {}", UNITS[u])
    } else {
        format!("{v:.2} {}", UNITS[u])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes() {
        assert_eq!(parse_size("123"), Some(123));
        assert_eq!(parse_size("64K"), Some(64 << 10));
        assert_eq!(parse_size("64KiB"), Some(64 << 10));
        assert_eq!(parse_size("2 GiB"), Some(2 << 30));
        assert_eq!(parse_size("1.5M"), Some(3 << 19));
        assert_eq!(parse_size("12Q"), None);
        assert_eq!(parse_size("M"), None);
        assert_eq!(parse_size("-1"), None);
        assert_eq!(parse_size("99999999999T"), None);
    }

    #[test]
    fn durations_fractions_bools() {
        assert_eq!(parse_duration_ms("250"), Some(250));
        assert_eq!(parse_duration_ms("2s"), Some(2000));
        assert_eq!(parse_duration_ms("1.5s"), Some(1500));
        assert_eq!(parse_duration_ms("soon"), None);
        assert_eq!(parse_duration_ms("0"), Some(0));
        assert_eq!(parse_duration_ms("0.0s"), Some(0));
        assert_eq!(parse_duration_ms("0.6"), Some(1));
        assert_eq!(parse_duration_ms("0.4"), None);
        assert_eq!(parse_duration_ms("0.0000000001s"), None);
        assert_eq!(parse_duration_ms(&format!("0.{}1", "0".repeat(400))), None);
        assert_eq!(parse_fraction("25%"), Some(0.25));
        assert_eq!(parse_fraction("0.5"), Some(0.5));
        assert_eq!(parse_fraction("1.5"), None);
        assert_eq!(parse_bool("on"), Some(true));
        assert_eq!(parse_bool("nope"), None);
    }

    #[test]
    fn human_sizes() {
        assert_eq!(format_size(512), "512 B");
        assert_eq!(format_size(1536), "1.50 KiB");
        assert_eq!(format_size(150 << 20), "150 MiB");
    }
}
