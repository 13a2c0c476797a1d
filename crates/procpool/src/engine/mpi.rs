//! The MPI backend (cargo feature `mpi`): rank 0 is the coordinator, ranks 1..N are the
//! workers, running the very worker loop of the process backend over MPI byte messages
//! instead of a socket. The same frames, the same messages, the same results.
//!
//! - A pool starts with a `START` message to every worker rank, then one broadcast of the
//!   greeting and the context: the context (the sample matrix) travels once, to all.
//! - Frames go in `DOWN` and `UP` messages. Rank 0 only ever sends without blocking (its
//!   buffers live until MPI is done with them), so it never waits on a worker busy with a
//!   job; workers send their results with a plain blocking send, which rank 0's next poll
//!   completes. `BYE` ends a pool (the worker loop sees end of input); `EXIT`, sent when
//!   the [`Mpi`] handle drops, ends the program.
//! - Nobody busy-waits: MPI's blocking receive polls a core, so every wait here is a probe
//!   loop that spins briefly and then sleeps with a growing pause (capped at 1 ms).
//! - What MPI cannot do: stop one rank (so there are no job timeouts), or replace a rank
//!   that died (mpirun tears the whole job down instead — it exits non-zero within
//!   seconds). A task's panic is still just that job's error; any other panic in a worker
//!   rank aborts the MPI job rather than leave rank 0 waiting forever.
//! - All MPI calls on rank 0 happen under the pool's lock (MPI_THREAD_SERIALIZED).

use super::peer::Peer;
use super::{EngineConfig, Payload, SpawnError, WorkerKey};
use crate::error::Error;
use crate::os::env::FAULT_ENV;
use crate::policy::{ChunkId, Event, Exit};
use crate::task::{IN_TASK, Task};
use crate::wire::frame;
use crate::wire::msg::{Down, PROTOCOL_VERSION};
use crate::worker::fault::Fault;
use crate::worker::{self, Batch, Output, Registry};
use mpi::Threading;
use mpi::request::{Request, StaticScope};
use mpi::topology::SimpleCommunicator;
use mpi::traits::*;
use std::io::{self, Read};
use std::marker::PhantomData;
use std::time::{Duration, Instant};

const TAG_START: i32 = 1;
const TAG_DOWN: i32 = 2;
const TAG_UP: i32 = 3;
const TAG_BYE: i32 = 4;
const TAG_EXIT: i32 = 5;

/// Longest pause between probes while waiting.
const MAX_PAUSE: Duration = Duration::from_millis(1);
/// How long a wait polls without sleeping (yielding the core to anyone who wants it)
/// before it starts sleeping: an answer usually comes within this; a sleep, with the
/// kernel's timer slack, costs 50 µs or more.
const SPIN: Duration = Duration::from_micros(300);

/// The MPI environment of this program; keep it alive for the whole of `main`.
pub struct Mpi {
    // Declared first, dropped first: the communicator goes before MPI is finalized.
    world: SimpleCommunicator,
    _universe: mpi::environment::Universe,
}

impl std::fmt::Debug for Mpi {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Mpi")
            .field("rank", &self.world.rank())
            .field("size", &self.world.size())
            .finish_non_exhaustive()
    }
}

/// Initializes MPI (threads serialized). Every rank calls it first thing; then worker
/// ranks call [`Mpi::serve_if_worker`].
pub fn init() -> Result<Mpi, Error> {
    let (universe, threading) = mpi::initialize_with_threading(Threading::Serialized)
        .ok_or_else(|| Error::Config("MPI is already initialized".into()))?;
    if threading < Threading::Serialized {
        return Err(Error::Config(format!(
            "the MPI library offers only {threading:?} threading; Serialized is needed"
        )));
    }
    let world = universe.world();
    Ok(Mpi {
        world,
        _universe: universe,
    })
}

impl Mpi {
    /// This process's rank (0 is the coordinator).
    pub fn rank(&self) -> i32 {
        self.world.rank()
    }

    /// Worker ranks (the world's size minus one).
    pub fn workers(&self) -> usize {
        usize::try_from(self.world.size() - 1).unwrap_or(0)
    }

    /// On a worker rank: serves pools until rank 0 says the program ends, then finalizes
    /// MPI and exits. On rank 0: returns at once.
    pub fn serve_if_worker(self, registry: &Registry) -> Mpi {
        if self.rank() == 0 {
            return self;
        }
        install_abort_hook();
        crate::task::install_panic_hook();
        let code = serve_worker(&self.world, registry);
        drop(self);
        std::process::exit(code);
    }
}

impl Drop for Mpi {
    fn drop(&mut self) {
        if self.world.rank() == 0 {
            for r in 1..self.world.size() {
                self.world
                    .process_at_rank(r)
                    .send_with_tag(&[0u8][..], TAG_EXIT);
            }
        }
    }
}

/// Any panic outside a task's `run` (caught there, it becomes the job's error) aborts the
/// whole MPI job: a worker rank that dies quietly would leave rank 0 waiting.
fn install_abort_hook() {
    let default = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        default(info);
        if !IN_TASK.with(|t| t.get()) {
            eprintln!("procpool mpi worker rank: fatal panic; aborting the MPI job");
            SimpleCommunicator::world().abort(70);
        }
    }));
}

/// Waits (spin, then sleep with growing pauses) until `ready` returns something.
fn wait_for<R>(mut ready: impl FnMut() -> Option<R>) -> R {
    let start = Instant::now();
    let mut pause = Duration::from_micros(10);
    loop {
        if let Some(r) = ready() {
            return r;
        }
        if start.elapsed() < SPIN {
            std::thread::yield_now();
        } else {
            std::thread::sleep(pause);
            pause = (pause * 2).min(MAX_PAUSE);
        }
    }
}

/// A worker rank's life: one session per pool rank 0 starts, until `EXIT`.
fn serve_worker(world: &SimpleCommunicator, registry: &Registry) -> i32 {
    let root = world.process_at_rank(0);
    loop {
        let tag = wait_for(|| {
            [TAG_EXIT, TAG_START]
                .into_iter()
                .find(|&t| root.immediate_probe_with_tag(t).is_some())
        });
        let _: (Vec<u8>, _) = root.receive_vec_with_tag(tag);
        if tag == TAG_EXIT {
            return 0;
        }
        // Nonblocking broadcasts, waited for politely: a blocking one would poll a core
        // for as long as rank 0 takes to get there.
        let mut len = 0u64;
        broadcast(&root, std::slice::from_mut(&mut len));
        let mut first = vec![0u8; usize::try_from(len).unwrap_or(0)];
        broadcast(&root, &mut first[..]);
        let mut input = MpiInput {
            world,
            buf: first,
            pos: 0,
        };
        let mut output = MpiOutput {
            world,
            buf: Vec::new(),
            batch: Batch::default(),
        };
        let fault = std::env::var(FAULT_ENV).ok().and_then(|spec| {
            Fault::parse(&spec, u32::try_from(world.rank() - 1).ok())
                .ok()
                .flatten()
        });
        let id = u32::try_from(world.rank() - 1).unwrap_or(0);
        match worker::serve(registry, &mut input, &mut output, &worker::NoFds, fault, id) {
            // A session ends with rank 0's BYE, which is the end of this input.
            Ok(()) | Err(worker::WorkerError::Abandoned) => {}
            Err(e) => {
                eprintln!("procpool mpi worker rank {}: {e}", world.rank());
                world.abort(3);
            }
        }
        // The session's last message: an empty UP. Rank 0 reads up to it before the next
        // session starts, so nothing this session sent late can reach the next pool (MPI
        // keeps the order of messages between two ranks with the same tag).
        root.send_with_tag(&[0u8; 0][..], TAG_UP);
    }
}

/// Rank 0's `buf` to every rank, without busy-waiting: nonblocking, then waited for
/// politely (every rank must use this same kind of broadcast: MPI does not match a
/// blocking broadcast with a nonblocking one).
fn broadcast<B>(root: &mpi::topology::Process<'_>, buf: &mut [B])
where
    [B]: mpi::datatype::BufferMut,
{
    mpi::request::scope(|scope| {
        let mut request = Some(root.immediate_broadcast_into(scope, buf));
        wait_for(|| match request.take().map(|r| r.test()) {
            Some(Ok(_)) | None => Some(()),
            Some(Err(r)) => {
                request = Some(r);
                None
            }
        });
    });
}

/// A worker rank's input: the broadcast, then `DOWN` messages; `BYE` is the end.
struct MpiInput<'a> {
    world: &'a SimpleCommunicator,
    buf: Vec<u8>,
    pos: usize,
}

impl Read for MpiInput<'_> {
    fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
        if self.pos == self.buf.len() {
            let root = self.world.process_at_rank(0);
            let tag = wait_for(|| {
                [TAG_DOWN, TAG_BYE]
                    .into_iter()
                    .find(|&t| root.immediate_probe_with_tag(t).is_some())
            });
            let (msg, _) = root.receive_vec_with_tag::<u8>(tag);
            if tag == TAG_BYE {
                return Ok(0);
            }
            self.buf = msg;
            self.pos = 0;
        }
        let n = out.len().min(self.buf.len() - self.pos);
        out[..n].copy_from_slice(&self.buf[self.pos..self.pos + n]);
        self.pos += n;
        Ok(n)
    }
}

/// A worker rank's output: frames collect until a flush (before it waits for input, or
/// before it starts a job while results wait) and go to rank 0 as one `UP` message.
struct MpiOutput<'a> {
    world: &'a SimpleCommunicator,
    buf: Vec<u8>,
    batch: Batch,
}

impl Output for MpiOutput<'_> {
    fn frame(&mut self, bytes: &[u8]) -> io::Result<()> {
        self.batch.frame(&mut self.buf, bytes)
    }

    fn result(&mut self, chunk: u64, index: u32, result: &[u8]) -> io::Result<()> {
        self.batch.push(&mut self.buf, chunk, index, result)
    }

    fn ok_result(
        &mut self,
        chunk: u64,
        index: u32,
        compute_ns: u64,
        output: &[u8],
    ) -> io::Result<()> {
        self.batch
            .push_output(&mut self.buf, chunk, index, compute_ns, output)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.batch.seal(&mut self.buf)?;
        if !self.buf.is_empty() {
            self.world
                .process_at_rank(0)
                .send_with_tag(&self.buf[..], TAG_UP);
            self.buf.clear();
        }
        Ok(())
    }

    fn set_max_frame(&mut self, max: u32) {
        self.batch.set_max_frame(max);
    }

    fn job_starting(&mut self) {
        // No helper thread here (one MPI caller per rank keeps things simple): send what
        // waits now, so no result is held back by a long job.
        let _ = self.flush();
    }
}

/// A nonblocking send and the buffer it owns until MPI is done with it.
struct Sending(Request<'static, [u8], StaticScope>);

// SAFETY: the request is only a handle to a send in flight; every MPI call on rank 0 is
// made under the pool's lock (MPI_THREAD_SERIALIZED), so moving it between threads never
// makes two threads call MPI at once.
unsafe impl Send for Sending {}

impl Sending {
    fn start(world: &SimpleCommunicator, rank: i32, data: Vec<u8>, tag: i32) -> Sending {
        let data: &'static [u8] = Box::leak(data.into_boxed_slice());
        Sending(
            world
                .process_at_rank(rank)
                .immediate_send_with_tag(StaticScope, data, tag),
        )
    }

    /// Done: frees the buffer. Not yet: gives the send back.
    fn test(self) -> Result<(), Sending> {
        match self.0.test_with_data() {
            Ok((_, data)) => {
                free(data);
                Ok(())
            }
            Err(r) => Err(Sending(r)),
        }
    }

    fn wait(self) {
        free(self.0.wait_for_data());
    }
}

/// Frees a buffer leaked by [`Sending::start`] once its send completed.
fn free(data: &'static [u8]) {
    // SAFETY: `data` came from `Box::leak` in `Sending::start`, and MPI no longer reads it
    // (its request completed), so we own it again, exactly once.
    drop(unsafe { Box::from_raw(std::ptr::from_ref(data).cast_mut()) });
}

/// The world communicator (a handle to a constant; not `Send`, so never stored).
fn world() -> SimpleCommunicator {
    SimpleCommunicator::world()
}

struct RankWorker {
    rank: i32,
    peer: Peer,
    out: Vec<u8>,
    gone: bool,
}

/// Worker ranks as a pool's workers.
pub(crate) struct MpiEngine<T: Task> {
    max_frame: u32,
    size: i32,
    workers: Vec<RankWorker>,
    next_rank: i32,
    sending: Vec<Sending>,
    /// When a message last went out or came in: waits spin for a while after it.
    active: Instant,
    bytes_out: u64,
    bytes_in: u64,
    exited: Vec<WorkerKey>,
    /// Per rank (index = rank): its session's end marker (an empty UP) arrived.
    ended: Vec<bool>,
    _task: PhantomData<fn(T) -> T>,
}

impl<T: Task> MpiEngine<T> {
    /// Starts a session on every worker rank and broadcasts the greeting and `context`.
    pub(crate) fn new(cfg: &EngineConfig, context: &[u8]) -> Result<Self, Error> {
        if !mpi::is_initialized() {
            return Err(Error::Config(
                "the MPI backend needs procpool::mpi::init() first thing in main, under mpirun"
                    .into(),
            ));
        }
        let world = SimpleCommunicator::world();
        if world.rank() != 0 {
            return Err(Error::Config("only MPI rank 0 can run a pool".into()));
        }
        if world.size() < 2 {
            return Err(Error::Config(
                "the MPI backend needs at least 2 ranks (mpirun -n 2 or more): rank 0 \
                 coordinates, the others work"
                    .into(),
            ));
        }
        let mut first = Vec::new();
        frame::write_frame(
            &mut first,
            &Down::Hello {
                protocol: PROTOCOL_VERSION,
                task: T::NAME,
                max_frame: cfg.max_frame,
                flags: cfg.flags,
            },
            cfg.max_frame,
        )?;
        frame::write_frame(
            &mut first,
            &Down::Context { payload: context },
            cfg.max_frame,
        )?;
        for r in 1..world.size() {
            world
                .process_at_rank(r)
                .send_with_tag(&[0u8][..], TAG_START);
        }
        let root = world.process_at_rank(0);
        let mut len = first.len() as u64;
        broadcast(&root, std::slice::from_mut(&mut len));
        broadcast(&root, &mut first[..]);
        let bytes_out = first.len() as u64 * u64::try_from(world.size() - 1).unwrap_or(0);
        Ok(MpiEngine {
            max_frame: cfg.max_frame,
            size: world.size(),
            workers: Vec::new(),
            next_rank: 1,
            sending: Vec::new(),
            active: Instant::now(),
            bytes_out,
            bytes_in: 0,
            exited: Vec::new(),
            ended: vec![false; usize::try_from(world.size()).unwrap_or(0)],
            _task: PhantomData,
        })
    }

    /// The largest frame either side sends.
    pub(crate) fn max_frame(&self) -> u32 {
        self.max_frame
    }

    /// The worker ranks.
    pub(crate) fn ranks(&self) -> usize {
        usize::try_from(self.size - 1).unwrap_or(0)
    }

    pub(crate) fn spawn(&mut self, key: WorkerKey) -> Result<u32, SpawnError> {
        if self.next_rank >= self.size {
            return Err(SpawnError {
                message: "an MPI rank cannot be started again: every worker rank is in use".into(),
                transient: false,
                os_error: None,
            });
        }
        let rank = self.next_rank;
        self.next_rank += 1;
        self.workers.push(RankWorker {
            rank,
            peer: Peer::new(key, 0, format!("rank {rank}"), self.max_frame),
            out: Vec::new(),
            gone: false,
        });
        Ok(0)
    }

    pub(crate) fn send(
        &mut self,
        key: WorkerKey,
        chunk: ChunkId,
        jobs: &mut [Payload<T>],
        tags: &[u64],
    ) {
        let max = self.max_frame;
        if let Some(w) = self
            .workers
            .iter_mut()
            .find(|w| w.peer.key == key && !w.gone)
        {
            super::frame_jobs(&mut w.out, chunk, jobs, tags, max);
        }
    }

    pub(crate) fn flush(&mut self) {
        for w in &mut self.workers {
            if !w.out.is_empty() && !w.gone {
                self.bytes_out += w.out.len() as u64;
                let data = std::mem::take(&mut w.out);
                self.sending
                    .push(Sending::start(&world(), w.rank, data, TAG_DOWN));
            }
        }
    }

    /// How long the leader may sleep before polling again: nothing for the first
    /// [`SPIN`] after the last message (an answer is likely), then an eighth of the quiet
    /// time so far, up to a millisecond.
    pub(crate) fn pause(&self) -> Duration {
        let quiet = self.active.elapsed();
        if quiet < SPIN {
            Duration::ZERO
        } else {
            (quiet / 8).clamp(Duration::from_micros(10), MAX_PAUSE)
        }
    }

    pub(crate) fn collect(&mut self, events: &mut Vec<Event<T::Output>>) {
        self.sending = std::mem::take(&mut self.sending)
            .into_iter()
            .filter_map(|s| s.test().err())
            .collect();
        let mut got = false;
        for _ in 0..256 {
            let world = world();
            let Some(status) = world.any_process().immediate_probe_with_tag(TAG_UP) else {
                break;
            };
            let source = status.source_rank();
            let (msg, _) = world
                .process_at_rank(source)
                .receive_vec_with_tag::<u8>(TAG_UP);
            got = true;
            self.bytes_in += msg.len() as u64;
            if msg.is_empty() {
                // The rank's session ended (after our BYE): nothing more comes from it.
                if let Some(e) = usize::try_from(source)
                    .ok()
                    .and_then(|r| self.ended.get_mut(r))
                {
                    *e = true;
                }
                continue;
            }
            if let Some(w) = self
                .workers
                .iter_mut()
                .find(|w| w.rank == source && !w.gone)
            {
                w.peer.reader.push(&msg);
                w.peer.decode::<T>(events);
            }
        }
        if got {
            self.active = Instant::now();
        }
        for key in self.exited.drain(..) {
            events.push(Event::Exited {
                worker: key,
                exit: Exit {
                    status: "finished".into(),
                    code: Some(0),
                    stderr_tail: String::new(),
                },
            });
        }
    }

    /// A rank cannot be stopped alone: it is dropped from the pool (its jobs go elsewhere)
    /// and its messages are ignored from now on.
    pub(crate) fn kill(&mut self, key: WorkerKey) {
        if let Some(w) = self
            .workers
            .iter_mut()
            .find(|w| w.peer.key == key && !w.gone)
        {
            w.gone = true;
            tracing::warn!(
                rank = w.rank,
                "an MPI rank cannot be stopped alone; ending its session"
            );
            self.sending
                .push(Sending::start(&world(), w.rank, vec![0], TAG_BYE));
            self.exited.push(key);
        }
    }

    /// Ends the rank's session (it goes back to waiting for the next pool).
    pub(crate) fn close(&mut self, key: WorkerKey) {
        self.flush();
        if let Some(w) = self
            .workers
            .iter_mut()
            .find(|w| w.peer.key == key && !w.gone)
        {
            w.gone = true;
            self.sending
                .push(Sending::start(&world(), w.rank, vec![0], TAG_BYE));
            self.exited.push(key);
        }
    }

    pub(crate) fn wire_bytes(&self) -> (u64, u64) {
        (self.bytes_out, self.bytes_in)
    }
}

/// Ends every session this engine started (each worker rank got one, spawned as a worker
/// or not) and reads each rank's messages up to its end marker, so the next pool starts on
/// a clean line. A rank finishes the chunk it holds first: an MPI rank cannot be stopped.
impl<T: Task> Drop for MpiEngine<T> {
    fn drop(&mut self) {
        let world = world();
        // A rank whose worker was closed or killed got its BYE then; every other one
        // (spawned or not: each got a session in `new`) gets it now.
        for rank in 1..self.size {
            if !self.workers.iter().any(|w| w.rank == rank && w.gone) {
                world
                    .process_at_rank(rank)
                    .send_with_tag(&[0u8][..], TAG_BYE);
            }
        }
        for s in self.sending.drain(..) {
            s.wait();
        }
        for rank in 1..self.size {
            let ended = usize::try_from(rank)
                .ok()
                .and_then(|r| self.ended.get(r))
                .is_some_and(|&e| e);
            if ended {
                continue;
            }
            let from = world.process_at_rank(rank);
            loop {
                wait_for(|| from.immediate_probe_with_tag(TAG_UP));
                let (msg, _) = from.receive_vec_with_tag::<u8>(TAG_UP);
                if msg.is_empty() {
                    break;
                }
            }
        }
    }
}
