//! The command line, as clap parses it: raw values only. [`crate::config`] turns them into
//! a checked configuration before any process starts.
//!
//! Worker mode is not a clap subcommand: a worker is this binary re-executed as
//! `coordinator __worker` with a marker in its environment, and `main` hands it to
//! `procpool::serve_if_worker` before clap ever runs.

use clap::{Args, Parser, Subcommand, ValueEnum};
use std::path::PathBuf;

/// Parzen-window density sweep on a pool of worker processes, threads, or inline.
#[derive(Debug, Parser)]
#[command(
    name = "coordinator",
    version,
    about = "Parzen-window density sweep on a pool of worker processes (or threads, or inline)",
    long_about = "Estimates the density of a sample at a point with the hypercube Parzen window, \
                  one job per window width, on N worker processes; prints the estimates in width \
                  order and the width it chooses: the one closest to the true density when that \
                  is known, or, for your own data, the one least-squares cross-validation \
                  chooses (an O(n^2) job per width).",
    args_conflicts_with_subcommands = true,
    disable_help_subcommand = true
)]
pub struct Cli {
    /// What to do (default: the density sweep).
    #[command(subcommand)]
    pub command: Option<Command>,
    /// The sweep's settings.
    #[command(flatten)]
    pub run: RunArgs,
    /// Logging.
    #[command(flatten)]
    pub log: LogArgs,
}

impl Cli {
    /// Whether this command line asked for JSON on stdout.
    pub fn prints_json(&self) -> bool {
        match &self.command {
            None => self.run.format == Format::Json,
            Some(Command::Sysinfo(a)) => a.format == Format::Json,
            Some(Command::Bench(a)) => a.format == Format::Json,
            Some(Command::Demo(a)) => a.format == crate::demo::DemoFormat::Json,
        }
    }
}

/// Subcommands besides the default sweep.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Print what machine and build this is (the seed's print_sysinfo, for Rust).
    Sysinfo(SysinfoArgs),
    /// Measure processes against threads against serial: scaling, overhead, granularity.
    Bench(BenchArgs),
    /// Teaching demos of process isolation (queue, pool, isolation, crash, generators,
    /// cost, parzen).
    Demo(crate::demo::DemoArgs),
}

/// A benchmark suite.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Suite {
    /// The seed's benchmark: the Parzen sweep on serial, threads and processes at each
    /// worker count, with speedup and efficiency.
    Scaling,
    /// What orchestration costs without work: spawn-to-ready, one apply round trip,
    /// empty-job throughput, bytes on the wire per job.
    Overhead,
    /// Busy-spin jobs from 1 µs to 10 ms: where a process pool starts to pay off.
    Granularity,
}

/// `coordinator bench` options.
#[derive(Debug, Args, Clone)]
pub struct BenchArgs {
    /// Which suite to run.
    #[arg(value_enum)]
    pub suite: Suite,
    /// Worker counts, comma-separated [default: 1..=cores and 1.5 x cores for scaling;
    /// cores for granularity; 2 and 4 for overhead].
    #[arg(allow_negative_numbers = true, short, long, value_name = "LIST")]
    pub workers: Option<String>,
    /// Backends to measure, comma-separated [default: process,thread,serial].
    #[arg(short, long, value_name = "LIST")]
    pub backends: Option<String>,
    /// Timed runs per configuration, after one warm-up run; the median is reported.
    #[arg(allow_negative_numbers = true, short, long, default_value = "3")]
    pub repeat: usize,
    /// scaling: samples to draw (accepts 1e6) [default: 10000].
    #[arg(allow_negative_numbers = true, short = 'n', long, value_name = "N", value_parser = parse_count)]
    pub samples: Option<u64>,
    /// scaling: use these samples instead (CSV or .npy), e.g. the file a Python run used.
    #[arg(long, value_name = "FILE", conflicts_with = "samples")]
    pub data: Option<PathBuf>,
    /// scaling: window widths [default: 1.0:1.2:100, the seed's benchmark].
    #[arg(allow_hyphen_values = true, long, value_name = "SPEC")]
    pub widths: Option<String>,
    /// overhead: empty jobs per throughput run [default: 100000].
    #[arg(allow_negative_numbers = true, long, value_name = "N", value_parser = parse_count)]
    pub jobs: Option<u64>,
    /// granularity: job sizes in microseconds, comma-separated [default: 1,10,100,1000,10000].
    #[arg(allow_hyphen_values = true, long, value_name = "LIST")]
    pub sizes: Option<String>,
    /// Jobs per message: a number, or auto.
    #[arg(
        allow_negative_numbers = true,
        short,
        long,
        value_name = "N|auto",
        default_value = "auto"
    )]
    pub chunksize: String,
    /// Output format. The table rounds times for reading; json (with the machine and the
    /// date) and csv (a header, then one row per configuration) print every number in full.
    #[arg(short, long, value_enum, default_value = "table")]
    pub format: Format,
    /// Also draw the results as an SVG chart (scaling: bars per configuration;
    /// granularity: speedup against job size; overhead: throughput per backend).
    #[arg(long, value_name = "FILE.svg")]
    pub plot: Option<PathBuf>,
    /// Also draw the last process-backend run as an SVG timeline: one lane per worker,
    /// each job a bar from dispatch to result, spawn and handshake marked (scaling and
    /// overhead; needs process among --backends).
    #[arg(long, value_name = "FILE.svg")]
    pub timeline: Option<PathBuf>,
    /// scaling: what each job computes: parzen (the article's density count, now about a
    /// microsecond a width) or lscv (the width's least-squares cross-validation score,
    /// O(n^2) pairs: the CPU-bound sweep) [default: parzen].
    #[arg(long, value_enum)]
    pub workload: Option<Workload>,
    /// scaling: memory the samples and the shared context may take (8G, 512M, 1e9)
    /// [default: half the physical memory].
    #[arg(allow_hyphen_values = true, long, value_name = "SIZE")]
    pub max_memory: Option<String>,
}

/// What the scaling suite's jobs compute.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, Default)]
pub enum Workload {
    /// The article's density estimate at the point, one width per job.
    #[default]
    Parzen,
    /// One width's least-squares cross-validation score per job.
    Lscv,
}

/// `-v` / `-q`.
#[derive(Debug, Args, Clone, Copy)]
pub struct LogArgs {
    /// Show what happens: workers spawned (pids), context sent, jobs dispatched, results
    /// received, worker exits (-vv for more). RUST_LOG overrides.
    #[arg(short, long, action = clap::ArgAction::Count, global = true)]
    pub verbose: u8,
    /// Only errors on stderr: no warnings, no progress bar.
    #[arg(short, long, global = true, conflicts_with = "verbose")]
    pub quiet: bool,
}

/// Where jobs run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum BackendArg {
    /// Worker processes (isolated; bincode over pipes).
    Process,
    /// OS threads sharing memory (no serialization).
    Thread,
    /// Inline, one job after another.
    Serial,
    /// MPI ranks 1..N as workers (run under mpirun; this build has the `mpi` feature).
    #[cfg(feature = "mpi")]
    Mpi,
}

/// How results are printed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, Default)]
pub enum Format {
    /// Aligned columns for people, numbers rounded for reading.
    #[default]
    Table,
    /// One JSON document with a "schema" field; every number in full (round-trips).
    Json,
    /// A header line, then one row per result (RFC 4180); every number in full.
    Csv,
}

/// The density sweep's options.
#[derive(Debug, Args, Clone)]
pub struct RunArgs {
    /// Number of workers [default: the number of CPUs].
    #[arg(allow_negative_numbers = true, short, long, value_name = "N")]
    pub workers: Option<usize>,
    /// Where jobs run.
    #[arg(short, long, value_enum, default_value = "process")]
    pub backend: BackendArg,
    /// Samples to draw from N(mean, cov) (accepts 1e6) [default: 10000].
    #[arg(allow_negative_numbers = true, short = 'n', long, value_name = "N", value_parser = parse_count, conflicts_with = "data")]
    pub samples: Option<u64>,
    /// Random seed for the samples [default: 123].
    #[arg(
        allow_negative_numbers = true,
        long,
        value_name = "S",
        conflicts_with = "data"
    )]
    pub seed: Option<u64>,
    /// Dimensions of the Gaussian [default: 2, or as --mean/--cov imply].
    #[arg(
        allow_negative_numbers = true,
        short,
        long,
        value_name = "D",
        conflicts_with = "data"
    )]
    pub dims: Option<usize>,
    /// Mean of the Gaussian, comma-separated [default: all zeros].
    #[arg(
        long,
        value_name = "X,Y,..",
        allow_hyphen_values = true,
        conflicts_with = "data"
    )]
    pub mean: Option<String>,
    /// Covariance of the Gaussian, d*d values row by row, comma-separated [default: identity].
    #[arg(
        long,
        value_name = "C11,C12,..",
        allow_hyphen_values = true,
        conflicts_with = "data"
    )]
    pub cov: Option<String>,
    /// Your own samples instead of a Gaussian: CSV (one sample per row, optional header)
    /// or numpy .npy (2-D float64). The true density is then unknown.
    #[arg(long, value_name = "FILE")]
    pub data: Option<PathBuf>,
    /// Where to estimate the density, comma-separated [default: the origin].
    #[arg(short, long, value_name = "X,Y,..", allow_hyphen_values = true)]
    pub point: Option<String>,
    /// Window widths: a list (0.5,1,1.5) or START:STOP:COUNT, inclusive like numpy.linspace
    /// [default: 0.1,0.2,..,1.2, the seed's table].
    #[arg(allow_hyphen_values = true, long, value_name = "SPEC")]
    pub widths: Option<String>,
    /// Jobs per message to a worker: a number (at most 16777216), or auto (measure, then
    /// choose).
    #[arg(
        allow_negative_numbers = true,
        short,
        long,
        value_name = "N|auto",
        default_value = "auto"
    )]
    pub chunksize: String,
    /// Output format. The table rounds densities and errors to 6 significant digits for
    /// reading; json and csv print every number in full, so it reads back bit for bit.
    #[arg(short, long, value_enum, default_value = "table")]
    pub format: Format,
    /// Longest a job may run, in seconds; its worker is then killed and replaced.
    #[arg(allow_negative_numbers = true, long, value_name = "SECS")]
    pub job_timeout: Option<f64>,
    /// Times a job that kills its worker is started again before it counts as failed.
    #[arg(
        allow_negative_numbers = true,
        long,
        value_name = "N",
        default_value = "2"
    )]
    pub retries: u32,
    /// Also draw this run as an SVG timeline: one lane per worker, each job a bar from
    /// dispatch to result, spawn and handshake marked.
    #[arg(long, value_name = "FILE.svg")]
    pub timeline: Option<PathBuf>,
    /// How to choose the width [default: true when the true density is known (Gaussian
    /// samples), lscv with --data].
    #[arg(long, value_enum)]
    pub select: Option<SelectArg>,
    /// Run a cross-validation sweep even when its estimated cost is over the budget (60 s
    /// of one core; see the README), and let --journal replace an existing file.
    #[arg(long)]
    pub force: bool,
    /// Record each finished width in FILE as it arrives (an append-only, checksummed
    /// journal, synced to disk at least once a second and at the end: a killed coordinator
    /// loses nothing recorded, a machine crash at most the last second), so that a run that
    /// dies can be continued with --resume FILE. An existing FILE is refused unless --force;
    /// a FILE another run still has open is always refused.
    #[arg(long, value_name = "FILE", conflicts_with = "resume")]
    pub journal: Option<PathBuf>,
    /// Continue the run recorded in the journal FILE: check that it is the same run (exit
    /// 2 naming the first setting that differs), drop a record cut short by a crash, run
    /// only the widths it lacks (appending them to FILE), and print the report an
    /// uninterrupted run prints. With every width recorded, no worker is started.
    #[arg(long, value_name = "FILE")]
    pub resume: Option<PathBuf>,
    /// Memory the samples and the workers' shared context may take, e.g. 8G, 512M or 1e9
    /// bytes [default: half the physical memory].
    #[arg(allow_hyphen_values = true, long, value_name = "SIZE")]
    pub max_memory: Option<String>,
    /// Also draw p(x; h) against h (and LSCV(h) when computed) as an SVG, marking the
    /// widths each rule chooses.
    #[arg(long, value_name = "FILE.svg")]
    pub plot: Option<PathBuf>,
}

/// How the sweep chooses a width.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum SelectArg {
    /// The estimate closest to the true density (needs a known density: Gaussian samples).
    True,
    /// Least-squares cross-validation: the smallest LSCV(h), from the data alone.
    Lscv,
    /// No choice: the densities only.
    None,
}

/// `coordinator sysinfo` options.
#[derive(Debug, Args, Clone, Copy)]
pub struct SysinfoArgs {
    /// Output format: table, json, or csv (a header and one row).
    #[arg(short, long, value_enum, default_value = "table")]
    pub format: Format,
}

/// A count that may be written like `10000`, `1e6` or `1_000_000`.
pub fn parse_count(s: &str) -> Result<u64, String> {
    let t = s.trim().replace('_', "");
    if let Ok(n) = t.parse::<u64>() {
        return Ok(n);
    }
    match t.parse::<f64>() {
        Ok(x) if x.is_finite() && x >= 0.0 && x.fract() == 0.0 && x <= 9.0e15 => Ok(x as u64),
        _ => Err(format!(
            "expected a whole number such as 10000 or 1e6, got {}",
            crate::error::quote(s)
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn cli_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn counts_accept_scientific_notation() {
        assert_eq!(parse_count("1e6"), Ok(1_000_000));
        assert_eq!(parse_count("10_000"), Ok(10_000));
        assert!(parse_count("1.5").is_err());
        assert!(parse_count("-3").is_err());
        assert!(parse_count("1e400").is_err());
    }
}
