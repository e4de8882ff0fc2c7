"""What torchvision classifiers and segmenters share: default labels, preprocessing, label checks."""

from __future__ import annotations

from pathlib import Path
from typing import Callable, Sequence, TypeVar

import torch
from PIL import Image

from aim_cli import demo
from aim_cli.errors import ModelError

TORCHVISION_PREFIX = "torchvision:"
M = TypeVar("M")


def load_by_spec(
    spec: str | None,
    task: str,
    weights: Path | None,
    load_torchvision: Callable[[str], M],
    load_hf: Callable[[str, str], M],
) -> M:
    """Route a --model value: torchvision:ARCH (with --weights), else an HF folder/hub id, else the demo."""
    if spec and spec.startswith(TORCHVISION_PREFIX):
        return load_torchvision(spec[len(TORCHVISION_PREFIX) :])
    if weights is not None:
        raise ModelError("--weights goes with --model torchvision:ARCH", "HF directories carry their own weights")
    return load_hf(spec or str(demo.model_dir(task)), spec or f"demo {demo.model_dir(task).name}")


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


def checked_labels(labels: list[str], width: int, source: Path) -> list[str]:
    """The label list must match the model's number of outputs."""
    if len(labels) != width:
        raise ModelError(f"{source} names {len(labels)} classes but the model has {width} outputs")
    return labels
