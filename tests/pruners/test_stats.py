"""Oracle tests of the Path Kernel statistics (``pruners.stats``).

Every statistic is checked against brute-force path enumeration (tests/pruners/test_paths.py),
and the Path Kernel itself against the NTK from ``torch.func``: Gebhart, Saxena, Schrater
(2021), *A Unified Paths Perspective for Pruning at Initialization*,
``Θ(x, x') = J_v f(x) · Π_θ · J_v f(x')ᵀ`` with ``Π_θ = J_θ v (J_θ v)ᵀ``.
"""

from __future__ import annotations

import copy
import math
import pickle
from collections.abc import Callable, Mapping

import pytest
import torch
from torch import nn
from torch.func import functional_call, jacrev

import pruners
from pruners.stats import PathKernelStats, log_path_kernel_trace, path_kernel_stats
from tests.pruners.test_paths import (
    PathTable,
    assert_same_state,
    brute_force,
    cnn_table,
    mlp,
    mlp_table,
    state,
    tiny_cnn,
)

REL = 1e-6  # the required relative error of every statistic


def random_masks(
    model: nn.Module, names: list[str], keep: float, seed: int
) -> dict[str, torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    params = dict(model.named_parameters())
    return {n: torch.rand(params[n].shape, generator=gen) < keep for n in names}


def assert_matches_oracle(
    stats: PathKernelStats,
    table: PathTable,
    model: nn.Module,
    masks: Mapping[str, torch.Tensor] | None,
) -> None:
    params = {n: p.detach() for n, p in model.named_parameters()}
    exact = brute_force(table, params, masks)
    assert exact.num_paths > 0
    for got, want in [
        (stats.log_trace, exact.trace),
        (stats.log_l1, exact.l1),
        (stats.log_l2_squared, exact.l2_squared),
        (stats.log_num_paths, float(exact.num_paths)),
    ]:
        # |log a − log b| ≤ REL/2 ⇔ relative error of the value ≤ ~REL
        assert abs(math.exp(got - math.log(want)) - 1) <= REL, (got, math.log(want))
    assert stats.effective_params == exact.effective
    for name, share in stats.layer_trace_share.items():
        assert share == pytest.approx(exact.layer_trace[name] / exact.trace, rel=REL, abs=1e-12)
    assert sum(stats.layer_trace_share.values()) == pytest.approx(1.0, rel=1e-9)
    assert not stats.layer_collapse


def _mlp_masks(model: nn.Module, kind: str) -> dict[str, torch.Tensor] | None:
    names = [n for n, _ in model.named_parameters()]
    if kind == "none":
        return None
    if kind == "random":
        return random_masks(model, names, 0.6, seed=3)
    # Cut every weight into hidden unit 0 of the first hidden layer: the weights leaving that
    # unit survive pruning but lie on no surviving path (kept but not effective).
    masks = {n: torch.ones_like(p, dtype=torch.bool) for n, p in model.named_parameters()}
    masks[names[0]][0, :] = False
    return masks


@pytest.mark.parametrize("mask_kind", ["none", "random", "dead-unit"])
@pytest.mark.parametrize("widths", [(3, 4, 2, 3), (2, 3, 4, 3, 2), (4, 4, 4, 4)])
def test_statistics_equal_brute_force_on_mlp(widths: tuple[int, ...], mask_kind: str) -> None:
    model = mlp(widths, seed=sum(widths))
    masks = _mlp_masks(model, mask_kind)
    stats = path_kernel_stats(model, (widths[0],), masks)
    assert_matches_oracle(stats, mlp_table(model), model, masks)
    total = sum(p.numel() for p in model.parameters())
    kept = sum(int(m.sum()) for m in masks.values()) if masks else total
    assert stats.num_params == kept
    assert stats.density == pytest.approx(kept / total)
    assert stats.macs == stats.num_params  # one position per Linear row
    if mask_kind == "dead-unit":
        assert stats.effective_params < stats.num_params
    # The trace alone (one forward-mode pass) agrees with the full statistics.
    assert log_path_kernel_trace(model, (widths[0],), masks) == pytest.approx(
        stats.log_trace, rel=1e-12
    )


def test_float32_models_meet_the_same_tolerance() -> None:
    """A float32 model (the usual case) against float64 enumeration of its own weights."""
    model = mlp((4, 3, 4, 2), seed=3).float()
    masks = _mlp_masks(model, "random")
    stats = path_kernel_stats(model, (4,), masks)
    as_double = path_kernel_stats(model, (4,), masks, dtype=torch.float64)
    assert as_double.log_trace == pytest.approx(stats.log_trace, rel=REL)
    double = copy.deepcopy(model).double()
    assert_matches_oracle(stats, mlp_table(double), double, masks)


@pytest.mark.parametrize("masked", [False, True])
def test_statistics_equal_brute_force_on_cnn_with_batchnorm(masked: bool) -> None:
    """BatchNorm in eval form: c = γ/sqrt(var+eps) is a diagonal layer and γ a kernel parameter.

    Running statistics and γ are non-trivial (γ partly negative); the model is in train mode,
    which must not matter (eval form) nor change its buffers.
    """
    model = tiny_cnn(seed=5)
    model.train()
    conv_names = ["0.weight", "3.weight", "7.weight"]
    masks = random_masks(model, conv_names, 0.7, seed=1) if masked else None
    before = state(model)
    stats = path_kernel_stats(model, (1, 3, 3), masks)
    assert_same_state(model, before)
    assert model.training
    assert_matches_oracle(stats, cnn_table(model), model, masks)
    assert set(stats.layer_density) == set(conv_names)  # BN scales are not weights
    kept = {n: int(masks[n].sum()) if masks else dict(model.named_parameters())[n].numel()
            for n in conv_names}  # fmt: skip
    assert stats.num_params == sum(kept.values())
    # Positions per output: conv1 2x2, conv2 3x3, the classifier 1.
    assert stats.macs == 4 * kept["0.weight"] + 9 * kept["3.weight"] + kept["7.weight"]


def test_batchnorm_scale_is_counted_as_a_kernel_parameter() -> None:
    """The BN terms of the trace are Σ_p (∂v_p/∂γ)², i.e. non-zero and with 1/(var+eps)."""
    model = tiny_cnn(seed=2)
    stats = path_kernel_stats(model, (1, 3, 3))
    exact = brute_force(cnn_table(model), dict(model.named_parameters()))
    for name in ("1.weight", "4.weight"):
        assert stats.layer_trace_share[name] > 0
        assert stats.layer_trace_share[name] == pytest.approx(
            exact.layer_trace[name] / exact.trace, rel=REL
        )


def test_biases_and_batchnorm_shifts_do_not_enter() -> None:
    """The Path Kernel is over input→output paths: biases and BN shifts leave it unchanged."""
    model = tiny_cnn(seed=4)
    with_bias = copy.deepcopy(model)
    with torch.no_grad():
        for m in with_bias.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.bias.add_(3.0)
                assert m.running_mean is not None
                m.running_mean.add_(-2.0)
    assert path_kernel_stats(with_bias, (1, 3, 3)) == path_kernel_stats(model, (1, 3, 3))
    plain = mlp((3, 4, 2), seed=1)
    biased = mlp((3, 4, 2), bias=True, seed=1)
    with torch.no_grad():
        weights = dict(plain.named_parameters())
        for name, p in biased.named_parameters():
            if name.endswith("weight"):
                p.copy_(weights[name])
            else:
                p.normal_()
    assert path_kernel_stats(biased, (3,)).log_trace == pytest.approx(
        path_kernel_stats(plain, (3,)).log_trace, rel=1e-12
    )


def test_all_ones_masks_change_nothing() -> None:
    model = mlp((3, 4, 2, 3), seed=7)
    ones = {n: torch.ones_like(p, dtype=torch.bool) for n, p in model.named_parameters()}
    assert path_kernel_stats(model, (3,), ones) == path_kernel_stats(model, (3,))


def test_collapse_gives_minus_infinity_and_the_flag() -> None:
    model = mlp((3, 4, 2, 3), seed=0)
    masks = {n: torch.ones_like(p, dtype=torch.bool) for n, p in model.named_parameters()}
    masks["2.weight"][:] = False
    stats = path_kernel_stats(model, (3,), masks)
    assert stats.layer_collapse
    assert stats.log_trace == stats.log_l1 == stats.log_l2_squared == -math.inf
    assert stats.log_num_paths == -math.inf
    assert stats.effective_params == 0
    assert stats.layer_density["2.weight"] == 0.0
    assert all(not math.isnan(v) for v in stats.metrics().values())
    # No layer empty, but no path through: still a collapse.
    masks = {n: torch.ones_like(p, dtype=torch.bool) for n, p in model.named_parameters()}
    masks["0.weight"][:] = False
    masks["0.weight"][0, 0] = True
    masks["2.weight"][:, 0] = False
    stats = path_kernel_stats(model, (3,), masks)
    assert stats.layer_collapse and stats.log_trace == -math.inf


def test_statistics_follow_in_place_weight_changes_and_new_modules() -> None:
    """Traced path networks are cached per model; weights must still be read at every call."""
    model = mlp((3, 4, 2, 3), seed=0)
    first = path_kernel_stats(model, (3,))
    with torch.no_grad():
        for p in model.parameters():
            p.mul_(2.0)
    # Each trace term is a product of 2 squared weights (3 layers): 2^4 per doubling.
    assert log_path_kernel_trace(model, (3,)) == pytest.approx(
        first.log_trace + 4 * math.log(2.0), rel=1e-12
    )
    model[4] = nn.Linear(2, 5, bias=False).double()  # a new module: more outputs
    table = mlp_table(model)
    assert log_path_kernel_trace(model, (3,)) == pytest.approx(
        math.log(brute_force(table, dict(model.named_parameters())).trace), rel=REL
    )


def test_metrics_are_flat_scalars_and_the_stats_pickle() -> None:
    model = mlp((3, 4, 2, 3), seed=0)
    stats = path_kernel_stats(model, (3,), _mlp_masks(model, "dead-unit"))
    metrics = stats.metrics()
    assert metrics["log_path_kernel_trace"] == stats.log_trace
    assert metrics["effective_fraction"] == stats.effective_params / stats.num_params
    assert all(isinstance(v, int | float) for v in metrics.values())
    assert pickle.loads(pickle.dumps(stats)) == stats


def test_bad_masks_and_shapes_raise() -> None:
    model = mlp((3, 4, 2), seed=0)
    with pytest.raises(ValueError, match="lacks"):
        path_kernel_stats(model, (3,), {"nope.weight": torch.ones(2, 2, dtype=torch.bool)})
    with pytest.raises(ValueError, match="shape"):
        path_kernel_stats(model, (3,), {"0.weight": torch.ones(3, 4, dtype=torch.bool)})
    with pytest.raises(ValueError, match=r"input_shape=\(5,\)"):
        log_path_kernel_trace(model, (5,))


# --------------------------------------------------------------------------- the decomposition


def _flat_helpers(
    model: nn.Module, names: list[str]
) -> tuple[torch.Tensor, Callable[[torch.Tensor], dict[str, torch.Tensor]]]:
    params = {n: p.detach() for n, p in model.named_parameters()}
    sizes = [params[n].numel() for n in names]
    flat = torch.cat([params[n].reshape(-1) for n in names])

    def unflatten(vector: torch.Tensor) -> dict[str, torch.Tensor]:
        parts = torch.split(vector, sizes)
        return {n: t.reshape(params[n].shape) for n, t in zip(names, parts, strict=True)}

    return flat, unflatten


def _gates(model: nn.Sequential, masked: dict[str, torch.Tensor], x: torch.Tensor) -> list:
    """ReLU gates of every hidden Linear output of the masked network at input x."""
    gates, h = [], x
    for i, module in enumerate(model):
        if isinstance(module, nn.Linear):
            h = h @ masked[f"{i}.weight"].T
            gates.append(h > 0)
        elif isinstance(module, nn.ReLU):
            h = torch.relu(h)
    return gates[:-1]  # the output layer has no gate


@pytest.mark.parametrize("masked", [False, True])
def test_ntk_factors_through_the_path_kernel(masked: bool) -> None:
    """Θ(x, x') from torch.func equals J_v f(x) Π J_v f(x')ᵀ from explicit path quantities."""
    model = mlp((3, 4, 3, 2), seed=11)
    table = mlp_table(model)
    names = table.names
    masks = random_masks(model, names, 0.7, seed=2) if masked else None
    flat, unflatten = _flat_helpers(model, names)
    mask_flat = (
        torch.cat([masks[n].reshape(-1) for n in names]) if masks else torch.ones_like(flat) > 0
    )

    def f(vector: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        weights = unflatten(vector * mask_flat)  # pruned weights are no parameters
        return functional_call(model, weights, (x,))

    def path_values(vector: torch.Tensor) -> torch.Tensor:
        return table.edge_values(unflatten(vector * mask_flat)).prod(dim=0)

    jac_v = jacrev(path_values)(flat)[:, mask_flat]  # J_θ v, P × surviving parameters
    kernel = jac_v @ jac_v.T  # Π_θ
    v = path_values(flat)
    n_out = 2
    gen = torch.Generator().manual_seed(0)
    xs = torch.randn(4, 3, generator=gen, dtype=torch.float64)
    masked_weights = unflatten(flat * mask_flat)
    jv_f = []
    closed = 0
    for x in xs:
        gate = torch.ones(v.shape[0], dtype=torch.float64)
        for i, g in enumerate(_gates(model, masked_weights, x[None])):
            gate = gate * g[0, table.units[i + 1]]
        closed += int((gate == 0).sum())
        ends = table.units[-1] == torch.arange(n_out)[:, None]  # (K, P)
        jv_f.append(ends * (gate * x[table.units[0]]))  # J_v f(x)[k, p] = a_p(x) x_in(p)
        torch.testing.assert_close(jv_f[-1] @ v, f(flat, x[None])[0], rtol=1e-12, atol=1e-12)
    assert closed > 0  # some ReLUs are closed: the gates matter
    jac = [jacrev(f)(flat, x[None])[0][:, mask_flat] for x in xs]
    for i in range(len(xs)):
        for j in range(len(xs)):
            ntk = jac[i] @ jac[j].T
            via_paths = jv_f[i] @ kernel @ jv_f[j].T
            torch.testing.assert_close(via_paths, ntk, rtol=1e-10, atol=1e-12)
    trace = float(torch.trace(kernel))
    assert trace == pytest.approx(brute_force(table, masked_weights, masks).trace, rel=1e-12)
    assert math.exp(log_path_kernel_trace(model, (3,), masks)) == pytest.approx(trace, rel=REL)


# --------------------------------------------------------------------------- deep models


def _deep(name: str) -> nn.Module:
    torch.manual_seed(0)
    return pruners.build_model(name, (3, 32, 32), 10)


@pytest.mark.slow
@pytest.mark.parametrize("name", ["resnet110", "vgg16"])
def test_deep_models_float32_statistics_are_finite_and_match_float64(name: str) -> None:
    model = _deep(name)
    double = copy.deepcopy(model).double()  # before anything could run in train mode
    before = state(model)
    stats = path_kernel_stats(model, (3, 32, 32))
    assert_same_state(model, before)
    for key, value in stats.metrics().items():
        assert math.isfinite(value), key
    assert not stats.layer_collapse
    assert stats.effective_params == stats.num_params
    exact = path_kernel_stats(double, (3, 32, 32))
    for key in ("log_trace", "log_l1", "log_l2_squared", "log_num_paths"):
        assert getattr(stats, key) == pytest.approx(getattr(exact, key), rel=1e-5), key
    assert stats.effective_params == exact.effective_params
    assert log_path_kernel_trace(model, (3, 32, 32)) == pytest.approx(exact.log_trace, rel=1e-5)
    # float32 would overflow without rescaling: R(|θ|) alone exceeds its range on ResNet-110.
    if name == "resnet110":
        assert exact.log_l1 > math.log(torch.finfo(torch.float32).max)
    masks = pruners.prune(model, "magnitude", 0.05, input_shape=(3, 32, 32))
    sparse = path_kernel_stats(model, (3, 32, 32), masks)
    assert math.isfinite(sparse.log_trace) and sparse.log_trace < stats.log_trace
    assert sparse.log_trace == pytest.approx(
        log_path_kernel_trace(double, (3, 32, 32), masks), rel=1e-5
    )
