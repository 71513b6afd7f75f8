"""Driver throughput of Optuna samplers: ask+tell time per trial as a study grows.

pathsweep's driver is one process that asks Optuna for every trial's parameters and tells it
every result (docs/design.md, one trial end to end). However many GPUs a cluster has, trials can start no
faster than this loop turns, so its per-trial cost bounds the useful cluster size
(docs/scaling.md). This script measures that cost for TPE, NSGA-II and random sampling, with
in-memory storage and with the journal file the driver keeps in the study directory, at
several study sizes.

Method. One study per (sampler, storage). It is filled with completed trials up to just below
each size (``create_trial`` + ``add_trials``: cheap, and no sampler runs), then repeated
windows of trials are timed around that size with the driver's access pattern: ``pending``
trials are always running (asked, not yet told), as with that many workers, and each step asks
one new trial and tells the oldest running one. The best window's mean is reported (timeit's
rule: other processes only add time), with the median, p95 and worst window beside it. Trials are sampled over the pathsweep search space
(2 floats, 1 log-int, 2 categoricals; docs/design.md, the study spec) and scored by a cheap analytic
function, so only Optuna's own cost is measured. Prefilled trials carry their NSGA-II
generation, so NSGA-II continues a real generation sequence.

Usage::

    python benchmarks/bench_samplers.py                 # 100, 1k, 5k, 10k trials; ~3-5 min
    python benchmarks/bench_samplers.py --quick         # 100 and 1k trials; ~10-30 s
    python benchmarks/bench_samplers.py --json out.json --overhead-ms 5

Timings are wall-clock on whatever else the machine is doing: report the machine with them.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import random
import statistics
import sys
import tempfile
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import optuna
from optuna.distributions import (
    BaseDistribution,
    CategoricalDistribution,
    FloatDistribution,
    IntDistribution,
)
from optuna.storages import BaseStorage, InMemoryStorage, JournalStorage
from optuna.storages.journal import JournalFileBackend

# The pathsweep search space over the SynFlow family (docs/design.md, "The study spec").
SEARCH_SPACE: dict[str, BaseDistribution] = {
    "path_exponent": FloatDistribution(0.5, 3.0),
    "score_exponent": FloatDistribution(0.0, 3.0),
    "iterations": IntDistribution(1, 200, log=True),
    "schedule": CategoricalDistribution(["exponential", "linear"]),
    "input": CategoricalDistribution(["ones", "data-mean"]),
}
SAMPLERS = ("tpe", "nsga2", "random")
STORAGES = ("memory", "journal")
NSGA2_POPULATION = 50
FULL_SIZES = (100, 1_000, 5_000, 10_000)
QUICK_SIZES = (100, 1_000)
# Timed trials per window: enough for a stable mean, at least two NSGA-II generations.
WINDOWS = {"tpe": 50, "nsga2": 2 * NSGA2_POPULATION, "random": 200}
GPUS = (8, 64, 256)
TRIAL_SECONDS = (1.0, 10.0, 300.0)


@dataclass(frozen=True)
class Measurement:
    """Per-trial driver cost of one sampler and storage around one study size."""

    sampler: str
    storage: str
    size: int
    window: int
    repeats: int
    pending: int
    ask_ms: float
    tell_ms: float
    mean_ms: float
    median_ms: float
    p95_ms: float
    worst_mean_ms: float

    @property
    def trials_per_s(self) -> float:
        """Sustained trials per second of a driver that only asks and tells."""
        return 1000.0 / self.mean_ms


def objective(params: dict[str, Any]) -> float:
    """A cheap, smooth stand-in for a data-free objective such as log Tr(Π) (Gebhart et al. 2021).

    Peaks near path_exponent = 1.5 with score_exponent = path_exponent (the Taylor saliency of
    ‖v‖_p^p), grows slowly with the number of pruning rounds, and prefers one level of each
    categorical, so samplers have something to learn.
    """
    p, a = params["path_exponent"], params["score_exponent"]
    value = -((p - 1.5) ** 2) - 0.5 * (a - p) ** 2 + 0.1 * math.log(params["iterations"])
    value += 0.2 if params["schedule"] == "exponential" else 0.0
    return value + (0.1 if params["input"] == "ones" else 0.0)


def random_params(rng: random.Random) -> dict[str, Any]:
    """Parameters drawn uniformly (log-uniformly for the log-int) from ``SEARCH_SPACE``."""
    return {
        "path_exponent": rng.uniform(0.5, 3.0),
        "score_exponent": rng.uniform(0.0, 3.0),
        "iterations": min(200, int(math.exp(rng.uniform(0.0, math.log(201))))),
        "schedule": rng.choice(["exponential", "linear"]),
        "input": rng.choice(["ones", "data-mean"]),
    }


def make_sampler(name: str, seed: int) -> optuna.samplers.BaseSampler:
    """Optuna's defaults for each sampler (TPE: multivariate, constant liar, in Optuna 5)."""
    factories: dict[str, Callable[[], optuna.samplers.BaseSampler]] = {
        "tpe": lambda: optuna.samplers.TPESampler(seed=seed),
        "nsga2": lambda: optuna.samplers.NSGAIISampler(population_size=NSGA2_POPULATION, seed=seed),
        "random": lambda: optuna.samplers.RandomSampler(seed=seed),
    }
    if name not in factories:
        raise ValueError(f"sampler must be one of {sorted(factories)}, but got {name=}")
    return factories[name]()


def make_storage(kind: str, directory: Path) -> BaseStorage:
    """In-memory storage, or a journal file as the driver keeps in the study directory."""
    if kind == "memory":
        return InMemoryStorage()
    if kind == "journal":
        return JournalStorage(JournalFileBackend(str(directory / "optuna-journal.log")))
    raise ValueError(f"storage must be one of {list(STORAGES)}, but got {kind=}")


def prefill(study: optuna.Study, count: int, rng: random.Random) -> None:
    """Append ``count`` completed trials without running the sampler.

    Each carries the NSGA-II generation it would have had, so that NSGA-II's per-generation
    bookkeeping sees a study of this size rather than a fresh one.
    """
    key = optuna.samplers.NSGAIISampler._get_generation_key()
    start = len(study.get_trials(deepcopy=False))
    trials = []
    for i in range(start, start + count):
        params = random_params(rng)
        attrs = {key: i // NSGA2_POPULATION}
        trials.append(
            optuna.trial.create_trial(
                params=params,
                distributions=SEARCH_SPACE,
                value=objective(params),
                system_attrs=attrs,
            )
        )
    study.add_trials(trials)


def time_window(study: optuna.Study, window: int, pending: int) -> tuple[list[float], list[float]]:
    """Ask/tell times (seconds) of ``window`` trials with ``pending`` trials always running."""
    running: deque[optuna.Trial] = deque(study.ask(SEARCH_SPACE) for _ in range(pending))
    asks, tells = [], []
    for _ in range(window):
        start = time.perf_counter()
        trial = study.ask(SEARCH_SPACE)
        asked = time.perf_counter()
        running.append(trial)
        oldest = running.popleft()
        study.tell(oldest, objective(oldest.params))
        asks.append(asked - start)
        tells.append(time.perf_counter() - asked)
    while running:
        oldest = running.popleft()
        study.tell(oldest, objective(oldest.params))
    return asks, tells


def summarize(
    sampler: str,
    storage: str,
    size: int,
    pending: int,
    windows: list[tuple[list[float], list[float]]],
) -> Measurement:
    """Statistics of repeated windows around one size.

    Means (ask, tell, ask+tell) come from the window with the lowest ask+tell mean, as timeit
    takes the best repeat: other processes on the machine only ever add time. The median and
    95th percentile are over every timed trial; ``worst_mean_ms`` shows the spread.
    """
    means = [statistics.fmean(a) + statistics.fmean(t) for a, t in windows]
    asks, tells = windows[means.index(min(means))]
    totals = sorted(1000.0 * (a + t) for w in windows for a, t in zip(*w, strict=True))
    return Measurement(
        sampler=sampler,
        storage=storage,
        size=size,
        window=len(asks),
        repeats=len(windows),
        pending=pending,
        ask_ms=1000.0 * statistics.fmean(asks),
        tell_ms=1000.0 * statistics.fmean(tells),
        mean_ms=1000.0 * min(means),
        median_ms=statistics.median(totals),
        p95_ms=totals[min(len(totals) - 1, math.ceil(0.95 * len(totals)) - 1)],
        worst_mean_ms=1000.0 * max(means),
    )


def measure(
    sampler: str,
    storage: str,
    sizes: Sequence[int],
    window: int,
    pending: int,
    seed: int,
    repeats: int = 3,
    directory: Path | None = None,
) -> list[Measurement]:
    """Per-trial cost around each of ``sizes`` (ascending) in one growing study.

    The ``repeats`` windows of ``window`` trials are centred on each size. A journal is
    written to a temporary directory inside ``directory`` (default: the system's).
    """
    if window < 1 or pending < 0 or repeats < 1:
        raise ValueError(
            f"window >= 1, pending >= 0, repeats >= 1 must hold, but got {window=}, {pending=}, {repeats=}"
        )
    rng = random.Random(seed)
    results = []
    with tempfile.TemporaryDirectory(dir=directory) as tmp:
        study = optuna.create_study(
            storage=make_storage(storage, Path(tmp)),
            sampler=make_sampler(sampler, seed),
            direction="maximize",
        )
        for size in sorted(sizes):
            have = len(study.get_trials(deepcopy=False))
            prefill(study, max(0, size - repeats * window // 2 - have), rng)
            windows = [time_window(study, window, pending) for _ in range(repeats)]
            results.append(summarize(sampler, storage, size, pending, windows))
    return results


def journal_records_per_trial(sampler: str, seed: int, trials: int = 100) -> float:
    """Journal records (each one locked, appended and fsync'ed) that one ask+tell writes."""
    with tempfile.TemporaryDirectory() as tmp:
        storage = make_storage("journal", Path(tmp))
        study = optuna.create_study(
            storage=storage, sampler=make_sampler(sampler, seed), direction="maximize"
        )
        before = (Path(tmp) / "optuna-journal.log").read_bytes().count(b"\n")
        time_window(study, trials, pending=0)
        after = (Path(tmp) / "optuna-journal.log").read_bytes().count(b"\n")
    return (after - before) / trials


def fsync_ms(directory: Path | None, count: int = 200) -> tuple[float, float]:
    """Median and 95th percentile of appending a 200-byte line and fsync'ing it, in ms."""
    times = []
    with tempfile.TemporaryDirectory(dir=directory) as tmp, open(Path(tmp) / "f", "ab") as f:
        for _ in range(count):
            start = time.perf_counter()
            f.write(b"x" * 199 + b"\n")
            f.flush()
            os.fsync(f.fileno())
            times.append(1000.0 * (time.perf_counter() - start))
    times.sort()
    return statistics.median(times), times[math.ceil(0.95 * count) - 1]


def utilization(trial_s: float, gpus: int, driver_s: float) -> float:
    """Fraction of time the GPUs' actors run trials when one serial driver feeds them.

    The driver spends ``driver_s`` per trial (ask + tell + its own bookkeeping) and so supplies
    at most ``1 / driver_s`` trials per second; ``gpus`` actors running ``trial_s``-second
    trials consume ``gpus / trial_s``. Utilization ≈ min(1, trial_s / (gpus * driver_s)).
    """
    if trial_s <= 0 or gpus < 1 or driver_s <= 0:
        raise ValueError(
            f"trial_s > 0, gpus >= 1, driver_s > 0 must hold, got {trial_s=}, {gpus=}, {driver_s=}"
        )
    return min(1.0, trial_s / (gpus * driver_s))


def sampler_table(results: Sequence[Measurement]) -> str:
    """A Markdown table of the measurements."""
    lines = [
        "| sampler | storage | trials in study | ask ms | tell ms | ask+tell ms | trials/s "
        "| median / p95 / worst-window ms |",
        "|---|---|---:|---:|---:|---:|---:|---:|",
    ]
    for m in results:
        lines.append(
            f"| {m.sampler} | {m.storage} | {m.size:,} | {m.ask_ms:.2f} | {m.tell_ms:.2f} | "
            f"{m.mean_ms:.2f} | {m.trials_per_s:,.0f} | "
            f"{m.median_ms:.2f} / {m.p95_ms:.2f} / {m.worst_mean_ms:.2f} |"
        )
    return "\n".join(lines)


def utilization_table(results: Sequence[Measurement], storage: str, overhead_ms: float) -> str:
    """Expected utilization per sampler and size for every GPU count and trial duration."""
    header = "| sampler | trials in study | driver ms/trial | " + " | ".join(
        f"{g} GPUs, {t:g} s" for g in GPUS for t in TRIAL_SECONDS
    )
    lines = [header + " |", "|---|---:|---:|" + "---:|" * (len(GPUS) * len(TRIAL_SECONDS))]
    for m in (r for r in results if r.storage == storage):
        driver_ms = m.mean_ms + overhead_ms
        cells = [
            f"{utilization(t, g, driver_ms / 1000.0):.0%}" for g in GPUS for t in TRIAL_SECONDS
        ]
        lines.append(f"| {m.sampler} | {m.size:,} | {driver_ms:.1f} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help=f"sizes {QUICK_SIZES}, half windows")
    parser.add_argument("--sizes", type=int, nargs="+", help=f"study sizes (default {FULL_SIZES})")
    parser.add_argument("--samplers", nargs="+", choices=SAMPLERS, default=list(SAMPLERS))
    parser.add_argument("--storages", nargs="+", choices=STORAGES, default=list(STORAGES))
    parser.add_argument("--pending", type=int, default=8, help="running trials (workers - 1)")
    parser.add_argument("--repeats", type=int, help="windows per size (default 3; --quick 2)")
    parser.add_argument("--overhead-ms", type=float, default=5.0, help="driver bookkeeping/trial")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--journal-dir", type=Path, help="filesystem for the journal (default: tmp)"
    )
    parser.add_argument("--json", type=Path, help="also write the measurements here")
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    sizes = args.sizes or (QUICK_SIZES if args.quick else FULL_SIZES)
    started = time.perf_counter()
    results: list[Measurement] = []
    for storage in args.storages:
        for sampler in args.samplers:
            window = WINDOWS[sampler] // (2 if args.quick else 1)
            repeats = args.repeats or (2 if args.quick else 3)
            results += measure(
                sampler, storage, sizes, window, args.pending, args.seed, repeats, args.journal_dir
            )
            print(
                f"  {sampler}/{storage} done at {time.perf_counter() - started:.0f} s",
                file=sys.stderr,
            )
    print(
        f"optuna {optuna.__version__}, Python {platform.python_version()}, {platform.machine()}, "
        f"pending={args.pending}, total {time.perf_counter() - started:.0f} s\n"
    )
    print(sampler_table(results))
    if "journal" in args.storages:
        records = {name: journal_records_per_trial(name, args.seed) for name in args.samplers}
        median, p95 = fsync_ms(args.journal_dir)
        per_trial = ", ".join(f"{name} {count:.1f}" for name, count in records.items())
        print(f"\nJournal records per trial (each locked + appended + fsync'ed): {per_trial}.")
        print(f"fsync of a 200-byte append here: median {median:.2f} ms, p95 {p95:.2f} ms.")
    for storage in args.storages:
        print(f"\nUtilization, {storage} storage, driver overhead {args.overhead_ms:g} ms/trial:\n")
        print(utilization_table(results, storage, args.overhead_ms))
    if args.json:
        rows = [asdict(m) | {"trials_per_s": m.trials_per_s} for m in results]
        args.json.write_text(json.dumps({"optuna": optuna.__version__, "results": rows}, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
