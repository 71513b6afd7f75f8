"""``pathsweep prune``: one pruning from the command line, its output and its errors."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import pruners
from orchestrator.cli import main

BASE = [
    "prune",
    "--model",
    "fc",
    "--option",
    "width=32",
    "--option",
    "depth=3",
    "--iterations",
    "5",
]


def test_json_output_matches_the_library(capsys: pytest.CaptureFixture[str]) -> None:
    assert main([*BASE, "--pruner", "synflow-l2", "--density", "0.1", "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    data = pruners.load_dataset("digits")
    torch.manual_seed(0)
    model = pruners.build_model("fc", data.input_shape, data.num_classes, width=32, depth=3)
    masks = pruners.prune(model, "synflow-l2", 0.1, 5, input_shape=data.input_shape)
    stats = pruners.path_kernel_stats(model, data.input_shape, masks)
    for key, value in stats.metrics().items():
        assert result[key] == pytest.approx(value, rel=1e-9), key
    assert result["density"] == pytest.approx(0.1, abs=1e-3)


def test_training_and_saved_masks(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "masks.safetensors"
    argv = [*BASE, "--density", "0.5", "--train-epochs", "2", "--json", "--save-masks", str(path)]
    assert main(argv) == 0
    result = json.loads(capsys.readouterr().out)
    assert len(result["test_accuracy_curve"]) == 2
    assert 0.0 <= result["test_accuracy"] <= 1.0
    masks = pruners.load_masks(path)
    kept = sum(int(m.sum()) for m in masks.values())
    assert kept == result["num_params"]


def test_table_output(capsys: pytest.CaptureFixture[str]) -> None:
    assert main([*BASE, "--density", "0.2"]) == 0
    out = capsys.readouterr().out
    assert "log_path_kernel_trace" in out and "effective_params" in out


@pytest.mark.parametrize(
    ("extra", "field"),
    [
        (["--density", "1.5"], "density"),
        (["--density", "0"], "density"),
        (["--pruner", "synflw"], "pruner"),
        (["--schedule", "cubic"], "schedule"),
        (["--scope", "network"], "scope"),
        (["--iterations", "0"], "iterations"),
        (["--input", "zeros"], "input"),
        (["--train-epochs", "-1"], "train-epochs"),
        (["--model", "vgg99"], "model"),
        (["--option", "widht=3"], "widht"),
        (["--data", "imagenet"], "imagenet"),
        (["--pruner", "snip", "--path-exponent", "2"], "path_exponent"),
    ],
)
def test_bad_input_is_one_line_and_exit_2(
    extra: list[str], field: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main([*BASE, *extra]) == 2
    captured = capsys.readouterr()
    lines = captured.err.strip().splitlines()
    assert len(lines) == 1, captured.err
    assert field in lines[0]
    assert captured.out == ""


def test_no_traceback_from_the_console_entry(tmp_path: Path) -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "orchestrator.cli", *BASE, "--density", "2"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 2
    assert "Traceback" not in proc.stderr
    assert proc.stderr.strip().splitlines() == [
        "pathsweep prune: error: 0 < density <= 1 must hold, but got density=2.0"
    ]


def test_seed_and_bias_options_reach_the_data_the_sample_and_the_pruner(
    capsys: pytest.CaptureFixture[str],
) -> None:
    """The command is run_trial: the dataset split, the prune sample and the model all use
    --seed, and --include-bias prunes biases (GraSP reads the sample, so the seed matters)."""
    argv = [*BASE, "--pruner", "grasp", "--density", "0.3", "--iterations", "1"]
    assert main([*argv, "--seed", "3", "--include-bias", "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    data = pruners.load_dataset("digits", seed=3)
    sample = pruners.prune_sample(data, per_class=10, seed=3)
    torch.manual_seed(3)
    model = pruners.build_model("fc", data.input_shape, data.num_classes, width=32, depth=3)
    masks = pruners.prune(
        model,
        "grasp",
        0.3,
        1,
        input_shape=data.input_shape,
        sample=sample,
        include_bias=True,
        seed=3,
    )
    assert any(name.endswith("bias") for name in masks)
    stats = pruners.path_kernel_stats(model, data.input_shape, masks)
    for key, value in stats.metrics().items():
        assert result[key] == pytest.approx(value, rel=1e-9), key
    assert main([*argv, "--seed", "3", "--json"]) == 0
    without_bias = json.loads(capsys.readouterr().out)
    assert without_bias["log_path_kernel_trace"] != result["log_path_kernel_trace"]
