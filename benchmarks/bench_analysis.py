"""Benchmark: load and analyse 100,000 synthetic trial rows (issue 4: ≤ 10 s here).

Writes ``--studies`` synthetic studies (several Parquet files each, slightly different columns
so the schemas must be unified) to a temporary directory, then times each stage of
``analysis``: load, rank correlations with bootstrap intervals, validation hit rate, method
tables, layer collapse, parameter importances, Pareto fronts and the report.

    python benchmarks/bench_analysis.py                 # defaults below
    python benchmarks/bench_analysis.py --figures       # the report with PNG figures
    python benchmarks/bench_analysis.py --trained-fraction 1 --resamples 0   # worst case

Bootstrap size: the cost of the correlation intervals is about
``groups x predictors x targets x resamples`` calls of ``scipy.stats.kendalltau`` (~0.1 ms
each, whatever n up to ~1,000) plus cheaper vectorised Spearman work, so ``--resamples`` is the
knob; groups larger than ``--max-bootstrap-rows`` get asymptotic (Fisher-z) intervals.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import pyarrow.parquet as pq

import analysis
from analysis import collapse, pipeline, synthetic
from analysis.report import write_report


def _args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--rows", type=int, default=100_000, help="search rows in all (default 100000)")
    p.add_argument("--studies", type=int, default=4)
    p.add_argument("--files-per-study", type=int, default=5)
    p.add_argument(
        "--trained-fraction",
        type=float,
        default=0.05,
        help="fraction of search rows with trained metrics (default 0.05)",
    )
    p.add_argument("--validate-k", type=int, default=50, help="top-k and random-k per study")
    p.add_argument("--resamples", type=int, default=50, help="bootstrap resamples (default 50)")
    p.add_argument("--max-bootstrap-rows", type=int, default=5000)
    p.add_argument("--figures", action="store_true", help="draw the PNG figures as well")
    p.add_argument("--budget", type=float, default=10.0, help="seconds allowed (default 10)")
    return p.parse_args(argv)


def _write(root: Path, args: argparse.Namespace) -> list[Path]:
    dirs = []
    per_study = args.rows // args.studies
    for i in range(args.studies):
        objectives = [("log_path_kernel_trace", "maximize")]
        if i % 2:  # every other study is multi-objective: a Pareto front to compute
            objectives.append(("num_params", "minimize"))
        study = synthetic.write_study(
            root / f"study-{i}",
            per_study,
            files=args.files_per_study,
            seed=i,
            model=("fc", "conv")[i % 2],
            trained_fraction=args.trained_fraction,
            validate_k=args.validate_k,
            objectives=objectives,
        )
        if i == args.studies - 1:  # a study written by an older version: fewer columns
            for f in (study / "trials").glob("*.parquet"):
                table = pq.read_table(f)
                pq.write_table(table.drop_columns(["layer_density", "log_num_paths"]), f)
        dirs.append(study)
    return dirs


def _timed(timings: dict[str, float], name: str, fn: Callable[[], Any]) -> Any:
    start, cpu = time.perf_counter(), time.process_time()
    out = fn()
    timings[name] = time.perf_counter() - start
    CPU[name] = time.process_time() - cpu
    return out


CPU: dict[str, float] = {}  # process CPU seconds per stage: less sensitive to a busy machine


def main(argv: list[str] | None = None) -> int:
    args = _args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        start = time.perf_counter()
        dirs = _write(root, args)
        print(
            f"wrote {args.rows} search rows (+ validation rows) in "
            f"{args.studies * args.files_per_study} files: {time.perf_counter() - start:.1f} s"
        )
        t: dict[str, float] = {}
        total = time.perf_counter()
        df = _timed(t, "load (pyarrow.dataset, unify schemas)", lambda: analysis.load(dirs))
        specs = analysis.load_specs(dirs)
        corr = _timed(
            t,
            f"rank correlations ({args.resamples} resamples)",
            lambda: analysis.rank_correlations(
                df, n_resamples=args.resamples, max_bootstrap_rows=args.max_bootstrap_rows
            ),
        )
        _timed(
            t,
            "validation hit rate",
            lambda: analysis.validation_hit_rate(df, n_resamples=args.resamples),
        )
        _timed(
            t,
            "method tables",
            lambda: {
                m: analysis.method_summary(df, m) for m in analysis.columns.trained_metrics(df)
            },
        )
        _timed(
            t,
            "layer collapse (critical compression + per-layer table)",
            lambda: (
                analysis.critical_compression(df),
                analysis.layer_density_table(df),
                collapse.collapse_rate(df),
            ),
        )
        objectives = pipeline._objectives(specs, sorted(df["study"].unique()), [])
        trained = analysis.columns.trained_metrics(df)
        _timed(
            t,
            "parameter importances (PED-ANOVA, <= 1000 trials per target)",
            lambda: pipeline._importances(df, specs, objectives, trained, 0),
        )
        _timed(t, "Pareto fronts", lambda: pipeline._pareto(df, objectives))
        result = _timed(
            t,
            "analyze() again, end to end",
            lambda: analysis.analyze(
                df, specs, n_resamples=args.resamples, max_bootstrap_rows=args.max_bootstrap_rows
            ),
        )
        out = root / "report"
        _timed(
            t,
            f"write report ({'with' if args.figures else 'without'} figures)",
            lambda: write_report(result, out, [str(d) for d in dirs], figures=args.figures),
        )
        elapsed = time.perf_counter() - total
    end_to_end = (
        t["load (pyarrow.dataset, unify schemas)"]
        + t["analyze() again, end to end"]
        + t[f"write report ({'with' if args.figures else 'without'} figures)"]
    )
    report = f"write report ({'with' if args.figures else 'without'} figures)"
    cpu_total = sum(
        CPU[k]
        for k in ("load (pyarrow.dataset, unify schemas)", "analyze() again, end to end", report)
    )
    trained_rows = int(df["test_accuracy"].notna().sum())
    groups = corr.drop_duplicates([c for c in corr.columns if c.startswith("param_")]).shape[0]
    print(
        f"{len(df)} rows ({trained_rows} trained) in {groups} correlation groups; "
        f"{len(corr)} correlation rows"
    )
    width = max(len(k) for k in t)
    print(f"  {'stage':<{width}}  {'wall':>8}  {'cpu':>8}")
    for name, seconds in sorted(t.items(), key=lambda kv: -kv[1]):
        print(f"  {name:<{width}}  {seconds:6.2f} s  {CPU[name]:6.2f} s")
    print(
        f"load + analyze + report (each stage once): {end_to_end:.2f} s wall, "
        f"{cpu_total:.2f} s CPU (budget {args.budget:.0f} s); all stages above incl. "
        f"repeats: {elapsed:.2f} s"
    )
    return 0 if end_to_end <= args.budget else 1


if __name__ == "__main__":
    raise SystemExit(main())
