"""Benchmark: the image benchmarks as they ship (docs/benchmarks.md), timed per image through the real CLI.

Data. Tiny copies of each layout built in a temporary folder at the real image sizes:
ADE20K 512x512 (its validation images are ~512 on the short side), Cityscapes 2048x1024,
Pascal VOC 500x375, ImageNet 500x375 JPEGs (resized by the model's processor to 224). Ground
truth is the model's own clean prediction, written in the layout's own convention.

Models, random weights (nothing downloads), at the sizes the paper's evaluation uses:
SegFormer-B0 (hidden sizes 32/64/160/256, depths 2/2/2/2, decoder 256) with 150, 19 and 21
classes, the processor at 512x512 (ADE20K, VOC) or 1024x1024 (Cityscapes; inputs are resized
to it, and the logits are upsampled back to 2048x1024 before the noise, as aim always does);
and a ResNet-50 (Hugging Face's ResNetConfig defaults) with 1000 classes at 224x224.

Rows (`run(quick) -> list[dict]`, one thread, wall time of `aim_cli.cli.main` in this process):

- seconds per image (the time for N images minus the time for the first alone, over N - 1,
  so model loading and start-up are left out) of `aim segment --masks ROOT --sigma 1` (evaluation.json written) and of
  `aim calibrate --task segment --data ROOT --target-miou ...` for ADE20K, Cityscapes and VOC;
  of `aim calibrate --data val/` (ImageNet synset folders) for ImageNet;
- the layout's cost: the extra time reading the layout as shipped takes per image (finding,
  pairing and mapping its masks, the convention check included) against the same images in
  aim's plain layout, as a share of the whole per-image time (goal <= 0.05); and, for
  information, whole `aim segment` runs of both (noisy on a shared machine).

Full mode: 4 images a data set, 3 repetitions; quick: 2 images, 1 repetition (about 10 minutes
on a loaded 2-core machine, most of it the ADE20K calibration's 150-class passes).

    python benchmarks/bench_layouts.py [--quick]
"""

from __future__ import annotations

import argparse
import contextlib
import io
import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np
import torch
from PIL import Image

OVERHEAD_GOAL = 1.05


def _segformer(directory: Path, classes: int, size: int, reduce_labels: bool = False) -> Path:
    """A SegFormer-B0-size model with random weights and a peaked head, as a local checkpoint."""
    from transformers import SegformerConfig, SegformerForSemanticSegmentation, SegformerImageProcessor

    config = SegformerConfig(
        hidden_sizes=[32, 64, 160, 256],
        depths=[2, 2, 2, 2],
        decoder_hidden_size=256,
        num_attention_heads=[1, 2, 5, 8],
        num_labels=classes,
    )
    torch.manual_seed(0)
    model = SegformerForSemanticSegmentation(config).eval()
    with torch.no_grad():  # top-class leads of a few units, as in a trained model
        model.decode_head.classifier.weight.mul_(100.0)
    model.save_pretrained(directory)
    processor = SegformerImageProcessor(size={"height": size, "width": size}, do_reduce_labels=reduce_labels)
    processor.save_pretrained(directory)
    return directory


def _resnet50(directory: Path) -> Path:
    """A ResNet-50 (Hugging Face defaults) with 1000 classes and random weights."""
    from transformers import ConvNextImageProcessor, ResNetConfig, ResNetForImageClassification

    torch.manual_seed(0)
    model = ResNetForImageClassification(ResNetConfig(num_labels=1000)).eval()
    with torch.no_grad():
        model.classifier[-1].weight.mul_(50.0)
    model.save_pretrained(directory)
    ConvNextImageProcessor(size={"shortest_edge": 224}).save_pretrained(directory)
    return directory


def _field(width: int, height: int, rng: np.random.Generator) -> Image.Image:
    """A smooth random colour field (structure for a segmenter to split)."""
    small = rng.integers(0, 256, (max(1, height // 64), max(1, width // 64), 3), dtype=np.uint8)
    return Image.fromarray(small).resize((width, height), Image.BILINEAR)


def _truth(model: Path, images: list[Path]) -> list[np.ndarray]:
    """The model's clean class-id masks, with a ring of ignored pixels (255) as real masks have."""
    from aim_cli.images import load_image
    from aim_cli.models.registry import load_model
    from aim_cli.tasks.segment import decision_logits

    segmenter = load_model("segment", str(model), device=torch.device("cpu"))
    masks = [decision_logits(segmenter, [load_image(p).image]).argmax(1)[0].numpy() for p in images]
    for mask in masks:
        mask[:8], mask[-8:], mask[:, :8], mask[:, -8:] = 255, 255, 255, 255
    return masks


def _save(mask: np.ndarray, path: Path) -> None:
    """A class-id mask as a grey PNG."""
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(mask.astype(np.uint8)).save(path)


def _plain(root: Path, images: list[Path], truths: list[np.ndarray]) -> Path:
    """The same images and model-space masks in aim's plain layout."""
    for i, (image, truth) in enumerate(zip(images, truths)):
        (root / "images").mkdir(parents=True, exist_ok=True)
        shutil.copyfile(image, root / "images" / f"{i:04d}{image.suffix}")
        _save(truth, root / "masks" / f"{i:04d}.png")
    return root


def _ade20k(base: Path, count: int) -> tuple[Path, Path, Path]:
    """(model, ADE20K root, plain twin)."""
    model = _segformer(base / "ade_model", 150, 512, reduce_labels=True)
    rng = np.random.default_rng(0)
    root = base / "ADEChallengeData2016"
    paths = []
    for i in range(count):
        path = root / "images" / "validation" / f"ADE_val_{i + 1:08d}.jpg"
        path.parent.mkdir(parents=True, exist_ok=True)
        _field(683, 512, rng).save(path, quality=90)
        paths.append(path)
    truths = _truth(model, paths)
    for path, truth in zip(paths, truths):
        _save(np.where(truth == 255, 0, truth + 1), root / "annotations" / "validation" / f"{path.stem}.png")
    return model, root, _plain(base / "ade_plain", paths, truths)


def _cityscapes(base: Path, count: int) -> tuple[Path, Path, Path]:
    """(model, Cityscapes root with labelIds masks, plain twin)."""
    from cityscapesscripts.helpers.labels import labels

    to_label = np.zeros(256, dtype=np.int64)  # train id -> a label id; 255 -> 0 ('unlabeled', ignored)
    for label in reversed(labels):
        if 0 <= label.trainId < 255:
            to_label[label.trainId] = label.id
    model = _segformer(base / "cs_model", 19, 1024)
    rng = np.random.default_rng(1)
    root = base / "cityscapes"
    paths = []
    for i in range(count):
        path = root / "leftImg8bit" / "val" / "frankfurt" / f"frankfurt_{i:06d}_000019_leftImg8bit.png"
        path.parent.mkdir(parents=True, exist_ok=True)
        _field(2048, 1024, rng).save(path)
        paths.append(path)
    truths = _truth(model, paths)
    for path, truth in zip(paths, truths):
        stem = path.name.removesuffix("_leftImg8bit.png")
        _save(to_label[truth], root / "gtFine" / "val" / "frankfurt" / f"{stem}_gtFine_labelIds.png")  # 255 -> 0
    return model, root, _plain(base / "cs_plain", paths, truths)


def _voc(base: Path, count: int) -> tuple[Path, Path, Path]:
    """(model, VOC2012 root with palette masks and a val list, plain twin)."""
    model = _segformer(base / "voc_model", 21, 512)
    rng = np.random.default_rng(2)
    root = base / "VOC2012"
    paths = []
    for i in range(count):
        path = root / "JPEGImages" / f"2007_{i:06d}.jpg"
        path.parent.mkdir(parents=True, exist_ok=True)
        _field(500, 375, rng).save(path, quality=90)
        paths.append(path)
    truths = _truth(model, paths)
    for path, truth in zip(paths, truths):
        mask = Image.fromarray(truth.astype(np.uint8)).convert("P")
        mask.putpalette([v for i in range(256) for v in (i, i, i)])
        (root / "SegmentationClass").mkdir(parents=True, exist_ok=True)
        mask.save(root / "SegmentationClass" / f"{path.stem}.png")
    (root / "ImageSets" / "Segmentation").mkdir(parents=True)
    (root / "ImageSets" / "Segmentation" / "val.txt").write_text("".join(f"{p.stem}\n" for p in paths))
    return model, root, _plain(base / "voc_plain", paths, truths)


def _imagenet(base: Path, count: int) -> tuple[Path, Path, Path]:
    """(model, val/<wnid>/ folder, class-index folders), labelled by the model's own predictions."""
    from timm.data import ImageNetInfo

    from aim_cli.images import load_image
    from aim_cli.models.registry import load_model

    model = _resnet50(base / "resnet50")
    classifier = load_model("classify", str(model), device=torch.device("cpu"))
    synsets = ImageNetInfo("imagenet-1k").label_names()
    rng = np.random.default_rng(3)
    for i in range(count):
        loose = base / f"ILSVRC2012_val_{i + 1:08d}.JPEG"
        _field(500, 375, rng).save(loose, format="JPEG", quality=90)
        k = int(classifier.logits([load_image(loose).image]).argmax())
        for folder in (base / "val" / synsets[k], base / "index" / f"{k:03d}"):
            folder.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(loose, folder / loose.name)
    return model, base / "val", base / "index"


def _cli(*args: str) -> float:
    """Seconds one `aim` command takes in this process (it must succeed)."""
    from aim_cli.cli import main

    start = time.perf_counter()
    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()) as err:
        try:
            main([*args, "--device", "cpu", "--quiet"])
        except SystemExit as exc:
            if exc.code:
                raise RuntimeError(f"aim {' '.join(args)} failed: {err.getvalue()}") from None
    return time.perf_counter() - start


def _row(name: str, measured: float, detail: str, goal: str = "", met: bool = True) -> dict:
    """One result row."""
    return {"name": name, "measured": round(measured, 3), "goal": goal, "met": met, "detail": detail}


def _reading_overhead(root: Path, plain: Path, model: Path, reps: int) -> float:
    """Seconds per image the layout adds to reading (decode image and mask, pair, map ids), against plain."""
    import json

    from aim_cli.calibration.datasets import read_segmentation_data

    config = json.loads((model / "config.json").read_text())
    reduce = json.loads((model / "preprocessor_config.json").read_text()).get("do_reduce_labels")
    classes = len(config["id2label"])
    times: dict[str, list[float]] = {"shipped": [], "plain": []}
    for _ in range(reps):
        for name, data in (("shipped", root), ("plain", plain)):
            start = time.perf_counter()
            dataset = read_segmentation_data(data)
            dataset.prepare(classes, reduce)
            items = list(dataset.inputs())
            times[name].append((time.perf_counter() - start) / len(items))
    return statistics.median(times["shipped"]) - statistics.median(times["plain"])


def _segment_rows(name: str, model: Path, root: Path, plain: Path, count: int, tmp: Path, reps: int) -> list[dict]:
    """Seconds per image of segment and calibrate on a layout (the marginal cost, past the first image,
    so model loading is left out), and the layout's cost against the same images in the plain layout."""
    one = tmp / f"{name}_one"  # the first image alone, to take the fixed cost out of the per-image time
    (one / "images").mkdir(parents=True)
    first = sorted((plain / "images").iterdir())[0]
    shutil.copyfile(first, one / "images" / first.name)
    shutil.copytree(plain / "masks", one / "masks")

    def segment(data: Path) -> float:
        out = tmp / f"out_{name}_{data.name}"
        shutil.rmtree(out, ignore_errors=True)
        return _cli("segment", "--model", str(model), "--masks", str(data), "--sigma", "1", "-o", str(out))

    def calibrate(data: Path) -> float:
        return _cli(
            "calibrate", "--task", "segment", "--model", str(model), "--data", str(data), "--target-miou", "0.5"
        )

    reading = _reading_overhead(root, plain, model, reps * 3)
    shipped_times, plain_times, one_times = [], [], []
    for _ in range(reps):  # interleaved, so load drifts hit all alike
        shipped_times.append(segment(root))
        plain_times.append(segment(plain))
        one_times.append(segment(one))
    shipped, own, single = (statistics.median(t) for t in (shipped_times, plain_times, one_times))
    calibrate_all, calibrate_one = calibrate(root), calibrate(one)
    ratio = shipped / own
    extra = count - 1
    per_image = (shipped - single) / extra
    share = reading / per_image if per_image > 0 else float("nan")
    return [
        _row(
            f"{name}: reading the layout as shipped / the whole per-image time",
            share,
            f"{1000 * reading:.1f} ms more per image than reading the plain twin (find, pair, map the mask; "
            f"median of {reps * 3}) against {per_image:.2f} s per image",
            f"<= {OVERHEAD_GOAL - 1:.2f}",
            share <= OVERHEAD_GOAL - 1,
        ),
        _row(
            f"{name}: aim segment --masks, seconds per image",
            (shipped - single) / extra,
            f"({shipped:.1f} s for {count} images - {single:.1f} s for 1) / {extra}; fixed cost {single:.1f} s",
        ),
        _row(
            f"{name}: aim calibrate --task segment, seconds per image",
            (calibrate_all - calibrate_one) / extra,
            f"({calibrate_all:.1f} s for {count} images - {calibrate_one:.1f} s for 1) / {extra}",
        ),
        _row(
            f"{name} as shipped / plain layout (aim segment --masks)",
            ratio,
            f"median of {reps}: {shipped:.2f} s vs {own:.2f} s",
            "",
            True,
        ),
    ]


def run(quick: bool = False) -> list[dict]:
    """All rows; `quick` builds one image per data set and times each command once."""
    torch.set_num_threads(1)
    count, reps = (2, 1) if quick else (4, 3)
    rows: list[dict] = []
    with tempfile.TemporaryDirectory() as name:
        base = Path(name)
        for label, build in (("ADE20K", _ade20k), ("Cityscapes", _cityscapes), ("VOC", _voc)):
            model, root, plain = build(base / label, count)
            rows += _segment_rows(label, model, root, plain, count, base, reps)
        model, val, index = _imagenet(base / "imagenet", count)
        shipped = _cli("calibrate", "--model", str(model), "--data", str(val), "--target-acc", "0.5")
        own = _cli("calibrate", "--model", str(model), "--data", str(index), "--target-acc", "0.5")
        single = _cli("calibrate", "--model", str(model), "--data", str(index), "--target-acc", "0.5", "--limit", "1")
        rows.append(
            _row(
                "ImageNet: aim calibrate --data val/, seconds per image",
                (own - single) / (count - 1),
                f"({own:.1f} s for {count} images - {single:.1f} s for 1) / {count - 1}",
            )
        )
        rows.append(
            _row(
                "ImageNet synset folders / class-index folders (aim calibrate)",
                shipped / own,
                f"{shipped:.2f} s vs {own:.2f} s (one run each; includes importing timm for the ILSVRC table)",
            )
        )
    return rows


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    for row in run(parser.parse_args().quick):
        print(f"{row['name']}: {row['measured']} {row['goal']} {'' if row['met'] else 'NOT MET '}({row['detail']})")
