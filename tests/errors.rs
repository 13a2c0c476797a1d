//! Every bad input: exit code 2, no panic, no process started; one clear line on stderr
//! naming the value, or clap's own message for what clap parses.

use crate::common::{run, scratch};

fn assert_usage_error(args: &[&str], needle: &str) {
    let r = run(args);
    assert_eq!(
        r.code,
        Some(2),
        "{args:?}: expected exit 2, stdout {:?} stderr {:?}",
        r.stdout,
        r.stderr
    );
    let lines: Vec<&str> = r.stderr.lines().filter(|l| !l.trim().is_empty()).collect();
    assert_eq!(
        lines.len(),
        1,
        "{args:?}: expected one line, got {:?}",
        r.stderr
    );
    assert!(
        lines[0].contains(needle),
        "{args:?}: {:?} does not mention {needle:?}",
        lines[0]
    );
    assert!(
        !r.stderr.contains("panicked") && !r.stderr.contains("RUST_BACKTRACE"),
        "{args:?}: {}",
        r.stderr
    );
    assert!(
        r.stdout.is_empty(),
        "{args:?}: printed results: {}",
        r.stdout
    );
}

/// What clap rejects: clap's whole message (what, where, what to try), exit code 2.
fn assert_clap_error(args: &[&str], needle: &str) {
    let r = run(args);
    assert_eq!(r.code, Some(2), "{args:?}: {}", r.stderr);
    assert!(r.stderr.starts_with("error: "), "{args:?}: {}", r.stderr);
    assert!(r.stderr.contains(needle), "{args:?}: {}", r.stderr);
    assert!(
        r.stderr.ends_with("For more information, try '--help'.\n"),
        "{args:?}: {}",
        r.stderr
    );
    assert!(r.stdout.is_empty(), "{args:?}: {}", r.stdout);
}

#[test]
fn bad_worker_counts() {
    assert_usage_error(&["--workers", "0"], "got 0");
    assert_usage_error(&["--workers", "100000"], "got 100000");
    assert_clap_error(&["--workers", "many"], "'many'");
    assert_clap_error(&["--workers", "-3"], "-3");
}

#[test]
fn bad_widths() {
    assert_usage_error(&["--widths", ""], "--widths");
    assert_usage_error(&["--widths", "0.5,,1"], "0.5,,1");
    assert_usage_error(&["--widths", "0.5,-1"], "-1");
    assert_usage_error(
        &["--widths", "0"],
        "\"0\": a window width must be a finite number > 0",
    );
    assert_usage_error(&["--widths", "nan"], "\"nan\"");
    assert_usage_error(&["--widths", "1,inf"], "\"inf\"");
    assert_usage_error(&["--widths", "abc"], "abc");
    assert_usage_error(&["--widths", "1:2:0"], "1:2:0");
    assert_usage_error(&["--widths", "1:2"], "1:2");
    assert_usage_error(&["--widths", "0:1:5"], "\"0\"");
}

#[test]
fn bad_samples_and_gaussians() {
    assert_usage_error(&["--samples", "0"], "got 0");
    assert_clap_error(&["--samples", "1.5"], "1.5");
    assert_usage_error(&["--samples", "1e12"], "1000000000000");
    assert_usage_error(&["--point", "1,2,3"], "3 coordinates");
    assert_usage_error(&["--point", "1,x"], "\"x\"");
    assert_usage_error(&["--point", "nan,0"], "NaN");
    assert_usage_error(&["--cov", "1,2,3,4"], "symmetric");
    assert_usage_error(&["--cov", "1,0,0,-1"], "positive definite");
    assert_usage_error(&["--cov", "1,0,0"], "3 values");
    assert_usage_error(&["--mean", "1,2,3", "--cov", "1,0,0,1"], "--cov gives 2");
    assert_usage_error(&["--dims", "0"], "got 0");
    assert_usage_error(&["--dims", "3", "--point", "0,0"], "2 coordinates");
}

#[test]
fn bad_options() {
    assert_usage_error(&["--chunksize", "0"], "\"0\"");
    assert_usage_error(&["--chunksize", "lots"], "\"lots\"");
    assert_clap_error(&["--backend", "gpu"], "'gpu'");
    assert_clap_error(&["--format", "xml"], "[possible values: table, json, csv]");
    // A negative number is a value, not an unknown flag: named by the check that refuses it.
    assert_usage_error(&["--job-timeout", "-1"], "got -1");
    assert_usage_error(&["--widths", "-1"], "\"-1\"");
    assert_usage_error(&["--max-memory", "-1G"], "\"-1G\"");
    assert_clap_error(&["--seed", "-1"], "invalid value '-1' for '--seed <S>'");
    assert_clap_error(
        &["--workers", "-2"],
        "invalid value '-2' for '--workers <N>'",
    );
    assert_usage_error(&["--job-timeout=-1"], "got -1");
    assert_usage_error(&["--job-timeout", "nan"], "NaN");
    assert_clap_error(&["--data", "x.csv", "--samples", "5"], "--samples");
    assert_clap_error(&["--bogus"], "--bogus");
}

#[test]
fn bad_data_files() {
    let dir = scratch("bad-data");
    let missing = dir.join("missing.csv");
    assert_usage_error(&["--data", missing.to_str().unwrap()], "missing.csv");
    assert_usage_error(
        &["--data", dir.to_str().unwrap()],
        dir.file_name().unwrap().to_str().unwrap(),
    );

    let cases: &[(&str, &str, &str)] = &[
        ("empty.csv", "", "no samples"),
        ("header-only.csv", "x,y\n", "no samples"),
        ("malformed.csv", "x,y\n1,2\n3,oops\n", "line 3"),
        ("ragged.csv", "1,2\n3,4,5\n", "line 2"),
        ("nan.csv", "1,2\nnan,4\n", "line 2"),
    ];
    for (name, body, needle) in cases {
        let path = dir.join(name);
        std::fs::write(&path, body).unwrap();
        assert_usage_error(&["--data", path.to_str().unwrap()], needle);
    }
    let npy = dir.join("not.npy");
    std::fs::write(&npy, b"definitely not numpy").unwrap();
    assert_usage_error(&["--data", npy.to_str().unwrap()], "not.npy");
    let point = dir.join("ok.csv");
    std::fs::write(&point, "1,2,3\n4,5,6\n").unwrap();
    assert_usage_error(
        &["--data", point.to_str().unwrap(), "--point", "0,0"],
        "3 dimensions",
    );
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn a_stray_worker_marker_is_ignored_with_a_warning() {
    use crate::common::{coordinator, run_env, watch};
    use std::time::Duration;
    for marker in ["pool", "process", "junk"] {
        let r = run_env(
            &["--help"],
            &[("PROCPOOL_WORKER", marker), ("PROCPOOL_PARENT", "1")],
            Duration::from_secs(60),
        );
        assert_eq!(r.code, Some(0), "{marker}: {}", r.stderr);
        assert!(r.stdout.contains("Usage"), "{marker}: {}", r.stdout);
        assert!(
            r.stderr.contains("ignoring PROCPOOL_WORKER"),
            "{marker}: {}",
            r.stderr
        );
    }
    // Even with a socket on stdin (what a real worker has), it runs as itself.
    let (ours, theirs) = std::os::unix::net::UnixStream::pair().unwrap();
    let mut child = coordinator()
        .args(["sysinfo", "--format", "json"])
        .env("PROCPOOL_WORKER", "pool")
        .stdin(std::process::Stdio::from(std::os::fd::OwnedFd::from(
            theirs,
        )))
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let status = watch(&mut child, &["sysinfo"], Duration::from_secs(60));
    drop(ours);
    assert!(status.success(), "{status:?}");
}

#[test]
fn long_inputs_are_quoted_at_most_about_200_bytes() {
    let long = "7".repeat(10_000);
    let dir = scratch("long-input");
    let bad_line = dir.join("long-line.csv");
    std::fs::write(&bad_line, format!("1,2\n{long}x,1\n")).unwrap();
    let cases: Vec<Vec<String>> = vec![
        vec!["--widths".into(), format!("1,{long}x")],
        vec!["--widths".into(), format!("1:2:{long}")],
        vec!["--widths".into(), format!("1,,{long}")],
        vec!["--point".into(), format!("1,{long}x")],
        vec!["--mean".into(), format!("{long}x,0")],
        vec!["--chunksize".into(), long.clone()],
        vec!["--max-memory".into(), format!("{long}Q")],
        vec!["--samples".into(), format!("{long}x")],
        vec!["--workers".into(), format!("{long}x")],
        vec![format!("--{long}")],
        vec!["--data".into(), bad_line.to_str().unwrap().to_owned()],
        vec![
            "bench".into(),
            "scaling".into(),
            "--workers".into(),
            format!("1,{long}x"),
        ],
    ];
    for args in &cases {
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let r = run(&args);
        let shown: Vec<&str> = args.iter().map(|a| &a[..a.len().min(20)]).collect();
        assert_eq!(r.code, Some(2), "{shown:?}: {}", r.stderr);
        assert!(
            r.stderr.len() < 1000 && r.stderr.lines().all(|l| l.len() < 600),
            "{shown:?}: {} bytes on stderr: {}",
            r.stderr.len(),
            r.stderr
        );
        assert!(
            r.stderr.contains("bytes)") || r.stderr.contains("line 2"),
            "{shown:?}: the cut is not said: {}",
            r.stderr
        );
    }
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn what_would_not_fit_is_refused_before_it_is_allocated() {
    // 100 million samples of 1000 dimensions: 800 GB, refused before a sample is drawn.
    assert_usage_error(
        &["--samples", "1e8", "--dims", "1000"],
        "800000000000 + index",
    );
    assert_usage_error(&["--data", "/dev/zero"], "not a regular file");
    // A file larger than the budget is refused before it is read (a sparse file: no disk).
    let dir = scratch("huge-file");
    let huge = dir.join("huge.csv");
    std::fs::File::create(&huge)
        .unwrap()
        .set_len(64 << 30)
        .unwrap();
    assert_usage_error(&["--data", huge.to_str().unwrap()], "huge.csv");
    assert_usage_error(
        &["--data", huge.to_str().unwrap(), "--max-memory", "1G"],
        "--max-memory 1G",
    );
    std::fs::remove_dir_all(&dir).unwrap();
    // Chunk sizes whose doubling would overflow: refused, never a hang (under the watchdog).
    for chunk in ["9223372036854775808", "18446744073709551615", "16777217"] {
        assert_usage_error(&["--chunksize", chunk], "--chunksize must be");
        assert_usage_error(
            &["bench", "overhead", "--chunksize", chunk],
            "--chunksize must be",
        );
    }
    let r = run(&["--chunksize", "16777216", "--widths", "0.5,1", "-w", "1"]);
    assert_eq!(r.code, Some(0), "{}", r.stderr);
}

#[test]
fn a_failed_row_names_a_real_pid_and_attempt() {
    use crate::common::run_env;
    use std::time::Duration;
    for (fault, extra) in [
        ("abort-on=3", &["--retries", "1"][..]),
        ("hang-on=3", &["--job-timeout", "0.5"][..]),
    ] {
        let mut args = vec!["--widths", "0.1:1.2:12", "-w", "2", "--chunksize", "1"];
        args.extend_from_slice(extra);
        args.extend(["--format", "csv"]);
        let r = run_env(&args, &[("PROCPOOL_FAULT", fault)], Duration::from_secs(60));
        assert_eq!(r.code, Some(1), "{fault}: {}", r.stderr);
        let failed: Vec<&str> = r.stdout.lines().filter(|l| l.contains("failed")).collect();
        assert_eq!(failed.len(), 1, "{fault}: {}", r.stdout);
        for bad in ["pid 0", "attempt 0", "started 0", "job 0"] {
            assert!(!failed[0].contains(bad), "{fault}: {:?}", failed[0]);
            assert!(!r.stderr.contains(bad), "{fault}: {}", r.stderr);
        }
        assert!(failed[0].contains("pid "), "{fault}: {:?}", failed[0]);
    }
}
