"""Image classifiers from transformers checkpoints and torchvision architectures: PIL images in, (N, C) logits out."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import torch
from PIL import Image

from aim_cli.errors import ModelError
from aim_cli.models.checkpoint_files import hf_resize
from aim_cli.models.hub import load_pretrained
from aim_cli.models.image_model import ImageModel, module_forward, transformers_forward
from aim_cli.models.torchvision_models import checked_labels, default_labels, standard_preprocess, standard_resize
from aim_cli.models.weights import (
    check_fits,
    load_into,
    load_state_dict,
    meta_shapes,
    module_key_order,
    output_width,
    read_labels_file,
)

# A classifier is an ImageModel whose task is "classify"; the name stays for the tasks' type hints.
ImageClassifier = ImageModel


def load_hf_classifier(spec: str, device: torch.device, labels_file: Path | None, display: str) -> ImageModel:
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
    return ImageModel(
        display, labels, device, model, preprocess, transformers_forward, hf_resize(processor), task="classify"
    )


def load_torchvision_classifier(
    arch: str, device: torch.device, weights: Path | None, labels_file: Path | None
) -> ImageModel:
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
    width = output_width(state, module_key_order(lambda: torchvision.models.get_model(arch, weights=None)), weights)
    labels = read_labels_file(labels_file) if labels_file else stored_labels
    if labels is None:
        labels = default_labels(arch, width)
    if width is not None:
        labels = checked_labels(labels, width, labels_file or weights)
    try:
        # Names and shapes are checked on the meta device first: the real network is allocated
        # only for weights that fill it (a file of labels and no tensors never sizes one).
        shapes = meta_shapes(lambda: torchvision.models.get_model(arch, weights=None, num_classes=len(labels)))
        check_fits(shapes, state, f"torchvision:{arch}", weights)
        network = torchvision.models.get_model(arch, weights=None, num_classes=len(labels))
    except (TypeError, ValueError) as exc:
        raise ModelError(f"cannot build torchvision:{arch}: {exc}") from None
    load_into(network, state, f"torchvision:{arch}", weights)
    network.eval().to(device)
    return ImageModel(
        f"torchvision:{arch}",
        labels,
        device,
        network,
        standard_preprocess(arch),
        module_forward,
        standard_resize(arch),
        task="classify",
    )
