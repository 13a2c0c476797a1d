//! `demo cost`: one job's life, phase by phase, on the process backend and on the thread
//! backend — submit, dispatch, the worker's read, decode, compute, encode, the way back,
//! delivery — timed by the library's own typed phase marks on the real code path.
//!
//! How the numbers are obtained: with `PoolBuilder::record_phases`, the pool records for
//! every job when it was queued, sent and done (`procpool::JobSpan`), and a process worker
//! stamps when it began the job, decoded it, computed it and encoded the result
//! (`procpool::WorkerPhases`, wall-clock nanoseconds, which processes on one machine
//! share). The task stamps its own start and end too (the thread backend's only inside
//! marks). Every round trip is one `apply` on a pool of one worker; each row is the time
//! between two consecutive marks, as a median and as a mean over the fastest 95% of the
//! round trips (the slowest are the machine doing something else). The rows' means add up
//! to the mean round trip. A baseline with recording off runs first, to show what the
//! marks cost (with it off, a worker's job loop reads no clock at all).

use parzen::{Gaussian, Prepared};
use procpool::{Backend, Chunk, JobSpan, Pool, Registry, Task};
use serde::{Deserialize, Serialize};
use std::io::{self, Write};
use std::time::SystemTime;

/// Errors of a demo, boxed: every one ends the demo with its message.
pub type Error = Box<dyn std::error::Error + Send + Sync>;

/// Samples in the context (the seed's n).
const SAMPLES: usize = 10_000;
/// The job's window width (the article's "best" one).
const H: f64 = 1.1;

/// One Parzen job that also stamps when `Task::run` began and ended (wall clock).
#[derive(Serialize, Deserialize)]
struct Timed {
    h: f64,
}

/// A count and when it was computed.
#[derive(Debug, Clone, Copy, Serialize, Deserialize)]
struct Stamped {
    count: u64,
    start_ns: u64,
    end_ns: u64,
}

impl Task for Timed {
    const NAME: &'static str = "demo-cost-timed";
    type Context = Prepared;
    type Output = Stamped;
    fn run(self, ctx: &Prepared) -> Stamped {
        let start_ns = wall_ns();
        let count = ctx.count(self.h);
        Stamped {
            count,
            start_ns,
            end_ns: wall_ns(),
        }
    }
}

/// Registers this demo's task.
pub fn register(registry: Registry) -> Registry {
    registry.task::<Timed>()
}

/// Settings.
#[derive(Debug, Clone)]
pub struct Options {
    /// Round trips measured per backend.
    pub jobs: usize,
    /// Round trips run first and not measured.
    pub warmup: usize,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            jobs: 200,
            warmup: 20,
        }
    }
}

/// One row: the time between two consecutive marks of a job's life.
#[derive(Debug, Clone, Serialize)]
pub struct Phase {
    /// Which process or thread spends it: caller, coordinator, kernel, worker.
    pub side: &'static str,
    /// What happens.
    pub name: &'static str,
    /// Where the two marks come from.
    pub source: &'static str,
    /// Median over the kept round trips, in nanoseconds.
    pub median_ns: i64,
    /// Mean over the kept round trips, in nanoseconds (the rows' means add up).
    pub mean_ns: i64,
}

/// One backend's round trip, phase by phase.
#[derive(Debug, Serialize)]
pub struct BackendCost {
    /// `process` or `thread`.
    pub backend: String,
    /// The worker's pid (this process's for threads).
    pub worker_pid: u32,
    /// Round trips with every mark found (of those measured).
    pub complete: usize,
    /// Of those, the fastest 95%, which the rows describe.
    pub kept: usize,
    /// The phases, in order.
    pub phases: Vec<Phase>,
    /// The round trip (apply call to return) with the phases recorded: median, in ns.
    pub total_median_ns: i64,
    /// Its mean over the kept round trips, in ns.
    pub total_mean_ns: i64,
    /// The round trip with recording off (before the recorded run): median.
    pub untraced_median_ns: i64,
    /// Its mean over the fastest 95%.
    pub untraced_mean_ns: i64,
}

/// What the demo measured.
#[derive(Debug, Serialize)]
pub struct Report {
    /// Samples in the context.
    pub samples: usize,
    /// Round trips measured per backend.
    pub jobs: usize,
    /// Round trips run first, not measured.
    pub warmup: usize,
    /// Process, then thread.
    pub backends: Vec<BackendCost>,
}

/// Wall-clock nanoseconds since the Unix epoch: comparable across processes on one machine.
fn wall_ns() -> u64 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX))
}

/// One measured `apply`: when it was called, when it returned, and the task's own stamps.
#[derive(Debug, Clone, Copy)]
struct Call {
    start: u64,
    end: u64,
    task: Stamped,
}

/// The seed's 10,000 samples, prepared for the origin: the context, sent once per worker.
fn context() -> Result<Prepared, Error> {
    let samples = Gaussian::standard(2)?.sample(SAMPLES, 123)?;
    Ok(Prepared::new(&samples, &[0.0, 0.0])?)
}

/// Runs `warmup + jobs` applies one after another on one worker; returns the measured
/// calls, the pool's record of each (with `record`), the pool's start on the wall clock
/// and the worker's pid.
fn measure(
    backend: Backend,
    opts: &Options,
    ctx: Prepared,
    record: bool,
) -> Result<(Vec<Call>, Vec<JobSpan>, u64, u32), Error> {
    let pool = Pool::<Timed>::builder()
        .workers(1)
        .backend(backend)
        .chunksize(Chunk::Fixed(1))
        .record_phases(record)
        .context(ctx)
        .build()?;
    let pid = pool.pids().first().copied().unwrap_or(0);
    let mut calls = Vec::with_capacity(opts.jobs);
    for i in 0..opts.warmup + opts.jobs {
        let start = wall_ns();
        let task = pool.apply(Timed { h: H })?;
        let end = wall_ns();
        if i >= opts.warmup {
            calls.push(Call { start, end, task });
        }
    }
    let timeline = pool.timeline();
    pool.join();
    let spans = timeline.jobs.into_iter().skip(opts.warmup).collect();
    Ok((calls, spans, timeline.started_unix_ns, pid))
}

/// Runs the demo.
pub fn run(opts: &Options) -> Result<Report, Error> {
    let ctx = context()?;
    let mut backends = Vec::new();
    for backend in [Backend::Process, Backend::Thread] {
        let (plain, _, _, _) = measure(backend, opts, ctx.clone(), false)?;
        let untraced = fastest(plain.iter().map(|c| span_ns(c.start, c.end)).collect());
        let (calls, spans, origin, pid) = measure(backend, opts, ctx.clone(), true)?;
        let at = |d: std::time::Duration| origin + u64::try_from(d.as_nanos()).unwrap_or(0);
        let mut rows: Vec<(i64, Vec<(Row, i64)>)> = calls
            .iter()
            .zip(&spans)
            .filter_map(|(c, s)| {
                let marks = Marks {
                    queued: at(s.queued),
                    sent: at(s.sent),
                    done: at(s.done),
                };
                let rows = match backend {
                    Backend::Process => process_rows(c, &marks, s.phases?),
                    _ => Some(thread_rows(c, &marks)),
                };
                rows.map(|r| (span_ns(c.start, c.end), r))
            })
            .collect();
        let complete = rows.len();
        rows.sort_by_key(|(total, _)| *total);
        rows.truncate(keep(complete));
        let column = |i: usize| fastest_order(rows.iter().map(|(_, r)| r[i].1).collect());
        let phases = match rows.first() {
            Some((_, first)) => first
                .iter()
                .enumerate()
                .map(|(i, (row, _))| Phase {
                    side: row.side,
                    name: row.name,
                    source: row.source,
                    median_ns: median(&column(i)),
                    mean_ns: mean(&column(i)),
                })
                .collect(),
            None => Vec::new(),
        };
        let totals: Vec<i64> = rows.iter().map(|(total, _)| *total).collect();
        backends.push(BackendCost {
            backend: backend.name().to_owned(),
            worker_pid: pid,
            complete,
            kept: rows.len(),
            phases,
            total_median_ns: median(&totals),
            total_mean_ns: mean(&totals),
            untraced_median_ns: median(&untraced),
            untraced_mean_ns: mean(&untraced),
        });
    }
    Ok(Report {
        samples: SAMPLES,
        jobs: opts.jobs,
        warmup: opts.warmup,
        backends,
    })
}

/// The pool's own marks of one job, on the wall clock.
struct Marks {
    queued: u64,
    sent: u64,
    done: u64,
}

/// A row's description.
#[derive(Debug, Clone, Copy)]
struct Row {
    side: &'static str,
    name: &'static str,
    source: &'static str,
}

const fn row(side: &'static str, name: &'static str, source: &'static str) -> Row {
    Row { side, name, source }
}

/// `end - start` in signed nanoseconds.
fn span_ns(start: u64, end: u64) -> i64 {
    i64::try_from(i128::from(end) - i128::from(start)).unwrap_or(i64::MAX)
}

/// Consecutive marks as rows: each row is the time from its mark to the next one. A mark
/// later than the next one (a writer that the process it woke preempted before the write
/// returned) counts as the next one: its phase lasted until the other side had the data.
fn rows(points: &[(Row, u64, u64)]) -> Vec<(Row, i64)> {
    let mut next = points.last().map_or(0, |(_, _, to)| *to);
    let mut out: Vec<(Row, i64)> = points
        .iter()
        .rev()
        .map(|(row, from, _)| {
            let from = (*from).min(next);
            let ns = span_ns(from, next);
            next = from;
            (*row, ns)
        })
        .collect();
    out.reverse();
    out
}

fn process_rows(c: &Call, m: &Marks, w: procpool::WorkerPhases) -> Option<Vec<(Row, i64)>> {
    // Every mark must lie inside the call (a missing one would be 0).
    let all = [
        m.queued,
        m.sent,
        w.begun_ns,
        w.decoded_ns,
        w.computed_ns,
        w.encoded_ns,
        m.done,
    ];
    if all.iter().any(|&t| t < c.start || t > c.end) {
        return None;
    }
    Some(rows(&[
        (
            row(
                "caller",
                "apply(): lock, serialize the job (bincode), queue it",
                "pool mark",
            ),
            c.start,
            m.queued,
        ),
        (
            row(
                "coordinator",
                "pick a worker, frame the chunk",
                "pool marks",
            ),
            m.queued,
            m.sent,
        ),
        (
            row(
                "kernel",
                "write it; the worker wakes up and reads it",
                "worker mark",
            ),
            m.sent,
            w.begun_ns,
        ),
        (
            row("worker", "decode the job", "worker marks"),
            w.begun_ns,
            w.decoded_ns,
        ),
        (
            row("worker", "compute: Task::run", "worker marks"),
            w.decoded_ns,
            w.computed_ns,
        ),
        (
            row("worker", "encode the result", "worker marks"),
            w.computed_ns,
            w.encoded_ns,
        ),
        (
            row(
                "kernel",
                "write it back; the coordinator wakes up",
                "pool mark",
            ),
            w.encoded_ns,
            m.done,
        ),
        (
            // The pool stamps `done` when its driver wakes, before it reads the socket.
            row(
                "caller",
                "read and decode the result, deliver it to the request, apply() returns",
                "gap",
            ),
            m.done,
            c.end,
        ),
    ]))
}

fn thread_rows(c: &Call, m: &Marks) -> Vec<(Row, i64)> {
    let (task_start, task_end) = (c.task.start_ns, c.task.end_ns);
    rows(&[
        (
            row(
                "caller",
                "apply(): lock, wrap the job (moved, no bytes)",
                "pool mark",
            ),
            c.start,
            m.queued,
        ),
        (
            row(
                "coordinator",
                "pick a worker, put it in its inbox",
                "pool marks",
            ),
            m.queued,
            m.sent,
        ),
        (
            row(
                "kernel",
                "the worker thread wakes up",
                "stamped inside Task::run",
            ),
            m.sent,
            task_start,
        ),
        (
            row("worker", "compute: Task::run", "stamped inside Task::run"),
            task_start,
            task_end,
        ),
        (
            row("worker", "queue the result; the caller wakes", "pool mark"),
            task_end,
            m.done,
        ),
        (
            row(
                "caller",
                "deliver the result to the request, apply() returns",
                "gap",
            ),
            m.done,
            c.end,
        ),
    ])
}

/// How many of `n` round trips to keep: the fastest 95%.
fn keep(n: usize) -> usize {
    n - n / 20
}

/// The fastest 95% of `values`, sorted.
fn fastest(mut values: Vec<i64>) -> Vec<i64> {
    values.sort_unstable();
    values.truncate(keep(values.len()));
    values
}

/// `values`, sorted (all of them: they already belong to the kept round trips).
fn fastest_order(mut values: Vec<i64>) -> Vec<i64> {
    values.sort_unstable();
    values
}

/// The median of sorted `values` (0 for none).
fn median(sorted: &[i64]) -> i64 {
    sorted.get(sorted.len() / 2).copied().unwrap_or(0)
}

/// The mean of `values`, rounded down (0 for none).
fn mean(values: &[i64]) -> i64 {
    let n = i128::try_from(values.len()).unwrap_or(i128::MAX).max(1);
    let sum: i128 = values.iter().map(|v| i128::from(*v)).sum();
    i64::try_from(sum / n).unwrap_or(0)
}

fn micros(ns: i64) -> String {
    format!("{:.2} µs", ns as f64 / 1000.0)
}

impl Report {
    /// Writes the report for people.
    pub fn write_text(&self, out: &mut dyn Write) -> io::Result<()> {
        writeln!(
            out,
            "One job's life: pool.apply(Parzen h = {H}) on {} samples (the context went to the \
             worker once), one worker, one job at a time, {} round trips after {} warm-up.",
            self.samples, self.jobs, self.warmup
        )?;
        writeln!(
            out,
            "Marks: the pool's own record of each job (record_phases: queued, sent, done) and \
             its worker's (begun, decoded, computed, encoded), on the wall clock, which \
             processes share. Over the fastest 95% of round trips."
        )?;
        // One label column for every backend, as wide as the longest phase name.
        let name_w = self
            .backends
            .iter()
            .flat_map(|b| &b.phases)
            .map(|p| p.name.chars().count())
            .max()
            .unwrap_or(0)
            .max(40);
        let label_w = 12 + name_w;
        for b in &self.backends {
            let backend = format!("{} backend (worker pid {})", b.backend, b.worker_pid);
            writeln!(
                out,
                "\n{backend:<w$}{:>11}{:>11}",
                "median",
                "mean",
                w = label_w + 2
            )?;
            if b.complete < self.jobs {
                writeln!(
                    out,
                    "  (only {} of {} round trips had every mark; the rows describe those)",
                    b.complete, self.jobs
                )?;
            }
            for p in &b.phases {
                writeln!(
                    out,
                    "  {:<12}{:<name_w$}{:>11}{:>11}   {}",
                    p.side,
                    p.name,
                    micros(p.median_ns),
                    micros(p.mean_ns),
                    p.source
                )?;
            }
            writeln!(
                out,
                "  {:<label_w$}{:>11}{:>11}",
                "round trip, apply() call to return",
                micros(b.total_median_ns),
                micros(b.total_mean_ns)
            )?;
            writeln!(
                out,
                "  {:<label_w$}{:>11}{:>11}",
                "  the same with recording off",
                micros(b.untraced_median_ns),
                micros(b.untraced_mean_ns)
            )?;
        }
        writeln!(
            out,
            "\nThe means add up to the mean round trip; a mean far above its median is a hop \
             where the waiting side had stopped spinning and slept. Threads skip the bytes and \
             the two socket hops that processes pay for their isolation. Timings vary with \
             what else the machine does; run it again to see by how much."
        )
    }
}
