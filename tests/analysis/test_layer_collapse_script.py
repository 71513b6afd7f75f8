"""examples/layer_collapse.py: the bisection brackets a known threshold; collapse detection."""

from __future__ import annotations

import importlib.util
import json
import math
import sys
from pathlib import Path
from types import ModuleType

import pytest
import torch

SCRIPT = Path(__file__).resolve().parents[2] / "examples" / "layer_collapse.py"


@pytest.fixture(scope="module")
def script() -> ModuleType:
    spec = importlib.util.spec_from_file_location("layer_collapse_script", SCRIPT)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize("threshold", [0.3, 2.75, 3.331, 5.92, 6.0])
@pytest.mark.parametrize("guess", [1.0, 3.3, 5.9])
def test_bisect_brackets_the_threshold_to_tol(script: ModuleType, threshold: float,
                                              guess: float) -> None:
    tested: list[float] = []

    def is_collapsed(c: float) -> bool:
        tested.append(c)
        return c >= threshold

    lo, hi, runs = script.bisect(is_collapsed, guess, 6.05, 0.05, lambda _: None, 0.25)
    assert lo < threshold <= hi and hi - lo <= 0.05 + 1e-12
    assert hi in tested or math.isclose(hi, 6.05)  # hi was tested, or is the known upper bound
    assert runs == len(tested)


def test_collapsed_means_some_layer_keeps_nothing(script: ModuleType) -> None:
    full = {"a": torch.ones(3, dtype=torch.bool), "b": torch.tensor([False, True])}
    assert not script.collapsed(full)
    assert script.collapsed({**full, "b": torch.zeros(2, dtype=torch.bool)})


def test_scan_finds_the_smallest_collapse_where_bisection_misses_it(script: ModuleType) -> None:
    # Not monotone: collapsed at 5.9 and from 6.05 on, intact at 5.95 and 6.0 (as SynFlow's
    # iterative runs on VGG-16 are near the maximum).
    def is_collapsed(c: float) -> bool:
        return math.isclose(c, 5.9) or c >= 6.05 - 1e-9

    outcomes = script.scan(is_collapsed, 5.7, 6.05, 0.05, lambda _: None)
    assert [c for c, _ in outcomes] == pytest.approx([5.7, 5.75, 5.8, 5.85, 5.9, 5.95, 6.0, 6.05])
    assert script.scan_bracket(outcomes) == pytest.approx((5.85, 5.9))
    _, hi, _ = script.bisect(is_collapsed, 5.95, 6.05, 0.05, lambda _: None, 0.05)
    assert hi == pytest.approx(6.05)  # bisection, assuming monotonicity, reports the later one


def test_scan_bracket_edges(script: ModuleType) -> None:
    assert script.scan_bracket([(5.0, True), (5.05, False)]) == (None, 5.0)
    assert script.scan_bracket([(5.0, False), (5.05, False)]) == (5.05, math.inf)


@pytest.mark.parametrize(("start", "stop", "step"), [(6.0, 5.9, 0.05), (5.0, 6.0, 0.0)])
def test_scan_refuses_an_empty_grid(script: ModuleType, start: float, stop: float,
                                    step: float) -> None:
    with pytest.raises(ValueError, match="start <= stop"):
        script.scan(lambda _: False, start, stop, step, lambda _: None)


def test_plot_draws_a_scan_without_intact_point_and_float32_marks(script: ModuleType,
                                                                  tmp_path: Path) -> None:
    seed = {"seed": 0, "lo": None, "hi": 5.0, "runs": 1}
    payload = {"theoretical_max": 6.02, "results": {
        "synflow": {"critical_compression": 5.0, "per_seed": [seed], "published": 5.92,
                    "float32": {"critical_compression": 5.1, "per_seed": [seed]}},
        "random": {"critical_compression": 3.3, "published": 3.33,
                   "per_seed": [{"seed": 0, "lo": 3.25, "hi": 3.3, "runs": 5}]}}}
    out = script.plot(payload, tmp_path / "c.png")
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_no_collapse_in_range_gives_no_number(script: ModuleType) -> None:
    """A scan that never collapsed: no critical compression (None), valid JSON, no plot bar."""
    per_seed = [{"seed": 0, "lo": 6.0, "hi": math.inf, "runs": 3}]
    assert script.critical_of(per_seed) is None
    assert per_seed[0]["hi"] is None
    json.dumps(per_seed, allow_nan=False)  # raises on inf/nan
    two = [{"hi": 5.0}, {"hi": 5.2}, {"hi": 5.4}]
    assert script.critical_of(two) == 5.2


def _scan_payload(method: str, dtype: str, outcomes: list[tuple[float, bool]]) -> dict:
    points = [[c, hit] for c, hit in outcomes]
    entry = {"critical_compression": None, "dtype": dtype, "wall_s": 1.0, "search": "scan",
             "rounds": 100, "per_seed": [{"seed": 0, "lo": None, "hi": None, "runs": len(points),
                                          "outcomes": points}]}  # fmt: skip
    return {"n_weights": 10, "layers": 2, "theoretical_max": 6.0, "rounds": 100,
            "results": {method: entry}, "wall_s": 1.0, "command": "x"}  # fmt: skip


def test_merge_joins_scans_and_keeps_float32_beside(script: ModuleType) -> None:
    """Two scans of one pruner are one grid: the smallest collapse of both, float32 beside."""
    low = _scan_payload("synflow", "float64", [(5.0, False), (5.1, False)])
    high = _scan_payload("synflow", "float64", [(5.2, False), (5.3, True), (5.4, False)])
    f32 = _scan_payload("synflow", "float32", [(5.2, True)])
    single = {**low, "results": {"random": {"critical_compression": 3.3, "dtype": "n/a (single shot)",
              "per_seed": [{"seed": 0, "lo": 3.25, "hi": 3.3, "runs": 5}], "wall_s": 2.0}}}  # fmt: skip
    merged = script.merge_results([low, high, f32, single])
    synflow = merged["results"]["synflow"]
    assert synflow["critical_compression"] == 5.3
    assert synflow["per_seed"][0]["lo"] == 5.2 and synflow["per_seed"][0]["runs"] == 5
    assert synflow["float32"]["critical_compression"] == 5.2
    assert synflow["published"] == 5.92 and synflow["wall_s"] == 2.0
    assert merged["results"]["random"]["critical_compression"] == 3.3
    json.dumps(merged, allow_nan=False)


def test_merge_refuses_scans_that_disagree(script: ModuleType) -> None:
    a = _scan_payload("synflow", "float64", [(5.3, True)])
    b = _scan_payload("synflow", "float64", [(5.3, False)])
    with pytest.raises(ValueError, match="one scan collapsed, one not"):
        script.merge_results([a, b])


def _tiny_model(seed: int) -> torch.nn.Module:
    torch.manual_seed(seed)
    return torch.nn.Sequential(
        torch.nn.Conv2d(3, 4, 3), torch.nn.ReLU(), torch.nn.AdaptiveAvgPool2d(1),
        torch.nn.Flatten(), torch.nn.Linear(4, 100),
    )  # fmt: skip


def test_iterative_single_shot_runs_snip_over_rounds_under_its_own_key(
    script: ModuleType, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """--iterative-single-shot: SNIP through pruners.prune with --rounds rounds, scanned, keyed
    'snip (3 rounds)'; each grid point's outcome is that of a direct 3-round prune."""
    import pruners

    monkeypatch.setattr(script, "build_vgg16", _tiny_model)
    calls: list[int] = []
    real_prune = pruners.prune

    def spy(*args: object, **kwargs: object) -> dict[str, torch.Tensor]:
        calls.append(int(args[3]))  # type: ignore[call-overload]
        return real_prune(*args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(pruners, "prune", spy)
    out = tmp_path / "r.json"
    argv = ["--methods", "snip", "--iterative-single-shot", "--rounds", "3", "--batch", "8",
            "--scan", "0.5", "2.5", "--step", "0.5", "--out", str(out)]  # fmt: skip
    assert script.main(argv) == 0
    result = json.loads(out.read_text())["results"]["snip (3 rounds)"]
    assert result["rounds"] == 3 and result["search"].startswith("scan")
    assert calls == [3] * 5
    sample = script.stand_in_sample(8, seed=0)
    model = _tiny_model(0)
    for c, hit in result["per_seed"][0]["outcomes"]:
        masks = real_prune(model, "snip", 10.0**-c, 3, input_shape=script.SHAPE, sample=sample)
        assert hit == script.collapsed(masks)
    assert any(hit for _, hit in result["per_seed"][0]["outcomes"])  # 5 of 508 kept at 10^2

    # without the flag, SNIP stays single shot (scored once, no prune call) under "snip"
    calls.clear()
    assert script.main(["--methods", "snip", "--batch", "8", "--out", str(out)]) == 0
    results = json.loads(out.read_text())["results"]
    assert calls == [] and results["snip"]["rounds"] == 1
    assert results["snip"]["search"] == "bisection" and "snip (3 rounds)" in results
