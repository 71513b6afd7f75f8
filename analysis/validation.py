"""Validation hit rate: do the objective's top-k configurations train better than random ones?

A study's validation pass trains the k configurations the data-free objective ranks highest
(``phase == "validate-top"``) and k configurations drawn at random from the searched ones
(``phase == "validate-random"``). If the objective (e.g. the Path Kernel trace of Gebhart,
Saxena & Schrater 2021) predicts trainability, the top-k should beat the random-k.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd
from scipy import stats

from analysis import columns as C

RESULT_COLUMNS = (
    "study", "target", "n_top", "n_random", "top_mean", "random_mean", "difference",
    "difference_low", "difference_high", "hit_rate", "beats_random", "verdict", "note",
)


def _mean_difference(top: np.ndarray, rand: np.ndarray, axis: int = -1) -> np.ndarray:
    return np.mean(top, axis=axis) - np.mean(rand, axis=axis)


def _interval(top: np.ndarray, rand: np.ndarray, n_resamples: int, level: float,
              seed: int) -> tuple[float, float]:
    if len(top) < 2 or len(rand) < 2 or n_resamples == 0:
        return np.nan, np.nan
    res = stats.bootstrap((top, rand), _mean_difference, n_resamples=n_resamples,
                          vectorized=True, paired=False, confidence_level=level,
                          method="percentile", rng=np.random.default_rng(seed))
    return float(res.confidence_interval.low), float(res.confidence_interval.high)


def _verdict(sign: float, low: float, high: float) -> tuple[bool, str]:
    """``sign`` is +1 when larger is better; the interval is of top minus random."""
    if np.isnan(low):
        return False, "no interval (< 2 rows a side)"
    better_low, better_high = sorted((sign * low, sign * high))
    if better_low > 0:
        return True, "top-k better"
    if better_high < 0:
        return False, "random-k better"
    return False, "no clear difference"


def _one(study: object, target: str, top: np.ndarray, rand: np.ndarray,
         n_resamples: int, level: float, seed: int) -> dict[str, object]:
    sign = 1.0 if C.higher_is_better(target) else -1.0
    row: dict[str, object] = {"study": study, "target": target, "n_top": len(top),
                              "n_random": len(rand), "note": ""}
    if len(top) == 0 or len(rand) == 0:
        side = "validate-top" if len(top) == 0 else "validate-random"
        return row | {"beats_random": False, "verdict": "", "note": f"no {side} rows with {target}"}
    low, high = _interval(top, rand, n_resamples, level, seed)
    beats, verdict = _verdict(sign, low, high)
    # A hit: a top-k configuration better than the median random-k configuration.
    hits = sign * (top - np.median(rand)) > 0
    return row | {"top_mean": float(top.mean()), "random_mean": float(rand.mean()),
                  "difference": float(top.mean() - rand.mean()), "difference_low": low,
                  "difference_high": high, "hit_rate": float(hits.mean()),
                  "beats_random": beats, "verdict": verdict}


def validation_hit_rate(
    df: pd.DataFrame,
    *,
    targets: Sequence[str] | None = None,
    n_resamples: int = 2000,
    confidence_level: float = 0.95,
    seed: int = 0,
) -> pd.DataFrame:
    """Compare the trained metrics of the objective's top-k with the random-k, per study.

    ``difference`` is ``mean(top) - mean(random)`` with a bootstrap percentile interval
    (``scipy.stats.bootstrap``, independent samples, ``numpy.random.default_rng(seed)``).
    ``beats_random`` is True when the interval excludes 0 on the better side (larger accuracy,
    smaller loss or epochs); ``verdict`` says "top-k better", "random-k better" (the interval
    excludes 0) or "no clear difference". ``hit_rate`` is the fraction of top-k rows better than the
    median random-k row.

    Args:
        df: trial rows (``analysis.load``); rows need ``phase`` and a trained metric.
        targets: trained metrics to compare; default: those present.
        n_resamples: bootstrap resamples.
        confidence_level: coverage of the interval, 0 < level < 1.
        seed: seed of the resampling.

    Returns:
        One row per study and target (``RESULT_COLUMNS``); empty without validation rows.
    """
    if not 0 < confidence_level < 1:
        raise ValueError(f"0 < confidence_level < 1 must hold, but got {confidence_level=}")
    rows = C.complete(df)
    if "phase" not in rows.columns:
        return pd.DataFrame(columns=RESULT_COLUMNS)
    rows = rows[rows["phase"].isin([C.VALIDATE_TOP, C.VALIDATE_RANDOM])]
    targets = list(targets) if targets is not None else C.trained_metrics(rows)
    studies = rows["study"] if "study" in rows.columns else pd.Series("", index=rows.index)
    out = []
    for study, group in rows.groupby(studies, sort=True):
        for target in targets:
            values = pd.to_numeric(group[target], errors="coerce")
            ok = values.notna()
            top = values[ok & (group["phase"] == C.VALIDATE_TOP)].to_numpy(dtype=float)
            rand = values[ok & (group["phase"] == C.VALIDATE_RANDOM)].to_numpy(dtype=float)
            out.append(_one(study, target, top, rand, n_resamples, confidence_level, seed))
    return pd.DataFrame(out, columns=RESULT_COLUMNS)
