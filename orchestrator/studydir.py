"""The study directory ``OUT/``: spec, run record, Optuna journal and the Parquet dataset.

Layout::

    OUT/spec.yaml          the validated spec (with command-line overrides applied)
    OUT/run.json           versions, git revision, storage, one entry per run/resume
    OUT/optuna.journal     Optuna's JournalStorage (open it with optuna-dashboard)
    OUT/trials/            the Parquet dataset, one row per trial attempt (a link to a
                           generation in OUT/.trials-gens/, see orchestrator.sink)
    OUT/.pathsweep.lock    the lock of the driver working on the study (pid and host)
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import platform
import socket
import subprocess
import sys
import tempfile
import time
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import optuna
from optuna.storages import JournalStorage
from optuna.storages.journal import BaseJournalBackend

from orchestrator.errors import SetupError
from orchestrator.redaction import mask_url, redact
from orchestrator.spec import StudySpec, dump_spec, load_spec

SPEC_FILE = "spec.yaml"
RUN_FILE = "run.json"
JOURNAL_FILE = "optuna.journal"
TRIALS_DIR = "trials"


def pathsweep_version() -> str:
    """The installed ``pathsweep`` version (the source tree's when not installed)."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("pathsweep")
    except PackageNotFoundError:
        from orchestrator import __version__

        return __version__


def versions() -> dict[str, str]:
    """Versions of Python and of the packages a study's numbers depend on."""
    import pyarrow
    import ray
    import torch

    return {
        "python": platform.python_version(),
        "pathsweep": pathsweep_version(),
        "torch": torch.__version__,
        "ray": ray.__version__,
        "optuna": optuna.__version__,
        "pyarrow": pyarrow.__version__,
    }


def git_revision() -> str | None:
    """The git commit of the pathsweep source tree (``+dirty`` if modified), when there is one."""
    here = Path(__file__).resolve().parent
    try:
        rev = subprocess.run(
            ["git", "-C", str(here), "rev-parse", "HEAD"],
            capture_output=True,
            text=True,
            timeout=5,
            check=True,
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "-C", str(here), "status", "--porcelain", "--untracked-files=no"],
            capture_output=True,
            text=True,
            timeout=5,
            check=True,
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return None
    return f"{rev}+dirty" if dirty else rev


class JournalRepaired(UserWarning):
    """The journal's last record was cut (a crash mid-append) and has been dropped."""


def _journal_damaged(path: Path, offset: int, line: int) -> SetupError:
    return SetupError(
        f"{path} is damaged: line {line} (byte offset {offset}) is not a whole JSON record. "
        f"To recover, keep the records before it: `truncate -s {offset} {path}`, then "
        f"`pathsweep study resume {path.parent}` (trials after it that have rows in "
        f"{path.parent / TRIALS_DIR} are restored from them)"
    )


class JournalFile(BaseJournalBackend):
    """Optuna's journal file (one JSON operation per line), through Optuna's public backend API.

    The format is Optuna's own (``optuna-dashboard OUT/optuna.journal`` opens it). Appends are
    one ``write`` each, without an fsync: the rows (fsynced, ``orchestrator.sink``) are the
    record of what finished, and ``pathsweep study resume`` restores trials whose last journal
    records were lost from them. Only one process appends: the driver holding the study lock
    (:func:`study_lock`). A reader never consumes a last line without its newline (an append in
    progress, or cut by a crash; :func:`repair_journal` drops the latter).
    """

    def __init__(self, path: str | Path) -> None:
        self._path = Path(path)
        self._offset = 0  # bytes consumed (whole lines only)
        self._count = 0  # records consumed

    def read_logs(self, log_number_from: int) -> list[dict[str, Any]]:
        """Records number ``log_number_from`` on (Optuna reads them in order)."""
        if log_number_from < self._count:
            self._offset = self._count = 0
        try:
            with self._path.open("rb") as handle:
                handle.seek(self._offset)
                data = handle.read()
        except FileNotFoundError:
            return []
        whole = data[: data.rfind(b"\n") + 1]
        logs = []
        offset = self._offset
        for line in whole.splitlines(keepends=True):
            if line.strip():
                try:
                    log = json.loads(line)
                except ValueError:
                    raise _journal_damaged(self._path, offset, self._count + 1) from None
                if self._count >= log_number_from:
                    logs.append(log)
                self._count += 1
            offset += len(line)
        self._offset = offset
        return logs

    def append_logs(self, logs: list[dict[str, Any]]) -> None:
        """Append records in one write; on an error the file is left as it was."""
        text = "".join(json.dumps(log, separators=(",", ":")) + "\n" for log in logs).encode()
        fd = os.open(self._path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        try:
            size = os.fstat(fd).st_size
            try:
                done = 0
                while done < len(text):
                    done += os.write(fd, text[done:])
            except OSError as exc:
                with contextlib.suppress(OSError):
                    os.ftruncate(fd, size)
                text_err = os.strerror(exc.errno) if exc.errno else str(exc)
                raise OSError(exc.errno, f"cannot append to {self._path}: {text_err}") from None
        finally:
            os.close(fd)


def repair_journal(path: Path) -> int | None:
    """Drop a cut last record (a crash mid-append) so that new records start on a fresh line.

    Call it only while holding the study lock (a live driver's append looks like a cut one).
    Warns :class:`JournalRepaired` naming the byte offset.

    Returns:
        The offset the file was cut at, or None when it was whole.
    """
    try:
        handle = path.open("rb+")
    except FileNotFoundError:
        return None
    with handle:
        size = handle.seek(0, os.SEEK_END)
        cut = 0
        position = size
        while position > 0:  # find the last newline, reading backwards
            step = min(1 << 16, position)
            position -= step
            handle.seek(position)
            chunk = handle.read(step)
            found = chunk.rfind(b"\n")
            if found >= 0:
                cut = position + found + 1
                break
        if cut == size:
            return None
        handle.truncate(cut)
        handle.flush()
        os.fsync(handle.fileno())
    warnings.warn(
        f"{path}: dropped the last {size - cut} bytes, a record cut by a crash, at byte offset "
        f"{cut}; the trial it belonged to is restored from the rows or run again",
        JournalRepaired,
        stacklevel=2,
    )
    return cut


def open_storage(
    out: Path, url: str | None, *, repair: bool = False
) -> optuna.storages.BaseStorage:
    """The study's Optuna storage: ``url`` when given, else the journal file in ``out``.

    Args:
        out: the study directory.
        url: an Optuna storage URL, or None for ``OUT/optuna.journal``.
        repair: drop a cut last journal record first (only under the study lock).

    Raises:
        SetupError: the journal is damaged beyond a cut last record (says how to recover).
    """
    if url:
        return optuna.storages.get_storage(url)
    path = out / JOURNAL_FILE
    if repair:
        repair_journal(path)
    return JournalStorage(JournalFile(path))


# ----------------------------------------------------------------------------- the study lock

LOCK_FILE = ".pathsweep.lock"
_HELD: dict[Path, list[int]] = {}  # lock file -> [fd, depth], for this process


def lock_holder(out: Path) -> str | None:
    """``"pid P on host H"`` of another process holding the study lock; None when none does."""
    path = out / LOCK_FILE
    if path.resolve() in _HELD:
        return None
    try:
        fd = os.open(path, os.O_RDONLY)
    except FileNotFoundError:
        return None
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            return _holder_text(fd)
        fcntl.flock(fd, fcntl.LOCK_UN)
        return None
    finally:
        os.close(fd)


def _holder_text(fd: int) -> str:
    words = os.pread(fd, 256, 0).decode("utf-8", "replace").split()
    pid, host = [*words, "?", "?"][:2]
    return f"pid {pid} on host {host}"


@contextlib.contextmanager
def study_lock(out: Path) -> Iterator[None]:
    """Hold the study directory's lock: one driver per study (an OS lock, ``flock``).

    The lock file ``OUT/.pathsweep.lock`` holds the driver's pid and host; the lock goes with
    the process, also when it is killed. Re-entrant within one process. Creates ``out``.

    Raises:
        SetupError: another process holds the lock (names its pid and host).
    """
    out.mkdir(parents=True, exist_ok=True)
    path = (out / LOCK_FILE).resolve()
    held = _HELD.get(path)
    if held is not None:
        held[1] += 1
        try:
            yield
        finally:
            held[1] -= 1
        return
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    for tries in range(5):  # `study status` probes the lock for an instant: try again shortly
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            break
        except BlockingIOError:
            if tries < 4:
                time.sleep(0.05)
    else:
        holder = _holder_text(fd)
        os.close(fd)
        raise SetupError(
            f"{out} is in use by another pathsweep driver ({holder}); wait for it to finish "
            "or stop it, then `pathsweep study resume`"
        ) from None
    os.ftruncate(fd, 0)
    os.pwrite(fd, f"{os.getpid()} {socket.gethostname()}\n".encode(), 0)
    _HELD[path] = [fd, 1]
    try:
        yield
    finally:
        del _HELD[path]
        fcntl.flock(fd, fcntl.LOCK_UN)
        os.close(fd)


def check_new_out(out: Path) -> None:
    """A new study needs an absent or empty directory (resume uses an existing one).

    Raises:
        SetupError: ``out`` is a file, is locked by another driver (naming it), holds a study
            (say: resume it) or is another non-empty directory.
    """
    if out.exists() and not out.is_dir():
        raise SetupError(f"--out {str(out)!r} is a file, not a directory")
    holder = lock_holder(out) if out.is_dir() else None
    if holder is not None:
        raise SetupError(f"{out} is in use by another pathsweep driver ({holder})")
    if not out.is_dir() or not any(p.name != LOCK_FILE for p in out.iterdir()):
        return
    if (out / SPEC_FILE).is_file() and (out / RUN_FILE).is_file():
        raise SetupError(
            f"--out {str(out)!r} holds a study already; continue it with "
            f"`pathsweep study resume {out}`, or choose a new directory"
        )
    raise SetupError(
        f"--out {str(out)!r} is not empty and is not a study directory; "
        "choose a new or empty directory"
    )


def check_study_dir(out: Path) -> None:
    """``out`` must be a study directory (for resume and status).

    Raises:
        SetupError: the spec or run record is missing.
    """
    for name in (SPEC_FILE, RUN_FILE):
        if not (out / name).is_file():
            raise SetupError(f"{str(out)!r} is not a study directory: {name} is missing")


def _umask() -> int:
    """The process's umask, read without changing it (``os.umask`` would, for every thread)."""
    try:
        with open("/proc/self/status", encoding="ascii") as status:
            for line in status:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError):
        pass
    mask = os.umask(0o077)  # no /proc: the brief change errs on the private side
    os.umask(mask)
    return mask


def _write_json(path: Path, data: dict[str, Any]) -> None:
    """Replace ``path`` atomically (a reader sees the old or the new file, never a part) with the
    mode a plain ``open`` would give it (0666 less the umask)."""
    fd, tmp = tempfile.mkstemp(prefix=".tmp-", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            json.dump(data, handle, indent=2, default=str)
            handle.flush()
            os.fchmod(handle.fileno(), 0o666 & ~_umask())
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


def read_run(out: Path) -> dict[str, Any]:
    """The run record ``OUT/run.json``."""
    data: dict[str, Any] = json.loads((out / RUN_FILE).read_text(encoding="utf-8"))
    return data


def create_study_dir(out: Path, spec: StudySpec, storage: str | None) -> None:
    """Write ``spec.yaml`` and ``run.json`` of a new study."""
    out.mkdir(parents=True, exist_ok=True)
    (out / SPEC_FILE).write_text(dump_spec(spec), encoding="utf-8")
    _write_json(
        out / RUN_FILE,
        {
            "study": spec.study,
            "created_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            "storage": mask_url(storage),
            "versions": versions(),
            "git_revision": git_revision(),
            "runs": [],
        },
    )


def close_stale_runs(out: Path) -> None:
    """Mark run entries still ``running`` as ``stopped`` (call it holding the study lock).

    A driver that was killed, or could not write its last record (disk full), leaves its entry
    ``running``; with the lock held no driver runs, so the entry is stale.
    """
    data = read_run(out)
    runs = data.get("runs", [])
    if any(r.get("status") == "running" for r in runs):
        data["runs"] = [
            {**r, "status": "stopped"} if r.get("status") == "running" else r for r in runs
        ]
        _write_json(out / RUN_FILE, data)


def record_run(out: Path, entry: dict[str, Any]) -> None:
    """Append (or update, by ``entry["id"]``) one run entry in ``run.json``."""
    data = read_run(out)
    runs = [r for r in data.get("runs", []) if r.get("id") != entry.get("id")]
    data["runs"] = [*runs, entry]
    _write_json(out / RUN_FILE, data)


def load_study_dir(out: Path) -> tuple[StudySpec, dict[str, Any]]:
    """The spec and run record of an existing study directory."""
    check_study_dir(out)
    return load_spec(out / SPEC_FILE), read_run(out)


def command_line() -> str:
    """How this process was started (for the run record), secrets of URLs masked."""

    def masked(arg: str) -> str:
        option, eq, value = arg.partition("=")
        if eq and option.startswith("-"):
            return f"{option}={mask_url(value)}"
        return mask_url(arg) or arg

    return redact(" ".join(["pathsweep", *map(masked, sys.argv[1:])]))
