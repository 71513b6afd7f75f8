"""Datasets as in-memory tensors, and the class-balanced "prune sample" of data-dependent scorers.

Every loader returns a :class:`Dataset`: normalized float32 inputs (per-channel mean/std of the
training split), int64 labels, and ``raw_mean``, the mean training input *before* normalization.
The raw inputs are non-negative, so ``raw_mean`` is too; SynFlow-Dist feeds it to the network as
the data-mean input, with every weight made non-negative, so that all ReLUs stay open and the
network is linear in each layer (Gebhart, Saxena, Schrater 2021, "A Unified Paths Perspective for
Pruning at Initialization").

``digits`` (scikit-learn's bundled 8x8 digits) and ``synthetic`` work offline. ``mnist``,
``cifar10`` and ``cifar100`` need torchvision (``pip install 'pathsweep[vision]'``), imported only
when one of them is loaded, and a data ``root``; they download only when ``download=True``.
"""

from __future__ import annotations

import inspect
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch.utils.data import TensorDataset

_COMMON = ("root", "download", "seed")


@dataclass(frozen=True, eq=False)
class Dataset:
    """A classification dataset held in memory.

    Attributes:
        name: registry name (e.g. ``"digits"``).
        train: normalized float32 inputs of shape ``(N, *input_shape)`` and int64 labels.
        test: the test split, normalized with the training split's statistics.
        input_shape: shape of one example, e.g. ``(1, 8, 8)``.
        num_classes: labels are ``0 .. num_classes - 1``.
        raw_mean: mean training input before normalization, shape ``input_shape``, non-negative;
            the network input of SynFlow-Dist.
    """

    name: str
    train: TensorDataset
    test: TensorDataset
    input_shape: tuple[int, ...]
    num_classes: int
    raw_mean: torch.Tensor

    def __post_init__(self) -> None:
        if tuple(self.raw_mean.shape) != self.input_shape:
            raise ValueError(
                f"raw_mean must have shape input_shape={self.input_shape}, "
                f"but has shape {tuple(self.raw_mean.shape)}"
            )


@dataclass(frozen=True, eq=False)
class PruneSample:
    """A class-balanced batch for data-dependent scorers (SNIP, GraSP) and SynFlow-Dist.

    Attributes:
        x: normalized inputs, ``(num_classes * per_class, *input_shape)``, grouped by class.
        y: int64 labels, ``per_class`` of each class in increasing order.
        raw_mean: the dataset's ``raw_mean`` (mean of the raw training inputs, not of this
            sample): it describes raw inputs, which ``x`` no longer is.
    """

    x: torch.Tensor
    y: torch.Tensor
    raw_mean: torch.Tensor


# --------------------------------------------------------------------------- building blocks


def _channel_dims(raw: torch.Tensor) -> tuple[int, ...]:
    """Dims averaged over for per-channel statistics: all but dim 1 (1-D inputs: one channel)."""
    if raw.dim() <= 2:
        return tuple(range(raw.dim()))
    return (0, *range(2, raw.dim()))


def _make_dataset(
    name: str,
    raw: tuple[torch.Tensor, torch.Tensor],
    labels: tuple[torch.Tensor, torch.Tensor],
    num_classes: int,
) -> Dataset:
    """Normalize raw (train, test) inputs per channel with the training statistics."""
    train_raw, test_raw = (r.to(torch.float32) for r in raw)
    dims = _channel_dims(train_raw)
    mean = train_raw.mean(dim=dims, keepdim=True)
    std = train_raw.std(dim=dims, keepdim=True, unbiased=False)
    std = torch.where(std > 0, std, torch.ones_like(std))  # a constant channel stays constant
    return Dataset(
        name=name,
        train=TensorDataset((train_raw - mean) / std, labels[0].to(torch.int64)),
        test=TensorDataset((test_raw - mean) / std, labels[1].to(torch.int64)),
        input_shape=tuple(train_raw.shape[1:]),
        num_classes=num_classes,
        raw_mean=train_raw.mean(dim=0),
    )


# --------------------------------------------------------------------------- offline loaders


def _load_digits(*, root: str | None, download: bool, seed: int) -> Dataset:
    """scikit-learn's bundled 8x8 digits: pixels 0..16 scaled to [0, 1], stratified 1437/360."""
    del root, download  # bundled with scikit-learn: nothing to find or fetch
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    digits = load_digits()
    images = torch.tensor(digits.images, dtype=torch.float32).unsqueeze(1) / 16.0
    labels = torch.tensor(digits.target, dtype=torch.int64)
    index = torch.arange(len(labels)).numpy()
    train_idx, test_idx = train_test_split(
        index, test_size=360, stratify=labels.numpy(), random_state=seed
    )
    train_i, test_i = torch.from_numpy(train_idx), torch.from_numpy(test_idx)
    return _make_dataset(
        "digits", (images[train_i], images[test_i]), (labels[train_i], labels[test_i]), 10
    )


def _check_positive(name: str, value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{name} must be a positive integer, but got {name}={value!r}")
    return value


def _load_synthetic(
    *,
    root: str | None,
    download: bool,
    seed: int,
    num_classes: int = 10,
    input_shape: Sequence[int] = (1, 8, 8),
    n_train: int = 1000,
    n_test: int = 200,
    noise: float = 0.75,
) -> Dataset:
    """Class prototypes in [0, 1] plus Gaussian noise, clipped at 0; balanced classes.

    Each class has a random non-negative prototype; an example is its class prototype plus
    ``noise`` times standard normal noise, clipped to stay non-negative. Deterministic for a seed.
    """
    del root, download
    if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 2:
        raise ValueError(f"num_classes >= 2 must hold, but got {num_classes=}")
    shape = tuple(_check_positive("input_shape entries", d) for d in input_shape)
    n_train, n_test = _check_positive("n_train", n_train), _check_positive("n_test", n_test)
    if not shape:
        raise ValueError(f"input_shape must have at least one entry, but got {input_shape=}")
    if isinstance(noise, bool) or not isinstance(noise, int | float) or noise < 0:
        raise ValueError(f"noise >= 0 must hold, but got {noise=}")
    gen = torch.Generator().manual_seed(seed)
    prototypes = torch.rand(num_classes, math.prod(shape), generator=gen)
    total = n_train + n_test
    labels = (torch.arange(total) % num_classes)[torch.randperm(total, generator=gen)]
    x = prototypes[labels] + noise * torch.randn(total, prototypes.shape[1], generator=gen)
    x = x.clamp(min=0.0).reshape(total, *shape)
    return _make_dataset(
        "synthetic", (x[:n_train], x[n_train:]), (labels[:n_train], labels[n_train:]), num_classes
    )


# --------------------------------------------------------------------------- torchvision loaders


def _import_torchvision(name: str) -> Any:
    try:
        import torchvision  # type: ignore[import-not-found]
    except Exception as exc:  # missing, or a build that does not match torch
        raise RuntimeError(
            f"dataset {name!r} needs torchvision, which failed to import ({exc}); "
            "install it with: pip install 'pathsweep[vision]'"
        ) from exc
    return torchvision


def images_to_tensor(data: Any) -> torch.Tensor:
    """uint8 images ``(N, H, W)`` or ``(N, H, W, C)`` to float32 ``(N, C, H, W)`` in [0, 1].

    The same values torchvision's ``ToTensor`` gives, for a whole split at once.
    """
    images = torch.as_tensor(data)
    if images.dtype != torch.uint8 or images.dim() not in (3, 4):
        raise ValueError(
            f"images must be uint8 of shape (N, H, W) or (N, H, W, C), "
            f"but got dtype={images.dtype} shape={tuple(images.shape)}"
        )
    images = images.unsqueeze(1) if images.dim() == 3 else images.permute(0, 3, 1, 2)
    return images.to(torch.float32).div(255.0).contiguous()


def _torchvision_splits(name: str, class_name: str, root: str | None, download: bool) -> list[Any]:
    """The train and test splits as torchvision datasets (uint8 arrays, not yet tensors)."""
    if root is None:
        raise ValueError(f"dataset {name!r} needs a data directory: pass root=...")
    datasets = _import_torchvision(name).datasets
    splits = []
    for train in (True, False):
        try:
            splits.append(getattr(datasets, class_name)(root=root, train=train, download=download))
        except RuntimeError as exc:
            raise RuntimeError(
                f"dataset {name!r} not found under root={root!r} with {download=}; "
                f"pass download=True to fetch it ({exc})"
            ) from exc
    return splits


def _torchvision_loader(name: str, class_name: str, num_classes: int) -> Callable[..., Dataset]:
    def load(*, root: str | None, download: bool, seed: int) -> Dataset:
        del seed  # the official train/test split is fixed
        splits = [
            (images_to_tensor(split.data), torch.as_tensor(split.targets))
            for split in _torchvision_splits(name, class_name, root, download)
        ]
        (x_train, y_train), (x_test, y_test) = splits
        return _make_dataset(name, (x_train, x_test), (y_train, y_test), num_classes)

    load.__name__ = load.__qualname__ = f"_load_{name}"
    return load


# --------------------------------------------------------------------------- registry

DATASETS: dict[str, Callable[..., Dataset]] = {
    "digits": _load_digits,
    "synthetic": _load_synthetic,
    "mnist": _torchvision_loader("mnist", "MNIST", 10),
    "cifar10": _torchvision_loader("cifar10", "CIFAR10", 10),
    "cifar100": _torchvision_loader("cifar100", "CIFAR100", 100),
}
# torchvision datasets: class name, input shape and classes (known without loading the files).
_TORCHVISION: dict[str, tuple[str, tuple[int, ...], int]] = {
    "mnist": ("MNIST", (1, 28, 28), 10),
    "cifar10": ("CIFAR10", (3, 32, 32), 10),
    "cifar100": ("CIFAR100", (3, 32, 32), 100),
}


def dataset_options(name: str) -> dict[str, object]:
    """The options of dataset ``name`` (besides root/download/seed) with their defaults."""
    if name not in DATASETS:
        raise ValueError(f"unknown dataset {name!r}; valid: {sorted(DATASETS)}")
    params = inspect.signature(DATASETS[name]).parameters.values()
    return {p.name: p.default for p in params if p.name not in _COMMON}


def load_dataset(
    name: str, *, root: str | None = None, download: bool = False, seed: int = 0, **options: Any
) -> Dataset:
    """Load a registered dataset into memory, normalized per channel.

    Args:
        name: a key of :data:`DATASETS` (``digits``, ``synthetic``, ``mnist``, ``cifar10``,
            ``cifar100``).
        root: data directory; required by the torchvision datasets, ignored by the others.
        download: let torchvision download a missing dataset into ``root``.
        seed: seed of the digits train/test split and of the synthetic data.
        **options: dataset options; :func:`dataset_options` lists them with their defaults.

    Returns:
        The :class:`Dataset`; its ``raw_mean`` is the data-mean input of SynFlow-Dist
        (Gebhart, Saxena, Schrater 2021; Tanaka et al. 2020).

    Raises:
        ValueError: unknown name or option, a bad option value, or a missing ``root``.
        RuntimeError: torchvision is needed but does not import, or the data is not in ``root``.
    """
    valid = sorted(dataset_options(name))
    for option in options:
        if option not in valid:
            raise ValueError(f"unknown option {option!r} for dataset {name!r}; valid: {valid}")
    return DATASETS[name](root=root, download=download, seed=seed, **options)


def check_dataset(
    name: str, *, root: str | None = None, download: bool = False, seed: int = 0, **options: Any
) -> tuple[tuple[int, ...], int]:
    """Check that :func:`load_dataset` will succeed, more cheaply; return its shape and classes.

    The torchvision datasets are opened by torchvision (which finds and verifies the files, or
    downloads them with ``download=True``) but not converted to tensors; the bundled ones are
    loaded (they are small).

    Returns:
        ``(input_shape, num_classes)``.

    Raises:
        ValueError: unknown name or option, a bad option value, or a missing ``root``.
        RuntimeError: torchvision is needed but does not import, or the data is not in ``root``.
    """
    if name not in _TORCHVISION:
        dataset = load_dataset(name, root=root, download=download, seed=seed, **options)
        return dataset.input_shape, dataset.num_classes
    valid = sorted(dataset_options(name))
    for option in options:
        if option not in valid:
            raise ValueError(f"unknown option {option!r} for dataset {name!r}; valid: {valid}")
    class_name, shape, classes = _TORCHVISION[name]
    _torchvision_splits(name, class_name, root, download)
    return shape, classes


def prune_sample(dataset: Dataset, per_class: int = 10, seed: int = 0) -> PruneSample:
    """``per_class`` random training examples of every class, for data-dependent scorers.

    SNIP and GraSP score on a class-balanced batch (Lee et al. 2019; Wang et al. 2020), as in
    the comparisons of Tanaka et al. (2020) and Gebhart, Saxena, Schrater (2021).

    Args:
        dataset: the dataset to sample from (its training split).
        per_class: examples per class (at least 1).
        seed: seed of the choice; the same seed gives the same sample.

    Returns:
        A :class:`PruneSample` grouped by class; ``raw_mean`` is ``dataset.raw_mean``.

    Raises:
        ValueError: ``per_class < 1`` or a class with fewer than ``per_class`` examples.
    """
    if isinstance(per_class, bool) or not isinstance(per_class, int) or per_class < 1:
        raise ValueError(f"per_class >= 1 must hold, but got {per_class=}")
    x, y = dataset.train.tensors
    gen = torch.Generator().manual_seed(seed)
    chosen = []
    for label in range(dataset.num_classes):
        members = torch.nonzero(y == label).flatten()
        if len(members) < per_class:
            raise ValueError(
                f"class {label} has {len(members)} training examples, fewer than {per_class=}"
            )
        chosen.append(members[torch.randperm(len(members), generator=gen)[:per_class]])
    index = torch.cat(chosen)
    return PruneSample(x=x[index].clone(), y=y[index].clone(), raw_mean=dataset.raw_mean)
