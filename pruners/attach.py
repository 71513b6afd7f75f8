"""Masks that hold in any training loop, built on ``torch.nn.utils.prune``.

:func:`attach_masks` re-parametrizes every masked parameter ``p`` of a module as
``p = p_orig * p_mask`` with :func:`torch.nn.utils.prune.custom_from_mask`: ``p_orig`` is the
trainable parameter (its pruned entries set to zero), ``p_mask`` a buffer, and ``p`` is
recomputed from them before every forward pass. The gradient reaching ``p_orig`` is zero where
the mask is, so no optimizer, momentum, Adam moment or weight decay (decoupled or not) can make
a pruned weight non-zero, and ``state_dict`` carries the masks. :func:`detach_masks` makes them
permanent (``prune.remove``): plain parameters again, with exact zeros where pruned.

This is how pruning-at-initialization masks are kept fixed during training in Tanaka et al.
(2020), "Pruning neural networks without any data by iteratively conserving synaptic flow", and
Gebhart, Saxena, Schrater (2021), "A Unified Paths Perspective for Pruning at Initialization".
"""

from __future__ import annotations

from collections.abc import Mapping

import torch
from torch import nn
from torch.nn.utils import prune

from pruners.masks import check_masks


def _split(name: str) -> tuple[str, str]:
    module, _, param = name.rpartition(".")
    return module, param


def attach_masks(model: nn.Module, masks: Mapping[str, torch.Tensor]) -> nn.Module:
    """Attach ``masks`` to ``model`` in place, so pruned weights stay exactly zero, and return it.

    After this call, ``model.<module>.<param>_orig`` is the trainable parameter (pruned entries
    zeroed) and ``model.<module>.<param>_mask`` the mask (a buffer, in ``state_dict``); the
    attribute ``<param>`` is their product, recomputed before each forward. Use any optimizer
    on ``model.parameters()``; call :func:`detach_masks` to get plain parameters back. To load
    a saved ``state_dict`` of a masked model, attach masks of the same shapes first (e.g.
    all-True ones) so the model has the ``_orig``/``_mask`` entries.

    Args:
        model: the network; changed in place.
        masks: parameter name (as in ``model.named_parameters()``) -> bool tensor of its shape
            (True = kept).

    Returns:
        ``model``.

    Raises:
        ValueError: a mask names no parameter of ``model``, has the wrong shape or dtype, or
            its parameter already has a mask attached (detach first). Nothing is attached then.
    """
    params = dict(model.named_parameters())
    for name in masks:
        if name not in params and f"{name}_orig" in params:
            raise ValueError(
                f"mask {name!r}: the parameter already has a mask attached; call "
                f"pruners.detach_masks(model) before attaching new masks"
            )
    check_masks(model, masks)
    for name, mask in masks.items():
        module_name, param = _split(name)
        module = model.get_submodule(module_name) if module_name else model
        weight = getattr(module, param)
        on_device = mask.to(device=weight.device)
        with torch.no_grad():
            weight.masked_fill_(~on_device, 0.0)  # so the trainable tensor is zero there too
        prune.custom_from_mask(module, param, on_device)
    return model


def detach_masks(model: nn.Module) -> nn.Module:
    """Make attached masks permanent: plain parameters with zeros where pruned; returns ``model``.

    Every parametrization added by ``torch.nn.utils.prune`` (by :func:`attach_masks` or
    otherwise) is removed with ``prune.remove``; a model without any is returned unchanged.
    """
    for module in model.modules():
        names = [
            hook._tensor_name
            for hook in module._forward_pre_hooks.values()
            if isinstance(hook, prune.BasePruningMethod)
        ]
        for name in names:
            prune.remove(module, name)
    return model


def attached_masks(model: nn.Module) -> dict[str, torch.Tensor]:
    """The masks attached to ``model``, keyed by parameter name, as bool tensors."""
    out: dict[str, torch.Tensor] = {}
    for module_name, module in model.named_modules():
        for hook in module._forward_pre_hooks.values():
            if isinstance(hook, prune.BasePruningMethod):
                name = hook._tensor_name
                key = f"{module_name}.{name}" if module_name else name
                out[key] = getattr(module, f"{name}_mask").detach().to(torch.bool)
    return out
