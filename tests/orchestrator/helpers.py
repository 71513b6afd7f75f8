"""Shared pieces of the orchestrator tests: small specs and stand-in trial functions."""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from orchestrator.spec import StudySpec, load_yaml, parse_spec
from orchestrator.trial import SleepTrial, TrialConfig, TrialResult, make_config, resolve_params

SMALL_SPEC = """\
study: test-small
model: {name: fc, width: 16, depth: 3}
data: {name: digits}
density: 0.1
search:
  path_exponent: {low: 0.5, high: 3.0}
  score_exponent: {low: 0.0, high: 2.0}
  iterations: {low: 1, high: 4}
  schedule: [exponential, linear]
sampler: random
trials: 6
workers: 2
seed: 0
"""


def small_spec(**changes: Any) -> StudySpec:
    """The small test spec with top-level fields replaced."""
    raw = load_yaml(SMALL_SPEC)
    raw.update(changes)
    return parse_spec(raw)


def write_spec(path: Path, text: str = SMALL_SPEC) -> Path:
    path.write_text(text, encoding="utf-8")
    return path


@dataclass(frozen=True)
class MarkedSleep:
    """Sleeps like SleepTrial, after writing ``<number>-<attempt>.pid`` (the worker's pid)."""

    seconds: float
    marker_dir: str

    def __call__(self, config: TrialConfig) -> TrialResult:
        marker = Path(self.marker_dir) / f"{config.number}-{config.attempt}.pid"
        marker.write_text(str(os.getpid()))
        time.sleep(self.seconds)
        return SleepTrial(0.0)(config)


def wait_for(predicate: Any, timeout: float, interval: float = 0.05) -> bool:
    """Poll ``predicate`` until it is true or ``timeout`` seconds passed."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(interval)
    return False


def search_row(
    spec: StudySpec, trial: Any, attempt: int, state: str, retry: bool = False
) -> dict[str, Any]:
    """The Parquet row a driver writes for one search attempt of ``trial`` (an Optuna trial),
    metrics from ``SleepTrial(0.0)``: for tests that stage what a dead driver left on disk."""
    from orchestrator.rows import trial_id

    params = resolve_params(trial.params, spec.search.fixed())
    metrics = SleepTrial(0.0)(make_config(spec, trial.number, attempt, params)).metrics
    return {
        "study": spec.study,
        "trial_id": trial_id(trial.number, attempt),
        "optuna_number": trial.number,
        "attempt": attempt,
        "phase": "search",
        "state": state,
        "retry": retry,
        "error": None if state == "COMPLETE" else "lost",
        **{f"param_{k}": v for k, v in params.items()},
        **(metrics if state == "COMPLETE" else {}),
    }
