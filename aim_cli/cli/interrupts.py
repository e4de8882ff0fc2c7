"""SIGINT and SIGTERM as one exception that unwinds cleanly through every writer."""

from __future__ import annotations

import signal
from types import FrameType

from aim_cli.errors import Interrupted


def _raise_interrupted(signum: int, _frame: FrameType | None) -> None:
    """Signal handler: unwind the stack so temp files are removed and finished outputs kept."""
    # Ignore further signals while unwinding: a second Ctrl-C must not cut the cleanup short.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    raise Interrupted(signum)


def install_handlers() -> None:
    """Route SIGINT and SIGTERM to `Interrupted` (call once, from the main thread)."""
    signal.signal(signal.SIGINT, _raise_interrupted)
    signal.signal(signal.SIGTERM, _raise_interrupted)
