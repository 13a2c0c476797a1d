//! Running the binary under a watchdog, and scratch files.

use std::io::Read;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// What one run printed and how it ended.
#[derive(Debug)]
pub struct Run {
    pub code: Option<i32>,
    pub stdout: String,
    pub stderr: String,
}

/// The binary under test.
pub fn coordinator() -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_coordinator"));
    cmd.env_remove("RUST_LOG");
    cmd
}

/// Runs `coordinator args..`, killing it (and failing) if it takes longer than `limit`.
pub fn run_with(args: &[&str], limit: Duration) -> Run {
    let mut child = coordinator()
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start coordinator");
    let mut out = child.stdout.take().expect("stdout");
    let mut err = child.stderr.take().expect("stderr");
    let reader = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = out.read_to_string(&mut s);
        s
    });
    let err_reader = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = err.read_to_string(&mut s);
        s
    });
    let start = Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait().expect("wait") {
            break status;
        }
        if start.elapsed() > limit {
            let _ = child.kill();
            let _ = child.wait();
            panic!("coordinator {args:?} did not finish within {limit:?}");
        }
        std::thread::sleep(Duration::from_millis(5));
    };
    Run {
        code: status.code(),
        stdout: reader.join().expect("stdout reader"),
        stderr: err_reader.join().expect("stderr reader"),
    }
}

/// Runs with a generous limit (a hang guard, not a speed claim).
pub fn run(args: &[&str]) -> Run {
    run_with(args, Duration::from_secs(60))
}

/// A fresh scratch directory for one test.
pub fn scratch(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!(
        "coordinator-test-{}-{name}-{}",
        std::process::id(),
        rand::random::<u32>()
    ));
    std::fs::create_dir_all(&dir).expect("scratch dir");
    dir
}

/// Parses `--format json` output.
pub fn json(run: &Run) -> serde_json::Value {
    assert_eq!(run.code, Some(0), "stderr: {}", run.stderr);
    serde_json::from_str(&run.stdout).unwrap_or_else(|e| panic!("bad json ({e}): {}", run.stdout))
}

/// The densities of a JSON report, as exact bits.
pub fn density_bits(report: &serde_json::Value) -> Vec<u64> {
    report["results"]
        .as_array()
        .expect("results")
        .iter()
        .map(|r| r["density"].as_f64().expect("density").to_bits())
        .collect()
}
