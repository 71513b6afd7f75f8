"""Method tables and layer collapse on hand-made rows."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from analysis import (
    critical_compression,
    layer_density_table,
    method_summary,
    method_table,
    parse_layer_density,
)
from analysis.collapse import collapsed


def _row(pruner: str, density: float, seed: int, acc: float | None = None,
         collapse: int | None = 0, state: str = "COMPLETE", **extra: object) -> dict:
    return {"param_pruner": pruner, "param_density": density, "seed": seed, "state": state,
            "test_accuracy": acc, "layer_collapse": collapse, **extra}


def test_method_summary_mean_std_over_seeds() -> None:
    df = pd.DataFrame([
        _row("synflow", 0.1, 0, 0.8), _row("synflow", 0.1, 1, 0.9), _row("synflow", 0.1, 2, 0.7),
        _row("synflow", 0.01, 0, 0.5),
        _row("random", 0.1, 0, 0.6), _row("random", 0.1, 1, 0.4),
        _row("random", 0.1, 2, 0.99, state="FAIL"), _row("random", 0.01, 0, None),
    ])
    s = method_summary(df).set_index(["pruner", "density"])
    assert s.loc[("synflow", 0.1), "mean"] == pytest.approx(0.8)
    assert s.loc[("synflow", 0.1), "std"] == pytest.approx(np.std([0.8, 0.9, 0.7], ddof=1))
    assert s.loc[("synflow", 0.1), "n"] == 3
    assert np.isnan(float(s.loc[("synflow", 0.01), "std"]))  # type: ignore[arg-type]
    assert s.loc[("random", 0.1), "mean"] == pytest.approx(0.5) and s.loc[("random", 0.1), "n"] == 2
    assert ("random", 0.01) not in s.index  # no finite metric there
    assert s.loc[("synflow", 0.01), "compression"] == pytest.approx(100)
    table = method_table(method_summary(df))
    assert list(table.columns) == ["0.1 (10×)", "0.01 (100×)"]
    assert table.loc["synflow", "0.1 (10×)"] == "0.8 ± 0.1 (n=3 seeds)"
    assert table.loc["synflow", "0.01 (100×)"] == "0.5 (n=1)"
    assert table.loc["random", "0.01 (100×)"] == ""


def test_method_summary_without_metric_or_density_is_empty() -> None:
    df = pd.DataFrame([_row("synflow", 0.1, 0, 0.8)])
    assert method_summary(df, "train_loss_auc").empty
    assert method_summary(df.drop(columns="param_density")).empty
    assert method_table(method_summary(df, "nope")).empty


def test_critical_compression_hand_made() -> None:
    rows = [
        # A: safe at 10x and 100x for both seeds, collapses at 1000x.
        *[_row("A", d, s, collapse=int(d == 0.001)) for d in (0.1, 0.01, 0.001) for s in (0, 1)],
        # B: one seed of two collapses at 100x -> critical 10x.
        _row("B", 0.1, 0), _row("B", 0.1, 1), _row("B", 0.01, 0), _row("B", 0.01, 1, collapse=1),
        # C: never collapses -> censored at the largest tested compression.
        _row("C", 0.1, 0), _row("C", 0.002, 0),
        # D: collapses everywhere.
        _row("D", 0.1, 0, collapse=1),
        # E: not monotone: collapse at 10x, none at 100x.
        _row("E", 0.1, 0, collapse=1), _row("E", 0.01, 0),
        # a failed row does not count
        _row("A", 0.0001, 0, collapse=0, state="FAIL"),
    ]
    out = critical_compression(pd.DataFrame(rows)).set_index("pruner")
    assert out.loc["A", "critical_compression"] == pytest.approx(100)
    assert out.loc["A", "first_collapse_compression"] == pytest.approx(1000)
    assert out.loc["A", "max_tested_compression"] == pytest.approx(1000)
    assert not out.loc["A", "censored"]
    assert out.loc["B", "critical_compression"] == pytest.approx(10)
    assert out.loc["C", "critical_compression"] == pytest.approx(500) and out.loc["C", "censored"]
    assert np.isnan(float(out.loc["D", "critical_compression"]))  # type: ignore[arg-type]
    assert "below the tested range" in str(out.loc["D", "note"])
    assert "1 of 1 rows at density 0.1 (10×)" in str(out.loc["D", "note"])
    # E collapses at 10x: the critical compression (where collapse begins) is at most 10x,
    # whatever happens at 100x.
    assert np.isnan(float(out.loc["E", "critical_compression"]))  # type: ignore[arg-type]
    assert out.loc["E", "first_collapse_compression"] == pytest.approx(10)
    assert "not monotone" in str(out.loc["E", "note"])
    assert out.loc["B", "collapsed_rows"] == 1 and out.loc["B", "n"] == 4


def test_collapse_derived_from_layer_density_when_flag_missing() -> None:
    df = pd.DataFrame([
        {"param_density": 0.1, "layer_density": json.dumps({"a": 0.2, "b": 0.05})},
        {"param_density": 0.01, "layer_density": json.dumps({"a": 0.02, "b": 0.0})},
        {"param_density": 0.01, "layer_density": None},
    ])
    assert collapsed(df).tolist()[:2] == [0.0, 1.0] and np.isnan(collapsed(df).iloc[2])
    out = critical_compression(df).iloc[0]
    assert out["critical_compression"] == pytest.approx(10)


def test_parse_layer_density_accepts_json_map_and_dict() -> None:
    expected = {"fc1.weight": 0.5, "fc2.weight": 0.0}
    assert parse_layer_density(json.dumps(expected)) == expected
    assert parse_layer_density(expected) == expected
    assert parse_layer_density([("fc1.weight", 0.5), ("fc2.weight", 0)]) == expected
    assert parse_layer_density("{broken") == {} and parse_layer_density(None) == {}


def test_layer_density_table_means_in_network_order() -> None:
    def ld(a: float, b: float) -> str:
        return json.dumps({"z.first": a, "a.second": b})
    df = pd.DataFrame([
        _row("synflow", 0.1, 0, layer_density=ld(0.2, 0.1)),
        _row("synflow", 0.1, 1, layer_density=ld(0.4, 0.1)),
        _row("synflow", 0.01, 0, layer_density=ld(0.02, 0.0)),
    ])
    table = layer_density_table(df)
    assert list(table.columns) == ["z.first", "a.second"]
    assert list(table.index) == [("synflow", 0.1), ("synflow", 0.01)]
    assert table.loc[("synflow", 0.1), "z.first"] == pytest.approx(0.3)
    assert layer_density_table(df, "min").loc[("synflow", 0.1), "z.first"] == pytest.approx(0.2)
    with pytest.raises(ValueError, match="agg"):
        layer_density_table(df, "median")
    assert layer_density_table(df.drop(columns="layer_density")).empty
