"""One trial as a plain function: ``run_trial(config) -> TrialResult``, testable without Ray.

A trial builds the model with the study's seed (every trial starts from the same weights, so
configurations differ only in how they prune), prunes it with one member of the SynFlow family
(or another scorer), measures the Path Kernel statistics of the pruned network at
initialization (Gebhart, Saxena, Schrater 2021, "A Unified Paths Perspective for Pruning at
Initialization") and, when asked, trains it. Datasets are cached per process, so a long-lived
worker loads its dataset once.
"""

from __future__ import annotations

import functools
import hashlib
import json
import math
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from orchestrator.spec import (
    STAT_METRICS,
    DataSpec,
    ModelSpec,
    PruneSpec,
    SpectrumSpec,
    StudySpec,
)

#: Values of the pruning knobs a spec leaves out (``pruners.prune``'s defaults).
DEFAULTS: dict[str, Any] = {
    "pruner": "synflow",
    "iterations": 1,
    "schedule": "exponential",
    "scope": "global",
}
SYNFLOW_KNOBS = ("path_exponent", "score_exponent", "input")


@dataclass(frozen=True)
class TrialConfig:
    """Everything one trial needs; picklable, so it travels to a Ray worker.

    Attributes:
        study: study name.
        number: Optuna trial number (the source trial's number for validation runs).
        attempt: 0 for the first try, then 1, 2, ... for retries.
        phase: ``"search"``, ``"validate-top"`` or ``"validate-random"``.
        params: the resolved pruning parameters (see :func:`resolve_params`).
        model, data, prune: from the spec.
        train_epochs: 0 = no training.
        train_options: further ``pruners.TrainConfig`` fields.
        seed: seeds the model's initialization, the prune sample and the training.
        device: ``"auto"``, ``"cpu"``, ``"cuda"``; workers pass the device they hold.
        keep_masks: return the masks in :attr:`TrialResult.masks` (spec ``save_masks: true``).
        masks_file: load the masks from this file (written by ``pruners.save_masks``) instead
            of pruning; used to retrain or export a study's trial.
        spectrum: measure the Path Kernel's spectrum too (None: not).
    """

    study: str
    number: int
    attempt: int
    phase: str
    params: Mapping[str, Any]
    model: ModelSpec
    data: DataSpec
    prune: PruneSpec = field(default_factory=PruneSpec)
    train_epochs: int = 0
    train_options: Mapping[str, Any] = field(default_factory=dict)
    seed: int = 0
    device: str = "auto"
    keep_masks: bool = False
    masks_file: str | None = None
    spectrum: SpectrumSpec | None = None

    def masks_key(self) -> str:
        """Content hash of everything that determines this trial's masks (16 hex digits).

        The model, the dataset (name, seed and options; not where it is stored), the
        ``prune`` options, the pruning parameters and the seed: attempts, retries and
        validation runs of one configuration share the key, different configurations never do.
        """
        content = {
            "model": {"name": self.model.name, "options": dict(self.model.options)},
            "data": {"name": self.data.name, "options": dict(self.data.options)},
            "prune": {
                "dense_classifier": self.prune.dense_classifier,
                "include_bias": self.prune.include_bias,
                "include_norm": self.prune.include_norm,
                "sample_per_class": self.prune.sample_per_class,
            },
            "params": dict(self.params),
            "seed": self.seed,
        }
        text = json.dumps(content, sort_keys=True, separators=(",", ":"), default=str)
        return hashlib.sha256(text.encode("utf-8")).hexdigest()[:16]


@dataclass(frozen=True)
class TrialResult:
    """What a trial measured.

    Attributes:
        params: the parameters the trial ran with.
        metrics: statistic and training columns (scalars, per-layer maps as JSON text, curves
            as lists).
        timings: seconds spent loading data, building, pruning, measuring and training.
        device: the device the trial ran on.
        masks: the trial's masks (CPU bool tensors) when the config asked to keep them.
        masks_key: :meth:`TrialConfig.masks_key` of the trial, with ``masks``.
    """

    params: Mapping[str, Any]
    metrics: Mapping[str, Any]
    timings: Mapping[str, float] = field(default_factory=dict)
    device: str = "cpu"
    masks: Mapping[str, Any] | None = None
    masks_key: str | None = None


TrialFn = Callable[[TrialConfig], TrialResult]


def resolve_params(sampled: Mapping[str, Any], fixed: Mapping[str, Any]) -> dict[str, Any]:
    """The full pruning configuration of a trial: sampled, fixed, then default values.

    The SynFlow knobs take the preset's values when left out (``synflow-l2`` has p = 2), and
    are None for scorers outside the family, which ignore them.
    """
    import pruners

    params = {**DEFAULTS, **fixed, **sampled}
    preset = getattr(pruners.SCORERS[params["pruner"]], "synflow", None)
    for knob in SYNFLOW_KNOBS:
        if preset is None:
            params[knob] = None
        elif params.get(knob) is None:
            params[knob] = getattr(preset, knob)
    return params


def make_config(
    spec: StudySpec,
    number: int,
    attempt: int,
    params: Mapping[str, Any],
    *,
    phase: str = "search",
    train_epochs: int | None = None,
    masks_file: str | None = None,
    seed: int | None = None,
) -> TrialConfig:
    """The :class:`TrialConfig` of one attempt of a study's trial (``seed``: a validation seed
    in place of the study's)."""
    return TrialConfig(
        study=spec.study,
        number=number,
        attempt=attempt,
        phase=phase,
        params=dict(params),
        model=spec.model,
        data=spec.data,
        prune=spec.prune,
        train_epochs=spec.train.epochs if train_epochs is None else train_epochs,
        train_options=dict(spec.train.options),
        seed=spec.seed if seed is None else seed,
        device=spec.device,
        keep_masks=spec.save_masks,
        masks_file=masks_file,
        spectrum=spec.spectrum,
    )


def _freeze(value: Any) -> Any:
    if isinstance(value, list | tuple):
        return tuple(_freeze(v) for v in value)
    return value


@functools.lru_cache(maxsize=4)
def _cached_dataset(name: str, root: str | None, download: bool, seed: int, options: Any) -> Any:
    import pruners

    return pruners.load_dataset(name, root=root, download=download, seed=seed, **dict(options))


def load_data(data: DataSpec, seed: int) -> Any:
    """The study's dataset, loaded once per process and reused by every later trial."""
    options = tuple(sorted((k, _freeze(v)) for k, v in data.options.items()))
    return _cached_dataset(data.name, data.root, data.download, seed, options)


@functools.lru_cache(maxsize=4)
def _cached_sample(dataset: Any, per_class: int, seed: int) -> Any:
    import pruners

    return pruners.prune_sample(dataset, per_class=per_class, seed=seed)


def run_trial(config: TrialConfig) -> TrialResult:
    """Prune, measure and (optionally) train one configuration.

    Steps: load the dataset (cached), seed and build the model, prune it with
    ``pruners.prune``, measure ``pruners.path_kernel_stats`` of the pruned network at
    initialization (the data-free objectives of Gebhart, Saxena, Schrater 2021), and train it
    for ``config.train_epochs`` epochs when that is positive. With ``config.masks_file`` the
    masks are loaded from that file instead of pruning. ``pathsweep prune`` runs this same
    function.

    Raises:
        ValueError: bad training options or device, before any work is done.
        Exception: whatever pruning, statistics or training raise (the driver records it as
            a FAIL row with the error text).
    """
    import pruners
    from pruners.training import resolve_device

    timings: dict[str, float] = {}
    device = str(resolve_device(config.device))
    train_config = pruners.TrainConfig(
        epochs=config.train_epochs, seed=config.seed, device=device, **config.train_options
    )
    start = time.perf_counter()
    dataset = load_data(config.data, config.seed)
    sample = _cached_sample(dataset, config.prune.sample_per_class, config.seed)
    timings["time_data_s"] = _lap(start)
    model = _build(config, dataset, device)
    timings["time_model_s"] = _lap(start, timings)
    if config.masks_file is None:
        masks = _prune(config, model, dataset, sample, device)
    else:
        masks = _load_masks(config.masks_file, model)
    timings["time_prune_s"] = _lap(start, timings)
    spectrum = None
    if config.spectrum is not None:
        spectrum = pruners.SpectrumOptions(k=config.spectrum.k, probes=config.spectrum.probes)
    stats = pruners.path_kernel_stats(
        model, input_shape=dataset.input_shape, masks=masks, spectrum=spectrum
    )
    metrics: dict[str, Any] = dict(stats.metrics())
    metrics["layer_density"] = json.dumps(dict(stats.layer_density))
    metrics["layer_trace_share"] = json.dumps(dict(stats.layer_trace_share))
    timings["time_stats_s"] = _lap(start, timings)
    if config.train_epochs > 0:
        metrics.update(_train(train_config, model, masks, dataset))
    timings["time_train_s"] = _lap(start, timings)
    if not config.keep_masks:
        return TrialResult(dict(config.params), metrics, timings, device)
    return TrialResult(
        dict(config.params),
        metrics,
        timings,
        device,
        masks={n: m.detach().to("cpu", copy=True) for n, m in masks.items()},
        masks_key=config.masks_key(),
    )


def _load_masks(path: str, model: Any) -> Any:
    """Masks from a file, checked against the model, on the model's device."""
    import pruners
    from pruners.masks import check_masks

    if not Path(path).is_file():
        raise ValueError(f"masks_file must be an existing file, but {path!r} is missing")
    masks = pruners.load_masks(path)
    check_masks(model, masks)
    device = next(model.parameters()).device
    return {name: mask.to(device) for name, mask in masks.items()}


def _lap(start: float, done: Mapping[str, float] | None = None) -> float:
    return time.perf_counter() - start - sum((done or {}).values())


def _build(config: TrialConfig, dataset: Any, device: str) -> Any:
    import torch

    import pruners

    torch.manual_seed(config.seed)
    model = pruners.build_model(
        config.model.name,
        input_shape=dataset.input_shape,
        num_classes=dataset.num_classes,
        **config.model.options,
    )
    return model.to(device)


def _prune(config: TrialConfig, model: Any, dataset: Any, sample: Any, device: str) -> Any:
    import pruners

    p = config.params
    knobs: dict[str, Any] = {k: p[k] for k in SYNFLOW_KNOBS if p.get(k) is not None}
    if device != "cpu":
        sample = pruners.PruneSample(
            x=sample.x.to(device), y=sample.y.to(device), raw_mean=sample.raw_mean.to(device)
        )
    return pruners.prune(
        model,
        p["pruner"],
        float(p["density"]),
        int(p["iterations"]),
        p["schedule"],
        p["scope"],
        input_shape=dataset.input_shape,
        sample=sample,
        dense_classifier=config.prune.dense_classifier,
        include_bias=config.prune.include_bias,
        include_norm=config.prune.include_norm,
        seed=config.seed,
        **knobs,
    )


def _train(train_config: Any, model: Any, masks: Any, dataset: Any) -> dict[str, Any]:
    import pruners

    _, result = pruners.train(model, masks, dataset, train_config)
    metrics = dict(result.metrics())
    metrics["train_epochs"] = train_config.epochs
    return metrics


# --------------------------------------------------------------------------- stand-in trials


@dataclass(frozen=True)
class SleepTrial:
    """A trial that only sleeps and returns made-up statistics: measures orchestration alone.

    The statistics are smooth functions of the parameters (so samplers have something to
    optimize) under the real metric names; ``fail_every`` > 0 makes every n-th trial number
    raise, to exercise the FAIL path.
    """

    seconds: float = 0.0
    fail_every: int = 0

    def __call__(self, config: TrialConfig) -> TrialResult:
        start = time.perf_counter()
        if self.seconds > 0:
            time.sleep(self.seconds)
        if self.fail_every and config.number % self.fail_every == self.fail_every - 1:
            raise FloatingPointError(f"synthetic failure of trial {config.number}")
        p = config.params
        x = float(p.get("path_exponent") or 1.0) - 1.5
        y = float(p.get("score_exponent") or 1.0) - 1.0
        base = -(x * x) - 0.5 * y * y + 0.01 * math.log(float(p.get("iterations") or 1))
        metrics = {name: base for name in STAT_METRICS}
        metrics.update(
            num_params=int(1000 * float(p["density"])),
            effective_params=10,
            macs=1000,
            layer_collapse=0,
        )
        took = time.perf_counter() - start
        return TrialResult(params=dict(p), metrics=metrics, timings={"time_prune_s": took})
