"""The scheduler's invariants, property-tested against a fake pool (no Ray, no Optuna).

The fake pool has ``workers`` actors, each holding up to ``depth`` jobs (the first runs, the
others wait, like ``prefetch``); hypothesis picks, step after step, which actor's current job
completes, fails, is lost with its actor, or times out, and whether a run starts from a
resume (trials already told, RUNNING trials to re-run at a later attempt).
"""

from __future__ import annotations

import subprocess
import sys
from collections import Counter, deque
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from orchestrator import rows as R
from orchestrator.scheduler import PHASE_SEARCH, Job, Scheduler, TellTwiceError

VALIDATE = "validate-top"


@dataclass(frozen=True)
class FakeConfig:
    attempt: int


@dataclass
class FakeSearch:
    """Asks numbered trials, logs tells, plans ``top_k`` validation jobs of COMPLETE trials."""

    first_number: int = 0
    top_k: int = 0
    told: list[tuple[int, tuple[float, ...] | None]] = field(default_factory=list)
    asked: list[int] = field(default_factory=list)
    plans: int = 0
    scheduler: Scheduler | None = None

    def ask(self) -> Job:
        number = self.first_number + len(self.asked)
        self.asked.append(number)
        return Job(number, 0, PHASE_SEARCH, {"x": number}, FakeConfig(0), trial=("handle", number))  # type: ignore[arg-type]

    def tell(self, trial: Any, number: int, values: Sequence[float] | None) -> None:
        assert trial in (("handle", number), number)  # the job's own handle comes back
        self.told.append((number, None if values is None else tuple(values)))

    def plan_validation(self) -> list[Job]:
        sched = self.scheduler
        assert sched is not None
        assert sched.finished >= sched.trials and sched.live == 0 and not sched.queue
        self.plans += 1
        complete = sorted(n for n, v in self.told if v is not None)[: self.top_k]
        return [Job(n, 0, VALIDATE, {"x": n}, FakeConfig(0)) for n in complete]  # type: ignore[arg-type]


EVENTS = ("complete", "fail", "lost", "timeout")


@settings(max_examples=150, deadline=None)
@given(
    trials=st.integers(0, 8),
    max_attempts=st.integers(1, 3),
    workers=st.integers(1, 3),
    depth=st.integers(1, 3),
    top_k=st.integers(0, 3),
    told_before=st.integers(0, 3),
    resumed_attempts=st.lists(st.integers(0, 2), max_size=3),
    data=st.data(),
)
def test_every_trial_is_told_once_and_attempts_follow_the_rules(
    trials: int,
    max_attempts: int,
    workers: int,
    depth: int,
    top_k: int,
    told_before: int,
    resumed_attempts: list[int],
    data: st.DataObject,
) -> None:
    # a resume: numbers 0.. told by an earlier run, then RUNNING ones to re-run, then new asks
    told_before = min(told_before, trials)
    resumed_attempts = [a for a in resumed_attempts if a < max_attempts]
    resumed_attempts = resumed_attempts[: trials - told_before]
    first_new = told_before + len(resumed_attempts)
    search = FakeSearch(first_number=first_new, top_k=top_k)
    sched = Scheduler(search, trials, max_attempts, validation_estimate=top_k)
    search.scheduler = sched
    for n in range(told_before):
        sched.adopt_told(n)
    for i, attempt in enumerate(resumed_attempts):
        n = told_before + i
        sched.adopt_running(Job(n, attempt, PHASE_SEARCH, {"x": n}, FakeConfig(attempt), n))  # type: ignore[arg-type]

    slots: list[deque[Job]] = [deque() for _ in range(workers)]
    queued_ids: set[int] = {id(j) for j in sched.queue}  # jobs the queue handed over
    runs: dict[tuple[str, int], list[tuple[int, str]]] = {}  # (phase, n) -> [(attempt, event)]
    events = 0
    for _ in range(10_000):
        if sched.done(any(slots)):
            break
        exhausted = False
        for slot in slots:  # the pool's fill: every actor up to ``depth`` jobs
            while not exhausted and len(slot) < depth:
                from_queue = {id(j) for j in sched.queue}
                job = sched.next_job()
                if job is None:
                    exhausted = True
                    break
                if id(job) in from_queue:
                    assert id(job) in queued_ids  # only what the scheduler queued itself
                elif job.phase == PHASE_SEARCH:
                    assert job.number == search.asked[-1] and job.attempt == 0  # a new ask
                else:
                    assert sched.live == 0  # validation waits for the search to end
                assert job.config.attempt == job.attempt
                slot.append(job)
        assert any(slots), "nothing runs but the scheduler is not done"
        for _ in range(data.draw(st.integers(1, 3))):  # one ray.wait may return several calls
            busy = [i for i, s in enumerate(slots) if s]
            if not busy:
                break
            slot = slots[data.draw(st.sampled_from(busy))]
            event = data.draw(st.sampled_from(EVENTS))
            job = slot.popleft()
            events += 1
            runs.setdefault((job.phase, job.number), []).append((job.attempt, event))
            if event == "complete":
                sched.ended(job, [float(job.number)])
            elif event == "fail":
                sched.ended(job, None)
            else:
                waiting = list(slot)
                slot.clear()  # the actor is dead; its replacement starts empty
                retry = sched.lost(job, waiting, timed_out=event == "timeout")
                assert retry == (event == "lost" and job.attempt + 1 < max_attempts)
                front = list(sched.queue)[: len(waiting) + retry]
                if retry:
                    nxt = front.pop(0)
                    assert (nxt.number, nxt.attempt, nxt.phase) == (
                        job.number,
                        job.attempt + 1,
                        job.phase,
                    )
                    assert nxt.params == job.params and nxt.config.attempt == job.attempt + 1
                    queued_ids.add(id(nxt))
                assert all(
                    a is b for a, b in zip(front, waiting, strict=True)
                )  # unchanged, in order
                queued_ids.update(id(j) for j in waiting)
    else:
        pytest.fail("the scheduler never finished")

    # told exactly once: every search trial, each number once, COMPLETE at most once
    told = Counter(n for n, _ in search.told)
    assert sorted(told) == list(range(told_before, trials))
    assert set(told.values()) <= {1}
    assert sched.finished == trials and sched.live == 0 and not sched.queue
    assert len(search.asked) == trials - first_new  # never asked more than wanted
    # each trial's attempts are consecutive; only a lost (not timed-out) one is followed
    for (phase, number), attempts in runs.items():
        start = attempts[0][0]
        assert [a for a, _ in attempts] == list(range(start, start + len(attempts)))
        for a, event in attempts[:-1]:
            assert event == "lost" and a + 1 < max_attempts
        last_attempt, last = attempts[-1]
        ends = last in ("complete", "fail", "timeout") or last_attempt + 1 >= max_attempts
        assert ends, (phase, number, attempts)
        if phase == PHASE_SEARCH:
            values = dict(search.told)[number]
            assert (values is not None) == (last == "complete")
    # validation: planned once, after the search; each chosen job ran to one end
    assert search.plans == 1
    planned = sorted(n for n, v in search.told if v is not None)[:top_k]
    assert sorted(n for (p, n) in runs if p == VALIDATE) == planned
    assert sched.validated == len(planned)
    assert sched.attempts == events
    assert sched.retried == sum(
        1 for a in runs.values() for _, e in a[:-1]
    )  # every non-final attempt was a retry
    assert sched.work_left() == 0


def _job(number: int) -> Job:
    return Job(number, 0, PHASE_SEARCH, {}, FakeConfig(0), number)  # type: ignore[arg-type]


def test_a_second_tell_is_refused_before_it_reaches_the_search() -> None:
    search = FakeSearch()
    sched = Scheduler(search, trials=2, max_attempts=1)
    job = sched.next_job()
    assert job is not None
    sched.ended(job, [1.0])
    with pytest.raises(TellTwiceError, match="trial 0 was told already"):
        sched.tell(job.trial, job.number, [2.0])
    with pytest.raises(TellTwiceError):
        sched.adopt_told(0)
    assert search.told == [(0, (1.0,))] and sched.finished == 1


def test_max_attempts_must_be_positive() -> None:
    with pytest.raises(ValueError, match=r"max_attempts >= 1 must hold, but got max_attempts=0"):
        Scheduler(FakeSearch(), trials=1, max_attempts=0)


def test_the_scheduler_imports_neither_ray_nor_optuna() -> None:
    code = (
        "import sys, orchestrator.scheduler; "
        "print(sorted({m.split('.')[0] for m in sys.modules} & {'ray', 'optuna', 'torch'}))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
    assert PHASE_SEARCH == R.PHASE_SEARCH
