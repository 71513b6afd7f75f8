"""Iterative pruning at initialization: schedules, exact top-k selection, sanity checks.

``prune`` scores the surviving weights, keeps exactly ``round(d_r · N)`` of them in round r of
n (globally or per layer), and repeats with the density ``d_r`` following an exponential
(``density^(r/n)``, as SynFlow) or linear schedule. Gebhart, Saxena, Schrater (2021) and
Tanaka et al. (2020); sanity checks after Frankle et al. (2021).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING

import torch
from torch import nn

from pruners.masks import Masks, ParameterRef, check_masks, ones_masks, prunable_parameters
from pruners.scores import (
    INPUTS,
    SCORERS,
    ScoreContext,
    Scores,
    SynFlowParams,
    SynFlowRounds,
    synflow_scores,
)

if TYPE_CHECKING:
    from pruners.data import PruneSample

SCHEDULES = ("exponential", "linear")
SCOPES = ("global", "layer")
# Above this many candidates, select through a sampled band before the exact kthvalue.
_BAND_SELECT_MIN = 1 << 18


def schedule_densities(density: float, iterations: int, schedule: str) -> list[float]:
    """Density after each of ``iterations`` rounds, ending exactly at ``density``."""
    check_density(density)
    if iterations < 1:
        raise ValueError(f"iterations >= 1 must hold, but got {iterations=}")
    if schedule not in SCHEDULES:
        raise ValueError(f"schedule must be one of {list(SCHEDULES)}, but got {schedule!r}")
    rounds = range(1, iterations + 1)
    if schedule == "exponential":
        return [density ** (r / iterations) for r in rounds]
    # Written so that the last round is exactly ``density`` (1 − (1 − d) is not d in floats,
    # and round(d · N) would then keep one weight too many at a .5 boundary).
    return [density + (1.0 - density) * (iterations - r) / iterations for r in rounds]


def check_density(density: float) -> None:
    """Raise unless ``0 < density <= 1``."""
    if not (isinstance(density, (int, float)) and 0 < density <= 1):
        raise ValueError(f"0 < density <= 1 must hold, but got {density=}")


def keep_top(values: torch.Tensor, k: int) -> torch.Tensor:
    """Bool mask keeping exactly the ``k`` largest of a 1-D tensor; ties go to lower indices.

    Deterministic and exact (not a ``>=`` threshold, which keeps every tied value).
    """
    return keep_top_many([values], k)[0]


def keep_top_many(values: list[torch.Tensor], k: int) -> list[torch.Tensor]:
    """:func:`keep_top` over several 1-D tensors taken as one, without concatenating them.

    Ties go to lower indices in the order of ``values`` (then within each tensor).
    """
    n = sum(v.numel() for v in values)
    if k >= n or k <= 0:
        return [torch.full_like(v, k > 0, dtype=torch.bool) for v in values]
    if any(_has_nan(v) for v in values):
        raise FloatingPointError("scores contain NaN; cannot rank weights")
    threshold = _kth_largest(values, k)
    keep = [v > threshold for v in values]
    need = k - sum(int(torch.count_nonzero(kp)) for kp in keep)  # faster than a bool sum
    for v, kp in zip(values, keep, strict=True):
        if need <= 0:
            break
        tied = torch.nonzero(v == threshold).flatten()[:need]
        kp[tied] = True
        need -= tied.numel()
    return keep


def _has_nan(values: torch.Tensor) -> bool:
    """Whether a tensor holds a NaN: a NaN makes the sum NaN (one reduction pass), and only
    then (or for ``inf - inf``) is each element checked."""
    return bool(torch.isnan(values.sum())) and bool(torch.isnan(values).any())


def _kth_largest(values: list[torch.Tensor], k: int) -> torch.Tensor:
    """The k-th largest value, exactly; a sampled band avoids a full selection when large.

    A strided sample of ~65k values brackets the k-th largest between two sample order
    statistics 4 binomial standard deviations apart; only the values inside that band are
    selected exactly. Where the sample misleads, the full selection runs instead.
    """
    n = sum(v.numel() for v in values)
    bounds = _sample_ranks(values, 1.0 - k / n)  # the threshold's quantile
    if bounds is not None:
        sample, lo_rank, hi_rank = bounds
        hi = torch.kthvalue(sample, hi_rank).values
        lo = torch.kthvalue(sample, lo_rank).values
        over = [v > hi for v in values]
        above = sum(int(torch.count_nonzero(o)) for o in over)
        if above < k:
            # v > hi implies v >= lo, so the xor is lo <= v <= hi (NaN in neither).
            pairs = zip(values, over, strict=True)
            band = torch.cat([v[(v >= lo).logical_xor_(o)] for v, o in pairs])
            if above + band.numel() >= k:
                return torch.kthvalue(band, band.numel() - (k - above) + 1).values
    flat = torch.cat(values)
    return torch.kthvalue(flat, n - k + 1).values


def _sample_ranks(values: list[torch.Tensor], q: float) -> tuple[torch.Tensor, int, int] | None:
    """A strided sample of ~65k of the values and the ranks in it (1-based) 4 binomial
    standard deviations below and above quantile ``q``: the sample's order statistics at
    those ranks bracket the values' ``q``-quantile unless the sample misleads. None where the
    values are too few (or not floating point) for sampling to pay.
    """
    n = sum(v.numel() for v in values)
    if n < _BAND_SELECT_MIN or not all(v.is_floating_point() for v in values):
        return None
    step = max(1, n // 65_536)
    sample = torch.cat([v[::step] for v in values])
    s = sample.numel()
    width = 4.0 * math.sqrt(q * (1.0 - q) / s) + 2.0 / s
    lo_rank = min(s, max(1, math.floor((q - width) * s)))
    hi_rank = min(s, max(1, math.ceil((q + width) * s)))
    return sample, lo_rank, hi_rank


def drop_lowest_many(values: list[torch.Tensor], m: int) -> list[torch.Tensor]:
    """Positions of the ``m`` lowest of several 1-D tensors taken as one: what
    :func:`keep_top_many` with ``k = n - m`` leaves out, exactly (ties at the boundary drop
    the highest positions first, in the order of ``values``, then within each tensor).

    Cheaper than :func:`keep_top_many` when ``m`` is small next to ``n`` (an iterative pruning
    round): only the values at or below a sampled bound are gathered and ranked.

    Returns:
        Sorted int64 positions into each tensor.

    Raises:
        FloatingPointError: a NaN among the values (when ``0 < m < n``).
    """
    n = sum(v.numel() for v in values)
    if m <= 0:
        return [torch.empty(0, dtype=torch.long, device=v.device) for v in values]
    if m >= n:
        return [torch.arange(v.numel(), device=v.device) for v in values]
    if any(_has_nan(v) for v in values):
        raise FloatingPointError("scores contain NaN; cannot rank weights")
    positions, candidates = _lowest_candidates(values, m + 1)
    # The (m+1)-th smallest is the lowest survivor's value: below it all go, at it the last.
    threshold = torch.kthvalue(torch.cat(candidates), m + 1).values
    drop = [c < threshold for c in candidates]
    need = m - sum(int(torch.count_nonzero(d)) for d in drop)
    for c, d in zip(reversed(candidates), reversed(drop), strict=True):
        if need <= 0:
            break
        tied = torch.nonzero(c == threshold).flatten()
        tied = tied[max(0, tied.numel() - need) :]
        d[tied] = True
        need -= tied.numel()
    return [p[d] for p, d in zip(positions, drop, strict=True)]


def _lowest_candidates(
    values: list[torch.Tensor], r: int
) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
    """(positions, values) of a subset of each tensor holding every value at or below the
    r-th smallest: those at or below a bound read off a strided sample (as in
    :func:`_kth_largest`), or all of them where the tensors are small or the sample misleads.
    """
    bounds = _sample_ranks(values, r / sum(v.numel() for v in values))
    if bounds is not None:
        sample, _, hi_rank = bounds
        if hi_rank < sample.numel():  # else the bound is the sample's maximum: no saving
            hi = torch.kthvalue(sample, hi_rank).values
            positions = [torch.nonzero(v <= hi).flatten() for v in values]
            if sum(p.numel() for p in positions) >= r:  # else the r-th smallest is above hi
                return positions, [v[p] for v, p in zip(values, positions, strict=True)]
    return [torch.arange(v.numel(), device=v.device) for v in values], values


def select(
    scores: Mapping[str, torch.Tensor],
    masks: Mapping[str, torch.Tensor],
    density: float,
    scope: str,
    *,
    total: Mapping[str, int] | None = None,
) -> Masks:
    """Keep the highest-scoring surviving weights so that ``round(density · N)`` survive.

    Args:
        scores: larger keeps, one tensor per masked parameter.
        masks: current masks; pruned weights are never revived.
        density: fraction of all weights (per layer for ``scope="layer"``) to keep.
        scope: ``"global"`` ranks all weights together, ``"layer"`` each layer alone.
        total: number of weights per name (defaults to each mask's size).
    """
    if scope not in SCOPES:
        raise ValueError(f"scope must be one of {list(SCOPES)}, but got {scope!r}")
    names = list(masks)
    sizes = {n: (total or {}).get(n, masks[n].numel()) for n in names}
    if scope == "layer":
        return {
            n: _select_group([scores[n]], [masks[n]], round(density * sizes[n]))[0] for n in names
        }
    k = round(density * sum(sizes.values()))
    kept = _select_group([scores[n] for n in names], [masks[n] for n in names], k)
    return dict(zip(names, kept, strict=True))


def _select_group(
    scores: list[torch.Tensor], masks: list[torch.Tensor], k: int
) -> list[torch.Tensor]:
    # Only survivors are ranked (pruned weights are never revived): their scores are gathered
    # in flat order, so ties still go to lower indices.
    alive = [m.flatten().nonzero().flatten() for m in masks]
    compact = [s.detach().flatten()[i] for s, i in zip(scores, alive, strict=True)]
    kept = _keep_alive(compact, k)
    out = []
    for m, i, kp in zip(masks, alive, kept, strict=True):
        mask = torch.zeros(m.numel(), dtype=torch.bool, device=m.device)
        mask[i[kp]] = True
        out.append(mask.view_as(m))
    return out


def _keep_alive(compact: list[torch.Tensor], k: int) -> list[torch.Tensor]:
    """Which survivors (their scores given in flat order) stay so that ``min(k, alive)`` do."""
    dtype = compact[0].dtype
    alive = sum(c.numel() for c in compact)
    return keep_top_many([c.to(dtype) for c in compact], min(k, alive))


def _context(
    model: nn.Module,
    method: str,
    names: list[str],
    input_shape: tuple[int, ...],
    sample: PruneSample | None,
    path_exponent: float | None,
    score_exponent: float | None,
    input: str | None,
    seed: int,
    dtype: torch.dtype | None,
) -> ScoreContext:
    if method not in SCORERS:
        raise ValueError(f"unknown pruner {method!r}; valid: {sorted(SCORERS)}")
    scorer = SCORERS[method]
    knobs = scorer.synflow
    overrides = (path_exponent, score_exponent, input)
    if knobs is None and any(v is not None for v in overrides):
        raise ValueError(
            f"path_exponent, score_exponent and input apply to the SynFlow family only, "
            f"not to {method!r}"
        )
    if input is not None and input not in INPUTS:
        raise ValueError(f"input must be one of {list(INPUTS)}, but got {input!r}")
    if knobs is not None:
        knobs = SynFlowParams(
            knobs.path_exponent if path_exponent is None else float(path_exponent),
            knobs.score_exponent if score_exponent is None else float(score_exponent),
            knobs.input if input is None else input,
        )
    if scorer.needs_sample and sample is None:
        raise ValueError(f"pruner {method!r} needs a labelled prune sample: pass sample=...")
    return ScoreContext(
        model=model,
        method=method,
        names=names,
        input_shape=tuple(input_shape),
        sample=sample,
        synflow=knobs or SynFlowParams(),
        seed=seed,
        dtype=dtype,
    )


def _check_input_shape(model: nn.Module, input_shape: tuple[int, ...]) -> None:
    valid = isinstance(input_shape, (tuple, list)) and all(
        isinstance(d, int) and d > 0 for d in input_shape
    )
    if not valid:
        raise ValueError(f"input_shape must be a tuple of positive ints, but got {input_shape!r}")
    param = next(model.parameters())
    try:
        with torch.no_grad():
            was_training = model.training
            model.eval()
            try:
                model(torch.zeros((1, *input_shape), dtype=param.dtype, device=param.device))
            finally:
                model.train(was_training)
    except Exception as err:
        raise ValueError(f"the model cannot take input_shape={tuple(input_shape)}: {err}") from err


def prune(
    model: nn.Module,
    method: str,
    density: float,
    iterations: int = 1,
    schedule: str = "exponential",
    scope: str = "global",
    *,
    input_shape: tuple[int, ...],
    sample: PruneSample | None = None,
    path_exponent: float | None = None,
    score_exponent: float | None = None,
    input: str | None = None,
    dense_classifier: bool = False,
    include_bias: bool = False,
    include_norm: bool = False,
    invert: bool = False,
    seed: int = 0,
    dtype: torch.dtype | None = None,
    parameters: Iterable[ParameterRef] | None = None,
) -> Masks:
    """Prune ``model`` at initialization and return its masks; the model is not changed.

    Args:
        model: any module of Linear/Conv/BatchNorm/ReLU/pooling/residual adds.
        method: a name in :data:`pruners.SCORERS` (``synflow``, ``synflow-l2``, ...).
        density: fraction of prunable weights kept, ``0 < density <= 1``.
        iterations: number of score-and-prune rounds (SynFlow uses 100).
        schedule: ``"exponential"`` (``density^(r/n)``) or ``"linear"``.
        scope: ``"global"`` or ``"layer"`` (every layer keeps ``density``).
        input_shape: shape of one input, without the batch dimension.
        sample: labelled prune sample (SNIP, GraSP, ``input="data-mean"``).
        path_exponent: SynFlow-family p (overrides the preset).
        score_exponent: SynFlow-family a (overrides the preset).
        input: SynFlow-family input, ``"ones"`` or ``"data-mean"`` (overrides the preset).
        dense_classifier: never prune the layers that feed the output (found in the traced
            graph, wherever they are registered).
        include_bias: biases are prunable too.
        include_norm: BatchNorm scales are prunable too.
        invert: keep the *lowest* scores (the inversion sanity check of Frankle et al. 2021).
        seed: seed of the random scorer.
        dtype: dtype of path-based scores (default float64, whose rankings equal the exact
            ones; float32 is faster, about 1.5x for 100 SynFlow rounds on VGG-16 on CPU, but
            flips near-ties).
        parameters: explicit (module, parameter name) pairs to prune, as
            ``torch.nn.utils.prune.global_unstructured`` takes them (default: every weight of
            Linear/Conv/MultiheadAttention, see :func:`pruners.masks.default_parameters`).

    Returns:
        Masks keyed by parameter name (bool, True = kept), exactly ``round(density · N)``
        kept over the N prunable weights (per layer with ``scope="layer"``).

    Raises:
        ValueError: unknown names, density outside (0, 1], iterations < 1, an input shape the
            model cannot take.

    Reference: Gebhart, Saxena, Schrater (2021), *A Unified Paths Perspective for Pruning at
    Initialization*; Tanaka et al. (2020) for the iterative exponential schedule.
    """
    densities = schedule_densities(density, iterations, schedule)
    if scope not in SCOPES:
        raise ValueError(f"scope must be one of {list(SCOPES)}, but got {scope!r}")
    params = prunable_parameters(
        model,
        include_bias=include_bias,
        include_norm=include_norm,
        dense_classifier=dense_classifier,
        parameters=parameters,
    )
    if not params:
        raise ValueError("the model has no prunable parameters (Linear/Conv weights)")
    ctx = _context(
        model, method, list(params), input_shape, sample,
        path_exponent, score_exponent, input, seed, dtype,
    )  # fmt: skip
    _check_input_shape(model, tuple(input_shape))
    return _prune_rounds(ctx, params, densities, scope, invert)


def _prune_rounds(
    ctx: ScoreContext,
    params: Mapping[str, torch.Tensor],
    densities: list[float],
    scope: str,
    invert: bool,
) -> Masks:
    """The rounds of :func:`prune`: score, then :func:`select`, keeping only survivors' state.

    The same as ``masks = select(score_with(ctx, masks), masks, d, scope)`` every round (the
    tests pin this), but survivors are tracked as flat indices: scores are gathered over
    survivors only, each round finds just the survivors to drop (:func:`drop_lowest_many`),
    masks change in place, and the SynFlow family keeps one set of path
    values updated in place (:class:`~pruners.scores.SynFlowRounds`, whose sparse layers
    sum in another order: equal up to float64 rounding).
    """
    names = list(params)
    masks = ones_masks(params)
    alive: dict[str, torch.Tensor | None] = dict.fromkeys(names)  # None: nothing pruned yet
    rounds = SynFlowRounds(ctx) if SCORERS[ctx.method].fn is synflow_scores else None
    for d in densities:
        if rounds is not None:
            compact = rounds.scores_at(alive)
        else:
            scores = score_with(ctx, masks)
            compact = {n: _gather(scores[n].detach(), alive[n]) for n in names}
        if invert:
            compact = {n: -c for n, c in compact.items()}
        groups = [names] if scope == "global" else [[n] for n in names]
        for group in groups:
            size = sum(masks[n].numel() for n in group)
            alive_count = sum(compact[n].numel() for n in group)
            keep = min(max(round(d * size), 0), alive_count)
            dtype = compact[group[0]].dtype
            drops = drop_lowest_many([compact[n].to(dtype) for n in group], alive_count - keep)
            for n, drop in zip(group, drops, strict=True):
                if drop.numel() == 0:
                    continue
                index = alive[n]
                dropped = drop if index is None else index.index_select(0, drop)
                masks[n].view(-1).index_fill_(0, dropped, False)
                if rounds is not None:
                    rounds.remove(n, dropped)
                stay = torch.ones(compact[n].numel(), dtype=torch.bool, device=drop.device)
                stay.index_fill_(0, drop, False)
                if index is None:
                    index = torch.arange(stay.numel(), device=stay.device)
                alive[n] = index.masked_select(stay)  # faster than index[stay] or nonzero
    return masks


def _gather(values: torch.Tensor, index: torch.Tensor | None) -> torch.Tensor:
    flat = values.reshape(-1)
    return flat if index is None else flat.index_select(0, index)


def score_with(ctx: ScoreContext, masks: Mapping[str, torch.Tensor]) -> Scores:
    """Run the context's scorer once on the masked model (no selection)."""
    return SCORERS[ctx.method].fn(ctx, masks)


def score(
    model: nn.Module,
    method: str,
    *,
    input_shape: tuple[int, ...],
    masks: Mapping[str, torch.Tensor] | None = None,
    sample: PruneSample | None = None,
    path_exponent: float | None = None,
    score_exponent: float | None = None,
    input: str | None = None,
    include_bias: bool = False,
    include_norm: bool = False,
    seed: int = 0,
    dtype: torch.dtype | None = None,
    parameters: Iterable[ParameterRef] | None = None,
) -> Scores:
    """Scores of every prunable weight of the (masked) model; larger scores are kept.

    SynFlow-family and ``pk-preserve`` scores are computed in a rescaled path network
    (:mod:`pruners.paths`): they equal the exact scores times one common positive factor, so
    ratios and rankings are exact while magnitudes never overflow. See :func:`prune` for the
    arguments. Gebhart, Saxena, Schrater (2021).
    """
    params = prunable_parameters(
        model, include_bias=include_bias, include_norm=include_norm, parameters=parameters
    )
    ctx = _context(
        model, method, list(params), input_shape, sample,
        path_exponent, score_exponent, input, seed, dtype,
    )  # fmt: skip
    _check_input_shape(model, tuple(input_shape))
    given = masks or {}
    check_masks(model, given)  # a misspelt name or wrong shape must not be silently ignored
    current = {
        n: given[n] if n in given else torch.ones_like(p, dtype=torch.bool)
        for n, p in params.items()
    }
    return {n: s.detach() for n, s in score_with(ctx, current).items()}
