"""Benchmark data sets as they ship (ImageNet, ADE20K, Cityscapes, Pascal VOC), through the real CLI.

Each test builds a tiny copy of a layout from generated images, with ground truth that is the
tiny random model's own clean prediction (so clean accuracy is 1 and a calibration target lies
between chance and clean), written in the layout's own convention (ADE20K ids + 1, Cityscapes
label ids, VOC palette PNGs with a 255 border). The same images with the model-space ids in
aim's plain layout are the reference: every layout must give exactly its numbers (the same
evaluation.json metrics, the same calibrated sigma), because the same pixels are scored
against the same class ids in the same order with the same seeded noise.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from tests.test_compatibility import Cli

SIZE = 32  # pixels a side: the tiny SegFormers see 32x32 inputs
IMAGES = 3
SEED_ARGS = ("--sigma", "1.5", "--seed", "3")


@pytest.fixture
def cli(capsys, monkeypatch) -> Cli:
    """The in-process CLI runner."""
    return Cli(capsys, monkeypatch)


def _segformer(directory: Path, labels: list[str], reduce_labels: bool = False) -> Path:
    """A random tiny SegFormer with these class names, saved as a local Hugging Face directory."""
    from transformers import SegformerConfig, SegformerForSemanticSegmentation, SegformerImageProcessor

    id2label = dict(enumerate(labels))
    config = SegformerConfig(
        num_labels=len(labels),
        id2label=id2label,
        label2id={v: k for k, v in id2label.items()},
        hidden_sizes=[8, 8, 8, 8],
        depths=[1, 1, 1, 1],
        num_attention_heads=[1, 1, 1, 1],
        sr_ratios=[2, 1, 1, 1],
        decoder_hidden_size=8,
    )
    torch.manual_seed(0)
    model = SegformerForSemanticSegmentation(config)
    with torch.no_grad():  # a wide spread of logits, so a random model still predicts several classes
        model.decode_head.classifier.weight.mul_(40.0)
    model.save_pretrained(directory)
    SegformerImageProcessor(size={"height": SIZE, "width": SIZE}, do_reduce_labels=reduce_labels).save_pretrained(
        directory
    )
    return directory


def _images(count: int = IMAGES, seed: int = 0) -> list[Image.Image]:
    """Images of coloured 4x4 blocks (fixed seed)."""
    rng = np.random.default_rng(seed)
    return [
        Image.fromarray(rng.integers(0, 256, (SIZE // 4, SIZE // 4, 3), dtype=np.uint8).repeat(4, 0).repeat(4, 1))
        for _ in range(count)
    ]


def _predictions(model: Path, paths: list[Path]) -> list[np.ndarray]:
    """The model's clean class-id masks of image files (decoded as aim decodes them)."""
    from aim_cli.images import load_image
    from aim_cli.models.registry import load_model
    from aim_cli.tasks.segment import decision_logits

    segmenter = load_model("segment", str(model), device=torch.device("cpu"))
    return [decision_logits(segmenter, [load_image(p).image]).argmax(1)[0].numpy() for p in paths]


def _border(mask: np.ndarray, value: int) -> np.ndarray:
    """The mask with its outermost ring of pixels set to `value` (an ignored border or 'other')."""
    out = mask.copy()
    out[0, :] = out[-1, :] = out[:, 0] = out[:, -1] = value
    return out


def _save_ids(mask: np.ndarray, path: Path, palette: bool = False) -> None:
    """A class-id mask as a grey (or, for VOC, palette) PNG."""
    path.parent.mkdir(parents=True, exist_ok=True)
    image = Image.fromarray(mask.astype(np.uint8))
    if palette:
        image = image.convert("P")
        image.putpalette([v for i in range(256) for v in (i, 255 - i, (7 * i) % 256)])
    image.save(path)


def _plain_twin(root: Path, images: list[Path], truths: list[np.ndarray]) -> Path:
    """The same image files with model-space ids (255 ignored) in aim's plain layout, in the same order."""
    for i, (image, truth) in enumerate(zip(images, truths)):
        (root / "images").mkdir(parents=True, exist_ok=True)
        shutil.copyfile(image, root / "images" / f"{i:04d}{image.suffix}")
        _save_ids(truth, root / "masks" / f"{i:04d}.png")
    return root


# --- building each layout ------------------------------------------------------------------


def _ade20k(tmp: Path, model: Path) -> tuple[Path, Path]:
    """An ADEChallengeData2016 copy (0 = other at the border, class k stored as k + 1) and its plain twin."""
    root = tmp / "ADEChallengeData2016"
    paths = []
    for i, image in enumerate(_images()):
        path = root / "images" / "validation" / f"ADE_val_{i + 1:08d}.jpg"
        path.parent.mkdir(parents=True, exist_ok=True)
        image.save(path, quality=90)
        paths.append(path)
    (root / "images" / "training").mkdir()
    truths = [_border(p, 255) for p in _predictions(model, paths)]
    truths[-1][0, 0] = 149  # the last class somewhere, as in the real data: raw id 150 shows ADE20K's shift
    for path, truth in zip(paths, truths):
        raw = np.where(truth == 255, 0, truth + 1)
        _save_ids(raw, root / "annotations" / "validation" / f"{path.stem}.png")
    return root, _plain_twin(tmp / "plain", paths, truths)


def _cityscapes_tables() -> tuple[dict[int, int], list[str]]:
    """train id -> one label id, and the 19 train class names, from the official table."""
    from cityscapesscripts.helpers.labels import labels

    to_label = {}
    for label in labels:
        if 0 <= label.trainId < 255:
            to_label.setdefault(label.trainId, label.id)
    names = [next(x.name for x in labels if x.trainId == t) for t in range(19)]
    return to_label, names


def _cityscapes(tmp: Path, model: Path, train_ids_for: int = 0) -> tuple[Path, Path]:
    """A Cityscapes copy (two cities; gtFine labelIds beside the other gtFine files) and its plain twin.

    The first `train_ids_for` frames also get a labelTrainIds mask, which must be preferred.
    """
    root = tmp / "cityscapes"
    to_label, _ = _cityscapes_tables()
    frames = [("aachen", 0), ("aachen", 1), ("bremen", 0)]
    paths = []
    for (city, frame), image in zip(frames, _images()):
        path = root / "leftImg8bit" / "val" / city / f"{city}_{frame:06d}_000019_leftImg8bit.png"
        path.parent.mkdir(parents=True, exist_ok=True)
        image.save(path)
        paths.append(path)
    truths = [_border(p, 255) for p in _predictions(model, paths)]
    for n, (path, truth) in enumerate(zip(paths, truths)):
        city, stem = path.parent.name, path.name.removesuffix("_leftImg8bit.png")
        gt = root / "gtFine" / "val" / city
        raw = np.vectorize(lambda t: 0 if t == 255 else to_label[int(t)])(truth)  # 0: 'unlabeled', ignored
        _save_ids(raw, gt / f"{stem}_gtFine_labelIds.png")
        _save_ids(np.zeros_like(raw) + 26, gt / f"{stem}_gtFine_instanceIds.png")  # never a mask to score
        _save_ids(np.zeros_like(raw), gt / f"{stem}_gtFine_color.png")
        (gt / f"{stem}_gtFine_polygons.json").write_text("{}")
        if n < train_ids_for:
            _save_ids(truth, gt / f"{stem}_gtFine_labelTrainIds.png")
            _save_ids(np.full_like(raw, 33), gt / f"{stem}_gtFine_labelIds.png")  # wrong: must lose to trainIds
    return root, _plain_twin(tmp / "plain", paths, truths)


def _voc(tmp: Path, model: Path) -> tuple[Path, Path]:
    """A VOCdevkit/VOC2012 copy (palette masks, 255 border, a val list naming some images) and its plain twin."""
    root = tmp / "VOCdevkit" / "VOC2012"
    ids = [f"2007_{i:06d}" for i in range(IMAGES + 1)]
    paths = []
    for name, image in zip(ids, _images(IMAGES + 1)):
        path = root / "JPEGImages" / f"{name}.jpg"
        path.parent.mkdir(parents=True, exist_ok=True)
        image.save(path, quality=90)
        paths.append(path)
    truths = [_border(p, 255) for p in _predictions(model, paths)]
    for path, truth in zip(paths, truths):
        _save_ids(truth, root / "SegmentationClass" / f"{path.stem}.png", palette=True)
    chosen = [paths[0], paths[2], paths[3]]  # the val list leaves 2007_000001 out
    truths = [truths[0], truths[2], truths[3]]
    split = root / "ImageSets" / "Segmentation"
    split.mkdir(parents=True)
    (split / "val.txt").write_text("".join(f"{p.stem}\n" for p in chosen))
    (split / "train.txt").write_text(f"{paths[1].stem}\n")
    return tmp / "VOCdevkit", _plain_twin(tmp / "plain", chosen, truths)


@pytest.fixture(scope="module")
def models(tmp_path_factory) -> dict[str, Path]:
    """Tiny random SegFormers: ADE20K's 150 classes (do_reduce_labels), Cityscapes' 19, VOC's 21."""
    base = tmp_path_factory.mktemp("layout_models")
    _, cityscapes_names = _cityscapes_tables()
    return {
        "ade20k": _segformer(base / "ade20k", [f"ade class {k}" for k in range(150)], reduce_labels=True),
        "cityscapes": _segformer(base / "cityscapes", cityscapes_names),
        "voc": _segformer(base / "voc", ["background", *(f"voc class {k}" for k in range(1, 21))]),
    }


BUILDERS = {"ade20k": _ade20k, "cityscapes": _cityscapes, "voc": _voc}


def _evaluation(cli: Cli, tmp: Path, model: Path, *args: str) -> dict:
    """`aim segment ... --masks ...` run in-process: its evaluation.json, minus what names the data."""
    out = tmp / f"out{len(list(tmp.glob('out*')))}"
    cli.ok("segment", *args, "--model", str(model), *SEED_ARGS, "-o", str(out))
    report = json.loads((out / "evaluation.json").read_text())
    report.pop("masks")
    return report


def _calibrated(cli: Cli, model: Path, data: Path, *args: str) -> str:
    """The sigma `aim calibrate --task segment` prints for a pixel-accuracy target."""
    return cli.ok(
        "calibrate", "--task", "segment", "--model", str(model), "--data", str(data), "--target-acc", "0.6",
        "--draws", "2", *args,
    )  # fmt: skip


# --- segmentation: every layout scores exactly like aim's plain layout ------------------------


@pytest.mark.parametrize("layout", ["ade20k", "cityscapes", "voc"])
def test_segment_layout_as_shipped_equals_plain(cli, models, tmp_path, layout):
    root, plain = BUILDERS[layout](tmp_path, models[layout])
    reference = _evaluation(cli, tmp_path, models[layout], "--masks", str(plain))
    assert reference["images"] == IMAGES and reference["clean"]["pixel_accuracy"] > 0.999
    assert _evaluation(cli, tmp_path, models[layout], "--masks", str(root)) == reference  # detected
    assert _evaluation(cli, tmp_path, models[layout], "--masks", str(root), "--layout", layout) == reference


@pytest.mark.parametrize("layout", ["ade20k", "cityscapes", "voc"])
def test_calibrate_layout_as_shipped_equals_plain(cli, models, tmp_path, layout):
    root, plain = BUILDERS[layout](tmp_path, models[layout])
    reference = _calibrated(cli, models[layout], plain)
    assert float(reference) > 0
    assert _calibrated(cli, models[layout], root) == reference
    assert _calibrated(cli, models[layout], root, "--layout", layout) == reference


def test_images_named_with_their_mask_folders(cli, models, tmp_path):
    """Images given on the command line find their masks in the layout's own mask folder."""
    root, plain = _cityscapes(tmp_path / "c", models["cityscapes"])
    reference = _evaluation(cli, tmp_path, models["cityscapes"], "--masks", str(plain))
    images, masks = str(root / "leftImg8bit" / "val"), str(root / "gtFine" / "val")
    assert _evaluation(cli, tmp_path, models["cityscapes"], images, "--masks", masks) == reference
    root, plain = _ade20k(tmp_path / "a", models["ade20k"])
    reference = _evaluation(cli, tmp_path, models["ade20k"], "--masks", str(plain))
    images, masks = str(root / "images" / "validation"), str(root / "annotations" / "validation")
    assert _evaluation(cli, tmp_path, models["ade20k"], images, "--masks", masks) == reference


def test_images_named_with_a_data_set_root(cli, models, tmp_path):
    """Images given on the command line find their masks through the root's own listing."""
    root, plain = _voc(tmp_path, models["voc"])
    reference = _evaluation(cli, tmp_path, models["voc"], "--masks", str(plain))
    images = [str(root / "VOC2012" / "JPEGImages" / f"2007_{i:06d}.jpg") for i in (0, 2, 3)]
    assert _evaluation(cli, tmp_path, models["voc"], *images, "--masks", str(root)) == reference


def test_cityscapes_train_ids_win_over_label_ids(cli, models, tmp_path):
    root, plain = _cityscapes(tmp_path, models["cityscapes"], train_ids_for=1)
    reference = _evaluation(cli, tmp_path, models["cityscapes"], "--masks", str(plain))
    assert _evaluation(cli, tmp_path, models["cityscapes"], "--masks", str(root)) == reference


def test_voc_split_names_the_images(cli, models, tmp_path):
    root, _ = _voc(tmp_path, models["voc"])
    out = tmp_path / "train"
    cli.ok("segment", "--model", str(models["voc"]), "--masks", str(root), "--split", "train", "-o", str(out))
    assert json.loads((out / "evaluation.json").read_text())["images"] == 1
    records = [json.loads(line) for line in (out / "summary.jsonl").read_text().splitlines()]
    assert [Path(r["image"]).name for r in records] == ["2007_000001.jpg"]


@pytest.mark.parametrize(
    ("module", "layout"), [("cityscapesscripts.helpers.labels", "cityscapes"), ("timm.data", "imagenet")]
)
def test_layout_without_its_extra_names_the_extra(monkeypatch, module, layout):
    """Without aim-cli[datasets], a layout that needs its official table is one line naming the extra."""
    import sys

    from aim_cli.errors import InputError
    from aim_cli.layouts import cityscapes, imagenet

    monkeypatch.setitem(sys.modules, module, None)  # the import fails as if not installed
    imagenet.synsets.cache_clear()
    with pytest.raises(InputError) as error:
        cityscapes.train_id_table() if layout == "cityscapes" else imagenet.synsets()
    assert f"--layout {layout} needs" in str(error.value) and "aim-cli[datasets]" in error.value.hint
    imagenet.synsets.cache_clear()
