"""Optuna samplers by name, seeded, with their options checked before anything runs."""

from __future__ import annotations

import importlib.util
import inspect
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import optuna

from orchestrator.errors import SpecError, brief


@dataclass(frozen=True)
class SamplerInfo:
    """How to build one sampler and what it supports."""

    cls_name: str
    multi_objective: bool = True
    needs_module: str | None = None


#: The sampler names a spec may use (``sampler: tpe`` or ``sampler: {name: tpe, ...}``).
SAMPLERS: dict[str, SamplerInfo] = {
    "tpe": SamplerInfo("TPESampler"),
    "nsga2": SamplerInfo("NSGAIISampler"),
    "random": SamplerInfo("RandomSampler"),
    "grid": SamplerInfo("GridSampler"),
    "cmaes": SamplerInfo("CmaEsSampler", multi_objective=False, needs_module="cmaes"),
    "gp": SamplerInfo("GPSampler"),
}

_OPTION_TYPES = (bool, int, float, str, type(None))
_NOT_OPTIONS = {"self", "seed", "search_space"}


def sampler_options(name: str) -> list[str]:
    """Scalar keyword options of sampler ``name`` that a spec may set."""
    cls = getattr(optuna.samplers, SAMPLERS[name].cls_name)
    params = inspect.signature(cls).parameters.values()
    return sorted(p.name for p in params if p.name not in _NOT_OPTIONS and _scalar_default(p))


def _scalar_default(param: inspect.Parameter) -> bool:
    return param.default is not inspect.Parameter.empty and isinstance(param.default, _OPTION_TYPES)


def check_sampler(name: str, options: Mapping[str, Any], n_objectives: int, path: str) -> None:
    """Check a sampler name and options against what Optuna offers here.

    Raises:
        SpecError: unknown name or option, a non-scalar option, a missing optional module, or
            a single-objective sampler with several objectives.
    """
    if name not in SAMPLERS:
        raise SpecError(f"{path}: unknown sampler {name!r}; valid: {sorted(SAMPLERS)}")
    info = SAMPLERS[name]
    if info.needs_module and importlib.util.find_spec(info.needs_module) is None:
        raise SpecError(
            f"{path}: sampler {name!r} needs the {info.needs_module!r} package "
            f"(pip install {info.needs_module})"
        )
    if n_objectives > 1 and not info.multi_objective:
        raise SpecError(f"{path}: sampler {name!r} supports one objective, but got {n_objectives}")
    valid = sampler_options(name)
    for key, value in options.items():
        if key not in valid:
            raise SpecError(f"{path}: unknown option {key!r} for sampler {name!r}; valid: {valid}")
        if not isinstance(value, _OPTION_TYPES):
            raise SpecError(f"{path}.{key} must be a scalar, but got {brief(value)}")


class AskTellGridSampler(optuna.samplers.GridSampler):
    """Optuna's grid sampler for a study driven by ask/tell.

    ``GridSampler.after_trial`` calls ``study.stop()`` once the grid is exhausted, which works
    only inside ``study.optimize`` and raises in the ``tell`` of the last grid point under
    ask/tell. The driver stops by the spec's trial count, so nothing is lost by not stopping.
    """

    def after_trial(self, *args: Any, **kwargs: Any) -> None:
        return None


def make_sampler(
    name: str, options: Mapping[str, Any], seed: int, grid: Mapping[str, list[Any]] | None = None
) -> optuna.samplers.BaseSampler:
    """A seeded Optuna sampler; ``grid`` is the search space of the grid sampler."""
    cls = getattr(optuna.samplers, SAMPLERS[name].cls_name)
    if name == "grid":
        return AskTellGridSampler(dict(grid or {}), seed=seed, **options)
    return cls(seed=seed, **options)  # type: ignore[no-any-return]
