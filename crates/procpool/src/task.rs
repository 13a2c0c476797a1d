//! What runs in a worker: `Task` (a pool job), `Target` (a `Process` body), and the
//! `Registry` that lets a worker find either by its stable name.
//!
//! No function pointers cross the process boundary: the worker is the same binary,
//! re-executed, and looks the code up by name in the registry `main` handed to
//! [`serve_if_worker`](crate::serve_if_worker).

use crate::wire::worker::{self, Conn, WorkerError};
use serde::{Serialize, de::DeserializeOwned};

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
    type Output: Serialize + DeserializeOwned + Send + 'static;
    /// Runs the job. A panic here becomes `JobError::Panicked` for this job only.
    fn run(self, ctx: &Self::Context) -> Self::Output;
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

type ServeFn = fn(&mut Conn<'_>) -> Result<(), WorkerError>;
type RunFn = fn(&[u8]) -> Result<(), String>;

#[derive(Clone, Copy)]
enum Entry {
    Task(ServeFn),
    Target(RunFn),
}

/// The tasks and targets this binary can run in a worker, by name.
#[derive(Default, Clone)]
pub struct Registry {
    entries: Vec<(&'static str, Entry)>,
}

impl Registry {
    /// An empty registry.
    pub fn new() -> Registry {
        Registry::default()
    }

    /// Registers a pool task.
    ///
    /// # Panics
    /// When another task or target already has the same name (a programming error).
    pub fn task<T: Task>(mut self) -> Registry {
        self.insert(T::NAME, Entry::Task(worker::serve_task::<T>));
        self
    }

    /// Registers a process target.
    ///
    /// # Panics
    /// When another task or target already has the same name (a programming error).
    pub fn target<T: Target>(mut self) -> Registry {
        self.insert(T::NAME, Entry::Target(worker::run_target::<T>));
        self
    }

    /// Whether a task or target with this name is registered.
    pub fn contains(&self, name: &str) -> bool {
        self.entries.iter().any(|(n, _)| *n == name)
    }

    /// The registered names, sorted.
    pub fn names(&self) -> Vec<&'static str> {
        let mut names: Vec<_> = self.entries.iter().map(|(n, _)| *n).collect();
        names.sort_unstable();
        names
    }

    fn insert(&mut self, name: &'static str, entry: Entry) {
        assert!(
            !self.contains(name),
            "procpool: two tasks or targets are registered under the name {name:?}"
        );
        self.entries.push((name, entry));
    }

    pub(crate) fn find_task(&self, name: &str) -> Option<ServeFn> {
        self.entries.iter().find_map(|(n, e)| match e {
            Entry::Task(f) if *n == name => Some(*f),
            _ => None,
        })
    }

    pub(crate) fn find_target(&self, name: &str) -> Option<RunFn> {
        self.entries.iter().find_map(|(n, e)| match e {
            Entry::Target(f) if *n == name => Some(*f),
            _ => None,
        })
    }
}

impl std::fmt::Debug for Registry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Registry")
            .field("names", &self.names())
            .finish()
    }
}
