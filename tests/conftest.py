"""Shared fixtures: one Ray instance for the whole test session (``ray.init`` costs ~5 s)."""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest

os.environ.setdefault("RAY_DEDUP_LOGS", "0")
os.environ.setdefault("RAY_ENABLE_UV_RUN_RUNTIME_ENV", "0")


@pytest.fixture
def ray_local() -> Iterator[None]:
    """A local Ray instance shared by every test that asks for it.

    Started on first use and shut down at the end of the session. Tests that need their own
    cluster (``ray.cluster_utils.Cluster``) call ``ray.shutdown()`` first; the next user of this
    fixture then starts a fresh local instance.
    """
    start_local_ray()
    yield


def start_local_ray() -> None:
    """Start the shared local Ray instance unless one is running (module-scoped fixtures)."""
    import ray

    if not ray.is_initialized():
        ray.init(
            address="local",
            num_cpus=2,
            include_dashboard=False,
            log_to_driver=False,
            configure_logging=False,
        )


@pytest.fixture(scope="session", autouse=True)
def _shutdown_ray_at_end() -> Iterator[None]:
    yield
    import sys

    if "ray" in sys.modules:
        import ray

        if ray.is_initialized():
            ray.shutdown()
