"""examples/layer_collapse.py: the bisection brackets a known threshold; collapse detection."""

from __future__ import annotations

import importlib.util
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
