"""Routing of --model (torchvision:, timm:, HF, demo) and what torchvision classifiers and segmenters share."""

from __future__ import annotations

from pathlib import Path
from typing import Callable, Sequence, TypeVar

import torch
from PIL import Image

from aim_cli import demo
from aim_cli.errors import ModelError
from aim_cli.models.checkpoint_files import Resize, torchvision_resize

TORCHVISION_PREFIX = "torchvision:"
TIMM_PREFIX = "timm:"
M = TypeVar("M")


def load_by_spec(
    spec: str | None,
    task: str,
    weights: Path | None,
    load_torchvision: Callable[[str], M],
    load_hf: Callable[[str, str], M],
    load_timm: Callable[[str], M] | None = None,
) -> M:
    """Route a --model value: torchvision:/timm:ARCH (with --weights), a timm or other HF checkpoint, or the demo.

    `load_timm` gets the whole --model value; tasks without timm models leave it None.
    """
    if spec and spec.startswith(TORCHVISION_PREFIX):
        return load_torchvision(spec[len(TORCHVISION_PREFIX) :])
    if spec and spec.startswith(TIMM_PREFIX):
        return _timm_or_refuse(spec, task, load_timm)
    if weights is not None:
        raise ModelError(
            "--weights goes with --model torchvision:ARCH or timm:ARCH", "model directories carry their own weights"
        )
    from aim_cli.models.timm_classifier import timm_checkpoint  # here: that module imports this one

    if spec and timm_checkpoint(spec) is not None:
        return _timm_or_refuse(spec, task, load_timm)
    return load_hf(spec or str(demo.model_dir(task)), spec or f"demo {demo.model_dir(task).name}")


def _timm_or_refuse(spec: str, task: str, load_timm: Callable[[str], M] | None) -> M:
    """timm models are image classifiers: load one, or say which task it does not fit."""
    if load_timm is None:
        raise ModelError(
            f"{spec} is a timm image classifier, which aim {task} cannot use",
            "use it with aim classify / aim calibrate --task classify",
        )
    return load_timm(spec)


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
