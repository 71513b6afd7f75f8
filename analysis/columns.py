"""Column vocabulary of the Parquet results, as analysis uses it.

One place names the data-free statistics, the baselines, the trained metrics and the columns
that define a comparable group, so every analysis agrees on them; the names come from
:mod:`analysis.schema`, which owns every Parquet column. The data-free statistics are
the Path Kernel quantities of Gebhart, Saxena & Schrater (2021), "A Unified Paths Perspective
for Pruning at Initialization", measured on the pruned network at initialization.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import numpy as np
import pandas as pd

from analysis import schema

#: Data-free statistics measured on the pruned network at initialization (schema role
#: ``predictor``; the spectrum's only in studies that measure it).
DATA_FREE: tuple[str, ...] = schema.names(role="predictor")

#: Baselines a data-free predictor has to beat (the zero-cost-proxy literature's controls).
BASELINES: tuple[str, ...] = schema.names(role="baseline")

#: Name of the seeded random score added as a third baseline (derived, not a Parquet column).
RANDOM_SCORE = "random_score"

#: Trained metrics and whether a larger value is better (schema role ``outcome``).
TRAINED: dict[str, bool] = {c.name: c.higher_is_better for c in schema.columns(role="outcome")}

#: Columns that make rows comparable, in the order groups are reported.
GROUP_CANDIDATES: tuple[str, ...] = (schema.param_column("model"), schema.param_column("dataset"))

PRUNER = schema.param_column("pruner")
STATE_COMPLETE = schema.STATE_COMPLETE
PHASE_SEARCH = schema.PHASE_SEARCH
VALIDATE_TOP = schema.PHASE_TOP
VALIDATE_RANDOM = schema.PHASE_RANDOM

#: Derived column naming the experiment a row belongs to: the search, or the validation pass
#: (top-k and random-k re-run searched configurations, so they never pool with the search).
EXPERIMENT = "experiment"
EXPERIMENT_VALIDATION = "validation"
#: Training length; rows trained for different lengths are different experiments.
TRAIN_LENGTH = "train_epochs"
SEED = "seed"


def present(df: pd.DataFrame, names: Iterable[str]) -> list[str]:
    """The names in ``names`` that are columns of ``df`` with at least one value, in order."""
    return [n for n in names if n in df.columns and df[n].notna().any()]


def trained_metrics(df: pd.DataFrame) -> list[str]:
    """Trained metrics that have at least one value in ``df``."""
    return present(df, TRAINED)


def higher_is_better(metric: str) -> bool:
    """Whether a larger ``metric`` is better (data-free statistics and unknowns: larger)."""
    return TRAINED.get(metric, True)


def density_column(df: pd.DataFrame) -> str | None:
    """The column holding each row's target density.

    ``param_density`` (the requested density) is preferred: the achieved ``density`` differs
    from it by rounding and would split seeds of one configuration into separate groups.
    """
    for name in (schema.param_column("density"), "density"):
        if name in df.columns and df[name].notna().any():
            return name
    return None


def density_values(df: pd.DataFrame) -> pd.Series:
    """Each row's density, rounded to 6 significant digits so equal requests compare equal."""
    col = density_column(df)
    if col is None:
        return pd.Series(np.nan, index=df.index, dtype=float)
    values = pd.to_numeric(df[col], errors="coerce").astype(float)
    rounded = {v: float(f"{v:.6g}") for v in values.dropna().unique()}
    return values.map(rounded).astype(float)


def with_experiment(df: pd.DataFrame) -> pd.DataFrame:
    """``df`` plus :data:`EXPERIMENT`: ``"search"`` or ``"validation"`` (from ``phase``).

    Without a ``phase`` column every row is one experiment. Rows lacking ``train_epochs`` get
    it from the length of ``train_loss_curve`` where there is one.
    """
    if TRAIN_LENGTH not in df.columns and "train_loss_curve" in df.columns:
        # Rows written without ``train_epochs``: the training length is the curve's length.
        length = df["train_loss_curve"].map(
            lambda c: len(c) if isinstance(c, (list, tuple, np.ndarray)) and len(c) else np.nan)
        df = df.assign(**{TRAIN_LENGTH: length.astype(float)})
    if "phase" not in df.columns or EXPERIMENT in df.columns:
        return df
    phase = df["phase"].astype(object)
    validation = phase.isin([VALIDATE_TOP, VALIDATE_RANDOM])
    experiment = phase.where(~validation, EXPERIMENT_VALIDATION).fillna(PHASE_SEARCH)
    return df.assign(**{EXPERIMENT: experiment.astype(str)})


def experiment_columns(df: pd.DataFrame) -> list[str]:
    """The experiment (search/validation) and training-length columns present in ``df``."""
    return present(df, (EXPERIMENT, TRAIN_LENGTH))


def group_columns(df: pd.DataFrame, with_density: bool = True) -> list[str]:
    """Columns defining comparable groups.

    Model, dataset, the experiment (search or validation, see :func:`with_experiment`), the
    training length and (optionally) the density: rows differing in any of them answer
    different questions and are never pooled.
    """
    cols = present(df, GROUP_CANDIDATES) + experiment_columns(df)
    density = density_column(df)
    if with_density and density is not None:
        cols.append(density)
    return cols


def complete(df: pd.DataFrame) -> pd.DataFrame:
    """Rows of finished trials (``state == COMPLETE``; all rows when there is no state)."""
    if "state" not in df.columns:
        return df
    return df[df["state"].astype(str) == STATE_COMPLETE]


def hashable(series: pd.Series) -> pd.Series:
    """``series`` with unhashable cells (lists, dicts, arrays) replaced by their ``str``."""
    if series.dtype != object:
        return series
    return series.map(lambda v: v if v is None or isinstance(v, (str, int, float, bool)) else str(v))


def numeric(df: pd.DataFrame, names: Sequence[str]) -> pd.DataFrame:
    """``df[names]`` as float64, non-numbers turned into NaN."""
    return df[list(names)].apply(pd.to_numeric, errors="coerce").astype(float)


def config_columns(df: pd.DataFrame) -> list[str]:
    """Columns that identify a configuration: every ``param_*`` column with a value."""
    return [c for c in df.columns if str(c).startswith("param_") and df[c].notna().any()]


def aggregate_kind(rows: pd.DataFrame) -> tuple[int, int, str]:
    """What a group of rows is: (configurations, seeds, a label for "mean over ...").

    Rows are *seeds* only when they share one configuration (all ``param_*`` values) and differ
    in ``seed``; rows of different configurations are *configurations*, never seeds.

    Returns:
        ``(n_configs, n_seeds, label)``; label is ``"seeds"``, ``"configurations"``,
        ``"configurations × seeds"`` or ``"repeats"`` (one configuration and seed, re-run).
    """
    cols = config_columns(rows)
    n_configs = int(rows[cols].apply(hashable).drop_duplicates().shape[0]) if cols else 1
    n_configs = max(n_configs, 1) if len(rows) else 0
    n_seeds = int(hashable(rows[SEED]).nunique(dropna=False)) if SEED in rows.columns else 1
    if n_configs <= 1:
        label = "seeds" if n_seeds == len(rows) and n_seeds > 1 else (
            "repeats" if len(rows) > 1 else "one row")
    elif n_seeds <= 1:
        label = "configurations"
    else:
        label = "configurations × seeds"
    return n_configs, n_seeds, label
