"""`aim calibrate` as a task: model + labelled data + target in, a checked Calibration out.

Knows nothing about Typer: the CLI loads the model and the data, calls one of these
functions, and renders or writes the result (aim_cli.calibration.report, aim_cli.calibration.plot).
Model and per-task modules are imported inside the functions, so importing this module
(which the CLI does at start-up) stays cheap.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from aim_cli import limits
from aim_cli.calibration.core import Calibration, Target
from aim_cli.errors import AimError, FailedInput
from aim_cli.labels import resolve_class
from aim_cli.profile import (
    FocusRequest,
    Profile,
    check_seed,
    check_sigma,
    is_integer_number,
    is_real_number,
    parse_focus,
)
from aim_cli.tasks.batches import ProgressCallback

if TYPE_CHECKING:
    import torch

    from aim_cli.calibration.datasets import ImageDataset, SegmentationDataset, TextDataset
    from aim_cli.calibration.segment import SegmentationCalibrator
    from aim_cli.certificates import Certificate
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


# How the calibration settings are spelled in messages: flags for the CLI, keywords for the API.
CLI_NAMES = {
    "target_acc": "--target-acc",
    "target_miou": "--target-miou",
    "target_recall": "--target-recall",
    "focus": "--focus",
    "sigma": "--sigma",
    "seed": "--seed",
    "draws": "--draws",
    "example": "e.g. aim calibrate --target-acc 0.6",
    "recall_example": "e.g. --focus person --target-recall 0.9",
}
API_NAMES = {
    "target_acc": "target_acc",
    "target_miou": "",
    "target_recall": "target_recall",  # no mIoU from logits
    "focus": "focus",
    "sigma": "sigma",
    "seed": "seed",
    "draws": "draws",
    "example": "e.g. calibrate_logits(logits, labels, target_acc=0.6)",
    "recall_example": "e.g. focus='person', target_recall=0.9",
}


def calibration_request(
    task: str,
    target_acc: float | None,
    target_miou: float | None,
    target_recall: float | None,
    focus: str | None,
    sigma: float | None,
    draws: int,
    seed: int,
    batch_size: int = 64,
    names: dict[str, str] = CLI_NAMES,
) -> CalibrationRequest:
    """Check that the targets fit together and the task (the one check for CLI and API), then build the request."""
    given = {
        names[key]: v
        for key, v in (("target_acc", target_acc), ("target_miou", target_miou), ("target_recall", target_recall))
        if v is not None
    }
    if len(given) != 1:
        miou = f", {names['target_miou']} (segment)" if names["target_miou"] else ""
        raise AimError(
            f"give exactly one target: {names['target_acc']}{miou} or {names['target_recall']} (with {names['focus']})"
            + (f" (got {', '.join(given)})" if given else ""),
            names["example"],
        )
    ((flag, value),) = given.items()
    if not is_real_number(value):
        raise AimError(f"{flag} {value!r}: expected a number", "metrics are fractions, e.g. 0.6 for 60%")
    if not 0.0 < value <= 1.0:
        raise AimError(f"{flag} {value:g} is not a fraction between 0 and 1", "metrics are fractions, e.g. 0.6 for 60%")
    if flag == names["target_miou"] and task != "segment":
        raise AimError(f"{flag} applies to --task segment", f"for classification use {names['target_acc']}")
    if flag == names["target_recall"]:
        if focus is None:
            raise AimError(f"{flag} needs {names['focus']} NAME[:up|down]", names["recall_example"])
        if task == "generate":
            raise AimError(f"{flag} applies to --task classify or segment")
    elif focus is not None:
        raise AimError(f"{names['focus']} goes with {names['target_recall']}", names["recall_example"])
    if sigma is not None and flag != names["target_recall"]:
        raise AimError(
            f"{names['sigma']} is what calibration finds",
            f"drop {names['sigma']} (it only fixes the utility sigma for {names['target_recall']})",
        )
    if sigma is not None:
        sigma = check_sigma(sigma, "sigma", names["sigma"])
    check_seed(seed, names["seed"])
    if not is_integer_number(draws) or draws < 2:
        raise AimError(f"{names['draws']} {draws}: the Monte Carlo check needs an integer of at least 2 draws")
    if draws > limits.DRAWS.value():  # each draw is a pass over the data (a generation run for text)
        raise AimError(f"{names['draws']} {draws}: too many Monte Carlo draws", limits.DRAWS.hint())
    draws = int(draws)
    if task == "segment" and flag == names["target_acc"]:
        metric = "pixel_accuracy"
    else:
        metric = {names["target_acc"]: "accuracy", names["target_miou"]: "miou", names["target_recall"]: "recall"}[flag]
    return CalibrationRequest(
        metric=metric,
        value=float(value),
        focus=parse_focus(focus) if focus else None,
        utility_sigma=float(sigma or 0.0),
        draws=draws,
        seed=seed,
        batch_size=batch_size,
    )


def resolve_target(request: CalibrationRequest, labels: Sequence[str]) -> tuple[Target, int | None]:
    """The Target with the focus class resolved to the model's own label (and its id)."""
    if request.metric != "recall":
        return Target(request.metric, request.value), None
    if request.focus is None:
        raise AimError("--target-recall needs --focus NAME (the class whose recall to reach)")
    class_id = resolve_class(request.focus.name, labels)
    return Target("recall", request.value, labels[class_id], request.focus.direction), class_id


def calibrate_classification_logits(
    logits: torch.Tensor, labels: torch.Tensor, request: CalibrationRequest, class_names: Sequence[str]
) -> Calibration:
    """Calibrate on (N, C) logits and label ids a model already produced (CLI and Python API)."""
    from aim_cli.calibration.classify import calibrate_target

    target, target_id = resolve_target(request, class_names)
    return calibrate_target(logits, labels, target, target_id, request.draws, request.seed, request.utility_sigma)


def calibrate_classifier(
    classifier: ImageClassifier,
    dataset: ImageDataset,
    request: CalibrationRequest,
    progress: ProgressCallback | None = None,
) -> tuple[Calibration, list[FailedInput]]:
    """One forward pass caches the logits; the curve, root and Monte Carlo check follow from them."""
    from aim_cli.calibration.classify import collect_logits, dataset_label_ids

    start = time.perf_counter()
    resolve_target(request, classifier.labels)  # a bad focus name fails before the forward pass
    label_ids = dataset_label_ids(dataset, classifier.labels)
    cached = collect_logits(classifier, dataset.items, label_ids, request.batch_size, progress)
    calibration = calibrate_classification_logits(cached.logits, cached.labels, request, classifier.labels)
    calibration.model = classifier.name
    calibration.data = dataset.description
    calibration.timing = {"forward_s": cached.seconds, **calibration.timing, "total_s": time.perf_counter() - start}
    calibration.notes.append(f"1 forward pass over {calibration.items} images; every sigma after that is analytic")
    calibration.certifier = _classification_certifier(calibration, classifier, dataset, cached.logits, cached.labels)
    return calibration, [*dataset.failures, *cached.failures]


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
        segmenter,
        dataset,
        target,
        target_id,
        request.utility_sigma,
        request.draws,
        request.seed,
        batch_size=min(request.batch_size, 16),
        progress=progress,
    )
    calibration = calibrator.run()
    calibration.model = segmenter.name
    calibration.data = dataset.description
    calibration.timing["total_s"] = time.perf_counter() - start
    calibration.certifier = _segmentation_certifier(calibration, segmenter, dataset, calibrator)
    return calibration, calibrator.failures


def _uncertified(calibration: Calibration, model: object) -> str | None:
    """The model's fingerprint, or None after noting why the profile goes out without a certificate."""
    from aim_cli.certificates import model_fingerprint

    fingerprint = model_fingerprint(model)
    if fingerprint is None:
        calibration.warnings.append(
            f"the profile has no certificate: {calibration.model} exposes no torch network to fingerprint"
        )
    return fingerprint


def _classification_certifier(
    calibration: Calibration,
    classifier: ImageClassifier,
    dataset: ImageDataset,
    logits: torch.Tensor,
    labels: torch.Tensor,
) -> Callable[[Profile, float], Certificate | None]:
    """Certify a profile of this calibration from the cached logits (no second forward pass)."""

    def certify(profile: Profile, confidence: float) -> Certificate | None:
        from aim_cli.calibration import certify as certificates

        fingerprint = _uncertified(calibration, classifier)
        if fingerprint is None:
            return None
        target = calibration.target
        target_id = None if target.focus_class is None else classifier.labels.index(target.focus_class)
        estimate = certificates.classification_estimate(
            logits, labels, profile, target_id, target.focus_direction, calibration.seed
        )
        data = certificates.classification_data_fingerprint(dataset)
        return certificates.build_certificate(
            calibration, profile, estimate, classifier.name, fingerprint, data, confidence
        )

    return certify


def _segmentation_certifier(
    calibration: Calibration, segmenter: Segmenter, dataset: SegmentationDataset, calibrator: SegmentationCalibrator
) -> Callable[[Profile, float], Certificate | None]:
    """Certify a profile of this calibration with one more pass over the images (images as units)."""

    def certify(profile: Profile, confidence: float) -> Certificate | None:
        from aim_cli.calibration import certify as certificates

        fingerprint = _uncertified(calibration, segmenter)
        if fingerprint is None:
            return None
        estimate = certificates.segmentation_estimate(calibrator, profile, calibration.seed)
        data = certificates.segmentation_data_fingerprint(dataset)
        return certificates.build_certificate(
            calibration, profile, estimate, segmenter.name, fingerprint, data, confidence
        )

    return certify


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
    if dataset.multiple_choice and calibration.cached_logits is not None:
        calibration.certifier = _text_certifier(calibration, lm, dataset, *calibration.cached_logits)
    return calibration, []


def _text_certifier(
    calibration: Calibration, lm: LanguageModel, dataset: TextDataset, logits: torch.Tensor, answers: torch.Tensor
) -> Callable[[Profile, float], Certificate | None]:
    """Certify a multiple-choice tier from the cached next-token logits; the model by its folder's files (as vLLM)."""

    def certify(profile: Profile, confidence: float) -> Certificate | None:
        from aim_cli.calibration import certify as certificates
        from aim_cli.certificates import language_model_fingerprint

        fingerprint = language_model_fingerprint(str(getattr(lm.model, "name_or_path", "") or lm.name))
        estimate = certificates.classification_estimate(logits, answers, profile, None, 1, calibration.seed)
        data = certificates.text_data_fingerprint(dataset.items)
        return certificates.build_certificate(calibration, profile, estimate, lm.name, fingerprint, data, confidence)

    return certify
