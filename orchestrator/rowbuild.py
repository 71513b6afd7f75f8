"""The Parquet row of one attempt, built from its job, its worker and its outcome.

The columns and their types are ``orchestrator.rows``'s; this module fills them for the driver
(see ``docs/design.md``, data flow of one trial: job -> actor -> result -> row). The statistics
a trial returns are those of Gebhart, Saxena, Schrater (2021), "A Unified Paths Perspective for
Pruning at Initialization".
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from orchestrator import rows as R
from orchestrator.maskstore import store_masks
from orchestrator.scheduler import Job
from orchestrator.spec import StudySpec
from orchestrator.worker import WorkerInfo


@dataclass(frozen=True)
class RowBuilder:
    """Builds rows of one study.

    Args:
        study: the study name.
        seed: the study seed (each row's ``seed`` is its job's: the study's or a validation
            seed, see ``validate.seeds``).
        model: the model name (``param_model``).
        dataset: the dataset name (``param_dataset``).
        versions: ``pathsweep_version`` and ``torch_version``.
        out: the study directory (masks files are stored under it).
    """

    study: str
    seed: int
    model: str
    dataset: str
    versions: Mapping[str, str]
    out: Path

    @classmethod
    def for_spec(cls, spec: StudySpec, out: Path, versions: Mapping[str, str]) -> RowBuilder:
        """The builder of ``spec``'s rows."""
        return cls(spec.study, spec.seed, spec.model.name, spec.data.name, dict(versions), out)

    def row(
        self,
        job: Job,
        state: str,
        info: WorkerInfo | None,
        times: tuple[float | None, float | None],
        error: str | None = None,
        retry: bool = False,
        result: Any = None,
    ) -> dict[str, Any]:
        """The row of ``job``'s attempt.

        Args:
            job: the attempt.
            state: ``"COMPLETE"`` or ``"FAIL"``.
            info: where the actor ran (None when it never said).
            times: (started, finished) epoch seconds.
            error: the FAIL reason.
            retry: the attempt is retried (a lost actor).
            result: the trial's ``TrialResult``; its masks are stored before the row is, so
                ``masks_path`` never dangles.
        """
        started, finished = times
        row: dict[str, Any] = {
            "study": self.study,
            "trial_id": R.trial_id(job.number, job.attempt, job.phase, job.seed),
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
            "seed": job.config.seed,  # the study seed, or a validation seed
            **self.versions,
            R.param_column("model"): self.model,
            R.param_column("dataset"): self.dataset,
        }
        row.update({R.param_column(k): v for k, v in job.params.items()})
        if result is not None:
            row.update(result.metrics)
            row.update(result.timings)
            row["device"] = result.device or row["device"]
            if result.masks is not None:
                row["masks_path"] = store_masks(self.out, result.masks, result.masks_key or "")
        return row


def objective_values(
    metrics: Mapping[str, Any], names: Sequence[str]
) -> tuple[list[float], str | None]:
    """The objectives' values, or the reason they cannot be told (a missing or NaN one)."""
    values = []
    for name in names:
        value = metrics.get(name)
        if value is None or (isinstance(value, float) and math.isnan(value)):
            return [], f"objective {name} is {'missing' if value is None else 'NaN'}"
        values.append(float(value))
    return values, None
