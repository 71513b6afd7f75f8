"""The sanity checks of Frankle et al. (2021) change exactly what they claim, nothing else.

- shuffle: every layer keeps its count of kept weights, the positions change;
- reinitialize: the masks still apply, every layer keeps its multiset of values, the positions
  change, everything else (and the caller's model) is untouched;
- invert: ``prune(..., invert=True)`` keeps the lowest-scoring weights of :func:`pruners.score`.
"""

from __future__ import annotations

import pytest
import torch
from torch import nn

import pruners
from pruners.data import PruneSample
from pruners.masks import apply_masks, check_masks, prunable_parameters
from pruners.sanity import reinitialize, shuffle_masks

SHAPE = (1, 8, 8)


def conv_bn() -> nn.Module:
    torch.manual_seed(0)
    model = pruners.build_model("conv", SHAPE, 10, width=4, depth=2, batch_norm=True)
    with torch.no_grad():
        params = dict(model.named_parameters())
        params["classifier.bias"].normal_()
        params["bn1.weight"].uniform_(0.5, 1.5)
    return model


@pytest.fixture(scope="module")
def sample() -> PruneSample:
    return pruners.prune_sample(pruners.load_dataset("digits"), per_class=2)


# --------------------------------------------------------------------------- shuffle


def test_shuffle_keeps_each_layer_count_and_moves_positions() -> None:
    model = conv_bn()
    masks = pruners.prune(model, "synflow", 0.2, 3, input_shape=SHAPE)
    originals = {n: m.clone() for n, m in masks.items()}
    shuffled = shuffle_masks(masks, seed=1)
    assert shuffled.keys() == masks.keys()
    for name, mask in masks.items():
        assert torch.equal(mask, originals[name])  # input untouched
        assert shuffled[name].shape == mask.shape and shuffled[name].dtype == torch.bool
        assert int(shuffled[name].sum()) == int(mask.sum())
        if 0 < int(mask.sum()) < mask.numel() - 1:
            assert not torch.equal(shuffled[name], mask), name
    again = shuffle_masks(masks, seed=1)
    other = shuffle_masks(masks, seed=2)
    assert all(torch.equal(again[n], shuffled[n]) for n in masks)
    assert any(not torch.equal(other[n], shuffled[n]) for n in masks)


def test_shuffle_of_full_and_empty_layers_is_a_no_op() -> None:
    masks = {"a": torch.ones(3, 4, dtype=torch.bool), "b": torch.zeros(5, dtype=torch.bool)}
    out = shuffle_masks(masks)
    assert torch.equal(out["a"], masks["a"]) and torch.equal(out["b"], masks["b"])


# --------------------------------------------------------------------------- reinitialize


@pytest.mark.parametrize("include_bias", [False, True])
def test_reinitialize_permutes_prunable_weights_only(include_bias: bool) -> None:
    model = conv_bn()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    masks = pruners.prune(model, "magnitude", 0.3, input_shape=SHAPE)
    fresh = reinitialize(model, seed=3, include_bias=include_bias)
    assert fresh is not model
    for key, value in model.state_dict().items():  # caller's model untouched
        assert torch.equal(value, before[key]), key
    check_masks(fresh, masks)  # the masks still apply
    apply_masks(fresh, masks)  # (on the copy)
    changed = prunable_parameters(model, include_bias=include_bias)
    fresh_state = reinitialize(model, seed=3, include_bias=include_bias).state_dict()
    for key, value in fresh_state.items():
        if key in changed:
            assert torch.equal(value.flatten().sort().values, before[key].flatten().sort().values)
            assert not torch.equal(value, before[key]), key
        else:
            assert torch.equal(value, before[key]), key  # BN, buffers, (biases) untouched
    assert all(p.requires_grad for p in fresh.parameters())
    other = reinitialize(model, seed=4, include_bias=include_bias).state_dict()
    assert not torch.equal(other["conv2.weight"], fresh_state["conv2.weight"])


def test_reinitialize_changes_the_scores_but_not_their_distribution() -> None:
    model = conv_bn()
    fresh = reinitialize(model, seed=0)
    a = pruners.score(model, "magnitude", input_shape=SHAPE)
    b = pruners.score(fresh, "magnitude", input_shape=SHAPE)
    for name in a:
        assert torch.equal(a[name].flatten().sort().values, b[name].flatten().sort().values)
        assert not torch.equal(a[name], b[name])


# --------------------------------------------------------------------------- invert


def _keep_lowest(scores: dict[str, torch.Tensor], k: int) -> dict[str, torch.Tensor]:
    names = list(scores)
    flat = torch.cat([scores[n].flatten() for n in names])
    keep = torch.zeros(flat.numel(), dtype=torch.bool)
    keep[torch.sort(flat, stable=True).indices[:k]] = True  # ties: lower index first
    out, start = {}, 0
    for n in names:
        out[n] = keep[start : start + scores[n].numel()].view_as(scores[n])
        start += scores[n].numel()
    return out


@pytest.mark.parametrize("method", ["magnitude", "synflow", "snip", "pk-preserve"])
def test_invert_keeps_the_lowest_scores(method: str, sample: PruneSample) -> None:
    model = conv_bn()
    scores = pruners.score(model, method, input_shape=SHAPE, sample=sample)
    total = sum(s.numel() for s in scores.values())
    inverted = pruners.prune(model, method, 0.25, 1, input_shape=SHAPE, sample=sample,
                             invert=True)  # fmt: skip
    want = _keep_lowest(scores, round(0.25 * total))
    for name in scores:
        assert torch.equal(inverted[name], want[name]), name
    kept = torch.cat([scores[n][inverted[n]] for n in scores])
    dropped = torch.cat([scores[n][~inverted[n]] for n in scores])
    assert kept.max() <= dropped.min()
    normal = pruners.prune(model, method, 0.25, 1, input_shape=SHAPE, sample=sample)
    assert any(not torch.equal(normal[n], inverted[n]) for n in scores)


def test_iterative_inversion_reaches_the_density() -> None:
    model = conv_bn()
    masks = pruners.prune(model, "synflow", 0.1, 4, input_shape=SHAPE, invert=True)
    total = sum(m.numel() for m in masks.values())
    assert sum(int(m.sum()) for m in masks.values()) == round(0.1 * total)
