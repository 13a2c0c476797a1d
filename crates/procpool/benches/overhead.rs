//! Pool overhead per backend (process, thread, serial), 2 workers, with a no-op task:
//!
//! - `apply_round_trip/<backend>`: one `pool.apply(Nop)`, the latency of a single job;
//! - `empty_jobs/chunk1/<backend>` and `empty_jobs/auto/<backend>`: 10,000 no-op jobs through
//!   `pool.map`, with `Chunk::Fixed(1)` and `Chunk::Auto`, reported as jobs per second.
//!
//! Run with `cargo bench -p procpool` (filter with e.g. `cargo bench -p procpool -- process`).
//! Pools are built once, outside the timed loops. This binary is also the worker: `main`
//! hands it to `serve_if_worker` before criterion sees the command line.

use criterion::{BenchmarkId, Criterion, Throughput};
use procpool::{Backend, Chunk, Pool, Registry, Task};
use serde::{Deserialize, Serialize};
use std::hint::black_box;
use std::time::Duration;

/// Does nothing: what is measured is the pool.
#[derive(Serialize, Deserialize)]
struct Nop;

impl Task for Nop {
    const NAME: &'static str = "nop";
    type Context = ();
    type Output = ();
    fn run(self, _: &()) {}
}

const WORKERS: usize = 2;
const JOBS: usize = 10_000;
const BACKENDS: [Backend; 3] = [Backend::Process, Backend::Thread, Backend::Serial];

fn pool(backend: Backend, chunk: Chunk) -> Pool<Nop> {
    match Pool::builder()
        .workers(WORKERS)
        .backend(backend)
        .chunksize(chunk)
        .build()
    {
        Ok(pool) => pool,
        Err(e) => panic!("could not build a {backend} pool: {e}"),
    }
}

fn apply_round_trip(c: &mut Criterion) {
    let mut group = c.benchmark_group("apply_round_trip");
    group
        .sample_size(30)
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(2));
    for backend in BACKENDS {
        let pool = pool(backend, Chunk::Auto);
        group.bench_function(BenchmarkId::from_parameter(backend), |b| {
            b.iter(|| {
                if let Err(e) = pool.apply(black_box(Nop)) {
                    panic!("apply failed on {backend}: {e}");
                }
            })
        });
    }
    group.finish();
}

fn empty_jobs(c: &mut Criterion) {
    let mut group = c.benchmark_group("empty_jobs");
    group
        .sample_size(10)
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(3))
        .throughput(Throughput::Elements(JOBS as u64));
    for (label, chunk) in [("chunk1", Chunk::Fixed(1)), ("auto", Chunk::Auto)] {
        for backend in BACKENDS {
            // One pool per configuration; with `Auto` the chunk size is measured on the
            // first map (during warm-up) and kept for the rest.
            let pool = pool(backend, chunk);
            group.bench_function(BenchmarkId::new(label, backend), |b| {
                b.iter(|| match pool.map((0..JOBS).map(|_| Nop)) {
                    Ok(out) => out.len(),
                    Err(e) => panic!("map failed on {backend}: {e}"),
                })
            });
        }
    }
    group.finish();
}

fn main() {
    procpool::serve_if_worker(Registry::new().task::<Nop>());
    let mut c = Criterion::default().configure_from_args();
    apply_round_trip(&mut c);
    empty_jobs(&mut c);
    c.final_summary();
}
