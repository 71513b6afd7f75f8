"""Sanity checks of Frankle et al. (2021), *Pruning Neural Networks at Initialization: Why are
We Missing the Mark?*: each destroys one kind of information a pruner could have used.

- :func:`shuffle_masks` keeps every layer's density but forgets *which* weights were kept.
- :func:`reinitialize` keeps the masks but forgets the weights they were chosen for.
- Inversion (keep the lowest scores) is ``pruners.prune(..., invert=True)``.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping

import torch
from torch import nn

from pruners.masks import Masks, prunable_parameters


def shuffle_masks(masks: Mapping[str, torch.Tensor], seed: int = 0) -> Masks:
    """Randomly permute the entries of each mask within its layer (per-layer density kept)."""
    generator = torch.Generator().manual_seed(seed)
    out = {}
    for name, mask in masks.items():
        perm = torch.randperm(mask.numel(), generator=generator).to(mask.device)
        out[name] = mask.flatten()[perm].view_as(mask)
    return out


@torch.no_grad()
def reinitialize(
    model: nn.Module, seed: int = 0, *, include_bias: bool = False, include_norm: bool = False
) -> nn.Module:
    """A copy of ``model`` whose prunable weights are drawn anew from each layer's distribution.

    Each layer's new weights are a random permutation of its own values: exactly the same
    empirical distribution (so any initialization scheme is respected), but no weight keeps its
    value. Masks computed for the original model can then be applied to the copy.
    """
    clone = copy.deepcopy(model)
    generator = torch.Generator().manual_seed(seed)
    params = prunable_parameters(clone, include_bias=include_bias, include_norm=include_norm)
    for param in params.values():
        perm = torch.randperm(param.numel(), generator=generator).to(param.device)
        param.copy_(param.flatten()[perm].view_as(param))
    return clone
