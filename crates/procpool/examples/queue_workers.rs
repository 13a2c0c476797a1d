//! `JoinableQueue` + `QueueReceiver`: the classic producer/consumer across processes.
//!
//! The parent puts the numbers 1 to 12 on a `JoinableQueue` (at most 4 waiting at a time:
//! `maxsize`). Three child processes take numbers from it through the `QueueReceiver` in
//! their target, put `(number, Collatz steps, pid)` on a results `Queue`, and mark each
//! number done. The parent's `join()` returns once all twelve are done; then one `None`
//! per child tells the children to stop (Python's `JoinableQueue` recipe).
//!
//! Run with `cargo run -p procpool --example queue_workers`.
//!
//! What to look for:
//! - "join returned with 12 of 12 results in": `join` waits for every `task_done`.
//! - "taken per child": which child took how many numbers varies run to run; the counts
//!   add up to 12, and each number was taken exactly once ("each number once: true").
//! - "steps": the Collatz steps of 1..=12, in number order.

use procpool::{JoinableQueue, Process, Queue, QueueReceiver, QueueSender, Registry, Target};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// Steps for `n` to reach 1 under the Collatz map.
fn collatz_steps(mut n: u64) -> u64 {
    let mut steps = 0;
    while n != 1 {
        n = if n.is_multiple_of(2) {
            n / 2
        } else {
            3 * n + 1
        };
        steps += 1;
    }
    steps
}

/// A child: takes numbers until a `None`, reports each, marks it done.
#[derive(Serialize, Deserialize)]
struct Worker {
    work: QueueReceiver<Option<u64>>,
    results: QueueSender<(u64, u64, u32)>,
}

impl Target for Worker {
    const NAME: &'static str = "collatz_worker";
    fn run(self) {
        let body = || -> Result<(), procpool::Error> {
            while let Some(n) = self.work.get()? {
                self.results
                    .put(&(n, collatz_steps(n), std::process::id()))?;
                self.work.task_done()?;
            }
            Ok(())
        };
        if let Err(e) = body() {
            eprintln!("collatz_worker: {e}");
            std::process::exit(1);
        }
    }
}

fn main() -> Result<(), procpool::Error> {
    procpool::serve_if_worker(Registry::new().target::<Worker>());
    let work = JoinableQueue::<Option<u64>>::with_maxsize(4)?;
    let results = Queue::<(u64, u64, u32)>::new()?;
    let mut children = (0..3)
        .map(|_| {
            Process::spawn(Worker {
                work: work.receiver(),
                results: results.sender(),
            })
        })
        .collect::<Result<Vec<_>, _>>()?;
    // Waits for room whenever four numbers are already queued.
    for n in 1..=12 {
        work.put(&Some(n))?;
    }
    work.join()?;
    println!("join returned with {} of 12 results in", results.qsize());
    for _ in &children {
        work.put(&None)?;
    }
    for child in &mut children {
        child.join()?;
    }

    let mut by_number = BTreeMap::new();
    let mut per_child: BTreeMap<u32, usize> = BTreeMap::new();
    let mut taken = 0;
    while let Some((n, steps, pid)) = results.try_get() {
        taken += 1;
        by_number.insert(n, steps);
        *per_child.entry(pid).or_default() += 1;
    }
    println!(
        "taken per child: {:?}",
        per_child.values().collect::<Vec<_>>()
    );
    println!(
        "each number once: {}",
        taken == 12 && by_number.keys().copied().eq(1..=12)
    );
    println!("steps: {:?}", by_number.values().collect::<Vec<_>>());
    Ok(())
}
