"""The CLI end to end: a killed driver finished by `study resume`, status, unreachable address."""

from __future__ import annotations

import json
import signal
import socket
import subprocess
import sys
import threading
import time
from collections import Counter
from pathlib import Path

import optuna
import pytest
from optuna.trial import TrialState

from orchestrator.cli import main
from orchestrator.sink import WAL_NAME, read_trials
from orchestrator.studydir import RUN_FILE, open_storage

from .helpers import wait_for, write_spec

ROOT = Path(__file__).resolve().parents[2]

KILL_SPEC = """\
study: test-kill
model: {name: fc, width: 100, depth: 6}
data: {name: digits}
density: 0.02
search:
  path_exponent: {low: 0.5, high: 3.0}
  iterations: {low: 20, high: 60}
sampler: tpe
trials: 24
workers: 2
seed: 0
"""


def _wal_lines(out: Path) -> int:
    wal = out / "trials" / WAL_NAME
    return len(wal.read_text().splitlines()) if wal.exists() else 0


@pytest.mark.ray
@pytest.mark.slow
@pytest.mark.timeout(300)
def test_sigkill_driver_then_resume_completes_each_trial_once(
    ray_local: None, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    import ray

    spec = write_spec(tmp_path / "spec.yaml", KILL_SPEC)
    out = tmp_path / "study"
    address = ray.get_runtime_context().gcs_address
    cmd = [
        sys.executable,
        "-m",
        "orchestrator.cli",
        "study",
        "run",
        str(spec),
        "--out",
        str(out),
        "--address",
        address,
        "--view",
        "log",
    ]
    proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        assert wait_for(lambda: _wal_lines(out) >= 4 or proc.poll() is not None, 120, 0.02)
        assert proc.poll() is None, proc.stderr.read() if proc.stderr else ""
        proc.send_signal(signal.SIGKILL)
        proc.wait(30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(30)
    before = {r["trial_id"]: r for r in read_trials(out).to_pylist()}
    assert 4 <= len(before) < 24
    killed = optuna.load_study(study_name="test-kill", storage=open_storage(out, None))
    assert any(t.state == TrialState.RUNNING for t in killed.trials)  # left mid-trial

    assert main(["study", "resume", str(out), "--view", "log"]) == 0
    rows = read_trials(out).to_pylist()
    ids = [r["trial_id"] for r in rows]
    assert len(ids) == len(set(ids))
    complete = Counter(r["optuna_number"] for r in rows if r["state"] == "COMPLETE")
    assert len(complete) == 24 and set(complete.values()) == {1}
    after = {r["trial_id"]: r for r in rows}
    for tid, row in before.items():  # rows of the killed run are kept as they were
        assert after[tid]["finished_at"] == row["finished_at"]
    study = optuna.load_study(study_name="test-kill", storage=open_storage(out, None))
    states = Counter(t.state for t in study.trials)
    assert states[TrialState.COMPLETE] == 24 and states[TrialState.RUNNING] == 0
    runs = json.loads((out / RUN_FILE).read_text())["runs"]
    # the killed run is marked stopped by the resume (it could not record it itself)
    assert [r["status"] for r in runs] == ["stopped", "finished"] and runs[1]["resume"]

    capsys.readouterr()
    assert main(["study", "status", str(out)]) == 0
    status = capsys.readouterr().out
    assert "trials: 24/24 COMPLETE, 0 FAIL, 0 RUNNING" in status
    assert "best: log_path_kernel_trace=" in status


def test_unreachable_address_fails_fast_with_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    spec = write_spec(tmp_path / "spec.yaml", KILL_SPEC)
    with socket.socket() as free:  # a port nobody listens on
        free.bind(("127.0.0.1", 0))
        port = free.getsockname()[1]
    start = time.monotonic()
    code = main(
        ["study", "run", str(spec), "--out", str(tmp_path / "o"), "--address", f"127.0.0.1:{port}"]
    )
    err = capsys.readouterr().err
    assert code == 2 and time.monotonic() - start < 30
    assert err.startswith("pathsweep: error: cannot reach a Ray cluster at 127.0.0.1:")
    assert err.count("\n") == 1 and not (tmp_path / "o").exists()


def test_address_that_is_not_ray_fails_fast(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    spec = write_spec(tmp_path / "spec.yaml", KILL_SPEC)
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen()
    accepted: list[socket.socket] = []
    thread = threading.Thread(target=lambda: accepted.append(server.accept()[0]), daemon=True)
    thread.start()
    try:
        start = time.monotonic()
        code = main(
            [
                "study",
                "run",
                str(spec),
                "--out",
                str(tmp_path / "o"),
                "--address",
                f"127.0.0.1:{server.getsockname()[1]}",
            ]
        )
        assert code == 2 and time.monotonic() - start < 30
    finally:
        server.close()
        for conn in accepted:
            conn.close()
    err = capsys.readouterr().err
    assert "no Ray cluster answers at 127.0.0.1:" in err and err.count("\n") == 1


def test_help_lists_every_command(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--help"]) == 0
    text = capsys.readouterr().out
    for command in ("study", "demo", "prune", "analyze"):
        assert command in text


@pytest.mark.ray
@pytest.mark.slow
@pytest.mark.timeout(300)
def test_demo_end_to_end_with_report(
    ray_local: None, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "demo"
    assert main(["demo", "--out", str(out), "--trials", "8", "--view", "log"]) == 0
    rows = read_trials(out).to_pylist()
    phases = Counter((r["phase"], r["state"]) for r in rows)
    assert phases[("search", "COMPLETE")] == 8
    assert (
        phases[("validate-top", "COMPLETE")] == 4 and phases[("validate-random", "COMPLETE")] == 4
    )
    assert "study demo-synflow-fc-digits: 8 COMPLETE" in capsys.readouterr().out
    pytest.importorskip("analysis.cli")
    assert (out / "report" / "report.md").is_file()


def test_analyze_and_prune_are_passed_through(capsys: pytest.CaptureFixture[str]) -> None:
    pytest.importorskip("analysis.cli")
    assert main(["analyze", "--help"]) == 0
    assert "pathsweep analyze" in capsys.readouterr().out
    assert main(["analyze", "/no/such/dir"]) == 2
    assert main(["prune", "--help"]) == 0


@pytest.mark.ray
@pytest.mark.slow
@pytest.mark.timeout(180)
def test_run_with_an_rdb_storage_url(
    ray_local: None, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from .helpers import SMALL_SPEC

    spec = write_spec(tmp_path / "spec.yaml", SMALL_SPEC.replace("trials: 6", "trials: 4"))
    url = f"sqlite:///{tmp_path / 'studies.db'}"
    out = tmp_path / "study"
    args = ["study", "run", str(spec), "--out", str(out), "--storage", url, "--view", "quiet"]
    assert main(args) == 0
    study = optuna.load_study(study_name="test-small", storage=url)
    assert [t.state for t in study.trials] == [TrialState.COMPLETE] * 4
    assert not (out / "optuna.journal").exists()
    assert json.loads((out / RUN_FILE).read_text())["storage"] == url
    capsys.readouterr()
    assert main(["study", "status", str(out)]) == 0  # the stored URL is used
    assert "trials: 4/4 COMPLETE" in capsys.readouterr().out
    # the same study name in the same database is refused for a new directory
    again = ["study", "run", str(spec), "--out", str(tmp_path / "other"), "--storage", url]
    assert main(again) == 2
    assert "already exists in the storage" in capsys.readouterr().err
    assert not (tmp_path / "other").exists()


def test_passwords_in_storage_urls_are_not_written() -> None:
    from orchestrator.studydir import mask_url

    assert mask_url("postgresql://me:secret@db:5432/x") == "postgresql://me:***@db:5432/x"
    assert mask_url("sqlite:///a.db") == "sqlite:///a.db"


@pytest.mark.parametrize("chars", [10, 1_000_000])  # flushed at the end / fails mid-print
def test_a_reader_that_goes_away_gets_no_error_message(chars: int) -> None:
    """`pathsweep study status DIR | head`: no traceback or error line, exit 141 (SIGPIPE)."""
    # a command that prints `chars` characters to stdout, run through the real main()
    code = (
        "import sys\nimport orchestrator.cli as cli\n"
        f"cli._main = lambda argv: print('x' * {chars}) or 0\n"
        "sys.exit(cli.main([]))\n"
    )
    proc = subprocess.Popen(
        [sys.executable, "-c", code], cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE
    )
    assert proc.stdout is not None and proc.stderr is not None
    proc.stdout.close()  # before the child has written anything (it is still importing)
    stderr = proc.stderr.read().decode()
    assert proc.wait(timeout=120) == 141, stderr
    assert stderr == ""
