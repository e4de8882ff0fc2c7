"""Image models behind one interface: PIL images in, class logits out ((N, C), or (N, C, h, w) per pixel)."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol, cast, runtime_checkable

import torch
from PIL import Image

from aim_cli.errors import ModelError
from aim_cli.models.checkpoint_files import Resize, check_batch_sizes, mismatched_settings

# Logit dimensions each image task reads: one row per image, or one row per pixel.
OUTPUT_DIMS = {"classify": 2, "segment": 4}


@runtime_checkable
class Model(Protocol):
    """What every loaded model offers: a display name and the device its inputs go to."""

    name: str
    device: torch.device


@runtime_checkable
class VisionModel(Model, Protocol):
    """An image model as the classify and segment tasks use it (a plugin source may return its own class)."""

    labels: list[str]
    preprocess: Callable[[Sequence[Image.Image]], torch.Tensor]

    def logits(self, images: Sequence[Image.Image]) -> torch.Tensor:
        """Clean float32 logits on the model's device, classes on dim 1."""
        ...


def transformers_forward(network: torch.nn.Module, pixels: torch.Tensor) -> Any:
    """How a transformers (or SemanticScores-wrapped) network is called: pixel_values in its own dtype."""
    dtype = cast(torch.dtype, network.dtype)  # a PreTrainedModel (or SemanticScores) property
    return getattr(network(pixel_values=pixels.to(dtype)), "logits", None)


def module_forward(network: torch.nn.Module, pixels: torch.Tensor) -> Any:
    """How a plain torch module (torchvision, timm) is called; segmentation ones return {'out': ..., 'aux': ...}."""
    out = network(pixels)
    return out.get("out") if isinstance(out, dict) else out


@dataclass
class ImageModel:
    """A loaded image classifier or segmenter: preprocessing, network, how to call it, labels and device."""

    name: str
    labels: list[str]
    device: torch.device
    network: torch.nn.Module
    preprocess: Callable[[Sequence[Image.Image]], torch.Tensor]
    forward: Callable[[torch.nn.Module, torch.Tensor], Any] = module_forward  # the source's calling convention
    resize: Resize | None = None  # how preprocess sizes an image; None: not known, not checked
    task: str = "classify"  # "classify": (N, C) logits; "segment": (N, C, h, w)
    do_reduce_labels: bool | None = None  # a segmenter processor's own setting (ADE20K's 0 = other); None: not said

    @torch.inference_mode()
    def logits(self, images: Sequence[Image.Image]) -> torch.Tensor:
        """Clean logits for a batch of RGB images, float32 on the model's device.

        (N, C) for a classifier; (N, C, h, w) at the model's own resolution for a segmenter,
        whose images must share one size (the task groups them), so any processor stacks them.
        """
        check_batch_sizes(self.resize, images)  # tasks check each image first; this guards every other caller
        with mismatched_settings(self.name):
            out = self.forward(self.network, self.preprocess(images).to(self.device))
        if self.task == "segment":
            self._check_per_pixel(out)
        return out.float()

    def _check_per_pixel(self, logits: object) -> None:
        """A segmenter must give (batch, classes, height, width) logits, one channel per label."""
        if isinstance(logits, torch.Tensor) and logits.dim() == 4 and logits.shape[1] == len(self.labels):
            return
        shape = tuple(logits.shape) if isinstance(logits, torch.Tensor) else type(logits).__name__
        raise ModelError(
            f"{self.name} does not output per-pixel class logits (got {shape}, "
            f"expected (batch, {len(self.labels)}, height, width))",
            "aim segment needs a semantic segmentation model",
        )
