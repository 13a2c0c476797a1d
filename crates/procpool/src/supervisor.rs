//! The policy, with no `cfg` and no I/O: which job goes to which worker, how many are in
//! flight, how big a chunk is, what happens when a worker dies or a job overruns, and
//! where each result goes. Backends report [`Event`]s; this type owns all bookkeeping.
//!
//! Design notes
//! - Every job has an id; every worker keeps the ids it holds in dispatch order. Each
//!   result is delivered exactly once: a job leaves the table when its result is delivered,
//!   and a result for an unknown id is dropped.
//! - Blame is exact. A worker that dies holding one job was running it: that job is charged
//!   with the crash (retried, or failed after `retries`). A worker that dies holding several
//!   may have finished some whose results it had not written yet, so none is charged:
//!   they all become *suspects*, which are re-run one at a time on an otherwise idle worker,
//!   where a crash does identify its job. This costs nothing while nothing crashes (no
//!   per-job acknowledgement), and a job that kills its worker cannot take innocent
//!   neighbours down with it.
//! - In flight per worker: two chunks, or about [`QUEUE_TARGET`] of measured work, whichever
//!   is more (capped): enough that a worker never waits for the coordinator, few enough that
//!   the last jobs spread over all workers. Ordered requests also keep at most a window of
//!   positions in flight or buffered, which bounds the reorder buffer whatever the stragglers.
//! - Auto chunksize: the first jobs go out one at a time to idle workers, so each round trip
//!   is measured alone, which gives the per-frame overhead. From then on the chunk is sized
//!   so that overhead is at most 5% of a chunk's compute at the *running average* job cost
//!   (so a pool that moves from 1 µs jobs to 10 ms jobs re-sizes its chunks), and at most a
//!   quarter of each worker's share of the current input when its length is known.

use crate::backend::{Backend, Engine, Event, PHASE_TARGET, Payload, WorkerKey};
use crate::error::{Error, JobError};
use crate::reorder::Reorder;
use crate::table::IdTable;
use crate::task::Task;
use std::collections::VecDeque;
use std::time::{Duration, Instant};
use tracing::{debug, info, warn};

/// Ordered requests never keep fewer positions in flight than this (unless configured).
pub(crate) const MIN_WINDOW: usize = 64;
/// Most jobs one worker holds at once.
pub(crate) const MAX_IN_FLIGHT: usize = 1024;
/// Largest automatic chunk.
pub(crate) const MAX_CHUNK: usize = 4096;
/// Work to keep queued at each worker.
const QUEUE_TARGET: Duration = Duration::from_micros(500);
/// Coordinator-side cost assumed per job on top of its compute, for the queue target.
const PER_JOB_OVERHEAD_NS: u64 = 1_000;
/// The leader wakes at least this often to check on workers.
const HOUSEKEEPING: Duration = Duration::from_millis(250);
/// Replacement workers that may die before becoming ready, in a row, before we stop trying.
const MAX_STARTUP_FAILURES: u32 = 3;
/// Round trips measured before an automatic chunksize is chosen.
const PROBE_JOBS: usize = 8;

/// How many jobs travel in one frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Chunk {
    /// Measure the first jobs and pick a size that amortizes the IPC cost.
    #[default]
    Auto,
    /// Exactly this many (>= 1).
    Fixed(usize),
}

impl std::str::FromStr for Chunk {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self, Error> {
        if s == "auto" {
            return Ok(Chunk::Auto);
        }
        match s.parse::<usize>() {
            Ok(n) if n >= 1 => Ok(Chunk::Fixed(n)),
            _ => Err(Error::Config(format!(
                "chunksize must be a whole number >= 1 or \"auto\", got {s:?}"
            ))),
        }
    }
}

/// What automatic chunking chose, and why.
#[derive(Debug, Clone, PartialEq)]
pub struct ChunkChoice {
    /// Jobs per chunk.
    pub chunksize: usize,
    /// Median compute time of one job, as measured.
    pub job: Duration,
    /// Median round-trip overhead of one frame (round trip minus compute), as measured.
    pub overhead: Duration,
    /// The reasoning, in one line.
    pub reason: String,
}

/// Which worker ran a job.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct WorkerRef {
    /// The worker's slot, 0..workers (a replacement takes its predecessor's slot).
    pub index: usize,
    /// Its process id (the pool's own pid for thread and serial workers).
    pub pid: u32,
}

/// One job's life, for timelines.
#[derive(Debug, Clone, PartialEq)]
pub struct JobSpan {
    /// Worker slot.
    pub worker: usize,
    /// Worker pid.
    pub pid: u32,
    /// Position in its request's input.
    pub pos: u64,
    /// When it was sent, since the pool started.
    pub sent: Duration,
    /// When its result arrived, since the pool started.
    pub done: Duration,
    /// How long the task itself ran.
    pub compute: Duration,
}

/// One worker's life, for timelines.
#[derive(Debug, Clone, PartialEq)]
pub struct WorkerSpan {
    /// Worker slot.
    pub worker: usize,
    /// Its pid.
    pub pid: u32,
    /// When it was started, since the pool started.
    pub spawned: Duration,
    /// When it was ready for jobs (handshake and context done).
    pub ready: Option<Duration>,
    /// When it was reaped.
    pub exited: Option<Duration>,
    /// How it ended, once it has.
    pub status: Option<String>,
}

/// Everything a pool recorded about its jobs and workers.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Timeline {
    /// Per job (only when recording was switched on).
    pub jobs: Vec<JobSpan>,
    /// Per worker, always.
    pub workers: Vec<WorkerSpan>,
}

/// Counters a pool keeps as it runs.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct PoolStats {
    /// Jobs with a result (success or failure).
    pub jobs_done: u64,
    /// Of those, failures.
    pub jobs_failed: u64,
    /// Jobs sent again after their worker died.
    pub jobs_redispatched: u64,
    /// Workers started, replacements included.
    pub workers_started: u64,
    /// Workers that died or were killed while the pool ran.
    pub workers_lost: u64,
    /// Bytes written to worker pipes (process backend).
    pub bytes_sent: u64,
    /// Bytes read from worker pipes (process backend).
    pub bytes_received: u64,
    /// Bytes of the context held in shared memory that every worker maps (process
    /// backend; 0 when the context travels inline on each worker's socket).
    pub context_shared_bytes: u64,
    /// From building the pool to every worker being ready.
    pub ready_after: Option<Duration>,
    /// Total task compute time reported by workers.
    pub compute: Duration,
    /// The automatic chunk choice, once made.
    pub chunk: Option<ChunkChoice>,
}

/// One result as a request holds it.
pub(crate) struct Item<O> {
    pub worker: Option<WorkerRef>,
    pub result: Result<O, JobError>,
}

/// Where a request's results collect.
pub(crate) enum Sink<O> {
    Ordered(Reorder<Item<O>>),
    Unordered(VecDeque<(u64, Item<O>)>),
    Collect {
        slots: Vec<Option<Item<O>>>,
        filled: usize,
    },
}

struct Request<O> {
    sink: Sink<O>,
    outstanding: usize,
    is_async: bool,
    cancelled: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum JobState {
    Pending,
    Running,
    /// Its worker was abandoned with the job's value (threads); only a late result can finish it.
    Orphaned,
}

struct Job<T> {
    req: u64,
    pos: u64,
    payload: Payload<T>,
    crashes: u32,
    sent: Option<Instant>,
    alone: bool,
    state: JobState,
}

struct Slot {
    key: WorkerKey,
    index: usize,
    pid: u32,
    ready: bool,
    closing: bool,
    in_flight: VecDeque<u64>,
    head_since: Instant,
    timed_out: Option<u64>,
    failure: Option<String>,
    span: usize,
    /// Running a suspect alone: takes no other job until it answers.
    isolating: bool,
}

enum Chunker {
    Fixed(usize),
    Auto {
        /// (compute, round trip minus compute) of probe jobs, in ns.
        samples: Vec<(u64, u64)>,
        /// Median per-frame overhead, once measured.
        overhead: Option<u64>,
    },
}

/// What `send_to` sends.
#[derive(Clone, Copy)]
enum Take {
    /// The next n pending jobs.
    Pending(usize),
    /// This one job (a suspect).
    One(u64),
}

/// An automatic chunk size and what it came from.
struct AutoChunk {
    size: usize,
    job_ns: u64,
    overhead_ns: u64,
    by_cost: usize,
    share: Option<(usize, usize)>,
}

/// Pool settings the policy needs.
#[derive(Debug, Clone)]
pub(crate) struct Settings {
    pub backend: Backend,
    pub workers: usize,
    pub chunk: Chunk,
    pub window: Option<usize>,
    pub retries: u32,
    pub job_timeout: Option<Duration>,
    pub record_jobs: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    Starting,
    Running,
    Closed,
    ShuttingDown,
    Terminated,
}

/// All of a pool's bookkeeping.
pub(crate) struct Supervisor<T: Task> {
    settings: Settings,
    phase: Phase,
    slots: Vec<Slot>,
    jobs: IdTable<Job<T>>,
    pending: VecDeque<u64>,
    /// Jobs to run alone (see the module notes); they go before `pending`.
    suspects: VecDeque<u64>,
    /// Reused for each chunk sent.
    scratch: Vec<(u64, Payload<T>)>,
    requests: IdTable<Request<T::Output>>,
    next_job: u64,
    next_req: u64,
    next_key: WorkerKey,
    chunker: Chunker,
    ewma_ns: Option<u64>,
    size_hint: Option<usize>,
    startup_failures: u32,
    startup_errors: Vec<String>,
    respawn: bool,
    fatal: Option<String>,
    started: Instant,
    stats: PoolStats,
    timeline: Timeline,
}

impl<T: Task> Supervisor<T> {
    pub(crate) fn new(settings: Settings) -> Self {
        let chunker = match settings.chunk {
            Chunk::Fixed(n) => Chunker::Fixed(n.max(1)),
            Chunk::Auto if settings.backend == Backend::Serial => Chunker::Fixed(1),
            Chunk::Auto => Chunker::Auto {
                samples: Vec::new(),
                overhead: None,
            },
        };
        Supervisor {
            settings,
            phase: Phase::Starting,
            slots: Vec::new(),
            jobs: IdTable::default(),
            pending: VecDeque::new(),
            suspects: VecDeque::new(),
            scratch: Vec::new(),
            requests: IdTable::default(),
            next_job: 0,
            next_req: 0,
            next_key: 0,
            chunker,
            ewma_ns: None,
            size_hint: None,
            startup_failures: 0,
            startup_errors: Vec::new(),
            respawn: true,
            fatal: None,
            started: Instant::now(),
            stats: PoolStats::default(),
            timeline: Timeline::default(),
        }
    }

    // ----- lifecycle -------------------------------------------------------------------

    /// Starts the configured number of workers.
    pub(crate) fn start(&mut self, engine: &mut Engine<T>) -> Result<(), Error> {
        for index in 0..self.settings.workers {
            self.spawn_one(engine, index)?;
        }
        Ok(())
    }

    fn spawn_one(&mut self, engine: &mut Engine<T>, index: usize) -> Result<(), Error> {
        let key = self.next_key;
        self.next_key += 1;
        let pid = engine.spawn(key)?;
        self.stats.workers_started += 1;
        let now = Instant::now();
        self.timeline.workers.push(WorkerSpan {
            worker: index,
            pid,
            spawned: now - self.started,
            ready: None,
            exited: None,
            status: None,
        });
        debug!(worker = index, pid, backend = %self.settings.backend, "worker spawned");
        self.slots.push(Slot {
            key,
            index,
            pid,
            ready: false,
            closing: false,
            in_flight: VecDeque::new(),
            head_since: now,
            timed_out: None,
            failure: None,
            span: self.timeline.workers.len() - 1,
            isolating: false,
        });
        Ok(())
    }

    /// Whether every worker started by `start` is ready.
    pub(crate) fn all_ready(&self) -> bool {
        self.slots.len() == self.settings.workers && self.slots.iter().all(|s| s.ready)
    }

    /// Why start-up failed, once it has given up (a worker dying before it is ready is
    /// replaced a few times first: it may have been killed from outside).
    pub(crate) fn startup_error(&self) -> Option<String> {
        (!self.respawn && !self.startup_errors.is_empty()).then(|| self.startup_errors.join("; "))
    }

    /// Start-up is over: from now on dead workers are replaced.
    pub(crate) fn mark_running(&mut self) {
        self.phase = Phase::Running;
        self.stats.ready_after = Some(self.started.elapsed());
    }

    /// No new requests from now on.
    pub(crate) fn close(&mut self) {
        if self.phase == Phase::Running || self.phase == Phase::Starting {
            self.phase = Phase::Closed;
        }
    }

    /// Whether the pool has stopped for good (terminated, or no worker can be started).
    pub(crate) fn stopped(&self) -> bool {
        self.phase == Phase::Terminated || self.fatal.is_some()
    }

    /// Whether new requests are refused.
    pub(crate) fn refusal(&self) -> Option<Error> {
        if let Some(reason) = &self.fatal {
            return Some(Error::Spawn(reason.clone()));
        }
        match self.phase {
            Phase::Starting | Phase::Running => None,
            _ => Some(Error::Closed),
        }
    }

    /// Asks every worker to exit once its queue is empty.
    pub(crate) fn begin_shutdown(&mut self, engine: &mut Engine<T>) {
        if self.phase != Phase::Terminated {
            self.phase = Phase::ShuttingDown;
        }
        for s in &mut self.slots {
            if !s.closing {
                s.closing = true;
                engine.close(s.key);
            }
        }
    }

    /// Kills every worker now; every unfinished job fails with `Terminated`.
    pub(crate) fn terminate(&mut self, engine: &mut Engine<T>) {
        self.phase = Phase::Terminated;
        let mut ids: Vec<u64> = self.suspects.drain(..).collect();
        ids.extend(self.pending.drain(..));
        for s in &mut self.slots {
            ids.extend(s.in_flight.drain(..));
            s.closing = true;
            engine.kill(s.key);
        }
        ids.extend(
            self.jobs
                .iter()
                .filter(|(_, j)| j.state == JobState::Orphaned)
                .map(|(id, _)| id),
        );
        for id in ids {
            self.fail_job(id, None, JobError::Terminated);
        }
    }

    /// Kills what is left (after a shutdown grace period ran out).
    pub(crate) fn kill_all(&mut self, engine: &mut Engine<T>) {
        for s in &self.slots {
            engine.kill(s.key);
        }
    }

    /// Workers not yet reaped.
    pub(crate) fn live_workers(&self) -> usize {
        self.slots.len()
    }

    /// Pids of the live workers, by slot.
    pub(crate) fn pids(&self) -> Vec<u32> {
        let mut v: Vec<(usize, u32)> = self.slots.iter().map(|s| (s.index, s.pid)).collect();
        v.sort_unstable();
        v.into_iter().map(|(_, pid)| pid).collect()
    }

    /// Jobs without a result yet.
    pub(crate) fn outstanding(&self) -> usize {
        self.jobs.len()
    }

    // ----- requests --------------------------------------------------------------------

    /// Opens a request whose results collect in `sink`.
    pub(crate) fn open(&mut self, sink: Sink<T::Output>, is_async: bool) -> Result<u64, Error> {
        if let Some(e) = self.refusal() {
            return Err(e);
        }
        let id = self.next_req;
        self.next_req += 1;
        self.requests.insert(
            id,
            Request {
                sink,
                outstanding: 0,
                is_async,
                cancelled: false,
            },
        );
        Ok(id)
    }

    /// Tells auto-chunking how long the input is, when known.
    pub(crate) fn hint_len(&mut self, len: usize) {
        self.size_hint = Some(len);
    }

    /// Adds one job to request `req` at position `pos` (or its immediate failure).
    pub(crate) fn submit(&mut self, req: u64, pos: u64, payload: Result<Payload<T>, JobError>) {
        let Some(r) = self.requests.get_mut(&req) else {
            return;
        };
        r.outstanding += 1;
        // A request opened before the pool stopped may still feed it: fail those jobs now.
        let payload = match (&self.fatal, self.phase) {
            (_, Phase::Terminated) => Err(JobError::Terminated),
            (Some(reason), _) => Err(JobError::WorkerDied {
                pid: 0,
                status: reason.clone(),
                attempts: 0,
                stderr_tail: String::new(),
            }),
            _ => payload,
        };
        match payload {
            Ok(payload) => {
                let id = self.next_job;
                self.next_job += 1;
                self.jobs.insert(
                    id,
                    Job {
                        req,
                        pos,
                        payload,
                        crashes: 0,
                        sent: None,
                        alone: false,
                        state: JobState::Pending,
                    },
                );
                self.pending.push_back(id);
            }
            Err(e) => self.deliver(req, pos, None, Err(e)),
        }
    }

    /// Drops a request: its queued jobs are withdrawn, results still in flight discarded.
    pub(crate) fn cancel(&mut self, req: u64) {
        let Some(r) = self.requests.get_mut(&req) else {
            return;
        };
        r.cancelled = true;
        let jobs = &mut self.jobs;
        let mut withdrawn = 0;
        let mut keep = |id: &u64| {
            if jobs.get(id).is_some_and(|j| j.req == req) {
                jobs.remove(id);
                withdrawn += 1;
                false
            } else {
                true
            }
        };
        self.pending.retain(&mut keep);
        self.suspects.retain(keep);
        r.outstanding -= withdrawn;
        if r.outstanding == 0 {
            self.requests.remove(&req);
        }
    }

    /// Results of `req` that have not been handed out yet, and jobs still running.
    pub(crate) fn request_outstanding(&self, req: u64) -> usize {
        self.requests.get(&req).map_or(0, |r| r.outstanding)
    }

    /// Whether the next result of an ordered or unordered request is here.
    pub(crate) fn has_next(&self, req: u64) -> bool {
        match self.requests.get(&req).map(|r| &r.sink) {
            Some(Sink::Ordered(ro)) => ro.ready(),
            Some(Sink::Unordered(q)) => !q.is_empty(),
            Some(Sink::Collect { .. }) | None => false,
        }
    }

    /// Takes the next result of an ordered or unordered request, with its position.
    pub(crate) fn take_next(&mut self, req: u64) -> Option<(u64, Item<T::Output>)> {
        match &mut self.requests.get_mut(&req)?.sink {
            Sink::Ordered(ro) => {
                let pos = ro.next_pos();
                ro.pop().map(|item| (pos, item))
            }
            Sink::Unordered(q) => q.pop_front(),
            Sink::Collect { .. } => None,
        }
    }

    /// Widens an ordered request's reorder window.
    pub(crate) fn grow_window(&mut self, req: u64, window: usize) {
        if let Some(Request {
            sink: Sink::Ordered(ro),
            ..
        }) = self.requests.get_mut(&req)
        {
            ro.grow_capacity(window);
        }
    }

    /// Whether a collect request has all its results.
    pub(crate) fn is_complete(&self, req: u64) -> bool {
        match self.requests.get(&req) {
            Some(Request {
                sink: Sink::Collect { slots, filled },
                ..
            }) => *filled == slots.len(),
            Some(_) => false,
            None => true,
        }
    }

    /// Takes a complete collect request's results, in position order, and closes it.
    pub(crate) fn take_collected(&mut self, req: u64) -> Option<Vec<Item<T::Output>>> {
        if !self.is_complete(req) {
            return None;
        }
        match self.requests.remove(&req)?.sink {
            Sink::Collect { slots, .. } => Some(slots.into_iter().flatten().collect()),
            _ => None,
        }
    }

    /// Closes a request whose results were all taken.
    pub(crate) fn finish(&mut self, req: u64) {
        if self.requests.get(&req).is_some_and(|r| r.outstanding == 0) {
            self.requests.remove(&req);
        }
    }

    /// Whether asynchronous requests still wait for results (someone must drive).
    pub(crate) fn async_busy(&self) -> bool {
        self.requests
            .values()
            .any(|r| r.is_async && r.outstanding > 0)
    }

    /// Positions in flight per ordered request, and per worker: see the module notes.
    pub(crate) fn window(&self) -> usize {
        if let Some(w) = self.settings.window {
            return w;
        }
        match self.settings.backend {
            Backend::Serial => 1,
            _ => MIN_WINDOW.max(2 * self.settings.workers * self.cap()),
        }
    }

    fn cap(&self) -> usize {
        let chunk = self.chunk_size();
        match (&self.settings.backend, &self.chunker) {
            (Backend::Serial, _) => 1,
            (_, Chunker::Auto { overhead: None, .. }) => 1,
            _ => {
                let by_time = self.ewma_ns.map_or(0, |ns| {
                    (QUEUE_TARGET.as_nanos() as u64 / (ns + PER_JOB_OVERHEAD_NS)) as usize
                });
                (2 * chunk).max(by_time).min(MAX_IN_FLIGHT.max(2 * chunk))
            }
        }
    }

    fn chunk_size(&self) -> usize {
        match &self.chunker {
            Chunker::Fixed(n) => *n,
            Chunker::Auto { .. } => self.auto_chunk().map_or(1, |a| a.size),
        }
    }

    // ----- events ----------------------------------------------------------------------

    /// Applies one backend event.
    pub(crate) fn handle(&mut self, event: Event<T::Output>, engine: &mut Engine<T>) {
        match event {
            Event::Hello { worker, pid } => {
                if let Some(s) = self.slot_mut(worker) {
                    s.pid = pid;
                }
            }
            Event::Ready { worker } => {
                let since = self.started.elapsed();
                if let Some(s) = self.slot_mut(worker) {
                    s.ready = true;
                    s.head_since = Instant::now();
                    let (index, pid, span) = (s.index, s.pid, s.span);
                    self.timeline.workers[span].ready = Some(since);
                    self.startup_failures = 0;
                    debug!(
                        worker = index,
                        pid, "worker ready (handshake done, context installed)"
                    );
                }
            }
            Event::Done {
                worker,
                id,
                compute_ns,
                outcome,
            } => self.on_done(worker, id, compute_ns, outcome, engine),
            Event::Failed { worker, reason } => {
                if let Some(s) = self.slot_mut(worker) {
                    warn!(worker = s.index, pid = s.pid, "{reason}");
                    s.failure = Some(reason);
                }
                engine.kill(worker);
            }
            Event::Exited {
                worker,
                status,
                stderr_tail,
            } => self.on_exit(worker, status, stderr_tail),
        }
    }

    fn slot_mut(&mut self, key: WorkerKey) -> Option<&mut Slot> {
        self.slots.iter_mut().find(|s| s.key == key)
    }

    fn on_done(
        &mut self,
        key: WorkerKey,
        id: u64,
        compute_ns: u64,
        mut outcome: Result<T::Output, JobError>,
        engine: &mut Engine<T>,
    ) {
        let now = Instant::now();
        let worker = match self.slots.iter_mut().find(|s| s.key == key) {
            Some(s) => {
                if s.in_flight.front() != Some(&id) {
                    let reason = format!(
                        "worker pid {} answered job {id}, which it was not running",
                        s.pid
                    );
                    warn!(worker = s.index, pid = s.pid, "{reason}");
                    s.failure = Some(reason);
                    engine.kill(key);
                    return;
                }
                s.in_flight.pop_front();
                s.head_since = now;
                if s.in_flight.is_empty() {
                    s.isolating = false;
                }
                Some(WorkerRef {
                    index: s.index,
                    pid: s.pid,
                })
            }
            // A late answer from an abandoned thread: only an orphaned job takes it.
            None if self
                .jobs
                .get(&id)
                .is_some_and(|j| j.state == JobState::Orphaned) =>
            {
                None
            }
            None => return,
        };
        let Some(job) = self.jobs.remove(&id) else {
            return;
        };
        let compute = Duration::from_nanos(compute_ns);
        debug!(
            pos = job.pos,
            worker = worker.map(|w| w.index),
            pid = worker.map(|w| w.pid),
            ok = outcome.is_ok(),
            "result received after {compute:?} of compute"
        );
        self.stats.compute += compute;
        if let (Some(limit), Backend::Serial) = (self.settings.job_timeout, self.settings.backend) {
            if compute > limit {
                outcome = Err(JobError::TimedOut {
                    pid: 0,
                    after: limit,
                });
            }
        }
        self.ewma_ns = Some(match self.ewma_ns {
            None => compute_ns,
            Some(old) => old - old / 8 + compute_ns / 8,
        });
        if let Some(sent) = job.sent {
            self.observe_round_trip(job.alone, now - sent, compute);
            if self.settings.record_jobs {
                if let Some(w) = worker {
                    self.timeline.jobs.push(JobSpan {
                        worker: w.index,
                        pid: w.pid,
                        pos: job.pos,
                        sent: sent - self.started,
                        done: now - self.started,
                        compute,
                    });
                }
            }
        }
        self.deliver(job.req, job.pos, worker, outcome);
    }

    fn observe_round_trip(&mut self, alone: bool, rtt: Duration, compute: Duration) {
        let Chunker::Auto { samples, overhead } = &mut self.chunker else {
            return;
        };
        if overhead.is_some() || !alone {
            return;
        }
        let compute_ns = compute.as_nanos() as u64;
        samples.push((
            compute_ns,
            (rtt.as_nanos() as u64).saturating_sub(compute_ns),
        ));
        if samples.len() < PROBE_JOBS {
            return;
        }
        *overhead = Some(median(samples.iter().map(|s| s.1)).max(2_000));
        if let Some(c) = self.chunk_choice() {
            info!(chunksize = c.chunksize, "auto chunksize: {}", c.reason);
        }
    }

    /// The automatic chunk size now: from the measured overhead, the running average job
    /// cost, and the current input's length.
    fn auto_chunk(&self) -> Option<AutoChunk> {
        let Chunker::Auto {
            overhead: Some(overhead_ns),
            ..
        } = &self.chunker
        else {
            return None;
        };
        let job_ns = self.ewma_ns.unwrap_or(0).max(100);
        let by_cost = (20 * overhead_ns).div_ceil(job_ns) as usize;
        let mut size = by_cost.clamp(1, MAX_CHUNK);
        let mut share = None;
        if let Some(len) = self.size_hint {
            let s = len.div_ceil(4 * self.settings.workers).max(1);
            if s < size {
                size = s;
                share = Some((s, len));
            }
        }
        Some(AutoChunk {
            size,
            job_ns,
            overhead_ns: *overhead_ns,
            by_cost,
            share,
        })
    }

    /// The automatic chunk size now, with its reasoning (None before it is measured).
    pub(crate) fn chunk_choice(&self) -> Option<ChunkChoice> {
        let a = self.auto_chunk()?;
        let workers = self.settings.workers;
        let mut reason = format!(
            "round-trip overhead {:?} (median of {PROBE_JOBS} probe jobs), average job {:?}: \
             {} jobs per chunk keep overhead under 5% of compute",
            Duration::from_nanos(a.overhead_ns),
            Duration::from_nanos(a.job_ns),
            a.by_cost
        );
        if a.by_cost > MAX_CHUNK {
            reason.push_str(&format!(", capped at {MAX_CHUNK}"));
        }
        if let Some((s, len)) = a.share {
            reason.push_str(&format!(
                ", limited to {s} so {len} jobs still spread over {workers} workers"
            ));
        }
        Some(ChunkChoice {
            chunksize: a.size,
            job: Duration::from_nanos(a.job_ns),
            overhead: Duration::from_nanos(a.overhead_ns),
            reason,
        })
    }

    fn on_exit(&mut self, key: WorkerKey, status: String, stderr_tail: String) {
        let Some(i) = self.slots.iter().position(|s| s.key == key) else {
            return;
        };
        let slot = self.slots.remove(i);
        let span = &mut self.timeline.workers[slot.span];
        span.exited = Some(self.started.elapsed());
        span.status = Some(status.clone());
        let held: Vec<u64> = slot.in_flight.iter().copied().collect();
        if slot.closing && held.is_empty() {
            debug!(worker = slot.index, pid = slot.pid, "worker {status}");
            return;
        }
        if !slot.ready {
            let mut reason = slot
                .failure
                .clone()
                .unwrap_or_else(|| format!("worker pid {} {status} before it was ready", slot.pid));
            let tail = stderr_tail.trim_end();
            if !tail.is_empty() {
                reason.push_str(&format!("; its stderr ended with:\n{tail}"));
            }
            warn!(worker = slot.index, pid = slot.pid, "{reason}");
            self.startup_errors.push(reason);
            self.startup_failures += 1;
            // A refusal (unknown task, another protocol) will happen again: no retry.
            if slot.failure.is_some() || self.startup_failures >= MAX_STARTUP_FAILURES {
                if self.respawn {
                    warn!("workers die before they are ready; not starting more");
                }
                self.respawn = false;
            }
            return;
        }
        self.stats.workers_lost += 1;
        let positions: Vec<u64> = held
            .iter()
            .filter_map(|id| self.jobs.get(id).map(|j| j.pos))
            .collect();
        let why = slot.failure.as_deref().unwrap_or("");
        warn!(
            worker = slot.index,
            pid = slot.pid,
            jobs = ?positions,
            "worker {status}{}{why}",
            if why.is_empty() { "" } else { ": " }
        );
        let Some((&head, rest)) = held.split_first() else {
            return;
        };
        let timed_out = slot.timed_out == Some(head);
        if !rest.is_empty() && !timed_out {
            // Several held: which one was running is unknowable (see the module notes).
            for &id in held.iter().rev() {
                self.requeue_suspect(id);
            }
            return;
        }
        for &id in rest.iter().rev() {
            self.requeue(id);
        }
        let Some(job) = self.jobs.get_mut(&head) else {
            return;
        };
        if timed_out {
            let after = self.settings.job_timeout.unwrap_or_default();
            let pid = if self.settings.backend == Backend::Process {
                slot.pid
            } else {
                0
            };
            self.fail_job(head, None, JobError::TimedOut { pid, after });
            return;
        }
        job.crashes += 1;
        if job.crashes > self.settings.retries {
            let status = match &slot.failure {
                Some(reason) => format!("{status} after a protocol error ({reason})"),
                None => status,
            };
            let error = JobError::WorkerDied {
                pid: slot.pid,
                status,
                attempts: job.crashes,
                stderr_tail: stderr_tail.trim_end().to_owned(),
            };
            self.fail_job(head, None, error);
        } else {
            debug!(
                pos = job.pos,
                attempt = job.crashes + 1,
                "re-dispatching a job whose worker died"
            );
            self.requeue_suspect(head);
        }
    }

    /// Puts a job back in the queue.
    fn requeue(&mut self, id: u64) {
        self.put_back(id, false);
    }

    /// Puts a job back to run alone on an idle worker (see the module notes).
    fn requeue_suspect(&mut self, id: u64) {
        self.put_back(id, true);
    }

    fn put_back(&mut self, id: u64, suspect: bool) {
        let Some(job) = self.jobs.get_mut(&id) else {
            return;
        };
        if matches!(job.payload, Payload::Value(None)) {
            job.state = JobState::Orphaned;
            return;
        }
        job.state = JobState::Pending;
        job.sent = None;
        self.stats.jobs_redispatched += 1;
        if suspect {
            self.suspects.push_front(id);
        } else {
            self.pending.push_front(id);
        }
    }

    fn fail_job(&mut self, id: u64, worker: Option<WorkerRef>, error: JobError) {
        if let Some(job) = self.jobs.remove(&id) {
            self.deliver(job.req, job.pos, worker, Err(error));
        }
    }

    fn deliver(
        &mut self,
        req: u64,
        pos: u64,
        worker: Option<WorkerRef>,
        result: Result<T::Output, JobError>,
    ) {
        let _phase = tracing::trace_span!(target: PHASE_TARGET, "deliver", pos).entered();
        self.stats.jobs_done += 1;
        if result.is_err() {
            self.stats.jobs_failed += 1;
        }
        let Some(r) = self.requests.get_mut(&req) else {
            return;
        };
        r.outstanding = r.outstanding.saturating_sub(1);
        if r.cancelled {
            if r.outstanding == 0 {
                self.requests.remove(&req);
            }
            return;
        }
        let item = Item { worker, result };
        match &mut r.sink {
            Sink::Ordered(ro) => {
                if let Err(e) = ro.push(pos, item) {
                    warn!("dropping a result: {e}");
                }
            }
            Sink::Unordered(q) => q.push_back((pos, item)),
            Sink::Collect { slots, filled } => {
                if let Some(slot @ None) = slots.get_mut(pos as usize) {
                    *slot = Some(item);
                    *filled += 1;
                }
            }
        }
    }

    // ----- the periodic part -----------------------------------------------------------

    /// Kills workers whose running job is over the timeout.
    pub(crate) fn check_timeouts(&mut self, engine: &mut Engine<T>) {
        let Some(limit) = self.settings.job_timeout else {
            return;
        };
        if self.settings.backend == Backend::Serial {
            return;
        }
        let now = Instant::now();
        for s in &mut self.slots {
            if s.timed_out.is_some() || !s.ready {
                continue;
            }
            let Some(&head) = s.in_flight.front() else {
                continue;
            };
            if now.duration_since(s.head_since) < limit {
                continue;
            }
            let pos = self.jobs.get(&head).map(|j| j.pos);
            warn!(
                worker = s.index,
                pid = s.pid,
                ?pos,
                "job exceeded its timeout of {limit:?}; stopping its worker"
            );
            s.timed_out = Some(head);
            for (id, value) in engine.kill(s.key) {
                if let Some(job) = self.jobs.get_mut(&id) {
                    job.payload = Payload::Value(Some(value));
                }
            }
        }
    }

    /// How long the leader may block before something needs checking.
    pub(crate) fn next_wakeup(&self) -> Duration {
        let mut wait = HOUSEKEEPING;
        if let Some(limit) = self.settings.job_timeout {
            let now = Instant::now();
            for s in &self.slots {
                if !s.in_flight.is_empty() && s.timed_out.is_none() {
                    wait = wait.min((s.head_since + limit).saturating_duration_since(now));
                }
            }
        }
        wait.max(Duration::from_millis(1))
    }

    /// Starts replacements for dead workers; fails everything when none can run.
    pub(crate) fn replenish(&mut self, engine: &mut Engine<T>) {
        let wanted = match self.phase {
            Phase::Starting | Phase::Running => true,
            Phase::Closed => !self.jobs.is_empty(),
            _ => false,
        };
        while wanted
            && self.respawn
            && self.fatal.is_none()
            && self.slots.len() < self.settings.workers
        {
            let index = (0..self.settings.workers)
                .find(|i| !self.slots.iter().any(|s| s.index == *i))
                .unwrap_or(0);
            if let Err(e) = self.spawn_one(engine, index) {
                warn!("could not start a replacement worker: {e}");
                self.respawn = false;
            }
        }
        if self.slots.is_empty() && self.phase != Phase::Starting && self.phase != Phase::Terminated
        {
            let stuck: Vec<u64> = self.jobs.keys().collect();
            if !stuck.is_empty() || !self.respawn {
                let reason = self
                    .startup_errors
                    .last()
                    .cloned()
                    .unwrap_or_else(|| "no worker is left to run the jobs".to_owned());
                if self.fatal.is_none() && !self.respawn {
                    self.fatal = Some(format!("no worker could be started: {reason}"));
                }
                for id in stuck {
                    self.fail_job(
                        id,
                        None,
                        JobError::WorkerDied {
                            pid: 0,
                            status: format!("could not be replaced ({reason})"),
                            attempts: 0,
                            stderr_tail: String::new(),
                        },
                    );
                }
                self.pending.clear();
                self.suspects.clear();
            }
        }
    }

    /// Sends queued jobs to workers with room, a chunk at a time, round-robin.
    pub(crate) fn dispatch(&mut self, engine: &mut Engine<T>) {
        self.dispatch_suspects(engine);
        if self.pending.is_empty() {
            return;
        }
        let chunk = self.chunk_size();
        let cap = self.cap();
        let mut progress = true;
        let mut order: Vec<usize> = (0..self.slots.len()).collect();
        while progress && !self.pending.is_empty() {
            progress = false;
            // Least loaded first, so a trickle of jobs spreads over idle workers.
            order.sort_by_key(|&si| self.slots[si].in_flight.len());
            for &si in &order {
                let slot = &self.slots[si];
                if self.pending.is_empty() {
                    break;
                }
                if !slot.ready || slot.closing || slot.timed_out.is_some() || slot.isolating {
                    continue;
                }
                let room = cap.saturating_sub(slot.in_flight.len());
                if room == 0 {
                    continue;
                }
                let n = chunk.min(room).min(self.pending.len());
                self.send_to(si, Take::Pending(n), engine);
                progress = true;
            }
        }
    }

    /// Sends each suspect alone to an idle worker, which then takes nothing else until
    /// it answers.
    fn dispatch_suspects(&mut self, engine: &mut Engine<T>) {
        for si in 0..self.slots.len() {
            if self.suspects.is_empty() {
                return;
            }
            let slot = &self.slots[si];
            if !slot.ready || slot.closing || slot.timed_out.is_some() || !slot.in_flight.is_empty()
            {
                continue;
            }
            let Some(id) = self.suspects.pop_front() else {
                return;
            };
            self.slots[si].isolating = true;
            self.send_to(si, Take::One(id), engine);
        }
    }

    /// Sends a chunk to the worker in slot `si`: the next `n` pending jobs, or one suspect.
    fn send_to(&mut self, si: usize, take: Take, engine: &mut Engine<T>) {
        let now = Instant::now();
        let mut batch = std::mem::take(&mut self.scratch);
        batch.clear();
        let count = match take {
            Take::Pending(n) => n,
            Take::One(_) => 1,
        };
        for _ in 0..count {
            let id = match take {
                Take::One(id) => id,
                Take::Pending(_) => match self.pending.pop_front() {
                    Some(id) => id,
                    None => break,
                },
            };
            if let Some(job) = self.jobs.get_mut(&id) {
                job.sent = Some(now);
                job.state = JobState::Running;
                batch.push((
                    id,
                    std::mem::replace(&mut job.payload, Payload::Value(None)),
                ));
            }
        }
        let slot = &self.slots[si];
        let alone = slot.in_flight.is_empty() && batch.len() == 1;
        let (key, index, pid) = (slot.key, slot.index, slot.pid);
        if tracing::enabled!(tracing::Level::DEBUG) {
            let positions: Vec<u64> = batch
                .iter()
                .filter_map(|(id, _)| self.jobs.get(id).map(|j| j.pos))
                .collect();
            debug!(worker = index, pid, ?positions, "jobs dispatched");
        }
        engine.send(key, &mut batch);
        let slot = &mut self.slots[si];
        if slot.in_flight.is_empty() {
            slot.head_since = now;
        }
        for (id, payload) in batch.drain(..) {
            if let Some(job) = self.jobs.get_mut(&id) {
                job.payload = payload;
                job.alone = alone;
            }
            slot.in_flight.push_back(id);
        }
        self.scratch = batch;
    }

    /// Counters so far (wire bytes filled in by the caller).
    pub(crate) fn stats(&self) -> PoolStats {
        let mut stats = self.stats.clone();
        stats.chunk = self.chunk_choice();
        stats
    }

    /// What was recorded so far.
    pub(crate) fn timeline(&self) -> Timeline {
        self.timeline.clone()
    }
}

fn median(values: impl Iterator<Item = u64>) -> u64 {
    let mut v: Vec<u64> = values.collect();
    v.sort_unstable();
    v.get(v.len() / 2).copied().unwrap_or(0)
}
