//! A per-worker context (Python's `Pool(initializer=...)`), shared memory, and automatic
//! chunking.
//!
//! The context — here a 1,000,000-element array of f64, 8 MB — is encoded once. Being over
//! 64 KiB, it does not go down each worker's socket: it goes into one sealed shared-memory
//! object that every worker maps (replacements too). Jobs carry only their own few bytes.
//!
//! Run with `cargo run -p procpool --example context` (add `--release` for realistic timings).
//!
//! What to look for:
//! - `bytes_sent` right after `build()` is a few hundred bytes (greetings), and
//!   `context_shared_bytes` is the 8 MB held once, whatever the number of workers; after
//!   200 jobs the socket has carried only a few KB more, versus the ~1.6 GB that sending the
//!   context with every job would cost;
//! - with a `Vec<f64>` context each worker decodes its own copy from the mapping; with a
//!   [`SharedSlice`] it reads the mapped pages in place (`shared in worker: true`), no copy
//!   at all — and `SharedSlice::new_shared` builds the array there in the first place;
//! - the sums match the same sums computed here in the parent, bit for bit;
//! - 20,000 tiny jobs: `Chunk::Auto` measures the first round trips one job at a time, then
//!   prints the chunk size it chose and why (overhead under 5% of a chunk's compute, at most
//!   a quarter of each worker's share); it sends fewer bytes than `Chunk::Fixed(1)` (one
//!   frame header per chunk, not per job) and is a little faster. The gap is modest because
//!   even with `Fixed(1)` the pool keeps many frames in flight per worker and workers batch
//!   their replies.

use procpool::{Backend, Chunk, Pool, Registry, SharedSlice, Task};
use serde::{Deserialize, Serialize};
use std::time::Instant;

const CONTEXT_LEN: usize = 1_000_000;

/// Sums `len` context values starting at `start`.
#[derive(Serialize, Deserialize)]
struct SliceSum {
    start: usize,
    len: usize,
}

impl Task for SliceSum {
    const NAME: &'static str = "slice_sum";
    type Context = Vec<f64>;
    type Output = f64;
    fn run(self, ctx: &Vec<f64>) -> f64 {
        ctx.iter().skip(self.start).take(self.len).sum()
    }
}

/// The same job over a zero-copy shared array; also says whether it read shared memory.
#[derive(Serialize, Deserialize)]
struct SharedSum {
    start: usize,
    len: usize,
}

impl Task for SharedSum {
    const NAME: &'static str = "shared_sum";
    type Context = SharedSlice<f64>;
    type Output = (f64, bool);
    fn run(self, ctx: &SharedSlice<f64>) -> (f64, bool) {
        let sum = ctx.iter().skip(self.start).take(self.len).sum();
        (sum, ctx.is_shared())
    }
}

fn jobs(n: usize, len: usize) -> impl Iterator<Item = SliceSum> {
    (0..n).map(move |i| SliceSum {
        start: (i * 7_919) % (CONTEXT_LEN - len),
        len,
    })
}

fn main() -> Result<(), procpool::Error> {
    procpool::serve_if_worker(Registry::new().task::<SliceSum>().task::<SharedSum>());
    let data: Vec<f64> = (0..CONTEXT_LEN).map(|i| (i as f64).sqrt()).collect();
    let context_bytes = (CONTEXT_LEN * 8) as u64;

    // 1. The context travels once per worker, not once per job.
    let workers = 2;
    let pool = Pool::<SliceSum>::builder()
        .workers(workers)
        .backend(Backend::Process)
        .context(data.clone())
        .build()?;
    let at_start = pool.stats().bytes_sent;
    println!(
        "context: {CONTEXT_LEN} f64 = {context_bytes} bytes; {workers} workers {:?}",
        pool.pids()
    );
    println!("bytes_sent after build: {at_start} (greetings only)");
    println!(
        "context_shared_bytes: {} (one copy, mapped by every worker)",
        pool.stats().context_shared_bytes
    );
    let n = 200;
    let sums = pool.map(jobs(n, 1_000))?;
    let here: Vec<f64> = jobs(n, 1_000)
        .map(|j| data.iter().skip(j.start).take(j.len).sum())
        .collect();
    let same = sums
        .iter()
        .zip(&here)
        .all(|(a, b)| a.to_bits() == b.to_bits());
    let per_jobs = pool.stats().bytes_sent - at_start;
    println!("bytes_sent for {n} jobs: {per_jobs} (sums identical to the parent's: {same})");
    println!(
        "re-sending the context with every job would cost {} bytes ({}x more)",
        n as u64 * context_bytes,
        n as u64 * context_bytes / per_jobs.max(1)
    );
    drop(pool);

    // 2. Zero copy: the array is built in shared memory and workers read it in place.
    let shared = SharedSlice::new_shared(CONTEXT_LEN, |v| {
        for (i, x) in v.iter_mut().enumerate() {
            *x = (i as f64).sqrt();
        }
    })?;
    let pool = Pool::<SharedSum>::builder()
        .workers(workers)
        .context(shared)
        .build()?;
    let out = pool.map(jobs(n, 1_000).map(|j| SharedSum {
        start: j.start,
        len: j.len,
    }))?;
    let same = out
        .iter()
        .zip(&here)
        .all(|((a, _), b)| a.to_bits() == b.to_bits());
    println!(
        "SharedSlice context: shared in worker: {}, sums identical: {same}",
        out.iter().all(|(_, shared)| *shared)
    );
    drop(pool);

    // 3. Many tiny jobs: automatic chunking versus one job per frame.
    let n = 20_000;
    for chunk in [Chunk::Auto, Chunk::Fixed(1)] {
        let pool = Pool::<SliceSum>::builder()
            .workers(workers)
            .chunksize(chunk)
            .context(vec![1.0; 16])
            .build()?;
        let start = pool.stats().bytes_sent;
        let t = Instant::now();
        let sums = pool.map((0..n).map(|i| SliceSum {
            start: i % 8,
            len: 8,
        }))?;
        let elapsed = t.elapsed();
        let stats = pool.stats();
        println!(
            "{n} tiny jobs with {chunk:?}: {elapsed:.1?}, {} bytes sent, all sums 8: {}",
            stats.bytes_sent - start,
            sums.iter().all(|&s| s == 8.0)
        );
        match pool.chunk_choice() {
            Some(c) => println!(
                "  chunk_choice: chunksize {} (job {:?}, round-trip overhead {:?}): {}",
                c.chunksize, c.job, c.overhead, c.reason
            ),
            None => println!("  chunk_choice: none (fixed chunksize, nothing measured)"),
        }
    }
    Ok(())
}
