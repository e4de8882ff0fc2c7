"""`aim --help`, `aim --version` and every `aim COMMAND --help` start without torch, numpy or PIL (they load when a
command runs), which keeps them under half a second."""

from __future__ import annotations

import subprocess
import sys

import pytest

from tests.conftest import REPO, aim_env

PROBE = """
import sys
from aim_cli.entry import main
sys.argv = ["aim", *sys.argv[1:]]
try:
    main()
except SystemExit as exit:
    code = exit.code
HEAVY = ("torch", "transformers", "timm", "torchvision", "numpy", "PIL", "ray", "lm_eval")
heavy = sorted(name for name in HEAVY if name in sys.modules)
print("HEAVY:" + ",".join(heavy), file=sys.stderr)
sys.exit(code)
"""


@pytest.mark.parametrize(
    "args",
    [
        ["--help"],
        ["--version"],
        *([command, "--help"] for command in ("classify", "segment", "generate", "calibrate", "serve", "eval")),
    ],
)
def test_help_and_version_leave_torch_unloaded(args):
    result = subprocess.run(
        [sys.executable, "-c", PROBE, *args], capture_output=True, text=True, env=aim_env(), cwd=REPO, timeout=120
    )
    assert result.returncode == 0, result.stderr
    assert "HEAVY:\n" in result.stderr, result.stderr  # none of them imported
    assert result.stdout.strip()


def test_generate_help_names_the_dtypes_the_loader_accepts():
    from aim_cli.cli.generate import DTYPE_NAMES
    from aim_cli.models.language import DTYPES

    assert tuple(DTYPES) == DTYPE_NAMES
