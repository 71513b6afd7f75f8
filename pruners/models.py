"""Model zoo for pruning at initialization: MLPs, a small CNN, CIFAR VGGs and CIFAR ResNets.

Every model is built from ``nn.Linear``, ``nn.Conv2d``, ``nn.BatchNorm2d``, ``nn.ReLU`` modules,
pooling and residual adds written as ``out = out + shortcut``, so that ``torch.fx`` can trace it
and the path decomposition of Gebhart, Saxena, Schrater (2021), "A Unified Paths Perspective for
Pruning at Initialization", applies layer by layer. The classifier is always the last
``nn.Linear`` registered in the model.

Weights are drawn with ``kaiming_normal_`` (fan_in, ReLU gain), as in He et al. (2015/2016) and
Tanaka et al. (2020); biases start at zero and BatchNorm at the identity. Nothing here seeds the
random number generator: call ``torch.manual_seed`` before :func:`build_model` to fix a draw.
"""

from __future__ import annotations

import inspect
import math
import reprlib
from collections import OrderedDict
from collections.abc import Callable, Sequence

import torch
from torch import nn

# Channel configurations of Simonyan & Zisserman (2015) as used for CIFAR by Tanaka et al. (2020)
# ("M" = 2x2 max-pool). Channels are for the default width 64 of the first stage.
_VGG_CONFIGS: dict[str, tuple[int | str, ...]] = {
    "vgg11": (64, "M", 128, "M", 256, 256, "M", 512, 512, "M", 512, 512),
    "vgg16": (
        64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512,
    ),
}  # fmt: skip


# --------------------------------------------------------------------------- option checks


def _brief(value: object) -> str:
    """A bounded repr (nested and long values elided) for error messages."""
    short = reprlib.Repr()  # keyword arguments need Python 3.12
    short.maxlevel, short.maxlist, short.maxdict, short.maxstring, short.maxother = 3, 6, 6, 80, 80
    return short.repr(value)


def _positive_int(name: str, value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{name} must be a positive integer, but got {name}={_brief(value)}")
    return value


def _boolean(name: str, value: object) -> bool:
    if not isinstance(value, bool):
        raise ValueError(f"{name} must be True or False, but got {name}={_brief(value)}")
    return value


class _InputShapeError(ValueError):
    """An input shape a builder cannot take; :func:`build_model` adds the model's name."""


def _image_shape(input_shape: tuple[int, ...]) -> tuple[int, int, int]:
    """(C, H, W) of an image model's input, or ValueError."""
    if len(input_shape) != 3:
        raise _InputShapeError("image models need (channels, height, width), 3 entries")
    return input_shape[0], input_shape[1], input_shape[2]


def _init_kaiming(model: nn.Module) -> nn.Module:
    """He initialization (fan_in, ReLU) for Conv/Linear weights, zero biases, identity BN."""
    for module in model.modules():
        if isinstance(module, nn.Conv2d | nn.Linear):
            nn.init.kaiming_normal_(module.weight, mode="fan_in", nonlinearity="relu")
            if module.bias is not None:
                nn.init.zeros_(module.bias)
        elif isinstance(module, nn.BatchNorm2d):
            nn.init.ones_(module.weight)
            nn.init.zeros_(module.bias)
    return model


# --------------------------------------------------------------------------- fc and conv


def fc(
    input_shape: tuple[int, ...], num_classes: int, *, width: int = 100, depth: int = 6,
    bias: bool = True,
) -> nn.Module:  # fmt: skip
    """Fully connected ReLU network on the flattened input.

    Args:
        input_shape: shape of one example (any number of dimensions; it is flattened).
        num_classes: number of outputs.
        width: units of every hidden layer.
        depth: number of Linear layers, the classifier included (depth=1 is a linear model).
        bias: whether the Linear layers have biases.
    """
    width, depth = _positive_int("width", width), _positive_int("depth", depth)
    bias = _boolean("bias", bias)
    layers: OrderedDict[str, nn.Module] = OrderedDict(flatten=nn.Flatten())
    features = math.prod(input_shape)
    for i in range(1, depth):
        layers[f"fc{i}"] = nn.Linear(features, width, bias=bias)
        layers[f"relu{i}"] = nn.ReLU()
        features = width
    layers["classifier"] = nn.Linear(features, num_classes, bias=bias)
    return _init_kaiming(nn.Sequential(layers))


def conv(
    input_shape: tuple[int, ...], num_classes: int, *, width: int = 32, depth: int = 3,
    batch_norm: bool = False,
) -> nn.Module:  # fmt: skip
    """Small CNN: ``depth`` blocks of 3x3 Conv2d (+BatchNorm) + ReLU + 2x2 MaxPool, then Linear.

    A block skips its max-pool when the feature map is already smaller than 2x2, so the model
    also takes 8x8 digits. The classifier reads the flattened final feature map.

    Args:
        input_shape: (channels, height, width).
        num_classes: number of outputs.
        width: channels of every conv layer.
        depth: number of conv blocks.
        batch_norm: insert BatchNorm2d after each conv (the conv then has no bias).
    """
    channels, height, wide = _image_shape(input_shape)
    width, depth = _positive_int("width", width), _positive_int("depth", depth)
    batch_norm = _boolean("batch_norm", batch_norm)
    layers: OrderedDict[str, nn.Module] = OrderedDict()
    for i in range(1, depth + 1):
        layers[f"conv{i}"] = nn.Conv2d(channels, width, 3, padding=1, bias=not batch_norm)
        if batch_norm:
            layers[f"bn{i}"] = nn.BatchNorm2d(width)
        layers[f"relu{i}"] = nn.ReLU()
        if height >= 2 and wide >= 2:
            layers[f"pool{i}"] = nn.MaxPool2d(2)
            height, wide = height // 2, wide // 2
        channels = width
    layers["flatten"] = nn.Flatten()
    layers["classifier"] = nn.Linear(channels * height * wide, num_classes)
    return _init_kaiming(nn.Sequential(layers))


# --------------------------------------------------------------------------- VGG


class VGG(nn.Module):
    """CIFAR VGG: 3x3 conv features, global average pool and one Linear classifier.

    As in Tanaka et al. (2020)'s CIFAR VGGs (no hidden fully connected layers). Built by
    :func:`build_model` as ``vgg11`` / ``vgg16``.
    """

    def __init__(self, features: nn.Sequential, channels: int, num_classes: int) -> None:
        super().__init__()
        self.features = features
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.flatten = nn.Flatten()
        self.classifier = nn.Linear(channels, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.flatten(self.pool(self.features(x))))


def _vgg_features(
    config: Sequence[int | str], input_shape: tuple[int, ...], width: int, batch_norm: bool
) -> tuple[nn.Sequential, int]:
    """Conv stack of a VGG config; max-pools that would shrink a side below 1 are skipped."""
    channels, height, wide = _image_shape(input_shape)
    layers: OrderedDict[str, nn.Module] = OrderedDict()
    for i, item in enumerate(config):
        if item == "M":
            # Small inputs (8x8 digits) run out of resolution before the last pool: skip it.
            if height >= 2 and wide >= 2:
                layers[f"pool{i}"] = nn.MaxPool2d(2)
                height, wide = height // 2, wide // 2
            continue
        out = max(1, int(item) * width // 64)
        # A conv bias before BatchNorm is cancelled by the normalization: drop it.
        layers[f"conv{i}"] = nn.Conv2d(channels, out, 3, padding=1, bias=not batch_norm)
        if batch_norm:
            layers[f"bn{i}"] = nn.BatchNorm2d(out)
        layers[f"relu{i}"] = nn.ReLU()
        channels = out
    return nn.Sequential(layers), channels


def _vgg_builder(name: str) -> Callable[..., nn.Module]:
    def build(
        input_shape: tuple[int, ...], num_classes: int, *, width: int = 64,
        batch_norm: bool = True,
    ) -> nn.Module:  # fmt: skip
        width = _positive_int("width", width)
        batch_norm = _boolean("batch_norm", batch_norm)
        features, channels = _vgg_features(_VGG_CONFIGS[name], input_shape, width, batch_norm)
        return _init_kaiming(VGG(features, channels, num_classes))

    build.__name__ = build.__qualname__ = name
    build.__doc__ = (
        f"CIFAR {name.upper()} (Tanaka et al. 2020): 3x3 convs with channels scaled by "
        "width/64, optional BatchNorm (default on; convs then have no bias), 2x2 max-pools "
        "(skipped once a side would drop below 1), global average pool, one Linear classifier."
    )
    return build


# --------------------------------------------------------------------------- ResNet


class BasicBlock(nn.Module):
    """Two 3x3 conv+BN layers with a shortcut; a 1x1 conv+BN projection when shapes change."""

    def __init__(self, in_channels: int, out_channels: int, stride: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, out_channels, 3, stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(out_channels)
        self.relu1 = nn.ReLU()
        self.conv2 = nn.Conv2d(out_channels, out_channels, 3, 1, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(out_channels)
        self.shortcut: nn.Module = nn.Identity()
        if stride != 1 or in_channels != out_channels:
            self.shortcut = nn.Sequential(
                OrderedDict(
                    conv=nn.Conv2d(in_channels, out_channels, 1, stride, bias=False),
                    bn=nn.BatchNorm2d(out_channels),
                )
            )
        self.relu2 = nn.ReLU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.relu1(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        shortcut = self.shortcut(x)
        out = out + shortcut
        return self.relu2(out)


class ResNet(nn.Module):
    """CIFAR ResNet of He et al. (2016): stem, 3 stages of BasicBlocks, avg pool, Linear."""

    def __init__(self, depth: int, in_channels: int, num_classes: int, width: int) -> None:
        super().__init__()
        blocks = (depth - 2) // 6
        self.conv = nn.Conv2d(in_channels, width, 3, padding=1, bias=False)
        self.bn = nn.BatchNorm2d(width)
        self.relu = nn.ReLU()
        stages, channels = [], width
        for stage, out in enumerate((width, 2 * width, 4 * width)):
            strides = [1 if stage == 0 else 2] + [1] * (blocks - 1)
            stage_blocks = []
            for stride in strides:
                stage_blocks.append(BasicBlock(channels, out, stride))
                channels = out
            stages.append(nn.Sequential(*stage_blocks))
        self.layer1, self.layer2, self.layer3 = stages
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.flatten = nn.Flatten()
        self.classifier = nn.Linear(channels, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.relu(self.bn(self.conv(x)))
        out = self.layer3(self.layer2(self.layer1(out)))
        return self.classifier(self.flatten(self.pool(out)))


def _resnet_builder(depth: int) -> Callable[..., nn.Module]:
    def build(input_shape: tuple[int, ...], num_classes: int, *, width: int = 16) -> nn.Module:
        channels, _, _ = _image_shape(input_shape)
        width = _positive_int("width", width)
        return _init_kaiming(ResNet(depth, channels, num_classes, width))

    build.__name__ = build.__qualname__ = f"resnet{depth}"
    build.__doc__ = (
        f"CIFAR ResNet-{depth} (He et al. 2016): 3 stages of {(depth - 2) // 6} BasicBlocks "
        "with width, 2*width, 4*width channels, BatchNorm, 1x1 conv+BN projection shortcuts "
        "where the shape changes, global average pool, Linear classifier; convs have no bias."
    )
    return build


# --------------------------------------------------------------------------- registry

MODELS: dict[str, Callable[..., nn.Module]] = {
    "fc": fc,
    "conv": conv,
    "vgg11": _vgg_builder("vgg11"),
    "vgg16": _vgg_builder("vgg16"),
    "resnet20": _resnet_builder(20),
    "resnet32": _resnet_builder(32),
    "resnet56": _resnet_builder(56),
    "resnet110": _resnet_builder(110),
}


def model_options(name: str) -> dict[str, object]:
    """The options of model ``name`` with their defaults (e.g. ``{"width": 100, ...}``)."""
    builder = _builder(name)
    params = inspect.signature(builder).parameters.values()
    return {p.name: p.default for p in params if p.kind is inspect.Parameter.KEYWORD_ONLY}


def _builder(name: str) -> Callable[..., nn.Module]:
    if name not in MODELS:
        raise ValueError(f"unknown model {name!r}; valid: {sorted(MODELS)}")
    return MODELS[name]


def _check_shape(input_shape: Sequence[int]) -> tuple[int, ...]:
    shape = tuple(input_shape)
    if not shape or any(isinstance(d, bool) or not isinstance(d, int) or d < 1 for d in shape):
        raise ValueError(
            f"input_shape must be a non-empty tuple of positive integers, "
            f"but got input_shape={input_shape!r}"
        )
    return shape


def _check_forward(model: nn.Module, name: str, shape: tuple[int, ...], classes: int) -> None:
    """One eval-mode forward of a batch of 1 (eval: BatchNorm running stats stay untouched)."""
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            out = model(torch.zeros(1, *shape))
    except (RuntimeError, ValueError) as exc:
        first_line = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ValueError(f"model {name!r} cannot take input_shape={shape}: {first_line}") from exc
    finally:
        model.train(was_training)
    if tuple(out.shape) != (1, classes):
        raise ValueError(
            f"model {name!r} cannot take input_shape={shape}: output has shape "
            f"{tuple(out.shape)}, expected (1, {classes})"
        )


def build_model(
    name: str, input_shape: Sequence[int], num_classes: int, **options: object
) -> nn.Module:
    """Build a registered model, freshly initialized from torch's global RNG.

    The models are the ones studied by Tanaka et al. (2020) and Gebhart, Saxena, Schrater (2021),
    "A Unified Paths Perspective for Pruning at Initialization": ``fc``, ``conv``, ``vgg11``,
    ``vgg16``, ``resnet20``, ``resnet32``, ``resnet56``, ``resnet110``. One forward pass of a
    batch of 1 checks that the model takes ``input_shape``.

    Args:
        name: a key of :data:`MODELS`.
        input_shape: shape of one example, e.g. ``(1, 8, 8)``; (C, H, W) for image models.
        num_classes: number of outputs (at least 2).
        **options: model options; :func:`model_options` lists them with their defaults.

    Returns:
        The model in training mode.

    Raises:
        ValueError: unknown name or option, ``num_classes < 2``, a non-positive width/depth, or
            an input shape the model cannot take.
    """
    builder = _builder(name)
    valid = sorted(model_options(name))
    for option in options:
        if option not in valid:
            raise ValueError(f"unknown option {option!r} for model {name!r}; valid: {valid}")
    if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 2:
        raise ValueError(f"num_classes >= 2 must hold, but got {num_classes=}")
    shape = _check_shape(input_shape)
    try:
        model = builder(shape, num_classes, **options)
    except _InputShapeError as exc:
        raise ValueError(f"model {name!r} cannot take input_shape={shape}: {exc}") from exc
    _check_forward(model, name, shape, num_classes)
    return model
