"""One rule for every output: a run in which no input succeeded replaces or empties nothing (issue 15).

Each case pre-fills every output a command can write with a sentinel, makes every input fail
(empty masks folder, all images corrupt, all prompts already answered, ...) and checks that
the sentinels are byte-for-byte intact, no temp file or new folder is left, and the message
says so truthfully.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from pathlib import Path

import pytest

from aim_cli import demo
from tests.conftest import run_aim

SEGMENT_SAMPLES = demo.samples_dir("segment")
SEGMENT_MASKS = SEGMENT_SAMPLES.parent / "segment_masks"
CLASSIFY_SAMPLES = demo.samples_dir("classify")
NOTHING_WRITTEN = "nothing was written and existing outputs were kept"
SENTINEL = b"SENTINEL: an earlier run's output, which must survive\n"


def _corrupt_images(folder: Path, names: tuple[str, ...] = ("scene_0.png", "scene_1.png")) -> Path:
    """A folder of files with image names that do not decode."""
    folder.mkdir()
    for name in names:
        (folder / name).write_bytes(b"not an image")
    return folder


def _plant(paths: list[Path]) -> dict[Path, bytes]:
    """Write a distinct sentinel to each output path; returns what each must still hold."""
    planted = {}
    for index, path in enumerate(paths):
        if path.exists():  # the case wrote it itself
            planted[path] = path.read_bytes()
            continue
        path.parent.mkdir(parents=True, exist_ok=True)
        content = SENTINEL + f"{index}\n".encode()
        if path.suffix == ".jsonl":  # a record file from an earlier run: valid records of other inputs
            content = b"".join(json.dumps(r).encode() + b"\n" for r in _earlier_records())
        path.write_bytes(content)
        planted[path] = content
    return planted


def _earlier_records() -> list[dict]:
    """Records an earlier run left, keyed like each command's records."""
    return [
        {"path": str(CLASSIFY_SAMPLES / "circle_0.png"), "prompt": "23+45=", "image": "elsewhere/x.png", "n": 1},
        {"path": "another/run.png", "prompt": "1+1=", "image": "another/run.png", "n": 2},
    ]


# Each case: (id, a function of tmp_path giving (CLI args, output paths to plant, folder that must not appear)).
Case = Callable[[Path], tuple[list[str], list[Path], Path | None]]


def _segment_empty_masks(tmp: Path) -> tuple[list[str], list[Path], Path | None]:
    out = tmp / "out"
    (tmp / "masks").mkdir()
    outputs = [out / "evaluation.json", out / "summary.jsonl", out / "scene_0.png", out / "overlays" / "scene_0.png"]
    return ["segment", str(SEGMENT_SAMPLES), "--masks", str(tmp / "masks"), "--overlay", "-o", str(out)], outputs, None


def _segment_corrupt_images(tmp: Path) -> tuple[list[str], list[Path], Path | None]:
    out = tmp / "out"
    images = _corrupt_images(tmp / "images")
    outputs = [out / "evaluation.json", out / "summary.jsonl", out / "scene_1.png"]
    return ["segment", str(images), "--masks", str(SEGMENT_MASKS), "-o", str(out)], outputs, None


def _segment_new_dir(tmp: Path) -> tuple[list[str], list[Path], Path | None]:
    images = _corrupt_images(tmp / "images")
    return ["segment", str(images), "-o", str(tmp / "fresh")], [], tmp / "fresh"


def _segment_resume(tmp: Path) -> tuple[list[str], list[Path], Path | None]:
    """--resume where the one image left fails: summary.jsonl must keep the other images' records."""
    out = tmp / "out"
    images = _corrupt_images(tmp / "images", ("scene_9.png",))
    shutil.copy(SEGMENT_SAMPLES / "scene_0.png", images / "scene_0.png")
    out.mkdir()
    (out / "scene_0.png").write_bytes(SENTINEL)  # scene_0 is done: mask on disk and recorded
    records = [{"image": str(images / "scene_0.png"), "mask": "scene_0.png"}, {"image": "another/run.png"}]
    (out / "summary.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    return ["segment", str(images), "--resume", "-o", str(out)], [out / "summary.jsonl", out / "scene_0.png"], None


def _classify_resume(tmp: Path) -> tuple[list[str], list[Path], Path | None]:
    """All images corrupt, with --resume: the recorded one is skipped, the new one fails; no record is dropped."""
    bad = _corrupt_images(tmp / "images", ("bad.png",)) / "bad.png"
    args = ["classify", str(CLASSIFY_SAMPLES / "circle_0.png"), str(bad), "--resume", "-o", str(tmp / "r.jsonl")]
    return args, [tmp / "r.jsonl"], None


def _generate_resume(tmp: Path) -> tuple[list[str], list[Path], Path | None]:
    """Every prompt already answered: nothing new, so the file (with another prompt's record) stays."""
    return ["generate", "--prompt", "23+45=", "--resume", "-o", str(tmp / "g.jsonl")], [tmp / "g.jsonl"], None


def _generate_bad_prompt(tmp: Path) -> tuple[list[str], list[Path], Path | None]:
    return ["generate", "--prompt", "", "-o", str(tmp / "g.jsonl")], [tmp / "g.jsonl"], None


def _calibrate_corrupt(tmp: Path) -> tuple[list[str], list[Path], Path | None]:
    images = _corrupt_images(tmp / "images", ("a.png", "b.png"))
    (images / "m.csv").write_text("path,label\na.png,circle\nb.png,square\n")
    outputs = [tmp / "p.yaml", tmp / "r.json"]
    args = [
        "calibrate",
        "--target-acc",
        "0.5",
        "--data",
        str(images / "m.csv"),
        "--write-profile",
        str(outputs[0]),
        "--json",
        str(outputs[1]),
    ]
    return args, outputs, None


CASES: dict[str, tuple[Case, int]] = {
    "segment-empty-masks-folder": (_segment_empty_masks, 1),
    "segment-all-images-corrupt": (_segment_corrupt_images, 1),
    "segment-creates-no-folder": (_segment_new_dir, 1),
    "segment-resume-rest-fails": (_segment_resume, 1),
    "classify-resume-rest-fails": (_classify_resume, 1),
    "generate-resume-nothing-new": (_generate_resume, 0),
    "generate-empty-prompt": (_generate_bad_prompt, 2),
    "calibrate-all-images-corrupt": (_calibrate_corrupt, 2),
}


@pytest.mark.parametrize("case", list(CASES))
def test_no_input_succeeded_replaces_nothing(case, tmp_path):
    build, code = CASES[case]
    args, outputs, absent = build(tmp_path)
    planted = _plant(outputs)
    result = run_aim(*args)
    assert result.returncode == code, (result.returncode, result.stderr)
    assert "Traceback" not in result.stderr and "internal error" not in result.stderr, result.stderr
    for path, content in planted.items():
        assert path.read_bytes() == content, f"{path.name} was replaced: {path.read_bytes()[:200]!r}"
    if absent is not None:
        assert not absent.exists(), f"{absent} was created by a run that wrote nothing"
    assert not [p for p in tmp_path.rglob("*") if p.name.endswith(".part")]
    if code == 1:  # the summary line is true: nothing written, everything kept
        assert NOTHING_WRITTEN in result.stderr, result.stderr
        assert "the others were processed" not in result.stderr
        assert "wrote" not in result.stderr.lower(), result.stderr


def test_some_input_succeeded_still_publishes(tmp_path):
    """The rule is 'no input succeeded', not 'some input failed': one good image publishes everything."""
    images = _corrupt_images(tmp_path / "images", ("scene_1.png",))
    shutil.copy(SEGMENT_SAMPLES / "scene_0.png", images / "scene_0.png")
    out = tmp_path / "out"
    planted = _plant([out / "evaluation.json"])
    result = run_aim("segment", str(images), "--masks", str(SEGMENT_MASKS), "-o", str(out))
    assert result.returncode == 1, result.stderr
    assert "1 input(s) failed; the others were processed" in result.stderr
    assert out.joinpath("evaluation.json").read_bytes() != planted[out / "evaluation.json"]
    assert json.loads(out.joinpath("evaluation.json").read_text())["images"] == 1
