"""Compact tables of the designed study: does a path statistic predict training, per density?

Prints Markdown: for each model and density (and pooled over densities), Spearman's rho with its
bootstrap 95% interval between each predictor (Path Kernel statistics and the baselines
``num_params`` and a random score) and each trained metric, and the test accuracy per pruner and
density as mean ± std over seeds. Reads the Parquet rows through ``analysis`` only.

Usage::

    python examples/paths-predict-training/summarize.py OUT/ppt-*  [--resamples 1000]
"""

from __future__ import annotations

import argparse

import pandas as pd

import analysis
from analysis.correlations import POOLED, with_random_score, within_and_pooled
from analysis.report import markdown_table
from analysis.tables import method_summary, method_table

PREDICTORS = ("log_path_kernel_trace", "log_path_l1", "log_path_l2_squared", "num_params",
              "random_score")
TARGETS = ("test_accuracy", "train_loss_auc", "epochs_to_threshold")


def _cell(rho: float, low: float, high: float) -> str:
    if pd.isna(rho):
        return "—"
    mark = "*" if low > 0 or high < 0 else ""
    return f"{rho:+.2f} [{low:+.2f}, {high:+.2f}]{mark}"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("dirs", nargs="+")
    parser.add_argument("--resamples", type=int, default=1000)
    parser.add_argument("--exclude-collapsed", action="store_true",
                        help="leave out pruned networks with an empty layer (layer_collapse)")
    args = parser.parse_args(argv)
    df = with_random_score(analysis.load(args.dirs))
    if args.exclude_collapsed:
        df = df[pd.to_numeric(df["layer_collapse"], errors="coerce") == 0]
        print("(networks with a collapsed layer left out)")
    corr = within_and_pooled(df, predictors=list(PREDICTORS), targets=list(TARGETS),
                             n_resamples=args.resamples)
    corr = corr.assign(cell=[_cell(r, lo, hi) for r, lo, hi in
                             zip(corr["spearman"], corr["spearman_low"], corr["spearman_high"],
                                 strict=True)])
    density = "param_density"
    for model, rows in corr.groupby("param_model", sort=True):
        print(f"\n### {model}: Spearman ρ [bootstrap 95% CI] (* = interval excludes 0)\n")
        for target in TARGETS:
            sub = rows[rows["target"] == target]
            table = sub.pivot_table(index=density, columns="predictor", values="cell",
                                    aggfunc="first")
            order = sorted((d for d in table.index if d != POOLED), key=float, reverse=True)
            table = table.reindex([*order, POOLED] if POOLED in table.index else order)
            table = table[[p for p in PREDICTORS if p in table.columns]]
            n = sub.groupby(density)["n"].max()
            table.insert(0, "n", [n.get(d) for d in table.index])
            print(f"{target}:\n\n{markdown_table(table, index=True)}\n")
        acc = method_summary(df[df["param_model"] == model], "test_accuracy")
        print(f"test accuracy, mean ± std over seeds:\n\n"
              f"{markdown_table(method_table(acc), index=True)}\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
