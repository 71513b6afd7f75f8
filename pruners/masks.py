"""Masks: a dict of parameter name -> bool tensor of the parameter's shape.

A mask marks the weights that survive pruning (True = kept). Masks are plain data: they can be
saved, compared and combined without a model. Following Gebhart et al. (2021) and Tanaka et al.
(2020), the prunable parameters are the weights of Linear and Conv layers; biases and
BatchNorm scales can be opted in.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping
from pathlib import Path

import torch
from torch import nn

Masks = dict[str, torch.Tensor]

_WEIGHT_LAYERS = (nn.Linear, nn.Conv1d, nn.Conv2d, nn.Conv3d)
_NORM_LAYERS = (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d, nn.GroupNorm, nn.LayerNorm)


def classifier_name(model: nn.Module) -> str | None:
    """Name of the last Linear layer's weight (the classifier), or None if there is none."""
    last = None
    for name, module in model.named_modules():
        if isinstance(module, nn.Linear):
            last = f"{name}.weight" if name else "weight"
    return last


def prunable_parameters(
    model: nn.Module,
    *,
    include_bias: bool = False,
    include_norm: bool = False,
    dense_classifier: bool = False,
) -> dict[str, nn.Parameter]:
    """The parameters pruning may remove, keyed by their name in ``model.named_parameters()``.

    Args:
        model: any module.
        include_bias: also prune the biases of Linear/Conv layers.
        include_norm: also prune the scales (``weight``) of normalization layers.
        dense_classifier: keep the last Linear layer dense (never pruned).

    Returns:
        An ordered dict of name -> parameter, in ``named_parameters`` order.
    """
    chosen: set[int] = set()
    for module in model.modules():
        if isinstance(module, _WEIGHT_LAYERS):
            chosen.add(id(module.weight))
            if include_bias and module.bias is not None:
                chosen.add(id(module.bias))
        elif include_norm and isinstance(module, _NORM_LAYERS) and module.weight is not None:
            chosen.add(id(module.weight))
    skip = classifier_name(model) if dense_classifier else None
    return {name: p for name, p in model.named_parameters() if id(p) in chosen and name != skip}


def ones_masks(params: Mapping[str, torch.Tensor]) -> Masks:
    """All-True masks for the given parameters (nothing pruned)."""
    return {name: torch.ones_like(p, dtype=torch.bool) for name, p in params.items()}


def check_masks(model: nn.Module, masks: Mapping[str, torch.Tensor]) -> None:
    """Raise ``ValueError`` unless every mask names a parameter of ``model`` with its shape."""
    params = dict(model.named_parameters())
    for name, mask in masks.items():
        if name not in params:
            raise ValueError(f"mask names a parameter the model lacks: {name!r}")
        if tuple(mask.shape) != tuple(params[name].shape):
            raise ValueError(
                f"mask {name!r} must have the parameter's shape {tuple(params[name].shape)}, "
                f"but has {tuple(mask.shape)}"
            )
        if mask.dtype != torch.bool:
            raise ValueError(f"mask {name!r} must be a bool tensor, but has dtype {mask.dtype}")


@torch.no_grad()
def apply_masks(model: nn.Module, masks: Mapping[str, torch.Tensor]) -> nn.Module:
    """Zero the pruned weights of ``model`` in place and return it.

    This is the one function that changes a model's weights; call it on a copy (see
    :func:`masked_copy`) to keep the caller's model intact.
    """
    check_masks(model, masks)
    params = dict(model.named_parameters())
    for name, mask in masks.items():
        params[name].mul_(mask.to(device=params[name].device, dtype=params[name].dtype))
    return model


def masked_copy(model: nn.Module, masks: Mapping[str, torch.Tensor]) -> nn.Module:
    """A deep copy of ``model`` with the pruned weights set to zero."""
    return apply_masks(copy.deepcopy(model), masks)


def density(masks: Mapping[str, torch.Tensor]) -> float:
    """Fraction of masked weights kept, over all masks together."""
    total = sum(m.numel() for m in masks.values())
    kept = sum(int(m.sum()) for m in masks.values())
    return kept / total if total else 1.0


def layer_densities(masks: Mapping[str, torch.Tensor]) -> dict[str, float]:
    """Fraction kept per mask."""
    return {name: int(m.sum()) / m.numel() for name, m in masks.items()}


def save_masks(masks: Mapping[str, torch.Tensor], path: str | Path) -> None:
    """Save masks; ``.safetensors`` uses safetensors, any other suffix ``torch.save``."""
    path = Path(path)
    tensors = {name: m.detach().to("cpu", torch.bool).contiguous() for name, m in masks.items()}
    tmp = path.with_name(path.name + ".tmp")
    if path.suffix == ".safetensors":
        from safetensors.torch import save_file

        save_file(tensors, str(tmp))
    else:
        torch.save(tensors, tmp)
    tmp.replace(path)  # atomic: a crash never leaves a half-written mask file


def load_masks(path: str | Path) -> Masks:
    """Load masks written by :func:`save_masks`."""
    path = Path(path)
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        loaded = load_file(str(path))
    else:
        loaded = torch.load(path, map_location="cpu", weights_only=True)
    return {name: t.to(torch.bool) for name, t in loaded.items()}
