"""`aim segment` end to end: the real CLI on the demo, on user checkpoints, and on bad input."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from aim_cli import demo
from tests.conftest import REPO, assert_user_error, run_aim

SAMPLES = demo.samples_dir("segment")
SAMPLE_MASKS = SAMPLES.parent / "segment_masks"
FOCUS_PROFILE = REPO / "profiles" / "focus-pedestrian.yaml"
DEMO_CLASSES = 7


def _leftovers(directory: Path) -> list[Path]:
    """Temporary files an interrupted atomic write would leave behind."""
    return [p for p in directory.rglob("*") if p.name.endswith(".part")]


def _read_jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def _assert_masks(output: Path, images: list[Path], num_classes: int) -> None:
    """One palette PNG per image, same size as its input, every pixel a valid class id."""
    for image_path in images:
        mask = Image.open(output / f"{image_path.stem}.png")
        assert mask.mode == "P" and mask.getpalette(), mask.mode
        assert mask.size == Image.open(image_path).size
        values = np.asarray(mask)
        assert values.max() < num_classes


@pytest.fixture(scope="module")
def evaluated(tmp_path_factory) -> tuple[Path, object]:
    """One run with every output on: overlay, compare, ground-truth masks, the focus profile."""
    output = tmp_path_factory.mktemp("evaluated") / "out"
    args = (
        "segment",
        "--profile",
        str(FOCUS_PROFILE),
        "--masks",
        str(SAMPLE_MASKS),
        "--compare",
        "--overlay",
        "--seed",
        "3",
        "-o",
        str(output),
    )
    return output, run_aim(*args), args


def test_focus_pedestrian_as_written_uses_the_demo_and_writes_masks(tmp_path):
    result = run_aim("segment", "--focus", "pedestrian", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    output = tmp_path / "aim-segment-output"
    samples = sorted(SAMPLES.glob("*.png"))
    _assert_masks(output, samples, DEMO_CLASSES)
    # Cityscapes colours are embedded: person (class 6) is crimson.
    assert Image.open(output / f"{samples[0].stem}.png").getpalette()[18:21] == [220, 20, 60]
    records = _read_jsonl(output / "summary.jsonl")
    assert [Path(r["image"]).name for r in records] == [p.name for p in samples]
    assert all(r["focus"] == ["person:up"] and r["focus_sigma"] == 2.0 for r in records)
    assert "clean_fractions" not in records[0]  # only with --compare
    # The terminal table shows the person share growing (clean pass computed for it).
    assert "focus effect" in result.stdout and "person" in result.stdout and "up" in result.stdout
    assert "demo segmenter" in result.stderr and "Traceback" not in result.stderr
    assert not _leftovers(output)


def test_overlay_compare_summary_and_evaluation(evaluated):
    output, result, _ = evaluated
    assert result.returncode == 0, result.stderr
    samples = sorted(SAMPLES.glob("*.png"))
    _assert_masks(output, samples, DEMO_CLASSES)
    for sample in samples:
        overlay = Image.open(output / "overlays" / f"{sample.stem}.png")
        assert overlay.mode == "RGB" and overlay.size == Image.open(sample).size
    records = _read_jsonl(output / "summary.jsonl")
    assert len(records) == len(samples)
    for record in records:
        assert record["overlay"] == f"overlays/{Path(record['image']).stem}.png"
        assert sum(record["fractions"].values()) == pytest.approx(1, abs=1e-4)
        assert sum(record["clean_fractions"].values()) == pytest.approx(1, abs=1e-4)
        assert set(record["fractions"]) == set(record["clean_fractions"])
        assert record["sigma"] == 0.0 and record["focus_sigma"] == 2.0 and record["seed"] == 3
        assert record["focus"] == ["person:up"] and 0 <= record["pixel_accuracy"] <= 1
    # Boosting person grows its share in every image.
    assert all(r["fractions"]["person"] > r["clean_fractions"]["person"] for r in records)
    report = json.loads((output / "evaluation.json").read_text())
    assert report["images"] == len(samples) and report["labels"][6] == "person"
    clean, modulated = report["clean"], report["modulated"]
    assert modulated["classes"]["person"]["recall"] > clean["classes"]["person"]["recall"]
    assert modulated["miou"] < clean["miou"]  # the focus trade-off
    assert 0.8 < clean["pixel_accuracy"] <= 1
    matrix = np.array(report["confusion"]["modulated"])
    assert matrix.shape == (DEMO_CLASSES, DEMO_CLASSES) and matrix.sum() == 64 * 64 * len(samples)
    assert "mIoU" in result.stdout and "person *" in result.stdout and "recall" in result.stdout
    assert not _leftovers(output)


def test_seeded_runs_are_bit_identical_and_seeds_differ(evaluated, tmp_path):
    first, result, args = evaluated
    assert result.returncode == 0, result.stderr
    same = tmp_path / "same"
    other = tmp_path / "other"
    rerun = [*list(args[:-1]), str(same)]
    assert run_aim(*rerun, "-q").returncode == 0
    reseeded = [a if a != "3" else "4" for a in rerun[:-1]] + [str(other)]
    assert run_aim(*reseeded, "-q").returncode == 0
    names = sorted(p.name for p in first.glob("*.png"))
    assert names == sorted(p.name for p in same.glob("*.png"))
    assert all((first / n).read_bytes() == (same / n).read_bytes() for n in names)
    assert (first / "evaluation.json").read_text() == (same / "evaluation.json").read_text()
    assert any((first / n).read_bytes() != (other / n).read_bytes() for n in names if "overlay" not in n)


def test_bad_images_and_masks_fail_alone(tmp_path):
    images, masks, output = tmp_path / "images", tmp_path / "masks", tmp_path / "out"
    images.mkdir()
    masks.mkdir()
    for name in ("scene_0", "scene_1", "scene_2", "scene_3"):
        shutil.copy(SAMPLES / f"{name}.png", images / f"{name}.png")
    shutil.copy(SAMPLE_MASKS / "scene_0.png", masks / "scene_0.png")  # the one good pair
    Image.new("L", (10, 10)).save(masks / "scene_1.png")  # wrong size
    Image.fromarray(np.full((64, 64), 9, dtype=np.uint8)).save(masks / "scene_2.png")  # not a class id
    # scene_3 has no mask at all
    (images / "broken.png").write_bytes(b"not a png")
    Image.new("L", (64, 64)).save(masks / "broken.png")
    result = run_aim(
        "segment", str(images), str(tmp_path / "missing.png"), "--masks", str(masks), "--overlay", "-o", str(output)
    )
    assert_user_error(
        result,
        1,
        "missing.png",
        "broken.png: cannot decode image",
        "scene_1.png is 10x10 but the image is 64x64",
        "holds value 9",
        "no ground-truth mask named scene_3.png",
        "5 input(s) failed",
    )
    assert sorted(p.name for p in output.iterdir()) == ["evaluation.json", "overlays", "scene_0.png", "summary.jsonl"]
    assert [p.name for p in (output / "overlays").iterdir()] == ["scene_0.png"]
    assert [Path(r["image"]).name for r in _read_jsonl(output / "summary.jsonl")] == ["scene_0.png"]
    assert json.loads((output / "evaluation.json").read_text())["images"] == 1


def test_missing_masks_dir_is_a_usage_error(tmp_path):
    result = run_aim("segment", "--masks", str(tmp_path / "nope"), "-o", str(tmp_path / "out"))
    assert_user_error(result, 2, "masks directory", "does not exist")
    assert not (tmp_path / "out").exists()


def test_unknown_focus_class_suggests_names(tmp_path):
    result = run_aim("segment", "--focus", "pedestrain", "-o", str(tmp_path / "out"))
    assert_user_error(result, 2, "unknown class name 'pedestrain'", "did you mean", "person")
    assert not (tmp_path / "out").exists()


def test_classifier_directory_is_refused(tmp_path):
    result = run_aim("segment", str(SAMPLES), "--model", str(demo.model_dir("classify")), "-o", str(tmp_path / "out"))
    assert_user_error(result, 2, "not a semantic segmentation model", "aim classify")
    assert not (tmp_path / "out").exists()


@pytest.fixture(scope="module")
def tiny_segformer(tmp_path_factory) -> Path:
    """A random three-class SegFormer saved as a local Hugging Face directory."""
    from transformers import SegformerConfig, SegformerForSemanticSegmentation, SegformerImageProcessor

    directory = tmp_path_factory.mktemp("hf_segformer")
    labels = {0: "background", 1: "person", 2: "car"}
    config = SegformerConfig(
        num_labels=3,
        id2label=labels,
        label2id={v: k for k, v in labels.items()},
        hidden_sizes=[8, 8, 8, 8],
        depths=[1, 1, 1, 1],
        num_attention_heads=[1, 1, 1, 1],
        sr_ratios=[2, 1, 1, 1],
        decoder_hidden_size=8,
    )
    torch.manual_seed(0)
    SegformerForSemanticSegmentation(config).save_pretrained(directory)
    SegformerImageProcessor(size={"height": 32, "width": 32}).save_pretrained(directory)
    return directory


def test_local_segformer_directory(tiny_segformer, tmp_path):
    output = tmp_path / "out"
    result = run_aim(
        "segment",
        str(SAMPLES),
        "--model",
        str(tiny_segformer),
        "--focus",
        "pedestrian",
        "--focus",
        "car:down",
        "--sigma",
        "0.5",
        "--seed",
        "1",
        "-o",
        str(output),
    )
    assert result.returncode == 0, result.stderr
    _assert_masks(output, sorted(SAMPLES.glob("*.png")), 3)
    record = _read_jsonl(output / "summary.jsonl")[0]
    assert record["model"] == str(tiny_segformer) and record["focus"] == ["person:up", "car:down"]
    assert "person" in result.stdout and "down" in result.stdout  # both targets in the focus table


def test_torchvision_lraspp_with_weights_and_labels(tmp_path):
    import torchvision
    from safetensors.torch import save_file

    torch.manual_seed(0)
    network = torchvision.models.get_model(
        "lraspp_mobilenet_v3_large", weights=None, weights_backbone=None, num_classes=3
    )
    weights, labels = tmp_path / "lraspp.safetensors", tmp_path / "labels.txt"
    save_file({k: v.contiguous() for k, v in network.state_dict().items()}, str(weights))
    labels.write_text("road\nperson\nsky\n")
    output = tmp_path / "out"
    sample = sorted(SAMPLES.glob("*.png"))[:2]
    result = run_aim(
        "segment",
        *map(str, sample),
        "--model",
        "torchvision:lraspp_mobilenet_v3_large",
        "--weights",
        str(weights),
        "--labels",
        str(labels),
        "--focus",
        "person",
        "--seed",
        "2",
        "-o",
        str(output),
    )
    assert result.returncode == 0, result.stderr
    _assert_masks(output, sample, 3)
    mask = Image.open(output / f"{sample[0].stem}.png")
    assert mask.getpalette()[:9] == [128, 64, 128, 220, 20, 60, 70, 130, 180]  # road, person, sky
    record = _read_jsonl(output / "summary.jsonl")[0]
    assert record["model"] == "torchvision:lraspp_mobilenet_v3_large"
    assert set(record["fractions"]) <= {"road", "person", "sky"}


def test_mask_files_round_trip_and_colour_masks_are_refused(tmp_path):
    """In-process check of the mask writer/reader the CLI uses (palette, 16-bit, RGB refusal)."""
    from aim_cli.errors import InputError
    from aim_cli.masks import colour_table, read_mask, save_mask

    ids = np.array([[0, 1, 2], [2, 1, 0]], dtype=np.uint8)
    save_mask(ids, colour_table(["road", "person", "zebra crossing"]), tmp_path / "small.png")
    assert np.array_equal(read_mask(tmp_path / "small.png"), ids)
    many = np.array([[299, 0, 17]], dtype=np.int32)  # over 256 classes: 16-bit grey, no palette
    save_mask(many, colour_table([f"c{i}" for i in range(300)]), tmp_path / "many.png")
    assert np.array_equal(read_mask(tmp_path / "many.png"), many)
    colour = np.zeros((2, 2, 3), dtype=np.uint8)
    colour[0, 0] = (220, 20, 60)
    Image.fromarray(colour).save(tmp_path / "colour.png")
    with pytest.raises(InputError, match="not single-channel class ids"):
        read_mask(tmp_path / "colour.png")
    assert not _leftovers(tmp_path)
