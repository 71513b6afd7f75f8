"""Oracle tests of the Path Kernel's spectrum (``pruners.spectrum``).

Gebhart, Saxena, Schrater (2021), *A Unified Paths Perspective for Pruning at Initialization*:
``Π = J Jᵀ`` with ``J = ∂v/∂θ``. The oracles: ``J`` built by listing every path
(tests/pruners/test_paths.py) on MLPs and a CNN with BatchNorm, and ``G = Jᵀ J`` from a
``torch.func`` Hessian of ``Σ_p v_p² = 1ᵀ f_{θ⊙θ}(1)`` in ``θ`` itself on a CNN with BatchNorm
and a residual block: for a multilinear path sum ``∂²(Σ v_p²)/∂θ_j∂θ_k = 4 G_jk`` off the
diagonal and ``2 G_jj`` on it, so ``G = (H + diag H) / 4`` — a different route from the
``∇R``/``∇²R`` at ``w = θ⊙θ`` the code takes.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Iterator, Mapping

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from scipy.sparse.linalg import eigsh
from torch import nn
from torch.func import functional_call, hessian

import pruners
from pruners.spectrum import (
    TOP_ONE_BASIS,
    PathKernelSpectrum,
    SpectrumOptions,
    _frobenius,
    _lanczos,
    gram_operator,
    path_kernel_spectrum,
)
from pruners.stats import path_kernel_stats
from tests.pruners.test_paths import (
    PathTable,
    _others_product,
    cnn_table,
    mlp,
    mlp_table,
    randomize_norms,
    tiny_cnn,
)
from tests.pruners.test_stats import random_masks

REL = 1e-6  # required relative error of every eigenvalue


@pytest.fixture(autouse=True)
def _one_thread() -> Iterator[None]:
    """Tiny double-backward passes run ~6x faster on one thread of a loaded machine."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def explicit_gram(
    table: PathTable, model: nn.Module, masks: Mapping[str, torch.Tensor] | None = None
) -> torch.Tensor:
    """``G = Jᵀ J`` with ``J_pj = ∂v_p/∂θ_j`` summed path by path, kept parameters only."""
    params = {n: p.detach() for n, p in model.named_parameters()}
    values = table.edge_values(params, masks)
    kept = table.kept(masks)
    partial = table.coef * _others_product(values) * kept  # (L, P): ∂v_p/∂θ at layer l's edge
    offsets, total = {}, 0
    for name in table.names:
        offsets[name] = total
        total += params[name].numel()
    n_paths = values.shape[1]
    jac = torch.zeros(n_paths, total, dtype=torch.float64)
    rows = torch.arange(n_paths)
    for layer_i, name in enumerate(table.names):
        cols = table.index[layer_i] + offsets[name]
        jac.index_put_((rows, cols), partial[layer_i], accumulate=True)
    keep = torch.cat(
        [
            masks[n].reshape(-1) if masks and n in masks else torch.ones(params[n].numel()) > 0
            for n in table.names
        ]
    )
    jac = jac[:, keep]
    return jac.T @ jac


def top(gram: torch.Tensor, k: int) -> list[float]:
    return torch.linalg.eigvalsh(gram.detach()).flip(0)[:k].tolist()


def assert_top_equal(spec: PathKernelSpectrum, exact: list[float]) -> None:
    assert spec.converged
    assert len(spec.log_eigenvalues) == len(exact)
    assert list(spec.log_eigenvalues) == sorted(spec.log_eigenvalues, reverse=True)
    for got, want in zip(spec.log_eigenvalues, exact, strict=True):
        assert abs(math.exp(got - math.log(want)) - 1) <= REL, (got, math.log(want))


# --------------------------------------------------------------------------- path enumeration


@pytest.mark.parametrize("widths", [(3, 4, 5, 2), (2, 3, 3, 3, 2)])
@pytest.mark.parametrize("masked", [False, True])
def test_top_eigenvalues_equal_explicit_path_kernel_on_mlp(
    widths: tuple[int, ...], masked: bool
) -> None:
    model = mlp(widths, seed=3)
    table = mlp_table(model)
    masks = random_masks(model, table.names, 0.6, seed=5) if masked else None
    gram = explicit_gram(table, model, masks)
    k = 6
    spec = path_kernel_spectrum(model, (widths[0],), masks, k=k)
    assert_top_equal(spec, top(gram, k))
    # Π = J Jᵀ itself (paths × paths) has the same top eigenvalues as G = Jᵀ J
    assert spec.dimension == gram.shape[0]
    assert math.exp(spec.log_trace) == pytest.approx(float(gram.trace()), rel=1e-12)
    stats = path_kernel_stats(model, (widths[0],), masks)
    assert spec.log_trace == pytest.approx(stats.log_trace, abs=1e-12)
    assert spec.products > 0


def test_path_kernel_itself_has_the_same_spectrum() -> None:
    """The eigenvalues of the (paths × paths) Π equal those of the parameter Gram G."""
    model = mlp((3, 4, 3, 2), seed=1)
    table = mlp_table(model)
    params = {n: p.detach() for n, p in model.named_parameters()}
    partial = table.coef * _others_product(table.edge_values(params))
    jac = torch.zeros(
        partial.shape[1], sum(p.numel() for p in params.values()), dtype=torch.float64
    )
    offset = 0
    for layer_i, name in enumerate(table.names):
        jac[torch.arange(partial.shape[1]), table.index[layer_i] + offset] = partial[layer_i]
        offset += params[name].numel()
    kernel = jac @ jac.T
    spec = path_kernel_spectrum(model, (3,), k=4)
    assert_top_equal(spec, top(kernel, 4))


@pytest.mark.parametrize("masked", [False, True])
def test_top_eigenvalues_equal_explicit_path_kernel_on_cnn_with_batchnorm(masked: bool) -> None:
    model = tiny_cnn(seed=2)
    table = cnn_table(model)
    names = ["0.weight", "3.weight", "7.weight"]
    masks = random_masks(model, names, 0.7, seed=1) if masked else None
    gram = explicit_gram(table, model, masks)
    spec = path_kernel_spectrum(model, (1, 3, 3), masks, k=5)
    # this kernel has repeated eigenvalues (λ_4 = λ_3 = λ_2 unmasked): one Lanczos run alone
    # reports λ_2 once and shifts the rest; the certifying run on P G P finds the copies
    assert_top_equal(spec, top(gram, 5))
    assert_top_equal(path_kernel_spectrum(model, (1, 3, 3), masks, k=1), top(gram, 1))


# --------------------------------------------------------------------------- torch.func oracle


class ResidualCNN(nn.Module):
    """conv → BN → ReLU → [conv → BN] + skip → ReLU → conv (stride 2) → avg-pool → Linear."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(1, 2, 3, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(2)
        self.conv2 = nn.Conv2d(2, 2, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(2)
        self.conv3 = nn.Conv2d(2, 3, 2, stride=2, bias=False)
        self.bn3 = nn.BatchNorm2d(3)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(3, 2, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = F.relu(self.bn1(self.conv1(x)))
        h = F.relu(h + self.bn2(self.conv2(h)))
        h = F.relu(self.bn3(self.conv3(h)))
        return self.fc(torch.flatten(self.pool(h), 1))


def residual_cnn(seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return randomize_norms(ResidualCNN().double(), seed)


def func_gram(
    model: nn.Module, shape: tuple[int, ...], masks: Mapping[str, torch.Tensor]
) -> torch.Tensor:
    """``G = (H + diag H)/4``, ``H`` the torch.func Hessian of ``Σ_p v_p²`` in the parameters."""
    net = copy.deepcopy(model).eval()
    with torch.no_grad():
        for m in net.modules():
            if isinstance(m, nn.BatchNorm2d):
                assert m.running_mean is not None
                m.running_mean.zero_()
                m.bias.zero_()
    bn = {n for n, m in net.named_modules() if isinstance(m, nn.BatchNorm2d)}
    names = [n for n, _ in net.named_parameters() if n.endswith("weight")]
    params = dict(net.named_parameters())
    sizes = [params[n].numel() for n in names]
    flat = torch.cat([params[n].detach().reshape(-1) for n in names])
    keep = torch.cat(
        [masks[n].reshape(-1) if n in masks else torch.ones(params[n].numel()) > 0 for n in names]
    )
    ones = torch.ones((1, *shape), dtype=torch.float64)

    def sum_of_squares(vector: torch.Tensor) -> torch.Tensor:
        values = {}
        for name, part in zip(names, torch.split(vector * keep, sizes), strict=True):
            part = part.reshape(params[name].shape)
            owner = name.rpartition(".")[0]
            if owner in bn:  # eval BN computes weight · x / s: give it (γ/s)² · s
                mod = net.get_submodule(owner)
                assert isinstance(mod, nn.BatchNorm2d) and mod.running_var is not None
                s = torch.sqrt(mod.running_var + mod.eps)
                values[name] = (part / s).square() * s
            else:
                values[name] = part.square()
        return functional_call(net, values, (ones,)).sum()

    full = hessian(sum_of_squares)(flat)
    h = full[keep][:, keep]
    return (h + torch.diag(torch.diagonal(h))) / 4


@pytest.mark.parametrize("masked", [False, True])
def test_top_eigenvalues_equal_torch_func_gram_on_residual_cnn(masked: bool) -> None:
    model = residual_cnn(seed=4)
    shape = (1, 4, 4)
    masks = (
        random_masks(model, ["conv1.weight", "conv2.weight", "conv3.weight", "fc.weight"], 0.7, 3)
        if masked
        else {}
    )
    gram = func_gram(model, shape, masks)
    k = 8
    spec = path_kernel_spectrum(model, shape, masks or None, k=k)
    assert_top_equal(spec, top(gram, k))
    # G's trace is the existing Tr(Π)
    trace = float(gram.detach().trace())
    assert math.exp(spec.log_trace) == pytest.approx(trace, rel=1e-10)
    assert math.exp(path_kernel_stats(model, shape, masks or None).log_trace) == pytest.approx(
        trace, rel=1e-10
    )


def test_float32_model_matches_within_its_tolerance() -> None:
    model = residual_cnn(seed=1)
    exact = top(func_gram(model, (1, 4, 4), {}), 3)
    spec = path_kernel_spectrum(copy.deepcopy(model).float(), (1, 4, 4), k=3)
    assert spec.converged and spec.tol == 1e-4
    for got, want in zip(spec.log_eigenvalues, exact, strict=True):
        assert abs(got - math.log(want)) <= 1e-3


def test_each_value_has_a_float64_residual_that_bounds_its_distance_to_the_spectrum() -> None:
    """Some exact eigenvalue lies within ``residual·λ`` of each returned ``λ`` (float32 run)."""
    model = residual_cnn(seed=2)
    exact = torch.linalg.eigvalsh(func_gram(model, (1, 4, 4), {}).detach()).numpy()
    spec = path_kernel_spectrum(copy.deepcopy(model).float(), (1, 4, 4), k=4)
    assert spec.converged and len(spec.residuals) == 4
    for log_value, residual in zip(spec.log_eigenvalues, spec.residuals, strict=True):
        value = math.exp(log_value)
        assert 0 < residual <= spec.tol
        # the bound, with the float32 product's own rounding on top
        assert np.min(np.abs(exact - value)) <= residual * value + 1e-6 * exact.max()


def test_solver_word_is_not_taken_a_bad_ritz_vector_is_refused(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """ARPACK claiming convergence for a perturbed vector gives NaN there and converged False."""

    def spoiled(*args: object, **kwargs: object) -> tuple[np.ndarray, np.ndarray]:
        values, vectors = eigsh(*args, **kwargs)
        order = np.argsort(values)  # ascending, as ARPACK returns them
        second = order[-2]
        noise = np.random.default_rng(0).standard_normal(vectors.shape[0])
        vectors = vectors.copy()
        vectors[:, second] += 1e-3 * noise / np.linalg.norm(noise)
        return values * 1.01, vectors  # the values claimed are off, too

    model = residual_cnn(seed=0)
    exact = top(func_gram(model, (1, 4, 4), {}), 3)
    monkeypatch.setattr("pruners.spectrum.eigsh", spoiled)
    spec = path_kernel_spectrum(model, (1, 4, 4), k=3)
    assert not spec.converged
    assert math.isnan(spec.log_eigenvalues[1]) and spec.residuals[1] > spec.tol
    # the others are the checked Rayleigh quotients, not the solver's inflated values
    for i in (0, 2):
        assert spec.residuals[i] <= spec.tol
        assert abs(math.exp(spec.log_eigenvalues[i] - math.log(exact[i])) - 1) <= REL


@pytest.mark.parametrize("basis", [TOP_ONE_BASIS, 3])  # 3: restarts from its Ritz vector often
@pytest.mark.parametrize("masked", [False, True])
def test_lambda_max_alone_equals_explicit_path_kernel(
    monkeypatch: pytest.MonkeyPatch, basis: int, masked: bool
) -> None:
    """k = 1 takes its own Lanczos (torch, per-step convergence test): the oracle still holds."""
    monkeypatch.setattr("pruners.spectrum.TOP_ONE_BASIS", basis)
    model = mlp((3, 6, 5, 2), seed=7)
    table = mlp_table(model)
    masks = random_masks(model, table.names, 0.7, seed=1) if masked else None
    spec = path_kernel_spectrum(model, (3,), masks, k=1)
    assert_top_equal(spec, top(explicit_gram(table, model, masks), 1))
    assert spec.residuals[0] <= spec.tol
    cnn = residual_cnn(seed=3)
    exact = top(func_gram(cnn, (1, 4, 4), {}), 1)
    assert_top_equal(path_kernel_spectrum(cnn, (1, 4, 4), k=1), exact)
    single = path_kernel_spectrum(copy.deepcopy(cnn).float(), (1, 4, 4), k=1)
    assert single.converged and abs(single.log_eigenvalues[0] - math.log(exact[0])) <= 1e-4


def test_lambda_max_alone_out_of_restarts_is_nan(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("pruners.spectrum.TOP_ONE_BASIS", 2)
    spec = path_kernel_spectrum(residual_cnn(seed=0), (1, 4, 4), k=1, maxiter=1, tol=1e-15)
    assert not spec.converged
    assert math.isnan(spec.log_eigenvalues[0]) and math.isnan(spec.metrics()["log_lambda_max"])


# --------------------------------------------------------------------------- Hutchinson


def test_frobenius_estimate_is_within_two_stated_errors_on_most_seeds() -> None:
    """‖Π‖_F² by deflated Hutchinson probes: |estimate − exact| ≤ 2 SE on ≥ 95% of 40 seeds."""
    model = residual_cnn(seed=4)
    eig = torch.linalg.eigvalsh(func_gram(model, (1, 4, 4), {}).detach())
    exact = float((eig**2).sum())
    op = gram_operator(model, (1, 4, 4))
    values, vectors, ok = _lanczos(
        op, lambda u: op.matvec(torch.as_tensor(u)).numpy(), np.zeros((op.dimension, 0)),
        2, 1e-10, 300, np.random.default_rng(0),
    )  # fmt: skip
    assert ok
    seeds, inside, errors = 40, 0, []
    for seed in range(seeds):
        log_fro, rel_se = _frobenius(op, values, vectors, 10, np.random.default_rng(seed))
        estimate = math.exp(log_fro)  # op is G/C; the result is shifted back by log C
        errors.append(abs(estimate / exact - 1))
        inside += abs(estimate / exact - 1) <= 2 * rel_se
    assert inside >= 38, (inside, seeds)
    assert max(errors) > 1e-6  # the tail is not empty: the probes are really tested
    tail = exact - float((eig.flip(0)[:2] ** 2).sum())
    assert tail / exact > 0.05


def test_effective_rank_matches_its_definition() -> None:
    model = residual_cnn(seed=4)
    eig = torch.linalg.eigvalsh(func_gram(model, (1, 4, 4), {}).detach())
    exact = float(eig.sum() ** 2 / (eig**2).sum())
    spec = path_kernel_spectrum(model, (1, 4, 4), k=2, probes=10, seed=1)
    assert spec.probes == 10 and 0 < spec.effective_rank_se < 0.5 * spec.effective_rank
    assert abs(spec.effective_rank - exact) <= 2 * spec.effective_rank_se
    assert spec.effective_rank == pytest.approx(
        math.exp(2 * spec.log_trace - spec.log_frobenius_sq), rel=1e-12
    )


def test_stats_columns_only_when_asked() -> None:
    model = residual_cnn(seed=0)
    plain = path_kernel_stats(model, (1, 4, 4))
    assert plain.spectrum is None
    assert not set(pruners.SPECTRUM_METRICS) & set(plain.metrics())
    options = SpectrumOptions(k=3, probes=6, seed=2)
    stats = path_kernel_stats(model, (1, 4, 4), spectrum=options)
    metrics = stats.metrics()
    assert set(pruners.SPECTRUM_METRICS) <= set(metrics)
    direct = path_kernel_spectrum(model, (1, 4, 4), k=3, probes=6, seed=2)
    assert stats.spectrum == direct
    assert metrics["log_lambda_max"] == direct.log_eigenvalues[0]
    assert metrics["spectrum_converged"] == 1 and metrics["spectrum_k"] == 3
    eig = torch.linalg.eigvalsh(func_gram(model, (1, 4, 4), {})).flip(0)
    assert metrics["topk_trace_share"] == pytest.approx(float(eig[:3].sum() / eig.sum()), rel=1e-8)
    assert metrics["effective_rank"] > 1 and metrics["effective_rank_se"] > 0
    for name in pruners.SPECTRUM_METRICS:
        assert isinstance(metrics[name], float | int)
    # spectrum metrics without probes carry no effective rank
    no_probes = path_kernel_spectrum(model, (1, 4, 4), k=3)
    assert math.isnan(no_probes.metrics()["effective_rank"])


# --------------------------------------------------------------------------- refusals


def test_no_convergence_gives_nan_and_the_flag() -> None:
    model = residual_cnn(seed=0)
    spec = path_kernel_spectrum(model, (1, 4, 4), k=6, maxiter=1, tol=1e-15)
    assert not spec.converged
    assert any(math.isnan(x) for x in spec.log_eigenvalues)
    assert math.isnan(spec.metrics()["log_lambda_max"])
    assert math.isnan(spec.topk_trace_share)
    assert spec.metrics()["spectrum_converged"] == 0


def test_collapsed_network_gives_minus_infinity() -> None:
    model = mlp((3, 4, 2), seed=0)
    masks = {"0.weight": torch.zeros(4, 3, dtype=torch.bool)}
    spec = path_kernel_spectrum(model, (3,), masks, k=2, probes=4)
    assert spec.log_eigenvalues == (-math.inf, -math.inf)
    assert spec.log_trace == -math.inf


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"k": 0}, "k >= 1"),
        ({"k": 20}, "1 <= k < kept path parameters"),
        ({"probes": 1}, "probes must be 0"),
        ({"tol": 0.0}, "0 < tol < 1"),
        ({"maxiter": 0}, "maxiter >= 1"),
    ],
)
def test_bad_options_raise(kwargs: dict[str, float], message: str) -> None:
    model = mlp((3, 4, 2), seed=0)
    with pytest.raises(ValueError, match=message):
        path_kernel_spectrum(model, (3,), **kwargs)  # type: ignore[arg-type]


class _GeluModule(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.a, self.act, self.b = nn.Linear(3, 4, bias=False), nn.GELU(), nn.Linear(4, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.b(self.act(self.a(x)))


class _GeluFunctional(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.a, self.b = nn.Linear(3, 4, bias=False), nn.Linear(4, 2, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.b(F.gelu(self.a(x)))


def test_gelu_module_is_refused() -> None:
    with pytest.raises(ValueError, match="not path-decomposable"):
        path_kernel_spectrum(_GeluModule(), (3,), k=2)


def test_functional_gelu_is_refused() -> None:
    with pytest.raises(ValueError, match=r"gelu.*not path-decomposable"):
        path_kernel_spectrum(_GeluFunctional(), (3,), k=2)


@pytest.mark.slow
def test_resnet20_float32_is_finite_and_matches_float64() -> None:
    torch.manual_seed(0)
    model = pruners.build_model("resnet20", (3, 32, 32), 10)
    single = path_kernel_spectrum(model, (3, 32, 32), k=2)
    double = path_kernel_spectrum(copy.deepcopy(model).double(), (3, 32, 32), k=2, tol=1e-8)
    assert single.converged and double.converged
    assert all(math.isfinite(x) for x in single.log_eigenvalues)
    for a, b in zip(single.log_eigenvalues, double.log_eigenvalues, strict=True):
        assert abs(a - b) <= 1e-3
