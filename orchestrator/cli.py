"""The ``pathsweep`` command.

::

    pathsweep study run SPEC --out DIR [--address ADDR] [--storage URL] [--workers N|auto]
                                       [--trials N] [--view auto|rich|log|quiet]
    pathsweep study resume DIR [--address ADDR] [--storage URL] [--workers N|auto]
    pathsweep study status DIR [--storage URL]
    pathsweep demo [--out DIR] [--address ADDR] [--trials N]
    pathsweep prune ...      (pathsweep prune --help)
    pathsweep analyze DIR [DIR ...] --report OUT

Bad input (spec, arguments, a non-empty ``--out``, an unreachable ``--address``, data that
cannot load, a model above the memory budget) is one line on stderr and exit code 2, before
anything is written or Ray starts. Arguments are parsed before torch, Ray or Optuna are imported,
and ``study run`` says it started before it imports them. A study that completes no trial exits
with code 1 and its most frequent error; Ctrl-C stops it (exit 130), a second Ctrl-C at once.
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, NoReturn

from orchestrator.errors import SetupError, SpecError, plain_text

EXIT_USAGE = 2
EXIT_FAILED = 1
EXIT_INTERRUPTED = 130
EXIT_BROKEN_PIPE = 141  # 128 + SIGPIPE, what a shell reports for a tool whose reader went away


class _UsageError(Exception):
    pass


class _Parser(argparse.ArgumentParser):
    """argparse, but a usage error is one line (no usage block) and exit code 2."""

    def error(self, message: str) -> NoReturn:
        raise _UsageError(f"{self.prog}: error: {message}")


def _positive_int(text: str) -> int:
    if not text.isdigit() or int(text) < 1:
        raise argparse.ArgumentTypeError(f"must be an integer >= 1, but got {text!r}")
    return int(text)


def _workers(text: str) -> str:
    if text != "auto" and (not text.isdigit() or int(text) < 1):
        raise argparse.ArgumentTypeError(f"must be 'auto' or an integer >= 1, but got {text!r}")
    return text


def _cluster_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--address",
        help="join this Ray cluster (HOST:PORT, ray://HOST:PORT, "
        "auto); default: RAY_ADDRESS, else a local Ray for this command",
    )
    parser.add_argument(
        "--workers",
        type=_workers,
        help="actors: 'auto' (one per GPU, or per "
        "CPU core without GPUs) or a number; overrides the spec",
    )
    parser.add_argument(
        "--view",
        choices=("auto", "rich", "log", "quiet"),
        default="auto",
        help="live view: rich on a terminal, log lines otherwise (auto)",
    )


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of ``pathsweep``."""
    parser = _Parser(
        prog="pathsweep",
        description="Studies of pruning at initialization "
        "(SynFlow family, Path Kernel objectives) on Ray clusters.",
    )
    commands = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)
    study = commands.add_parser("study", help="run, resume or inspect a study")
    actions = study.add_subparsers(dest="action", required=True, parser_class=_Parser)

    run = actions.add_parser("run", help="run a study from a YAML spec")
    run.add_argument("spec", help="the study spec (YAML)")
    run.add_argument("--out", required=True, help="new (or empty) study directory")
    run.add_argument("--storage", help="Optuna storage URL (default: OUT/optuna.journal)")
    run.add_argument("--trials", type=_positive_int, help="number of trials; overrides the spec")
    _cluster_args(run)
    run.set_defaults(func=cmd_run)

    resume = actions.add_parser("resume", help="finish a study whose driver stopped")
    resume.add_argument("dir", help="the study directory")
    resume.add_argument("--storage", help="Optuna storage URL, when the run used one")
    _cluster_args(resume)
    resume.set_defaults(func=cmd_resume)

    status = actions.add_parser("status", help="progress and best trials of a study")
    status.add_argument("dir", help="the study directory")
    status.add_argument("--storage", help="Optuna storage URL, when the run used one")
    status.set_defaults(func=cmd_status)

    demo = commands.add_parser("demo", help="a small study on digits, end to end, with a report")
    demo.add_argument("--out", default="pathsweep-demo", help="study directory (new or empty)")
    demo.add_argument("--trials", type=_positive_int, help="number of trials (default 40)")
    _cluster_args(demo)
    demo.set_defaults(func=cmd_demo)

    commands.add_parser(
        "prune", help="prune one model and save its masks (see prune --help)", add_help=False
    )
    commands.add_parser(
        "analyze",
        help="tables, correlations and a report from study directories (see analyze --help)",
        add_help=False,
    )
    return parser


# ----------------------------------------------------------------------------- commands


def _say(text: str) -> None:
    print(text, flush=True)


def _prepare_run(args: argparse.Namespace, spec: Any) -> tuple[Any, Path, str | None]:
    """Every check of a new study before anything is written; returns spec, out, address."""
    from orchestrator.cluster import resolve_address
    from orchestrator.spec import check_buildable, with_overrides
    from orchestrator.studydir import check_new_out

    spec = with_overrides(spec, getattr(args, "trials", None), args.workers)
    out = Path(args.out)
    check_new_out(out)
    check_buildable(spec)
    _check_storage(getattr(args, "storage", None), new_study=spec.study)
    return spec, out, resolve_address(args.address)


def _check_storage(url: str | None, new_study: str | None = None) -> None:
    """The storage opens; a new study's name is not taken in it yet."""
    if not url:
        return
    import optuna

    from orchestrator.redaction import mask_url, redact, remember

    remember(url)
    try:
        storage = optuna.storages.get_storage(url)
        names = optuna.study.get_all_study_names(storage)
    except Exception as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise SpecError(f"--storage: cannot open {mask_url(url)!r}: {redact(first)}") from None
    if new_study is not None and new_study in names:
        raise SetupError(
            f"study {new_study!r} already exists in the storage; rename the study or resume it"
        )


def cmd_run(args: argparse.Namespace) -> int:
    """``pathsweep study run``."""
    from orchestrator.spec import load_spec

    spec, out, address = _prepare_run(args, load_spec(args.spec))
    return _execute(spec, out, address, args.storage, args.view, resume=False)


def cmd_resume(args: argparse.Namespace) -> int:
    """``pathsweep study resume``."""
    from orchestrator.cluster import resolve_address
    from orchestrator.spec import with_overrides
    from orchestrator.studydir import load_study_dir

    out = Path(args.dir)
    spec, run = load_study_dir(out)
    spec = with_overrides(spec, None, args.workers)
    storage = _stored_storage(args.storage, run)
    _check_storage(storage)
    return _execute(spec, out, resolve_address(args.address), storage, args.view, resume=True)


def _stored_storage(given: str | None, run: dict[str, Any]) -> str | None:
    from orchestrator.redaction import remember

    remember(given)
    stored = run.get("storage")
    if given:
        return given
    if stored and "***" in stored:
        raise SpecError("this study's storage URL holds a password: pass it again with --storage")
    return stored  # type: ignore[no-any-return]


def _execute(
    spec: Any,
    out: Path,
    address: str | None,
    storage: str | None,
    view_mode: str,
    *,
    resume: bool,
    trial_fn: Callable[..., Any] | None = None,
) -> int:
    """Run or resume holding the study lock (a second driver gets exit 2 naming the holder)."""
    from orchestrator.cluster import ray_session
    from orchestrator.driver import run_study
    from orchestrator.progress import make_view
    from orchestrator.studydir import (
        check_new_out,
        close_stale_runs,
        command_line,
        create_study_dir,
        read_run,
        record_run,
        study_lock,
    )

    with study_lock(out):
        if not resume:
            check_new_out(out)  # again, under the lock: two runs into one --out cannot both pass
            create_study_dir(out, spec, storage)
        else:
            close_stale_runs(out)
        entry: dict[str, Any] = {
            "id": len(read_run(out).get("runs", [])),
            "command": command_line(),
            "resume": resume,
            "address": address,
            "started_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            "status": "running",
        }
        record_run(out, entry)
        view = make_view(view_mode)
        options: dict[str, Any] = {} if trial_fn is None else {"trial_fn": trial_fn}
        previous = None
        try:
            with ray_session(address):
                previous = _install_interrupt_handler(out)  # after ray.init, which may set its own
                summary = run_study(spec, out, resume=resume, storage=storage, view=view, **options)
        except KeyboardInterrupt:
            record_run(out, {**entry, "status": "interrupted"})
            print(
                f"pathsweep: interrupted; continue with `pathsweep study resume {out}`",
                file=sys.stderr,
            )
            return EXIT_INTERRUPTED
        except BaseException:
            record_run(out, {**entry, "status": "failed"})
            raise
        finally:
            _restore_interrupt_handler(previous)
        failed = summary.complete == 0 and spec.trials > 0
        record_run(
            out,
            {
                **entry,
                "status": "failed" if failed else "finished",
                "finished_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
                "workers": summary.workers,
                "complete": summary.complete,
                "failed": summary.failed,
                "attempts": summary.attempts,
                "wall_s": summary.wall_s,
            },
        )
        _say(
            f"study {spec.study}: {summary.complete} COMPLETE, {summary.failed} FAIL, "
            f"{summary.retried} retried attempts, {summary.validated} validation runs, "
            f"{summary.workers} workers, {summary.wall_s:.1f} s -> {out}"
        )
        if failed:
            print(f"pathsweep: error: {_no_trial_completed(summary)}", file=sys.stderr)
            return EXIT_FAILED
        return 0


def _no_trial_completed(summary: Any) -> str:
    """One line: no trial completed, and the most frequent error of the failed attempts."""
    text = f"study {summary.study} completed no trial"
    if summary.top_error is None:
        return text
    error, count, total = summary.top_error
    return f"{text}; most frequent error ({count} of {total} failed attempts): {error}"


def _install_interrupt_handler(out: Path) -> Any:
    """The first Ctrl-C stops the study cleanly (KeyboardInterrupt); a second one exits now.

    The second one exits with one line and code 130, without a traceback or waiting for Ray to
    shut down; the study directory is then as after a killed driver, which ``resume`` repairs.
    """
    if not _is_main_thread():
        return None
    pressed = False

    def handler(signum: int, frame: Any) -> None:
        nonlocal pressed
        if pressed:
            os.write(
                2,
                f"pathsweep: interrupted again; stopped at once; continue with "
                f"`pathsweep study resume {out}`\n".encode(),
            )
            os._exit(EXIT_INTERRUPTED)
        pressed = True
        raise KeyboardInterrupt

    return signal.signal(signal.SIGINT, handler)


def _restore_interrupt_handler(previous: Any) -> None:
    if previous is not None:
        signal.signal(signal.SIGINT, previous)


def _is_main_thread() -> bool:
    import threading

    return threading.current_thread() is threading.main_thread()


def cmd_status(args: argparse.Namespace) -> int:
    """``pathsweep study status``: counts from the journal and the rows, best trials."""
    from orchestrator.status import StatusSpec, study_status
    from orchestrator.studydir import check_study_dir, read_run

    out = Path(args.dir)
    check_study_dir(out)
    spec, run = StatusSpec.read(out), read_run(out)
    for line in study_status(spec, out, _stored_storage(args.storage, run), run):
        _say(line)
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    """``pathsweep demo``: a small study on digits, then the analysis report."""
    from orchestrator.demo import demo_spec, run_report

    spec, out, address = _prepare_run(args, demo_spec())
    code = _execute(spec, out, address, None, args.view, resume=False)
    if code == 0:
        run_report(out)
    return code


# ----------------------------------------------------------------------------- entry point


def _passthrough(command: str, rest: list[str]) -> int:
    if command == "prune":
        from orchestrator.prune_cmd import main as prune_main

        return int(prune_main(rest))
    try:
        from analysis.cli import main as analyze_main
    except ImportError as exc:
        raise SetupError(f"`pathsweep analyze` needs the analysis package: {exc}") from None
    return int(analyze_main(rest))


def _quiet_libraries() -> None:
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)


_ERROR_CHARS = 4000  # an error message reaches the user whole (one line, no ANSI codes)


def _say_starting(args: argparse.Namespace) -> None:
    """The first line of a study command, before the slow imports (torch, Ray, Optuna)."""
    if getattr(args, "view", None) == "quiet":
        return
    if getattr(args, "action", None) == "run":
        _say(f"pathsweep: starting study {args.spec} -> {args.out} (checking spec and data) ...")
    elif getattr(args, "action", None) == "resume":
        _say(f"pathsweep: resuming study {args.dir} ...")
    elif args.command == "demo":
        _say(f"pathsweep: starting the demo study -> {args.out} ...")


def main(argv: list[str] | None = None) -> int:
    """Run ``pathsweep`` with ``argv`` (default: the command line); returns the exit code.

    The secrets of a ``--storage`` URL never reach the terminal: they are remembered before
    anything runs, and stdout, stderr and the log handlers are redacted while the command runs.
    """
    from orchestrator.redaction import guard_output, remember

    argv = list(sys.argv[1:] if argv is None else argv)
    for i, arg in enumerate(argv):
        if arg == "--storage" and i + 1 < len(argv):
            remember(argv[i + 1])
        elif arg.startswith("--storage="):
            remember(arg.partition("=")[2])
    try:
        with guard_output():
            code = _main(argv)
            sys.stdout.flush()  # here, so that a reader gone away is seen in the try
            return code
    except BrokenPipeError:
        # the reader went away (`pathsweep study status DIR | head`): no error message, and
        # stdout pointed at /dev/null so that Python's flush at exit does not fail again
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return EXIT_BROKEN_PIPE


def _main(argv: list[str]) -> int:
    try:
        if argv and argv[0] in ("prune", "analyze"):
            return _passthrough(argv[0], argv[1:])
        args = build_parser().parse_args(argv)
        _say_starting(args)
        _quiet_libraries()
        return int(args.func(args))
    except _UsageError as exc:
        print(f"{exc}", file=sys.stderr)
        return EXIT_USAGE
    except (SpecError, SetupError) as exc:
        print(f"pathsweep: error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except SystemExit as exc:  # --help
        return exc.code if isinstance(exc.code, int) else 0
    except KeyboardInterrupt:
        print("pathsweep: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    except BrokenPipeError:
        raise  # handled in main()
    except Exception as exc:
        if os.environ.get("PATHSWEEP_DEBUG"):
            raise
        text = plain_text(str(exc))[:_ERROR_CHARS]
        print(
            f"pathsweep: error: {type(exc).__name__}: {text} (PATHSWEEP_DEBUG=1 shows the "
            "traceback)",
            file=sys.stderr,
        )
        return EXIT_FAILED


if __name__ == "__main__":
    sys.exit(main())
