//! Mechanism for one child process: spawn (the current binary, re-executed in worker
//! mode, as the leader of its own process group), drain its stderr, signal, reap, describe
//! how it ended, and kill-and-reap on drop so no handle can leak a process.
//!
//! Signals go to the worker's whole process group, so programs a task started die with
//! their worker: on `kill`, and also when a worker exits on its own (its group is killed
//! before it is reaped, while its pid — the group's id — cannot be reused yet). A program
//! that leaves the group on purpose (`setsid`, `setpgid`) is on its own, like any daemon.

use super::{env, unix};
use std::collections::VecDeque;
use std::ffi::OsString;
use std::io::{self, BufRead, BufReader, Write};
use std::os::fd::OwnedFd;
use std::os::unix::net::UnixStream;
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

const TAIL_LINES: usize = 20;
const TAIL_BYTES: usize = 4096;

/// Where a child's stdout and stderr go.
pub(crate) enum ChildOutput {
    /// Inherited from us (hand-built `Process`, like Python's).
    Inherit,
    /// Into a pipe we drain: the tail is kept for diagnosis, lines are copied to our
    /// stderr behind `[label]` when `forward` is set.
    Drain {
        /// Prefix for forwarded lines.
        label: String,
        /// Whether to copy lines to our stderr.
        forward: bool,
    },
}

/// The last lines a child wrote to stderr, filled by a drain thread.
#[derive(Default)]
pub(crate) struct Tail {
    state: Mutex<TailState>,
    eof: Condvar,
}

#[derive(Default)]
struct TailState {
    lines: VecDeque<String>,
    bytes: usize,
    done: bool,
}

impl Tail {
    fn push(&self, line: String) {
        let mut s = self.state.lock().unwrap_or_else(|p| p.into_inner());
        s.bytes += line.len();
        s.lines.push_back(line);
        while s.lines.len() > TAIL_LINES || (s.bytes > TAIL_BYTES && s.lines.len() > 1) {
            if let Some(old) = s.lines.pop_front() {
                s.bytes -= old.len();
            }
        }
    }

    fn finish(&self) {
        self.state.lock().unwrap_or_else(|p| p.into_inner()).done = true;
        self.eof.notify_all();
    }

    /// The tail, after waiting up to `wait` for the child's stderr to reach its end.
    pub(crate) fn text(&self, wait: Duration) -> String {
        let s = self.state.lock().unwrap_or_else(|p| p.into_inner());
        let (s, _) = self
            .eof
            .wait_timeout_while(s, wait, |s| !s.done)
            .unwrap_or_else(|p| p.into_inner());
        s.lines
            .iter()
            .map(String::as_str)
            .collect::<Vec<_>>()
            .join("\n")
    }
}

/// A running child process; killed and reaped on drop unless already reaped.
pub(crate) struct ChildProc {
    child: Child,
    pid: u32,
    /// Its process group goes with it (pool workers; a hand-built `Process` leaves
    /// whatever it started running, like Python's).
    group: bool,
    tail: Arc<Tail>,
    status: Option<ExitStatus>,
}

impl ChildProc {
    /// Re-executes the current binary in worker `mode`, with `vars` added to its
    /// environment; returns the child and our end of its socket (the child's stdin).
    pub(crate) fn spawn(
        mode: &str,
        key: Option<u32>,
        spin: Duration,
        output: ChildOutput,
        vars: &[(OsString, OsString)],
    ) -> io::Result<(ChildProc, UnixStream)> {
        let (ours, theirs) = UnixStream::pair()?;
        unix::set_buffers(&ours, 4 << 20);
        unix::set_buffers(&theirs, 4 << 20);
        let mut cmd = Command::new(worker_exe());
        if let Some(name) = env::program_name() {
            cmd.arg0(name);
        }
        cmd.envs(vars.iter().map(|(k, v)| (k, v)));
        env::worker_command(&mut cmd, mode, key, spin);
        cmd.stdin(Stdio::from(OwnedFd::from(theirs)))
            .process_group(0);
        let tail = Arc::new(Tail::default());
        let drain = match output {
            ChildOutput::Inherit => {
                tail.finish();
                None
            }
            ChildOutput::Drain { label, forward } => {
                let (reader, writer) = io::pipe()?;
                cmd.stdout(writer.try_clone()?).stderr(writer);
                Some((reader, label, forward))
            }
        };
        let child = cmd.spawn()?;
        // The command still holds the child's ends of the pipes; drop them so our reads see EOF.
        drop(cmd);
        let pid = child.id();
        if let Some((reader, label, forward)) = drain {
            let tail = Arc::clone(&tail);
            let label = format!("{label} pid {pid}");
            std::thread::Builder::new()
                .name(format!("procpool-stderr-{pid}"))
                .spawn(move || drain_lines(reader, &label, forward, &tail))?;
        }
        Ok((
            ChildProc {
                child,
                pid,
                group: mode == "pool",
                tail,
                status: None,
            },
            ours,
        ))
    }

    /// The child's process id.
    pub(crate) fn pid(&self) -> u32 {
        self.pid
    }

    /// Its stderr tail (waits up to `wait` for the stream to end).
    pub(crate) fn stderr_tail(&self, wait: Duration) -> String {
        self.tail.text(wait)
    }

    /// SIGKILL to it and its process group, unless it was already reaped (never signals a
    /// pid, or a group, that may have been reused).
    pub(crate) fn kill(&mut self) {
        if self.status.is_none() {
            if self.group {
                unix::kill_group(self.pid, libc::SIGKILL);
            }
            let _ = self.child.kill();
        }
    }

    /// Its exit status if it has exited (reaping it, after killing what is left of its
    /// group).
    pub(crate) fn try_reap(&mut self) -> Option<ExitStatus> {
        if self.status.is_none() && unix::exited(self.pid) {
            if self.group {
                unix::kill_group(self.pid, libc::SIGKILL);
            }
            if let Ok(Some(status)) = self.child.try_wait() {
                self.status = Some(status);
            }
        }
        self.status
    }

    /// Waits for it to exit, however long that takes, and reaps it (its group too).
    pub(crate) fn wait(&mut self) -> io::Result<ExitStatus> {
        if let Some(status) = self.status {
            return Ok(status);
        }
        unix::wait_exited(self.pid)?;
        if self.group {
            unix::kill_group(self.pid, libc::SIGKILL);
        }
        let status = self.child.wait()?;
        self.status = Some(status);
        Ok(status)
    }

    /// Waits up to `grace` for it to exit on its own, then kills it; always reaps.
    pub(crate) fn reap(&mut self, grace: Duration) -> Option<ExitStatus> {
        let deadline = Instant::now() + grace;
        let mut pause = Duration::from_micros(50);
        while self.try_reap().is_none() && Instant::now() < deadline {
            std::thread::sleep(pause);
            pause = (pause * 2).min(Duration::from_millis(5));
        }
        if self.status.is_none() {
            self.kill();
            if let Ok(status) = self.wait() {
                self.status = Some(status);
            }
        }
        self.status
    }
}

impl Drop for ChildProc {
    fn drop(&mut self) {
        if self.status.is_none() {
            self.kill();
            let _ = self.wait();
        }
    }
}

/// How a process ended, in words: "exited with code 3", "was killed by SIGKILL (9)".
pub fn describe_status(status: ExitStatus) -> String {
    describe_exit(status, false)
}

/// Like [`describe_status`]; `by_us` says the pool itself sent the SIGKILL.
pub(crate) fn describe_exit(status: ExitStatus, by_us: bool) -> String {
    if let Some(code) = status.code() {
        return format!("exited with code {code}");
    }
    match status.signal() {
        Some(sig) => {
            let mut s = format!("was killed by {} ({sig})", unix::signal_name(sig));
            if status.core_dumped() {
                s.push_str(", core dumped");
            }
            if sig == libc::SIGKILL {
                s.push_str(if by_us {
                    " by the pool"
                } else {
                    " (out of memory, or killed from outside?)"
                });
            }
            s
        }
        None => format!("ended with status {status}"),
    }
}

fn worker_exe() -> OsString {
    // /proc/self/exe still works when the binary file was replaced or deleted since we
    // started (cargo rebuilding it, for one).
    if std::path::Path::new("/proc/self/exe").exists() {
        OsString::from("/proc/self/exe")
    } else {
        std::env::current_exe()
            .map(OsString::from)
            .unwrap_or_else(|_| OsString::from("/proc/self/exe"))
    }
}

fn drain_lines(reader: io::PipeReader, label: &str, forward: bool, tail: &Tail) {
    let mut reader = BufReader::new(reader);
    let mut line = Vec::new();
    loop {
        line.clear();
        match reader.read_until(b'\n', &mut line) {
            Ok(0) | Err(_) => break,
            Ok(_) => {
                let text = String::from_utf8_lossy(&line)
                    .trim_end_matches(['\n', '\r'])
                    .to_owned();
                if forward {
                    let _ = writeln!(io::stderr().lock(), "[{label}] {text}");
                }
                tail.push(text);
            }
        }
    }
    tail.finish();
}
