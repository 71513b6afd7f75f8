"""The study report: ``OUT/report.md`` with tables and figure links, CSVs and PNGs.

It answers, from the Parquet rows alone, the question of Gebhart, Saxena & Schrater (2021),
"A Unified Paths Perspective for Pruning at Initialization": do data-free Path Kernel
statistics predict how the pruned network trains, and do they beat parameter count, MACs and
a random score?
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from analysis import plots
from analysis.collapse import layer_density_table
from analysis.correlations import RESULT_COLUMNS
from analysis.io import PathLike, load, load_specs
from analysis.pipeline import DEFAULT_OBJECTIVE, Analysis, analyze
from analysis.tables import method_table

MAX_GROUPS_SHOWN = 20
MAX_GROUPS_PLOTTED = 12
MAX_FRONT_ROWS = 30
SOURCES = {"journal": "the Optuna journal", "parquet": "the Parquet rows"}


def fmt(value: object, digits: int = 3) -> str:
    """A table cell: floats to ``digits`` significant digits, NaN/None as an em dash."""
    if value is None or value is pd.NA or value is pd.NaT:
        return "—"
    if isinstance(value, (float, np.floating)) and np.isnan(value):
        return "—"
    if isinstance(value, (bool, np.bool_)):
        return "yes" if value else "no"
    if isinstance(value, (float, np.floating)):
        if 10.0**digits - 0.5 <= abs(float(value)) < 1e9:
            return f"{value:.0f}"  # 1000, not 1e+03 (compressions, parameter counts)
        return f"{value:.{digits}g}"
    return str(value).replace("|", "\\|").replace("\n", " ")


def markdown_table(df: pd.DataFrame, index: bool = False) -> str:
    """GitHub-flavoured Markdown for ``df`` (no tabulate dependency)."""
    frame = df.reset_index() if index else df
    header = [str(c) for c in frame.columns]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(fmt(v) for v in row) + " |"
              for row in frame.itertuples(index=False)]
    return "\n".join(lines)


def _interval_cell(value: float, low: float, high: float) -> str:
    if np.isnan(value):
        return "—"
    return f"{value:.2f} [{low:.2f}, {high:.2f}]"


def correlation_table(group: pd.DataFrame, statistic: str = "spearman") -> pd.DataFrame:
    """Predictors × targets of ``rho [low, high]`` cells for one group of correlations."""
    cells = group.assign(cell=[_interval_cell(v, lo, hi) for v, lo, hi in zip(
        group[statistic], group[f"{statistic}_low"], group[f"{statistic}_high"], strict=True)])
    table = cells.pivot_table(index="predictor", columns="target", values="cell",
                              aggfunc="first")
    return table.reindex(index=list(dict.fromkeys(group["predictor"])),
                         columns=list(dict.fromkeys(group["target"])))


def _group_label(keys: Sequence[str], values: Sequence[object]) -> str:
    pairs = zip(keys, values, strict=True)
    return ", ".join(f"{k.removeprefix('param_')}={fmt(v)}" for k, v in pairs) or "all rows"


def correlation_groups(corr: pd.DataFrame) -> list[tuple[str, pd.DataFrame]]:
    """(label, rows) per group of a ``rank_correlations`` result."""
    keys = [c for c in corr.columns if c not in RESULT_COLUMNS]
    if not keys:
        return [("all rows", corr)] if len(corr) else []
    return [(_group_label(keys, k if isinstance(k, tuple) else (k,)), g)
            for k, g in corr.groupby(keys, dropna=False, sort=False)]


class _Writer:
    """Collects Markdown, writes CSVs and (optionally) figures under ``out``."""

    def __init__(self, out: Path, figures: bool) -> None:
        self.out = out
        self.figures = figures
        self.lines: list[str] = []
        (out / "tables").mkdir(parents=True, exist_ok=True)
        if figures:
            (out / "figures").mkdir(parents=True, exist_ok=True)

    def add(self, *text: str) -> None:
        self.lines.extend(text)

    def csv(self, df: pd.DataFrame, name: str, index: bool = False) -> str:
        df.to_csv(self.out / "tables" / name, index=index)
        return f"tables/{name}"

    def figure(self, name: str, draw, caption: str) -> None:  # type: ignore[no-untyped-def]
        if self.figures:
            draw(self.out / "figures" / name)
            self.add(f"![{caption}](figures/{name})", "")


def _summary(w: _Writer, a: Analysis, sources: Sequence[str]) -> None:
    df = a.rows
    w.add("# pathsweep analysis report", "",
          "Sources: " + ", ".join(f"`{s}`" for s in sources), "")
    if df.empty:
        return
    studies = df["study"].astype(str).value_counts().sort_index() if "study" in df else None
    states = df["state"].astype(str).value_counts() if "state" in df else None
    w.add(f"- trial rows: {len(df)}")
    if studies is not None:
        w.add("- studies: " + ", ".join(f"{k} ({v} rows)" for k, v in studies.items()))
    if states is not None:
        w.add("- states: " + ", ".join(f"{k} {v}" for k, v in states.items()))
    if "phase" in df:
        w.add("- phases: " + ", ".join(f"{k} {v}" for k, v in
                                        df["phase"].astype(str).value_counts().items()))
    w.add("- trained metrics: " + (", ".join(a.trained) or "none"), "")


def _messages(w: _Writer, a: Analysis) -> None:
    if a.messages:
        w.add("## What could not be analysed", "", *[f"- {m}" for m in a.messages], "")


def _correlations(w: _Writer, a: Analysis) -> None:
    if a.correlations.empty:
        return
    w.add("## Do data-free statistics predict training?", "",
          "Spearman ρ and Kendall τ-b between each data-free statistic (and the baselines "
          "`num_params`, `macs`, `random_score`) and each trained metric, per group, with 95% "
          "intervals. A useful predictor correlates positively with accuracy and negatively "
          "with loss area and epochs to threshold, and beats the baselines. Groups are within "
          "one density (density alone drives both sides, so the pooled group mostly measures "
          "density); search and validation rows are separate experiments, and validation "
          "top-k rows are left out (chosen because they maximise the objective, they would "
          "bias any correlation with it; they are judged against random-k below). "
          f"Full table: [{w.csv(a.correlations, 'correlations.csv')}]"
          f"(tables/correlations.csv).", "")
    groups = correlation_groups(a.correlations)
    for label, g in groups[:MAX_GROUPS_SHOWN]:
        n = g.groupby("target")["n"].max().to_dict()
        w.add(f"### {label}", "", "Rows per target: " + ", ".join(f"{k} {v}" for k, v in n.items()),
              "", f"Interval: {next((s for s in g['interval'] if s), 'none')}.", "",
              "Spearman ρ [95% CI]:", "", markdown_table(correlation_table(g), index=True), "",
              "Kendall τ-b [95% CI]:", "", markdown_table(correlation_table(g, "kendall"), index=True), "")
        notes = sorted({str(x) for x in g["note"] if x})
        if notes:
            w.add("Notes: " + "; ".join(notes) + ".", "")
    finite = [(label, g) for label, g in groups if g["spearman"].notna().any()]
    if finite:  # groups without a single finite correlation would be blank panels
        w.figure("correlations.png",
                 lambda p: plots.correlation_heatmap(finite[:MAX_GROUPS_PLOTTED], p),
                 "Spearman rank correlation per group")
    if len(groups) > MAX_GROUPS_SHOWN:
        w.add(f"{len(groups) - MAX_GROUPS_SHOWN} more groups are in the CSV.", "")
    predictor = DEFAULT_OBJECTIVE if DEFAULT_OBJECTIVE in a.rows else None
    if predictor and a.trained:
        w.figure("scatter.png", lambda p: plots.scatter(a.rows, predictor, a.trained[0], p),
                 f"{a.trained[0]} vs {predictor}")


def _validation(w: _Writer, a: Analysis) -> None:
    if a.validation.empty:
        return
    w.add("## Validation: the objective's top-k against random-k", "",
          "`difference` = mean(top-k) − mean(random-k) with a bootstrap 95% interval; "
          "`hit_rate` = fraction of top-k configurations better than the median random-k one.",
          "", markdown_table(a.validation), "")
    w.csv(a.validation, "validation.csv")
    w.figure("validation.png", lambda p: plots.validation(a.rows, a.trained[0], p),
             "validation top-k vs random-k")


def _methods(w: _Writer, a: Analysis) -> None:
    shown = {m: s for m, s in a.methods.items() if not s.empty}
    if not shown:
        return
    w.add("## Method tables", "",
          "Mean ± std over the rows of each pruner and density (compression = 1/density); "
          "each cell says what the rows are: `seeds` (one configuration, different seeds) or "
          "`configurations` (a search varies more than pruner and density; those are not "
          "seeds). Search and validation rows, and different training lengths, are separate "
          "tables (`experiment`, `train_epochs`)."
          + ("" if a.trained else f" No trained metrics: showing `{DEFAULT_OBJECTIVE}`."), "")
    for i, (metric, summary) in enumerate(shown.items()):
        w.csv(summary, f"method_{metric}.csv")
        w.add(f"### {metric}", "", markdown_table(method_table(summary), index=True), "")
        if i == 0:  # the primary metric; the others are in the tables (figures cost ~0.3 s)
            w.figure(f"method_{metric}.png",
                     lambda p, s=summary, m=metric: plots.method_curves(s, m, p),
                     f"{metric} vs compression")


def _collapse(w: _Writer, a: Analysis) -> None:
    if a.critical.empty:
        return
    w.add("## Layer collapse", "",
          "`first_collapse_compression`: the smallest tested compression (1/density) at which "
          "some row had a fully pruned layer (`layer_collapse == 1`); `collapsed_rows` of `n` "
          "rows collapsed in all. `critical_compression`: the largest tested compression below "
          "it, where no row collapsed; the true critical compression lies between the two. "
          "`censored`: no collapse at any tested density, so it lies above the tested range. "
          "`over`: whether a pruner's rows at one density are seeds or configurations.", "",
          markdown_table(a.critical), "")
    w.csv(a.critical, "critical_compression.csv")
    if not a.collapse_rates.empty:
        w.figure("collapse.png", lambda p: plots.collapse_rates(a.collapse_rates, a.critical, p),
                 "collapse rate vs compression")
    if not a.layers.empty:
        w.csv(a.layers, "layer_density.csv", index=True)
        w.add("Per-layer density (mean over the rows of each pruner and compression): "
              "[tables/layer_density.csv](tables/layer_density.csv).", "")
        w.figure("layer_density.png",
                 lambda p: plots.layer_density_heatmap(a.layers, p,
                                                       layer_density_table(a.rows, "min")),
                 "per-layer density")


def _optuna(w: _Writer, a: Analysis) -> None:
    if a.importances.empty and not a.pareto:
        return
    w.add("## Optuna views", "")
    for study, imp in a.importances.groupby("study", sort=True):
        table = imp.pivot_table(index="param", columns="target", values="importance")
        table = table[list(dict.fromkeys(imp["target"]))]
        table = table.sort_values(table.columns[0], ascending=False)
        source = " and ".join(SOURCES[s] for s in sorted(set(imp["source"])))
        w.add(f"### Parameter importances: {study}", "",
              f"PED-ANOVA (`optuna.importance`), from {source}.", "",
              markdown_table(table, index=True), "")
    if not a.importances.empty:
        w.csv(a.importances, "importances.csv")
        w.figure("importances.png", lambda p: plots.importances(a.importances, p),
                 "parameter importances")
    for study, front in a.pareto.items():
        objs = a.objectives[study]
        cols = [c for c in ("trial_id", *[c for c in front.columns if c.startswith("param_")],
                            *[m for m, _ in objs], *a.trained[:1]) if c in front.columns]
        w.add(f"### Pareto front: {study}", "",
              f"{len(front)} non-dominated trials over " +
              ", ".join(f"{m} ({d})" for m, d in objs) + ".", "",
              markdown_table(front[list(dict.fromkeys(cols))].head(MAX_FRONT_ROWS)), "")
        w.csv(front, f"pareto_{_slug(study)}.csv")
        w.figure(f"pareto_{_slug(study)}.png",
                 lambda p, s=study, f=front, o=objs: plots.pareto(
                     a.rows[a.rows["study"].astype(str) == s], f, o, p),
                 f"Pareto front {study}")


def _slug(text: object) -> str:
    return "".join(ch if ch.isalnum() or ch in "-_" else "_" for ch in str(text)) or "study"


def write_report(result: Analysis, out: PathLike, sources: Sequence[str] = (),
                 figures: bool = True) -> Path:
    """Write ``OUT/report.md`` (plus ``OUT/tables/*.csv`` and ``OUT/figures/*.png``).

    Returns:
        The path of ``report.md``.
    """
    out = Path(out)
    w = _Writer(out, figures)
    _summary(w, result, sources)
    _messages(w, result)
    for section in (_correlations, _validation, _methods, _collapse, _optuna):
        section(w, result)
    path = out / "report.md"
    path.write_text("\n".join(w.lines).rstrip() + "\n")
    return path


def build_report(
    paths: PathLike | Iterable[PathLike],
    out: PathLike,
    *,
    figures: bool = True,
    n_resamples: int = 1000,
    seed: int = 0,
) -> Path:
    """Load studies, run every analysis and write the report.

    Args:
        paths: study directories or Parquet files (as ``analysis.load``).
        out: output directory; created if needed.
        figures: also draw PNG figures (matplotlib Agg).
        n_resamples: bootstrap resamples of every interval.
        seed: seed of the resampling and of the random baseline.

    Returns:
        The path of ``OUT/report.md``.
    """
    sources = [str(paths)] if isinstance(paths, (str, Path)) else [str(p) for p in paths]
    result = analyze(load(sources), load_specs(sources), n_resamples=n_resamples, seed=seed)
    return write_report(result, out, sources, figures)

