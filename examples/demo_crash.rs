//! `cargo run --example demo_crash`: the same demo as `coordinator demo crash` (its code is
//! `bin/coordinator/demo/crash.rs`, included here) — a job that segfaults: the process pool
//! survives it and finishes the other jobs; the same jobs on threads, in a child process,
//! take that whole process down.

#[path = "../bin/coordinator/demo/child.rs"]
mod child;
#[path = "../bin/coordinator/demo/crash.rs"]
mod crash;

fn main() -> Result<(), crash::Error> {
    // First thing: a worker is this program started again, and serves here.
    procpool::serve_if_worker(crash::register(procpool::Registry::new()));
    let report = crash::run(&crash::Options::default())?;
    report.write_text(&mut std::io::stdout().lock())?;
    Ok(())
}
