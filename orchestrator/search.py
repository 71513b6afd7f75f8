"""The Optuna side of a study: ask, tell, the best trials, and the validation plan.

:class:`OptunaSearch` is the driver's :class:`orchestrator.scheduler.Search`; it uses Optuna's
public API only (``study.ask``/``study.tell``, ``study.best_trial(s)``). The search measures the
data-free objectives of Gebhart, Saxena, Schrater (2021), "A Unified Paths Perspective for
Pruning at Initialization"; validation trains the best and some random configurations.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import optuna
from optuna.trial import TrialState

from orchestrator import rows as R
from orchestrator.progress import BaseView
from orchestrator.scheduler import Job
from orchestrator.selection import best_trials, select_validation
from orchestrator.spec import StudySpec
from orchestrator.trial import make_config, resolve_params

#: The live view's best text is recomputed at most once per this many times its cost:
#: ``study.best_trials`` reads every trial (~150 ms at 2000 trials, ten asks and tells), so a
#: long study would otherwise spend most of its driver time on it. Bounds that share to 5 %.
BEST_TEXT_COST_FACTOR = 20.0


class OptunaSearch:
    """Asks and tells one Optuna study and plans its validation.

    Args:
        study: the opened study (its sampler set).
        spec: the study spec.
        view: the live view (the validation phase is announced on it).
        clock: records seconds spent asking and telling (``ask``, ``tell`` attributes).
        validation_rows: ``(phase, number, seed) -> rows on disk`` (an ``orchestrator.recovery``
            reader), so a resumed validation skips what is done.
    """

    def __init__(
        self,
        study: optuna.Study,
        spec: StudySpec,
        view: BaseView,
        clock: Any,
        validation_rows: Callable[[], Mapping[tuple[str, int, int], Any]],
    ) -> None:
        self.study = study
        self.spec = spec
        self.view = view
        self.clock = clock
        self._validation_rows = validation_rows
        self.distributions = spec.search.distributions()
        self._fixed = spec.search.fixed()
        self._text = "-"
        self._text_at = -float("inf")
        self._text_cost = 0.0
        self._text_stale = False

    # ------------------------------------------------------------------ jobs

    def job(self, number: int, attempt: int, sampled: Mapping[str, Any], trial: Any = None) -> Job:
        """The search job of trial ``number``'s ``attempt``."""
        params = resolve_params(sampled, self._fixed)
        config = make_config(self.spec, number, attempt, params)
        trial = number if trial is None else trial
        return Job(number, attempt, R.PHASE_SEARCH, params, config, trial)

    def ask(self) -> Job:
        """Ask Optuna for a new trial (its first attempt)."""
        start = time.perf_counter()
        trial = self.study.ask(self.distributions)
        self.clock.ask += time.perf_counter() - start
        return self.job(trial.number, 0, trial.params, trial)

    def tell(self, trial: Any, number: int, values: Sequence[float] | None) -> None:
        """``study.tell``: COMPLETE with ``values``, FAIL when None."""
        start = time.perf_counter()
        if values is None:
            self.study.tell(trial, state=TrialState.FAIL)
        else:
            self.study.tell(trial, list(values))
            self._text_stale = True
        self.clock.tell += time.perf_counter() - start

    # ------------------------------------------------------------------ best

    def best(self) -> list[dict[str, Any]]:
        """The best trial (one objective) or the Pareto front: ``{"number", "values"}`` each."""
        return [{"number": t.number, "values": list(t.values)} for t in self._best()]

    def _best(self) -> list[optuna.trial.FrozenTrial]:
        return best_trials(self.study)

    def best_text(self) -> str:
        """Short text for the live view.

        Exact after the tell that changed it unless recomputing would exceed 5 % of the
        driver's time (``BEST_TEXT_COST_FACTOR``); then it lags by a few tells.
        """
        now = time.monotonic()
        if self._text_stale and now - self._text_at >= BEST_TEXT_COST_FACTOR * self._text_cost:
            front = self._best()
            self._text_stale, self._text_at = False, now
            self._text_cost = time.monotonic() - now
            if len(self.spec.metrics) == 1 and front:
                self._text = f"{self.spec.metrics[0]}={front[0].values[0]:.4g} (#{front[0].number})"
            elif front:
                self._text = f"Pareto front of {len(front)} trials"
        return self._text

    # ------------------------------------------------------------------ validation

    def plan_validation(self) -> list[Job]:
        """The validation jobs not yet done (the same choice on every resume).

        Each chosen configuration runs once per seed of ``validate.seeds`` (once with the study
        seed without it); a run whose rows show it COMPLETE, or failed for good, is skipped.
        """
        v = self.spec.validate
        if v.top_k + v.random_k == 0:
            return []
        done = self.study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
        top, rand = select_validation(
            done, self.spec.directions, v.top_k, v.random_k, self.spec.seed
        )
        existing = self._validation_rows()
        seeds: tuple[int | None, ...] = (None,) if v.seeds is None else v.seeds
        jobs = []
        for phase, chosen in ((R.PHASE_TOP, top), (R.PHASE_RANDOM, rand)):
            for trial in chosen:
                for seed in seeds:
                    row_seed = self.spec.seed if seed is None else seed
                    rows = existing.get((phase, trial.number, row_seed))
                    complete = rows is not None and rows.complete is not None
                    if not complete and not (rows is not None and rows.final_fail):
                        attempt = rows.next_attempt if rows is not None else 0
                        jobs.append(self._validation_job(phase, trial, attempt, seed))
        total = (len(top) + len(rand)) * len(seeds)
        if jobs:
            self.view.set_phase("validate", total, total - len(jobs))
        return jobs

    def _validation_job(
        self, phase: str, trial: optuna.trial.FrozenTrial, attempt: int, seed: int | None
    ) -> Job:
        params = resolve_params(trial.params, self._fixed)
        epochs = self.spec.validate.epochs
        config = make_config(
            self.spec,
            trial.number,
            attempt,
            params,
            phase=phase,
            train_epochs=epochs,
            seed=seed,
        )
        return Job(trial.number, attempt, phase, params, config, seed=seed)
