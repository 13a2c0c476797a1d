//! Parse, then validate, then act: turns the raw command line into a checked
//! [`RunConfig`] — data loaded, Gaussian factored, point and widths checked — before any
//! process starts. Every error names the flag and the offending value.

use crate::cli::{BackendArg, Format, RunArgs};
use crate::error::AppError;
use parzen::{Gaussian, Samples};
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
                    "{flag}: value {} of {s:?} is empty",
                    i + 1
                ))),
                Err(_) => Err(AppError::usage(format!("{flag}: {item:?} is not a number"))),
            }
        })
        .collect()
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
        if let Some(path) = &args.timeline {
            crate::output::check_output_path("--timeline", path, "svg")?;
        }
        let workers = check_workers(args.workers.unwrap_or_else(default_workers))?;
        let backend = Backend::from(args.backend);
        let chunk: Chunk = args.chunksize.parse().map_err(|_| {
            AppError::usage(format!(
                "--chunksize must be a whole number >= 1 or \"auto\", got {:?}",
                args.chunksize
            ))
        })?;
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
                let samples =
                    parzen::load(path).map_err(|e| AppError::usage(format!("--data: {e}")))?;
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
                args.point.as_deref().unwrap_or("")
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
        })
    }
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
