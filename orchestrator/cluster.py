"""Connecting to Ray: join a cluster by address, or start a local one for the command.

``ray.init`` waits for minutes on an address where no Ray cluster answers, so an address is
first probed: a TCP connect and an HTTP/2 handshake (Ray's GCS speaks gRPC) with short
timeouts; ``ray.init`` itself then runs under a watchdog. An unreachable address fails in
seconds with one line.
"""

from __future__ import annotations

import contextlib
import logging
import os
import socket
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

from orchestrator.errors import SetupError, SpecError

_HTTP2_PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n" + b"\x00\x00\x00\x04\x00\x00\x00\x00\x00"
INIT_TIMEOUT_S = 25.0


def split_address(address: str, source: str = "--address") -> tuple[str, int] | None:
    """``(host, port)`` of a ``HOST:PORT`` or ``ray://HOST:PORT`` address; None for ``auto``.

    Raises:
        SpecError: any other form (e.g. the dashboard's ``http://`` address), naming ``source``.
    """
    if address in ("auto", "local"):
        return None
    rest = address[len("ray://") :] if address.startswith("ray://") else address
    host, sep, port = rest.rpartition(":")
    if "://" in rest or not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise SpecError(
            f"{source} must be HOST:PORT (the head's GCS, e.g. 10.0.0.1:6379), "
            f"ray://HOST:PORT or auto, but got {address!r}"
        )
    return host.strip("[]"), int(port)


def probe(host: str, port: int, timeout: float = 3.0) -> None:
    """Check that a gRPC server (Ray's GCS or Ray Client) answers at ``host:port``.

    Raises:
        SetupError: no connection, or the port does not answer an HTTP/2 handshake.
    """
    where = f"{host}:{port}"
    try:
        with socket.create_connection((host, port), timeout=timeout) as sock:
            sock.settimeout(timeout)
            sock.sendall(_HTTP2_PREFACE)
            head = _recv(sock, 9)
    except TimeoutError:
        raise SetupError(
            f"no Ray cluster answers at {where} (timed out after {timeout:g} s)"
        ) from None
    except OSError as exc:
        reason = exc.strerror or type(exc).__name__
        raise SetupError(f"cannot reach a Ray cluster at {where}: {reason}") from None
    if len(head) < 9 or head[3] != 0x4:  # an HTTP/2 server opens with a SETTINGS frame
        raise SetupError(f"no Ray cluster answers at {where} (the port is open but is not Ray)")


def _recv(sock: socket.socket, size: int) -> bytes:
    data = b""
    while len(data) < size:
        chunk = sock.recv(size - len(data))
        if not chunk:
            break
        data += chunk
    return data


def _source_on_pythonpath() -> None:
    """Let local Ray workers import this source tree even when it is not pip-installed."""
    root = str(Path(__file__).resolve().parent.parent)
    paths = [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p]
    if root not in paths:
        os.environ["PYTHONPATH"] = os.pathsep.join([root, *paths])


def _token_auth_explicitly() -> None:
    """Start the local instance with Ray's token authentication, stated explicitly.

    Ray (2.5x+) enables token authentication for a new local instance by default and then warns
    on every start that it did so ("Token authentication is enabled for this Ray cluster");
    with ``RAY_AUTH_MODE`` set it keeps quiet. So the mode is set to ``token`` unless the user
    chose one. Ray reads the variable into its cached config at import, hence the refresh (what
    Ray itself does when it turns the mode on).
    """
    if "RAY_AUTH_MODE" in os.environ:
        return
    try:
        from ray._raylet import Config  # type: ignore[attr-defined]
    except ImportError:  # a Ray without token authentication: nothing to state
        return
    os.environ["RAY_AUTH_MODE"] = "token"
    try:
        Config.initialize("")
    except Exception:  # cannot refresh: leave the mode to Ray rather than half-set it
        del os.environ["RAY_AUTH_MODE"]


def _init_with_watchdog(timeout: float, **kwargs: object) -> None:
    import ray

    done = threading.Event()

    def give_up() -> None:
        if not done.is_set():
            where = kwargs.get("address") or "a local Ray instance"
            print(
                f"pathsweep: error: could not connect to {where} within {timeout:g} s",
                file=sys.stderr,
                flush=True,
            )
            os._exit(2)

    timer = threading.Timer(timeout, give_up)
    timer.daemon = True
    timer.start()
    try:
        ray.init(**kwargs)  # type: ignore[arg-type]
    finally:
        done.set()
        timer.cancel()


def resolve_address(address: str | None) -> str | None:
    """The cluster to join: ``--address``, else ``RAY_ADDRESS``, else None (start a local one).

    A given address is checked now (format, then reachability).
    """
    source = "--address" if address else "RAY_ADDRESS"
    address = address or os.environ.get("RAY_ADDRESS") or None
    if address:
        target = split_address(address, source)
        if target is not None:
            probe(*target)
    return address


@contextlib.contextmanager
def ray_session(address: str | None, num_cpus: int | None = None) -> Iterator[None]:
    """Ray for one command: join ``address`` or start a local instance, shut down after.

    An already initialized Ray (a test session, a notebook) is used as it is and left running.
    """
    import ray

    if ray.is_initialized():
        yield
        return
    options: dict[str, object] = {"log_to_driver": False, "logging_level": logging.WARNING}
    if address:
        options["address"] = address
    else:
        _source_on_pythonpath()
        # "local" always starts a private instance: a bare ray.init() would join any cluster
        # recorded on this machine (`ray start`, ray.cluster_utils), a stranger's included.
        options.update(address="local", include_dashboard=False, num_cpus=num_cpus)
        _token_auth_explicitly()
    _init_with_watchdog(INIT_TIMEOUT_S if address else 120.0, **options)
    try:
        yield
    finally:
        ray.shutdown()
