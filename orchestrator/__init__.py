"""orchestrator: hyperparameter studies of pruning at initialization on Ray clusters.

Optuna asks for a SynFlow-family configuration in the driver, a long-lived Ray actor pinned to a
GPU prunes a network with it and measures the data-free Path Kernel objectives of Gebhart,
Saxena, Schrater (2021), "A Unified Paths Perspective for Pruning at Initialization", and every
attempt becomes a row of Parquet. Entry point: the ``pathsweep`` command (:mod:`orchestrator.cli`).
"""

from __future__ import annotations

__version__ = "0.1.0"
