"""The linearized path network: ``R(w) = 1ᵀ f_w(u)`` evaluated without overflow.

Gebhart, Saxena, Schrater (2021), *A Unified Paths Perspective for Pruning at Initialization*:
for a ReLU network every output is a sum over input→output paths of the path value
``v_p = Π_{j∈p} θ_j`` times the ReLU gates. With every weight replaced by a non-negative value
``w_j`` and a non-negative input ``u`` every ReLU is open, so the network computes
``R(w) = Σ_p Π_{j∈p} w_j · u_in(p)``, a polynomial that is linear in each layer. The SynFlow
family and the Path Kernel trace are all read off ``R`` and its gradient.

What the linearized network computes, layer by layer:

- Linear / Conv weights: the path values ``w`` supplied by the caller (typically
  ``|θ|^p ⊙ mask``).
- BatchNorm (any mode) is taken in eval form, ``γ ⊙ (x − μ) / sqrt(σ² + ε) + β``, an affine
  map: the per-channel scale ``c = γ / sqrt(σ² + ε)`` is a diagonal layer on every path through
  it (its path value is supplied by the caller, see :meth:`PathNetwork.base_values`); the shift
  ``β − γ μ / sqrt(σ² + ε)`` is a bias.
- Biases start paths in the middle of the network that carry no input. With
  ``bias_paths=False`` they are dropped: ``R`` sums input→output paths only, the Path Kernel
  of the paper. With ``bias_paths=True`` each bias ``b`` enters with value ``|b|^p`` (masked
  when pruned), which is what SynFlow's reference procedure (the network on ``|θ|``) computes.
- ReLU, Dropout and Identity are the identity (every input is non-negative); pooling, flatten,
  reshapes, concatenation, means, sums and residual additions run as written (max-pooling
  routes each window's largest path sum, as the network does); multiplication or division by
  a positive number scales every path through it.
- Everything else is refused: every node that depends on the input must be on an allowlist
  (modules, functions and Tensor methods alike). GELU, SiLU, sigmoid, tanh, softmax,
  layer/group norm, products or matmuls of two activations, subtraction, negation, scaling by
  a non-positive number, a constant added to an activation, attention and unknown modules or
  functions raise ``ValueError`` naming the node, the op and the model's source line: such a
  network's output is no sum over paths of products of weights, so any R, trace or SynFlow
  score would be a silent wrong number.

Numerics (docs/design.md, one constant for every weight): path sums overflow float32 on deep networks. The graph is
traced with ``torch.fx``; at every *cut* (a node every input→output path passes through: a
dominator of the output, at a Linear/Conv output or a merge such as a residual add) the
activation is divided by its maximum ``c``, detached, and ``log c`` is accumulated. Because
everything downstream of a cut is linear in the activation at the cut, the network returns
``R / C`` with ``C = Π c`` a constant, and the gradient is ``∇R / C`` for *every* weight: all
scores share one factor, so rankings are those of the exact computation, and ``log R`` is
``log(R/C) + log C``. Between cuts values grow by at most one block's gain; in the backward
pass each layer's weighted gradient sum is bounded by ``R / C`` (Euler's theorem for
multilinear ``R``), so nothing overflows in float32 even on ResNet-110.
"""

from __future__ import annotations

import math
import operator
import os
import re
import weakref
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, cast

import torch
import torch.autograd.forward_ad as fwAD
import torch.nn.functional as F
from torch import fx, nn

_CONV = (nn.Conv1d, nn.Conv2d, nn.Conv3d)
_LINEAR = (nn.Linear,)
_NORM = (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d)
_OPEN = (nn.ReLU, nn.Dropout, nn.Dropout1d, nn.Dropout2d, nn.Dropout3d, nn.Identity)
_AS_IS = (
    nn.MaxPool1d,
    nn.MaxPool2d,
    nn.MaxPool3d,
    nn.AvgPool1d,
    nn.AvgPool2d,
    nn.AvgPool3d,
    nn.AdaptiveAvgPool1d,
    nn.AdaptiveAvgPool2d,
    nn.AdaptiveAvgPool3d,
    nn.AdaptiveMaxPool1d,
    nn.AdaptiveMaxPool2d,
    nn.AdaptiveMaxPool3d,
    nn.Flatten,
    nn.Unflatten,
)
# -- the allowlist ---------------------------------------------------------------------------
# Every node of the traced graph that carries paths (depends on the input) must be one of these;
# anything else is refused with the node, the op and the model's source line. Each entry is a
# map that sends non-negative path sums to non-negative path sums and is linear with
# non-negative coefficients (or routes them, as max-pooling), so R stays a sum over paths.
# ReLUs and dropout: the identity once every input is non-negative (all gates open, eval form).
# ReLU6 is not a ReLU: its clip at 6 is no 0/1 gate on a path sum, so it is refused.
_OPEN_FUNCTIONS: frozenset[Any] = frozenset(
    {
        F.relu, F.relu_, torch.relu, torch.relu_,
        F.dropout, F.dropout1d, F.dropout2d, F.dropout3d,
    }
)  # fmt: skip
_OPEN_METHODS = frozenset({"relu", "relu_"})
# Reshapes, selections, pooling, concatenation, means and sums: run as written.
_AS_IS_FUNCTIONS: frozenset[Any] = frozenset(
    {
        torch.flatten, torch.reshape, torch.permute, torch.transpose, torch.swapaxes,
        torch.squeeze, torch.unsqueeze, torch.chunk, torch.split, operator.getitem,
        torch.cat, torch.concat, torch.concatenate, torch.stack,
        torch.mean, torch.sum,
        F.max_pool1d, F.max_pool2d, F.max_pool3d,
        F.avg_pool1d, F.avg_pool2d, F.avg_pool3d,
        F.adaptive_avg_pool1d, F.adaptive_avg_pool2d, F.adaptive_avg_pool3d,
        F.adaptive_max_pool1d, F.adaptive_max_pool2d, F.adaptive_max_pool3d,
        torch.max_pool1d, torch.max_pool2d, torch.max_pool3d,
        torch.avg_pool1d, torch.adaptive_avg_pool1d,
    }
)  # fmt: skip
_AS_IS_METHODS = frozenset(
    {
        "view", "view_as", "reshape", "reshape_as", "flatten", "permute", "transpose",
        "swapaxes", "contiguous", "squeeze", "unsqueeze", "chunk", "split", "mean", "sum",
    }
)  # fmt: skip
# Shape queries: their results carry no paths.
_SHAPE_METHODS = frozenset({"size", "dim", "numel"})
_SHAPE_ATTRIBUTES = frozenset({"shape", "ndim", "dtype", "device"})
# Addition of branches (every tensor operand carries paths) and scaling by a positive constant.
_ADD_FUNCTIONS: frozenset[Any] = frozenset({operator.add, operator.iadd, torch.add})
_ADD_METHODS = frozenset({"add", "add_"})
_MUL_FUNCTIONS: frozenset[Any] = frozenset({operator.mul, operator.imul, torch.mul, torch.multiply})
_DIV_FUNCTIONS: frozenset[Any] = frozenset(
    {operator.truediv, operator.itruediv, torch.div, torch.divide, torch.true_divide}
)
_MUL_METHODS = frozenset({"mul", "mul_"})
_DIV_METHODS = frozenset({"div", "div_"})
_MERGES = _ADD_FUNCTIONS | {torch.cat, torch.concat, torch.concatenate, torch.stack}
_SUPPORTED = (
    "supported: Linear/Conv (grouped too), BatchNorm, ReLU, Dropout, pooling, reshapes, "
    "concatenation, additions of branches and scaling by positive constants"
)

Step = Callable[[list[Any], Mapping[str, torch.Tensor], "_State"], None]


class _State:
    """Running log of the normalization constants of one forward pass."""

    def __init__(
        self,
        dtype: torch.dtype,
        device: torch.device,
        directions: Mapping[str, torch.Tensor] | None = None,
        count: bool = False,
    ) -> None:
        self.log_scale = torch.zeros((), dtype=torch.float64, device=device)
        self.dtype = dtype
        self.directions = directions
        self.count = count

    def scale_bias(self, bias: torch.Tensor) -> torch.Tensor:
        """``bias / C`` for a bias entering after the cuts so far."""
        # A bias enters after the cuts above it divided the activations by their constants;
        # dividing it by the same constants keeps R / C exact. When C has underflowed far
        # below the dtype's range, 1/C overflows to inf: a zero bias (the usual
        # initialization) must still contribute exactly 0, not 0·inf = NaN.
        factor = torch.exp(-self.log_scale).to(self.dtype)
        zero = (bias == 0) & torch.isinf(factor)
        return bias * torch.where(zero, torch.zeros_like(bias), factor)


@dataclass(frozen=True)
class PathOutput:
    """Result of one linearized forward pass.

    Attributes:
        output: the network's output divided by ``exp(log_scale)``.
        log_scale: natural log of the common factor ``C`` (0-dim float64 tensor).
    """

    output: torch.Tensor
    log_scale: torch.Tensor

    def log_sum(self) -> torch.Tensor:
        """``log R = log(1ᵀ output) + log C`` (float64, -inf when no path survives)."""
        return self.output.double().sum().log() + self.log_scale


class PathNetwork:
    """A model's linearized path network, traced once and evaluated many times.

    Args:
        model: any module built from Linear/Conv/BatchNorm/ReLU/pooling/residual adds that
            ``torch.fx.symbolic_trace`` can trace. It is read, never modified.
        bias_paths: include bias (and BatchNorm shift) paths, see the module docstring.
    """

    def __init__(self, model: nn.Module, *, bias_paths: bool = False) -> None:
        try:
            graph_module = _trace(model)
        except Exception as err:  # fx raises many types; the message is what matters
            raise ValueError(
                f"the model must be traceable by torch.fx to compute path quantities: {err}"
            ) from err
        # A weak reference: the cache in :func:`path_network` must not keep models alive.
        self._model_ref = weakref.ref(model)
        self.bias_paths = bias_paths
        self._modules = dict(graph_module.named_modules())
        self._names = {id(p): n for n, p in model.named_parameters()}
        self.weight_names: list[str] = []  # path parameters in execution order
        self.bias_names: list[str] = []
        # Output positions per Linear/Conv weight (spatial size; rows for Linear), for MACs.
        self.positions: dict[str, int] = {}
        self._nodes = list(graph_module.graph.nodes)
        self._index = {n: i for i, n in enumerate(self._nodes)}
        self._carrying = _carrying_nodes(self._nodes)
        output = next(n for n in self._nodes if n.op == "output")
        if not any(n in self._carrying for n in output.all_input_nodes):
            raise ValueError(
                "the model's output does not depend on its input: it has no input→output path"
            )
        self._cuts = {
            n
            for n in _output_dominators(self._nodes)
            if _is_merge(n)
            or (n.op == "call_module" and isinstance(self._modules[str(n.target)], _CONV + _LINEAR))
        }
        self._steps = [self._compile(node, i) for i, node in enumerate(self._nodes)]
        self._output_index = next(i for i, n in enumerate(self._nodes) if n.op == "output")

    # -- public -----------------------------------------------------------------------------
    @property
    def model(self) -> nn.Module:
        """The traced model."""
        model = self._model_ref()
        if model is None:
            raise RuntimeError("the model of this path network no longer exists")
        return model

    def path_parameters(self) -> dict[str, torch.Tensor]:
        """Parameters that multiply path values (Linear/Conv weights, BatchNorm scales)."""
        params = dict(self.model.named_parameters())
        return {n: params[n] for n in self.weight_names if n in params}

    def is_norm(self, name: str) -> bool:
        """Whether ``name`` is a BatchNorm scale (a diagonal layer on paths)."""
        return isinstance(self._owner(name), _NORM)

    def raw_values(self) -> dict[str, torch.Tensor]:
        """Signed ``θ`` of every path weight (BatchNorm: ``γ / sqrt(σ²+ε)``), with autograd."""
        return {name: self._raw_weight(name) for name in self.weight_names}

    def raw_values_of(self, name: str) -> torch.Tensor:
        """Signed ``θ`` of one path weight (see :meth:`raw_values`)."""
        return self._raw_weight(name)

    def magnitudes(self) -> dict[str, torch.Tensor]:
        """``|θ|`` of every path weight; for BatchNorm the eval-mode scale ``|γ / sqrt(σ²+ε)|``.

        Biases are included when ``bias_paths`` is set.
        """
        mags: dict[str, torch.Tensor] = {}
        for name in self.weight_names:
            mags[name] = self._raw_weight(name).abs()
        if self.bias_paths:
            for name in self.bias_names:
                mags[name] = self._raw_bias(name).abs()
        return mags

    def base_values(
        self, power: float, dtype: torch.dtype | None = None
    ) -> dict[str, torch.Tensor]:
        """``|θ|^power`` for every path parameter (see :meth:`magnitudes`), detached."""
        out = {}
        for name, mag in self.magnitudes().items():
            mag = mag.detach().to(dtype or mag.dtype)
            out[name] = torch.ones_like(mag) if power == 0 else mag.pow(power)
        return out

    def __call__(
        self,
        values: Mapping[str, torch.Tensor],
        inputs: torch.Tensor,
        directions: Mapping[str, torch.Tensor] | None = None,
        *,
        count: bool = False,
    ) -> PathOutput:
        """Evaluate ``R(values) / C`` on a batch of non-negative ``inputs``.

        Args:
            values: non-negative path value for every name in :meth:`magnitudes`.
            inputs: non-negative input batch (e.g. ``torch.ones(1, *input_shape)``).
            directions: inside ``torch.autograd.forward_ad.dual_level`` with a dual ``inputs``:
                every Linear/Conv weight is moved along its direction (a bool mask; all ones
                where absent) and the output's tangent is ``d/dt R(w + t · direction) / C``.
                The direction is never materialized as a weight-sized tensor where it is all
                ones: ``layer(x, ones)`` is a channel sum and a box filter.
            count: use the ``directions`` (all ones where absent) as the Linear/Conv path
                values instead of ``values``, so that ``R`` counts the surviving paths.
        """
        state = _State(inputs.dtype, inputs.device, directions, count)
        env: list[Any] = [None] * len(self._nodes)
        env[0] = inputs
        try:
            for step in self._steps:
                step(env, values, state)
        except RuntimeError as err:  # shape mismatches surface here as RuntimeError
            shape = tuple(inputs.shape[1:])
            raise ValueError(f"the model cannot take input_shape={shape}: {err}") from err
        output = env[self._output_index]
        _check_output(output)
        return PathOutput(output, state.log_scale)

    # -- compilation ------------------------------------------------------------------------
    def _compile(self, node: fx.Node, index: int) -> Step:
        index_of = self._index

        def load(args: Any, env: list[Any]) -> Any:
            return fx.node.map_arg(args, lambda n: env[index_of[n]])

        if node.op == "placeholder":
            if index != 0:
                raise ValueError("path quantities need a model whose forward takes one input")
            return _noop
        if node.op == "output":
            return lambda env, values, state: env.__setitem__(index, load(node.args[0], env))
        if node.op == "get_attr":
            return self._compile_get_attr(node, index)
        fn = self._node_function(node)
        normalize = node in self._cuts

        def step(env: list[Any], values: Mapping[str, torch.Tensor], state: _State) -> None:
            args, kwargs = load(node.args, env), load(node.kwargs, env)
            out = fn(values, state, *args, **kwargs)
            if normalize:
                peak = out.detach().amax()
                peak = torch.where(peak > 0, peak, torch.ones_like(peak))
                out = out * peak.reciprocal()  # a product's forward-mode rule is the cheaper
                state.log_scale = state.log_scale + peak.double().log()
            env[index] = out

        return step

    def _compile_get_attr(self, node: fx.Node, index: int) -> Step:
        target = str(node.target)
        attr = _fetch(self.model, target)
        if isinstance(attr, nn.Parameter):
            raise ValueError(
                f"parameter {target!r} is used outside a Linear/Conv/BatchNorm module "
                f"(node {node.name!r} at {_source_line(node)}); path quantities need weights "
                "held by such modules"
            )
        return lambda env, values, state: env.__setitem__(index, attr)

    def _node_function(self, node: fx.Node) -> Callable[..., Any]:
        """What the node computes in the path network; refuses every op off the allowlist."""
        if node.op == "call_module":
            return self._module_function(node)
        if node not in self._carrying:  # shape arithmetic, constants: no path runs through
            return _as_written(node)
        target = node.target
        if node.op == "call_function":
            if target in _OPEN_FUNCTIONS:
                return lambda values, state, x, *a, **k: x
            if target in _AS_IS_FUNCTIONS:
                self._check_operands_carry(node)
                return _as_written(node)
            if target in _ADD_FUNCTIONS:
                return self._branch_add(node)
            if target in _MUL_FUNCTIONS or target in _DIV_FUNCTIONS:
                return self._positive_scale(node, divide=target in _DIV_FUNCTIONS)
        elif node.op == "call_method":
            if target in _OPEN_METHODS:
                return lambda values, state, x, *a, **k: x
            if target in _AS_IS_METHODS:
                return _as_written(node)
            if target in _ADD_METHODS:
                return self._branch_add(node)
            if target in _MUL_METHODS or target in _DIV_METHODS:
                return self._positive_scale(node, divide=target in _DIV_METHODS)
        raise _refusal(node, _describe(node))

    def _module_function(self, node: fx.Node) -> Callable[..., Any]:
        target = str(node.target)
        module = self._modules[target]
        if isinstance(module, _CONV + _LINEAR):
            return self._weight_layer(module)
        if isinstance(module, _NORM):
            return self._norm_layer(module, target)
        if isinstance(module, _OPEN):
            return lambda values, state, x, *a, **k: x
        if isinstance(module, _AS_IS):
            return lambda values, state, *a, **k: module(*a, **k)
        raise _refusal(node, _describe(node))

    def _check_operands_carry(self, node: fx.Node) -> None:
        """A concatenation must join path-carrying tensors only (no constant tensor)."""
        if node.target not in _MERGES:
            return
        for operand in node.all_input_nodes:
            if operand not in self._carrying:
                raise _refusal(node, f"{_describe(node)} of a constant {operand.name!r}")

    def _branch_add(self, node: fx.Node) -> Callable[..., Any]:
        """``a + b`` of two path-carrying branches (``alpha > 0``); a constant shift is refused."""
        operands = list(node.args[:2])
        if len(operands) != 2 or not all(
            isinstance(o, fx.Node) and o in self._carrying for o in operands
        ):
            raise _refusal(node, f"{_describe(node)} of a constant (a shift, not a path)")
        alpha = node.kwargs.get("alpha", 1)
        if set(node.kwargs) - {"alpha"} or len(node.args) > 2 or not _positive_number(alpha):
            raise _refusal(node, f"{_describe(node)} with {alpha=} (a subtraction)")
        return lambda values, state, a, b, **k: a + b * k["alpha"] if k else a + b

    def _positive_scale(self, node: fx.Node, *, divide: bool) -> Callable[..., Any]:
        """``x * c``, ``c * x`` or ``x / c`` with a positive number ``c`` (checked when run)."""
        operands = list(node.args[:2])
        carrying = [isinstance(o, fx.Node) and o in self._carrying for o in operands]
        what = _describe(node)
        if len(operands) != 2 or node.kwargs or sum(carrying) != 1 or (divide and carrying[1]):
            kind = "two activations" if sum(carrying) == 2 else "an activation by a tensor"
            raise _refusal(node, f"{what} of {kind}" if not divide else f"{what} ({kind})")
        position = carrying.index(True)

        def run(values: Mapping[str, torch.Tensor], state: _State, *args: Any) -> Any:
            x, constant = args[position], args[1 - position]
            if not _positive_number(constant):
                value = constant if not isinstance(constant, torch.Tensor) else "a tensor"
                raise _refusal(node, f"{what} by {value} (only positive numbers keep paths)")
            return x / constant if divide else x * constant

        return run

    def _weight_layer(self, module: nn.Module) -> Callable[..., Any]:
        w_name = self._register(module.weight, self.weight_names)
        b_name = self._register(module.bias, self.bias_names) if module.bias is not None else None
        use_bias = self.bias_paths and b_name is not None

        def run(values: Mapping[str, torch.Tensor], state: _State, x: torch.Tensor) -> torch.Tensor:
            bias = state.scale_bias(values[b_name]) if use_bias and b_name else None
            if state.count:
                mask = (state.directions or {}).get(w_name)
                out = (
                    _ones_layer(module, x) if mask is None else _layer(module, x, mask.to(x.dtype))
                )
            elif state.directions is not None:
                direction = state.directions.get(w_name)
                out = _DirectedLayer.apply(x, values[w_name], direction, module)
                if bias is not None:
                    out = out + bias.view((-1,) + (1,) * (out.dim() - 2))
            else:
                out = _layer(module, x, values[w_name], bias)
            positions = out.shape[-1] if isinstance(module, _LINEAR) else out.shape[1]
            self.positions[w_name] = out[0].numel() // positions
            return out

        return run

    def _norm_layer(self, module: nn.Module, target: str) -> Callable[..., Any]:
        if module.weight is None:
            raise ValueError(f"BatchNorm {target!r} must be affine to enter path computations")
        if module.running_var is None:
            raise ValueError(f"BatchNorm {target!r} needs running statistics (eval form)")
        w_name = self._register(module.weight, self.weight_names)
        b_name = self._register(module.bias, self.bias_names)
        use_bias = self.bias_paths

        def run(values: Mapping[str, torch.Tensor], state: _State, x: torch.Tensor) -> torch.Tensor:
            shape = (1, -1) + (1,) * (x.dim() - 2)
            out = x * values[w_name].view(shape)
            if use_bias:
                out = out + state.scale_bias(values[b_name]).view(shape)
            return out

        return run

    def _register(self, param: Any, names: list[str]) -> str:
        name = self._names[id(param)]
        if name not in names:
            names.append(name)
        return name

    # -- raw values -------------------------------------------------------------------------
    def _owner(self, name: str) -> nn.Module:
        prefix = name.rpartition(".")[0]
        return self.model.get_submodule(prefix)

    def _raw_weight(self, name: str) -> torch.Tensor:
        module = self._owner(name)
        if isinstance(module, _NORM):
            assert module.running_var is not None  # checked at compile time
            return module.weight / torch.sqrt(module.running_var + module.eps)
        return cast(torch.Tensor, module.weight)

    def _raw_bias(self, name: str) -> torch.Tensor:
        module = self._owner(name)
        if isinstance(module, _NORM):
            assert module.running_var is not None and module.running_mean is not None
            scale = module.weight / torch.sqrt(module.running_var + module.eps)
            return module.bias - module.running_mean * scale
        return cast(torch.Tensor, module.bias)


_CACHE: weakref.WeakKeyDictionary[nn.Module, dict[bool, tuple[tuple[int, ...], PathNetwork]]] = (
    weakref.WeakKeyDictionary()
)


def path_network(model: nn.Module, *, bias_paths: bool = False) -> PathNetwork:
    """The model's :class:`PathNetwork`, traced once and cached while the model lives.

    The cache entry is renewed whenever the model's module structure changes.
    """
    signature = tuple(id(m) for m in model.modules())
    entries = _CACHE.setdefault(model, {})
    cached = entries.get(bias_paths)
    if cached is None or cached[0] != signature:
        cached = (signature, PathNetwork(model, bias_paths=bias_paths))
        entries[bias_paths] = cached
    return cached[1]


def _layer(
    module: nn.Module, x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None = None
) -> torch.Tensor:
    if not isinstance(weight, torch.Tensor):  # a sparse weight (pruners.scores.SparseConv)
        out = cast(torch.Tensor, weight(x))
        return out if bias is None else out + bias.view((-1,) + (1,) * (out.dim() - 2))
    if isinstance(module, _LINEAR):
        return F.linear(x, weight, bias)
    return cast(torch.Tensor, module._conv_forward(x, weight, bias))  # type: ignore[operator]


def _ones_layer(layer: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """``layer(x, ones)`` without a weight-sized tensor of ones."""
    if isinstance(layer, nn.Linear):
        out = x.sum(-1, keepdim=True)
        return out.expand(*out.shape[:-1], layer.out_features)
    module = cast(nn.Conv2d, layer)
    if module.groups != 1:
        return _layer(module, x, torch.ones_like(module.weight, dtype=x.dtype))
    # Every output channel sums all input channels over the kernel window: one box filter,
    # which a sum-pooling computes faster than a convolution where the geometry allows it.
    summed = x.sum(1, keepdim=True)
    if _box_as_pooling(module):
        out = F.avg_pool2d(
            summed, module.kernel_size, module.stride, module.padding,  # type: ignore[arg-type]
            count_include_pad=True, divisor_override=1,
        )  # fmt: skip
    else:
        kernel = torch.ones((1, 1, *module.kernel_size), dtype=x.dtype, device=x.device)
        out = cast(torch.Tensor, module._conv_forward(summed, kernel, None))
    return out.expand(out.shape[0], module.out_channels, *out.shape[2:])


def _box_as_pooling(module: nn.Conv2d) -> bool:
    """Whether sum-pooling equals the convolution with a kernel of ones."""
    if not isinstance(module, nn.Conv2d) or module.padding_mode != "zeros":
        return False
    if isinstance(module.padding, str) or tuple(module.dilation) != (1, 1):
        return False
    return all(2 * p <= k for p, k in zip(module.padding, module.kernel_size, strict=True))


class _DirectedLayer(torch.autograd.Function):
    """``layer(x, w)`` whose forward-mode derivative moves ``w`` along a direction too.

    Tangent: ``layer(ẋ, w) + layer(x, direction)``; the direction (mask or all ones) is not
    a dual tensor, so no weight-sized tangent is ever stored.
    """

    @staticmethod
    def forward(  # type: ignore[override]
        ctx: Any,
        x: torch.Tensor,
        weight: torch.Tensor,
        direction: torch.Tensor | None,
        module: nn.Module,
    ) -> torch.Tensor:
        ctx.save_for_forward(x, weight)
        ctx.direction, ctx.module = direction, module
        return _layer(module, x, weight)

    @staticmethod
    def jvp(ctx: Any, x_dot: torch.Tensor | None, *_: Any) -> torch.Tensor:  # type: ignore[override]
        x, weight = ctx.saved_tensors
        direction = ctx.direction
        if direction is None:
            out = _ones_layer(ctx.module, x)
        else:
            out = _layer(ctx.module, x, direction.to(x.dtype))
        return out if x_dot is None else out + _layer(ctx.module, x_dot, weight)


def _noop(env: list[Any], values: Mapping[str, torch.Tensor], state: _State) -> None:
    return None


def _fetch(model: nn.Module, target: str) -> Any:
    obj: Any = model
    for part in target.split("."):
        obj = getattr(obj, part)
    return obj


def _output_dominators(nodes: list[fx.Node]) -> set[fx.Node]:
    """Nodes every input→output path passes through (dominators of the output)."""
    order = {n: i for i, n in enumerate(nodes)}
    reach: dict[fx.Node, frozenset[int]] = {}
    output = None
    for node in nodes:
        preds = [p for p in node.all_input_nodes if p in reach]
        if node.op == "placeholder":
            reach[node] = frozenset({order[node]})
        elif preds:
            common = frozenset.intersection(*(reach[p] for p in preds))
            reach[node] = common | {order[node]}
        if node.op == "output":
            output = node
    if output is None or output not in reach:
        return set()
    return {nodes[i] for i in reach[output]}


def _is_merge(node: fx.Node) -> bool:
    """A node joining several branches (a residual add, a concatenation)."""
    if node.op == "call_function" and node.target in _MERGES:
        return len(node.all_input_nodes) >= 2
    if node.op == "call_method" and node.target in _ADD_METHODS:
        return len(node.all_input_nodes) >= 2
    return False


class _Tracer(fx.Tracer):
    """``torch.fx`` tracing that records each node's source line for error messages."""

    def __init__(self) -> None:
        super().__init__()
        self.record_stack_traces = True


def _trace(model: nn.Module) -> fx.GraphModule:
    tracer = _Tracer()
    try:
        graph = tracer.trace(model)
        return fx.GraphModule(model, graph, type(model).__name__)
    finally:
        # Tracing leaves reference cycles (proxies <-> tracer), and the tracer holds the model:
        # the model would outlive its last reference until a garbage collection, and its path
        # network (holding the submodules, so the parameters, on a GPU too) until a second one.
        # Seen on an H200: 15-30 KiB of a small model's CUDA memory left after each trial.
        tracer.__dict__.clear()


def _carrying_nodes(nodes: list[fx.Node]) -> set[fx.Node]:
    """Nodes whose value depends on the input as a tensor (shape queries carry no paths)."""
    carrying: set[fx.Node] = set()
    for node in nodes:
        if node.op == "placeholder":
            carrying.add(node)
        elif node.op == "call_method" and node.target in _SHAPE_METHODS:
            continue
        elif node.op == "call_function" and node.target is getattr:
            if len(node.args) > 1 and node.args[1] in _SHAPE_ATTRIBUTES:
                continue
            if any(p in carrying for p in node.all_input_nodes):
                carrying.add(node)
        elif node.op != "output" and any(p in carrying for p in node.all_input_nodes):
            carrying.add(node)
    return carrying


def _as_written(node: fx.Node) -> Callable[..., Any]:
    if node.op == "call_method":
        method = str(node.target)
        return lambda values, state, obj, *a, **k: getattr(obj, method)(*a, **k)
    target = cast(Callable[..., Any], node.target)
    return lambda values, state, *a, **k: target(*a, **k)


def _positive_number(value: Any) -> bool:
    """A Python number (not a tensor, not a bool) that is finite and > 0."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return False
    return math.isfinite(value) and value > 0


def _describe(node: fx.Node) -> str:
    """The op of a node in the user's words: a function, a Tensor method or a module type."""
    if node.op == "call_module":
        module = node.graph.owning_module.get_submodule(str(node.target))  # type: ignore[union-attr]
        return f"module {str(node.target)!r} of type {type(module).__name__}"
    if node.op == "call_method":
        return f"Tensor.{node.target}"
    target = node.target
    name = getattr(target, "__name__", None) or str(target)
    for prefix, namespace in (("torch.nn.functional", F), ("torch", torch), ("operator", operator)):
        if getattr(namespace, name, None) is target:
            return f"{prefix}.{name}"
    module = getattr(target, "__module__", None) or ""
    return f"{module}.{name}" if module and module != "builtins" else name


def _source_line(node: fx.Node) -> str:
    """``file:line (code)`` of the model's source that made ``node``, from fx's stack trace."""
    trace = node.meta.get("stack_trace")
    if not trace:
        return "an unknown source line"
    frames = re.findall(r'File "([^"]+)", line (\d+), in (\S+)\n\s*([^\n]*)', trace)
    torch_dir = os.path.dirname(torch.__file__)
    user = [f for f in frames if not f[0].startswith(torch_dir)]
    if not user:
        return "an unknown source line"
    path, line, function, code = user[-1]
    return f"{path}:{line} in {function} ({code.strip()})"


def _refusal(node: fx.Node, what: str) -> ValueError:
    return ValueError(
        f"{what} is not path-decomposable (node {node.name!r} at {_source_line(node)}): path "
        f"quantities and path scorers (SynFlow family, pk-preserve) need a ReLU network whose "
        f"paths multiply; {_SUPPORTED}. Non-path scorers (magnitude, random, snip, grasp) "
        "still work on this model"
    )


def _check_output(output: Any) -> None:
    """``R`` of non-negative values on a non-negative input is >= 0; NaN or < 0 is a bug."""
    if not isinstance(output, torch.Tensor):
        raise ValueError(
            f"path quantities need a model that returns one tensor, but it returns "
            f"{type(output).__name__}"
        )
    with torch.no_grad():
        primal = fwAD.unpack_dual(output).primal
        bad = torch.isnan(primal).any() | (primal < 0).any()
    if bool(bad):
        raise ValueError(
            "the path network's output is NaN or negative, which a sum of non-negative path "
            "values cannot be: the model holds an op the allowlist should have refused"
        )
