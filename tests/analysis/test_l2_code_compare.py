"""examples/paths-predict-training/l2-code: the authors'-code SynFlow-L2 trained as the designed
study trains ``synflow-l2`` (issue 8, part 4 through part 2), and the table that compares them."""

from __future__ import annotations

import importlib.util
from pathlib import Path
from types import ModuleType

import numpy as np
import pandas as pd
import pytest

from orchestrator.spec import load_yaml, parse_spec

HERE = Path(__file__).resolve().parents[2] / "examples" / "paths-predict-training"


def _compare_module() -> ModuleType:
    spec = importlib.util.spec_from_file_location("l2_code_compare", HERE / "l2-code/compare.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize("model", ["fc", "conv"])
def test_l2_code_spec_is_the_iterative_spec_with_only_the_pruner_changed(model: str) -> None:
    designed = parse_spec(load_yaml((HERE / f"{model}-iterative.yaml").read_text()))
    code = parse_spec(load_yaml((HERE / f"l2-code/{model}-l2-code.yaml").read_text()))
    assert code.search.grid() == {**designed.search.grid(), "pruner": ["synflow-l2-code"]}
    assert code.search.fixed() == designed.search.fixed()
    for field in ("model", "data", "train", "prune", "spectrum", "seed", "objectives"):
        assert getattr(code, field) == getattr(designed, field), field
    assert code.study == f"ppt-{model}-l2-code-s0"


def _row(pruner: str, density: float, seed: int, acc: float, trace: float,
         collapse: int = 0, iterations: int = 100) -> dict:
    return {"param_model": "fc", "param_pruner": pruner, "param_density": density,
            "param_iterations": iterations, "seed": seed, "state": "COMPLETE",
            "phase": "search", "train_epochs": 30, "test_accuracy": acc,
            "train_loss_auc": 1.0 - acc, "log_path_kernel_trace": trace,
            "layer_collapse": collapse}


def test_compare_means_over_seeds_and_counts_collapses() -> None:
    compare = _compare_module().compare
    rows = [_row("synflow-l2", 0.1, s, a, t) for s, a, t in
            [(0, 0.8, 5.0), (1, 0.9, 6.0), (2, 0.7, 7.0)]]
    rows += [_row("synflow-l2-code", 0.1, s, 0.5, 4.0) for s in range(3)]
    rows += [_row("synflow-l2-code", 0.01, 0, 0.1, -np.inf, collapse=1),
             _row("synflow-l2-code", 0.01, 1, 0.3, 1.0), _row("synflow-l2-code", 0.01, 2, 0.2, 2.0)]
    rows += [_row("synflow", 0.1, s, 0.99, 9.0) for s in range(3)]  # not asked for
    table = compare(pd.DataFrame(rows), ["synflow-l2", "synflow-l2-code"])["fc"]
    assert list(table.index) == [("0.1 (10×)", "synflow-l2"), ("0.1 (10×)", "synflow-l2-code"),
                                 ("0.01 (100×)", "synflow-l2-code")]
    std = np.std([0.8, 0.9, 0.7], ddof=1)
    assert table.loc[("0.1 (10×)", "synflow-l2"), "test_accuracy"] == f"0.8 ± {std:.3g} (n=3)"
    assert table.loc[("0.1 (10×)", "synflow-l2"), "log_path_kernel_trace"] == "6 ± 1 (n=3)"
    assert table.loc[("0.1 (10×)", "synflow-l2-code"), "train_loss_auc"] == "0.5 ± 0 (n=3)"
    # the collapsed network's log trace (-inf) is left out of the mean, and counted
    assert table.loc[("0.01 (100×)", "synflow-l2-code"), "log_path_kernel_trace"] == (
        f"1.5 ± {np.std([1.0, 2.0], ddof=1):.3g} (n=2)")
    assert table.loc[("0.01 (100×)", "synflow-l2-code"), "collapsed networks"] == "1 of 3"
    assert table.loc[("0.1 (10×)", "synflow-l2"), "collapsed networks"] == "0 of 3"


def test_compare_refuses_to_average_configurations_or_nothing() -> None:
    compare = _compare_module().compare
    rows = [_row("synflow-l2", 0.1, s, 0.8, 5.0) for s in range(3)]
    rows.append(_row("synflow-l2", 0.1, 0, 0.2, 1.0, iterations=1))  # another configuration
    with pytest.raises(ValueError, match="not seeds of one configuration"):
        compare(pd.DataFrame(rows), ["synflow-l2"])
    with pytest.raises(ValueError, match="no rows of the pruners"):
        compare(pd.DataFrame(rows), ["pk-preserve"])
