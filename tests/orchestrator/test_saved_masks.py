"""save_masks: trial masks kept in the study directory, and ``pathsweep prune --from-study``."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
import torch
from safetensors import safe_open

import pruners
from orchestrator.cli import main
from orchestrator.driver import run_study
from orchestrator.maskstore import KEY_METADATA, MASKS_DIR, store_masks
from orchestrator.rows import declared_schema
from orchestrator.sink import read_trials
from orchestrator.spec import STAT_METRICS, SpecError
from orchestrator.studydir import create_study_dir
from orchestrator.trial import make_config, resolve_params

from .helpers import small_spec


def _masks(seed: int) -> dict[str, torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    return {
        "a.weight": torch.rand(4, 3, generator=gen) < 0.5,
        "b": torch.rand(5, generator=gen) < 0.5,
    }


def test_store_masks_one_file_per_key_never_overwritten(tmp_path: Path) -> None:
    first = store_masks(tmp_path, _masks(0), "00ff")
    assert first == f"{MASKS_DIR}/00ff.safetensors"
    assert store_masks(tmp_path, _masks(0), "00ff") == first  # same masks: same file
    other = store_masks(tmp_path, _masks(1), "00ff")  # same key, other masks: own file
    assert other != first and other.startswith(f"{MASKS_DIR}/00ff-")
    for rel, seed in ((first, 0), (other, 1)):
        loaded = pruners.load_masks(tmp_path / rel)
        assert loaded.keys() == _masks(seed).keys()
        assert all(torch.equal(loaded[k], v) for k, v in _masks(seed).items())
        with safe_open(str(tmp_path / rel), "pt") as handle:
            assert handle.metadata()[KEY_METADATA] == "00ff"
    assert sorted(p.name for p in (tmp_path / MASKS_DIR).iterdir()) == sorted(
        Path(first).name for first in (first, other)
    )  # no temporary files left behind
    with pytest.raises(ValueError, match="hex"):
        store_masks(tmp_path, _masks(0), "../x")


def test_masks_key_names_the_configuration_not_the_attempt() -> None:
    spec = small_spec(save_masks=True)
    params = resolve_params({"path_exponent": 2.0, "iterations": 2}, spec.search.fixed())
    base = make_config(spec, 3, 0, params)
    assert base.keep_masks
    same = [
        make_config(spec, 7, 2, params, phase="validate-top", train_epochs=5),
        replace(base, device="cpu", train_options={"optimizer": "adam"}),
    ]
    assert all(c.masks_key() == base.masks_key() for c in same)
    different = [
        make_config(spec, 3, 0, {**params, "path_exponent": 2.5}),
        replace(base, seed=1),
        replace(base, prune=replace(base.prune, include_bias=True)),
        replace(base, model=replace(base.model, options={"width": 17, "depth": 3})),
    ]
    assert len({base.masks_key(), *(c.masks_key() for c in different)}) == 1 + len(different)


def test_spec_field_is_validated_and_round_trips() -> None:
    assert not small_spec().save_masks
    assert small_spec(save_masks=True).save_masks
    with pytest.raises(SpecError, match="save_masks must be true or false"):
        small_spec(save_masks="yes")
    assert "masks_path" in declared_schema(small_spec(save_masks=True)).names
    assert "masks_path" not in declared_schema(small_spec()).names


def _study(out: Path, **changes: Any) -> list[dict[str, Any]]:
    spec = small_spec(trials=4, **changes)
    create_study_dir(out, spec, None)
    summary = run_study(spec, out, poll_s=0.05, start_timeout_s=60)
    assert summary.complete == 4
    return read_trials(out).to_pylist()


def _prune_json(argv: list[str], capsys: pytest.CaptureFixture[str]) -> dict[str, Any]:
    assert main(["prune", *argv, "--json"]) == 0, capsys.readouterr().err
    result: dict[str, Any] = json.loads(capsys.readouterr().out)
    return result


@pytest.mark.ray
@pytest.mark.slow
@pytest.mark.timeout(300)
def test_study_keeps_masks_and_from_study_retrains_and_exports(
    ray_local: None, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "study"
    rows = _study(out, save_masks=True, validate={"top_k": 1, "random_k": 0, "epochs": 1})
    search = [r for r in rows if r["phase"] == "search"]
    assert len(search) == 4 and all(r["masks_path"] for r in rows)
    for row in search:  # each file holds the masks the row measured
        masks = pruners.load_masks(out / row["masks_path"])
        assert sum(int(m.sum()) for m in masks.values()) == row["num_params"]
    top = next(r for r in rows if r["phase"] == "validate-top")
    source = next(r for r in search if r["optuna_number"] == top["optuna_number"])
    assert top["masks_path"] == source["masks_path"]  # one file per configuration
    files = {p.name for p in (out / MASKS_DIR).iterdir()}
    assert files == {Path(r["masks_path"]).name for r in search}

    row = next(r for r in search if r["optuna_number"] == 2)  # rows come in finishing order
    exported = tmp_path / "t2.safetensors"
    argv = ["--from-study", str(out), "--trial", "2", "--save-masks", str(exported)]
    result = _prune_json(argv, capsys)
    assert result["masks_from"] == str(out / row["masks_path"])
    assert result["trial"] == 2 and result["study"] == "test-small"
    for name in ("log_path_kernel_trace", "num_params", "density", "effective_params"):
        assert result[name] == pytest.approx(row[name], rel=1e-12), name
    saved, again = pruners.load_masks(out / row["masks_path"]), pruners.load_masks(exported)
    assert saved.keys() == again.keys() and all(torch.equal(saved[k], again[k]) for k in saved)

    trained = _prune_json(["--from-study", str(out), "--trial", "2", "--train-epochs", "1"], capsys)
    assert len(trained["test_accuracy_curve"]) == 1 and 0 <= trained["test_accuracy"] <= 1

    # the saved masks are what is used: a file that went missing is an error, not a re-prune
    (out / row["masks_path"]).unlink()
    assert main(["prune", "--from-study", str(out), "--trial", "2"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "missing" in err[0] and row["masks_path"] in err[0]


@pytest.mark.ray
@pytest.mark.slow
@pytest.mark.timeout(300)
def test_from_study_without_saved_masks_re_prunes_to_the_same_numbers(
    ray_local: None, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """One trial pipeline: the command reproduces a study row exactly from its parameters."""
    out = tmp_path / "study"
    rows = _study(out, prune={"include_bias": True})
    assert all(r.get("masks_path") is None for r in rows)
    for row in rows[:2]:
        result = _prune_json(
            ["--from-study", str(out), "--trial", str(row["optuna_number"])], capsys
        )
        assert result["masks_from"] is None
        for name in STAT_METRICS:
            assert result[name] == row[name], name


@pytest.mark.parametrize(
    ("argv", "needle"),
    [
        (["--trial", "1"], "--from-study DIR and --trial N"),
        (["--from-study", "nowhere"], "--from-study DIR and --trial N"),
        (["--from-study", "nowhere", "--trial", "1"], "spec.yaml"),
        (["--from-study", "{out}", "--trial", "1", "--pruner", "snip"], "--pruner cannot"),
        (["--from-study", "{out}", "--trial", "1", "--seed", "3"], "--seed cannot"),
        (["--from-study", "{out}", "--trial", "5"], "no COMPLETE search trial"),
    ],
)
def test_from_study_bad_input_is_one_line_and_exit_2(
    argv: list[str], needle: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "study"
    create_study_dir(out, small_spec(), None)
    argv = [a.replace("{out}", str(out)) for a in argv]
    assert main(["prune", *argv]) == 2
    captured = capsys.readouterr()
    lines = captured.err.strip().splitlines()
    assert len(lines) == 1 and needle in lines[0], captured.err
    assert captured.out == ""
