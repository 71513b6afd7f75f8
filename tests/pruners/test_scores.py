"""Scorers against independent, straightforward implementations.

- SynFlow family (Tanaka et al. 2020; Gebhart, Saxena, Schrater 2021, *A Unified Paths
  Perspective for Pruning at Initialization*): a float64 copy on ``|θ|^p``, one forward of the
  input, one backward, ``S = |θ|^a ∂R/∂w``, global exact top-k each round.
- ``pk-preserve``: ``|θ ⊙ ∂Tr(Π)/∂θ|`` with the trace from explicit path Jacobians and its
  gradient from ``torch.func`` (a true double derivative of the brute-force trace).
- SNIP (Lee et al. 2019) and GraSP (Wang et al. 2020) from ``torch.func`` gradients and the
  explicit Hessian.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Callable, Mapping

import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call, grad, hessian, jacrev

import pruners
from pruners.data import PruneSample
from pruners.masks import prunable_parameters
from tests.pruners.test_paths import (
    PathTable,
    cnn_table,
    linearized_copy,
    mlp,
    mlp_table,
    randomize_norms,
    tiny_cnn,
)

SHAPE = (1, 8, 8)


@pytest.fixture(scope="module")
def sample() -> PruneSample:
    return pruners.prune_sample(pruners.load_dataset("digits"), per_class=3)


def fc_model(seed: int = 0) -> nn.Module:
    """build_model's fc in float64 with non-zero biases (so bias paths matter)."""
    torch.manual_seed(seed)
    model = pruners.build_model("fc", SHAPE, 10, width=8, depth=3).double()
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith("bias"):
                p.normal_(0.0, 0.2)
    return model


def conv_model(seed: int = 0) -> nn.Module:
    """build_model's conv with BatchNorm (non-trivial γ, β, running stats), float64."""
    torch.manual_seed(seed)
    model = pruners.build_model("conv", SHAPE, 10, width=3, depth=2, batch_norm=True).double()
    randomize_norms(model, seed)
    with torch.no_grad():
        dict(model.named_parameters())["classifier.bias"].normal_(0.0, 0.2)
    return model


MODELS: dict[str, Callable[[int], nn.Module]] = {"fc": fc_model, "conv": conv_model}


# --------------------------------------------------------------------------- SynFlow reference


def reference_synflow_scores(
    model: nn.Module,
    masks: Mapping[str, torch.Tensor],
    power: float,
    score_power: float,
    x: torch.Tensor,
) -> dict[str, torch.Tensor]:
    """Straightforward SynFlow-family scores: copy, |θ|^p ⊙ mask, forward x, sum, backward."""
    net = linearized_copy(model, power, bias_paths=True)
    params = dict(net.named_parameters())
    with torch.no_grad():
        for name, mask in masks.items():
            params[name].mul_(mask)
    net(x.double()).sum().backward()
    theta = dict(model.named_parameters())
    return {
        n: theta[n].detach().double().abs() ** score_power * params[n].grad  # type: ignore[operator]
        for n in masks
    }


def reference_keep(
    scores: Mapping[str, torch.Tensor], masks: Mapping[str, torch.Tensor], k: int
) -> dict[str, torch.Tensor]:
    """Keep the k highest-scoring surviving weights; ties go to the lower flat index."""
    names = list(masks)
    flat = torch.cat([scores[n].reshape(-1) for n in names])
    alive = torch.nonzero(torch.cat([masks[n].reshape(-1) for n in names])).flatten()
    order = torch.sort(flat[alive], descending=True, stable=True).indices
    new = torch.zeros(flat.numel(), dtype=torch.bool)
    new[alive[order[:k]]] = True
    out, start = {}, 0
    for n in names:
        out[n] = new[start : start + masks[n].numel()].view(masks[n].shape)
        start += masks[n].numel()
    return out


def reference_synflow_prune(
    model: nn.Module,
    density: float,
    iterations: int,
    *,
    power: float,
    score_power: float,
    x: torch.Tensor,
    schedule: str = "exponential",
) -> dict[str, torch.Tensor]:
    masks = {
        n: torch.ones_like(p, dtype=torch.bool)
        for n, p in model.named_parameters()
        if n.endswith("weight") and p.dim() > 1
    }
    total = sum(m.numel() for m in masks.values())
    for r in range(1, iterations + 1):
        if schedule == "exponential":
            d = density ** (r / iterations)
        else:
            d = density if r == iterations else 1 - (1 - density) * r / iterations
        scores = reference_synflow_scores(model, masks, power, score_power, x)
        masks = reference_keep(scores, masks, round(d * total))
    return masks


PRESETS = {
    "synflow": (1.0, 1.0, "ones"),
    "synflow-l2": (2.0, 1.0, "ones"),
    "synflow-dist": (1.0, 1.0, "data-mean"),
    "synflow-l2-dist": (2.0, 1.0, "data-mean"),
    "synflow-l2-code": (1.0, 2.0, "ones"),  # the authors' code's SynFlow-L2
}


def _input(kind: str, sample: PruneSample) -> torch.Tensor:
    if kind == "ones":
        return torch.ones(1, *SHAPE, dtype=torch.float64)
    return sample.raw_mean[None].double()


def assert_same_masks(got: Mapping[str, torch.Tensor], want: Mapping[str, torch.Tensor]) -> None:
    assert got.keys() == want.keys()
    for n in want:
        assert torch.equal(got[n], want[n]), f"{n}: {int((got[n] != want[n]).sum())} differ"


@pytest.mark.parametrize("schedule", ["exponential", "linear"])
@pytest.mark.parametrize("preset", list(PRESETS))
@pytest.mark.parametrize("model_name", list(MODELS))
def test_synflow_presets_equal_straightforward_implementation(
    model_name: str, preset: str, schedule: str, sample: PruneSample
) -> None:
    model = MODELS[model_name](1)
    power, score_power, kind = PRESETS[preset]
    density, iterations = 0.08, 6
    want = reference_synflow_prune(
        model, density, iterations, power=power, score_power=score_power,
        x=_input(kind, sample), schedule=schedule,
    )  # fmt: skip
    got = pruners.prune(
        model, preset, density, iterations, schedule, input_shape=SHAPE, sample=sample
    )
    assert_same_masks(got, want)
    total = sum(m.numel() for m in want.values())
    assert sum(int(m.sum()) for m in got.values()) == round(density * total)


@pytest.mark.parametrize(("power", "score_power"), [(1.5, 0.5), (0.5, 2.0), (2.0, 0.0)])
def test_synflow_family_knobs_equal_straightforward_implementation(
    power: float, score_power: float, sample: PruneSample
) -> None:
    """a ≠ p: the score exponent is applied to |θ|, the path exponent inside the network."""
    model = conv_model(3)
    want = reference_synflow_prune(
        model, 0.1, 4, power=power, score_power=score_power, x=_input("data-mean", sample)
    )
    got = pruners.prune(
        model, "synflow", 0.1, 4, input_shape=SHAPE, sample=sample,
        path_exponent=power, score_exponent=score_power, input="data-mean",
    )  # fmt: skip
    assert_same_masks(got, want)


def test_float32_model_with_float64_computation_equals_reference() -> None:
    torch.manual_seed(2)
    model = pruners.build_model("conv", SHAPE, 10, width=3, depth=2, batch_norm=True)
    randomize_norms(model, 2)
    want = reference_synflow_prune(
        model, 0.1, 5, power=2.0, score_power=1.0, x=torch.ones(1, *SHAPE)
    )
    got = pruners.prune(model, "synflow-l2", 0.1, 5, input_shape=SHAPE, dtype=torch.float64)
    assert_same_masks(got, want)


@pytest.mark.parametrize("preset", list(PRESETS))
@pytest.mark.parametrize("model_name", list(MODELS))
def test_synflow_scores_are_the_exact_scores_times_one_positive_constant(
    model_name: str, preset: str, sample: PruneSample
) -> None:
    model = MODELS[model_name](4)
    power, score_power, kind = PRESETS[preset]
    gen = torch.Generator().manual_seed(0)
    masks = {
        n: torch.rand(p.shape, generator=gen) < 0.5 for n, p in prunable_parameters(model).items()
    }
    want = reference_synflow_scores(model, masks, power, score_power, _input(kind, sample))
    got = pruners.score(model, preset, input_shape=SHAPE, masks=masks, sample=sample)
    assert got.keys() == want.keys()
    ratio = sum(float(want[n].sum()) for n in want) / sum(float(got[n].sum()) for n in got)
    assert ratio > 0
    for n in want:
        assert got[n].shape == want[n].shape
        # Scores of pruned weights are ignored by selection; compare the surviving ones.
        torch.testing.assert_close(
            got[n][masks[n]] * ratio,
            want[n][masks[n]],
            rtol=1e-9,
            atol=1e-12 * float(want[n].max()),
        )


def test_synflow_l2_is_the_taylor_saliency_of_the_squared_path_norm() -> None:
    """With a = p = 2, S_j = w_j ∂R/∂w_j at w = θ²: each layer's scores sum to R = ‖v‖₂²/C.

    (R is linear in each layer; Euler's theorem per layer.)
    """
    model = mlp((3, 4, 2, 3), seed=9)
    table = mlp_table(model)
    scores = pruners.score(model, "synflow-l2", input_shape=(3,), score_exponent=2.0)
    values = table.edge_values(dict(model.named_parameters())).prod(dim=0).detach()
    l2 = float((values**2).sum())
    stats = pruners.path_kernel_stats(model, (3,))
    assert stats.log_l2_squared == pytest.approx(math.log(l2), rel=1e-12)
    # Scores carry the common factor 1/C; per layer every layer sums to the same R_2 share.
    per_layer = [float(s.sum()) for s in scores.values()]
    assert per_layer == pytest.approx([per_layer[0]] * len(per_layer), rel=1e-10)


# --------------------------------------------------------------------------- pk-preserve


def _flat(
    model: nn.Module, names: list[str]
) -> tuple[torch.Tensor, Callable[[torch.Tensor], dict[str, torch.Tensor]]]:
    params = {n: p.detach() for n, p in model.named_parameters()}
    sizes = [params[n].numel() for n in names]

    def unflatten(vector: torch.Tensor) -> dict[str, torch.Tensor]:
        parts = torch.split(vector, sizes)
        return {n: t.reshape(params[n].shape) for n, t in zip(names, parts, strict=True)}

    return torch.cat([params[n].reshape(-1) for n in names]), unflatten


def reference_pk_preserve(
    table: PathTable, model: nn.Module, masks: Mapping[str, torch.Tensor] | None
) -> dict[str, torch.Tensor]:
    """|θ ⊙ ∇_θ Tr(Π)| with Tr(Π) = ‖J_θ v‖² over surviving parameters, all by torch.func."""
    names = table.names
    flat, unflatten = _flat(model, names)
    keep = (
        torch.cat([masks[n].reshape(-1) if n in masks else torch.ones(unflatten(flat)[n].numel(),
                   dtype=torch.bool) for n in names]) if masks else torch.ones_like(flat) > 0
    )  # fmt: skip

    def trace(vector: torch.Tensor) -> torch.Tensor:
        def values(v: torch.Tensor) -> torch.Tensor:
            return table.edge_values(unflatten(v), masks).prod(dim=0)

        return (jacrev(values)(vector)[:, keep] ** 2).sum()

    return unflatten((flat * grad(trace)(flat)).abs())


def assert_proportional(
    got: Mapping[str, torch.Tensor], want: Mapping[str, torch.Tensor], rtol: float = 1e-9
) -> None:
    assert got.keys() == want.keys()
    ratio = sum(float(want[n].sum()) for n in want) / sum(float(got[n].sum()) for n in got)
    assert ratio > 0 and math.isfinite(ratio)
    for n in want:
        scale = float(max(w.abs().max() for w in want.values()))
        torch.testing.assert_close(got[n] * ratio, want[n], rtol=rtol, atol=1e-12 * scale)


@pytest.mark.parametrize("masked", [False, True])
def test_pk_preserve_equals_double_derivative_of_brute_force_trace_mlp(masked: bool) -> None:
    model = mlp((3, 4, 3, 2), seed=5)
    table = mlp_table(model)
    gen = torch.Generator().manual_seed(1)
    masks = (
        {n: torch.rand(p.shape, generator=gen) < 0.7 for n, p in model.named_parameters()}
        if masked else None
    )  # fmt: skip
    got = pruners.score(model, "pk-preserve", input_shape=(3,), masks=masks)
    assert_proportional(got, reference_pk_preserve(table, model, masks))


def test_pk_preserve_scores_batchnorm_scales_on_cnn() -> None:
    model = tiny_cnn(seed=6)
    table = cnn_table(model)
    shape = dict(model.named_parameters())["3.weight"].shape
    masks = {"3.weight": torch.rand(shape, generator=torch.Generator().manual_seed(0)) < 0.6}
    got = pruners.score(model, "pk-preserve", input_shape=(1, 3, 3), masks=masks, include_norm=True)
    want = reference_pk_preserve(table, model, masks)
    assert set(got) == set(want)  # conv, BN and Linear weights
    assert_proportional(got, want)


def test_pk_preserve_finite_difference_of_the_trace() -> None:
    """Independent of autograd: θ_j ∂Tr/∂θ_j by central differences of exp(log_trace)."""
    model = mlp((3, 4, 2, 3), seed=8)
    got = pruners.score(model, "pk-preserve", input_shape=(3,))
    trace0 = math.exp(pruners.log_path_kernel_trace(model, (3,)))
    probes = [("0.weight", (1, 2)), ("2.weight", (0, 3)), ("4.weight", (2, 1))]
    fd = []
    for name, idx in probes:
        param = dict(model.named_parameters())[name]
        h = 1e-6 * max(1.0, abs(float(param[idx].detach())))
        values = []
        for sign in (1, -1):
            shifted = copy.deepcopy(model)
            with torch.no_grad():
                dict(shifted.named_parameters())[name][idx] += sign * h
            values.append(math.exp(pruners.log_path_kernel_trace(shifted, (3,))))
        fd.append(abs(float(param[idx].detach())) * abs(values[0] - values[1]) / (2 * h))
    ratios = [f / float(got[name][idx]) for f, (name, idx) in zip(fd, probes, strict=True)]
    assert ratios == pytest.approx([ratios[0]] * len(ratios), rel=1e-6)
    assert trace0 > 0


# --------------------------------------------------------------------------- SNIP and GraSP


def _loss_fn(
    model: nn.Module,
    names: list[str],
    masks: Mapping[str, torch.Tensor] | None,
    sample: PruneSample,
    temperature: float,
) -> tuple[torch.Tensor, torch.Tensor, Callable[[torch.Tensor], torch.Tensor],
           Callable[[torch.Tensor], dict[str, torch.Tensor]]]:  # fmt: skip
    """Flat prunable weights, their keep-vector, and the sample loss of the pruned network."""
    flat, unflatten = _flat(model, names)
    keep = torch.cat([masks[n].reshape(-1) for n in names]) if masks else torch.ones_like(flat) > 0
    others = {n: p.detach() for n, p in model.named_parameters() if n not in names}
    x, y = sample.x.double(), sample.y

    def loss(vector: torch.Tensor) -> torch.Tensor:
        # Pruned weights are fixed zeros, not parameters: w = θ ⊙ m.
        weights = unflatten(vector * keep)
        logits = functional_call(model, {**others, **weights}, (x,))
        return F.cross_entropy(logits / temperature, y)

    return flat, keep, loss, unflatten


def _masks(model: nn.Module, masked: bool) -> dict[str, torch.Tensor] | None:
    if not masked:
        return None
    gen = torch.Generator().manual_seed(4)
    return {n: torch.rand(p.shape, generator=gen) < 0.6 for n, p in prunable_parameters(model).items()}  # fmt: skip


def small_fc(seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    model = pruners.build_model("fc", SHAPE, 10, width=5, depth=3).double()
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith("bias"):
                p.normal_(0.0, 0.2)
    return model


@pytest.mark.parametrize("masked", [False, True])
def test_snip_equals_its_definition(masked: bool, sample: PruneSample) -> None:
    """SNIP: |w ⊙ ∂L/∂w| at w = θ ⊙ m on the labelled sample (Lee et al. 2019)."""
    model = small_fc()
    names = list(prunable_parameters(model))
    masks = _masks(model, masked)
    flat, _keep, loss, unflatten = _loss_fn(model, names, masks, sample, 1.0)
    g = grad(loss)(flat)  # = m ⊙ ∂L/∂w
    want = unflatten((flat * g).abs())
    got = pruners.score(model, "snip", input_shape=SHAPE, masks=masks, sample=sample)
    for n in names:
        torch.testing.assert_close(got[n], want[n], rtol=1e-10, atol=1e-14)


@pytest.mark.parametrize("masked", [False, True])
def test_grasp_equals_its_definition(masked: bool, sample: PruneSample) -> None:
    """GraSP: θ ⊙ H g at temperature 200 over the surviving weights (Wang et al. 2020)."""
    model = small_fc()
    names = list(prunable_parameters(model))
    masks = _masks(model, masked)
    flat, keep, loss, unflatten = _loss_fn(model, names, masks, sample, 200.0)
    g = grad(loss)(flat)
    h = hessian(loss)(flat)  # rows/columns of pruned weights are zero: they are no parameters
    want = unflatten(flat * keep * (h @ g))
    got = pruners.score(model, "grasp", input_shape=SHAPE, masks=masks, sample=sample)
    scale = float(max(w.abs().max() for w in want.values()))
    for n in names:
        torch.testing.assert_close(got[n], want[n], rtol=1e-8, atol=1e-10 * scale)


# --------------------------------------------------------------------------- simple scorers


def test_magnitude_is_absolute_weight() -> None:
    model = fc_model()
    got = pruners.score(model, "magnitude", input_shape=SHAPE)
    for n, p in prunable_parameters(model).items():
        assert torch.equal(got[n], p.detach().abs())


def test_random_scores_depend_on_the_seed_only() -> None:
    model = fc_model()
    a = pruners.score(model, "random", input_shape=SHAPE, seed=1)
    b = pruners.score(model, "random", input_shape=SHAPE, seed=1)
    c = pruners.score(model, "random", input_shape=SHAPE, seed=2)
    for n in a:
        assert torch.equal(a[n], b[n])
        assert not torch.equal(a[n], c[n])
        assert float(a[n].min()) >= 0 and float(a[n].max()) < 1
    # Fresh draws every round: iterative random pruning differs from one-shot.
    one = pruners.prune(model, "random", 0.1, 1, input_shape=SHAPE, seed=1)
    many = pruners.prune(model, "random", 0.1, 5, input_shape=SHAPE, seed=1)
    assert any(not torch.equal(one[n], many[n]) for n in one)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"path_exponent": 0.0}, "path_exponent > 0"),
        ({"path_exponent": float("nan")}, "path_exponent > 0"),
        ({"score_exponent": -1.0}, "score_exponent >= 0"),
        ({"input": "zeros"}, "ones"),
    ],
)
def test_synflow_knobs_are_validated(kwargs: dict[str, object], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        pruners.score(fc_model(), "synflow", input_shape=SHAPE, **kwargs)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match=message):
        pruners.SynFlowParams(**kwargs)  # type: ignore[arg-type]


def test_synflow_knobs_are_refused_by_other_scorers() -> None:
    with pytest.raises(ValueError, match="SynFlow family only"):
        pruners.score(fc_model(), "magnitude", input_shape=SHAPE, path_exponent=2.0)


# --------------------------------------------------------------------------- deep models


@pytest.mark.slow
@pytest.mark.parametrize("name", ["resnet110", "vgg16"])
def test_deep_models_synflow_family_scores_are_finite_in_float32(name: str) -> None:
    """SynFlow's reference code overflows float32 here (R(|θ|) > 3.4e38); ours may not."""
    from pruners.paths import PathNetwork

    torch.manual_seed(0)
    shape = (3, 32, 32)
    model = pruners.build_model(name, shape, 10)
    net = PathNetwork(model, bias_paths=True)
    log_r = float(net(net.base_values(1.0), torch.ones(1, *shape)).log_sum())
    if name == "resnet110":
        assert log_r > math.log(torch.finfo(torch.float32).max)  # the naive sum is inf
    for method in ("synflow", "synflow-l2", "pk-preserve"):
        for dtype in (torch.float32, torch.float64):
            scores = pruners.score(model, method, input_shape=shape, dtype=dtype)
            for n, s in scores.items():
                assert s.dtype == dtype
                assert torch.isfinite(s).all() and (s >= 0).all(), (method, n)
                assert float(s.max()) > 0, (method, n)
    masks = pruners.prune(model, "synflow", 0.02, 2, input_shape=shape, dtype=torch.float32)
    scores = pruners.score(model, "synflow", input_shape=shape, masks=masks, dtype=torch.float32)
    assert all(torch.isfinite(s[masks[n]]).all() for n, s in scores.items())
    assert sum(float(s[masks[n]].sum()) for n, s in scores.items()) > 0


def test_code_variant_of_synflow_l2_is_the_family_member_p1_a2(sample: PruneSample) -> None:
    """``synflow-l2-code`` (the authors' code) is p=1, a=2; the paper's ``synflow-l2`` is not."""
    model = MODELS["fc"](0)
    args = {"input_shape": SHAPE, "sample": sample}
    code = pruners.prune(model, "synflow-l2-code", 0.05, 5, **args)
    member = pruners.prune(model, "synflow", 0.05, 5, path_exponent=1.0, score_exponent=2.0, **args)
    paper = pruners.prune(model, "synflow-l2", 0.05, 5, **args)
    assert_same_masks(code, member)
    assert any(not torch.equal(code[n], paper[n]) for n in code)


class _SharedConv(nn.Module):
    """One conv applied twice (shared weights): its gradient is the sum over both calls."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Conv2d(1, 4, 3, padding=1)
        self.shared = nn.Conv2d(4, 4, 3, padding=1)
        self.head = nn.Linear(4 * 8 * 8, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = torch.relu(self.stem(x))
        x = torch.relu(self.shared(x))
        x = torch.relu(self.shared(x))
        return self.head(x.flatten(1))


def test_synflow_on_a_conv_called_twice_equals_straightforward_implementation() -> None:
    """The dense conv's gradient buffer (kept across rounds) must not lose either call's part."""
    torch.manual_seed(0)
    model = _SharedConv().double()
    ones = torch.ones(1, *SHAPE, dtype=torch.float64)
    want = reference_synflow_prune(model, 0.1, 5, power=1.0, score_power=1.0, x=ones)
    got = pruners.prune(model, "synflow", 0.1, 5, input_shape=SHAPE)
    assert_same_masks(got, want)
