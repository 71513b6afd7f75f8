"""Seconds per training epoch of the CIFAR-10 example models, to size a study in GPU-hours.

Trains VGG-16-bn and ResNet-20 (CIFAR shape 3x32x32, 10 classes) with ``pruners.train``, the
examples/cifar10 specs' settings (SGD, momentum 0.9, batch 128, weight decay 1e-4) and SynFlow
masks at 1% density, on an in-memory stand-in of CIFAR-10's size (50,000 train and 10,000 test
images of random values: the time per epoch does not depend on the pixel values). Prints the
seconds per epoch (an epoch includes its test-split evaluation) and the GPU-hours of one
160-epoch training per trial.

Usage: ``python benchmarks/bench_epoch.py [--device cuda] [--epochs 2] [--models vgg16 resnet20]``
"""

from __future__ import annotations

import argparse
import time

import torch
from torch.utils.data import TensorDataset

import pruners

SHAPE = (3, 32, 32)


def stand_in(train: int, test: int) -> pruners.Dataset:
    """A CIFAR-10-sized dataset of random images and labels (not CIFAR-10: timing only)."""
    gen = torch.Generator().manual_seed(0)

    def split(n: int) -> TensorDataset:
        x = torch.randn(n, *SHAPE, generator=gen)
        return TensorDataset(x, torch.randint(0, 10, (n,), generator=gen))

    return pruners.Dataset(
        name="cifar10-stand-in",
        train=split(train),
        test=split(test),
        input_shape=SHAPE,
        num_classes=10,
        raw_mean=torch.full(SHAPE, 0.5),
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--epochs", type=int, default=2, help="the first one warms up")
    parser.add_argument("--models", nargs="+", default=["vgg16", "resnet20"])
    parser.add_argument("--train-size", type=int, default=50_000)
    args = parser.parse_args()
    if args.epochs < 2:
        raise SystemExit(f"--epochs >= 2 must hold (the first warms up), but got {args.epochs}")
    data = stand_in(args.train_size, args.train_size // 5)
    where = torch.cuda.get_device_name() if args.device.startswith("cuda") else "CPU"
    print(f"torch {torch.__version__}, {where}, {len(data.train)} training images")
    for name in args.models:
        torch.manual_seed(0)
        options = {"batch_norm": True} if name.startswith("vgg") else {}
        model = pruners.build_model(name, SHAPE, 10, **options)
        start = time.perf_counter()
        masks = pruners.prune(
            model.to(args.device), "synflow", 0.01, 100, input_shape=SHAPE
        )
        prune_s = time.perf_counter() - start
        config = pruners.TrainConfig(
            epochs=1, lr=0.1, momentum=0.9, weight_decay=1e-4, batch_size=128,
            device=args.device,
        )  # fmt: skip
        times = []
        for _ in range(args.epochs):
            _, result = pruners.train(model, masks, data, config)
            times.append(result.duration_s)
        epoch = min(times[1:])
        print(
            f"[{name}] SynFlow 100 rounds: {prune_s:.1f} s; one epoch (train + test): "
            f"{epoch:.1f} s (first, warming up: {times[0]:.1f} s); 160 epochs: "
            f"{160 * epoch / 3600:.2f} GPU-hours"
        )


if __name__ == "__main__":
    main()
