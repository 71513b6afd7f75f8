"""Fixtures: synthetic studies (fast) and one small real study (pruned and trained)."""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import yaml

from analysis.synthetic import write_study


def write_rows(directory: Path, rows: list[dict], name: str = "part-0.parquet",
               spec: dict | None = None) -> Path:
    """Write ``rows`` as one Parquet file of the study ``directory`` (plus spec.yaml)."""
    (directory / "trials").mkdir(parents=True, exist_ok=True)
    pq.write_table(pa.Table.from_pylist(rows), directory / "trials" / name)
    if spec is not None:
        (directory / "spec.yaml").write_text(yaml.safe_dump(spec))
    return directory


@pytest.fixture
def synthetic_study(tmp_path: Path) -> Path:
    """400 search rows (half trained, 3 files) plus 2 x 6 validation rows."""
    return write_study(tmp_path / "syn", 400, files=3, seed=1, trained_fraction=0.5,
                       validate_k=6)


@pytest.fixture
def untrained_study(tmp_path: Path) -> Path:
    """A two-objective study without trained metrics."""
    return write_study(tmp_path / "free", 200, files=2, seed=2, trained_fraction=0.0,
                       objectives=(("log_path_kernel_trace", "maximize"),
                                   ("num_params", "minimize")))


def _real_rows() -> list[dict]:
    import torch

    import pruners
    from pruners.training import TrainConfig

    ds = pruners.load_dataset("digits", seed=0)
    rows = []
    configs = [(p, d, s) for p in ("synflow", "magnitude") for d in (0.1, 0.01) for s in (0, 1)]
    for number, (pruner, density, seed) in enumerate(configs):
        torch.manual_seed(seed)
        started = time.time()
        model = pruners.build_model("fc", input_shape=ds.input_shape, num_classes=ds.num_classes)
        masks = pruners.prune(model, pruner, density=density, iterations=10 if pruner == "synflow" else 1,
                              input_shape=ds.input_shape, seed=seed)
        stats = pruners.path_kernel_stats(model, input_shape=ds.input_shape, masks=masks)
        _, result = pruners.train(model, masks, ds, TrainConfig(epochs=2, seed=seed, device="cpu"))
        rows.append({
            "study": "real", "trial_id": f"{number}-0", "optuna_number": number, "attempt": 0,
            "phase": "search", "state": "COMPLETE", "error": None,
            "param_pruner": pruner, "param_density": density, "param_model": "fc",
            "param_dataset": "digits", "param_iterations": 10 if pruner == "synflow" else 1,
            **stats.metrics(), "layer_density": json.dumps(stats.layer_density),
            **result.metrics(), "node_id": "local", "gpu_ids": "", "worker_pid": 1,
            "started_at": started, "finished_at": time.time(),
            "duration_s": time.time() - started, "seed": seed,
            "pathsweep_version": "0.1.0", "torch_version": torch.__version__,
        })
    return rows


@pytest.fixture(scope="module")
def real_study(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """8 configurations actually pruned and trained: 2 pruners x 2 densities x 2 seeds, fc on
    digits, 2 epochs each (about 2 s on one CPU thread)."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny nets: extra threads only contend on a shared 2-core box
    try:
        rows = _real_rows()
    finally:
        torch.set_num_threads(threads)
    for row in rows:  # timestamps as the orchestrator stores them: UTC microseconds
        for key in ("started_at", "finished_at"):
            row[key] = np.datetime64(int(row[key] * 1e6), "us")
    spec = {"study": "real", "objectives": [{"metric": "log_path_kernel_trace",
                                             "direction": "maximize"}]}
    return write_rows(tmp_path_factory.mktemp("real") / "real", rows, spec=spec)
