"""Run the designed study of part 2 in this process, without Ray, for a loaded small machine.

``run.sh`` runs the same specs through ``pathsweep study run`` (Ray actors, Optuna's grid
sampler). On a shared 2-core machine a local Ray may not start in time; this script runs the
same grid points through the orchestrator's own trial function (``orchestrator.trial.run_trial``,
what each Ray actor calls) one after another and writes the same Parquet rows, so that
``pathsweep analyze`` reads them unchanged. Every grid point of every spec runs once per seed.

Usage::

    nice -n 10 python examples/paths-predict-training/run_inline.py OUT [--seeds 3]
        [--epochs 30] [--models fc conv]
    pathsweep analyze OUT/* --report OUT-report
"""

from __future__ import annotations

import argparse
import itertools
import os
import sys
import time
from pathlib import Path

import pyarrow.parquet as pq
import torch

from orchestrator import rows as R
from orchestrator.rowbuild import RowBuilder
from orchestrator.scheduler import Job
from orchestrator.spec import load_yaml, parse_spec
from orchestrator.trial import make_config, resolve_params, run_trial
from orchestrator.worker import WorkerInfo

HERE = Path(__file__).resolve().parent


def run_study(path: Path, seed: int, epochs: int, out: Path) -> Path:
    """Run every grid point of the spec at ``path`` with ``seed``; write OUT/<study>/."""
    text = path.read_text().replace("-s0\n", f"-s{seed}\n", 1)
    raw = load_yaml(text)
    raw["seed"], raw["train"] = seed, {**raw.get("train", {}), "epochs": epochs}
    spec = parse_spec(raw)
    directory = out / spec.study
    final = directory / "trials" / "part-0.parquet"
    if final.is_file():
        print(f"{spec.study}: done already", flush=True)
        return directory
    grid = spec.search.grid()
    # Rows as the driver builds them (orchestrator.rowbuild), from a worker that is this process.
    builder = RowBuilder.for_spec(
        spec, directory, {"pathsweep_version": "inline", "torch_version": torch.__version__}
    )
    here = WorkerInfo(node_id="inline", gpu_ids="", pid=os.getpid(), device="cpu", hostname="")
    rows = []
    for number, point in enumerate(itertools.product(*grid.values())):
        params = resolve_params(dict(zip(grid, point, strict=True)), spec.search.fixed())
        config = make_config(spec, number, 0, params)
        job = Job(number, 0, R.PHASE_SEARCH, params, config, number)
        started = time.time()
        try:
            result = run_trial(config)
        except Exception as err:  # recorded as a FAIL row, as the driver does
            print(f"{spec.study} #{number} FAILED: {err}", flush=True)
            rows.append(builder.row(job, "FAIL", here, (started, time.time()), error=str(err)))
            continue
        rows.append(builder.row(job, "COMPLETE", here, (started, time.time()), result=result))
        print(f"{spec.study} #{number} {params['pruner']} d={params['density']}: "
              f"acc={result.metrics.get('test_accuracy'):.3f} "
              f"({time.time() - started:.1f} s)", flush=True)
    table, _ = R.rows_to_table(rows, R.declared_schema(spec))
    (directory / "trials").mkdir(parents=True, exist_ok=True)
    (directory / "spec.yaml").write_text(text.replace("seed: 0\n", f"seed: {seed}\n")
                                         .replace("{epochs: 30}", f"{{epochs: {epochs}}}"))
    tmp = final.with_name(".part-0.parquet.tmp")  # hidden from readers until renamed
    pq.write_table(table, tmp)
    tmp.replace(final)
    return directory


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("out", type=Path)
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--epochs", type=int, default=30)
    parser.add_argument("--models", nargs="+", default=["fc", "conv"])
    args = parser.parse_args(argv)
    start = time.perf_counter()
    for model in args.models:
        for seed in range(args.seeds):
            for path in sorted(HERE.glob(f"{model}-*.yaml")):
                run_study(path, seed, args.epochs, args.out)
    print(f"wall time {time.perf_counter() - start:.0f} s", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
