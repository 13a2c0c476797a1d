//! Running the binary under a watchdog, and scratch files.

use std::io::{BufRead, BufReader, Read};
use std::path::PathBuf;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

/// What one run printed and how it ended.
#[derive(Debug)]
pub struct Run {
    pub code: Option<i32>,
    pub stdout: String,
    pub stderr: String,
}

impl Run {
    /// Asserts a refusal: exit code 2, every needle in stderr, nothing on stdout.
    pub fn assert_refused(&self, needles: &[&str]) {
        assert_eq!(self.code, Some(2), "{}", self.stderr);
        assert_contains_all(&self.stderr, needles, "stderr");
        assert!(self.stdout.is_empty(), "stdout: {}", self.stdout);
    }
}

/// Asserts that `text` (named `what` in the failure message) contains every needle.
pub fn assert_contains_all(text: &str, needles: &[&str], what: &str) {
    for needle in needles {
        assert!(text.contains(needle), "{what} lacks {needle:?}:\n{text}");
    }
}

/// The binary under test.
pub fn coordinator() -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_coordinator"));
    cmd.env_remove("RUST_LOG");
    cmd
}

/// Runs `coordinator args..`, killing it (and failing) if it takes longer than `limit`.
pub fn run_with(args: &[&str], limit: Duration) -> Run {
    run_env(args, &[], limit)
}

/// Like [`run_with`], with `env` added to the environment.
pub fn run_env(args: &[&str], env: &[(&str, &str)], limit: Duration) -> Run {
    let mut cmd = coordinator();
    cmd.args(args).envs(env.iter().copied());
    run_command(cmd, args, limit)
}

/// Runs a prepared command (the coordinator, or `mpirun` around it) with stdin closed and
/// both outputs collected, killing it (and failing) if it takes longer than `limit`;
/// `label` names it in that failure.
pub fn run_command(mut cmd: Command, label: &[&str], limit: Duration) -> Run {
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start the command");
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
    let status = watch(&mut child, label, limit);
    Run {
        code: status.code(),
        stdout: reader.join().expect("stdout reader"),
        stderr: err_reader.join().expect("stderr reader"),
    }
}

/// Waits for `child`, killing it (and failing) after `limit`: the watchdog of every test.
pub fn watch(child: &mut Child, args: &[&str], limit: Duration) -> ExitStatus {
    let start = Instant::now();
    loop {
        if let Some(status) = child.try_wait().expect("wait") {
            return status;
        }
        if start.elapsed() > limit {
            let _ = child.kill();
            let _ = child.wait();
            panic!("coordinator {args:?} did not finish within {limit:?}");
        }
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// Runs `coordinator args..` into a pipe whose reader reads `lines` lines and then closes
/// it, as `coordinator args.. | head -<lines>` does (0: closed at once, as `| true`).
/// Returns what those lines were, the exit code and stderr.
pub fn run_into_closing_pipe(args: &[&str], lines: usize) -> Run {
    let mut child = coordinator()
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start coordinator");
    let out = child.stdout.take().expect("stdout");
    let mut err = child.stderr.take().expect("stderr");
    let reader = std::thread::spawn(move || {
        let mut head = String::new();
        let mut out = BufReader::new(out);
        for _ in 0..lines {
            let mut line = String::new();
            if out.read_line(&mut line).unwrap_or(0) == 0 {
                break;
            }
            head.push_str(&line);
        }
        // Dropping the reader closes the pipe: the next write gets EPIPE.
        head
    });
    let err_reader = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = err.read_to_string(&mut s);
        s
    });
    let status = watch(&mut child, args, Duration::from_secs(120));
    Run {
        code: status.code(),
        stdout: reader.join().expect("stdout reader"),
        stderr: err_reader.join().expect("stderr reader"),
    }
}

/// Runs `coordinator args..` with its stderr on a pseudo-terminal (what a user at a
/// terminal sees) and stdout piped; returns the exit code, stdout, and every byte the
/// terminal received.
pub fn run_on_terminal(args: &[&str], env: &[(&str, &str)]) -> (Option<i32>, String, Vec<u8>) {
    use std::os::fd::{FromRawFd, OwnedFd};
    let (mut master, mut slave) = (-1, -1);
    let size = libc::winsize {
        ws_row: 24,
        ws_col: 100,
        ws_xpixel: 0,
        ws_ypixel: 0,
    };
    // SAFETY: openpty writes two descriptors into the pointers we pass; name and termios
    // may be null; the window size outlives the call.
    let rc = unsafe {
        libc::openpty(
            &mut master,
            &mut slave,
            std::ptr::null_mut(),
            std::ptr::null(),
            &size,
        )
    };
    assert_eq!(rc, 0, "openpty: {}", std::io::Error::last_os_error());
    // SAFETY: both descriptors were just opened by openpty and are owned by nobody else.
    let (master, slave) = unsafe { (OwnedFd::from_raw_fd(master), OwnedFd::from_raw_fd(slave)) };
    let mut cmd = coordinator();
    cmd.args(args)
        .envs(env.iter().copied())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::from(slave));
    let mut child = cmd.spawn().expect("start coordinator");
    // The command holds our copy of the terminal's slave side: drop it, so that reading
    // ends when the child (and anything it started) closes its copy.
    drop(cmd);
    let mut out = child.stdout.take().expect("stdout");
    let mut terminal = std::fs::File::from(master);
    let term_reader = std::thread::spawn(move || {
        let mut bytes = Vec::new();
        // Linux reports EIO once the slave side is closed: that is the end here.
        let _ = terminal.read_to_end(&mut bytes);
        bytes
    });
    let reader = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = out.read_to_string(&mut s);
        s
    });
    let status = watch(&mut child, args, Duration::from_secs(120));
    (
        status.code(),
        reader.join().expect("stdout reader"),
        term_reader.join().expect("terminal reader"),
    )
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

/// The LSCV scores of a JSON report, as exact bits (`None` for a missing score).
pub fn lscv_bits(report: &serde_json::Value) -> Vec<Option<u64>> {
    report["results"]
        .as_array()
        .expect("results")
        .iter()
        .map(|r| r["lscv"].as_f64().map(f64::to_bits))
        .collect()
}

/// Parses header-first CSV as a strict reader does (`csv.DictReader`, `pandas.read_csv`):
/// the header, then rows that all have its number of fields.
pub fn csv_rows(text: &str) -> (Vec<String>, Vec<Vec<String>>) {
    let mut reader = csv::ReaderBuilder::new()
        .has_headers(true)
        .flexible(false)
        .from_reader(text.as_bytes());
    let header: Vec<String> = reader
        .headers()
        .unwrap_or_else(|e| panic!("no CSV header ({e}):\n{text}"))
        .iter()
        .map(str::to_owned)
        .collect();
    let rows = reader
        .records()
        .map(|r| {
            r.unwrap_or_else(|e| panic!("bad CSV row ({e}):\n{text}"))
                .iter()
                .map(str::to_owned)
                .collect()
        })
        .collect();
    (header, rows)
}

/// A coordinator running in the background: stdout drained on a thread, stderr line by
/// line, so that a test can wait for a line (never for a time) before acting.
pub struct Background {
    pub child: Child,
    args: Vec<String>,
    stdout: Option<std::thread::JoinHandle<String>>,
    lines: std::sync::mpsc::Receiver<String>,
    stderr: String,
}

/// Starts `coordinator args..` with `env` added, in the background.
pub fn spawn(args: &[&str], env: &[(&str, &str)]) -> Background {
    let mut child = coordinator()
        .args(args)
        .envs(env.iter().copied())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start coordinator");
    let mut out = child.stdout.take().expect("stdout");
    let err = child.stderr.take().expect("stderr");
    let stdout = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = out.read_to_string(&mut s);
        s
    });
    let (tx, lines) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(err).lines() {
            let Ok(line) = line else { break };
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    Background {
        child,
        args: args.iter().map(|s| (*s).to_owned()).collect(),
        stdout: Some(stdout),
        lines,
        stderr: String::new(),
    }
}

impl Background {
    /// Waits (at most `limit`, a watchdog) for a stderr line containing `needle`; false if
    /// stderr ended first.
    pub fn wait_for_stderr(&mut self, needle: &str, limit: Duration) -> bool {
        let start = Instant::now();
        loop {
            let left = limit.saturating_sub(start.elapsed());
            match self.lines.recv_timeout(left) {
                Ok(line) => {
                    self.stderr.push_str(&line);
                    self.stderr.push('\n');
                    if line.contains(needle) {
                        return true;
                    }
                }
                Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => return false,
                Err(std::sync::mpsc::RecvTimeoutError::Timeout) => {
                    let _ = self.child.kill();
                    let _ = self.child.wait();
                    panic!(
                        "coordinator {:?}: no stderr line with {needle:?} within {limit:?}; \
                         stderr so far:\n{}",
                        self.args, self.stderr
                    );
                }
            }
        }
    }

    /// Sends `signal` to the coordinator.
    pub fn signal(&self, signal: i32) {
        // SAFETY: kill(2) has no memory effects; the pid is our child, not yet reaped.
        unsafe { libc::kill(self.child.id() as i32, signal) };
    }

    /// Waits for the coordinator under the watchdog (`limit`) and collects its output.
    pub fn finish(mut self, limit: Duration) -> Run {
        let args: Vec<&str> = self.args.iter().map(String::as_str).collect();
        let status = watch(&mut self.child, &args, limit);
        let stdout = self
            .stdout
            .take()
            .map(|h| h.join().expect("stdout reader"))
            .unwrap_or_default();
        while let Ok(line) = self.lines.recv() {
            self.stderr.push_str(&line);
            self.stderr.push('\n');
        }
        Run {
            code: status.code(),
            stdout,
            stderr: std::mem::take(&mut self.stderr),
        }
    }
}

impl Drop for Background {
    fn drop(&mut self) {
        // A test that failed half-way leaves no coordinator behind.
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}
