"""`aim calibrate` as a task: model + labelled data + target in, a checked Calibration out.

Knows nothing about Typer: the CLI loads the model and the data, calls one of these
functions, and renders or writes the result (aim_cli.calibration.report, aim_cli.plotting).
Model and per-task modules are imported inside the functions, so importing this module
(which the CLI does at start-up) stays cheap.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Sequence

from aim_cli.calibration.core import Calibration, Target
from aim_cli.errors import AimError
from aim_cli.labels import resolve_class
from aim_cli.profile import FocusRequest
from aim_cli.tasks.common import FailedInput, ProgressCallback

if TYPE_CHECKING:
    import torch

    from aim_cli.calibration.datasets import ImageDataset, SegmentationDataset, TextDataset
    from aim_cli.models.classifier import ImageClassifier
    from aim_cli.models.language import LanguageModel
    from aim_cli.models.segmenter import Segmenter


@dataclass(frozen=True)
class CalibrationRequest:
    """What the user asked for: a metric and target, optional focus class, and how to check."""

    metric: str  # accuracy | pixel_accuracy | miou | recall
    value: float
    focus: FocusRequest | None = None
    utility_sigma: float = 0.0  # held fixed while a focus sigma is calibrated
    draws: int = 20
    seed: int = 0
    batch_size: int = 64


def resolve_target(request: CalibrationRequest, labels: Sequence[str]) -> tuple[Target, int | None]:
    """The Target with the focus class resolved to the model's own label (and its id)."""
    if request.metric != "recall":
        return Target(request.metric, request.value), None
    if request.focus is None:
        raise AimError("--target-recall needs --focus NAME (the class whose recall to reach)")
    class_id = resolve_class(request.focus.name, labels)
    return Target("recall", request.value, labels[class_id], request.focus.direction), class_id


def calibrate_classifier(
    classifier: ImageClassifier,
    dataset: ImageDataset,
    request: CalibrationRequest,
    progress: ProgressCallback | None = None,
) -> tuple[Calibration, list[FailedInput]]:
    """One forward pass caches the logits; the curve, root and Monte Carlo check follow from them."""
    from aim_cli.calibration.classify import calibrate_logits, collect_logits, dataset_label_ids

    start = time.perf_counter()
    target, target_id = resolve_target(request, classifier.labels)
    label_ids = dataset_label_ids(dataset, classifier.labels)
    cached = collect_logits(classifier, dataset.items, label_ids, request.batch_size, progress)
    calibration = calibrate_logits(
        cached.logits, cached.labels, target, target_id, request.draws, request.seed, request.utility_sigma
    )
    calibration.model = classifier.name
    calibration.data = dataset.description
    calibration.timing = {"forward_s": cached.seconds, **calibration.timing, "total_s": time.perf_counter() - start}
    calibration.notes.append(f"1 forward pass over {calibration.items} images; every sigma after that is analytic")
    return calibration, [*dataset.failures, *cached.failures]


def load_segmenter_for_calibration(
    spec: str | None, device: torch.device, weights: Path | None = None, labels_file: Path | None = None
) -> Segmenter:
    """The segmenter (demo, HF directory, cached hub id or torchvision:ARCH) to stream through."""
    from aim_cli.models.segmenter import load_segmenter

    return load_segmenter(spec, device, weights, labels_file)


def calibrate_segmenter(
    segmenter: Segmenter,
    dataset: SegmentationDataset,
    request: CalibrationRequest,
    progress: ProgressCallback | None = None,
) -> tuple[Calibration, list[FailedInput]]:
    """Streaming passes: expected confusion counts per sigma (or target recall per focus sigma), then a check."""
    from aim_cli.calibration.segment import SegmentationCalibrator

    start = time.perf_counter()
    target, target_id = resolve_target(request, segmenter.labels)
    calibrator = SegmentationCalibrator(
        segmenter, dataset, target, target_id, request.utility_sigma, request.draws, request.seed,
        batch_size=min(request.batch_size, 16), progress=progress,
    )
    calibration = calibrator.run()
    calibration.model = segmenter.name
    calibration.data = dataset.description
    calibration.timing["total_s"] = time.perf_counter() - start
    return calibration, calibrator.failures


def calibrate_language_model(
    lm: LanguageModel,
    dataset: TextDataset,
    request: CalibrationRequest,
    progress: ProgressCallback | None = None,
) -> tuple[Calibration, list[FailedInput]]:
    """Multiple choice: analytic over the vocabulary from one pass. Free form: Monte Carlo bisection."""
    from aim_cli.calibration.text import calibrate_free_form, calibrate_multiple_choice

    if request.metric != "accuracy":
        raise AimError("text calibration reaches a target accuracy", "use --target-acc")
    start = time.perf_counter()
    target = Target("accuracy", request.value)
    solver = calibrate_multiple_choice if dataset.multiple_choice else calibrate_free_form
    calibration = solver(lm, dataset.items, target, request.draws, request.seed, request.batch_size, progress)
    calibration.model = lm.name
    calibration.data = dataset.description
    calibration.timing["total_s"] = time.perf_counter() - start
    return calibration, []
