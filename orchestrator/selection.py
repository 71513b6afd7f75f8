"""Choosing trials: the best so far (a Pareto front), and the configurations to validate.

Validation tests the data-free objective of Gebhart, Saxena, Schrater (2021), "A Unified Paths
Perspective for Pruning at Initialization": the best configurations by the objective and some
random ones are trained, so the analysis can tell whether the objective chose well.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import optuna


def dominates(a: Sequence[float], b: Sequence[float]) -> bool:
    """``a`` is at least as good everywhere and better somewhere (all maximized)."""
    return all(x >= y for x, y in zip(a, b, strict=True)) and any(
        x > y for x, y in zip(a, b, strict=True)
    )


class BestTracker:
    """The best value (one objective) or the Pareto front (several), updated per trial.

    Args:
        metrics: objective names.
        directions: ``"maximize"`` or ``"minimize"`` per objective.
    """

    def __init__(self, metrics: Sequence[str], directions: Sequence[str]) -> None:
        self.metrics = list(metrics)
        self._signs = [1.0 if d == "maximize" else -1.0 for d in directions]
        self.front: list[tuple[tuple[float, ...], int]] = []

    def add(self, values: Sequence[float], number: int) -> None:
        """Consider trial ``number`` with objective ``values``."""
        point = tuple(s * v for s, v in zip(self._signs, values, strict=True))
        if any(dominates(p, point) or p == point for p, _ in self.front):
            return
        self.front = [(p, n) for p, n in self.front if not dominates(point, p)]
        self.front.append((point, number))

    def best(self) -> list[dict[str, object]]:
        """The front's trials: ``{"number": n, "values": [...]}`` in the objectives' signs."""
        return [
            {"number": n, "values": [s * v for s, v in zip(self._signs, p, strict=True)]}
            for p, n in self.front
        ]

    def text(self) -> str:
        """Short text for the live view."""
        if not self.front:
            return "-"
        if len(self.metrics) == 1:
            (value,), number = self.front[0]
            return f"{self.metrics[0]}={self._signs[0] * value:.4g} (#{number})"
        return f"Pareto front of {len(self.front)} trials"


def pareto_ranks(points: np.ndarray) -> np.ndarray:
    """Non-dominated sorting rank of every row of ``points`` (all objectives maximized)."""
    n = len(points)
    ge = (points[:, None, :] >= points[None, :, :]).all(-1)
    gt = (points[:, None, :] > points[None, :, :]).any(-1)
    dominated_by = (ge & gt).T  # [i, j]: j dominates i
    ranks = np.full(n, -1)
    rank, left = 0, np.ones(n, dtype=bool)
    while left.any():
        front = left & ~(dominated_by & left[None, :]).any(1)
        ranks[front] = rank
        left &= ~front
        rank += 1
    return ranks


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
    signs = np.array([1.0 if d == "maximize" else -1.0 for d in directions])
    ordered = sorted(trials, key=lambda t: t.number)
    if not ordered:
        return [], []
    points = np.array([t.values for t in ordered], dtype=float) * signs
    ranks = pareto_ranks(points) if len(directions) > 1 else -points[:, 0]
    order = sorted(range(len(ordered)), key=lambda i: (ranks[i], ordered[i].number))
    top = [ordered[i] for i in order[:top_k]]
    rest = [ordered[i] for i in sorted(order[top_k:])]
    rng = np.random.default_rng(seed)
    size = min(random_k, len(rest))
    picks = sorted(rng.choice(len(rest), size=size, replace=False)) if size else []
    return top, [rest[i] for i in picks]
