"""Errors the orchestrator reports to users as one line (the CLI exits with code 2)."""

from __future__ import annotations

import re
import reprlib

MAX_MESSAGE = 600  # characters; a longer message is cut, saying how much was left out

_BRIEF = reprlib.Repr()  # keyword arguments need Python 3.12
_BRIEF.maxlevel, _BRIEF.maxstring, _BRIEF.maxother, _BRIEF.maxlong = 3, 80, 80, 40
_BRIEF.maxtuple = _BRIEF.maxlist = _BRIEF.maxdict = _BRIEF.maxset = 6


def brief(value: object) -> str:
    """A bounded ``repr`` of ``value`` for error messages: nested and long containers and strings
    are elided (``reprlib``), so a huge value costs neither time nor a screenful to report."""
    return _BRIEF.repr(value)


def _bounded(message: str) -> str:
    if len(message) <= MAX_MESSAGE:
        return message
    return f"{message[: MAX_MESSAGE - 40]}... ({len(message) - MAX_MESSAGE + 40} more characters)"


# ANSI escape sequences (colours, cursor moves) that Ray and rich put into error text.
_ANSI = re.compile(r"\x1b(?:\[[0-?]*[ -/]*[@-~]|[@-Z\\-_])")


class SpecError(ValueError):
    """A study spec or a command-line value breaks a rule; the message names field and rule."""

    def __init__(self, message: object = "") -> None:
        super().__init__(_bounded(str(message)))


class SetupError(RuntimeError):
    """The study cannot start (unreachable cluster, output directory in use, ...)."""


def plain_text(text: str) -> str:
    """``text`` as one plain line: ANSI escape codes removed, whitespace collapsed."""
    return " ".join(_ANSI.sub("", text).split())
