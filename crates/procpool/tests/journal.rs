//! The journal against real crashes and hostile files: a child process appending records
//! is SIGKILLed at random points, and what it leaves must resume as a prefix of what it
//! appended, with every acknowledged record present and nothing corrupt; a pool's outputs
//! fed through `Journal::record` resume to the bits of an uninterrupted run; no damaged
//! or forged file makes reading panic or allocate beyond what its size justifies.
//!
//! A custom harness (libtest-mimic), because this binary is also the appending child and
//! a pool worker: `main` checks for both roles before anything else. Every test runs under
//! a watchdog, and so does every child: a hang is a failure, never a stuck CI job.

use libtest_mimic::{Arguments, Failed};
use procpool::journal::{Header, Journal, JournalError, JournalOptions};
use procpool::{Backend, Chunk, Pool, Registry, Task};
use proptest::prelude::*;
use proptest::test_runner::{Config, TestRunner};
use rand::{RngExt, SeedableRng};
use serde::{Deserialize, Serialize};
use std::io::{BufRead, BufReader, Write};
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

mod common;
mod counting;
use common::{check, watchdog};
use counting::largest_allocation;

/// Set (to a journal path) in the appending child.
const CHILD_ENV: &str = "PROCPOOL_JOURNAL_TEST_CHILD";
/// How many records the child appends if nobody kills it.
const CHILD_RECORDS: u64 = 10_000;
/// Longest the parent waits for one line from the child.
const CHILD_LIMIT: Duration = Duration::from_secs(60);

// ----- the largest allocation, counted ------------------------------------------------------

// ----- shared pieces ------------------------------------------------------------------------

/// A scratch directory, removed when dropped.
struct Scratch(PathBuf);

impl Scratch {
    fn new(name: &str) -> Scratch {
        let dir = std::env::temp_dir().join(format!(
            "procpool-journal-it-{}-{name}-{}",
            std::process::id(),
            rand::random::<u32>()
        ));
        std::fs::create_dir_all(&dir).expect("scratch dir");
        Scratch(dir)
    }

    fn file(&self, name: &str) -> PathBuf {
        self.0.join(name)
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn header() -> Header {
    Header::new()
        .text("tool", "journal-test")
        .text("records", CHILD_RECORDS.to_string())
}

/// The child's output for `pos`: every fifth one large (so a kill can land inside its
/// write), the others a few bytes.
fn payload(pos: u64) -> Vec<u8> {
    let len = if pos.is_multiple_of(5) {
        128 << 10
    } else {
        (pos % 97) as usize
    };
    (0..len).map(|i| (i as u64 ^ pos) as u8).collect()
}

// ----- the appending child ------------------------------------------------------------------

/// Appends records to the journal at `path`, printing each position once its append has
/// returned, syncing as often as it can; the parent kills it somewhere along the way.
fn child(path: &Path) -> i32 {
    let result = (|| -> Result<(), Box<dyn std::error::Error>> {
        let mut journal = JournalOptions::new()
            .sync_interval(Duration::ZERO)
            .create(path, &header())?;
        let mut out = std::io::stdout().lock();
        for pos in 0..CHILD_RECORDS {
            journal.append(pos, &payload(pos))?;
            writeln!(out, "{pos}")?;
            out.flush()?;
        }
        journal.finish()?;
        Ok(())
    })();
    match result {
        Ok(()) => 0,
        Err(e) => {
            eprintln!("journal child: {e}");
            1
        }
    }
}

fn sigkill_while_appending_leaves_a_resumable_prefix() -> Result<(), Failed> {
    let dir = Scratch::new("crash");
    let exe = std::env::current_exe()?;
    let mut torn_seen = 0;
    for seed in 0..8u64 {
        let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
        let path = dir.file(&format!("seed-{seed}"));
        let mut child = Command::new(&exe)
            .env(CHILD_ENV, &path)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()?;
        let stdout = child.stdout.take().ok_or("no child stdout")?;
        let (tx, rx) = mpsc::channel::<u64>();
        let reader = std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(pos) = line.map_err(|_| ()).and_then(|l| l.parse().map_err(|_| ())) else {
                    break;
                };
                if tx.send(pos).is_err() {
                    break;
                }
            }
        });
        // Kill after a random number of acknowledged appends, plus a random spin so the
        // signal lands at any point of the next ones.
        let kill_after = rng.random_range(1..150u64);
        let mut acked = 0;
        while acked < kill_after {
            match rx.recv_timeout(CHILD_LIMIT) {
                Ok(_) => acked += 1,
                Err(_) => {
                    let _ = child.kill();
                    let _ = child.wait();
                    let mut err = String::new();
                    if let Some(mut e) = child.stderr.take() {
                        let _ = std::io::Read::read_to_string(&mut e, &mut err);
                    }
                    return Err(format!(
                        "seed {seed}: child stopped acknowledging after {acked} records: {err}"
                    )
                    .into());
                }
            }
        }
        // While the child runs, its journal is its alone: another process can neither
        // resume it nor overwrite it (the records checked below prove nothing was cut).
        let refused = |r: Result<Journal, JournalError>, what: &str| match r {
            Err(JournalError::InUse { .. }) => Ok(()),
            Err(e) => Err(format!("seed {seed}: {what}: expected InUse, got {e}")),
            Ok(_) => Err(format!(
                "seed {seed}: {what} got the running child's journal"
            )),
        };
        refused(Journal::resume(&path, &header()).map(|(j, _)| j), "resume")?;
        refused(
            JournalOptions::new()
                .overwrite(true)
                .create(&path, &header()),
            "overwrite",
        )?;
        for _ in 0..rng.random_range(0..200_000u32) {
            std::hint::spin_loop();
        }
        child.kill()?;
        let status = child.wait()?;
        check(status.signal() == Some(libc::SIGKILL), || {
            format!("seed {seed}: the child was not killed by SIGKILL but {status}")
        })?;
        reader.join().map_err(|_| "stdout reader panicked")?;
        acked += rx.try_iter().count() as u64;

        let (_, rec) = Journal::read(&path)?;
        let n = rec.len() as u64;
        check(rec.positions().eq(0..n), || {
            format!("seed {seed}: recovered positions are not a prefix 0..{n}")
        })?;
        check(n >= acked, || {
            format!("seed {seed}: {acked} appends returned, but only {n} records survived")
        })?;
        for pos in 0..n {
            check(rec.get::<Vec<u8>>(pos)? == Some(payload(pos)), || {
                format!("seed {seed}: the output of position {pos} differs")
            })?;
        }
        torn_seen += usize::from(rec.torn_tail().is_some());

        // Resume, finish a few more, and the journal is whole again.
        let (mut journal, rec) = Journal::resume(&path, &header())?;
        check(rec.len() as u64 == n, || {
            format!("seed {seed}: resume saw another count")
        })?;
        let target = n + 3;
        for pos in rec.missing(target) {
            journal.append(pos, &payload(pos))?;
        }
        journal.finish()?;
        let (_, rec) = Journal::read(&path)?;
        check(
            rec.torn_tail().is_none() && rec.positions().eq(0..target),
            || format!("seed {seed}: after resuming, the journal is not 0..{target}"),
        )?;
        std::fs::remove_file(&path)?;
    }
    eprintln!("sigkill test: {torn_seen} of 8 kills left a torn last record");
    Ok(())
}

// ----- a pool feeding a journal -------------------------------------------------------------

/// A deterministic float computation whose bits are worth comparing.
#[derive(Serialize, Deserialize)]
struct Wiggle(u64);

impl Task for Wiggle {
    const NAME: &'static str = "wiggle";
    type Context = ();
    type Output = (u64, f64);
    fn run(self, _: &()) -> (u64, f64) {
        let x = (1..=200).fold(self.0 as f64, |acc, k| (acc * 1.000_1 + k as f64).sin());
        (self.0, x)
    }
}

fn pool_outputs_survive_a_resume_bit_for_bit() -> Result<(), Failed> {
    let n = 24u64;
    let pool = Pool::<Wiggle>::builder()
        .backend(Backend::Process)
        .workers(2)
        .chunksize(Chunk::Fixed(1))
        .forward_worker_output(false)
        .build()?;
    let reference = pool.map((0..n).map(Wiggle))?;

    let dir = Scratch::new("pool");
    let path = dir.file("j");
    let head = Header::new()
        .text("task", Wiggle::NAME)
        .text("n", n.to_string());
    // A first run that dies after 9 results (the rest of its input is withdrawn).
    let mut journal = Journal::create(&path, &head)?;
    let todo: Vec<u64> = (0..n).collect();
    let outputs = pool.imap(todo.iter().map(|&p| Wiggle(p)));
    for item in journal.record(todo.iter().copied().zip(outputs)).take(9) {
        let (_, result) = item?;
        result?;
    }
    drop(journal);

    // The resumed run: only the missing positions, results as they finish.
    let (mut journal, rec) = Journal::resume(&path, &head)?;
    check(rec.len() == 9, || {
        format!("recovered {} results, not 9", rec.len())
    })?;
    let mut all = rec.decode_all::<(u64, f64)>()?;
    let todo: Vec<u64> = rec.missing(n).collect();
    let tagged = pool
        .imap_unordered(todo.iter().map(|&p| Wiggle(p)))
        .map(|t| (todo[t.pos as usize], t.result));
    for item in journal.record(tagged) {
        let (pos, result) = item?;
        all.insert(pos, result?);
    }
    journal.finish()?;
    let resumed: Vec<(u64, f64)> = all.into_values().collect();
    let bits = |v: &[(u64, f64)]| v.iter().map(|(p, x)| (*p, x.to_bits())).collect::<Vec<_>>();
    check(bits(&resumed) == bits(&reference), || {
        "the resumed run's outputs differ from the uninterrupted run's".to_owned()
    })?;
    // Complete now: a further resume has nothing to run.
    let (_, rec) = Journal::resume(&path, &head)?;
    check(rec.missing(n).next().is_none(), || {
        "a complete journal still has missing positions".to_owned()
    })
}

// ----- hostile files ------------------------------------------------------------------------

/// A small valid journal to damage, and where each of its records starts (the last
/// entry is its end).
fn sample_journal(dir: &Scratch) -> Result<(Vec<u8>, Vec<usize>), Failed> {
    let path = dir.file("sample");
    let mut journal = Journal::create(&path, &header())?;
    let mut starts = vec![std::fs::metadata(&path)?.len() as usize];
    for pos in 0..6 {
        journal.append(pos, &payload(pos + 1))?;
        starts.push(std::fs::metadata(&path)?.len() as usize);
    }
    journal.finish()?;
    Ok((std::fs::read(&path)?, starts))
}

/// What reading a file of `len` bytes may allocate at once: the file's size, or the
/// fixed read buffers and the codec's cautious 1 MiB for a header that claims a
/// long sequence.
fn allowed(len: usize) -> usize {
    len.max(1 << 20) + (1 << 17)
}

fn damaged_files_never_panic_or_overallocate() -> Result<(), Failed> {
    let dir = Scratch::new("hostile");
    let (sample, starts) = sample_journal(&dir)?;
    let path = dir.file("damaged");
    let mut runner = TestRunner::new(Config {
        cases: 512,
        failure_persistence: None,
        ..Config::default()
    });
    let edits = prop::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 0..4);
    let strategy = (
        edits,
        any::<prop::sample::Index>(),
        prop::option::of((any::<prop::sample::Index>(), any::<u32>(), 0..64usize)),
    );
    runner
        .run(&strategy, |(edits, cut, forge)| {
            let mut bytes = sample.clone();
            for (at, value) in edits {
                let i = at.index(bytes.len());
                bytes[i] = value;
            }
            match forge {
                // At a record boundary, a record header with a valid checksum claiming
                // `claim` bytes, followed by `extra` bytes.
                Some((at, claim, extra)) => {
                    bytes.truncate(starts[at.index(starts.len())]);
                    let mut head = claim.to_le_bytes().to_vec();
                    head.extend_from_slice(&7u64.to_le_bytes());
                    let crc = crc32_reference(&head);
                    head.extend_from_slice(&crc.to_le_bytes());
                    bytes.extend_from_slice(&head);
                    bytes.extend((0..extra).map(|i| i as u8));
                }
                None => bytes.truncate(cut.index(bytes.len() + 1)),
            }
            std::fs::write(&path, &bytes).map_err(|e| TestCaseError::fail(e.to_string()))?;
            let (result, largest) = largest_allocation(|| {
                std::panic::catch_unwind(|| Journal::read(&path).map(|(_, rec)| rec.len()))
            });
            prop_assert!(result.is_ok(), "reading panicked");
            prop_assert!(
                largest <= allowed(bytes.len()),
                "a {}-byte file made reading allocate {largest} bytes at once",
                bytes.len()
            );
            Ok(())
        })
        .map_err(|e| Failed::from(e.to_string()))
}

/// CRC-32 (IEEE), bit by bit: an independent reference for the documented format
/// (crc32fast is the library's dependency, not this test's).
fn crc32_reference(bytes: &[u8]) -> u32 {
    let mut crc = !0u32;
    for &b in bytes {
        crc ^= u32::from(b);
        for _ in 0..8 {
            crc = if crc & 1 == 1 {
                (crc >> 1) ^ 0xedb8_8320
            } else {
                crc >> 1
            };
        }
    }
    !crc
}

fn forged_record_header_is_read_as_the_format_says() -> Result<(), Failed> {
    // The reference CRC above agrees with the library: a record forged with it is read.
    let dir = Scratch::new("forge");
    let (mut bytes, _) = sample_journal(&dir)?;
    let body = 42u64.to_le_bytes(); // a u64 output, encoded
    let mut record = (body.len() as u32).to_le_bytes().to_vec();
    record.extend_from_slice(&99u64.to_le_bytes());
    let head_crc = crc32_reference(&record);
    record.extend_from_slice(&head_crc.to_le_bytes());
    record.extend_from_slice(&body);
    let crc = crc32_reference(&record);
    record.extend_from_slice(&crc.to_le_bytes());
    bytes.extend_from_slice(&record);
    let path = dir.file("forged");
    std::fs::write(&path, &bytes)?;
    let (_, rec) = Journal::read(&path)?;
    check(rec.get::<u64>(99)? == Some(42), || {
        "a record written to the documented format was not read back".to_owned()
    })
}

fn main() {
    procpool::serve_if_worker(Registry::new().task::<Wiggle>());
    if let Some(path) = std::env::var_os(CHILD_ENV) {
        std::process::exit(child(Path::new(&path)));
    }
    let args = Arguments::from_args();
    let tests = vec![
        watchdog(
            "sigkill_while_appending_leaves_a_resumable_prefix",
            120,
            sigkill_while_appending_leaves_a_resumable_prefix,
        ),
        watchdog(
            "pool_outputs_survive_a_resume_bit_for_bit",
            60,
            pool_outputs_survive_a_resume_bit_for_bit,
        ),
        watchdog(
            "damaged_files_never_panic_or_overallocate",
            120,
            damaged_files_never_panic_or_overallocate,
        ),
        watchdog(
            "forged_record_header_is_read_as_the_format_says",
            60,
            forged_record_header_is_read_as_the_format_says,
        ),
    ];
    libtest_mimic::run(&args, tests).exit();
}
