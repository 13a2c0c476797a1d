//! The default mode: the Parzen-window sweep, one job per width, on the configured pool.

use crate::config::{RunConfig, Source};
use crate::error::AppError;
use crate::signals::{self, Interrupts};
use crate::tasks::{Estimate, ParzenJob, SweepContext};
use crate::timeline::Drawing;
use procpool::{Error, JobError, Pool};
use serde::Serialize;
use std::time::Instant;
use tracing::info;

/// What a row says when a signal stopped the run before its job finished.
const NOT_FINISHED: &str = "not finished: the run was interrupted";

/// One width's line of the report.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Row {
    /// Position of the width in the list.
    pub pos: u64,
    /// The width.
    pub h: f64,
    /// Samples inside the window (null if the job failed).
    pub count: Option<u64>,
    /// The estimate (null if the job failed).
    pub density: Option<f64>,
    /// Why the job failed, if it did.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// The width whose estimate comes closest to the true density.
#[derive(Debug, Clone, Copy, Serialize, PartialEq)]
pub struct Best {
    /// Its position.
    pub pos: u64,
    /// The width.
    pub h: f64,
    /// Its estimate.
    pub density: f64,
}

/// Where the samples came from, for the report.
#[derive(Debug, Clone, Serialize)]
#[serde(tag = "kind", rename_all = "lowercase")]
pub enum SourceReport {
    /// N(mean, cov), seeded.
    Gaussian {
        /// Mean vector.
        mean: Vec<f64>,
        /// Covariance, row-major.
        cov: Vec<f64>,
        /// Seed.
        seed: u64,
    },
    /// A data file.
    File {
        /// Its path as given.
        path: String,
    },
}

/// Everything a sweep produced, in the shape `--format json` prints. New fields go at the
/// end; a change to an existing field's meaning bumps [`crate::output::SWEEP_SCHEMA`].
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    /// "coordinator.sweep/1".
    pub schema: &'static str,
    /// Backend name.
    pub backend: String,
    /// Number of workers.
    pub workers: usize,
    /// Worker pids (the coordinator's own pid for thread and serial).
    pub pids: Vec<u32>,
    /// Number of samples.
    pub samples: usize,
    /// Dimensions.
    pub dims: usize,
    /// Where the samples came from.
    pub source: SourceReport,
    /// The point.
    pub point: Vec<f64>,
    /// The true density at the point (null for a data file).
    pub true_density: Option<f64>,
    /// Chunk size setting ("auto" or a number).
    pub chunksize: String,
    /// What auto chunking chose, if it did.
    pub chunksize_chosen: Option<usize>,
    /// One row per width, in width order.
    pub results: Vec<Row>,
    /// The closest estimate (null when the true density is unknown).
    pub best: Option<Best>,
    /// Jobs that failed.
    pub failed: usize,
    /// Seconds from starting the pool to the last result.
    pub elapsed_s: f64,
    /// Seconds until every worker was ready.
    pub ready_s: f64,
    /// The signal that stopped the run, if one did.
    pub interrupted: Option<String>,
}

/// Runs the sweep described by `cfg`: the report, and the run's timeline when
/// `cfg.timeline` asks for one (drawn by the caller, after the report is out).
pub fn run(
    cfg: &RunConfig,
    interrupts: &Interrupts,
) -> Result<(Report, Option<Drawing>), AppError> {
    let started = Instant::now();
    let prepared = SweepContext::new(&cfg.samples, &cfg.point)?;
    let mut builder = Pool::<ParzenJob>::builder()
        .backend(cfg.backend)
        .chunksize(cfg.chunk)
        .retries(cfg.retries)
        .record_timeline(cfg.timeline.is_some())
        .context(prepared);
    if let Some(t) = cfg.job_timeout {
        builder = builder.job_timeout(t);
    }
    // Every backend takes --workers; MPI, unless told, has one worker per rank after 0.
    if cfg.workers_given || !crate::mpi_backend(cfg.backend) {
        builder = builder.workers(cfg.workers);
    }
    interrupts.building();
    let pool = match builder.terminator(interrupts.terminator()).build() {
        Ok(pool) => pool,
        Err(e) => {
            return Err(match interrupts.caught() {
                Some(signal) => AppError::Interrupted {
                    signal,
                    message: format!(
                        "interrupted by {} while the workers were starting: every worker \
                         stopped and reaped, nothing computed",
                        signals::name(signal)
                    ),
                },
                None => e.into(),
            });
        }
    };
    interrupts.arm(pool.terminator());
    let ready_s = started.elapsed().as_secs_f64();
    let pids = pool.pids();
    info!(
        backend = %cfg.backend,
        pids = ?pids,
        "context sent: {} sample distances ({} bytes) once to each of {} workers",
        cfg.samples.len(),
        cfg.samples.len() * 8,
        pool.workers()
    );
    let jobs = cfg.widths.iter().map(|&h| ParzenJob { h });
    let mut results: Vec<Row> = Vec::with_capacity(cfg.widths.len());
    let mut stopped = None;
    for (r, &h) in pool.imap(jobs).zip(&cfg.widths) {
        let pos = results.len() as u64;
        let (count, density, error) = match r {
            Ok(Estimate { count, density }) => (Some(count), Some(density), None),
            Err(Error::Job {
                error: JobError::Terminated,
                ..
            }) if interrupts.caught().is_some() => (None, None, Some(NOT_FINISHED.to_owned())),
            Err(Error::Job { error, .. }) => (None, None, Some(error.to_string())),
            Err(other) => {
                stopped = Some(other.to_string());
                break;
            }
        };
        results.push(Row {
            pos,
            h,
            count,
            density,
            error,
        });
    }
    // Widths never reached (the pool stopped taking work): say so, one row each.
    for (pos, &h) in cfg.widths.iter().enumerate().skip(results.len()) {
        let why = match (&stopped, interrupts.caught()) {
            (_, Some(_)) => NOT_FINISHED.to_owned(),
            (Some(e), None) => e.clone(),
            (None, None) => "no result".to_owned(),
        };
        results.push(Row {
            pos: pos as u64,
            h,
            count: None,
            density: None,
            error: Some(why),
        });
    }
    let elapsed_s = started.elapsed().as_secs_f64();
    let chunksize_chosen = pool.chunk_choice().map(|c| c.chunksize);
    let workers = pool.workers();
    let timeline = cfg.timeline.as_ref().map(|_| {
        // Reap first, so the timeline shows the workers' exits too.
        pool.join();
        pool.timeline()
    });
    interrupts.disarm();
    drop(pool);
    let drawing = timeline.map(|timeline| Drawing {
        timeline,
        title: format!(
            "Parzen sweep: {} widths, n = {}, {} backend, {} workers",
            cfg.widths.len(),
            cfg.samples.len(),
            cfg.backend,
            workers
        ),
    });
    let interrupted = interrupts.caught().map(|s| signals::name(s).to_owned());
    let best = cfg.true_density.and_then(|truth| closest(&results, truth));
    let failed = results.iter().filter(|r| r.error.is_some()).count();
    let report = Report {
        schema: crate::output::SWEEP_SCHEMA,
        backend: cfg.backend.to_string(),
        workers,
        pids,
        samples: cfg.samples.len(),
        dims: cfg.samples.dims(),
        source: match &cfg.source {
            Source::Gaussian { gaussian, seed } => SourceReport::Gaussian {
                mean: gaussian.mean().to_vec(),
                cov: gaussian.cov().to_vec(),
                seed: *seed,
            },
            Source::File(path) => SourceReport::File {
                path: path.display().to_string(),
            },
        },
        point: cfg.point.clone(),
        true_density: cfg.true_density,
        chunksize: cfg.chunk.to_string(),
        chunksize_chosen,
        results,
        best,
        failed,
        elapsed_s,
        ready_s,
        interrupted,
    };
    Ok((report, drawing))
}

/// The first row whose estimate is closest to `truth`.
pub fn closest(rows: &[Row], truth: f64) -> Option<Best> {
    let mut best: Option<(f64, Best)> = None;
    for r in rows {
        let Some(density) = r.density else { continue };
        let err = (density - truth).abs();
        if best.is_none_or(|(e, _)| err < e) {
            best = Some((
                err,
                Best {
                    pos: r.pos,
                    h: r.h,
                    density,
                },
            ));
        }
    }
    best.map(|(_, b)| b)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(pos: u64, density: Option<f64>) -> Row {
        Row {
            pos,
            h: pos as f64,
            count: None,
            density,
            error: None,
        }
    }

    #[test]
    fn closest_takes_the_first_of_ties_and_skips_failures() {
        let rows = [
            row(0, Some(0.25)),
            row(1, None),
            row(2, Some(0.75)),
            row(3, Some(0.25)),
        ];
        assert_eq!(closest(&rows, 0.5).map(|b| b.pos), Some(0));
        assert_eq!(closest(&rows, 0.7).map(|b| b.pos), Some(2));
        assert_eq!(closest(&[row(0, None)], 1.0), None);
    }
}
