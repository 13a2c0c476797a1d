//! The promise at the edges, against real processes: kill storms, workers frozen before
//! they are ready, programs a task starts (grandchildren), nested pools. Nothing hangs,
//! nothing is lost, nothing is left behind.
//!
//! A custom harness (libtest-mimic), because this binary is also the worker: `main` hands
//! it to `serve_if_worker` first. Every test runs under a watchdog; no test asserts how
//! fast anything is (the deadlines here are the pool's own settings, not speed claims).

use libtest_mimic::{Arguments, Failed};
use procpool::{Backend, Chunk, Pool, Process, Queue, QueueSender, Registry, Target, Task};
use serde::{Deserialize, Serialize};
use std::collections::BTreeSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
// (Arc: shared flags between a test and its helper threads.)
use std::time::{Duration, Instant};

mod common;
use common::{check, watchdog};

// ----- tasks ---------------------------------------------------------------------------

/// Sleeps, then echoes its position and reports its pid.
#[derive(Serialize, Deserialize)]
struct Nap {
    pos: u64,
    ms: u64,
}
impl Task for Nap {
    const NAME: &'static str = "nap";
    type Context = ();
    type Output = (u64, u32);
    fn run(self, _: &()) -> (u64, u32) {
        std::thread::sleep(Duration::from_millis(self.ms));
        (self.pos, std::process::id())
    }
}

/// Starts `sleep 300` (a grandchild of the pool), then sleeps `then_ms` itself; returns
/// the grandchild's pid.
#[derive(Serialize, Deserialize)]
struct SpawnSleep {
    then_ms: u64,
}
impl Task for SpawnSleep {
    const NAME: &'static str = "spawn_sleep";
    type Context = ();
    type Output = u32;
    fn run(self, _: &()) -> u32 {
        let pid = match std::process::Command::new("sleep").arg("300").spawn() {
            Ok(child) => child.id(),
            Err(_) => 0,
        };
        std::thread::sleep(Duration::from_millis(self.then_ms));
        pid
    }
}

/// Tries to start a pool from inside a task.
#[derive(Serialize, Deserialize)]
struct Nested;
impl Task for Nested {
    const NAME: &'static str = "nested";
    type Context = ();
    type Output = String;
    fn run(self, _: &()) -> String {
        match Pool::<Nap>::builder().workers(1).build() {
            Ok(_) => "a nested pool started".into(),
            Err(e) => e.to_string(),
        }
    }
}

/// A `Process` child that runs a pool of its own and reports what it computed.
#[derive(Serialize, Deserialize)]
struct PoolInChild {
    out: QueueSender<Result<Vec<u64>, String>>,
}
impl Target for PoolInChild {
    const NAME: &'static str = "pool_in_child";
    fn run(self) {
        let result = Pool::<Nap>::builder()
            .workers(2)
            .forward_worker_output(false)
            .build()
            .and_then(|pool| pool.map((0..6).map(|pos| Nap { pos, ms: 1 })))
            .map(|v| v.into_iter().map(|(p, _)| p).collect())
            .map_err(|e| e.to_string());
        let _ = self.out.put(&result);
    }
}

/// A `Process` child whose pool's worker starts a grandchild; then it waits to be killed.
#[derive(Serialize, Deserialize)]
struct SleeperPool {
    out: QueueSender<(u32, u32)>,
}
impl Target for SleeperPool {
    const NAME: &'static str = "sleeper_pool";
    fn run(self) {
        let Ok(pool) = Pool::<SpawnSleep>::builder()
            .workers(1)
            .forward_worker_output(false)
            .build()
        else {
            return;
        };
        let worker = pool.pids().first().copied().unwrap_or(0);
        if let Ok(sleep) = pool.apply(SpawnSleep { then_ms: 0 }) {
            let _ = self.out.put(&(worker, sleep));
        }
        loop {
            std::thread::sleep(Duration::from_secs(3600));
        }
    }
}

fn registry() -> Registry {
    Registry::new()
        .task::<Nap>()
        .task::<SpawnSleep>()
        .task::<Nested>()
        .target::<PoolInChild>()
        .target::<SleeperPool>()
}

// ----- helpers -------------------------------------------------------------------------

fn quiet<T: Task>(workers: usize) -> procpool::PoolBuilder<T> {
    Pool::<T>::builder()
        .backend(Backend::Process)
        .workers(workers)
        .forward_worker_output(false)
}

/// (parent pid, state) of a process, if it exists.
fn stat(pid: u32) -> Option<(u32, char)> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let rest = &s[s.rfind(')')? + 2..];
    let mut fields = rest.split_whitespace();
    let state = fields.next()?.chars().next()?;
    let ppid = fields.next()?.parse().ok()?;
    Some((ppid, state))
}

/// Whether `pid` is running (a zombie does not count: it is dead, waiting to be reaped).
fn running(pid: u32) -> bool {
    stat(pid).is_some_and(|(_, state)| state != 'Z')
}

/// Live children of `pid`.
fn children(pid: u32) -> BTreeSet<u32> {
    std::fs::read_dir("/proc")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
        .filter(|&c| stat(c).is_some_and(|(ppid, state)| ppid == pid && state != 'Z'))
        .collect()
}

/// Waits (as a watchdog, not a speed claim) until `pid` is no longer running.
fn gone_within(pid: u32, limit: Duration) -> bool {
    let start = Instant::now();
    while running(pid) {
        if start.elapsed() > limit {
            return false;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    true
}

fn kill(pid: u32, signal: i32) {
    // SAFETY: kill(2) has no memory effects; the pid is a process this test started.
    unsafe { libc::kill(pid as i32, signal) };
}

// ----- tests ---------------------------------------------------------------------------

fn a_worker_frozen_at_start_is_replaced_and_the_pool_starts_anyway() -> Result<(), Failed> {
    let pool = quiet::<Nap>(2)
        .ready_timeout(Duration::from_secs(1))
        .env("PROCPOOL_FAULT", "worker=1:hang-start=1")
        .chunksize(Chunk::Fixed(1))
        .build()?;
    let out = pool.map((0..40).map(|pos| Nap { pos, ms: 50 }))?;
    check(out.iter().map(|(p, _)| *p).eq(0..40), || format!("{out:?}"))?;
    let stats = pool.stats();
    check(
        stats.spawn_failures >= 1 && stats.workers_started >= 3,
        || format!("the frozen worker was not replaced: {stats:?}"),
    )?;
    let pids: BTreeSet<u32> = out.iter().map(|(_, pid)| *pid).collect();
    check(pids.len() == 2, || {
        format!("jobs ran in {pids:?}: the replacement never took work")
    })?;
    Ok(())
}

fn workers_that_never_greet_make_the_pool_give_up_with_the_reason() -> Result<(), Failed> {
    let err = quiet::<Nap>(2)
        .ready_timeout(Duration::from_millis(500))
        .startup_timeout(Duration::from_secs(2))
        .env("PROCPOOL_FAULT", "hang-start=1")
        .build()
        .err()
        .ok_or("a pool of frozen workers started")?;
    let msg = err.to_string();
    check(msg.contains("no worker became ready within 2s"), || {
        msg.clone()
    })?;
    check(msg.contains("was not ready within"), || msg.clone())?;
    Ok(())
}

fn a_frozen_replacement_is_killed_at_its_ready_deadline() -> Result<(), Failed> {
    // Worker key 2 is the first replacement; it freezes before greeting.
    let pool = quiet::<Nap>(2)
        .ready_timeout(Duration::from_secs(1))
        .job_timeout(Duration::from_secs(30))
        .env("PROCPOOL_FAULT", "worker=2:hang-start=1")
        .chunksize(Chunk::Fixed(1))
        .retries(5)
        .build()?;
    let victim = pool.pids()[0];
    let stop = Arc::new(AtomicBool::new(false));
    let killer = {
        let stop = Arc::clone(&stop);
        std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(100));
            if !stop.load(Ordering::SeqCst) {
                kill(victim, libc::SIGKILL);
            }
        })
    };
    let out = pool.map((0..60).map(|pos| Nap { pos, ms: 20 }));
    stop.store(true, Ordering::SeqCst);
    let _ = killer.join();
    let out = out?;
    check(out.iter().map(|(p, _)| *p).eq(0..60), || format!("{out:?}"))?;
    check(pool.stats().spawn_failures >= 1, || {
        format!(
            "the frozen replacement was never replaced: {:?}",
            pool.stats()
        )
    })?;
    Ok(())
}

fn a_kill_storm_loses_no_result() -> Result<(), Failed> {
    let pool = quiet::<Nap>(2)
        .chunksize(Chunk::Fixed(1))
        .retries(20)
        .build()?;
    let stop = AtomicBool::new(false);
    let (out, kills) = std::thread::scope(|s| {
        // Kill the newest worker as soon as it shows up, many times in a row: replacements
        // die before they are ready, and the pool must still finish every job.
        let storm = s.spawn(|| {
            let mut killed = BTreeSet::new();
            let start = Instant::now();
            while killed.len() < 12 && !stop.load(Ordering::SeqCst) {
                if start.elapsed() > Duration::from_secs(20) {
                    break;
                }
                if let Some(&pid) = pool
                    .pids()
                    .iter()
                    .rev()
                    .find(|p| **p != 0 && !killed.contains(*p))
                {
                    kill(pid, libc::SIGKILL);
                    killed.insert(pid);
                }
                std::thread::sleep(Duration::from_millis(3));
            }
            killed.len()
        });
        let out = pool.map((0..300).map(|pos| Nap { pos, ms: 2 }));
        stop.store(true, Ordering::SeqCst);
        (out, storm.join().unwrap_or(0))
    });
    let out = out?;
    check(out.iter().map(|(p, _)| *p).eq(0..300), || {
        format!("results lost or out of order after {kills} kills")
    })?;
    check(kills >= 3, || format!("only {kills} kills happened"))?;
    let stats = pool.stats();
    check(stats.workers_started as usize > kills, || {
        format!("{kills} kills but {stats:?}")
    })?;
    Ok(())
}

fn grandchildren_die_with_their_worker() -> Result<(), Failed> {
    // terminate()
    let pool = quiet::<SpawnSleep>(1).build()?;
    let h = pool.apply_async(SpawnSleep { then_ms: 60_000 });
    let sleep = {
        // The grandchild is a child of the worker.
        let worker = pool.pids()[0];
        let start = Instant::now();
        loop {
            if let Some(&s) = children(worker).iter().next() {
                break s;
            }
            check(start.elapsed() < Duration::from_secs(30), || {
                "the task never started its program".into()
            })?;
            std::thread::sleep(Duration::from_millis(5));
        }
    };
    pool.terminate();
    drop(h);
    check(gone_within(sleep, Duration::from_secs(30)), || {
        format!("sleep pid {sleep} survived terminate()")
    })?;
    drop(pool);
    // A job timeout.
    let pool = quiet::<SpawnSleep>(1)
        .job_timeout(Duration::from_millis(300))
        .build()?;
    let worker = pool.pids()[0];
    let h = pool.apply_async(SpawnSleep { then_ms: 60_000 });
    let start = Instant::now();
    let sleep = loop {
        if let Some(&s) = children(worker).iter().next() {
            break s;
        }
        check(start.elapsed() < Duration::from_secs(30), || {
            "the task never started its program".into()
        })?;
        std::thread::sleep(Duration::from_millis(5));
    };
    let r = h.get();
    check(r.is_err(), || format!("the job did not time out: {r:?}"))?;
    check(gone_within(sleep, Duration::from_secs(30)), || {
        format!("sleep pid {sleep} survived the job timeout")
    })?;
    drop(pool);
    // A normal drop: the worker exits at end of input, and its group goes with it.
    let pool = quiet::<SpawnSleep>(1).build()?;
    let sleep = pool.apply(SpawnSleep { then_ms: 0 })?;
    check(running(sleep), || "the program was not running".into())?;
    drop(pool);
    check(gone_within(sleep, Duration::from_secs(30)), || {
        format!("sleep pid {sleep} survived dropping the pool")
    })?;
    Ok(())
}

fn grandchildren_die_when_the_coordinator_is_killed() -> Result<(), Failed> {
    // The coordinator here is a `Process` child running a pool of its own.
    let queue = Queue::<(u32, u32)>::new()?;
    let mut child = Process::spawn(SleeperPool {
        out: queue.sender(),
    })?;
    let (worker, sleep) = queue.get_timeout(Duration::from_secs(30))?;
    check(running(worker) && running(sleep), || {
        "the child's pool did not start its program".into()
    })?;
    child.kill()?;
    check(gone_within(worker, Duration::from_secs(30)), || {
        format!("worker {worker} survived its coordinator")
    })?;
    check(gone_within(sleep, Duration::from_secs(30)), || {
        format!("sleep pid {sleep} survived the coordinator's SIGKILL")
    })?;
    Ok(())
}

fn nested_pools_are_refused_but_a_process_child_may_run_one() -> Result<(), Failed> {
    let pool = quiet::<Nested>(1).build()?;
    let msg = pool.apply(Nested)?;
    check(msg.contains("nested pools"), || {
        format!("inside a task: {msg}")
    })?;
    let queue = Queue::<Result<Vec<u64>, String>>::new()?;
    let mut child = Process::spawn(PoolInChild {
        out: queue.sender(),
    })?;
    let got = queue.get_timeout(Duration::from_secs(30))?;
    check(got == Ok((0..6).collect()), || {
        format!("the child's pool: {got:?}")
    })?;
    let status = child.join()?;
    check(status.success(), || format!("child ended {status:?}"))?;
    Ok(())
}

fn main() {
    procpool::serve_if_worker(registry());
    let mut args = Arguments::from_args();
    // One at a time: these tests kill processes and count children.
    args.test_threads = Some(1);
    let tests = vec![
        watchdog(
            "a_worker_frozen_at_start_is_replaced_and_the_pool_starts_anyway",
            120,
            a_worker_frozen_at_start_is_replaced_and_the_pool_starts_anyway,
        ),
        watchdog(
            "workers_that_never_greet_make_the_pool_give_up_with_the_reason",
            120,
            workers_that_never_greet_make_the_pool_give_up_with_the_reason,
        ),
        watchdog(
            "a_frozen_replacement_is_killed_at_its_ready_deadline",
            120,
            a_frozen_replacement_is_killed_at_its_ready_deadline,
        ),
        watchdog(
            "a_kill_storm_loses_no_result",
            120,
            a_kill_storm_loses_no_result,
        ),
        watchdog(
            "grandchildren_die_with_their_worker",
            180,
            grandchildren_die_with_their_worker,
        ),
        watchdog(
            "grandchildren_die_when_the_coordinator_is_killed",
            120,
            grandchildren_die_when_the_coordinator_is_killed,
        ),
        watchdog(
            "nested_pools_are_refused_but_a_process_child_may_run_one",
            120,
            nested_pools_are_refused_but_a_process_child_may_run_one,
        ),
    ];
    libtest_mimic::run(&args, tests).exit();
}
