"""Opening a study, and resuming one a dead driver left: the journal checked against the rows.

A killed driver leaves trials RUNNING in the journal. On ``resume`` (see ``docs/design.md``,
invariants of the driver): a RUNNING trial with a COMPLETE row is told its values (the row was
written, the tell was not); one without is re-run as its next attempt (or told FAIL when its
attempts are spent or its last row was final); one whose parameters were never fully asked is
failed and marked abandoned (not counted). Trials whose journal records were lost but whose
rows exist are rebuilt from the rows. Optuna's public API only: the abandoned mark is the
study's user attribute ``pathsweep_abandoned`` (a list of numbers; restored trials carry it as
a trial user attribute, which older studies also used).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import optuna
from optuna.trial import FrozenTrial, TrialState, create_trial

from orchestrator import rows as R
from orchestrator.errors import SetupError
from orchestrator.samplers import make_sampler
from orchestrator.scheduler import Job, Scheduler
from orchestrator.sink import read_trials
from orchestrator.spec import StudySpec
from orchestrator.studydir import TRIALS_DIR

ABANDONED = "pathsweep_abandoned"


@dataclass
class Existing:
    """What the rows on disk say about one (phase, trial number, seed)."""

    attempts: list[int] = field(default_factory=list)
    complete: Mapping[str, Any] | None = None
    final_fail: bool = False
    params: Mapping[str, Any] = field(default_factory=dict)

    @property
    def next_attempt(self) -> int:
        return max(self.attempts) + 1 if self.attempts else 0


def existing_rows(out: Path, spec: StudySpec) -> dict[tuple[str, int, int], Existing]:
    """The study's rows on disk by (phase, trial number, seed).

    The seed is the row's ``seed`` (the study seed for search rows; a validation run's own seed
    with ``validate.seeds``); rows without one count as the study seed's.
    """
    table = read_trials(out / TRIALS_DIR)
    found: dict[tuple[str, int, int], Existing] = {}
    if not table.num_rows:
        return found
    names = list(spec.search.distributions())
    metrics = [m for m in spec.metrics if m in table.column_names]
    params = [c for c in map(R.param_column, names) if c in table.column_names]
    seed = ["seed"] if "seed" in table.column_names else []
    columns = ["phase", "optuna_number", "attempt", "state", "retry", *seed, *metrics, *params]
    for row in table.select(columns).to_pylist():
        row_seed = spec.seed if row.get("seed") is None else row["seed"]
        key = (row["phase"], row["optuna_number"], row_seed)
        entry = found.setdefault(key, Existing())
        entry.attempts.append(row["attempt"])
        entry.params = {k: row.get(R.param_column(k)) for k in names}
        if row["state"] == "COMPLETE":
            entry.complete = row
        elif not row["retry"]:
            entry.final_fail = True
    return found


def open_study(storage: Any, spec: StudySpec, resume: bool) -> optuna.Study:
    """Create (``resume=False``) or load the study, with a sampler seeded for this run.

    Raises:
        SetupError: the study exists already (fresh run) or is missing (resume).
    """
    names = optuna.study.get_all_study_names(storage)
    if spec.study in names and not resume:
        raise SetupError(
            f"study {spec.study!r} already exists in the storage; rename the study or resume it"
        )
    if resume and spec.study not in names:
        raise SetupError(f"study {spec.study!r} is not in the storage; nothing to resume")
    study = optuna.create_study(
        storage=storage,
        study_name=spec.study,
        directions=list(spec.directions),  # type: ignore[arg-type]
        load_if_exists=True,
    )
    # A resumed study reseeds its sampler, so it does not replay the first run's draws.
    seed = spec.seed + len(study.get_trials(deepcopy=False))
    grid = spec.search.grid() if spec.sampler.name == "grid" else None
    study.sampler = make_sampler(spec.sampler.name, spec.sampler.options, seed, grid)
    return study


def abandoned(study: optuna.Study) -> set[int]:
    """Numbers of the trials failed because no driver finished asking them (not counted)."""
    marked = set(study.user_attrs.get(ABANDONED, []))
    trials = study.get_trials(deepcopy=False)
    return marked | {t.number for t in trials if t.user_attrs.get(ABANDONED)}


def _mark_abandoned(study: optuna.Study, number: int) -> None:
    numbers = sorted(set(study.user_attrs.get(ABANDONED, [])) | {number})
    study.set_user_attr(ABANDONED, numbers)


class Recovery:
    """Accounts for the trials of earlier runs of a study in a :class:`Scheduler`.

    Args:
        study: the opened study.
        spec: the study spec.
        out: the study directory.
        make_job: ``(number, attempt, params) -> Job`` of a search trial to re-run.
        message: shows a line to the user.
    """

    def __init__(
        self,
        study: optuna.Study,
        spec: StudySpec,
        out: Path,
        make_job: Callable[[int, int, Mapping[str, Any]], Job],
        message: Callable[[str], None],
    ) -> None:
        self.study = study
        self.spec = spec
        self.out = out
        self.make_job = make_job
        self.message = message
        self.distributions = spec.search.distributions()

    def recover(self, scheduler: Scheduler) -> None:
        """Tell, re-queue or count every trial earlier runs left (nothing for a new study)."""
        existing = existing_rows(self.out, self.spec)
        self._restore_lost_trials(existing)
        dropped = abandoned(self.study)
        for trial in self.study.get_trials(deepcopy=False):
            if trial.state == TrialState.RUNNING:
                rows = existing.get((R.PHASE_SEARCH, trial.number, self.spec.seed))
                self._recover_running(scheduler, trial, rows)
            elif trial.state.is_finished() and trial.number not in dropped:
                scheduler.adopt_told(trial.number)

    def _restore_lost_trials(self, existing: Mapping[tuple[str, int, int], Existing]) -> None:
        """Re-create trials whose journal records were lost but whose rows exist.

        A journal that lost its last records (a crash of the machine: appends are not fsynced)
        would hand out their trial numbers again, giving two rows with one ``trial_id`` and
        different parameters. Trials numbered past the journal's end that have rows are added
        back from them, in order (a number with no row becomes an abandoned FAIL); a trial
        whose rows cannot be added back stops the resume with what to do.
        """
        known = len(self.study.get_trials(deepcopy=False))
        lost = [n for (phase, n, _) in existing if phase == R.PHASE_SEARCH and n >= known]
        if not lost:
            return
        for number in range(known, max(lost) + 1):
            try:
                rows = existing.get((R.PHASE_SEARCH, number, self.spec.seed))
                self.study.add_trial(self._restored(rows))
            except ValueError as exc:
                raise SetupError(
                    f"the Optuna journal of {self.out} lost trials {known}..{max(lost)}, which "
                    f"have rows in {self.out / TRIALS_DIR}, and trial {number} cannot be "
                    f"restored from them ({exc}); continue in a new study (`pathsweep study "
                    "run --out NEW`): the rows here stay readable by `pathsweep analyze`"
                ) from None
        self.message(
            f"restored trials {known}..{max(lost)} from the rows: the journal had lost them"
        )

    def _restored(self, rows: Existing | None) -> FrozenTrial:
        if rows is None or set(rows.params) != set(self.distributions):
            return create_trial(state=TrialState.FAIL, user_attrs={ABANDONED: True})
        params, dists = dict(rows.params), self.distributions
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
        self, scheduler: Scheduler, trial: FrozenTrial, rows: Existing | None
    ) -> None:
        if set(trial.params) != set(self.distributions):  # the dead driver was mid-ask
            _mark_abandoned(self.study, trial.number)
            self.study.tell(trial.number, state=TrialState.FAIL)
            return
        rows = rows or Existing()
        if rows.complete is not None:  # the row was written, the tell was not
            values = [float(rows.complete[m]) for m in self.spec.metrics]
            scheduler.tell(trial.number, trial.number, values)
        elif rows.final_fail or rows.next_attempt >= self.spec.max_attempts:
            scheduler.tell(trial.number, trial.number, None)
        else:
            scheduler.adopt_running(self.make_job(trial.number, rows.next_attempt, trial.params))
