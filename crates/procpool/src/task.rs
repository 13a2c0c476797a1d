//! What runs in a worker: `Task` (a pool job) and `Target` (a `Process` body), and how a
//! task's panic becomes a value (its job's error) instead of the worker's end.
//!
//! No function pointers cross the process boundary: the worker is the same binary,
//! re-executed, and looks the code up by its stable name in the
//! [`Registry`](crate::Registry) `main` handed to [`serve_if_worker`](crate::serve_if_worker).

use crate::error::JobError;
use serde::{Serialize, de::DeserializeOwned};
use std::panic::{self, AssertUnwindSafe};
use std::time::Instant;

/// One kind of pool job: a serializable value that a worker turns into an output.
///
/// ```
/// use serde::{Deserialize, Serialize};
/// #[derive(Serialize, Deserialize)]
/// struct Cube(i64);
/// impl procpool::Task for Cube {
///     const NAME: &'static str = "cube";
///     type Context = ();
///     type Output = i64;
///     fn run(self, _: &()) -> i64 { self.0.pow(3) }
/// }
/// ```
pub trait Task: Serialize + DeserializeOwned + Send + 'static {
    /// Stable name: the worker finds the code by it, so keep it unique and unchanged.
    const NAME: &'static str;
    /// Data every worker gets once before its first job (Python's `initializer`), e.g. the
    /// sample matrix; never re-sent per job. Use `()` when there is none.
    type Context: Serialize + DeserializeOwned + Send + Sync + 'static;
    /// What one job produces.
    ///
    /// Large byte buffers: serde moves a `Vec<u8>` (and `&[u8]`) one byte at a time, so
    /// prefer `serde_bytes::ByteBuf`, or `#[serde(with = "serde_bytes")]` on the field,
    /// which moves it as one block: four 50 MB outputs came back 3.3x faster that way on
    /// the process backend here (1.28 s to 0.39 s; a `Vec<f64>` of the same size took
    /// 0.5 s). The same holds for inputs and contexts.
    type Output: Serialize + DeserializeOwned + Send + 'static;
    /// Runs the job. A panic here becomes `JobError::Panicked` for this job only.
    fn run(self, ctx: &Self::Context) -> Self::Output;

    /// Runs once in each worker process before its first job, with the context it received
    /// (Python's `initializer`): the place to set up per-worker state in the context's
    /// `#[serde(skip)]` fields — open a file, build an index, seed an RNG from `worker.id`.
    /// An error stops the pool from starting, with its message.
    ///
    /// On the thread and serial backends all workers share one context, so `init` runs
    /// once per pool there (with `worker.id` 0); per-thread state belongs in a
    /// `thread_local!`.
    fn init(ctx: &mut Self::Context, worker: &WorkerInfo) -> Result<(), String> {
        let _ = (ctx, worker);
        Ok(())
    }
}

/// Which worker [`Task::init`] runs in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct WorkerInfo {
    /// A number unique to this worker within its pool (a replacement gets a new one).
    pub id: u32,
    /// Its process id.
    pub pid: u32,
}

impl WorkerInfo {
    /// The worker `id` of this process.
    pub(crate) fn here(id: u32) -> WorkerInfo {
        WorkerInfo {
            id,
            pid: std::process::id(),
        }
    }
}

/// The body of a [`Process`](crate::Process): a serializable value run once in a child.
///
/// Like Python's `Process(target=f, args=...)`, it reports back through a
/// [`QueueSender`](crate::QueueSender) it carries, if it needs to.
pub trait Target: Serialize + DeserializeOwned + 'static {
    /// Stable name: the child finds the code by it.
    const NAME: &'static str;
    /// Runs in the child process; a panic makes the child exit with code 101.
    fn run(self);
}

/// Runs one job, catching a panic; returns the outcome and the nanoseconds it ran.
pub(crate) fn run_caught<T: Task>(task: T, ctx: &T::Context) -> (Result<T::Output, JobError>, u64) {
    let start = Instant::now();
    let result = run_caught_untimed(task, ctx);
    let ns = u64::try_from(start.elapsed().as_nanos()).unwrap_or(u64::MAX);
    (result, ns)
}

/// Runs one job, catching a panic (the caller times it, if it wants to).
pub(crate) fn run_caught_untimed<T: Task>(
    task: T,
    ctx: &T::Context,
) -> Result<T::Output, JobError> {
    IN_TASK.with(|t| t.set(true));
    let result = panic::catch_unwind(AssertUnwindSafe(|| task.run(ctx)));
    IN_TASK.with(|t| t.set(false));
    result.map_err(|payload| {
        let (location, backtrace) = CAUGHT.with(|c| c.take()).unwrap_or_default();
        JobError::Panicked {
            message: panic_message(payload.as_ref()),
            location,
            backtrace,
            pid: std::process::id(),
        }
    })
}

thread_local! {
    /// Whether this thread is inside `Task::run` (where a panic is caught and becomes the
    /// job's error), for panic hooks that must tell such panics from fatal ones.
    pub(crate) static IN_TASK: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
    /// Where the last task panic on this thread happened, and its backtrace if asked for:
    /// filled by the panic hook, taken by `run_caught`.
    static CAUGHT: std::cell::RefCell<Option<(Option<String>, Option<String>)>> =
        const { std::cell::RefCell::new(None) };
}

/// Installs (once per process) a panic hook that records where a task panicked, and its
/// backtrace when `RUST_BACKTRACE` asks for one, before the previous hook runs as usual.
pub(crate) fn install_panic_hook() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        let previous = panic::take_hook();
        panic::set_hook(Box::new(move |info| {
            if IN_TASK.with(|t| t.get()) {
                let location = info
                    .location()
                    .map(|l| format!("{}:{}:{}", l.file(), l.line(), l.column()));
                let bt = std::backtrace::Backtrace::capture();
                let backtrace = (bt.status() == std::backtrace::BacktraceStatus::Captured)
                    .then(|| bt.to_string());
                CAUGHT.with(|c| *c.borrow_mut() = Some((location, backtrace)));
            }
            previous(info);
        }));
    });
}

/// The text of a panic payload (`&str` or `String`), or a placeholder.
pub(crate) fn panic_message(payload: &(dyn std::any::Any + Send)) -> String {
    if let Some(s) = payload.downcast_ref::<&str>() {
        (*s).to_owned()
    } else if let Some(s) = payload.downcast_ref::<String>() {
        s.clone()
    } else {
        "panic with a non-string payload".to_owned()
    }
}
