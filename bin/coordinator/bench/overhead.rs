//! What orchestration costs without work, per backend: starting the pool (spawn to every
//! worker ready), one `apply` round trip (and the CPU it burns, spinning included),
//! empty-job throughput at chunksize 1 and auto, and bytes on the wire per job.

use super::plot::{Bar, Measure};
use super::{Common, Finished, Spread, SuiteReport};
use crate::cli::BenchArgs;
use crate::error::AppError;
use crate::output::{cell, write_csv};
use crate::tasks::Nop;
use crate::timeline::Drawing;
use procpool::{Backend, Chunk, Pool};
use serde::Serialize;
use std::io::Write;
use std::time::{Duration, Instant};

/// Round trips timed per measurement.
const APPLIES: usize = 5000;

/// One backend at one worker count.
#[derive(Debug, Clone, Serialize)]
pub struct Row {
    /// Backend name.
    pub backend: String,
    /// Workers.
    pub workers: usize,
    /// From building the pool to every worker ready (median).
    pub ready_ms: f64,
    /// The same, per worker.
    pub ready_per_worker_ms: f64,
    /// One `apply` of a no-op: median.
    pub apply_p50_us: f64,
    /// One `apply` of a no-op: 90th percentile.
    pub apply_p90_us: f64,
    /// CPU time per `apply`, coordinator and workers together (spinning shows here).
    pub apply_cpu_us: f64,
    /// No-op jobs per second, chunksize 1 (median).
    pub chunk1_jobs_per_s: f64,
    /// No-op jobs per second, chunksize auto (median).
    pub auto_jobs_per_s: f64,
    /// What auto chose.
    pub auto_chunksize: Option<usize>,
    /// Bytes written and read per job on the wire at chunksize 1 (0 for threads, serial).
    pub bytes_per_job: f64,
    /// Chunksize 1: the slowest timed run, in jobs per second.
    pub chunk1_min_jobs_per_s: f64,
    /// Chunksize 1: the fastest timed run.
    pub chunk1_max_jobs_per_s: f64,
    /// Chunksize auto: the slowest timed run.
    pub auto_min_jobs_per_s: f64,
    /// Chunksize auto: the fastest timed run.
    pub auto_max_jobs_per_s: f64,
}

/// The suite's result.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    /// "overhead".
    pub suite: &'static str,
    /// Jobs per throughput run.
    pub jobs: u64,
    /// Timed runs per measurement.
    pub repeat: usize,
    /// One row per backend and worker count.
    pub rows: Vec<Row>,
}

/// CPU seconds used so far by this process (all threads).
fn own_cpu() -> Duration {
    let mut usage = std::mem::MaybeUninit::<libc::rusage>::zeroed();
    // SAFETY: getrusage writes a `rusage` into the pointer we give; it is valid and sized.
    let rc = unsafe { libc::getrusage(libc::RUSAGE_SELF, usage.as_mut_ptr()) };
    if rc != 0 {
        return Duration::ZERO;
    }
    // SAFETY: getrusage succeeded, so the struct is initialised.
    let usage = unsafe { usage.assume_init() };
    let tv = |t: libc::timeval| Duration::new(t.tv_sec as u64, (t.tv_usec as u32) * 1000);
    tv(usage.ru_utime) + tv(usage.ru_stime)
}

/// CPU seconds used so far by process `pid` (from /proc), if it is ours to read.
fn proc_cpu(pid: u32) -> Duration {
    let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
        return Duration::ZERO;
    };
    let Some(rest) = stat.rfind(')').map(|i| &stat[i + 2..]) else {
        return Duration::ZERO;
    };
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // utime and stime are fields 14 and 15 of stat, 12 and 13 after the name.
    let ticks: u64 = [11, 12]
        .iter()
        .filter_map(|&i| fields.get(i)?.parse::<u64>().ok())
        .sum();
    // SAFETY: sysconf has no memory effects.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    let hz = if hz > 0 { hz as u64 } else { 100 };
    Duration::from_nanos(ticks * 1_000_000_000 / hz)
}

fn cpu_of(pool: &Pool<Nop>) -> Duration {
    let mut total = own_cpu();
    if pool.backend() == Backend::Process {
        total += pool.pids().iter().map(|&p| proc_cpu(p)).sum::<Duration>();
    }
    total
}

fn build(
    backend: Backend,
    workers: usize,
    chunk: Chunk,
    record: bool,
) -> Result<Pool<Nop>, AppError> {
    Ok(Pool::<Nop>::builder()
        .backend(backend)
        .workers(workers)
        .chunksize(chunk)
        .record_timeline(record)
        .build()?)
}

fn throughput(pool: &Pool<Nop>, jobs: u64, common: &Common) -> Result<(Spread, u64), AppError> {
    let before = pool.stats();
    pool.map((0..jobs.min(10_000)).map(Nop))?;
    common.progress.inc(1);
    let mut times = Vec::new();
    for _ in 0..common.repeat {
        common.check_interrupted()?;
        let t = Instant::now();
        pool.map((0..jobs).map(Nop))?;
        times.push(t.elapsed());
        common.progress.inc(1);
    }
    let after = pool.stats();
    let bytes =
        (after.bytes_sent + after.bytes_received) - (before.bytes_sent + before.bytes_received);
    Ok((Spread::of(times), bytes))
}

/// A short run on its own pool, recorded for `--timeline` (never one of the timed ones:
/// recording costs time per job, and a timed run's 100000 jobs cannot be told apart).
fn picture(workers: usize) -> Result<Drawing, AppError> {
    const APPLY: usize = 20;
    const MAP: usize = 200;
    let pool = build(Backend::Process, workers, Chunk::Fixed(1), true)?;
    for _ in 0..APPLY {
        pool.apply(Nop(0))?;
    }
    pool.map((0..MAP as u64).map(Nop))?;
    pool.join();
    Ok(Drawing {
        timeline: pool.timeline(),
        title: format!(
            "overhead (not timed): process backend, {workers} workers: start-up, {APPLY} apply \
             round trips, then map of {MAP} no-op jobs at chunksize 1"
        ),
    })
}

/// Runs the suite.
pub fn run(args: &BenchArgs, common: &Common) -> Finished<Report> {
    let jobs = args.jobs.unwrap_or(100_000);
    if jobs == 0 || jobs > 100_000_000 {
        return Err(AppError::usage(format!(
            "--jobs must be between 1 and 100000000, got {jobs}"
        )));
    }
    let worker_counts = common.workers.clone().unwrap_or_else(|| vec![2, 4]);
    let mut configs = Vec::new();
    for &b in &common.backends {
        if b == Backend::Serial {
            configs.push((b, 1));
        } else {
            configs.extend(
                super::counts_for(b, &worker_counts)
                    .into_iter()
                    .map(|w| (b, w)),
            );
        }
    }
    common
        .progress
        .set_length((configs.len() * (3 * common.repeat + 4)) as u64);
    common.progress.set_message("overhead");
    let mut rows = Vec::new();
    let mut last_process = None;
    for (backend, workers) in configs {
        common.check_interrupted()?;
        // Start-up: build and drop, warm-up first.
        drop(build(backend, workers, Chunk::Fixed(1), false)?);
        common.progress.inc(1);
        let mut readies = Vec::new();
        for _ in 0..common.repeat {
            let t = Instant::now();
            let pool = build(backend, workers, Chunk::Fixed(1), false)?;
            readies.push(t.elapsed());
            drop(pool);
            common.progress.inc(1);
        }
        let ready = Spread::of(readies).median_s;

        // Round trips, on a warm pool.
        let pool = build(backend, workers, Chunk::Fixed(1), false)?;
        common.interrupts.arm(pool.terminator());
        for _ in 0..500 {
            pool.apply(Nop(0))?;
        }
        common.progress.inc(1);
        let mut lat = Vec::with_capacity(APPLIES);
        let cpu0 = cpu_of(&pool);
        for _ in 0..APPLIES {
            let t = Instant::now();
            pool.apply(Nop(0))?;
            lat.push(t.elapsed());
        }
        let cpu = cpu_of(&pool).saturating_sub(cpu0);
        lat.sort_unstable();
        let p = |q: f64| lat[((lat.len() - 1) as f64 * q) as usize].as_secs_f64() * 1e6;
        let (apply_p50_us, apply_p90_us) = (p(0.5), p(0.9));
        let apply_cpu_us = cpu.as_secs_f64() * 1e6 / APPLIES as f64;

        let (chunk1, bytes) = throughput(&pool, jobs, common)?;
        if backend == Backend::Process {
            last_process = Some(workers);
        }
        common.interrupts.disarm();
        drop(pool);
        let auto_pool = build(backend, workers, Chunk::Auto, false)?;
        common.interrupts.arm(auto_pool.terminator());
        let (auto, _) = throughput(&auto_pool, jobs, common)?;
        let auto_chunksize = auto_pool.chunk_choice().map(|c| c.chunksize);
        common.interrupts.disarm();
        drop(auto_pool);
        // Bytes were counted over the warm-up map and the timed ones.
        let counted = common.repeat as u64 * jobs + jobs.min(10_000);
        rows.push(Row {
            backend: backend.to_string(),
            workers,
            ready_ms: ready * 1e3,
            ready_per_worker_ms: ready * 1e3 / workers as f64,
            apply_p50_us,
            apply_p90_us,
            apply_cpu_us,
            chunk1_jobs_per_s: jobs as f64 / chunk1.median_s,
            auto_jobs_per_s: jobs as f64 / auto.median_s,
            auto_chunksize,
            bytes_per_job: bytes as f64 / counted as f64,
            chunk1_min_jobs_per_s: jobs as f64 / chunk1.max_s,
            chunk1_max_jobs_per_s: jobs as f64 / chunk1.min_s,
            auto_min_jobs_per_s: jobs as f64 / auto.max_s,
            auto_max_jobs_per_s: jobs as f64 / auto.min_s,
        });
    }
    let drawing = match last_process {
        Some(workers) if common.timeline.is_some() => Some(picture(workers)?),
        _ => None,
    };
    let report = Report {
        suite: "overhead",
        jobs,
        repeat: common.repeat,
        rows,
    };
    Ok((report, drawing))
}

impl SuiteReport for Report {
    fn table(&self, out: &mut dyn Write) -> std::io::Result<()> {
        writeln!(
            out,
            "overhead: no-op jobs; ready = build to every worker ready; round trip = one apply \
             ({APPLIES} timed);\nthroughput = {} jobs through map (median of {} runs)\n",
            self.jobs, self.repeat
        )?;
        writeln!(
            out,
            "{:<8} {:>7} {:>9} {:>10} {:>9} {:>9} {:>9} {:>12} {:>12} {:>6} {:>9}",
            "backend",
            "workers",
            "ready ms",
            "ms/worker",
            "rtt p50",
            "rtt p90",
            "cpu/rtt",
            "chunk1 job/s",
            "auto job/s",
            "chunk",
            "B/job"
        )?;
        for r in &self.rows {
            writeln!(
                out,
                "{:<8} {:>7} {:>9.2} {:>10.2} {:>7.1}µs {:>7.1}µs {:>7.1}µs {:>12.0} {:>12.0} {:>6} {:>9.1}",
                r.backend,
                r.workers,
                r.ready_ms,
                r.ready_per_worker_ms,
                r.apply_p50_us,
                r.apply_p90_us,
                r.apply_cpu_us,
                r.chunk1_jobs_per_s,
                r.auto_jobs_per_s,
                r.auto_chunksize
                    .map_or_else(|| "-".into(), |c| c.to_string()),
                r.bytes_per_job
            )?;
        }
        writeln!(
            out,
            "\ncpu/rtt: CPU time of the coordinator and its workers per round trip; above the \
             round trip itself it shows the bounded spin before sleeping"
        )
    }

    fn csv(&self, out: &mut dyn Write) -> std::io::Result<()> {
        write_csv(
            out,
            &[
                "backend",
                "workers",
                "ready_ms",
                "ready_per_worker_ms",
                "apply_p50_us",
                "apply_p90_us",
                "apply_cpu_us",
                "chunk1_jobs_per_s",
                "chunk1_min_jobs_per_s",
                "chunk1_max_jobs_per_s",
                "auto_jobs_per_s",
                "auto_min_jobs_per_s",
                "auto_max_jobs_per_s",
                "auto_chunksize",
                "bytes_per_job",
            ],
            self.rows.iter().map(|r| {
                [
                    r.backend.clone(),
                    r.workers.to_string(),
                    r.ready_ms.to_string(),
                    r.ready_per_worker_ms.to_string(),
                    r.apply_p50_us.to_string(),
                    r.apply_p90_us.to_string(),
                    r.apply_cpu_us.to_string(),
                    r.chunk1_jobs_per_s.to_string(),
                    r.chunk1_min_jobs_per_s.to_string(),
                    r.chunk1_max_jobs_per_s.to_string(),
                    r.auto_jobs_per_s.to_string(),
                    r.auto_min_jobs_per_s.to_string(),
                    r.auto_max_jobs_per_s.to_string(),
                    cell(r.auto_chunksize),
                    r.bytes_per_job.to_string(),
                ]
            }),
        )
    }

    fn plot(&self, path: &std::path::Path, subtitle: &str) -> Result<(), AppError> {
        super::plot::bars(
            path,
            "Empty-job throughput: what orchestration costs per job",
            subtitle,
            &format!(
                "no-op jobs per second through map ({} jobs a run); bar = median of {}",
                self.jobs, self.repeat
            ),
            Measure::Rate,
            &self.bars(),
            None,
        )
    }

    fn name(&self) -> &'static str {
        "overhead"
    }
}

impl Report {
    /// Two bars per configuration (chunksize 1, then auto), with the spread of their runs.
    fn bars(&self) -> Vec<Bar> {
        let mut bars = Vec::new();
        for r in &self.rows {
            let name = if r.backend == "serial" {
                "serial".to_owned()
            } else {
                format!("{} x{}", r.backend, r.workers)
            };
            bars.push(Bar {
                label: format!("{name}, chunksize 1"),
                backend: r.backend.clone(),
                median: r.chunk1_jobs_per_s,
                min: r.chunk1_min_jobs_per_s,
                max: r.chunk1_max_jobs_per_s,
            });
            bars.push(Bar {
                label: match r.auto_chunksize {
                    Some(c) => format!("{name}, auto ({c})"),
                    None => format!("{name}, auto"),
                },
                backend: r.backend.clone(),
                median: r.auto_jobs_per_s,
                min: r.auto_min_jobs_per_s,
                max: r.auto_max_jobs_per_s,
            });
        }
        bars
    }
}
