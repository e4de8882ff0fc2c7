"""ImageNet's val/<wnid>/ folders, as they ship, on a 1000-class model whatever it calls its classes.

The reference is the same images in class-index folders (ImageNetV2's layout, which aim reads
by class id): the calibrated sigma must be exactly the same for every naming of the model's
classes (Hugging Face id2label descriptions, torchvision's names, timm's synsets, none).
"""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from tests.test_compatibility import Cli

SIZE = 32
IMAGES = 6


@pytest.fixture
def cli(capsys, monkeypatch) -> Cli:
    """The in-process CLI runner."""
    return Cli(capsys, monkeypatch)


def _names(style: str) -> list[str]:
    """ImageNet-1k's class names in ILSVRC order, as one kind of checkpoint spells them."""
    from timm.data import ImageNetInfo

    info = ImageNetInfo("imagenet-1k")
    if style == "hf":
        return [info.index_to_description(i) for i in range(1000)]  # 'tench, Tinca tinca'
    if style == "torchvision":
        from torchvision.models._meta import _IMAGENET_CATEGORIES

        return list(_IMAGENET_CATEGORIES)  # 'tench' ('crane' and 'maillot' twice)
    if style == "timm":
        return list(info.label_names())  # 'n01440764'
    if style == "generic":
        return [f"LABEL_{i}" for i in range(1000)]
    return [f"thing {i}" for i in range(1000)]  # a 1000-class model of something else


def _resnet(directory: Path, labels: list[str]) -> Path:
    """A random tiny ResNet classifier with these class names, saved as a local Hugging Face directory."""
    from transformers import ResNetConfig, ResNetForImageClassification, ViTImageProcessor

    id2label = dict(enumerate(labels))
    config = ResNetConfig(
        embedding_size=8,
        hidden_sizes=[8, 16],
        depths=[1, 1],
        num_labels=len(labels),
        id2label=id2label,
        label2id={v: k for k, v in id2label.items()},
    )
    torch.manual_seed(0)
    model = ResNetForImageClassification(config)
    with torch.no_grad():  # a wide spread of logits, so a random model still predicts several classes
        model.classifier[-1].weight.mul_(50.0)
    model.save_pretrained(directory)
    ViTImageProcessor(size={"height": SIZE, "width": SIZE}).save_pretrained(directory)
    return directory


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> dict[str, Path]:
    """The same images as ImageNet val/<wnid>/*.JPEG and as zero-padded class-index folders.

    Each image's label is the tiny model's own clean prediction (all label styles share weights).
    """
    from timm.data import ImageNetInfo

    from aim_cli.images import load_image
    from aim_cli.models.registry import load_model

    base = tmp_path_factory.mktemp("imagenet")
    model = _resnet(base / "model", _names("generic"))
    rng = np.random.default_rng(0)
    loose = base / "loose"
    loose.mkdir()
    for i in range(IMAGES):
        pixels = rng.integers(0, 256, (SIZE // 4, SIZE // 4, 3), dtype=np.uint8).repeat(4, 0).repeat(4, 1)
        Image.fromarray(pixels).save(loose / f"ILSVRC2012_val_{i:08d}.JPEG", format="JPEG", quality=90)
    classifier = load_model("classify", str(model), device=torch.device("cpu"))
    synsets = ImageNetInfo("imagenet-1k").label_names()
    classes = set()
    for path in sorted(loose.iterdir()):
        k = int(classifier.logits([load_image(path).image]).argmax())
        classes.add(k)
        for folder in (base / "val" / synsets[k], base / "index" / f"{k:03d}"):
            folder.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(path, folder / path.name)
    assert len(classes) > 1  # the labels are not all one class
    return {"val": base / "val", "index": base / "index", "base": base}


def _model(data: dict[str, Path], style: str) -> Path:
    """The shared weights under this naming of the classes (built once per style)."""
    directory = data["base"] / f"model_{style}"
    if not directory.exists():
        _resnet(directory, _names(style))
    return directory


def _calibrate(cli: Cli, model: Path, folder: Path, *args: str) -> str:
    """The sigma `aim calibrate` prints for an accuracy target."""
    return cli.ok("calibrate", "--model", str(model), "--data", str(folder), "--target-acc", "0.5", *args)


@pytest.mark.parametrize("style", ["hf", "torchvision", "timm", "generic"])
def test_synset_folders_equal_class_index_folders(cli, data, style):
    model = _model(data, style)
    reference = _calibrate(cli, model, data["index"])
    assert float(reference) > 0
    assert _calibrate(cli, model, data["val"]) == reference  # detected
    assert _calibrate(cli, model, data["val"], "--layout", "imagenet") == reference


def test_timm_synset_labels_also_resolve_by_name(cli, data):
    model = _model(data, "timm")
    assert _calibrate(cli, model, data["val"], "--layout", "plain") == _calibrate(cli, model, data["index"])


@pytest.mark.parametrize(
    ("style", "layout", "fragments"),
    [
        ("hf", "plain", ("ImageNet synsets", "--layout imagenet")),
        ("torchvision", "plain", ("ImageNet synsets", "--layout imagenet")),
        ("other", "auto", ("not an ImageNet-1k model", "class 0 is 'thing 0'", "--layout plain")),
        ("other", "imagenet", ("not an ImageNet-1k model", "--layout plain")),
    ],
)
def test_synset_folders_the_model_cannot_read_are_refused(cli, data, style, layout, fragments):
    code, _, err = cli("calibrate", "--model", str(_model(data, style)), "--data", str(data["val"]),
                       "--target-acc", "0.5", "--layout", layout)  # fmt: skip
    assert code == 2 and "Traceback" not in err and len(err.strip().splitlines()) == 1, err
    for fragment in fragments:
        assert fragment in err, err


def test_synset_folders_on_a_model_of_other_size(cli, data, tmp_path):
    model = _resnet(tmp_path / "three", ["cat", "dog", "bird"])
    code, _, err = cli("calibrate", "--model", str(model), "--data", str(data["val"]), "--target-acc", "0.5")
    assert code == 2 and "the model has 3 classes, not ImageNet-1k's 1000" in err, err


def test_imagenet_layout_on_segmentation_data_is_refused(cli, data):
    code, _, err = cli("segment", "--masks", str(data["val"]), "--layout", "imagenet")
    assert code == 2 and "for classification data" in err, err
