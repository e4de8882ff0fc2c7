"""Shared test helpers: run the real CLI in a subprocess, offline."""

from __future__ import annotations

import os
import subprocess
import sys
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
    *args: str, env: dict[str, str] | None = None, cwd: Path | None = None, timeout: int = 600, stdin: str | None = None
) -> subprocess.CompletedProcess[str]:
    """Run `python -m aim_cli ARGS` and capture its output."""
    return subprocess.run(
        [sys.executable, "-m", "aim_cli", *args],
        capture_output=True,
        text=True,
        env=aim_env(env),
        cwd=cwd or REPO,
        timeout=timeout,
        input=stdin,
    )


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
