"""Path Kernel statistics of a (masked) network at initialization.

Gebhart, Saxena, Schrater (2021), *A Unified Paths Perspective for Pruning at Initialization*:
the NTK factors as ``Θ = J_v f · Π_θ · J_v fᵀ`` with the data-free Path Kernel
``Π_θ = J_θ v (J_θ v)ᵀ``. Its trace is ``Σ_j ∂R/∂w_j`` at ``w = θ ⊙ θ`` with
``R(w) = 1ᵀ f_w(1)``: one forward and one backward pass. All statistics are natural logarithms
computed in the rescaled path network of :mod:`pruners.paths`, finite wherever the exact value
is (ResNet-110 and VGG-16 included), ``-inf`` where it is 0 (no surviving path).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field

import torch
import torch.autograd.forward_ad as fwAD
from torch import nn

from pruners.masks import check_masks
from pruners.paths import PathNetwork, path_network
from pruners.scores import _weighted, trace_values


@dataclass(frozen=True)
class PathKernelStats:
    """Data-free statistics of the masked network's paths.

    Attributes:
        log_trace: ``log Tr(Π_θ)``, the trace of the Path Kernel (input→output paths; BatchNorm
            scales γ count as parameters of the kernel, see :func:`path_kernel_stats`).
        log_l1: ``log ‖v‖₁``, the SynFlow objective ``R(|θ|)``.
        log_l2_squared: ``log ‖v‖₂² = log R(θ ⊙ θ)``.
        log_num_paths: log of the number of surviving input→output paths ``R(mask)``.
        effective_params: Linear/Conv weights on at least one surviving input→output path.
        num_params: surviving Linear/Conv weights.
        macs: multiply-accumulates of one forward pass, counting surviving weights only.
        density: fraction of the masked weights kept (1.0 without masks).
        layer_collapse: some Linear/Conv layer has no surviving weight, or no path survives.
        layer_density: fraction kept per Linear/Conv weight.
        layer_trace_share: each path parameter's share of ``Tr(Π_θ)``.
    """

    log_trace: float
    log_l1: float
    log_l2_squared: float
    log_num_paths: float
    effective_params: int
    num_params: int
    macs: int
    density: float
    layer_collapse: bool
    layer_density: dict[str, float] = field(default_factory=dict)
    layer_trace_share: dict[str, float] = field(default_factory=dict)

    def metrics(self) -> dict[str, float | int]:
        """Flat scalar columns (names used by studies and Parquet)."""
        kept = self.num_params
        return {
            "log_path_kernel_trace": self.log_trace,
            "log_path_l1": self.log_l1,
            "log_path_l2_squared": self.log_l2_squared,
            "log_num_paths": self.log_num_paths,
            "effective_params": self.effective_params,
            "effective_fraction": self.effective_params / kept if kept else 0.0,
            "num_params": self.num_params,
            "macs": self.macs,
            "density": self.density,
            "layer_collapse": int(self.layer_collapse),
        }


def _log(x: torch.Tensor) -> float:
    value = float(x)
    return math.log(value) if value > 0 else -math.inf


@dataclass(frozen=True)
class _TracePass:
    log_l2_squared: float  # log R(θ ⊙ θ ⊙ mask)
    log_scale: float  # log C: every gradient below is the exact one divided by C
    terms: dict[str, torch.Tensor]  # per path parameter: Σ_j (kept) ∂R/∂w_j · factor, over C
    grads: dict[str, torch.Tensor]

    @property
    def log_trace(self) -> float:
        total = torch.stack(list(self.terms.values())).sum() if self.terms else torch.zeros(())
        return _log(total) + self.log_scale


def _trace_pass(
    net: PathNetwork, masks: Mapping[str, torch.Tensor], inputs: torch.Tensor
) -> _TracePass:
    """One forward and one backward pass at ``w = θ ⊙ θ ⊙ mask``."""
    with torch.no_grad():
        values, factors = trace_values(net, masks, inputs.dtype)
    leaves = {n: v.requires_grad_() for n, v in values.items()}
    out = net(leaves, inputs)
    grads = dict(
        zip(leaves, torch.autograd.grad(out.output.sum(), list(leaves.values())), strict=True)
    )
    terms = {n: _weighted(g, masks.get(n), factors.get(n)).sum(dtype=torch.float64)
             for n, g in grads.items()}  # fmt: skip
    return _TracePass(float(out.log_sum().detach()), float(out.log_scale), terms, grads)


def _prepare(
    model: nn.Module,
    input_shape: tuple[int, ...],
    masks: Mapping[str, torch.Tensor] | None,
    dtype: torch.dtype | None,
) -> tuple[PathNetwork, dict[str, torch.Tensor], torch.Tensor]:
    masks = dict(masks or {})
    check_masks(model, masks)
    net = path_network(model, bias_paths=False)
    param = next(model.parameters())
    device_masks = {n: m.to(param.device) for n, m in masks.items()}
    inputs = torch.ones((1, *input_shape), dtype=dtype or param.dtype, device=param.device)
    return net, device_masks, inputs


def log_path_kernel_trace(
    model: nn.Module,
    input_shape: tuple[int, ...],
    masks: Mapping[str, torch.Tensor] | None = None,
    *,
    dtype: torch.dtype | None = None,
) -> float:
    """Natural log of ``Tr(Π_θ)`` of the masked network, in one forward-mode pass.

    Gebhart, Saxena, Schrater (2021): ``Tr(Π_θ) = Σ_j ∂R/∂w_j`` at ``w = θ ⊙ θ``, which is the
    directional derivative of ``R`` along the kept weights, ``d/dt R(w + t · mask)``. One
    forward pass carrying that tangent computes it without materializing a gradient per weight
    (and without keeping activations for a backward pass). See :func:`path_kernel_stats` for
    how BatchNorm and biases are handled.
    """
    net, masks, inputs = _prepare(model, input_shape, masks, dtype)
    with torch.no_grad():
        values, factors = trace_values(net, masks, inputs.dtype)
        with fwAD.dual_level():
            duals = {n: fwAD.make_dual(v, _tangent(v, masks.get(n), factors.get(n)))
                     for n, v in values.items()}  # fmt: skip
            out = net(duals, inputs)
            tangent = fwAD.unpack_dual(out.output).tangent
    if tangent is None:  # no weight on any path
        return -math.inf
    return _log(tangent.sum(dtype=torch.float64)) + float(out.log_scale)


def _tangent(
    value: torch.Tensor, mask: torch.Tensor | None, factor: torch.Tensor | None
) -> torch.Tensor:
    """The direction ``mask ⊙ factor`` (a broadcast view of one where both are absent)."""
    if mask is None and factor is None:
        return torch.ones((), dtype=value.dtype, device=value.device).expand_as(value)
    tangent = mask.to(value.dtype) if mask is not None else torch.ones_like(value)
    return tangent if factor is None else tangent * factor


@torch.no_grad()
def _log_forward(
    net: PathNetwork, values: Mapping[str, torch.Tensor], inputs: torch.Tensor
) -> float:
    return float(net(values, inputs).log_sum())


def path_kernel_stats(
    model: nn.Module,
    input_shape: tuple[int, ...],
    masks: Mapping[str, torch.Tensor] | None = None,
    *,
    dtype: torch.dtype | None = None,
) -> PathKernelStats:
    """Path Kernel statistics of ``model`` with ``masks`` applied (the model is not changed).

    One forward+backward pass at ``w = θ ⊙ θ ⊙ mask`` gives ``log ‖v‖₂²``, ``log Tr(Π_θ)``, the
    per-layer trace shares and the effective parameters (a kept weight is effective when its
    gradient ``∂R/∂w_j`` is positive: some surviving path runs through it); two forward passes
    give ``log ‖v‖₁`` (``w = |θ| ⊙ mask``) and the path count (``w = mask``).

    What is computed (Gebhart, Saxena, Schrater 2021, DESIGN.md §Numerics):

    - Paths run from the input to the output; biases and BatchNorm shifts, which start paths
      mid-network carrying no input, are left out (the bias-free Path Kernel of the paper).
    - BatchNorm is taken in eval form (running statistics) as the affine map
      ``c ⊙ x + shift`` with ``c = γ / sqrt(σ² + ε)``: ``c`` is a diagonal layer on the paths
      through it and γ is a parameter of the kernel, contributing ``Σ_p (∂v_p/∂γ)²``.
    - Max-pooling routes each window's largest path sum, as the network does.
    - Values are computed in a rescaled network and reported as natural logs: finite on
      ResNet-110 and VGG-16 in float32; ``-inf`` only where the exact value is 0.

    Args:
        model: the network (any module of Linear/Conv/BatchNorm/ReLU/pooling/residual adds).
        input_shape: shape of one input, without the batch dimension.
        masks: parameter name -> bool mask (True = kept); missing names are dense.
        dtype: dtype of the computation (default: the model's).
    """
    net, masks, inputs = _prepare(model, input_shape, masks, dtype)
    trace = _trace_pass(net, masks, inputs)
    with torch.no_grad():
        mags = net.magnitudes()
        l1 = {n: m.to(inputs.dtype) * masks[n] if n in masks else m.to(inputs.dtype)
              for n, m in mags.items()}  # fmt: skip
        ones = {n: masks[n].to(inputs.dtype) if n in masks else torch.ones_like(m)
                for n, m in l1.items()}  # fmt: skip
    weights = [n for n in net.weight_names if not net.is_norm(n)]
    kept = {n: masks[n] if n in masks else torch.ones_like(trace.grads[n], dtype=torch.bool)
            for n in weights}  # fmt: skip
    counts = {n: int(k.sum()) for n, k in kept.items()}
    total = sum(trace.terms.values(), torch.zeros((), dtype=torch.float64))
    log_trace = trace.log_trace
    return PathKernelStats(
        log_trace=log_trace,
        log_l1=_log_forward(net, l1, inputs),
        log_l2_squared=trace.log_l2_squared,
        log_num_paths=_log_forward(net, ones, inputs),
        effective_params=sum(int(((trace.grads[n] > 0) & kept[n]).sum()) for n in weights),
        num_params=sum(counts.values()),
        macs=sum(counts[n] * net.positions.get(n, 1) for n in weights),
        density=_density(masks),
        layer_collapse=any(c == 0 for c in counts.values()) or log_trace == -math.inf,
        layer_density={n: counts[n] / kept[n].numel() for n in weights},
        layer_trace_share={
            n: float(t / total) if total > 0 else 0.0 for n, t in trace.terms.items()
        },
    )


def _density(masks: Mapping[str, torch.Tensor]) -> float:
    total = sum(m.numel() for m in masks.values())
    return sum(int(m.sum()) for m in masks.values()) / total if total else 1.0
