"""`aim.evaluate` is `aim eval`: the same report for the same options (needs aim-cli[eval]; skipped without it),
and its bad input is refused in one line before lm-eval is needed (runs in every venv)."""

from __future__ import annotations

import io
import json
import random
import sys
from pathlib import Path

import pytest

import aim_cli as aim
from tests.conftest import run_aim

MC_YAML = """task: toy_api_mc
dataset_path: json
dataset_kwargs:
  data_files:
    test: {data}
test_split: test
output_type: multiple_choice
doc_to_text: "{{{{question}}}}"
doc_to_choice: "{{{{choices}}}}"
doc_to_target: "{{{{answer}}}}"
target_delimiter: ""
metric_list:
  - metric: acc
"""


def write_task(folder: Path, items: int = 16) -> Path:
    """A one-token multiple-choice task (sums, answered by their first digit) in its own folder."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = random.Random(0)
    with open(folder / "mc.jsonl", "w", encoding="utf-8") as handle:
        for _ in range(items):
            a, b = rng.randrange(50), rng.randrange(50)
            right = str(a + b)[0]
            choices = [right, *rng.sample([d for d in "0123456789" if d != right], 3)]
            rng.shuffle(choices)
            handle.write(json.dumps({"question": f"{a}+{b}=", "choices": choices, "answer": choices.index(right)}))
            handle.write("\n")
    (folder / "mc.yaml").write_text(MC_YAML.format(data=folder / "mc.jsonl"), encoding="utf-8")
    return folder


@pytest.mark.slow
def test_evaluate_writes_what_aim_eval_writes(tmp_path, monkeypatch):
    """The same task folder, sigmas, seed and limit: the CLI's JSON and the API's report (and its file) agree."""
    pytest.importorskip("lm_eval")
    pytest.importorskip("accelerate")
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    tasks = write_task(tmp_path / "tasks")
    cli_json, api_json = tmp_path / "cli.json", tmp_path / "api.json"
    result = run_aim(
        "eval", "--tasks", "toy_api_mc", "--include-path", str(tasks), "--sigma", "0,2", "--seed", "3",
        "--limit", "12", "-o", str(cli_json), "--device", "cpu", "--batch-size", "8", "-q",
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    notes: list[str] = []
    steps: list[int] = []
    report = aim.evaluate(
        None, "toy_api_mc", None, sigmas=[0, 2], seed=3, limit=12, include_path=tasks, batch_size=8,
        device="cpu", output=api_json, progress=steps.append, notice=notes.append,
    )  # fmt: skip
    assert isinstance(report, aim.EvalReport) and all(isinstance(row, aim.EvalRow) for row in report.rows)
    assert steps == [0, 1, 1] and notes == ["model: demo lm | tasks: toy_api_mc | sigma: 0, 2"]
    from_cli, from_api = json.loads(cli_json.read_text()), json.loads(api_json.read_text())
    for written in (from_cli, from_api):
        written.pop("timing_s")
    assert from_api == from_cli
    assert report.to_dict()["rows"] == from_cli["rows"] and from_cli["noise"]["seed"] == 3
    assert {(row.task, row.metric, row.sigma) for row in report.rows} == {
        ("toy_api_mc", "acc", 0.0),
        ("toy_api_mc", "acc", 2.0),
    }


@pytest.mark.parametrize(
    ("kwargs", "error", "fragment"),
    [
        ({"tasks": "a,,b"}, aim.AimError, "--tasks 'a,,b': an empty task name"),
        ({"tasks": ["a", "a"]}, aim.AimError, "a task is named twice"),
        ({"tasks": []}, aim.InputError, "tasks: give lm-eval task or group names"),
        ({"tasks": "a", "limit": 0}, aim.InputError, "--limit 0: give a number of documents"),
        ({"tasks": "a", "num_fewshot": -1}, aim.InputError, "--num-fewshot -1"),
        ({"tasks": "a", "trust_task_code": True}, aim.AimError, "apply to the task files of --include-path"),
        ({"tasks": "a", "sigmas": "0,x"}, aim.AimError, "--sigma '0,x': 'x' is not a number"),
        ({"tasks": "a", "sigmas": [1, 1.0]}, aim.InputError, "sigmas: 1.0 is given twice"),
        ({"tasks": "a", "sigmas": ["1"]}, aim.InputError, "sigmas: '1' is not a number"),
        ({"tasks": "a", "profile": {"utility": {"sigma": -1}}}, aim.ProfileError, "sigma"),
        ({"tasks": "a", "output": "report.txt"}, aim.AimError, ".json"),
        ({"tasks": "a", "include_path": 7}, aim.InputError, "include_path must be a path"),
    ],
)
def test_bad_input_is_refused_before_lm_eval_is_needed(kwargs, error, fragment, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(error) as caught:
        aim.evaluate(**kwargs)
    assert fragment in str(caught.value)
    assert "\n" not in str(caught.value)


def test_a_profile_file_is_never_overwritten_by_the_report(tmp_path):
    tier = tmp_path / "tier.json"  # a profile may be JSON (YAML's subset)
    tier.write_text('{"utility": {"sigma": 1}, "noise": {"seed": 2}}')
    with pytest.raises(aim.AimError, match="--profile"):
        aim.evaluate(tasks="a", profile=aim.Profile.load(tier), output=tier)


def test_without_the_eval_extra_it_is_one_line_naming_it(monkeypatch):
    """lm_eval not importable: the same one-line error as `aim eval`, before any model loads."""
    for name in [n for n in sys.modules if n.startswith("lm_eval.")]:
        monkeypatch.delitem(sys.modules, name)
    monkeypatch.setitem(sys.modules, "lm_eval", None)
    monkeypatch.delitem(sys.modules, "aim_cli.integrations.lm_eval", raising=False)
    monkeypatch.setattr(sys, "stdin", io.StringIO(""))
    with pytest.raises(aim.AimError) as caught:
        aim.evaluate(tasks="mmlu", sigmas=[0, 1], device="cpu")
    assert "pip install 'aim-cli[eval]'" in str(caught.value)


def test_the_report_records_are_typed_and_json_ready():
    row = aim.EvalRow("toy", "acc", "none", 0.5, 0.75, None)
    report = aim.EvalReport("demo lm", ["toy"], [0.5], None, {"seed": 1}, [row])
    assert report.to_dict()["rows"] == [
        {"task": "toy", "metric": "acc", "filter": "none", "sigma": 0.5, "value": 0.75, "stderr": None}
    ]
    assert json.loads(json.dumps(report.to_dict()))["noise"] == {"seed": 1}
