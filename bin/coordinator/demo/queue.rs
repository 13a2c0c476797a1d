//! `demo queue`: the seed's first example. Four processes each put a random string on one
//! shared queue; the strings arrive in whatever order the processes finish, which changes
//! from run to run. Then the seed's fix: each process also puts its position, and sorting
//! by it restores the order.
//!
//! Like Python's `mp.Process(target=rand_string, args=(5, pos, output))`, a child is
//! started with a serializable target that carries the queue's sending end.

use procpool::{Process, Queue, QueueSender, Registry, Target, describe_status};
use serde::{Deserialize, Serialize};
use std::hash::{BuildHasher, Hasher, RandomState};
use std::io::{self, Write};
use std::time::Duration;

/// Errors of a demo, boxed: every one ends the demo with its message.
pub type Error = Box<dyn std::error::Error + Send + Sync>;

/// How long the parent waits for any one value on the queue.
const GET_TIMEOUT: Duration = Duration::from_secs(20);

/// The seed's `rand_string(length, pos, output)`.
#[derive(Serialize, Deserialize)]
struct RandString {
    len: usize,
    pos: usize,
    output: QueueSender<(usize, String)>,
}

impl Target for RandString {
    const NAME: &'static str = "demo-queue-rand-string";
    fn run(self) {
        // Real work takes varying time; without this the children would finish in the
        // order they were started (each is started after the previous one is ready).
        std::thread::sleep(Duration::from_millis(random_u64() % 40));
        const CHARS: &[u8] = b"abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789";
        let s: String = (0..self.len)
            .map(|_| char::from(CHARS[(random_u64() % CHARS.len() as u64) as usize]))
            .collect();
        // A failed put shows in the parent as a value that never arrives.
        if let Err(e) = self.output.put(&(self.pos, s)) {
            eprintln!("rand_string {}: {e}", self.pos);
        }
    }
}

/// A random number from the standard library's per-process random hash keys.
fn random_u64() -> u64 {
    let mut h = RandomState::new().build_hasher();
    h.write_u128(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos()),
    );
    h.finish()
}

/// Registers this demo's target.
pub fn register(registry: Registry) -> Registry {
    registry.target::<RandString>()
}

/// One round: four processes, their exits, and the queue's contents in arrival order.
#[derive(Debug, Serialize)]
pub struct Round {
    /// The four children's pids, in the order they were started.
    pub pids: Vec<u32>,
    /// How each ended, after `join()`.
    pub exits: Vec<String>,
    /// `(pos, string)` in the order they arrived on the queue.
    pub arrived: Vec<(usize, String)>,
}

/// What the demo saw.
#[derive(Debug, Serialize)]
pub struct Report {
    /// This process.
    pub parent_pid: u32,
    /// Two rounds read in completion order.
    pub unordered: Vec<Round>,
    /// A third round, sorted by position afterwards.
    pub ordered: Round,
    /// The third round's strings after sorting by position.
    pub sorted: Vec<String>,
    /// The positions after sorting (always 0, 1, 2, 3).
    pub sorted_positions: Vec<usize>,
}

/// Runs four `rand_string` processes on one queue and reads the queue.
fn round() -> Result<Round, Error> {
    let output = Queue::<(usize, String)>::new()?;
    let mut processes = (0..4)
        .map(|pos| {
            Process::spawn(RandString {
                len: 5,
                pos,
                output: output.sender(),
            })
        })
        .collect::<Result<Vec<_>, _>>()?;
    let pids = processes.iter().map(Process::pid).collect();
    // Joining before reading cannot deadlock here: the queue drains children as they write.
    let exits = processes
        .iter_mut()
        .map(|p| p.join().map(describe_status))
        .collect::<Result<Vec<_>, _>>()?;
    let arrived = (0..4)
        .map(|_| output.get_timeout(GET_TIMEOUT))
        .collect::<Result<Vec<_>, _>>()?;
    Ok(Round {
        pids,
        exits,
        arrived,
    })
}

/// Runs the demo.
pub fn run() -> Result<Report, Error> {
    let unordered = vec![round()?, round()?];
    let ordered = round()?;
    let mut sorted = ordered.arrived.clone();
    sorted.sort();
    Ok(Report {
        parent_pid: std::process::id(),
        unordered,
        sorted_positions: sorted.iter().map(|(pos, _)| *pos).collect(),
        sorted: sorted.into_iter().map(|(_, s)| s).collect(),
        ordered,
    })
}

impl Report {
    /// Writes the report for people.
    pub fn write_text(&self, out: &mut dyn Write) -> io::Result<()> {
        writeln!(
            out,
            "Four processes, one queue (parent pid {}). Each child sleeps 0-40 ms, then puts \
             a random 5-character string.",
            self.parent_pid
        )?;
        for (i, r) in self.unordered.iter().enumerate() {
            let strings: Vec<&str> = r.arrived.iter().map(|(_, s)| s.as_str()).collect();
            let from: Vec<usize> = r.arrived.iter().map(|(pos, _)| *pos).collect();
            writeln!(
                out,
                "run {}: pids {:?}, all {}",
                i + 1,
                r.pids,
                summarize(&r.exits)
            )?;
            writeln!(
                out,
                "  results {strings:?}  (in completion order: from processes {from:?})"
            )?;
        }
        writeln!(
            out,
            "The order is whichever process finished first; run the demo again and it changes."
        )?;
        let arrived: Vec<(usize, &str)> = self
            .ordered
            .arrived
            .iter()
            .map(|(p, s)| (*p, s.as_str()))
            .collect();
        writeln!(
            out,
            "with positions: pids {:?}, arrived {arrived:?}",
            self.ordered.pids
        )?;
        writeln!(
            out,
            "  sorted by position {:?}: {:?}",
            self.sorted_positions, self.sorted
        )?;
        writeln!(
            out,
            "Each process puts (pos, string); sorting by pos restores the order of the processes \
             list. Pool.map does this for you."
        )
    }
}

/// "exited with code 0" when all four say so, else each.
fn summarize(exits: &[String]) -> String {
    match exits.first() {
        Some(first) if exits.iter().all(|e| e == first) => first.clone(),
        _ => exits.join(", "),
    }
}
