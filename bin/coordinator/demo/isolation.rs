//! `demo isolation`: each job increments a global counter and appends to a global list.
//! Under the process backend every worker changes its own copy and the parent's stay
//! untouched; under the thread backend there is one copy, and the parent sees every change.

use procpool::{Backend, Chunk, Pool, Registry, Task};
use serde::{Deserialize, Serialize};
use std::io::{self, Write};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, PoisonError};

/// Errors of a demo, boxed: every one ends the demo with its message.
pub type Error = Box<dyn std::error::Error + Send + Sync>;

/// The global counter every job increments.
static COUNTER: AtomicU64 = AtomicU64::new(0);
/// The global list every job appends to.
static LIST: Mutex<Vec<u64>> = Mutex::new(Vec::new());

/// Jobs per backend.
const JOBS: u64 = 6;

/// One job: `COUNTER += 1; LIST.push(x)`, then report what this process's copies hold.
#[derive(Serialize, Deserialize)]
struct Touch(u64);

/// What a job saw of the globals, where it ran.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Seen {
    /// The job's input.
    pub x: u64,
    /// The process it ran in.
    pub pid: u32,
    /// `COUNTER` right after this job incremented it.
    pub counter: u64,
    /// `LIST` right after this job appended to it.
    pub list: Vec<u64>,
    /// Where `COUNTER` lives in that process.
    pub counter_addr: usize,
}

impl Task for Touch {
    const NAME: &'static str = "demo-isolation-touch";
    type Context = ();
    type Output = Seen;
    fn run(self, _: &()) -> Seen {
        let counter = COUNTER.fetch_add(1, Ordering::SeqCst) + 1;
        let list = {
            let mut list = LIST.lock().unwrap_or_else(PoisonError::into_inner);
            list.push(self.0);
            list.clone()
        };
        Seen {
            x: self.0,
            pid: std::process::id(),
            counter,
            list,
            counter_addr: counter_addr(),
        }
    }
}

fn counter_addr() -> usize {
    std::ptr::addr_of!(COUNTER) as usize
}

/// Registers this demo's task.
pub fn register(registry: Registry) -> Registry {
    registry.task::<Touch>()
}

/// Settings.
#[derive(Debug, Clone)]
pub struct Options {
    /// Workers per pool.
    pub workers: usize,
}

impl Default for Options {
    fn default() -> Self {
        Options { workers: 2 }
    }
}

/// One backend's run.
#[derive(Debug, Serialize)]
pub struct Side {
    /// `process` or `thread`.
    pub backend: String,
    /// The pool's worker pids.
    pub worker_pids: Vec<u32>,
    /// What each job saw, in input order.
    pub jobs: Vec<Seen>,
    /// The parent's `COUNTER` before the run.
    pub parent_counter_before: u64,
    /// The parent's `COUNTER` after the run.
    pub parent_counter_after: u64,
    /// The parent's `LIST` after the run (sorted: threads append in any order).
    pub parent_list_after: Vec<u64>,
}

/// What the demo saw.
#[derive(Debug, Serialize)]
pub struct Report {
    /// This process.
    pub parent_pid: u32,
    /// Where `COUNTER` lives in this process.
    pub parent_counter_addr: usize,
    /// The process backend's run, then the thread backend's.
    pub sides: Vec<Side>,
}

fn parent_list() -> Vec<u64> {
    let mut list = LIST.lock().unwrap_or_else(PoisonError::into_inner).clone();
    list.sort_unstable();
    list
}

fn side(backend: Backend, workers: usize) -> Result<Side, Error> {
    let before = COUNTER.load(Ordering::SeqCst);
    let pool = Pool::<Touch>::builder()
        .workers(workers)
        .backend(backend)
        .chunksize(Chunk::Fixed(1))
        .build()?;
    // Every worker running before the jobs, as in Python's Pool: otherwise the first one
    // ready may run all six tiny jobs before the others have started.
    pool.wait_ready(std::time::Duration::from_secs(30));
    let worker_pids = pool.pids();
    let jobs = pool.map((1..=JOBS).map(Touch))?;
    pool.join();
    Ok(Side {
        backend: backend.to_string(),
        worker_pids,
        jobs,
        parent_counter_before: before,
        parent_counter_after: COUNTER.load(Ordering::SeqCst),
        parent_list_after: parent_list(),
    })
}

/// Runs the demo: the process backend first, while the parent's globals are pristine.
pub fn run(opts: &Options) -> Result<Report, Error> {
    let sides = vec![
        side(Backend::Process, opts.workers)?,
        side(Backend::Thread, opts.workers)?,
    ];
    Ok(Report {
        parent_pid: std::process::id(),
        parent_counter_addr: counter_addr(),
        sides,
    })
}

impl Report {
    /// Writes the report for people.
    pub fn write_text(&self, out: &mut dyn Write) -> io::Result<()> {
        writeln!(
            out,
            "Each job runs `COUNTER += 1; LIST.push(x)` on globals (a static AtomicU64 and a \
             static Mutex<Vec>), x = 1..={JOBS}."
        )?;
        writeln!(
            out,
            "parent pid {}, its COUNTER at {:#x}",
            self.parent_pid, self.parent_counter_addr
        )?;
        let cell = |s: &Side, f: &dyn Fn(&Side) -> String| format!("{:<46}", f(s));
        let row = |out: &mut dyn Write, label: &str, f: &dyn Fn(&Side) -> String| {
            let cells: String = self.sides.iter().map(|s| cell(s, f)).collect();
            writeln!(out, "  {label:<24}{}", cells.trim_end())
        };
        row(out, "", &|s| format!("{} backend", s.backend))?;
        row(out, "worker pids", &|s| format!("{:?}", s.worker_pids))?;
        for i in 0..JOBS as usize {
            row(out, &format!("job x={}", i + 1), &|s| match s.jobs.get(i) {
                Some(j) => format!("pid {}: COUNTER {}, LIST {:?}", j.pid, j.counter, j.list),
                None => "-".into(),
            })?;
        }
        row(out, "COUNTER addresses", &|s| {
            let mut addrs: Vec<usize> = s.jobs.iter().map(|j| j.counter_addr).collect();
            addrs.sort_unstable();
            addrs.dedup();
            let addrs: Vec<String> = addrs.iter().map(|a| format!("{a:#x}")).collect();
            addrs.join(" ")
        })?;
        row(out, "parent COUNTER", &|s| {
            format!("{} -> {}", s.parent_counter_before, s.parent_counter_after)
        })?;
        row(out, "parent LIST after", &|s| {
            format!("{:?}", s.parent_list_after)
        })?;
        writeln!(
            out,
            "(Each job line is what that job saw right after its change, in its own process.)"
        )?;
        writeln!(
            out,
            "Processes: each worker has its own COUNTER and LIST (its counter counts only its own \
             jobs); the parent's stay as they were. Each worker is this program started afresh, so \
             its copy may even sit at another address (ASLR); forked, it would be the same address \
             and still separate memory."
        )?;
        writeln!(
            out,
            "Threads: one COUNTER and one LIST, shared by every worker and the parent, so the \
             parent sees all {JOBS} changes. Rust makes the sharing explicit: a plain `static mut` \
             would not compile without `unsafe`; an atomic or a mutex is required."
        )
    }
}
