"""``pathsweep study status``: where a study stands, from its journal and its rows.

No Ray and no torch import (it answers within a couple of seconds), no write to the study, and
it survives a driver working on the study or killed at any point: a journal record being
appended is not read yet, the rows are read as ``orchestrator.sink.read_trials`` promises.
A damaged journal or Parquet file becomes one line naming it.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import optuna

from orchestrator.errors import SetupError
from orchestrator.progress import format_params
from orchestrator.rows import PHASE_RANDOM, PHASE_TOP
from orchestrator.sink import read_trials
from orchestrator.spec import StudySpec, load_yaml
from orchestrator.studydir import SPEC_FILE, lock_holder, open_storage


@dataclass(frozen=True)
class StatusSpec:
    """What status needs of a study's spec."""

    study: str
    trials: int
    metrics: tuple[str, ...]
    top_k: int = 0
    random_k: int = 0
    runs_per_config: int = 1  # validation runs of each chosen configuration (validate.seeds)

    @classmethod
    def of(cls, spec: StudySpec) -> StatusSpec:
        """From a parsed spec."""
        v = spec.validate
        return cls(
            spec.study, spec.trials, tuple(spec.metrics), v.top_k, v.random_k, v.runs_per_config()
        )

    @classmethod
    def read(cls, out: Path) -> StatusSpec:
        """From ``OUT/spec.yaml`` as the study wrote it (validated then, so read plainly here:
        parsing a spec imports torch, which alone takes longer than status may).

        Raises:
            SetupError: the file is not the spec a study writes.
        """
        path = out / SPEC_FILE
        try:
            raw = load_yaml(path.read_text(encoding="utf-8"))  # anchors and aliases refused
            validate = raw.get("validate") or {}
            return cls(
                study=str(raw["study"]),
                trials=int(raw["trials"]),
                metrics=tuple(str(o["metric"]) for o in raw["objectives"]),
                top_k=int(validate.get("top_k", 0)),
                random_k=int(validate.get("random_k", 0)),
                runs_per_config=len(validate.get("seeds") or [None]),
            )
        except (OSError, AttributeError, KeyError, TypeError, ValueError) as exc:
            raise SetupError(
                f"{path} is not a study's spec ({type(exc).__name__}: {exc})"
            ) from None


def _trial_lines(spec: StatusSpec, study: optuna.Study) -> list[str]:
    trials = study.get_trials(deepcopy=False)
    counts = Counter(t.state.name for t in trials)
    lines = [
        f"trials: {counts.get('COMPLETE', 0)}/{spec.trials} COMPLETE, "
        f"{counts.get('FAIL', 0)} FAIL, {counts.get('RUNNING', 0)} RUNNING"
    ]
    if not counts.get("COMPLETE"):
        return lines
    if len(spec.metrics) == 1:
        best = study.best_trial
        lines.append(
            f"best: {spec.metrics[0]}={best.values[0]:.6g} (trial {best.number}) "
            f"{format_params(best.params, limit=120)}"
        )
    else:
        front = study.best_trials
        lines.append(f"Pareto front: {len(front)} trials ({', '.join(spec.metrics)})")
    return lines


def _row_lines(spec: StatusSpec, out: Path) -> list[str]:
    try:
        table = read_trials(out)
    except SetupError as exc:
        return [f"rows: cannot be read: {exc}"]
    if not table.num_rows:
        return ["rows: none yet"]
    data = table.select(["phase", "state", "retry"]).to_pylist()
    states = Counter(r["state"] for r in data)
    retried = sum(1 for r in data if r["retry"])
    lines = [
        f"rows: {table.num_rows} ({', '.join(f'{n} {s}' for s, n in sorted(states.items()))}; "
        f"{retried} attempts retried)"
    ]
    runs = spec.runs_per_config
    planned = {PHASE_TOP: spec.top_k * runs, PHASE_RANDOM: spec.random_k * runs}
    if any(planned.values()):
        done = Counter(r["phase"] for r in data if r["state"] == "COMPLETE")
        parts = [f"{phase} {done.get(phase, 0)}/{k}" for phase, k in planned.items() if k]
        lines.append(f"validation: {', '.join(parts)} COMPLETE")
    return lines


def study_status(
    spec: StudySpec | StatusSpec, out: Path, storage: str | None, run: dict[str, Any]
) -> list[str]:
    """Lines describing a study: trial counts, best value(s), rows, validation, last run."""
    if not isinstance(spec, StatusSpec):
        spec = StatusSpec.of(spec)
    lines = [f"study {spec.study} in {out}"]
    try:
        study = optuna.load_study(study_name=spec.study, storage=open_storage(out, storage))
        lines += _trial_lines(spec, study)
    except KeyError:
        lines.append("trials: the study has not started")
    except SetupError as exc:
        lines.append(f"trials: the journal cannot be read: {exc}")
    lines += _row_lines(spec, out)
    runs = run.get("runs", [])
    if runs:
        last = runs[-1]
        state = last.get("status")
        if state == "running":
            holder = lock_holder(out)
            state = (
                f"running ({holder})"
                if holder
                else "stopped without a record of why (killed, or the disk was full); "
                f"continue with `pathsweep study resume {out}`"
            )
        lines.append(
            f"last run: {state} (started {last.get('started_at')}, "
            f"{'resume' if last.get('resume') else 'run'})"
        )
    return lines
