//! Where a pool starts to pay off: busy-spin jobs of 1 µs to 10 ms, the same number of
//! them on serial, threads and processes; speedup against serial per job size, and the
//! break-even size (the smallest at which the backend beats serial). Pools are started
//! before timing: this measures the per-job cost, `overhead` measures start-up.

use super::{Common, Finished, Spread, SuiteReport};
use crate::cli::BenchArgs;
use crate::config::default_workers;
use crate::error::AppError;
use crate::output::write_csv;
use crate::tasks::Spin;
use procpool::{Backend, Pool};
use serde::Serialize;
use std::io::Write;
use std::time::{Duration, Instant};

/// Serial work per job size and run, which sets how many jobs a size gets.
const WORK_PER_RUN: Duration = Duration::from_millis(250);

/// One (backend, workers, job size).
#[derive(Debug, Clone, Serialize)]
pub struct Row {
    /// Backend name.
    pub backend: String,
    /// Workers (1 for serial).
    pub workers: usize,
    /// Job size in microseconds of busy spinning.
    pub job_us: f64,
    /// Jobs per run.
    pub jobs: u64,
    /// Median wall time of a run.
    pub wall_s: f64,
    /// Fastest and slowest runs.
    pub min_s: f64,
    /// Slowest run.
    pub max_s: f64,
    /// Serial wall / this wall.
    pub speedup: f64,
}

/// The suite's result.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    /// "granularity".
    pub suite: &'static str,
    /// Timed runs per configuration.
    pub repeat: usize,
    /// Chunk size setting.
    pub chunksize: String,
    /// All rows.
    pub rows: Vec<Row>,
    /// Per (backend, workers): the smallest job size (µs) at which it beats serial.
    pub break_even_us: Vec<BreakEven>,
}

/// Where one configuration starts to pay off.
#[derive(Debug, Clone, Serialize)]
pub struct BreakEven {
    /// Backend name.
    pub backend: String,
    /// Workers.
    pub workers: usize,
    /// Smallest measured job size with speedup > 1 (null: never).
    pub job_us: Option<f64>,
}

fn jobs_for(job: Duration) -> u64 {
    (WORK_PER_RUN.as_nanos() / job.as_nanos().max(1)).clamp(40, 250_000) as u64
}

fn time_runs(
    pool: &Pool<Spin>,
    job: Duration,
    jobs: u64,
    common: &Common,
) -> Result<Spread, AppError> {
    let spin = Spin {
        nanos: job.as_nanos() as u64,
    };
    pool.map((0..jobs.min(2000)).map(|_| spin))?;
    common.progress.inc(1);
    let mut times = Vec::new();
    for _ in 0..common.repeat {
        common.check_interrupted()?;
        let t = Instant::now();
        pool.map((0..jobs).map(|_| spin))?;
        times.push(t.elapsed());
        common.progress.inc(1);
    }
    Ok(Spread::of(times))
}

/// Runs the suite (it draws no timeline: a run is up to 250000 jobs).
pub fn run(args: &BenchArgs, common: &Common) -> Finished<Report> {
    let sizes: Vec<f64> = match &args.sizes {
        Some(list) => super::parse_list::<f64>("--sizes", list)?,
        None => vec![1.0, 10.0, 100.0, 1000.0, 10_000.0],
    };
    if let Some(bad) = sizes
        .iter()
        .find(|s| !(s.is_finite() && **s > 0.0 && **s <= 1e7))
    {
        return Err(AppError::usage(format!(
            "--sizes: job sizes are microseconds between 0 and 10000000, got {bad}"
        )));
    }
    let worker_counts = common
        .workers
        .clone()
        .unwrap_or_else(|| vec![default_workers()]);
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
        .set_length((configs.len() * sizes.len() * (common.repeat + 1)) as u64);
    common.progress.set_message("granularity");
    let mut rows = Vec::new();
    for &(backend, workers) in &configs {
        let pool = Pool::<Spin>::builder()
            .backend(backend)
            .workers(workers)
            .chunksize(common.chunk)
            .build()?;
        common.interrupts.arm(pool.terminator());
        for &us in &sizes {
            let job = Duration::from_secs_f64(us / 1e6);
            let jobs = jobs_for(job);
            let spread = time_runs(&pool, job, jobs, common)?;
            rows.push(Row {
                backend: backend.to_string(),
                workers,
                job_us: us,
                jobs,
                wall_s: spread.median_s,
                min_s: spread.min_s,
                max_s: spread.max_s,
                speedup: 0.0,
            });
        }
        common.interrupts.disarm();
        drop(pool);
    }
    let serial: Vec<(f64, f64)> = rows
        .iter()
        .filter(|r| r.backend == "serial")
        .map(|r| (r.job_us, r.wall_s))
        .collect();
    for r in &mut rows {
        if let Some((_, s)) = serial.iter().find(|(us, _)| *us == r.job_us) {
            r.speedup = s / r.wall_s;
        }
    }
    let break_even_us = configs
        .iter()
        .filter(|(b, _)| *b != Backend::Serial)
        .map(|&(b, w)| {
            let mut mine: Vec<&Row> = rows
                .iter()
                .filter(|r| r.backend == b.name() && r.workers == w)
                .collect();
            mine.sort_by(|a, b| a.job_us.total_cmp(&b.job_us));
            BreakEven {
                backend: b.to_string(),
                workers: w,
                job_us: mine.iter().find(|r| r.speedup > 1.0).map(|r| r.job_us),
            }
        })
        .collect();
    let report = Report {
        suite: "granularity",
        repeat: common.repeat,
        chunksize: common.chunk.to_string(),
        rows,
        break_even_us,
    };
    Ok((report, None))
}

fn fmt_us(us: f64) -> String {
    if us >= 1000.0 {
        format!("{} ms", us / 1000.0)
    } else {
        format!("{us} µs")
    }
}

impl SuiteReport for Report {
    fn table(&self, out: &mut dyn Write) -> std::io::Result<()> {
        writeln!(
            out,
            "granularity: busy-spin jobs; pools started before timing; median of {} runs; chunksize {}\n",
            self.repeat, self.chunksize
        )?;
        let mut sizes: Vec<f64> = self.rows.iter().map(|r| r.job_us).collect();
        sizes.sort_by(f64::total_cmp);
        sizes.dedup();
        let configs: Vec<(String, usize)> = {
            let mut c: Vec<(String, usize)> = self
                .rows
                .iter()
                .filter(|r| r.backend != "serial")
                .map(|r| (r.backend.clone(), r.workers))
                .collect();
            c.dedup();
            c
        };
        write!(out, "{:>9} {:>8} {:>10}", "job", "jobs", "serial ms")?;
        for (b, w) in &configs {
            write!(out, " {:>18}", format!("{b} x{w}: ms (speedup)"))?;
        }
        writeln!(out)?;
        for us in &sizes {
            let at = |b: &str, w: usize| {
                self.rows
                    .iter()
                    .find(|r| r.job_us == *us && r.backend == b && r.workers == w)
            };
            let Some(serial) = at("serial", 1) else {
                continue;
            };
            write!(
                out,
                "{:>9} {:>8} {:>10.1}",
                fmt_us(*us),
                serial.jobs,
                serial.wall_s * 1e3
            )?;
            for (b, w) in &configs {
                match at(b, *w) {
                    Some(r) => {
                        let even = self
                            .break_even_us
                            .iter()
                            .any(|e| e.backend == *b && e.workers == *w && e.job_us == Some(*us));
                        let cell = format!(
                            "{:.1} ({:.2}x){}",
                            r.wall_s * 1e3,
                            r.speedup,
                            if even { "*" } else { " " }
                        );
                        write!(out, " {cell:>18}")?;
                    }
                    None => write!(out, " {:>18}", "-")?,
                }
            }
            writeln!(out)?;
        }
        writeln!(
            out,
            "\n* break-even: the smallest job size at which the backend beats serial"
        )?;
        for e in &self.break_even_us {
            writeln!(
                out,
                "  {} x{}: {}",
                e.backend,
                e.workers,
                e.job_us
                    .map_or_else(|| "never, at these sizes".to_owned(), fmt_us)
            )?;
        }
        Ok(())
    }

    fn csv(&self, out: &mut dyn Write) -> std::io::Result<()> {
        write_csv(
            out,
            &[
                "backend", "workers", "job_us", "jobs", "wall_s", "min_s", "max_s", "speedup",
            ],
            self.rows.iter().map(|r| {
                [
                    r.backend.clone(),
                    r.workers.to_string(),
                    r.job_us.to_string(),
                    r.jobs.to_string(),
                    r.wall_s.to_string(),
                    r.min_s.to_string(),
                    r.max_s.to_string(),
                    r.speedup.to_string(),
                ]
            }),
        )
    }

    fn name(&self) -> &'static str {
        "granularity"
    }

    fn plot(&self, path: &std::path::Path, subtitle: &str) -> Result<(), AppError> {
        let mut series: Vec<(String, Vec<(f64, f64)>)> = Vec::new();
        for r in self.rows.iter().filter(|r| r.backend != "serial") {
            let name = format!("{} x{}", r.backend, r.workers);
            match series.iter_mut().find(|(n, _)| *n == name) {
                Some((_, pts)) => pts.push((r.job_us, r.speedup)),
                None => series.push((name, vec![(r.job_us, r.speedup)])),
            }
        }
        super::plot::speedup_lines(
            path,
            "Speedup against serial by job size",
            subtitle,
            &series,
        )
    }
}
