"""SIGINT and SIGTERM, over the whole life of the process, as one exception that unwinds cleanly.

Only the standard library is imported here: the handlers are installed before aim imports
torch, typer or any other extension, so an interrupt during start-up is an interrupt too.
"""

from __future__ import annotations

import contextlib
import os
import signal
import sys
from types import FrameType

from aim_cli.errors import Interrupted

# The signal that stopped the run, once one arrived: libraries may wrap the exception a handler
# raises (a C extension's import turns it into ImportError or SystemError), but the signal stays.
_received: list[int] = []


def _raise_interrupted(signum: int, _frame: FrameType | None) -> None:
    """Signal handler: unwind the stack so temp files are removed and finished outputs kept."""
    # Ignore further signals while unwinding: a second Ctrl-C must not cut the cleanup short.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    _received.append(signum)
    raise Interrupted(signum)


def install_handlers() -> None:
    """Route SIGINT and SIGTERM to `Interrupted` (call from the main thread; again is harmless)."""
    if _received:
        return  # already unwinding: keep ignoring further signals
    signal.signal(signal.SIGINT, _raise_interrupted)
    signal.signal(signal.SIGTERM, _raise_interrupted)


def raise_if_received() -> None:
    """Raise the interrupt now if a signal arrived and a library swallowed its exception (a bare except)."""
    if _received:
        raise Interrupted(_received[0])


def as_interrupt(exc: BaseException) -> Interrupted | None:
    """The interrupt behind `exc`, however a library wrapped it; None when no signal stopped the run."""
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:  # the exception, its causes and contexts
        seen.add(id(current))
        if isinstance(current, Interrupted):
            return current
        if isinstance(current, KeyboardInterrupt):  # a library restored Python's default SIGINT handler
            return Interrupted(signal.SIGINT)
        current = current.__cause__ or current.__context__
    return Interrupted(_received[0]) if _received else None


def _exit_now(signum: int, _frame: FrameType | None) -> None:
    """After the run: an interrupt while the interpreter shuts down ends it with the signal's code."""
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(OSError, ValueError):
            stream.flush()
    os._exit(Interrupted(signum).exit_code)


def exit_on_signal() -> None:
    """From here on (shutdown), a signal exits at once with 130/143 instead of raising into finalisers."""
    if not _received:
        signal.signal(signal.SIGINT, _exit_now)
        signal.signal(signal.SIGTERM, _exit_now)
