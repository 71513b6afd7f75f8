#!/usr/bin/env bash
# Issue 8, part 1: the whole layer-collapse table of docs/results.md section 1 in one command.
#   bash examples/layer_collapse.sh OUT        (OUT: a folder for the per-run JSON files)
# Single-shot pruners by bisection to 0.05; the iterative ones (100 rounds) by grid scans over
# the ranges below, in float64 (pathsweep's default) and float32; then every file joined by
# `layer_collapse.py --merge` into OUT/layer_collapse.json and drawn into OUT/layer_collapse.png.
# One torch thread per run (several threads on a shared machine are slower, not faster).
set -euo pipefail
out="${1:?usage: bash examples/layer_collapse.sh OUT}"
here="$(cd "$(dirname "$0")" && pwd)"
mkdir -p "$out"
export OMP_NUM_THREADS="${OMP_NUM_THREADS:-1}"
run() { name="$1"; shift; python "$here/layer_collapse.py" "$@" --out "$out/$name.json"; }
start=$(date +%s)

run single --methods random magnitude snip grasp
# SNIP and GraSP iterated like the reference run (100 rounds): about 5 and 14 minutes per run
run snip-it-traj --methods snip --iterative-single-shot --trajectory
run grasp-it-traj --methods grasp --iterative-single-shot --trajectory
run snip-it-a --methods snip --iterative-single-shot --scan 2.8 2.8
run snip-it-b --methods snip --iterative-single-shot --scan 2.9 3.0 --step 0.1
run snip-it-c --methods snip --iterative-single-shot --scan 2.95 2.95
run snip-it-d --methods snip --iterative-single-shot --scan 3.3 3.6 --step 0.3
for dtype in float64 float32; do
    d="--dtype $dtype"
    if [ "$dtype" = float64 ]; then
        run sf-$dtype-a --methods synflow $d --scan 5.00 5.35 --step 0.05
        run l2-$dtype-a --methods synflow-l2 $d --scan 4.30 4.75 --step 0.05
        run l2c-$dtype-a --methods synflow-l2-code $d --scan 4.80 5.25 --step 0.05
        run dist-$dtype-a --methods synflow-dist $d --scan 5.00 5.45 --step 0.05
        run pk-$dtype-a --methods pk-preserve $d --scan 5.75 5.95 --step 0.05
        run pk-$dtype-b --methods pk-preserve $d --scan 6.00 6.02 --step 0.02
        run l2-$dtype-b --methods synflow-l2 $d --scan 4.80 5.40 --step 0.05
        run dist-$dtype-b --methods synflow-dist $d --scan 5.50 6.05 --step 0.05
    else
        run l2-$dtype-b --methods synflow-l2 $d --scan 4.80 5.40 --step 0.05
        run dist-$dtype-b --methods synflow-dist $d --scan 5.50 6.05 --step 0.05
        run pk-$dtype-a --methods pk-preserve $d --scan 5.60 6.05 --step 0.05
    fi
    run sf-$dtype-b --methods synflow $d --scan 5.40 5.59 --step 0.01
    run sf-$dtype-c --methods synflow $d --scan 5.60 6.03 --step 0.01
    run l2c-$dtype-b --methods synflow-l2-code $d --scan 5.30 5.85 --step 0.05
done

files=()
for f in "$out"/*.json; do
    [ "$(basename "$f")" = layer_collapse.json ] || files+=("$f")
done
python "$here/layer_collapse.py" --merge "${files[@]}" --out "$out/layer_collapse.json"
python "$here/layer_collapse.py" --plot "$out/layer_collapse.json" "$out/layer_collapse.png"
echo "layer_collapse.sh: $(( $(date +%s) - start )) s; $out/layer_collapse.json, $out/layer_collapse.png"
