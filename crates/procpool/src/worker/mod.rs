//! The worker's side of the conversation: greet, learn the task, install the context,
//! then run chunks of jobs until the coordinator hangs up.
//!
//! Generic over plain `Read` and an [`Output`] (behind `dyn`, so the registry holds one
//! monomorphic entry point per task), so tests drive it entirely in memory. Results of
//! consecutive jobs of a chunk collect into one `Outputs` message (or `Done`, for failures
//! and phases), which goes out when the worker is about to wait for input, when a frame's
//! jobs are done and the oldest result has waited [`FLUSH_SOON`], or — in a real worker
//! (`runtime`) — from a helper thread once the oldest result has waited [`FLUSH_AFTER`]:
//! many tiny jobs cost one write, the coordinator hears of a chunk as it ends, and no
//! result waits for a long job after it.
//!
//! Job phases are timed only when the coordinator asked ([`FLAG_PHASES`]): the loop is
//! compiled twice, and the untimed one carries no wall-clock stamps. Each job's own compute
//! time is read only when asked too ([`FLAG_JOB_TIMES`]); otherwise the worker reads its
//! monotonic clock once per [`CLOCK_GROUP`] jobs, which is all the coordinator needs.

pub(crate) mod fault;
pub(crate) mod registry;
pub(crate) mod runtime;

pub use registry::Registry;

use crate::error::JobError;
use crate::task::{Target, Task, run_caught_untimed};
use crate::wire::codec;
use crate::wire::frame::{self, FrameError, FrameReader};
use crate::wire::msg::{
    Down, FLAG_JOB_TIMES, FLAG_PHASES, JobResult, Outcome, PROTOCOL_VERSION, Phases, Up,
};
use fault::Fault;
use serde::Serialize;
use std::io::{self, Read};
use std::time::{Duration, Instant, SystemTime};

/// A result waits at most about this long in a worker's output buffer.
pub(crate) const FLUSH_AFTER: Duration = Duration::from_millis(1);
/// Results that have waited this long go out when a frame's jobs are done, even with more
/// jobs already in. Without it a worker holding two chunks (the pool keeps two in flight)
/// reported the first only with the second, so the coordinator sent the third late and
/// the worker sat idle waiting for it; with it the coordinator hears of each chunk as it
/// ends. Results of frames that finish sooner (a chunk of one small job) still go out
/// together, a write per this long at most.
pub(crate) const FLUSH_SOON: Duration = Duration::from_micros(50);

/// Why a worker stopped serving (other than the coordinator hanging up, which is normal).
#[derive(Debug, thiserror::Error)]
pub(crate) enum WorkerError {
    /// The coordinator sent something we cannot accept; we told it why, if we could.
    #[error("{0}")]
    Refused(String),
    /// Framing or I/O failed.
    #[error("{0}")]
    Frame(#[from] FrameError),
    /// The input ended without a goodbye: the coordinator is gone.
    #[error("the coordinator hung up without saying goodbye (it died?)")]
    Abandoned,
}

impl From<io::Error> for WorkerError {
    fn from(e: io::Error) -> Self {
        WorkerError::Frame(FrameError::Io(e))
    }
}

/// Where a worker's frames go.
pub(crate) trait Output {
    /// Queues a whole frame (greeting, `Ready`, refusal).
    fn frame(&mut self, bytes: &[u8]) -> io::Result<()>;
    /// Queues one job's encoded [`JobResult`]: job `index` of `chunk`.
    fn result(&mut self, chunk: u64, index: u32, result: &[u8]) -> io::Result<()>;
    /// Queues the result of a job that succeeded with `output`, without phases: it goes
    /// in an `Outputs` message (as [`codec::encode_ok_output`] writes it).
    fn ok_result(
        &mut self,
        chunk: u64,
        index: u32,
        compute_ns: u64,
        output: &[u8],
    ) -> io::Result<()>;
    /// Writes out everything queued (the worker is about to wait for input).
    fn flush(&mut self) -> io::Result<()>;
    /// The largest frame it may write from now on.
    fn set_max_frame(&mut self, max: u32);
    /// A job is about to run (a buffering output makes sure nothing waits behind it).
    fn job_starting(&mut self) {}
    /// Every job of a `Jobs` frame is done: a buffering output writes out results that
    /// have waited [`FLUSH_SOON`], even though more jobs are already in (see there).
    fn frame_done(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// Results of consecutive jobs of one chunk, on their way to becoming one frame: an
/// `Outputs` frame while they all succeeded without phases, a `Done` frame otherwise.
#[derive(Debug)]
pub(crate) struct Batch {
    chunk: u64,
    first: u32,
    count: u32,
    /// The results are `Outputs` items (not `JobResult`s).
    outputs: bool,
    bytes: Vec<u8>,
    max_frame: u32,
}

impl Default for Batch {
    fn default() -> Self {
        Batch {
            chunk: 0,
            first: 0,
            count: 0,
            outputs: false,
            bytes: Vec::with_capacity(16 << 10),
            max_frame: frame::DEFAULT_MAX_FRAME,
        }
    }
}

impl Batch {
    /// Adds an encoded [`JobResult`], sealing what came before into `out` first when it
    /// does not continue it (another chunk, a gap, outputs) or the frame would grow too
    /// large.
    pub(crate) fn push(
        &mut self,
        out: &mut Vec<u8>,
        chunk: u64,
        index: u32,
        result: &[u8],
    ) -> io::Result<()> {
        self.push_with(out, chunk, index, false, result.len(), |b| {
            b.extend_from_slice(result)
        })
    }

    /// Adds a successful job's `output`, sealing first as [`push`] does.
    ///
    /// [`push`]: Batch::push
    #[inline]
    pub(crate) fn push_output(
        &mut self,
        out: &mut Vec<u8>,
        chunk: u64,
        index: u32,
        compute_ns: u64,
        output: &[u8],
    ) -> io::Result<()> {
        self.push_with(out, chunk, index, true, output.len() + 18, |b| {
            codec::encode_ok_output(b, compute_ns, output)
        })
    }

    /// Adds a result that `write` appends (about `len` bytes; an `Outputs` item when
    /// `outputs`), sealing first as [`push`] does.
    ///
    /// [`push`]: Batch::push
    #[inline]
    fn push_with(
        &mut self,
        out: &mut Vec<u8>,
        chunk: u64,
        index: u32,
        outputs: bool,
        len: usize,
        write: impl FnOnce(&mut Vec<u8>),
    ) -> io::Result<()> {
        let continues = self.count > 0
            && self.chunk == chunk
            && self.outputs == outputs
            && self.first.checked_add(self.count) == Some(index)
            && self.bytes.len() + len + 64 < (self.max_frame / 2) as usize;
        if !continues {
            self.seal(out)?;
            self.chunk = chunk;
            self.first = index;
            self.outputs = outputs;
        }
        write(&mut self.bytes);
        self.count += 1;
        Ok(())
    }

    /// Appends the collected results to `out` as one `Outputs` or `Done` frame.
    pub(crate) fn seal(&mut self, out: &mut Vec<u8>) -> io::Result<()> {
        if self.count == 0 {
            return Ok(());
        }
        let (chunk, first, count, results) = (self.chunk, self.first, self.count, &self.bytes);
        let message = if self.outputs {
            Up::Outputs {
                chunk,
                first,
                count,
                results,
            }
        } else {
            Up::Done {
                chunk,
                first,
                count,
                results,
            }
        };
        let written = frame::write_frame(out, &message, self.max_frame);
        self.count = 0;
        self.bytes.clear();
        written
            .map(|_| ())
            .map_err(|e| io::Error::other(e.to_string()))
    }

    /// Appends a whole frame to `out`, after the results collected so far.
    pub(crate) fn frame(&mut self, out: &mut Vec<u8>, bytes: &[u8]) -> io::Result<()> {
        self.seal(out)?;
        out.extend_from_slice(bytes);
        Ok(())
    }

    /// The largest frame from now on.
    pub(crate) fn set_max_frame(&mut self, max: u32) {
        self.max_frame = max;
    }
}

/// An output that collects everything in memory (tests, fuzzing).
#[cfg(any(test, feature = "fuzzing"))]
#[derive(Debug, Default)]
pub(crate) struct MemOutput {
    /// Frames written so far.
    pub bytes: Vec<u8>,
    batch: Batch,
}

#[cfg(any(test, feature = "fuzzing"))]
impl Output for MemOutput {
    fn frame(&mut self, bytes: &[u8]) -> io::Result<()> {
        self.batch.frame(&mut self.bytes, bytes)
    }

    fn result(&mut self, chunk: u64, index: u32, result: &[u8]) -> io::Result<()> {
        self.batch.push(&mut self.bytes, chunk, index, result)
    }

    fn ok_result(
        &mut self,
        chunk: u64,
        index: u32,
        compute_ns: u64,
        output: &[u8],
    ) -> io::Result<()> {
        self.batch
            .push_output(&mut self.bytes, chunk, index, compute_ns, output)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.batch.seal(&mut self.bytes)
    }

    fn set_max_frame(&mut self, max: u32) {
        self.batch.set_max_frame(max);
    }
}

/// Where the descriptors that came with the input are (a real worker's socket collects
/// them; in-memory tests hand them over directly).
pub(crate) trait FdSource {
    /// Every descriptor received so far and not yet taken, in arrival order.
    fn take_fds(&self) -> Vec<std::os::fd::OwnedFd>;
}

/// No descriptors ever (in-memory input).
#[cfg(any(test, feature = "fuzzing", feature = "mpi"))]
pub(crate) struct NoFds;

#[cfg(any(test, feature = "fuzzing", feature = "mpi"))]
impl FdSource for NoFds {
    fn take_fds(&self) -> Vec<std::os::fd::OwnedFd> {
        Vec::new()
    }
}

impl FdSource for std::sync::Mutex<Vec<std::os::fd::OwnedFd>> {
    fn take_fds(&self) -> Vec<std::os::fd::OwnedFd> {
        std::mem::take(
            &mut *self
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner),
        )
    }
}

/// Both halves of a worker's connection to its coordinator.
pub(crate) struct Conn<'a> {
    reader: FrameReader,
    input: &'a mut dyn Read,
    output: &'a mut dyn Output,
    fds: &'a dyn FdSource,
    fault: Option<Fault>,
    max_frame: u32,
    flags: u32,
    scratch: Vec<u8>,
    /// This worker's id within its pool (for `Task::init`).
    id: u32,
}

impl Conn<'_> {
    /// The next frame; flushes the output first when the read might block. `None` at a
    /// clean end of input.
    fn recv(&mut self) -> Result<Option<&[u8]>, WorkerError> {
        while !self.reader.has_frame() {
            self.output.flush()?;
            match self.reader.fill_from(self.input) {
                Ok(0) => {
                    self.reader.finish()?;
                    return Ok(None);
                }
                Ok(_) => {}
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e.into()),
            }
        }
        Ok(self.reader.next_frame()?)
    }

    /// Queues one message as a frame.
    fn send<T: Serialize>(&mut self, msg: &T) -> Result<(), WorkerError> {
        self.scratch.clear();
        frame::write_frame(&mut self.scratch, msg, self.max_frame)?;
        self.output.frame(&self.scratch)?;
        Ok(())
    }

    /// Refuses: tells the coordinator why (best effort) and fails with the same reason.
    fn refuse(&mut self, reason: String) -> WorkerError {
        let _ = self.send(&Up::Refused {
            reason: reason.clone(),
        });
        let _ = self.output.flush();
        WorkerError::Refused(reason)
    }
}

/// Wall-clock nanoseconds since the Unix epoch (0 if the clock is before it).
fn wall_ns() -> u64 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX))
}

/// Serves one coordinator connection to its end: `Ok` after the coordinator's goodbye (or
/// when it hung up before the greeting was done); [`WorkerError::Abandoned`] when the input
/// ended in the middle of the job loop without one.
pub(crate) fn serve(
    registry: &Registry,
    input: &mut dyn Read,
    output: &mut dyn Output,
    fds: &dyn FdSource,
    fault: Option<Fault>,
    id: u32,
) -> Result<(), WorkerError> {
    let mut conn = Conn {
        id,
        reader: FrameReader::new(frame::DEFAULT_MAX_FRAME),
        input,
        output,
        fds,
        fault,
        max_frame: frame::DEFAULT_MAX_FRAME,
        flags: 0,
        scratch: Vec::with_capacity(4096),
    };
    if let Some(f) = fault {
        f.before_hello();
    }
    let protocol = match fault {
        Some(Fault::Version(v)) => v,
        _ => PROTOCOL_VERSION,
    };
    conn.send(&Up::Hello {
        protocol,
        pid: std::process::id(),
    })?;
    let Some(first) = conn.recv()? else {
        return Ok(());
    };
    let (task, max_frame, flags) = match codec::decode_borrowed::<Down<'_>>(first) {
        Ok(Down::Hello {
            protocol,
            task,
            max_frame,
            flags,
        }) if protocol == PROTOCOL_VERSION => (task.to_owned(), max_frame, flags),
        Ok(Down::Hello { protocol, .. }) => {
            return Err(conn.refuse(format!(
                "coordinator speaks protocol version {protocol}, this worker speaks \
                 {PROTOCOL_VERSION}"
            )));
        }
        Ok(other) => {
            let what = describe(&other);
            return Err(conn.refuse(format!("expected a greeting, got {what}")));
        }
        Err(e) => {
            return Err(conn.refuse(format!(
                "undecodable greeting (another protocol version?): {e}"
            )));
        }
    };
    conn.reader.set_max(max_frame);
    conn.max_frame = max_frame.min(frame::MAX_FRAME_LIMIT);
    conn.output.set_max_frame(conn.max_frame);
    conn.flags = flags;
    if let Some(serve_task) = registry.find_task(&task) {
        return serve_task(&mut conn);
    }
    if let Some(run) = registry.find_target(&task) {
        let Some(frame) = conn.recv()? else {
            return Ok(());
        };
        let payload = match codec::decode_borrowed::<Down<'_>>(frame) {
            Ok(Down::Run { payload }) => payload.to_vec(),
            Ok(other) => {
                let what = describe(&other);
                return Err(conn.refuse(format!("expected a target to run, got {what}")));
            }
            Err(e) => return Err(conn.refuse(format!("undecodable target: {e}"))),
        };
        conn.send(&Up::Ready)?;
        conn.output.flush()?;
        return run(&payload).map_err(|e| WorkerError::Refused(format!("target {task:?}: {e}")));
    }
    let known = registry.names().join(", ");
    Err(conn.refuse(format!(
        "no task or target named {task:?} is registered in this binary (registered: {}); \
         add it to the Registry given to serve_if_worker",
        if known.is_empty() { "none" } else { &known }
    )))
}

fn describe(msg: &Down<'_>) -> &'static str {
    match msg {
        Down::Hello { .. } => "a second greeting",
        Down::Context { .. } => "a context",
        Down::Jobs { .. } => "jobs",
        Down::Run { .. } => "a process target",
        Down::SharedContext { .. } => "a shared context",
        Down::Bye => "a goodbye",
    }
}

/// The pool loop for task `T` (registered per task in the [`Registry`]).
pub(crate) fn serve_task<T: Task>(conn: &mut Conn<'_>) -> Result<(), WorkerError> {
    let fd_source = conn.fds;
    let Some(frame) = conn.recv()? else {
        return Ok(());
    };
    let ctx: Result<T::Context, String> = match codec::decode_borrowed::<Down<'_>>(frame) {
        Ok(Down::Context { payload }) => codec::decode_borrowed::<T::Context>(payload)
            .map_err(|e| format!("could not decode the context of task {:?}: {e}", T::NAME)),
        Ok(Down::SharedContext {
            inline,
            body,
            buffers,
            regions,
        }) => {
            let fds = fd_source.take_fds();
            crate::context::install::<T::Context>(inline, body, &buffers, &regions, fds).map_err(
                |e| {
                    format!(
                        "could not install the shared context of task {:?}: {e}",
                        T::NAME
                    )
                },
            )
        }
        Ok(other) => Err(format!("expected a context, got {}", describe(&other))),
        Err(e) => Err(format!("undecodable context frame: {e}")),
    };
    let mut ctx = ctx.map_err(|e| conn.refuse(e))?;
    if let Err(e) = T::init(&mut ctx, &crate::task::WorkerInfo::here(conn.id)) {
        return Err(conn.refuse(format!(
            "Task::init of task {:?} failed in worker pid {}: {e}",
            T::NAME,
            std::process::id()
        )));
    }
    conn.send(&Up::Ready)?;
    let each_job = conn.flags & (FLAG_PHASES | FLAG_JOB_TIMES) != 0;
    if conn.flags & FLAG_PHASES != 0 {
        run_jobs::<T, true>(conn, &ctx, each_job)
    } else {
        run_jobs::<T, false>(conn, &ctx, each_job)
    }
}

/// Jobs per clock read when the coordinator did not ask for each job's time: on a VM a
/// clock read can cost more than an empty job, and what the coordinator needs unasked is
/// the total (the running mean cost per job that sizes chunks, the pool's compute time).
const CLOCK_GROUP: usize = 64;

/// Runs chunks until the coordinator hangs up; `TIMED` stamps each job's phases;
/// `each_job` reads the clock after every job (otherwise after every [`CLOCK_GROUP`] jobs
/// and a chunk's last, the time going to the last job of each group and 0 to the others).
fn run_jobs<T: Task, const TIMED: bool>(
    conn: &mut Conn<'_>,
    ctx: &T::Context,
    each_job: bool,
) -> Result<(), WorkerError> {
    let mut output_bytes = Vec::new();
    let mut result = Vec::new();
    let mut sent = 0u64;
    let fault = conn.fault;
    let max_frame = conn.max_frame as usize;
    loop {
        let Conn {
            reader,
            input,
            output,
            ..
        } = conn;
        // Inline `recv` (the frame borrows the reader while the output is used).
        while !reader.has_frame() {
            output.flush()?;
            match reader.fill_from(*input) {
                Ok(0) => {
                    reader.finish()?;
                    return Err(WorkerError::Abandoned);
                }
                Ok(_) => {}
                // A coordinator that died before reading what we wrote resets the
                // connection: abandoned all the same.
                Err(e) if e.kind() == io::ErrorKind::ConnectionReset => {
                    return Err(WorkerError::Abandoned);
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e.into()),
            }
        }
        let Some(frame) = reader.next_frame()? else {
            return Ok(());
        };
        let mut arrived = if TIMED { wall_ns() } else { 0 };
        // A job's cost is the time since the previous timed one ended (or the frame
        // arrived): one clock read per job, or per group of them.
        let mut last = Instant::now();
        // Jobs frames are read in place (`decode_jobs`); anything else through serde.
        let jobs = match codec::decode_jobs(frame) {
            Some(Ok(jobs)) => jobs,
            Some(Err(e)) => {
                return Err(refuse_on(*output, format!("undecodable jobs frame: {e}")));
            }
            None => match codec::decode_borrowed::<Down<'_>>(frame) {
                Ok(Down::Bye) => {
                    output.flush()?;
                    return Ok(());
                }
                Ok(other) => {
                    let what = describe(&other);
                    return Err(refuse_on(*output, format!("expected jobs, got {what}")));
                }
                Err(e) => {
                    return Err(refuse_on(*output, format!("undecodable jobs frame: {e}")));
                }
            },
        };
        let (chunk, first, count) = (jobs.chunk, jobs.first, jobs.count);
        for (i, payload) in jobs.payloads().enumerate() {
            let index = first.saturating_add(i as u32);
            output.job_starting();
            if let (Some(f), Some(tag)) = (fault, jobs.tag(i)) {
                f.before_job(tag);
            }
            // A chunk's first job began when its frame arrived; each later one when the
            // job before it was done.
            let begun = match (TIMED, std::mem::replace(&mut arrived, 0)) {
                (false, _) => 0,
                (true, 0) => wall_ns(),
                (true, at) => at,
            };
            let mut phases = Phases {
                begun,
                ..Phases::default()
            };
            output_bytes.clear();
            let (outcome, compute_ns) = match codec::decode::<T>(payload) {
                Ok(task) => {
                    if TIMED {
                        phases.decoded = wall_ns();
                    }
                    let r = run_caught_untimed(task, ctx);
                    let ns = if each_job || (i + 1) % CLOCK_GROUP == 0 || i + 1 == count {
                        let now = Instant::now();
                        let ns = now.duration_since(last).as_nanos();
                        last = now;
                        u64::try_from(ns).unwrap_or(u64::MAX)
                    } else {
                        0
                    };
                    if TIMED {
                        phases.computed = wall_ns();
                    }
                    let outcome = match r {
                        Ok(out) => match codec::encode_into(&out, &mut output_bytes) {
                            Ok(()) if output_bytes.len() + 128 > max_frame => {
                                Outcome::Err(JobError::Codec {
                                    message: format!(
                                        "output of {} bytes is over the frame limit of \
                                         {max_frame} bytes",
                                        output_bytes.len()
                                    ),
                                })
                            }
                            Ok(()) => Outcome::Ok(&output_bytes),
                            Err(e) => Outcome::Err(JobError::Codec {
                                message: format!("output: {e}"),
                            }),
                        },
                        Err(e) => Outcome::Err(e),
                    };
                    (outcome, ns)
                }
                Err(e) => (
                    Outcome::Err(JobError::Codec {
                        message: format!("input: {e}"),
                    }),
                    0,
                ),
            };
            if TIMED {
                phases.encoded = wall_ns();
            }
            if let (false, Outcome::Ok(bytes)) = (TIMED, &outcome) {
                // The commonest result, encoded in place by outputs that can.
                output.ok_result(chunk, index, compute_ns, bytes)?;
                sent += 1;
                if let Some(f) = fault {
                    f.after_result(sent, *output)?;
                }
                continue;
            }
            result.clear();
            let encoded = codec::encode_into(
                &JobResult {
                    compute_ns,
                    outcome,
                    phases: TIMED.then_some(phases),
                },
                &mut result,
            );
            if let Err(e) = encoded {
                result.clear();
                codec::encode_into(
                    &JobResult {
                        compute_ns,
                        outcome: Outcome::Err(JobError::Codec {
                            message: format!("result: {e}"),
                        }),
                        phases: None,
                    },
                    &mut result,
                )
                .map_err(|e| WorkerError::Frame(FrameError::Codec(e)))?;
            }
            output.result(chunk, index, &result)?;
            sent += 1;
            if let Some(f) = fault {
                f.after_result(sent, *output)?;
            }
        }
        output.frame_done()?;
    }
}

/// Refuses on a bare output (inside the job loop, where the connection is split).
fn refuse_on(output: &mut dyn Output, reason: String) -> WorkerError {
    let mut bytes = Vec::new();
    if frame::write_frame(
        &mut bytes,
        &Up::Refused {
            reason: reason.clone(),
        },
        frame::DEFAULT_MAX_FRAME,
    )
    .is_ok()
    {
        let _ = output.frame(&bytes);
        let _ = output.flush();
    }
    WorkerError::Refused(reason)
}

/// Runs a process target from its encoded bytes.
pub(crate) fn run_target<T: Target>(payload: &[u8]) -> Result<(), String> {
    let target: T = codec::decode(payload).map_err(|e| e.to_string())?;
    target.run();
    Ok(())
}

/// Runs the worker side of the protocol over in-memory input, as a real worker would over
/// its socket: returns what it wrote and how it ended. For tests and fuzzing: any input,
/// however hostile, must end in a clean `Err`, never a panic or an unbounded allocation.
#[cfg(any(test, feature = "fuzzing"))]
pub(crate) fn serve_in_memory(
    registry: &Registry,
    mut input: &[u8],
) -> (Vec<u8>, Result<(), String>) {
    let mut output = MemOutput::default();
    let result =
        serve(registry, &mut input, &mut output, &NoFds, None, 0).map_err(|e| e.to_string());
    (output.bytes, result)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde::Deserialize;

    #[derive(Serialize, Deserialize)]
    struct AddCtx(u64);
    impl Task for AddCtx {
        const NAME: &'static str = "add-ctx";
        type Context = u64;
        type Output = u64;
        fn run(self, ctx: &u64) -> u64 {
            if self.0 == 13 {
                panic!("unlucky {}", self.0);
            }
            self.0 + ctx
        }
    }

    fn registry() -> Registry {
        Registry::new().task::<AddCtx>()
    }

    fn frames(msgs: &[Down<'_>]) -> Vec<u8> {
        let mut out = Vec::new();
        for m in msgs {
            frame::write_frame(&mut out, m, frame::DEFAULT_MAX_FRAME).unwrap();
        }
        out
    }

    /// What came back: greetings and refusals as text, results as (chunk, index, outcome).
    #[derive(Debug, PartialEq)]
    enum Reply {
        Hello(u32),
        Ready,
        Refused(String),
        Result(u64, u32, Result<u64, JobError>),
    }

    fn replies(bytes: &[u8]) -> Vec<Reply> {
        let mut r = FrameReader::new(frame::DEFAULT_MAX_FRAME);
        r.push(bytes);
        let mut out = Vec::new();
        while let Some(f) = r.next_frame().unwrap() {
            match codec::decode_borrowed::<Up<'_>>(f).unwrap() {
                Up::Hello { protocol, .. } => out.push(Reply::Hello(protocol)),
                Up::Ready => out.push(Reply::Ready),
                Up::Refused { reason } => out.push(Reply::Refused(reason)),
                Up::Done {
                    chunk,
                    first,
                    count,
                    results,
                } => {
                    let mut rest = results;
                    for i in 0..count {
                        let (r, used) = codec::decode_prefix::<JobResult<'_>>(rest).unwrap();
                        rest = &rest[used..];
                        let v = match r.outcome {
                            Outcome::Ok(b) => Ok(codec::decode::<u64>(b).unwrap()),
                            Outcome::Err(e) => Err(e),
                        };
                        out.push(Reply::Result(chunk, first + i, v));
                    }
                    assert!(rest.is_empty());
                }
                Up::Outputs {
                    chunk,
                    first,
                    count,
                    results,
                } => {
                    let mut rest = results;
                    for i in 0..count {
                        let (_, b, tail) = codec::split_ok_output(rest).unwrap();
                        rest = tail;
                        let v = Ok(codec::decode::<u64>(b).unwrap());
                        out.push(Reply::Result(chunk, first + i, v));
                    }
                    assert!(rest.is_empty());
                }
            }
        }
        r.finish().unwrap();
        out
    }

    /// `payloads` as the items a `Jobs` message holds.
    fn items(payloads: &[&[u8]]) -> Vec<u8> {
        let mut out = Vec::new();
        for p in payloads {
            codec::put_item(&mut out, p);
        }
        out
    }

    fn hello(task: &str) -> Down<'_> {
        Down::Hello {
            protocol: PROTOCOL_VERSION,
            task,
            max_frame: frame::DEFAULT_MAX_FRAME,
            flags: 0,
        }
    }

    fn run(input: &[u8]) -> (Vec<Reply>, Result<(), WorkerError>) {
        let mut out = MemOutput::default();
        let r = serve(&registry(), &mut &input[..], &mut out, &NoFds, None, 0);
        (replies(&out.bytes), r)
    }

    #[test]
    fn serves_chunks_in_memory_and_survives_a_panic() {
        let ctx = codec::encode(&100u64).unwrap();
        let j1 = codec::encode(&AddCtx(1)).unwrap();
        let j2 = codec::encode(&AddCtx(13)).unwrap();
        let input = frames(&[
            hello("add-ctx"),
            Down::Context { payload: &ctx },
            Down::Jobs {
                chunk: 7,
                first: 0,
                count: 2,
                payloads: &items(&[&j1, &j2]),
                tags: vec![],
            },
            Down::Jobs {
                chunk: 9,
                first: 3,
                count: 1,
                payloads: &items(&[&j1]),
                tags: vec![],
            },
            Down::Bye,
        ]);
        let (got, r) = run(&input);
        r.unwrap();
        assert_eq!(got[0], Reply::Hello(PROTOCOL_VERSION));
        assert_eq!(got[1], Reply::Ready);
        assert_eq!(got[2], Reply::Result(7, 0, Ok(101)));
        assert!(
            matches!(&got[3], Reply::Result(7, 1, Err(JobError::Panicked { message, pid, .. }))
                if message == "unlucky 13" && *pid == std::process::id()),
            "{:?}",
            got[3]
        );
        assert_eq!(got[4], Reply::Result(9, 3, Ok(101)));
        assert_eq!(got.len(), 5);
    }

    #[test]
    fn a_chunks_results_share_one_frame() {
        let ctx = codec::encode(&1u64).unwrap();
        let jobs: Vec<Vec<u8>> = (0..50)
            .map(|i| codec::encode(&AddCtx(i + 20)).unwrap())
            .collect();
        let input = frames(&[
            hello("add-ctx"),
            Down::Context { payload: &ctx },
            Down::Jobs {
                chunk: 1,
                first: 0,
                count: 50,
                payloads: &items(&jobs.iter().map(Vec::as_slice).collect::<Vec<_>>()),
                tags: vec![],
            },
            Down::Bye,
        ]);
        let mut out = MemOutput::default();
        serve(&registry(), &mut &input[..], &mut out, &NoFds, None, 0).unwrap();
        let mut r = FrameReader::new(frame::DEFAULT_MAX_FRAME);
        r.push(&out.bytes);
        let mut frames = 0;
        while let Some(f) = r.next_frame().unwrap() {
            frames += 1;
            if frames == 3 {
                let msg = codec::decode_borrowed::<Up<'_>>(f).unwrap();
                assert!(matches!(msg, Up::Outputs { count: 50, .. }), "{msg:?}");
            }
        }
        assert_eq!(frames, 3, "hello, ready, and one frame for 50 results");
        let results: Vec<Reply> = replies(&out.bytes).into_iter().skip(2).collect();
        assert_eq!(results.len(), 50);
        assert_eq!(results[49], Reply::Result(1, 49, Ok(70)));
    }

    #[test]
    fn an_end_without_goodbye_is_abandonment() {
        let ctx = codec::encode(&1u64).unwrap();
        let input = frames(&[hello("add-ctx"), Down::Context { payload: &ctx }]);
        let (got, r) = run(&input);
        assert!(matches!(r, Err(WorkerError::Abandoned)), "{r:?}");
        assert_eq!(got, [Reply::Hello(PROTOCOL_VERSION), Reply::Ready]);
    }

    #[test]
    fn refuses_unknown_task_and_other_versions() {
        let (got, r) = run(&frames(&[hello("nope")]));
        let err = r.unwrap_err().to_string();
        assert!(err.contains("no task or target named \"nope\""), "{err}");
        assert!(err.contains("add-ctx"), "{err}");
        assert!(matches!(got.last(), Some(Reply::Refused(_))));

        let (_, r) = run(&frames(&[Down::Hello {
            protocol: PROTOCOL_VERSION + 1,
            task: "add-ctx",
            max_frame: 1024,
            flags: 0,
        }]));
        assert!(r.unwrap_err().to_string().contains("protocol version"));
    }

    #[test]
    fn garbage_and_truncation_are_errors_not_panics() {
        let garbage = [5u8, 0, 0, 0, 0xff, 0xff, 0xff, 0xff, 0xff];
        assert!(run(&garbage).1.is_err());

        let ctx = codec::encode(&1u64).unwrap();
        let mut input = frames(&[hello("add-ctx"), Down::Context { payload: &ctx }]);
        input.extend_from_slice(&[200, 0, 0, 0, 1, 2]);
        let err = run(&input).1.unwrap_err().to_string();
        assert!(err.contains("middle of a frame"), "{err}");

        // A context whose payload is two bytes where a u64 needs eight.
        let input = frames(&[hello("add-ctx"), Down::Context { payload: &[1, 2] }]);
        let err = run(&input).1.unwrap_err().to_string();
        assert!(err.contains("could not decode the context"), "{err}");
    }

    #[test]
    fn undecodable_job_is_a_codec_error_for_that_job() {
        let ctx = codec::encode(&1u64).unwrap();
        let input = frames(&[
            hello("add-ctx"),
            Down::Context { payload: &ctx },
            Down::Jobs {
                chunk: 2,
                first: 0,
                count: 1,
                payloads: &items(&[&[1, 2, 3]]),
                tags: vec![],
            },
            Down::Bye,
        ]);
        let (got, r) = run(&input);
        r.unwrap();
        assert!(matches!(
            got.last(),
            Some(Reply::Result(2, 0, Err(JobError::Codec { .. })))
        ));
    }

    #[test]
    fn phases_are_stamped_only_when_asked() {
        let ctx = codec::encode(&1u64).unwrap();
        let job = codec::encode(&AddCtx(2)).unwrap();
        for flags in [0, FLAG_PHASES] {
            let input = frames(&[
                Down::Hello {
                    protocol: PROTOCOL_VERSION,
                    task: "add-ctx",
                    max_frame: frame::DEFAULT_MAX_FRAME,
                    flags,
                },
                Down::Context { payload: &ctx },
                Down::Jobs {
                    chunk: 0,
                    first: 0,
                    count: 1,
                    payloads: &items(&[&job]),
                    tags: vec![],
                },
                Down::Bye,
            ]);
            let mut out = MemOutput::default();
            serve(&registry(), &mut &input[..], &mut out, &NoFds, None, 0).unwrap();
            let mut r = FrameReader::new(frame::DEFAULT_MAX_FRAME);
            r.push(&out.bytes);
            let mut phases = None;
            while let Some(f) = r.next_frame().unwrap() {
                match codec::decode_borrowed::<Up<'_>>(f).unwrap() {
                    Up::Done { results, .. } => {
                        phases = Some(
                            codec::decode_prefix::<JobResult<'_>>(results)
                                .unwrap()
                                .0
                                .phases,
                        );
                    }
                    // A success without phases travels as an output.
                    Up::Outputs { .. } => phases = Some(None),
                    _ => {}
                }
            }
            let phases = phases.expect("a result");
            match phases {
                None => assert_eq!(flags, 0),
                Some(p) => {
                    assert_eq!(flags, FLAG_PHASES);
                    assert!(p.begun <= p.decoded && p.decoded <= p.computed);
                    assert!(p.computed <= p.encoded && p.begun > 0);
                }
            }
        }
    }
}
