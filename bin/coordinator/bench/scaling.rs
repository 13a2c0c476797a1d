//! The seed's benchmark: the Parzen sweep (n = 10000, 100 widths from 1.0 to 1.2) on
//! serial, and on threads and processes at each worker count. A timed run is what the
//! article's `multiprocess()` timed: start the pool (the context — the bucket index of
//! each sample's distance to the point — is shared with every worker), run every width,
//! shut the pool down.
//!
//! `--workload lscv` makes each job score its width by least-squares cross-validation
//! instead (O(n^2) pairs, about 14 ms a width at n = 10000 on the reference machine), the
//! CPU-bound sweep where more processes pay: 128 widths from 1.0 to 1.2 by default, a
//! multiple of every power-of-two worker count up to 128, so no worker waits on a last
//! job.

use super::plot::{Bar, Measure};
use super::{Common, Finished, Spread, SuiteReport};
use crate::cli::{BenchArgs, Workload};
use crate::config::DEFAULT_SEED;
use crate::config::check_memory;
use crate::error::AppError;
use crate::memory::Budget;
use crate::output::{cell, write_csv};
use crate::tasks::{ParzenJob, SweepContext};
use crate::timeline::Drawing;
use parzen::Gaussian;
use procpool::{Backend, Pool, Timeline};
use serde::Serialize;
use std::io::Write;
use std::time::{Duration, Instant};

/// One configuration's timings.
#[derive(Debug, Clone, Serialize)]
pub struct Row {
    /// Backend name.
    pub backend: String,
    /// Workers (1 for serial).
    pub workers: usize,
    /// Whole runs: start, sweep, shut down.
    #[serde(flatten)]
    pub wall: Spread,
    /// Median time until every worker was ready.
    pub ready_s: f64,
    /// Serial median / this median.
    pub speedup: f64,
    /// Speedup / workers.
    pub efficiency: f64,
}

/// The suite's result.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    /// "scaling".
    pub suite: &'static str,
    /// What a job computes: "parzen" (the density count) or "lscv" (the LSCV score).
    pub workload: &'static str,
    /// Samples.
    pub samples: usize,
    /// Dimensions.
    pub dims: usize,
    /// Where the samples came from.
    pub data: String,
    /// Widths (jobs) per run.
    pub widths: usize,
    /// Timed runs per configuration.
    pub repeat: usize,
    /// Chunk size setting.
    pub chunksize: String,
    /// Whether every configuration produced the same densities, bit for bit.
    pub identical: bool,
    /// One row per configuration, serial first.
    pub rows: Vec<Row>,
}

struct Once {
    wall: Duration,
    ready: Duration,
    bits: Vec<u64>,
    timeline: Option<Timeline>,
}

fn run_once(
    backend: Backend,
    workers: usize,
    common: &Common,
    prepared: &SweepContext,
    widths: &[f64],
    record: bool,
) -> Result<Once, AppError> {
    let ctx = prepared.clone();
    let start = Instant::now();
    let pool = Pool::<ParzenJob>::builder()
        .backend(backend)
        .workers(workers)
        .chunksize(common.chunk)
        .context(ctx)
        .record_timeline(record)
        .build()?;
    common.interrupts.arm(pool.terminator());
    let ready = start.elapsed();
    let out = pool.map(widths.iter().map(|&h| ParzenJob { h }));
    let timeline = record.then(|| {
        pool.join();
        pool.timeline()
    });
    common.interrupts.disarm();
    drop(pool);
    let wall = start.elapsed();
    common.check_interrupted()?;
    let mut bits = Vec::with_capacity(widths.len() * 3);
    for e in out? {
        let e = e.map_err(|why| AppError::failed(format!("a job failed: {why}")))?;
        bits.push(e.density.to_bits());
        if let Some(l) = e.lscv {
            bits.extend([l.s.to_bits(), l.c]);
        }
    }
    Ok(Once {
        wall,
        ready,
        bits,
        timeline,
    })
}

/// Default widths of the LSCV workload: 128 from 1.0 to 1.2.
pub const LSCV_WIDTHS: &str = "1:1.2:128";

/// Runs the suite; the timeline, if asked for, is of the last timed process-backend run.
pub fn run(args: &BenchArgs, common: &Common) -> Finished<Report> {
    let workload = args.workload.unwrap_or_default();
    let lscv = workload == Workload::Lscv;
    let budget = Budget::from_arg(args.max_memory.as_deref())?;
    let (samples, data) = match &args.data {
        Some(path) => {
            let limits = parzen::LoadLimits {
                max_file_bytes: budget.bytes,
                max_alloc_bytes: budget.bytes,
            };
            let samples = parzen::load_with(path, &limits)
                .map_err(|e| AppError::usage(format!("--data: {e}")))?;
            check_memory(
                &budget,
                samples.len() as u64,
                samples.dims() as u64,
                lscv,
                1,
            )?;
            (samples, path.display().to_string())
        }
        None => {
            let n = args.samples.unwrap_or(10_000);
            if n == 0 || n > crate::config::MAX_SAMPLES {
                return Err(AppError::usage(format!(
                    "--samples must be between 1 and {}, got {n}",
                    crate::config::MAX_SAMPLES
                )));
            }
            check_memory(&budget, n, 2, lscv, 1)?;
            let g = Gaussian::standard(2).map_err(|e| AppError::failed(e.to_string()))?;
            let s = g
                .sample(n as usize, DEFAULT_SEED)
                .map_err(|e| AppError::usage(format!("--samples: {e}")))?;
            (s, format!("N(0, I), 2 dims, seed {DEFAULT_SEED}"))
        }
    };
    let widths = match (&args.widths, workload) {
        (Some(spec), _) => {
            parzen::parse_widths(spec).map_err(|e| AppError::usage(format!("--widths: {e}")))?
        }
        (None, Workload::Parzen) => parzen::seed_benchmark_widths(),
        (None, Workload::Lscv) => parzen::parse_widths(LSCV_WIDTHS)
            .map_err(|e| AppError::failed(format!("the default widths: {e}")))?,
    };
    let point = vec![0.0; samples.dims()];
    let prepared = SweepContext::new(&samples, &point, &widths, lscv)?;
    if let Some(data) = &prepared.lscv {
        let view = data
            .view()
            .map_err(|e| AppError::failed(format!("lscv: {e}")))?;
        let cost = crate::run::lscv_cost(&view, &widths);
        if cost.seconds > crate::run::LSCV_BUDGET_S {
            return Err(AppError::usage(format!(
                "--workload lscv: {} widths over {} samples are estimated at {:.0} s on one \
                 core per run, over the budget of {} s (a run is repeated {} times per \
                 configuration); use fewer --samples or smaller --widths",
                widths.len(),
                samples.len(),
                cost.seconds,
                crate::run::LSCV_BUDGET_S,
                common.repeat + 1
            )));
        }
    }
    let worker_counts = common
        .workers
        .clone()
        .unwrap_or_else(super::default_scaling_workers);
    // Serial always runs: it is what speedups are measured against.
    let mut configs: Vec<(Backend, usize)> = vec![(Backend::Serial, 1)];
    for &b in &common.backends {
        if b != Backend::Serial {
            configs.extend(
                super::counts_for(b, &worker_counts)
                    .into_iter()
                    .map(|w| (b, w)),
            );
        }
    }
    common
        .progress
        .set_length(((common.repeat + 1) * configs.len()) as u64);
    common.progress.set_message("scaling");
    let last_process = configs.iter().rposition(|(b, _)| *b == Backend::Process);
    let mut drawing = None;
    let mut reference: Option<Vec<u64>> = None;
    let mut identical = true;
    // Warm-ups first, then the timed runs in rounds, one run of every configuration per
    // round: load from elsewhere that comes and goes then moves every row alike, and the
    // ratios between rows stay meaningful on a shared machine.
    for &(backend, workers) in &configs {
        common.check_interrupted()?;
        let warm = run_once(backend, workers, common, &prepared, &widths, false)?;
        common.progress.inc(1);
        match &reference {
            None => reference = Some(warm.bits),
            Some(r) => identical &= *r == warm.bits,
        }
    }
    let mut walls = vec![Vec::new(); configs.len()];
    let mut readies = vec![Vec::new(); configs.len()];
    for k in 0..common.repeat {
        for (i, &(backend, workers)) in configs.iter().enumerate() {
            common.check_interrupted()?;
            let record =
                Some(i) == last_process && k + 1 == common.repeat && common.timeline.is_some();
            let once = run_once(backend, workers, common, &prepared, &widths, record)?;
            common.progress.inc(1);
            walls[i].push(once.wall);
            readies[i].push(once.ready);
            if let Some(timeline) = once.timeline {
                drawing = Some(Drawing {
                    timeline,
                    title: format!(
                        "{} sweep, {} widths, n = {}: process backend, {workers} workers",
                        sweep_name(workload),
                        widths.len(),
                        samples.len()
                    ),
                });
            }
        }
    }
    let mut rows: Vec<Row> = configs
        .iter()
        .zip(walls.into_iter().zip(readies))
        .map(|(&(backend, workers), (walls, readies))| Row {
            backend: backend.to_string(),
            workers,
            wall: Spread::of(walls),
            ready_s: Spread::of(readies).median_s,
            speedup: 0.0,
            efficiency: 0.0,
        })
        .collect();
    let serial = rows.first().map_or(1.0, |r| r.wall.median_s);
    for r in &mut rows {
        r.speedup = serial / r.wall.median_s;
        r.efficiency = r.speedup / r.workers as f64;
    }
    let report = Report {
        suite: "scaling",
        workload: match workload {
            Workload::Parzen => "parzen",
            Workload::Lscv => "lscv",
        },
        samples: samples.len(),
        dims: samples.dims(),
        data,
        widths: widths.len(),
        repeat: common.repeat,
        chunksize: common.chunk.to_string(),
        identical,
        rows,
    };
    Ok((report, drawing))
}

impl SuiteReport for Report {
    fn table(&self, out: &mut dyn Write) -> std::io::Result<()> {
        writeln!(
            out,
            "scaling: {} of {} widths over {} samples ({}); median of {} runs after a warm-up, \
             configurations in turn",
            self.sweep_name(),
            self.widths,
            self.samples,
            self.data,
            self.repeat
        )?;
        writeln!(
            out,
            "a job = {}\na run = start the pool, share the context, run every width, shut down\n",
            if self.workload == "lscv" {
                "one width's least-squares cross-validation score (O(n^2) pairs)"
            } else {
                "one width's density count at the point (the bucket index)"
            }
        )?;
        writeln!(
            out,
            "{:<8} {:>7} {:>11} {:>11} {:>11} {:>10} {:>8} {:>10}",
            "backend",
            "workers",
            "median ms",
            "min ms",
            "max ms",
            "ready ms",
            "speedup",
            "efficiency"
        )?;
        for r in &self.rows {
            writeln!(
                out,
                "{:<8} {:>7} {:>11.2} {:>11.2} {:>11.2} {:>10.2} {:>8.2} {:>9.0}%",
                r.backend,
                r.workers,
                r.wall.median_s * 1e3,
                r.wall.min_s * 1e3,
                r.wall.max_s * 1e3,
                r.ready_s * 1e3,
                r.speedup,
                r.efficiency * 100.0
            )?;
        }
        writeln!(
            out,
            "\nresults identical across configurations (bit for bit): {}",
            if self.identical { "yes" } else { "NO" }
        )
    }

    fn csv(&self, out: &mut dyn Write) -> std::io::Result<()> {
        write_csv(
            out,
            &[
                "backend",
                "workers",
                "median_s",
                "min_s",
                "max_s",
                "ready_s",
                "speedup",
                "efficiency",
            ],
            self.rows.iter().map(|r| {
                [
                    r.backend.clone(),
                    r.workers.to_string(),
                    r.wall.median_s.to_string(),
                    r.wall.min_s.to_string(),
                    r.wall.max_s.to_string(),
                    r.ready_s.to_string(),
                    cell(Some(r.speedup)),
                    cell(Some(r.efficiency)),
                ]
            }),
        )
    }

    fn plot(&self, path: &std::path::Path, subtitle: &str) -> Result<(), AppError> {
        super::plot::bars(
            path,
            &format!(
                "Serial vs. threads vs. processes: {} of {} widths, n = {}",
                self.sweep_name(),
                self.widths,
                self.samples
            ),
            subtitle,
            &format!(
                "a run: start the pool, {} widths, shut down; bar = median of {}",
                self.widths, self.repeat
            ),
            Measure::Time,
            &self.bars(),
            self.rows
                .first()
                .map(|r| ("serial (median)", r.wall.median_s)),
        )
    }

    fn name(&self) -> &'static str {
        "scaling"
    }
}

/// How a workload's sweep is named in titles.
fn sweep_name(w: Workload) -> &'static str {
    match w {
        Workload::Parzen => "Parzen",
        Workload::Lscv => "LSCV",
    }
}

impl Report {
    /// "Parzen sweep" or "LSCV sweep".
    fn sweep_name(&self) -> &'static str {
        if self.workload == "lscv" {
            "LSCV sweep"
        } else {
            "Parzen sweep"
        }
    }

    /// One bar per configuration, serial first, with the spread of its timed runs.
    fn bars(&self) -> Vec<Bar> {
        self.rows
            .iter()
            .map(|r| Bar {
                label: if r.backend == "serial" {
                    "serial".to_owned()
                } else {
                    format!("{} x{}", r.backend, r.workers)
                },
                backend: r.backend.clone(),
                median: r.wall.median_s,
                min: r.wall.min_s,
                max: r.wall.max_s,
            })
            .collect()
    }
}
