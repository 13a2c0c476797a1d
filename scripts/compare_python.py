#!/usr/bin/env python3
"""Rust against Python on the same data and the same machine: the seed article's
Parzen-window benchmark, the kernel on one core, and what orchestration costs.

Usage:
    python3 scripts/compare_python.py [--coordinator PATH] [--quick] [--repeat N] [--json FILE]

What it does (numpy + the standard library; see scripts/requirements.txt):

1. Draws the article's samples (np.random.seed(123), 10000 draws from N(0, I)) and a
   1e6-sample set (seed 123 too), saved as .npy files in a temporary directory, so the
   coordinator reads exactly the numbers Python uses.
2. Seed benchmark: the article's `parzen_estimation` row loop over the article's 100
   widths np.linspace(1.0, 1.2, 100), serial and on multiprocessing.Pool(p) with
   apply_async, p = 2, 3, 4 (pool start-up inside the timing, like the article), against
   `coordinator bench scaling --backends process` on the same .npy file.
3. Checks that the coordinator's densities equal numpy's bit for bit, and that its
   widths are np.linspace(1.0, 1.2, 100) bit for bit.
4. Kernel on one core, n = 1e6, 100 widths: numpy as usually written, and numpy with the
   per-sample maximum taken once, against the coordinator's serial sweep
   (`--select none`: the densities alone, which is what numpy computes; with a data file
   the coordinator would otherwise cross-validate, an O(n^2) sweep refused at n = 1e6).
   numpy's faster way and the coordinator's whole process are timed in alternation.
5. Overhead with no-op jobs: Pool.map (chunksize 1 and default), ProcessPoolExecutor.map,
   ThreadPool.map, one Pool.apply round trip, Pool(4) start-up per start method, against
   `coordinator bench overhead`; then Pool.map with its default chunksize against the
   coordinator's automatic chunking once more, in alternation (5 rounds, each side once
   per round), since one figure each on a noisy machine can land in different minutes.
6. Prints one table (metric | Rust | Python | ratio; a ratio > 1 means Rust is better),
   with the machine and the versions above it; --json FILE also writes every figure.

--quick shrinks every count (a smoke test, well under a minute); the default is the
real comparison and takes a few minutes.

Every function that a pool runs is defined at module level (picklable), and everything
else runs under `if __name__ == "__main__":` because the spawn and forkserver start
methods re-import this module in each child. For the same reason numpy is imported
inside the functions that use it, not at module level: a spawned child then re-imports
only the standard library, so the start-up figures measure multiprocessing, not numpy's
import time.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import json
import multiprocessing as mp
import multiprocessing.pool
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
DEFAULT_COORDINATOR = "target/release/coordinator"

# How long any one coordinator call or Python pool operation may take, in seconds.
SUBPROCESS_TIMEOUT_S = 900
POOL_TIMEOUT_S = 900


class CompareError(Exception):
    """A failure worth one clear line and exit status 1."""


# ---------------------------------------------------------------------------------------
# Functions run in worker processes (module level, so that they pickle).
# ---------------------------------------------------------------------------------------


def noop(_=None):
    """The empty job of the overhead comparison (step 5)."""
    return None


def _wait_for_all(barrier):
    """Pool initializer for the start-up timing: no worker takes a job until all are up."""
    barrier.wait(60)


def parzen_estimation(x_samples, point_x, h):
    """The article's hypercube Parzen-window estimate, with its row loop as written.

    One change: the article divides by h**point_x.shape[1], which is h**1 for its (d, 1)
    point; the density of a d-dimensional hypercube window is (k/n) / h**d, so this
    divides by h**point_x.shape[0] (d = 2). `h ** 2` on a float64 scalar calls C pow(),
    as Rust's powf does; it is not always bit-equal to h*h (nor to numpy's vectorized
    square).

    Returns (h, density), as the article's benchmark version does.
    """
    import numpy as np  # already loaded in a forked worker; see the module docstring

    k_n = 0
    for row in x_samples:
        x_i = (point_x - row[:, np.newaxis]) / (h)
        for row in x_i:
            if np.abs(row) > (1 / 2):
                break
        else:  # "completion-else": no coordinate was outside the window
            k_n += 1
    return (h, (k_n / len(x_samples)) / (h ** point_x.shape[0]))


def serial(samples, x, widths):
    """The article's `serial`."""
    return [parzen_estimation(samples, x, w) for w in widths]


def multiprocess(processes, samples, x, widths):
    """The article's `multiprocess`: start a pool, one apply_async per width, sort.

    Added: the pool is closed and joined inside the timing (the article leaves it to the
    garbage collector), so the run matches the coordinator's timed run, which starts the
    pool, sweeps and shuts it down. Results are fetched with a timeout so nothing hangs.
    """
    pool = mp.Pool(processes=processes)
    results = [pool.apply_async(parzen_estimation, args=(samples, x, w)) for w in widths]
    results = [p.get(POOL_TIMEOUT_S) for p in results]
    results.sort()  # to sort the results by input window width
    pool.close()
    pool.join()
    return results


# ---------------------------------------------------------------------------------------
# Helpers
# ---------------------------------------------------------------------------------------


def log(msg: str) -> None:
    """Progress on stderr; the table goes to stdout."""
    print(f"[compare] {msg}", file=sys.stderr, flush=True)


def median_time(fn, repeat: int) -> tuple[float, list[float], object]:
    """Median wall time of `repeat` calls of fn (time.perf_counter); also the last result."""
    times, out = [], None
    for _ in range(repeat):
        t0 = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times), times, out


def run_coordinator(coordinator: Path, args: list[str], timeout: float = SUBPROCESS_TIMEOUT_S):
    """Runs the coordinator with `args`, returns its stdout parsed as JSON.

    Any failure (cannot start, timeout, non-zero exit, not JSON) raises CompareError
    naming the command, with the end of its stderr.
    """
    cmd = [str(coordinator), *args]
    shown = " ".join(cmd)
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, check=False)
    except subprocess.TimeoutExpired:
        raise CompareError(f"`{shown}` timed out after {timeout:.0f} s") from None
    except OSError as e:
        raise CompareError(f"could not run `{shown}`: {e}") from None
    if proc.returncode != 0:
        tail = "\n".join(proc.stderr.strip().splitlines()[-15:]) or "(nothing on stderr)"
        raise CompareError(f"`{shown}` exited with status {proc.returncode}:\n{tail}")
    try:
        return json.loads(proc.stdout)
    except json.JSONDecodeError as e:
        raise CompareError(f"`{shown}` did not print JSON ({e}); it printed:\n{proc.stdout[:500]}")


def field(obj, key, what: str):
    """obj[key], or a CompareError saying which coordinator output lacks it."""
    try:
        return obj[key]
    except (KeyError, IndexError, TypeError):
        raise CompareError(f"{what}: field {key!r} missing from the coordinator's JSON") from None


def find_row(rows, what: str, **match):
    """The one row of a coordinator report whose fields equal `match`."""
    for r in rows:
        if all(r.get(k) == v for k, v in match.items()):
            return r
    raise CompareError(f"{what}: no row with {match} in the coordinator's JSON")


# ---------------------------------------------------------------------------------------
# Formatting
# ---------------------------------------------------------------------------------------


def fmt_time(s: float) -> str:
    if s >= 1.0:
        return f"{s:.2f} s"
    if s >= 1e-3:
        return f"{s * 1e3:.2f} ms"
    return f"{s * 1e6:.1f} µs"


def fmt_rate(r: float) -> str:
    return f"{r:,.0f} jobs/s"


def fmt_ratio(x: float) -> str:
    if x >= 100:
        return f"{x:,.0f}x"
    if x >= 10:
        return f"{x:.1f}x"
    return f"{x:.2f}x"


class Table:
    """metric | Rust | Python | ratio rows, grouped in sections; also the JSON figures."""

    def __init__(self):
        self.lines: list[tuple] = []  # ("section", title) | ("row", metric, rust, python, ratio)
        self.figures: list[dict] = []
        self.section = ""

    def start(self, title: str) -> None:
        self.section = title
        self.lines.append(("section", title))

    def time(self, metric: str, rust_s: float, python_s: float) -> None:
        """A time: ratio Python / Rust."""
        ratio = python_s / rust_s if rust_s > 0 else float("inf")
        self.lines.append(("row", metric, fmt_time(rust_s), fmt_time(python_s), fmt_ratio(ratio)))
        self.figures.append(dict(section=self.section, metric=metric, unit="s",
                                 rust=rust_s, python=python_s, ratio=ratio,
                                 ratio_is="python/rust"))

    def rate(self, metric: str, rust: float, python: float) -> None:
        """A throughput: ratio Rust / Python."""
        ratio = rust / python if python > 0 else float("inf")
        self.lines.append(("row", metric, fmt_rate(rust), fmt_rate(python), fmt_ratio(ratio)))
        self.figures.append(dict(section=self.section, metric=metric, unit="jobs/s",
                                 rust=rust, python=python, ratio=ratio, ratio_is="rust/python"))

    def note(self, text: str) -> None:
        self.lines.append(("note", text))

    def render(self) -> str:
        rows = [l for l in self.lines if l[0] == "row"]
        head = ("metric", "Rust", "Python", "ratio")
        w = [max([len(head[i])] + [len(r[i + 1]) for r in rows]) for i in range(4)]
        width = sum(w) + 3 * 3
        out = [f"{head[0]:<{w[0]}} | {head[1]:>{w[1]}} | {head[2]:>{w[2]}} | {head[3]:>{w[3]}}",
               "-" * width]
        for kind, *rest in self.lines:
            if kind == "section":
                if len(out) > 2:
                    out.append("")
                out.append(rest[0])
            elif kind == "note":
                out.append(f"  {rest[0]}")
            else:
                m, a, b, c = rest
                out.append(f"{m:<{w[0]}} | {a:>{w[1]}} | {b:>{w[2]}} | {c:>{w[3]}}")
        return "\n".join(out)


# ---------------------------------------------------------------------------------------
# Steps
# ---------------------------------------------------------------------------------------


def draw_data(tmp: Path, n_big: int) -> dict:
    """Step 1: the article's samples and a large set for the kernel, as .npy files."""
    import numpy as np

    np.random.seed(123)
    seed = np.random.multivariate_normal([0, 0], [[1, 0], [0, 1]], 10000)
    np.random.seed(123)
    big = np.random.multivariate_normal([0, 0], [[1, 0], [0, 1]], n_big)
    paths = {"seed": tmp / "seed_10000.npy", "big": tmp / f"gauss_{n_big}.npy"}
    np.save(paths["seed"], seed)
    np.save(paths["big"], big)
    return {"seed": seed, "big": big, "paths": paths}


def numpy_counts(X, widths) -> list[int]:
    """k per width, vectorized as numpy code usually writes it."""
    import numpy as np

    return [int(np.all(np.abs(X - 0.0) / h <= 0.5, axis=1).sum()) for h in widths]


def density(k: int, n: int, h) -> float:
    """(k/n) / h**2, with h**2 by C pow() on a Python float (as Rust's powf)."""
    return (k / n) / float(h) ** 2


def check_densities(coordinator: Path, data: dict) -> dict:
    """Step 3: the coordinator's counts, densities and widths equal numpy's, bit for bit."""
    import numpy as np

    X = data["seed"]
    widths = np.linspace(1.0, 1.2, 100)
    out = run_coordinator(coordinator, ["--data", str(data["paths"]["seed"]), "--widths",
                                        "1:1.2:100", "--backend", "serial", "--select", "none",
                                        "--format", "json"])
    results = field(out, "results", "density check")
    if len(results) != len(widths):
        raise CompareError(f"density check: coordinator returned {len(results)} widths, expected 100")
    counts = numpy_counts(X, widths)
    for i, (r, h, k) in enumerate(zip(results, widths, counts)):
        rh = float(field(r, "h", "density check"))
        if rh.hex() != float(h).hex():
            raise CompareError(f"width {i}: coordinator h = {rh!r} ({rh.hex()}) but "
                               f"np.linspace(1.0, 1.2, 100)[{i}] = {float(h)!r} ({float(h).hex()})")
        rk = field(r, "count", "density check")
        if rk != k:
            raise CompareError(f"width {i} (h = {rh!r}): coordinator counts {rk}, numpy counts {k}")
        want = density(k, len(X), h)
        got = field(r, "density", "density check")
        if got is None or float(got).hex() != want.hex():
            raise CompareError(f"width {i} (h = {rh!r}): coordinator density {got!r} "
                               f"({float(got).hex() if got is not None else 'none'}), "
                               f"numpy {want!r} ({want.hex()})")
    return {"widths": len(widths), "bit_identical": len(widths), "rust": out}


def seed_benchmark(coordinator: Path, data: dict, n_widths: int, pools: list[int],
                   repeat: int) -> dict:
    """Step 2: the article's timeit benchmark, and `coordinator bench scaling` on the same file."""
    import numpy as np

    X = data["seed"]
    widths = np.linspace(1.0, 1.2, n_widths)
    point_x = np.array([[0], [0]])  # the article's (d, 1) point

    log(f"seed benchmark: article's serial row loop, {n_widths} widths, {repeat} run(s)")
    serial_s, serial_runs, serial_out = median_time(lambda: serial(X, point_x, widths), repeat)
    # The article's loop must agree with the vectorized count, so both compute the same thing.
    want = [density(k, len(X), h) for k, h in zip(numpy_counts(X, widths), widths)]
    got = [float(d) for _, d in serial_out]
    if [g.hex() for g in got] != [w.hex() for w in want]:
        i = next(i for i, (g, w) in enumerate(zip(got, want)) if g.hex() != w.hex())
        raise CompareError(f"the article's loop gives {got[i]!r} at h = {widths[i]!r}, "
                           f"numpy's vectorized count gives {want[i]!r}")

    pool_s = {}
    for p in pools:
        log(f"seed benchmark: article's multiprocess({p}) with apply_async, {repeat} run(s)")
        med, _, out = median_time(lambda: multiprocess(p, X, point_x, widths), repeat)
        if [float(d).hex() for _, d in out] != [w.hex() for w in want]:
            raise CompareError(f"multiprocess({p}) results differ from the serial ones")
        pool_s[p] = med

    log("seed benchmark: coordinator bench scaling")
    rust = run_coordinator(coordinator, [
        "bench", "scaling", "--data", str(data["paths"]["seed"]),
        "--widths", f"1:1.2:{n_widths}", "--workers", ",".join(map(str, pools)),
        "--backends", "process", "--repeat", str(repeat), "--format", "json"])
    if field(rust, "identical", "bench scaling") is not True:
        raise CompareError("bench scaling: the coordinator's backends did not produce "
                           "identical densities (\"identical\": false)")
    rows = field(rust, "rows", "bench scaling")
    return {
        "widths": n_widths,
        "python": {"serial_s": serial_s, "serial_runs_s": serial_runs,
                   "pool_s": {str(p): s for p, s in pool_s.items()}},
        "rust_serial_s": field(find_row(rows, "bench scaling", backend="serial"),
                               "median_s", "bench scaling"),
        "rust_pool_s": {str(p): field(find_row(rows, "bench scaling", backend="process",
                                               workers=p), "median_s", "bench scaling")
                        for p in pools},
        "rust": rust,
    }


def kernel(coordinator: Path, data: dict, repeat: int, budget_s: float) -> dict:
    """Step 4: one core, n = len(big), 100 widths; numpy two ways against the serial sweep."""
    import numpy as np

    X = data["big"]
    n = len(X)
    widths = np.linspace(1.0, 1.2, 100)
    p = np.zeros(2)

    # numpy as usually written: the whole hypercube test again for every width. If the
    # full 100 widths would take longer than the budget, time an evenly spaced subset
    # and scale to 100 (the label says so).
    t0 = time.perf_counter()
    int(np.all(np.abs(X - p) / widths[0] <= 0.5, axis=1).sum())
    probe = time.perf_counter() - t0
    m = len(widths)
    if probe * len(widths) * repeat > budget_s:
        m = max(5, min(len(widths), int(budget_s / (probe * repeat))))
    subset = widths[np.linspace(0, len(widths) - 1, m).round().astype(int)]

    def usual():
        return [int(np.all(np.abs(X - p) / h <= 0.5, axis=1).sum()) for h in subset]

    log(f"kernel: numpy as usually written, n = {n}, {m} of 100 widths, {repeat} run(s)")
    usual_s, _, usual_counts = median_time(usual, repeat)
    usual_s *= len(widths) / m

    # numpy with each sample's largest coordinate distance computed once (included),
    # and the coordinator's whole process, timed in alternation so that both see the same
    # machine (other load on a shared machine moves both alike).
    def max_once():
        d = np.abs(X - p).max(1)
        return [int((d / h <= 0.5).sum()) for h in widths]

    log(f"kernel: numpy with the per-sample max taken once, against coordinator --backend "
        f"serial --select none (whole process), alternating, {repeat} run(s) each")
    big_args = ["--data", str(data["paths"]["big"]), "--widths", "1:1.2:100", "--backend",
                "serial", "--select", "none", "--format", "json"]
    run_coordinator(coordinator, big_args)  # warm-up: the binary and the file in the page cache
    once, elapsed, whole, once_counts, rust_counts = [], [], [], None, None
    for _ in range(repeat):
        t0 = time.perf_counter()
        once_counts = max_once()
        once.append(time.perf_counter() - t0)
        t0 = time.perf_counter()
        out = run_coordinator(coordinator, big_args)
        whole.append(time.perf_counter() - t0)
        elapsed.append(float(field(out, "elapsed_s", "kernel")))
        rust_counts = [field(r, "count", "kernel") for r in field(out, "results", "kernel")]
    once_s = statistics.median(once)
    if rust_counts != once_counts:
        i = next((i for i, (a, b) in enumerate(zip(rust_counts, once_counts)) if a != b), 0)
        raise CompareError(f"kernel, n = {n}: at h = {widths[i]!r} the coordinator counts "
                           f"{rust_counts[i] if i < len(rust_counts) else 'nothing'}, "
                           f"numpy {once_counts[i]}")
    index = {float(h): i for i, h in enumerate(widths)}
    if any(once_counts[index[float(h)]] != k for h, k in zip(subset, usual_counts)):
        raise CompareError(f"kernel, n = {n}: numpy's two ways count differently")
    return {"samples": n, "usual_widths_timed": m, "usual_s": usual_s, "max_once_s": once_s,
            "rust_elapsed_s": statistics.median(elapsed), "rust_runs_s": elapsed,
            "rust_process_s": statistics.median(whole), "rust_process_runs_s": whole,
            "counts_agree": True}


def map_rate(make_pool, jobs: int, chunksize, repeat: int) -> float:
    """No-op jobs per second through pool.map: warm-up, then median of `repeat` maps."""
    with make_pool() as pool:
        pool.map_async(noop, range(min(jobs, 10_000)), chunksize).get(POOL_TIMEOUT_S)
        med, _, _ = median_time(
            lambda: pool.map_async(noop, range(jobs), chunksize).get(POOL_TIMEOUT_S), repeat)
    return jobs / med


def executor_rate(jobs: int, repeat: int) -> float:
    """No-op jobs per second through ProcessPoolExecutor(2).map (its default chunksize 1)."""
    with concurrent.futures.ProcessPoolExecutor(2) as ex:
        list(ex.map(noop, range(min(jobs, 2_000)), timeout=POOL_TIMEOUT_S))
        med, _, _ = median_time(
            lambda: list(ex.map(noop, range(jobs), timeout=POOL_TIMEOUT_S)), repeat)
    return jobs / med


def apply_round_trip(applies: int) -> float:
    """Median seconds of one Pool(2).apply(noop), after a warm-up."""
    with mp.Pool(2) as pool:
        for _ in range(max(100, applies // 10)):
            pool.apply(noop)
        times = []
        for _ in range(applies):
            t0 = time.perf_counter()
            pool.apply(noop)
            times.append(time.perf_counter() - t0)
    return statistics.median(times)


def pool_ready(method: str, workers: int, repeat: int) -> float:
    """Median seconds from Pool(workers) to every worker up and one map of no-ops done.

    A barrier in the initializer keeps any worker from taking a job before all are up,
    so the map cannot finish on the first worker alone. One untimed warm-up start first
    (for forkserver it also starts the fork server, a one-time cost).
    """
    ctx = mp.get_context(method)

    def once():
        barrier = ctx.Barrier(workers)
        t0 = time.perf_counter()
        pool = ctx.Pool(workers, initializer=_wait_for_all, initargs=(barrier,))
        pool.map_async(noop, range(workers), 1).get(POOL_TIMEOUT_S)
        dt = time.perf_counter() - t0
        pool.close()
        pool.join()
        return dt

    once()
    return statistics.median(once() for _ in range(repeat))


def alternating_auto(coordinator: Path, sizes: list[int], rounds: int, repeat: int) -> dict:
    """Python's default-chunksize Pool(2).map against the coordinator's automatic chunking
    (process x2), timed in alternation: `rounds` rounds, each one Python figure and one
    coordinator figure per size (each the median of `repeat` maps), so that a noisy minute
    moves both sides alike. Returns every round's rates, by side and size."""
    runs = {"python": {str(n): [] for n in sizes}, "rust": {str(n): [] for n in sizes}}
    for r in range(rounds):
        for n in sizes:
            log(f"overhead, alternating round {r + 1} of {rounds}: {n} jobs, Python then Rust")
            runs["python"][str(n)].append(map_rate(lambda: mp.Pool(2), n, None, repeat))
            rust = run_coordinator(coordinator, [
                "bench", "overhead", "--workers", "2", "--backends", "process",
                "--jobs", str(n), "--repeat", str(repeat), "--format", "json"])
            row = find_row(field(rust, "rows", "bench overhead"), "bench overhead",
                           backend="process", workers=2)
            runs["rust"][str(n)].append(field(row, "auto_jobs_per_s", "bench overhead"))
    return runs


def overhead(coordinator: Path, jobs: int, big_jobs: int, executor_jobs: int, applies: int,
             repeat: int, rounds: int) -> dict:
    """Step 5: Python's pools on no-op jobs, and `coordinator bench overhead`."""
    py = {}
    log(f"overhead: Pool(2).map chunksize 1, {jobs} jobs")
    py["pool_chunk1_jobs_per_s"] = map_rate(lambda: mp.Pool(2), jobs, 1, repeat)
    log(f"overhead: Pool(2).map default chunksize, {jobs} jobs")
    py["pool_default_jobs_per_s"] = map_rate(lambda: mp.Pool(2), jobs, None, repeat)
    # What Pool.map chooses by default: ceil(jobs / (4 * workers)).
    py["pool_default_chunksize"] = -(-jobs // (4 * 2))
    log(f"overhead: Pool(2).map default chunksize, {big_jobs} jobs")
    py["pool_default_big_jobs_per_s"] = map_rate(lambda: mp.Pool(2), big_jobs, None, repeat)
    py["pool_default_big_chunksize"] = -(-big_jobs // (4 * 2))
    log(f"overhead: ProcessPoolExecutor(2).map, {executor_jobs} jobs")
    py["executor_jobs_per_s"] = executor_rate(executor_jobs, repeat)
    log(f"overhead: ThreadPool(2).map chunksize 1, {jobs} jobs")
    py["threadpool_chunk1_jobs_per_s"] = map_rate(lambda: mp.pool.ThreadPool(2), jobs, 1,
                                                  repeat)
    log(f"overhead: Pool(2).apply round trip, {applies} timed")
    py["apply_s"] = apply_round_trip(applies)
    py["ready_s"] = {}
    for method in ("fork", "forkserver", "spawn"):
        if method not in mp.get_all_start_methods():
            continue
        log(f"overhead: Pool(4) start-up, {method}")
        py["ready_s"][method] = pool_ready(method, 4, repeat)

    log("overhead: coordinator bench overhead")
    rust = run_coordinator(coordinator, [
        "bench", "overhead", "--workers", "2,4", "--backends", "process,thread",
        "--jobs", str(jobs), "--repeat", str(repeat), "--format", "json"])
    rows = field(rust, "rows", "bench overhead")
    log(f"overhead: coordinator bench overhead, {big_jobs} jobs")
    rust_big = run_coordinator(coordinator, [
        "bench", "overhead", "--workers", "2", "--backends", "process",
        "--jobs", str(big_jobs), "--repeat", str(repeat), "--format", "json"])
    big_rows = field(rust_big, "rows", "bench overhead")
    alternating = alternating_auto(coordinator, [jobs, big_jobs], rounds, repeat)
    return {"python": py,
            "alternating": alternating,
            "rust_process2_big": find_row(big_rows, "bench overhead", backend="process",
                                          workers=2),
            "rust_big": rust_big,
            "rust_process2": find_row(rows, "bench overhead", backend="process", workers=2),
            "rust_process4": find_row(rows, "bench overhead", backend="process", workers=4),
            "rust_thread2": find_row(rows, "bench overhead", backend="thread", workers=2),
            "rust": rust}


# ---------------------------------------------------------------------------------------
# Main
# ---------------------------------------------------------------------------------------


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--coordinator", default=DEFAULT_COORDINATOR, metavar="PATH",
                    help=f"the coordinator binary (default: {DEFAULT_COORDINATOR} in the repository)")
    ap.add_argument("--quick", action="store_true",
                    help="shrink everything: a smoke test in well under a minute")
    ap.add_argument("--repeat", type=int, metavar="N",
                    help="timed runs per measurement, median reported (default 3; 1 with --quick)")
    ap.add_argument("--json", metavar="FILE", help="also write every figure as JSON to FILE")
    args = ap.parse_args()

    try:
        import numpy as np
    except ImportError:
        print("compare_python: numpy is needed: pip install -r scripts/requirements.txt",
              file=sys.stderr)
        return 2

    coordinator = Path(args.coordinator)
    if not coordinator.is_absolute() and args.coordinator == DEFAULT_COORDINATOR:
        coordinator = REPO / coordinator
    if not (coordinator.is_file() and os.access(coordinator, os.X_OK)):
        print(f"compare_python: {coordinator} not found; run `cargo build --release` first "
              "(or pass --coordinator PATH)", file=sys.stderr)
        return 2

    quick = args.quick
    repeat = args.repeat or (1 if quick else 3)
    if repeat < 1:
        print("compare_python: --repeat must be at least 1", file=sys.stderr)
        return 2
    sizes = dict(
        seed_widths=10 if quick else 100,
        pools=[2, 3, 4],
        n_big=100_000 if quick else 1_000_000,
        kernel_budget_s=2.0 if quick else 60.0,
        jobs=5_000 if quick else 100_000,
        big_jobs=20_000 if quick else 1_000_000,
        executor_jobs=1_000 if quick else 20_000,
        applies=200 if quick else 2_000,
        rounds=1 if quick else 5,
    )

    try:
        sysinfo = run_coordinator(coordinator, ["sysinfo", "--format", "json"], timeout=60)
        with tempfile.TemporaryDirectory(prefix="compare_python.") as tmp:
            log(f"drawing the data (seed 123): 10000 and {sizes['n_big']} samples")
            data = draw_data(Path(tmp), sizes["n_big"])
            log("checking the coordinator's densities against numpy")
            check = check_densities(coordinator, data)
            seed = seed_benchmark(coordinator, data, sizes["seed_widths"], sizes["pools"],
                                  repeat)
            kern = kernel(coordinator, data, repeat, sizes["kernel_budget_s"])
        ovh = overhead(coordinator, sizes["jobs"], sizes["big_jobs"], sizes["executor_jobs"],
                       sizes["applies"], repeat, sizes["rounds"])
    except CompareError as e:
        print(f"compare_python: error: {e}", file=sys.stderr)
        return 1
    except mp.TimeoutError:
        print(f"compare_python: error: a Python pool did not answer within {POOL_TIMEOUT_S} s",
              file=sys.stderr)
        return 1

    # ---- the table --------------------------------------------------------------------
    t = Table()
    w = seed["widths"]
    t.start(f"Seed benchmark (article's timeit): n = 10000, {w} widths "
            f"np.linspace(1.0, 1.2, {w}), median of {repeat}")
    t.note("a run = start the pool, every width, shut down (Python: the article's "
           "multiprocess() + close/join)")
    t.time("serial (article's row loop | Rust serial)", seed["rust_serial_s"],
           seed["python"]["serial_s"])
    for p in sizes["pools"]:
        t.time(f"Pool({p}).apply_async per width | {p} worker processes",
               seed["rust_pool_s"][str(p)], seed["python"]["pool_s"][str(p)])
    t.note(f"densities agree with numpy: yes ({check['bit_identical']} of {check['widths']} "
           "bit-identical); widths equal np.linspace(1.0, 1.2, 100) bit for bit")

    n = kern["samples"]
    t.start(f"Kernel on one core: n = {n}, 100 widths, median of {repeat}")
    t.note("Rust: coordinator --backend serial --select none, elapsed_s (the bucket index of "
           "the per-sample distances kept for the 100 widths, one pass, + 100 widths; "
           "no loading)")
    scaled = (f", timed {kern['usual_widths_timed']} of 100 widths, scaled"
              if kern["usual_widths_timed"] < 100 else "")
    t.time(f"numpy as usually written{scaled}", kern["rust_elapsed_s"], kern["usual_s"])
    t.time("numpy, per-sample max taken once", kern["rust_elapsed_s"], kern["max_once_s"])
    t.note("Rust, whole process: the coordinator started, its .npy mapped and checked, "
           "the sweep run, the JSON printed, the process gone (wall time around the command, "
           "timed in alternation with numpy's)")
    t.time("numpy, per-sample max taken once | whole process", kern["rust_process_s"],
           kern["max_once_s"])
    t.note(f"counts agree with numpy: yes (100 of 100 widths, n = {n})")

    py, p2, p4, t2 = ovh["python"], ovh["rust_process2"], ovh["rust_process4"], ovh["rust_thread2"]
    def f(row, key):
        return field(row, key, "bench overhead")

    t.start(f"Overhead: no-op jobs, {sizes['jobs']} per map unless named, median of {repeat}")
    t.rate("Pool(2).map chunksize 1 | process chunk 1", f(p2, "chunk1_jobs_per_s"),
           py["pool_chunk1_jobs_per_s"])
    t.note("the next two rows: one figure per side, taken minutes apart (on a noisy machine "
           "the alternating rows below are the comparison)")
    t.rate(f"Pool(2).map default (chunk {py['pool_default_chunksize']}) | process auto "
           f"(chunk {f(p2, 'auto_chunksize')})", f(p2, "auto_jobs_per_s"),
           py["pool_default_jobs_per_s"])
    p2big = ovh["rust_process2_big"]
    t.rate(f"Pool(2).map default (chunk {py['pool_default_big_chunksize']}), "
           f"{sizes['big_jobs']} jobs | process auto (chunk {f(p2big, 'auto_chunksize')})",
           f(p2big, "auto_jobs_per_s"), py["pool_default_big_jobs_per_s"])
    alt, rounds = ovh["alternating"], sizes["rounds"]
    t.note(f"default chunksize against automatic chunking, timed in alternation: {rounds} "
           f"rounds of one Python and one Rust figure (each a median of {repeat}); "
           "medians over the rounds")
    for n in (sizes["jobs"], sizes["big_jobs"]):
        rust_runs, py_runs = alt["rust"][str(n)], alt["python"][str(n)]
        t.rate(f"Pool(2).map default, {n} jobs, alternating | process auto",
               statistics.median(rust_runs), statistics.median(py_runs))
        ratios = sorted(r / p for r, p in zip(rust_runs, py_runs))
        t.note(f"{n} jobs, each round's ratio: " + ", ".join(f"{x:.2f}x" for x in ratios))
    t.rate(f"ProcessPoolExecutor(2).map, {sizes['executor_jobs']} jobs | process chunk 1",
           f(p2, "chunk1_jobs_per_s"), py["executor_jobs_per_s"])
    t.rate("ThreadPool(2).map chunksize 1 | thread chunk 1", f(t2, "chunk1_jobs_per_s"),
           py["threadpool_chunk1_jobs_per_s"])
    t.time("Pool(2).apply round trip, median | process apply p50",
           f(p2, "apply_p50_us") * 1e-6, py["apply_s"])
    for method, s in py["ready_s"].items():
        t.time(f"Pool(4) start to ready, {method} | 4 processes ready", f(p4, "ready_ms") * 1e-3, s)

    cores = f"{sysinfo.get('logical_cores')} logical"
    if sysinfo.get("physical_cores"):
        cores += f", {sysinfo['physical_cores']} physical"
    if sysinfo.get("available_cores") not in (None, sysinfo.get("logical_cores")):
        cores += f", {sysinfo['available_cores']} available"
    print(f"machine: {sysinfo.get('processor')} ({cores} cores), {sysinfo.get('system')} "
          f"{sysinfo.get('release')} {sysinfo.get('machine')}")
    print(f"Rust:    coordinator {sysinfo.get('version')}, {sysinfo.get('rustc')}, "
          f"{sysinfo.get('profile')} build")
    print(f"Python:  {platform.python_version()} ({platform.python_implementation()}), "
          f"numpy {np.__version__}, default start method {mp.get_start_method()}")
    print(f"mode:    {'quick (smoke test, shrunk counts)' if quick else 'full'}; "
          "ratio > 1 means Rust is better (Python/Rust for times, Rust/Python for throughputs)")
    print()
    print(t.render())

    if args.json:
        doc = {
            "sysinfo": sysinfo,
            "python": {"version": platform.python_version(),
                       "implementation": platform.python_implementation(),
                       "numpy": np.__version__, "start_method": mp.get_start_method()},
            "quick": quick, "repeat": repeat, "sizes": sizes,
            "figures": t.figures,
            "checks": {"densities_bit_identical": check["bit_identical"],
                       "widths_checked": check["widths"], "kernel_counts_agree": True,
                       "scaling_identical": seed["rust"]["identical"]},
            "seed": {k: v for k, v in seed.items() if k != "rust"},
            "kernel": kern,
            "overhead": {"python": py, "alternating": ovh["alternating"]},
            "coordinator": {"scaling": seed["rust"], "overhead": ovh["rust"],
                            "overhead_big": ovh["rust_big"]},
        }
        try:
            Path(args.json).write_text(json.dumps(doc, indent=2) + "\n")
        except OSError as e:
            print(f"compare_python: error: could not write {args.json}: {e}", file=sys.stderr)
            return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
