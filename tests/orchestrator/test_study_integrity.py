"""A study directory under faults: damaged journals, a second driver, corrupt files, status.

None of these tests starts Ray: a resume whose trials are all accounted for finishes (or
refuses) before it needs workers.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import textwrap
from collections import Counter
from pathlib import Path

import optuna
import pytest
from optuna.trial import TrialState

from orchestrator.cli import main
from orchestrator.driver import run_study
from orchestrator.errors import SetupError
from orchestrator.rows import declared_schema, trial_id
from orchestrator.sink import TrialSink, read_trials
from orchestrator.spec import StudySpec
from orchestrator.studydir import (
    JOURNAL_FILE,
    RUN_FILE,
    TRIALS_DIR,
    JournalRepaired,
    create_study_dir,
    open_storage,
    record_run,
    study_lock,
)
from orchestrator.trial import SleepTrial, make_config, resolve_params

from .helpers import small_spec, wait_for

ROOT = Path(__file__).resolve().parents[2]


def _make_study(out: Path, spec: StudySpec, told: int) -> None:
    """``told`` trials asked, run (SleepTrial), written as rows and told, like a driver does."""
    create_study_dir(out, spec, None)
    study = optuna.create_study(
        study_name=spec.study, storage=open_storage(out, None), direction="maximize"
    )
    dists = spec.search.distributions()
    fn = SleepTrial(0.0)
    with TrialSink(out / TRIALS_DIR, declared_schema(spec), flush_rows=2) as sink:
        for _ in range(told):
            trial = study.ask(dists)
            params = resolve_params(trial.params, spec.search.fixed())
            metrics = fn(make_config(spec, trial.number, 0, params)).metrics
            sink.append(
                {
                    "study": spec.study,
                    "trial_id": trial_id(trial.number, 0),
                    "optuna_number": trial.number,
                    "attempt": 0,
                    "phase": "search",
                    "state": "COMPLETE",
                    "retry": False,
                    **{f"param_{k}": v for k, v in params.items()},
                    **metrics,
                }
            )
            study.tell(trial, metrics["log_path_kernel_trace"])


def _trials(out: Path, spec: StudySpec) -> list[optuna.trial.FrozenTrial]:
    study = optuna.load_study(study_name=spec.study, storage=open_storage(out, None))
    return study.get_trials(deepcopy=False)


def _assert_rows_match_journal(out: Path, spec: StudySpec) -> None:
    rows = read_trials(out).to_pylist()
    ids = [r["trial_id"] for r in rows]
    assert len(ids) == len(set(ids))
    by_number = {t.number: t for t in _trials(out, spec)}
    for row in rows:
        trial = by_number[row["optuna_number"]]
        assert trial.state == TrialState.COMPLETE
        assert trial.params == {k: row[f"param_{k}"] for k in trial.params}
        assert trial.values == [row["log_path_kernel_trace"]]


def test_a_cut_journal_tail_is_dropped_with_its_offset_and_resume_keeps_it_readable(
    tmp_path: Path,
) -> None:
    spec = small_spec(trials=4)
    out = tmp_path / "study"
    _make_study(out, spec, 4)
    journal = out / JOURNAL_FILE
    whole = journal.read_bytes()
    cut = len(whole) - 7  # a crash in the middle of the last append (the last tell)
    journal.write_bytes(whole[:cut])
    keep = whole.rfind(b"\n", 0, cut) + 1
    assert [t.state for t in _trials(out, spec)][-1] == TrialState.RUNNING  # readers skip it
    with pytest.warns(JournalRepaired, match=rf"at byte offset {keep}\b"):
        summary = run_study(spec, out, resume=True, trial_fn=SleepTrial(0.0))
    assert summary.complete == 4
    assert journal.read_bytes().startswith(whole[:keep])
    _assert_rows_match_journal(out, spec)


def test_a_damaged_journal_middle_is_refused_with_how_to_recover(tmp_path: Path) -> None:
    spec = small_spec(trials=3)
    out = tmp_path / "study"
    _make_study(out, spec, 3)
    journal = out / JOURNAL_FILE
    lines = journal.read_bytes().splitlines(keepends=True)
    offset = sum(len(line) for line in lines[:5])
    damaged = b"".join([*lines[:5], lines[5][:9], *lines[5:]])  # what an append onto a cut does
    journal.write_bytes(damaged)
    with pytest.raises(SetupError, match=rf"byte offset {offset}\).*truncate -s {offset} "):
        run_study(spec, out, resume=True, trial_fn=SleepTrial(0.0))
    assert journal.read_bytes() == damaged  # never made worse


def test_lost_journal_records_are_restored_from_the_rows_not_reused(tmp_path: Path) -> None:
    spec = small_spec(trials=5)
    out = tmp_path / "study"
    _make_study(out, spec, 5)
    journal = out / JOURNAL_FILE
    lines = journal.read_bytes().splitlines(keepends=True)
    while len(_trials(out, spec)) > 2:  # the last records never reached the disk
        lines.pop()
        journal.write_bytes(b"".join(lines))
    summary = run_study(spec, out, resume=True, trial_fn=SleepTrial(0.0))
    assert summary.complete == 5
    trials = _trials(out, spec)
    assert [t.number for t in trials] == [0, 1, 2, 3, 4]  # the next ask gets number 5
    _assert_rows_match_journal(out, spec)


def test_a_corrupt_parquet_file_is_named_by_resume_and_status(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    spec = small_spec(trials=4)
    out = tmp_path / "study"
    _make_study(out, spec, 4)
    bad = sorted((out / TRIALS_DIR).glob("*.parquet"))[0]
    bad.write_bytes(b"PAR1" + bytes(100))
    with pytest.raises(SetupError, match=rf"{bad.name} is not a readable Parquet file"):
        run_study(spec, out, resume=True, trial_fn=SleepTrial(0.0))
    assert main(["study", "status", str(out)]) == 0
    text = capsys.readouterr().out
    assert "trials: 4/4 COMPLETE" in text and f"rows: cannot be read: {bad}" in text


_HOLDER = textwrap.dedent(
    """
    import sys, time
    from pathlib import Path
    from orchestrator.studydir import study_lock
    with study_lock(Path(sys.argv[1])):
        print("held", flush=True)
        time.sleep(120)
    """
)


def _hold(out: Path) -> subprocess.Popen[str]:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.Popen(
        [sys.executable, "-c", _HOLDER, str(out)], cwd=ROOT, env=env, stdout=subprocess.PIPE,
        text=True,
    )
    assert proc.stdout is not None and proc.stdout.readline().strip() == "held"
    return proc


def test_one_driver_per_study_directory(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    spec_file = tmp_path / "spec.yaml"
    spec_file.write_text("study: test-lock\nmodel: {name: fc, width: 8, depth: 2}\n"
                         "data: {name: digits}\ndensity: 0.1\nsearch: {iterations: {low: 1, "
                         "high: 2}}\nsampler: random\ntrials: 2\nworkers: 1\n")
    empty = tmp_path / "empty"
    study = tmp_path / "study"
    _make_study(study, small_spec(trials=2), 2)
    holders = [_hold(empty), _hold(study)]
    try:
        expected = rf"in use by another pathsweep driver \(pid {{}} on host {socket.gethostname()}"
        capsys.readouterr()
        # a second `run` into an --out another run is preparing: exit 2, names the holder
        assert main(["study", "run", str(spec_file), "--out", str(empty)]) == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1
        assert __import__("re").search(expected.format(holders[0].pid), err), err
        assert main(["study", "resume", str(study)]) == 2
        err = capsys.readouterr().err
        assert __import__("re").search(expected.format(holders[1].pid), err), err
        assert [p.name for p in empty.iterdir()] == [".pathsweep.lock"]  # nothing written
        with pytest.raises(SetupError, match=str(holders[1].pid)):
            run_study(small_spec(trials=2), study, resume=True, trial_fn=SleepTrial(0.0))
    finally:
        for proc in holders:
            proc.send_signal(signal.SIGKILL)
            proc.wait(30)
    with study_lock(study):  # a killed holder's lock goes with it
        pass


def test_status_imports_neither_ray_nor_torch_and_reports_a_stopped_driver(
    tmp_path: Path,
) -> None:
    spec = small_spec(trials=4)
    out = tmp_path / "study"
    _make_study(out, spec, 3)
    record_run(out, {"id": 0, "status": "running", "started_at": "t0", "resume": False})
    script = textwrap.dedent(
        """
        import sys
        from orchestrator.cli import main
        code = main(["study", "status", sys.argv[1]])
        print("imported:", sorted(m for m in ("torch", "ray") if m in sys.modules))
        sys.exit(code)
        """
    )
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    done = subprocess.run(
        [sys.executable, "-c", script, str(out)], cwd=ROOT, env=env, capture_output=True,
        text=True, timeout=120,
    )
    assert done.returncode == 0, done.stderr
    assert "imported: []" in done.stdout
    assert "trials: 3/4 COMPLETE" in done.stdout
    assert "last run: stopped without a record of why" in done.stdout


def test_status_survives_a_damaged_journal(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    spec = small_spec(trials=3)
    out = tmp_path / "study"
    _make_study(out, spec, 3)
    journal = out / JOURNAL_FILE
    journal.write_bytes(journal.read_bytes() + b'{"op_code": 5, "wor')  # cut append: skipped
    assert main(["study", "status", str(out)]) == 0
    assert "trials: 3/3 COMPLETE" in capsys.readouterr().out
    journal.write_bytes(journal.read_bytes() + b"\n{}\n")
    lines = journal.read_bytes().splitlines(keepends=True)
    journal.write_bytes(b"".join([*lines[:3], b"garbage\n", *lines[3:]]))
    assert main(["study", "status", str(out)]) == 0
    text = capsys.readouterr().out
    assert "trials: the journal cannot be read:" in text and "truncate -s" in text
    assert "rows: 3 (3 COMPLETE" in text


def test_resume_marks_a_killed_run_stopped(tmp_path: Path) -> None:
    spec = small_spec(trials=2)
    out = tmp_path / "study"
    _make_study(out, spec, 2)
    record_run(out, {"id": 0, "status": "running", "started_at": "t0", "resume": False})
    from orchestrator.studydir import close_stale_runs

    with study_lock(out):
        close_stale_runs(out)
    runs = json.loads((out / RUN_FILE).read_text())["runs"]
    assert [r["status"] for r in runs] == ["stopped"]
    assert Counter(t.state for t in _trials(out, spec)) == {TrialState.COMPLETE: 2}
    assert wait_for(lambda: True, 1)


@pytest.mark.ray
@pytest.mark.timeout(180)
def test_a_resume_after_lost_journal_records_asks_new_numbers(
    ray_local: None, tmp_path: Path
) -> None:
    spec = small_spec(trials=5)
    out = tmp_path / "study"
    _make_study(out, spec, 5)
    journal = out / JOURNAL_FILE
    lines = journal.read_bytes().splitlines(keepends=True)
    while len(_trials(out, spec)) > 3:
        lines.pop()
        journal.write_bytes(b"".join(lines))
    more = small_spec(trials=7)
    summary = run_study(more, out, resume=True, trial_fn=SleepTrial(0.0), poll_s=0.05)
    assert summary.complete == 7
    assert [t.number for t in _trials(out, more)] == list(range(7))
    _assert_rows_match_journal(out, more)  # 5 and 6 are new numbers, 3 and 4 kept their rows
