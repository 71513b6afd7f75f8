"""Fault injection at every file-system step of the sink's flush and compaction.

For each k the k-th call of ``os.replace/rename/unlink/rmdir/mkdir/symlink/fsync/ftruncate`` or
of the Parquet write (which then leaves half a file) made by the sink either kills the writer
(an exception no ``except`` catches) or fails with ``ENOSPC``. At that instant every reader must
see each row at most once and only whole rows; after reopening, the dataset must hold every
acknowledged row exactly once and no leftover.
"""

from __future__ import annotations

import errno
import os
import shutil
import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import Any

import pyarrow.dataset as pads
import pyarrow.parquet as pq
import pytest

import orchestrator.sink as sink_module
from orchestrator.rows import trial_id
from orchestrator.sink import TrialSink, read_trials

try:
    import duckdb
except ImportError:  # the dev extra installs it; the other readers are checked without it
    duckdb = None


class Died(BaseException):
    """The process died here (nothing after this point runs)."""


_OS_STEPS = ("replace", "rename", "unlink", "rmdir", "mkdir", "symlink", "fsync", "ftruncate")


def _row(number: int) -> dict[str, Any]:
    return {
        "study": "s",
        "trial_id": trial_id(number, 0),
        "optuna_number": number,
        "attempt": 0,
        "phase": "search",
        "state": "COMPLETE",
        "retry": False,
        "param_iterations": number + 1,
        "log_path_kernel_trace": float(number) / 3,
    }


@contextmanager
def fault_at(k: int, make: Callable[[str], BaseException]) -> Iterator[list[str]]:
    """Raise ``make(step)`` at the k-th file-system step (1-based); yields the steps seen."""
    seen: list[str] = []
    saved: dict[str, Any] = {}

    def counted(name: str, fn: Callable[..., Any]) -> Callable[..., Any]:
        def call(*args: Any, **kwargs: Any) -> Any:
            seen.append(name)
            if len(seen) == k:
                raise make(name)
            return fn(*args, **kwargs)

        return call

    for name in _OS_STEPS:
        saved[name] = getattr(os, name)
        setattr(os, name, counted(name, saved[name]))
    write = sink_module._write_table

    def half_write(table: Any, path: Path) -> None:
        seen.append("write")
        if len(seen) == k:
            path.write_bytes(b"PAR1" + b"\0" * 50)  # a file cut short
            raise make("write")
        write(table, path)

    sink_module._write_table = half_write  # type: ignore[assignment]
    try:
        yield seen
    finally:
        for name, fn in saved.items():
            setattr(os, name, fn)
        sink_module._write_table = write  # type: ignore[assignment]


def _workload(trials: Path, acked: list[str]) -> None:
    """Flushes and compactions (file-count triggered and final), with a reopen on the way."""
    sink = TrialSink(trials, flush_rows=2, max_files=2, flush_seconds=3600)
    for n in range(3, 10):
        sink.append(_row(n))
        acked.append(trial_id(n, 0))
    sink.compact()
    sink.close()


def _seed(trials: Path) -> None:
    with TrialSink(trials, flush_rows=1, max_files=100) as sink:
        for n in range(3):
            sink.append(_row(n))


def _check_rows(rows: list[dict[str, Any]], where: str) -> list[str]:
    ids = [r["trial_id"] for r in rows]
    assert len(ids) == len(set(ids)), f"{where}: duplicated rows {sorted(ids)}"
    for row in rows:  # whole rows only
        n = row["optuna_number"]
        assert row["trial_id"] == trial_id(n, 0) and row["param_iterations"] == n + 1, where
        assert row["log_path_kernel_trace"] == pytest.approx(n / 3), where
    return ids


def _readers(runs: Path, trials: Path, k: int) -> dict[str, list[str]]:
    """What each kind of reader sees now (no recovery has run)."""
    from analysis.io import load

    seen = {}
    seen["pyarrow"] = _check_rows(
        pads.dataset(str(trials), format="parquet").to_table().to_pylist(), f"pyarrow k={k}"
    )
    glob_rows = [r for f in sorted(trials.glob("*.parquet")) for r in pq.read_table(f).to_pylist()]
    seen["glob"] = _check_rows(glob_rows, f"glob k={k}")
    if duckdb is not None:
        query = f"select * from read_parquet('{runs}/*/trials/*.parquet', union_by_name=true)"
        frame = duckdb.sql(query).df()
        seen["duckdb"] = _check_rows(frame.to_dict("records"), f"duckdb k={k}")
    for path in (runs, runs / "s1"):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # rows still in the log are announced
            frame = load(path)
        seen[f"load {path.name}"] = _check_rows(frame.to_dict("records"), f"load k={k}")
    seen["read_trials"] = _check_rows(read_trials(runs / "s1").to_pylist(), f"read_trials k={k}")
    return seen


def _run_until_done(
    tmp_path: Path, make: Callable[[str], BaseException], caught: type[BaseException]
) -> list[str]:
    kinds: list[str] = []
    for k in range(1, 400):
        runs = tmp_path / f"k{k}" / "runs"
        trials = runs / "s1" / "trials"
        _seed(trials)
        acked: list[str] = []
        with fault_at(k, make) as seen, suppress(caught):
            _workload(trials, acked)
        if len(seen) < k:  # the workload ran through: every step was tried
            assert sorted(read_trials(runs / "s1").column("trial_id").to_pylist()) == sorted(
                trial_id(n, 0) for n in range(10)
            )
            return kinds
        kinds.append(seen[-1])
        before = _readers(runs, trials, k)
        expected = {trial_id(n, 0) for n in range(3)} | set(acked)
        assert expected <= set(before["read_trials"]), f"k={k}: an acknowledged row is not read"
        TrialSink(trials).close()  # the next open recovers
        after = _check_rows(read_trials(runs / "s1").to_pylist(), f"recovered k={k}")
        attempted = expected | {trial_id(len(acked) + 3, 0)}
        assert expected <= set(after) <= attempted, f"k={k}: {sorted(after)}"
        plain = pads.dataset(str(trials), format="parquet").to_table()
        assert sorted(plain.column("trial_id").to_pylist()) == sorted(after)
        leftovers = [p.name for p in trials.iterdir() if p.name.startswith(".")]
        assert not leftovers, f"k={k}: {leftovers}"
        assert len(list((runs / "s1" / ".trials-gens").iterdir())) == 1
        shutil.rmtree(tmp_path / f"k{k}")
    raise AssertionError("the workload never finished")


def test_a_killed_writer_never_shows_a_duplicate_or_half_row(tmp_path: Path) -> None:
    kinds = _run_until_done(tmp_path, lambda step: Died(step), Died)
    # every kind of step was a kill point, including between the link swap and the removals
    assert {"write", "replace", "rename", "symlink", "fsync", "unlink", "rmdir"} <= set(kinds)
    assert len(kinds) >= 40


def test_disk_full_at_any_step_keeps_the_dataset_whole(tmp_path: Path) -> None:
    def full(step: str) -> OSError:
        return OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    kinds = _run_until_done(tmp_path, full, OSError)
    assert len(kinds) >= 40


def test_disk_full_errors_name_the_path_and_leave_no_temporary_file(tmp_path: Path) -> None:
    trials = tmp_path / "trials"
    sink = TrialSink(trials, flush_rows=1)
    sink.append(_row(0))
    write = pq.write_table

    def full(*args: Any, **kwargs: Any) -> None:
        raise OSError(errno.ENOSPC, "No space left on device")

    pq.write_table = full  # type: ignore[assignment]
    try:
        for _ in range(3):
            with pytest.raises(OSError, match=r"cannot write .*trials.*No space left"):
                sink.append(_row(1))
    finally:
        pq.write_table = write
    assert not [p for p in trials.iterdir() if p.name.startswith(".tmp-")]
    sink.close()
    ids = read_trials(trials).column("trial_id").to_pylist()
    assert sorted(ids) == ["0-0", "1-0"]  # the acknowledged row was kept in the log


def test_a_log_write_that_fails_leaves_no_half_line(tmp_path: Path) -> None:
    trials = tmp_path / "trials"
    sink = TrialSink(trials, flush_rows=100)
    sink.append(_row(0))
    fsync = os.fsync

    def full(fd: int) -> None:
        raise OSError(errno.ENOSPC, "No space left on device")

    os.fsync = full  # type: ignore[assignment]
    try:
        with pytest.raises(OSError, match=r"cannot append to .*_pending.jsonl"):
            sink.append(_row(1))
    finally:
        os.fsync = fsync
    sink.append(_row(2))
    del sink  # killed
    TrialSink(trials).close()
    assert sorted(read_trials(trials).column("trial_id").to_pylist()) == ["0-0", "2-0"]


def test_a_corrupt_part_file_is_named(tmp_path: Path) -> None:
    from orchestrator.errors import SetupError

    trials = tmp_path / "trials"
    with TrialSink(trials, flush_rows=1) as sink:
        sink.append(_row(0))
        sink.append(_row(1))
    bad = sorted(trials.glob("*.parquet"))[0]
    bad.write_bytes(b"PAR1 not really")
    with pytest.raises(SetupError, match=rf"{bad.name} is not a readable Parquet file.*move it"):
        read_trials(tmp_path)
    killed = TrialSink(trials, flush_rows=10)
    killed.append(_row(2))  # in the log only, and the process dies
    del killed
    with pytest.raises(SetupError, match=bad.name):
        TrialSink(trials)


def test_an_older_plain_trials_directory_becomes_a_generation_at_any_kill(tmp_path: Path) -> None:
    for k in range(1, 100):
        trials = tmp_path / f"k{k}" / "trials"
        trials.mkdir(parents=True)
        for n in range(3):  # an older study: plain files, one of them a merge of the others
            pq.write_table(_table([n]), trials / f"part-{n}.parquet")
        pq.write_table(_table([0, 1]), trials / "compact-9.parquet")  # a cut old compaction
        with fault_at(k, lambda step: Died(step)) as seen, suppress(Died):
            TrialSink(trials).close()
        TrialSink(trials).close()
        ids = _check_rows(read_trials(trials).to_pylist(), f"migrated k={k}")
        assert sorted(ids) == [trial_id(n, 0) for n in range(3)]
        assert trials.is_symlink()
        if len(seen) < k:
            assert k > 3  # the migration took several steps, each one a kill point
            return
    raise AssertionError("the migration never finished")


def _table(numbers: list[int]) -> Any:
    import pyarrow as pa

    return pa.Table.from_pylist([_row(n) for n in numbers])


def test_a_read_during_a_compaction_lists_again(tmp_path: Path, monkeypatch: Any) -> None:
    trials = tmp_path / "trials"
    sink = TrialSink(trials, flush_rows=1, max_files=100)
    for n in range(4):
        sink.append(_row(n))
    listing = sink_module.parquet_files
    calls = []

    def list_then_compact(directory: Path) -> list[Path]:
        files = listing(directory)
        calls.append(len(files))
        if len(calls) == 1:
            sink.compact()  # the writer merges and removes the files just listed
        return files

    monkeypatch.setattr(sink_module, "parquet_files", list_then_compact)
    ids = _check_rows(read_trials(tmp_path).to_pylist(), "during compaction")
    assert sorted(ids) == [trial_id(n, 0) for n in range(4)]
    assert calls[0] == 4 and calls[-1] == 1  # listed again after the merge
    sink.close()
