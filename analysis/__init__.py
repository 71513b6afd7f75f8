"""pathsweep analysis: from Parquet trial rows to rank correlations, tables, plots and a report.

Reads the Parquet results only (never ``orchestrator``). It answers the question raised by
Gebhart, Saxena & Schrater (2021), "A Unified Paths Perspective for Pruning at Initialization":
do data-free Path Kernel statistics predict how a pruned network trains?

    import analysis
    df = analysis.load("runs/my-study")                    # one row per trial attempt
    corr = analysis.rank_correlations(df)                  # Spearman/Kendall + bootstrap CIs
    from analysis.report import build_report
    build_report(["runs/my-study"], "runs/my-study/report")  # report.md, CSVs, PNGs
"""

from __future__ import annotations

from analysis.collapse import critical_compression, layer_density_table, parse_layer_density
from analysis.correlations import rank_correlations, with_random_score
from analysis.io import load, load_specs, parquet_files
from analysis.optuna_views import objectives_from_spec, param_importances, pareto_front
from analysis.pipeline import Analysis, analyze
from analysis.tables import method_summary, method_table
from analysis.validation import validation_hit_rate

__all__ = [
    "Analysis",
    "analyze",
    "critical_compression",
    "layer_density_table",
    "load",
    "load_specs",
    "method_summary",
    "method_table",
    "objectives_from_spec",
    "param_importances",
    "pareto_front",
    "parquet_files",
    "parse_layer_density",
    "rank_correlations",
    "validation_hit_rate",
    "with_random_score",
]
