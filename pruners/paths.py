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
  reshapes, concatenation and residual additions run as written (max-pooling routes each
  window's largest path sum, as the network does).

Numerics (DESIGN.md §Numerics): path sums overflow float32 on deep networks. The graph is
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

import operator
import weakref
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, cast

import torch
import torch.nn.functional as F
from torch import fx, nn

_CONV = (nn.Conv1d, nn.Conv2d, nn.Conv3d)
_LINEAR = (nn.Linear,)
_NORM = (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d)
_OPEN = (nn.ReLU, nn.ReLU6, nn.Dropout, nn.Dropout1d, nn.Dropout2d, nn.Dropout3d, nn.Identity)
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
_OPEN_FUNCTIONS = {F.relu, torch.relu, F.dropout}
_MERGES = {operator.add, operator.iadd, torch.add, torch.cat, torch.stack}

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
            graph_module = fx.symbolic_trace(model)
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
        return PathOutput(env[self._output_index], state.log_scale)

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
                f"parameter {target!r} is used outside a Linear/Conv/BatchNorm module; "
                "path quantities need weights held by such modules"
            )
        return lambda env, values, state: env.__setitem__(index, attr)

    def _node_function(self, node: fx.Node) -> Callable[..., Any]:
        if node.op == "call_module":
            return self._module_function(str(node.target))
        if node.op == "call_function":
            target = node.target
            if target in _OPEN_FUNCTIONS:
                return lambda values, state, x, *a, **k: x
            return lambda values, state, *a, **k: target(*a, **k)  # type: ignore[operator]
        method = str(node.target)
        return lambda values, state, obj, *a, **k: getattr(obj, method)(*a, **k)

    def _module_function(self, target: str) -> Callable[..., Any]:
        module = self._modules[target]
        if isinstance(module, _CONV + _LINEAR):
            return self._weight_layer(module)
        if isinstance(module, _NORM):
            return self._norm_layer(module, target)
        if isinstance(module, _OPEN):
            return lambda values, state, x, *a, **k: x
        if isinstance(module, _AS_IS):
            return lambda values, state, *a, **k: module(*a, **k)
        raise ValueError(
            f"module {target!r} of type {type(module).__name__} is not path-decomposable; "
            "supported: Linear, Conv, BatchNorm, ReLU, Dropout, pooling, Flatten and "
            "functional residual adds/concatenation"
        )

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
    if node.op == "call_method" and node.target in ("add", "add_"):
        return len(node.all_input_nodes) >= 2
    return False
