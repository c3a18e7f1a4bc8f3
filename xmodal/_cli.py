"""What the command-line entry points share."""

from __future__ import annotations

import argparse
import signal
import sys
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

__all__ = ["Interrupted", "command_name", "exit_status", "interrupt_name", "number_or_auto", "run_command",
           "terminate_as_interrupt"]


def command_name(module: str) -> str:
    """How the user ran the ``xmodal.<module>`` command, for its usage and error lines: ``xmodal-<module>`` from the
    console script the install puts on the path, else ``python -m xmodal.<module>``."""
    name = Path(sys.argv[0]).name if sys.argv and sys.argv[0] else ""
    return name if name == f"xmodal-{module}" else f"python -m xmodal.{module}"


def number_or_auto(expected: str) -> Callable[[str], float | str]:
    """An argparse type: a number or ``auto`` (``--poisson``, ``--read-noise``; checked later, together:
    :func:`xmodal.vst.check_photon_args`); ``expected`` names the number in the usage error."""
    def parse(value: str) -> float | str:
        if value == "auto":
            return value
        try:
            return float(value)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected {expected} (a number) or 'auto', got {value!r}") from None
    return parse


class Interrupted(KeyboardInterrupt):
    """Ctrl-C (SIGINT) or SIGTERM as an exception, with the signal's number (``signum``). A
    :class:`KeyboardInterrupt`, so whatever cleans up after Ctrl-C (temp files, half-written outputs) cleans up after
    it too."""

    def __init__(self, signum: int = signal.SIGINT) -> None:
        super().__init__(signal.Signals(signum).name)
        self.signum = int(signum)


def exit_status(e: KeyboardInterrupt) -> int:
    """The shell's status for a command ended by the signal behind ``e``: 128 + its number (130 Ctrl-C, 143 SIGTERM)."""
    return 128 + getattr(e, "signum", signal.SIGINT)


def interrupt_name(e: KeyboardInterrupt) -> str:
    """``interrupted (Ctrl-C)`` or ``terminated (SIGTERM)``, for the line a command prints as it stops."""
    signum = getattr(e, "signum", signal.SIGINT)
    return "interrupted (Ctrl-C)" if signum == signal.SIGINT else f"terminated ({signal.Signals(signum).name})"


@contextmanager
def terminate_as_interrupt() -> Iterator[None]:
    """Inside the block SIGTERM (``kill``, a job's time limit, a container stopping) raises :class:`Interrupted`, as
    Ctrl-C raises KeyboardInterrupt, so that a terminated command removes its temp files and says what it wrote
    instead of dying with them on disk. Main thread only; a SIGTERM that was ignored stays ignored; the previous
    handler is given back."""
    previous = None
    if threading.current_thread() is threading.main_thread():
        previous = signal.getsignal(signal.SIGTERM)
        if previous in (None, signal.SIG_IGN):  # None: a handler not installed from Python, left alone
            previous = None
        else:
            def terminated(signum, frame):
                raise Interrupted(signum)

            signal.signal(signal.SIGTERM, terminated)
    try:
        yield
    finally:
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)


def run_command(command: Callable[[list[str] | None], int], argv: list[str] | None, stopped: str) -> int:
    """``command(argv)`` (a command line's body, returning its exit status) with SIGTERM handled as Ctrl-C
    (:func:`terminate_as_interrupt`). On either, temp files are removed on the way out, a line ``interrupted
    (Ctrl-C): <stopped>`` (or ``terminated (SIGTERM): ...``) goes to stderr instead of a traceback, and the status
    is 128 + the signal's number. Warnings print as ``warning: <message>`` lines (not Python's file, line and
    source), as the commands' own errors do."""
    import warnings

    formatwarning = warnings.formatwarning
    warnings.formatwarning = _warning_line
    try:
        with terminate_as_interrupt():
            return command(argv)
    except KeyboardInterrupt as e:
        print(f"\n{interrupt_name(e)}: {stopped}", file=sys.stderr)
        return exit_status(e)
    finally:
        warnings.formatwarning = formatwarning


def _warning_line(message: Warning | str, category: type[Warning], filename: str, lineno: int,
                  line: str | None = None) -> str:
    """A warning as a command line shows it: ``warning: <message>`` (the category named unless a UserWarning)."""
    kind = "" if category is UserWarning else f" ({category.__name__})"
    return f"warning{kind}: {message}\n"
