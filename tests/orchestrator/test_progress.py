"""The live view: rich on a terminal, plain lines otherwise."""

from __future__ import annotations

import io
import time

from rich.console import Console

from orchestrator.progress import BaseView, LogView, RichView, format_params, make_view


def _row(n: int, state: str = "COMPLETE") -> dict[str, object]:
    return {
        "trial_id": f"{n}-0",
        "state": state,
        "duration_s": 0.25,
        "error": None if state == "COMPLETE" else "ValueError: bad",
    }


def test_log_view_prints_failures_and_rate_limits_progress() -> None:
    stream = io.StringIO()
    view = LogView(stream, interval=60.0)
    view.set_phase("search", 4)
    view.trial_finished(_row(0), True, "x=1")
    view.trial_finished(_row(1), True, "x=2")  # within the interval: not printed
    view.trial_finished(_row(2, "FAIL"), True, "x=2")
    view.trial_finished(_row(3), True, "x=3")  # the last one: printed
    lines = stream.getvalue().splitlines()
    assert lines[0] == "[search] 0/4 done"
    assert lines[1].startswith("[search] 1/4 trial 0-0 COMPLETE 0.25s best x=1")
    assert "2-0 FAIL" in lines[2] and "error: ValueError: bad" in lines[2]
    assert lines[3].startswith("[search] 4/4 trial 3-0") and "failed 1" in lines[3]
    assert len(lines) == 4


def test_rich_view_renders_progress_best_and_worker_lines() -> None:
    console = Console(file=io.StringIO(), width=120, force_terminal=False, color_system=None)
    view = RichView(console)
    view.set_phase("search", 10)
    view.worker(
        0,
        node="a1b2c3d4e5f6g7",
        gpu="0",
        status="search #3.0",
        params=format_params({"path_exponent": 2.0, "input": "ones"}),
        since=time.time(),
    )
    view.worker(1, node="n2", gpu="1", status="idle")
    view.trial_finished(_row(0), True, "log_path_kernel_trace=5.1 (#0)")
    view.trial_finished(_row(1, "FAIL"), False, "log_path_kernel_trace=5.1 (#0)")
    console.print(view)
    text = console.file.getvalue()  # type: ignore[attr-defined]
    assert "1/10" in text and "best log_path_kernel_trace=5.1 (#0)" in text
    assert "retried 1" in text and "path_exponent=2 input=ones" in text
    assert "a1b2c3d4e5f6" in text and "search #3.0" in text


def test_make_view_picks_plain_lines_off_a_terminal() -> None:
    assert isinstance(make_view("auto"), LogView)  # pytest captures stdout: not a TTY
    assert type(make_view("quiet")) is BaseView


def test_format_params_is_short() -> None:
    text = format_params({"a": 0.123456, "b": None, "c": "x" * 100}, limit=20)
    assert text.startswith("a=0.123 c=") and len(text) == 20
