"""Clusters end to end (issue 5): a GPU node lost mid-study, and a study through the Ray Jobs API.

- ``ray.cluster_utils.Cluster`` with two nodes of one logical GPU each: one actor per GPU; one
  node is removed while trials run on it. The attempt it was running becomes a FAIL row that
  names the lost node, its trial is retried on the survivor, and the study finishes there (the
  replacement actor cannot be placed: no free GPU), every trial COMPLETE exactly once.
- ``ray start --head`` on loopback with the dashboard, then ``ray job submit --working-dir .
  -- pathsweep study run ...`` exactly as README.md ("Run on a cluster") tells users: the job succeeds and the
  Parquet rows are in ``OUT/trials/``.

An unreachable ``--address`` (a dead head: nothing listens on its port) is covered by
``tests/orchestrator/test_cli.py::test_unreachable_address_fails_fast_with_one_line``.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import optuna
import pytest
from optuna.trial import TrialState

from orchestrator.driver import run_study
from orchestrator.sink import WAL_NAME, read_trials
from orchestrator.studydir import TRIALS_DIR, create_study_dir, open_storage
from orchestrator.trial import SleepTrial

from .orchestrator.helpers import small_spec, wait_for

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent  # `ray` and `pathsweep` of this environment

# ----------------------------------------------------------------------------- node loss


@pytest.fixture
def two_gpu_nodes() -> Iterator[tuple[Any, list[Any]]]:
    """A head without GPUs and two nodes with one logical GPU each (the cluster and the nodes)."""
    import ray
    from ray.cluster_utils import Cluster

    ray.shutdown()  # the shared local instance; the next ray_local user starts a new one
    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 1})
    nodes = [cluster.add_node(num_cpus=1, num_gpus=1) for _ in range(2)]
    try:
        cluster.wait_for_nodes(timeout=60)
        ray.init(address=cluster.address, log_to_driver=False)
        yield cluster, nodes
    finally:
        ray.shutdown()
        cluster.shutdown()


def _wal_rows(out: Path) -> list[dict[str, Any]]:
    """Rows in the sink's write-ahead log (complete lines only: the driver may be writing)."""
    wal = out / TRIALS_DIR / WAL_NAME
    lines = wal.read_text(encoding="utf-8").splitlines() if wal.exists() else []
    rows = []
    for line in lines:
        try:
            rows.append(json.loads(line))
        except json.JSONDecodeError:
            continue
    return rows


class _StudyThread(threading.Thread):
    """``run_study`` with 1 s sleep trials in a thread, so that the test's main thread can
    remove and add nodes (``Cluster.add_node`` installs signal handlers: main thread only)."""

    def __init__(self, spec: Any, out: Path) -> None:
        super().__init__(daemon=True)
        self.spec, self.out = spec, out
        self.summary: Any = None
        self.error: BaseException | None = None
        create_study_dir(out, spec, None)

    def run(self) -> None:
        try:
            self.summary = run_study(
                self.spec, self.out, trial_fn=SleepTrial(1.0), poll_s=0.05, start_timeout_s=120
            )
        except BaseException as exc:  # re-raised in the test's thread by finish()
            self.error = exc

    def wait_rows(self, count: int) -> None:
        assert wait_for(lambda: len(_wal_rows(self.out)) >= count or not self.is_alive(), 180)
        assert self.is_alive(), f"the study ended before {count} rows: {self.error!r}"

    def finish(self) -> Any:
        self.join(timeout=240)
        assert not self.is_alive(), "the study did not finish after the node loss"
        if self.error is not None:
            raise self.error
        return self.summary


def _check_every_trial_complete_once(spec: Any, out: Path, summary: Any) -> list[dict[str, Any]]:
    """Rows and Optuna agree: each trial COMPLETE exactly once, no trial_id twice; the rows."""
    trials = spec.trials
    assert summary.workers == 2 and summary.complete == trials and summary.failed == 0
    rows: list[dict[str, Any]] = read_trials(out).to_pylist()
    ids = [r["trial_id"] for r in rows]
    assert len(ids) == len(set(ids))
    complete = Counter(r["optuna_number"] for r in rows if r["state"] == "COMPLETE")
    assert set(complete) == set(range(trials)) and set(complete.values()) == {1}
    study = optuna.load_study(study_name=spec.study, storage=open_storage(out, None))
    assert Counter(t.state for t in study.trials) == {TrialState.COMPLETE: trials}
    return rows


def _check_lost_attempts(rows: list[dict[str, Any]], lost: str, retried: int) -> None:
    """The attempts running on the lost node are FAIL rows naming it, each retried elsewhere."""
    fails = [r for r in rows if r["state"] == "FAIL"]
    assert fails and retried == len(fails)
    done = {r["optuna_number"]: r for r in rows if r["state"] == "COMPLETE"}
    for fail in fails:
        assert fail["node_id"] == lost and fail["retry"] is True
        assert fail["error"].startswith("worker lost: ")
        again = done[fail["optuna_number"]]
        assert again["attempt"] == fail["attempt"] + 1 and again["node_id"] != lost


@pytest.mark.ray
@pytest.mark.slow
@pytest.mark.timeout(300)
def test_lost_node_attempts_fail_and_the_study_finishes_on_the_survivor(
    two_gpu_nodes: tuple[Any, list[Any]], tmp_path: Path
) -> None:
    cluster, (kept, lost) = two_gpu_nodes
    spec = small_spec(trials=12, workers="auto", max_attempts=3)
    study = _StudyThread(spec, tmp_path / "study")
    study.start()
    study.wait_rows(3)
    cluster.remove_node(lost)
    removed_at = time.time()
    summary = study.finish()

    rows = _check_every_trial_complete_once(spec, study.out, summary)
    _check_lost_attempts(rows, lost.node_id, summary.retried)
    # Only one GPU is left, so the replacement actor cannot be placed; the driver goes on
    # with the survivor: the two original actors ran every trial, and every attempt that
    # started after the loss ran on the surviving node.
    actors = {(r["node_id"], r["worker_pid"]) for r in rows if r["state"] == "COMPLETE"}
    assert {node for node, _ in actors} == {lost.node_id, kept.node_id} and len(actors) == 2
    after = [r for r in rows if r["started_at"].timestamp() > removed_at]
    assert after and all(r["node_id"] == kept.node_id for r in after)


@pytest.mark.ray
@pytest.mark.slow
@pytest.mark.timeout(300)
def test_a_node_that_joins_later_hosts_the_replacement_actor(
    two_gpu_nodes: tuple[Any, list[Any]], tmp_path: Path
) -> None:
    """What an autoscaler does after a node loss: a new GPU node joins mid-study, and the
    replacement actor that was waiting for a GPU starts there and takes trials."""
    cluster, (_, lost) = two_gpu_nodes
    spec = small_spec(trials=16, workers="auto", max_attempts=3)
    study = _StudyThread(spec, tmp_path / "study")
    study.start()
    study.wait_rows(3)
    cluster.remove_node(lost)
    study.wait_rows(6)
    joined = cluster.add_node(num_cpus=1, num_gpus=1)
    joined_at = time.time()
    summary = study.finish()

    rows = _check_every_trial_complete_once(spec, study.out, summary)
    _check_lost_attempts(rows, lost.node_id, summary.retried)
    on_new = [r for r in rows if r["node_id"] == joined.node_id]
    assert on_new and all(r["state"] == "COMPLETE" for r in on_new)
    assert all(r["started_at"].timestamp() > joined_at for r in on_new)
    assert len({r["worker_pid"] for r in on_new}) == 1  # one actor per GPU, long-lived


# ----------------------------------------------------------------------------- Ray Jobs API

JOB_SPEC = """\
study: jobs-api
model: {name: fc, width: 16, depth: 3}
data: {name: digits}
density: 0.1
search:
  path_exponent: {low: 0.5, high: 3.0}
  iterations: {low: 1, high: 3}
sampler: random
trials: 20
workers: 2
seed: 0
"""
# A marker in the environment of every process the head starts, so teardown finds them all
# (the job's entrypoint runs in its own session, so a process group is not enough).
MARKER = "PATHSWEEP_TEST_HEAD"


@dataclass(frozen=True)
class Head:
    """A Ray head started with ``ray start --head`` for one test."""

    dashboard: str  # the Jobs API address, http://127.0.0.1:PORT
    env: dict[str, str]  # for `ray job ...` and other clients: auth token, PATH


def _free_ports(count: int) -> list[int]:
    sockets = [socket.socket() for _ in range(count)]
    try:
        for sock in sockets:
            sock.bind(("127.0.0.1", 0))
        return [sock.getsockname()[1] for sock in sockets]
    finally:
        for sock in sockets:
            sock.close()


def _marked_pids(marker: str) -> list[int]:
    """Processes whose environment carries ``MARKER=marker`` (only ones this test started)."""
    needle = f"{MARKER}={marker}".encode()
    pids = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            environ = (entry / "environ").read_bytes()
        except OSError:  # gone, or not ours
            continue
        if needle in environ.split(b"\0"):
            pids.append(int(entry.name))
    return pids


def _dashboard_up(url: str, token: str) -> bool:
    request = urllib.request.Request(
        f"{url}/api/version", headers={"Authorization": f"Bearer {token}"}
    )
    try:
        with urllib.request.urlopen(request, timeout=2) as response:
            return bool(response.status == 200)
    except (urllib.error.URLError, OSError):
        return False


def _stop_head(proc: subprocess.Popen[bytes], marker: str) -> list[int]:
    """Stop the head (SIGTERM to ``ray start --block`` stops what it started), then SIGKILL
    any process that still carries the marker (job entrypoints, workers); returns those."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(60)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(30)
    wait_for(lambda: not _marked_pids(marker), timeout=15, interval=0.5)
    leftover = _marked_pids(marker)
    for pid in leftover:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            continue
    wait_for(lambda: not _marked_pids(marker), timeout=15, interval=0.2)
    return leftover


@pytest.fixture
def loopback_head() -> Iterator[Head]:
    """``ray start --head`` on 127.0.0.1 with the dashboard (the Jobs API), torn down after.

    Isolated from any other Ray on the machine: its own temp dir (so it is not recorded as
    "the current cluster" in /tmp/ray), its own ports, and token authentication with a token
    of its own (Ray 2.60's default for `ray start --head` when a token file exists; explicit
    here so the test does not depend on ~/.ray/auth_token).
    """
    temp = Path(tempfile.mkdtemp(prefix="ps-ray-", dir="/tmp"))  # short: socket paths
    gcs, dashboard, agent, client = _free_ports(4)
    marker, token = secrets.token_hex(8), secrets.token_hex(32)
    env = {k: v for k, v in os.environ.items() if k not in ("RAY_ADDRESS", "RAY_AUTH_TOKEN_PATH")}
    env.update(
        {
            "PATH": f"{BIN}{os.pathsep}{env.get('PATH', '')}",
            "RAY_AUTH_MODE": "token",
            "RAY_AUTH_TOKEN": token,
            MARKER: marker,
        }
    )
    command = [
        str(BIN / "ray"), "start", "--head", "--block", "--disable-usage-stats",
        "--node-ip-address=127.0.0.1", f"--port={gcs}",
        "--include-dashboard=true", "--dashboard-host=127.0.0.1", f"--dashboard-port={dashboard}",
        f"--dashboard-agent-listen-port={agent}", f"--ray-client-server-port={client}",
        "--num-cpus=2", "--num-gpus=0", f"--temp-dir={temp}",
    ]  # fmt: skip
    log = temp / "ray-start.log"
    url = f"http://127.0.0.1:{dashboard}"
    with log.open("wb") as sink:
        proc = subprocess.Popen(command, env=env, stdout=sink, stderr=subprocess.STDOUT)
    try:
        up = wait_for(lambda: proc.poll() is not None or _dashboard_up(url, token), 120, 0.5)
        if not up or proc.poll() is not None:
            pytest.fail(f"the Ray head did not come up: {log.read_text()[-3000:]}")
        yield Head(dashboard=url, env=env)
    finally:
        leftover = _stop_head(proc, marker)
        assert not _marked_pids(marker), f"processes of the test head survived: {leftover}"
        shutil.rmtree(temp, ignore_errors=True)


@pytest.mark.ray
@pytest.mark.slow
@pytest.mark.timeout(420)
def test_study_submitted_through_the_jobs_api_writes_parquet_where_the_docs_say(
    loopback_head: Head, tmp_path: Path
) -> None:
    spec = tmp_path / "spec.yaml"
    spec.write_text(JOB_SPEC, encoding="utf-8")
    out = tmp_path / "runs" / "jobs-api"  # absolute, as README.md asks
    # README.md, "Submit a study": from the repository root, the working copy uploaded.
    submit = [
        str(BIN / "ray"), "job", "submit", "--address", loopback_head.dashboard,
        "--working-dir", ".", "--",
        "pathsweep", "study", "run", str(spec), "--out", str(out), "--trials", "4",
        "--view", "log",
    ]  # fmt: skip
    done = subprocess.run(
        submit, cwd=ROOT, env=loopback_head.env, capture_output=True, text=True, timeout=300
    )
    logs = done.stdout + done.stderr
    assert done.returncode == 0, logs[-4000:]
    assert "succeeded" in logs and "study jobs-api: 4 COMPLETE, 0 FAIL" in logs, logs[-4000:]

    # The study directory on the head: spec, run record, Optuna journal, Parquet dataset.
    parts = sorted((out / TRIALS_DIR).glob("*.parquet"))
    assert parts and not (out / TRIALS_DIR / WAL_NAME).exists()
    assert (out / "spec.yaml").is_file() and (out / "optuna.journal").is_file()
    run = json.loads((out / "run.json").read_text())
    assert [(r["status"], r["workers"]) for r in run["runs"]] == [("finished", 2)]

    import analysis

    frame = analysis.load(out)
    assert len(frame) == 4 and set(frame["state"]) == {"COMPLETE"}
    assert sorted(frame["optuna_number"]) == [0, 1, 2, 3]
    assert frame["log_path_kernel_trace"].notna().all()  # a real trial measured the Path Kernel
