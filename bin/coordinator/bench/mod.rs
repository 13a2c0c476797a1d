//! `coordinator bench <suite>`: processes against threads against serial, measured on
//! this machine and printed with the machine's description above every result.
//!
//! Method, for every suite: one warm-up run per configuration, then `--repeat` timed runs;
//! the median is reported (with min and max where it matters). Wall time is measured
//! with `Instant` around exactly what the row says; nothing is extrapolated.

mod granularity;
mod overhead;
mod plot;
mod scaling;

use crate::cli::{BenchArgs, Format, Suite};
use crate::config::{check_workers, default_workers};
use crate::error::AppError;
use crate::signals::Interrupts;
use crate::sysinfo::SysInfo;
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use procpool::{Backend, Chunk, Timeline};
use serde::Serialize;
use std::io::{IsTerminal, Write};
use std::path::PathBuf;
use std::time::Duration;

/// What every suite is given.
pub struct Common {
    /// Backends to measure, in report order.
    pub backends: Vec<Backend>,
    /// Worker counts, if given.
    pub workers: Option<Vec<usize>>,
    /// Timed runs per configuration.
    pub repeat: usize,
    /// Jobs per message.
    pub chunk: Chunk,
    /// Progress on stderr (hidden when stderr is not a terminal).
    pub progress: ProgressBar,
    /// Where a timeline should go, if anywhere.
    pub timeline: Option<PathBuf>,
    /// Stops between runs when a signal came.
    pub interrupts: Interrupts,
}

impl Common {
    /// Fails with the interruption if a signal came.
    pub fn check_interrupted(&self) -> Result<(), AppError> {
        match self.interrupts.caught() {
            Some(signal) => Err(AppError::Interrupted {
                signal,
                message: format!("bench interrupted by {}", crate::signals::name(signal)),
            }),
            None => Ok(()),
        }
    }
}

/// Median, min and max of repeated timings.
#[derive(Debug, Clone, Copy, Serialize)]
pub struct Spread {
    /// Median (the middle one; the upper middle for an even count).
    pub median_s: f64,
    /// Fastest.
    pub min_s: f64,
    /// Slowest.
    pub max_s: f64,
}

impl Spread {
    /// Of a non-empty set of durations.
    pub fn of(mut times: Vec<Duration>) -> Spread {
        times.sort_unstable();
        let s = |d: Duration| d.as_secs_f64();
        Spread {
            median_s: times.get(times.len() / 2).map_or(0.0, |d| s(*d)),
            min_s: times.first().map_or(0.0, |d| s(*d)),
            max_s: times.last().map_or(0.0, |d| s(*d)),
        }
    }
}

/// A finished suite: how to print it in each format and how to draw it.
pub trait SuiteReport: Serialize {
    /// Aligned columns for people.
    fn table(&self, out: &mut dyn Write) -> std::io::Result<()>;
    /// CSV rows with a header.
    fn csv(&self, out: &mut dyn Write) -> std::io::Result<()>;
    /// An SVG chart.
    fn plot(&self, path: &std::path::Path) -> Result<(), AppError>;
}

/// Parses a comma-separated list given to `flag`.
fn parse_list<T: std::str::FromStr>(flag: &str, s: &str) -> Result<Vec<T>, AppError> {
    let items: Result<Vec<T>, _> = s
        .split(',')
        .map(|item| item.trim().parse::<T>().map_err(|_| item.trim().to_owned()))
        .collect();
    match items {
        Ok(v) if !v.is_empty() => Ok(v),
        Ok(_) => Err(AppError::usage(format!("{flag} is empty"))),
        Err(item) => Err(AppError::usage(format!(
            "{flag}: {item:?} is not valid in {s:?}"
        ))),
    }
}

/// The worker counts to measure `backend` at: the given ones, except for MPI, whose
/// workers are the ranks after 0 (one count, fixed by mpirun).
pub fn counts_for(backend: Backend, counts: &[usize]) -> Vec<usize> {
    if crate::mpi_backend(backend) {
        crate::mpi_workers().into_iter().collect()
    } else {
        counts.to_vec()
    }
}

/// The default worker counts for the scaling suite: 1..=cores, plus 1.5 x cores.
pub fn default_scaling_workers() -> Vec<usize> {
    let cores = default_workers();
    let mut v: Vec<usize> = (1..=cores).collect();
    let extra = (cores * 3).div_ceil(2);
    if extra > cores {
        v.push(extra);
    }
    v
}

/// Runs the suite `args` names and prints it.
pub fn run(args: &BenchArgs, interrupts: &Interrupts, out: &mut dyn Write) -> Result<(), AppError> {
    let backends = match &args.backends {
        Some(list) => {
            let mut v: Vec<Backend> = parse_list::<String>("--backends", list)?
                .iter()
                .map(|b| {
                    b.parse::<Backend>()
                        .map_err(|e| AppError::usage(format!("--backends: {e}")))
                })
                .collect::<Result<_, _>>()?;
            v.dedup();
            v
        }
        None => Backend::ALL.to_vec(),
    };
    let workers = match &args.workers {
        Some(list) => Some(
            parse_list::<usize>("--workers", list)?
                .into_iter()
                .map(check_workers)
                .collect::<Result<Vec<_>, _>>()?,
        ),
        None => None,
    };
    if args.repeat == 0 || args.repeat > 1000 {
        return Err(AppError::usage(format!(
            "--repeat must be between 1 and 1000, got {}",
            args.repeat
        )));
    }
    let chunk: Chunk = args.chunksize.parse().map_err(|_| {
        AppError::usage(format!(
            "--chunksize must be a whole number >= 1 or \"auto\", got {:?}",
            args.chunksize
        ))
    })?;
    for path in [&args.plot, &args.timeline].into_iter().flatten() {
        if path.extension().and_then(|e| e.to_str()) != Some("svg") {
            return Err(AppError::usage(format!(
                "{} must end in .svg",
                path.display()
            )));
        }
    }
    let progress = if std::io::stderr().is_terminal() {
        let pb = ProgressBar::with_draw_target(Some(0), ProgressDrawTarget::stderr());
        pb.set_style(
            ProgressStyle::with_template("{spinner} {msg} [{bar:30}] {pos}/{len} runs, {elapsed}")
                .unwrap_or_else(|_| ProgressStyle::default_bar()),
        );
        pb
    } else {
        ProgressBar::hidden()
    };
    let common = Common {
        backends,
        workers,
        repeat: args.repeat,
        chunk,
        progress,
        timeline: args.timeline.clone(),
        interrupts: interrupts.clone(),
    };
    let sys = SysInfo::collect();
    let report: Box<dyn Emit> = match args.suite {
        Suite::Scaling => Box::new(scaling::run(args, &common)?),
        Suite::Overhead => Box::new(overhead::run(args, &common)?),
        Suite::Granularity => Box::new(granularity::run(args, &common)?),
    };
    common.progress.finish_and_clear();
    report.emit(out, args.format, &sys)?;
    if let Some(path) = &args.plot {
        report.draw(path)?;
    }
    Ok(())
}

/// Object-safe printing of any suite's report.
trait Emit {
    fn emit(&self, out: &mut dyn Write, format: Format, sys: &SysInfo) -> Result<(), AppError>;
    fn draw(&self, path: &std::path::Path) -> Result<(), AppError>;
}

impl<R: SuiteReport> Emit for R {
    fn emit(&self, out: &mut dyn Write, format: Format, sys: &SysInfo) -> Result<(), AppError> {
        let io = |e: std::io::Error| AppError::failed(format!("could not write the output: {e}"));
        match format {
            Format::Table => {
                sys.write(out, Format::Table).map_err(io)?;
                writeln!(out).map_err(io)?;
                self.table(out).map_err(io)?;
            }
            Format::Csv => {
                let mut head = Vec::new();
                sys.write(&mut head, Format::Table).map_err(io)?;
                for line in String::from_utf8_lossy(&head)
                    .lines()
                    .filter(|l| !l.is_empty())
                {
                    writeln!(out, "# {line}").map_err(io)?;
                }
                self.csv(out).map_err(io)?;
            }
            Format::Json => {
                #[derive(Serialize)]
                struct WithSys<'a, R> {
                    sysinfo: &'a SysInfo,
                    #[serde(flatten)]
                    report: &'a R,
                }
                serde_json::to_writer_pretty(
                    &mut *out,
                    &WithSys {
                        sysinfo: sys,
                        report: self,
                    },
                )
                .map_err(|e| io(crate::output::json_io(e)))?;
                writeln!(out).map_err(io)?;
            }
        }
        Ok(())
    }

    fn draw(&self, path: &std::path::Path) -> Result<(), AppError> {
        self.plot(path)
    }
}

/// Writes `timeline` to `path` as SVG, if a timeline was asked for.
pub fn write_timeline(
    common: &Common,
    timeline: Option<&Timeline>,
    title: &str,
) -> Result<(), AppError> {
    if let (Some(path), Some(t)) = (&common.timeline, timeline) {
        crate::timeline::draw(t, title, path)?;
    }
    Ok(())
}
