"""Validation hit rate on hand-made top-k / random-k rows."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from analysis import validation_hit_rate


def _rows(top: list[float], rand: list[float], metric: str = "test_accuracy",
          study: str = "s") -> pd.DataFrame:
    phases = ["validate-top"] * len(top) + ["validate-random"] * len(rand)
    search = {"phase": "search", metric: np.nan, "state": "COMPLETE", "study": study}
    df = pd.DataFrame({"phase": phases, metric: top + rand, "state": "COMPLETE", "study": study})
    return pd.concat([df, pd.DataFrame([search] * 3)], ignore_index=True)


def test_top_k_beats_random_k() -> None:
    top, rand = [0.9, 0.92, 0.88, 0.53], [0.5, 0.55, 0.7, 0.52]
    row = validation_hit_rate(_rows(top, rand), n_resamples=500, seed=1).iloc[0]
    assert row["n_top"] == 4 and row["n_random"] == 4
    assert row["difference"] == pytest.approx(np.mean(top) - np.mean(rand))
    assert row["difference_low"] < row["difference"] < row["difference_high"]
    ref = stats.bootstrap((np.array(top), np.array(rand)),
                          lambda a, b, axis: a.mean(axis=axis) - b.mean(axis=axis),
                          n_resamples=500, method="percentile", rng=np.random.default_rng(1))
    assert row["difference_low"] == pytest.approx(ref.confidence_interval.low)
    assert row["hit_rate"] == pytest.approx(3 / 4)  # 0.53 is below the random median 0.535
    assert row["beats_random"] and row["verdict"] == "top-k better"


def test_lower_is_better_metrics_and_no_difference() -> None:
    lower = validation_hit_rate(_rows([1.0, 1.1, 0.9], [2.0, 2.1, 1.9], "train_loss_auc"),
                                n_resamples=300).iloc[0]
    assert lower["difference"] < 0 and lower["beats_random"]
    assert lower["hit_rate"] == 1.0
    same = validation_hit_rate(_rows([0.5, 0.6, 0.7], [0.7, 0.5, 0.6]), n_resamples=300).iloc[0]
    assert not same["beats_random"] and same["verdict"] == "no clear difference"
    worse = validation_hit_rate(_rows([0.1, 0.12, 0.11], [0.5, 0.52, 0.51]), n_resamples=300).iloc[0]
    assert worse["verdict"] == "random-k better" and worse["hit_rate"] == 0.0


def test_missing_arms_and_no_validation() -> None:
    one_sided = validation_hit_rate(_rows([0.5, 0.6], []), n_resamples=100).iloc[0]
    assert "no validate-random rows" in one_sided["note"] and not one_sided["beats_random"]
    single = validation_hit_rate(_rows([0.9], [0.1, 0.2]), n_resamples=100).iloc[0]
    assert np.isnan(single["difference_low"]) and single["difference"] == pytest.approx(0.75)
    search_only = pd.DataFrame({"phase": ["search"] * 3, "test_accuracy": [0.1, 0.2, 0.3]})
    assert validation_hit_rate(search_only).empty
    assert validation_hit_rate(pd.DataFrame({"test_accuracy": [0.1]})).empty
