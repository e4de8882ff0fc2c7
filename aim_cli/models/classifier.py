"""Image classifiers behind one interface: PIL images in, (N, C) logits out."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence

import torch
from PIL import Image

from aim_cli.errors import ModelError
from aim_cli.models.checkpoint_files import Resize, check_batch_sizes, hf_resize, mismatched_settings
from aim_cli.models.hub import load_pretrained
from aim_cli.models.timm_classifier import load_timm_classifier
from aim_cli.models.torchvision_common import (
    checked_labels,
    default_labels,
    load_by_spec,
    standard_preprocess,
    standard_resize,
)
from aim_cli.models.weights import load_into, load_state_dict, module_key_order, output_width, read_labels_file


@dataclass
class ImageClassifier:
    """A loaded classifier: preprocessing, network, labels and device."""

    name: str
    labels: list[str]
    device: torch.device
    network: torch.nn.Module
    preprocess: Callable[[Sequence[Image.Image]], torch.Tensor]
    hf: bool
    resize: Resize | None = None  # how preprocess sizes an image; None: not known, not checked

    @torch.inference_mode()
    def logits(self, images: Sequence[Image.Image]) -> torch.Tensor:
        """Clean logits (N, C) for a batch of RGB images, as float32 on the model's device."""
        check_batch_sizes(self.resize, images)  # tasks check each image first; this guards every other caller
        with mismatched_settings(self.name):
            pixels = self.preprocess(images).to(self.device)
            if self.hf:
                pixels = pixels.to(self.network.dtype)
                out = self.network(pixel_values=pixels).logits
            else:
                out = self.network(pixels)
        return out.float()


def load_classifier(
    spec: str | None, device: torch.device, weights: Path | None = None, labels_file: Path | None = None
) -> ImageClassifier:
    """Load the demo, a Hugging Face checkpoint, or torchvision:ARCH / timm:ARCH with --weights."""
    return load_by_spec(
        spec,
        "classify",
        weights,
        lambda arch: _load_torchvision(arch, device, weights, labels_file),
        lambda source, display: _load_hf(source, device, labels_file, display=display),
        lambda spec: load_timm_classifier(spec, device, weights, labels_file),
    )


def _load_hf(spec: str, device: torch.device, labels_file: Path | None, display: str) -> ImageClassifier:
    """Load AutoModelForImageClassification + AutoImageProcessor offline."""
    from transformers import AutoImageProcessor, AutoModelForImageClassification

    model = load_pretrained(
        AutoModelForImageClassification.from_pretrained, spec, "image classification model", complete=True
    )
    processor = load_pretrained(AutoImageProcessor.from_pretrained, spec, "image processor")
    id2label = getattr(model.config, "id2label", None) or {}
    labels = [str(id2label.get(i, f"class_{i}")) for i in range(model.config.num_labels)]
    if labels_file is not None:
        labels = checked_labels(read_labels_file(labels_file), len(labels), labels_file)

    def preprocess(images: Sequence[Image.Image]) -> torch.Tensor:
        return processor(images=list(images), return_tensors="pt")["pixel_values"]

    model.eval().to(device)
    return ImageClassifier(display, labels, device, model, preprocess, hf=True, resize=hf_resize(processor))


def _load_torchvision(
    arch: str, device: torch.device, weights: Path | None, labels_file: Path | None
) -> ImageClassifier:
    """Build a torchvision classifier and load a local weights file into it."""
    import torchvision

    if arch not in torchvision.models.list_models(module=torchvision.models):
        raise ModelError(
            f"unknown torchvision classification architecture '{arch}'",
            "see torchvision.models.list_models(), e.g. resnet18, mobilenet_v3_small",
        )
    if weights is None:
        raise ModelError(
            f"torchvision:{arch} needs --weights FILE (.safetensors or .pth)", "aim never downloads weights"
        )
    state, stored_labels = load_state_dict(weights)
    width = output_width(state, module_key_order(lambda: torchvision.models.get_model(arch, weights=None)))
    labels = read_labels_file(labels_file) if labels_file else stored_labels
    if labels is None:
        labels = default_labels(arch, width)
    if width is not None:
        labels = checked_labels(labels, width, labels_file or weights)
    try:
        network = torchvision.models.get_model(arch, weights=None, num_classes=len(labels))
    except (TypeError, ValueError) as exc:
        raise ModelError(f"cannot build torchvision:{arch}: {exc}") from None
    load_into(network, state, f"torchvision:{arch}", weights)
    network.eval().to(device)
    return ImageClassifier(
        f"torchvision:{arch}",
        labels,
        device,
        network,
        standard_preprocess(arch),
        hf=False,
        resize=standard_resize(arch),
    )
