"""Layer collapse: per-layer density and the critical compression of each pruner.

Layer collapse — a layer pruned away entirely, which disconnects every input-output path —
is the failure SynFlow (Tanaka et al. 2020) was built to avoid; in the paths picture of
Gebhart, Saxena & Schrater (2021) it sets the Path Kernel to zero. The critical compression of
a pruner is the largest compression (1/density) at which no layer was fully pruned.
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
    "max_tested_compression", "censored", "n", "note",
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
    """Per-layer density per (pruner, density) over seeds: rows × layers, in network order.

    Args:
        df: trial rows with a ``layer_density`` column.
        agg: how seeds are combined: ``"mean"``, ``"min"`` (0 where any seed lost the layer)
            or ``"max"``.

    Returns:
        Layers are ordered as the first row lists them (the model's parameter order). Empty
        when no row has a per-layer density.
    """
    if agg not in ("mean", "min", "max"):
        raise ValueError(f"agg must be one of ('mean', 'min', 'max'), but got {agg=}")
    if "layer_density" not in df.columns:
        return pd.DataFrame()
    rows = C.complete(df)
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


def _critical(group: pd.DataFrame) -> dict[str, object]:
    by_density = group.groupby("density")["collapsed"].agg(["max", "count"])
    safe = by_density[by_density["max"] == 0].index
    hit = by_density[by_density["max"] > 0].index
    tested = by_density.index
    row: dict[str, object] = {"n": int(by_density["count"].sum()),
                              "max_tested_compression": 1 / tested.min(),
                              "first_collapse_compression": 1 / hit.max() if len(hit) else np.nan,
                              "censored": len(hit) == 0, "note": ""}
    if len(safe) == 0:
        return row | {"critical_compression": np.nan, "critical_density": np.nan,
                      "note": "a layer collapsed at every tested density"}
    critical = safe.min()
    if len(hit) and hit.max() > critical:
        row["note"] = "collapse at a lower compression than the critical one (not monotone)"
    elif len(hit) == 0:
        row["note"] = "no collapse observed: critical compression is at least this"
    return row | {"critical_compression": 1 / critical, "critical_density": critical}


def critical_compression(df: pd.DataFrame) -> pd.DataFrame:
    """The largest compression (1/density) at which no layer was fully pruned, per pruner.

    A density counts as safe when every finished row there (every seed) has
    ``layer_collapse == 0``. ``first_collapse_compression`` is the smallest compression at
    which some seed collapsed; ``censored`` is True when no tested density collapsed, so the
    true critical compression lies above the tested range.

    Args:
        df: trial rows with a density and ``layer_collapse`` (or ``layer_density``).

    Returns:
        One row per model/dataset (when present) and pruner: ``CRITICAL_COLUMNS``.
    """
    groups = C.present(df, C.GROUP_CANDIDATES)
    rows = C.complete(df)
    if C.density_column(rows) is None or rows.empty:
        return pd.DataFrame(columns=[*groups, *CRITICAL_COLUMNS])
    frame = pd.DataFrame({**{g: C.hashable(rows[g]) for g in groups}, "pruner": _pruners(rows),
                          "density": C.density_values(rows), "collapsed": collapsed(rows)})
    frame = frame.dropna(subset=["density", "collapsed"])
    frame = frame[frame["density"] > 0]
    out = [dict(zip([*groups, "pruner"], key, strict=True)) | _critical(g)
           for key, g in frame.groupby([*groups, "pruner"], sort=True)]
    return pd.DataFrame(out, columns=[*groups, *CRITICAL_COLUMNS])


def collapse_rate(df: pd.DataFrame) -> pd.DataFrame:
    """Fraction of seeds with a collapsed layer per pruner and density (for plots)."""
    rows = C.complete(df)
    if C.density_column(rows) is None or rows.empty:
        return pd.DataFrame(columns=["pruner", "density", "compression", "rate", "n"])
    frame = pd.DataFrame({"pruner": _pruners(rows), "density": C.density_values(rows),
                          "collapsed": collapsed(rows)}).dropna()
    frame = frame[frame["density"] > 0]
    out = frame.groupby(["pruner", "density"], sort=True)["collapsed"].agg(
        rate="mean", n="count").reset_index()
    out["compression"] = 1 / out["density"]
    return out[["pruner", "density", "compression", "rate", "n"]]

