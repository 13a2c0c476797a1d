//! The teaching demos (`coordinator demo <name>`): each one's key claim, checked on what it
//! really printed with `--format json`.

use crate::common::{json, run, scratch};
use serde_json::Value;

/// Runs `coordinator demo NAME --format json EXTRA..` and parses what it printed.
fn demo(name: &str, extra: &[&str]) -> Value {
    let mut args = vec!["demo", name, "--format", "json"];
    args.extend_from_slice(extra);
    let v = json(&run(&args));
    assert_eq!(v["schema"], format!("coordinator.demo.{name}/1"));
    v
}

fn u64s(v: &Value) -> Vec<u64> {
    v.as_array()
        .unwrap_or_else(|| panic!("not an array: {v}"))
        .iter()
        .map(|x| x.as_u64().unwrap_or_else(|| panic!("not a u64: {x}")))
        .collect()
}

fn f64_of(v: &Value) -> f64 {
    v.as_f64().unwrap_or_else(|| panic!("not a number: {v}"))
}

#[test]
fn queue_completion_order_then_sorted_by_position() {
    let r = demo("queue", &[]);
    let parent = r["parent_pid"].as_u64().expect("parent pid");
    let mut rounds: Vec<&Value> = r["unordered"].as_array().expect("rounds").iter().collect();
    assert_eq!(rounds.len(), 2, "{r}");
    rounds.push(&r["ordered"]);
    for round in rounds {
        let pids = u64s(&round["pids"]);
        assert_eq!(pids.len(), 4, "{round}");
        assert!(pids.iter().all(|p| *p != parent), "{round}");
        for exit in round["exits"].as_array().expect("exits") {
            assert_eq!(exit, "exited with code 0", "{round}");
        }
        // Every process put exactly one value: positions are a permutation of 0..4.
        let mut positions: Vec<u64> = round["arrived"]
            .as_array()
            .expect("arrived")
            .iter()
            .map(|a| a[0].as_u64().expect("pos"))
            .collect();
        positions.sort_unstable();
        assert_eq!(positions, [0, 1, 2, 3], "{round}");
    }
    assert_eq!(u64s(&r["sorted_positions"]), [0, 1, 2, 3], "{r}");
    // Sorting put each process's string at its position.
    for a in r["ordered"]["arrived"].as_array().expect("arrived") {
        let pos = a[0].as_u64().expect("pos") as usize;
        assert_eq!(r["sorted"][pos], a[1], "{r}");
        assert_eq!(a[1].as_str().expect("string").len(), 5, "{r}");
    }
}

#[test]
fn pool_results_are_cubes_computed_by_other_processes() {
    let r = demo("pool", &[]);
    let parent = r["parent_pid"].as_u64().expect("parent pid");
    let workers = u64s(&r["worker_pids"]);
    assert_eq!(workers.len(), 4, "{r}");
    assert!(!workers.contains(&parent), "{r}");
    let calls = r["calls"].as_array().expect("calls");
    let methods: Vec<&str> = calls
        .iter()
        .map(|c| c["method"].as_str().unwrap_or(""))
        .collect();
    assert_eq!(methods, ["apply", "map", "apply_async", "map_async"]);
    for c in calls {
        assert_eq!(u64s(&c["results"]), [1, 8, 27, 64, 125, 216], "{c}");
        for pid in u64s(&c["pids"]) {
            assert_ne!(pid, parent, "{c}");
            assert!(workers.contains(&pid), "{c}");
        }
    }
    // map spreads one-job chunks over the workers.
    let mut used = u64s(&calls[1]["pids"]);
    used.sort_unstable();
    used.dedup();
    assert!(used.len() > 1, "{r}");

    // On threads every result comes from this very process.
    let r = demo("pool", &["--backend", "thread", "--workers", "2"]);
    let parent = r["parent_pid"].as_u64().expect("parent pid");
    for c in r["calls"].as_array().expect("calls") {
        assert_eq!(u64s(&c["results"]), [1, 8, 27, 64, 125, 216], "{c}");
        assert!(u64s(&c["pids"]).iter().all(|p| *p == parent), "{c}");
    }
}

#[test]
fn isolation_parent_globals_unchanged_by_processes_changed_by_threads() {
    let r = demo("isolation", &[]);
    let parent = r["parent_pid"].as_u64().expect("parent pid");
    let sides = r["sides"].as_array().expect("sides");
    let (process, thread) = (&sides[0], &sides[1]);
    assert_eq!(process["backend"], "process");
    assert_eq!(thread["backend"], "thread");

    // Processes: six increments happened, none of them in the parent.
    assert_eq!(process["parent_counter_before"], 0, "{process}");
    assert_eq!(process["parent_counter_after"], 0, "{process}");
    assert_eq!(u64s(&process["parent_list_after"]), Vec::<u64>::new());
    let jobs = process["jobs"].as_array().expect("jobs");
    assert_eq!(jobs.len(), 6);
    for j in jobs {
        assert_ne!(j["pid"].as_u64(), Some(parent), "{j}");
        // A worker's counter counts only the jobs of that worker.
        let same_worker = jobs
            .iter()
            .filter(|o| o["pid"] == j["pid"] && o["x"].as_u64() <= j["x"].as_u64())
            .count() as u64;
        assert_eq!(j["counter"].as_u64(), Some(same_worker), "{process}");
    }
    // The demo waits for its workers, so the six jobs show more than one process's memory.
    let pids: std::collections::BTreeSet<u64> =
        jobs.iter().filter_map(|j| j["pid"].as_u64()).collect();
    assert!(pids.len() > 1, "every job ran in one worker: {process}");

    // Threads: one counter, one list, the parent's.
    assert_eq!(thread["parent_counter_before"], 0, "{thread}");
    assert_eq!(thread["parent_counter_after"], 6, "{thread}");
    assert_eq!(u64s(&thread["parent_list_after"]), [1, 2, 3, 4, 5, 6]);
    let mut counters = Vec::new();
    for j in thread["jobs"].as_array().expect("jobs") {
        assert_eq!(j["pid"].as_u64(), Some(parent), "{j}");
        assert_eq!(j["counter_addr"], r["parent_counter_addr"], "{j}");
        counters.push(j["counter"].as_u64().expect("counter"));
    }
    counters.sort_unstable();
    assert_eq!(counters, [1, 2, 3, 4, 5, 6], "{thread}");
}

#[test]
fn crash_process_pool_finishes_the_other_jobs_thread_child_dies_by_signal() {
    for (fault, signal, name) in [
        ("segv", libc::SIGSEGV, "SIGSEGV"),
        ("abort", libc::SIGABRT, "SIGABRT"),
    ] {
        let r = demo("crash", &["--fault", fault]);
        let parent = r["parent_pid"].as_u64().expect("parent pid");
        let bad = r["bad_x"].as_i64().expect("bad x");
        let jobs = r["process"]["jobs"].as_array().expect("jobs");
        assert_eq!(jobs.len(), 6, "{r}");
        for j in jobs {
            let x = j["x"].as_i64().expect("x");
            if x == bad {
                assert!(j["cube"].is_null(), "{j}");
                let error = j["error"].as_str().expect("error");
                assert!(error.contains(name), "{fault}: {error}");
                assert!(
                    j["worker_status"]
                        .as_str()
                        .is_some_and(|s| s.contains(name)),
                    "{j}"
                );
            } else {
                assert_eq!(j["cube"].as_i64(), Some(x.pow(3)), "{j}");
                assert_ne!(j["pid"].as_u64(), Some(parent), "{j}");
            }
        }
        assert!(r["process"]["workers_lost"].as_u64() >= Some(2), "{r}");
        // The thread-based program is gone, by the same signal, with nothing to show.
        let t = &r["thread"];
        assert_eq!(t["signal"].as_i64(), Some(i64::from(signal)), "{t}");
        assert!(t["exit_code"].is_null(), "{t}");
        assert_eq!(t["results_printed"], false, "{t}");
        assert!(
            t["stdout"]
                .as_str()
                .is_some_and(|s| s.contains("child pid")),
            "{t}"
        );
        assert_ne!(t["pid"].as_u64(), Some(parent), "{t}");
    }
}

#[test]
fn generators_pull_a_bounded_part_of_an_endless_source() {
    let r = demo("generators", &["-k", "7"]);
    let e = &r["endless"];
    assert_eq!(e["pulled_before_use"], 0, "{e}");
    assert_eq!(
        u64s(&e["results"]),
        (1..=7u64).map(|x| x.pow(3)).collect::<Vec<_>>()
    );
    let (k, window) = (7, e["window"].as_u64().expect("window"));
    let (pulled, computed) = (
        e["pulled"].as_u64().expect("pulled"),
        e["computed"].as_u64().expect("computed"),
    );
    assert!(computed >= k && computed <= pulled, "{e}");
    assert!(pulled <= k + window, "{e}");

    // The ATM, as the seed tells it; the plain iterator is the Rust difference.
    let steps: Vec<(String, String)> = r["atm"]["steps"]
        .as_array()
        .expect("steps")
        .iter()
        .map(|s| {
            let got: Vec<String> = s[1]
                .as_array()
                .expect("got")
                .iter()
                .map(|g| g.as_str().unwrap_or("None").to_owned())
                .collect();
            (s[0].as_str().unwrap_or("").to_owned(), got.join(" "))
        })
        .collect();
    let got = |what: &str| {
        steps
            .iter()
            .find(|(w, _)| w.contains(what))
            .map(|(_, g)| g.as_str())
            .unwrap_or_else(|| panic!("no step {what:?} in {steps:?}"))
    };
    assert_eq!(got("take(5)"), "$100 $100 $100 $100 $100");
    assert_eq!(got("crisis: corner_street_atm"), "None");
    assert_eq!(got("crisis: a new wall_street_atm"), "None");
    assert_eq!(got("after: corner_street_atm"), "None");
    assert_eq!(got("after: wall_street_atm"), "None");
    assert_eq!(got("after: the plain atm"), "$100");
    assert_eq!(got("brand_new_atm"), "$100 $100 $100");

    // The tree search finds what checking every sample finds, looking at fewer nodes.
    let t = &r["tree"];
    assert_eq!(t["found"], t["brute_force"], "{t}");
    assert!(t["found"].as_u64() > Some(0), "{t}");
    assert!(t["visited"].as_u64() < t["nodes"].as_u64(), "{t}");
}

#[test]
fn cost_times_every_phase_of_a_round_trip() {
    let r = demo("cost", &[]);
    let backends = r["backends"].as_array().expect("backends");
    assert_eq!(backends.len(), 2, "{r}");
    for (b, phases) in backends.iter().zip([8, 6]) {
        let list = b["phases"].as_array().expect("phases");
        assert_eq!(list.len(), phases, "{b}");
        assert!(b["complete"].as_u64() >= Some(100), "{b}");
        for p in list {
            assert!(p["median_ns"].as_i64() >= Some(0), "{p}");
            assert!(p["mean_ns"].as_i64() >= Some(0), "{p}");
        }
        let names: Vec<&str> = list.iter().filter_map(|p| p["name"].as_str()).collect();
        assert!(names.contains(&"compute: Task::run"), "{names:?}");
        assert!(
            names
                .iter()
                .any(|n| n.contains("deliver") && n.ends_with("apply() returns")),
            "{names:?}"
        );
        // The rows are consecutive marks: their means add up to the mean round trip.
        let sum: i64 = list.iter().filter_map(|p| p["mean_ns"].as_i64()).sum();
        let total = b["total_mean_ns"].as_i64().expect("total");
        assert!(
            total > 0 && (sum - total).abs() <= phases as i64,
            "{sum} vs {total}: {b}"
        );
        assert!(b["untraced_median_ns"].as_i64() > Some(0), "{b}");
    }
    let process: Vec<&str> = backends[0]["phases"]
        .as_array()
        .expect("phases")
        .iter()
        .filter_map(|p| p["name"].as_str())
        .collect();
    for phase in [
        "serialize the job (bincode)",
        "the worker wakes up and reads it",
        "decode the job",
        "encode the result",
        "read and decode the result",
    ] {
        assert!(
            process.iter().any(|p| p.contains(phase)),
            "{phase} missing from {process:?}"
        );
    }
}

#[test]
fn parzen_article_divides_by_h_where_the_estimate_divides_by_h_squared() {
    let r = demo("parzen", &[]);
    let n = r["n"].as_u64().expect("n") as f64;
    assert_eq!(r["dims"], 2);
    let rows = r["rows"].as_array().expect("rows");
    assert_eq!(rows.len(), 12);
    for row in rows {
        let (h, k) = (f64_of(&row["h"]), row["k"].as_u64().expect("k") as f64);
        assert_eq!(
            f64_of(&row["article"]).to_bits(),
            ((k / n) / h).to_bits(),
            "{row}"
        );
        assert_eq!(
            f64_of(&row["correct"]).to_bits(),
            ((k / n) / h.powf(2.0)).to_bits(),
            "{row}"
        );
    }
    // The article's column grows with h and crosses the truth near its "best" 1.1; the
    // correct column's expectation approaches the truth as h shrinks, its spread grows.
    assert!((f64_of(&r["article_best_h"]) - 1.1).abs() < 1e-9, "{r}");
    let truth = f64_of(&r["true_density"]);
    let bias: Vec<f64> = rows
        .iter()
        .map(|x| truth - f64_of(&x["expected"]))
        .collect();
    let sd: Vec<f64> = rows.iter().map(|x| f64_of(&x["sd"])).collect();
    assert!(
        bias.windows(2).all(|w| w[0] < w[1]) && bias[0] > 0.0,
        "{bias:?}"
    );
    assert!(sd.windows(2).all(|w| w[0] > w[1]), "{sd:?}");
    // Without the truth: the width with the smallest cross-validation score, which for
    // N(0, I) at n = 10000 lies inside the table, not at an end.
    let scores: Vec<f64> = rows.iter().map(|x| f64_of(&x["lscv"])).collect();
    let smallest = (0..scores.len())
        .min_by(|&a, &b| scores[a].total_cmp(&scores[b]))
        .expect("scores");
    assert_eq!(
        f64_of(&r["lscv_best_h"]).to_bits(),
        f64_of(&rows[smallest]["h"]).to_bits(),
        "{scores:?}"
    );
    assert!(smallest > 0 && smallest + 1 < rows.len(), "{scores:?}");

    // The same counts from a file (here: the default samples, written as .npy).
    let dir = scratch("demo-parzen");
    let path = dir.join("seed.npy");
    let samples = parzen::Gaussian::standard(2)
        .and_then(|g| g.sample(10_000, 123))
        .expect("samples");
    parzen::write_npy(&path, &samples).expect("write npy");
    let from_file = demo("parzen", &["--data", path.to_str().expect("utf-8 path")]);
    let ks = |r: &Value| -> Vec<u64> {
        r["rows"]
            .as_array()
            .expect("rows")
            .iter()
            .map(|x| x["k"].as_u64().expect("k"))
            .collect()
    };
    assert_eq!(ks(&from_file), ks(&r));
    let _ = std::fs::remove_dir_all(&dir);

    // A file that is not there is bad input: exit code 2, one line naming it.
    let missing = run(&["demo", "parzen", "--data", "/nonexistent/seed.npy"]);
    assert_eq!(missing.code, Some(2), "{missing:?}");
    assert!(
        missing.stderr.contains("/nonexistent/seed.npy"),
        "{}",
        missing.stderr
    );
}

#[test]
fn a_setting_the_demo_does_not_use_is_refused() {
    for (args, flag) in [
        (&["demo", "queue", "--data", "x.npy"][..], "--data"),
        (&["demo", "cost", "--workers", "3"][..], "--workers"),
        (
            &["demo", "isolation", "--backend", "thread"][..],
            "--backend",
        ),
    ] {
        let r = run(args);
        assert_eq!(r.code, Some(2), "{args:?}: {r:?}");
        assert!(r.stderr.contains(flag), "{args:?}: {}", r.stderr);
        assert!(r.stdout.is_empty(), "{args:?}: {}", r.stdout);
    }
}
