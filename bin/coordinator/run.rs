//! The default mode: the Parzen-window sweep, one job per width, on the configured pool:
//! each job counts the samples in the window (the bucket index in shared memory) and,
//! with `--select lscv`, scores the width by least-squares cross-validation; then the
//! width is chosen (closest to the true density, or smallest LSCV score), and every value
//! that is not finite is flagged and never chosen.

use crate::cli::SelectArg;
use crate::config::{RunConfig, Source};
use crate::error::AppError;
use crate::journal;
use crate::signals::{self, Interrupts};
use crate::tasks::{Estimate, ParzenJob, SweepContext};
use crate::timeline::Drawing;
use parzen::LscvView;
use procpool::{Error, JobError, Journal, Pool};
use serde::Serialize;
use std::time::Instant;
use tracing::info;

/// What a row says when a signal stopped the run before its job finished.
const NOT_FINISHED: &str = "not finished: the run was interrupted";

/// Whether a width's row holds usable numbers.
#[derive(Debug, Clone, Copy, Serialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum Status {
    /// Every number computed is finite.
    Ok,
    /// The job ran, but a value is not finite or not meaningful (the density when `h^d`
    /// under- or overflows, the LSCV score when `h^d` or `h^2d` does): flagged, never
    /// chosen, not counted as a success.
    NotFinite,
    /// The job failed (its worker died, it timed out, the run was interrupted).
    Failed,
}

/// One width's LSCV terms, for checking against a double loop.
#[derive(Debug, Clone, Copy, Serialize, PartialEq)]
pub struct LscvTerms {
    /// `S(h)`, the squared estimate's integral times `n^2 h^2d`.
    pub s: f64,
    /// `C(h)`, ordered pairs `i != j` within `h/2` in every coordinate (exact).
    pub c: u64,
}

/// One width's line of the report.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Row {
    /// Position of the width in the list.
    pub pos: u64,
    /// The width.
    pub h: f64,
    /// ok, not_finite or failed.
    pub status: Status,
    /// Samples inside the window (null if the job failed).
    pub count: Option<u64>,
    /// The estimate (null if the job failed or the value is not finite).
    pub density: Option<f64>,
    /// The LSCV score, when cross-validation ran (null if failed or degenerate).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub lscv: Option<Option<f64>>,
    /// The LSCV terms, when cross-validation ran and the job succeeded.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub lscv_terms: Option<LscvTerms>,
    /// Why the job failed, if it did.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// Which value is not finite and why, if one is.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub note: Option<String>,
}

impl Row {
    /// A row for a job that produced no result.
    fn failed(pos: u64, h: f64, lscv: bool, error: String) -> Row {
        Row {
            pos,
            h,
            status: Status::Failed,
            count: None,
            density: None,
            lscv: lscv.then_some(None),
            lscv_terms: None,
            error: Some(error),
            note: None,
        }
    }

    /// A row from a finished job: non-finite values become null and are explained.
    fn finished(pos: u64, h: f64, dims: usize, e: Estimate) -> Row {
        let mut notes = Vec::new();
        let density = if e.density.is_finite() {
            Some(e.density)
        } else {
            let hd = h.powf(dims as f64);
            notes.push(format!(
                "the density (k/n)/h^d is {}: h^d = {hd:e} at h = {} in {dims} dimensions \
                 is out of float64 range",
                e.density,
                crate::output::num(h)
            ));
            None
        };
        let (lscv, lscv_terms) = match e.lscv {
            None => (None, None),
            Some(l) => {
                let score = match l.score {
                    Ok(v) if v.is_finite() => Some(v),
                    Ok(v) => {
                        notes.push(format!("the lscv score is {v}"));
                        None
                    }
                    Err(why) => {
                        notes.push(why);
                        None
                    }
                };
                (Some(score), Some(LscvTerms { s: l.s, c: l.c }))
            }
        };
        Row {
            pos,
            h,
            status: if notes.is_empty() {
                Status::Ok
            } else {
                Status::NotFinite
            },
            count: Some(e.count),
            density,
            lscv,
            lscv_terms,
            error: None,
            note: (!notes.is_empty()).then(|| notes.join("; ")),
        }
    }
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

/// The width the sweep chose, and by which rule.
#[derive(Debug, Clone, Copy, Serialize, PartialEq)]
pub struct Selected {
    /// Its position.
    pub pos: u64,
    /// The width.
    pub h: f64,
    /// "true" (closest to the true density) or "lscv" (smallest cross-validation score).
    pub method: &'static str,
}

/// What the cross-validation sweep was estimated to cost before it ran.
#[derive(Debug, Clone, Copy, Serialize, PartialEq)]
pub struct LscvCost {
    /// Unordered pairs evaluated over all widths (an upper bound past 64 widths).
    pub pairs: u64,
    /// Estimated seconds on one core of the reference machine (parzen's cost model).
    pub seconds: f64,
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
    /// "coordinator.sweep/2".
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
    /// The selection rule: "true", "lscv" or "none".
    pub select: &'static str,
    /// The width the rule chose (null for none, or when no width qualifies).
    pub selected: Option<Selected>,
    /// Rows whose job ran but gave a value that is not finite (flagged, never chosen).
    pub not_finite: usize,
    /// The cross-validation's estimated cost, when it ran.
    pub lscv_cost: Option<LscvCost>,
    /// The signal that cut the run short (not printed: `interrupted` names it).
    #[serde(skip)]
    pub signal: Option<i32>,
    /// What the results journal did (not printed in JSON, which is the same with or
    /// without one; the table says how many widths came from it).
    #[serde(skip)]
    pub journal: journal::Outcome,
}

impl Report {
    /// Rows that are not a success: failed, or not finite.
    pub fn unsuccessful(&self) -> usize {
        self.failed + self.not_finite
    }
}

/// Seconds of one core that a cross-validation sweep may be estimated to take before it is
/// refused (exit code 2) without `--force`.
pub const LSCV_BUDGET_S: f64 = 60.0;

/// Widths whose pair counts [`lscv_cost`] computes exactly; past that, each width is
/// bounded by the next of this many evenly spaced ones.
const COST_KNOTS: usize = 64;

/// The pairs and seconds (on one core, by parzen's cost model) of scoring every width.
/// Exact up to [`COST_KNOTS`] widths; beyond, an upper bound, since the pairs a width
/// evaluates never decrease as it grows. O(n) per knot.
pub fn lscv_cost(view: &LscvView<'_>, widths: &[f64]) -> LscvCost {
    let mut sorted = widths.to_vec();
    sorted.sort_by(f64::total_cmp);
    let k = sorted.len().min(COST_KNOTS);
    let mut cost = LscvCost {
        pairs: 0,
        seconds: 0.0,
    };
    let mut first = 0;
    for j in 1..=k {
        // Widths first..=last are bounded by the last one's cost.
        let last = (j * sorted.len()).div_ceil(k) - 1;
        let h = sorted[last];
        let count = (last + 1 - first) as u64;
        cost.pairs = cost
            .pairs
            .saturating_add(view.candidate_pairs(h).saturating_mul(count));
        cost.seconds += view.estimated_seconds(h) * count as f64;
        first = last + 1;
    }
    cost
}

/// Refuses a cross-validation of `widths` widths estimated over [`LSCV_BUDGET_S`] (exit
/// code 2).
fn check_lscv_cost(cost: LscvCost, widths: usize, cfg: &RunConfig) -> Result<(), AppError> {
    if cost.seconds <= LSCV_BUDGET_S || cfg.force {
        return Ok(());
    }
    Err(AppError::usage(format!(
        "--select lscv: {} widths over {} samples of {} dimensions evaluate about {:.3e} pairs, \
         an estimated {:.0} s on one core ({} ns per pair and dimension), over the budget of \
         {LSCV_BUDGET_S} s; use fewer samples or smaller widths, --select none for the \
         densities alone, or --force to run it anyway",
        widths,
        cfg.samples.len(),
        cfg.samples.dims(),
        cost.pairs as f64,
        cost.seconds,
        if cfg.samples.dims() <= 8 {
            parzen::lscv::NS_PER_PAIR_DIM
        } else {
            parzen::lscv::NS_PER_PAIR_DIM_GENERIC
        }
    )))
}

/// The test hook `COORDINATOR_TEST_HOOK=pause-after-results`: once every result is in,
/// say so on stderr and wait (at most a minute) for a signal, so that a test can deliver
/// one at exactly that moment. Unset, it does nothing.
fn pause_after_results_if_asked(interrupts: &Interrupts) {
    if std::env::var_os("COORDINATOR_TEST_HOOK").as_deref()
        != Some(std::ffi::OsStr::new("pause-after-results"))
    {
        return;
    }
    eprintln!("coordinator: test hook: every result is in; waiting for a signal");
    let start = Instant::now();
    while interrupts.caught().is_none() && start.elapsed() < std::time::Duration::from_secs(60) {
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
}

/// What running the missing widths on a pool produced, besides their rows.
struct PoolRun {
    workers: usize,
    pids: Vec<u32>,
    ready_s: f64,
    chunksize_chosen: Option<usize>,
    drawing: Option<Drawing>,
}

/// Appends `estimate` for `pos` to the journal; a journal that fails is reported once and
/// closed, and the run goes on without it (the report must not pay for it).
fn record(journal: &mut Option<Journal>, failure: &mut Option<String>, pos: u64, e: &Estimate) {
    let Some(j) = journal.as_mut() else {
        return;
    };
    if let Err(err) = j.append(pos, e) {
        eprintln!("coordinator: {err}; the run goes on without its journal");
        *failure = Some(err.to_string());
        if let Some(j) = journal.take() {
            let _ = j.finish();
        }
    }
}

/// Runs the sweep described by `cfg`: the report, and the run's timeline when
/// `cfg.timeline` asks for one (drawn by the caller, after the report is out). With a
/// journal to resume, only the widths it lacks are run, and none at all (no worker
/// started) when it has them all.
pub fn run(
    cfg: &RunConfig,
    interrupts: &Interrupts,
) -> Result<(Report, Option<Drawing>), AppError> {
    let started = Instant::now();
    let lscv = cfg.select == SelectArg::Lscv;
    let n = cfg.widths.len() as u64;
    let context = SweepContext::new(&cfg.samples, &cfg.point, &cfg.widths, lscv)?;
    // A journal to resume first: what is left to run is what the cost check weighs.
    let mut opened = match &cfg.journal {
        Some(plan) if plan.mode == journal::Mode::Resume => {
            let opened = journal::resume(plan, cfg)?;
            if let Some(torn) = opened.torn {
                eprintln!("coordinator: {}", journal::torn_message(&plan.path, torn));
            }
            info!(
                recovered = opened.recovered.len(),
                widths = n,
                "journal {}: resuming",
                plan.path.display()
            );
            Some(opened)
        }
        _ => None,
    };
    let recovered = opened
        .as_mut()
        .map(|o| std::mem::take(&mut o.recovered))
        .unwrap_or_default();
    let todo: Vec<u64> = (0..n).filter(|p| !recovered.contains_key(p)).collect();
    let lscv_cost = match &context.lscv {
        Some(data) => {
            let view = data
                .view()
                .map_err(|e| AppError::failed(format!("lscv: {e}")))?;
            // The report states the whole sweep's cost, as an uninterrupted run does; the
            // budget weighs what this run computes.
            let cost = lscv_cost(&view, &cfg.widths);
            info!(
                pairs = cost.pairs,
                seconds = cost.seconds,
                "lscv: estimated cost on one core"
            );
            let left = if todo.len() as u64 == n {
                cost
            } else {
                let widths: Vec<f64> = todo.iter().map(|&p| cfg.widths[p as usize]).collect();
                lscv_cost(&view, &widths)
            };
            check_lscv_cost(left, todo.len(), cfg)?;
            Some(cost)
        }
        None => None,
    };
    if let Some(plan) = &cfg.journal {
        if let journal::Mode::Create { .. } = plan.mode {
            // Created only now that every check has passed: a refused run leaves no file.
            opened = Some(journal::create(plan, cfg)?);
        }
    }
    let mut journal = opened.map(|o| o.journal);
    let mut journal_failure = None;
    let dims = cfg.samples.dims();
    let mut rows: Vec<Option<Row>> = cfg
        .widths
        .iter()
        .enumerate()
        .map(|(pos, &h)| {
            let pos = pos as u64;
            recovered
                .get(&pos)
                .map(|e| Row::finished(pos, h, dims, e.clone()))
        })
        .collect();
    let from_journal = recovered.len();
    drop(recovered);
    let (pool_run, cut_short) = if todo.is_empty() {
        info!("every width is in the journal: no worker started");
        interrupts.finished();
        // The workers the run was configured for (MPI: one per rank after 0, unless told).
        let workers = if cfg.workers_given || !crate::mpi_backend(cfg.backend) {
            cfg.workers
        } else {
            crate::mpi_workers().unwrap_or(cfg.workers)
        };
        let run = PoolRun {
            workers,
            pids: Vec::new(),
            ready_s: 0.0,
            chunksize_chosen: None,
            drawing: None,
        };
        (run, false)
    } else {
        run_on_pool(
            cfg,
            context,
            &todo,
            &mut rows,
            &mut journal,
            &mut journal_failure,
            interrupts,
            started,
        )?
    };
    if let Some(j) = journal {
        if let Err(e) = j.finish() {
            eprintln!("coordinator: {e}");
            journal_failure = Some(e.to_string());
        }
    }
    if !cut_short && interrupts.caught().is_none() {
        pause_after_results_if_asked(interrupts);
    }
    let elapsed_s = started.elapsed().as_secs_f64();
    let results: Vec<Row> = rows
        .into_iter()
        .enumerate()
        .map(|(pos, row)| {
            row.unwrap_or_else(|| {
                Row::failed(pos as u64, cfg.widths[pos], lscv, "no result".to_owned())
            })
        })
        .collect();
    // A signal that came after the last result changes nothing: the run is complete.
    let signal = if cut_short { interrupts.caught() } else { None };
    let interrupted = signal.map(|s| signals::name(s).to_owned());
    let best = cfg.true_density.and_then(|truth| closest(&results, truth));
    let selected = match cfg.select {
        SelectArg::True => best.map(|b| Selected {
            pos: b.pos,
            h: b.h,
            method: "true",
        }),
        SelectArg::Lscv => smallest_lscv(&results).map(|(pos, h)| Selected {
            pos,
            h,
            method: "lscv",
        }),
        SelectArg::None => None,
    };
    let failed = results
        .iter()
        .filter(|r| r.status == Status::Failed)
        .count();
    let not_finite = results
        .iter()
        .filter(|r| r.status == Status::NotFinite)
        .count();
    let report = Report {
        schema: crate::output::SWEEP_SCHEMA,
        backend: cfg.backend.to_string(),
        workers: pool_run.workers,
        pids: pool_run.pids,
        samples: cfg.samples.len(),
        dims,
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
        chunksize_chosen: pool_run.chunksize_chosen,
        results,
        best,
        failed,
        elapsed_s,
        ready_s: pool_run.ready_s,
        interrupted,
        select: select_name(cfg.select),
        selected,
        not_finite,
        lscv_cost,
        signal,
        journal: journal::Outcome {
            path: cfg.journal.as_ref().map(|p| p.path.clone()),
            resumed: matches!(
                cfg.journal,
                Some(journal::Plan {
                    mode: journal::Mode::Resume,
                    ..
                })
            ),
            recovered: from_journal,
            error: journal_failure,
        },
    };
    Ok((report, pool_run.drawing))
}

/// Runs the widths at `todo` on a pool built for `cfg`, filling their `rows` and recording
/// each finished estimate in the journal as it arrives. Returns what the pool was, and
/// whether a signal cut the run short (some width left unfinished).
#[allow(clippy::too_many_arguments)]
fn run_on_pool(
    cfg: &RunConfig,
    context: SweepContext,
    todo: &[u64],
    rows: &mut [Option<Row>],
    journal: &mut Option<Journal>,
    journal_failure: &mut Option<String>,
    interrupts: &Interrupts,
    started: Instant,
) -> Result<(PoolRun, bool), AppError> {
    let lscv = cfg.select == SelectArg::Lscv;
    let context_bytes = context.bytes();
    let kept = context.values.len();
    let mut builder = Pool::<ParzenJob>::builder()
        .backend(cfg.backend)
        .chunksize(cfg.chunk)
        .retries(cfg.retries)
        .record_timeline(cfg.timeline.is_some())
        .context(context);
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
        "context shared: the bucket index of {} sample distances ({} kept, in the buckets \
         the widths read){} ({context_bytes} bytes) with {} workers",
        cfg.samples.len(),
        kept,
        if lscv { " and the sorted samples" } else { "" },
        pool.workers()
    );
    let dims = cfg.samples.dims();
    let h = |pos: u64| cfg.widths[pos as usize];
    let jobs = todo.iter().map(|&pos| ParzenJob { h: h(pos) });
    let mut done = 0;
    let mut stopped = None;
    let mut cut_short = false;
    for (r, &pos) in pool.imap(jobs).zip(todo) {
        done += 1;
        rows[pos as usize] = Some(match r {
            Ok(Ok(estimate)) => {
                record(journal, journal_failure, pos, &estimate);
                Row::finished(pos, h(pos), dims, estimate)
            }
            // Failures are not recorded: a resumed run computes them again.
            Ok(Err(why)) => Row::failed(pos, h(pos), lscv, why),
            Err(Error::Job {
                error: JobError::Terminated,
                ..
            }) if interrupts.caught().is_some() => {
                cut_short = true;
                Row::failed(pos, h(pos), lscv, NOT_FINISHED.to_owned())
            }
            Err(Error::Job { error, .. }) => Row::failed(pos, h(pos), lscv, error.to_string()),
            Err(other) => {
                done -= 1;
                stopped = Some(other.to_string());
                break;
            }
        });
    }
    // From here on a signal cannot change a result: it is noted, and the report printed.
    interrupts.finished();
    // Widths never reached (the pool stopped taking work): say so, one row each.
    for &pos in &todo[done..] {
        let why = match (&stopped, interrupts.caught()) {
            (_, Some(_)) => {
                cut_short = true;
                NOT_FINISHED.to_owned()
            }
            (Some(e), None) => e.clone(),
            (None, None) => "no result".to_owned(),
        };
        rows[pos as usize] = Some(Row::failed(pos, h(pos), lscv, why));
    }
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
    Ok((
        PoolRun {
            workers,
            pids,
            ready_s,
            chunksize_chosen,
            drawing,
        },
        cut_short,
    ))
}

/// The name of a selection rule, as JSON and the table print it.
pub fn select_name(s: SelectArg) -> &'static str {
    match s {
        SelectArg::True => "true",
        SelectArg::Lscv => "lscv",
        SelectArg::None => "none",
    }
}

/// The first row whose estimate is closest to `truth`; rows without a finite density
/// (failed, or not finite) are never chosen.
pub fn closest(rows: &[Row], truth: f64) -> Option<Best> {
    let mut best: Option<(f64, Best)> = None;
    for r in rows {
        let Some(density) = r.density.filter(|d| d.is_finite()) else {
            continue;
        };
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

/// The first row with the smallest finite LSCV score (position and width); rows whose
/// score failed or is degenerate are never chosen.
pub fn smallest_lscv(rows: &[Row]) -> Option<(u64, f64)> {
    let scored: Vec<(u64, f64, f64)> = rows
        .iter()
        .filter_map(|r| match r.lscv {
            Some(Some(v)) if v.is_finite() => Some((r.pos, r.h, v)),
            _ => None,
        })
        .collect();
    let scores: Vec<f64> = scored.iter().map(|s| s.2).collect();
    parzen::lscv::select(&scores).map(|i| (scored[i].0, scored[i].1))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tasks::LscvScore;

    fn row(pos: u64, density: Option<f64>) -> Row {
        Row {
            pos,
            h: pos as f64,
            status: Status::Ok,
            count: None,
            density,
            lscv: None,
            lscv_terms: None,
            error: None,
            note: None,
        }
    }

    #[test]
    fn closest_takes_the_first_of_ties_and_skips_failures() {
        let rows = [
            row(0, Some(0.25)),
            row(1, None),
            row(2, Some(0.75)),
            row(3, Some(0.25)),
            row(4, Some(f64::NAN)),
        ];
        assert_eq!(closest(&rows, 0.5).map(|b| b.pos), Some(0));
        assert_eq!(closest(&rows, 0.7).map(|b| b.pos), Some(2));
        assert_eq!(closest(&[row(0, None)], 1.0), None);
    }

    #[test]
    fn values_that_are_not_finite_are_flagged_and_never_chosen() {
        let estimate = |density: f64, score: Result<f64, String>| Estimate {
            count: 3,
            density,
            lscv: Some(LscvScore {
                s: 1.0,
                c: 2,
                score,
            }),
        };
        let rows = [
            Row::finished(
                0,
                1e-200,
                2,
                estimate(f64::INFINITY, Err("h^2d = 0e0".into())),
            ),
            Row::finished(1, 0.5, 2, estimate(0.2, Ok(-0.1))),
            Row::finished(2, 0.7, 2, estimate(0.1, Ok(f64::NAN))),
            Row::finished(3, 0.9, 2, estimate(0.15, Ok(-0.05))),
        ];
        assert_eq!(rows[0].status, Status::NotFinite);
        assert_eq!(rows[0].density, None);
        assert_eq!(rows[0].count, Some(3));
        let note = rows[0].note.as_deref().unwrap();
        assert!(
            note.contains("is inf") && note.contains("h^2d = 0e0"),
            "{note}"
        );
        assert_eq!(rows[1].status, Status::Ok);
        assert_eq!(rows[2].status, Status::NotFinite);
        assert_eq!(rows[2].density, Some(0.1));
        assert_eq!(rows[2].lscv, Some(None));
        assert_eq!(smallest_lscv(&rows), Some((1, 0.5)));
        assert_eq!(closest(&rows, 0.0).map(|b| b.pos), Some(2));
        let json = serde_json::to_value(&rows[0]).unwrap();
        assert_eq!(json["status"], "not_finite");
        assert!(json["density"].is_null() && json.get("error").is_none());
        let failed = serde_json::to_value(Row::failed(5, 1.0, false, "boom".into())).unwrap();
        assert_eq!(failed["status"], "failed");
        assert!(failed.get("lscv").is_none() && failed.get("note").is_none());
    }
}
