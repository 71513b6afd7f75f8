"""Benchmark: ``pathsweep study status`` latency (issue 10: within 2 s) and the sink's fsync cost.

1. Writes a study directory with ``--trials`` told trials (journal and Parquet rows, no Ray),
   then times ``python -m orchestrator.cli study status DIR`` in fresh processes, side by side
   with the floor it cannot beat: a process that only imports optuna and pyarrow.dataset.
2. Appends ``--rows`` rows to a :class:`~orchestrator.sink.TrialSink` with its fsyncs and with
   ``os.fsync`` made a no-op, side by side: what durability costs per trial.

    python benchmarks/bench_study_dir.py [--trials 500] [--rows 500] [--repeat 5]
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import optuna  # noqa: E402

from orchestrator.rows import declared_schema, trial_id  # noqa: E402
from orchestrator.sink import TrialSink  # noqa: E402
from orchestrator.spec import load_yaml, parse_spec  # noqa: E402
from orchestrator.studydir import TRIALS_DIR, create_study_dir, open_storage  # noqa: E402

SPEC = """\
study: bench-status
model: {name: fc, width: 16, depth: 3}
data: {name: digits}
density: 0.1
search:
  path_exponent: {low: 0.5, high: 3.0}
  iterations: {low: 1, high: 4}
sampler: random
trials: TRIALS
workers: 2
"""


def _row(number: int) -> dict[str, object]:
    return {
        "study": "bench-status",
        "trial_id": trial_id(number, 0),
        "optuna_number": number,
        "attempt": 0,
        "phase": "search",
        "state": "COMPLETE",
        "retry": False,
        "param_path_exponent": 1.0,
        "param_iterations": 2,
        "log_path_kernel_trace": float(number),
    }


def _study(out: Path, trials: int) -> None:
    spec = parse_spec(load_yaml(SPEC.replace("TRIALS", str(trials))))
    create_study_dir(out, spec, None)
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(study_name=spec.study, storage=open_storage(out, None))
    dists = spec.search.distributions()
    with TrialSink(out / TRIALS_DIR, declared_schema(spec), flush_rows=50) as sink:
        for _ in range(trials):
            trial = study.ask(dists)
            sink.append(_row(trial.number))
            study.tell(trial, float(trial.number))


def _time(cmd: list[str], repeat: int) -> float:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        subprocess.run(cmd, check=True, env=env, capture_output=True)
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def _append(directory: Path, rows: int) -> float:
    start = time.perf_counter()
    with TrialSink(directory, flush_rows=100, flush_seconds=3600) as sink:
        for n in range(rows):
            sink.append(_row(n))
    return (time.perf_counter() - start) / rows


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--trials", type=int, default=500)
    p.add_argument("--rows", type=int, default=500)
    p.add_argument("--repeat", type=int, default=5)
    args = p.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "study"
        _study(out, args.trials)
        status = _time([sys.executable, "-m", "orchestrator.cli", "study", "status", str(out)],
                       args.repeat)
        floor = _time([sys.executable, "-c", "import optuna, pyarrow.dataset"], args.repeat)
        print(f"status, {args.trials} trials: {status:.2f} s median; import floor {floor:.2f} s; "
              f"ratio {status / floor:.2f} (goal: status <= 2 s on an idle machine)")
        synced = _append(Path(tmp) / "a" / "trials", args.rows)
        real_fsync = os.fsync
        os.fsync = lambda fd: None  # type: ignore[assignment]
        try:
            unsynced = _append(Path(tmp) / "b" / "trials", args.rows)
        finally:
            os.fsync = real_fsync
        print(f"sink append: {1e3 * synced:.2f} ms/row with fsync, {1e3 * unsynced:.2f} ms/row "
              f"without; ratio {synced / unsynced:.1f}")
    print(f"load average: {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs")


if __name__ == "__main__":
    main()
