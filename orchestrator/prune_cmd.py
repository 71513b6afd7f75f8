"""``pathsweep prune``: prune one model once, print its Path Kernel statistics (and training).

Example::

    pathsweep prune --model fc --data digits --pruner synflow-l2 --density 0.01 \\
        --iterations 100 --train-epochs 5 --json

A study's trial, retrained or exported (its saved masks are used when the study kept them)::

    pathsweep prune --from-study runs/s1 --trial 12 --train-epochs 20 --save-masks t12.safetensors

The work is :func:`orchestrator.trial.run_trial`, the function every study trial runs (same
seeding, same options); this module only turns arguments into its config and formats its result.

The arguments are parsed and their numbers checked before torch is imported, so a bad one is
rejected at once (one line, exit code 2).
"""

from __future__ import annotations

import argparse
import json
import math
import sys
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
    p.add_argument("--include-bias", action="store_true", help="also prune biases")
    p.add_argument("--include-norm", action="store_true", help="also prune normalization scales")
    p.add_argument("--per-class", type=int, default=10, help="prune sample size per class")
    p.add_argument("--train-epochs", type=int, default=0, help="train the pruned net N epochs")
    p.add_argument("--optimizer", default="sgd", help="sgd | adam")
    p.add_argument("--lr", type=float, default=None, help="learning rate")
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--device", default="auto", help="cpu | cuda | auto")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--save-masks", default=None, help="write masks (.pt or .safetensors)")
    p.add_argument("--json", action="store_true", help="print JSON instead of a table")
    p.add_argument(
        "--from-study",
        default=None,
        metavar="DIR",
        help="take the configuration of a study's trial (with --trial); uses its saved masks",
    )
    p.add_argument("--trial", type=int, default=None, help="Optuna trial number (--from-study)")
    return p


def _options(pairs: Sequence[str]) -> dict[str, Any]:
    options = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise ValueError(f"--option must look like KEY=VALUE, but got {pair!r}")
        options[key] = yaml.safe_load(value)
    return options


#: Flags that define the configuration; a study's trial brings its own.
_CONFIG_FLAGS = (
    "model",
    "option",
    "data",
    "data_root",
    "download",
    "pruner",
    "density",
    "iterations",
    "schedule",
    "scope",
    "path_exponent",
    "score_exponent",
    "input",
    "dense_classifier",
    "include_bias",
    "include_norm",
    "per_class",
    "seed",
)
#: Training flags: from a study they override its train options only when given.
_TRAIN_FLAGS = {"optimizer": "optimizer", "lr": "lr", "batch_size": "batch_size"}


def _train_options(args: argparse.Namespace, base: dict[str, Any]) -> dict[str, Any]:
    defaults = build_parser()
    options = dict(base)
    for flag, option in _TRAIN_FLAGS.items():
        value = getattr(args, flag)
        if value != defaults.get_default(flag) or option not in options:
            options[option] = value
    return options


def trial_config(args: argparse.Namespace) -> Any:
    """The :class:`orchestrator.trial.TrialConfig` that ``args`` describe."""
    from orchestrator.spec import DataSpec, ModelSpec, PruneSpec
    from orchestrator.trial import TrialConfig

    check_args(args)
    if args.trial is not None or args.from_study is not None:
        return _study_trial_config(args)
    params = {
        "pruner": args.pruner,
        "density": args.density,
        "iterations": args.iterations,
        "schedule": args.schedule,
        "scope": args.scope,
        # None: the scorer's own (SynFlow preset) value; pruners.prune refuses them elsewhere
        "path_exponent": args.path_exponent,
        "score_exponent": args.score_exponent,
        "input": args.input,
    }
    return TrialConfig(
        study="prune",
        number=0,
        attempt=0,
        phase="search",
        params=params,
        model=ModelSpec(args.model, _options(args.option)),
        data=DataSpec(args.data, args.data_root, args.download),
        prune=PruneSpec(
            dense_classifier=args.dense_classifier,
            include_bias=args.include_bias,
            include_norm=args.include_norm,
            sample_per_class=args.per_class,
        ),
        train_epochs=args.train_epochs,
        train_options=_train_options(args, {}),
        seed=args.seed,
        device=args.device,
        keep_masks=args.save_masks is not None,
    )


def _study_trial_config(args: argparse.Namespace) -> Any:
    """The configuration of trial ``--trial`` of study ``--from-study``, from its rows."""
    from dataclasses import replace
    from pathlib import Path

    from orchestrator.rows import PHASE_SEARCH, param_column
    from orchestrator.sink import read_trials
    from orchestrator.spec import SpecError, load_spec
    from orchestrator.studydir import SPEC_FILE
    from orchestrator.trial import make_config

    if args.from_study is None or args.trial is None:
        raise ValueError("--from-study DIR and --trial N must be given together")
    defaults = build_parser()
    for flag in _CONFIG_FLAGS:
        if getattr(args, flag) != defaults.get_default(flag):
            raise ValueError(
                f"--{flag.replace('_', '-')} cannot be combined with --from-study: the trial's "
                f"own configuration is used"
            )
    out = Path(args.from_study)
    if not (out / SPEC_FILE).is_file():
        raise ValueError(f"--from-study must be a study directory with {SPEC_FILE}: {str(out)!r}")
    try:
        spec = load_spec(out / SPEC_FILE)
    except SpecError as err:
        raise ValueError(f"--from-study {str(out)!r}: {err}") from err
    rows = [
        row
        for row in read_trials(out).to_pylist()
        if row.get("phase") == PHASE_SEARCH
        and row.get("optuna_number") == args.trial
        and row.get("state") == "COMPLETE"
    ]
    if not rows:
        raise ValueError(f"--trial {args.trial}: study {str(out)!r} has no COMPLETE search trial")
    row = max(rows, key=lambda r: r["attempt"])
    skip = {param_column("model"), param_column("dataset")}
    params = {
        name[len(param_column("")) :]: value
        for name, value in row.items()
        if name.startswith(param_column("")) and name not in skip
    }
    masks_file = None
    if row.get("masks_path"):
        masks_file = str(out / row["masks_path"])
        if not Path(masks_file).is_file():
            raise ValueError(
                f"--trial {args.trial}: its masks file {row['masks_path']!r} is missing from "
                f"{str(out)!r}"
            )
    config = make_config(
        spec, args.trial, 0, params, train_epochs=args.train_epochs, masks_file=masks_file
    )
    return replace(
        config,
        study=spec.study,
        train_options=_train_options(args, dict(config.train_options)),
        device=args.device,
        keep_masks=args.save_masks is not None,
    )


def run(args: argparse.Namespace) -> dict[str, Any]:
    """Do the work of ``pathsweep prune`` (one :func:`run_trial`) and return it as a flat dict."""
    from orchestrator.trial import run_trial

    config = trial_config(args)
    trial = run_trial(config)
    params = trial.params
    result: dict[str, Any] = {}
    if args.from_study is not None:
        result.update(study=config.study, trial=config.number, masks_from=config.masks_file)
    result.update(
        {
            "model": config.model.name,
            "data": config.data.name,
            "pruner": params["pruner"],
            "iterations": params["iterations"],
            "seed": config.seed,
            "prune_s": trial.timings["time_prune_s"],
        }
    )
    result.update(
        {k: v for k, v in trial.metrics.items() if k not in _TRIAL_ONLY and k != "train_epochs"}
    )
    if args.save_masks:
        import pruners

        if trial.masks is None:  # keep_masks was set: run_trial must have returned them
            raise RuntimeError("run_trial returned no masks although keep_masks was set")
        pruners.save_masks(trial.masks, args.save_masks)
        result["masks_path"] = args.save_masks
    return result


#: Columns of a study row that the command does not print (per-layer JSON maps).
_TRIAL_ONLY = ("layer_density", "layer_trace_share")


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
    """The name arguments are registered in ``pruners`` (checked without importing torch).

    Raises:
        ValueError: an unknown name, naming the argument and the valid ones.
    """
    from orchestrator import names

    registries: dict[str, tuple[str | None, Collection[str]]] = {
        "--model": (args.model, names.MODELS),
        "--data": (args.data, names.DATASETS),
        "--pruner": (args.pruner, names.SCORERS),
        "--schedule": (args.schedule, names.SCHEDULES),
        "--scope": (args.scope, names.SCOPES),
        "--input": (args.input, names.INPUTS),
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
        check_names(args)  # likewise
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
