//! Python's `multiprocessing` — `Process`, `Queue`, `Pool` — done right for Rust.
//!
//! Real OS worker processes (the current binary re-executed in worker mode) receive typed
//! jobs over pipes as length-prefixed bincode frames and send back tagged `(pos, result)`
//! messages; results come back in job order, or as they finish. The same API runs on OS
//! threads and inline, so process- and thread-based parallelism can be compared on
//! identical work, bit for bit.
//!
//! ```no_run
//! use procpool::{Backend, Pool, Registry, Task};
//! use serde::{Deserialize, Serialize};
//!
//! #[derive(Serialize, Deserialize)]
//! struct Cube(i64);
//!
//! impl Task for Cube {
//!     const NAME: &'static str = "cube";
//!     type Context = ();
//!     type Output = i64;
//!     fn run(self, _: &()) -> i64 { self.0.pow(3) }
//! }
//!
//! fn main() -> Result<(), procpool::Error> {
//!     // First thing: in a worker process this serves jobs and never returns.
//!     procpool::serve_if_worker(Registry::new().task::<Cube>());
//!     let pool = Pool::<Cube>::builder().workers(4).backend(Backend::Process).build()?;
//!     assert_eq!(pool.map((1..=6).map(Cube))?, [1, 8, 27, 64, 125, 216]);
//!     Ok(())
//! }
//! ```
//!
//! Faults do not hang: a panicking task fails only its job (with its message, location,
//! pid and — with `RUST_BACKTRACE` — backtrace); a worker that dies is reported (pid, signal
//! by name, the jobs it held, its last stderr lines), replaced, and its jobs re-dispatched up
//! to a retry limit; dropping a pool reaps every child, and the programs its tasks started.
//!
//! # Processes or threads?
//!
//! In Rust, threads are the default: no serialization, shared memory, and a round trip of
//! a couple of microseconds. A process pool buys **isolation**, at a price measured in
//! `BENCHMARKS.md` (2-core VM): starting a worker costs about a millisecond, a job's round
//! trip about 10 µs instead of 2, and every job and result is encoded. Choose processes
//! when isolation is what you need:
//! - a task can crash its process (an abort, a segfault in a C library, the OOM killer, a
//!   `process::exit`): with processes only that job fails, and the worker is replaced;
//! - a job must be stoppable: `job_timeout` kills the worker; a thread cannot be killed;
//! - a library is not thread-safe, keeps global state, or leaks: each worker has its own,
//!   and `max_tasks_per_child` recycles workers;
//! - you are teaching, or measuring, what isolation costs: the same pool runs on
//!   [`Backend::Thread`] and [`Backend::Serial`], bit for bit.
//!
//! Jobs of about a millisecond and up run within a few percent of threads on processes;
//! below ~10 µs per job, the per-job cost dominates (automatic chunking sends many jobs
//! per message to amortize it).
//!
//! # What a task must be
//!
//! - **Serializable**: a [`Task`] is a serde value (its input), and so are its `Output` and
//!   its `Context` (data every worker gets once, Python's `initargs`). Large numeric arrays
//!   in a context should be [`SharedSlice`]s: they are shared, not copied, with every worker.
//! - **Registered**: workers are this binary started again, and find the code by the
//!   task's `NAME` in the [`Registry`] that `main` hands to [`serve_if_worker`] *first
//!   thing*. A pool refuses, before starting anything, a task the registry lacks. No
//!   function pointers cross processes. Several kinds of work in one pool: make the task an
//!   enum whose `run` matches on its variants (the `several_tasks` example).
//! - **Idempotent**: a job whose worker dies may run again (on another worker), so a task
//!   should not have effects that must happen exactly once. Results are delivered exactly
//!   once.
//!
//! Per-worker state (an open file, an index, a seeded RNG) goes in `#[serde(skip)]` fields
//! of the context, set up by [`Task::init`], which runs once in each worker.
//!
//! # Testing
//!
//! A process pool inside `cargo test` needs one line per test binary, because the worker
//! is the test binary started again: [`test_support!`] serves workers before libtest's
//! `main` runs. See `tests/harness.rs` in this crate.
//!
//! ```no_run
//! # use procpool::{Registry, Task};
//! # #[derive(serde::Serialize, serde::Deserialize)]
//! # struct Cube(i64);
//! # impl Task for Cube {
//! #     const NAME: &'static str = "cube";
//! #     type Context = ();
//! #     type Output = i64;
//! #     fn run(self, _: &()) -> i64 { self.0.pow(3) }
//! # }
//! procpool::test_support!(Registry::new().task::<Cube>());
//!
//! #[test]
//! fn cubes_in_worker_processes() {
//!     let pool = procpool::Pool::<Cube>::new(2).unwrap();
//!     assert_eq!(pool.map((1..=3).map(Cube)).unwrap(), [1, 8, 27]);
//! }
//! # fn main() {}
//! ```
//!
//! # Coming from Python
//!
//! | Python `multiprocessing` | here |
//! |---|---|
//! | `Pool(n, initializer, initargs, maxtasksperchild)` | `Pool::builder().workers(n).context(ctx).max_tasks_per_child(k)`, with [`Task::init`] |
//! | `pool.apply(f, args)` / `map` / `imap` / `imap_unordered` | the same names; a job is one value (for `starmap`, make it a tuple struct) |
//! | `apply_async(f, args, callback, error_callback)` | `apply_async(job).then(\|result\| ...)` |
//! | an `AsyncResult` nobody waits for | `.detach()`; *dropping* an [`AsyncResult`] withdraws jobs not yet started |
//! | `AsyncResult.get(timeout)`, `wait`, `ready` | `get_timeout`, `wait_timeout`, `wait`, `ready` |
//! | `map` raises the first error, after running every job | the same: [`Pool::map`] |
//! | `close()`, `join()`, `terminate()` | the same |
//! | `with Pool() as p:` (terminates at the end) | dropping a pool **waits** for submitted work, then reaps; call [`Pool::terminate`] for Python's behaviour |
//! | `Process(target, args)`, `Queue`, `JoinableQueue` | [`Process::spawn`] of a [`Target`], [`Queue`], [`JoinableQueue`] (`maxsize`, `qsize`, `empty`, `close`, `task_done`, `join`; `get` in a child through a [`QueueReceiver`]) |
//! | a pool inside a pool's worker | refused ([`Error::InsideWorker`]), as Python's daemonic workers may not have children; a [`Process`] child may run a pool |
//! | `ThreadPool` | [`Backend::Thread`]: the same pool on threads |
//!
//! Where this crate goes further: exact blame when a worker dies (only the job that killed
//! it is charged), replacement with back-off that survives kill storms, job timeouts that
//! kill, process groups that take the task's own subprocesses down, contexts in shared
//! memory, and a seeded simulation of the pool's decisions (`src/policy/README.md`).

#![deny(missing_docs)]
#![warn(missing_debug_implementations)]
#![warn(clippy::unwrap_used, clippy::expect_used)]

#[cfg(not(unix))]
compile_error!(
    "procpool supports Unix-like systems only (it re-executes itself and polls sockets)"
);

mod context;
mod engine;
mod error;
pub mod journal;
mod os;
mod policy;
mod pool;
mod process;
mod reorder;
mod shared;
mod table;
mod task;
mod worker;

#[cfg(not(feature = "fuzzing"))]
mod wire;
/// The wire protocol (frames, the codec, the messages), exposed only for the fuzz target
/// and the protocol's property tests (cargo feature `fuzzing`): not a stable API.
#[cfg(feature = "fuzzing")]
pub mod wire;

/// Runs the worker side of the protocol over in-memory input (cargo feature `fuzzing`):
/// returns what it wrote and how it ended. Any input, however hostile, must end in a clean
/// `Err`, never a panic or an unbounded allocation.
#[cfg(feature = "fuzzing")]
pub fn serve_in_memory(registry: &Registry, input: &[u8]) -> (Vec<u8>, Result<(), String>) {
    worker::serve_in_memory(registry, input)
}

pub use bytemuck::Pod;
pub use engine::Backend;
pub use error::{Error, JobError, Result};
pub use journal::{Journal, JournalError, JournalOptions};
pub use os::child::describe_status;
pub use policy::stats::{
    Chunk, ChunkChoice, JobSpan, PoolStats, Timeline, WorkerPhases, WorkerRef, WorkerSpan,
};
pub use pool::{
    AsyncResult, Imap, ImapUnordered, MAX_WORKERS, Pool, PoolBuilder, Tagged, Terminator,
};
pub use process::{JoinableQueue, QueueReceiver};
pub use process::{Process, Queue, QueueSender};
pub use shared::SharedSlice;
pub use task::{Target, Task, WorkerInfo};
pub use wire::codec::CodecError;
pub use worker::Registry;

/// Call first thing in `main`: in a worker process this serves the coordinator with the
/// tasks and targets in `registry` and exits when it is done; anywhere else it returns at
/// once. Code before it runs in every worker too.
///
/// A process is a worker only when the pool that started it says so three ways (an
/// environment marker, a `__worker` argument, and its parent's pid); a stray marker in a
/// shell is ignored with a warning. A worker removes the markers from its environment
/// before serving, so programs its tasks start are ordinary processes.
pub fn serve_if_worker(registry: Registry) {
    worker::registry::remember(&registry);
    match os::env::detect() {
        os::env::Mode::Normal => {}
        os::env::Mode::Orphaned => std::process::exit(os::env::EXIT_ORPHANED),
        os::env::Mode::Worker(env) => {
            os::env::strip_markers();
            let code = worker::runtime::worker_main(&registry, &env);
            std::process::exit(code);
        }
    }
}

/// Makes process pools work inside `cargo test`, with one line per test binary (at the top
/// level of any file of the test crate):
///
/// ```no_run
/// # use procpool::{Registry, Task};
/// # #[derive(serde::Serialize, serde::Deserialize)]
/// # struct MyTask;
/// # impl Task for MyTask {
/// #     const NAME: &'static str = "my-task";
/// #     type Context = ();
/// #     type Output = ();
/// #     fn run(self, _: &()) {}
/// # }
/// procpool::test_support!(Registry::new().task::<MyTask>());
/// # fn main() {}
/// ```
///
/// A process worker is its binary started again; in a test binary that means libtest's
/// `main`, which would read the worker's `__worker` argument as a test-name filter, run
/// nothing and exit. This macro serves workers *before* `main`, from a constructor (the
/// [`ctor`](https://docs.rs/ctor) crate), and does nothing in the test run itself. Code in
/// the constructor runs before the standard library's `main` set-up; the worker code it runs
/// reads its arguments from `/proc/self/cmdline` where needed, and is tested this way in
/// this crate (`tests/harness.rs`).
#[macro_export]
macro_rules! test_support {
    ($registry:expr) => {
        $crate::__ctor::declarative::ctor! {
            #[ctor(unsafe)]
            fn __procpool_test_support() {
                $crate::serve_if_worker($registry);
            }
        }
    };
}

#[doc(hidden)]
pub use ctor as __ctor;

/// MPI: rank 0 coordinates, ranks 1..N are the workers of [`Backend::Mpi`] pools.
#[cfg(feature = "mpi")]
pub mod mpi {
    pub use crate::engine::mpi::{Mpi, init};
}

/// Whether this process is a worker (started by a pool or [`Process::spawn`]).
pub fn is_worker() -> bool {
    worker::runtime::in_worker() || matches!(os::env::detect_quiet(), os::env::Mode::Worker(_))
}
