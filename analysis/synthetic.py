"""Synthetic trial rows in the Parquet schema, for benchmarks, tests and demos.

The numbers are made up, not measured: a log Path Kernel trace that grows with density and
depends on the pruner, a test accuracy that increases with it plus noise, layer collapse below
a pruner-specific density. Real rows come from ``pruners`` through the orchestrator.
"""

from __future__ import annotations

import itertools
import json
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import yaml

PRUNERS = ("synflow", "synflow-l2", "magnitude", "random")
DENSITIES = (0.5, 0.1, 0.02, 0.005, 0.001)
LAYERS = ("layers.0.weight", "layers.1.weight", "layers.2.weight", "layers.3.weight", "head.weight")
# Density below which each pruner tends to collapse a layer (SynFlow avoids collapse longest).
_COLLAPSE_AT = {"synflow": 0.0005, "synflow-l2": 0.001, "magnitude": 0.004, "random": 0.02}


def _layer_density(rng: np.random.Generator, density: float, collapsed: bool) -> str:
    spread = rng.lognormal(0.0, 0.5, size=len(LAYERS))
    values = np.clip(density * spread / spread.mean(), 0.0, 1.0)
    if collapsed:
        values[rng.integers(len(LAYERS))] = 0.0
    return json.dumps(dict(zip(LAYERS, values.round(6).tolist(), strict=True)))


def synthetic_rows(
    n: int,
    *,
    seed: int = 0,
    study: str = "synthetic",
    model: str = "fc",
    trained_fraction: float = 1.0,
    validate_k: int = 0,
    pruners: Sequence[str] = PRUNERS,
    densities: Sequence[float] = DENSITIES,
    start: int = 0,
) -> pa.Table:
    """``n`` synthetic trial rows of one study (plus ``2 * validate_k`` validation rows).

    Args:
        n: number of search rows.
        seed: seed of every random draw.
        study: value of the ``study`` column.
        model: value of ``param_model``.
        trained_fraction: fraction of search rows that carry trained metrics.
        validate_k: top-k and random-k validation rows (trained) appended to the search rows.
        pruners: values of ``param_pruner``.
        densities: values of ``param_density``.
        start: first ``optuna_number`` (to split one study over several files).
    """
    rng = np.random.default_rng(seed)
    pruner = rng.choice(list(pruners), size=n)
    density = rng.choice(np.asarray(densities, dtype=float), size=n)
    p_exp = rng.uniform(0.5, 3.0, size=n)
    effect = np.array([{"synflow": 1.0, "synflow-l2": 1.2, "magnitude": 0.4}.get(str(p), 0.0)
                       for p in pruner])
    log_trace = 20 * np.log(density) / 5 + 3 * effect - 0.3 * (p_exp - 1.5) ** 2 + rng.normal(0, 0.5, n)
    collapse = density < np.array([_COLLAPSE_AT.get(str(p), 0.01) for p in pruner]) * rng.uniform(0.5, 2, n)
    quality = 0.35 * log_trace / 4 - 2.0 * collapse + rng.normal(0, 0.4, n)
    accuracy = 1 / (1 + np.exp(-(quality + 2)))
    state = np.where(rng.random(n) < 0.02, "FAIL", "COMPLETE")
    number = np.arange(start, start + n)
    num_params = np.round(density * 93_322).astype(np.int64)
    trained = (rng.random(n) < trained_fraction) & (state == "COMPLETE")
    epochs = 3
    curve_loss = [list(np.linspace(2.3, 2.3 - 2 * a, epochs)) if t else None
                  for a, t in zip(accuracy, trained, strict=True)]
    cols: dict[str, object] = {
        "study": [study] * n,
        "trial_id": [f"{study}-{i:07d}-0" for i in number],
        "optuna_number": number,
        "attempt": np.zeros(n, dtype=np.int64),
        "state": state,
        "error": [None if s == "COMPLETE" else "RuntimeError: synthetic failure" for s in state],
        "phase": ["search"] * n,
        "param_pruner": pruner,
        "param_density": density,
        "param_path_exponent": p_exp,
        "param_score_exponent": rng.uniform(0.0, 3.0, size=n),
        "param_iterations": rng.integers(1, 201, size=n),
        "param_schedule": rng.choice(["exponential", "linear"], size=n),
        "param_input": rng.choice(["ones", "data-mean"], size=n),
        "param_model": [model] * n,
        "param_dataset": ["digits"] * n,
        "log_path_kernel_trace": log_trace,
        "log_path_l1": log_trace / 2 + rng.normal(0, 0.3, n),
        "log_path_l2_squared": log_trace - 1 + rng.normal(0, 0.3, n),
        "log_num_paths": 4 * np.log(density) + 30 + rng.normal(0, 0.2, n),
        "effective_params": np.round(num_params * rng.uniform(0.6, 1.0, n)).astype(np.int64),
        "num_params": num_params,
        "macs": num_params * 1,
        "density": density * rng.uniform(0.999, 1.001, n),
        "layer_collapse": collapse.astype(np.int64),
        "layer_density": [_layer_density(rng, d, c) for d, c in zip(density, collapse, strict=True)],
        "node_id": ["node-0"] * n,
        "gpu_ids": ["0"] * n,
        "worker_pid": rng.integers(1000, 2000, size=n),
        "duration_s": rng.uniform(0.5, 5.0, size=n),
        "seed": rng.integers(0, 5, size=n),
        "pathsweep_version": ["0.1.0"] * n,
        "torch_version": ["2.13.0"] * n,
        "test_accuracy": np.where(trained, accuracy, np.nan),
        # Each trained metric follows accuracy with its own noise, as real curves do.
        "best_test_accuracy": np.where(
            trained, np.minimum(1, accuracy + np.abs(rng.normal(0, 0.02, n))), np.nan),
        "train_loss_auc": np.where(
            trained, 2.3 * epochs * (1 - accuracy / 2) + rng.normal(0, 0.2, n), np.nan),
        "final_train_loss": np.where(trained, 2.3 - 2 * accuracy + rng.normal(0, 0.1, n), np.nan),
        "train_loss_curve": curve_loss,
    }
    cols["effective_fraction"] = np.asarray(cols["effective_params"]) / 93_322
    for name in ("test_accuracy", "best_test_accuracy", "train_loss_auc", "final_train_loss"):
        cols[name] = pa.array(cols[name], from_pandas=True)  # untrained: null, as the sink writes
    table = pa.table(cols)
    if validate_k:
        table = pa.concat_tables([table, _validation_rows(table, validate_k, rng)])
    return table


def _validation_rows(table: pa.Table, k: int, rng: np.random.Generator) -> pa.Table:
    """Top-k by log trace and random-k of the search rows, retrained (new trial ids)."""
    df = table.to_pandas()
    done = df[df["state"] == "COMPLETE"]
    top = done.nlargest(k, "log_path_kernel_trace")
    rand = done.sample(n=min(k, len(done)), random_state=int(rng.integers(1 << 31)))
    out = []
    for phase, rows in (("validate-top", top), ("validate-random", rand)):
        rows = rows.copy()
        quality = 0.35 * rows["log_path_kernel_trace"] / 4 - 2.0 * rows["layer_collapse"]
        acc = 1 / (1 + np.exp(-(quality + 2 + rng.normal(0, 0.4, len(rows)))))
        rows["phase"] = phase
        rows["trial_id"] = [f"{t}-{phase}" for t in rows["trial_id"]]
        rows["test_accuracy"] = acc
        rows["best_test_accuracy"] = np.minimum(1, acc + 0.01)
        rows["train_loss_auc"] = 2.3 * 3 * (1 - acc / 2)
        rows["final_train_loss"] = 2.3 - 2 * acc
        out.append(rows)
    return pa.Table.from_pandas(pd_concat(out), schema=table.schema, preserve_index=False)


def pd_concat(frames: list) -> object:  # small indirection keeps pandas out of the hot path
    import pandas as pd

    return pd.concat(frames, ignore_index=True)


def write_study(
    directory: str | Path,
    n: int,
    *,
    files: int = 1,
    seed: int = 0,
    objectives: Sequence[tuple[str, str]] = (("log_path_kernel_trace", "maximize"),),
    **kwargs: object,
) -> Path:
    """Write a synthetic study: ``DIR/trials/part-*.parquet`` (``files`` files) and spec.yaml.

    Keyword arguments go to ``synthetic_rows``. Returns ``directory``.
    """
    directory = Path(directory)
    (directory / "trials").mkdir(parents=True, exist_ok=True)
    study = str(kwargs.pop("study", directory.name))
    table = synthetic_rows(n, seed=seed, study=study, **kwargs)  # type: ignore[arg-type]
    bounds = np.linspace(0, table.num_rows, files + 1).astype(int)
    for i, (lo, hi) in enumerate(itertools.pairwise(bounds)):
        pq.write_table(table.slice(lo, hi - lo), directory / "trials" / f"part-{i:05d}.parquet")
    spec = {"study": study, "density": 0.01, "seed": seed,
            "objectives": [{"metric": m, "direction": d} for m, d in objectives],
            "search": {"path_exponent": {"low": 0.5, "high": 3.0},
                       "score_exponent": {"low": 0.0, "high": 3.0},
                       "iterations": {"low": 1, "high": 200, "log": True},
                       "schedule": ["exponential", "linear"], "input": ["ones", "data-mean"]}}
    (directory / "spec.yaml").write_text(yaml.safe_dump(spec, sort_keys=False))
    return directory
