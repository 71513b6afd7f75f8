"""Masks: a dict of parameter name -> bool tensor of the parameter's shape.

A mask marks the weights that survive pruning (True = kept). Masks are plain data: they can be
saved, compared and combined without a model. Following Gebhart et al. (2021) and Tanaka et al.
(2020), the prunable parameters are the weights of Linear, Conv and MultiheadAttention layers;
biases and normalization scales can be opted in, or any (module, parameter name) pairs given,
as ``torch.nn.utils.prune.global_unstructured`` takes them.
"""

from __future__ import annotations

import copy
from collections.abc import Iterable, Mapping
from pathlib import Path

import torch
from torch import fx, nn

Masks = dict[str, torch.Tensor]

_WEIGHT_LAYERS = (nn.Linear, nn.modules.conv._ConvNd)
_NORM_LAYERS = (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d, nn.GroupNorm, nn.LayerNorm)
_ATTENTION_WEIGHTS = ("in_proj_weight", "q_proj_weight", "k_proj_weight", "v_proj_weight")

ParameterRef = tuple[nn.Module, str]
"""A parameter named as ``torch.nn.utils.prune`` names it: (module, parameter name)."""


def default_parameters(
    model: nn.Module, *, include_bias: bool = False, include_norm: bool = False
) -> list[ParameterRef]:
    """The default prunable parameters as (module, name) pairs, in ``modules()`` order.

    Every weight of Linear and Conv layers and of ``nn.MultiheadAttention`` (its input
    projection ``in_proj_weight``, or ``q/k/v_proj_weight`` when key and value dimensions
    differ; ``out_proj`` is a Linear); with ``include_bias`` their biases; with ``include_norm``
    the scales of normalization layers.
    """
    refs: list[ParameterRef] = []
    for module in model.modules():
        names: list[str] = []
        if isinstance(module, _WEIGHT_LAYERS):
            names = ["weight", "bias"] if include_bias else ["weight"]
        elif isinstance(module, nn.MultiheadAttention):
            names = [*_ATTENTION_WEIGHTS, "in_proj_bias"] if include_bias else [*_ATTENTION_WEIGHTS]
        elif include_norm and isinstance(module, _NORM_LAYERS):
            names = ["weight"]
        refs.extend((module, n) for n in names if getattr(module, n, None) is not None)
    return refs


def classifier_names(model: nn.Module) -> list[str]:
    """Weights of the layers that feed the model's output, found in the ``torch.fx`` graph.

    Walks back from the output through every op that holds no weight (activations, pooling,
    reshapes, additions) and stops at the first Linear, Conv or MultiheadAttention on each
    branch: those layers are the classifier, wherever they are registered.

    Raises:
        ValueError: the model cannot be traced by ``torch.fx``.
    """
    try:
        graph = fx.symbolic_trace(model).graph
    except Exception as err:  # fx raises many types; the message is what matters
        raise ValueError(
            "dense_classifier needs a model torch.fx can trace (the classifier is the layer "
            f"that feeds the output in the traced graph): {err}"
        ) from err
    modules = dict(model.named_modules())
    heads: set[int] = set()
    seen: set[fx.Node] = set()
    stack = [n for n in graph.nodes if n.op == "output"]
    while stack:
        node = stack.pop()
        if node in seen:
            continue
        seen.add(node)
        module = modules.get(str(node.target)) if node.op == "call_module" else None
        if isinstance(module, (*_WEIGHT_LAYERS, nn.MultiheadAttention)):
            weight = getattr(module, "weight", None)
            if isinstance(module, nn.MultiheadAttention):
                weight = module.out_proj.weight
            if isinstance(weight, nn.Parameter):
                heads.add(id(weight))
            continue
        stack.extend(node.all_input_nodes)
    return [name for name, p in model.named_parameters() if id(p) in heads]


def classifier_name(model: nn.Module) -> str | None:
    """Name of the weight of the one layer feeding the output (see :func:`classifier_names`).

    Returns None when no Linear/Conv layer feeds the output.

    Raises:
        ValueError: several layers feed the output, or the model cannot be traced.
    """
    names = classifier_names(model)
    if len(names) > 1:
        raise ValueError(f"several layers feed the output, so no one classifier: {names}")
    return names[0] if names else None


def prunable_parameters(
    model: nn.Module,
    *,
    include_bias: bool = False,
    include_norm: bool = False,
    dense_classifier: bool = False,
    parameters: Iterable[ParameterRef] | None = None,
) -> dict[str, nn.Parameter]:
    """The parameters pruning may remove, keyed by their name in ``model.named_parameters()``.

    Args:
        model: any module.
        include_bias: also prune the biases of Linear/Conv/MultiheadAttention layers.
        include_norm: also prune the scales (``weight``) of normalization layers.
        dense_classifier: keep the layers feeding the output dense (never pruned), found in the
            traced graph by :func:`classifier_names`.
        parameters: explicit (module, parameter name) pairs, as
            ``torch.nn.utils.prune.global_unstructured`` takes them, instead of the defaults of
            :func:`default_parameters`; each module must belong to ``model``.

    Returns:
        An ordered dict of name -> parameter, in ``named_parameters`` order.

    Raises:
        ValueError: a pair names no parameter of ``model``, or ``parameters`` is combined with
            ``include_bias``/``include_norm``.
    """
    if parameters is None:
        refs = default_parameters(model, include_bias=include_bias, include_norm=include_norm)
    elif include_bias or include_norm:
        raise ValueError(
            "parameters= names the prunable parameters itself; include_bias and include_norm "
            f"must stay False, but got {include_bias=}, {include_norm=}"
        )
    else:
        refs = list(parameters)
    chosen = {id(_resolve(model, ref)) for ref in refs}
    if dense_classifier:
        chosen -= {id(p) for n, p in model.named_parameters() if n in classifier_names(model)}
    return {name: p for name, p in model.named_parameters() if id(p) in chosen}


def _resolve(model: nn.Module, ref: ParameterRef) -> nn.Parameter:
    """The parameter a (module, name) pair names; ValueError unless it is one of ``model``'s."""
    if not (isinstance(ref, tuple) and len(ref) == 2 and isinstance(ref[0], nn.Module)):
        raise ValueError(f"parameters must be (module, parameter name) pairs, but got {ref!r}")
    module, name = ref
    if not any(m is module for m in model.modules()):
        raise ValueError(f"parameters names a module that is not part of the model: {module!r}")
    param = module._parameters.get(name) if isinstance(name, str) else None
    if param is None:
        valid = [n for n, p in module._parameters.items() if p is not None]
        raise ValueError(
            f"parameters names {name!r}, which is no parameter of {type(module).__name__}; "
            f"valid: {valid}"
        )
    return param


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
