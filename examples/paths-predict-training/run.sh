#!/usr/bin/env bash
# Part 2 of issue 8: the designed study (2 models x 8 pruners x 5 densities x SEEDS seeds, every
# trial trained), then one analysis over all of it. Usage:
#   bash examples/paths-predict-training/run.sh OUT [SEEDS] [EPOCHS]
# OUT receives one study directory per model, pruner group and seed, and OUT/report.
set -euo pipefail
out=${1:?usage: run.sh OUT [SEEDS] [EPOCHS]}
seeds=${2:-3}
epochs=${3:-30}
here=$(cd "$(dirname "$0")" && pwd)
mkdir -p "$out/specs"
dirs=()
for spec in "$here"/*.yaml; do
  name=$(basename "$spec" .yaml)
  for ((seed = 0; seed < seeds; seed++)); do
    copy="$out/specs/$name-s$seed.yaml"
    sed -e "s/^seed: 0$/seed: $seed/" -e "s/-s0$/-s$seed/" \
        -e "s/^train: {epochs: 30}$/train: {epochs: $epochs}/" "$spec" > "$copy"
    if [ ! -f "$out/$name-s$seed/run.json" ]; then
      pathsweep study run "$copy" --out "$out/$name-s$seed" --view log
    fi
    dirs+=("$out/$name-s$seed")
  done
done
pathsweep analyze "${dirs[@]}" --report "$out/report"
