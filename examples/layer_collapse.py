"""Critical compression of VGG-16-bn at CIFAR-100 shape: Tanaka et al. (2020), Fig. 1 setup.

Layer collapse: pruning empties a whole prunable layer, so the network computes a constant.
The *critical compression* of a pruner is the smallest ``log10(1 / density)`` at which some
prunable layer keeps no weight. This script finds it by bisection (to ``--tol``, default 0.05)
for each pruner, on VGG-16 with BatchNorm, input 3x32x32, 100 classes, global scope, and prints
a table beside the values published in Tanaka et al. (2020), *Pruning neural networks without
any data by iteratively conserving synaptic flow* (NeurIPS), Fig. 1.

Setup, matching the SynFlow paper's code for this figure (``lottery`` VGG-16-bn):

- Init: Kaiming-normal (fan_in, gain sqrt(2)) for every Conv and Linear weight, zero biases,
  BatchNorm scale 1 and shift 0 — ``pruners.build_model("vgg16", ...)``'s own init. Its convs
  have no bias (BatchNorm cancels one); the reference's zero conv biases change no score.
- Prunable: the 13 conv weights and the classifier weight (biases and BatchNorm not pruned).
- Iterative data-free pruners (SynFlow family, ``pk-preserve``): ``--rounds`` (100) rounds with
  the exponential schedule. random, magnitude, SNIP, GraSP: single shot (scores computed once).
- ``--iterative-single-shot``: the single-shot pruners listed (SNIP, GraSP) instead run
  ``--rounds`` rounds with the exponential schedule, re-scored on the masked model each round
  (``pruners.prune``), as the reference run's ``prune_epochs: 100`` suggests it did for every
  pruner; reported under ``"snip (100 rounds)"`` etc., beside the single-shot rows.
- No data ships here, so the data-dependent inputs are stand-ins, labelled as such:
  ``synflow-dist`` reads a constant image at CIFAR-100's per-channel raw training means
  (0.5071, 0.4865, 0.4409); SNIP and GraSP score a stand-in batch of ``--batch`` standard
  normal images (normalized-input scale) with labels cycling over the 100 classes.

Bisection assumes collapse is monotone in compression: true for single-shot global pruning
(the kept sets are nested), false for the iterative pruners near the maximum, whose last rounds
remove a few weights at once (SynFlow here: collapsed at 10^5.92, intact at 10^5.95). For them,
``--scan START STOP`` tests every ``--step`` instead. The reported value ``c`` is the smallest
tested compression that collapsed; the largest tested one that did not is within ``--tol``
(bisection) or ``--step`` (scan) below it.

Usage (docs/results.md, section 1, lists the commands that produced its table)::

    python examples/layer_collapse.py --methods random magnitude snip grasp --out r.json
    python examples/layer_collapse.py --methods synflow --scan 5.6 6.03 --step 0.01 --out r.json
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import sys
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import torch

import pruners
from pruners.masks import ones_masks, prunable_parameters
from pruners.pruning import schedule_densities, select

SHAPE = (3, 32, 32)
CLASSES = 100
CIFAR100_RAW_MEAN = (0.5071, 0.4865, 0.4409)
PUBLISHED = {"random": 3.33, "magnitude": 2.75, "snip": 3.58, "grasp": 3.58, "synflow": 5.92}
SINGLE_SHOT = ("random", "magnitude", "snip", "grasp")
ITERATIVE = ("synflow", "synflow-l2", "synflow-l2-code", "synflow-dist", "pk-preserve")
# First guesses of the critical compression; the bracket search walks from there.
GUESS = {"synflow": 5.9, "synflow-l2": 5.0, "synflow-l2-code": 5.5, "synflow-dist": 5.9,
         "pk-preserve": 4.0, "random": 3.3, "magnitude": 2.75, "snip": 3.5, "grasp": 3.5}  # fmt: skip

Masks = dict[str, torch.Tensor]


def build_vgg16(seed: int) -> torch.nn.Module:
    torch.manual_seed(seed)
    return pruners.build_model("vgg16", SHAPE, CLASSES)


def stand_in_sample(batch: int, seed: int) -> pruners.PruneSample:
    """Stand-in labelled batch (not CIFAR-100) and CIFAR-100's per-channel raw mean image."""
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(batch, *SHAPE, generator=gen)
    y = torch.arange(batch) % CLASSES
    mean = torch.tensor(CIFAR100_RAW_MEAN)[:, None, None].expand(SHAPE).clone()
    return pruners.PruneSample(x=x, y=y, raw_mean=mean)


def collapsed(masks: Mapping[str, torch.Tensor]) -> bool:
    """Whether some prunable layer keeps no weight."""
    return any(not bool(m.any()) for m in masks.values())


def bisect(
    is_collapsed: Callable[[float], bool], guess: float, upper: float, tol: float, log: Callable,
    step: float = 0.5,
) -> tuple[float, float, int]:
    """Smallest compression in (lo, hi] with ``hi - lo <= tol`` at which ``is_collapsed``.

    ``upper`` is known to collapse (fewer kept weights than layers). Returns (lo, hi, runs).
    """
    runs = 0

    def test(c: float) -> bool:
        nonlocal runs
        runs += 1
        start = time.perf_counter()
        result = is_collapsed(c)
        log(f"    compression 10^{c:.4f}: {'collapsed' if result else 'intact'} "
            f"({time.perf_counter() - start:.1f} s)")  # fmt: skip
        return result

    c = min(guess, upper)
    if test(c):
        hi = c
        lo = hi - step
        while lo > 0 and test(lo):
            hi, lo = lo, lo - step
        lo = max(lo, 0.0)
    else:
        lo = c
        hi = min(lo + step, upper)
        while hi < upper and not test(hi):
            lo, hi = hi, min(hi + step, upper)
    while hi - lo > tol:
        mid = (lo + hi) / 2
        if test(mid):
            hi = mid
        else:
            lo = mid
    return lo, hi, runs


def scan(
    is_collapsed: Callable[[float], bool], start: float, stop: float, step: float,
    log: Callable,
) -> list[tuple[float, bool]]:
    """Test every compression ``start, start + step, ...`` up to ``stop``; no monotonicity assumed.

    Iterative pruners need not collapse monotonically in compression: the last rounds of a
    run remove a few weights at once, and whether a layer empties depends on the whole
    trajectory (SynFlow on this VGG: intact at 10^6.02 but collapsed at 10^5.92 in one run
    each). Bisection then can miss the smallest collapsing compression; a grid does not,
    up to its resolution ``step``.

    Returns:
        ``(compression, collapsed)`` for every grid point, in increasing compression.
    """
    if not (step > 0 and start <= stop):
        raise ValueError(f"step > 0 and start <= stop must hold, but got {start=}, {stop=}, {step=}")
    grid = [round(start + i * step, 10) for i in range(int((stop - start) / step + 1e-9) + 1)]
    outcomes = []
    for c in grid:
        begin = time.perf_counter()
        result = is_collapsed(c)
        log(f"    compression 10^{c:.4f}: {'collapsed' if result else 'intact'} "
            f"({time.perf_counter() - begin:.1f} s)")  # fmt: skip
        outcomes.append((c, result))
    return outcomes


def scan_bracket(outcomes: list[tuple[float, bool]]) -> tuple[float | None, float]:
    """(largest intact compression below the smallest collapsed one, smallest collapsed one).

    ``(None, hi)`` when the first grid point already collapsed (the scan started too high),
    ``(largest tested, inf)`` when nothing collapsed.
    """
    collapsed_at = [c for c, hit in outcomes if hit]
    hi = min(collapsed_at) if collapsed_at else math.inf
    below = [c for c, hit in outcomes if not hit and c < hi]
    return (max(below) if below else None), hi


def critical_of(per_seed: list[dict[str, Any]]) -> float | None:
    """Median over seeds of the smallest collapsed compression; None where it is not finite.

    A seed whose tested range held no collapse (``hi`` infinite) gets ``hi = None``: no number
    is made up for it, and the results stay valid JSON (no ``Infinity``).
    """
    critical = statistics.median(s["hi"] for s in per_seed)
    for s in per_seed:
        if s["hi"] is not None and not math.isfinite(s["hi"]):
            s["hi"] = None
    return critical if math.isfinite(critical) else None


def trajectory(
    model: torch.nn.Module, method: str, upper: float, rounds: int,
    sample: pruners.PruneSample, dtype: torch.dtype, log: Callable,
) -> tuple[float, float, int]:
    """One iterative run to compression ``10^upper``, checking for collapse after every round.

    With the exponential schedule, round r of a run to ``10^upper`` sits at compression
    ``10^(r · upper / rounds)``. The first round that empties a layer brackets the critical
    compression between the previous round's compression and its own (resolution
    ``upper / rounds``). A run aimed at a lower compression takes slightly smaller steps, so
    this is an estimate of the bisection's value, at the cost of one run instead of several.

    Returns:
        (lo, hi, rounds run).
    """
    masks = ones_masks(prunable_parameters(model))
    start = time.perf_counter()
    for r, d in enumerate(schedule_densities(10.0**-upper, rounds, "exponential"), start=1):
        scores = pruners.score(
            model, method, input_shape=SHAPE, masks=masks, sample=sample, dtype=dtype
        )
        masks = select(scores, masks, d, "global")
        if r % 10 == 0:
            log(f"    round {r}: compression 10^{math.log10(1 / d):.3f} intact "
                f"({time.perf_counter() - start:.0f} s)")  # fmt: skip
        if collapsed(masks):
            hi = math.log10(1 / d)
            return hi - upper / rounds, hi, r
    return upper, math.inf, rounds


def plot(payload: dict, path: Path) -> Path:
    """Bar chart: measured critical compression (with its bracket) beside the published one."""
    from matplotlib.figure import Figure

    # a pruner with no collapse in its tested range has no critical compression to draw
    results = {m: r for m, r in payload["results"].items() if r["critical_compression"] is not None}
    names = list(results)
    fig = Figure(figsize=(8.0, 5.2), layout="constrained")
    ax = fig.add_subplot()
    x = range(len(names))
    hi = [results[m]["critical_compression"] for m in names]
    # lo is None where a scan's first grid point collapsed (no intact point below): no bar.
    lo = [statistics.median(s["hi"] if s["lo"] is None else s["lo"]
                            for s in results[m]["per_seed"]) for m in names]  # fmt: skip
    ax.bar([i - 0.2 for i in x], hi, width=0.4, label="pathsweep (smallest collapsed)",
           yerr=[[h - lo_ for h, lo_ in zip(hi, lo, strict=True)], [0] * len(hi)], capsize=3)
    published = [results[m].get("published") for m in names]
    ax.bar([i + 0.2 for i, p in zip(x, published, strict=True) if p is not None],
           [p for p in published if p is not None], width=0.4,
           label="published (Tanaka et al. 2020, Fig. 1)")
    ax.axhline(payload["theoretical_max"], color="0.3", linestyle="--", linewidth=1,
               label=f"theoretical max {payload['theoretical_max']:.2f} (one weight per layer)")
    f32 = [(i, results[m]["float32"]["critical_compression"]) for i, m in zip(x, names, strict=True)
           if isinstance(results[m].get("float32"), dict)]  # fmt: skip
    if f32:
        ax.scatter([i - 0.2 for i, _ in f32], [c for _, c in f32], marker="x", color="black",
                   zorder=3, label="same pruner, float32 scores (smallest collapsed)")  # fmt: skip
    ax.set_xticks(list(x), names, rotation=30, ha="right")
    ax.set_ylabel("critical compression (log10 of 1 / density)")
    ax.set_title("Layer collapse, VGG-16-bn at CIFAR-100 shape (error bar: bracket)")
    ax.set_ylim(0, payload["theoretical_max"] + 0.6)
    # below the axes: inside, it would cover the tallest bars (SynFlow's beside its published one)
    fig.legend(fontsize="small", loc="outside lower center", ncol=2)
    fig.savefig(path, dpi=110)
    return path


def merge_results(payloads: list[dict[str, Any]]) -> dict[str, Any]:
    """One results payload from several runs of this script (the table's many invocations).

    Per pruner and dtype: the grid scans are joined (every grid point's outcome kept; a point
    tested twice must agree, else ValueError) and their bracket recomputed, so the result is
    the smallest collapsed point of all the scans; a bisection (single-shot pruners) is taken
    from the last file that has it. The float64 result is the pruner's value, a float32 one
    goes under ``"float32"`` beside it (or is the value when no float64 one exists).
    """
    if not payloads:
        raise ValueError("merge needs at least one results file")
    groups: dict[tuple[str, str], list[dict[str, Any]]] = {}
    for payload in payloads:
        for method, entry in payload["results"].items():
            groups.setdefault((method, str(entry["dtype"])), []).append(entry)
    merged: dict[tuple[str, str], dict[str, Any]] = {}
    for (method, dtype), entries in groups.items():
        scans = [e for e in entries if "outcomes" in e["per_seed"][0]]
        if not scans:
            merged[method, dtype] = entries[-1]
            continue
        outcomes: dict[float, bool] = {}
        for entry in scans:
            for c, hit in entry["per_seed"][0]["outcomes"]:
                if outcomes.setdefault(round(c, 6), hit) != hit:
                    raise ValueError(f"{method} ({dtype}) at 10^{c}: one scan collapsed, one not")
        points = sorted(outcomes.items())
        lo, hi = scan_bracket(points)
        per_seed = [{"seed": 0, "lo": lo, "hi": hi, "runs": len(points),
                     "outcomes": [[c, hit] for c, hit in points]}]  # fmt: skip
        merged[method, dtype] = {
            **scans[-1],
            "per_seed": per_seed,
            "critical_compression": critical_of(per_seed),
            "wall_s": sum(e["wall_s"] for e in scans),
            "search": " + ".join(e["search"] for e in scans),
        }
    results: dict[str, Any] = {}
    for method in dict.fromkeys(m for m, _ in groups):
        f64, f32 = merged.get((method, "float64")), merged.get((method, "float32"))
        if f64 is None and f32 is None:  # a single-shot pruner: its dtype is not a float
            results[method] = next(v for (m, _), v in merged.items() if m == method)
            continue
        results[method] = dict(f64 if f64 is not None else f32)  # type: ignore[arg-type]
        if f64 is not None and f32 is not None:
            results[method]["float32"] = f32
        results[method]["published"] = PUBLISHED.get(method)
    first = payloads[0]
    return {
        "n_weights": first["n_weights"], "layers": first["layers"],
        "theoretical_max": first["theoretical_max"], "rounds": first["rounds"],
        "results": results, "wall_s": sum(p.get("wall_s", 0.0) for p in payloads),
        "command": [p.get("command") for p in payloads],
    }  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--methods", nargs="+", default=[*SINGLE_SHOT, *ITERATIVE])
    parser.add_argument("--seeds", type=int, default=3, help="seeds of the random pruner")
    parser.add_argument("--rounds", type=int, default=100)
    parser.add_argument("--tol", type=float, default=0.05)
    parser.add_argument("--batch", type=int, default=100, help="stand-in batch for SNIP/GraSP")
    parser.add_argument("--step", type=float, default=0.25, help="bracket search step; the grid step of --scan")
    parser.add_argument("--guess", nargs="*", default=[], metavar="METHOD=C",
                        help="first guesses of the critical log10 compression")
    parser.add_argument("--dtype", choices=["float64", "float32"], default="float64",
                        help="dtype of path-based scores (float32: ~4x faster on CPU)")
    parser.add_argument("--plot", type=Path, nargs=2, metavar=("JSON", "PNG"),
                        help="only draw the figure of a results JSON")
    parser.add_argument("--trajectory", action="store_true",
                        help="iterative pruners: one run to the theoretical maximum, checking "
                        "every round (resolution max/rounds), instead of bisection")
    parser.add_argument("--scan", type=float, nargs=2, metavar=("START", "STOP"),
                        help="iterative pruners: test every --step from START to STOP "
                        "(collapse need not be monotone in compression for them), "
                        "instead of bisection")
    parser.add_argument("--merge", type=Path, nargs="+", metavar="JSON",
                        help="only join results files of several runs (scans of one pruner "
                        "joined) into --out")
    parser.add_argument("--iterative-single-shot", action="store_true",
                        help="run the single-shot pruners listed in --methods (snip, grasp, ...) "
                        "iteratively instead: --rounds rounds, exponential schedule, re-scored on "
                        "the masked model every round; reported as 'METHOD (N rounds)'")
    parser.add_argument("--out", type=Path, default=None,
                        help="write the results as JSON (merged into an existing file)")
    args = parser.parse_args(argv)
    if args.merge is not None:
        if args.out is None:
            parser.error("--merge needs --out")
        payload = merge_results([json.loads(f.read_text()) for f in args.merge])
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(payload, indent=2, allow_nan=False))
        return 0
    if args.plot is not None:
        plot(json.loads(args.plot[0].read_text()), args.plot[1])
        return 0
    unknown = [m for m in args.methods if m not in pruners.SCORERS]
    if unknown:
        parser.error(f"unknown --methods {unknown}; valid: {sorted(pruners.SCORERS)}")

    guesses = dict(GUESS)
    for item in args.guess:
        method, _, value = item.partition("=")
        guesses[method] = float(value)
    dtype = getattr(torch, args.dtype)
    iterative = set(ITERATIVE) | (set(SINGLE_SHOT) if args.iterative_single_shot else set())

    def log(msg: str) -> None:
        print(msg, flush=True)

    total_start = time.perf_counter()
    model = build_vgg16(0)
    params = prunable_parameters(model)
    n = sum(p.numel() for p in params.values())
    layers = len(params)
    theoretical = math.log10(n / layers)
    # Fewer kept weights than layers empties a layer: round(d·N) <= L - 1 at this compression.
    upper = math.log10(n / (layers - 1.5))
    log(f"VGG-16-bn, {layers} prunable layers, N = {n:,} weights; theoretical max "
        f"compression (every layer keeps one weight) = 10^{theoretical:.3f}")  # fmt: skip
    sample = stand_in_sample(args.batch, seed=0)
    results: dict[str, dict[str, object]] = {}
    for method in args.methods:
        seeds = range(args.seeds) if method == "random" else range(1)
        per_seed = []
        start = time.perf_counter()
        for seed in seeds:
            log(f"{method} (seed {seed})")
            if method not in iterative:
                scores = pruners.score(
                    model, method, input_shape=SHAPE, sample=sample, seed=seed
                )  # fmt: skip
                ones = ones_masks(params)

                def is_collapsed(c: float, scores: Mapping = scores, ones: Masks = ones) -> bool:
                    return collapsed(select(scores, ones, 10.0**-c, "global"))
            else:

                def is_collapsed(c: float, method: str = method) -> bool:
                    masks = pruners.prune(
                        model, method, 10.0**-c, args.rounds, input_shape=SHAPE, sample=sample,
                        dtype=dtype,
                    )
                    return collapsed(masks)

            outcomes = None
            if args.trajectory and method in iterative:
                lo, hi, runs = trajectory(
                    model, method, upper, args.rounds, sample, dtype, log
                )  # fmt: skip
            elif args.scan is not None and method in iterative:
                outcomes = scan(is_collapsed, *args.scan, args.step, log)
                lo, hi = scan_bracket(outcomes)
                runs = len(outcomes)
            else:
                lo, hi, runs = bisect(
                    is_collapsed, guesses.get(method, 4.0), upper, args.tol, log, args.step
                )
            entry: dict[str, object] = {"seed": seed, "lo": lo, "hi": hi, "runs": runs}
            if outcomes is not None:
                entry["outcomes"] = [[c, hit] for c, hit in outcomes]
            per_seed.append(entry)
        critical = critical_of(per_seed)
        if args.trajectory and method in iterative:
            search = "trajectory"
        elif args.scan is not None and method in iterative:
            search = f"scan {args.scan[0]:g}..{args.scan[1]:g} step {args.step:g}"
        else:
            search = "bisection"
        key = f"{method} ({args.rounds} rounds)" if method in iterative - set(ITERATIVE) else method
        results[key] = {
            "critical_compression": critical,
            "per_seed": per_seed,
            "published": PUBLISHED.get(method),
            "wall_s": time.perf_counter() - start,
            "dtype": args.dtype if method in ITERATIVE else "n/a (not path-based)"
            if method in iterative else "n/a (single shot)",
            "rounds": args.rounds if method in iterative else 1,
            "search": search,
        }
        found = "no collapse in the tested range" if critical is None else (
            f"critical compression 10^{critical:.2f}")
        log(f"  -> {key}: {found} ({time.perf_counter() - start:.0f} s)")  # fmt: skip
    wall = time.perf_counter() - total_start
    print()
    print("| pruner | critical log10 compression | published (Tanaka et al. 2020) | wall s |")
    print("|---|---|---|---|")
    for method, r in results.items():
        pub = r["published"]
        crit = r["critical_compression"]
        print(f"| {method} | {'none found' if crit is None else f'{crit:.2f}'} | "
              f"{'' if pub is None else f'{pub:.2f}'} | {r['wall_s']:.0f} |")  # fmt: skip
    print(f"| theoretical max (every layer keeps one weight) | {theoretical:.2f} | | |")
    print(f"\ntotal wall time {wall:.0f} s, torch {torch.__version__}, "
          f"{torch.get_num_threads()} threads")  # fmt: skip
    if args.out is not None:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        merged = json.loads(args.out.read_text())["results"] if args.out.is_file() else {}
        results = {**merged, **results}
        payload = {"n_weights": n, "layers": layers, "theoretical_max": theoretical,
                   "tol": args.tol, "rounds": args.rounds, "results": results, "wall_s": wall,
                   "command": " ".join(["python", "examples/layer_collapse.py", *(argv or sys.argv[1:])])}  # fmt: skip
        tmp = args.out.with_suffix(".tmp")
        tmp.write_text(json.dumps(payload, indent=2, allow_nan=False))
        tmp.replace(args.out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
