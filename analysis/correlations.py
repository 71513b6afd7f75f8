"""Rank correlations between data-free statistics and trained metrics.

The question the paper raises (Gebhart, Saxena & Schrater 2021, "A Unified Paths Perspective
for Pruning at Initialization"): does a data-free Path Kernel statistic, such as the log trace
of the Path Kernel, predict how the pruned network trains? Each statistic is compared with the
baselines a proxy must beat (kept parameters, MACs and a seeded random score) by Spearman's rho
and Kendall's tau-b (scipy.stats) with paired bootstrap intervals (scipy.stats.bootstrap).
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence

import numpy as np
import pandas as pd
from scipy import stats

from analysis import columns as C

RESULT_COLUMNS = (
    "predictor", "target", "n", "spearman", "spearman_low", "spearman_high",
    "kendall", "kendall_low", "kendall_high", "interval", "note",
)
# Variances of atanh(r) for rank correlations (Fieller, Hartley & Pearson 1957).
_FISHER_VARIANCE = {"spearman": 1.06, "kendall": 0.437}
_FISHER_DOF = {"spearman": 3, "kendall": 4}
#: Density-column value of correlations pooled over densities.
POOLED = "all (pooled)"


def with_random_score(df: pd.DataFrame, seed: int = 0) -> pd.DataFrame:
    """``df`` plus a uniform random score per row, the "no information" baseline.

    The score is a keyed hash of ``study`` and ``trial_id`` when present, so a row keeps its
    score whatever other rows are loaded with it; otherwise it comes from
    ``numpy.random.default_rng(seed)``.
    """
    if "trial_id" in df.columns:
        key = f"pathsweep{seed % 10**7:07d}"
        ids = df["trial_id"].astype(str)
        if "study" in df.columns:
            ids = df["study"].astype(str) + "/" + ids
        hashed = pd.util.hash_pandas_object(ids, index=False, hash_key=key)
        score = hashed.to_numpy(dtype=np.uint64) / float(2**64)
    else:
        score = np.random.default_rng(seed).random(len(df))
    return df.assign(**{C.RANDOM_SCORE: score})


def unbiased_rows(df: pd.DataFrame) -> pd.DataFrame:
    """Finished rows a correlation may use, with the ``experiment`` column added.

    Validation top-k rows (``phase == "validate-top"``) are left out: they were chosen
    *because* they maximise the objective, so correlating the objective with anything over
    them is selection-biased (range restriction). Validation random-k rows are a random
    sample of the searched configurations and stay, as their own experiment ("validation"),
    never pooled with the search rows they re-run. The top-k are judged against the random-k
    by ``analysis.validation.validation_hit_rate`` instead.
    """
    rows = C.with_experiment(C.complete(df))
    if "phase" in rows.columns:
        rows = rows[rows["phase"].astype(str) != C.VALIDATE_TOP]
    return rows


def within_and_pooled(df: pd.DataFrame, **options: object) -> pd.DataFrame:
    """``rank_correlations`` within each density, plus pooled over densities.

    Density drives both the path statistics and training, so pooled correlations mostly
    measure density; the within-density ones are the test. Pooled rows carry
    ``POOLED`` in the density column (only when there are several densities).

    Args:
        df: trial rows.
        **options: passed to ``rank_correlations`` (not ``group_by``).
    """
    within = rank_correlations(df, **options)  # type: ignore[arg-type]
    rows = unbiased_rows(df)
    density = C.density_column(rows)
    if density is None or C.density_values(rows).nunique() < 2:
        return within
    keys = C.group_columns(rows, with_density=False)
    pooled = rank_correlations(df, group_by=keys, **options)  # type: ignore[arg-type]
    pooled.insert(len(keys), density, POOLED)
    within[density] = within[density].astype(object)
    return pd.concat([within, pooled], ignore_index=True)


def default_predictors(df: pd.DataFrame) -> list[str]:
    """Data-free statistics and baselines present in ``df`` (random score last)."""
    names = C.present(df, (*C.DATA_FREE, *C.BASELINES))
    return [*names, C.RANDOM_SCORE] if C.RANDOM_SCORE in df.columns else names


def _nan_row(predictor: str, target: str, n: int, note: str) -> dict[str, object]:
    return {"predictor": predictor, "target": target, "n": n, "spearman": np.nan,
            "spearman_low": np.nan, "spearman_high": np.nan, "kendall": np.nan,
            "kendall_low": np.nan, "kendall_high": np.nan, "interval": "", "note": note}


def _statistics(*arrays: np.ndarray, axis: int = -1) -> np.ndarray:
    """Spearman rho then Kendall tau of every predictor against the last array."""
    *predictors, target = arrays
    target_rank = stats.rankdata(target, axis=axis)
    rho = [stats.pearsonr(stats.rankdata(p, axis=axis), target_rank, axis=axis).statistic
           for p in predictors]
    tau = [stats.kendalltau(p, target, axis=axis).statistic for p in predictors]
    return np.stack(rho + tau)


def _bootstrap(
    x: np.ndarray, y: np.ndarray, n_resamples: int, level: float, seed: int
) -> tuple[np.ndarray, np.ndarray, str]:
    """Percentile intervals, shape (2, k): rows Spearman and Kendall, one column per predictor.

    Resamples where a column is constant give no rank correlation; they are dropped (and
    counted in the returned note) instead of turning the whole interval into NaN.
    """
    n, k = x.shape
    data = (*x.T, y)
    batch = max(1, min(n_resamples, 4_000_000 // (n * (k + 1))))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # constant resamples: handled below
        res = stats.bootstrap(data, _statistics, n_resamples=n_resamples, batch=batch,
                              vectorized=True, paired=True, confidence_level=level,
                              method="percentile", rng=np.random.default_rng(seed))
    dist = res.bootstrap_distribution.reshape(2 * k, -1)
    degenerate = np.isnan(dist).any(axis=0).sum()
    tail = 50 * (1 - level)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN rows stay NaN
        low, high = np.nanpercentile(dist, [tail, 100 - tail], axis=1)
    note = (f"{degenerate} of {n_resamples} resamples had a constant column (dropped)"
            if degenerate else "")
    return low.reshape(2, k), high.reshape(2, k), note


def _fisher(rho: np.ndarray, tau: np.ndarray, n: int, level: float) -> tuple[np.ndarray, np.ndarray]:
    """Asymptotic intervals through atanh, for groups too large to bootstrap quickly."""
    z = stats.norm.ppf(0.5 + level / 2)
    lows, highs = [], []
    for name, r in (("spearman", rho), ("kendall", tau)):
        se = np.sqrt(_FISHER_VARIANCE[name] / max(n - _FISHER_DOF[name], 1))
        centre = np.arctanh(np.clip(r, -1 + 1e-12, 1 - 1e-12))
        lows.append(np.tanh(centre - z * se))
        highs.append(np.tanh(centre + z * se))
    return np.stack(lows), np.stack(highs)


def _usable(values: pd.DataFrame, y: pd.Series, predictors: list[str]) -> tuple[list[str], list[dict]]:
    """Split predictors into correlatable ones and NaN rows that say why the rest are not."""
    ok, skipped = [], []
    for p in predictors:
        rows = values[p].notna()
        n = int(rows.sum())
        if n < 3:
            skipped.append(_nan_row(p, str(y.name), n, f"fewer than 3 rows with {p}"))
        elif values.loc[rows, p].nunique() < 2:
            skipped.append(_nan_row(p, str(y.name), n, f"constant {p}"))
        elif y[rows].nunique() < 2:
            skipped.append(_nan_row(p, str(y.name), n, f"constant {y.name}"))
        else:
            ok.append(p)
    return ok, skipped


def _rank_duplicates(values: pd.DataFrame) -> tuple[list[str], dict[str, str]]:
    """Columns with distinct ranks, and each rank-identical column's first twin.

    Rank correlations only see ranks, so e.g. ``effective_fraction`` (``effective_params``
    over a fixed total) gives exactly ``effective_params``'s result; it is computed once.
    """
    seen: dict[bytes, str] = {}
    copies: dict[str, str] = {}
    for name in values.columns:
        key = stats.rankdata(values[name].to_numpy(dtype=float)).tobytes()
        if key in seen:
            copies[name] = seen[key]
        else:
            seen[key] = name
    return list(seen.values()), copies


def _correlate(
    x: pd.DataFrame, y: pd.Series, n_resamples: int, level: float, seed: int, max_rows: int
) -> list[dict[str, object]]:
    """Rank correlations of the columns of ``x`` (no NaN, none constant) with ``y``."""
    xv, yv = x.to_numpy(dtype=float), y.to_numpy(dtype=float)
    rho = np.array([stats.spearmanr(c, yv).statistic for c in xv.T])
    tau = np.array([stats.kendalltau(c, yv).statistic for c in xv.T])
    n, note = len(yv), ""
    if n_resamples > 0 and n <= max_rows:
        low, high, note = _bootstrap(xv, yv, n_resamples, level, seed)
        note = f"{y.name}: {note}" if note else ""
        interval = f"bootstrap percentile, {n_resamples} resamples"
    else:
        low, high = _fisher(rho, tau, n, level)
        interval = "fisher-z (asymptotic)"
    return [
        {"predictor": p, "target": str(y.name), "n": n, "spearman": rho[i],
         "spearman_low": low[0, i], "spearman_high": high[0, i], "kendall": tau[i],
         "kendall_low": low[1, i], "kendall_high": high[1, i], "interval": interval,
         "note": note}
        for i, p in enumerate(x.columns)
    ]


def _target_rows(
    group: pd.DataFrame, predictors: list[str], target: str, opts: dict
) -> list[dict[str, object]]:
    y = pd.to_numeric(group[target], errors="coerce").astype(float)
    keep = y.notna().to_numpy()
    values = C.numeric(group, predictors)[keep]
    y = y[keep]
    if len(y) < 3:
        return [_nan_row(p, target, len(y), f"fewer than 3 rows with {target}") for p in predictors]
    ok, rows = _usable(values, y, predictors)
    # Predictors sharing a missing-value pattern share one bootstrap (one set of resamples).
    patterns: dict[bytes, list[str]] = {}
    for p in ok:
        patterns.setdefault(values[p].notna().to_numpy().tobytes(), []).append(p)
    for names in patterns.values():
        mask = values[names[0]].notna()
        distinct, copies = _rank_duplicates(values.loc[mask, names])
        found = _correlate(values.loc[mask, distinct], y[mask], **opts)
        by_name = {r["predictor"]: r for r in found}
        rows += found + [by_name[src] | {"predictor": p, "note": f"{p} has the same ranks as {src}"}
                         for p, src in copies.items()]
    order = {p: i for i, p in enumerate(predictors)}
    return sorted(rows, key=lambda r: order[str(r["predictor"])])


def rank_correlations(
    df: pd.DataFrame,
    *,
    predictors: Sequence[str] | None = None,
    targets: Sequence[str] | None = None,
    group_by: Sequence[str] | None = None,
    n_resamples: int = 1000,
    confidence_level: float = 0.95,
    seed: int = 0,
    max_bootstrap_rows: int = 5000,
) -> pd.DataFrame:
    """Spearman and Kendall correlations of predictors with trained metrics, per group.

    Only finished (``COMPLETE``) rows count, and validation top-k rows never do (see
    :func:`unbiased_rows`): they were chosen because they maximise the objective, so a
    correlation over them is selection-biased. Pairs with fewer than 3 rows or a constant column
    get NaN and a ``note`` saying why. Intervals are paired bootstrap percentile intervals
    (``scipy.stats.bootstrap``, ``numpy.random.default_rng(seed)``, so reproducible); groups
    larger than ``max_bootstrap_rows`` use asymptotic Fisher-z intervals instead (the
    ``interval`` column says which), because the bootstrap costs ``n_resamples`` Kendall taus
    per pair.

    Args:
        df: trial rows (``analysis.load``).
        predictors: columns to test; default: data-free statistics, ``num_params``, ``macs`` and
            a seeded random score (``with_random_score``).
        targets: trained metrics; default: those present.
        group_by: columns to split by; default: model, dataset, experiment (search or
            validation), training length and density columns present
            (``columns.group_columns``).
        n_resamples: bootstrap resamples (0: asymptotic intervals only).
        confidence_level: coverage of the intervals, 0 < level < 1.
        seed: seed of the resampling and of the random score.
        max_bootstrap_rows: larger groups get asymptotic intervals.

    Returns:
        One row per group, predictor and target with the columns of ``group_by`` then
        ``RESULT_COLUMNS``.
    """
    if not 0 < confidence_level < 1:
        raise ValueError(f"0 < confidence_level < 1 must hold, but got {confidence_level=}")
    if n_resamples < 0:
        raise ValueError(f"n_resamples >= 0 must hold, but got {n_resamples=}")
    rows = unbiased_rows(df)
    if predictors is None:
        rows = with_random_score(rows, seed)
        predictors = default_predictors(rows)
    targets = list(targets) if targets is not None else C.trained_metrics(rows)
    missing = [c for c in [*predictors, *targets] if c not in rows.columns]
    if missing:
        raise ValueError(f"predictors and targets must be columns, but {missing} are not")
    # Rows without any target (untrained search rows beside a validation pass) say nothing.
    rows = rows[C.numeric(rows, targets).notna().any(axis=1)] if targets else rows.iloc[:0]
    group_by = list(group_by) if group_by is not None else C.group_columns(rows)
    opts = {"n_resamples": n_resamples, "level": confidence_level, "seed": seed,
            "max_rows": max_bootstrap_rows}
    out = []
    for key, group in _groups(rows, group_by):
        for target in targets:
            for r in _target_rows(group, list(predictors), target, opts):
                out.append(dict(zip(group_by, key, strict=True)) | r)
    return pd.DataFrame(out, columns=[*group_by, *RESULT_COLUMNS])


def _groups(df: pd.DataFrame, group_by: list[str]) -> list[tuple[tuple, pd.DataFrame]]:
    if not group_by:
        return [((), df)] if len(df) else []
    keys = {c: C.hashable(df[c]) for c in group_by}
    grouped = df.assign(**keys).groupby(group_by, dropna=False, sort=True)
    return [(k if isinstance(k, tuple) else (k,), g) for k, g in grouped]
