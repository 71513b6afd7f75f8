"""Masked training: train a pruned network and record how fast it converges.

Gebhart, Saxena, Schrater (2021), "A Unified Paths Perspective for Pruning at Initialization",
predict that a pruned network whose Path Kernel has a larger trace trains faster (under
linearized gradient flow the NTK's eigenvalues set the convergence rates). This module measures
that speed on real training runs: the per-epoch train loss, the area under the train-loss curve
and the number of epochs to reach a loss threshold, besides test accuracy.

Pruned weights stay exactly zero throughout: the masks are attached with
:func:`pruners.attach.attach_masks` (``torch.nn.utils.prune``: ``weight = weight_orig *
weight_mask``), so neither momentum nor weight decay (nor Adam's moment estimates) can bring them
back, and made permanent with :func:`pruners.attach.detach_masks` before the model is returned.
"""

from __future__ import annotations

import contextlib
import copy
import math
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Literal, Protocol

import numpy as np
import torch
from scipy.integrate import trapezoid
from torch import Tensor, nn
from torch.utils.data import TensorDataset

from pruners.attach import attach_masks, detach_masks
from pruners.masks import check_masks

OPTIMIZERS = ("sgd", "adam")
LR_SCHEDULES = ("cosine", "constant")
DEFAULT_LR = {"sgd": 0.1, "adam": 1e-3}
"""Learning rate used when ``TrainConfig.lr`` is None, per optimizer."""
_EVAL_BATCH = 1024


class SupervisedData(Protocol):
    """Anything with a ``train`` and a ``test`` split, each a ``TensorDataset`` of (inputs, labels).

    ``pruners.data.Dataset`` satisfies it.
    """

    @property
    def train(self) -> TensorDataset: ...

    @property
    def test(self) -> TensorDataset: ...


@dataclass(frozen=True)
class TrainConfig:
    """How to train a (pruned) network.

    Attributes:
        epochs: passes over the training split; 0 only evaluates the untrained network.
        optimizer: ``"sgd"`` (with ``momentum``) or ``"adam"``.
        lr: initial learning rate; None means the optimizer's default in ``DEFAULT_LR``
            (0.1 for SGD, 1e-3 for Adam).
        momentum: SGD momentum (ignored by Adam).
        weight_decay: L2 penalty coefficient, passed to the optimizer.
        batch_size: training batch size (evaluation uses larger batches).
        seed: seeds the shuffling and torch's global RNG (dropout etc.) for this run only.
        loss_threshold: train loss that defines "epochs to threshold".
        lr_schedule: ``"cosine"`` (annealed to 0 over ``epochs``, stepped once per epoch) or
            ``"constant"``.
        device: ``"cpu"``, ``"cuda"``, ``"cuda:1"``, ... or ``"auto"`` (CUDA when available).
    """

    epochs: int = 10
    optimizer: Literal["sgd", "adam"] = "sgd"
    lr: float | None = None
    momentum: float = 0.9
    weight_decay: float = 5e-4
    batch_size: int = 128
    seed: int = 0
    loss_threshold: float = 0.5
    lr_schedule: Literal["cosine", "constant"] = "cosine"
    device: str = "cpu"

    def __post_init__(self) -> None:
        _check_choice("optimizer", self.optimizer, OPTIMIZERS)
        _check_choice("lr_schedule", self.lr_schedule, LR_SCHEDULES)
        for name in ("epochs", "batch_size", "seed"):
            _check_type(name, getattr(self, name), (int,))
        for name in ("lr", "momentum", "weight_decay", "loss_threshold"):
            value = getattr(self, name)
            if value is not None:
                _check_type(name, value, (int, float))
        _check_rule(self.epochs >= 0, f"epochs >= 0 must hold, but got epochs={self.epochs!r}")
        _check_rule(
            self.lr is None or (math.isfinite(self.lr) and self.lr > 0),
            f"lr must be None or a finite number > 0, but got lr={self.lr!r}",
        )
        _check_rule(
            0 <= self.momentum < 1,
            f"0 <= momentum < 1 must hold, but got momentum={self.momentum!r}",
        )
        _check_rule(
            self.weight_decay >= 0,
            f"weight_decay >= 0 must hold, but got weight_decay={self.weight_decay!r}",
        )
        _check_rule(
            self.batch_size >= 1,
            f"batch_size >= 1 must hold, but got batch_size={self.batch_size!r}",
        )
        _check_rule(
            math.isfinite(self.loss_threshold) and self.loss_threshold >= 0,
            f"loss_threshold must be finite and >= 0, but got loss_threshold={self.loss_threshold!r}",
        )
        _check_device(self.device)

    @property
    def resolved_lr(self) -> float:
        """The learning rate actually used: ``lr``, or the optimizer's default."""
        return DEFAULT_LR[self.optimizer] if self.lr is None else self.lr


def _check_rule(ok: bool, message: str) -> None:
    if not ok:
        raise ValueError(message)


def _check_type(name: str, value: object, types: tuple[type, ...]) -> None:
    # bool is an int subclass, and YAML reads "1e-3" as a string: reject both explicitly
    if isinstance(value, bool) or not isinstance(value, types):
        kinds = " or ".join(t.__name__ for t in types)
        raise ValueError(f"{name} must be of type {kinds}, but got {name}={value!r}")


def _check_choice(name: str, value: object, valid: tuple[str, ...]) -> None:
    if value not in valid:
        raise ValueError(f"{name} must be one of {list(valid)}, but got {name}={value!r}")


def _check_device(device: str) -> None:
    if device == "auto":
        return
    try:
        torch.device(device)
    except (RuntimeError, TypeError) as err:
        raise ValueError(
            f"device must be 'auto' or a torch device string such as 'cpu' or 'cuda:0', "
            f"but got device={device!r}"
        ) from err


def resolve_device(device: str) -> torch.device:
    """``"auto"`` → CUDA if available, else CPU; any other string → that device.

    Raises:
        ValueError: a CUDA device is asked for but CUDA is not available.
    """
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    resolved = torch.device(device)
    if resolved.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device={device!r} needs CUDA, but torch.cuda.is_available() is False")
    return resolved


@dataclass(frozen=True)
class TrainResult:
    """What one training run measured. Curves hold one value per epoch 1..E.

    Attributes:
        train_loss: mean cross-entropy over the batches of each epoch (measured while training).
        test_loss: mean cross-entropy over the test split after each epoch.
        test_accuracy: test accuracy after each epoch.
        final_test_accuracy: test accuracy of the returned model (at init when E = 0).
        final_test_loss: test loss of the returned model.
        best_test_accuracy: max over the per-epoch curve (the final one when E = 0).
        train_loss_auc: mean height of the train-loss curve, see :func:`train_loss_auc`;
            None when E = 0.
        epochs_to_threshold: first epoch (1-based) whose train loss <= the threshold, None if
            none does.
        duration_s: wall-clock seconds of the run, evaluations included.
    """

    train_loss: list[float]
    test_loss: list[float]
    test_accuracy: list[float]
    final_test_accuracy: float
    final_test_loss: float
    best_test_accuracy: float
    train_loss_auc: float | None
    epochs_to_threshold: int | None
    duration_s: float
    loss_threshold: float = 0.5

    def metrics(self) -> dict[str, float | int | list[float] | None]:
        """Flat, Parquet-ready columns (curves as list columns, missing values as None)."""
        return {
            "test_accuracy": self.final_test_accuracy,
            "test_loss": self.final_test_loss,
            "best_test_accuracy": self.best_test_accuracy,
            "train_loss_auc": self.train_loss_auc,
            "epochs_to_threshold": self.epochs_to_threshold,
            "final_train_loss": self.train_loss[-1] if self.train_loss else None,
            "train_loss_curve": list(self.train_loss),
            "test_loss_curve": list(self.test_loss),
            "test_accuracy_curve": list(self.test_accuracy),
            "train_duration_s": self.duration_s,
        }


def train_loss_auc(train_loss: list[float]) -> float | None:
    """Area under the per-epoch train-loss curve, normalized to a mean loss.

    With losses ``L_1..L_E`` placed at epochs ``1..E``, this is the trapezoid integral
    ``∫_1^E L dt`` divided by its span ``E - 1``: the curve's mean height, in loss units, so runs
    of different lengths compare. For E = 1 the span is empty and the value is ``L_1``; for
    E = 0 it is None. A faster-converging run has a smaller value (Gebhart et al. 2021 relate
    convergence speed to the Path Kernel's trace).
    """
    losses = np.asarray(train_loss, dtype=np.float64)
    if losses.size == 0:
        return None
    if losses.size == 1:
        return float(losses[0])
    epochs = np.arange(1, losses.size + 1, dtype=np.float64)
    return float(trapezoid(losses, epochs) / (losses.size - 1))


def epochs_to_threshold(train_loss: list[float], threshold: float) -> int | None:
    """First epoch (1-based) whose train loss is <= ``threshold``; None if no epoch reaches it."""
    hits = np.flatnonzero(np.asarray(train_loss, dtype=np.float64) <= threshold)
    return int(hits[0]) + 1 if hits.size else None


def _split_tensors(split: TensorDataset) -> tuple[Tensor, Tensor]:
    if len(split.tensors) != 2:
        raise ValueError(
            f"a split must be a TensorDataset of (inputs, labels), but it holds "
            f"{len(split.tensors)} tensors"
        )
    return split.tensors[0], split.tensors[1]


def _batches(
    inputs: Tensor,
    labels: Tensor,
    batch_size: int,
    device: torch.device,
    generator: torch.Generator | None = None,
) -> Iterator[tuple[Tensor, Tensor]]:
    """Mini-batches moved to ``device``; shuffled by ``generator`` (a CPU generator) if given.

    Indexes the split's tensors directly (a whole batch per indexing call) instead of a
    per-sample DataLoader: same shuffling semantics, far less Python overhead per step.
    """
    n = inputs.shape[0]
    order = None
    if generator is not None:
        order = torch.randperm(n, generator=generator).to(inputs.device)
    for start in range(0, n, batch_size):
        if order is None:
            x, y = inputs[start : start + batch_size], labels[start : start + batch_size]
        else:
            idx = order[start : start + batch_size]
            x, y = inputs[idx], labels[idx]
        yield x.to(device, non_blocking=True), y.to(device, non_blocking=True)


@torch.no_grad()
def evaluate(
    model: nn.Module,
    dataset_split: TensorDataset,
    batch_size: int = _EVAL_BATCH,
    device: str | torch.device | None = None,
) -> tuple[float, float]:
    """Mean cross-entropy and accuracy of ``model`` on a split, in eval mode.

    Args:
        model: the network; its train/eval mode is restored afterwards.
        dataset_split: a ``TensorDataset`` of (inputs, integer labels).
        batch_size: evaluation batch size.
        device: where to run; None means the device of the model's first parameter (CPU if it
            has none). The model is not moved.

    Returns:
        ``(loss, accuracy)``, both averaged over samples.
    """
    if batch_size < 1:
        raise ValueError(f"batch_size >= 1 must hold, but got {batch_size=}")
    inputs, labels = _split_tensors(dataset_split)
    if device is None:
        first = next(model.parameters(), None)
        device = first.device if first is not None else torch.device("cpu")
    return _evaluate_tensors(model, inputs, labels, batch_size, torch.device(device))


@torch.no_grad()
def _evaluate_tensors(
    model: nn.Module, inputs: Tensor, labels: Tensor, batch_size: int, device: torch.device
) -> tuple[float, float]:
    if inputs.shape[0] == 0:
        raise ValueError("cannot evaluate on an empty split")
    was_training = model.training
    model.eval()
    loss_sum = torch.zeros((), dtype=torch.float64, device=device)
    correct = torch.zeros((), dtype=torch.int64, device=device)
    for x, y in _batches(inputs, labels, batch_size, device):
        logits = model(x)
        loss_sum += nn.functional.cross_entropy(logits, y, reduction="sum").double()
        correct += (logits.argmax(dim=1) == y).sum()
    model.train(was_training)
    n = inputs.shape[0]
    return float(loss_sum) / n, int(correct) / n


def _make_optimizer(model: nn.Module, config: TrainConfig) -> torch.optim.Optimizer:
    if config.optimizer == "sgd":
        return torch.optim.SGD(
            model.parameters(),
            lr=config.resolved_lr,
            momentum=config.momentum,
            weight_decay=config.weight_decay,
        )
    return torch.optim.Adam(
        model.parameters(), lr=config.resolved_lr, weight_decay=config.weight_decay
    )


def _make_scheduler(
    optimizer: torch.optim.Optimizer, config: TrainConfig
) -> torch.optim.lr_scheduler.LRScheduler | None:
    if config.lr_schedule == "cosine" and config.epochs > 0:
        return torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=config.epochs)
    return None


def _train_epoch(
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    batches: Iterator[tuple[Tensor, Tensor]],
    device: torch.device,
) -> float:
    """One pass over the batches; returns the mean batch loss (may be NaN or inf)."""
    model.train()
    # accumulated on the device: one host sync per epoch, not per step
    loss_sum = torch.zeros((), dtype=torch.float64, device=device)
    n_batches = 0
    for x, y in batches:
        optimizer.zero_grad(set_to_none=True)
        loss = nn.functional.cross_entropy(model(x), y)
        loss.backward()  # attached masks: pruned weights get exactly zero gradient
        optimizer.step()
        loss_sum += loss.detach().double()
        n_batches += 1
    return float(loss_sum) / max(n_batches, 1)


def train(
    model: nn.Module,
    masks: Mapping[str, Tensor] | None,
    dataset: SupervisedData,
    config: TrainConfig,
) -> tuple[nn.Module, TrainResult]:
    """Train a masked copy of ``model`` and record its convergence (Gebhart et al. 2021).

    The caller's model is never changed: a deep copy is masked (pruned weights set to zero),
    moved to ``config.device`` and trained with cross-entropy. Pruned weights stay exactly zero
    (the masks are attached with ``torch.nn.utils.prune``, see :func:`pruners.attach.attach_masks`,
    and made permanent before returning). Batches are reshuffled each
    epoch by a generator seeded with ``config.seed``, and torch's global RNG is seeded inside a
    forked RNG state, so a CPU run is bit-for-bit reproducible and the caller's RNG state is left
    untouched. GPU runs are reproducible only as far as cuDNN/cuBLAS kernels are.

    Args:
        model: the (unpruned or pruned) network; not modified.
        masks: parameter name -> bool tensor (True = kept), or None for no masking.
        dataset: any object with ``train`` and ``test`` ``TensorDataset`` splits, such as
            ``pruners.data.load_dataset("digits")``.
        config: the training settings. ``epochs=0`` only evaluates the masked network.

    Returns:
        ``(trained_copy, result)``; the copy is on the training device, in eval mode, with plain
        parameters (no masks attached) that are exactly zero where pruned.

    Raises:
        FloatingPointError: an epoch's mean train loss is NaN or infinite (names the epoch).
        ValueError: bad masks (see ``pruners.masks.check_masks``), splits or device.
    """
    start = time.perf_counter()
    device = resolve_device(config.device)
    if masks is not None:
        check_masks(model, masks)  # before any copy or device transfer
    net = copy.deepcopy(model).to(device)
    if masks is not None:
        attach_masks(net, masks)
    try:
        with _seeded_rng(config.seed, device):
            curves = _fit(net, dataset, config, device)
    finally:
        detach_masks(net)
    if config.epochs > 0:  # the last epoch already evaluated the returned model
        test_loss, test_acc = curves[1][-1], curves[2][-1]
    else:
        test_loss, test_acc = evaluate(net, dataset.test, _EVAL_BATCH, device)
    net.eval()
    result = _summarize(curves, test_loss, test_acc, config, time.perf_counter() - start)
    return net, result


@contextlib.contextmanager
def _seeded_rng(seed: int, device: torch.device) -> Iterator[None]:
    """Seed the CPU RNG (and ``device``'s, if CUDA) inside a fork that restores them afterwards.

    Only the RNGs in use are touched: a CPU run does not initialize CUDA.
    """
    cuda_index = None
    if device.type == "cuda":
        cuda_index = torch.cuda.current_device() if device.index is None else device.index
    with torch.random.fork_rng(devices=[] if cuda_index is None else [cuda_index]):
        torch.default_generator.manual_seed(seed)
        if cuda_index is not None:
            with torch.cuda.device(cuda_index):
                torch.cuda.manual_seed(seed)
        yield


def _fit(
    net: nn.Module,
    dataset: SupervisedData,
    config: TrainConfig,
    device: torch.device,
) -> tuple[list[float], list[float], list[float]]:
    """The epoch loop; returns the train-loss, test-loss and test-accuracy curves."""
    # whole splits go to the device once (they are in-memory TensorDatasets anyway)
    inputs, labels = (t.to(device) for t in _split_tensors(dataset.train))
    test_inputs, test_labels = (t.to(device) for t in _split_tensors(dataset.test))
    optimizer = _make_optimizer(net, config)
    scheduler = _make_scheduler(optimizer, config)
    generator = torch.Generator().manual_seed(config.seed)
    train_loss: list[float] = []
    test_loss: list[float] = []
    test_acc: list[float] = []
    for epoch in range(1, config.epochs + 1):
        batches = _batches(inputs, labels, config.batch_size, device, generator)
        loss = _train_epoch(net, optimizer, batches, device)
        if not math.isfinite(loss):
            raise FloatingPointError(
                f"train loss must stay finite, but epoch {epoch} of {config.epochs} has mean "
                f"train loss {loss} (lr={config.resolved_lr}, optimizer={config.optimizer!r})"
            )
        train_loss.append(loss)
        epoch_test_loss, epoch_test_acc = _evaluate_tensors(
            net, test_inputs, test_labels, _EVAL_BATCH, device
        )
        test_loss.append(epoch_test_loss)
        test_acc.append(epoch_test_acc)
        if scheduler is not None:
            scheduler.step()
    return train_loss, test_loss, test_acc


def _summarize(
    curves: tuple[list[float], list[float], list[float]],
    final_loss: float,
    final_acc: float,
    config: TrainConfig,
    duration_s: float,
) -> TrainResult:
    train_loss, test_loss, test_acc = curves
    return TrainResult(
        train_loss=train_loss,
        test_loss=test_loss,
        test_accuracy=test_acc,
        final_test_accuracy=final_acc,
        final_test_loss=final_loss,
        best_test_accuracy=max(test_acc) if test_acc else final_acc,
        train_loss_auc=train_loss_auc(train_loss),
        epochs_to_threshold=epochs_to_threshold(train_loss, config.loss_threshold),
        duration_s=duration_s,
        loss_threshold=config.loss_threshold,
    )
