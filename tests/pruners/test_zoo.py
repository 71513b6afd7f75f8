"""Conformance zoo: every architecture is either computed exactly or refused loudly (issue 9).

Each model of the zoo is hand-written here. A path-decomposable one must match an independent
float64 oracle: the model's own forward (``torch.func.functional_call``) on an all-ones input
with every Linear/Conv weight replaced by ``w`` (``θ²``, ``|θ|`` or 1, times the mask), biases
set to 0, and each BatchNorm rewritten to multiply by ``w`` (zero mean, unit variance,
``γ = w``, ``β = 0``). All weights are non-negative, so every ReLU is open and max-pooling
routes what the network routes: ``R(w) = 1ᵀ f_w(1)``, and the Path Kernel's trace is
``Σ_j ∂R/∂w_j`` at ``w = θ²`` (a BatchNorm scale γ contributes ``∂R/∂c² / (σ² + ε)``),
Gebhart, Saxena, Schrater (2021). Every other model must be refused with ``ValueError`` naming
the node, the op and this file's source line, by every path quantity and path scorer, while
magnitude, random, SNIP and GraSP still prune it. Nothing in between.
"""

from __future__ import annotations

import copy
import inspect
import math
import re
from collections.abc import Callable
from dataclasses import dataclass

import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call, grad

import pruners
from pruners.data import PruneSample
from pruners.masks import prunable_parameters

MARK = "# <- refused"  # marks the source line a refusal must name

# --------------------------------------------------------------------------- computed exactly


class MLP(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.fc1 = nn.Linear(12, 10)
        self.drop = nn.Dropout(0.5)
        self.fc2 = nn.Linear(10, 8)
        self.fc3 = nn.Linear(8, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.drop(F.relu(self.fc1(x)))
        h = F.dropout(torch.relu(self.fc2(h)), 0.1, self.training)
        return self.fc3(h)


class LeNet(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(1, 3, 5)
        self.conv2 = nn.Conv2d(3, 4, 3)
        self.fc1 = nn.Linear(4 * 2 * 2, 6)
        self.fc2 = nn.Linear(6, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.max_pool2d(F.relu(self.conv1(x)), 2)
        x = F.avg_pool2d(x.relu(), 1)
        x = F.max_pool2d(F.relu(self.conv2(x)), 2)
        x = x.view(x.size(0), -1)
        return self.fc2(F.relu(self.fc1(x)))


class VGGBN(nn.Module):
    def __init__(self) -> None:
        super().__init__()

        def block(c_in: int, c_out: int) -> list[nn.Module]:
            return [nn.Conv2d(c_in, c_out, 3, padding=1), nn.BatchNorm2d(c_out), nn.ReLU(True)]

        self.features = nn.Sequential(
            *block(2, 4), *block(4, 4), nn.MaxPool2d(2), *block(4, 6), nn.MaxPool2d(2)
        )
        self.avgpool = nn.AdaptiveAvgPool2d((2, 2))
        self.classifier = nn.Sequential(
            nn.Linear(6 * 4, 8), nn.ReLU(True), nn.Dropout(), nn.Linear(8, 3)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = torch.flatten(self.avgpool(self.features(x)), 1)
        return self.classifier(x)


class BasicBlock(nn.Module):
    """torchvision's BasicBlock layout: conv1/bn1/relu(inplace)/conv2/bn2, downsample, +=."""

    expansion = 1

    def __init__(self, inplanes: int, planes: int, stride: int = 1) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(inplanes, planes, 3, stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.relu = nn.ReLU(inplace=True)
        self.conv2 = nn.Conv2d(planes, planes, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.downsample: nn.Module | None = None
        if stride != 1 or inplanes != planes:
            self.downsample = nn.Sequential(
                nn.Conv2d(inplanes, planes, 1, stride, bias=False), nn.BatchNorm2d(planes)
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        identity = x
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        if self.downsample is not None:
            identity = self.downsample(x)
        out += identity
        return self.relu(out)


class ResNet18(nn.Module):
    """torchvision's ResNet-18 layout (layers [2, 2, 2, 2]) at a small width."""

    def __init__(self, width: int = 4, num_classes: int = 3) -> None:
        super().__init__()
        self.inplanes = width
        self.conv1 = nn.Conv2d(3, width, 7, 2, padding=3, bias=False)
        self.bn1 = nn.BatchNorm2d(width)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(3, 2, padding=1)
        self.layer1 = self._make_layer(width, 1)
        self.layer2 = self._make_layer(2 * width, 2)
        self.layer3 = self._make_layer(4 * width, 2)
        self.layer4 = self._make_layer(8 * width, 2)
        self.avgpool = nn.AdaptiveAvgPool2d((1, 1))
        self.fc = nn.Linear(8 * width, num_classes)

    def _make_layer(self, planes: int, stride: int) -> nn.Sequential:
        blocks = [BasicBlock(self.inplanes, planes, stride), BasicBlock(planes, planes)]
        self.inplanes = planes
        return nn.Sequential(*blocks)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        x = torch.flatten(self.avgpool(x), 1)
        return self.fc(x)


class DepthwiseNet(nn.Module):
    """MobileNet-style depthwise-separable and grouped convolutions."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Conv2d(3, 6, 3, padding=1)
        self.dw = nn.Conv2d(6, 6, 3, padding=1, groups=6, bias=False)
        self.bn = nn.BatchNorm2d(6)
        self.pw = nn.Conv2d(6, 12, 1)
        self.grouped = nn.Conv2d(12, 12, 3, stride=2, groups=3)
        self.fc = nn.Linear(12, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.relu(self.stem(x))
        x = F.relu(self.bn(self.dw(x)))
        x = F.relu(self.grouped(F.relu(self.pw(x))))
        return self.fc(x.mean(dim=(2, 3)))


class Inception(nn.Module):
    """Concatenated branches, scaling by positive constants, torch.mean over spatial dims."""

    def __init__(self) -> None:
        super().__init__()
        self.a = nn.Conv2d(2, 3, 1)
        self.b = nn.Conv2d(2, 4, 3, padding=1)
        self.c = nn.Conv2d(2, 2, 3, padding=1)
        self.mix = nn.Conv2d(9, 5, 3)
        self.fc = nn.Linear(5, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        pooled = F.max_pool2d(x, 3, 1, padding=1)
        y = torch.cat([F.relu(self.a(x)), 2 * F.relu(self.b(x)), self.c(pooled) / 4], dim=1)
        y = F.relu(self.mix(y)).add(F.relu(self.mix(y)), alpha=0.5)
        return self.fc(torch.mean(y, dim=(-2, -1)) * 3)


class HeadFirst(nn.Module):
    """Registers its classifier before the body."""

    def __init__(self) -> None:
        super().__init__()
        self.head = nn.Linear(6, 3)
        self.body = nn.Sequential(
            nn.Conv1d(2, 4, 3), nn.BatchNorm1d(4), nn.ReLU(), nn.Flatten(), nn.Linear(16, 6)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(F.relu(self.body(x)))


# --------------------------------------------------------------------------- refused


class GELUMLP(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.fc1 = nn.Linear(12, 8)
        self.act = nn.GELU()
        self.fc2 = nn.Linear(8, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.act(self.fc1(x)))  # <- refused


class FunctionalSiLU(MLP):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = F.silu(self.fc1(x))  # <- refused
        return self.fc3(F.relu(self.fc2(h)))


class LayerNormNet(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.fc1 = nn.Linear(12, 8)
        self.norm = nn.LayerNorm(8)
        self.fc2 = nn.Linear(8, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(F.relu(self.norm(self.fc1(x))))  # <- refused


class GroupNormNet(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3)
        self.fc = nn.Linear(4, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.group_norm(self.conv(x), 2)  # <- refused
        return self.fc(F.adaptive_avg_pool2d(F.relu(x), 1).flatten(1))


class Attention(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.embed = nn.Linear(4, 8)
        self.attn = nn.MultiheadAttention(8, 2, batch_first=True)
        self.fc = nn.Linear(8, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = F.relu(self.embed(x))
        h = self.attn(h, h, h, need_weights=False)[0]  # <- refused
        return self.fc(h.mean(1))


class HandAttention(nn.Module):
    """Self-attention written out: a product of two activations, then softmax."""

    def __init__(self) -> None:
        super().__init__()
        self.q = nn.Linear(4, 6)
        self.k = nn.Linear(4, 6)
        self.fc = nn.Linear(4, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        scores = self.q(x) @ self.k(x).transpose(1, 2)  # <- refused
        h = torch.softmax(scores / 6**0.5, dim=-1) @ x
        return self.fc(h.mean(1))


class SqueezeExcite(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 8, 3)
        self.squeeze = nn.Linear(8, 2)
        self.excite = nn.Linear(2, 8)
        self.gate = nn.Sigmoid()
        self.fc = nn.Linear(8, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.relu(self.conv(x))
        s = self.excite(F.relu(self.squeeze(x.mean((2, 3)))))
        x = x * self.gate(s)[:, :, None, None]  # <- refused
        return self.fc(x.mean((2, 3)))


class ReLUGate(SqueezeExcite):
    """SE gating with a ReLU gate: a product of two activations, still no path."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.relu(self.conv(x))
        s = F.relu(self.excite(F.relu(self.squeeze(x.mean((2, 3))))))
        x = x * s.view(-1, 8, 1, 1)  # <- refused
        return self.fc(x.mean((2, 3)))


class Difference(MLP):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = F.relu(self.fc1(x))
        return self.fc3(self.fc2(h)) - 2 * self.fc3(F.relu(self.fc2(h)))  # <- refused


class Negated(MLP):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = F.relu(self.fc2(F.relu(self.fc1(x))))
        return self.fc3(h * -1.0)  # <- refused


class Shifted(MLP):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = F.relu(self.fc2(F.relu(self.fc1(x)))) + 1.0  # <- refused
        return self.fc3(h)


class TanhHead(MLP):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = F.relu(self.fc2(F.relu(self.fc1(x))))
        return torch.tanh(self.fc3(h))  # <- refused


@dataclass(frozen=True)
class Case:
    build: Callable[[], nn.Module]
    input_shape: tuple[int, ...]
    refused_op: str | None = None  # None: computed exactly; else a part of the refusal


EXACT = {
    "mlp": Case(MLP, (12,)),
    "lenet": Case(LeNet, (1, 16, 16)),
    "vgg-bn": Case(VGGBN, (2, 8, 8)),
    "resnet18": Case(ResNet18, (3, 16, 16)),
    "depthwise": Case(DepthwiseNet, (3, 8, 8)),
    "inception": Case(Inception, (2, 6, 6)),
    "head-first": Case(HeadFirst, (2, 6)),
}
REFUSED = {
    "gelu": Case(GELUMLP, (12,), "module 'act' of type GELU"),
    "silu": Case(FunctionalSiLU, (12,), "torch.nn.functional.silu"),
    "layer-norm": Case(LayerNormNet, (12,), "module 'norm' of type LayerNorm"),
    "group-norm": Case(GroupNormNet, (3, 6, 6), "torch.nn.functional.group_norm"),
    "attention": Case(Attention, (5, 4), "module 'attn' of type MultiheadAttention"),
    "hand-attention": Case(HandAttention, (5, 4), "operator.matmul"),
    "se-sigmoid": Case(SqueezeExcite, (3, 6, 6), "module 'gate' of type Sigmoid"),
    "se-relu-gate": Case(ReLUGate, (3, 6, 6), "operator.mul of two activations"),
    "difference": Case(Difference, (12,), "operator.sub"),
    "negated": Case(Negated, (12,), "operator.mul by -1.0"),
    "shifted": Case(Shifted, (12,), "operator.add of a constant"),
    "tanh-head": Case(TanhHead, (12,), "torch.tanh"),
}
PATH_SCORERS = ["synflow", "synflow-l2", "synflow-dist", "synflow-l2-dist", "pk-preserve"]
OTHER_SCORERS = ["magnitude", "random", "snip", "grasp"]


def build(case: Case, seed: int = 0) -> nn.Module:
    """The case's model with random BatchNorm statistics and scales (BN is no identity)."""
    torch.manual_seed(seed)
    model = case.build()
    for module in model.modules():
        if isinstance(module, nn.modules.batchnorm._BatchNorm):
            with torch.no_grad():
                assert module.running_mean is not None and module.running_var is not None
                module.running_mean.uniform_(-1, 1)
                module.running_var.uniform_(0.5, 2)
                module.weight.uniform_(-1.5, 1.5)
                module.bias.uniform_(-1, 1)
    return model


def random_masks(model: nn.Module, seed: int) -> dict[str, torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    return {
        n: torch.rand(p.shape, generator=gen) < 0.75 for n, p in prunable_parameters(model).items()
    }


# --------------------------------------------------------------------------- the oracle


def oracle(
    model: nn.Module,
    input_shape: tuple[int, ...],
    masks: dict[str, torch.Tensor],
    kind: str,
) -> tuple[torch.Tensor, torch.Tensor, dict[str, torch.Tensor]]:
    """``(R, Σ_j ∂R/∂w_j ⊙ mask ⊙ factor, ∂R/∂w)`` in float64 from the model's own forward.

    ``kind``: ``"square"`` (``w = θ²``, BatchNorm ``c²``), ``"abs"`` (``|θ|``, ``|c|``) or
    ``"count"`` (``w = 1``). ``c = γ / sqrt(σ² + ε)`` is BatchNorm's eval-form scale; its
    factor ``1 / (σ² + ε)`` turns ``∂R/∂c²`` into γ's share of the trace.
    """
    net = copy.deepcopy(model).double().eval()
    values: dict[str, torch.Tensor] = {}
    fixed: dict[str, torch.Tensor] = {}
    factors: dict[str, torch.Tensor] = {}
    for prefix, module in net.named_modules():
        name = f"{prefix}." if prefix else ""
        if isinstance(module, (nn.Linear, nn.modules.conv._ConvNd)):
            raw = module.weight.detach()
        elif isinstance(module, nn.modules.batchnorm._BatchNorm):
            var = module.running_var.detach()  # type: ignore[union-attr]
            raw = module.weight.detach() / torch.sqrt(var + module.eps)
            factors[name + "weight"] = 1 / (var + module.eps)
            # Rewritten so that BN(x) = weight · x: zero mean, σ² + ε = 1, zero shift.
            fixed[name + "running_mean"] = torch.zeros_like(var)
            fixed[name + "running_var"] = torch.full_like(var, 1 - module.eps)
        else:
            continue
        w = {"square": raw.square(), "abs": raw.abs(), "count": torch.ones_like(raw)}[kind]
        values[name + "weight"] = w * masks[name + "weight"] if name + "weight" in masks else w
        if getattr(module, "bias", None) is not None:
            fixed[name + "bias"] = torch.zeros_like(module.bias)
    ones = torch.ones((1, *input_shape), dtype=torch.float64)

    def total(w: dict[str, torch.Tensor]) -> torch.Tensor:
        return functional_call(net, {**w, **fixed}, (ones,)).sum()

    grads = grad(total)(values)
    trace = sum((g * masks.get(n, 1) * factors.get(n, 1)).sum() for n, g in grads.items())
    return total(values), torch.as_tensor(trace), grads


# --------------------------------------------------------------------------- exact models


@pytest.mark.parametrize("name", sorted(EXACT))
@pytest.mark.parametrize("masked", [False, True])
def test_path_decomposable_models_match_the_float64_oracle(name: str, masked: bool) -> None:
    case = EXACT[name]
    model = build(case).double()  # BatchNorm's c = γ / sqrt(σ² + ε) is formed in float64 too
    masks = random_masks(model, seed=1) if masked else {}
    stats = pruners.path_kernel_stats(model, case.input_shape, masks, dtype=torch.float64)
    r2, trace, _ = oracle(model, case.input_shape, masks, "square")
    r1, _, _ = oracle(model, case.input_shape, masks, "abs")
    count, _, _ = oracle(model, case.input_shape, masks, "count")
    assert float(trace) > 0 and float(count) > 0  # the zoo keeps paths alive
    assert stats.log_l2_squared == pytest.approx(math.log(r2), rel=1e-10, abs=1e-10)
    assert stats.log_trace == pytest.approx(math.log(trace), rel=1e-10, abs=1e-10)
    assert stats.log_l1 == pytest.approx(math.log(r1), rel=1e-10, abs=1e-10)
    assert stats.log_num_paths == pytest.approx(math.log(count), rel=1e-10, abs=1e-10)
    log_trace = pruners.log_path_kernel_trace(model, case.input_shape, masks, dtype=torch.float64)
    assert log_trace == pytest.approx(math.log(trace), rel=1e-10, abs=1e-10)
    assert not stats.layer_collapse


@pytest.mark.parametrize("name", sorted(EXACT))
def test_synflow_l2_scores_are_the_oracle_gradient_up_to_one_factor(name: str) -> None:
    """Bias-free SynFlow-L2 scores ``|θ| ∂R/∂w`` at ``w = θ²`` against the oracle's gradient."""
    case = EXACT[name]
    model = build(case).double()
    with torch.no_grad():  # bias paths are SynFlow's own; the oracle has none
        for module in model.modules():
            if isinstance(module, nn.modules.batchnorm._BatchNorm):
                module.running_mean.zero_()  # type: ignore[union-attr]
            if getattr(module, "bias", None) is not None:
                module.bias.zero_()
    masks = random_masks(model, seed=2)
    scores = pruners.score(model, "synflow-l2", input_shape=case.input_shape, masks=masks)
    _, _, grads = oracle(model, case.input_shape, masks, "square")
    params = dict(model.named_parameters())
    expected = {n: params[n].detach().double().abs() * grads[n] for n in scores}
    ratio = sum(float(e.sum()) for e in expected.values()) / sum(
        float(s.sum()) for s in scores.values()
    )
    for n in scores:
        torch.testing.assert_close(scores[n] * ratio, expected[n], rtol=1e-9, atol=1e-300)


# --------------------------------------------------------------------------- refused models


def source_line(cls: type) -> int:
    lines, start = inspect.getsourcelines(cls.forward)
    return start + next(i for i, line in enumerate(lines) if MARK in line)


def refusal_pattern(case: Case) -> str:
    """Op, node and ``test_zoo.py:<line>`` of the marked line, all in one message."""
    cls = case.build if isinstance(case.build, type) else type(case.build())
    line = source_line(cls)
    assert case.refused_op is not None
    return rf"{re.escape(case.refused_op)}.*not path-decomposable \(node '\w+' at .*test_zoo\.py:{line} "


def sample(case: Case) -> PruneSample:
    gen = torch.Generator().manual_seed(0)
    x = torch.rand((6, *case.input_shape), generator=gen)
    return PruneSample(x=x, y=torch.arange(6) % 3, raw_mean=x.mean(0))


@pytest.mark.parametrize("name", sorted(REFUSED))
def test_non_path_models_are_refused_by_every_path_quantity(name: str) -> None:
    case = REFUSED[name]
    model = build(case)
    pattern = refusal_pattern(case)
    shape = case.input_shape
    with pytest.raises(ValueError, match=pattern):
        pruners.path_kernel_stats(model, shape)
    with pytest.raises(ValueError, match=pattern):
        pruners.log_path_kernel_trace(model, shape)
    for method in PATH_SCORERS:
        with pytest.raises(ValueError, match=pattern):
            pruners.score(model, method, input_shape=shape, sample=sample(case))
    with pytest.raises(ValueError, match=pattern):
        pruners.prune(model, "synflow", 0.5, 2, input_shape=shape)
    with pytest.raises(ValueError, match=pattern):
        pruners.prune(model, "pk-preserve", 0.5, input_shape=shape, dtype=torch.float32)


@pytest.mark.parametrize("name", sorted(REFUSED))
@pytest.mark.parametrize("method", OTHER_SCORERS)
def test_non_path_scorers_still_prune_refused_models(name: str, method: str) -> None:
    case = REFUSED[name]
    model = build(case)
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    masks = pruners.prune(model, method, 0.5, input_shape=case.input_shape, sample=sample(case))
    params = prunable_parameters(model)
    assert list(masks) == list(params)
    total = sum(p.numel() for p in params.values())
    assert sum(int(m.sum()) for m in masks.values()) == round(0.5 * total)
    assert all(torch.equal(before[n], p) for n, p in model.named_parameters())


def test_the_zoo_has_ten_kinds_and_every_model_is_either_exact_or_refused() -> None:
    assert len(EXACT) + len(REFUSED) >= 10
    assert not set(EXACT) & set(REFUSED)
    for case in EXACT.values():
        assert case.refused_op is None
    for case in REFUSED.values():
        assert case.refused_op is not None
        cls = case.build if isinstance(case.build, type) else type(case.build())
        source_line(cls)  # every refused model marks the line its refusal must name
