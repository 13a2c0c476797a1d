//! Deterministic simulation of the policy core (in the style of FoundationDB's and
//! TigerBeetle's simulators): a simulated engine and clients, driven by one seeded RNG,
//! put the core through random job costs, reordered results, workers that die at any
//! point (before ready, mid-chunk, after computing results they had not sent), freeze,
//! fail to spawn, refuse, and jobs that overrun their timeout or kill every worker they
//! touch. After every step the invariants are checked; at the end every result must have
//! been delivered exactly once, in order where ordered, with the right verdict.
//!
//! `cargo test -p procpool --lib sim` runs a few thousand seeds (seconds). More:
//! `PROCPOOL_SIM_SEEDS=1000000 cargo test --release -p procpool --lib sim`. A failure
//! prints the one line that replays it: `PROCPOOL_SIM_SEED=<seed> cargo test -p procpool
//! --lib sim` (add `PROCPOOL_SIM_TRACE=1` for every step).

use super::stats::Chunk;
use super::{ChunkId, Command, Core, Event, Exit, Finished, Payload, Settings, Sink, WorkerKey};
use crate::error::JobError;
use crate::reorder::Reorder;
use rand::{RngExt, SeedableRng};
use rand_chacha::ChaCha8Rng;
use std::cmp::Reverse;
use std::collections::{BTreeMap, BinaryHeap, HashMap, VecDeque};
use std::time::{Duration, Instant};

/// One simulated job: what it costs and how it behaves.
#[derive(Debug, Clone)]
struct Job {
    /// Global id (what the output echoes).
    id: u64,
    cost: Duration,
    /// Kills every worker that starts it.
    poison: bool,
}

impl Payload for Job {
    fn present(&self) -> bool {
        true
    }
}

/// How a seed's world behaves.
#[derive(Debug, Clone)]
struct World {
    workers: usize,
    chunk: Chunk,
    retries: u32,
    job_timeout: Option<Duration>,
    /// Chance per step that a random live worker is killed from outside.
    p_kill: f64,
    /// Chance that a spawn fails (transiently).
    p_spawn_fail: f64,
    /// Chance that a new worker freezes before it is ready.
    p_freeze_start: f64,
    /// Chance that a ready worker freezes for good when it starts a job.
    p_freeze: f64,
    /// Chance that a job is poison.
    p_poison: f64,
    /// Chance that a job overruns the timeout (when there is one).
    p_slow: f64,
    /// Most external kills in the whole run (storms end).
    kill_budget: u32,
    freeze_budget: u32,
    requests: usize,
    max_jobs: u64,
    /// A worker's job limit (Python's maxtasksperchild).
    max_jobs_per_worker: Option<u64>,
}

impl World {
    fn random(rng: &mut ChaCha8Rng) -> World {
        let faulty = rng.random_bool(0.7);
        let p = |rng: &mut ChaCha8Rng, hi: f64| {
            if faulty && rng.random_bool(0.5) {
                rng.random_range(0.0..hi)
            } else {
                0.0
            }
        };
        let job_timeout = rng
            .random_bool(0.3)
            .then(|| Duration::from_millis(rng.random_range(5..200)));
        World {
            workers: rng.random_range(1..=4),
            chunk: if rng.random_bool(0.5) {
                Chunk::Auto
            } else {
                Chunk::Fixed(rng.random_range(1..=16))
            },
            retries: rng.random_range(0..=3),
            p_kill: p(rng, 0.02),
            p_spawn_fail: p(rng, 0.3),
            p_freeze_start: p(rng, 0.1),
            p_freeze: if job_timeout.is_some() {
                p(rng, 0.02)
            } else {
                0.0
            },
            p_poison: p(rng, 0.05),
            p_slow: if job_timeout.is_some() {
                p(rng, 0.05)
            } else {
                0.0
            },
            job_timeout,
            kill_budget: rng.random_range(0..=20),
            freeze_budget: rng.random_range(0..=3),
            requests: rng.random_range(1..=4),
            max_jobs: rng.random_range(1..=300),
            max_jobs_per_worker: rng.random_bool(0.2).then(|| rng.random_range(1..=20)),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum WState {
    Starting { ready_at: Duration, frozen: bool },
    Ready,
    Frozen,
    Dead,
}

#[derive(Debug)]
struct SimWorker {
    key: WorkerKey,
    pid: u32,
    state: WState,
    /// Jobs received, not started: (chunk, index in chunk, job).
    inbox: VecDeque<(ChunkId, usize, Job)>,
    /// Jobs it was ever sent.
    received: u64,
    /// Running: (chunk, index, job, ends at).
    running: Option<(ChunkId, usize, Job, Duration)>,
    /// Computed, not yet sent.
    outbox: Vec<(ChunkId, usize, Finished<u64>)>,
    flush_at: Option<Duration>,
    closing: bool,
}

/// What happened to each job, for the final verdicts.
#[derive(Debug, Default)]
struct Truth {
    /// Jobs a frozen or killed-for-timeout worker was running when stopped.
    timed_out_ok: std::collections::HashSet<u64>,
}

/// A client request: an ordered stream with a window, a collect map, or unordered.
#[derive(Debug)]
struct Client {
    req: u64,
    kind: Kind,
    jobs: Vec<Job>,
    submitted: usize,
    taken: BTreeMap<u64, Result<u64, JobError>>,
    next_ordered: u64,
    cancel_after: Option<usize>,
    cancelled: bool,
    done: bool,
    /// The widest window this request was given (its memory bound).
    max_window: usize,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Ordered,
    Unordered,
    Collect,
}

struct Sim {
    rng: ChaCha8Rng,
    world: World,
    t0: Instant,
    now: Duration,
    core: Core<Job, u64>,
    workers: HashMap<WorkerKey, SimWorker>,
    /// (time, seq) -> worker to look at.
    wakeups: BinaryHeap<Reverse<(Duration, u64, WorkerKey)>>,
    seq: u64,
    next_pid: u32,
    clients: Vec<Client>,
    truth: Truth,
    /// Exits reported once a dead worker's delay has passed.
    pending_exits: HashMap<WorkerKey, Exit>,
    kills: u32,
    freezes: u32,
    trace: bool,
}

impl Sim {
    fn new(seed: u64) -> Sim {
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let world = World::random(&mut rng);
        let t0 = Instant::now();
        let cfg = Settings {
            workers: world.workers,
            chunk: world.chunk,
            window: None,
            retries: world.retries,
            job_timeout: world.job_timeout,
            record_jobs: false,
            inline: false,
            timeout_names_pid: true,
            ready_timeout: Duration::from_millis(500),
            startup_timeout: Duration::from_secs(3600),
            stall_warning: Duration::from_secs(60),
            max_jobs_per_worker: world.max_jobs_per_worker,
        };
        let core = Core::new(cfg, t0);
        let mut next_id = 0;
        let mut clients = Vec::new();
        for _ in 0..world.requests {
            let n = rng.random_range(0..=world.max_jobs);
            let jobs = (0..n)
                .map(|_| {
                    next_id += 1;
                    let slow = rng.random_bool(world.p_slow);
                    Job {
                        id: next_id,
                        cost: if slow {
                            world.job_timeout.unwrap_or_default() * 3
                        } else {
                            match rng.random_range(0..3) {
                                0 => Duration::from_nanos(rng.random_range(100..10_000)),
                                1 => Duration::from_micros(rng.random_range(10..1000)),
                                _ => Duration::from_millis(rng.random_range(1..4)),
                            }
                        },
                        poison: rng.random_bool(world.p_poison),
                    }
                })
                .collect::<Vec<_>>();
            let kind = match rng.random_range(0..3) {
                0 => Kind::Ordered,
                1 => Kind::Unordered,
                _ => Kind::Collect,
            };
            let cancel_after = (kind != Kind::Collect && rng.random_bool(0.1) && n > 0)
                .then(|| rng.random_range(0..n as usize));
            clients.push(Client {
                req: 0,
                kind,
                jobs,
                submitted: 0,
                taken: BTreeMap::new(),
                next_ordered: 0,
                cancel_after,
                cancelled: false,
                done: false,
                max_window: 0,
            });
        }
        Sim {
            rng,
            world,
            t0,
            now: Duration::ZERO,
            core,
            workers: HashMap::new(),
            wakeups: BinaryHeap::new(),
            seq: 0,
            next_pid: 1000,
            clients,
            truth: Truth::default(),
            pending_exits: HashMap::new(),
            kills: 0,
            freezes: 0,
            trace: std::env::var_os("PROCPOOL_SIM_TRACE").is_some(),
        }
    }

    fn at(&self) -> Instant {
        self.t0 + self.now
    }

    fn wake(&mut self, at: Duration, key: WorkerKey) {
        self.seq += 1;
        self.wakeups.push(Reverse((at, self.seq, key)));
    }

    fn log(&self, what: impl FnOnce() -> String) {
        if self.trace {
            eprintln!("[{:>12?}] {}", self.now, what());
        }
    }

    /// Runs the engine side of every command the core issued.
    fn execute(&mut self) -> Result<(), String> {
        loop {
            let commands = self.core.take_commands();
            if commands.is_empty() {
                return Ok(());
            }
            for c in commands {
                self.log(|| format!("command {c:?}"));
                match c {
                    Command::Spawn { worker } => {
                        if self.rng.random_bool(self.world.p_spawn_fail) {
                            let now = self.at();
                            self.core.handle(
                                Event::SpawnFailed {
                                    worker,
                                    message: "EAGAIN".into(),
                                    transient: true,
                                    os_error: Some(libc::EAGAIN),
                                },
                                now,
                            );
                            continue;
                        }
                        self.next_pid += 1;
                        let pid = self.next_pid;
                        let frozen = self.freezes < self.world.freeze_budget
                            && self.rng.random_bool(self.world.p_freeze_start);
                        if frozen {
                            self.freezes += 1;
                        }
                        let ready_at =
                            self.now + Duration::from_micros(self.rng.random_range(100..3000));
                        self.workers.insert(
                            worker,
                            SimWorker {
                                key: worker,
                                pid,
                                state: WState::Starting { ready_at, frozen },
                                inbox: VecDeque::new(),
                                received: 0,
                                running: None,
                                outbox: Vec::new(),
                                flush_at: None,
                                closing: false,
                            },
                        );
                        let now = self.at();
                        self.core.handle(Event::Spawned { worker, pid }, now);
                        if !frozen {
                            self.wake(ready_at, worker);
                        }
                    }
                    Command::Send { worker, chunk } => {
                        let jobs: Vec<Job> = self.core.payloads_mut(chunk).to_vec();
                        if jobs.is_empty() {
                            return Err(format!("chunk {chunk} sent with no jobs"));
                        }
                        let Some(w) = self.workers.get_mut(&worker) else {
                            return Err(format!("send to unknown worker {worker}"));
                        };
                        if w.state != WState::Ready
                            && w.state != WState::Frozen
                            && w.state != WState::Dead
                        {
                            return Err(format!(
                                "chunk sent to worker {worker} before it was ready"
                            ));
                        }
                        w.received += jobs.len() as u64;
                        if let Some(max) = self.world.max_jobs_per_worker {
                            if w.received > max {
                                return Err(format!(
                                    "worker {worker} was sent {} jobs, limit {max}",
                                    w.received
                                ));
                            }
                        }
                        for (i, j) in jobs.into_iter().enumerate() {
                            w.inbox.push_back((chunk, i, j));
                        }
                        let now = self.now;
                        self.wake(now, worker);
                    }
                    Command::Kill { worker } => {
                        let delay = Duration::from_micros(self.rng.random_range(0..500));
                        self.die(worker, delay, "was killed by SIGKILL (9) by the pool", None);
                    }
                    Command::Close { worker } => {
                        if let Some(w) = self.workers.get_mut(&worker) {
                            w.closing = true;
                        }
                        let now = self.now;
                        self.wake(now, worker);
                    }
                }
            }
        }
    }

    /// Kills a worker: it stops at once, and its exit is reported after `delay`.
    fn die(&mut self, key: WorkerKey, delay: Duration, status: &str, code: Option<i32>) {
        let Some(w) = self.workers.get_mut(&key) else {
            return;
        };
        if w.state == WState::Dead {
            return;
        }
        w.state = WState::Dead;
        // Whatever it computed but had not sent is lost with it.
        w.outbox.clear();
        w.running = None;
        w.flush_at = Some(self.now + delay);
        w.closing = false;
        let exit = Exit {
            status: status.to_owned(),
            code,
            stderr_tail: String::new(),
        };
        self.seq += 1;
        let at = self.now + delay;
        self.wakeups.push(Reverse((at, self.seq, key)));
        self.pending_exits.insert(key, exit);
    }

    /// Advances one worker as far as the current time allows.
    fn step_worker(&mut self, key: WorkerKey) -> Result<(), String> {
        let now = self.now;
        let at = self.at();
        let Some(w) = self.workers.get_mut(&key) else {
            return Ok(());
        };
        match w.state {
            WState::Dead => {
                if let Some(exit) = self.pending_exits.remove(&key) {
                    if w.flush_at.is_some_and(|t| t <= now) {
                        self.workers.remove(&key);
                        self.core.handle(Event::Exited { worker: key, exit }, at);
                    } else {
                        self.pending_exits.insert(key, exit);
                    }
                }
                return Ok(());
            }
            WState::Frozen => return Ok(()),
            WState::Starting { ready_at, frozen } => {
                if frozen || now < ready_at {
                    return Ok(());
                }
                w.state = WState::Ready;
                let pid = w.pid;
                self.core.handle(Event::Hello { worker: key, pid }, at);
                self.core.handle(Event::Ready { worker: key }, at);
                return Ok(());
            }
            WState::Ready => {}
        }
        // Finish the running job if its time has come.
        if let Some((chunk, index, job, ends)) = w.running.take() {
            if ends > now {
                w.running = Some((chunk, index, job, ends));
            } else {
                w.outbox.push((
                    chunk,
                    index,
                    Finished {
                        compute_ns: job.cost.as_nanos() as u64,
                        phases: None,
                        outcome: Ok(job.id),
                    },
                ));
                if w.flush_at.is_none() {
                    // Results wait in the worker's buffer for a while (reordering).
                    let wait = Duration::from_micros(self.rng.random_range(0..1500));
                    w.flush_at = Some(now + wait);
                    self.seq += 1;
                    self.wakeups.push(Reverse((now + wait, self.seq, key)));
                }
            }
        }
        let w = self.workers.get_mut(&key).ok_or("worker vanished")?;
        // Send buffered results when due (or when idle: a worker flushes before it waits).
        let idle = w.running.is_none() && w.inbox.is_empty();
        if !w.outbox.is_empty() && (idle || w.flush_at.is_some_and(|t| t <= now)) {
            let results = std::mem::take(&mut w.outbox);
            w.flush_at = None;
            // Group consecutive results of one chunk into one message.
            let mut groups: Vec<(ChunkId, usize, Vec<Finished<u64>>)> = Vec::new();
            for (chunk, index, f) in results {
                match groups.last_mut() {
                    Some((c, first, v)) if *c == chunk && *first + v.len() == index => v.push(f),
                    _ => groups.push((chunk, index, vec![f])),
                }
            }
            for (chunk, first, results) in groups {
                self.core.handle(
                    Event::Done {
                        worker: key,
                        chunk,
                        first: first as u32,
                        results,
                    },
                    at,
                );
            }
        }
        let w = self.workers.get_mut(&key).ok_or("worker vanished")?;
        if w.state != WState::Ready {
            return Ok(());
        }
        // Start the next job.
        if w.running.is_none() {
            if let Some((chunk, index, job)) = w.inbox.pop_front() {
                if job.poison {
                    w.running = Some((chunk, index, job, now));
                    self.log(|| format!("worker {key} starts a poison job and aborts"));
                    self.die(
                        key,
                        Duration::from_micros(50),
                        "was killed by SIGABRT (6)",
                        None,
                    );
                    return Ok(());
                }
                let freeze = self.freezes < self.world.freeze_budget
                    && self.rng.random_bool(self.world.p_freeze);
                let ends = now + job.cost;
                let id = job.id;
                w.running = Some((chunk, index, job, ends));
                if freeze {
                    self.freezes += 1;
                    w.state = WState::Frozen;
                    // Stopped with its running job and its unsent results: whichever the
                    // pool sees as running when the timeout fires may be charged with it.
                    self.truth.timed_out_ok.insert(id);
                    for (_, _, f) in &w.outbox {
                        if let Ok(done) = f.outcome {
                            self.truth.timed_out_ok.insert(done);
                        }
                    }
                    self.log(|| format!("worker {key} freezes on job {id}"));
                    return Ok(());
                }
                self.seq += 1;
                self.wakeups.push(Reverse((ends, self.seq, key)));
            } else if w.closing && w.outbox.is_empty() {
                self.die(
                    key,
                    Duration::from_micros(20),
                    "exited with code 0",
                    Some(0),
                );
            }
        }
        Ok(())
    }

    /// Clients submit, take results, check order, sometimes cancel.
    fn clients(&mut self) -> Result<(), String> {
        let window = self.core.window();
        for ci in 0..self.clients.len() {
            if self.clients[ci].done {
                continue;
            }
            let c = &mut self.clients[ci];
            let req = c.req;
            match c.kind {
                Kind::Collect => {
                    if self.core.is_complete(req) {
                        let items = self.core.take_collected(req).unwrap_or_default();
                        if items.len() != c.jobs.len() {
                            return Err(format!(
                                "collect request {req}: {} results for {} jobs",
                                items.len(),
                                c.jobs.len()
                            ));
                        }
                        for (pos, item) in items.into_iter().enumerate() {
                            c.taken.insert(pos as u64, item.map_err(|e| *e));
                        }
                        c.done = true;
                    }
                }
                Kind::Ordered | Kind::Unordered => {
                    while let Some((pos, item)) = self.core.take_next(req) {
                        if c.kind == Kind::Ordered {
                            if pos != c.next_ordered {
                                return Err(format!(
                                    "ordered request {req} yielded pos {pos}, expected {}",
                                    c.next_ordered
                                ));
                            }
                            c.next_ordered += 1;
                        }
                        if c.taken.insert(pos, item.result.map_err(|e| *e)).is_some() {
                            return Err(format!("request {req}: pos {pos} delivered twice"));
                        }
                    }
                    let held = self.core.held_results(req);
                    if c.kind == Kind::Ordered && held > c.max_window {
                        return Err(format!(
                            "request {req} holds {held} results, window {}",
                            c.max_window
                        ));
                    }
                    if let Some(k) = c.cancel_after {
                        if c.taken.len() >= k && !c.cancelled {
                            self.core.cancel(req);
                            c.cancelled = true;
                            c.done = true;
                            continue;
                        }
                    }
                    // Top up the window (lazy input, like imap).
                    let in_flight = c.submitted - c.taken.len();
                    let room = window.saturating_sub(in_flight);
                    let n = room.min(c.jobs.len() - c.submitted);
                    if n > 0 {
                        self.core.grow_window(req, window);
                        c.max_window = c.max_window.max(window);
                    }
                    for _ in 0..n {
                        let pos = c.submitted;
                        let job = c.jobs[pos].clone();
                        self.core
                            .submit(req, pos as u64, Ok(job), self.t0 + self.now);
                        c.submitted += 1;
                    }
                    if c.submitted == c.jobs.len() && c.taken.len() == c.jobs.len() {
                        c.done = true;
                    }
                }
            }
        }
        Ok(())
    }

    fn open_requests(&mut self) -> Result<(), String> {
        for c in &mut self.clients {
            let sink = match c.kind {
                Kind::Ordered => Sink::Ordered(Reorder::new(self.core.window())),
                Kind::Unordered => Sink::Unordered(VecDeque::new()),
                Kind::Collect => Sink::collect(c.jobs.len()),
            };
            c.max_window = self.core.window();
            c.req = self
                .core
                .open(sink, c.kind == Kind::Collect)
                .map_err(|e| format!("open: {e}"))?;
            if c.kind == Kind::Collect {
                self.core.hint_len(c.jobs.len());
                // In batches, as `Pool::map` submits.
                let now = self.t0 + self.now;
                let mut pos = 0;
                for batch in c.jobs.chunks(7) {
                    let jobs = batch.iter().map(|j| Ok(j.clone()));
                    pos += self.core.submit_many(c.req, pos, jobs, now);
                }
                if pos != c.jobs.len() as u64 {
                    return Err(format!("submit_many took {pos} of {} jobs", c.jobs.len()));
                }
                c.submitted = c.jobs.len();
            } else if c.jobs.is_empty() {
                c.done = true;
            }
        }
        Ok(())
    }

    fn run(&mut self) -> Result<(), String> {
        let start = self.at();
        self.core.start(start);
        self.execute()?;
        self.open_requests()?;
        let limit = Duration::from_secs(3600);
        let mut steps = 0u64;
        loop {
            steps += 1;
            self.clients()?;
            let now = self.at();
            self.core.tick(now);
            self.core.check_invariants(true)?;
            self.execute()?;
            self.core.check_invariants(false)?;
            if self.clients.iter().all(|c| c.done) {
                break;
            }
            // A random external kill now and then (a storm, an OOM killer).
            if self.kills < self.world.kill_budget && self.rng.random_bool(self.world.p_kill) {
                let live: Vec<WorkerKey> = self
                    .workers
                    .values()
                    .filter(|w| w.state != WState::Dead)
                    .map(|w| w.key)
                    .collect();
                if !live.is_empty() {
                    let key = live[self.rng.random_range(0..live.len())];
                    self.kills += 1;
                    self.log(|| format!("kill -9 worker {key}"));
                    let delay = Duration::from_micros(self.rng.random_range(0..300));
                    self.die(key, delay, "was killed by SIGKILL (9)", None);
                }
            }
            // Advance to the next thing that happens: a worker's wake-up or the core's.
            let core_wake = self
                .core
                .next_wake(self.at())
                .saturating_duration_since(self.t0);
            let next = match self.wakeups.peek() {
                Some(Reverse((t, _, _))) => (*t).min(core_wake),
                None => core_wake,
            };
            self.now = self.now.max(next);
            while let Some(Reverse((t, _, key))) = self.wakeups.peek().copied() {
                if t > self.now {
                    break;
                }
                self.wakeups.pop();
                self.step_worker(key)?;
                self.core.check_invariants(false)?;
            }
            if self.now > limit {
                let waiting: Vec<String> = self
                    .clients
                    .iter()
                    .filter(|c| !c.done)
                    .map(|c| {
                        format!(
                            "request {} ({:?}): {} of {} submitted, {} taken",
                            c.req,
                            c.kind,
                            c.submitted,
                            c.jobs.len(),
                            c.taken.len()
                        )
                    })
                    .collect();
                return Err(format!(
                    "no end after {limit:?} of simulated time ({steps} steps): {} jobs \
                     outstanding, {} workers, fatal {:?}; waiting: {waiting:?}",
                    self.core.outstanding(),
                    self.core.live_workers(),
                    self.core.fatal()
                ));
            }
        }
        self.check_verdicts()
    }

    /// Every job delivered exactly once, with the verdict its behaviour earns: a poison
    /// job fails after exactly `retries + 1` crashes and takes no other job with it; an
    /// innocent job fails only when enough outside kills hit it alone, or times out only
    /// when it overran (or its worker froze under it).
    fn check_verdicts(&self) -> Result<(), String> {
        // Results sit up to 1.5 ms in a simulated worker's buffer, and a timeout counts
        // from the last result received: a job within this of the limit may time out.
        let slop = Duration::from_millis(2);
        for c in &self.clients {
            if c.cancelled {
                continue;
            }
            if c.taken.len() != c.jobs.len() {
                return Err(format!(
                    "request {}: {} of {} results delivered",
                    c.req,
                    c.taken.len(),
                    c.jobs.len()
                ));
            }
            for (pos, job) in c.jobs.iter().enumerate() {
                let got = &c.taken[&(pos as u64)];
                let ok = match got {
                    Ok(id) => *id == job.id && !job.poison,
                    // Started at least once per charged crash (an uncharged run, with
                    // others held, can come on top).
                    Err(JobError::WorkerDied { attempts, .. }) if job.poison => {
                        *attempts > self.world.retries
                    }
                    Err(JobError::WorkerDied { attempts, .. }) => {
                        self.kills > self.world.retries && *attempts > self.world.retries
                    }
                    Err(JobError::TimedOut { .. }) => self.world.job_timeout.is_some_and(|t| {
                        job.cost + slop > t || self.truth.timed_out_ok.contains(&job.id)
                    }),
                    Err(_) => false,
                };
                if !ok {
                    return Err(format!(
                        "job {} (pos {pos} of request {}, cost {:?}, poison {}) ended with \
                         {got:?}; {} outside kills",
                        job.id, c.req, job.cost, job.poison, self.kills
                    ));
                }
            }
        }
        Ok(())
    }
}

fn seeds() -> Vec<u64> {
    if let Some(seed) = std::env::var("PROCPOOL_SIM_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
    {
        return vec![seed];
    }
    let n = std::env::var("PROCPOOL_SIM_SEEDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(if cfg!(debug_assertions) { 1500 } else { 20_000 });
    let base: u64 = std::env::var("PROCPOOL_SIM_BASE")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    (base..base + n).collect()
}

#[test]
fn simulated_schedules_keep_every_invariant() {
    for seed in seeds() {
        let mut sim = Sim::new(seed);
        if let Err(e) = sim.run() {
            panic!(
                "seed {seed} failed: {e}\nworld: {:?}\nreplay: PROCPOOL_SIM_SEED={seed} cargo \
                 test -p procpool --lib sim (PROCPOOL_SIM_TRACE=1 for every step)",
                sim.world
            );
        }
    }
}
