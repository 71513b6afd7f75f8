"""Two Ray nodes with one logical GPU each: one actor per GPU, rows say where trials ran."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from orchestrator.driver import run_study
from orchestrator.sink import read_trials
from orchestrator.studydir import create_study_dir
from orchestrator.trial import SleepTrial

from .helpers import small_spec


@pytest.fixture
def two_gpu_nodes() -> Iterator[dict[str, Any]]:
    """A head without GPUs and two worker nodes with one logical GPU each."""
    import ray
    from ray.cluster_utils import Cluster

    ray.shutdown()  # the shared local instance; the next ray_local user starts a new one
    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 1})
    nodes = [cluster.add_node(num_cpus=1, num_gpus=1) for _ in range(2)]
    try:
        cluster.wait_for_nodes(timeout=60)
        ray.init(address=cluster.address, log_to_driver=False)
        yield {"gpu_nodes": {n.node_id for n in nodes}}
    finally:
        ray.shutdown()
        cluster.shutdown()


@pytest.mark.ray
@pytest.mark.slow
@pytest.mark.timeout(240)
def test_one_actor_per_gpu_across_two_nodes(two_gpu_nodes: dict[str, Any], tmp_path: Path) -> None:
    spec = small_spec(trials=10, workers="auto")
    out = tmp_path / "study"
    create_study_dir(out, spec, None)
    summary = run_study(spec, out, trial_fn=SleepTrial(0.3), poll_s=0.05, start_timeout_s=120)
    assert summary.workers == 2 and summary.complete == 10
    rows = read_trials(out).to_pylist()
    by_node: dict[str, set[tuple[str, int]]] = {}
    for row in rows:
        by_node.setdefault(row["node_id"], set()).add((row["gpu_ids"], row["worker_pid"]))
    assert set(by_node) == two_gpu_nodes["gpu_nodes"]  # both GPU nodes, never the head
    for actors in by_node.values():
        assert len(actors) == 1  # one long-lived actor per GPU node
        ((gpu_ids, _),) = actors
        assert gpu_ids in ("0", "1")
    assert all(row["device"] == "cpu" for row in rows)  # logical GPUs: torch falls back to CPU
