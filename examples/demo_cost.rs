//! `cargo run --example demo_cost`: the same demo as `coordinator demo cost` (its code is
//! `bin/coordinator/demo/cost.rs`, included here) — one job's life, phase by phase, timed
//! from procpool's trace marks, on processes and on threads.

#[path = "../bin/coordinator/demo/child.rs"]
mod child;
#[path = "../bin/coordinator/demo/cost.rs"]
mod cost;

fn main() -> Result<(), cost::Error> {
    // As `coordinator`'s main does: a worker logs when COORDINATOR_WORKER_LOG names a
    // filter (the demo sets it for the workers of its traced child). Before serving.
    if procpool::is_worker() {
        if let Ok(filter) = std::env::var(cost::WORKER_LOG_ENV) {
            let _ = tracing_subscriber::fmt()
                .with_env_filter(tracing_subscriber::EnvFilter::new(filter))
                .with_writer(std::io::stderr)
                .with_ansi(false)
                .try_init();
        }
    }
    // First thing: a worker is this program started again, and serves here.
    procpool::serve_if_worker(cost::register(procpool::Registry::new()));
    let report = cost::run(&cost::Options::default())?;
    report.write_text(&mut std::io::stdout().lock())?;
    Ok(())
}
