"""100-round SynFlow: pathsweep vs the plain float32 and float64 loops, side by side in one run.

The baseline is the strongest plain form of the reference implementation's algorithm
(Tanaka et al. 2020, Synaptic-Flow): one copy of the model for all rounds with ``|θ|`` as its
weights, the masks applied in place each round, a forward pass on an input of ones, one
backward pass, scores ``|θ ⊙ ∂R/∂θ|``, a global threshold by ``torch.kthvalue`` and the new
masks ``score > threshold``. It runs once in float32 and once in float64; pathsweep's masks
(default float64 mode) must be identical to the float64 loop's.

Printed per model (VGG-11 and VGG-16, CIFAR shape 3x32x32): wall and CPU time of each, the
ratios of pathsweep to the float32 loop (goal <= 0.5x) and to the float64 loop, where the time
goes (scoring passes vs selection), and whether the masks are identical. Implementations run
alternately, ``--repeats`` times each, so that load on a shared machine hits all alike; the
medians are reported.

On ``--device cuda`` every implementation runs on the GPU and the timers synchronize the
device before they read the clock (the CPU times are then those of the host thread only).

Usage: ``python benchmarks/bench_synflow.py [--rounds 100] [--repeats 1] [--threads 1]
[--device cpu]``
"""

from __future__ import annotations

import argparse
import copy
import statistics
import time
from collections.abc import Callable
from typing import Any

import torch

import pruners
from pruners import scores as scores_module
from pruners.masks import prunable_parameters

SHAPE = (3, 32, 32)
DEVICE = torch.device("cpu")


def _sync() -> None:
    """Wait for the device, so that a clock read after it sees the work done."""
    if DEVICE.type == "cuda":
        torch.cuda.synchronize(DEVICE)


def _build(name: str) -> torch.nn.Module:
    torch.manual_seed(0)
    return pruners.build_model(name, SHAPE, 10).eval().to(DEVICE)


def plain_loop(
    model: torch.nn.Module, density: float, rounds: int, dtype: torch.dtype, clock: dict[str, float]
) -> dict[str, torch.Tensor]:
    """The reference algorithm, written plainly: one |θ| copy, masks applied in place."""
    names = list(prunable_parameters(model))
    net = copy.deepcopy(model).to(dtype).eval()
    params = dict(net.named_parameters())
    with torch.no_grad():
        for p in params.values():
            p.abs_()
    masks = {n: torch.ones_like(params[n], dtype=torch.bool) for n in names}
    total = sum(m.numel() for m in masks.values())
    ones = torch.ones(1, *SHAPE, dtype=dtype, device=DEVICE)
    for r in range(1, rounds + 1):
        _sync()
        start = time.perf_counter()
        with torch.no_grad():
            for n in names:
                params[n].mul_(masks[n])
        net(ones).sum().backward()
        scores = {}
        for n in names:
            grad = params[n].grad
            assert grad is not None
            scores[n] = grad.mul_(params[n]).abs_()
            params[n].grad = None
        _sync()
        middle = time.perf_counter()
        flat = torch.cat([s.flatten() for s in scores.values()])
        prune_count = total - round(total * density ** (r / rounds))
        if prune_count >= 1:
            threshold = torch.kthvalue(flat, prune_count).values
            masks = {n: s > threshold for n, s in scores.items()}
        _sync()
        clock["scoring"] += middle - start
        clock["selection"] += time.perf_counter() - middle
        for p in params.values():
            p.grad = None
    return masks


def pathsweep_prune(
    model: torch.nn.Module, density: float, rounds: int, dtype: torch.dtype, clock: dict[str, float]
) -> dict[str, torch.Tensor]:
    """pathsweep's ``prune``; the scoring passes are timed through a wrapper."""
    original = scores_module.SynFlowRounds.scores_at

    def timed(self: Any, alive: Any) -> Any:
        _sync()
        start = time.perf_counter()
        out = original(self, alive)
        _sync()
        clock["scoring"] += time.perf_counter() - start
        return out

    scores_module.SynFlowRounds.scores_at = timed  # type: ignore[method-assign]
    try:
        start = time.perf_counter()
        masks = pruners.prune(model, "synflow", density, rounds, input_shape=SHAPE, dtype=dtype)
        _sync()
        clock["selection"] += time.perf_counter() - start  # minus scoring, below
    finally:
        scores_module.SynFlowRounds.scores_at = original  # type: ignore[method-assign]
    clock["selection"] -= clock["scoring"]
    return masks


Impl = Callable[[torch.nn.Module, float, int, torch.dtype, dict[str, float]], dict[str, Any]]


def bench(name: str, rounds: int, density: float, repeats: int) -> None:
    model = _build(name)
    impls: dict[str, tuple[Impl, torch.dtype]] = {
        "float32 loop": (plain_loop, torch.float32),
        "pathsweep float64": (pathsweep_prune, torch.float64),
        "float64 loop": (plain_loop, torch.float64),
        "pathsweep float32": (pathsweep_prune, torch.float32),
    }
    pruners.prune(model, "synflow", density, 1, input_shape=SHAPE)  # trace once (cached)
    wall: dict[str, list[float]] = {k: [] for k in impls}
    cpu: dict[str, list[float]] = {k: [] for k in impls}
    clocks: dict[str, list[dict[str, float]]] = {k: [] for k in impls}
    masks: dict[str, dict[str, torch.Tensor]] = {}
    for _ in range(repeats):
        for key, (fn, dtype) in impls.items():
            clock = {"scoring": 0.0, "selection": 0.0}
            _sync()
            start, start_cpu = time.perf_counter(), time.process_time()
            masks[key] = fn(model, density, rounds, dtype, clock)
            _sync()
            wall[key].append(time.perf_counter() - start)
            cpu[key].append(time.process_time() - start_cpu)
            clocks[key].append(clock)
    med = {k: (statistics.median(wall[k]), statistics.median(cpu[k])) for k in impls}
    total = sum(m.numel() for m in masks["float64 loop"].values())
    print(f"[{name}, {DEVICE}] SynFlow, {rounds} rounds to density {density}, {total} prunable weights")
    for key in impls:
        w, c = med[key]
        split = {
            p: statistics.median(cl[p] for cl in clocks[key]) for p in ("scoring", "selection")
        }
        line = (
            f"[{name}]   {key:<18} wall {w:6.1f} s  CPU {c:6.1f} s   "
            f"scoring {split['scoring']:6.1f} s, selection {split['selection']:6.1f} s"
        )
        if key.startswith("pathsweep"):
            ref = masks["float64 loop"]
            differ = sum(int((masks[key][n] ^ ref[n]).sum()) for n in ref)
            kept = sum(int(m.sum()) for m in masks[key].values())
            line += (
                f"\n[{name}]     vs float32 loop: wall {w / med['float32 loop'][0]:.2f}x, "
                f"CPU {c / med['float32 loop'][1]:.2f}x (goal <= 0.5x); "
                f"vs float64 loop: wall {w / med['float64 loop'][0]:.2f}x, "
                f"CPU {c / med['float64 loop'][1]:.2f}x; masks identical to the float64 loop: "
                f"{differ == 0} ({differ} differ, {kept} kept)"
            )
        print(line, flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=100)
    parser.add_argument("--repeats", type=int, default=1)
    parser.add_argument("--density", type=float, default=0.01)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--models", nargs="+", default=["vgg11", "vgg16"])
    parser.add_argument("--device", default="cpu", help="cpu, or cuda / cuda:N")
    args = parser.parse_args()
    global DEVICE
    DEVICE = torch.device(args.device)
    if DEVICE.type == "cuda" and not torch.cuda.is_available():
        raise SystemExit(f"bench_synflow: --device {args.device} needs CUDA, which torch does not see")
    torch.set_num_threads(args.threads)
    where = torch.cuda.get_device_name(DEVICE) if DEVICE.type == "cuda" else "CPU"
    print(f"torch {torch.__version__}, {torch.get_num_threads()} thread(s), {where}")
    for name in args.models:
        bench(name, args.rounds, args.density, args.repeats)


if __name__ == "__main__":
    main()
