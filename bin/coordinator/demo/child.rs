//! Running this same program again as a child process, under a watchdog, for the demos that
//! must watch something from the outside: a crash that takes a whole process down
//! (`crash`), or the log lines a pool's workers write to their parent's stderr (`cost`).
//!
//! The child gets the same arguments and one extra environment variable naming its role;
//! the demo checks for it first thing and plays that role instead.

use std::ffi::OsString;
use std::io::{self, Read};
use std::process::{Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

/// Set in a demo's child process: the role it is to play.
pub const ROLE_ENV: &str = "COORDINATOR_DEMO_CHILD";

/// The role this process was started to play, if it is a demo's child.
pub fn role() -> Option<String> {
    std::env::var(ROLE_ENV).ok()
}

/// How a child ended and what it printed.
#[derive(Debug)]
pub struct Finished {
    /// Its process id.
    pub pid: u32,
    /// How it ended.
    pub status: ExitStatus,
    /// Everything it wrote to stdout.
    pub stdout: String,
    /// Everything it wrote to stderr.
    pub stderr: String,
}

/// Runs this program again with the same arguments as `role`, with `env` added, and waits
/// for it (killing it after `limit`, which is then an error).
pub fn rerun(role: &str, env: &[(&str, &str)], limit: Duration) -> io::Result<Finished> {
    let exe = std::env::current_exe()?;
    let args: Vec<OsString> = std::env::args_os().skip(1).collect();
    let mut cmd = Command::new(exe);
    cmd.args(args)
        .env(ROLE_ENV, role)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    for (key, value) in env {
        cmd.env(key, value);
    }
    let mut child = cmd.spawn()?;
    let pid = child.id();
    let drain = |pipe: Option<Box<dyn Read + Send>>| {
        std::thread::spawn(move || {
            let mut text = String::new();
            if let Some(mut pipe) = pipe {
                let mut bytes = Vec::new();
                let _ = pipe.read_to_end(&mut bytes);
                text = String::from_utf8_lossy(&bytes).into_owned();
            }
            text
        })
    };
    let stdout = drain(
        child
            .stdout
            .take()
            .map(|p| Box::new(p) as Box<dyn Read + Send>),
    );
    let stderr = drain(
        child
            .stderr
            .take()
            .map(|p| Box::new(p) as Box<dyn Read + Send>),
    );
    let started = Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait()? {
            break status;
        }
        if started.elapsed() > limit {
            let _ = child.kill();
            let _ = child.wait();
            return Err(io::Error::new(
                io::ErrorKind::TimedOut,
                format!("child pid {pid} ({role}) did not finish within {limit:?}; killed it"),
            ));
        }
        std::thread::sleep(Duration::from_millis(5));
    };
    Ok(Finished {
        pid,
        status,
        stdout: stdout.join().unwrap_or_default(),
        stderr: stderr.join().unwrap_or_default(),
    })
}
