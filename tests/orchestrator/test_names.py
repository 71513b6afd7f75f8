"""The torch-free name lists that ``pathsweep prune`` checks equal the pruners registries."""

from __future__ import annotations

import subprocess
import sys

import pytest

import pruners
from orchestrator import names


@pytest.mark.parametrize(
    "mirror, registry",
    [
        (names.MODELS, pruners.MODELS),
        (names.DATASETS, pruners.DATASETS),
        (names.SCORERS, pruners.SCORERS),
        (names.SCHEDULES, pruners.SCHEDULES),
        (names.SCOPES, pruners.SCOPES),
        (names.INPUTS, pruners.INPUTS),
    ],
)
def test_name_lists_equal_the_registries(mirror: tuple[str, ...], registry: object) -> None:
    assert sorted(mirror) == sorted(registry)  # type: ignore[call-overload]


@pytest.mark.parametrize(
    "flag, value", [("--model", "nosuch"), ("--pruner", "synflowz"), ("--data", "imagenet")]
)
def test_a_bad_name_is_refused_without_importing_torch(flag: str, value: str) -> None:
    code = (
        "import sys; from orchestrator.prune_cmd import main; "
        f"rc = main([{flag!r}, {value!r}]); "
        "print('torch' in sys.modules, file=sys.stderr); sys.exit(rc)"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert lines[0].startswith(f"pathsweep prune: error: {flag} must be one of"), proc.stderr
    assert repr(value) in lines[0]
    assert lines[1] == "False"  # torch never imported
