"""One conformance suite run by every registered scorer (as optuna's sampler test cases).

Each scorer in :data:`pruners.SCORERS`, on an MLP with biases and a CNN with BatchNorm (train
mode, so a careless train-mode forward would move the running statistics), must: return scores
shaped like the parameters and finite on surviving weights; reach the density exactly in both
scopes and schedules; only shrink masks across rounds; leave the caller's model untouched;
pickle; be deterministic. Gebhart, Saxena, Schrater (2021), *A Unified Paths Perspective for
Pruning at Initialization*.
"""

from __future__ import annotations

import io
import pickle
from collections.abc import Callable

import pytest
import torch
from torch import nn

import pruners
from pruners.data import PruneSample
from pruners.masks import prunable_parameters
from pruners.pruning import schedule_densities, select

SHAPE = (1, 8, 8)
SCORERS = sorted(pruners.SCORERS)


def _fc() -> nn.Module:
    torch.manual_seed(0)
    model = pruners.build_model("fc", SHAPE, 10, width=8, depth=3)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith("bias"):
                p.normal_(0.0, 0.1)
    return model


def _conv_bn() -> nn.Module:
    torch.manual_seed(0)
    model = pruners.build_model("conv", SHAPE, 10, width=4, depth=2, batch_norm=True)
    gen = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.weight.uniform_(0.5, 1.5, generator=gen)
                m.bias.normal_(0.0, 0.1, generator=gen)
                m.running_mean.normal_(0.0, 0.1, generator=gen)  # type: ignore[union-attr]
                m.running_var.uniform_(0.5, 2.0, generator=gen)  # type: ignore[union-attr]
    return model


MODELS: dict[str, Callable[[], nn.Module]] = {"fc": _fc, "conv-bn": _conv_bn}


@pytest.fixture(scope="module")
def sample() -> PruneSample:
    return pruners.prune_sample(pruners.load_dataset("digits"), per_class=2)


@pytest.fixture(params=list(MODELS))
def model(request: pytest.FixtureRequest) -> nn.Module:
    return MODELS[request.param]()


def _state(model: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def _kept(masks: dict[str, torch.Tensor]) -> int:
    return sum(int(m.sum()) for m in masks.values())


def _half_masks(model: nn.Module) -> dict[str, torch.Tensor]:
    gen = torch.Generator().manual_seed(7)
    return {n: torch.rand(p.shape, generator=gen) < 0.5 for n, p in prunable_parameters(model).items()}  # fmt: skip


@pytest.mark.parametrize("method", SCORERS)
def test_scores_are_shaped_like_parameters_and_finite(
    method: str, model: nn.Module, sample: PruneSample
) -> None:
    params = prunable_parameters(model)
    for masks in (None, _half_masks(model)):
        scores = pruners.score(model, method, input_shape=SHAPE, masks=masks, sample=sample)
        assert list(scores) == list(params)
        for name, s in scores.items():
            assert s.shape == params[name].shape
            assert s.is_floating_point() and not s.requires_grad
            alive = masks[name] if masks else torch.ones_like(s, dtype=torch.bool)
            assert torch.isfinite(s[alive]).all(), name
        assert any(float(s.abs().sum()) > 0 for s in scores.values())


@pytest.mark.parametrize("method", SCORERS)
def test_all_ones_masks_change_nothing(method: str, model: nn.Module, sample: PruneSample) -> None:
    ones = {n: torch.ones_like(p, dtype=torch.bool) for n, p in prunable_parameters(model).items()}
    plain = pruners.score(model, method, input_shape=SHAPE, sample=sample)
    masked = pruners.score(model, method, input_shape=SHAPE, sample=sample, masks=ones)
    for name in plain:
        assert torch.equal(plain[name], masked[name])


@pytest.mark.parametrize("schedule", ["exponential", "linear"])
@pytest.mark.parametrize("scope", ["global", "layer"])
@pytest.mark.parametrize("method", SCORERS)
def test_density_is_reached_exactly(
    method: str, scope: str, schedule: str, model: nn.Module, sample: PruneSample
) -> None:
    params = prunable_parameters(model)
    density = 0.15
    masks = pruners.prune(model, method, density, 3, schedule, scope, input_shape=SHAPE,
                          sample=sample)  # fmt: skip
    assert list(masks) == list(params)
    for name, m in masks.items():
        assert m.dtype == torch.bool and m.shape == params[name].shape
    if scope == "global":
        assert _kept(masks) == round(density * sum(p.numel() for p in params.values()))
    else:
        for name, m in masks.items():
            assert int(m.sum()) == round(density * m.numel()), name


@pytest.mark.parametrize("scope", ["global", "layer"])
@pytest.mark.parametrize("method", SCORERS)
def test_masks_only_shrink_and_rounds_compose(
    method: str, scope: str, model: nn.Module, sample: PruneSample
) -> None:
    """Round by round through the public score + select equals prune; masks only shrink."""
    params = prunable_parameters(model)
    total = sum(p.numel() for p in params.values())
    masks = {n: torch.ones_like(p, dtype=torch.bool) for n, p in params.items()}
    for d in schedule_densities(0.1, 4, "exponential"):
        scores = pruners.score(model, method, input_shape=SHAPE, masks=masks, sample=sample)
        new = select(scores, masks, d, scope)
        for name in masks:
            assert not (new[name] & ~masks[name]).any(), "a pruned weight came back"
        if scope == "global":
            assert _kept(new) == round(d * total)
        masks = new
    pruned = pruners.prune(model, method, 0.1, 4, scope=scope, input_shape=SHAPE, sample=sample)
    if method != "random":  # random draws afresh each round of one prune call
        for name in masks:
            assert torch.equal(pruned[name], masks[name]), name
    fewer = pruners.prune(model, method, 0.1, 1, scope=scope, input_shape=SHAPE, sample=sample)
    assert _kept(fewer) == _kept(pruned)


@pytest.mark.parametrize("method", SCORERS)
def test_callers_model_is_untouched(method: str, model: nn.Module, sample: PruneSample) -> None:
    before = _state(model)
    requires = {n: p.requires_grad for n, p in model.named_parameters()}
    pruners.prune(model, method, 0.2, 2, input_shape=SHAPE, sample=sample)
    pruners.score(model, method, input_shape=SHAPE, sample=sample, masks=_half_masks(model))
    after = model.state_dict()
    for key, value in before.items():  # weights and buffers (BatchNorm running statistics)
        assert torch.equal(after[key], value), key
    assert model.training
    for name, p in model.named_parameters():
        assert p.grad is None, name
        assert p.requires_grad == requires[name]


@pytest.mark.parametrize("method", SCORERS)
def test_masks_and_model_pickle(method: str, model: nn.Module, sample: PruneSample) -> None:
    masks = pruners.prune(model, method, 0.2, 2, input_shape=SHAPE, sample=sample)
    loaded = pickle.loads(pickle.dumps(masks))
    assert loaded.keys() == masks.keys()
    assert all(torch.equal(loaded[n], masks[n]) for n in masks)
    clone = pickle.loads(pickle.dumps(model))
    buffer = io.BytesIO()
    torch.save(model, buffer)
    buffer.seek(0)
    saved = torch.load(buffer, weights_only=False)
    again = pruners.prune(clone, method, 0.2, 2, input_shape=SHAPE, sample=sample)
    assert all(torch.equal(again[n], masks[n]) for n in masks)
    x = torch.randn(2, *SHAPE)
    for m in (model, clone, saved):
        m.eval()
    with torch.no_grad():
        assert torch.equal(clone(x), model(x))
        assert torch.equal(saved(x), model(x))


@pytest.mark.parametrize("method", SCORERS)
def test_pruning_is_deterministic(method: str, model: nn.Module, sample: PruneSample) -> None:
    first = pruners.prune(model, method, 0.1, 3, input_shape=SHAPE, sample=sample)
    second = pruners.prune(model, method, 0.1, 3, input_shape=SHAPE, sample=sample)
    assert all(torch.equal(first[n], second[n]) for n in first)
    full = pruners.prune(model, method, 1.0, 3, input_shape=SHAPE, sample=sample)
    assert all(bool(m.all()) for m in full.values())


def test_every_scorer_is_covered() -> None:
    """The suite runs over the registry itself; a new scorer joins automatically."""
    assert set(SCORERS) == set(pruners.SCORERS)
    assert {"random", "magnitude", "snip", "grasp", "synflow", "synflow-l2", "synflow-dist",
            "synflow-l2-dist", "pk-preserve"} <= set(SCORERS)  # fmt: skip
