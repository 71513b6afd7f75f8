"""``pathsweep analyze DIR [DIR ...] [--report OUT]``: print key tables, write the report.

The orchestrator's ``pathsweep`` CLI dispatches ``analyze`` here; ``argv`` is what follows the
word ``analyze``. Exit status: 0 when whatever the rows allow was reported (an empty study or
one without trained metrics included: a message says what is missing), 2 for a bad command
line, a path that does not exist, a directory that holds no study, or a ``--report`` directory
that is neither new, empty, nor an earlier report (one line on stderr, no traceback).

A report directory is marked by the file ``.pathsweep-report``; only a directory with that
marker is overwritten, so ``--report`` never replaces files of anything else.
"""

from __future__ import annotations

import argparse
import sys
import warnings
from collections.abc import Sequence
from pathlib import Path

import pandas as pd
from rich.console import Console
from rich.table import Table

from analysis.io import load, load_specs, study_dirs
from analysis.pipeline import Analysis, analyze
from analysis.report import correlation_groups, correlation_table, fmt, write_report
from analysis.tables import aggregation_label, method_table

PROG = "pathsweep analyze"
MAX_GROUPS_PRINTED = 6
REPORT_MARKER = ".pathsweep-report"


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog=PROG,
        description="Rank correlations of data-free Path Kernel statistics with trained "
        "metrics, method tables, layer collapse and Optuna views of pathsweep studies.")
    p.add_argument("dirs", nargs="+", metavar="DIR",
                   help="study directory (DIR/trials/*.parquet) or Parquet file")
    p.add_argument("--report", metavar="OUT", type=Path, default=None,
                   help="write OUT/report.md with tables (CSV) and figures (PNG)")
    p.add_argument("--no-figures", action="store_true", help="skip the PNG figures")
    p.add_argument("--resamples", type=_non_negative, default=1000, metavar="N",
                   help="bootstrap resamples per interval (default 1000; 0: asymptotic)")
    p.add_argument("--seed", type=int, default=0, help="seed of resampling and random baseline")
    return p


def _non_negative(text: str) -> int:
    value = int(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"N >= 0 must hold, but got {value}")
    return value


def _rich_table(df: pd.DataFrame, title: str, index: bool = False) -> Table:
    frame = df.reset_index() if index else df
    table = Table(title=title, title_justify="left")
    for column in frame.columns:
        table.add_column(str(column), overflow="fold")
    for row in frame.itertuples(index=False):
        table.add_row(*(fmt(v) for v in row))
    return table


def _interval(value: float, low: float, high: float) -> str:
    if pd.isna(value):
        return "—"
    return f"{fmt(value)} [{fmt(low)}, {fmt(high)}]"


def _print(console: Console, a: Analysis) -> None:
    df = a.rows
    studies = ", ".join(sorted(df["study"].astype(str).unique())) if "study" in df else "?"
    console.print(f"[bold]{len(df)} trial rows[/bold] from {studies}; "
                  f"trained metrics: {', '.join(a.trained) or 'none'}")
    for message in a.messages:
        console.print(f"[yellow]•[/yellow] {message}")
    groups = correlation_groups(a.correlations)
    if len(groups) > MAX_GROUPS_PRINTED:
        console.print(f"{len(groups)} correlation groups; printing the first "
                      f"{MAX_GROUPS_PRINTED} (all are in the report).")
    for label, group in groups[:MAX_GROUPS_PRINTED]:
        target = a.trained[0]
        rows = group[group["target"] == target]
        table = pd.concat([correlation_table(rows), correlation_table(rows, "kendall")], axis=1)
        table.columns = [f"spearman {target}", f"kendall {target}"]
        console.print(_rich_table(table, f"Rank correlation with {target}: {label}", index=True))
    if not a.validation.empty:
        v = a.validation
        table = pd.DataFrame({
            "study": v["study"], "target": v["target"],
            "top/random": [f"{t}/{r}" for t, r in zip(v["n_top"], v["n_random"], strict=True)],
            "top − random [95% CI]": [_interval(d, lo, hi) for d, lo, hi in zip(
                v["difference"], v["difference_low"], v["difference_high"], strict=True)],
            "hit rate": v["hit_rate"], "verdict": v["verdict"]})
        console.print(_rich_table(table, "Validation: the objective's top-k vs random-k"))
    for metric, summary in list(a.methods.items())[:1]:
        if not summary.empty:
            over = aggregation_label(summary)
            console.print(_rich_table(method_table(summary), f"{metric}: mean ± std over {over}",
                                      index=True))
    if not a.critical.empty:
        hidden = ("critical_density", "note", "max_tested_compression", "censored")
        cols = [c for c in a.critical.columns if c not in hidden
                and not (c.startswith("param_") and a.critical[c].nunique() <= 1)]
        console.print(_rich_table(a.critical[cols], "Critical compression (largest tested "
                                  "compression below the first collapse)"))
        for pruner, note in zip(a.critical["pruner"], a.critical["note"], strict=True):
            if note:
                console.print(f"  {pruner!s}: {note!s}")
    if not a.importances.empty:
        top = a.importances.sort_values("importance", ascending=False).groupby(
            ["study", "target"], sort=True).head(5)
        console.print(_rich_table(top, "Parameter importances (top 5 per study and target)"))
    for study, front in a.pareto.items():
        console.print(f"Pareto front of {study}: {len(front)} non-dominated trials")


def _not_a_study(path: Path) -> bool:
    """A directory with no study in it or below (no ``spec.yaml``, ``trials/`` or Parquet)."""
    if not path.is_dir():
        return False
    return not study_dirs([path]) and next(path.rglob("*.parquet"), None) is None


def _report_dir_problem(report: Path) -> str | None:
    """Why ``report`` must not be written, or None: it is new, empty, or an earlier report."""
    if report.exists() and not report.is_dir():
        return f"--report {str(report)!r} is a file, not a directory"
    if report.is_dir() and any(report.iterdir()) and not (report / REPORT_MARKER).is_file():
        return (f"--report {str(report)!r} is not empty and is not a pathsweep report (no "
                f"{REPORT_MARKER} file): choose a new or empty directory")
    return None


def main(argv: Sequence[str] | None = None) -> int:
    """Run ``pathsweep analyze``; returns the exit status.

    Args:
        argv: arguments after ``analyze`` (default: ``sys.argv[1:]``).
    """
    try:
        args = _parser().parse_args(list(argv) if argv is not None else None)
    except SystemExit as stop:  # argparse already printed usage and the error
        return int(stop.code or 0)
    missing = [d for d in args.dirs if not Path(d).exists()]
    if missing:
        print(f"{PROG}: no such study directory or Parquet file: {missing[0]}", file=sys.stderr)
        return 2
    empty = [d for d in args.dirs if _not_a_study(Path(d))]
    if empty:
        print(f"{PROG}: {empty[0]} is not a pathsweep study directory (no spec.yaml, trials/ "
              "or Parquet file in it or below)", file=sys.stderr)
        return 2
    problem = _report_dir_problem(args.report) if args.report is not None else None
    if problem:
        print(f"{PROG}: {problem}", file=sys.stderr)
        return 2
    console = Console(highlight=False)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        df, specs = load(args.dirs), load_specs(args.dirs)
        result = analyze(df, specs, n_resamples=args.resamples, seed=args.seed)
    for w in caught:
        print(f"{PROG}: warning: {w.message}", file=sys.stderr)
    if df.empty:
        console.print(f"No trial rows in {', '.join(args.dirs)}: nothing to analyse yet "
                      "(looked for DIR/trials/*.parquet).")
    else:
        _print(console, result)
    if args.report is not None:
        args.report.mkdir(parents=True, exist_ok=True)
        (args.report / REPORT_MARKER).write_text("written by pathsweep analyze\n")
        path = write_report(result, args.report, [str(d) for d in args.dirs],
                            figures=not args.no_figures)
        console.print(f"Report written to {path}")
    return 0


