//! Pool overhead per backend (process, thread, serial), 2 workers, with a no-op task:
//!
//! - `apply_round_trip/<backend>`: one `pool.apply(Nop)`, the latency of a single job;
//!   `apply_round_trip/process-nospin` is the process pool with `spin(Duration::ZERO)`: run
//!   the group under `taskset -c 0` to see that the adaptive spin costs little when both
//!   sides share one CPU (`taskset -c 0 cargo bench -p procpool -- apply_round_trip`);
//! - `empty_jobs/chunk1/<backend>` and `empty_jobs/auto/<backend>`: 10,000 no-op jobs through
//!   `pool.map`, with `Chunk::Fixed(1)` and `Chunk::Auto`, reported as jobs per second.
//!
//! - `context/<inline|shared>/<bytes>`: building a 2-worker process pool whose context is a
//!   byte vector of that size, inline on each worker's socket or in one shared-memory object
//!   that both map (and dropping it): where sharing starts to pay (`SHARE_ABOVE`).
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

/// Has a byte context (one byte string: encoding it is a copy); does nothing with it.
#[derive(Serialize, Deserialize)]
struct Bytes;

impl Task for Bytes {
    const NAME: &'static str = "bytes";
    type Context = serde_bytes::ByteBuf;
    type Output = ();
    fn run(self, _: &serde_bytes::ByteBuf) {}
}

const WORKERS: usize = 2;
const JOBS: usize = 10_000;
const BACKENDS: [Backend; 3] = [Backend::Process, Backend::Thread, Backend::Serial];

fn pool(backend: Backend, chunk: Chunk) -> Pool<Nop> {
    build(Pool::builder().backend(backend).chunksize(chunk), backend)
}

fn build(builder: procpool::PoolBuilder<Nop>, backend: Backend) -> Pool<Nop> {
    match builder.workers(WORKERS).build() {
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
    let nospin = build(Pool::builder().spin(Duration::ZERO), Backend::Process);
    group.bench_function("process-nospin", |b| {
        b.iter(|| {
            if let Err(e) = nospin.apply(black_box(Nop)) {
                panic!("apply failed without spinning: {e}");
            }
        })
    });
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

fn context(c: &mut Criterion) {
    let mut group = c.benchmark_group("context");
    group
        .sample_size(20)
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(3));
    for bytes in [4 << 10, 16 << 10, 64 << 10, 256 << 10, 1 << 20, 8 << 20] {
        let ctx = serde_bytes::ByteBuf::from(vec![7u8; bytes]);
        for (label, share_above) in [("inline", usize::MAX), ("shared", 0)] {
            group.bench_function(BenchmarkId::new(label, bytes), |b| {
                b.iter(|| {
                    let pool = Pool::<Bytes>::builder()
                        .workers(WORKERS)
                        .share_context_above(share_above)
                        .context(ctx.clone())
                        .build();
                    match pool {
                        Ok(pool) => drop(pool),
                        Err(e) => panic!("could not build a pool: {e}"),
                    }
                })
            });
        }
    }
    group.finish();
}

fn main() {
    procpool::serve_if_worker(Registry::new().task::<Nop>().task::<Bytes>());
    let mut c = Criterion::default().configure_from_args();
    apply_round_trip(&mut c);
    empty_jobs(&mut c);
    context(&mut c);
    c.final_summary();
}
