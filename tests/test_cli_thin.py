"""The command line is a thin client of the public API: every command parses options, calls it, prints."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

CLI = Path(__file__).resolve().parent.parent / "aim_cli" / "cli"
MAX_COMMAND_LINES = 60
# What a command may not import (run outputs, resume, engines, metrics, the pipelines) is
# pyproject's import contract, which tests/test_layers.py runs.


def _commands() -> list[tuple[str, ast.FunctionDef]]:
    """Every function registered as a Typer command, with its file."""
    found = []
    for path in sorted(CLI.glob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.FunctionDef) and any(
                isinstance(d, ast.Call) and isinstance(d.func, ast.Attribute) and d.func.attr == "command"
                for d in node.decorator_list
            ):
                found.append((f"{path.name}:{node.name}", node))
    return found


def test_there_are_commands_to_check():
    """The scan finds the commands (a scan that finds none would pass vacuously)."""
    names = {name.split(":")[1] for name, _ in _commands()}
    assert {"classify", "segment", "generate", "calibrate", "serve", "eval_command", "verify", "report"} <= names


@pytest.mark.parametrize(("name", "node"), _commands(), ids=[name for name, _ in _commands()])
def test_each_command_is_at_most_60_lines(name, node):
    """Decorator to last line: options, one call into the API, printing."""
    first = min([node.lineno, *(d.lineno for d in node.decorator_list)])
    lines = node.end_lineno - first + 1
    assert lines <= MAX_COMMAND_LINES, f"{name} is {lines} lines"
