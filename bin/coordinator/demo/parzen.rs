//! `demo parzen`: the seed's width table, with its erratum.
//!
//! The article computes `(k_n / len(x_samples)) / (h**point_x.shape[1])` with `point_x` a
//! d x 1 column (`np.array([[0],[0]])`, shape `(2, 1)`), so `shape[1]` is 1 and it divides
//! by `h`, not by the window's volume `h^d`. Its column therefore grows like `p * h` and
//! crosses the true density near h = 1.1, which it reports as the best width. The correct
//! estimate `(k / n) / h^d` is printed beside it, with what theory expects of it for
//! N(0, I) data: its mean approaches the true density as `h` shrinks (less bias), while its
//! spread grows (more variance).
//!
//! Comparing with the true density needs the true density, which only synthetic data has.
//! The last column is what real data allows: each width's least-squares cross-validation
//! score (Rudemo 1982, Bowman 1984), computed from the samples alone by a second pool on
//! the same workers' kind of job; its smallest score is the width it chooses.

use parzen::{Gaussian, Lscv, PreparedIndex, Samples};
use procpool::{Backend, Pool, Registry, Task};
use serde::{Deserialize, Serialize};
use std::io::{self, Write};
use std::path::PathBuf;

/// Errors of a demo, boxed: every one ends the demo with its message.
pub type Error = Box<dyn std::error::Error + Send + Sync>;

/// One job: how many samples lie inside the hypercube of edge `h` around the point.
#[derive(Serialize, Deserialize)]
struct WidthCount {
    h: f64,
}

impl Task for WidthCount {
    const NAME: &'static str = "demo-parzen-count";
    type Context = PreparedIndex;
    type Output = u64;
    fn run(self, ctx: &PreparedIndex) -> u64 {
        ctx.count(self.h)
    }
}

/// One job: the least-squares cross-validation score of width `h` (O(n^2) pairs).
#[derive(Serialize, Deserialize)]
struct WidthScore {
    h: f64,
}

impl Task for WidthScore {
    const NAME: &'static str = "demo-parzen-lscv";
    type Context = Lscv;
    type Output = Result<f64, String>;
    fn run(self, ctx: &Lscv) -> Result<f64, String> {
        ctx.view().score(self.h).map_err(|e| e.to_string())
    }
}

/// Registers this demo's tasks.
pub fn register(registry: Registry) -> Registry {
    registry.task::<WidthCount>().task::<WidthScore>()
}

/// Settings.
#[derive(Debug, Clone)]
pub struct Options {
    /// Workers (the seed's `multiprocess(4, ...)`).
    pub workers: usize,
    /// The seed's samples exported from numpy (`scripts/seed_data.py`), or any CSV/.npy;
    /// default: 10,000 draws from N(0, I) in 2-D with seed 123 (Rust's generator, so not
    /// numpy's numbers).
    pub data: Option<PathBuf>,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            workers: 4,
            data: None,
        }
    }
}

/// One width's row.
#[derive(Debug, Serialize)]
pub struct Row {
    /// Window width.
    pub h: f64,
    /// Samples inside the window.
    pub k: u64,
    /// The article's estimate, `(k / n) / h`.
    pub article: f64,
    /// The correct estimate, `(k / n) / h^d`.
    pub correct: f64,
    /// The correct estimate's expected value for N(0, I) data (bias shows here).
    pub expected: f64,
    /// Its standard deviation for N(0, I) data (variance shows here).
    pub sd: f64,
    /// The width's least-squares cross-validation score, from the samples alone.
    pub lscv: f64,
}

/// What the demo computed.
#[derive(Debug, Serialize)]
pub struct Report {
    /// Where the samples came from.
    pub source: String,
    /// Samples.
    pub n: usize,
    /// Dimensions.
    pub dims: usize,
    /// The pool's worker pids.
    pub worker_pids: Vec<u32>,
    /// The density of N(0, I) at the origin, `(2 pi)^(-d/2)`.
    pub true_density: f64,
    /// One row per width, in width order.
    pub rows: Vec<Row>,
    /// The width whose article estimate is closest to the truth.
    pub article_best_h: f64,
    /// The width whose correct estimate is closest to the truth.
    pub correct_best_h: f64,
    /// The width with the smallest LSCV score: the choice without the true density.
    pub lscv_best_h: f64,
}

/// `erf(x)` by its Taylor series: exact to rounding for the |x| < 1 used here.
fn erf(x: f64) -> f64 {
    let mut term = x;
    let mut sum = x;
    for n in 1..60 {
        term *= -x * x / n as f64;
        let next = term / (2 * n + 1) as f64;
        sum += next;
        if next.abs() < 1e-17 * sum.abs() {
            break;
        }
    }
    sum * 2.0 / std::f64::consts::PI.sqrt()
}

/// Runs the demo.
pub fn run(opts: &Options) -> Result<Report, Error> {
    let (samples, source) = match &opts.data {
        Some(path) => (parzen::load(path)?, format!("{}", path.display())),
        None => (
            Gaussian::standard(2)?.sample(10_000, 123)?,
            "N(0, I), seed 123 (drawn in Rust: not numpy's stream; see --data)".to_owned(),
        ),
    };
    report(&samples, source, opts.workers)
}

fn report(samples: &Samples, source: String, workers: usize) -> Result<Report, Error> {
    let (n, dims) = (samples.len(), samples.dims());
    let point = vec![0.0; dims];
    let pool = Pool::<WidthCount>::builder()
        .workers(workers)
        .backend(Backend::Process)
        .context(PreparedIndex::new(samples, &point)?)
        .build()?;
    let widths = parzen::default_widths();
    let counts = pool.map(widths.iter().map(|&h| WidthCount { h }))?;
    let worker_pids = pool.pids();
    pool.join();
    // The same widths scored from the data alone, on a pool of the same size.
    let scorer = Pool::<WidthScore>::builder()
        .workers(workers)
        .backend(Backend::Process)
        .context(Lscv::new(samples)?)
        .build()?;
    let scores = scorer
        .map(widths.iter().map(|&h| WidthScore { h }))?
        .into_iter()
        .collect::<Result<Vec<f64>, String>>()?;
    scorer.join();
    let true_density = Gaussian::standard(dims)?.pdf(&point)?;
    let rows: Vec<Row> = widths
        .iter()
        .zip(counts)
        .zip(&scores)
        .map(|((&h, k), &lscv)| {
            // Chance that one N(0, I) sample falls in the window, and the estimate's
            // mean and spread: k is Binomial(n, p_in).
            let p_in = erf(h / (2.0 * std::f64::consts::SQRT_2)).powi(dims as i32);
            let volume = h.powf(dims as f64);
            Row {
                h,
                k,
                // The article's `h**point_x.shape[1]` with shape[1] == 1.
                article: parzen::density_from_count(k, n, 1, h),
                correct: parzen::density_from_count(k, n, dims, h),
                expected: p_in / volume,
                sd: (p_in * (1.0 - p_in) / n as f64).sqrt() / volume,
                lscv,
            }
        })
        .collect();
    let best = |f: fn(&Row) -> f64| {
        rows.iter()
            .min_by(|a, b| {
                (f(a) - true_density)
                    .abs()
                    .total_cmp(&(f(b) - true_density).abs())
            })
            .map_or(f64::NAN, |r| r.h)
    };
    let lscv_best_h = parzen::lscv::select(&scores).map_or(f64::NAN, |i| widths[i]);
    Ok(Report {
        source,
        n,
        dims,
        worker_pids,
        true_density,
        article_best_h: best(|r| r.article),
        correct_best_h: best(|r| r.correct),
        lscv_best_h,
        rows,
    })
}

impl Report {
    /// Writes the report for people.
    pub fn write_text(&self, out: &mut dyn Write) -> io::Result<()> {
        let d = self.dims;
        writeln!(
            out,
            "Parzen-window estimate at the origin: {} samples, {d}-D, from {}",
            self.n, self.source
        )?;
        writeln!(
            out,
            "{} widths on {} worker processes {:?}; true density {}",
            self.rows.len(),
            self.worker_pids.len(),
            self.worker_pids,
            self.true_density
        )?;
        writeln!(
            out,
            "\n     h      k   article (k/n)/h   correct (k/n)/h^{d}   expected +- sd (N(0,I))   |correct - true|     LSCV(h)"
        )?;
        for r in &self.rows {
            writeln!(
                out,
                "  {:>4.1}  {:>5}   {:<16}  {:<18}  {:.5} +- {:.5}          {:.5}          {:.6}",
                r.h,
                r.k,
                format!("{:.6}", r.article),
                format!("{:.6}", r.correct),
                r.expected,
                r.sd,
                (r.correct - self.true_density).abs(),
                r.lscv
            )?;
        }
        writeln!(out)?;
        writeln!(
            out,
            "The article divides by h**point_x.shape[1], and its point_x is a {d} x 1 column, so \
             shape[1] = 1: it divides by h, not by the window's volume h^{d}."
        )?;
        let slope = match d {
            2 => "h".to_owned(),
            _ => format!("h^{}", d as i64 - 1),
        };
        writeln!(
            out,
            "Its column is about p * h^{d} / h = p * {slope}: it keeps growing with h and passes \
             the true density near h = 1.1 (closest here: h = {}). That \"best width\" is an \
             artifact; at h = 1 the two columns agree.",
            self.article_best_h
        )?;
        if let (Some(small), Some(large)) = (self.rows.first(), self.rows.last()) {
            writeln!(
                out,
                "The correct column is what a density estimate is. As h shrinks its expected \
                 value climbs to the truth ({:.5} at h = {}, {:.5} at h = {}: less bias) while \
                 its spread grows ({:.5} to {:.5}: more variance, fewer samples in a smaller \
                 window). Closest here: h = {}, where the spread is {:.5}: which width lands \
                 closest on one data set is partly luck.",
                large.expected,
                large.h,
                small.expected,
                small.h,
                large.sd,
                small.sd,
                self.correct_best_h,
                self.rows
                    .iter()
                    .find(|r| r.h == self.correct_best_h)
                    .map_or(f64::NAN, |r| r.sd)
            )?;
        }
        let chosen = self.rows.iter().find(|r| r.h == self.lscv_best_h);
        writeln!(
            out,
            "Real data has no true density to compare with. Least-squares cross-validation \
             scores each width from the samples alone: LSCV(h) is the integral of the squared \
             estimate minus twice the mean of the leave-one-out estimates at the samples, which \
             is the integrated squared error against the unknown density up to a constant. Its \
             smallest value here is at h = {}, where the estimate at the origin is {:.6}, {:.5} \
             from the truth: a width good for the whole density, not tuned to one point. \
             (`coordinator --select lscv` does this on every backend; `--plot FILE.svg` draws \
             both curves.)",
            self.lscv_best_h,
            chosen.map_or(f64::NAN, |r| r.correct),
            chosen.map_or(f64::NAN, |r| (r.correct - self.true_density).abs())
        )?;
        Ok(())
    }
}
