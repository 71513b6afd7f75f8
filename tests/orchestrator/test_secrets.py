"""No secret of a storage URL reaches a file, a log line or the terminal; study files follow the
umask."""

from __future__ import annotations

import json
import logging
import os
import stat
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from orchestrator import redaction
from orchestrator.cli import main
from orchestrator.redaction import mask_url, url_secrets
from orchestrator.studydir import RUN_FILE, SPEC_FILE, create_study_dir, record_run

from .helpers import SMALL_SPEC, small_spec, write_spec

ROOT = Path(__file__).resolve().parents[2]
SECRET = "Pa55w0rdXYZ"


@pytest.fixture(autouse=True)
def _forget_secrets() -> Iterator[None]:
    yield
    redaction._SECRETS.clear()


def _files_containing(root: Path, needle: str) -> list[Path]:
    return [p for p in root.rglob("*") if p.is_file() and needle.encode() in p.read_bytes()]


@pytest.mark.parametrize(
    ("url", "masked"),
    [
        (f"postgresql://me:{SECRET}@db:5432/x", "postgresql://me:***@db:5432/x"),
        (
            f"postgresql+psycopg2://me:{SECRET}@db/x?sslmode=require",
            "postgresql+psycopg2://me:***@db/x?sslmode=require",
        ),
        (f"mysql://me:{SECRET}%40x@db/x", "mysql://me:***@db/x"),  # '@' percent-encoded
        (
            f"postgresql://db/x?user=me&password={SECRET}&sslmode=require",
            "postgresql://db/x?user=me&password=***&sslmode=require",
        ),
        (f"postgresql://db/x?sslpassword={SECRET}", "postgresql://db/x?sslpassword=***"),
        ("sqlite:///a.db", "sqlite:///a.db"),
        ("postgresql://me@db/x", "postgresql://me@db/x"),
        (None, None),
    ],
)
def test_mask_url_hides_passwords_and_secret_query_values(
    url: str | None, masked: str | None
) -> None:
    assert mask_url(url) == masked
    assert SECRET not in (mask_url(url) or "")


def test_url_secrets_include_the_decoded_form() -> None:
    secrets = url_secrets(f"mysql://me:{SECRET}%40x@db/x")
    assert f"{SECRET}%40x" in secrets and f"{SECRET}@x" in secrets


def test_command_line_masks_the_storage_url(monkeypatch: pytest.MonkeyPatch) -> None:
    from orchestrator.studydir import command_line

    for argv in (
        ["study", "run", "s.yaml", "--storage", f"postgresql://me:{SECRET}@db/x"],
        ["study", "run", "s.yaml", f"--storage=postgresql://db/x?password={SECRET}"],
    ):
        monkeypatch.setattr(sys, "argv", ["pathsweep", *argv])
        line = command_line()
        assert SECRET not in line and "***" in line and line.startswith("pathsweep study run")


@pytest.mark.parametrize(
    "url",
    [
        f"postgresql://me:{SECRET}@127.0.0.1:1/db",  # the driver is missing or the host refuses
        f"sqlite:////no/such/dir/x.db?password={SECRET}",  # sqlite cannot open the file
        f"nosuchdialect://me:{SECRET}@host/db",
    ],
)
def test_a_storage_that_fails_to_open_is_reported_without_its_secret(
    tmp_path: Path, url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    spec = write_spec(tmp_path / "spec.yaml")
    out = tmp_path / "study"
    assert main(["study", "run", str(spec), "--out", str(out), "--storage", url]) == 2
    captured = capsys.readouterr()
    assert "--storage: cannot open" in captured.err and "***" in captured.err
    assert SECRET not in captured.err + captured.out
    assert not out.exists()


def test_output_guard_redacts_streams_and_log_handlers(
    capsys: pytest.CaptureFixture[str],
) -> None:
    """A library that echoes the URL (an exception, a warning, a log line) is redacted too."""
    logger = logging.getLogger("pathsweep-test-echo")
    handler = logging.StreamHandler(sys.stderr)  # bound to the stream before the guard
    logger.addHandler(handler)
    try:
        redaction.remember(f"postgresql://me:{SECRET}@db/x")
        with redaction.guard_output():
            print(f"connecting to postgresql://me:{SECRET}@db/x")
            print(f"error: {SECRET}", file=sys.stderr)
            logger.warning("engine url %s", f"postgresql://me:{SECRET}@db/x")
    finally:
        logger.removeHandler(handler)
    captured = capsys.readouterr()
    assert SECRET not in captured.out + captured.err
    assert captured.out.count("***") == 1 and captured.err.count("***") == 2


@pytest.mark.parametrize(("umask", "mode"), [(0o077, 0o600), (0o022, 0o644), (0o002, 0o664)])
def test_study_files_follow_the_umask(tmp_path: Path, umask: int, mode: int) -> None:
    previous = os.umask(umask)
    try:
        out = tmp_path / "study"
        create_study_dir(out, small_spec(), None)
        record_run(out, {"id": 0, "status": "running"})
    finally:
        os.umask(previous)
    for name in (RUN_FILE, SPEC_FILE):
        assert stat.S_IMODE((out / name).stat().st_mode) == mode, name
    assert [p.name for p in out.iterdir() if p.name.startswith(".tmp-")] == []


@pytest.mark.ray
@pytest.mark.slow
@pytest.mark.timeout(300)
def test_a_study_with_a_secret_in_its_storage_url_writes_and_prints_it_nowhere(
    ray_local: None, tmp_path: Path
) -> None:
    """run, status and resume through the CLI: no file of the study, no output holds the secret."""
    import ray

    spec = write_spec(tmp_path / "spec.yaml", SMALL_SPEC.replace("trials: 6", "trials: 3"))
    out = tmp_path / "study"
    # SQLite ignores the password parameter, so the study runs for real with a secret in the URL.
    url = f"sqlite:///{tmp_path / 'db' / 'studies.db'}?password={SECRET}"
    (tmp_path / "db").mkdir()
    address = ray.get_runtime_context().gcs_address
    cli = [sys.executable, "-m", "orchestrator.cli"]
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]),
    }
    commands = [
        [
            "study",
            "run",
            str(spec),
            "--out",
            str(out),
            "--storage",
            url,
            "--view",
            "log",
            "--address",
            address,
        ],
        ["study", "status", str(out), "--storage", url],
        ["study", "resume", str(out), "--storage", url, "--view", "log", "--address", address],
        ["study", "resume", str(out), "--view", "log", "--address", address],  # refused: no URL
    ]
    outputs = []
    for command in commands:
        done = subprocess.run(
            [*cli, *command], cwd=ROOT, env=env, capture_output=True, text=True, timeout=240
        )
        outputs.append((command[1], done.returncode, done.stdout + done.stderr))
    assert [code for _, code, _ in outputs] == [0, 0, 0, 2], outputs
    assert "holds a password: pass it again with --storage" in outputs[3][2]
    for name, _, text in outputs:
        assert SECRET not in text, (name, text)
    assert _files_containing(out, SECRET) == []
    run = json.loads((out / RUN_FILE).read_text())
    assert run["storage"].endswith("?password=***")
    assert all("password=***" in r["command"] for r in run["runs"])
