//! Another local user against root's CLI and against other users' pages: they can neither crash
//! the CLI (by truncating their own page under it), nor take away a user's page (by planting its
//! predictable name first), nor pass their process off as another (by what their page claims),
//! nor make `memtrim report` eat memory, nor have `memtrim clean` remove a file that is not a page.
//!
//! Runs as root and switches users with setpriv (nobody, daemon); skipped otherwise.
mod common;
use common::{
    Json, JsonExt, Proc, TempDir, Tmux, cli, compile, crafted_page, memtrim, old_page_file, page_path, run_for, setpriv_as, show, sleeper, start_ticks,
    stat_json, text, uid_of, under_library, user_dir, wait_for, write_page,
};
use memtrim_common::page::{Control, Page};
use std::io::Write;
use std::os::unix::fs::{FileExt, MetadataExt, PermissionsExt};
use std::os::unix::process::ExitStatusExt;
use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::Duration;

fn nobody() -> Option<Command> {
    setpriv_as("nobody", "nogroup")
}

/// `dir` made a shared sticky directory, as /dev/shm is.
fn shared(dir: &TempDir) {
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o1777)).unwrap();
}

/// `sleep 600` as nobody, once it runs (setpriv has exec'd it).
fn nobodys_sleep() -> Proc {
    let p = Proc(nobody().unwrap().args(["sleep", "600"]).env_remove("LD_PRELOAD").stdin(Stdio::null()).spawn().expect("setpriv starts"));
    let pid = p.pid();
    wait_for("setpriv to exec sleep", Duration::from_secs(5), || match std::fs::read_to_string(format!("/proc/{pid}/comm")) {
        Ok(c) if c.trim() == "sleep" => Ok(()),
        other => Err(format!("{other:?}")),
    });
    p
}

/// `memtrim ARGS` as root, with a time limit (a hang fails the test).
fn memtrim_for(dir: &Path, args: &[&str]) -> Output {
    let mut c = Command::new(cli());
    c.args(args).env("MEMTRIM_SHM_DIR", dir).env_remove("LD_PRELOAD");
    run_for(&mut c, Duration::from_secs(30))
}

/// nobody truncates and re-grows their own page as fast as they can while root runs every
/// command that reads or writes pages, hundreds of times, and `top` refreshes all along: none
/// dies of a signal (SIGBUS) or hangs.
#[test]
fn a_page_truncated_under_the_cli_never_crashes_it() {
    if nobody().is_none() || !common::require_tool("tmux") {
        return;
    }
    let dir = TempDir::new("truncate");
    shared(&dir);
    let looper = compile("truncate_loop.c", &[]);
    let s = nobodys_sleep();
    let (pid, st) = (s.pid(), start_ticks(s.pid()));
    let source = dir.join("source");
    write_page(&source, &crafted_page(pid, st, b"victim", |_| {}));
    std::fs::set_permissions(&source, std::fs::Permissions::from_mode(0o644)).unwrap();
    let page = old_page_file(dir.path(), pid, st);
    let _writer = Proc(nobody().unwrap().arg(&looper).arg(&page).arg(&source).stdin(Stdio::null()).spawn().expect("truncate_loop starts"));
    wait_for("nobody's page", Duration::from_secs(5), || std::fs::symlink_metadata(&page).map_err(|e| e.to_string()));
    assert_eq!(std::fs::symlink_metadata(&page).unwrap().uid(), uid_of("nobody"));

    let tmux = Tmux::new("truncate");
    let script = format!("'{}' top --dir '{}' --delay 0.1; echo top-exit=$?; sleep 60", cli().display(), dir.path().display());
    let o = tmux.cmd(&["new-session", "-d", "-s", "t", "-x", "120", "-y", "30", "sh", "-c", &script]);
    assert!(o.status.success(), "tmux new-session: {}", show(&o));

    let p = pid.to_string();
    let commands: [&[&str]; 7] = [
        &["ls"],
        &["ls", "--json"],
        &["stat", &p, "--json"],
        &["trim", &p, "--timeout", "0.05"],
        &["trim", "--all", "--timeout", "0.05"],
        &["report", &p, "--timeout", "0.05"],
        &["serve", "--once", "-"],
    ];
    for round in 0..50 {
        for args in commands {
            let o = memtrim_for(dir.path(), args);
            assert!(o.status.signal().is_none(), "round {round}: memtrim {args:?} was killed by signal {:?}\n{}", o.status.signal(), show(&o));
        }
    }
    let screen = tmux.capture();
    assert!(!screen.contains("top-exit="), "memtrim top ended (135 is SIGBUS):\n{screen}");
    tmux.cmd(&["send-keys", "-t", "t", "q"]);
    let after = wait_for("top to quit on q", Duration::from_secs(5), || {
        let s = tmux.capture();
        if s.contains("top-exit=") { Ok(s) } else { Err(s) }
    });
    assert!(after.contains("top-exit=0"), "memtrim top:\n{after}");
}

/// daemon plants a file, a directory and a symlink at the page names nobody's processes will
/// use, in the shared directory, before their pages appear: each still gets its page, in
/// nobody's own directory, and root's `memtrim ls` lists it.
#[test]
fn a_name_planted_by_another_user_does_not_take_the_page() {
    if nobody().is_none() || setpriv_as("daemon", "daemon").is_none() {
        return;
    }
    let dir = TempDir::new("squat");
    shared(&dir);
    let mut victims = Vec::new();
    for (kind, plant) in [("file", "echo planted > \"$0\""), ("directory", "mkdir \"$0\""), ("symlink", "ln -s /etc/passwd \"$0\"")] {
        // nobody's shell waits on stdin, then execs a preloaded sleep that keeps its pid and
        // start time: the page name is known before the library runs.
        let mut c = nobody().unwrap();
        c.args(["sh", "-c", "read _ && export LD_PRELOAD=\"$MT_LIB\" && exec \"$MT_SLEEP\" 300"])
            .env("MT_LIB", common::lib())
            .env("MT_SLEEP", common::idle_sleep())
            .stdin(Stdio::piped());
        under_library(&mut c, dir.path(), 100).env_remove("LD_PRELOAD");
        let mut p = Proc(c.spawn().unwrap());
        let pid = p.pid();
        let name = old_page_file(dir.path(), pid, start_ticks(pid));
        let o = setpriv_as("daemon", "daemon").unwrap().args(["sh", "-c", plant]).arg(&name).output().unwrap();
        assert!(o.status.success(), "daemon could not plant a {kind}: {}", show(&o));
        writeln!(p.0.stdin.take().unwrap()).unwrap();
        victims.push((p, name, kind));
    }
    let mine = user_dir(dir.path(), uid_of("nobody"));
    for (p, name, kind) in &victims {
        let j = wait_for(&format!("the page of nobody's sleep, a {kind} planted at its name"), Duration::from_secs(15), || stat_json(dir.path(), p.pid()));
        assert_eq!(j.str("comm"), "sleep");
        let page = page_path(dir.path(), p.pid()).unwrap();
        assert_eq!(page.parent(), Some(mine.as_path()), "the page is not in nobody's directory");
        assert_eq!(std::fs::symlink_metadata(name).unwrap().uid(), uid_of("daemon"), "the planted {kind} was replaced");
    }
    let md = std::fs::symlink_metadata(&mine).unwrap();
    assert!(md.is_dir() && md.uid() == uid_of("nobody") && md.mode() & 0o777 == 0o700, "{}: mode {:o}, uid {}", mine.display(), md.mode(), md.uid());
    let o = memtrim(dir.path(), &["ls", "--json"]);
    let listed: Vec<i64> = Json::parse(text(&o.stdout).trim()).unwrap_or_else(|e| panic!("{e}\n{}", show(&o))).array().iter().map(|e| e.int("pid")).collect();
    for (p, _, kind) in &victims {
        assert!(listed.contains(&(p.pid() as i64)), "ls does not list the process whose name had a {kind} planted: {listed:?}\n{}", show(&o));
    }

    // A per-user directory that is not its user's is not read, and `ls` says why.
    let fake = user_dir(dir.path(), uid_of("bin"));
    let o = setpriv_as("daemon", "daemon").unwrap().args(["mkdir", "-m", "700"]).arg(&fake).output().unwrap();
    assert!(o.status.success(), "{}", show(&o));
    let o = memtrim(dir.path(), &["ls"]);
    assert!(text(&o.stderr).contains("not to be trusted"), "{}", show(&o));
}

/// daemon plants a directory at nobody's per-user directory name, open to all: nobody's
/// process makes no page (and writes nothing there), and says so in one line naming the path
/// and its owner.
#[test]
fn a_per_user_directory_planted_by_another_user_is_not_used() {
    if nobody().is_none() || setpriv_as("daemon", "daemon").is_none() {
        return;
    }
    let dir = TempDir::new("squat-dir");
    shared(&dir);
    let planted = user_dir(dir.path(), uid_of("nobody"));
    let o = setpriv_as("daemon", "daemon").unwrap().args(["mkdir", "-m", "777"]).arg(&planted).output().unwrap();
    assert!(o.status.success(), "{}", show(&o));
    // The library is preloaded into sleep only, not into setpriv.
    let mut c = nobody().unwrap();
    c.arg("env").arg(format!("LD_PRELOAD={}", common::lib().display())).arg(common::idle_sleep()).arg("30").stdin(Stdio::null()).stderr(Stdio::piped());
    under_library(&mut c, dir.path(), 50).env_remove("LD_PRELOAD");
    let mut p = Proc(c.spawn().unwrap());
    let err = common::gathered(p.0.stderr.take().unwrap());
    let line = wait_for("the library to say why it makes no page", Duration::from_secs(10), || {
        let e = err.lock().unwrap().clone();
        if e.contains("no stats page") { Ok(e) } else { Err(e) }
    });
    assert_eq!(line.lines().count(), 1, "one line: {line}");
    assert!(line.contains(&planted.display().to_string()) && line.contains(&format!("uid {}", uid_of("daemon"))), "{line}");
    assert_eq!(std::fs::read_dir(&planted).unwrap().count(), 0, "something was written into the planted directory");
    assert!(page_path(dir.path(), p.pid()).is_none(), "a page was made elsewhere");
    assert_eq!(std::fs::symlink_metadata(&planted).unwrap().mode() & 0o777, 0o777, "the planted directory was changed");
}

/// A page nobody wrote for their own `sleep` claims uid 0, comm sshd, ppid 1 and 64 GiB of RSS:
/// root's `ls --json`, `stat --json` and a `serve` scrape show what /proc says instead.
#[test]
fn who_a_process_is_comes_from_proc_not_its_page() {
    if nobody().is_none() {
        return;
    }
    let dir = TempDir::new("identity");
    let s = nobodys_sleep();
    let (pid, st) = (s.pid(), start_ticks(s.pid()));
    let page = old_page_file(dir.path(), pid, st);
    write_page(
        &page,
        &crafted_page(pid, st, b"sshd", |p: &mut Page| {
            let mut claims = p.read().unwrap();
            claims.uid = 0;
            claims.ppid = 1;
            claims.rss_bytes = 64 << 30;
            p.publish(claims);
        }),
    );
    std::os::unix::fs::chown(&page, Some(uid_of("nobody")), None).unwrap();
    let (nobody_uid, parent) = (uid_of("nobody") as i64, std::process::id() as i64);
    let check = |j: &Json, what: &str| {
        assert_eq!(j.str("comm"), "sleep", "{what}: comm");
        assert_eq!(j.int("uid"), nobody_uid, "{what}: uid");
        assert_eq!(j.int("ppid"), parent, "{what}: ppid");
        let rss = j.int("rss_bytes");
        assert!(rss > 0 && rss < 1 << 30, "{what}: rss_bytes {rss}, not the kernel's");
    };
    let o = memtrim(dir.path(), &["ls", "--json"]);
    let v = Json::parse(text(&o.stdout).trim()).unwrap_or_else(|e| panic!("{e}\n{}", show(&o)));
    let e = v.array().iter().find(|e| e.int("pid") == pid as i64).cloned().unwrap_or_else(|| panic!("not listed:\n{}", show(&o)));
    check(&e, "ls --json");
    check(&stat_json(dir.path(), pid).unwrap(), "stat --json");
    let o = memtrim(dir.path(), &["serve", "--once", "-"]);
    let t = text(&o.stdout);
    let series: Vec<&str> = t.lines().filter(|l| l.contains(&format!("pid=\"{pid}\""))).collect();
    assert!(!series.is_empty(), "no series for pid {pid}:\n{}", show(&o));
    for l in &series {
        assert!(l.contains("comm=\"sleep\"") && l.contains(&format!("ppid=\"{parent}\"")), "a claimed label: {l}");
    }
    let rss = series.iter().find(|l| l.starts_with("memtrim_rss_bytes{")).unwrap_or_else(|| panic!("no memtrim_rss_bytes:\n{t}"));
    let v: f64 = rss.rsplit(' ').next().unwrap().parse().unwrap();
    assert!(v > 0.0 && v < (1u64 << 30) as f64, "the scrape exports the claimed RSS: {rss}");
}

/// A process answers `memtrim report` with an 8 MiB report: root's CLI refuses it, says why,
/// and stays small.
#[test]
fn an_oversized_report_is_refused_in_bounded_memory() {
    if !common::require_tool("/usr/bin/time") {
        return;
    }
    let dir = TempDir::new("big-report");
    let s = sleeper();
    let (pid, st) = (s.pid(), start_ticks(s.pid()));
    let page = old_page_file(dir.path(), pid, st);
    write_page(&page, &crafted_page(pid, st, b"bloat", |_| {}));
    let report = format!("{}.report", page.display());
    let at = |field: usize| (core::mem::offset_of!(Page, control) + field) as u64;
    let (requested, served) = (at(core::mem::offset_of!(Control, report_requested)), at(core::mem::offset_of!(Control, report_served)));
    let stop = std::sync::atomic::AtomicBool::new(false);
    let o = std::thread::scope(|sc| {
        // The process's worker, played here: on a request, an 8 MiB report, then served.
        sc.spawn(|| {
            let f = std::fs::OpenOptions::new().read(true).write(true).open(&page).unwrap();
            let word = |off: u64| {
                let mut b = [0u8; 4];
                f.read_exact_at(&mut b, off).unwrap();
                u32::from_ne_bytes(b)
            };
            let started = std::time::Instant::now();
            while !stop.load(std::sync::atomic::Ordering::Relaxed) && started.elapsed() < Duration::from_secs(90) {
                let r = word(requested);
                if r != word(served) {
                    let mut body = format!("{{\"version\":1,\"pid\":{pid},\"start_ticks\":{st},\"request\":{r},\"pad\":[0");
                    while body.len() < 8 << 20 {
                        body.push_str(",0");
                    }
                    body.push_str("]}");
                    write_page(Path::new(&format!("{report}.tmp")), body.as_bytes());
                    std::fs::rename(format!("{report}.tmp"), &report).unwrap();
                    f.write_all_at(&r.to_ne_bytes(), served).unwrap();
                }
                std::thread::sleep(Duration::from_millis(10));
            }
        });
        // /usr/bin/time measures its own child: a wait4 here would count the test binary's
        // RSS too (the child's peak includes the memory it was forked from).
        let o = run_for(
            Command::new("/usr/bin/time")
                .args(["-f", "maxrss_kib=%M"])
                .arg(cli())
                .args(["report", &pid.to_string(), "--timeout", "20"])
                .env("MEMTRIM_SHM_DIR", dir.path())
                .env_remove("LD_PRELOAD"),
            Duration::from_secs(60),
        );
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
        o
    });
    let stderr = text(&o.stderr);
    let kib: u64 = stderr
        .lines()
        .find_map(|l| l.strip_prefix("maxrss_kib="))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or_else(|| panic!("no figure from time:\n{}", show(&o)));
    let maxrss = kib * 1024;
    assert!(maxrss < 32 << 20, "memtrim report reached {} MiB of RSS on an 8 MiB report", maxrss >> 20);
    assert_eq!(o.status.code(), Some(1), "{}", show(&o));
    assert!(stderr.contains("refused") && stderr.contains("bytes long"), "no reason given: {stderr}");
}

/// Files of another user named like pages of a gone process but not pages (too short, no magic)
/// survive root's `memtrim clean`; that user's real stale page next to them goes.
#[test]
fn clean_removes_only_pages() {
    let dir = TempDir::new("clean");
    let gone = sleeper();
    let (pid, st) = (gone.pid(), start_ticks(gone.pid()));
    drop(gone);
    let nobody_uid = uid_of("nobody");
    let short = old_page_file(dir.path(), pid, st);
    let zeros = old_page_file(dir.path(), pid, st + 1);
    let real = old_page_file(dir.path(), pid, st + 2);
    write_page(&short, b"not a page\n");
    write_page(&zeros, &[0u8; memtrim_common::page::FILE_BYTES]);
    write_page(&real, &crafted_page(pid, st + 2, b"stale", |_| {}));
    for f in [&short, &zeros, &real] {
        std::os::unix::fs::chown(f, Some(nobody_uid), None).unwrap();
    }
    let o = memtrim(dir.path(), &["clean"]);
    assert!(o.status.success(), "{}", show(&o));
    assert!(short.exists(), "root's clean removed another user's short file named like a page\n{}", show(&o));
    assert!(zeros.exists(), "root's clean removed another user's page-sized file without the magic\n{}", show(&o));
    assert!(!real.exists(), "clean left a stale page\n{}", show(&o));
    assert!(text(&o.stderr).contains("left alone"), "{}", show(&o));
}

/// nobody plants, in per-user directories of their own (under every spelling of their uid that
/// names one), files named for daemon's preloaded process before it makes its page: root's
/// `stat` and `trim` of that process still find its own page, whichever directory is listed
/// first.
#[test]
fn a_name_in_another_users_directory_does_not_shadow_a_page() {
    if nobody().is_none() || setpriv_as("daemon", "daemon").is_none() {
        return;
    }
    let dir = TempDir::new("shadow");
    shared(&dir);
    // daemon's shell waits on stdin, then execs a preloaded sleep that keeps its pid and start
    // time: the page name is known before the library runs.
    let mut c = setpriv_as("daemon", "daemon").unwrap();
    c.args(["sh", "-c", "read _ && export LD_PRELOAD=\"$MT_LIB\" && exec sleep 600"]).env("MT_LIB", common::lib()).stdin(Stdio::piped());
    under_library(&mut c, dir.path(), 100).env_remove("LD_PRELOAD");
    let mut p = Proc(c.spawn().unwrap());
    let (pid, st) = (p.pid(), start_ticks(p.pid()));
    let name = memtrim_common::page::file_name(pid, st);
    let nobody_uid = uid_of("nobody");
    let mut planted = Vec::new();
    for zeros in 0..40 {
        let d = dir.join(&format!("memtrim-{}{nobody_uid}", "0".repeat(zeros)));
        let o = nobody().unwrap().args(["sh", "-c", "mkdir -m 700 \"$0\" && echo planted > \"$0/$1\""]).arg(&d).arg(&name).output().unwrap();
        assert!(o.status.success(), "nobody could not plant {}: {}", d.display(), show(&o));
        planted.push(d);
    }
    writeln!(p.0.stdin.take().unwrap()).unwrap();
    let own = user_dir(dir.path(), uid_of("daemon"));
    wait_for("the page of daemon's sleep", Duration::from_secs(10), || if own.join(&name).exists() { Ok(()) } else { Err(String::new()) });
    // The order is the filesystem's: a listing that puts daemon's directory first hides nothing.
    let first = std::fs::read_dir(dir.path()).unwrap().map(|e| e.unwrap().path()).find(|e| *e == own || planted.contains(e));
    assert_ne!(first.as_ref(), Some(&own), "no planted directory is listed before daemon's: nothing to shadow");
    let j = stat_json(dir.path(), pid).unwrap_or_else(|e| panic!("root's stat of daemon's process fails after nobody planted {name}:\n{e}"));
    assert_eq!(j.int("pid"), pid as i64);
    let o = memtrim_for(dir.path(), &["trim", &pid.to_string()]);
    assert!(o.status.success(), "root's trim of daemon's process fails after nobody planted {name}:\n{}", show(&o));
}

/// nobody plants, in their own directory, a page named for root's live process that claims to
/// have been abandoned long ago, and swaps that directory for a symlink to root's directory just
/// after root's `memtrim clean` has checked the page (held at the moment by a fanotify
/// permission event, the widest a race can be): root's page survives.
#[test]
fn clean_removes_nothing_through_a_directory_swapped_after_its_checks() {
    if nobody().is_none() {
        return;
    }
    let dir = TempDir::new("clean-swap");
    shared(&dir);
    let p = Proc(under_library(&mut Command::new("sleep"), dir.path(), 100).arg("600").stdin(Stdio::null()).spawn().unwrap());
    let (pid, st) = (p.pid(), start_ticks(p.pid()));
    wait_for("the page of root's sleep", Duration::from_secs(10), || stat_json(dir.path(), pid));
    let victim = page_path(dir.path(), pid).unwrap();
    let (mine, link) = (user_dir(dir.path(), uid_of("nobody")), dir.join("link"));
    let planted = mine.join(memtrim_common::page::file_name(pid, st));
    let page = crafted_page(pid, st, b"sleep", |p: &mut Page| {
        let mut s = p.read().unwrap();
        s.updated_at_ms = 0;
        s.interval_ms = 1000;
        p.publish(s);
    });
    std::fs::write(dir.join("page"), &page).unwrap();
    let script = "mkdir -m 700 \"$0\" && cp \"$2\" \"$0/$3\" && chmod 600 \"$0/$3\" && ln -s \"$4\" \"$1\"";
    let o = nobody()
        .unwrap()
        .args(["sh", "-c", script])
        .arg(&mine)
        .arg(&link)
        .arg(dir.join("page"))
        .arg(planted.file_name().unwrap())
        .arg(victim.parent().unwrap())
        .output()
        .unwrap();
    assert!(o.status.success(), "nobody could not plant: {}", show(&o));

    // SAFETY: plain syscalls on valid arguments; the events' fds are closed once answered.
    let fan = unsafe { libc::fanotify_init(libc::FAN_CLASS_CONTENT | libc::FAN_CLOEXEC, libc::O_RDONLY as libc::c_uint) };
    assert!(fan >= 0, "fanotify_init: {}", std::io::Error::last_os_error());
    let c = |p: &Path| std::ffi::CString::new(p.as_os_str().as_encoded_bytes()).unwrap();
    assert_eq!(
        unsafe { libc::fanotify_mark(fan, libc::FAN_MARK_ADD, libc::FAN_OPEN_PERM, libc::AT_FDCWD, c(&planted).as_ptr()) },
        0,
        "fanotify_mark: {}",
        std::io::Error::last_os_error()
    );
    let mut clean = Command::new(cli())
        .arg("clean")
        .env("MEMTRIM_SHM_DIR", dir.path())
        .env_remove("LD_PRELOAD")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let out = common::gathered(clean.stdout.take().unwrap());
    let err = common::gathered(clean.stderr.take().unwrap());
    let (mut opens, deadline) = (0, std::time::Instant::now() + Duration::from_secs(20));
    while clean.try_wait().unwrap().is_none() && std::time::Instant::now() < deadline {
        let mut pfd = libc::pollfd { fd: fan, events: libc::POLLIN, revents: 0 };
        if unsafe { libc::poll(&mut pfd, 1, 50) } <= 0 {
            continue;
        }
        let mut ev: libc::fanotify_event_metadata = unsafe { core::mem::zeroed() };
        let n = unsafe { libc::read(fan, &mut ev as *mut _ as *mut libc::c_void, core::mem::size_of_val(&ev)) };
        assert_eq!(n, core::mem::size_of_val(&ev) as isize, "fanotify read");
        opens += 1;
        // The second open is that of the last check (the first judged it abandoned): what
        // nobody can do to their own directory in a shared sticky one, done while it is held.
        if opens == 2 {
            let r = unsafe { libc::syscall(libc::SYS_renameat2, libc::AT_FDCWD, c(&mine).as_ptr(), libc::AT_FDCWD, c(&link).as_ptr(), libc::RENAME_EXCHANGE) };
            assert_eq!(r, 0, "renameat2: {}", std::io::Error::last_os_error());
        }
        let answer = libc::fanotify_response { fd: ev.fd, response: libc::FAN_ALLOW };
        unsafe {
            libc::write(fan, &answer as *const _ as *const libc::c_void, core::mem::size_of_val(&answer));
            libc::close(ev.fd);
        }
    }
    unsafe { libc::close(fan) };
    let status = clean.wait().unwrap();
    let said = format!("{status}\nstdout: {}\nstderr: {}", out.lock().unwrap(), err.lock().unwrap());
    assert!(opens >= 2, "clean opened the planted page {opens} times, the test swaps at the second:\n{said}");
    assert!(
        victim.exists(),
        "root's clean removed {}, the page of a live process, through a directory swapped for a symlink after its checks:\n{said}",
        victim.display()
    );
    assert!(stat_json(dir.path(), pid).is_ok(), "root's process lost its page");
}
