"""``pathsweep prune``: prune one model once, print its Path Kernel statistics (and training).

Example::

    pathsweep prune --model fc --data digits --pruner synflow-l2 --density 0.01 \\
        --iterations 100 --train-epochs 5 --json

The arguments are parsed and their numbers checked before torch is imported, so a bad one is
rejected at once (one line, exit code 2).
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from collections.abc import Collection, Sequence
from typing import Any, NoReturn

import yaml

#: Upper bound of ``--iterations`` (as ``search.iterations`` of a study spec).
MAX_ITERATIONS = 100_000


class _Parser(argparse.ArgumentParser):
    """argparse that reports a usage error as one line and exit code 2."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"pathsweep prune: error: {message}\n")


def build_parser() -> argparse.ArgumentParser:
    p = _Parser(prog="pathsweep prune", description="Prune a model at initialization once.")
    p.add_argument("--model", default="fc", help="model name (pruners.MODELS)")
    p.add_argument(
        "--option",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="model option, e.g. --option width=200 (repeatable)",
    )
    p.add_argument("--data", default="digits", help="dataset name (pruners.DATASETS)")
    p.add_argument("--data-root", default=None, help="data root for torchvision datasets")
    p.add_argument("--download", action="store_true", help="download torchvision datasets")
    p.add_argument("--pruner", default="synflow", help="scorer name (pruners.SCORERS)")
    p.add_argument("--density", type=float, default=0.01, help="fraction of weights kept")
    p.add_argument("--iterations", type=int, default=100, help="pruning rounds")
    p.add_argument("--schedule", default="exponential", help="exponential | linear")
    p.add_argument("--scope", default="global", help="global | layer")
    p.add_argument("--path-exponent", type=float, default=None, help="SynFlow-family p")
    p.add_argument("--score-exponent", type=float, default=None, help="SynFlow-family a")
    p.add_argument("--input", default=None, help="SynFlow-family input: ones | data-mean")
    p.add_argument("--dense-classifier", action="store_true", help="never prune the classifier")
    p.add_argument("--per-class", type=int, default=10, help="prune sample size per class")
    p.add_argument("--train-epochs", type=int, default=0, help="train the pruned net N epochs")
    p.add_argument("--optimizer", default="sgd", help="sgd | adam")
    p.add_argument("--lr", type=float, default=None, help="learning rate")
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--device", default="auto", help="cpu | cuda | auto")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--save-masks", default=None, help="write masks (.pt or .safetensors)")
    p.add_argument("--json", action="store_true", help="print JSON instead of a table")
    return p


def _options(pairs: Sequence[str]) -> dict[str, Any]:
    options = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise ValueError(f"--option must look like KEY=VALUE, but got {pair!r}")
        options[key] = yaml.safe_load(value)
    return options


def run(args: argparse.Namespace) -> dict[str, Any]:
    """Do the work of ``pathsweep prune`` and return the result as a flat dict."""
    import torch

    import pruners
    from pruners.training import TrainConfig, resolve_device

    check_args(args)
    train_cfg = TrainConfig(
        epochs=args.train_epochs,
        optimizer=args.optimizer,
        lr=args.lr,
        batch_size=args.batch_size,
        seed=args.seed,
        device=args.device,
    )
    device = resolve_device(args.device)
    data = pruners.load_dataset(args.data, root=args.data_root, download=args.download)
    torch.manual_seed(args.seed)
    model = pruners.build_model(
        args.model, data.input_shape, data.num_classes, **_options(args.option)
    ).to(device)
    sample = pruners.prune_sample(data, per_class=args.per_class, seed=args.seed)
    start = time.perf_counter()
    masks = pruners.prune(
        model,
        args.pruner,
        args.density,
        args.iterations,
        args.schedule,
        args.scope,
        input_shape=data.input_shape,
        sample=sample,
        path_exponent=args.path_exponent,
        score_exponent=args.score_exponent,
        input=args.input,
        dense_classifier=args.dense_classifier,
        seed=args.seed,
    )
    prune_s = time.perf_counter() - start
    stats = pruners.path_kernel_stats(model, data.input_shape, masks)
    result: dict[str, Any] = {
        "model": args.model,
        "data": args.data,
        "pruner": args.pruner,
        "iterations": args.iterations,
        "seed": args.seed,
        "prune_s": prune_s,
        **stats.metrics(),
    }
    if args.train_epochs > 0:
        _, trained = pruners.train(model, masks, data, train_cfg)
        result.update(trained.metrics())
    if args.save_masks:
        pruners.save_masks(masks, args.save_masks)
        result["masks_path"] = args.save_masks
    return result


def check_args(args: argparse.Namespace) -> None:
    """The rules on the numbers of the arguments, checked without importing torch.

    Names (model, data, pruner, schedule, ...) are checked by ``pruners`` itself.

    Raises:
        ValueError: the first broken rule, naming the argument.
    """
    if not 0 < args.density <= 1:
        raise ValueError(f"0 < density <= 1 must hold, but got density={args.density!r}")
    if not 1 <= args.iterations <= MAX_ITERATIONS:
        raise ValueError(
            f"1 <= --iterations <= {MAX_ITERATIONS:,} must hold, but got {args.iterations}"
        )
    if args.train_epochs < 0:
        raise ValueError(f"--train-epochs >= 0 must hold, but got {args.train_epochs}")
    if args.per_class < 1:
        raise ValueError(f"--per-class >= 1 must hold, but got {args.per_class}")
    if args.batch_size < 1:
        raise ValueError(f"--batch-size >= 1 must hold, but got {args.batch_size}")
    if args.lr is not None and not (math.isfinite(args.lr) and args.lr > 0):
        raise ValueError(f"--lr > 0 must hold, but got {args.lr}")
    _options(args.option)  # KEY=VALUE form


def check_names(args: argparse.Namespace) -> None:
    """The names of the arguments are registered in ``pruners`` (checked before data loads).

    Raises:
        ValueError: an unknown name, naming the argument and the valid ones.
    """
    import pruners

    registries: dict[str, tuple[str | None, Collection[str]]] = {
        "--model": (args.model, list(pruners.MODELS)),
        "--data": (args.data, list(pruners.DATASETS)),
        "--pruner": (args.pruner, list(pruners.SCORERS)),
        "--schedule": (args.schedule, list(pruners.SCHEDULES)),
        "--scope": (args.scope, list(pruners.SCOPES)),
        "--input": (args.input, list(pruners.INPUTS)),
    }
    for flag, (name, valid) in registries.items():
        if name is not None and name not in valid:
            raise ValueError(f"{flag} must be one of {sorted(valid)}, but got {name!r}")


def _print_table(result: dict[str, Any]) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"{result['pruner']} on {result['model']} / {result['data']}")
    table.add_column("statistic")
    table.add_column("value", justify="right")
    for key, value in result.items():
        if isinstance(value, list):
            value = ", ".join(f"{v:.3g}" for v in value)
        elif isinstance(value, float):
            value = f"{value:.6g}"
        table.add_row(key, str(value))
    Console().print(table)


def _jsonable(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)  # JSON has no inf/nan; "-inf" keeps the meaning
    return value


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``pathsweep prune``; returns the exit code."""
    args = build_parser().parse_args(argv)
    try:
        check_args(args)  # before torch is imported: a bad argument is rejected at once
        check_names(args)
        result = run(args)
    except (ValueError, RuntimeError, FloatingPointError) as err:
        print(f"pathsweep prune: error: {err}".splitlines()[0], file=sys.stderr)
        return 2
    if args.json:
        print(json.dumps({k: _jsonable(v) for k, v in result.items()}, indent=2))
    else:
        _print_table(result)
    return 0


if __name__ == "__main__":
    sys.exit(main())
