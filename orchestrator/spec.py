"""The study spec: YAML in, a validated frozen :class:`StudySpec` out.

Every rule is checked here, before Ray starts, and a broken rule is one :class:`SpecError` line
naming the field (``search.iterations.low``) and the rule. The spec's format is in
``docs/design.md`` (the study spec) and README's Studies section; a study searches the SynFlow
family of Gebhart, Saxena, Schrater (2021), "A Unified Paths Perspective for Pruning at
Initialization", against data-free objectives.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any

import yaml

from analysis import schema
from orchestrator import space
from orchestrator.errors import SpecError, brief
from orchestrator.samplers import check_sampler

#: Scalar statistics of ``pruners.path_kernel_stats(...).metrics()`` (data-free, at init), the
#: Path Kernel spectrum columns (``pruners.SPECTRUM_METRICS``: computed when the spec has a
#: ``spectrum`` section or an objective names one of them) and the scalar metrics of
#: ``pruners.train`` a study may optimize (only when every trial trains: ``train.epochs > 0``);
#: all owned by :mod:`analysis.schema`.
STAT_METRICS: tuple[str, ...] = schema.STAT_METRICS
SPECTRUM_METRICS: tuple[str, ...] = schema.SPECTRUM_METRICS
TRAIN_METRICS: tuple[str, ...] = schema.TRAIN_METRICS
DIRECTIONS = ("maximize", "minimize")
DEVICES = ("auto", "cpu", "cuda")
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*")  # matched whole (fullmatch): no "\n" tail
#: Longest study name (it names files, the Optuna study and a Parquet column value).
MAX_NAME_CHARS = 100
#: Upper bounds that catch typos (``trials: 1e38``) before Ray starts; far above real studies.
MAX_TRIALS = 1_000_000
MAX_ITERATIONS = 100_000
MAX_EPOCHS = 100_000
MAX_WORKERS = 100_000
MAX_ATTEMPTS = 100
MAX_PREFETCH = 64
MAX_SAMPLE_PER_CLASS = 100_000
#: Most seeds ``validate.seeds`` may list (each one trains every validated configuration).
MAX_VALIDATE_SEEDS = 1_000
#: Bounds of integer model options, checked before the model is built (even on the meta device
#: a depth of 1e9 would take forever to build).
MODEL_OPTION_BOUNDS: dict[str, int] = {"width": 1_000_000, "depth": 1_000}
#: Default of ``trial_timeout_s``: an attempt running longer is killed and recorded as FAIL.
DEFAULT_TRIAL_TIMEOUT_S = 3600.0
#: Default of ``trial_memory_gb``: the most memory one trial is estimated to need (see
#: :func:`estimate_trial_bytes`); a spec above it is refused before Ray starts.
DEFAULT_TRIAL_MEMORY_GB = 16.0
# TrainConfig fields the orchestrator sets itself.
_TRAIN_OWNED = ("epochs", "seed", "device")


@dataclass(frozen=True)
class ModelSpec:
    """``pruners.build_model(name, **options)``."""

    name: str
    options: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class DataSpec:
    """``pruners.load_dataset(name, root=..., download=..., **options)``."""

    name: str = "digits"
    root: str | None = None
    download: bool = False
    options: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class PruneSpec:
    """Options of ``pruners.prune`` that are not searched."""

    dense_classifier: bool = False
    include_bias: bool = False
    include_norm: bool = False
    sample_per_class: int = 10


@dataclass(frozen=True)
class SpectrumSpec:
    """``pruners.SpectrumOptions`` of the Path Kernel spectrum each trial measures."""

    k: int = 10
    probes: int = 10


@dataclass(frozen=True)
class Objective:
    """One study objective: a scalar metric column and its direction."""

    metric: str
    direction: str = "maximize"


@dataclass(frozen=True)
class SamplerSpec:
    """An Optuna sampler by name (see ``orchestrator.samplers.SAMPLERS``) and its options."""

    name: str = "tpe"
    options: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class TrainSpec:
    """Training of every trial (``epochs > 0``); ``options`` go to ``pruners.TrainConfig``."""

    epochs: int = 0
    options: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class ValidateSpec:
    """After the search, train the ``top_k`` best and ``random_k`` random configurations.

    Attributes:
        top_k: the best COMPLETE search trials by the objectives.
        random_k: trials drawn (with the study seed) from the other COMPLETE ones.
        epochs: training epochs of each validation run.
        seeds: train each chosen configuration once per seed (a new initialization, prune
            sample and training order each; the configuration is re-pruned on every seed's
            weights); None: once, with the study seed. Seeds are distinct integers >= 0.
    """

    top_k: int = 0
    random_k: int = 0
    epochs: int = 20
    seeds: tuple[int, ...] | None = None

    def runs_per_config(self) -> int:
        """Validation runs of each chosen configuration (one per seed)."""
        return 1 if self.seeds is None else len(self.seeds)


@dataclass(frozen=True)
class SearchSpace:
    """Search dimensions and fixed values, keyed by parameter name (see ``space.PARAMS``)."""

    params: Mapping[str, space.Param] = field(default_factory=dict)

    def distributions(self) -> dict[str, Any]:
        """Optuna distributions of the searched dimensions (fixed values left out)."""
        dists = {name: space.to_distribution(p) for name, p in self.params.items()}
        return {name: d for name, d in dists.items() if d is not None}

    def fixed(self) -> dict[str, Any]:
        """The fixed values."""
        return {n: p.value for n, p in self.params.items() if isinstance(p, space.Fixed)}

    def grid(self) -> dict[str, list[Any]]:
        """The grid of the searched dimensions (for the grid sampler)."""
        return {
            n: space.grid_values(n, p, f"search.{n}")
            for n, p in self.params.items()
            if not isinstance(p, space.Fixed)
        }

    def grid_size(self) -> int:
        """Number of points of the grid."""
        size = 1
        for values in self.grid().values():
            size *= len(values)
        return size


@dataclass(frozen=True)
class StudySpec:
    """A validated study spec (docs/design.md, the study spec).

    Attributes:
        study: the study's name (Optuna study name, ``study`` column).
        model: ``{name, **options}`` for ``pruners.build_model``.
        data: ``{name, root, download, **options}`` for ``pruners.load_dataset``.
        search: the search space; the top-level ``density`` is a shorthand for
            ``search.density``. Each entry is a range ``{low, high, log, step}``, a list of
            choices or a fixed value (see ``orchestrator.space.PARAMS``).
        objectives: ``[{metric, direction}]``; metrics of ``path_kernel_stats(...).metrics()``
            (``STAT_METRICS``), training metrics when every trial trains.
        sampler: ``tpe``, ``nsga2``, ``random``, ``grid``, ``cmaes``, ``gp`` or
            ``{name, **options}`` (options of the Optuna sampler; seeded with ``seed``).
        trials: search trials to finish.
        workers: actors; None (``auto``) = one per GPU, or one per CPU core without GPUs.
        gpus_per_worker: GPUs per actor on GPU clusters (a fraction packs several per GPU).
        cpus_per_worker: CPUs per actor.
        train: ``{epochs, **TrainConfig options}``; ``epochs > 0`` trains every trial.
        validate: ``{top_k, random_k, epochs, seeds}``: trained after the search (each chosen
            configuration once per seed of ``seeds``; once with ``seed`` without it).
        prune: ``pruners.prune`` options that are not searched, and the prune sample size.
        seed: seeds the model's initialization (the same for every trial), the prune sample,
            training and the sampler.
        max_attempts: attempts per trial when actors die (killed, OOM, node lost).
        trial_timeout_s: an attempt running longer is killed and recorded as FAIL (default
            ``DEFAULT_TRIAL_TIMEOUT_S`` = 3600 s; a hanging trial never hangs the study).
        trial_memory_gb: the memory budget of one trial: a spec whose estimated need
            (:func:`estimate_trial_bytes`) is larger is refused before Ray starts
            (default ``DEFAULT_TRIAL_MEMORY_GB`` = 16; raise it for big GPUs).
        device: ``auto`` (CUDA where the actor holds a GPU), ``cpu`` or ``cuda``.
        prefetch: trials queued per actor behind the running one; hides the driver's
            ask/tell time (0: the sampler sees every result before the next ask).
        save_masks: keep each trial's masks under ``OUT/masks/`` (safetensors, one file per
            distinct configuration) and name the file in the row's ``masks_path`` column.
        spectrum: ``{k, probes}``: also measure the top-k eigenvalues of the Path Kernel and
            the effective rank (``SPECTRUM_METRICS``); implied (k=10, probes=10) when an
            objective names a spectrum metric; None: not measured.
    """

    study: str
    model: ModelSpec
    data: DataSpec = field(default_factory=DataSpec)
    search: SearchSpace = field(default_factory=SearchSpace)
    objectives: tuple[Objective, ...] = (Objective("log_path_kernel_trace"),)
    sampler: SamplerSpec = field(default_factory=SamplerSpec)
    trials: int = 100
    workers: int | None = None  # None = auto
    gpus_per_worker: float = 1.0
    cpus_per_worker: float = 1.0
    train: TrainSpec = field(default_factory=TrainSpec)
    validate: ValidateSpec = field(default_factory=ValidateSpec)
    prune: PruneSpec = field(default_factory=PruneSpec)
    seed: int = 0
    max_attempts: int = 3
    trial_timeout_s: float | None = DEFAULT_TRIAL_TIMEOUT_S
    trial_memory_gb: float = DEFAULT_TRIAL_MEMORY_GB
    device: str = "auto"
    prefetch: int = 1
    save_masks: bool = False
    spectrum: SpectrumSpec | None = None

    @property
    def directions(self) -> list[str]:
        """Optuna directions, one per objective."""
        return [o.direction for o in self.objectives]

    @property
    def metrics(self) -> list[str]:
        """Objective metric names, in order."""
        return [o.metric for o in self.objectives]


# ----------------------------------------------------------------------------- YAML loading


class _Loader(yaml.SafeLoader):
    """Safe YAML that rejects duplicate keys, anchors and aliases, and reads ``1e-3`` as a float
    (YAML 1.2).

    Aliases are refused because nested ones expand exponentially ("billion laughs": a 500-byte
    file becomes gigabytes once a value is copied or printed); a spec never needs them.
    """

    def compose_node(self, parent: Any, index: Any) -> Any:
        event = self.peek_event()  # type: ignore[no-untyped-call]
        if isinstance(event, yaml.AliasEvent) or getattr(event, "anchor", None):
            kinds, sign = (
                ("aliases", "*") if isinstance(event, yaml.AliasEvent) else ("anchors", "&")
            )
            line = event.start_mark.line + 1 if event.start_mark else "?"
            raise SpecError(
                f"YAML {kinds} are not allowed in a spec, but got {sign}{brief(event.anchor)[1:-1]} "
                f"(line {line}); write the value out"
            )
        return super().compose_node(parent, index)  # type: ignore[no-untyped-call]


def _construct_mapping(loader: _Loader, node: yaml.MappingNode) -> dict[Any, Any]:
    seen: set[Any] = set()
    for key_node, _ in node.value:
        key = loader.construct_object(key_node)  # type: ignore[no-untyped-call]
        if key in seen:
            line = key_node.start_mark.line + 1
            raise SpecError(f"duplicate field {key!r} (line {line})")
        seen.add(key)
    return loader.construct_mapping(node)


_Loader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _construct_mapping)
_Loader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(r"^[-+]?(?:[0-9][0-9_]*(?:\.[0-9_]*)?|\.[0-9_]+)[eE][-+]?[0-9]+$"),
    list("-+0123456789."),
)


def load_yaml(text: str) -> dict[str, Any]:
    """Parse spec text into a mapping; broken or empty YAML is a :class:`SpecError`."""
    try:
        data = yaml.load(text, Loader=_Loader)  # a SafeLoader subclass
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark
        where = f" (line {mark.line + 1}, column {mark.column + 1})" if mark else ""
        raise SpecError(f"invalid YAML: {exc.problem or exc}{where}") from None
    except yaml.YAMLError as exc:
        raise SpecError(f"invalid YAML: {str(exc).splitlines()[0]}") from None
    if data is None:
        raise SpecError("the spec is empty")
    if not isinstance(data, dict):
        raise SpecError(f"the spec must be a mapping of fields, but got {type(data).__name__}")
    return data


def load_spec(path: str | Path) -> StudySpec:
    """Read and validate a YAML study spec file.

    Raises:
        SpecError: the file cannot be read, or the spec breaks a rule.
    """
    try:
        text = Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise SpecError(f"cannot read spec {str(path)!r}: {exc.__class__.__name__}") from None
    return parse_spec(load_yaml(text))


# ----------------------------------------------------------------------------- field checks


def _keys(raw: Mapping[str, Any], path: str, valid: tuple[str, ...]) -> None:
    for key in raw:
        if key not in valid:
            where = f"{path}: " if path else ""
            raise SpecError(f"{where}unknown field {key!r}; valid: {sorted(valid)}")


def _mapping(raw: object, path: str) -> dict[str, Any]:
    if not isinstance(raw, dict):
        raise SpecError(f"{path} must be a mapping, but got {type(raw).__name__} {brief(raw)}")
    for key in raw:
        if not isinstance(key, str):
            raise SpecError(f"{path}: field names must be text, but got {key!r}")
    return raw


def _int(raw: object, path: str, minimum: int | None = None, maximum: int | None = None) -> int:
    if isinstance(raw, bool) or not isinstance(raw, int):
        raise SpecError(f"{path} must be an integer, but got {type(raw).__name__} {raw!r}")
    if minimum is not None and raw < minimum:
        raise SpecError(f"{path} >= {minimum} must hold, but got {path}={raw!r}")
    if maximum is not None and raw > maximum:
        raise SpecError(f"{path} <= {maximum:,} must hold, but got {path}={raw!r}")
    return raw


def _float(raw: object, path: str) -> float:
    if isinstance(raw, bool) or not isinstance(raw, int | float):
        raise SpecError(f"{path} must be a number, but got {type(raw).__name__} {raw!r}")
    if raw != raw or raw in (float("inf"), float("-inf")):
        raise SpecError(f"{path} must be finite, but got {raw!r}")
    return float(raw)


def _bool(raw: object, path: str) -> bool:
    if not isinstance(raw, bool):
        raise SpecError(f"{path} must be true or false, but got {raw!r}")
    return raw


def _str(raw: object, path: str, valid: tuple[str, ...] | list[str] | None = None) -> str:
    if not isinstance(raw, str) or not raw:
        raise SpecError(f"{path} must be a non-empty string, but got {raw!r}")
    if valid is not None and raw not in valid:
        raise SpecError(f"{path} must be one of {sorted(valid)}, but got {raw!r}")
    return raw


def _scalar_options(raw: Mapping[str, Any], path: str) -> dict[str, Any]:
    for key, value in raw.items():
        if not isinstance(value, bool | int | float | str | list | type(None)):
            raise SpecError(f"{path}.{key} must be a scalar or a list, but got {value!r}")
    return dict(raw)


# ----------------------------------------------------------------------------- sections


def _parse_model(raw: object) -> ModelSpec:
    import pruners
    from pruners.models import model_options

    raw = _mapping(raw, "model")
    name = _str(raw.get("name"), "model.name", sorted(pruners.MODELS))
    options = {k: v for k, v in raw.items() if k != "name"}
    valid = sorted(model_options(name))
    for key in options:
        if key not in valid:
            raise SpecError(f"model: unknown option {key!r} for model {name!r}; valid: {valid}")
    for key, bound in MODEL_OPTION_BOUNDS.items():
        value = options.get(key)
        if isinstance(value, int) and not isinstance(value, bool) and value > bound:
            raise SpecError(f"model.{key} <= {bound:,} must hold, but got model.{key}={value!r}")
    return ModelSpec(name, _scalar_options(options, "model"))


def _parse_data(raw: object) -> DataSpec:
    import pruners
    from pruners.data import dataset_options

    raw = _mapping(raw, "data")
    name = _str(raw.get("name", "digits"), "data.name", sorted(pruners.DATASETS))
    root = raw.get("root")
    if root is not None:
        root = _str(root, "data.root")
    download = _bool(raw.get("download", False), "data.download")
    options = {k: v for k, v in raw.items() if k not in ("name", "root", "download")}
    valid = sorted(dataset_options(name))
    for key in options:
        if key not in valid:
            raise SpecError(f"data: unknown option {key!r} for dataset {name!r}; valid: {valid}")
    return DataSpec(name, root, download, _scalar_options(options, "data"))


def _parse_search(raw: object, density: object) -> SearchSpace:
    raw = {} if raw is None else _mapping(raw, "search")
    params = {name: space.parse_param(name, v, f"search.{name}") for name, v in raw.items()}
    if density is not None:
        if "density" in params:
            raise SpecError("density: give density either at the top level or under search")
        params["density"] = space.parse_param("density", density, "density")
    if "density" not in params:
        raise SpecError("density is required (a value, a list, or a range under search)")
    _check_knobs(params)
    _check_iterations(params.get("iterations"))
    return SearchSpace(params)


def _check_iterations(param: space.Param | None) -> None:
    """Pruning rounds are bounded: each round scores the whole network once."""
    values: tuple[space.Scalar, ...] = ()
    if isinstance(param, space.IntRange | space.FloatRange):
        values = (param.high,)
    elif param is not None:
        values = _values(param)
    for value in values:
        if isinstance(value, int | float) and value > MAX_ITERATIONS:
            raise SpecError(f"search.iterations <= {MAX_ITERATIONS:,} must hold, but got {value!r}")


def _values(param: space.Param) -> tuple[space.Scalar, ...]:
    if isinstance(param, space.Choice):
        return param.choices
    return (param.value,) if isinstance(param, space.Fixed) else ()


def _check_knobs(params: Mapping[str, space.Param]) -> None:
    """SynFlow knobs need at least one SynFlow-family pruner among the choices."""
    import pruners

    pruner = params.get("pruner", space.Fixed("synflow"))
    names = [str(n) for n in _values(pruner)]
    if any(getattr(pruners.SCORERS[n], "synflow", None) is not None for n in names):
        return
    for knob in ("path_exponent", "score_exponent", "input"):
        if knob in params:
            raise SpecError(
                f"search.{knob} applies to the SynFlow family only, but the pruners are {names}"
            )


def _parse_objectives(raw: object, train_epochs: int) -> tuple[Objective, ...]:
    if raw is None:
        return (Objective("log_path_kernel_trace"),)
    if not isinstance(raw, list) or not raw:
        raise SpecError(f"objectives must be a non-empty list, but got {raw!r}")
    valid = list(STAT_METRICS) + list(SPECTRUM_METRICS)
    valid += list(TRAIN_METRICS) if train_epochs > 0 else []
    objectives = []
    for i, item in enumerate(raw):
        path = f"objectives[{i}]"
        item = _mapping(item, path)
        _keys(item, path, ("metric", "direction"))
        metric = item.get("metric")
        if metric in TRAIN_METRICS and train_epochs == 0:
            raise SpecError(f"{path}.metric {metric!r} needs training: set train.epochs > 0")
        objectives.append(
            Objective(
                _str(metric, f"{path}.metric", valid),
                _str(item.get("direction", "maximize"), f"{path}.direction", DIRECTIONS),
            )
        )
    metrics = [o.metric for o in objectives]
    if len(set(metrics)) != len(metrics):
        raise SpecError(f"objectives: each metric may appear once, but got {metrics}")
    return tuple(objectives)


def _parse_sampler(raw: object, n_objectives: int) -> SamplerSpec:
    if isinstance(raw, str) or raw is None:
        raw = {"name": raw or "tpe"}
    raw = _mapping(raw, "sampler")
    name = _str(raw.get("name", "tpe"), "sampler.name")
    options = {k: v for k, v in raw.items() if k != "name"}
    check_sampler(name, options, n_objectives, "sampler")
    return SamplerSpec(name, options)


def _parse_train(raw: object) -> TrainSpec:
    from pruners.training import TrainConfig

    raw = {} if raw is None else _mapping(raw, "train")
    valid = tuple(f.name for f in fields(TrainConfig) if f.name not in ("seed", "device"))
    _keys(raw, "train", valid)
    epochs = _int(raw.get("epochs", 0), "train.epochs", 0, MAX_EPOCHS)
    options = {k: v for k, v in raw.items() if k != "epochs"}
    try:
        TrainConfig(epochs=epochs, **options)
    except (TypeError, ValueError) as exc:
        raise SpecError(f"train: {exc}") from None
    return TrainSpec(epochs, options)


def _parse_validate(raw: object) -> ValidateSpec:
    raw = {} if raw is None else _mapping(raw, "validate")
    _keys(raw, "validate", ("top_k", "random_k", "epochs", "seeds"))
    return ValidateSpec(
        _int(raw.get("top_k", 0), "validate.top_k", 0, MAX_TRIALS),
        _int(raw.get("random_k", 0), "validate.random_k", 0, MAX_TRIALS),
        _int(raw.get("epochs", 20), "validate.epochs", 0, MAX_EPOCHS),
        _validate_seeds(raw.get("seeds")),
    )


def _validate_seeds(raw: object) -> tuple[int, ...] | None:
    """``validate.seeds``: absent (None) or a list of 1 to ``MAX_VALIDATE_SEEDS`` distinct
    integers >= 0."""
    if raw is None:
        return None
    path = "validate.seeds"
    if not isinstance(raw, list) or not raw:
        raise SpecError(f"{path} must be a non-empty list of integers >= 0, but got {brief(raw)}")
    if len(raw) > MAX_VALIDATE_SEEDS:
        raise SpecError(
            f"{path} may list at most {MAX_VALIDATE_SEEDS:,} seeds, but got {len(raw):,}"
        )
    seeds = tuple(_int(value, f"{path}[{i}]", 0) for i, value in enumerate(raw))
    if len(set(seeds)) != len(seeds):
        raise SpecError(f"{path} must not repeat a seed, but got {brief(list(seeds))}")
    return seeds


def _parse_prune(raw: object) -> PruneSpec:
    raw = {} if raw is None else _mapping(raw, "prune")
    names = tuple(f.name for f in fields(PruneSpec))
    _keys(raw, "prune", names)
    values: dict[str, Any] = {}
    for name in names:
        if name in raw:
            path = f"prune.{name}"
            is_int = name == "sample_per_class"
            values[name] = (
                _int(raw[name], path, 1, MAX_SAMPLE_PER_CLASS) if is_int else _bool(raw[name], path)
            )
    return PruneSpec(**values)


def _parse_spectrum(raw: object, objectives: tuple[Objective, ...]) -> SpectrumSpec | None:
    named = [o.metric for o in objectives if o.metric in SPECTRUM_METRICS]
    if raw is None:
        return SpectrumSpec() if named else None
    raw = _mapping(raw, "spectrum")
    _keys(raw, "spectrum", ("k", "probes"))
    spectrum = SpectrumSpec(
        k=_int(raw.get("k", 10), "spectrum.k", 1),
        probes=_int(raw.get("probes", 10), "spectrum.probes", 0),
    )
    if spectrum.probes == 1:
        raise SpecError("spectrum.probes must be 0 or >= 2 (a standard error needs two), but got 1")
    needs_probes = [m for m in named if m in ("effective_rank", "effective_rank_se")]
    if needs_probes and spectrum.probes == 0:
        raise SpecError(f"objectives {needs_probes} need spectrum.probes >= 2, but got 0")
    return spectrum


def parse_workers(raw: object, path: str = "workers") -> int | None:
    """``"auto"`` (None) or an integer >= 1."""
    if raw == "auto" or raw is None:
        return None
    if isinstance(raw, str) and raw.isdigit():
        raw = int(raw)
    return _int(raw, path, 1, MAX_WORKERS)


def _gpus(raw: object) -> float:
    gpus = _float(raw, "gpus_per_worker")
    if gpus < 0 or (gpus > 1 and not gpus.is_integer()):
        raise SpecError(
            f"gpus_per_worker must be 0, a fraction in (0, 1] or a whole number, but got {raw!r}"
        )
    return gpus


def _positive(raw: object, path: str) -> float:
    value = _float(raw, path)
    if value <= 0:
        raise SpecError(f"{path} > 0 must hold, but got {path}={raw!r}")
    return value


_TOP = (*(f.name for f in fields(StudySpec)), "density")


def parse_spec(raw: Mapping[str, Any]) -> StudySpec:
    """Validate a spec mapping (already parsed from YAML) into a :class:`StudySpec`.

    Raises:
        SpecError: the first broken rule, as one line naming the field.
    """
    raw = _mapping(dict(raw), "spec")
    _keys(raw, "", _TOP)
    if "study" not in raw:
        raise SpecError("study (the study's name) is required")
    study = _str(raw["study"], "study")
    if not _NAME.fullmatch(study):
        raise SpecError(f"study must match {_NAME.pattern} (whole name), but got {study!r}")
    if len(study) > MAX_NAME_CHARS:
        raise SpecError(
            f"study must have at most {MAX_NAME_CHARS} characters, but got {len(study)}"
        )
    if "model" not in raw:
        raise SpecError("model is required, e.g. model: {name: fc}")
    train = _parse_train(raw.get("train"))
    objectives = _parse_objectives(raw.get("objectives"), train.epochs)
    spec = StudySpec(
        study=study,
        model=_parse_model(raw["model"]),
        data=_parse_data(raw.get("data", {})),
        search=_parse_search(raw.get("search"), raw.get("density")),
        objectives=objectives,
        sampler=_parse_sampler(raw.get("sampler"), len(objectives)),
        trials=_int(raw.get("trials", 100), "trials", 1, MAX_TRIALS),
        workers=parse_workers(raw.get("workers", "auto")),
        gpus_per_worker=_gpus(raw.get("gpus_per_worker", 1.0)),
        cpus_per_worker=_positive(raw.get("cpus_per_worker", 1.0), "cpus_per_worker"),
        train=train,
        validate=_parse_validate(raw.get("validate")),
        prune=_parse_prune(raw.get("prune")),
        seed=_int(raw.get("seed", 0), "seed", 0),
        max_attempts=_int(raw.get("max_attempts", 3), "max_attempts", 1, MAX_ATTEMPTS),
        trial_timeout_s=_timeout(raw.get("trial_timeout_s")),
        trial_memory_gb=_positive(
            raw.get("trial_memory_gb", DEFAULT_TRIAL_MEMORY_GB), "trial_memory_gb"
        ),
        device=_str(raw.get("device", "auto"), "device", DEVICES),
        prefetch=_int(raw.get("prefetch", 1), "prefetch", 0, MAX_PREFETCH),
        save_masks=_bool(raw.get("save_masks", False), "save_masks"),
        spectrum=_parse_spectrum(raw.get("spectrum"), objectives),
    )
    check_grid(spec)
    return spec


def _timeout(raw: object) -> float:
    """A positive number of seconds; absent (or ``null``) = ``DEFAULT_TRIAL_TIMEOUT_S``."""
    return DEFAULT_TRIAL_TIMEOUT_S if raw is None else _positive(raw, "trial_timeout_s")


def check_grid(spec: StudySpec) -> None:
    """The grid sampler needs a finite grid with at least ``trials`` points."""
    if spec.sampler.name != "grid":
        return
    size = spec.search.grid_size()
    if spec.trials > size:
        raise SpecError(
            f"trials <= {size} (the grid's size) must hold, but got trials={spec.trials}"
        )


#: Copies of the parameters a trial holds at once (weights, masks, scores, gradients, two
#: optimizer states), the factor of :func:`estimate_trial_bytes`.
PARAM_COPIES = 6
#: Activations are kept for the backward pass and have gradients of their own.
ACTIVATION_COPIES = 2
_BYTES = 4  # float32


def check_data(spec: StudySpec) -> tuple[tuple[int, ...], int]:
    """The dataset is present and loadable (files found, torchvision imports); its shape.

    Runs before Ray starts, so a missing ``root``, a missing torchvision or absent files are
    one line instead of a failure in every actor. With ``download: true`` the files are
    fetched here, once, instead of by every actor at the same time.

    Returns:
        ``(input_shape, num_classes)`` of the dataset.

    Raises:
        SpecError: the data cannot be loaded; the message names the cause.
    """
    from pruners.data import check_dataset

    try:
        return check_dataset(
            spec.data.name,
            root=spec.data.root,
            download=spec.data.download,
            seed=spec.seed,
            **spec.data.options,
        )
    except (TypeError, ValueError, RuntimeError, OSError) as exc:
        text = " ".join(str(exc).split())
        raise SpecError(f"data: {text} (checked on this machine before Ray starts)") from None


def trial_batch(spec: StudySpec, num_classes: int) -> int:
    """The largest batch a trial feeds the model: the prune sample or a training batch."""
    from pruners.training import TrainConfig

    batch = spec.prune.sample_per_class * num_classes
    if spec.train.epochs > 0 or spec.validate.top_k + spec.validate.random_k > 0:
        size = spec.train.options.get("batch_size", TrainConfig.batch_size)
        batch = max(batch, int(size))
    return batch


def estimate_trial_bytes(model: Any, input_shape: tuple[int, ...], batch: int) -> int:
    """Estimated peak memory of one trial: ``4 * (6 * P + 2 * B * A)`` bytes.

    ``P`` counts the parameters and buffers, ``A`` the outputs of every leaf module for one
    example, found by one forward pass on PyTorch's meta device (shapes only: no memory, no
    compute), ``B`` is the batch. It is a coarse upper estimate meant to refuse specs that
    cannot fit (e.g. an ``fc`` of width 100000: 40 GB per layer), not to pack memory tightly.

    Args:
        model: the model, best built on the meta device (any device works).
        input_shape: the shape of one example.
        batch: the largest batch a trial uses.
    """
    import torch

    params = sum(p.numel() for p in model.parameters()) + sum(b.numel() for b in model.buffers())
    activations = 0

    def count(_module: Any, _inputs: Any, output: Any) -> None:
        nonlocal activations
        if isinstance(output, torch.Tensor):
            activations += output.numel()

    leaves = [m for m in model.modules() if not list(m.children())]
    handles = [m.register_forward_hook(count) for m in leaves]
    device = next(model.parameters(), torch.empty(0, device="meta")).device
    was_training = model.training
    model.eval()  # BatchNorm running statistics stay untouched
    try:
        with torch.no_grad():
            model(torch.zeros(1, *input_shape, device=device))
    finally:
        model.train(was_training)
        for handle in handles:
            handle.remove()
    return _BYTES * (PARAM_COPIES * params + ACTIVATION_COPIES * batch * activations)


def check_buildable(spec: StudySpec) -> None:
    """Check the data and the model before Ray starts, using no memory for the model.

    The data must be present and loadable (:func:`check_data`). The model is built once on
    PyTorch's meta device to check its options, and its estimated memory need
    (:func:`estimate_trial_bytes`) must fit ``trial_memory_gb``.

    Raises:
        SpecError: data that cannot load, a model or dataset option the builders reject, or a
            model above the memory budget.
    """
    import torch

    import pruners

    shape, classes = check_data(spec)
    try:
        with torch.device("meta"):
            model = pruners.build_model(
                spec.model.name, input_shape=shape, num_classes=classes, **spec.model.options
            )
    except (TypeError, ValueError, RuntimeError) as exc:
        raise SpecError(f"model: {exc}") from None
    need = estimate_trial_bytes(model, shape, trial_batch(spec, classes))
    budget = spec.trial_memory_gb * 2**30
    if need > budget:
        raise SpecError(
            f"trial_memory_gb: a trial needs an estimated {need / 2**30:,.1f} GiB "
            f"(model {spec.model.name} {dict(spec.model.options)}), above the budget "
            f"trial_memory_gb={spec.trial_memory_gb:g}; make the model smaller or raise "
            "trial_memory_gb"
        )


def with_overrides(spec: StudySpec, trials: int | None, workers: int | str | None) -> StudySpec:
    """``spec`` with command-line overrides of ``trials`` and ``workers`` applied and checked."""
    if trials is not None:
        spec = replace(spec, trials=_int(trials, "--trials", 1, MAX_TRIALS))
        check_grid(spec)
    if workers is not None:
        spec = replace(spec, workers=parse_workers(workers, "--workers"))
    return spec


# ----------------------------------------------------------------------------- back to YAML


def _param_to_yaml(param: space.Param) -> Any:
    if isinstance(param, space.Fixed):
        return param.value
    if isinstance(param, space.Choice):
        return list(param.choices)
    out: dict[str, Any] = {"low": param.low, "high": param.high}
    if param.log:
        out["log"] = True
    if isinstance(param, space.IntRange) and param.step != 1:
        out["step"] = param.step
    if isinstance(param, space.FloatRange) and param.step is not None:
        out["step"] = param.step
    return out


def spec_to_dict(spec: StudySpec) -> dict[str, Any]:
    """A plain mapping that :func:`parse_spec` turns back into ``spec``."""
    prune = {f.name: getattr(spec.prune, f.name) for f in fields(PruneSpec)}
    return {
        "study": spec.study,
        "model": {"name": spec.model.name, **spec.model.options},
        "data": {
            "name": spec.data.name,
            "root": spec.data.root,
            "download": spec.data.download,
            **spec.data.options,
        },
        "search": {n: _param_to_yaml(p) for n, p in spec.search.params.items()},
        "objectives": [{"metric": o.metric, "direction": o.direction} for o in spec.objectives],
        "sampler": {"name": spec.sampler.name, **spec.sampler.options},
        "trials": spec.trials,
        "workers": "auto" if spec.workers is None else spec.workers,
        "gpus_per_worker": spec.gpus_per_worker,
        "cpus_per_worker": spec.cpus_per_worker,
        "train": {"epochs": spec.train.epochs, **spec.train.options},
        "validate": {
            "top_k": spec.validate.top_k,
            "random_k": spec.validate.random_k,
            "epochs": spec.validate.epochs,
            **({"seeds": list(spec.validate.seeds)} if spec.validate.seeds is not None else {}),
        },
        "prune": prune,
        "seed": spec.seed,
        "max_attempts": spec.max_attempts,
        "trial_timeout_s": spec.trial_timeout_s,
        "trial_memory_gb": spec.trial_memory_gb,
        "device": spec.device,
        "prefetch": spec.prefetch,
        "save_masks": spec.save_masks,
        **(
            {"spectrum": {"k": spec.spectrum.k, "probes": spec.spectrum.probes}}
            if spec.spectrum is not None
            else {}
        ),
    }


class _Dumper(yaml.SafeDumper):
    """Safe YAML that writes a value used twice out twice (``load_spec`` refuses aliases)."""

    def ignore_aliases(self, data: Any) -> bool:
        return True


def dump_spec(spec: StudySpec) -> str:
    """The spec as YAML text (no anchors or aliases: it must load with ``load_spec``)."""
    return yaml.dump(spec_to_dict(spec), Dumper=_Dumper, sort_keys=False)
