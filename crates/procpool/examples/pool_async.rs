//! `apply_async` and `map_async`: start work, keep going, collect the result later
//! (Python's `AsyncResult` with `ready()`, `wait()`, `wait(timeout)`, `get()`).
//!
//! Run with `cargo run -p procpool --example pool_async`.
//!
//! What to look for:
//! - a 300 ms job: `ready()` is `false` right after `apply_async`, `wait_timeout(50 ms)`
//!   gives up with `false`, `wait()` blocks until it is done, then `ready()` is `true` and
//!   `get()` returns the value (and the worker pid that computed it);
//! - six `apply_async` handles started at once come back in the order you `get()` them;
//! - `map_async` runs in the background while the parent does something else: it is
//!   `ready()` before the parent ever waits on it, and `get()` gives outputs in input order;
//! - `get_timeout` on a handle that is not done yields `Error::Timeout`.

use procpool::{Backend, Pool, Registry, Task};
use serde::{Deserialize, Serialize};
use std::time::{Duration, Instant};

/// Cubes `x` after sleeping `ms` milliseconds; also reports the worker's pid.
#[derive(Serialize, Deserialize)]
struct SlowCube {
    x: i64,
    ms: u64,
}

impl Task for SlowCube {
    const NAME: &'static str = "slow_cube";
    type Context = ();
    type Output = (i64, u32);
    fn run(self, _: &()) -> (i64, u32) {
        std::thread::sleep(Duration::from_millis(self.ms));
        (self.x.pow(3), std::process::id())
    }
}

fn main() -> Result<(), procpool::Error> {
    procpool::serve_if_worker(Registry::new().task::<SlowCube>());
    let pool = Pool::<SlowCube>::builder()
        .workers(2)
        .backend(Backend::Process)
        .build()?;
    println!(
        "parent pid {}, worker pids {:?}",
        std::process::id(),
        pool.pids()
    );

    // One slow job: watch it become ready.
    let t = Instant::now();
    let slow = pool.apply_async(SlowCube { x: 7, ms: 300 });
    println!("apply_async(cube, 7) returned after {:.1?}", t.elapsed());
    println!("  ready() right away:       {}", slow.ready());
    println!(
        "  wait_timeout(50 ms):      {}",
        slow.wait_timeout(Duration::from_millis(50))
    );
    slow.wait();
    println!(
        "  after wait() ({:>6.1?}): ready() = {}",
        t.elapsed(),
        slow.ready()
    );
    let (cube, pid) = slow.get()?;
    println!("  get() = {cube} (computed by pid {pid})");

    // Python's `[pool.apply_async(cube, (x,)) for x in range(1, 7)]`, then `.get()` each.
    let handles: Vec<_> = (1..=6)
        .map(|x| pool.apply_async(SlowCube { x, ms: 20 }))
        .collect();
    let got = handles
        .into_iter()
        .map(|h| h.get())
        .collect::<Result<Vec<_>, _>>()?;
    println!("six apply_async, get() each: {got:?}");

    // map_async makes progress in the background while this thread does other work.
    let t = Instant::now();
    let all = pool.map_async((1..=6).map(|x| SlowCube { x, ms: 50 }));
    println!("map_async(cube, 1..=6) ready() right away: {}", all.ready());
    std::thread::sleep(Duration::from_millis(500)); // "other work" in the parent
    println!(
        "  after {:.1?} of other work here, without waiting on it: ready() = {}",
        t.elapsed(),
        all.ready()
    );
    let cubes: Vec<i64> = all.get()?.into_iter().map(|(c, _)| c).collect();
    println!("  get() = {cubes:?}");

    // A deadline on get: the handle is consumed; the unfinished job is withdrawn or finishes.
    let late = pool.apply_async(SlowCube { x: 2, ms: 1_000 });
    match late.get_timeout(Duration::from_millis(100)) {
        Err(procpool::Error::Timeout(d)) => {
            println!("get_timeout(100 ms) on a 1 s job: timed out after {d:?}")
        }
        other => println!("get_timeout(100 ms) on a 1 s job: unexpectedly {other:?}"),
    }
    Ok(())
}
