"""Without ``--address`` a command starts its own local Ray, even when another cluster runs on
the machine and is recorded as the current one (``ray start``, ``ray.cluster_utils``), and it
starts it without Ray's token-authentication warning."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from .helpers import SMALL_SPEC, write_spec

ROOT = Path(__file__).resolve().parents[2]

SESSION = """\
import ray
from orchestrator.cluster import ray_session
with ray_session(None, num_cpus=1):
    print("GCS", ray.get_runtime_context().gcs_address)
"""

BARE = """\
import ray
ray.init(log_to_driver=False)
print("GCS", ray.get_runtime_context().gcs_address)
ray.shutdown()
"""


def _env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("RAY_ADDRESS", "RAY_AUTH_MODE")}
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])
    return env


def _python(code: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", code],
        cwd=ROOT,
        env=_env(),
        capture_output=True,
        text=True,
        timeout=180,
    )


def _gcs(done: subprocess.CompletedProcess[str]) -> str:
    lines = [line for line in done.stdout.splitlines() if line.startswith("GCS ")]
    assert done.returncode == 0 and lines, done.stderr[-3000:]
    return lines[-1].split()[1]


@pytest.fixture
def foreign_cluster() -> Iterator[Any]:
    """Another process's test cluster, recorded on this machine as the current cluster."""
    import ray
    from ray.cluster_utils import Cluster

    ray.shutdown()  # the shared local instance; the next ray_local user starts a new one
    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 1})
    try:
        yield cluster
    finally:
        ray.shutdown()
        cluster.shutdown()


def _drivers_seen_by(address: str) -> int:
    """How many drivers (jobs) have connected to the cluster at ``address`` so far."""
    import ray

    ray.init(address=address, log_to_driver=False)
    try:
        jobs = ray._private.state.jobs()  # every driver that connected, this one included
        return len(jobs)
    finally:
        ray.shutdown()


@pytest.mark.ray
@pytest.mark.slow
@pytest.mark.timeout(600)
def test_commands_without_an_address_never_join_a_foreign_cluster(
    foreign_cluster: Any, tmp_path: Path
) -> None:
    # the setup is real: a bare ray.init() on this machine joins the foreign cluster
    assert _gcs(_python(BARE)) == foreign_cluster.address
    before = _drivers_seen_by(foreign_cluster.address)

    session = _python(SESSION)
    assert _gcs(session) != foreign_cluster.address
    assert "Token authentication" not in session.stderr, session.stderr

    spec = write_spec(tmp_path / "spec.yaml", SMALL_SPEC.replace("trials: 6", "trials: 2"))
    out = tmp_path / "study"
    run = subprocess.run(
        [
            sys.executable,
            "-m",
            "orchestrator.cli",
            "study",
            "run",
            str(spec),
            "--out",
            str(out),
            "--workers",
            "1",
            "--view",
            "log",
        ],
        cwd=ROOT,
        env=_env(),
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert run.returncode == 0, run.stderr[-3000:]
    assert "Token authentication" not in run.stderr + run.stdout
    # neither ray_session nor `study run` connected a driver to the foreign cluster (the count
    # grows by one: the connection that counts them)
    assert _drivers_seen_by(foreign_cluster.address) == before + 1
