"""Cost of the Path Kernel's top eigenvalues (``pruners.path_kernel_spectrum``).

Every number is a ratio measured side by side in one run (the machine may be shared): the wall
and CPU time of the top-k eigenvalues (k = 1, 10, 50 by default) of VGG-16 on CIFAR shapes, as
a multiple of one plain float32 forward+backward pass of the same model (batch of one, the
spectrum's own input size; the median of passes timed before, between and after the spectrum
runs). Goal: top-10 in at most 60x one forward+backward. Also: one ``G·u`` product alone, and
the spectrum of ResNet-110 (finite in float32, log domain).

k = 10 on VGG also runs at a looser tolerance (``--loose-tol``, default 1e-2), and the
ratios ``λ_i/λ_1`` are printed: how close the top eigenvalues lie decides how many products
Lanczos needs, and the first line per model says how many products the goal's budget buys.

Usage: ``python benchmarks/bench_spectrum.py [--ks 1 10 50] [--models vgg16 resnet110]``
"""

from __future__ import annotations

import argparse
import functools
import json
import math
import resource
import statistics
import time
from collections.abc import Callable

import torch

import pruners
from pruners.spectrum import GramOperator, SpectrumOptions, _spectrum, gram_operator

SHAPE = (3, 32, 32)


def _build(name: str) -> torch.nn.Module:
    torch.manual_seed(0)
    return pruners.build_model(name, SHAPE, 10).eval()


def plain_pass(model: torch.nn.Module) -> None:
    """One float32 forward+backward of the model on a batch of one."""
    model.zero_grad(set_to_none=True)
    model(torch.ones(1, *SHAPE)).sum().backward()


def _timed(fn: Callable[[], object]) -> tuple[float, float, object]:
    wall, cpu = time.perf_counter(), time.process_time()
    out = fn()
    return time.perf_counter() - wall, time.process_time() - cpu, out


def _solve(
    model: torch.nn.Module, k: int, tol: float | None
) -> tuple[float, float, pruners.PathKernelSpectrum, tuple[float, float]]:
    """``path_kernel_spectrum``'s own steps, timed: (wall, CPU, result, (build, products) wall).

    The same two calls as :func:`pruners.path_kernel_spectrum`; the operator's ``matvec`` is
    wrapped to add up the wall time spent in products.
    """
    build, build_cpu, op = _timed(lambda: gram_operator(model, SHAPE))
    assert isinstance(op, GramOperator)
    inner, spent = op.matvec, [0.0]

    def timed_matvec(u: torch.Tensor) -> torch.Tensor:
        start = time.perf_counter()
        out = inner(u)
        spent[0] += time.perf_counter() - start
        return out

    setattr(op, "matvec", timed_matvec)  # noqa: B010 (a method cannot be assigned for mypy)
    options = SpectrumOptions(k=k, tol=tol, probes=0)  # no Hutchinson probes
    wall, cpu, spec = _timed(functools.partial(_spectrum, op, options))
    assert isinstance(spec, pruners.PathKernelSpectrum)
    wall, cpu = build + wall, build_cpu + cpu
    return wall, cpu, spec, (build, spent[0])


def _max_residual(spec: pruners.PathKernelSpectrum) -> float:
    """The largest residual of the values found (NaN marks a value not found, not a size)."""
    return max((r for r in spec.residuals if not math.isnan(r)), default=math.nan)


def _plain_times(model: torch.nn.Module, repeats: int, into: list[tuple[float, float]]) -> None:
    for _ in range(repeats):
        wall, cpu, _ = _timed(lambda: plain_pass(model))
        into.append((wall, cpu))


def _product_times(model: torch.nn.Module, repeats: int) -> list[tuple[float, float]]:
    """(wall, CPU) seconds of single ``G·u`` products (the operator is freed on return)."""
    op = gram_operator(model, SHAPE)
    u = torch.randn(op.dimension, generator=torch.Generator().manual_seed(0))
    op.matvec(u)  # warm-up
    times = []
    for _ in range(repeats):
        wall, cpu, _ = _timed(lambda: op.matvec(u))
        times.append((wall, cpu))
    return times


def bench_model(
    name: str, ks: list[int], repeats: int, loose_tol: float | None = None
) -> dict[str, object]:
    model = _build(name)
    plain_pass(model)  # warm-up
    plain: list[tuple[float, float]] = []
    _plain_times(model, repeats, plain)
    product = _product_times(model, max(2, repeats // 3))
    plain_wall = statistics.median(w for w, _ in plain)
    plain_cpu = statistics.median(c for _, c in plain)
    prod_wall = statistics.median(w for w, _ in product)
    prod_cpu = statistics.median(c for _, c in product)
    print(f"\n{name}: {sum(p.numel() for p in model.parameters()):,} parameters", flush=True)
    print(f"  one plain fwd+bwd: {plain_wall * 1e3:.1f} ms wall, {plain_cpu * 1e3:.1f} ms CPU")
    print(
        f"  one G·u product:   {prod_wall / plain_wall:.2f}x wall, "
        f"{prod_cpu / plain_cpu:.2f}x CPU of one fwd+bwd",
        flush=True,
    )
    print(
        f"  the goal's budget: 60x one fwd+bwd buys {60 * plain_wall / prod_wall:.0f} G·u "
        f"products (wall), before any solver work",
        flush=True,
    )
    runs: list[dict[str, object]] = []
    plan = [(k, None) for k in ks] + [(k, loose_tol) for k in ks if loose_tol and k == 10]
    for k, tol in plan:
        wall, cpu, spec, parts = _solve(model, k, tol)
        _plain_times(model, repeats, plain)  # after each run: load changes hit both alike
        plain_wall = statistics.median(w for w, _ in plain)
        plain_cpu = statistics.median(c for _, c in plain)
        finite = all(math.isfinite(x) for x in spec.log_eigenvalues)
        goal = "  (goal <= 60x)" if k == 10 and name == "vgg16" else ""
        build, in_products = parts
        print(
            f"  top-{k:<3d} {wall / plain_wall:7.1f}x wall, {cpu / plain_cpu:7.1f}x CPU of one "
            f"fwd+bwd{goal}; {spec.products} products; of the wall time {build / wall:.0%} "
            f"building the operator, {in_products / wall:.0%} in products, the rest in the "
            f"solver (Lanczos vector work, scipy's ARPACK for k > 1); converged={spec.converged}, "
            f"tol={spec.tol:g}, max residual={_max_residual(spec):.1e}, finite={finite}, "
            f"log λ_max={spec.log_lambda_max:.4f}, log λ_k={spec.log_eigenvalues[-1]:.4f}, "
            f"log Tr={spec.log_trace:.4f} (plain median so far {plain_wall * 1e3:.0f} ms)",
            flush=True,
        )
        if k > 1 and finite:
            ratios = [math.exp(x - spec.log_lambda_max) for x in spec.log_eigenvalues[:12]]
            print("         λ_i/λ_1: " + " ".join(f"{r:.4f}" for r in ratios), flush=True)
        runs.append(
            {
                "k": k,
                "tol": spec.tol,
                "residuals": list(spec.residuals),
                "build_s": build,
                "products_s": in_products,
                "wall_s": wall,
                "wall_ratio": wall / plain_wall,
                "cpu_ratio": cpu / plain_cpu,
                "products": spec.products,
                "converged": spec.converged,
                "finite": finite,
                "log_eigenvalues": list(spec.log_eigenvalues),
            }
        )
    result: dict[str, object] = {"model": name, "plain_wall_s": plain_wall, "runs": runs}
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20
    print(f"  peak RSS of this process so far: {peak:.1f} GiB")
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ks", type=int, nargs="+", default=[1, 10, 50])
    parser.add_argument("--models", nargs="+", default=["vgg16", "resnet110"])
    parser.add_argument("--resnet-ks", type=int, nargs="+", default=[10])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument(
        "--loose-tol",
        type=float,
        default=1e-2,
        help="also run k = 10 on VGG at this looser tolerance (0: skip)",
    )
    parser.add_argument("--json", help="also write the numbers to this file")
    args = parser.parse_args()
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads")
    results = [
        bench_model(
            name,
            args.ks if name.startswith("vgg") else args.resnet_ks,
            args.repeats,
            args.loose_tol if name.startswith("vgg") else None,
        )
        for name in args.models
    ]
    if args.json:
        with open(args.json, "w", encoding="utf-8") as fh:
            json.dump(results, fh, indent=2)


if __name__ == "__main__":
    main()
