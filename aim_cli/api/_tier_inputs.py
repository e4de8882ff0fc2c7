"""The model and labelled data a tier is measured on, read as `aim verify` and `aim report` read them.

Private to aim_cli.api: `aim.verify` and `aim.write_report` share it. The data sets themselves
are read by aim_cli.calibration.datasets (the same readers as `aim calibrate`); the argument
checks both share with the other task functions are in aim_cli.api.arguments.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import torch

from aim_cli.api.models import load_model
from aim_cli.errors import InputError

if TYPE_CHECKING:
    from aim_cli.calibration.datasets import ImageDataset, SegmentationDataset, TextDataset
    from aim_cli.models.image_model import ImageModel
    from aim_cli.models.language import LanguageModel

TASKS = ("classify", "segment", "generate")
LAYOUTS = ("auto", "plain", "imagenet", "ade20k", "cityscapes", "voc")
# Items of the demo evaluation set when no data and no limit are given (as `aim calibrate`).
DEMO_ITEMS = {"classify": 1000, "segment": 50, "generate": 200}


def image_model(
    task: Literal["classify", "segment"], model: Any, device: torch.device, weights: Path | None, labels: Path | None
) -> ImageModel:
    """The image model for `task`: loaded from its spec (as --model), or checked when already loaded."""
    if model is None or isinstance(model, str):
        return load_model(model, task=task, device=device, weights=weights, labels=labels)
    if weights is not None or labels is not None:
        raise InputError(
            "weights and labels apply to a model spec", "a loaded model already has its weights and labels"
        )
    from aim_cli.models.image_model import ImageModel

    if not isinstance(model, ImageModel) or model.task != task:
        raise _wrong_model(task, model)
    return model


def language_model(model: Any, device: torch.device) -> LanguageModel:
    """The language model: loaded from its spec (as --model), or checked when already loaded."""
    if model is None or isinstance(model, str):
        return load_model(model, task="generate", device=device)
    from aim_cli.models.language import LanguageModel

    if not isinstance(model, LanguageModel):
        raise _wrong_model("generate", model)
    return model


def _wrong_model(task: str, model: object) -> InputError:
    """A loaded model of another task than the one asked for."""
    kind = getattr(model, "task", "generate" if hasattr(model, "tokenizer") else type(model).__name__)
    return InputError(
        f"a {task} run needs a {task} model, got {getattr(model, 'name', type(model).__name__)} ({kind})",
        f"load one with aim.load_model(spec, task={task!r})",
    )


def classification_set(data: Path | None, allow_outside: bool, layout: str, limit: int | None) -> ImageDataset:
    """Labelled images from --data (or the demo evaluation set), the first `limit` kept."""
    from aim_cli.calibration.datasets import demo_classification_set, read_classification_data

    dataset = (
        read_classification_data(data, allow_outside, layout)
        if data is not None
        else demo_classification_set(limit or DEMO_ITEMS["classify"])
    )
    if limit:
        dataset.items = dataset.items[:limit]
    return dataset


def segmentation_set(
    data: Path | None, allow_outside: bool, layout: str, split: str | None, limit: int | None
) -> SegmentationDataset:
    """Images with masks from --data (or the demo scenes), the first `limit` kept."""
    from aim_cli.calibration.datasets import demo_segmentation_set, read_segmentation_data

    dataset = (
        read_segmentation_data(data, allow_outside, layout, split)
        if data is not None
        else demo_segmentation_set(limit or DEMO_ITEMS["segment"])
    )
    dataset.limit(limit)
    return dataset


def text_set(data: Path | None, limit: int | None) -> TextDataset:
    """Prompts with answers from a .jsonl (or the demo problems), the first `limit` kept."""
    from aim_cli.calibration.datasets import demo_text_set, read_text_data

    dataset = read_text_data(data) if data is not None else demo_text_set(limit or DEMO_ITEMS["generate"])
    if limit:
        dataset.items = dataset.items[:limit]
    return dataset
