//! `--journal` and `--resume`: a coordinator SIGKILLed at random points resumes and prints
//! what an uninterrupted run prints; torn, corrupt, alien and mismatched journals; a
//! complete journal starts no worker; an existing journal is never overwritten by accident.

use crate::common::{Background, Run, json, run, run_env, scratch, spawn};
use procpool::journal::{Header, Journal, Value};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// The JSON fields that differ between any two runs of the same sweep, journal or not:
/// the workers' pids, what automatic chunking measured and chose, and the timings.
pub const RUN_FACTS: [&str; 4] = ["pids", "chunksize_chosen", "elapsed_s", "ready_s"];

/// `report` without [`RUN_FACTS`] (and without `also`).
pub fn without_facts(report: &serde_json::Value, also: &[&str]) -> serde_json::Value {
    let mut v = report.clone();
    let map = v.as_object_mut().expect("a JSON object");
    for key in RUN_FACTS.iter().chain(also) {
        assert!(map.remove(*key).is_some(), "no {key:?} in the report");
    }
    v
}

/// How many positions the journal at `path` holds now (0 while it does not exist yet).
pub fn records(path: &Path) -> usize {
    Journal::read(path).map_or(0, |(_, r)| r.len())
}

/// SplitMix64: the test's random numbers, a pure function of the seed.
fn splitmix(seed: u64) -> u64 {
    let mut z = seed.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

fn path_str(p: &Path) -> &str {
    p.to_str().expect("utf-8 path")
}

/// A sweep long enough to be killed in the middle: cross-validation of 400 widths over
/// 6000 samples, a few milliseconds a width.
const LONG: [&str; 8] = [
    "--select",
    "lscv",
    "--samples",
    "6000",
    "--widths",
    "0.05:1.5:400",
    "--chunksize",
    "1",
];
const LONG_WIDTHS: usize = 400;

/// Starts `args` with `--journal path` and SIGKILLs it once the journal holds at least
/// `after` records; returns how many it held then (all of them if the run ended first).
fn kill_after(args: &[&str], journal: &Path, after: usize) -> usize {
    let mut all = args.to_vec();
    all.extend(["--journal", path_str(journal)]);
    let mut bg: Background = spawn(&all, &[]);
    let start = Instant::now();
    loop {
        if bg.child.try_wait().expect("wait").is_some() {
            break;
        }
        if records(journal) >= after {
            bg.signal(libc::SIGKILL);
            break;
        }
        assert!(
            start.elapsed() < Duration::from_secs(120),
            "the journal never reached {after} records"
        );
        std::thread::sleep(Duration::from_millis(2));
    }
    let r = bg.finish(Duration::from_secs(60));
    assert!(
        r.code.is_none() || r.code == Some(0),
        "{:?}: {}",
        r.code,
        r.stderr
    );
    records(journal)
}

#[test]
fn sigkill_at_random_points_then_resume_prints_the_uninterrupted_report() {
    let dir = scratch("journal-kill");
    let mut base = LONG.to_vec();
    base.extend(["-w", "2"]);
    let mut json_args = base.clone();
    json_args.extend(["--format", "json"]);
    let reference = json(&run(&json_args));
    let mut csv_args = base.clone();
    csv_args.extend(["--format", "csv"]);
    let reference_csv = run(&csv_args);
    assert_eq!(reference_csv.code, Some(0), "{}", reference_csv.stderr);
    // Seeds are fixed, so a failure is reproducible; COORDINATOR_TEST_SEEDS=1,2,.. for others.
    let seeds: Vec<u64> = std::env::var("COORDINATOR_TEST_SEEDS")
        .ok()
        .map(|s| s.split(',').filter_map(|x| x.trim().parse().ok()).collect())
        .unwrap_or_else(|| vec![1, 2, 3, 4]);
    let mut killed_mid_run = 0;
    for seed in seeds {
        let r = splitmix(seed);
        let after = 1 + (r % (LONG_WIDTHS as u64 * 3 / 4)) as usize;
        let (backend, workers) =
            [("process", "2"), ("thread", "2"), ("serial", "1")][(r >> 32) as usize % 3];
        let journal = dir.join(format!("seed-{seed}.journal"));
        let held = kill_after(&base, &journal, after);
        let context = format!(
            "seed {seed}: killed after {after} records ({held} in the journal), resumed on \
             {backend} -w {workers}"
        );
        if held < LONG_WIDTHS {
            killed_mid_run += 1;
        }
        // Resume: only the missing widths run, and the report is the uninterrupted one.
        let mut resume = LONG.to_vec();
        resume.extend([
            "--resume",
            path_str(&journal),
            "--backend",
            backend,
            "-w",
            workers,
            "--format",
            "json",
        ]);
        let resumed = run(&resume);
        assert_eq!(resumed.code, Some(0), "{context}: {}", resumed.stderr);
        let v: serde_json::Value = serde_json::from_str(&resumed.stdout)
            .unwrap_or_else(|e| panic!("{context}: {e}: {}", resumed.stdout));
        assert_eq!(v["backend"], backend, "{context}");
        assert_eq!(
            without_facts(&v, &["backend", "workers"]),
            without_facts(&reference, &["backend", "workers"]),
            "{context}"
        );
        if backend == "process" {
            assert_eq!(without_facts(&v, &[]), without_facts(&reference, &[]));
        }
        assert_eq!(
            records(&journal),
            LONG_WIDTHS,
            "{context}: journal incomplete"
        );
        // The journal is complete now: CSV straight from it, byte for byte.
        let mut again = LONG.to_vec();
        again.extend(["--resume", path_str(&journal), "--format", "csv"]);
        let csv = run(&again);
        assert_eq!(csv.code, Some(0), "{context}: {}", csv.stderr);
        assert!(
            csv.stdout == reference_csv.stdout,
            "{context}: the CSV differs from the uninterrupted run's"
        );
    }
    assert!(
        killed_mid_run > 0,
        "every run finished before it could be killed: the test proved nothing"
    );
    std::fs::remove_dir_all(&dir).ok();
}

/// A short sweep's arguments with `extra` (which may give --widths or -w another value).
fn short(extra: &[&str]) -> Vec<String> {
    let mut v: Vec<String> = Vec::new();
    for (flag, value) in [("--widths", "0.1:1.5:40"), ("-w", "2")] {
        if !extra.contains(&flag) {
            v.extend([flag.to_owned(), value.to_owned()]);
        }
    }
    v.extend(extra.iter().map(|s| (*s).to_owned()));
    v
}

fn run_short(extra: &[&str]) -> Run {
    let args = short(extra);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    run(&args)
}

/// A complete journal of the short sweep at `dir/name`, and the sweep's CSV.
fn complete_journal(dir: &Path, name: &str) -> (PathBuf, String) {
    let path = dir.join(name);
    let r = run_short(&["--journal", path_str(&path), "--format", "csv"]);
    assert_eq!(r.code, Some(0), "{}", r.stderr);
    assert_eq!(records(&path), 40);
    (path, r.stdout)
}

#[test]
fn a_torn_final_record_is_dropped_and_computed_again() {
    let dir = scratch("journal-torn");
    let (path, csv) = complete_journal(&dir, "j");
    let len = std::fs::metadata(&path).unwrap().len();
    std::fs::OpenOptions::new()
        .write(true)
        .open(&path)
        .unwrap()
        .set_len(len - 3)
        .unwrap();
    let r = run_short(&["--resume", path_str(&path), "--format", "csv"]);
    assert_eq!(r.code, Some(0), "{}", r.stderr);
    assert!(
        r.stderr.contains("dropped a torn last record"),
        "{}",
        r.stderr
    );
    assert_eq!(r.stdout, csv);
    assert_eq!(records(&path), 40);
    // The table says where the widths came from.
    let table = run_short(&["--resume", path_str(&path)]);
    assert!(
        table.stdout.contains(&format!(
            "40 of 40 widths from the journal {}",
            path.display()
        )),
        "{}",
        table.stdout
    );
    std::fs::remove_dir_all(&dir).ok();
}

#[test]
fn damage_in_the_middle_another_version_or_no_journal_is_exit_2() {
    let dir = scratch("journal-corrupt");
    let (path, _) = complete_journal(&dir, "j");
    let bytes = std::fs::read(&path).unwrap();
    let check = |name: &str, content: &[u8], needle: &str| {
        let p = dir.join(name);
        std::fs::write(&p, content).unwrap();
        let r = run_short(&["--resume", path_str(&p)]);
        assert_eq!(r.code, Some(2), "{name}: {}", r.stderr);
        assert!(r.stderr.contains(needle), "{name}: {}", r.stderr);
        assert!(r.stdout.is_empty(), "{name}: {}", r.stdout);
        assert!(
            std::fs::read(&p).unwrap() == content,
            "{name}: a refused resume changed the file"
        );
    };
    // A byte flipped a quarter from the end: inside a record with intact records after it.
    let mut flipped = bytes.clone();
    let at = bytes.len() - bytes.len() / 4;
    flipped[at] ^= 0x40;
    check("flipped", &flipped, "is corrupt at byte");
    let mut version = bytes.clone();
    version[17] = 9;
    check("version", &version, "format version 9");
    check("csv", b"pos,h\n0,0.1\n", "is not a procpool journal");
    check("empty", b"", "inside its header");
    let r = run_short(&["--resume", path_str(&dir.join("absent"))]);
    assert_eq!(r.code, Some(2), "{}", r.stderr);
    assert!(r.stderr.contains("does not exist"), "{}", r.stderr);
    std::fs::remove_dir_all(&dir).ok();
}

#[test]
fn a_different_run_is_refused_naming_the_first_field_that_differs() {
    let dir = scratch("journal-mismatch");
    let (path, _) = complete_journal(&dir, "j");
    let before = std::fs::read(&path).unwrap();
    let refused = |extra: &[&str], field: &str| {
        let mut args = vec!["--resume", path_str(&path)];
        args.extend_from_slice(extra);
        let r = run_short(&args);
        assert_eq!(r.code, Some(2), "{extra:?}: {}", r.stderr);
        assert!(
            r.stderr.contains(&format!(
                "was written for a different run: header field \"{field}\""
            )),
            "{extra:?}: {}",
            r.stderr
        );
        assert!(std::fs::read(&path).unwrap() == before, "{extra:?}");
    };
    // What a user changes on the command line, field by field.
    refused(&["--samples", "10001"], "samples");
    refused(&["--dims", "3", "--point", "0,0,0"], "dims");
    refused(&["--seed", "7"], "seed");
    refused(&["--mean", "0.5,0"], "mean");
    refused(&["--cov", "2,0,0,1"], "cov");
    refused(&["--point", "0.25,0"], "point");
    refused(&["--widths", "0.1:1.5:41"], "widths");
    refused(&["--select", "lscv"], "select");
    // Samples from a file: the source, then the data itself.
    let (header, _) = Journal::read(&path).unwrap();
    let a = dir.join("a.csv");
    let b = dir.join("b.csv");
    std::fs::write(&a, "1,2\n3,4\n5,7\n").unwrap();
    std::fs::write(&b, "1,2\n3,4\n5,8\n").unwrap();
    let file_journal = dir.join("file.journal");
    let made = run(&[
        "--data",
        path_str(&a),
        "--select",
        "none",
        "--widths",
        "1,2",
        "--journal",
        path_str(&file_journal),
    ]);
    assert_eq!(made.code, Some(0), "{}", made.stderr);
    let r = run(&[
        "--data",
        path_str(&b),
        "--select",
        "none",
        "--widths",
        "1,2",
        "--resume",
        path_str(&file_journal),
    ]);
    assert_eq!(r.code, Some(2), "{}", r.stderr);
    assert!(r.stderr.contains("header field \"data\""), "{}", r.stderr);
    let r = run_short(&["--resume", path_str(&file_journal)]);
    assert_eq!(r.code, Some(2), "{}", r.stderr);
    assert!(r.stderr.contains("header field \"source\""), "{}", r.stderr);
    // Every field, including those no flag changes (tool version, task): a journal whose
    // header differs in that field alone.
    let names: Vec<String> = header.fields().iter().map(|f| f.name.clone()).collect();
    for (i, name) in names.iter().enumerate() {
        let mut forged = Header::new();
        for (j, f) in header.fields().iter().enumerate() {
            let value = match (&f.value, i == j) {
                (Value::Text(t), true) => Value::Text(format!("{t} (other)")),
                (Value::Bytes(b), true) => Value::Bytes(b.iter().map(|x| x ^ 1).collect()),
                (v, false) => v.clone(),
            };
            forged = match value {
                Value::Text(t) => forged.text(f.name.clone(), t),
                Value::Bytes(b) => forged.bytes(f.name.clone(), b),
            };
        }
        let p = dir.join(format!("forged-{i}"));
        Journal::create(&p, &forged).unwrap().finish().unwrap();
        let r = run_short(&["--resume", path_str(&p)]);
        assert_eq!(r.code, Some(2), "{name}: {}", r.stderr);
        assert!(
            r.stderr.contains(&format!("header field \"{name}\"")),
            "{name}: {}",
            r.stderr
        );
    }
    for expected in [
        "tool", "task", "source", "samples", "dims", "seed", "mean", "cov", "data", "point",
        "widths", "select",
    ] {
        assert!(
            names.iter().any(|n| n == expected),
            "{expected} not in {names:?}"
        );
    }
    std::fs::remove_dir_all(&dir).ok();
}

#[test]
fn a_complete_journal_starts_no_worker() {
    let dir = scratch("journal-complete");
    let (path, _) = complete_journal(&dir, "j");
    let reference = json(&run_short(&["--format", "json"]));
    // Workers that would freeze before their greeting: a pool built here would never be
    // ready, so only a run that starts none finishes.
    let args = short(&["--resume", path_str(&path), "--format", "json", "-v"]);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let r = run_env(
        &args,
        &[("PROCPOOL_FAULT", "hang-start=1")],
        Duration::from_secs(60),
    );
    assert_eq!(r.code, Some(0), "{}", r.stderr);
    let v: serde_json::Value = serde_json::from_str(&r.stdout).unwrap();
    assert_eq!(v["pids"], serde_json::json!([]), "workers were started");
    assert!(
        r.stderr.contains("no worker started") && !r.stderr.contains("pool ready"),
        "{}",
        r.stderr
    );
    assert_eq!(without_facts(&v, &[]), without_facts(&reference, &[]));
    std::fs::remove_dir_all(&dir).ok();
}

#[test]
fn an_existing_file_is_never_overwritten_without_force() {
    let dir = scratch("journal-exists");
    let (path, csv) = complete_journal(&dir, "j");
    let before = std::fs::read(&path).unwrap();
    let r = run_short(&["--journal", path_str(&path)]);
    assert_eq!(r.code, Some(2), "{}", r.stderr);
    assert!(
        r.stderr.contains("already exists") && r.stderr.contains("--resume"),
        "{}",
        r.stderr
    );
    assert!(r.stdout.is_empty());
    assert!(std::fs::read(&path).unwrap() == before);
    // Any file: a journal is never written over something else by accident either.
    let precious = dir.join("precious.txt");
    std::fs::write(&precious, "keep").unwrap();
    let r = run_short(&["--journal", path_str(&precious)]);
    assert_eq!(r.code, Some(2), "{}", r.stderr);
    assert_eq!(std::fs::read_to_string(&precious).unwrap(), "keep");
    // With --force it is replaced by a new, complete journal.
    let r = run_short(&["--journal", path_str(&path), "--force", "--format", "csv"]);
    assert_eq!(r.code, Some(0), "{}", r.stderr);
    assert_eq!(r.stdout, csv);
    assert_eq!(records(&path), 40);
    // Paths that cannot be used are refused before any work.
    let r = run_short(&["--journal", path_str(&dir)]);
    assert_eq!(r.code, Some(2), "{}", r.stderr);
    assert!(r.stderr.contains("is a directory"), "{}", r.stderr);
    let r = run_short(&["--journal", path_str(&dir.join("no/such/dir/j"))]);
    assert_eq!(r.code, Some(2), "{}", r.stderr);
    assert!(r.stderr.contains("cannot be written"), "{}", r.stderr);
    let r = run_short(&["--journal", "a", "--resume", "b"]);
    assert_eq!(r.code, Some(2), "{}", r.stderr);
    std::fs::remove_dir_all(&dir).ok();
}

#[test]
fn a_journal_that_a_running_run_holds_is_refused_to_a_second_run() {
    let dir = scratch("journal-in-use");
    let path = dir.join("j");
    // Long enough (tens of seconds) that it is still running when the second run starts;
    // it is killed once that has been checked.
    let mut sweep = LONG.to_vec();
    assert_eq!(sweep[4], "--widths");
    sweep[5] = "0.05:1.5:4000";
    let mut first = sweep.clone();
    first.extend(["-w", "2", "--journal", path_str(&path)]);
    let mut bg: Background = spawn(&first, &[]);
    let start = Instant::now();
    while records(&path) == 0 {
        assert!(
            bg.child.try_wait().expect("wait").is_none(),
            "the first run ended before it wrote a record"
        );
        assert!(
            start.elapsed() < Duration::from_secs(120),
            "the first run never recorded a result"
        );
        std::thread::sleep(Duration::from_millis(5));
    }
    let resume = ["--resume", path_str(&path)];
    let replace = ["--journal", path_str(&path), "--force"];
    for flags in [&resume[..], &replace[..]] {
        let mut args = sweep.clone();
        args.extend(flags);
        let r = run(&args);
        assert_eq!(r.code, Some(2), "{flags:?}: {}", r.stderr);
        assert!(
            r.stderr.contains("in use by another run") && r.stderr.contains(path_str(&path)),
            "{flags:?}: {}",
            r.stderr
        );
        assert!(r.stdout.is_empty(), "{flags:?}: {}", r.stdout);
    }
    assert!(
        bg.child.try_wait().expect("wait").is_none(),
        "the first run ended while the second was refused: the test proved nothing"
    );
    // The holder dies by SIGKILL; the kernel drops its lock, and the journal resumes.
    bg.signal(libc::SIGKILL);
    let killed = bg.finish(Duration::from_secs(60));
    assert_eq!(killed.code, None, "{}", killed.stderr);
    let held = records(&path);
    assert!(held > 0);
    let (journal, _) = Journal::resume(&path, &Journal::read(&path).unwrap().0).unwrap();
    drop(journal);
    std::fs::remove_dir_all(&dir).ok();
}

#[test]
fn failed_jobs_are_not_recorded_and_a_resume_runs_them() {
    let dir = scratch("journal-failed");
    let path = dir.join("j");
    let args = short(&[
        "--journal",
        path_str(&path),
        "--chunksize",
        "1",
        "--retries",
        "0",
        "--format",
        "csv",
    ]);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let r = run_env(
        &args,
        &[("PROCPOOL_FAULT", "abort-on=5")],
        Duration::from_secs(60),
    );
    assert_eq!(r.code, Some(1), "{}", r.stderr);
    let (_, recovered) = Journal::read(&path).unwrap();
    assert!(!recovered.contains(5), "a failed job was recorded");
    assert_eq!(recovered.len(), 39);
    let clean = run_short(&["--format", "csv"]);
    let resumed = run_short(&["--resume", path_str(&path), "--format", "csv"]);
    assert_eq!(resumed.code, Some(0), "{}", resumed.stderr);
    assert_eq!(resumed.stdout, clean.stdout);
    std::fs::remove_dir_all(&dir).ok();
}

#[test]
fn values_that_are_not_finite_are_recorded_as_computed() {
    let dir = scratch("journal-nonfinite");
    let path = dir.join("j");
    let args = ["--widths", "1e-200,0.5", "--format", "csv"];
    let first = run(&[&args[..], &["--journal", path_str(&path)]].concat());
    assert_eq!(first.code, Some(1), "{}", first.stderr);
    assert_eq!(records(&path), 2);
    let resumed = run(&[&args[..], &["--resume", path_str(&path)]].concat());
    assert_eq!(resumed.code, Some(1), "{}", resumed.stderr);
    assert_eq!(resumed.stdout, first.stdout);
    assert!(resumed.stdout.contains("not_finite"), "{}", resumed.stdout);
    std::fs::remove_dir_all(&dir).ok();
}

#[test]
fn a_journal_that_cannot_be_written_costs_no_result() {
    use std::os::unix::process::CommandExt;
    let dir = scratch("journal-full");
    let path = dir.join("j");
    // Small samples (the shared context's objects, which the limit also bounds, stay under
    // 20000 bytes) and many widths (a journal of about 45000).
    let sweep = [
        "--samples",
        "500",
        "--widths",
        "0.1:1.5:1000",
        "-w",
        "2",
        "--format",
        "csv",
    ];
    let clean = run(&sweep);
    assert_eq!(clean.code, Some(0), "{}", clean.stderr);
    // The file size limit stops the journal part-way, as a full disk would (EFBIG, with
    // SIGXFSZ ignored, in the coordinator and its workers only).
    let mut args = sweep.to_vec();
    args.extend(["--journal", path_str(&path)]);
    let mut cmd = crate::common::coordinator();
    cmd.args(&args);
    // SAFETY: between fork and exec only async-signal-safe calls: signal and setrlimit.
    unsafe {
        cmd.pre_exec(|| {
            libc::signal(libc::SIGXFSZ, libc::SIG_IGN);
            let limit = libc::rlimit {
                rlim_cur: 20_000,
                rlim_max: 20_000,
            };
            if libc::setrlimit(libc::RLIMIT_FSIZE, &limit) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let limited =
        crate::common::run_command(cmd, &["--journal (size-limited)"], Duration::from_secs(60));
    let (stdout, stderr) = (limited.stdout, limited.stderr);
    assert_eq!(limited.code, Some(1), "{stderr}");
    assert!(
        stderr.contains("the run goes on without its journal")
            && stderr.contains("the report is complete, the journal is not"),
        "{stderr}"
    );
    assert_eq!(stdout, clean.stdout, "the report lost results");
    let held = records(&path);
    assert!((1..1000).contains(&held), "{held} records");
    // What it did record is good: a resume runs the rest.
    let mut args = sweep.to_vec();
    args.extend(["--resume", path_str(&path)]);
    let resumed = run(&args);
    assert_eq!(resumed.code, Some(0), "{}", resumed.stderr);
    assert_eq!(resumed.stdout, clean.stdout);
    std::fs::remove_dir_all(&dir).ok();
}
