//! `demo cost`: one job's life, phase by phase, on the process backend and on the thread
//! backend — serialize, write, the worker's read, compute, write back, reorder — timed by
//! the library's own trace instrumentation on the real code path.
//!
//! How the numbers are obtained: procpool marks each phase of a job under the tracing
//! target `procpool::phase`. In the coordinator these are trace spans (`encode`, `write`,
//! `decode`, `deliver`), which this demo records with a small subscriber of its own that
//! stamps each span's entry and exit with the wall clock. A worker writes its log as text,
//! so there each job gets one trace event, logged after its result is written, carrying the
//! wall-clock ends of its phases (read, decoded, computed, encoded, written); the pool
//! forwards worker stderr to its own. To
//! read those lines the traced run happens in a child process of this demo (this program
//! again, with `COORDINATOR_WORKER_LOG=procpool::phase=trace` so its workers log), whose
//! stdout and stderr the demo reads. Wall-clock nanoseconds from different processes on
//! one machine are comparable, so the gaps between phases (a process waking up) are real
//! too. Every round trip is one `apply` on a pool of one worker; each row is the time
//! between two consecutive marks, as a median and as a mean over the fastest 95% of the
//! round trips (the slowest are the machine doing something else). The rows' means add up
//! to the mean round trip. A baseline with tracing off runs in this process first, to show
//! what the instrumentation costs.

use super::child;
use parzen::{Gaussian, Prepared};
use procpool::{Backend, Chunk, Pool, Registry, Task};
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::io::{self, Write};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, SystemTime};
use tracing::level_filters::LevelFilter;
use tracing::subscriber::Interest;
use tracing::{Event, Id, Metadata, Subscriber, span};

/// Errors of a demo, boxed: every one ends the demo with its message.
pub type Error = Box<dyn std::error::Error + Send + Sync>;

/// The environment variable that makes the coordinator's workers log (read by `main`).
pub const WORKER_LOG_ENV: &str = "COORDINATOR_WORKER_LOG";
/// The tracing target of procpool's job-phase marks.
const PHASE_TARGET: &str = "procpool::phase";
/// The role of the child that runs traced.
const TRACED_CHILD: &str = "cost-traced";
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
    /// The round trip (apply call to return) with the phases traced: median, in ns.
    pub total_median_ns: i64,
    /// Its mean over the kept round trips, in ns.
    pub total_mean_ns: i64,
    /// The round trip with tracing off (in this process, before the traced run): median.
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

/// A mark pair: what happened between `start` and `end` (wall-clock ns).
#[derive(Debug, Clone, Copy)]
struct Mark {
    name: &'static str,
    start: u64,
    end: u64,
}

/// One measured `apply`: when it was called, when it returned, and the task's own stamps.
#[derive(Debug, Clone, Copy)]
struct Call {
    start: u64,
    end: u64,
    task: Stamped,
}

/// Records procpool's phase spans with wall-clock entry and exit; ignores everything else.
#[derive(Clone, Default)]
struct Recorder {
    state: Arc<Mutex<RecorderState>>,
}

#[derive(Default)]
struct RecorderState {
    next_id: u64,
    open: HashMap<u64, (&'static str, u64)>,
    done: Vec<Mark>,
}

impl Recorder {
    fn lock(&self) -> std::sync::MutexGuard<'_, RecorderState> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

impl Subscriber for Recorder {
    fn register_callsite(&self, meta: &'static Metadata<'static>) -> Interest {
        if self.enabled(meta) {
            Interest::always()
        } else {
            Interest::never()
        }
    }
    fn enabled(&self, meta: &Metadata<'_>) -> bool {
        meta.is_span() && meta.target() == PHASE_TARGET
    }
    fn max_level_hint(&self) -> Option<LevelFilter> {
        Some(LevelFilter::TRACE)
    }
    fn new_span(&self, attrs: &span::Attributes<'_>) -> Id {
        let mut s = self.lock();
        s.next_id += 1;
        let id = s.next_id;
        s.open.insert(id, (attrs.metadata().name(), 0));
        Id::from_u64(id)
    }
    fn record(&self, _: &Id, _: &span::Record<'_>) {}
    fn record_follows_from(&self, _: &Id, _: &Id) {}
    fn event(&self, _: &Event<'_>) {}
    fn enter(&self, id: &Id) {
        let now = wall_ns();
        if let Some(open) = self.lock().open.get_mut(&id.into_u64()) {
            open.1 = now;
        }
    }
    fn exit(&self, id: &Id) {
        let now = wall_ns();
        let mut s = self.lock();
        if let Some((name, start)) = s.open.remove(&id.into_u64()) {
            s.done.push(Mark {
                name,
                start,
                end: now,
            });
        }
    }
}

/// The seed's 10,000 samples, prepared for the origin: the context, sent once per worker.
fn context() -> Result<Prepared, Error> {
    let samples = Gaussian::standard(2)?.sample(SAMPLES, 123)?;
    Ok(Prepared::new(&samples, &[0.0, 0.0])?)
}

/// Runs `warmup + jobs` applies one after another on one worker; returns the measured ones
/// and the worker's pid.
fn measure(backend: Backend, opts: &Options, ctx: Prepared) -> Result<(Vec<Call>, u32), Error> {
    let pool = Pool::<Timed>::builder()
        .workers(1)
        .backend(backend)
        .chunksize(Chunk::Fixed(1))
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
    pool.join();
    Ok((calls, pid))
}

/// Runs the demo (or, in its child, the traced half).
pub fn run(opts: &Options) -> Result<Report, Error> {
    if child::role().as_deref() == Some(TRACED_CHILD) {
        traced_child(opts);
    }
    let ctx = context()?;
    let mut untraced = HashMap::new();
    for backend in [Backend::Process, Backend::Thread] {
        let (calls, _) = measure(backend, opts, ctx.clone())?;
        let totals = fastest(calls.iter().map(|c| span_ns(c.start, c.end)).collect());
        untraced.insert(backend.name(), (median(&totals), mean(&totals)));
    }
    let log = format!("{PHASE_TARGET}=trace");
    let finished = child::rerun(
        TRACED_CHILD,
        &[(WORKER_LOG_ENV, log.as_str())],
        Duration::from_secs(120),
    )?;
    if !finished.status.success() {
        let tail: Vec<&str> = finished.stderr.lines().rev().take(5).collect();
        return Err(format!(
            "the traced child pid {} {}; its stderr ended with: {}",
            finished.pid,
            procpool::describe_status(finished.status),
            tail.into_iter().rev().collect::<Vec<_>>().join(" | ")
        )
        .into());
    }
    let traced = Traced::parse(&finished.stdout, &finished.stderr);
    let mut backends = Vec::new();
    for backend in [Backend::Process, Backend::Thread] {
        let name = backend.name();
        let calls = traced.calls.get(name).map_or(&[][..], Vec::as_slice);
        let spans = traced.spans.get(name).map_or(&[][..], Vec::as_slice);
        let mut rows: Vec<(i64, Vec<(Row, i64)>)> = calls
            .iter()
            .filter_map(|c| {
                let rows = match backend {
                    Backend::Process => process_rows(c, spans, &traced.worker),
                    _ => thread_rows(c, spans),
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
        let (untraced_median_ns, untraced_mean_ns) = untraced.get(name).copied().unwrap_or((0, 0));
        backends.push(BackendCost {
            backend: name.to_owned(),
            worker_pid: traced.pids.get(name).copied().unwrap_or(0),
            complete,
            kept: rows.len(),
            phases,
            total_median_ns: median(&totals),
            total_mean_ns: mean(&totals),
            untraced_median_ns,
            untraced_mean_ns,
        });
    }
    Ok(Report {
        samples: SAMPLES,
        jobs: opts.jobs,
        warmup: opts.warmup,
        backends,
    })
}

/// The child: both backends with the coordinator's phase spans recorded; prints the marks
/// on stdout (its workers' marks reach its stderr through the pool). Then exits.
fn traced_child(opts: &Options) -> ! {
    let code = match traced_child_run(opts) {
        Ok(()) => 0,
        Err(e) => {
            eprintln!("traced child: {e}");
            1
        }
    };
    std::process::exit(code);
}

fn traced_child_run(opts: &Options) -> Result<(), Error> {
    let ctx = context()?;
    let mut out = io::stdout().lock();
    for backend in [Backend::Process, Backend::Thread] {
        let recorder = Recorder::default();
        let (calls, pid) = tracing::subscriber::with_default(recorder.clone(), || {
            measure(backend, opts, ctx.clone())
        })?;
        let name = backend.name();
        writeln!(out, "pid {name} {pid}")?;
        for c in &calls {
            writeln!(
                out,
                "call {name} {} {} {} {}",
                c.start, c.end, c.task.start_ns, c.task.end_ns
            )?;
        }
        for m in &recorder.lock().done {
            writeln!(out, "span {name} {} {} {}", m.name, m.start, m.end)?;
        }
    }
    out.flush()?;
    Ok(())
}

/// What the traced child reported.
#[derive(Default)]
struct Traced {
    pids: HashMap<String, u32>,
    calls: HashMap<String, Vec<Call>>,
    spans: HashMap<String, Vec<Mark>>,
    /// The process backend's worker marks (from its log lines).
    worker: Vec<Mark>,
}

impl Traced {
    fn parse(stdout: &str, stderr: &str) -> Traced {
        let mut t = Traced::default();
        let num = |s: Option<&str>| s.and_then(|s| s.parse::<u64>().ok());
        for line in stdout.lines() {
            let f: Vec<&str> = line.split_whitespace().collect();
            match f.as_slice() {
                ["pid", backend, pid] => {
                    if let Ok(pid) = pid.parse() {
                        t.pids.insert((*backend).to_owned(), pid);
                    }
                }
                ["call", backend, rest @ ..] => {
                    let v: Vec<u64> = rest.iter().filter_map(|s| s.parse().ok()).collect();
                    if let [start, end, task_start, task_end] = v[..] {
                        t.calls
                            .entry((*backend).to_owned())
                            .or_default()
                            .push(Call {
                                start,
                                end,
                                task: Stamped {
                                    count: 0,
                                    start_ns: task_start,
                                    end_ns: task_end,
                                },
                            });
                    }
                }
                ["span", backend, name, start, end] => {
                    if let (Some(name), Some(start), Some(end)) =
                        (static_name(name), num(Some(start)), num(Some(end)))
                    {
                        let spans = t.spans.entry((*backend).to_owned()).or_default();
                        spans.push(Mark { name, start, end });
                    }
                }
                _ => {}
            }
        }
        // `[worker 0 pid 9] 2026-..Z TRACE job phases job=3 begun_ns=.. decoded_ns=.. ..`
        for line in stderr.lines().filter(|l| l.contains("job phases")) {
            let field = |key: &str| {
                num(line
                    .split_whitespace()
                    .find_map(|tok| tok.strip_prefix(key)?.strip_prefix('=')))
            };
            let marks = [
                "begun_ns",
                "decoded_ns",
                "computed_ns",
                "encoded_ns",
                "write_start_ns",
                "written_ns",
            ]
            .map(field);
            if let [
                Some(begun),
                Some(decoded),
                Some(computed),
                Some(encoded),
                Some(ws),
                Some(w),
            ] = marks
            {
                t.worker.extend([
                    Mark {
                        name: "decode",
                        start: begun,
                        end: decoded,
                    },
                    Mark {
                        name: "compute",
                        start: decoded,
                        end: computed,
                    },
                    Mark {
                        name: "encode",
                        start: computed,
                        end: encoded,
                    },
                    Mark {
                        name: "write",
                        start: ws,
                        end: w,
                    },
                ]);
            }
        }
        t
    }
}

/// The phase names procpool uses, as static strings.
fn static_name(name: &str) -> Option<&'static str> {
    ["encode", "write", "decode", "deliver"]
        .into_iter()
        .find(|n| *n == name)
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

/// The first mark named `name` that starts within `[from, to]`.
fn find(marks: &[Mark], name: &str, from: u64, to: u64) -> Option<Mark> {
    marks
        .iter()
        .filter(|m| m.name == name && m.start >= from && m.start <= to)
        .min_by_key(|m| m.start)
        .copied()
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

fn process_rows(c: &Call, spans: &[Mark], worker: &[Mark]) -> Option<Vec<(Row, i64)>> {
    let enc = find(spans, "encode", c.start, c.end)?;
    let wr = find(spans, "write", enc.end, c.end)?;
    let wdec = find(worker, "decode", wr.start, c.end)?;
    let wcomp = find(worker, "compute", wdec.start, c.end)?;
    let wenc = find(worker, "encode", wcomp.start, c.end)?;
    let wwr = find(worker, "write", wenc.start, c.end)?;
    let dec = find(spans, "decode", wwr.start, c.end)?;
    let del = find(spans, "deliver", dec.start, c.end)?;
    Some(rows(&[
        (
            row("caller", "apply(): lock the pool, submit", "gap"),
            c.start,
            enc.start,
        ),
        (
            row("coordinator", "serialize the job (bincode)", "span encode"),
            enc.start,
            enc.end,
        ),
        (
            row("coordinator", "pick a worker, frame the job", "gap"),
            enc.end,
            wr.start,
        ),
        (
            row(
                "coordinator",
                "write it to the worker's socket",
                "span write",
            ),
            wr.start,
            wr.end,
        ),
        (
            row("kernel", "the worker wakes up and reads it", "gap"),
            wr.end,
            wdec.start,
        ),
        (
            row("worker", "decode the job", "worker event"),
            wdec.start,
            wdec.end,
        ),
        (
            row("worker", "compute: Task::run", "worker event"),
            wcomp.start,
            wcomp.end,
        ),
        (
            row("worker", "encode the result", "worker event"),
            wenc.start,
            wenc.end,
        ),
        (
            row("worker", "back to its loop", "gap"),
            wenc.end,
            wwr.start,
        ),
        (
            row("worker", "write it back to the socket", "worker event"),
            wwr.start,
            wwr.end,
        ),
        (
            row("kernel", "the coordinator wakes up and reads it", "gap"),
            wwr.end,
            dec.start,
        ),
        (
            row("coordinator", "decode the result", "span decode"),
            dec.start,
            dec.end,
        ),
        (
            row("coordinator", "match it to its job", "gap"),
            dec.end,
            del.start,
        ),
        (
            row(
                "coordinator",
                "reorder: deliver to the request",
                "span deliver",
            ),
            del.start,
            del.end,
        ),
        (row("caller", "apply() returns", "gap"), del.end, c.end),
    ]))
}

fn thread_rows(c: &Call, spans: &[Mark]) -> Option<Vec<(Row, i64)>> {
    let enc = find(spans, "encode", c.start, c.end)?;
    let del = find(spans, "deliver", c.task.end_ns, c.end)?;
    let (task_start, task_end) = (c.task.start_ns, c.task.end_ns);
    Some(rows(&[
        (
            row("caller", "apply(): lock the pool, submit", "gap"),
            c.start,
            enc.start,
        ),
        (
            row(
                "coordinator",
                "wrap the job (moved, no bytes)",
                "span encode",
            ),
            enc.start,
            enc.end,
        ),
        (
            row("coordinator", "queue it, the worker thread wakes", "gap"),
            enc.end,
            task_start,
        ),
        (
            row("worker", "compute: Task::run", "stamped inside Task::run"),
            task_start,
            task_end,
        ),
        (
            row("worker", "queue the result, the caller wakes", "gap"),
            task_end,
            del.start,
        ),
        (
            row(
                "coordinator",
                "reorder: deliver to the request",
                "span deliver",
            ),
            del.start,
            del.end,
        ),
        (row("caller", "apply() returns", "gap"), del.end, c.end),
    ]))
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
            "Marks: procpool's trace spans in the coordinator and the trace events its worker \
             logs (target {PHASE_TARGET}), on the wall clock, which processes share; a \"gap\" \
             row is the time between two marks. Over the fastest 95% of round trips."
        )?;
        for b in &self.backends {
            let backend = format!("{} backend (worker pid {})", b.backend, b.worker_pid);
            writeln!(out, "\n{backend:<54}{:>11}{:>11}", "median", "mean")?;
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
                    "  {:<12}{:<40}{:>11}{:>11}   {}",
                    p.side,
                    p.name,
                    micros(p.median_ns),
                    micros(p.mean_ns),
                    p.source
                )?;
            }
            writeln!(
                out,
                "  {:<52}{:>11}{:>11}",
                "round trip, apply() call to return",
                micros(b.total_median_ns),
                micros(b.total_mean_ns)
            )?;
            writeln!(
                out,
                "  {:<52}{:>11}{:>11}",
                "  the same with tracing off",
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
