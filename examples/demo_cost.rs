//! `cargo run --example demo_cost`: the same demo as `coordinator demo cost` (its code is
//! `bin/coordinator/demo/cost.rs`, included here) — one job's life, phase by phase, timed
//! from procpool's typed phase marks, on processes and on threads.

#[path = "../bin/coordinator/demo/cost.rs"]
mod cost;

fn main() -> Result<(), cost::Error> {
    // First thing: a worker is this program started again, and serves here.
    procpool::serve_if_worker(cost::register(procpool::Registry::new()));
    let report = cost::run(&cost::Options::default())?;
    report.write_text(&mut std::io::stdout().lock())?;
    Ok(())
}
