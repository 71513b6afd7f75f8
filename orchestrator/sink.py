"""The Parquet sink: every trial attempt becomes one row of the dataset ``OUT/trials/``.

Rows are durable the moment they are appended: each one is first written as a JSON line to a
write-ahead log (``_pending.jsonl``, ignored by Parquet readers because of its ``_`` prefix),
which survives a killed driver. They are buffered and written as Parquet part files every
``flush_rows`` rows or ``flush_seconds`` seconds, each file written under a temporary name and
renamed into place (atomic on POSIX), so a reader never sees half a file. When there are more
than ``max_files`` files they are merged into one; :meth:`TrialSink.compact` merges everything at
the end. Rows are never rewritten in place.
"""

from __future__ import annotations

import json
import os
import time
import uuid
from collections.abc import Mapping
from pathlib import Path
from typing import IO, Any

import pyarrow as pa
import pyarrow.dataset as pads
import pyarrow.parquet as pq

from orchestrator.rows import rows_to_table

WAL_NAME = "_pending.jsonl"
_PART = "part-"
_COMPACT = "compact-"


def parquet_files(directory: Path) -> list[Path]:
    """The dataset's visible Parquet files (temporary and hidden files excluded), oldest first."""
    if not directory.is_dir():
        return []
    files = [p for p in directory.iterdir() if p.suffix == ".parquet" and p.name[0] not in "._"]
    return sorted(files, key=lambda p: (p.stat().st_mtime_ns, p.name))


def unified_schema(files: list[Path]) -> pa.Schema:
    """One schema for all files: missing columns become null, ints promote to floats."""
    return pa.unify_schemas([pq.read_schema(f) for f in files], promote_options="permissive")


def _read_files(files: list[Path]) -> pa.Table:
    if not files:
        return pa.table({})
    schema = unified_schema(files)
    return pads.dataset([str(f) for f in files], format="parquet", schema=schema).to_table()


def _read_wal(path: Path) -> list[dict[str, Any]]:
    if not path.exists():
        return []
    rows = []
    with path.open(encoding="utf-8") as handle:
        for line in handle:
            try:
                rows.append(json.loads(line))
            except json.JSONDecodeError:  # a line cut short by a killed driver
                continue
    return rows


def read_trials(out: str | Path, *, pending: bool = True) -> pa.Table:
    """All rows of a study directory (or of its ``trials/`` directory) as one Arrow table.

    Args:
        out: the study directory ``OUT`` or ``OUT/trials``.
        pending: also return rows still waiting in the write-ahead log (a live or killed run).
    """
    directory = Path(out)
    if (directory / "trials").is_dir():
        directory = directory / "trials"
    table = _read_files(parquet_files(directory))
    rows = _read_wal(directory / WAL_NAME) if pending else []
    if table.num_columns and rows:
        seen = set(table.column("trial_id").to_pylist())
        rows = [r for r in rows if r.get("trial_id") not in seen]
    if not rows:
        return table
    extra, _ = rows_to_table(rows, table.schema if table.num_columns else pa.schema([]))
    if not table.num_columns:
        return extra
    return pa.concat_tables([table, extra], promote_options="permissive")


class TrialSink:
    """Append-only, buffered, atomic writer of the ``OUT/trials/`` Parquet dataset.

    Args:
        directory: the dataset directory (created if missing).
        schema: columns every file carries (see ``rows.declared_schema``); rows may add more.
        flush_rows: write a part file once this many rows are buffered.
        flush_seconds: or once the oldest buffered row is this old.
        max_files: merge the files into one when there are more than this many.
    """

    def __init__(
        self,
        directory: str | Path,
        schema: pa.Schema | None = None,
        *,
        flush_rows: int = 500,
        flush_seconds: float = 60.0,
        max_files: int = 64,
    ) -> None:
        self.directory = Path(directory)
        self.directory.mkdir(parents=True, exist_ok=True)
        self._schema = schema if schema is not None else pa.schema([])
        self._flush_rows = flush_rows
        self._flush_seconds = flush_seconds
        self._max_files = max_files
        self._buffer: list[dict[str, Any]] = []
        self._oldest = 0.0
        self._wal_path = self.directory / WAL_NAME
        self.recovered = self._recover()
        self._wal: IO[str] = self._wal_path.open("a", encoding="utf-8")

    # ------------------------------------------------------------------ public

    def append(self, row: Mapping[str, Any]) -> None:
        """Record one row: durable at once (write-ahead log), in Parquet at the next flush."""
        self._wal.write(json.dumps(dict(row), separators=(",", ":")) + "\n")
        self._wal.flush()
        if not self._buffer:
            self._oldest = time.monotonic()
        self._buffer.append(dict(row))
        if len(self._buffer) >= self._flush_rows:
            self.flush()

    def maybe_flush(self) -> None:
        """Flush if the oldest buffered row waited ``flush_seconds``."""
        if self._buffer and time.monotonic() - self._oldest >= self._flush_seconds:
            self.flush()

    def flush(self) -> None:
        """Write the buffered rows as one Parquet part file, then empty the write-ahead log."""
        if not self._buffer:
            return
        self._write_part(self._buffer)
        self._buffer = []
        self._wal.close()
        self._wal = self._wal_path.open("w", encoding="utf-8")
        if len(parquet_files(self.directory)) > self._max_files:
            self.compact()

    def compact(self) -> Path | None:
        """Merge every file into one (written atomically, then the merged files are removed)."""
        self.flush()
        files = parquet_files(self.directory)
        if len(files) <= 1:
            return files[0] if files else None
        table = _read_files(files)
        target = self._atomic_write(table, _COMPACT)
        for path in files:
            path.unlink(missing_ok=True)
        return target

    def close(self) -> None:
        """Flush, close and remove the (then empty) write-ahead log."""
        self.flush()
        self._wal.close()
        if self._wal_path.exists() and self._wal_path.stat().st_size == 0:
            self._wal_path.unlink()

    def __enter__(self) -> TrialSink:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @property
    def pending(self) -> int:
        """Rows buffered but not yet in a Parquet file."""
        return len(self._buffer)

    # ------------------------------------------------------------------ internals

    def _write_part(self, rows: list[dict[str, Any]]) -> Path:
        table, self._schema = rows_to_table(rows, self._schema)
        return self._atomic_write(table, _PART)

    def _atomic_write(self, table: pa.Table, prefix: str) -> Path:
        name = f"{prefix}{time.time_ns():020d}-{uuid.uuid4().hex[:8]}.parquet"
        tmp = self.directory / f".tmp-{name}"
        pq.write_table(table, tmp)
        target = self.directory / name
        os.replace(tmp, target)
        return target

    def _recover(self) -> int:
        """Finish the work of a killed writer: drop merged leftovers, flush logged rows."""
        for tmp in self.directory.glob(".tmp-*"):
            tmp.unlink(missing_ok=True)
        self._drop_merged_files()
        rows = _read_wal(self._wal_path)
        if not rows:
            return 0
        files = parquet_files(self.directory)
        seen: set[str] = set()
        for path in files:
            seen.update(pq.read_table(path, columns=["trial_id"]).column(0).to_pylist())
        rows = [r for r in rows if r.get("trial_id") not in seen]
        if rows:
            self._write_part(rows)
        self._wal_path.unlink()
        return len(rows)

    def _drop_merged_files(self) -> None:
        """Files whose rows all sit in the newest merged file are leftovers of a cut compaction."""
        files = parquet_files(self.directory)
        merged = [p for p in files if p.name.startswith(_COMPACT)]
        if not merged:
            return
        newest = merged[-1]
        ids = set(pq.read_table(newest, columns=["trial_id"]).column(0).to_pylist())
        for path in files:
            if path == newest:
                continue
            own = set(pq.read_table(path, columns=["trial_id"]).column(0).to_pylist())
            if own <= ids:
                path.unlink()
