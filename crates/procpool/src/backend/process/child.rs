//! Mechanism for one child process: spawn (the current binary, re-executed in worker
//! mode, in its own process group), drain its stderr, signal, reap, describe how it ended,
//! and kill-and-reap on drop so no handle can leak a process. Also the child's own side:
//! [`worker_main`], which [`serve_if_worker`](crate::serve_if_worker) runs.

use super::unix;
use crate::backend::Spinner;
use crate::task::Registry;
use crate::wire::worker::{self, FLUSH_AFTER};
use std::collections::VecDeque;
use std::ffi::OsString;
use std::io::{self, BufRead, BufReader, Read, Write};
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::net::UnixStream;
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

/// Set in a worker's environment: its mode. Its presence is what makes a process a worker.
pub(crate) const WORKER_ENV: &str = "PROCPOOL_WORKER";
/// Set in a worker's environment: the coordinator's pid, watched so orphans exit.
pub(crate) const PARENT_ENV: &str = "PROCPOOL_PARENT";
/// Set in a worker's environment: how long to spin on an empty pipe, in microseconds.
pub(crate) const SPIN_ENV: &str = "PROCPOOL_SPIN_US";
/// Set in a worker's environment: its key within its pool (for logs and fault injection).
pub(crate) const KEY_ENV: &str = "PROCPOOL_WORKER_KEY";
/// Read by a worker: a fault to inject on purpose (tests only; see `wire::worker::Fault`).
pub(crate) const FAULT_ENV: &str = "PROCPOOL_FAULT";
/// The argument a worker is started with, so `ps` shows what it is.
pub(crate) const WORKER_ARG: &str = "__worker";

/// Exit code of a worker that refused to serve or lost its protocol footing.
pub(crate) const EXIT_PROTOCOL: i32 = 3;
/// Exit code of a worker whose coordinator died.
pub(crate) const EXIT_ORPHANED: i32 = 70;

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
    tail: Arc<Tail>,
    status: Option<ExitStatus>,
}

impl ChildProc {
    /// Re-executes the current binary in worker `mode`; returns the child and our end of
    /// its socket (the child's stdin).
    pub(crate) fn spawn(
        mode: &str,
        key: Option<u32>,
        spin: Duration,
        output: ChildOutput,
    ) -> io::Result<(ChildProc, UnixStream)> {
        let (ours, theirs) = UnixStream::pair()?;
        unix::set_buffers(&ours, 4 << 20);
        unix::set_buffers(&theirs, 4 << 20);
        let mut cmd = Command::new(worker_exe());
        if let Some(name) = std::env::args_os().next() {
            cmd.arg0(name);
        }
        cmd.arg(WORKER_ARG)
            .env(WORKER_ENV, mode)
            .env(PARENT_ENV, std::process::id().to_string())
            .env(SPIN_ENV, spin.as_micros().to_string())
            .stdin(Stdio::from(OwnedFd::from(theirs)))
            .process_group(0);
        if let Some(key) = key {
            cmd.env(KEY_ENV, key.to_string());
        }
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

    /// SIGKILL, unless it was already reaped (never signals a pid that may be reused).
    pub(crate) fn kill(&mut self) {
        if self.status.is_none() {
            let _ = self.child.kill();
        }
    }

    /// Its exit status if it has exited (reaping it).
    pub(crate) fn try_reap(&mut self) -> Option<ExitStatus> {
        if self.status.is_none() {
            if let Ok(Some(status)) = self.child.try_wait() {
                self.status = Some(status);
            }
        }
        self.status
    }

    /// Waits for it to exit, however long that takes, and reaps it.
    pub(crate) fn wait(&mut self) -> io::Result<ExitStatus> {
        if let Some(status) = self.status {
            return Ok(status);
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
            if let Ok(status) = self.child.wait() {
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
            let _ = self.child.wait();
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

/// The socket to the coordinator, as a blocking stream that spins briefly before sleeping.
/// Reading keeps the descriptors that come with the bytes (a shared context's objects).
struct WorkerSocket {
    sock: UnixStream,
    spinner: Spinner,
    fds: Arc<Mutex<Vec<OwnedFd>>>,
}

impl Read for WorkerSocket {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let mut waiting_since = None;
        loop {
            let got = {
                let mut fds = self.fds.lock().unwrap_or_else(|p| p.into_inner());
                crate::os::shm::recv_with_fds(self.sock.as_fd(), buf, &mut fds)
            };
            match got {
                Ok(n) => {
                    if let Some(since) = waiting_since {
                        self.spinner.record(Instant::elapsed(&since));
                    }
                    return Ok(n);
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                Err(e) => return Err(e),
            }
            let since = *waiting_since.get_or_insert_with(Instant::now);
            if since.elapsed() < self.spinner.budget() {
                std::hint::spin_loop();
                continue;
            }
            unix::wait_fd(self.sock.as_fd(), false, None)?;
        }
    }
}

impl Write for WorkerSocket {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        loop {
            match (&self.sock).write(buf) {
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    unix::wait_fd(self.sock.as_fd(), true, None)?;
                }
                other => return other,
            }
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// A worker's output: results collect in memory and go out in one write when the worker
/// is about to wait for input (`flush`); and when a job starts while results are waiting,
/// a helper thread writes them out once the oldest has waited [`FLUSH_AFTER`] — so a result
/// is never held back by a long job after it, and quick jobs still share one write.
struct DeadlineWriter {
    shared: Arc<(Mutex<Outbox>, Condvar)>,
}

struct Outbox {
    buf: Vec<u8>,
    since: Option<Instant>,
    armed: bool,
    sock: WorkerSocket,
    failed: Option<io::ErrorKind>,
    done: bool,
}

impl Outbox {
    fn write_out(&mut self) -> io::Result<()> {
        if let Some(kind) = self.failed {
            return Err(kind.into());
        }
        if self.buf.is_empty() {
            return Ok(());
        }
        let result = self.sock.write_all(&self.buf);
        self.buf.clear();
        self.since = None;
        if let Err(e) = &result {
            self.failed = Some(e.kind());
        }
        result
    }
}

impl DeadlineWriter {
    fn new(sock: WorkerSocket) -> io::Result<DeadlineWriter> {
        let shared = Arc::new((
            Mutex::new(Outbox {
                buf: Vec::with_capacity(64 << 10),
                since: None,
                armed: false,
                sock,
                failed: None,
                done: false,
            }),
            Condvar::new(),
        ));
        let flusher = Arc::clone(&shared);
        std::thread::Builder::new()
            .name("procpool-flusher".into())
            .spawn(move || {
                let (lock, cv) = &*flusher;
                let mut out = lock.lock().unwrap_or_else(|p| p.into_inner());
                while !out.done {
                    if !out.armed {
                        out = cv.wait(out).unwrap_or_else(|p| p.into_inner());
                        continue;
                    }
                    let now = Instant::now();
                    match out.since {
                        Some(since) if now < since + FLUSH_AFTER => {
                            out = cv
                                .wait_timeout(out, since + FLUSH_AFTER - now)
                                .unwrap_or_else(|p| p.into_inner())
                                .0;
                        }
                        _ => {
                            let _ = out.write_out();
                            out.armed = false;
                        }
                    }
                }
            })?;
        Ok(DeadlineWriter { shared })
    }

    fn outbox(&self) -> std::sync::MutexGuard<'_, Outbox> {
        self.shared.0.lock().unwrap_or_else(|p| p.into_inner())
    }
}

impl Write for DeadlineWriter {
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        let mut out = self.outbox();
        if let Some(kind) = out.failed {
            return Err(kind.into());
        }
        if out.since.is_none() {
            out.since = Some(Instant::now());
        }
        out.buf.extend_from_slice(data);
        Ok(data.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        self.outbox().write_out()
    }
}

impl worker::Output for DeadlineWriter {
    fn job_starting(&mut self) {
        let mut out = self.outbox();
        if out.since.is_some() && !out.armed {
            out.armed = true;
            drop(out);
            self.shared.1.notify_one();
        }
    }
}

impl Drop for DeadlineWriter {
    fn drop(&mut self) {
        let mut out = self.outbox();
        let _ = out.write_out();
        out.done = true;
        drop(out);
        self.shared.1.notify_one();
    }
}

/// The child's side: serve the coordinator on stdin until it hangs up; returns the exit code.
pub(crate) fn worker_main(registry: &Registry) -> i32 {
    if let Some(parent) = std::env::var(PARENT_ENV)
        .ok()
        .and_then(|p| p.parse::<u32>().ok())
    {
        if std::os::unix::process::parent_id() != parent {
            return EXIT_ORPHANED;
        }
        // A busy worker does not read its pipe, so EOF alone cannot tell it the coordinator
        // died; watching the parent pid does (Linux's parent-death signal would fire when
        // the spawning *thread* exits, which is the wrong event).
        let _ = std::thread::Builder::new()
            .name("procpool-parent-watch".into())
            .spawn(move || {
                loop {
                    std::thread::sleep(Duration::from_millis(100));
                    if std::os::unix::process::parent_id() != parent {
                        std::process::exit(EXIT_ORPHANED);
                    }
                }
            });
    }
    let spin = std::env::var(SPIN_ENV)
        .ok()
        .and_then(|s| s.parse::<u64>().ok())
        .map_or(Duration::ZERO, Duration::from_micros);
    let sock = match unix::take_stdin_socket().and_then(|s| s.set_nonblocking(true).map(|()| s)) {
        Ok(sock) => sock,
        Err(e) => {
            eprintln!(
                "procpool worker {}: no coordinator socket on stdin: {e}",
                std::process::id()
            );
            return EXIT_PROTOCOL;
        }
    };
    let fds = Arc::new(Mutex::new(Vec::new()));
    let mut io = WorkerSocket {
        sock,
        spinner: Spinner::new(spin),
        fds: Arc::clone(&fds),
    };
    let mut input = &mut io;
    let output = input.sock.try_clone().and_then(|sock| {
        DeadlineWriter::new(WorkerSocket {
            sock,
            spinner: Spinner::new(Duration::ZERO),
            fds: Arc::default(),
        })
    });
    let mut output = match output {
        Ok(output) => output,
        Err(e) => {
            eprintln!("procpool worker {}: {e}", std::process::id());
            return EXIT_PROTOCOL;
        }
    };
    let key = std::env::var(KEY_ENV)
        .ok()
        .and_then(|k| k.parse::<u32>().ok());
    let fault = match std::env::var(FAULT_ENV) {
        Ok(spec) => match worker::Fault::parse(&spec, key) {
            Ok(f) => f,
            Err(e) => {
                eprintln!("procpool worker {}: {FAULT_ENV}: {e}", std::process::id());
                return EXIT_PROTOCOL;
            }
        },
        Err(_) => None,
    };
    match worker::serve(registry, &mut input, &mut output, &*fds, fault) {
        Ok(()) => 0,
        Err(e) => {
            eprintln!("procpool worker {}: {e}", std::process::id());
            EXIT_PROTOCOL
        }
    }
}
