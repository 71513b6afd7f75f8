"""Analysis correctness where the right answer is known: experiments are never pooled,
selection-biased rows never enter a correlation, and labels say what rows are aggregated."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from analysis import critical_compression, method_summary, method_table, rank_correlations
from analysis.collapse import collapse_rate
from analysis.columns import aggregate_kind, group_columns, with_experiment
from analysis.correlations import POOLED, unbiased_rows, within_and_pooled


def _row(number: int, phase: str, x: float, acc: float, *, epochs: int | None = 10,
         density: float = 0.1, p: float = 1.0, seed: int = 0, collapse: int = 0) -> dict:
    return {"study": "s", "trial_id": f"{phase}-{number}", "optuna_number": number,
            "phase": phase, "state": "COMPLETE", "param_pruner": "synflow",
            "param_density": density, "param_path_exponent": p, "seed": seed,
            "log_path_kernel_trace": x, "test_accuracy": acc, "train_epochs": epochs,
            "layer_collapse": collapse}


def _experiments() -> pd.DataFrame:
    """Search rows: accuracy rises with the trace (rho = +1). Validation random-k: falls
    (rho = -1). Validation top-k: the 4 largest traces, with accuracies that would flip
    the sign of a pooled validation correlation."""
    search = [_row(i, "search", float(i), 0.1 * i, p=1 + i) for i in range(8)]
    rand = [_row(i, "validate-random", float(i), 1 - 0.1 * i, epochs=20, p=1 + i)
            for i in range(5)]
    top = [_row(100 + i, "validate-top", 50.0 + i, 0.9 + 0.01 * i, epochs=20, p=50 + i)
           for i in range(4)]
    return pd.DataFrame(search + rand + top)


def _corr(df: pd.DataFrame) -> pd.DataFrame:
    out = rank_correlations(df, predictors=["log_path_kernel_trace"], targets=["test_accuracy"],
                            n_resamples=0)
    return out.set_index("experiment")


def test_search_and_validation_are_separate_groups_and_top_k_is_left_out() -> None:
    out = _corr(_experiments())
    assert set(out.index) == {"search", "validation"}
    assert out.loc["search", "spearman"] == pytest.approx(1.0) and out.loc["search", "n"] == 8
    # Only the 5 random-k rows: the top-k were chosen for their trace (selection bias).
    assert out.loc["validation", "spearman"] == pytest.approx(-1.0)
    assert out.loc["validation", "n"] == 5
    assert (unbiased_rows(_experiments())["phase"] != "validate-top").all()


def test_training_lengths_are_never_pooled() -> None:
    df = pd.DataFrame([_row(i, "search", float(i), 0.1 * i, epochs=5) for i in range(4)]
                      + [_row(10 + i, "search", float(i), 1 - 0.1 * i, epochs=50)
                         for i in range(4)])
    out = rank_correlations(df, predictors=["log_path_kernel_trace"],
                            targets=["test_accuracy"], n_resamples=0).set_index("train_epochs")
    assert out.loc[5, "spearman"] == pytest.approx(1.0)
    assert out.loc[50, "spearman"] == pytest.approx(-1.0)
    assert group_columns(with_experiment(df)) == ["experiment", "train_epochs", "param_density"]


def test_within_density_and_pooled() -> None:
    # Within each density the trace says nothing (constant accuracy order reversed); pooled,
    # density drives both, so the pooled correlation is strongly positive.
    rows = []
    for k, d in enumerate((0.3, 0.1, 0.03)):
        for i in range(4):
            rows.append(_row(10 * k + i, "search", -10.0 * k + i, 0.9 - 0.3 * k - 0.01 * i,
                             density=d, p=1 + i))
    out = within_and_pooled(pd.DataFrame(rows), predictors=["log_path_kernel_trace"],
                            targets=["test_accuracy"], n_resamples=0)
    within = out[out["param_density"] != POOLED]
    pooled = out[out["param_density"] == POOLED].iloc[0]
    assert len(within) == 3 and np.allclose(within["spearman"].astype(float), -1.0)
    assert pooled["n"] == 12 and pooled["spearman"] > 0.7


def test_aggregate_kind_tells_seeds_from_configurations() -> None:
    seeds = pd.DataFrame([_row(i, "search", 0.0, 0.5, seed=i) for i in range(3)])
    configs = pd.DataFrame([_row(i, "search", 0.0, 0.5, p=1 + i) for i in range(3)])
    both = pd.concat([seeds, configs])
    assert aggregate_kind(seeds) == (1, 3, "seeds")
    assert aggregate_kind(configs) == (3, 1, "configurations")
    assert aggregate_kind(both)[2] == "configurations × seeds"


def test_method_table_labels_configurations_and_keeps_experiments_apart() -> None:
    df = _experiments()
    summary = method_summary(df)
    assert set(summary["experiment"]) == {"search", "validation"}
    search = summary[summary["experiment"] == "search"].iloc[0]
    assert search["n"] == 8 and search["over"] == "configurations"
    assert search["mean"] == pytest.approx(np.mean([0.1 * i for i in range(8)]))
    table = method_table(summary)
    assert all("configurations" in c for c in table.to_numpy().ravel() if c)
    assert not any("seeds" in c for c in table.to_numpy().ravel())


def test_critical_compression_on_one_collapsed_row_of_48() -> None:
    # The demo's situation: one density, 48 configurations, one of them collapsed.
    rows = [_row(i, "search", 0.0, 0.5, density=0.01, p=1 + i, collapse=int(i == 7))
            for i in range(48)]
    out = critical_compression(pd.DataFrame(rows)).iloc[0]
    assert np.isnan(float(out["critical_compression"]))
    assert out["first_collapse_compression"] == pytest.approx(100)
    assert out["collapsed_rows"] == 1 and out["n"] == 48 and out["over"] == "configurations"
    assert "1 of 48 rows at density 0.01 (100×)" in out["note"]
    assert "no single critical compression" in out["note"]  # 47 configurations did not collapse
    assert "every tested density" not in out["note"]
    assert "below the tested range" not in out["note"]


def test_collapse_rate_counts_search_rows_once() -> None:
    df = _experiments()
    df.loc[df["phase"] == "search", "layer_collapse"] = [1, 0, 0, 0, 0, 0, 0, 0]
    rates = collapse_rate(df)
    assert rates["n"].tolist() == [8] and rates["rate"].tolist() == [pytest.approx(1 / 8)]
    assert rates["over"].tolist() == ["configurations"]
