"""The live view of a study: a rich dashboard on a terminal, plain log lines otherwise.

The driver only updates plain Python state here; rendering happens in rich's refresh thread a
few times a second, so the view costs the driver next to nothing per trial.
"""

from __future__ import annotations

import sys
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import IO, Any

from rich.console import Console, Group, RenderableType
from rich.live import Live
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn
from rich.table import Table


@dataclass
class WorkerLine:
    """What one worker slot is doing."""

    node: str = "-"
    gpu: str = "-"
    params: str = ""
    since: float | None = None
    status: str = "starting"


@dataclass
class ViewState:
    """What every view shows."""

    phase: str = "search"
    total: int = 0
    done: int = 0
    failed: int = 0
    retried: int = 0
    best: str = "-"
    workers: dict[int, WorkerLine] = field(default_factory=dict)


def format_params(params: Mapping[str, Any], limit: int = 70) -> str:
    """Short ``name=value`` text of the parameters that are set."""
    parts = []
    for name, value in params.items():
        if value is None:
            continue
        text = f"{value:.3g}" if isinstance(value, float) else str(value)
        parts.append(f"{name}={text}")
    line = " ".join(parts)
    return line if len(line) <= limit else line[: limit - 1] + "…"


class BaseView:
    """A view that only keeps state (used as-is when the study runs quietly)."""

    def __init__(self) -> None:
        self.state = ViewState()
        self._lock = threading.Lock()

    def start(self) -> None:
        """Begin showing."""

    def stop(self) -> None:
        """Stop showing (prints a last frame)."""

    def message(self, text: str) -> None:
        """A one-off line (worker lost, phase change, ...)."""

    def set_phase(self, phase: str, total: int, done: int = 0) -> None:
        """Start counting a phase (``search``, ``validate``)."""
        with self._lock:
            self.state.phase, self.state.total, self.state.done = phase, total, done

    def worker(self, slot: int, **changes: Any) -> None:
        """Update a worker line (``node``, ``gpu``, ``params``, ``since``, ``status``)."""
        with self._lock:
            line = self.state.workers.setdefault(slot, WorkerLine())
            for key, value in changes.items():
                setattr(line, key, value)

    def trial_finished(self, row: Mapping[str, Any], counted: bool, best: str) -> None:
        """Record a finished attempt; ``counted`` = it finished its trial (not a retry)."""
        with self._lock:
            state = self.state
            state.best = best
            if counted:
                state.done += 1
            if row.get("state") == "FAIL":
                state.failed += int(counted)
                state.retried += int(not counted)


class LogView(BaseView):
    """Plain lines for logs and pipes: every failure, progress at most every ``interval`` s."""

    def __init__(self, stream: IO[str] | None = None, interval: float = 0.5) -> None:
        super().__init__()
        self._stream = stream or sys.stdout
        self._interval = interval
        self._last = 0.0
        self._start = time.monotonic()

    def _print(self, text: str) -> None:
        print(text, file=self._stream, flush=True)

    def message(self, text: str) -> None:
        self._print(text)

    def set_phase(self, phase: str, total: int, done: int = 0) -> None:
        super().set_phase(phase, total, done)
        self._start = time.monotonic()
        self._print(f"[{phase}] {done}/{total} done")

    def trial_finished(self, row: Mapping[str, Any], counted: bool, best: str) -> None:
        super().trial_finished(row, counted, best)
        now = time.monotonic()
        s = self.state
        last = s.done >= s.total
        if row.get("state") == "COMPLETE" and not last and now - self._last < self._interval:
            return
        self._last = now
        tail = f" error: {row.get('error')}" if row.get("state") != "COMPLETE" else ""
        self._print(
            f"[{s.phase}] {s.done}/{s.total} trial {row.get('trial_id')} {row.get('state')} "
            f"{row.get('duration_s') or 0:.2f}s best {s.best} failed {s.failed}{tail}"
        )


class RichView(BaseView):
    """A rich Live dashboard: progress and ETA, best value(s), one line per worker."""

    def __init__(self, console: Console | None = None) -> None:
        super().__init__()
        self._console = console or Console()
        self._progress = Progress(
            TextColumn("[bold]{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeRemainingColumn(),
            console=self._console,
        )
        self._task = self._progress.add_task("search", total=1)
        self._live = Live(self, console=self._console, refresh_per_second=4, transient=False)

    def start(self) -> None:
        self._live.start()

    def stop(self) -> None:
        self._live.stop()

    def message(self, text: str) -> None:
        self._live.console.print(text)

    def __rich__(self) -> RenderableType:
        with self._lock:
            s = self.state
            self._progress.update(
                self._task, description=s.phase, total=max(s.total, 1), completed=s.done
            )
            summary = f"best {s.best}   failed {s.failed}   retried {s.retried}"
            table = Table(box=None, pad_edge=False, expand=True)
            for col, width in (("worker", 6), ("node", 12), ("gpu", 3), ("status", 20),
                               ("elapsed", 7)):  # fmt: skip
                table.add_column(col, no_wrap=True, min_width=width)
            table.add_column("params", no_wrap=True, overflow="ellipsis", ratio=1)
            now = time.time()
            for slot, w in sorted(s.workers.items()):
                elapsed = f"{now - w.since:.1f}s" if w.since else ""
                table.add_row(str(slot), w.node[:12], w.gpu or "-", w.status, elapsed, w.params)
        return Group(self._progress.get_renderable(), summary, table)


def make_view(mode: str = "auto") -> BaseView:
    """``"rich"``, ``"log"``, ``"quiet"`` or ``"auto"`` (rich on a terminal, else log lines)."""
    if mode == "quiet":
        return BaseView()
    if mode == "rich" or (mode == "auto" and sys.stdout.isatty()):
        return RichView()
    return LogView()
