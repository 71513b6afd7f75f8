"""The report and ``pathsweep analyze``: synthetic studies, a real trained study, edge cases."""

from __future__ import annotations

import re
from pathlib import Path

import pandas as pd
import pytest

import analysis
from analysis import plots
from analysis.cli import main
from analysis.report import build_report

PNG = b"\x89PNG\r\n\x1a\n"


def _links(report: Path) -> list[str]:
    return re.findall(r"\]\(((?:figures|tables)/[^)]+)\)", report.read_text())


def _check_links(report: Path) -> None:
    links = _links(report)
    assert links
    for link in links:
        target = report.parent / link
        assert target.is_file(), link
        if link.endswith(".png"):
            assert target.read_bytes()[:8] == PNG


@pytest.mark.slow
def test_report_from_synthetic_studies(synthetic_study: Path, untrained_study: Path,
                                       tmp_path: Path) -> None:
    report = build_report([synthetic_study, untrained_study], tmp_path / "out", n_resamples=30)
    text = report.read_text()
    for heading in ("# pathsweep analysis report", "## Do data-free statistics predict training?",
                    "## Validation", "## Method tables", "## Layer collapse",
                    "### Parameter importances: syn", "### Pareto front: free"):
        assert heading in text
    assert "| log_path_kernel_trace |" in text and "random_score" in text
    _check_links(report)
    corr = pd.read_csv(tmp_path / "out" / "tables" / "correlations.csv")
    assert set(corr["target"]) >= {"test_accuracy", "train_loss_auc"}
    assert (tmp_path / "out" / "figures" / "pareto_free.png").is_file()


def test_report_without_figures_has_no_images(synthetic_study: Path, tmp_path: Path) -> None:
    report = build_report(synthetic_study, tmp_path / "out", figures=False, n_resamples=20)
    assert "![" not in report.read_text()
    assert not (tmp_path / "out" / "figures").exists()


@pytest.mark.slow
def test_report_from_a_real_trained_study(real_study: Path, tmp_path: Path) -> None:
    df = analysis.load(real_study)
    assert len(df) == 8 and df["test_accuracy"].between(0, 1).all()
    report = build_report(real_study, tmp_path / "out", n_resamples=200)
    text = report.read_text()
    assert "## Do data-free statistics predict training?" in text
    # Groups name the experiment and the training length (rows of other phases or lengths
    # are never pooled), and each density stands beside the pooled group.
    assert "### model=fc, dataset=digits, experiment=search, train_epochs=2, density=0.01" in text
    assert "density=all (pooled)" in text
    corr = pd.read_csv(tmp_path / "out" / "tables" / "correlations.csv")
    trace = corr[(corr["predictor"] == "log_path_kernel_trace") & (corr["target"] == "test_accuracy")]
    assert sorted(trace["n"]) == [4, 4, 8]
    assert "mean ± std over seeds" in text or "(n=2 seeds)" in text
    methods = pd.read_csv(tmp_path / "out" / "tables" / "method_test_accuracy.csv")
    assert set(methods["pruner"]) == {"synflow", "magnitude"} and (methods["n"] == 2).all()
    assert (methods["over"] == "seeds").all()  # 2 seeds of each configuration
    critical = pd.read_csv(tmp_path / "out" / "tables" / "critical_compression.csv")
    assert set(critical["pruner"]) == {"synflow", "magnitude"}
    assert (tmp_path / "out" / "figures" / "layer_density.png").is_file()
    _check_links(report)


def test_figures_label_axes_and_use_log_compression(synthetic_study: Path) -> None:
    df = analysis.load(synthetic_study)
    ax = plots.method_curves_figure(analysis.method_summary(df), "test_accuracy").axes[0]
    assert ax.get_xscale() == "log" and "compression" in ax.get_xlabel()
    assert "test_accuracy" in ax.get_ylabel()
    rates = analysis.collapse.collapse_rate(df)
    ax = plots.collapse_rates_figure(rates, analysis.critical_compression(df)).axes[0]
    assert ax.get_xscale() == "log" and ax.get_ylabel()
    ax = plots.layer_density_heatmap_figure(analysis.layer_density_table(df)).axes[0]
    assert ax.get_xlabel() and ax.get_ylabel()
    ax = plots.scatter_figure(df, "log_path_kernel_trace", "test_accuracy").axes[0]
    assert (ax.get_xlabel(), ax.get_ylabel()) == ("log_path_kernel_trace", "test_accuracy")


def test_cli_prints_tables_and_writes_report(synthetic_study: Path, tmp_path: Path,
                                             capsys: pytest.CaptureFixture[str]) -> None:
    code = main([str(synthetic_study), "--report", str(tmp_path / "out"), "--resamples", "20",
                 "--no-figures"])
    out = capsys.readouterr().out
    assert code == 0
    assert "Rank correlation with test_accuracy" in out and "Critical compression" in out
    assert "Validation" in out and "Report written to" in out
    assert (tmp_path / "out" / "report.md").is_file()


def test_cli_empty_study_says_so_and_exits_0(tmp_path: Path,
                                             capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "empty" / "trials").mkdir(parents=True)
    assert main([str(tmp_path / "empty"), "--report", str(tmp_path / "out")]) == 0
    assert "No trial rows" in capsys.readouterr().out
    assert "No trial rows found" in (tmp_path / "out" / "report.md").read_text()


def test_cli_untrained_study_says_what_is_missing(untrained_study: Path, tmp_path: Path,
                                                  capsys: pytest.CaptureFixture[str]) -> None:
    assert main([str(untrained_study), "--report", str(tmp_path / "out"), "--no-figures"]) == 0
    out = capsys.readouterr().out
    assert "No trained metrics" in out and "Critical compression" in out
    text = (tmp_path / "out" / "report.md").read_text()
    assert "No trained metrics" in text and "log_path_kernel_trace" in text


def test_cli_missing_dir_is_one_line_exit_2(tmp_path: Path,
                                           capsys: pytest.CaptureFixture[str]) -> None:
    assert main([str(tmp_path / "nope")]) == 2
    captured = capsys.readouterr()
    assert captured.err.count("\n") == 1 and "nope" in captured.err
    assert "Traceback" not in captured.err
    assert main(["--resamples", "-1", str(tmp_path)]) == 2


def test_cli_corrupt_file_warns_on_stderr_and_reports_rest(synthetic_study: Path,
                                                           capsys: pytest.CaptureFixture[str]) -> None:
    bad = sorted((synthetic_study / "trials").glob("*.parquet"))[0]
    bad.write_bytes(bad.read_bytes()[:200])
    assert main([str(synthetic_study), "--resamples", "20"]) == 0
    captured = capsys.readouterr()
    assert bad.name in captured.err and "Rank correlation" in captured.out


def test_cli_study_with_only_failed_trials(tmp_path: Path,
                                           capsys: pytest.CaptureFixture[str]) -> None:
    from tests.analysis.conftest import write_rows

    rows = [{"study": "f", "trial_id": f"{i}-0", "state": "FAIL", "error": "OOM",
             "param_pruner": "synflow", "param_density": 0.1} for i in range(3)]
    study = write_rows(tmp_path / "f", rows)
    assert main([str(study), "--report", str(tmp_path / "out"), "--no-figures"]) == 0
    out = capsys.readouterr().out
    assert "No finished (COMPLETE) trials" in out and "FAIL" in out
    assert "No finished (COMPLETE) trials" in (tmp_path / "out" / "report.md").read_text()
