"""Method tables: a metric against density per pruner, mean ± std over seeds.

The layout of SynFlow's accuracy-vs-compression tables (Tanaka et al. 2020) and of the
comparisons in Gebhart, Saxena & Schrater (2021): one row per pruner, one column per density
(compression = 1/density), each cell the mean ± standard deviation over seeds.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from analysis import columns as C

SUMMARY_COLUMNS = ("pruner", "density", "compression", "n", "mean", "std")
NO_PRUNER = "(unnamed)"


def method_summary(df: pd.DataFrame, metric: str = "test_accuracy") -> pd.DataFrame:
    """Mean, standard deviation (ddof=1, NaN for one seed) and count of ``metric``.

    Rows are finished trials with a finite ``metric``, grouped by model and dataset (when those
    columns are present), pruner (``param_pruner``) and density (``param_density``, else the
    achieved ``density``).

    Args:
        df: trial rows (``analysis.load``).
        metric: a trained metric or any numeric column.

    Returns:
        Long table: model/dataset columns present, then ``SUMMARY_COLUMNS``; empty when the
        metric or the density is missing.
    """
    groups = C.present(df, C.GROUP_CANDIDATES)
    if metric not in df.columns or C.density_column(df) is None:
        return pd.DataFrame(columns=[*groups, *SUMMARY_COLUMNS])
    rows = C.complete(df)
    value = pd.to_numeric(rows[metric], errors="coerce").astype(float)
    pruner = (C.hashable(rows[C.PRUNER]).fillna(NO_PRUNER) if C.PRUNER in rows.columns
              else pd.Series(NO_PRUNER, index=rows.index))
    frame = pd.DataFrame({**{g: C.hashable(rows[g]) for g in groups}, "pruner": pruner,
                          "density": C.density_values(rows), "value": value})
    frame = frame[np.isfinite(frame["value"]) & frame["density"].notna()]
    stats = frame.groupby([*groups, "pruner", "density"], dropna=False, sort=True)["value"]
    out = stats.agg(n="count", mean="mean", std="std").reset_index()
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
    cells = summary.assign(
        cell=[_cell(m, s, n, precision) for m, s, n in
              zip(summary["mean"], summary["std"], summary["n"], strict=True)])
    table = cells.pivot_table(index=index, columns="density", values="cell", aggfunc="first")
    ordered = sorted(table.columns, reverse=True)
    table = table[ordered].fillna("")
    table.columns = [format_compression(float(d)) for d in ordered]
    return table


def _cell(mean: float, std: float, n: int, precision: int) -> str:
    spread = "" if np.isnan(std) else f" ± {std:.{precision}g}"
    return f"{mean:.{precision}g}{spread} (n={n})"
