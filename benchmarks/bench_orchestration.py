"""Orchestration benchmark: what the driver, the actors and the Parquet sink cost per trial.

One run prints, side by side:

1. Overhead per trial with a trivial trial function (``SleepTrial(0)``), from the rows' own
   timestamps: ``(wall - sum(durations) / workers) / trials`` with ``wall`` = last
   ``finished_at`` - first ``started_at``. The same objective through Ray Tune + OptunaSearch
   (actors reused), timed the same way, is the reference (skipped with a message when
   ``ray[tune]`` is missing: ``pip install 'pathsweep[bench]'``).
2. Actor utilization with 2 workers and 0.5 s trials: ``sum(durations) / (workers * wall)``.
3. Driver memory (RSS) over 5,000 trials, and how TPE's ask time grows with the history.

Usage::

    python benchmarks/bench_orchestration.py            # full run (several minutes)
    python benchmarks/bench_orchestration.py --quick    # smaller numbers, for a smoke test
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from contextlib import redirect_stderr, redirect_stdout
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import optuna

from orchestrator.driver import run_study
from orchestrator.progress import BaseView
from orchestrator.sink import read_trials
from orchestrator.spec import StudySpec, load_yaml, parse_spec
from orchestrator.studydir import create_study_dir
from orchestrator.trial import SleepTrial

SPEC = """\
study: bench
model: {name: fc, width: 16, depth: 3}
data: {name: digits}
density: 0.1
search:
  path_exponent: {low: 0.5, high: 3.0}
  score_exponent: {low: 0.0, high: 3.0}
  iterations: {low: 1, high: 200, log: true}
  schedule: [exponential, linear]
sampler: tpe
trials: 100
workers: 1
seed: 0
"""


def make_spec(trials: int, workers: int, sampler: str) -> StudySpec:
    """The benchmark study: the search space of examples/digits-synflow.yaml, trivial trials."""
    raw = load_yaml(SPEC)
    raw.update(trials=trials, workers=workers, sampler=sampler)
    return parse_spec(raw)


def row_stats(out: Path, workers: int) -> dict[str, float]:
    """Overhead per trial and utilization from the rows' timestamps (search rows only)."""
    import pyarrow as pa
    import pyarrow.compute as pc

    table = read_trials(out)
    table = table.filter(pc.equal(table["phase"], "search"))
    started = pc.cast(table["started_at"], pa.int64()).to_numpy() / 1e6  # microseconds
    finished = pc.cast(table["finished_at"], pa.int64()).to_numpy() / 1e6
    wall = float(finished.max() - started.min())
    busy = float(pc.sum(table["duration_s"]).as_py())
    n = table.num_rows
    return {
        "trials": n,
        "wall_s": wall,
        "overhead_ms": 1e3 * (wall - busy / workers) / n,
        "utilization": busy / (workers * wall),
    }


def run_ours(spec: StudySpec, trial_fn: Any, view: BaseView | None = None) -> dict[str, float]:
    """Run a study with a stand-in trial function; row statistics and driver times per trial."""
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "study"
        create_study_dir(out, spec, None)
        summary = run_study(spec, out, trial_fn=trial_fn, view=view, poll_s=0.5)
        stats = row_stats(out, summary.workers)
    t = summary.times
    n = stats["trials"]
    stats.update(
        ask_ms=1e3 * t.ask / n, tell_ms=1e3 * t.tell / n, sink_ms=1e3 * t.sink / n,
        submit_ms=1e3 * t.submit / n,
    )  # fmt: skip
    return stats


# --------------------------------------------------------------------------- Ray Tune


def _tune_trainable(config: dict[str, Any]) -> None:
    from ray import tune

    start = time.time()
    x, y = config["path_exponent"] - 1.5, config["score_exponent"] - 1.0
    value = -(x * x) - 0.5 * y * y
    tune.report({"log_path_kernel_trace": value, "started_at": start, "finished_at": time.time()})


def run_tune(trials: int, workers: int, sampler: str) -> dict[str, float] | None:
    """The same objective through Ray Tune + OptunaSearch (reused actors); None if missing."""
    try:
        from ray import tune
        from ray.tune.search.optuna import OptunaSearch
    except ImportError as exc:
        print(f"  (Ray Tune not importable, skipped: {exc}; pip install 'pathsweep[bench]')")
        return None
    spec = make_spec(trials, workers, sampler)
    samplers = {"tpe": optuna.samplers.TPESampler, "random": optuna.samplers.RandomSampler}
    search = OptunaSearch(
        space=spec.search.distributions(), metric="log_path_kernel_trace", mode="max",
        sampler=samplers[sampler](seed=0),
    )  # fmt: skip
    with tempfile.TemporaryDirectory() as tmp:
        tuner = tune.Tuner(
            _tune_trainable,
            tune_config=tune.TuneConfig(
                search_alg=search, num_samples=trials, max_concurrent_trials=workers,
                reuse_actors=True,
            ),
            run_config=tune.RunConfig(storage_path=tmp, name="bench", verbose=0),
        )  # fmt: skip
        with open(os.devnull, "w") as quiet, redirect_stdout(quiet), redirect_stderr(quiet):
            frame = tuner.fit().get_dataframe()
    wall = float(frame["finished_at"].max() - frame["started_at"].min())
    busy = float((frame["finished_at"] - frame["started_at"]).sum())
    return {
        "trials": len(frame),
        "wall_s": wall,
        "overhead_ms": 1e3 * (wall - busy / workers) / len(frame),
    }


# --------------------------------------------------------------------------- memory, TPE


def rss_mb() -> float:
    """Current resident memory of this process (MiB)."""
    with open("/proc/self/statm") as handle:
        pages = int(handle.read().split()[1])
    return pages * os.sysconf("SC_PAGE_SIZE") / 2**20


class RssView(BaseView):
    """Samples the driver's RSS every ``every`` finished trials."""

    def __init__(self, every: int) -> None:
        super().__init__()
        self.every = every
        self.samples: list[tuple[int, float]] = []

    def trial_finished(self, row: Any, counted: bool, best: str) -> None:
        super().trial_finished(row, counted, best)
        if self.state.done % self.every == 0:
            self.samples.append((self.state.done, rss_mb()))


def tpe_ask_growth(points: list[int], asks: int = 5) -> list[tuple[int, float]]:
    """Mean TPE ask time (ms) after ``n`` finished trials, for each ``n`` in ``points``."""
    spec = make_spec(max(points), 1, "tpe")
    dists = spec.search.distributions()
    study = optuna.create_study(direction="maximize", sampler=optuna.samplers.TPESampler(seed=0))
    filler = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=1))
    growth, have = [], 0
    for n in points:
        trials = []
        for _ in range(n - have):
            t = filler.ask(dists)
            filler.tell(t, 0.0)
            trials.append(optuna.trial.create_trial(
                params=t.params, distributions=dists, value=-(t.params["path_exponent"] - 1.5) ** 2
            ))  # fmt: skip
        study.add_trials(trials)
        have = n
        start = time.perf_counter()
        for _ in range(asks):
            trial = study.ask(dists)
            study.tell(trial, state=optuna.trial.TrialState.FAIL)
        growth.append((n, 1e3 * (time.perf_counter() - start) / asks))
    return growth


# --------------------------------------------------------------------------- main


def main(argv: list[str] | None = None) -> int:
    """Run every measurement and print the numbers side by side."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small numbers (smoke test)")
    parser.add_argument("--json", help="also write the numbers to this file")
    args = parser.parse_args(argv)
    import ray

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    os.environ.setdefault("RAY_DEDUP_LOGS", "0")
    n_overhead = 60 if args.quick else 300
    n_memory = 500 if args.quick else 5000
    results: dict[str, Any] = {"cpus": os.cpu_count()}
    ray.init(num_cpus=max(2, os.cpu_count() or 2), include_dashboard=False, log_to_driver=False)
    try:
        print(f"1. overhead per trial, trivial trial, {n_overhead} trials (from row timestamps)")
        print(
            f"   {'workers':>7} {'sampler':>7} {'pathsweep ms':>12} {'excl. ask':>9} "
            f"{'ray tune ms':>11} {'tune/ours':>9}   driver ms/trial: ask tell sink submit"
        )
        for workers, sampler in ((1, "random"), (1, "tpe"), (2, "tpe")):
            ours = run_ours(make_spec(n_overhead, workers, sampler), SleepTrial(0.0))
            tune = run_tune(n_overhead, workers, sampler)
            ratio = f"{tune['overhead_ms'] / ours['overhead_ms']:9.1f}" if tune else "        -"
            tune_ms = f"{tune['overhead_ms']:11.2f}" if tune else "          -"
            print(
                f"   {workers:>7} {sampler:>7} {ours['overhead_ms']:12.2f} "
                f"{ours['overhead_ms'] - ours['ask_ms']:9.2f} {tune_ms} {ratio}   "
                f"{ours['ask_ms']:.2f} {ours['tell_ms']:.2f} {ours['sink_ms']:.2f} "
                f"{ours['submit_ms']:.2f}",
                flush=True,
            )
            results[f"overhead_{workers}w_{sampler}"] = {"ours": ours, "tune": tune}

        n_util = 20 if args.quick else 60
        util = run_ours(make_spec(n_util, 2, "tpe"), SleepTrial(0.5))
        print(
            f"2. utilization, 2 workers, 0.5 s trials, {n_util} trials: "
            f"{util['utilization']:.3f} (overhead {util['overhead_ms']:.2f} ms/trial)",
            flush=True,
        )
        results["utilization"] = util

        view = RssView(every=n_memory // 10)
        mem = run_ours(make_spec(n_memory, 2, "random"), SleepTrial(0.0), view)
        first, last = view.samples[0], view.samples[-1]
        per_trial_kb = 1024 * (last[1] - first[1]) / max(1, last[0] - first[0])
        print(
            f"3. driver RSS over {n_memory} trials (random sampler, journal storage): "
            + " ".join(f"{n}:{mb:.0f}MiB" for n, mb in view.samples)
            + f"  -> {per_trial_kb:.1f} KiB/trial ({mem['overhead_ms']:.2f} ms/trial overhead)"
        )
        results["rss"] = {"samples": view.samples, "kib_per_trial": per_trial_kb}
    finally:
        ray.shutdown()
    points = [100, 500, 1000, 2000] + ([] if args.quick else [5000])
    growth = tpe_ask_growth(points)
    print("4. TPE ask time vs finished trials: " + " ".join(f"{n}:{ms:.1f}ms" for n, ms in growth))
    results["tpe_ask_ms"] = growth
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())
