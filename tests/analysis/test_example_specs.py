"""The study specs under examples/ (issue 8's designed study and CIFAR-10 specs) validate."""

from __future__ import annotations

from pathlib import Path

import pytest

from orchestrator.spec import load_yaml, parse_spec

ROOT = Path(__file__).resolve().parents[2] / "examples"
SPECS = sorted(p for p in ROOT.rglob("*.yaml") if p.parent != ROOT)


@pytest.mark.parametrize("path", SPECS, ids=[str(p.relative_to(ROOT)) for p in SPECS])
def test_example_spec_validates_and_runs_its_whole_grid(path: Path) -> None:
    spec = parse_spec(load_yaml(path.read_text()))
    assert spec.sampler.name == "grid" and spec.trials == spec.search.grid_size()
    assert spec.train.epochs > 0  # every trial trains
    assert spec.study.endswith("-s0") and spec.seed == 0  # run.sh / the comment make seeds 1, 2


def test_designed_study_covers_every_pruner_and_density() -> None:
    pruners, densities = set(), set()
    for path in (ROOT / "paths-predict-training").glob("*.yaml"):
        grid = parse_spec(load_yaml(path.read_text())).search.grid()
        pruners |= set(grid["pruner"])
        densities |= set(grid["density"])
    assert pruners == {"random", "magnitude", "snip", "grasp", "synflow", "synflow-l2",
                       "synflow-dist", "pk-preserve"}
    assert densities == {0.3, 0.1, 0.03, 0.01, 0.003}
