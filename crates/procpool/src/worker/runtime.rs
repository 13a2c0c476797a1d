//! A real worker process: what [`serve_if_worker`](crate::serve_if_worker) runs. It takes
//! the coordinator's socket from stdin, watches its parent, and serves until the
//! coordinator hangs up.
//!
//! Reading spins briefly before sleeping (the adaptive [`Spinner`]); writing collects
//! results in memory and writes them in one go when the worker is about to wait for input,
//! when a frame's jobs are done and the oldest has waited [`FLUSH_SOON`], or from a helper
//! thread once the oldest has waited [`FLUSH_AFTER`] while a job runs.

use super::fault::Fault;
use super::{Batch, FLUSH_AFTER, FLUSH_SOON, Output, Registry};
use crate::engine::Spinner;
use crate::os::env::{self, EXIT_ORPHANED, EXIT_PROTOCOL, WorkerEnv};
use crate::os::{shm, unix};
use std::io::{self, Read, Write};
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::net::UnixStream;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

/// Set once this process serves as a worker (the markers are gone from its environment).
static IN_WORKER: AtomicBool = AtomicBool::new(false);
/// Set once this process serves a pool (its tasks may not start pools of their own).
static IN_POOL_WORKER: AtomicBool = AtomicBool::new(false);

/// Whether this process is serving as a worker.
pub(crate) fn in_worker() -> bool {
    IN_WORKER.load(Ordering::Relaxed)
}

/// Whether this process is a pool's worker (nested pools are refused, like Python's
/// daemonic pool workers that may not have children).
pub(crate) fn in_pool_worker() -> bool {
    IN_POOL_WORKER.load(Ordering::Relaxed)
}

/// How often a worker checks that its coordinator is still there.
const PARENT_CHECK: Duration = Duration::from_millis(100);

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
        let mut spin = Duration::ZERO;
        loop {
            let got = {
                let mut fds = self.fds.lock().unwrap_or_else(|p| p.into_inner());
                shm::recv_with_fds(self.sock.as_fd(), buf, &mut fds)
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
            let since = *waiting_since.get_or_insert_with(|| {
                spin = self.spinner.budget();
                Instant::now()
            });
            if since.elapsed() < spin {
                std::hint::spin_loop();
                continue;
            }
            unix::wait_fd(self.sock.as_fd(), false, None)?;
        }
    }
}

/// Writes all of `bytes` to a non-blocking socket, waiting when it is full.
fn write_all(sock: &UnixStream, mut bytes: &[u8]) -> io::Result<()> {
    while !bytes.is_empty() {
        match (&*sock).write(bytes) {
            Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
            Ok(n) => bytes = &bytes[n..],
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                unix::wait_fd(sock.as_fd(), true, None)?;
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// A worker's output (see the module notes): frames and batched results in memory, written
/// by `flush` or by the flusher thread.
struct DeadlineWriter {
    shared: Arc<Shared>,
}

struct Shared {
    outbox: Mutex<Outbox>,
    wake: Condvar,
    /// Something is waiting to be written (checked without the lock on every job).
    waiting: AtomicBool,
    /// The flusher has been told to write it out in time (checked without the lock too).
    armed: AtomicBool,
}

struct Outbox {
    buf: Vec<u8>,
    batch: Batch,
    since: Option<Instant>,
    armed: bool,
    sock: UnixStream,
    failed: Option<io::ErrorKind>,
    done: bool,
}

impl Outbox {
    fn write_out(&mut self, waiting: &AtomicBool) -> io::Result<()> {
        if let Some(kind) = self.failed {
            return Err(kind.into());
        }
        self.batch.seal(&mut self.buf)?;
        waiting.store(false, Ordering::Relaxed);
        self.since = None;
        if self.buf.is_empty() {
            return Ok(());
        }
        let result = write_all(&self.sock, &self.buf);
        self.buf.clear();
        if let Err(e) = &result {
            self.failed = Some(e.kind());
        }
        result
    }

    fn queued(&mut self, waiting: &AtomicBool) -> io::Result<()> {
        if let Some(kind) = self.failed {
            return Err(kind.into());
        }
        if self.since.is_none() {
            self.since = Some(Instant::now());
            waiting.store(true, Ordering::Relaxed);
        }
        Ok(())
    }
}

impl DeadlineWriter {
    fn new(sock: UnixStream) -> io::Result<DeadlineWriter> {
        let shared = Arc::new(Shared {
            outbox: Mutex::new(Outbox {
                buf: Vec::with_capacity(64 << 10),
                batch: Batch::default(),
                since: None,
                armed: false,
                sock,
                failed: None,
                done: false,
            }),
            wake: Condvar::new(),
            waiting: AtomicBool::new(false),
            armed: AtomicBool::new(false),
        });
        let flusher = Arc::clone(&shared);
        std::thread::Builder::new()
            .name("procpool-flusher".into())
            .spawn(move || {
                let s = &*flusher;
                let mut out = s.outbox.lock().unwrap_or_else(|p| p.into_inner());
                while !out.done {
                    if !out.armed {
                        out = s.wake.wait(out).unwrap_or_else(|p| p.into_inner());
                        continue;
                    }
                    let now = Instant::now();
                    match out.since {
                        Some(since) if now < since + FLUSH_AFTER => {
                            out = s
                                .wake
                                .wait_timeout(out, since + FLUSH_AFTER - now)
                                .unwrap_or_else(|p| p.into_inner())
                                .0;
                        }
                        _ => {
                            let _ = out.write_out(&s.waiting);
                            out.armed = false;
                            s.armed.store(false, Ordering::Relaxed);
                        }
                    }
                }
            })?;
        Ok(DeadlineWriter { shared })
    }

    fn outbox(&self) -> MutexGuard<'_, Outbox> {
        self.shared.outbox.lock().unwrap_or_else(|p| p.into_inner())
    }
}

impl Output for DeadlineWriter {
    fn frame(&mut self, bytes: &[u8]) -> io::Result<()> {
        let waiting = &self.shared.waiting;
        let mut out = self.outbox();
        out.queued(waiting)?;
        let Outbox { buf, batch, .. } = &mut *out;
        batch.frame(buf, bytes)
    }

    fn result(&mut self, chunk: u64, index: u32, result: &[u8]) -> io::Result<()> {
        let waiting = &self.shared.waiting;
        let mut out = self.outbox();
        out.queued(waiting)?;
        let Outbox { buf, batch, .. } = &mut *out;
        batch.push(buf, chunk, index, result)
    }

    fn ok_result(
        &mut self,
        chunk: u64,
        index: u32,
        compute_ns: u64,
        output: &[u8],
    ) -> io::Result<()> {
        let waiting = &self.shared.waiting;
        let mut out = self.outbox();
        out.queued(waiting)?;
        let Outbox { buf, batch, .. } = &mut *out;
        batch.push_output(buf, chunk, index, compute_ns, output)
    }

    fn flush(&mut self) -> io::Result<()> {
        let waiting = &self.shared.waiting;
        self.outbox().write_out(waiting)
    }

    fn set_max_frame(&mut self, max: u32) {
        self.outbox().batch.set_max_frame(max);
    }

    fn frame_done(&mut self) -> io::Result<()> {
        let s = &*self.shared;
        if !s.waiting.load(Ordering::Relaxed) {
            return Ok(());
        }
        let mut out = self.outbox();
        match out.since {
            Some(since) if since.elapsed() >= FLUSH_SOON => out.write_out(&s.waiting),
            _ => Ok(()),
        }
    }

    fn job_starting(&mut self) {
        // Results are waiting while a job starts: make sure they go out in time. Both
        // flags are read without the lock: once armed, the jobs that follow take no lock
        // here (a stale `true` only skips arming a flusher that is already due to write).
        let s = &*self.shared;
        if !s.waiting.load(Ordering::Relaxed) || s.armed.load(Ordering::Relaxed) {
            return;
        }
        let mut out = self.outbox();
        if out.since.is_some() && !out.armed {
            out.armed = true;
            s.armed.store(true, Ordering::Relaxed);
            drop(out);
            s.wake.notify_one();
        }
    }
}

impl Drop for DeadlineWriter {
    fn drop(&mut self) {
        let waiting = &self.shared.waiting;
        let mut out = self.outbox();
        let _ = out.write_out(waiting);
        out.done = true;
        drop(out);
        self.shared.wake.notify_one();
    }
}

/// The child's side: serve the coordinator on stdin until it hangs up; returns the exit code.
pub(crate) fn worker_main(registry: &Registry, env: &WorkerEnv) -> i32 {
    IN_WORKER.store(true, Ordering::Relaxed);
    IN_POOL_WORKER.store(env.mode == "pool", Ordering::Relaxed);
    crate::task::install_panic_hook();
    let parent = env.parent;
    // A busy worker does not read its socket, so end of input alone cannot tell it the
    // coordinator died; watching the parent pid does (Linux's parent-death signal would
    // fire when the spawning *thread* exits, which is the wrong event). Going, it takes
    // its process group along: programs its tasks started die with it.
    let _ = std::thread::Builder::new()
        .name("procpool-parent-watch".into())
        .spawn(move || {
            loop {
                std::thread::sleep(PARENT_CHECK);
                if std::os::unix::process::parent_id() != parent {
                    unix::kill_group(std::process::id(), libc::SIGKILL);
                    std::process::exit(EXIT_ORPHANED);
                }
            }
        });
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
    let output = sock.try_clone().and_then(DeadlineWriter::new);
    let mut input = WorkerSocket {
        sock,
        spinner: Spinner::new(env.spin),
        fds: Arc::clone(&fds),
    };
    let mut output = match output {
        Ok(output) => output,
        Err(e) => {
            eprintln!("procpool worker {}: {e}", std::process::id());
            return EXIT_PROTOCOL;
        }
    };
    let fault = match &env.fault {
        Some(spec) => match Fault::parse(spec, env.key) {
            Ok(f) => f,
            Err(e) => {
                eprintln!(
                    "procpool worker {}: {}: {e}",
                    std::process::id(),
                    env::FAULT_ENV
                );
                return EXIT_PROTOCOL;
            }
        },
        None => None,
    };
    match super::serve(
        registry,
        &mut input,
        &mut output,
        &*fds,
        fault,
        env.key.unwrap_or(0),
    ) {
        Ok(()) => 0,
        Err(super::WorkerError::Abandoned) => {
            // The coordinator is gone without a goodbye: nobody will reap us or kill our
            // group, so take the programs our tasks started down with us.
            drop(output);
            unix::kill_group(std::process::id(), libc::SIGKILL);
            EXIT_ORPHANED
        }
        Err(e) => {
            eprintln!("procpool worker {}: {e}", std::process::id());
            EXIT_PROTOCOL
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::frame::{DEFAULT_MAX_FRAME, FrameReader};
    use crate::wire::msg::Up;

    #[test]
    fn results_that_waited_go_out_when_a_frame_is_done() {
        let (ours, theirs) = UnixStream::pair().unwrap();
        ours.set_nonblocking(true).unwrap();
        theirs.set_nonblocking(true).unwrap();
        let mut out = DeadlineWriter::new(ours).unwrap();
        out.ok_result(3, 0, 5, &[]).unwrap();
        out.ok_result(3, 1, 6, &[]).unwrap();
        std::thread::sleep(FLUSH_SOON * 2);
        // Queued, and no job started (the flusher is not armed): nothing written yet.
        let mut buf = [0u8; 256];
        let early = (&theirs).read(&mut buf);
        assert!(
            matches!(&early, Err(e) if e.kind() == io::ErrorKind::WouldBlock),
            "{early:?}"
        );
        // The frame's jobs are done and the results have waited: out they go, one frame.
        out.frame_done().unwrap();
        let n = (&theirs).read(&mut buf).unwrap();
        let mut reader = FrameReader::new(DEFAULT_MAX_FRAME);
        reader.push(&buf[..n]);
        let frame = reader.next_frame().unwrap().unwrap();
        let msg = crate::wire::codec::decode_borrowed::<Up<'_>>(frame).unwrap();
        assert!(
            matches!(
                msg,
                Up::Outputs {
                    chunk: 3,
                    first: 0,
                    count: 2,
                    ..
                }
            ),
            "{msg:?}"
        );
        assert!(reader.next_frame().unwrap().is_none());
    }
}
