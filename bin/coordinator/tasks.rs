//! The tasks this binary can run in a worker, and the registry `main` hands to
//! `procpool::serve_if_worker`.

use parzen::Prepared;
use procpool::{Registry, Task};
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

impl Task for ParzenJob {
    const NAME: &'static str = "parzen";
    /// Each sample's distance to the point, computed once and sent once per worker.
    type Context = Prepared;
    type Output = Estimate;
    fn run(self, ctx: &Prepared) -> Estimate {
        let count = ctx.count(self.h);
        Estimate {
            count,
            density: parzen::density_from_count(count, ctx.len(), ctx.dims(), self.h),
        }
    }
}

/// Every task and target of this binary.
pub fn registry() -> Registry {
    Registry::new().task::<ParzenJob>()
}
