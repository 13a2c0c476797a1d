//! The process backend: each worker is the current binary re-executed in worker mode,
//! connected by one socket pair (its stdin) that carries frames both ways. The
//! coordinator's side is non-blocking: writes queue in a per-worker buffer and go out in
//! as few syscalls as the socket takes; reads drain whatever arrived and decode every
//! whole frame. A worker's death shows as end-of-input and is confirmed by reaping it.

use super::peer::Peer;
use super::{EngineConfig, Payload, SpawnError, Waiter, WorkerKey};
use crate::context::ContextImage;
use crate::error::Error;
use crate::os::child::{ChildOutput, ChildProc, describe_exit};
use crate::os::unix::PollFd;
use crate::policy::{ChunkId, Event, Exit};
use crate::task::Task;
use crate::wire::frame::{self, FrameError};
use crate::wire::msg::{Down, PROTOCOL_VERSION};
use std::io::{self, Read, Write};
use std::marker::PhantomData;
use std::net::Shutdown;
use std::os::fd::{AsFd, AsRawFd};
use std::os::unix::net::UnixStream;
use std::sync::Arc;
use std::time::Duration;

/// How long a worker that closed its end may take to exit before it is killed.
const EXIT_GRACE: Duration = Duration::from_millis(200);
/// How long to wait for a dead worker's stderr to reach its end.
const TAIL_WAIT: Duration = Duration::from_millis(100);
/// Reads per worker per collect, so one chatty worker cannot starve the others.
const READS_PER_COLLECT: usize = 16;

struct ProcWorker {
    key: WorkerKey,
    child: ChildProc,
    sock: UnixStream,
    /// What it sent so far, and where its conversation stands.
    peer: Peer,
    out: Vec<u8>,
    out_pos: usize,
    /// We sent it SIGKILL.
    killed: bool,
    /// We asked it to finish: our write side is shut once `out` is drained.
    closing: bool,
    write_shut: bool,
    /// The shared context's descriptors still have to go with the next write.
    fds_pending: bool,
}

/// Worker processes over socket pairs.
pub(crate) struct ProcessEngine<T: Task> {
    cfg: EngineConfig,
    task: &'static str,
    context: Arc<ContextImage>,
    workers: Vec<ProcWorker>,
    wake_rx: UnixStream,
    wake_tx: UnixStream,
    bytes_out: u64,
    bytes_in: u64,
    _task: PhantomData<fn(T) -> T>,
}

impl<T: Task> ProcessEngine<T> {
    /// An engine that will hand `context` to every worker it starts.
    pub(crate) fn new(cfg: EngineConfig, context: ContextImage) -> Result<Self, Error> {
        if let ContextImage::Inline(bytes) = &context {
            // The context frame: header, message tag, byte-string length, then the bytes.
            let frame = bytes.len() as u64 + 16;
            if frame > u64::from(cfg.max_frame) {
                return Err(Error::Config(format!(
                    "the context of task {:?} ({} bytes) does not fit in a frame of at most {} \
                     bytes; raise it with max_frame_bytes, or let it travel in shared memory \
                     (share_context_above)",
                    T::NAME,
                    bytes.len(),
                    cfg.max_frame
                )));
            }
        }
        let (wake_rx, wake_tx) =
            UnixStream::pair().map_err(|e| Error::io("could not create the wake-up socket", e))?;
        for s in [&wake_rx, &wake_tx] {
            s.set_nonblocking(true)
                .map_err(|e| Error::io("could not configure the wake-up socket", e))?;
        }
        Ok(ProcessEngine {
            cfg,
            task: T::NAME,
            context: Arc::new(context),
            workers: Vec::new(),
            wake_rx,
            wake_tx,
            bytes_out: 0,
            bytes_in: 0,
            _task: PhantomData,
        })
    }

    pub(crate) fn spawn(&mut self, key: WorkerKey) -> Result<u32, SpawnError> {
        let (child, sock) = ChildProc::spawn(
            "pool",
            Some(key),
            self.cfg.spin,
            ChildOutput::Drain {
                label: format!("worker {key}"),
                forward: self.cfg.forward_output,
            },
            &self.cfg.env,
        )
        .map_err(|e| SpawnError::io("could not start a worker process", &e))?;
        sock.set_nonblocking(true)
            .map_err(|e| SpawnError::io("could not configure a worker socket", &e))?;
        let greeting = Down::Hello {
            protocol: PROTOCOL_VERSION,
            task: self.task,
            max_frame: self.cfg.max_frame,
            flags: self.cfg.flags,
        };
        let context = self.context.message();
        let mut out = Vec::new();
        for msg in [&greeting, &context] {
            frame::write_frame(&mut out, msg, self.cfg.max_frame).map_err(|e| SpawnError {
                message: format!("could not encode the greeting: {e}"),
                transient: false,
                os_error: None,
            })?;
        }
        let pid = child.pid();
        tracing::debug!(
            pid,
            inline_bytes = out.len(),
            shared_bytes = self.context.shared_bytes(),
            "greeting and context queued for the worker"
        );
        self.workers.push(ProcWorker {
            key,
            child,
            sock,
            peer: Peer::new(key, pid, format!("worker pid {pid}"), self.cfg.max_frame),
            out,
            out_pos: 0,
            killed: false,
            closing: false,
            write_shut: false,
            fds_pending: !self.context.fds().is_empty(),
        });
        Ok(pid)
    }

    pub(crate) fn send(
        &mut self,
        key: WorkerKey,
        chunk: ChunkId,
        jobs: &mut [Payload<T>],
        tags: &[u64],
    ) {
        let max = self.cfg.max_frame;
        if let Some(w) = self.workers.iter_mut().find(|w| w.key == key) {
            super::frame_jobs(&mut w.out, chunk, jobs, tags, max);
        }
    }

    pub(crate) fn flush(&mut self) {
        for w in &mut self.workers {
            self.bytes_out += flush_worker(w, &self.context);
        }
    }

    pub(crate) fn waiter(&self) -> Waiter {
        let mut fds = Vec::with_capacity(self.workers.len() + 1);
        fds.push(PollFd::readable(self.wake_rx.as_raw_fd()));
        for w in &self.workers {
            let fd = PollFd::readable(w.sock.as_raw_fd());
            fds.push(if w.out_pos < w.out.len() {
                fd.with_writable()
            } else {
                fd
            });
        }
        Waiter::Poll(fds)
    }

    pub(crate) fn wake(&self) {
        let _ = (&self.wake_tx).write(&[1]);
    }

    pub(crate) fn collect(&mut self, events: &mut Vec<Event<T::Output>>) {
        let mut sink = [0u8; 64];
        while matches!((&self.wake_rx).read(&mut sink), Ok(n) if n > 0) {}
        let mut i = 0;
        while i < self.workers.len() {
            let w = &mut self.workers[i];
            self.bytes_out += flush_worker(w, &self.context);
            let (bytes, ended) = read_worker::<T>(w, events);
            self.bytes_in += bytes;
            // Reaped without an end of input: a grandchild holds the socket open. What the
            // worker wrote before dying is still read; then it counts as gone.
            let ended = ended
                || (w.child.try_reap().is_some() && {
                    let _ = read_worker::<T>(w, events);
                    true
                });
            if ended {
                let mut w = self.workers.swap_remove(i);
                let killed = w.killed;
                let status = w.child.reap(EXIT_GRACE);
                events.push(Event::Exited {
                    worker: w.key,
                    exit: Exit {
                        status: status.map_or_else(
                            || "could not be reaped".to_owned(),
                            |s| describe_exit(s, killed),
                        ),
                        code: status.and_then(|s| s.code()),
                        stderr_tail: w.child.stderr_tail(TAIL_WAIT),
                    },
                });
            } else {
                i += 1;
            }
        }
    }

    pub(crate) fn kill(&mut self, key: WorkerKey) {
        if let Some(w) = self.workers.iter_mut().find(|w| w.key == key) {
            w.killed = true;
            w.child.kill();
        }
    }

    pub(crate) fn close(&mut self, key: WorkerKey) {
        let max = self.cfg.max_frame;
        if let Some(w) = self.workers.iter_mut().find(|w| w.key == key) {
            if !w.closing {
                w.closing = true;
                let _ = frame::write_frame(&mut w.out, &Down::Bye, max);
            }
            self.bytes_out += flush_worker(w, &self.context);
        }
    }

    pub(crate) fn max_frame(&self) -> u32 {
        self.cfg.max_frame
    }

    pub(crate) fn context_shared_bytes(&self) -> u64 {
        self.context.shared_bytes() as u64
    }

    pub(crate) fn wire_bytes(&self) -> (u64, u64) {
        (self.bytes_out, self.bytes_in)
    }
}

/// Writes what the socket takes without blocking; shuts our side when closing and done.
/// The first write to a new worker carries the shared context's descriptors.
fn flush_worker(w: &mut ProcWorker, context: &ContextImage) -> u64 {
    let mut written = 0u64;
    while w.out_pos < w.out.len() {
        let sent = if w.fds_pending {
            crate::os::shm::send_with_fds(w.sock.as_fd(), &w.out[w.out_pos..], &context.fds())
                .inspect(|_| w.fds_pending = false)
        } else {
            (&w.sock).write(&w.out[w.out_pos..])
        };
        match sent {
            Ok(0) => break,
            Ok(n) => {
                w.out_pos += n;
                written += n as u64;
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            // WouldBlock: later. Anything else (the worker is gone): collect sees the end.
            Err(_) => break,
        }
    }
    if w.out_pos == w.out.len() {
        w.out.clear();
        w.out_pos = 0;
        if w.closing && !w.write_shut {
            let _ = w.sock.shutdown(Shutdown::Write);
            w.write_shut = true;
        }
    } else if w.out_pos > (1 << 20) && w.out_pos * 2 > w.out.len() {
        w.out.drain(..w.out_pos);
        w.out_pos = 0;
    }
    written
}

/// Reads what arrived and turns whole frames into events. Returns the bytes read and
/// whether the worker's input ended (end of file or a broken connection).
fn read_worker<T: Task>(w: &mut ProcWorker, events: &mut Vec<Event<T::Output>>) -> (u64, bool) {
    let mut bytes = 0u64;
    for _ in 0..READS_PER_COLLECT {
        let n = match w.peer.reader.fill_from(&mut &w.sock) {
            Ok(n) => n,
            // A worker that exits before reading all we sent resets the connection
            // (Linux reports ECONNRESET, not an end of input, once its bytes are read):
            // the same end, and what it left half-written is diagnosed the same way.
            Err(e) if e.kind() == io::ErrorKind::ConnectionReset => 0,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return (bytes, false),
            Err(_) => return (bytes, true),
        };
        w.peer.decode::<T>(events);
        if n == 0 {
            w.peer.finish(events);
            return (bytes, true);
        }
        bytes += n as u64;
    }
    (bytes, false)
}

impl From<FrameError> for Error {
    fn from(e: FrameError) -> Self {
        Error::Protocol(e.to_string())
    }
}
