"""The names ``pruners`` registers, readable without importing torch.

``pathsweep prune`` checks its name arguments against these before anything heavy is imported,
so a misspelt ``--model`` is refused at once. ``tests/orchestrator/test_names.py`` checks that
every tuple here equals the registry it mirrors (``pruners.MODELS``, ``pruners.SCORERS``, ...):
a name added to pruners without being added here fails that test, never a user's command.
"""

from __future__ import annotations

MODELS = ("conv", "fc", "resnet110", "resnet20", "resnet32", "resnet56", "vgg11", "vgg16")
DATASETS = ("cifar10", "cifar100", "digits", "mnist", "synthetic")
SCORERS = (
    "grasp",
    "magnitude",
    "pk-preserve",
    "random",
    "snip",
    "synflow",
    "synflow-dist",
    "synflow-l2",
    "synflow-l2-code",
    "synflow-l2-dist",
)
SCHEDULES = ("exponential", "linear")
SCOPES = ("global", "layer")
INPUTS = ("data-mean", "ones")
