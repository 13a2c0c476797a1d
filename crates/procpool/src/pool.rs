//! `Pool`: a fixed set of workers (processes, threads, or inline) behind Python's Pool API —
//! `apply`, `map`, `apply_async`, `map_async`, `imap`, `imap_unordered`, `close`, `join`,
//! `terminate` — with a `Drop` that never leaks a process.
//!
//! Concurrency design: all state sits behind one mutex. There is no supervisor thread:
//! whichever thread needs a result becomes the *leader*, releases the lock, blocks on the
//! backend (poll on the worker sockets, or the thread backend's queue), then takes the lock
//! back and applies what happened; other waiting threads sleep on a condition variable
//! until the leader has news. A job's round trip therefore costs the wake-ups of the
//! worker and of the thread that wants the result, nothing more; a bounded, adaptive spin
//! before blocking removes even those when results come fast. A helper thread drives the
//! pool only while asynchronous requests are outstanding and nobody waits on them.

use crate::engine::process::ProcessEngine;
use crate::engine::serial::SerialEngine;
use crate::engine::thread::ThreadEngine;
use crate::engine::{Backend, Engine, EngineConfig, Payload, Spinner};
use crate::error::{Error, JobError};
use crate::policy::stats::{Chunk, ChunkChoice, PoolStats, Timeline, WorkerRef};
use crate::policy::{Collected, Command, Core, Event, Item, Settings, Sink};
use crate::reorder::Reorder;
use crate::task::Task;
use crate::wire::{codec, frame};
use std::collections::VecDeque;
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};
use tracing::{debug, info};

/// Most workers one pool may have.
pub const MAX_WORKERS: usize = 1024;
/// How long `join` and `Drop` give workers to exit on their own before killing them.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(2);

/// One result of [`Pool::imap_unordered`]: where it came from and what it is.
#[derive(Debug)]
pub struct Tagged<O> {
    /// Position of the job in the input.
    pub pos: u64,
    /// The worker that ran it (`None` when it never ran, e.g. its input could not be encoded).
    pub worker: Option<WorkerRef>,
    /// The job's output, or why there is none.
    pub result: Result<O, Error>,
}

pub(crate) struct State<T: Task> {
    sup: Core<Payload<T>, T::Output>,
    engine: Engine<T>,
    leader: bool,
    spinner: Spinner,
    events: Vec<Event<T::Output>>,
    stop_driver: bool,
    /// Jobs carry their submission numbers (fault injection is on: tests).
    tags: bool,
    /// Completion callbacks of async requests (`AsyncResult::then`), run by the driver
    /// thread, outside the lock, once their request is complete.
    callbacks: Vec<(u64, Callback<T::Output>)>,
}

/// What `AsyncResult::then` leaves with the pool: turns the request's results into the
/// handle's value and hands it to the user's function.
type Callback<O> = Box<dyn FnOnce(Vec<Collected<O>>) + Send>;

/// A callback whose request is complete, with the request's results.
type ReadyCallback<O> = (Callback<O>, Vec<Collected<O>>);

impl<T: Task> State<T> {
    /// Takes the callbacks whose requests are complete, with their results.
    fn ready_callbacks(&mut self) -> Vec<ReadyCallback<T::Output>> {
        let mut ready = Vec::new();
        let mut i = 0;
        while i < self.callbacks.len() {
            let req = self.callbacks[i].0;
            if self.sup.is_complete(req) {
                let (_, f) = self.callbacks.swap_remove(i);
                let items = self.sup.take_collected(req).unwrap_or_default();
                ready.push((f, items));
            } else {
                i += 1;
            }
        }
        ready
    }

    fn callback_ready(&self) -> bool {
        self.callbacks
            .iter()
            .any(|(req, _)| self.sup.is_complete(*req))
    }
}

impl<T: Task> State<T> {
    fn step(&mut self) {
        let now = Instant::now();
        let mut events = std::mem::take(&mut self.events);
        self.engine.collect(&mut events);
        for event in events.drain(..) {
            self.sup.handle(event, now);
        }
        self.events = events;
        self.sup.tick(now);
        self.execute(now);
        self.engine.flush();
    }

    /// Carries out the core's commands on the engine (and feeds back what spawning gave).
    fn execute(&mut self, now: Instant) {
        loop {
            let commands = self.sup.take_commands();
            if commands.is_empty() {
                return;
            }
            for c in commands {
                match c {
                    Command::Spawn { worker } => {
                        let event = match self.engine.spawn(worker) {
                            Ok(pid) => Event::Spawned { worker, pid },
                            Err(e) => Event::SpawnFailed {
                                worker,
                                message: e.message,
                                transient: e.transient,
                                os_error: e.os_error,
                            },
                        };
                        self.sup.handle(event, now);
                    }
                    Command::Send { worker, chunk } => {
                        let tags = if self.tags {
                            self.sup.tags(chunk)
                        } else {
                            Vec::new()
                        };
                        let jobs = self.sup.payloads_mut(chunk);
                        self.engine.send(worker, chunk, jobs, &tags);
                    }
                    Command::Kill { worker } => {
                        for (chunk, index, job) in self.engine.kill(worker) {
                            self.sup.restore(chunk, index, Payload::Value(Some(job)));
                        }
                    }
                    Command::Close { worker } => self.engine.close(worker),
                }
            }
        }
    }

    /// Queues new work and sends what the workers have room for.
    fn submit_now(&mut self) {
        let now = Instant::now();
        self.sup.tick(now);
        self.execute(now);
        self.engine.flush();
    }
}

pub(crate) struct Shared<T: Task> {
    state: Mutex<State<T>>,
    cond: Condvar,
}

impl<T: Task> Shared<T> {
    fn lock(&self) -> MutexGuard<'_, State<T>> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Makes progress until `done` holds, as leader or follower (see the module notes).
    fn drive<'a>(
        &'a self,
        g: MutexGuard<'a, State<T>>,
        done: impl FnMut(&mut State<T>) -> bool,
    ) -> MutexGuard<'a, State<T>> {
        self.drive_until(g, None, done).0
    }

    /// Kills every worker and fails every unfinished job; the owner reaps.
    fn terminate_now(&self) {
        let mut g = self.lock();
        g.sup.terminate();
        g.execute(Instant::now());
        g.engine.flush();
        g.engine.wake();
        drop(g);
        self.cond.notify_all();
    }

    /// Like [`Shared::drive`], but gives up at `deadline` (a follower waits on the
    /// condition variable no longer than that); returns whether `done` held.
    fn drive_until<'a>(
        &'a self,
        mut g: MutexGuard<'a, State<T>>,
        deadline: Option<Instant>,
        mut done: impl FnMut(&mut State<T>) -> bool,
    ) -> (MutexGuard<'a, State<T>>, bool) {
        loop {
            if done(&mut g) {
                return (g, true);
            }
            let now = Instant::now();
            if deadline.is_some_and(|d| now >= d) {
                return (g, false);
            }
            if g.leader {
                g = match deadline {
                    None => self.cond.wait(g).unwrap_or_else(PoisonError::into_inner),
                    Some(d) => {
                        self.cond
                            .wait_timeout(g, d.saturating_duration_since(now))
                            .unwrap_or_else(PoisonError::into_inner)
                            .0
                    }
                };
                continue;
            }
            g.leader = true;
            let waiter = g.engine.waiter();
            let mut wake = g.sup.next_wake(now);
            if let Some(d) = deadline {
                wake = wake.min(d);
            }
            let timeout = wake.saturating_duration_since(now);
            let spin = g.spinner.budget();
            drop(g);
            waiter.wait(timeout, spin);
            let waited = now.elapsed();
            g = self.lock();
            g.leader = false;
            g.spinner.record(waited);
            g.step();
            self.cond.notify_all();
        }
    }
}

/// Terminates a pool from any thread: kills every worker now and fails the unfinished
/// jobs with [`JobError::Terminated`]; whoever owns the pool reaps the workers (its next
/// call, `join`, or drop). Does nothing once the pool is gone.
///
/// Get one from [`Pool::terminator`], or make one before the pool exists with
/// [`Terminator::new`] and hand it to [`PoolBuilder::terminator`]: terminating it then
/// stops the pool whenever it gets built — even while its workers are starting.
#[derive(Clone, Default)]
pub struct Terminator(Arc<TerminatorState>);

#[derive(Default)]
struct TerminatorState {
    fired: std::sync::atomic::AtomicBool,
    target: Mutex<Option<Arc<dyn Fn() + Send + Sync>>>,
}

impl Terminator {
    /// A terminator bound to no pool yet.
    pub fn new() -> Terminator {
        Terminator::default()
    }

    /// Terminates the pool (idempotent); a pool bound later starts terminated.
    pub fn terminate(&self) {
        self.0
            .fired
            .store(true, std::sync::atomic::Ordering::SeqCst);
        let target = self
            .0
            .target
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone();
        if let Some(f) = target {
            f();
        }
    }

    /// Whether [`Terminator::terminate`] was called.
    pub fn is_terminated(&self) -> bool {
        self.0.fired.load(std::sync::atomic::Ordering::SeqCst)
    }

    fn bind<T: Task>(&self, pool: &Pool<T>) {
        let weak = Arc::downgrade(&pool.shared);
        let f: Arc<dyn Fn() + Send + Sync> = Arc::new(move || {
            if let Some(shared) = weak.upgrade() {
                shared.terminate_now();
            }
        });
        *self.0.target.lock().unwrap_or_else(PoisonError::into_inner) = Some(Arc::clone(&f));
        if self.is_terminated() {
            f();
        }
    }
}

impl std::fmt::Debug for Terminator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Terminator")
            .field("terminated", &self.is_terminated())
            .finish()
    }
}

/// A pool of workers running task `T`.
pub struct Pool<T: Task> {
    shared: Arc<Shared<T>>,
    driver: Mutex<Option<JoinHandle<()>>>,
    backend: Backend,
    workers: usize,
}

/// Configures and starts a [`Pool`].
#[must_use = "a builder does nothing until .build()"]
pub struct PoolBuilder<T: Task> {
    workers: Option<usize>,
    backend: Backend,
    chunk: Chunk,
    window: Option<usize>,
    context: Option<T::Context>,
    retries: u32,
    job_timeout: Option<Duration>,
    max_frame: u32,
    spin: Duration,
    forward_output: bool,
    startup_timeout: Duration,
    ready_timeout: Duration,
    stall_warning: Duration,
    record_jobs: bool,
    record_phases: bool,
    share_above: usize,
    terminator: Option<Terminator>,
    env: Vec<(std::ffi::OsString, std::ffi::OsString)>,
    max_tasks_per_child: Option<u64>,
}

impl<T: Task> Default for PoolBuilder<T> {
    fn default() -> Self {
        PoolBuilder {
            workers: None,
            backend: Backend::Process,
            chunk: Chunk::Auto,
            window: None,
            context: None,
            retries: 2,
            job_timeout: None,
            max_frame: frame::DEFAULT_MAX_FRAME,
            spin: Duration::from_micros(50),
            forward_output: true,
            startup_timeout: Duration::from_secs(30),
            ready_timeout: Duration::from_secs(10),
            stall_warning: Duration::from_secs(60),
            record_jobs: false,
            record_phases: false,
            share_above: crate::context::SHARE_ABOVE,
            terminator: None,
            env: Vec::new(),
            max_tasks_per_child: None,
        }
    }
}

impl<T: Task> PoolBuilder<T> {
    /// Number of workers (default: the number of CPUs this process may use).
    pub fn workers(mut self, n: usize) -> Self {
        self.workers = Some(n);
        self
    }

    /// Where jobs run (default: [`Backend::Process`]).
    pub fn backend(mut self, backend: Backend) -> Self {
        self.backend = backend;
        self
    }

    /// Jobs per frame (default: [`Chunk::Auto`]).
    pub fn chunksize(mut self, chunk: Chunk) -> Self {
        self.chunk = chunk;
        self
    }

    /// Most positions an `imap` keeps in flight or buffered (default: adaptive, see
    /// [`Pool::window`]).
    pub fn window(mut self, n: usize) -> Self {
        self.window = Some(n);
        self
    }

    /// Data every worker gets once, before its first job (Python's `initializer`).
    /// Required unless the context type encodes to nothing (like `()`).
    pub fn context(mut self, ctx: T::Context) -> Self {
        self.context = Some(ctx);
        self
    }

    /// How many times a job that kills its worker is started again (default 2).
    pub fn retries(mut self, n: u32) -> Self {
        self.retries = n;
        self
    }

    /// Longest a job may run; its worker is then killed and replaced, and the job fails
    /// with [`JobError::TimedOut`] (default: none).
    pub fn job_timeout(mut self, limit: Duration) -> Self {
        self.job_timeout = Some(limit);
        self
    }

    /// Largest frame on the wire, in bytes (default 256 MiB; at most 1 GiB).
    pub fn max_frame_bytes(mut self, n: u32) -> Self {
        self.max_frame = n;
        self
    }

    /// How long a waiting thread or idle worker spins before sleeping (default 50 µs;
    /// zero never spins). Spinning trades CPU for latency; it backs off by itself when
    /// it does not pay.
    pub fn spin(mut self, d: Duration) -> Self {
        self.spin = d;
        self
    }

    /// Whether worker stdout/stderr lines are copied to our stderr, prefixed with the
    /// worker (default true). The last lines are kept for diagnosis either way.
    pub fn forward_worker_output(mut self, on: bool) -> Self {
        self.forward_output = on;
        self
    }

    /// How long the pool waits for its *first* ready worker before giving up (default 30
    /// s): the case of a binary that never serves, not of a slow machine.
    pub fn startup_timeout(mut self, d: Duration) -> Self {
        self.startup_timeout = d;
        self
    }

    /// How long each new worker has to greet and install its context (default 10 s); one
    /// that misses it (frozen, stuck) is killed and replaced, after a back-off.
    pub fn ready_timeout(mut self, d: Duration) -> Self {
        self.ready_timeout = d;
        self
    }

    /// Without a job timeout, a worker whose running job makes no progress for this long is
    /// reported once on the log (default 60 s); it is not stopped.
    pub fn stall_warning(mut self, d: Duration) -> Self {
        self.stall_warning = d;
        self
    }

    /// A worker runs at most `n` jobs, then exits and is replaced (Python's
    /// `maxtasksperchild`): a bound on what a leaky task can accumulate in one process.
    pub fn max_tasks_per_child(mut self, n: u64) -> Self {
        self.max_tasks_per_child = Some(n);
        self
    }

    /// Sets an environment variable in every worker process this pool starts (say
    /// `OMP_NUM_THREADS=1`, so workers do not oversubscribe the CPUs); later calls add more.
    pub fn env(
        mut self,
        key: impl Into<std::ffi::OsString>,
        value: impl Into<std::ffi::OsString>,
    ) -> Self {
        self.env.push((key.into(), value.into()));
        self
    }

    /// A terminator made beforehand with [`Terminator::new`], so that a signal handler can
    /// stop the pool even while it is starting.
    pub fn terminator(mut self, t: &Terminator) -> Self {
        self.terminator = Some(t.clone());
        self
    }

    /// Process backend: a context whose encoding is larger than `bytes` goes into one
    /// sealed shared-memory object that every worker maps, instead of down each worker's
    /// socket (default 64 KiB; `usize::MAX` never shares). [`SharedSlice`](crate::SharedSlice)s
    /// inside a shared context are read in place by the workers, with no copy at all.
    ///
    /// The default comes from `cargo bench -p procpool -- context` (building a 2-worker
    /// pool, 2-core VM): at 4 KiB inline was about 5% faster, at 16 KiB they tied, from
    /// 64 KiB sharing won (4.9 vs 5.4 ms), and at 8 MiB it took half the time.
    pub fn share_context_above(mut self, bytes: usize) -> Self {
        self.share_above = bytes;
        self
    }

    /// Records every job's dispatch and result time for [`Pool::timeline`] (default off).
    pub fn record_timeline(mut self, on: bool) -> Self {
        self.record_jobs = on;
        self
    }

    /// Also has process workers stamp when each job's phases ended (read, decoded,
    /// computed, encoded) into [`JobSpan::phases`](crate::JobSpan::phases); implies
    /// [`record_timeline`](Self::record_timeline). Off by default, when a worker's job loop
    /// reads no clock at all.
    pub fn record_phases(mut self, on: bool) -> Self {
        self.record_phases = on;
        if on {
            self.record_jobs = true;
        }
        self
    }

    /// Starts the workers, and returns as soon as one of them has greeted and installed
    /// the context (the others join as they become ready; one that misses its ready
    /// deadline is killed and replaced). Fails only when no worker can be started at all.
    pub fn build(self) -> Result<Pool<T>, Error> {
        if crate::worker::runtime::in_pool_worker() {
            return Err(Error::InsideWorker);
        }
        let workers = match self.workers {
            Some(n) => n,
            None => std::thread::available_parallelism().map_or(1, usize::from),
        };
        if workers == 0 || workers > MAX_WORKERS {
            return Err(Error::Config(format!(
                "workers must be between 1 and {MAX_WORKERS}, got {workers}"
            )));
        }
        if let Chunk::Fixed(0) = self.chunk {
            return Err(Error::Config("chunksize must be at least 1, got 0".into()));
        }
        if self.window == Some(0) {
            return Err(Error::Config("window must be at least 1, got 0".into()));
        }
        if self.max_tasks_per_child == Some(0) {
            return Err(Error::Config(
                "max_tasks_per_child must be at least 1, got 0".into(),
            ));
        }
        if self.max_frame < 4096 || self.max_frame > frame::MAX_FRAME_LIMIT {
            return Err(Error::Config(format!(
                "max frame must be between 4096 and {} bytes, got {}",
                frame::MAX_FRAME_LIMIT,
                self.max_frame
            )));
        }
        let workers = if self.backend == Backend::Serial {
            1
        } else {
            workers
        };
        if self.backend != Backend::Thread && self.backend != Backend::Serial {
            // Workers are this binary started again: it must be able to serve the task.
            if let Some(why) = crate::worker::registry::check_registered(T::NAME) {
                return Err(Error::Config(why));
            }
        }
        let mut ctx = match self.context {
            Some(ctx) => ctx,
            None => codec::decode::<T::Context>(&[]).map_err(|_| {
                Error::Config(format!(
                    "task {:?} needs a context: call .context(...) on the builder",
                    T::NAME
                ))
            })?,
        };
        let cfg = EngineConfig {
            max_frame: self.max_frame,
            spin: self.spin,
            forward_output: self.forward_output,
            flags: match (self.record_phases, self.record_jobs) {
                (true, _) => crate::wire::msg::FLAG_PHASES,
                (false, true) => crate::wire::msg::FLAG_JOB_TIMES,
                (false, false) => 0,
            },
            env: self.env.clone(),
        };
        #[cfg_attr(not(feature = "mpi"), allow(unused_mut))]
        let mut workers = workers;
        let engine = match self.backend {
            Backend::Process => {
                let image = crate::context::ContextImage::build(&ctx, self.share_above)?;
                drop(ctx);
                Engine::Process(ProcessEngine::new(cfg, image)?)
            }
            Backend::Thread => {
                crate::task::install_panic_hook();
                init_shared::<T>(&mut ctx)?;
                Engine::Thread(ThreadEngine::new(ctx, self.spin))
            }
            Backend::Serial => {
                crate::task::install_panic_hook();
                init_shared::<T>(&mut ctx)?;
                Engine::Serial(SerialEngine::new(ctx))
            }
            #[cfg(feature = "mpi")]
            Backend::Mpi => {
                if self.job_timeout.is_some() {
                    return Err(Error::Config(
                        "job timeouts need a backend that can stop a worker; MPI cannot stop \
                         one rank"
                            .into(),
                    ));
                }
                let bytes = codec::encode(&ctx).map_err(|source| Error::Codec {
                    what: format!("the context of task {:?}", T::NAME),
                    source,
                })?;
                let engine = crate::engine::mpi::MpiEngine::new(&cfg, &bytes)?;
                let ranks = engine.ranks();
                if self.workers.is_some_and(|w| w != ranks) {
                    return Err(Error::Config(format!(
                        "the MPI backend has one worker per rank after rank 0: {ranks} here, \
                         but {workers} were asked for"
                    )));
                }
                workers = ranks;
                Engine::Mpi(engine)
            }
        };
        let started = Instant::now();
        let sup = Core::new(
            Settings {
                workers,
                chunk: self.chunk,
                window: self.window,
                retries: self.retries,
                job_timeout: self.job_timeout,
                record_jobs: self.record_jobs,
                inline: self.backend == Backend::Serial,
                timeout_names_pid: self.backend == Backend::Process,
                ready_timeout: self.ready_timeout,
                startup_timeout: self.startup_timeout,
                stall_warning: self.stall_warning,
                max_jobs_per_worker: self.max_tasks_per_child,
            },
            started,
        );
        let shared = Arc::new(Shared {
            state: Mutex::new(State {
                sup,
                engine,
                leader: false,
                spinner: Spinner::new(self.spin),
                events: Vec::new(),
                stop_driver: false,
                tags: std::env::var_os(crate::os::env::FAULT_ENV).is_some(),
                callbacks: Vec::new(),
            }),
            cond: Condvar::new(),
        });
        let pool = Pool {
            shared,
            driver: Mutex::new(None),
            backend: self.backend,
            workers,
        };
        if let Some(t) = &self.terminator {
            t.bind(&pool);
        }
        {
            let mut g = pool.shared.lock();
            g.sup.start(started);
            g.execute(started);
            g.engine.flush();
            let (g, _) = pool
                .shared
                .drive_until(g, None, |s| s.sup.ready_workers() > 0 || s.sup.stopped());
            if g.sup.ready_workers() == 0 {
                let err = g.sup.refusal().unwrap_or(Error::Closed);
                drop(g);
                pool.terminate();
                return Err(err);
            }
        }
        info!(
            backend = %pool.backend,
            workers,
            "pool ready in {:.2?} (first worker)",
            started.elapsed()
        );
        Ok(pool)
    }
}

impl<T: Task> Pool<T> {
    /// A builder with the defaults: process backend, one worker per CPU, auto chunksize.
    pub fn builder() -> PoolBuilder<T> {
        PoolBuilder::default()
    }

    /// The backend jobs run on.
    pub fn backend(&self) -> Backend {
        self.backend
    }

    /// The number of workers.
    pub fn workers(&self) -> usize {
        self.workers
    }

    /// Process ids of the live workers, by slot (the pool's own pid for threads/serial).
    pub fn pids(&self) -> Vec<u32> {
        self.shared.lock().sup.pids()
    }

    /// Waits until every worker is ready for jobs (started, handshaken, holding the
    /// context, [`Task::init`] done), or until `timeout` passes, or until the pool stops
    /// for good; returns how many workers are ready then.
    ///
    /// Jobs never need this: work starts as soon as one worker is ready. It is for a
    /// measurement that should not include start-up, or for a short first `map` that
    /// should spread over every worker (Python's `Pool` forks its workers before it
    /// returns): tiny jobs can otherwise all finish on the first worker to be ready before
    /// the others are.
    pub fn wait_ready(&self, timeout: Duration) -> usize {
        let want = self.workers;
        let deadline = Instant::now().checked_add(timeout);
        let (g, _) = self.shared.drive_until(self.shared.lock(), deadline, |s| {
            s.sup.ready_workers() >= want || s.sup.stopped()
        });
        g.sup.ready_workers()
    }

    /// The current in-flight window of `imap`/`imap_unordered`, in positions.
    pub fn window(&self) -> usize {
        self.shared.lock().sup.window()
    }

    /// Counters so far: jobs, failures, re-dispatches, workers, bytes on the wire.
    pub fn stats(&self) -> PoolStats {
        let g = self.shared.lock();
        let mut stats = g.sup.stats();
        (stats.bytes_sent, stats.bytes_received) = g.engine.wire_bytes();
        stats.context_shared_bytes = g.engine.context_shared_bytes();
        stats
    }

    /// What automatic chunking would choose now (it follows the running average job cost
    /// and the current input's length), once the per-frame overhead has been measured.
    pub fn chunk_choice(&self) -> Option<ChunkChoice> {
        self.shared.lock().sup.chunk_choice()
    }

    /// Worker lives, and job lives if recording was switched on.
    pub fn timeline(&self) -> Timeline {
        self.shared.lock().sup.timeline()
    }

    /// Runs one job and waits for its output (Python's `Pool.apply`).
    pub fn apply(&self, job: T) -> Result<T::Output, Error> {
        let req = self.submit_collect(vec![job], false)?;
        let g = self
            .shared
            .drive(self.shared.lock(), |s| s.sup.is_complete(req));
        collect_one(g, req)
    }

    /// Runs every job and returns the outputs in input order, or the first failure (by
    /// position) once every job has run (Python's `Pool.map`: a failure does not stop the
    /// others). The input is read whole, like Python's; for a lazy input, bounded memory,
    /// or stopping at the first failure, use [`Pool::imap`].
    pub fn map<I: IntoIterator<Item = T>>(&self, jobs: I) -> Result<Vec<T::Output>, Error> {
        let jobs: Vec<T> = jobs.into_iter().collect();
        let req = self.submit_collect(jobs, false)?;
        let g = self
            .shared
            .drive(self.shared.lock(), |s| s.sup.is_complete(req));
        let mut g = g;
        let outputs = g.sup.take_outputs(req).ok_or(Error::Closed)?;
        drop(g);
        outputs.map_err(|(pos, e)| job_error(pos, *e))
    }

    /// Starts one job and returns at once (Python's `Pool.apply_async`).
    pub fn apply_async(&self, job: T) -> AsyncResult<T::Output> {
        self.start_async(vec![job], |mut items| {
            items.pop().map_or(Err(Error::Closed), into_result)
        })
    }

    /// Starts every job and returns at once; the outputs come in input order
    /// (Python's `Pool.map_async`). The input is read whole, like Python's.
    pub fn map_async<I: IntoIterator<Item = T>>(&self, jobs: I) -> AsyncResult<Vec<T::Output>> {
        let jobs: Vec<T> = jobs.into_iter().collect();
        self.start_async(jobs, |items| {
            items
                .into_iter()
                .enumerate()
                .map(|(pos, item)| item.map_err(|e| job_error(pos as u64, *e)))
                .collect()
        })
    }

    /// A lazy iterator of outputs in input order over a lazy input (Python's `Pool.imap`).
    ///
    /// Input is pulled only as the window frees up, so an endless iterator works and memory
    /// stays bounded by the window. A failed job yields its error at its position;
    /// iteration may go on past it. Dropping the iterator withdraws the jobs not yet started.
    pub fn imap<I: IntoIterator<Item = T>>(&self, jobs: I) -> Imap<'_, T, I::IntoIter> {
        Imap {
            inner: Stream::new(self, jobs.into_iter(), true),
        }
    }

    /// Like [`Pool::imap`], but yields results as they finish, each tagged with its
    /// position and worker (Python's `Pool.imap_unordered`).
    pub fn imap_unordered<I: IntoIterator<Item = T>>(
        &self,
        jobs: I,
    ) -> ImapUnordered<'_, T, I::IntoIter> {
        ImapUnordered {
            inner: Stream::new(self, jobs.into_iter(), false),
        }
    }

    /// Refuses new work from now on; work already submitted still completes.
    pub fn close(&self) {
        self.shared.lock().sup.close();
    }

    /// Closes the pool, waits for all submitted work, then lets every worker exit and
    /// reaps it (killing any that does not exit within a grace period).
    pub fn join(&self) {
        let mut g = self.shared.lock();
        g.sup.close();
        let g = self.shared.drive(g, |s| s.sup.outstanding() == 0);
        drop(g);
        self.reap_all();
    }

    /// Kills every worker now; unfinished jobs fail with [`JobError::Terminated`]; then
    /// reaps them. Threads cannot be killed: on the thread backend it returns once the
    /// jobs they were running have returned (as Python's thread pool does), or after a
    /// grace period (2 s) for a job that does not return, which is then abandoned.
    pub fn terminate(&self) {
        self.shared.terminate_now();
        self.reap_all();
        self.join_threads(SHUTDOWN_GRACE);
    }

    /// Joins the worker threads (thread backend) that finish within `grace`, outside the
    /// pool's lock; the others are left to end on their own.
    fn join_threads(&self, grace: Duration) {
        let handles = self.shared.lock().engine.take_threads();
        let deadline = Instant::now() + grace;
        for h in handles {
            while !h.is_finished() && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(1));
            }
            if h.is_finished() {
                let _ = h.join();
            } else {
                debug!("a worker thread still runs its job; leaving it to end on its own");
            }
        }
    }

    /// A handle that terminates this pool from another thread (a signal handler thread,
    /// a watchdog) without owning it.
    pub fn terminator(&self) -> Terminator {
        let t = Terminator::new();
        t.bind(self);
        t
    }

    /// Lets every worker exit and reaps it; kills what outlives the grace period.
    fn reap_all(&self) {
        let mut g = self.shared.lock();
        let now = Instant::now();
        g.sup.begin_shutdown();
        g.execute(now);
        g.engine.flush();
        let deadline = now + SHUTDOWN_GRACE;
        let (mut g, clean) = self
            .shared
            .drive_until(g, Some(deadline), |s| s.sup.live_workers() == 0);
        if !clean {
            debug!("workers still alive after {SHUTDOWN_GRACE:?}; killing them");
            g.sup.kill_all();
            g.execute(Instant::now());
            drop(self.shared.drive(g, |s| s.sup.live_workers() == 0));
        }
    }

    /// Submits `jobs` as one collect request, in batches, so the first batches already
    /// run while later ones are encoded.
    fn submit_collect(&self, jobs: Vec<T>, is_async: bool) -> Result<u64, Error> {
        const BATCH: usize = 8192;
        let n = jobs.len();
        let req = {
            let mut g = self.shared.lock();
            let req = g.sup.open(Sink::collect(n), is_async)?;
            if n > 1 {
                g.sup.hint_len(n);
            }
            req
        };
        let mut jobs = jobs.into_iter();
        let mut pos = 0u64;
        loop {
            let mut g = self.shared.lock();
            let now = Instant::now();
            let s = &mut *g;
            let engine = &s.engine;
            let payloads = jobs.by_ref().take(BATCH).map(|j| engine.payload(j));
            let taken = s.sup.submit_many(req, pos, payloads, now);
            if taken == 0 {
                break;
            }
            pos += taken;
            // Collect what arrived and send what fits: the pipeline runs meanwhile.
            g.step();
            // A caller that waits anyway keeps at most a few batches queued: a million
            // jobs queued at once is memory touched for nothing (and page faults on the
            // hot path). An asynchronous caller must return at once, so queues it all.
            if !is_async && g.sup.waiting() > 2 * BATCH {
                drop(self.shared.drive(g, |s| s.sup.waiting() <= BATCH));
            }
        }
        self.shared.cond.notify_all();
        Ok(req)
    }

    fn start_async<V: Send + 'static>(
        &self,
        jobs: Vec<T>,
        finish: Finish<T::Output, V>,
    ) -> AsyncResult<V> {
        match self.submit_collect(jobs, true) {
            Ok(req) => {
                self.ensure_driver();
                self.shared.cond.notify_all();
                AsyncResult {
                    source: Some(Box::new(PoolSource {
                        shared: Arc::clone(&self.shared),
                        req,
                        finish,
                        handed_over: false,
                    })),
                    early: None,
                }
            }
            Err(e) => AsyncResult {
                source: None,
                early: Some(Err(e)),
            },
        }
    }

    fn ensure_driver(&self) {
        let mut driver = self.driver.lock().unwrap_or_else(PoisonError::into_inner);
        if driver.is_some() {
            return;
        }
        let shared = Arc::clone(&self.shared);
        *driver = std::thread::Builder::new()
            .name("procpool-driver".into())
            .spawn(move || {
                let mut g = shared.lock();
                loop {
                    g = shared
                        .cond
                        .wait_while(g, |s| {
                            !s.stop_driver && !s.sup.async_busy() && !s.callback_ready()
                        })
                        .unwrap_or_else(PoisonError::into_inner);
                    g = shared.drive(g, |s| {
                        s.stop_driver || !s.sup.async_busy() || s.callback_ready()
                    });
                    // Completion callbacks run here, outside the pool's lock (they may use
                    // the pool).
                    let ready = g.ready_callbacks();
                    if !ready.is_empty() {
                        drop(g);
                        for (f, items) in ready {
                            f(items);
                        }
                        g = shared.lock();
                    }
                    if g.stop_driver && !g.callback_ready() {
                        return;
                    }
                }
            })
            .ok();
    }

    fn stop_driver(&self) {
        let handle = self
            .driver
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take();
        if let Some(handle) = handle {
            {
                let mut g = self.shared.lock();
                g.stop_driver = true;
                g.engine.wake();
            }
            self.shared.cond.notify_all();
            let _ = handle.join();
        }
    }
}

impl<T: Task<Context = ()>> Pool<T> {
    /// A process pool of `workers` workers for a task without context (Python's `Pool(n)`).
    pub fn new(workers: usize) -> Result<Pool<T>, Error> {
        Pool::builder().workers(workers).build()
    }
}

impl<T: Task> Drop for Pool<T> {
    /// Waits for submitted work, lets the workers exit and reaps every one of them.
    fn drop(&mut self) {
        {
            let mut g = self.shared.lock();
            g.sup.close();
        }
        let g = self
            .shared
            .drive(self.shared.lock(), |s| s.sup.outstanding() == 0);
        drop(g);
        self.stop_driver();
        self.reap_all();
        self.join_threads(Duration::ZERO);
    }
}

impl<T: Task> std::fmt::Debug for Pool<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pool")
            .field("task", &T::NAME)
            .field("backend", &self.backend)
            .field("workers", &self.workers)
            .finish()
    }
}

/// `Task::init` for a context all workers share (threads, inline): once per pool.
fn init_shared<T: Task>(ctx: &mut T::Context) -> Result<(), Error> {
    T::init(ctx, &crate::task::WorkerInfo::here(0))
        .map_err(|e| Error::spawn(format!("Task::init of task {:?} failed: {e}", T::NAME)))
}

fn into_result<O>(item: Collected<O>) -> Result<O, Error> {
    item.map_err(|e| Error::Failed(*e))
}

fn collect_one<T: Task>(mut g: MutexGuard<'_, State<T>>, req: u64) -> Result<T::Output, Error> {
    let mut items = g.sup.take_collected(req).unwrap_or_default();
    items.pop().map_or(Err(Error::Closed), into_result)
}

/// Turns a complete collect request's results into what its handle returns.
type Finish<O, V> = fn(Vec<Collected<O>>) -> Result<V, Error>;

/// The lazy machinery behind `imap` and `imap_unordered`.
struct Stream<'p, T: Task, I> {
    pool: &'p Pool<T>,
    input: Option<I>,
    req: Result<u64, Option<Error>>,
    submitted: u64,
    /// Results taken out of the pool (handed out, or waiting in `ready`).
    taken: u64,
    /// Results taken out of the pool in one go, not yet handed out: the pool's lock is
    /// taken once per batch of results, not once per result.
    ready: VecDeque<(u64, Item<T::Output>)>,
    /// The input iterator panicked: resumed once every earlier result was handed out.
    input_panic: Option<Box<dyn std::any::Any + Send>>,
}

impl<'p, T: Task, I: Iterator<Item = T>> Stream<'p, T, I> {
    fn new(pool: &'p Pool<T>, input: I, ordered: bool) -> Self {
        let mut g = pool.shared.lock();
        let window = g.sup.window();
        let sink = if ordered {
            Sink::Ordered(Reorder::new(window))
        } else {
            Sink::Unordered(VecDeque::new())
        };
        let req = g.sup.open(sink, false).map_err(Some);
        if let (Some(n), Ok(_)) = (input.size_hint().1, &req) {
            g.sup.hint_len(n);
        }
        drop(g);
        Stream {
            pool,
            input: Some(input),
            req,
            submitted: 0,
            taken: 0,
            ready: VecDeque::new(),
            input_panic: None,
        }
    }

    /// Pulls input (outside the lock) until the window is full, and submits it.
    fn top_up(&mut self, req: u64) {
        let Some(input) = &mut self.input else {
            return;
        };
        let (window, stopped) = {
            let g = self.pool.shared.lock();
            (g.sup.window() as u64, g.sup.stopped())
        };
        if stopped {
            // Nothing more will run: stop pulling input (it may be endless).
            self.input = None;
            return;
        }
        let room = window.saturating_sub(self.submitted - self.taken);
        if room == 0 {
            return;
        }
        let mut fresh = Vec::new();
        for _ in 0..room {
            // A panicking input stops the input, not the results already on their way:
            // they come out first, then the panic goes on (as Python raises after them).
            match std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| input.next())) {
                Ok(Some(job)) => fresh.push(job),
                Ok(None) => {
                    self.input = None;
                    break;
                }
                Err(payload) => {
                    self.input = None;
                    self.input_panic = Some(payload);
                    break;
                }
            }
        }
        if fresh.is_empty() {
            return;
        }
        let mut g = self.pool.shared.lock();
        g.sup.grow_window(req, window as usize);
        let payloads: Vec<_> = fresh.into_iter().map(|j| g.engine.payload(j)).collect();
        let now = Instant::now();
        for payload in payloads {
            g.sup.submit(req, self.submitted, payload, now);
            self.submitted += 1;
        }
        g.submit_now();
    }

    fn next_item(&mut self) -> Option<(u64, Item<T::Output>)> {
        let req = match &mut self.req {
            Ok(req) => *req,
            Err(e) => {
                return e.take().map(|e| {
                    (
                        0,
                        Item {
                            worker: None,
                            result: Err(Box::new(match e {
                                Error::Closed => JobError::Terminated,
                                other => JobError::Codec {
                                    message: other.to_string(),
                                },
                            })),
                        },
                    )
                });
            }
        };
        if let Some(item) = self.ready.pop_front() {
            return Some(item);
        }
        self.top_up(req);
        if self.input.is_none() && self.taken == self.submitted {
            if let Some(payload) = self.input_panic.take() {
                std::panic::resume_unwind(payload);
            }
            return None;
        }
        let g = self.pool.shared.lock();
        let mut g = self.pool.shared.drive(g, |s| {
            s.sup.has_next(req) || s.sup.request_outstanding(req) == 0
        });
        while let Some(item) = g.sup.take_next(req) {
            self.taken += 1;
            self.ready.push_back(item);
        }
        drop(g);
        self.ready.pop_front()
    }
}

impl<T: Task, I> Drop for Stream<'_, T, I> {
    fn drop(&mut self) {
        if let Ok(req) = self.req {
            let mut g = self.pool.shared.lock();
            g.sup.cancel(req);
            g.sup.finish(req);
        }
    }
}

fn job_error(pos: u64, error: JobError) -> Error {
    Error::Job { pos, error }
}

/// Outputs of [`Pool::imap`], in input order.
pub struct Imap<'p, T: Task, I> {
    inner: Stream<'p, T, I>,
}

impl<T: Task, I: Iterator<Item = T>> Iterator for Imap<'_, T, I> {
    type Item = Result<T::Output, Error>;
    fn next(&mut self) -> Option<Self::Item> {
        if let Err(e) = &mut self.inner.req {
            return e.take().map(Err);
        }
        let (pos, item) = self.inner.next_item()?;
        Some(item.result.map_err(|e| job_error(pos, *e)))
    }
}

/// Results of [`Pool::imap_unordered`], as they finish.
pub struct ImapUnordered<'p, T: Task, I> {
    inner: Stream<'p, T, I>,
}

impl<T: Task, I: Iterator<Item = T>> Iterator for ImapUnordered<'_, T, I> {
    type Item = Tagged<T::Output>;
    fn next(&mut self) -> Option<Self::Item> {
        if let Err(e) = &mut self.inner.req {
            return e.take().map(|e| Tagged {
                pos: 0,
                worker: None,
                result: Err(e),
            });
        }
        let (pos, item) = self.inner.next_item()?;
        Some(Tagged {
            pos,
            worker: item.worker,
            result: item.result.map_err(|e| job_error(pos, *e)),
        })
    }
}

trait Source<V>: Send + Sync {
    fn ready(&self) -> bool;
    fn wait(&self, deadline: Option<Instant>) -> bool;
    fn take(&self) -> Result<V, Error>;
    /// Leaves the request with the pool: `f` gets its value when it is complete.
    fn on_complete(self: Box<Self>, f: Box<dyn FnOnce(Result<V, Error>) + Send>);
}

struct PoolSource<T: Task, V> {
    shared: Arc<Shared<T>>,
    req: u64,
    finish: Finish<T::Output, V>,
    /// Handed to the pool with a callback: dropping the handle withdraws nothing.
    handed_over: bool,
}

impl<T: Task, V: 'static> Source<V> for PoolSource<T, V> {
    fn on_complete(mut self: Box<Self>, f: Box<dyn FnOnce(Result<V, Error>) + Send>) {
        self.handed_over = true;
        let finish = self.finish;
        let callback: Callback<T::Output> = Box::new(move |items| f(finish(items)));
        let mut g = self.shared.lock();
        g.callbacks.push((self.req, callback));
        drop(g);
        self.shared.cond.notify_all();
    }

    fn ready(&self) -> bool {
        self.shared.lock().sup.is_complete(self.req)
    }

    fn wait(&self, deadline: Option<Instant>) -> bool {
        let g = self.shared.lock();
        match deadline {
            None => {
                let _g = self.shared.drive(g, |s| s.sup.is_complete(self.req));
                true
            }
            Some(d) => {
                self.shared
                    .drive_until(g, Some(d), |s| s.sup.is_complete(self.req))
                    .1
            }
        }
    }

    fn take(&self) -> Result<V, Error> {
        let items = self
            .shared
            .lock()
            .sup
            .take_collected(self.req)
            .ok_or(Error::Closed)?;
        (self.finish)(items)
    }
}

impl<T: Task, V> Drop for PoolSource<T, V> {
    fn drop(&mut self) {
        if self.handed_over {
            return;
        }
        let mut g = self.shared.lock();
        g.sup.cancel(self.req);
        g.sup.finish(self.req);
    }
}

/// The pending result of [`Pool::apply_async`] or [`Pool::map_async`] (Python's
/// `AsyncResult`). Dropping it withdraws the jobs not yet started; [`AsyncResult::detach`]
/// lets them run with nobody waiting, and [`AsyncResult::then`] hands the result to a
/// function instead (Python's `callback` and `error_callback`).
#[must_use = "dropping an AsyncResult withdraws its jobs (detach() lets them run)"]
pub struct AsyncResult<V> {
    source: Option<Box<dyn Source<V>>>,
    early: Option<Result<V, Error>>,
}

impl<V> AsyncResult<V> {
    /// Whether the result is here (never blocks).
    pub fn ready(&self) -> bool {
        self.source.as_ref().is_none_or(|s| s.ready())
    }

    /// Waits until the result is here.
    pub fn wait(&self) {
        if let Some(s) = &self.source {
            s.wait(None);
        }
    }

    /// Waits at most `timeout`; returns whether the result is here.
    pub fn wait_timeout(&self, timeout: Duration) -> bool {
        match &self.source {
            Some(s) => s.wait(Some(Instant::now() + timeout)),
            None => true,
        }
    }

    /// Hands the result, once it is here, to `f` (Python's `callback` and
    /// `error_callback` in one), and returns at once. `f` runs on the pool's driver thread,
    /// outside its lock (it may use the pool, but should be quick: it holds up the next
    /// callback). Dropping the pool waits for the jobs, and so for the callbacks.
    pub fn then(mut self, f: impl FnOnce(Result<V, Error>) + Send + 'static)
    where
        V: 'static,
    {
        if let Some(early) = self.early.take() {
            f(early);
            return;
        }
        match self.source.take() {
            Some(source) => source.on_complete(Box::new(f)),
            None => f(Err(Error::Closed)),
        }
    }

    /// Lets the jobs run with nobody waiting for their result (fire and forget, like an
    /// unused Python `AsyncResult`); failures are only counted in the pool's stats.
    pub fn detach(self)
    where
        V: 'static,
    {
        self.then(|_| {});
    }

    /// Waits for the result and returns it.
    pub fn get(mut self) -> Result<V, Error> {
        if let Some(early) = self.early.take() {
            return early;
        }
        match &self.source {
            Some(s) => {
                s.wait(None);
                s.take()
            }
            None => Err(Error::Closed),
        }
    }

    /// Waits at most `timeout` for the result; [`Error::Timeout`] if it is not here by then
    /// (the handle is consumed either way, withdrawing unstarted jobs).
    pub fn get_timeout(mut self, timeout: Duration) -> Result<V, Error> {
        if let Some(early) = self.early.take() {
            return early;
        }
        match &self.source {
            Some(s) if s.wait(Some(Instant::now() + timeout)) => s.take(),
            Some(_) => Err(Error::Timeout(timeout)),
            None => Err(Error::Closed),
        }
    }
}

impl<V> std::fmt::Debug for AsyncResult<V> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AsyncResult")
            .field("ready", &self.ready())
            .finish()
    }
}

impl<T: Task, I> std::fmt::Debug for Stream<'_, T, I> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Stream")
            .field("task", &T::NAME)
            .field("submitted", &self.submitted)
            .field("taken", &self.taken)
            .field("input_done", &self.input.is_none())
            .finish()
    }
}

impl<T: Task> std::fmt::Debug for PoolBuilder<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PoolBuilder")
            .field("task", &T::NAME)
            .field("workers", &self.workers)
            .field("backend", &self.backend)
            .field("chunk", &self.chunk)
            .field("retries", &self.retries)
            .field("job_timeout", &self.job_timeout)
            .field("max_tasks_per_child", &self.max_tasks_per_child)
            .field("has_context", &self.context.is_some())
            .finish_non_exhaustive()
    }
}

impl<T: Task, I> std::fmt::Debug for Imap<'_, T, I> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_tuple("Imap").field(&self.inner).finish()
    }
}

impl<T: Task, I> std::fmt::Debug for ImapUnordered<'_, T, I> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_tuple("ImapUnordered").field(&self.inner).finish()
    }
}
