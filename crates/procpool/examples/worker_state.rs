//! Per-worker state (Python's `initializer`), workers recycled after a number of jobs
//! (`maxtasksperchild`), and completion callbacks (`apply_async(callback=...)`).
//!
//! - `Task::init` runs once in each worker, before its first job, with the context it
//!   received: here it builds a lookup table and notes which worker it is, in fields the
//!   context does not send (`#[serde(skip)]`).
//! - `max_tasks_per_child(4)`: each worker runs at most 4 jobs, then exits and is replaced;
//!   every replacement runs `init` again.
//! - `apply_async(..).then(f)`: `f` gets the result on the pool's side as soon as it is
//!   there; nobody waits on a handle.
//!
//! Run with `cargo run -p procpool --example worker_state`.

use procpool::{Pool, Registry, Task, WorkerInfo};
use serde::{Deserialize, Serialize};
use std::collections::BTreeSet;
use std::sync::mpsc;

/// What every worker gets: a size, and the table each worker builds from it.
#[derive(Serialize, Deserialize, Default)]
struct Lookup {
    size: u64,
    /// Built by `init` in each worker; never sent.
    #[serde(skip)]
    squares: Vec<u64>,
    /// Which worker this is; never sent.
    #[serde(skip)]
    worker: Option<WorkerInfo>,
}

/// Looks a square up in the worker's table.
#[derive(Serialize, Deserialize)]
struct Square(u64);

impl Task for Square {
    const NAME: &'static str = "square";
    type Context = Lookup;
    /// The square, the pid of the worker, and its id.
    type Output = (u64, u32, u32);
    fn run(self, ctx: &Lookup) -> (u64, u32, u32) {
        let w = ctx.worker.map_or((0, 0), |w| (w.pid, w.id));
        (ctx.squares[self.0 as usize], w.0, w.1)
    }
    fn init(ctx: &mut Lookup, worker: &WorkerInfo) -> Result<(), String> {
        ctx.squares = (0..ctx.size).map(|x| x * x).collect();
        ctx.worker = Some(*worker);
        Ok(())
    }
}

fn main() -> Result<(), procpool::Error> {
    procpool::serve_if_worker(Registry::new().task::<Square>());
    let pool = Pool::<Square>::builder()
        .workers(2)
        .context(Lookup {
            size: 100,
            ..Lookup::default()
        })
        .max_tasks_per_child(4)
        .build()?;
    let out = pool.map((0..20).map(Square))?;
    let squares: Vec<u64> = out.iter().map(|(s, _, _)| *s).collect();
    let pids: BTreeSet<u32> = out.iter().map(|(_, pid, _)| *pid).collect();
    let ids: BTreeSet<u32> = out.iter().map(|(_, _, id)| *id).collect();
    println!("squares from the workers' own tables: {squares:?}");
    println!(
        "20 jobs, at most 4 per worker, ran in {} worker processes (ids {ids:?})",
        pids.len()
    );
    // Callbacks: each result goes to a function as soon as it is there.
    let (tx, rx) = mpsc::channel();
    for x in [3, 5, 7] {
        let tx = tx.clone();
        pool.apply_async(Square(x)).then(move |r| {
            let _ = tx.send((x, r.map(|(s, _, _)| s)));
        });
    }
    drop(tx);
    let mut got: Vec<(u64, u64)> = rx.iter().map(|(x, r)| (x, r.unwrap_or(u64::MAX))).collect();
    got.sort_unstable();
    println!("callbacks got: {got:?}");
    Ok(())
}
