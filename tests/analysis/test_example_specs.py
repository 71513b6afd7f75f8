"""The study specs under examples/ (issue 8's designed study, CIFAR-10 specs and the search
against the presets) validate."""

from __future__ import annotations

from pathlib import Path

import pytest

from orchestrator.spec import load_yaml, parse_spec

ROOT = Path(__file__).resolve().parents[2] / "examples"
SEARCH_VS_PRESETS = ROOT / "search-vs-presets"
# designed studies (every grid point trained); the search-vs-presets specs are tested below
SPECS = sorted(
    p for p in ROOT.rglob("*.yaml") if p.parent not in (ROOT, SEARCH_VS_PRESETS)
)


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


def test_search_vs_presets_compares_like_with_like() -> None:
    """Part 3 of issue 8: the searched, random and preset configurations are trained the same
    way (seeds, epochs as the designed study's), over one search space, at both densities."""
    specs = {p.stem: parse_spec(load_yaml(p.read_text())) for p in SEARCH_VS_PRESETS.glob("*.yaml")}
    assert set(specs) == {"tpe-d0.03", "tpe-d0.01", "random-d0.03", "random-d0.01", "presets"}
    designed = parse_spec(load_yaml((ROOT / "paths-predict-training/fc-iterative.yaml").read_text()))
    space = specs["tpe-d0.03"].search.distributions()
    assert set(space) == {"path_exponent", "score_exponent", "iterations", "schedule", "input"}
    for name, spec in specs.items():
        assert spec.validate.seeds == (0, 1, 2, 3, 4) and spec.train.epochs == 0
        assert spec.validate.epochs == designed.train.epochs
        assert spec.model == designed.model and spec.data == designed.data
        assert spec.train.options == designed.train.options
        if name != "presets":
            assert spec.search.distributions() == space
            assert spec.search.fixed()["density"] == float(name.split("-d")[1])
    assert specs["tpe-d0.01"].sampler.name == "tpe" and specs["tpe-d0.01"].validate.top_k == 5
    for d in ("0.03", "0.01"):
        rand = specs[f"random-d{d}"]
        assert rand.sampler.name == "random" and rand.validate.random_k == rand.trials == 5
    presets = specs["presets"]
    assert presets.search.grid() == {"pruner": ["synflow", "synflow-l2", "synflow-l2-code"],
                                     "density": [0.03, 0.01]}
    assert presets.search.fixed() == {"iterations": 100, "schedule": "exponential"}
    assert presets.validate.top_k == presets.trials == presets.search.grid_size()
