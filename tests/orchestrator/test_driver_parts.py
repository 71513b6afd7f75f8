"""The driver's parts alone: the row builder, Optuna recovery (no Ray), the actor pool (Ray)."""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import optuna
import pytest
from optuna.trial import TrialState

from orchestrator.pool import ActorPool, Done, Lost
from orchestrator.progress import BaseView
from orchestrator.recovery import ABANDONED, Recovery, abandoned
from orchestrator.rowbuild import RowBuilder, objective_values
from orchestrator.rows import CORE_COLUMNS, declared_schema, rows_to_table, trial_id
from orchestrator.scheduler import Job, Scheduler
from orchestrator.search import OptunaSearch
from orchestrator.sink import TrialSink
from orchestrator.studydir import TRIALS_DIR, create_study_dir, open_storage
from orchestrator.trial import SleepTrial, make_config, resolve_params
from orchestrator.worker import WorkerInfo

from .helpers import search_row, small_spec

INFO = WorkerInfo(node_id="n1", gpu_ids="", pid=42, device="cpu", hostname="h")


@dataclass(frozen=True)
class FirstFast:
    """Trial 0 returns at once; every later one sleeps (still running when its actor is killed)."""

    seconds: float = 30.0

    def __call__(self, config: Any) -> Any:
        return SleepTrial(0.0 if config.number == 0 else self.seconds)(config)


def test_a_built_row_has_every_core_column_and_fits_the_declared_schema(tmp_path: Path) -> None:
    spec = small_spec()
    builder = RowBuilder.for_spec(spec, tmp_path, {"pathsweep_version": "v", "torch_version": "t"})
    params = resolve_params(
        {"path_exponent": 1.0, "score_exponent": 1.0, "iterations": 2, "schedule": "linear"},
        spec.search.fixed(),
    )
    config = make_config(spec, 3, 1, params)
    job = Job(3, 1, "search", params, config, 3)
    result = SleepTrial(0.0)(config)
    row = builder.row(job, "COMPLETE", INFO, (10.0, 12.5), result=result)
    assert set(CORE_COLUMNS) <= set(row)
    assert row["trial_id"] == trial_id(3, 1) == "3-1" and row["duration_s"] == 2.5
    assert (row["node_id"], row["worker_pid"], row["param_model"]) == ("n1", 42, "fc")
    assert row["log_path_kernel_trace"] == result.metrics["log_path_kernel_trace"]
    schema = declared_schema(spec)
    _, written = rows_to_table([row], schema)
    assert written.names == schema.names  # no column outside the declared schema
    lost = builder.row(job, "FAIL", None, (None, 5.0), "worker lost", retry=True)
    assert lost["duration_s"] is None and lost["worker_pid"] is None and lost["retry"]


def test_objective_values_refuse_missing_and_nan() -> None:
    assert objective_values({"a": 1, "b": 2.5}, ["a", "b"]) == ([1.0, 2.5], None)
    assert objective_values({"a": 1}, ["a", "b"]) == ([], "objective b is missing")
    assert objective_values({"a": float("nan")}, ["a"]) == ([], "objective a is NaN")


class LoggingSearch:
    """Records the tells the recovery makes through the scheduler."""

    def __init__(self, search: OptunaSearch) -> None:
        self.inner = search
        self.told: list[tuple[int, list[float] | None]] = []

    def ask(self) -> Job:
        raise AssertionError("recovery never asks")

    def tell(self, trial: Any, number: int, values: Sequence[float] | None) -> None:
        self.told.append((number, None if values is None else list(values)))
        self.inner.tell(trial, number, values)

    def plan_validation(self) -> list[Job]:
        return []


def test_recovery_tells_requeues_counts_and_abandons_without_ray(tmp_path: Path) -> None:
    spec = small_spec(trials=6, max_attempts=2)
    out = tmp_path / "study"
    create_study_dir(out, spec, None)
    study = optuna.create_study(
        study_name=spec.study, storage=open_storage(out, None), direction="maximize"
    )
    dists = spec.search.distributions()

    def row(trial: optuna.Trial, attempt: int, state: str, retry: bool = False) -> dict[str, Any]:
        return search_row(spec, trial, attempt, state, retry)

    with TrialSink(out / TRIALS_DIR, declared_schema(spec)) as sink:
        told = study.ask(dists)  # 0: told by the dead driver
        sink.append(r := row(told, 0, "COMPLETE"))
        study.tell(told, r["log_path_kernel_trace"])
        written = study.ask(dists)  # 1: row written, never told
        sink.append(w := row(written, 0, "COMPLETE"))
        lost = study.ask(dists)  # 2: lost once, to re-run as attempt 1
        sink.append(row(lost, 0, "FAIL", retry=True))
        spent = study.ask(dists)  # 3: lost on its last attempt
        sink.append(row(spent, 0, "FAIL", retry=True))
        sink.append(row(spent, 1, "FAIL", retry=True))
        study.ask({"iterations": dists["iterations"]})  # 4: never fully asked
    clock = SimpleNamespace(ask=0.0, tell=0.0)
    search = OptunaSearch(study, spec, BaseView(), clock, dict)
    logged = LoggingSearch(search)
    sched = Scheduler(logged, spec.trials, spec.max_attempts)
    Recovery(study, spec, out, search.job, lambda _: None).recover(sched)

    assert logged.told == [(1, [w["log_path_kernel_trace"]]), (3, None)]
    assert sched.finished == 3 and sched.live == 1  # 0, 1, 3 told; 2 queued; 4 not counted
    [job] = sched.queue
    assert (job.number, job.attempt, job.config.attempt) == (2, 1, 1)
    assert job.params == resolve_params(lost.params, spec.search.fixed())
    states = {t.number: t.state for t in study.get_trials(deepcopy=False)}
    assert states == {
        0: TrialState.COMPLETE,
        1: TrialState.COMPLETE,
        2: TrialState.RUNNING,
        3: TrialState.FAIL,
        4: TrialState.FAIL,
    }
    assert abandoned(study) == {4} and study.user_attrs[ABANDONED] == [4]  # public API only
    best = max([(r, 0), (w, 1)], key=lambda x: x[0]["log_path_kernel_trace"])  # first of ties
    assert search.best() == [{"number": best[1], "values": [best[0]["log_path_kernel_trace"]]}]
    again = Scheduler(LoggingSearch(search), spec.trials, spec.max_attempts)
    Recovery(study, spec, out, search.job, lambda _: None).recover(again)
    assert again.finished == 3 and [j.number for j in again.queue] == [2]  # idempotent


def _pool(spec: Any, fn: Any) -> ActorPool:
    clock = SimpleNamespace(wait=0.0, submit=0.0)
    names = list(spec.search.distributions())
    return ActorPool(spec, fn, BaseView(), names, poll_s=0.05, start_timeout_s=60, clock=clock)


def _ready(pool: ActorPool) -> None:
    deadline = time.monotonic() + 60
    while pool.slots[0].info is None:
        assert time.monotonic() < deadline, "the actor never became ready"
        assert not pool.wait()  # a ready call is no job event
        pool.check_workers()


def _events(pool: ActorPool, until: float = 60.0) -> list[Done | Lost]:
    deadline = time.monotonic() + until
    while time.monotonic() < deadline:
        pool.check_deadlines()
        events = pool.wait()
        if events:
            return events
    raise AssertionError("no event")


def _jobs(spec: Any, count: int) -> list[Job]:
    params = resolve_params(
        {"path_exponent": 1.0, "score_exponent": 1.0, "iterations": 1, "schedule": "linear"},
        spec.search.fixed(),
    )
    return [Job(n, 0, "search", params, make_config(spec, n, 0, params), n) for n in range(count)]


@pytest.mark.ray
@pytest.mark.timeout(120)
def test_actor_pool_reports_done_lost_with_its_waiting_jobs_and_timeouts(
    ray_local: None,
) -> None:
    spec = small_spec(workers=1, prefetch=2)  # the default timeout: job 1 is lost, not timed out
    pool = _pool(spec, FirstFast())
    pool.start(1, 0.0)
    try:
        _ready(pool)
        jobs = iter(_jobs(spec, 3))
        pool.fill(lambda: next(jobs, None))
        assert [t.job.number for t in pool.slots[0].tasks] == [0, 1, 2]  # 1 + prefetch
        done = _events(pool)
        assert isinstance(done[0], Done) and done[0].job.number == 0
        assert done[0].outcome.result is not None and done[0].outcome.error is None
        slot = pool.slots[0]
        pool.kill(slot)  # the actor dies with job 1 running and job 2 waiting
        [lost] = _events(pool)
        assert isinstance(lost, Lost) and not lost.timed_out
        assert lost.task.job.number == 1 and [j.number for j in lost.waiting] == [2]
        assert lost.reason.startswith("worker lost: ") and lost.slot.info is not None
        pool.replace(slot)
        assert not slot.tasks and slot.info is None  # a fresh actor, starting
    finally:
        pool.close()

    spec = small_spec(workers=1, prefetch=2, trial_timeout_s=1.0)
    slow = _pool(spec, SleepTrial(30.0))
    slow.start(1, 0.0)
    try:
        _ready(slow)
        jobs = iter(_jobs(spec, 1))
        slow.fill(lambda: next(jobs, None))
        [lost] = _events(slow)
        assert isinstance(lost, Lost) and lost.timed_out
        assert lost.reason == "timeout: the trial exceeded trial_timeout_s=1.0"
    finally:
        slow.close()


def test_optuna_search_best_is_optunas_best_and_the_view_text_follows_it(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import orchestrator.search

    monkeypatch.setattr(orchestrator.search, "BEST_TEXT_COST_FACTOR", 0.0)  # no lag
    two = [{"metric": "log_path_kernel_trace"}, {"metric": "macs", "direction": "minimize"}]
    for objectives, tells, best, text in (
        (None, [[1.0], [3.0], [3.0], [2.0]], [(1, [3.0])], "log_path_kernel_trace=3 (#1)"),
        (
            two,
            [[1.0, 0.5], [2.0, 0.9], [0.5, 0.6], [2.0, 0.9]],  # 2 is dominated by 0
            [(0, [1.0, 0.5]), (1, [2.0, 0.9]), (3, [2.0, 0.9])],
            "Pareto front of 3 trials",
        ),
    ):
        spec = small_spec(**({"objectives": objectives} if objectives else {}))
        study = optuna.create_study(directions=spec.directions)  # type: ignore[arg-type]
        search = OptunaSearch(study, spec, BaseView(), SimpleNamespace(ask=0.0, tell=0.0), dict)
        assert search.best() == [] and search.best_text() == "-"
        for values in tells:
            job = search.ask()
            search.tell(job.trial, job.number, values)
            assert search.best_text() != "-"
        failed = search.ask()
        search.tell(failed.trial, failed.number, None)
        assert [(b["number"], b["values"]) for b in search.best()] == best
        assert search.best_text() == text


def test_abandoned_reads_the_study_mark_and_older_trial_marks() -> None:
    study = optuna.create_study()
    study.add_trial(optuna.trial.create_trial(state=TrialState.FAIL, user_attrs={ABANDONED: True}))
    study.add_trial(optuna.trial.create_trial(state=TrialState.FAIL))
    study.add_trial(optuna.trial.create_trial(state=TrialState.FAIL))
    assert abandoned(study) == {0}
    study.set_user_attr(ABANDONED, [2])
    assert abandoned(study) == {0, 2}


def test_the_best_text_lags_rather_than_cost_more_than_its_share(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import orchestrator.search

    spec = small_spec()
    search = OptunaSearch(
        optuna.create_study(direction="maximize"),
        spec,
        BaseView(),
        SimpleNamespace(ask=0.0, tell=0.0),
        dict,
    )
    monkeypatch.setattr(orchestrator.search, "BEST_TEXT_COST_FACTOR", 1e9)
    job = search.ask()
    search.tell(job.trial, job.number, [1.0])
    assert search.best_text() == "log_path_kernel_trace=1 (#0)"  # the first is computed
    job = search.ask()
    search.tell(job.trial, job.number, [2.0])
    assert search.best_text() == "log_path_kernel_trace=1 (#0)"  # too soon: the old text
    monkeypatch.setattr(orchestrator.search, "BEST_TEXT_COST_FACTOR", 0.0)
    assert search.best_text() == "log_path_kernel_trace=2 (#1)"  # the stale text is redone
    assert search.best() == [{"number": 1, "values": [2.0]}]  # the summary never lags


def test_validation_runs_each_chosen_configuration_once_per_seed_and_resume_skips_done_ones(
    tmp_path: Path,
) -> None:
    """``validate.seeds``: one job per chosen configuration and seed, each with its own
    ``config.seed``, row seed and ``trial_id``; rows on disk (keyed by phase, number, seed)
    decide what a resume still runs."""
    from orchestrator.recovery import Existing

    spec = small_spec(validate={"top_k": 1, "random_k": 1, "epochs": 2, "seeds": [0, 5]})
    study = optuna.create_study(direction="maximize")
    existing: dict[tuple[str, int, int], Existing] = {}
    search = OptunaSearch(
        study, spec, BaseView(), SimpleNamespace(ask=0.0, tell=0.0), lambda: existing
    )
    for value in (1.0, 4.0, 2.0, 3.0):
        job = search.ask()
        search.tell(job.trial, job.number, [value])
    jobs = search.plan_validation()
    top = [j for j in jobs if j.phase == "validate-top"]
    rand = [j for j in jobs if j.phase == "validate-random"]
    assert [(j.number, j.seed, j.config.seed) for j in top] == [(1, 0, 0), (1, 5, 5)]
    assert len(rand) == 2 and {j.seed for j in rand} == {0, 5} and rand[0].number != 1
    assert rand[0].number == rand[1].number and rand[0].params == rand[1].params
    assert all(j.config.train_epochs == 2 and j.attempt == 0 for j in jobs)
    builder = RowBuilder.for_spec(spec, tmp_path, {"pathsweep_version": "v", "torch_version": "t"})
    rows = [builder.row(j, "COMPLETE", INFO, (1.0, 2.0)) for j in jobs]
    assert [r["seed"] for r in rows] == [0, 5, 0, 5]
    assert rows[1]["trial_id"] == "validate-top-1-s5-0"
    assert len({r["trial_id"] for r in rows}) == 4
    # a resume: top/seed 0 is done, random/seed 5 failed for good, top/seed 5 lost an attempt
    existing[("validate-top", 1, 0)] = Existing([0], complete={"state": "COMPLETE"})
    existing[("validate-random", rand[1].number, 5)] = Existing([0], final_fail=True)
    existing[("validate-top", 1, 5)] = Existing([0, 1])
    again = search.plan_validation()
    assert [(j.phase, j.seed, j.attempt) for j in again] == [
        ("validate-top", 5, 2),
        ("validate-random", 0, 0),
    ]
    plain = OptunaSearch(
        study, small_spec(validate={"top_k": 1}), BaseView(), SimpleNamespace(), dict
    )
    (only,) = plain.plan_validation()
    assert only.seed is None and only.config.seed == 0
    assert builder.row(only, "COMPLETE", INFO, (1.0, 2.0))["trial_id"] == "validate-top-1-0"


def test_status_reads_the_validation_seeds_from_the_written_spec(tmp_path: Path) -> None:
    from orchestrator.spec import dump_spec
    from orchestrator.status import StatusSpec
    from orchestrator.studydir import SPEC_FILE

    spec = small_spec(validate={"top_k": 2, "random_k": 1, "seeds": [1, 2, 3]})
    (tmp_path / SPEC_FILE).write_text(dump_spec(spec), encoding="utf-8")
    assert StatusSpec.read(tmp_path) == StatusSpec.of(spec)
    assert StatusSpec.of(spec).runs_per_config == 3
    (tmp_path / SPEC_FILE).write_text(dump_spec(small_spec(validate={"top_k": 2})), "utf-8")
    assert StatusSpec.read(tmp_path).runs_per_config == 1
