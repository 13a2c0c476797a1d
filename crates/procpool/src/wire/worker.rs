//! The worker's side of the conversation: greet, learn the task, install the context,
//! then run jobs until the coordinator hangs up.
//!
//! Generic over plain `Read`/`Write` (behind `dyn`, so the registry can hold one
//! monomorphic entry point per task), so tests drive it entirely in memory. Each result is
//! handed to the output as soon as it exists and the output is flushed before a read that
//! might block. A real worker's output (`backend::process::child`) buffers in memory and
//! also flushes from a helper thread once a result has waited [`FLUSH_AFTER`]: many tiny
//! jobs cost one write, and no result waits for the next job, however long that runs.

use super::codec;
use super::frame::{self, FrameError, FrameReader};
use super::msg::{Down, JobMsg, Outcome, PROTOCOL_VERSION, Up};
use crate::backend::PHASE_TARGET;
use crate::error::JobError;
use crate::task::{Registry, Target, Task};
use serde::Serialize;
use std::io::{self, Read, Write};
use std::panic::{self, AssertUnwindSafe};
use std::time::{Duration, Instant, SystemTime};

/// A result waits at most about this long in a worker's output buffer.
pub(crate) const FLUSH_AFTER: Duration = Duration::from_millis(1);

/// Why a worker stopped serving (other than the coordinator hanging up, which is normal).
#[derive(Debug, thiserror::Error)]
pub(crate) enum WorkerError {
    /// The coordinator sent something we cannot accept; we told it why, if we could.
    #[error("{0}")]
    Refused(String),
    /// Framing or I/O failed.
    #[error("{0}")]
    Frame(#[from] FrameError),
}

impl From<io::Error> for WorkerError {
    fn from(e: io::Error) -> Self {
        WorkerError::Frame(FrameError::Io(e))
    }
}

/// The receiving half: a frame decoder over the input.
pub(crate) struct Rx<'a> {
    reader: FrameReader,
    input: &'a mut dyn Read,
}

/// Where a worker's frames go: any writer, told when a job is about to start (so a
/// buffering writer can make sure nothing waits behind a long job).
pub(crate) trait Output: Write {
    /// A job is about to run.
    fn job_starting(&mut self) {}
}

impl Output for Vec<u8> {}

/// The sending half: frames over the output.
pub(crate) struct Tx<'a> {
    frame: Vec<u8>,
    output: &'a mut dyn Output,
    max_frame: u32,
    /// Jobs timed since the last flush (only while job phases are traced).
    timed: Vec<Marks>,
}

/// When one job's phases ended, in wall-clock nanoseconds since the Unix epoch, which other
/// processes on this machine can compare with their own.
struct Marks {
    job: u64,
    /// Its frame was read (or the previous job of its chunk was done).
    begun: u64,
    decoded: u64,
    computed: u64,
    /// Its result was encoded and queued for writing.
    encoded: u64,
}

/// Wall-clock nanoseconds since the Unix epoch (0 if the clock is before it).
fn wall_ns() -> u64 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX))
}

/// The time, when job phases are being traced (`procpool::phase=trace`); else `None`, so
/// timing costs one check when it is off.
fn phase_clock() -> Option<u64> {
    tracing::enabled!(target: PHASE_TARGET, tracing::Level::TRACE).then(wall_ns)
}

/// Where the descriptors that came with the input are (a real worker's socket collects
/// them; in-memory tests hand them over directly).
pub(crate) trait FdSource {
    /// Every descriptor received so far and not yet taken, in arrival order.
    fn take_fds(&self) -> Vec<std::os::fd::OwnedFd>;
}

/// No descriptors ever (in-memory input).
pub(crate) struct NoFds;

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
    rx: Rx<'a>,
    tx: Tx<'a>,
    fds: &'a dyn FdSource,
    fault: Option<Fault>,
}

/// A fault a worker injects on purpose, so tests can check the coordinator's handling of
/// hostile or broken peers through a real worker process. Set with the environment
/// variable `PROCPOOL_FAULT` (see [`Fault::parse`]); never set in normal use.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Fault {
    /// Abort the process when asked to run job `id`.
    AbortOn(u64),
    /// Exit with code 7 when asked to run job `id`.
    ExitOn(u64),
    /// Sleep forever when asked to run job `id`.
    HangOn(u64),
    /// After `n` results, send an undecodable frame, then stop talking.
    GarbageAfter(u64),
    /// After `n` results, send a frame header over any limit, then stop talking.
    OversizeAfter(u64),
    /// After `n` results, send half a frame and exit.
    TruncateAfter(u64),
    /// Greet with this protocol version.
    Version(u32),
}

impl Fault {
    /// Parses `[worker=K:]KIND=N` (KIND: abort-on, exit-on, hang-on, garbage-after,
    /// oversize-after, truncate-after, version); `None` when the spec names another worker.
    pub(crate) fn parse(spec: &str, worker: Option<u32>) -> Result<Option<Fault>, String> {
        let (target, rest) = match spec.strip_prefix("worker=") {
            Some(r) => {
                let (k, rest) = r
                    .split_once(':')
                    .ok_or_else(|| format!("bad fault spec {spec:?}"))?;
                (
                    Some(
                        k.parse::<u32>()
                            .map_err(|_| format!("bad worker in fault spec {spec:?}"))?,
                    ),
                    rest,
                )
            }
            None => (None, spec),
        };
        if target.is_some() && target != worker {
            return Ok(None);
        }
        let (kind, n) = rest
            .split_once('=')
            .ok_or_else(|| format!("bad fault spec {spec:?}"))?;
        let n: u64 = n
            .parse()
            .map_err(|_| format!("bad number in fault spec {spec:?}"))?;
        Ok(Some(match kind {
            "abort-on" => Fault::AbortOn(n),
            "exit-on" => Fault::ExitOn(n),
            "hang-on" => Fault::HangOn(n),
            "garbage-after" => Fault::GarbageAfter(n),
            "oversize-after" => Fault::OversizeAfter(n),
            "truncate-after" => Fault::TruncateAfter(n),
            "version" => {
                Fault::Version(u32::try_from(n).map_err(|_| format!("bad version in {spec:?}"))?)
            }
            _ => return Err(format!("unknown fault {kind:?} in {spec:?}")),
        }))
    }

    /// Before running job `id`.
    fn before_job(self, id: u64) {
        match self {
            Fault::AbortOn(x) if x == id => {
                eprintln!("fault injection: aborting on job {id}");
                std::process::abort();
            }
            Fault::ExitOn(x) if x == id => {
                eprintln!("fault injection: exiting on job {id}");
                std::process::exit(7);
            }
            Fault::HangOn(x) if x == id => loop {
                std::thread::sleep(Duration::from_secs(3600));
            },
            _ => {}
        }
    }

    /// After the `n`th result was queued.
    fn after_result(self, n: u64, tx: &mut Tx<'_>) -> io::Result<()> {
        let bytes: &[u8] = match self {
            Fault::GarbageAfter(x) if x == n => {
                &[8, 0, 0, 0, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff]
            }
            Fault::OversizeAfter(x) if x == n => &[0xff, 0xff, 0xff, 0xff, 1, 2, 3, 4],
            Fault::TruncateAfter(x) if x == n => &[100, 0, 0, 0, 1, 2, 3],
            _ => return Ok(()),
        };
        tx.flush()?;
        tx.output.write_all(bytes)?;
        tx.output.flush()?;
        if let Fault::TruncateAfter(_) = self {
            std::process::exit(0);
        }
        loop {
            std::thread::sleep(Duration::from_secs(3600));
        }
    }
}

impl<'a> Conn<'a> {
    pub(crate) fn new(
        input: &'a mut dyn Read,
        output: &'a mut dyn Output,
        fds: &'a dyn FdSource,
        fault: Option<Fault>,
    ) -> Conn<'a> {
        Conn {
            fds,
            fault,
            rx: Rx {
                reader: FrameReader::new(frame::DEFAULT_MAX_FRAME),
                input,
            },
            tx: Tx {
                frame: Vec::with_capacity(4096),
                output,
                max_frame: frame::DEFAULT_MAX_FRAME,
                timed: Vec::new(),
            },
        }
    }
}

impl Rx<'_> {
    /// The next frame; flushes `tx` first when the read might block. `None` at a clean end.
    fn recv(&mut self, tx: &mut Tx<'_>) -> Result<Option<&[u8]>, WorkerError> {
        while !self.reader.has_frame() {
            tx.flush()?;
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
}

impl Tx<'_> {
    fn send<T: Serialize>(&mut self, msg: &T) -> Result<(), WorkerError> {
        self.frame.clear();
        frame::write_frame(&mut self.frame, msg, self.max_frame)?;
        self.output.write_all(&self.frame)?;
        Ok(())
    }

    fn flush(&mut self) -> io::Result<()> {
        if self.timed.is_empty() {
            return self.output.flush();
        }
        let write_start = wall_ns();
        let result = self.output.flush();
        let written = wall_ns();
        // One line per job, logged after its result went out, so tracing never holds a
        // result back. Every job timed since the last flush had its result in this write.
        for m in self.timed.drain(..) {
            tracing::trace!(
                target: PHASE_TARGET,
                job = m.job,
                begun_ns = m.begun,
                decoded_ns = m.decoded,
                computed_ns = m.computed,
                encoded_ns = m.encoded,
                write_start_ns = write_start,
                written_ns = written,
                "job phases"
            );
        }
        result
    }
}

/// Refuses: tells the coordinator why (best effort) and fails with the same reason.
fn refuse(tx: &mut Tx<'_>, reason: String) -> WorkerError {
    let _ = tx.send(&Up::Refused {
        reason: reason.clone(),
    });
    let _ = tx.flush();
    WorkerError::Refused(reason)
}

/// Serves one coordinator connection to its end. `Ok` when the coordinator hung up.
pub(crate) fn serve(
    registry: &Registry,
    input: &mut dyn Read,
    output: &mut dyn Output,
    fds: &dyn FdSource,
    fault: Option<Fault>,
) -> Result<(), WorkerError> {
    let mut conn = Conn::new(input, output, fds, fault);
    let protocol = match fault {
        Some(Fault::Version(v)) => v,
        _ => PROTOCOL_VERSION,
    };
    conn.tx.send(&Up::Hello {
        protocol,
        pid: std::process::id(),
    })?;
    let Some(first) = conn.rx.recv(&mut conn.tx)? else {
        return Ok(());
    };
    let (task, max_frame) = match codec::decode_borrowed::<Down<'_>>(first) {
        Ok(Down::Hello {
            protocol,
            task,
            max_frame,
            ..
        }) if protocol == PROTOCOL_VERSION => (task.to_owned(), max_frame),
        Ok(Down::Hello { protocol, .. }) => {
            return Err(refuse(
                &mut conn.tx,
                format!(
                    "coordinator speaks protocol version {protocol}, this worker speaks \
                     {PROTOCOL_VERSION}"
                ),
            ));
        }
        Ok(other) => {
            return Err(refuse(
                &mut conn.tx,
                format!("expected a greeting, got {}", describe(&other)),
            ));
        }
        Err(e) => {
            return Err(refuse(
                &mut conn.tx,
                format!("undecodable greeting (another protocol version?): {e}"),
            ));
        }
    };
    conn.rx.reader.set_max(max_frame);
    conn.tx.max_frame = max_frame.min(frame::MAX_FRAME_LIMIT);
    if let Some(serve_task) = registry.find_task(&task) {
        return serve_task(&mut conn);
    }
    if let Some(run) = registry.find_target(&task) {
        let Some(frame) = conn.rx.recv(&mut conn.tx)? else {
            return Ok(());
        };
        let payload = match codec::decode_borrowed::<Down<'_>>(frame) {
            Ok(Down::Run { payload }) => payload,
            Ok(other) => {
                return Err(refuse(
                    &mut conn.tx,
                    format!("expected a target to run, got {}", describe(&other)),
                ));
            }
            Err(e) => return Err(refuse(&mut conn.tx, format!("undecodable target: {e}"))),
        };
        let payload = payload.to_vec();
        conn.tx.send(&Up::Ready)?;
        conn.tx.flush()?;
        return run(&payload).map_err(|e| WorkerError::Refused(format!("target {task:?}: {e}")));
    }
    let known = registry.names().join(", ");
    Err(refuse(
        &mut conn.tx,
        format!(
            "no task or target named {task:?} is registered in this binary (registered: {}); \
             add it to the Registry given to serve_if_worker",
            if known.is_empty() { "none" } else { &known }
        ),
    ))
}

fn describe(msg: &Down<'_>) -> &'static str {
    match msg {
        Down::Hello { .. } => "a second greeting",
        Down::Context { .. } => "a context",
        Down::Jobs(_) => "jobs",
        Down::Run { .. } => "a process target",
        Down::SharedContext { .. } => "a shared context",
    }
}

/// Runs one job, catching a panic; returns the outcome and the nanoseconds it ran.
pub(crate) fn run_caught<T: Task>(task: T, ctx: &T::Context) -> (Result<T::Output, JobError>, u64) {
    let start = Instant::now();
    IN_TASK.with(|t| t.set(true));
    let result = panic::catch_unwind(AssertUnwindSafe(|| task.run(ctx)));
    IN_TASK.with(|t| t.set(false));
    let ns = u64::try_from(start.elapsed().as_nanos()).unwrap_or(u64::MAX);
    (
        result.map_err(|payload| JobError::Panicked {
            message: panic_message(payload.as_ref()),
        }),
        ns,
    )
}

thread_local! {
    /// Whether this thread is inside `Task::run` (where a panic is caught and becomes the
    /// job's error), for panic hooks that must tell such panics from fatal ones.
    pub(crate) static IN_TASK: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
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

/// The pool loop for task `T` (registered per task in the [`Registry`]).
pub(crate) fn serve_task<T: Task>(conn: &mut Conn<'_>) -> Result<(), WorkerError> {
    let Conn { rx, tx, fds, fault } = conn;
    let fault = *fault;
    let mut sent = 0u64;
    let Some(frame) = rx.recv(tx)? else {
        return Ok(());
    };
    let ctx: T::Context = match codec::decode_borrowed::<Down<'_>>(frame) {
        Ok(Down::Context { payload }) => match codec::decode_borrowed::<T::Context>(payload) {
            Ok(ctx) => ctx,
            Err(e) => {
                return Err(refuse(
                    tx,
                    format!("could not decode the context of task {:?}: {e}", T::NAME),
                ));
            }
        },
        Ok(Down::SharedContext {
            inline,
            body,
            buffers,
            regions,
        }) => match crate::context::install::<T::Context>(
            inline,
            body,
            &buffers,
            &regions,
            fds.take_fds(),
        ) {
            Ok(ctx) => ctx,
            Err(e) => {
                return Err(refuse(
                    tx,
                    format!(
                        "could not install the shared context of task {:?}: {e}",
                        T::NAME
                    ),
                ));
            }
        },
        Ok(other) => {
            return Err(refuse(
                tx,
                format!("expected a context, got {}", describe(&other)),
            ));
        }
        Err(e) => return Err(refuse(tx, format!("undecodable context frame: {e}"))),
    };
    tx.send(&Up::Ready)?;
    let mut scratch = Vec::new();
    loop {
        let Some(frame) = rx.recv(tx)? else {
            return Ok(());
        };
        // Phase timing (off unless traced): a chunk's first job starts when it arrived.
        let mut arrived = phase_clock();
        let jobs = match codec::decode_borrowed::<Down<'_>>(frame) {
            Ok(Down::Jobs(jobs)) => jobs,
            Ok(other) => {
                return Err(refuse(
                    tx,
                    format!("expected jobs, got {}", describe(&other)),
                ));
            }
            Err(e) => return Err(refuse(tx, format!("undecodable jobs frame: {e}"))),
        };
        for JobMsg { id, payload } in jobs {
            tx.output.job_starting();
            if let Some(f) = fault {
                f.before_job(id);
            }
            scratch.clear();
            let begun = arrived.take().or_else(phase_clock);
            let (mut decoded, mut computed) = (None, None);
            let (outcome, compute_ns) = match codec::decode::<T>(payload) {
                Ok(task) => {
                    decoded = begun.map(|_| wall_ns());
                    let (result, ns) = run_caught(task, &ctx);
                    computed = begun.map(|_| wall_ns());
                    let outcome = match result {
                        Ok(output) => match codec::encode_into(&output, &mut scratch) {
                            Ok(()) => Outcome::Ok(&scratch),
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
            let done = Up::Done {
                id,
                compute_ns,
                outcome,
            };
            match tx.send(&done) {
                Err(WorkerError::Frame(FrameError::TooLong { len, max })) => {
                    tx.send(&Up::Done {
                        id,
                        compute_ns,
                        outcome: Outcome::Err(JobError::Codec {
                            message: format!(
                                "output of {len} bytes is over the frame limit of {max} bytes"
                            ),
                        }),
                    })?
                }
                other => other?,
            }
            if let (Some(begun), Some(decoded), Some(computed)) = (begun, decoded, computed) {
                tx.timed.push(Marks {
                    job: id,
                    begun,
                    decoded,
                    computed,
                    encoded: wall_ns(),
                });
            }
            sent += 1;
            if let Some(f) = fault {
                f.after_result(sent, tx)?;
            }
        }
    }
}

/// Runs a process target from its encoded bytes.
pub(crate) fn run_target<T: Target>(payload: &[u8]) -> Result<(), String> {
    let target: T = codec::decode(payload).map_err(|e| e.to_string())?;
    target.run();
    Ok(())
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

    fn replies(bytes: &[u8]) -> Vec<Up<'static>> {
        let mut r = FrameReader::new(frame::DEFAULT_MAX_FRAME);
        r.push(bytes);
        let mut out = Vec::new();
        while let Some(f) = r.next_frame().unwrap() {
            let up: Up<'_> = codec::decode_borrowed(f).unwrap();
            out.push(match up {
                Up::Hello { protocol, pid } => Up::Hello { protocol, pid },
                Up::Ready => Up::Ready,
                Up::Refused { reason } => Up::Refused { reason },
                Up::Done {
                    id,
                    outcome: Outcome::Ok(b),
                    ..
                } => Up::Done {
                    id,
                    compute_ns: 0,
                    outcome: Outcome::Ok(Box::leak(b.to_vec().into_boxed_slice())),
                },
                Up::Done {
                    id,
                    outcome: Outcome::Err(e),
                    ..
                } => Up::Done {
                    id,
                    compute_ns: 0,
                    outcome: Outcome::Err(e),
                },
            });
        }
        r.finish().unwrap();
        out
    }

    fn hello(task: &str) -> Down<'_> {
        Down::Hello {
            protocol: PROTOCOL_VERSION,
            task,
            max_frame: frame::DEFAULT_MAX_FRAME,
        }
    }

    #[test]
    fn serves_jobs_in_memory_and_survives_a_panic() {
        let ctx = codec::encode(&100u64).unwrap();
        let j1 = codec::encode(&AddCtx(1)).unwrap();
        let j2 = codec::encode(&AddCtx(13)).unwrap();
        let input = frames(&[
            hello("add-ctx"),
            Down::Context { payload: &ctx },
            Down::Jobs(vec![
                JobMsg {
                    id: 7,
                    payload: &j1,
                },
                JobMsg {
                    id: 8,
                    payload: &j2,
                },
            ]),
            Down::Jobs(vec![JobMsg {
                id: 9,
                payload: &j1,
            }]),
        ]);
        let mut out = Vec::new();
        serve(&registry(), &mut input.as_slice(), &mut out, &NoFds, None).unwrap();
        let got = replies(&out);
        assert!(matches!(
            got[0],
            Up::Hello {
                protocol: PROTOCOL_VERSION,
                ..
            }
        ));
        assert_eq!(got[1], Up::Ready);
        let expect_101 = codec::encode(&101u64).unwrap();
        assert!(
            matches!(&got[2], Up::Done { id: 7, outcome: Outcome::Ok(b), .. } if *b == expect_101.as_slice())
        );
        assert!(
            matches!(&got[3], Up::Done { id: 8, outcome: Outcome::Err(JobError::Panicked { message }), .. }
            if message == "unlucky 13")
        );
        assert!(matches!(&got[4], Up::Done { id: 9, .. }));
        assert_eq!(got.len(), 5);
    }

    #[test]
    fn refuses_unknown_task_and_other_versions() {
        let input = frames(&[hello("nope")]);
        let mut out = Vec::new();
        let err = serve(&registry(), &mut input.as_slice(), &mut out, &NoFds, None).unwrap_err();
        assert!(
            err.to_string().contains("no task or target named \"nope\""),
            "{err}"
        );
        assert!(err.to_string().contains("add-ctx"), "{err}");
        assert!(matches!(replies(&out).last(), Some(Up::Refused { .. })));

        let input = frames(&[Down::Hello {
            protocol: PROTOCOL_VERSION + 1,
            task: "add-ctx",
            max_frame: 1024,
        }]);
        let mut out = Vec::new();
        let err = serve(&registry(), &mut input.as_slice(), &mut out, &NoFds, None).unwrap_err();
        assert!(err.to_string().contains("protocol version"), "{err}");
    }

    #[test]
    fn garbage_and_truncation_are_errors_not_panics() {
        let mut out = Vec::new();
        let garbage = [5u8, 0, 0, 0, 0xff, 0xff, 0xff, 0xff, 0xff];
        assert!(serve(&registry(), &mut garbage.as_slice(), &mut out, &NoFds, None).is_err());

        let ctx = codec::encode(&1u64).unwrap();
        let mut input = frames(&[hello("add-ctx"), Down::Context { payload: &ctx }]);
        input.extend_from_slice(&[200, 0, 0, 0, 1, 2]);
        let mut out = Vec::new();
        let err = serve(&registry(), &mut input.as_slice(), &mut out, &NoFds, None).unwrap_err();
        assert!(err.to_string().contains("middle of a frame"), "{err}");

        let mut input = frames(&[hello("add-ctx"), Down::Context { payload: &[1, 2] }]);
        input.truncate(input.len());
        let mut out = Vec::new();
        let err = serve(&registry(), &mut input.as_slice(), &mut out, &NoFds, None).unwrap_err();
        assert!(
            err.to_string().contains("could not decode the context"),
            "{err}"
        );
    }

    #[test]
    fn undecodable_job_is_a_codec_error_for_that_job() {
        let ctx = codec::encode(&1u64).unwrap();
        let input = frames(&[
            hello("add-ctx"),
            Down::Context { payload: &ctx },
            Down::Jobs(vec![JobMsg {
                id: 1,
                payload: &[1, 2, 3],
            }]),
        ]);
        let mut out = Vec::new();
        serve(&registry(), &mut input.as_slice(), &mut out, &NoFds, None).unwrap();
        assert!(matches!(
            replies(&out).last(),
            Some(Up::Done {
                id: 1,
                outcome: Outcome::Err(JobError::Codec { .. }),
                ..
            })
        ));
    }
}
