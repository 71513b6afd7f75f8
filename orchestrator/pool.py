"""The Ray actors of a study: launch, ready, submit, wait, death, timeout, replacement.

Each actor (:class:`orchestrator.worker.TrialWorker`) holds its running job plus ``prefetch``
queued ones, so it starts the next trial the moment one ends; one ``ray.wait`` with a timeout
over every actor's current call drives the driver's loop (see ``docs/design.md``). The pool
knows jobs only as things to run: what a finished or lost job means is the scheduler's
business (``orchestrator.scheduler``), and the pool reports it as :class:`Done` / :class:`Lost`.
"""

from __future__ import annotations

import contextlib
import time
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from orchestrator.errors import SetupError, plain_text
from orchestrator.progress import BaseView, format_params
from orchestrator.scheduler import Job
from orchestrator.spec import StudySpec
from orchestrator.trial import TrialFn, run_trial
from orchestrator.worker import Outcome, WorkerInfo, actor_class

#: Longest error text kept per row (the worker keeps as much; a real message fits whole).
ERROR_CHARS = 4000


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


@dataclass(frozen=True)
class Done:
    """``job`` ran to its end on ``slot``'s actor (the outcome holds a result or an error)."""

    slot: Slot
    job: Job
    outcome: Outcome


@dataclass(frozen=True)
class Lost:
    """``slot``'s actor died (or was killed for a timeout) while running ``task``.

    ``waiting`` are the jobs queued behind it, never started. The slot still holds the dead
    actor's ``info`` (for the row) until :meth:`ActorPool.replace`.
    """

    slot: Slot
    task: Task
    waiting: list[Job]
    reason: str
    timed_out: bool


class ActorPool:
    """The study's actors.

    Args:
        spec: the study spec (resources, device, ``prefetch``, ``trial_timeout_s``).
        trial_fn: what the actors run.
        view: the live view (worker lines).
        param_names: the searched parameters (shown per worker).
        poll_s: longest single ``ray.wait``.
        start_timeout_s: give up when no actor has been ready for this long.
        clock: records seconds spent waiting and submitting (``wait``, ``submit`` attributes).
    """

    def __init__(
        self,
        spec: StudySpec,
        trial_fn: TrialFn,
        view: BaseView,
        param_names: Sequence[str],
        poll_s: float,
        start_timeout_s: float,
        clock: Any,
    ) -> None:
        self.spec = spec
        self.trial_fn = trial_fn
        self.view = view
        self.param_names = list(param_names)
        self.poll_s = poll_s
        self.start_timeout_s = start_timeout_s
        self.clock = clock
        self.slots: list[Slot] = []
        self.gpus = 0.0
        self._no_worker_since: float | None = None

    @property
    def busy(self) -> bool:
        """Some actor holds a job."""
        return any(s.tasks for s in self.slots)

    def start_for(self, needed: int) -> None:
        """Launch as many actors as the cluster and ``needed`` jobs call for (``plan_workers``)."""
        import ray

        self.start(*plan_workers(self.spec, ray.cluster_resources(), needed))

    def start(self, count: int, gpus: float) -> None:
        """Launch ``count`` actors with ``gpus`` GPUs each."""
        self.gpus = gpus
        self._cls = actor_class(self.spec.cpus_per_worker, gpus)
        self.slots = [Slot(i) for i in range(count)]
        for slot in self.slots:
            self._launch(slot)

    def _launch(self, slot: Slot) -> None:
        data = self.spec.data if self.trial_fn is run_trial else None
        slot.actor = self._cls.remote(self.trial_fn, self.spec.device)
        slot.ready_ref = slot.actor.ready.remote(data, self.spec.seed)
        slot.info, slot.timed_out = None, False
        slot.tasks.clear()
        self.view.worker(slot.index, status="starting", node="-", gpu="-", params="", since=None)

    def replace(self, slot: Slot) -> None:
        """Kill ``slot``'s actor (if alive) and launch a fresh one in its place."""
        self.kill(slot)
        self._launch(slot)

    def kill(self, slot: Slot) -> None:
        """Stop ``slot``'s actor; one already dead or never placed is left alone."""
        import ray

        with contextlib.suppress(Exception):
            ray.kill(slot.actor, no_restart=True)

    def close(self) -> None:
        """Stop every actor."""
        for slot in self.slots:
            self.kill(slot)

    # ------------------------------------------------------------------ jobs

    def fill(self, next_job: Callable[[], Job | None]) -> None:
        """Give every ready actor jobs up to ``1 + prefetch``; stop when ``next_job`` has none."""
        depth = 1 + self.spec.prefetch
        for slot in self.slots:
            while slot.info is not None and len(slot.tasks) < depth:
                job = next_job()
                if job is None:
                    return
                self._submit(slot, job)

    def _submit(self, slot: Slot, job: Job) -> None:
        start = time.perf_counter()
        slot.tasks.append(Task(job, slot.actor.run.remote(job.config)))
        if len(slot.tasks) == 1:
            self._make_current(slot)
        self.clock.submit += time.perf_counter() - start

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
            params=format_params({k: job.params.get(k) for k in self.param_names}),
            since=task.started,
        )

    # ------------------------------------------------------------------ waiting

    def wait(self) -> list[Done | Lost]:
        """Wait (at most ``poll_s``, less before a deadline) for calls to return."""
        import ray

        by_ref: dict[Any, Slot] = {}
        for slot in self.slots:
            if slot.tasks:
                by_ref[slot.tasks[0].ref] = slot
            elif slot.ready_ref is not None:
                by_ref[slot.ready_ref] = slot
        if not by_ref:
            return []
        start = time.perf_counter()
        refs = list(by_ref)
        ready, _ = ray.wait(refs, num_returns=1, timeout=self._timeout())
        if ready and len(refs) > 1:
            ready, _ = ray.wait(refs, num_returns=len(refs), timeout=0)
        self.clock.wait += time.perf_counter() - start
        events: list[Done | Lost] = []
        for ref in ready:
            slot = by_ref[ref]
            if slot.tasks:
                events.append(self._collect(slot))
            else:
                self._on_ready(slot)
        return events

    def _timeout(self) -> float:
        deadlines = [s.tasks[0].deadline for s in self.slots if s.tasks and s.tasks[0].deadline]
        if not deadlines:
            return self.poll_s
        return max(0.0, min(self.poll_s, min(deadlines) - time.monotonic()))  # type: ignore[type-var]

    def _collect(self, slot: Slot) -> Done | Lost:
        import ray

        try:
            outcome = ray.get(slot.tasks[0].ref)
        except ray.exceptions.RayTaskError as exc:  # run() itself failed (not the trial)
            outcome = Outcome(time.time(), time.time(), error=describe_ray_error(exc))
        except ray.exceptions.RayError as exc:  # the actor died
            current, *waiting = slot.tasks
            if slot.timed_out:
                reason = f"timeout: the trial exceeded trial_timeout_s={self.spec.trial_timeout_s}"
            else:
                reason = f"worker lost: {describe_ray_error(exc)}"
            return Lost(slot, current, [t.job for t in waiting], reason, slot.timed_out)
        task = slot.tasks.popleft()
        if slot.tasks:
            self._make_current(slot)
        else:
            self.view.worker(slot.index, status="idle", params="", since=None)
        return Done(slot, task.job, outcome)

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
            self.replace(slot)
            return
        slot.start_failures = 0
        info = slot.info
        self.view.worker(slot.index, node=info.node_id, gpu=info.gpu_ids or "-", status="idle")

    def check_deadlines(self) -> None:
        """Kill the actors whose current job ran past ``trial_timeout_s`` (reported as Lost)."""
        now = time.monotonic()
        for slot in self.slots:
            deadline = slot.tasks[0].deadline if slot.tasks else None
            if deadline is not None and now >= deadline and not slot.timed_out:
                slot.timed_out = True
                self.kill(slot)

    def check_workers(self) -> None:
        """Give up when no actor has been ready for ``start_timeout_s`` (e.g. none can be placed)."""
        now = time.monotonic()
        if any(s.info is not None for s in self.slots):
            self._no_worker_since = None
        elif self._no_worker_since is None:
            self._no_worker_since = now
        elif now - self._no_worker_since > self.start_timeout_s:
            import ray

            raise SetupError(
                f"no worker ready for {self.start_timeout_s:.0f} s (each needs "
                f"CPU={self.spec.cpus_per_worker}, GPU={self.gpus}); cluster resources: "
                f"{ray.cluster_resources()}"
            )


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
