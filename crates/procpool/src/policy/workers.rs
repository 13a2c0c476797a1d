//! Worker lifecycle: slots, start-up deadlines, and when to start a replacement.
//!
//! A pool keeps `workers` slots filled. A worker that dies after it was ready is replaced
//! at once. Workers that fail *before* they are ready — could not be spawned, killed
//! during start-up (an OOM killer picks the newest process; a storm of `kill -9`), or
//! frozen past their ready deadline — are replaced after an exponential back-off (10 ms,
//! doubling, at most 1 s), which also rate-limits a storm to a few spawns per second per
//! slot; the back-off resets as soon as any worker becomes ready. None of these ever stops
//! replacement for good: the pool gives up only on a failure that will happen again,
//! and says which —
//! - a worker refused what it was sent (unknown task, another protocol version, a context
//!   it cannot decode);
//! - the same exit (code and last stderr line) before the handshake, three times in a row
//!   with no worker ready in between (a binary that does not call `serve_if_worker`, a
//!   test harness that exits on an unknown argument);
//! - spawning failed with an error that is not transient (`ENOENT`, `EACCES`...; `EAGAIN`,
//!   `ENOMEM`, `EMFILE`, `ENFILE` are retried);
//! - no worker became ready at all within the start-up timeout.

use std::time::{Duration, Instant};

/// A worker's id within its pool: unique per worker ever started, never reused.
pub(crate) type WorkerKey = u32;

/// Shortest back-off after a start-up failure.
const BACKOFF_MIN: Duration = Duration::from_millis(10);
/// Longest back-off after start-up failures.
const BACKOFF_MAX: Duration = Duration::from_secs(1);
/// Identical exits before the handshake that make the pool give up.
const SAME_EXIT_LIMIT: u32 = 3;

/// Where a worker stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum State {
    /// Spawned, not yet ready (greeting, context).
    Starting,
    /// Takes jobs.
    Ready,
}

/// Why a worker is being stopped by the pool, when it is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Failure {
    /// In words, naming the worker.
    pub reason: String,
    /// It will happen again with a new worker (a refusal at the handshake).
    pub deterministic: bool,
}

/// One worker slot.
#[derive(Debug)]
pub(crate) struct Slot {
    pub key: WorkerKey,
    /// The slot's index, 0..workers (a replacement takes its predecessor's).
    pub index: usize,
    pub pid: u32,
    pub state: State,
    /// It greeted us (so it runs our worker code).
    pub greeted: bool,
    /// Must be ready by then.
    pub deadline: Instant,
    /// Chunks it holds, in dispatch order.
    pub chunks: std::collections::VecDeque<u64>,
    /// Unfinished jobs it holds.
    pub held: usize,
    /// Jobs ever sent to it (for a limit of jobs per worker).
    pub sent: u64,
    /// When it last made progress (a result), or started holding work.
    pub progress: Instant,
    /// Asked to finish: takes no new work.
    pub closing: bool,
    /// Killed by the pool (its `Exited` follows).
    pub killed: bool,
    /// Killed because its running job overran the job timeout.
    pub timed_out: bool,
    /// Why the pool stopped it, if it did for a reason.
    pub failure: Option<Failure>,
    /// Running a suspect alone: takes nothing else until it answers.
    pub isolating: bool,
    /// Reported as making no progress (until it makes some).
    pub stall_warned: bool,
    /// Its entry in the timeline.
    pub span: usize,
}

impl Slot {
    /// A new slot, starting now.
    pub(crate) fn new(key: WorkerKey, index: usize, now: Instant, ready_timeout: Duration) -> Slot {
        Slot {
            key,
            index,
            pid: 0,
            state: State::Starting,
            greeted: false,
            deadline: now + ready_timeout,
            chunks: Default::default(),
            held: 0,
            sent: 0,
            progress: now,
            closing: false,
            killed: false,
            timed_out: false,
            failure: None,
            isolating: false,
            stall_warned: false,
            span: 0,
        }
    }

    /// Whether it may be given new work.
    pub(crate) fn takes_work(&self) -> bool {
        self.state == State::Ready && !self.closing && !self.killed && !self.isolating
    }

    /// How it is named in messages.
    pub(crate) fn name(&self) -> String {
        if self.pid == 0 {
            format!("worker {}", self.index)
        } else {
            format!("worker pid {}", self.pid)
        }
    }
}

/// How a worker failed before it was ready.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum EarlyDeath {
    /// It refused what it was sent, or speaks another protocol: will happen again.
    Refused(String),
    /// It exited with a code before greeting us; `last` is its last stderr line.
    ExitedBeforeHello { code: i32, last: String },
    /// Could not be spawned; `transient` for errors worth retrying.
    SpawnError { message: String, transient: bool },
    /// Killed by a signal, frozen past its deadline, or anything else worth retrying.
    Transient(String),
}

/// Replacement policy across all slots (see the module notes).
#[derive(Debug)]
pub(crate) struct Lifecycle {
    /// Start-up failures in a row since a worker was last ready.
    failures: u32,
    /// No spawning before this.
    not_before: Option<Instant>,
    /// The identical early exit seen last, and how often in a row.
    same_exit: Option<((i32, String), u32)>,
    /// A worker was ready at least once.
    pub ever_ready: bool,
    /// When the pool started its first worker.
    started: Instant,
    startup_timeout: Duration,
    /// The failures that made start-up fail, most recent last.
    pub reasons: Vec<String>,
    /// Why the pool gave up, once it has.
    pub fatal: Option<String>,
    /// The system error number of the last failed spawn, if one failed that way.
    pub last_os_error: Option<i32>,
    /// Spawns asked for, and spawns that failed, since a worker was last ready (or the
    /// start): when they are equal, no worker process was started at all.
    spawns: u32,
    spawn_errors: u32,
}

impl Lifecycle {
    /// A policy for a pool starting now.
    pub(crate) fn new(now: Instant, startup_timeout: Duration) -> Lifecycle {
        Lifecycle {
            failures: 0,
            not_before: None,
            same_exit: None,
            ever_ready: false,
            started: now,
            startup_timeout,
            reasons: Vec::new(),
            fatal: None,
            last_os_error: None,
            spawns: 0,
            spawn_errors: 0,
        }
    }

    /// A worker process is to be spawned.
    pub(crate) fn on_spawn(&mut self) {
        self.spawns = self.spawns.saturating_add(1);
    }

    /// The back-off after `failures` start-up failures in a row.
    pub(crate) fn backoff(failures: u32) -> Duration {
        match failures {
            0 => Duration::ZERO,
            n => BACKOFF_MIN
                .saturating_mul(1 << (n - 1).min(16))
                .min(BACKOFF_MAX),
        }
    }

    /// Whether a replacement may be started now.
    pub(crate) fn may_spawn(&self, now: Instant) -> bool {
        self.fatal.is_none() && self.not_before.is_none_or(|t| now >= t)
    }

    /// When spawning is allowed again, if it is held back.
    pub(crate) fn next_spawn(&self) -> Option<Instant> {
        self.not_before.filter(|_| self.fatal.is_none())
    }

    /// A worker became ready: failures are forgotten.
    pub(crate) fn on_ready(&mut self) {
        self.ever_ready = true;
        self.failures = 0;
        self.not_before = None;
        self.same_exit = None;
        self.reasons.clear();
        self.spawns = 0;
        self.spawn_errors = 0;
    }

    /// A worker failed before it was ready, described by `reason`.
    pub(crate) fn on_early_death(&mut self, now: Instant, death: EarlyDeath, reason: String) {
        if matches!(death, EarlyDeath::SpawnError { .. }) {
            self.spawn_errors = self.spawn_errors.saturating_add(1);
        }
        self.reasons.push(reason.clone());
        if self.reasons.len() > 8 {
            self.reasons.remove(0);
        }
        match death {
            EarlyDeath::Refused(_) => {
                self.give_up(format!("a worker refused to serve: {reason}"));
                return;
            }
            EarlyDeath::SpawnError {
                transient: false, ..
            } => {
                self.give_up(format!("workers cannot be started: {reason}"));
                return;
            }
            EarlyDeath::ExitedBeforeHello { code, last } => {
                let key = (code, last);
                let n = match &self.same_exit {
                    Some((k, n)) if *k == key => n + 1,
                    _ => 1,
                };
                self.same_exit = Some((key, n));
                if n >= SAME_EXIT_LIMIT && !self.ever_ready {
                    self.give_up(format!(
                        "{n} workers in a row exited the same way before the handshake: \
                         {reason} (does main call procpool::serve_if_worker first? In a \
                         test binary, see procpool's testing notes)"
                    ));
                    return;
                }
            }
            EarlyDeath::SpawnError { .. } | EarlyDeath::Transient(_) => {}
        }
        self.failures = self.failures.saturating_add(1);
        self.not_before = Some(now + Self::backoff(self.failures));
    }

    /// Gives up when no worker has ever been ready within the start-up timeout.
    pub(crate) fn check_startup(&mut self, now: Instant) {
        if self.fatal.is_none()
            && !self.ever_ready
            && now.saturating_duration_since(self.started) >= self.startup_timeout
        {
            let why = self
                .reasons
                .last()
                .map_or_else(String::new, |r| format!("; last: {r}"));
            if self.spawns > 0 && self.spawn_errors == self.spawns {
                // Not one process was started: the program's main is not the question.
                self.give_up(format!(
                    "no worker process could be started within {:?}: all {} attempts failed{why}",
                    self.startup_timeout, self.spawns
                ));
            } else {
                self.give_up(format!(
                    "no worker became ready within {:?} (does main call \
                     procpool::serve_if_worker first?){why}",
                    self.startup_timeout
                ));
            }
        }
    }

    /// When [`Lifecycle::check_startup`] may next give up.
    pub(crate) fn startup_deadline(&self) -> Option<Instant> {
        (!self.ever_ready && self.fatal.is_none()).then(|| self.started + self.startup_timeout)
    }

    fn give_up(&mut self, why: String) {
        if self.fatal.is_none() {
            tracing::error!("{why}; not starting more workers");
            self.fatal = Some(why);
        }
    }
}

/// Whether a spawn error is worth retrying (out of processes, memory or descriptors for
/// now), as opposed to one that will happen again (no such file, permission denied).
pub(crate) fn transient_spawn_error(e: &std::io::Error) -> bool {
    matches!(
        e.raw_os_error(),
        Some(
            libc::EAGAIN | libc::ENOMEM | libc::EMFILE | libc::ENFILE | libc::EINTR | libc::ENOBUFS
        )
    ) || matches!(
        e.kind(),
        std::io::ErrorKind::Interrupted
            | std::io::ErrorKind::OutOfMemory
            | std::io::ErrorKind::WouldBlock
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn now() -> Instant {
        Instant::now()
    }

    #[test]
    fn backoff_doubles_and_is_capped() {
        assert_eq!(Lifecycle::backoff(0), Duration::ZERO);
        assert_eq!(Lifecycle::backoff(1), Duration::from_millis(10));
        assert_eq!(Lifecycle::backoff(2), Duration::from_millis(20));
        assert_eq!(Lifecycle::backoff(8), Duration::from_secs(1));
        assert_eq!(Lifecycle::backoff(1000), Duration::from_secs(1));
    }

    #[test]
    fn signals_and_transient_errors_never_stop_replacement() {
        let t = now();
        let mut l = Lifecycle::new(t, Duration::from_secs(30));
        l.on_ready();
        for i in 0..100 {
            l.on_early_death(
                t,
                EarlyDeath::Transient("killed by SIGKILL".into()),
                format!("storm {i}"),
            );
            l.on_early_death(
                t,
                EarlyDeath::SpawnError {
                    message: "EAGAIN".into(),
                    transient: true,
                },
                "fork failed".into(),
            );
        }
        assert!(l.fatal.is_none());
        assert!(!l.may_spawn(t), "backing off");
        assert!(l.may_spawn(t + Duration::from_secs(1)));
        l.on_ready();
        assert!(l.may_spawn(t), "a ready worker resets the back-off");
    }

    #[test]
    fn refusals_and_repeated_identical_exits_give_up_and_say_why() {
        let t = now();
        let mut l = Lifecycle::new(t, Duration::from_secs(30));
        l.on_early_death(
            t,
            EarlyDeath::Refused("unknown task".into()),
            "worker pid 7 refused: no task named \"x\"".into(),
        );
        assert!(l.fatal.as_deref().unwrap().contains("no task named"));
        assert!(!l.may_spawn(t + Duration::from_secs(60)));

        let mut l = Lifecycle::new(t, Duration::from_secs(30));
        let exit = || EarlyDeath::ExitedBeforeHello {
            code: 0,
            last: "running 0 tests".into(),
        };
        l.on_early_death(t, exit(), "exited with code 0".into());
        l.on_early_death(t, exit(), "exited with code 0".into());
        assert!(l.fatal.is_none(), "twice may be chance");
        l.on_early_death(t, exit(), "exited with code 0".into());
        let why = l.fatal.unwrap();
        assert!(
            why.contains("3 workers in a row") && why.contains("serve_if_worker"),
            "{why}"
        );

        let mut l = Lifecycle::new(t, Duration::from_secs(30));
        l.on_early_death(
            t,
            EarlyDeath::SpawnError {
                message: "ENOENT".into(),
                transient: false,
            },
            "no such file".into(),
        );
        assert!(l.fatal.is_some());
    }

    #[test]
    fn start_up_gives_up_only_when_no_worker_was_ever_ready() {
        let t = now();
        let mut l = Lifecycle::new(t, Duration::from_secs(5));
        l.check_startup(t + Duration::from_secs(4));
        assert!(l.fatal.is_none());
        l.check_startup(t + Duration::from_secs(5));
        assert!(
            l.fatal
                .unwrap()
                .contains("no worker became ready within 5s")
        );
        let mut l = Lifecycle::new(t, Duration::from_secs(5));
        l.on_ready();
        l.check_startup(t + Duration::from_secs(500));
        assert!(l.fatal.is_none());
        assert!(l.startup_deadline().is_none());
    }

    #[test]
    fn start_up_that_never_spawned_a_process_says_so() {
        let t = now();
        let spawn_error = || EarlyDeath::SpawnError {
            message: "Too many open files (os error 24)".into(),
            transient: true,
        };
        let mut l = Lifecycle::new(t, Duration::from_secs(5));
        for _ in 0..3 {
            l.on_spawn();
            l.on_early_death(t, spawn_error(), "could not start a worker: EMFILE".into());
        }
        l.check_startup(t + Duration::from_secs(5));
        let fatal = l.fatal.unwrap();
        assert!(
            fatal.contains("no worker process could be started within 5s: all 3 attempts")
                && fatal.contains("EMFILE")
                && !fatal.contains("serve_if_worker"),
            "{fatal}"
        );
        // One process that did start (and hangs) keeps the question about main.
        let mut l = Lifecycle::new(t, Duration::from_secs(5));
        l.on_spawn();
        l.on_spawn();
        l.on_early_death(t, spawn_error(), "could not start a worker: EMFILE".into());
        l.check_startup(t + Duration::from_secs(5));
        assert!(l.fatal.unwrap().contains("serve_if_worker"));
    }

    #[test]
    fn classifies_spawn_errors() {
        use std::io::Error;
        assert!(transient_spawn_error(&Error::from_raw_os_error(
            libc::EAGAIN
        )));
        assert!(transient_spawn_error(&Error::from_raw_os_error(
            libc::EMFILE
        )));
        assert!(!transient_spawn_error(&Error::from_raw_os_error(
            libc::ENOENT
        )));
        assert!(!transient_spawn_error(&Error::from_raw_os_error(
            libc::EACCES
        )));
    }
}
