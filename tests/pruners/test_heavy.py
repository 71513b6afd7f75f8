"""Heavy checks at the scale of the paper's models.

CI runs them in a reduced form; ``PATHSWEEP_FULL=1 pytest -m heavy`` runs them at full size
(VGG-16 with 100 SynFlow rounds against the float64 reference takes minutes on a laptop CPU).
"""

from __future__ import annotations

import copy
import os

import pytest
import torch

import pruners
from tests.pruners.test_scores import assert_same_masks, reference_synflow_prune

FULL = os.environ.get("PATHSWEEP_FULL") == "1"
SHAPE = (3, 32, 32)


@pytest.mark.heavy
@pytest.mark.slow
@pytest.mark.timeout(3600)
def test_iterative_synflow_on_vgg_equals_the_float64_reference() -> None:
    """100 rounds on VGG-16 (full) or 10 on a narrow VGG-11 (CI): identical masks."""
    name, width, rounds = ("vgg16", 64, 100) if FULL else ("vgg11", 16, 10)
    torch.manual_seed(0)
    model = pruners.build_model(name, SHAPE, 10, width=width).eval()
    ours = pruners.prune(model, "synflow", 0.01, rounds, input_shape=SHAPE)
    ones = torch.ones(1, *SHAPE, dtype=torch.float64)
    want = reference_synflow_prune(model, 0.01, rounds, power=1.0, score_power=1.0, x=ones)
    assert_same_masks(ours, want)


@pytest.mark.heavy
@pytest.mark.slow
@pytest.mark.timeout(3600)
def test_resnet110_statistics_after_pruning_are_finite_and_match_float64() -> None:
    """Deep residual nets: every statistic finite in float32 and equal to float64 (1e-6)."""
    name, rounds = ("resnet110", 20) if FULL else ("resnet56", 3)
    torch.manual_seed(0)
    model = pruners.build_model(name, SHAPE, 10).eval()
    double = copy.deepcopy(model).double()
    dense = pruners.path_kernel_stats(model, SHAPE).metrics()
    assert dense["log_path_l1"] > 88.8, "float32 would overflow without the rescaling"
    assert dense == pytest.approx(pruners.path_kernel_stats(double, SHAPE).metrics(), rel=1e-6)
    masks = pruners.prune(model, "synflow-l2", 0.05, rounds, input_shape=SHAPE)
    got = pruners.path_kernel_stats(model, SHAPE, masks).metrics()
    want = pruners.path_kernel_stats(double, SHAPE, masks).metrics()
    for key, value in want.items():
        assert got[key] == pytest.approx(value, rel=1e-6), key
