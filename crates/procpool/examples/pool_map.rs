//! `Pool.map` and `Pool.apply` on the seed's cube function, on all three backends.
//!
//! The same `Cube` task runs inline (`serial`), on OS threads (`thread`) and in worker
//! processes (`process`: this binary re-executed, jobs and results as bincode frames).
//!
//! Run with `cargo run -p procpool --example pool_map`.
//!
//! What to look for: identical cubes `[1, 8, 27, 64, 125, 216]` on every line, in input
//! order whoever computed them; `serial` and `thread` report the parent's pid for every job,
//! `process` reports worker pids (several different ones, never the parent's).

use procpool::{Backend, Pool, Registry, Task};
use serde::{Deserialize, Serialize};

/// The seed's `cube(x)`; also returns the pid of the worker that computed it.
#[derive(Serialize, Deserialize)]
struct Cube(i64);

impl Task for Cube {
    const NAME: &'static str = "cube";
    type Context = ();
    type Output = (i64, u32);
    fn run(self, _: &()) -> (i64, u32) {
        (self.0.pow(3), std::process::id())
    }
}

fn main() -> Result<(), procpool::Error> {
    procpool::serve_if_worker(Registry::new().task::<Cube>());
    println!("parent pid {}", std::process::id());
    for backend in Backend::ALL {
        let pool = Pool::<Cube>::builder()
            .workers(4)
            .backend(backend)
            .build()?;
        let one = pool.apply(Cube(3))?;
        let all = pool.map((1..=6).map(Cube))?;
        let cubes: Vec<i64> = all.iter().map(|(c, _)| *c).collect();
        let pids: Vec<u32> = all.iter().map(|(_, p)| *p).collect();
        println!(
            "{backend:>7}: apply(cube, 3) = {}, map(cube, 1..=6) = {cubes:?}, computed by pids {pids:?}",
            one.0
        );
    }
    Ok(())
}
