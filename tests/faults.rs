//! Faults that really happen to a running coordinator: workers SIGKILLed from outside,
//! a job that aborts its worker, hostile frames, a hung job, signals to the coordinator,
//! and the coordinator itself SIGKILLed. Every run is under a watchdog.

use crate::common::{coordinator, density_bits, json, lscv_bits, run, run_env, run_with, spawn};
use std::collections::BTreeSet;
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

/// Live (non-zombie) children of `pid`, from /proc.
pub fn children(pid: u32) -> BTreeSet<u32> {
    let mut out = BTreeSet::new();
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return out;
    };
    for entry in dir.flatten() {
        let Some(child) = entry
            .file_name()
            .to_str()
            .and_then(|s| s.parse::<u32>().ok())
        else {
            continue;
        };
        if let Some((ppid, state)) = stat(child) {
            if ppid == pid && state != 'Z' {
                out.insert(child);
            }
        }
    }
    out
}

/// (parent pid, state) of a process, if it exists.
fn stat(pid: u32) -> Option<(u32, char)> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let rest = &s[s.rfind(')')? + 2..];
    let mut fields = rest.split_whitespace();
    let state = fields.next()?.chars().next()?;
    let ppid = fields.next()?.parse().ok()?;
    Some((ppid, state))
}

/// Whether `pid` is still a running (non-zombie) process.
fn running(pid: u32) -> bool {
    stat(pid).is_some_and(|(_, state)| state != 'Z')
}

/// Sends `sig` to `pid`.
pub fn signal(pid: u32, sig: i32) {
    // SAFETY: kill(2) has no memory effects; the pid is a child we started or its child.
    unsafe { libc::kill(pid as i32, sig) };
}

/// Reads a child's stdout and stderr on threads, so a full pipe never blocks it.
fn drain(child: &mut Child) -> impl FnOnce() -> (String, String) + use<> {
    use std::io::Read;
    let mut out = child.stdout.take().unwrap();
    let mut err = child.stderr.take().unwrap();
    let o = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = out.read_to_string(&mut s);
        s
    });
    let e = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = err.read_to_string(&mut s);
        s
    });
    move || (o.join().unwrap(), e.join().unwrap())
}

/// A sweep that keeps two workers busy for many seconds: cross-validation of 400 widths
/// over 20000 samples (each job scores its width over O(n^2) pairs, tens of milliseconds;
/// a density count alone is a microsecond, over before anything could be killed).
const LONG_RUN: [&str; 10] = [
    "--select",
    "lscv",
    "--samples",
    "2e4",
    "--widths",
    "0.5:1.5:400",
    "-w",
    "2",
    "--chunksize",
    "1",
];

/// Starts a long sweep in the background; returns it once its workers are up (the
/// caller waits for it).
#[allow(clippy::zombie_processes)]
fn start_long_run(extra: &[&str]) -> (Child, BTreeSet<u32>) {
    let mut args = LONG_RUN.to_vec();
    args.extend_from_slice(extra);
    let mut child = coordinator()
        .args(&args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let start = Instant::now();
    loop {
        let kids = children(child.id());
        if kids.len() == 2 {
            // Let the sweep get going.
            std::thread::sleep(Duration::from_millis(300));
            return (child, kids);
        }
        if start.elapsed() > Duration::from_secs(60) {
            let _ = child.kill();
            let _ = child.wait();
            panic!("workers never started");
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// Waits for `child`, killing it (and failing) after `limit`; its status and how long it took.
pub fn wait_within(child: &mut Child, limit: Duration) -> (std::process::ExitStatus, Duration) {
    let start = Instant::now();
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            return (status, start.elapsed());
        }
        if start.elapsed() > limit {
            let _ = child.kill();
            let _ = child.wait();
            panic!("coordinator did not exit within {limit:?}");
        }
        std::thread::sleep(Duration::from_millis(2));
    }
}

#[test]
fn random_sigkills_of_workers_lose_no_result() {
    // Cross-validation, so that each of the 2000 jobs takes about a millisecond and the
    // run lasts long enough to kill workers in the middle of it.
    let args = [
        "--format",
        "json",
        "--select",
        "lscv",
        "--samples",
        "3000",
        "--widths",
        "0.02:1.5:2000",
        "-w",
        "2",
        "--chunksize",
        "1",
        "--retries",
        "10",
    ];
    let mut child = coordinator()
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let output = drain(&mut child);
    let pid = child.id();
    let mut killed = Vec::new();
    let mut first_seen = std::collections::HashMap::new();
    let start = Instant::now();
    while child.try_wait().unwrap().is_none() && start.elapsed() < Duration::from_secs(120) {
        let now = Instant::now();
        // Only workers that have been up a while: busy with jobs, not still starting
        // (workers that keep dying before they are ready make the pool give up, rightly).
        let busy: Vec<u32> = children(pid)
            .into_iter()
            .filter(|k| {
                now.duration_since(*first_seen.entry(*k).or_insert(now))
                    > Duration::from_millis(300)
            })
            .collect();
        if !busy.is_empty() && killed.len() < 4 {
            let victim = busy[rand::random_range(0..busy.len())];
            if running(victim) {
                signal(victim, libc::SIGKILL);
                killed.push(victim);
            }
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let (status, _) = wait_within(&mut child, Duration::from_secs(60));
    let (stdout, stderr) = output();
    assert_eq!(status.code(), Some(0), "{stderr}");
    assert!(
        !killed.is_empty(),
        "the run ended before any worker could be killed"
    );
    assert!(
        stderr.contains("was killed by SIGKILL (9)"),
        "deaths not reported:\n{stderr}"
    );
    let faulty: serde_json::Value = serde_json::from_str(&stdout).unwrap();
    let mut serial_args = args.to_vec();
    serial_args.extend(["--backend", "serial"]);
    let clean = json(&run(&serial_args));
    assert_eq!(
        density_bits(&faulty),
        density_bits(&clean),
        "killed {killed:?}"
    );
    assert_eq!(lscv_bits(&faulty), lscv_bits(&clean), "killed {killed:?}");
    assert_eq!(faulty["selected"], clean["selected"]);
    for pid in killed {
        assert!(!running(pid), "killed worker {pid} still running");
    }
}

#[test]
fn a_job_that_aborts_its_worker_fails_after_its_retries_and_only_it() {
    let args = [
        "--format",
        "json",
        "--widths",
        "0.1:1.2:12",
        "-w",
        "2",
        "--retries",
        "2",
        "--chunksize",
        "1",
    ];
    let out = run_env(
        &args,
        &[("PROCPOOL_FAULT", "abort-on=5")],
        Duration::from_secs(60),
    );
    let stderr = &out.stderr;
    assert_eq!(out.code, Some(1), "{stderr}");
    assert!(
        stderr.contains("1 of 12 jobs failed: pos 5 (h = 0.6)"),
        "{stderr}"
    );
    let v: serde_json::Value = serde_json::from_str(&out.stdout).unwrap();
    let error = v["results"][5]["error"].as_str().unwrap();
    // Charged three crashes; one more run if it first died among other jobs (uncharged).
    assert!(
        error.contains("SIGABRT (6)")
            && (error.contains("started 3 times") || error.contains("started 4 times")),
        "{error}"
    );
    assert!(
        error.contains("fault injection: aborting on job 5"),
        "no stderr tail: {error}"
    );
    assert_eq!(v["failed"], 1);
    // The table says the choice was made among the widths that finished.
    let table = run_env(
        &[
            "--widths",
            "0.1:1.2:12",
            "-w",
            "2",
            "--chunksize",
            "1",
            "-q",
        ],
        &[("PROCPOOL_FAULT", "abort-on=5")],
        Duration::from_secs(60),
    );
    let text = &table.stdout;
    assert_eq!(table.code, Some(1));
    assert!(
        text.contains("(among the 11 of 12 widths that finished)"),
        "{text}"
    );
    let clean = json(&run(&args));
    for (i, (a, b)) in v["results"]
        .as_array()
        .unwrap()
        .iter()
        .zip(clean["results"].as_array().unwrap())
        .enumerate()
    {
        if i != 5 {
            assert_eq!(a["density"], b["density"], "pos {i}");
        }
    }
}

#[test]
fn hostile_frames_are_protocol_errors_and_the_worker_is_replaced() {
    let args = [
        "--format",
        "json",
        "--widths",
        "0.1:1.2:12",
        "-w",
        "2",
        "--chunksize",
        "1",
    ];
    let clean = json(&run(&args));
    // Every worker misbehaves (replacements too), whichever becomes ready first. A worker
    // that breaks the protocol is killed with the job it holds, and that job is charged a
    // crash (the pool cannot tell a job that scribbled on its worker's socket from an
    // innocent one); by bad luck the same job can be held by several breaking workers in a
    // row (it failed once in a busy hour with the default 2 retries), so the runs allow
    // more retries: this test is about the frames, not about blame.
    let faulty = [&args[..], &["--retries", "20"]].concat();
    for (fault, needle) in [
        ("garbage-after=2", "undecodable message"),
        ("oversize-after=1", "over the limit"),
        ("truncate-after=3", "middle of a frame"),
    ] {
        let out = run_env(
            &faulty,
            &[("PROCPOOL_FAULT", fault)],
            Duration::from_secs(60),
        );
        let stderr = &out.stderr;
        assert_eq!(out.code, Some(0), "{fault}: {stderr}");
        assert!(
            stderr.contains(needle),
            "{fault}: no {needle:?} in\n{stderr}"
        );
        assert!(
            stderr.contains("worker pid"),
            "{fault}: worker not named:\n{stderr}"
        );
        let v: serde_json::Value = serde_json::from_str(&out.stdout).unwrap();
        assert_eq!(density_bits(&v), density_bits(&clean), "{fault}");
    }
}

#[test]
fn a_worker_of_another_protocol_version_is_refused_at_the_handshake() {
    let out = run_env(
        &["-w", "2"],
        &[("PROCPOOL_FAULT", "version=99")],
        Duration::from_secs(60),
    );
    let stderr = &out.stderr;
    assert_eq!(out.code, Some(1), "{stderr}");
    assert!(stderr.contains("speaks protocol version 99"), "{stderr}");
    assert!(out.stdout.is_empty());
}

#[test]
fn a_hung_job_times_out_and_the_rest_completes() {
    let out = run_with(
        &[
            "--format",
            "json",
            "--widths",
            "0.1:1.2:12",
            "-w",
            "2",
            "--chunksize",
            "1",
            "--job-timeout",
            "0.5",
        ],
        Duration::from_secs(60),
    );
    assert_eq!(out.code, Some(0), "{}", out.stderr);
    // Under a watchdog: a job timeout that did not fire would otherwise hang the test.
    let hung = run_env(
        &[
            "--format",
            "json",
            "--widths",
            "0.1:1.2:12",
            "-w",
            "2",
            "--chunksize",
            "1",
            "--job-timeout",
            "0.5",
        ],
        &[("PROCPOOL_FAULT", "hang-on=3")],
        Duration::from_secs(60),
    );
    let stderr = &hung.stderr;
    assert_eq!(hung.code, Some(1), "{stderr}");
    let v: serde_json::Value = serde_json::from_str(&hung.stdout).unwrap();
    let error = v["results"][3]["error"].as_str().unwrap();
    assert!(error.contains("exceeded its timeout of 500ms"), "{error}");
    assert_eq!(v["failed"], 1);
}

#[test]
fn a_signal_after_the_last_result_does_not_discard_a_complete_run() {
    let args = ["--widths", "0.1:1.2:12", "-w", "2", "--format", "csv"];
    let clean = run(&args);
    assert_eq!(clean.code, Some(0), "{}", clean.stderr);
    for (sig, name) in [(libc::SIGINT, "SIGINT"), (libc::SIGTERM, "SIGTERM")] {
        // The test hook holds the coordinator after its last result until a signal comes.
        let mut bg = spawn(&args, &[("COORDINATOR_TEST_HOOK", "pause-after-results")]);
        assert!(
            bg.wait_for_stderr("every result is in", Duration::from_secs(60)),
            "{name}: the hook never paused"
        );
        bg.signal(sig);
        let r = bg.finish(Duration::from_secs(60));
        assert_eq!(r.code, Some(0), "{name}: {}", r.stderr);
        assert!(
            r.stderr
                .contains(&format!("caught {name} after the last result")),
            "{name}: {}",
            r.stderr
        );
        assert_eq!(r.stdout, clean.stdout, "{name}");
    }
}

fn check_signal(sig: i32, code: i32, name: &str) {
    let (mut child, kids) = start_long_run(&[]);
    let output = drain(&mut child);
    signal(child.id(), sig);
    // A watchdog, not a speed claim: the machine may be busy.
    let (status, _) = wait_within(&mut child, Duration::from_secs(60));
    let (stdout, stderr) = output();
    assert_eq!(status.code(), Some(code), "{name}: {stderr}");
    assert!(
        stdout.contains(&format!("interrupted by {name}")),
        "{stdout}"
    );
    assert!(
        stderr.contains(&format!("interrupted by {name}")),
        "{stderr}"
    );
    for pid in kids {
        assert!(
            stat(pid).is_none(),
            "{name}: worker {pid} still in the process table"
        );
    }
}

#[test]
fn sigint_stops_the_run_reaps_every_worker_and_exits_130() {
    check_signal(libc::SIGINT, 130, "SIGINT");
}

#[test]
fn sigterm_stops_the_run_reaps_every_worker_and_exits_143() {
    check_signal(libc::SIGTERM, 143, "SIGTERM");
}

#[test]
fn sigkill_of_the_coordinator_takes_its_workers_down() {
    let (mut child, kids) = start_long_run(&[]);
    let _output = drain(&mut child);
    signal(child.id(), libc::SIGKILL);
    let _ = child.wait();
    // A watchdog, not a speed claim: orphaned workers notice within about 100 ms.
    let start = Instant::now();
    while kids.iter().any(|&k| running(k)) {
        assert!(
            start.elapsed() < Duration::from_secs(60),
            "orphaned workers still running after {:?}: {:?}",
            start.elapsed(),
            kids.iter().filter(|&&k| running(k)).collect::<Vec<_>>()
        );
        std::thread::sleep(Duration::from_millis(10));
    }
}

#[test]
fn sigterm_while_workers_start_stops_them_and_exits_143() {
    // Every worker freezes before its greeting: the pool is still being built.
    let mut child = coordinator()
        .args(["-w", "2"])
        .env("PROCPOOL_FAULT", "hang-start=1")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let output = drain(&mut child);
    let start = Instant::now();
    let kids = loop {
        let kids = children(child.id());
        if kids.len() == 2 {
            break kids;
        }
        if start.elapsed() > Duration::from_secs(60) {
            let _ = child.kill();
            let _ = child.wait();
            panic!("workers never started");
        }
        std::thread::sleep(Duration::from_millis(10));
    };
    signal(child.id(), libc::SIGTERM);
    let (status, _) = wait_within(&mut child, Duration::from_secs(60));
    let (_, stderr) = output();
    assert_eq!(status.code(), Some(143), "{stderr}");
    for pid in kids {
        assert!(stat(pid).is_none(), "worker {pid} left behind: {stderr}");
    }
}

/// Inodes of the shared context objects (`memfd:procpool-context`) that `pid` maps.
fn context_objects(pid: u32) -> BTreeSet<u64> {
    let maps = std::fs::read_to_string(format!("/proc/{pid}/maps")).unwrap_or_default();
    maps.lines()
        .filter(|l| l.contains("memfd:procpool-context"))
        .filter_map(|l| l.split_whitespace().nth(4)?.parse().ok())
        .collect()
}

/// Every process that still maps or holds an object with one of `inodes`.
fn holders(inodes: &BTreeSet<u64>) -> Vec<u32> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|s| s.parse::<u32>().ok())
        else {
            continue;
        };
        let mapped = !context_objects(pid).is_disjoint(inodes);
        let held = std::fs::read_dir(format!("/proc/{pid}/fd"))
            .into_iter()
            .flatten()
            .flatten()
            .any(|fd| {
                std::fs::metadata(fd.path())
                    .is_ok_and(|m| inodes.contains(&std::os::unix::fs::MetadataExt::ino(&m)))
            });
        if mapped || held {
            out.push(pid);
        }
    }
    out
}

#[test]
fn sigkill_of_the_coordinator_leaves_no_shared_memory_behind() {
    let shm_before: BTreeSet<_> = std::fs::read_dir("/dev/shm")
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.file_name())
        .collect();
    let (mut child, kids) = start_long_run(&[]);
    let _output = drain(&mut child);
    // The context lives in shared objects (the index's arrays, which the pool packs into
    // one, and the sorted samples, made in place), made by the coordinator and mapped as
    // they are by both workers.
    let inodes = context_objects(child.id());
    assert_eq!(inodes.len(), 2, "the coordinator maps {inodes:?}");
    for &k in &kids {
        assert_eq!(context_objects(k), inodes, "worker {k} maps another object");
    }
    signal(child.id(), libc::SIGKILL);
    let _ = child.wait();
    // A watchdog, not a speed claim: orphaned workers exit by themselves.
    let start = Instant::now();
    while kids.iter().any(|&k| running(k)) {
        assert!(
            start.elapsed() < Duration::from_secs(60),
            "workers never exited"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
    let left = holders(&inodes);
    assert!(
        left.is_empty(),
        "processes still hold the context: {left:?}"
    );
    let shm_after: BTreeSet<_> = std::fs::read_dir("/dev/shm")
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.file_name())
        .collect();
    let new: Vec<_> = shm_after.difference(&shm_before).collect();
    assert!(new.is_empty(), "left in /dev/shm: {new:?}");
}
