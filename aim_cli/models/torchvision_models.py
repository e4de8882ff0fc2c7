"""What torchvision classifiers and segmenters share: default labels, standard preprocessing and resize."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path

import torch
from PIL import Image

from aim_cli.errors import ModelError
from aim_cli.models.checkpoint_files import Resize, torchvision_resize


def default_labels(arch: str, width: int | None) -> list[str]:
    """The names torchvision's own weights use (ImageNet, VOC) when the width matches, else class_i.

    The names ship in torchvision's weight metadata, so nothing is downloaded.
    """
    import torchvision

    first = next(iter(torchvision.models.get_model_weights(arch)))
    categories = list(first.meta.get("categories", []))
    if width == len(categories):
        return categories
    return [f"class_{i}" for i in range(width or 0)]


def standard_preprocess(arch: str) -> Callable[[Sequence[Image.Image]], torch.Tensor]:
    """The architecture's standard inference transform (resize, crop where it applies, normalise)."""
    import torchvision

    transform = next(iter(torchvision.models.get_model_weights(arch))).transforms()
    to_tensor = torchvision.transforms.functional.pil_to_tensor

    def preprocess(images: Sequence[Image.Image]) -> torch.Tensor:
        return torch.stack([transform(to_tensor(image)) for image in images])

    return preprocess


def standard_resize(arch: str) -> Resize | None:
    """How the architecture's standard inference transform sizes an image."""
    import torchvision

    return torchvision_resize(next(iter(torchvision.models.get_model_weights(arch))).transforms())


def checked_labels(labels: list[str], width: int, source: Path) -> list[str]:
    """The label list must match the model's number of outputs."""
    if len(labels) != width:
        raise ModelError(f"{source} names {len(labels)} classes but the model has {width} outputs")
    return labels
