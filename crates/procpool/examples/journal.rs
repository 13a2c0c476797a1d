//! A results journal: a pool's outputs recorded as they arrive, a crash, and a resume
//! that runs only what is missing.
//!
//! Run with `cargo run -p procpool --example journal`.
//!
//! What to look for:
//! - the first run records 7 of 16 results, then "dies": the journal is dropped unfinished
//!   and its last 5 bytes are cut off, as a crash in the middle of a write leaves it;
//! - resuming with another seed is refused, naming the field (`header field "seed"`) and
//!   both values;
//! - resuming with the right header drops the torn record (its offset and size printed),
//!   recovers 6 results, runs the 10 missing positions, and the 16 outputs are bit for bit
//!   those of an uninterrupted run;
//! - resuming the complete journal finds nothing missing, so no pool is needed.

use procpool::journal::{Header, Journal};
use procpool::{Backend, Pool, Registry, Task};
use serde::{Deserialize, Serialize};
use std::error::Error;
use std::path::Path;

/// The first `terms` terms of the Leibniz series for pi.
#[derive(Serialize, Deserialize)]
struct Leibniz {
    terms: u64,
}

impl Task for Leibniz {
    const NAME: &'static str = "leibniz";
    type Context = ();
    type Output = f64;
    fn run(self, _: &()) -> f64 {
        (0..self.terms)
            .map(|k| {
                let sign = if k.is_multiple_of(2) { 1.0 } else { -1.0 };
                4.0 * sign / (2 * k + 1) as f64
            })
            .sum()
    }
}

/// Job `pos` of the sweep.
fn job(pos: u64) -> Leibniz {
    Leibniz {
        terms: 10_000 * (pos + 1),
    }
}

/// What identifies a run of this sweep.
fn header(n: u64, seed: u64) -> Header {
    Header::new()
        .text("example", "procpool journal 1")
        .text("task", Leibniz::NAME)
        .text("n", n.to_string())
        .text("seed", seed.to_string())
}

fn main() -> Result<(), Box<dyn Error>> {
    procpool::serve_if_worker(Registry::new().task::<Leibniz>());
    let dir = std::env::temp_dir().join(format!("procpool-journal-example-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let result = sweep(&dir.join("pi.journal"));
    std::fs::remove_dir_all(&dir)?;
    result
}

fn sweep(path: &Path) -> Result<(), Box<dyn Error>> {
    let n = 16;
    let pool = Pool::<Leibniz>::builder()
        .workers(2)
        .backend(Backend::Process)
        .build()?;
    let uninterrupted = pool.map((0..n).map(job))?;

    // 1. A run that dies after 7 results, in the middle of writing its last record.
    let mut journal = Journal::create(path, &header(n, 7))?;
    let todo: Vec<u64> = (0..n).collect();
    let outputs = pool.imap(todo.iter().map(|&pos| job(pos)));
    for item in journal.record(todo.iter().copied().zip(outputs)).take(7) {
        let (_, result) = item?; // the journal's error, then the job's
        result?;
    }
    drop(journal);
    let file = std::fs::OpenOptions::new().write(true).open(path)?;
    let len = file.metadata()?.len();
    file.set_len(len - 5)?;
    println!("first run: recorded 7 of {n} results, then died with its last record cut short");

    // 2. A journal from another run is refused, naming the field.
    match Journal::resume(path, &header(n, 8)) {
        Err(e) => println!("resume with another seed: {e}"),
        Ok(_) => return Err("a journal of seed 7 resumed a run of seed 8".into()),
    }

    // 3. The right run resumes: the torn record is dropped, only the missing run.
    let (mut journal, recovered) = Journal::resume(path, &header(n, 7))?;
    println!("resumed: {} of {n} results recovered", recovered.len());
    if let Some(torn) = recovered.torn_tail() {
        println!(
            "torn last record dropped: {} bytes at byte {}",
            torn.bytes, torn.offset
        );
    }
    let mut all = recovered.decode_all::<f64>()?;
    let todo: Vec<u64> = recovered.missing(n).collect();
    let finished = pool
        .imap_unordered(todo.iter().map(|&pos| job(pos)))
        .map(|t| (todo[t.pos as usize], t.result));
    for item in journal.record(finished) {
        let (pos, result) = item?;
        all.insert(pos, result?);
    }
    journal.finish()?;
    println!("ran the missing positions {todo:?}");
    let same = all.len() == uninterrupted.len()
        && all
            .values()
            .zip(&uninterrupted)
            .all(|(a, b)| a.to_bits() == b.to_bits());
    println!("identical to an uninterrupted run: {same}");

    // 4. Resuming a complete journal: nothing to run, no pool needed.
    let (journal, recovered) = Journal::resume(path, &header(n, 7))?;
    println!(
        "complete journal: {} missing, {} recovered",
        recovered.missing(n).count(),
        recovered.len()
    );
    journal.finish()?;
    Ok(())
}
