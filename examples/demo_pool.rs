//! `cargo run --example demo_pool`: the same demo as `coordinator demo pool` (its code is
//! `bin/coordinator/demo/pool.rs`, included here) — the seed's `Pool` section: `apply`,
//! `map`, `apply_async`, `map_async` on its cube function, with the pid of the worker
//! process behind each result.

#[path = "../bin/coordinator/demo/pool.rs"]
mod pool;

fn main() -> Result<(), pool::Error> {
    // First thing: a worker is this program started again, and serves here.
    procpool::serve_if_worker(pool::register(procpool::Registry::new()));
    let report = pool::run(&pool::Options::default())?;
    report.write_text(&mut std::io::stdout().lock())?;
    Ok(())
}
