//! The tasks and targets this binary can run in a worker, by their stable names.

use super::{Conn, WorkerError};
use crate::task::{Target, Task};
use std::sync::OnceLock;

/// The names `serve_if_worker` was given in this process (when it was called).
static REGISTERED: OnceLock<Vec<&'static str>> = OnceLock::new();

/// Remembers what this binary's workers can run, so a pool can refuse an unregistered
/// task before starting any process.
pub(crate) fn remember(registry: &Registry) {
    let _ = REGISTERED.set(registry.names());
}

/// Why a process pool could not run task `name` here, if it could not: it is missing from
/// the registry handed to `serve_if_worker`, or that was never called in this process.
pub(crate) fn check_registered(name: &str) -> Option<String> {
    match REGISTERED.get() {
        Some(names) if names.contains(&name) => None,
        Some(names) => Some(format!(
            "task {name:?} is not in the Registry given to procpool::serve_if_worker \
             (registered: {}); add .task::<...>() for it",
            if names.is_empty() {
                "none".to_owned()
            } else {
                names.join(", ")
            }
        )),
        None => Some(format!(
            "procpool::serve_if_worker was never called in this process, so no worker could \
             serve task {name:?}: call it first thing in main with a Registry that has the \
             task (in a test binary, add procpool::test_support!(...) instead)"
        )),
    }
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
        self.insert(T::NAME, Entry::Task(super::serve_task::<T>));
        self
    }

    /// Registers a process target.
    ///
    /// # Panics
    /// When another task or target already has the same name (a programming error).
    pub fn target<T: Target>(mut self) -> Registry {
        self.insert(T::NAME, Entry::Target(super::run_target::<T>));
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
