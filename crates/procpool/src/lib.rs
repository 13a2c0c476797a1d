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
//! Faults do not hang: a panicking task fails only its job; a worker that dies is
//! reported (pid, signal by name, the jobs it held, its last stderr lines), replaced, and
//! its jobs re-dispatched up to a retry limit; dropping a pool reaps every child.

#![deny(missing_docs)]
#![warn(clippy::unwrap_used, clippy::expect_used)]

#[cfg(not(unix))]
compile_error!(
    "procpool supports Unix-like systems only (it re-executes itself and polls sockets)"
);

mod backend;
mod context;
mod error;
mod os;
pub mod journal;
mod pool;
mod process;
mod reorder;
mod shared;
mod supervisor;
mod table;
mod task;
pub mod wire;

pub use backend::Backend;
pub use backend::process::child::describe_status;
pub use bytemuck::Pod;
pub use error::{Error, JobError, Result};
pub use journal::{Journal, JournalError, JournalOptions};
pub use pool::{
    AsyncResult, Imap, ImapUnordered, MAX_WORKERS, Pool, PoolBuilder, Tagged, Terminator,
};
pub use process::{Process, Queue, QueueSender};
pub use reorder::{Reorder, ReorderError};
pub use shared::SharedSlice;
pub use supervisor::{Chunk, ChunkChoice, JobSpan, PoolStats, Timeline, WorkerRef, WorkerSpan};
pub use task::{Registry, Target, Task};

/// Call first thing in `main`: in a worker process this serves the coordinator with the
/// tasks and targets in `registry` and exits when it is done; anywhere else it returns at
/// once. Code before it runs in every worker too.
pub fn serve_if_worker(registry: Registry) {
    if std::env::var_os(backend::process::child::WORKER_ENV).is_none() {
        return;
    }
    let code = backend::process::child::worker_main(&registry);
    std::process::exit(code);
}

/// MPI: rank 0 coordinates, ranks 1..N are the workers of [`Backend::Mpi`] pools.
#[cfg(feature = "mpi")]
pub mod mpi {
    pub use crate::backend::mpi::{Mpi, init};
}

/// Whether this process is a worker (started by a pool or [`Process::spawn`]).
pub fn is_worker() -> bool {
    std::env::var_os(backend::process::child::WORKER_ENV).is_some()
}
