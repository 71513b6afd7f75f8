"""Tables and a figure for part 3 of issue 8: does a data-free search beat the fixed presets?

Reads the rows of the five studies ``run.sh`` writes (through ``analysis.load``) and compares,
per density, the trained validation runs of four kinds of configurations of the SynFlow family
(Gebhart, Saxena, Schrater 2021):

- ``searched top-5``: the 5 configurations with the largest log Path Kernel trace found by TPE
  (study ``svp-tpe-d*``, phase ``validate-top``), and ``searched top-1``, the best of them;
- ``random-5``: 5 configurations drawn uniformly from the same space (``svp-random-d*``);
- the presets ``synflow``, ``synflow-l2`` and ``synflow-l2-code`` (``svp-presets``).

Every configuration is re-pruned and trained on each seed of ``validate.seeds``. What is aggregated is always
named: a configuration's value is the mean over its seeds, with a t interval over seeds
(n = seeds); a group of configurations (top-5, random-5) is the mean over its
configurations' seed means, with a t interval over configurations (n = 5); a preset is
one configuration, so its interval is over seeds. "Searched minus preset" is paired by seed
(each seed gives every group the same initialization, prune sample and train/test split): the
per-seed differences with a t interval over seeds. "Searched minus random-5" asks about randomly
drawn configurations, so it is Welch's t interval over configuration means. Epochs to threshold (first epoch with train loss <= 0.5) is censored
(many sparse networks never reach it), so it is reported as runs that reached it and their
median, without an interval.

Usage::

    python examples/search-vs-presets/summarize.py OUT [--markdown OUT/summary.md]
        [--figure OUT/search_vs_presets.png]
"""

from __future__ import annotations

import argparse
import math
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd
from scipy import stats

import analysis
from analysis.report import markdown_table

STUDIES = ("tpe-d0.03", "tpe-d0.01", "random-d0.03", "random-d0.01", "presets")
PRESETS = ("synflow", "synflow-l2", "synflow-l2-code")
TOP, TOP1, RANDOM = "searched top-5", "searched top-1", "random-5"
GROUPS = (TOP, TOP1, RANDOM, *PRESETS)
METRICS = {"test_accuracy": "test accuracy", "train_loss_auc": "train-loss AUC"}
PARAMS = ("path_exponent", "score_exponent", "iterations", "schedule", "input")
LEVEL = 0.95


def t_interval(values: Sequence[float]) -> tuple[float, float, float]:
    """Mean and its two-sided 95% Student-t interval (NaN bounds with fewer than 2 values)."""
    x = np.asarray(values, dtype=float)
    x = x[np.isfinite(x)]
    if len(x) == 0:
        return math.nan, math.nan, math.nan
    mean = float(x.mean())
    if len(x) < 2:
        return mean, math.nan, math.nan
    half = stats.t.ppf(0.5 + LEVEL / 2, len(x) - 1) * x.std(ddof=1) / math.sqrt(len(x))
    return mean, mean - half, mean + half


def welch_interval(a: Sequence[float], b: Sequence[float]) -> tuple[float, float, float]:
    """mean(a) - mean(b) and its 95% Welch t interval."""
    x, y = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    diff = float(x.mean() - y.mean())
    va, vb = x.var(ddof=1) / len(x), y.var(ddof=1) / len(y)
    se = math.sqrt(va + vb)
    if se == 0:
        return diff, diff, diff
    df = (va + vb) ** 2 / (va**2 / (len(x) - 1) + vb**2 / (len(y) - 1))
    half = stats.t.ppf(0.5 + LEVEL / 2, df) * se
    return diff, diff - half, diff + half


def load_runs(out: Path) -> pd.DataFrame:
    """The COMPLETE trained validation runs, labelled by group (from the study directory run.sh
    wrote them to) and configuration."""
    frames = []
    for name in STUDIES:
        df = analysis.load(out / name)
        df = df[(df["state"] == "COMPLETE") & df["phase"].str.startswith("validate")].copy()
        kind = name.split("-")[0]
        df["group"] = {"tpe": TOP, "random": RANDOM}.get(kind, df.get("param_pruner"))
        frames.append(df)
    df = pd.concat(frames, ignore_index=True)
    df["density"] = df["param_density"].astype(float)
    df["config"] = np.where(df["group"].isin(PRESETS), df["param_pruner"],
                            "#" + df["optuna_number"].astype(str))
    return df


def search_traces(out: Path) -> pd.DataFrame:
    """The search rows of the TPE studies (the objective as the search saw it, seed 0)."""
    df = analysis.load([out / n for n in STUDIES if n.startswith("tpe")])
    return df[(df["phase"] == "search") & (df["state"] == "COMPLETE")].copy()


def with_top1(runs: pd.DataFrame) -> pd.DataFrame:
    """Add the best searched configuration per density (largest seed-0 trace) as its own group."""
    top = runs[(runs["group"] == TOP) & (runs["seed"] == 0)]
    best = top.loc[top.groupby("density")["log_path_kernel_trace"].idxmax(), ["density", "config"]]
    keys = set(map(tuple, best.to_numpy()))
    mask = [(d, c) in keys for d, c in zip(runs["density"], runs["config"], strict=True)]
    extra = runs[(runs["group"] == TOP) & np.asarray(mask)].copy()
    extra["group"] = TOP1
    return pd.concat([runs, extra], ignore_index=True)


def config_table(runs: pd.DataFrame) -> pd.DataFrame:
    """One row per configuration: its parameters and its metrics over seeds."""
    out = []
    for (density, group, config), rows in runs.groupby(["density", "group", "config"]):
        if group == TOP1:
            continue
        first = rows.iloc[0]
        row: dict[str, object] = {"density": density, "group": group, "config": config,
                                  "seeds": len(rows)}
        for p in PARAMS:
            value = first.get(f"param_{p}")
            row[p] = f"{value:.2f}" if isinstance(value, float) else value
        seed0 = rows.loc[rows["seed"] == 0, "log_path_kernel_trace"]
        row["log trace, seed 0"] = f"{float(seed0.iloc[0]):.2f}" if len(seed0) else "—"
        others = rows.loc[rows["seed"] != 0, "log_path_kernel_trace"]
        row["log trace, other seeds (mean)"] = f"{float(others.mean()):.2f}"
        for metric, label in METRICS.items():
            mean, low, high = t_interval(rows[metric])
            row[label] = f"{mean:.3f} [{low:.3f}, {high:.3f}]"
        reached = rows["epochs_to_threshold"].dropna()
        row["epochs to loss 0.5"] = (", ".join(str(int(v)) for v in sorted(reached))
                                     + f" ({len(reached)}/{len(rows)})")
        row["collapsed runs"] = int(pd.to_numeric(rows["layer_collapse"]).gt(0).sum())
        out.append(row)
    table = pd.DataFrame(out)
    order = {g: i for i, g in enumerate(GROUPS)}
    number = table["config"].str.lstrip("#").map(lambda c: int(c) if c.isdigit() else 0)
    keys = pd.DataFrame({"d": -table["density"], "g": table["group"].map(order), "n": number})
    return table.loc[keys.sort_values(["d", "g", "n"]).index].reset_index(drop=True)


def units(rows: pd.DataFrame, metric: str) -> np.ndarray:
    """The units a group's interval is over: configuration means (several configurations) or
    seed runs (one configuration)."""
    if rows["config"].nunique() > 1:
        return rows.groupby("config")[metric].mean().to_numpy(dtype=float)
    return rows[metric].to_numpy(dtype=float)


def group_table(runs: pd.DataFrame) -> pd.DataFrame:
    """One row per density and group: means with intervals over what the group aggregates."""
    out = []
    for density in sorted(runs["density"].unique(), reverse=True):
        for group in GROUPS:
            rows = runs[(runs["density"] == density) & (runs["group"] == group)]
            if rows.empty:
                continue
            n_config = rows["config"].nunique()
            over = "configurations" if n_config > 1 else "seeds"
            row: dict[str, object] = {
                "density": density, "group": group,
                "runs": f"{n_config} config × {rows['seed'].nunique()} seeds",
                "interval over": over,
                "median log trace": f"{rows['log_path_kernel_trace'].median():.2f}",
                "collapsed runs": int(pd.to_numeric(rows["layer_collapse"]).gt(0).sum()),
            }
            for metric, label in METRICS.items():
                mean, low, high = t_interval(units(rows, metric))
                row[label] = f"{mean:.3f} [{low:.3f}, {high:.3f}]"
            reached = rows["epochs_to_threshold"].dropna()
            median = f", median {reached.median():g}" if len(reached) else ""
            row["reached loss 0.5"] = f"{len(reached)}/{len(rows)}{median}"
            out.append(row)
    return pd.DataFrame(out)


def paired_by_seed(a: pd.DataFrame, b: pd.DataFrame, metric: str) -> tuple[float, float, float]:
    """Mean over seeds of (a's mean over its configurations at that seed minus b's), with a t
    interval over seeds: every group trains seed s from the same initialization, prune sample
    and train/test split, so the seed-to-seed variation common to both cancels."""
    diff = a.groupby("seed")[metric].mean() - b.groupby("seed")[metric].mean()
    return t_interval(diff.dropna().to_numpy(dtype=float))


def _verdict(metric: str, low: float, high: float) -> str:
    """Whether the searched side is better: larger accuracy, smaller loss AUC."""
    lo, hi = (low, high) if metric == "test_accuracy" else (-high, -low)
    return "better" if lo > 0 else "worse" if hi < 0 else "unclear"


def comparison_table(runs: pd.DataFrame) -> pd.DataFrame:
    """Searched top-5 (and top-1) minus random-5 and minus each preset, 95% intervals.

    Against a preset (one fixed configuration) the difference is paired by seed
    (:func:`paired_by_seed`, interval over seeds). Against random-5 the question is about
    configurations drawn at random, so the interval is Welch's over configuration means.
    """
    out = []
    for density in sorted(runs["density"].unique(), reverse=True):
        at = runs[runs["density"] == density]
        for searched in (TOP, TOP1):
            for other in (RANDOM, *PRESETS):
                a, b = at[at["group"] == searched], at[at["group"] == other]
                if a.empty or b.empty:
                    continue
                over = ("configurations (Welch)" if other == RANDOM
                        else f"seeds (paired, n={a['seed'].nunique()})")
                row: dict[str, object] = {"density": density,
                                          "comparison": f"{searched} − {other}",
                                          "interval over": over}
                verdicts = []
                for metric, label in METRICS.items():
                    if other == RANDOM:
                        diff, low, high = welch_interval(units(a, metric), units(b, metric))
                    else:
                        diff, low, high = paired_by_seed(a, b, metric)
                    row[f"Δ {label}"] = f"{diff:+.3f} [{low:+.3f}, {high:+.3f}]"
                    verdicts.append(_verdict(metric, low, high))
                row["searched is (accuracy, AUC)"] = ", ".join(verdicts)
                out.append(row)
    return pd.DataFrame(out)


def figure(runs: pd.DataFrame, path: Path) -> None:
    """Rows: densities; columns: test accuracy, train-loss AUC, log trace. Small dots: seed
    runs; open circles: a configuration's mean over seeds; black bar: the group mean with
    its 95% t interval (over configurations for top-5/random-5, over seeds for a preset)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    columns = {**METRICS, "log_path_kernel_trace": "log Path Kernel trace"}
    densities = sorted(runs["density"].unique(), reverse=True)
    groups = [g for g in GROUPS if g != TOP1]
    fig, axes = plt.subplots(len(densities), len(columns), figsize=(13, 4.2 * len(densities)),
                             squeeze=False, constrained_layout=True)
    rng = np.random.default_rng(0)
    colors = dict(zip(groups, ["tab:blue", "tab:gray", "tab:orange", "tab:green", "tab:red"],
                      strict=True))
    for i, density in enumerate(densities):
        for j, (metric, label) in enumerate(columns.items()):
            ax = axes[i][j]
            for x, group in enumerate(groups):
                rows = runs[(runs["density"] == density) & (runs["group"] == group)]
                if rows.empty:
                    continue
                vals = rows[metric].to_numpy(dtype=float)
                ax.scatter(x + rng.uniform(-0.18, 0.18, len(vals)), vals, s=10, alpha=0.5,
                           color=colors[group], linewidths=0)
                means = rows.groupby("config")[metric].mean().to_numpy(dtype=float)
                if len(means) > 1:
                    ax.scatter(np.full(len(means), x + 0.3), means, s=28, facecolors="none",
                               edgecolors=colors[group])
                mean, low, high = t_interval(units(rows, metric))
                if np.isfinite(low):
                    ax.errorbar(x, mean, yerr=[[mean - low], [high - mean]], fmt="_",
                                color="black", markersize=18, capsize=5, linewidth=1.5)
            if metric == "test_accuracy":
                ax.set_ylim(0.0, 1.0)  # a t interval can reach past 1; it is cut here
            ax.set_xticks(range(len(groups)))
            ax.set_xticklabels(groups, rotation=25, ha="right")
            ax.set_ylabel(label)
            ax.set_title(f"density {density:g} ({1 / density:.0f}×): {label}")
            ax.grid(axis="y", alpha=0.3)
    model = str(runs["param_model"].iloc[0])
    name = {"fc": "the 6×100 MLP (fc)", "conv": "the small CNN (conv)"}.get(model, model)
    fig.suptitle(f"SynFlow family, {name} on digits: searched top-5 (largest log Path Kernel "
                 "trace) vs random-5 vs presets\n"
                 "dots: seed runs · circles: a configuration's mean over seeds · black: group "
                 "mean with 95% t interval\n(over configurations for top-5 and random-5, over "
                 "seeds for a preset; cut at the axes; collapsed networks, log trace −∞, are not "
                 "drawn)", fontsize=10)
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("out", type=Path, help="the directory run.sh wrote")
    parser.add_argument("--markdown", type=Path, help="also write the tables here")
    parser.add_argument("--figure", type=Path, help="write the PNG figure here")
    args = parser.parse_args(argv)
    runs = with_top1(load_runs(args.out))
    search = search_traces(args.out)
    parts = []
    for density, rows in search.groupby(search["param_density"].astype(float)):
        ranked = rows["log_path_kernel_trace"].sort_values(ascending=False)
        first10 = rows.sort_values("optuna_number").head(10)["log_path_kernel_trace"].max()
        parts.append(f"- density {density:g}: {len(rows)} search trials; best log trace "
                     f"{ranked.iloc[0]:.2f}, 5th {ranked.iloc[4]:.2f}, best of the 10 random "
                     f"startup trials {first10:.2f}")
    configs = config_table(runs)
    text = ["## Search (seed 0, data-free)\n", *parts, "",
            "## Per configuration (mean over seeds, 95% t interval over seeds)\n",
            markdown_table(configs, index=False), "",
            "## Per group\n", markdown_table(group_table(runs), index=False), "",
            "## Searched minus baseline (95% t intervals)\n",
            markdown_table(comparison_table(runs), index=False), ""]
    report = "\n".join(text)
    print(report)
    if args.markdown:
        args.markdown.write_text(report, encoding="utf-8")
    if args.figure:
        figure(runs, args.figure)
        print(f"figure: {args.figure}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
