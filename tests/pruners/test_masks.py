"""Masks: which parameters are prunable, applying masks, validation, saving and loading."""

from __future__ import annotations

import copy
from pathlib import Path

import pytest
import torch
from torch import nn

import pruners
from pruners.masks import (
    apply_masks,
    check_masks,
    classifier_name,
    classifier_names,
    density,
    layer_densities,
    load_masks,
    masked_copy,
    ones_masks,
    prunable_parameters,
    save_masks,
)

SHAPE = (1, 8, 8)


def conv_bn() -> nn.Module:
    torch.manual_seed(0)
    return pruners.build_model("conv", SHAPE, 10, width=3, depth=2, batch_norm=True)


def random_masks(model: nn.Module, seed: int = 0) -> dict[str, torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    return {n: torch.rand(p.shape, generator=gen) < 0.4 for n, p in prunable_parameters(model).items()}  # fmt: skip


def test_prunable_parameters_default_and_options() -> None:
    model = conv_bn()
    assert list(prunable_parameters(model)) == ["conv1.weight", "conv2.weight", "classifier.weight"]
    with_bias = prunable_parameters(model, include_bias=True)
    assert list(with_bias) == ["conv1.weight", "conv2.weight", "classifier.weight",
                               "classifier.bias"]  # fmt: skip
    with_norm = prunable_parameters(model, include_norm=True)
    assert list(with_norm) == ["conv1.weight", "bn1.weight", "conv2.weight", "bn2.weight",
                               "classifier.weight"]  # fmt: skip
    dense = prunable_parameters(model, dense_classifier=True)
    assert list(dense) == ["conv1.weight", "conv2.weight"]
    assert classifier_name(model) == "classifier.weight"
    # The layer feeding the output is the classifier, a 1x1 conv head too (issue 9).
    assert classifier_name(nn.Sequential(nn.Conv2d(1, 1, 1), nn.ReLU())) == "0.weight"
    assert classifier_name(nn.Sequential(nn.ReLU(), nn.Flatten())) is None
    params = dict(model.named_parameters())
    assert all(p is params[n] for n, p in prunable_parameters(model).items())


class _HeadFirst(nn.Module):
    """Registers its classifier before the body: registration order would name ``body.2``."""

    def __init__(self) -> None:
        super().__init__()
        self.head = nn.Linear(6, 3)
        self.body = nn.Sequential(nn.Linear(4, 5), nn.ReLU(), nn.Linear(5, 6))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(torch.relu(self.body(x)))


class _TwoHeads(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.body = nn.Linear(4, 5)
        self.a = nn.Linear(5, 3)
        self.b = nn.Linear(5, 3)
        self.tail = nn.Linear(3, 3)  # registered last, feeds nothing of the output

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = torch.relu(self.body(x))
        return self.a(h) + self.b(h)


def test_classifier_is_what_feeds_the_output_not_the_last_registered() -> None:
    model = _HeadFirst()
    assert classifier_name(model) == "head.weight"
    dense = prunable_parameters(model, dense_classifier=True)
    assert list(dense) == ["body.0.weight", "body.2.weight"]
    two = _TwoHeads()
    assert classifier_names(two) == ["a.weight", "b.weight"]
    assert list(prunable_parameters(two, dense_classifier=True)) == ["body.weight", "tail.weight"]
    with pytest.raises(ValueError, match="several layers feed the output"):
        classifier_name(two)


def test_dense_classifier_keeps_the_head_registered_first_dense() -> None:
    torch.manual_seed(0)
    masks = pruners.prune(_HeadFirst(), "synflow", 0.3, 2, input_shape=(4,), dense_classifier=True)
    assert list(masks) == ["body.0.weight", "body.2.weight"]


class _Attention(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.attn = nn.MultiheadAttention(4, 2)
        self.kv = nn.MultiheadAttention(4, 2, kdim=3, vdim=5)
        self.fc = nn.Linear(4, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.attn(x, x, x)[0])


def test_multihead_attention_weights_are_prunable_by_default() -> None:
    model = _Attention()
    assert list(prunable_parameters(model)) == [
        "attn.in_proj_weight", "attn.out_proj.weight",
        "kv.q_proj_weight", "kv.k_proj_weight", "kv.v_proj_weight", "kv.out_proj.weight",
        "fc.weight",
    ]  # fmt: skip
    with_bias = prunable_parameters(model, include_bias=True)
    assert {"attn.in_proj_bias", "attn.out_proj.bias", "fc.bias"} <= set(with_bias)
    masks = pruners.prune(model, "magnitude", 0.5, input_shape=(3, 4))
    assert "attn.in_proj_weight" in masks and "kv.q_proj_weight" in masks


def test_explicit_module_parameter_pairs_select_what_is_pruned() -> None:
    model = conv_bn()
    pairs = [(model.classifier, "weight"), (model.bn1, "weight"), (model.conv1, "weight")]
    chosen = prunable_parameters(model, parameters=pairs)
    assert list(chosen) == ["conv1.weight", "bn1.weight", "classifier.weight"]  # model order
    masks = pruners.prune(model, "magnitude", 0.5, input_shape=SHAPE, parameters=pairs)
    assert list(masks) == list(chosen)
    scores = pruners.score(model, "synflow", input_shape=SHAPE, parameters=pairs)
    assert list(scores) == list(chosen)
    with pytest.raises(ValueError, match="not part of the model"):
        prunable_parameters(model, parameters=[(nn.Linear(2, 2), "weight")])
    with pytest.raises(ValueError, match=r"'gamma', which is no parameter of BatchNorm2d"):
        prunable_parameters(model, parameters=[(model.bn1, "gamma")])
    with pytest.raises(ValueError, match="pairs"):
        prunable_parameters(model, parameters=["conv1.weight"])  # type: ignore[list-item]
    with pytest.raises(ValueError, match="include_bias"):
        prunable_parameters(model, parameters=pairs, include_bias=True)


def test_apply_masks_zeroes_exactly_the_pruned_weights_in_place() -> None:
    model = conv_bn()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    masks = random_masks(model)
    assert apply_masks(model, masks) is model
    for key, value in model.state_dict().items():
        if key in masks:
            assert torch.equal(value, before[key] * masks[key])
            assert (value[masks[key]] == before[key][masks[key]]).all()
        else:
            assert torch.equal(value, before[key]), key


def test_masked_copy_leaves_the_original_alone() -> None:
    model = conv_bn()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    masks = random_masks(model)
    copied = masked_copy(model, masks)
    assert copied is not model
    for key, value in model.state_dict().items():
        assert torch.equal(value, before[key])
    for name, p in copied.named_parameters():
        if name in masks:
            assert torch.equal(p.detach(), before[name] * masks[name])
    unchanged = masked_copy(model, ones_masks(prunable_parameters(model)))
    for key, value in unchanged.state_dict().items():
        assert torch.equal(value, before[key])


@pytest.mark.parametrize(
    ("masks", "message"),
    [
        ({"conv9.weight": torch.ones(3, 1, 3, 3, dtype=torch.bool)}, "lacks: 'conv9.weight'"),
        ({"conv1.weight": torch.ones(3, 1, 3, dtype=torch.bool)}, r"shape \(3, 1, 3, 3\)"),
        ({"conv1.weight": torch.ones(3, 1, 3, 3)}, "bool tensor, but has dtype torch.float32"),
    ],
)
def test_check_masks_errors(masks: dict[str, torch.Tensor], message: str) -> None:
    model = conv_bn()
    weight = dict(model.named_parameters())["conv1.weight"]
    before = weight.detach().clone()
    with pytest.raises(ValueError, match=message):
        check_masks(model, masks)
    with pytest.raises(ValueError, match=message):
        apply_masks(model, masks)
    with pytest.raises(ValueError, match=message):
        masked_copy(model, masks)
    assert torch.equal(weight, before)


def test_density_and_layer_densities() -> None:
    masks = {"a": torch.tensor([True, False, False, False]), "b": torch.tensor([[True, True]])}
    assert density(masks) == 3 / 6
    assert layer_densities(masks) == {"a": 0.25, "b": 1.0}
    assert density({}) == 1.0


@pytest.mark.parametrize("suffix", [".pt", ".safetensors", ".masks"])
def test_save_and_load_round_trip(tmp_path: Path, suffix: str) -> None:
    model = conv_bn()
    masks = random_masks(model)
    masks["conv2.weight"] = masks["conv2.weight"].transpose(0, 1).contiguous().transpose(0, 1)
    path = tmp_path / f"masks{suffix}"
    save_masks(masks, path)
    assert [p.name for p in tmp_path.iterdir()] == [path.name]  # no temporary file left
    loaded = load_masks(path)
    assert loaded.keys() == masks.keys()
    for name in masks:
        assert loaded[name].dtype == torch.bool
        assert torch.equal(loaded[name], masks[name])
    check_masks(model, loaded)
    if suffix == ".safetensors":
        from safetensors.torch import load_file

        assert set(load_file(str(path))) == set(masks)  # a real safetensors file
    save_masks(masks, str(path))  # str paths, and overwriting, work too
    assert torch.equal(load_masks(str(path))["conv1.weight"], masks["conv1.weight"])


def test_saved_masks_reproduce_pruning(tmp_path: Path) -> None:
    model = conv_bn()
    masks = pruners.prune(model, "synflow", 0.1, 3, input_shape=SHAPE)
    save_masks(masks, tmp_path / "m.safetensors")
    restored = load_masks(tmp_path / "m.safetensors")
    a = masked_copy(model, masks).eval()
    b = masked_copy(copy.deepcopy(model), restored).eval()
    x = torch.randn(3, *SHAPE)
    with torch.no_grad():
        assert torch.equal(a(x), b(x))
