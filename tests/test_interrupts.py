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
def finished() -> tuple[str, list[str]]:
    """What an uninterrupted `aim classify` prints: stdout, and its stderr lines (the run's header)."""
    done = subprocess.run(
        [sys.executable, "-m", "aim_cli", *COMMAND],
        capture_output=True,
        text=True,
        env=aim_env(),
        cwd=REPO,
        timeout=MARKER_TIMEOUT_S,
    )
    assert done.returncode == 0, done.stderr
    return done.stdout, _lines(done.stderr)


def _lines(text: str) -> list[str]:
    """The lines of `text` that are not blank."""
    return [line for line in text.splitlines() if line.strip()]


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


def _assert_interrupted(signum: int, expected: int, run: tuple[int, str, str], finished: tuple[str, list[str]]) -> None:
    """A clean finish; or what the run had printed so far, then the signal's code with one line; or, when the
    signal met the interpreter's shutdown after a complete run, the signal's code (or, once Python has put back
    the default action in its last steps, death by the signal) and nothing more."""
    code, stdout, stderr = run
    finished_stdout, finished_stderr = finished
    lines = _lines(stderr)
    if code == 0:  # the run finished before the signal: nothing to report
        assert stdout == finished_stdout, stderr
        return
    if stdout == finished_stdout and lines == finished_stderr:  # the work was all done
        assert code in (expected, -signum), (code, stderr)
        return
    assert code == expected, (code, stderr)
    name = signal.Signals(signum).name
    assert lines, (code, stdout)
    *before, last = lines
    assert last.startswith(f"aim: interrupted ({name})"), stderr
    assert before == finished_stderr[: len(before)], stderr  # only the run's own lines came before it


@pytest.mark.parametrize("delay", DELAYS_S)
def test_sigint_at_any_moment_exits_130_with_one_line(delay, finished):
    _assert_interrupted(signal.SIGINT, 130, _interrupt_after(delay, signal.SIGINT), finished)


@pytest.mark.parametrize("delay", DELAYS_S[::3])
def test_sigterm_at_any_moment_exits_143_with_one_line(delay, finished):
    _assert_interrupted(signal.SIGTERM, 143, _interrupt_after(delay, signal.SIGTERM), finished)


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


# A stand-in for a C++ extension's Python callback: code outside aim, where raising could abort the process.
_LIBRARY = '''
import os, signal, time

def spin(signum, seconds):
    """Signal this process, then run for `seconds`; say so only if no interrupt was raised in here."""
    os.kill(os.getpid(), signum)
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        pass
    print("library call finished", flush=True)
'''

# Run as a file of its own folder, which stands for aim's code (interrupts._AIM_CODE points there).
_AIM_SIDE = """
import os, signal, sys, time
from aim_cli import interrupts
from aim_cli.errors import Interrupted

interrupts._AIM_CODE = os.path.dirname(os.path.abspath(__file__)) + os.sep
interrupts.GRACE_S = float(sys.argv[3])
interrupts.install_handlers()
library = {}
exec(compile(sys.argv[4], "/a/library/outside/aim.py", "exec"), library)
try:
    library["spin"](int(sys.argv[1]), float(sys.argv[2]))
    while True:
        time.sleep(0.01)  # aim's own code calling out: a deferred interrupt is raised here
except Interrupted as exc:
    tb, files = exc.__traceback__, []
    while tb is not None:
        files.append(tb.tb_frame.f_code.co_filename)
        tb = tb.tb_next
    interrupted = [name for name in files if name != interrupts.__file__][-1]  # the frame the handler ran in
    where = "aim" if interrupted == os.path.abspath(__file__) else "library"
    print(f"interrupted ({exc.name}) in {where}", flush=True)
    sys.exit(exc.exit_code)
"""


def _signal_in_library(tmp_path, signum: int, spin_s: float, grace_s: float) -> tuple[int, list[str]]:
    """Run the aim-side script, whose library call signals the process and spins; (exit code, lines printed)."""
    script = tmp_path / "aim_side.py"
    script.write_text(_AIM_SIDE)
    done = subprocess.run(
        [sys.executable, str(script), str(int(signum)), str(spin_s), str(grace_s), _LIBRARY],
        capture_output=True,
        text=True,
        env=aim_env(),
        cwd=REPO,
        timeout=MARKER_TIMEOUT_S,
    )
    assert "Traceback" not in done.stderr, done.stderr
    return done.returncode, done.stdout.splitlines()


@pytest.mark.parametrize("signum, code", [(signal.SIGINT, 130), (signal.SIGTERM, 143)])
def test_a_signal_outside_aims_code_is_raised_when_aims_code_runs_again(tmp_path, signum, code):
    """The library call (a C++ callback, in life) runs to its end; the interrupt lands in aim's next step."""
    exit_code, lines = _signal_in_library(tmp_path, signum, spin_s=0.5, grace_s=600.0)
    name = signal.Signals(signum).name
    assert (exit_code, lines) == (code, ["library call finished", f"interrupted ({name}) in aim"])


def test_a_signal_outside_aims_code_is_raised_there_once_the_grace_is_over(tmp_path):
    """A library that keeps the process for longer than GRACE_S is interrupted where it runs: a stop is never lost."""
    exit_code, lines = _signal_in_library(tmp_path, signal.SIGTERM, spin_s=600.0, grace_s=0.2)
    assert (exit_code, lines) == (143, ["interrupted (SIGTERM) in library"])
