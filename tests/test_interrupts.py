"""An interrupt at any moment of the process's life exits 130 (SIGINT) or 143 (SIGTERM) with one line.

"Any moment" starts when aim's handlers are installed, which the tests wait for (the kernel's record of the
process's caught signals), so a loaded machine cannot move the signal into the interpreter's own start-up.
The window before the handlers has its own tests: the signal's default action, and nothing written.
"""

from __future__ import annotations

import signal
import subprocess
import sys
import time

import pytest

from aim_cli import interrupts
from aim_cli.errors import Interrupted
from tests.conftest import MARKER_TIMEOUT_S, REPO, aim_env, signal_handlers_installed, wait_for_signal_handlers

# Delays after the handlers are installed: the imports of typer, torch and transformers, model loading, the
# work and shutdown. Not a synchronisation: each moment has the same right answer (a clean finish, or the
# signal's code with one line), the spread only makes it likely that each phase is hit on a quiet machine.
DELAYS_S = (0.0, 0.05, 0.15, 0.3, 0.5, 0.8, 1.1, 1.5, 2.0, 2.8)
COMMAND = ("classify", "--seed", "0")


@pytest.fixture(scope="module")
def finished_stdout() -> str:
    """What an uninterrupted `aim classify` prints: a run the signal met at shutdown has printed all of it."""
    done = subprocess.run(
        [sys.executable, "-m", "aim_cli", *COMMAND],
        capture_output=True,
        text=True,
        env=aim_env(),
        cwd=REPO,
        timeout=MARKER_TIMEOUT_S,
    )
    assert done.returncode == 0, done.stderr
    return done.stdout


def _interrupt_after(delay: float, signum: int) -> tuple[int, str, str]:
    """Start `aim classify`, send `signum` `delay` seconds after its handlers are installed; (code, stdout, stderr)."""
    process = subprocess.Popen(
        [sys.executable, "-m", "aim_cli", *COMMAND],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=aim_env(),
        cwd=REPO,
    )
    try:
        wait_for_signal_handlers(process)
        time.sleep(delay)  # the moment to interrupt (see DELAYS_S), not a wait for something
        process.send_signal(signum)
        stdout, stderr = process.communicate(timeout=MARKER_TIMEOUT_S)
    finally:
        if process.poll() is None:
            process.kill()
            process.communicate()
    return process.returncode, stdout, stderr


def _assert_interrupted(signum: int, expected: int, code: int, stdout: str, stderr: str, finished: str) -> None:
    """A clean finish, the signal's code with one line, or the signal's code after a complete run (shutdown)."""
    lines = [line for line in stderr.splitlines() if line.strip()]
    if code == 0:  # the run finished before the signal: nothing to report
        assert stdout == finished, stderr
        return
    assert code == expected, (code, stderr)
    name = signal.Signals(signum).name
    if not lines and stdout == finished:  # the signal met the interpreter's shutdown: the work was all done
        return
    assert len(lines) == 1 and lines[0].startswith(f"aim: interrupted ({name})"), stderr


@pytest.mark.parametrize("delay", DELAYS_S)
def test_sigint_at_any_moment_exits_130_with_one_line(delay, finished_stdout):
    code, stdout, stderr = _interrupt_after(delay, signal.SIGINT)
    _assert_interrupted(signal.SIGINT, 130, code, stdout, stderr, finished_stdout)


@pytest.mark.parametrize("delay", DELAYS_S[::3])
def test_sigterm_at_any_moment_exits_143_with_one_line(delay, finished_stdout):
    code, stdout, stderr = _interrupt_after(delay, signal.SIGTERM)
    _assert_interrupted(signal.SIGTERM, 143, code, stdout, stderr, finished_stdout)


@pytest.mark.parametrize("signum, code", [(signal.SIGINT, 130), (signal.SIGTERM, 143)])
def test_a_signal_before_the_handlers_ends_the_process_and_writes_nothing(tmp_path, signum, code):
    """Sent as the interpreter starts, before any aim code can run: the process ends unsuccessfully and no
    output or temp file exists. Python decides how: killed by the signal's default action, or (SIGINT, while
    its own site start-up runs) "Fatal Python error" and exit 1; should aim's handlers win the race, 130/143."""
    output = tmp_path / "out.jsonl"
    process = subprocess.Popen(
        [sys.executable, "-m", "aim_cli", "classify", "--seed", "0", "-o", str(output)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=aim_env(),
        cwd=tmp_path,
    )
    early = not signal_handlers_installed(process.pid)  # Popen returns once the interpreter is exec'd
    process.send_signal(signum)
    _, stderr = process.communicate(timeout=MARKER_TIMEOUT_S)
    if early and process.returncode != code:
        assert process.returncode == -signum or (
            process.returncode == 1 and stderr.startswith("Fatal Python error: ") and "KeyboardInterrupt" in stderr
        ), (process.returncode, stderr)
    else:  # aim's handlers were in place after all: its own answer, said while starting
        assert process.returncode == code, (process.returncode, stderr)
        assert "aim: interrupted" in stderr and "Traceback" not in stderr, stderr
    assert list(tmp_path.iterdir()) == [], "nothing may be written when a run is stopped before it starts"


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
