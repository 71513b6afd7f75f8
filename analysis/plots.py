"""Figures as PNG through matplotlib's Agg canvas (no pyplot, no display, no global state).

Every figure labels its axes; compression (1/density) is always on a log axis, the scale on
which SynFlow (Tanaka et al. 2020) and Gebhart, Saxena & Schrater (2021) plot it.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd
from matplotlib.colors import LogNorm
from matplotlib.figure import Figure

from analysis import columns as C
from analysis.tables import SUMMARY_COLUMNS, aggregation_label

DPI = 110


def _save(fig: Figure, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=DPI)
    return path


def method_curves_figure(summary: pd.DataFrame, metric: str) -> Figure:
    """Metric (mean ± std over the rows of each pruner and density) against compression.

    The y label says what the rows are (seeds, or configurations; ``tables.aggregation_label``).
    """
    fig = Figure(figsize=(7.4, 4.4), layout="constrained")
    ax = fig.add_subplot()
    extra = [c for c in summary.columns if c not in SUMMARY_COLUMNS]
    # Columns with one value go to the title; the legend names what differs between lines.
    fixed = [c for c in extra if summary[c].nunique(dropna=False) == 1]
    extra = [c for c in extra if c not in fixed]
    context = ", ".join(_legend_part(c, summary[c].iloc[0]) for c in fixed)
    for key, g in summary.groupby([*extra, "pruner"], sort=True):
        values = key if isinstance(key, tuple) else (key,)
        label = " / ".join(_legend_part(c, v) for c, v in zip([*extra, "pruner"], values,
                                                              strict=True))
        g = g.sort_values("compression")
        ax.errorbar(g["compression"], g["mean"], yerr=g["std"].fillna(0), marker="o",
                    capsize=3, label=label)
    ax.set_xscale("log")
    ax.set_xlabel("compression (1 / density, log scale)")
    means = summary["mean"].astype(float)
    wide = (means > 0).all() and means.max() > 100 * means.min()
    if wide:  # e.g. one diverging run's loss area next to converged ones
        ax.set_yscale("log")
    ax.set_ylabel(f"{metric}{' (log scale)' if wide else ''}\n"
                  f"(mean ± std over {aggregation_label(summary)})")
    ax.set_title(f"{metric} vs compression" + (f"\n({context})" if context else ""),
                 fontsize="medium")
    ax.legend(fontsize="small", loc="upper left", bbox_to_anchor=(1.02, 1.0), borderaxespad=0)
    return fig


def _legend_part(column: str, value: object) -> str:
    if column == C.TRAIN_LENGTH:
        return f"{float(value):g} epochs"  # type: ignore[arg-type]
    return str(value)


def correlation_heatmap_figure(groups: Sequence[tuple[str, pd.DataFrame]],
                               statistic: str = "spearman") -> Figure:
    """Predictors × targets heatmaps of a rank correlation, one panel per group.

    Args:
        groups: (label, rows of ``rank_correlations`` for that group) pairs.
        statistic: ``"spearman"`` or ``"kendall"``.
    """
    tables = [_correlation_matrix(g, statistic) for _, g in groups]
    ncols = min(3, len(tables))
    nrows = -(-len(tables) // ncols)
    rows, cols = tables[0].shape
    fig = Figure(figsize=(ncols * (1.8 + 1.1 * cols) + 1.0, nrows * (1.0 + 0.4 * rows)),
                 layout="constrained")
    axes = fig.subplots(nrows, ncols, squeeze=False)
    annotate = len(tables) <= 4  # numbers on many panels make the figure slow and unreadable
    for ax, (label, group), table in zip(axes.flat, groups, tables, strict=False):
        values = table.to_numpy(dtype=float)
        image = ax.imshow(values, cmap="RdBu_r", vmin=-1, vmax=1, aspect="auto")
        ax.set_xticks(range(table.shape[1]), table.columns, rotation=30, ha="right",
                      fontsize="small")
        ax.set_yticks(range(table.shape[0]), table.index, fontsize="small")
        if annotate:
            for (i, j), v in np.ndenumerate(values):
                if np.isfinite(v):
                    ax.text(j, i, f"{v:.2f}", ha="center", va="center", fontsize="x-small")
        ax.set_xlabel("trained metric")
        ax.set_ylabel("data-free statistic / baseline")
        n_rows = float(pd.to_numeric(group["n"], errors="coerce").max()) if "n" in group else np.nan
        ax.set_title(f"{label}\n({'?' if np.isnan(n_rows) else int(n_rows)} rows; "
                     "blank: constant or missing)", fontsize="small")
    for ax in list(axes.flat)[len(tables):]:
        ax.set_axis_off()
    fig.colorbar(image, ax=axes, label=f"{statistic} rank correlation", shrink=0.8)
    return fig


def _correlation_matrix(corr: pd.DataFrame, statistic: str) -> pd.DataFrame:
    table = corr.pivot_table(index="predictor", columns="target", values=statistic,
                             aggfunc="first", dropna=False)
    return table.reindex(index=list(dict.fromkeys(corr["predictor"])),
                         columns=list(dict.fromkeys(corr["target"])))


def scatter_figure(df: pd.DataFrame, predictor: str, target: str) -> Figure:
    """One point per finished trial: predictor against target, coloured by density."""
    rows = C.complete(df)
    x = pd.to_numeric(rows[predictor], errors="coerce")
    y = pd.to_numeric(rows[target], errors="coerce")
    density = C.density_values(rows)
    ok = x.notna() & y.notna() & np.isfinite(x) & np.isfinite(y)
    fig = Figure(figsize=(6.0, 4.2), layout="constrained")
    ax = fig.add_subplot()
    colour = density[ok]
    # Validation top-k rows were chosen for a large objective: drawn apart, never mixed in.
    phase = rows["phase"].astype(str) if "phase" in rows.columns else pd.Series("", index=rows.index)
    marks = {C.VALIDATE_TOP: ("^", "validation top-k (chosen by the objective)"),
             C.VALIDATE_RANDOM: ("s", "validation random-k"), C.PHASE_SEARCH: ("o", "search")}
    coloured = colour.notna().all() and (colour > 0).all() and colour.nunique() > 1
    points = None
    for value in sorted(set(phase[ok])):
        sel = ok & (phase == value)
        marker, label = marks.get(value, ("o", value or "trials"))
        kwargs = ({"c": density[sel], "norm": LogNorm(vmin=colour.min(), vmax=colour.max()),
                   "cmap": "viridis"} if coloured else {})
        points = ax.scatter(x[sel], y[sel], s=18, marker=marker, label=label, **kwargs)
    if coloured and points is not None:
        fig.colorbar(points, ax=ax, label="density (log scale)")
    if len(set(phase[ok])) > 1:
        ax.legend(fontsize="small", loc="upper left", bbox_to_anchor=(0.0, -0.15), ncol=2)
    ax.set_xlabel(predictor)
    ax.set_ylabel(target)
    infinite = int((x.notna() & ~np.isfinite(x.astype(float)) & y.notna()).sum())
    hidden = f"; {infinite} with an infinite {predictor} not shown" if infinite else ""
    ax.set_title(f"{target} vs {predictor}\n({int(ok.sum())} trials{hidden})", fontsize="medium")
    return fig


def collapse_rates_figure(rates: pd.DataFrame, critical: pd.DataFrame) -> Figure:
    """Fraction of rows with a fully pruned layer against compression, per pruner."""
    fig = Figure(figsize=(7.4, 4.2), layout="constrained")
    ax = fig.add_subplot()
    if C.EXPERIMENT in critical.columns and (critical[C.EXPERIMENT] == C.PHASE_SEARCH).any():
        critical = critical[critical[C.EXPERIMENT] == C.PHASE_SEARCH]  # the rows rates counts
    for pruner, g in rates.groupby("pruner", sort=True):
        g = g.sort_values("compression")
        line = ax.plot(g["compression"], g["rate"], marker="o", label=str(pruner))[0]
        crit = critical.loc[critical["pruner"] == pruner, "critical_compression"].dropna()
        for c in crit.unique():
            ax.axvline(c, color=line.get_color(), linestyle=":", linewidth=1)
    ax.set_xscale("log")
    ax.set_ylim(-0.05, 1.05)
    ax.set_xlabel("compression (1 / density, log scale)")
    kinds = sorted(set(rates["over"]) - {"one row"}) if "over" in rates.columns else []
    over = kinds[0] if len(kinds) == 1 else "rows"
    what = "seeds" if over == "seeds" else f"rows ({over})" if over != "rows" else "rows"
    ax.set_ylabel(f"fraction of {what}\nwith a collapsed layer")
    ax.set_title("layer collapse (dotted: critical compression, the largest tested\n"
                 "compression below the first collapse; none where collapse starts at once)",
                 fontsize="medium")
    ax.legend(fontsize="small", loc="upper left", bbox_to_anchor=(1.02, 1.0), borderaxespad=0)
    return fig


def layer_density_heatmap_figure(layers: pd.DataFrame,
                                 minimum: pd.DataFrame | None = None) -> Figure:
    """Per-layer density of each (pruner, density) row; fully pruned layers in red.

    Args:
        layers: ``layer_density_table(df)`` (mean over each cell's rows).
        minimum: ``layer_density_table(df, "min")``; cells where some seed lost the whole
            layer get a red ×.
    """
    values = layers.to_numpy(dtype=float)
    masked = np.ma.masked_less_equal(values, 0.0)
    positive = values[values > 0]
    low = float(positive.min()) if positive.size else 1e-3
    # Floors keep the labels, title and colorbar label inside a one-row or few-layer figure.
    fig = Figure(figsize=(max(7.0, 3.5 + 0.45 * values.shape[1]),
                          max(4.0, 2.6 + 0.3 * values.shape[0])), layout="constrained")
    ax = fig.add_subplot()
    cmap = _cmap_with_bad("viridis", "red")
    image = ax.imshow(masked, cmap=cmap, norm=LogNorm(vmin=min(low, 0.999), vmax=1.0),
                      aspect="auto", interpolation="nearest")
    if minimum is not None:
        lost = minimum.reindex(index=layers.index, columns=layers.columns).to_numpy(dtype=float)
        rows, cols = np.nonzero(lost == 0.0)
        ax.scatter(cols, rows, marker="x", color="red", s=40)
    labels = [" ".join(str(k) for k in key[:-1]) + f"  {1 / key[-1]:.4g}×" for key in layers.index]
    ax.set_yticks(range(len(labels)), labels, fontsize="small")
    ax.set_xticks(range(values.shape[1]), layers.columns, rotation=60, ha="right",
                  fontsize="small")
    ax.set_xlabel("layer (network order)")
    ax.set_ylabel("pruner, compression")
    ax.set_title("per-layer density (mean over the trials of each row)\n"
                 "red cell: layer empty in every trial; red ×: empty in some trial",
                 fontsize="small")
    fig.colorbar(image, ax=ax, label="layer density (log scale)")
    return fig


def _cmap_with_bad(name: str, bad: str):  # type: ignore[no-untyped-def]
    from matplotlib import colormaps

    return colormaps[name].with_extremes(bad=bad)


def pareto_figure(rows: pd.DataFrame, front: pd.DataFrame,
                  objectives: Sequence[tuple[str, str]]) -> Figure:
    """All finished trials and the Pareto front over the first two objectives."""
    (mx, dx), (my, dy) = objectives[0], objectives[1]
    fig = Figure(figsize=(6.0, 4.4), layout="constrained")
    ax = fig.add_subplot()
    done = C.complete(rows)
    ax.scatter(pd.to_numeric(done[mx], errors="coerce"), pd.to_numeric(done[my], errors="coerce"),
               s=8, color="0.7", label="trials")
    f = front.sort_values(mx)
    ax.plot(f[mx], f[my], "o-", color="tab:red", label="Pareto front")
    ax.set_xlabel(f"{mx} ({dx})")
    ax.set_ylabel(f"{my} ({dy})")
    ax.set_title("Pareto front")
    ax.legend(fontsize="small")
    return fig


def importances_figure(imp: pd.DataFrame, max_panels: int = 12) -> Figure:
    """Horizontal bars of parameter importance, one panel per study and target.

    Args:
        imp: ``param_importances`` rows, with a ``study`` column when there are several.
        max_panels: at most this many panels (the rest is in the tables).
    """
    keys = ["study", "target"] if "study" in imp.columns else ["target"]
    panels = list(imp.groupby(keys, sort=True))[:max_panels]
    ncols = min(3, len(panels))
    nrows = -(-len(panels) // ncols)
    fig = Figure(figsize=(4.6 * ncols, nrows * (0.8 + 0.3 * imp["param"].nunique())),
                 layout="constrained")
    for i, (key, g) in enumerate(panels):
        ax = fig.add_subplot(nrows, ncols, i + 1)
        g = g.sort_values("importance")
        ax.barh(g["param"], g["importance"])
        ax.set_xlabel("importance (PED-ANOVA, sums to 1)")
        ax.set_ylabel("parameter")
        label = ": ".join(str(k) for k in (key if isinstance(key, tuple) else (key,)))
        ax.set_title(label, fontsize="small")
    return fig


def validation_figure(rows: pd.DataFrame, target: str) -> Figure:
    """The trained metric of the validation top-k and random-k, per study."""
    done = C.complete(rows)
    done = done[done["phase"].isin([C.VALIDATE_TOP, C.VALIDATE_RANDOM])]
    studies = sorted(done["study"].astype(str).unique()) if "study" in done else [""]
    fig = Figure(figsize=(2.0 + 2.2 * len(studies), 4.2), layout="constrained")
    ax = fig.add_subplot()
    data, labels = [], []
    for s in studies:
        g = done[done["study"].astype(str) == s] if s else done
        for phase in (C.VALIDATE_TOP, C.VALIDATE_RANDOM):
            v = pd.to_numeric(g.loc[g["phase"] == phase, target], errors="coerce").dropna()
            data.append(v.to_numpy())
            labels.append(f"{s}\n{phase.removeprefix('validate-')}-k" if s else phase)
    ax.boxplot(data, tick_labels=labels)
    ax.set_xlabel("study and validation arm")
    ax.set_ylabel(target)
    ax.set_title("validation: objective's top-k vs random-k")
    return fig


def method_curves(summary: pd.DataFrame, metric: str, path: Path) -> Path:
    """Draw ``method_curves_figure`` and save it as PNG at ``path``."""
    return _save(method_curves_figure(summary, metric), path)

def correlation_heatmap(groups: Sequence[tuple[str, pd.DataFrame]], path: Path,
                        statistic: str = "spearman") -> Path:
    """Draw ``correlation_heatmap_figure`` and save it as PNG at ``path``."""
    return _save(correlation_heatmap_figure(groups, statistic=statistic), path)

def scatter(df: pd.DataFrame, predictor: str, target: str, path: Path) -> Path:
    """Draw ``scatter_figure`` and save it as PNG at ``path``."""
    return _save(scatter_figure(df, predictor, target), path)

def collapse_rates(rates: pd.DataFrame, critical: pd.DataFrame, path: Path) -> Path:
    """Draw ``collapse_rates_figure`` and save it as PNG at ``path``."""
    return _save(collapse_rates_figure(rates, critical), path)

def layer_density_heatmap(layers: pd.DataFrame, path: Path,
                          minimum: pd.DataFrame | None = None) -> Path:
    """Draw ``layer_density_heatmap_figure`` and save it as PNG at ``path``."""
    return _save(layer_density_heatmap_figure(layers, minimum), path)

def pareto(rows: pd.DataFrame, front: pd.DataFrame, objectives: Sequence[tuple[str, str]],
           path: Path) -> Path:
    """Draw ``pareto_figure`` and save it as PNG at ``path``."""
    return _save(pareto_figure(rows, front, objectives), path)

def importances(imp: pd.DataFrame, path: Path) -> Path:
    """Draw ``importances_figure`` and save it as PNG at ``path``."""
    return _save(importances_figure(imp), path)

def validation(rows: pd.DataFrame, target: str, path: Path) -> Path:
    """Draw ``validation_figure`` and save it as PNG at ``path``."""
    return _save(validation_figure(rows, target), path)
