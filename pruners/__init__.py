"""pruners: pruning at initialization and Path Kernel statistics, in pure PyTorch.

Implements Gebhart, Saxena, Schrater (2021), *A Unified Paths Perspective for Pruning at
Initialization*: the Path Kernel's trace and statistics, and the SynFlow family of pruners
(SynFlow, SynFlow-L2, SynFlow-Dist) beside SNIP, GraSP, magnitude and random baselines,
and the top of the Path Kernel's spectrum.
Imports neither ray nor optuna.
"""

from __future__ import annotations

from pruners.attach import attach_masks, attached_masks, detach_masks
from pruners.data import DATASETS, Dataset, PruneSample, load_dataset, prune_sample
from pruners.masks import (
    Masks,
    apply_masks,
    density,
    layer_densities,
    load_masks,
    masked_copy,
    prunable_parameters,
    save_masks,
)
from pruners.models import MODELS, build_model
from pruners.pruning import SCHEDULES, SCOPES, prune, schedule_densities, score
from pruners.sanity import reinitialize, shuffle_masks
from pruners.scores import INPUTS, SCORERS, SynFlowParams
from pruners.spectrum import (
    SPECTRUM_METRICS,
    PathKernelSpectrum,
    SpectrumOptions,
    path_kernel_spectrum,
)
from pruners.stats import PathKernelStats, log_path_kernel_trace, path_kernel_stats
from pruners.training import TrainConfig, TrainResult, train

__version__ = "0.1.0"

__all__ = [
    "DATASETS",
    "INPUTS",
    "MODELS",
    "SCHEDULES",
    "SCOPES",
    "SCORERS",
    "SPECTRUM_METRICS",
    "Dataset",
    "Masks",
    "PathKernelSpectrum",
    "PathKernelStats",
    "PruneSample",
    "SpectrumOptions",
    "SynFlowParams",
    "TrainConfig",
    "TrainResult",
    "__version__",
    "apply_masks",
    "attach_masks",
    "attached_masks",
    "build_model",
    "density",
    "detach_masks",
    "layer_densities",
    "load_dataset",
    "load_masks",
    "log_path_kernel_trace",
    "masked_copy",
    "path_kernel_spectrum",
    "path_kernel_stats",
    "prunable_parameters",
    "prune",
    "prune_sample",
    "reinitialize",
    "save_masks",
    "schedule_densities",
    "score",
    "shuffle_masks",
    "train",
]
