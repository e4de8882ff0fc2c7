"""The Python API examples run as written (in a scratch directory, in order).

docs/api.md holds the full examples; README.md's "Python API" section holds a short one. Both
are executed, so neither can drift from the code.
"""

from __future__ import annotations

import os
import re

import pytest

from tests.conftest import REPO

API_PAGE = REPO / "docs" / "api.md"
README_SECTION = "## Python API"


def python_blocks(text: str) -> list[str]:
    """Every ```python block of a Markdown text, in order."""
    return re.findall(r"```python\n(.*?)```", text, flags=re.DOTALL)


def api_examples(page: str) -> list[str]:
    """Every ```python block of the Python API page (all of docs/api.md), in order."""
    return python_blocks(page)


def readme_examples(readme: str) -> list[str]:
    """Every ```python block of README.md's Python API section, in order."""
    start = readme.index(README_SECTION)
    end = readme.find("\n## ", start + len(README_SECTION))
    return python_blocks(readme[start : end if end >= 0 else len(readme)])


def run_blocks(blocks: list[str], where: str, tmp_path, monkeypatch) -> None:
    """Execute the blocks in one namespace, in a scratch directory, naming the one that fails."""
    monkeypatch.chdir(tmp_path)
    saved = dict(os.environ)  # the examples set a noise key, as a deployment would
    namespace: dict[str, object] = {"__name__": "readme_example"}
    try:
        for number, block in enumerate(blocks, 1):
            try:
                exec(compile(block, f"{where} example {number}", "exec"), namespace)
            except Exception as exc:  # name the block that failed
                pytest.fail(f"{where} example {number} failed: {exc!r}\n{block}")
    finally:
        os.environ.clear()
        os.environ.update(saved)


def test_the_section_has_examples():
    blocks = api_examples(API_PAGE.read_text(encoding="utf-8"))
    assert len(blocks) >= 3
    text = "\n".join(blocks)
    for name in (
        "Profile.load",
        "Profile.from_dict",
        "modulate",
        "logits_processor",
        "calibrate_logits",
        "expected_accuracy",
    ):
        assert name in text, name


def test_python_api_examples_run(tmp_path, monkeypatch, capsys):
    run_blocks(api_examples(API_PAGE.read_text(encoding="utf-8")), "docs/api.md Python API", tmp_path, monkeypatch)
    printed = capsys.readouterr().out
    assert "sigma must be a finite number >= 0" in printed


def test_readme_python_api_example_runs(tmp_path, monkeypatch, capsys):
    blocks = readme_examples((REPO / "README.md").read_text(encoding="utf-8"))
    assert blocks, "README.md's Python API section has no ```python example"
    text = "\n".join(blocks)
    for name in ("Profile.from_dict", "modulate", "expected_accuracy"):
        assert name in text, name
    run_blocks(blocks, "README Python API", tmp_path, monkeypatch)
    printed = capsys.readouterr().out.split()
    assert printed and 0.0 <= float(printed[-1]) <= 1.0  # the expected accuracy it prints
