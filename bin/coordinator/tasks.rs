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
