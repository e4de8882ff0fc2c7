"""The README's "Python API" examples run as written (in a scratch directory, in order)."""

from __future__ import annotations

import os
import re

import pytest

from tests.conftest import REPO

SECTION = "## Python API"


def api_examples(readme: str) -> list[str]:
    """Every ```python block of the Python API section, in order."""
    start = readme.index(SECTION)
    end = readme.find("\n## ", start + len(SECTION))
    section = readme[start : end if end >= 0 else len(readme)]
    return re.findall(r"```python\n(.*?)```", section, flags=re.DOTALL)


def test_the_section_has_examples():
    blocks = api_examples((REPO / "README.md").read_text())
    assert len(blocks) >= 3
    text = "\n".join(blocks)
    for name in ("Profile.load", "Profile.from_dict", "modulate", "logits_processor", "calibrate_logits", "expected_accuracy"):
        assert name in text, name


def test_python_api_examples_run(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    saved = dict(os.environ)  # the examples set a noise key, as a deployment would
    namespace: dict[str, object] = {"__name__": "readme_example"}
    try:
        for number, block in enumerate(api_examples((REPO / "README.md").read_text()), 1):
            try:
                exec(compile(block, f"README Python API example {number}", "exec"), namespace)
            except Exception as exc:  # name the block that failed
                pytest.fail(f"README Python API example {number} failed: {exc!r}\n{block}")
    finally:
        os.environ.clear()
        os.environ.update(saved)
    printed = capsys.readouterr().out
    assert "sigma must be a finite number >= 0" in printed
