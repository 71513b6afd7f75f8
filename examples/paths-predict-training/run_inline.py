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
from orchestrator.spec import load_yaml, parse_spec
from orchestrator.trial import make_config, resolve_params, run_trial

HERE = Path(__file__).resolve().parent


def _row(spec, number: int, params: dict, result, started: float, finished: float) -> dict:  # type: ignore[no-untyped-def]
    row = {
        "study": spec.study, "trial_id": R.trial_id(number, 0, R.PHASE_SEARCH),
        "optuna_number": number, "attempt": 0, "phase": R.PHASE_SEARCH,
        "state": "COMPLETE", "error": None, "retry": False, "node_id": "inline",
        "gpu_ids": "", "worker_pid": os.getpid(), "device": result.device if result else None,
        "started_at": started, "finished_at": finished, "duration_s": finished - started,
        "seed": spec.seed, "pathsweep_version": "inline", "torch_version": torch.__version__,
        R.param_column("model"): spec.model.name, R.param_column("dataset"): spec.data.name,
    }
    row.update({R.param_column(k): v for k, v in params.items()})
    if result is not None:
        row.update(result.metrics)
        row.update(result.timings)
    return row


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
    rows = []
    for number, point in enumerate(itertools.product(*grid.values())):
        params = resolve_params(dict(zip(grid, point, strict=True)), spec.search.fixed())
        started = time.time()
        try:
            result = run_trial(make_config(spec, number, 0, params))
        except Exception as err:  # recorded as a FAIL row, as the driver does
            print(f"{spec.study} #{number} FAILED: {err}", flush=True)
            rows.append({**_row(spec, number, params, None, started, time.time()),
                         "state": "FAIL", "error": str(err)})
            continue
        rows.append(_row(spec, number, params, result, started, time.time()))
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
