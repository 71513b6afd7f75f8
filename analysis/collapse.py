"""Layer collapse: per-layer density and the critical compression of each pruner.

Layer collapse — a layer pruned away entirely, which disconnects every input-output path —
is the failure SynFlow (Tanaka et al. 2020) was built to avoid; in the paths picture of
Gebhart, Saxena & Schrater (2021) it sets the Path Kernel to zero. The critical compression of
a pruner is where collapse begins; from the tested densities it is bracketed by the largest
compression below every observed collapse (``critical_compression``) and the smallest one with a
collapse (``first_collapse_compression``).
"""

from __future__ import annotations

import io
import json
from collections.abc import Mapping
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.json as pa_json

from analysis import columns as C

CRITICAL_COLUMNS = (
    "pruner", "critical_compression", "critical_density", "first_collapse_compression",
    "max_tested_compression", "censored", "n", "collapsed_rows", "over", "note",
)


def parse_layer_density(value: Any) -> dict[str, float]:
    """Per-layer density from a Parquet cell: a JSON string, a map (list of pairs) or a dict.

    Unreadable or missing cells give ``{}``.
    """
    if isinstance(value, str):
        try:
            value = json.loads(value)
        except json.JSONDecodeError:
            return {}
    if isinstance(value, Mapping):
        items = list(value.items())
    elif isinstance(value, (list, tuple, np.ndarray)):
        items = [tuple(pair) for pair in value if len(pair) == 2]
    else:
        return {}
    out = {}
    for name, fraction in items:
        try:
            out[str(name)] = float(fraction)
        except (TypeError, ValueError):
            continue
    return out


def layer_densities(cells: pd.Series) -> pd.DataFrame:
    """Parse a ``layer_density`` column into rows × layers (NaN where a row lacks a layer).

    JSON text (what the orchestrator writes) goes through ``pyarrow.json`` in one pass;
    anything else, or text pyarrow rejects, cell by cell with ``parse_layer_density``.
    """
    if len(cells) and all(isinstance(c, str) for c in cells):
        try:
            buffer = io.BytesIO("\n".join(c if c.strip() else "{}" for c in cells).encode())
            table = pa_json.read_json(buffer).to_pandas()
            return table.apply(pd.to_numeric, errors="coerce").set_axis(cells.index)
        except (pa.ArrowException, ValueError, TypeError):
            pass
    parsed = [parse_layer_density(c) for c in cells]
    columns = list(dict.fromkeys(name for d in parsed for name in d))
    return pd.DataFrame(parsed, index=cells.index, columns=columns, dtype=float)


def collapsed(df: pd.DataFrame) -> pd.Series:
    """Whether each row's pruned network collapsed (NaN where unknown).

    ``layer_collapse`` is used where present (``pruners``: a layer without any weight left, or
    no input-output path left); otherwise a layer density of exactly 0 in ``layer_density``.
    """
    flags = pd.Series(np.nan, index=df.index, dtype=float)
    if "layer_collapse" in df.columns:
        flags = pd.to_numeric(df["layer_collapse"], errors="coerce").astype(float)
    unknown = flags.isna()
    if "layer_density" in df.columns and unknown.any():
        layers = layer_densities(df.loc[unknown, "layer_density"])
        known = layers.notna().any(axis=1)
        derived = (layers.min(axis=1) == 0.0).astype(float).where(known)
        flags = flags.where(~unknown, derived.reindex(flags.index))
    return flags


def _pruners(df: pd.DataFrame) -> pd.Series:
    if C.PRUNER in df.columns:
        return C.hashable(df[C.PRUNER]).fillna("(unnamed)")
    return pd.Series("(unnamed)", index=df.index)


def layer_density_table(df: pd.DataFrame, agg: str = "mean") -> pd.DataFrame:
    """Per-layer density per (pruner, density) over its rows: rows × layers, in network order.

    A (pruner, density) cell combines every row there — seeds of one configuration, or
    different configurations in a search. Search rows only where there is a validation pass.

    Args:
        df: trial rows with a ``layer_density`` column.
        agg: how the rows are combined: ``"mean"``, ``"min"`` (0 where any row lost the
            layer) or ``"max"``.

    Returns:
        Layers are ordered as the first row lists them (the model's parameter order). Empty
        when no row has a per-layer density.
    """
    if agg not in ("mean", "min", "max"):
        raise ValueError(f"agg must be one of ('mean', 'min', 'max'), but got {agg=}")
    if "layer_density" not in df.columns:
        return pd.DataFrame()
    rows = C.with_experiment(C.complete(df))
    if C.EXPERIMENT in rows.columns and (rows[C.EXPERIMENT] == C.PHASE_SEARCH).any():
        rows = rows[rows[C.EXPERIMENT] == C.PHASE_SEARCH]
    rows = rows[rows["layer_density"].notna()]
    wide = layer_densities(rows["layer_density"]) if len(rows) else pd.DataFrame()
    wide = wide.dropna(how="all")
    if wide.empty or wide.shape[1] == 0:
        return pd.DataFrame()
    rows = rows.loc[wide.index]
    # Models or datasets that differ between rows stay apart (their layers differ).
    keys = [c for c in C.present(rows, C.GROUP_CANDIDATES) if C.hashable(rows[c]).nunique() > 1]
    index = {c: C.hashable(rows[c]) for c in keys} | {"pruner": _pruners(rows),
                                                     "density": C.density_values(rows)}
    table = wide.assign(**index).groupby(list(index), sort=True).agg(agg)
    return table.sort_index(ascending=[True] * (len(index) - 1) + [False])


def _fmt_density(d: float) -> str:
    return f"{d:.4g} ({1 / d:.4g}×)"


def _critical(group: pd.DataFrame, over: str) -> dict[str, object]:
    by_density = group.groupby("density")["collapsed"].agg(["sum", "count"])
    hit = by_density[by_density["sum"] > 0].index
    tested = by_density.index
    row: dict[str, object] = {"n": int(by_density["count"].sum()),
                              "collapsed_rows": int(by_density["sum"].sum()), "over": over,
                              "max_tested_compression": 1 / tested.min(),
                              "first_collapse_compression": 1 / hit.max() if len(hit) else np.nan,
                              "censored": len(hit) == 0, "note": ""}
    if len(hit) == 0:
        critical = tested.min()
        return row | {"critical_compression": 1 / critical, "critical_density": critical,
                      "note": "no collapse observed: the critical compression is at least this"}
    first = hit.max()  # densest (least compressed) density with a collapsed row
    safe = tested[tested > first]
    counts = ", ".join(f"{int(by_density.loc[d, 'sum'])} of {int(by_density.loc[d, 'count'])} "
                       f"rows at density {_fmt_density(d)}" for d in sorted(hit, reverse=True))
    note = f"collapsed: {counts}"
    if (by_density.loc[tested < first, "sum"] == 0).any():
        note += "; a more compressed density had no collapse (not monotone)"
    if "configurations" in over:  # a searched configuration's collapse is not the pruner's
        return row | {"critical_compression": np.nan, "critical_density": np.nan,
                      "note": f"rows are different configurations, not seeds of one pruner, so "
                              f"there is no single critical compression; {note}"}
    if len(safe) == 0:
        return row | {"critical_compression": np.nan, "critical_density": np.nan,
                      "note": f"collapse already at the least compressed tested density, so "
                              f"the critical compression lies below the tested range; {note}"}
    critical = safe.min()
    return row | {"critical_compression": 1 / critical, "critical_density": critical,
                  "note": note}


def critical_compression(df: pd.DataFrame) -> pd.DataFrame:
    """Where layer collapse begins, per pruner, from the tested densities.

    ``first_collapse_compression`` is the smallest tested compression (1/density) at which some
    row had a fully pruned layer; ``critical_compression`` the largest tested compression below
    it (no row collapsed there), so the true critical compression lies between the two.
    ``censored``: no tested density collapsed, so it lies above the tested range. The note
    counts the collapsed rows per density; ``over`` says whether a pruner's rows are seeds of
    one configuration or different configurations (``columns.aggregate_kind``). Search and
    validation rows are kept apart (``experiment``).

    Args:
        df: trial rows with a density and ``layer_collapse`` (or ``layer_density``).

    Returns:
        One row per model/dataset/experiment (when present) and pruner: ``CRITICAL_COLUMNS``.
    """
    rows = C.with_experiment(C.complete(df))
    groups = C.present(rows, C.GROUP_CANDIDATES) + C.present(rows, (C.EXPERIMENT,))
    if C.density_column(rows) is None or rows.empty:
        return pd.DataFrame(columns=[*groups, *CRITICAL_COLUMNS])
    frame = pd.DataFrame({**{g: C.hashable(rows[g]) for g in groups}, "pruner": _pruners(rows),
                          "density": C.density_values(rows), "collapsed": collapsed(rows)})
    frame = frame.dropna(subset=["density", "collapsed"])
    frame = frame[frame["density"] > 0]
    out = []
    for key, g in frame.groupby([*groups, "pruner"], sort=True):
        over = _over(rows.loc[g.index])
        out.append(dict(zip([*groups, "pruner"], key, strict=True)) | _critical(g, over))
    return pd.DataFrame(out, columns=[*groups, *CRITICAL_COLUMNS])


def _over(rows: pd.DataFrame) -> str:
    """What the rows at one density are: seeds, configurations, or both."""
    density = C.density_values(rows)
    kinds = {C.aggregate_kind(g)[2] for _, g in rows.groupby(density, sort=True)}
    kinds.discard("one row")
    return " / ".join(sorted(kinds)) or "one row per density"


def collapse_rate(df: pd.DataFrame) -> pd.DataFrame:
    """Fraction of rows with a collapsed layer per pruner and density (for plots).

    Search rows only where there is a validation pass (validation rows re-run searched
    configurations and would count them twice). ``over`` says what the rows are.
    """
    columns = ["pruner", "density", "compression", "rate", "n", "over"]
    rows = C.with_experiment(C.complete(df))
    if C.EXPERIMENT in rows.columns and (rows[C.EXPERIMENT] == C.PHASE_SEARCH).any():
        rows = rows[rows[C.EXPERIMENT] == C.PHASE_SEARCH]
    if C.density_column(rows) is None or rows.empty:
        return pd.DataFrame(columns=columns)
    frame = pd.DataFrame({"pruner": _pruners(rows), "density": C.density_values(rows),
                          "collapsed": collapsed(rows)}).dropna()
    frame = frame[frame["density"] > 0]
    grouped = frame.groupby(["pruner", "density"], sort=True)
    out = grouped["collapsed"].agg(rate="mean", n="count").reset_index()
    out["over"] = [C.aggregate_kind(rows.loc[g.index])[2] for _, g in grouped]
    out["compression"] = 1 / out["density"]
    return out[columns]

