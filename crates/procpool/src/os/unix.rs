//! The process backend's system calls behind safe functions: polling, descriptors,
//! signals to process groups, and waiting without reaping. Every `unsafe` here has its
//! `SAFETY:` note; the rest use `rustix`.

use std::io;
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::net::UnixStream;
use std::time::Duration;

/// One descriptor to wait on, and what it turned out to be ready for.
#[derive(Debug, Clone, Copy)]
#[repr(transparent)]
pub(crate) struct PollFd(libc::pollfd);

impl PollFd {
    /// Waits for input (and hang-up, which poll always reports).
    pub(crate) fn readable(fd: RawFd) -> PollFd {
        PollFd(libc::pollfd {
            fd,
            events: libc::POLLIN,
            revents: 0,
        })
    }

    /// Also waits for room to write.
    pub(crate) fn with_writable(mut self) -> PollFd {
        self.0.events |= libc::POLLOUT;
        self
    }
}

/// `poll(2)`: waits until one of `fds` is ready or `timeout` passes (`None`: no limit).
/// Returns how many are ready; `EINTR` counts as zero ready.
pub(crate) fn poll(fds: &mut [PollFd], timeout: Option<Duration>) -> io::Result<usize> {
    let ms = match timeout {
        None => -1,
        Some(t) => i32::try_from(t.as_millis().max(u128::from(!t.is_zero()))).unwrap_or(i32::MAX),
    };
    // SAFETY: `PollFd` is `repr(transparent)` over `libc::pollfd`,
    // the pointer and length come from a live mutable slice, and poll only writes `revents`.
    let n = unsafe {
        libc::poll(
            fds.as_mut_ptr().cast::<libc::pollfd>(),
            fds.len() as libc::nfds_t,
            ms,
        )
    };
    if n < 0 {
        let e = io::Error::last_os_error();
        if e.kind() == io::ErrorKind::Interrupted {
            return Ok(0);
        }
        return Err(e);
    }
    Ok(n as usize)
}

/// Waits until `fd` is readable (or hung up), at most `timeout`.
pub(crate) fn wait_fd(
    fd: BorrowedFd<'_>,
    writable: bool,
    timeout: Option<Duration>,
) -> io::Result<bool> {
    let mut p = PollFd::readable(fd.as_raw_fd());
    if writable {
        p.0.events = libc::POLLOUT;
    }
    Ok(poll(std::slice::from_mut(&mut p), timeout)? > 0)
}

/// In a worker: takes the coordinator's socket from stdin and puts `/dev/null` in its place,
/// so a task that reads stdin cannot eat protocol bytes.
pub(crate) fn take_stdin_socket() -> io::Result<UnixStream> {
    // Close-on-exec, so a program a task starts does not inherit the coordinator's socket
    // (and keep it open after this worker dies).
    // SAFETY: fcntl(F_DUPFD_CLOEXEC) on fd 0 has no memory effects; we check the result.
    let fd = unsafe { libc::fcntl(0, libc::F_DUPFD_CLOEXEC, 0) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: `fd` was just returned by dup, so it is open and owned by nobody else.
    let sock = UnixStream::from(unsafe { OwnedFd::from_raw_fd(fd) });
    let null = std::fs::File::open("/dev/null")?;
    // SAFETY: dup2 of an open descriptor onto 0; atomically replaces stdin.
    if unsafe { libc::dup2(null.as_raw_fd(), 0) } < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(sock)
}

/// Asks for `bytes` of kernel buffer each way on a socket (the kernel may grant less):
/// fewer round trips through poll when a large context goes to a worker.
pub(crate) fn set_buffers(sock: &UnixStream, bytes: usize) {
    let size = libc::c_int::try_from(bytes).unwrap_or(libc::c_int::MAX);
    for opt in [libc::SO_SNDBUF, libc::SO_RCVBUF] {
        // SAFETY: setsockopt reads `size_of::<c_int>()` bytes from a live local; the fd is
        // open for the duration of the call. A failure only leaves the default size.
        unsafe {
            libc::setsockopt(
                sock.as_raw_fd(),
                libc::SOL_SOCKET,
                opt,
                std::ptr::from_ref(&size).cast(),
                std::mem::size_of::<libc::c_int>() as libc::socklen_t,
            );
        }
    }
}

/// Sends `signal` to the process group `pgid` (a worker is its group's leader, so its
/// pid is the group's id). Errors (the group is gone already) are ignored.
pub(crate) fn kill_group(pgid: u32, signal: i32) {
    let (Some(pid), Some(sig)) = (
        i32::try_from(pgid)
            .ok()
            .and_then(rustix::process::Pid::from_raw),
        rustix::process::Signal::from_named_raw(signal),
    ) else {
        return;
    };
    let _ = rustix::process::kill_process_group(pid, sig);
}

/// Whether child `pid` has exited (without reaping it: its pid and group id stay
/// reserved until it is reaped).
pub(crate) fn exited(pid: u32) -> bool {
    use rustix::process::{WaitId, WaitIdOptions};
    let Some(p) = i32::try_from(pid)
        .ok()
        .and_then(rustix::process::Pid::from_raw)
    else {
        return false;
    };
    matches!(
        rustix::process::waitid(
            WaitId::Pid(p),
            WaitIdOptions::EXITED | WaitIdOptions::NOWAIT | WaitIdOptions::NOHANG,
        ),
        Ok(Some(_))
    )
}

/// Waits until child `pid` has exited, without reaping it.
pub(crate) fn wait_exited(pid: u32) -> io::Result<()> {
    use rustix::process::{WaitId, WaitIdOptions};
    let Some(p) = i32::try_from(pid)
        .ok()
        .and_then(rustix::process::Pid::from_raw)
    else {
        return Ok(());
    };
    loop {
        match rustix::process::waitid(
            WaitId::Pid(p),
            WaitIdOptions::EXITED | WaitIdOptions::NOWAIT,
        ) {
            Ok(_) => return Ok(()),
            Err(rustix::io::Errno::INTR) => continue,
            Err(e) => return Err(e.into()),
        }
    }
}

/// CPUs this process may run on (its affinity mask and its cgroup's quota): 1 when that
/// cannot be found out.
pub(crate) fn usable_cpus() -> usize {
    std::thread::available_parallelism().map_or(1, usize::from)
}

/// The conventional name of a signal number ("SIGKILL"), or "signal N".
pub(crate) fn signal_name(signal: i32) -> String {
    let name = match signal {
        libc::SIGHUP => "SIGHUP",
        libc::SIGINT => "SIGINT",
        libc::SIGQUIT => "SIGQUIT",
        libc::SIGILL => "SIGILL",
        libc::SIGTRAP => "SIGTRAP",
        libc::SIGABRT => "SIGABRT",
        libc::SIGBUS => "SIGBUS",
        libc::SIGFPE => "SIGFPE",
        libc::SIGKILL => "SIGKILL",
        libc::SIGUSR1 => "SIGUSR1",
        libc::SIGSEGV => "SIGSEGV",
        libc::SIGUSR2 => "SIGUSR2",
        libc::SIGPIPE => "SIGPIPE",
        libc::SIGALRM => "SIGALRM",
        libc::SIGTERM => "SIGTERM",
        libc::SIGCHLD => "SIGCHLD",
        libc::SIGCONT => "SIGCONT",
        libc::SIGSTOP => "SIGSTOP",
        libc::SIGTSTP => "SIGTSTP",
        libc::SIGXCPU => "SIGXCPU",
        libc::SIGXFSZ => "SIGXFSZ",
        libc::SIGSYS => "SIGSYS",
        _ => return format!("signal {signal}"),
    };
    name.to_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_signals() {
        assert_eq!(signal_name(9), "SIGKILL");
        assert_eq!(signal_name(11), "SIGSEGV");
        assert_eq!(signal_name(15), "SIGTERM");
        assert_eq!(signal_name(1000), "signal 1000");
    }

    #[test]
    fn poll_sees_data_and_times_out() {
        use std::io::Write;
        let (mut a, b) = UnixStream::pair().unwrap();
        let mut fds = [PollFd::readable(b.as_raw_fd())];
        assert_eq!(poll(&mut fds, Some(Duration::from_millis(1))).unwrap(), 0);
        a.write_all(b"x").unwrap();
        assert_eq!(poll(&mut fds, None).unwrap(), 1);
        assert_ne!(fds[0].0.revents, 0);
    }
}
