"""analysis.schema owns the Parquet columns: writers, readers and pruners agree with it."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pyarrow as pa
import pytest

from analysis import columns as AC
from analysis import schema as S

ROOT = Path(__file__).resolve().parents[1]


def test_importing_the_schema_needs_pyarrow_only() -> None:
    script = (
        "import sys\n"
        "import analysis.schema\n"
        "heavy = ('torch', 'ray', 'optuna', 'pandas', 'scipy', 'pruners', 'orchestrator')\n"
        "print('imported:', sorted(m for m in heavy if m in sys.modules))\n"
    )
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    done = subprocess.run([sys.executable, "-c", script], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert "imported: []" in done.stdout


def test_every_column_is_described_once_in_a_known_group() -> None:
    assert len({c.name for c in S.COLUMNS}) == len(S.COLUMNS)
    assert {c.group for c in S.COLUMNS} == set(S.GROUPS)
    assert all(c.meaning and isinstance(c.type, pa.DataType) for c in S.COLUMNS)
    assert all(c.name.startswith(S.PARAM_PREFIX) for c in S.columns(group="param"))
    # outcomes are training metrics with a direction; predictors and baselines are data-free
    assert {c.group for c in S.columns(role="outcome")} == {"train"}
    assert {c.group for c in S.columns(role="predictor")} == {"stat", "spectrum"}
    assert S.names(role="baseline") == ("num_params", "macs")
    with pytest.raises(ValueError, match="group must be one of"):
        S.Column("x", pa.int64(), "nope", S.SOURCE_TRIAL, "x")
    with pytest.raises(ValueError, match="groups must be among"):
        S.arrow_schema(["core", "nope"])


def test_orchestrator_writes_through_the_schema() -> None:
    from orchestrator import rows as R
    from orchestrator import spec as SP
    from tests.orchestrator.helpers import small_spec

    assert S.names(group="stat") == SP.STAT_METRICS
    assert S.names(group="train", objective=True) == SP.TRAIN_METRICS
    assert S.names(group="spectrum") == SP.SPECTRUM_METRICS
    assert "train_duration_s" not in SP.TRAIN_METRICS  # written, but not an objective
    assert S.types(group="core") == R.CORE_COLUMNS
    assert set(R.TRAIN_TYPES) == set(S.names(group="train") + S.names(group="curve"))
    untrained = R.declared_schema(small_spec())
    trained = R.declared_schema(small_spec(train={"epochs": 1}, save_masks=True))
    for declared in (untrained, trained):
        for field in declared:
            assert S.BY_NAME[field.name].type == field.type, field.name
    assert set(S.names()) - set(trained.names) == set(S.names(group="spectrum"))
    spectrum = R.declared_schema(small_spec(spectrum={"k": 2, "probes": 2}))
    assert set(spectrum.names) - set(untrained.names) == set(S.names(group="spectrum"))
    assert set(R.SPECTRUM_TYPES) == set(S.names(group="spectrum"))
    assert not set(untrained.names) & set(S.names(group="train") + S.names(group="masks"))


def test_analysis_reads_through_the_schema() -> None:
    assert S.names(role="predictor") == AC.DATA_FREE
    assert S.names(role="baseline") == AC.BASELINES
    assert AC.TRAINED == {"test_accuracy": True, "test_loss": False, "best_test_accuracy": True,
                          "train_loss_auc": False, "epochs_to_threshold": False,
                          "final_train_loss": False}
    assert set(AC.TRAINED) == set(S.TRAIN_METRICS)
    assert (AC.VALIDATE_TOP, AC.VALIDATE_RANDOM, AC.STATE_COMPLETE) == (
        S.PHASE_TOP, S.PHASE_RANDOM, S.STATE_COMPLETE)
    assert AC.PRUNER in S.BY_NAME and set(AC.GROUP_CANDIDATES) <= set(S.BY_NAME)
    assert {AC.TRAIN_LENGTH, AC.SEED} <= set(S.BY_NAME) and AC.PHASE_SEARCH == S.PHASE_SEARCH
    assert {"log_lambda_max", "topk_trace_share", "effective_rank"} <= set(AC.DATA_FREE)


def test_pruners_metrics_keys_are_exactly_the_schema_columns() -> None:
    """pruners cannot import analysis: this test holds their ``metrics()`` keys to the schema."""
    import torch

    import pruners
    from pruners.training import TrainConfig

    ds = pruners.load_dataset("digits", seed=0)
    torch.manual_seed(0)
    width = 1
    for size in ds.input_shape:
        width *= size
    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(width, 8), torch.nn.ReLU(),
                                torch.nn.Linear(8, ds.num_classes))
    stats = pruners.path_kernel_stats(model, input_shape=ds.input_shape)
    assert list(stats.metrics()) == list(S.names(group="stat"))
    assert list(stats.metrics()) == list(S.names(source=S.SOURCE_STATS))
    assert S.names(group="spectrum") == pruners.SPECTRUM_METRICS
    options = pruners.SpectrumOptions(k=2, probes=2)
    measured = pruners.path_kernel_stats(model, input_shape=ds.input_shape, spectrum=options)
    assert list(measured.metrics()) == list(S.names(group="stat") + S.names(group="spectrum"))
    for name, value in measured.metrics().items():  # each value fits its declared type
        pa.array([value], type=S.BY_NAME[name].type)
    _, result = pruners.train(model, None, ds, TrainConfig(epochs=1, seed=0, device="cpu"))
    assert set(result.metrics()) == set(S.names(source=S.SOURCE_TRAIN))
    for name, value in result.metrics().items():  # each value fits its declared type
        pa.array([value], type=S.BY_NAME[name].type)


def test_run_trial_writes_only_schema_columns_of_the_right_groups() -> None:
    from orchestrator.trial import make_config, resolve_params, run_trial
    from tests.orchestrator.helpers import small_spec

    spec = small_spec(train={"epochs": 1})
    config = make_config(spec, 0, 0, resolve_params({}, spec.search.fixed()))
    result = run_trial(config)
    expected = {"stat", "layer", "train", "curve"}
    assert set(result.metrics) == {c.name for c in S.COLUMNS if c.group in expected}
    assert set(result.timings) == set(S.names(group="timing"))
    layers = json.loads(result.metrics["layer_density"])
    assert layers and all(0.0 <= v <= 1.0 for v in layers.values())


def test_synthetic_rows_follow_the_schema() -> None:
    """The analysis tests' synthetic rows have the columns and types the orchestrator writes."""
    from analysis.synthetic import synthetic_rows

    table = synthetic_rows(40, seed=0, validate_k=3)
    for field in table.schema:
        assert field.name in S.BY_NAME, field.name
        if not pa.types.is_null(field.type):  # an all-None column has no type of its own
            assert field.type == S.BY_NAME[field.name].type, field.name


def test_markdown_lists_every_column_once() -> None:
    text = S.markdown()
    rows = text.strip().splitlines()[2:]
    assert [r.split("`")[1] for r in rows] == list(S.names())
    assert "| `log_path_kernel_trace` | `double` | stat | `pruners.PathKernelStats.metrics` |" in text
