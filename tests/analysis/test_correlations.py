"""Rank correlations and their intervals, checked against scipy.stats directly."""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from analysis import rank_correlations, with_random_score


def _frame(x: np.ndarray, y: np.ndarray, **extra: object) -> pd.DataFrame:
    n = len(x)
    return pd.DataFrame({"trial_id": [f"{i}-0" for i in range(n)], "state": "COMPLETE",
                         "log_path_kernel_trace": x, "test_accuracy": y, **extra})


def _one(df: pd.DataFrame, **kw: Any) -> pd.Series:
    out = rank_correlations(df, predictors=["log_path_kernel_trace"], targets=["test_accuracy"],
                            group_by=[], **kw)
    assert len(out) == 1
    return out.iloc[0]


def _spearman(a: np.ndarray, b: np.ndarray, axis: int = -1) -> np.ndarray:
    return stats.spearmanr(a, b, axis=None).statistic if a.ndim == 1 else np.array(
        [stats.spearmanr(u, v).statistic for u, v in zip(a.reshape(-1, a.shape[-1]),
                                                       b.reshape(-1, b.shape[-1]), strict=True)]
    ).reshape(a.shape[:-1])


def test_monotone_data_give_one_with_a_degenerate_interval() -> None:
    x = np.linspace(0, 1, 30)
    row = _one(_frame(x, np.exp(3 * x)), n_resamples=200)
    assert row["spearman"] == pytest.approx(1) and row["kendall"] == pytest.approx(1)
    assert row["spearman_low"] == pytest.approx(1) and row["kendall_high"] == pytest.approx(1)
    anti = _one(_frame(x, -x), n_resamples=200)
    assert anti["spearman"] == pytest.approx(-1) and anti["kendall"] == pytest.approx(-1)


def test_point_estimates_and_intervals_equal_scipy() -> None:
    rng = np.random.default_rng(3)
    x = rng.normal(size=40)
    y = x + rng.normal(size=40)
    y[:5] = np.round(y[:5])  # some ties
    row = _one(_frame(x, y), n_resamples=300, seed=11)
    assert row["spearman"] == pytest.approx(stats.spearmanr(x, y).statistic, abs=1e-12)
    assert row["kendall"] == pytest.approx(stats.kendalltau(x, y).statistic, abs=1e-12)
    for name, statistic in (("spearman", _spearman),
                            ("kendall", lambda a, b: stats.kendalltau(a, b).statistic)):
        ref = stats.bootstrap((x, y), statistic, paired=True, n_resamples=300,
                              vectorized=name == "spearman", method="percentile",
                              rng=np.random.default_rng(11))
        assert row[f"{name}_low"] == pytest.approx(ref.confidence_interval.low, abs=1e-12)
        assert row[f"{name}_high"] == pytest.approx(ref.confidence_interval.high, abs=1e-12)


def test_interval_contains_estimate_and_is_reproducible_with_the_seed() -> None:
    rng = np.random.default_rng(0)
    x = rng.normal(size=60)
    df = _frame(x, 0.5 * x + rng.normal(size=60))
    first, again, other = (_one(df, n_resamples=400, seed=s) for s in (5, 5, 6))
    for stat in ("spearman", "kendall"):
        assert first[f"{stat}_low"] < first[stat] < first[f"{stat}_high"]
        assert first[f"{stat}_low"] == again[f"{stat}_low"]
        assert first[f"{stat}_high"] == again[f"{stat}_high"]
        assert first[f"{stat}_low"] != other[f"{stat}_low"]
    assert "bootstrap" in first["interval"]


def test_constant_or_short_columns_give_nan_with_a_reason() -> None:
    x = np.arange(10.0)
    df = _frame(x, x, num_params=np.full(10, 7), macs=np.full(10, 7.0))
    out = rank_correlations(df, predictors=["log_path_kernel_trace", "num_params"],
                            targets=["test_accuracy"], group_by=[], n_resamples=50)
    const = out.set_index("predictor").loc["num_params"]
    assert np.isnan(const["spearman"]) and "constant num_params" in const["note"]
    flat = _one(_frame(x, np.ones(10)), n_resamples=50)
    assert np.isnan(flat["kendall"]) and "constant test_accuracy" in flat["note"]
    short = _one(_frame(x[:2], x[:2]), n_resamples=50)
    assert np.isnan(short["spearman"]) and "fewer than 3" in short["note"]


def test_missing_values_are_dropped_pairwise_and_failed_rows_ignored() -> None:
    rng = np.random.default_rng(1)
    x, z = rng.normal(size=30), rng.normal(size=30)
    y = x + z
    z_missing = z.copy()
    z_missing[:10] = np.nan
    df = _frame(x, y, log_path_l1=z_missing)
    df.loc[25:, "state"] = "FAIL"
    out = rank_correlations(df, predictors=["log_path_kernel_trace", "log_path_l1"],
                            targets=["test_accuracy"], group_by=[], n_resamples=50).set_index("predictor")
    assert out.loc["log_path_kernel_trace", "n"] == 25
    assert out.loc["log_path_l1", "n"] == 15
    assert out.loc["log_path_l1", "spearman"] == pytest.approx(
        stats.spearmanr(z[10:25], y[10:25]).statistic)


def test_groups_defaults_and_baselines() -> None:
    rng = np.random.default_rng(2)
    n = 40
    x = rng.normal(size=n)
    df = _frame(x, x + rng.normal(size=n) * 0.1, param_density=np.repeat([0.1, 0.01], n // 2),
                num_params=rng.integers(0, 100, n), macs=rng.integers(0, 100, n),
                effective_params=rng.integers(1, 100, n))
    df["effective_fraction"] = df["effective_params"] / 200
    out = rank_correlations(df, n_resamples=50)
    assert list(out.columns[:1]) == ["param_density"]
    assert sorted(out["param_density"].unique()) == [0.01, 0.1]
    predictors = list(out.loc[out["param_density"] == 0.1, "predictor"])
    assert predictors == ["log_path_kernel_trace", "effective_params", "effective_fraction",
                          "num_params", "macs", "random_score"]
    def pick(density: float, predictor: str) -> pd.Series:
        return out[(out["param_density"] == density) & (out["predictor"] == predictor)].iloc[0]

    twin, ref = pick(0.1, "effective_fraction"), pick(0.1, "effective_params")
    assert twin["spearman"] == ref["spearman"] and "same ranks as effective_params" in twin["note"]
    assert twin["note"].startswith("effective_fraction")
    g = df[df["param_density"] == 0.01]
    row = pick(0.01, "log_path_kernel_trace")
    assert row["spearman"] == pytest.approx(
        stats.spearmanr(g["log_path_kernel_trace"], g["test_accuracy"]).statistic)


def test_random_score_is_seeded_and_independent_of_row_order() -> None:
    df = _frame(np.arange(50.0), np.arange(50.0))
    a = with_random_score(df, seed=3)
    b = with_random_score(df.iloc[::-1], seed=3).sort_index()
    c = with_random_score(df, seed=4)
    assert np.array_equal(a["random_score"], b["random_score"])
    assert not np.array_equal(a["random_score"], c["random_score"])
    assert ((a["random_score"] >= 0) & (a["random_score"] < 1)).all()
    assert a["random_score"].nunique() == 50


def test_large_groups_use_asymptotic_intervals() -> None:
    rng = np.random.default_rng(4)
    x = rng.normal(size=300)
    row = _one(_frame(x, x + rng.normal(size=300)), n_resamples=100, max_bootstrap_rows=100)
    assert row["interval"].startswith("fisher-z")
    for stat in ("spearman", "kendall"):
        assert row[f"{stat}_low"] < row[stat] < row[f"{stat}_high"]
    boot = _one(_frame(x, x + rng.normal(size=300)), n_resamples=0)
    assert boot["interval"].startswith("fisher-z")


def test_rejects_bad_arguments() -> None:
    df = _frame(np.arange(5.0), np.arange(5.0))
    with pytest.raises(ValueError, match="confidence_level"):
        rank_correlations(df, confidence_level=1.5)
    with pytest.raises(ValueError, match="not"):
        rank_correlations(df, predictors=["nope"], targets=["test_accuracy"])


def test_minus_infinity_ranks_lowest_instead_of_being_dropped() -> None:
    # A collapsed network has Tr(Π) = 0, so log_path_kernel_trace = -inf: the worst rank.
    x = np.array([-np.inf, 1, 2, 3, 4, 5.0])
    row = _one(_frame(x, np.array([0.1, 0.2, 0.25, 0.3, 0.5, 0.6])), n_resamples=50)
    assert row["n"] == 6 and row["spearman"] == pytest.approx(1)
    assert row["kendall"] == pytest.approx(stats.kendalltau(x, np.arange(6)).statistic)
