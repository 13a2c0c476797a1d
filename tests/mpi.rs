//! The MPI backend under a real mpirun (feature `mpi`): the same results as the process
//! backend, over shared memory and over TCP; idle ranks do not spin; a rank that crashes
//! takes the job down promptly; the bench runs under mpirun too.

use crate::common::{density_bits, json, lscv_bits, run, run_with};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// `mpirun -n RANKS [mca] coordinator ARGS`, killed if it outlives `limit`.
fn mpirun(
    ranks: u32,
    tcp: bool,
    args: &[&str],
    env: &[(&str, &str)],
    limit: Duration,
) -> (Option<i32>, String, String, Duration) {
    let mut cmd = Command::new("mpirun");
    cmd.args([
        "-n",
        &ranks.to_string(),
        "--allow-run-as-root",
        "--oversubscribe",
    ]);
    if tcp {
        cmd.args(["--mca", "btl", "tcp,self"]);
    }
    cmd.arg(env!("CARGO_BIN_EXE_coordinator")).args(args);
    for (k, v) in env {
        cmd.env(k, v);
    }
    let start = Instant::now();
    // Every mpirun is under the common watchdog; the label names it in its failure.
    let label = [&["mpirun"], args].concat();
    let r = crate::common::run_command(cmd, &label, limit);
    (r.code, r.stdout, r.stderr, start.elapsed())
}

const SWEEP: [&str; 12] = [
    "--format",
    "json",
    "--samples",
    "20000",
    "--widths",
    "0.05:2:40",
    "--mean",
    "0.5,-1",
    "--cov",
    "2,0.3,0.3,0.5",
    "--point",
    "0.2,-0.7",
];

#[test]
fn mpi_gives_the_process_backends_bits_over_shared_memory_and_tcp() {
    // Cross-validation too: the sorted samples travel to every rank, each scores its widths.
    let mut args = SWEEP.to_vec();
    args.extend(["--backend", "process", "--workers", "4", "--select", "lscv"]);
    let reference = json(&run(&args));
    for tcp in [false, true] {
        let mut args = SWEEP.to_vec();
        args.extend(["--backend", "mpi", "--select", "lscv"]);
        let (code, stdout, stderr, _) = mpirun(5, tcp, &args, &[], Duration::from_secs(120));
        assert_eq!(code, Some(0), "tcp={tcp}: {stderr}");
        let v: serde_json::Value =
            serde_json::from_str(&stdout).unwrap_or_else(|e| panic!("{e}: {stdout}"));
        assert_eq!(v["backend"], "mpi");
        assert_eq!(v["workers"], 4);
        assert_eq!(density_bits(&v), density_bits(&reference), "tcp={tcp}");
        assert_eq!(lscv_bits(&v), lscv_bits(&reference), "tcp={tcp}");
        assert_eq!(v["best"], reference["best"]);
        assert_eq!(v["selected"], reference["selected"]);
    }
}

#[test]
fn the_mpi_bench_runs_under_mpirun() {
    let (code, stdout, stderr, _) = mpirun(
        3,
        false,
        &[
            "bench",
            "scaling",
            "--backends",
            "mpi,process",
            "--workers",
            "2",
            "--repeat",
            "1",
            "--samples",
            "5000",
            "--widths",
            "1:1.2:20",
            "--format",
            "json",
        ],
        &[],
        Duration::from_secs(120),
    );
    assert_eq!(code, Some(0), "{stderr}");
    let v: serde_json::Value = serde_json::from_str(&stdout).unwrap();
    let backends: Vec<&str> = v["rows"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["backend"].as_str().unwrap())
        .collect();
    assert_eq!(backends, ["serial", "mpi", "process"]);
    assert_eq!(v["identical"], true);
}

/// The overhead suite builds and drops many MPI pools in one mpirun (ready, round trips,
/// throughput at two chunk sizes): whatever a rank sent late in one pool's session must
/// never reach the next pool.
#[test]
fn many_mpi_pools_in_one_run_each_start_clean() {
    let (code, stdout, stderr, _) = mpirun(
        3,
        false,
        &[
            "bench",
            "overhead",
            "--backends",
            "mpi",
            "--workers",
            "2",
            "--repeat",
            "2",
            "--jobs",
            "2000",
            "--format",
            "json",
        ],
        &[],
        Duration::from_secs(120),
    );
    assert_eq!(code, Some(0), "{stderr}");
    assert!(!stderr.contains("did not greet"), "{stderr}");
    let v: serde_json::Value = serde_json::from_str(&stdout).unwrap();
    assert_eq!(v["rows"][0]["backend"], "mpi", "{stdout}");
}

/// CPU seconds a process has used, from /proc.
fn cpu_seconds(pid: u32) -> Option<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let rest = &stat[stat.rfind(')')? + 2..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    let ticks: f64 = f.get(11)?.parse::<f64>().ok()? + f.get(12)?.parse::<f64>().ok()?;
    // SAFETY: sysconf has no memory effects.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64;
    Some(ticks / hz)
}

/// Pids of running `coordinator` processes that descend from `root`.
fn coordinators_under(root: u32) -> Vec<u32> {
    let mut found = Vec::new();
    let mut frontier = vec![root];
    while let Some(p) = frontier.pop() {
        let Ok(dir) = std::fs::read_dir("/proc") else {
            break;
        };
        for entry in dir.flatten() {
            let Some(pid) = entry
                .file_name()
                .to_str()
                .and_then(|s| s.parse::<u32>().ok())
            else {
                continue;
            };
            let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
                continue;
            };
            let Some(close) = stat.rfind(')') else {
                continue;
            };
            let ppid: Option<u32> = stat[close + 2..]
                .split_whitespace()
                .nth(1)
                .and_then(|s| s.parse().ok());
            if ppid == Some(p) {
                frontier.push(pid);
                if stat.contains("(coordinator)") {
                    found.push(pid);
                }
            }
        }
    }
    found
}

#[test]
fn idle_worker_ranks_do_not_spin_a_core() {
    // Rank 0 spends a good while drawing samples; meanwhile the worker ranks wait.
    let mut cmd = Command::new("mpirun");
    cmd.args(["-n", "3", "--allow-run-as-root", "--oversubscribe"])
        .arg(env!("CARGO_BIN_EXE_coordinator"))
        .args(["--backend", "mpi", "--samples", "3e7", "--widths", "1"])
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    let mut child = cmd.spawn().expect("mpirun");
    let start = Instant::now();
    let ranks = loop {
        let r = coordinators_under(child.id());
        if r.len() == 3 || start.elapsed() > Duration::from_secs(30) {
            break r;
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    std::thread::sleep(Duration::from_millis(200));
    let before: Vec<Option<f64>> = ranks.iter().map(|&p| cpu_seconds(p)).collect();
    let window = Duration::from_millis(800);
    std::thread::sleep(window);
    let after: Vec<Option<f64>> = ranks.iter().map(|&p| cpu_seconds(p)).collect();
    let _ = child.kill();
    let _ = child.wait();
    assert_eq!(ranks.len(), 3, "did not find the three ranks");
    let mut used: Vec<f64> = before
        .iter()
        .zip(&after)
        .filter_map(|(b, a)| Some(a.as_ref()? - b.as_ref()?))
        .collect();
    used.sort_by(f64::total_cmp);
    assert_eq!(used.len(), 3, "ranks ended too early to be measured");
    // The busiest is rank 0, drawing samples; the two waiting ranks must be nearly idle.
    for cpu in &used[..2] {
        assert!(
            *cpu < 0.1 * window.as_secs_f64(),
            "a waiting rank used {cpu:.3} s of CPU in {window:?}: {used:?}"
        );
    }
}

#[test]
fn a_rank_that_crashes_takes_the_job_down_promptly() {
    let (code, _, stderr, took) = mpirun(
        3,
        false,
        &[
            "--backend",
            "mpi",
            "--widths",
            "0.1:1.2:12",
            "--chunksize",
            "1",
        ],
        &[("PROCPOOL_FAULT", "abort-on=3")],
        Duration::from_secs(120),
    );
    assert_ne!(code, Some(0), "{stderr}");
    assert!(took < Duration::from_secs(60), "took {took:?}");
    assert!(
        stderr.contains("fault injection: aborting on job 3"),
        "{stderr}"
    );
}

#[test]
fn the_mpi_backend_outside_mpirun_is_a_clear_error() {
    let out = run_with(
        &["--backend", "mpi", "--widths", "1"],
        Duration::from_secs(60),
    );
    assert_ne!(out.code, Some(0));
    assert!(out.stderr.contains("at least 2 ranks"), "{}", out.stderr);
}

/// The MPI rank of a process started by mpirun, from its environment.
fn rank_of(pid: u32) -> Option<u32> {
    let env = std::fs::read(format!("/proc/{pid}/environ")).ok()?;
    env.split(|&b| b == 0).find_map(|var| {
        let var = std::str::from_utf8(var).ok()?;
        var.strip_prefix("OMPI_COMM_WORLD_RANK=")?.parse().ok()
    })
}

#[test]
fn a_killed_rank_costs_nothing_journaled_and_the_run_resumes() {
    use crate::journal::records;
    let dir = crate::common::scratch("mpi-journal");
    let journal = dir.join("sweep.journal");
    let journal_arg = journal.to_str().unwrap();
    let sweep = [
        "--select",
        "lscv",
        "--samples",
        "6000",
        "--widths",
        "0.05:1.5:400",
        "--chunksize",
        "1",
        "--format",
        "csv",
    ];
    let reference = run(&[&sweep[..], &["--backend", "process", "-w", "2"]].concat());
    assert_eq!(reference.code, Some(0), "{}", reference.stderr);
    // Rank 0 journals as results arrive; once it holds some, a worker rank is SIGKILLed and
    // MPI ends the whole job.
    let mut cmd = Command::new("mpirun");
    cmd.args(["-n", "3", "--allow-run-as-root", "--oversubscribe"])
        .arg(env!("CARGO_BIN_EXE_coordinator"))
        .args(sweep)
        .args(["--backend", "mpi", "--journal", journal_arg])
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    let mut child = cmd.spawn().expect("mpirun");
    let start = Instant::now();
    let mut victim = None;
    while child.try_wait().unwrap().is_none() {
        if start.elapsed() > Duration::from_secs(120) {
            let _ = child.kill();
            let _ = child.wait();
            panic!("mpirun did not end within 120 s (victim {victim:?})");
        }
        if victim.is_none() && records(&journal) >= 40 {
            let worker = coordinators_under(child.id())
                .into_iter()
                .find(|&p| rank_of(p).is_some_and(|r| r > 0));
            if let Some(pid) = worker {
                // SAFETY: kill(2) has no memory effects; the pid is one of mpirun's ranks.
                unsafe { libc::kill(pid as i32, libc::SIGKILL) };
                victim = Some(pid);
            }
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    let status = child.wait().unwrap();
    assert!(
        victim.is_some(),
        "the run ended before a rank could be killed"
    );
    assert!(
        !status.success(),
        "mpirun succeeded after a rank was killed"
    );
    let held = records(&journal);
    assert!(
        (40..400).contains(&held),
        "{held} records in the journal after the kill"
    );
    // Resumed under mpirun: only the missing widths run; the CSV is the uninterrupted one.
    let mut args = sweep.to_vec();
    args.extend(["--backend", "mpi", "--resume", journal_arg]);
    let (code, stdout, stderr, _) = mpirun(3, false, &args, &[], Duration::from_secs(120));
    assert_eq!(code, Some(0), "{stderr}");
    assert!(stdout == reference.stdout, "the resumed CSV differs");
    assert_eq!(records(&journal), 400);
    // Complete now: rank 0 starts no pool, and the worker ranks are still let go.
    let (code, stdout, stderr, _) = mpirun(3, false, &args, &[], Duration::from_secs(120));
    assert_eq!(code, Some(0), "{stderr}");
    assert!(
        stdout == reference.stdout,
        "the CSV from the journal differs"
    );
    std::fs::remove_dir_all(&dir).ok();
}
