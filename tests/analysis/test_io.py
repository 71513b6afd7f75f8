"""analysis.load: schema unification across studies, corrupt files, specs."""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

import analysis
from tests.analysis.conftest import write_rows


def _row(i: int, **extra: object) -> dict:
    return {"study": "s", "trial_id": f"{i}-0", "optuna_number": i, "attempt": 0,
            "state": "COMPLETE", **extra}


def test_load_study_dir_file_and_list_agree(synthetic_study: Path) -> None:
    by_dir = analysis.load(synthetic_study)
    files = sorted((synthetic_study / "trials").glob("*.parquet"))
    by_files = analysis.load(files)
    assert len(by_dir) == sum(pq.read_metadata(f).num_rows for f in files) == 412
    assert by_dir.equals(by_files)
    assert by_dir["trial_id"].is_unique
    assert (np.diff(by_dir["optuna_number"].to_numpy()) >= 0).all()


def test_two_studies_with_different_columns_unify(tmp_path: Path) -> None:
    a = write_rows(tmp_path / "a", [_row(i, effective_params=i, test_accuracy=0.5) for i in range(3)])
    b = write_rows(tmp_path / "b", [_row(i, effective_params=i + 0.5, only_b="x") for i in range(2)])
    for row_set in (a, b):
        assert (row_set / "trials" / "part-0.parquet").exists()
    assert pq.read_schema(a / "trials" / "part-0.parquet").field("effective_params").type == pa.int64()
    df = analysis.load([a, b])
    assert len(df) == 5
    assert {"test_accuracy", "only_b", "effective_params"} <= set(df.columns)
    assert df["effective_params"].dtype == np.float64  # int64 meets double: promoted
    assert sorted(df["effective_params"]) == [0, 0.5, 1, 1.5, 2]
    assert df["test_accuracy"].isna().sum() == 2 and df["only_b"].isna().sum() == 3


def _damage(data: bytes, how: str) -> bytes:
    if how == "truncate":
        return data[: len(data) // 2]
    if how == "garbage":
        return b"not parquet at all"
    # "pages": flip bytes in the data pages, keep the footer (the schema still reads)
    footer = int.from_bytes(data[-8:-4], "little") + 8
    flipped = bytearray(data)
    for i in range(200, len(data) - footer - 100, 7):
        flipped[i] ^= 0xFF
    return bytes(flipped)


@pytest.mark.parametrize("damage", ["truncate", "garbage", "pages"])
def test_corrupt_file_warns_with_its_name_and_rest_loads(synthetic_study: Path, damage: str) -> None:
    files = sorted((synthetic_study / "trials").glob("*.parquet"))
    bad = files[1]
    lost = pq.read_metadata(bad).num_rows
    bad.write_bytes(_damage(bad.read_bytes(), damage))
    with pytest.warns(UserWarning, match=bad.name):
        df = analysis.load(synthetic_study)
    assert len(df) == 412 - lost > 0
    corr = analysis.rank_correlations(df, n_resamples=50)
    assert corr["spearman"].notna().any()


def test_conflicting_column_types_fall_back_with_a_warning(tmp_path: Path) -> None:
    write_rows(tmp_path / "a", [_row(0, error=None, code=1.5)])
    write_rows(tmp_path / "b", [_row(1, error=None, code="text")])
    with pytest.warns(UserWarning, match="could not be unified"):
        df = analysis.load([tmp_path / "a", tmp_path / "b"])
    assert list(df["code"]) == [1.5, "text"]


def test_missing_path_raises_and_empty_study_is_empty(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="nope"):
        analysis.load(tmp_path / "nope")
    (tmp_path / "empty" / "trials").mkdir(parents=True)
    assert analysis.load(tmp_path / "empty").empty


def test_pending_write_ahead_rows_are_reported(tmp_path: Path) -> None:
    study = write_rows(tmp_path / "s", [_row(0)])
    (study / "trials" / "_pending.jsonl").write_text('{"trial_id": "1-0"}\n{"trial_id": "2-0"}\n')
    with pytest.warns(UserWarning, match="2 rows"):
        assert len(analysis.load(study)) == 1


def test_study_column_filled_from_directory_when_absent(tmp_path: Path) -> None:
    study = write_rows(tmp_path / "named", [{"trial_id": "0-0", "state": "COMPLETE"}])
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        df = analysis.load(study)
    assert list(df["study"]) == ["named"]


def test_load_specs_reads_objectives(untrained_study: Path, tmp_path: Path) -> None:
    specs = analysis.load_specs([untrained_study, tmp_path])
    assert list(specs) == ["free"]
    assert analysis.objectives_from_spec(specs["free"]) == [
        ("log_path_kernel_trace", "maximize"), ("num_params", "minimize")]
