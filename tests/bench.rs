//! `coordinator bench`: every suite runs, says which machine made it, prints the fields
//! it documents, and draws its charts. Tiny sizes: these check behaviour, not speed.

use crate::common::{assert_contains_all, run, scratch};

fn bench_json(args: &[&str]) -> serde_json::Value {
    let mut all = vec!["bench"];
    all.extend_from_slice(args);
    all.extend(["--format", "json"]);
    let r = run(&all);
    assert_eq!(r.code, Some(0), "{args:?}: {}", r.stderr);
    serde_json::from_str(&r.stdout).unwrap_or_else(|e| panic!("{e}: {}", r.stdout))
}

fn assert_svg(path: &std::path::Path, needle: &str) {
    let svg = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    assert!(svg.starts_with("<svg"), "{} is not an SVG", path.display());
    assert!(svg.contains(needle), "{} lacks {needle:?}", path.display());
}

#[test]
fn scaling_reports_every_configuration_and_draws() {
    let dir = scratch("bench-scaling");
    let (plot, timeline) = (dir.join("s.svg"), dir.join("t.svg"));
    let v = bench_json(&[
        "scaling",
        "--samples",
        "3000",
        "--widths",
        "1:1.2:12",
        "--repeat",
        "2",
        "--workers",
        "1,2",
        "--plot",
        plot.to_str().unwrap(),
        "--timeline",
        timeline.to_str().unwrap(),
    ]);
    assert_eq!(v["suite"], "scaling");
    assert!(v["sysinfo"]["logical_cores"].as_u64().unwrap() >= 1);
    assert_eq!(v["identical"], true);
    let rows = v["rows"].as_array().unwrap();
    let configs: Vec<(String, u64)> = rows
        .iter()
        .map(|r| {
            (
                r["backend"].as_str().unwrap().to_owned(),
                r["workers"].as_u64().unwrap(),
            )
        })
        .collect();
    let expected: Vec<(String, u64)> = [
        ("serial", 1),
        ("process", 1),
        ("process", 2),
        ("thread", 1),
        ("thread", 2),
    ]
    .iter()
    .map(|(b, w)| (b.to_string(), *w))
    .collect();
    let mut sorted = configs.clone();
    sorted.sort();
    let mut want = expected.clone();
    want.sort();
    assert_eq!(sorted, want);
    assert_eq!(configs[0].0, "serial");
    for r in rows {
        let (min, med, max) = (
            r["min_s"].as_f64().unwrap(),
            r["median_s"].as_f64().unwrap(),
            r["max_s"].as_f64().unwrap(),
        );
        assert!(0.0 < min && min <= med && med <= max, "{r}");
        let speedup = r["speedup"].as_f64().unwrap();
        assert!((speedup - rows[0]["median_s"].as_f64().unwrap() / med).abs() < 1e-9);
        assert!(
            (r["efficiency"].as_f64().unwrap() - speedup / r["workers"].as_f64().unwrap()).abs()
                < 1e-9
        );
    }
    assert_svg(&plot, "serial");
    assert_svg(&plot, "process x2");
    assert_svg(&timeline, "worker 1");
    std::fs::remove_dir_all(dir).unwrap();
}

#[test]
fn scaling_on_a_data_file_and_as_a_table_with_sysinfo() {
    let dir = scratch("bench-data");
    let csv = dir.join("d.csv");
    std::fs::write(&csv, "x,y\n0.1,0.2\n-0.3,0.4\n0.5,-0.6\n1.5,0.1\n").unwrap();
    let r = run(&[
        "bench",
        "scaling",
        "--data",
        csv.to_str().unwrap(),
        "--repeat",
        "1",
        "--workers",
        "1",
        "--backends",
        "thread",
    ]);
    assert_eq!(r.code, Some(0), "{}", r.stderr);
    assert_contains_all(
        &r.stdout,
        &[
            "processor",
            "compiler",
            "scaling: Parzen sweep of 100 widths over 4 samples",
            "serial",
            "thread",
            "identical",
        ],
        "stdout",
    );
    assert!(!r.stdout.contains("process "), "{}", r.stdout);
    std::fs::remove_dir_all(dir).unwrap();
}

#[test]
fn overhead_measures_start_up_round_trips_and_throughput() {
    let v = bench_json(&[
        "overhead",
        "--jobs",
        "3000",
        "--repeat",
        "1",
        "--workers",
        "2",
    ]);
    assert_eq!(v["suite"], "overhead");
    let rows = v["rows"].as_array().unwrap();
    assert_eq!(rows.len(), 3, "{v}");
    for r in rows {
        for key in [
            "ready_ms",
            "apply_p50_us",
            "apply_p90_us",
            "chunk1_jobs_per_s",
            "auto_jobs_per_s",
        ] {
            assert!(
                r[key]
                    .as_f64()
                    .is_some_and(|x| x > 0.0 || (key == "ready_ms" && x >= 0.0)),
                "{key} in {r}"
            );
        }
        assert!(r["apply_p50_us"].as_f64() <= r["apply_p90_us"].as_f64());
        let bytes = r["bytes_per_job"].as_f64().unwrap();
        if r["backend"] == "process" {
            // Frame headers, the job id, the result tag: a no-op costs bytes only there.
            assert!((20.0..400.0).contains(&bytes), "{bytes} bytes per job");
        } else {
            assert_eq!(bytes, 0.0);
        }
    }
}

#[test]
fn granularity_rows_and_break_even() {
    let dir = scratch("bench-gran");
    let plot = dir.join("g.svg");
    let v = bench_json(&[
        "granularity",
        "--sizes",
        "5,2000",
        "--repeat",
        "1",
        "--workers",
        "2",
        "--plot",
        plot.to_str().unwrap(),
    ]);
    assert_eq!(v["suite"], "granularity");
    let rows = v["rows"].as_array().unwrap();
    assert_eq!(rows.len(), 6);
    for r in rows {
        for key in ["backend", "workers", "job_us", "jobs", "wall_s", "speedup"] {
            assert!(!r[key].is_null(), "{key} missing in {r}");
        }
        let us = r["job_us"].as_f64().unwrap();
        let jobs = r["jobs"].as_f64().unwrap();
        // The wall time can never be shorter than the busy work divided over the workers.
        assert!(
            r["wall_s"].as_f64().unwrap()
                >= us * 1e-6 * jobs / r["workers"].as_f64().unwrap() * 0.99,
            "{r}"
        );
    }
    let serial: Vec<&serde_json::Value> =
        rows.iter().filter(|r| r["backend"] == "serial").collect();
    assert!(serial.iter().all(|r| r["speedup"].as_f64() == Some(1.0)));
    assert_eq!(v["break_even_us"].as_array().unwrap().len(), 2);
    assert_svg(&plot, "break-even");
    let csv = run(&[
        "bench",
        "granularity",
        "--sizes",
        "50",
        "--repeat",
        "1",
        "--workers",
        "1",
        "--backends",
        "thread",
        "--format",
        "csv",
    ]);
    assert_eq!(csv.code, Some(0), "{}", csv.stderr);
    let lines: Vec<&str> = csv.stdout.lines().collect();
    assert_eq!(
        lines[0],
        "backend,workers,job_us,jobs,wall_s,min_s,max_s,speedup"
    );
    assert_eq!(lines.len(), 3);
    std::fs::remove_dir_all(dir).unwrap();
}

#[test]
fn bad_bench_options_are_usage_errors() {
    for (args, needle) in [
        (vec!["bench", "scaling", "--repeat", "0"], "got 0"),
        (vec!["bench", "scaling", "--workers", "0"], "got 0"),
        (vec!["bench", "scaling", "--workers", "2,x"], "\"x\""),
        (vec!["bench", "overhead", "--backends", "gpu"], "\"gpu\""),
        (vec!["bench", "granularity", "--sizes=-5"], "got -5"),
        (vec!["bench", "scaling", "--plot", "out.png"], "out.png"),
        (vec!["bench", "overhead", "--jobs", "0"], "got 0"),
    ] {
        let r = run(&args);
        assert_eq!(r.code, Some(2), "{args:?}: {}", r.stderr);
        assert!(r.stderr.contains(needle), "{args:?}: {}", r.stderr);
        assert_eq!(r.stderr.lines().count(), 1, "{args:?}: {}", r.stderr);
    }
    // What clap rejects gets clap's whole message.
    let r = run(&["bench", "fastest"]);
    assert_eq!(r.code, Some(2), "{}", r.stderr);
    assert!(r.stderr.contains("'fastest'"), "{}", r.stderr);
    assert!(
        r.stderr
            .contains("[possible values: scaling, overhead, granularity]")
    );
    let r = run(&["bench", "granularity", "--sizes", "-5"]);
    assert_eq!(r.code, Some(2), "{}", r.stderr);
    assert!(r.stderr.contains("got -5"), "{}", r.stderr);
}
