"""Cases a hostile pass over the round-2 hardening found; each class is fixed at its root (issue 15)."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest
import torch

import aim_cli as aim
from aim_cli.calibration.datasets import manifest
from aim_cli.errors import InputError, ModelError
from aim_cli.io import read_regular_file
from tests.conftest import assert_user_error, run_aim


def _tokenizer(template: str | None):
    """A tiny fast tokenizer carrying `template` as its chat template."""
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    core = Tokenizer(models.WordLevel({"<unk>": 0, "<s>": 1, "</s>": 2, "a": 3}, unk_token="<unk>"))
    core.pre_tokenizer = pre_tokenizers.Whitespace()
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=core, bos_token="<s>", eos_token="</s>", unk_token="<unk>")
    tokenizer.chat_template = template
    return tokenizer


@pytest.mark.parametrize("steps", [26, 60])
def test_a_chat_template_squaring_an_integer_is_refused_at_once(steps):
    """60 squarings are 60 steps, past no step bound, but 2^60 bits of integer: refused before it is computed."""
    from aim_cli.models.chat_template import render_chat

    template = (
        "{% set ns = namespace(x=7) %}{% for i in range(" + str(steps) + ") %}"
        "{% set ns.x = ns.x * ns.x %}{% endfor %}{{ ns.x > 1 }}"
    )
    start = time.process_time()  # this process's CPU time: other jobs on the machine do not count
    with pytest.raises(ModelError, match="too large to compute"):
        render_chat(_tokenizer(template), [{"role": "user", "content": "hi"}], "tiny")
    assert time.process_time() - start < 5


def test_ordinary_integer_arithmetic_in_a_template_still_renders():
    from aim_cli.models.chat_template import render_chat

    text = render_chat(_tokenizer("{{ 12 * 34 }} {{ messages | length * 3 }}"), [{"role": "user", "content": "x"}], "t")
    assert text == "408 3"


@pytest.mark.parametrize(
    "suffix, row",
    [(".csv", "path,label\n\x00im0.png,circle\n"), (".jsonl", '{"path": "im0.png\\u0000", "label": "circle"}\n')],
)
def test_a_nul_byte_in_a_manifest_path_is_one_line(tmp_path, suffix, row):
    listing = tmp_path / f"m{suffix}"
    listing.write_text(row)
    with pytest.raises(InputError, match="NUL byte"):
        manifest(listing)


def test_the_file_gate_refuses_a_nul_byte_in_a_name(tmp_path):
    with pytest.raises(InputError, match="NUL byte"):
        read_regular_file(Path(str(tmp_path / "a") + "\x00b"), 100, InputError, "image")


@pytest.mark.parametrize("scale", [1e30, 3e38])
def test_huge_but_finite_logits_give_exact_answers_or_one_aim_error(scale):
    tied = torch.full((4, 3), scale)
    assert aim.expected_accuracy(tied, [0, 1, 2, 0], 1.0) == pytest.approx(1 / 3, abs=1e-9)
    assert aim.accuracy_curve(tied, [0, 1, 2, 0], [0.5, 1.0]) == pytest.approx([1 / 3, 1 / 3], abs=1e-9)
    spread = torch.randn(50, 10, generator=torch.Generator().manual_seed(0)) * (scale / 10)
    assert aim.expected_accuracy(spread, spread.argmax(1), 1.0) == 1.0
    with pytest.raises(aim.AimError, match="not reached"):
        aim.calibrate_logits(spread, spread.argmax(1), target_acc=0.5)


def test_float8_logits_are_refused_by_every_api_entry():
    logits, labels = torch.randn(4, 3).to(torch.float8_e4m3fn), [0, 1, 2, 0]
    calls = [
        lambda: aim.modulate(logits, aim.Profile(sigma=1.0)),
        lambda: aim.expected_accuracy(logits, labels, 1.0),
        lambda: aim.accuracy_curve(logits, labels, [1.0]),
        lambda: aim.win_probability(logits, labels, 1.0),
        lambda: aim.expected_recall(logits, labels, 1, 2.0),
        lambda: aim.calibrate_logits(logits, labels, target_acc=0.5),
    ]
    for call in calls:
        with pytest.raises(
            aim.InputError, match=r"floating-point torch tensor \(float16, bfloat16, float32 or float64\)"
        ):
            call()


def test_resume_refuses_a_line_it_would_drop_and_keeps_foreign_records(tmp_path):
    """--resume rewrites the file: a line that is not a record is refused, records of other inputs are kept."""
    out = tmp_path / "g.jsonl"
    mine = json.dumps({"prompt": "1+1=", "completion": "2", "note": "not this run's prompt"})
    out.write_text(mine + "\ngarbage\n")
    result = run_aim("generate", "--prompt", "23+45=", "-o", str(out), "--resume", "--seed", "0")
    assert_user_error(result, 2, "line 2", "not a record aim wrote")
    assert out.read_text() == mine + "\ngarbage\n"
    out.write_text(mine + "\n")
    result = run_aim("generate", "--prompt", "23+45=", "-o", str(out), "--resume", "--seed", "0")
    assert result.returncode == 0, result.stderr
    records = [json.loads(line) for line in out.read_text().splitlines()]
    assert records[0] == json.loads(mine) and [r["prompt"] for r in records] == ["1+1=", "23+45="]


def test_a_null_chat_template_is_no_template(tmp_path):
    from aim_cli.models.checkpoint_files import check_checkpoint

    (tmp_path / "tokenizer_config.json").write_text('{"chat_template": null}')
    check_checkpoint(str(tmp_path))  # no error: the checkpoint simply has no chat template
