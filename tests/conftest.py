"""Shared test helpers: run the real CLI, offline (in this process where the process itself is not under test)."""

from __future__ import annotations

import contextlib
import io
import os
import signal
import subprocess
import sys
import warnings
from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parents[1]


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


@pytest.fixture
def aim():
    """The run_aim helper as a fixture."""
    return run_aim
