"""The Parquet contract: every column a study's rows may carry, in one place.

Each :class:`Column` has its name, Arrow type, meaning, the group it belongs to and the code
that produces its value. The orchestrator writes through this module (``orchestrator.rows``
builds the declared Arrow schema from it, ``orchestrator.spec`` takes the metrics a study may
optimize from it); analysis reads through it (``analysis.columns`` takes the predictors,
baselines and trained metrics from it); tests hold ``pruners``' ``metrics()`` keys to it
(``pruners`` imports neither orchestrator nor analysis). The statistics are those of Gebhart,
Saxena & Schrater (2021), "A Unified Paths Perspective for Pruning at Initialization".

Importing this module imports pyarrow only (no torch, Ray, pandas or Optuna), so the
``pathsweep`` command line and Ray workers can use it cheaply.

Groups (``Column.group``):

* ``core`` — every row: identity, state, where and when it ran (``orchestrator.driver``).
* ``param`` — ``param_<name>``: the trial's configuration (searched or fixed by the spec).
* ``stat`` — data-free statistics at initialization (``pruners.PathKernelStats.metrics``).
* ``spectrum`` — the Path Kernel's spectrum (``pruners.PathKernelSpectrum.metrics``), only in
  studies that measure it.
* ``layer`` — per-layer maps stored as JSON text (``orchestrator.trial``).
* ``timing`` — seconds per stage of one trial, measured inside the worker.
* ``train`` — scalar training metrics (``pruners.TrainResult.metrics``), trained rows only.
* ``curve`` — per-epoch training curves (``pruners.TrainResult.metrics``), trained rows only.
* ``masks`` — where the trial's masks were saved (``save_masks: true``).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

import pyarrow as pa

TIMESTAMP = pa.timestamp("us", tz="UTC")

GROUPS = ("core", "param", "stat", "spectrum", "layer", "timing", "train", "curve", "masks")
#: What analysis does with a column: a data-free predictor, a baseline it has to beat, or a
#: trained outcome the predictors are correlated with.
ROLES = ("predictor", "baseline", "outcome")

#: Where a column's value comes from (``Column.source``).
SOURCE_DRIVER = "orchestrator.driver"
SOURCE_TRIAL = "orchestrator.trial"
SOURCE_STATS = "pruners.PathKernelStats.metrics"
SOURCE_SPECTRUM = "pruners.PathKernelSpectrum.metrics"
SOURCE_TRAIN = "pruners.TrainResult.metrics"

#: Values of ``phase``: the Optuna search, then the validation passes that re-run searched
#: configurations with training (the best ``top_k`` and a seeded random ``random_k``).
PHASE_SEARCH = "search"
PHASE_TOP = "validate-top"
PHASE_RANDOM = "validate-random"
PHASES = (PHASE_SEARCH, PHASE_TOP, PHASE_RANDOM)
#: Values of ``state``.
STATE_COMPLETE = "COMPLETE"
STATE_FAIL = "FAIL"
#: Prefix of the parameter columns.
PARAM_PREFIX = "param_"


@dataclass(frozen=True)
class Column:
    """One Parquet column.

    Attributes:
        name: column name.
        type: Arrow type it is declared with (a value of another kind promotes the column,
            see ``orchestrator.rows.rows_to_table``).
        group: one of :data:`GROUPS`.
        source: the code that produces the value.
        meaning: what the value is, with its unit.
        objective: a study may optimize it (``objectives: [{metric: NAME}]``).
        role: one of :data:`ROLES` for analysis, or None.
        higher_is_better: for outcomes, whether a larger value is better.
    """

    name: str
    type: pa.DataType
    group: str
    source: str
    meaning: str
    objective: bool = False
    role: str | None = None
    higher_is_better: bool = True

    def __post_init__(self) -> None:
        if self.group not in GROUPS:
            raise ValueError(f"group must be one of {GROUPS}, but got {self.group!r}")
        if self.role is not None and self.role not in ROLES:
            raise ValueError(f"role must be one of {ROLES} or None, but got {self.role!r}")


def _core(name: str, type_: pa.DataType, meaning: str) -> Column:
    return Column(name, type_, "core", SOURCE_DRIVER, meaning)


def _param(name: str, type_: pa.DataType, meaning: str) -> Column:
    return Column(PARAM_PREFIX + name, type_, "param", SOURCE_DRIVER, meaning)


def _stat(name: str, type_: pa.DataType, meaning: str, role: str | None = None) -> Column:
    return Column(name, type_, "stat", SOURCE_STATS, meaning, objective=True, role=role)


def _spectrum(name: str, type_: pa.DataType, meaning: str, role: str | None = None) -> Column:
    return Column(name, type_, "spectrum", SOURCE_SPECTRUM, meaning, objective=True, role=role)


def _train(name: str, type_: pa.DataType, meaning: str, higher: bool | None = None) -> Column:
    """A training column; ``higher`` given: an objective and an analysis outcome."""
    if higher is None:
        return Column(name, type_, "train", SOURCE_TRAIN, meaning)
    return Column(name, type_, "train", SOURCE_TRAIN, meaning, True, "outcome", higher)


_F64, _I64, _STR = pa.float64(), pa.int64(), pa.string()
_CURVE = pa.list_(pa.float64())

#: Every column, in the order the declared schema lists them.
COLUMNS: tuple[Column, ...] = (
    _core("study", _STR, "study name (spec `study`)"),
    _core("trial_id", _STR, "unique id of the attempt: '<n>-<attempt>', '<phase>-<n>-<attempt>'"),
    _core("optuna_number", _I64, "Optuna trial number (validation rows: the searched trial)"),
    _core("attempt", _I64, "attempt of this trial in this phase, from 0"),
    _core("phase", _STR, f"one of {PHASES}"),
    _core("state", _STR, f"{STATE_COMPLETE!r} or {STATE_FAIL!r}"),
    _core("error", _STR, "why the attempt failed (None when COMPLETE)"),
    _core("retry", pa.bool_(), "the failed attempt is retried"),
    _core("node_id", _STR, "Ray node that ran the attempt"),
    _core("gpu_ids", _STR, "GPUs Ray gave the worker"),
    _core("worker_pid", _I64, "process id of the worker actor"),
    _core("device", _STR, "torch device the trial ran on"),
    _core("started_at", TIMESTAMP, "start of the attempt (UTC)"),
    _core("finished_at", TIMESTAMP, "end of the attempt (UTC)"),
    _core("duration_s", _F64, "finished_at - started_at, seconds"),
    _core("seed", _I64, "spec seed: initialization, prune sample and training"),
    _core("pathsweep_version", _STR, "pathsweep version of the driver"),
    _core("torch_version", _STR, "torch version of the driver"),
    _param("pruner", _STR, "pruner preset or 'family'"),
    _param("path_exponent", _F64, "path exponent p of the score family"),
    _param("score_exponent", _F64, "score exponent a of the score family"),
    _param("iterations", _I64, "pruning iterations"),
    _param("schedule", _STR, "density schedule over the iterations"),
    _param("scope", _STR, "global or per-layer pruning"),
    _param("input", _STR, "input the score is computed on"),
    _param("density", _F64, "requested fraction of weights kept"),
    _param("model", _STR, "model name"),
    _param("dataset", _STR, "dataset name"),
    _stat("log_path_kernel_trace", _F64, "log Tr(Π_θ), the Path Kernel trace", "predictor"),
    _stat("log_path_l1", _F64, "log ‖v‖₁, the SynFlow objective R(|θ|)", "predictor"),
    _stat("log_path_l2_squared", _F64, "log ‖v‖₂² = log R(θ⊙θ)", "predictor"),
    _stat("log_num_paths", _F64, "log of the surviving input→output paths", "predictor"),
    _stat("effective_params", _I64, "kept weights on a surviving path", "predictor"),
    _stat("effective_fraction", _F64, "effective_params / num_params", "predictor"),
    _stat("num_params", _I64, "kept Linear/Conv weights", "baseline"),
    _stat("macs", _I64, "multiply-accumulates of one forward pass, kept weights", "baseline"),
    _stat("density", _F64, "achieved fraction of masked weights kept"),
    _stat("layer_collapse", _I64, "1: a layer kept nothing or no path survives", "predictor"),
    _spectrum("log_lambda_max", _F64, "log of the largest eigenvalue (NaN: not converged)",
              "predictor"),
    _spectrum("topk_trace_share", _F64, "share of Tr(Π_θ) in the top-k eigenvalues (NaN: not "
              "converged)", "predictor"),
    _spectrum("effective_rank", _F64, "Tr(Π)² / ‖Π‖_F², Hutchinson estimate (NaN: no probes)",
              "predictor"),
    _spectrum("effective_rank_se", _F64, "standard error of effective_rank"),
    _spectrum("spectrum_k", _I64, "eigenvalues computed"),
    _spectrum("spectrum_converged", _I64, "1: the top eigenvalues converged"),
    _spectrum("spectrum_products", _I64, "Path Kernel-vector products spent"),
    Column("layer_density", _STR, "layer", SOURCE_TRIAL,
           'JSON {"layer.weight": fraction kept}'),
    Column("layer_trace_share", _STR, "layer", SOURCE_TRIAL,
           'JSON {"parameter": share of Tr(Π_θ)}'),
    Column("time_data_s", _F64, "timing", SOURCE_TRIAL, "seconds loading the dataset"),
    Column("time_model_s", _F64, "timing", SOURCE_TRIAL, "seconds building the model"),
    Column("time_prune_s", _F64, "timing", SOURCE_TRIAL, "seconds pruning"),
    Column("time_stats_s", _F64, "timing", SOURCE_TRIAL, "seconds measuring the statistics"),
    Column("time_train_s", _F64, "timing", SOURCE_TRIAL, "seconds training"),
    _train("test_accuracy", _F64, "test accuracy after the last epoch", higher=True),
    _train("test_loss", _F64, "test loss after the last epoch", higher=False),
    _train("best_test_accuracy", _F64, "best test accuracy over the epochs", higher=True),
    _train("train_loss_auc", _F64, "mean height of the train-loss curve", higher=False),
    _train("epochs_to_threshold", _I64, "first epoch with train loss below the threshold",
           higher=False),
    _train("final_train_loss", _F64, "train loss of the last epoch", higher=False),
    _train("train_duration_s", _F64, "seconds of training"),
    Column("train_epochs", _I64, "train", SOURCE_TRIAL, "epochs trained"),
    Column("train_loss_curve", _CURVE, "curve", SOURCE_TRAIN, "train loss per epoch"),
    Column("test_loss_curve", _CURVE, "curve", SOURCE_TRAIN, "test loss per epoch"),
    Column("test_accuracy_curve", _CURVE, "curve", SOURCE_TRAIN, "test accuracy per epoch"),
    Column("masks_path", _STR, "masks", SOURCE_DRIVER,
           "masks file, relative to the study directory"),
)

#: Columns by name.
BY_NAME: dict[str, Column] = {c.name: c for c in COLUMNS}
if len(BY_NAME) != len(COLUMNS):  # pragma: no cover - a typo in the table above
    raise RuntimeError("schema: duplicate column names")


def columns(*, group: str | None = None, source: str | None = None, role: str | None = None,
            objective: bool | None = None) -> tuple[Column, ...]:
    """The columns matching every filter given, in schema order."""
    return tuple(
        c for c in COLUMNS
        if (group is None or c.group == group)
        and (source is None or c.source == source)
        and (role is None or c.role == role)
        and (objective is None or c.objective == objective)
    )


def names(*, group: str | None = None, source: str | None = None, role: str | None = None,
          objective: bool | None = None) -> tuple[str, ...]:
    """Names of :func:`columns` with the same filters."""
    return tuple(c.name for c in columns(group=group, source=source, role=role,
                                         objective=objective))


def types(*, group: str | None = None) -> dict[str, pa.DataType]:
    """``{name: Arrow type}`` of one group (every column without ``group``), in schema order."""
    return {c.name: c.type for c in columns(group=group)}


def arrow_schema(groups: Iterable[str]) -> pa.Schema:
    """The Arrow schema of the columns in ``groups``, in schema order."""
    wanted = set(groups)
    unknown = wanted - set(GROUPS)
    if unknown:
        raise ValueError(f"groups must be among {GROUPS}, but got {sorted(unknown)}")
    return pa.schema([(c.name, c.type) for c in COLUMNS if c.group in wanted])


def param_column(name: str) -> str:
    """Column name of a parameter: ``param_<name>``."""
    return PARAM_PREFIX + name


#: Scalar statistics of ``pruners.PathKernelStats.metrics()`` (data-free, at initialization).
STAT_METRICS: tuple[str, ...] = names(group="stat")
#: Scalar columns of ``pruners.PathKernelSpectrum.metrics()``.
SPECTRUM_METRICS: tuple[str, ...] = names(group="spectrum")
#: Training metrics a study may optimize (``train.epochs > 0``).
TRAIN_METRICS: tuple[str, ...] = names(group="train", objective=True)
#: Every metric a study may optimize.
OBJECTIVE_METRICS: tuple[str, ...] = names(objective=True)
#: Timestamp columns (epoch seconds in memory, UTC timestamps on disk).
TIMESTAMP_COLUMNS: tuple[str, ...] = tuple(c.name for c in COLUMNS if c.type == TIMESTAMP)


def markdown() -> str:
    """Every column as a Markdown table (name, type, group, source, meaning), for the docs."""
    lines = ["| column | Arrow type | group | written by | meaning |", "|---|---|---|---|---|"]
    for c in COLUMNS:
        meaning = c.meaning.replace("|", "\\|")
        lines.append(f"| `{c.name}` | `{c.type}` | {c.group} | `{c.source}` | {meaning} |")
    return "\n".join(lines) + "\n"
