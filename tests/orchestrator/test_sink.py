"""The Parquet sink: atomic, buffered, crash-safe appends readable with one schema."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.dataset as pads
import pyarrow.parquet as pq

from orchestrator.rows import CORE_COLUMNS, TIMESTAMP, declared_schema, rows_to_table, trial_id
from orchestrator.sink import WAL_NAME, TrialSink, parquet_files, read_trials

from .helpers import small_spec


def _row(number: int, state: str = "COMPLETE", **extra: Any) -> dict[str, Any]:
    row: dict[str, Any] = {
        "study": "s",
        "trial_id": trial_id(number, 0),
        "optuna_number": number,
        "attempt": 0,
        "phase": "search",
        "state": state,
        "error": None,
        "retry": False,
        "started_at": 1_700_000_000.0 + number,
        "finished_at": 1_700_000_000.5 + number,
        "duration_s": 0.5,
        "param_iterations": number + 1,
    }
    if state == "COMPLETE":
        row.update(
            log_path_kernel_trace=float(number), num_params=10 * number, train_loss_curve=[1.0, 0.5]
        )
    else:
        row["error"] = "ValueError: boom"
    row.update(extra)
    return row


def test_rows_to_table_fills_missing_columns_with_nulls() -> None:
    schema = declared_schema(small_spec())
    table, out_schema = rows_to_table([_row(0), _row(1, "FAIL")], schema)
    assert table.column_names[: len(CORE_COLUMNS)] == list(CORE_COLUMNS)
    assert table.schema.field("started_at").type == TIMESTAMP
    assert table.column("log_path_kernel_trace").to_pylist() == [0.0, None]
    assert table.column("error").to_pylist() == [None, "ValueError: boom"]
    assert out_schema.field("num_params").type == pa.int64()


def test_a_value_that_breaks_its_type_promotes_the_column() -> None:
    schema = pa.schema([("num_params", pa.int64())])
    table, out = rows_to_table([{"num_params": 1}, {"num_params": 2.5}], schema)
    assert out.field("num_params").type == pa.float64()
    assert table.column("num_params").to_pylist() == [1.0, 2.5]


def test_buffered_flush_writes_few_atomic_files(tmp_path: Path) -> None:
    sink = TrialSink(tmp_path / "trials", flush_rows=4, flush_seconds=3600)
    for n in range(10):
        sink.append(_row(n))
    assert len(parquet_files(tmp_path / "trials")) == 2 and sink.pending == 2
    assert read_trials(tmp_path / "trials").num_rows == 10  # pending rows are read from the log
    assert read_trials(tmp_path / "trials", pending=False).num_rows == 8
    sink.close()
    trials = tmp_path / "trials"
    assert not list(trials.glob(".tmp-*")) and not (trials / WAL_NAME).exists()
    assert len(parquet_files(tmp_path / "trials")) == 3


def test_time_based_flush(tmp_path: Path) -> None:
    sink = TrialSink(tmp_path / "trials", flush_rows=100, flush_seconds=0.05)
    sink.append(_row(0))
    sink.maybe_flush()
    assert not parquet_files(tmp_path / "trials")
    time.sleep(0.06)
    sink.maybe_flush()
    assert len(parquet_files(tmp_path / "trials")) == 1
    sink.close()


def test_file_count_stays_bounded_and_compaction_merges(tmp_path: Path) -> None:
    sink = TrialSink(tmp_path / "trials", flush_rows=1, max_files=5)
    for n in range(23):
        sink.append(_row(n, "FAIL" if n % 7 == 0 else "COMPLETE"))
        assert len(parquet_files(tmp_path / "trials")) <= 5
    sink.close()
    sink.compact()  # as the driver does: after close
    files = parquet_files(tmp_path / "trials")
    assert len(files) == 1 and not (tmp_path / "trials" / WAL_NAME).exists()
    table = pq.read_table(files[0])
    assert sorted(table.column("optuna_number").to_pylist()) == list(range(23))
    sink.close()


def test_files_with_different_columns_read_with_one_schema(tmp_path: Path) -> None:
    with TrialSink(tmp_path / "trials", flush_rows=1) as sink:
        sink.append(_row(0, "FAIL"))  # no metric columns at all
        sink.append(_row(1, extra_metric=3))
    table = read_trials(tmp_path / "trials")
    assert table.num_rows == 2
    assert table.column("extra_metric").to_pylist() == [None, 3]
    schema = pa.unify_schemas(
        [pq.read_schema(f) for f in parquet_files(tmp_path / "trials")],
        promote_options="permissive",
    )
    assert pads.dataset(str(tmp_path / "trials"), schema=schema).to_table().num_rows == 2


def test_declared_schema_gives_every_file_the_same_columns(tmp_path: Path) -> None:
    schema = declared_schema(small_spec())
    with TrialSink(tmp_path / "trials", schema, flush_rows=1) as sink:
        sink.append(_row(0, "FAIL"))
        sink.append(_row(1))
    first, second = (pq.read_schema(f) for f in parquet_files(tmp_path / "trials"))
    assert set(schema.names) <= set(first.names)
    assert first.field("log_path_kernel_trace").type == pa.float64()
    # a plain pyarrow reader (first file's schema) still sees the metric columns
    plain = pads.dataset(str(tmp_path / "trials"), format="parquet").to_table()
    assert plain.column("log_path_kernel_trace").to_pylist() == [None, 1.0]
    assert second.names[: len(first.names)] == first.names


def test_killed_writer_rows_are_recovered_once(tmp_path: Path) -> None:
    sink = TrialSink(tmp_path / "trials", flush_rows=3)
    for n in range(5):
        sink.append(_row(n))
    # the process dies here: 3 rows in Parquet, 2 only in the write-ahead log
    del sink
    with (tmp_path / "trials" / WAL_NAME).open("a") as wal:  # and a line cut in half
        wal.write(json.dumps(_row(9))[:20])
    again = TrialSink(tmp_path / "trials")
    assert again.recovered == 2
    again.close()
    ids = read_trials(tmp_path / "trials").column("trial_id").to_pylist()
    assert sorted(ids) == sorted(trial_id(n, 0) for n in range(5))


def test_log_rows_already_in_parquet_are_not_duplicated(tmp_path: Path) -> None:
    sink = TrialSink(tmp_path / "trials", flush_rows=100)
    rows = [_row(n) for n in range(3)]
    for row in rows:
        sink.append(row)
    sink._write_part(list(rows))  # written, but killed before the log was emptied
    del sink
    TrialSink(tmp_path / "trials").close()
    ids = read_trials(tmp_path / "trials").column("trial_id").to_pylist()
    assert sorted(ids) == ["0-0", "1-0", "2-0"]


def test_cut_compaction_leftovers_are_dropped(tmp_path: Path) -> None:
    sink = TrialSink(tmp_path / "trials", flush_rows=1)
    for n in range(4):
        sink.append(_row(n))
    sink.flush()
    parts = parquet_files(tmp_path / "trials")
    # an older pathsweep's compaction, killed before the deletes
    merged = sink._atomic_write(read_trials(tmp_path / "trials"), "compact-")
    sink.close()
    TrialSink(tmp_path / "trials").close()
    assert parquet_files(tmp_path / "trials") == [merged] and len(parts) == 4
    assert read_trials(tmp_path / "trials").num_rows == 4
