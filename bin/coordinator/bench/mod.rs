//! `coordinator bench <suite>`: processes against threads against serial, measured on
//! this machine and printed with the machine's description above every result.
//!
//! Method, for every suite: one warm-up run per configuration, then `--repeat` timed runs;
//! the median is reported (with min and max where it matters). `scaling` runs its timed
//! runs in rounds, one of each configuration per round, so that load from elsewhere moves
//! every row alike. Wall time is measured
//! with `Instant` around exactly what the row says; nothing is extrapolated.

mod granularity;
mod overhead;
mod plot;
mod scaling;

use crate::cli::{BenchArgs, Format, Suite};
use crate::config::{check_workers, default_workers};
use crate::error::{AppError, Outcome, quote};
use crate::output::check_output_path;
use crate::signals::Interrupts;
use crate::sysinfo::SysInfo;
use crate::timeline::Drawing;
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use procpool::{Backend, Chunk};
use serde::Serialize;
use std::io::{IsTerminal, Write};
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

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
    /// A header line, then one row per measurement; every number in full.
    fn csv(&self, out: &mut dyn Write) -> std::io::Result<()>;
    /// An SVG chart; `subtitle` names the machine and the date.
    fn plot(&self, path: &Path, subtitle: &str) -> Result<(), AppError>;
    /// "scaling", "overhead" or "granularity", for the JSON schema.
    fn name(&self) -> &'static str;
}

/// What a suite hands back: its report and, if one was asked for, a run's timeline.
pub type Finished<R> = Result<(R, Option<Drawing>), AppError>;

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
            "{flag}: {} is not valid in {}",
            quote(&item),
            quote(s)
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

/// Runs the suite `args` names and prints it; then draws what `--plot` and `--timeline`
/// ask for (after the report, so a chart that fails never costs the results). `progress`:
/// whether a progress bar may show on a terminal (not under `-q`).
pub fn run(
    args: &BenchArgs,
    progress: bool,
    interrupts: &Interrupts,
    out: &mut dyn Write,
) -> Result<(), Outcome> {
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
        ))
        .into());
    }
    let chunk: Chunk = crate::config::parse_chunk(&args.chunksize)?;
    if args.suite != Suite::Scaling {
        for (flag, given) in [
            ("--workload", args.workload.is_some()),
            ("--max-memory", args.max_memory.is_some()),
        ] {
            if given {
                return Err(AppError::usage(format!(
                    "{flag} is a setting of bench scaling; this suite does not take it"
                ))
                .into());
            }
        }
    }
    if args.timeline.is_some() {
        if args.suite == Suite::Granularity {
            return Err(AppError::usage(
                "--timeline: bench granularity draws no timeline (a run is up to 250000 jobs, \
                 too many to tell apart); its chart is --plot, and `bench scaling --timeline` \
                 shows a run job by job",
            )
            .into());
        }
        if !backends.contains(&Backend::Process) {
            return Err(AppError::usage(format!(
                "--timeline draws a process-backend run, but --backends {} has no process",
                args.backends.as_deref().unwrap_or_default()
            ))
            .into());
        }
    }
    // Before any work: a path we cannot write is bad input, not a lost result.
    for (flag, path) in [("--plot", &args.plot), ("--timeline", &args.timeline)] {
        if let Some(path) = path {
            check_output_path(flag, path, "svg")?;
        }
    }
    let progress = if progress && std::io::stderr().is_terminal() {
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
    let meta = Meta {
        sys: SysInfo::collect(),
        date: humantime::format_rfc3339_seconds(SystemTime::now()).to_string(),
    };
    let finished: Result<(Box<dyn Emit>, Option<Drawing>), AppError> = match args.suite {
        Suite::Scaling => scaling::run(args, &common).map(|(r, d)| (Box::new(r) as _, d)),
        Suite::Overhead => overhead::run(args, &common).map(|(r, d)| (Box::new(r) as _, d)),
        Suite::Granularity => granularity::run(args, &common).map(|(r, d)| (Box::new(r) as _, d)),
    };
    common.progress.finish_and_clear();
    let (report, drawing) = finished?;
    report.emit(out, args.format, &meta)?;
    out.flush()?;
    if let Some(path) = &args.plot {
        report.draw(path, &meta.subtitle())?;
    }
    if let (Some(path), Some(drawing)) = (&args.timeline, &drawing) {
        drawing.draw(path)?;
    }
    Ok(())
}

/// Where and when a report was made: printed above a table, inside the JSON, under a
/// chart's title.
struct Meta {
    sys: SysInfo,
    /// UTC, RFC 3339, to the second.
    date: String,
}

impl Meta {
    /// "2026-11-26 16:20:52 UTC".
    fn readable_date(&self) -> String {
        format!("{} UTC", self.date.trim_end_matches('Z').replace('T', " "))
    }

    /// "AMD EPYC, 2 cores (2 physical), Linux 6.18.44; 2026-11-26 16:20 UTC".
    fn subtitle(&self) -> String {
        let s = &self.sys;
        let physical = s
            .physical_cores
            .map_or_else(String::new, |p| format!(" ({p} physical)"));
        let date = self.date.get(..16).unwrap_or(&self.date).replace('T', " ");
        format!(
            "{}, {} cores{physical}, {} {}; {date} UTC",
            s.processor, s.logical_cores, s.system, s.release
        )
    }
}

/// Object-safe printing of any suite's report.
trait Emit {
    fn emit(&self, out: &mut dyn Write, format: Format, meta: &Meta) -> std::io::Result<()>;
    fn draw(&self, path: &Path, subtitle: &str) -> Result<(), AppError>;
}

/// The JSON document of a suite: its schema, the machine, the date, then the report.
#[derive(Serialize)]
struct Document<'a, R> {
    schema: String,
    date: &'a str,
    sysinfo: &'a SysInfo,
    #[serde(flatten)]
    report: &'a R,
}

impl<R: SuiteReport> Emit for R {
    fn emit(&self, out: &mut dyn Write, format: Format, meta: &Meta) -> std::io::Result<()> {
        match format {
            Format::Table => {
                meta.sys.write(out, Format::Table)?;
                writeln!(out, "date            : {}", meta.readable_date())?;
                writeln!(out)?;
                self.table(out)
            }
            // Header first, so csv.DictReader and pandas.read_csv take it as it is; the
            // machine and the date are in the JSON.
            Format::Csv => self.csv(out),
            Format::Json => crate::output::write_json(
                out,
                &Document {
                    schema: crate::output::bench_schema(self.name()),
                    date: &meta.date,
                    sysinfo: &meta.sys,
                    report: self,
                },
            ),
        }
    }

    fn draw(&self, path: &Path, subtitle: &str) -> Result<(), AppError> {
        self.plot(path, subtitle)
    }
}
