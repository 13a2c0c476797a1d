//! `demo crash`: one job out of six dereferences a null pointer (or aborts). Under the
//! process backend that kills one worker: the pool reports the dead worker with the signal
//! by name, replaces it, and finishes the other jobs. Then the same jobs on the thread
//! backend, in a child process so that this demo survives to tell: the fault kills the
//! whole program, and nothing comes back.

use super::child;
use procpool::{Backend, Chunk, JobError, Pool, Registry, Task, describe_status};
use serde::{Deserialize, Serialize};
use std::io::{self, Write};
use std::os::unix::process::ExitStatusExt;
use std::time::Duration;

/// Errors of a demo, boxed: every one ends the demo with its message.
pub type Error = Box<dyn std::error::Error + Send + Sync>;

/// The role of the child that runs the jobs on threads.
const THREAD_CHILD: &str = "crash-thread";
/// The input whose job faults.
const BAD_X: i64 = 4;

/// How the bad job dies.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Fault {
    /// Reads through a null pointer: SIGSEGV.
    Segv,
    /// `std::process::abort()`: SIGABRT.
    Abort,
}

/// `x^3`, except for `x == BAD_X`, which faults.
#[derive(Serialize, Deserialize)]
struct Fragile {
    x: i64,
    fault: Fault,
}

impl Task for Fragile {
    const NAME: &'static str = "demo-crash-fragile";
    type Context = ();
    /// `(x^3, pid of the process that computed it)`.
    type Output = (i64, u32);
    fn run(self, _: &()) -> (i64, u32) {
        if self.x == BAD_X {
            fault(self.fault);
        }
        (self.x.pow(3), std::process::id())
    }
}

/// Dies the way a memory bug or a failed assertion in C code kills a process.
fn fault(how: Fault) {
    match how {
        Fault::Segv => {
            // A field 16 bytes into a struct behind a null pointer, like C's `p->field`.
            // (Exactly address 0 would trip Rust's debug-build precondition check, which
            // aborts instead of faulting.) Linux never maps the first page, so this faults.
            let field = std::hint::black_box(std::ptr::null::<u8>().wrapping_add(16));
            // SAFETY: none: this is deliberately unsound. The read is undefined behaviour and
            // kills the process with SIGSEGV, which is what the demo is about.
            let byte = unsafe { std::ptr::read_volatile(field) };
            std::hint::black_box(byte);
        }
        Fault::Abort => std::process::abort(),
    }
}

/// Registers this demo's task.
pub fn register(registry: Registry) -> Registry {
    registry.task::<Fragile>()
}

/// Settings.
#[derive(Debug, Clone)]
pub struct Options {
    /// Workers.
    pub workers: usize,
    /// How the bad job dies.
    pub fault: Fault,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            workers: 2,
            fault: Fault::Segv,
        }
    }
}

/// One job's outcome under the process backend.
#[derive(Debug, Serialize)]
pub struct JobOutcome {
    /// The input.
    pub x: i64,
    /// `x^3`, when it finished.
    pub cube: Option<i64>,
    /// The worker that computed it, when it finished.
    pub pid: Option<u32>,
    /// Why it did not finish.
    pub error: Option<String>,
    /// How the last worker holding it ended, when one died running it.
    pub worker_status: Option<String>,
}

/// What the pool did about it.
#[derive(Debug, Serialize)]
pub struct ProcessSide {
    /// The workers at the start.
    pub pids_before: Vec<u32>,
    /// The workers at the end (replacements included).
    pub pids_after: Vec<u32>,
    /// Each job, in input order.
    pub jobs: Vec<JobOutcome>,
    /// Workers that died while the pool ran.
    pub workers_lost: u64,
    /// Workers started, replacements included.
    pub workers_started: u64,
    /// Retries allowed per job.
    pub retries: u32,
}

/// How the thread-backend child ended.
#[derive(Debug, Serialize)]
pub struct ThreadSide {
    /// The child's pid.
    pub pid: u32,
    /// How it ended, in words.
    pub status: String,
    /// The signal that killed it, if one did.
    pub signal: Option<i32>,
    /// Its exit code, if it exited.
    pub exit_code: Option<i32>,
    /// Whether it printed any results.
    pub results_printed: bool,
    /// What it printed on stdout.
    pub stdout: String,
    /// What it printed on stderr.
    pub stderr: String,
}

/// What the demo saw.
#[derive(Debug, Serialize)]
pub struct Report {
    /// This process, alive at the end.
    pub parent_pid: u32,
    /// How the bad job died.
    pub fault: Fault,
    /// The input of the bad job.
    pub bad_x: i64,
    /// Under the process backend.
    pub process: ProcessSide,
    /// Under the thread backend, in a child process.
    pub thread: ThreadSide,
}

fn jobs(fault: Fault) -> impl Iterator<Item = Fragile> {
    (1..=6).map(move |x| Fragile { x, fault })
}

/// Runs the demo (or, in its child, the thread half).
pub fn run(opts: &Options) -> Result<Report, Error> {
    if child::role().as_deref() == Some(THREAD_CHILD) {
        thread_child(opts);
    }
    let process = process_side(opts)?;
    let finished = child::rerun(THREAD_CHILD, &[], Duration::from_secs(60))?;
    let thread = ThreadSide {
        pid: finished.pid,
        status: describe_status(finished.status),
        signal: finished.status.signal(),
        exit_code: finished.status.code(),
        results_printed: finished.stdout.contains("results:"),
        stdout: finished.stdout,
        stderr: finished.stderr,
    };
    Ok(Report {
        parent_pid: std::process::id(),
        fault: opts.fault,
        bad_x: BAD_X,
        process,
        thread,
    })
}

fn process_side(opts: &Options) -> Result<ProcessSide, Error> {
    let retries = 1;
    let pool = Pool::<Fragile>::builder()
        .workers(opts.workers)
        .backend(Backend::Process)
        .chunksize(Chunk::Fixed(1))
        .retries(retries)
        .build()?;
    let pids_before = pool.pids();
    let mut outcomes = Vec::new();
    // imap goes on past a failed job: each position yields its result or its error.
    for (x, result) in (1..).zip(pool.imap(jobs(opts.fault))) {
        outcomes.push(match result {
            Ok((cube, pid)) => JobOutcome {
                x,
                cube: Some(cube),
                pid: Some(pid),
                error: None,
                worker_status: None,
            },
            Err(e) => JobOutcome {
                x,
                cube: None,
                pid: None,
                worker_status: match e.job_error() {
                    Some(JobError::WorkerDied { status, .. }) => Some(status.clone()),
                    _ => None,
                },
                error: Some(
                    e.job_error()
                        .map_or_else(|| e.to_string(), JobError::to_string),
                ),
            },
        });
    }
    let pids_after = pool.pids();
    let stats = pool.stats();
    pool.join();
    Ok(ProcessSide {
        pids_before,
        pids_after,
        jobs: outcomes,
        workers_lost: stats.workers_lost,
        workers_started: stats.workers_started,
        retries,
    })
}

/// The child: the same six jobs on the thread backend. The bad job takes the whole process
/// down, so the results line is never printed.
fn thread_child(opts: &Options) -> ! {
    let code = match thread_child_run(opts) {
        Ok(()) => 0,
        Err(e) => {
            eprintln!("thread child: {e}");
            1
        }
    };
    std::process::exit(code);
}

fn thread_child_run(opts: &Options) -> Result<(), Error> {
    let mut out = io::stdout().lock();
    writeln!(
        out,
        "child pid {}: running the six jobs on {} threads of this one process",
        std::process::id(),
        opts.workers
    )?;
    out.flush()?;
    let pool = Pool::<Fragile>::builder()
        .workers(opts.workers)
        .backend(Backend::Thread)
        .chunksize(Chunk::Fixed(1))
        .build()?;
    let results = pool.map(jobs(opts.fault))?;
    let cubes: Vec<i64> = results.iter().map(|(c, _)| *c).collect();
    writeln!(out, "results: {cubes:?}")?;
    out.flush()?;
    Ok(())
}

impl Report {
    /// Writes the report for people.
    pub fn write_text(&self, out: &mut dyn Write) -> io::Result<()> {
        let what = match self.fault {
            Fault::Segv => "reads through a null pointer",
            Fault::Abort => "calls abort()",
        };
        writeln!(
            out,
            "cube(x) for x = 1..=6; the job for x = {} {what}.",
            self.bad_x
        )?;
        let p = &self.process;
        writeln!(
            out,
            "process backend: {} workers {:?}, retries = {}",
            p.pids_before.len(),
            p.pids_before,
            p.retries
        )?;
        for j in &p.jobs {
            match (&j.cube, &j.error) {
                (Some(cube), _) => {
                    writeln!(out, "  x = {}: {cube:<5} (pid {})", j.x, j.pid.unwrap_or(0))?
                }
                (None, Some(e)) => {
                    writeln!(out, "  x = {}: FAILED: {}", j.x, e.replace('\n', " | "))?;
                }
                (None, None) => writeln!(out, "  x = {}: no result", j.x)?,
            }
        }
        let finished = p.jobs.iter().filter(|j| j.cube.is_some()).count();
        writeln!(
            out,
            "  {finished} of {} jobs finished; {} workers died and were replaced ({} started in \
             all, workers now {:?}).",
            p.jobs.len(),
            p.workers_lost,
            p.workers_started,
            p.pids_after
        )?;
        writeln!(
            out,
            "  A worker that dies holding one job is charged with it; one that dies holding \
             several gets none charged, and each of them is re-run alone, where a crash does \
             identify its job. Run alone, the bad job killed its worker retries + 1 = {} times; \
             then the pool gave up on it.",
            p.retries + 1
        )?;
        let t = &self.thread;
        writeln!(out, "thread backend, in child process pid {}:", t.pid)?;
        for line in t.stdout.lines() {
            writeln!(out, "  | {line}")?;
        }
        for line in t.stderr.lines() {
            writeln!(out, "  | (stderr) {line}")?;
        }
        writeln!(
            out,
            "  the child {}; {}.",
            t.status,
            if t.results_printed {
                "it printed results"
            } else {
                "no results at all, not even of the five good jobs"
            }
        )?;
        writeln!(
            out,
            "A fault in a thread is a fault in the process: every thread dies with it. A worker \
             process contains it; the pool names the signal, replaces the worker and goes on. \
             This demo (pid {}) is still here.",
            self.parent_pid
        )
    }
}
