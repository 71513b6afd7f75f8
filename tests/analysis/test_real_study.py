"""Analysis reads what the orchestrator writes: one real study, every public analysis function.

The study runs through the orchestrator on Ray (digits, a tiny fc net, 6 trials of one training
epoch, a validation pass of 1 top + 1 random); its Parquet and spec feed every name of
``analysis.__all__``, the report and the ``pathsweep analyze`` command. The values are checked
against what the rows say (brute-force Pareto front, scipy on the rows by hand), not against
numbers copied from a run.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from scipy import stats

import analysis
import analysis.columns
from analysis import schema as S
from analysis.report import build_report
from tests.conftest import start_local_ray

pytestmark = [pytest.mark.ray, pytest.mark.slow]

TRIALS = 6
OBJECTIVES = [("test_accuracy", "maximize"), ("log_path_kernel_trace", "maximize")]


@pytest.fixture(scope="module")
def study(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The study directory of one real run (spec.yaml, optuna.journal, trials/*.parquet)."""
    from orchestrator.driver import run_study
    from orchestrator.studydir import create_study_dir
    from tests.orchestrator.helpers import small_spec

    start_local_ray()
    spec = small_spec(
        study="analysis-e2e",
        trials=TRIALS,
        train={"epochs": 1},
        validate={"top_k": 1, "random_k": 1, "epochs": 1},
        objectives=[{"metric": m, "direction": d} for m, d in OBJECTIVES],
    )
    out = tmp_path_factory.mktemp("real") / "study"
    create_study_dir(out, spec, None)
    summary = run_study(spec, out, poll_s=0.05, start_timeout_s=60)
    assert summary.complete == TRIALS and summary.failed == 0
    return out


@pytest.fixture(scope="module")
def rows(study: Path) -> pd.DataFrame:
    return analysis.load(study)


def _search(df: pd.DataFrame) -> pd.DataFrame:
    return df[(df["phase"] == S.PHASE_SEARCH) & (df["state"] == S.STATE_COMPLETE)]


def _trained(df: pd.DataFrame) -> list[str]:
    """Trained metrics with a value (``epochs_to_threshold`` is None until the loss is low)."""
    return [m for m in analysis.columns.TRAINED if df[m].notna().any()]


@pytest.mark.timeout(300)
def test_load_reads_every_row_with_schema_columns(study: Path, rows: pd.DataFrame) -> None:
    from orchestrator.sink import read_trials

    files = analysis.parquet_files(study)
    assert len(files) == 1 and files[0].suffix == ".parquet"  # compacted at the end
    assert len(rows) == read_trials(study).num_rows == TRIALS + 2
    assert sorted(rows["phase"]) == sorted([S.PHASE_SEARCH] * TRIALS
                                           + [S.PHASE_TOP, S.PHASE_RANDOM])
    assert set(rows["study"]) == {"analysis-e2e"}
    unknown = set(rows.columns) - set(S.BY_NAME)
    assert unknown <= {"study"}, unknown  # analysis adds nothing the schema does not know
    for name in (*S.names(group="stat"), "test_accuracy", "test_loss", "final_train_loss"):
        assert rows[name].notna().all(), name


@pytest.mark.timeout(300)
def test_specs_and_objectives_come_from_the_study(study: Path) -> None:
    specs = analysis.load_specs(study)
    assert set(specs) == {"analysis-e2e"}
    assert analysis.objectives_from_spec(specs["analysis-e2e"]) == OBJECTIVES


@pytest.mark.timeout(300)
def test_pareto_front_is_the_brute_force_front(rows: pd.DataFrame) -> None:
    front = analysis.pareto_front(rows, OBJECTIVES)
    done = rows[rows["state"] == S.STATE_COMPLETE]
    values = done[[m for m, _ in OBJECTIVES]].to_numpy(dtype=float)

    def dominated(i: int) -> bool:
        return any((values[j] >= values[i]).all() and (values[j] > values[i]).any()
                   for j in range(len(values)))

    expected = {done["trial_id"].iloc[i] for i in range(len(values)) if not dominated(i)}
    assert set(front["trial_id"]) == expected and expected
    assert list(front["test_accuracy"]) == sorted(front["test_accuracy"], reverse=True)


@pytest.mark.timeout(300)
def test_random_score_is_a_seeded_uniform_per_trial(rows: pd.DataFrame) -> None:
    a = analysis.with_random_score(rows, seed=1)["random_score"]
    b = analysis.with_random_score(rows.iloc[::-1], seed=1)["random_score"]
    assert ((a >= 0) & (a < 1)).all() and a.nunique() == len(rows)
    pd.testing.assert_series_equal(a, b.loc[a.index])  # keyed by trial, not by position


@pytest.mark.timeout(300)
def test_correlations_use_the_trained_search_rows(rows: pd.DataFrame) -> None:
    corr = analysis.rank_correlations(rows, n_resamples=50, seed=0)
    search = _search(rows)
    # search and validation are separate experiments; the validation top-k is never used
    assert set(corr["experiment"]) == {"search", "validation"}
    validation = corr[corr["experiment"] == "validation"]
    assert set(validation["n"]) == {1}  # the random-k row only, so no number is claimed
    assert validation["spearman"].isna().all()
    corr = corr[corr["experiment"] == S.PHASE_SEARCH]
    row = corr[(corr["predictor"] == "log_path_kernel_trace")
               & (corr["target"] == "test_accuracy")].iloc[0]
    assert row["n"] == TRIALS == len(search)
    rho = stats.spearmanr(search["log_path_kernel_trace"], search["test_accuracy"]).statistic
    if math.isnan(rho):
        assert math.isnan(row["spearman"]) and row["note"]
    else:
        assert row["spearman"] == pytest.approx(rho)
        assert row["spearman_low"] <= row["spearman"] <= row["spearman_high"]
    assert set(corr["target"]) == set(_trained(rows))
    assert {"num_params", "macs", "random_score"} <= set(corr["predictor"])


@pytest.mark.timeout(300)
def test_validation_rows_are_recognized(rows: pd.DataFrame) -> None:
    hit = analysis.validation_hit_rate(rows, targets=["test_accuracy"], n_resamples=50)
    assert len(hit) == 1
    result = hit.iloc[0]
    top = rows.loc[rows["phase"] == S.PHASE_TOP, "test_accuracy"].item()
    rand = rows.loc[rows["phase"] == S.PHASE_RANDOM, "test_accuracy"].item()
    assert (result["n_top"], result["n_random"]) == (1, 1)
    assert result["top_mean"] == pytest.approx(top) and result["random_mean"] == pytest.approx(rand)
    assert result["difference"] == pytest.approx(top - rand)
    assert not result["beats_random"]  # one row each: no interval, so no claim


@pytest.mark.timeout(300)
def test_method_tables_average_the_rows(rows: pd.DataFrame) -> None:
    summary = analysis.method_summary(rows, "test_accuracy")
    assert summary["n"].sum() == len(rows)  # every finished row counted once
    assert summary["density"].tolist() == [pytest.approx(0.1)] * len(summary)
    weighted = (summary["mean"] * summary["n"]).sum() / summary["n"].sum()
    assert weighted == pytest.approx(rows["test_accuracy"].mean())
    table = analysis.method_table(summary)
    assert table.shape[1] == 1 and "0.1 (10×)" in table.columns[0]


@pytest.mark.timeout(300)
def test_layer_densities_and_collapse(rows: pd.DataFrame) -> None:
    first = analysis.parse_layer_density(rows["layer_density"].iloc[0])
    assert first == json.loads(rows["layer_density"].iloc[0])
    assert first and all(0.0 <= v <= 1.0 for v in first.values())
    table = analysis.layer_density_table(rows)
    assert list(table.columns) == list(first) and len(table) == 1  # one pruner, one density
    # the search rows only: validation rows re-run searched configurations (counted once)
    search = _search(rows)["layer_density"]
    layers = pd.DataFrame([analysis.parse_layer_density(v) for v in search])
    np.testing.assert_allclose(table.to_numpy()[0], layers.mean().to_numpy())
    critical = analysis.critical_compression(rows).set_index("experiment")
    assert set(critical.index) == {"search", "validation"}  # kept apart, one pruner each
    for experiment, phases in (("search", [S.PHASE_SEARCH]),
                               ("validation", [S.PHASE_TOP, S.PHASE_RANDOM])):
        part = rows[rows["phase"].isin(phases)]
        flags = part["layer_collapse"].astype(int)
        assert critical.loc[experiment, "n"] == len(part)
        assert critical.loc[experiment, "collapsed_rows"] == flags.sum()
        assert bool(critical.loc[experiment, "censored"]) == (int(flags.sum()) == 0)


@pytest.mark.timeout(300)
def test_param_importances_name_the_searched_params(study: Path, rows: pd.DataFrame) -> None:
    spec = analysis.load_specs(study)["analysis-e2e"]
    imp = analysis.param_importances(rows, ["test_accuracy"], spec=spec,
                                     journal=study / "optuna.journal", study_name="analysis-e2e")
    assert set(imp["target"]) == {"test_accuracy"}
    assert set(imp["param"]) <= {"path_exponent", "score_exponent", "iterations", "schedule"}
    assert imp["importance"].sum() == pytest.approx(1.0)


@pytest.mark.timeout(300)
def test_analyze_report_and_cli(study: Path, rows: pd.DataFrame, tmp_path: Path,
                                capsys: pytest.CaptureFixture[str]) -> None:
    from orchestrator.cli import main as pathsweep

    result = analysis.analyze(rows, analysis.load_specs(study), n_resamples=50)
    assert isinstance(result, analysis.Analysis)
    assert result.trained == _trained(rows)
    assert not any("No trained metrics" in m or "No validation" in m for m in result.messages)
    assert set(result.pareto) == {"analysis-e2e"} and result.objectives["analysis-e2e"] == \
        OBJECTIVES
    assert not result.correlations.empty and not result.validation.empty
    assert not result.importances.empty and not result.layers.empty

    report = build_report([study], tmp_path / "report", figures=False, n_resamples=50)
    text = report.read_text()
    for heading in ("## Do data-free statistics predict training?",
                    "## Validation: the objective's top-k against random-k",
                    "## Method tables", "## Layer collapse", "## Optuna views"):
        assert heading in text
    tables = report.parent / "tables"
    correlations = pd.read_csv(tables / "correlations.csv")
    assert "log_path_kernel_trace" in set(correlations["predictor"])
    assert (tables / "validation.csv").is_file()

    out = tmp_path / "cli-report"
    assert pathsweep(["analyze", str(study), "--report", str(out), "--resamples", "20",
                      "--no-figures"]) == 0
    printed = capsys.readouterr().out
    assert f"{TRIALS + 2} trial rows" in printed and "analysis-e2e" in printed
    assert (out / "report.md").is_file() and (out / "tables" / "correlations.csv").is_file()


def test_every_public_name_is_exercised_here() -> None:
    """A new public analysis function needs a check on real rows in this module."""
    source = Path(__file__).read_text()
    assert sorted(analysis.__all__) == sorted(analysis._LAZY)  # lazy imports cover __all__
    untested = [n for n in analysis.__all__ if f"analysis.{n}(" not in source
                and f"analysis.{n})" not in source]
    assert not untested, untested
