//! The command line and its outputs as users of cargo, ripgrep and hyperfine expect:
//! clap's full messages, quiet ends under `| head -1`, NO_COLOR and `-q` honoured on a
//! terminal, CSV that strict readers take, a schema in every JSON document, readable
//! tables, output paths checked before any work.

use crate::common::{
    assert_contains_all, csv_rows, run, run_env, run_into_closing_pipe, run_on_terminal, run_with,
    scratch,
};
use std::time::Duration;

const QUICK_BENCH: [&[&str]; 3] = [
    &[
        "bench",
        "scaling",
        "--samples",
        "1000",
        "--widths",
        "1:1.2:6",
        "--repeat",
        "1",
        "--workers",
        "1",
    ],
    &[
        "bench",
        "overhead",
        "--jobs",
        "500",
        "--repeat",
        "1",
        "--workers",
        "1",
    ],
    &[
        "bench",
        "granularity",
        "--sizes",
        "5,50",
        "--repeat",
        "1",
        "--workers",
        "1",
    ],
];

#[test]
fn clap_messages_are_kept_whole() {
    let r = run(&["bench"]);
    assert_eq!(r.code, Some(2), "{}", r.stderr);
    assert_eq!(
        r.stderr,
        "error: the following required arguments were not provided:\n  <SUITE>\n\n\
         Usage: coordinator bench <SUITE>\n\nFor more information, try '--help'.\n"
    );
    assert!(r.stdout.is_empty());

    run(&["bench", "scalin"]).assert_refused(&[
        "invalid value 'scalin' for '<SUITE>'",
        "[possible values: scaling, overhead, granularity]",
        "tip: a similar value exists: 'scaling'",
    ]);

    let r = run(&["--backend", "proces"]);
    assert_eq!(r.code, Some(2));
    assert!(
        r.stderr
            .contains("[possible values: process, thread, serial"),
        "{}",
        r.stderr
    );
    // Help and version are not errors.
    for flag in ["--help", "--version"] {
        let r = run(&[flag]);
        assert_eq!(r.code, Some(0), "{flag}: {}", r.stderr);
        assert!(!r.stdout.is_empty());
    }
}

/// Every subcommand, in every format it has.
fn every_subcommand() -> Vec<Vec<&'static str>> {
    let mut all: Vec<Vec<&str>> = vec![
        vec!["-w", "2", "--widths", "0.1:2:400"],
        vec!["-w", "2", "--format", "json"],
        vec!["-w", "2", "--format", "csv", "--widths", "0.1:2:400"],
        vec!["sysinfo"],
        vec!["sysinfo", "--format", "json"],
        vec!["sysinfo", "--format", "csv"],
    ];
    for bench in QUICK_BENCH {
        for format in ["table", "json", "csv"] {
            let mut args = bench.to_vec();
            args.extend(["--format", format]);
            all.push(args);
        }
    }
    for demo in [
        "queue",
        "pool",
        "isolation",
        "crash",
        "generators",
        "cost",
        "parzen",
    ] {
        for format in ["text", "json"] {
            all.push(vec!["demo", demo, "--format", format]);
        }
    }
    all
}

#[test]
fn every_subcommand_ends_quietly_when_its_reader_goes_away() {
    for args in every_subcommand() {
        // -q: the crash demo's workers really crash, and say so at warn level.
        let mut quiet = args.clone();
        quiet.push("-q");
        // `| head -1`, and `| true` (the pipe closed before anything was written).
        for lines in [1, 0] {
            let r = run_into_closing_pipe(&quiet, lines);
            assert_eq!(
                r.code,
                Some(0),
                "{quiet:?} into a pipe closed after {lines} lines: {}",
                r.stderr
            );
            assert_eq!(r.stderr, "", "{quiet:?} after {lines} lines");
            assert_eq!(r.stdout.lines().count(), lines, "{quiet:?}: {}", r.stdout);
        }
    }
}

#[test]
fn no_color_means_no_escape_bytes_on_a_terminal() {
    let sweep = ["-v", "-w", "2", "--widths", "0.5,1"];
    // A colour terminal gets coloured logs (so this test can tell)...
    let (code, stdout, term) = run_on_terminal(&sweep, &[("TERM", "xterm")]);
    assert_eq!(code, Some(0));
    assert!(stdout.contains("closest estimate"), "{stdout}");
    let text = String::from_utf8_lossy(&term);
    assert!(text.contains("worker spawned"), "{text}");
    assert!(term.contains(&0x1b), "no colour on a terminal:\n{text}");
    // ...and none under NO_COLOR, nor in what goes to a pipe.
    let (code, stdout, term) = run_on_terminal(&sweep, &[("TERM", "xterm"), ("NO_COLOR", "1")]);
    assert_eq!(code, Some(0));
    let text = String::from_utf8_lossy(&term);
    assert!(text.contains("worker spawned"), "{text}");
    assert!(
        !term.contains(&0x1b),
        "escape bytes under NO_COLOR:\n{text:?}"
    );
    assert!(!stdout.contains('\u{1b}'), "{stdout:?}");
    // clap's messages too.
    let (code, _, term) = run_on_terminal(&["bench"], &[("TERM", "xterm"), ("NO_COLOR", "1")]);
    assert_eq!(code, Some(2));
    let text = String::from_utf8_lossy(&term);
    assert!(text.contains("<SUITE>"), "{text}");
    assert!(
        !term.contains(&0x1b),
        "escape bytes under NO_COLOR:\n{text:?}"
    );
}

#[test]
fn quiet_hides_the_bench_progress_bar() {
    let bench = QUICK_BENCH[1];
    let (code, stdout, term) = run_on_terminal(bench, &[("TERM", "xterm")]);
    assert_eq!(code, Some(0));
    assert!(stdout.contains("overhead"), "{stdout}");
    let text = String::from_utf8_lossy(&term);
    assert!(
        text.contains("runs"),
        "no progress bar on a terminal:\n{text:?}"
    );
    let mut quiet = bench.to_vec();
    quiet.push("-q");
    let (code, stdout, term) = run_on_terminal(&quiet, &[("TERM", "xterm")]);
    assert_eq!(code, Some(0));
    assert!(stdout.contains("overhead"), "{stdout}");
    assert!(
        term.is_empty(),
        "-q printed {:?}",
        String::from_utf8_lossy(&term)
    );
}

#[test]
fn every_csv_output_is_header_first() {
    let (header, rows) = csv_rows(&run(&["sysinfo", "--format", "csv"]).stdout);
    assert_eq!(header[0], "version");
    assert_eq!(rows.len(), 1);
    let cores = header.iter().position(|h| h == "logical_cores").unwrap();
    assert!(rows[0][cores].parse::<u64>().unwrap() >= 1);

    let expect = [
        (
            "scaling",
            "backend,workers,median_s,min_s,max_s,ready_s,speedup,efficiency",
            3,
        ),
        (
            "overhead",
            "backend,workers,ready_ms,ready_per_worker_ms,apply_p50_us,apply_p90_us,\
             apply_cpu_us,chunk1_jobs_per_s,chunk1_min_jobs_per_s,chunk1_max_jobs_per_s,\
             auto_jobs_per_s,auto_min_jobs_per_s,auto_max_jobs_per_s,auto_chunksize,bytes_per_job",
            3,
        ),
        (
            "granularity",
            "backend,workers,job_us,jobs,wall_s,min_s,max_s,speedup",
            6,
        ),
    ];
    for (bench, (suite, header_line, n)) in QUICK_BENCH.iter().zip(expect) {
        let mut args = bench.to_vec();
        args.extend(["--format", "csv"]);
        let r = run(&args);
        assert_eq!(r.code, Some(0), "{suite}: {}", r.stderr);
        assert!(r.stdout.starts_with(header_line), "{suite}: {}", r.stdout);
        let (header, rows) = csv_rows(&r.stdout);
        assert_eq!(header.join(","), header_line);
        assert_eq!(rows.len(), n, "{suite}: {}", r.stdout);
        for row in &rows {
            assert!(["serial", "thread", "process"].contains(&row[0].as_str()));
        }
    }
}

#[test]
fn the_sweep_csv_keeps_a_failed_row_and_its_error() {
    let r = run_env(
        &[
            "--format",
            "csv",
            "-w",
            "2",
            "--chunksize",
            "1",
            "--retries",
            "0",
            "-q",
        ],
        &[("PROCPOOL_FAULT", "abort-on=5")],
        Duration::from_secs(60),
    );
    assert_eq!(r.code, Some(1), "{}", r.stderr);
    let (header, rows) = csv_rows(&r.stdout);
    assert_eq!(
        header,
        [
            "pos",
            "h",
            "count",
            "density",
            "abs_error",
            "lscv",
            "status",
            "error"
        ]
    );
    assert_eq!(rows.len(), 12);
    for row in &rows {
        let failed = row[0] == "5";
        assert_eq!(row[3].is_empty(), failed, "{row:?}");
        assert_eq!(row[6], if failed { "failed" } else { "ok" }, "{row:?}");
        assert_eq!(row[7].is_empty(), !failed, "{row:?}");
        assert!(row[5].is_empty(), "no lscv asked for: {row:?}");
        if failed {
            assert!(row[7].contains("SIGABRT"), "{row:?}");
        } else {
            assert!(row[3].parse::<f64>().is_ok(), "{row:?}");
        }
    }
}

#[test]
fn every_json_document_names_its_schema() {
    let doc = |args: &[&str]| -> serde_json::Value {
        let r = run(args);
        assert_eq!(r.code, Some(0), "{args:?}: {}", r.stderr);
        serde_json::from_str(&r.stdout).unwrap_or_else(|e| panic!("{args:?}: {e}: {}", r.stdout))
    };
    assert_eq!(
        doc(&["-w", "1", "--format", "json"])["schema"],
        "coordinator.sweep/2"
    );
    assert_eq!(
        doc(&["sysinfo", "--format", "json"])["schema"],
        "coordinator.sysinfo/1"
    );
    for (bench, suite) in QUICK_BENCH
        .iter()
        .zip(["scaling", "overhead", "granularity"])
    {
        let mut args = bench.to_vec();
        args.extend(["--format", "json"]);
        let v = doc(&args);
        assert_eq!(v["schema"], format!("coordinator.bench.{suite}/1"));
        assert!(v["date"].as_str().is_some_and(|d| d.ends_with('Z')), "{v}");
    }
    // The demos' schemas are checked where each demo is (tests/demos.rs).
}

#[test]
fn a_failure_before_any_result_is_still_a_json_document() {
    // Workers of another protocol version: refused at the handshake, nothing computed.
    let r = run_env(
        &["-w", "2", "--format", "json", "-q"],
        &[("PROCPOOL_FAULT", "version=99")],
        Duration::from_secs(60),
    );
    assert_eq!(r.code, Some(1), "{}", r.stderr);
    let v: serde_json::Value = serde_json::from_str(&r.stdout).unwrap();
    assert_eq!(v["schema"], "coordinator.error/1");
    assert_eq!(v["kind"], "failed");
    assert_eq!(v["exit_code"], 1);
    assert!(
        v["error"]
            .as_str()
            .unwrap()
            .contains("speaks protocol version 99"),
        "{v}"
    );
    assert!(r.stderr.contains("speaks protocol version 99"));

    // Bad input too, with its exit code; and the bench.
    for args in [
        vec!["--workers", "0", "--format", "json"],
        vec!["bench", "scaling", "--repeat", "0", "--format", "json"],
    ] {
        let r = run(&args);
        assert_eq!(r.code, Some(2), "{args:?}: {}", r.stderr);
        let v: serde_json::Value = serde_json::from_str(&r.stdout).unwrap();
        assert_eq!(v["schema"], "coordinator.error/1");
        assert_eq!(v["kind"], "usage");
        assert_eq!(v["exit_code"], 2);
        assert!(v["error"].as_str().unwrap().contains("got 0"), "{v}");
    }
}

#[test]
fn the_table_rounds_and_says_where_every_digit_is() {
    let r = run(&["-w", "2"]);
    assert_eq!(r.code, Some(0), "{}", r.stderr);
    // k = 13 of 10000 at h = 0.1: 0.0013 / 0.01, which is 0.12999999999999998 in full.
    assert!(r.stdout.contains(" 0.130000 "), "{}", r.stdout);
    assert!(!r.stdout.contains("0.12999999999999998"), "{}", r.stdout);
    assert!(
        r.stdout.contains("true density p(x) = 0.159155\n"),
        "{}",
        r.stdout
    );
    let help = run(&["--help"]).stdout;
    assert!(help.contains("6 significant digits"), "{help}");
    assert!(help.contains("bit for bit"), "{help}");
}

#[test]
fn output_paths_are_checked_before_any_work() {
    let dir = scratch("paths");
    let missing = dir.join("no/such/dir/t.svg");
    let missing = missing.to_str().unwrap();
    for args in [
        vec!["--timeline", missing, "--samples", "1e7"],
        vec!["bench", "scaling", "--plot", missing, "--samples", "1e7"],
        vec!["bench", "overhead", "--timeline", missing],
    ] {
        // 1e7 samples would take seconds to draw: the path is refused first.
        let r = run_with(&args, Duration::from_secs(60));
        assert_eq!(r.code, Some(2), "{args:?}: {}", r.stderr);
        assert!(r.stderr.contains(missing), "{args:?}: {}", r.stderr);
        assert!(r.stdout.is_empty(), "{args:?}: {}", r.stdout);
    }
    let t = dir.join("t.svg");
    let t = t.to_str().unwrap();
    let r = run(&["bench", "granularity", "--timeline", t]);
    assert_eq!(r.code, Some(2), "{}", r.stderr);
    assert!(r.stderr.contains("draws no timeline"), "{}", r.stderr);
    let r = run(&["bench", "scaling", "--backends", "thread", "--timeline", t]);
    assert_eq!(r.code, Some(2), "{}", r.stderr);
    assert!(r.stderr.contains("no process"), "{}", r.stderr);
    assert!(!dir.join("t.svg").exists());
    std::fs::remove_dir_all(dir).unwrap();
}

#[test]
fn bench_charts_name_backends_units_spread_machine_and_date() {
    let dir = scratch("charts");
    let (scaling, overhead) = (dir.join("s.svg"), dir.join("o.svg"));
    let mut args = QUICK_BENCH[0].to_vec();
    args.extend(["--format", "json", "--plot"]);
    args.push(scaling.to_str().unwrap());
    let r = run(&args);
    assert_eq!(r.code, Some(0), "{}", r.stderr);
    let v: serde_json::Value = serde_json::from_str(&r.stdout).unwrap();
    let processor = v["sysinfo"]["processor"].as_str().unwrap().to_owned();
    let year = v["date"].as_str().unwrap()[..4].to_owned();
    let svg = std::fs::read_to_string(&scaling).unwrap();
    assert_contains_all(
        &svg,
        &[
            "serial",
            "thread x1",
            "process x1",
            " ms",
            "fastest to slowest",
            processor.as_str(),
            year.as_str(),
        ],
        "scaling chart",
    );
    let mut args = QUICK_BENCH[1].to_vec();
    args.push("--plot");
    args.push(overhead.to_str().unwrap());
    let r = run(&args);
    assert_eq!(r.code, Some(0), "{}", r.stderr);
    let svg = std::fs::read_to_string(&overhead).unwrap();
    assert_contains_all(
        &svg,
        &[
            "jobs/s",
            "chunksize 1",
            "auto",
            "fastest to slowest",
            processor.as_str(),
        ],
        "overhead chart",
    );
    std::fs::remove_dir_all(dir).unwrap();
}

/// README: "Linux". What `sysinfo` prints there agrees with what the kernel says.
#[cfg(target_os = "linux")]
#[test]
fn sysinfo_agrees_with_the_linux_kernel() {
    let r = run(&["sysinfo", "--format", "json"]);
    assert_eq!(r.code, Some(0), "{}", r.stderr);
    let v: serde_json::Value = serde_json::from_str(&r.stdout).unwrap();
    assert_eq!(v["system"], "Linux");
    let release = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap();
    assert_eq!(v["release"], release.trim());
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap();
    let online = cpuinfo
        .lines()
        .filter(|l| l.starts_with("processor"))
        .count();
    if online > 0 {
        assert_eq!(v["logical_cores"], online);
    }
    if let Some(model) = cpuinfo.lines().find_map(|l| {
        let (k, v) = l.split_once(':')?;
        (k.trim() == "model name").then(|| v.trim().to_owned())
    }) {
        assert_eq!(v["processor"], model);
    }
    let available = std::thread::available_parallelism().unwrap().get();
    assert_eq!(v["available_cores"], available);
}
