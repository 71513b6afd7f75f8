"""One Parquet row per trial attempt: the columns, their Arrow types, and how a row is built.

The columns follow DESIGN.md §Parquet results. Every row carries the core columns; params are
``param_<name>``; each statistic of ``pruners.path_kernel_stats`` (Gebhart, Saxena, Schrater
2021, "A Unified Paths Perspective for Pruning at Initialization") and each training metric sits
under its own name. Timestamps are kept as epoch seconds in memory and stored as UTC
timestamps.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import pyarrow as pa

from orchestrator.spec import SPECTRUM_METRICS, STAT_METRICS, StudySpec

TIMESTAMP = pa.timestamp("us", tz="UTC")

#: Core columns of every row, in order, with their Arrow types.
CORE_COLUMNS: dict[str, pa.DataType] = {
    "study": pa.string(),
    "trial_id": pa.string(),
    "optuna_number": pa.int64(),
    "attempt": pa.int64(),
    "phase": pa.string(),
    "state": pa.string(),
    "error": pa.string(),
    "retry": pa.bool_(),
    "node_id": pa.string(),
    "gpu_ids": pa.string(),
    "worker_pid": pa.int64(),
    "device": pa.string(),
    "started_at": TIMESTAMP,
    "finished_at": TIMESTAMP,
    "duration_s": pa.float64(),
    "seed": pa.int64(),
    "pathsweep_version": pa.string(),
    "torch_version": pa.string(),
}
TIMESTAMP_COLUMNS = ("started_at", "finished_at")

#: Types of the statistic columns (integers where pruners returns counts).
STAT_TYPES: dict[str, pa.DataType] = {
    name: pa.int64()
    if name in ("effective_params", "num_params", "macs", "layer_collapse")
    else pa.float64()
    for name in STAT_METRICS
}
#: Types of the Path Kernel spectrum columns (rows of studies that measure it).
SPECTRUM_TYPES: dict[str, pa.DataType] = {
    name: pa.int64()
    if name in ("spectrum_k", "spectrum_converged", "spectrum_products")
    else pa.float64()
    for name in SPECTRUM_METRICS
}
#: Per-layer maps, stored as JSON text ({"layer.weight": value}).
LAYER_COLUMNS: dict[str, pa.DataType] = {
    "layer_density": pa.string(),
    "layer_trace_share": pa.string(),
}
#: Training metrics and curves (trained rows only).
TRAIN_TYPES: dict[str, pa.DataType] = {
    "test_accuracy": pa.float64(),
    "test_loss": pa.float64(),
    "best_test_accuracy": pa.float64(),
    "train_loss_auc": pa.float64(),
    "epochs_to_threshold": pa.int64(),
    "final_train_loss": pa.float64(),
    "train_duration_s": pa.float64(),
    "train_epochs": pa.int64(),
    "train_loss_curve": pa.list_(pa.float64()),
    "test_loss_curve": pa.list_(pa.float64()),
    "test_accuracy_curve": pa.list_(pa.float64()),
}
#: Path of the trial's masks file, relative to the study directory (``save_masks: true``).
MASK_COLUMNS: dict[str, pa.DataType] = {"masks_path": pa.string()}
#: Where the time of one trial went (seconds), measured inside the worker.
TIMING_COLUMNS = ("time_data_s", "time_model_s", "time_prune_s", "time_stats_s", "time_train_s")

PHASE_SEARCH = "search"
PHASE_TOP = "validate-top"
PHASE_RANDOM = "validate-random"
PHASES = (PHASE_SEARCH, PHASE_TOP, PHASE_RANDOM)

_PARAM_TYPES: dict[str, pa.DataType] = {
    "pruner": pa.string(),
    "path_exponent": pa.float64(),
    "score_exponent": pa.float64(),
    "iterations": pa.int64(),
    "schedule": pa.string(),
    "scope": pa.string(),
    "input": pa.string(),
    "density": pa.float64(),
    "model": pa.string(),
    "dataset": pa.string(),
}


def param_column(name: str) -> str:
    """Column name of a parameter."""
    return f"param_{name}"


def trial_id(number: int, attempt: int, phase: str = PHASE_SEARCH) -> str:
    """Unique id of one attempt: ``"12-0"`` in the search, ``"validate-top-12-0"`` after it."""
    prefix = "" if phase == PHASE_SEARCH else f"{phase}-"
    return f"{prefix}{number}-{attempt}"


def declared_schema(spec: StudySpec) -> pa.Schema:
    """The columns a study's rows may have, so every Parquet file shares one schema."""
    columns = dict(CORE_COLUMNS)
    columns.update({param_column(n): t for n, t in _PARAM_TYPES.items()})
    columns.update(STAT_TYPES)
    if spec.spectrum is not None:
        columns.update(SPECTRUM_TYPES)
    columns.update(LAYER_COLUMNS)
    columns.update({name: pa.float64() for name in TIMING_COLUMNS})
    if spec.train.epochs > 0 or spec.validate.top_k + spec.validate.random_k > 0:
        columns.update(TRAIN_TYPES)
    if spec.save_masks:
        columns.update(MASK_COLUMNS)
    return pa.schema(list(columns.items()))


def rows_to_table(
    rows: Sequence[Mapping[str, Any]], schema: pa.Schema
) -> tuple[pa.Table, pa.Schema]:
    """Build an Arrow table with every column of ``schema`` plus any new ones the rows bring.

    A value that does not fit its declared type (an int column receiving floats, say) promotes
    the column (to float64, else to text) instead of failing.

    Returns:
        The table and the schema it was written with (``schema`` grown or promoted).
    """
    names = list(schema.names) + _new_names(rows, schema)
    fields, arrays = [], []
    for name in names:
        values = [row.get(name) for row in rows]
        declared = schema.field(name).type if name in schema.names else None
        array = _array(name, values, declared)
        fields.append(pa.field(name, array.type))
        arrays.append(array)
    out_schema = pa.schema(fields)
    return pa.Table.from_arrays(arrays, schema=out_schema), out_schema


def _new_names(rows: Iterable[Mapping[str, Any]], schema: pa.Schema) -> list[str]:
    known = set(schema.names)
    new: list[str] = []
    for row in rows:
        for key in row:
            if key not in known:
                known.add(key)
                new.append(key)
    return new


def _fits(values: list[Any], declared: pa.DataType) -> bool:
    """Whether every value has the declared type's Python kind (pyarrow truncates 2.5 to 2)."""
    present = [v for v in values if v is not None]
    if pa.types.is_integer(declared):
        return all(isinstance(v, int) and not isinstance(v, bool) for v in present)
    if pa.types.is_floating(declared):
        return all(isinstance(v, int | float) and not isinstance(v, bool) for v in present)
    if pa.types.is_string(declared):
        return all(isinstance(v, str) for v in present)
    if pa.types.is_boolean(declared):
        return all(isinstance(v, bool) for v in present)
    return True


def _array(name: str, values: list[Any], declared: pa.DataType | None) -> pa.Array:
    if name in TIMESTAMP_COLUMNS:
        micros = [None if v is None else round(float(v) * 1e6) for v in values]
        return pa.array(micros, pa.int64()).cast(TIMESTAMP)
    if declared is not None and _fits(values, declared):
        try:
            return pa.array(values, type=declared)
        except (pa.ArrowInvalid, pa.ArrowTypeError, TypeError, OverflowError):
            pass
    try:
        return pa.array(values)  # ints mixed with floats become float64
    except (pa.ArrowInvalid, pa.ArrowTypeError, TypeError, OverflowError):
        return pa.array([None if v is None else str(v) for v in values], pa.string())
