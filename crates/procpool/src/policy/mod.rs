//! The policy core, sans I/O: events and the current time in, commands out. It decides
//! which jobs go to which worker in chunks of what size, how many are in flight, what a
//! worker's death or an overrun job costs, when to start a replacement, and where each
//! result goes — and never touches an engine, a clock, a socket or a backend kind, so a
//! seeded simulation (`sim`, tests only) drives it through millions of schedules.
//!
//! See `README.md` beside this file for the design: the unit of bookkeeping (the chunk),
//! the invariants, and how the pool drives the core.

mod blame;
mod chunking;
mod requests;
mod runs;
#[cfg(test)]
mod sim;
pub(crate) mod stats;
pub(crate) mod workers;

pub(crate) use requests::{Collected, Item, Outputs, Sink};
pub(crate) use workers::{WorkerKey, transient_spawn_error};

use crate::error::{Error, JobError};
use crate::table::IdTable;
use blame::Verdict;
use chunking::Sizer;
use requests::Requests;
use runs::{Metas, Queue};
use stats::{
    Chunk, ChunkChoice, JobSpan, PoolStats, Timeline, WorkerPhases, WorkerRef, WorkerSpan,
};
use std::time::{Duration, Instant};
use tracing::{debug, info, warn};
use workers::{EarlyDeath, Failure, Lifecycle, Slot, State};

/// Ordered requests never keep fewer positions in flight than this (unless configured).
pub(crate) const MIN_WINDOW: usize = 64;
/// The pool wakes at least this often to check on its workers.
const HOUSEKEEPING: Duration = Duration::from_millis(250);
/// Smallest block the queue keeps payloads in (see `runs::Queue`): chunks smaller than
/// this are drained from a block, as cheap per job as anything smaller would be.
const MIN_BLOCK: usize = 256;

/// A chunk's id: unique per pool, never reused.
pub(crate) type ChunkId = u64;

/// What the core asks the engine to do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Command {
    /// Start a worker; answer with [`Event::Spawned`] or [`Event::SpawnFailed`].
    Spawn { worker: WorkerKey },
    /// Send a chunk (its payloads: [`Core::payloads_mut`]) to a worker.
    Send { worker: WorkerKey, chunk: ChunkId },
    /// Stop a worker now; an [`Event::Exited`] follows.
    Kill { worker: WorkerKey },
    /// Let a worker finish what it holds, then exit; an [`Event::Exited`] follows.
    Close { worker: WorkerKey },
}

/// How a worker ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Exit {
    /// In words: "exited with code 3", "was killed by SIGKILL (9)".
    pub status: String,
    /// The exit code, when it exited (rather than being killed by a signal).
    pub code: Option<i32>,
    /// The last lines it wrote to stderr.
    pub stderr_tail: String,
}

/// One job's result as a worker reports it.
#[derive(Debug)]
pub(crate) struct Finished<O> {
    /// Nanoseconds the task ran (process workers not asked for each job's time report
    /// a group's time on its last job and 0 on the others: sums are exact).
    pub compute_ns: u64,
    /// When its phases ended in the worker, if the pool asked for them (boxed: results are
    /// moved around in bulk, and this is 40 bytes that are rarely there).
    pub phases: Option<Box<crate::wire::msg::Phases>>,
    /// What came of it (the error boxed: results are moved around in bulk).
    pub outcome: Result<O, Box<JobError>>,
}

/// What the engine tells the core.
#[derive(Debug)]
pub(crate) enum Event<O> {
    /// A `Spawn` succeeded.
    Spawned { worker: WorkerKey, pid: u32 },
    /// A `Spawn` failed.
    SpawnFailed {
        worker: WorkerKey,
        message: String,
        transient: bool,
        /// The system error number, when the failure was one.
        os_error: Option<i32>,
    },
    /// The worker greeted us with our protocol.
    Hello { worker: WorkerKey, pid: u32 },
    /// The worker installed its context and takes jobs.
    Ready { worker: WorkerKey },
    /// Results of jobs `first..first + results.len()` of a chunk (a worker runs its chunks
    /// in order and reports results in order).
    Done {
        worker: WorkerKey,
        chunk: ChunkId,
        first: u32,
        results: Vec<Finished<O>>,
    },
    /// The worker refused, broke the protocol, or must otherwise go; the core kills it.
    Failed {
        worker: WorkerKey,
        reason: String,
        /// A refusal that every worker would repeat (unknown task, other protocol).
        deterministic: bool,
    },
    /// The worker is gone (reaped).
    Exited { worker: WorkerKey, exit: Exit },
}

/// A job's input as the core keeps it (encoded bytes, or the value itself).
pub(crate) trait Payload {
    /// Whether it can still be sent (a thread backend moves values out; a worker that is
    /// abandoned with one cannot give it back).
    fn present(&self) -> bool;
}

/// Pool settings the policy needs.
#[derive(Debug, Clone)]
pub(crate) struct Settings {
    pub workers: usize,
    pub chunk: Chunk,
    pub window: Option<usize>,
    pub retries: u32,
    pub job_timeout: Option<Duration>,
    pub record_jobs: bool,
    /// Jobs run inside `Send`, one at a time (serial): chunks of one, a window of one,
    /// and a job timeout can only be noticed after the job returned.
    pub inline: bool,
    /// A timed-out job's error names its worker's pid (a process was killed).
    pub timeout_names_pid: bool,
    /// How long a new worker has to become ready before it is killed and replaced.
    pub ready_timeout: Duration,
    /// Give up if no worker at all became ready within this.
    pub startup_timeout: Duration,
    /// Report (once) a worker whose running job made no progress for this long.
    pub stall_warning: Duration,
    /// A worker gets at most this many jobs, then exits and is replaced (Python's
    /// `maxtasksperchild`).
    pub max_jobs_per_worker: Option<u64>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    Running,
    Closed,
    ShuttingDown,
    Terminated,
}

/// A job's identity and history.
#[derive(Debug, Clone, Copy)]
struct Meta {
    req: u64,
    pos: u64,
    /// Submission number in the pool (0 for the first job ever submitted).
    seq: u64,
    /// Crashes it was charged with (see `blame`).
    crashes: u32,
    /// Times it was sent to a worker (charged or not, a crash can make it run again).
    starts: u32,
    /// When it was submitted.
    queued: Instant,
}

/// Jobs sent together: one id, one table entry, one frame, results in order.
#[derive(Debug)]
struct ChunkRec<P> {
    worker: WorkerKey,
    jobs: Metas,
    payloads: Vec<P>,
    /// Jobs whose result arrived (a prefix).
    done: usize,
    sent: Instant,
    /// One job sent to an idle worker: its round trip measures the overhead.
    alone: bool,
}

/// A job running on an abandoned worker that kept its input: only a late result from
/// that worker can finish it.
#[derive(Debug)]
struct Orphan {
    worker: WorkerKey,
    chunk: ChunkId,
    index: usize,
    meta: Meta,
}

/// All of a pool's bookkeeping.
#[derive(Debug)]
pub(crate) struct Core<P, O> {
    cfg: Settings,
    phase: Phase,
    started: Instant,
    slots: Vec<Slot>,
    life: Lifecycle,
    next_key: WorkerKey,
    chunks: IdTable<ChunkRec<P>>,
    next_chunk: ChunkId,
    pending: Queue<P>,
    /// Jobs to run alone (see `blame`); they go before `pending`.
    suspects: Queue<P>,
    orphans: Vec<Orphan>,
    requests: Requests<O>,
    next_seq: u64,
    sizer: Sizer,
    /// The largest in-flight cap any dispatch used (the bound on what a worker holds).
    peak_cap: usize,
    stats: PoolStats,
    timeline: Timeline,
    commands: Vec<Command>,
}

impl<P: Payload, O> Core<P, O> {
    /// A core for a pool built at `now`; call [`Core::start`] next.
    pub(crate) fn new(cfg: Settings, now: Instant) -> Self {
        let sizer = Sizer::new(cfg.chunk, cfg.workers, cfg.inline);
        let started_unix_ns = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX));
        Core {
            life: Lifecycle::new(now, cfg.startup_timeout),
            cfg,
            phase: Phase::Running,
            started: now,
            slots: Vec::new(),
            next_key: 0,
            chunks: IdTable::default(),
            next_chunk: 0,
            pending: Queue::default(),
            suspects: Queue::default(),
            orphans: Vec::new(),
            requests: Requests::default(),
            next_seq: 0,
            sizer,
            peak_cap: 1,
            stats: PoolStats::default(),
            timeline: Timeline {
                started_unix_ns,
                ..Timeline::default()
            },
            commands: Vec::new(),
        }
    }

    // ----- commands ----------------------------------------------------------------------

    /// The commands issued since the last call, in order.
    pub(crate) fn take_commands(&mut self) -> Vec<Command> {
        std::mem::take(&mut self.commands)
    }

    /// The payloads of a chunk, for the engine to send (or take).
    pub(crate) fn payloads_mut(&mut self, chunk: ChunkId) -> &mut [P] {
        match self.chunks.get_mut(&chunk) {
            Some(c) => &mut c.payloads,
            None => &mut [],
        }
    }

    /// The submission numbers of a chunk's jobs (fault injection names jobs by them).
    pub(crate) fn tags(&self, chunk: ChunkId) -> Vec<u64> {
        self.chunks
            .get(&chunk)
            .map_or_else(Vec::new, |c| c.jobs.iter().map(|m| m.seq).collect())
    }

    /// Gives back the input of job `index` of `chunk`, which a stopped worker never
    /// started (a thread backend hands back what was still in its inbox).
    pub(crate) fn restore(&mut self, chunk: ChunkId, index: usize, payload: P) {
        if let Some(c) = self.chunks.get_mut(&chunk) {
            if let Some(p) = c.payloads.get_mut(index) {
                *p = payload;
            }
        }
    }

    // ----- lifecycle ---------------------------------------------------------------------

    /// Starts the configured number of workers.
    pub(crate) fn start(&mut self, now: Instant) {
        for index in 0..self.cfg.workers {
            self.spawn(index, now);
        }
    }

    fn spawn(&mut self, index: usize, now: Instant) {
        let key = self.next_key;
        self.next_key += 1;
        let mut slot = Slot::new(key, index, now, self.cfg.ready_timeout);
        slot.span = self.timeline.workers.len();
        self.timeline.workers.push(WorkerSpan {
            worker: index,
            pid: 0,
            spawned: now.saturating_duration_since(self.started),
            ready: None,
            exited: None,
            status: None,
        });
        self.stats.workers_started += 1;
        self.life.on_spawn();
        self.slots.push(slot);
        self.commands.push(Command::Spawn { worker: key });
    }

    /// Workers ready for jobs.
    pub(crate) fn ready_workers(&self) -> usize {
        self.slots
            .iter()
            .filter(|s| s.state == State::Ready && !s.killed)
            .count()
    }

    /// Why the pool gave up starting workers, if it did.
    #[cfg(test)]
    pub(crate) fn fatal(&self) -> Option<&str> {
        self.life.fatal.as_deref()
    }

    /// Whether the pool has stopped for good (terminated, or no worker can be started).
    pub(crate) fn stopped(&self) -> bool {
        self.phase == Phase::Terminated || self.life.fatal.is_some()
    }

    /// Why new requests are refused, if they are.
    pub(crate) fn refusal(&self) -> Option<Error> {
        if let Some(reason) = &self.life.fatal {
            return Some(Error::Spawn {
                reason: reason.clone(),
                source: self
                    .life
                    .last_os_error
                    .map(std::io::Error::from_raw_os_error),
            });
        }
        match self.phase {
            Phase::Running => None,
            _ => Some(Error::Closed),
        }
    }

    /// No new requests from now on; submitted work still completes.
    pub(crate) fn close(&mut self) {
        if self.phase == Phase::Running {
            self.phase = Phase::Closed;
        }
    }

    /// Asks every worker to exit once it has finished what it holds.
    pub(crate) fn begin_shutdown(&mut self) {
        if self.phase != Phase::Terminated {
            self.phase = Phase::ShuttingDown;
        }
        for s in &mut self.slots {
            if !s.closing {
                s.closing = true;
                self.commands.push(Command::Close { worker: s.key });
            }
        }
    }

    /// Kills every worker now; every unfinished job fails with `Terminated`.
    pub(crate) fn terminate(&mut self) {
        self.phase = Phase::Terminated;
        let mut failed: Vec<Meta> = self.suspects.drain_metas();
        failed.extend(self.pending.drain_metas());
        for s in &mut self.slots {
            for id in s.chunks.drain(..) {
                if let Some(c) = self.chunks.remove(&id) {
                    failed.extend(c.jobs.iter_from(c.done));
                }
            }
            s.held = 0;
            s.closing = true;
            if !s.killed {
                s.killed = true;
                self.commands.push(Command::Kill { worker: s.key });
            }
        }
        failed.extend(self.orphans.drain(..).map(|o| o.meta));
        for meta in failed {
            self.fail(meta, JobError::Terminated);
        }
    }

    /// Kills the workers still alive (after a shutdown grace period ran out).
    pub(crate) fn kill_all(&mut self) {
        for s in &mut self.slots {
            if !s.killed {
                s.killed = true;
                self.commands.push(Command::Kill { worker: s.key });
            }
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
        self.pending.len()
            + self.suspects.len()
            + self.orphans.len()
            + self.slots.iter().map(|s| s.held).sum::<usize>()
    }

    // ----- requests ----------------------------------------------------------------------

    /// Opens a request whose results collect in `sink`.
    pub(crate) fn open(&mut self, sink: Sink<O>, is_async: bool) -> Result<u64, Error> {
        if let Some(e) = self.refusal() {
            return Err(e);
        }
        Ok(self.requests.open(sink, is_async))
    }

    /// Tells automatic chunking how long the current input is, when known.
    pub(crate) fn hint_len(&mut self, len: usize) {
        self.sizer.hint_len(len);
    }

    /// Adds the job at `pos` of `req` (or its immediate failure), submitted at `now`.
    pub(crate) fn submit(
        &mut self,
        req: u64,
        pos: u64,
        payload: Result<P, JobError>,
        now: Instant,
    ) {
        self.submit_many(req, pos, std::iter::once(payload), now);
    }

    /// Adds the jobs of `req` at positions `first_pos..` (each payload, or its immediate
    /// failure), submitted at `now`, as one run of the queue where they can be; returns how
    /// many the iterator gave (all of them are consumed, taken in or not). A request that
    /// is gone or cancelled takes nothing; one opened before the pool stopped fails them.
    pub(crate) fn submit_many(
        &mut self,
        req: u64,
        first_pos: u64,
        payloads: impl Iterator<Item = Result<P, JobError>>,
        now: Instant,
    ) -> u64 {
        if !self.requests.accepts(req) {
            return payloads.count() as u64;
        }
        let stopped = match (&self.life.fatal, self.phase) {
            (_, Phase::Terminated) => Some(JobError::Terminated),
            (Some(reason), _) => Some(JobError::NoWorker {
                reason: reason.clone(),
            }),
            _ => None,
        };
        let mut payloads = payloads.map(|p| match (p, &stopped) {
            (Ok(p), None) => Ok(p),
            (Err(e), _) => Err(e),
            // A request opened before the pool stopped may still feed it: fail those now.
            (Ok(_), Some(e)) => Err(e.clone()),
        });
        // Blocks of the chunk size (whole chunks then leave the queue as they came).
        let block = self.sizer.size().max(MIN_BLOCK);
        let mut pos = first_pos;
        let mut queued = 0;
        loop {
            let first = Meta {
                req,
                pos,
                seq: self.next_seq,
                crashes: 0,
                starts: 0,
                queued: now,
            };
            let (n, error) = self.pending.push_run(first, &mut payloads, block);
            pos += n as u64;
            self.next_seq += n as u64;
            queued += n;
            let Some(e) = error else {
                break;
            };
            let meta = Meta {
                pos,
                seq: self.next_seq,
                ..first
            };
            pos += 1;
            self.next_seq += 1;
            // Outstanding before it fails: the failure is its delivery.
            self.requests.add_outstanding(req, 1);
            self.fail(meta, e);
        }
        // Queued jobs are outstanding too; nothing reads the count in between.
        self.requests.add_outstanding(req, queued);
        pos - first_pos
    }

    /// Drops a request: its queued jobs are withdrawn, results still in flight discarded.
    pub(crate) fn cancel(&mut self, req: u64) {
        if !self.requests.cancel(req) {
            return;
        }
        let before = self.pending.len() + self.suspects.len();
        self.pending.retain(|r| r != req);
        self.suspects.retain(|r| r != req);
        let withdrawn = before - self.pending.len() - self.suspects.len();
        self.requests.withdraw(req, withdrawn);
    }

    /// Results of `req` not handed out yet, and jobs still running.
    pub(crate) fn request_outstanding(&self, req: u64) -> usize {
        self.requests.outstanding(req)
    }

    /// Whether the next result of an ordered or unordered request is here.
    pub(crate) fn has_next(&self, req: u64) -> bool {
        self.requests.has_next(req)
    }

    /// Takes the next result of an ordered or unordered request, with its position.
    pub(crate) fn take_next(&mut self, req: u64) -> Option<(u64, Item<O>)> {
        self.requests.take_next(req)
    }

    /// Results held for `req` that the caller has not taken (the reorder buffer).
    #[cfg(test)]
    pub(crate) fn held_results(&self, req: u64) -> usize {
        self.requests.held(req)
    }

    /// Widens an ordered request's reorder window.
    pub(crate) fn grow_window(&mut self, req: u64, window: usize) {
        self.requests.grow_window(req, window);
    }

    /// Whether a collect request has all its results.
    pub(crate) fn is_complete(&self, req: u64) -> bool {
        self.requests.is_complete(req)
    }

    /// Takes a complete collect request's results, in position order, and closes it.
    pub(crate) fn take_collected(&mut self, req: u64) -> Option<Vec<Collected<O>>> {
        self.requests.take_collected(req)
    }

    /// Takes a complete collect request's outputs, or its first failure by position.
    pub(crate) fn take_outputs(&mut self, req: u64) -> Option<Outputs<O>> {
        self.requests.take_outputs(req)
    }

    /// Closes a request whose results were all taken.
    pub(crate) fn finish(&mut self, req: u64) {
        self.requests.finish(req);
    }

    /// Whether asynchronous requests still wait for results (someone must drive).
    pub(crate) fn async_busy(&self) -> bool {
        self.requests.async_busy()
    }

    /// Positions an ordered request keeps in flight or buffered.
    pub(crate) fn window(&self) -> usize {
        if let Some(w) = self.cfg.window {
            return w;
        }
        if self.cfg.inline {
            return 1;
        }
        MIN_WINDOW.max(
            2usize
                .saturating_mul(self.cfg.workers)
                .saturating_mul(self.sizer.cap()),
        )
    }

    /// Jobs worker `s` may still be sent under the jobs-per-worker limit.
    fn quota(&self, s: &Slot) -> usize {
        match self.cfg.max_jobs_per_worker {
            Some(max) => usize::try_from(max.saturating_sub(s.sent)).unwrap_or(usize::MAX),
            None => usize::MAX,
        }
    }

    /// Asks workers that got their last job under the jobs-per-worker limit, and finished
    /// it, to exit (a replacement starts at once).
    fn retire_spent(&mut self) {
        let Some(max) = self.cfg.max_jobs_per_worker else {
            return;
        };
        for s in &mut self.slots {
            if s.sent >= max && s.held == 0 && !s.closing && !s.killed {
                debug!(
                    worker = s.index,
                    pid = s.pid,
                    "worker ran its {max} jobs; replacing it"
                );
                s.closing = true;
                self.commands.push(Command::Close { worker: s.key });
            }
        }
    }

    /// Jobs submitted and not yet sent (retries and suspects included).
    pub(crate) fn waiting(&self) -> usize {
        self.pending.len() + self.suspects.len()
    }

    /// Most unfinished jobs one worker may hold now.
    pub(crate) fn cap(&self) -> usize {
        if self.cfg.inline { 1 } else { self.sizer.cap() }
    }

    // ----- reports -----------------------------------------------------------------------

    /// Counters so far (wire bytes are the engine's, filled in by the caller).
    pub(crate) fn stats(&self) -> PoolStats {
        let mut stats = self.stats.clone();
        stats.chunk = self.sizer.choice();
        stats
    }

    /// The automatic chunk size now, once measured.
    pub(crate) fn chunk_choice(&self) -> Option<ChunkChoice> {
        self.sizer.choice()
    }

    /// Worker and job lives so far.
    pub(crate) fn timeline(&self) -> Timeline {
        self.timeline.clone()
    }

    // ----- events ------------------------------------------------------------------------

    /// Applies one engine event.
    pub(crate) fn handle(&mut self, event: Event<O>, now: Instant) {
        match event {
            Event::Spawned { worker, pid } | Event::Hello { worker, pid } => {
                let greeted = matches!(event, Event::Hello { .. });
                if let Some(s) = self.slot_mut(worker) {
                    s.pid = pid;
                    s.greeted |= greeted;
                    let span = s.span;
                    self.timeline.workers[span].pid = pid;
                    if !greeted {
                        debug!(
                            worker = self.slot(worker).map(|s| s.index),
                            pid, "worker spawned"
                        );
                    }
                }
            }
            Event::SpawnFailed {
                worker,
                message,
                transient,
                os_error,
            } => {
                self.life.last_os_error = os_error.or(self.life.last_os_error);
                let Some(i) = self.slots.iter().position(|s| s.key == worker) else {
                    return;
                };
                let slot = self.slots.remove(i);
                let span = &mut self.timeline.workers[slot.span];
                span.exited = Some(now.saturating_duration_since(self.started));
                span.status = Some(format!("could not be started: {message}"));
                self.stats.spawn_failures += 1;
                let reason = format!("could not start a worker: {message}");
                warn!(worker = slot.index, "{reason}");
                self.life.on_early_death(
                    now,
                    EarlyDeath::SpawnError { message, transient },
                    reason,
                );
            }
            Event::Ready { worker } => {
                let since = now.saturating_duration_since(self.started);
                if let Some(s) = self.slots.iter_mut().find(|s| s.key == worker) {
                    if s.state == State::Starting && !s.killed {
                        s.state = State::Ready;
                        s.progress = now;
                        self.timeline.workers[s.span].ready = Some(since);
                        debug!(worker = s.index, pid = s.pid, "worker ready");
                        self.life.on_ready();
                    }
                }
                if self.stats.ready_after.is_none() && self.ready_workers() == self.cfg.workers {
                    self.stats.ready_after = Some(since);
                }
            }
            Event::Done {
                worker,
                chunk,
                first,
                results,
            } => self.on_done(worker, chunk, first as usize, results, now),
            Event::Failed {
                worker,
                reason,
                deterministic,
            } => {
                if let Some(s) = self.slots.iter_mut().find(|s| s.key == worker) {
                    warn!(worker = s.index, pid = s.pid, "{reason}");
                    s.failure = Some(Failure {
                        reason,
                        deterministic,
                    });
                    if !s.killed {
                        s.killed = true;
                        self.commands.push(Command::Kill { worker });
                    }
                }
            }
            Event::Exited { worker, exit } => self.on_exit(worker, exit, now),
        }
        self.check_fatal();
    }

    fn slot(&self, key: WorkerKey) -> Option<&Slot> {
        self.slots.iter().find(|s| s.key == key)
    }

    fn slot_mut(&mut self, key: WorkerKey) -> Option<&mut Slot> {
        self.slots.iter_mut().find(|s| s.key == key)
    }

    fn on_done(
        &mut self,
        key: WorkerKey,
        chunk_id: ChunkId,
        first: usize,
        results: Vec<Finished<O>>,
        now: Instant,
    ) {
        let Some(si) = self.slots.iter().position(|s| s.key == key) else {
            self.on_late_done(key, chunk_id, first, results, now);
            return;
        };
        let slot = &mut self.slots[si];
        let in_order = slot.chunks.front() == Some(&chunk_id)
            && self.chunks.get(&chunk_id).is_some_and(|c| {
                c.worker == key && c.done == first && first + results.len() <= c.jobs.len()
            });
        if !in_order {
            let reason = format!(
                "{} answered jobs {first}..{} of chunk {chunk_id}, which it was not running",
                slot.name(),
                first + results.len()
            );
            warn!(worker = slot.index, pid = slot.pid, "{reason}");
            slot.failure = Some(Failure {
                reason,
                deterministic: false,
            });
            if !slot.killed {
                slot.killed = true;
                self.commands.push(Command::Kill { worker: key });
            }
            return;
        }
        let who = WorkerRef {
            index: slot.index,
            pid: slot.pid,
        };
        debug!(
            worker = who.index,
            pid = who.pid,
            chunk = chunk_id,
            first,
            count = results.len(),
            "results received"
        );
        slot.held -= results.len();
        slot.progress = now;
        slot.stall_warned = false;
        let Core {
            chunks,
            slots,
            requests,
            stats,
            sizer,
            cfg,
            timeline,
            started,
            ..
        } = self;
        let Some(c) = chunks.get_mut(&chunk_id) else {
            return;
        };
        let single = c.alone && c.jobs.len() == 1;
        let sent = c.sent;
        let start = c.done;
        c.done += results.len();
        let n = results.len() as u64;
        let mut total_ns = 0u64;
        let inline_timeout = cfg.inline && cfg.job_timeout.is_some();
        if !(single || cfg.record_jobs || inline_timeout) {
            // Nothing to look at job by job: deliver each run of consecutive positions of
            // one request at once (one request lookup per run, not per job).
            let mut results = results.into_iter();
            for (first, len) in c.jobs.segments(start, results.len()) {
                let mut failed = 0u64;
                let run = results.by_ref().take(len).map(|r| {
                    total_ns = total_ns.saturating_add(r.compute_ns);
                    failed += u64::from(r.outcome.is_err());
                    r.outcome
                });
                requests.deliver_run(first.req, first.pos, Some(who), run);
                stats.jobs_done += len as u64;
                stats.jobs_failed += failed;
            }
        } else {
            for (meta, r) in c.jobs.iter_from(start).zip(results) {
                total_ns = total_ns.saturating_add(r.compute_ns);
                let compute = Duration::from_nanos(r.compute_ns);
                if single {
                    if let Some(choice) =
                        sizer.observe_round_trip(now.saturating_duration_since(sent), compute)
                    {
                        info!(
                            chunksize = choice.chunksize,
                            "auto chunksize: {}", choice.reason
                        );
                    }
                }
                if cfg.record_jobs {
                    timeline.jobs.push(JobSpan {
                        worker: who.index,
                        pid: who.pid,
                        pos: meta.pos,
                        queued: meta.queued.saturating_duration_since(*started),
                        sent: sent.saturating_duration_since(*started),
                        done: now.saturating_duration_since(*started),
                        compute,
                        phases: r.phases.map(|p| WorkerPhases {
                            begun_ns: p.begun,
                            decoded_ns: p.decoded,
                            computed_ns: p.computed,
                            encoded_ns: p.encoded,
                        }),
                    });
                }
                let mut outcome = r.outcome;
                if let Some(limit) = cfg.job_timeout {
                    // Jobs that run inline cannot be stopped: an overrun is noticed after it.
                    if cfg.inline && compute > limit && outcome.is_ok() {
                        outcome = Err(Box::new(JobError::TimedOut {
                            pid: 0,
                            after: limit,
                        }));
                    }
                }
                stats.jobs_done += 1;
                if outcome.is_err() {
                    stats.jobs_failed += 1;
                }
                requests.deliver(meta.req, meta.pos, Some(who), outcome);
            }
        }
        stats.compute += Duration::from_nanos(total_ns);
        if let Some(mean) = total_ns.checked_div(n) {
            sizer.record_compute(mean);
        }
        if c.done == c.jobs.len() {
            chunks.remove(&chunk_id);
            let slot = &mut slots[si];
            slot.chunks.pop_front();
            if slot.held == 0 {
                slot.isolating = false;
            }
        }
    }

    /// A result from a worker that is gone: only an orphaned job takes it.
    fn on_late_done(
        &mut self,
        key: WorkerKey,
        chunk: ChunkId,
        first: usize,
        results: Vec<Finished<O>>,
        now: Instant,
    ) {
        let _ = now;
        for (i, r) in results.into_iter().enumerate() {
            let index = first + i;
            if let Some(at) = self
                .orphans
                .iter()
                .position(|o| o.worker == key && o.chunk == chunk && o.index == index)
            {
                let o = self.orphans.swap_remove(at);
                self.deliver(o.meta, None, r.outcome);
            }
        }
    }

    fn on_exit(&mut self, key: WorkerKey, exit: Exit, now: Instant) {
        let Some(i) = self.slots.iter().position(|s| s.key == key) else {
            return;
        };
        let slot = self.slots.remove(i);
        let span = &mut self.timeline.workers[slot.span];
        span.exited = Some(now.saturating_duration_since(self.started));
        span.status = Some(exit.status.clone());
        if slot.state != State::Ready {
            self.on_early_death(&slot, &exit, now);
            return;
        }
        // The unfinished jobs it held, in the order it would have run them.
        let mut held: Vec<(ChunkId, usize, Meta, P)> = Vec::with_capacity(slot.held);
        for id in &slot.chunks {
            if let Some(c) = self.chunks.remove(id) {
                let done = c.done;
                for (index, (meta, payload)) in c.jobs.iter().zip(c.payloads).enumerate() {
                    if index >= done {
                        held.push((*id, index, meta, payload));
                    }
                }
            }
        }
        if slot.closing && held.is_empty() {
            debug!(
                worker = slot.index,
                pid = slot.pid,
                "worker {}",
                exit.status
            );
            return;
        }
        if self.phase == Phase::Terminated {
            return;
        }
        self.stats.workers_lost += 1;
        let why = slot
            .failure
            .as_ref()
            .map_or_else(String::new, |f| format!(": {}", f.reason));
        if held.len() <= 16 {
            let positions: Vec<u64> = held.iter().map(|h| h.2.pos).collect();
            warn!(worker = slot.index, pid = slot.pid, jobs = ?positions, "worker {}{why}", exit.status);
        } else {
            warn!(
                worker = slot.index,
                pid = slot.pid,
                jobs = held.len(),
                "worker {}{why}",
                exit.status
            );
        }
        let crashes: Vec<u32> = held.iter().map(|h| h.2.crashes).collect();
        let verdicts = blame::judge(&crashes, slot.timed_out, self.cfg.retries);
        let mut suspects = Vec::new();
        let mut requeue = Vec::new();
        for ((chunk, index, mut meta, payload), verdict) in held.into_iter().zip(verdicts) {
            match verdict {
                Verdict::TimedOut => {
                    let after = self.cfg.job_timeout.unwrap_or_default();
                    let pid = if self.cfg.timeout_names_pid {
                        slot.pid
                    } else {
                        0
                    };
                    self.fail(meta, JobError::TimedOut { pid, after });
                }
                Verdict::Failed { .. } => {
                    let status = match &slot.failure {
                        Some(f) => format!("{} after a protocol error ({})", exit.status, f.reason),
                        None => exit.status.clone(),
                    };
                    let error = JobError::WorkerDied {
                        pid: slot.pid,
                        status,
                        attempts: meta.starts,
                        stderr_tail: exit.stderr_tail.trim_end().to_owned(),
                    };
                    self.fail(meta, error);
                }
                _ if !payload.present() => {
                    // Its input went with an abandoned worker: wait for its late result.
                    self.orphans.push(Orphan {
                        worker: key,
                        chunk,
                        index,
                        meta,
                    });
                }
                Verdict::Charged { crashes } => {
                    meta.crashes = crashes;
                    debug!(
                        pos = meta.pos,
                        attempt = crashes + 1,
                        "re-running a job whose worker died"
                    );
                    suspects.push((meta, payload));
                }
                Verdict::Suspect => suspects.push((meta, payload)),
                Verdict::Requeue => requeue.push((meta, payload)),
            }
        }
        self.stats.jobs_redispatched += (suspects.len() + requeue.len()) as u64;
        for (meta, payload) in requeue.into_iter().rev() {
            self.pending.push_front(meta, payload);
        }
        for (meta, payload) in suspects.into_iter().rev() {
            self.suspects.push_front(meta, payload);
        }
    }

    fn on_early_death(&mut self, slot: &Slot, exit: &Exit, now: Instant) {
        self.stats.spawn_failures += 1;
        let mut reason = match &slot.failure {
            Some(f) => f.reason.clone(),
            None => format!("{} {} before it was ready", slot.name(), exit.status),
        };
        let tail = exit.stderr_tail.trim_end();
        if !tail.is_empty() {
            reason.push_str(&format!("; its stderr ended with:\n{tail}"));
        }
        let death = match (&slot.failure, exit.code) {
            (Some(f), _) if f.deterministic => EarlyDeath::Refused(f.reason.clone()),
            (None, Some(code)) if !slot.greeted && !slot.killed => EarlyDeath::ExitedBeforeHello {
                code,
                last: tail.lines().last().unwrap_or("").to_owned(),
            },
            _ => EarlyDeath::Transient(reason.clone()),
        };
        if self.phase == Phase::Running || self.phase == Phase::Closed {
            warn!(worker = slot.index, pid = slot.pid, "{reason}");
        }
        self.life.on_early_death(now, death, reason);
    }

    /// When no worker can be started any more, nothing queued can ever run: fail it.
    fn check_fatal(&mut self) {
        let Some(reason) = self.life.fatal.clone() else {
            return;
        };
        if self
            .slots
            .iter()
            .any(|s| s.state == State::Ready && !s.killed)
        {
            return;
        }
        let mut stuck: Vec<Meta> = self.suspects.drain_metas();
        stuck.extend(self.pending.drain_metas());
        for meta in stuck {
            self.fail(
                meta,
                JobError::NoWorker {
                    reason: reason.clone(),
                },
            );
        }
    }

    fn deliver(&mut self, meta: Meta, worker: Option<WorkerRef>, result: Result<O, Box<JobError>>) {
        self.stats.jobs_done += 1;
        if result.is_err() {
            self.stats.jobs_failed += 1;
        }
        self.requests.deliver(meta.req, meta.pos, worker, result);
    }

    /// Delivers a job's failure.
    fn fail(&mut self, meta: Meta, error: JobError) {
        self.deliver(meta, None, Err(Box::new(error)));
    }

    // ----- time --------------------------------------------------------------------------

    /// Everything that depends on time and on the state as a whole: deadlines, timeouts,
    /// replacements, dispatch. Call after handling events, and when [`Core::next_wake`]
    /// comes.
    pub(crate) fn tick(&mut self, now: Instant) {
        for s in &mut self.slots {
            if s.state == State::Starting && !s.killed && now >= s.deadline {
                let reason = format!(
                    "{} was not ready within {:?}; killing it",
                    s.name(),
                    self.cfg.ready_timeout
                );
                warn!(worker = s.index, pid = s.pid, "{reason}");
                s.failure = Some(Failure {
                    reason,
                    deterministic: false,
                });
                s.killed = true;
                self.commands.push(Command::Kill { worker: s.key });
            }
        }
        if let (Some(limit), false) = (self.cfg.job_timeout, self.cfg.inline) {
            for s in &mut self.slots {
                if s.state != State::Ready || s.killed || s.held == 0 {
                    continue;
                }
                if now.saturating_duration_since(s.progress) >= limit {
                    warn!(
                        worker = s.index,
                        pid = s.pid,
                        "a job exceeded its timeout of {limit:?}; stopping its worker"
                    );
                    s.timed_out = true;
                    s.killed = true;
                    self.commands.push(Command::Kill { worker: s.key });
                }
            }
        }
        for s in &mut self.slots {
            if s.state == State::Ready
                && s.held > 0
                && !s.killed
                && !s.stall_warned
                && now.saturating_duration_since(s.progress) >= self.cfg.stall_warning
            {
                s.stall_warned = true;
                warn!(
                    worker = s.index,
                    pid = s.pid,
                    "{} has made no progress for {:?} (still waiting; a job timeout would \
                     stop it)",
                    s.name(),
                    now.saturating_duration_since(s.progress)
                );
            }
        }
        self.life.check_startup(now);
        self.retire_spent();
        self.replenish(now);
        self.check_fatal();
        self.dispatch(now);
    }

    /// When [`Core::tick`] must run next at the latest.
    pub(crate) fn next_wake(&self, now: Instant) -> Instant {
        let mut at = now + HOUSEKEEPING;
        for s in &self.slots {
            if s.killed {
                continue;
            }
            if s.state == State::Starting {
                at = at.min(s.deadline);
            } else if s.held > 0 {
                if let (Some(limit), false) = (self.cfg.job_timeout, self.cfg.inline) {
                    at = at.min(s.progress + limit);
                }
                if !s.stall_warned {
                    at = at.min(s.progress + self.cfg.stall_warning);
                }
            }
        }
        if self.slots.iter().filter(|s| !s.closing).count() < self.cfg.workers
            && self.wants_workers()
        {
            if let Some(t) = self.life.next_spawn() {
                at = at.min(t);
            }
        }
        if let Some(t) = self.life.startup_deadline() {
            at = at.min(t);
        }
        at.max(now)
    }

    /// Whether missing workers should be replaced.
    fn wants_workers(&self) -> bool {
        match self.phase {
            Phase::Running => true,
            Phase::Closed => self.outstanding() > 0,
            Phase::ShuttingDown | Phase::Terminated => false,
        }
    }

    /// Starts replacements for missing workers, as the lifecycle policy allows.
    fn replenish(&mut self, now: Instant) {
        let wanted = self.wants_workers();
        // A worker asked to exit (its job limit reached) is replaced at once.
        let active = |slots: &[Slot]| slots.iter().filter(|s| !s.closing).count();
        while wanted && active(&self.slots) < self.cfg.workers && self.life.may_spawn(now) {
            let index = (0..self.cfg.workers)
                .find(|i| !self.slots.iter().any(|s| s.index == *i && !s.closing))
                .unwrap_or(0);
            self.spawn(index, now);
        }
    }

    /// Sends queued jobs to workers with room, a chunk at a time, least loaded first;
    /// suspects go alone to idle workers first.
    fn dispatch(&mut self, now: Instant) {
        if self.phase == Phase::Terminated {
            return;
        }
        for si in 0..self.slots.len() {
            if self.suspects.is_empty() {
                break;
            }
            let s = &self.slots[si];
            if !s.takes_work() || s.held > 0 || self.quota(s) == 0 {
                continue;
            }
            if let Some((meta, payload)) = self.suspects.pop_front() {
                self.slots[si].isolating = true;
                let mut metas = Metas::default();
                metas.push(meta);
                self.send(si, metas, vec![payload], now);
            }
        }
        if self.pending.is_empty() {
            return;
        }
        let size = self.sizer.size();
        let cap = self.cap();
        self.peak_cap = self.peak_cap.max(cap);
        let mut order: Vec<usize> = (0..self.slots.len()).collect();
        let mut progress = true;
        while progress && !self.pending.is_empty() {
            progress = false;
            order.sort_by_key(|&si| self.slots[si].held);
            for &si in &order {
                if self.pending.is_empty() {
                    break;
                }
                let s = &self.slots[si];
                if !s.takes_work() {
                    continue;
                }
                let room = cap.saturating_sub(s.held).min(self.quota(s));
                if room == 0 {
                    continue;
                }
                let (metas, payloads) = self.pending.take_front(size.min(room));
                self.send(si, metas, payloads, now);
                progress = true;
            }
        }
    }

    /// Sends jobs to worker `si` as one chunk (`metas` and `payloads` side by side).
    fn send(&mut self, si: usize, mut metas: Metas, payloads: Vec<P>, now: Instant) {
        let id = self.next_chunk;
        self.next_chunk += 1;
        let slot = &mut self.slots[si];
        let alone = slot.held == 0 && metas.len() == 1;
        if slot.held == 0 {
            slot.progress = now;
        }
        slot.held += metas.len();
        slot.sent += metas.len() as u64;
        slot.chunks.push_back(id);
        let (key, index, pid) = (slot.key, slot.index, slot.pid);
        metas.count_start();
        if tracing::enabled!(tracing::Level::DEBUG) {
            let positions: Vec<u64> = metas.iter().take(16).map(|m| m.pos).collect();
            debug!(
                worker = index,
                pid,
                chunk = id,
                jobs = metas.len(),
                ?positions,
                "chunk dispatched"
            );
        }
        self.chunks.insert(
            id,
            ChunkRec {
                worker: key,
                jobs: metas,
                payloads,
                done: 0,
                sent: now,
                alone,
            },
        );
        self.commands.push(Command::Send {
            worker: key,
            chunk: id,
        });
    }

    /// Checks the invariants that must hold between any two calls (tests).
    #[cfg(test)]
    /// `after_tick`: [`Core::tick`] just ran, so nothing that could be sent is waiting.
    pub(crate) fn check_invariants(&self, after_tick: bool) -> Result<(), String> {
        let cap = self.cap();
        if after_tick && !self.pending.is_empty() {
            // No stall: jobs wait only when no worker can take one.
            if let Some(s) = self
                .slots
                .iter()
                .find(|s| s.takes_work() && s.held < cap && self.quota(s) > 0)
            {
                return Err(format!(
                    "{} jobs pending while worker {} holds {} of {cap}",
                    self.pending.len(),
                    s.key,
                    s.held
                ));
            }
        }
        for s in &self.slots {
            let held: usize = s
                .chunks
                .iter()
                .filter_map(|id| self.chunks.get(id))
                .map(|c| c.jobs.len() - c.done)
                .sum();
            if held != s.held {
                return Err(format!(
                    "worker {} holds {held} jobs but counts {}",
                    s.key, s.held
                ));
            }
            if s.isolating && s.held > 1 {
                return Err(format!(
                    "worker {} isolates a suspect with {} jobs",
                    s.key, s.held
                ));
            }
            // The cap may have shrunk since a chunk was sent, never below what was sent.
            if s.held > self.peak_cap {
                return Err(format!(
                    "worker {} holds {} jobs, cap {cap} (at most {} ever)",
                    s.key, s.held, self.peak_cap
                ));
            }
        }
        if self.chunks.len() != self.slots.iter().map(|s| s.chunks.len()).sum::<usize>() {
            return Err(format!(
                "{} chunks in the table, {} held by workers",
                self.chunks.len(),
                self.slots.iter().map(|s| s.chunks.len()).sum::<usize>()
            ));
        }
        let active = self.slots.iter().filter(|s| !s.closing).count();
        if active > self.cfg.workers {
            return Err(format!("{active} workers for {} slots", self.cfg.workers));
        }
        if let Some(max) = self.cfg.max_jobs_per_worker {
            if let Some(s) = self.slots.iter().find(|s| s.sent > max) {
                return Err(format!("worker {} got {} jobs, limit {max}", s.key, s.sent));
            }
        }
        Ok(())
    }
}
