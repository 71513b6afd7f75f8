"""The Parquet sink: every trial attempt becomes one row of the dataset ``OUT/trials/``.

Promises (tested by fault injection at every file-system step, ``tests/orchestrator/
test_sink_faults.py``):

- A reader of ``OUT/trials/*.parquet`` (pyarrow, DuckDB, a glob, :func:`read_trials`) never sees
  a row twice or half a row, whenever the writer dies.
- An acknowledged row (:meth:`TrialSink.append` returned) survives a crash of the process or of
  the machine: it is in the write-ahead log, fsynced, until a fsynced Parquet file holds it.

How:

- ``append`` writes the row as one JSON line to the write-ahead log ``trials/_pending.jsonl``
  (ignored by Parquet readers: ``_`` prefix, not ``.parquet``) and fsyncs it.
- A flush writes the buffered rows to a hidden temporary file, fsyncs it, renames it into place
  (a file appears whole or not at all), fsyncs the directory, and only then empties the log.
  A row that is both in a part file and in the log is read once (by ``trial_id``).
- Compaction never deletes a visible file. ``OUT/trials`` is a symbolic link to a generation
  directory ``OUT/.trials-gens/gNNNNNN``; the merged file is written into a new generation,
  which becomes visible in one atomic step (a new link renamed over ``OUT/trials``). The old
  generation is then removed; leftovers of a writer killed on the way are removed when the sink
  is next opened.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import shutil
import time
import uuid
from collections.abc import Mapping
from pathlib import Path
from typing import IO, Any

import pyarrow as pa
import pyarrow.dataset as pads
import pyarrow.parquet as pq

from orchestrator.errors import SetupError
from orchestrator.rows import rows_to_table

WAL_NAME = "_pending.jsonl"
_PART = "part-"
_COMPACT = "compact-"
_TMP = ".tmp-"
_GEN = "g"


def parquet_files(directory: Path) -> list[Path]:
    """The dataset's visible Parquet files (temporary and hidden files excluded), oldest first."""
    if not directory.is_dir():
        return []
    files = [p for p in directory.iterdir() if p.suffix == ".parquet" and p.name[0] not in "._"]
    return sorted(files, key=lambda p: (p.stat().st_mtime_ns, p.name))


def unified_schema(files: list[Path]) -> pa.Schema:
    """One schema for all files: missing columns become null, ints promote to floats.

    Raises:
        SetupError: a file is not readable Parquet (named, with what to do).
    """
    schemas = []
    for file in files:
        try:
            schemas.append(pq.read_schema(file))
        except FileNotFoundError:  # removed by a compaction since it was listed: list again
            raise
        except (OSError, pa.ArrowException) as exc:
            raise corrupt_file_error(file, exc) from None
    return pa.unify_schemas(schemas, promote_options="permissive")


def corrupt_file_error(file: Path, exc: BaseException) -> SetupError:
    """One line naming an unreadable Parquet file and what to do about it."""
    reason = " ".join(str(exc).split())[:200]
    return SetupError(
        f"{file} is not a readable Parquet file ({type(exc).__name__}: {reason}); move it out "
        f"of {file.parent} to continue without its rows"
    )


def _read_files(files: list[Path]) -> pa.Table:
    if not files:
        return pa.table({})
    schema = unified_schema(files)
    try:
        return pads.dataset([str(f) for f in files], format="parquet", schema=schema).to_table()
    except (OSError, pa.ArrowException):
        pass
    tables = []
    for file in files:  # find the damaged file to name it
        try:
            tables.append(pads.dataset(str(file), format="parquet", schema=schema).to_table())
        except FileNotFoundError:
            raise
        except (OSError, pa.ArrowException) as exc:
            raise corrupt_file_error(file, exc) from None
    return pa.concat_tables(tables)


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


def _dataset_dir(out: str | Path) -> Path:
    directory = Path(out)
    if (directory / "trials").is_dir():
        directory = directory / "trials"
    return directory


def read_trials(out: str | Path, *, pending: bool = True) -> pa.Table:
    """All rows of a study directory (or of its ``trials/`` directory) as one Arrow table.

    Each ``trial_id`` appears once, also while a writer is flushing or compacting.

    Args:
        out: the study directory ``OUT`` or ``OUT/trials``.
        pending: also return rows still waiting in the write-ahead log (a live or killed run).

    Raises:
        SetupError: a Parquet file is damaged (named in the message).
    """
    for tries in range(3):  # a compaction may remove the files just listed: list again
        try:
            return _read_trials(_dataset_dir(out), pending)
        except FileNotFoundError:
            if tries == 2:
                raise
            time.sleep(0.05)
    raise AssertionError("unreachable")


def _read_trials(directory: Path, pending: bool) -> pa.Table:
    table = _read_files(parquet_files(directory))
    rows = _read_wal(directory / WAL_NAME) if pending else []
    seen = set(table.column("trial_id").to_pylist()) if table.num_columns else set()
    unique = []
    for row in rows:
        if row.get("trial_id") not in seen:
            seen.add(row.get("trial_id"))
            unique.append(row)
    if not unique:
        return table
    extra, _ = rows_to_table(unique, table.schema if table.num_columns else pa.schema([]))
    if not table.num_columns:
        return extra
    return pa.concat_tables([table, extra], promote_options="permissive")


# ---------------------------------------------------------------------- durable file steps


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _with_path(exc: OSError, path: Path, doing: str) -> OSError:
    """``exc`` again, naming the path and what was being done (``[Errno 28]`` alone says little)."""
    text = os.strerror(exc.errno) if exc.errno else str(exc)
    return type(exc)(exc.errno or errno.EIO, f"{doing} {path}: {text}")


def _write_table(table: pa.Table, path: Path) -> None:
    """Write ``table`` to ``path`` and fsync it (the file is new; removed again on error)."""
    try:
        with path.open("wb") as handle:
            pq.write_table(table, handle)
            handle.flush()
            os.fsync(handle.fileno())
    except OSError as exc:
        path.unlink(missing_ok=True)
        raise _with_path(exc, path, "cannot write") from None


class TrialSink:
    """Append-only, buffered, crash-safe writer of the ``OUT/trials/`` Parquet dataset.

    Open at most one per dataset at a time (the study lock, ``studydir.study_lock``, sees to
    that for studies): opening one finishes the work of a writer that died.

    Args:
        directory: the dataset link ``OUT/trials`` (created if missing; a plain directory of
            an older study becomes the first generation).
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
        self._gens = self.directory.parent / f".{self.directory.name}-gens"
        self._schema = schema if schema is not None else pa.schema([])
        self._flush_rows = flush_rows
        self._flush_seconds = flush_seconds
        self._max_files = max_files
        self._buffer: dict[Any, dict[str, Any]] = {}  # by trial_id: a retried append is one row
        self._oldest = 0.0
        self._wal_path = self.directory / WAL_NAME
        self._open_generation()
        self.recovered = self._recover()
        self._wal: IO[bytes] = self._wal_path.open("ab")

    # ------------------------------------------------------------------ public

    def append(self, row: Mapping[str, Any]) -> None:
        """Record one row: durable once this returns (fsynced log), in Parquet at the next flush.

        Raises:
            OSError: the log could not be written (it is left as it was), or the flush this
                append started failed (the row is logged; appending it again is harmless:
                rows are keyed by ``trial_id``). The message names the path.
        """
        line = (json.dumps(dict(row), separators=(",", ":")) + "\n").encode("utf-8")
        size = self._wal.tell()
        try:
            self._wal.write(line)
            self._wal.flush()
            os.fsync(self._wal.fileno())
        except OSError as exc:  # e.g. disk full: no half line may stay for the next row
            with contextlib.suppress(OSError):
                self._cut_wal(size)
            raise _with_path(exc, self._wal_path, "cannot append to") from None
        if not self._buffer:
            self._oldest = time.monotonic()
        self._buffer[row.get("trial_id")] = dict(row)
        if len(self._buffer) >= self._flush_rows:
            self.flush()

    def maybe_flush(self) -> None:
        """Flush if the oldest buffered row waited ``flush_seconds``."""
        if self._buffer and time.monotonic() - self._oldest >= self._flush_seconds:
            self.flush()

    def flush(self) -> None:
        """Write the buffered rows as one durable Parquet part file, then empty the log."""
        if not self._buffer:
            return
        self._write_part(list(self._buffer.values()))
        self._buffer = {}
        self._cut_wal(0)
        if len(parquet_files(self.directory)) > self._max_files:
            self.compact()

    def compact(self) -> Path | None:
        """Merge every file into one, in a new generation made visible in one atomic step."""
        self.flush()
        files = parquet_files(self.directory)
        if len(files) <= 1:
            return files[0] if files else None
        table = _read_files(files)
        old = self._current()
        number = int(old.name[len(_GEN) :]) + 1
        building = self._gens / f"{_TMP}{_GEN}{number:06d}"
        shutil.rmtree(building, ignore_errors=True)
        building.mkdir()
        name = f"{_COMPACT}{time.time_ns():020d}-{uuid.uuid4().hex[:8]}.parquet"
        _write_table(table, building / name)
        _fsync_dir(building)
        new = self._gens / f"{_GEN}{number:06d}"
        os.rename(building, new)
        _fsync_dir(self._gens)
        reopen = not self._wal.closed  # (compact after close leaves no log behind)
        self._wal.close()  # empty after the flush; the new generation starts without one
        self._point_to(new)
        if reopen:
            self._wal = self._wal_path.open("ab")
        shutil.rmtree(old, ignore_errors=True)
        return self.directory / name

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

    def _cut_wal(self, size: int) -> None:
        """Shorten the log to ``size`` bytes, durably (0 = every row is in Parquet)."""
        self._wal.flush()
        os.ftruncate(self._wal.fileno(), size)
        self._wal.seek(size)
        os.fsync(self._wal.fileno())

    def _write_part(self, rows: list[dict[str, Any]]) -> Path:
        table, self._schema = rows_to_table(rows, self._schema)
        return self._atomic_write(table, _PART)

    def _atomic_write(self, table: pa.Table, prefix: str) -> Path:
        """A new visible file, whole or not at all, durable (file and directory fsynced)."""
        name = f"{prefix}{time.time_ns():020d}-{uuid.uuid4().hex[:8]}.parquet"
        tmp = self.directory / f"{_TMP}{name}.partial"
        _write_table(table, tmp)
        target = self.directory / name
        try:
            os.replace(tmp, target)
        except OSError as exc:
            tmp.unlink(missing_ok=True)
            raise _with_path(exc, target, "cannot rename into") from None
        _fsync_dir(self.directory)
        return target

    def _current(self) -> Path:
        return self._gens / os.readlink(self.directory).rsplit("/", 1)[-1]

    def _point_to(self, generation: Path) -> None:
        """Make ``generation`` the visible dataset: one atomic rename of a new link."""
        link = self.directory.parent / f"{_TMP}{self.directory.name}-link"
        link.unlink(missing_ok=True)
        os.symlink(f"{self._gens.name}/{generation.name}", link)
        os.replace(link, self.directory)
        _fsync_dir(self.directory.parent)

    def _open_generation(self) -> None:
        """Make ``directory`` a link to a generation; drop what a killed compaction left."""
        parent = self.directory.parent
        parent.mkdir(parents=True, exist_ok=True)
        (parent / f"{_TMP}{self.directory.name}-link").unlink(missing_ok=True)
        self._gens.mkdir(exist_ok=True)
        generations = sorted(p for p in self._gens.iterdir() if p.name.startswith(_GEN))
        if self.directory.is_symlink():
            current = self._current()
            if not current.is_dir():
                raise SetupError(
                    f"{self.directory} points to {current}, which is missing; the dataset is "
                    "lost unless you restore that directory"
                )
        elif self.directory.is_dir():  # a plain directory (an older study): first generation
            current = self._gens / f"{_GEN}{0:06d}"
            if current.exists():
                raise SetupError(f"both {self.directory} and {current} exist; keep one of them")
            os.rename(self.directory, current)
            _fsync_dir(parent)
            self._point_to(current)
        elif generations:  # killed between the two steps above
            current = generations[-1]
            self._point_to(current)
        else:
            current = self._gens / f"{_GEN}{0:06d}"
            current.mkdir()
            _fsync_dir(self._gens)
            self._point_to(current)
        for path in self._gens.iterdir():  # unfinished or replaced generations
            if path != current:
                shutil.rmtree(path, ignore_errors=True)

    def _recover(self) -> int:
        """Finish the work of a killed writer: drop temporary files, flush logged rows."""
        for tmp in self.directory.glob(f"{_TMP}*"):
            tmp.unlink(missing_ok=True)
        self._drop_merged_files()
        rows = _read_wal(self._wal_path)
        if not rows:
            self._wal_path.unlink(missing_ok=True)
            return 0
        files = parquet_files(self.directory)
        seen: set[Any] = set()
        for path in files:
            try:
                seen.update(pq.read_table(path, columns=["trial_id"]).column(0).to_pylist())
            except (OSError, pa.ArrowException) as exc:
                raise corrupt_file_error(path, exc) from None
        fresh = []
        for row in rows:
            if row.get("trial_id") not in seen:
                seen.add(row.get("trial_id"))
                fresh.append(row)
        if fresh:
            self._write_part(fresh)
        self._wal_path.unlink()
        _fsync_dir(self.directory)
        return len(fresh)

    def _drop_merged_files(self) -> None:
        """Files of an older study whose rows all sit in its newest merged file.

        Before generations, a compaction renamed its merged file next to the merged ones and
        then removed them: a killed one left both.
        """
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
