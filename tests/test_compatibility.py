"""The compatibility table (docs/compatibility.md), checked: each family's tiny random checkpoint through the real CLI.

Every family declared in tests/compatibility_families.py is built offline in a temporary folder
and run through `aim_cli.cli.main` in this process (the `aim` entry point, exit codes and stderr
included, without a torch import per run). A family that works must classify / segment /
generate with noise, focus and the clean comparison, and calibrate on labels that are its own
clean predictions (so the clean metric is 1 and the target lies between chance and clean). An
unsupported family must be refused with exit 2 and one line saying why. The last test keeps the
docs/compatibility.md table equal to the one rendered from the same declarations.
"""

from __future__ import annotations

import csv
import io
import json
import shutil
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from tests.compatibility_families import CLASSIFY, FAMILIES, GENERATE, LABELS, SEGMENT, Family
from tests.render_compatibility import PAGE, REGENERATE, page_table, render

IMAGE_SIZE = (64, 48)  # width, height: not square, so a model that assumes square inputs shows it
PROMPTS = ("12+7=", "3-1=")


def _params() -> list:
    """One pytest param per family, marked slow or pending as declared."""
    params = []
    for family in FAMILIES:
        marks = []
        if family.pending:
            marks.append(pytest.mark.xfail(strict=False, reason=family.pending))
        if family.slow:
            marks.append(pytest.mark.slow)
        params.append(pytest.param(family, id=family.slug, marks=marks))
    return params


@pytest.fixture(scope="module")
def images(tmp_path_factory) -> Path:
    """Two small RGB images of coloured 8x8 blocks (fixed seed): structure for segmenters to split."""
    folder = tmp_path_factory.mktemp("compat_images")
    rng = np.random.default_rng(0)
    width, height = IMAGE_SIZE
    for index in range(2):
        blocks = rng.integers(0, 256, size=(height // 8, width // 8, 3), dtype=np.uint8)
        Image.fromarray(blocks.repeat(8, axis=0).repeat(8, axis=1)).save(folder / f"im{index}.png")
    return folder


class Cli:
    """Runs `aim ARGS` in this process and returns (exit code, stdout, stderr)."""

    def __init__(self, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
        self.capsys = capsys
        monkeypatch.setattr(sys, "stdin", io.StringIO(""))
        monkeypatch.setenv("HF_HUB_OFFLINE", "1")
        monkeypatch.delenv("AIM_DEBUG", raising=False)

    def __call__(self, *args: str) -> tuple[int, str, str]:
        """Run the entry point; it always ends in SystemExit."""
        from aim_cli.cli import main

        self.capsys.readouterr()
        with pytest.raises(SystemExit) as exit_info:
            main([*args, "--device", "cpu", "--quiet"])
        captured = self.capsys.readouterr()
        return int(exit_info.value.code or 0), captured.out, captured.err

    def ok(self, *args: str) -> str:
        """Run and require success; return stdout."""
        code, out, err = self(*args)
        assert code == 0, (args[0], code, err)
        return out


@pytest.fixture
def cli(capsys, monkeypatch) -> Cli:
    """The in-process CLI runner."""
    return Cli(capsys, monkeypatch)


def _records(path: Path) -> list[dict]:
    """The JSON lines of an output file."""
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


def _chosen_sigma(stdout: str) -> float:
    """`calibrate` prints the chosen value alone on stdout."""
    value = float(stdout.strip())
    assert value > 0, stdout
    return value


def _check_classifier(cli: Cli, model: list[str], images: Path, work: Path) -> None:
    """Noise, focus and the clean comparison on two images; calibration on the clean predictions."""
    predictions = work / "predictions.jsonl"
    # A focus sigma far above any logit gap: the modulated prediction must be the focus class,
    # so a processor that did nothing could not pass.
    cli.ok(
        "classify",
        str(images),
        *model,
        "--sigma",
        "1",
        "--focus",
        "bird",
        "--focus-sigma",
        "10000",
        "--seed",
        "0",
        "--compare",
        "--topk",
        "2",
        "-o",
        str(predictions),
    )
    records = _records(predictions)
    assert len(records) == 2
    for record in records:
        assert record["prediction"] == "bird" and record["clean_prediction"] in LABELS, record
        # ~1e4 above every other class: near-certain even where the clean model already said bird.
        assert record["topk"][0]["label"] == "bird" and record["topk"][0]["probability"] > 0.99, record
        assert len(record["topk"]) == 2
    manifest = work / "labels.csv"
    with manifest.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(["path", "label"])
        writer.writerows([record["path"], record["clean_prediction"]] for record in records)
    _chosen_sigma(cli.ok("calibrate", "--target-acc", "0.7", *model, "--data", str(manifest), "--allow-outside-paths"))


def _check_segmenter(cli: Cli, model: list[str], images: Path, work: Path) -> None:
    """Clean masks, then noise + focus evaluated against them, then calibration on them."""
    clean, noisy, data = work / "clean", work / "noisy", work / "data"
    cli.ok("segment", str(images), *model, "--sigma", "0", "-o", str(clean))
    clean_masks = {image.name: np.asarray(Image.open(clean / image.name)) for image in images.iterdir()}
    for name, mask in clean_masks.items():
        assert mask.shape == IMAGE_SIZE[::-1] and mask.max() < len(LABELS), (name, mask.shape)
    # Focus on the class the clean model picks least (random models often pick one class everywhere).
    rare = int(np.argmin(np.bincount(np.concatenate([m.ravel() for m in clean_masks.values()]), minlength=len(LABELS))))
    cli.ok(
        "segment",
        str(images),
        *model,
        "--sigma",
        "1",
        "--focus",
        LABELS[rare],
        "--focus-sigma",
        "10000",
        "--seed",
        "0",
        "--compare",
        "--masks",
        str(clean),
        "-o",
        str(noisy),
    )
    # The focus class wins most pixels (all, unless a random model's logits span more than 1e4 |z|,
    # as torchvision FCN's can), more than in the clean masks: the noise reached the decisions.
    for name, mask in clean_masks.items():
        share = (np.asarray(Image.open(noisy / name)) == rare).mean()
        assert share > max(0.5, (mask == rare).mean()), (name, LABELS[rare], share)
    evaluation = json.loads((noisy / "evaluation.json").read_text(encoding="utf-8"))
    # The clean pass of a noisy run reproduces the clean run's masks exactly.
    assert evaluation["clean"]["pixel_accuracy"] == 1.0, evaluation["clean"]
    shutil.copytree(images, data / "images")
    shutil.copytree(clean, data / "masks", ignore=shutil.ignore_patterns("*.jsonl"))
    _chosen_sigma(cli.ok("calibrate", "--task", "segment", "--target-miou", "0.6", *model, "--data", str(data)))


def _check_generator(cli: Cli, model: list[str], work: Path) -> None:
    """Noise, focus and the clean comparison on two prompts; multiple-choice calibration."""
    completions = work / "completions.jsonl"
    prompts = [arg for prompt in PROMPTS for arg in ("--prompt", prompt)]
    cli.ok(
        "generate",
        *model,
        *prompts,
        "-n",
        "3",
        "--sigma",
        "0.5",
        "--focus",
        "3",
        "--focus-sigma",
        "10000",
        "--seed",
        "0",
        "--compare",
        "-o",
        str(completions),
    )
    records = _records(completions)
    assert [record["prompt"] for record in records] == list(PROMPTS)
    # The focus word wins most steps (all, unless a random model's logits span more than 1e4 |z|):
    # the processor reached the decisions.
    for record in records:
        assert record["completion"].count("3") > max(
            len(record["completion"]) // 2, record["clean_completion"].count("3")
        ), record
    # The character tokenizer makes the clean completion's first character the model's top next token,
    # so it is the right choice of a question whose clean accuracy is 1.
    questions = work / "questions.jsonl"
    lines = []
    for record in records:
        first = record["clean_completion"][:1]
        assert first.strip(), ("the clean completion starts with no visible token", record)
        lines.append(
            json.dumps({"prompt": record["prompt"], "choices": [first, "7" if first != "7" else "8"], "answer": 0})
        )
    questions.write_text("\n".join(lines) + "\n", encoding="utf-8")
    _chosen_sigma(cli.ok("calibrate", "--task", "generate", "--target-acc", "0.7", *model, "--data", str(questions)))


def _check_refusal(cli: Cli, family: Family, model: list[str], images: Path, work: Path) -> None:
    """An unsupported family: exit 2 and one line that says it is not supported and why."""
    if family.task == GENERATE:
        code, _, err = cli("generate", *model, "--prompt", PROMPTS[0], "-n", "2")
    else:
        output = ["-o", str(work / "out")] if family.task == SEGMENT else []
        code, _, err = cli(family.task, str(images), *model, *output)
    assert code == 2, (code, err)
    assert "Traceback" not in err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("aim: error:"), err
    assert family.refusal in lines[0], (family.refusal, lines[0])


@pytest.mark.parametrize("family", _params())
def test_family_runs_through_the_cli_or_is_refused_with_its_reason(family: Family, images, cli, tmp_path):
    if family.requires:
        pytest.importorskip(family.requires, reason=f"{family.name} needs {family.requires}")
    model = family.build(tmp_path / "model")
    if not family.works:
        _check_refusal(cli, family, model, images, tmp_path)
    elif family.task == CLASSIFY:
        _check_classifier(cli, model, images, tmp_path)
    elif family.task == SEGMENT:
        _check_segmenter(cli, model, images, tmp_path)
    else:
        _check_generator(cli, model, tmp_path)


def test_every_unsupported_family_says_why():
    for family in FAMILIES:
        assert family.works or (family.reason and family.refusal), family.name
        assert family.task in (CLASSIFY, SEGMENT, GENERATE), family.name
    assert len({family.slug for family in FAMILIES}) == len(FAMILIES), "two families share a test id"


def test_docs_table_is_rendered_from_the_declarations():
    current = page_table(PAGE.read_text(encoding="utf-8"))
    assert current == render(), f"the docs/compatibility.md table is stale: run `{REGENERATE}`"
