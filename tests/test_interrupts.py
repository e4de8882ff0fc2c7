"""An interrupt at any moment of the process's life exits 130 (SIGINT) or 143 (SIGTERM) with one line."""

from __future__ import annotations

import signal
import subprocess
import sys
import time

import pytest

from aim_cli import interrupts
from aim_cli.errors import Interrupted
from tests.conftest import REPO, aim_env

# From just after the interpreter's own start-up (site imports, before any aim code: out of reach)
# through the imports of typer, torch and transformers, model loading, the work and shutdown.
DELAYS_S = (0.12, 0.25, 0.4, 0.6, 0.85, 1.1, 1.5, 2.0, 2.6, 3.4)


def _interrupt_after(delay: float, signum: int) -> tuple[int, str]:
    """Start `aim classify`, send `signum` after `delay` seconds, return (exit code, stderr)."""
    process = subprocess.Popen(
        [sys.executable, "-m", "aim_cli", "classify", "--seed", "0"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        env=aim_env(),
        cwd=REPO,
    )
    time.sleep(delay)
    process.send_signal(signum)
    _, stderr = process.communicate(timeout=120)
    return process.returncode, stderr


@pytest.mark.parametrize("delay", DELAYS_S)
def test_sigint_at_any_moment_exits_130_with_one_line(delay):
    code, stderr = _interrupt_after(delay, signal.SIGINT)
    lines = [line for line in stderr.splitlines() if line.strip()]
    if code == 0:  # the run finished before the signal: nothing to report
        return
    assert code == 130, stderr
    assert len(lines) == 1 and lines[0].startswith("aim: interrupted (SIGINT)"), stderr


@pytest.mark.parametrize("delay", DELAYS_S[::3])
def test_sigterm_at_any_moment_exits_143_with_one_line(delay):
    code, stderr = _interrupt_after(delay, signal.SIGTERM)
    if code == 0:
        return
    assert code == 143, stderr
    lines = [line for line in stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("aim: interrupted (SIGTERM)"), stderr


def _wrapped(inner: BaseException, outer: type[Exception]) -> Exception:
    """`outer` raised while handling `inner`, as a C extension's import or a library would."""
    try:
        try:
            raise inner
        except BaseException as exc:
            raise outer("wrapped") from exc
    except Exception as wrapped:
        return wrapped


@pytest.mark.parametrize("outer", [ImportError, SystemError, RuntimeError, ValueError])
def test_an_interrupt_wrapped_by_a_library_is_still_an_interrupt(outer):
    found = interrupts.as_interrupt(_wrapped(Interrupted(signal.SIGTERM), outer))
    assert found is not None and found.exit_code == 143


def test_a_keyboard_interrupt_from_a_restored_default_handler_is_sigint():
    found = interrupts.as_interrupt(_wrapped(KeyboardInterrupt(), RuntimeError))
    assert found is not None and found.exit_code == 130


def test_a_recorded_signal_turns_any_later_error_into_the_interrupt(monkeypatch):
    """A library may swallow the exception whole and raise its own: the signal that arrived still counts."""
    assert interrupts.as_interrupt(ValueError("unrelated")) is None
    monkeypatch.setattr(interrupts, "_received", [signal.SIGINT])
    found = interrupts.as_interrupt(ValueError("a C extension's own error after the signal"))
    assert found is not None and found.exit_code == 130
