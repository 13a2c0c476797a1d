//! `cargo run --example demo_queue`: the same demo as `coordinator demo queue` (its code is
//! `bin/coordinator/demo/queue.rs`, included here) — the seed's first example: four
//! processes, one queue, completion order, then order restored by position.

#[path = "../bin/coordinator/demo/queue.rs"]
mod queue;

fn main() -> Result<(), queue::Error> {
    // First thing: a worker is this program started again, and serves here.
    procpool::serve_if_worker(queue::register(procpool::Registry::new()));
    let report = queue::run()?;
    report.write_text(&mut std::io::stdout().lock())?;
    Ok(())
}
