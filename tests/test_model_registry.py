"""The model registry: one spec parser over declared sources, one load_model, plugin sources by entry point."""

from __future__ import annotations

import json
import os
import re
import textwrap
from pathlib import Path

import pytest
import torch
from PIL import Image

from aim_cli.errors import ModelError
from aim_cli.models.image_model import ImageModel, VisionModel
from aim_cli.models.registry import ENTRY_POINT_GROUP, ModelSpec, load_model, parse_spec
from tests.conftest import REPO, run_aim

CPU = torch.device("cpu")
SAMPLE = REPO / "aim_cli" / "demo" / "samples" / "classify" / "circle_0.png"

# A third-party package: one module and the dist-info that declares its entry point.
PLUGIN = '''
import torch

from aim_cli.models.image_model import ImageModel


class ZooSource:
    """Image classifiers from a pretend model zoo: ZOO:WIDTH gives a WIDTH-way mean-colour classifier."""

    tasks = ("classify",)
    takes_weights = False

    def load(self, request):
        width = int(request.name)
        network = torch.nn.Linear(3, width)
        with torch.no_grad():
            network.weight.copy_(torch.arange(3 * width, dtype=torch.float32).view(width, 3))
            network.bias.zero_()

        def preprocess(images):
            return torch.stack([torch.tensor(image.convert("RGB").getextrema(), dtype=torch.float32)[:, 1]
                                for image in images])

        labels = [f"zoo_{i}" for i in range(width)]
        return ImageModel(f"zoo:{width}", labels, request.device, network, preprocess, task="classify")
'''


def _install_plugin(root: Path, name: str, target: str, module: str = PLUGIN) -> None:
    """Write a module and a dist-info whose entry_points.txt registers `name = target` in aim's group."""
    (root / f"{target.partition(':')[0]}.py").write_text(textwrap.dedent(module))
    info = root / "aimzoo_fake-0.1.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: aimzoo-fake\nVersion: 0.1\n")
    (info / "entry_points.txt").write_text(f"[{ENTRY_POINT_GROUP}]\n{name} = {target}\n")


@pytest.fixture
def zoo(tmp_path, monkeypatch):
    """The fake plugin on sys.path, registered as the `zoo:` source."""
    _install_plugin(tmp_path, "zoo", "aimzoo_fake:ZooSource")
    monkeypatch.syspath_prepend(str(tmp_path))
    return tmp_path


def test_specs_name_their_source(tmp_path):
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "vit"}))
    assert parse_spec(None) == ModelSpec("demo", "")
    assert parse_spec("torchvision:resnet18") == ModelSpec("torchvision", "resnet18")
    assert parse_spec("timm:resnet18.a1_in1k") == ModelSpec("timm", "resnet18.a1_in1k")
    assert parse_spec(str(tmp_path)) == ModelSpec("local", str(tmp_path))
    assert parse_spec("./no/such/folder") == ModelSpec("local", "./no/such/folder")
    assert parse_spec("org/model-not-cached") == ModelSpec("hub", "org/model-not-cached")
    # A colon that names no source is part of the value, not a prefix.
    assert parse_spec("nosuchsource:x") == ModelSpec("hub", "nosuchsource:x")


def test_weights_without_an_architecture_source_is_refused(tmp_path):
    with pytest.raises(ModelError, match="--weights goes with --model torchvision:ARCH or timm:ARCH"):
        parse_spec(str(tmp_path), weights=tmp_path / "w.pth")


def test_every_task_loads_its_demo_through_one_entry_point():
    classifier = load_model("classify", None, device=CPU)
    segmenter = load_model("segment", None, device=CPU)
    lm = load_model("generate", None, device=CPU)
    assert isinstance(classifier, ImageModel) and classifier.task == "classify"
    assert isinstance(segmenter, ImageModel) and segmenter.task == "segment"
    assert isinstance(classifier, VisionModel) and isinstance(segmenter, VisionModel)
    assert lm.name == "demo lm" and lm.device == CPU
    image = Image.open(SAMPLE).convert("RGB")
    assert classifier.logits([image]).shape == (1, len(classifier.labels))
    assert segmenter.logits([image]).dim() == 4


def test_language_options_do_not_apply_to_image_models():
    with pytest.raises(ModelError, match="--dtype and --device-map apply to language models"):
        load_model("classify", None, device=CPU, dtype="float16")


def test_a_source_refuses_a_task_it_does_not_serve():
    with pytest.raises(ModelError, match="torchvision:resnet18 is a torchvision model, which aim generate cannot use"):
        load_model("generate", "torchvision:resnet18", device=CPU)


def test_a_plugin_source_is_found_through_its_entry_point(zoo):
    model = load_model("classify", "zoo:4", device=CPU)
    assert model.name == "zoo:4" and model.labels == ["zoo_0", "zoo_1", "zoo_2", "zoo_3"]
    logits = model.logits([Image.new("RGB", (8, 8), (255, 0, 0)), Image.new("RGB", (8, 8), (0, 0, 255))])
    # Row r of the weight is (3r, 3r+1, 3r+2): pure red scores 3r * 255, pure blue (3r+2) * 255.
    assert torch.equal(logits, 255.0 * torch.tensor([[0.0, 3, 6, 9], [2, 5, 8, 11]]))
    assert parse_spec("zoo:4") == ModelSpec("zoo", "4")


def test_a_plugin_source_states_its_tasks_and_weights(zoo, tmp_path):
    with pytest.raises(ModelError, match="zoo:4 is a 'zoo' model, which aim segment cannot use"):
        load_model("segment", "zoo:4", device=CPU)
    with pytest.raises(ModelError, match="--weights does not go with --model zoo:4"):
        load_model("classify", "zoo:4", device=CPU, weights=tmp_path / "w.pth")


def test_a_plugin_that_returns_no_image_model_is_refused(tmp_path, monkeypatch):
    module = (
        "class Source:\n    tasks = ('classify',)\n    takes_weights = False\n"
        "    def load(self, request):\n        return 42\n"
    )
    _install_plugin(tmp_path, "odd", "aimzoo_odd:Source", module=module)
    monkeypatch.syspath_prepend(str(tmp_path))
    expected = "model source 'odd' (package aimzoo-fake 0.1) failed in load(): it returned int, not an image model"
    with pytest.raises(ModelError, match=re.escape(expected)):
        load_model("classify", "odd:x", device=CPU)


def test_a_broken_plugin_is_named_in_one_line(tmp_path, monkeypatch):
    _install_plugin(tmp_path, "broken", "aimzoo_broken:ZooSource", module="raise ImportError('missing dependency')\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    with pytest.raises(ModelError) as caught:
        load_model("classify", "broken:1", device=CPU)
    message = str(caught.value)
    assert "\n" not in message
    assert (
        "model source 'broken' (package aimzoo-fake 0.1) failed in import: ImportError: missing dependency" in message
    )


def test_the_cli_classifies_with_a_plugin_model(zoo, tmp_path):
    path = os.pathsep.join([str(zoo), str(REPO), os.environ.get("PYTHONPATH", "")])
    out = tmp_path / "out.jsonl"
    result = run_aim("classify", "--model", "zoo:3", str(SAMPLE), "-o", str(out), env={"PYTHONPATH": path})
    assert result.returncode == 0, result.stderr
    assert "model: zoo:3 (3 classes)" in result.stderr
    # Every weight is >= 0 and the last row's are the largest, so a non-black image is class 2.
    assert json.loads(out.read_text())["prediction"] == "zoo_2"
