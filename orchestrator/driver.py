"""The study driver: Optuna ask/tell in this process, trials on long-lived Ray actors.

Data flow (docs/design.md, one trial end to end): the driver asks Optuna for a SynFlow-family configuration, hands it to
an actor, and when the actor answers it appends the row to the Parquet sink and tells Optuna.
Concurrency is the number of actors. Each actor holds its running trial plus ``prefetch``
queued ones, so it starts the next trial the moment one ends while the driver tells, writes and
asks in the meantime; one ``ray.wait`` with a timeout over every actor's current call drives
the loop. The search measures data-free objectives (Gebhart, Saxena, Schrater 2021, "A Unified
Paths Perspective for Pruning at Initialization"); the validation phase then trains the best
and some random configurations to test them.

Faults:

- A trial that raises: FAIL row with the error text, ``tell(FAIL)``, the study goes on.
- An actor that dies mid-trial (killed, OOM, node lost): FAIL row with the reason and
  ``retry=True``, a replacement actor, and the same Optuna trial (still RUNNING) retried as the
  next attempt, up to ``max_attempts`` attempts; then ``tell(FAIL)``. Trials that were only
  queued on the dead actor go back to the queue unchanged (they never started: no row).
- A trial longer than ``trial_timeout_s``: its actor is killed, FAIL row, no retry.
- A killed driver: ``run(resume=True)`` reads the journal and the rows; a RUNNING trial with a
  COMPLETE row is told its values, one without is re-run as its next attempt, one whose
  parameters were never fully asked is failed (marked abandoned) and replaced.

Every search trial is told exactly once, so no trial is COMPLETE twice.

Parts, each testable alone: ``scheduler`` (queue, attempts, told exactly once; neither Ray nor
Optuna), ``pool`` (the Ray actors), ``rowbuild`` (rows through ``rows``), ``search`` (Optuna's
ask, tell, best trials and validation plan) and ``recovery`` (open and resume a study). This
module is the loop that joins them.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import optuna
from optuna.trial import TrialState

from orchestrator import rows as R
from orchestrator.pool import ActorPool, Done, Lost, describe_ray_error, plan_workers
from orchestrator.progress import BaseView
from orchestrator.recovery import Recovery, abandoned, existing_rows, open_study
from orchestrator.rowbuild import RowBuilder, objective_values
from orchestrator.scheduler import Job, Scheduler
from orchestrator.search import OptunaSearch
from orchestrator.sink import TrialSink, read_trials
from orchestrator.spec import StudySpec
from orchestrator.studydir import TRIALS_DIR, open_storage, pathsweep_version, study_lock
from orchestrator.trial import TrialFn, run_trial

__all__ = [
    "DriverTimes",
    "Job",
    "StudyDriver",
    "StudySummary",
    "describe_ray_error",
    "most_frequent_error",
    "plan_workers",
    "run_study",
]


@dataclass
class DriverTimes:
    """Seconds the driver spent per activity (for the orchestration benchmark)."""

    ask: float = 0.0
    tell: float = 0.0
    sink: float = 0.0
    submit: float = 0.0
    wait: float = 0.0


@dataclass
class StudySummary:
    """The outcome of a run (or resume) of a study."""

    study: str
    out: Path
    workers: int
    complete: int
    failed: int
    attempts: int
    retried: int
    validated: int
    wall_s: float
    best: list[dict[str, Any]] = field(default_factory=list)
    times: DriverTimes = field(default_factory=DriverTimes)
    top_error: tuple[str, int, int] | None = (
        None  # (error, its count, FAIL rows) when none completed
    )


def _torch_version() -> str:
    import torch

    return str(torch.__version__)


class StudyDriver:
    """Runs one study to completion on the connected Ray cluster.

    The loop that joins the parts: :class:`~orchestrator.search.OptunaSearch` (ask, tell,
    validation plan), :class:`~orchestrator.recovery.Recovery` (resume),
    :class:`~orchestrator.scheduler.Scheduler` (queue, attempts, told exactly once),
    :class:`~orchestrator.pool.ActorPool` (Ray actors) and
    :class:`~orchestrator.rowbuild.RowBuilder` (rows, appended to the sink before each tell).

    Args:
        spec: the validated study spec.
        out: the study directory (already holding ``spec.yaml`` and ``run.json``).
        storage: an Optuna storage URL; None = the journal file ``OUT/optuna.journal``.
        trial_fn: the trial function run by the actors (``run_trial``; stand-ins for benchmarks).
        view: the live view (a quiet one when None).
        poll_s: longest single ``ray.wait``.
        start_timeout_s: give up when no actor has been ready for this many seconds.
        sink_options: keyword arguments of :class:`TrialSink` (flush sizes).
    """

    def __init__(
        self,
        spec: StudySpec,
        out: str | Path,
        *,
        storage: str | None = None,
        trial_fn: TrialFn = run_trial,
        view: BaseView | None = None,
        poll_s: float = 0.2,
        start_timeout_s: float = 300.0,
        sink_options: Mapping[str, Any] | None = None,
    ) -> None:
        self.spec = spec
        self.out = Path(out)
        self.view = view or BaseView()
        self.times = DriverTimes()
        self._storage = open_storage(self.out, storage, repair=True)
        self._sink_options = dict(sink_options or {})
        versions = {"pathsweep_version": pathsweep_version(), "torch_version": _torch_version()}
        self._rows = RowBuilder.for_spec(spec, self.out, versions)
        names = list(spec.search.distributions())
        self.pool = ActorPool(spec, trial_fn, self.view, names, poll_s, start_timeout_s, self.times)

    def run(self, resume: bool = False) -> StudySummary:
        """Run the study (or finish it, with ``resume=True``) and compact its rows.

        Raises:
            SetupError: the study exists already (fresh run) or is missing (resume), or no
                actor could start.
        """
        began = time.monotonic()
        study = open_study(self._storage, self.spec, resume)
        search = OptunaSearch(
            study, self.spec, self.view, self.times, lambda: existing_rows(self.out, self.spec)
        )
        v = self.spec.validate
        planned = (v.top_k + v.random_k) * v.runs_per_config()
        sched = Scheduler(search, self.spec.trials, self.spec.max_attempts, planned)
        self._sink = TrialSink(
            self.out / TRIALS_DIR, R.declared_schema(self.spec), **self._sink_options
        )
        try:
            Recovery(study, self.spec, self.out, search.job, self.view.message).recover(sched)
            self.view.set_phase("search", self.spec.trials, sched.finished)
            if not sched.done(self.pool.busy):
                self.view.start()
                self.pool.start_for(sched.work_left())
            while not sched.done(self.pool.busy):
                self.pool.fill(sched.next_job)
                for event in self.pool.wait():
                    if isinstance(event, Done):
                        self._on_done(sched, search, event)
                    else:
                        self._on_lost(sched, search, event)
                self.pool.check_deadlines()
                self.pool.check_workers()
                self._sink.maybe_flush()
        finally:
            self.view.stop()
            self.pool.close()
            self._sink.close()
        self._sink.compact()
        return self._summary(study, search, sched, time.monotonic() - began)

    def _on_done(self, sched: Scheduler, search: OptunaSearch, event: Done) -> None:
        """Row first, then the tell: a crash between them is resumed from the row."""
        job, outcome = event.job, event.outcome
        values: list[float] = []
        error = outcome.error
        if outcome.result is not None and job.phase == R.PHASE_SEARCH:
            values, error = objective_values(outcome.result.metrics, self.spec.metrics)
        state = "FAIL" if error else "COMPLETE"
        times = (outcome.started_at, outcome.finished_at)
        info = event.slot.info
        row = self._rows.row(job, state, info, times, error, result=outcome.result)
        self._append(row)
        sched.ended(job, values if state == "COMPLETE" else None)
        self.view.trial_finished(row, True, search.best_text())

    def _on_lost(self, sched: Scheduler, search: OptunaSearch, event: Lost) -> None:
        """FAIL row for the dead actor's current job, then retry / tell, then a new actor."""
        job, slot = event.task.job, event.slot
        retry = sched.will_retry(job, event.timed_out)
        times = (event.task.started, time.time())
        row = self._rows.row(job, "FAIL", slot.info, times, event.reason, retry)
        self._append(row)
        self.view.message(
            f"worker {slot.index} lost during {row['trial_id']}: {event.reason[:200]}"
        )
        sched.lost(job, event.waiting, event.timed_out)
        self.view.trial_finished(row, not retry, search.best_text())
        self.pool.replace(slot)

    def _append(self, row: dict[str, Any]) -> None:
        start = time.perf_counter()
        self._sink.append(row)
        self.times.sink += time.perf_counter() - start

    def _summary(
        self, study: optuna.Study, search: OptunaSearch, sched: Scheduler, wall: float
    ) -> StudySummary:
        trials = study.get_trials(deepcopy=False)
        dropped = abandoned(study)
        complete = sum(t.state == TrialState.COMPLETE for t in trials)
        failed = sum(t.state == TrialState.FAIL and t.number not in dropped for t in trials)
        top_error = most_frequent_error(self.out) if complete == 0 else None
        return StudySummary(
            study=self.spec.study,
            out=self.out,
            workers=len(self.pool.slots),
            complete=complete,
            failed=failed,
            attempts=sched.attempts,
            retried=sched.retried,
            validated=sched.validated,
            wall_s=wall,
            best=search.best(),
            times=self.times,
            top_error=top_error,
        )


def most_frequent_error(out: str | Path) -> tuple[str, int, int] | None:
    """The most frequent error of the FAIL rows of a study: ``(error, count, FAIL rows)``.

    Ties go to the error seen first. None when no row failed with an error.
    """
    table = read_trials(Path(out) / TRIALS_DIR)
    if not table.num_rows or "error" not in table.column_names:
        return None
    errors = [e for e in table.column("error").to_pylist() if e]
    if not errors:
        return None
    error, count = Counter(errors).most_common(1)[0]
    return error, count, len(errors)


def run_study(
    spec: StudySpec,
    out: str | Path,
    *,
    resume: bool = False,
    storage: str | None = None,
    trial_fn: TrialFn = run_trial,
    view: BaseView | None = None,
    **options: Any,
) -> StudySummary:
    """Run (or resume) a study on the connected Ray cluster; see :class:`StudyDriver`.

    Args:
        spec: the validated spec.
        out: the study directory (see ``orchestrator.studydir``).
        resume: finish a study whose driver stopped.
        storage: Optuna storage URL (default: the journal file in ``out``).
        trial_fn: what the actors run per trial (default :func:`orchestrator.trial.run_trial`).
        view: live view.
        **options: further :class:`StudyDriver` arguments (``poll_s``, ``start_timeout_s``,
            ``sink_options``).

    Raises:
        SetupError: another process holds the study directory's lock (``studydir.study_lock``),
            or its journal is damaged beyond repair, or a Parquet file is unreadable (each
            message names the file or the holder and says what to do).
    """
    with study_lock(Path(out)):
        driver = StudyDriver(spec, out, storage=storage, trial_fn=trial_fn, view=view, **options)
        return driver.run(resume=resume)
