"""Non-finite logits at the model-output boundary: a failed input (classify, segment, generate), an error (calibrate).

A checkpoint whose head weights are NaN, or a dtype that overflows, makes the model compute
NaN/inf logits. The input that got them fails with one line; the good inputs of its batch
are still processed, and no NaN reaches any output file.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from aim_cli import demo
from aim_cli.errors import FailedInput, ModelError
from aim_cli.plans import plan_modulation
from aim_cli.profile import Profile
from tests.conftest import assert_user_error, run_aim

SAMPLES = demo.samples_dir("classify")
LABELS = ["ant", "bee", "cat"]
MESSAGE = "non-finite logits (NaN/inf)"


@pytest.fixture(scope="module")
def nan_head_vit(tmp_path_factory) -> Path:
    """A tiny ViT classifier saved with NaN in its head weights: every image gets NaN logits."""
    from transformers import ViTConfig, ViTForImageClassification, ViTImageProcessor

    directory = tmp_path_factory.mktemp("nan_vit")
    torch.manual_seed(0)
    config = ViTConfig(
        image_size=32,
        patch_size=8,
        hidden_size=16,
        num_hidden_layers=1,
        num_attention_heads=2,
        intermediate_size=32,
        num_labels=3,
        id2label=dict(enumerate(LABELS)),
        label2id={name: i for i, name in enumerate(LABELS)},
    )
    model = ViTForImageClassification(config)
    with torch.no_grad():
        model.classifier.weight[1, 3] = math.nan
    model.save_pretrained(directory)
    ViTImageProcessor(size={"height": 32, "width": 32}).save_pretrained(directory)
    return directory


def test_classify_with_nan_head_fails_each_input_with_one_line(nan_head_vit, tmp_path):
    images = sorted(SAMPLES.glob("*.png"))[:3]
    out = tmp_path / "out.jsonl"
    result = run_aim(
        "classify", *map(str, images), "--model", str(nan_head_vit), "-o", str(out), "--sigma", "1", "--seed", "0"
    )
    assert result.returncode in (1, 2), (result.returncode, result.stderr)
    assert "Traceback" not in result.stderr
    failed = [line for line in result.stderr.splitlines() if line.startswith("aim: failed:")]
    assert len(failed) == len(images), result.stderr
    for line, image in zip(failed, images):
        assert MESSAGE in line and str(image) in line, line
    for path in tmp_path.iterdir():
        assert "nan" not in path.read_text().lower(), path


def test_calibrate_with_nan_head_is_one_line_error(nan_head_vit, tmp_path):
    data = tmp_path / "data"
    for label in LABELS:
        (data / label).mkdir(parents=True)
        for i in range(2):
            Image.fromarray(np.full((32, 32, 3), 40 * i + 60, np.uint8)).save(data / label / f"{i}.png")
    result = run_aim("calibrate", "--target-acc", "0.5", "--model", str(nan_head_vit), "--data", str(data))
    assert_user_error(result, 2, MESSAGE)
    errors = [line for line in result.stderr.splitlines() if line.startswith("aim:")]
    assert len(errors) == 1 and MESSAGE in errors[0] and str(data) in errors[0], result.stderr


@dataclass
class PoisonedModel:
    """Wraps a model: the logits of images whose top-left pixel is `poison` become NaN."""

    labels: list[str]
    poison: int = 255
    name: str = "poisoned"

    def logits(self, images):
        rows = []
        for image in images:
            pixels = np.asarray(image, dtype=np.float32)
            row = torch.from_numpy(pixels.mean(axis=(0, 1))[: len(self.labels)].copy())
            if int(np.asarray(image)[0, 0, 0]) == self.poison:
                row[0] = math.nan
            rows.append(row)
        return torch.stack(rows)


class PoisonedSegmenter(PoisonedModel):
    """Per-pixel logits (N, C, 4, 4); a poisoned image gets +inf in one pixel."""

    def logits(self, images):
        flat = super().logits(images)
        low = flat[:, :, None, None].repeat(1, 1, 4, 4).nan_to_num(0.0)
        for i, image in enumerate(images):
            if int(np.asarray(image)[0, 0, 0]) == self.poison:
                low[i, 1, 2, 3] = math.inf
        return low


def _images(tmp_path: Path, count: int, poisoned: set[int]) -> list[Path]:
    """Small RGB files; the poisoned ones start with a 255 pixel."""
    paths = []
    for i in range(count):
        pixels = np.full((8, 8, 3), 10 * i + 5, np.uint8)
        if i in poisoned:
            pixels[0, 0] = 255
        paths.append(tmp_path / f"img{i}.png")
        Image.fromarray(pixels).save(paths[-1])
    return paths


def test_classify_task_processes_the_good_images_of_a_batch(tmp_path):
    from aim_cli.tasks.classify import ClassifiedImage, classify_images

    paths = _images(tmp_path, 5, poisoned={1, 3})
    plan = plan_modulation(Profile(sigma=0.5, seed=0), LABELS)
    results = list(classify_images(paths, PoisonedModel(LABELS), plan, batch_size=8, topk=3, compare=True))
    failed = [r for r in results if isinstance(r, FailedInput)]
    done = [r for r in results if isinstance(r, ClassifiedImage)]
    assert sorted(f.path for f in failed) == [paths[1], paths[3]]
    assert all(MESSAGE in f.reason and str(f.path) in f.reason for f in failed)
    assert sorted(d.path for d in done) == [paths[0], paths[2], paths[4]]
    for item in done:
        assert all(math.isfinite(p.probability) for p in [*item.top, *item.clean_top])


def test_segment_task_processes_the_good_images_of_a_batch(tmp_path):
    from aim_cli.tasks.segment import SegmentedImage, segment_files

    paths = _images(tmp_path, 4, poisoned={2})
    plan = plan_modulation(Profile(sigma=0.5, seed=0), LABELS)
    results = list(segment_files(paths, PoisonedSegmenter(LABELS), plan, batch_size=4))
    failed = [r for r in results if isinstance(r, FailedInput)]
    assert [f.path for f in failed] == [paths[2]] and MESSAGE in failed[0].reason
    assert sorted(r.path for r in results if isinstance(r, SegmentedImage)) == [paths[0], paths[1], paths[3]]


def test_classify_calibration_names_the_image(tmp_path):
    from aim_cli.calibration.classify import collect_logits
    from aim_cli.calibration.datasets import LabelledImage

    paths = _images(tmp_path, 3, poisoned={1})
    items = [LabelledImage(label="ant", path=p, name=p.name) for p in paths]
    with pytest.raises(ModelError, match="non-finite logits") as error:
        collect_logits(PoisonedModel(LABELS), items, [0, 0, 0])
    assert str(paths[1]) in str(error.value) and "\n" not in str(error.value)


def test_segmentation_calibration_names_the_image():
    from aim_cli.calibration.core import Target
    from aim_cli.calibration.datasets import SegmentationDataset
    from aim_cli.calibration.segment import SegmentationCalibrator

    scenes = []
    for i in range(3):
        pixels = np.full((8, 8, 3), 10 * i + 5, np.uint8)
        if i == 1:
            pixels[0, 0] = 255
        scenes.append((f"scene{i}", Image.fromarray(pixels), np.zeros((8, 8), np.int64)))
    dataset = SegmentationDataset("poisoned scenes", scenes=scenes)
    calibrator = SegmentationCalibrator(PoisonedSegmenter(LABELS), dataset, Target("pixel_accuracy", 0.5), draws=2)
    with pytest.raises(ModelError, match="non-finite logits") as error:
        calibrator.run()
    assert "scene1" in str(error.value) and "\n" not in str(error.value)


@pytest.fixture(scope="module")
def tiny_lm(tmp_path_factory):
    """The tiny Llama of the generate tests, loaded as aim loads it."""
    from aim_cli.models.registry import load_model
    from tests.test_generate_cli import build_tiny_llama

    directory = tmp_path_factory.mktemp("nan_llama")
    build_tiny_llama(directory, hidden=16, layers=1)
    return load_model("generate", str(directory), device=torch.device("cpu"))


def _poison_rows(lm, rows: set[int]):
    """A forward hook that makes the model's logits NaN for the given batch rows."""

    def hook(module, args, kwargs, output):
        for row in rows:
            if row < output.logits.shape[0]:
                output.logits[row, -1, 5] = math.nan
        return output

    return lm.model.register_forward_hook(hook, with_kwargs=True)


@pytest.mark.parametrize("temperature", [0.0, 1.0])
def test_generate_fails_the_nan_prompt_and_finishes_the_others(tiny_lm, temperature):
    from aim_cli.tasks.generate import GenerationSettings, encode_prompts, generate_completions, plan_generation

    prompts = encode_prompts(tiny_lm, ["one two", "three four", "five six"])
    settings = GenerationSettings(max_new_tokens=4, temperature=temperature, batch_size=3)

    def run(**kwargs):
        plan = plan_generation(Profile(sigma=0.5, seed=0), tiny_lm)  # a fresh noise stream each run
        return list(generate_completions(tiny_lm, prompts, plan, settings, **kwargs))

    healthy = run()
    handle = _poison_rows(tiny_lm, {1})
    try:
        with pytest.raises(ModelError, match="non-finite logits"):
            run()
        failures: list[FailedInput] = []
        done = run(failures=failures)
    finally:
        handle.remove()
    assert [c.index for c in done] == [0, 2]
    if temperature == 0:  # greedy: the good rows are exactly what they are without the broken one
        assert [c.token_ids for c in done] == [healthy[0].token_ids, healthy[2].token_ids]
    assert len(failures) == 1 and MESSAGE in failures[0].reason and "prompt 2" in failures[0].reason


def test_generation_allows_the_masks_transformers_and_aim_set(tiny_lm):
    """-inf from padding exclusion or a min-length mask is intended, not a damaged model."""
    from aim_cli.tasks.generate import FiniteScores

    guard = FiniteScores()
    scores = torch.zeros(2, 10)
    scores[:, 7:] = -math.inf
    assert torch.equal(guard(torch.zeros(2, 1, dtype=torch.long), scores.clone()), scores)
    assert guard.failed == set()
    scores[1] = -math.inf  # nothing left to choose: broken
    guard(torch.zeros(2, 1, dtype=torch.long), scores)
    assert guard.failed == {1}


def test_calibration_of_logits_refuses_non_finite_rows():
    from aim_cli.calibration.classify import calibrate_target
    from aim_cli.calibration.core import Target

    logits = torch.randn(4, 3)
    logits[2, 1] = math.inf
    with pytest.raises(ModelError, match="item 3"):
        calibrate_target(logits, torch.tensor([0, 1, 2, 0]), Target("accuracy", 0.5))


@pytest.mark.parametrize("output, prompts", [(True, 2), (False, 2), (False, 1)])
def test_generate_cli_with_nan_head_fails_each_prompt_and_writes_nothing(tmp_path, output, prompts):
    """Through the real CLI: one failed line per prompt, exit 1, no output file and no NaN anywhere."""
    from tests.test_generate_cli import build_tiny_llama

    model, _ = build_tiny_llama(tmp_path / "nan_llama", hidden=16, layers=1)
    with torch.no_grad():
        model.lm_head.weight[4, 0] = math.nan
    model.save_pretrained(tmp_path / "nan_llama")
    out = tmp_path / "out.jsonl"
    args = ["generate", "--model", str(tmp_path / "nan_llama"), "--prompt", "one two", "--prompt", "three", "-n", "4"]
    args = args if prompts == 2 else args[:-4] + args[-2:]  # one prompt: streamed to stdout
    result = run_aim(*args, *(["-o", str(out)] if output else []))
    assert result.returncode == 1, (result.returncode, result.stderr)
    assert "Traceback" not in result.stderr
    failed = [line for line in result.stderr.splitlines() if line.startswith("aim: failed:")]
    assert len(failed) == prompts and all(MESSAGE in line for line in failed), result.stderr
    assert "nothing was written" in result.stderr
    assert not out.exists() and result.stdout == ""
