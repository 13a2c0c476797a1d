//! Several kinds of work in one pool. A pool is typed by its task, and a worker finds the
//! code by the task's name; to mix kinds of work, make the task an enum whose `run`
//! matches on its variants (Python's pool takes any function; here the variants are the
//! functions). Each variant's output goes in an output enum.
//!
//! Run with `cargo run -p procpool --example several_tasks`.

use procpool::{Pool, Registry, Task};
use serde::{Deserialize, Serialize};

/// Everything this pool can be asked to do.
#[derive(Serialize, Deserialize)]
enum Work {
    /// Square a number.
    Square(u64),
    /// Count the words of a text.
    Words(String),
    /// Sum a range of numbers.
    Sum { from: u64, to: u64 },
}

/// What each kind of work gives back.
#[derive(Debug, Serialize, Deserialize, PartialEq)]
enum Done {
    Square(u64),
    Words(usize),
    Sum(u64),
}

impl Task for Work {
    const NAME: &'static str = "work";
    type Context = ();
    type Output = Done;
    fn run(self, _: &()) -> Done {
        match self {
            Work::Square(x) => Done::Square(x * x),
            Work::Words(text) => Done::Words(text.split_whitespace().count()),
            Work::Sum { from, to } => Done::Sum((from..to).sum()),
        }
    }
}

fn main() -> Result<(), procpool::Error> {
    procpool::serve_if_worker(Registry::new().task::<Work>());
    let pool = Pool::<Work>::new(2)?;
    let jobs = vec![
        Work::Square(12),
        Work::Words("one process per worker, many kinds of work".into()),
        Work::Sum { from: 1, to: 101 },
    ];
    for (i, done) in pool.map(jobs)?.into_iter().enumerate() {
        println!("job {i}: {done:?}");
    }
    Ok(())
}
