"""Path Kernel statistics of a (masked) network at initialization.

Gebhart, Saxena, Schrater (2021), *A Unified Paths Perspective for Pruning at Initialization*:
the NTK factors as ``Θ = J_v f · Π_θ · J_v fᵀ`` with the data-free Path Kernel
``Π_θ = J_θ v (J_θ v)ᵀ``. Its trace is ``Σ_j ∂R/∂w_j`` at ``w = θ ⊙ θ`` with
``R(w) = 1ᵀ f_w(1)``: one forward and one backward pass. All statistics are natural logarithms
computed in the rescaled path network of :mod:`pruners.paths`, finite wherever the exact value
is (ResNet-110 and VGG-16 included), ``-inf`` where it is 0 (no surviving path).
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, cast

import torch
import torch.autograd.forward_ad as fwAD
from torch import nn

from pruners.masks import check_masks, density
from pruners.paths import PathNetwork, path_network
from pruners.scores import trace_factor, trace_values

if TYPE_CHECKING:
    from pruners.spectrum import PathKernelSpectrum, SpectrumOptions


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
        spectrum: the top of the Path Kernel's spectrum when asked for (see
            :func:`pruners.spectrum.path_kernel_spectrum`), else None.
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
    spectrum: PathKernelSpectrum | None = None

    def metrics(self) -> dict[str, float | int]:
        """Flat scalar columns (names used by studies and Parquet).

        The spectrum's columns (``pruners.spectrum.SPECTRUM_METRICS``) are present only when
        the spectrum was asked for.
        """
        extra = self.spectrum.metrics() if self.spectrum is not None else {}
        return self._metrics() | extra

    def _metrics(self) -> dict[str, float | int]:
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
    effective: dict[str, int]  # kept weights with ∂R/∂w_j > 0 (on a surviving path)

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
    terms: dict[str, torch.Tensor] = {}
    effective: dict[str, int] = {}

    def consume(name: str, leaf: torch.Tensor) -> None:
        # Read each gradient as soon as the backward pass has produced it, then free it: peak
        # memory holds one layer's gradient, not the whole model's.
        grad = cast(torch.Tensor, leaf.grad)
        kept = grad if name not in masks else grad * masks[name]
        factor = factors.get(name)
        # Summed in the gradient's dtype (pairwise summation): sum(dtype=float64) would first
        # copy every gradient to float64, the slowest step of the whole pass.
        terms[name] = (kept if factor is None else kept * factor).sum().double()
        effective[name] = int(torch.count_nonzero(kept))  # gradients are >= 0
        leaf.grad = None

    leaves = {n: v.requires_grad_() for n, v in values.items()}
    for name, leaf in leaves.items():
        leaf.register_post_accumulate_grad_hook(functools.partial(consume, name))
    out = net(leaves, inputs)
    out.output.sum().backward(inputs=list(leaves.values()))
    for name in leaves:  # weights on no path from the input get no gradient
        terms.setdefault(name, torch.zeros((), dtype=torch.float64))
        effective.setdefault(name, 0)
    return _TracePass(float(out.log_sum().detach()), float(out.log_scale), terms, effective)


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
    with torch.no_grad(), fwAD.dual_level():
        dual_inputs = fwAD.make_dual(inputs, torch.zeros_like(inputs))
        values = _LazyValues(net, masks, inputs.dtype, _trace_dual)
        out = net(values, dual_inputs, directions=masks)
        tangent = fwAD.unpack_dual(out.output).tangent
    if tangent is None:  # no weight on any path
        return -math.inf
    return _log(tangent.sum(dtype=torch.float64)) + float(out.log_scale)


ValueFn = Callable[[PathNetwork, str, "torch.Tensor | None", torch.dtype], torch.Tensor]


class _LazyValues(Mapping[str, torch.Tensor]):
    """Path values made when a layer asks for them, so only one layer's exist at a time."""

    def __init__(
        self, net: PathNetwork, masks: Mapping[str, torch.Tensor], dtype: torch.dtype, fn: ValueFn
    ) -> None:
        self._net, self._masks, self._dtype, self._fn = net, masks, dtype, fn
        self._names = net.weight_names

    def __getitem__(self, name: str) -> torch.Tensor:
        return self._fn(self._net, name, self._masks.get(name), self._dtype)

    def __iter__(self) -> Iterator[str]:
        return iter(self._names)

    def __len__(self) -> int:
        return len(self._names)


def _trace_dual(
    net: PathNetwork, name: str, mask: torch.Tensor | None, dtype: torch.dtype
) -> torch.Tensor:
    """``θ ⊙ θ ⊙ mask``; BatchNorm scales carry the tangent ``mask / (σ² + ε)``.

    Linear/Conv weights get their direction from :class:`pruners.paths.PathNetwork` instead
    (see its ``directions``), which never stores a weight-sized tangent.
    """
    raw = net.raw_values_of(name).detach().to(dtype)
    value = raw.square() if mask is None else raw.square() * mask
    factor = trace_factor(net, name, dtype)
    if factor is None:
        return value
    tangent = factor.expand_as(value) if mask is None else mask.to(dtype) * factor
    return fwAD.make_dual(value, tangent)


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
    spectrum: SpectrumOptions | None = None,
) -> PathKernelStats:
    """Path Kernel statistics of ``model`` with ``masks`` applied (the model is not changed).

    One forward+backward pass at ``w = θ ⊙ θ ⊙ mask`` gives ``log ‖v‖₂²``, ``log Tr(Π_θ)``, the
    per-layer trace shares and the effective parameters (a kept weight is effective when its
    gradient ``∂R/∂w_j`` is positive: some surviving path runs through it); two forward passes
    give ``log ‖v‖₁`` (``w = |θ| ⊙ mask``) and the path count (``w = mask``).

    What is computed (Gebhart, Saxena, Schrater 2021, docs/design.md, numerics):

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
        spectrum: also compute the top of the Path Kernel's spectrum with these options
            (log λ_max, the top-k share of the trace, the effective rank with its standard
            error; Lanczos, about ``k``–``3k`` more Hessian-vector products). Off by default,
            so the statistics stay one forward+backward pass.
    """
    net, masks, inputs = _prepare(model, input_shape, masks, dtype)
    spectrum_result = None
    if spectrum is not None:
        from pruners.spectrum import GramOperator, _spectrum

        spectrum_result = _spectrum(GramOperator(net, masks, inputs), spectrum)
    trace = _trace_pass(net, masks, inputs)
    # One set of path values at a time: peak memory stays that of the trace pass.
    log_l1 = _log_forward(net, _LazyValues(net, masks, inputs.dtype, _l1_value), inputs)
    with torch.no_grad():
        counted = net(
            _LazyValues(net, masks, inputs.dtype, _count_value), inputs, masks, count=True
        )
    log_num_paths = float(counted.log_sum())
    params = dict(model.named_parameters())
    weights = [n for n in net.weight_names if not net.is_norm(n)]
    counts = {n: int(masks[n].sum()) if n in masks else params[n].numel() for n in weights}
    total = sum(trace.terms.values(), torch.zeros((), dtype=torch.float64))
    log_trace = trace.log_trace
    return PathKernelStats(
        log_trace=log_trace,
        log_l1=log_l1,
        log_l2_squared=trace.log_l2_squared,
        log_num_paths=log_num_paths,
        effective_params=sum(trace.effective[n] for n in weights),
        num_params=sum(counts.values()),
        macs=sum(counts[n] * net.positions.get(n, 1) for n in weights),
        density=density(masks),
        layer_collapse=any(c == 0 for c in counts.values()) or log_trace == -math.inf,
        layer_density={n: counts[n] / params[n].numel() for n in weights},
        layer_trace_share={
            n: float(t / total) if total > 0 else 0.0 for n, t in trace.terms.items()
        },
        spectrum=spectrum_result,
    )


def _l1_value(
    net: PathNetwork, name: str, mask: torch.Tensor | None, dtype: torch.dtype
) -> torch.Tensor:
    """``w = |θ| ⊙ mask``: ``R(w) = ‖v‖₁``."""
    value = net.raw_values_of(name).detach().to(dtype).abs()
    return value if mask is None else value * mask


def _count_value(
    net: PathNetwork, name: str, mask: torch.Tensor | None, dtype: torch.dtype
) -> torch.Tensor:
    """BatchNorm scales are 1 when counting paths (Linear/Conv weights use their masks)."""
    raw = net.raw_values_of(name)
    return torch.ones(raw.shape, dtype=dtype, device=raw.device) if mask is None else mask.to(dtype)
