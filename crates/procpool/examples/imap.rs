//! `imap` is lazy, `imap_unordered` yields results as they finish.
//!
//! Run with `cargo run -p procpool --example imap`.
//!
//! What to look for:
//! - `imap` over the endless `(1..).map(...)` with `.take(k)` terminates: the pool pulls
//!   input only as its in-flight window frees up, so it pulled at most `k + window` inputs
//!   (printed: "pulled N inputs for k = K results, window = W"), not infinitely many; the
//!   results are in input order. Dropping the iterator withdraws what was pulled but not
//!   started.
//! - `imap_unordered` over four jobs on four workers, each sleeping longer the earlier it
//!   comes: results arrive in reverse input order (pos 3, 2, 1, 0), each tagged with its
//!   input position `pos` and the pid of the worker process that ran it.

use procpool::{Backend, Chunk, Pool, Registry, Task};
use serde::{Deserialize, Serialize};
use std::cell::Cell;
use std::time::{Duration, Instant};

/// Squares `x` after sleeping `ms` milliseconds.
#[derive(Serialize, Deserialize)]
struct Square {
    x: u64,
    ms: u64,
}

impl Task for Square {
    const NAME: &'static str = "square";
    type Context = ();
    type Output = u64;
    fn run(self, _: &()) -> u64 {
        std::thread::sleep(Duration::from_millis(self.ms));
        self.x * self.x
    }
}

fn main() -> Result<(), procpool::Error> {
    procpool::serve_if_worker(Registry::new().task::<Square>());
    let pool = Pool::<Square>::builder()
        .workers(2)
        .backend(Backend::Process)
        .build()?;
    println!("worker pids {:?}", pool.pids());

    // 1. An endless, lazy input: count how much of it the pool actually pulls.
    let k = 10;
    let pulled = Cell::new(0u64);
    let endless = (1..).map(|x| {
        pulled.set(pulled.get() + 1);
        Square { x, ms: 1 }
    });
    let mut window = pool.window();
    let mut squares = Vec::new();
    for r in pool.imap(endless).take(k) {
        squares.push(r?);
        window = window.max(pool.window());
    }
    println!("imap((1..).map(square)).take({k}) = {squares:?}");
    println!(
        "pulled {} inputs for k = {k} results, window = {window}: pulled <= k + window",
        pulled.get()
    );

    // 2. Results as they finish: earlier jobs sleep longer, so they finish later.
    let n = 4;
    let unordered = Pool::<Square>::builder()
        .workers(n)
        .chunksize(Chunk::Fixed(1))
        .build()?;
    println!(
        "imap_unordered over {n} jobs on {n} workers {:?}, job i sleeps 50 * ({n} - i) ms:",
        unordered.pids()
    );
    let jobs = (0..n as u64).map(|x| Square {
        x,
        ms: 50 * (n as u64 - x),
    });
    let t = Instant::now();
    for tagged in unordered.imap_unordered(jobs) {
        let pid = tagged.worker.map_or(0, |w| w.pid);
        println!(
            "  {:>8}  pos {} from pid {pid}: {}",
            format!("{:.1?}", t.elapsed()),
            tagged.pos,
            tagged.result?
        );
    }
    Ok(())
}
