"""Keep the secrets of a storage URL out of files, logs and the terminal.

A storage URL such as ``postgresql://user:PASSWORD@host/db`` or
``sqlite:///x.db?password=PASSWORD`` carries a secret. ``mask_url`` gives the form that may be
written anywhere (``***`` for the password and for every query value whose key names a secret);
``remember`` records the secrets of a URL so that ``redact`` replaces them in any text (an
exception message, a log line). ``guard_output`` applies ``redact`` to everything the process
writes to ``sys.stdout``/``sys.stderr`` and to the log handlers that exist, as a second line of
defence behind masking at the source.
"""

from __future__ import annotations

import contextlib
import logging
import re
import sys
from collections.abc import Iterator
from typing import Any, TextIO
from urllib.parse import quote, unquote

MASK = "***"
# Query keys whose values are secrets (libpq's password/sslpassword, tokens, keys, ...).
SECRET_KEY = re.compile(r"pass|pwd|secret|token|key|auth|credential|signature", re.IGNORECASE)
_SECRETS: set[str] = set()


def _query_secrets(query: str) -> list[tuple[int, int]]:
    """``(start, end)`` spans of the values of secret keys in ``query``."""
    spans = []
    pos = 0
    for part in query.split("&"):
        key, sep, value = part.partition("=")
        if sep and value and SECRET_KEY.search(unquote(key)):
            start = pos + len(key) + 1
            spans.append((start, start + len(value)))
        pos += len(part) + 1
    return spans


def _split(url: str) -> tuple[str, str, str, str, str] | None:
    """``(prefix, userinfo, host_and_rest_of_netloc, query, fragment)`` of ``url``, or None when
    it is not ``scheme://...``. Plain string cutting: no normalisation, so unmasked parts stay
    byte for byte as given."""
    start = url.find("://")
    if start < 1:
        return None
    start += 3
    end = next((i for i in range(start, len(url)) if url[i] in "/?#"), len(url))
    netloc, rest = url[start:end], url[end:]
    userinfo, _, host = netloc.rpartition("@")
    rest, _, fragment = rest.partition("#")
    path, _, query = rest.partition("?")
    return url[:start], userinfo, host + path, query, fragment


def url_secrets(url: str | None) -> list[str]:
    """The secrets in ``url``: its password and the values of secret query keys (as written
    and percent-decoded), longest first."""
    parts = _split(url) if url else None
    if parts is None:
        return []
    _, userinfo, _, query, _ = parts
    found = [userinfo.partition(":")[2]] + [query[a:b] for a, b in _query_secrets(query)]
    secrets = {s for s in found if s}
    secrets |= {unquote(s) for s in secrets} | {quote(unquote(s), safe="") for s in secrets}
    return sorted((s for s in secrets if s), key=len, reverse=True)


def mask_url(url: str | None) -> str | None:
    """``url`` with its password and secret query values replaced by ``***``."""
    parts = _split(url) if url else None
    if url is None or parts is None:
        return url
    prefix, userinfo, rest, query, fragment = parts
    user, _, password = userinfo.partition(":")
    if password:
        userinfo = f"{user}:{MASK}"
    for a, b in reversed(_query_secrets(query)):
        query = query[:a] + MASK + query[b:]
    masked = prefix + (f"{userinfo}@" if "@" in url[len(prefix) :].split("/")[0] else "") + rest
    if "?" in url:
        masked += f"?{query}"
    if "#" in url:
        masked += f"#{fragment}"
    return masked


def redact_with(text: str, secrets: list[str]) -> str:
    """``text`` with each of ``secrets`` replaced by ``***`` (longest first)."""
    for secret in sorted(secrets, key=len, reverse=True):
        text = text.replace(secret, MASK)
    return text


def remember(url: str | None) -> None:
    """Make ``redact`` hide the secrets of ``url`` from now on (for this process)."""
    _SECRETS.update(url_secrets(url))


def redact(text: str) -> str:
    """``text`` with every remembered secret replaced by ``***``."""
    return redact_with(text, list(_SECRETS)) if _SECRETS else text


class _RedactingStream:
    """A text stream that redacts remembered secrets before writing to the wrapped one."""

    def __init__(self, stream: TextIO) -> None:
        self._stream = stream

    def write(self, text: str) -> int:
        self._stream.write(redact(text))
        return len(text)

    def writelines(self, lines: Any) -> None:
        for line in lines:
            self.write(line)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._stream, name)


class _RedactingFilter(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        if _SECRETS:
            try:
                message = record.getMessage()
            except Exception:  # a malformed record: leave it to the handler's own error path
                return True
            clean = redact(message)
            if clean != message:
                record.msg, record.args = clean, None
        return True


def _handlers() -> list[logging.Handler]:
    loggers: list[Any] = [logging.getLogger()]
    loggers += list(logging.Logger.manager.loggerDict.values())
    found: list[logging.Handler] = []
    for logger in loggers:
        for handler in getattr(logger, "handlers", []):
            if handler not in found:
                found.append(handler)
    return found


@contextlib.contextmanager
def guard_output() -> Iterator[None]:
    """Redact remembered secrets from ``sys.stdout``, ``sys.stderr`` and existing log handlers
    while the block runs (a secret remembered inside the block is hidden from then on)."""
    out, err = sys.stdout, sys.stderr
    if out is not None:  # None without a console (pythonw)
        sys.stdout = _RedactingStream(out)  # type: ignore[assignment]
    if err is not None:
        sys.stderr = _RedactingStream(err)  # type: ignore[assignment]
    log_filter = _RedactingFilter()
    handlers = _handlers()
    for handler in handlers:
        handler.addFilter(log_filter)
    try:
        yield
    finally:
        sys.stdout, sys.stderr = out, err
        for handler in handlers:
            handler.removeFilter(log_filter)
