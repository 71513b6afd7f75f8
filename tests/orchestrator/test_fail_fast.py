"""Fail fast and clearly (issue 10): checks before Ray, quick first output, whole error texts.

Latencies are asserted generously (machines are loaded) and backed by what cannot flake: the
absence of torch and ray from ``-X importtime`` (they were never imported).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import pytest

from orchestrator.cli import EXIT_FAILED, _execute, main
from orchestrator.errors import SetupError, plain_text
from orchestrator.spec import dump_spec
from orchestrator.studydir import RUN_FILE
from orchestrator.trial import TrialConfig, TrialResult

from .helpers import SMALL_SPEC, small_spec, write_spec

ROOT = Path(__file__).resolve().parents[2]
LONG = "the real cause is at the end of a long message " * 20 + "<END OF MESSAGE>"


def _env() -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": str(ROOT), "PYTHONUNBUFFERED": "1"}


def _imported(lines: list[str]) -> list[str]:
    """The modules named by ``-X importtime`` lines."""
    return [
        line.rsplit("|", 1)[1].strip()
        for line in lines
        if line.startswith("import time:") and "|" in line
    ]


def _pathsweep_importtime(args: list[str], cwd: Path) -> tuple[int, float, list[str], str]:
    """Run ``pathsweep ARGS`` with ``-X importtime``: exit code, seconds, imported modules, text.

    stdout and stderr share one pipe, so the lines keep their order.
    """
    start = time.monotonic()
    proc = subprocess.run(
        [sys.executable, "-X", "importtime", "-m", "orchestrator.cli", *args],
        cwd=cwd,
        env=_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        timeout=300,
    )
    took = time.monotonic() - start
    modules = _imported(proc.stdout.splitlines())
    text = "\n".join(ln for ln in proc.stdout.splitlines() if not ln.startswith("import time:"))
    return proc.returncode, took, modules, text


@pytest.mark.parametrize(
    "args",
    [
        ["prune", "--density", "2"],
        ["prune", "--iterations", "0"],
        ["prune", "--density", "abc"],
        ["study", "run", "spec.yaml", "--out", "o", "--view", "bogus"],
        ["study", "run", "spec.yaml", "--out", "o", "--trials", "0"],
        ["study", "frobnicate"],
    ],
)
def test_bad_arguments_are_rejected_before_torch_or_ray_is_imported(
    args: list[str], tmp_path: Path
) -> None:
    code, took, modules, text = _pathsweep_importtime(args, tmp_path)
    assert code == 2, text
    assert len(text.strip().splitlines()) == 1 and "error" in text, text
    assert "torch" not in modules and "ray" not in modules and "optuna" not in modules
    assert took < 5.0, f"a bad argument took {took:.1f} s to reject"


def test_study_run_says_it_started_before_the_heavy_imports_and_data_fails_before_ray(
    tmp_path: Path,
) -> None:
    spec = write_spec(tmp_path / "spec.yaml", SMALL_SPEC.replace("name: digits", "name: cifar10"))
    out = tmp_path / "out"
    code, _, modules, text = _pathsweep_importtime(
        ["study", "run", str(spec), "--out", str(out)], tmp_path
    )
    assert code == 2
    lines = text.strip().splitlines()
    assert lines[0].startswith("pathsweep: starting study"), text
    assert lines[1:] == [
        "pathsweep: error: data: dataset 'cifar10' needs a data directory: pass root=... "
        "(checked on this machine before Ray starts)"
    ]
    assert "ray" not in modules  # refused before Ray starts (old code: after 44-52 s in Ray)
    assert not out.exists()


def test_first_line_of_study_run_comes_before_torch_is_imported(tmp_path: Path) -> None:
    """The "starting" line is printed before torch's first import line (same pipe, in order)."""
    spec = write_spec(tmp_path / "spec.yaml", SMALL_SPEC.replace("trials: 6", "trials: 0"))
    start = time.monotonic()
    proc = subprocess.Popen(
        [
            sys.executable,
            "-X",
            "importtime",
            "-m",
            "orchestrator.cli",
            "study",
            "run",
            str(spec),
            "--out",
            str(tmp_path / "o"),
        ],
        env=_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    assert proc.stdout is not None
    seen: list[str] = []
    for line in proc.stdout:
        seen.append(line)
        if line.startswith("pathsweep: starting"):
            break
    first_line_s = time.monotonic() - start
    rest = proc.communicate(timeout=300)[0]
    assert seen and seen[-1].startswith("pathsweep: starting"), [*seen, rest]
    assert "torch" not in _imported(seen) and "ray" not in _imported(seen)
    assert "torch" in _imported(rest.splitlines())  # imported later, to check the spec
    assert first_line_s < 5.0, f"first line after {first_line_s:.1f} s"
    assert proc.returncode == 2 and "trials >= 1 must hold" in rest


def test_out_that_is_not_a_study_is_not_told_to_resume(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    spec = write_spec(tmp_path / "spec.yaml")
    other = tmp_path / "photos"
    other.mkdir()
    (other / "cat.jpg").write_bytes(b"x")
    assert main(["study", "run", str(spec), "--out", str(other), "--view", "quiet"]) == 2
    err = capsys.readouterr().err
    assert "is not empty and is not a study directory" in err and "resume" not in err, err

    study = tmp_path / "study"
    study.mkdir()
    (study / "spec.yaml").write_text(dump_spec(small_spec()))
    (study / RUN_FILE).write_text(json.dumps({"runs": []}))
    assert main(["study", "run", str(spec), "--out", str(study), "--view", "quiet"]) == 2
    err = capsys.readouterr().err
    assert f"holds a study already; continue it with `pathsweep study resume {study}`" in err


def test_a_second_ctrl_c_exits_at_once_with_one_line(tmp_path: Path) -> None:
    script = """
import os, signal, time
from pathlib import Path
from orchestrator.cli import _install_interrupt_handler
_install_interrupt_handler(Path("study-dir"))
try:
    os.kill(os.getpid(), signal.SIGINT)
    time.sleep(30)
except KeyboardInterrupt:
    print("first interrupt: cleaning up", flush=True)
os.kill(os.getpid(), signal.SIGINT)  # the second, during the clean-up
time.sleep(30)
print("not reached", flush=True)
"""
    proc = subprocess.run(
        [sys.executable, "-c", script],
        env=_env(),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 130
    assert proc.stdout == "first interrupt: cleaning up\n"
    assert proc.stderr.splitlines() == [
        "pathsweep: interrupted again; stopped at once; continue with "
        "`pathsweep study resume study-dir`"
    ]


def test_plain_text_strips_ansi_and_joins_lines() -> None:
    coloured = "\x1b[36mray::TrialWorker.ready()\x1b[39m (pid=1)\n  File x\n\x1b[1;31mBoom\x1b[0m"
    assert plain_text(coloured) == "ray::TrialWorker.ready() (pid=1) File x Boom"


# ----------------------------------------------------------------------------- with Ray


@dataclass(frozen=True)
class RaiseTrial:
    """A trial that always raises ``message``."""

    message: str

    def __call__(self, config: TrialConfig) -> TrialResult:
        raise RuntimeError(self.message)


def _boom(message: str) -> None:
    raise RuntimeError(message)


@pytest.mark.ray
@pytest.mark.timeout(120)
def test_a_task_error_is_described_by_its_cause_whole_and_plain(ray_local: None) -> None:
    import ray

    from orchestrator.driver import describe_ray_error

    with pytest.raises(ray.exceptions.RayTaskError) as caught:
        ray.get(ray.remote(_boom).remote(LONG))
    assert describe_ray_error(caught.value) == f"RuntimeError: {LONG}"


@pytest.mark.ray
@pytest.mark.slow
@pytest.mark.timeout(180)
def test_a_worker_that_cannot_start_reports_the_whole_cause(
    ray_local: None, tmp_path: Path
) -> None:
    """Data that fails in the actors (the CLI checks it first; the driver alone does not)."""
    from orchestrator.driver import run_study
    from orchestrator.studydir import create_study_dir

    spec = small_spec(data={"name": "cifar10"}, workers=1, trials=1)
    out = tmp_path / "study"
    create_study_dir(out, spec, None)
    with pytest.raises(SetupError) as caught:
        run_study(spec, out, poll_s=0.05, start_timeout_s=60)
    text = str(caught.value)
    assert text.startswith("worker 0 could not start: ValueError: dataset 'cifar10' needs a data")
    assert "\x1b" not in text and text.endswith("pass root=...")


@pytest.mark.ray
@pytest.mark.slow
@pytest.mark.timeout(180)
def test_a_study_that_completes_no_trial_exits_1_with_the_whole_most_frequent_error(
    ray_local: None, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    spec = small_spec(trials=3, workers=1)
    out = tmp_path / "study"
    code = _execute(spec, out, None, None, "quiet", resume=False, trial_fn=RaiseTrial(LONG))
    assert code == EXIT_FAILED
    captured = capsys.readouterr()
    assert "0 COMPLETE, 3 FAIL" in captured.out
    error = captured.err.strip()
    assert error.count("\n") == 0 and "\x1b" not in error
    assert error.startswith(
        "pathsweep: error: study test-small completed no trial; most frequent error "
        f"(3 of 3 failed attempts): RuntimeError: {LONG} (at "
    ), error
    runs = json.loads((out / RUN_FILE).read_text())["runs"]
    assert runs[-1]["status"] == "failed" and runs[-1]["complete"] == 0


def test_data_check_opens_torchvision_files_once_and_before_ray(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With a stand-in torchvision: present files pass (shape known), absent ones are refused."""
    import types

    import numpy as np

    from orchestrator.errors import SpecError
    from orchestrator.spec import check_buildable

    opened: list[tuple[str, bool, bool]] = []

    class FakeCIFAR10:
        def __init__(self, root: str, train: bool, download: bool) -> None:
            opened.append((root, train, download))
            if not (Path(root) / "cifar-10-batches-py").is_dir():
                raise RuntimeError("Dataset not found or corrupted.")
            self.data = np.zeros((2, 32, 32, 3), dtype=np.uint8)
            self.targets = [0, 1]

    fake = types.ModuleType("torchvision")
    fake.datasets = types.SimpleNamespace(CIFAR10=FakeCIFAR10)  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "torchvision", fake)
    spec = small_spec(data={"name": "cifar10", "root": str(tmp_path)})
    with pytest.raises(SpecError, match=r"^data: dataset 'cifar10' not found under root="):
        check_buildable(spec)
    (tmp_path / "cifar-10-batches-py").mkdir()
    opened.clear()
    check_buildable(spec)
    assert opened == [(str(tmp_path), True, False), (str(tmp_path), False, False)]
