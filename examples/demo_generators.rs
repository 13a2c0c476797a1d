//! `cargo run --example demo_generators`: the same demo as `coordinator demo generators`
//! (its code is `bin/coordinator/demo/generators.rs`, included here) — the seed's `yield`
//! half: an endless lazy source feeding `imap`, the ATM that stays empty, the tree search
//! as an iterator.

#[path = "../bin/coordinator/demo/generators.rs"]
mod generators;

fn main() -> Result<(), generators::Error> {
    // First thing: a worker is this program started again, and serves here.
    procpool::serve_if_worker(generators::register(procpool::Registry::new()));
    let report = generators::run(&generators::Options::default())?;
    report.write_text(&mut std::io::stdout().lock())?;
    Ok(())
}
