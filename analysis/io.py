"""Reading study results: Parquet rows, the study spec and the Optuna journal.

``analysis`` reads what the orchestrator wrote and nothing else (docs/design.md, the Parquet rows; columns in analysis/schema.py):
a study directory ``DIR`` holds ``DIR/trials/*.parquet`` (one dataset, one row per trial
attempt), ``DIR/spec.yaml`` and optionally ``DIR/optuna.journal``.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import pandas as pd
import pyarrow as pa
import pyarrow.dataset as ds
import pyarrow.parquet as pq
import yaml

PathLike = str | Path
SORT_KEYS = ("study", "optuna_number", "attempt", "trial_id")


def _as_paths(path_or_paths: PathLike | Iterable[PathLike]) -> list[Path]:
    if isinstance(path_or_paths, (str, Path)):
        return [Path(path_or_paths)]
    return [Path(p) for p in path_or_paths]


def _visible(path: Path) -> bool:
    # pyarrow's convention: files starting with "." or "_" are metadata or in-flight temp files.
    return not path.name.startswith((".", "_"))


def parquet_files(path: PathLike) -> list[Path]:
    """Parquet files of a study directory, a directory of studies, or a single file.

    Args:
        path: ``DIR`` (reads ``DIR/trials/*.parquet``), a directory holding several study
            directories (reads every ``*.parquet`` below it) or one Parquet file.

    Raises:
        FileNotFoundError: ``path`` does not exist.
    """
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"a study directory or Parquet file must exist, but got {str(path)!r}")
    if path.is_file():
        return [path]
    _warn_pending(path)
    trials = path / "trials"
    found = trials.glob("*.parquet") if trials.is_dir() else _walk_parquet(path)
    return sorted(p for p in found if p.is_file() and _visible(p))


def _walk_parquet(root: Path) -> Iterator[Path]:
    """``*.parquet`` below ``root``, through the ``trials`` links of study directories.

    Hidden directories are skipped: they hold the sink's unfinished or replaced generations
    (``.trials-gens/``), whose rows the ``trials`` link shows once already.
    """
    for dirpath, dirnames, filenames in os.walk(root, followlinks=True):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith((".", "_")))
        for name in filenames:
            if name.endswith(".parquet"):
                yield Path(dirpath) / name


def _warn_pending(path: Path) -> None:
    """Rows still in the sink's write-ahead log are not Parquet yet: say they are left out."""
    wal = (path / "trials" if (path / "trials").is_dir() else path) / "_pending.jsonl"
    if wal.is_file():
        with wal.open("rb") as handle:
            pending = sum(1 for line in handle if line.strip())
        if pending:
            warnings.warn(f"{pending} rows in {wal} are not yet written to Parquet and are not "
                          "analysed (the study is running, or was killed before a flush)",
                          stacklevel=3)


def study_dirs(path_or_paths: PathLike | Iterable[PathLike]) -> list[Path]:
    """The study directories (those holding ``trials/`` or ``spec.yaml``) behind the paths."""
    dirs: list[Path] = []
    for path in _as_paths(path_or_paths):
        if path.is_file():
            parent = path.parent
            dirs.append(parent.parent if parent.name == "trials" else parent)
        elif (path / "trials").is_dir() or (path / "spec.yaml").is_file():
            dirs.append(path)
        elif path.is_dir():
            dirs.extend(sorted({p.parent for p in path.rglob("spec.yaml")}))
    return list(dict.fromkeys(dirs))


def _study_name(file: Path) -> str:
    parent = file.parent
    return (parent.parent if parent.name == "trials" else parent).name


def _readable_schema(file: Path) -> pa.Schema | None:
    try:
        return pq.read_schema(file)
    except (OSError, pa.ArrowException) as err:
        warnings.warn(f"skipping corrupt or truncated Parquet file {file}: {err}", stacklevel=4)
        return None


def _read_dataset(files: list[Path], schema: pa.Schema) -> pa.Table:
    """One scan over all files; when a data page is corrupt, file by file, skipping the bad."""
    dataset = ds.dataset([str(f) for f in files], schema=schema, format="parquet")
    try:
        return dataset.to_table()
    except (OSError, pa.ArrowException):
        pass
    tables = []
    for file in files:
        try:
            tables.append(ds.dataset(str(file), schema=schema, format="parquet").to_table())
        except (OSError, pa.ArrowException) as err:
            warnings.warn(f"skipping corrupt Parquet file {file}: {err}", stacklevel=4)
    return pa.concat_tables(tables) if tables else schema.empty_table()


def _read_each(files: list[Path], err: Exception) -> pd.DataFrame:
    """Fallback when column types cannot be unified (e.g. a column is text in one study)."""
    warnings.warn(
        f"Parquet schemas could not be unified ({err}); reading files one by one, "
        "conflicting columns become object columns",
        stacklevel=4,
    )
    frames = []
    for file in files:
        try:
            frames.append(pq.read_table(file).to_pandas())
        except (OSError, pa.ArrowException) as read_err:
            warnings.warn(f"skipping corrupt Parquet file {file}: {read_err}", stacklevel=4)
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()


def _add_study(df: pd.DataFrame, files: list[Path], table: pa.Table | None) -> pd.DataFrame:
    if "study" in df.columns or df.empty:
        return df
    names = {_study_name(f) for f in files}
    if len(names) == 1:
        return df.assign(study=names.pop())
    if table is not None:  # several studies and no study column: fall back to file order
        warnings.warn("rows carry no 'study' column; naming studies by directory", stacklevel=3)
        per_file = [pq.read_metadata(f).num_rows for f in files]
        study = [name for f, n in zip(files, per_file, strict=True) for name in [_study_name(f)] * n]
        if len(study) == len(df):
            return df.assign(study=study)
    return df.assign(study=None)


def _sorted(df: pd.DataFrame) -> pd.DataFrame:
    keys = [k for k in SORT_KEYS if k in df.columns]
    if not keys or df.empty:
        return df.reset_index(drop=True)
    return df.sort_values(keys, kind="stable", na_position="last").reset_index(drop=True)


def load(path_or_paths: PathLike | Iterable[PathLike]) -> pd.DataFrame:
    """Load the trial rows of one or several studies into one DataFrame.

    Schemas are unified across files and studies (``pyarrow.unify_schemas`` with permissive
    promotion: int columns meeting float columns become float, a column missing from a study
    is null there). A corrupt or truncated file is skipped with a ``warnings.warn`` naming it.

    Args:
        path_or_paths: study directories (``DIR/trials/*.parquet``), directories of studies, or
            Parquet files; one or an iterable of them.

    Returns:
        One row per trial attempt, sorted by study, Optuna number and attempt. Empty (no
        columns) when there are no rows.

    Raises:
        FileNotFoundError: a path does not exist.
    """
    for _ in range(3):
        files = [f for p in _as_paths(path_or_paths) for f in parquet_files(p)]
        files = list(dict.fromkeys(files))
        frame = _load_files(files)
        if all(f.exists() for f in files):
            return frame
        # a writer compacted the study while we read: its rows are in the new files
    return frame


def _load_files(files: list[Path]) -> pd.DataFrame:
    schemas = {f: _readable_schema(f) for f in files}
    good = [f for f, s in schemas.items() if s is not None]
    if not good:
        return pd.DataFrame()
    try:
        schema = pa.unify_schemas([s for s in schemas.values() if s is not None],
                                  promote_options="permissive")
    except (pa.ArrowTypeError, pa.ArrowInvalid) as err:
        return _sorted(_add_study(_read_each(good, err), good, None))
    table = _read_dataset(good, schema)
    return _sorted(_add_study(table.to_pandas(), good, table))


def load_specs(path_or_paths: PathLike | Iterable[PathLike]) -> dict[str, dict[str, Any]]:
    """The ``spec.yaml`` of each study directory, keyed by study name.

    The name is the spec's ``study:`` value, else the directory name. Unreadable specs are
    skipped with a warning; studies without a spec are absent from the result.
    """
    specs: dict[str, dict[str, Any]] = {}
    for directory in study_dirs(path_or_paths):
        file = directory / "spec.yaml"
        if not file.is_file():
            continue
        try:
            spec = yaml.safe_load(file.read_text())
        except (OSError, yaml.YAMLError) as err:
            warnings.warn(f"skipping unreadable study spec {file}: {err}", stacklevel=2)
            continue
        if isinstance(spec, dict):
            specs[str(spec.get("study") or directory.name)] = spec | {"_dir": str(directory)}
    return specs
