"""Speed and memory of the Path Kernel trace and its statistics.

Every number is a ratio measured side by side in one run (the machine may be shared):

1. ``log_path_kernel_trace`` on VGG-16 vs one plain float32 forward+backward pass of the same
   model (batch of one, the trace's own input size): time (goal ≤ 1.2×) and peak memory
   (goal ≤ 2×, measured as peak RSS growth during the call, in a fresh subprocess each).
2. ``path_kernel_stats`` vs the same plain pass (goal ≤ 2×).

Iterative SynFlow's speed is measured by ``benchmarks/bench_synflow.py`` against the strongest
plain loop (one model copy for all rounds, masks in place, ``torch.kthvalue``).

On ``--device cuda`` the timings synchronize the device around each call and the memory is the
peak CUDA allocation growth during one call (``torch.cuda.max_memory_allocated``), measured in
this process.

Usage: ``python benchmarks/bench_pruners.py [--repeats 11] [--device cuda]``
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from collections.abc import Callable

import torch

import pruners

SHAPE = (3, 32, 32)


def _build(name: str, device: str = "cpu") -> torch.nn.Module:
    torch.manual_seed(0)
    return pruners.build_model(name, SHAPE, 10).eval().to(device)


def plain_pass(model: torch.nn.Module) -> None:
    """One float32 forward+backward of the model on a batch of one (on the model's device)."""
    model.zero_grad(set_to_none=True)
    device = next(model.parameters()).device
    model(torch.ones(1, *SHAPE, device=device)).sum().backward()


def _synchronized(fn: Callable[[], object], device: str) -> Callable[[], object]:
    """``fn`` followed by a device synchronization, so that a timer sees the work finish."""
    if device == "cpu":
        return fn

    def call() -> object:
        out = fn()
        torch.cuda.synchronize()
        return out

    return call


def _time_interleaved(
    fns: dict[str, Callable[[], object]], repeats: int
) -> dict[str, tuple[float, float]]:
    """Median (wall, CPU) seconds per call; calls alternate so machine load hits all alike.

    CPU time (this process, all threads) is less sensitive to other processes on a shared
    machine than wall time; both are printed.
    """
    for fn in fns.values():
        fn()  # warm-up (tracing caches, allocator)
    wall: dict[str, list[float]] = {name: [] for name in fns}
    cpu: dict[str, list[float]] = {name: [] for name in fns}
    for _ in range(repeats):
        for name, fn in fns.items():
            start, start_cpu = time.perf_counter(), time.process_time()
            fn()
            wall[name].append(time.perf_counter() - start)
            cpu[name].append(time.process_time() - start_cpu)
    return {n: (statistics.median(wall[n]), statistics.median(cpu[n])) for n in fns}


def _status_kib(field: str) -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise RuntimeError(f"/proc/self/status has no {field}")


def _peak_child(what: str, name: str) -> None:
    """Subprocess body: print the peak RSS growth (KiB) of one call of ``what``."""

    def calls(model: torch.nn.Module) -> dict[str, Callable[[], object]]:
        return {
            "plain": lambda: plain_pass(model),
            "trace": lambda: pruners.log_path_kernel_trace(model, SHAPE),
            "stats": lambda: pruners.path_kernel_stats(model, SHAPE),
        }

    # Warm the libraries (thread pools, kernels, fx) on a tiny model of the same family, so
    # that one-time costs are not counted, while the allocator has not yet served buffers of
    # this model's sizes (after a warm-up on the model itself, peak growth reads ~0).
    calls(pruners.build_model(name, SHAPE, 10, width=8).eval())[what]()
    model = _build(name)
    fns = calls(model)
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")  # reset the peak RSS (VmHWM) to the current RSS
    base = _status_kib("VmRSS")
    fns[what]()
    print(json.dumps({"peak_kib": _status_kib("VmHWM") - base}))


def peak_memory(what: str, name: str) -> int:
    # A fixed mmap threshold makes glibc return every freed buffer at once, so that RSS
    # follows live memory instead of what the allocator keeps cached.
    env = {**os.environ, "MALLOC_MMAP_THRESHOLD_": "65536"}
    out = subprocess.run(
        [sys.executable, __file__, "--peak-child", what, "--model", name],
        env=env,
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    return int(json.loads(out.strip().splitlines()[-1])["peak_kib"])


def cuda_peak_memory(fn: Callable[[], object]) -> int:
    """Peak growth (KiB) of CUDA memory allocated by tensors during one call of ``fn``."""
    torch.cuda.synchronize()
    torch.cuda.reset_peak_memory_stats()
    base = torch.cuda.memory_allocated()
    fn()
    torch.cuda.synchronize()
    return (torch.cuda.max_memory_allocated() - base) // 1024


def bench_trace(name: str, repeats: int, device: str = "cpu") -> None:
    model = _build(name, device)
    fns = {
        "plain": _synchronized(lambda: plain_pass(model), device),
        "trace": _synchronized(lambda: pruners.log_path_kernel_trace(model, SHAPE), device),
        "stats": _synchronized(lambda: pruners.path_kernel_stats(model, SHAPE), device),
    }
    times = _time_interleaved(fns, repeats)
    if device == "cpu":
        mem = {w: peak_memory(w, name) for w in fns}
    else:
        model.zero_grad(set_to_none=True)  # the plain pass's gradients would count as a base
        mem = {w: cuda_peak_memory(fns[w]) for w in fns}
    (plain, plain_cpu) = times["plain"]
    print(
        f"[{name}, {device}] plain float32 fwd+bwd: wall {plain * 1e3:7.1f} ms, "
        f"CPU {plain_cpu * 1e3:7.1f} ms, peak +{mem['plain'] / 1024:.0f} MiB"
    )
    for key, label, goal in (
        ("trace", "log_path_kernel_trace", 1.2),
        ("stats", "path_kernel_stats", 2.0),
    ):
        wall, cpu = times[key]
        print(
            f"[{name}, {device}] {label:<22}: wall {wall * 1e3:7.1f} ms, CPU {cpu * 1e3:7.1f} ms; "
            f"time ratio wall {wall / plain:.2f}x, CPU {cpu / plain_cpu:.2f}x (goal <= {goal}x); "
            f"peak +{mem[key] / 1024:.0f} MiB, memory ratio {mem[key] / max(1, mem['plain']):.2f}x "
            f"(goal <= 2x)"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=11)
    parser.add_argument("--peak-child", choices=["plain", "trace", "stats"])
    parser.add_argument("--model", default="vgg16")
    parser.add_argument(
        "--device", default="cpu", help="cpu, or cuda / cuda:N (needs torch with CUDA)"
    )
    args = parser.parse_args()
    if args.device != "cpu" and not torch.cuda.is_available():
        sys.exit(f"bench_pruners: --device {args.device} needs CUDA, which torch does not see")
    torch.set_num_threads(max(1, torch.get_num_threads()))
    if args.peak_child:
        _peak_child(args.peak_child, args.model)
        return
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, device {args.device}")
    if args.device != "cpu":
        if torch.device(args.device).index is not None:
            torch.cuda.set_device(torch.device(args.device))
        print(f"device: {torch.cuda.get_device_name()}")
    bench_trace(args.model, args.repeats, args.device)


if __name__ == "__main__":
    main()
