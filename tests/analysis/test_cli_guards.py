"""``pathsweep analyze`` refuses what is not a study, and never overwrites a directory that is
not one of its own reports."""

from __future__ import annotations

from pathlib import Path

import pytest

from analysis.cli import REPORT_MARKER, main


def _one_line_exit_2(argv: list[str], capsys: pytest.CaptureFixture[str]) -> str:
    assert main(argv) == 2
    captured = capsys.readouterr()
    assert captured.err.count("\n") == 1 and "Traceback" not in captured.err
    return captured.err


def test_an_empty_directory_is_not_a_study(tmp_path: Path,
                                           capsys: pytest.CaptureFixture[str]) -> None:
    err = _one_line_exit_2([str(tmp_path)], capsys)
    assert "is not a pathsweep study directory" in err and str(tmp_path) in err


def test_a_directory_of_other_files_is_not_a_study(tmp_path: Path,
                                                   capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "notes.txt").write_text("hello")
    (tmp_path / "sub").mkdir()
    err = _one_line_exit_2([str(tmp_path), "--report", str(tmp_path / "r")], capsys)
    assert "is not a pathsweep study directory" in err
    assert not (tmp_path / "r").exists()


def test_report_refuses_a_foreign_non_empty_directory(synthetic_study: Path, tmp_path: Path,
                                                      capsys: pytest.CaptureFixture[str]) -> None:
    foreign = tmp_path / "mine"
    (foreign / "tables").mkdir(parents=True)
    (foreign / "report.md").write_text("my own notes")
    (foreign / "tables" / "data.csv").write_text("a,b\n1,2\n")
    err = _one_line_exit_2([str(synthetic_study), "--report", str(foreign), "--no-figures",
                            "--resamples", "0"], capsys)
    assert "is not empty and is not a pathsweep report" in err
    assert (foreign / "report.md").read_text() == "my own notes"
    assert sorted(p.name for p in foreign.rglob("*")) == ["data.csv", "report.md", "tables"]
    # a study directory given as its own report directory is refused the same way
    _one_line_exit_2([str(synthetic_study), "--report", str(synthetic_study)], capsys)
    file = tmp_path / "file"
    file.write_text("x")
    assert "is a file" in _one_line_exit_2([str(synthetic_study), "--report", str(file)], capsys)


def test_report_overwrites_its_own_earlier_report(synthetic_study: Path, tmp_path: Path,
                                                  capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "report"
    args = [str(synthetic_study), "--report", str(out), "--no-figures", "--resamples", "0"]
    assert main(args) == 0
    assert (out / REPORT_MARKER).is_file() and (out / "report.md").is_file()
    (out / "report.md").write_text("stale")
    assert main(args) == 0
    assert (out / "report.md").read_text() != "stale"
    empty = tmp_path / "empty"
    empty.mkdir()
    assert main([str(synthetic_study), "--report", str(empty), "--no-figures",
                 "--resamples", "0"]) == 0
