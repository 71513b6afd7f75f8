"""Pareto fronts and parameter importances (from rows and from an Optuna journal)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import optuna
import pandas as pd
import pytest
from optuna.storages import JournalStorage
from optuna.storages.journal import JournalFileBackend

from analysis import objectives_from_spec, param_importances, pareto_front
from analysis.optuna_views import infer_distributions, study_from_rows


def test_pareto_front_hand_made() -> None:
    # maximise accuracy-like a, minimise cost-like b
    points = {"p": (0.9, 10), "q": (0.8, 5), "r": (0.7, 5), "s": (0.95, 20), "t": (0.8, 5),
              "u": (0.5, 1), "v": (0.4, 2), "w": (np.nan, 0)}
    df = pd.DataFrame([{"trial_id": k, "a": a, "b": b, "state": "COMPLETE"}
                       for k, (a, b) in points.items()])
    front = pareto_front(df, [("a", "maximize"), ("b", "minimize")])
    # r is dominated by q; v by u; q and t are equal, so both stay; w has a NaN objective.
    assert list(front["trial_id"]) == ["s", "p", "q", "t", "u"]


def test_pareto_front_matches_brute_force_in_three_objectives() -> None:
    rng = np.random.default_rng(0)
    values = rng.integers(0, 6, size=(150, 3)).astype(float)
    df = pd.DataFrame(values, columns=["x", "y", "z"]).assign(state="COMPLETE")
    objectives = [("x", "maximize"), ("y", "minimize"), ("z", "maximize")]
    cost = values * np.array([-1, 1, -1])
    dominated = [
        any((cost[j] <= cost[i]).all() and (cost[j] < cost[i]).any() for j in range(len(cost)))
        for i in range(len(cost))
    ]
    expected = {i for i, d in enumerate(dominated) if not d}
    assert set(pareto_front(df, objectives).index) == expected


def test_pareto_front_rejects_bad_objectives() -> None:
    df = pd.DataFrame({"a": [1.0]})
    with pytest.raises(ValueError, match="direction"):
        pareto_front(df, [("a", "up")])
    with pytest.raises(ValueError, match="columns"):
        pareto_front(df, [("b", "maximize")])
    with pytest.raises(ValueError, match="at least one"):
        pareto_front(df, [])


def test_objectives_from_spec() -> None:
    spec = {"objectives": [{"metric": "log_path_kernel_trace"},
                           {"metric": "num_params", "direction": "minimize"}]}
    assert objectives_from_spec(spec) == [("log_path_kernel_trace", "maximize"),
                                          ("num_params", "minimize")]
    assert objectives_from_spec(None) == [] and objectives_from_spec({}) == []
    with pytest.raises(ValueError, match="direction"):
        objectives_from_spec({"objectives": [{"metric": "x", "direction": "sideways"}]})


def _rows(n: int = 120, seed: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    p = rng.uniform(0.5, 3.0, n)
    return pd.DataFrame({
        "state": "COMPLETE",
        "param_path_exponent": p,
        "param_iterations": rng.integers(1, 201, n),
        "param_schedule": rng.choice(["exponential", "linear"], n),
        "param_density": 0.01,  # fixed: not a searched parameter
        "log_path_kernel_trace": -((p - 2.0) ** 2) + rng.normal(0, 0.01, n),
    })


def test_infer_distributions_uses_spec_ranges_and_types() -> None:
    spec = {"search": {"iterations": {"low": 1, "high": 200, "log": True}}}
    dists = infer_distributions(_rows(), spec)
    assert set(dists) == {"path_exponent", "iterations", "schedule"}
    assert dists["iterations"] == optuna.distributions.IntDistribution(1, 200, log=True)
    assert isinstance(dists["path_exponent"], optuna.distributions.FloatDistribution)
    assert dists["schedule"] == optuna.distributions.CategoricalDistribution(["exponential", "linear"])


def test_importances_from_rows_find_the_parameter_that_matters() -> None:
    df = _rows()
    study = study_from_rows(df, ["log_path_kernel_trace"], max_trials=100)
    assert study is not None and len(study.trials) == 100
    assert study.trials[0].user_attrs["log_path_kernel_trace"] in set(df["log_path_kernel_trace"])
    imp = param_importances(df, ["log_path_kernel_trace"])
    assert set(imp["source"]) == {"parquet"}
    top = imp.sort_values("importance", ascending=False).iloc[0]
    assert top["param"] == "path_exponent" and top["importance"] > 0.5
    assert imp["importance"].sum() == pytest.approx(1)
    # Direction matters to PED-ANOVA: a minimised metric peaked at p = 2 is the maximised one
    # upside down, and its importances differ (the good region is the tails, not the peak).
    df["train_loss_auc"] = df["log_path_kernel_trace"]
    both = param_importances(df, ["log_path_kernel_trace", "train_loss_auc"]).set_index(
        ["target", "param"])["importance"]
    assert both["log_path_kernel_trace", "path_exponent"] == pytest.approx(top["importance"])
    assert both["train_loss_auc", "path_exponent"] != pytest.approx(top["importance"])
    assert param_importances(df.drop(columns=list(df.filter(like="param_").columns)),
                             ["log_path_kernel_trace"]).empty


def test_importances_from_an_optuna_journal(tmp_path: Path) -> None:
    journal = tmp_path / "optuna.journal"
    storage = JournalStorage(JournalFileBackend(str(journal)))
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(study_name="jstudy", storage=storage,
                                directions=["maximize", "minimize"],
                                sampler=optuna.samplers.RandomSampler(seed=0))
    study.optimize(lambda t: (t.suggest_float("x", 0, 1), t.suggest_float("y", 0, 1)), n_trials=40)
    spec = {"objectives": [{"metric": "m1", "direction": "maximize"},
                           {"metric": "m2", "direction": "minimize"}]}
    imp = param_importances(pd.DataFrame(), ["m1", "m2"], spec=spec, journal=journal,
                            study_name="jstudy")
    assert set(imp["source"]) == {"journal"}
    best = imp.loc[imp.groupby("target")["importance"].idxmax()].set_index("target")["param"]
    assert best.to_dict() == {"m1": "x", "m2": "y"}
