"""Without the eval extra, `aim eval` and `aim calibrate --task lm-eval` say how to install it (runs in every venv)."""

from __future__ import annotations

import io
import sys

import pytest


@pytest.mark.parametrize(
    "args",
    [
        ["eval", "--tasks", "mmlu", "--sigma", "0,1"],
        ["calibrate", "--task", "lm-eval", "--tasks", "mmlu", "--target-acc", "0.5"],
    ],
)
def test_missing_lm_eval_is_one_line_naming_the_extra(args, capsys, monkeypatch):
    """lm_eval not importable: exit 2, one line naming pip install 'aim-cli[eval]', no traceback."""
    from aim_cli.cli import main

    for name in [n for n in sys.modules if n.startswith("lm_eval.")]:
        monkeypatch.delitem(sys.modules, name)  # restored after the test (a venv with the extra)
    monkeypatch.setitem(sys.modules, "lm_eval", None)  # import lm_eval now raises ImportError
    monkeypatch.delitem(sys.modules, "aim_cli.integrations.lm_eval", raising=False)
    monkeypatch.setattr(sys, "stdin", io.StringIO(""))
    with pytest.raises(SystemExit) as exit_info:
        main([*args, "--device", "cpu", "--quiet"])
    err = capsys.readouterr().err
    assert exit_info.value.code == 2, err
    assert "pip install 'aim-cli[eval]'" in err and "Traceback" not in err
    assert len(err.strip().splitlines()) == 1, err


def test_calibrate_lm_eval_options_go_together(capsys, monkeypatch):
    """--tasks without --task lm-eval (and --data with it) is a one-line usage error."""
    from aim_cli.cli import main

    monkeypatch.setattr(sys, "stdin", io.StringIO(""))
    for args in (["--tasks", "mmlu"], ["--task", "lm-eval", "--tasks", "mmlu", "--data", "x.jsonl"]):
        with pytest.raises(SystemExit) as exit_info:
            main(["calibrate", "--target-acc", "0.5", *args, "--quiet"])
        err = capsys.readouterr().err
        assert exit_info.value.code == 2 and "--task lm-eval" in err, err
