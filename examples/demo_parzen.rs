//! `cargo run --example demo_parzen`: the same demo as `coordinator demo parzen` (its code
//! is `bin/coordinator/demo/parzen.rs`, included here) — the seed's width table with its h
//! vs h^d erratum, and the width least-squares cross-validation chooses without the true
//! density. Pass the seed's own data (written by `scripts/seed_data.py`) with `cargo
//! run --example demo_parzen -- --data seed.npy`.

#[path = "../bin/coordinator/demo/parzen.rs"]
mod parzen;

fn main() -> Result<(), parzen::Error> {
    // First thing: a worker is this program started again, and serves here.
    procpool::serve_if_worker(parzen::register(procpool::Registry::new()));
    let mut args = std::env::args_os().skip(1);
    let data = match (args.next(), args.next()) {
        (None, _) => None,
        (Some(flag), Some(path)) if flag == "--data" => Some(std::path::PathBuf::from(path)),
        _ => return Err("usage: cargo run --example demo_parzen [-- --data FILE]".into()),
    };
    let report = parzen::run(&parzen::Options {
        data,
        ..parzen::Options::default()
    })?;
    report.write_text(&mut std::io::stdout().lock())?;
    Ok(())
}
