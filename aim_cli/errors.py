"""User-facing errors: one line, a fix, and the exit code DESIGN.md assigns."""

from __future__ import annotations

EXIT_OK = 0
EXIT_PARTIAL = 1  # some inputs failed, the rest were written
EXIT_USAGE = 2  # usage, profile, model or data error


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
