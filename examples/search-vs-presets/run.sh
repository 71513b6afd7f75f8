#!/usr/bin/env bash
# Part 3 of issue 8: does a data-free search beat the fixed presets? (docs/results.md)
#   bash examples/search-vs-presets/run.sh OUT [fc|conv]
# Runs five studies through Ray (a finished one is skipped, a killed one resumed): TPE over the
# SynFlow family at densities 0.03 and 0.01 (50 data-free trials each, then the top-5 trained
# on seeds 0-4), the random-5 baseline from the same space, and the presets synflow,
# synflow-l2, synflow-l2-code; then `pathsweep analyze` over all of it and summarize.py's
# tables (OUT/summary.md) and figure (OUT/search_vs_presets.png). The specs are the 6x100 MLP's
# (fc, the default); with `conv` they run on section 2's small CNN (copies in OUT/specs).
set -euo pipefail
out=${1:?usage: run.sh OUT [fc|conv]}
model=${2:-fc}
here=$(cd "$(dirname "$0")" && pwd)
mkdir -p "$out"
specs=$here
if [ "$model" = conv ]; then
  specs=$out/specs
  mkdir -p "$specs"
  for spec in "$here"/*.yaml; do
    sed -e 's/^model: {name: fc, width: 100, depth: 6}$/model: {name: conv, width: 32, depth: 3}/' \
        -e 's/^study: svp-/study: svp-conv-/' "$spec" > "$specs/$(basename "$spec")"
  done
elif [ "$model" != fc ]; then
  echo "run.sh: MODEL must be fc or conv, but got '$model'" >&2
  exit 2
fi
dirs=()
for name in tpe-d0.03 tpe-d0.01 random-d0.03 random-d0.01 presets; do
  if [ -f "$out/$name/run.json" ]; then
    pathsweep study resume "$out/$name" --view log
  else
    pathsweep study run "$specs/$name.yaml" --out "$out/$name" --view log
  fi
  dirs+=("$out/$name")
done
pathsweep analyze "${dirs[@]}" --report "$out/report" --resamples 1000
python "$here/summarize.py" "$out" --markdown "$out/summary.md" --figure "$out/search_vs_presets.png"
