"""Optuna views: parameter importances and Pareto fronts of a study.

Importances come from the study's Optuna journal (``DIR/optuna.journal``) when there is one;
otherwise an in-memory Optuna study is rebuilt from the Parquet rows. Either way
``optuna.importance.get_param_importances`` does the work, so a Parquet-only study gets the
same view. Which SynFlow-family knobs (path exponent p, score exponent a, iterations, schedule,
input; Gebhart, Saxena & Schrater 2021) move an objective is the question this answers.
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import optuna
import pandas as pd
from optuna.storages import JournalStorage
from optuna.storages.journal import JournalFileBackend

from analysis import columns as C

Objective = tuple[str, str]  # (metric, "maximize" | "minimize")
DIRECTIONS = ("maximize", "minimize")


def objectives_from_spec(spec: Mapping[str, Any] | None) -> list[Objective]:
    """The ``objectives:`` of a study spec as (metric, direction) pairs; [] when absent.

    Raises:
        ValueError: an objective has no metric or an unknown direction.
    """
    out = []
    for item in (spec or {}).get("objectives") or []:
        metric = item.get("metric") if isinstance(item, Mapping) else None
        direction = str(item.get("direction", "maximize")) if isinstance(item, Mapping) else ""
        if not metric or direction not in DIRECTIONS:
            raise ValueError(f"objectives need a metric and a direction in {DIRECTIONS}, but got {item!r}")
        out.append((str(metric), direction))
    return out


def _check(objectives: Sequence[Objective]) -> None:
    if not objectives:
        raise ValueError("at least one objective must be given, but got none")
    for metric, direction in objectives:
        if direction not in DIRECTIONS:
            raise ValueError(f"direction must be one of {DIRECTIONS}, but got {direction=} for {metric}")


def pareto_front(df: pd.DataFrame, objectives: Sequence[Objective]) -> pd.DataFrame:
    """The finished rows no other row dominates over ``objectives``.

    Row a dominates b when a is at least as good on every objective and better on one. Rows
    with a missing or non-finite objective are left out; equal rows are both on the front.

    Args:
        df: trial rows.
        objectives: (metric, "maximize" | "minimize") pairs, e.g. ``objectives_from_spec``.

    Returns:
        The front's rows of ``df``, sorted by the first objective (best first).
    """
    _check(objectives)
    missing = [m for m, _ in objectives if m not in df.columns]
    if missing:
        raise ValueError(f"objectives must be columns, but {missing} are not")
    rows = C.complete(df)
    names = [m for m, _ in objectives]
    values = C.numeric(rows, names)
    ok = np.isfinite(values.to_numpy()).all(axis=1)
    rows, values = rows[ok], values[ok]
    signs = np.array([-1.0 if d == "maximize" else 1.0 for _, d in objectives])
    cost = values.to_numpy() * signs  # minimise every column
    keep = _non_dominated(cost)
    return rows.iloc[keep].sort_values(names[0], ascending=objectives[0][1] == "minimize")


def _non_dominated(cost: np.ndarray) -> np.ndarray:
    """Indices of the non-dominated rows of ``cost`` (all columns minimised).

    Rows are visited in lexicographic order, so a row can only be dominated by an earlier one,
    and (by transitivity) by an earlier one already on the front.
    """
    if cost.shape[1] == 2:
        return _non_dominated_2d(cost)
    order = np.lexsort(cost.T[::-1])
    front: list[int] = []
    for i in order:
        if front:
            f = cost[front]
            dominated = (f <= cost[i]).all(axis=1) & (f < cost[i]).any(axis=1)
            if dominated.any():
                continue
        front.append(int(i))
    return np.sort(np.array(front, dtype=int))


def _non_dominated_2d(cost: np.ndarray) -> np.ndarray:
    """Two objectives in O(n log n): after a lexicographic sort of the distinct points, a point
    is dominated exactly when an earlier distinct point has a second cost no larger."""
    points, inverse = np.unique(cost, axis=0, return_inverse=True)
    earlier_min = np.minimum.accumulate(np.concatenate([[np.inf], points[:-1, 1]]))
    front_point = earlier_min > points[:, 1]
    return np.flatnonzero(front_point[inverse.ravel()])


def _spec_distribution(spec_entry: Any, values: pd.Series) -> optuna.distributions.BaseDistribution | None:
    if isinstance(spec_entry, Mapping) and {"low", "high"} <= set(spec_entry):
        low, high, log = spec_entry["low"], spec_entry["high"], bool(spec_entry.get("log", False))
        if values.min() < low or values.max() > high:
            return None  # the rows left the spec's range: infer from data instead
        if isinstance(low, int) and isinstance(high, int) and (values % 1 == 0).all():
            return optuna.distributions.IntDistribution(int(low), int(high), log=log)
        return optuna.distributions.FloatDistribution(float(low), float(high), log=log)
    return None


def infer_distributions(
    rows: pd.DataFrame, spec: Mapping[str, Any] | None = None
) -> dict[str, optuna.distributions.BaseDistribution]:
    """Optuna distributions for the ``param_*`` columns that vary across ``rows``.

    Ranges come from the spec's ``search:`` where given, else from the data (integer-valued
    numbers become ``IntDistribution``, other numbers ``FloatDistribution``, the rest
    ``CategoricalDistribution`` over the values seen). Keys drop the ``param_`` prefix.
    """
    search = (spec or {}).get("search") or {}
    out: dict[str, optuna.distributions.BaseDistribution] = {}
    for column in (c for c in rows.columns if c.startswith("param_")):
        name = column.removeprefix("param_")
        values = C.hashable(rows[column]).dropna()
        if values.nunique() < 2:
            continue
        if pd.api.types.is_numeric_dtype(values) and not pd.api.types.is_bool_dtype(values):
            numbers = values.astype(float)
            dist = _spec_distribution(search.get(name), numbers)
            if dist is None and (numbers % 1 == 0).all():
                dist = optuna.distributions.IntDistribution(int(numbers.min()), int(numbers.max()))
            out[name] = dist or optuna.distributions.FloatDistribution(numbers.min(), numbers.max())
        else:
            out[name] = optuna.distributions.CategoricalDistribution(sorted(values.unique(), key=str))
    return out


def _trial(params_row: Mapping[Any, Any], targets: Mapping[Any, float],
           dists: Mapping[str, optuna.distributions.BaseDistribution]) -> optuna.trial.FrozenTrial:
    params: dict[str, Any] = {}
    for name, dist in dists.items():
        v = params_row[f"param_{name}"]
        if v is None or (isinstance(v, float) and np.isnan(v)):
            continue  # conditional parameter absent from this trial
        if isinstance(dist, optuna.distributions.IntDistribution):
            v = int(v)
        elif isinstance(dist, optuna.distributions.FloatDistribution):
            v = float(v)
        elif not isinstance(v, (str, int, float, bool)):
            v = str(v)
        params[name] = v
    return optuna.trial.create_trial(value=0.0, params=params, user_attrs=dict(targets),
                                     distributions={k: dists[k] for k in params})


def _sample(rows: pd.DataFrame, targets: Sequence[str], max_trials: int, seed: int) -> pd.DataFrame:
    """Up to ``max_trials`` rows with a finite value per target (seeded), united."""
    keep = pd.Series(False, index=rows.index)
    for target in targets:
        values = pd.to_numeric(rows[target], errors="coerce").astype(float).to_numpy()
        candidates = rows.index[np.isfinite(values)]
        if len(candidates) > max_trials:
            candidates = pd.Index(np.random.default_rng(seed).choice(candidates, max_trials,
                                                                     replace=False))
        keep[candidates] = True
    return rows[keep]


def study_from_rows(
    df: pd.DataFrame,
    targets: Sequence[str],
    *,
    spec: Mapping[str, Any] | None = None,
    max_trials: int = 1000,
    seed: int = 0,
) -> optuna.Study | None:
    """An in-memory Optuna study whose trials are the finished rows.

    Each trial's ``user_attrs`` hold the ``targets`` values of its row (NaN where missing);
    its ``value`` is a placeholder 0. Per target at most ``max_trials`` rows with a finite
    value are used (a seeded sample), which bounds the cost of building the study (~0.2 ms a
    trial) and of the importance evaluator. None when no varying parameter or < 2 rows.
    """
    rows = C.complete(df)
    targets = [t for t in targets if t in rows.columns]
    if not targets:
        return None
    rows = _sample(rows, targets, max_trials, seed)
    dists = infer_distributions(rows, spec)
    if len(rows) < 2 or not dists:
        return None
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(direction=optuna.study.StudyDirection.MINIMIZE)
    params = rows[[f"param_{name}" for name in dists]].to_dict("records")
    values = C.numeric(rows, targets).to_dict("records")
    study.add_trials([_trial(p, v, dists) for p, v in zip(params, values, strict=True)])
    return study


def _importances(study: optuna.Study, target: Any = None) -> dict[str, float]:
    evaluator = optuna.importance.PedAnovaImportanceEvaluator()
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # experimental-feature and small-sample warnings
            return optuna.importance.get_param_importances(study, evaluator=evaluator, target=target)
    except (ValueError, RuntimeError) as err:
        warnings.warn(f"parameter importances failed: {err}", stacklevel=3)
        return {}


def _lower_is_better(getter: Any, maximize: bool) -> Any:
    # PED-ANOVA ranks a ``target`` callable as lower-is-better: negate maximised metrics.
    return (lambda t: -getter(t)) if maximize else getter


def param_importances(
    df: pd.DataFrame,
    targets: Sequence[str],
    *,
    spec: Mapping[str, Any] | None = None,
    journal: str | Path | None = None,
    study_name: str | None = None,
    max_trials: int = 1000,
    seed: int = 0,
) -> pd.DataFrame:
    """Parameter importances (``optuna.importance``, PED-ANOVA) for each target metric.

    Spec objectives found in ``journal`` (an Optuna ``JournalStorage`` file) are read from it;
    every other target, or all of them without a journal, from the Parquet rows
    (``study_from_rows``). Directions come from the spec's objectives, else from the metric
    (accuracy up, losses down, data-free statistics up).

    Returns:
        Long table: ``target``, ``param``, ``importance`` (sums to 1 per target), ``source``.
    """
    directions = dict(objectives_from_spec(spec))
    found = _journal_importances(journal, study_name, objectives_from_spec(spec))
    rest = [t for t in targets if t not in found]
    study = study_from_rows(df, rest, spec=spec, max_trials=max_trials, seed=seed) if rest else None
    out = []
    for target in targets:
        source, imps = "journal", found.get(target)
        if imps is None:
            maximize = directions.get(target, "maximize" if C.higher_is_better(target)
                                      else "minimize") == "maximize"
            getter = _lower_is_better(lambda t, name=target: t.user_attrs.get(name, np.nan),
                                      maximize)
            source, imps = "parquet", (_importances(study, getter) if study else {})
        out += [{"target": target, "param": p, "importance": v, "source": source}
                for p, v in imps.items()]
    return pd.DataFrame(out, columns=["target", "param", "importance", "source"])


def _journal_importances(journal: str | Path | None, study_name: str | None,
                         objectives: list[Objective]) -> dict[str, dict[str, float]]:
    if journal is None or not Path(journal).is_file() or not objectives:
        return {}
    try:
        storage = JournalStorage(JournalFileBackend(str(journal)))
        names = optuna.get_all_study_names(storage)
        name = study_name if study_name in names else (names[0] if len(names) == 1 else None)
        if name is None:
            return {}
        study = optuna.load_study(study_name=name, storage=storage)
    except Exception as err:  # any unreadable journal falls back to the Parquet rows
        warnings.warn(f"could not read Optuna journal {journal}: {err}", stacklevel=3)
        return {}
    if len(study.directions) != len(objectives):
        return {}
    if len(objectives) == 1:
        return {objectives[0][0]: _importances(study)}  # the study's own direction
    return {m: _importances(study, _lower_is_better(lambda t, i=i: t.values[i], d == "maximize"))
            for i, (m, d) in enumerate(objectives)}
