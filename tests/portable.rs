//! The release artefacts of scripts/package: the portable build, whose symbol versions stay at
//! the glibc floor it is built for, so that it loads on every glibc from there on; the wheel and
//! the .deb, each a layout in which `memtrim run` finds the library with no flag and
//! `memtrim --version` names it and its floor.
mod common;
use common::{TempDir, cli, dist, require_tool, run, show, text};
use std::path::{Path, PathBuf};
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
    let native = common::lib();
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

/// `memtrim --version`'s library line: the path and the floor it reads from the ELF file.
fn version_line(o: &std::process::Output) -> (PathBuf, (u32, u32)) {
    assert!(o.status.success(), "memtrim --version: {}", show(o));
    let out = text(&o.stdout);
    assert!(out.starts_with(&format!("memtrim {}\n", env!("CARGO_PKG_VERSION"))), "{out}");
    let line = out.lines().find_map(|l| l.strip_prefix("library: ")).unwrap_or_else(|| panic!("no library line in {out:?}"));
    let (path, rest) = line.split_once(" (needs glibc >= ").unwrap_or_else(|| panic!("no floor in {line:?}"));
    let floor = rest.split(',').next().and_then(|v| v.split_once('.')).and_then(|(a, b)| Some((a.parse().ok()?, b.parse().ok()?)));
    (PathBuf::from(path), floor.unwrap_or_else(|| panic!("floor of {line:?}")))
}

/// The library's path from inside a host that `memtrim run` started (its own maps).
const SHOW_PRELOADED: &str = "print([l.split()[-1] for l in open('/proc/self/maps') if 'libmemtrim' in l][0])";

/// In the source tree: the library beside the program, and the highest glibc version it needs
/// (objdump's reading) as its floor.
#[test]
fn version_names_the_library_of_the_source_tree_and_its_floor() {
    if !require_tool("objdump") {
        return;
    }
    let (lib, floor) = version_line(&run(Command::new(cli()).arg("--version")));
    assert_eq!(lib, common::lib().canonicalize().unwrap());
    assert_eq!(Some(&floor), glibc_versions(&lib).last(), "floor of {}", lib.display());
}

/// `pip install` of the wheel into a fresh venv puts `memtrim` on PATH and the library in the
/// package; `memtrim run` and `python -m memtrim run` preload it with no other step.
#[test]
fn wheel_installs_into_a_fresh_venv_and_preloads_its_library() {
    if !require_tool("/usr/bin/python3") {
        return;
    }
    let tmp = TempDir::new("wheel");
    let venv = tmp.join("venv");
    let o = run(Command::new("/usr/bin/python3").args(["-m", "venv"]).arg(&venv));
    assert!(o.status.success(), "python3 -m venv: {}", show(&o));
    let wheel = dist().join(format!("memtrim-{}-py3-none-manylinux_2_28_x86_64.whl", env!("CARGO_PKG_VERSION")));
    let o = run(Command::new(venv.join("bin/pip")).args(["install", "-q", "--no-index"]).arg(&wheel));
    assert!(o.status.success(), "pip install {}: {}", wheel.display(), show(&o));
    let inside = |p: &Path| p.starts_with(venv.canonicalize().unwrap()) && p.ends_with("site-packages/memtrim/lib/libmemtrim.so");
    for mut cmd in [Command::new(venv.join("bin/memtrim")), {
        let mut c = Command::new(venv.join("bin/python"));
        c.args(["-m", "memtrim"]);
        c
    }] {
        let o = run(cmd.arg("--version"));
        let (lib, floor) = version_line(&o);
        assert!(inside(&lib), "the wheel's memtrim would preload {}", lib.display());
        assert_eq!(floor, FLOOR);
    }
    let path = format!("{}:{}", venv.join("bin").display(), std::env::var("PATH").unwrap_or_default());
    let o = run(Command::new("memtrim").env("PATH", &path).args(["run", "--", "python", "-c", SHOW_PRELOADED]));
    assert!(o.status.success(), "memtrim run -- python: {}", show(&o));
    assert!(inside(Path::new(text(&o.stdout).trim())), "preloaded: {}", show(&o));
    let o = run(Command::new(venv.join("bin/python")).args(["-m", "memtrim", "run", "--", "python", "-c", SHOW_PRELOADED]).env("PATH", &path));
    assert!(o.status.success() && inside(Path::new(text(&o.stdout).trim())), "python -m memtrim run: {}", show(&o));
}

/// auditwheel finds the wheel consistent with manylinux_2_28 (its symbol versions and libraries).
#[test]
fn wheel_is_manylinux_2_28_by_auditwheel() {
    if !require_tool("auditwheel") {
        return;
    }
    let wheel = dist().join(format!("memtrim-{}-py3-none-manylinux_2_28_x86_64.whl", env!("CARGO_PKG_VERSION")));
    let o = run(Command::new("auditwheel").arg("show").arg(&wheel));
    let out = text(&o.stdout).split_whitespace().collect::<Vec<_>>().join(" ");
    assert!(o.status.success() && out.contains("is consistent with the following platform tag: \"manylinux_2_28_x86_64\""), "{}", show(&o));
}

/// The .deb: /usr/bin/memtrim, the library in /usr/lib/memtrim/ (off the linker's path), the
/// units naming /usr/bin/memtrim, the header; unpacked, its memtrim finds its library.
#[test]
fn deb_holds_the_program_its_private_library_the_units_and_the_header() {
    if !require_tool("dpkg-deb") {
        return;
    }
    let deb = dist().join(format!("memtrim_{}_amd64.deb", env!("CARGO_PKG_VERSION")));
    let o = run(Command::new("dpkg-deb").arg("-c").arg(&deb));
    let listing = text(&o.stdout);
    for path in [
        "./usr/bin/memtrim",
        "./usr/lib/memtrim/libmemtrim.so",
        "./usr/include/memtrim.h",
        "./usr/lib/systemd/system/memtrim-serve.service",
        "./usr/lib/systemd/system/memtrim-textfile.service",
        "./usr/lib/systemd/system/memtrim-textfile.timer",
    ] {
        assert!(listing.lines().any(|l| l.ends_with(&format!(" {path}"))), "{} lacks {path}:\n{listing}", deb.display());
    }
    assert!(!listing.contains("./usr/lib/libmemtrim.so"), "the library is on the linker's path:\n{listing}");
    let o = run(Command::new("dpkg-deb").args(["-f"]).arg(&deb).arg("Depends"));
    assert_eq!(text(&o.stdout).trim(), format!("libc6 (>= {}.{})", FLOOR.0, FLOOR.1));
    let tmp = TempDir::new("deb");
    let o = run(Command::new("dpkg-deb").arg("-x").arg(&deb).arg(tmp.path()));
    assert!(o.status.success(), "{}", show(&o));
    let unit = std::fs::read_to_string(tmp.join("usr/lib/systemd/system/memtrim-serve.service")).unwrap();
    assert!(unit.contains("ExecStart=/usr/bin/memtrim serve"), "{unit}");
    let (lib, floor) = version_line(&run(Command::new(tmp.join("usr/bin/memtrim")).arg("--version")));
    assert_eq!((lib, floor), (tmp.path().canonicalize().unwrap().join("usr/lib/memtrim/libmemtrim.so"), FLOOR));
    let o = run(Command::new(tmp.join("usr/bin/memtrim")).args(["run", "--", "/usr/bin/python3", "-c", SHOW_PRELOADED]));
    assert_eq!(text(&o.stdout).trim(), tmp.path().canonicalize().unwrap().join("usr/lib/memtrim/libmemtrim.so").display().to_string(), "{}", show(&o));
}

/// The .deb's shell completions (where bash-completion, zsh and fish look for them) are what its
/// memtrim prints, and its man pages (memtrim(1) and the memtrim-COMMAND(1) it refers to) render.
#[test]
fn deb_holds_the_completions_and_the_man_pages() {
    if !require_tool("dpkg-deb") {
        return;
    }
    let deb = dist().join(format!("memtrim_{}_amd64.deb", env!("CARGO_PKG_VERSION")));
    let tmp = TempDir::new("deb-docs");
    let o = run(Command::new("dpkg-deb").arg("-x").arg(&deb).arg(tmp.path()));
    assert!(o.status.success(), "{}", show(&o));
    let memtrim = tmp.join("usr/bin/memtrim");
    for (shell, path) in [
        ("bash", "usr/share/bash-completion/completions/memtrim"),
        ("zsh", "usr/share/zsh/vendor-completions/_memtrim"),
        ("fish", "usr/share/fish/vendor_completions.d/memtrim.fish"),
    ] {
        let installed = std::fs::read_to_string(tmp.join(path)).unwrap_or_else(|e| panic!("{} lacks {path}: {e}", deb.display()));
        let o = run(Command::new(&memtrim).args(["completions", shell]));
        assert!(o.status.success(), "memtrim completions {shell}: {}", show(&o));
        assert_eq!(installed.trim_end(), text(&o.stdout).trim_end(), "{path} is not what `memtrim completions {shell}` prints");
    }
    let man1 = tmp.join("usr/share/man/man1");
    let mut pages: Vec<String> = std::fs::read_dir(&man1).map(|d| d.map(|e| e.unwrap().file_name().into_string().unwrap()).collect()).unwrap_or_default();
    pages.sort();
    for cmd in ["", "-run", "-ls", "-stat", "-top", "-trim", "-report", "-clean", "-serve", "-config", "-completions"] {
        let page = format!("memtrim{cmd}.1.gz");
        assert!(pages.contains(&page), "{} lacks usr/share/man/man1/{page}: {pages:?}", deb.display());
    }
    if !require_tool("man") {
        return;
    }
    for page in &pages {
        let o = run(Command::new("man").arg("-l").arg(man1.join(page)).env("MANPAGER", "cat").env("MANWIDTH", "100"));
        assert!(o.status.success() && text(&o.stderr).is_empty() && text(&o.stdout).contains("memtrim"), "man -l {page}: {}", show(&o));
    }
}

/// A venv whose path holds a space (a project directory named so): the wheel's `memtrim run`
/// still preloads its library, as `memtrim --version` says it would.
#[test]
fn wheel_in_a_directory_with_a_space_runs_under_its_library() {
    if !require_tool("/usr/bin/python3") {
        return;
    }
    let tmp = TempDir::new("wheel-space");
    let venv = tmp.join("my project/venv");
    let o = run(Command::new("/usr/bin/python3").args(["-m", "venv"]).arg(&venv));
    assert!(o.status.success(), "python3 -m venv: {}", show(&o));
    let wheel = dist().join(format!("memtrim-{}-py3-none-manylinux_2_28_x86_64.whl", env!("CARGO_PKG_VERSION")));
    let o = run(Command::new(venv.join("bin/pip")).args(["install", "-q", "--no-index"]).arg(&wheel));
    assert!(o.status.success(), "pip install {}: {}", wheel.display(), show(&o));
    let (lib, _) = version_line(&run(Command::new(venv.join("bin/memtrim")).arg("--version")));
    let o = run(Command::new(venv.join("bin/memtrim")).args(["run", "--", "/usr/bin/python3", "-c", SHOW_PRELOADED]));
    assert!(o.status.success(), "memtrim --version names {} but memtrim run: {}", lib.display(), show(&o));
}

/// `memtrim --version` on a library whose version-needs section claims 2^32 - 1 entries, each
/// naming itself as the next (vn_next 0, which ends the list for ld.so, which loads it): the
/// answer comes at once.
#[test]
fn version_reads_a_looping_version_section_at_once() {
    let tmp = TempDir::new("version-loop");
    std::fs::create_dir_all(tmp.join("bin")).unwrap();
    std::fs::create_dir_all(tmp.join("lib")).unwrap();
    std::fs::copy(cli(), tmp.join("bin/memtrim")).unwrap();
    let mut f = std::fs::read(common::lib()).unwrap();
    let u16_at = |f: &[u8], o: usize| u16::from_le_bytes(f[o..o + 2].try_into().unwrap()) as usize;
    let u32_at = |f: &[u8], o: usize| u32::from_le_bytes(f[o..o + 4].try_into().unwrap()) as usize;
    let shoff = u64::from_le_bytes(f[0x28..0x30].try_into().unwrap()) as usize;
    let (shentsize, shnum) = (u16_at(&f, 0x3a), u16_at(&f, 0x3c));
    let s = (0..shnum).map(|i| shoff + i * shentsize).find(|&s| u32_at(&f, s + 4) == 0x6fff_fffe).expect("a .gnu.version_r");
    let off = u64::from_le_bytes(f[s + 0x18..s + 0x20].try_into().unwrap()) as usize;
    f[s + 0x2c..s + 0x30].copy_from_slice(&u32::MAX.to_le_bytes()); // sh_info: entries
    f[off + 2..off + 4].copy_from_slice(&u16::MAX.to_le_bytes()); // vn_cnt
    f[off + 12..off + 16].copy_from_slice(&0u32.to_le_bytes()); // vn_next: the last entry
    let aux = off + u32_at(&f, off + 8);
    f[aux + 12..aux + 16].copy_from_slice(&0u32.to_le_bytes()); // vna_next: the last aux
    std::fs::write(tmp.join("lib/libmemtrim.so"), &f).unwrap();
    let o = common::run_for(Command::new(tmp.join("bin/memtrim")).arg("--version"), std::time::Duration::from_secs(10));
    assert!(o.status.success(), "memtrim --version on a looping .gnu.version_r (killed after 10 s?): {}", show(&o));
}

/// A library linked with packed relative relocations needs GLIBC_ABI_DT_RELR (glibc 2.36): ld.so
/// of an older glibc refuses it ("version `GLIBC_ABI_DT_RELR' not found"), so `memtrim --version`
/// must not name an older floor for it.
#[test]
fn version_counts_glibc_abi_dt_relr_in_the_floor() {
    if !require_tool("gcc") {
        return;
    }
    let tmp = TempDir::new("version-relr");
    std::fs::create_dir_all(tmp.join("bin")).unwrap();
    std::fs::create_dir_all(tmp.join("lib")).unwrap();
    std::fs::copy(cli(), tmp.join("bin/memtrim")).unwrap();
    let src = tmp.join("relr.c");
    std::fs::write(&src, "static int a, b;\nint *tab[] = {&a, &b, &a, &b};\nint f(void) { return *tab[1]; }\n").unwrap();
    let lib = tmp.join("lib/libmemtrim.so");
    let o = run(Command::new("gcc").args(["-shared", "-fPIC", "-Wl,-z,pack-relative-relocs", "-o"]).arg(&lib).arg(&src));
    let needs = text(&run(Command::new("readelf").arg("-V").arg(&lib)).stdout).contains("GLIBC_ABI_DT_RELR");
    if !o.status.success() || !needs {
        eprintln!("SKIP: this linker cannot pack relative relocations: {}", show(&o));
        return;
    }
    let (_, floor) = version_line(&run(Command::new(tmp.join("bin/memtrim")).arg("--version")));
    assert!(floor >= (2, 36), "a library that needs GLIBC_ABI_DT_RELR: memtrim --version says it needs glibc >= {}.{}", floor.0, floor.1);
}
