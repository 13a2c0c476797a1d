//! The pool against real worker processes (and its thread and serial twins): ordering,
//! laziness, faults that really kill, and nothing left in the process table.
//!
//! A custom harness (libtest-mimic), because this binary is also the worker: `main` hands
//! it to `serve_if_worker` before anything else. Every test runs under a watchdog, so a
//! hang is a failure, never a stuck CI job.

use libtest_mimic::{Arguments, Failed};
use procpool::{
    Backend, Chunk, Error, JobError, Pool, Process, Queue, QueueSender, Registry, SharedSlice,
    Target, Task,
};
use rand::RngExt;
use serde::{Deserialize, Serialize};
use std::cell::Cell;
use std::collections::BTreeSet;
use std::io::Write;
use std::time::{Duration, Instant};

mod common;
use common::{check, watchdog};

// ----- tasks ---------------------------------------------------------------------------

/// Sleeps, then echoes its position (and reports its pid).
#[derive(Serialize, Deserialize)]
struct Nap {
    pos: u64,
    micros: u64,
}
impl Task for Nap {
    const NAME: &'static str = "nap";
    type Context = ();
    type Output = (u64, u32);
    fn run(self, _: &()) -> (u64, u32) {
        std::thread::sleep(Duration::from_micros(self.micros));
        (self.pos, std::process::id())
    }
}

/// Misbehaves on request.
#[derive(Serialize, Deserialize, Clone, Copy)]
enum Trouble {
    Fine(u64),
    Panic(u64),
    Abort(u64),
    Exit(u64, i32),
    SleepMs(u64),
}
impl Task for Trouble {
    const NAME: &'static str = "trouble";
    type Context = ();
    type Output = u64;
    fn run(self, _: &()) -> u64 {
        match self {
            Trouble::Fine(x) => x,
            Trouble::Panic(x) => panic!("job {x} panicked on purpose"),
            Trouble::Abort(x) => {
                eprintln!("about to abort on job {x}");
                let _ = std::io::stderr().flush();
                std::process::abort()
            }
            Trouble::Exit(x, code) => {
                eprintln!("exiting with {code} on job {x}");
                std::process::exit(code)
            }
            Trouble::SleepMs(ms) => {
                std::thread::sleep(Duration::from_millis(ms));
                ms
            }
        }
    }
}

/// A float kernel using a context: weighted sum of the context with a job scalar.
#[derive(Serialize, Deserialize)]
struct Weigh(f64);
impl Task for Weigh {
    const NAME: &'static str = "weigh";
    type Context = Vec<f64>;
    type Output = f64;
    fn run(self, ctx: &Vec<f64>) -> f64 {
        ctx.iter().map(|x| (x * self.0).sin()).sum()
    }
}

/// Reads a context shared with the workers: where its array lives and what it holds.
#[derive(Serialize, Deserialize)]
struct Inspect;

/// A context with one large shared array.
#[derive(Serialize, Deserialize, Clone, Debug)]
struct BigCtx {
    data: SharedSlice<u64>,
}

/// What a worker saw of its context.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
struct Seen {
    pid: u32,
    /// Inode of the object the array is mapped from (None: not a mapping of a file).
    inode: Option<u64>,
    shared: bool,
    sum: u64,
}

/// The inode of the file or shared object mapped at `addr` in this process, from
/// /proc/self/maps.
fn mapped_inode(addr: usize) -> Option<u64> {
    let maps = std::fs::read_to_string("/proc/self/maps").ok()?;
    maps.lines().find_map(|line| {
        let mut f = line.split_whitespace();
        let (lo, hi) = f.next()?.split_once('-')?;
        let (lo, hi) = (
            usize::from_str_radix(lo, 16).ok()?,
            usize::from_str_radix(hi, 16).ok()?,
        );
        let inode: u64 = f.nth(3)?.parse().ok()?;
        (lo <= addr && addr < hi && inode != 0).then_some(inode)
    })
}

impl Task for Inspect {
    const NAME: &'static str = "inspect";
    type Context = BigCtx;
    type Output = Seen;
    fn run(self, ctx: &BigCtx) -> Seen {
        Seen {
            pid: std::process::id(),
            inode: mapped_inode(ctx.data.as_ptr() as usize),
            shared: ctx.data.is_shared(),
            sum: ctx.data.iter().fold(0u64, |a, &x| a.wrapping_add(x)),
        }
    }
}

/// Sums a byte context (a plain `Vec`, no shared slices).
#[derive(Serialize, Deserialize)]
struct SumBytes;
impl Task for SumBytes {
    const NAME: &'static str = "sum_bytes";
    type Context = Vec<u8>;
    type Output = u64;
    fn run(self, ctx: &Vec<u8>) -> u64 {
        ctx.iter().map(|&b| u64::from(b)).sum()
    }
}

/// Lists the open descriptors of a program the task starts.
#[derive(Serialize, Deserialize)]
struct ChildFds;
impl Task for ChildFds {
    const NAME: &'static str = "child_fds";
    type Context = ();
    type Output = String;
    fn run(self, _: &()) -> String {
        std::process::Command::new("sh")
            .args(["-c", "for f in /proc/$$/fd/*; do readlink $f; done"])
            .output()
            .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
            .unwrap_or_else(|e| format!("error: {e}"))
    }
}

/// A task that is deliberately missing from the registry.
#[derive(Serialize, Deserialize)]
struct Unregistered;
impl Task for Unregistered {
    const NAME: &'static str = "unregistered";
    type Context = ();
    type Output = ();
    fn run(self, _: &()) {}
}

/// The seed's `rand_string(length, pos, output)`.
#[derive(Serialize, Deserialize)]
struct RandString {
    len: usize,
    pos: usize,
    output: QueueSender<(usize, String)>,
}
impl Target for RandString {
    const NAME: &'static str = "rand_string";
    fn run(self) {
        let s: String = rand::rng()
            .sample_iter(rand::distr::Alphanumeric)
            .take(self.len)
            .map(char::from)
            .collect();
        let _ = self.output.put(&(self.pos, s));
    }
}

fn registry() -> Registry {
    Registry::new()
        .task::<Nap>()
        .task::<Trouble>()
        .task::<Weigh>()
        .task::<ChildFds>()
        .task::<Inspect>()
        .task::<SumBytes>()
        .target::<RandString>()
}

// ----- helpers -------------------------------------------------------------------------

fn quiet<T: Task>(backend: Backend, workers: usize) -> procpool::PoolBuilder<T> {
    Pool::<T>::builder()
        .backend(backend)
        .workers(workers)
        .forward_worker_output(false)
}

/// Whether `pid` is still in the process table (a zombie counts: it was not reaped).
fn alive(pid: u32) -> bool {
    std::path::Path::new(&format!("/proc/{pid}")).exists()
}

// ----- tests ---------------------------------------------------------------------------

fn ordering_under_random_delays() -> Result<(), Failed> {
    for backend in Backend::ALL {
        let pool = quiet::<Nap>(backend, 3)
            .chunksize(Chunk::Fixed(1))
            .build()?;
        let mut rng = rand::rng();
        let jobs: Vec<Nap> = (0..60)
            .map(|pos| Nap {
                pos,
                micros: rng.random_range(0..3000),
            })
            .collect();
        let out = pool.map(jobs)?;
        let positions: Vec<u64> = out.iter().map(|(p, _)| *p).collect();
        check(positions == (0..60).collect::<Vec<_>>(), || {
            format!("{backend}: out of order: {positions:?}")
        })?;
        if backend == Backend::Process {
            let pids: BTreeSet<u32> = out.iter().map(|(_, pid)| *pid).collect();
            check(pids.len() > 1, || {
                format!("all jobs ran in one process: {pids:?}")
            })?;
            check(!pids.contains(&std::process::id()), || {
                "a job ran in the parent".into()
            })?;
        }
    }
    Ok(())
}

fn imap_unordered_tags_every_position_once() -> Result<(), Failed> {
    for backend in Backend::ALL {
        let pool = quiet::<Nap>(backend, 3).build()?;
        let mut rng = rand::rng();
        let jobs = (0..80).map(move |pos| Nap {
            pos,
            micros: rng.random_range(0..2000),
        });
        let mut seen = BTreeSet::new();
        for tagged in pool.imap_unordered(jobs) {
            let (echo, pid) = tagged.result?;
            check(echo == tagged.pos, || {
                format!("{backend}: result {echo} tagged with pos {}", tagged.pos)
            })?;
            let worker = tagged.worker.ok_or("no worker on a computed result")?;
            check(worker.pid == pid, || {
                format!("{backend}: tagged pid {} but ran in {pid}", worker.pid)
            })?;
            check(seen.insert(tagged.pos), || {
                format!("{backend}: pos {} twice", tagged.pos)
            })?;
        }
        check(seen.len() == 80, || {
            format!("{backend}: {} results, expected 80", seen.len())
        })?;
    }
    Ok(())
}

fn endless_imap_take_computes_a_bounded_number() -> Result<(), Failed> {
    for backend in Backend::ALL {
        let window = 8;
        let pool = quiet::<Nap>(backend, 2).window(window).build()?;
        let pulled = Cell::new(0u64);
        let endless = (0u64..).map(|pos| {
            pulled.set(pulled.get() + 1);
            Nap { pos, micros: 100 }
        });
        let k = 25;
        let first: Vec<u64> = pool
            .imap(endless)
            .take(k)
            .map(|r| r.map(|(p, _)| p))
            .collect::<Result<_, _>>()?;
        check(first == (0..k as u64).collect::<Vec<_>>(), || {
            format!("{backend}: {first:?}")
        })?;
        let bound = k as u64 + window as u64;
        check(pulled.get() <= bound, || {
            format!(
                "{backend}: pulled {} inputs for {k} results (window {window})",
                pulled.get()
            )
        })?;
        let done = pool.stats().jobs_done;
        check(done <= bound, || {
            format!("{backend}: computed {done} jobs for {k} results")
        })?;
    }
    Ok(())
}

fn three_backends_give_identical_bits() -> Result<(), Failed> {
    let ctx: Vec<f64> = (0..5000).map(|i| (i as f64).sqrt() * 0.37).collect();
    let jobs = || (0..200).map(|i| Weigh(1.0 + i as f64 / 97.0));
    let mut outputs = Vec::new();
    for backend in Backend::ALL {
        let pool = quiet::<Weigh>(backend, 2).context(ctx.clone()).build()?;
        let out: Vec<u64> = pool.map(jobs())?.into_iter().map(f64::to_bits).collect();
        outputs.push((backend, out));
    }
    let (_, first) = &outputs[0];
    for (backend, out) in &outputs[1..] {
        check(out == first, || format!("{backend} differs from serial"))?;
    }
    Ok(())
}

/// A map far larger than what the pool queues at once (it feeds the input as workers
/// free up) returns every result in order on each backend, and a terminate from another
/// thread while the input is still being fed ends it with an error, not a hang.
fn a_big_map_is_fed_as_it_runs_and_can_be_terminated() -> Result<(), Failed> {
    const N: u64 = 60_000;
    for backend in Backend::ALL {
        let pool = quiet::<Trouble>(backend, 2).build()?;
        let out = pool.map((0..N).map(Trouble::Fine))?;
        check(out.iter().copied().eq(0..N), || {
            format!("{backend}: {} results, not 0..{N} in order", out.len())
        })?;
    }
    let pool = quiet::<Nap>(Backend::Process, 2).build()?;
    let terminator = pool.terminator();
    let stopper = std::thread::spawn(move || {
        std::thread::sleep(Duration::from_millis(300));
        terminator.terminate();
    });
    // 100 000 jobs of 100 µs: about 5 s on two workers, far longer than the 300 ms.
    let r = pool.map((0..100_000).map(|pos| Nap { pos, micros: 100 }));
    let _ = stopper.join();
    match r {
        Err(Error::Job {
            error: JobError::Terminated,
            ..
        }) => Ok(()),
        Err(e) => Err(format!("terminated map: unexpected error {e}").into()),
        Ok(v) => Err(format!("terminated map returned all {} results", v.len()).into()),
    }
}

fn context_is_sent_once_per_worker() -> Result<(), Failed> {
    let ctx: Vec<f64> = vec![0.5; 100_000]; // 800 kB
    let n = 300;
    // Shared (the default above 64 KiB): held once in shared memory, nothing on the sockets.
    let pool = quiet::<Weigh>(Backend::Process, 2)
        .context(ctx.clone())
        .build()?;
    let out = pool.map((0..n).map(|i| Weigh(i as f64)))?;
    check(out.len() == n, || "lost results".into())?;
    let stats = pool.stats();
    check(stats.context_shared_bytes >= 800_000, || {
        format!(
            "{} shared bytes for an 800 kB context",
            stats.context_shared_bytes
        )
    })?;
    check(stats.bytes_sent < 100_000, || {
        format!(
            "{} bytes on the sockets for {n} small jobs",
            stats.bytes_sent
        )
    })?;
    drop(pool);
    // Inline: once per worker, never per job.
    let pool = quiet::<Weigh>(Backend::Process, 2)
        .share_context_above(usize::MAX)
        .context(ctx)
        .build()?;
    let inline = pool.map((0..n).map(|i| Weigh(i as f64)))?;
    check(inline == out, || {
        "inline and shared contexts gave other results".into()
    })?;
    let sent = pool.stats().bytes_sent;
    check(sent < 2 * 800_000 + 100_000, || {
        format!("{sent} bytes sent for {n} jobs")
    })?;
    check(sent > 2 * 800_000, || {
        format!("{sent} bytes: context not sent to both workers?")
    })?;
    Ok(())
}

fn panic_fails_only_that_job() -> Result<(), Failed> {
    for backend in Backend::ALL {
        let pool = quiet::<Trouble>(backend, 2).build()?;
        let jobs = (0..20).map(|i| {
            if i == 7 {
                Trouble::Panic(i)
            } else {
                Trouble::Fine(i)
            }
        });
        let results: Vec<Result<u64, Error>> = pool.imap(jobs).collect();
        for (i, r) in results.iter().enumerate() {
            match (i, r) {
                (
                    7,
                    Err(Error::Job {
                        pos: 7,
                        error:
                            JobError::Panicked {
                                message,
                                location,
                                pid,
                                ..
                            },
                    }),
                ) => {
                    check(message == "job 7 panicked on purpose", || {
                        format!("message {message:?}")
                    })?;
                    // Where it panicked, and in which process.
                    check(
                        location
                            .as_deref()
                            .is_some_and(|l| l.contains("tests/pool.rs:")),
                        || format!("{backend}: location {location:?}"),
                    )?;
                    let worker = backend == Backend::Process;
                    check((*pid != std::process::id()) == worker, || {
                        format!("{backend}: pid {pid}")
                    })?;
                }
                (7, other) => return Err(format!("{backend}: job 7 gave {other:?}").into()),
                (_, Ok(v)) => check(*v == i as u64, || format!("{backend}: job {i} gave {v}"))?,
                (_, Err(e)) => return Err(format!("{backend}: job {i} failed: {e}").into()),
            }
        }
        check(pool.apply(Trouble::Fine(99))? == 99, || {
            "pool unusable after a panic".into()
        })?;
        let e = pool.apply(Trouble::Panic(1)).unwrap_err();
        check(e.to_string().contains("panicked on purpose"), || {
            format!("apply error {e}")
        })?;
    }
    Ok(())
}

fn a_panic_carries_its_backtrace_when_asked() -> Result<(), Failed> {
    let pool = quiet::<Trouble>(Backend::Process, 1)
        .env("RUST_BACKTRACE", "1")
        .build()?;
    match pool.apply(Trouble::Panic(1)) {
        Err(Error::Failed(JobError::Panicked { backtrace, .. })) => {
            let bt = backtrace.ok_or("no backtrace with RUST_BACKTRACE=1")?;
            check(bt.contains("run"), || format!("backtrace:\n{bt}"))?;
        }
        other => return Err(format!("apply gave {other:?}").into()),
    }
    // Without it, none is captured (capturing costs).
    let pool = quiet::<Trouble>(Backend::Process, 1)
        .env("RUST_BACKTRACE", "0")
        .build()?;
    match pool.apply(Trouble::Panic(2)) {
        Err(Error::Failed(JobError::Panicked {
            backtrace: None, ..
        })) => Ok(()),
        other => Err(format!("apply gave {other:?}").into()),
    }
}

fn map_runs_every_job_and_returns_the_first_failure() -> Result<(), Failed> {
    for backend in Backend::ALL {
        let pool = quiet::<Trouble>(backend, 2).build()?;
        let jobs = (0..50).map(|i| {
            if i == 3 || i == 30 {
                Trouble::Panic(i)
            } else {
                Trouble::Fine(i)
            }
        });
        match pool.map(jobs) {
            Err(Error::Job {
                pos: 3,
                error: JobError::Panicked { .. },
            }) => {}
            other => return Err(format!("{backend}: map gave {other:?}").into()),
        }
        // Like Python's Pool.map: a failure does not withdraw the other jobs.
        let stats = pool.stats();
        check(stats.jobs_done == 50 && stats.jobs_failed == 2, || {
            format!("{backend}: {stats:?}")
        })?;
    }
    Ok(())
}

fn sigkill_of_a_worker_is_diagnosed_without_hanging() -> Result<(), Failed> {
    // One job per worker at a time, so the victim is known to be running the job it holds
    // (a worker killed holding several makes them suspects, re-run alone: see the next test).
    let pool = quiet::<Trouble>(Backend::Process, 2)
        .retries(0)
        .chunksize(Chunk::Fixed(1))
        .window(2)
        .build()?;
    let victim = pool.pids()[0];
    let jobs = (0..30).map(|_| Trouble::SleepMs(20));
    let mut it = pool.imap(jobs);
    // Let work start, then kill a busy worker from outside.
    let first = it.next().ok_or("no first result")?;
    check(first.is_ok(), || format!("first result {first:?}"))?;
    // SAFETY: kill(2) has no memory effects; the pid is a live child of this process.
    let rc = unsafe { libc::kill(victim as i32, libc::SIGKILL) };
    check(rc == 0, || "kill failed".into())?;
    let rest: Vec<Result<u64, Error>> = it.collect();
    check(rest.len() == 29, || {
        format!("{} results after the first, expected 29", rest.len())
    })?;
    let failures: Vec<&Error> = rest.iter().filter_map(|r| r.as_ref().err()).collect();
    check(failures.len() == 1, || {
        format!("expected exactly the held job to fail, got {failures:?}")
    })?;
    let msg = failures[0].to_string();
    check(msg.contains(&format!("pid {victim}")), || {
        format!("no pid in {msg:?}")
    })?;
    check(msg.contains("SIGKILL (9)"), || {
        format!("no signal in {msg:?}")
    })?;
    check(
        matches!(
            failures[0],
            Error::Job {
                error: JobError::WorkerDied { attempts: 1, .. },
                ..
            }
        ),
        || format!("{:?}", failures[0]),
    )?;
    check(!alive(victim), || {
        format!("killed worker {victim} was not reaped")
    })?;
    check(pool.pids().len() == 2, || {
        "the dead worker was not replaced".into()
    })?;
    Ok(())
}

fn a_worker_killed_holding_several_jobs_blames_none_of_them() -> Result<(), Failed> {
    // retries(0): any blamed crash fails its job. A worker killed from outside while it
    // holds several jobs blames none: they are re-run alone, and all succeed.
    let pool = quiet::<Trouble>(Backend::Process, 1)
        .retries(0)
        .chunksize(Chunk::Fixed(4))
        .build()?;
    let victim = pool.pids()[0];
    let handle = pool.map_async((0..8).map(|_| Trouble::SleepMs(50)));
    std::thread::sleep(Duration::from_millis(75));
    // SAFETY: kill(2) has no memory effects; the pid is a live child of this process.
    unsafe { libc::kill(victim as i32, libc::SIGKILL) };
    let out = handle.get()?;
    check(out == vec![50; 8], || format!("{out:?}"))?;
    let stats = pool.stats();
    check(
        stats.workers_lost == 1 && stats.jobs_redispatched >= 2,
        || format!("{stats:?}"),
    )?;
    Ok(())
}

fn sigkill_with_retries_loses_nothing() -> Result<(), Failed> {
    let pool = quiet::<Trouble>(Backend::Process, 2)
        .chunksize(Chunk::Fixed(1))
        .build()?;
    let victim = pool.pids()[1];
    let handle = pool.map_async((0..40).map(|_| Trouble::SleepMs(10)));
    std::thread::sleep(Duration::from_millis(50));
    // SAFETY: as above.
    unsafe { libc::kill(victim as i32, libc::SIGKILL) };
    let out = handle.get()?;
    check(out.len() == 40 && out.iter().all(|&v| v == 10), || {
        format!("{out:?}")
    })?;
    let stats = pool.stats();
    check(stats.workers_lost == 1, || format!("{stats:?}"))?;
    Ok(())
}

fn a_crashing_job_fails_after_its_retries_with_stderr() -> Result<(), Failed> {
    let pool = quiet::<Trouble>(Backend::Process, 2).retries(2).build()?;
    let jobs: Vec<Trouble> = (0..12)
        .map(|i| {
            if i == 5 {
                Trouble::Abort(i)
            } else {
                Trouble::Fine(i)
            }
        })
        .collect();
    let results: Vec<Result<u64, Error>> = pool.imap(jobs).collect();
    for (i, r) in results.iter().enumerate() {
        if i == 5 {
            let Err(Error::Job {
                pos: 5,
                error:
                    JobError::WorkerDied {
                        attempts,
                        status,
                        stderr_tail,
                        ..
                    },
            }) = r
            else {
                return Err(format!("job 5 gave {r:?}").into());
            };
            // Three charged crashes (retries 2), plus one uncharged run if it first died
            // among other jobs.
            check(*attempts == 3 || *attempts == 4, || {
                format!("attempts {attempts}")
            })?;
            check(status.contains("SIGABRT (6)"), || {
                format!("status {status:?}")
            })?;
            check(stderr_tail.contains("about to abort on job 5"), || {
                format!("tail {stderr_tail:?}")
            })?;
        } else {
            check(matches!(r, Ok(v) if *v == i as u64), || {
                format!("job {i}: {r:?}")
            })?;
        }
    }
    // Three blamed crashes; one more if the first struck while the worker held several
    // jobs (then nobody is blamed and they are re-run one by one).
    let stats = pool.stats();
    check((3..=4).contains(&stats.workers_lost), || {
        format!("{stats:?}")
    })?;
    let e = pool.apply(Trouble::Exit(1, 42)).unwrap_err();
    check(e.to_string().contains("exited with code 42"), || {
        e.to_string()
    })?;
    Ok(())
}

fn job_timeout_kills_and_replaces_the_worker() -> Result<(), Failed> {
    for backend in [Backend::Process, Backend::Thread] {
        let pool = quiet::<Trouble>(backend, 2)
            .job_timeout(Duration::from_millis(300))
            .chunksize(Chunk::Fixed(1))
            .build()?;
        let before = pool.pids();
        let jobs = vec![
            Trouble::SleepMs(5),
            Trouble::SleepMs(10_000),
            Trouble::Fine(3),
            Trouble::SleepMs(5),
        ];
        let t = Instant::now();
        let results: Vec<Result<u64, Error>> = pool.imap(jobs).collect();
        check(t.elapsed() < Duration::from_secs(5), || {
            format!("{backend}: took {:?}", t.elapsed())
        })?;
        check(
            matches!(
                &results[1],
                Err(Error::Job {
                    pos: 1,
                    error: JobError::TimedOut { .. }
                })
            ),
            || format!("{backend}: {:?}", results[1]),
        )?;
        check(results.iter().filter(|r| r.is_ok()).count() == 3, || {
            format!("{backend}: {results:?}")
        })?;
        if backend == Backend::Process {
            let after = pool.pids();
            check(after.len() == 2 && after != before, || {
                format!("before {before:?} after {after:?}")
            })?;
            for pid in before.iter().filter(|p| !after.contains(p)) {
                check(!alive(*pid), || {
                    format!("timed-out worker {pid} still exists")
                })?;
            }
        }
    }
    Ok(())
}

fn drop_and_terminate_leave_no_process() -> Result<(), Failed> {
    let pool = quiet::<Trouble>(Backend::Process, 3).build()?;
    let pids = pool.pids();
    check(pids.iter().all(|p| alive(*p)), || {
        "workers not running".into()
    })?;
    pool.map((0..10).map(Trouble::Fine))?;
    drop(pool);
    for pid in &pids {
        check(!alive(*pid), || format!("worker {pid} left after drop"))?;
    }

    let pool = quiet::<Trouble>(Backend::Process, 2).build()?;
    let pids = pool.pids();
    let handle = pool.map_async((0..6).map(|_| Trouble::SleepMs(5_000)));
    std::thread::sleep(Duration::from_millis(100));
    let t = Instant::now();
    pool.terminate();
    check(t.elapsed() < Duration::from_secs(3), || {
        format!("terminate took {:?}", t.elapsed())
    })?;
    match handle.get() {
        Err(Error::Job {
            error: JobError::Terminated,
            ..
        }) => {}
        other => return Err(format!("after terminate: {other:?}").into()),
    }
    for pid in &pids {
        check(!alive(*pid), || {
            format!("worker {pid} left after terminate")
        })?;
    }
    check(
        matches!(pool.apply(Trouble::Fine(1)), Err(Error::Closed)),
        || "terminated pool took work".into(),
    )?;
    Ok(())
}

fn async_handles_behave_like_pythons() -> Result<(), Failed> {
    for backend in Backend::ALL {
        let pool = quiet::<Trouble>(backend, 2).build()?;
        let handles: Vec<_> = (1..=6)
            .map(|x| pool.apply_async(Trouble::Fine(x * x * x)))
            .collect();
        let got: Vec<u64> = handles
            .into_iter()
            .map(|h| h.get())
            .collect::<Result<_, _>>()?;
        check(got == [1, 8, 27, 64, 125, 216], || {
            format!("{backend}: {got:?}")
        })?;

        let slow = pool.apply_async(Trouble::SleepMs(300));
        if backend != Backend::Serial {
            check(!slow.ready(), || format!("{backend}: ready too early"))?;
            check(!slow.wait_timeout(Duration::from_millis(10)), || {
                "wait_timeout lied".into()
            })?;
        }
        slow.wait();
        check(slow.ready(), || "not ready after wait".into())?;
        check(slow.get()? == 300, || "wrong value".into())?;

        let many = pool.map_async((0..50).map(Trouble::Fine));
        // The pool works in the background while nobody waits.
        std::thread::sleep(Duration::from_millis(200));
        check(many.ready(), || {
            format!("{backend}: map_async made no progress in the background")
        })?;
        check(many.get()? == (0..50).collect::<Vec<_>>(), || {
            "map_async order".into()
        })?;

        let late = pool.apply_async(Trouble::SleepMs(2_000));
        match late.get_timeout(Duration::from_millis(50)) {
            Err(Error::Timeout(_)) => {}
            other if backend == Backend::Serial => drop(other),
            other => return Err(format!("{backend}: get_timeout gave {other:?}").into()),
        }
    }
    Ok(())
}

fn unknown_task_is_refused_at_start_up() -> Result<(), Failed> {
    let err = quiet::<Unregistered>(Backend::Process, 2)
        .build()
        .unwrap_err();
    let msg = err.to_string();
    check(
        msg.contains(
            "task \"unregistered\" is not in the Registry given to procpool::serve_if_worker",
        ),
        || msg.clone(),
    )?;
    check(
        msg.contains("nap, rand_string, sum_bytes, trouble, weigh"),
        || msg.clone(),
    )?;
    Ok(())
}

fn wait_ready_returns_once_every_worker_can_take_jobs() -> Result<(), Failed> {
    for (backend, workers) in [
        (Backend::Process, 3),
        (Backend::Thread, 3),
        (Backend::Serial, 1),
    ] {
        let pool = quiet::<Nap>(backend, workers)
            .chunksize(Chunk::Fixed(1))
            .build()?;
        let ready = pool.wait_ready(Duration::from_secs(60));
        check(ready == workers, || {
            format!("{backend}: {ready} of {workers} workers ready")
        })?;
        let timeline = pool.timeline();
        let marked = timeline
            .workers
            .iter()
            .filter(|w| w.ready.is_some())
            .count();
        check(marked == workers, || {
            format!("{backend}: the timeline marks {marked} of {workers} ready")
        })?;
        // Every worker ready: even a short map of tiny jobs spreads over them.
        if backend == Backend::Process {
            let pids: std::collections::BTreeSet<u32> = pool
                .map((0..6).map(|pos| Nap { pos, micros: 0 }))?
                .iter()
                .map(|&(_, pid)| pid)
                .collect();
            check(pids.len() > 1, || {
                format!("six jobs on three ready workers all ran in {pids:?}")
            })?;
        }
    }
    Ok(())
}

fn bad_settings_are_errors_naming_the_value() -> Result<(), Failed> {
    let e = quiet::<Trouble>(Backend::Process, 0).build().unwrap_err();
    check(e.to_string().contains("got 0"), || e.to_string())?;
    let e = quiet::<Trouble>(Backend::Process, 100_000)
        .build()
        .unwrap_err();
    check(e.to_string().contains("got 100000"), || e.to_string())?;
    let e = quiet::<Trouble>(Backend::Thread, 1)
        .chunksize(Chunk::Fixed(0))
        .build()
        .unwrap_err();
    check(e.to_string().contains("chunksize"), || e.to_string())?;
    let e = quiet::<Weigh>(Backend::Thread, 1).build().unwrap_err();
    check(e.to_string().contains("needs a context"), || e.to_string())?;
    let e = "auto2".parse::<Chunk>().unwrap_err();
    check(e.to_string().contains("\"auto2\""), || e.to_string())?;
    Ok(())
}

fn auto_chunksize_is_measured_and_reported() -> Result<(), Failed> {
    let pool = quiet::<Trouble>(Backend::Process, 2).build()?;
    let out = pool.map((0..20_000).map(Trouble::Fine))?;
    check(out.len() == 20_000, || "lost results".into())?;
    let choice = pool
        .chunk_choice()
        .ok_or("no chunk choice after 20000 jobs")?;
    check(choice.chunksize > 1, || format!("{choice:?}"))?;
    check(choice.chunksize <= 20_000 / 8, || {
        format!("chunk larger than a quarter share: {choice:?}")
    })?;
    check(choice.reason.contains("median"), || choice.reason.clone())?;
    Ok(())
}

fn queue_and_processes_like_the_seed() -> Result<(), Failed> {
    let output = Queue::<(usize, String)>::new()?;
    let mut procs = (0..4)
        .map(|pos| {
            Process::spawn(RandString {
                len: 5,
                pos,
                output: output.sender(),
            })
        })
        .collect::<Result<Vec<_>, _>>()?;
    let pids: Vec<u32> = procs.iter().map(Process::pid).collect();
    for p in &mut procs {
        let status = p.join()?;
        check(status.success(), || {
            format!("child {} ended {status}", p.pid())
        })?;
        check(!p.is_alive(), || "joined process alive".into())?;
    }
    // Joined before reading: the queue drained the children already, no deadlock.
    let mut results: Vec<(usize, String)> = output.iter().take(4).collect();
    results.sort();
    let positions: Vec<usize> = results.iter().map(|r| r.0).collect();
    check(positions == [0, 1, 2, 3], || format!("{results:?}"))?;
    check(
        results
            .iter()
            .all(|(_, s)| s.len() == 5 && s.chars().all(|c| c.is_ascii_alphanumeric())),
        || format!("{results:?}"),
    )?;
    for pid in pids {
        check(!alive(pid), || format!("process {pid} not reaped"))?;
    }
    check(output.try_get().is_none(), || "extra values".into())?;
    check(
        matches!(
            output.get_timeout(Duration::from_millis(20)),
            Err(Error::Timeout(_))
        ),
        || "get_timeout on an empty queue".into(),
    )?;
    Ok(())
}

fn process_kill_and_drop_reap() -> Result<(), Failed> {
    let q = Queue::<(usize, String)>::new()?;
    let mut p = Process::spawn(RandString {
        len: 3,
        pos: 0,
        output: q.sender(),
    })?;
    let _ = p.join()?;
    let status = p.kill()?;
    check(status.success(), || {
        "kill after exit changed the status".into()
    })?;
    let err = Process::spawn(RandString {
        len: 1,
        pos: 0,
        output: q.sender(),
    })
    .map(|_| ());
    check(err.is_ok(), || format!("{err:?}"))?;
    Ok(())
}

fn a_slow_consumer_keeps_memory_bounded_by_the_window() -> Result<(), Failed> {
    for backend in [Backend::Process, Backend::Thread] {
        let window = 16;
        let pool = quiet::<Trouble>(backend, 2).window(window).build()?;
        let pulled = Cell::new(0u64);
        let input = (0u64..300).map(|i| {
            pulled.set(pulled.get() + 1);
            Trouble::Fine(i)
        });
        let mut taken = 0u64;
        for r in pool.imap(input) {
            check(r? == taken, || {
                format!("{backend}: out of order at {taken}")
            })?;
            taken += 1;
            // Workers are much faster than this consumer; they must not run ahead.
            check(pulled.get() <= taken + window as u64, || {
                format!(
                    "{backend}: pulled {} with only {taken} taken (window {window})",
                    pulled.get()
                )
            })?;
            if taken.is_multiple_of(50) {
                std::thread::sleep(Duration::from_millis(20));
                let done = pool.stats().jobs_done;
                check(done <= taken + window as u64, || {
                    format!("{backend}: {done} results held for {taken} taken (window {window})")
                })?;
            }
        }
        check(taken == 300, || format!("{backend}: {taken} results"))?;
    }
    Ok(())
}

/// Resident memory of this process, in bytes.
fn rss() -> u64 {
    let statm = std::fs::read_to_string("/proc/self/statm").unwrap_or_default();
    let pages: u64 = statm
        .split_whitespace()
        .nth(1)
        .and_then(|p| p.parse().ok())
        .unwrap_or(0);
    pages * 4096
}

fn soak_empty_jobs_through_two_workers() -> Result<(), Failed> {
    // Kept short in CI; PROCPOOL_SOAK_JOBS=1000000 for the full soak.
    let n: u64 = std::env::var("PROCPOOL_SOAK_JOBS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(200_000);
    let pool = quiet::<Trouble>(Backend::Process, 2).build()?;
    // Warm up, so the baseline includes the pool's steady-state buffers.
    let _ = pool.map((0..20_000).map(Trouble::Fine))?;
    let before = rss();
    let mut expected = 0u64;
    for r in pool.imap((0..n).map(Trouble::Fine)) {
        let v = r?;
        check(v == expected, || {
            format!("result {v} at position {expected}")
        })?;
        expected += 1;
    }
    check(expected == n, || format!("{expected} results for {n} jobs"))?;
    let grown = rss().saturating_sub(before);
    check(grown < 64 << 20, || {
        format!("resident memory grew by {} MiB over {n} jobs", grown >> 20)
    })?;
    let stats = pool.stats();
    check(stats.jobs_failed == 0 && stats.workers_lost == 0, || {
        format!("{stats:?}")
    })?;
    Ok(())
}

fn programs_a_task_starts_do_not_inherit_the_workers_socket() -> Result<(), Failed> {
    let pool = quiet::<ChildFds>(Backend::Process, 1).build()?;
    let fds = pool.apply(ChildFds)?;
    check(!fds.contains("error"), || fds.clone())?;
    check(fds.lines().count() >= 3, || {
        format!("no descriptors listed: {fds:?}")
    })?;
    check(!fds.contains("socket:"), || {
        format!("a socket leaked into a task's child: {fds}")
    })?;
    check(fds.lines().next() == Some("/dev/null"), || {
        format!("stdin is not /dev/null: {fds}")
    })?;
    Ok(())
}

fn replacement_workers_map_the_same_shared_object() -> Result<(), Failed> {
    let n = 1usize << 20;
    let data = SharedSlice::<u64>::new_shared(n, |v| {
        for (i, x) in v.iter_mut().enumerate() {
            *x = (i as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15);
        }
    })?;
    let want_sum = data.iter().fold(0u64, |a, &x| a.wrapping_add(x));
    let ours =
        mapped_inode(data.as_ptr() as usize).ok_or("the coordinator's array is not mapped")?;
    let ctx = BigCtx { data };
    for backend in Backend::ALL {
        let pool = quiet::<Inspect>(backend, 2)
            .chunksize(Chunk::Fixed(1))
            .context(ctx.clone())
            .build()?;
        let seen = pool.map((0..4).map(|_| Inspect))?;
        for s in &seen {
            check(s.sum == want_sum && s.shared, || {
                format!("{backend}: {s:?}")
            })?;
            check(s.inode == Some(ours), || {
                format!(
                    "{backend}: worker mapped inode {:?}, the pool's object is {ours}",
                    s.inode
                )
            })?;
        }
        if backend != Backend::Process {
            continue;
        }
        let before: BTreeSet<u32> = pool.pids().into_iter().collect();
        let victim = pool.pids()[0];
        // SAFETY: kill(2) has no memory effects; the pid is a live child of this process.
        check(
            unsafe { libc::kill(victim as i32, libc::SIGKILL) } == 0,
            || "kill failed".into(),
        )?;
        // Until a replacement answers (a batch spreads over both workers): it must map the
        // very same object and read the same.
        let mut replaced = None;
        for _ in 0..200 {
            let batch = pool.map((0..4).map(|_| Inspect))?;
            if let Some(s) = batch.into_iter().find(|s| !before.contains(&s.pid)) {
                replaced = Some(s);
                break;
            }
        }
        let s = replaced.ok_or("no replacement worker answered")?;
        check(
            s.inode == Some(ours) && s.sum == want_sum && s.shared,
            || format!("replacement saw {s:?}, expected inode {ours} and sum {want_sum}"),
        )?;
    }
    Ok(())
}

fn a_context_beyond_the_frame_limit_travels_in_shared_memory() -> Result<(), Failed> {
    let ctx: Vec<u8> = (0..(1u32 << 20)).map(|i| (i % 251) as u8).collect();
    let want: u64 = ctx.iter().map(|&b| u64::from(b)).sum();
    let pool = quiet::<SumBytes>(Backend::Process, 2)
        .max_frame_bytes(4096)
        .context(ctx.clone())
        .build()?;
    let got = pool.map((0..4).map(|_| SumBytes))?;
    check(got.iter().all(|&g| g == want), || {
        format!("{got:?} != {want}")
    })?;
    // Told never to share, the same context cannot travel at all.
    let err = quiet::<SumBytes>(Backend::Process, 1)
        .max_frame_bytes(4096)
        .share_context_above(usize::MAX)
        .context(ctx)
        .build()
        .err()
        .ok_or("a 1 MiB inline context must not fit a 4 KiB frame")?;
    check(err.to_string().contains("does not fit in a frame"), || {
        format!("{err}")
    })?;
    Ok(())
}

fn main() {
    procpool::serve_if_worker(registry());
    let args = Arguments::from_args();
    let tests = vec![
        watchdog(
            "ordering_under_random_delays",
            60,
            ordering_under_random_delays,
        ),
        watchdog(
            "imap_unordered_tags_every_position_once",
            60,
            imap_unordered_tags_every_position_once,
        ),
        watchdog(
            "endless_imap_take_computes_a_bounded_number",
            60,
            endless_imap_take_computes_a_bounded_number,
        ),
        watchdog(
            "three_backends_give_identical_bits",
            60,
            three_backends_give_identical_bits,
        ),
        watchdog(
            "a_big_map_is_fed_as_it_runs_and_can_be_terminated",
            120,
            a_big_map_is_fed_as_it_runs_and_can_be_terminated,
        ),
        watchdog(
            "context_is_sent_once_per_worker",
            60,
            context_is_sent_once_per_worker,
        ),
        watchdog("panic_fails_only_that_job", 60, panic_fails_only_that_job),
        watchdog(
            "wait_ready_returns_once_every_worker_can_take_jobs",
            120,
            wait_ready_returns_once_every_worker_can_take_jobs,
        ),
        watchdog(
            "a_panic_carries_its_backtrace_when_asked",
            60,
            a_panic_carries_its_backtrace_when_asked,
        ),
        watchdog(
            "map_runs_every_job_and_returns_the_first_failure",
            60,
            map_runs_every_job_and_returns_the_first_failure,
        ),
        watchdog(
            "sigkill_of_a_worker_is_diagnosed_without_hanging",
            60,
            sigkill_of_a_worker_is_diagnosed_without_hanging,
        ),
        watchdog(
            "sigkill_with_retries_loses_nothing",
            60,
            sigkill_with_retries_loses_nothing,
        ),
        watchdog(
            "a_worker_killed_holding_several_jobs_blames_none_of_them",
            60,
            a_worker_killed_holding_several_jobs_blames_none_of_them,
        ),
        watchdog(
            "a_crashing_job_fails_after_its_retries_with_stderr",
            60,
            a_crashing_job_fails_after_its_retries_with_stderr,
        ),
        watchdog(
            "job_timeout_kills_and_replaces_the_worker",
            60,
            job_timeout_kills_and_replaces_the_worker,
        ),
        watchdog(
            "drop_and_terminate_leave_no_process",
            60,
            drop_and_terminate_leave_no_process,
        ),
        watchdog(
            "async_handles_behave_like_pythons",
            60,
            async_handles_behave_like_pythons,
        ),
        watchdog(
            "unknown_task_is_refused_at_start_up",
            60,
            unknown_task_is_refused_at_start_up,
        ),
        watchdog(
            "bad_settings_are_errors_naming_the_value",
            60,
            bad_settings_are_errors_naming_the_value,
        ),
        watchdog(
            "auto_chunksize_is_measured_and_reported",
            60,
            auto_chunksize_is_measured_and_reported,
        ),
        watchdog(
            "queue_and_processes_like_the_seed",
            60,
            queue_and_processes_like_the_seed,
        ),
        watchdog("process_kill_and_drop_reap", 60, process_kill_and_drop_reap),
        watchdog(
            "programs_a_task_starts_do_not_inherit_the_workers_socket",
            60,
            programs_a_task_starts_do_not_inherit_the_workers_socket,
        ),
        watchdog(
            "a_slow_consumer_keeps_memory_bounded_by_the_window",
            60,
            a_slow_consumer_keeps_memory_bounded_by_the_window,
        ),
        watchdog(
            "replacement_workers_map_the_same_shared_object",
            60,
            replacement_workers_map_the_same_shared_object,
        ),
        watchdog(
            "a_context_beyond_the_frame_limit_travels_in_shared_memory",
            60,
            a_context_beyond_the_frame_limit_travels_in_shared_memory,
        ),
        watchdog(
            "soak_empty_jobs_through_two_workers",
            600,
            soak_empty_jobs_through_two_workers,
        ),
    ];
    libtest_mimic::run(&args, tests).exit();
}
