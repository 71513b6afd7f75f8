"""One Parquet row per trial attempt: the columns, their Arrow types, and how a row is built.

The columns, their types and meanings are owned by :mod:`analysis.schema`; this module writes
through it. Every row carries the core columns; params are
``param_<name>``; each statistic of ``pruners.path_kernel_stats`` (Gebhart, Saxena, Schrater
2021, "A Unified Paths Perspective for Pruning at Initialization") and each training metric sits
under its own name. Timestamps are kept as epoch seconds in memory and stored as UTC
timestamps.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import pyarrow as pa

from analysis import schema as S
from analysis.schema import (
    PHASE_RANDOM,
    PHASE_SEARCH,
    PHASE_TOP,
    PHASES,
    TIMESTAMP,
    TIMESTAMP_COLUMNS,
    param_column,
)
from orchestrator.spec import StudySpec

__all__ = [
    "CORE_COLUMNS",
    "LAYER_COLUMNS",
    "MASK_COLUMNS",
    "PHASES",
    "PHASE_RANDOM",
    "PHASE_SEARCH",
    "PHASE_TOP",
    "SPECTRUM_TYPES",
    "STAT_TYPES",
    "TIMESTAMP",
    "TIMESTAMP_COLUMNS",
    "TIMING_COLUMNS",
    "TRAIN_TYPES",
    "declared_schema",
    "param_column",
    "rows_to_table",
    "trial_id",
]

# Views of ``analysis.schema`` (the one owner of the columns) for the row-building code.
#: Core columns of every row, in order, with their Arrow types.
CORE_COLUMNS: dict[str, pa.DataType] = S.types(group="core")
#: Types of the statistic columns (integers where pruners returns counts).
STAT_TYPES: dict[str, pa.DataType] = S.types(group="stat")
#: Types of the Path Kernel spectrum columns (rows of studies that measure it).
SPECTRUM_TYPES: dict[str, pa.DataType] = S.types(group="spectrum")
#: Per-layer maps, stored as JSON text ({"layer.weight": value}).
LAYER_COLUMNS: dict[str, pa.DataType] = S.types(group="layer")
#: Training metrics and curves (trained rows only).
TRAIN_TYPES: dict[str, pa.DataType] = S.types(group="train") | S.types(group="curve")
#: Path of the trial's masks file, relative to the study directory (``save_masks: true``).
MASK_COLUMNS: dict[str, pa.DataType] = S.types(group="masks")
#: Where the time of one trial went (seconds), measured inside the worker.
TIMING_COLUMNS: tuple[str, ...] = S.names(group="timing")


def trial_id(number: int, attempt: int, phase: str = PHASE_SEARCH, seed: int | None = None) -> str:
    """Unique id of one attempt: ``"12-0"`` in the search, ``"validate-top-12-0"`` after it,
    ``"validate-top-12-s3-0"`` for the validation run with seed 3 (spec ``validate.seeds``)."""
    if seed is not None and phase == PHASE_SEARCH:
        raise ValueError(f"only validation runs name a seed in their id, but got {phase=}, {seed=}")
    prefix = "" if phase == PHASE_SEARCH else f"{phase}-"
    tag = "" if seed is None else f"s{seed}-"
    return f"{prefix}{number}-{tag}{attempt}"


def declared_schema(spec: StudySpec) -> pa.Schema:
    """The columns a study's rows may have, so every Parquet file shares one schema."""
    groups = ["core", "param", "stat", "layer", "timing"]
    if spec.spectrum is not None:
        groups.append("spectrum")
    if spec.train.epochs > 0 or spec.validate.top_k + spec.validate.random_k > 0:
        groups += ["train", "curve"]
    if spec.save_masks:
        groups.append("masks")
    return S.arrow_schema(groups)


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
