"""Tests of the model zoo: shapes, fx-traceability, parameter counts, bad input."""

from __future__ import annotations

import re

import pytest
import torch
from torch import nn

from pruners.models import MODELS, build_model, model_options

LIGHT = [name for name in MODELS if name not in ("resnet110", "vgg16")]
SHAPES = [(3, 32, 32), (1, 8, 8)]


def n_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("name", LIGHT)
def test_builds_and_outputs_logits(name: str, shape: tuple[int, ...]) -> None:
    torch.manual_seed(0)
    model = build_model(name, shape, 10)
    out = model(torch.randn(3, *shape))
    assert out.shape == (3, 10)
    assert torch.isfinite(out).all()
    assert model.training


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("name", ["resnet110", "vgg16"])
def test_heavy_models_build_and_forward_batch_of_one(name: str, shape: tuple[int, ...]) -> None:
    model = build_model(name, shape, 10).eval()
    with torch.no_grad():
        assert model(torch.randn(1, *shape)).shape == (1, 10)


@pytest.mark.parametrize("name", list(MODELS))
def test_symbolic_trace_matches_eager(name: str) -> None:
    shape = (1, 8, 8)
    model = build_model(name, shape, 7).eval()
    traced = torch.fx.symbolic_trace(model)
    x = torch.randn(2, *shape)
    with torch.no_grad():
        torch.testing.assert_close(traced(x), model(x))
    ops = {node.target for node in traced.graph.nodes if node.op == "call_function"}
    # ReLUs are modules, never functional calls (pruners rely on it to find activations).
    assert torch.relu not in ops and nn.functional.relu not in ops


@pytest.mark.parametrize("name", [n for n in MODELS if n.startswith("resnet")])
def test_resnet_adds_are_traced_and_counted(name: str) -> None:
    depth = int(name.removeprefix("resnet"))
    model = build_model(name, (3, 32, 32), 10)
    traced = torch.fx.symbolic_trace(model)
    adds = [n for n in traced.graph.nodes if n.op == "call_function" and "add" in str(n.target)]
    assert len(adds) == 3 * (depth - 2) // 6
    convs = [m for m in model.modules() if isinstance(m, nn.Conv2d)]
    assert all(m.bias is None for m in convs)
    # Two projection shortcuts (stage 1->2 and 2->3), both 1x1 conv + BN; no option-A padding.
    assert sum(m.kernel_size == (1, 1) for m in convs) == 2


def test_resnet20_parameter_count() -> None:
    # He et al. report 0.27M for ResNet-20; two 1x1 projections add 2,944 parameters.
    count = n_params(build_model("resnet20", (3, 32, 32), 10))
    assert 265_000 <= count <= 280_000
    assert count == 272_474


def test_resnet_width_multiplier_scales_parameters() -> None:
    narrow = n_params(build_model("resnet20", (3, 32, 32), 10, width=8))
    wide = n_params(build_model("resnet20", (3, 32, 32), 10, width=16))
    assert 3.5 < wide / narrow < 4.1  # conv weights scale with width^2


def test_vgg16_parameter_count_and_structure() -> None:
    model = build_model("vgg16", (3, 32, 32), 10)
    assert 14_600_000 <= n_params(model) <= 14_800_000
    linears = [m for m in model.modules() if isinstance(m, nn.Linear)]
    assert len(linears) == 1 and linears[0].in_features == 512
    assert sum(isinstance(m, nn.Conv2d) for m in model.modules()) == 13
    assert sum(isinstance(m, nn.BatchNorm2d) for m in model.modules()) == 13


def test_vgg_without_batch_norm_and_narrow_width() -> None:
    model = build_model("vgg11", (3, 32, 32), 10, batch_norm=False, width=16)
    convs = [m for m in model.modules() if isinstance(m, nn.Conv2d)]
    assert len(convs) == 8
    assert [c.out_channels for c in convs] == [16, 32, 64, 64, 128, 128, 128, 128]
    assert all(c.bias is not None for c in convs)
    assert not any(isinstance(m, nn.BatchNorm2d) for m in model.modules())


def test_vgg_skips_max_pools_that_would_empty_small_inputs() -> None:
    pools = lambda m: sum(isinstance(x, nn.MaxPool2d) for x in m.modules())  # noqa: E731
    assert pools(build_model("vgg11", (3, 32, 32), 10)) == 4
    assert pools(build_model("vgg11", (1, 8, 8), 10)) == 3  # 8 -> 4 -> 2 -> 1, 4th skipped
    assert pools(build_model("conv", (1, 8, 8), 10, depth=5)) == 3


def test_fc_structure_follows_options() -> None:
    model = build_model("fc", (1, 8, 8), 10, width=20, depth=4, bias=False)
    linears = [m for m in model.modules() if isinstance(m, nn.Linear)]
    assert [(m.in_features, m.out_features) for m in linears] == [
        (64, 20), (20, 20), (20, 20), (20, 10),
    ]  # fmt: skip
    assert all(m.bias is None for m in linears)
    assert sum(isinstance(m, nn.ReLU) for m in model.modules()) == 3
    assert build_model("fc", (5,), 3, depth=1)(torch.randn(2, 5)).shape == (2, 3)


def test_fc_defaults() -> None:
    assert model_options("fc") == {"width": 100, "depth": 6, "bias": True}
    linears = [m for m in build_model("fc", (1, 8, 8), 10).modules() if isinstance(m, nn.Linear)]
    assert len(linears) == 6 and linears[0].out_features == 100


def test_classifier_is_last_linear() -> None:
    for name in LIGHT:
        model = build_model(name, (1, 8, 8), 10)
        last = [n for n, m in model.named_modules() if isinstance(m, nn.Linear)][-1]
        assert last.endswith("classifier")


def test_build_is_seeded_by_caller_only() -> None:
    torch.manual_seed(3)
    a = build_model("conv", (1, 8, 8), 10)
    torch.manual_seed(3)
    b = build_model("conv", (1, 8, 8), 10)
    c = build_model("conv", (1, 8, 8), 10)
    assert all(torch.equal(p, q) for p, q in zip(a.parameters(), b.parameters(), strict=True))
    assert not torch.equal(b.get_parameter("conv1.weight"), c.get_parameter("conv1.weight"))


def test_kaiming_init_and_untouched_batch_norm_stats() -> None:
    torch.manual_seed(0)
    model = build_model("resnet20", (3, 32, 32), 10)
    weight = model.get_parameter("layer2.0.conv2.weight")  # fan_in = 32 * 9
    assert abs(weight.std().item() - (2 / (32 * 9)) ** 0.5) < 0.05 * (2 / (32 * 9)) ** 0.5
    # The shape check runs in eval mode: BatchNorm running statistics are still the defaults.
    assert model.get_buffer("bn.num_batches_tracked").item() == 0
    assert torch.equal(model.get_buffer("bn.running_mean"), torch.zeros(16))


def test_unknown_model_lists_valid_names() -> None:
    with pytest.raises(ValueError, match=r"unknown model 'resnet18'; valid: \['conv', 'fc'"):
        build_model("resnet18", (3, 32, 32), 10)


def test_unknown_option_lists_valid_options() -> None:
    msg = "unknown option 'widht' for model 'fc'; valid: ['bias', 'depth', 'width']"
    with pytest.raises(ValueError) as info:
        build_model("fc", (1, 8, 8), 10, widht=3)
    assert str(info.value) == msg
    with pytest.raises(ValueError, match="unknown option 'depth' for model 'resnet20'"):
        build_model("resnet20", (3, 32, 32), 10, depth=20)


@pytest.mark.parametrize("num_classes", [1, 0, -3, True, 2.0])
def test_num_classes_below_two_rejected(num_classes: object) -> None:
    with pytest.raises(ValueError, match="num_classes >= 2 must hold"):
        build_model("fc", (1, 8, 8), num_classes)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("name", "options"),
    [
        ("fc", {"width": 0}),
        ("fc", {"depth": 0}),
        ("fc", {"width": 2.5}),
        ("conv", {"depth": -1}),
        ("vgg11", {"width": 0}),
        ("resnet20", {"width": -16}),
    ],
)
def test_non_positive_width_or_depth_rejected(name: str, options: dict[str, object]) -> None:
    ((option, value),) = options.items()
    rule = f"{option} must be a positive integer, but got {option}={value!r}"
    with pytest.raises(ValueError, match=re.escape(rule)):
        build_model(name, (3, 32, 32), 10, **options)


def test_non_bool_flags_rejected() -> None:
    with pytest.raises(ValueError, match="batch_norm must be True or False, but got batch_norm=1"):
        build_model("vgg11", (3, 32, 32), 10, batch_norm=1)


@pytest.mark.parametrize("name", [n for n in MODELS if n != "fc"])
@pytest.mark.parametrize("shape", [(64,), (8, 8), (1, 3, 8, 8)])
def test_image_models_need_three_dims(name: str, shape: tuple[int, ...]) -> None:
    with pytest.raises(ValueError, match=rf"model '{name}' cannot take input_shape="):
        build_model(name, shape, 10)


@pytest.mark.parametrize("shape", [(), (0, 8, 8), (1, -8, 8), (1, 8.0, 8), "abc"])
def test_malformed_input_shape_rejected(shape: object) -> None:
    with pytest.raises(ValueError, match="input_shape must be a non-empty tuple of positive"):
        build_model("fc", shape, 10)  # type: ignore[arg-type]


def test_fc_takes_any_shape() -> None:
    for shape in [(7,), (2, 3), (1, 2, 3, 4)]:
        assert build_model("fc", shape, 4)(torch.randn(2, *shape)).shape == (2, 4)


def test_failing_forward_becomes_value_error(monkeypatch: pytest.MonkeyPatch) -> None:
    # A registered builder that ignores input_shape: the shape check must catch the mismatch.
    def fixed(input_shape: tuple[int, ...], num_classes: int) -> nn.Module:
        return nn.Sequential(nn.Flatten(), nn.Linear(5, num_classes))

    def wrong_out(input_shape: tuple[int, ...], num_classes: int) -> nn.Module:
        return nn.Sequential(nn.Flatten(), nn.Linear(4, num_classes + 1))

    monkeypatch.setitem(MODELS, "fixed", fixed)
    monkeypatch.setitem(MODELS, "wrong_out", wrong_out)
    assert build_model("fixed", (5,), 3)(torch.randn(2, 5)).shape == (2, 3)
    with pytest.raises(ValueError, match=r"model 'fixed' cannot take input_shape=\(4,\): "):
        build_model("fixed", (4,), 3)
    with pytest.raises(ValueError, match=r"output has shape \(1, 4\), expected \(1, 3\)"):
        build_model("wrong_out", (4,), 3)
