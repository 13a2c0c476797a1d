//! Parse, then validate, then act: turns the raw command line into a checked
//! [`RunConfig`] — data loaded, Gaussian factored, point and widths checked — before any
//! process starts. Every error names the flag and the offending value.

use crate::cli::{BackendArg, Format, RunArgs, SelectArg};
use crate::error::{AppError, quote};
use crate::memory::Budget;
use parzen::{Gaussian, LoadLimits, Samples};
use procpool::{Backend, Chunk, MAX_WORKERS};
use std::path::PathBuf;
use std::time::Duration;

/// Most samples the sweep accepts (8 bytes each per dimension, in memory).
pub const MAX_SAMPLES: u64 = 100_000_000;
/// Most dimensions.
pub const MAX_DIMS: usize = 1000;
/// Default number of samples (the seed's n).
pub const DEFAULT_SAMPLES: u64 = 10_000;
/// Default seed.
pub const DEFAULT_SEED: u64 = 123;

/// Where the samples came from.
#[derive(Debug, Clone)]
pub enum Source {
    /// Drawn from N(mean, cov) with a seed.
    Gaussian {
        /// The distribution.
        gaussian: Gaussian,
        /// The seed.
        seed: u64,
    },
    /// Read from the user's file.
    File(PathBuf),
}

/// A checked sweep: everything needed to run, nothing left to fail on user input.
#[derive(Debug, Clone)]
pub struct RunConfig {
    /// Where jobs run.
    pub backend: Backend,
    /// Number of workers.
    pub workers: usize,
    /// Whether the user chose it (the MPI backend otherwise takes one per rank).
    pub workers_given: bool,
    /// Jobs per message.
    pub chunk: Chunk,
    /// Output format.
    pub format: Format,
    /// Restarts of a job that kills its worker.
    pub retries: u32,
    /// Longest a job may run.
    pub job_timeout: Option<Duration>,
    /// Where the samples came from.
    pub source: Source,
    /// The samples.
    pub samples: Samples,
    /// Where the density is estimated.
    pub point: Vec<f64>,
    /// Window widths, one job each.
    pub widths: Vec<f64>,
    /// The true density at the point, when the samples came from a known Gaussian.
    pub true_density: Option<f64>,
    /// Where to draw the run's timeline, if anywhere.
    pub timeline: Option<PathBuf>,
    /// Where to draw p(x; h) and LSCV(h) against h, if anywhere.
    pub plot: Option<PathBuf>,
    /// How the width is chosen.
    pub select: SelectArg,
    /// Run a cross-validation sweep over its cost budget.
    pub force: bool,
    /// The results journal to write or resume, if any.
    pub journal: Option<crate::journal::Plan>,
}

/// Parses a comma-separated list of finite numbers given to `flag`.
pub fn parse_floats(flag: &str, s: &str) -> Result<Vec<f64>, AppError> {
    if s.trim().is_empty() {
        return Err(AppError::usage(format!(
            "{flag} is empty; expected comma-separated numbers"
        )));
    }
    s.split(',')
        .enumerate()
        .map(|(i, item)| {
            let item = item.trim();
            match item.parse::<f64>() {
                Ok(x) if x.is_finite() => Ok(x),
                Ok(x) => Err(AppError::usage(format!(
                    "{flag}: value {} is {x}; values must be finite",
                    i + 1
                ))),
                Err(_) if item.is_empty() => Err(AppError::usage(format!(
                    "{flag}: value {} of {} is empty",
                    i + 1,
                    quote(s)
                ))),
                Err(_) => Err(AppError::usage(format!(
                    "{flag}: {} is not a number",
                    quote(item)
                ))),
            }
        })
        .collect()
}

/// Most jobs per message `--chunksize` takes: more than any sweep has widths, and far
/// from where the pool's arithmetic on it could overflow.
pub const MAX_CHUNKSIZE: usize = 1 << 24;

/// Parses `--chunksize`: `auto`, or a whole number from 1 to [`MAX_CHUNKSIZE`].
pub fn parse_chunk(s: &str) -> Result<Chunk, AppError> {
    match s.parse::<Chunk>() {
        Ok(Chunk::Fixed(n)) if n > MAX_CHUNKSIZE => Err(AppError::usage(format!(
            "--chunksize must be a whole number from 1 to {MAX_CHUNKSIZE} or \"auto\", got {n}"
        ))),
        Ok(chunk) => Ok(chunk),
        Err(_) => Err(AppError::usage(format!(
            "--chunksize must be a whole number from 1 to {MAX_CHUNKSIZE} or \"auto\", got {}",
            quote(s)
        ))),
    }
}

/// The number of workers to use by default: the CPUs this process may run on.
pub fn default_workers() -> usize {
    std::thread::available_parallelism().map_or(1, usize::from)
}

/// Checks a worker count given on the command line.
pub fn check_workers(n: usize) -> Result<usize, AppError> {
    if n == 0 || n > MAX_WORKERS {
        return Err(AppError::usage(format!(
            "--workers must be between 1 and {MAX_WORKERS}, got {n}"
        )));
    }
    Ok(n)
}

impl From<BackendArg> for Backend {
    fn from(b: BackendArg) -> Backend {
        match b {
            BackendArg::Process => Backend::Process,
            BackendArg::Thread => Backend::Thread,
            BackendArg::Serial => Backend::Serial,
            #[cfg(feature = "mpi")]
            BackendArg::Mpi => Backend::Mpi,
        }
    }
}

impl RunConfig {
    /// Validates `args`, loading or drawing the samples.
    pub fn from_args(args: &RunArgs) -> Result<RunConfig, AppError> {
        // Output files first: no samples drawn, no worker started, for a path we cannot use.
        for (flag, path) in [("--timeline", &args.timeline), ("--plot", &args.plot)] {
            if let Some(path) = path {
                crate::output::check_output_path(flag, path, "svg")?;
            }
        }
        let journal = match (&args.journal, &args.resume) {
            (Some(path), _) => Some(crate::journal::Plan {
                path: path.clone(),
                mode: crate::journal::Mode::Create {
                    overwrite: args.force,
                },
            }),
            (None, Some(path)) => Some(crate::journal::Plan {
                path: path.clone(),
                mode: crate::journal::Mode::Resume,
            }),
            (None, None) => None,
        };
        if let Some(plan) = &journal {
            crate::journal::check_path(plan)?;
        }
        let workers = check_workers(args.workers.unwrap_or_else(default_workers))?;
        let backend = Backend::from(args.backend);
        let budget = Budget::from_arg(args.max_memory.as_deref())?;
        let select = match (args.select, &args.data) {
            (Some(SelectArg::True), Some(path)) => {
                return Err(AppError::usage(format!(
                    "--select true needs the true density, which samples from a file ({}) do \
                     not have; use --select lscv (cross-validation, from the data alone) or \
                     --select none",
                    path.display()
                )));
            }
            (Some(s), _) => s,
            (None, Some(_)) => SelectArg::Lscv,
            (None, None) => SelectArg::True,
        };
        let lscv = select == SelectArg::Lscv;
        // The shared context is one copy for every local backend; MPI ranks get one each.
        let copies = if crate::mpi_backend(backend) {
            if args.workers.is_some() {
                workers
            } else {
                crate::mpi_workers().unwrap_or(workers)
            }
        } else {
            1
        };
        let chunk = parse_chunk(&args.chunksize)?;
        let job_timeout = match args.job_timeout {
            None => None,
            Some(s) if s.is_finite() && s > 0.0 && s < 1e9 => Some(Duration::from_secs_f64(s)),
            Some(s) => {
                return Err(AppError::usage(format!(
                    "--job-timeout must be a number of seconds > 0, got {s}"
                )));
            }
        };
        let (source, samples) = match &args.data {
            Some(path) => {
                // A file as large as the budget is refused before it is read or mapped;
                // what loading allocates is bounded by the budget too.
                let limits = LoadLimits {
                    max_file_bytes: budget.bytes,
                    max_alloc_bytes: budget.bytes,
                };
                let samples = parzen::load_with(path, &limits).map_err(|e| {
                    let hint = match e {
                        parzen::Error::Limit { .. } => format!(
                            " (the limit is the memory budget: {}, {})",
                            crate::memory::readable(u128::from(budget.bytes)),
                            budget.origin
                        ),
                        _ => String::new(),
                    };
                    AppError::usage(format!("--data: {e}{hint}"))
                })?;
                check_memory(
                    &budget,
                    samples.len() as u64,
                    samples.dims() as u64,
                    lscv,
                    copies,
                )?;
                (Source::File(path.clone()), samples)
            }
            None => {
                let gaussian = gaussian_from_args(args)?;
                let n = args.samples.unwrap_or(DEFAULT_SAMPLES);
                if n == 0 || n > MAX_SAMPLES {
                    return Err(AppError::usage(format!(
                        "--samples must be between 1 and {MAX_SAMPLES}, got {n}"
                    )));
                }
                let seed = args.seed.unwrap_or(DEFAULT_SEED);
                // Before a single sample is drawn.
                check_memory(&budget, n, gaussian.dims() as u64, lscv, copies)?;
                let samples = gaussian
                    .sample(n as usize, seed)
                    .map_err(|e| AppError::usage(format!("--samples: {e}")))?;
                (Source::Gaussian { gaussian, seed }, samples)
            }
        };
        let dims = samples.dims();
        let point = match &args.point {
            Some(p) => parse_floats("--point", p)?,
            None => vec![0.0; dims],
        };
        if point.len() != dims {
            return Err(AppError::usage(format!(
                "--point has {} coordinates ({}) but the samples have {dims} dimensions",
                point.len(),
                quote(args.point.as_deref().unwrap_or(""))
            )));
        }
        let widths = match &args.widths {
            Some(spec) => {
                parzen::parse_widths(spec).map_err(|e| AppError::usage(format!("--widths: {e}")))?
            }
            None => parzen::default_widths(),
        };
        let true_density = match &source {
            Source::Gaussian { gaussian, .. } => Some(
                gaussian
                    .pdf(&point)
                    .map_err(|e| AppError::usage(format!("--point: {e}")))?,
            ),
            Source::File(_) => None,
        };
        Ok(RunConfig {
            backend,
            workers,
            workers_given: args.workers.is_some(),
            chunk,
            format: args.format,
            retries: args.retries,
            job_timeout,
            source,
            samples,
            point,
            widths,
            true_density,
            timeline: args.timeline.clone(),
            plot: args.plot.clone(),
            select,
            force: args.force,
            journal,
        })
    }
}

/// Checks what a sweep of `n` samples of `d` dimensions will hold against the budget:
/// the samples (`n × d × 8` bytes), the index (at most `n × 8` and its offsets) and, for
/// cross-validation, the sorted copy (`n × d × 8`), the context once per `copies`.
pub fn check_memory(
    budget: &Budget,
    n: u64,
    d: u64,
    lscv: bool,
    copies: usize,
) -> Result<(), AppError> {
    // u128 and saturating: no count a file or a flag can give overflows the sum.
    let samples = (u128::from(n) * u128::from(d)).saturating_mul(8);
    let index = crate::tasks::context_bytes(n, d, false).saturating_mul(copies as u128);
    let sorted = (crate::tasks::context_bytes(n, d, lscv)
        - crate::tasks::context_bytes(n, d, false))
    .saturating_mul(copies as u128);
    // At most: the index keeps only the buckets the widths read, all n distances when
    // they read every bucket that holds any.
    let index_name = if copies > 1 {
        format!("index at most, x {copies} ranks,")
    } else {
        "index at most".to_owned()
    };
    budget.check(
        &format!("a sweep of {n} samples of {d} dimensions"),
        &[
            ("samples", samples),
            (&index_name, index),
            ("lscv sorted copy", sorted),
        ],
    )
}

/// The Gaussian the flags describe: --dims, --mean and --cov must agree.
fn gaussian_from_args(args: &RunArgs) -> Result<Gaussian, AppError> {
    let mean = args
        .mean
        .as_deref()
        .map(|m| parse_floats("--mean", m))
        .transpose()?;
    let cov = args
        .cov
        .as_deref()
        .map(|c| parse_floats("--cov", c))
        .transpose()?;
    let from_cov = match &cov {
        Some(c) => {
            let d = (c.len() as f64).sqrt().round() as usize;
            if d * d != c.len() {
                return Err(AppError::usage(format!(
                    "--cov has {} values, which is not d*d for any d",
                    c.len()
                )));
            }
            Some(d)
        }
        None => None,
    };
    let implied = [
        ("--dims", args.dims),
        ("--mean", mean.as_ref().map(Vec::len)),
        ("--cov", from_cov),
    ];
    let mut dims: Option<(&str, usize)> = None;
    for (flag, d) in implied {
        let Some(d) = d else { continue };
        match dims {
            Some((other, e)) if e != d => {
                return Err(AppError::usage(format!(
                    "{other} gives {e} dimensions but {flag} gives {d}"
                )));
            }
            _ => dims = Some((flag, d)),
        }
    }
    let d = dims.map_or(2, |(_, d)| d);
    if d == 0 || d > MAX_DIMS {
        return Err(AppError::usage(format!(
            "--dims must be between 1 and {MAX_DIMS}, got {d}"
        )));
    }
    let mean = mean.unwrap_or_else(|| vec![0.0; d]);
    let cov = cov.unwrap_or_else(|| {
        (0..d * d)
            .map(|i| if i % (d + 1) == 0 { 1.0 } else { 0.0 })
            .collect()
    });
    Gaussian::new(mean, cov).map_err(|e| AppError::usage(format!("--mean/--cov: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_memory_check_cannot_overflow() {
        let budget = Budget {
            bytes: u64::MAX,
            origin: "test".into(),
        };
        let e = check_memory(&budget, u64::MAX, u64::MAX, true, 1024).unwrap_err();
        assert_eq!(e.exit_code(), 2);
        assert!(check_memory(&budget, 1000, 1000, true, 4).is_ok());
    }

    #[test]
    fn float_lists_name_the_bad_item() {
        assert_eq!(
            parse_floats("--point", "1, -2.5,3e2").unwrap(),
            [1.0, -2.5, 300.0]
        );
        let e = parse_floats("--point", "1,x").unwrap_err().to_string();
        assert!(e.contains("\"x\""), "{e}");
        let e = parse_floats("--mean", "1,,2").unwrap_err().to_string();
        assert!(e.contains("value 2") && e.contains("empty"), "{e}");
        let e = parse_floats("--mean", "nan").unwrap_err().to_string();
        assert!(e.contains("NaN"), "{e}");
        assert!(parse_floats("--mean", " ").is_err());
    }
}
