//! What the integration tests share: where the built artefacts are, compiling the C programs,
//! running commands with the library preloaded, and requiring tools on CI.
#![allow(dead_code)] // each test binary uses a different part of this module

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

pub fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn target_dir() -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR").map(PathBuf::from).unwrap_or_else(|| root().join("target"))
}

/// The preloadable library of the same profile as the running test.
pub fn lib() -> PathBuf {
    let profile = if cfg!(debug_assertions) { "debug" } else { "release" };
    let p = target_dir().join(profile).join("libmemtrim.so");
    assert!(p.exists(), "{} is missing: run `cargo build --release` first", p.display());
    p
}

pub fn cli() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_memtrim"))
}

/// Whether `tool` is on PATH. On CI (CI=true) a missing tool fails the test instead of
/// skipping it; elsewhere the skip is printed.
pub fn require_tool(tool: &str) -> bool {
    let found = Command::new("sh").arg("-c").arg(format!("command -v {tool}")).output().map(|o| o.status.success()).unwrap_or(false);
    if !found {
        assert!(std::env::var("CI").as_deref() != Ok("true"), "{tool} is required on CI but missing");
        eprintln!("SKIP: {tool} not installed");
    }
    found
}

/// Compiles tests/c/NAME (C or C++ by extension) into the target dir, with include/ on the
/// include path; returns the binary.
pub fn compile(name: &str, extra: &[&str]) -> PathBuf {
    let src = root().join("tests/c").join(name);
    let out_dir = target_dir().join("test-programs");
    std::fs::create_dir_all(&out_dir).unwrap();
    let stem = Path::new(name).file_stem().unwrap().to_str().unwrap();
    let out = out_dir.join(stem);
    let cc = if name.ends_with(".cpp") { "g++" } else { "gcc" };
    let st = Command::new(cc)
        .args(["-O1", "-g", "-Wall", "-pthread", "-o"])
        .arg(&out)
        .arg(&src)
        .arg(format!("-I{}", root().join("include").display()))
        .args(extra)
        .args(["-ldl"])
        .status()
        .expect("compiler runs");
    assert!(st.success(), "{cc} failed on {}", src.display());
    out
}

/// The backend the tests run against: TEST_ALLOCATOR (glibc or jemalloc; scripts/test
/// runs the suite once with each).
pub fn allocator() -> String {
    std::env::var("TEST_ALLOCATOR").unwrap_or_else(|_| "glibc".into())
}

/// `cmd` with the library preloaded in front of any LD_PRELOAD it already has, on the backend
/// under test.
pub fn preloaded(cmd: &mut Command) -> &mut Command {
    cmd.env("MEMTRIM_ALLOCATOR", allocator());
    let mut preload = lib().into_os_string();
    if let Some(old) = std::env::var_os("LD_PRELOAD") {
        preload.push(":");
        preload.push(old);
    }
    cmd.env("LD_PRELOAD", preload)
}

pub fn run(cmd: &mut Command) -> Output {
    cmd.output().expect("command starts")
}

pub fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}
