"""SIGINT and SIGTERM, over the whole life of the process, as one exception that unwinds cleanly.

Only the standard library is imported here: the handlers are installed before aim imports
torch, typer or any other extension, so an interrupt during start-up is an interrupt too.

The exception is raised only in aim's own code. Python runs a signal handler in whatever Python
frame comes next, and that may be a callback a C++ extension made (torch runs Python from its
module set-up and its destructors): an exception thrown there crosses C++ code that cannot unwind
it, and the process aborts ("terminate called after throwing ... error_already_set"). So a signal
that arrives in other code is recorded, and a profile hook raises it as soon as aim's code
calls, is called or returns; if that takes longer than GRACE_S (a long model load), or a second signal
comes, it is raised wherever the process is, so a stop is never put off for long.
"""

from __future__ import annotations

import _thread
import contextlib
import os
import signal
import sys
import threading
from types import FrameType
from typing import Any

from aim_cli.errors import Interrupted

# The signal that stopped the run, once one arrived: libraries may wrap the exception a handler
# raises (a C extension's import turns it into ImportError or SystemError), but the signal stays.
_received: list[int] = []
_profile_before: list[Any] = []  # a profiler the waiting hook displaced, put back when the hook goes

GRACE_S = 5.0
_AIM_CODE = os.path.dirname(os.path.abspath(__file__)) + os.sep
_THIS_FILE = os.path.abspath(__file__)


def _in_aim_code(frame: FrameType | None) -> bool:
    """Whether `frame` is aim's own code (which only Python calls, never C++), not this module's handlers."""
    if frame is None:
        return False
    name = frame.f_code.co_filename
    return name.startswith(_AIM_CODE) and name != _THIS_FILE


def _on_signal(signum: int, frame: FrameType | None) -> None:
    """Signal handler: unwind the stack (temp files removed, finished outputs kept) from aim's code."""
    if _received:  # a second signal, or the grace is over: now, wherever the process is
        _raise_now()
    _received.append(signum)
    if _in_aim_code(frame):
        _raise_now()
    _profile_before.append(sys.getprofile())
    sys.setprofile(_raise_in_aim_code)
    timer = threading.Timer(GRACE_S, _thread.interrupt_main, args=(signal.Signals(signum),))
    timer.daemon = True  # interrupt_main only sets the signal's flag: no OS signal, no EINTR in other threads
    timer.start()


def _raise_in_aim_code(frame: FrameType, _event: str, _arg: Any) -> None:
    """Profile hook while a signal waits: raise it when aim's code calls, is called or returns."""
    if _in_aim_code(frame):
        _raise_now()


def _raise_now() -> None:
    """Raise the recorded interrupt; ignore further signals so that a second Ctrl-C cannot cut the cleanup short."""
    if threading.current_thread() is threading.main_thread():  # handlers and this profile hook are the main thread's
        if sys.getprofile() is _raise_in_aim_code:
            sys.setprofile(_profile_before[0])
        for signum in (signal.SIGINT, signal.SIGTERM):  # aim's own handlers only
            if signal.getsignal(signum) is _on_signal:
                signal.signal(signum, signal.SIG_IGN)
    raise Interrupted(_received[0])


def install_handlers() -> None:
    """Route SIGINT and SIGTERM to `Interrupted` (call from the main thread; again is harmless)."""
    if _received:
        return  # already unwinding: keep ignoring further signals
    signal.signal(signal.SIGINT, _on_signal)
    signal.signal(signal.SIGTERM, _on_signal)


def raise_if_received() -> None:
    """Raise the interrupt now if a signal arrived: not raised yet, or a library swallowed it (a bare except)."""
    if _received:
        _raise_now()


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
