"""Method tables: a metric against density per pruner, mean ± std over the group's rows.

The layout of SynFlow's accuracy-vs-compression tables (Tanaka et al. 2020) and of the
comparisons in Gebhart, Saxena & Schrater (2021): one row per pruner, one column per density
(compression = 1/density), each cell the mean ± standard deviation over the rows of that
pruner and density. Every cell says what those rows are: seeds of one configuration, or
different configurations (a search varies more than the pruner and density) — configurations
are never called seeds.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from analysis import columns as C

SUMMARY_COLUMNS = (
    "pruner", "density", "compression", "n", "mean", "std", "configs", "seeds", "over",
)
NO_PRUNER = "(unnamed)"


def method_summary(df: pd.DataFrame, metric: str = "test_accuracy") -> pd.DataFrame:
    """Mean, standard deviation (ddof=1, NaN for one row) and count of ``metric``.

    Rows are finished trials with a finite ``metric``, grouped by model and dataset (when those
    columns are present), experiment (search or validation) and training length, pruner
    (``param_pruner``) and density (``param_density``, else the achieved ``density``).
    ``configs``, ``seeds`` and ``over`` say what a group's rows are (``columns.aggregate_kind``):
    ``"seeds"`` only when they share every ``param_*`` value and differ in seed.

    Args:
        df: trial rows (``analysis.load``).
        metric: a trained metric or any numeric column.

    Returns:
        Long table: model/dataset columns present, then ``SUMMARY_COLUMNS``; empty when the
        metric or the density is missing.
    """
    rows = C.with_experiment(C.complete(df))
    groups = C.present(rows, C.GROUP_CANDIDATES) + C.experiment_columns(rows)
    if metric not in df.columns or C.density_column(df) is None:
        return pd.DataFrame(columns=[*groups, *SUMMARY_COLUMNS])
    value = pd.to_numeric(rows[metric], errors="coerce").astype(float)
    pruner = (C.hashable(rows[C.PRUNER]).fillna(NO_PRUNER) if C.PRUNER in rows.columns
              else pd.Series(NO_PRUNER, index=rows.index))
    keyed = {g: C.hashable(rows[g]) for g in groups}
    if C.TRAIN_LENGTH in keyed:  # untrained rows: 0 epochs (a NaN key would drop them)
        keyed[C.TRAIN_LENGTH] = pd.to_numeric(keyed[C.TRAIN_LENGTH], errors="coerce").fillna(0)
    frame = pd.DataFrame({**keyed, "pruner": pruner,
                          "density": C.density_values(rows), "value": value})
    frame = frame[np.isfinite(frame["value"]) & frame["density"].notna()]
    keys = [*groups, "pruner", "density"]
    out = frame.groupby(keys, dropna=False, sort=True)["value"].agg(
        n="count", mean="mean", std="std").reset_index()
    kinds = [C.aggregate_kind(rows.loc[g.index]) for _, g in
             frame.groupby(keys, dropna=False, sort=True)]
    out["configs"] = [k[0] for k in kinds]
    out["seeds"] = [k[1] for k in kinds]
    out["over"] = [k[2] for k in kinds]
    out["compression"] = 1.0 / out["density"]
    return out[[*groups, *SUMMARY_COLUMNS]].sort_values(
        [*groups, "pruner", "density"], ascending=[True] * (len(groups) + 1) + [False],
        ignore_index=True)


def format_compression(density: float) -> str:
    """Column label with density and compression: ``0.01`` → ``"0.01 (100×)"``."""
    return f"{density:.4g} ({1 / density:.4g}×)"


def method_table(summary: pd.DataFrame, precision: int = 3) -> pd.DataFrame:
    """Pivot a ``method_summary`` into pruner rows × density columns of ``mean ± std (n)``.

    Columns run from dense to sparse (increasing compression).
    """
    if summary.empty:
        return pd.DataFrame()
    index = [c for c in summary.columns if c not in SUMMARY_COLUMNS] + ["pruner"]
    over = summary["over"] if "over" in summary.columns else pd.Series("rows", index=summary.index)
    cells = summary.assign(
        cell=[_cell(m, s, n, o, precision) for m, s, n, o in
              zip(summary["mean"], summary["std"], summary["n"], over, strict=True)])
    table = cells.pivot_table(index=index, columns="density", values="cell", aggfunc="first")
    ordered = sorted(table.columns, reverse=True)
    table = table[ordered].fillna("")
    table.columns = [format_compression(float(d)) for d in ordered]
    return table


def _cell(mean: float, std: float, n: int, over: str, precision: int) -> str:
    spread = "" if np.isnan(std) else f" ± {std:.{precision}g}"
    what = "" if over in ("one row", "repeats") else f" {over}"
    return f"{mean:.{precision}g}{spread} (n={n}{what})"


def aggregation_label(summary: pd.DataFrame) -> str:
    """What the rows behind a summary are, for a plot or table label ("seeds", ...)."""
    kinds = sorted(set(summary["over"])) if "over" in summary.columns and len(summary) else []
    kinds = [k for k in kinds if k != "one row"]
    if not kinds:
        return "rows"
    return kinds[0] if len(kinds) == 1 else "rows (seeds or configurations; see table)"
