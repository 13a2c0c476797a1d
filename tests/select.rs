//! Choosing the width: least-squares cross-validation checked against a double loop
//! written here, on every backend; the rules `--select true|lscv|none`; values that are not
//! finite flagged and never chosen; the memory and cost budgets; `--plot`.

use crate::common::{assert_contains_all, density_bits, json, lscv_bits, run, run_with, scratch};
use rand::RngExt;
use serde_json::Value;
use std::path::Path;
use std::time::Duration;

/// Compensated (Neumaier) sum, so the reference's own rounding stays far below 1e-12.
#[derive(Default)]
struct Sum {
    sum: f64,
    carry: f64,
}

impl Sum {
    fn add(&mut self, x: f64) {
        let t = self.sum + x;
        if self.sum.abs() >= x.abs() {
            self.carry += (self.sum - t) + x;
        } else {
            self.carry += (x - t) + self.sum;
        }
        self.sum = t;
    }
}

/// The definition, as a double loop over all ordered pairs: `S`, `C` and the score
/// `S / (n^2 h^2d) - 2 C / (n (n-1) h^d)`.
fn brute_force(x: &[Vec<f64>], h: f64) -> (f64, u64, f64) {
    let n = x.len();
    let d = x[0].len();
    let mut s = Sum::default();
    let mut c = 0u64;
    for (i, a) in x.iter().enumerate() {
        for (j, b) in x.iter().enumerate() {
            let mut prod = 1.0;
            let mut far = 0.0_f64;
            for (p, q) in a.iter().zip(b) {
                let gap = (p - q).abs();
                prod *= (h - gap).max(0.0);
                far = far.max(gap);
            }
            s.add(prod);
            // `far <= h/2` in real numbers: doubling is exact.
            if i != j && 2.0 * far <= h {
                c += 1;
            }
        }
    }
    let s = s.sum + s.carry;
    let (nf, hd) = (n as f64, h.powf(d as f64));
    let score = s / (nf * nf * hd * hd) - 2.0 * c as f64 / (nf * (nf - 1.0) * hd);
    (s, c, score)
}

/// Samples on a grid of step 0.25 (so pairs lie exactly h/2 apart for h = 0.5 and 1),
/// every fifth one repeated (duplicates), and every column spread.
fn grid_samples(n: usize, d: usize) -> Vec<Vec<f64>> {
    let mut rng = rand::rng();
    let mut rows: Vec<Vec<f64>> = Vec::new();
    while rows.len() < n {
        let row: Vec<f64> = (0..d)
            .map(|_| f64::from(rng.random_range(-8i32..=8)) * 0.25)
            .collect();
        if rows.len() % 5 == 4 {
            rows.push(rows[rows.len() - 1].clone());
        } else {
            rows.push(row);
        }
    }
    // Two rows that differ in every column, so no column is constant.
    rows[0] = vec![-2.0; d];
    rows[1] = vec![2.0; d];
    rows
}

fn write_csv(path: &Path, rows: &[Vec<f64>]) {
    let text: String = rows
        .iter()
        .map(|r| {
            let cells: Vec<String> = r.iter().map(|v| format!("{v:?}")).collect();
            cells.join(",") + "\n"
        })
        .collect();
    std::fs::write(path, text).unwrap();
}

fn sweep_json(file: &Path, widths: &str, extra: &[&str]) -> Value {
    let mut args = vec![
        "--data",
        file.to_str().unwrap(),
        "--widths",
        widths,
        "--format",
        "json",
        "-w",
        "2",
    ];
    args.extend_from_slice(extra);
    json(&run(&args))
}

#[test]
fn lscv_equals_a_double_loop_and_selects_its_width_on_every_backend() {
    let dir = scratch("lscv-brute");
    let widths = [0.25, 0.5, 0.75, 1.0, 1.5, 2.5];
    let spec = "0.25,0.5,0.75,1,1.5,2.5";
    for (n, d) in [(50, 1), (120, 2), (300, 2), (200, 3), (80, 4)] {
        let x = grid_samples(n, d);
        let file = dir.join(format!("grid-{n}-{d}.csv"));
        write_csv(&file, &x);
        // --data selects by cross-validation by default.
        let v = sweep_json(&file, spec, &["--backend", "serial"]);
        assert_eq!(v["select"], "lscv");
        let rows = v["results"].as_array().unwrap();
        let mut want = Vec::new();
        for (row, &h) in rows.iter().zip(&widths) {
            let (s, c, score) = brute_force(&x, h);
            assert_eq!(row["status"], "ok", "{row}");
            assert_eq!(
                row["lscv_terms"]["c"].as_u64(),
                Some(c),
                "n {n} d {d} h {h}"
            );
            let got_s = row["lscv_terms"]["s"].as_f64().unwrap();
            assert!((got_s - s).abs() <= 1e-12 * s.abs(), "S {got_s} vs {s}");
            let got = row["lscv"].as_f64().unwrap();
            assert!(
                (got - score).abs() <= 1e-12 * score.abs(),
                "n {n} d {d} h {h}: {got} vs {score}"
            );
            want.push(score);
        }
        let first_min = (0..want.len())
            .min_by(|&a, &b| want[a].total_cmp(&want[b]))
            .unwrap();
        assert_eq!(v["selected"]["pos"], first_min, "n {n} d {d}: {want:?}");
        assert_eq!(v["selected"]["method"], "lscv");
        assert_eq!(v["selected"]["h"].as_f64(), Some(widths[first_min]));
        // The same bits from threads and processes.
        for backend in ["thread", "process"] {
            let other = sweep_json(&file, spec, &["--backend", backend, "--chunksize", "1"]);
            assert_eq!(lscv_bits(&other), lscv_bits(&v), "{backend}, n {n} d {d}");
            assert_eq!(density_bits(&other), density_bits(&v), "{backend}");
            assert_eq!(other["selected"], v["selected"], "{backend}");
        }
    }
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn the_selection_rules_and_their_defaults() {
    // Gaussian samples: the true density is known, `true` is the default and chooses the
    // closest estimate; lscv can be asked for, and the closest estimate is still reported.
    let truth = json(&run(&["-w", "2", "--format", "json"]));
    assert_eq!(truth["select"], "true");
    assert_eq!(truth["selected"]["method"], "true");
    assert_eq!(truth["selected"]["pos"], truth["best"]["pos"]);
    assert!(truth["results"][0].get("lscv").is_none());
    let both = json(&run(&["-w", "2", "--format", "json", "--select", "lscv"]));
    assert_eq!(both["selected"]["method"], "lscv");
    assert_eq!(both["best"], truth["best"]);
    assert_eq!(density_bits(&both), density_bits(&truth));
    let none = json(&run(&["-w", "2", "--format", "json", "--select", "none"]));
    assert_eq!(none["selected"], Value::Null);
    assert_eq!(none["best"], truth["best"]);
    // The table says which width each rule chose.
    let table = run(&["-w", "2", "--select", "lscv"]);
    assert_eq!(table.code, Some(0), "{}", table.stderr);
    assert!(table.stdout.contains("LSCV(h)"), "{}", table.stdout);
    assert!(
        table
            .stdout
            .contains("selected by least-squares cross-validation: h = "),
        "{}",
        table.stdout
    );
    assert!(table.stdout.contains("closest estimate: h = "));

    // A file has no true density: `true` is refused by name, before anything runs.
    let dir = scratch("select");
    let file = dir.join("x.csv");
    write_csv(&file, &grid_samples(60, 2));
    let r = run(&["--data", file.to_str().unwrap(), "--select", "true"]);
    assert_eq!(r.code, Some(2), "{}", r.stderr);
    assert!(
        r.stderr.contains("--select true needs the true density"),
        "{}",
        r.stderr
    );
    assert!(r.stdout.is_empty());
    let csv = run(&[
        "--data",
        file.to_str().unwrap(),
        "--format",
        "csv",
        "--widths",
        "0.5,1",
    ]);
    assert_eq!(csv.code, Some(0), "{}", csv.stderr);
    let (_, rows) = crate::common::csv_rows(&csv.stdout);
    for row in rows {
        assert!(row[5].parse::<f64>().is_ok(), "lscv cell: {row:?}");
        assert_eq!(row[6], "ok");
    }
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn data_that_cross_validation_cannot_use_gets_a_message_not_nan() {
    let dir = scratch("lscv-degenerate");
    let one = dir.join("one.csv");
    std::fs::write(&one, "0.5,1.5\n").unwrap();
    let constant = dir.join("constant.csv");
    std::fs::write(&constant, "1,7\n2,7\n3,7\n0.5,7\n").unwrap();
    for (file, needle) in [
        (
            &one,
            "lscv needs at least 2 samples (its cross term divides by n - 1), got n = 1",
        ),
        (&constant, "column 1 (0-based) is 7 in all 4 samples"),
    ] {
        let r = run(&["--data", file.to_str().unwrap()]);
        assert_eq!(r.code, Some(2), "{}", r.stderr);
        assert!(r.stderr.contains(needle), "{}", r.stderr);
        assert!(r.stderr.contains("--select none"), "{}", r.stderr);
        assert_eq!(r.stderr.lines().count(), 1, "{}", r.stderr);
        assert!(!r.stderr.contains("NaN") && r.stdout.is_empty());
        // The densities alone still work.
        let v = json(&run(&[
            "--data",
            file.to_str().unwrap(),
            "--select",
            "none",
            "--format",
            "json",
            "--point",
            "1,7",
        ]));
        assert!(v["results"][0]["density"].as_f64().unwrap().is_finite());
    }
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn values_that_are_not_finite_are_flagged_never_chosen_nor_counted_as_success() {
    // h^d underflows to 0 in 2-D at h = 1e-200: 0 of n samples over 0 is NaN.
    let r = run(&["--widths", "1e-200,0.5", "--format", "json", "-w", "2"]);
    assert_eq!(r.code, Some(1), "{}", r.stderr);
    let v: Value = serde_json::from_str(&r.stdout).unwrap();
    let bad = &v["results"][0];
    assert_eq!(bad["status"], "not_finite");
    assert_eq!(bad["count"], 0);
    assert_eq!(bad["density"], Value::Null);
    assert!(bad.get("error").is_none(), "not a failure: {bad}");
    assert!(bad["note"].as_str().unwrap().contains("h^d = 0e0"), "{bad}");
    assert_eq!(v["results"][1]["status"], "ok");
    assert_eq!(v["failed"], 0);
    assert_eq!(v["not_finite"], 1);
    assert_eq!(v["best"]["pos"], 1);
    assert!(
        r.stderr
            .contains("1 of 2 widths gave a value that is not finite"),
        "{}",
        r.stderr
    );
    assert!(r.stderr.contains("pos 0 (h = 1e-200)"), "{}", r.stderr);
    // In the table and the CSV too.
    let t = run(&["--widths", "1e-200,0.5", "-w", "2"]);
    assert_eq!(t.code, Some(1));
    assert!(t.stdout.contains("NOT FINITE"), "{}", t.stdout);
    let c = run(&["--widths", "1e-200,0.5", "--format", "csv", "-w", "2"]);
    let (_, rows) = crate::common::csv_rows(&c.stdout);
    assert_eq!(rows[0][6], "not_finite");
    assert_eq!(rows[0][1], "1e-200");
    assert!(rows[0][3].is_empty() && !rows[0][7].is_empty());

    // In 5-D, h = 1e-40 keeps h^d = 1e-200 but h^2d underflows: the density is finite (0),
    // the LSCV score is meaningless, so the row is flagged and LSCV chooses another width.
    let r = run(&[
        "--dims",
        "5",
        "--samples",
        "400",
        "--widths",
        "1e-40,1,2",
        "--select",
        "lscv",
        "--format",
        "json",
        "-w",
        "2",
    ]);
    assert_eq!(r.code, Some(1), "{}", r.stderr);
    let v: Value = serde_json::from_str(&r.stdout).unwrap();
    let bad = &v["results"][0];
    assert_eq!(bad["status"], "not_finite", "{bad}");
    assert_eq!(bad["density"].as_f64(), Some(0.0));
    assert_eq!(bad["lscv"], Value::Null);
    assert!(bad["note"].as_str().unwrap().contains("h^2d"), "{bad}");
    assert_ne!(v["selected"]["pos"], 0);
    assert_eq!(v["selected"]["method"], "lscv");
}

#[test]
fn runs_over_the_memory_budget_are_refused_with_the_numbers() {
    // 1e6 samples of 2 dims are 16 MB before anything is drawn.
    run(&["--samples", "1e6", "--max-memory", "4M"]).assert_refused(&[
        "samples 16000000",
        "index at most 8032784",
        "budget is 4194304 bytes",
        "--max-memory 4M",
    ]);
    // The cross-validation copy counts too.
    let r = run(&["--samples", "1e5", "--max-memory", "3M", "--select", "lscv"]);
    assert_eq!(r.code, Some(2), "{}", r.stderr);
    assert!(
        r.stderr.contains("lscv sorted copy 1600000"),
        "{}",
        r.stderr
    );
    assert!(run(&["--samples", "1e5", "--max-memory", "3M"]).code == Some(0));
    // A file larger than the budget is refused before it is read.
    let dir = scratch("budget");
    let file = dir.join("x.csv");
    write_csv(&file, &grid_samples(2000, 2));
    let r = run(&["--data", file.to_str().unwrap(), "--max-memory", "1K"]);
    assert_eq!(r.code, Some(2), "{}", r.stderr);
    assert!(
        r.stderr.contains("over the limit of 1024 bytes"),
        "{}",
        r.stderr
    );
    assert!(r.stderr.contains("--max-memory 1K"), "{}", r.stderr);
    // Sizes: units and scientific notation; anything else is refused by name.
    let ok = run(&["--samples", "1000", "--max-memory", "1e9", "--widths", "1"]);
    assert_eq!(ok.code, Some(0), "{}", ok.stderr);
    let r = run(&["--max-memory", "8X"]);
    assert_eq!(r.code, Some(2));
    assert!(r.stderr.contains("--max-memory") && r.stderr.contains("\"8X\""));
    // The bench's scaling suite takes the same budget; the other suites refuse it.
    let r = run(&["bench", "scaling", "--samples", "1e6", "--max-memory", "1M"]);
    assert_eq!(r.code, Some(2), "{}", r.stderr);
    assert!(r.stderr.contains("budget is 1048576 bytes"), "{}", r.stderr);
    let r = run(&["bench", "overhead", "--max-memory", "1G"]);
    assert_eq!(r.code, Some(2), "{}", r.stderr);
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn a_cross_validation_too_costly_is_refused_unless_forced() {
    // 4e5 samples: about 3e10 pairs per width, minutes of work for eight widths.
    let costly = [
        "--samples",
        "4e5",
        "--select",
        "lscv",
        "--widths",
        "0.5:1:8",
        "-w",
        "2",
    ];
    run_with(&costly, Duration::from_secs(120)).assert_refused(&[
        "pairs",
        "over the budget of 60 s",
        "--force",
        "--select none",
    ]);
    // --force starts it anyway: its workers come up (then SIGTERM ends it, exit 143).
    let mut child = crate::common::coordinator()
        .args(costly)
        .arg("--force")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let start = std::time::Instant::now();
    while crate::faults::children(child.id()).len() < 2 {
        if start.elapsed() > Duration::from_secs(60) || child.try_wait().unwrap().is_some() {
            let _ = child.kill();
            let _ = child.wait();
            panic!("--force did not start the workers");
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    crate::faults::signal(child.id(), libc::SIGTERM);
    let (status, _) = crate::faults::wait_within(&mut child, Duration::from_secs(60));
    assert_eq!(status.code(), Some(143));
    // Small enough: the estimate is in the report.
    let v = json(&run(&[
        "--samples",
        "2000",
        "--select",
        "lscv",
        "--format",
        "json",
        "-w",
        "2",
    ]));
    let cost = &v["lscv_cost"];
    assert!(cost["pairs"].as_u64().unwrap() > 0, "{cost}");
    assert!(cost["seconds"].as_f64().unwrap() < 60.0, "{cost}");
}

#[test]
fn the_plot_shows_both_curves_and_both_choices() {
    let dir = scratch("sweep-plot");
    let svg = dir.join("w.svg");
    let r = run(&[
        "--select",
        "lscv",
        "--samples",
        "3000",
        "-w",
        "2",
        "--plot",
        svg.to_str().unwrap(),
    ]);
    assert_eq!(r.code, Some(0), "{}", r.stderr);
    let text = std::fs::read_to_string(&svg).unwrap();
    assert_contains_all(
        &text,
        &[
            "<svg",
            "LSCV(h)",
            "p(x; h)",
            "chosen by LSCV: h = ",
            "closest to the true density: h = ",
            "true density 0.159155",
        ],
        "plot",
    );
    // Without cross-validation: the density curve alone.
    let r = run(&[
        "-w",
        "2",
        "--select",
        "none",
        "--plot",
        svg.to_str().unwrap(),
    ]);
    assert_eq!(r.code, Some(0), "{}", r.stderr);
    let text = std::fs::read_to_string(&svg).unwrap();
    assert!(text.contains("p(x; h)") && !text.contains("LSCV(h)"));
    // A path that cannot be written is refused before any work.
    let missing = dir.join("no/such/dir/w.svg");
    let r = run(&["--plot", missing.to_str().unwrap(), "--samples", "1e7"]);
    assert_eq!(r.code, Some(2), "{}", r.stderr);
    assert!(r.stderr.contains("--plot"), "{}", r.stderr);
    std::fs::remove_dir_all(&dir).unwrap();
}
