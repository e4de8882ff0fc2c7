"""Shared test helpers: run the real CLI, offline (in this process where the process itself is not under test)."""

from __future__ import annotations

import contextlib
import io
import os
import signal
import subprocess
import sys
import threading
import time
import warnings
from collections.abc import Callable, Generator
from pathlib import Path
from typing import IO, Any

import pytest
import torch
from hypothesis import settings

# Property tests draw the same examples on every run, so CI's verdict on a commit is the commit's, not
# the draw's; `HYPOTHESIS_PROFILE=explore make test` draws fresh ones to look for new failures. An
# example found that way becomes an @example of its test.
settings.register_profile("repeatable", derandomize=True)
settings.register_profile("explore", derandomize=False)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "repeatable"))

REPO = Path(__file__).resolve().parents[1]
# How long a test waits for something a child process writes before it fails: generous, because a
# shared 2-core machine at a load near 8 can take a minute to import torch. A wait ends as soon as
# the marker appears, so the bound costs nothing when things work.
MARKER_TIMEOUT_S = 300.0


def aim_env(extra: dict[str, str] | None = None) -> dict[str, str]:
    """The environment for CLI runs: offline hub, no colour codes in captured output."""
    env = dict(os.environ)
    # One thread: the tiny demo models run far slower when threads fight over 2 shared cores.
    env.update(
        {"HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "NO_COLOR": "1", "COLUMNS": "200", "OMP_NUM_THREADS": "1"}
    )
    env.pop("AIM_DEBUG", None)
    if extra:
        env.update(extra)
    return env


def run_aim(
    *args: str,
    env: dict[str, str] | None = None,
    cwd: Path | None = None,
    timeout: int = 600,
    stdin: str | None = None,
    process: bool = False,
) -> subprocess.CompletedProcess[str]:
    """Run the CLI with ARGS and capture its output: in this process (the same entry point, its own
    stdout, stderr and empty stdin), or as `python -m aim_cli` with `process=True`, a custom environment
    or standard input (what only a process has: its environment at start-up, a real stdin)."""
    if not process and env is None and stdin is None:
        return _run_in_process(list(args), cwd)
    return subprocess.run(
        [sys.executable, "-m", "aim_cli", *args],
        capture_output=True,
        text=True,
        env=aim_env(env),
        cwd=cwd or REPO,
        timeout=timeout,
        input=stdin,
    )


def _run_in_process(args: list[str], cwd: Path | None) -> subprocess.CompletedProcess[str]:
    """`aim ARGS` through aim_cli.entry.main with this process's state saved and restored around it.

    Saves a torch import and a model load per test (most of a CLI test's time); the process-level
    behaviour (signals, pipes, exit codes of the executable) keeps its own subprocess tests.
    """
    from aim_cli.cli.common import err_console, out_console
    from aim_cli.entry import main

    out, err = io.StringIO(), io.StringIO()
    saved_env, saved_cwd = dict(os.environ), os.getcwd()
    saved_signals = {sig: signal.getsignal(sig) for sig in (signal.SIGINT, signal.SIGTERM)}
    saved_showwarning, saved_stdin = warnings.showwarning, sys.stdin
    saved_widths = (err_console._width, out_console._width)
    os.environ.clear()
    os.environ.update(aim_env())
    err_console.width = out_console.width = 200  # what COLUMNS=200 gives the subprocess
    code: object = 0
    try:
        os.chdir(cwd or REPO)
        sys.stdin = io.StringIO("")
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err), warnings.catch_warnings():
            try:
                main(args)
            except SystemExit as exit_:
                code = exit_.code
    finally:
        os.chdir(saved_cwd)
        os.environ.clear()
        os.environ.update(saved_env)
        for sig, handler in saved_signals.items():
            signal.signal(sig, handler)
        warnings.showwarning, sys.stdin = saved_showwarning, saved_stdin
        err_console._width, out_console._width = saved_widths
    returncode = code if isinstance(code, int) else (0 if code is None else 1)
    return subprocess.CompletedProcess(["aim", *args], returncode, out.getvalue(), err.getvalue())


def signal_handlers_installed(pid: int) -> bool:
    """True once process `pid` catches SIGTERM: aim installs its SIGINT and SIGTERM handlers together,
    first thing (aim_cli/entry.py), and nothing before them catches SIGTERM (the kernel's SigCgt mask)."""
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except FileNotFoundError:
        return False  # gone already
    caught = next(int(line.split()[1], 16) for line in status.splitlines() if line.startswith("SigCgt:"))
    return bool(caught & (1 << (signal.SIGTERM - 1)))


def wait_for_signal_handlers(process: subprocess.Popen[str], timeout: float = MARKER_TIMEOUT_S) -> None:
    """Block until `process` has aim's interrupt handlers installed; fail if it ends or `timeout` passes first."""
    if not Path(f"/proc/{process.pid}/status").exists():
        pytest.skip("needs /proc/PID/status (Linux) to see when the handlers are installed")
    wait_until(
        lambda: signal_handlers_installed(process.pid),
        f"aim's signal handlers in process {process.pid}",
        process,
        timeout,
    )


def wait_until(
    condition: Callable[[], bool],
    what: str,
    process: subprocess.Popen[str] | None = None,
    timeout: float = MARKER_TIMEOUT_S,
) -> None:
    """Poll `condition` until it holds; fail naming `what` if `process` ends first or `timeout` passes."""
    deadline = time.monotonic() + timeout
    while not condition():
        if process is not None and process.poll() is not None:
            if condition():
                return
            pytest.fail(f"the process exited ({process.returncode}) before {what} appeared")
        if time.monotonic() > deadline:
            pytest.fail(f"{what} did not appear within {timeout:g} s")
        time.sleep(0.01)  # the polling interval, not a synchronisation: the condition decides


class LineReader:
    """Reads a child's pipe on a thread, so a test can wait for a line with a timeout and still get all the text."""

    def __init__(self, stream: IO[str]) -> None:
        """Start reading `stream` (a text pipe of a Popen) until its end."""
        self._lines: list[str] = []
        self._changed = threading.Condition()
        self._done = False
        self._thread = threading.Thread(target=self._read, args=(stream,), daemon=True)
        self._thread.start()

    def _read(self, stream: IO[str]) -> None:
        for line in stream:
            with self._changed:
                self._lines.append(line)
                self._changed.notify_all()
        with self._changed:
            self._done = True
            self._changed.notify_all()

    def wait_for(self, fragment: str, timeout: float = MARKER_TIMEOUT_S) -> None:
        """Block until a line containing `fragment` has been read; fail if the pipe ends or `timeout` passes first."""
        with self._changed:
            found = self._changed.wait_for(
                lambda: self._done or any(fragment in line for line in self._lines), timeout=timeout
            )
            text = "".join(self._lines)
            if not found or not any(fragment in line for line in self._lines):
                pytest.fail(f"{fragment!r} not written within {timeout:g} s; the pipe held: {text!r}")

    def text(self, timeout: float = MARKER_TIMEOUT_S) -> str:
        """Everything the pipe carried, once it has ended (call after the process exits)."""
        self._thread.join(timeout)
        with self._changed:
            return "".join(self._lines)


def assert_user_error(result: subprocess.CompletedProcess[str], code: int, *fragments: str) -> None:
    """A user error: given exit code, a short message naming the problem, no traceback."""
    assert result.returncode == code, (result.returncode, result.stdout, result.stderr)
    assert "Traceback" not in result.stderr, result.stderr
    for fragment in fragments:
        assert fragment.lower() in result.stderr.lower(), (fragment, result.stderr)


def pytest_configure(config: pytest.Config) -> None:
    """In-process tests use one thread too, and never reach a model hub."""
    torch.set_num_threads(1)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")


@pytest.hookimpl(hookwrapper=True)
def pytest_make_collect_report(collector: pytest.Collector) -> Generator[None, Any, None]:
    """With AIM_REQUIRE_EXTRAS=1 (the extras' make targets, so CI), a test file skipped whole fails instead:
    its extra is missing (pytest.importorskip at the top), which there means a broken install."""
    outcome = yield
    report = outcome.get_result()
    if os.environ.get("AIM_REQUIRE_EXTRAS") == "1" and report.skipped and isinstance(collector, pytest.Module):
        reason = report.longrepr[2] if isinstance(report.longrepr, tuple) else report.longrepr
        report.outcome = "failed"
        report.longrepr = f"{collector.nodeid} skipped whole ({reason}), but AIM_REQUIRE_EXTRAS=1 requires its extra"


@pytest.fixture
def aim():
    """The run_aim helper as a fixture."""
    return run_aim
