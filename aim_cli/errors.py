"""User-facing errors: one line, a fix, and the exit code DESIGN.md assigns."""

from __future__ import annotations

import signal
from dataclasses import dataclass
from pathlib import Path

EXIT_OK = 0
EXIT_PARTIAL = 1  # some inputs failed, the rest were written
EXIT_USAGE = 2  # usage, profile, model or data error
EXIT_SIGINT = 130  # 128 + SIGINT, what shells report for Ctrl-C
EXIT_SIGTERM = 143  # 128 + SIGTERM


class AimError(Exception):
    """An error caused by the user's input; shown as one line without a traceback."""

    exit_code: int = EXIT_USAGE

    def __init__(self, message: str, hint: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint

    def __str__(self) -> str:
        return f"{self.message} ({self.hint})" if self.hint else self.message


class ProfileError(AimError):
    """A profile file or a command-line override is invalid."""


class ModelError(AimError):
    """A model could not be found, loaded, or does not fit the task."""


class InputError(AimError):
    """An input file (image, mask, prompt, dataset) is missing or unreadable."""


class Interrupted(BaseException):
    """Raised by the signal handlers; a BaseException so that no `except Exception` swallows it.

    Not a KeyboardInterrupt: typer turns those into a silent exit code, which would skip the
    message and the cleanup report.
    """

    def __init__(self, signum: int) -> None:
        super().__init__(signum)
        self.signum = signum

    @property
    def exit_code(self) -> int:
        """The conventional shell exit code for the signal."""
        return EXIT_SIGTERM if self.signum == signal.SIGTERM else EXIT_SIGINT

    @property
    def name(self) -> str:
        """'SIGINT' or 'SIGTERM'."""
        return signal.Signals(self.signum).name


@dataclass(frozen=True)
class FailedInput:
    """An input that could not be processed, and a one-line reason that names it."""

    path: Path
    reason: str
