//! Memory pressure from the kernel's PSI triggers: the process's cgroup v2 `memory.pressure`
//! when there is one, else the system's /proc/pressure/memory. Checked without blocking on each
//! worker wake-up: a fired trigger stays latched until polled.

pub struct Pressure {
    fd: libc::c_int,
}

impl Pressure {
    /// A trigger for `stall_ms` of "some" stall per second, over a two-second window (the
    /// shortest an unprivileged process may ask for: Linux 6.5 and later refuse others with
    /// EINVAL); None where the kernel offers no PSI, or when disabled (0).
    pub fn open(stall_ms: u64) -> Option<Pressure> {
        if stall_ms == 0 {
            return None;
        }
        let trigger = format!("some {} 2000000\0", stall_ms * 2000);
        candidates().into_iter().find_map(|path| {
            let cpath = std::ffi::CString::new(path).ok()?;
            // SAFETY: valid C strings and buffer lengths; fd closed on failure.
            unsafe {
                let fd = libc::open(cpath.as_ptr(), libc::O_RDWR | libc::O_NONBLOCK | libc::O_CLOEXEC);
                if fd < 0 {
                    return None;
                }
                if libc::write(fd, trigger.as_ptr().cast(), trigger.len()) < 0 {
                    libc::close(fd);
                    return None;
                }
                Some(Pressure { fd })
            }
        })
    }

    /// Whether the trigger fired since the last call.
    pub fn fired(&self) -> bool {
        let mut p = libc::pollfd { fd: self.fd, events: libc::POLLPRI, revents: 0 };
        // SAFETY: one valid pollfd, no wait.
        unsafe { libc::poll(&mut p, 1, 0) > 0 && p.revents & libc::POLLPRI != 0 }
    }
}

impl Drop for Pressure {
    fn drop(&mut self) {
        // SAFETY: the fd is ours.
        unsafe { libc::close(self.fd) };
    }
}

fn candidates() -> Vec<String> {
    let mut v = Vec::new();
    if let Ok(cg) = std::fs::read_to_string("/proc/self/cgroup")
        && let Some(path) = cg.lines().find_map(|l| l.strip_prefix("0::"))
    {
        v.push(format!("/sys/fs/cgroup{}/memory.pressure", path.trim_end_matches('/')));
    }
    v.push("/proc/pressure/memory".to_string());
    v
}
