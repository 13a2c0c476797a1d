//! Errors: `Error` for what goes wrong with the pool or a call on it, `JobError` for what
//! happened to one job (it travels over the wire, so it is plain data).

use serde::{Deserialize, Serialize};
use std::fmt;
use std::time::Duration;

/// What went wrong with one job; the rest of the run goes on.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub enum JobError {
    /// The task panicked; the worker caught it and lives on.
    Panicked {
        /// The panic message (the payload when it was a string).
        message: String,
        /// Where: `file:line:column` of the panic, when known.
        location: Option<String>,
        /// The backtrace, captured when `RUST_BACKTRACE` (or `RUST_LIB_BACKTRACE`) asks for one.
        backtrace: Option<String>,
        /// The process that ran the task (the pool's own for thread and serial workers).
        pid: u32,
    },
    /// The worker process running the job died, as often as the retry policy allows.
    WorkerDied {
        /// Pid of the last worker that died holding the job.
        pid: u32,
        /// How it ended, e.g. "killed by SIGKILL (9)" or "exited with code 3".
        status: String,
        /// How many times the job was started: once per crash it was charged with, plus any
        /// run cut short while its worker held other jobs too (see the pool's design notes).
        /// Tasks should be idempotent: a crash can make a job run again.
        attempts: u32,
        /// The last lines the worker wrote to stderr (may be empty).
        stderr_tail: String,
    },
    /// The job ran longer than the pool's job timeout; its worker was killed.
    TimedOut {
        /// Pid of the worker that was killed (0 for thread and serial backends).
        pid: u32,
        /// The timeout that was exceeded.
        after: Duration,
    },
    /// The job's input or output could not be encoded or decoded.
    Codec {
        /// What the codec said.
        message: String,
    },
    /// The pool was terminated before the job finished.
    Terminated,
    /// No worker could be started to run the job (the pool gave up; the reason says why).
    NoWorker {
        /// Why no worker can run.
        reason: String,
    },
}

impl fmt::Display for JobError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            JobError::Panicked {
                message,
                location,
                backtrace,
                pid,
            } => {
                write!(f, "task panicked in pid {pid}")?;
                if let Some(at) = location {
                    write!(f, " at {at}")?;
                }
                write!(f, ": {message}")?;
                if let Some(bt) = backtrace {
                    write!(f, "\nbacktrace:\n{}", bt.trim_end())?;
                }
                Ok(())
            }
            JobError::WorkerDied {
                pid,
                status,
                attempts,
                stderr_tail,
            } => {
                write!(
                    f,
                    "worker pid {pid} {status} while running the job (started {attempts} {})",
                    if *attempts == 1 { "time" } else { "times" }
                )?;
                let tail = stderr_tail.trim_end();
                if !tail.is_empty() {
                    write!(f, "; its stderr ended with:\n{tail}")?;
                }
                Ok(())
            }
            JobError::TimedOut { pid, after } if *pid != 0 => {
                write!(
                    f,
                    "job exceeded its timeout of {after:?}; worker pid {pid} was killed"
                )
            }
            JobError::TimedOut { after, .. } => write!(f, "job exceeded its timeout of {after:?}"),
            JobError::Codec { message } => {
                write!(f, "could not encode or decode the job: {message}")
            }
            JobError::Terminated => write!(f, "the pool was terminated before the job finished"),
            JobError::NoWorker { reason } => write!(f, "no worker could run the job: {reason}"),
        }
    }
}

impl std::error::Error for JobError {}

/// Everything a pool, process or queue call can fail with.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A builder setting or call argument is out of range; the message names the value.
    #[error("invalid setting: {0}")]
    Config(String),
    /// No worker could be started, or the pool gave up starting them; `reason` says why
    /// (the failures it saw), `source` is the operating system's error when there was one.
    #[error("could not start workers: {reason}")]
    Spawn {
        /// Why, in words.
        reason: String,
        /// The system error behind it, if any (say `EAGAIN` from fork).
        #[source]
        source: Option<std::io::Error>,
    },
    /// A value could not be encoded for a worker (a context, a process target, a queued
    /// value); `what` names it.
    #[error("could not encode {what}: {source}")]
    Codec {
        /// What was being encoded.
        what: String,
        /// What the codec said.
        #[source]
        source: crate::wire::codec::CodecError,
    },
    /// A put on a queue through a handle (or the queue) after its `close()`.
    #[error("queue {queue:?} is closed: close() was called on this handle")]
    QueueClosed {
        /// The queue's name.
        queue: String,
    },
    /// A queue handle whose queue is gone: its owner dropped it or exited.
    #[error("queue {queue:?} is gone: its owner dropped it or exited")]
    QueueGone {
        /// The queue's name.
        queue: String,
        /// How talking to it failed.
        #[source]
        source: std::io::Error,
    },
    /// The job of an `apply` or `apply_async` failed, and why.
    #[error("the job failed: {0}")]
    Failed(JobError),
    /// One job of a `map`, `imap` or `map_async` failed (its position in the input, and why).
    #[error("job {pos} failed: {error}")]
    Job {
        /// Position of the job in its input.
        pos: u64,
        /// What happened to it.
        error: JobError,
    },
    /// A peer sent bytes that are not our protocol.
    #[error("protocol error: {0}")]
    Protocol(String),
    /// The pool was closed or terminated; it takes no new work.
    #[error("the pool is closed")]
    Closed,
    /// A timed wait ran out.
    #[error("timed out after {0:?}")]
    Timeout(Duration),
    /// A pool was started from a task running in a pool's worker (nested pools are
    /// refused, like Python's pool workers, which may not have children).
    #[error(
        "cannot start a pool or process from a task running in a pool's worker (nested pools \
         are not supported); start it in the coordinator, or use a thread pool in the task"
    )]
    InsideWorker,
    /// An operating-system call failed.
    #[error("{context}: {source}")]
    Io {
        /// What we were doing.
        context: String,
        /// What the OS said.
        source: std::io::Error,
    },
}

impl Error {
    /// A start-up failure, without a system error behind it.
    pub(crate) fn spawn(reason: impl Into<String>) -> Error {
        Error::Spawn {
            reason: reason.into(),
            source: None,
        }
    }

    /// Wraps an I/O error with what we were doing when it happened.
    pub(crate) fn io(context: impl Into<String>, source: std::io::Error) -> Error {
        Error::Io {
            context: context.into(),
            source,
        }
    }

    /// The job error inside, when this is a job failure.
    pub fn job_error(&self) -> Option<&JobError> {
        match self {
            Error::Job { error, .. } | Error::Failed(error) => Some(error),
            _ => None,
        }
    }
}

/// The crate's result type.
pub type Result<T, E = Error> = std::result::Result<T, E>;
