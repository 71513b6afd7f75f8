"""The study driver: Optuna ask/tell in this process, trials on long-lived Ray actors.

Data flow (DESIGN.md): the driver asks Optuna for a SynFlow-family configuration, hands it to
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
"""

from __future__ import annotations

import contextlib
import math
import time
from collections import Counter, deque
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import optuna
from optuna.trial import TrialState

from orchestrator import rows as R
from orchestrator.errors import SetupError, plain_text
from orchestrator.maskstore import store_masks
from orchestrator.progress import BaseView, format_params
from orchestrator.samplers import make_sampler
from orchestrator.selection import BestTracker, select_validation
from orchestrator.sink import TrialSink, read_trials
from orchestrator.spec import StudySpec
from orchestrator.studydir import TRIALS_DIR, open_storage, pathsweep_version, study_lock
from orchestrator.trial import TrialConfig, TrialFn, make_config, resolve_params, run_trial
from orchestrator.worker import Outcome, WorkerInfo, actor_class

ABANDONED = "pathsweep_abandoned"
#: Longest error text kept per row (the worker keeps as much; a real message fits whole).
ERROR_CHARS = 4000


@dataclass(frozen=True)
class Job:
    """One attempt to run: a search trial (``trial`` set) or a validation run."""

    number: int
    attempt: int
    phase: str
    params: Mapping[str, Any]
    config: TrialConfig
    trial: optuna.Trial | int | None = None

    def next_attempt(self) -> Job:
        """The same parameters as the next attempt."""
        config = replace(self.config, attempt=self.attempt + 1)
        return replace(self, attempt=self.attempt + 1, config=config)


@dataclass
class Task:
    """A job submitted to an actor."""

    job: Job
    ref: Any
    started: float | None = None  # when it became the actor's current call (driver clock)
    deadline: float | None = None


@dataclass
class Slot:
    """One actor and its calls in order (the first one runs, the others wait)."""

    index: int
    actor: Any = None
    ready_ref: Any = None
    info: WorkerInfo | None = None
    tasks: deque[Task] = field(default_factory=deque)
    timed_out: bool = False
    start_failures: int = 0


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


@dataclass
class _Existing:
    """What the rows on disk say about one (phase, trial number)."""

    attempts: list[int] = field(default_factory=list)
    complete: Mapping[str, Any] | None = None
    final_fail: bool = False
    params: Mapping[str, Any] = field(default_factory=dict)

    @property
    def next_attempt(self) -> int:
        return max(self.attempts) + 1 if self.attempts else 0


def plan_workers(spec: StudySpec, resources: Mapping[str, float], needed: int) -> tuple[int, float]:
    """Number of actors and GPUs per actor.

    ``workers: auto`` = one actor per GPU (``1 / gpus_per_worker`` per GPU), or one per CPU core
    when the cluster has no GPU; never more actors than there is work for. With
    ``device: cuda`` actors always ask for GPUs, even before any GPU node has joined: on an
    autoscaling cluster the waiting actors are what makes the autoscaler start GPU nodes.
    """
    gpus = float(resources.get("GPU", 0.0))
    per_gpu = spec.gpus_per_worker if gpus > 0 or spec.device == "cuda" else 0.0
    if spec.workers is not None:
        count = spec.workers
    elif per_gpu > 0:
        count = int(gpus / per_gpu + 1e-9)
    else:
        count = int(float(resources.get("CPU", 1.0)) / spec.cpus_per_worker + 1e-9)
    return max(1, min(count, max(needed, 1))), per_gpu


def describe_ray_error(exc: BaseException, limit: int = ERROR_CHARS) -> str:
    """One plain line: the error type and its message, whitespace collapsed, no ANSI codes.

    A task that raised (``RayTaskError``) is described by the exception it raised, so the
    user reads the real message instead of Ray's coloured traceback of the remote call.
    """
    import ray

    cause = getattr(exc, "cause", None)
    if isinstance(exc, ray.exceptions.RayTaskError) and isinstance(cause, BaseException):
        exc = cause
    return plain_text(f"{type(exc).__name__}: {exc}")[:limit]


def _torch_version() -> str:
    import torch

    return str(torch.__version__)


class StudyDriver:
    """Runs one study to completion on the connected Ray cluster.

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
        self.trial_fn = trial_fn
        self.view = view or BaseView()
        self.poll_s = poll_s
        self.start_timeout_s = start_timeout_s
        self.times = DriverTimes()
        self._storage = open_storage(self.out, storage, repair=True)
        self._sink_options = dict(sink_options or {})
        self._distributions = spec.search.distributions()
        self._fixed = spec.search.fixed()
        self._versions = {
            "pathsweep_version": pathsweep_version(),
            "torch_version": _torch_version(),
        }
        self._best = BestTracker(spec.metrics, spec.directions)
        self._slots: list[Slot] = []
        self._queue: deque[Job] = deque()  # retries and resumed trials, before new asks
        self._validation: deque[Job] = deque()
        self._finished = 0  # search trials told (COMPLETE / FAIL), abandoned ones excluded
        self._live = 0  # search trials RUNNING and owned by this driver (queued or running)
        self._attempts = self._retried = self._validated = 0
        self._validation_planned = False
        self._gpus = 0.0
        self._no_worker_since: float | None = None

    # ------------------------------------------------------------------ study and recovery

    def _open_study(self, resume: bool) -> optuna.Study:
        names = optuna.study.get_all_study_names(self._storage)
        if self.spec.study in names and not resume:
            raise SetupError(
                f"study {self.spec.study!r} already exists in the storage; rename the study "
                "or resume it"
            )
        if resume and self.spec.study not in names:
            raise SetupError(f"study {self.spec.study!r} is not in the storage; nothing to resume")
        study = optuna.create_study(
            storage=self._storage,
            study_name=self.spec.study,
            directions=list(self.spec.directions),  # type: ignore[arg-type]
            load_if_exists=True,
        )
        # A resumed study reseeds its sampler, so it does not replay the first run's draws.
        seed = self.spec.seed + len(study.get_trials(deepcopy=False))
        grid = self.spec.search.grid() if self.spec.sampler.name == "grid" else None
        study.sampler = make_sampler(self.spec.sampler.name, self.spec.sampler.options, seed, grid)
        return study

    def _mark_abandoned(self, number: int) -> None:
        storage = self._storage
        study_id = storage.get_study_id_from_name(self.spec.study)
        trial_id = storage.get_trial_id_from_study_id_trial_number(study_id, number)
        storage.set_trial_user_attr(trial_id, ABANDONED, True)

    def _existing_rows(self) -> dict[tuple[str, int], _Existing]:
        table = read_trials(self.out / TRIALS_DIR)
        found: dict[tuple[str, int], _Existing] = {}
        if not table.num_rows:
            return found
        metrics = [m for m in self.spec.metrics if m in table.column_names]
        params = [R.param_column(k) for k in self._distributions]
        params = [c for c in params if c in table.column_names]
        columns = ["phase", "optuna_number", "attempt", "state", "retry", *metrics, *params]
        for row in table.select(columns).to_pylist():
            entry = found.setdefault((row["phase"], row["optuna_number"]), _Existing())
            entry.attempts.append(row["attempt"])
            entry.params = {k: row.get(R.param_column(k)) for k in self._distributions}
            if row["state"] == "COMPLETE":
                entry.complete = row
            elif not row["retry"]:
                entry.final_fail = True
        return found

    def _recover_search(self, study: optuna.Study) -> None:
        """Account for trials of earlier runs; queue the RUNNING ones a dead driver left."""
        existing = self._existing_rows()
        self._restore_lost_trials(study, existing)
        for trial in study.get_trials(deepcopy=False):
            if trial.state == TrialState.RUNNING:
                self._recover_running(study, trial, existing.get((R.PHASE_SEARCH, trial.number)))
            elif trial.state.is_finished() and not trial.user_attrs.get(ABANDONED):
                self._finished += 1
                if trial.state == TrialState.COMPLETE and trial.values is not None:
                    self._best.add(trial.values, trial.number)

    def _restore_lost_trials(
        self, study: optuna.Study, existing: Mapping[tuple[str, int], _Existing]
    ) -> None:
        """Re-create trials whose journal records were lost but whose rows exist.

        A journal that lost its last records (a crash of the machine: appends are not fsynced)
        would hand out their trial numbers again, giving two rows with one ``trial_id`` and
        different parameters. Trials numbered past the journal's end that have rows are added
        back from them, in order (a number with no row becomes an abandoned FAIL); a trial
        whose rows cannot be added back stops the resume with what to do.
        """
        known = len(study.get_trials(deepcopy=False))
        lost = [n for (phase, n) in existing if phase == R.PHASE_SEARCH and n >= known]
        if not lost:
            return
        for number in range(known, max(lost) + 1):
            rows = existing.get((R.PHASE_SEARCH, number))
            try:
                study.add_trial(self._restored_trial(rows))
            except ValueError as exc:
                raise SetupError(
                    f"the Optuna journal of {self.out} lost trials {known}..{max(lost)}, which "
                    f"have rows in {self.out / TRIALS_DIR}, and trial {number} cannot be "
                    f"restored from them ({exc}); continue in a new study (`pathsweep study "
                    "run --out NEW`): the rows here stay readable by `pathsweep analyze`"
                ) from None
        self.view.message(
            f"restored trials {known}..{max(lost)} from the rows: the journal had lost them"
        )

    def _restored_trial(self, rows: _Existing | None) -> optuna.trial.FrozenTrial:
        from optuna.trial import create_trial

        if rows is None or set(rows.params) != set(self._distributions):
            return create_trial(state=TrialState.FAIL, user_attrs={ABANDONED: True})
        params, dists = dict(rows.params), self._distributions
        if rows.complete is not None:
            values = [float(rows.complete[m]) for m in self.spec.metrics]
            return create_trial(
                state=TrialState.COMPLETE, values=values, params=params, distributions=dists
            )
        if rows.final_fail or rows.next_attempt >= self.spec.max_attempts:
            return create_trial(state=TrialState.FAIL, params=params, distributions=dists)
        # still RUNNING: re-run as its next attempt
        return create_trial(state=TrialState.RUNNING, params=params, distributions=dists)

    def _recover_running(
        self, study: optuna.Study, trial: optuna.trial.FrozenTrial, rows: _Existing | None
    ) -> None:
        if set(trial.params) != set(self._distributions):  # the dead driver was mid-ask
            self._mark_abandoned(trial.number)
            study.tell(trial.number, state=TrialState.FAIL)
            return
        rows = rows or _Existing()
        if rows.complete is not None:  # the row was written, the tell was not
            self._tell(study, trial.number, [float(rows.complete[m]) for m in self.spec.metrics])
        elif rows.final_fail or rows.next_attempt >= self.spec.max_attempts:
            self._tell(study, trial.number, None)
        else:
            self._queue.append(self._search_job(trial.number, rows.next_attempt, trial.params))
            self._live += 1

    def _search_job(
        self,
        number: int,
        attempt: int,
        sampled: Mapping[str, Any],
        trial: optuna.Trial | None = None,
    ) -> Job:
        params = resolve_params(sampled, self._fixed)
        config = make_config(self.spec, number, attempt, params)
        return Job(number, attempt, R.PHASE_SEARCH, params, config, trial or number)

    # ------------------------------------------------------------------ actors

    def _start_actors(self, count: int) -> None:
        self._actor_cls = actor_class(self.spec.cpus_per_worker, self._gpus)
        self._slots = [Slot(i) for i in range(count)]
        for slot in self._slots:
            self._launch(slot)

    def _launch(self, slot: Slot) -> None:
        data = self.spec.data if self.trial_fn is run_trial else None
        slot.actor = self._actor_cls.remote(self.trial_fn, self.spec.device)
        slot.ready_ref = slot.actor.ready.remote(data, self.spec.seed)
        slot.info, slot.timed_out = None, False
        slot.tasks.clear()
        self.view.worker(slot.index, status="starting", node="-", gpu="-", params="", since=None)

    def _on_ready(self, slot: Slot) -> None:
        import ray

        ref, slot.ready_ref = slot.ready_ref, None
        try:
            slot.info = ray.get(ref)
        except ray.exceptions.RayError as exc:
            slot.start_failures += 1
            cause = describe_ray_error(exc)
            if slot.start_failures >= 2:
                raise SetupError(f"worker {slot.index} could not start: {cause}") from None
            self.view.message(f"worker {slot.index} failed to start, retrying: {cause}")
            self._kill(slot)
            self._launch(slot)
            return
        slot.start_failures = 0
        info = slot.info
        self.view.worker(slot.index, node=info.node_id, gpu=info.gpu_ids or "-", status="idle")

    def _kill(self, slot: Slot) -> None:
        import ray

        with contextlib.suppress(Exception):  # already dead or never placed: nothing to stop
            ray.kill(slot.actor, no_restart=True)

    # ------------------------------------------------------------------ jobs

    def _next_job(self, study: optuna.Study) -> Job | None:
        if self._queue:
            return self._queue.popleft()
        if self._finished + self._live < self.spec.trials:
            start = time.perf_counter()
            trial = study.ask(self._distributions)
            self.times.ask += time.perf_counter() - start
            self._live += 1
            return self._search_job(trial.number, 0, trial.params, trial)
        if self._live == 0 and self._validation:
            return self._validation.popleft()
        return None

    def _submit(self, slot: Slot, job: Job) -> None:
        start = time.perf_counter()
        task = Task(job, slot.actor.run.remote(job.config))
        slot.tasks.append(task)
        if len(slot.tasks) == 1:
            self._make_current(slot)
        self.times.submit += time.perf_counter() - start

    def _make_current(self, slot: Slot) -> None:
        """The first task of an actor has started (as far as the driver can tell)."""
        task = slot.tasks[0]
        task.started = time.time()
        timeout = self.spec.trial_timeout_s
        task.deadline = time.monotonic() + timeout if timeout else None
        job = task.job
        self.view.worker(
            slot.index,
            status=f"{job.phase} #{job.number}.{job.attempt}",
            params=format_params({k: job.params.get(k) for k in self._distributions}),
            since=task.started,
        )

    def _fill(self, study: optuna.Study) -> None:
        depth = 1 + self.spec.prefetch
        for slot in self._slots:
            while slot.info is not None and len(slot.tasks) < depth:
                job = self._next_job(study)
                if job is None:
                    return
                self._submit(slot, job)

    # ------------------------------------------------------------------ results

    def _row(
        self,
        slot: Slot,
        job: Job,
        state: str,
        times: tuple[float | None, float | None],
        error: str | None = None,
        retry: bool = False,
        result: Any = None,
    ) -> dict[str, Any]:
        info = slot.info
        started, finished = times
        row: dict[str, Any] = {
            "study": self.spec.study,
            "trial_id": R.trial_id(job.number, job.attempt, job.phase),
            "optuna_number": job.number,
            "attempt": job.attempt,
            "phase": job.phase,
            "state": state,
            "error": error,
            "retry": retry,
            "node_id": info.node_id if info else None,
            "gpu_ids": info.gpu_ids if info else None,
            "worker_pid": info.pid if info else None,
            "device": info.device if info else None,
            "started_at": started,
            "finished_at": finished,
            "duration_s": None if started is None or finished is None else finished - started,
            "seed": self.spec.seed,
            **self._versions,
            R.param_column("model"): self.spec.model.name,
            R.param_column("dataset"): self.spec.data.name,
        }
        row.update({R.param_column(k): v for k, v in job.params.items()})
        if result is not None:
            row.update(result.metrics)
            row.update(result.timings)
            row["device"] = result.device or row["device"]
            if result.masks is not None:  # stored before the row, so its path never dangles
                row["masks_path"] = store_masks(self.out, result.masks, result.masks_key or "")
        return row

    def _objective_values(self, metrics: Mapping[str, Any]) -> tuple[list[float], str | None]:
        values = []
        for name in self.spec.metrics:
            value = metrics.get(name)
            if value is None or (isinstance(value, float) and math.isnan(value)):
                return [], f"objective {name} is {'missing' if value is None else 'NaN'}"
            values.append(float(value))
        return values, None

    def _on_outcome(self, study: optuna.Study, slot: Slot, job: Job, outcome: Outcome) -> None:
        values: list[float] = []
        error = outcome.error
        if outcome.result is not None and job.phase == R.PHASE_SEARCH:
            values, error = self._objective_values(outcome.result.metrics)
        state = "FAIL" if error else "COMPLETE"
        times = (outcome.started_at, outcome.finished_at)
        row = self._row(slot, job, state, times, error, result=outcome.result)
        self._record(row)
        if job.phase == R.PHASE_SEARCH:
            self._tell(study, job.trial, values if state == "COMPLETE" else None)
            self._live -= 1
        self.view.trial_finished(row, True, self._best.text())

    def _on_lost(self, study: optuna.Study, slot: Slot, exc: BaseException) -> None:
        """The actor died: FAIL row for its current trial, retry it, requeue the waiting ones."""
        current, *waiting = slot.tasks
        job = current.job
        if slot.timed_out:
            timeout = self.spec.trial_timeout_s
            reason, retry = f"timeout: the trial exceeded trial_timeout_s={timeout}", False
        else:
            reason = f"worker lost: {describe_ray_error(exc)}"
            retry = job.attempt + 1 < self.spec.max_attempts
        row = self._row(slot, job, "FAIL", (current.started, time.time()), reason, retry)
        self._record(row)
        self.view.message(f"worker {slot.index} lost during {row['trial_id']}: {reason[:200]}")
        self._queue.extendleft(task.job for task in reversed(waiting))
        if retry:
            self._retried += 1
            self._queue.appendleft(job.next_attempt())
        elif job.phase == R.PHASE_SEARCH:
            self._tell(study, job.trial, None)
            self._live -= 1
        self.view.trial_finished(row, not retry, self._best.text())
        self._kill(slot)
        self._launch(slot)

    def _record(self, row: dict[str, Any]) -> None:
        start = time.perf_counter()
        self._sink.append(row)
        self._attempts += 1
        if row["phase"] != R.PHASE_SEARCH and not row["retry"]:
            self._validated += 1
        self.times.sink += time.perf_counter() - start

    def _tell(
        self, study: optuna.Study, trial: optuna.Trial | int | None, values: list[float] | None
    ) -> None:
        assert trial is not None, "a search job always carries its Optuna trial"
        start = time.perf_counter()
        if values is None:
            study.tell(trial, state=TrialState.FAIL)
        else:
            study.tell(trial, values)
            self._best.add(values, trial if isinstance(trial, int) else trial.number)
        self._finished += 1
        self.times.tell += time.perf_counter() - start

    # ------------------------------------------------------------------ validation

    def _plan_validation(self, study: optuna.Study) -> None:
        self._validation_planned = True
        v = self.spec.validate
        if v.top_k + v.random_k == 0:
            return
        done = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
        top, rand = select_validation(
            done, self.spec.directions, v.top_k, v.random_k, self.spec.seed
        )
        existing = self._existing_rows()
        for phase, chosen in ((R.PHASE_TOP, top), (R.PHASE_RANDOM, rand)):
            for trial in chosen:
                rows = existing.get((phase, trial.number), _Existing())
                if rows.complete is None and not rows.final_fail:
                    self._validation.append(self._validation_job(phase, trial, rows.next_attempt))
        total = len(top) + len(rand)
        if self._validation:
            self.view.set_phase("validate", total, total - len(self._validation))

    def _validation_job(self, phase: str, trial: optuna.trial.FrozenTrial, attempt: int) -> Job:
        params = resolve_params(trial.params, self._fixed)
        epochs = self.spec.validate.epochs
        config = make_config(
            self.spec, trial.number, attempt, params, phase=phase, train_epochs=epochs
        )
        return Job(trial.number, attempt, phase, params, config)

    # ------------------------------------------------------------------ main loop

    def _done(self, study: optuna.Study) -> bool:
        searching = self._finished < self.spec.trials or self._live > 0 or self._queue
        if searching:
            return False
        if not self._validation_planned:
            self._plan_validation(study)
        return not self._validation and not any(s.tasks for s in self._slots)

    def _wait(self, study: optuna.Study) -> None:
        import ray

        by_ref: dict[Any, Slot] = {}
        for slot in self._slots:
            if slot.tasks:
                by_ref[slot.tasks[0].ref] = slot
            elif slot.ready_ref is not None:
                by_ref[slot.ready_ref] = slot
        if not by_ref:
            return
        start = time.perf_counter()
        refs = list(by_ref)
        ready, _ = ray.wait(refs, num_returns=1, timeout=self._timeout())
        if ready and len(refs) > 1:
            ready, _ = ray.wait(refs, num_returns=len(refs), timeout=0)
        self.times.wait += time.perf_counter() - start
        for ref in ready:
            slot = by_ref[ref]
            if slot.tasks:
                self._on_done(study, slot)
            else:
                self._on_ready(slot)

    def _timeout(self) -> float:
        deadlines = [s.tasks[0].deadline for s in self._slots if s.tasks and s.tasks[0].deadline]
        if not deadlines:
            return self.poll_s
        return max(0.0, min(self.poll_s, min(deadlines) - time.monotonic()))  # type: ignore[type-var]

    def _on_done(self, study: optuna.Study, slot: Slot) -> None:
        import ray

        try:
            outcome = ray.get(slot.tasks[0].ref)
        except ray.exceptions.RayTaskError as exc:  # run() itself failed (not the trial)
            outcome = Outcome(time.time(), time.time(), error=describe_ray_error(exc))
        except ray.exceptions.RayError as exc:  # the actor died: retry elsewhere
            self._on_lost(study, slot, exc)
            return
        task = slot.tasks.popleft()
        if slot.tasks:
            self._make_current(slot)
        else:
            self.view.worker(slot.index, status="idle", params="", since=None)
        self._on_outcome(study, slot, task.job, outcome)

    def _check_deadlines(self) -> None:
        now = time.monotonic()
        for slot in self._slots:
            deadline = slot.tasks[0].deadline if slot.tasks else None
            if deadline is not None and now >= deadline and not slot.timed_out:
                slot.timed_out = True
                self._kill(slot)

    def _check_workers(self) -> None:
        """Give up when no actor has been ready for ``start_timeout_s`` (e.g. none can be placed)."""
        now = time.monotonic()
        if any(s.info is not None for s in self._slots):
            self._no_worker_since = None
        elif self._no_worker_since is None:
            self._no_worker_since = now
        elif now - self._no_worker_since > self.start_timeout_s:
            import ray

            raise SetupError(
                f"no worker ready for {self.start_timeout_s:.0f} s (each needs "
                f"CPU={self.spec.cpus_per_worker}, GPU={self._gpus}); cluster resources: "
                f"{ray.cluster_resources()}"
            )

    def _work_left(self) -> int:
        v = self.spec.validate
        validation = len(self._validation) if self._validation_planned else v.top_k + v.random_k
        return self.spec.trials - self._finished + validation

    def run(self, resume: bool = False) -> StudySummary:
        """Run the study (or finish it, with ``resume=True``) and compact its rows.

        Raises:
            SetupError: the study exists already (fresh run) or is missing (resume), or no
                actor could start.
        """
        import ray

        began = time.monotonic()
        study = self._open_study(resume)
        schema = R.declared_schema(self.spec)
        self._sink = TrialSink(self.out / TRIALS_DIR, schema, **self._sink_options)
        try:
            self._recover_search(study)
            self.view.set_phase("search", self.spec.trials, self._finished)
            if not self._done(study):
                resources = ray.cluster_resources()
                count, self._gpus = plan_workers(self.spec, resources, self._work_left())
                self.view.start()
                self._start_actors(count)
            while not self._done(study):
                self._fill(study)
                self._wait(study)
                self._check_deadlines()
                self._check_workers()
                self._sink.maybe_flush()
        finally:
            self.view.stop()
            for slot in self._slots:
                self._kill(slot)
            self._sink.close()
        self._sink.compact()
        return self._summary(study, len(self._slots), time.monotonic() - began)

    def _summary(self, study: optuna.Study, workers: int, wall: float) -> StudySummary:
        trials = study.get_trials(deepcopy=False)
        complete = sum(t.state == TrialState.COMPLETE for t in trials)
        failed = sum(t.state == TrialState.FAIL and not t.user_attrs.get(ABANDONED) for t in trials)
        top_error = most_frequent_error(self.out) if complete == 0 else None
        return StudySummary(
            study=self.spec.study,
            out=self.out,
            workers=workers,
            complete=complete,
            failed=failed,
            attempts=self._attempts,
            retried=self._retried,
            validated=self._validated,
            wall_s=wall,
            best=self._best.best(),
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
