//! What a pool reports about itself: counters, the automatic chunk choice, and the
//! timeline of workers and jobs. Plain data, filled in by the policy core.

use crate::error::Error;
use std::time::Duration;

/// How many jobs travel in one frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum Chunk {
    /// Measure the first jobs and pick a size that amortizes the IPC cost.
    #[default]
    Auto,
    /// Exactly this many (>= 1).
    Fixed(usize),
}

impl std::str::FromStr for Chunk {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self, Error> {
        if s == "auto" {
            return Ok(Chunk::Auto);
        }
        match s.parse::<usize>() {
            Ok(n) if n >= 1 => Ok(Chunk::Fixed(n)),
            _ => Err(Error::Config(format!(
                "chunksize must be a whole number >= 1 or \"auto\", got {s:?}"
            ))),
        }
    }
}

impl std::fmt::Display for Chunk {
    /// `auto`, or the number: what [`str::parse`] takes back.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Chunk::Auto => f.pad("auto"),
            Chunk::Fixed(n) => f.pad(&n.to_string()),
        }
    }
}

/// What automatic chunking chose, and why.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct ChunkChoice {
    /// Jobs per chunk.
    pub chunksize: usize,
    /// Median compute time of one job, as measured.
    pub job: Duration,
    /// Median round-trip overhead of one frame (round trip minus compute), as measured.
    pub overhead: Duration,
    /// The reasoning, in one line.
    pub reason: String,
}

/// Which worker ran a job.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct WorkerRef {
    /// The worker's slot, 0..workers (a replacement takes its predecessor's slot).
    pub index: usize,
    /// Its process id (the pool's own pid for thread and serial workers).
    pub pid: u32,
}

/// One job's life, for timelines.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct JobSpan {
    /// Worker slot.
    pub worker: usize,
    /// Worker pid.
    pub pid: u32,
    /// Position in its request's input.
    pub pos: u64,
    /// When it was submitted, since the pool started.
    pub queued: Duration,
    /// When it was sent, since the pool started.
    pub sent: Duration,
    /// When its result arrived, since the pool started: the moment the pool's driver woke
    /// to read it (reading and decoding the bytes come just after).
    pub done: Duration,
    /// How long the task itself ran.
    pub compute: Duration,
    /// When its phases ended in the worker (with [`PoolBuilder::record_phases`](crate::PoolBuilder::record_phases)).
    pub phases: Option<WorkerPhases>,
}

/// When a job's phases ended inside its worker process: wall-clock nanoseconds since the
/// Unix epoch (comparable with [`Timeline::started_unix_ns`] and other processes' clocks
/// on the same machine).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub struct WorkerPhases {
    /// Its frame was read (or the job before it in the frame was done).
    pub begun_ns: u64,
    /// Its input was decoded.
    pub decoded_ns: u64,
    /// The task returned.
    pub computed_ns: u64,
    /// Its result was encoded and queued for writing.
    pub encoded_ns: u64,
}

/// One worker's life, for timelines.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct WorkerSpan {
    /// Worker slot.
    pub worker: usize,
    /// Its pid.
    pub pid: u32,
    /// When it was started, since the pool started.
    pub spawned: Duration,
    /// When it was ready for jobs (handshake and context done).
    pub ready: Option<Duration>,
    /// When it was reaped.
    pub exited: Option<Duration>,
    /// How it ended, once it has.
    pub status: Option<String>,
}

/// Everything a pool recorded about its jobs and workers.
#[derive(Debug, Clone, Default, PartialEq)]
#[non_exhaustive]
pub struct Timeline {
    /// When the pool started, in wall-clock nanoseconds since the Unix epoch (the origin of
    /// every `Duration` here).
    pub started_unix_ns: u64,
    /// Per job (only when recording was switched on).
    pub jobs: Vec<JobSpan>,
    /// Per worker, always.
    pub workers: Vec<WorkerSpan>,
}

/// Counters a pool keeps as it runs.
#[derive(Debug, Clone, Default, PartialEq)]
#[non_exhaustive]
pub struct PoolStats {
    /// Jobs with a result (success or failure).
    pub jobs_done: u64,
    /// Of those, failures.
    pub jobs_failed: u64,
    /// Jobs sent again after their worker died.
    pub jobs_redispatched: u64,
    /// Workers started, replacements included.
    pub workers_started: u64,
    /// Workers that died or were killed while the pool ran.
    pub workers_lost: u64,
    /// Workers that could not be started, or died before they were ready (each is
    /// replaced after a back-off; see the pool's design notes).
    pub spawn_failures: u64,
    /// Bytes written to worker pipes (process backend).
    pub bytes_sent: u64,
    /// Bytes read from worker pipes (process backend).
    pub bytes_received: u64,
    /// Bytes of the context held in shared memory that every worker maps (process
    /// backend; 0 when the context travels inline on each worker's socket).
    pub context_shared_bytes: u64,
    /// From building the pool to every worker being ready.
    pub ready_after: Option<Duration>,
    /// Total task compute time reported by workers.
    pub compute: Duration,
    /// The automatic chunk choice, once made.
    pub chunk: Option<ChunkChoice>,
}
