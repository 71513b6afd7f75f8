"""The search space: the one place that maps the spec's parameters to Optuna distributions.

Every hyperparameter the ``pruners`` package exposes for the SynFlow family of Gebhart, Saxena,
Schrater (2021), "A Unified Paths Perspective for Pruning at Initialization", can be a study
dimension: the path exponent p, the score exponent a, the number of pruning rounds n, the
density schedule and scope, the input u, the pruner itself and the density. Each one is a
range (``{low, high, log, step}``), a list of choices, or a fixed value.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from optuna.distributions import (
    BaseDistribution,
    CategoricalDistribution,
    FloatDistribution,
    IntDistribution,
)

from orchestrator.errors import SpecError

Scalar = bool | int | float | str


@dataclass(frozen=True)
class FloatRange:
    """A real interval ``[low, high]``, optionally log-scaled or on a ``step`` grid."""

    low: float
    high: float
    log: bool = False
    step: float | None = None


@dataclass(frozen=True)
class IntRange:
    """An integer interval ``[low, high]``, optionally log-scaled or on a ``step`` grid."""

    low: int
    high: int
    log: bool = False
    step: int = 1


@dataclass(frozen=True)
class Choice:
    """A categorical dimension over ``choices``."""

    choices: tuple[Scalar, ...]


@dataclass(frozen=True)
class Fixed:
    """A constant: not searched, recorded in every row."""

    value: Scalar


Param = FloatRange | IntRange | Choice | Fixed


@dataclass(frozen=True)
class ParamRule:
    """What one search parameter accepts.

    Attributes:
        kind: ``"float"``, ``"int"`` or ``"str"``.
        rule: the rule on a single value, as text (e.g. ``"> 0"``).
        ok: the rule as a predicate.
        names: valid names for ``"str"`` parameters (read lazily from ``pruners``).
    """

    kind: str
    rule: str = ""
    ok: Callable[[float], bool] = lambda v: True
    names: Callable[[], Sequence[str]] | None = None


def _pruners_names(attr: str) -> Callable[[], Sequence[str]]:
    def names() -> Sequence[str]:
        import pruners

        return tuple(getattr(pruners, attr))

    return names


#: The searchable hyperparameters of ``pruners.prune`` and their rules.
PARAMS: dict[str, ParamRule] = {
    "pruner": ParamRule("str", names=_pruners_names("SCORERS")),
    "path_exponent": ParamRule("float", "> 0", lambda v: v > 0),
    "score_exponent": ParamRule("float", ">= 0", lambda v: v >= 0),
    "iterations": ParamRule("int", ">= 1", lambda v: v >= 1),
    "schedule": ParamRule("str", names=_pruners_names("SCHEDULES")),
    "scope": ParamRule("str", names=_pruners_names("SCOPES")),
    "input": ParamRule("str", names=_pruners_names("INPUTS")),
    "density": ParamRule("float", "in (0, 1]", lambda v: 0 < v <= 1),
}

_RANGE_KEYS = ("low", "high", "log", "step")


def parse_param(name: str, raw: object, path: str) -> Param:
    """Parse one search entry: a range mapping, a list of choices, or a fixed value.

    Raises:
        SpecError: unknown parameter, wrong type, a value breaking the parameter's rule,
            ``low > high``, or a log range with ``low <= 0`` or a step.
    """
    if name not in PARAMS:
        raise SpecError(f"{path}: unknown search parameter {name!r}; valid: {sorted(PARAMS)}")
    if isinstance(raw, Mapping):
        return _parse_range(name, raw, path)
    if isinstance(raw, list):
        if not raw:
            raise SpecError(f"{path}: a list of choices must not be empty")
        values = tuple(_value(name, v, f"{path}[{i}]") for i, v in enumerate(raw))
        if len(set(values)) != len(values):
            raise SpecError(f"{path}: choices must be distinct, but got {list(values)}")
        return Choice(values)
    return Fixed(_value(name, raw, path))


def _value(name: str, raw: object, path: str) -> Scalar:
    rule = PARAMS[name]
    if rule.kind == "str":
        valid = sorted(rule.names()) if rule.names else []
        if not isinstance(raw, str) or raw not in valid:
            raise SpecError(f"{path} must be one of {valid}, but got {raw!r}")
        return raw
    value = _number(raw, path, integer=rule.kind == "int")
    if not rule.ok(value):
        raise SpecError(f"{path} {rule.rule} must hold, but got {path}={raw!r}")
    return value


def _number(raw: object, path: str, *, integer: bool) -> int | float:
    if isinstance(raw, bool) or not isinstance(raw, int | float):
        kind = "an integer" if integer else "a number"
        raise SpecError(f"{path} must be {kind}, but got {type(raw).__name__} {raw!r}")
    if integer and not isinstance(raw, int):
        raise SpecError(f"{path} must be an integer, but got {raw!r}")
    if not math.isfinite(raw):
        raise SpecError(f"{path} must be finite, but got {raw!r}")
    return raw if integer else float(raw)


def _parse_range(name: str, raw: Mapping[str, Any], path: str) -> Param:
    rule = PARAMS[name]
    if rule.kind == "str":
        raise SpecError(f"{path}: {name} is categorical: give a list of choices or one value")
    unknown = sorted(set(map(str, raw)) - set(_RANGE_KEYS))
    if unknown:
        raise SpecError(f"{path}: unknown field {unknown[0]!r}; valid: {list(_RANGE_KEYS)}")
    for key in ("low", "high"):
        if key not in raw:
            raise SpecError(f"{path}.{key} is required")
    low = _value(name, raw["low"], f"{path}.low")
    high = _value(name, raw["high"], f"{path}.high")
    log = raw.get("log", False)
    if not isinstance(log, bool):
        raise SpecError(f"{path}.log must be true or false, but got {log!r}")
    if low > high:  # type: ignore[operator]
        raise SpecError(f"{path}: low <= high must hold, but got low={low!r}, high={high!r}")
    step = raw.get("step")
    if step is not None:
        step = _number(step, f"{path}.step", integer=rule.kind == "int")
        if step <= 0:
            raise SpecError(f"{path}.step > 0 must hold, but got step={step!r}")
        if log:
            raise SpecError(f"{path}: log and step cannot be combined")
    if log and low <= 0:  # type: ignore[operator]
        raise SpecError(f"{path}: a log range needs low > 0, but got low={low!r}")
    if rule.kind == "int":
        return IntRange(int(low), int(high), log, int(step or 1))
    return FloatRange(float(low), float(high), log, None if step is None else float(step))


def to_distribution(param: Param) -> BaseDistribution | None:
    """The Optuna distribution of a search dimension (None for a fixed value)."""
    if isinstance(param, FloatRange):
        return FloatDistribution(param.low, param.high, log=param.log, step=param.step)
    if isinstance(param, IntRange):
        return IntDistribution(param.low, param.high, log=param.log, step=param.step)
    if isinstance(param, Choice):
        return CategoricalDistribution(param.choices)
    return None


def grid_values(name: str, param: Param, path: str) -> list[Scalar]:
    """The finite list of values of a dimension, for Optuna's GridSampler.

    Raises:
        SpecError: a real range without ``step`` (a grid needs finitely many values).
    """
    if isinstance(param, Choice):
        return list(param.choices)
    if isinstance(param, Fixed):
        return [param.value]
    if isinstance(param, IntRange):
        if param.log:
            raise SpecError(f"{path}: the grid sampler cannot use a log range; give a list")
        return list(range(param.low, param.high + 1, param.step))
    if param.step is None:
        raise SpecError(
            f"{path}: the grid sampler needs a list or a step for {name}, but got a continuous range"
        )
    count = math.floor((param.high - param.low) / param.step + 1e-9) + 1
    return [round(param.low + i * param.step, 12) for i in range(count)]
