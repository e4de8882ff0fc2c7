"""`aim.classify`: the typed task API behind `aim classify`, with the same records as the CLI."""

from __future__ import annotations

import json
import shutil
from dataclasses import FrozenInstanceError
from pathlib import Path

import pytest
import torch

import aim_cli as aim
from aim_cli import demo
from aim_cli.errors import AimError, InputError
from tests.conftest import run_aim

SAMPLES = demo.samples_dir("classify")
IMAGES = sorted(SAMPLES.glob("*.png"))


@pytest.fixture(scope="module")
def classifier():
    """The demo classifier, loaded once as a Python user would."""
    return aim.load_model(task="classify", device="cpu")


def records(path: Path) -> list[dict[str, object]]:
    """The records of a .jsonl output."""
    return [json.loads(line) for line in path.read_text().splitlines()]


def cli_records(tmp_path: Path, *args: str) -> list[dict[str, object]]:
    """What `aim classify ARGS -o out.jsonl` writes."""
    out = tmp_path / "cli.jsonl"
    result = run_aim("classify", *args, "-o", str(out), "-q")
    assert result.returncode == 0, result.stderr
    return records(out)


CASES = {
    "sigma": (["--sigma", "1.5", "--seed", "3"], 1.5, {"seed": 3}),
    "focus": (
        ["--focus", "ring:up", "--focus-sigma", "4", "--seed", "0", "--topk", "3", "--compare"],
        aim.Profile(focus=["ring:up"], focus_sigma=4.0),
        {"seed": 0, "topk": 3, "compare": True},
    ),
}


@pytest.mark.parametrize("case", list(CASES))
def test_api_records_equal_the_cli_records(tmp_path, case):
    """The demo model on its samples at a fixed seed: the file the API writes is the CLI's, byte for byte."""
    args, profile, options = CASES[case]
    expected = cli_records(tmp_path, *args)
    out = tmp_path / "api.jsonl"
    notes: list[str] = []
    run = aim.classify(profile=profile, output=out, notice=notes.append, **options)
    items = list(run)
    assert (tmp_path / "cli.jsonl").read_text() == out.read_text()
    assert records(out) == expected
    assert [str(item.path) for item in items] == [record["path"] for record in expected]
    assert [item.top[0].label for item in items] == [record["prediction"] for record in expected]
    assert run.published and run.written == len(items) == len(IMAGES) and run.resumed == 0 and not run.failures
    assert (
        notes[0].startswith("model: demo classifier (10 classes)")
        and notes[-1] == f"wrote {len(items)} record(s) to {out}"
    )
    assert expected[0]["seed"] == options["seed"] and expected[0]["sigma"] == (1.5 if case == "sigma" else 0.0)


def test_focus_moves_predictions_to_the_target():
    """The focus case is not the clean model: a boost of 50 makes 'ring' the top class of most images."""
    run = aim.classify(profile=aim.Profile(focus=["ring:up"], focus_sigma=50.0), seed=0)
    assert sum(item.top[0].label == "ring" for item in run) > len(IMAGES) // 2


def test_topk_and_compare_fields(tmp_path):
    out = tmp_path / "k.jsonl"
    items = list(aim.classify(inputs=IMAGES[:3], profile=1.0, seed=2, topk=3, compare=True, output=out))
    for item, record in zip(items, records(out)):
        assert isinstance(item, aim.ClassifiedImage) and len(item.top) == 3 and len(item.clean_top) == 3
        assert all(isinstance(p, aim.Prediction) for p in item.top + item.clean_top)
        assert [p.probability for p in item.top] == sorted((p.probability for p in item.top), reverse=True)
        assert [p["label"] for p in record["topk"]] == [p.label for p in item.top]
        assert record["class_id"] == item.top[0].class_id
        assert record["probability"] == round(item.top[0].probability, 6)
        assert record["clean_prediction"] == item.clean_top[0].label
    plain = next(iter(aim.classify(inputs=IMAGES[0])))
    assert len(plain.top) == 1 and plain.clean_top is None
    with pytest.raises(FrozenInstanceError):
        plain.path = Path("other.png")


def test_python_user_path_equals_the_cli(tmp_path, classifier):
    """load_model, then classify a list of paths (str and Path, in the user's order): the CLI's records."""
    chosen = [IMAGES[4], IMAGES[0], IMAGES[2]]
    expected = cli_records(tmp_path, *map(str, chosen), "--sigma", "2", "--seed", "11")
    run = aim.classify(classifier, [str(chosen[0]), *chosen[1:]], 2.0, seed=11)
    items = list(run)
    assert run.model is classifier and run.plan.seed == 11
    assert [item.path for item in items] == chosen
    assert [item.top[0].label for item in items] == [record["prediction"] for record in expected]
    assert [round(item.top[0].probability, 6) for item in items] == [record["probability"] for record in expected]
    assert run.published and run.written == 0  # nothing asked to be written


def test_bad_inputs_are_failed_records_in_order(tmp_path):
    folder = tmp_path / "images"
    folder.mkdir()
    for name in ("a.png", "c.png"):
        shutil.copy(IMAGES[0], folder / name)
    (folder / "b.png").write_bytes(b"not an image")
    missing = tmp_path / "missing.png"
    out = tmp_path / "out.jsonl"
    run = aim.classify(inputs=[folder, missing], output=out)
    items = list(run)
    assert [type(item).__name__ for item in items] == [
        "FailedInput",
        "ClassifiedImage",
        "FailedInput",
        "ClassifiedImage",
    ]
    assert items[0].path == missing and "no such file" in items[0].reason
    assert items[2].path == folder / "b.png"
    assert run.failures == [items[0], items[2]]
    assert [record["path"] for record in records(out)] == [str(folder / "a.png"), str(folder / "c.png")]


def test_no_input_succeeded_writes_nothing(tmp_path):
    bad = tmp_path / "bad.png"
    bad.write_bytes(b"not an image")
    out = tmp_path / "out.jsonl"
    run = aim.classify(inputs=[bad], output=out)
    assert [type(item) for item in run] == [aim.FailedInput]
    assert not run.published and not out.exists()


def test_errors_before_any_work(tmp_path, classifier):
    with pytest.raises(InputError, match="no images found"):
        aim.classify(inputs=[tmp_path])
    with pytest.raises(InputError, match="no inputs given"):
        aim.classify(classifier)
    with pytest.raises(AimError, match="unsupported file type"):
        aim.classify(output=tmp_path / "out.txt")
    with pytest.raises(InputError, match="need a model spec"):
        aim.classify(classifier, IMAGES[:1], engine="ray")
    with pytest.raises(InputError, match="topk must be a positive integer"):
        aim.classify(topk=0)
    with pytest.raises(InputError, match="--workers goes with --engine ray"):
        aim.classify(workers=2)
    with pytest.raises(InputError, match="--resume needs --output"):
        aim.classify(resume=True)
    named = tmp_path / "image.jsonl"  # an explicit input file is taken whatever its suffix
    shutil.copy(IMAGES[0], named)
    with pytest.raises(AimError, match="would overwrite input"):
        aim.classify(inputs=[named], output=named)
    profile = tmp_path / "tier.csv"
    profile.write_text("utility:\n  sigma: 1.0\n")
    with pytest.raises(AimError, match="would overwrite --profile"):
        aim.classify(profile=aim.Profile.load(profile), output=profile)
    run = aim.classify(classifier, IMAGES[:1])
    list(run)
    with pytest.raises(InputError, match="already iterated"):
        list(run)


def test_resume_equals_the_cli(tmp_path):
    """An output with one image recorded, resumed over all: the API's file is the CLI's."""
    outputs = {}
    for who in ("cli", "api"):
        out = tmp_path / f"{who}.jsonl"
        if who == "cli":
            assert run_aim("classify", str(IMAGES[0]), "-o", str(out), "--seed", "1", "-q").returncode == 0
            assert run_aim("classify", str(SAMPLES), "-o", str(out), "--seed", "1", "--resume", "-q").returncode == 0
        else:
            list(aim.classify(inputs=IMAGES[0], seed=1, output=out))
            run = aim.classify(inputs=SAMPLES, seed=1, output=out, resume=True)
            assert run.resumed == 1 and len(run.pending) == len(IMAGES) - 1
            list(run)
            assert run.written == len(IMAGES) - 1
        outputs[who] = out.read_text()
    assert outputs["cli"] == outputs["api"]
    notes: list[str] = []
    run = aim.classify(inputs=SAMPLES, output=tmp_path / "api.jsonl", resume=True, notice=notes.append)
    assert list(run) == [] and not run.published and "nothing to do" in notes[-1]
    assert (tmp_path / "api.jsonl").read_text() == outputs["api"]


def test_stopping_early_writes_nothing(tmp_path):
    out = tmp_path / "out.jsonl"
    for _item in aim.classify(inputs=SAMPLES, output=out, batch_size=2):
        break
    assert not out.exists() and list(tmp_path.iterdir()) == []


def test_a_device_object_and_progress(tmp_path):
    done: list[int] = []
    run = aim.classify(inputs=IMAGES[:5], device=torch.device("cpu"), batch_size=2, progress=done.append)
    assert len(list(run)) == 5 and sum(done) == 5
