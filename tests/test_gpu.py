"""CUDA: pruning, statistics, training and a whole trial on a GPU agree with the CPU and free
their memory. Marked ``gpu``; skipped where torch sees no CUDA device, unless
``PATHSWEEP_REQUIRE_GPU=1`` (as ``benchmarks/gpu_check.sh`` sets), which turns a skip into a
failure so a GPU check can never pass without running.
"""

from __future__ import annotations

import copy
import gc
import os
from collections.abc import Iterator
from dataclasses import replace

import pytest
import torch
from torch import nn

import pruners
from orchestrator.trial import make_config, resolve_params, run_trial

from .orchestrator.helpers import small_spec

_REQUIRED = os.environ.get("PATHSWEEP_REQUIRE_GPU") == "1"
DEVICE = "cuda"

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(
        not torch.cuda.is_available() and not _REQUIRED, reason="needs a CUDA device"
    ),
]

SHAPE = (1, 8, 8)


@pytest.fixture(autouse=True)
def _cuda_present() -> None:
    if not torch.cuda.is_available():
        pytest.fail("PATHSWEEP_REQUIRE_GPU=1 but torch.cuda.is_available() is False")


@pytest.fixture(scope="module")
def digits() -> pruners.Dataset:
    return pruners.load_dataset("digits")


def _warm_up() -> None:
    """Let cuBLAS/cuDNN allocate their per-handle workspaces (kept for the process's life)."""
    for layer, x in (
        (nn.Linear(8, 8), torch.randn(4, 8)),
        (nn.Conv2d(1, 2, 3), torch.randn(2, 1, 8, 8)),
    ):
        layer.to(DEVICE)(x.to(DEVICE)).sum().backward()


def _settled_allocation() -> int:
    """CUDA memory allocated by tensors, after a plain pass and one garbage collection.

    On an H200 (torch 2.11, CUDA 13) the first version of this check found a small model's
    parameters (7-30 KiB) still allocated after each trial: fx tracing left a reference cycle
    that held the model until a collection, and its path network until a second one
    (fixed in ``pruners.paths._trace``; tests/pruners/test_paths.py checks it on the CPU).
    """
    _warm_up()
    gc.collect()
    torch.cuda.synchronize()
    return torch.cuda.memory_allocated()


@pytest.fixture
def memory_baseline() -> Iterator[None]:
    """Fails the test unless CUDA memory allocated by tensors is back to where it started."""
    before = _settled_allocation()
    yield
    after = _settled_allocation()
    assert after == before, f"CUDA memory not returned: {after - before} bytes still allocated"


def _model(name: str = "fc", **options: int) -> nn.Module:
    torch.manual_seed(0)
    return pruners.build_model(name, SHAPE, 10, **options)


def _agreement(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> float:
    same = sum(int((a[k].cpu() == b[k].cpu()).sum()) for k in a)
    return same / sum(m.numel() for m in a.values())


@pytest.mark.parametrize("method", ["synflow", "synflow-l2", "snip", "grasp", "magnitude"])
def test_prune_on_cuda_matches_the_cpu(
    method: str, digits: pruners.Dataset, memory_baseline: None
) -> None:
    sample = pruners.prune_sample(digits, per_class=4, seed=0)
    cpu_model = _model(width=32, depth=3)
    cuda_model = _model(width=32, depth=3).to(DEVICE)
    cuda_sample = pruners.PruneSample(
        x=sample.x.to(DEVICE), y=sample.y.to(DEVICE), raw_mean=sample.raw_mean.to(DEVICE)
    )
    kwargs = {"input_shape": SHAPE, "seed": 0}
    on_cpu = pruners.prune(cpu_model, method, 0.1, 5, sample=sample, **kwargs)  # type: ignore[arg-type]
    on_cuda = pruners.prune(cuda_model, method, 0.1, 5, sample=cuda_sample, **kwargs)  # type: ignore[arg-type]
    assert on_cuda.keys() == on_cpu.keys()
    assert all(m.dtype == torch.bool for m in on_cuda.values())
    kept = [sum(int(m.sum()) for m in ms.values()) for ms in (on_cpu, on_cuda)]
    assert kept[0] == kept[1]
    # float64 path scores agree exactly up to ties at the threshold; SNIP/GraSP use the GPU's
    # float32 kernels, whose summation order differs
    assert _agreement(on_cpu, on_cuda) >= (0.999 if method.startswith("synflow") else 0.98)


def test_synflow_on_a_vgg_on_cuda_matches_the_cpu(memory_baseline: None) -> None:
    """VGG-11 at CIFAR shape: the dense-conv buffers, the matrix-product convs and the sparse
    convs (2x2 layers go sparse below 7% density) all run on CUDA within 20 rounds."""
    shape = (3, 32, 32)
    torch.manual_seed(0)
    cpu_model = pruners.build_model("vgg11", shape, 10)
    cuda_model = copy.deepcopy(cpu_model).to(DEVICE)
    on_cpu = pruners.prune(cpu_model, "synflow", 0.01, 20, input_shape=shape)
    on_cuda = pruners.prune(cuda_model, "synflow", 0.01, 20, input_shape=shape)
    assert on_cuda.keys() == on_cpu.keys()
    both = sum(int((on_cpu[k] & on_cuda[k].cpu()).sum()) for k in on_cpu)
    kept = [sum(int(m.sum()) for m in ms.values()) for ms in (on_cpu, on_cuda)]
    assert kept[0] == kept[1]
    # float64 scores; only near-ties at a threshold may fall differently on the two devices
    assert both / (2 * kept[0] - both) >= 0.99  # Jaccard of the kept sets


@pytest.mark.parametrize(("dtype", "rel"), [(torch.float64, 1e-12), (None, 1e-6)])
def test_stats_on_cuda_match_the_cpu(
    dtype: torch.dtype | None, rel: float, memory_baseline: None
) -> None:
    # dtype None: the model's float32, whose sums differ by summation order between devices
    # (seen on an H200: log trace 5.4977142329 vs 5.4977142200, relative 2.3e-9)
    cpu_model = _model(width=32, depth=4)
    masks = pruners.prune(cpu_model, "synflow", 0.05, 10, input_shape=SHAPE)
    cuda_model = _model(width=32, depth=4).to(DEVICE)
    cuda_masks = {k: v.to(DEVICE) for k, v in masks.items()}
    on_cpu = pruners.path_kernel_stats(cpu_model, SHAPE, masks, dtype=dtype).metrics()
    on_cuda = pruners.path_kernel_stats(cuda_model, SHAPE, cuda_masks, dtype=dtype).metrics()
    assert on_cuda.keys() == on_cpu.keys()
    for name, value in on_cpu.items():
        assert on_cuda[name] == pytest.approx(value, rel=rel), name


def test_spectrum_on_cuda_matches_the_cpu(memory_baseline: None) -> None:
    cpu_model = _model(width=16, depth=3).double()
    masks = pruners.prune(cpu_model, "synflow", 0.2, 5, input_shape=SHAPE)
    cuda_model = _model(width=16, depth=3).double().to(DEVICE)
    cuda_masks = {k: v.to(DEVICE) for k, v in masks.items()}
    on_cpu = pruners.path_kernel_spectrum(cpu_model, SHAPE, masks, k=4, probes=4)
    on_cuda = pruners.path_kernel_spectrum(cuda_model, SHAPE, cuda_masks, k=4, probes=4)
    assert on_cpu.converged and on_cuda.converged
    assert on_cuda.log_trace == pytest.approx(on_cpu.log_trace, rel=1e-9)
    for got, want in zip(on_cuda.log_eigenvalues, on_cpu.log_eigenvalues, strict=True):
        assert got == pytest.approx(want, abs=1e-8)
    # the same probes (seeded on the CPU) give the same Hutchinson estimate
    assert on_cuda.log_frobenius_sq == pytest.approx(on_cpu.log_frobenius_sq, rel=1e-9)


def test_attached_masks_hold_in_a_user_loop_on_cuda(memory_baseline: None) -> None:
    model = _model(width=32, depth=3).to(DEVICE)
    masks = pruners.prune(model, "synflow", 0.2, 3, input_shape=SHAPE)
    pruners.attach_masks(model, masks)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-2, weight_decay=0.1)
    gen = torch.Generator(device=DEVICE).manual_seed(0)
    for _ in range(20):
        x = torch.randn(32, *SHAPE, device=DEVICE, generator=gen)
        y = torch.randint(0, 10, (32,), device=DEVICE, generator=gen)
        optimizer.zero_grad()
        nn.functional.cross_entropy(model(x), y).backward()
        optimizer.step()
    pruners.detach_masks(model)
    params = dict(model.named_parameters())
    for name, mask in masks.items():
        assert params[name].device.type == "cuda"
        assert torch.all(params[name][~mask.to(DEVICE)] == 0), name


def test_training_on_cuda_keeps_masks_and_learns(
    digits: pruners.Dataset, memory_baseline: None
) -> None:
    model = _model(width=64, depth=3)
    masks = pruners.prune(model, "synflow", 0.3, 5, input_shape=SHAPE)
    trained, result = pruners.train(
        model, masks, digits, pruners.TrainConfig(epochs=3, device=DEVICE)
    )
    assert next(trained.parameters()).device.type == "cuda"
    assert next(model.parameters()).device.type == "cpu"
    params = dict(trained.named_parameters())
    for name, mask in masks.items():
        assert torch.all(params[name][~mask.to(DEVICE)] == 0), name
    assert result.final_test_accuracy > 0.8


def test_a_trial_on_cuda_matches_the_cpu_and_returns_its_memory(memory_baseline: None) -> None:
    spec = small_spec(save_masks=True)
    params = resolve_params({"path_exponent": 2.0, "iterations": 3}, spec.search.fixed())
    config = make_config(spec, 0, 0, params, train_epochs=1)
    on_cpu = run_trial(replace(config, device="cpu"))
    on_cuda = run_trial(replace(config, device=DEVICE))
    assert on_cuda.device == "cuda" and on_cpu.device == "cpu"
    assert on_cuda.masks is not None and on_cpu.masks is not None
    assert all(m.device.type == "cpu" for m in on_cuda.masks.values())  # travels to the driver
    assert _agreement(dict(on_cpu.masks), dict(on_cuda.masks)) >= 0.999
    for name in ("log_path_kernel_trace", "num_params", "effective_params"):
        assert on_cuda.metrics[name] == pytest.approx(on_cpu.metrics[name], rel=1e-6), name
    assert 0.0 <= on_cuda.metrics["test_accuracy"] <= 1.0
