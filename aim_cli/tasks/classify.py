"""Image classification with modulated logits."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import torch

from aim_cli.errors import FailedInput, InputError
from aim_cli.images import LoadedImage, load_image
from aim_cli.models.checkpoint_files import check_model_input
from aim_cli.models.classifier import ImageClassifier
from aim_cli.plans import ModulationPlan
from aim_cli.tasks.batches import ProgressCallback, batched, drop_nonfinite


@dataclass(frozen=True)
class Prediction:
    """One ranked class with its softmax probability."""

    class_id: int
    label: str
    probability: float


@dataclass(frozen=True)
class ClassifiedImage:
    """Modulated (and optionally clean) top-k predictions for one image."""

    path: Path
    top: list[Prediction]
    clean_top: list[Prediction] | None = None


def top_predictions(logits: torch.Tensor, labels: Sequence[str], k: int) -> list[list[Prediction]]:
    """Top-k classes per row of an (N, C) logits tensor, with softmax probabilities.

    Ranked by the logits themselves: softmax can round logits closer than ~1e-7 to equal
    probabilities, and the top class must be the argmax that calibration and evaluation count.
    """
    indices = logits.topk(min(k, logits.shape[1]), dim=1).indices
    values = logits.float().softmax(dim=1).gather(1, indices)
    return [
        [Prediction(int(i), labels[int(i)], float(v)) for v, i in zip(row_v, row_i)]
        for row_v, row_i in zip(values.tolist(), indices.tolist())
    ]


def modulated_logits(
    classifier: ImageClassifier, images: Sequence[LoadedImage], plan: ModulationPlan
) -> tuple[list[LoadedImage], torch.Tensor, torch.Tensor, list[FailedInput]]:
    """The images with finite logits, their clean and modulated logits, and a failure per other image."""
    clean = classifier.logits([item.image for item in images])
    images, clean, broken = drop_nonfinite(images, clean, lambda item: item.path)
    keys = [item.key for item in images] if plan.keyed else None
    return images, clean, plan.apply(clean, class_dim=1, keys=keys), [failure for _, failure in broken]


def _decoded(paths: Sequence[Path], failures: list[FailedInput], classifier: ImageClassifier) -> Iterator[LoadedImage]:
    """Decode images lazily; unreadable ones, and ones the model would resize past the pixel bound, fail alone."""
    for path in paths:
        try:
            loaded = load_image(path)
        except InputError as exc:
            failures.append(FailedInput(path, exc.message))
            continue
        try:
            check_model_input(classifier, loaded.image, path)
        except InputError as exc:  # the hint names the bound's environment variable
            failures.append(FailedInput(path, str(exc)))
            continue
        yield loaded


def classify_images(
    paths: Sequence[Path],
    classifier: ImageClassifier,
    plan: ModulationPlan,
    batch_size: int = 32,
    topk: int = 1,
    compare: bool = False,
    progress: ProgressCallback | None = None,
) -> Iterator[ClassifiedImage | FailedInput]:
    """Classify images batch by batch; bad files are reported in order and the rest go on."""
    failures: list[FailedInput] = []
    for batch in batched(_decoded(paths, failures, classifier), batch_size):
        yield from failures
        if progress:
            progress(len(failures))
        failures.clear()
        batch, clean, noisy, broken = modulated_logits(classifier, batch, plan)
        yield from broken  # the model computed NaN/inf for these: one line each, the rest go on
        if progress and broken:
            progress(len(broken))
        modulated_top = top_predictions(noisy, classifier.labels, topk)
        clean_top = top_predictions(clean, classifier.labels, topk) if compare else [None] * len(batch)
        for item, top, reference in zip(batch, modulated_top, clean_top):
            yield ClassifiedImage(item.path, top, reference)
        if progress:
            progress(len(batch))
    yield from failures
    if progress and failures:
        progress(len(failures))
