"""Errors the orchestrator reports to users as one line (the CLI exits with code 2)."""

from __future__ import annotations

import re

# ANSI escape sequences (colours, cursor moves) that Ray and rich put into error text.
_ANSI = re.compile(r"\x1b(?:\[[0-?]*[ -/]*[@-~]|[@-Z\\-_])")


class SpecError(ValueError):
    """A study spec or a command-line value breaks a rule; the message names field and rule."""


class SetupError(RuntimeError):
    """The study cannot start (unreachable cluster, output directory in use, ...)."""


def plain_text(text: str) -> str:
    """``text`` as one plain line: ANSI escape codes removed, whitespace collapsed."""
    return " ".join(_ANSI.sub("", text).split())
