//! The tasks this binary can run in a worker, and the registry `main` hands to
//! `procpool::serve_if_worker`.

use parzen::{Prepared, Samples};
use procpool::{Registry, SharedSlice, Task};
use serde::{Deserialize, Serialize};

/// One job of the sweep: the density estimate for one window width.
#[derive(Debug, Clone, Copy, Serialize, Deserialize)]
pub struct ParzenJob {
    /// Window width (edge of the hypercube).
    pub h: f64,
}

/// What one width gives: the count inside the window and the density.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Estimate {
    /// Samples inside the hypercube.
    pub count: u64,
    /// `(count / n) / h^d`.
    pub density: f64,
}

/// What every worker of the sweep reads: each sample's largest coordinate distance to the
/// point, computed once by the coordinator straight into shared memory, which process
/// workers map read-only (no copy per worker) and threads share.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SweepContext {
    /// Dimensions of the samples.
    pub dims: usize,
    /// `max_j |x_ij - p_j|` for every sample i, in sample order.
    pub dists: SharedSlice<f64>,
}

impl SweepContext {
    /// Computes the distances of `samples` to `point` into a new shared-memory object.
    pub fn new(samples: &Samples, point: &[f64]) -> Result<SweepContext, crate::error::AppError> {
        let prepared = Prepared::new(samples, point)
            .map_err(|e| crate::error::AppError::usage(format!("--point: {e}")))?;
        let dists = SharedSlice::new_shared(prepared.len(), |out| {
            out.copy_from_slice(prepared.distances());
        })?;
        Ok(SweepContext {
            dims: samples.dims(),
            dists,
        })
    }
}

impl Task for ParzenJob {
    const NAME: &'static str = "parzen";
    type Context = SweepContext;
    type Output = Estimate;
    fn run(self, ctx: &SweepContext) -> Estimate {
        let count = parzen::count_scan(&ctx.dists, self.h);
        Estimate {
            count,
            density: parzen::density_from_count(count, ctx.dists.len(), ctx.dims, self.h),
        }
    }
}

/// A job that does nothing: what is measured is the pool (bench overhead).
#[derive(Debug, Clone, Copy, Serialize, Deserialize)]
pub struct Nop;

impl Task for Nop {
    const NAME: &'static str = "nop";
    type Context = ();
    type Output = ();
    fn run(self, _: &()) {}
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
