"""Saliency scores for pruning at initialization; larger scores are kept.

Every scorer is a pure function ``(ScoreContext, masks) -> dict[name, Tensor]`` registered in
:data:`SCORERS`. The SynFlow family follows Gebhart, Saxena, Schrater (2021), *A Unified Paths
Perspective for Pruning at Initialization*: with path values ``w = |θ|^p ⊙ mask`` and input
``u`` (all ones, or the mean raw input of a data sample), ``R_p = 1ᵀ f_w(u)`` and the score of
weight j is ``S_j = |θ_j|^a · ∂R_p/∂w_j``. SNIP (Lee et al., 2019) and GraSP (Wang et al., 2020)
need a labelled sample; ``pk-preserve`` keeps the weights carrying the Path Kernel's trace.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, cast

import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call
from torch.nn.attention import SDPBackend, sdpa_kernel

from pruners.paths import PathNetwork, path_network

if TYPE_CHECKING:
    from pruners.data import PruneSample

Scores = dict[str, torch.Tensor]
INPUTS = ("ones", "data-mean")


@dataclass(frozen=True)
class SynFlowParams:
    """The SynFlow family's knobs (Gebhart et al. 2021, §SynFlow-L2 and SynFlow-Dist).

    Attributes:
        path_exponent: p in ``w = |θ|^p``; p = 2 makes ``R`` the squared path norm ‖v‖₂².
        score_exponent: a in ``S = |θ|^a ∂R/∂w``; a = p is the Taylor saliency of ‖v‖_p^p.
        input: ``"ones"`` or ``"data-mean"`` (the mean raw, non-negative input of a sample).
    """

    path_exponent: float = 1.0
    score_exponent: float = 1.0
    input: str = "ones"

    def __post_init__(self) -> None:
        if not self.path_exponent > 0:
            raise ValueError(f"path_exponent > 0 must hold, but got {self.path_exponent=}")
        if not self.score_exponent >= 0:
            raise ValueError(f"score_exponent >= 0 must hold, but got {self.score_exponent=}")
        if self.input not in INPUTS:
            raise ValueError(f"input must be one of {list(INPUTS)}, but got {self.input!r}")


@dataclass
class ScoreContext:
    """What a scorer may read. Holds caches (the traced path network), never weights to write.

    Attributes:
        model: the network; scorers never change its weights or buffers.
        method: the scorer's name in :data:`SCORERS`.
        names: the prunable parameter names, in ``named_parameters`` order.
        input_shape: shape of one input, without the batch dimension.
        sample: labelled prune sample, for data-dependent scorers and ``input="data-mean"``.
        synflow: the SynFlow-family knobs.
        seed: seed of the ``random`` scorer.
        dtype: dtype of path computations. Default float64: the rescaled path network
            cannot overflow, and float64 makes rankings those of the exact computation
            (float32 flips near-ties, which compound over 100 SynFlow rounds).
    """

    model: nn.Module
    method: str
    names: list[str]
    input_shape: tuple[int, ...]
    sample: PruneSample | None = None
    synflow: SynFlowParams = field(default_factory=SynFlowParams)
    seed: int = 0
    dtype: torch.dtype | None = None
    _base: dict[float, Scores] = field(default_factory=dict, repr=False)
    _rounds: int = 0

    def network(self, bias_paths: bool) -> PathNetwork:
        """The model's path network (traced on first use and cached by :func:`path_network`)."""
        return path_network(self.model, bias_paths=bias_paths)

    def base_values(self, power: float) -> Scores:
        """Cached ``|θ|^power`` of every path parameter (bias paths included)."""
        if power not in self._base:
            self._base[power] = self.network(True).base_values(power, self.compute_dtype)
        return self._base[power]

    @property
    def parameters(self) -> dict[str, torch.Tensor]:
        return dict(self.model.named_parameters())

    @property
    def compute_dtype(self) -> torch.dtype:
        return self.dtype or torch.float64

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    def path_input(self, kind: str) -> torch.Tensor:
        """The non-negative input batch ``u`` of one example."""
        shape = (1, *self.input_shape)
        if kind == "ones":
            return torch.ones(shape, dtype=self.compute_dtype, device=self.device)
        if self.sample is None:
            raise ValueError("input='data-mean' needs a prune sample: pass sample=...")
        mean = self.sample.raw_mean.to(self.device, self.compute_dtype)
        if mean.min() < 0:
            raise ValueError("input='data-mean' needs non-negative raw inputs")
        return mean.reshape(shape)

    def require_sample(self, method: str) -> PruneSample:
        if self.sample is None:
            raise ValueError(f"scorer {method!r} needs a labelled prune sample: pass sample=...")
        return self.sample

    def next_round(self) -> int:
        self._rounds += 1
        return self._rounds


ScoreFn = Callable[[ScoreContext, Mapping[str, torch.Tensor]], Scores]


@dataclass(frozen=True)
class Scorer:
    """A registered scorer.

    Attributes:
        fn: the pure scoring function.
        needs_sample: whether it needs a labelled prune sample.
        synflow: the preset's SynFlow knobs, or None for scorers outside the family.
    """

    fn: ScoreFn
    needs_sample: bool = False
    synflow: SynFlowParams | None = None


def _masked_values(
    base: Mapping[str, torch.Tensor], masks: Mapping[str, torch.Tensor]
) -> dict[str, torch.Tensor]:
    # torch.where reads the bool mask as is; ``base * mask`` would first copy it to floats.
    return {
        n: torch.where(masks[n], base[n], base[n].new_zeros(())) if n in masks else base[n]
        for n in base
    }


def synflow_scores(ctx: ScoreContext, masks: Mapping[str, torch.Tensor]) -> Scores:
    """SynFlow-family scores ``S_j = |θ_j|^a · ∂R_p/∂w_j`` at ``w = |θ|^p ⊙ mask``.

    The path network includes bias paths, as SynFlow's procedure (the network evaluated on
    ``|θ|``) does. Scores share one positive factor ``1/C`` (see :mod:`pruners.paths`); their
    ranking is exact. Gebhart et al. (2021), eq. for R and §SynFlow-L2/SynFlow-Dist.
    """
    knobs = ctx.synflow
    net = ctx.network(True)
    values = {
        n: v.requires_grad_(n in ctx.names)
        for n, v in _masked_values(ctx.base_values(knobs.path_exponent), masks).items()
    }
    out = net(values, ctx.path_input(knobs.input))
    leaves = [values[n] for n in ctx.names if n in values]
    grads = torch.autograd.grad(out.output.sum(), leaves, allow_unused=True)
    by_name = dict(zip([n for n in ctx.names if n in values], grads, strict=True))
    factors = ctx.base_values(knobs.score_exponent)  # |θ|^a, cached across rounds
    scores = {}
    for name in ctx.names:
        grad = by_name.get(name)
        if grad is None:
            scores[name] = torch.zeros_like(ctx.parameters[name], dtype=ctx.compute_dtype)
        else:
            scores[name] = grad if knobs.score_exponent == 0 else factors[name] * grad
    return scores


class SynFlowRounds:
    """:func:`synflow_scores` over the rounds of one :func:`~pruners.prune` call.

    One set of path values ``|θ|^p`` is cloned once and pruned weights are zeroed in it in
    place (the same values :func:`synflow_scores` rebuilds from the masks every round), and
    scores are returned for survivors only. A Conv2d with at most
    :func:`sparse_max_density` of its weights left runs as :class:`SparseConv`, the others as
    :class:`DenseConv` (weight gradient into a buffer kept across rounds): the same float64
    sums, added in another order (equal up to rounding, as two dense float64
    implementations are; the tests check the masks against a plain loop).

    Args:
        ctx: the scoring context (a SynFlow-family method).
    """

    def __init__(self, ctx: ScoreContext) -> None:
        knobs = ctx.synflow
        self.ctx = ctx
        self.net = ctx.network(True)
        self.values = {
            n: v.clone().requires_grad_(n in ctx.names)
            for n, v in ctx.base_values(knobs.path_exponent).items()
        }
        self.factors = None if knobs.score_exponent == 0 else ctx.base_values(knobs.score_exponent)
        self.input = ctx.path_input(knobs.input)
        self.leaves = [n for n in ctx.names if n in self.values]
        self.convs = {n: m for n in self.leaves if (m := _sparse_capable(ctx.model, n))}
        # Weight-gradient buffers of the convs still run dense, reused across rounds.
        self.buffers: dict[str, torch.Tensor] = {}

    def remove(self, name: str, flat_index: torch.Tensor) -> None:
        """Zero the path values of pruned weights (flat indices into ``name``)."""
        if name in self.values:
            with torch.no_grad():
                self.values[name].view(-1).index_fill_(0, flat_index, 0.0)

    def scores_at(self, alive: Mapping[str, torch.Tensor | None]) -> Scores:
        """Flat scores of the surviving weights (``alive[name]``: flat indices, None = all)."""
        values: dict[str, Any] = dict(self.values)
        leaves = dict(self.values)
        for name, module in self.convs.items():
            index = alive[name]
            limit = sparse_max_density(self.net.positions.get(name))
            if index is not None and index.numel() <= limit * module.weight.numel():
                # Few survivors: the layer runs as a sparse product over them (its gradient
                # is then the survivors' gradient, in flat order).
                survivors = self.values[name].detach().reshape(-1).index_select(0, index)
                survivors.requires_grad_()
                values[name] = SparseConv(module, index, survivors)
                leaves[name] = survivors
                self.buffers.pop(name, None)
            else:
                if name not in self.buffers:
                    self.buffers[name] = torch.empty_like(self.values[name].detach())
                values[name] = DenseConv(module, self.values[name], self.buffers[name])
        out = self.net(values, self.input)
        grads = torch.autograd.grad(
            out.output.sum(), [leaves[n] for n in self.leaves], allow_unused=True
        )
        compact = {n for n in self.leaves if leaves[n] is not self.values[n]}
        by_name = dict(zip(self.leaves, grads, strict=True))
        scores = {}
        for name in self.ctx.names:
            index = alive[name]
            grad = by_name.get(name)
            if grad is None:
                size = self.ctx.parameters[name].numel() if index is None else index.numel()
                scores[name] = torch.zeros(size, dtype=self.ctx.compute_dtype)
                continue
            flat = grad.reshape(-1)
            factor = None if self.factors is None else self.factors[name].reshape(-1)
            if name in self.buffers and (index is None or 2 * index.numel() > flat.numel()):
                # Most weights survive: scale the whole buffer in place, then gather once.
                if factor is not None:
                    flat = flat.mul_(factor)
                elif index is None:
                    flat = flat.clone()  # the buffer is overwritten next round
                scores[name] = flat if index is None else flat.index_select(0, index)
                continue
            if name not in compact and index is not None:
                flat = flat.index_select(0, index)
            if factor is not None:
                flat = flat * (factor if index is None else factor.index_select(0, index))
            scores[name] = flat
        return scores


# A Conv2d layer with at most this fraction of its weights left runs as a sparse product;
# by the number of output positions (H·W) at most, the fraction (measured on CPU in float64:
# the dense layer's cost per weight grows more slowly with H·W than the sparse product's cost
# per survivor, so layers of few positions turn sparse earlier).
SPARSE_MAX_DENSITY: tuple[tuple[int, float], ...] = ((4, 0.07), (16, 0.04))
SPARSE_MAX_DENSITY_DEFAULT = 0.025


def sparse_max_density(positions: int | None) -> float:
    """The largest density at which a Conv2d of ``positions`` output positions runs sparse."""
    for most, density in SPARSE_MAX_DENSITY:
        if positions is not None and positions <= most:
            return density
    return SPARSE_MAX_DENSITY_DEFAULT


def _sparse_capable(model: nn.Module, name: str) -> nn.Conv2d | None:
    """The Conv2d owning weight ``name`` if :class:`SparseConv` can run it, else None."""
    owner, _, attr = name.rpartition(".")
    module = model.get_submodule(owner)
    ok = (
        isinstance(module, nn.Conv2d)
        and attr == "weight"
        and module.groups == 1
        and module.padding_mode == "zeros"
        and not isinstance(module.padding, str)
    )
    return cast(nn.Conv2d, module) if ok else None


class SparseConv:
    """A pruned Conv2d weight held as its survivors; calling it runs the convolution.

    The weight is the sparse ``out_channels x (in_channels · kernel)`` matrix of the survivors
    (sorted flat indices ``index``, values ``values``); the convolution is that matrix times
    the unfolded input. Its backward gives the input gradient through the transposed matrix
    (a scatter-add of the survivors' rows) and the survivors' gradient as ``Σ_positions grad_out[row] · unfolded[col]`` (sampled
    dense-dense product), never a weight-sized tensor. Used by :class:`SynFlowRounds` once
    a layer is sparse enough (:func:`sparse_max_density`) for this to be cheaper.
    """

    def __init__(self, module: nn.Conv2d, index: torch.Tensor, values: torch.Tensor) -> None:
        self.module = module
        self.values = values
        self.shape = (module.out_channels, module.weight[0].numel())
        out_channels, fan_in = self.shape
        self.rows = torch.div(index, fan_in, rounding_mode="floor")
        self.cols = index - self.rows * fan_in
        self.crow = _offsets(self.rows, out_channels)  # CSR: ``index`` is sorted, so are rows

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        return cast(torch.Tensor, _SparseConvFunction.apply(x, self.values, self))

    def unfold(self, x: torch.Tensor) -> torch.Tensor:
        return _unfold(self.module, x)

    def fold(self, cols: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
        m = self.module
        return F.fold(cols, size, m.kernel_size, m.dilation, m.padding, m.stride)  # type: ignore[arg-type]

    def matrix(self, values: torch.Tensor) -> torch.Tensor:
        return _csr(self.crow, self.cols, values, self.shape)


class DenseConv:
    """A Conv2d weight run dense whose gradient is written into a buffer kept across rounds.

    The same convolution and input gradient as ``conv2d``; the weight gradient is the one
    product ``grad_out @ unfold(x)ᵀ`` written into ``buffer`` (what autograd's convolution
    backward computes into a fresh zeroed tensor each round: on CPU, a weight-sized
    allocation every round costs page faults and a zero fill). Used by
    :class:`SynFlowRounds` for the convs not yet sparse enough for :class:`SparseConv`.
    """

    def __init__(self, module: nn.Conv2d, weight: torch.Tensor, buffer: torch.Tensor) -> None:
        self.module = module
        self.weight = weight
        self.buffer = buffer
        self.calls = 0  # a module called twice (shared weights) needs a fresh gradient per call

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        return cast(torch.Tensor, _DenseConvFunction.apply(x, self.weight, self))


# Convs with at most this many output positions (H·W) per example run as one matrix product
# with the positions as rows: on CPU, BLAS streams the weight about twice as fast that way
# than through the convolution kernels when the weight is large and the image small.
DENSE_MM_MAX_POSITIONS = 64


class _DenseConvFunction(torch.autograd.Function):
    @staticmethod
    def forward(  # type: ignore[override]
        ctx: Any, x: torch.Tensor, weight: torch.Tensor, conv: DenseConv
    ) -> torch.Tensor:
        m = conv.module
        batch, _, height, width = x.shape
        ctx.conv, ctx.size = conv, (height, width)
        conv.calls += 1
        shape = _output_size(m, height, width)
        if shape[0] * shape[1] > DENSE_MM_MAX_POSITIONS:
            ctx.save_for_backward(x, weight)
            ctx.rows = None
            return F.conv2d(x, weight, None, m.stride, m.padding, m.dilation)
        # rows: one per (example, position), the unfolded input window as columns.
        rows = _unfold_rows(m, x)
        ctx.save_for_backward(rows, weight)
        ctx.rows = True
        out = torch.mm(rows, weight.detach().view(weight.shape[0], -1).t())
        return out.view(batch, -1, out.shape[1]).transpose(1, 2).reshape(batch, -1, *shape)

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[torch.Tensor | None, torch.Tensor, None]:  # type: ignore[override]
        saved, weight = ctx.saved_tensors
        conv: DenseConv = ctx.conv
        m = conv.module
        out_channels = m.out_channels
        weight_2d = weight.detach().view(out_channels, -1)
        batch = grad.shape[0]
        # grad_out with one row per (example, position)
        g = grad.reshape(batch, out_channels, -1).transpose(1, 2).reshape(-1, out_channels)
        if ctx.rows is None:
            x = saved
            grad_x = None
            if ctx.needs_input_grad[0]:
                grad_x = torch.ops.aten.convolution_backward(
                    grad, x, weight, None, m.stride, m.padding, m.dilation,
                    False, [0, 0], 1, [True, False, False],
                )[0]  # fmt: skip
            rows = _unfold_rows(m, x)
        else:
            rows, grad_x = saved, None
            if ctx.needs_input_grad[0]:
                grad_rows = torch.mm(g, weight_2d)  # (batch · positions, fan_in)
                grad_cols = grad_rows.view(batch, -1, grad_rows.shape[1]).transpose(1, 2)
                pad = cast(tuple[int, int], m.padding)  # never a string (see _sparse_capable)
                grad_x = F.fold(grad_cols, ctx.size, m.kernel_size, m.dilation, pad, m.stride)
        if conv.calls > 1:  # autograd sums the calls' gradients: each needs its own tensor
            return grad_x, torch.mm(g.t(), rows).view_as(weight), None
        torch.mm(g.t(), rows, out=conv.buffer.view(out_channels, -1))
        return grad_x, conv.buffer, None


def _unfold(m: nn.Conv2d, x: torch.Tensor) -> torch.Tensor:
    """The input windows of ``m`` as columns: (batch, in_channels · kernel, positions)."""
    return F.unfold(x, m.kernel_size, m.dilation, m.padding, m.stride)  # type: ignore[arg-type]


def _unfold_rows(m: nn.Conv2d, x: torch.Tensor) -> torch.Tensor:
    """The input windows of ``m`` as rows: (batch · positions, in_channels · kernel)."""
    cols = _unfold(m, x)
    return cols.transpose(1, 2).reshape(-1, cols.shape[1])


def _output_size(m: nn.Conv2d, height: int, width: int) -> tuple[int, int]:
    """Output height and width of a Conv2d with numeric padding on a height x width input."""
    pad = cast(tuple[int, int], m.padding)  # never a string here (see _sparse_capable)
    out_h = height + 2 * pad[0] - m.dilation[0] * (m.kernel_size[0] - 1) - 1
    out_w = width + 2 * pad[1] - m.dilation[1] * (m.kernel_size[1] - 1) - 1
    return (out_h // m.stride[0] + 1, out_w // m.stride[1] + 1)


def _csr(
    crow: torch.Tensor, cols: torch.Tensor, values: torch.Tensor, shape: tuple[int, int]
) -> torch.Tensor:
    with warnings.catch_warnings():  # "sparse CSR support is in beta": the product is stable
        warnings.simplefilter("ignore", UserWarning)
        return torch.sparse_csr_tensor(crow, cols, values, shape)


def _offsets(rows: torch.Tensor, count: int) -> torch.Tensor:
    """CSR row offsets of sorted-by-row entries with the given row numbers."""
    counts = torch.bincount(rows, minlength=count)
    return torch.cat([counts.new_zeros(1), counts.cumsum(0)])


class _SparseConvFunction(torch.autograd.Function):
    @staticmethod
    def forward(  # type: ignore[override]
        ctx: Any, x: torch.Tensor, values: torch.Tensor, conv: SparseConv
    ) -> torch.Tensor:
        batch, _, height, width = x.shape
        cols = conv.unfold(x)  # (batch, fan_in, positions)
        positions = cols.shape[-1]
        flat = cols.transpose(0, 1).reshape(conv.shape[1], batch * positions)
        out = conv.matrix(values.detach()) @ flat  # (out_channels, batch · positions)
        ctx.save_for_backward(flat, values)
        ctx.conv, ctx.size, ctx.batch = conv, (height, width), batch
        shape = _output_size(conv.module, height, width)
        return out.view(-1, batch, positions).transpose(0, 1).reshape(batch, -1, *shape)

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[torch.Tensor | None, torch.Tensor, None]:  # type: ignore[override]
        flat, values = ctx.saved_tensors
        conv: SparseConv = ctx.conv
        batch = ctx.batch
        g = grad.reshape(batch, conv.shape[0], -1).transpose(0, 1).reshape(conv.shape[0], -1)
        g = g.contiguous()  # a gradient may arrive expanded (stride 0): gathers crawl on it
        rows = g.index_select(0, conv.rows)  # grad_out[row] of every survivor
        grad_values = (rows * flat.index_select(0, conv.cols)).sum(-1)
        grad_x = None
        if ctx.needs_input_grad[0]:
            # The transposed product as a scatter-add of the survivors' rows: no sorting of
            # the survivors by column (which a transposed CSR matrix would need every round).
            rows.mul_(values.detach().unsqueeze(1))
            cols = g.new_zeros(conv.shape[1], g.shape[1]).index_add_(0, conv.cols, rows)
            cols = cols.view(conv.shape[1], batch, -1).transpose(0, 1)
            grad_x = conv.fold(cols, ctx.size)
        return grad_x, grad_values, None


def trace_values(
    net: PathNetwork, masks: Mapping[str, torch.Tensor], dtype: torch.dtype
) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
    """Path values ``w = θ ⊙ θ ⊙ mask`` and the factors turning ``∂R/∂w`` into trace terms.

    For a Linear/Conv weight, ``Σ_p (∂v_p/∂θ_j)² = ∂R/∂w_j`` (Gebhart et al. 2021, the trace
    identity): its factor is 1 and is left out. A BatchNorm scale enters paths as
    ``c = γ / sqrt(σ² + ε)``, so its parameter γ contributes ``∂R/∂(c²) / (σ² + ε)``.

    Returns:
        (values with autograd history back to the model's parameters, factors by name).
    """
    values, factors = {}, {}
    for name, raw in net.raw_values().items():
        values[name] = raw.to(dtype).square()
        if name in masks:
            values[name] = values[name] * masks[name]
        factor = trace_factor(net, name, dtype)
        if factor is not None:
            factors[name] = factor
    return values, factors


def trace_factor(net: PathNetwork, name: str, dtype: torch.dtype) -> torch.Tensor | None:
    """``1 / (σ² + ε)`` for a BatchNorm scale (see :func:`trace_values`); None for weights."""
    if not net.is_norm(name):
        return None
    module = cast(nn.BatchNorm2d, net.model.get_submodule(name.rpartition(".")[0]))
    running_var = cast(torch.Tensor, module.running_var)
    return (1.0 / (running_var + module.eps)).to(dtype).detach()


def pk_preserve_scores(ctx: ScoreContext, masks: Mapping[str, torch.Tensor]) -> Scores:
    """``|θ ⊙ ∂Tr(Π)/∂θ|``: keep the weights that carry the Path Kernel's trace.

    ``Tr(Π) = Σ_j ∂R/∂w_j`` at ``w = θ ⊙ θ`` (input→output paths only); its gradient in θ is
    one double-backward through that identity (Gebhart et al. 2021, the trace identity).
    """
    net = ctx.network(False)
    values, factors = trace_values(net, masks, ctx.compute_dtype)
    out = net(values, ctx.path_input("ones"))
    order = list(values)
    grads = torch.autograd.grad(out.output.sum(), [values[n] for n in order], create_graph=True)
    trace = sum(
        _weighted(g, masks.get(n), factors.get(n)).sum() for n, g in zip(order, grads, strict=True)
    )
    params = ctx.parameters
    targets = [n for n in ctx.names if n in values]
    assert isinstance(trace, torch.Tensor)
    dtrace = torch.autograd.grad(trace, [params[n] for n in targets], allow_unused=True)
    scores = {n: torch.zeros_like(params[n], dtype=ctx.compute_dtype) for n in ctx.names}
    for name, g in zip(targets, dtrace, strict=True):
        if g is not None:
            scores[name] = (params[name].detach() * g.detach()).abs().to(ctx.compute_dtype)
    return scores


def _weighted(
    grad: torch.Tensor, mask: torch.Tensor | None, factor: torch.Tensor | None
) -> torch.Tensor:
    """``grad ⊙ mask ⊙ factor`` with absent terms left out."""
    if mask is not None:
        grad = grad * mask
    return grad if factor is None else grad * factor


def magnitude_scores(ctx: ScoreContext, masks: Mapping[str, torch.Tensor]) -> Scores:
    """``|θ|`` (magnitude pruning at initialization)."""
    params = ctx.parameters
    return {n: params[n].detach().abs() for n in ctx.names}


def random_scores(ctx: ScoreContext, masks: Mapping[str, torch.Tensor]) -> Scores:
    """I.i.d. uniform scores; fresh draws each round, reproducible for ``ctx.seed``."""
    generator = torch.Generator().manual_seed(ctx.seed * 1_000_003 + ctx.next_round())
    params = ctx.parameters
    return {
        n: torch.rand(params[n].shape, generator=generator).to(params[n].device) for n in ctx.names
    }


def _masked_loss(
    ctx: ScoreContext, masks: Mapping[str, torch.Tensor], temperature: float = 1.0
) -> tuple[dict[str, torch.Tensor], Callable[[], torch.Tensor]]:
    """Differentiable masked parameters and a closure computing the sample's loss."""
    sample = ctx.require_sample("snip/grasp")
    params = {
        n: (p.detach() * masks[n] if n in masks else p.detach()).requires_grad_(p.requires_grad)
        for n, p in ctx.model.named_parameters()
    }
    # Cloned buffers: BatchNorm in train mode must not update the caller's running stats.
    buffers = {n: b.clone() for n, b in ctx.model.named_buffers()}
    # The sample is float32 data; a float64 model (exactness checks) needs float64 inputs.
    x = sample.x.to(ctx.device, next(ctx.model.parameters()).dtype)
    y = sample.y.to(ctx.device)

    def loss() -> torch.Tensor:
        logits = functional_call(ctx.model, {**params, **buffers}, (x,))
        return F.cross_entropy(logits / temperature, y)

    return params, loss


def snip_scores(ctx: ScoreContext, masks: Mapping[str, torch.Tensor]) -> Scores:
    """SNIP connection sensitivity ``|θ ⊙ ∂L/∂θ|`` on the prune sample (Lee et al., 2019)."""
    params, loss = _masked_loss(ctx, masks)
    grads = torch.autograd.grad(loss(), [params[n] for n in ctx.names], allow_unused=True)
    return {
        n: _zero_if_none(g, params[n]).mul(params[n].detach()).abs()
        for n, g in zip(ctx.names, grads, strict=True)
    }


@sdpa_kernel(SDPBackend.MATH)  # Hg is a double backward: CPU's fused attention has none
def grasp_scores(ctx: ScoreContext, masks: Mapping[str, torch.Tensor]) -> Scores:
    """GraSP (Wang et al., 2020): keep large ``θ ⊙ Hg``, i.e. prune large ``-θ ⊙ Hg``.

    ``g`` is the sample gradient at temperature 200 (as in the paper), ``Hg`` the
    Hessian-gradient product from one double-backward.
    """
    params, loss = _masked_loss(ctx, masks, temperature=200.0)
    leaves = [params[n] for n in ctx.names]
    first = torch.autograd.grad(loss(), leaves, allow_unused=True)
    # Pruned weights are no parameters of the pruned network: their gradient is left out of
    # g (as a mask inside the layer does in the authors' code), so H g runs over survivors.
    g = [
        _zero_if_none(t, p).detach() * masks[n] if n in masks else _zero_if_none(t, p).detach()
        for n, t, p in zip(ctx.names, first, leaves, strict=True)
    ]
    grads = torch.autograd.grad(loss(), leaves, create_graph=True, allow_unused=True)
    z = sum((gi * _zero_if_none(t, p)).sum() for gi, t, p in zip(g, grads, leaves, strict=True))
    assert isinstance(z, torch.Tensor)
    hg = torch.autograd.grad(z, leaves, allow_unused=True) if z.requires_grad else [None] * len(g)
    return {
        n: params[n].detach() * _zero_if_none(h, params[n])
        for n, h in zip(ctx.names, hg, strict=True)
    }


def _zero_if_none(grad: torch.Tensor | None, like: torch.Tensor) -> torch.Tensor:
    return torch.zeros_like(like) if grad is None else grad


SCORERS: dict[str, Scorer] = {
    "random": Scorer(random_scores),
    "magnitude": Scorer(magnitude_scores),
    "snip": Scorer(snip_scores, needs_sample=True),
    "grasp": Scorer(grasp_scores, needs_sample=True),
    "synflow": Scorer(synflow_scores, synflow=SynFlowParams(1.0, 1.0, "ones")),
    "synflow-l2": Scorer(synflow_scores, synflow=SynFlowParams(2.0, 1.0, "ones")),
    "synflow-dist": Scorer(synflow_scores, synflow=SynFlowParams(1.0, 1.0, "data-mean")),
    "synflow-l2-dist": Scorer(synflow_scores, synflow=SynFlowParams(2.0, 1.0, "data-mean")),
    # The authors' public code's SynFlow-L2: the network evaluated at w = |θ| and scored
    # θ² · ∂R/∂w, i.e. the family member p = 1, a = 2 (the paper's formula is p = 2, a = 1).
    "synflow-l2-code": Scorer(synflow_scores, synflow=SynFlowParams(1.0, 2.0, "ones")),
    "pk-preserve": Scorer(pk_preserve_scores),
}
