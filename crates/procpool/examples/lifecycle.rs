//! A pool's life: `close`, `join`, `terminate`, and `Drop` — and no process left behind.
//!
//! Run with `cargo run -p procpool --example lifecycle`.
//!
//! What to look for:
//! - `close` refuses new work (`apply` gives "the pool is closed") but work already
//!   submitted completes; `join` waits for it, then every worker exits and is reaped: each
//!   pid is "gone" from `/proc` (a zombie would still be listed there);
//! - dropping a pool does the same (finish submitted work, reap every worker);
//! - `terminate` while 5-second jobs run returns at once: each unfinished job fails with
//!   `JobError::Terminated`, and the workers are gone too.

use procpool::{Backend, Error, JobError, Pool, Registry, Task};
use serde::{Deserialize, Serialize};
use std::path::Path;
use std::time::{Duration, Instant};

/// Sleeps `ms` milliseconds, then reports the worker's pid.
#[derive(Serialize, Deserialize)]
struct Sleep {
    ms: u64,
}

impl Task for Sleep {
    const NAME: &'static str = "sleep";
    type Context = ();
    type Output = u32;
    fn run(self, _: &()) -> u32 {
        std::thread::sleep(Duration::from_millis(self.ms));
        std::process::id()
    }
}

/// Prints whether each pid is still in the process table.
fn show(pids: &[u32]) {
    for pid in pids {
        if Path::new(&format!("/proc/{pid}")).exists() {
            println!("  pid {pid} still in /proc");
        } else {
            println!("  pid {pid} gone");
        }
    }
}

fn pool(workers: usize) -> Result<Pool<Sleep>, Error> {
    Pool::builder()
        .workers(workers)
        .backend(Backend::Process)
        .build()
}

fn main() -> Result<(), Error> {
    procpool::serve_if_worker(Registry::new().task::<Sleep>());

    // close + join: submitted work finishes, then the workers exit.
    let p = pool(3)?;
    let pids = p.pids();
    println!("pool of 3 workers: pids {pids:?}");
    let pending = p.map_async((0..6).map(|_| Sleep { ms: 100 }));
    p.close();
    match p.apply(Sleep { ms: 0 }) {
        Err(e) => println!("after close(), apply(): {e}"),
        Ok(_) => println!("after close(), apply() still ran (unexpected)"),
    }
    p.join();
    let ran_on = pending.get()?;
    println!("join() returned; the 6 jobs submitted before close ran on pids {ran_on:?}");
    show(&pids);

    // Drop: the same, implicitly.
    let p = pool(2)?;
    let pids = p.pids();
    println!("pool of 2 workers: pids {pids:?}; map of 4 jobs, then drop");
    p.map((0..4).map(|_| Sleep { ms: 10 }))?;
    drop(p);
    show(&pids);

    // terminate: kill the workers now; unfinished jobs fail with Terminated.
    let p = pool(2)?;
    let pids = p.pids();
    println!("pool of 2 workers: pids {pids:?}; 4 jobs of 5 s each, terminate after 200 ms");
    let handles: Vec<_> = (0..4).map(|_| p.apply_async(Sleep { ms: 5_000 })).collect();
    std::thread::sleep(Duration::from_millis(200));
    let t = Instant::now();
    p.terminate();
    println!("terminate() took {:.1?}", t.elapsed());
    for (i, h) in handles.into_iter().enumerate() {
        match h.get() {
            Err(Error::Failed(JobError::Terminated)) => println!("  job {i}: JobError::Terminated"),
            other => println!("  job {i}: {other:?}"),
        }
    }
    show(&pids);
    match p.apply(Sleep { ms: 0 }) {
        Err(e) => println!("after terminate(), apply(): {e}"),
        Ok(_) => println!("after terminate(), apply() still ran (unexpected)"),
    }
    Ok(())
}
