"""The study directory ``OUT/``: spec, run record, Optuna journal and the Parquet dataset.

Layout::

    OUT/spec.yaml          the validated spec (with command-line overrides applied)
    OUT/run.json           versions, git revision, storage, one entry per run/resume
    OUT/optuna.journal     Optuna's JournalStorage (open it with optuna-dashboard)
    OUT/trials/            the Parquet dataset, one row per trial attempt
"""

from __future__ import annotations

import contextlib
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import optuna
from optuna.storages import JournalStorage
from optuna.storages.journal import JournalFileBackend

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


class UnsyncedJournalFileBackend(JournalFileBackend):
    """Optuna's journal file without an fsync per operation.

    Each append still takes the file lock and reaches the OS before returning, so the journal
    survives a killed driver; only an operating-system crash can lose the last operations
    (which ``pathsweep study resume`` then re-runs). Skipping six fsyncs per trial keeps the
    driver's cost per trial in single milliseconds. The file format is unchanged:
    ``optuna-dashboard OUT/optuna.journal`` opens it.
    """

    def append_logs(self, logs: list[dict[str, Any]]) -> None:
        try:
            from optuna.storages.journal._file import get_lock_file
        except ImportError:  # another Optuna layout: keep its own (fsyncing) append
            super().append_logs(logs)
            return
        text = "\n".join(json.dumps(log, separators=(",", ":")) for log in logs) + "\n"
        with get_lock_file(self._lock), open(self._file_path, "ab") as handle:
            handle.write(text.encode("utf-8"))


def open_storage(out: Path, url: str | None) -> str | optuna.storages.BaseStorage:
    """The study's Optuna storage: ``url`` when given, else the journal file in ``out``."""
    if url:
        return url
    return JournalStorage(UnsyncedJournalFileBackend(str(out / JOURNAL_FILE)))


def check_new_out(out: Path) -> None:
    """A new study needs an absent or empty directory (resume uses an existing one).

    Raises:
        SetupError: ``out`` is a file or a non-empty directory.
    """
    if out.exists() and not out.is_dir():
        raise SetupError(f"--out {str(out)!r} is a file, not a directory")
    if out.is_dir() and any(out.iterdir()):
        raise SetupError(
            f"--out {str(out)!r} is not empty; choose a new directory or continue the study "
            f"with `pathsweep study resume {out}`"
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
