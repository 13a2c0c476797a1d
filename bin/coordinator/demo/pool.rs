//! `demo pool`: the seed's `Pool` section — `apply`, `map`, `apply_async` and `map_async`
//! on its cube function over 1..=6 — printing each result with the pid of the worker
//! process that computed it.

use procpool::{Backend, Chunk, Pool, Registry, Task};
use serde::{Deserialize, Serialize};
use std::io::{self, Write};

/// Errors of a demo, boxed: every one ends the demo with its message.
pub type Error = Box<dyn std::error::Error + Send + Sync>;

/// The seed's `cube(x)`, which also says where it ran.
#[derive(Serialize, Deserialize)]
struct Cube(i64);

impl Task for Cube {
    const NAME: &'static str = "demo-pool-cube";
    type Context = ();
    /// `(x^3, pid of the process that computed it)`.
    type Output = (i64, u32);
    fn run(self, _: &()) -> (i64, u32) {
        (self.0.pow(3), std::process::id())
    }
}

/// Registers this demo's task.
pub fn register(registry: Registry) -> Registry {
    registry.task::<Cube>()
}

/// Settings.
#[derive(Debug, Clone)]
pub struct Options {
    /// Workers (the seed's `Pool(processes=4)`).
    pub workers: usize,
    /// Where the jobs run.
    pub backend: Backend,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            workers: 4,
            backend: Backend::Process,
        }
    }
}

/// One way of calling the pool, and what came back.
#[derive(Debug, Serialize)]
pub struct Call {
    /// The method, as Python names it.
    pub method: &'static str,
    /// The cubes, in the order the call returned them.
    pub results: Vec<i64>,
    /// The pid that computed each result.
    pub pids: Vec<u32>,
}

/// What the demo saw.
#[derive(Debug, Serialize)]
pub struct Report {
    /// This process.
    pub parent_pid: u32,
    /// The backend the pool ran on.
    pub backend: String,
    /// The pool's worker pids (this process's own for threads).
    pub worker_pids: Vec<u32>,
    /// `apply`, `map`, `apply_async`, `map_async`, in that order.
    pub calls: Vec<Call>,
}

fn call(method: &'static str, outputs: Vec<(i64, u32)>) -> Call {
    let (results, pids) = outputs.into_iter().unzip();
    Call {
        method,
        results,
        pids,
    }
}

/// Runs the demo.
pub fn run(opts: &Options) -> Result<Report, Error> {
    // One job per message, so even six tiny jobs spread over the workers.
    let pool = Pool::<Cube>::builder()
        .workers(opts.workers)
        .backend(opts.backend)
        .chunksize(Chunk::Fixed(1))
        .build()?;
    // Python's Pool has every worker running when it returns. Ours starts work as soon as
    // one is ready, and with one job per message a lone ready worker may take all six of
    // `map`'s jobs: wait for the others first (bounded), so that the calls below show the
    // spreading they are about.
    pool.wait_ready(std::time::Duration::from_secs(30));
    let xs = 1..=6;
    let mut calls = Vec::new();

    // [pool.apply(cube, args=(x,)) for x in range(1,7)]: one job at a time, each waited for.
    let applied = xs
        .clone()
        .map(|x| pool.apply(Cube(x)))
        .collect::<Result<Vec<_>, _>>()?;
    calls.push(call("apply", applied));

    // pool.map(cube, range(1,7)): all at once, results in input order.
    calls.push(call("map", pool.map(xs.clone().map(Cube))?));

    // [pool.apply_async(cube, args=(x,)) for x in ...], then [p.get() for p in results].
    let handles: Vec<_> = xs.clone().map(|x| pool.apply_async(Cube(x))).collect();
    let gotten = handles
        .into_iter()
        .map(|h| h.get())
        .collect::<Result<Vec<_>, _>>()?;
    calls.push(call("apply_async", gotten));

    // pool.map_async(cube, range(1,7)).get()
    calls.push(call("map_async", pool.map_async(xs.map(Cube)).get()?));

    let worker_pids = pool.pids();
    pool.join();
    Ok(Report {
        parent_pid: std::process::id(),
        backend: opts.backend.to_string(),
        worker_pids,
        calls,
    })
}

impl Report {
    /// Writes the report for people.
    pub fn write_text(&self, out: &mut dyn Write) -> io::Result<()> {
        let what = if self.backend == "process" {
            "worker processes"
        } else {
            "workers"
        };
        writeln!(
            out,
            "cube(x) = x**3 over 1..=6 on a pool of {} {what} (pids {:?}); this is pid {}.",
            self.worker_pids.len(),
            self.worker_pids,
            self.parent_pid
        )?;
        for c in &self.calls {
            writeln!(
                out,
                "  {:<12} {:?}  computed by pids {:?}",
                format!("{}:", c.method),
                c.results,
                c.pids
            )?;
        }
        writeln!(
            out,
            "Every call returns the cubes in input order. apply sends one job and waits for it, \
             so one idle worker can take them all; map spreads the input over the workers; \
             apply_async and map_async return at once with handles whose get() waits. The pids \
             show which {} computed each cube.",
            if self.backend == "process" {
                "process"
            } else {
                "worker"
            }
        )
    }
}
