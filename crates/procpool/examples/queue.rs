//! `Process` + `Queue`: the seed article's first example, hand-built fan-out.
//!
//! Four child processes each run `RandString`, which puts a random alphanumeric string of
//! length 5 on one shared `Queue` (like Python's `mp.Process(target=rand_string,
//! args=(5, pos, output))`). A child is this same binary re-executed; `main` hands it to
//! `serve_if_worker`, which runs the target and exits.
//!
//! Run with `cargo run -p procpool --example queue` (twice, to see the order change).
//!
//! What to look for:
//! - four child pids, each `alive: true` just after `spawn`, and `exited with code 0,
//!   alive: false` after `join()`. The parent joins *before* reading the queue: that cannot
//!   deadlock here (the queue drains children as they write), unlike Python's.
//! - "completion order": the positions arrive in whatever order the children finished
//!   (each child sleeps a random 50–100 ms so the race is visible); it varies run to run.
//! - "ordered": put `(pos, s)`, sort by `pos`, strip it: always positions 0, 1, 2, 3.

use procpool::{Process, Queue, QueueSender, Registry, Target, describe_status};
use rand::RngExt;
use serde::{Deserialize, Serialize};
use std::time::Duration;

/// The seed's `rand_string(length, pos, output)`.
#[derive(Serialize, Deserialize)]
struct RandString {
    len: usize,
    pos: usize,
    output: QueueSender<(usize, String)>,
}

impl Target for RandString {
    const NAME: &'static str = "rand_string";
    fn run(self) {
        let mut rng = rand::rng();
        // Jitter, so the children really race each other (they start a few ms apart).
        std::thread::sleep(Duration::from_millis(rng.random_range(50..100)));
        let s: String = rng
            .sample_iter(rand::distr::Alphanumeric)
            .take(self.len)
            .map(char::from)
            .collect();
        // A failed put surfaces as a missing value in the parent (its get times out).
        if let Err(e) = self.output.put(&(self.pos, s)) {
            eprintln!("rand_string {}: {e}", self.pos);
        }
    }
}

/// Starts four `RandString` children on `output`, joins them, and shows their lives.
fn run_four(output: &Queue<(usize, String)>) -> Result<(), procpool::Error> {
    let mut processes = Vec::new();
    for pos in 0..4 {
        let mut p = Process::spawn(RandString {
            len: 5,
            pos,
            output: output.sender(),
        })?;
        println!("  started pid {} (alive: {})", p.pid(), p.is_alive());
        processes.push(p);
    }
    for p in &mut processes {
        let status = p.join()?;
        let alive = p.is_alive();
        println!(
            "  joined  pid {} {}, alive: {alive}",
            p.pid(),
            describe_status(status)
        );
    }
    Ok(())
}

fn main() -> Result<(), procpool::Error> {
    procpool::serve_if_worker(Registry::new().target::<RandString>());
    println!("parent pid {}", std::process::id());
    let wait = Duration::from_secs(10);

    // Part 1: results in completion order.
    let output = Queue::new()?;
    run_four(&output)?;
    let arrived = (0..4)
        .map(|_| output.get_timeout(wait))
        .collect::<Result<Vec<(usize, String)>, _>>()?;
    let positions: Vec<usize> = arrived.iter().map(|(pos, _)| *pos).collect();
    let results: Vec<String> = arrived.into_iter().map(|(_, s)| s).collect();
    println!("completion order: positions {positions:?} results {results:?}");

    // Part 2: the ordered variant — sort by the position each child put with its string.
    let output = Queue::new()?;
    run_four(&output)?;
    let mut results = (0..4)
        .map(|_| output.get_timeout(wait))
        .collect::<Result<Vec<(usize, String)>, _>>()?;
    results.sort();
    let positions: Vec<usize> = results.iter().map(|(pos, _)| *pos).collect();
    let results: Vec<String> = results.into_iter().map(|(_, s)| s).collect();
    println!("ordered:          positions {positions:?} results {results:?}");
    Ok(())
}
