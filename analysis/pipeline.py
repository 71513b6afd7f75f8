"""One call that runs every analysis on loaded rows and says what could not be run."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from analysis import columns as C
from analysis.collapse import collapse_rate, critical_compression, layer_density_table
from analysis.correlations import within_and_pooled
from analysis.optuna_views import Objective, objectives_from_spec, param_importances, pareto_front
from analysis.tables import method_summary
from analysis.validation import validation_hit_rate

DEFAULT_OBJECTIVE = "log_path_kernel_trace"


@dataclass(frozen=True)
class Analysis:
    """Every result of ``analyze``; empty frames where the data did not allow one.

    Attributes:
        rows: the loaded trial rows.
        trained: trained metrics present in the rows.
        correlations: ``rank_correlations`` of data-free statistics with trained metrics,
            within each density and pooled over densities (``within_and_pooled``).
        validation: ``validation_hit_rate`` per study and trained metric.
        methods: ``method_summary`` per metric (trained metrics, else the default objective).
        critical: ``critical_compression`` per pruner.
        layers: ``layer_density_table`` (pruner, density) × layer.
        collapse_rates: fraction of rows with a collapsed layer per pruner and density.
        importances: ``param_importances`` with a ``study`` column.
        pareto: Pareto-front rows per multi-objective study.
        objectives: (metric, direction) pairs per study, from its spec.
        messages: what is missing and which analyses were therefore skipped.
    """

    rows: pd.DataFrame
    trained: list[str]
    correlations: pd.DataFrame
    validation: pd.DataFrame
    methods: dict[str, pd.DataFrame]
    critical: pd.DataFrame
    layers: pd.DataFrame
    collapse_rates: pd.DataFrame
    importances: pd.DataFrame
    pareto: dict[str, pd.DataFrame]
    objectives: dict[str, list[Objective]]
    messages: list[str] = field(default_factory=list)


def _studies(df: pd.DataFrame) -> list[tuple[str, pd.DataFrame]]:
    if "study" not in df.columns:
        return [("", df)] if len(df) else []
    return [(str(name), g) for name, g in df.groupby(df["study"].astype(str), sort=True)]


def _objectives(specs: Mapping[str, Mapping[str, Any]], studies: list[str],
                messages: list[str]) -> dict[str, list[Objective]]:
    out = {}
    for study in studies:
        try:
            out[study] = objectives_from_spec(specs.get(study))
        except ValueError as err:
            messages.append(f"Study {study!r}: spec objectives ignored: {err}")
            out[study] = []
    return out


def _importances(df: pd.DataFrame, specs: Mapping[str, Mapping[str, Any]],
                 objectives: dict[str, list[Objective]], trained: list[str],
                 seed: int) -> pd.DataFrame:
    frames = []
    for study, rows in _studies(df):
        metrics = [m for m, _ in objectives.get(study, [])] or [DEFAULT_OBJECTIVE]
        targets = C.present(rows, dict.fromkeys([*metrics, *trained[:1]]))
        spec = specs.get(study)
        journal = Path(spec["_dir"]) / "optuna.journal" if spec and "_dir" in spec else None
        imp = param_importances(rows, targets, spec=spec, journal=journal, study_name=study,
                                seed=seed)
        frames.append(imp.assign(study=study))
    if not frames:
        return pd.DataFrame(columns=["study", "target", "param", "importance", "source"])
    out = pd.concat(frames, ignore_index=True)
    return out[["study", "target", "param", "importance", "source"]]


def _pareto(df: pd.DataFrame, objectives: dict[str, list[Objective]]) -> dict[str, pd.DataFrame]:
    fronts = {}
    for study, rows in _studies(df):
        objs = objectives.get(study, [])
        if len(objs) >= 2 and all(m in rows.columns for m, _ in objs):
            fronts[study] = pareto_front(rows, objs)
    return fronts


def _messages(df: pd.DataFrame, result: Analysis) -> list[str]:
    msgs = []
    done = C.complete(df)
    if df.empty:
        return ["No trial rows found: nothing to analyse (no trials/*.parquet written yet)."]
    if done.empty:
        states = df["state"].astype(str).value_counts().to_dict() if "state" in df else {}
        errors = df["error"].dropna().astype(str).value_counts().head(3).to_dict() \
            if "error" in df else {}
        return [f"No finished (COMPLETE) trials, so nothing to analyse; states seen: {states}"
                + (f"; most frequent errors: {errors}." if errors else ".")]
    if not result.trained:
        msgs.append(
            "No trained metrics (" + ", ".join(C.TRAINED) + ") in these rows: rank correlations, "
            "trained-metric method tables and the validation hit rate need trained trials "
            "(set `train: {epochs: N}` or `validate:` in the spec). Reported instead: the "
            "data-free statistics, layer collapse and parameter importances.")
    elif result.validation.empty:
        msgs.append("No validation pass (phase validate-top / validate-random): no hit rate.")
    if result.critical.empty:
        msgs.append("No density or layer_collapse / layer_density column: no layer-collapse analysis.")
    if result.importances.empty and not done.empty:
        msgs.append("No varying param_* column with a finite objective: no parameter importances.")
    return msgs


def analyze(
    df: pd.DataFrame,
    specs: Mapping[str, Mapping[str, Any]] | None = None,
    *,
    n_resamples: int = 1000,
    seed: int = 0,
    max_bootstrap_rows: int = 5000,
) -> Analysis:
    """Run every analysis that the columns of ``df`` allow.

    Args:
        df: trial rows (``analysis.load``).
        specs: study specs by study name (``analysis.load_specs``); give objectives, search
            ranges and the Optuna journal location.
        n_resamples: bootstrap resamples for correlation and hit-rate intervals.
        seed: seed of every resampling and of the random baseline score.
        max_bootstrap_rows: correlation groups above this size use asymptotic intervals.
    """
    specs = specs or {}
    trained = C.trained_metrics(C.complete(df)) if not df.empty else []
    notes: list[str] = []
    objectives = _objectives(specs, [s for s, _ in _studies(df)], notes)
    metrics = trained or C.present(df, [DEFAULT_OBJECTIVE])
    result = Analysis(
        rows=df,
        trained=trained,
        correlations=(within_and_pooled(df, n_resamples=n_resamples, seed=seed,
                                        max_bootstrap_rows=max_bootstrap_rows)
                      if trained else pd.DataFrame()),
        validation=validation_hit_rate(df, n_resamples=n_resamples, seed=seed) if trained
        else pd.DataFrame(),
        methods={m: method_summary(df, m) for m in metrics},
        critical=critical_compression(df) if not df.empty else pd.DataFrame(),
        layers=layer_density_table(df) if not df.empty else pd.DataFrame(),
        collapse_rates=collapse_rate(df) if not df.empty else pd.DataFrame(),
        importances=_importances(df, specs, objectives, trained, seed),
        pareto=_pareto(df, objectives),
        objectives=objectives,
    )
    result.messages.extend(notes + _messages(df, result))
    return result
