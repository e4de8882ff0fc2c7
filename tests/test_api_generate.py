"""`aim.generate`: the typed task function `aim generate` runs; its completions equal the CLI's records."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest
import torch

import aim_cli as aim
from tests.conftest import run_aim

PROMPTS = ["12+7=", "30-4=", "45+45=", "8+8=", "23+45="]
RECORD_FIELDS = ("prompt", "completion", "prompt_tokens", "completion_tokens")


@pytest.fixture(scope="module")
def lm():
    """The demo arithmetic LM, loaded once as a Python user would."""
    return aim.load_model(task="generate", device="cpu")


def records(path: Path) -> list[dict]:
    """The JSON lines of an output file."""
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


def as_records(completions: list[aim.Completion]) -> list[dict]:
    """The fields of each completion that a CLI record holds."""
    rows = []
    for item in completions:
        row = {field: getattr(item, field) for field in RECORD_FIELDS}
        if item.clean_completion is not None:
            row["clean_completion"] = item.clean_completion
        rows.append(row)
    return rows


def cli_records(tmp_path: Path, name: str, *args: str) -> list[dict]:
    """`aim generate ARGS -o FILE` over PROMPTS (in this process); the records it wrote."""
    out = tmp_path / f"{name}.jsonl"
    prompt_args = [a for p in PROMPTS for a in ("--prompt", p)]
    result = run_aim("generate", *prompt_args, *args, "-o", str(out), "-q", "--device", "cpu")
    assert result.returncode == 0, result.stderr
    return records(out)


@pytest.mark.parametrize(
    ("cli_args", "profile", "options"),
    [
        # utility noise, greedy, with the clean completion beside it, in batches of 2
        (
            ("--sigma", "3", "--seed", "7", "--compare", "--batch-size", "2"),
            {"utility": {"sigma": 3.0}},
            {"seed": 7, "compare": True, "batch_size": 2},
        ),
        # utility noise and sampling
        (
            ("--sigma", "1.5", "--seed", "3", "--temperature", "1.5", "--top-k", "5", "--top-p", "0.95"),
            1.5,
            {"seed": 3, "temperature": 1.5, "top_k": 5, "top_p": 0.95},
        ),
        # focus on a word (a digit here), with a stop string and a token budget
        (
            ("--sigma", "0.5", "--focus", "9:up", "--focus-sigma", "8", "--seed", "11", "--stop", "1", "-n", "3"),
            aim.Profile(sigma=0.5, focus=["9:up"], focus_sigma=8.0, seed=11),
            {"stop": "1", "max_new_tokens": 3},
        ),
    ],
    ids=["sigma-compare", "sampling", "focus"],
)
def test_completions_equal_the_cli_records(tmp_path, cli_args, profile, options):
    expected = cli_records(tmp_path, "cli", *cli_args)
    completions = list(aim.generate(None, PROMPTS, profile, device="cpu", **options))
    assert as_records(completions) == [
        {k: v for k, v in r.items() if k in (*RECORD_FIELDS, "clean_completion")} for r in expected
    ]
    assert [c.index for c in completions] == list(range(len(PROMPTS)))
    # The API writes the very file the CLI writes.
    out = tmp_path / "api.jsonl"
    assert list(aim.generate(None, PROMPTS, profile, device="cpu", output=out, **options)) == completions
    assert records(out) == expected
    assert any(r["completion"] != str(eval(r["prompt"][:-1])) for r in expected)  # the noise changed some answers
    if "--focus" in cli_args:
        assert all(r["focus"] == ["9:up"] and r["focus_sigma"] == 8.0 for r in expected)


def test_a_python_user_loads_a_model_then_generates(lm):
    seen: list[str] = []
    done: list[int] = []
    run = aim.generate(lm, ["12+7=", "30-4=", "8+8="], None, batch_size=2, progress=done.append, notice=seen.append)
    assert isinstance(run, aim.Generation) and run.model is lm and len(run) == 3 and not run.streaming
    assert any(note.startswith("model: demo lm | sigma 0 |") and "greedy" in note for note in seen), seen
    completions = list(run)
    assert [c.completion for c in completions] == ["19", "26", "16"]  # sigma 0 is the clean demo model
    assert done == [2, 1]
    first = completions[0]
    assert isinstance(first, aim.Completion) and first.prompt == "12+7=" and first.clean_completion is None
    assert first.completion_tokens == len(first.token_ids) and first.prompt_tokens == len("12+7=") + 1
    with pytest.raises(dataclasses.FrozenInstanceError):
        first.completion = "20"  # type: ignore[misc]
    # One prompt as a str, a bare sigma, a seed: the same answer twice.
    once = list(aim.generate(lm, "23+45=", 1.5, seed=5))
    assert len(once) == 1 and once == list(aim.generate(lm, "23+45=", 1.5, seed=5))


def test_a_single_prompt_streams_its_text(lm, tmp_path):
    pieces: list[str] = []
    run = aim.generate(lm, ["12+7="], stream=pieces.append)
    assert run.streaming
    (item,) = list(run)
    assert "".join(pieces) == item.completion == "19"
    pieces.clear()  # streamed while the records file is written too
    (written,) = list(aim.generate(lm, "30-4=", stream=pieces.append, output=tmp_path / "o.jsonl"))
    assert "".join(pieces) == written.completion == records(tmp_path / "o.jsonl")[0]["completion"] == "26"
    several = aim.generate(lm, ["12+7=", "30-4="], stream=pieces.append)
    assert not several.streaming  # several prompts go in batches: not streamed


def test_prompts_from_a_file_and_a_stream(lm, tmp_path):
    import io

    prompts = tmp_path / "p.jsonl"
    prompts.write_text('{"prompt": "12+7="}\n{"prompt": "30-4="}\n')
    from_file = [c.completion for c in aim.generate(lm, prompts)]
    from_stream = [c.completion for c in aim.generate(lm, io.StringIO("12+7=\n\n30-4=\n"))]
    mixed = [c.prompt for c in aim.generate(lm, ["8+8=", prompts])]
    assert from_file == from_stream == ["19", "26"]
    assert mixed == ["8+8=", "12+7=", "30-4="]


def test_resume_generates_only_the_missing_prompts(lm, tmp_path):
    out = tmp_path / "o.jsonl"
    out.write_text(json.dumps({"prompt": "12+7=", "completion": "kept"}) + "\n")
    notes: list[str] = []
    completions = list(aim.generate(lm, ["12+7=", "30-4="], output=out, resume=True, notice=notes.append))
    assert [c.prompt for c in completions] == ["30-4="]
    assert [r["completion"] for r in records(out)] == ["kept", "26"]
    assert any("wrote 1 new and 1 resumed record(s)" in note for note in notes), notes
    again = aim.generate(lm, ["12+7=", "30-4="], output=out, resume=True)
    assert again.model is lm and len(again) == 0 and list(again) == []  # nothing left to do: nothing loaded


@pytest.mark.parametrize("seeded", [True, False])
def test_the_global_rng_is_left_untouched(lm, seeded):
    torch.manual_seed(1234)
    before = torch.get_rng_state()
    list(aim.generate(lm, PROMPTS, 1.0, seed=9 if seeded else None, temperature=0.8, batch_size=2))
    assert torch.equal(torch.get_rng_state(), before)
    assert torch.equal(torch.rand(3), (torch.manual_seed(1234), torch.rand(3))[1])


@pytest.mark.parametrize(
    ("call", "error", "fragment"),
    [
        ({"prompts": ["12+7=", "   "]}, aim.InputError, "--prompt 2 is empty"),
        ({"prompts": [12]}, aim.InputError, "prompts must be strings"),
        ({"prompts": 12}, aim.InputError, "prompts must be a str"),
        ({"prompts": "1+" * 40 + "1="}, aim.InputError, "83 tokens long"),
        ({"prompts": "1+1=", "top_p": 0}, aim.AimError, "(0, 1]"),
        ({"prompts": "1+1=", "temperature": -1}, aim.InputError, "temperature must be"),
        ({"prompts": "1+1=", "max_new_tokens": 0}, aim.InputError, "max_new_tokens must be"),
        ({"prompts": "1+1=", "batch_size": 0}, aim.InputError, "batch_size must be"),
        ({"prompts": "1+1=", "stop": [1]}, aim.InputError, "stop must be"),
        ({"prompts": "1+1=", "device": "cpu"}, aim.InputError, "already loaded"),
        ({"prompts": "1+1=", "profile": "loud"}, aim.ProfileError, "expected a Profile"),
        ({"prompts": "1+1=", "resume": True}, aim.InputError, "--resume needs --output"),
    ],
)
def test_bad_input_is_an_aim_error_before_any_work(lm, tmp_path, call, error, fragment):
    out = tmp_path / "o.jsonl"
    call = dict(call)
    kwargs = {"output": out} if not call.get("resume") else {}
    with pytest.raises(error) as info:
        aim.generate(lm, **call, **kwargs)
    assert fragment in str(info.value)
    assert not out.exists()


def test_bad_model_and_output(tmp_path):
    with pytest.raises(aim.InputError, match="model must be"):
        aim.generate(42, "1+1=")  # type: ignore[arg-type]
    with pytest.raises(aim.AimError, match="unsupported file type"):
        aim.generate(None, "1+1=", output=tmp_path / "o.txt")
    prompts = tmp_path / "p.jsonl"
    prompts.write_text('{"prompt": "1+1="}\n')
    with pytest.raises(aim.AimError, match="would overwrite"):
        aim.generate(None, prompts, output=prompts)
    assert prompts.read_text() == '{"prompt": "1+1="}\n'
