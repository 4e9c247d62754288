//! The portable build (scripts/package): what it needs of glibc, read from its symbol versions,
//! stays at the floor it is built for, so that it loads on every glibc from there on.
mod common;
use common::{dist, require_tool, root, show, text};
use std::path::Path;
use std::process::Command;

/// The oldest glibc the release artefacts load on (scripts/package builds against it).
const FLOOR: (u32, u32) = (2, 28);

fn dynamic_symbols(file: &Path) -> String {
    let o = Command::new("objdump").arg("-T").arg(file).output().expect("objdump runs");
    assert!(o.status.success(), "objdump -T {}: {}", file.display(), show(&o));
    text(&o.stdout)
}

/// Every GLIBC_x.y version an ELF file's dynamic symbols name, as objdump reads them.
fn glibc_versions(file: &Path) -> Vec<(u32, u32)> {
    let mut v: Vec<(u32, u32)> = dynamic_symbols(file)
        .split(|c: char| c.is_whitespace() || c == '(' || c == ')')
        .filter_map(|w| w.strip_prefix("GLIBC_"))
        .filter_map(|x| {
            let mut it = x.split('.').map(|n| n.parse::<u32>().ok());
            Some((it.next()??, it.next()??))
        })
        .collect();
    v.sort_unstable();
    v.dedup();
    v
}

#[test]
fn release_artefacts_need_no_glibc_above_the_floor() {
    if !require_tool("objdump") {
        return;
    }
    for name in ["libmemtrim.so", "memtrim"] {
        let f = dist().join(name);
        let v = glibc_versions(&f);
        assert!(!v.is_empty(), "{}: no GLIBC_ symbol versions read", f.display());
        let above: Vec<String> = v.iter().filter(|&&x| x > FLOOR).map(|(a, b)| format!("GLIBC_{a}.{b}")).collect();
        assert!(above.is_empty(), "{} needs {} (above the floor GLIBC_{}.{})", f.display(), above.join(", "), FLOOR.0, FLOOR.1);
        // A strong undefined symbol with no version is one no glibc stub defined at link time:
        // the loader would look it up by name, and fail where it is missing.
        let symbols = dynamic_symbols(&f);
        let unversioned: Vec<&str> = symbols
            .lines()
            .filter(|l| l.contains("*UND*") && !l.contains("(GLIBC_") && !l.contains(" w "))
            .map(|l| l.split_whitespace().last().unwrap_or(""))
            .filter(|s| !s.is_empty())
            .collect();
        assert!(unversioned.is_empty(), "{} leaves {} undefined with no version", f.display(), unversioned.join(", "));
    }
}

/// The check above can fail: a build linked against this machine's glibc (Debian 12: 2.36)
/// names its newer symbol versions.
#[test]
fn a_build_against_a_newer_glibc_is_seen_above_the_floor() {
    if !require_tool("objdump") {
        return;
    }
    let host = text(&Command::new("getconf").arg("GNU_LIBC_VERSION").output().expect("getconf runs").stdout);
    let minor: u32 = host.trim().rsplit('.').next().and_then(|m| m.parse().ok()).expect("glibc 2.N");
    if minor < 34 {
        eprintln!("SKIP: glibc {} predates the pthread symbols' move into libc (2.34)", host.trim());
        return;
    }
    let native = root().join("target/release/libmemtrim.so");
    let v = glibc_versions(&native);
    assert!(v.iter().any(|&x| x >= (2, 34)), "{} built on {} shows no version above 2.33: {v:?}", native.display(), host.trim());
}

/// Stripped, with the debug info in a file of its own that the stripped one names.
#[test]
fn release_artefacts_are_stripped_with_their_debug_info_beside_them() {
    if !require_tool("readelf") {
        return;
    }
    for name in ["libmemtrim.so", "memtrim"] {
        let f = dist().join(name);
        let o = Command::new("readelf").arg("-S").arg(&f).output().expect("readelf runs");
        let sections = text(&o.stdout);
        assert!(!sections.contains(".debug_info"), "{} still has .debug_info", f.display());
        assert!(sections.contains(".gnu_debuglink"), "{} names no debug file", f.display());
        let o = Command::new("readelf").arg("-S").arg(dist().join(format!("{name}.debug"))).output().expect("readelf runs");
        assert!(text(&o.stdout).contains(".debug_info"), "{name}.debug holds no .debug_info");
    }
}
