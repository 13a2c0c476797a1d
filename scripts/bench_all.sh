#!/usr/bin/env bash
# Reproduces the figures in BENCHMARKS.md on this machine: every `coordinator bench` suite
# with its plots, the Python comparison, the criterion micro-benchmarks and, when an MPI
# library is installed, the MPI rows. Run it on a quiet machine; it takes ~10 minutes.
# Usage: scripts/bench_all.sh [OUT_DIR]   (default docs/bench; PYTHON=... picks the Python
# that has numpy, see scripts/requirements.txt)
set -euo pipefail
cd "$(dirname "$0")/.."
out=${1:-docs/bench}
mkdir -p "$out"

cargo build --release
c=target/release/coordinator
$c sysinfo | tee "$out/sysinfo.txt"
$c bench scaling --repeat 5 --plot "$out/scaling.svg" | tee "$out/scaling.txt"
$c bench scaling --samples 1e6 --repeat 3 --plot "$out/scaling-1e6.svg" \
    --timeline "$out/timeline-scaling-1e6.svg" | tee "$out/scaling-1e6.txt"
$c bench scaling --workload lscv --repeat 5 --plot "$out/scaling-lscv.svg" \
    | tee "$out/scaling-lscv.txt"
$c bench overhead --repeat 5 --plot "$out/overhead.svg" | tee "$out/overhead.txt"
$c bench granularity --repeat 5 --plot "$out/granularity.svg" | tee "$out/granularity.txt"
"${PYTHON:-python3}" scripts/compare_python.py --json "$out/python.json" | tee "$out/python.txt"
cargo bench -p procpool --bench overhead 2>&1 | tee "$out/criterion.txt"

if command -v mpirun >/dev/null 2>&1; then
    cargo build --release --features mpi
    mpi="mpirun -n 3 --allow-run-as-root --oversubscribe $c"
    $mpi bench overhead --backends mpi,process --workers 2 --repeat 5 | tee "$out/mpi-overhead.txt"
    $mpi bench scaling --backends mpi,process --workers 2 --samples 1e6 --repeat 3 \
        | tee "$out/mpi-scaling-1e6.txt"
    cargo build --release   # leave the default build in place
fi
