"""The driver: real studies through Ray, failures, dead actors, timeouts and resume."""

from __future__ import annotations

import os
import signal
import threading
from collections import Counter
from pathlib import Path
from typing import Any

import optuna
import pytest
from optuna.trial import TrialState

from orchestrator.driver import plan_workers, run_study
from orchestrator.rows import CORE_COLUMNS, declared_schema, trial_id
from orchestrator.selection import select_validation
from orchestrator.sink import TrialSink, parquet_files, read_trials
from orchestrator.spec import STAT_METRICS
from orchestrator.studydir import JOURNAL_FILE, TRIALS_DIR, create_study_dir, open_storage
from orchestrator.trial import SleepTrial

from .helpers import MarkedSleep, search_row, small_spec, wait_for

PARAM_COLUMNS = {
    f"param_{n}"
    for n in (
        "pruner",
        "path_exponent",
        "score_exponent",
        "iterations",
        "schedule",
        "scope",
        "input",
        "density",
        "model",
        "dataset",
    )
}


def _rows(out: Path) -> list[dict[str, Any]]:
    return read_trials(out).to_pylist()  # type: ignore[no-any-return]


def _study(out: Path, name: str) -> optuna.Study:
    return optuna.load_study(study_name=name, storage=open_storage(out, None))


def _assert_each_trial_complete_once(
    rows: list[dict[str, Any]], trials: int, numbers: list[int] | None = None
) -> None:
    search = [r for r in rows if r["phase"] == "search"]
    complete = Counter(r["optuna_number"] for r in search if r["state"] == "COMPLETE")
    assert sorted(complete) == (numbers or list(range(trials))), complete
    assert set(complete.values()) == {1}
    ids = [r["trial_id"] for r in rows]
    assert len(ids) == len(set(ids))


# ----------------------------------------------------------------------------- no Ray


def test_plan_workers_one_per_gpu_or_cpu() -> None:
    spec = small_spec(workers="auto")
    assert plan_workers(spec, {"CPU": 8.0}, 100) == (8, 0.0)
    assert plan_workers(spec, {"CPU": 8.0, "GPU": 4.0}, 100) == (4, 1.0)
    assert plan_workers(small_spec(workers="auto", gpus_per_worker=0.5), {"GPU": 2.0}, 100) == (
        4,
        0.5,
    )
    assert plan_workers(spec, {"CPU": 8.0}, 3) == (3, 0.0)  # no more actors than work
    assert plan_workers(small_spec(workers=5), {"CPU": 2.0}, 100) == (5, 0.0)


def test_plan_workers_asks_for_gpus_before_gpu_nodes_join_when_device_is_cuda() -> None:
    # An autoscaling cluster shows no GPU until the waiting GPU actors make it start nodes.
    assert plan_workers(small_spec(workers=4, device="cuda"), {"CPU": 0.0}, 100) == (4, 1.0)
    assert plan_workers(small_spec(workers=4, device="auto"), {"CPU": 0.0}, 100) == (4, 0.0)


def _frozen(number: int, values: list[float]) -> optuna.trial.FrozenTrial:
    return optuna.trial.create_trial(values=values, params={}, distributions={})  # type: ignore[return-value]


def test_select_validation_top_and_seeded_random() -> None:
    trials = [_frozen(i, [v]) for i, v in enumerate([3.0, 9.0, 1.0, 9.0, 5.0, 0.0])]
    for i, t in enumerate(trials):
        t.number = i
    top, rand = select_validation(trials, ["maximize"], 3, 2, seed=0)
    assert [t.number for t in top] == [1, 3, 4]  # ties by number
    again = select_validation(trials, ["maximize"], 3, 2, seed=0)[1]
    assert [t.number for t in rand] == [t.number for t in again]
    assert not {t.number for t in rand} & {1, 3, 4} and len(rand) == 2
    low = select_validation(trials, ["minimize"], 2, 0, seed=0)[0]
    assert [t.number for t in low] == [5, 2]


def test_select_validation_ranks_several_objectives_by_pareto_front() -> None:
    # fronts (all maximized): {0, 1, 2}, then {3}, then {4}; ties within a front by number
    points = [[1.0, 1.0], [2.0, 0.0], [0.0, 2.0], [0.5, 0.5], [0.0, 0.0]]
    trials = [_frozen(i, p) for i, p in enumerate(points)]
    for i, t in enumerate(trials):
        t.number = 10 + i
    chosen = [
        [t.number for t in select_validation(trials, ["maximize"] * 2, k, 0, seed=0)[0]]
        for k in range(6)
    ]
    assert chosen == [[], [10], [10, 11], [10, 11, 12], [10, 11, 12, 13], [10, 11, 12, 13, 14]]
    # maximize the first, minimize the second: 11 dominates all; then {10, 13, 14}; then 12
    mixed = select_validation(trials, ["maximize", "minimize"], 5, 0, seed=0)[0]
    assert [t.number for t in mixed] == [11, 10, 13, 14, 12]
    equal = [_frozen(i, [1.0, 1.0]) for i in range(3)]  # equal points share the first front
    for i, t in enumerate(equal):
        t.number = i
    assert [t.number for t in select_validation(equal, ["maximize"] * 2, 2, 0, seed=0)[0]] == [0, 1]


# ----------------------------------------------------------------------------- Ray


def _run(spec: Any, out: Path, **kwargs: Any) -> Any:
    create_study_dir(out, spec, None)
    return run_study(spec, out, poll_s=0.05, start_timeout_s=60, **kwargs)


@pytest.mark.ray
@pytest.mark.slow
@pytest.mark.timeout(180)
def test_real_study_writes_one_complete_row_per_trial(ray_local: None, tmp_path: Path) -> None:
    spec = small_spec(trials=6, validate={"top_k": 1, "random_k": 1, "epochs": 1})
    out = tmp_path / "study"
    summary = _run(spec, out)
    assert summary.complete == 6 and summary.failed == 0 and summary.workers == 2
    rows = _rows(out)
    _assert_each_trial_complete_once(rows, 6)
    columns = set(read_trials(out).column_names)
    assert set(CORE_COLUMNS) | PARAM_COLUMNS | set(STAT_METRICS) <= columns
    assert set(declared_schema(spec).names) == columns
    search = [r for r in rows if r["phase"] == "search"]
    assert all(r["node_id"] and r["worker_pid"] and r["device"] == "cpu" for r in search)
    assert 1 <= len({r["worker_pid"] for r in search}) <= 2  # the 2nd actor may start late
    assert all(r["started_at"] <= r["finished_at"] for r in search)
    assert all(r["param_model"] == "fc" and r["param_dataset"] == "digits" for r in search)
    study = _study(out, spec.study)
    assert [t.state for t in study.trials] == [TrialState.COMPLETE] * 6
    for t in study.trials:  # Optuna's values are the rows' values
        row = next(r for r in search if r["optuna_number"] == t.number)
        assert t.values == [row["log_path_kernel_trace"]]
    validate = [r for r in rows if r["phase"] != "search"]
    assert sorted(r["phase"] for r in validate) == ["validate-random", "validate-top"]
    top = next(r for r in validate if r["phase"] == "validate-top")
    assert top["optuna_number"] == study.best_trial.number and top["test_accuracy"] is not None
    assert len(top["train_loss_curve"]) == 1
    assert len(parquet_files(out / TRIALS_DIR)) == 1  # compacted at the end
    # Optuna's own journal reader (what optuna-dashboard uses) opens the journal file
    from optuna.storages import JournalStorage
    from optuna.storages.journal import JournalFileBackend

    plain = JournalStorage(JournalFileBackend(str(out / JOURNAL_FILE)))
    assert len(optuna.load_study(study_name=spec.study, storage=plain).trials) == 6


@pytest.mark.ray
@pytest.mark.timeout(180)
def test_a_grid_study_runs_every_grid_point_to_the_end(ray_local: None, tmp_path: Path) -> None:
    # Optuna's GridSampler calls study.stop() in the tell of the last grid point, which raises
    # outside study.optimize: the study used to fail right there.
    spec = small_spec(
        sampler="grid",
        search={"iterations": [1, 2, 3], "schedule": ["exponential", "linear"]},
        trials=6,
    )
    out = tmp_path / "study"
    summary = _run(spec, out, trial_fn=SleepTrial(0.0))
    assert summary.complete == 6 and summary.failed == 0
    rows = [r for r in _rows(out) if r["phase"] == "search"]
    _assert_each_trial_complete_once(rows, 6)
    points = {(r["param_iterations"], r["param_schedule"]) for r in rows}
    assert points == {(i, s) for i in (1, 2, 3) for s in ("exponential", "linear")}


@pytest.mark.ray
@pytest.mark.slow
@pytest.mark.timeout(180)
def test_validation_seeds_train_each_chosen_configuration_once_per_seed(
    ray_local: None, tmp_path: Path
) -> None:
    """Each chosen configuration is re-pruned and trained on every seed's weights: the study
    seed's run reproduces its search trial, another seed's run differs; one row per run."""
    from orchestrator.status import study_status

    validate = {"top_k": 1, "random_k": 1, "epochs": 1, "seeds": [0, 3]}
    spec = small_spec(trials=4, validate=validate)
    out = tmp_path / "study"
    assert _run(spec, out).complete == 4
    rows = _rows(out)
    _assert_each_trial_complete_once(rows, 4)  # also: every trial_id once
    search = {r["optuna_number"]: r for r in rows if r["phase"] == "search"}
    checked = [r for r in rows if r["phase"] != "search"]
    assert len(checked) == 4 and all(r["state"] == "COMPLETE" for r in checked)
    for phase in ("validate-top", "validate-random"):
        runs = {r["seed"]: r for r in checked if r["phase"] == phase}
        assert set(runs) == {0, 3}
        number = runs[0]["optuna_number"]
        assert runs[3]["optuna_number"] == number
        assert runs[3]["trial_id"] == f"{phase}-{number}-s3-0"
        assert runs[0]["log_path_kernel_trace"] == search[number]["log_path_kernel_trace"]
        assert runs[3]["log_path_kernel_trace"] != runs[0]["log_path_kernel_trace"]
        assert len(runs[3]["train_loss_curve"]) == 1
    assert all(r["seed"] == 0 for r in search.values())
    lines = study_status(spec, out, None, {})
    assert "validation: validate-top 2/2, validate-random 2/2 COMPLETE" in lines


@pytest.mark.ray
@pytest.mark.slow
@pytest.mark.timeout(180)
def test_training_every_trial_optimizes_a_trained_metric(ray_local: None, tmp_path: Path) -> None:
    spec = small_spec(
        trials=2, train={"epochs": 1}, objectives=[{"metric": "test_accuracy"}], sampler="random"
    )
    out = tmp_path / "study"
    assert _run(spec, out).complete == 2
    rows = _rows(out)
    assert all(len(r["test_accuracy_curve"]) == 1 and r["train_epochs"] == 1 for r in rows)
    values = {t.number: t.values[0] for t in _study(out, spec.study).trials}
    assert values == {r["optuna_number"]: r["test_accuracy"] for r in rows}


@pytest.mark.ray
@pytest.mark.slow
@pytest.mark.timeout(120)
def test_trials_that_raise_are_fail_rows_and_the_study_goes_on(
    ray_local: None, tmp_path: Path
) -> None:
    spec = small_spec(trials=9)
    out = tmp_path / "study"
    summary = _run(spec, out, trial_fn=SleepTrial(0.0, fail_every=3))
    assert summary.complete == 6 and summary.failed == 3
    rows = _rows(out)
    failed = sorted(r["optuna_number"] for r in rows if r["state"] == "FAIL")
    assert failed == [2, 5, 8]
    assert all("FloatingPointError: synthetic failure" in r["error"] for r in rows if r["error"])
    assert all(r["attempt"] == 0 and not r["retry"] for r in rows)  # raised errors: no retry
    states = {t.number: t.state for t in _study(out, spec.study).trials}
    assert [n for n, s in states.items() if s == TrialState.FAIL] == [2, 5, 8]


@pytest.mark.ray
@pytest.mark.slow
@pytest.mark.timeout(180)
def test_killed_actor_fail_row_then_same_params_retried(ray_local: None, tmp_path: Path) -> None:
    spec = small_spec(trials=4)
    out = tmp_path / "study"
    markers = tmp_path / "markers"
    markers.mkdir()
    result: dict[str, Any] = {}
    thread = threading.Thread(
        target=lambda: result.update(
            summary=_run(spec, out, trial_fn=MarkedSleep(1.0, str(markers)))
        )
    )
    thread.start()
    try:
        assert wait_for(lambda: (markers / "1-0.pid").exists(), 60)
        os.kill(int((markers / "1-0.pid").read_text()), signal.SIGKILL)
    finally:
        thread.join(120)
    assert not thread.is_alive() and result["summary"].retried == 1
    rows = _rows(out)
    _assert_each_trial_complete_once(rows, 4)
    lost = [r for r in rows if r["state"] == "FAIL"]
    assert [(r["trial_id"], r["retry"]) for r in lost] == [("1-0", True)]
    assert "worker lost" in lost[0]["error"] and "ActorDiedError" in lost[0]["error"]
    retried = next(r for r in rows if r["trial_id"] == "1-1")
    assert retried["state"] == "COMPLETE"
    params = [c for c in retried if c.startswith("param_")]
    assert all(retried[c] == lost[0][c] for c in params)  # the same parameters
    assert retried["worker_pid"] != lost[0]["worker_pid"]  # on a replacement actor
    assert {t.state for t in _study(out, spec.study).trials} == {TrialState.COMPLETE}


@pytest.mark.ray
@pytest.mark.slow
@pytest.mark.timeout(120)
def test_trial_timeout_kills_the_actor_and_fails_without_retry(
    ray_local: None, tmp_path: Path
) -> None:
    spec = small_spec(trials=2, workers=1, trial_timeout_s=0.5)
    out = tmp_path / "study"
    summary = _run(spec, out, trial_fn=SleepTrial(30.0))
    assert summary.failed == 2 and summary.complete == 0
    rows = _rows(out)
    assert [r["state"] for r in rows] == ["FAIL", "FAIL"]
    assert all("trial_timeout_s=0.5" in r["error"] and not r["retry"] for r in rows)


@pytest.mark.ray
@pytest.mark.timeout(120)
def test_resume_finishes_what_a_dead_driver_left(ray_local: None, tmp_path: Path) -> None:
    """A dead driver left: 2 told trials, a RUNNING one whose row was written (killed before
    tell), a RUNNING one with a lost attempt, one asked but never fully sampled."""
    spec = small_spec(trials=6)
    out = tmp_path / "study"
    create_study_dir(out, spec, None)
    storage = open_storage(out, None)
    study = optuna.create_study(study_name=spec.study, storage=storage, direction="maximize")
    dists = spec.search.distributions()
    sink = TrialSink(out / TRIALS_DIR, declared_schema(spec))
    fn = SleepTrial(0.0)

    def row(trial: optuna.Trial, attempt: int, state: str, retry: bool = False) -> dict[str, Any]:
        return search_row(spec, trial, attempt, state, retry)

    for _ in range(2):
        t = study.ask(dists)
        r = row(t, 0, "COMPLETE")
        sink.append(r)
        study.tell(t, r["log_path_kernel_trace"])
    written = study.ask(dists)
    sink.append(row(written, 0, "COMPLETE"))
    lost = study.ask(dists)
    sink.append(row(lost, 0, "FAIL", retry=True))
    study.ask({"iterations": dists["iterations"]})  # params never completed
    del sink  # the driver dies: no flush, no close

    summary = run_study(spec, out, resume=True, trial_fn=fn, poll_s=0.05, start_timeout_s=60)
    rows = _rows(out)
    _assert_each_trial_complete_once(rows, 6, [0, 1, 2, 3, 5, 6])  # 4 was abandoned
    by_id = Counter(r["trial_id"] for r in rows)
    assert by_id[trial_id(written.number, 0)] == 1 and trial_id(written.number, 1) not in by_id
    assert by_id[trial_id(lost.number, 1)] == 1  # re-run as its next attempt
    states = Counter(t.state for t in _study(out, spec.study).trials)
    assert states == {TrialState.COMPLETE: 6, TrialState.FAIL: 1}  # the abandoned one
    assert summary.complete == 6
    assert (out / JOURNAL_FILE).exists()


@pytest.mark.ray
@pytest.mark.timeout(60)
def test_no_placeable_worker_fails_instead_of_hanging(ray_local: None, tmp_path: Path) -> None:
    from orchestrator.errors import SetupError

    spec = small_spec(trials=2, workers=1, cpus_per_worker=64)  # the cluster has 2 CPUs
    out = tmp_path / "study"
    create_study_dir(out, spec, None)
    with pytest.raises(SetupError, match=r"no worker ready for 2 s .*CPU=64"):
        run_study(spec, out, trial_fn=SleepTrial(0.0), poll_s=0.05, start_timeout_s=2)
