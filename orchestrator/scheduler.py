"""Which job runs next, and what a finished or lost attempt means: the study's bookkeeping.

The scheduler imports neither Ray nor Optuna (see ``docs/design.md`` and the driver's module
docstring for the data flow). It holds the queue of retries and resumed trials, the
validation jobs, and the counts of the search; it talks to Optuna only through a
:class:`Search` (ask, tell, plan the validation) and never sees an actor. Its invariants,
property-tested against a fake pool in ``tests/orchestrator/test_scheduler.py``:

- every search trial is told exactly once (no trial is COMPLETE twice);
- an attempt lost with its actor is retried as the next attempt, same parameters, up to
  ``max_attempts`` attempts; then the trial is told FAIL; a timed-out attempt is not retried;
- jobs queued on a dead actor but never started go back to the front of the queue unchanged;
- validation starts when every search trial is told, and each validation job ends once.

The search measures data-free objectives (Gebhart, Saxena, Schrater 2021, "A Unified Paths
Perspective for Pruning at Initialization"); validation trains chosen configurations.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    from orchestrator.trial import TrialConfig

#: ``orchestrator.rows.PHASE_SEARCH`` (rows imports the spec, which imports Optuna; a test
#: checks that the two agree).
PHASE_SEARCH = "search"


@dataclass(frozen=True)
class Job:
    """One attempt to run: a search trial (``trial`` set) or a validation run.

    ``trial`` is the search's handle of the trial (an ``optuna.Trial`` or its number); the
    scheduler only passes it back to :meth:`Search.tell`. ``seed`` is the validation seed of a
    spec with ``validate.seeds`` (part of the row's ``trial_id``; ``config.seed`` equals it);
    None for search trials and for validation runs with the study seed.
    """

    number: int
    attempt: int
    phase: str
    params: Mapping[str, Any]
    config: TrialConfig
    trial: Any = None
    seed: int | None = None

    def next_attempt(self) -> Job:
        """The same parameters as the next attempt."""
        config = replace(self.config, attempt=self.attempt + 1)
        return replace(self, attempt=self.attempt + 1, config=config)


class Search(Protocol):
    """The optimizer side of a study (Optuna's ask/tell in the driver, a fake in tests)."""

    def ask(self) -> Job:
        """A new search trial as its first attempt."""
        ...

    def tell(self, trial: Any, number: int, values: Sequence[float] | None) -> None:
        """Finish trial ``number``: COMPLETE with ``values``, or FAIL when None."""
        ...

    def plan_validation(self) -> Iterable[Job]:
        """The validation jobs still to run (called once, when the search is over)."""
        ...


class TellTwiceError(RuntimeError):
    """A search trial would be told a second time (a bug: refused, never written)."""


class Scheduler:
    """The queue, the attempts and the counts of one study.

    Args:
        search: asks and tells the optimizer and plans the validation.
        trials: search trials the study wants finished (told), abandoned ones not counted.
        max_attempts: attempts per trial when actors die (>= 1).
        validation_estimate: validation jobs expected before they are planned (for sizing).
    """

    def __init__(
        self, search: Search, trials: int, max_attempts: int, validation_estimate: int = 0
    ) -> None:
        if max_attempts < 1:
            raise ValueError(f"max_attempts >= 1 must hold, but got {max_attempts=}")
        self.search = search
        self.trials = trials
        self.max_attempts = max_attempts
        self._validation_estimate = validation_estimate
        self.queue: deque[Job] = deque()  # retries and resumed trials, before new asks
        self.validation: deque[Job] = deque()
        self.validation_planned = False
        self.finished = 0  # search trials told (COMPLETE / FAIL)
        self.live = 0  # search trials asked, not told, owned by this driver (queued or running)
        self.attempts = self.retried = self.validated = 0
        self._told: set[int] = set()

    # ------------------------------------------------------------------ recovery

    def adopt_told(self, number: int) -> None:
        """Trial ``number`` was told by an earlier run."""
        self._mark_told(number)

    def adopt_running(self, job: Job) -> None:
        """A trial an earlier run left RUNNING, to be re-run as ``job``."""
        self.queue.append(job)
        self.live += 1

    def tell(self, trial: Any, number: int, values: Sequence[float] | None) -> None:
        """Tell the search trial ``number`` (COMPLETE with ``values``, FAIL when None), once."""
        if number in self._told:
            raise TellTwiceError(f"search trial {number} was told already; refusing a second tell")
        self.search.tell(trial, number, values)
        self._mark_told(number)

    def _mark_told(self, number: int) -> None:
        if number in self._told:
            raise TellTwiceError(f"search trial {number} was told already; refusing a second tell")
        self._told.add(number)
        self.finished += 1

    # ------------------------------------------------------------------ jobs

    def next_job(self) -> Job | None:
        """The next job to submit: a retry or resumed trial, a new ask, or a validation job."""
        if self.queue:
            return self.queue.popleft()
        if self.finished + self.live < self.trials:
            job = self.search.ask()
            self.live += 1
            return job
        if self.live == 0 and self.validation:
            return self.validation.popleft()
        return None

    def ended(self, job: Job, values: Sequence[float] | None) -> None:
        """An attempt ran to its end (its row written): ``values`` when COMPLETE, else None."""
        self.attempts += 1
        if job.phase == PHASE_SEARCH:
            self.tell(job.trial, job.number, values)
            self.live -= 1
        else:
            self.validated += 1

    def will_retry(self, job: Job, timed_out: bool) -> bool:
        """Whether an attempt lost with its actor is retried (a timed-out one never is)."""
        return not timed_out and job.attempt + 1 < self.max_attempts

    def lost(self, job: Job, waiting: Sequence[Job], timed_out: bool) -> bool:
        """The actor running ``job`` died (its FAIL row written); ``waiting`` never started.

        Returns:
            Whether ``job`` is retried (as the next attempt, first in the queue).
        """
        self.attempts += 1
        self.queue.extendleft(reversed(waiting))
        retry = self.will_retry(job, timed_out)
        if retry:
            self.retried += 1
            self.queue.appendleft(job.next_attempt())
        elif job.phase == PHASE_SEARCH:
            self.tell(job.trial, job.number, None)
            self.live -= 1
        else:
            self.validated += 1
        return retry

    # ------------------------------------------------------------------ progress

    def search_over(self) -> bool:
        """Every search trial is told and nothing waits to be retried."""
        return self.finished >= self.trials and self.live == 0 and not self.queue

    def done(self, busy: bool) -> bool:
        """Whether the study is finished; plans the validation once the search is over.

        Args:
            busy: some actor still holds a job.
        """
        if not self.search_over():
            return False
        if not self.validation_planned:
            self.validation_planned = True
            self.validation.extend(self.search.plan_validation())
        return not self.validation and not busy

    def work_left(self) -> int:
        """Jobs still to run (validation estimated until it is planned)."""
        validation = len(self.validation) if self.validation_planned else self._validation_estimate
        return self.trials - self.finished + validation
