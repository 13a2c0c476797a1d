//! `cargo run --example demo_isolation`: the same demo as `coordinator demo isolation` (its
//! code is `bin/coordinator/demo/isolation.rs`, included here) — globals changed by
//! workers, seen from the parent: untouched under processes, changed under threads.

#[path = "../bin/coordinator/demo/isolation.rs"]
mod isolation;

fn main() -> Result<(), isolation::Error> {
    // First thing: a worker is this program started again, and serves here.
    procpool::serve_if_worker(isolation::register(procpool::Registry::new()));
    let report = isolation::run(&isolation::Options::default())?;
    report.write_text(&mut std::io::stdout().lock())?;
    Ok(())
}
