"""The layers: the public API every command calls, the import contract, the run-summary line."""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys

import pytest

from aim_cli import api
from tests.conftest import REPO


def test_every_public_name_resolves_through_the_package_root():
    """`aim.NAME` is aim_cli.api's NAME for every public name, and a task name is its function, not a module."""
    import aim_cli

    for name in aim_cli.__all__:
        assert getattr(aim_cli, name) is getattr(api, name), name
    for task in ("load_model", "classify", "segment", "generate", "calibrate", "evaluate", "verify", "write_report"):
        assert callable(getattr(aim_cli, task)) and not isinstance(getattr(aim_cli, task), type(api)), task


def test_an_unknown_public_name_is_an_attribute_error():
    import aim_cli

    with pytest.raises(AttributeError, match="no_such_thing"):
        aim_cli.no_such_thing  # noqa: B018


def test_the_string_keyed_door_is_gone():
    """The CLI calls the typed API; no `aim_cli.api.commands` table of names returning Any."""
    assert importlib.util.find_spec("aim_cli.api.commands") is None


@pytest.mark.skipif(importlib.util.find_spec("importlinter") is None, reason="import-linter is in the dev extra")
def test_the_import_contracts_hold():
    """The layers of docs/design.md and the CLI-through-the-API rule (pyproject's [tool.importlinter])."""
    env = dict(os.environ, PYTHONPATH=str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    code = "import sys; from importlinter.cli import lint_imports_command; sys.exit(lint_imports_command())"
    result = subprocess.run(
        [sys.executable, "-c", code], cwd=REPO, env=env, capture_output=True, text=True, timeout=300
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-2000:]
    assert "2 kept, 0 broken" in result.stdout


@pytest.mark.skipif(importlib.util.find_spec("grimp") is None, reason="grimp comes with import-linter (dev extra)")
def test_no_module_imports_itself_through_others():
    """No import cycle between any two modules, not only between folders (the package root re-exports
    the API, which reads its list of public names back: that pair is the one allowed)."""
    import grimp

    graph = grimp.build_graph("aim_cli")
    allowed = {"aim_cli", "aim_cli.api"}
    cycles = [
        (importer, imported)
        for importer in sorted(graph.modules)
        for imported in sorted(graph.find_modules_directly_imported_by(importer))
        if not {importer, imported} <= allowed and graph.chain_exists(importer=imported, imported=importer)
    ]
    assert cycles == []


def test_summary_line_of_a_seeded_plan_without_focus():
    plan = api.plan({"utility": {"sigma": 1.5}, "noise": {"seed": 7}}, ["a", "b"])
    assert plan.summary() == "sigma 1.5 | seed 7"


def test_summary_line_names_focus_targets_and_keyed_noise(monkeypatch):
    monkeypatch.setenv("AIM_TEST_LAYERS_KEY", "secret")
    profile = {
        "utility": {"sigma": 0.5},
        "focus": {"sigma": 2.0, "targets": [{"class": "b", "direction": "down"}]},
        "noise": {"key_env": "AIM_TEST_LAYERS_KEY"},
    }
    plan = api.plan(profile, ["a", "b", "c"])
    assert plan.summary() == "sigma 0.5 | focus b:down sigma 2 | keyed noise"
