//! Runs every example binary and checks the line of its output that proves its claim.
//!
//! The examples are built by `cargo test` itself (into `target/<profile>/examples/`, next
//! to this test's `target/<profile>/deps/`); this test does not build them. Each runs
//! under a watchdog: one that runs longer than [`LIMIT`] is killed and fails the test.

use std::io::Read;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// Longest an example may run.
const LIMIT: Duration = Duration::from_secs(60);

/// What an example printed, and how it ended.
struct Run {
    name: &'static str,
    stdout: String,
    stderr: String,
}

impl Run {
    /// Lines of stdout that contain `needle`.
    fn lines_with(&self, needle: &str) -> Vec<&str> {
        self.stdout.lines().filter(|l| l.contains(needle)).collect()
    }

    /// The one stdout line that contains `needle`; panics (failing the test) otherwise.
    fn line(&self, needle: &str) -> &str {
        match self.lines_with(needle).as_slice() {
            [one] => one,
            found => panic!(
                "{}: expected one line containing {needle:?}, found {}\n{}",
                self.name,
                found.len(),
                self.dump()
            ),
        }
    }

    fn dump(&self) -> String {
        format!(
            "--- stdout ---\n{}--- stderr ---\n{}",
            self.stdout, self.stderr
        )
    }

    /// Fails the test with the example's output unless `cond` holds.
    fn check(&self, cond: bool, what: &str) {
        assert!(cond, "{}: {what}\n{}", self.name, self.dump());
    }
}

/// Where `cargo test` put the example binaries: `target/<profile>/examples`.
fn examples_dir() -> PathBuf {
    let exe = std::env::current_exe().expect("current_exe of the test binary");
    // target/<profile>/deps/examples-<hash> -> target/<profile>
    let profile_dir = exe
        .parent()
        .and_then(|deps| deps.parent())
        .expect("the test binary lives in target/<profile>/deps/");
    profile_dir.join("examples")
}

/// Runs example `name` under the watchdog; asserts it exits with status 0.
fn run(name: &'static str) -> Run {
    let path = examples_dir().join(name);
    assert!(
        path.is_file(),
        "example binary {} is missing: run `cargo test -p procpool` (which builds the examples \
         first), not only `cargo test --test examples`",
        path.display()
    );
    let source = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(format!("examples/{name}.rs"));
    let modified = |p: &PathBuf| std::fs::metadata(p).and_then(|m| m.modified()).ok();
    if let (Some(src), Some(bin)) = (modified(&source), modified(&path)) {
        assert!(
            src <= bin,
            "example binary {} is older than {}: run `cargo test -p procpool` (which rebuilds \
             the examples first), not only `cargo test --test examples`",
            path.display(),
            source.display()
        );
    }
    let mut child = Command::new(&path)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("could not start {}: {e}", path.display()));
    let drain = |mut r: Box<dyn Read + Send>| {
        std::thread::spawn(move || {
            let mut s = String::new();
            let _ = r.read_to_string(&mut s);
            s
        })
    };
    let out = drain(Box::new(child.stdout.take().expect("piped stdout")));
    let err = drain(Box::new(child.stderr.take().expect("piped stderr")));
    let started = Instant::now();
    let status = loop {
        match child.try_wait() {
            Ok(Some(status)) => break status,
            Ok(None) if started.elapsed() > LIMIT => {
                let _ = child.kill();
                let _ = child.wait();
                panic!("example {name} ran longer than {LIMIT:?}: killed it (hang?)");
            }
            Ok(None) => std::thread::sleep(Duration::from_millis(20)),
            Err(e) => panic!("could not wait for example {name}: {e}"),
        }
    };
    let r = Run {
        name,
        stdout: out.join().unwrap_or_default(),
        stderr: err.join().unwrap_or_default(),
    };
    r.check(status.success(), &format!("exited with {status}"));
    r
}

/// The double-quoted strings in `line`, in order.
fn quoted(line: &str) -> Vec<&str> {
    line.split('"').skip(1).step_by(2).collect()
}

/// The text of `line` between the first `[` after `after` and the next `]`, as numbers.
fn list_after(line: &str, after: &str) -> Vec<u64> {
    let rest = &line[line.find(after).map_or(0, |i| i + after.len())..];
    let inner = rest
        .split_once('[')
        .and_then(|(_, r)| r.split_once(']'))
        .map_or("", |(l, _)| l);
    inner
        .split(',')
        .filter_map(|s| s.trim().parse().ok())
        .collect()
}

/// The number right after `key` in `line`.
fn number_after(line: &str, key: &str) -> u64 {
    let rest = &line[line.find(key).map_or(line.len(), |i| i + key.len())..];
    let digits: String = rest
        .trim_start()
        .chars()
        .take_while(char::is_ascii_digit)
        .collect();
    digits
        .parse()
        .unwrap_or_else(|_| panic!("no number after {key:?} in {line:?}"))
}

#[test]
fn queue() {
    let r = run("queue");
    r.check(
        r.lines_with("exited with code 0, alive: false").len() == 8,
        "expected 8 children joined with code 0 and not alive",
    );
    // "(alive: true)" right after spawn is likely (each child sleeps 50+ ms) but a
    // timing matter, so it is not asserted.
    r.check(
        r.lines_with("started pid").len() == 8,
        "expected 8 children started",
    );
    for (label, sorted) in [("completion order:", false), ("ordered:", true)] {
        let line = r.line(label);
        let strings = quoted(line);
        r.check(
            strings.len() == 4
                && strings
                    .iter()
                    .all(|s| s.len() == 5 && s.chars().all(|c| c.is_ascii_alphanumeric())),
            &format!("{label} expected 4 alphanumeric strings of length 5"),
        );
        let mut positions = list_after(line, "positions");
        if sorted {
            r.check(positions == [0, 1, 2, 3], "ordered part not sorted by pos");
        }
        positions.sort_unstable();
        r.check(
            positions == [0, 1, 2, 3],
            &format!("{label} positions are not 0..4"),
        );
    }
}

#[test]
fn queue_workers() {
    let r = run("queue_workers");
    r.check(
        r.line("join returned with")
            .contains("with 12 of 12 results in"),
        "join returned before every task_done",
    );
    let counts = list_after(r.line("taken per child:"), "child:");
    r.check(
        counts.len() <= 3 && counts.iter().sum::<u64>() == 12,
        "the children's counts do not add up to 12",
    );
    r.check(
        r.line("each number once:").ends_with("true"),
        "a number was lost or taken twice",
    );
    let collatz = |mut n: u64| {
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
    };
    r.check(
        list_after(r.line("steps:"), "steps:") == (1..=12).map(collatz).collect::<Vec<u64>>(),
        "wrong Collatz steps",
    );
}

#[test]
fn pool_map() {
    let r = run("pool_map");
    let parent = number_after(r.line("parent pid"), "parent pid");
    for backend in ["serial:", "thread:", "process:"] {
        let line = r.line(backend);
        r.check(
            line.contains("apply(cube, 3) = 27") && line.contains("[1, 8, 27, 64, 125, 216]"),
            &format!("{backend} wrong cubes"),
        );
        let pids = list_after(line, "pids");
        r.check(pids.len() == 6, "expected 6 pids");
        let in_parent = pids.iter().all(|&p| p == parent);
        let in_children = pids.iter().all(|&p| p != parent);
        r.check(
            if backend == "process:" {
                in_children
            } else {
                in_parent
            },
            &format!("{backend} jobs ran in the wrong process"),
        );
    }
}

#[test]
fn pool_async() {
    let r = run("pool_async");
    let at_once = r.lines_with("ready() right away:");
    r.check(
        at_once.len() == 2 && at_once.iter().all(|l| l.ends_with("false")),
        "apply_async(300 ms job) or map_async(6 x 50 ms) was ready at once",
    );
    r.check(
        r.line("wait_timeout(50 ms):").ends_with("false"),
        "wait_timeout(50 ms) on a 300 ms job said ready",
    );
    r.check(
        r.line("after wait()").ends_with("ready() = true"),
        "not ready after wait()",
    );
    r.check(r.line("get() = 343").contains("pid"), "apply_async result");
    r.check(
        r.line("six apply_async").contains("[(1, ") && r.line("six apply_async").contains("(216, "),
        "six apply_async results",
    );
    r.check(
        r.line("of other work here").ends_with("ready() = true"),
        "map_async made no progress in the background",
    );
    r.check(
        r.line("  get() = [").ends_with("[1, 8, 27, 64, 125, 216]"),
        "map_async results out of order",
    );
    r.check(
        r.line("get_timeout(100 ms)").contains("timed out"),
        "get_timeout did not time out",
    );
}

#[test]
fn imap() {
    let r = run("imap");
    r.check(
        r.line("take(10) =")
            .ends_with("[1, 4, 9, 16, 25, 36, 49, 64, 81, 100]"),
        "imap results not the first ten squares in order",
    );
    let line = r.line("pulled ");
    let (pulled, k, window) = (
        number_after(line, "pulled"),
        number_after(line, "k ="),
        number_after(line, "window ="),
    );
    r.check(
        k == 10 && pulled >= k && pulled <= k + window,
        &format!("pulled {pulled} inputs for k = {k}, window {window}: not within k..=k+window"),
    );
    let tagged = r.lines_with(" from pid ");
    let mut positions: Vec<u64> = tagged.iter().map(|l| number_after(l, "pos")).collect();
    positions.sort_unstable();
    r.check(
        positions == [0, 1, 2, 3],
        "imap_unordered did not yield each position once",
    );
}

#[test]
fn worker_state() {
    let r = run("worker_state");
    let squares = list_after(r.line("squares from the workers' own tables:"), "tables:");
    r.check(
        squares == (0..20).map(|x| x * x).collect::<Vec<u64>>(),
        "the workers' tables gave wrong squares",
    );
    let workers = number_after(r.line("20 jobs, at most 4 per worker"), "ran in");
    r.check(
        workers >= 5,
        "20 jobs at 4 per worker need 5 workers at least",
    );
    r.check(
        r.line("callbacks got:")
            .ends_with("[(3, 9), (5, 25), (7, 49)]"),
        "a callback is missing or wrong",
    );
}

#[test]
fn several_tasks() {
    let r = run("several_tasks");
    r.check(
        r.line("job 0:").ends_with("Square(144)"),
        "the square is wrong",
    );
    r.check(
        r.line("job 1:").ends_with("Words(8)"),
        "the word count is wrong",
    );
    r.check(r.line("job 2:").ends_with("Sum(5050)"), "the sum is wrong");
}

#[test]
fn context() {
    let r = run("context");
    let build = number_after(r.line("bytes_sent after build:"), "build:");
    r.check(
        build < 10_000,
        "the 8 MB context went down the sockets instead of shared memory",
    );
    let shared = number_after(r.line("context_shared_bytes:"), "bytes:");
    r.check(
        (8_000_000..8_100_000).contains(&shared),
        "the context is not held once in shared memory",
    );
    r.check(
        r.line("SharedSlice context:")
            .ends_with("shared in worker: true, sums identical: true"),
        "a SharedSlice context was copied, or its sums differ",
    );
    let line = r.line("bytes_sent for 200 jobs:");
    r.check(
        line.ends_with("sums identical to the parent's: true)"),
        "sums differ from the parent's",
    );
    r.check(
        number_after(line, "jobs:") < 100_000,
        "200 jobs cost more than 100 KB: is the context re-sent per job?",
    );
    r.check(
        r.lines_with("all sums 8: true").len() == 2,
        "tiny jobs gave wrong sums",
    );
    let choice = r.line("chunk_choice: chunksize");
    r.check(
        number_after(choice, "chunksize") > 1 && choice.contains("median"),
        "Chunk::Auto chose no chunking, or gave no measured reason",
    );
}

#[test]
fn lifecycle() {
    let r = run("lifecycle");
    r.check(r.lines_with(" gone").len() == 7, "expected 7 workers gone");
    r.check(
        r.lines_with("still in /proc").is_empty(),
        "a worker outlived join, drop or terminate",
    );
    r.check(
        r.lines_with("JobError::Terminated").len() == 4,
        "expected the 4 running jobs to fail with Terminated",
    );
    r.check(
        r.lines_with("apply(): the pool is closed").len() == 2,
        "close/terminate did not refuse new work",
    );
    r.check(
        r.line("join() returned").contains("ran on pids"),
        "work submitted before close did not complete",
    );
}

#[test]
fn faults() {
    let r = run("faults");
    r.check(
        r.line("Panicked:").contains("input 3 is cursed"),
        "panic message missing",
    );
    let died = r.lines_with("WorkerDied:");
    r.check(
        died.len() == 2
            && died.iter().all(|l| l.contains("SIGABRT (6)"))
            && (died[0].contains("(started 3 times)") || died[0].contains("(started 4 times)"))
            && died[1].contains("(started 1 time)"),
        "expected SIGABRT after 3 charged runs, then after 1 with retries(0)",
    );
    r.check(
        r.lines_with("aborting on input 3").len() == 2,
        "stderr tail missing from WorkerDied",
    );
    r.check(
        r.lines_with("5 of 6 ok").len() == 3,
        "a fault took other jobs down",
    );
    r.check(
        r.line("TimedOut:").contains("worker pid"),
        "job_timeout did not fire",
    );
}

#[test]
fn journal() {
    let r = run("journal");
    r.check(
        number_after(r.line("first run:"), "recorded") == 7,
        "the first run did not record 7 results",
    );
    let refused = r.line("resume with another seed:");
    r.check(
        refused.contains("header field \"seed\": the journal has \"7\", this run has \"8\""),
        "the wrong seed was not refused by name with both values",
    );
    r.check(
        number_after(r.line("resumed:"), "resumed:") == 6,
        "the resume did not recover the 6 intact results",
    );
    r.check(
        number_after(r.line("torn last record dropped:"), "dropped:") > 0,
        "the cut-short record was not reported",
    );
    r.check(
        list_after(r.line("ran the missing positions"), "positions") == (6..16).collect::<Vec<_>>(),
        "the resume did not run exactly positions 6..16",
    );
    r.check(
        r.line("identical to an uninterrupted run:")
            .ends_with("true"),
        "the resumed outputs differ from an uninterrupted run's",
    );
    r.check(
        r.line("complete journal:")
            .contains(" 0 missing, 16 recovered"),
        "the complete journal still had missing positions",
    );
}
