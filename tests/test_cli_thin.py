"""The command line is a thin client of the public API: short commands, no pipeline logic in cli/."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

CLI = Path(__file__).resolve().parent.parent / "aim_cli" / "cli"
MAX_COMMAND_LINES = 60
# What a command may not do itself: run-output planning and resume, engine choice, the old
# string-keyed door, or the task pipelines. (The import contract forbids the packages.)
FORBIDDEN_IMPORTS = ("aim_cli.outputs", "aim_cli.engines", "aim_cli.api.commands", "aim_cli.tasks", "aim_cli.metrics")


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


def test_cli_imports_no_run_logic():
    """Resume, output planning, engine choice and evaluation live in the API or below, not in cli/."""
    offenders = []
    for path in sorted(CLI.glob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith(FORBIDDEN_IMPORTS):
                offenders.append(f"{path.name}:{node.lineno} imports {node.module}")
    assert not offenders, offenders
