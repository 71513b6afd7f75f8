#!/usr/bin/env bash
# Part 2 of issue 8: the designed study (2 models x 8 pruners x 5 densities x SEEDS seeds, every
# trial trained), then one analysis over all of it. Then part 4 through the same design: the
# authors'-code SynFlow-L2 (l2-code/*.yaml, pruner synflow-l2-code), run separately and left out
# of that analysis; l2-code/compare.py puts it beside synflow-l2. Usage:
#   bash examples/paths-predict-training/run.sh OUT [SEEDS] [EPOCHS]
# OUT receives one study directory per model, pruner group and seed, OUT/report and
# OUT/l2-code.md. A study directory that finished already (run.json) is not run again.
set -euo pipefail
out=${1:?usage: run.sh OUT [SEEDS] [EPOCHS]}
seeds=${2:-3}
epochs=${3:-30}
here=$(cd "$(dirname "$0")" && pwd)
mkdir -p "$out/specs"

run_seeds() {  # run_seeds SPEC: one study per seed, appending its directories to $dirs
  local spec=$1 name copy seed
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
}

dirs=()
for spec in "$here"/*.yaml; do
  run_seeds "$spec"
done
pathsweep analyze "${dirs[@]}" --report "$out/report"

designed=("${dirs[@]}")
dirs=()
for spec in "$here"/l2-code/*.yaml; do
  run_seeds "$spec"
done
python "$here/l2-code/compare.py" "${designed[@]}" "${dirs[@]}" > "$out/l2-code.md"
