"""Tests of the linearized path network (``pruners.paths``) against explicit path enumeration.

Also home of the brute-force path oracle the other test modules import: a chain network
(Linear / Conv2d / BatchNorm scale layers) is unrolled into explicit input→output paths, each
path a list of edges, each edge one parameter entry times a constant (Gebhart, Saxena, Schrater
2021, *A Unified Paths Perspective for Pruning at Initialization*: ``v_p = Π_{j∈p} θ_j``).
"""

from __future__ import annotations

import copy
import gc
import itertools
import math
import re
import weakref
from collections.abc import Callable, Mapping
from dataclasses import dataclass

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import pruners
from pruners.paths import PathNetwork

# --------------------------------------------------------------------------- the oracle

Edge = tuple[int, int, int, float]  # (input unit, output unit, flat parameter index, coefficient)


def tensor_attr(module: nn.Module, name: str) -> torch.Tensor:
    """A module's tensor attribute (weight, bias, running stats), typed for mypy."""
    value = getattr(module, name)
    assert isinstance(value, torch.Tensor), name
    return value


def bn_std(module: nn.Module) -> torch.Tensor:
    """``sqrt(running_var + eps)`` of an eval-form BatchNorm."""
    assert isinstance(module, nn.BatchNorm2d)
    return torch.sqrt(tensor_attr(module, "running_var") + module.eps)


def bn_shift(module: nn.Module) -> torch.Tensor:
    """The eval-form BatchNorm shift ``β − γ μ / sqrt(var + eps)``."""
    gamma, beta = tensor_attr(module, "weight"), tensor_attr(module, "bias")
    return beta - gamma * tensor_attr(module, "running_mean") / bn_std(module)


@dataclass(frozen=True)
class Layer:
    """One layer of a chain network as explicit edges between units."""

    name: str  # the parameter every edge of this layer reads
    edges: list[Edge]
    n_in: int
    n_out: int
    is_norm: bool = False


def linear_layer(name: str, weight: torch.Tensor) -> Layer:
    out_f, in_f = weight.shape
    edges = [(i, o, o * in_f + i, 1.0) for o in range(out_f) for i in range(in_f)]
    return Layer(name, edges, in_f, out_f)


def conv_layer(
    name: str, weight: torch.Tensor, in_hw: tuple[int, int], stride: int = 1, padding: int = 0
) -> tuple[Layer, tuple[int, int]]:
    """Edges of a Conv2d: output unit (co, oh, ow) reads input (ci, ih, iw) through w[co,ci,a,b]."""
    co_n, ci_n, kh, kw = weight.shape
    h, w = in_hw
    oh_n, ow_n = (h + 2 * padding - kh) // stride + 1, (w + 2 * padding - kw) // stride + 1
    edges = []
    for co in range(co_n):
        for oh in range(oh_n):
            for ow in range(ow_n):
                out = (co * oh_n + oh) * ow_n + ow
                for ci in range(ci_n):
                    for a in range(kh):
                        for b in range(kw):
                            ih, iw = oh * stride - padding + a, ow * stride - padding + b
                            if 0 <= ih < h and 0 <= iw < w:
                                idx = ((co * ci_n + ci) * kh + a) * kw + b
                                edges.append(((ci * h + ih) * w + iw, out, idx, 1.0))
    return Layer(name, edges, ci_n * h * w, co_n * oh_n * ow_n), (oh_n, ow_n)


def norm_layer(name: str, bn: nn.Module, hw: tuple[int, int]) -> Layer:
    """Eval-form BatchNorm scale: unit (c, ·) → itself with value γ_c / sqrt(var_c + eps)."""
    coef = (1.0 / bn_std(bn).double()).tolist()
    size = hw[0] * hw[1]
    edges = [(u, u, u // size, coef[u // size]) for u in range(len(coef) * size)]
    return Layer(name, edges, len(edges), len(edges), is_norm=True)


@dataclass(frozen=True)
class PathTable:
    """Every input→output path of a chain network, layer by layer (row l: the l-th edge)."""

    layers: list[Layer]
    index: torch.Tensor  # (L, P) flat parameter index of each path's edge in layer l
    coef: torch.Tensor  # (L, P) float64 constant of that edge
    units: torch.Tensor  # (L + 1, P) unit visited: the input unit, then each layer's output

    @property
    def names(self) -> list[str]:
        return [layer.name for layer in self.layers]

    def edge_values(
        self, params: Mapping[str, torch.Tensor], masks: Mapping[str, torch.Tensor] | None = None
    ) -> torch.Tensor:
        """(L, P) value of every edge: coefficient × parameter × mask."""
        rows = []
        for layer_i, name in enumerate(self.names):
            value = params[name].reshape(-1)
            if masks is not None and name in masks:
                value = value * masks[name].reshape(-1).to(value.dtype)
            rows.append(self.coef[layer_i] * value[self.index[layer_i]])
        return torch.stack(rows)

    def kept(self, masks: Mapping[str, torch.Tensor] | None) -> torch.Tensor:
        """(L, P) whether each edge's parameter entry survives pruning."""
        rows = []
        for layer_i, name in enumerate(self.names):
            if masks is not None and name in masks:
                rows.append(masks[name].reshape(-1)[self.index[layer_i]])
            else:
                rows.append(torch.ones(self.index.shape[1], dtype=torch.bool))
        return torch.stack(rows)


def enumerate_paths(layers: list[Layer]) -> PathTable:
    """All input→output paths by explicit expansion, one edge per layer."""
    paths: list[tuple[list[int], list[int], list[float]]] = [
        ([u], [], []) for u in range(layers[0].n_in)
    ]
    for layer in layers:
        by_input: dict[int, list[Edge]] = {}
        for edge in layer.edges:
            by_input.setdefault(edge[0], []).append(edge)
        paths = [
            ([*units, out], [*idx, j], [*coefs, c])
            for units, idx, coefs in paths
            for _, out, j, c in by_input.get(units[-1], [])
        ]
    return PathTable(
        layers=layers,
        index=torch.tensor([p[1] for p in paths]).T.contiguous(),
        coef=torch.tensor([p[2] for p in paths], dtype=torch.float64).T.contiguous(),
        units=torch.tensor([p[0] for p in paths]).T.contiguous(),
    )


def _others_product(values: torch.Tensor) -> torch.Tensor:
    """(L, P): for each layer l, the product over the path's other edges (no division)."""
    rows = []
    for i in range(values.shape[0]):
        others = torch.cat([values[:i], values[i + 1 :]])
        rows.append(others.prod(dim=0))
    return torch.stack(rows)


@dataclass(frozen=True)
class BruteForce:
    """Path Kernel quantities summed path by path."""

    trace: float  # Σ_p Σ_{kept j ∈ p} (∂v_p/∂θ_j)²
    l1: float  # Σ_p |v_p|
    l2_squared: float  # Σ_p v_p²
    num_paths: int  # surviving input→output paths
    effective: int  # kept Linear/Conv weights on at least one path with non-zero other edges
    layer_trace: dict[str, float]


def brute_force(
    table: PathTable,
    params: Mapping[str, torch.Tensor],
    masks: Mapping[str, torch.Tensor] | None = None,
) -> BruteForce:
    values = table.edge_values({n: p.detach() for n, p in params.items()}, masks)
    kept = table.kept(masks)
    v = values.prod(dim=0)
    # ∂v_p/∂θ_j = coef_j · Π_{other edges} value; only kept entries are parameters.
    partial = table.coef * _others_product(values) * kept
    per_layer = (partial**2).sum(dim=1)
    effective = 0
    others = _others_product(values)
    for i, layer in enumerate(table.layers):
        if layer.is_norm:
            continue
        on_path = kept[i] & (others[i] != 0)
        effective += len(set(table.index[i][on_path].tolist()))
    return BruteForce(
        trace=float(per_layer.sum()),
        l1=float(v.abs().sum()),
        l2_squared=float((v**2).sum()),
        num_paths=int(kept.all(dim=0).sum()),
        effective=effective,
        layer_trace={name: float(t) for name, t in zip(table.names, per_layer, strict=True)},
    )


def mlp(widths: tuple[int, ...], *, bias: bool = False, seed: int = 0) -> nn.Sequential:
    """A float64 ReLU MLP with the given layer widths (input first)."""
    torch.manual_seed(seed)
    layers: list[nn.Module] = []
    for i, (a, b) in enumerate(itertools.pairwise(widths)):
        layers.append(nn.Linear(a, b, bias=bias))
        if i < len(widths) - 2:
            layers.append(nn.ReLU())
    return nn.Sequential(*layers).double()


def mlp_table(model: nn.Sequential) -> PathTable:
    return enumerate_paths(
        [
            linear_layer(f"{i}.weight", m.weight)
            for i, m in enumerate(model)
            if isinstance(m, nn.Linear)
        ]
    )


def randomize_norms(model: nn.Module, seed: int = 0) -> nn.Module:
    """Non-trivial BatchNorm γ (some negative), β and running statistics, in place."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d):
                n = m.num_features
                m.weight.copy_(torch.randn(n, generator=gen) * 1.5)
                m.bias.copy_(torch.randn(n, generator=gen))
                assert m.running_mean is not None and m.running_var is not None
                m.running_mean.copy_(torch.randn(n, generator=gen))
                m.running_var.copy_(torch.rand(n, generator=gen) * 2 + 0.1)
    return model


def tiny_cnn(seed: int = 0) -> nn.Module:
    """(1, 3, 3) → conv 2x2 → BN → ReLU → conv 2x2 pad 1 → BN → ReLU → Linear, bias-free."""
    torch.manual_seed(seed)
    model = nn.Sequential(
        nn.Conv2d(1, 2, 2, bias=False),
        nn.BatchNorm2d(2),
        nn.ReLU(),
        nn.Conv2d(2, 3, 2, padding=1, bias=False),
        nn.BatchNorm2d(3),
        nn.ReLU(),
        nn.Flatten(),
        nn.Linear(27, 2, bias=False),
    ).double()
    return randomize_norms(model, seed)


def cnn_table(model: nn.Module) -> PathTable:
    modules = dict(model.named_children())
    c1, hw1 = conv_layer("0.weight", tensor_attr(modules["0"], "weight"), (3, 3))
    c2, hw2 = conv_layer("3.weight", tensor_attr(modules["3"], "weight"), hw1, padding=1)
    return enumerate_paths(
        [
            c1,
            norm_layer("1.weight", modules["1"], hw1),
            c2,
            norm_layer("4.weight", modules["4"], hw2),
            linear_layer("7.weight", tensor_attr(modules["7"], "weight")),
        ]
    )


def layer_matrix(layer: Layer, values: torch.Tensor) -> torch.Tensor:
    """Dense (n_out, n_in) matrix of a layer's edges for the flat parameter ``values``."""
    matrix = torch.zeros(layer.n_out, layer.n_in, dtype=torch.float64)
    for i, o, j, c in layer.edges:
        matrix[o, i] += c * values[j]
    return matrix


def linearized_copy(model: nn.Module, power: float, *, bias_paths: bool) -> nn.Module:
    """The straightforward linearized network: a float64 eval copy with |θ|^p parameters.

    Linear/Conv weights become ``|θ|^p``, biases ``|b|^p`` (or 0); an eval BatchNorm becomes
    the diagonal ``|γ/sqrt(var+eps)|^p`` plus the shift ``|β − γμ/sqrt(var+eps)|^p`` (or 0).
    """
    net = copy.deepcopy(model).double().eval()
    with torch.no_grad():
        for m in net.modules():
            if isinstance(m, nn.Linear | nn.Conv2d):
                m.weight.copy_(m.weight.abs() ** power)
                if m.bias is not None:
                    m.bias.copy_(m.bias.abs() ** power if bias_paths else torch.zeros_like(m.bias))
            elif isinstance(m, nn.BatchNorm2d):
                assert m.running_var is not None and m.running_mean is not None
                s = torch.sqrt(m.running_var + m.eps)
                shift = m.bias - m.weight * m.running_mean / s
                m.weight.copy_((m.weight / s).abs() ** power * s)
                m.bias.copy_(shift.abs() ** power if bias_paths else torch.zeros_like(shift))
                m.running_mean.zero_()
    return net


def state(model: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def assert_same_state(model: nn.Module, before: Mapping[str, torch.Tensor]) -> None:
    after = model.state_dict()
    assert after.keys() == before.keys()
    for k, v in before.items():
        assert torch.equal(after[k], v), f"{k} changed"


# --------------------------------------------------------------------------- oracle self-check


def test_oracle_layers_reproduce_the_modules() -> None:
    """The unrolled edges are the modules' linear maps (checks the oracle itself)."""
    model = tiny_cnn()
    table = cnn_table(model)
    x = torch.randn(1, 1, 3, 3, dtype=torch.float64)
    children = dict(model.named_children())
    modules = [children[k] for k in ("0", "1", "3", "4", "7")]
    h = x
    for layer, module in zip(table.layers, modules, strict=True):
        values = dict(model.named_parameters())[layer.name].detach().reshape(-1)
        expected = layer_matrix(layer, values) @ h.reshape(-1)
        if isinstance(module, nn.BatchNorm2d):
            got = module.eval()(h) - bn_shift(module).view(1, -1, 1, 1)
        elif isinstance(module, nn.Linear):
            got = module(h.reshape(1, -1))
        else:
            got = module(h)
        torch.testing.assert_close(got.detach().reshape(-1), expected, rtol=1e-12, atol=1e-12)
        h = got.detach()
    assert table.index.shape[1] == 768  # 9 inputs → 32 → 384 → 768 paths


# --------------------------------------------------------------------------- R and ∇R


def _random_values(net: PathNetwork, seed: int) -> dict[str, torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    return {
        n: torch.rand(m.shape, generator=gen, dtype=torch.float64) + 0.05
        for n, m in net.magnitudes().items()
    }


@pytest.mark.parametrize("widths", [(3, 4, 2, 3), (2, 3, 4, 3, 2)])
def test_r_and_gradient_equal_path_sums_on_mlp(widths: tuple[int, ...]) -> None:
    model = mlp(widths)
    table = mlp_table(model)
    net = PathNetwork(model)
    values = {n: v.requires_grad_() for n, v in _random_values(net, 1).items()}
    out = net(values, torch.ones(1, widths[0], dtype=torch.float64))
    exact = table.edge_values(values).prod(dim=0).sum()
    assert math.isclose(
        float(out.log_sum().detach()), math.log(float(exact.detach())), rel_tol=1e-12
    )
    grads = torch.autograd.grad(out.output.sum(), list(values.values()))
    exact_grads = torch.autograd.grad(exact, list(values.values()))
    scale = math.exp(float(out.log_scale))
    for g, e in zip(grads, exact_grads, strict=True):
        torch.testing.assert_close(g * scale, e, rtol=1e-10, atol=0)


def test_r_and_gradient_equal_path_sums_on_cnn_with_batchnorm() -> None:
    model = tiny_cnn()
    table = cnn_table(model)
    net = PathNetwork(model)
    assert set(net.magnitudes()) == set(table.names)  # BN scales are path layers, shifts not
    mags = net.magnitudes()
    # BatchNorm enters in eval form: |γ / sqrt(var + eps)|.
    bn = dict(model.named_children())["1"]
    torch.testing.assert_close(mags["1.weight"], (tensor_attr(bn, "weight") / bn_std(bn)).abs())
    values = {n: v.requires_grad_() for n, v in _random_values(net, 2).items()}
    # The oracle's BN edges carry the coefficient 1/s; feed it γ = value·s so edges = value.
    oracle_params = dict(values)
    for name, module in _norms(model).items():
        oracle_params[name] = values[name] * bn_std(module)
    out = net(values, torch.ones(1, 1, 3, 3, dtype=torch.float64))
    exact = table.edge_values(oracle_params).prod(dim=0).sum()
    assert math.isclose(
        float(out.log_sum().detach()), math.log(float(exact.detach())), rel_tol=1e-12
    )
    grads = torch.autograd.grad(out.output.sum(), list(values.values()))
    exact_grads = torch.autograd.grad(exact, list(values.values()))
    scale = math.exp(float(out.log_scale))
    for g, e in zip(grads, exact_grads, strict=True):
        torch.testing.assert_close(g * scale, e, rtol=1e-10, atol=0)


def _straightforward(
    model: nn.Module, power: float, bias_paths: bool, shape: tuple[int, ...]
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """R and ∇R of the straightforward float64 linearized copy (see linearized_copy)."""
    net = linearized_copy(model, power, bias_paths=bias_paths)
    params = [p for n, p in net.named_parameters()]
    out = net(torch.ones(1, *shape, dtype=torch.float64)).sum()
    return out.detach(), dict(zip([n for n, _ in net.named_parameters()], torch.autograd.grad(out, params),
                         strict=True))  # fmt: skip


@pytest.mark.parametrize("bias_paths", [False, True])
@pytest.mark.parametrize("name", ["fc", "conv", "resnet20"])
def test_network_equals_straightforward_linearized_model(name: str, bias_paths: bool) -> None:
    """R and ∇R (up to the common factor C) equal the eval-mode copy on |θ|^p, forward ones.

    Covers biases (random, non-zero), BatchNorm with non-trivial statistics, max-pooling and
    residual adds (cuts at merges).
    """
    torch.manual_seed(0)
    shape = (1, 8, 8)
    options = {"fc": {"width": 6, "depth": 3}, "conv": {"width": 3, "depth": 2,
               "batch_norm": True}, "resnet20": {"width": 2}}[name]  # fmt: skip
    model = pruners.build_model(name, shape, 3, **options).double()
    randomize_norms(model)
    with torch.no_grad():
        for n, p in model.named_parameters():
            if n.endswith("bias"):
                p.add_(torch.randn_like(p) * 0.3)
    before = state(model)
    power = 1.5
    expected, expected_grads = _straightforward(model, power, bias_paths, shape)
    net = PathNetwork(model, bias_paths=bias_paths)
    values = {n: v.requires_grad_() for n, v in net.base_values(power).items()}
    out = net(values, torch.ones(1, *shape, dtype=torch.float64))
    assert math.isclose(float(out.log_sum().detach()), math.log(float(expected)), rel_tol=1e-10)
    grads = torch.autograd.grad(out.output.sum(), list(values.values()))
    scale = math.exp(float(out.log_scale))
    bn_scale = {n: bn_std(m) for n, m in _norms(model).items()}
    for n, g in zip(values, grads, strict=True):
        exact = expected_grads[n]
        if n in bn_scale:  # the copy's γ' = value · s, so ∂R/∂value = s ∂R/∂γ'
            exact = exact * bn_scale[n]
        torch.testing.assert_close(
            g * scale, exact, rtol=1e-9, atol=1e-12 * float(exact.abs().max())
        )
    assert_same_state(model, before)


def _norms(model: nn.Module) -> dict[str, nn.Module]:
    return {f"{n}.weight": m for n, m in model.named_modules() if isinstance(m, nn.BatchNorm2d)}


# --------------------------------------------------------------------------- numerics


def test_float32_never_overflows_where_the_exact_value_is_finite() -> None:
    """A deep MLP whose path sum overflows float32 (but not float64) stays finite."""
    torch.manual_seed(0)
    model = pruners.build_model("fc", (1, 8, 8), 10, width=20, depth=30, bias=False)
    with torch.no_grad():
        for p in model.parameters():
            p.mul_(4.0)
    naive32 = linearized_copy(model, 1.0, bias_paths=False).float()(torch.ones(1, 1, 8, 8)).sum()
    assert not torch.isfinite(naive32)  # the problem is real in float32
    exact, exact_grads = _straightforward(model, 1.0, False, (1, 8, 8))
    assert torch.isfinite(exact)
    net = PathNetwork(model)
    values = {n: v.requires_grad_() for n, v in net.base_values(1.0).items()}
    out = net(values, torch.ones(1, 1, 8, 8))
    assert out.output.dtype == torch.float32
    assert math.isclose(
        float(out.log_sum().detach()), math.log(float(exact.detach())), rel_tol=1e-6
    )
    grads = torch.autograd.grad(out.output.sum(), list(values.values()))
    for (n, _), g in zip(values.items(), grads, strict=True):
        assert torch.isfinite(g).all()
        # Same direction as the exact gradient: the common factor is the same for all layers.
        ratio = exact_grads[n] / (g.double() * math.exp(float(out.log_scale)))
        torch.testing.assert_close(ratio, torch.ones_like(ratio), rtol=1e-4, atol=0)


def test_zero_biases_stay_zero_when_path_sums_underflow() -> None:
    """Bias paths: a zero bias must contribute 0, not 0·inf = NaN, when C underflows float32."""
    torch.manual_seed(0)
    model = pruners.build_model("fc", (1, 8, 8), 10, width=20, depth=20)  # zero biases
    with torch.no_grad():
        for n, p in model.named_parameters():
            if n.endswith("weight"):
                p.mul_(0.05)
    exact, _ = _straightforward(model, 2.0, True, (1, 8, 8))
    assert 0 < float(exact) < 1e-38  # far below float32's range
    net = PathNetwork(model, bias_paths=True)
    out = net(net.base_values(2.0), torch.ones(1, 1, 8, 8))
    assert torch.isfinite(out.output).all()
    assert math.isclose(
        float(out.log_sum().detach()), math.log(float(exact.detach())), rel_tol=1e-5
    )
    scores = pruners.score(model, "synflow-l2", input_shape=(1, 8, 8))
    assert all(torch.isfinite(s).all() for s in scores.values())


def test_empty_network_gives_minus_infinity_not_nan() -> None:
    model = mlp((3, 4, 2))
    net = PathNetwork(model)
    values = {n: torch.zeros_like(m) for n, m in net.magnitudes().items()}
    out = net(values, torch.ones(1, 3, dtype=torch.float64))
    assert float(out.log_sum().detach()) == -math.inf
    assert torch.isfinite(out.output).all()


# --------------------------------------------------------------------------- contract


def test_cached_path_networks_do_not_keep_models_alive() -> None:
    model = mlp((3, 4, 2))
    pruners.path_kernel_stats(model, (3,))
    pruners.score(model, "synflow", input_shape=(3,))
    ref = weakref.ref(model)
    del model
    gc.collect()
    assert ref() is None


def test_path_parameters_and_norm_flags() -> None:
    model = tiny_cnn()
    net = PathNetwork(model)
    assert net.weight_names == ["0.weight", "1.weight", "3.weight", "4.weight", "7.weight"]
    assert [net.is_norm(n) for n in net.weight_names] == [False, True, False, True, False]
    assert set(net.path_parameters()) == set(net.weight_names)
    raw = net.raw_values()
    children = dict(model.named_children())
    torch.testing.assert_close(
        raw["4.weight"], tensor_attr(children["4"], "weight") / bn_std(children["4"])
    )
    assert torch.equal(raw["3.weight"], tensor_attr(children["3"], "weight"))


class _Tanh(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(3, 2)
        self.act = nn.Tanh()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(self.fc(x))


class _Branchy(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(3, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.sum() > 0:  # data-dependent control flow: fx cannot trace it
            return self.fc(x)
        return -self.fc(x)


class _RawParameter(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.w = nn.Parameter(torch.randn(2, 3))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x @ self.w.T


@pytest.mark.parametrize(
    ("model", "message"),
    [
        (_Tanh(), "not path-decomposable"),
        (_Branchy(), "traceable by torch.fx"),
        (_RawParameter(), "outside a Linear/Conv/BatchNorm"),
        (nn.Sequential(nn.Conv2d(1, 2, 3), nn.BatchNorm2d(2, affine=False)), "must be affine"),
        (
            nn.Sequential(nn.Conv2d(1, 2, 3), nn.BatchNorm2d(2, track_running_stats=False)),
            "running statistics",
        ),
    ],
)
def test_unsupported_models_raise_value_error(model: nn.Module, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        PathNetwork(model)


def test_count_mode_uses_the_masks_as_weights_without_reading_values() -> None:
    """``count=True`` counts paths from the masks alone (no weight-sized tensor of ones)."""
    torch.manual_seed(0)
    model = nn.Sequential(
        nn.Conv2d(1, 3, 3, padding=1, bias=False), nn.ReLU(), nn.Flatten(), nn.Linear(48, 2)
    )
    net = PathNetwork(model)
    masks = {"0.weight": torch.rand(3, 1, 3, 3) > 0.5}
    ones = torch.ones(1, 1, 4, 4, dtype=torch.float64)
    with torch.no_grad():
        counted = net({}, ones, masks, count=True)  # no values: the masks are the weights
        explicit = net(
            {"0.weight": masks["0.weight"].double(), "3.weight": torch.ones(2, 48).double()}, ones
        )
    assert float(counted.log_sum()) == pytest.approx(float(explicit.log_sum()), rel=1e-12)


# --------------------------------------------------------------------------- the allowlist


class _Scaled(nn.Module):
    """An MLP whose hidden activation goes through ``op`` (a lambda of the activation)."""

    def __init__(self, op: Callable[[nn.Module, torch.Tensor], torch.Tensor]) -> None:
        super().__init__()
        self.fc1 = nn.Linear(4, 6)
        self.fc2 = nn.Linear(6, 3)
        self.register_buffer("gain", torch.full((6,), 2.0))
        self.op = op

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.op(self, torch.relu(self.fc1(x))))


ACCEPTED_OPS: dict[str, tuple[Callable[[nn.Module, torch.Tensor], torch.Tensor], float]] = {
    # name: (op, factor by which R grows over the identity)
    "times 2": (lambda m, h: h * 2, 2.0),
    "2 times": (lambda m, h: 2 * h, 2.0),
    "over 4": (lambda m, h: h / 4, 0.25),
    "mul method": (lambda m, h: h.mul(3), 3.0),
    "shape arithmetic": (lambda m, h: h.view(h.size(0), h.size(1) * 1) / h.size(1), 1 / 6),
    "add alpha": (lambda m, h: torch.add(h, h, alpha=0.5), 1.5),
    "iadd": (lambda m, h: h.relu_().add_(h.contiguous()), 2.0),
    "cat and sum": (lambda m, h: torch.cat([h, h], 1).view(1, 2, 6).sum(1), 2.0),
}
REFUSED_OPS: dict[str, tuple[Callable[[nn.Module, torch.Tensor], torch.Tensor], str]] = {
    "times 0": (lambda m, h: h * 0, "operator.mul by 0"),
    "over -2": (lambda m, h: h / -2, "operator.truediv by -2"),
    "2 over": (lambda m, h: 2 / h, "operator.truediv"),
    "times buffer": (lambda m, h: h * m.gain, "operator.mul by a tensor"),
    "plus buffer": (lambda m, h: h + m.gain, "operator.add of a constant"),
    "alpha -1": (lambda m, h: torch.add(h, h, alpha=-1), "torch.add with alpha=-1"),
    "cat constant": (lambda m, h: torch.cat([h, m.gain[None]], 1)[:, :6], "of a constant"),
    "negation": (lambda m, h: -h, "operator.neg"),
    "square": (lambda m, h: h * h, "operator.mul of two activations"),
    "exp": (lambda m, h: h.exp(), "Tensor.exp"),
    "clamp": (lambda m, h: h.clamp(max=1.0), "Tensor.clamp"),
    "to float": (lambda m, h: h.float(), "Tensor.float"),
    "relu6": (lambda m, h: F.relu6(h), "relu6"),
}


@pytest.mark.parametrize("name", sorted(ACCEPTED_OPS))
def test_positive_linear_ops_are_accepted_and_scale_r_exactly(name: str) -> None:
    op, factor = ACCEPTED_OPS[name]
    torch.manual_seed(0)
    model = _Scaled(op).double()
    plain = _Scaled(lambda m, h: h).double()
    plain.load_state_dict(model.state_dict())
    ones = torch.ones(1, 4, dtype=torch.float64)
    values = PathNetwork(model).base_values(2.0)
    log_r = float(PathNetwork(model)(values, ones).log_sum())
    log_plain = float(PathNetwork(plain)(values, ones).log_sum())
    assert log_r - log_plain == pytest.approx(math.log(factor), abs=1e-12)


@pytest.mark.parametrize("name", sorted(REFUSED_OPS))
def test_ops_off_the_allowlist_are_refused_with_node_op_and_line(name: str) -> None:
    op, what = REFUSED_OPS[name]
    model = _Scaled(op)
    ones = torch.ones(1, 4)
    with pytest.raises(ValueError, match=re.escape(what) + r".*not path-decomposable \(node '"):
        net = PathNetwork(model)
        net(net.base_values(1.0), ones)
    with pytest.raises(ValueError, match=r"test_paths\.py:\d+ in <lambda>"):
        pruners.path_kernel_stats(model, (4,))


def test_relu6_module_is_refused_its_clip_is_no_path_gate() -> None:
    model = nn.Sequential(nn.Linear(4, 6), nn.ReLU6(), nn.Linear(6, 3))
    with pytest.raises(ValueError, match=r"ReLU6.*not path-decomposable"):
        pruners.path_kernel_stats(model, (4,))


def test_nan_weights_and_outputs_without_paths_are_errors_not_collapse() -> None:
    torch.manual_seed(0)
    model = _Scaled(lambda m, h: h)
    with torch.no_grad():
        model.fc1.weight[0, 0] = math.nan
    with pytest.raises(ValueError, match="NaN or negative"):
        pruners.path_kernel_stats(model, (4,))

    class Constant(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.fc = nn.Linear(4, 3)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.fc(torch.ones(x.shape))

    with pytest.raises(ValueError, match="does not depend on its input"):
        pruners.path_kernel_stats(Constant(), (4,))
    # Pruning every path is a legitimate layer collapse, not an error.
    model = _Scaled(lambda m, h: h)
    masks = {"fc2.weight": torch.zeros(3, 6, dtype=torch.bool)}
    stats = pruners.path_kernel_stats(model, (4,), masks)
    assert stats.layer_collapse and stats.log_trace == -math.inf


@pytest.mark.parametrize("use", ["trace", "stats", "synflow", "spectrum"])
def test_a_model_is_freed_once_its_last_reference_goes(use: str) -> None:
    """Path quantities must not keep a model (or its parameters) alive: a long-lived worker
    prunes one model after another, on a GPU too. The model goes with its last reference, and
    its traced path network (fx graphs are cyclic) with the next garbage collection."""
    shape = (1, 8, 8)
    torch.manual_seed(0)
    model = pruners.build_model("fc", shape, 10, width=16, depth=3)
    root, layer = weakref.ref(model), weakref.ref(model.fc1)
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        if use == "trace":
            pruners.log_path_kernel_trace(model, shape)
        elif use == "stats":
            pruners.path_kernel_stats(model, shape)
        elif use == "synflow":
            pruners.prune(model, "synflow", 0.1, 3, input_shape=shape)
        else:
            pruners.path_kernel_spectrum(model.double(), shape, k=2)
        del model
        assert root() is None, "the model outlived its last reference"
        gc.collect()
        assert layer() is None, "the model's layers outlived one garbage collection"
    finally:
        if was_enabled:
            gc.enable()
