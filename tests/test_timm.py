"""timm classifiers: timm:ARCH with --weights, timm checkpoints in Hugging Face layout, and their errors.

Tiny random-weight timm models (test_resnet, test_convnext, ...) saved to tmp: nothing is downloaded.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import sys
from pathlib import Path

import pytest
import torch
from PIL import Image

timm = pytest.importorskip("timm")  # an optional extra: aim-cli[timm]

from safetensors.torch import save_file  # noqa: E402

from aim_cli.errors import ModelError  # noqa: E402
from aim_cli.models.registry import load_model  # noqa: E402
from tests.conftest import assert_user_error, run_aim  # noqa: E402

CPU = torch.device("cpu")
LABELS = ["apple", "pear", "plum", "fig"]


class CodePickle:
    """An object whose unpickling calls a function: what a hostile checkpoint does."""

    def __reduce__(self):
        return (os.getpid, ())


def _images(folder: Path, count: int, seed: int = 0) -> list[Path]:
    """Colour gradients of varied sizes: distinct enough that a random model predicts several classes."""
    generator = torch.Generator().manual_seed(seed)
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for i in range(count):
        height, width = 40 + 7 * (i % 5), 48 + 5 * (i % 3)
        base = torch.randint(0, 256, (3,), generator=generator).float()
        slope = torch.randint(-128, 128, (3,), generator=generator).float()
        ramp = torch.linspace(0, 1, width)[None, :, None] * slope
        grain = torch.randn(height, width, 3, generator=generator) * 20 * (i % 3)
        pixels = (base + ramp + grain).clamp(0, 255).to(torch.uint8)
        path = folder / f"img_{i:03d}.png"
        Image.fromarray(pixels.numpy()).save(path)
        paths.append(path)
    return paths


# A random test_resnet predicts one class for every image (its BatchNorm has no statistics);
# a random test_convnext spreads its predictions, which the focus and calibration checks need.
ARCH, SEED = "test_convnext", 1


def _model(arch: str, num_classes: int, seed: int = 0) -> torch.nn.Module:
    """A timm model with seeded random weights, in eval mode."""
    torch.manual_seed(seed)
    return timm.create_model(arch, pretrained=False, num_classes=num_classes).eval()


def _reference(model: torch.nn.Module, image: Path, data_config: dict | None = None) -> torch.Tensor:
    """What timm itself computes for one image with the model's (or the given) eval transform."""
    config = data_config or timm.data.resolve_model_data_config(model)
    transform = timm.data.create_transform(**config, is_training=False)
    with torch.inference_mode():
        return model(transform(Image.open(image).convert("RGB"))[None])[0]


@pytest.fixture(scope="module")
def files(tmp_path_factory) -> dict[str, Path]:
    """ARCH weights as safetensors (labels in metadata) and as a plain .pth, plus images."""
    root = tmp_path_factory.mktemp("timm")
    model = _model(ARCH, len(LABELS), SEED)
    save_file(model.state_dict(), root / "resnet.safetensors", metadata={"labels": json.dumps(LABELS)})
    torch.save(model.state_dict(), root / "resnet.pth")
    images = _images(root / "images", 6)
    return {
        "root": root,
        "safetensors": root / "resnet.safetensors",
        "pth": root / "resnet.pth",
        "image": images[0],
        "images": root / "images",
    }


def _hf_layout(folder: Path, arch: str, names: list[str], seed: int = 1) -> torch.nn.Module:
    """Save a model as timm's own exporter does for the hub (config.json with model_args, model.safetensors)."""
    model = _model(arch, len(names), seed)
    timm.models.save_for_hf(model, str(folder), model_config={"label_names": names}, safe_serialization=True)
    return model


# --- timm:ARCH --weights FILE -------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["safetensors", "pth"])
def test_arch_with_weights_gives_timms_own_logits(files, kind):
    classifier = load_model("classify", f"timm:{ARCH}", device=CPU, weights=files[kind])
    assert classifier.name == f"timm:{ARCH}" and not classifier.network.training
    expected = _reference(_model(ARCH, len(LABELS), SEED), files["image"])
    got = classifier.logits([Image.open(files["image"]).convert("RGB")])[0]
    assert torch.allclose(got, expected, atol=1e-5), (got, expected)
    # safetensors carries the names in its metadata; a bare state dict has none
    assert classifier.labels == (LABELS if kind == "safetensors" else [f"class_{i}" for i in range(4)])


def test_labels_file_overrides_and_is_checked_against_the_head(files, tmp_path):
    names = tmp_path / "names.txt"
    names.write_text("a\nb\nc\nd\n")
    assert load_model("classify", f"timm:{ARCH}", device=CPU, weights=files["pth"], labels=names).labels == [
        "a",
        "b",
        "c",
        "d",
    ]
    names.write_text("a\nb\n")
    with pytest.raises(ModelError, match="names 2 classes but the model has 4 outputs"):
        load_model("classify", f"timm:{ARCH}", device=CPU, weights=files["pth"], labels=names)


def test_thousand_way_head_gets_imagenet_names(tmp_path):
    weights = tmp_path / "in1k.safetensors"
    save_file(_model("test_efficientnet", 1000).state_dict(), weights)
    labels = load_model("classify", "timm:test_efficientnet", device=CPU, weights=weights).labels
    assert len(labels) == 1000 and labels[0].startswith("tench") and "goldfish" in labels[1]


def test_pretrained_tag_picks_its_preprocessing(files):
    tagged = load_model("classify", f"timm:{ARCH}.r160_in1k", device=CPU, weights=files["pth"])
    pixels = tagged.preprocess([Image.open(files["image"]).convert("RGB")])
    assert pixels.shape == (1, 3, 160, 160)


# --- Hugging Face layout (timm hub repos) --------------------------------------------------------


def test_hf_layout_folder_uses_its_labels_and_preprocessing(files, tmp_path):
    # A non-default input size and normalisation: only the checkpoint's pretrained_cfg says so.
    folder = tmp_path / "resnet"
    model = _hf_layout(folder, "test_resnet", ["cat", "dog", "bird"])
    config = json.loads((folder / "config.json").read_text())
    assert "num_classes" in config["model_args"]  # what broke transformers' TimmWrapper path
    config["pretrained_cfg"].update(input_size=[3, 96, 96], crop_pct=1.0, mean=[0, 0, 0], std=[1, 1, 1])
    (folder / "config.json").write_text(json.dumps(config))
    classifier = load_model("classify", str(folder), device=CPU)
    assert classifier.labels == ["cat", "dog", "bird"] and not classifier.network.training
    image = Image.open(files["image"]).convert("RGB")
    pixels = classifier.preprocess([image])
    assert pixels.shape == (1, 3, 96, 96) and float(pixels.min()) >= 0.0 and float(pixels.max()) <= 1.0
    data_config = timm.data.resolve_data_config({}, pretrained_cfg=config["pretrained_cfg"])
    expected = _reference(model, files["image"], data_config)
    assert torch.allclose(classifier.logits([image])[0], expected, atol=1e-5)


def test_label_descriptions_replace_label_ids(tmp_path):
    folder = tmp_path / "synsets"
    model = _model("test_resnet", 2)
    descriptions = {"n01440764": "tench, Tinca tinca", "n01443537": "goldfish, Carassius auratus"}
    timm.models.save_for_hf(
        model,
        str(folder),
        safe_serialization=True,
        model_config={"label_names": list(descriptions), "label_descriptions": descriptions},
    )
    assert load_model("classify", str(folder), device=CPU).labels == list(descriptions.values())


def test_legacy_flat_hub_config_loads(files, tmp_path):
    folder = tmp_path / "legacy"
    folder.mkdir()
    model = _model("test_resnet", 3, seed=2)
    save_file(model.state_dict(), folder / "model.safetensors")
    (folder / "config.json").write_text(
        json.dumps(
            {
                "architecture": "test_resnet",
                "num_classes": 3,
                "labels": ["x", "y", "z"],
                "input_size": [3, 64, 64],
                "interpolation": "bilinear",
                "crop_pct": 1.0,
                "mean": [0.5, 0.5, 0.5],
                "std": [0.5, 0.5, 0.5],
            }
        )
    )
    classifier = load_model("classify", str(folder), device=CPU)
    assert classifier.labels == ["x", "y", "z"]
    assert classifier.preprocess([Image.open(files["image"]).convert("RGB")]).shape == (1, 3, 64, 64)


def test_cached_hub_id_loads_from_the_local_cache(files, tmp_path, monkeypatch):
    import huggingface_hub.constants

    repo = tmp_path / "hub" / "models--timm--tiny_resnet.test"
    _hf_layout(repo / "snapshots" / "abc123", "test_resnet", ["p", "q"])
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text("abc123")
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path / "hub"))
    classifier = load_model("classify", "timm/tiny_resnet.test", device=CPU)
    assert classifier.name == "timm/tiny_resnet.test" and classifier.labels == ["p", "q"]


def test_hf_layout_without_weights_file_is_named(tmp_path):
    folder = tmp_path / "noweights"
    _hf_layout(folder, "test_resnet", ["p", "q"])
    (folder / "model.safetensors").unlink()
    with pytest.raises(ModelError, match=r"has no model\.safetensors or pytorch_model\.bin"):
        load_model("classify", str(folder), device=CPU)


# --- errors ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("spec", "weights", "fragments"),
    [
        ("timm:resnet_18", "pth", ["unknown timm architecture 'resnet_18'", "did you mean resnet18"]),
        (f"timm:{ARCH}", None, [f"timm:{ARCH} needs --weights FILE", "never downloads"]),
        (f"timm:{ARCH}.bogus", "pth", ["no pretrained tag 'bogus'", "r160_in1k"]),
        (
            "timm:test_vit",
            "pth",
            [
                "do not fit timm:test_vit",
                "missing (cls_token",
                "unexpected (stem.0.weight",
                "trained with this timm architecture",
            ],
        ),
    ],
)
def test_bad_specs_are_one_line_model_errors(files, spec, weights, fragments):
    with pytest.raises(ModelError) as caught:
        load_model("classify", spec, device=CPU, weights=files[weights] if weights else None)
    message = str(caught.value)
    assert "\n" not in message
    for fragment in fragments:
        assert fragment in message, (fragment, message)


def test_pickle_needing_code_is_refused(tmp_path):
    weights = tmp_path / "hostile.pth"
    torch.save({"state_dict": {"fc.weight": torch.zeros(2, 2)}, "extra": CodePickle()}, weights)
    with pytest.raises(ModelError, match="needs arbitrary code to load"):
        load_model("classify", f"timm:{ARCH}", device=CPU, weights=weights)


def test_missing_timm_names_the_extra(files, tmp_path, monkeypatch):
    folder = tmp_path / "folder"
    _hf_layout(folder, "test_resnet", ["p", "q"])
    monkeypatch.setitem(sys.modules, "timm", None)  # what `import timm` meets when it is not installed
    with pytest.raises(ModelError) as caught:
        load_model("classify", f"timm:{ARCH}", device=CPU, weights=files["pth"])
    assert str(caught.value) == f"timm:{ARCH} needs the timm package (pip install 'aim-cli[timm]')"
    with pytest.raises(
        ModelError, match=r"\(a timm checkpoint\) needs the timm package \(pip install 'aim-cli\[timm\]'\)"
    ):
        load_model("classify", str(folder), device=CPU)


def test_weights_flag_with_a_checkpoint_folder_is_refused(files, tmp_path):
    folder = tmp_path / "folder"
    _hf_layout(folder, "test_resnet", ["p", "q"])
    with pytest.raises(ModelError, match="--weights goes with --model torchvision:ARCH or timm:ARCH"):
        load_model("classify", str(folder), device=CPU, weights=files["pth"])


def test_segment_refuses_timm_classifiers(files, tmp_path):
    folder = tmp_path / "folder"
    _hf_layout(folder, "test_resnet", ["p", "q"])
    for spec, weights in ((f"timm:{ARCH}", files["pth"]), (str(folder), None)):
        with pytest.raises(ModelError, match="is a timm image classifier, which aim segment cannot use"):
            load_model("segment", spec, device=CPU, weights=weights)


# --- the CLI --------------------------------------------------------------------------------------


def test_cli_classify_timm_with_focus_and_compare(files, tmp_path):
    out = tmp_path / "preds.jsonl"
    result = run_aim(
        "classify",
        str(files["images"]),
        "--model",
        f"timm:{ARCH}",
        "--weights",
        str(files["safetensors"]),
        "--focus",
        "fig",
        "--focus-sigma",
        "50",
        "--seed",
        "0",
        "--compare",
        "-o",
        str(out),
        "-q",
    )
    assert result.returncode == 0, result.stderr
    records = [json.loads(line) for line in out.read_text().splitlines()]
    model = _model(ARCH, len(LABELS), SEED)
    for record in records:
        clean = LABELS[int(_reference(model, files["images"] / Path(record["path"]).name).argmax())]
        assert record["clean_prediction"] == clean
    assert len(records) == 6 and any(r["clean_prediction"] != "fig" for r in records)
    # a focus sigma of 50 dwarfs the random model's logit gaps: every image goes to the target
    assert all(r["prediction"] == "fig" for r in records)


def test_cli_model_error_is_one_line_exit_2(files):
    result = run_aim("classify", str(files["image"]), "--model", "timm:convnext_tinyy", "--weights", str(files["pth"]))
    assert_user_error(result, 2, "unknown timm architecture 'convnext_tinyy'", "did you mean convnext_tiny")
    assert len(result.stderr.strip().splitlines()) == 1, result.stderr


def test_cli_calibrate_timm_classifier(files, tmp_path):
    """Labels are the model's own clean predictions, 1 in 4 moved to a wrong class: clean accuracy 0.75."""
    model = _model(ARCH, len(LABELS), SEED)
    data = tmp_path / "data"
    images = _images(tmp_path / "pool", 60, seed=3)
    for i, image in enumerate(images):
        predicted = int(_reference(model, image).argmax())
        label = LABELS[(predicted + 1) % len(LABELS)] if i % 4 == 0 else LABELS[predicted]
        (data / label).mkdir(parents=True, exist_ok=True)
        shutil.move(str(image), data / label / image.name)
    report = tmp_path / "report.json"
    result = run_aim(
        "calibrate",
        "--target-acc",
        "0.5",
        "--model",
        f"timm:{ARCH}",
        "--weights",
        str(files["safetensors"]),
        "--data",
        str(data),
        "--json",
        str(report),
        "--draws",
        "20",
    )
    assert result.returncode == 0, result.stderr
    sigma = float(result.stdout)
    data_report = json.loads(report.read_text())
    assert data_report["model"] == f"timm:{ARCH}" and data_report["items"] == 60
    assert data_report["clean"] == pytest.approx(0.75) and data_report["value"] == pytest.approx(sigma, rel=1e-4)
    # Monte Carlo mean of 60 images x 20 draws: std <= sqrt(0.25 / 1200) = 0.0144; allow 4 of them
    assert abs(data_report["monte_carlo"]["mean"] - 0.5) <= 4 * math.sqrt(0.25 / 1200)
