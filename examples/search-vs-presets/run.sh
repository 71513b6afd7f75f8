#!/usr/bin/env bash
# Part 3 of issue 8: does a data-free search beat the fixed presets? (docs/results.md, section 3)
#   bash examples/search-vs-presets/run.sh OUT
# Runs five studies through Ray (a finished one is skipped, a killed one resumed): TPE over the
# SynFlow family at densities 0.03 and 0.01 (50 data-free trials each, then the top-5 trained
# on seeds 0, 1, 2), the random-5 baseline from the same space, and the presets synflow,
# synflow-l2, synflow-l2-code; then `pathsweep analyze` over all of it and summarize.py's
# tables (OUT/summary.md) and figure (OUT/search_vs_presets.png).
set -euo pipefail
out=${1:?usage: run.sh OUT}
here=$(cd "$(dirname "$0")" && pwd)
mkdir -p "$out"
dirs=()
for name in tpe-d0.03 tpe-d0.01 random-d0.03 random-d0.01 presets; do
  if [ -f "$out/$name/run.json" ]; then
    pathsweep study resume "$out/$name" --view log
  else
    pathsweep study run "$here/$name.yaml" --out "$out/$name" --view log
  fi
  dirs+=("$out/$name")
done
pathsweep analyze "${dirs[@]}" --report "$out/report" --resamples 1000
python "$here/summarize.py" "$out" --markdown "$out/summary.md" --figure "$out/search_vs_presets.png"
