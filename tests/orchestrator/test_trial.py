"""run_trial without Ray: the real pipeline (build, prune, measure, train) on digits."""

from __future__ import annotations

import json
import math

import pytest

import pruners
from orchestrator.spec import STAT_METRICS
from orchestrator.trial import (
    SleepTrial,
    TrialConfig,
    load_data,
    make_config,
    resolve_params,
    run_trial,
)

from .helpers import small_spec


def _config(sampled: dict[str, object], **kwargs: object) -> TrialConfig:
    spec = small_spec()
    return make_config(spec, 3, 0, resolve_params(sampled, spec.search.fixed()), **kwargs)  # type: ignore[arg-type]


def test_run_trial_measures_every_statistic() -> None:
    result = run_trial(_config({"path_exponent": 2.0, "iterations": 2}))
    assert set(STAT_METRICS) <= set(result.metrics)
    assert result.metrics["density"] == pytest.approx(0.1, abs=0.01)
    assert math.isfinite(result.metrics["log_path_kernel_trace"])
    layers = json.loads(result.metrics["layer_density"])
    assert layers and all(0 <= v <= 1 for v in layers.values())
    assert result.params["path_exponent"] == 2.0 and result.device == "cpu"
    assert {"time_data_s", "time_prune_s", "time_stats_s"} <= set(result.timings)


def test_same_config_same_numbers_and_params_matter() -> None:
    a = run_trial(_config({"path_exponent": 1.0, "iterations": 3}))
    b = run_trial(_config({"path_exponent": 1.0, "iterations": 3}))
    c = run_trial(_config({"path_exponent": 3.0, "iterations": 1, "schedule": "linear"}))
    assert a.metrics == b.metrics
    assert a.metrics["log_path_kernel_trace"] != c.metrics["log_path_kernel_trace"]


def test_run_trial_matches_pruners_called_directly() -> None:
    import torch

    result = run_trial(_config({"path_exponent": 2.0, "iterations": 2, "schedule": "linear"}))
    ds = pruners.load_dataset("digits", seed=0)
    torch.manual_seed(0)
    model = pruners.build_model("fc", input_shape=ds.input_shape, num_classes=10, width=16, depth=3)
    masks = pruners.prune(
        model,
        "synflow",
        0.1,
        2,
        "linear",
        input_shape=ds.input_shape,
        sample=pruners.prune_sample(ds, 10, 0),
        path_exponent=2.0,
        score_exponent=1.0,
        input="ones",
    )
    stats = pruners.path_kernel_stats(model, input_shape=ds.input_shape, masks=masks)
    assert result.metrics["log_path_kernel_trace"] == pytest.approx(stats.log_trace)


def test_training_adds_metrics_and_curves() -> None:
    result = run_trial(_config({"iterations": 1}, train_epochs=2))
    assert 0 <= result.metrics["test_accuracy"] <= 1
    assert len(result.metrics["train_loss_curve"]) == 2
    assert len(result.metrics["test_accuracy_curve"]) == 2
    assert result.metrics["train_epochs"] == 2


def test_resolve_params_fills_presets_and_drops_knobs_outside_the_family() -> None:
    l2 = resolve_params({"pruner": "synflow-l2"}, {"density": 0.1})
    assert (l2["path_exponent"], l2["score_exponent"], l2["input"]) == (2.0, 1.0, "ones")
    assert l2["iterations"] == 1 and l2["schedule"] == "exponential" and l2["scope"] == "global"
    snip = resolve_params({"pruner": "snip", "path_exponent": 2.5}, {"density": 0.1})
    assert snip["path_exponent"] is None and snip["input"] is None
    result = run_trial(_config({"pruner": "snip", "path_exponent": 2.5}))
    assert result.metrics["density"] == pytest.approx(0.1, abs=0.01)


def test_dataset_is_loaded_once_per_process() -> None:
    spec = small_spec()
    assert load_data(spec.data, 0) is load_data(spec.data, 0)
    assert load_data(spec.data, 1) is not load_data(spec.data, 0)


def test_impossible_config_raises() -> None:
    with pytest.raises(ValueError, match="scope must be one of"):
        run_trial(_config({"scope": "everywhere"}))


def test_sleep_trial_stands_in_with_real_metric_names() -> None:
    result = SleepTrial(0.0)(_config({"path_exponent": 1.5}))
    assert set(STAT_METRICS) <= set(result.metrics)
    with pytest.raises(FloatingPointError):
        SleepTrial(0.0, fail_every=4)(_config({}))  # number 3 = the 4th trial
