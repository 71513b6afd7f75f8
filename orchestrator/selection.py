"""Choosing trials: the best (Optuna's Pareto front), and the configurations to validate.

Validation tests the data-free objective of Gebhart, Saxena, Schrater (2021), "A Unified Paths
Perspective for Pruning at Initialization": the best configurations by the objective and some
random ones are trained, so the analysis can tell whether the objective chose well.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import optuna


def best_trials(study: optuna.Study) -> list[optuna.trial.FrozenTrial]:
    """The best trial (one objective; the first of ties) or the Pareto front (several).

    Optuna's public ``study.best_trial`` / ``study.best_trials``; empty while no trial is
    COMPLETE.
    """
    if len(study.directions) > 1:
        return study.best_trials
    if not study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,)):
        return []
    return [study.best_trial]


def _fronts(
    trials: Sequence[optuna.trial.FrozenTrial], directions: Sequence[str], needed: int
) -> list[list[optuna.trial.FrozenTrial]]:
    """The first non-dominated fronts of ``trials`` until they hold ``needed`` trials.

    Each front is Optuna's ``best_trials`` of a scratch in-memory study holding the trials not
    in an earlier front (non-dominated sorting by peeling; equal points share a front).
    """
    left = list(trials)
    fronts: list[list[optuna.trial.FrozenTrial]] = []
    verbosity = optuna.logging.get_verbosity()
    optuna.logging.set_verbosity(optuna.logging.WARNING)  # no "new study created" lines
    try:
        while left and sum(map(len, fronts)) < needed:
            scratch = optuna.create_study(directions=list(directions))  # type: ignore[arg-type]
            scratch.add_trials(left)  # renumbered 0.. in the order of ``left``
            on_front = {t.number for t in scratch.best_trials}
            fronts.append([t for i, t in enumerate(left) if i in on_front])
            left = [t for i, t in enumerate(left) if i not in on_front]
    finally:
        optuna.logging.set_verbosity(verbosity)
    return fronts


def select_validation(
    trials: Sequence[optuna.trial.FrozenTrial],
    directions: Sequence[str],
    top_k: int,
    random_k: int,
    seed: int,
) -> tuple[list[optuna.trial.FrozenTrial], list[optuna.trial.FrozenTrial]]:
    """The ``top_k`` best COMPLETE trials and ``random_k`` others drawn with ``seed``.

    Best = highest (or lowest) objective, ties by trial number; with several objectives, by
    non-dominated rank, then number. The random draw is among the trials not in the top, so
    the same study and seed always validate the same configurations (resume relies on it).
    """
    ordered = sorted(trials, key=lambda t: t.number)
    if not ordered:
        return [], []
    if len(directions) > 1:
        ranked = [t for front in _fronts(ordered, directions, top_k) for t in front]
    else:
        sign = 1.0 if directions[0] == "maximize" else -1.0
        ranked = sorted(ordered, key=lambda t: (-sign * t.values[0], t.number))
    top = ranked[:top_k]
    chosen = {t.number for t in top}
    rest = [t for t in ordered if t.number not in chosen]
    rng = np.random.default_rng(seed)
    size = min(random_k, len(rest))
    picks = sorted(rng.choice(len(rest), size=size, replace=False)) if size else []
    return top, [rest[i] for i in picks]
