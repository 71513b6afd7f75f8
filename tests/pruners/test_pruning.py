"""Schedules, exact top-k selection and the argument checks of ``pruners.prune``.

``prune`` keeps exactly ``round(d_r · N)`` weights in round r (Tanaka et al. 2020's iterative
schedule; Gebhart, Saxena, Schrater 2021, *A Unified Paths Perspective for Pruning at
Initialization*).
"""

from __future__ import annotations

import copy
import math
from collections.abc import Callable
from typing import Any

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import pruners
from pruners import pruning
from pruners import scores as scores_module
from pruners.data import PruneSample
from pruners.pruning import keep_top, schedule_densities, select

SHAPE = (1, 8, 8)


@pytest.fixture(scope="module")
def sample() -> PruneSample:
    return pruners.prune_sample(pruners.load_dataset("digits"), per_class=1)


def fc(seed: int = 0, **options: object) -> nn.Module:
    torch.manual_seed(seed)
    return pruners.build_model("fc", SHAPE, 10, width=8, depth=3, **options)


def kept(masks: dict[str, torch.Tensor]) -> int:
    return sum(int(m.sum()) for m in masks.values())


# --------------------------------------------------------------------------- schedules


@pytest.mark.parametrize("density", [0.3, 0.01, 0.1, 1e-4, 0.7, 1.0])
@pytest.mark.parametrize("iterations", [1, 3, 7, 100])
@pytest.mark.parametrize("schedule", ["exponential", "linear"])
def test_schedules_end_exactly_at_the_density(
    schedule: str, iterations: int, density: float
) -> None:
    ds = schedule_densities(density, iterations, schedule)
    assert len(ds) == iterations
    assert ds[-1] == density  # exactly: round(d · N) must be round(density · N)
    assert all(a >= b for a, b in zip([1.0, *ds], ds, strict=False))
    r = 1
    want = (
        density ** (r / iterations) if schedule == "exponential" else 1 - (1 - density) / iterations
    )
    assert ds[0] == pytest.approx(want, rel=1e-12)


def test_linear_schedule_reaches_round_density_times_n_exactly() -> None:
    """15 weights at density 0.3: round(4.5) = 4, not round(4.500000000000001) = 5."""
    model = nn.Sequential(nn.Linear(3, 5, bias=False))
    for schedule in ("linear", "exponential"):
        masks = pruners.prune(model, "magnitude", 0.3, 4, schedule, input_shape=(3,))
        assert kept(masks) == round(0.3 * 15) == 4


# --------------------------------------------------------------------------- keep_top


def reference_keep(values: torch.Tensor, k: int) -> torch.Tensor:
    """The k largest by a stable descending sort: ties go to lower indices."""
    keep = torch.zeros(values.numel(), dtype=torch.bool)
    keep[torch.sort(values, descending=True, stable=True).indices[: max(k, 0)]] = True
    return keep


def test_keep_top_breaks_ties_toward_lower_indices() -> None:
    values = torch.tensor([1.0, 3.0, 2.0, 3.0, 2.0, 2.0, 0.0])
    assert keep_top(values, 2).tolist() == [False, True, False, True, False, False, False]
    assert keep_top(values, 3).tolist() == [False, True, True, True, False, False, False]
    assert keep_top(values, 4).tolist() == [False, True, True, True, True, False, False]
    assert keep_top(values, 0).tolist() == [False] * 7
    assert keep_top(values, 7).all() and keep_top(values, 99).all()
    assert not keep_top(values, -1).any()
    zeros = torch.tensor([0.0, -0.0, 0.0, -0.0])
    assert keep_top(zeros, 2).tolist() == [True, True, False, False]


@pytest.mark.parametrize("seed", range(5))
def test_keep_top_equals_sort_reference_on_small_tied_inputs(seed: int) -> None:
    gen = torch.Generator().manual_seed(seed)
    values = torch.randint(0, 5, (200,), generator=gen).double()
    for k in (1, 17, 100, 199):
        got = keep_top(values, k)
        assert int(got.sum()) == k
        assert torch.equal(got, reference_keep(values, k))


def test_keep_top_refuses_nan() -> None:
    with pytest.raises(FloatingPointError, match="NaN"):
        keep_top(torch.tensor([1.0, float("nan"), 0.5]), 1)
    with pytest.raises(FloatingPointError, match="NaN"):  # the sum is NaN either way
        keep_top(torch.tensor([float("inf"), float("nan"), -float("inf")]), 1)


def test_keep_top_ranks_infinities_whose_sum_is_nan() -> None:
    # inf + (-inf) sums to NaN without any NaN score: the cheap check must not refuse it.
    values = torch.tensor([float("inf"), 0.5, -float("inf"), 2.0])
    assert keep_top(values, 2).tolist() == [True, False, False, True]


@pytest.fixture
def kthvalue_sizes(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """Record the size of every tensor torch.kthvalue selects from (to see the band path)."""
    sizes: list[int] = []
    original = torch.kthvalue

    def recording(values: torch.Tensor, k: int, *args: object, **kwargs: object):  # type: ignore[no-untyped-def]
        sizes.append(values.numel())
        return original(values, k, *args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(pruning.torch, "kthvalue", recording)
    return sizes


LARGE = (1 << 20) + 12_345


@pytest.mark.parametrize(
    "make",
    [
        lambda g: torch.rand(LARGE, generator=g),
        lambda g: torch.randn(LARGE, generator=g, dtype=torch.float64),
        lambda g: torch.randint(0, 40, (LARGE,), generator=g).float(),  # massive ties
        lambda g: torch.rand(LARGE, generator=g).pow(8),  # skewed, many near 0
    ],
    ids=["uniform32", "normal64", "ties", "skewed"],
)
def test_keep_top_on_large_inputs_equals_sort_reference(
    make: Callable[[torch.Generator], torch.Tensor], kthvalue_sizes: list[int]
) -> None:
    values = make(torch.Generator().manual_seed(0))
    assert values.numel() > pruning._BAND_SELECT_MIN
    order = torch.sort(values, descending=True, stable=True).indices
    for k in (1, 1000, LARGE // 3, LARGE // 2, LARGE - 7):
        kthvalue_sizes.clear()
        got = keep_top(values, k)
        assert int(got.sum()) == k
        want = torch.zeros(LARGE, dtype=torch.bool)
        want[order[:k]] = True
        assert torch.equal(got, want), k
        assert kthvalue_sizes  # an exact selection ran
    # The middle of a smooth distribution goes through the narrow band, not a full selection.
    kthvalue_sizes.clear()
    keep_top(torch.rand(LARGE, generator=torch.Generator().manual_seed(1)), LARGE // 2)
    assert kthvalue_sizes and max(kthvalue_sizes) < LARGE // 10


def test_keep_top_large_input_whose_strided_sample_misleads() -> None:
    """The band is estimated from every step-th value; a bad estimate must not change results."""
    gen = torch.Generator().manual_seed(3)
    values = torch.rand(LARGE, generator=gen) + 1.0
    step = max(1, LARGE // 65_536)
    values[::step] = 0.0  # the sample sees only zeros
    for k in (5, LARGE // 2, LARGE - LARGE // step - 3):
        assert torch.equal(keep_top(values, k), reference_keep(values, k))


def _dropped_by_keep_top(values: list[torch.Tensor], m: int) -> list[torch.Tensor]:
    """What the sort reference leaves out when keeping all but ``m`` (ties: lower kept)."""
    flat = torch.cat(values)
    keep = reference_keep(flat, flat.numel() - m)
    return [(~k).nonzero().flatten() for k in keep.split([v.numel() for v in values])]


@pytest.mark.parametrize("seed", range(4))
def test_drop_lowest_many_is_the_complement_of_keep_top_on_tied_inputs(seed: int) -> None:
    gen = torch.Generator().manual_seed(seed)
    values = [torch.randint(0, 4, (s,), generator=gen).double() for s in (30, 1, 0, 55)]
    n = sum(v.numel() for v in values)
    for m in (-2, 0, 1, 5, 20, 43, n - 1, n, n + 3):
        got = pruning.drop_lowest_many(values, m)
        want = _dropped_by_keep_top(values, min(max(m, 0), n))
        assert [g.tolist() for g in got] == [w.tolist() for w in want], m


@pytest.mark.parametrize(
    "make",
    [
        lambda g: torch.rand(LARGE, generator=g, dtype=torch.float64).pow(3),
        lambda g: torch.randint(0, 40, (LARGE,), generator=g).double(),  # massive ties
    ],
    ids=["skewed", "ties"],
)
def test_drop_lowest_many_on_large_inputs_equals_the_sort_reference(
    make: Callable[[torch.Generator], torch.Tensor], kthvalue_sizes: list[int]
) -> None:
    values = make(torch.Generator().manual_seed(0))
    parts = list(values.split([LARGE // 3, 7, LARGE - LARGE // 3 - 7]))
    for m in (1, LARGE // 22, LARGE // 2, LARGE - 5):
        kthvalue_sizes.clear()
        got = pruning.drop_lowest_many(parts, m)
        assert sum(g.numel() for g in got) == m
        want = _dropped_by_keep_top(parts, m)
        assert all(torch.equal(g, w) for g, w in zip(got, want, strict=True)), m
    # A round of iterative pruning (drop ~4.5%) ranks a small candidate set, not everything.
    kthvalue_sizes.clear()
    pruning.drop_lowest_many(parts, LARGE // 22)
    assert kthvalue_sizes and max(kthvalue_sizes) < LARGE // 10


def test_drop_lowest_many_when_the_sample_misleads_and_on_nan() -> None:
    step = max(1, LARGE // 65_536)
    for seen in (0.0, 2.0):  # the strided sample sees only values below / above all others
        gen = torch.Generator().manual_seed(3)
        values = torch.rand(LARGE, generator=gen, dtype=torch.float64) + 1.0
        values[::step] = seen
        for m in (5, LARGE // 22, LARGE // 2):
            got = pruning.drop_lowest_many([values], m)[0]
            assert torch.equal(got, _dropped_by_keep_top([values], m)[0]), (seen, m)
    with pytest.raises(FloatingPointError, match="NaN"):
        pruning.drop_lowest_many([torch.tensor([1.0, 0.5]), torch.tensor([float("nan")])], 1)


# --------------------------------------------------------------------------- select


def _scores_and_masks(seed: int) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
    gen = torch.Generator().manual_seed(seed)
    shapes = {"a": (4, 5), "b": (3, 3, 2), "c": (7,)}
    scores = {n: torch.randint(0, 6, s, generator=gen).float() for n, s in shapes.items()}
    masks = {n: torch.rand(s, generator=gen) < 0.8 for n, s in shapes.items()}
    return scores, masks


@pytest.mark.parametrize("seed", range(3))
def test_select_global_keeps_exactly_k_and_never_revives(seed: int) -> None:
    scores, masks = _scores_and_masks(seed)
    total = sum(m.numel() for m in masks.values())
    new = select(scores, masks, 0.4, "global")
    assert kept(new) == round(0.4 * total)
    for n in masks:
        assert not (new[n] & ~masks[n]).any()
    flat = torch.cat([scores[n].flatten() for n in masks])
    alive = torch.cat([masks[n].flatten() for n in masks])
    ref = reference_keep(torch.where(alive, flat, torch.full_like(flat, -1.0)), round(0.4 * total))
    assert torch.equal(torch.cat([new[n].flatten() for n in masks]), ref)


@pytest.mark.parametrize("seed", range(3))
def test_select_layer_scope_keeps_the_density_in_every_layer(seed: int) -> None:
    scores, masks = _scores_and_masks(seed)
    new = select(scores, masks, 0.4, "layer")
    for n, m in masks.items():
        assert int(new[n].sum()) == min(round(0.4 * m.numel()), int(m.sum()))
        assert not (new[n] & ~m).any()
        s = torch.where(m.flatten(), scores[n].flatten(), torch.full((m.numel(),), -1.0))
        assert torch.equal(new[n].flatten(), reference_keep(s, round(0.4 * m.numel())))


def test_select_asking_for_more_than_survive_keeps_all_survivors() -> None:
    scores, masks = _scores_and_masks(0)
    new = select(scores, masks, 1.0, "global")
    for n in masks:
        assert torch.equal(new[n], masks[n])


# --------------------------------------------------------------------------- prune options


@pytest.mark.parametrize("scope", ["global", "layer"])
def test_dense_classifier_is_never_pruned(scope: str) -> None:
    model = fc()
    masks = pruners.prune(model, "synflow", 0.1, 3, scope=scope, input_shape=SHAPE,
                          dense_classifier=True)  # fmt: skip
    assert set(masks) == {"fc1.weight", "fc2.weight"}
    if scope == "global":
        assert kept(masks) == round(0.1 * (64 * 8 + 8 * 8))
    else:
        assert [int(m.sum()) for m in masks.values()] == [round(0.1 * 512), round(0.1 * 64)]


def test_include_bias_and_norm_make_them_prunable() -> None:
    torch.manual_seed(0)
    model = pruners.build_model("conv", SHAPE, 10, width=3, depth=2, batch_norm=True)
    masks = pruners.prune(model, "synflow", 0.5, 2, input_shape=SHAPE, include_bias=True,
                          include_norm=True)  # fmt: skip
    assert {"bn1.weight", "bn2.weight", "classifier.bias"} <= set(masks)
    assert "bn1.bias" not in masks  # BatchNorm shifts are not scales
    assert kept(masks) == round(0.5 * sum(m.numel() for m in masks.values()))


# --------------------------------------------------------------------------- bad input


def _valid_listed(
    excinfo: pytest.ExceptionInfo[ValueError], valid: tuple[str, ...] | list[str]
) -> None:
    message = str(excinfo.value)
    assert all(name in message for name in valid), message


def test_unknown_names_list_the_valid_ones() -> None:
    model = fc()
    with pytest.raises(ValueError, match="'bogus'") as err:
        pruners.prune(model, "bogus", 0.1, input_shape=SHAPE)
    _valid_listed(err, list(pruners.SCORERS))
    with pytest.raises(ValueError, match="'bogus'") as err:
        pruners.score(model, "bogus", input_shape=SHAPE)
    _valid_listed(err, list(pruners.SCORERS))
    with pytest.raises(ValueError, match="'cyclic'") as err:
        pruners.prune(model, "synflow", 0.1, 2, "cyclic", input_shape=SHAPE)
    _valid_listed(err, pruners.SCHEDULES)
    with pytest.raises(ValueError, match="'local'") as err:
        pruners.prune(model, "synflow", 0.1, 2, scope="local", input_shape=SHAPE)
    _valid_listed(err, pruners.SCOPES)
    with pytest.raises(ValueError, match="'zeros'") as err:
        pruners.prune(model, "synflow", 0.1, input_shape=SHAPE, input="zeros")
    _valid_listed(err, pruners.INPUTS)
    with pytest.raises(ValueError, match="'local'") as err:
        select({}, {}, 0.5, "local")
    _valid_listed(err, pruners.SCOPES)


@pytest.mark.parametrize("density", [0, 0.0, -0.1, 1.5, float("nan"), float("inf"), "0.5"])
def test_density_outside_the_unit_interval_raises(density: object) -> None:
    with pytest.raises(ValueError, match=r"0 < density <= 1 must hold, but got density=") as err:
        pruners.prune(fc(), "magnitude", density, input_shape=SHAPE)  # type: ignore[arg-type]
    assert repr(density) in str(err.value) or (isinstance(density, float) and math.isnan(density))


@pytest.mark.parametrize("iterations", [0, -1])
def test_iterations_below_one_raise(iterations: int) -> None:
    with pytest.raises(
        ValueError, match=rf"iterations >= 1 must hold, but got iterations={iterations}"
    ):
        pruners.prune(fc(), "magnitude", 0.5, iterations, input_shape=SHAPE)


@pytest.mark.parametrize("method", ["synflow", "snip", "magnitude", "pk-preserve"])
@pytest.mark.parametrize("shape", [(1, 7, 7), (3, 8, 8), (64,)])
def test_input_shape_the_model_cannot_take_raises(
    method: str, shape: tuple[int, ...], sample: PruneSample
) -> None:
    model = fc()
    if shape == (64,):  # fc flattens: (64,) is fine for it; a conv model is not
        torch.manual_seed(0)
        model = pruners.build_model("conv", SHAPE, 10, width=2, depth=1)
    with pytest.raises(ValueError, match=rf"cannot take input_shape={re_tuple(shape)}"):
        pruners.prune(model, method, 0.5, input_shape=shape, sample=sample)
    with pytest.raises(ValueError, match=rf"cannot take input_shape={re_tuple(shape)}"):
        pruners.score(model, method, input_shape=shape, sample=sample)


def re_tuple(shape: tuple[int, ...]) -> str:
    import re

    return re.escape(str(tuple(shape)))


@pytest.mark.parametrize("shape", [(0, 8, 8), (1, -8, 8), (1.0, 8, 8), ()])
def test_malformed_input_shapes_raise(shape: tuple) -> None:
    with pytest.raises(ValueError, match="input_shape"):
        pruners.prune(fc(), "magnitude", 0.5, input_shape=shape)


@pytest.mark.parametrize(
    ("method", "options"),
    [("snip", {}), ("grasp", {}), ("synflow-dist", {}), ("synflow", {"input": "data-mean"})],
)
def test_data_dependent_scorers_without_sample_raise(method: str, options: dict) -> None:
    with pytest.raises(ValueError, match="sample"):
        pruners.prune(fc(), method, 0.5, input_shape=SHAPE, **options)
    with pytest.raises(ValueError, match="sample"):
        pruners.score(fc(), method, input_shape=SHAPE, **options)


@pytest.mark.parametrize(
    ("masks", "message"),
    [
        ({"fc9.weight": torch.ones(8, 64, dtype=torch.bool)}, "lacks: 'fc9.weight'"),
        ({"fc1.weight": torch.ones(1, dtype=torch.bool)}, r"shape \(8, 64\)"),
        ({"fc1.weight": torch.zeros(8, 64)}, "bool tensor"),
    ],
)
@pytest.mark.parametrize("method", ["synflow", "magnitude", "pk-preserve"])
def test_score_refuses_masks_that_do_not_fit_the_model(
    method: str, masks: dict[str, torch.Tensor], message: str
) -> None:
    with pytest.raises(ValueError, match=message):
        pruners.score(fc(), method, input_shape=SHAPE, masks=masks)


def test_model_without_prunable_weights_raises() -> None:
    model = nn.Sequential(nn.ReLU())
    with pytest.raises(ValueError, match="no prunable parameters"):
        pruners.prune(model, "magnitude", 0.5, input_shape=(3,))


# --------------------------------------------------------------------------- the rounds


def rounds_one_by_one(
    model: nn.Module, method: str, density: float, iterations: int, scope: str, invert: bool,
    **options: object,
) -> dict[str, torch.Tensor]:  # fmt: skip
    """``prune`` written as its definition: full scores, then ``select``, every round."""
    params = pruners.masks.prunable_parameters(
        model,
        include_bias=bool(options.get("include_bias", False)),
        include_norm=bool(options.get("include_norm", False)),
    )
    ctx = pruning._context(
        model, method, list(params), SHAPE, None, None, None, None, 0,
        options.get("dtype"),  # type: ignore[arg-type]
    )  # fmt: skip
    masks = pruners.masks.ones_masks(params)
    for d in schedule_densities(density, iterations, "exponential"):
        scores = pruning.score_with(ctx, masks)
        if invert:
            scores = {n: -s for n, s in scores.items()}
        masks = select(scores, masks, d, scope)
    return masks


@pytest.mark.parametrize("method", ["synflow", "synflow-l2", "magnitude", "random"])
@pytest.mark.parametrize("scope", ["global", "layer"])
@pytest.mark.parametrize("invert", [False, True])
def test_prune_equals_score_then_select_every_round(method: str, scope: str, invert: bool) -> None:
    """The survivor-only bookkeeping (and SynFlow's in-place path values) change no mask."""
    torch.manual_seed(0)
    model = pruners.build_model("conv", SHAPE, 10, width=6, depth=2, batch_norm=True)
    options = {"include_bias": True, "include_norm": True}
    for dtype in (None, torch.float32):
        got = pruners.prune(model, method, 0.05, 6, scope=scope, input_shape=SHAPE,
                            invert=invert, dtype=dtype, **options)  # fmt: skip
        want = rounds_one_by_one(model, method, 0.05, 6, scope, invert, dtype=dtype, **options)
        assert set(got) == set(want)
        for n in want:
            assert torch.equal(got[n], want[n]), (n, dtype)
        assert got[n].dtype == torch.bool and got[n].shape == want[n].shape


def plain_synflow64(model: nn.Module, density: float, iterations: int) -> dict[str, torch.Tensor]:
    """Synaptic-Flow's algorithm in float64: |θ| copy, ones input, |θ ⊙ ∂R/∂θ|, global top-k."""
    names = list(pruners.masks.prunable_parameters(model))
    net = copy.deepcopy(model).double().eval()
    params = dict(net.named_parameters())
    with torch.no_grad():
        for p in params.values():
            p.abs_()
    masks = {n: torch.ones_like(params[n], dtype=torch.bool) for n in names}
    total = sum(m.numel() for m in masks.values())
    for d in schedule_densities(density, iterations, "exponential"):
        with torch.no_grad():
            for n in names:
                params[n].mul_(masks[n])
        net.zero_grad(set_to_none=True)
        net(torch.ones(1, *SHAPE, dtype=torch.float64)).sum().backward()
        flat = torch.cat([(params[n].grad * params[n]).abs().flatten() for n in names])
        alive = torch.cat([masks[n].flatten() for n in names])
        keep = reference_keep(torch.where(alive, flat, -1.0), round(d * total))
        pieces = keep.split([masks[n].numel() for n in names])
        masks = {n: k.view_as(masks[n]) for n, k in zip(names, pieces, strict=True)}
    return masks


def test_synflow_100_rounds_equal_the_plain_float64_loop(monkeypatch: pytest.MonkeyPatch) -> None:
    """Late rounds run the sparse layers (:class:`pruners.scores.SparseConv`): same masks."""
    built: list[float] = []  # density of each layer run sparse

    class Counting(scores_module.SparseConv):
        def __init__(self, *args: Any) -> None:
            super().__init__(*args)
            built.append(self.values.numel() / self.module.weight.numel())

    monkeypatch.setattr(scores_module, "SparseConv", Counting)
    torch.manual_seed(1)
    model = pruners.build_model("vgg11", SHAPE, 10, width=8).eval()
    got = pruners.prune(model, "synflow", 0.02, 100, input_shape=SHAPE)
    want = plain_synflow64(model, 0.02, 100)
    for n in want:
        assert torch.equal(got[n], want[n]), n
    assert len(built) > 50  # the sparse product ran, in many rounds and layers
    # Layers of few output positions (2x2 here) turn sparse earlier than the others.
    assert max(built) > scores_module.SPARSE_MAX_DENSITY_DEFAULT
    assert scores_module.sparse_max_density(4) > scores_module.sparse_max_density(None)


# Conv2d options that change how positions map to inputs (padding, stride, dilation, shape).
CONV_OPTIONS: list[dict[str, Any]] = [
    {"padding": 1},
    {"padding": 0, "stride": 2},
    {"padding": (2, 1), "dilation": 2},
    {"padding": 1, "bias": False, "kernel_size": (1, 3)},
]


@pytest.mark.parametrize("options", CONV_OPTIONS)
def test_sparse_conv_equals_the_dense_convolution(options: dict[str, Any]) -> None:
    """Output, input gradient and survivors' gradient of the sparse product vs ``conv2d``."""
    torch.manual_seed(0)
    options = {"kernel_size": 3, **options}
    module = nn.Conv2d(5, 7, **options).double()
    mask = torch.rand(module.weight.shape) < 0.3
    weight = (module.weight.detach().abs() * mask).requires_grad_()
    index = mask.flatten().nonzero().flatten()
    x = torch.rand(2, 5, 9, 8, dtype=torch.float64, requires_grad=True)
    m = module
    want = F.conv2d(x, weight, None, m.stride, m.padding, m.dilation)
    grad = torch.rand_like(want)
    want_x, want_w = torch.autograd.grad(want, [x, weight], grad)
    survivors = weight.detach().flatten()[index].requires_grad_()
    x2 = x.detach().clone().requires_grad_()
    got = scores_module.SparseConv(module, index, survivors)(x2)
    got_x, got_v = torch.autograd.grad(got, [x2, survivors], grad)
    torch.testing.assert_close(got, want, rtol=1e-13, atol=0)
    torch.testing.assert_close(got_x, want_x, rtol=1e-13, atol=0)
    torch.testing.assert_close(got_v, want_w.flatten()[index], rtol=1e-13, atol=0)


@pytest.mark.parametrize("options", CONV_OPTIONS)
@pytest.mark.parametrize("mm_positions", [0, 10**6], ids=["conv-kernels", "matrix-product"])
def test_dense_conv_equals_the_convolution_and_reuses_its_buffer(
    options: dict[str, Any], mm_positions: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Output, input gradient and weight gradient (into the kept buffer) vs ``conv2d``."""
    monkeypatch.setattr(scores_module, "DENSE_MM_MAX_POSITIONS", mm_positions)
    torch.manual_seed(0)
    options = {"kernel_size": 3, **options}
    module = nn.Conv2d(5, 7, **options).double()
    buffer = torch.empty_like(module.weight, dtype=torch.float64)
    m = module
    for trial in range(2):  # the second call overwrites the buffer with its own gradient
        weight = (module.weight.detach().abs() * (trial + 1)).requires_grad_()
        x = torch.rand(2, 5, 9, 8, dtype=torch.float64, requires_grad=True)
        want = F.conv2d(x, weight, None, m.stride, m.padding, m.dilation)
        grad = torch.rand_like(want)
        want_x, want_w = torch.autograd.grad(want, [x, weight], grad)
        x2 = x.detach().clone().requires_grad_()
        got = scores_module.DenseConv(module, weight, buffer)(x2)
        got_x, got_w = torch.autograd.grad(got, [x2, weight], grad)
        assert got_w.data_ptr() == buffer.data_ptr()
        torch.testing.assert_close(got, want, rtol=1e-13, atol=0)
        torch.testing.assert_close(got_x, want_x, rtol=1e-13, atol=0)
        torch.testing.assert_close(got_w, want_w, rtol=1e-13, atol=0)
    # An input that needs no gradient (the network's input) gets none; the weight's still comes.
    got_w = torch.autograd.grad(
        scores_module.DenseConv(module, weight, buffer)(x.detach()), weight, grad
    )[0]
    torch.testing.assert_close(got_w, want_w, rtol=1e-13, atol=0)
