//! Worker mode: the markers a pool puts in a worker's environment and command line, and
//! the one place that decides whether this process is a worker.
//!
//! A process is a worker only when three things agree: the `PROCPOOL_WORKER` marker, the
//! `__worker` argument right after the program name, and `PROCPOOL_PARENT` naming our
//! actual parent. A stray marker (exported in a shell, inherited by a program a task
//! started) is ignored with a warning, so `--help` and friends still work; a worker whose
//! parent is already gone exits quietly. A worker removes the markers from its own
//! environment before any task runs, so programs its tasks start are ordinary processes
//! (and may themselves start pools).

use std::ffi::OsString;
use std::time::Duration;

/// Set in a worker's environment: its mode (`pool` or `process`).
pub(crate) const WORKER_ENV: &str = "PROCPOOL_WORKER";
/// Set in a worker's environment: the coordinator's pid.
pub(crate) const PARENT_ENV: &str = "PROCPOOL_PARENT";
/// Set in a worker's environment: how long to spin on an empty socket, in microseconds.
pub(crate) const SPIN_ENV: &str = "PROCPOOL_SPIN_US";
/// Set in a worker's environment: its key within its pool (for logs and fault injection).
pub(crate) const KEY_ENV: &str = "PROCPOOL_WORKER_KEY";
/// Read by a worker: a fault to inject on purpose (tests only; see `worker::fault`).
pub(crate) const FAULT_ENV: &str = "PROCPOOL_FAULT";
/// The argument a worker is started with, so `ps` shows what it is.
pub(crate) const WORKER_ARG: &str = "__worker";

/// Exit code of a worker that refused to serve or lost its protocol footing.
pub(crate) const EXIT_PROTOCOL: i32 = 3;
/// Exit code of a worker whose coordinator died.
pub(crate) const EXIT_ORPHANED: i32 = 70;

/// What a worker was told by the pool that started it.
#[derive(Debug, Clone)]
pub(crate) struct WorkerEnv {
    /// `pool` (serve a task) or `process` (run one target).
    pub mode: String,
    /// The coordinator's pid.
    pub parent: u32,
    /// Its key within its pool, if it has one.
    pub key: Option<u32>,
    /// How long to spin on an empty socket before sleeping.
    pub spin: Duration,
    /// A fault to inject (tests only).
    pub fault: Option<String>,
}

/// How this process was started.
#[derive(Debug, Clone)]
pub(crate) enum Mode {
    /// An ordinary process.
    Normal,
    /// A worker, with what it was told.
    Worker(WorkerEnv),
    /// Started as a worker, but its coordinator is already gone.
    Orphaned,
}

/// Decides, from the environment and the command line, what this process is; a stray
/// marker is reported on stderr.
pub(crate) fn detect() -> Mode {
    detect_as(true)
}

/// Like [`detect`], silently.
pub(crate) fn detect_quiet() -> Mode {
    detect_as(false)
}

fn detect_as(warn: bool) -> Mode {
    let Some(marker) = std::env::var_os(WORKER_ENV) else {
        return Mode::Normal;
    };
    let arg_ok = first_argument().as_deref() == Some(WORKER_ARG.as_ref());
    let parent = std::env::var(PARENT_ENV)
        .ok()
        .and_then(|p| p.parse::<u32>().ok());
    let mode = marker.to_str().unwrap_or("");
    if !arg_ok || parent.is_none() || !matches!(mode, "pool" | "process") {
        if !warn {
            return Mode::Normal;
        }
        eprintln!(
            "procpool: ignoring {WORKER_ENV}={} in the environment: this process was not \
             started by a pool (unset it)",
            quote(&marker)
        );
        return Mode::Normal;
    }
    let parent = parent.unwrap_or(0);
    if std::os::unix::process::parent_id() != parent {
        return Mode::Orphaned;
    }
    Mode::Worker(WorkerEnv {
        mode: mode.to_owned(),
        parent,
        key: std::env::var(KEY_ENV).ok().and_then(|k| k.parse().ok()),
        spin: std::env::var(SPIN_ENV)
            .ok()
            .and_then(|s| s.parse::<u64>().ok())
            .map_or(Duration::ZERO, Duration::from_micros),
        fault: std::env::var(FAULT_ENV).ok(),
    })
}

/// The first argument after the program name. Read from `/proc/self/cmdline` when the
/// standard library has not captured the arguments yet (code that runs before `main`, as
/// `test_support!` does).
fn first_argument() -> Option<OsString> {
    let mut args = std::env::args_os();
    if args.next().is_some() {
        return args.next();
    }
    let cmdline = std::fs::read("/proc/self/cmdline").ok()?;
    let arg = cmdline.split(|&b| b == 0).nth(1)?;
    Some(<std::ffi::OsStr as std::os::unix::ffi::OsStrExt>::from_bytes(arg).to_os_string())
}

/// Removes the worker markers from this process's environment, so that programs its tasks
/// start do not inherit them.
///
/// Call only from `serve_if_worker`, first thing in `main`, before any thread of the
/// worker runs.
pub(crate) fn strip_markers() {
    for name in [WORKER_ENV, PARENT_ENV, SPIN_ENV, KEY_ENV, FAULT_ENV] {
        // SAFETY: `serve_if_worker` runs first thing in `main` (its documented contract),
        // before this process starts any thread that could read the environment.
        unsafe { std::env::remove_var(name) };
    }
}

/// The variables and argument a pool sets when it starts a worker of `mode`.
pub(crate) fn worker_command(
    cmd: &mut std::process::Command,
    mode: &str,
    key: Option<u32>,
    spin: Duration,
) {
    cmd.arg(WORKER_ARG)
        .env(WORKER_ENV, mode)
        .env(PARENT_ENV, std::process::id().to_string())
        .env(SPIN_ENV, spin.as_micros().to_string());
    match key {
        Some(key) => cmd.env(KEY_ENV, key.to_string()),
        None => cmd.env_remove(KEY_ENV),
    };
}

/// A value as it can be shown in a message: at most 200 bytes, quoted.
fn quote(value: &std::ffi::OsStr) -> String {
    let text = value.to_string_lossy();
    let mut end = text.len().min(200);
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    let cut = if end < text.len() { "..." } else { "" };
    format!("{:?}{cut}", &text[..end])
}

/// The program name this process was started with, for a worker's `argv[0]`.
pub(crate) fn program_name() -> Option<OsString> {
    std::env::args_os().next()
}
