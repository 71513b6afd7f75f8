"""SynFlow-L2 as the paper writes it beside the authors' code, trained in the designed study.

Prints Markdown, one table per model: per density and pruner (default ``synflow-l2`` and
``synflow-l2-code``), the mean ± standard deviation over seeds of test accuracy, train-loss AUC
and ``log_path_kernel_trace``, and how many networks lost a whole layer. A cell averages only
rows of one configuration that differ in seed (``analysis.tables.method_summary`` says so);
anything else is refused. Collapsed networks have a trace of 0 (log −∞) and are left out of the
trace's mean, so that cell's ``n`` is smaller. Gebhart, Saxena & Schrater (2021) give the
paper's SynFlow-L2; docs/results.md section 4 says how the authors' code differs.

Usage::

    python examples/paths-predict-training/l2-code/compare.py \
        OUT/fc-iterative-s* OUT/fc-l2-code-s* OUT/conv-iterative-s* OUT/conv-l2-code-s*
"""

from __future__ import annotations

import argparse
import sys

import pandas as pd

import analysis
from analysis.report import markdown_table
from analysis.tables import format_compression, method_summary

METRICS = ("test_accuracy", "train_loss_auc", "log_path_kernel_trace")
MODEL = "param_model"


def _cell(row: pd.Series) -> str:
    spread = "" if pd.isna(row["std"]) else f" ± {row['std']:.3g}"
    return f"{row['mean']:.3g}{spread} (n={row['n']})"


def compare(df: pd.DataFrame, pruners: list[str]) -> dict[str, pd.DataFrame]:
    """Per model, a table of density × pruner with one column per metric (mean ± std, n seeds).

    Raises:
        ValueError: a cell would average rows that are not seeds of one configuration.
    """
    df = df[df["param_pruner"].isin(pruners)]
    if df.empty:
        raise ValueError(f"no rows of the pruners {pruners} in the given studies")
    tables: dict[str, pd.DataFrame] = {}
    for model, rows in df.groupby(MODEL, sort=True):
        cells: dict[str, pd.Series] = {}
        for metric in METRICS:
            summary = method_summary(rows, metric)
            bad = summary[~summary["over"].isin(("seeds", "one row"))]
            if not bad.empty:
                raise ValueError(f"{model}: {metric} would average {set(bad['over'])}, "
                                 "not seeds of one configuration; pass one study per seed")
            if summary.duplicated(["density", "pruner"]).any():
                raise ValueError(f"{model}: rows of several datasets, experiments (search, "
                                 "validation) or training lengths; pass one of them")
            cells[metric] = summary.set_index(["density", "pruner"]).apply(_cell, axis=1)
        collapse = pd.to_numeric(rows["layer_collapse"], errors="coerce")
        collapsed = collapse.groupby([rows["param_density"], rows["param_pruner"]]).agg(
            lambda s: f"{int(s.sum())} of {s.count()}")
        collapsed.index = collapsed.index.set_names(["density", "pruner"])
        table = pd.DataFrame(cells).join(collapsed.rename("collapsed networks"))
        table = table.sort_index(level=["density", "pruner"], ascending=[False, True])
        table.index = pd.MultiIndex.from_tuples(
            [(format_compression(float(d)), p) for d, p in table.index],
            names=["density (compression)", "pruner"])
        tables[str(model)] = table
    return tables


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("dirs", nargs="+")
    parser.add_argument("--pruners", nargs="+", default=["synflow-l2", "synflow-l2-code"])
    args = parser.parse_args(argv)
    try:
        tables = compare(analysis.load(args.dirs), args.pruners)
    except ValueError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    for model, table in tables.items():
        print(f"\n### {model}: mean ± std over seeds (n = seeds with a finite value)\n")
        print(markdown_table(table, index=True) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
