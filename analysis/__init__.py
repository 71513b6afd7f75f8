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

from importlib import import_module
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from analysis.collapse import critical_compression, layer_density_table, parse_layer_density
    from analysis.correlations import rank_correlations, with_random_score
    from analysis.io import load, load_specs, parquet_files
    from analysis.optuna_views import objectives_from_spec, param_importances, pareto_front
    from analysis.pipeline import Analysis, analyze
    from analysis.tables import method_summary, method_table
    from analysis.validation import validation_hit_rate

# Public names and their modules, imported on first use: ``analysis.schema`` (pyarrow only) is
# imported by the orchestrator, which must not pay for pandas, SciPy and Optuna to get it.
_LAZY: dict[str, str] = {
    "critical_compression": "analysis.collapse",
    "layer_density_table": "analysis.collapse",
    "parse_layer_density": "analysis.collapse",
    "rank_correlations": "analysis.correlations",
    "with_random_score": "analysis.correlations",
    "load": "analysis.io",
    "load_specs": "analysis.io",
    "parquet_files": "analysis.io",
    "objectives_from_spec": "analysis.optuna_views",
    "param_importances": "analysis.optuna_views",
    "pareto_front": "analysis.optuna_views",
    "Analysis": "analysis.pipeline",
    "analyze": "analysis.pipeline",
    "method_summary": "analysis.tables",
    "method_table": "analysis.tables",
    "validation_hit_rate": "analysis.validation",
}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'analysis' has no attribute {name!r}")
    value = getattr(import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_LAZY))


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
