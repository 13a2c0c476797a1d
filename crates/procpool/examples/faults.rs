//! Faults do not hang the pool and do not take other jobs down with them.
//!
//! Run with `cargo run -p procpool --example faults`.
//!
//! What to look for:
//! - a task that panics on one input: only that job fails, with `JobError::Panicked` and
//!   the panic message; the worker catches it and lives on (same pids before and after);
//! - a task that aborts its process on one input: the pool sees the worker die, replaces
//!   it, and re-runs the job up to `retries` more times (default 2, so 3 attempts); then the
//!   job fails with `JobError::WorkerDied`, whose message names the last pid, "SIGABRT (6)"
//!   and the tail of that worker's stderr; every other job still succeeds;
//! - with `.retries(0)` the same job fails after a single attempt;
//! - with `.job_timeout(300 ms)` a job that would run 10 s fails with `JobError::TimedOut`;
//!   its worker is killed and replaced (one pid changes).
//!
//! Worker output is not forwarded (`.forward_worker_output(false)`): the panic and abort
//! messages would otherwise interleave with ours; the stderr tail is in the error anyway.

use procpool::{Backend, Chunk, Error, JobError, Pool, PoolBuilder, Registry, Task};
use serde::{Deserialize, Serialize};
use std::io::Write;
use std::time::{Duration, Instant};

/// Returns its input, unless told to misbehave on it.
#[derive(Serialize, Deserialize)]
enum Risky {
    Fine(u64),
    Panic(u64),
    Abort(u64),
    SleepMs(u64),
}

impl Task for Risky {
    const NAME: &'static str = "risky";
    type Context = ();
    type Output = u64;
    fn run(self, _: &()) -> u64 {
        match self {
            Risky::Fine(x) => x,
            Risky::Panic(x) => panic!("input {x} is cursed"),
            Risky::Abort(x) => {
                eprintln!("worker {}: aborting on input {x}", std::process::id());
                let _ = std::io::stderr().flush();
                std::process::abort()
            }
            Risky::SleepMs(ms) => {
                std::thread::sleep(Duration::from_millis(ms));
                ms
            }
        }
    }
}

fn quiet() -> PoolBuilder<Risky> {
    Pool::builder()
        .workers(2)
        .backend(Backend::Process)
        .forward_worker_output(false)
}

/// Six jobs, `bad` at position 3; prints each result and returns how many succeeded.
fn run_six(pool: &Pool<Risky>, bad: fn(u64) -> Risky) -> usize {
    let jobs = (0..6).map(|i| if i == 3 { bad(i) } else { Risky::Fine(i) });
    let mut ok = 0;
    for (i, r) in pool.imap(jobs).enumerate() {
        match r {
            Ok(v) => {
                ok += 1;
                println!("  job {i}: Ok({v})");
            }
            Err(Error::Job { pos, error }) => {
                let kind = match &error {
                    JobError::Panicked { .. } => "Panicked",
                    JobError::WorkerDied { .. } => "WorkerDied",
                    _ => "other",
                };
                let msg = error.to_string().replace('\n', "\n      | ");
                println!("  job {pos}: {kind}: {msg}");
            }
            Err(e) => println!("  job {i}: {e}"),
        }
    }
    ok
}

fn main() -> Result<(), Error> {
    procpool::serve_if_worker(Registry::new().task::<Risky>());

    let pool = quiet().build()?;
    let before = pool.pids();
    println!("panic on input 3 (workers {before:?}):");
    let ok = run_six(&pool, Risky::Panic);
    println!("  {ok} of 6 ok; workers after: {:?}", pool.pids());

    let pool = quiet().build()?;
    println!(
        "abort on input 3, default retries (workers {:?}):",
        pool.pids()
    );
    let ok = run_six(&pool, Risky::Abort);
    let stats = pool.stats();
    println!(
        "  {ok} of 6 ok; workers lost {}, started {}, jobs re-dispatched {}; workers now {:?}",
        stats.workers_lost,
        stats.workers_started,
        stats.jobs_redispatched,
        pool.pids()
    );

    let pool = quiet().retries(0).build()?;
    println!("abort on input 3, .retries(0):");
    let ok = run_six(&pool, Risky::Abort);
    println!("  {ok} of 6 ok; workers lost {}", pool.stats().workers_lost);

    let limit = Duration::from_millis(300);
    let pool = quiet()
        .job_timeout(limit)
        .chunksize(Chunk::Fixed(1))
        .build()?;
    let before = pool.pids();
    println!("job_timeout({limit:?}), one job sleeps 10 s (workers {before:?}):");
    let t = Instant::now();
    let jobs = [Risky::Fine(0), Risky::SleepMs(10_000), Risky::Fine(2)];
    for (i, r) in pool.imap(jobs).enumerate() {
        match r {
            Ok(v) => println!("  job {i}: Ok({v})"),
            Err(
                e @ Error::Job {
                    error: JobError::TimedOut { .. },
                    ..
                },
            ) => println!("  job {i}: TimedOut: {e}"),
            Err(e) => println!("  job {i}: {e}"),
        }
    }
    println!(
        "  done after {:.1?}; workers now {:?}",
        t.elapsed(),
        pool.pids()
    );
    Ok(())
}
