"""The Ray actor that runs trials: long-lived, pinned to a GPU (or a CPU core), thin glue.

Each actor is started once per study slot, loads the dataset once, and then runs
``trial_fn(config)`` for one trial after another. It records where it runs (node id, GPU ids,
pid) so every Parquet row says where its trial ran. Errors raised by a trial are caught and
returned as text; only the actor's death (killed, out of memory, node lost) reaches the driver
as a Ray error.
"""

from __future__ import annotations

import gc
import os
import time
import traceback
from dataclasses import dataclass, replace
from typing import Any

from orchestrator.errors import plain_text
from orchestrator.spec import DataSpec
from orchestrator.trial import TrialConfig, TrialFn, TrialResult, load_data, run_trial

_MAX_ERROR_CHARS = 4000


@dataclass(frozen=True)
class WorkerInfo:
    """Where an actor runs."""

    node_id: str
    gpu_ids: str
    pid: int
    device: str
    hostname: str


@dataclass(frozen=True)
class Outcome:
    """What one ``run`` call returns: a result, or the error a trial raised."""

    started_at: float
    finished_at: float
    result: TrialResult | None = None
    error: str | None = None


def pick_device(preference: str, gpu_ids: list[str]) -> str:
    """The torch device of an actor.

    ``cuda`` when Ray gave the actor a GPU and torch can use CUDA; ``cpu`` otherwise (a
    logical GPU that torch does not see, e.g. on a test cluster, falls back to the CPU).
    """
    import torch

    if preference == "cpu":
        return "cpu"
    if gpu_ids and torch.cuda.is_available():
        return "cuda"
    if preference == "cuda" and torch.cuda.is_available():
        return "cuda"
    return "cpu"


def describe_error(exc: BaseException) -> str:
    """``Type: message`` and the innermost frame, capped in length."""
    frames = traceback.extract_tb(exc.__traceback__)
    where = f" (at {frames[-1].filename}:{frames[-1].lineno})" if frames else ""
    text = plain_text(f"{type(exc).__name__}: {exc}{where}")  # one line, no ANSI codes
    return text[:_MAX_ERROR_CHARS]


class TrialWorker:
    """Runs trials in a Ray actor process (wrapped with ``ray.remote`` by :func:`actor_class`).

    Args:
        trial_fn: the trial function (``run_trial`` or a stand-in); must be picklable.
        device: the spec's device preference (``auto``, ``cpu``, ``cuda``).
    """

    def __init__(self, trial_fn: TrialFn = run_trial, device: str = "auto") -> None:
        import ray

        context = ray.get_runtime_context()
        gpu_ids = [str(g) for g in context.get_accelerator_ids().get("GPU", [])]
        self._fn = trial_fn
        self._info = WorkerInfo(
            node_id=context.get_node_id(),
            gpu_ids=",".join(gpu_ids),
            pid=os.getpid(),
            device=pick_device(device, gpu_ids),
            hostname=os.uname().nodename,
        )

    def ready(self, data: DataSpec | None, seed: int) -> WorkerInfo:
        """Load the dataset (once per process) and say where this actor runs."""
        if data is not None and self._fn is run_trial:
            load_data(data, seed)
        return self._info

    def run(self, config: TrialConfig) -> Outcome:
        """Run one trial; a raised exception comes back as text, not as a Ray error."""
        started = time.time()
        try:
            result = self._fn(replace(config, device=self._info.device))
        except Exception as exc:  # the driver records it as a FAIL row and goes on
            return Outcome(started, time.time(), error=describe_error(exc))
        finally:
            self._free()
        return Outcome(started, time.time(), result=result)

    def _free(self) -> None:
        """Give cached GPU memory back between trials (a CUDA worker only)."""
        if self._info.device == "cuda":
            import torch

            gc.collect()
            torch.cuda.empty_cache()


def actor_class(num_cpus: float, num_gpus: float) -> Any:
    """``TrialWorker`` as a Ray actor class with the given resources; never restarted by Ray
    (the driver replaces a dead actor itself, so it knows which trial was lost)."""
    import ray

    return ray.remote(TrialWorker).options(
        num_cpus=num_cpus, num_gpus=num_gpus, max_restarts=0, max_task_retries=0
    )
