"""Errors the orchestrator reports to users as one line (the CLI exits with code 2)."""

from __future__ import annotations


class SpecError(ValueError):
    """A study spec or a command-line value breaks a rule; the message names field and rule."""


class SetupError(RuntimeError):
    """The study cannot start (unreachable cluster, output directory in use, ...)."""
