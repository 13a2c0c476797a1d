//! The sweep as a user sees it: formats, backends, data files, logging, sysinfo.

use crate::common::{assert_contains_all, coordinator, density_bits, json, run, scratch};
use rand::RngExt;
use std::io::Write;
use std::process::Stdio;

const TRUE_2D: f64 = 0.15915494309189535; // 1 / (2π)

#[test]
fn default_table_has_every_width_the_truth_and_the_best() {
    let r = run(&["--workers", "2"]);
    assert_eq!(r.code, Some(0), "{}", r.stderr);
    assert!(
        r.stdout.contains("true density p(x) = 0.159155"),
        "{}",
        r.stdout
    );
    assert!(r.stdout.contains("closest estimate: h = "), "{}", r.stdout);
    assert!(
        r.stdout.contains("process backend, 2 workers"),
        "{}",
        r.stdout
    );
    let rows: Vec<&str> = r
        .stdout
        .lines()
        .filter(|l| {
            let cols: Vec<&str> = l.split_whitespace().collect();
            cols.len() >= 4 && cols[0].parse::<u64>().is_ok() && cols[1].parse::<f64>().is_ok()
        })
        .collect();
    assert_eq!(rows.len(), 12, "{}", r.stdout);
    for (i, row) in rows.iter().enumerate() {
        let cols: Vec<&str> = row.split_whitespace().collect();
        assert_eq!(cols[0], i.to_string());
        assert_eq!(cols[1].parse::<f64>().unwrap(), (i + 1) as f64 / 10.0);
    }
    assert!(r.stderr.is_empty(), "unexpected stderr: {}", r.stderr);
}

#[test]
fn json_report_has_the_documented_fields() {
    let r = run(&[
        "--workers",
        "3",
        "--format",
        "json",
        "--samples",
        "5000",
        "--seed",
        "7",
    ]);
    let v = json(&r);
    assert_eq!(v["backend"], "process");
    assert_eq!(v["workers"], 3);
    assert_eq!(v["samples"], 5000);
    assert_eq!(v["dims"], 2);
    assert_eq!(v["point"], serde_json::json!([0.0, 0.0]));
    assert_eq!(v["true_density"].as_f64(), Some(TRUE_2D));
    assert!(v["elapsed_s"].as_f64().is_some_and(|s| s > 0.0));
    let pids = v["pids"].as_array().unwrap();
    assert_eq!(pids.len(), 3);
    assert!(
        pids.iter()
            .all(|p| p.as_u64() != Some(u64::from(std::process::id())))
    );
    let results = v["results"].as_array().unwrap();
    assert_eq!(results.len(), 12);
    let mut best = (f64::INFINITY, 0);
    for (i, row) in results.iter().enumerate() {
        assert_eq!(row["pos"], i);
        assert_eq!(row["h"].as_f64(), Some((i + 1) as f64 / 10.0));
        let d = row["density"].as_f64().unwrap();
        let k = row["count"].as_u64().unwrap();
        let h = (i + 1) as f64 / 10.0;
        assert_eq!(d, (k as f64 / 5000.0) / h.powf(2.0));
        if (d - TRUE_2D).abs() < best.0 {
            best = ((d - TRUE_2D).abs(), i);
        }
    }
    assert_eq!(v["best"]["pos"], best.1);
    assert_eq!(v["best"]["density"], results[best.1]["density"]);
    // Same seed, same samples: a second run gives the same bits.
    let again = json(&run(&[
        "--workers",
        "1",
        "--format",
        "json",
        "--samples",
        "5000",
        "--seed",
        "7",
    ]));
    assert_eq!(density_bits(&v), density_bits(&again));
    let other = json(&run(&[
        "--workers",
        "1",
        "--format",
        "json",
        "--samples",
        "5000",
        "--seed",
        "8",
    ]));
    assert_ne!(density_bits(&v), density_bits(&other));
}

#[test]
fn csv_output_parses() {
    let r = run(&["--format", "csv", "--widths", "0.5:1.5:5", "-w", "2"]);
    assert_eq!(r.code, Some(0), "{}", r.stderr);
    let (header, rows) = crate::common::csv_rows(&r.stdout);
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
    let rows: Vec<Vec<f64>> = rows
        .iter()
        .map(|row| {
            assert_eq!(
                row[5..],
                ["", "ok", ""],
                "no lscv, no error expected: {row:?}"
            );
            row[..5].iter().map(|c| c.parse::<f64>().unwrap()).collect()
        })
        .collect();
    assert_eq!(rows.len(), 5);
    for (i, row) in rows.iter().enumerate() {
        assert_eq!(row[0], i as f64);
        assert_eq!(row[1], [0.5, 0.75, 1.0, 1.25, 1.5][i]);
        assert_eq!(row[4], (row[3] - TRUE_2D).abs());
    }
}

#[test]
fn all_three_backends_give_identical_bits() {
    let common = [
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
    let mut reports = Vec::new();
    for backend in ["serial", "thread", "process"] {
        let mut args = common.to_vec();
        args.extend(["--backend", backend, "--workers", "3", "--chunksize", "2"]);
        reports.push(json(&run(&args)));
    }
    assert_eq!(density_bits(&reports[0]), density_bits(&reports[1]));
    assert_eq!(density_bits(&reports[0]), density_bits(&reports[2]));
    assert_eq!(reports[0]["best"], reports[2]["best"]);
    assert_eq!(reports[1]["backend"], "thread");
}

/// The article's estimate, written independently of the crate under test.
fn naive(samples: &[Vec<f64>], point: &[f64], h: f64) -> f64 {
    let k = samples
        .iter()
        .filter(|x| {
            x.iter()
                .zip(point)
                .all(|(xi, pi)| ((xi - pi) / h).abs() <= 0.5)
        })
        .count();
    (k as f64 / samples.len() as f64) / h.powf(point.len() as f64)
}

fn random_samples(n: usize, d: usize) -> Vec<Vec<f64>> {
    let mut rng = rand::rng();
    (0..n)
        .map(|_| {
            (0..d)
                .map(|_| rng.random_range(-3.0..3.0) * rng.random_range(0.0..1.0))
                .collect()
        })
        .collect()
}

fn write_npy(path: &std::path::Path, samples: &[Vec<f64>]) {
    let (n, d) = (samples.len(), samples[0].len());
    let mut header = format!("{{'descr': '<f8', 'fortran_order': False, 'shape': ({n}, {d}), }}");
    while (10 + header.len() + 1) % 64 != 0 {
        header.push(' ');
    }
    header.push('\n');
    let mut bytes = b"\x93NUMPY\x01\x00".to_vec();
    bytes.extend_from_slice(&(header.len() as u16).to_le_bytes());
    bytes.extend_from_slice(header.as_bytes());
    for row in samples {
        for x in row {
            bytes.extend_from_slice(&x.to_le_bytes());
        }
    }
    std::fs::write(path, bytes).unwrap();
}

#[test]
fn data_files_match_an_independent_naive_estimate() {
    let dir = scratch("data");
    for (d, point) in [
        (2, vec![0.25, -0.5]),
        (3, vec![0.0, 0.1, -0.2]),
        (1, vec![0.3]),
    ] {
        let samples = random_samples(3000, d);
        let csv = dir.join(format!("s{d}.csv"));
        let mut f = std::fs::File::create(&csv).unwrap();
        writeln!(
            f,
            "{}",
            (0..d)
                .map(|j| format!("x{j}"))
                .collect::<Vec<_>>()
                .join(",")
        )
        .unwrap();
        for row in &samples {
            writeln!(
                f,
                "{}",
                row.iter()
                    .map(|x| format!("{x:?}"))
                    .collect::<Vec<_>>()
                    .join(",")
            )
            .unwrap();
        }
        drop(f);
        let npy = dir.join(format!("s{d}.npy"));
        write_npy(&npy, &samples);
        let point_arg = point
            .iter()
            .map(|x| format!("{x:?}"))
            .collect::<Vec<_>>()
            .join(",");
        let widths = "0.02,0.1,0.33,0.5,1,1.7,2.5,4";
        for file in [&csv, &npy] {
            let v = json(&run(&[
                "--data",
                file.to_str().unwrap(),
                "--point",
                &point_arg,
                "--widths",
                widths,
                "--format",
                "json",
                "-w",
                "2",
            ]));
            assert_eq!(v["true_density"], serde_json::Value::Null);
            assert_eq!(v["best"], serde_json::Value::Null);
            assert_eq!(v["dims"], d);
            assert_eq!(v["samples"], 3000);
            let expected: Vec<u64> = widths
                .split(',')
                .map(|h| naive(&samples, &point, h.parse().unwrap()).to_bits())
                .collect();
            assert_eq!(density_bits(&v), expected, "{} ({d} dims)", file.display());
        }
        let table = run(&[
            "--data",
            csv.to_str().unwrap(),
            "--point",
            &point_arg,
            "-w",
            "1",
        ]);
        assert!(
            table.stdout.contains("true density unknown"),
            "{}",
            table.stdout
        );
    }
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn verbose_shows_the_life_of_the_pool() {
    let r = run(&["-v", "--workers", "2", "--widths", "0.5,1"]);
    assert_eq!(r.code, Some(0), "{}", r.stderr);
    assert_contains_all(
        &r.stderr,
        &[
            "worker spawned",
            "context",
            "chunk dispatched",
            "results received",
            "worker exited with code 0",
        ],
        "-v output",
    );
    let quiet = run(&["-q", "--workers", "2", "--widths", "0.5,1"]);
    assert!(quiet.stderr.is_empty(), "{}", quiet.stderr);
}

#[test]
fn sysinfo_names_the_machine_and_the_build() {
    let r = run(&["sysinfo"]);
    assert_eq!(r.code, Some(0), "{}", r.stderr);
    assert_contains_all(
        &r.stdout,
        &[
            "coordinator",
            "rustc 1.",
            "system",
            "release",
            "machine",
            "processor",
            "logical",
        ],
        "sysinfo",
    );
    let v: serde_json::Value =
        serde_json::from_str(&run(&["sysinfo", "--format", "json"]).stdout).unwrap();
    assert!(v["logical_cores"].as_u64().unwrap() >= 1);
    assert_eq!(v["version"], env!("CARGO_PKG_VERSION"));
}

#[test]
fn a_closed_stdout_ends_quietly() {
    let mut child = coordinator()
        .args(["--widths", "0.1:2:2000", "--samples", "2000", "-w", "2"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    drop(child.stdout.take());
    let out = child.wait_with_output().unwrap();
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(!String::from_utf8_lossy(&out.stderr).contains("panicked"));
}

/// The flags a degenerate-sweep warning suggests, split into arguments.
fn suggested(stderr: &str) -> Vec<String> {
    let (_, tail) = stderr
        .split_once("on their scale, try ")
        .unwrap_or_else(|| panic!("no suggestion in: {stderr}"));
    let line = tail.lines().next().unwrap_or_default();
    line.split_whitespace().map(str::to_owned).collect()
}

/// Counts of a JSON report.
fn counts(report: &serde_json::Value) -> Vec<u64> {
    report["results"]
        .as_array()
        .expect("results")
        .iter()
        .map(|r| r["count"].as_u64().expect("count"))
        .collect()
}

#[test]
fn a_sweep_off_the_datas_scale_is_warned_with_flags_that_fit() {
    let dir = scratch("off-scale");
    let mut rng = rand::rng();
    // Data in other units, far from the default point: any scale, any offset.
    let d = rng.random_range(1..=3usize);
    let scale = 10f64.powf(rng.random_range(-3.0..4.0));
    let offsets: Vec<f64> = (0..d)
        .map(|_| (50.0 * scale + 10.0) * if rng.random() { 1.0 } else { -1.0 })
        .collect();
    let samples: Vec<Vec<f64>> = random_samples(3000, d)
        .into_iter()
        .map(|row| {
            row.iter()
                .zip(&offsets)
                .map(|(x, o)| o + x * scale)
                .collect()
        })
        .collect();
    let path = dir.join("far.npy");
    write_npy(&path, &samples);
    let file = path.to_str().expect("utf-8 path");
    let context = format!("d = {d}, scale {scale}, offsets {offsets:?}");

    let r = run(&["--data", file, "-w", "2", "--format", "json"]);
    let report = json(&r);
    assert!(counts(&report).iter().all(|&k| k == 0), "{context}");
    assert!(
        r.stderr
            .contains("warning: no sample lies in any window around x = (0"),
        "{context}: {}",
        r.stderr
    );
    // The suggested point and widths give a sweep with something to say.
    let flags = suggested(&r.stderr);
    assert!(flags.iter().any(|f| f == "--point"), "{flags:?}");
    let mut args = vec!["--data", file, "-w", "2", "--format", "json"];
    args.extend(flags.iter().map(String::as_str));
    let again = run(&args);
    let k = counts(&json(&again));
    assert!(
        k.iter().any(|&k| k > 0) && k.iter().any(|&k| k < 3000),
        "{context}: {flags:?} gave counts {k:?}"
    );
    assert!(
        !again.stderr.contains("warning"),
        "{context}: {}",
        again.stderr
    );

    // Windows too small around a point inside the data: only the widths are off.
    let r = run(&["--widths", "1e-4,2e-4"]);
    assert!(r.stderr.contains("no sample lies"), "{}", r.stderr);
    let flags = suggested(&r.stderr);
    assert_eq!(
        flags.first().map(String::as_str),
        Some("--widths"),
        "{flags:?}"
    );

    // Widths larger than the data: only the widths are off.
    let r = run(&["--widths", "1e6,2e6", "--format", "csv"]);
    assert_eq!(r.code, Some(0), "{}", r.stderr);
    assert!(r.stderr.contains("holds all 10000 samples"), "{}", r.stderr);
    let flags = suggested(&r.stderr);
    assert_eq!(
        flags.first().map(String::as_str),
        Some("--widths"),
        "{flags:?}"
    );
    let mut args = vec!["--format", "json"];
    args.extend(flags.iter().map(String::as_str));
    let again = run(&args);
    let k = counts(&json(&again));
    assert!(
        k.iter().any(|&k| k > 0 && k < 10_000),
        "{flags:?} gave {k:?}"
    );
    assert!(!again.stderr.contains("warning"), "{}", again.stderr);

    // -q keeps stderr for errors; a sweep on the data's scale says nothing.
    let quiet = run(&["--widths", "1e6,2e6", "-q"]);
    assert_eq!(quiet.code, Some(0), "{}", quiet.stderr);
    assert!(!quiet.stderr.contains("warning"), "{}", quiet.stderr);
    let plain = run(&[]);
    assert!(!plain.stderr.contains("warning"), "{}", plain.stderr);
    std::fs::remove_dir_all(&dir).ok();
}
