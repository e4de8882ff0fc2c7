"""`aim.segment`: the API `aim segment` is a client of; its masks, records and evaluation equal the CLI's."""

from __future__ import annotations

import dataclasses
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import aim_cli as aim
from aim_cli import demo
from tests.conftest import REPO, run_aim
from tests.test_readme_api import readme_examples

SAMPLES = demo.samples_dir("segment")
SAMPLE_MASKS = demo.samples_dir("segment_masks")
PROFILE = {"utility": {"sigma": 1.0}, "focus": {"sigma": 2.0, "targets": [{"class": "person"}]}, "noise": {"seed": 5}}
CLI_PROFILE = ("--sigma", "1", "--focus", "person", "--focus-sigma", "2", "--seed", "5")


def _cli(output: Path, *args: str) -> dict:
    """`aim segment` on the demo scenes with their masks; its evaluation.json."""
    result = run_aim("segment", str(SAMPLES), "--masks", str(SAMPLE_MASKS), *CLI_PROFILE, *args, "-o", str(output))
    assert result.returncode == 0, result.stderr
    return json.loads((output / "evaluation.json").read_text())


@pytest.fixture(scope="module")
def cli_run(tmp_path_factory) -> tuple[Path, dict]:
    """One CLI run with masks, focus and a seed (sigma > 0): its output folder and evaluation."""
    output = tmp_path_factory.mktemp("cli") / "out"
    return output, _cli(output, "--compare", "--overlay")


def test_api_files_equal_the_cli_files(cli_run, tmp_path):
    """With output_dir the API writes the CLI's masks, overlays, summary.jsonl and evaluation.json, byte for byte."""
    cli_out, evaluation = cli_run
    api_out = tmp_path / "out"
    notes: list[str] = []
    run = aim.segment(
        None, [str(SAMPLES)], PROFILE, masks=SAMPLE_MASKS, compare=True, overlay=True, output_dir=api_out,
        notice=notes.append,
    )  # fmt: skip
    records = list(run)
    assert [r.path.name for r in records] == sorted(p.name for p in SAMPLES.glob("*.png"))
    assert run.published and run.succeeded == len(records) and not run.failures
    names = sorted(p.relative_to(cli_out) for p in cli_out.rglob("*") if p.is_file())
    assert names == sorted(p.relative_to(api_out) for p in api_out.rglob("*") if p.is_file())
    for name in names:
        if name.suffix == ".png":
            assert (cli_out / name).read_bytes() == (api_out / name).read_bytes(), name
    cli_summary = (cli_out / "summary.jsonl").read_text().splitlines()
    assert [json.loads(line) for line in cli_summary] == [
        json.loads(line) for line in (api_out / "summary.jsonl").read_text().splitlines()
    ]
    assert json.loads((api_out / "evaluation.json").read_text()) == evaluation
    assert run.evaluation is not None and run.evaluation.to_dict() == evaluation
    assert any(note.startswith("model: demo segmenter (7 classes)") for note in notes)
    assert notes[-1] == f"wrote {len(records)} mask(s) and overlays and summary.jsonl to {api_out}"


def test_api_evaluation_equals_the_cli_without_writing(cli_run, tmp_path):
    """Without output_dir nothing is written; the streamed masks and the evaluation equal the CLI's."""
    cli_out, evaluation = cli_run
    model = aim.load_model(task="segment")  # a loaded model works as well as a spec
    run = aim.segment(model, SAMPLES, aim.Profile.from_dict(PROFILE), masks=str(SAMPLE_MASKS))
    for item in run:
        assert isinstance(item, aim.SegmentedImage)
        assert np.array_equal(np.asarray(Image.open(cli_out / f"{item.path.stem}.png")), item.prediction)
        assert item.clean_prediction is not None  # focus and masks: the clean masks are computed
    report = run.evaluation
    assert report is not None and report.to_dict() == evaluation
    assert report.images == 4 and report.labels == tuple(evaluation["labels"])
    assert report.modulated.miou == evaluation["modulated"]["miou"] != report.clean.miou
    assert report.modulated.pixel_accuracy == evaluation["modulated"]["pixel_accuracy"]
    assert report.clean.confusion == evaluation["confusion"]["clean"]
    assert report.modulated.classes["person"]["iou"] == evaluation["modulated"]["classes"]["person"]["iou"]
    assert int(run.pixels.sum()) == int(run.clean_pixels.sum()) == sum(sum(row) for row in report.clean.confusion)
    assert not run.published and list(tmp_path.iterdir()) == []


def test_the_run_streams_once_in_input_order(tmp_path):
    """Nothing runs until iteration; records come one at a time (one-image batches: in input order); once."""
    shutil.copy(SAMPLES / "scene_0.png", tmp_path / "a.png")
    (tmp_path / "b.png").write_bytes(b"not a png")
    shutil.copy(SAMPLES / "scene_1.png", tmp_path / "c.png")
    done: list[int] = []
    run = aim.segment(
        inputs=[tmp_path / "*.png", tmp_path / "missing.png"], profile=0.5, batch_size=1, progress=done.append
    )
    assert run.total == 3 and done == [] and run.evaluation is None and run.clean_pixels is None
    stream = iter(run)
    first = next(stream)
    assert isinstance(first, aim.FailedInput) and "missing.png" in first.reason  # refused before the run
    second = next(stream)
    assert isinstance(second, aim.SegmentedImage) and second.path.name == "a.png"
    with pytest.raises(dataclasses.FrozenInstanceError):
        second.path = Path("x")  # type: ignore[misc]
    rest = list(stream)
    assert [type(r).__name__ for r in rest] == ["FailedInput", "SegmentedImage"]
    assert rest[0].path.name == "b.png" and sum(done) == 3
    assert len(run.failures) == 2 and run.succeeded == 2 and run.evaluation is None
    with pytest.raises(aim.InputError, match="iterated once"):
        iter(run)


def test_bad_inputs_are_aim_errors_before_any_work(tmp_path):
    with pytest.raises(aim.InputError, match="does not exist"):
        aim.segment(masks=tmp_path / "no-such-masks")
    with pytest.raises(aim.InputError, match="no images found"):
        aim.segment(inputs=[tmp_path])
    with pytest.raises(aim.AimError, match="describe the --masks data"):
        aim.segment(layout="voc")
    with pytest.raises(aim.InputError, match="segmentation model"):
        aim.segment(aim.load_model(task="classify"), SAMPLES)
    with pytest.raises(aim.InputError, match="resume needs an output_dir"):
        aim.segment(resume=True)
    inputs = tmp_path / "in"
    shutil.copytree(SAMPLES, inputs)
    with pytest.raises(aim.AimError, match="input"):  # the masks would replace the images
        aim.segment(inputs=inputs, output_dir=inputs)
    assert sorted(p.name for p in inputs.iterdir()) == sorted(p.name for p in SAMPLES.iterdir())


def test_readme_example_equals_the_cli(tmp_path, monkeypatch, capsys):
    """README's Python API section, run as written, gives the numbers `aim segment --masks` writes."""
    monkeypatch.chdir(tmp_path)
    namespace: dict[str, object] = {"__name__": "readme_example"}
    for number, block in enumerate(readme_examples((REPO / "README.md").read_text(encoding="utf-8")), 1):
        exec(compile(block, f"README Python API example {number}", "exec"), namespace)
    printed = capsys.readouterr().out.splitlines()
    cli = tmp_path / "cli"
    result = run_aim("segment", "--masks", str(SAMPLE_MASKS), "--sigma", "1.5", "--seed", "1234", "-o", str(cli))
    assert result.returncode == 0, result.stderr
    evaluation = json.loads((cli / "evaluation.json").read_text())
    run = namespace["run"]
    assert isinstance(run, aim.SegmentRun) and run.evaluation is not None
    assert run.evaluation.to_dict() == evaluation
    clean, modulated = evaluation["clean"], evaluation["modulated"]
    assert printed[-1] == f"{clean['miou']} {modulated['miou']} {modulated['pixel_accuracy']}"
    records = [json.loads(line) for line in (cli / "summary.jsonl").read_text().splitlines()]
    per_image = {line.split()[0]: float(line.split()[-1]) for line in printed[-1 - len(records) : -1]}
    assert per_image.keys() == {Path(str(r["image"])).name for r in records}
    for record in records:
        assert round(per_image[Path(str(record["image"])).name], 6) == record["pixel_accuracy"]


def test_an_output_never_replaces_the_profile_file(tmp_path):
    """A Profile loaded from a file the run would write (here summary.jsonl) is refused before any work."""
    out = tmp_path / "out"
    out.mkdir()
    tier = out / "summary.jsonl"
    tier.write_text("utility:\n  sigma: 1.0\n")
    with pytest.raises(aim.AimError, match="would overwrite --profile"):
        aim.segment(profile=aim.Profile.load(tier), output_dir=out)
    assert tier.read_text() == "utility:\n  sigma: 1.0\n"
