//! The tasks this binary can run in a worker, and the registry `main` hands to
//! `procpool::serve_if_worker`.

use crate::error::AppError;
use parzen::{BucketKey, LscvView, PartialIndex, PartialIndexView, Samples};
use procpool::{Registry, SharedSlice, Task};
use serde::{Deserialize, Serialize};

/// One job of the sweep: the density estimate for one window width, and its LSCV score
/// when the context carries the cross-validation data.
#[derive(Debug, Clone, Copy, Serialize, Deserialize)]
pub struct ParzenJob {
    /// Window width (edge of the hypercube).
    pub h: f64,
}

/// What one width gives: the count inside the window, the density, and the LSCV terms
/// and score when they were asked for.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Estimate {
    /// Samples inside the hypercube.
    pub count: u64,
    /// `(count / n) / h^d` (not finite when `h^d` underflows: the caller flags it).
    pub density: f64,
    /// Least-squares cross-validation of this width, when the context has its data.
    pub lscv: Option<LscvScore>,
}

/// One width's least-squares cross-validation (see `parzen::lscv`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LscvScore {
    /// `S(h)`: the integral of the squared estimate times `n^2 h^2d`.
    pub s: f64,
    /// `C(h)`: ordered pairs `i != j` within `h/2` in every coordinate (exact).
    pub c: u64,
    /// The score, or why it is meaningless at this width (`h^d` or `h^2d` out of range).
    pub score: Result<f64, String>,
}

/// The bucket index of every sample's largest coordinate distance to the point, kept for
/// the run's widths (`parzen::PartialIndex`): the offsets of all 2048 buckets, but the
/// values of only the buckets the widths read. Built in one pass over the samples that
/// writes kilobytes, not n values (at n = 1e6 a full index is 8 MB of fresh memory, whose
/// page faults cost more than the pass itself); process workers map it read-only (no copy
/// per worker), threads share it. A count reads two offsets and one bucket: about a
/// microsecond.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SweepContext {
    /// The monotone map from a distance to its bucket.
    pub key: BucketKey,
    /// Dimensions of the samples.
    pub dims: usize,
    /// Number of samples.
    pub n: usize,
    /// Start of each bucket among all n distances, then n.
    pub offsets: SharedSlice<u64>,
    /// Start of each bucket in `values`, then `values.len()` (empty for buckets not kept).
    pub starts: SharedSlice<u64>,
    /// The distances `max_j |x_ij - p_j|` of the kept buckets, grouped by bucket.
    pub values: SharedSlice<f64>,
    /// The samples for cross-validation (`--select lscv`), if asked for.
    pub lscv: Option<LscvData>,
}

/// The samples sorted by their first coordinate, column-major (`parzen::lscv::prepare`),
/// written straight into shared memory: what every worker reads to score widths.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct LscvData {
    /// Number of samples.
    pub n: usize,
    /// Dimensions.
    pub dims: usize,
    /// `n × dims` values, column-major, sorted by the first column.
    pub data: SharedSlice<f64>,
}

impl LscvData {
    /// Checks the samples (n >= 2, no constant column) and writes the sorted copy into a
    /// new shared-memory object.
    pub fn new(samples: &Samples) -> Result<LscvData, AppError> {
        let bad = |e: parzen::Error| {
            AppError::usage(format!(
                "--select lscv: {e}{}",
                match e {
                    parzen::Error::LscvTooFew(_) | parzen::Error::ConstantColumn { .. } =>
                        " (--select none prints the densities alone)",
                    _ => "",
                }
            ))
        };
        parzen::lscv::check(samples).map_err(bad)?;
        let mut filled = Ok(());
        let data = SharedSlice::new_shared(samples.as_slice().len(), |out| {
            filled = parzen::lscv::prepare(samples, out);
        })?;
        filled.map_err(bad)?;
        Ok(LscvData {
            n: samples.len(),
            dims: samples.dims(),
            data,
        })
    }

    /// The data as parzen reads it (checks shape, finiteness and order in O(n·d)).
    pub fn view(&self) -> Result<LscvView<'_>, parzen::Error> {
        LscvView::new(&self.data, self.n, self.dims)
    }
}

impl SweepContext {
    /// Builds the bucket index of `samples` around `point` kept for `widths`, and the
    /// cross-validation copy when `lscv` is set.
    pub fn new(
        samples: &Samples,
        point: &[f64],
        widths: &[f64],
        lscv: bool,
    ) -> Result<SweepContext, AppError> {
        let bad_point = |e: parzen::Error| AppError::usage(format!("--point: {e}"));
        let parts = PartialIndex::new(samples, point, widths)
            .map_err(bad_point)?
            .into_parts();
        let lscv = if lscv {
            Some(LscvData::new(samples)?)
        } else {
            None
        };
        // Kilobytes: the pools copy them into shared memory once (process workers), or
        // share them as they are (threads, serial).
        Ok(SweepContext {
            key: parts.key,
            dims: parts.dims,
            n: samples.len(),
            offsets: SharedSlice::from_vec(parts.offsets),
            starts: SharedSlice::from_vec(parts.starts),
            values: SharedSlice::from_vec(parts.values),
            lscv,
        })
    }

    /// The index as parzen reads it (checks its shape in O(buckets)).
    pub fn index(&self) -> Result<PartialIndexView<'_>, parzen::Error> {
        let view = PartialIndexView::new(
            self.key,
            self.dims,
            &self.offsets,
            &self.starts,
            &self.values,
        )?;
        if view.len() != self.n {
            return Err(parzen::Error::BadIndex(format!(
                "the index holds {} samples, the context says {}",
                view.len(),
                self.n
            )));
        }
        Ok(view)
    }

    /// Bytes the context takes: the index, and the cross-validation copy.
    pub fn bytes(&self) -> usize {
        (self.offsets.len() + self.starts.len() + self.values.len()) * 8
            + self.lscv.as_ref().map_or(0, |l| l.data.len() * 8)
    }
}

/// The most bytes the sweep's context can take for `n` samples of `d` dimensions, before
/// it is built: the index (its offsets and starts, and n distances when the widths read
/// every bucket) and, with `lscv`, the sorted copy.
pub fn context_bytes(n: u64, d: u64, lscv: bool) -> u128 {
    // `BucketKey::for_samples` makes 2048 buckets: 2049 offsets and 2049 starts (checked by
    // a unit test against a real context).
    let offsets = 2 * 2049 * 8;
    let index = u128::from(n) * 8 + offsets;
    let copy = if lscv {
        (u128::from(n) * u128::from(d)).saturating_mul(8)
    } else {
        0
    };
    index.saturating_add(copy)
}

impl Task for ParzenJob {
    const NAME: &'static str = "parzen";
    type Context = SweepContext;
    type Output = Result<Estimate, String>;
    fn run(self, ctx: &SweepContext) -> Result<Estimate, String> {
        let index = ctx.index().map_err(|e| e.to_string())?;
        let count = index.count(self.h).map_err(|e| e.to_string())?;
        let lscv = match &ctx.lscv {
            None => None,
            Some(data) => {
                let view = data.view().map_err(|e| e.to_string())?;
                let terms = view.terms(self.h);
                Some(LscvScore {
                    s: terms.s,
                    c: terms.c,
                    score: parzen::lscv::score(terms, data.n, data.dims, self.h)
                        .map_err(|e| e.to_string()),
                })
            }
        };
        Ok(Estimate {
            count,
            density: parzen::density_from_count(count, ctx.n, ctx.dims, self.h),
            lscv,
        })
    }
}

/// A job that does nothing with the number it carries: what is measured is the pool
/// (bench overhead). It carries one, as Python's benchmark maps a no-op over `range(n)`.
#[derive(Debug, Clone, Copy, Serialize, Deserialize)]
pub struct Nop(pub u64);

impl Task for Nop {
    const NAME: &'static str = "nop";
    type Context = ();
    type Output = ();
    fn run(self, _: &()) {
        std::hint::black_box(self.0);
    }
}

/// A job that keeps a core busy for a set time, then returns it (bench granularity).
#[derive(Debug, Clone, Copy, Serialize, Deserialize)]
pub struct Spin {
    /// How long to spin, in nanoseconds.
    pub nanos: u64,
}

impl Task for Spin {
    const NAME: &'static str = "spin";
    type Context = ();
    type Output = u64;
    fn run(self, _: &()) -> u64 {
        let start = std::time::Instant::now();
        let until = std::time::Duration::from_nanos(self.nanos);
        let mut spins = 0u64;
        while start.elapsed() < until {
            spins += 1;
            std::hint::spin_loop();
        }
        spins
    }
}

/// Every task and target of this binary.
pub fn registry() -> Registry {
    crate::demo::register(
        Registry::new()
            .task::<ParzenJob>()
            .task::<Nop>()
            .task::<Spin>(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn jobs_match_the_literal_estimate_and_the_double_loop() {
        let samples = parzen::Gaussian::standard(2)
            .unwrap()
            .sample(300, 4)
            .unwrap();
        let point = [0.1, -0.2];
        let widths = [0.05, 0.3, 1.0, 2.5];
        let ctx = SweepContext::new(&samples, &point, &widths, true).unwrap();
        assert!(ctx.bytes() as u128 <= context_bytes(300, 2, true));
        // With every sample kept (all in the bucket the width reads), the bound is exact.
        let same = Samples::from_rows(2, vec![0.25; 600]).unwrap();
        let all = SweepContext::new(&same, &[0.0, 0.0], &[0.5], false).unwrap();
        assert_eq!(all.values.len(), 300);
        assert_eq!(all.bytes() as u128, context_bytes(300, 2, false));
        assert_eq!(ParzenJob { h: 0.5 }.run(&all).unwrap().count, 300);
        // A width the context was not built for is an error, not a wrong count.
        let two = Samples::from_rows(1, [0.25, 0.75].repeat(50)).unwrap();
        let half = SweepContext::new(&two, &[0.0], &[0.5], false).unwrap();
        assert_eq!(half.values.len(), 50);
        let e = ParzenJob { h: 1.5 }.run(&half).unwrap_err();
        assert!(e.contains("did not keep"), "{e}");
        for h in widths {
            let e = ParzenJob { h }.run(&ctx).unwrap();
            assert_eq!(
                e.density.to_bits(),
                parzen::estimate_naive(&samples, &point, h).to_bits()
            );
            let l = e.lscv.unwrap();
            let naive = parzen::lscv::naive_terms(&samples, h);
            assert_eq!(l.c, naive.c);
            assert!((l.s - naive.s).abs() <= 1e-12 * naive.s.abs());
        }
        // A constant column is refused by name, before any worker starts.
        let flat = Samples::from_rows(2, vec![1.0, 5.0, 2.0, 5.0]).unwrap();
        let e = SweepContext::new(&flat, &[0.0, 0.0], &widths, true).unwrap_err();
        assert_eq!(e.exit_code(), 2);
        assert!(e.to_string().contains("column 1"), "{e}");
    }
}
